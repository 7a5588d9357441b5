//! Farol block execution on revm: the sequential reference and the parallel optimistic executor.
//!
//! [`execute_sequential`] is the reference: plain revm, one transaction after another.
//! [`ParallelExecutor`] runs a block optimistically on all cores with multi-version state and
//! produces exactly the same [`BlockOutput`]. See `docs/execution.md`.

mod collision;
mod diff;
mod env;
mod error;
mod keccak4;
mod output;
mod parallel;
mod sequential;
mod state;
pub mod statetest;
mod trace;
mod trie;
pub mod wasm;
pub mod workload;
mod writes;

pub use diff::{
    account_key, code_key, decode_account, encode_account, storage_key, StateDiff, StoreState,
    CODE_CHUNK,
};
pub use env::{
    check_transaction, recover_sender, recover_senders, BlockEnv, ChainSpec, RecoveredTx,
    DEFAULT_CHAIN_ID, FAROL_MAX_CODE_SIZE,
};
pub use error::{ExecError, StateError};
pub use output::{halt_message, BlockOutput, TxOutcome, TxStatus, OUT_OF_GAS};
pub use parallel::{ParallelConfig, ParallelExecutor, ParallelStats, Partition};
pub use revm::primitives::hardfork::SpecId;
pub use sequential::{execute_call, execute_screened, execute_sequential, LeftOut};
pub use state::{default_block_hash, Account, InMemoryState, LatencyState, MemAccount, StateView};
pub use trace::{
    create_access_list, execute_with_transfer_logs, flat_call_tracer, json_len, trace_transactions,
    trace_with, AccessListOutcome, GethDebugTracingOptions, GethTrace, TraceContext, TraceError,
    TraceResults, TraceType, Tracer, TxTrace, TRACE_BUDGET, TRANSFER_LOG_ADDRESS,
};
