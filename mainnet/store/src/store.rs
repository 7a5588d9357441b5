//! The store handle, its shared state, and the read side: `get`, `get_at`, `root`, `prove`,
//! snapshots, pruning.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use farol_primitives::{Bytes, SplitMap, Version, B256};
use hashbrown::HashMap;
use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use crate::codec::{self, PageKind, RawEntry, FRAME};
use crate::error::{corrupt, Result, StoreError};
use crate::log::{IoCounters, IoStats, Loc, Segment};
use crate::proof::{Proof, Terminal};
use crate::tree::{Page, PageId, PathEnd, Slot};
use crate::Options;

/// One record of a page in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) version: Version,
    pub(crate) kind: PageKind,
    pub(crate) loc: Loc,
}

/// The in-memory index and bookkeeping, shared by readers and the writer.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Newest committed version.
    pub(crate) latest: Option<Version>,
    /// Versions below this one are pruned.
    pub(crate) oldest: Version,
    /// Root of every retained version.
    pub(crate) roots: BTreeMap<Version, B256>,
    /// Every retained record of every page, oldest first.
    pub(crate) pages: HashMap<PageId, Vec<Entry>>,
    /// Every live key of the latest version → the newest record holding its value (split, so
    /// that this map, which grows with the state, never rehashes all of itself in one write).
    pub(crate) keys: SplitMap<B256, Loc>,
    /// Open segment files by id.
    pub(crate) segments: BTreeMap<u32, Arc<Segment>>,
    /// Replay at open starts here (segment, offset): everything before is in the checkpoint.
    pub(crate) replay_from: (u32, u64),
    /// Pages that gained a record at a version, so that pruning visits only pages that may
    /// have records to drop (a page's older records become droppable once a newer one is
    /// in effect at the prune point).
    pub(crate) prunable: BTreeMap<Version, Vec<PageId>>,
}

impl State {
    pub(crate) fn segment(&self, id: u32) -> Result<Arc<Segment>> {
        self.segments.get(&id).cloned().ok_or_else(|| StoreError::Corrupt {
            path: PathBuf::from(format!("seg-{id:08}.log")),
            offset: 0,
            reason: "the index refers to a segment that does not exist".into(),
        })
    }

    /// Adds a page's newest record.
    pub(crate) fn push_entry(&mut self, id: PageId, e: Entry) {
        let entries = self.pages.entry(id).or_default();
        entries.push(e);
        if entries.len() > 1 || e.kind == PageKind::Gone {
            self.prunable.entry(e.version).or_default().push(id);
        }
    }

    /// Drops what versions below `below` alone need. Keeps, for every page, the record in
    /// effect at `below` and the chain of deltas back to its full record.
    pub(crate) fn prune(&mut self, below: Version) {
        if below <= self.oldest {
            return;
        }
        self.oldest = below;
        self.roots = self.roots.split_off(&below);
        let rest = match below.checked_add(1) {
            Some(next) => self.prunable.split_off(&next),
            None => Default::default(),
        };
        let due = std::mem::replace(&mut self.prunable, rest);
        for id in due.into_values().flatten() {
            let Some(entries) = self.pages.get_mut(&id) else { continue };
            let in_effect = entries.partition_point(|e| e.version <= below);
            if in_effect == 0 {
                continue;
            }
            let i = in_effect - 1;
            let keep_from = if entries[i].kind == PageKind::Gone {
                in_effect
            } else {
                (0..=i).rev().find(|&j| entries[j].kind == PageKind::Full).unwrap_or(0)
            };
            entries.drain(..keep_from);
            if entries.is_empty() {
                self.pages.remove(&id);
            }
        }
    }

    pub(crate) fn check_version(&self, version: Version) -> Result<()> {
        if version < self.oldest {
            return Err(StoreError::Pruned { version, oldest: self.oldest });
        }
        if !self.roots.contains_key(&version) {
            return Err(StoreError::UnknownVersion(version));
        }
        Ok(())
    }
}

/// What garbage collection did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Segment files removed.
    pub segments_removed: u64,
    /// Live bytes copied forward into the active segment.
    pub bytes_copied: u64,
    /// Bytes of files removed.
    pub bytes_freed: u64,
}

pub(crate) struct Writer {
    /// The store's seal, in every commit record (`codec::K_COMMIT_SEALED`).
    pub(crate) seal: u64,
    pub(crate) active: Arc<Segment>,
    /// Append offset in the active segment.
    pub(crate) end: u64,
    pub(crate) buf: Vec<u8>,
    pub(crate) poisoned: bool,
    /// Log bytes written since the last checkpoint.
    pub(crate) since_checkpoint: u64,
    /// Offset in the active segment below which every byte is known to be durable (the
    /// end of its last sync); each commit record carries it (docs/store.md §7, rule 3).
    pub(crate) durable_end: u64,
}

pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) state: RwLock<State>,
    pub(crate) writer: Mutex<Writer>,
    pub(crate) cache: PageCache,
    pub(crate) io: IoCounters,
    /// The background worker's queue (garbage collection, checkpoint writes), if running.
    pub(crate) jobs: Mutex<Option<Sender<Job>>>,
    /// A collection is queued and not started: further requests are merged into it.
    pub(crate) gc_queued: AtomicBool,
    /// Sequence of checkpoint images taken, and of the last one written to disk.
    pub(crate) checkpoint_seq: AtomicU64,
    pub(crate) checkpoint_written: Mutex<u64>,
    /// One garbage collection at a time.
    pub(crate) gc_lock: Mutex<()>,
    /// The last handle is gone: the background worker finishes checkpoints, skips collections.
    pub(crate) closing: AtomicBool,
    /// The oldest version `apply`'s pruning keeps, whatever `retain_versions` says
    /// ([`Store::keep_from`]), plus one (0: none).
    pub(crate) keep_from: AtomicU64,
    /// Holds the directory lock for the store's lifetime.
    pub(crate) _lock: File,
}

/// Reconstructed pages by (page id, version of the record they are as of). Entries never
/// go stale: a page's content at a given record version never changes. Split into shards
/// by page id so that the writer's threads and readers rarely wait on one another.
pub(crate) struct PageCache {
    shards: Vec<Mutex<CacheShard>>,
}

struct CacheShard {
    lru: LruCache<(PageId, Version), (Arc<Page>, usize)>,
    bytes: usize,
    budget: usize,
}

const CACHE_SHARDS: usize = 16;

impl PageCache {
    pub(crate) fn new(budget: usize) -> PageCache {
        let shards = (0..CACHE_SHARDS)
            .map(|_| {
                Mutex::new(CacheShard {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                    budget: budget / CACHE_SHARDS,
                })
            })
            .collect();
        PageCache { shards }
    }

    fn shard(&self, id: &PageId) -> &Mutex<CacheShard> {
        // Page ids are key prefixes of uniformly spread keys: the last prefix byte spreads them.
        let p = id.prefix();
        let h = p.last().copied().unwrap_or(0) as usize ^ (id.depth() as usize * 7);
        &self.shards[h % CACHE_SHARDS]
    }

    pub(crate) fn get(&self, key: &(PageId, Version)) -> Option<Arc<Page>> {
        self.shard(&key.0).lock().lru.get(key).map(|(p, _)| p.clone())
    }

    pub(crate) fn insert(&self, key: (PageId, Version), page: Arc<Page>) {
        let size = page.mem_size();
        let mut s = self.shard(&key.0).lock();
        if size > s.budget {
            return;
        }
        if let Some((_, old)) = s.lru.put(key, (page, size)) {
            s.bytes -= old;
        }
        s.bytes += size;
        while s.bytes > s.budget {
            match s.lru.pop_lru() {
                Some((_, (_, n))) => s.bytes -= n,
                None => break,
            }
        }
    }
}

/// Which rebuilt pages go into the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caching {
    /// Every page (readers).
    All,
    /// Only dense pages (the writer). The writer touches a random sample of the sparse
    /// bottom pages each version and rarely the same one twice, so caching them only
    /// pushes out the dense upper pages that every version updates, whose memoized node
    /// hashes make their rehash incremental.
    Dense,
}

impl Caching {
    pub(crate) fn keeps(self, page: &Page) -> bool {
        match self {
            Caching::All => true,
            Caching::Dense => page.is_dense(),
        }
    }
}

/// Work for the background thread.
pub(crate) enum Job {
    CollectGarbage,
    Checkpoint(crate::recovery::CheckpointImage),
}

/// A handle to an open store. Clones share the store. When the last clone is dropped the
/// background worker is stopped and joined, so the directory can be opened again at once.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
    pub(crate) _closer: Arc<Closer>,
}

/// Shared by all handles of one store; its drop (with the last handle) ends the background
/// worker before the store's files and directory lock are released.
pub(crate) struct Closer {
    pub(crate) inner: Arc<Inner>,
    pub(crate) worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.inner.closing.store(true, Ordering::Release);
        // Ending the queue ends the worker's loop once it has drained it.
        drop(self.inner.jobs.lock().take());
        if let Some(worker) = self.worker.lock().take() {
            let _ = worker.join();
        }
    }
}

/// Tells when a store is closed: every handle and snapshot of it dropped and its background
/// worker ended, its files and directory lock let go as the last of them is dropped (a
/// moment after [`StoreWatch::closed`] turns true: [`Store::open`] waits up to 2 s for a
/// lock). It does not keep the store open.
#[derive(Clone, Debug)]
pub struct StoreWatch(std::sync::Weak<Inner>);

impl StoreWatch {
    /// Whether the store is closed.
    pub fn closed(&self) -> bool {
        self.0.strong_count() == 0
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

/// A read view of one retained version. Reads through it see that version even while
/// newer versions are applied; they fail with [`StoreError::Pruned`] once it is pruned.
#[derive(Clone, Debug)]
pub struct Snapshot {
    store: Store,
    version: Version,
}

impl Snapshot {
    /// The version this snapshot reads.
    pub fn version(&self) -> Version {
        self.version
    }
    /// The value of `key` at this version.
    pub fn get(&self, key: &B256) -> Result<Option<Bytes>> {
        self.store.get_at(key, self.version)
    }
    /// The state root of this version.
    pub fn root(&self) -> Result<B256> {
        self.store.root(self.version)
    }
    /// A proof for `key` at this version.
    pub fn prove(&self, key: &B256) -> Result<Proof> {
        self.store.prove(key, self.version)
    }
    /// The root `changes` on top of this version would give; nothing is written (see
    /// [`Store::root_with`]).
    pub fn root_with(
        &self,
        changes: impl IntoIterator<Item = (B256, Option<Bytes>)>,
    ) -> Result<B256> {
        self.store.root_with(self.version, changes)
    }
}

impl Store {
    /// A [`StoreWatch`] on this store.
    pub fn watch(&self) -> StoreWatch {
        StoreWatch(Arc::downgrade(&self.inner))
    }

    /// Opens the store in `dir`, creating the directory and an empty store if needed.
    /// Repairs a torn log tail; fails with [`StoreError::Corrupt`] naming the file and
    /// offset if committed data is damaged, and with [`StoreError::Locked`] if the store is
    /// open elsewhere (another process, or a handle of this one that is still alive) for
    /// longer than two seconds.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        crate::recovery::open(dir.as_ref(), opts)
    }

    /// The newest committed version, or `None` for an empty store.
    pub fn latest_version(&self) -> Option<Version> {
        self.inner.state.read().latest
    }

    /// The oldest version still readable, or `None` for an empty store.
    pub fn oldest_version(&self) -> Option<Version> {
        let st = self.inner.state.read();
        st.roots.keys().next().copied()
    }

    /// The state root of `version`.
    pub fn root(&self, version: Version) -> Result<B256> {
        let st = self.inner.state.read();
        st.check_version(version)?;
        st.roots.get(&version).copied().ok_or(StoreError::UnknownVersion(version))
    }

    /// A snapshot of `version`.
    pub fn snapshot(&self, version: Version) -> Result<Snapshot> {
        self.inner.state.read().check_version(version)?;
        Ok(Snapshot { store: self.clone(), version })
    }

    /// I/O done since open, counted at the file layer.
    pub fn io_stats(&self) -> IoStats {
        self.inner.io.snapshot()
    }

    /// Bytes the store's files take on disk.
    pub fn disk_usage(&self) -> Result<u64> {
        let mut total = 0;
        let rd =
            std::fs::read_dir(&self.inner.dir).map_err(crate::error::io_err(&self.inner.dir))?;
        for e in rd {
            let e = e.map_err(crate::error::io_err(&self.inner.dir))?;
            match e.metadata() {
                Ok(m) => total += m.len(),
                // Removed by garbage collection since the directory was listed.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(crate::error::io_err(e.path())(err)),
            }
        }
        Ok(total)
    }

    /// The value of `key` at the latest version: one read of the record holding it.
    pub fn get(&self, key: &B256) -> Result<Option<Bytes>> {
        let st = self.inner.state.read();
        self.get_latest(st, key)
    }

    /// Reads `key` through the key index; `st` is held while the record is located so
    /// that the answer belongs to the version that was latest under that lock.
    fn get_latest(
        &self,
        st: parking_lot::RwLockReadGuard<'_, State>,
        key: &B256,
    ) -> Result<Option<Bytes>> {
        let (loc, seg) = match st.keys.get(key) {
            None => return Ok(None),
            Some(loc) => (*loc, st.segment(loc.seg)?),
        };
        drop(st);
        let rec = seg.read_record(loc, &self.inner.io)?;
        let bad = |r: &str| corrupt(&seg.path, loc.off as u64, r.to_string());
        let h = codec::decode_page_header(&rec[FRAME..]).map_err(bad)?;
        let mut found = None;
        h.for_each(|_, e| {
            if let RawEntry::Leaf { key: k, value, .. } = e {
                if k == *key {
                    found = Some(Bytes::copy_from_slice(value));
                }
            }
            Ok(())
        })
        .map_err(bad)?;
        found.map(Some).ok_or_else(|| bad("the indexed record does not hold the key"))
    }

    /// The value of `key` at `version`, which must be retained.
    pub fn get_at(&self, key: &B256, version: Version) -> Result<Option<Bytes>> {
        {
            let st = self.inner.state.read();
            st.check_version(version)?;
            if st.latest == Some(version) {
                return self.get_latest(st, key);
            }
        }
        let mut id = PageId::ROOT;
        loop {
            // Only the root may be absent (an empty state): a child slot names a page that
            // must exist (until stop 40 a missing one read as an absent key).
            let Some(page) = self.page_at(id, version, Caching::All)? else {
                return if id == PageId::ROOT { Ok(None) } else { Err(self.missing(id, version)) };
            };
            let slot = key[id.depth() as usize];
            match page.get(slot) {
                None => return Ok(None),
                Some(Slot::Leaf(l)) => {
                    return Ok((l.key == *key).then(|| l.value.clone()));
                }
                Some(Slot::Child(_)) => {
                    id = id.child(slot).ok_or_else(|| self.missing(id, version))?;
                }
            }
        }
    }

    /// An inclusion proof (if `key` is present at `version`) or an exclusion proof.
    pub fn prove(&self, key: &B256, version: Version) -> Result<Proof> {
        self.inner.state.read().check_version(version)?;
        let mut siblings = Vec::new();
        let mut id = PageId::ROOT;
        loop {
            let Some(page) = self.page_at(id, version, Caching::All)? else {
                if id != PageId::ROOT {
                    return Err(self.missing(id, version));
                }
                return Ok(Proof { siblings, terminal: Terminal::Empty });
            };
            let slot = key[id.depth() as usize];
            match page.path(slot, &mut siblings) {
                PathEnd::Empty => return Ok(Proof { siblings, terminal: Terminal::Empty }),
                PathEnd::Leaf(l) => {
                    let terminal = Terminal::Leaf { key: l.key, value_hash: l.value_hash() };
                    return Ok(Proof { siblings, terminal });
                }
                PathEnd::Child => {
                    id = id.child(slot).ok_or_else(|| self.missing(id, version))?;
                }
            }
        }
    }

    /// Makes the pruning of later `apply`s (under `retain_versions`) keep `version` and the
    /// versions after it, however many there are (`None`: no such floor). A version pruned
    /// already stays pruned. The floor is not stored: each commit record names the point it
    /// prunes to, so a reopened store has every version the floor kept when it was written.
    pub fn keep_from(&self, version: Option<Version>) {
        let floor = version.map_or(0, |v| v.saturating_add(1));
        self.inner.keep_from.store(floor, Ordering::Release);
    }

    /// Makes versions below `below` unreadable and their space reclaimable by garbage
    /// collection. `below` may not pass the latest version. Durable when it returns.
    pub fn prune(&self, below: Version) -> Result<()> {
        let mut w = self.inner.writer.lock();
        if w.poisoned {
            return Err(StoreError::Poisoned);
        }
        {
            let st = self.inner.state.read();
            match st.latest {
                Some(latest) if below <= latest => {}
                _ => return Err(StoreError::UnknownVersion(below)),
            }
            if below <= st.oldest {
                return Ok(());
            }
        }
        crate::write::append_prune(&self.inner, &mut w, below)?;
        self.inner.state.write().prune(below);
        drop(w);
        self.signal_gc();
        Ok(())
    }

    pub(crate) fn signal_gc(&self) {
        if self.inner.gc_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(tx) = self.inner.jobs.lock().as_ref() {
            let _ = tx.send(Job::CollectGarbage);
        }
    }

    /// Writes a checkpoint image on the background worker, or here when there is none.
    pub(crate) fn persist_later(&self, img: crate::recovery::CheckpointImage) -> Result<()> {
        let job = match self.inner.jobs.lock().as_ref() {
            Some(tx) => match tx.send(Job::Checkpoint(img)) {
                Ok(()) => return Ok(()),
                // The worker is gone: the job comes back and is done here.
                Err(returned) => returned.0,
            },
            None => Job::Checkpoint(img),
        };
        match job {
            Job::Checkpoint(img) => crate::recovery::persist_checkpoint(&self.inner, img),
            Job::CollectGarbage => Ok(()),
        }
    }

    fn missing(&self, id: PageId, version: Version) -> StoreError {
        let st = self.inner.state.read();
        if version < st.oldest {
            return StoreError::Pruned { version, oldest: st.oldest };
        }
        corrupt(
            &self.inner.dir,
            0,
            format!("page at depth {} is missing at version {version}", id.depth()),
        )
    }

    /// The page `id` as of `version`, or `None` if it did not exist then.
    pub(crate) fn page_at(
        &self,
        id: PageId,
        version: Version,
        caching: Caching,
    ) -> Result<Option<Arc<Page>>> {
        // The chain of records that make up the page: newest first, down to a full one.
        let mut chain: Vec<(Entry, Arc<Segment>)> = Vec::new();
        {
            let st = self.inner.state.read();
            // Checked under the same lock as the index: a version pruned meanwhile must
            // read as pruned, not as a missing page.
            if version < st.oldest {
                return Err(StoreError::Pruned { version, oldest: st.oldest });
            }
            let Some(entries) = st.pages.get(&id) else { return Ok(None) };
            let n = entries.partition_point(|e| e.version <= version);
            if n == 0 {
                return Ok(None);
            }
            for e in entries[..n].iter().rev() {
                if chain.is_empty() && e.kind == PageKind::Gone {
                    return Ok(None);
                }
                chain.push((*e, st.segment(e.loc.seg)?));
                if e.kind == PageKind::Full {
                    break;
                }
                if e.kind == PageKind::Gone {
                    return Err(corrupt(
                        &st.segment(e.loc.seg)?.path,
                        e.loc.off as u64,
                        "a delta follows a gone record",
                    ));
                }
            }
        }
        // Start from the newest cached state along the chain.
        let mut base: Option<Arc<Page>> = None;
        let mut start = chain.len();
        for (i, (e, _)) in chain.iter().enumerate() {
            if let Some(p) = self.inner.cache.get(&(id, e.version)) {
                base = Some(p);
                start = i;
                break;
            }
        }
        if start == 0 {
            return Ok(base);
        }
        let mut page = match base {
            Some(p) => (*p).clone(),
            None => Page::default(),
        };
        for (e, seg) in chain[..start].iter().rev() {
            let rec = Bytes::from(seg.read_record(e.loc, &self.inner.io)?);
            let bad = |r: &str| corrupt(&seg.path, e.loc.off as u64, r.to_string());
            let h = codec::decode_page_header(&rec[FRAME..]).map_err(bad)?;
            if h.id != id || h.version != e.version || h.kind != e.kind {
                return Err(bad("record is not the page version the index expects"));
            }
            let entries = h.decode_entries(Some(&rec)).map_err(bad)?;
            if e.kind == PageKind::Full {
                page = Page::default();
                for (slot, s) in entries {
                    match s {
                        Some(s) => page.slots.push((slot, s)),
                        None => return Err(bad("a full page record holds a removed slot")),
                    }
                }
            } else {
                for (slot, s) in entries {
                    page.set(slot, s);
                }
            }
        }
        page.seal();
        let page = Arc::new(page);
        if let Some((newest, _)) = chain.first() {
            if caching.keeps(&page) {
                self.inner.cache.insert((id, newest.version), page.clone());
            }
        }
        Ok(Some(page))
    }
}
