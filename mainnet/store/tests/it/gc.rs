//! Pruning and garbage collection: space comes back, retained versions stay intact, and
//! collection survives reopening.

use std::collections::BTreeMap;

use farol_primitives::{Bytes, B256};
use farol_store::{Options, Store, StoreError};

use crate::common::{apply_model, key_pool, naive_root, random_batch, rng, small_opts};

#[test]
fn prune_and_collect_reclaim_space_and_keep_retained_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let mut r = rng(41);
    let keys = key_pool(&mut r, 400);
    let mut models: BTreeMap<u64, BTreeMap<B256, Bytes>> = BTreeMap::new();
    let mut m = BTreeMap::new();
    for v in 1..=60u64 {
        let b = random_batch(&mut r, &keys, 200);
        apply_model(&mut m, &b);
        store.apply(v, b).unwrap();
        models.insert(v, m.clone());
    }
    let before = store.disk_usage().unwrap();
    assert_eq!(
        store.collect_garbage().unwrap().segments_removed,
        0,
        "nothing is dead before pruning"
    );
    store.prune(55).unwrap();
    let stats = store.collect_garbage().unwrap();
    let after = store.disk_usage().unwrap();
    assert!(stats.segments_removed > 0, "{stats:?}");
    assert!(after * 2 < before, "disk usage {before} -> {after}");
    assert!(matches!(store.get_at(&keys[0], 54), Err(StoreError::Pruned { .. })));
    let check = |store: &Store| {
        for v in 55..=60u64 {
            assert_eq!(store.root(v).unwrap(), naive_root(&models[&v]));
            for k in &keys {
                assert_eq!(store.get_at(k, v).unwrap().as_ref(), models[&v].get(k));
            }
        }
    };
    check(&store);
    drop(store);
    let store = Store::open(dir.path(), small_opts()).unwrap();
    check(&store);
    assert_eq!(store.oldest_version(), Some(55));
}

#[test]
fn retention_bounds_disk_usage_under_a_long_run() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { retain_versions: Some(4), background_gc: true, ..small_opts() };
    let store = Store::open(dir.path(), opts).unwrap();
    let mut r = rng(42);
    let keys = key_pool(&mut r, 300);
    let mut m = BTreeMap::new();
    let mut peak_late = 0;
    for v in 1..=400u64 {
        let b = random_batch(&mut r, &keys, 60);
        apply_model(&mut m, &b);
        assert_eq!(store.apply(v, b).unwrap(), naive_root(&m));
        if v > 200 {
            peak_late = peak_late.max(store.disk_usage().unwrap());
        }
    }
    store.collect_garbage().unwrap();
    let live: usize = m.values().map(|v| v.len() + 40).sum();
    // Bounded by a small multiple of the live data plus a few segments, not by history.
    assert!(peak_late < (live as u64) * 8 + (1 << 20), "peak {peak_late} for {live} live bytes");
    assert_eq!(store.oldest_version(), Some(397));
}

#[test]
fn reopen_right_after_drop_while_background_work_is_queued() {
    // Dropping the last handle joins the background worker, so the directory lock is free
    // the moment `drop` returns, even with a collection or checkpoint in flight.
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        retain_versions: Some(2),
        background_gc: true,
        checkpoint_bytes: 8 << 10,
        ..small_opts()
    };
    let mut r = rng(43);
    let keys = key_pool(&mut r, 200);
    let mut m = BTreeMap::new();
    let mut v = 0u64;
    for round in 0..30 {
        let store =
            Store::open(dir.path(), opts.clone()).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(store.root(v.max(1)).ok(), (v > 0).then(|| naive_root(&m)));
        for _ in 0..4 {
            v += 1;
            let b = random_batch(&mut r, &keys, 80);
            apply_model(&mut m, &b);
            store.apply(v, b).unwrap();
        }
        let reader = store.clone();
        drop(store);
        assert_eq!(reader.get(&keys[0]).unwrap().as_ref(), m.get(&keys[0]));
        drop(reader);
    }
}

/// A floor set with `keep_from` keeps its version and the ones after it through any number of
/// writes under `retain_versions`, also after a reopen; lifted, the next write prunes as the
/// setting says. Version 0 can be kept too.
#[test]
fn a_kept_floor_outlasts_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { retain_versions: Some(3), ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(43);
    let keys = key_pool(&mut r, 50);
    let mut m = BTreeMap::new();
    let mut at_2 = BTreeMap::new();
    store.keep_from(Some(2));
    for v in 0..=20u64 {
        let b = random_batch(&mut r, &keys, 20);
        apply_model(&mut m, &b);
        store.apply(v, b).unwrap();
        if v == 2 {
            at_2 = m.clone();
        }
    }
    assert_eq!(store.oldest_version(), Some(2));
    assert_eq!(store.root(2).unwrap(), naive_root(&at_2));
    drop(store);
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(store.oldest_version(), Some(2), "kept after a reopen");
    assert_eq!(store.root(2).unwrap(), naive_root(&at_2));
    // Lifted: the next write keeps the three newest.
    store.keep_from(None);
    store.apply(21, Vec::new()).unwrap();
    assert_eq!(store.oldest_version(), Some(19));
    // Version 0 is a floor like any other.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    store.keep_from(Some(0));
    for v in 0..10u64 {
        store.apply(v, random_batch(&mut r, &keys, 5)).unwrap();
    }
    assert_eq!(store.oldest_version(), Some(0));
}
