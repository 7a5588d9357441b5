//! BLS signatures: what verifies, what does not, and what bytes are refused.

use farol_crypto::{
    aggregate, verify_aggregate, BlsError, PublicKey, SecretKey, Signature, PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
};
use proptest::prelude::*;
use rand::{RngCore, SeedableRng};

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

#[test]
fn a_signature_verifies_for_its_key_and_message_only() {
    let (a, b) = (key(1), key(2));
    let sig = a.sign(b"round 7 block 0xabc");
    assert_eq!(sig.verify(&a.public_key(), b"round 7 block 0xabc"), Ok(()));
    assert_eq!(sig.verify(&a.public_key(), b"round 7 block 0xabd"), Err(BlsError::Invalid));
    assert_eq!(sig.verify(&b.public_key(), b"round 7 block 0xabc"), Err(BlsError::Invalid));
    // Deterministic: the same key signs the same message the same way.
    assert_eq!(a.sign(b"m"), a.sign(b"m"));
    assert_eq!(SecretKey::from_seed(&[1; 32]).public_key(), a.public_key());
}

#[test]
fn keys_and_signatures_round_trip_through_bytes() {
    let sk = key(3);
    let pk = sk.public_key();
    let sig = sk.sign(b"hello");
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
    assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig));
    let again = SecretKey::from_bytes(&sk.to_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.public_key(), pk);
    // A secret key's Debug shows only the public side.
    let shown = format!("{sk:?}");
    let secret_hex: String = sk.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert!(shown.starts_with("SecretKey(public PublicKey(0x"), "{shown}");
    assert!(!shown.contains(&secret_hex[..16]), "{shown}");
}

#[test]
fn aggregates_verify_against_exactly_their_signers() {
    let keys: Vec<SecretKey> = (0..100).map(key).collect();
    let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
    let msg = b"certificate for round 12";
    let sigs: Vec<Signature> = keys.iter().map(|k| k.sign(msg)).collect();
    let agg = aggregate(&sigs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verify_aggregate(&agg, msg, &pks), Ok(()));
    // Order of signers does not matter.
    let mut reversed = pks.clone();
    reversed.reverse();
    assert_eq!(verify_aggregate(&agg, msg, &reversed), Ok(()));
    // A missing signer, an extra one, another message: all fail.
    assert_eq!(verify_aggregate(&agg, msg, &pks[1..]), Err(BlsError::Invalid));
    let mut extra = pks.clone();
    extra.push(key(200).public_key());
    assert_eq!(verify_aggregate(&agg, msg, &extra), Err(BlsError::Invalid));
    assert_eq!(verify_aggregate(&agg, b"certificate for round 13", &pks), Err(BlsError::Invalid));
    // One bad vote spoils the aggregate.
    let mut bad = sigs.clone();
    bad[42] = keys[42].sign(b"something else");
    let agg = aggregate(&bad).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verify_aggregate(&agg, msg, &pks), Err(BlsError::Invalid));
    // Nothing to aggregate.
    assert_eq!(aggregate(&[]), Err(BlsError::Empty));
    assert_eq!(verify_aggregate(&sigs[0], msg, &[]), Err(BlsError::Empty));
}

#[test]
fn proofs_of_possession_bind_to_their_key() {
    let (a, b) = (key(5), key(6));
    let pop = a.prove_possession();
    assert_eq!(a.public_key().verify_possession(&pop), Ok(()));
    assert_eq!(b.public_key().verify_possession(&pop), Err(BlsError::Invalid));
    // A proof is not a signature of the key's bytes under the signing tag, nor the reverse.
    let pk_bytes = a.public_key().to_bytes();
    assert_eq!(a.public_key().verify_possession(&a.sign(&pk_bytes)), Err(BlsError::Invalid));
    assert_eq!(pop.verify(&a.public_key(), &pk_bytes), Err(BlsError::Invalid));
}

#[test]
fn malformed_bytes_are_refused_not_panicked_on() {
    // Wrong lengths.
    for len in [0, 1, 47, 49, 95, 97, 200] {
        let bytes = vec![0x80u8; len];
        assert!(PublicKey::from_bytes(&bytes).is_err(), "{len}-byte key");
        assert!(Signature::from_bytes(&bytes).is_err(), "{len}-byte signature");
    }
    // The identity (compressed infinity: 0xc0 then zeros).
    let mut inf_pk = [0u8; PUBLIC_KEY_LEN];
    inf_pk[0] = 0xc0;
    assert_eq!(PublicKey::from_bytes(&inf_pk), Err(BlsError::Infinity));
    let mut inf_sig = [0u8; SIGNATURE_LEN];
    inf_sig[0] = 0xc0;
    assert_eq!(Signature::from_bytes(&inf_sig), Err(BlsError::Infinity));
    // All zeros (no compression flag), and a zero or too-large secret key.
    assert!(PublicKey::from_bytes(&[0u8; PUBLIC_KEY_LEN]).is_err());
    assert!(Signature::from_bytes(&[0u8; SIGNATURE_LEN]).is_err());
    assert!(SecretKey::from_bytes(&[0u8; 32]).is_err());
    assert!(SecretKey::from_bytes(&[0xffu8; 32]).is_err());
    // Random bytes: almost never a point; never a panic.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut accepted = 0;
    for _ in 0..2_000 {
        let mut pk = [0u8; PUBLIC_KEY_LEN];
        let mut sig = [0u8; SIGNATURE_LEN];
        rng.fill_bytes(&mut pk);
        rng.fill_bytes(&mut sig);
        accepted += PublicKey::from_bytes(&pk).is_ok() as u32;
        accepted += Signature::from_bytes(&sig).is_ok() as u32;
    }
    assert_eq!(accepted, 0);
    // A valid point flipped in one bit is refused or is another key that does not verify.
    let sk = key(9);
    let sig = sk.sign(b"x");
    let mut bytes = sk.public_key().to_bytes();
    bytes[20] ^= 1;
    if let Ok(other) = PublicKey::from_bytes(&bytes) {
        assert_eq!(sig.verify(&other, b"x"), Err(BlsError::Invalid));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn any_key_signs_any_message(seed in any::<[u8; 32]>(), msg in proptest::collection::vec(any::<u8>(), 0..200)) {
        let sk = SecretKey::from_seed(&seed);
        let sig = sk.sign(&msg);
        prop_assert_eq!(sig.verify(&sk.public_key(), &msg), Ok(()));
        let decoded = Signature::from_bytes(&sig.to_bytes());
        prop_assert_eq!(decoded, Ok(sig));
    }
}
