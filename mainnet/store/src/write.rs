//! The write side: `apply` updates the pages a batch touches (on several threads), hashes
//! them, appends their full or delta records and a commit record to the log, syncs, and
//! only then publishes the new version to readers.

use std::sync::Arc;

use farol_primitives::{Bytes, Version, B256};
use rayon::prelude::*;

use crate::codec::{self, PageKind, K_PAGE};
use crate::error::{corrupt, Result, StoreError};
use crate::log::{Loc, Segment};
use crate::store::{Caching, Entry, Inner, Store, Writer};
use crate::tree::{Leaf, Page, PageId, Slot};
use crate::{FsyncPolicy, MAX_VALUE_LEN};

type Change = (B256, Option<Bytes>);

/// Batches at least this large are split across threads at a page.
const PARALLEL_MIN: usize = 64;

/// A page after the batch: its new contents, which slots changed, and the changed pages
/// below it.
struct Updated {
    id: PageId,
    /// The page existed at the latest version (else it is new).
    existed: bool,
    new: Page,
    /// Slots whose content differs from the latest version, in slot order.
    changed: Vec<u8>,
    children: Vec<Updated>,
    /// The page no longer exists (its keys were deleted or pulled up into the parent).
    gone: bool,
}

/// What became of one slot.
struct SlotOutcome {
    slot: Option<Slot>,
    child: Option<Updated>,
    /// Keys that existed and were deleted.
    deleted: Vec<B256>,
}

impl Store {
    /// Applies `changes` (`Some(value)` sets a key, `None` deletes it; when a key appears
    /// more than once the last change wins) as `version`, which must be above the latest
    /// version, and returns the new state root.
    ///
    /// The version is durable when this returns: its records and commit record are in the
    /// log, synced when [`FsyncPolicy::Always`]. Readers see it only then.
    pub fn apply(
        &self,
        version: Version,
        changes: impl IntoIterator<Item = (B256, Option<Bytes>)>,
    ) -> Result<B256> {
        let (root, _) = self.apply_if(version, changes, |_| true)?;
        Ok(root)
    }

    /// [`Store::apply`], written only if `accept` takes the new state root: a version whose
    /// root is not the one expected (a block from peers that executed differently here) is
    /// never written, so nothing has to be taken back. Returns the root and whether the
    /// version was written; `accept` runs once, with the writer held, before any write.
    pub fn apply_if(
        &self,
        version: Version,
        changes: impl IntoIterator<Item = (B256, Option<Bytes>)>,
        accept: impl FnOnce(&B256) -> bool,
    ) -> Result<(B256, bool)> {
        let changes = normalize(changes)?;
        let inner = &self.inner;
        let mut w = inner.writer.lock();
        if w.poisoned {
            return Err(StoreError::Poisoned);
        }
        let latest = inner.state.read().latest;
        if let Some(latest) = latest {
            if version <= latest {
                return Err(StoreError::VersionNotIncreasing { version, latest });
            }
        }
        let old_root = match latest {
            Some(l) => self.page_at(PageId::ROOT, l, Caching::Dense)?,
            None => None,
        };
        let at = latest.unwrap_or(0);
        let (root_upd, deleted) = self.update(PageId::ROOT, old_root, &changes, at)?;
        let root = root_upd.new.hash().hash();
        if !accept(&root) {
            // As `root_with`: the update worked on pages nobody else holds, so nothing
            // readers see has changed.
            return Ok((root, false));
        }

        // Encode every changed page, then the commit (and a prune when retention says so).
        let seg_id = w.active.id;
        let base = w.end;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut out = Emitted::default();
        {
            let st = inner.state.read();
            emit(
                root_upd,
                version,
                &st,
                inner.opts.max_delta_chain,
                &mut buf,
                &mut out,
                seg_id,
                base,
            )?;
        }
        if deleted.len() > codec::MAX_DELETED {
            // Refused before anything is written: a commit record the reader would refuse
            // must never reach the log.
            w.buf = buf;
            return Err(StoreError::InvalidOption {
                name: "changes",
                reason: format!(
                    "{} keys deleted in one version, at most {}",
                    deleted.len(),
                    codec::MAX_DELETED
                ),
            });
        }
        let intact_before = match inner.opts.fsync {
            FsyncPolicy::Always => w.durable_end,
            // Nothing is synced: only this write's own records may be read as torn.
            FsyncPolicy::Never => base,
        };
        // Below the `r` newest versions, this one included: versions need not be
        // consecutive (until stop 40 this counted version numbers, so versions 10, 20 and 30
        // kept 3 left only 30).
        let prune_below = inner.opts.retain_versions.and_then(|r| {
            let st = inner.state.read();
            let older = usize::try_from(r - 1).unwrap_or(usize::MAX);
            let below = match older {
                0 => Some(version),
                n => st.roots.keys().rev().nth(n - 1).copied(),
            };
            let keep = inner.keep_from.load(std::sync::atomic::Ordering::Acquire);
            let below = match keep.checked_sub(1) {
                None => below,
                Some(keep) => below.map(|b| b.min(keep)),
            };
            below.filter(|&b| b > st.oldest)
        });
        codec::frame(&mut buf, |b| {
            let prune = prune_below.unwrap_or(0);
            codec::encode_commit(b, version, &root, intact_before, prune, w.seal, &deleted)
        });
        let res = write_durably(inner, &mut w, &buf);
        w.buf = buf;
        res?;

        // Publish.
        {
            let mut st = inner.state.write();
            for (id, e) in out.entries {
                st.push_entry(id, e);
            }
            for k in &deleted {
                st.keys.remove(k);
            }
            for (k, loc) in out.keys {
                st.keys.insert(k, loc);
            }
            st.roots.insert(version, root);
            st.latest = Some(version);
            if let Some(below) = prune_below {
                st.prune(below);
            }
        }
        for (id, page) in out.pages {
            if Caching::Dense.keeps(&page) {
                inner.cache.insert((id, version), page);
            }
        }
        let checkpoint = after_write(self, &mut w);
        drop(w);
        if let Some(img) = checkpoint {
            if self.persist_later(img).is_err() {
                inner.io.housekeeping_failed();
            }
        }
        if prune_below.is_some() {
            self.signal_gc();
        }
        Ok((root, true))
    }

    /// The state root that applying `changes` on top of `version` would give (as
    /// [`Store::apply`] takes them), without writing anything: what a block that was never
    /// stored would leave (simulated blocks). Fails with [`StoreError::Pruned`] when
    /// `version` is no longer kept.
    pub fn root_with(
        &self,
        version: Version,
        changes: impl IntoIterator<Item = (B256, Option<Bytes>)>,
    ) -> Result<B256> {
        let changes = normalize(changes)?;
        self.inner.state.read().check_version(version)?;
        let old_root = self.page_at(PageId::ROOT, version, Caching::Dense)?;
        let (root, _) = self.update(PageId::ROOT, old_root, &changes, version)?;
        Ok(root.new.hash().hash())
    }

    /// Applies `changes` to page `id` (whose contents at the latest version are `old`).
    fn update(
        &self,
        id: PageId,
        old: Option<Arc<Page>>,
        changes: &[Change],
        at: Version,
    ) -> Result<(Updated, Vec<B256>)> {
        let depth = id.depth() as usize;
        let mut groups: Vec<(u8, &[Change])> = Vec::new();
        let mut rest = changes;
        while let Some(first) = rest.first() {
            let b = first.0[depth];
            let n = rest.partition_point(|c| c.0[depth] == b);
            groups.push((b, &rest[..n]));
            rest = &rest[n..];
        }
        let existed = old.is_some();
        // Work on the latest version in place when nobody else holds it (pages the writer
        // read from disk); a cached page is copied.
        let mut new = match old {
            Some(arc) => Arc::try_unwrap(arc).unwrap_or_else(|shared| (*shared).clone()),
            None => Page::default(),
        };
        let oldp = Some(&new);
        let outcomes: Vec<Result<(u8, SlotOutcome)>> = if changes.len() >= PARALLEL_MIN
            && groups.len() > 1
        {
            groups
                .par_iter()
                .map(|(b, g)| Ok((*b, self.update_slot(id, oldp, *b, g, at)?)))
                .collect()
        } else {
            groups.iter().map(|(b, g)| Ok((*b, self.update_slot(id, oldp, *b, g, at)?))).collect()
        };
        let mut children = Vec::new();
        let mut deleted = Vec::new();
        let mut changed = Vec::new();
        for o in outcomes {
            let (b, o) = o?;
            if new.get(b) != o.slot.as_ref() {
                changed.push(b);
                new.set(b, o.slot);
            }
            children.extend(o.child);
            deleted.extend(o.deleted);
        }
        new.seal();
        Ok((Updated { id, existed, new, changed, children, gone: false }, deleted))
    }

    fn update_slot(
        &self,
        id: PageId,
        old: Option<&Page>,
        b: u8,
        group: &[Change],
        at: Version,
    ) -> Result<SlotOutcome> {
        match old.and_then(|p| p.get(b)) {
            None => {
                let sets: Vec<Change> = group.iter().filter(|c| c.1.is_some()).cloned().collect();
                self.build(id.child(b), sets, Vec::new(), at)
            }
            Some(Slot::Leaf(l)) => {
                if let [(k, change)] = group {
                    if *k == l.key {
                        return Ok(match change {
                            Some(v) => SlotOutcome {
                                slot: Some(Slot::Leaf(Leaf::new(*k, v.clone()))),
                                child: None,
                                deleted: Vec::new(),
                            },
                            None => SlotOutcome { slot: None, child: None, deleted: vec![*k] },
                        });
                    }
                }
                // The slot's one key meets others: rebuild the subtree from scratch.
                let mut sets: Vec<Change> =
                    group.iter().filter(|c| c.1.is_some()).cloned().collect();
                let mut deleted = Vec::new();
                match group.binary_search_by(|c| c.0.cmp(&l.key)) {
                    Ok(i) if group[i].1.is_none() => deleted.push(l.key),
                    Ok(_) => {}
                    Err(_) => {
                        let pos = sets.partition_point(|c| c.0 < l.key);
                        sets.insert(pos, (l.key, Some(l.value.clone())));
                    }
                }
                self.build(id.child(b), sets, deleted, at)
            }
            Some(Slot::Child(_)) => {
                let cid = id
                    .child(b)
                    .ok_or_else(|| self.bad_tree("a child slot at the deepest level"))?;
                let child_old = self
                    .page_at(cid, at, Caching::Dense)?
                    .ok_or_else(|| self.bad_tree("a child slot points to a missing page"))?;
                let (mut u, deleted) = self.update(cid, Some(child_old), group, at)?;
                let slot = match u.new.key_count_class() {
                    0 => {
                        u.gone = true;
                        None
                    }
                    1 => {
                        u.gone = true;
                        u.new.single_leaf().cloned().map(Slot::Leaf)
                    }
                    _ => Some(Slot::Child(u.new.hash().hash())),
                };
                Ok(SlotOutcome { slot, child: Some(u), deleted })
            }
        }
    }

    /// The slot holding exactly `sets` (sorted, distinct keys), built from nothing.
    fn build(
        &self,
        child_id: Option<PageId>,
        mut sets: Vec<Change>,
        mut deleted: Vec<B256>,
        at: Version,
    ) -> Result<SlotOutcome> {
        match sets.len() {
            0 => Ok(SlotOutcome { slot: None, child: None, deleted }),
            1 => {
                let (k, v) = sets.pop().unwrap_or_default();
                let leaf = Leaf::new(k, v.unwrap_or_default());
                Ok(SlotOutcome { slot: Some(Slot::Leaf(leaf)), child: None, deleted })
            }
            _ => {
                // Distinct keys always part before the last byte, so a child page exists.
                let cid = child_id.ok_or_else(|| self.bad_tree("two keys share all 32 bytes"))?;
                let (u, more) = self.update(cid, None, &sets, at)?;
                deleted.extend(more);
                let slot = Some(Slot::Child(u.new.hash().hash()));
                Ok(SlotOutcome { slot, child: Some(u), deleted })
            }
        }
    }

    fn bad_tree(&self, reason: &str) -> StoreError {
        corrupt(&self.inner.dir, 0, format!("tree invariant broken: {reason}"))
    }
}

/// `changes` checked (no value over [`MAX_VALUE_LEN`]) and sorted by key, with only the last
/// change of each key.
fn normalize(changes: impl IntoIterator<Item = Change>) -> Result<Vec<Change>> {
    let mut changes: Vec<Change> = changes.into_iter().collect();
    for (key, v) in &changes {
        if let Some(v) = v {
            if v.len() > MAX_VALUE_LEN {
                return Err(StoreError::ValueTooLarge {
                    key: *key,
                    len: v.len(),
                    max: MAX_VALUE_LEN,
                });
            }
        }
    }
    changes.reverse();
    changes.sort_by_key(|c| c.0);
    changes.dedup_by(|later, earlier| later.0 == earlier.0);
    Ok(changes)
}

/// What encoding a version produced, to publish once it is durable.
#[derive(Default)]
struct Emitted {
    entries: Vec<(PageId, Entry)>,
    keys: Vec<(B256, Loc)>,
    pages: Vec<(PageId, Arc<Page>)>,
}

#[allow(clippy::too_many_arguments)]
fn emit(
    u: Updated,
    version: Version,
    st: &crate::store::State,
    max_chain: u32,
    buf: &mut Vec<u8>,
    out: &mut Emitted,
    seg: u32,
    base: u64,
) -> Result<()> {
    let Updated { id, existed, new, changed, children, gone } = u;
    for c in children {
        emit(c, version, st, max_chain, buf, out, seg, base)?;
    }
    let prior = st.pages.get(&id).and_then(|v| v.last()).filter(|e| e.kind != PageKind::Gone);
    let off = base + buf.len() as u64;
    let off32 = u32::try_from(off).map_err(|_| StoreError::InvalidOption {
        name: "segment_bytes",
        reason: "one version's records do not fit in a segment".into(),
    })?;
    let mut record =
        |kind: PageKind, entries: &mut dyn ExactSizeIterator<Item = (u8, Option<&Slot>)>| {
            let len =
                codec::frame(buf, |b| codec::encode_page(b, K_PAGE, version, &id, kind, entries));
            let loc = Loc { seg, off: off32, len };
            out.entries.push((id, Entry { version, kind, loc }));
            loc
        };
    if gone {
        if prior.is_some() {
            record(PageKind::Gone, &mut std::iter::empty());
        }
        return Ok(());
    }
    let full = match (existed, prior) {
        (true, Some(_)) => {
            if changed.is_empty() {
                return Ok(());
            }
            let d: Vec<(u8, Option<&Slot>)> = changed.iter().map(|&b| (b, new.get(b))).collect();
            // Deltas since the last full record, and their bytes.
            let list = st.pages.get(&id).map(|v| v.as_slice()).unwrap_or(&[]);
            let mut chain = 0u32;
            let mut chain_bytes = 0usize;
            for e in list.iter().rev() {
                if e.kind != PageKind::Delta {
                    break;
                }
                chain += 1;
                chain_bytes += e.loc.len as usize;
            }
            let delta_len: usize = d.iter().map(|(_, s)| codec::entry_len(*s)).sum();
            let full_len: usize = new.slots.iter().map(|(_, s)| codec::entry_len(Some(s))).sum();
            if chain + 1 > max_chain || chain_bytes + delta_len >= full_len {
                true
            } else {
                let loc = record(PageKind::Delta, &mut d.iter().copied());
                for (_, s) in &d {
                    if let Some(Slot::Leaf(l)) = s {
                        out.keys.push((l.key, loc));
                    }
                }
                false
            }
        }
        _ => true,
    };
    if full {
        let loc = record(PageKind::Full, &mut new.slots.iter().map(|(i, s)| (*i, Some(s))));
        for (_, s) in &new.slots {
            if let Slot::Leaf(l) = s {
                out.keys.push((l.key, loc));
            }
        }
    }
    out.pages.push((id, Arc::new(new)));
    Ok(())
}

/// Appends `buf` at the end of the active segment and syncs per policy. On failure the
/// segment is cut back to where it was; if even that fails, the writer is poisoned.
pub(crate) fn write_durably(inner: &Inner, w: &mut Writer, buf: &[u8]) -> Result<()> {
    let res = w.active.write_at(buf, w.end, &inner.io).and_then(|()| match inner.opts.fsync {
        FsyncPolicy::Always => w.active.sync(&inner.io),
        FsyncPolicy::Never => Ok(()),
    });
    match res {
        Ok(()) => {
            w.end += buf.len() as u64;
            w.since_checkpoint += buf.len() as u64;
            if inner.opts.fsync == FsyncPolicy::Always {
                w.durable_end = w.end;
            }
            Ok(())
        }
        Err(e) => {
            if w.active.truncate(w.end).is_err() {
                w.poisoned = true;
            }
            Err(e)
        }
    }
}

/// Appends a prune record.
pub(crate) fn append_prune(inner: &Inner, w: &mut Writer, below: Version) -> Result<()> {
    let mut buf = Vec::new();
    codec::frame(&mut buf, |b| codec::encode_prune(b, below));
    write_durably(inner, w, &buf)
}

/// Housekeeping after a write: start a new segment when the active one is full; take a
/// checkpoint image when enough log has accumulated (the caller writes it once it has let
/// go of the writer lock).
///
/// The version is published by then, so a failure here must not fail `apply`: a rotation
/// that fails is retried after the next write (the active segment stays valid; a version
/// that would not fit in it is refused before anything is written), and a checkpoint only
/// shortens the next open's replay.
pub(crate) fn after_write(
    store: &Store,
    w: &mut Writer,
) -> Option<crate::recovery::CheckpointImage> {
    let inner = &store.inner;
    if w.end >= inner.opts.segment_bytes && rotate(inner, w).is_err() {
        inner.io.housekeeping_failed();
    }
    if w.since_checkpoint >= inner.opts.checkpoint_bytes {
        return crate::recovery::checkpoint_image(inner, w).ok();
    }
    None
}

/// Closes the active segment and starts the next one.
pub(crate) fn rotate(inner: &Inner, w: &mut Writer) -> Result<()> {
    // Recovery cuts a torn tail only in the newest segment, and checkpoints refer to closed
    // segments: a segment is durable before it stops being the newest (with
    // `FsyncPolicy::Always` its last write was synced already).
    if inner.opts.fsync == FsyncPolicy::Never {
        w.active.sync(&inner.io)?;
    }
    let id = w.active.id + 1;
    let seg = match Segment::create(&inner.dir, id, &inner.io) {
        Ok(seg) => seg,
        // A creation that failed after its rename (syncing the directory) left the file: an
        // empty segment, used once its name is durable. Otherwise every retry would fail on
        // it and the older segment would stop being the newest on disk.
        Err(e) => match Segment::open(&inner.dir, id, &inner.io) {
            Ok(seg)
                if seg.len()? == crate::log::SEGMENT_HEADER
                    && crate::log::sync_dir(&inner.dir).is_ok() =>
            {
                seg
            }
            _ => return Err(e),
        },
    };
    let seg = Arc::new(seg);
    inner.state.write().segments.insert(id, seg.clone());
    w.active = seg;
    w.end = crate::log::SEGMENT_HEADER;
    w.durable_end = crate::log::SEGMENT_HEADER;
    Ok(())
}
