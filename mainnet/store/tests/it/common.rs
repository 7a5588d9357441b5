//! A reference model: plain maps per version, and an independent, naive computation of the
//! tree's root straight from the definition in docs/store.md.

use std::collections::BTreeMap;

use farol_primitives::{keccak256, Bytes, B256};
use farol_store::{FsyncPolicy, Options};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The root of the binary sparse Merkle tree holding `kv`, computed from the definition:
/// empty → 0, one key → leaf hash, otherwise node(left half, right half) split on bit `depth`.
pub fn naive_root(kv: &BTreeMap<B256, Bytes>) -> B256 {
    let items: Vec<(B256, B256)> = kv.iter().map(|(k, v)| (*k, keccak256(v))).collect();
    subtree(&items, 0)
}

fn bit(k: &B256, i: usize) -> u8 {
    (k[i / 8] >> (7 - i % 8)) & 1
}

fn subtree(items: &[(B256, B256)], depth: usize) -> B256 {
    match items {
        [] => B256::ZERO,
        [(k, vh)] => {
            let mut b = vec![0u8];
            b.extend_from_slice(k.as_slice());
            b.extend_from_slice(vh.as_slice());
            keccak256(b)
        }
        _ => {
            let left: Vec<_> = items.iter().filter(|(k, _)| bit(k, depth) == 0).cloned().collect();
            let right: Vec<_> = items.iter().filter(|(k, _)| bit(k, depth) == 1).cloned().collect();
            let mut b = vec![1u8];
            b.extend_from_slice(subtree(&left, depth + 1).as_slice());
            b.extend_from_slice(subtree(&right, depth + 1).as_slice());
            keccak256(b)
        }
    }
}

/// Options for tests: small segments and checkpoints so that rotation, checkpoints and
/// garbage collection all happen in small runs.
pub fn small_opts() -> Options {
    Options {
        cache_bytes: 64 << 10,
        fsync: FsyncPolicy::Never,
        segment_bytes: 16 << 10,
        checkpoint_bytes: 256 << 10,
        background_gc: false,
        ..Options::default()
    }
}

/// Keys drawn from a small pool so that updates, deletes and shared prefixes are common;
/// some keys share long prefixes to reach deep pages.
pub fn key_pool(rng: &mut ChaCha8Rng, n: usize) -> Vec<B256> {
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let mut b = [0u8; 32];
        rng.fill(&mut b);
        let mut k = B256::from(b);
        if i % 5 == 1 {
            // Share the first `i % 31` bytes with the previous key.
            let prev = keys[i - 1];
            let share = (i * 7) % 31;
            k[..share].copy_from_slice(&B256::as_slice(&prev)[..share]);
        }
        keys.push(k);
    }
    keys
}

pub fn random_value(rng: &mut ChaCha8Rng) -> Bytes {
    let len = match rng.random_range(0..10) {
        0 => 0,
        1..=7 => rng.random_range(1..40),
        _ => rng.random_range(40..600),
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    Bytes::from(v)
}

/// A random batch of changes over `keys`.
pub fn random_batch(rng: &mut ChaCha8Rng, keys: &[B256], max: usize) -> Vec<(B256, Option<Bytes>)> {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| {
            let k = keys[rng.random_range(0..keys.len())];
            let v = if rng.random_range(0..4) == 0 { None } else { Some(random_value(rng)) };
            (k, v)
        })
        .collect()
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Applies a batch to a model map (last change of a key wins).
pub fn apply_model(m: &mut BTreeMap<B256, Bytes>, batch: &[(B256, Option<Bytes>)]) {
    for (k, v) in batch {
        match v {
            Some(v) => {
                m.insert(*k, v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
}

/// Whether the long (fault-injection) variants are asked for (`scripts/test.sh --long`).
pub fn long_mode() -> bool {
    std::env::var("FAROL_LONG").is_ok_and(|v| v == "1")
}
