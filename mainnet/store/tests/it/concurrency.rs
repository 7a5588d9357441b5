//! Readers at snapshots run while one writer applies the next versions.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use farol_primitives::{Bytes, B256};
use farol_store::{Options, Store, StoreError};
use rand::Rng;

use crate::common::{apply_model, key_pool, naive_root, random_batch, rng, small_opts};

#[test]
fn readers_see_their_snapshot_while_the_writer_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { retain_versions: Some(20), background_gc: true, ..small_opts() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut r = rng(31);
    let keys = key_pool(&mut r, 500);
    // Precompute every version's model so readers can check any of them.
    let mut models: Vec<BTreeMap<B256, Bytes>> = vec![BTreeMap::new()];
    let mut batches = Vec::new();
    for _ in 1..=120 {
        let b = random_batch(&mut r, &keys, 150);
        let mut m = models.last().unwrap().clone();
        apply_model(&mut m, &b);
        models.push(m);
        batches.push(b);
    }
    let models = Arc::new(models);
    let keys = Arc::new(keys);
    store.apply(1, batches[0].clone()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..3u64 {
        let (store, models, keys, done) =
            (store.clone(), models.clone(), keys.clone(), done.clone());
        readers.push(std::thread::spawn(move || {
            let mut r = rng(100 + t);
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let Some(latest) = store.latest_version() else { continue };
                let v = latest.saturating_sub(r.random_range(0..25)).max(1);
                let snap = match store.snapshot(v) {
                    Ok(s) => s,
                    Err(StoreError::Pruned { .. }) => continue,
                    Err(e) => panic!("snapshot {v}: {e}"),
                };
                let m = &models[v as usize];
                for _ in 0..20 {
                    let k = &keys[r.random_range(0..keys.len())];
                    match snap.get(k) {
                        Ok(got) => assert_eq!(got.as_ref(), m.get(k), "key at version {v}"),
                        // Pruned under our feet: allowed, never a wrong answer.
                        Err(StoreError::Pruned { .. }) => break,
                        Err(e) => panic!("read at {v}: {e}"),
                    }
                    checks += 1;
                }
                match snap.root() {
                    Ok(root) => assert_eq!(root, naive_root(m)),
                    Err(StoreError::Pruned { .. }) => {}
                    Err(e) => panic!("root at {v}: {e}"),
                }
            }
            checks
        }));
    }
    for (i, b) in batches.iter().enumerate().skip(1) {
        store.apply(i as u64 + 1, b.clone()).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(store.root(120).unwrap(), naive_root(&models[120]));
}
