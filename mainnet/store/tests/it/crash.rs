//! Kill -9 at random points: a writer subprocess applies versions and acknowledges each one
//! on stdout; the parent kills it at a random moment, reopens the store, and checks that
//! the store is at a version at least as new as every acknowledged one, with exactly the
//! model's root and values. CI runs 20 kills; `FAROL_LONG=1` runs 1000.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use farol_primitives::{Bytes, B256};
use farol_store::{FsyncPolicy, Options, Store};
use rand::Rng;

use crate::common::{apply_model, key_pool, long_mode, naive_root, random_batch, rng};

const SEED: u64 = 0xfa201;

fn writer_opts(version_hint: u64) -> Options {
    Options {
        cache_bytes: 256 << 10,
        // Alternate sync policies between runs; a kill keeps what reached the OS either way.
        fsync: if version_hint.is_multiple_of(2) {
            FsyncPolicy::Never
        } else {
            FsyncPolicy::Always
        },
        retain_versions: Some(6),
        segment_bytes: 32 << 10,
        checkpoint_bytes: 128 << 10,
        background_gc: true,
        ..Options::default()
    }
}

fn keys() -> Vec<B256> {
    key_pool(&mut rng(SEED), 300)
}

/// The batch of version `v`: a pure function of the seed and `v`.
fn batch(keys: &[B256], v: u64) -> Vec<(B256, Option<Bytes>)> {
    random_batch(&mut rng(SEED ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15)), keys, 40)
}

/// The writer process. Only runs when the crash test starts it.
#[test]
#[ignore = "helper process of kill_dash_nine_at_random_points"]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("FAROL_CRASH_DIR") else { return };
    let keys = keys();
    let store = Store::open(&dir, writer_opts(std::process::id() as u64)).unwrap();
    let mut v = store.latest_version().unwrap_or(0);
    let out = std::io::stdout();
    loop {
        v += 1;
        store.apply(v, batch(&keys, v)).unwrap();
        use std::io::Write;
        let mut o = out.lock();
        writeln!(o, "ack {v}").unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn kill_dash_nine_at_random_points() {
    let kills = if long_mode() { 1000 } else { 20 };
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let exe = std::env::current_exe().unwrap();
    let mut r = rng(SEED);
    // Model state per version, computed forward as versions appear.
    let mut models: BTreeMap<u64, BTreeMap<B256, Bytes>> = BTreeMap::new();
    models.insert(0, BTreeMap::new());
    let mut acked = 0u64;
    for kill in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_writer_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FAROL_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("ack ").and_then(|s| s.parse::<u64>().ok()) {
                    let _ = tx.send(v);
                }
            }
        });
        // Wait for the writer to get going, then kill it at a random moment.
        let first = rx.recv_timeout(Duration::from_secs(30));
        assert!(first.is_ok(), "writer never acknowledged a version (kill {kill})");
        std::thread::sleep(Duration::from_micros(r.random_range(0..30_000)));
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("writer exited by itself ({status}): {err}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        for v in std::iter::once(first.unwrap()).chain(rx.try_iter()) {
            acked = acked.max(v);
        }

        let store =
            Store::open(dir.path(), Options { background_gc: false, ..writer_opts(0) }).unwrap();
        let latest = store.latest_version().unwrap();
        assert!(
            latest >= acked,
            "kill {kill}: acknowledged version {acked} lost (store at {latest})"
        );
        let (&top, _) = models.iter().next_back().unwrap();
        for v in top + 1..=latest {
            let mut m = models[&(v - 1)].clone();
            apply_model(&mut m, &batch(&keys, v));
            models.insert(v, m);
        }
        let m = &models[&latest];
        assert_eq!(store.root(latest).unwrap(), naive_root(m), "kill {kill}: root of {latest}");
        for k in &keys {
            assert_eq!(store.get(k).unwrap().as_ref(), m.get(k), "kill {kill}");
        }
        let oldest = store.oldest_version().unwrap();
        for v in oldest..latest {
            assert_eq!(store.root(v).unwrap(), naive_root(&models[&v]), "kill {kill}: root of {v}");
            let k = &keys[(v as usize * 13) % keys.len()];
            assert_eq!(store.get_at(k, v).unwrap().as_ref(), models[&v].get(k));
        }
        // Old models are no longer needed.
        models = models.split_off(&oldest.saturating_sub(1));
    }
}
