//! The root of Ethereum's ordered Merkle-Patricia trie (keys `rlp(index)`), computed with
//! subtries hashed in parallel. Gives exactly `alloy_trie::root::ordered_trie_root`'s result
//! (tested against it); it exists because the receipts root is otherwise a long serial step
//! after a parallel block.

use alloy_primitives::{keccak256, B256};
use alloy_rlp::{Encodable, Header};
use rayon::prelude::*;

/// Subtries with at least this many leaves are split across threads.
const PARALLEL_LEAVES: usize = 512;

/// The ordered-trie root of `values` (already encoded), keyed by `rlp(index)`.
pub(crate) fn ordered_root(values: &[Vec<u8>]) -> B256 {
    if values.is_empty() {
        return alloy_trie::EMPTY_ROOT_HASH;
    }
    let mut items: Vec<(Vec<u8>, &[u8])> = values
        .par_iter()
        .enumerate()
        .map(|(i, v)| {
            let mut key = Vec::with_capacity(4);
            i.encode(&mut key);
            (nibbles(&key), v.as_slice())
        })
        .collect();
    items.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keccak256(node(&items, 0))
}

fn nibbles(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|b| [b >> 4, b & 0x0f]).collect()
}

/// Hex-prefix encoding of a nibble path.
fn hex_prefix(path: &[u8], leaf: bool) -> Vec<u8> {
    let flag = if leaf { 2u8 } else { 0 };
    let mut out = Vec::with_capacity(path.len() / 2 + 1);
    let rest = if path.len() % 2 == 1 {
        out.push(((flag | 1) << 4) | path[0]);
        &path[1..]
    } else {
        out.push(flag << 4);
        path
    };
    out.extend(rest.chunks(2).map(|c| (c[0] << 4) | c[1]));
    out
}

fn list(payload: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    Header { list: true, payload_length: payload.len() }.encode(&mut out);
    out.extend_from_slice(&payload);
    out
}

/// How a parent refers to a child node: inline when its encoding is shorter than 32 bytes.
fn reference(encoded: Vec<u8>, out: &mut Vec<u8>) {
    if encoded.len() < 32 {
        out.extend_from_slice(&encoded);
    } else {
        keccak256(&encoded).as_slice().encode(out);
    }
}

/// The RLP encoding of the node holding `items` (sorted, sharing their first `depth` nibbles).
fn node(items: &[(Vec<u8>, &[u8])], depth: usize) -> Vec<u8> {
    if let [(key, value)] = items {
        let mut payload = Vec::with_capacity(value.len() + 8);
        hex_prefix(&key[depth..], true).as_slice().encode(&mut payload);
        value.encode(&mut payload);
        return list(payload);
    }
    let (first, last) = (&items[0].0, &items[items.len() - 1].0);
    let common = first[depth..].iter().zip(&last[depth..]).take_while(|(a, b)| a == b).count();
    if common > 0 {
        let mut payload = Vec::new();
        hex_prefix(&first[depth..depth + common], false).as_slice().encode(&mut payload);
        reference(node(items, depth + common), &mut payload);
        return list(payload);
    }
    // A branch: a key ending here is the branch's value; the others go to 16 children.
    let (value, rest) = match items.first() {
        Some((k, v)) if k.len() == depth => (Some(*v), &items[1..]),
        _ => (None, items),
    };
    let mut groups: Vec<&[(Vec<u8>, &[u8])]> = Vec::with_capacity(16);
    let mut start = 0;
    for nibble in 0..16u8 {
        let end = start + rest[start..].partition_point(|(k, _)| k[depth] <= nibble);
        groups.push(&rest[start..end]);
        start = end;
    }
    let child =
        |g: &&[(Vec<u8>, &[u8])]| if g.is_empty() { None } else { Some(node(g, depth + 1)) };
    let children: Vec<Option<Vec<u8>>> = if rest.len() >= PARALLEL_LEAVES {
        groups.par_iter().map(child).collect()
    } else {
        groups.iter().map(child).collect()
    };
    let mut payload = Vec::with_capacity(16 * 33 + 1);
    for c in children {
        match c {
            Some(enc) => reference(enc, &mut payload),
            None => payload.push(alloy_rlp::EMPTY_STRING_CODE),
        }
    }
    match value {
        Some(v) => v.encode(&mut payload),
        None => payload.push(alloy_rlp::EMPTY_STRING_CODE),
    }
    list(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_alloy_ordered_trie_root() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for n in [0usize, 1, 2, 3, 15, 16, 17, 127, 128, 129, 255, 256, 257, 600, 1500, 5000] {
            let values: Vec<Vec<u8>> =
                (0..n).map(|_| (0..next() % 80).map(|_| next() as u8).collect()).collect();
            let ours = ordered_root(&values);
            let theirs = alloy_trie::root::ordered_trie_root_with_encoder(&values, |v, out| {
                out.extend_from_slice(v)
            });
            assert_eq!(ours, theirs, "{n} values");
        }
    }
}
