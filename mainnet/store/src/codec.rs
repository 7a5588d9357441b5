//! The byte format of log records (see `docs/store.md`, "On-disk format").
//!
//! Every record is framed as `len: u32 LE ‖ crc: u32 LE ‖ body[len]`, where `crc` is the
//! CRC-32 (IEEE) of `len ‖ body`. All integers are little-endian.

use farol_primitives::{Bytes, B256};

use crate::tree::{Leaf, PageId, Slot, MAX_DEPTH};
use crate::MAX_VALUE_LEN;

/// Bytes of a record's frame header.
pub(crate) const FRAME: usize = 8;
/// The largest page record body: its header (kind, version, page kind, depth, the prefix,
/// the entry count) and 256 leaf entries (slot, tag, key, hash, length, value) of maximal
/// values.
pub(crate) const MAX_PAGE_BODY: usize =
    1 + 8 + 1 + 1 + MAX_DEPTH as usize + 2 + 256 * (1 + 1 + 32 + 32 + 4 + MAX_VALUE_LEN);

/// Keys one commit record may list as deleted (what the writer refuses past, far above what
/// a block's gas can delete).
pub(crate) const MAX_DELETED: usize = ((64 << 20) - COMMIT_SEALED_FIXED) / 32;

/// The largest record body accepted: a full page or a commit of [`MAX_DELETED`] keys,
/// whichever is larger. Before stop 27 this was below a full page's size, so such a page,
/// once written, failed the next read and the store's reopening.
pub(crate) const MAX_BODY: usize = if MAX_PAGE_BODY > COMMIT_SEALED_FIXED + 32 * MAX_DELETED {
    MAX_PAGE_BODY
} else {
    COMMIT_SEALED_FIXED + 32 * MAX_DELETED
};

pub(crate) const K_PAGE: u8 = 1;
/// A commit record as written before stop 28 (no intact-before offset); still read.
pub(crate) const K_COMMIT_V1: u8 = 2;
pub(crate) const K_PRUNE: u8 = 3;
/// A page record copied by garbage collection; replay skips it (see `gc.rs`).
pub(crate) const K_RELOCATED: u8 = 4;
/// A commit record that says where the interrupted sync it may have been part of began
/// (written from stop 28 to stop 37; still read).
pub(crate) const K_COMMIT: u8 = 5;
/// The same with the store's seal (since stop 38): recovery's search for a commit after a
/// torn record takes only commits with its store's seal, which no value written into the
/// log can know.
pub(crate) const K_COMMIT_SEALED: u8 = 6;

/// How a page record relates to the page's earlier records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// All occupied slots.
    Full,
    /// Only the slots changed since the page's previous record.
    Delta,
    /// The page stopped existing at this version.
    Gone,
}

impl PageKind {
    fn byte(self) -> u8 {
        match self {
            PageKind::Full => 0,
            PageKind::Delta => 1,
            PageKind::Gone => 2,
        }
    }
    pub(crate) fn from_byte(b: u8) -> Option<PageKind> {
        match b {
            0 => Some(PageKind::Full),
            1 => Some(PageKind::Delta),
            2 => Some(PageKind::Gone),
            _ => None,
        }
    }
}

const TAG_REMOVED: u8 = 0;
const TAG_LEAF: u8 = 1;
const TAG_CHILD: u8 = 2;

/// Frames `body` (written by `f`) into `out`; returns the record's total length.
pub(crate) fn frame(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME]);
    f(out);
    let len = (out.len() - start - FRAME) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = checksum(&out[start..start + 4], &out[start + FRAME..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (out.len() - start) as u32
}

pub(crate) fn checksum(len: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(body);
    h.finalize()
}

/// Parses a frame header: the body length, or why it is not a record.
pub(crate) fn frame_len(header: &[u8; FRAME]) -> Result<usize, &'static str> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 {
        return Err("zero-length record");
    }
    if len > MAX_BODY {
        return Err("record length out of range");
    }
    Ok(len)
}

/// Checks a whole record (header and body) and returns its body.
pub(crate) fn check_record(rec: &[u8]) -> Result<&[u8], &'static str> {
    if rec.len() < FRAME {
        return Err("truncated record header");
    }
    let mut header = [0u8; FRAME];
    header.copy_from_slice(&rec[..FRAME]);
    let len = frame_len(&header)?;
    if rec.len() != FRAME + len {
        return Err("record length mismatch");
    }
    let crc = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
    if checksum(&rec[..4], &rec[FRAME..]) != crc {
        return Err("checksum mismatch");
    }
    Ok(&rec[FRAME..])
}

/// Writes a page record body: header then the given slot entries (`None` = removed).
pub(crate) fn encode_page<'a>(
    out: &mut Vec<u8>,
    kind_byte: u8,
    version: u64,
    id: &PageId,
    kind: PageKind,
    entries: impl ExactSizeIterator<Item = (u8, Option<&'a Slot>)>,
) {
    out.push(kind_byte);
    out.extend_from_slice(&version.to_le_bytes());
    out.push(kind.byte());
    out.push(id.depth());
    out.extend_from_slice(id.prefix());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (slot, entry) in entries {
        out.push(slot);
        match entry {
            None => out.push(TAG_REMOVED),
            Some(Slot::Leaf(l)) => {
                out.push(TAG_LEAF);
                out.extend_from_slice(l.key.as_slice());
                out.extend_from_slice(l.hash.as_slice());
                out.extend_from_slice(&(l.value.len() as u32).to_le_bytes());
                out.extend_from_slice(&l.value);
            }
            Some(Slot::Child(h)) => {
                out.push(TAG_CHILD);
                out.extend_from_slice(h.as_slice());
            }
        }
    }
}

/// Bytes a page entry takes in a record.
pub(crate) fn entry_len(entry: Option<&Slot>) -> usize {
    match entry {
        None => 2,
        Some(Slot::Leaf(l)) => 2 + 32 + 32 + 4 + l.value.len(),
        Some(Slot::Child(_)) => 2 + 32,
    }
}

/// A decoded page record header, with the entries still in bytes.
#[derive(Debug)]
pub(crate) struct PageHeader<'a> {
    pub(crate) version: u64,
    pub(crate) kind: PageKind,
    pub(crate) id: PageId,
    count: u16,
    entries: &'a [u8],
}

/// A cursor over little-endian fields, failing with a reason instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("record body ends early");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn b256(&mut self) -> Result<B256, &'static str> {
        Ok(B256::from_slice(self.take(32)?))
    }
}

/// Parses a page record body (kind `K_PAGE` or `K_RELOCATED`).
pub(crate) fn decode_page_header(body: &[u8]) -> Result<PageHeader<'_>, &'static str> {
    let mut r = Reader(body);
    let k = r.u8()?;
    if k != K_PAGE && k != K_RELOCATED {
        return Err("not a page record");
    }
    let version = r.u64()?;
    let kind = PageKind::from_byte(r.u8()?).ok_or("unknown page kind")?;
    let depth = r.u8()?;
    if depth > MAX_DEPTH {
        return Err("page depth out of range");
    }
    let id = PageId::new(r.take(depth as usize)?).ok_or("page depth out of range")?;
    let count = r.u16()?;
    if count > 256 {
        return Err("more than 256 entries");
    }
    Ok(PageHeader { version, kind, id, count, entries: r.0 })
}

/// One entry of a page record, borrowing from the record.
pub(crate) enum RawEntry<'a> {
    Removed,
    Leaf { key: B256, hash: B256, value: &'a [u8] },
    Child(B256),
}

impl<'a> PageHeader<'a> {
    /// Visits every entry in order; fails on malformed bytes.
    pub(crate) fn for_each(
        &self,
        mut f: impl FnMut(u8, RawEntry<'a>) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        let mut r = Reader(self.entries);
        let mut last: Option<u8> = None;
        for _ in 0..self.count {
            let slot = r.u8()?;
            if last.is_some_and(|l| l >= slot) {
                return Err("entries out of order");
            }
            last = Some(slot);
            let e = match r.u8()? {
                TAG_REMOVED => RawEntry::Removed,
                TAG_LEAF => {
                    let key = r.b256()?;
                    let hash = r.b256()?;
                    let len = r.u32()? as usize;
                    if len > MAX_VALUE_LEN {
                        return Err("value longer than the limit");
                    }
                    let value = r.take(len)?;
                    if key[self.id.depth() as usize] != slot || !key.starts_with(self.id.prefix()) {
                        return Err("leaf key does not belong to its slot");
                    }
                    RawEntry::Leaf { key, hash, value }
                }
                TAG_CHILD => RawEntry::Child(r.b256()?),
                _ => return Err("unknown entry tag"),
            };
            f(slot, e)?;
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the entries");
        }
        Ok(())
    }

    /// The entries as slot changes (`None` = slot removed). Values are slices of `backing`
    /// (the record these entries were parsed from) when it is given: no copy, one allocation
    /// per record instead of one per value.
    pub(crate) fn decode_entries(
        &self,
        backing: Option<&Bytes>,
    ) -> Result<Vec<(u8, Option<Slot>)>, &'static str> {
        let mut out = Vec::with_capacity(self.count as usize);
        self.for_each(|slot, e| {
            out.push((
                slot,
                match e {
                    RawEntry::Removed => None,
                    RawEntry::Leaf { key, hash, value } => {
                        let value = match backing {
                            Some(b) => b.slice_ref(value),
                            None => Bytes::copy_from_slice(value),
                        };
                        Some(Slot::Leaf(Leaf { key, hash, value }))
                    }
                    RawEntry::Child(h) => Some(Slot::Child(h)),
                },
            ));
            Ok(())
        })?;
        Ok(out)
    }
}

/// Bytes of a [`K_COMMIT`] body before its deleted keys (a [`K_COMMIT_V1`] body has 16
/// fewer: no intact-before offset, no prune point).
pub(crate) const COMMIT_FIXED: usize = 1 + 8 + 32 + 8 + 8 + 4;

/// Bytes of a [`K_COMMIT_SEALED`] body before its deleted keys: the seal's 8 more.
pub(crate) const COMMIT_SEALED_FIXED: usize = COMMIT_FIXED + 8;

/// Writes a commit record body. `intact_before` is the offset in the segment below which
/// every byte was already durable when this record was written (the end of the last sync):
/// damage at or after it, before this record, is what a power loss during this record's own
/// sync can leave (docs/store.md §7). `prune_below` (0: none) prunes the versions below it
/// once this one is committed: in the commit record, so that the commit is always the last
/// record of its write. `seal` is the store's (see [`K_COMMIT_SEALED`]).
pub(crate) fn encode_commit(
    out: &mut Vec<u8>,
    version: u64,
    root: &B256,
    intact_before: u64,
    prune_below: u64,
    seal: u64,
    deleted: &[B256],
) {
    out.push(K_COMMIT_SEALED);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(root.as_slice());
    out.extend_from_slice(&intact_before.to_le_bytes());
    out.extend_from_slice(&prune_below.to_le_bytes());
    out.extend_from_slice(&seal.to_le_bytes());
    out.extend_from_slice(&(deleted.len() as u32).to_le_bytes());
    for k in deleted {
        out.extend_from_slice(k.as_slice());
    }
}

/// A decoded commit record.
pub(crate) struct Commit {
    pub(crate) version: u64,
    pub(crate) root: B256,
    /// `None` for a [`K_COMMIT_V1`] record.
    pub(crate) intact_before: Option<u64>,
    /// Versions below this are pruned with this commit (0: none; a [`K_COMMIT_V1`] record
    /// has a prune record after it instead).
    pub(crate) prune_below: u64,
    /// The store's seal (`None` before [`K_COMMIT_SEALED`]).
    pub(crate) seal: Option<u64>,
    pub(crate) deleted: Vec<B256>,
}

/// Whether `body` has the shape of a commit body of either kind (kind byte, and a length
/// that is the fixed part plus whole keys): a cheap test before the checksum.
pub(crate) fn looks_like_commit(body_kind: u8, len: usize) -> bool {
    let fixed = match body_kind {
        K_COMMIT_SEALED => COMMIT_SEALED_FIXED,
        K_COMMIT => COMMIT_FIXED,
        K_COMMIT_V1 => COMMIT_FIXED - 16,
        _ => return false,
    };
    len >= fixed && (len - fixed).is_multiple_of(32)
}

/// Whether `body` (of a length [`looks_like_commit`] took) is a [`K_COMMIT_SEALED`] body
/// carrying `seal` whose deleted-key count matches its length: compared before any checksum.
pub(crate) fn carries_seal(body: &[u8], seal: u64) -> bool {
    const SEAL_AT: usize = COMMIT_FIXED - 4;
    body.first() == Some(&K_COMMIT_SEALED)
        && body.get(SEAL_AT..SEAL_AT + 8) == Some(&seal.to_le_bytes()[..])
        && body.get(SEAL_AT + 8..COMMIT_SEALED_FIXED).is_some_and(|n| {
            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
            n.checked_mul(32) == Some(body.len() - COMMIT_SEALED_FIXED)
        })
}

pub(crate) fn decode_commit(body: &[u8]) -> Result<Commit, &'static str> {
    let mut r = Reader(body);
    let kind = r.u8()?;
    if kind != K_COMMIT_SEALED && kind != K_COMMIT && kind != K_COMMIT_V1 {
        return Err("not a commit record");
    }
    let version = r.u64()?;
    let root = r.b256()?;
    let (intact_before, prune_below) =
        if kind == K_COMMIT_V1 { (None, 0) } else { (Some(r.u64()?), r.u64()?) };
    let seal = if kind == K_COMMIT_SEALED { Some(r.u64()?) } else { None };
    let n = r.u32()? as usize;
    if r.0.len() != n.checked_mul(32).ok_or("deleted count out of range")? {
        return Err("deleted-key bytes do not match the count");
    }
    let deleted = r.0.chunks_exact(32).map(B256::from_slice).collect();
    Ok(Commit { version, root, intact_before, prune_below, seal, deleted })
}

pub(crate) fn encode_prune(out: &mut Vec<u8>, below: u64) {
    out.push(K_PRUNE);
    out.extend_from_slice(&below.to_le_bytes());
}

pub(crate) fn decode_prune(body: &[u8]) -> Result<u64, &'static str> {
    let mut r = Reader(body);
    if r.u8()? != K_PRUNE {
        return Err("not a prune record");
    }
    let below = r.u64()?;
    if !r.0.is_empty() {
        return Err("trailing bytes in prune record");
    }
    Ok(below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bytes never panic a decoder: they decode or give a reason.
        #[test]
        fn decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..400), kind in 1u8..6) {
            let mut b = body;
            if let Some(first) = b.first_mut() {
                *first = kind;
            }
            if let Ok(h) = decode_page_header(&b) {
                let _ = h.decode_entries(None);
            }
            let _ = decode_commit(&b);
            let _ = decode_prune(&b);
            let _ = check_record(&b);
            let _ = crate::proof::Proof::decode(&b);
        }
    }

    #[test]
    fn both_commit_kinds_decode() {
        let root = B256::repeat_byte(3);
        let deleted = vec![B256::repeat_byte(4), B256::repeat_byte(5)];
        let mut current = Vec::new();
        encode_commit(&mut current, 9, &root, 1234, 5, 77, &deleted);
        assert!(looks_like_commit(current[0], current.len()));
        let c = decode_commit(&current).expect("current kind");
        assert_eq!((c.version, c.root, c.intact_before, c.prune_below), (9, root, Some(1234), 5));
        assert_eq!((c.seal, c.deleted.clone()), (Some(77), deleted.clone()));
        // The seal is found where recovery's search compares it before the checksum.
        for keys in 0..4 {
            let mut body = Vec::new();
            encode_commit(&mut body, 9, &root, 1234, 5, 77, &deleted[..keys.min(2)]);
            assert!(carries_seal(&body, 77));
            assert!(!carries_seal(&body, 78));
        }
        let mut miscounted = current.clone();
        miscounted[COMMIT_SEALED_FIXED - 4] ^= 1;
        assert!(!carries_seal(&miscounted, 77), "the count must match the length");
        // A body as written from stop 28 to 37: the same without the seal.
        let mut unsealed = current.clone();
        unsealed[0] = K_COMMIT;
        unsealed.drain(COMMIT_FIXED - 4..COMMIT_FIXED + 4);
        assert!(looks_like_commit(unsealed[0], unsealed.len()));
        let c = decode_commit(&unsealed).expect("unsealed kind");
        assert_eq!((c.version, c.intact_before, c.prune_below, c.seal), (9, Some(1234), 5, None));
        assert!(!carries_seal(&unsealed, 77));
        assert_eq!(c.deleted, deleted);
        // A body as written before stop 28: the same without the offset.
        let mut v1 = vec![K_COMMIT_V1];
        v1.extend_from_slice(&9u64.to_le_bytes());
        v1.extend_from_slice(root.as_slice());
        v1.extend_from_slice(&2u32.to_le_bytes());
        deleted.iter().for_each(|k| v1.extend_from_slice(k.as_slice()));
        assert!(looks_like_commit(v1[0], v1.len()));
        let c = decode_commit(&v1).expect("first kind");
        assert_eq!((c.version, c.root, c.intact_before, c.prune_below), (9, root, None, 0));
        assert_eq!(c.deleted, deleted);
        assert!(!looks_like_commit(K_COMMIT, v1.len()) && !looks_like_commit(K_PAGE, v1.len()));
    }

    #[test]
    fn page_record_round_trips_and_detects_flips() {
        let id = PageId::new(&[0xab]).expect("valid");
        let mut key = B256::repeat_byte(0xab);
        key[1] = 7;
        let leaf = Slot::Leaf(Leaf::new(key, Bytes::from_static(b"hello")));
        let child = Slot::Child(B256::repeat_byte(9));
        let mut buf = Vec::new();
        let len = frame(&mut buf, |out| {
            let entries = vec![(3u8, None), (7u8, Some(&leaf)), (9u8, Some(&child))];
            encode_page(out, K_PAGE, 42, &id, PageKind::Delta, entries.into_iter())
        });
        assert_eq!(len as usize, buf.len());
        let body = check_record(&buf).expect("valid record");
        let h = decode_page_header(body).expect("valid header");
        assert_eq!((h.version, h.kind, h.id), (42, PageKind::Delta, id));
        let entries = h.decode_entries(None).expect("valid entries");
        assert_eq!(entries, vec![(3, None), (7, Some(leaf.clone())), (9, Some(child.clone()))]);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(check_record(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }
}
