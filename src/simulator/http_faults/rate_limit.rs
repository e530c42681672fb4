//! `--rate-limit`: a per-client token bucket; over it, a request is answered 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A per-client token bucket, kept as GCRA ("theoretical arrival time") in one atomic per
/// client so a check is a map read and a compare-and-swap, never a held lock.
pub(crate) struct RateLimiter {
    /// Time one token takes to refill.
    interval_ns: u64,
    /// How far ahead of now a client's arrival time may run: a burst of `rate` requests.
    tolerance_ns: u64,
    epoch: Instant,
    clients: RwLock<HashMap<IpAddr, Arc<AtomicU64>>>,
}

/// Forget all clients past this many (only a flood of distinct addresses gets here).
const MAX_CLIENTS: usize = 65_536;

impl RateLimiter {
    /// `rate` requests per second per client, with a burst of one second's worth.
    pub(crate) fn new(rate: f64) -> RateLimiter {
        let interval_ns = (1e9 / rate).max(1.0) as u64;
        let burst = rate.ceil().max(1.0) as u64;
        RateLimiter {
            interval_ns,
            tolerance_ns: interval_ns * (burst - 1),
            epoch: Instant::now(),
            clients: RwLock::default(),
        }
    }

    /// `Ok` when the request may pass, else how long until it would.
    pub(crate) fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let cell = self.cell(client);
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut tat = cell.load(Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ns {
                return Err(Duration::from_nanos(start - now - self.tolerance_ns));
            }
            match cell.compare_exchange_weak(tat, start + self.interval_ns, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    fn cell(&self, client: IpAddr) -> Arc<AtomicU64> {
        if let Some(cell) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
        {
            return cell.clone();
        }
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients.entry(client).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(5.0);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let passed = (0..20).filter(|_| limiter.check(ip).is_ok()).count();
        assert_eq!(passed, 5);
        let wait = limiter.check(ip).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another client has its own bucket.
        assert!(limiter.check(IpAddr::from([10, 0, 0, 2])).is_ok());
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(100.0);
        let ip = IpAddr::from([10, 0, 0, 1]);
        while limiter.check(ip).is_ok() {}
        let drained = Instant::now();
        std::thread::sleep(Duration::from_millis(55));
        let woke = drained.elapsed().as_secs_f64();
        let passed = (0..100).filter(|_| limiter.check(ip).is_ok()).count() as f64;
        let done = drained.elapsed().as_secs_f64();
        // Measured, not assumed: a busy machine may sleep longer than asked. Less than a token
        // was left at the last refused check, just before `drained`.
        assert!(
            passed >= (100.0 * woke).floor() - 1.0 && passed <= (100.0 * done).ceil() + 1.0,
            "{passed} passed {woke:.3}-{done:.3} s after the bucket ran dry"
        );
    }
}
