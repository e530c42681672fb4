//! An established connection between manager and worker: queued messages written by one task,
//! heartbeats sent when it is idle, and the peer's messages delivered by another, so silence
//! past [`SILENCE`] means the peer is gone.

use super::{read_message, write_message, Wire, HEARTBEAT, MAX_MESSAGE, SILENCE, TRANSFER_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a [`Link`] delivers: a message from peer `from`, or why the link was lost.
#[derive(Debug)]
pub struct Event<In> {
    pub from: usize,
    pub msg: std::result::Result<In, String>,
}

/// An established connection: a writer task sending queued messages (and heartbeats when idle)
/// and a reader task delivering the peer's messages (heartbeats dropped) as [`Event`]s.
pub struct Link<Out: Wire> {
    out: Option<mpsc::UnboundedSender<Out>>,
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl<Out: Wire> Link<Out> {
    /// Starts the link; events go to `events`, tagged `from`.
    pub fn start<In: Wire>(stream: TcpStream, from: usize, events: mpsc::UnboundedSender<Event<In>>) -> Self {
        let (mut r, mut w) = stream.into_split();
        let (out, mut queue) = mpsc::unbounded_channel::<Out>();
        let lost = events.clone();
        let writer = tokio::spawn(async move {
            loop {
                let msg = match tokio::time::timeout(HEARTBEAT, queue.recv()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => Out::heartbeat(),
                };
                if let Err(e) = write_message(&mut w, &msg).await {
                    let _ = lost.send(Event {
                        from,
                        msg: Err(format!("{e:#}")),
                    });
                    return;
                }
            }
            let _ = w.shutdown().await;
        });
        let reader = tokio::spawn(async move {
            loop {
                match read_message::<_, In>(&mut r, MAX_MESSAGE, SILENCE).await {
                    Ok(m) if m.is_heartbeat() => continue,
                    Ok(m) => {
                        if events.send(Event { from, msg: Ok(m) }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = events.send(Event {
                            from,
                            msg: Err(format!("{e:#}")),
                        });
                        return;
                    }
                }
            }
        });
        Link {
            out: Some(out),
            reader,
            writer: Some(writer),
        }
    }

    /// Queues a message; false once the link is closed.
    pub fn send(&self, msg: Out) -> bool {
        self.out.as_ref().is_some_and(|o| o.send(msg).is_ok())
    }

    /// Sends what is queued (for at most `TRANSFER_TIMEOUT`), then closes the connection.
    pub async fn close(mut self) {
        self.out = None;
        if let Some(writer) = self.writer.take() {
            let abort = writer.abort_handle();
            if tokio::time::timeout(TRANSFER_TIMEOUT, writer).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl<Out: Wire> Drop for Link<Out> {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}
