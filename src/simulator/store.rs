//! The in-memory call store: concurrent (sharded by id), bounded (oldest calls evicted first).
//!
//! Each call keeps its JSON object, rendered once when it is created and again when it is
//! updated, next to the few fields a list filters and orders by: answering a read or a list is
//! then copying bytes (a list of 50 calls is about 15 KB), with no formatting and no record
//! cloned. A list merges the shards' newest calls (each shard holds its calls in creation
//! order, and an index of them by status), so it visits only a few times as many calls as it
//! returns, whatever the filter. A full store of 100,000 calls takes about 40 MB.

use std::collections::{btree_set, BTreeSet, HashMap, VecDeque};
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Shards: enough that two cores rarely meet on one lock, few enough that a list stays cheap.
const SHARDS: usize = 16;

pub(crate) const INDUSTRIES: [&str; 4] = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
pub(crate) const STATUSES: [&str; 4] = ["ringing", "in_progress", "completed", "failed"];
pub(crate) const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];

/// One call as stored: what lists filter and order by, and its JSON. Indices point into the
/// constant tables above.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub id: u128,
    seq: u64,
    pub industry: u8,
    pub status: u8,
    /// The call's JSON object as the API answers it (see [`render`] for its layout).
    json: Box<str>,
}

impl Call {
    /// The call's JSON object.
    pub(crate) fn json(&self) -> &str {
        &self.json
    }
}

/// What a new call is made of (validated by the API layer).
pub(crate) struct NewCall {
    pub direction: u8,
    /// E.164 digits without the '+' (validation guarantees no leading zero).
    pub caller: u64,
    pub callee: u64,
    pub industry: u8,
    /// The request's metadata object, already serialized.
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

/// One shard: calls in arrival order, plus an index from id to position and one by status.
#[derive(Default)]
struct Shard {
    calls: VecDeque<Call>,
    /// id -> absolute position; `calls[pos - base]`.
    index: IdMap,
    base: u64,
    /// Absolute positions of the calls in each status, so a status filter walks only its
    /// matches (a status few calls have must not scan 100,000 calls to find them).
    by_status: [BTreeSet<u64>; STATUSES.len()],
    /// Calls per industry and status, so a list knows when a shard holds no more matches.
    counts: [[u32; STATUSES.len()]; INDUSTRIES.len()],
}

impl Shard {
    fn position(&self, id: u128) -> Option<u64> {
        self.index.get(&id).copied()
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

/// The calls a list looks at in one shard, newest first: all of them, or one status's.
enum Walk<'a> {
    All(std::iter::Rev<std::ops::Range<usize>>),
    Status(std::iter::Rev<btree_set::Iter<'a, u64>>),
}

/// Where a list is in one shard.
struct Cursor<'a> {
    shard: &'a Shard,
    walk: Walk<'a>,
    /// The shard's next match (its newest not yet taken): index in `calls`, and `seq`.
    head: Option<(usize, u64)>,
    /// Matches not yet found (from the shard's counts): none left ends the walk at once.
    left: u32,
}

impl<'a> Cursor<'a> {
    fn new(shard: &'a Shard, filter: Filter) -> Cursor<'a> {
        let walk = match filter.status {
            Some(s) => Walk::Status(shard.by_status[s as usize].iter().rev()),
            None => Walk::All((0..shard.calls.len()).rev()),
        };
        let mut cursor = Cursor {
            shard,
            walk,
            head: None,
            left: shard.matching(filter),
        };
        cursor.advance(filter);
        cursor
    }

    /// Moves `head` to the next older match.
    fn advance(&mut self, filter: Filter) {
        self.head = None;
        while self.left > 0 {
            let next = match &mut self.walk {
                Walk::All(indices) => indices.next(),
                Walk::Status(positions) => positions.next().map(|pos| (pos - self.shard.base) as usize),
            };
            let Some(call) = next.and_then(|i| Some((i, self.shard.calls.get(i)?))) else {
                return;
            };
            if filter.matches(call.1) {
                self.left -= 1;
                self.head = Some((call.0, call.1.seq));
                return;
            }
        }
    }
}

pub(crate) struct Store {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    seq: AtomicU64,
    len: AtomicUsize,
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic can't happen while a shard is locked, but never let one poison the store.
    shard.lock().unwrap_or_else(|e| e.into_inner())
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

    fn shard(&self, id: u128) -> MutexGuard<'_, Shard> {
        lock(&self.shards[(id as usize) % SHARDS])
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Stores a new call with a fresh random id, evicting the shard's oldest when full;
    /// returns its id and its JSON.
    pub(crate) fn create(&self, new: NewCall, now_ms: i64) -> (u128, String) {
        let id = new_id();
        let json = render(id, &new, now_ms);
        let call = Call {
            id,
            seq: self.seq.fetch_add(1, Relaxed),
            industry: new.industry,
            status: 0,
            json: json.as_str().into(),
        };
        let mut shard = self.shard(id);
        let pos = shard.base + shard.calls.len() as u64;
        shard.index.insert(id, pos);
        shard.by_status[call.status as usize].insert(pos);
        shard.count(call.industry, call.status, 1);
        shard.calls.push_back(call);
        if shard.calls.len() > self.per_shard {
            if let Some(old) = shard.calls.pop_front() {
                let old_pos = shard.base;
                shard.index.remove(&old.id);
                shard.by_status[old.status as usize].remove(&old_pos);
                shard.count(old.industry, old.status, -1);
                shard.base += 1;
            }
        } else {
            self.len.fetch_add(1, Relaxed);
        }
        (id, json)
    }

    /// The call's JSON, if it is known.
    pub(crate) fn get(&self, id: u128) -> Option<String> {
        let shard = self.shard(id);
        let pos = shard.position(id)?;
        shard
            .calls
            .get((pos - shard.base) as usize)
            .map(|c| c.json().to_string())
    }

    /// Applies a validated update and returns the call's new JSON; `None` when the call is
    /// unknown (or was evicted).
    pub(crate) fn update(
        &self,
        id: u128,
        status: Option<u8>,
        duration: Option<f64>,
        now_ms: i64,
    ) -> Option<String> {
        let mut shard = self.shard(id);
        let pos = shard.position(id)?;
        let at = (pos - shard.base) as usize;
        let call = shard.calls.get_mut(at)?;
        let (industry, was) = (call.industry, call.status);
        let now = status.unwrap_or(was);
        let json = rerender(&call.json, now, duration, now_ms);
        call.status = now;
        call.json = json.as_str().into();
        if now != was {
            shard.by_status[was as usize].remove(&pos);
            shard.by_status[now as usize].insert(pos);
            shard.count(industry, was, -1);
            shard.count(industry, now, 1);
        }
        Some(json)
    }

    /// Calls `each` with the newest `limit` calls matching `filter`, newest first.
    ///
    /// Every shard holds its calls in creation order, so this is a merge of the shards'
    /// newest matches: it visits about `limit` calls per list (plus those a filter skips), and
    /// each shard's counts end its walk once it has no more matches. The shards are locked
    /// together, always in the same order, so the list is one moment's view.
    pub(crate) fn newest(&self, filter: Filter, limit: usize, mut each: impl FnMut(&Call)) {
        let shards: [MutexGuard<'_, Shard>; SHARDS] = std::array::from_fn(|i| lock(&self.shards[i]));
        let mut cursors: [Cursor<'_>; SHARDS] = std::array::from_fn(|i| Cursor::new(&shards[i], filter));
        for _ in 0..limit {
            let mut best: Option<(usize, u64)> = None;
            for (i, cursor) in cursors.iter().enumerate() {
                if let Some((_, seq)) = cursor.head {
                    if best.is_none_or(|(_, s)| seq > s) {
                        best = Some((i, seq));
                    }
                }
            }
            let Some((i, _)) = best else {
                return;
            };
            let cursor = &mut cursors[i];
            if let Some((at, _)) = cursor.head {
                each(&cursor.shard.calls[at]);
            }
            cursor.advance(filter);
        }
    }

    /// The JSON array of the newest `limit` calls matching `filter`, newest first.
    pub(crate) fn list_json(&self, filter: Filter, limit: usize) -> String {
        let mut body = String::with_capacity(2 + limit.min(100) * 330);
        body.push('[');
        self.newest(filter, limit, |call| {
            if body.len() > 1 {
                body.push(',');
            }
            body.push_str(call.json());
        });
        body.push(']');
        body
    }
}

/// A new call's JSON: `{"id":..,"direction":..,"caller_id":..,"callee_id":..,"industry":..,
/// "status":..,"duration_seconds":..,"metadata":..,"created_at":..,"updated_at":..}` in that
/// order ([`rerender`] relies on it). Every string written here is ours (ids, digits, table
/// entries, RFC 3339 times) or already-serialized JSON, so nothing needs escaping; numbers
/// are written by hand.
fn render(id: u128, new: &NewCall, now_ms: i64) -> String {
    let mut out = String::with_capacity(320);
    out.push_str("{\"id\":\"");
    format_id(id, &mut out);
    out.push_str("\",\"direction\":\"");
    out.push_str(DIRECTIONS[new.direction as usize]);
    out.push_str("\",\"caller_id\":\"+");
    push_num(&mut out, new.caller, 1);
    out.push_str("\",\"callee_id\":\"+");
    push_num(&mut out, new.callee, 1);
    out.push_str("\",\"industry\":\"");
    out.push_str(INDUSTRIES[new.industry as usize]);
    out.push_str(STATUS_KEY);
    out.push_str(STATUSES[0]);
    out.push_str(DURATION_KEY);
    out.push_str("null");
    out.push_str(METADATA_KEY);
    out.push_str(new.metadata.as_deref().unwrap_or("{}"));
    out.push_str(",\"created_at\":\"");
    write_time(now_ms, &mut out);
    out.push_str(UPDATED_KEY);
    write_time(now_ms, &mut out);
    out.push_str("\"}");
    out
}

const STATUS_KEY: &str = "\",\"status\":\"";
const DURATION_KEY: &str = "\",\"duration_seconds\":";
const METADATA_KEY: &str = ",\"metadata\":";
const UPDATED_KEY: &str = "\",\"updated_at\":\"";

/// An updated call's JSON, from its JSON before: the new status, the new duration (or the old
/// one), the new update time; the rest copied. The first status, duration and metadata keys
/// are ours (nothing before them comes from a client), and so is the last update-time key
/// (the metadata, the one client part, comes before it).
fn rerender(old: &str, status: u8, duration: Option<f64>, now_ms: i64) -> String {
    let find = |key: &str, from: usize| old[from..].find(key).map(|at| from + at);
    let (Some(status_at), Some(updated_at)) = (find(STATUS_KEY, 0), old.rfind(UPDATED_KEY)) else {
        unreachable!("a stored call's JSON always has its status and update time");
    };
    let duration_at = find(DURATION_KEY, status_at).unwrap_or(updated_at);
    let metadata_at = find(METADATA_KEY, duration_at).unwrap_or(updated_at);
    let mut out = String::with_capacity(old.len() + 8);
    out.push_str(&old[..status_at]);
    out.push_str(STATUS_KEY);
    out.push_str(STATUSES[status as usize]);
    out.push_str(DURATION_KEY);
    match duration {
        Some(d) => {
            let _ = write!(out, "{d}");
        }
        None => out.push_str(&old[duration_at + DURATION_KEY.len()..metadata_at]),
    }
    out.push_str(&old[metadata_at..updated_at]);
    out.push_str(UPDATED_KEY);
    write_time(now_ms, &mut out);
    out.push_str("\"}");
    out
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
    use serde_json::Value;

    fn new_call(industry: u8) -> NewCall {
        NewCall {
            direction: 0,
            caller: 4915112345678,
            callee: 4915187654321,
            industry,
            metadata: None,
        }
    }

    fn list(store: &Store, filter: Filter, limit: usize) -> Vec<Value> {
        let body = store.list_json(filter, limit);
        match serde_json::from_str(&body) {
            Ok(Value::Array(calls)) => calls,
            other => panic!("{other:?}: {body}"),
        }
    }

    fn created_ms(call: &Value) -> i64 {
        let at = call["created_at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp_millis()
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
            let got: Vec<i64> = list(&store, filter, limit).iter().map(created_ms).collect();
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
            .map(|i| store.create(new_call((i % 4) as u8), i).0)
            .collect();
        for id in &ids[400..] {
            store.update(*id, Some(3), None, 0);
        }
        let failed = Filter {
            industry: None,
            status: Some(3),
        };
        let kept_failed = ids[400..].iter().filter(|id| store.get(**id).is_some()).count();
        assert_eq!(list(&store, failed, 100).len(), kept_failed);
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
        assert!(list(&store, none, 50).is_empty());
    }

    #[test]
    fn a_rare_status_is_found_deep_in_the_store() {
        let store = Store::new(16_000);
        let ids: Vec<u128> = (0..30_000)
            .map(|i| store.create(new_call((i % 4) as u8), i).0)
            .collect();
        // Mark a few of the oldest calls still kept, and the newest, failed.
        let kept: Vec<usize> = (0..30_000).filter(|&i| store.get(ids[i]).is_some()).collect();
        let picks = [kept[0], kept[1], kept[2], 29_999];
        let marked: Vec<u128> = picks.iter().map(|&i| ids[i]).collect();
        for id in &marked {
            store.update(*id, Some(3), None, 7);
        }
        let failed = Filter {
            industry: None,
            status: Some(3),
        };
        let got: Vec<u128> = list(&store, failed, 100)
            .iter()
            .map(|c| parse_id(c["id"].as_str().unwrap()).unwrap())
            .collect();
        let want: Vec<u128> = marked.iter().rev().copied().collect();
        assert_eq!(got, want);
        let failed_gesundheit = Filter {
            industry: Some(0),
            status: Some(3),
        };
        let gesundheit = picks.iter().filter(|&&i| i % 4 == 0).count();
        assert_eq!(list(&store, failed_gesundheit, 100).len(), gesundheit);
        // The status index holds each kept call once.
        let indexed: usize = store
            .shards
            .iter()
            .map(|s| s.lock().unwrap().by_status.iter().map(|b| b.len()).sum::<usize>())
            .sum();
        assert_eq!(indexed, store.len());
    }

    #[test]
    fn keeps_only_the_newest_calls() {
        let store = Store::new(32); // 2 per shard
        let ids: Vec<u128> = (0..1000).map(|_| store.create(new_call(0), 0).0).collect();
        assert_eq!(store.len(), 32);
        let kept = ids.iter().filter(|id| store.get(**id).is_some()).count();
        assert_eq!(kept, 32);
        // The very newest call is always kept.
        assert!(store.get(*ids.last().unwrap()).is_some());
    }

    #[test]
    fn lists_newest_first_with_filters() {
        let store = Store::new(1000);
        let mut ids = Vec::new();
        for i in 0..100u8 {
            ids.push(store.create(new_call(i % 4), i as i64).0);
        }
        let all = list(&store, Filter::default(), 10);
        assert_eq!(all.len(), 10);
        assert!(all.windows(2).all(|w| created_ms(&w[0]) > created_ms(&w[1])));
        assert_eq!(created_ms(&all[0]), 99);
        let gastro = list(
            &store,
            Filter {
                industry: Some(2),
                status: None,
            },
            100,
        );
        assert_eq!(gastro.len(), 25);
        assert!(gastro.iter().all(|c| c["industry"] == "gastro"));
        let id = parse_id(gastro[3]["id"].as_str().unwrap()).unwrap();
        store.update(id, Some(3), Some(12.5), 5).unwrap();
        let failed = list(
            &store,
            Filter {
                industry: None,
                status: Some(3),
            },
            50,
        );
        assert_eq!(failed.len(), 1);
        let v = &failed[0];
        assert_eq!(v["status"], "failed");
        assert_eq!(v["duration_seconds"], 12.5);
        assert_eq!(v["caller_id"], "+4915112345678");
        assert_eq!(v["industry"], "gastro");
        assert_eq!(v["updated_at"], "1970-01-01T00:00:00.005Z");
        // The list and a read give the same JSON.
        let read: Value = serde_json::from_str(&store.get(id).unwrap()).unwrap();
        assert_eq!(&read, v);
    }

    #[test]
    fn updates_rewrite_only_what_changed() {
        let store = Store::new(100);
        // Metadata naming our own keys cannot confuse an update.
        let metadata = r#"{"status":"x","duration_seconds":1,"metadata":{},"updated_at":"y"}"#;
        let new = NewCall {
            metadata: Some(metadata.into()),
            ..new_call(1)
        };
        let (id, created) = store.create(new, 1_000);
        let before: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(before["status"], "ringing");
        assert_eq!(before["duration_seconds"], Value::Null);
        let v1: Value = serde_json::from_str(&store.update(id, None, Some(42.0), 2_000).unwrap()).unwrap();
        let v2: Value = serde_json::from_str(&store.update(id, Some(2), None, 3_000).unwrap()).unwrap();
        for (v, status, updated) in [
            (&v1, "ringing", "1970-01-01T00:00:02.000Z"),
            (&v2, "completed", "1970-01-01T00:00:03.000Z"),
        ] {
            assert_eq!(v["status"], status);
            assert_eq!(v["duration_seconds"], 42.0);
            assert_eq!(v["updated_at"], updated);
            assert_eq!(v["created_at"], "1970-01-01T00:00:01.000Z");
            assert_eq!(v["metadata"], serde_json::from_str::<Value>(metadata).unwrap());
            for key in ["id", "direction", "caller_id", "callee_id", "industry"] {
                assert_eq!(v[key], before[key], "{key}");
            }
            assert_eq!(v.as_object().unwrap().len(), 10);
        }
        // The list filters by the new status.
        let completed = Filter {
            industry: None,
            status: Some(2),
        };
        assert_eq!(list(&store, completed, 10), vec![v2]);
    }
}
