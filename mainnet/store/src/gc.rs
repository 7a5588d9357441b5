//! Garbage collection: closed segments whose bytes are mostly dead (records of pruned
//! versions) have their live records copied forward, then are deleted.
//!
//! Crash safety: copies are appended as `K_RELOCATED` records, which replay ignores; the
//! index switches to them only through the checkpoint written after they are synced, and
//! the old segments are deleted only after that checkpoint. A crash before the checkpoint
//! leaves the old index valid (the copies are garbage); a crash after it leaves orphan
//! segment files, which `open` deletes.

use std::collections::BTreeMap;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::codec::{self, RawEntry, FRAME, K_RELOCATED};
use crate::error::{corrupt, io_err, Result};
use crate::log::{Loc, SEGMENT_HEADER};
use crate::store::{GcStats, Store};

impl Store {
    /// Rewrites closed segments with at least `gc_dead_percent` dead bytes, and deletes
    /// segments with no live record. Runs with the writer lock held (it waits for an
    /// `apply` in progress); readers are not blocked.
    pub fn collect_garbage(&self) -> Result<GcStats> {
        let inner = &self.inner;
        let mut w = inner.writer.lock();
        let mut stats = GcStats::default();
        // Live bytes per segment, and which (page, index) entries live where.
        let mut live: BTreeMap<u32, u64> = BTreeMap::new();
        let victims: Vec<(u32, Arc<crate::log::Segment>)> = {
            let st = inner.state.read();
            for e in st.pages.values().flatten() {
                *live.entry(e.loc.seg).or_default() += e.loc.len as u64;
            }
            let mut v = Vec::new();
            for (&id, seg) in st.segments.range(..w.active.id) {
                let size = seg.len()?.saturating_sub(SEGMENT_HEADER);
                let l = live.get(&id).copied().unwrap_or(0);
                let dead = size.saturating_sub(l);
                if l == 0 || dead * 100 >= size * inner.opts.gc_dead_percent as u64 {
                    v.push((id, seg.clone()));
                }
            }
            v
        };
        if victims.is_empty() {
            return Ok(stats);
        }
        let victim_ids: hashbrown::HashSet<u32> = victims.iter().map(|(id, _)| *id).collect();

        // Copy live records forward.
        let mut moved: HashMap<Loc, Loc> = HashMap::new();
        let mut buf = Vec::new();
        let locs: Vec<Loc> = {
            let st = inner.state.read();
            let mut l: Vec<Loc> = st
                .pages
                .values()
                .flatten()
                .map(|e| e.loc)
                .filter(|l| victim_ids.contains(&l.seg))
                .collect();
            l.sort_unstable_by_key(|l| (l.seg, l.off));
            l
        };
        let base = w.end;
        let mut moved_keys: Vec<(farol_primitives::B256, Loc, Loc)> = Vec::new();
        for loc in locs {
            let seg = inner.state.read().segment(loc.seg)?;
            let mut rec = seg.read_record(loc, &inner.io)?;
            rec[FRAME] = K_RELOCATED;
            let crc = codec::checksum(&rec[..4], &rec[FRAME..]);
            rec[4..8].copy_from_slice(&crc.to_le_bytes());
            let off = u32::try_from(base + buf.len() as u64)
                .map_err(|_| corrupt(&w.active.path, base, "segment offset overflow during GC"))?;
            let new = Loc { seg: w.active.id, off, len: loc.len };
            let h = codec::decode_page_header(&rec[FRAME..])
                .map_err(|r| corrupt(&seg.path, loc.off as u64, r))?;
            h.for_each(|_, e| {
                if let RawEntry::Leaf { key, .. } = e {
                    moved_keys.push((key, loc, new));
                }
                Ok(())
            })
            .map_err(|r| corrupt(&seg.path, loc.off as u64, r))?;
            buf.extend_from_slice(&rec);
            moved.insert(loc, new);
        }
        if !buf.is_empty() {
            w.active.write_at(&buf, w.end, &inner.io)?;
            w.active.sync(&inner.io)?;
            w.end += buf.len() as u64;
            stats.bytes_copied = buf.len() as u64;
        }
        {
            let mut st = inner.state.write();
            for entries in st.pages.values_mut() {
                for e in entries.iter_mut() {
                    if let Some(n) = moved.get(&e.loc) {
                        e.loc = *n;
                    }
                }
            }
            for (k, old, new) in moved_keys {
                if let Some(l) = st.keys.get_mut(&k) {
                    if *l == old {
                        *l = new;
                    }
                }
            }
        }
        crate::recovery::write_checkpoint(inner, &mut w)?;
        {
            let mut st = inner.state.write();
            for (id, _) in &victims {
                st.segments.remove(id);
            }
        }
        for (_, seg) in victims {
            stats.bytes_freed += seg.len()?;
            stats.segments_removed += 1;
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        crate::log::sync_dir(&inner.dir)?;
        crate::write::after_write(self, &mut w)?;
        Ok(stats)
    }
}

/// Starts the thread that collects garbage whenever versions are pruned. It holds only a
/// weak reference, so it ends when the last handle to the store is dropped.
pub(crate) fn spawn_background(store: &Store) -> Result<()> {
    let (tx, rx) = sync_channel::<()>(1);
    *store.inner.gc_signal.lock() = Some(tx);
    let weak = Arc::downgrade(&store.inner);
    std::thread::Builder::new()
        .name("farol-store-gc".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                // Errors surface to the next explicit `collect_garbage` or write.
                let _ = Store { inner }.collect_garbage();
            }
        })
        .map_err(io_err(&store.inner.dir))?;
    Ok(())
}
