//! Running a WASM frame inside revm, nested EVM calls from WASM, and the deployment check.
//!
//! revm hands every call to the precompile provider first, after it has taken the frame's
//! journal checkpoint and moved the value. [`FarolPrecompiles`] answers calls to WASM code
//! there: the frame's result goes back through revm's own path, which commits or reverts the
//! checkpoint exactly as for an EVM frame. A call from WASM runs a nested revm frame loop on
//! the same context, one depth deeper.

use std::cell::Cell;
use std::cmp::min;
use std::sync::Arc;

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{Revert, SolError};
use revm::context::{ContextTr, Evm, LocalContextTr};
use revm::context_interface::{Cfg, FrameStack, Host, JournalTr};
use revm::handler::evm::{ContextDbError, EvmTr};
use revm::handler::instructions::EthInstructions;
use revm::handler::{EthFrame, EthPrecompiles, FrameResult, ItemOrResult, PrecompileProvider};
use revm::inspector::handler::{frame_end, frame_start};
use revm::inspector::{inspect_instructions, Inspector, JournalExt};
use revm::interpreter::instructions::contract::load_account_delegated;
use revm::interpreter::instructions::control;
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::interpreter_action::FrameInit;
use revm::interpreter::interpreter_types::LoopControl;
use revm::interpreter::{
    CallInput, CallInputs, CallOutcome, CallScheme, CallValue, CreateInputs, CreateOutcome,
    CreateScheme, FrameInput, Gas, Instruction, InstructionContext, InstructionResult,
    InterpreterAction, InterpreterResult, SharedMemory,
};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{AddressSet, Log};
use wasmtime::Trap;

use super::host::{charge, gas_left, halt, read, read_array, refill, write, R};
use super::host::{load_failed, Cx, Env, Exit, HostState, Instance};
use super::{is_wasm, Compiled, Interpreted, Tier, WasmRuntime, FUEL_PER_GAS, MAX_WASM_NESTING};
use crate::collision::{CollisionInspector, StorageProbe};

/// A context that can name the base context under any number of `&mut`. Nested calls from
/// WASM build their EVM over `&mut Base`, whatever depth they are at, so the types close.
pub(crate) trait WasmCtx: ContextTr<Db: StorageProbe> {
    /// The context with every `&mut` removed.
    type Base: ContextTr;
    /// The base context.
    fn base(&mut self) -> &mut Self::Base;
}

impl<BLOCK, TX, CFG, DB, JOURNAL, CHAIN> WasmCtx
    for revm::Context<BLOCK, TX, CFG, DB, JOURNAL, CHAIN>
where
    BLOCK: revm::context::Block,
    TX: revm::context::Transaction,
    CFG: Cfg,
    DB: revm::Database + StorageProbe,
    JOURNAL: JournalTr<Database = DB>,
    Self: ContextTr<Db = DB>,
{
    type Base = Self;
    fn base(&mut self) -> &mut Self {
        self
    }
}

impl<X: WasmCtx> WasmCtx for &mut X {
    type Base = X::Base;
    fn base(&mut self) -> &mut X::Base {
        (**self).base()
    }
}

/// What the `chain` part of a context is to WASM frames: nothing while blocks execute; the
/// tracer while a transaction is traced (`crate::trace`), which the frames a WASM frame runs
/// (outside revm's own frame loop) and the logs it makes must reach too.
pub(crate) trait ChainHooks<B: ContextTr>: Sized {
    /// Runs revm's frame loop from `init` over `ctx`, one level under a WASM frame.
    fn run_nested(ctx: &mut B, init: FrameInit) -> Result<FrameResult, ContextDbError<B>>;
    /// A WASM frame starts running its module.
    fn wasm_frame_start(_ctx: &mut B) {}
    /// A WASM frame makes `log` (before it is journaled).
    fn wasm_log(_ctx: &mut B, _log: &Log) {}
    /// A WASM frame ends; every log it made was passed to [`ChainHooks::wasm_log`].
    fn wasm_frame_end(_ctx: &mut B) {}
    /// A WASM frame loads `address`, or its storage `slot` (see `Env::accessed`).
    fn wasm_access(_ctx: &mut B, _address: Address, _slot: Option<U256>) {}
}

/// Block execution. The frames under a WASM frame run with EIP-7610's storage rule
/// ([`CollisionInspector`]): the executors apply it to a transaction's EVM frames by running
/// the transaction again under that inspector when it loaded an address the rule may concern,
/// and that inspector does not reach past a WASM frame (before stop 31 a CREATE from EVM code
/// under a WASM frame skipped the rule). Applying it here on the first run as well gives the
/// same result: it only changes a creation at such an address, which triggers the rerun.
impl<B> ChainHooks<B> for ()
where
    B: WasmCtx<Base = B> + ContextTr<Chain = (), Journal: JournalExt>,
{
    fn run_nested(ctx: &mut B, init: FrameInit) -> Result<FrameResult, ContextDbError<B>> {
        let spec: SpecId = ctx.cfg().spec().into();
        // An empty frame stack: the frames the call runs are made as it reaches them.
        // `Evm::new_with_inspector` makes eight at once, each with its own operand stack and
        // memory, and that was most of a host call's time: a WASM loop of warm calls to an
        // empty account took 1.7–1.9 µs a call (16–18 ns per gas) before stop 48 and takes
        // 0.7 µs now (about 6.5 ns per gas, the EVM's rate for such calls).
        let mut evm: InspectedEvm<&mut B, CollisionInspector> = Evm {
            ctx,
            inspector: CollisionInspector,
            instruction: instructions::<&mut B>(spec, true),
            precompiles: FarolPrecompiles::new(spec, true),
            frame_stack: FrameStack::new(),
        };
        inspect_frames(&mut evm, init)
    }
}

/// revm's precompiles, and WASM contracts when enabled.
#[derive(Debug, Clone)]
pub(crate) struct FarolPrecompiles {
    eth: EthPrecompiles,
    wasm: bool,
}

impl FarolPrecompiles {
    /// The precompiles of `spec`; calls to WASM code run it when `wasm` is set and fail like
    /// the EVM's INVALID opcode otherwise.
    pub(crate) fn new(spec: SpecId, wasm: bool) -> Self {
        FarolPrecompiles { eth: EthPrecompiles::new(spec), wasm }
    }
}

impl<C> PrecompileProvider<C> for FarolPrecompiles
where
    C: WasmCtx,
    C::Base: WasmCtx<Base = C::Base>,
    <C::Base as ContextTr>::Chain: ChainHooks<C::Base>,
{
    type Output = InterpreterResult;

    fn set_spec(&mut self, spec: <C::Cfg as Cfg>::Spec) -> bool {
        <EthPrecompiles as PrecompileProvider<C>>::set_spec(&mut self.eth, spec)
    }

    fn run(
        &mut self,
        ctx: &mut C,
        inputs: &CallInputs,
    ) -> Result<Option<InterpreterResult>, String> {
        if let Some(r) = self.eth.run(ctx, inputs)? {
            return Ok(Some(r));
        }
        if !self.wasm || !is_wasm(inputs.known_bytecode.1.original_byte_slice()) {
            return Ok(None);
        }
        Ok(Some(run(ctx.base(), inputs)))
    }

    fn warm_addresses(&self) -> &AddressSet {
        self.eth.warm_addresses()
    }

    fn contains(&self, address: &Address) -> bool {
        self.eth.contains(address)
    }
}

/// The mainnet instruction table, with RETURN checking WASM code at deployment when `wasm`.
pub(crate) fn instructions<H: ContextTr>(
    spec: SpecId,
    wasm: bool,
) -> EthInstructions<EthInterpreter, H> {
    let mut table = EthInstructions::new_mainnet_with_spec(spec);
    if wasm {
        table.insert_instruction(
            revm::bytecode::opcode::RETURN,
            Instruction::new(deploy_return::<H>),
            0,
        );
    }
    table
}

/// RETURN, plus: a creation that returns code with the WASM marker, within the code size
/// limit and with gas left for its deposit, has its module validated and compiled. An invalid
/// module reverts the creation with `Error(string)` naming the rule, after paying
/// [`REFUSED_BYTE_GAS`](super::REFUSED_BYTE_GAS) a byte for the work.
/// A failure of this node (no WASM engine) is not the code's: it stops the
/// block with an error instead of producing a result.
fn deploy_return<H: ContextTr>(
    cx: InstructionContext<'_, H, EthInterpreter>,
) -> Result<(), InstructionResult> {
    let creating = cx.interpreter.input.bytecode_address.is_none();
    let InstructionContext { interpreter, host } = cx;
    let r = control::ret(InstructionContext { interpreter: &mut *interpreter, host: &mut *host });
    if !creating {
        return r;
    }
    let Some(InterpreterAction::Return(result)) = interpreter.bytecode.action() else {
        return r;
    };
    if !is_wasm(&result.output) {
        return r;
    }
    // A creation revm will fail after this (code over the size limit, or no gas left for the
    // code deposit) is not validated or compiled: before stop 38 it was, so a module cost
    // its deployer only what the init code ran, and it stayed in the cache.
    if !deposit_is_paid(host.cfg(), result.gas, result.output.len()) {
        return r;
    }
    let verdict = WasmRuntime::global().and_then(|rt| rt.deploy(&result.output));
    match verdict {
        Ok(_) => r,
        Err(e @ super::WasmError::Invalid(_)) => {
            // The node's work on the module (validation, the rewrite's survey, the
            // interpreter's translation) is paid as its deposit would have been, whatever
            // refused it, and only the rest returns with the revert. Before stop 43 a refusal
            // returned all the unspent gas, so a contract could have the node validate,
            // rewrite and translate a 64 KiB module that fails late for about 50,000 gas of
            // CREATE and memory, again and again.
            let cost = (result.output.len() as u64).saturating_mul(super::REFUSED_BYTE_GAS);
            // `remaining` is the regular gas left (EIP-8037's reservoir is apart from it):
            // under Amsterdam, where the deposit check does not guarantee it, the charge is
            // at most what is left.
            if !result.gas.record_regular_cost(cost.min(result.gas.remaining())) {
                result.gas.spend_all();
            }
            result.result = InstructionResult::Revert;
            result.output = Revert::from(e.to_string()).abi_encode().into();
            Err(InstructionResult::Revert)
        }
        Err(e @ super::WasmError::Runtime(_)) => {
            *host.error() =
                Err(revm::context_interface::context::ContextError::Custom(e.to_string()));
            result.result = InstructionResult::FatalExternalError;
            Err(InstructionResult::FatalExternalError)
        }
    }
}

/// Whether revm's `return_create` will accept `len` bytes of returned code with `gas` left:
/// its checks in its order, on a copy of the frame's gas. The size limit; the deposit's
/// regular gas (zero under EIP-8037); and under EIP-8037 (Amsterdam) the hash of the code
/// (regular gas) and the deposit's state gas, taken from the reservoir first and the rest
/// from the gas left. Before stop 40 only the first two were checked, so under Amsterdam,
/// where the regular deposit costs nothing, every module was compiled.
fn deposit_is_paid(cfg: &impl Cfg, gas: Gas, len: usize) -> bool {
    if len > cfg.max_code_size() {
        return false;
    }
    let params = cfg.gas_params();
    let mut gas = gas;
    if !gas.record_regular_cost(params.code_deposit_cost(len)) {
        return false;
    }
    if !cfg.is_amsterdam_eip8037_enabled() {
        return true;
    }
    let state = params.code_deposit_state_gas(len);
    gas.record_regular_cost(params.keccak256_cost(len))
        && (state == 0 || gas.record_state_cost(state))
}

thread_local! {
    /// WASM frames active on this thread.
    static NESTING: Cell<usize> = const { Cell::new(0) };
}

/// Leaves one nesting level when dropped.
struct Nested;

impl Nested {
    fn enter() -> Option<Nested> {
        NESTING.with(|n| {
            (n.get() < MAX_WASM_NESTING).then(|| {
                n.set(n.get() + 1);
                Nested
            })
        })
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        NESTING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

fn result(result: InstructionResult, gas: Gas, output: Bytes) -> InterpreterResult {
    InterpreterResult { result, gas, output }
}

/// Halts with all gas spent.
fn halted(r: InstructionResult, limit: u64) -> InterpreterResult {
    let mut gas = Gas::new(limit);
    gas.spend_all();
    result(r, gas, Bytes::new())
}

/// A failure that is not a property of the block: the block cannot be executed here.
fn fatal<B: ContextTr>(ctx: &mut B, reason: String, limit: u64) -> InterpreterResult {
    *ctx.error() = Err(revm::context_interface::context::ContextError::Custom(reason));
    halted(InstructionResult::FatalExternalError, limit)
}

/// Runs the WASM frame `inputs` describes. revm has taken the checkpoint and moved the value.
fn run<B>(ctx: &mut B, inputs: &CallInputs) -> InterpreterResult
where
    B: WasmCtx<Base = B>,
    B::Chain: ChainHooks<B>,
{
    let limit = inputs.gas_limit;
    let Some(_level) = Nested::enter() else {
        return result(InstructionResult::CallTooDeep, Gas::new(limit), Bytes::new());
    };
    let runtime = match WasmRuntime::global() {
        Ok(r) => r,
        Err(e) => return fatal(ctx, e.to_string(), limit),
    };
    let started = std::time::Instant::now();
    B::Chain::wasm_frame_start(ctx);
    let r = run_frame(ctx, inputs, runtime);
    runtime.record_call(started.elapsed());
    B::Chain::wasm_frame_end(ctx);
    r
}

fn run_frame<B>(
    ctx: &mut B,
    inputs: &CallInputs,
    runtime: &'static WasmRuntime,
) -> InterpreterResult
where
    B: WasmCtx<Base = B>,
    B::Chain: ChainHooks<B>,
{
    let limit = inputs.gas_limit;
    let (hash, code) = &inputs.known_bytecode;
    let tier = match runtime.get(*hash, code.original_byte_slice()) {
        Ok(t) => t,
        // Not deployable (it never was: such code cannot be deployed): halt like INVALID.
        Err(super::WasmError::Invalid(_)) => {
            return halted(InstructionResult::InvalidFEOpcode, limit)
        }
        Err(e) => return fatal(ctx, e.to_string(), limit),
    };
    // However the frame ends.
    struct FrameShare<'a>(&'static WasmRuntime, &'a Tier);
    impl Drop for FrameShare<'_> {
        fn drop(&mut self) {
            self.0.frame_ended(self.1);
        }
    }
    let _share = FrameShare(runtime, &tier);
    let info = match &tier {
        Tier::Compiled(c) => c.info,
        Tier::Interpreted(i) => i.info,
    };
    // The instance, its initial memory and what instantiation copies into it are paid
    // before the module runs.
    let start_gas = super::frame_gas(&info);
    if start_gas > limit {
        return halted(InstructionResult::OutOfGas, limit);
    }
    let spec: SpecId = ctx.cfg().spec().into();
    let input = match &inputs.input {
        CallInput::Bytes(b) => b.clone(),
        CallInput::SharedBuffer(_) => Bytes::copy_from_slice(&inputs.input.as_bytes(ctx)),
    };
    let mut env = Frame { ctx };
    let env_ptr: *mut (dyn Env + '_) = &mut env;
    // SAFETY: the store below is dropped before `env` is used again or goes out of scope, so
    // the pointer never outlives the frame it points to (see `HostState::env`).
    #[allow(unsafe_code)]
    let env_ptr: *mut (dyn Env + 'static) = unsafe { std::mem::transmute(env_ptr) };
    let state = HostState {
        env: env_ptr,
        limits: super::host::Limits::default(),
        spec,
        target: inputs.target_address,
        caller: inputs.caller,
        value: inputs.value.get(),
        input,
        is_static: inputs.is_static,
        returndata: Bytes::new(),
        refund: 0,
    };
    let fuel = i64::try_from((limit - start_gas).saturating_mul(FUEL_PER_GAS)).unwrap_or(i64::MAX);
    let done = match &tier {
        Tier::Compiled(c) => run_compiled(c, runtime, state, fuel),
        Tier::Interpreted(i) => run_interpreted(i, runtime, state, fuel),
    };
    let Frame { ctx } = env;
    // Fuel below zero: the module ran out (see `instrument`).
    let out_of_fuel = done.fuel < 0;
    let fuel_left = u64::try_from(done.fuel).unwrap_or(0) / FUEL_PER_GAS;
    let mut gas = Gas::new(limit);
    let ok = gas.record_regular_cost(limit - fuel_left.min(limit));
    debug_assert!(ok);
    let ended = if let Some(fault) = done.fault {
        Ended::Fatal(fault)
    } else if out_of_fuel {
        Ended::Exit(halt(InstructionResult::OutOfGas))
    } else {
        done.ended
    };
    let (r, output) = match ended {
        Ended::Returned => (InstructionResult::Return, Bytes::new()),
        Ended::Exit(Exit::Return(out)) => (InstructionResult::Return, out),
        Ended::Exit(Exit::Revert(out)) => (InstructionResult::Revert, out),
        Ended::Exit(Exit::Halt(r)) => (r, Bytes::new()),
        // Farol's count stops every module first (§4 of docs/wasm.md), so an engine that
        // reaches its own stack limit contradicts that bound: where it stops depends on the
        // engine and the machine code, so no result would be the same on every node.
        Ended::StackOverflow => {
            return fatal(
                ctx,
                "WASM instance: the engine's own stack limit was reached".into(),
                limit,
            )
        }
        // A trap of the module (including Farol's stack count): a halt like INVALID.
        Ended::Trap => (InstructionResult::InvalidFEOpcode, Bytes::new()),
        // Not a trap of the module: the pool is full or memory ran out on this node.
        Ended::Fatal(e) => return fatal(ctx, format!("WASM instance: {e}"), limit),
    };
    if r.is_ok() {
        gas.record_refund(done.refund);
    } else if !r.is_revert() {
        gas.spend_all();
    }
    result(r, gas, output)
}

/// How a frame's module stopped.
enum Ended {
    /// `call` returned.
    Returned,
    /// A host function ended the frame.
    Exit(Exit),
    /// The engine's own stack limit (never reached: Farol's count stops modules first; a
    /// node fault if it is).
    StackOverflow,
    /// The module trapped.
    Trap,
    /// This node failed (not the module).
    Fatal(String),
}

/// A frame after its module stopped, on either tier.
struct Done {
    ended: Ended,
    /// The fuel global at the end (negative: out of fuel).
    fuel: i64,
    refund: i64,
    /// An allowed growth the engine failed to make (see `Limits::fault`).
    fault: Option<String>,
}

fn run_compiled(
    c: &Arc<Compiled>,
    runtime: &'static WasmRuntime,
    state: HostState,
    fuel: i64,
) -> Done {
    let ready = runtime.take_ready(c);
    let from_ready = ready.is_some();
    let (mut store, entry) = match ready {
        Some(ready) => {
            let (store, entry) = ready.attach(state);
            (store, Ok(entry))
        }
        None => super::ready::instantiate(runtime.engine(), c, state),
    };
    let outcome = entry.and_then(|entry| {
        // `instantiate` set it whenever it returned the entry.
        let Some(gas) = store.data().gas else {
            return Err(wasmtime::Error::new(halt(InstructionResult::InvalidFEOpcode)));
        };
        gas.set(&mut store, wasmtime::Val::I64(fuel))?;
        store.data_mut().host.limits.running = true;
        entry.call(&mut store, ())
    });
    let ended = match outcome {
        Ok(()) => Ended::Returned,
        Err(e) => match e.downcast::<Exit>() {
            Ok(exit) => Ended::Exit(exit),
            Err(e) => match e.downcast_ref::<Trap>() {
                Some(Trap::StackOverflow) => Ended::StackOverflow,
                Some(_) => Ended::Trap,
                None => Ended::Fatal(e.to_string()),
            },
        },
    };
    let fuel = match store.data().gas {
        Some(g) => g.get(&mut store).i64().unwrap_or(-1),
        None => fuel,
    };
    let refund = store.data().host.refund;
    let fault = store.data_mut().host.limits.fault.take();
    // A ready instance's store goes to the helper thread: its pool slot's memory was written
    // by another thread, and resetting it here would pull all of it into this core's cache
    // (20–150 µs measured here). Other calls drop theirs here, so that the module's next call
    // gets the same slot back, warm.
    if from_ready {
        runtime.discard(store);
    }
    Done { ended, fuel, refund, fault }
}

fn run_interpreted(i: &Interpreted, runtime: &WasmRuntime, state: HostState, fuel: i64) -> Done {
    let mut store = wasmi::Store::new(i.module.engine(), Instance::new(state));
    store.limiter(|s| &mut s.host.limits);
    let outcome = (|| -> Result<(), wasmi::Error> {
        let instance = runtime.interp_linker().instantiate_and_start(&mut store, &i.module)?;
        let memory = instance.get_memory(&store, "memory");
        let gas = instance.get_global(&store, super::GAS_EXPORT);
        let entry = instance.get_typed_func::<(), ()>(&store, "call").ok();
        let (Some(memory), Some(gas), Some(entry)) = (memory, gas, entry) else {
            return Err(wasmi::Error::host(halt(InstructionResult::InvalidFEOpcode)));
        };
        gas.set(&mut store, wasmi::Val::I64(fuel))?;
        store.data_mut().memory = Some(memory);
        store.data_mut().gas = Some(gas);
        store.data_mut().host.limits.running = true;
        entry.call(&mut store, ())
    })();
    let ended = match outcome {
        Ok(()) => Ended::Returned,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(exit) => Ended::Exit(exit.clone()),
            None => {
                use wasmi::errors::{ErrorKind as K, MemoryError, TableError};
                match e.kind() {
                    K::TrapCode(wasmi::TrapCode::StackOverflow) => Ended::StackOverflow,
                    // This node ran out of memory: not the module's doing.
                    K::Memory(MemoryError::OutOfSystemMemory)
                    | K::Table(TableError::OutOfSystemMemory) => Ended::Fatal(e.to_string()),
                    // Traps, and failures that are the module's (a segment out of bounds at
                    // instantiation): what wasmtime reports as traps.
                    K::TrapCode(_)
                    | K::Instantiation(_)
                    | K::Memory(_)
                    | K::Table(_)
                    | K::Global(_) => Ended::Trap,
                    _ => Ended::Fatal(e.to_string()),
                }
            }
        },
    };
    let fuel = match store.data().gas {
        Some(g) => g.get(&store).i64().unwrap_or(-1),
        None => fuel,
    };
    let refund = store.data().host.refund;
    let fault = store.data_mut().host.limits.fault.take();
    Done { ended, fuel, refund, fault }
}

/// The environment of one WASM frame: revm's context.
struct Frame<'a, B> {
    ctx: &'a mut B,
}

impl<B> Env for Frame<'_, B>
where
    B: WasmCtx<Base = B>,
    B::Chain: ChainHooks<B>,
{
    fn host(&mut self) -> &mut dyn Host {
        self.ctx
    }

    fn collision(&mut self, inputs: &CreateInputs) -> Option<CreateOutcome> {
        crate::collision::collision(self.ctx, inputs)
    }

    fn frame(&mut self, input: FrameInput) -> Option<FrameResult> {
        // A fatal error is already recorded (a failed state read, a tracer past its budget):
        // the transaction ends with it, so nothing more runs. An EVM frame stops at its next
        // step; WASM code has none, and would otherwise go on calling.
        if self.ctx.error().is_err() {
            return None;
        }
        let depth = self.ctx.journal().depth();
        let buffer = self.ctx.local().shared_memory_buffer().clone();
        let before = buffer.borrow().len();
        let memory = SharedMemory::new_with_buffer(buffer.clone()).new_child_context();
        let init = FrameInit { depth, memory, frame_input: input };
        let result = match B::Chain::run_nested(self.ctx, init) {
            Ok(r) => Some(r),
            Err(e) => {
                *self.ctx.error() = Err(e);
                None
            }
        };
        buffer.borrow_mut().truncate(before);
        result
    }

    fn log(&mut self, log: Log) {
        B::Chain::wasm_log(self.ctx, &log);
        Host::log(self.ctx, log);
    }

    fn accessed(&mut self, address: Address, slot: Option<U256>) {
        B::Chain::wasm_access(self.ctx, address, slot);
    }
}

/// An EVM of Farol's instructions and precompiles over context `C`, with inspector `I`.
pub(crate) type InspectedEvm<C, I> =
    Evm<C, I, EthInstructions<EthInterpreter, C>, FarolPrecompiles, EthFrame<EthInterpreter>>;

/// revm's frame loop from one first frame to its result, showing every frame, step and log to
/// `evm`'s inspector as revm's own inspecting loop does (revm offers that loop only over a
/// context the EVM owns; a frame under a WASM frame borrows it).
pub(crate) fn inspect_frames<C, I>(
    evm: &mut InspectedEvm<C, I>,
    init: FrameInit,
) -> Result<FrameResult, ContextDbError<C>>
where
    C: ContextTr<Journal: JournalExt>,
    I: Inspector<C>,
    FarolPrecompiles: PrecompileProvider<C, Output = InterpreterResult>,
{
    if let ItemOrResult::Result(r) = inspect_frame_init(evm, init)? {
        return Ok(r);
    }
    loop {
        let result = match inspect_frame_run(evm)? {
            ItemOrResult::Item(init) => match inspect_frame_init(evm, init)? {
                ItemOrResult::Item(()) => continue,
                ItemOrResult::Result(r) => r,
            },
            ItemOrResult::Result(r) => r,
        };
        if let Some(r) = evm.frame_return_result(result)? {
            return Ok(r);
        }
    }
}

/// Starts a frame under the inspector: `Item` when it was pushed to run, `Result` when it
/// ended at once (a precompile, a WASM frame, a failed start, or the inspector's answer).
fn inspect_frame_init<C, I>(
    evm: &mut InspectedEvm<C, I>,
    mut init: FrameInit,
) -> Result<ItemOrResult<(), FrameResult>, ContextDbError<C>>
where
    C: ContextTr<Journal: JournalExt>,
    I: Inspector<C>,
    FarolPrecompiles: PrecompileProvider<C, Output = InterpreterResult>,
{
    if let Some(mut out) = frame_start(&mut evm.ctx, &mut evm.inspector, &mut init.frame_input) {
        frame_end(&mut evm.ctx, &mut evm.inspector, &init.frame_input, &mut out);
        return Ok(ItemOrResult::Result(out));
    }
    let input = init.frame_input.clone();
    let logs_before = evm.ctx.journal().logs().len();
    let ended = match evm.frame_init(init)? {
        ItemOrResult::Result(out) => Some(out),
        ItemOrResult::Item(_) => None,
    };
    // Logs the start journaled (and those of a frame that ended at once).
    let logs = evm.ctx.journal().logs().get(logs_before..).unwrap_or_default().to_vec();
    for log in logs {
        evm.inspector.log(&mut evm.ctx, log);
    }
    match ended {
        Some(mut out) => {
            if let FrameResult::Call(CallOutcome {
                was_precompile_called: true,
                precompile_call_logs,
                ..
            }) = &out
            {
                for log in precompile_call_logs.clone() {
                    evm.inspector.log(&mut evm.ctx, log);
                }
            }
            frame_end(&mut evm.ctx, &mut evm.inspector, &input, &mut out);
            Ok(ItemOrResult::Result(out))
        }
        None => {
            let frame = evm.frame_stack.get();
            evm.inspector.initialize_interp(&mut frame.interpreter, &mut evm.ctx);
            Ok(ItemOrResult::Item(()))
        }
    }
}

/// Runs the frame on top of the stack under the inspector, to its next call or its end.
fn inspect_frame_run<C, I>(
    evm: &mut InspectedEvm<C, I>,
) -> Result<ItemOrResult<FrameInit, FrameResult>, ContextDbError<C>>
where
    C: ContextTr<Journal: JournalExt>,
    I: Inspector<C>,
    FarolPrecompiles: PrecompileProvider<C, Output = InterpreterResult>,
{
    let frame = evm.frame_stack.get();
    let action = inspect_instructions(
        &mut evm.ctx,
        &mut frame.interpreter,
        &mut evm.inspector,
        evm.instruction.instruction_table(),
        evm.instruction.gas_table(),
    );
    let mut next = frame.process_next_action(&mut evm.ctx, action);
    if let Ok(ItemOrResult::Result(out)) = &mut next {
        frame_end(&mut evm.ctx, &mut evm.inspector, &frame.input, out);
        frame.set_finished(true);
    }
    next
}

/// Call kinds the `call` host function takes.
const CALL: u32 = 0;
const STATICCALL: u32 = 1;
const DELEGATECALL: u32 = 2;

/// The `call` host function: CALL, STATICCALL or DELEGATECALL with the EVM's gas rules
/// (EIP-2929 access, value transfer and new-account costs, all but 1/64 of the gas left).
/// Returns 1 on success and 0 on failure; the return data is kept either way.
pub(crate) fn host_call(
    c: &mut impl Cx,
    kind: u32,
    to: u32,
    value: u32,
    data: u32,
    len: u32,
    gas: u64,
) -> R<u32> {
    if kind > DELEGATECALL {
        return Err(halt(InstructionResult::InvalidFEOpcode));
    }
    let to = Address::from(read_array::<20>(c, to)?);
    let value =
        if kind == CALL { U256::from_be_bytes(read_array::<32>(c, value)?) } else { U256::ZERO };
    let transfers = !value.is_zero();
    let (is_static, target, caller, apparent, spec) = {
        let s = c.st();
        (s.is_static, s.target, s.caller, s.value, s.spec)
    };
    if kind == CALL && is_static && transfers {
        return Err(halt(InstructionResult::CallNotAllowedInsideStatic));
    }
    let (warm, copy, transfer_cost, stipend) = {
        let host = c.st_mut().env().host();
        let p = host.gas_params();
        let copy = p.copy_cost(len as usize);
        (p.warm_storage_read_cost(), copy, p.transfer_value_cost(), p.call_stipend())
    };
    charge(c, warm.saturating_add(copy))?;
    let input = read(c, data, len)?;
    if transfers {
        charge(c, transfer_cost)?;
    }
    let remaining = gas_left(c);
    c.st_mut().env().accessed(to, None);
    let host = c.st_mut().env().host();
    let (cost, _state_gas, bytecode, code_hash) =
        load_account_delegated(host, spec, remaining, to, transfers, kind == CALL)
            .map_err(load_failed)?;
    charge(c, cost)?;
    let remaining = gas_left(c);
    let reduced = c.st_mut().env().host().gas_params().call_stipend_reduction(remaining);
    let mut limit = min(reduced, gas);
    charge(c, limit)?;
    if transfers {
        limit = limit.saturating_add(stipend);
    }
    let delegate = kind == DELEGATECALL;
    let inputs = CallInputs {
        input: CallInput::Bytes(input.into()),
        return_memory_offset: 0..0,
        gas_limit: limit,
        bytecode_address: to,
        known_bytecode: (code_hash, bytecode),
        target_address: if delegate { target } else { to },
        caller: if delegate { caller } else { target },
        value: if delegate { CallValue::Apparent(apparent) } else { CallValue::Transfer(value) },
        scheme: match kind {
            CALL => CallScheme::Call,
            STATICCALL => CallScheme::StaticCall,
            _ => CallScheme::DelegateCall,
        },
        is_static: is_static || kind == STATICCALL,
        reservoir: 0,
        charged_new_account_state_gas: false,
    };
    let Some(FrameResult::Call(outcome)) =
        c.st_mut().env().frame(FrameInput::Call(Box::new(inputs)))
    else {
        return Err(halt(InstructionResult::FatalExternalError));
    };
    let r = outcome.result;
    settle(c, &r)?;
    let ok = r.result.is_ok();
    c.st_mut().returndata = r.output;
    Ok(ok as u32)
}

/// Takes a finished child frame's gas back into this frame: unspent gas after success or
/// revert, refunds after success. A fatal child (a database failure) halts this frame too.
fn settle(c: &mut impl Cx, r: &InterpreterResult) -> R<()> {
    if r.result == InstructionResult::FatalExternalError {
        return Err(halt(InstructionResult::FatalExternalError));
    }
    if r.result.is_ok_or_revert() {
        refill(c, r.gas.remaining())?;
    }
    if r.result.is_ok() {
        c.st_mut().refund += r.gas.refunded();
    }
    Ok(())
}

/// Creation kinds the `create` host function takes.
const CREATE: u32 = 0;
const CREATE2: u32 = 1;

/// The `create` host function: CREATE (`kind` 0) or CREATE2 (`kind` 1, with the 32-byte salt
/// at `salt`) of `len` bytes of init code with `value` wei, with the EVM's gas rules (EIP-3860
/// init code limit and cost, CREATE2's hashing, all but 1/64 of the gas left). On success
/// writes the new address (20 bytes) to `out` and returns 1; on failure returns 0, with the
/// revert data as return data.
pub(crate) fn host_create(
    c: &mut impl Cx,
    kind: u32,
    value: u32,
    code: u32,
    len: u32,
    salt: u32,
    out: u32,
) -> R<u32> {
    if kind > CREATE2 {
        return Err(halt(InstructionResult::InvalidFEOpcode));
    }
    if c.st().is_static {
        return Err(halt(InstructionResult::StateChangeDuringStaticCall));
    }
    let value = U256::from_be_bytes(read_array::<32>(c, value)?);
    let len = len as usize;
    let (max_initcode, initcode_cost, create_cost) = {
        let host = c.st_mut().env().host();
        let max = host.max_initcode_size();
        let p = host.gas_params();
        let create = if kind == CREATE { p.create_cost() } else { p.create2_cost(len) };
        (max, p.initcode_cost(len).saturating_add(p.copy_cost(len)), create)
    };
    // EIP-3860.
    if len > max_initcode {
        return Err(halt(InstructionResult::CreateInitCodeSizeLimit));
    }
    charge(c, initcode_cost.saturating_add(create_cost))?;
    let init_code = read(c, code, len as u32)?;
    let scheme = if kind == CREATE {
        CreateScheme::Create
    } else {
        CreateScheme::Create2 { salt: U256::from_be_bytes(read_array::<32>(c, salt)?) }
    };
    let remaining = gas_left(c);
    let limit = c.st_mut().env().host().gas_params().call_stipend_reduction(remaining);
    charge(c, limit)?;
    let target = c.st().target;
    let inputs = CreateInputs::new(target, scheme, value, init_code.into(), limit, 0);
    // EIP-7610, as the collision inspector applies it to creations from the EVM.
    let collided = c.st_mut().env().collision(&inputs);
    // A failed read there comes back as a fatal outcome, which `settle` turns into this
    // frame's halt (the read error is the transaction's error, which ends it).
    let outcome = match collided {
        Some(outcome) => outcome,
        None => match c.st_mut().env().frame(FrameInput::Create(Box::new(inputs))) {
            Some(FrameResult::Create(outcome)) => outcome,
            _ => return Err(halt(InstructionResult::FatalExternalError)),
        },
    };
    let r = &outcome.result;
    settle(c, r)?;
    c.st_mut().returndata =
        if r.result == InstructionResult::Revert { r.output.clone() } else { Bytes::new() };
    match (r.result.is_ok(), outcome.address) {
        (true, Some(address)) => {
            write(c, out, address.as_slice())?;
            Ok(1)
        }
        _ => Ok(0),
    }
}
