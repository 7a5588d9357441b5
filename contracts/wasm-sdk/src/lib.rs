//! Write Farol WASM contracts in Rust.
//!
//! A contract is a `cdylib` built for `wasm32-unknown-unknown` that names its entry function
//! with [`entry!`]. The entry function gets the call's input and returns the output, or the
//! revert data. Everything else is here:
//!
//! - context: [`caller`], [`address`], [`origin`], [`value`], [`block_number`],
//!   [`timestamp`], [`chain_id`], [`gas_left`], [`balance`];
//! - storage: [`Slot`] (one word) and [`Slot::at`] (a mapping entry, laid out as Solidity lays
//!   out `mapping`), plus transient storage;
//! - events: [`emit`] any `sol!` event;
//! - calls: [`call`], [`static_call`], [`delegate_call`] with any `sol!` function, or the raw
//!   forms; [`create`] and [`create2`];
//! - the Solidity ABI for entry points: decode the input with a `sol!` interface's `Calls`
//!   enum and encode results with `abi_encode_returns` (see the examples);
//! - [`revert`], [`revert_with`] (any `sol!` error, including `Error(string)`).
//!
//! Panics trap, which halts the call like the EVM's INVALID opcode (all its gas is spent).
//! The SDK's allocator hands out memory and never frees it: every call runs in a fresh
//! instance, so memory lives exactly as long as the call.

#![no_std]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

pub use alloy_primitives::{Address, B256, U256};
pub use alloy_sol_types::{sol, SolCall, SolError, SolEvent, SolInterface, SolValue};

/// The host functions of module `farol` (see `docs/wasm.md` in the Farol repository).
mod sys {
    #[link(wasm_import_module = "farol")]
    extern "C" {
        pub(crate) fn calldata_size() -> u32;
        pub(crate) fn calldata_copy(dst: *mut u8, offset: u32, len: u32);
        pub(crate) fn returndata_size() -> u32;
        pub(crate) fn returndata_copy(dst: *mut u8, offset: u32, len: u32);
        pub(crate) fn caller(dst: *mut u8);
        pub(crate) fn address(dst: *mut u8);
        pub(crate) fn origin(dst: *mut u8);
        pub(crate) fn callvalue(dst: *mut u8);
        pub(crate) fn block_number() -> u64;
        pub(crate) fn timestamp() -> u64;
        pub(crate) fn chain_id() -> u64;
        pub(crate) fn gas_left() -> u64;
        pub(crate) fn balance(addr: *const u8, dst: *mut u8);
        pub(crate) fn sload(key: *const u8, dst: *mut u8);
        pub(crate) fn sstore(key: *const u8, value: *const u8);
        pub(crate) fn tload(key: *const u8, dst: *mut u8);
        pub(crate) fn tstore(key: *const u8, value: *const u8);
        pub(crate) fn log(topics: *const u8, n: u32, data: *const u8, len: u32);
        pub(crate) fn keccak256(ptr: *const u8, len: u32, dst: *mut u8);
        pub(crate) fn call(
            kind: u32,
            to: *const u8,
            value: *const u8,
            data: *const u8,
            len: u32,
            gas: u64,
        ) -> u32;
        pub(crate) fn create(
            kind: u32,
            value: *const u8,
            code: *const u8,
            len: u32,
            salt: *const u8,
            out: *mut u8,
        ) -> u32;
        pub(crate) fn exit(status: u32, ptr: *const u8, len: u32) -> !;
    }
}

// ---- context ---------------------------------------------------------------------------------

/// The call's input.
pub fn calldata() -> Vec<u8> {
    // SAFETY (for every `unsafe` below): the host reads and writes exactly the lengths given,
    // inside buffers this function owns.
    let len = unsafe { sys::calldata_size() };
    let mut out = vec![0u8; len as usize];
    unsafe { sys::calldata_copy(out.as_mut_ptr(), 0, len) };
    out
}

fn address_from(f: unsafe extern "C" fn(*mut u8)) -> Address {
    let mut a = [0u8; 20];
    unsafe { f(a.as_mut_ptr()) };
    Address::from(a)
}

/// The account that called this contract.
pub fn caller() -> Address {
    address_from(sys::caller)
}

/// This contract's address (the storage it uses).
pub fn address() -> Address {
    address_from(sys::address)
}

/// The transaction's sender.
pub fn origin() -> Address {
    address_from(sys::origin)
}

/// Wei sent with this call.
pub fn value() -> U256 {
    let mut v = [0u8; 32];
    unsafe { sys::callvalue(v.as_mut_ptr()) };
    U256::from_be_bytes(v)
}

/// The block's number.
pub fn block_number() -> u64 {
    unsafe { sys::block_number() }
}

/// The block's timestamp (seconds).
pub fn timestamp() -> u64 {
    unsafe { sys::timestamp() }
}

/// The chain id.
pub fn chain_id() -> u64 {
    unsafe { sys::chain_id() }
}

/// Gas this call has left.
pub fn gas_left() -> u64 {
    unsafe { sys::gas_left() }
}

/// The balance of `who` in wei.
pub fn balance(who: Address) -> U256 {
    let mut v = [0u8; 32];
    unsafe { sys::balance(who.as_ptr(), v.as_mut_ptr()) };
    U256::from_be_bytes(v)
}

/// Keccak-256 of `bytes`, computed by the host.
pub fn keccak256(bytes: &[u8]) -> B256 {
    let mut out = [0u8; 32];
    unsafe { sys::keccak256(bytes.as_ptr(), bytes.len() as u32, out.as_mut_ptr()) };
    B256::from(out)
}

// ---- storage ---------------------------------------------------------------------------------

/// One storage word of this contract, at a Solidity-compatible slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub U256);

impl Slot {
    /// Slot number `n` (as Solidity numbers state variables).
    pub const fn new(n: u64) -> Slot {
        Slot(U256::from_limbs([n, 0, 0, 0]))
    }

    /// The value stored.
    pub fn get(self) -> U256 {
        let key = self.0.to_be_bytes::<32>();
        let mut v = [0u8; 32];
        unsafe { sys::sload(key.as_ptr(), v.as_mut_ptr()) };
        U256::from_be_bytes(v)
    }

    /// Stores `value`.
    pub fn set(self, value: U256) {
        let key = self.0.to_be_bytes::<32>();
        let v = value.to_be_bytes::<32>();
        unsafe { sys::sstore(key.as_ptr(), v.as_ptr()) };
    }

    /// The entry for `key` of a `mapping` declared at this slot: `keccak256(key . slot)`, with
    /// `key` as its 32-byte ABI word, exactly as Solidity lays it out. Nest for nested
    /// mappings: `ALLOWANCES.at(owner).at(spender)`.
    pub fn at(self, key: impl Into<B256>) -> Slot {
        let mut buf = [0u8; 64];
        buf[..32].copy_from_slice(key.into().as_slice());
        buf[32..].copy_from_slice(&self.0.to_be_bytes::<32>());
        Slot(U256::from_be_bytes(keccak256(&buf).0))
    }

    /// The transient (EIP-1153) value at this slot.
    pub fn get_transient(self) -> U256 {
        let key = self.0.to_be_bytes::<32>();
        let mut v = [0u8; 32];
        unsafe { sys::tload(key.as_ptr(), v.as_mut_ptr()) };
        U256::from_be_bytes(v)
    }

    /// Sets the transient (EIP-1153) value at this slot.
    pub fn set_transient(self, value: U256) {
        let key = self.0.to_be_bytes::<32>();
        let v = value.to_be_bytes::<32>();
        unsafe { sys::tstore(key.as_ptr(), v.as_ptr()) };
    }
}

/// An address as a mapping key (its 32-byte ABI word).
pub fn word(a: Address) -> B256 {
    a.into_word()
}

// ---- events ----------------------------------------------------------------------------------

/// Emits `event` (any `sol!` event) from this contract.
pub fn emit<E: SolEvent>(event: &E) {
    let log = event.encode_log_data();
    let topics: Vec<u8> = log.topics().iter().flat_map(|t| t.0).collect();
    let data = log.data.as_ref();
    unsafe {
        sys::log(topics.as_ptr(), log.topics().len() as u32, data.as_ptr(), data.len() as u32)
    };
}

// ---- calls -----------------------------------------------------------------------------------

/// How [`call_raw`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CallKind {
    /// CALL: the callee runs on its own storage and may receive value.
    Call = 0,
    /// STATICCALL: the callee (and everything it calls) may not change state.
    Static = 1,
    /// DELEGATECALL: the callee's code runs on this contract's storage, caller and value.
    Delegate = 2,
}

/// Calls `to` with raw `data`, `value` wei and at most `gas` (the host keeps 1/64 of what is
/// left, as the EVM does). `Ok` carries the return data, `Err` the revert data (empty when
/// the callee halted).
pub fn call_raw(
    kind: CallKind,
    to: Address,
    value: U256,
    data: &[u8],
    gas: u64,
) -> Result<Vec<u8>, Vec<u8>> {
    let v = value.to_be_bytes::<32>();
    let ok = unsafe {
        sys::call(kind as u32, to.as_ptr(), v.as_ptr(), data.as_ptr(), data.len() as u32, gas)
    };
    let len = unsafe { sys::returndata_size() };
    let mut out = vec![0u8; len as usize];
    unsafe { sys::returndata_copy(out.as_mut_ptr(), 0, len) };
    if ok == 1 {
        Ok(out)
    } else {
        Err(out)
    }
}

fn decode<C: SolCall>(r: Result<Vec<u8>, Vec<u8>>) -> Result<C::Return, Vec<u8>> {
    let out = r?;
    // Checked as Solidity checks return data: a dirty bool or address is no value.
    C::abi_decode_returns_validate(&out).map_err(|_| Vec::new())
}

/// Calls `to` with `c` (any `sol!` function) and `value` wei, giving it all the gas it may.
/// `Err` carries the revert data; output that does not decode is an `Err` with no data.
pub fn call<C: SolCall>(to: Address, value: U256, c: &C) -> Result<C::Return, Vec<u8>> {
    decode::<C>(call_raw(CallKind::Call, to, value, &c.abi_encode(), u64::MAX))
}

/// Calls `to` with `c` in a static context.
pub fn static_call<C: SolCall>(to: Address, c: &C) -> Result<C::Return, Vec<u8>> {
    decode::<C>(call_raw(CallKind::Static, to, U256::ZERO, &c.abi_encode(), u64::MAX))
}

/// Runs `to`'s code with `c` on this contract's storage.
pub fn delegate_call<C: SolCall>(to: Address, c: &C) -> Result<C::Return, Vec<u8>> {
    decode::<C>(call_raw(CallKind::Delegate, to, U256::ZERO, &c.abi_encode(), u64::MAX))
}

fn create_raw(kind: u32, value: U256, init_code: &[u8], salt: B256) -> Result<Address, Vec<u8>> {
    let v = value.to_be_bytes::<32>();
    let mut out = [0u8; 20];
    let ok = unsafe {
        sys::create(
            kind,
            v.as_ptr(),
            init_code.as_ptr(),
            init_code.len() as u32,
            salt.as_ptr(),
            out.as_mut_ptr(),
        )
    };
    if ok == 1 {
        return Ok(Address::from(out));
    }
    let len = unsafe { sys::returndata_size() };
    let mut data = vec![0u8; len as usize];
    unsafe { sys::returndata_copy(data.as_mut_ptr(), 0, len) };
    Err(data)
}

/// CREATE: deploys the contract `init_code` returns (EVM code, or a WASM module behind the
/// marker), sending it `value` wei. `Err` carries the revert data (empty after a halt).
pub fn create(value: U256, init_code: &[u8]) -> Result<Address, Vec<u8>> {
    create_raw(0, value, init_code, B256::ZERO)
}

/// CREATE2: as [`create`], at the address fixed by this contract, `salt` and the init code.
pub fn create2(value: U256, init_code: &[u8], salt: B256) -> Result<Address, Vec<u8>> {
    create_raw(1, value, init_code, salt)
}

// ---- ending the call -------------------------------------------------------------------------

/// Ends the call successfully with `output`.
pub fn finish(output: &[u8]) -> ! {
    unsafe { sys::exit(0, output.as_ptr(), output.len() as u32) }
}

/// Ends the call with a revert carrying `data`: every state change of the call is undone and
/// the caller gets its unspent gas back.
pub fn revert(data: &[u8]) -> ! {
    unsafe { sys::exit(1, data.as_ptr(), data.len() as u32) }
}

/// Reverts with `err` (any `sol!` error) ABI-encoded.
pub fn revert_with<E: SolError>(err: &E) -> ! {
    revert(&err.abi_encode())
}

/// `Error(string)`, the revert Solidity's `require(cond, "message")` produces.
pub fn error_string(message: &str) -> Vec<u8> {
    alloy_sol_types::Revert::from(message).abi_encode()
}

/// Names the contract's entry function: `fn(&[u8]) -> Result<Vec<u8>, Vec<u8>>` gets the
/// input and returns the output (`Ok`) or revert data (`Err`).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        // Exported as `call` under another name, so that a contract may import the SDK's
        // `call` beside it.
        #[export_name = "call"]
        pub extern "C" fn __farol_entry() {
            let input = $crate::calldata();
            let main: fn(&[u8]) -> Result<$crate::__Vec<u8>, $crate::__Vec<u8>> = $main;
            match main(&input) {
                Ok(out) => $crate::finish(&out),
                Err(data) => $crate::revert(&data),
            }
        }
    };
}

#[doc(hidden)]
pub use alloc::vec::Vec as __Vec;

// ---- runtime ---------------------------------------------------------------------------------

#[cfg(target_arch = "wasm32")]
mod runtime {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::Cell;

    /// A bump allocator: the free part of the initial memory first (from `__heap_base`, where
    /// the linker put the end of the stack and static data), then pages taken with
    /// `memory.grow`. Nothing is freed before the instance goes away at the end of the call.
    /// Most calls never grow the memory: growing costs gas, and the engine a system call.
    struct Bump {
        next: Cell<usize>,
        end: Cell<usize>,
    }

    // SAFETY: a contract instance runs on one thread.
    unsafe impl Sync for Bump {}

    const PAGE: usize = 65_536;

    extern "C" {
        /// Defined by the linker: the first byte after the stack and static data.
        static __heap_base: u8;
    }

    unsafe impl GlobalAlloc for Bump {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if self.end.get() == 0 {
                self.next.set(core::ptr::addr_of!(__heap_base) as usize);
                self.end.set(core::arch::wasm32::memory_size(0) * PAGE);
            }
            let align = layout.align();
            let Some(start) = self.next.get().checked_add(align - 1).map(|n| n & !(align - 1))
            else {
                return core::ptr::null_mut();
            };
            let Some(stop) = start.checked_add(layout.size()) else {
                return core::ptr::null_mut();
            };
            if stop > self.end.get() {
                let pages = (stop - self.end.get()).div_ceil(PAGE);
                if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                    return core::ptr::null_mut();
                }
                self.end.set(self.end.get() + pages * PAGE);
            }
            self.next.set(stop);
            start as *mut u8
        }

        unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
    }

    #[global_allocator]
    static ALLOC: Bump = Bump { next: Cell::new(0), end: Cell::new(0) };

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        core::arch::wasm32::unreachable()
    }
}
