//! Threshold BLS for a common coin: a dealer splits one secret key into a share per
//! validator (Shamir, over the scalar field), so that any `threshold` shares' signatures of a
//! message combine into the one signature the whole key would make, and fewer reveal
//! nothing about it. That signature is unique, so every validator that combines any
//! `threshold` valid shares gets the same bytes: a value nobody knows before enough
//! validators released their shares, and everybody agrees on after.
//!
//! Share `i` (validator index `i`) is the polynomial's value at `x = i + 1`. A share
//! signature is an ordinary BLS signature under the share's key ([`SecretKey::sign`]).
//!
//! The dealer here is trusted (it runs once, at genesis); a distributed key generation that
//! needs no dealer is future work.

use alloy_primitives::U256;
use blst::{min_sig, MultiPoint};

use crate::{BlsError, PublicKey, SecretKey, Signature, SECRET_KEY_LEN};

/// The order of BLS12-381's prime-order subgroups (the scalar field's modulus).
const ORDER: U256 = U256::from_be_bytes([
    0x73, 0xed, 0xa7, 0x53, 0x29, 0x9d, 0x7d, 0x48, 0x33, 0x39, 0xd8, 0x08, 0x09, 0xa1, 0xd8, 0x05,
    0x53, 0xbd, 0xa4, 0x02, 0xff, 0xfe, 0x5b, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
]);

/// Bits of a scalar below [`ORDER`].
const SCALAR_BITS: usize = 255;

/// What a dealer hands out: a secret share per validator, the shares' public keys (which go
/// into the genesis), and the group key they combine to.
#[derive(Clone, Debug)]
pub struct Dealt {
    /// Validator `i`'s secret share.
    pub secrets: Vec<SecretKey>,
    /// Validator `i`'s share public key.
    pub publics: Vec<PublicKey>,
    /// The key whose signatures `threshold` shares combine to.
    pub group: PublicKey,
}

fn scalar_of(key: &SecretKey) -> U256 {
    U256::from_be_bytes(key.to_bytes())
}

fn key_of(scalar: U256) -> Result<SecretKey, BlsError> {
    // Zero is refused by the decoder (a share of zero has negligible probability).
    SecretKey::from_bytes(&scalar.to_be_bytes::<SECRET_KEY_LEN>())
}

/// Splits a fresh key derived from `seed` into `n` shares, any `threshold` of which sign for
/// it. Errors if `threshold` is 0 or above `n`.
pub fn deal(seed: &[u8; 32], n: usize, threshold: usize) -> Result<Dealt, BlsError> {
    if threshold == 0 || threshold > n {
        return Err(BlsError::Empty);
    }
    use sha2::Digest;
    // The polynomial's coefficients: independent keys derived from the seed (KeyGen gives
    // uniform non-zero scalars).
    let coefficients: Vec<U256> = (0..threshold as u64)
        .map(|k| {
            let mut h = sha2::Sha256::new();
            h.update(b"farol/coin-dealer/1");
            h.update(seed);
            h.update(k.to_le_bytes());
            scalar_of(&SecretKey::from_seed(&h.finalize().into()))
        })
        .collect();
    let mut secrets = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let x = U256::from(i + 1);
        // Horner's rule, modulo the group order.
        let y = coefficients
            .iter()
            .rev()
            .fold(U256::ZERO, |acc, c| acc.mul_mod(x, ORDER).add_mod(*c, ORDER));
        secrets.push(key_of(y)?);
    }
    let publics = secrets.iter().map(SecretKey::public_key).collect();
    let group = key_of(coefficients[0])?.public_key();
    Ok(Dealt { secrets, publics, group })
}

/// The Lagrange coefficients, at `x = at`, of the points `x = index + 1` for `indices`
/// (distinct), as little-endian scalars one after the other.
fn lagrange(indices: &[u16], at: U256) -> Result<Vec<u8>, BlsError> {
    let xs: Vec<U256> = indices.iter().map(|i| U256::from(u64::from(*i) + 1)).collect();
    let mut out = Vec::with_capacity(xs.len() * 32);
    for (i, xi) in xs.iter().enumerate() {
        let mut num = U256::from(1u64);
        let mut den = U256::from(1u64);
        for (j, xj) in xs.iter().enumerate() {
            if i == j {
                continue;
            }
            // (at − x_j) / (x_i − x_j), every term reduced modulo the order.
            num = num.mul_mod(at.add_mod(ORDER - xj, ORDER), ORDER);
            den = den.mul_mod(xi.add_mod(ORDER - xj, ORDER), ORDER);
        }
        // Repeated indices make a zero denominator.
        let inv = den.inv_mod(ORDER).ok_or(BlsError::Empty)?;
        out.extend_from_slice(&num.mul_mod(inv, ORDER).to_le_bytes::<32>());
    }
    Ok(out)
}

fn distinct(indices: &[u16]) -> bool {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).all(|w| w[0] != w[1])
}

/// Combines share signatures `(validator index, signature)` of one message into the group's
/// signature. With `threshold` valid shares the result is the group signature whichever
/// shares were used; with invalid shares or too few it is some other point, which the
/// group key does not verify. Errors on no shares or repeated indices.
pub fn combine(shares: &[(u16, Signature)]) -> Result<Signature, BlsError> {
    let indices: Vec<u16> = shares.iter().map(|(i, _)| *i).collect();
    if shares.is_empty() || !distinct(&indices) {
        return Err(BlsError::Empty);
    }
    let scalars = lagrange(&indices, U256::ZERO)?;
    let points: Vec<min_sig::Signature> = shares.iter().map(|(_, s)| s.0).collect();
    Ok(Signature(points.as_slice().mult(&scalars, SCALAR_BITS).to_signature()))
}

/// The public key at `x = at` of the polynomial through the share keys of `indices`.
fn interpolate_key(indices: &[u16], keys: &[PublicKey], at: U256) -> Result<PublicKey, BlsError> {
    let scalars = lagrange(indices, at)?;
    let points: Vec<min_sig::PublicKey> = keys.iter().map(|k| k.0).collect();
    let key = points.as_slice().mult(&scalars, SCALAR_BITS).to_public_key();
    // The identity is no key (a degenerate dealing).
    PublicKey::from_bytes(&key.to_bytes())
}

/// Checks that the share keys `publics` (validator `i`'s at `i`) come from one polynomial of
/// degree exactly `threshold − 1`, so that every set of `threshold` shares combines to the same
/// signature, and returns the group key. Without this check, a dealer could hand out
/// shares on which different validators' coins would differ.
pub fn group_key(publics: &[PublicKey], threshold: usize) -> Result<PublicKey, BlsError> {
    if threshold == 0 || threshold > publics.len() || publics.len() > usize::from(u16::MAX) + 1 {
        return Err(BlsError::Empty);
    }
    // `threshold` may be 65,536: every index below it fits in a u16.
    let base: Vec<u16> = (0..threshold).map(|i| i as u16).collect();
    let keys = &publics[..threshold];
    for (j, key) in publics.iter().enumerate().skip(threshold) {
        if interpolate_key(&base, keys, U256::from(j as u64 + 1))? != *key {
            return Err(BlsError::Invalid);
        }
    }
    // Of degree `threshold − 1` exactly, not less: shares of a lower degree (a dealing made
    // for a lower threshold) would let fewer than `threshold` validators combine every coin
    // ahead of time. They do if the first `threshold − 1` keys already give the next one
    // (since stop 41; found by a review).
    if threshold >= 2 {
        let lower = interpolate_key(
            &base[..threshold - 1],
            &keys[..threshold - 1],
            U256::from(threshold as u64),
        );
        if lower.is_ok_and(|k| k == keys[threshold - 1]) {
            return Err(BlsError::Invalid);
        }
    }
    interpolate_key(&base, keys, U256::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagrange_at_a_known_point_gives_its_value() {
        // Through x = 1, 2: the coefficients at x = 1 are (1, 0).
        let s = lagrange(&[0, 1], U256::from(1u64)).unwrap_or_default();
        assert_eq!(U256::from_le_slice(&s[..32]), U256::from(1u64));
        assert_eq!(U256::from_le_slice(&s[32..]), U256::ZERO);
    }
}
