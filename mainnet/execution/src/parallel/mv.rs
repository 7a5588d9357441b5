//! Multi-version memory: for every location, the value each transaction of the block wrote,
//! so that transaction `j` reads the write of the highest `i < j`.

use hashbrown::HashMap;

use alloy_primitives::U256;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::state::Account;
use crate::writes::{Loc, Val};

/// One transaction's write to a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A full value.
    Value(Val),
    /// A balance credit to an account with no code (a plain value transfer's recipient),
    /// added on top of the writes below it.
    Credit(U256),
    /// The writer was aborted and will likely write here again: readers wait for it.
    Estimate,
}

/// What a read found below the reader.
pub(crate) enum Found {
    /// No full write below: the parent state's value, plus these credits in order.
    Base(Credits),
    /// The nearest full write below, plus the credits above it in order.
    Value(Val, Credits),
    /// A write below is an estimate of transaction `.0`.
    Blocked(usize),
}

/// Balance credits found above the nearest full write (almost always none).
pub(crate) type Credits = smallvec::SmallVec<[U256; 2]>;

const SHARDS: usize = 1024;

/// The writes to one location, sorted by transaction index (few per location, appended
/// mostly in order, so a sorted vector beats a tree).
#[derive(Default)]
pub(crate) struct Versions {
    /// The parent state's value, when a writer knew it (it read the location from there).
    parent: Option<Val>,
    /// Most locations are written by one transaction: that write is stored inline.
    list: smallvec::SmallVec<[(usize, Entry); 1]>,
}

impl Versions {
    pub(crate) fn single(entry: Entry, parent: Option<Val>) -> Self {
        Versions { parent, list: smallvec::smallvec![(0, entry)] }
    }

    /// The parent state's value, if known.
    pub(crate) fn parent(&self) -> Option<Val> {
        self.parent
    }

    fn insert(&mut self, idx: usize, entry: Entry) {
        match self.list.binary_search_by_key(&idx, |(i, _)| *i) {
            Ok(p) => self.list[p].1 = entry,
            Err(p) => self.list.insert(p, (idx, entry)),
        }
    }

    fn remove(&mut self, idx: usize) {
        if let Ok(p) = self.list.binary_search_by_key(&idx, |(i, _)| *i) {
            self.list.remove(p);
        }
    }

    fn set_if_present(&mut self, idx: usize, entry: Entry) {
        if let Ok(p) = self.list.binary_search_by_key(&idx, |(i, _)| *i) {
            self.list[p].1 = entry;
        }
    }

    /// The writes below `idx`, nearest first.
    fn below(&self, idx: usize) -> impl Iterator<Item = &(usize, Entry)> {
        let end = self.list.partition_point(|(i, _)| *i < idx);
        self.list[..end].iter().rev()
    }

    /// All writes in transaction order.
    pub(crate) fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.list.iter().map(|(_, e)| e)
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
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

/// Whether, before Spurious Dragon (the callers check the fork first, so that later blocks
/// read nothing for it), the first transaction's reward creates the beneficiary in revm's
/// eyes, so that the diff lists it among the accounts created (`wiped`), as sequential
/// execution does. Before Spurious Dragon revm keeps a touched empty account that did not exist by marking
/// it created; the first reward touches the beneficiary, and when it pays nothing to one
/// absent from the parent state (`parent`) that the transaction did not write itself,
/// nothing in the transaction's own state shows it, since both parallel paths set the fee
/// aside. Every later reward finds it existing, unless a transaction deleted it, which
/// lists it anyway. (Found by a stop 47 review, fixed in stop 49.)
pub(crate) fn first_reward_creates_beneficiary(
    parent: Option<Account>,
    first_fee: Option<U256>,
    first_wrote_it: bool,
) -> bool {
    parent.is_none() && first_fee == Some(U256::ZERO) && !first_wrote_it
}

impl MvMemory {
    pub(crate) fn new(n: usize) -> Self {
        MvMemory {
            // Room for about three writes per transaction, spread over the shards.
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashMap::with_capacity(3 * n / SHARDS + 1))))
                .collect(),
            written: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Publishes the writes of an incarnation of `idx`, removing what its previous incarnation
    /// wrote and this one did not. Returns whether it wrote a location the previous one did not.
    pub(crate) fn record(&self, idx: usize, writes: Vec<(Loc, Entry, Option<Val>)>) -> bool {
        let mut locs: Vec<Loc> = writes.iter().map(|(l, _, _)| *l).collect();
        for (loc, entry, parent) in writes {
            let mut shard = self.shards[shard_of(&loc)].lock();
            let versions = shard.entry(loc).or_default();
            if versions.parent.is_none() {
                versions.parent = parent;
            }
            versions.insert(idx, entry);
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

    /// The writes to `loc` below `idx` that make its value.
    pub(crate) fn read(&self, loc: &Loc, idx: usize) -> Found {
        self.read_with_index(loc, idx).0
    }

    /// The writes to `loc` below `idx` that make its value, and which transaction wrote the
    /// nearest full value.
    pub(crate) fn read_with_index(&self, loc: &Loc, idx: usize) -> (Found, Option<usize>) {
        let shard = self.shards[shard_of(loc)].lock();
        let mut credits = Credits::new();
        if let Some(versions) = shard.get(loc) {
            for (i, entry) in versions.below(idx) {
                match entry {
                    Entry::Credit(c) => credits.push(*c),
                    Entry::Value(v) => {
                        credits.reverse();
                        return (Found::Value(*v, credits), Some(*i));
                    }
                    Entry::Estimate => return (Found::Blocked(*i), Some(*i)),
                }
            }
        }
        credits.reverse();
        (Found::Base(credits), None)
    }

    /// The locations each transaction's last incarnation wrote.
    pub(crate) fn take_written(&mut self) -> Vec<Vec<Loc>> {
        self.written.iter_mut().map(|w| std::mem::take(w.get_mut())).collect()
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
