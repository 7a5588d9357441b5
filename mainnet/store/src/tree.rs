//! The tree: a binary sparse Merkle tree over the 256 bits of the key, with single-key
//! subtrees compressed into their leaf, stored as pages of 8 binary levels (256 slots).
//!
//! See `docs/store.md` for the definition; in short:
//! - `leaf(k, v)   = keccak256(0x00 ‖ k ‖ keccak256(v))`
//! - `node(l, r)   = keccak256(0x01 ‖ l ‖ r)`
//! - an empty subtree hashes to 32 zero bytes, a subtree holding exactly one key hashes
//!   to that key's leaf hash (wherever it sits), any other subtree to `node(left, right)`.
//!
//! A page at byte depth `d` holds the subtree below the key prefix `k[0..d]`; its 256 slots
//! are indexed by `k[d]`. A slot is empty, a single leaf, or a child page (which then holds
//! at least two keys). A page's slots carry all that is needed to hash its 8 levels.

use farol_primitives::{keccak256, Bytes, B256};

/// Deepest page: a page at depth 31 indexes its slots by the last key byte.
pub(crate) const MAX_DEPTH: u8 = 31;

/// The address of a page: its byte depth and the key prefix above it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub(crate) struct PageId {
    depth: u8,
    /// `prefix[..depth]` is the key prefix; the rest is zero.
    prefix: [u8; 32],
}

impl PageId {
    /// The root page.
    pub(crate) const ROOT: PageId = PageId { depth: 0, prefix: [0; 32] };

    /// Builds a page id; `prefix` must have at most [`MAX_DEPTH`] bytes.
    pub(crate) fn new(prefix: &[u8]) -> Option<PageId> {
        if prefix.len() > MAX_DEPTH as usize {
            return None;
        }
        let mut p = [0u8; 32];
        p[..prefix.len()].copy_from_slice(prefix);
        Some(PageId { depth: prefix.len() as u8, prefix: p })
    }

    pub(crate) fn depth(&self) -> u8 {
        self.depth
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix[..self.depth as usize]
    }

    /// The page below slot `slot` of this one, or `None` below the deepest level.
    pub(crate) fn child(&self, slot: u8) -> Option<PageId> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let mut c = *self;
        c.prefix[self.depth as usize] = slot;
        c.depth += 1;
        Some(c)
    }
}

/// A key-value pair in a slot, with its two hashes cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) key: B256,
    pub(crate) value: Bytes,
    pub(crate) value_hash: B256,
    pub(crate) hash: B256,
}

impl Leaf {
    pub(crate) fn new(key: B256, value: Bytes) -> Leaf {
        let value_hash = keccak256(&value);
        let hash = leaf_hash(&key, &value_hash);
        Leaf { key, value, value_hash, hash }
    }
}

/// One occupied slot of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Exactly one key below this slot.
    Leaf(Leaf),
    /// A child page holding at least two keys, with its subtree hash.
    Child(B256),
}

/// The contents of a page: its occupied slots in slot order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) slots: Vec<(u8, Slot)>,
}

impl Page {
    pub(crate) fn get(&self, slot: u8) -> Option<&Slot> {
        self.slots.binary_search_by_key(&slot, |(i, _)| *i).ok().map(|i| &self.slots[i].1)
    }

    pub(crate) fn set(&mut self, slot: u8, value: Option<Slot>) {
        match (self.slots.binary_search_by_key(&slot, |(i, _)| *i), value) {
            (Ok(i), Some(v)) => self.slots[i].1 = v,
            (Ok(i), None) => {
                self.slots.remove(i);
            }
            (Err(i), Some(v)) => self.slots.insert(i, (slot, v)),
            (Err(_), None) => {}
        }
    }

    /// How many keys the page's subtree holds: 0, 1 or "2 or more" (returned as 2).
    pub(crate) fn key_count_class(&self) -> u8 {
        match self.slots.as_slice() {
            [] => 0,
            [(_, Slot::Leaf(_))] => 1,
            _ => 2,
        }
    }

    /// The single leaf of a page that holds exactly one key.
    pub(crate) fn single_leaf(&self) -> Option<&Leaf> {
        match self.slots.as_slice() {
            [(_, Slot::Leaf(l))] => Some(l),
            _ => None,
        }
    }

    /// Approximate bytes of memory the page holds (for the cache budget).
    pub(crate) fn mem_size(&self) -> usize {
        64 + self
            .slots
            .iter()
            .map(|(_, s)| match s {
                Slot::Leaf(l) => 160 + l.value.len(),
                Slot::Child(_) => 48,
            })
            .sum::<usize>()
    }

    /// The hash of the page's subtree.
    pub(crate) fn hash(&self) -> NodeHash {
        range_hash(&self.slots, 8)
    }

    /// Walks from the page's top towards `slot`, pushing the sibling hash of every binary
    /// level passed (top-down) onto `siblings`. Stops early where the subtree holding `slot`
    /// is empty or a single leaf; returns where the walk ended.
    pub(crate) fn path<'a>(&'a self, slot: u8, siblings: &mut Vec<B256>) -> PathEnd<'a> {
        let mut slots = self.slots.as_slice();
        let mut width = 8u32;
        loop {
            match slots {
                [] => return PathEnd::Empty,
                [(_, Slot::Leaf(l))] => return PathEnd::Leaf(l),
                _ => {}
            }
            if width == 0 {
                // A single slot at full depth that is not a leaf: a child page.
                return match slots {
                    [(_, Slot::Child(_))] => PathEnd::Child,
                    // Two slots at one index cannot happen in a well-formed page.
                    _ => PathEnd::Empty,
                };
            }
            let bit = width - 1;
            let mid = slots.partition_point(|(i, _)| (i >> bit) & 1 == 0);
            let (left, right) = slots.split_at(mid);
            if (slot >> bit) & 1 == 0 {
                siblings.push(range_hash(right, bit).hash());
                slots = left;
            } else {
                siblings.push(range_hash(left, bit).hash());
                slots = right;
            }
            width = bit;
        }
    }
}

/// Where a walk through a page ended.
#[derive(Debug)]
pub(crate) enum PathEnd<'a> {
    /// The subtree holding the slot is empty: the key is absent.
    Empty,
    /// The subtree holding the slot holds one key, this one (which may differ from the key
    /// searched for).
    Leaf(&'a Leaf),
    /// The slot holds a child page: continue there.
    Child,
}

/// The hash of a subtree, with what the compression rule needs to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeHash {
    /// No key.
    Empty,
    /// Exactly one key: its leaf hash.
    Leaf(B256),
    /// Two keys or more.
    Multi(B256),
}

impl NodeHash {
    pub(crate) fn hash(self) -> B256 {
        match self {
            NodeHash::Empty => B256::ZERO,
            NodeHash::Leaf(h) | NodeHash::Multi(h) => h,
        }
    }

    fn combine(left: NodeHash, right: NodeHash) -> NodeHash {
        match (left, right) {
            (NodeHash::Empty, NodeHash::Empty) => NodeHash::Empty,
            (NodeHash::Empty, NodeHash::Leaf(h)) | (NodeHash::Leaf(h), NodeHash::Empty) => {
                NodeHash::Leaf(h)
            }
            (l, r) => NodeHash::Multi(node_hash(&l.hash(), &r.hash())),
        }
    }
}

/// Hash of the aligned slot range of `2^width` slots that `slots` (sorted) lie in.
fn range_hash(slots: &[(u8, Slot)], width: u32) -> NodeHash {
    match slots {
        [] => return NodeHash::Empty,
        [(_, Slot::Leaf(l))] => return NodeHash::Leaf(l.hash),
        [(_, Slot::Child(h))] if width == 0 => return NodeHash::Multi(*h),
        _ => {}
    }
    if width == 0 {
        // Unreachable for well-formed pages (slot indices are unique); hash deterministically.
        return NodeHash::Empty;
    }
    let bit = width - 1;
    let mid = slots.partition_point(|(i, _)| (i >> bit) & 1 == 0);
    let (left, right) = slots.split_at(mid);
    NodeHash::combine(range_hash(left, bit), range_hash(right, bit))
}

/// `keccak256(0x00 ‖ key ‖ value_hash)`.
pub fn leaf_hash(key: &B256, value_hash: &B256) -> B256 {
    let mut buf = [0u8; 65];
    buf[1..33].copy_from_slice(key.as_slice());
    buf[33..].copy_from_slice(value_hash.as_slice());
    keccak256(buf)
}

/// `keccak256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &B256, right: &B256) -> B256 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left.as_slice());
    buf[33..].copy_from_slice(right.as_slice());
    keccak256(buf)
}

/// Bit `i` of `key`, most significant bit of byte 0 first (0 = left).
pub fn key_bit(key: &B256, i: usize) -> u8 {
    (key[i / 8] >> (7 - (i % 8))) & 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(k: u8, v: &[u8]) -> Leaf {
        Leaf::new(B256::repeat_byte(k), Bytes::copy_from_slice(v))
    }

    #[test]
    fn empty_page_hashes_to_zero() {
        assert_eq!(Page::default().hash(), NodeHash::Empty);
    }

    #[test]
    fn single_leaf_is_compressed() {
        let l = leaf(7, b"x");
        let mut p = Page::default();
        p.set(200, Some(Slot::Leaf(l.clone())));
        assert_eq!(p.hash(), NodeHash::Leaf(l.hash));
    }

    #[test]
    fn two_leaves_meet_at_their_first_differing_bit() {
        // Slots 0b0000_0000 and 0b0000_0001 differ only in the last bit: 7 levels of
        // one-sided nodes above their meeting node.
        let a = leaf(1, b"a");
        let b = leaf(2, b"b");
        let mut p = Page::default();
        p.set(0, Some(Slot::Leaf(a.clone())));
        p.set(1, Some(Slot::Leaf(b.clone())));
        let mut h = node_hash(&a.hash, &b.hash);
        for _ in 0..7 {
            h = node_hash(&h, &B256::ZERO);
        }
        assert_eq!(p.hash(), NodeHash::Multi(h));
    }

    #[test]
    fn page_id_children_stop_at_max_depth() {
        let mut id = PageId::ROOT;
        for i in 0..MAX_DEPTH {
            id = id.child(i).expect("below max depth");
        }
        assert_eq!(id.depth(), MAX_DEPTH);
        assert!(id.child(0).is_none());
        assert_eq!(id.prefix().len(), MAX_DEPTH as usize);
    }
}
