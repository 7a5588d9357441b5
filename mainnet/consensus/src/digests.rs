//! A set of 32-byte digests that never rehashes all of itself at once.

use std::collections::HashSet;

type Digest = [u8; 32];

/// Parts a [`DigestSet`] is split into, by a digest's first byte.
const PARTS: usize = 256;

/// A set of digests (transaction identities, signature-cache keys), split by first byte into
/// 256 hash sets.
///
/// A single hash set doubles by rehashing every entry in one call. The engine's set of
/// committed transaction digests holds hundreds of thousands at half load, and every
/// validator reached the same size in the same round: one step then took about 20 ms in each
/// of them at once (a probe in `farol bench consensus`), a stall of the whole committee.
/// Digests are hashes, so the parts grow alike but cross their own doubling points at
/// different moments, each a 256th of the work. Digests an adversary grinds into one part
/// make that part larger, never the work of one step larger than a single set's.
#[derive(Debug)]
pub(crate) struct DigestSet {
    parts: Vec<HashSet<Digest>>,
}

impl Default for DigestSet {
    fn default() -> DigestSet {
        DigestSet { parts: (0..PARTS).map(|_| HashSet::new()).collect() }
    }
}

impl DigestSet {
    fn part(&self, d: &Digest) -> &HashSet<Digest> {
        &self.parts[usize::from(d[0])]
    }

    fn part_mut(&mut self, d: &Digest) -> &mut HashSet<Digest> {
        &mut self.parts[usize::from(d[0])]
    }

    /// Whether `d` is in the set.
    pub(crate) fn contains(&self, d: &Digest) -> bool {
        self.part(d).contains(d)
    }

    /// Adds `d`; true if it was not there.
    pub(crate) fn insert(&mut self, d: Digest) -> bool {
        self.part_mut(&d).insert(d)
    }

    /// Removes `d`; true if it was there.
    pub(crate) fn remove(&mut self, d: &Digest) -> bool {
        self.part_mut(d).remove(d)
    }
}

impl Extend<Digest> for DigestSet {
    fn extend<I: IntoIterator<Item = Digest>>(&mut self, items: I) {
        for d in items {
            self.insert(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The set answers like one `HashSet` over inserts, repeats and removals.
    #[test]
    fn behaves_as_one_hash_set() {
        let mut ours = DigestSet::default();
        let mut reference = HashSet::new();
        let mut seed = 7u64;
        for step in 0..20_000u32 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // A small range of digests, so inserts repeat and removals hit.
            let mut d = [0u8; 32];
            d[0] = (seed >> 56) as u8;
            d[1] = (seed >> 48) as u8 % 8;
            if step % 3 == 2 {
                assert_eq!(ours.remove(&d), reference.remove(&d));
            } else {
                assert_eq!(ours.insert(d), reference.insert(d));
            }
            assert_eq!(ours.contains(&d), reference.contains(&d));
        }
        let held = ours.parts.iter().map(HashSet::len).sum::<usize>();
        assert_eq!(held, reference.len());
        assert!(reference.len() > 100, "the walk left {} digests", reference.len());
    }
}
