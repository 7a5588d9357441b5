//! I/O errors at every point: a writer subprocess (the test binary itself) runs a fixed
//! workload (30 versions applied with every write synced, segment rotations, retention,
//! garbage collection and checkpoints) under `strace`, whose `--inject` makes one chosen
//! system call on the store's files fail as a failing or full disk would: a segment's sync
//! (`fdatasync`) with EIO, once or from then on; a full sync (`fsync`: directories,
//! checkpoints, the seal, a cut-back) with EIO; a segment's write (`pwrite64`) with ENOSPC,
//! alone or with every truncation that would cut it back failing; a new file's write with
//! ENOSPC; a rename with EIO, once or from then on. A first traced run without faults counts
//! the calls of each kind; the test then fails each of them in turn, one run each (about 230
//! runs). The writer retries a failed `apply` once, then opens the store again (as a
//! restarted node would) and goes on. Checked each time: the writer never panics; after a
//! single failed call it still gets every version through; and the store, opened again on a
//! healthy disk, holds every version the writer acknowledged, with the model's root and
//! values at each version it keeps.
//!
//! An injected call fails without doing anything, so this tests how errors are handled, not
//! the rules for what a real failure may also do (a short write's partial bytes, pages a
//! failed sync dropped): those are covered by the corruption and crash tests' damaged and
//! cut files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use farol_primitives::{Bytes, B256};
use farol_store::{FsyncPolicy, Options, Store};

use crate::common::{apply_model, key_pool, naive_root, random_batch, rng};

const SEED: u64 = 0x10fa;
/// Versions the writer applies.
const VERSIONS: u64 = 30;

fn opts() -> Options {
    Options {
        cache_bytes: 64 << 10,
        fsync: FsyncPolicy::Always,
        retain_versions: Some(5),
        segment_bytes: 8 << 10,
        checkpoint_bytes: 32 << 10,
        background_gc: false,
        ..Options::default()
    }
}

fn keys() -> Vec<B256> {
    key_pool(&mut rng(SEED), 200)
}

/// The batch of version `v`: a pure function of the seed and `v`.
fn batch(keys: &[B256], v: u64) -> Vec<(B256, Option<Bytes>)> {
    random_batch(&mut rng(SEED ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)), keys, 30)
}

/// The writer process. Only runs when the fault test starts it (`farol_faults::run`).
#[test]
#[ignore = "helper process of io_errors_never_lose_an_acknowledged_version"]
fn io_fault_child() {
    let (Some(out), Ok(dir)) =
        (farol_faults::Reporter::from_env(), std::env::var("FAROL_IOFAULT_DIR"))
    else {
        return;
    };
    let say = |m: String| out.say(m);
    let keys = keys();
    // A store that failed to open, or refuses writes after a failure it could not undo, is
    // opened again, as a node restarted by its supervisor would.
    let open = || match Store::open(&dir, opts()) {
        Ok(s) => Some(s),
        Err(e) => {
            say(format!("err open: {e}"));
            Store::open(&dir, opts()).map_err(|e| say(format!("err open again: {e}"))).ok()
        }
    };
    let Some(mut store) = open() else { return };
    for v in 1..=VERSIONS {
        if let Err(e) = store.apply(v, batch(&keys, v)) {
            say(format!("err apply {v}: {e}"));
            if let Err(e) = store.apply(v, batch(&keys, v)) {
                say(format!("err again {v}: {e}"));
                drop(store);
                let Some(s) = open() else { return };
                store = s;
                // The failed `apply` may have reached the disk after all.
                if store.latest_version() < Some(v) {
                    if let Err(e) = store.apply(v, batch(&keys, v)) {
                        return say(format!("err after reopening {v}: {e}"));
                    }
                }
            }
        }
        say(format!("ack {v}"));
        if v % 6 == 0 {
            if let Err(e) = store.collect_garbage() {
                say(format!("err gc {v}: {e}"));
            }
        }
        if v % 10 == 0 {
            if let Err(e) = store.checkpoint() {
                say(format!("err checkpoint {v}: {e}"));
            }
        }
    }
}

/// One kind of fault: the system call that fails, how, and what else fails with it.
struct Kind {
    name: &'static str,
    call: &'static str,
    error: &'static str,
    /// Every call from the chosen one on fails, not just that one.
    from_then_on: bool,
    /// Another call that always fails, and its errno (the cut-back of a failed write).
    also: Option<(&'static str, &'static str)>,
}

const fn once(name: &'static str, call: &'static str, error: &'static str) -> Kind {
    Kind { name, call, error, from_then_on: false, also: None }
}

const KINDS: &[Kind] = &[
    // Appends' syncs (and garbage collection's).
    once("a sync of a segment", "fdatasync", "EIO"),
    Kind { from_then_on: true, ..once("every sync of a segment from one on", "fdatasync", "EIO") },
    // The directory's, checkpoints' and the seal's syncs, and a cut-back's.
    once("a full sync", "fsync", "EIO"),
    // Appends and garbage collection's copies.
    once("a write to a segment", "pwrite64", "ENOSPC"),
    Kind {
        also: Some(("ftruncate", "EIO")),
        ..once("a write to a segment whose cut-back fails", "pwrite64", "ENOSPC")
    },
    // Checkpoints and the seal.
    once("a write of a new file", "write", "ENOSPC"),
    once("a rename", "rename", "EIO"),
    Kind { from_then_on: true, ..once("every rename from one on", "rename", "EIO") },
];

/// The paths a store in `dir` may touch: `strace -P` takes exact paths.
fn store_paths(dir: &Path) -> Vec<PathBuf> {
    let mut p: Vec<PathBuf> = (0..=64).map(|i| dir.join(format!("seg-{i:08}.log"))).collect();
    for name in ["checkpoint", "checkpoint.tmp", "seal", "seal.tmp", "LOCK"] {
        p.push(dir.join(name));
    }
    p.push(dir.to_path_buf());
    p
}

/// What one run of the writer acknowledged, and the calls traced.
struct Run {
    acked: u64,
    errors: Vec<String>,
    calls: usize,
}

/// Runs the writer on a fresh store in `dir` under `strace` tracing `traced` on the
/// store's files, with `inject` rules.
fn run_writer(dir: &Path, traced: &str, inject: &[String]) -> Run {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir).unwrap();
    let out = farol_faults::run(&farol_faults::Run {
        exe: std::env::current_exe().unwrap(),
        helper: "io_faults::io_fault_child",
        dir,
        traced,
        paths: &store_paths(&store_dir),
        inject,
        env: &[("FAROL_IOFAULT_DIR", &store_dir)],
    });
    let acked =
        out.said.iter().filter_map(|m| m.strip_prefix("ack ")?.parse().ok()).max().unwrap_or(0);
    let errors = out.said.into_iter().filter(|m| m.starts_with("err ")).collect();
    Run { acked, errors, calls: out.calls }
}

/// Opens the store in `dir` on a healthy disk and checks it against the models.
fn check(dir: &Path, acked: u64, models: &BTreeMap<u64, BTreeMap<B256, Bytes>>, what: &str) {
    let keys = keys();
    let store = Store::open(dir.join("store"), opts())
        .unwrap_or_else(|e| panic!("{what}: the store does not open again: {e}"));
    let Some(latest) = store.latest_version() else {
        assert_eq!(acked, 0, "{what}: acknowledged version {acked} lost (the store is empty)");
        return;
    };
    assert!(latest >= acked, "{what}: acknowledged version {acked} lost (store at {latest})");
    let m = &models[&latest];
    assert_eq!(store.root(latest).unwrap(), naive_root(m), "{what}: root of {latest}");
    for k in &keys {
        assert_eq!(store.get(k).unwrap().as_ref(), m.get(k), "{what}: a value at {latest}");
    }
    let oldest = store.oldest_version().unwrap_or(latest);
    for v in oldest..latest {
        assert_eq!(store.root(v).unwrap(), naive_root(&models[&v]), "{what}: root of {v}");
    }
}

#[test]
fn io_errors_never_lose_an_acknowledged_version() {
    let keys = keys();
    let mut models: BTreeMap<u64, BTreeMap<B256, Bytes>> = BTreeMap::new();
    let mut m = BTreeMap::new();
    models.insert(0, m.clone());
    for v in 1..=VERSIONS {
        apply_model(&mut m, &batch(&keys, v));
        models.insert(v, m.clone());
    }
    for kind in KINDS {
        // How many runs' faults failed an operation: a kind whose faults never did would be
        // errors swallowed (an injected call does nothing, so nothing else would tell).
        let mut failed = 0;
        // The run without faults: every version acknowledged; how many calls of this kind.
        let dir = tempfile::tempdir().unwrap();
        let clean = run_writer(dir.path(), kind.call, &[]);
        assert!(clean.errors.is_empty(), "{}: {:?}", kind.name, clean.errors);
        assert_eq!(clean.acked, VERSIONS);
        check(dir.path(), VERSIONS, &models, kind.name);
        let calls = clean.calls;
        assert!(calls > 0, "{}: no call traced", kind.name);
        for k in 1..=calls {
            let what = format!("{} failing, call {k} of {calls}", kind.name);
            let when = if kind.from_then_on { format!("{k}+") } else { k.to_string() };
            let mut traced = kind.call.to_string();
            let mut inject = vec![format!("{}:error={}:when={when}", kind.call, kind.error)];
            if let Some((call, error)) = kind.also {
                traced = format!("{traced},{call}");
                inject.push(format!("{call}:error={error}"));
            }
            let dir = tempfile::tempdir().unwrap();
            let run = run_writer(dir.path(), &traced, &inject);
            if !run.errors.is_empty() {
                failed += 1;
            }
            // One failed call: the writer gets every version through, retrying, or
            // opening the store again.
            if !kind.from_then_on {
                assert_eq!(run.acked, VERSIONS, "{what}: {:?}", run.errors);
            }
            check(dir.path(), run.acked, &models, &what);
        }
        assert!(failed > 0, "{}: no fault failed an operation", kind.name);
    }
}
