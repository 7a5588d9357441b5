//! The root of Ethereum's ordered Merkle-Patricia trie (keys `rlp(index)`), computed with
//! subtries hashed in parallel. Gives exactly `alloy_trie::root::ordered_trie_root`'s result
//! (tested against it); it exists because the receipts root is otherwise a long serial step
//! after a parallel block.

use alloy_primitives::{keccak256, B256};
use alloy_rlp::{Encodable, Header};
use rayon::prelude::*;

use crate::keccak4::keccak256_x4;

/// Subtries with at least this many leaves are split across threads.
const PARALLEL_LEAVES: usize = 512;

/// Writes the encoding of value `i` (appends to the buffer).
type Encode<'a> = &'a (dyn Fn(usize, &mut Vec<u8>) + Sync);

/// A key's nibbles: `rlp(index)` is at most 9 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    nibbles: [u8; 18],
    len: u8,
}

impl Key {
    fn of(index: usize) -> Key {
        let mut rlp = Vec::with_capacity(9);
        index.encode(&mut rlp);
        let mut nibbles = [0u8; 18];
        for (i, b) in rlp.iter().enumerate() {
            nibbles[2 * i] = b >> 4;
            nibbles[2 * i + 1] = b & 0x0f;
        }
        Key { nibbles, len: 2 * rlp.len() as u8 }
    }

    fn path(&self) -> &[u8] {
        &self.nibbles[..usize::from(self.len)]
    }
}

/// The ordered-trie root of `values` (already encoded), keyed by `rlp(index)`.
#[cfg(test)]
pub(crate) fn ordered_root(values: &[Vec<u8>]) -> B256 {
    ordered_root_with(values.len(), &|i, out| out.extend_from_slice(&values[i]))
}

/// The ordered-trie root of `n` values keyed by `rlp(index)`, each written by `encode` when
/// its leaf is hashed (no value is kept encoded).
pub(crate) fn ordered_root_with(n: usize, encode: Encode<'_>) -> B256 {
    if n == 0 {
        return alloy_trie::EMPTY_ROOT_HASH;
    }
    let mut items: Vec<(Key, usize)> =
        (0..n).into_par_iter().with_min_len(1024).map(|i| (Key::of(i), i)).collect();
    items.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    match &items[..] {
        [(key, i)] => leaf(key.path(), *i, encode, |enc| keccak256(enc)),
        _ => keccak256(node(&items, 0, encode)),
    }
}

thread_local! {
    /// Where leaves are encoded, each value after `LEAF_HEAD` bytes and its headers just
    /// before: one buffer per child of a branch.
    static LEAVES: std::cell::RefCell<Vec<Vec<u8>>> =
        std::cell::RefCell::new((0..16).map(|_| Vec::new()).collect());
}

/// Room for a leaf's headers: a list header, the path (at most 10 bytes with its header)
/// and the value's header.
const LEAF_HEAD: usize = 32;

/// Encodes the leaf of value `i` at the rest of its key `path` into `buf`; the encoding is
/// `buf[start..]`, `start` returned.
fn leaf_into(path: &[u8], i: usize, encode: Encode<'_>, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    buf.resize(LEAF_HEAD, 0);
    encode(i, buf);
    let value = &buf[LEAF_HEAD..];
    let mut head = Vec::with_capacity(LEAF_HEAD);
    let mut rest = Vec::with_capacity(LEAF_HEAD);
    hex_prefix(path, true).as_slice().encode(&mut rest);
    // An RLP string of one byte below 0x80 is that byte alone.
    if value.len() != 1 || value[0] >= alloy_rlp::EMPTY_STRING_CODE {
        Header { list: false, payload_length: value.len() }.encode(&mut rest);
    }
    Header { list: true, payload_length: rest.len() + value.len() }.encode(&mut head);
    head.extend_from_slice(&rest);
    let start = LEAF_HEAD - head.len();
    buf[start..LEAF_HEAD].copy_from_slice(&head);
    start
}

/// Calls `with` on the encoding of the leaf of value `i` at the rest of its key `path`.
fn leaf<R>(path: &[u8], i: usize, encode: Encode<'_>, with: impl FnOnce(&[u8]) -> R) -> R {
    LEAVES.with_borrow_mut(|bufs| {
        let start = leaf_into(path, i, encode, &mut bufs[0]);
        with(&bufs[0][start..])
    })
}

/// The references to the children of a branch that are leaves (`leaves[k]`: the child's
/// index and the leaf's item), their hashes computed four at a time.
fn leaf_references(
    leaves: &[(usize, &(Key, usize))],
    depth: usize,
    encode: Encode<'_>,
    refs: &mut [Vec<u8>],
) {
    LEAVES.with_borrow_mut(|bufs| {
        let mut starts = [0usize; 16];
        for (k, (_, (key, i))) in leaves.iter().enumerate() {
            starts[k] = leaf_into(&key.path()[depth..], *i, encode, &mut bufs[k]);
        }
        // Encodings shorter than 32 bytes are inlined; the others are hashed in fours.
        let mut hashed: Vec<usize> = Vec::with_capacity(16);
        for (k, (child, _)) in leaves.iter().enumerate() {
            let enc = &bufs[k][starts[k]..];
            if enc.len() < 32 {
                refs[*child].extend_from_slice(enc);
            } else {
                hashed.push(k);
            }
        }
        for four in hashed.chunks(4) {
            let message = |j: usize| four.get(j).map_or(&[][..], |k| &bufs[*k][starts[*k]..]);
            let hashes = keccak256_x4([message(0), message(1), message(2), message(3)]);
            for (k, h) in four.iter().zip(hashes) {
                h.as_slice().encode(&mut refs[leaves[*k].0]);
            }
        }
    });
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
fn reference(encoded: &[u8], out: &mut Vec<u8>) {
    if encoded.len() < 32 {
        out.extend_from_slice(encoded);
    } else {
        keccak256(encoded).as_slice().encode(out);
    }
}

/// Appends the reference to the node holding `items` (sorted, sharing their first `depth`
/// nibbles) to `out`.
fn child(items: &[(Key, usize)], depth: usize, encode: Encode<'_>, out: &mut Vec<u8>) {
    match items {
        [(key, i)] => leaf(&key.path()[depth..], *i, encode, |enc| reference(enc, out)),
        _ => reference(&node(items, depth, encode), out),
    }
}

/// The RLP encoding of the node holding `items` (at least two, sorted, sharing their first
/// `depth` nibbles).
fn node(items: &[(Key, usize)], depth: usize, encode: Encode<'_>) -> Vec<u8> {
    let (first, last) = (items[0].0.path(), items[items.len() - 1].0.path());
    let common = first[depth..].iter().zip(&last[depth..]).take_while(|(a, b)| a == b).count();
    if common > 0 {
        let mut payload = Vec::new();
        hex_prefix(&first[depth..depth + common], false).as_slice().encode(&mut payload);
        child(items, depth + common, encode, &mut payload);
        return list(payload);
    }
    // A branch: a key ending here is the branch's value; the others go to 16 children.
    let (value, rest) = match items.first() {
        Some((k, i)) if usize::from(k.len) == depth => (Some(*i), &items[1..]),
        _ => (None, items),
    };
    let mut groups: Vec<&[(Key, usize)]> = Vec::with_capacity(16);
    let mut start = 0;
    for nibble in 0..16u8 {
        let end = start + rest[start..].partition_point(|(k, _)| k.nibbles[depth] <= nibble);
        groups.push(&rest[start..end]);
        start = end;
    }
    // Children that are single leaves are encoded and hashed together; the others each
    // become a node of their own (in parallel when large).
    let mut children: Vec<Vec<u8>> = (0..16).map(|_| Vec::with_capacity(33)).collect();
    let leaves: Vec<(usize, &(Key, usize))> = groups
        .iter()
        .enumerate()
        .filter_map(|(c, g)| match g {
            [item] => Some((c, item)),
            _ => None,
        })
        .collect();
    leaf_references(&leaves, depth + 1, encode, &mut children);
    let inner = |(c, g): (usize, &&[(Key, usize)])| -> Option<(usize, Vec<u8>)> {
        match g.len() {
            0 => Some((c, vec![alloy_rlp::EMPTY_STRING_CODE])),
            1 => None,
            _ => {
                let mut r = Vec::with_capacity(33);
                reference(&node(g, depth + 1, encode), &mut r);
                Some((c, r))
            }
        }
    };
    let inners: Vec<(usize, Vec<u8>)> = if rest.len() >= PARALLEL_LEAVES {
        groups.par_iter().enumerate().filter_map(inner).collect()
    } else {
        groups.iter().enumerate().filter_map(inner).collect()
    };
    for (c, r) in inners {
        children[c] = r;
    }
    let mut payload = Vec::with_capacity(16 * 33 + 1);
    for c in children {
        payload.extend_from_slice(&c);
    }
    match value {
        Some(i) => {
            let mut v = Vec::new();
            encode(i, &mut v);
            v.as_slice().encode(&mut payload);
        }
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
            // Mostly short values (inline leaves, one-byte values), some past 256 bytes (as
            // receipts with logs are).
            let values: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = if next() % 7 == 0 { 200 + next() % 400 } else { next() % 80 };
                    (0..len).map(|_| next() as u8).collect()
                })
                .collect();
            let ours = ordered_root(&values);
            let theirs = alloy_trie::root::ordered_trie_root_with_encoder(&values, |v, out| {
                out.extend_from_slice(v)
            });
            assert_eq!(ours, theirs, "{n} values");
        }
    }
}
