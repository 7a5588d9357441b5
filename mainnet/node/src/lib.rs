//! The Farol node: a validator that runs AsyncBFT over the QUIC validator network, executes
//! what it orders in a pipeline (parallel execution, then merklization and persistence in
//! Farol Store and the block log), signs the executed blocks for block finality, and serves
//! Ethereum JSON-RPC over HTTP and WebSocket. See `docs/node.md`.
//!
//! [`node::Node`] wires the parts: [`validator`] drives consensus with its [`wal`];
//! [`pipeline`] executes and stores; [`chain`] is the durable block store; [`mempool`]
//! checks and orders submitted transactions; [`finality`] collects votes into certificates;
//! [`rpc`] serves JSON-RPC and `/metrics` ([`metrics`]); [`config`] and [`genesis`] say
//! what to run.

pub mod chain;
pub mod client;
pub mod config;
pub mod finality;
pub mod genesis;
pub mod mempool;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod rpc;
pub mod sync;
pub mod txindex;
pub mod validator;
pub mod wal;

pub use config::NodeConfig;
pub use genesis::Genesis;
pub use node::{Node, NodeError};
pub use validator::{Parts, StopError, Validator, ValidatorConfig, ValidatorStatus};
pub use wal::{Wal, WalError};
