//! The functions a WASM contract imports from module `farol`, and what they cost.
//!
//! Every function works on the same revm journal the EVM uses, so both VMs read and write the
//! same accounts and storage and a revert anywhere undoes both. Gas is the contract's fuel
//! (see [`FUEL_PER_GAS`]); host functions charge the EVM's price for the same work.

use alloy_primitives::{keccak256, Address, Bytes, Log, LogData, B256, U256};
use revm::context_interface::host::LoadError;
use revm::context_interface::Host;
use revm::handler::FrameResult;
use revm::interpreter::{CreateInputs, CreateOutcome, FrameInput, InstructionResult};
use revm::primitives::hardfork::SpecId;
use wasmparser::ValType;

use super::{FUEL_PER_GAS, MAX_MEMORY_PAGES, MAX_TABLE_ELEMENTS};

/// The import module every host function lives in.
pub const HOST_MODULE: &str = "farol";

/// Gas of the cheapest EVM operations (ADDRESS, CALLER, ...).
const BASE_GAS: u64 = 2;
/// Gas of CALLDATACOPY and friends before the per-word part.
const VERYLOW_GAS: u64 = 3;
/// Static part of LOGn.
const LOG_GAS: u64 = 375;
/// Static part of KECCAK256.
const KECCAK_GAS: u64 = 30;
/// TLOAD and TSTORE.
const TRANSIENT_GAS: u64 = 100;

/// How a WASM frame ends other than by returning from `call`.
#[derive(Debug, Clone)]
pub(crate) enum Exit {
    /// `exit(0, ..)`: success with output.
    Return(Bytes),
    /// `exit(1, ..)`: revert with output.
    Revert(Bytes),
    /// A host function halted the frame (out of gas, a write in a static call, ...).
    Halt(InstructionResult),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Return(_) => f.write_str("contract returned"),
            Exit::Revert(_) => f.write_str("contract reverted"),
            Exit::Halt(r) => write!(f, "contract halted: {r:?}"),
        }
    }
}

impl std::error::Error for Exit {}

pub(crate) fn halt(r: InstructionResult) -> Exit {
    Exit::Halt(r)
}

impl wasmi::errors::HostError for Exit {}

/// What a WASM frame needs from the EVM around it: the host interface of revm's context and a
/// way to run a nested call on the same journal.
pub(crate) trait Env {
    /// revm's host (state, block, transaction) for this frame.
    fn host(&mut self) -> &mut dyn Host;
    /// Runs a call or creation one level deeper than this frame and returns its result.
    /// `None`: a failure of this node (a database error), or a fatal error already recorded
    /// (a tracer past its budget), left in the context's error slot.
    fn frame(&mut self, input: FrameInput) -> Option<FrameResult>;
    /// The collision outcome of creation `inputs` under EIP-7610's storage rule, if it
    /// collides (see `collision.rs`).
    fn collision(&mut self, inputs: &CreateInputs) -> Option<CreateOutcome>;
    /// Journals `log` (and shows it to the tracer, when the transaction is traced).
    fn log(&mut self, log: Log);
    /// The frame loads `address` (its account, or the storage `slot` of it): an access a
    /// transaction's access list can warm (`eth_createAccessList` collects them).
    fn accessed(&mut self, _address: Address, _slot: Option<U256>) {}
}

/// The instance's resource limits.
///
/// Growth is priced by [`super::memory_gas`]; the rewritten code pays it from fuel before each
/// `memory.grow` runs (a frame that cannot pay ends out of gas there). Growth past 16 MiB, or past the module's
/// own maximum, fails (`memory.grow` returns -1); an allowed growth that the engine fails to
/// make is a fault of this node (`fault`).
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// The module's code runs (instantiation is over): growth from here on is `memory.grow`.
    pub(crate) running: bool,
    /// A growth this limiter allowed that the engine then failed to make: a failure of this
    /// node (its memory or mappings), not of the module. The frame ends as a node fault.
    pub(crate) fault: Option<String>,
}

impl Limits {
    /// Whether memory may grow from `current` to `desired` bytes, within the module's own
    /// `maximum`.
    ///
    /// Both tiers must decide and charge alike. wasmi refuses growth past the module's
    /// declared maximum before it asks the limiter, wasmtime after: the maximum is checked
    /// here first, so that such a `memory.grow` returns -1 and owes nothing on either (before
    /// stop 26 wasmtime recorded the gas of the refused growth, and the tiers' results
    /// differed).
    fn grow(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> bool {
        let page = 1usize << 16;
        if desired > (MAX_MEMORY_PAGES as usize) * page || maximum.is_some_and(|m| desired > m) {
            return false;
        }
        // The initial memory is paid before instantiation; once the code runs, the rewritten
        // code pays for each `memory.grow` before it runs (`instrument::prepay_growth`; since
        // stop 38, before which it was recorded here and paid later). Nothing else grows a
        // memory: validation refuses a start function, so instantiation only allocates the
        // initial memory, from zero. A growth from a non-zero size before the code runs would
        // be paid by nobody, so it is refused (until stop 40 a debt was recorded for it, to be
        // paid at the next host call, and was always zero).
        self.running || current == 0
    }

    /// Whether a table may grow to `desired` elements, within the module's own `maximum`.
    /// Both engines check the maximum themselves too, but one after this, reporting it as a
    /// failed growth: refusing here keeps every failure reported after it this node's own.
    fn grow_table(desired: usize, maximum: Option<usize>) -> bool {
        desired as u64 <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|m| desired <= m)
    }

    /// An allowed growth failed in the engine. Everything the module could cause (sizes past
    /// Farol's bounds or its own maxima) was refused before it was allowed, so what is left
    /// is this node's own failure (memory, mappings): the frame must not end with a result
    /// that other nodes would not compute.
    fn grow_failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        if self.fault.is_none() {
            self.fault = Some(format!("growing the {what} failed on this node: {error}"));
        }
    }
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired, maximum))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed("memory", &error);
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(Self::grow_table(desired, maximum))
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed("table", &error);
        Err(error)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

impl wasmi::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        Ok(self.grow(current, desired, maximum))
    }

    fn memory_grow_failed(&mut self, error: &wasmi_core::LimiterError) {
        self.grow_failed("memory", error);
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, wasmi_core::LimiterError> {
        Ok(Self::grow_table(desired, maximum))
    }

    fn table_grow_failed(&mut self, error: &wasmi_core::LimiterError) {
        self.grow_failed("table", error);
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }
}

/// Per-call state of a WASM instance.
pub(crate) struct HostState {
    /// The frame's environment. Points to a value that outlives the store (see `call::run`).
    pub(crate) env: *mut (dyn Env + 'static),
    pub(crate) limits: Limits,
    pub(crate) spec: SpecId,
    pub(crate) target: Address,
    pub(crate) caller: Address,
    pub(crate) value: U256,
    pub(crate) input: Bytes,
    pub(crate) is_static: bool,
    pub(crate) returndata: Bytes,
    pub(crate) refund: i64,
}

/// The environment of a store that only instantiates a module (`HostState::idle`): state
/// reads see an empty host, and nested frames fail.
struct NoEnv(revm::context_interface::host::DummyHost);

// An idle state owns its `NoEnv`, and a store whose state is idle moves between threads
// (`ready::Parked`): the compiler checks that `NoEnv` may.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<NoEnv>();
};

impl Env for NoEnv {
    fn host(&mut self) -> &mut dyn Host {
        &mut self.0
    }
    fn frame(&mut self, _input: FrameInput) -> Option<FrameResult> {
        None
    }
    fn collision(&mut self, _inputs: &CreateInputs) -> Option<CreateOutcome> {
        None
    }
    fn log(&mut self, log: Log) {
        self.0.log(log);
    }
}

impl HostState {
    /// A state for instantiating a module without running it. It owns its environment, which
    /// the caller frees with [`HostState::free_idle`].
    pub(crate) fn idle() -> HostState {
        let env: Box<dyn Env> = Box::new(NoEnv(Default::default()));
        HostState {
            env: Box::into_raw(env),
            limits: Limits::default(),
            spec: SpecId::default(),
            target: Address::ZERO,
            caller: Address::ZERO,
            value: U256::ZERO,
            input: Bytes::new(),
            is_static: false,
            returndata: Bytes::new(),
            refund: 0,
        }
    }

    /// Frees the environment of a state made by [`HostState::idle`].
    #[allow(unsafe_code)]
    pub(crate) fn free_idle(self) {
        // SAFETY: `idle` made `env` with `Box::into_raw`, and this consumes the only state
        // holding it.
        drop(unsafe { Box::from_raw(self.env) });
    }

    #[allow(unsafe_code)]
    pub(crate) fn env(&mut self) -> &mut dyn Env {
        // SAFETY: `call::run` sets `env` to a live `&mut` that it does not touch while the store
        // exists, and drops the store before that borrow ends. Host functions run one at a
        // time on the store's thread.
        unsafe { &mut *self.env }
    }
}

/// A store's data on either engine: the frame's state and the instance's memory and fuel
/// global (`M` and `G`, the engine's handles), set once the instance exists.
pub(crate) struct Instance<M, G> {
    pub(crate) host: HostState,
    pub(crate) memory: Option<M>,
    pub(crate) gas: Option<G>,
}

impl<M, G> Instance<M, G> {
    pub(crate) fn new(host: HostState) -> Self {
        Instance { host, memory: None, gas: None }
    }
}

/// What host functions need from the engine that calls them.
pub(crate) trait Cx {
    fn st(&self) -> &HostState;
    fn st_mut(&mut self) -> &mut HostState;
    /// The instance's linear memory.
    fn mem(&self) -> R<&[u8]>;
    fn mem_mut(&mut self) -> R<&mut [u8]>;
    /// The module's fuel global (see `instrument`); negative once the module ran out.
    fn fuel(&mut self) -> i64;
    fn set_fuel(&mut self, fuel: i64) -> R<()>;
}

fn no_memory() -> Exit {
    halt(InstructionResult::InvalidFEOpcode)
}

/// Implements [`Cx`] for the caller type of one engine (`$engine`: `wasmtime` or `wasmi`, whose
/// APIs for memories and globals have the same shape).
macro_rules! impl_cx {
    ($engine:ident) => {
        impl Cx for $engine::Caller<'_, Instance<$engine::Memory, $engine::Global>> {
            fn st(&self) -> &HostState {
                &self.data().host
            }
            fn st_mut(&mut self) -> &mut HostState {
                &mut self.data_mut().host
            }
            fn mem(&self) -> R<&[u8]> {
                let m = self.data().memory.ok_or_else(no_memory)?;
                Ok(m.data(self))
            }
            fn mem_mut(&mut self) -> R<&mut [u8]> {
                let m = self.data().memory.ok_or_else(no_memory)?;
                Ok(m.data_mut(self))
            }
            fn fuel(&mut self) -> i64 {
                match self.data().gas {
                    Some(g) => g.get(&mut *self).i64().unwrap_or(-1),
                    None => -1,
                }
            }
            fn set_fuel(&mut self, fuel: i64) -> R<()> {
                let out_of_gas = || halt(InstructionResult::OutOfGas);
                let g = self.data().gas.ok_or_else(out_of_gas)?;
                g.set(&mut *self, $engine::Val::I64(fuel)).map_err(|_| out_of_gas())
            }
        }
    };
}

impl_cx!(wasmtime);
impl_cx!(wasmi);

pub(crate) type R<T> = Result<T, Exit>;

/// Gas the frame has left.
pub(crate) fn gas_left(c: &mut impl Cx) -> u64 {
    u64::try_from(c.fuel()).unwrap_or(0) / FUEL_PER_GAS
}

/// Charges `gas`, halting with out-of-gas if the frame has less.
pub(crate) fn charge(c: &mut impl Cx, gas: u64) -> R<()> {
    // Negative: the module ran out before it called (it checks only at function entries and
    // loops); it stays negative, so the frame ends out of gas.
    let Ok(fuel) = u64::try_from(c.fuel()) else {
        return Err(halt(InstructionResult::OutOfGas));
    };
    let cost = gas.saturating_mul(FUEL_PER_GAS);
    if cost > fuel {
        c.set_fuel(0)?;
        return Err(halt(InstructionResult::OutOfGas));
    }
    // `fuel - cost` is at most `fuel`, which came from an i64.
    c.set_fuel((fuel - cost) as i64)
}

/// Gives `gas` back to the frame (what a nested frame did not use).
pub(crate) fn refill(c: &mut impl Cx, gas: u64) -> R<()> {
    let fuel = c.fuel();
    if fuel < 0 {
        return Err(halt(InstructionResult::OutOfGas));
    }
    let more = i64::try_from(gas.saturating_mul(FUEL_PER_GAS)).unwrap_or(i64::MAX);
    c.set_fuel(fuel.saturating_add(more))
}

fn span(ptr: u32, len: usize) -> R<std::ops::Range<usize>> {
    let start = ptr as usize;
    let end = start.checked_add(len).ok_or_else(no_memory)?;
    Ok(start..end)
}

pub(crate) fn read(c: &impl Cx, ptr: u32, len: u32) -> R<Vec<u8>> {
    let r = span(ptr, len as usize)?;
    c.mem()?.get(r).map(<[u8]>::to_vec).ok_or_else(no_memory)
}

pub(crate) fn read_array<const N: usize>(c: &impl Cx, ptr: u32) -> R<[u8; N]> {
    let r = span(ptr, N)?;
    c.mem()?.get(r).and_then(|s| s.try_into().ok()).ok_or_else(no_memory)
}

pub(crate) fn write(c: &mut impl Cx, ptr: u32, bytes: &[u8]) -> R<()> {
    let r = span(ptr, bytes.len())?;
    c.mem_mut()?.get_mut(r).ok_or_else(no_memory)?.copy_from_slice(bytes);
    Ok(())
}

/// Copies `len` bytes of `src` from `offset` to `dst`; reading past `src` halts, like
/// RETURNDATACOPY (and unlike CALLDATACOPY, which pads: a contract knows the size first).
fn copy_out(c: &mut impl Cx, src: &Bytes, dst: u32, offset: u32, len: u32) -> R<()> {
    let gas = VERYLOW_GAS + c.st_mut().env().host().gas_params().copy_cost(len as usize);
    charge(c, gas)?;
    let start = offset as usize;
    let bytes = src
        .get(start..start.saturating_add(len as usize))
        .ok_or_else(|| halt(InstructionResult::OutOfOffset))?
        .to_vec();
    write(c, dst, &bytes)
}

fn require_non_static(c: &impl Cx) -> R<()> {
    if c.st().is_static {
        return Err(halt(InstructionResult::StateChangeDuringStaticCall));
    }
    Ok(())
}

/// A failed load: out of gas when the cold load was skipped, a fatal error otherwise (the
/// context keeps the database error).
pub(crate) fn load_failed(e: LoadError) -> Exit {
    match e {
        LoadError::ColdLoadSkipped => halt(InstructionResult::OutOfGas),
        LoadError::DBError => halt(InstructionResult::FatalExternalError),
    }
}

/// The signature of host function `name`: parameters and results.
pub(crate) fn import_signature(name: &str) -> Option<(&'static [ValType], &'static [ValType])> {
    use ValType::{I32, I64};
    Some(match name {
        "calldata_size" | "returndata_size" => (&[], &[I32]),
        "calldata_copy" | "returndata_copy" => (&[I32, I32, I32], &[]),
        "caller" | "address" | "origin" | "callvalue" | "coinbase" | "basefee" | "gasprice" => {
            (&[I32], &[])
        }
        "block_number" | "timestamp" | "chain_id" | "gas_left" => (&[], &[I64]),
        "balance" | "sload" | "tload" => (&[I32, I32], &[]),
        "sstore" | "tstore" => (&[I32, I32], &[]),
        "log" => (&[I32, I32, I32, I32], &[]),
        "keccak256" => (&[I32, I32, I32], &[]),
        "call" => (&[I32, I32, I32, I32, I32, I64], &[I32]),
        "create" => (&[I32, I32, I32, I32, I32, I32], &[I32]),
        "exit" => (&[I32, I32, I32], &[]),
        _ => return None,
    })
}

fn host_calldata_size(c: &mut impl Cx) -> R<u32> {
    charge(c, BASE_GAS)?;
    Ok(c.st().input.len() as u32)
}

fn host_calldata_copy(c: &mut impl Cx, dst: u32, off: u32, len: u32) -> R<()> {
    let input = c.st().input.clone();
    copy_out(c, &input, dst, off, len)
}

fn host_returndata_size(c: &mut impl Cx) -> R<u32> {
    charge(c, BASE_GAS)?;
    Ok(c.st().returndata.len() as u32)
}

fn host_returndata_copy(c: &mut impl Cx, dst: u32, off: u32, len: u32) -> R<()> {
    let data = c.st().returndata.clone();
    copy_out(c, &data, dst, off, len)
}

fn host_caller(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let a = c.st().caller;
    write(c, dst, a.as_slice())
}

fn host_address(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let a = c.st().target;
    write(c, dst, a.as_slice())
}

fn host_origin(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let a = c.st_mut().env().host().caller();
    write(c, dst, a.as_slice())
}

fn host_coinbase(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let a = c.st_mut().env().host().beneficiary();
    write(c, dst, a.as_slice())
}

fn host_callvalue(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let v = c.st().value;
    write(c, dst, &v.to_be_bytes::<32>())
}

fn host_basefee(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let v = c.st_mut().env().host().basefee();
    write(c, dst, &v.to_be_bytes::<32>())
}

fn host_gasprice(c: &mut impl Cx, dst: u32) -> R<()> {
    charge(c, BASE_GAS)?;
    let v = c.st_mut().env().host().effective_gas_price();
    write(c, dst, &v.to_be_bytes::<32>())
}

fn host_block_number(c: &mut impl Cx) -> R<u64> {
    charge(c, BASE_GAS)?;
    Ok(c.st_mut().env().host().block_number().saturating_to())
}

fn host_timestamp(c: &mut impl Cx) -> R<u64> {
    charge(c, BASE_GAS)?;
    Ok(c.st_mut().env().host().timestamp().saturating_to())
}

fn host_chain_id(c: &mut impl Cx) -> R<u64> {
    charge(c, BASE_GAS)?;
    Ok(c.st_mut().env().host().chain_id().saturating_to())
}

fn host_gas_left(c: &mut impl Cx) -> R<u64> {
    charge(c, BASE_GAS)?;
    Ok(gas_left(c))
}

fn host_balance(c: &mut impl Cx, addr: u32, dst: u32) -> R<()> {
    let who = Address::from(read_array::<20>(c, addr)?);
    let (warm, cold) = {
        let host = c.st_mut().env().host();
        let p = host.gas_params();
        (p.warm_storage_read_cost(), p.cold_account_additional_cost())
    };
    charge(c, warm)?;
    c.st_mut().env().accessed(who, None);
    let skip = gas_left(c) < cold;
    let account = c
        .st_mut()
        .env()
        .host()
        .load_account_info_skip_cold_load(who, false, skip)
        .map_err(load_failed)?;
    let (balance, is_cold) = (account.balance, account.is_cold);
    if is_cold {
        charge(c, cold)?;
    }
    write(c, dst, &balance.to_be_bytes::<32>())
}

fn host_sload(c: &mut impl Cx, key: u32, dst: u32) -> R<()> {
    let key = U256::from_be_bytes(read_array::<32>(c, key)?);
    let (warm, cold) = {
        let host = c.st_mut().env().host();
        let p = host.gas_params();
        (p.warm_storage_read_cost(), p.cold_storage_additional_cost())
    };
    charge(c, warm)?;
    let skip = gas_left(c) < cold;
    let target = c.st().target;
    c.st_mut().env().accessed(target, Some(key));
    let load =
        c.st_mut().env().host().sload_skip_cold_load(target, key, skip).map_err(load_failed)?;
    if load.is_cold {
        charge(c, cold)?;
    }
    write(c, dst, &load.data.to_be_bytes::<32>())
}

fn host_sstore(c: &mut impl Cx, key: u32, value: u32) -> R<()> {
    require_non_static(c)?;
    let key = U256::from_be_bytes(read_array::<32>(c, key)?);
    let value = U256::from_be_bytes(read_array::<32>(c, value)?);
    let spec = c.st().spec;
    let (stipend, static_gas, cold_cost) = {
        let host = c.st_mut().env().host();
        let p = host.gas_params();
        (p.call_stipend(), p.sstore_static_gas(), p.cold_storage_cost())
    };
    // EIP-2200: no SSTORE with the stipend or less left.
    if gas_left(c) <= stipend {
        return Err(halt(InstructionResult::ReentrancySentryOOG));
    }
    charge(c, static_gas)?;
    let skip = gas_left(c) < cold_cost;
    let target = c.st().target;
    c.st_mut().env().accessed(target, Some(key));
    let load = c
        .st_mut()
        .env()
        .host()
        .sstore_skip_cold_load(target, key, value, skip)
        .map_err(load_failed)?;
    let istanbul = spec.is_enabled_in(SpecId::ISTANBUL);
    let (dynamic, refund) = {
        let host = c.st_mut().env().host();
        let p = host.gas_params();
        (
            p.sstore_dynamic_gas(istanbul, &load.data, load.is_cold),
            p.sstore_refund(istanbul, &load.data),
        )
    };
    charge(c, dynamic)?;
    c.st_mut().refund += refund;
    Ok(())
}

fn host_tload(c: &mut impl Cx, key: u32, dst: u32) -> R<()> {
    charge(c, TRANSIENT_GAS)?;
    let key = U256::from_be_bytes(read_array::<32>(c, key)?);
    let target = c.st().target;
    let v = c.st_mut().env().host().tload(target, key);
    write(c, dst, &v.to_be_bytes::<32>())
}

fn host_tstore(c: &mut impl Cx, key: u32, value: u32) -> R<()> {
    require_non_static(c)?;
    charge(c, TRANSIENT_GAS)?;
    let key = U256::from_be_bytes(read_array::<32>(c, key)?);
    let value = U256::from_be_bytes(read_array::<32>(c, value)?);
    let target = c.st().target;
    c.st_mut().env().host().tstore(target, key, value);
    Ok(())
}

fn host_log(c: &mut impl Cx, topics: u32, n: u32, data: u32, len: u32) -> R<()> {
    require_non_static(c)?;
    if n > 4 {
        return Err(halt(InstructionResult::InvalidFEOpcode));
    }
    let cost = c.st_mut().env().host().gas_params().log_cost(n as u8, len as u64);
    charge(c, LOG_GAS.saturating_add(cost))?;
    let raw = read(c, topics, n * 32)?;
    let topics: Vec<B256> = raw.chunks_exact(32).map(B256::from_slice).collect();
    let data = read(c, data, len)?;
    let target = c.st().target;
    let Some(data) = LogData::new(topics, data.into()) else {
        return Err(halt(InstructionResult::InvalidFEOpcode));
    };
    c.st_mut().env().log(Log { address: target, data });
    Ok(())
}

fn host_keccak256(c: &mut impl Cx, ptr: u32, len: u32, dst: u32) -> R<()> {
    let cost = c.st_mut().env().host().gas_params().keccak256_cost(len as usize);
    charge(c, KECCAK_GAS.saturating_add(cost))?;
    let bytes = read(c, ptr, len)?;
    write(c, dst, keccak256(&bytes).as_slice())
}

fn host_call(
    c: &mut impl Cx,
    kind: u32,
    to: u32,
    value: u32,
    data: u32,
    len: u32,
    gas: u64,
) -> R<u32> {
    super::call::host_call(c, kind, to, value, data, len, gas)
}

fn host_create(
    c: &mut impl Cx,
    kind: u32,
    value: u32,
    code: u32,
    len: u32,
    salt: u32,
    out: u32,
) -> R<u32> {
    super::call::host_create(c, kind, value, code, len, salt, out)
}

fn host_exit(c: &mut impl Cx, status: u32, ptr: u32, len: u32) -> R<()> {
    let out = Bytes::from(read(c, ptr, len)?);
    Err(match status {
        0 => Exit::Return(out),
        1 => Exit::Revert(out),
        _ => Exit::Halt(InstructionResult::InvalidFEOpcode),
    })
}

/// Defines host function `$name` (Rust function `$f`) on `$linker`.
macro_rules! wrap {
    ($linker:expr, $caller:ty, $err:expr, $name:literal, $f:ident $(, $a:ident: $t:ty)*) => {
        $linker.func_wrap(HOST_MODULE, $name, |mut c: $caller $(, $a: $t)*| {
            $f(&mut c $(, $a)*).map_err($err)
        })?;
    };
}

/// Defines every host function on `$linker`, a linker of either engine whose functions take
/// `$caller` and report a host error with `$err`.
macro_rules! define_host_functions {
    ($linker:expr, $caller:ty, $err:expr) => {{
        wrap!($linker, $caller, $err, "calldata_size", host_calldata_size);
        wrap!(
            $linker, $caller, $err, "calldata_copy", host_calldata_copy,
            dst: u32, off: u32, len: u32
        );
        wrap!($linker, $caller, $err, "returndata_size", host_returndata_size);
        wrap!(
            $linker, $caller, $err, "returndata_copy", host_returndata_copy,
            dst: u32, off: u32, len: u32
        );
        wrap!($linker, $caller, $err, "caller", host_caller, dst: u32);
        wrap!($linker, $caller, $err, "address", host_address, dst: u32);
        wrap!($linker, $caller, $err, "origin", host_origin, dst: u32);
        wrap!($linker, $caller, $err, "coinbase", host_coinbase, dst: u32);
        wrap!($linker, $caller, $err, "callvalue", host_callvalue, dst: u32);
        wrap!($linker, $caller, $err, "basefee", host_basefee, dst: u32);
        wrap!($linker, $caller, $err, "gasprice", host_gasprice, dst: u32);
        wrap!($linker, $caller, $err, "block_number", host_block_number);
        wrap!($linker, $caller, $err, "timestamp", host_timestamp);
        wrap!($linker, $caller, $err, "chain_id", host_chain_id);
        wrap!($linker, $caller, $err, "gas_left", host_gas_left);
        wrap!($linker, $caller, $err, "balance", host_balance, addr: u32, dst: u32);
        wrap!($linker, $caller, $err, "sload", host_sload, key: u32, dst: u32);
        wrap!($linker, $caller, $err, "sstore", host_sstore, key: u32, value: u32);
        wrap!($linker, $caller, $err, "tload", host_tload, key: u32, dst: u32);
        wrap!($linker, $caller, $err, "tstore", host_tstore, key: u32, value: u32);
        wrap!($linker, $caller, $err, "log", host_log, topics: u32, n: u32, data: u32, len: u32);
        wrap!($linker, $caller, $err, "keccak256", host_keccak256, ptr: u32, len: u32, dst: u32);
        wrap!(
            $linker, $caller, $err, "call", host_call,
            kind: u32, to: u32, value: u32, data: u32, len: u32, gas: u64
        );
        wrap!(
            $linker, $caller, $err, "create", host_create,
            kind: u32, value: u32, code: u32, len: u32, salt: u32, out: u32
        );
        wrap!($linker, $caller, $err, "exit", host_exit, status: u32, ptr: u32, len: u32);
    }};
}

/// Defines every host function on a wasmtime linker.
pub(crate) fn define_wasmtime(
    linker: &mut wasmtime::Linker<Instance<wasmtime::Memory, wasmtime::Global>>,
) -> wasmtime::Result<()> {
    define_host_functions!(
        linker,
        wasmtime::Caller<'_, Instance<wasmtime::Memory, wasmtime::Global>>,
        wasmtime::Error::new
    );
    Ok(())
}

/// Defines every host function on a wasmi linker.
pub(crate) fn define_wasmi(
    linker: &mut wasmi::Linker<Instance<wasmi::Memory, wasmi::Global>>,
) -> Result<(), wasmi::Error> {
    define_host_functions!(
        linker,
        wasmi::Caller<'_, Instance<wasmi::Memory, wasmi::Global>>,
        wasmi::Error::host
    );
    Ok(())
}

/// A store's data on wasmtime.
pub(crate) type WtData = Instance<wasmtime::Memory, wasmtime::Global>;
/// A store's data on wasmi.
pub(crate) type WiData = Instance<wasmi::Memory, wasmi::Global>;
