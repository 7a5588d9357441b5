//! Inclusion and exclusion proofs, their byte format, and a verifier that needs no store.
//!
//! A proof is the path from the root down to where the key's search ends: the sibling
//! hash of every binary level passed (top-down), and what the path ends at — an empty
//! subtree or a single leaf (the key's own, or another key sharing the path's prefix).
//! The byte format is specified in `docs/store.md` so that a Solidity contract can verify
//! the same proofs.

use farol_primitives::{keccak256, B256};

use crate::tree::{key_bit, leaf_hash, node_hash};

/// What the proven path ends at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// A subtree holding exactly one key: `key` with a value whose keccak256 is `value_hash`.
    /// If `key` is the key proven, the proof is an inclusion proof; otherwise `key` shares
    /// the path's prefix with the key proven, which proves that key absent.
    Leaf {
        /// The leaf's key.
        key: B256,
        /// keccak256 of the leaf's value.
        value_hash: B256,
    },
}

/// A proof that a key has a value, or no value, under a state root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// Sibling hashes from the root down: `siblings[i]` is the hash of the subtree beside
    /// the path at binary depth `i + 1`. At most 256 entries.
    pub siblings: Vec<B256>,
    /// Where the path ends.
    pub terminal: Terminal,
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The bytes are not a well-formed proof.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The proof ends at a leaf that is not consistent with the claim (wrong key, a key
    /// outside the path, or a different value).
    #[error("proof does not support the claim: {0}")]
    ClaimMismatch(&'static str),
    /// The recomputed root differs from the expected one.
    #[error("proof computes root {computed}, expected {expected}")]
    RootMismatch {
        /// The root recomputed from the proof.
        computed: B256,
        /// The root the caller expected.
        expected: B256,
    },
}

const TAG_EMPTY: u8 = 0;
const TAG_LEAF: u8 = 1;

impl Proof {
    /// Encodes the proof: `tag(1) [key(32) value_hash(32) if tag = 1] n(2, big-endian)
    /// siblings(32 × n)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(67 + 32 * self.siblings.len());
        match &self.terminal {
            Terminal::Empty => out.push(TAG_EMPTY),
            Terminal::Leaf { key, value_hash } => {
                out.push(TAG_LEAF);
                out.extend_from_slice(key.as_slice());
                out.extend_from_slice(value_hash.as_slice());
            }
        }
        out.extend_from_slice(&(self.siblings.len() as u16).to_be_bytes());
        for s in &self.siblings {
            out.extend_from_slice(s.as_slice());
        }
        out
    }

    /// Decodes a proof, refusing trailing bytes and paths deeper than 256 levels.
    pub fn decode(bytes: &[u8]) -> Result<Proof, ProofError> {
        let (&tag, mut rest) = bytes.split_first().ok_or(ProofError::Malformed("empty"))?;
        let terminal = match tag {
            TAG_EMPTY => Terminal::Empty,
            TAG_LEAF => {
                if rest.len() < 64 {
                    return Err(ProofError::Malformed("truncated leaf"));
                }
                let key = B256::from_slice(&rest[..32]);
                let value_hash = B256::from_slice(&rest[32..64]);
                rest = &rest[64..];
                Terminal::Leaf { key, value_hash }
            }
            _ => return Err(ProofError::Malformed("unknown terminal tag")),
        };
        if rest.len() < 2 {
            return Err(ProofError::Malformed("truncated length"));
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        rest = &rest[2..];
        if n > 256 {
            return Err(ProofError::Malformed("deeper than 256 levels"));
        }
        if rest.len() != 32 * n {
            return Err(ProofError::Malformed("sibling bytes do not match the length"));
        }
        let siblings = rest.chunks_exact(32).map(B256::from_slice).collect();
        Ok(Proof { siblings, terminal })
    }
}

/// Checks that under `root`, `key` has `value` (`Some`) or is absent (`None`).
///
/// Needs no store. Soundness rests on keccak256's collision resistance and on the domain
/// separation of leaf (`0x00`) and inner (`0x01`) hashes.
pub fn verify(
    root: &B256,
    key: &B256,
    value: Option<&[u8]>,
    proof: &Proof,
) -> Result<(), ProofError> {
    let depth = proof.siblings.len();
    if depth > 256 {
        return Err(ProofError::Malformed("deeper than 256 levels"));
    }
    let mut node = match (&proof.terminal, value) {
        (Terminal::Empty, None) => B256::ZERO,
        (Terminal::Empty, Some(_)) => {
            return Err(ProofError::ClaimMismatch("path ends in an empty subtree"))
        }
        (Terminal::Leaf { key: k, value_hash }, Some(v)) => {
            if k != key {
                return Err(ProofError::ClaimMismatch("path ends at another key"));
            }
            if keccak256(v) != *value_hash {
                return Err(ProofError::ClaimMismatch("value does not match the leaf"));
            }
            leaf_hash(k, value_hash)
        }
        (Terminal::Leaf { key: k, value_hash }, None) => {
            if k == key {
                return Err(ProofError::ClaimMismatch("the key is present"));
            }
            if (0..depth).any(|i| key_bit(k, i) != key_bit(key, i)) {
                return Err(ProofError::ClaimMismatch("leaf lies outside the key's path"));
            }
            leaf_hash(k, value_hash)
        }
    };
    for i in (0..depth).rev() {
        let sibling = &proof.siblings[i];
        node = if key_bit(key, i) == 0 {
            node_hash(&node, sibling)
        } else {
            node_hash(sibling, &node)
        };
    }
    if node == *root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch { computed: node, expected: *root })
    }
}
