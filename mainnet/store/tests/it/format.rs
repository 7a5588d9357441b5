//! Format stability: a seeded workload's log segments, roots and proof bytes hash to a
//! checked-in value, so any change to the on-disk or proof format fails here. A deliberate
//! format change updates `EXPECTED` (and the format version in `docs/store.md`).

use std::collections::BTreeMap;

use farol_primitives::keccak256;
use farol_store::{Options, Store};

use crate::common::{key_pool, random_batch, rng, small_opts};

const EXPECTED: &str = "0x42a92b7823741d01496fcd4252c3df50e43d75f2f8a5051795ccf5f4af0c16b2";

#[test]
fn formats_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    // Large checkpoint threshold: the checkpoint's map order is not part of the format.
    let opts = Options { checkpoint_bytes: 1 << 40, ..small_opts() };
    // A fixed seal (a new store's is random; every commit record carries it).
    let mut seal = b"FAROLSEL".to_vec();
    seal.extend_from_slice(&0x5ea1_5ea1_5ea1_5ea1u64.to_le_bytes());
    let crc = crc32fast::hash(&seal);
    seal.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("seal"), &seal).unwrap();
    let store = Store::open(dir.path(), opts).unwrap();
    let mut r = rng(99);
    let keys = key_pool(&mut r, 300);
    let mut transcript = Vec::new();
    for v in 1..=12u64 {
        let root = store.apply(v, random_batch(&mut r, &keys, 120)).unwrap();
        transcript.extend_from_slice(root.as_slice());
    }
    for k in keys.iter().step_by(7) {
        transcript.extend_from_slice(&store.prove(k, 12).unwrap().encode());
        transcript.extend_from_slice(&store.prove(k, 5).unwrap().encode());
    }
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.ends_with(".log") {
            files.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    assert!(files.len() > 2, "the workload should span several segments");
    for (name, bytes) in &files {
        transcript.extend_from_slice(name.as_bytes());
        transcript.extend_from_slice(bytes);
    }
    let got = keccak256(&transcript).to_string();
    assert_eq!(got, EXPECTED, "on-disk or proof format changed: new fingerprint {got}");
}

/// The largest records the writer can produce read back: a page of 256 maximal values (the
/// keys share three bytes, so one depth-3 page holds them all) and a commit that deletes
/// them all at once. Before stop 27 the reader's bound was below the full page's size, so a
/// store holding it failed on the next write that read the page, and on reopening.
#[test]
fn the_largest_records_read_back() {
    use farol_primitives::{Bytes, B256};
    use farol_store::MAX_VALUE_LEN;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options { segment_bytes: 64 << 20, ..small_opts() };
    let key = |i: usize| {
        let mut k = [7u8; 32];
        k[3] = i as u8;
        B256::from(k)
    };
    let value = |i: usize| Bytes::from(vec![i as u8; MAX_VALUE_LEN]);
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        store.apply(1, (0..256).map(|i| (key(i), Some(value(i))))).unwrap();
        // Changing one value reads the full page back.
        store.apply(2, [(key(9), Some(Bytes::from_static(b"x")))]).unwrap();
        assert_eq!(store.get(&key(200)).unwrap(), Some(value(200)));
    }
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(store.get(&key(17)).unwrap(), Some(value(17)));
    // Many deletions in one version: a large commit record.
    let many: Vec<(B256, Option<Bytes>)> = (0..200_000u32)
        .map(|i| (keccak256(i.to_le_bytes()), Some(Bytes::from_static(b"v"))))
        .collect();
    store.apply(3, many.clone()).unwrap();
    store.apply(4, many.iter().map(|(k, _)| (*k, None))).unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.latest_version(), Some(4));
    assert_eq!(store.get(&many[5].0).unwrap(), None);
}
