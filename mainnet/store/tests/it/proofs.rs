//! Proofs verify for present and absent keys, and fail for any tampered byte.

use std::collections::BTreeMap;

use farol_primitives::{Bytes, B256};
use farol_store::{verify, Proof, Store, Terminal};

use crate::common::{apply_model, key_pool, naive_root, random_batch, rng, small_opts};

#[test]
fn proofs_verify_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let mut r = rng(11);
    let keys = key_pool(&mut r, 400);
    let mut model = BTreeMap::new();
    for v in 1..=5 {
        let batch = random_batch(&mut r, &keys[..300], 300);
        apply_model(&mut model, &batch);
        store.apply(v, batch).unwrap();
    }
    let root = store.root(5).unwrap();
    assert_eq!(root, naive_root(&model));
    let mut present = 0;
    let mut absent_at_leaf = 0;
    for (i, k) in keys.iter().enumerate() {
        let value = model.get(k);
        let proof = store.prove(k, 5).unwrap();
        let bytes = proof.encode();
        let decoded = Proof::decode(&bytes).unwrap();
        assert_eq!(decoded, proof);
        verify(&root, k, value.map(|v| &v[..]), &decoded).unwrap();
        match (&proof.terminal, value) {
            (_, Some(_)) => present += 1,
            (Terminal::Leaf { .. }, None) => absent_at_leaf += 1,
            _ => {}
        }
        // The opposite claim fails.
        let other = Bytes::from_static(b"not the value");
        let wrong = if value.is_some() { None } else { Some(&other[..]) };
        assert!(verify(&root, k, wrong, &decoded).is_err());
        if value.is_some() {
            assert!(verify(&root, k, Some(b"x"), &decoded).is_err());
        }
        // Every tampered byte fails (decode or verify); check all bytes for a sample.
        if i % 20 == 0 {
            for j in 0..bytes.len() {
                for bit in [0x01u8, 0x80] {
                    let mut t = bytes.clone();
                    t[j] ^= bit;
                    if let Ok(p) = Proof::decode(&t) {
                        assert!(
                            verify(&root, k, value.map(|v| &v[..]), &p).is_err(),
                            "tampered byte {j} of the proof for key {i} still verifies"
                        );
                    }
                }
            }
            // A wrong root fails too.
            let mut bad_root = root;
            bad_root[0] ^= 1;
            assert!(verify(&bad_root, k, value.map(|v| &v[..]), &decoded).is_err());
        }
    }
    assert!(
        present > 50 && absent_at_leaf > 0,
        "present {present}, absent at a leaf {absent_at_leaf}"
    );
}

#[test]
fn historical_proofs_verify_against_historical_roots() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let mut r = rng(12);
    let keys = key_pool(&mut r, 100);
    let mut models = Vec::new();
    let mut model = BTreeMap::new();
    for v in 1..=6u64 {
        let batch = random_batch(&mut r, &keys, 60);
        apply_model(&mut model, &batch);
        store.apply(v, batch).unwrap();
        models.push(model.clone());
    }
    for v in 1..=6u64 {
        let m = &models[v as usize - 1];
        let root = store.root(v).unwrap();
        for k in &keys {
            let p = store.prove(k, v).unwrap();
            verify(&root, k, m.get(k).map(|b| &b[..]), &p).unwrap();
        }
    }
}

#[test]
fn empty_and_single_key_trees() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), small_opts()).unwrap();
    let k = B256::repeat_byte(0x42);
    store.apply(1, vec![]).unwrap();
    assert_eq!(store.root(1).unwrap(), B256::ZERO);
    let p = store.prove(&k, 1).unwrap();
    assert_eq!(p, Proof { siblings: vec![], terminal: Terminal::Empty });
    verify(&B256::ZERO, &k, None, &p).unwrap();
    store.apply(2, vec![(k, Some(Bytes::from_static(b"v")))]).unwrap();
    let p = store.prove(&k, 2).unwrap();
    assert!(p.siblings.is_empty());
    verify(&store.root(2).unwrap(), &k, Some(b"v"), &p).unwrap();
    // Another key is proven absent by the single leaf.
    let other = B256::repeat_byte(0x43);
    let p = store.prove(&other, 2).unwrap();
    verify(&store.root(2).unwrap(), &other, None, &p).unwrap();
}

#[test]
fn malformed_proof_bytes_are_refused() {
    for bytes in [&[][..], &[2], &[0], &[0, 1, 1], &[1, 0, 0]] {
        assert!(Proof::decode(bytes).is_err());
    }
    let mut deep = vec![0u8, 1, 1];
    deep.extend(vec![0u8; 257 * 32]);
    assert!(Proof::decode(&deep).is_err());
}
