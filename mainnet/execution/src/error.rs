//! Errors of block execution.

use alloy_primitives::B256;
use thiserror::Error;

/// A failure to read the parent state.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StateError {
    /// The state names code it does not hold.
    #[error("code {0} is missing from the state")]
    MissingCode(B256),
    /// The state holds bytes that do not decode.
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// The store underneath failed.
    #[error("store: {0}")]
    Store(String),
}

impl revm::database_interface::DBErrorMarker for StateError {}

/// Why a block could not be executed. A block with an invalid transaction is invalid as a whole.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ExecError {
    /// Transaction `index` is invalid (nonce, balance, gas, fee, signature, type, ...).
    #[error("transaction {index} is invalid: {reason}")]
    InvalidTransaction {
        /// Position of the transaction in the block.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The transactions' gas limits add up past the block's gas limit.
    #[error(
        "transaction {index} exceeds the block gas limit: {used} used + {limit} > {block_limit}"
    )]
    BlockGasLimit {
        /// Position of the transaction in the block.
        index: usize,
        /// Gas used by the transactions before it.
        used: u64,
        /// Its gas limit.
        limit: u64,
        /// The block's gas limit.
        block_limit: u64,
    },
    /// The sender of transaction `index` could not be recovered from its signature.
    #[error("transaction {index}: cannot recover the sender: {reason}")]
    BadSignature {
        /// Position of the transaction in the block.
        index: usize,
        /// The recovery error.
        reason: String,
    },
    /// The parent state could not be read.
    #[error("reading the parent state: {0}")]
    State(#[from] StateError),
    /// revm reported an error that is neither a state read nor an invalid transaction.
    #[error("transaction {index}: {reason}")]
    Evm {
        /// Position of the transaction in the block.
        index: usize,
        /// revm's message.
        reason: String,
    },
    /// A call's work (the runs of an access list, the calls of a trace) passed the deadline
    /// its caller gave: a node's limit on JSON-RPC calls, never part of a block's execution.
    #[error("execution aborted: past its time limit")]
    TimedOut,
}
