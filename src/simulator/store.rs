//! The in-memory call store: concurrent (sharded by id), bounded (oldest calls evicted first).
//!
//! Records are compact (numbers as integers, enums as bytes) so a full store of 100,000 calls
//! stays around 20 MB, and they render themselves as JSON without an intermediate `Value`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Shards: enough that two cores rarely meet on one lock, few enough that a list stays cheap.
const SHARDS: usize = 16;

pub(crate) const INDUSTRIES: [&str; 4] = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
pub(crate) const STATUSES: [&str; 4] = ["ringing", "in_progress", "completed", "failed"];
pub(crate) const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];

/// One call as stored. Indices point into the constant tables above.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub id: u128,
    seq: u64,
    pub direction: u8,
    /// E.164 digits without the '+' (validation guarantees no leading zero).
    pub caller: u64,
    pub callee: u64,
    pub industry: u8,
    pub status: u8,
    pub duration_seconds: Option<f64>,
    /// The request's metadata object, already serialized.
    pub metadata: Option<Arc<str>>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a new call is made of (validated by the API layer).
pub(crate) struct NewCall {
    pub direction: u8,
    pub caller: u64,
    pub callee: u64,
    pub industry: u8,
    pub metadata: Option<Arc<str>>,
}

/// List filters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Filter {
    pub industry: Option<u8>,
    pub status: Option<u8>,
}

impl Filter {
    fn matches(&self, c: &Call) -> bool {
        self.industry.is_none_or(|i| i == c.industry) && self.status.is_none_or(|s| s == c.status)
    }
}

/// Ids are random, so their low bits are already a good hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type IdMap = HashMap<u128, u64, BuildHasherDefault<IdHasher>>;

/// One shard: calls in arrival order, plus an index from id to position.
#[derive(Default)]
struct Shard {
    calls: VecDeque<Call>,
    /// id -> absolute position; `calls[pos - base]`.
    index: IdMap,
    base: u64,
    /// Calls per industry and status, so a list knows when a shard holds no more matches
    /// (a filter nothing matches must not scan 100,000 calls).
    counts: [[u32; STATUSES.len()]; INDUSTRIES.len()],
}

impl Shard {
    fn get_mut(&mut self, id: u128) -> Option<&mut Call> {
        let pos = *self.index.get(&id)?;
        self.calls.get_mut((pos - self.base) as usize)
    }

    fn count(&mut self, industry: u8, status: u8, delta: i32) {
        let n = &mut self.counts[industry as usize][status as usize];
        *n = n.saturating_add_signed(delta);
    }

    /// How many of this shard's calls match `filter`.
    fn matching(&self, filter: Filter) -> u32 {
        let mut n = 0;
        for (industry, row) in self.counts.iter().enumerate() {
            for (status, count) in row.iter().enumerate() {
                if filter.industry.is_none_or(|i| i as usize == industry)
                    && filter.status.is_none_or(|s| s as usize == status)
                {
                    n += count;
                }
            }
        }
        n
    }
}

pub(crate) struct Store {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    seq: AtomicU64,
    len: AtomicUsize,
}

impl Store {
    /// A store keeping at most about `capacity` calls (at least one per shard).
    pub(crate) fn new(capacity: usize) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            seq: AtomicU64::new(0),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: u128) -> std::sync::MutexGuard<'_, Shard> {
        // A panic can't happen while a shard is locked, but never let one poison the store.
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Stores a new call with a fresh random id, evicting the shard's oldest when full.
    pub(crate) fn create(&self, new: NewCall, now_ms: i64) -> Call {
        let id = new_id();
        let call = Call {
            id,
            seq: self.seq.fetch_add(1, Relaxed),
            direction: new.direction,
            caller: new.caller,
            callee: new.callee,
            industry: new.industry,
            status: 0,
            duration_seconds: None,
            metadata: new.metadata,
            created_ms: now_ms,
            updated_ms: now_ms,
        };
        let mut shard = self.shard(id);
        let pos = shard.base + shard.calls.len() as u64;
        shard.index.insert(id, pos);
        shard.count(call.industry, call.status, 1);
        shard.calls.push_back(call.clone());
        if shard.calls.len() > self.per_shard {
            if let Some(old) = shard.calls.pop_front() {
                shard.index.remove(&old.id);
                shard.count(old.industry, old.status, -1);
                shard.base += 1;
            }
        } else {
            self.len.fetch_add(1, Relaxed);
        }
        call
    }

    pub(crate) fn get(&self, id: u128) -> Option<Call> {
        self.shard(id).get_mut(id).map(|c| c.clone())
    }

    /// Applies a validated update; `None` when the call is unknown (or was evicted).
    pub(crate) fn update(
        &self,
        id: u128,
        status: Option<u8>,
        duration: Option<f64>,
        now_ms: i64,
    ) -> Option<Call> {
        let mut shard = self.shard(id);
        let call = shard.get_mut(id)?;
        let (industry, was) = (call.industry, call.status);
        if let Some(s) = status {
            call.status = s;
        }
        if duration.is_some() {
            call.duration_seconds = duration;
        }
        call.updated_ms = now_ms;
        let after = call.clone();
        shard.count(industry, was, -1);
        shard.count(industry, after.status, 1);
        Some(after)
    }

    /// The newest `limit` calls matching `filter`, newest first.
    pub(crate) fn list(&self, filter: Filter, limit: usize) -> Vec<Call> {
        let mut found: Vec<Call> = Vec::with_capacity(limit * 2);
        // The `limit` newest sequence numbers seen so far (a min-heap): a shard's calls are in
        // creation order, so its scan stops at the first call older than all of those.
        let mut newest: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(limit + 1);
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let mut left = shard.matching(filter);
            for call in shard.calls.iter().rev() {
                if left == 0 {
                    break;
                }
                if !filter.matches(call) {
                    continue;
                }
                left -= 1;
                if newest.len() == limit && newest.peek().is_some_and(|Reverse(s)| call.seq < *s) {
                    break;
                }
                found.push(call.clone());
                newest.push(Reverse(call.seq));
                if newest.len() > limit {
                    newest.pop();
                }
            }
        }
        if let Some(Reverse(oldest)) = newest.peek() {
            found.retain(|c| c.seq >= *oldest);
        }
        found.sort_unstable_by_key(|c| Reverse(c.seq));
        found
    }
}

/// A random UUID v4.
fn new_id() -> u128 {
    let r: u128 = rand::random();
    (r & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
}

/// Formats an id as a UUID (8-4-4-4-12 lowercase hex).
pub(crate) fn format_id(id: u128, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(HEX[((id >> (124 - 4 * i)) & 0xF) as usize] as char);
    }
}

/// Parses a UUID as formatted by [`format_id`] (either case); anything else is no id of ours.
pub(crate) fn parse_id(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            continue;
        }
        v = (v << 4) | (c as char).to_digit(16)? as u128;
    }
    Some(v)
}

impl Call {
    /// Appends the call's JSON object to `out`. Every string written here is ours (ids,
    /// digits, table entries, RFC 3339 times) or already-serialized JSON, so nothing needs
    /// escaping; numbers are written by hand because lists write thousands of them per second.
    pub(crate) fn write_json(&self, out: &mut String) {
        out.push_str("{\"id\":\"");
        format_id(self.id, out);
        out.push_str("\",\"direction\":\"");
        out.push_str(DIRECTIONS[self.direction as usize]);
        out.push_str("\",\"caller_id\":\"+");
        push_num(out, self.caller, 1);
        out.push_str("\",\"callee_id\":\"+");
        push_num(out, self.callee, 1);
        out.push_str("\",\"industry\":\"");
        out.push_str(INDUSTRIES[self.industry as usize]);
        out.push_str("\",\"status\":\"");
        out.push_str(STATUSES[self.status as usize]);
        out.push_str("\",\"duration_seconds\":");
        match self.duration_seconds {
            Some(d) => {
                let _ = write!(out, "{d}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"metadata\":");
        out.push_str(self.metadata.as_deref().unwrap_or("{}"));
        out.push_str(",\"created_at\":\"");
        write_time(self.created_ms, out);
        out.push_str("\",\"updated_at\":\"");
        write_time(self.updated_ms, out);
        out.push_str("\"}");
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_num(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width.max(1) {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend(digits[i..].iter().map(|&d| d as char));
}

/// Writes a Unix time in ms as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.000Z`).
fn write_time(ms: i64, out: &mut String) {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000) as u64);
    let (year, month, day) = civil_from_days(days);
    let fields: [(u64, usize, char); 7] = [
        (year.max(0) as u64, 4, '-'),
        (month as u64, 2, '-'),
        (day as u64, 2, 'T'),
        (ms_of_day / 3_600_000, 2, ':'),
        (ms_of_day / 60_000 % 60, 2, ':'),
        (ms_of_day / 1000 % 60, 2, '.'),
        (ms_of_day % 1000, 3, 'Z'),
    ];
    for (value, width, sep) in fields {
        push_num(out, value, width);
        out.push(sep);
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + (month <= 2) as i64;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_call(industry: u8) -> NewCall {
        NewCall {
            direction: 0,
            caller: 4915112345678,
            callee: 4915187654321,
            industry,
            metadata: None,
        }
    }

    #[test]
    fn ids_round_trip_as_uuids() {
        for _ in 0..100 {
            let id = new_id();
            let mut s = String::new();
            format_id(id, &mut s);
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4", "{s}");
            assert_eq!(parse_id(&s), Some(id));
            assert_eq!(parse_id(&s.to_uppercase()), Some(id));
        }
        assert_eq!(parse_id("nope"), None);
        assert_eq!(parse_id("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"), None);
    }

    #[test]
    fn numbers_are_padded() {
        let mut s = String::new();
        push_num(&mut s, 0, 1);
        push_num(&mut s, 7, 3);
        push_num(&mut s, 4915112345678, 1);
        push_num(&mut s, u64::MAX, 2);
        assert_eq!(s, format!("0{:03}{}{}", 7, 4915112345678u64, u64::MAX));
    }

    #[test]
    fn times_match_chrono() {
        for ms in [
            0,
            1,
            951_782_400_000,
            1_709_210_096_789,
            4_102_444_799_999,
            1_234_567_890_123,
        ] {
            let mut mine = String::new();
            write_time(ms, &mut mine);
            let chrono = chrono::DateTime::from_timestamp_millis(ms).unwrap();
            assert_eq!(mine, chrono.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        }
    }

    #[test]
    fn lists_match_a_full_sort() {
        let store = Store::new(10_000);
        for i in 0..2_000u32 {
            store.create(new_call((i % 3) as u8), i as i64);
        }
        for (industry, limit) in [(None, 1), (None, 50), (Some(1), 100), (Some(3), 10)] {
            let filter = Filter {
                industry,
                status: None,
            };
            let got: Vec<i64> = store.list(filter, limit).iter().map(|c| c.created_ms).collect();
            let want: Vec<i64> = (0..2_000i64)
                .rev()
                .filter(|i| industry.is_none_or(|ind| (i % 3) as u8 == ind))
                .take(limit)
                .collect();
            assert_eq!(got, want, "{industry:?} {limit}");
        }
    }

    #[test]
    fn counts_follow_updates_and_evictions() {
        let store = Store::new(64); // 4 per shard
        let ids: Vec<u128> = (0..500)
            .map(|i| store.create(new_call((i % 4) as u8), i).id)
            .collect();
        for id in &ids[400..] {
            store.update(*id, Some(3), None, 0);
        }
        let failed = Filter {
            industry: None,
            status: Some(3),
        };
        let kept_failed = ids[400..].iter().filter(|id| store.get(**id).is_some()).count();
        assert_eq!(store.list(failed, 100).len(), kept_failed);
        let total: u32 = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().matching(Filter::default()))
            .sum();
        assert_eq!(total as usize, store.len());
        let none = Filter {
            industry: None,
            status: Some(1),
        };
        assert!(store.list(none, 50).is_empty());
    }

    #[test]
    fn keeps_only_the_newest_calls() {
        let store = Store::new(32); // 2 per shard
        let ids: Vec<u128> = (0..1000).map(|_| store.create(new_call(0), 0).id).collect();
        assert_eq!(store.len(), 32);
        let kept = ids.iter().filter(|id| store.get(**id).is_some()).count();
        assert_eq!(kept, 32);
        // The very newest call is always kept.
        assert!(store.get(*ids.last().unwrap()).is_some());
    }

    #[test]
    fn lists_newest_first_with_filters() {
        let store = Store::new(1000);
        for i in 0..100u8 {
            store.create(new_call(i % 4), i as i64);
        }
        let all = store.list(Filter::default(), 10);
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
        assert_eq!(all[0].created_ms, 99);
        let gastro = store.list(
            Filter {
                industry: Some(2),
                status: None,
            },
            100,
        );
        assert_eq!(gastro.len(), 25);
        assert!(gastro.iter().all(|c| c.industry == 2));
        let id = gastro[3].id;
        store.update(id, Some(3), Some(12.5), 5).unwrap();
        let failed = store.list(
            Filter {
                industry: None,
                status: Some(3),
            },
            50,
        );
        assert_eq!(failed.len(), 1);
        let mut json = String::new();
        failed[0].write_json(&mut json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["duration_seconds"], 12.5);
        assert_eq!(v["caller_id"], "+4915112345678");
        assert_eq!(v["industry"], "gastro");
    }
}
