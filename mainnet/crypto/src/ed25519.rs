//! Ed25519 signatures (RFC 8032, through `ring`) for what is signed and checked often and
//! never aggregated: AsyncBFT's blocks.
//!
//! Every validator signs its block each round and checks every other validator's, each a
//! different message. With BLS that is a multi-pairing per round (1.58 ms for three blocks on
//! the 2-core development machine, 158 µs to sign); Ed25519 takes about 45 µs per check and
//! 23 µs to sign there. Aggregation, where BLS pays off, is for certificates (block finality)
//! and the common coin, which stay BLS.
//!
//! A validator's key is its network identity (`farol-network`): the same Ed25519 key that
//! authenticates its QUIC connections signs its blocks. What a block's signature covers
//! starts with a domain tag TLS never signs, so neither use can stand in for the other.

use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

/// Why an Ed25519 key or signature was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum Ed25519Error {
    /// The bytes are not a key, signature or PKCS#8 document of the right form.
    #[error("bad encoding")]
    Encoding,
    /// The signature does not verify (or the key is not a curve point).
    #[error("signature does not verify")]
    Invalid,
}

/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// The DER `SubjectPublicKeyInfo` prefix of an Ed25519 key (RFC 8410): the key's 32 bytes
/// follow it.
const SPKI_PREFIX: [u8; 12] =
    [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A signing key (cloning shares it).
#[derive(Clone)]
pub struct SigningKey(Arc<Ed25519KeyPair>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?})", self.public_key())
    }
}

impl SigningKey {
    /// The key of a 32-byte seed (RFC 8032's secret key).
    pub fn from_seed(seed: &[u8; 32]) -> SigningKey {
        // Only the length is checked, and it is fixed by the type.
        match Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(k) => SigningKey(Arc::new(k)),
            Err(_) => unreachable!("a 32-byte Ed25519 seed is always accepted"),
        }
    }

    /// The key in a PKCS#8 document (v1 or v2, as a network identity is stored).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, Ed25519Error> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(|k| SigningKey(Arc::new(k)))
            .map_err(|_| Ed25519Error::Encoding)
    }

    /// Its public key.
    pub fn public_key(&self) -> PublicKey {
        let mut k = [0u8; PUBLIC_KEY_LEN];
        k.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(k)
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(self.0.sign(message).as_ref());
        Signature(s)
    }
}

/// A public key: 32 bytes, checked to be a curve point when a signature is checked.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::short(f, "Ed25519Key", &self.0)
    }
}

impl PublicKey {
    /// The key of its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, Ed25519Error> {
        <[u8; PUBLIC_KEY_LEN]>::try_from(bytes).map(PublicKey).map_err(|_| Ed25519Error::Encoding)
    }

    /// The key in a DER `SubjectPublicKeyInfo` (a network identity's public form).
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, Ed25519Error> {
        match der.strip_prefix(&SPKI_PREFIX) {
            Some(k) => PublicKey::from_bytes(k),
            None => Err(Ed25519Error::Encoding),
        }
    }

    /// Its 32 bytes.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    /// Checks `signature` of `message` by this key (RFC 8032, as `ring` checks it).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), Ed25519Error> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, &signature.0)
            .map_err(|_| Ed25519Error::Invalid)
    }
}

/// A signature: 64 bytes, checked only against a key and a message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; SIGNATURE_LEN]);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::short(f, "Ed25519Signature", &self.0)
    }
}

impl Signature {
    /// The signature of its 64 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, Ed25519Error> {
        <[u8; SIGNATURE_LEN]>::try_from(bytes).map(Signature).map_err(|_| Ed25519Error::Encoding)
    }

    /// Its 64 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_key_and_message() {
        let k = SigningKey::from_seed(&[7; 32]);
        let other = SigningKey::from_seed(&[8; 32]);
        let s = k.sign(b"block");
        assert_eq!(k.public_key().verify(b"block", &s), Ok(()));
        assert_eq!(k.public_key().verify(b"blocK", &s), Err(Ed25519Error::Invalid));
        assert_eq!(other.public_key().verify(b"block", &s), Err(Ed25519Error::Invalid));
        let mut bytes = s.to_bytes();
        bytes[63] ^= 0x40;
        let flipped = Signature::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.public_key().verify(b"block", &flipped), Err(Ed25519Error::Invalid));
        assert_eq!(Signature::from_bytes(&bytes[..63]), Err(Ed25519Error::Encoding));
        assert_eq!(PublicKey::from_bytes(&[1; 31]), Err(Ed25519Error::Encoding));
    }

    #[test]
    fn keys_come_from_a_network_identity_document() {
        // RFC 8410's PKCS#8 v1 layout around a seed, and the matching public key info.
        let seed = [0x2c; 32];
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let k = SigningKey::from_pkcs8(&pkcs8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.public_key(), SigningKey::from_seed(&seed).public_key());
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&k.public_key().to_bytes());
        assert_eq!(PublicKey::from_spki(&spki), Ok(k.public_key()));
        spki[5] ^= 1;
        assert_eq!(PublicKey::from_spki(&spki), Err(Ed25519Error::Encoding));
        assert_eq!(SigningKey::from_pkcs8(&pkcs8[..20]).map(|_| ()), Err(Ed25519Error::Encoding));
    }
}
