//! Multi-version memory: for every location, the value each transaction of the block wrote,
//! so that transaction `j` reads the write of the highest `i < j`.

use hashbrown::HashMap;

use alloy_primitives::{Address, U256};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::state::Account;
use crate::writes::{Loc, Val};

/// One transaction's write to a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A full value.
    Value(Val),
    /// The beneficiary's fee credit, added lazily on top of the writes below it.
    Fee(U256),
    /// The writer was aborted and will likely write here again: readers wait for it.
    Estimate,
}

/// What a read found below the reader.
pub(crate) enum Found {
    /// No transaction below wrote the location: read the parent state.
    Base,
    /// The nearest write below.
    Value(Val),
    /// The nearest write below is an estimate of transaction `.0`.
    Blocked(usize),
}

/// The beneficiary's account as seen below a reader: a starting value (or the parent
/// state's) and the fee credits to add on top of it, oldest first.
pub(crate) struct Credits {
    pub(crate) start: Option<Option<Account>>,
    pub(crate) fees: Vec<U256>,
}

const SHARDS: usize = 1024;

/// The writes to one location, sorted by transaction index (few per location, appended
/// mostly in order, so a sorted vector beats a tree).
#[derive(Default)]
pub(crate) struct Versions(Vec<(usize, Entry)>);

impl Versions {
    fn insert(&mut self, idx: usize, entry: Entry) {
        match self.0.binary_search_by_key(&idx, |(i, _)| *i) {
            Ok(p) => self.0[p].1 = entry,
            Err(p) => self.0.insert(p, (idx, entry)),
        }
    }

    fn remove(&mut self, idx: usize) {
        if let Ok(p) = self.0.binary_search_by_key(&idx, |(i, _)| *i) {
            self.0.remove(p);
        }
    }

    fn set_if_present(&mut self, idx: usize, entry: Entry) {
        if let Ok(p) = self.0.binary_search_by_key(&idx, |(i, _)| *i) {
            self.0[p].1 = entry;
        }
    }

    /// The writes below `idx`, nearest first.
    fn below(&self, idx: usize) -> impl Iterator<Item = &(usize, Entry)> {
        let end = self.0.partition_point(|(i, _)| *i < idx);
        self.0[..end].iter().rev()
    }

    /// All writes in transaction order.
    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.0.iter().map(|(_, e)| e)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub(crate) struct MvMemory {
    shards: Vec<CachePadded<Mutex<HashMap<Loc, Versions>>>>,
    written: Vec<Mutex<Vec<Loc>>>,
}

fn shard_of(loc: &Loc) -> usize {
    let (a, extra) = match loc {
        Loc::Account(a) => (a, 0usize),
        Loc::Storage(a, s) => {
            (a, s.as_limbs()[0] as usize ^ (s.as_limbs()[3] as usize).rotate_left(7))
        }
    };
    let h = u64::from_le_bytes([
        a.0[12], a.0[13], a.0[14], a.0[15], a.0[16], a.0[17], a.0[18], a.0[19],
    ]);
    ((h as usize) ^ extra.wrapping_mul(0x9E37_79B9)) % SHARDS
}

/// Adds `fee` to the beneficiary, the way revm rewards it: the account is touched, so an
/// empty result is deleted (EIP-161); an overflowing credit leaves the balance unchanged.
pub(crate) fn credit(account: Option<Account>, fee: U256, state_clear: bool) -> Option<Account> {
    let mut a = account.unwrap_or_default();
    if let Some(b) = a.balance.checked_add(fee) {
        a.balance = b;
    }
    if state_clear && a.is_empty() {
        None
    } else {
        Some(a)
    }
}

impl MvMemory {
    pub(crate) fn new(n: usize) -> Self {
        MvMemory {
            shards: (0..SHARDS).map(|_| CachePadded::new(Mutex::new(HashMap::new()))).collect(),
            written: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Publishes the writes of an incarnation of `idx`, removing what its previous incarnation
    /// wrote and this one did not. Returns whether it wrote a location the previous one did not.
    pub(crate) fn record(&self, idx: usize, writes: Vec<(Loc, Entry)>) -> bool {
        let mut locs: Vec<Loc> = writes.iter().map(|(l, _)| *l).collect();
        for (loc, entry) in writes {
            self.shards[shard_of(&loc)].lock().entry(loc).or_default().insert(idx, entry);
        }
        locs.sort_unstable();
        let mut prev = self.written[idx].lock();
        // Both lists are sorted: walk them together.
        let mut wrote_new = false;
        let (mut i, mut j) = (0, 0);
        while i < locs.len() || j < prev.len() {
            match (locs.get(i), prev.get(j)) {
                (Some(a), Some(b)) if a == b => {
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a < b => {
                    wrote_new = true;
                    i += 1;
                }
                (Some(_), None) => {
                    wrote_new = true;
                    i += 1;
                }
                (_, Some(b)) => {
                    if let Some(v) = self.shards[shard_of(b)].lock().get_mut(b) {
                        v.remove(idx);
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        *prev = locs;
        wrote_new
    }

    /// Marks every write of `idx` as an estimate (after its validation failed).
    pub(crate) fn mark_estimates(&self, idx: usize) {
        for loc in self.written[idx].lock().iter() {
            if let Some(v) = self.shards[shard_of(loc)].lock().get_mut(loc) {
                v.set_if_present(idx, Entry::Estimate);
            }
        }
    }

    /// The nearest write to `loc` below `idx`.
    pub(crate) fn read(&self, loc: &Loc, idx: usize) -> Found {
        let shard = self.shards[shard_of(loc)].lock();
        match shard.get(loc).and_then(|v| v.below(idx).next()) {
            None => Found::Base,
            Some((_, Entry::Value(v))) => Found::Value(*v),
            Some((i, Entry::Estimate)) => Found::Blocked(*i),
            // A fee credit without a full value is only written at the beneficiary, which is
            // read through `credits`.
            Some((i, Entry::Fee(_))) => Found::Blocked(*i),
        }
    }

    /// The beneficiary's writes below `idx`: the nearest full value and the fee credits above it.
    pub(crate) fn credits(&self, beneficiary: Address, idx: usize) -> Result<Credits, usize> {
        let loc = Loc::Account(beneficiary);
        let shard = self.shards[shard_of(&loc)].lock();
        let mut fees = Vec::new();
        let mut start = None;
        if let Some(versions) = shard.get(&loc) {
            for (i, e) in versions.below(idx) {
                match e {
                    Entry::Fee(f) => fees.push(*f),
                    Entry::Value(Val::Account(a)) => {
                        start = Some(*a);
                        break;
                    }
                    Entry::Value(Val::Storage(_)) | Entry::Estimate => return Err(*i),
                }
            }
        }
        fees.reverse();
        Ok(Credits { start, fees })
    }

    /// Every written location with its writes, in no particular order.
    pub(crate) fn into_locations(self) -> Vec<(Loc, Versions)> {
        self.shards
            .into_iter()
            .flat_map(|s| s.into_inner().into_inner().into_iter())
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }
}
