//! Garbage collection: closed segments whose bytes are mostly dead (records of pruned
//! versions) have their live records copied forward, then are deleted.
//!
//! Crash safety: copies are appended as `K_RELOCATED` records, which replay ignores; the
//! index switches to them only through the checkpoint written after they are synced, and
//! the old segments are deleted only after that checkpoint. A crash before the checkpoint
//! leaves the old index valid (the copies are garbage); a crash after it leaves orphan
//! segment files, which `open` deletes.
//!
//! Only the append of the copies and the encoding of the checkpoint hold the writer lock;
//! reading the live records and writing the checkpoint happen beside a running `apply`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use farol_primitives::B256;
use hashbrown::{HashMap, HashSet};

use crate::codec::{self, RawEntry, FRAME, K_RELOCATED};
use crate::error::{corrupt, io_err, Result};
use crate::log::{Loc, Segment, SEGMENT_HEADER};
use crate::store::{GcStats, Inner, Job, Store};

/// A live record read from a victim segment, re-framed as a relocated copy.
struct Copy {
    old: Loc,
    /// Offset of the copy inside the batch of copies.
    at: usize,
    keys: Vec<B256>,
}

impl Store {
    /// Rewrites closed segments with at least `gc_dead_percent` dead bytes, and deletes
    /// segments with no live record. `apply` waits only while the copies are appended and
    /// the checkpoint image is taken; readers are never blocked.
    pub fn collect_garbage(&self) -> Result<GcStats> {
        collect(&self.inner)
    }
}

/// The collection itself (see [`Store::collect_garbage`]); the background worker calls it
/// without a `Store` handle.
pub(crate) fn collect(inner: &Inner) -> Result<GcStats> {
    let _one_at_a_time = inner.gc_lock.lock();
    inner.gc_queued.store(false, Ordering::Release);
    let mut stats = GcStats::default();

    // 1. Pick the victims and read their live records (no writer lock).
    let active = inner.writer.lock().active.id;
    let (victims, locs) = {
        let st = inner.state.read();
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        for e in st.pages.values().flatten() {
            *live.entry(e.loc.seg).or_default() += e.loc.len as u64;
        }
        let mut victims: Vec<Arc<Segment>> = Vec::new();
        for (&id, seg) in st.segments.range(..active) {
            let size = seg.len()?.saturating_sub(SEGMENT_HEADER);
            let l = live.get(&id).copied().unwrap_or(0);
            let dead = size.saturating_sub(l);
            if l == 0 || dead * 100 >= size * inner.opts.gc_dead_percent as u64 {
                victims.push(seg.clone());
            }
        }
        let ids: HashSet<u32> = victims.iter().map(|s| s.id).collect();
        let mut locs: Vec<Loc> =
            st.pages.values().flatten().map(|e| e.loc).filter(|l| ids.contains(&l.seg)).collect();
        locs.sort_unstable_by_key(|l| (l.seg, l.off));
        (victims, locs)
    };
    if victims.is_empty() {
        return Ok(stats);
    }
    let mut buf = Vec::new();
    let mut copies = Vec::with_capacity(locs.len());
    for loc in locs {
        let seg = victims
            .iter()
            .find(|s| s.id == loc.seg)
            .ok_or_else(|| corrupt(&inner.dir, 0, "victim segment vanished"))?;
        let mut rec = seg.read_record(loc, &inner.io)?;
        let bad = |r: &str| corrupt(&seg.path, loc.off as u64, r.to_string());
        let mut keys = Vec::new();
        codec::decode_page_header(&rec[FRAME..])
            .and_then(|h| {
                h.for_each(|_, e| {
                    if let RawEntry::Leaf { key, .. } = e {
                        keys.push(key);
                    }
                    Ok(())
                })
            })
            .map_err(bad)?;
        rec[FRAME] = K_RELOCATED;
        let crc = codec::checksum(&rec[..4], &rec[FRAME..]);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        copies.push(Copy { old: loc, at: buf.len(), keys });
        buf.extend_from_slice(&rec);
    }

    // 2. Append the copies in slices (an `apply` can slip in between two), sync them
    //    without the writer lock, then switch the index to them and take the checkpoint
    //    image. Replay skips relocated records wherever they sit.
    const SLICE: usize = 4 << 20;
    let mut placed: Vec<Loc> = Vec::with_capacity(copies.len());
    let mut next = 0usize;
    let mut written_to: Option<Arc<Segment>> = None;
    while next < copies.len() {
        let mut w = inner.writer.lock();
        if w.poisoned {
            return Err(crate::StoreError::Poisoned);
        }
        let seg = w.active.clone();
        let start = copies[next].at;
        // At least one copy per slice, then as many as fit in SLICE bytes.
        let mut end = next + 1;
        while end < copies.len() && copies[end].at + copies[end].old.len as usize - start <= SLICE {
            end += 1;
        }
        let stop = copies.get(end).map(|c| c.at).unwrap_or(buf.len());
        let base = w.end;
        u32::try_from(base + (stop - start) as u64)
            .map_err(|_| corrupt(&seg.path, base, "segment offset overflow in GC"))?;
        // A failed write is cut back, as `write_durably` cuts an append: bytes it left past
        // `w.end` would otherwise lie ahead of the next `apply`'s records, or under them.
        // Until stop 40 they stayed.
        if let Err(e) = seg.write_at(&buf[start..stop], base, &inner.io) {
            if seg.truncate(w.end).is_err() {
                w.poisoned = true;
            }
            return Err(e);
        }
        w.end += (stop - start) as u64;
        for c in &copies[next..end] {
            placed.push(Loc {
                seg: seg.id,
                off: (base + (c.at - start) as u64) as u32,
                len: c.old.len,
            });
        }
        stats.bytes_copied += (stop - start) as u64;
        // A rotation between slices is fine; the sync below covers every segment used.
        if written_to.as_ref().is_some_and(|s| s.id != seg.id) {
            if let Some(prev) = written_to.take() {
                synced_or_poison(&prev, inner, &mut w)?;
            }
        }
        if w.end >= inner.opts.segment_bytes {
            // The copies must be durable before their segment stops being the newest:
            // recovery cuts a torn tail only in the newest segment, and reports one anywhere
            // else as damage (before stop 27 a power loss here left such a tail).
            synced_or_poison(&seg, inner, &mut w)?;
            crate::write::rotate(inner, &mut w)?;
        }
        written_to = Some(seg);
        next = end;
    }
    if let Some(seg) = &written_to {
        // Without the writer lock (an `apply` may run meanwhile); see `synced_or_poison`.
        if let Err(e) = seg.sync(&inner.io) {
            inner.writer.lock().poisoned = true;
            return Err(e);
        }
    }
    let img = {
        let mut w = inner.writer.lock();
        {
            let mut st = inner.state.write();
            let moved: HashMap<Loc, Loc> =
                copies.iter().zip(&placed).map(|(c, new)| (c.old, *new)).collect();
            for entries in st.pages.values_mut() {
                for e in entries.iter_mut() {
                    if let Some(n) = moved.get(&e.loc) {
                        e.loc = *n;
                    }
                }
            }
            for c in &copies {
                let Some(&new) = moved.get(&c.old) else { continue };
                for k in &c.keys {
                    if let Some(l) = st.keys.get_mut(k) {
                        if *l == c.old {
                            *l = new;
                        }
                    }
                }
            }
        }
        crate::recovery::checkpoint_image(inner, &mut w)?
    };

    // 3. Write the checkpoint, then drop the victims (nothing refers to them now).
    crate::recovery::persist_checkpoint(inner, img)?;
    {
        let mut st = inner.state.write();
        for seg in &victims {
            st.segments.remove(&seg.id);
        }
    }
    for seg in victims {
        stats.bytes_freed += seg.len()?;
        stats.segments_removed += 1;
        std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
    }
    crate::log::sync_dir(&inner.dir)?;
    Ok(stats)
}

/// Syncs the copies appended to `seg`. A failed sync poisons the writer (further writes are
/// refused): the kernel may have dropped the copies' pages and report that only once, so a
/// later `apply`'s successful sync would not mean they are on the device. After a power loss
/// recovery would then find their damage ahead of that `apply`'s commit, whose
/// `intact_before` lies below the copies, read it as that commit's torn write (docs/store.md
/// §7, rule 3) and cut a version that was acknowledged.
fn synced_or_poison(seg: &Segment, inner: &Inner, w: &mut crate::store::Writer) -> Result<()> {
    seg.sync(&inner.io).inspect_err(|_| w.poisoned = true)
}

/// Starts the thread that collects garbage after versions are pruned and writes periodic
/// checkpoints. It holds the store only while it works on a job; when the last handle is
/// dropped, the handle's closer ends the queue and joins the thread (a queued checkpoint is
/// still written, queued collections are skipped).
pub(crate) fn spawn_background(inner: &Arc<Inner>) -> Result<JoinHandle<()>> {
    let (tx, rx) = channel::<Job>();
    *inner.jobs.lock() = Some(tx);
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("farol-store-bg".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let Some(inner) = weak.upgrade() else { break };
                // Errors surface at the next explicit call or write: a checkpoint that could
                // not be written is retaken later, garbage stays until the next collection.
                let res = match job {
                    Job::CollectGarbage if inner.closing.load(Ordering::Acquire) => Ok(()),
                    Job::CollectGarbage => collect(&inner).map(|_| ()),
                    Job::Checkpoint(img) => crate::recovery::persist_checkpoint(&inner, img),
                };
                if res.is_err() {
                    inner.io.housekeeping_failed();
                }
            }
        })
        .map_err(io_err(&inner.dir))
}
