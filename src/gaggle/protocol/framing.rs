//! One message on the wire: its length (4 bytes, big endian), then its JSON, within the size
//! limit and the transfer timeout, with errors that say what the peer did wrong.

use super::{MAX_MESSAGE, TRANSFER_TIMEOUT};
use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Writes one message: its length, then its JSON.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> Result<()> {
    let body = serde_json::to_vec(msg).context("cannot encode a message")?;
    if body.len() > MAX_MESSAGE {
        bail!(
            "a message of {} bytes is over the {MAX_MESSAGE}-byte limit",
            body.len()
        );
    }
    let write = async {
        w.write_all(&(body.len() as u32).to_be_bytes()).await?;
        w.write_all(&body).await?;
        w.flush().await
    };
    match tokio::time::timeout(TRANSFER_TIMEOUT, write).await {
        Ok(r) => r.map_err(|e| anyhow!("cannot send: {e}")),
        Err(_) => bail!(
            "cannot send: the peer took no data for {}s",
            TRANSFER_TIMEOUT.as_secs()
        ),
    }
}

/// Reads one message of at most `limit` bytes, waiting at most `idle` for it to begin.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    limit: usize,
    idle: Duration,
) -> Result<T> {
    let mut len = [0u8; 4];
    match tokio::time::timeout(idle, r.read_exact(&mut len)).await {
        Err(_) => bail!("no message for {}s", idle.as_secs_f64()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => bail!("connection closed"),
        Ok(Err(e)) => bail!("connection failed: {e}"),
        Ok(Ok(_)) => {}
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > limit {
        bail!(
            "a message of {n} bytes is over the {limit}-byte limit (is the peer a phone-agent-load gaggle?)"
        );
    }
    let mut body = vec![0u8; n];
    match tokio::time::timeout(TRANSFER_TIMEOUT, r.read_exact(&mut body)).await {
        Err(_) => bail!(
            "a message of {n} bytes did not arrive within {}s",
            TRANSFER_TIMEOUT.as_secs()
        ),
        Ok(Err(e)) => bail!("connection lost in the middle of a message: {e}"),
        Ok(Ok(_)) => {}
    }
    serde_json::from_slice(&body)
        .map_err(|e| anyhow!("bad message ({e}): is the peer a phone-agent-load gaggle?"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaggle::protocol::{ToWorker, SILENCE};

    #[tokio::test]
    async fn messages_round_trip_and_the_limit_holds() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_message(&mut a, &ToWorker::Stop { reason: "why".into() })
            .await
            .unwrap();
        let got: ToWorker = read_message(&mut b, MAX_MESSAGE, SILENCE).await.unwrap();
        assert!(matches!(got, ToWorker::Stop { reason } if reason == "why"));
        write_message(&mut a, &ToWorker::Go).await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, 3, SILENCE).await.unwrap_err();
        assert!(err.to_string().contains("over the 3-byte limit"), "{err}");
    }

    #[tokio::test]
    async fn garbage_silence_and_eof_are_clear_errors() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad message"), "{err}");
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no message"), "{err}");
        drop(a);
        let err = read_message::<_, ToWorker>(&mut b, MAX_MESSAGE, SILENCE)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("closed"), "{err}");
    }
}
