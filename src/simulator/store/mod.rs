//! The in-memory call store: concurrent (sharded by id), bounded (oldest calls evicted first).
//!
//! Each call keeps its JSON object ([`call_json`]), serialized once when it is created and again
//! when it is updated, next to the few fields a list filters and orders by: answering a read or
//! a list is then copying bytes (a list of 50 calls is about 15 KB), with no serializing and no
//! record cloned. A list merges the shards' newest calls (each shard holds its calls in creation
//! order, and an index of them by status: [`shard`]), so it visits only a few times as many
//! calls as it returns, whatever the filter. A full store of 100,000 calls takes about 40 MB.

mod call_json;
mod shard;

pub(crate) use call_json::parse_id;

use shard::{Cursor, Shard};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

/// Shards: enough that two cores rarely meet on one lock, few enough that a list stays cheap.
const SHARDS: usize = 16;

pub(crate) const INDUSTRIES: [&str; 4] = ["gesundheit", "handwerk", "gastro", "freie_berufe"];
pub(crate) const STATUSES: [&str; 4] = ["ringing", "in_progress", "completed", "failed"];
pub(crate) const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];

/// One call as stored: what lists filter and order by, and its JSON. Indices point into the
/// constant tables above.
#[derive(Debug, Clone)]
pub(crate) struct StoredCall {
    id: u128,
    /// Creation order across the store.
    seq: u64,
    industry: u8,
    status: u8,
    /// The call's JSON object as the API answers it.
    json: Box<str>,
}

/// What a new call is made of (validated by the API layer).
pub(crate) struct NewCall {
    pub direction: u8,
    /// E.164 digits without the '+' (validation guarantees no leading zero).
    pub caller: u64,
    pub callee: u64,
    pub industry: u8,
    /// The request's metadata object.
    pub metadata: Option<serde_json::Value>,
}

/// List filters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Filter {
    pub industry: Option<u8>,
    pub status: Option<u8>,
}

impl Filter {
    fn matches(&self, c: &StoredCall) -> bool {
        self.industry.is_none_or(|i| i == c.industry) && self.status.is_none_or(|s| s == c.status)
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
        let id = call_json::new_id();
        let industry = new.industry;
        let json = call_json::render(id, new, now_ms);
        let call = StoredCall {
            id,
            seq: self.seq.fetch_add(1, Relaxed),
            industry,
            status: 0,
            json: json.as_str().into(),
        };
        let mut shard = self.shard(id);
        shard.push(call);
        if shard.len() > self.per_shard {
            shard.evict_oldest();
        } else {
            self.len.fetch_add(1, Relaxed);
        }
        (id, json)
    }

    /// The call's JSON, if it is known.
    pub(crate) fn get(&self, id: u128) -> Option<String> {
        self.shard(id).get(id).map(|c| c.json.to_string())
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
        self.shard(id).update(id, |call| {
            call.status = status.unwrap_or(call.status);
            let json = call_json::rerender(&call.json, call.status, duration, now_ms);
            call.json = json.as_str().into();
            json
        })
    }

    /// Calls `each` with the newest `limit` calls matching `filter`, newest first.
    ///
    /// Every shard holds its calls in creation order, so this is a merge of the shards'
    /// newest matches: it visits about `limit` calls per list (plus those a filter skips), and
    /// each shard's counts end its walk once it has no more matches. The shards are locked
    /// together, always in the same order, so the list is one moment's view.
    pub(crate) fn newest(&self, filter: Filter, limit: usize, mut each: impl FnMut(&StoredCall)) {
        let shards: [MutexGuard<'_, Shard>; SHARDS] = std::array::from_fn(|i| lock(&self.shards[i]));
        let mut cursors: [Cursor<'_>; SHARDS] = std::array::from_fn(|i| Cursor::new(&shards[i], filter));
        for _ in 0..limit {
            let mut best: Option<(usize, u64)> = None;
            for (i, cursor) in cursors.iter().enumerate() {
                if let Some(seq) = cursor.head_seq() {
                    if best.is_none_or(|(_, s)| seq > s) {
                        best = Some((i, seq));
                    }
                }
            }
            let Some((i, _)) = best else {
                return;
            };
            if let Some(call) = cursors[i].take(filter) {
                each(call);
            }
        }
    }

    /// The JSON array of the newest `limit` calls matching `filter`, newest first: the stored
    /// objects joined, each already serialized.
    pub(crate) fn list_json(&self, filter: Filter, limit: usize) -> String {
        let mut body = String::with_capacity(2 + limit.min(100) * 330);
        body.push('[');
        self.newest(filter, limit, |call| {
            if body.len() > 1 {
                body.push(',');
            }
            body.push_str(&call.json);
        });
        body.push(']');
        body
    }
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
            .map(|s| lock(s).matching(Filter::default()))
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
        let indexed: usize = store.shards.iter().map(|s| lock(s).indexed()).sum();
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
            metadata: Some(serde_json::from_str(metadata).unwrap()),
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
