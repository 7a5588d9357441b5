//! Farol's basic types: hashes, state keys, versions, the one hash function every
//! authenticated structure uses, and maps keyed by hashes ([`SplitMap`]).
//!
//! The types come from `alloy-primitives` so that every Farol crate speaks the same
//! vocabulary as the Ethereum tooling it serves.

pub use alloy_primitives::{keccak256, Address, Bytes, B256, U256};

pub mod split;
pub use split::{SplitMap, SplitSet};

/// A state version: the block height whose state it is. Versions only grow.
pub type Version = u64;

/// A key of the authenticated state: 32 bytes, already hashed (an account address or a
/// storage slot passed through keccak256), so keys are spread evenly over the key space.
pub type StateKey = B256;

/// The root of an empty authenticated tree: 32 zero bytes.
pub const EMPTY_ROOT: B256 = B256::ZERO;
