//! The Farol node: so far a validator that runs a consensus engine over the QUIC validator
//! network with a crash-safe write-ahead log.
//!
//! [`validator`] drives the engine; [`wal`] is its log. The mempool, the execution
//! pipeline, finality tiers and JSON-RPC come with the node issue.

pub mod validator;
pub mod wal;

pub use validator::{Validator, ValidatorConfig};
pub use wal::{Wal, WalError};
