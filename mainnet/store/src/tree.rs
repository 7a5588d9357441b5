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

/// A key-value pair in a slot, with its leaf hash (which is also stored on disk, so that
/// loading a page hashes nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub(crate) key: B256,
    pub(crate) value: Bytes,
    pub(crate) hash: B256,
}

impl Leaf {
    pub(crate) fn new(key: B256, value: Bytes) -> Leaf {
        let hash = leaf_hash(&key, &keccak256(&value));
        Leaf { key, value, hash }
    }

    pub(crate) fn value_hash(&self) -> B256 {
        keccak256(&self.value)
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

/// Pages with at least this many slots keep all their binary node hashes in memory, so a
/// proof through them costs no hashing and an update rehashes only the changed paths.
const MEMO_MIN_SLOTS: usize = 64;

/// Every node hash of a page's 8 binary levels, in heap order: node 1 is the page's top,
/// node `i` has children `2i` and `2i + 1`, slot `s` is node `256 + s`.
type Memo = Box<[NodeHash; 512]>;

/// The contents of a page: its occupied slots in slot order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Page {
    pub(crate) slots: Vec<(u8, Slot)>,
    memo: std::sync::OnceLock<Memo>,
    /// Inner memo nodes (1..256) whose hash is stale after `set`; `seal` recomputes them.
    dirty: [u64; 4],
}

impl PartialEq for Page {
    fn eq(&self, other: &Page) -> bool {
        self.slots == other.slots
    }
}

impl Eq for Page {}

impl Page {
    pub(crate) fn get(&self, slot: u8) -> Option<&Slot> {
        self.slots.binary_search_by_key(&slot, |(i, _)| *i).ok().map(|i| &self.slots[i].1)
    }

    pub(crate) fn set(&mut self, slot: u8, value: Option<Slot>) {
        let node = match &value {
            None => NodeHash::Empty,
            Some(Slot::Leaf(l)) => NodeHash::Leaf(l.hash),
            Some(Slot::Child(h)) => NodeHash::Multi(*h),
        };
        match (self.slots.binary_search_by_key(&slot, |(i, _)| *i), value) {
            (Ok(i), Some(v)) => self.slots[i].1 = v,
            (Ok(i), None) => {
                self.slots.remove(i);
            }
            (Err(i), Some(v)) => self.slots.insert(i, (slot, v)),
            (Err(_), None) => {}
        }
        if let Some(memo) = self.memo.get_mut() {
            let mut i = 256 + slot as usize;
            memo[i] = node;
            while i > 1 {
                i /= 2;
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                if self.dirty[word] & bit != 0 {
                    break;
                }
                self.dirty[word] |= bit;
            }
        }
    }

    /// Recomputes the memo nodes that `set` made stale (children before parents), so that
    /// changing k slots of a dense page costs about k·8 hashes minus the shared paths.
    pub(crate) fn seal(&mut self) {
        if self.dirty == [0; 4] {
            return;
        }
        if let Some(memo) = self.memo.get_mut() {
            for i in (1..256).rev() {
                if self.dirty[i / 64] & (1u64 << (i % 64)) != 0 {
                    memo[i] = NodeHash::combine(memo[2 * i], memo[2 * i + 1]);
                }
            }
        }
        self.dirty = [0; 4];
    }

    /// Whether the page is dense enough to keep its node hashes (and stay cached by the
    /// writer).
    pub(crate) fn is_dense(&self) -> bool {
        self.slots.len() >= MEMO_MIN_SLOTS
    }

    /// The node hashes, computed on first use for dense pages; `None` for sparse ones.
    fn memo(&self) -> Option<&Memo> {
        if self.dirty != [0; 4] || (self.slots.len() < MEMO_MIN_SLOTS && self.memo.get().is_none())
        {
            // Unsealed changes (callers seal before hashing; this keeps it right anyway).
            return None;
        }
        Some(self.memo.get_or_init(|| {
            let mut m: Memo = Box::new([NodeHash::Empty; 512]);
            for (i, s) in &self.slots {
                m[256 + *i as usize] = match s {
                    Slot::Leaf(l) => NodeHash::Leaf(l.hash),
                    Slot::Child(h) => NodeHash::Multi(*h),
                };
            }
            for i in (1..256).rev() {
                m[i] = NodeHash::combine(m[2 * i], m[2 * i + 1]);
            }
            m
        }))
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

    /// Approximate bytes of memory the page holds (for the cache budget), counting the
    /// node hashes a dense page keeps.
    pub(crate) fn mem_size(&self) -> usize {
        let memo = if self.slots.len() >= MEMO_MIN_SLOTS {
            std::mem::size_of::<[NodeHash; 512]>()
        } else {
            0
        };
        memo + 64
            + self
                .slots
                .iter()
                .map(|(_, s)| match s {
                    Slot::Leaf(l) => 128 + l.value.len(),
                    Slot::Child(_) => 48,
                })
                .sum::<usize>()
    }

    /// The hash of the page's subtree.
    pub(crate) fn hash(&self) -> NodeHash {
        match self.memo() {
            Some(m) => m[1],
            None => range_hash(&self.slots, 8),
        }
    }

    /// Walks from the page's top towards `slot`, pushing the sibling hash of every binary
    /// level passed (top-down) onto `siblings`. Stops early where the subtree holding `slot`
    /// is empty or a single leaf; returns where the walk ended.
    pub(crate) fn path<'a>(&'a self, slot: u8, siblings: &mut Vec<B256>) -> PathEnd<'a> {
        if let Some(m) = self.memo() {
            let mut i = 1usize;
            let mut width = 8u32;
            loop {
                match m[i] {
                    NodeHash::Empty => return PathEnd::Empty,
                    NodeHash::Leaf(_) => {
                        // The one leaf below node i: its slot range starts here.
                        let depth = 8 - width;
                        let lo = ((i - (1 << depth)) << width) as u16;
                        let hi = lo + (1u16 << width);
                        return self
                            .slots
                            .iter()
                            .find_map(|(s, sl)| match sl {
                                Slot::Leaf(l) if (lo..hi).contains(&(*s as u16)) => {
                                    Some(PathEnd::Leaf(l))
                                }
                                _ => None,
                            })
                            .unwrap_or(PathEnd::Empty);
                    }
                    NodeHash::Multi(_) => {}
                }
                if width == 0 {
                    return PathEnd::Child;
                }
                let child = 2 * i + ((slot >> (width - 1)) & 1) as usize;
                siblings.push(m[child ^ 1].hash());
                i = child;
                width -= 1;
            }
        }
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

    pub(crate) fn combine(left: NodeHash, right: NodeHash) -> NodeHash {
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
    fn incremental_memo_matches_a_fresh_hash() {
        // A dense page (memo kept) changed slot by slot, sealed at random points, hashes
        // like a page built from scratch with the same slots.
        let mut p = Page::default();
        for i in 0..200u8 {
            p.set(i, Some(Slot::Child(B256::repeat_byte(i))));
        }
        let _ = p.hash();
        let mut x = 7u32;
        for round in 0..300u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let slot = (x >> 16) as u8;
            let v = match x % 3 {
                0 => None,
                1 => Some(Slot::Leaf(leaf(slot, &round.to_le_bytes()))),
                _ => Some(Slot::Child(B256::repeat_byte(slot ^ 0x5a))),
            };
            p.set(slot, v);
            if round % 7 == 0 {
                p.seal();
                let fresh = range_hash(&p.slots, 8);
                assert_eq!(p.hash(), fresh, "round {round}");
            }
        }
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
