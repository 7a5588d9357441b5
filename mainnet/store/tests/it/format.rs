//! Format stability: a seeded workload's log segments, roots and proof bytes hash to a
//! checked-in value, so any change to the on-disk or proof format fails here. A deliberate
//! format change updates `EXPECTED` (and the format version in `docs/store.md`).

use std::collections::BTreeMap;

use farol_primitives::keccak256;
use farol_store::{Options, Store};

use crate::common::{key_pool, random_batch, rng, small_opts};

const EXPECTED: &str = "0x0a01574456e27bc3fd02e55303fed7fd71501022bd1b9f723d9c4ccfe06f9e28";

#[test]
fn formats_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    // Large checkpoint threshold: the checkpoint's map order is not part of the format.
    let opts = Options { checkpoint_bytes: 1 << 40, ..small_opts() };
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
