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
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use super::{memory_gas, FUEL_PER_GAS, MAX_MEMORY_PAGES, MAX_TABLE_ELEMENTS};

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
#[derive(Debug)]
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

pub(crate) fn halt(r: InstructionResult) -> wasmtime::Error {
    wasmtime::Error::new(Exit::Halt(r))
}

/// What a WASM frame needs from the EVM around it: the host interface of revm's context and a
/// way to run a nested call on the same journal.
pub(crate) trait Env {
    /// revm's host (state, block, transaction) for this frame.
    fn host(&mut self) -> &mut dyn Host;
    /// Runs a call or creation one level deeper than this frame and returns its result.
    /// `None`: a failure of this node (a database error), left in the context's error slot.
    fn frame(&mut self, input: FrameInput) -> Option<FrameResult>;
    /// The collision outcome of creation `inputs` under EIP-7610's storage rule, if it
    /// collides (see `collision.rs`).
    fn collision(&mut self, inputs: &CreateInputs) -> Option<CreateOutcome>;
}

/// The instance's resource limits, and the gas its memory growth owes.
///
/// wasmtime's fuel table can charge at most 255 fuel per page grown, far below what touching
/// a page costs, so growth is priced here ([`memory_gas`]): the limiter records what each
/// growth owes, and the debt is paid from fuel at the next host call and at the end of the
/// frame (a frame that cannot pay ends out of gas). Growth past 16 MiB fails
/// (`memory.grow` returns -1).
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Gas owed for memory grown since the last payment.
    pub(crate) owed: u64,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let page = 1usize << 16;
        if desired > (MAX_MEMORY_PAGES as usize) * page {
            return Ok(false);
        }
        // The initial memory (growth from nothing) is paid before instantiation.
        if current != 0 {
            let (from, to) = ((current / page) as u64, desired.div_ceil(page) as u64);
            self.owed = self.owed.saturating_add(memory_gas(to).saturating_sub(memory_gas(from)));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired as u64 <= MAX_TABLE_ELEMENTS)
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
    pub(crate) memory: Option<Memory>,
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
}

impl HostState {
    /// A state for instantiating a module without running it. It owns its environment, which
    /// the caller frees with [`HostState::free_idle`].
    pub(crate) fn idle() -> HostState {
        let env: Box<dyn Env> = Box::new(NoEnv(Default::default()));
        HostState {
            env: Box::into_raw(env),
            memory: None,
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

pub(crate) type Cx<'a> = Caller<'a, HostState>;
pub(crate) type R<T> = wasmtime::Result<T>;

/// Gas the frame has left, after what its memory growth owes.
pub(crate) fn gas_left(c: &Cx<'_>) -> u64 {
    (c.get_fuel().unwrap_or(0) / FUEL_PER_GAS).saturating_sub(c.data().limits.owed)
}

/// Charges `gas` and pays what memory growth owes, halting with out-of-gas if the frame has
/// less.
pub(crate) fn charge(c: &mut Cx<'_>, gas: u64) -> R<()> {
    let fuel = c.get_fuel()?;
    let owed = std::mem::take(&mut c.data_mut().limits.owed);
    let cost = gas.saturating_add(owed).saturating_mul(FUEL_PER_GAS);
    if cost > fuel {
        c.set_fuel(0)?;
        return Err(halt(InstructionResult::OutOfGas));
    }
    c.set_fuel(fuel - cost)
}

pub(crate) fn memory(c: &Cx<'_>) -> R<Memory> {
    c.data().memory.ok_or_else(|| halt(InstructionResult::InvalidFEOpcode))
}

pub(crate) fn read(c: &Cx<'_>, ptr: u32, len: u32) -> R<Vec<u8>> {
    let m = memory(c)?;
    let start = ptr as usize;
    let end =
        start.checked_add(len as usize).ok_or_else(|| halt(InstructionResult::InvalidFEOpcode))?;
    m.data(c)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| halt(InstructionResult::InvalidFEOpcode))
}

pub(crate) fn read_array<const N: usize>(c: &Cx<'_>, ptr: u32) -> R<[u8; N]> {
    let m = memory(c)?;
    let start = ptr as usize;
    m.data(c)
        .get(start..start.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| halt(InstructionResult::InvalidFEOpcode))
}

pub(crate) fn write(c: &mut Cx<'_>, ptr: u32, bytes: &[u8]) -> R<()> {
    let m = memory(c)?;
    let start = ptr as usize;
    let dst = m
        .data_mut(&mut *c)
        .get_mut(start..start.saturating_add(bytes.len()))
        .ok_or_else(|| halt(InstructionResult::InvalidFEOpcode))?;
    dst.copy_from_slice(bytes);
    Ok(())
}

/// Copies `len` bytes of `src` from `offset` to `dst`; reading past `src` halts, like
/// RETURNDATACOPY (and unlike CALLDATACOPY, which pads: a contract knows the size first).
fn copy_out(c: &mut Cx<'_>, src: &Bytes, dst: u32, offset: u32, len: u32) -> R<()> {
    let gas = VERYLOW_GAS + c.data_mut().env().host().gas_params().copy_cost(len as usize);
    charge(c, gas)?;
    let start = offset as usize;
    let bytes = src
        .get(start..start.saturating_add(len as usize))
        .ok_or_else(|| halt(InstructionResult::OutOfOffset))?
        .to_vec();
    write(c, dst, &bytes)
}

fn require_non_static(c: &Cx<'_>) -> R<()> {
    if c.data().is_static {
        return Err(halt(InstructionResult::StateChangeDuringStaticCall));
    }
    Ok(())
}

/// A failed load: out of gas when the cold load was skipped, a fatal error otherwise (the
/// context keeps the database error).
pub(crate) fn load_failed(e: LoadError) -> wasmtime::Error {
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

/// Defines every host function on `linker`.
pub(crate) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let m = HOST_MODULE;
    linker.func_wrap(m, "calldata_size", |mut c: Cx<'_>| -> R<u32> {
        charge(&mut c, BASE_GAS)?;
        Ok(c.data().input.len() as u32)
    })?;
    linker.func_wrap(
        m,
        "calldata_copy",
        |mut c: Cx<'_>, dst: u32, off: u32, len: u32| -> R<()> {
            let input = c.data().input.clone();
            copy_out(&mut c, &input, dst, off, len)
        },
    )?;
    linker.func_wrap(m, "returndata_size", |mut c: Cx<'_>| -> R<u32> {
        charge(&mut c, BASE_GAS)?;
        Ok(c.data().returndata.len() as u32)
    })?;
    linker.func_wrap(
        m,
        "returndata_copy",
        |mut c: Cx<'_>, dst: u32, off: u32, len: u32| -> R<()> {
            let data = c.data().returndata.clone();
            copy_out(&mut c, &data, dst, off, len)
        },
    )?;
    linker.func_wrap(m, "caller", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let a = c.data().caller;
        write(&mut c, dst, a.as_slice())
    })?;
    linker.func_wrap(m, "address", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let a = c.data().target;
        write(&mut c, dst, a.as_slice())
    })?;
    linker.func_wrap(m, "origin", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let a = c.data_mut().env().host().caller();
        write(&mut c, dst, a.as_slice())
    })?;
    linker.func_wrap(m, "coinbase", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let a = c.data_mut().env().host().beneficiary();
        write(&mut c, dst, a.as_slice())
    })?;
    linker.func_wrap(m, "callvalue", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let v = c.data().value;
        write(&mut c, dst, &v.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "basefee", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let v = c.data_mut().env().host().basefee();
        write(&mut c, dst, &v.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "gasprice", |mut c: Cx<'_>, dst: u32| -> R<()> {
        charge(&mut c, BASE_GAS)?;
        let v = c.data_mut().env().host().effective_gas_price();
        write(&mut c, dst, &v.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "block_number", |mut c: Cx<'_>| -> R<u64> {
        charge(&mut c, BASE_GAS)?;
        Ok(c.data_mut().env().host().block_number().saturating_to())
    })?;
    linker.func_wrap(m, "timestamp", |mut c: Cx<'_>| -> R<u64> {
        charge(&mut c, BASE_GAS)?;
        Ok(c.data_mut().env().host().timestamp().saturating_to())
    })?;
    linker.func_wrap(m, "chain_id", |mut c: Cx<'_>| -> R<u64> {
        charge(&mut c, BASE_GAS)?;
        Ok(c.data_mut().env().host().chain_id().saturating_to())
    })?;
    linker.func_wrap(m, "gas_left", |mut c: Cx<'_>| -> R<u64> {
        charge(&mut c, BASE_GAS)?;
        Ok(gas_left(&c))
    })?;
    linker.func_wrap(m, "balance", |mut c: Cx<'_>, addr: u32, dst: u32| -> R<()> {
        let who = Address::from(read_array::<20>(&c, addr)?);
        let (warm, cold) = {
            let host = c.data_mut().env().host();
            let p = host.gas_params();
            (p.warm_storage_read_cost(), p.cold_account_additional_cost())
        };
        charge(&mut c, warm)?;
        let skip = gas_left(&c) < cold;
        let account = c
            .data_mut()
            .env()
            .host()
            .load_account_info_skip_cold_load(who, false, skip)
            .map_err(load_failed)?;
        let (balance, is_cold) = (account.balance, account.is_cold);
        if is_cold {
            charge(&mut c, cold)?;
        }
        write(&mut c, dst, &balance.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "sload", |mut c: Cx<'_>, key: u32, dst: u32| -> R<()> {
        let key = U256::from_be_bytes(read_array::<32>(&c, key)?);
        let (warm, cold) = {
            let host = c.data_mut().env().host();
            let p = host.gas_params();
            (p.warm_storage_read_cost(), p.cold_storage_additional_cost())
        };
        charge(&mut c, warm)?;
        let skip = gas_left(&c) < cold;
        let target = c.data().target;
        let load = c
            .data_mut()
            .env()
            .host()
            .sload_skip_cold_load(target, key, skip)
            .map_err(load_failed)?;
        if load.is_cold {
            charge(&mut c, cold)?;
        }
        write(&mut c, dst, &load.data.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "sstore", |mut c: Cx<'_>, key: u32, value: u32| -> R<()> {
        require_non_static(&c)?;
        let key = U256::from_be_bytes(read_array::<32>(&c, key)?);
        let value = U256::from_be_bytes(read_array::<32>(&c, value)?);
        let spec = c.data().spec;
        let (stipend, static_gas, cold_cost) = {
            let host = c.data_mut().env().host();
            let p = host.gas_params();
            (p.call_stipend(), p.sstore_static_gas(), p.cold_storage_cost())
        };
        // EIP-2200: no SSTORE with the stipend or less left.
        if gas_left(&c) <= stipend {
            return Err(halt(InstructionResult::ReentrancySentryOOG));
        }
        charge(&mut c, static_gas)?;
        let skip = gas_left(&c) < cold_cost;
        let target = c.data().target;
        let load = c
            .data_mut()
            .env()
            .host()
            .sstore_skip_cold_load(target, key, value, skip)
            .map_err(load_failed)?;
        let istanbul = spec.is_enabled_in(SpecId::ISTANBUL);
        let (dynamic, refund) = {
            let host = c.data_mut().env().host();
            let p = host.gas_params();
            (
                p.sstore_dynamic_gas(istanbul, &load.data, load.is_cold),
                p.sstore_refund(istanbul, &load.data),
            )
        };
        charge(&mut c, dynamic)?;
        c.data_mut().refund += refund;
        Ok(())
    })?;
    linker.func_wrap(m, "tload", |mut c: Cx<'_>, key: u32, dst: u32| -> R<()> {
        charge(&mut c, TRANSIENT_GAS)?;
        let key = U256::from_be_bytes(read_array::<32>(&c, key)?);
        let target = c.data().target;
        let v = c.data_mut().env().host().tload(target, key);
        write(&mut c, dst, &v.to_be_bytes::<32>())
    })?;
    linker.func_wrap(m, "tstore", |mut c: Cx<'_>, key: u32, value: u32| -> R<()> {
        require_non_static(&c)?;
        charge(&mut c, TRANSIENT_GAS)?;
        let key = U256::from_be_bytes(read_array::<32>(&c, key)?);
        let value = U256::from_be_bytes(read_array::<32>(&c, value)?);
        let target = c.data().target;
        c.data_mut().env().host().tstore(target, key, value);
        Ok(())
    })?;
    linker.func_wrap(
        m,
        "log",
        |mut c: Cx<'_>, topics: u32, n: u32, data: u32, len: u32| -> R<()> {
            require_non_static(&c)?;
            if n > 4 {
                return Err(halt(InstructionResult::InvalidFEOpcode));
            }
            let cost = c.data_mut().env().host().gas_params().log_cost(n as u8, len as u64);
            charge(&mut c, LOG_GAS.saturating_add(cost))?;
            let raw = read(&c, topics, n * 32)?;
            let topics: Vec<B256> = raw.chunks_exact(32).map(B256::from_slice).collect();
            let data = read(&c, data, len)?;
            let target = c.data().target;
            let Some(data) = LogData::new(topics, data.into()) else {
                return Err(halt(InstructionResult::InvalidFEOpcode));
            };
            c.data_mut().env().host().log(Log { address: target, data });
            Ok(())
        },
    )?;
    linker.func_wrap(m, "keccak256", |mut c: Cx<'_>, ptr: u32, len: u32, dst: u32| -> R<()> {
        let cost = c.data_mut().env().host().gas_params().keccak256_cost(len as usize);
        charge(&mut c, KECCAK_GAS.saturating_add(cost))?;
        let bytes = read(&c, ptr, len)?;
        write(&mut c, dst, keccak256(&bytes).as_slice())
    })?;
    linker.func_wrap(
        m,
        "call",
        |mut c: Cx<'_>, kind: u32, to: u32, value: u32, data: u32, len: u32, gas: u64| -> R<u32> {
            super::call::host_call(&mut c, kind, to, value, data, len, gas)
        },
    )?;
    linker.func_wrap(
        m,
        "create",
        |mut c: Cx<'_>,
         kind: u32,
         value: u32,
         code: u32,
         len: u32,
         salt: u32,
         out: u32|
         -> R<u32> { super::call::host_create(&mut c, kind, value, code, len, salt, out) },
    )?;
    linker.func_wrap(m, "exit", |c: Cx<'_>, status: u32, ptr: u32, len: u32| -> R<()> {
        let out = Bytes::from(read(&c, ptr, len)?);
        Err(wasmtime::Error::new(match status {
            0 => Exit::Return(out),
            1 => Exit::Revert(out),
            _ => Exit::Halt(InstructionResult::InvalidFEOpcode),
        }))
    })?;
    Ok(())
}
