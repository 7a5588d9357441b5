//! Checkpoints: what a validator needs to rejoin ordering after it fell further behind than
//! its peers keep history (`gc_depth` rounds), without replaying that history.
//!
//! Every [`Config::checkpoint_every`](crate::Config::checkpoint_every) commits, AsyncBFT
//! records a [`Checkpoint`]: the part of its state that every honest validator has
//! identically after that commit (height, next slot, garbage-collection floor, the blocks
//! ordered above the floor, the transaction digests still deduplicated). Its digest goes out
//! with the commit ([`Committed::checkpoint`](crate::Committed::checkpoint)); the node puts it
//! in the executed block's header, so a block-final certificate certifies it. A
//! [`Snapshot`] adds the DAG blocks the validator held above the floor, and the blocks below
//! it that it kept aside because held blocks had named them under later rounds
//! (self-authenticating: each is signed by its author), which the rejoining validator needs
//! to order what comes next. See `docs/consensus.md`.

use std::sync::Arc;

use bytes::Bytes;

use crate::block::{Block, Message};

type Digest = [u8; 32];

fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first byte of an encoded [`Snapshot`] (distinct from every [`Message`] kind, so a
/// consensus log can start with one).
pub const SNAPSHOT_RECORD: u8 = 0x53;

/// The first byte of a round-floor record: the validator proposed up to this round before
/// it rejoined, so it never proposes at or below it again (it would equivocate).
pub const ROUND_FLOOR_RECORD: u8 = 0x52;

/// A log record saying the engine must not propose at or below `round`.
pub fn round_floor_record(round: u64) -> Bytes {
    let mut out = vec![ROUND_FLOOR_RECORD];
    put_u64(&mut out, round);
    Bytes::from(out)
}

/// The round of a [`round_floor_record`], if `record` is one.
pub fn decode_round_floor(record: &[u8]) -> Option<u64> {
    match record {
        [ROUND_FLOOR_RECORD, rest @ ..] if rest.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(rest);
            Some(u64::from_le_bytes(a))
        }
        _ => None,
    }
}

/// Most digests a decoded checkpoint may hold (a bound for hostile input).
const MAX_DIGESTS: usize = 16 << 20;
/// Most blocks a decoded snapshot may hold.
const MAX_SNAPSHOT_BLOCKS: usize = 1 << 20;

/// The state every honest validator holds identically right after commit `height`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The commit height.
    pub height: u64,
    /// The next leader slot to decide: round and position.
    pub next_slot: (u64, u64),
    /// The round of the newest committed leader.
    pub last_commit_round: u64,
    /// The newest commit's time (commit times never decrease).
    pub last_commit_ms: u64,
    /// The lowest round still kept.
    pub floor: u64,
    /// Digests of the blocks ordered so far that are at or above the floor, sorted.
    pub ordered: Vec<Digest>,
    /// Transaction digests still remembered as committed, by the round of the leader that
    /// committed them, in commit order. Shared with the engine: a checkpoint every 64
    /// commits copies pointers, not the digests of `4 × gc_depth` rounds.
    pub committed: Vec<(u64, Arc<Vec<Digest>>)>,
}

/// `blake3` of one round's committed transaction digests, in order: what a checkpoint's
/// digest covers of that round ([`Checkpoint::digest`]).
pub fn round_hash(digests: &[Digest]) -> Digest {
    let mut h = blake3::Hasher::new();
    for d in digests {
        h.update(d);
    }
    *h.finalize().as_bytes()
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self, most: usize, each: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "length too large")?;
        if n > most || n.saturating_mul(each) > self.0.len() {
            return Err(format!("length {n} is more than the input holds"));
        }
        Ok(n)
    }
    fn digest(&mut self) -> Result<Digest, String> {
        let mut d = [0u8; 32];
        d.copy_from_slice(self.take(32)?);
        Ok(d)
    }
}

impl Checkpoint {
    /// The canonical encoding (what [`Checkpoint::digest`] hashes).
    pub fn encode(&self) -> Vec<u8> {
        let entries: usize = self.committed.iter().map(|(_, ds)| ds.len()).sum();
        let mut out = Vec::with_capacity(64 + 32 * (self.ordered.len() + entries));
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        put_u64(out, self.height);
        put_u64(out, self.next_slot.0);
        put_u64(out, self.next_slot.1);
        put_u64(out, self.last_commit_round);
        put_u64(out, self.last_commit_ms);
        put_u64(out, self.floor);
        put_u64(out, self.ordered.len() as u64);
        for d in &self.ordered {
            out.extend_from_slice(d);
        }
        put_u64(out, self.committed.len() as u64);
        for (round, ds) in &self.committed {
            put_u64(out, *round);
            put_u64(out, ds.len() as u64);
            for d in ds.iter() {
                out.extend_from_slice(d);
            }
        }
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Checkpoint, String> {
        let height = r.u64()?;
        let next_slot = (r.u64()?, r.u64()?);
        let last_commit_round = r.u64()?;
        let last_commit_ms = r.u64()?;
        let floor = r.u64()?;
        let n = r.len(MAX_DIGESTS, 32)?;
        let mut ordered = Vec::with_capacity(n);
        for _ in 0..n {
            ordered.push(r.digest()?);
        }
        if ordered.windows(2).any(|w| w[0] >= w[1]) {
            return Err("ordered digests are not sorted".into());
        }
        let rounds = r.len(MAX_DIGESTS, 16)?;
        let mut committed = Vec::with_capacity(rounds);
        let mut total = 0usize;
        for _ in 0..rounds {
            let round = r.u64()?;
            if committed.last().is_some_and(|(prev, _)| *prev >= round) {
                return Err("committed rounds are not increasing".into());
            }
            let k = r.len(MAX_DIGESTS, 32)?;
            total += k;
            if total > MAX_DIGESTS {
                return Err("too many committed digests".into());
            }
            let mut ds = Vec::with_capacity(k);
            for _ in 0..k {
                ds.push(r.digest()?);
            }
            committed.push((round, Arc::new(ds)));
        }
        Ok(Checkpoint {
            height,
            next_slot,
            last_commit_round,
            last_commit_ms,
            floor,
            ordered,
            committed,
        })
    }

    /// Decodes [`Checkpoint::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
        let mut r = Reader(bytes);
        let c = Checkpoint::decode_from(&mut r)?;
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(c)
    }

    /// `blake3("farol/checkpoint/2" ‖ height ‖ next slot ‖ last commit round and time ‖
    /// floor ‖ ordered count and digests ‖ round count ‖ per round: round, count,
    /// [`round_hash`])`, integers as in the encoding. Rounds enter by their hash, so an engine
    /// that keeps them ([`Checkpoint::digest_with`]) hashes only the rounds that changed.
    pub fn digest(&self) -> Digest {
        self.digest_with(|_, ds| round_hash(ds))
    }

    /// [`Checkpoint::digest`] with each round's hash from `round_hash(round, digests)`, which
    /// must return [`round_hash`]`(digests)`.
    pub fn digest_with(&self, mut round_hash: impl FnMut(u64, &[Digest]) -> Digest) -> Digest {
        let mut h = blake3::Hasher::new();
        h.update(b"farol/checkpoint/2");
        for v in [
            self.height,
            self.next_slot.0,
            self.next_slot.1,
            self.last_commit_round,
            self.last_commit_ms,
            self.floor,
            self.ordered.len() as u64,
        ] {
            h.update(&v.to_le_bytes());
        }
        for d in &self.ordered {
            h.update(d);
        }
        h.update(&(self.committed.len() as u64).to_le_bytes());
        for (round, ds) in &self.committed {
            h.update(&round.to_le_bytes());
            h.update(&(ds.len() as u64).to_le_bytes());
            h.update(&round_hash(*round, ds));
        }
        *h.finalize().as_bytes()
    }
}

/// A checkpoint with the DAG blocks its validator held at or above the floor.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The certified part.
    pub checkpoint: Checkpoint,
    /// The blocks, by (round, author, digest).
    pub blocks: Vec<Arc<Block>>,
}

impl Snapshot {
    /// Checks that the snapshot holds, signed by its author for `chain`, every block its
    /// checkpoint lists as ordered. The checkpoint is certified (by the block-final header
    /// that carries its digest), the blocks beside it are not: a peer that left one out, or
    /// broke its signature, would hand over an engine whose ordered set keeps a digest no
    /// block of its DAG will ever remove, so that every later checkpoint, and the block
    /// hashes that carry them, would differ from the other validators'.
    pub fn check_blocks(
        &self,
        committee: &crate::Committee,
        chain: &[u8; 32],
    ) -> Result<(), String> {
        let held: std::collections::HashMap<Digest, &Block> =
            self.blocks.iter().map(|b| (b.digest(), &**b)).collect();
        for d in &self.checkpoint.ordered {
            let Some(b) = held.get(d) else {
                return Err(format!("lacks the ordered block {}", hex(d)));
            };
            let key = committee.validator(b.author).map(|v| &v.block_key);
            let message = Block::signing_message(chain, d);
            if key.is_none_or(|k| k.verify(&message, &b.signature).is_err()) {
                return Err(format!("the ordered block {} is not signed by its author", hex(d)));
            }
        }
        Ok(())
    }

    /// `SNAPSHOT_RECORD`, the checkpoint, then the blocks as messages.
    pub fn encode(&self) -> Bytes {
        let mut out = vec![SNAPSHOT_RECORD];
        let cp = self.checkpoint.encode();
        put_u64(&mut out, cp.len() as u64);
        out.extend_from_slice(&cp);
        put_u64(&mut out, self.blocks.len() as u64);
        for b in &self.blocks {
            let bytes = b.encoded();
            put_u64(&mut out, bytes.len() as u64);
            out.extend_from_slice(&bytes);
        }
        Bytes::from(out)
    }

    /// Decodes [`Snapshot::encode`]'s output. The blocks' signatures are not checked here
    /// (the engine checks them when it takes the snapshot).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        let mut r = Reader(bytes);
        if r.take(1)? != [SNAPSHOT_RECORD] {
            return Err("not a snapshot".into());
        }
        let n = r.len(usize::MAX, 1)?;
        let checkpoint = Checkpoint::decode(r.take(n)?)?;
        let count = r.len(MAX_SNAPSHOT_BLOCKS, 8)?;
        let mut blocks = Vec::with_capacity(count);
        for i in 0..count {
            let n = r.len(usize::MAX, 1)?;
            let raw = Bytes::copy_from_slice(r.take(n)?);
            match Message::decode(&raw) {
                Ok(Message::Block(b)) => blocks.push(Arc::from(b)),
                Ok(_) => return Err(format!("snapshot block {i}: not a block")),
                Err(e) => return Err(format!("snapshot block {i}: {e}")),
            }
        }
        if !r.0.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Snapshot { checkpoint, blocks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_bad_ones_are_refused() {
        let cp = Checkpoint {
            height: 9,
            next_slot: (14, 2),
            last_commit_round: 13,
            last_commit_ms: 1_700_000_000_123,
            floor: 3,
            ordered: vec![[1; 32], [2; 32], [7; 32]],
            committed: vec![(11, Arc::new(vec![[5; 32], [4; 32]])), (13, Arc::new(vec![[6; 32]]))],
        };
        let bytes = cp.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(cp.clone()));
        let s = Snapshot { checkpoint: cp.clone(), blocks: Vec::new() };
        let back = Snapshot::decode(&s.encode()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.checkpoint.digest(), cp.digest());
        // Any change changes the digest.
        let mut other = cp.clone();
        Arc::make_mut(&mut other.committed[0].1).swap(0, 1);
        assert_ne!(other.digest(), cp.digest());
        for change in [
            |c: &mut Checkpoint| c.height += 1,
            |c: &mut Checkpoint| c.next_slot.1 += 1,
            |c: &mut Checkpoint| c.last_commit_ms += 1,
            |c: &mut Checkpoint| c.floor += 1,
            |c: &mut Checkpoint| c.ordered[1][0] ^= 1,
            |c: &mut Checkpoint| c.committed[1].0 += 1,
            |c: &mut Checkpoint| Arc::make_mut(&mut c.committed[1].1).push([8; 32]),
            // The same digests split into rounds differently.
            |c: &mut Checkpoint| {
                let moved = Arc::make_mut(&mut c.committed[0].1).pop().unwrap_or_default();
                Arc::make_mut(&mut c.committed[1].1).insert(0, moved);
            },
        ] {
            let mut other = cp.clone();
            change(&mut other);
            assert_ne!(other.digest(), cp.digest(), "{other:?}");
        }
        // Unsorted, cut, padded or random input: an error, never a panic.
        let mut unsorted = cp.clone();
        unsorted.ordered.swap(0, 2);
        assert!(Checkpoint::decode(&unsorted.encode()).is_err());
        for cut in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(Checkpoint::decode(&padded).is_err());
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300usize {
            let mut junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Checkpoint::decode(&junk);
            if let Some(first) = junk.first_mut() {
                *first = SNAPSHOT_RECORD;
            }
            let _ = Snapshot::decode(&junk);
        }
    }
}
