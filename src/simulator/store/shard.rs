//! One shard of the call store: its calls in creation order, indexed by id and by status, with
//! counts per industry and status; and the cursor a list walks a shard with, newest first.

use super::{Filter, StoredCall, INDUSTRIES, STATUSES};
use std::collections::{btree_set, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

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
pub(super) struct Shard {
    calls: VecDeque<StoredCall>,
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
    /// Adds a call, the newest.
    pub(super) fn push(&mut self, call: StoredCall) {
        let pos = self.base + self.calls.len() as u64;
        self.index.insert(call.id, pos);
        self.by_status[call.status as usize].insert(pos);
        self.count(call.industry, call.status, 1);
        self.calls.push_back(call);
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Forgets the oldest call.
    pub(super) fn evict_oldest(&mut self) {
        if let Some(old) = self.calls.pop_front() {
            let old_pos = self.base;
            self.index.remove(&old.id);
            self.by_status[old.status as usize].remove(&old_pos);
            self.count(old.industry, old.status, -1);
            self.base += 1;
        }
    }

    pub(super) fn get(&self, id: u128) -> Option<&StoredCall> {
        let pos = self.position(id)?;
        self.calls.get((pos - self.base) as usize)
    }

    /// Changes a call through `change`, keeping the status index and counts in step with its
    /// status; returns what `change` returns.
    pub(super) fn update<T>(&mut self, id: u128, change: impl FnOnce(&mut StoredCall) -> T) -> Option<T> {
        let pos = self.position(id)?;
        let call = self.calls.get_mut((pos - self.base) as usize)?;
        let (industry, was) = (call.industry, call.status);
        let out = change(call);
        let now = call.status;
        if now != was {
            self.by_status[was as usize].remove(&pos);
            self.by_status[now as usize].insert(pos);
            self.count(industry, was, -1);
            self.count(industry, now, 1);
        }
        Some(out)
    }

    /// Calls in the status index (each call once, if the index is right).
    #[cfg(test)]
    pub(super) fn indexed(&self) -> usize {
        self.by_status.iter().map(|b| b.len()).sum()
    }

    fn position(&self, id: u128) -> Option<u64> {
        self.index.get(&id).copied()
    }

    fn count(&mut self, industry: u8, status: u8, delta: i32) {
        let n = &mut self.counts[industry as usize][status as usize];
        *n = n.saturating_add_signed(delta);
    }

    /// How many of this shard's calls match `filter`.
    pub(super) fn matching(&self, filter: Filter) -> u32 {
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
pub(super) struct Cursor<'a> {
    shard: &'a Shard,
    walk: Walk<'a>,
    /// The shard's next match (its newest not yet taken): index in `calls`, and `seq`.
    head: Option<(usize, u64)>,
    /// Matches not yet found (from the shard's counts): none left ends the walk at once.
    left: u32,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(shard: &'a Shard, filter: Filter) -> Cursor<'a> {
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

    /// The creation order (`seq`) of the shard's newest match not yet taken.
    pub(super) fn head_seq(&self) -> Option<u64> {
        self.head.map(|(_, seq)| seq)
    }

    /// Takes the shard's newest match not yet taken, and moves on to the next older one.
    pub(super) fn take(&mut self, filter: Filter) -> Option<&'a StoredCall> {
        let (at, _) = self.head?;
        let call = &self.shard.calls[at];
        self.advance(filter);
        Some(call)
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
