//! Maps and sets keyed by hashes that never rehash all of themselves at once.
//!
//! A hash table doubles by moving every entry in one call. A table of hundreds of thousands
//! of entries then takes tens of milliseconds on one insert, and a table every validator
//! fills with the same keys (committed transaction digests, the chain's transaction index,
//! the state's keys) crosses that point at the same block in all of them: a stall of the
//! whole committee (`farol bench consensus` showed 11–19 ms steps in all four validators at
//! one round). Split 256 ways by the key's first byte, each part crosses its own doubling
//! point at a different moment, with a 256th of the work. Keys are hashes, so the parts
//! grow alike; keys an adversary grinds into one part make that part larger, never one
//! insert's work larger than an unsplit table's.

use core::fmt;
use core::hash::Hash;

use hashbrown::HashMap;

/// Parts a [`SplitMap`] is split into, by a key's first byte.
const PARTS: usize = 256;

/// The part a key belongs to: its first byte.
fn part_of(key: &[u8]) -> usize {
    key.first().map_or(0, |b| usize::from(*b))
}

/// A hash map whose keys are hashes (32-byte digests), split by first byte into 256 maps.
pub struct SplitMap<K, V> {
    parts: Box<[HashMap<K, V>]>,
    len: usize,
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> SplitMap<K, V> {
        SplitMap { parts: (0..PARTS).map(|_| HashMap::new()).collect(), len: 0 }
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SplitMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.parts.iter().flat_map(|p| p.iter())).finish()
    }
}

impl<K: AsRef<[u8]> + Hash + Eq, V> SplitMap<K, V> {
    /// An empty map.
    pub fn new() -> SplitMap<K, V> {
        SplitMap::default()
    }

    /// An empty map with room for about `n` entries (spread evenly over the parts).
    pub fn with_capacity(n: usize) -> SplitMap<K, V> {
        let each = n.div_ceil(PARTS);
        SplitMap { parts: (0..PARTS).map(|_| HashMap::with_capacity(each)).collect(), len: 0 }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.parts[part_of(key.as_ref())].get(key)
    }

    /// The value of `key`, to change in place.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.parts[part_of(key.as_ref())].get_mut(key)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> bool {
        self.parts[part_of(key.as_ref())].contains_key(key)
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.parts[part_of(key.as_ref())].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes `key`; the value it had, if any.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.parts[part_of(key.as_ref())].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Every entry, in no meaningful order (do not let it reach a consensus output).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    /// Every value, in no meaningful order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|p| p.values())
    }
}

/// A set of hashes (32-byte digests), split by first byte into 256 sets: a [`SplitMap`]
/// without values.
pub struct SplitSet<K> {
    map: SplitMap<K, ()>,
}

impl<K> Default for SplitSet<K> {
    fn default() -> SplitSet<K> {
        SplitSet { map: SplitMap::default() }
    }
}

impl<K: fmt::Debug> fmt::Debug for SplitSet<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.map.parts.iter().flat_map(|p| p.keys())).finish()
    }
}

impl<K: AsRef<[u8]> + Hash + Eq> SplitSet<K> {
    /// An empty set.
    pub fn new() -> SplitSet<K> {
        SplitSet::default()
    }

    /// Members held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Adds `key`; true if it was not there.
    pub fn insert(&mut self, key: K) -> bool {
        self.map.insert(key, ()).is_none()
    }

    /// Removes `key`; true if it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }
}

impl<K: AsRef<[u8]> + Hash + Eq> Extend<K> for SplitSet<K> {
    fn extend<I: IntoIterator<Item = K>>(&mut self, items: I) {
        for k in items {
            self.insert(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    /// A reproducible walk of keys from a small range (so inserts repeat and removals hit),
    /// spread over all parts by the first byte and clustered by the second.
    fn walk(steps: u32) -> impl Iterator<Item = (u32, [u8; 32])> {
        let mut seed = 7u64;
        (0..steps).map(move |step| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let mut k = [0u8; 32];
            k[0] = (seed >> 56) as u8;
            k[1] = (seed >> 48) as u8 % 8;
            (step, k)
        })
    }

    /// The map answers like one map over inserts, overwrites, in-place changes and removals,
    /// and holds exactly its entries.
    #[test]
    fn map_behaves_as_one_map() {
        let mut ours = SplitMap::new();
        let mut reference = BTreeMap::new();
        for (step, k) in walk(20_000) {
            match step % 4 {
                0 => assert_eq!(ours.remove(&k), reference.remove(&k)),
                1 => {
                    if let (Some(a), Some(b)) = (ours.get_mut(&k), reference.get_mut(&k)) {
                        *a += 1;
                        *b += 1;
                    }
                }
                _ => assert_eq!(ours.insert(k, step), reference.insert(k, step)),
            }
            assert_eq!(ours.get(&k), reference.get(&k));
            assert_eq!(ours.contains_key(&k), reference.contains_key(&k));
            assert_eq!(ours.len(), reference.len());
        }
        assert!(reference.len() > 100, "the walk left {} keys", reference.len());
        let mut all: Vec<_> = ours.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort();
        assert_eq!(all, reference.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        assert_eq!(ours.values().count(), reference.len());
        let sized: SplitMap<[u8; 32], u32> = SplitMap::with_capacity(10_000);
        assert!(sized.is_empty() && sized.parts.iter().all(|p| p.capacity() >= 10_000 / PARTS));
    }

    /// The set answers like one `HashSet`.
    #[test]
    fn set_behaves_as_one_set() {
        let mut ours = SplitSet::new();
        let mut reference = HashSet::new();
        for (step, k) in walk(20_000) {
            if step % 3 == 2 {
                assert_eq!(ours.remove(&k), reference.remove(&k));
            } else {
                assert_eq!(ours.insert(k), reference.insert(k));
            }
            assert_eq!(ours.contains(&k), reference.contains(&k));
        }
        assert_eq!(ours.len(), reference.len());
        assert!(reference.len() > 100, "the walk left {} keys", reference.len());
        // Keys of any length split by their first byte; an empty key goes to the first part.
        let mut short: SplitSet<Vec<u8>> = SplitSet::new();
        short.extend([vec![], vec![9], vec![9], vec![0, 1]]);
        assert_eq!(short.len(), 3);
        assert!(short.contains(&vec![]) && !short.is_empty());
    }
}
