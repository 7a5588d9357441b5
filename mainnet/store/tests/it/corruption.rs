//! Damaged files: flipped bytes and truncations are reported as errors naming the file and
//! offset, never as wrong values or roots; a torn tail is cut back to the last whole version.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use farol_primitives::{Bytes, B256};
use farol_store::{FsyncPolicy, Options, Store, StoreError};
use rand::Rng;

use crate::common::{apply_model, key_pool, naive_root, random_batch, rng, small_opts};

struct Fixture {
    dir: tempfile::TempDir,
    keys: Vec<B256>,
    models: BTreeMap<u64, BTreeMap<B256, Bytes>>,
    /// Where the last version's write begins: its segment and offset.
    last_write: (PathBuf, u64),
}

/// A store with 12 versions, a checkpoint after version 6, several segments.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let mut r = rng(21);
    let keys = key_pool(&mut r, 200);
    let mut models = BTreeMap::new();
    let mut m = BTreeMap::new();
    let mut last_write = (PathBuf::new(), 0);
    for v in 1..=12u64 {
        if v == 12 {
            let seg = newest_segment(dir.path());
            let len = fs::metadata(&seg).unwrap().len();
            last_write = (seg, len);
        }
        let b = random_batch(&mut r, &keys, 80);
        apply_model(&mut m, &b);
        store.apply(v, b).unwrap();
        models.insert(v, m.clone());
        if v == 6 {
            store.checkpoint().unwrap();
        }
    }
    assert_eq!(newest_segment(dir.path()), last_write.0, "version 12 fits in one segment");
    Fixture { dir, keys, models, last_write }
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
        }
    }
    to
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "LOCK"))
        .collect();
    v.sort();
    v
}

fn newest_segment(dir: &Path) -> PathBuf {
    data_files(dir).into_iter().rfind(|p| p.extension().is_some_and(|e| e == "log")).unwrap()
}

fn assert_names_a_file(e: &StoreError, dir: &Path) {
    match e {
        StoreError::Corrupt { path, .. } => {
            assert!(path.starts_with(dir) || path.is_relative(), "error names {path:?}");
        }
        other => panic!("expected a corruption error, got {other}"),
    }
}

/// Reads everything readable and checks each answer is right or a corruption error.
/// Returns how many corruption errors were seen.
fn read_all(store: &Store, f: &Fixture, dir: &Path) -> usize {
    let mut errors = 0;
    let mut seen = |r: Result<(), StoreError>| {
        if let Err(e) = r {
            assert_names_a_file(&e, dir);
            errors += 1;
        }
    };
    let latest = store.latest_version().unwrap();
    for (&v, m) in f.models.range(..=latest) {
        seen(store.root(v).map(|root| assert_eq!(root, naive_root(m), "root of {v}")));
        for k in &f.keys {
            seen(store.get_at(k, v).map(|got| assert_eq!(got.as_ref(), m.get(k), "value at {v}")));
        }
    }
    for k in &f.keys {
        seen(store.get(k).map(|got| assert_eq!(got.as_ref(), f.models[&latest].get(k))));
    }
    errors
}

#[test]
fn flipped_bytes_are_detected_never_returned() {
    let f = fixture();
    let files = data_files(f.dir.path());
    let mut r = rng(22);
    let mut detected = 0;
    for trial in 0..120 {
        let d = copy_dir(f.dir.path());
        let file = &files[trial % files.len()];
        let target = d.path().join(file.file_name().unwrap());
        let mut bytes = fs::read(&target).unwrap();
        let pos = r.random_range(0..bytes.len());
        bytes[pos] ^= 1 << r.random_range(0..8);
        fs::write(&target, &bytes).unwrap();
        match Store::open(d.path(), small_opts()) {
            Err(e) => {
                assert_names_a_file(&e, d.path());
                detected += 1;
            }
            Ok(store) => {
                // Opened: a flip inside the checkpointed part or a dead record. Whatever
                // is read must be right or an error.
                // A flip inside the last write, before its commit record, reads as that
                // write torn by a power loss (docs/store.md §7, rule 3): the version before.
                let latest = store.latest_version().unwrap();
                let in_last_write = *file == f.last_write.0 && pos as u64 >= f.last_write.1;
                let expected = if in_last_write { 11 } else { 12 };
                assert_eq!(latest, expected, "trial {trial}: flip at {pos} of {target:?}");
                detected += usize::from(read_all(&store, &f, d.path()) > 0);
            }
        }
    }
    assert!(detected > 60, "only {detected} of 120 flips were reported");
}

#[test]
fn checkpoint_damage_is_reported_with_the_file() {
    let f = fixture();
    let d = copy_dir(f.dir.path());
    let ckp = d.path().join("checkpoint");
    let mut bytes = fs::read(&ckp).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&ckp, &bytes).unwrap();
    let err = Store::open(d.path(), small_opts()).unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
    // Truncated checkpoint too.
    fs::write(&ckp, &bytes[..mid]).unwrap();
    let err = Store::open(d.path(), small_opts()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn truncating_a_closed_segment_or_below_the_checkpoint_is_an_error() {
    let f = fixture();
    let files: Vec<PathBuf> = data_files(f.dir.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert!(files.len() >= 3, "fixture should span several segments, has {}", files.len());
    // A closed (not the newest) segment cut short.
    let d = copy_dir(f.dir.path());
    let target = d.path().join(files[files.len() - 2].file_name().unwrap());
    let len = fs::metadata(&target).unwrap().len();
    fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(len - 100).unwrap();
    let res = Store::open(d.path(), small_opts());
    match res {
        Err(e) => assert_names_a_file(&e, d.path()),
        Ok(store) => assert!(read_all(&store, &f, d.path()) > 0, "cut segment went unnoticed"),
    }
}

#[test]
fn torn_tail_is_cut_back_to_the_last_whole_version() {
    let f = fixture();
    let last = newest_segment(f.dir.path());
    // 1. Half a record appended (a write cut short by a kill).
    // 2. Zeros appended (blocks allocated but never written).
    // 3. Valid-looking header with a body running past the end.
    let tails: [Vec<u8>; 3] = [vec![40, 0, 0, 0, 1, 2, 3], vec![0u8; 300], {
        let mut t = 500u32.to_le_bytes().to_vec();
        t.extend_from_slice(&[9, 9, 9, 9, 1, 2, 3]);
        t
    }];
    for tail in tails {
        let d = copy_dir(f.dir.path());
        let target = d.path().join(last.file_name().unwrap());
        let before = fs::metadata(&target).unwrap().len();
        fs::OpenOptions::new().append(true).open(&target).unwrap().write_all(&tail).unwrap();
        let store = Store::open(d.path(), small_opts()).unwrap();
        assert_eq!(store.latest_version(), Some(12));
        assert_eq!(read_all(&store, &f, d.path()), 0);
        assert_eq!(fs::metadata(&target).unwrap().len(), before, "tail not cut back");
        // And the store keeps working after the repair.
        store.apply(13, vec![(f.keys[0], Some(Bytes::from_static(b"after")))]).unwrap();
        drop(store);
        let store = Store::open(d.path(), small_opts()).unwrap();
        assert_eq!(store.get(&f.keys[0]).unwrap(), Some(Bytes::from_static(b"after")));
    }
}

#[test]
fn truncating_the_newest_segment_rolls_back_to_a_whole_version() {
    // A cut inside the newest segment past the checkpoint cannot be told from a torn
    // append: the store opens at the last whole version left, with exactly its root.
    let f = fixture();
    let last = newest_segment(f.dir.path());
    let len = fs::metadata(&last).unwrap().len();
    let mut r = rng(23);
    for _ in 0..20 {
        let d = copy_dir(f.dir.path());
        let target = d.path().join(last.file_name().unwrap());
        let cut = r.random_range(16..len);
        fs::OpenOptions::new().write(true).open(&target).unwrap().set_len(cut).unwrap();
        match Store::open(d.path(), small_opts()) {
            Ok(store) => {
                let v = store.latest_version().unwrap();
                assert!(v >= 6, "versions in the checkpoint survive");
                assert_eq!(read_all(&store, &f, d.path()), 0);
            }
            Err(e) => assert_names_a_file(&e, d.path()),
        }
    }
}

/// Writes three versions that each set all of 400 keys to new 100-byte values (each write
/// spans many blocks), then, on copies of the store, applies `damage` to the bytes of
/// version 3's write and of version 2's (`from..to` of the segment). Damage to the last
/// write, which was never acknowledged, rolls it back: the store opens at version 2 with
/// exactly its root and values, cut back to its end, and goes on. The same damage under
/// version 3, which came after version 2 was acknowledged, is reported.
fn damage_to_the_last_write_rolls_it_back(
    retain_versions: Option<u64>,
    seed: u64,
    damage: impl Fn(&mut [u8], usize, usize),
) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        fsync: FsyncPolicy::Always,
        segment_bytes: 64 << 20,
        checkpoint_bytes: 1 << 40,
        retain_versions,
        ..small_opts()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(seed);
    let keys = key_pool(&mut r, 400);
    let seg = newest_segment(dir.path());
    let mut ends = vec![fs::metadata(&seg).unwrap().len()];
    let mut models = vec![BTreeMap::new()];
    for v in 1..=3u8 {
        let b: Vec<(B256, Option<Bytes>)> =
            keys.iter().map(|k| (*k, Some(Bytes::from(vec![v; 100])))).collect();
        let mut m = models.last().unwrap().clone();
        apply_model(&mut m, &b);
        store.apply(models.len() as u64, b).unwrap();
        models.push(m);
        ends.push(fs::metadata(&seg).unwrap().len());
    }
    drop(store);
    for v in [3usize, 2] {
        let d = copy_dir(dir.path());
        let target = d.path().join(seg.file_name().unwrap());
        let mut bytes = fs::read(&target).unwrap();
        damage(&mut bytes, ends[v - 1] as usize, ends[v] as usize);
        fs::write(&target, &bytes).unwrap();
        if v == 2 {
            match Store::open(d.path(), opts.clone()) {
                Err(e) => assert_names_a_file(&e, d.path()),
                Ok(_) => panic!("damage under version 3 went unreported"),
            }
            continue;
        }
        let store = Store::open(d.path(), opts.clone()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.latest_version(), Some(2));
        assert_eq!(store.root(2).unwrap(), naive_root(&models[2]));
        for k in &keys {
            assert_eq!(store.get(k).unwrap().as_ref(), models[2].get(k));
        }
        assert_eq!(fs::metadata(&target).unwrap().len(), ends[2], "torn write not cut back");
        store.apply(3, vec![(keys[0], Some(Bytes::from_static(b"again")))]).unwrap();
        drop(store);
        let store = Store::open(d.path(), opts.clone()).unwrap();
        assert_eq!(store.latest_version(), Some(3));
        assert_eq!(store.get(&keys[0]).unwrap(), Some(Bytes::from_static(b"again")));
    }
}

/// A power loss during the last write's sync that kept its later blocks (the commit record)
/// and lost an earlier one: that version was never acknowledged, so it is rolled back.
/// Before stop 28 this was reported as corruption. (With retention, so that the writes
/// prune as well, in their commit records.)
#[test]
fn a_write_torn_in_its_middle_rolls_back_only_when_it_is_the_last() {
    damage_to_the_last_write_rolls_it_back(Some(2), 31, |bytes, from, to| {
        assert!(to - from > 4096, "the write should span several blocks");
        // A 512-byte block a quarter into the write: well before its commit record.
        let at = from + (to - from) / 4;
        bytes[at..at + 512].fill(0);
    });
}

/// A power loss during the sync of the last write that kept its first blocks and lost the
/// rest (the file already had its new length, so the lost blocks read as zeros): the lost
/// part begins at a block boundary inside some record, not at a record. Until stop 40 only
/// a loss beginning exactly at a record was recognized, and this store refused to open.
#[test]
fn a_write_whose_end_a_power_loss_lost_rolls_back() {
    damage_to_the_last_write_rolls_it_back(None, 32, |bytes, from, to| {
        // Lost from a block boundary halfway into the write to its end.
        let at = (from + (to - from) / 2).next_multiple_of(512);
        bytes[at..to].fill(0);
    });
}

/// A commit record as a value would carry it: kind 5 (the unsealed kind), `version`, a made
/// up root, an `intact_before` past everything, no prune, no deletions, with a valid frame.
fn fake_commit(version: u64, intact_before: u64) -> Vec<u8> {
    let mut body = vec![5u8];
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&[0xee; 32]);
    body.extend_from_slice(&intact_before.to_le_bytes());
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    let len = (body.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(&body);
    let mut rec = len.to_vec();
    rec.extend_from_slice(&h.finalize().to_le_bytes());
    rec.extend_from_slice(&body);
    rec
}

/// A value holding a valid-looking commit record, written in a write a kill cuts short after
/// it: recovery's search for a commit after the torn record must not take the value's (the
/// store's commits carry its seal). Before stop 38 it did, judged the tail by it, and the
/// store refused to open (`Corrupt`) after an ordinary crash.
#[test]
fn a_commit_record_inside_a_value_cannot_stop_the_store_opening() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 64 << 20, checkpoint_bytes: 1 << 40, ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(41);
    let keys = key_pool(&mut r, 50);
    let mut m = BTreeMap::new();
    let b = random_batch(&mut r, &keys, 40);
    apply_model(&mut m, &b);
    store.apply(1, b).unwrap();
    let fake = fake_commit(2, u64::MAX);
    let mut value = fake.clone();
    value.extend_from_slice(&[7u8; 300]);
    store.apply(2, vec![(keys[0], Some(Bytes::from(value)))]).unwrap();
    drop(store);
    let seg = newest_segment(dir.path());
    let bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(fake.len()).position(|w| w == fake.as_slice()).unwrap();
    // Cut inside the value, after the fake: the page record holding it runs past the end.
    let d = copy_dir(dir.path());
    let target = d.path().join(seg.file_name().unwrap());
    fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap()
        .set_len((at + fake.len() + 100) as u64)
        .unwrap();
    let store = Store::open(d.path(), opts.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.latest_version(), Some(1));
    assert_eq!(store.root(1).unwrap(), naive_root(&m));
    for k in &keys {
        assert_eq!(store.get(k).unwrap().as_ref(), m.get(k));
    }
}

/// With `FsyncPolicy::Never` a checkpoint syncs the log it describes first, so a power loss
/// cannot leave segments shorter than the checkpoint says (before stop 28 `open` then refused
/// the store).
#[test]
fn an_unsynced_store_syncs_its_log_before_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { checkpoint_bytes: 1 << 40, ..small_opts() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut r = rng(32);
    let keys = key_pool(&mut r, 50);
    store.apply(1, random_batch(&mut r, &keys, 30)).unwrap();
    let before = store.io_stats().syncs;
    store.checkpoint().unwrap();
    assert!(store.io_stats().syncs > before, "the checkpoint did not sync the log");
}

/// With `FsyncPolicy::Never` an open syncs the newest segment holding records, as it does
/// with `Always` (since stop 58): its checkpoints sync only the segment they replay from,
/// so after a rotation whose directory sync failed (an empty newer segment), the older
/// segment's tail written before a kill was never synced and the next checkpoint would
/// describe it.
#[test]
fn an_unsynced_store_syncs_what_it_replayed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { checkpoint_bytes: 1 << 40, ..small_opts() };
    assert_eq!(opts.fsync, FsyncPolicy::Never);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(34);
    let keys = key_pool(&mut r, 50);
    store.apply(1, random_batch(&mut r, &keys, 30)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.latest_version(), Some(1));
    assert!(store.io_stats().syncs > 0, "the open synced nothing it replayed");
}

/// With `FsyncPolicy::Always` too a checkpoint syncs the log it describes: garbage
/// collection appends its copies and syncs them only at its end, and an explicit checkpoint
/// can come in between (before stop 38 only `Never` synced, and a power loss could leave the
/// segment shorter than the checkpoint's replay offset, which `open` refuses).
#[test]
fn a_checkpoint_syncs_the_log_it_describes_under_always_too() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { fsync: FsyncPolicy::Always, checkpoint_bytes: 1 << 40, ..small_opts() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut r = rng(33);
    let keys = key_pool(&mut r, 50);
    store.apply(1, random_batch(&mut r, &keys, 30)).unwrap();
    let before = store.io_stats().syncs;
    store.checkpoint().unwrap();
    assert!(store.io_stats().syncs > before, "the checkpoint did not sync the log");
}

/// A segment rotation that fails after a version was published does not fail that `apply`
/// (the version is committed); it is counted and retried after the next write.
#[test]
fn a_failed_rotation_does_not_fail_the_committed_version() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 4 << 10, ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    // The next segment cannot be created: a directory sits where its temporary file goes.
    let blocker = dir.path().join("seg-00000002.log.tmp");
    fs::create_dir(&blocker).unwrap();
    let mut r = rng(33);
    let keys = key_pool(&mut r, 100);
    // 100 values of 100 bytes: past the 4 KiB segment size.
    let b: Vec<(B256, Option<Bytes>)> =
        keys.iter().map(|k| (*k, Some(Bytes::from(vec![1; 100])))).collect();
    let mut m = BTreeMap::new();
    apply_model(&mut m, &b);
    let root = store.apply(1, b).expect("the version is committed");
    assert_eq!(root, naive_root(&m));
    assert_eq!(store.io_stats().housekeeping_failures, 1);
    assert_eq!(newest_segment(dir.path()).file_name().unwrap(), "seg-00000001.log");
    fs::remove_dir(&blocker).unwrap();
    let b = random_batch(&mut r, &keys, 60);
    apply_model(&mut m, &b);
    store.apply(2, b).unwrap();
    assert_eq!(newest_segment(dir.path()).file_name().unwrap(), "seg-00000002.log");
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.latest_version(), Some(2));
    assert_eq!(store.root(2).unwrap(), naive_root(&m));
}

/// A segment creation that failed after its rename (syncing the directory) left an empty
/// next segment: the next rotation uses it rather than failing on it for good, which left
/// the older segment written to while it was no longer the newest on disk.
#[test]
fn a_rotation_takes_the_empty_segment_a_failed_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 4 << 10, ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    // What the failed creation left: a whole header (docs/store.md §5), no records.
    let mut header = b"FAROLSEG".to_vec();
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    fs::write(dir.path().join("seg-00000002.log"), &header).unwrap();
    let mut r = rng(34);
    let keys = key_pool(&mut r, 100);
    let mut m = BTreeMap::new();
    for v in 1..=2u8 {
        let b: Vec<(B256, Option<Bytes>)> =
            keys.iter().map(|k| (*k, Some(Bytes::from(vec![v; 100])))).collect();
        apply_model(&mut m, &b);
        store.apply(v.into(), b).unwrap();
    }
    assert_eq!(store.io_stats().housekeeping_failures, 0);
    let second = fs::metadata(dir.path().join("seg-00000002.log")).unwrap().len();
    assert!(second > header.len() as u64, "version 2 went to segment 2");
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.latest_version(), Some(2));
    assert_eq!(store.root(2).unwrap(), naive_root(&m));
}

/// A rotation whose directory sync failed left an empty newer segment while the writer
/// stayed on the older one, and the process was killed during its next write there: the
/// older segment's torn tail is cut as the newest's would be. Until stop 40 the store
/// refused to open.
#[test]
fn a_torn_tail_before_an_empty_newer_segment_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 64 << 20, checkpoint_bytes: 1 << 40, ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(35);
    let keys = key_pool(&mut r, 50);
    let mut m = BTreeMap::new();
    for v in 1..=3u8 {
        let b: Vec<(B256, Option<Bytes>)> =
            keys.iter().map(|k| (*k, Some(Bytes::from(vec![v; 10])))).collect();
        apply_model(&mut m, &b);
        store.apply(v.into(), b).unwrap();
    }
    drop(store);
    let first = dir.path().join("seg-00000001.log");
    let whole = fs::metadata(&first).unwrap().len();
    // The start of a record that runs past the end of the file.
    let mut bytes = fs::read(&first).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    fs::write(&first, &bytes).unwrap();
    let mut header = b"FAROLSEG".to_vec();
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    let second = dir.path().join("seg-00000002.log");
    assert!(!second.exists(), "the three versions should fit in one segment");
    fs::write(&second, &header).unwrap();
    let store = Store::open(dir.path(), opts.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.latest_version(), Some(3));
    assert_eq!(store.root(3).unwrap(), naive_root(&m));
    assert_eq!(fs::metadata(&first).unwrap().len(), whole, "the torn tail was not cut");
    let b = vec![(keys[0], Some(Bytes::from_static(b"four")))];
    apply_model(&mut m, &b);
    store.apply(4, b).unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.latest_version(), Some(4));
    assert_eq!(store.root(4).unwrap(), naive_root(&m));
}

/// The checkpoint's replay point: (segment, offset), read from its file.
fn replay_point(dir: &Path) -> (u32, u64) {
    let b = fs::read(dir.join("checkpoint")).unwrap();
    // "FAROLCKP" ‖ format u32 ‖ has_latest u8 ‖ latest u64 ‖ oldest u64 ‖ replay_seg u32 ‖
    // replay_off u64.
    let seg = u32::from_le_bytes(b[29..33].try_into().unwrap());
    let off = u64::from_le_bytes(b[33..41].try_into().unwrap());
    (seg, off)
}

/// Segments that only the log after the checkpoint made dead are not removed at open: that
/// log may not be on the device (here `FsyncPolicy::Never`), and after a power loss the store
/// falls back to the checkpoint, which still reads them. Until stop 47 an open removed them,
/// and the store then came back from the power loss unable to read its pages.
#[test]
fn an_open_removes_no_segment_the_checkpoint_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 4 << 10, checkpoint_bytes: 1 << 40, ..small_opts() };
    let mut r = rng(47);
    let keys = key_pool(&mut r, 200);
    let mut m = BTreeMap::new();
    // Every version rewrites every key, and the last apply writes a checkpoint that refers to
    // pages in many segments (every version is kept).
    let store = Store::open(dir.path(), Options { checkpoint_bytes: 1, ..opts.clone() }).unwrap();
    for v in 1..=10u8 {
        let b: Vec<(B256, Option<Bytes>)> =
            keys.iter().map(|k| (*k, Some(Bytes::from(vec![v; 24])))).collect();
        apply_model(&mut m, &b);
        store.apply(v.into(), b).unwrap();
    }
    drop(store);
    let (replay_seg, replay_off) = replay_point(dir.path());
    assert!(replay_seg > 3, "the versions should span several segments");
    // Version 11 prunes every version before it, so every segment before the replay point is
    // dead for the log after the checkpoint, and not for the checkpoint. Larger segments: it
    // stays in the replay segment, unsynced (a rotation would sync it).
    let pruning = Options { retain_versions: Some(1), segment_bytes: 1 << 20, ..opts.clone() };
    let store = Store::open(dir.path(), pruning.clone()).unwrap();
    let b: Vec<(B256, Option<Bytes>)> =
        keys.iter().map(|k| (*k, Some(Bytes::from_static(b"eleven")))).collect();
    store.apply(11, b).unwrap();
    drop(store);
    drop(Store::open(dir.path(), pruning).unwrap());
    assert_eq!(replay_point(dir.path()), (replay_seg, replay_off), "no checkpoint since");
    // A power loss: the unsynced log after the checkpoint is gone.
    for f in data_files(dir.path()) {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(id) = name.strip_prefix("seg-").and_then(|n| n.strip_suffix(".log")) {
            let id: u32 = id.parse().unwrap();
            if id > replay_seg {
                fs::remove_file(&f).unwrap();
            }
        }
    }
    let replay = dir.path().join(format!("seg-{replay_seg:08}.log"));
    fs::OpenOptions::new().write(true).open(&replay).unwrap().set_len(replay_off).unwrap();
    let store = Store::open(dir.path(), opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.latest_version(), Some(10));
    assert_eq!(store.root(10).unwrap(), naive_root(&m));
    for k in &keys {
        assert_eq!(store.get_at(k, 10).unwrap_or_else(|e| panic!("{e}")), m.get(k).cloned());
    }
}

/// A segment missing from the log after the checkpoint fails the open, naming it: skipped,
/// the keys last written in it read older values (until stop 47).
#[test]
fn a_segment_missing_after_the_checkpoint_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 4 << 10, checkpoint_bytes: 1 << 40, ..small_opts() };
    let mut r = rng(48);
    let keys = key_pool(&mut r, 100);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for v in 1..=8u8 {
        let b: Vec<(B256, Option<Bytes>)> =
            keys.iter().map(|k| (*k, Some(Bytes::from(vec![v; 24])))).collect();
        store.apply(v.into(), b).unwrap();
    }
    drop(store);
    let third = dir.path().join("seg-00000003.log");
    assert!(dir.path().join("seg-00000005.log").exists(), "the versions should span segments");
    fs::remove_file(&third).unwrap();
    match Store::open(dir.path(), opts) {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(e.to_string().contains("seg-00000003.log"), "{e}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened with a segment missing"),
    }
}
