//! Farol's signatures: BLS12-381 keys, signatures, aggregation and proofs of possession for
//! certificates and the common coin; Ed25519 for blocks ([`ed25519`]).
//!
//! The scheme is the IETF BLS signature draft's proof-of-possession ciphersuite over
//! BLS12-381 with signatures in G1 (48 bytes compressed) and public keys in G2 (96 bytes),
//! implemented by `blst`. Ethereum's consensus puts keys in G1 instead, which makes
//! aggregating thousands of keys cheap. Farol aggregates few (a committee's finality votes)
//! and signs often (coin shares, finality votes), where signatures in G1 cost less: with
//! `blst` on the 2-core development machine, signing took 158 µs instead of 361–377 µs, and
//! decoding a signature with its subgroup check 59 µs instead of 82 µs.
//!
//! - a vote is [`SecretKey::sign`] over the vote's bytes;
//! - votes on the same message aggregate into one [`Signature`] ([`aggregate`]), which
//!   [`verify_aggregate`] checks against the signers' keys with two pairings, however many
//!   signers there are;
//! - every validator key is admitted only with a proof of possession
//!   ([`SecretKey::prove_possession`], [`PublicKey::verify_possession`]), which is what makes
//!   same-message aggregation safe against rogue keys.
//!
//! Bytes from outside (keys, signatures) are decoded with every check: canonical encoding,
//! on the curve, in the prime-order subgroup, not the identity. A bad encoding is an error,
//! never a panic.

pub mod coin;
pub mod ed25519;

use blst::min_sig;
use blst::BLST_ERROR;
use thiserror::Error;

/// Domain separation tag of signatures (the draft's proof-of-possession ciphersuite).
pub const DST_SIGNATURE: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// Domain separation tag of proofs of possession.
pub const DST_POSSESSION: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// Bytes of a compressed public key.
pub const PUBLIC_KEY_LEN: usize = 96;
/// Bytes of a compressed signature.
pub const SIGNATURE_LEN: usize = 48;
/// Bytes of a secret key.
pub const SECRET_KEY_LEN: usize = 32;

/// Why a key or signature was refused.
#[derive(Debug, Clone, Copy, Error, PartialEq, Eq)]
pub enum BlsError {
    /// The bytes are not a canonical encoding of a curve point (or scalar).
    #[error("bad encoding")]
    Encoding,
    /// The point is not in the prime-order subgroup.
    #[error("point not in the subgroup")]
    NotInGroup,
    /// The identity: no key or signature is the point at infinity.
    #[error("point at infinity")]
    Infinity,
    /// The signature does not verify.
    #[error("signature does not verify")]
    Invalid,
    /// Nothing to aggregate, or keys and signatures that do not match up.
    #[error("empty or mismatched aggregation")]
    Empty,
}

fn error(e: BLST_ERROR) -> BlsError {
    match e {
        BLST_ERROR::BLST_POINT_NOT_IN_GROUP => BlsError::NotInGroup,
        BLST_ERROR::BLST_PK_IS_INFINITY => BlsError::Infinity,
        BLST_ERROR::BLST_VERIFY_FAIL => BlsError::Invalid,
        BLST_ERROR::BLST_AGGR_TYPE_MISMATCH => BlsError::Empty,
        _ => BlsError::Encoding,
    }
}

fn check(e: BLST_ERROR) -> Result<(), BlsError> {
    match e {
        BLST_ERROR::BLST_SUCCESS => Ok(()),
        other => Err(error(other)),
    }
}

/// A validator's secret key. Its `Debug` shows only the public key.
#[derive(Clone)]
pub struct SecretKey(min_sig::SecretKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public_key())
    }
}

impl SecretKey {
    /// The key derived from `seed` (the draft's KeyGen; at least 32 bytes of entropy).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        // KeyGen fails only for input keying material under 32 bytes.
        match min_sig::SecretKey::key_gen(seed, &[]) {
            Ok(sk) => SecretKey(sk),
            Err(_) => unreachable!("a 32-byte seed is long enough for KeyGen"),
        }
    }

    /// Decodes a secret key (a scalar below the group order, not zero).
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, BlsError> {
        min_sig::SecretKey::from_bytes(bytes).map(SecretKey).map_err(error)
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.sk_to_pk())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message, DST_SIGNATURE, &[]))
    }

    /// The proof of possession of this key: a signature of the public key's bytes under the
    /// possession tag.
    pub fn prove_possession(&self) -> Signature {
        Signature(self.0.sign(&self.public_key().to_bytes(), DST_POSSESSION, &[]))
    }
}

/// A validated public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(min_sig::PublicKey);

/// `Name(0x` and the first 8 bytes `…)`.
fn short(f: &mut std::fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> std::fmt::Result {
    write!(f, "{name}(0x")?;
    for b in bytes.iter().take(8) {
        write!(f, "{b:02x}")?;
    }
    write!(f, "…)")
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        short(f, "PublicKey", &self.to_bytes())
    }
}

impl PublicKey {
    /// Decodes a compressed key: canonical, on the curve, in the subgroup, not the identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, BlsError> {
        min_sig::PublicKey::key_validate(bytes).map(PublicKey).map_err(error)
    }

    /// The 96-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.compress()
    }

    /// Checks a proof of possession of this key.
    pub fn verify_possession(&self, proof: &Signature) -> Result<(), BlsError> {
        check(proof.0.verify(true, &self.to_bytes(), DST_POSSESSION, &[], &self.0, false))
    }
}

/// A validated signature, one signer's or an aggregate.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(min_sig::Signature);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        short(f, "Signature", &self.to_bytes())
    }
}

impl Signature {
    /// Decodes a compressed signature: canonical, on the curve, in the subgroup, not the
    /// identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, BlsError> {
        min_sig::Signature::sig_validate(bytes, true).map(Signature).map_err(error)
    }

    /// The 48-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0.compress()
    }

    /// Checks this signature of `message` by `key`.
    pub fn verify(&self, key: &PublicKey, message: &[u8]) -> Result<(), BlsError> {
        // Both points were group-checked when decoded or made.
        check(self.0.verify(false, message, DST_SIGNATURE, &[], &key.0, false))
    }
}

/// The aggregate of `signatures` (of one message, or of several).
pub fn aggregate(signatures: &[Signature]) -> Result<Signature, BlsError> {
    let refs: Vec<&min_sig::Signature> = signatures.iter().map(|s| &s.0).collect();
    let agg = min_sig::AggregateSignature::aggregate(&refs, false).map_err(error)?;
    Ok(Signature(agg.to_signature()))
}

/// Checks that `signature` aggregates signatures of the one `message` by exactly `keys`.
/// The keys must have been admitted with a proof of possession.
pub fn verify_aggregate(
    signature: &Signature,
    message: &[u8],
    keys: &[PublicKey],
) -> Result<(), BlsError> {
    if keys.is_empty() {
        return Err(BlsError::Empty);
    }
    let refs: Vec<&min_sig::PublicKey> = keys.iter().map(|k| &k.0).collect();
    check(signature.0.fast_aggregate_verify(false, message, DST_SIGNATURE, &refs))
}
