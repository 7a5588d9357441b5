//! Property test: random sequences of apply / get / get_at / prune / reopen / GC against a
//! reference model, with roots checked against the naive computation.

use std::collections::BTreeMap;

use farol_primitives::{Bytes, B256};
use farol_store::{verify, Store, StoreError};
use proptest::prelude::*;

use crate::common::{apply_model, key_pool, naive_root, rng, small_opts};

#[derive(Debug, Clone)]
enum Op {
    Apply(Vec<(usize, Option<Vec<u8>>)>),
    Prune(u8),
    Reopen,
    Gc,
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    let change =
        (0usize..48, prop::option::weighted(0.75, prop::collection::vec(any::<u8>(), 0..80)));
    prop_oneof![
        8 => prop::collection::vec(change, 0..24).prop_map(Op::Apply),
        1 => any::<u8>().prop_map(Op::Prune),
        1 => Just(Op::Reopen),
        1 => Just(Op::Gc),
        1 => Just(Op::Checkpoint),
    ]
}

fn check(
    store: &Store,
    history: &BTreeMap<u64, BTreeMap<B256, Bytes>>,
    keys: &[B256],
    oldest: u64,
) {
    for (&v, m) in history.range(oldest..) {
        assert_eq!(store.root(v).unwrap(), naive_root(m), "root of version {v}");
        for (i, k) in keys.iter().enumerate() {
            // All keys at the latest version, a sample at older ones.
            if Some(v) != store.latest_version() && i % 7 != 0 {
                continue;
            }
            let got = store.get_at(k, v).unwrap();
            assert_eq!(got.as_ref(), m.get(k), "key {i} at version {v}");
            if i % 5 == 0 {
                let proof = store.prove(k, v).unwrap();
                let root = naive_root(m);
                verify(&root, k, m.get(k).map(|b| &b[..]), &proof).unwrap();
            }
        }
    }
    if let Some(&v) = history.keys().next_back() {
        for k in keys {
            assert_eq!(store.get(k).unwrap().as_ref(), history[&v].get(k));
        }
    }
    for &v in history.range(..oldest).map(|(v, _)| v) {
        assert!(matches!(store.get_at(&keys[0], v), Err(StoreError::Pruned { .. })));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let keys = key_pool(&mut rng(seed), 48);
        let mut store = Store::open(dir.path(), small_opts()).unwrap();
        let mut history: BTreeMap<u64, BTreeMap<B256, Bytes>> = BTreeMap::new();
        let mut model = BTreeMap::new();
        let mut version = 0u64;
        let mut oldest = 0u64;
        for op in ops {
            match op {
                Op::Apply(changes) => {
                    version += 1 + (changes.len() as u64 % 3);
                    let batch: Vec<(B256, Option<Bytes>)> =
                        changes.into_iter().map(|(i, v)| (keys[i], v.map(Bytes::from))).collect();
                    // The root the batch would give over the oldest retained version and
                    // over the latest, computed without writing (checked unchanged below).
                    let older = history.range(oldest..).next();
                    if let Some((&v, m)) = older {
                        let mut then = m.clone();
                        apply_model(&mut then, &batch);
                        let got = store.root_with(v, batch.clone()).unwrap();
                        prop_assert_eq!(got, naive_root(&then), "over version {}", v);
                    }
                    apply_model(&mut model, &batch);
                    if let Some(latest) = store.latest_version() {
                        let got = store.snapshot(latest).unwrap().root_with(batch.clone()).unwrap();
                        prop_assert_eq!(got, naive_root(&model));
                    }
                    // A version its caller refuses (a block that executed differently) is
                    // not written: the reads and reopens below would see it.
                    let before = store.latest_version();
                    let mut other = batch.clone();
                    other.push((keys[seed as usize % keys.len()], Some(Bytes::from(vec![7u8; 3]))));
                    let mut refused = model.clone();
                    apply_model(&mut refused, &other);
                    let mut offered = None;
                    let (root, written) = store
                        .apply_if(version, other, |r| {
                            offered = Some(*r);
                            false
                        })
                        .unwrap();
                    prop_assert!(!written);
                    prop_assert_eq!(offered, Some(root));
                    prop_assert_eq!(root, naive_root(&refused));
                    prop_assert_eq!(store.latest_version(), before);
                    let (root, written) = store.apply_if(version, batch, |_| true).unwrap();
                    prop_assert!(written);
                    prop_assert_eq!(root, naive_root(&model));
                    history.insert(version, model.clone());
                }
                Op::Prune(back) => {
                    if let Some(latest) = store.latest_version() {
                        let below = latest.saturating_sub(back as u64 % 8).max(oldest);
                        store.prune(below).unwrap();
                        oldest = below;
                    }
                }
                Op::Reopen => {
                    drop(store);
                    store = Store::open(dir.path(), small_opts()).unwrap();
                }
                Op::Gc => {
                    store.collect_garbage().unwrap();
                }
                Op::Checkpoint => store.checkpoint().unwrap(),
            }
            check(&store, &history, &keys, oldest);
        }
    }
}

#[test]
fn duplicate_keys_in_one_batch_last_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let k = B256::repeat_byte(3);
    store
        .apply(
            1,
            vec![
                (k, Some(Bytes::from_static(b"a"))),
                (k, None),
                (k, Some(Bytes::from_static(b"c"))),
            ],
        )
        .unwrap();
    assert_eq!(store.get(&k).unwrap(), Some(Bytes::from_static(b"c")));
    store.apply(2, vec![(k, Some(Bytes::from_static(b"d"))), (k, None)]).unwrap();
    assert_eq!(store.get(&k).unwrap(), None);
    assert_eq!(store.root(2).unwrap(), B256::ZERO);
}

#[test]
fn versions_must_increase_and_values_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    store.apply(5, vec![]).unwrap();
    assert!(matches!(
        store.apply(5, vec![]),
        Err(StoreError::VersionNotIncreasing { version: 5, latest: 5 })
    ));
    assert!(matches!(store.apply(4, vec![]), Err(StoreError::VersionNotIncreasing { .. })));
    let big = Bytes::from(vec![0u8; farol_store::MAX_VALUE_LEN + 1]);
    assert!(matches!(
        store.apply(6, vec![(B256::ZERO, Some(big))]),
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert!(matches!(store.root(3), Err(StoreError::UnknownVersion(3))));
    assert!(matches!(store.root_with(3, vec![]), Err(StoreError::UnknownVersion(3))));
    assert!(matches!(store.root_with(9, vec![]), Err(StoreError::UnknownVersion(9))));
    assert!(matches!(store.get_at(&B256::ZERO, 9), Err(StoreError::UnknownVersion(9))));
    // The failed calls changed nothing.
    store.apply(6, vec![(B256::ZERO, Some(Bytes::from_static(b"ok")))]).unwrap();
    assert_eq!(store.latest_version(), Some(6));
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path(), small_opts()).unwrap();
    assert!(matches!(Store::open(dir.path(), small_opts()), Err(StoreError::Locked(_))));
}

#[test]
fn many_keys_deep_and_wide() {
    // Enough keys to fill the root and second-level pages and to split and collapse deep
    // pages, with retention-driven pruning and garbage collection along the way.
    let dir = tempfile::tempdir().unwrap();
    let opts = farol_store::Options { retain_versions: Some(3), ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(7);
    let keys = key_pool(&mut r, 3000);
    let mut model = BTreeMap::new();
    for v in 1..=30u64 {
        let batch = crate::common::random_batch(&mut r, &keys, 600);
        apply_model(&mut model, &batch);
        assert_eq!(store.apply(v, batch).unwrap(), naive_root(&model), "version {v}");
        if v % 10 == 0 {
            store.collect_garbage().unwrap();
        }
    }
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.root(30).unwrap(), naive_root(&model));
    for k in &keys {
        assert_eq!(store.get(k).unwrap().as_ref(), model.get(k));
    }
    assert_eq!(store.oldest_version(), Some(28));
}

/// `retain_versions: Some(n)` keeps the n newest versions, whatever their numbers: versions
/// need not be consecutive (until stop 40 it counted numbers, and versions 10, 20 and 30
/// with 3 kept left only 30).
#[test]
fn retention_counts_versions_not_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = farol_store::Options { retain_versions: Some(3), ..small_opts() };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    let mut r = rng(8);
    let keys = key_pool(&mut r, 50);
    let mut models = BTreeMap::new();
    let mut model = BTreeMap::new();
    for v in [10u64, 20, 30, 40] {
        let batch = crate::common::random_batch(&mut r, &keys, 20);
        apply_model(&mut model, &batch);
        store.apply(v, batch).unwrap();
        models.insert(v, naive_root(&model));
    }
    assert_eq!(store.oldest_version(), Some(20));
    for v in [20, 30, 40] {
        assert_eq!(store.root(v).unwrap(), models[&v], "version {v}");
    }
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.oldest_version(), Some(20));
    assert_eq!(store.root(20).unwrap(), models[&20]);
}
