//! Tracing: geth's debug tracers (`debug_traceTransaction`, `debug_traceBlock*`,
//! `debug_traceCall`), Parity's replay (`trace_replay*`, `trace_call`) and the access-list
//! inspector of `eth_createAccessList`, on the sequential executor.
//!
//! The tracers are revm-inspectors' (struct logger, `callTracer`, `prestateTracer`,
//! `4byteTracer`, `flatCallTracer`, `muxTracer`, `noopTracer`, `erc7562Tracer`). A traced
//! transaction is executed exactly as in [`crate::execute_sequential`]: the transactions
//! before it in its block are replayed first, then it runs under the tracer. What a trace
//! may hold is bounded ([`TRACE_BUDGET`]): a struct log of a long loop with memory and
//! stack turned on grows by kilobytes per step, and a node must not run out of memory
//! answering one request.
//!
//! The tracer lives in the context (a [`TraceSlot`] as its `chain`), and each EVM's inspector
//! is a [`Forward`] to it, so that the frames a WASM contract runs and the logs it makes reach
//! the same tracer as the EVM's own: a trace shows a WASM contract's call, its logs and the
//! calls it makes, in order, at their depths. The WASM code's own instructions are not steps
//! of the struct logger (it records EVM opcodes); the accounts and slots it loads reach the
//! access-list collector through [`ChainHooks`] as well.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{Address, B256, U256};
use either::Either;
use revm::bytecode::opcode::{self, OpCode};
use revm::context::result::ResultAndState;
use revm::context::{Cfg, Context, ContextError, ContextTr, Evm};
use revm::context_interface::JournalTr;
use revm::handler::evm::ContextDbError;
use revm::handler::FrameResult;
use revm::inspector::JournalExt;
use revm::interpreter::interpreter_action::FrameInit;
use revm::interpreter::interpreter_types::{InputsTr, Jumps, MemoryTr, ReturnData};
use revm::interpreter::{CallInputs, CallOutcome, CreateInputs, CreateOutcome, Interpreter};
use revm::primitives::hardfork::SpecId;
use revm::primitives::Log;
use revm::{ExecuteEvm, InspectEvm, Inspector, MainContext};
use revm_inspectors::access_list::AccessListInspector;
use revm_inspectors::tracing::types::{CallTraceStep, TraceMemberOrder};
use revm_inspectors::tracing::{
    DebugInspector, DebugInspectorError, TraceLimitBehavior, TraceLimits, TracingInspector,
    TracingInspectorConfig, TransactionContext,
};

pub use alloy_rpc_types_trace::geth::{GethDebugTracingOptions, GethTrace};
pub use alloy_rpc_types_trace::parity::{TraceResults, TraceType};
use alloy_rpc_types_trace::parity::{VmInstruction, VmTrace};

use crate::collision::{collision, StorageProbe};
use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::ExecError;
use crate::output::TxOutcome;
use crate::sequential::{check_block_gas, exec_error, SeqDb};
use crate::state::{CachedView, StateView};
use crate::wasm::call::{
    inspect_frames, instructions, ChainHooks, FarolPrecompiles, InspectedEvm, WasmCtx,
};

/// The most one request's traces may hold, estimated as the JSON they become (a struct-log
/// step with its stack and memory, a call frame with its input and output, a log with its
/// data). Past it the request fails with [`TraceError::TooLarge`] instead of growing.
pub const TRACE_BUDGET: u64 = 256 << 20;

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The tracer or its configuration is not one this node runs.
    #[error("{0}")]
    Options(String),
    /// The traces would hold more than the budget.
    #[error(
        "the trace would exceed {limit} bytes; trace fewer transactions, or turn off what the \
         struct logger records (disableStack, enableMemory, disableStorage), or set its limit"
    )]
    TooLarge {
        /// The budget, in bytes of JSON.
        limit: u64,
    },
    /// The transactions could not be executed (as they would fail in a block).
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Whether the transactions are a block's or a simulated call's.
#[derive(Debug, Clone, Copy)]
pub struct TraceContext {
    /// The block's hash; `None` for a call.
    pub block_hash: Option<B256>,
    /// Simulated calls (`debug_traceCall`, `trace_call*`): the sender's nonce and code are
    /// not checked, as in [`crate::execute_call`], the calls' gas together is not bounded by
    /// the block's, and the trace names no transaction hash.
    pub call: bool,
    /// The most the traces may hold, in bytes of JSON ([`TRACE_BUDGET`] for a node).
    pub budget: u64,
    /// When a caller's time for the work is up (a node's limit on JSON-RPC calls; `None`:
    /// none): checked before each transaction after the first, past it
    /// [`ExecError::TimedOut`]. One transaction is bounded by its gas, not cut.
    pub deadline: Option<std::time::Instant>,
}

/// What traces the transactions: one of geth's debug tracers, or Parity's replay.
#[derive(Debug, Clone)]
pub enum Tracer {
    /// A geth tracer with its options (`debug_trace*`).
    Geth(GethDebugTracingOptions),
    /// Parity's replay (`trace_replay*`, `trace_call`) of the trace types asked for: `trace`
    /// (the call frames), `vmTrace` (every EVM step), `stateDiff` (what changed).
    Parity(alloy_primitives::map::HashSet<TraceType>),
    /// Parity's replay with the types asked for each traced transaction, in order
    /// (`trace_callMany`).
    ParityEach(Vec<alloy_primitives::map::HashSet<TraceType>>),
}

impl Tracer {
    /// The Parity trace types of the `i`th traced transaction (`None` for a geth tracer).
    fn parity_types(&self, i: usize) -> Option<&alloy_primitives::map::HashSet<TraceType>> {
        match self {
            Tracer::Geth(_) => None,
            Tracer::Parity(types) => Some(types),
            Tracer::ParityEach(each) => each.get(i),
        }
    }
}

/// One transaction's trace, as its tracer made it (serialized as the tracer's own JSON).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum TxTrace {
    /// A geth tracer's.
    Geth(Box<GethTrace>),
    /// Parity's replay: output, trace, vmTrace and stateDiff.
    Parity(TraceResults),
}

/// Executes `txs` over `state` as [`crate::execute_sequential`] does and traces those in
/// `traced` with the tracer `opts` names; returns their traces, in order. The transactions
/// after `traced` are not executed.
pub fn trace_transactions<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    traced: std::ops::Range<usize>,
    opts: &GethDebugTracingOptions,
    context: TraceContext,
) -> Result<Vec<GethTrace>, TraceError> {
    let tracer = Tracer::Geth(opts.clone());
    let traces = trace_with(state, chain, env, txs, traced, &tracer, context)?;
    Ok(traces
        .into_iter()
        .filter_map(|t| match t {
            TxTrace::Geth(t) => Some(*t),
            TxTrace::Parity(_) => None,
        })
        .collect())
}

/// [`trace_transactions`] with any [`Tracer`].
pub fn trace_with<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    traced: std::ops::Range<usize>,
    kind: &Tracer,
    context: TraceContext,
) -> Result<Vec<TxTrace>, TraceError> {
    let budget = context.budget;
    let template = match kind {
        Tracer::Geth(opts) => Some(DebugInspector::new(opts.clone()).map_err(options_error)?),
        Tracer::Parity(_) | Tracer::ParityEach(_) => None,
    };
    // What the steps of the `i`th traced transaction record.
    let steps = |i: usize| match kind {
        Tracer::Geth(opts) => step_costs(opts),
        // A vmTrace step: pc, cost, gas used and the values pushed.
        _ => kind.parity_types(i).filter(|t| t.contains(&TraceType::VmTrace)).map(|_| VM_STEP),
    };
    // A tracer for the `i`th traced transaction, which may record `left` bytes.
    let fresh = |i: usize, left: u64| -> Result<TxInspector, TraceError> {
        if let Some(t) = &template {
            return Ok(Either::Left(t.try_clone().map_err(options_error)?));
        }
        let types =
            kind.parity_types(i).ok_or_else(|| TraceError::Options("no trace types".into()))?;
        // The memory a vmTrace step wrote is recorded too; revm-inspectors counts those
        // bytes against its own limit, which halts the transaction past it.
        let config = TracingInspectorConfig::from_parity_config(types);
        let limits = TraceLimits::default()
            .set_max_recorded_bytes(Some(usize::try_from(left).unwrap_or(usize::MAX)))
            .set_behavior(TraceLimitBehavior::Halt);
        Ok(Either::Right(TracingInspector::new(config).with_limits(limits)))
    };
    stacker::maybe_grow(crate::wasm::EXECUTOR_STACK_NEEDED, crate::wasm::EXECUTOR_STACK, || {
        let base = CachedView::new(state);
        let block = env.revm(chain.spec);
        let tracer = Traced { inner: None, budget: Budget::new(budget, None) };
        let mut evm = traced_evm(&base, chain, env, context.call, tracer);
        let mut used = 0u64;
        // The bytes of the traces made so far.
        let mut finished = 0u64;
        let mut traces = Vec::with_capacity(traced.len());
        let end = traced.end.min(txs.len());
        for (index, tx) in txs.iter().enumerate().take(end) {
            if index > 0 && context.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(ExecError::TimedOut.into());
            }
            let tx_env = tx.tx_env();
            // Calls are not a block: each is bounded by its own gas alone.
            if !context.call {
                check_block_gas(env, index, used, tx_env.gas_limit)?;
            }
            // The transactions before the traced ones run under the collision rule alone
            // (which the sequential executor applies when a transaction needs it: the
            // outcome is the same).
            // What a transaction left (one that ends in an error may skip its frames' ends).
            evm.ctx.chain.frames.clear();
            evm.ctx.chain.wasm_logs_shown = false;
            let nth = index.wrapping_sub(traced.start);
            evm.ctx.chain.tracer.inner = if traced.contains(&index) {
                evm.ctx.chain.tracer.budget.steps = steps(nth);
                Some(fresh(nth, budget.saturating_sub(finished))?)
            } else {
                None
            };
            let result = evm.inspect_one_tx(tx_env.clone());
            let state = evm.finalize();
            let recorded_too_much = matches!(
                &evm.ctx.chain.tracer.inner,
                Some(Either::Right(t)) if t.limit_exceeded()
            );
            if evm.ctx.chain.tracer.budget.exceeded || recorded_too_much {
                return Err(TraceError::TooLarge { limit: budget });
            }
            let result = result.map_err(|e| exec_error(index, e, ExecError::State))?;
            used += result.tx_gas_used();
            if let Some(inspector) = evm.ctx.chain.tracer.inner.take() {
                let tx_context = TransactionContext {
                    block_hash: context.block_hash,
                    tx_index: Some(index),
                    tx_hash: (!context.call).then(|| *tx.tx.tx_hash()),
                };
                let res = ResultAndState::new(result, state);
                let trace = match inspector {
                    Either::Left(mut inspector) => {
                        let limit = reach_frames_under_wasm(&mut inspector);
                        let trace = inspector
                            .get_result(Some(tx_context), &tx_env, &block, &res, evm.ctx.db_mut())
                            .map_err(|e| match e {
                                DebugInspectorError::Database(e) => {
                                    TraceError::Exec(ExecError::State(e))
                                }
                                other => options_error(other),
                            })?;
                        TxTrace::Geth(Box::new(without_wasm_marks(trace, limit)))
                    }
                    Either::Right(mut inspector) => {
                        let types = kind
                            .parity_types(nth)
                            .ok_or_else(|| TraceError::Options("no trace types".into()))?;
                        if types.contains(&TraceType::VmTrace) {
                            mark_wasm_calls(&mut inspector);
                        }
                        let mut results = inspector
                            .into_parity_builder()
                            .into_trace_results_with_state(&res, types, &*evm.ctx.db_mut())
                            .map_err(|e| TraceError::Exec(ExecError::State(e)))?;
                        if let Some(vm) = &mut results.vm_trace {
                            unmark_vm_trace(vm);
                        }
                        TxTrace::Parity(results)
                    }
                };
                // The estimate made while executing gives way to the trace's real size.
                finished = finished.saturating_add(json_len(&trace));
                if finished > budget {
                    return Err(TraceError::TooLarge { limit: budget });
                }
                evm.ctx.chain.tracer.budget = Budget::new(budget - finished, None);
                traces.push(trace);
                evm.ctx.db_mut().apply(&res.state, chain.spec);
            } else {
                evm.ctx.db_mut().apply(&state, chain.spec);
            }
        }
        Ok(traces)
    })
}

/// The context of an inspected run: `base` under an empty overlay, in block `env`, with the
/// tracer in the `chain` slot.
type TracedCtx<'a, S, I> = Context<
    revm::context::BlockEnv,
    revm::context::TxEnv,
    revm::context::CfgEnv,
    SeqDb<'a, S>,
    revm::context::Journal<SeqDb<'a, S>>,
    TraceSlot<Traced<I>>,
>;

/// The EVM of an inspected run (traces, access lists, transfer logs): over `base`, in block
/// `env`, with `tracer` in the context and each EVM's inspector a [`Forward`] to it; `call`
/// leaves the sender's nonce and code unchecked, as [`crate::execute_call`] does.
fn traced_evm<'a, S: StateView + ?Sized, I>(
    base: &'a CachedView<'a, S>,
    chain: &ChainSpec,
    env: &BlockEnv,
    call: bool,
    tracer: Traced<I>,
) -> crate::wasm::FarolEvm<TracedCtx<'a, S, I>, Forward<Traced<I>>> {
    let db = SeqDb { base, overlay: Default::default() };
    let cfg = chain.call_cfg(call);
    let ctx = Context::mainnet()
        .with_db(db)
        .with_cfg(cfg)
        .with_block(env.revm(chain.spec))
        .with_chain(TraceSlot::new(tracer));
    crate::wasm::build_evm(ctx, Forward::default(), chain)
}

/// The `pc` of the steps [`mark_wasm_calls`] adds (no EVM step has it; a WASM frame records
/// no bytecode, so the vmTrace builder does not take it for a step past the code's end).
const WASM_CALL_MARK: usize = usize::MAX;

/// Gives each WASM frame in `tracer`'s call tree one marked call step before each frame it
/// ran. revm-inspectors' struct-log and vmTrace builders go into a frame's children only
/// through the frame's call steps (CALL, CREATE, …), and a WASM frame has no steps. Returns
/// the number of steps added.
fn mark_wasm_calls(tracer: &mut TracingInspector) -> u64 {
    let mut added = 0u64;
    for node in tracer.traces_mut().nodes_mut() {
        // A frame with children and no steps ran no EVM code: a WASM frame.
        if !node.trace.steps.is_empty() || node.children.is_empty() {
            continue;
        }
        for member in std::mem::take(&mut node.ordering) {
            if let TraceMemberOrder::Call(_) = member {
                node.ordering.push(TraceMemberOrder::Step(node.trace.steps.len()));
                node.trace.steps.push(CallTraceStep {
                    pc: WASM_CALL_MARK,
                    op: OpCode::CALL,
                    stack: None,
                    push_stack: None,
                    memory: None,
                    returndata: Default::default(),
                    gas_remaining: 0,
                    gas_refund_counter: 0,
                    gas_used: 0,
                    gas_cost: 0,
                    state_gas_cost: None,
                    state_gas_reservoir: None,
                    state_gas_spent: 0,
                    storage_change: None,
                    status: None,
                    immediate_bytes: None,
                    decoded: None,
                });
                added += 1;
            }
            node.ordering.push(member);
        }
    }
    added
}

/// Lets the struct logger reach the EVM frames under WASM frames ([`mark_wasm_calls`]); the
/// marked steps are removed from the log again by [`without_wasm_marks`]. Returns the struct
/// logger's own step limit, raised here by the steps added (`None` when it has none, or for
/// another tracer).
fn reach_frames_under_wasm(inspector: &mut DebugInspector) -> Option<u64> {
    let DebugInspector::Default(tracer, opts) = inspector else { return None };
    let added = mark_wasm_calls(tracer);
    let limit = opts.limit.filter(|l| *l > 0);
    if let Some(l) = limit {
        opts.limit = Some(l.saturating_add(added));
    }
    limit
}

/// A struct log without the steps [`reach_frames_under_wasm`] added, and at most `limit` steps.
fn without_wasm_marks(trace: GethTrace, limit: Option<u64>) -> GethTrace {
    let GethTrace::Default(mut frame) = trace else { return trace };
    frame.struct_logs.retain(|s| s.pc != WASM_CALL_MARK as u64);
    if let Some(l) = limit {
        frame.struct_logs.truncate(usize::try_from(l).unwrap_or(usize::MAX));
    }
    GethTrace::Default(frame)
}

/// A vmTrace in which a WASM frame's entries are the frames it ran: each entry made by
/// [`mark_wasm_calls`] keeps its `sub` (the frame's own vmTrace) and loses the opcode, cost
/// and effects it never had.
fn unmark_vm_trace(trace: &mut VmTrace) {
    // A call that never entered its frame (too deep, value it could not pay) has no vmTrace:
    // its entry would be an instruction that never ran.
    trace.ops.retain(|op| op.pc != WASM_CALL_MARK || op.sub.is_some());
    for op in &mut trace.ops {
        if op.pc == WASM_CALL_MARK {
            *op =
                VmInstruction { pc: 0, cost: 0, ex: None, sub: op.sub.take(), op: None, idx: None };
        }
        if let Some(sub) = &mut op.sub {
            unmark_vm_trace(sub);
        }
    }
}

/// The options of the flat call tracer: Parity's traces (`trace_transaction`,
/// `trace_block`).
pub fn flat_call_tracer() -> GethDebugTracingOptions {
    GethDebugTracingOptions::default()
        .with_tracer(alloy_rpc_types_trace::geth::GethDebugBuiltInTracerType::FlatCallTracer.into())
}

/// The error of a tracer this node does not run, or of a bad configuration.
fn options_error<E: std::fmt::Display>(e: DebugInspectorError<E>) -> TraceError {
    TraceError::Options(match e {
        DebugInspectorError::JsTracerNotEnabled | DebugInspectorError::UnsupportedTracer => {
            "unknown tracer (JavaScript tracers are not run); the built-in ones are callTracer, \
             prestateTracer, 4byteTracer, flatCallTracer, muxTracer, noopTracer and \
             erc7562Tracer, or none for the struct logger"
                .into()
        }
        DebugInspectorError::InvalidTracerConfig => "invalid tracerConfig for this tracer".into(),
        other => other.to_string(),
    })
}

/// The length of `v` as JSON, without building the text. (The budget weighs a finished
/// trace with it: a struct log's storage snapshots are built after execution. Serializing to
/// count is cheap next to having executed the trace.)
pub fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a writer that never fails fails only for a value that cannot be JSON (a
    // map with keys that are not strings), which no caller has.
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// What `eth_createAccessList` returns: the list and the call's outcome with it (its gas
/// used, and whether it failed).
#[derive(Debug, Clone)]
pub struct AccessListOutcome {
    /// The accounts and slots the call touches, less its sender, its target, the precompiles
    /// and the authorities of its valid EIP-7702 authorizations (those are warm anyway),
    /// whose slots are listed (those the call touches, and those the call's own list names).
    pub access_list: AccessList,
    /// The call run with that list.
    pub outcome: TxOutcome,
}

/// The access list of call `tx` over `state` (as geth: run it, collect what it touched, run
/// it again with that list, until the list stops changing, since the list changes the gas
/// and so possibly the path). A legacy transaction is priced as an EIP-2930 one, as the list
/// needs. Past `deadline` (checked before each run after the first; a node's limit on
/// JSON-RPC calls), [`ExecError::TimedOut`].
pub fn create_access_list<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    tx: &RecoveredTx,
    deadline: Option<std::time::Instant>,
) -> Result<AccessListOutcome, ExecError> {
    /// Enough for any call: each round only adds what the previous list's gas made
    /// reachable.
    const ROUNDS: usize = 16;
    stacker::maybe_grow(crate::wasm::EXECUTOR_STACK_NEEDED, crate::wasm::EXECUTOR_STACK, || {
        let base = CachedView::new(state);
        let mut tx_env = tx.tx_env();
        if tx_env.tx_type == 0 {
            tx_env.tx_type = 1;
        }
        // (A call: held to its own gas alone, not the block's, since stop 50.)
        let mut list = tx_env.access_list.clone();
        let mut last = None;
        for round in 0..ROUNDS {
            if round > 0 && deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(ExecError::TimedOut);
            }
            let tracer = Traced {
                inner: Some(AccessCollector::new(list.clone())),
                budget: Budget::new(u64::MAX, None),
            };
            let mut evm = traced_evm(&base, chain, env, true, tracer);
            tx_env.access_list = list.clone();
            let result = evm.inspect_one_tx(tx_env.clone());
            let result = result.map_err(|e| exec_error(0, e, ExecError::State))?;
            let found =
                evm.ctx.chain.tracer.inner.take().map(|i| i.into_access_list()).unwrap_or_default();
            let outcome = AccessListOutcome {
                access_list: list.clone(),
                outcome: TxOutcome::from_revm(&result, result.tx_gas_used()),
            };
            if found == list {
                return Ok(outcome);
            }
            last = Some(outcome);
            list = found;
        }
        // A list that keeps changing: the last one run (`ROUNDS` is above zero).
        last.ok_or_else(|| ExecError::Evm { index: 0, reason: "no access list".into() })
    })
}

/// The address of the logs that show value transfers (`eth_simulateV1`'s `traceTransfers`;
/// the address wallets and geth use for ether as a token).
pub const TRANSFER_LOG_ADDRESS: Address =
    alloy_primitives::address!("0xEeeeeEeeeEeEeeEeEeEeeEEEeeeeEeeeeeeeEEeE");

/// [`crate::execute_call`] (with `call`; else [`crate::execute_sequential`]), and for each
/// transaction its logs with each value transfer among them, where it happened, as an ERC-20
/// `Transfer(from, to, value)` log of [`TRANSFER_LOG_ADDRESS`]: calls with value, creations
/// with value and self-destructs that move a balance, in EVM and WASM frames alike; a
/// transfer in a frame that failed shows nothing, and a transaction that failed has no logs.
/// The block output is the plain execution's (its outcomes, receipts and bloom hold the
/// real logs alone).
pub fn execute_with_transfer_logs<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    call: bool,
) -> Result<(crate::BlockOutput, Vec<Vec<Log>>), ExecError> {
    stacker::maybe_grow(crate::wasm::EXECUTOR_STACK_NEEDED, crate::wasm::EXECUTOR_STACK, || {
        let base = CachedView::new(state);
        let tracer = Traced::<TransferLogs> { inner: None, budget: Budget::new(u64::MAX, None) };
        let mut evm = traced_evm(&base, chain, env, call, tracer);
        let (mut outcomes, mut code, mut wiped) = (Vec::new(), Vec::new(), Vec::new());
        let mut cumulative = 0u64;
        let mut with_transfers = Vec::with_capacity(txs.len());
        for (index, tx) in txs.iter().enumerate() {
            let tx_env = tx.tx_env();
            if !call {
                check_block_gas(env, index, cumulative, tx_env.gas_limit)?;
            }
            evm.ctx.chain.frames.clear();
            evm.ctx.chain.wasm_logs_shown = false;
            evm.ctx.chain.tracer.inner = Some(TransferLogs::default());
            let result = evm.inspect_one_tx(tx_env);
            let state = evm.finalize();
            let result = result.map_err(|e| exec_error(index, e, ExecError::State))?;
            cumulative += result.tx_gas_used();
            let outcome = TxOutcome::from_revm(&result, cumulative);
            let transfers = evm.ctx.chain.tracer.inner.take().unwrap_or_default();
            with_transfers.push(if outcome.is_success() {
                transfers.merged(&outcome.logs)
            } else {
                Vec::new()
            });
            outcomes.push(outcome);
            let (c, w) = evm.ctx.db_mut().apply(&state, chain.spec);
            code.extend(c);
            wiped.extend(w);
        }
        let overlay = std::mem::take(&mut evm.ctx.db_mut().overlay);
        drop(evm);
        let output = crate::sequential::finish_block(&base, overlay, code, wiped, outcomes, txs)?;
        Ok((output, with_transfers))
    })
}

/// The transfer logs of one transaction ([`execute_with_transfer_logs`]).
#[derive(Debug, Default)]
struct TransferLogs {
    /// Each transfer log, with the number of the transaction's logs before it.
    made: Vec<(usize, Log)>,
    /// For each frame that has not ended: `made`'s length when it started, and whether its
    /// own transfer (a creation's, whose address is known at its end) is the entry there.
    frames: Vec<(usize, bool)>,
    /// Self-destructs seen, whose place among the logs is taken at the next event that
    /// shows the journal (revm tells an inspector of one without it).
    selfdestructs: Vec<(Address, Address, U256)>,
}

/// The ERC-20 `Transfer(from, to, value)` log of an ether transfer.
fn transfer_log(from: Address, to: Address, value: U256) -> Log {
    let topic = alloy_primitives::keccak256("Transfer(address,address,uint256)");
    Log::new_unchecked(
        TRANSFER_LOG_ADDRESS,
        vec![topic, from.into_word(), to.into_word()],
        value.to_be_bytes::<32>().to_vec().into(),
    )
}

impl TransferLogs {
    fn place_selfdestructs<CTX: ContextTr>(&mut self, ctx: &CTX) {
        let at = ctx.journal_ref().logs().len();
        for (contract, target, value) in self.selfdestructs.drain(..) {
            self.made.push((at, transfer_log(contract, target, value)));
        }
    }

    fn start(&mut self, at: usize, transfer: Option<Log>) {
        self.frames.push((self.made.len(), transfer.is_some()));
        if let Some(log) = transfer {
            self.made.push((at, log));
        }
    }

    /// A frame ended; returns the index of its own transfer log, if it succeeded and made one.
    fn end(&mut self, ok: bool) -> Option<usize> {
        let (start, own) = self.frames.pop().unwrap_or((self.made.len(), false));
        if !ok {
            self.made.truncate(start);
            return None;
        }
        own.then_some(start)
    }

    /// `logs` (a transaction's) with the transfer logs among them, in order.
    fn merged(self, logs: &[Log]) -> Vec<Log> {
        let mut out = Vec::with_capacity(logs.len() + self.made.len());
        let mut made = self.made.into_iter().peekable();
        for (i, log) in logs.iter().enumerate() {
            while let Some((_, t)) = made.next_if(|(at, _)| *at <= i) {
                out.push(t);
            }
            out.push(log.clone());
        }
        out.extend(made.map(|(_, t)| t));
        out
    }
}

impl WasmAccess for TransferLogs {}

impl<CTX: ContextTr> Inspector<CTX> for TransferLogs {
    fn call(&mut self, ctx: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        self.place_selfdestructs(ctx);
        let value = inputs.transfer_value().filter(|v| !v.is_zero());
        let log = value.map(|v| transfer_log(inputs.caller, inputs.target_address, v));
        self.start(ctx.journal_ref().logs().len(), log);
        None
    }

    fn call_end(&mut self, ctx: &mut CTX, _inputs: &CallInputs, outcome: &mut CallOutcome) {
        self.place_selfdestructs(ctx);
        self.end(outcome.result.result.is_ok());
    }

    fn create(&mut self, ctx: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        self.place_selfdestructs(ctx);
        let value = Some(inputs.value()).filter(|v| !v.is_zero());
        // The created address is known at the end.
        let log = value.map(|v| transfer_log(inputs.caller(), Address::ZERO, v));
        self.start(ctx.journal_ref().logs().len(), log);
        None
    }

    fn create_end(&mut self, ctx: &mut CTX, _inputs: &CreateInputs, outcome: &mut CreateOutcome) {
        self.place_selfdestructs(ctx);
        let ok = outcome.result.result.is_ok() && outcome.address.is_some();
        if let (Some(i), Some(address)) = (self.end(ok), outcome.address) {
            if let Some((_, log)) = self.made.get_mut(i) {
                let mut topics = log.topics().to_vec();
                if let Some(to) = topics.get_mut(2) {
                    *to = address.into_word();
                }
                log.data = alloy_primitives::LogData::new_unchecked(topics, log.data.data.clone());
            }
        }
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        if !value.is_zero() {
            self.selfdestructs.push((contract, target, value));
        }
    }
}

/// What a struct-log step records, as the tracer options say.
#[derive(Debug, Clone, Copy)]
struct StepCosts {
    stack: bool,
    memory: bool,
    /// Memory only when it may have changed: at a transaction's first step, and after a
    /// step that writes memory or ends a frame (`erc7562Tracer` shares the previous step's
    /// copy otherwise).
    memory_on_change: bool,
    storage: bool,
    return_data: bool,
    /// The struct logger's `limit`: steps past it are not recorded.
    limit: Option<u64>,
}

/// What a vmTrace step records (no stack, memory or storage snapshots: it lists changes).
const VM_STEP: StepCosts = StepCosts {
    stack: false,
    memory: false,
    memory_on_change: false,
    storage: false,
    return_data: false,
    limit: None,
};

/// The tracer a traced transaction runs under.
type TxInspector = Either<DebugInspector, TracingInspector>;

/// What each step costs the budget: the struct logger's (no tracer named) as its options
/// say; `erc7562Tracer`'s, which records every step with its stack, and a copy of memory
/// where it may have changed; none for the other tracers, which record frames, not steps. (Until stop 40 `erc7562Tracer` was
/// charged nothing per step, and its small answer passed the check made after execution:
/// a loop over a deep stack could make it hold gigabytes.)
fn step_costs(opts: &GethDebugTracingOptions) -> Option<StepCosts> {
    let name = opts.tracer.as_ref().map(|t| t.as_str()).unwrap_or("");
    if name == "erc7562Tracer" {
        return Some(StepCosts {
            stack: true,
            memory: false,
            memory_on_change: true,
            storage: false,
            return_data: false,
            limit: None,
        });
    }
    if !name.is_empty() {
        return None;
    }
    let c = &opts.config;
    Some(StepCosts {
        stack: !c.disable_stack.unwrap_or(false),
        memory: c.is_memory_enabled(),
        memory_on_change: false,
        storage: !c.disable_storage.unwrap_or(false),
        return_data: c.is_return_data_enabled(),
        limit: c.limit.filter(|l| *l > 0),
    })
}

/// The bytes of JSON a trace has grown by, against its budget.
#[derive(Debug)]
struct Budget {
    left: u64,
    exceeded: bool,
    steps: Option<StepCosts>,
    counted_steps: u64,
    /// The opcode of the step before.
    prev_op: Option<u8>,
    /// The storage slots each contract has touched: the struct logger snapshots a
    /// contract's touched storage at each of its SLOADs and SSTOREs.
    slots: HashMap<Address, HashSet<U256>>,
}

impl Budget {
    fn new(limit: u64, steps: Option<StepCosts>) -> Self {
        Budget {
            left: limit,
            exceeded: false,
            steps,
            counted_steps: 0,
            prev_op: None,
            slots: HashMap::new(),
        }
    }

    fn charge(&mut self, bytes: u64) {
        match self.left.checked_sub(bytes) {
            Some(left) => self.left = left,
            None => {
                self.left = 0;
                self.exceeded = true;
            }
        }
    }

    /// Fails the transaction once the budget is spent, the way revm fails on a database
    /// error (the transaction ends with an error instead of a result).
    fn stop_if_spent<CTX: ContextTr>(&self, context: &mut CTX) -> bool {
        if self.exceeded {
            *context.error() = Err(ContextError::Custom("trace budget exceeded".into()));
        }
        self.exceeded
    }

    /// A frame ended: the next step is its parent's, whose memory the tracers record again
    /// however the child ended (revm-inspectors compares a step with the previous step of
    /// its own frame). Before stop 49 the child's last step stood for the parent's, so a
    /// child halting at a step that writes no memory (out of gas, say) made the parent's
    /// next step, and its memory copy, free: an `erc7562Tracer` call looping over such
    /// calls with 1 MiB of memory was charged about 5 KB a turn for each 1 MiB copied, and
    /// could run the node out of memory long before the budget (found by a review).
    fn frame_ended(&mut self) {
        self.prev_op = None;
    }

    fn step(&mut self, interp: &Interpreter) {
        let Some(costs) = self.steps else { return };
        if costs.limit.is_some_and(|l| self.counted_steps >= l) {
            return;
        }
        self.counted_steps += 1;
        // pc, op, gas, gasCost, depth and the keys around them.
        let mut bytes = 120u64;
        if costs.stack {
            bytes += 70 * interp.stack.len() as u64;
        }
        let op = interp.bytecode.opcode();
        let changed = || {
            self.prev_op
                .and_then(OpCode::new)
                .is_none_or(|p| p.modifies_memory() || p.info().is_terminating())
        };
        if costs.memory || (costs.memory_on_change && changed()) {
            bytes += 68 * (interp.memory.size() as u64).div_ceil(32);
        }
        self.prev_op = Some(op);
        if costs.return_data {
            bytes += 2 * interp.return_data.buffer().len() as u64;
        }
        if costs.storage && (op == opcode::SLOAD || op == opcode::SSTORE) {
            if let Some(slot) = interp.stack.data().last() {
                let touched = self.slots.entry(interp.input.target_address()).or_default();
                touched.insert(*slot);
                bytes += 140 * touched.len() as u64;
            }
        }
        self.charge(bytes);
    }
}

/// A log's bytes in a trace.
fn log_cost(log: &Log) -> u64 {
    180 + 2 * log.data.data.len() as u64 + 70 * log.topics().len() as u64
}

/// The inspector every traced transaction runs under: the EIP-7610 collision rule (as in
/// the sequential executor), the budget, and the tracer (none for the transactions before
/// the traced ones).
#[derive(Debug)]
struct Traced<I> {
    inner: Option<I>,
    budget: Budget,
}

impl<I> Default for Traced<I> {
    fn default() -> Self {
        Traced { inner: None, budget: Budget::new(0, None) }
    }
}

/// The `chain` part of a traced transaction's context: its tracer, where every frame reaches
/// it, the EVM's through their [`Forward`] inspectors and WASM frames through
/// [`ChainHooks`].
#[derive(Debug)]
pub(crate) struct TraceSlot<I> {
    tracer: I,
    /// The journal's log count when each frame that has not ended started.
    frames: Vec<usize>,
    /// A WASM frame has just ended. revm shows the logs journaled since a frame started once
    /// more when the frame ends without running EVM code (a precompile, a WASM frame), but a
    /// WASM frame's were shown as they came: the ones journaled before its module ran (an
    /// EIP-7708 transfer log) when it started, its own as it made them.
    wasm_logs_shown: bool,
}

impl<I> TraceSlot<I> {
    fn new(tracer: I) -> Self {
        TraceSlot { tracer, frames: Vec::new(), wasm_logs_shown: false }
    }
}

/// Runs `f` on the tracer in `ctx`, taken out of the context for the call (`f` gets both).
fn with_tracer<CTX, I, R>(ctx: &mut CTX, f: impl FnOnce(&mut I, &mut CTX) -> R) -> R
where
    CTX: ContextTr<Chain = TraceSlot<I>>,
    I: Default,
{
    let mut tracer = std::mem::take(&mut ctx.chain_mut().tracer);
    let r = f(&mut tracer, ctx);
    ctx.chain_mut().tracer = tracer;
    r
}

impl<B, I> ChainHooks<B> for TraceSlot<I>
where
    B: WasmCtx<Base = B> + ContextTr<Chain = TraceSlot<I>, Journal: JournalExt>,
    I: Default + Inspector<B> + WasmAccess,
{
    fn run_nested(ctx: &mut B, init: FrameInit) -> Result<FrameResult, ContextDbError<B>> {
        let spec: SpecId = ctx.cfg().spec().into();
        // An empty frame stack, as for block execution (`wasm::call`).
        let mut evm: InspectedEvm<&mut B, Forward<I>> = Evm {
            ctx,
            inspector: Forward::default(),
            instruction: instructions::<&mut B>(spec, true),
            precompiles: FarolPrecompiles::new(spec, true),
            frame_stack: revm::context_interface::FrameStack::new(),
        };
        inspect_frames(&mut evm, init)
    }

    fn wasm_log(ctx: &mut B, log: &Log) {
        with_tracer(ctx, |t: &mut I, c| t.log(c, log.clone()));
    }

    fn wasm_frame_start(ctx: &mut B) {
        let logs = ctx.journal().logs();
        let since = ctx.chain().frames.last().copied().unwrap_or(logs.len());
        let before: Vec<Log> = logs.get(since..).unwrap_or_default().to_vec();
        for log in before {
            with_tracer(ctx, |t: &mut I, c| t.log(c, log));
        }
    }

    fn wasm_frame_end(ctx: &mut B) {
        ctx.chain_mut().wasm_logs_shown = true;
    }

    fn wasm_access(ctx: &mut B, address: Address, slot: Option<U256>) {
        ctx.chain_mut().tracer.wasm_access(address, slot);
    }
}

/// What a tracer makes of a WASM frame's loads (of an account, or of a storage slot): the
/// access-list collector lists them, as it lists the EVM's loads it sees in its steps.
pub(crate) trait WasmAccess {
    /// The WASM frame loads `address`, or its storage `slot`.
    fn wasm_access(&mut self, _address: Address, _slot: Option<U256>) {}
}

impl WasmAccess for TxInspector {}

impl<I: WasmAccess> WasmAccess for Traced<I> {
    fn wasm_access(&mut self, address: Address, slot: Option<U256>) {
        if let Some(i) = &mut self.inner {
            i.wasm_access(address, slot);
        }
    }
}

/// `eth_createAccessList`'s collector: revm-inspectors' inspector for what the EVM's opcodes
/// load, and what WASM frames load (their `sload`, `sstore`, `balance` and `call`).
#[derive(Debug, Default)]
struct AccessCollector {
    evm: AccessListInspector,
    wasm: BTreeMap<Address, BTreeSet<B256>>,
    /// The list the call was run with.
    given: AccessList,
}

impl AccessCollector {
    fn new(list: AccessList) -> Self {
        AccessCollector {
            evm: AccessListInspector::new(list.clone()),
            wasm: BTreeMap::new(),
            given: list,
        }
    }

    /// The list, ordered by address and then slot (as revm-inspectors orders its own). The
    /// slots the given list names for an account left out (the sender, the target, a
    /// precompile, an EIP-7702 authority) stay listed, under that account, as geth keeps
    /// them; the account alone, without slots, is left out. (revm-inspectors drops such
    /// accounts with their slots; Farol did until stop 44.)
    fn into_access_list(self) -> AccessList {
        let excluded = self.evm.excluded().clone();
        let mut all: BTreeMap<Address, BTreeSet<B256>> =
            self.evm.into_touched_slots().into_iter().collect();
        for (address, slots) in self.wasm {
            all.entry(address).or_default().extend(slots);
        }
        for item in self.given.0 {
            if excluded.contains(&item.address) && !item.storage_keys.is_empty() {
                all.entry(item.address).or_default().extend(item.storage_keys);
            }
        }
        AccessList(
            all.into_iter()
                .map(|(address, slots)| AccessListItem {
                    address,
                    storage_keys: slots.into_iter().collect(),
                })
                .collect(),
        )
    }
}

impl WasmAccess for AccessCollector {
    fn wasm_access(&mut self, address: Address, slot: Option<U256>) {
        // As for the EVM's loads: an account that is warm anyway (the sender, the target,
        // a precompile) is left out, while the slots of any account are listed.
        match slot {
            Some(slot) => {
                self.wasm.entry(address).or_default().insert(B256::from(slot));
            }
            None if !self.evm.excluded().contains(&address) => {
                self.wasm.entry(address).or_default();
            }
            None => {}
        }
    }
}

impl<CTX> Inspector<CTX> for AccessCollector
where
    CTX: ContextTr<Journal: JournalExt>,
{
    fn step(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        self.evm.step(interp, context);
    }

    fn call(&mut self, context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        self.evm.call(context, inputs)
    }

    fn create(&mut self, context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        self.evm.create(context, inputs)
    }
}

/// An EVM's inspector while tracing: passes every event to the tracer in the context.
/// SELFDESTRUCT's event carries no context, so it waits for the next event that does (at
/// the latest its frame's end).
#[derive(Debug)]
pub(crate) struct Forward<I> {
    selfdestructs: Vec<(Address, Address, U256)>,
    tracer: std::marker::PhantomData<fn() -> I>,
}

impl<I> Default for Forward<I> {
    fn default() -> Self {
        Forward { selfdestructs: Vec::new(), tracer: std::marker::PhantomData }
    }
}

impl<I: Default> Forward<I> {
    /// Runs `f` on the tracer, with the base context (the tracer's type of context), after
    /// passing on the SELFDESTRUCTs that wait.
    fn pass<CTX, R>(&mut self, ctx: &mut CTX, f: impl FnOnce(&mut I, &mut CTX::Base) -> R) -> R
    where
        CTX: WasmCtx<Base: ContextTr<Chain = TraceSlot<I>>>,
        I: Inspector<CTX::Base>,
    {
        let base = ctx.base();
        for (contract, target, value) in self.selfdestructs.drain(..) {
            with_tracer(base, |t: &mut I, _| {
                Inspector::<CTX::Base>::selfdestruct(t, contract, target, value)
            });
        }
        with_tracer(base, f)
    }
}

impl<CTX, I> Inspector<CTX> for Forward<I>
where
    CTX: WasmCtx<Base: ContextTr<Chain = TraceSlot<I>>>,
    I: Default + Inspector<CTX::Base>,
{
    fn initialize_interp(&mut self, interp: &mut Interpreter, ctx: &mut CTX) {
        self.pass(ctx, |t, c| t.initialize_interp(interp, c));
    }

    fn step(&mut self, interp: &mut Interpreter, ctx: &mut CTX) {
        self.pass(ctx, |t, c| t.step(interp, c));
    }

    fn step_end(&mut self, interp: &mut Interpreter, ctx: &mut CTX) {
        self.pass(ctx, |t, c| t.step_end(interp, c));
    }

    fn log(&mut self, ctx: &mut CTX, log: Log) {
        self.pass(ctx, |t, c| {
            if !c.chain().wasm_logs_shown {
                t.log(c, log);
            }
        });
    }

    fn log_full(&mut self, interp: &mut Interpreter, ctx: &mut CTX, log: Log) {
        self.pass(ctx, |t, c| t.log_full(interp, c, log));
    }

    fn call(&mut self, ctx: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        self.pass(ctx, |t, c| {
            let logs = c.journal().logs().len();
            c.chain_mut().frames.push(logs);
            t.call(c, inputs)
        })
    }

    fn call_end(&mut self, ctx: &mut CTX, inputs: &CallInputs, outcome: &mut CallOutcome) {
        self.pass(ctx, |t, c| {
            let slot = c.chain_mut();
            slot.frames.pop();
            slot.wasm_logs_shown = false;
            t.call_end(c, inputs, outcome);
        });
    }

    fn create(&mut self, ctx: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        self.pass(ctx, |t, c| {
            let logs = c.journal().logs().len();
            c.chain_mut().frames.push(logs);
            t.create(c, inputs)
        })
    }

    fn create_end(&mut self, ctx: &mut CTX, inputs: &CreateInputs, outcome: &mut CreateOutcome) {
        self.pass(ctx, |t, c| {
            let slot = c.chain_mut();
            slot.frames.pop();
            slot.wasm_logs_shown = false;
            t.create_end(c, inputs, outcome);
        });
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        self.selfdestructs.push((contract, target, value));
    }
}

impl<CTX, I> Inspector<CTX> for Traced<I>
where
    CTX: ContextTr,
    CTX::Db: StorageProbe,
    I: Inspector<CTX>,
{
    fn initialize_interp(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        if let Some(i) = &mut self.inner {
            i.initialize_interp(interp, context);
        }
    }

    fn step(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        if let Some(i) = &mut self.inner {
            self.budget.step(interp);
            if self.budget.stop_if_spent(context) {
                interp.halt_fatal();
                return;
            }
            i.step(interp, context);
        }
    }

    fn step_end(&mut self, interp: &mut Interpreter, context: &mut CTX) {
        if let Some(i) = &mut self.inner {
            i.step_end(interp, context);
        }
    }

    fn log(&mut self, context: &mut CTX, log: Log) {
        if let Some(i) = &mut self.inner {
            self.budget.charge(log_cost(&log));
            self.budget.stop_if_spent(context);
            i.log(context, log);
        }
    }

    fn log_full(&mut self, interp: &mut Interpreter, context: &mut CTX, log: Log) {
        if let Some(i) = &mut self.inner {
            self.budget.charge(log_cost(&log));
            self.budget.stop_if_spent(context);
            i.log_full(interp, context, log);
        }
    }

    fn call(&mut self, context: &mut CTX, inputs: &mut CallInputs) -> Option<CallOutcome> {
        let i = self.inner.as_mut()?;
        self.budget.charge(400 + 2 * inputs.input.len() as u64);
        self.budget.stop_if_spent(context);
        i.call(context, inputs)
    }

    fn call_end(&mut self, context: &mut CTX, inputs: &CallInputs, outcome: &mut CallOutcome) {
        if let Some(i) = &mut self.inner {
            self.budget.frame_ended();
            self.budget.charge(2 * outcome.result.output.len() as u64);
            self.budget.stop_if_spent(context);
            i.call_end(context, inputs, outcome);
        }
    }

    fn create(&mut self, context: &mut CTX, inputs: &mut CreateInputs) -> Option<CreateOutcome> {
        let collided = collision(context, inputs);
        let Some(i) = &mut self.inner else { return collided };
        self.budget.charge(400 + 2 * inputs.init_code().len() as u64);
        self.budget.stop_if_spent(context);
        let traced = i.create(context, inputs);
        collided.or(traced)
    }

    fn create_end(
        &mut self,
        context: &mut CTX,
        inputs: &CreateInputs,
        outcome: &mut CreateOutcome,
    ) {
        if let Some(i) = &mut self.inner {
            self.budget.frame_ended();
            self.budget.charge(2 * outcome.result.output.len() as u64);
            self.budget.stop_if_spent(context);
            i.create_end(context, inputs, outcome);
        }
    }

    fn selfdestruct(&mut self, contract: Address, target: Address, value: U256) {
        if let Some(i) = &mut self.inner {
            Inspector::<CTX>::selfdestruct(i, contract, target, value);
        }
    }
}
