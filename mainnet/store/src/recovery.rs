//! Opening a store: the directory lock, the checkpoint, replay of the log written after
//! it, and repair of a torn tail. Also writes checkpoints.
//!
//! Checkpoint format (`checkpoint`, replaced atomically by rename), all integers
//! little-endian: `"FAROLCKP" ‖ format u32 ‖ has_latest u8 ‖ latest u64 ‖ oldest u64 ‖
//! replay_seg u32 ‖ replay_off u64 ‖ roots ‖ pages ‖ keys ‖ crc32(everything before) u32`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use farol_primitives::{SplitMap, Version, B256};
use parking_lot::{Mutex, RwLock};

use crate::codec::{
    self, PageKind, RawEntry, K_COMMIT, K_COMMIT_SEALED, K_COMMIT_V1, K_PAGE, K_PRUNE, K_RELOCATED,
};
use crate::error::{corrupt, io_err, Result, StoreError};
use crate::log::{self, IoCounters, Loc, ScanEnd, Segment, SEGMENT_HEADER};
use crate::store::{Entry, Inner, PageCache, State, Store, Writer};
use crate::tree::PageId;
use crate::Options;

const CKP_MAGIC: &[u8; 8] = b"FAROLCKP";
const CKP_FORMAT: u32 = 1;
const CKP_NAME: &str = "checkpoint";
/// Creates `dir` and whatever of its parents is missing, each new directory's entry made
/// durable in its parent (since stop 58: before, a power loss soon after a store was
/// created could take the whole directory, and the versions acknowledged in it, with it;
/// the node syncs its data directory's entry, not this one inside it).
fn create_durable_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p);
        at = p.parent();
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for p in missing.iter().rev() {
        let parent = p.parent().filter(|q| !q.as_os_str().is_empty()).unwrap_or(Path::new("."));
        log::sync_dir(parent)?;
    }
    Ok(())
}

/// How long `open` waits for the directory lock before reporting `Locked`.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) fn open(dir: &Path, opts: Options) -> Result<Store> {
    opts.validate()?;
    create_durable_dir(dir)?;
    let lock_path = dir.join("LOCK");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    // The lock can be held for a moment after its owner let go: a process that forked holds
    // a copy of the descriptor until it execs. Wait up to LOCK_WAIT before giving up.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.into())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
    }
    let io = IoCounters::default();

    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let name = name.to_str().unwrap_or_default();
        if let Some(id) = log::parse_segment_name(name) {
            ids.push(id);
        } else if name.ends_with(".tmp") {
            // A segment or checkpoint whose creation a crash interrupted: never in use.
            std::fs::remove_file(e.path()).map_err(io_err(e.path()))?;
        }
    }
    ids.sort_unstable();

    // The store's seal: a store made before stop 38 has none until this open gives it one
    // (after recovery, whose search for commits then takes any).
    let seal = read_seal(dir, &io)?;

    let ckp_path = dir.join(CKP_NAME);
    let ckp = if ckp_path.exists() { Some(read_checkpoint_bytes(&ckp_path, &io)?) } else { None };
    let replay_from = match &ckp {
        Some(body) => {
            checkpoint_replay_from(body).map_err(|(o, w)| corrupt(&ckp_path, o as u64, w))?
        }
        None => {
            if let Some(&first) = ids.first() {
                if first != 1 {
                    return Err(corrupt(
                        &ckp_path,
                        0,
                        "checkpoint missing but early segments were collected",
                    ));
                }
            }
            (1, SEGMENT_HEADER)
        }
    };
    if ids.is_empty() {
        if ckp.as_deref().is_some_and(checkpoint_has_versions) {
            return Err(corrupt(
                dir.join(log::segment_path(dir, 1)),
                0,
                "segment files are missing",
            ));
        }
        let seg = Segment::create(dir, replay_from.0.max(1), &io)?;
        ids.push(seg.id);
    }
    let mut segments = BTreeMap::new();
    for &id in &ids {
        segments.insert(id, Arc::new(Segment::open(dir, id, &io)?));
    }
    if !segments.contains_key(&replay_from.0) {
        let p = log::segment_path(dir, replay_from.0);
        return Err(corrupt(p, replay_from.1, "the checkpoint's replay segment is missing"));
    }

    // Segments only ever follow one another (a rotation takes the next id) and collection
    // removes only segments before a checkpoint's replay point, so the replay range has no
    // gap. One missing there (damage, or a file removed by hand) would otherwise be skipped:
    // keys last written in it would read their older values, and page deltas after it would
    // apply to older pages (until stop 47).
    let mut expected = replay_from.0;
    for &id in segments.range(replay_from.0..).map(|(id, _)| id) {
        if id != expected {
            let p = log::segment_path(dir, expected);
            return Err(corrupt(p, 0, "a segment of the log after the checkpoint is missing"));
        }
        expected = id.saturating_add(1);
    }

    // The checkpoint is parsed on a second thread while this one reads the log after it.
    let tail: Vec<Arc<Segment>> = segments.range(replay_from.0..).map(|(_, s)| s.clone()).collect();
    let (parsed, decoded) = std::thread::scope(|scope| {
        let parser = scope.spawn(|| match &ckp {
            Some(body) => parse_checkpoint(body).map_err(|(o, w)| corrupt(&ckp_path, o as u64, w)),
            None => Ok(State { replay_from, ..State::default() }),
        });
        let decoded = decode_tail(&tail, replay_from, &io, seal);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(corrupt(&ckp_path, 0, "checkpoint parser failed")));
        (parsed, decoded)
    });
    let mut st = parsed?;
    st.segments = segments;
    // Segment files left behind by a collection that was interrupted after its checkpoint
    // are those before the replay point that the checkpoint's own index does not refer to.
    // They are counted before the log after the checkpoint is applied: its prunes may leave
    // more segments unreferenced, but that log may not be on the device yet (a power loss
    // would take the store back to the checkpoint, which still reads them), so those wait
    // for the next collection, which removes them only after a checkpoint that no longer
    // needs them (until stop 47 they were removed here). The log adds no reference before
    // the replay point.
    let mut referenced: hashbrown::HashSet<u32> =
        st.pages.values().flatten().map(|e| e.loc.seg).collect();
    referenced.extend(st.keys.values().map(|l| l.seg));
    apply_tail(&mut st, decoded?)?;

    let orphans: Vec<u32> = st
        .segments
        .keys()
        .copied()
        .filter(|id| *id < st.replay_from.0 && !referenced.contains(id))
        .collect();
    for id in orphans {
        if let Some(seg) = st.segments.remove(&id) {
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
    }

    let (&last_id, active) =
        st.segments.iter().next_back().ok_or_else(|| corrupt(dir, 0, "no segment"))?;
    let active = active.clone();
    let end = active.len()?;
    let since =
        if last_id == st.replay_from.0 { end.saturating_sub(st.replay_from.1) } else { end };
    // What replay accepted was read from the OS, which may not have written it to the device
    // yet (a kill during a sync): make it durable before anything is written after it. That
    // is the newest segment holding records, which is not the active one when a rotation
    // whose directory sync failed left an empty one after it (until stop 47 only the empty
    // one was synced, and nothing synced the other again). With `FsyncPolicy::Never` too
    // (since stop 58): its checkpoints sync only the segment they replay from, so a tail
    // of the older segment written before the kill, never synced, could otherwise be
    // described by the next checkpoint and lost in a power loss after it.
    for seg in st.segments.values().rev() {
        seg.sync(&io)?;
        if seg.len()? > SEGMENT_HEADER {
            break;
        }
    }
    let seal = match seal {
        Some(s) => s,
        None => write_seal(dir, &io)?,
    };
    let writer = Writer {
        seal,
        active,
        end,
        buf: Vec::new(),
        poisoned: false,
        since_checkpoint: since,
        durable_end: end,
    };
    let background_gc = opts.background_gc;
    let cache = PageCache::new(opts.cache_bytes);
    let inner = Inner {
        dir: dir.to_path_buf(),
        opts,
        state: RwLock::new(st),
        writer: Mutex::new(writer),
        cache,
        io,
        jobs: Mutex::new(None),
        gc_queued: std::sync::atomic::AtomicBool::new(false),
        checkpoint_seq: std::sync::atomic::AtomicU64::new(0),
        checkpoint_written: Mutex::new(0),
        gc_lock: Mutex::new(()),
        closing: std::sync::atomic::AtomicBool::new(false),
        keep_from: std::sync::atomic::AtomicU64::new(0),
        _lock: lock,
    };
    let inner = Arc::new(inner);
    let worker = if background_gc { Some(crate::gc::spawn_background(&inner)?) } else { None };
    let closer =
        Arc::new(crate::store::Closer { inner: inner.clone(), worker: Mutex::new(worker) });
    Ok(Store { inner, _closer: closer })
}

const SEAL_NAME: &str = "seal";
const SEAL_MAGIC: &[u8; 8] = b"FAROLSEL";

/// The store's seal from its `seal` file (`None` if there is none): `"FAROLSEL" ‖ seal u64 ‖
/// crc32 of both`.
fn read_seal(dir: &Path, io: &IoCounters) -> Result<Option<u64>> {
    let path = dir.join(SEAL_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    io.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if bytes.len() != 20 || &bytes[..8] != SEAL_MAGIC {
        return Err(corrupt(&path, 0, "not a Farol Store seal"));
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..16]);
    if h.finalize().to_le_bytes() != bytes[16..20] {
        return Err(corrupt(&path, 16, "seal checksum mismatch"));
    }
    let mut seal = [0u8; 8];
    seal.copy_from_slice(&bytes[8..16]);
    Ok(Some(u64::from_le_bytes(seal)))
}

/// Makes the store's seal: 64 bits from the OS's randomness (the keys of std's `RandomState`,
/// which the OS seeds), written to a temporary file, synced, renamed, directory synced.
fn write_seal(dir: &Path, io: &IoCounters) -> Result<u64> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let seal = h.finish();
    let mut bytes = SEAL_MAGIC.to_vec();
    bytes.extend_from_slice(&seal.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes);
    bytes.extend_from_slice(&crc.finalize().to_le_bytes());
    let path = dir.join(SEAL_NAME);
    let tmp = dir.join(format!("{SEAL_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        std::io::Write::write_all(&mut f, &bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    io.wrote(bytes.len());
    io.syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    log::sync_dir(dir)?;
    Ok(seal)
}

/// What one whole record of the log tail does to the index.
enum TailOp {
    /// A committed version: its page records, the leaves they hold, its root and deletions.
    Commit {
        at: (PathBuf, u64),
        version: Version,
        root: B256,
        deleted: Vec<B256>,
        pages: Vec<(PageId, Entry)>,
        keys: Vec<(B256, Loc)>,
    },
    /// Versions below this are pruned.
    Prune { at: (PathBuf, u64), below: Version },
}

/// Reads and checks the log after the checkpoint (`segs`, from `replay_from`), cutting back
/// a torn tail, and returns what its whole versions do. Touches no index, so it runs while
/// the checkpoint is parsed.
fn decode_tail(
    segs: &[Arc<Segment>],
    replay_from: (u32, u64),
    io: &IoCounters,
    seal: Option<u64>,
) -> Result<Vec<TailOp>> {
    let mut ops = Vec::new();
    // The newest segment that holds records. A rotation whose directory sync failed leaves
    // an empty newer segment while the writer stays on the older one (it takes the empty one
    // at its next rotation); a crash in that window leaves the older one's tail torn, which
    // is cut like the newest's (until stop 40 such a store refused to open).
    let mut last_id = None;
    for seg in segs.iter().rev() {
        last_id = Some(seg.id);
        if seg.len()? > SEGMENT_HEADER {
            break;
        }
    }
    let Some(last_id) = last_id else { return Ok(ops) };
    for seg in segs {
        let start = if seg.id == replay_from.0 { replay_from.1 } else { SEGMENT_HEADER };
        let len = seg.len()?;
        if len < start {
            return Err(corrupt(&seg.path, len, "segment is shorter than the checkpoint says"));
        }
        let bytes = seg.read_at(start, (len - start) as usize, io)?;
        let mut pages: Vec<(PageId, Entry)> = Vec::new();
        let mut keys: Vec<(B256, Loc)> = Vec::new();
        let mut good_end = start;
        let end = log::scan(&bytes, start, |r| {
            let bad = |why: &str| corrupt(&seg.path, r.off, why.to_string());
            let loc = Loc { seg: seg.id, off: r.off as u32, len: r.len };
            match r.body[0] {
                K_PAGE => {
                    let h = codec::decode_page_header(r.body).map_err(bad)?;
                    h.for_each(|_, e| {
                        if let RawEntry::Leaf { key, .. } = e {
                            keys.push((key, loc));
                        }
                        Ok(())
                    })
                    .map_err(bad)?;
                    pages.push((h.id, Entry { version: h.version, kind: h.kind, loc }));
                }
                K_RELOCATED => {}
                K_COMMIT_SEALED | K_COMMIT | K_COMMIT_V1 => {
                    let c = codec::decode_commit(r.body).map_err(bad)?;
                    if pages.iter().any(|(_, e)| e.version != c.version) {
                        return Err(bad("page records of another version precede this commit"));
                    }
                    let at = (seg.path.clone(), r.off);
                    ops.push(TailOp::Commit {
                        at: at.clone(),
                        version: c.version,
                        root: c.root,
                        deleted: c.deleted,
                        pages: std::mem::take(&mut pages),
                        keys: std::mem::take(&mut keys),
                    });
                    if c.prune_below > 0 {
                        ops.push(TailOp::Prune { at, below: c.prune_below });
                    }
                    good_end = r.off + r.len as u64;
                }
                K_PRUNE => {
                    let below = codec::decode_prune(r.body).map_err(bad)?;
                    if !pages.is_empty() {
                        return Err(bad("prune record inside an uncommitted version"));
                    }
                    ops.push(TailOp::Prune { at: (seg.path.clone(), r.off), below });
                    good_end = r.off + r.len as u64;
                }
                _ => return Err(bad("unknown record kind")),
            }
            Ok(())
        })?;
        let is_last = seg.id == last_id;
        match end {
            ScanEnd::Clean if pages.is_empty() => {}
            ScanEnd::Clean if is_last => seg.truncate(good_end)?,
            ScanEnd::Clean => {
                return Err(corrupt(
                    &seg.path,
                    good_end,
                    "uncommitted records before the last segment",
                ))
            }
            ScanEnd::Bad { off, reason, truncated } => {
                let rest = &bytes[(off - start) as usize..];
                if !(is_last && torn_write(rest, off, truncated, seal)) {
                    return Err(corrupt(&seg.path, off, reason));
                }
                seg.truncate(good_end)?;
            }
        }
    }
    Ok(ops)
}

/// Whether the bytes `rest` of the newest segment, from the record at offset `off` that is
/// not valid, are what an interrupted append leaves (docs/store.md §7, rule 3):
/// - no commit record after it, and the bad record runs past the end of the file or the
///   rest is zeros (a crash during the append, or a power loss before its blocks reached the
///   device), and it is not a whole record with a damaged length field; or
/// - no commit record after it, and the file is zeros from a 512-byte boundary inside the
///   bad record to its end (a power loss that kept the first blocks of the write and lost
///   the rest: [`lost_tail`]); or
/// - the first commit record after it says its own sync began at or before `off` (a power
///   loss during that sync kept later blocks of the write and lost earlier ones), and no
///   commit follows that one (it was the last write, so it was never acknowledged).
fn torn_write(rest: &[u8], off: u64, truncated: bool, seal: Option<u64>) -> bool {
    let after = rest.get(1..).unwrap_or(&[]);
    match log::first_commit_in(after, seal) {
        None => {
            ((truncated || rest.iter().all(|b| *b == 0))
                && !log::whole_record_with_bad_length(rest))
                || lost_tail(rest, off)
        }
        Some((at, rec)) => {
            let began_before = codec::decode_commit(&rec[codec::FRAME..])
                .ok()
                .and_then(|c| c.intact_before)
                .is_some_and(|intact| intact <= off);
            began_before && log::first_commit_in(&after[at + rec.len()..], seal).is_none()
        }
    }
}

/// Whether the record at `off` (whose bytes to the end of the file are `rest`) is bad
/// because a power loss lost the end of its write: from a 512-byte boundary inside the
/// record to the end of the file every byte is zero, at least 8 of the record's own. Appends are not
/// aligned to blocks, so the lost part of a write usually begins inside a record (until
/// stop 40 only a loss beginning exactly at a record was recognized, and such a store
/// refused to open). Damage to the last acknowledged write never looks like this: its
/// last record is a commit, which ends in the store's random seal and the count of its
/// deleted keys (or the keys themselves), so it never ends in 8 zeros.
fn lost_tail(rest: &[u8], off: u64) -> bool {
    let Some(header) = rest.first_chunk::<{ codec::FRAME }>() else { return false };
    let Ok(len) = codec::frame_len(header) else { return false };
    let end = off + (codec::FRAME + len) as u64;
    let zeros = rest.iter().rev().take_while(|b| **b == 0).count() as u64;
    let file_end = off + rest.len() as u64;
    let lost_from = (file_end - zeros).next_multiple_of(512);
    // At least 8 of the record's own bytes lost: the last 8 bytes of a commit are never all
    // zeros, so a damaged last commit followed by a lost unacknowledged write never passes.
    zeros >= 8 && lost_from > off && lost_from + 8 <= end.min(file_end)
}

/// Applies the decoded tail to the index loaded from the checkpoint.
fn apply_tail(st: &mut State, ops: Vec<TailOp>) -> Result<()> {
    // Pruning is monotonic: one prune at the newest point equals applying each in turn.
    let mut prune_to = 0;
    for op in ops {
        match op {
            TailOp::Commit { at, version, root, deleted, pages, keys } => {
                if st.latest.is_some_and(|l| version <= l) {
                    return Err(corrupt(at.0, at.1, "commit version does not increase"));
                }
                for k in &deleted {
                    st.keys.remove(k);
                }
                for (k, loc) in keys {
                    st.keys.insert(k, loc);
                }
                for (id, e) in pages {
                    st.push_entry(id, e);
                }
                st.roots.insert(version, root);
                st.latest = Some(version);
            }
            TailOp::Prune { at, below } => {
                if st.latest.is_none_or(|l| below > l) {
                    return Err(corrupt(at.0, at.1, "prune past the latest version"));
                }
                prune_to = prune_to.max(below);
            }
        }
    }
    st.prune(prune_to);
    Ok(())
}

/// A checkpoint encoded under the writer lock (so that it matches the log position exactly),
/// to be written to disk without holding any lock.
pub(crate) struct CheckpointImage {
    seq: u64,
    bytes: Vec<u8>,
    replay_from: (u32, u64),
}

/// Encodes a checkpoint of the index as of the writer's current position. The caller holds
/// the writer lock (`w`), so every record before that position is published in the index.
/// Refused on a poisoned writer: the log past `w.end` may hold bytes a failed write left,
/// which a checkpoint replaying from there would meet.
pub(crate) fn checkpoint_image(inner: &Inner, w: &mut Writer) -> Result<CheckpointImage> {
    if w.poisoned {
        return Err(StoreError::Poisoned);
    }
    let replay_from = (w.active.id, w.end);
    let bytes = encode_checkpoint(&inner.state.read(), replay_from);
    w.since_checkpoint = 0;
    let seq = inner.checkpoint_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    Ok(CheckpointImage { seq, bytes, replay_from })
}

/// Writes a checkpoint image: temporary file, sync, rename, directory sync. Images are
/// written in the order they were taken; one older than the checkpoint on disk is skipped.
pub(crate) fn persist_checkpoint(inner: &Inner, img: CheckpointImage) -> Result<()> {
    let mut last = inner.checkpoint_written.lock();
    if img.seq <= *last {
        return Ok(());
    }
    // The checkpoint must not describe log the device does not have: with
    // `FsyncPolicy::Never` nothing else syncs it (closed segments are synced at rotation),
    // and with `Always` an explicit checkpoint can come while garbage collection has
    // appended copies it has not synced yet (before stop 38 only `Never` synced here, and a
    // power loss then could leave the segment shorter than the checkpoint's replay offset:
    // `open` refused the store).
    let seg = inner.state.read().segments.get(&img.replay_from.0).cloned();
    if let Some(seg) = seg {
        seg.sync(&inner.io)?;
    }
    let tmp = inner.dir.join("checkpoint.tmp");
    let path = inner.dir.join(CKP_NAME);
    {
        let f = File::create(&tmp).map_err(io_err(&tmp))?;
        use std::io::Write;
        let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
        f.write_all(&img.bytes).map_err(io_err(&tmp))?;
        let f = f.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
        inner.io.wrote(img.bytes.len());
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    log::sync_dir(&inner.dir)?;
    *last = img.seq;
    inner.state.write().replay_from = img.replay_from;
    Ok(())
}

impl Store {
    /// Writes a checkpoint of the index now, so that the next open replays no log.
    pub fn checkpoint(&self) -> Result<()> {
        let img = {
            let mut w = self.inner.writer.lock();
            checkpoint_image(&self.inner, &mut w)?
        };
        persist_checkpoint(&self.inner, img)
    }
}

fn put_loc(out: &mut Vec<u8>, l: &Loc) {
    out.extend_from_slice(&l.seg.to_le_bytes());
    out.extend_from_slice(&l.off.to_le_bytes());
    out.extend_from_slice(&l.len.to_le_bytes());
}

fn encode_checkpoint(st: &State, replay_from: (u32, u64)) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + st.keys.len() * 44 + st.pages.len() * 64);
    out.extend_from_slice(CKP_MAGIC);
    out.extend_from_slice(&CKP_FORMAT.to_le_bytes());
    out.push(st.latest.is_some() as u8);
    out.extend_from_slice(&st.latest.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&st.oldest.to_le_bytes());
    out.extend_from_slice(&replay_from.0.to_le_bytes());
    out.extend_from_slice(&replay_from.1.to_le_bytes());
    out.extend_from_slice(&(st.roots.len() as u64).to_le_bytes());
    for (v, r) in &st.roots {
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(r.as_slice());
    }
    out.extend_from_slice(&(st.pages.len() as u64).to_le_bytes());
    for (id, entries) in &st.pages {
        out.push(id.depth());
        out.extend_from_slice(id.prefix());
        out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.version.to_le_bytes());
            out.push(match e.kind {
                PageKind::Full => 0,
                PageKind::Delta => 1,
                PageKind::Gone => 2,
            });
            put_loc(&mut out, &e.loc);
        }
    }
    out.extend_from_slice(&(st.keys.len() as u64).to_le_bytes());
    for (k, l) in st.keys.iter() {
        out.extend_from_slice(k.as_slice());
        put_loc(&mut out, l);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A bounds-checked cursor over checkpoint bytes; failures carry the offset.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], usize> {
        if self.b.len() - self.pos < n {
            return Err(self.pos);
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, usize> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, usize> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn loc(&mut self) -> Result<Loc, usize> {
        Ok(Loc { seg: self.u32()?, off: self.u32()?, len: self.u32()? })
    }
    /// A count of items of at least `min` bytes each, checked against the bytes left.
    fn count(&mut self, min: usize) -> Result<usize, usize> {
        let at = self.pos;
        let n = self.u64()?;
        if n > ((self.b.len() - self.pos) / min) as u64 {
            return Err(at);
        }
        Ok(n as usize)
    }
}

/// Reads the checkpoint and checks its magic and checksum; returns the bytes before the
/// checksum.
fn read_checkpoint_bytes(path: &Path, io: &IoCounters) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(io_err(path))?;
    io.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    io.bytes_read.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if bytes.len() < CKP_HEADER + 4 || &bytes[..8] != CKP_MAGIC {
        return Err(corrupt(path, 0, "not a Farol Store checkpoint"));
    }
    let body_len = bytes.len() - 4;
    let crc = &bytes[body_len..];
    if crc32fast::hash(&bytes[..body_len]) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(corrupt(path, body_len as u64, "checkpoint checksum mismatch"));
    }
    bytes.truncate(body_len);
    Ok(bytes)
}

/// Bytes of the checkpoint's fixed header: magic, format, has_latest, latest, oldest,
/// replay segment, replay offset.
const CKP_HEADER: usize = 8 + 4 + 1 + 8 + 8 + 4 + 8;

/// The replay point of a checked checkpoint, read without parsing the rest.
fn checkpoint_replay_from(body: &[u8]) -> std::result::Result<(u32, u64), (usize, &'static str)> {
    let mut c = Cur { b: body, pos: 8 + 4 + 1 + 8 + 8 };
    let short = |at| (at, "checkpoint ends early");
    Ok((c.u32().map_err(short)?, c.u64().map_err(short)?))
}

/// Whether a checked checkpoint records any committed version.
fn checkpoint_has_versions(body: &[u8]) -> bool {
    body.get(12).is_some_and(|b| *b != 0)
}

fn parse_checkpoint(body: &[u8]) -> std::result::Result<State, (usize, &'static str)> {
    let mut c = Cur { b: body, pos: 8 };
    let short = |at| (at, "checkpoint ends early");
    if c.u32().map_err(short)? != CKP_FORMAT {
        return Err((8, "unknown checkpoint format"));
    }
    let has_latest = c.u8().map_err(short)? != 0;
    let latest = c.u64().map_err(short)?;
    let oldest = c.u64().map_err(short)?;
    let replay_from = (c.u32().map_err(short)?, c.u64().map_err(short)?);
    let mut st =
        State { latest: has_latest.then_some(latest), oldest, replay_from, ..State::default() };
    let n = c.count(40).map_err(short)?;
    for _ in 0..n {
        let v = c.u64().map_err(short)?;
        let r = B256::from_slice(c.take(32).map_err(short)?);
        st.roots.insert(v, r);
    }
    let n = c.count(5).map_err(short)?;
    st.pages.reserve(n);
    for _ in 0..n {
        let at = c.pos;
        let depth = c.u8().map_err(short)?;
        let id = PageId::new(c.take(depth as usize).map_err(short)?)
            .ok_or((at, "page depth out of range"))?;
        let m = c.u32().map_err(short)? as usize;
        if m > (body.len() - c.pos) / 21 {
            return Err((at, "page entry count out of range"));
        }
        let mut entries = Vec::with_capacity(m);
        for _ in 0..m {
            let at = c.pos;
            let version = c.u64().map_err(short)?;
            let kind =
                PageKind::from_byte(c.u8().map_err(short)?).ok_or((at, "unknown page kind"))?;
            let loc = c.loc().map_err(short)?;
            entries.push(Entry { version, kind, loc });
        }
        if entries.windows(2).any(|w| w[0].version >= w[1].version) {
            return Err((at, "page entries out of order"));
        }
        if entries.len() > 1 {
            st.prunable.entry(entries[entries.len() - 1].version).or_default().push(id);
        }
        st.pages.insert(id, entries);
    }
    let n = c.count(44).map_err(short)?;
    let mut keys = SplitMap::with_capacity(n);
    for _ in 0..n {
        let k = B256::from_slice(c.take(32).map_err(short)?);
        keys.insert(k, c.loc().map_err(short)?);
    }
    st.keys = keys;
    if c.pos != body.len() {
        return Err((c.pos, "trailing bytes in checkpoint"));
    }
    Ok(st)
}
