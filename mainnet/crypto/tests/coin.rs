//! The threshold coin: any `threshold` shares combine to the group's one signature, fewer or
//! bad ones do not, and share keys off the dealer's polynomial are refused.

use farol_crypto::coin::{combine, deal, group_key};
use farol_crypto::{BlsError, SecretKey, Signature};
use proptest::prelude::*;

fn shares(secrets: &[SecretKey], who: &[u16], msg: &[u8]) -> Vec<(u16, Signature)> {
    who.iter().map(|i| (*i, secrets[usize::from(*i)].sign(msg))).collect()
}

#[test]
fn any_threshold_shares_make_the_same_group_signature() {
    let d = deal(&[5; 32], 7, 3).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(group_key(&d.publics, 3), Ok(d.group));
    let msg = b"farol/coin/1 round 12";
    let a = combine(&shares(&d.secrets, &[0, 1, 2], msg)).unwrap_or_else(|e| panic!("{e}"));
    let b = combine(&shares(&d.secrets, &[6, 3, 4], msg)).unwrap_or_else(|e| panic!("{e}"));
    let c = combine(&shares(&d.secrets, &[1, 2, 3, 4, 5], msg)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a.verify(&d.group, msg), Ok(()));
    // Another message, another value.
    let other =
        combine(&shares(&d.secrets, &[0, 1, 2], b"round 13")).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(a, other);
    // Each share verifies under its own key.
    for (i, s) in shares(&d.secrets, &[0, 1, 2, 3, 4, 5, 6], msg) {
        assert_eq!(s.verify(&d.publics[usize::from(i)], msg), Ok(()));
    }
}

#[test]
fn too_few_or_bad_shares_do_not_make_it() {
    let d = deal(&[6; 32], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let msg = b"m";
    let one = combine(&shares(&d.secrets, &[3], msg)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.verify(&d.group, msg), Err(BlsError::Invalid));
    // A share of another message in place of one of these.
    let mut bad = shares(&d.secrets, &[0, 1], msg);
    bad[1].1 = d.secrets[1].sign(b"other");
    let bad = combine(&bad).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.verify(&d.group, msg), Err(BlsError::Invalid));
    // No shares, a repeated index.
    assert_eq!(combine(&[]), Err(BlsError::Empty));
    assert_eq!(combine(&shares(&d.secrets, &[1, 1], msg)), Err(BlsError::Empty));
}

#[test]
fn share_keys_off_the_polynomial_are_refused() {
    let d = deal(&[7; 32], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    let mut publics = d.publics.clone();
    publics[3] = SecretKey::from_seed(&[9; 32]).public_key();
    assert_eq!(group_key(&publics, 2), Err(BlsError::Invalid));
    // A dealing for a lower threshold is refused at a higher one: fewer validators than the
    // threshold could combine every coin (before stop 41 it was taken).
    assert_eq!(group_key(&d.publics, 4), Err(BlsError::Invalid));
    assert_eq!(group_key(&d.publics, 3), Err(BlsError::Invalid));
    let one = deal(&[8; 32], 7, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(group_key(&one.publics, 3), Err(BlsError::Invalid));
    assert!(group_key(&one.publics, 1).is_ok());
    let three = deal(&[8; 32], 7, 3).unwrap_or_else(|e| panic!("{e}"));
    assert!(group_key(&three.publics, 3).is_ok());
    assert_eq!(group_key(&three.publics, 2), Err(BlsError::Invalid));
    assert_eq!(group_key(&d.publics, 0), Err(BlsError::Empty));
    assert_eq!(group_key(&d.publics, 5), Err(BlsError::Empty));
    assert!(deal(&[1; 32], 3, 4).is_err());
    assert!(deal(&[1; 32], 3, 0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn random_subsets_agree(seed in any::<[u8; 32]>(), n in 1usize..11, pick in any::<u64>()) {
        let t = (n - 1) / 3 + 1;
        let d = deal(&seed, n, t).unwrap_or_else(|e| panic!("{e}"));
        // A subset of size t chosen by `pick`.
        let mut idx: Vec<u16> = (0..n as u16).collect();
        let mut p = pick;
        for i in (1..idx.len()).rev() {
            idx.swap(i, (p % (i as u64 + 1)) as usize);
            p /= i as u64 + 1;
        }
        idx.truncate(t);
        let sig = combine(&shares(&d.secrets, &idx, b"x")).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(sig.verify(&d.group, b"x"), Ok(()));
    }
}
