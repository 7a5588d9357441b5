//! WASM contracts next to EVM contracts: one chain, one journal, one gas budget.
//!
//! A WASM contract's code is [`MARKER`] followed by a WebAssembly module. It is deployed by an
//! ordinary creation whose returned code carries the marker: deployment validates the module
//! (see [`validate()`]), rewrites it to meter its own gas and count its own stack (see
//! [`instrument()`]) and starts compiling it in the background. A call to an address whose
//! code carries the marker runs the rewritten module instead of the EVM interpreter: compiled
//! by wasmtime once that is done, on the wasmi interpreter until then (the same code, so the
//! same result). The module reaches state and other contracts through the host functions in
//! `host`. See `docs/wasm.md`.

pub(crate) mod call;
mod host;
mod instrument;
mod ready;
mod validate;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use alloy_primitives::{keccak256, B256};
use thiserror::Error;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel,
    PoolingAllocationConfig, Strategy,
};

pub(crate) use call::instructions;
pub(crate) use call::FarolPrecompiles;
pub use host::HOST_MODULE;
pub use instrument::{
    instrument, op_fuel, CALL_OVERHEAD, FRAME_SLOTS_PER_FUEL, GAS_EXPORT, GROW_PAGE_FUEL,
    STACK_BUDGET, TABLE_ELEMENT_FUEL,
};
pub use ready::{QUEUE_LIMIT, READY_LIMIT, READY_MAX_PAGES};
pub use validate::{
    validate, ModuleInfo, MAX_CONST_EXPR_OPERATORS, MAX_FUNCTIONS, MAX_GLOBALS, MAX_LOCALS,
    MAX_MEMORY_PAGES, MAX_TABLE_ELEMENTS, MAX_TYPES,
};

use host::{WiData, WtData};

/// The first bytes of every WASM contract's code. `0xFE` is the EVM's INVALID opcode, so the
/// EVM interpreter can never run such code by mistake; `FW` and the version byte follow.
pub const MARKER: [u8; 4] = [0xFE, b'F', b'W', 0x01];

/// Fuel a contract burns per unit of gas. The module pays fuel per operator (see
/// [`op_fuel`]); a typical operator costs 1 fuel, an eighth of a gas unit, because a
/// compiled WASM operator does about as much work in that time as an eighth of an EVM `ADD`.
pub const FUEL_PER_GAS: u64 = 8;

/// Gas for each of the first [`CHEAP_PAGES`] 64 KiB pages of a frame's memory.
pub const PAGE_GAS: u64 = 256;

/// Pages of memory priced at [`PAGE_GAS`] (256 KiB: a typical contract's stack and heap).
pub const CHEAP_PAGES: u64 = 4;

/// Gas for each page of memory past [`CHEAP_PAGES`], initial or grown: about what the time to
/// touch and clear 64 KiB is worth (the EVM charges more than 14,000 gas for its first 64 KiB).
pub const EXTRA_PAGE_GAS: u64 = 4_096;

/// The gas a frame pays for memory of `pages` 64 KiB pages.
pub fn memory_gas(pages: u64) -> u64 {
    PAGE_GAS
        .saturating_mul(pages.min(CHEAP_PAGES))
        .saturating_add(EXTRA_PAGE_GAS.saturating_mul(pages.saturating_sub(CHEAP_PAGES)))
}

/// Gas every WASM frame pays before its module runs, for the instance: taking a slot of the
/// pool (or a ready instance), the store, the entry. An empty WASM contract's call took
/// 3.2–3.5 µs against 0.6–0.7 µs for an EVM contract's (`farol bench wasm`, `wasm.call`);
/// at the EVM's warm `CALL` rate (100 gas for those 0.6–0.7 µs) the 2.6–2.8 µs more are
/// worth about 400 gas. Until stop 43 a WASM frame paid only its memory, so a block of WASM
/// calls ran several times slower per gas than one of EVM calls.
pub const WASM_FRAME_GAS: u64 = 500;

/// Gas per byte of a module that deployment refuses (the EVM's code deposit price): what the
/// node's validation, rewrite and translation of it are paid with before the creation reverts.
pub const REFUSED_BYTE_GAS: u64 = 200;

/// Gas per 32-byte word of active data segments, which instantiation copies into the memory
/// (the EVM's copy price).
pub const DATA_WORD_GAS: u64 = 3;

/// Gas per element of element segments, which instantiation writes into the table (active
/// ones) or sets up (passive ones, on the interpreter): what `table.init` pays per element,
/// [`TABLE_ELEMENT_FUEL`] fuel. Passive segments' elements count since stop 48.
pub const ELEMENT_GAS: u64 = 1;

/// Gas per data or element segment of any kind, which instantiation sets up even when it
/// is empty (a 64 KiB module can hold over 10,000 of them).
pub const SEGMENT_GAS: u64 = 16;

/// The gas a frame of a module described by `info` pays before the module runs: the
/// instance ([`WASM_FRAME_GAS`]), its initial memory ([`memory_gas`]), and what
/// instantiation sets up and copies into it (segments, active data and elements).
pub fn frame_gas(info: &ModuleInfo) -> u64 {
    WASM_FRAME_GAS
        .saturating_add(memory_gas(info.initial_pages))
        .saturating_add(SEGMENT_GAS.saturating_mul(info.segments))
        .saturating_add(DATA_WORD_GAS.saturating_mul(info.active_data_bytes.div_ceil(32)))
        .saturating_add(ELEMENT_GAS.saturating_mul(info.elements))
}

/// WASM frames that may be active at once in one call stack. Each nests native stack frames
/// (the host's and wasmtime's), so this bounds native stack use; a call past it fails like a
/// call past the 1024-frame depth limit.
pub const MAX_WASM_NESTING: usize = 16;

/// Native stack one WASM activation may use, in bytes (wasmtime's `max_wasm_stack`).
/// wasmtime measures it from a store's first WASM frame, and every activation (every nested
/// WASM call) has its own store, so this bounds each activation, not the thread. Farol's count
/// ([`STACK_BUDGET`], about 128 KiB) stops contracts first with room to spare; reaching this
/// limit is a node fault, not a result (before stop 27 it was 4 MiB, so 16 nested activations
/// could in principle have asked for 64 MiB of a thread's stack).
pub const WASM_STACK: usize = 512 << 10;

/// Native stack an executor thread has before it runs a block: executors switch to a fresh
/// stack of [`EXECUTOR_STACK`] bytes when the thread has less than this left. It holds
/// [`MAX_WASM_NESTING`] activations of [`WASM_STACK`] (8 MiB) and the host's frames between
/// them.
pub const EXECUTOR_STACK_NEEDED: usize = 12 << 20;

/// Size of the stack executors run blocks on when the calling thread's is too small, and of
/// the parallel executor's worker threads (address space: pages are used as touched).
pub const EXECUTOR_STACK: usize = 16 << 20;

/// Concurrent WASM instances the pooling allocator holds.
const POOL_INSTANCES: u32 = 1_024;

/// Most worker threads a parallel executor runs (40): each may hold [`MAX_WASM_NESTING`]
/// pooled instances at once, and the pool's other users keep theirs (ready instances and
/// their queue, transient work). With more, a block of deeply nested WASM calls could find
/// the pool empty in parallel where the sequential executor, on one thread, does not, and
/// fail there alone (the node then runs it again sequentially, at twice the cost); found by
/// a review in stop 58, for machines of 41 threads or more.
pub const MAX_PARALLEL_WORKERS: usize =
    (POOL_INSTANCES as usize - READY_LIMIT - QUEUE_LIMIT - TRANSIENT_COMPILED_FRAMES)
        / MAX_WASM_NESTING;
const _: () = assert!(
    MAX_PARALLEL_WORKERS * MAX_WASM_NESTING + READY_LIMIT + QUEUE_LIMIT + TRANSIENT_COMPILED_FRAMES
        <= POOL_INSTANCES as usize
);

/// Why a module cannot be deployed or run.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WasmError {
    /// The module breaks a deployment rule.
    #[error("invalid WASM contract: {0}")]
    Invalid(String),
    /// wasmtime refused the module or the host lacked resources (not a property of the code).
    #[error("WASM runtime: {0}")]
    Runtime(String),
}

/// Whether `code` is a WASM contract's code.
pub fn is_wasm(code: &[u8]) -> bool {
    code.starts_with(&MARKER)
}

/// `MARKER ++ module`: the code a creation returns to deploy `module`.
pub fn contract_code(module: &[u8]) -> Vec<u8> {
    let mut code = Vec::with_capacity(MARKER.len() + module.len());
    code.extend_from_slice(&MARKER);
    code.extend_from_slice(module);
    code
}

/// Call frames the interpreter allows in one activation: above what [`STACK_BUDGET`] lets a
/// module reach (at least [`CALL_OVERHEAD`] slots a frame), so the module's own count is what
/// stops recursion on both tiers.
const INTERP_MAX_DEPTH: usize = 4 * (STACK_BUDGET / CALL_OVERHEAD) as usize;

/// Bytes of value stack the interpreter allows one activation: far above what
/// [`STACK_BUDGET`] slots need, whatever registers the interpreter adds per frame.
const INTERP_MAX_STACK: usize = 64 << 20;

/// The wasmi configuration of the interpreter tier. Like [`config`], changing it could change
/// consensus; it enables the same features.
fn interp_config() -> wasmi::Config {
    let mut c = wasmi::Config::default();
    c.consume_fuel(false)
        // Eager: every function is translated at deployment, so a limit of wasmi's
        // translator refuses the module there, on every node, rather than failing a call on
        // the nodes that happen to interpret it.
        .compilation_mode(wasmi::CompilationMode::Eager)
        .set_max_recursion_depth(INTERP_MAX_DEPTH)
        .set_max_stack_height(INTERP_MAX_STACK)
        .wasm_mutable_global(true)
        .wasm_sign_extension(true)
        .wasm_saturating_float_to_int(true)
        .wasm_multi_value(true)
        .wasm_multi_memory(false)
        .wasm_bulk_memory(true)
        .wasm_reference_types(true)
        .wasm_tail_call(false)
        .wasm_extended_const(true)
        .wasm_custom_page_sizes(false)
        .wasm_memory64(false)
        .wasm_wide_arithmetic(false)
        .floats(true);
    c
}

/// The wasmtime configuration every Farol node uses. Changing any of it changes consensus.
fn config() -> Result<Config, WasmError> {
    let mut c = Config::new();
    c.strategy(Strategy::Cranelift);
    c.cranelift_opt_level(OptLevel::Speed);
    // Deterministic floats: every NaN an operation produces is the canonical one.
    c.cranelift_nan_canonicalization(true);
    // Gas is metered inside the module (see `instrument`), the same on every engine.
    c.consume_fuel(false);
    c.max_wasm_stack(WASM_STACK);
    // Every frame ends through a host function's error (`exit`); nothing reads a backtrace.
    c.wasm_backtrace_max_frames(None);
    // Unused (no async), but wasmtime requires it to be at least `max_wasm_stack`.
    c.async_stack_size(WASM_STACK);
    c.wasm_features(wasmparser::WasmFeatures::all(), false);
    c.wasm_features(validate::FEATURES, true);
    c.relaxed_simd_deterministic(true);
    c.parallel_compilation(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_core_instances(POOL_INSTANCES)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES)
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .table_elements(MAX_TABLE_ELEMENTS as usize)
        .max_memory_size((MAX_MEMORY_PAGES as usize) << 16);
    // Small contract memories are cheaper to reset with memset than with madvise, and a
    // module's data is cheaper to copy than to map copy-on-write (which builds an image per
    // module on its first instantiation).
    pool.linear_memory_keep_resident(1 << 18).table_keep_resident(1 << 16).max_unused_warm_slots(0);
    c.memory_init_cow(false);
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(c)
}

/// A module ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) pre: InstancePre<WtData>,
    pub(crate) info: ModuleInfo,
    /// The exports `call`, `memory` and the fuel global, looked up once.
    pub(crate) call: wasmtime::ModuleExport,
    pub(crate) memory: wasmtime::ModuleExport,
    pub(crate) gas: wasmtime::ModuleExport,
    /// A fresh instance for the next call (see `ready`).
    pub(crate) ready: Mutex<Option<ready::Ready>>,
    /// Whether the helper thread has been asked for the next ready instance.
    pub(crate) preparing: AtomicBool,
    /// Whether the runtime keeps it in memory: one loaded for [`transient`] work alone never
    /// gets a ready instance (it would take a place among those blocks' modules hold).
    pub(crate) kept: bool,
    /// Set when it leaves memory (forgotten or evicted): a ready instance the helper thread
    /// was asked for before is not made, or dropped once made (before, it held a pool slot
    /// and a place among the holders until evicted from them).
    pub(crate) retired: AtomicBool,
}

impl Compiled {
    fn new(pre: InstancePre<WtData>, info: ModuleInfo) -> Result<Compiled, WasmError> {
        let export = |name: &str| {
            pre.module()
                .get_export_index(name)
                .ok_or_else(|| WasmError::Invalid(format!("no export `{name}`")))
        };
        let (call, memory, gas) = (export("call")?, export("memory")?, export(GAS_EXPORT)?);
        let (ready, preparing) = (Mutex::new(None), AtomicBool::new(false));
        let retired = AtomicBool::new(false);
        Ok(Compiled { pre, info, call, memory, gas, ready, preparing, kept: true, retired })
    }
}

/// A module the interpreter runs while Cranelift compiles it (see [`Tier`]).
pub(crate) struct Interpreted {
    pub(crate) module: wasmi::Module,
    pub(crate) info: ModuleInfo,
}

/// What runs a call.
pub(crate) enum Tier {
    Compiled(Arc<Compiled>),
    Interpreted(Arc<Interpreted>),
}

/// Which tier calls use. Both give the same results (they run the same rewritten module);
/// forcing one is for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierChoice {
    /// The compiled module when it is ready, the interpreter until then.
    Auto,
    /// Always wait for the compiled module.
    Compiled,
    /// Always the interpreter.
    Interpreter,
}

enum SlotState {
    Compiling,
    Ready(Arc<Compiled>),
    /// Not compiled: wasmtime refused the module (an implementation limit of the pinned
    /// version, or this node's resources), so calls run on the interpreter, which gives the
    /// same results. A failure of this node's (`WasmError::Runtime`) also removes the slot,
    /// so that the next call compiles again.
    Uncompiled,
}

struct Slot {
    state: Mutex<SlotState>,
    done: Condvar,
    /// The interpreter's form of the module: made with the slot when the module was
    /// validated here, and only when a call needs it for a module loaded compiled from the
    /// disk cache (since stop 44).
    interp: OnceLock<Arc<Interpreted>>,
    /// When it was last used, on the runtime's clock of uses (the least recently used
    /// leaves memory first). Only rises.
    used: AtomicU64,
    /// The use its entry in [`WasmRuntime::order`] names (at most `used`).
    ordered: AtomicU64,
    /// Waiting in the compile queue, not taken by a compile thread yet: it may leave memory
    /// (a compiling one may not), and its job is then skipped unless a caller still waits.
    queued: AtomicBool,
}

impl Slot {
    /// A module validated here, queued for compilation.
    fn new(interp: Arc<Interpreted>, now: u64) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Compiling),
            done: Condvar::new(),
            interp: OnceLock::from(interp),
            used: AtomicU64::new(now),
            ordered: AtomicU64::new(now),
            queued: AtomicBool::new(true),
        })
    }

    /// A module loaded compiled from the disk cache.
    fn loaded(compiled: Arc<Compiled>, now: u64) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Ready(compiled)),
            done: Condvar::new(),
            interp: OnceLock::new(),
            used: AtomicU64::new(now),
            ordered: AtomicU64::new(now),
            queued: AtomicBool::new(false),
        })
    }
}

/// Modules kept in memory at most (compiled, or with their interpreter form); the least
/// recently used of the others leaves when a new one comes. One that left is loaded from the
/// disk cache when it is called, or validated and compiled again if it is not there (the
/// same module, so the same results).
pub const MAX_MODULES: usize = 1_024;

/// Background compilations at most at once; past it a module waits in a queue for one of
/// them, and its calls run on the interpreter meanwhile. (Until stop 40 it compiled on the
/// thread that deployed or called it: a block's executor then waited for Cranelift.)
pub const MAX_COMPILE_THREADS: usize = 4;

/// Compiled frames that [`transient`] work (JSON-RPC calls, traces) may run at once; past
/// it their frames run on the interpreter, whose instances are not the pool's. Each call
/// holds up to [`MAX_WASM_NESTING`] frames, and the pool of instances is shared with block
/// execution: without a bound, on a machine of many cores, concurrent RPC calls could take
/// every instance and stop the blocks.
pub const TRANSIENT_COMPILED_FRAMES: usize = 256;

thread_local! {
    /// Whether this thread runs [`transient`] work now.
    static TRANSIENT: Cell<bool> = const { Cell::new(false) };
    /// What the [`transient`] work running on this thread prepared for itself, by code hash
    /// (the verdict of deployment's checks, and the interpreter's form), and the bytes of
    /// those modules; emptied when the work ends.
    static TRANSIENT_MODULES: std::cell::RefCell<(HashMap<B256, Prepared>, usize)> =
        std::cell::RefCell::new((HashMap::new(), 0));
    /// The modules the [`transient`] work running on this thread loaded compiled from the
    /// disk cache for itself (their bytes count in `TRANSIENT_MODULES`'); emptied with it.
    static TRANSIENT_COMPILED: std::cell::RefCell<HashMap<B256, Arc<Compiled>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// A module prepared for [`transient`] work alone, or why deployment refuses it.
type Prepared = Result<Arc<Interpreted>, WasmError>;

/// Bytes of modules one piece of [`transient`] work keeps prepared for itself. Without
/// them a call that calls one module in a loop would prepare it again at every call; past
/// them it does (each call to another module costs a cold account access, at least 2,600
/// gas).
pub const TRANSIENT_MODULE_BYTES: usize = 4 << 20;

/// Runs `f` as work whose results no block depends on (a JSON-RPC call, an estimate, a
/// trace): a module it deploys or calls that is not in memory is validated and prepared
/// for the interpreter for it alone, neither kept nor compiled, so such work cannot evict
/// the modules blocks use, nor queue compilations ahead of theirs; and at most
/// [`TRANSIENT_COMPILED_FRAMES`] of its frames run compiled at once. Results are the same
/// either way (both tiers give the same results). Until stop 40 an `eth_call` that
/// deployed a thousand modules evicted every module blocks used.
pub fn transient<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            TRANSIENT.with(|t| t.set(self.0));
            if !self.0 {
                TRANSIENT_MODULES.with(|m| *m.borrow_mut() = (HashMap::new(), 0));
                TRANSIENT_COMPILED.with(|m| m.borrow_mut().clear());
            }
        }
    }
    let _restore = Restore(TRANSIENT.with(|t| t.replace(true)));
    f()
}

fn is_transient() -> bool {
    TRANSIENT.with(Cell::get)
}

/// A compilation waiting for a compile thread.
struct CompileJob {
    /// A module that left memory before its turn is skipped, unless a caller waits for it.
    slot: std::sync::Weak<Slot>,
    hash: B256,
    info: ModuleInfo,
    code: Arc<Vec<u8>>,
}

/// Counters of the module cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules compiled here.
    pub compiled: u64,
    /// Modules loaded from the disk cache.
    pub loaded: u64,
    /// Calls that waited for a compilation in progress.
    pub waited: u64,
    /// Calls the interpreter ran (the module was not compiled yet, or could not be).
    pub interpreted: u64,
    /// Modules wasmtime refused to compile: the interpreter runs every call to them.
    pub uncompiled: u64,
    /// Modules that left memory for newer ones ([`MAX_MODULES`]).
    pub evicted: u64,
    /// Modules [`transient`] work prepared for itself alone (not kept).
    pub transient: u64,
    /// Compiled calls that found a ready instance (see [`WasmRuntime::set_ready_instances`]).
    pub ready_calls: u64,
    /// Modules holding a ready instance now.
    pub prepared: u64,
    /// Total time spent compiling.
    pub compile_time: Duration,
    /// WASM frames run.
    pub calls: u64,
    /// Total time inside WASM frames, from revm handing the frame over to the result (nested
    /// frames count in their parents too). For benchmarks only: nothing reads it back into
    /// execution.
    pub call_time: Duration,
}

/// The process's WASM engine and its cache of compiled modules, by code hash.
pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<WtData>,
    interp_engine: wasmi::Engine,
    interp_linker: wasmi::Linker<WiData>,
    /// A [`TierChoice`] as its `u8` (read on every call).
    tier: std::sync::atomic::AtomicU8,
    /// Whether compiled modules keep a ready instance (see `ready`): the [`READY_ON`] bit; the
    /// other bits count the calls that ran on one. One word, so that a call is counted only if
    /// ready instances were on when it took its instance (turning them off is exact).
    ready_word: std::sync::atomic::AtomicU64,
    holders: Mutex<ready::Holders>,
    helper: ready::Helper,
    /// Work queued for the helper thread.
    jobs: Mutex<Vec<ready::Job>>,
    slots: Mutex<HashMap<B256, Arc<Slot>>>,
    /// The modules in memory by the use their entry names (see [`evict_one`]); locked only
    /// with `slots`, after it.
    order: Mutex<std::collections::BTreeSet<(u64, B256)>>,
    /// The clock of module uses ([`Slot::used`]).
    uses: AtomicU64,
    /// Compile threads running.
    compiling: AtomicUsize,
    /// Compilations waiting for a compile thread, oldest first.
    compile_queue: Mutex<std::collections::VecDeque<CompileJob>>,
    /// Compiled frames of [`transient`] work running.
    transient_frames: AtomicUsize,
    disk: Mutex<Option<PathBuf>>,
    /// [`Self::disk_folder`], made once.
    folder: OnceLock<String>,
    stats: Mutex<CacheStats>,
    calls: std::sync::atomic::AtomicU64,
    call_nanos: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The bit of [`WasmRuntime::ready_word`] that says ready instances are on.
const READY_ON: u64 = 1 << 63;

static GLOBAL: OnceLock<Result<WasmRuntime, WasmError>> = OnceLock::new();

/// The disk cache the process's runtime takes when it starts ([`use_disk_cache`]).
static DISK_AT_START: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Whether [`DISK_AT_START`] changed since the runtime last took it.
static DISK_PENDING: AtomicBool = AtomicBool::new(false);

/// The runtime takes [`DISK_AT_START`] if it changed since it last did.
fn take_pending_disk(runtime: &WasmRuntime) {
    if DISK_PENDING.load(AtomicOrdering::Acquire)
        && DISK_PENDING.swap(false, AtomicOrdering::AcqRel)
    {
        runtime.set_disk_cache(lock(&DISK_AT_START).clone());
    }
}

/// Keeps the process's compiled modules under `dir` ([`WasmRuntime::set_disk_cache`])
/// without starting the runtime: one that has not started yet takes `dir` when it does. A
/// node calls this at start, so that a node whose chain never runs WASM never reserves the
/// runtime's memory.
pub fn use_disk_cache(dir: PathBuf) {
    // Set before the runtime is looked at: one that starts meanwhile reads it, or takes it
    // at its next `global()` (the flag).
    *lock(&DISK_AT_START) = Some(dir);
    DISK_PENDING.store(true, AtomicOrdering::Release);
    if let Some(Ok(runtime)) = GLOBAL.get() {
        take_pending_disk(runtime);
    }
}

impl WasmRuntime {
    /// The runtime every executor in this process shares.
    pub fn global() -> Result<&'static WasmRuntime, WasmError> {
        let runtime = GLOBAL.get_or_init(WasmRuntime::new).as_ref().map_err(Clone::clone)?;
        take_pending_disk(runtime);
        Ok(runtime)
    }

    fn new() -> Result<WasmRuntime, WasmError> {
        let rt = |e: wasmtime::Error| WasmError::Runtime(e.to_string());
        let engine = Engine::new(&config()?).map_err(rt)?;
        let mut linker = Linker::new(&engine);
        host::define_wasmtime(&mut linker).map_err(rt)?;
        let interp_engine = wasmi::Engine::new(&interp_config());
        let mut interp_linker = wasmi::Linker::new(&interp_engine);
        host::define_wasmi(&mut interp_linker).map_err(|e| WasmError::Runtime(e.to_string()))?;
        DISK_PENDING.store(false, AtomicOrdering::Release);
        let disk = lock(&DISK_AT_START).clone();
        let tier = match std::env::var("FAROL_WASM_TIER").as_deref() {
            Ok("compiled") => TierChoice::Compiled,
            Ok("interpreter") => TierChoice::Interpreter,
            _ => TierChoice::Auto,
        };
        let runtime = WasmRuntime {
            engine,
            linker,
            interp_engine,
            interp_linker,
            tier: std::sync::atomic::AtomicU8::new(tier as u8),
            ready_word: std::sync::atomic::AtomicU64::new(
                if std::env::var("FAROL_WASM_READY").as_deref() == Ok("0") { 0 } else { READY_ON },
            ),
            holders: Mutex::default(),
            helper: ready::Helper::new(),
            jobs: Mutex::default(),
            slots: Mutex::new(HashMap::new()),
            order: Mutex::default(),
            uses: AtomicU64::new(0),
            compiling: AtomicUsize::new(0),
            compile_queue: Mutex::default(),
            transient_frames: AtomicUsize::new(0),
            disk: Mutex::new(None),
            folder: OnceLock::new(),
            stats: Mutex::new(CacheStats::default()),
            calls: Default::default(),
            call_nanos: Default::default(),
        };
        if disk.is_some() {
            runtime.set_disk_cache(disk);
        }
        Ok(runtime)
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn interp_linker(&self) -> &wasmi::Linker<WiData> {
        &self.interp_linker
    }

    /// Sets which tier runs calls from now on (the environment variable `FAROL_WASM_TIER`,
    /// `compiled` or `interpreter`, sets it at start). Results do not depend on it.
    pub fn set_tier(&self, tier: TierChoice) {
        self.tier.store(tier as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// Which tier runs calls now.
    pub fn tier(&self) -> TierChoice {
        match self.tier.load(std::sync::atomic::Ordering::Relaxed) {
            x if x == TierChoice::Compiled as u8 => TierChoice::Compiled,
            x if x == TierChoice::Interpreter as u8 => TierChoice::Interpreter,
            _ => TierChoice::Auto,
        }
    }

    /// Whether compiled modules keep an instance ready for their next call, made on another
    /// thread, which also drops it after the call (on by default; the environment variable
    /// `FAROL_WASM_READY=0` turns it off at start). Off, every call instantiates and drops its
    /// own instance. Results do not depend on it.
    pub fn set_ready_instances(&self, on: bool) {
        use std::sync::atomic::Ordering::AcqRel;
        if on {
            self.ready_word.fetch_or(READY_ON, AcqRel);
        } else {
            self.ready_word.fetch_and(!READY_ON, AcqRel);
            self.unprepare_all();
        }
    }

    /// Whether ready instances are on.
    pub fn ready_instances(&self) -> bool {
        self.ready_word.load(std::sync::atomic::Ordering::Acquire) & READY_ON != 0
    }

    /// Whether the module with code hash `hash` is compiled and has an instance ready.
    pub fn is_prepared(&self, hash: B256) -> bool {
        self.compiled(hash).is_some_and(|c| lock(&c.ready).is_some())
    }

    /// The compiled module with code hash `hash`, if it is in memory.
    fn compiled(&self, hash: B256) -> Option<Arc<Compiled>> {
        let slot = lock(&self.slots).get(&hash).cloned()?;
        let state = lock(&slot.state);
        match &*state {
            SlotState::Ready(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// The interpreter's form of the module in `slot`, whose code is `code`: made now for a
    /// module loaded compiled from the disk cache. That module passed the same checks with the
    /// same rules when it was compiled (the cache's folder is named by them), so a failure
    /// here is this node's fault, not the module's.
    fn slot_interp(&self, slot: &Slot, code: &[u8]) -> Result<Arc<Interpreted>, WasmError> {
        if let Some(i) = slot.interp.get() {
            return Ok(i.clone());
        }
        let info = match &*lock(&slot.state) {
            SlotState::Ready(c) => c.info,
            _ => return Err(WasmError::Runtime("a module without its interpreter form".into())),
        };
        let fault = |e: WasmError| WasmError::Runtime(format!("a cached module: {e}"));
        let module = code.strip_prefix(&MARKER).ok_or_else(|| {
            fault(WasmError::Invalid("the code does not start with the marker".into()))
        })?;
        let rewritten = instrument::rewrite(module, true).map_err(fault)?;
        let made = self.interpreted(&rewritten, info).map_err(fault)?;
        Ok(slot.interp.get_or_init(|| made).clone())
    }

    /// The interpreter's form of `module` (the rewritten bytes).
    fn interpreted(&self, code: &[u8], info: ModuleInfo) -> Result<Arc<Interpreted>, WasmError> {
        let module = wasmi::Module::new(&self.interp_engine, code)
            .map_err(|e| WasmError::Invalid(format!("the interpreter refused the module: {e}")))?;
        Ok(Arc::new(Interpreted { module, info }))
    }

    /// Keeps compiled modules under `dir` too (`None`: memory only). Files are named by code
    /// hash under a folder named by Farol's version, wasmtime's compatibility hash and the
    /// build's rules ([`rules_fingerprint`]), so another build never loads this one's output.
    /// The folders of other builds under `dir`, and files a write left half done, are
    /// removed.
    pub fn set_disk_cache(&self, dir: Option<PathBuf>) {
        if let Some(dir) = &dir {
            self.clean_disk_cache(dir);
        }
        *lock(&self.disk) = dir;
    }

    /// Removes what [`Self::set_disk_cache`] says from `dir`, on a thread of its own (the
    /// runtime may start on a block's executor, and an old folder may hold thousands of
    /// files). Failures are left alone: the cache is only slower, or larger, for them.
    fn clean_disk_cache(&self, dir: &Path) {
        let current = self.disk_folder().to_owned();
        let dir = dir.to_path_buf();
        let clean = move || {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("wasmtime-") && name != current {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            for entry in std::fs::read_dir(dir.join(&current)).into_iter().flatten().flatten() {
                let path = entry.path();
                // A minute old: not one a compile thread is writing now.
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(60)));
                if stale && path.extension().is_some_and(|e| e.to_string_lossy().starts_with("tmp"))
                {
                    let _ = std::fs::remove_file(path);
                }
            }
        };
        let _ = std::thread::Builder::new().name("farol-wasm-clean".into()).spawn(clean);
    }

    /// The name of this build's folder in the disk cache.
    fn disk_folder(&self) -> &str {
        self.folder.get_or_init(|| {
            let mut engine = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut engine);
            let tag = std::hash::Hasher::finish(&engine);
            let rules = alloy_primitives::hex::encode(&rules_fingerprint()[..8]);
            format!("wasmtime-{}-{tag:016x}-{rules}", env!("CARGO_PKG_VERSION"))
        })
    }

    /// The folder of the disk cache, if it is on.
    pub fn disk_cache(&self) -> Option<PathBuf> {
        lock(&self.disk).clone()
    }

    /// The file of the disk cache that holds (or would hold) the compiled module whose code
    /// hash is `hash`; `None` if the cache is off.
    pub fn cache_file(&self, hash: B256) -> Option<PathBuf> {
        self.disk_path(hash)
    }

    /// Compiled frames of [`transient`] work running now.
    pub fn transient_frames(&self) -> usize {
        self.transient_frames.load(AtomicOrdering::Acquire)
    }

    /// Counters since the process started.
    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        let mut s = *lock(&self.stats);
        s.calls = self.calls.load(Relaxed);
        s.ready_calls = self.ready_word.load(Relaxed) & !READY_ON;
        s.prepared = self.prepared_count();
        s.call_time = Duration::from_nanos(self.call_nanos.load(Relaxed));
        s
    }

    /// Counts one WASM frame that took `took`.
    pub(crate) fn record_call(&self, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls.fetch_add(1, Relaxed);
        self.call_nanos.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Validates `code` (marker and module) and starts compiling it on a background thread.
    /// Returns the code hash.
    pub fn deploy(&'static self, code: &[u8]) -> Result<B256, WasmError> {
        let module = code
            .strip_prefix(&MARKER)
            .ok_or_else(|| WasmError::Invalid("the code does not start with the marker".into()))?;
        let info = validate(module)?;
        let hash = keccak256(code);
        if let Some(s) = lock(&self.slots).get(&hash) {
            s.used.fetch_max(
                self.uses.fetch_add(1, AtomicOrdering::Relaxed),
                AtomicOrdering::Relaxed,
            );
            return Ok(hash);
        }
        if is_transient() {
            // The same checks as `start` makes, so the same verdict, and nothing kept.
            self.prepared_alone(hash, module, Some(info))?;
            return Ok(hash);
        }
        self.start(hash, module, info)?;
        Ok(hash)
    }

    /// `module` (of code hash `hash`; `info` if it was validated) validated, rewritten and
    /// prepared for the interpreter for the [`transient`] work running on this thread: not
    /// kept by the runtime, not compiled; kept by the work while its modules' bytes allow.
    fn prepared_alone(
        &self,
        hash: B256,
        module: &[u8],
        info: Option<ModuleInfo>,
    ) -> Result<Arc<Interpreted>, WasmError> {
        if let Some(p) = TRANSIENT_MODULES.with(|m| m.borrow().0.get(&hash).cloned()) {
            return p;
        }
        let prepared = (|| {
            let info = match info {
                Some(info) => info,
                None => validate(module)?,
            };
            let code = instrument::rewrite(module, true)?;
            self.interpreted(&code, info)
        })();
        lock(&self.stats).transient += 1;
        TRANSIENT_MODULES.with(|m| {
            let (modules, bytes) = &mut *m.borrow_mut();
            if *bytes + module.len() <= TRANSIENT_MODULE_BYTES {
                *bytes += module.len();
                modules.insert(hash, prepared.clone());
            }
        });
        prepared
    }

    /// Takes one of the [`TRANSIENT_COMPILED_FRAMES`] places for a compiled frame of
    /// [`transient`] work (given back by `frame_ended`); false when all are taken.
    fn take_transient_frame(&self) -> bool {
        self.transient_frames
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < TRANSIENT_COMPILED_FRAMES).then_some(n + 1)
            })
            .is_ok()
    }

    /// The module of code hash `hash` (`bytes` long), compiled, for the [`transient`] work
    /// running on this thread: from what it loaded before, or from the disk cache, kept by the
    /// work while its modules' bytes allow; never kept by the runtime, never given a ready
    /// instance.
    fn transient_compiled(&self, hash: B256, bytes: usize) -> Option<Arc<Compiled>> {
        if let Some(c) = TRANSIENT_COMPILED.with(|m| m.borrow().get(&hash).cloned()) {
            return Some(c);
        }
        let c = self.load_from_disk(hash, None, false)?;
        let room = TRANSIENT_MODULES.with(|m| {
            let (_, used) = &mut *m.borrow_mut();
            let room = *used + bytes <= TRANSIENT_MODULE_BYTES;
            if room {
                *used += bytes;
            }
            room
        });
        if room {
            TRANSIENT_COMPILED.with(|m| m.borrow_mut().insert(hash, c.clone()));
        }
        Some(c)
    }

    /// Rewrites `module` (validated, `info`; its code's hash is `hash`), prepares it for the
    /// interpreter and starts compiling it on a background thread; returns its slot.
    fn start(
        &'static self,
        hash: B256,
        module: &[u8],
        info: ModuleInfo,
    ) -> Result<Arc<Slot>, WasmError> {
        let code = Arc::new(instrument::rewrite(module, true)?);
        let interp = self.interpreted(&code, info)?;
        let (slot, new) = self.insert(hash, |now| Slot::new(interp, now));
        if !new {
            return Ok(slot);
        }
        let job = CompileJob { slot: Arc::downgrade(&slot), hash, info, code };
        lock(&self.compile_queue).push_back(job);
        self.spawn_compiler();
        Ok(slot)
    }

    /// The slot held for `hash`, or `make`'s (given the clock of uses), put in memory in place
    /// of the least recently used module when memory is full; and whether it is `make`'s.
    fn insert(&self, hash: B256, make: impl FnOnce(u64) -> Arc<Slot>) -> (Arc<Slot>, bool) {
        let now = self.uses.fetch_add(1, AtomicOrdering::Relaxed);
        let (slot, evicted) = {
            let mut slots = lock(&self.slots);
            if let Some(s) = slots.get(&hash) {
                return (s.clone(), false);
            }
            let mut order = lock(&self.order);
            let evicted =
                if slots.len() >= MAX_MODULES { evict_one(&mut slots, &mut order) } else { None };
            let slot = make(now);
            slots.insert(hash, slot.clone());
            order.insert((now, hash));
            (slot, evicted)
        };
        if let Some(old) = evicted {
            lock(&self.stats).evicted += 1;
            if let SlotState::Ready(c) = &*lock(&old.state) {
                self.retire(c);
            }
        }
        (slot, true)
    }

    /// Starts a compile thread for the queue, unless [`MAX_COMPILE_THREADS`] run (one of
    /// them takes the job when it is done with its own). The count is raised only when a
    /// thread is to start, so a caller that finds all places taken never holds one. When the
    /// system refuses the thread, the caller works through the queue itself with the place
    /// it took, so that no job waits forever.
    fn spawn_compiler(&'static self) {
        let reserved = self
            .compiling
            .fetch_update(AtomicOrdering::AcqRel, AtomicOrdering::Acquire, |n| {
                (n < MAX_COMPILE_THREADS).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("farol-wasm-compile".into())
            .spawn(move || self.compile_queued())
            .is_ok();
        if !spawned {
            self.compile_queued();
        }
    }

    /// A compile thread: takes jobs until the queue is empty, then gives its place back. It
    /// gives it back under the queue's lock, so a job queued after it looked finds the place
    /// free and starts a thread of its own; and also if a job panics (the job's waiters are
    /// woken by `compile_job`).
    fn compile_queued(&self) {
        struct Place<'a>(&'a AtomicUsize);
        impl Drop for Place<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, AtomicOrdering::AcqRel);
            }
        }
        let mut place = Some(Place(&self.compiling));
        while place.is_some() {
            let job = {
                let mut queue = lock(&self.compile_queue);
                let job = queue.pop_front();
                if job.is_none() {
                    place = None;
                }
                job
            };
            if let Some(job) = job {
                self.compile_job(job);
            }
        }
    }

    /// Compiles a queued module, unless it left memory and nobody waits for it. A panic in
    /// the engine finishes the slot as not compiled and drops it from memory (as a failure
    /// of this node: the next call starts again), so that nobody waits for it forever.
    fn compile_job(&self, job: CompileJob) {
        let Some(slot) = job.slot.upgrade() else { return };
        slot.queued.store(false, AtomicOrdering::Release);
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.compile_into(&slot, job.hash, job.info, &job.code)
        }));
        if compiled.is_err() {
            finish(&slot, Err(WasmError::Runtime("the compiler panicked".into())));
            self.remove_if_current(job.hash, &slot);
        }
    }

    /// How many modules are in memory now.
    pub fn modules(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Whether the module with code hash `hash` is in memory (compiled or not).
    pub fn holds(&self, hash: B256) -> bool {
        lock(&self.slots).contains_key(&hash)
    }

    /// Loads or compiles the rewritten module `code` into `slot`.
    fn compile_into(&self, slot: &Slot, hash: B256, info: ModuleInfo, code: &[u8]) {
        let result = self.load_or_compile(hash, info, code);
        // The first instantiation's work (and the pool slot's) is done here, not on the first
        // call; not for a module that left memory (its ready instance would wait for nothing).
        if let Ok(c) = &result {
            if is_current(&lock(&self.slots), hash, slot) {
                self.prepare(c);
                if lock(&c.ready).is_none() {
                    ready::warm_up(&self.engine, c);
                }
            }
        }
        // Calls to a module wasmtime refused run on the interpreter from now on (before stop
        // 27 they halted like INVALID: a refusal caused by this node's resources then gave
        // this node other results than the rest). A failure of this node is retried by the
        // next call.
        let retry = matches!(result, Err(WasmError::Runtime(_)));
        if matches!(result, Err(WasmError::Invalid(_))) {
            lock(&self.stats).uncompiled += 1;
        }
        finish(slot, result);
        if retry {
            self.remove_if_current(hash, slot);
        }
    }

    /// Drops `slot` from memory if it is still the one held for `hash`.
    fn remove_if_current(&self, hash: B256, slot: &Slot) {
        let mut slots = lock(&self.slots);
        if is_current(&slots, hash, slot) {
            self.remove(&mut slots, hash);
        }
    }

    /// Drops the module `hash` from `slots` (the runtime's, locked) and its entry from
    /// [`Self::order`], so that the set holds one entry per module in memory.
    fn remove(&self, slots: &mut HashMap<B256, Arc<Slot>>, hash: B256) {
        if let Some(s) = slots.remove(&hash) {
            lock(&self.order).remove(&(s.ordered.load(AtomicOrdering::Relaxed), hash));
        }
    }

    /// Whether the module with code hash `hash` is compiled and in memory.
    pub fn is_ready(&self, hash: B256) -> bool {
        self.compiled(hash).is_some()
    }

    /// Waits until the module with code hash `hash` is no longer compiling.
    pub fn wait(&self, hash: B256) {
        let slot = lock(&self.slots).get(&hash).cloned();
        if let Some(slot) = slot {
            let mut state = lock(&slot.state);
            while matches!(*state, SlotState::Compiling) {
                state = slot.done.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Drops the module with code hash `hash` from memory (the disk copy stays).
    pub fn forget(&self, hash: B256) {
        self.wait(hash);
        if let Some(c) = self.compiled(hash) {
            self.retire(&c);
        }
        self.remove(&mut lock(&self.slots), hash);
    }

    /// What runs a call to `code`, whose hash is `hash`: the compiled module from memory or,
    /// if it is not in memory, from the disk cache; or the interpreter while Cranelift is
    /// still compiling (a module neither in memory nor on disk is validated and compiled
    /// again).
    pub(crate) fn get(&'static self, hash: B256, code: &[u8]) -> Result<Tier, WasmError> {
        let choice = self.tier();
        let existing = lock(&self.slots).get(&hash).cloned();
        if let Some(s) = &existing {
            s.used.fetch_max(
                self.uses.fetch_add(1, AtomicOrdering::Relaxed),
                AtomicOrdering::Relaxed,
            );
        }
        let transient = is_transient();
        let slot = match existing {
            Some(s) => s,
            None => {
                let module = code.strip_prefix(&MARKER).ok_or_else(|| {
                    WasmError::Invalid("the code does not start with the marker".into())
                })?;
                if transient {
                    // Compiled from the disk cache for this work alone, within its share of
                    // compiled frames (since stop 44; before, always the interpreter, after
                    // validation and the rewrite: about 3 ms for a 41 KiB module).
                    if choice != TierChoice::Interpreter {
                        let compiled = self.transient_compiled(hash, module.len());
                        if let Some(c) = compiled.filter(|_| self.take_transient_frame()) {
                            return Ok(Tier::Compiled(c));
                        }
                    }
                    let interp = self.prepared_alone(hash, module, None)?;
                    lock(&self.stats).interpreted += 1;
                    return Ok(Tier::Interpreted(interp));
                }
                // A module that passed deployment here before is on disk, compiled (since
                // stop 44): loading it skips validation, the rewrite and the interpreter's
                // translation, which cost a module that left memory about 3 ms a call for
                // 41 KiB (docs/wasm.md §5).
                match self.load_from_disk(hash, None, true) {
                    Some(c) => self.insert(hash, |now| Slot::loaded(c, now)).0,
                    None => {
                        let info = validate(module)?;
                        self.start(hash, module, info)?
                    }
                }
            }
        };
        let interp = || {
            let i = match self.slot_interp(&slot, code) {
                Ok(i) => i,
                // A module loaded from disk whose interpreter form this node cannot make:
                // left out of memory, and prepared as deployment prepares it, which gives
                // deployment's verdict (an invalid module halts the call as on every node).
                Err(_) => {
                    self.remove_if_current(hash, &slot);
                    let module = code.strip_prefix(&MARKER).ok_or_else(|| {
                        WasmError::Invalid("the code does not start with the marker".into())
                    })?;
                    let info = validate(module)?;
                    self.interpreted(&instrument::rewrite(module, true)?, info)?
                }
            };
            lock(&self.stats).interpreted += 1;
            Ok(Tier::Interpreted(i))
        };
        // Transient work past its share of compiled frames runs on the interpreter.
        let over_share = || transient && !self.take_transient_frame();
        if choice == TierChoice::Interpreter {
            return interp();
        }
        let mut state = lock(&slot.state);
        if matches!(*state, SlotState::Compiling) {
            if choice == TierChoice::Auto {
                drop(state);
                return interp();
            }
            lock(&self.stats).waited += 1;
        }
        while matches!(*state, SlotState::Compiling) {
            state = slot.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match &*state {
            SlotState::Ready(_) if over_share() => {
                drop(state);
                interp()
            }
            SlotState::Ready(c) => Ok(Tier::Compiled(c.clone())),
            SlotState::Uncompiled => {
                drop(state);
                interp()
            }
            SlotState::Compiling => Err(WasmError::Runtime("compilation did not finish".into())),
        }
    }

    /// A frame that `get` gave `tier` ended: a compiled frame of [`transient`] work gives
    /// its place in the share back.
    pub(crate) fn frame_ended(&self, tier: &Tier) {
        if matches!(tier, Tier::Compiled(_)) && is_transient() {
            self.transient_frames.fetch_sub(1, AtomicOrdering::AcqRel);
        }
    }

    /// Where the compiled form of the module whose code hash is `hash` is kept on disk:
    /// under a folder named by Farol's version, wasmtime's compatibility hash and
    /// [`rules_fingerprint`], so that a build whose checks or rewrite differ (other gas
    /// rules) never loads another's output. (Before stop 38 the name held only the code hash
    /// and the crate version, which is not bumped when the rules change; from stop 38 to 43 it
    /// held the rewritten module's hash, which needs the rewrite done before the file can be
    /// looked up.)
    fn disk_path(&self, hash: B256) -> Option<PathBuf> {
        let dir = lock(&self.disk).clone()?;
        Some(dir.join(self.disk_folder()).join(format!("{hash:x}.cwasm")))
    }

    /// The module whose code hash is `hash`, compiled, from the disk cache: `None` if the
    /// cache is off, has no file for it, or the file fails the checks (among them, when
    /// `expected` is given, that its [`ModuleInfo`] is that one).
    fn load_from_disk(
        &self,
        hash: B256,
        expected: Option<ModuleInfo>,
        kept: bool,
    ) -> Option<Arc<Compiled>> {
        let path = self.disk_path(hash)?;
        // Read, not mapped: a file changed under a mapping would fault the process.
        let bytes = std::fs::read(path).ok()?;
        let (info, compiled) = decode_cached(&bytes, hash)?;
        if expected.is_some_and(|e| e != info) {
            return None;
        }
        // This runs on the executor's thread: a panic in the engine is a file not used.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the bytes come from `Module::serialize` of an engine with the same
            // compatibility hash (the folder name), in this node's own cache directory, under
            // a checksum that `decode_cached` checked, and wasmtime checks their header and
            // engine settings before using them; a file that fails those checks is not used
            // (the module is then validated and compiled again, and the file written anew).
            #[allow(unsafe_code)]
            let m = unsafe { Module::deserialize(&self.engine, compiled) }.ok()?;
            let pre = self.linker.instantiate_pre(&m).ok()?;
            Compiled::new(pre, info).ok().map(|c| Compiled { kept, ..c })
        }));
        let c = loaded.ok().flatten()?;
        lock(&self.stats).loaded += 1;
        Some(Arc::new(c))
    }

    /// The compiled form of the rewritten module `code` (validated: `info`): from the disk
    /// cache, or compiled now (and written there).
    fn load_or_compile(
        &self,
        hash: B256,
        info: ModuleInfo,
        code: &[u8],
    ) -> Result<Arc<Compiled>, WasmError> {
        if let Some(c) = self.load_from_disk(hash, Some(info), true) {
            return Ok(c);
        }
        let started = Instant::now();
        let m = Module::new(&self.engine, code)
            .map_err(|e| WasmError::Invalid(format!("wasmtime refused the module: {e}")))?;
        {
            let mut s = lock(&self.stats);
            s.compiled += 1;
            s.compile_time += started.elapsed();
        }
        if let Some(path) = self.disk_path(hash) {
            store_file(&path, hash, info, &m);
        }
        let pre = self.linker.instantiate_pre(&m).map_err(|e| WasmError::Runtime(e.to_string()))?;
        Compiled::new(pre, info).map(Arc::new)
    }
}

/// What the build's checks and rewrite of modules are made of: the sources of the
/// validation, the rewrite, the constants and host signatures they use, the versions of
/// every dependency (`Cargo.lock`: the parser and encoder among them) and their features
/// (the workspace's and this crate's `Cargo.toml`). A cached module is
/// used only by a build with the same fingerprint, so one whose rules differ in any way
/// compiles its own (a comment's change costs a recompilation, nothing else).
fn rules_fingerprint() -> &'static B256 {
    static RULES: OnceLock<B256> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut sources = Vec::new();
        for part in [
            include_str!("validate.rs"),
            include_str!("instrument.rs"),
            include_str!("mod.rs"),
            include_str!("host.rs"),
            include_str!("../../../../Cargo.lock"),
            // The dependencies' features (which the lock does not record).
            include_str!("../../../../Cargo.toml"),
            include_str!("../../Cargo.toml"),
        ] {
            sources.extend_from_slice(&(part.len() as u64).to_le_bytes());
            sources.extend_from_slice(part.as_bytes());
        }
        keccak256(&sources)
    })
}

/// The first bytes of a file of the disk cache. The file then holds the module's code
/// hash (32 bytes), its [`ModuleInfo`] (four little-endian `u64`s), a BLAKE3 hash of all
/// that and of the rest (32 bytes), and the serialized module.
const DISK_MAGIC: &[u8; 8] = b"FAROLWM2";

/// Bytes before the serialized module in a file of the disk cache.
const DISK_HEADER: usize = 8 + 32 + 32 + 32;

/// A file of the disk cache for the module of code hash `hash`: its [`ModuleInfo`], which
/// deployment's checks computed, and its compiled form, under a checksum.
fn encode_cached(hash: B256, info: ModuleInfo, compiled: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DISK_HEADER + compiled.len());
    out.extend_from_slice(DISK_MAGIC);
    out.extend_from_slice(hash.as_slice());
    for n in [info.initial_pages, info.active_data_bytes, info.elements, info.segments] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    let sum = checksum(&out, compiled);
    out.extend_from_slice(&sum);
    out.extend_from_slice(compiled);
    out
}

fn checksum(head: &[u8], compiled: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(compiled);
    *h.finalize().as_bytes()
}

/// The parts of a file of the disk cache for the module of code hash `hash`; `None` for
/// one that is not such a file: another magic, another module's, or any byte changed or
/// missing (a damaged disk, a write cut short).
fn decode_cached(bytes: &[u8], hash: B256) -> Option<(ModuleInfo, &[u8])> {
    let (head, compiled) = bytes.split_at_checked(DISK_HEADER)?;
    let (fields, sum) = head.split_at(DISK_HEADER - 32);
    let rest = fields.strip_prefix(DISK_MAGIC)?;
    let (named, info) = rest.split_at(32);
    if named != hash.as_slice() || sum != checksum(fields, compiled) {
        return None;
    }
    let mut n = info.chunks_exact(8).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        u64::from_le_bytes(b)
    });
    let mut next = || n.next();
    let info = ModuleInfo {
        initial_pages: next()?,
        active_data_bytes: next()?,
        elements: next()?,
        segments: next()?,
    };
    Some((info, compiled))
}

/// Writes a compiled module next to its final name and renames it there, so a reader never
/// sees half a file. A cache that cannot be written is only slower.
fn store_file(path: &Path, hash: B256, info: ModuleInfo, m: &Module) {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let Ok(compiled) = m.serialize() else { return };
    let bytes = encode_cached(hash, info, &compiled);
    let Some(dir) = path.parent() else { return };
    // The folder and the cache's own, inside a directory that exists (a node's data
    // directory): never a removed directory made again.
    let home = dir.parent().and_then(Path::parent);
    if !home.is_some_and(Path::is_dir) || std::fs::create_dir_all(dir).is_err() {
        return;
    }
    // A name of its own per write: two compilations of one module may write at once.
    let n = WRITES.fetch_add(1, AtomicOrdering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_err() || std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Whether `slot` is the one `slots` holds for `hash` (a slot may have left memory while
/// queued, and a newer one come for the same hash).
fn is_current(slots: &HashMap<B256, Arc<Slot>>, hash: B256, slot: &Slot) -> bool {
    slots.get(&hash).is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), slot))
}

/// Takes the least recently used module that is not compiling out of `slots`.
///
/// `order` holds one entry per module in memory, `(stamp, hash)`, whose stamp is the
/// module's `ordered`, at most its `used` (a call raises `used` alone, without a lock). The
/// first entry whose stamp is still its module's `used` is the least recently used module:
/// every other entry's stamp is at least its, and every other module's `used` at least its
/// stamp. An entry whose module was used since is put back under its `used`; one whose
/// module left memory (or came back, with an entry of its own) is dropped. So an eviction
/// costs O(log n) per entry it looks at, and each call makes at most one entry to look at
/// again; before stop 44 it read all 1,024 modules' state under their locks (about 10 µs of
/// each load in `farol bench wasm --only evicted_loop.tiny`).
fn evict_one(
    slots: &mut HashMap<B256, Arc<Slot>>,
    order: &mut std::collections::BTreeSet<(u64, B256)>,
) -> Option<Arc<Slot>> {
    // Every removal takes its module's entry out too; entries of modules gone from memory
    // would only be a bug's, dropped when met, and swept past a bound.
    if order.len() > 2 * slots.len() + 64 {
        order.retain(|(stamp, h)| {
            slots.get(h).is_some_and(|s| s.ordered.load(AtomicOrdering::Relaxed) == *stamp)
        });
    }
    let mut compiling = Vec::new();
    let victim = loop {
        let Some((stamp, hash)) = order.pop_first() else { break None };
        let Some(slot) = slots.get(&hash) else { continue };
        if slot.ordered.load(AtomicOrdering::Relaxed) != stamp {
            continue;
        }
        let used = slot.used.load(AtomicOrdering::Relaxed);
        if used != stamp {
            slot.ordered.store(used, AtomicOrdering::Relaxed);
            order.insert((used, hash));
        } else if slot.queued.load(AtomicOrdering::Acquire)
            || !matches!(*lock(&slot.state), SlotState::Compiling)
        {
            break Some(hash);
        } else {
            compiling.push((stamp, hash));
        }
    };
    order.extend(compiling);
    slots.remove(&victim?)
}

fn finish(slot: &Slot, result: Result<Arc<Compiled>, WasmError>) {
    *lock(&slot.state) = match result {
        Ok(c) => SlotState::Ready(c),
        Err(_) => SlotState::Uncompiled,
    };
    slot.done.notify_all();
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The EVM both executors run: revm's mainnet EVM with [`FarolPrecompiles`] and, when
/// `chain.wasm`, the deployment check on RETURN.
pub(crate) type FarolEvm<CTX, INSP> = revm::context::Evm<
    CTX,
    INSP,
    revm::handler::instructions::EthInstructions<
        revm::interpreter::interpreter::EthInterpreter,
        CTX,
    >,
    FarolPrecompiles,
    revm::handler::EthFrame<revm::interpreter::interpreter::EthInterpreter>,
>;

/// Builds a [`FarolEvm`] over `ctx` for `chain`.
pub(crate) fn build_evm<CTX: revm::context::ContextTr, INSP>(
    ctx: CTX,
    inspector: INSP,
    chain: &crate::ChainSpec,
) -> FarolEvm<CTX, INSP> {
    revm::context::Evm::new_with_inspector(
        ctx,
        inspector,
        instructions(chain.spec, chain.wasm),
        FarolPrecompiles::new(chain.spec, chain.wasm),
    )
}

/// Init code that deploys `code` as is: it copies the bytes that follow it to memory and
/// returns them. With `code = contract_code(module)` it deploys a WASM contract.
pub fn deploy_code(code: &[u8]) -> Vec<u8> {
    const PREFIX: u8 = 13;
    let len = u32::try_from(code.len()).unwrap_or(u32::MAX).min(0x00ff_ffff).to_be_bytes();
    let mut init = vec![
        0x62, len[1], len[2], len[3], // PUSH3 size
        0x80,   // DUP1
        0x60, PREFIX, // PUSH1 offset of the code
        0x60, 0x00, // PUSH1 0
        0x39, // CODECOPY
        0x60, 0x00, // PUSH1 0
        0xf3, // RETURN
    ];
    init.extend_from_slice(code);
    init
}

/// State of [`time_standalone`]'s store.
struct Standalone {
    input: Vec<u8>,
    output: Vec<u8>,
    memory: Option<wasmtime::Memory>,
}

/// Runs the `call` export of `module` outside any chain, `runs` times, each in a fresh
/// instance, with Farol's engine settings, with gas metered or not as `metered` says. Only
/// `calldata_size`, `calldata_copy` and `exit` work; other imports trap.
/// Returns the output and the time of each run's call (instantiation excluded). For
/// measuring what fuel metering costs (`farol bench wasm`).
pub fn time_standalone(
    module: &[u8],
    input: &[u8],
    metered: bool,
    runs: usize,
) -> Result<(Vec<u8>, Vec<Duration>), WasmError> {
    use wasmtime::{Caller, Store};
    let rt = |e: wasmtime::Error| WasmError::Runtime(e.to_string());
    let mut c = config()?;
    c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    let engine = Engine::new(&c).map_err(rt)?;
    let m = Module::new(&engine, &instrument::rewrite(module, metered)?).map_err(rt)?;
    let mut linker: Linker<Standalone> = Linker::new(&engine);
    linker
        .func_wrap(HOST_MODULE, "calldata_size", |c: Caller<'_, Standalone>| {
            c.data().input.len() as u32
        })
        .map_err(rt)?;
    linker
        .func_wrap(
            HOST_MODULE,
            "calldata_copy",
            |mut c: Caller<'_, Standalone>, dst: u32, off: u32, len: u32| -> wasmtime::Result<()> {
                let (off, len, dst) = (off as usize, len as usize, dst as usize);
                let bytes = c.data().input.get(off..off + len).map(<[u8]>::to_vec);
                let memory = c.data().memory;
                match (bytes, memory) {
                    (Some(b), Some(m)) => m.write(&mut c, dst, &b).map_err(wasmtime::Error::new),
                    _ => Err(wasmtime::Error::msg("calldata out of range")),
                }
            },
        )
        .map_err(rt)?;
    linker
        .func_wrap(
            HOST_MODULE,
            "exit",
            |mut c: Caller<'_, Standalone>,
             _status: u32,
             ptr: u32,
             len: u32|
             -> wasmtime::Result<()> {
                let memory = c.data().memory.ok_or_else(|| wasmtime::Error::msg("no memory"))?;
                let mut out = vec![0u8; len as usize];
                memory.read(&c, ptr as usize, &mut out).map_err(wasmtime::Error::new)?;
                c.data_mut().output = out;
                Err(wasmtime::Error::msg("exit"))
            },
        )
        .map_err(rt)?;
    linker.define_unknown_imports_as_traps(&m).map_err(rt)?;
    let pre = linker.instantiate_pre(&m).map_err(rt)?;
    let mut times = Vec::with_capacity(runs);
    let mut output = Vec::new();
    for _ in 0..runs {
        let state = Standalone { input: input.to_vec(), output: Vec::new(), memory: None };
        let mut store = Store::new(&engine, state);
        let instance = pre.instantiate(&mut store).map_err(rt)?;
        if let Some(gas) = instance.get_global(&mut store, GAS_EXPORT) {
            gas.set(&mut store, wasmtime::Val::I64(i64::MAX / 2)).map_err(rt)?;
        }
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let entry = instance.get_typed_func::<(), ()>(&mut store, "call").map_err(rt)?;
        let started = Instant::now();
        let result = entry.call(&mut store, ());
        times.push(started.elapsed());
        if result.is_err() && store.data().output.is_empty() {
            return Err(WasmError::Runtime(format!("the module trapped: {result:?}")));
        }
        output = std::mem::take(&mut store.data_mut().output);
    }
    Ok((output, times))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `evict_one` takes the least recently used module that is not compiling: it passes
    /// over a module a compile thread holds (keeping its entry), puts an entry whose module
    /// was used since back under that use, drops entries of modules gone, and finds nothing
    /// when only compiling modules are left.
    #[test]
    fn eviction_takes_the_least_recently_used_module_not_compiling() {
        let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
        let module =
            wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "call")))"#)
                .unwrap_or_else(|e| panic!("{e}"));
        let info = validate(&module).unwrap_or_else(|e| panic!("{e}"));
        let rewritten = instrument::rewrite(&module, true).unwrap_or_else(|e| panic!("{e}"));
        let interp = rt.interpreted(&rewritten, info).unwrap_or_else(|e| panic!("{e}"));
        let h = |n: u8| B256::repeat_byte(n);
        let mut slots = HashMap::new();
        let mut order = std::collections::BTreeSet::new();
        for (n, stamp) in [(1u8, 1u64), (2, 2), (3, 3), (4, 4)] {
            slots.insert(h(n), Slot::new(interp.clone(), stamp));
            order.insert((stamp, h(n)));
        }
        // 1 is being compiled (taken from the queue), 2 was used at 10, 9 left memory.
        slots[&h(1)].queued.store(false, AtomicOrdering::Release);
        slots[&h(2)].used.fetch_max(10, AtomicOrdering::Relaxed);
        order.insert((0, h(9)));
        let mut evict =
            || evict_one(&mut slots, &mut order).map(|s| s.used.load(AtomicOrdering::Relaxed));
        assert_eq!(evict(), Some(3));
        assert_eq!(evict(), Some(4));
        assert_eq!(evict(), Some(10));
        assert_eq!(evict(), None);
        assert_eq!(slots.len(), 1);
        assert_eq!(order.iter().copied().collect::<Vec<_>>(), vec![(1, h(1))]);
    }

    /// The eviction's ordered set holds exactly one entry per module in memory, naming its
    /// `ordered` use, whatever leaves memory how: a review found that modules removed without
    /// an eviction (`forget`, a failed compilation) left their entries behind for good.
    #[test]
    fn the_eviction_order_holds_one_entry_per_module() {
        let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
        let check = || {
            let slots = lock(&rt.slots);
            let order = lock(&rt.order);
            assert_eq!(order.len(), slots.len());
            for (stamp, hash) in order.iter() {
                let slot = slots.get(hash).unwrap_or_else(|| panic!("an entry without a module"));
                assert_eq!(slot.ordered.load(AtomicOrdering::Relaxed), *stamp);
            }
        };
        for n in 0..50 {
            let src = format!(
                r#"(module (memory (export "memory") 1) (func (export "call")) (func (drop (i32.const {}))))"#,
                7_700_000 + n
            );
            let code = contract_code(&wat::parse_str(src).unwrap_or_else(|e| panic!("{e}")));
            let hash = rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
            rt.wait(hash);
            // Used again: `used` rises past the entry's stamp.
            rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
            check();
            if n % 2 == 0 {
                rt.forget(hash);
                check();
            }
        }
    }

    /// Transient work runs at most [`TRANSIENT_COMPILED_FRAMES`] compiled frames at once;
    /// past that, the interpreter. A frame that ends gives its place back.
    #[test]
    fn transient_work_runs_a_bounded_number_of_compiled_frames() {
        let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
        if rt.tier() == TierChoice::Interpreter {
            return; // FAROL_WASM_TIER=interpreter: nothing is compiled.
        }
        // (module (memory (export "memory") 1) (func (export "call")))
        let module: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
            0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00, 0x01, 0x07, 0x11, 0x02, 0x06, b'm',
            b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, 0x04, b'c', b'a', b'l', b'l', 0x00, 0x00,
            0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
        ];
        let code = contract_code(module);
        let hash = rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
        rt.wait(hash);
        assert!(rt.is_ready(hash));
        let get = || rt.get(hash, &code).unwrap_or_else(|e| panic!("{e}"));
        let compiled = |t: &Tier| matches!(t, Tier::Compiled(_));
        let held: Vec<Tier> = transient(|| (0..TRANSIENT_COMPILED_FRAMES).map(|_| get()).collect());
        assert!(held.iter().all(compiled));
        transient(|| {
            let over = get();
            assert!(!compiled(&over), "past the share");
            rt.frame_ended(&over);
            rt.frame_ended(&held[0]);
            let again = get();
            assert!(compiled(&again), "a place was given back");
            rt.frame_ended(&again);
            for t in &held[1..] {
                rt.frame_ended(t);
            }
        });
        assert_eq!(rt.transient_frames.load(AtomicOrdering::Acquire), 0);
        // Other work has no share.
        assert!(compiled(&get()));
    }
}
