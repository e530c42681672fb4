//! `--leak-kb-per-call`: memory retained on purpose and never freed, per created call and per
//! media stream, so tests can prove the load generator sees a server's memory grow.

use super::stats::Stats;
use rand::Rng;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

/// Memory retained on purpose and never freed (`--leak-kb-per-call`).
pub(crate) struct Leak {
    kb: u64,
    shards: Vec<Mutex<Vec<Box<[u8]>>>>,
}

impl Leak {
    pub(crate) fn new(kb: u64) -> Leak {
        Leak {
            kb,
            shards: (0..16).map(|_| Mutex::default()).collect(),
        }
    }

    /// Retains `kb` KB, written to so the pages count in the resident set.
    pub(crate) fn leak(&self, stats: &Stats) {
        if self.kb == 0 {
            return;
        }
        let bytes = (self.kb * 1024) as usize;
        let block = vec![0xA5u8; bytes].into_boxed_slice();
        let shard = rand::rng().random_range(0..self.shards.len());
        self.shards[shard]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(block);
        stats.leaked_bytes.fetch_add(bytes as u64, Relaxed);
    }
}
