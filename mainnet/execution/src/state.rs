//! The state an executor reads: the [`StateView`] trait, an in-memory state for tests and
//! benchmarks, the Farol Store adapter, and the block-scoped read cache both executors share.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use crossbeam_utils::CachePadded;
use parking_lot::RwLock;
use revm::bytecode::Bytecode;
use revm::primitives::KECCAK_EMPTY;

use crate::diff::StateDiff;
use crate::error::StateError;

/// The part of an account the state stores (its code lives apart, by hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// keccak256 of the code (`KECCAK_EMPTY` for none).
    pub code_hash: B256,
}

impl Account {
    /// An account holding only a balance.
    pub fn with_balance(balance: U256) -> Self {
        Account { balance, nonce: 0, code_hash: KECCAK_EMPTY }
    }

    /// EIP-161 emptiness: no code, zero nonce, zero balance.
    pub fn is_empty(&self) -> bool {
        self.balance.is_zero() && self.nonce == 0 && self.code_hash == KECCAK_EMPTY
    }
}

/// A read-only view of the parent state of a block. Implementations must be safe to read from
/// many threads at once.
pub trait StateView: Send + Sync {
    /// The account at `address`, or `None` when it does not exist.
    fn account(&self, address: Address) -> Result<Option<Account>, StateError>;
    /// The code whose hash is `code_hash`.
    fn code(&self, code_hash: B256) -> Result<Bytes, StateError>;
    /// A storage slot (zero when never written).
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError>;
    /// The hash of block `number` (BLOCKHASH).
    fn block_hash(&self, number: u64) -> Result<B256, StateError>;
    /// Whether `address` has any non-zero storage slot (EIP-7610 treats creating a contract
    /// there as a collision). A view that cannot enumerate storage may answer `false`: on a
    /// chain whose storage was only ever written by code, an address with storage always has
    /// code or a nonce, which revm checks itself.
    fn has_storage(&self, address: Address) -> Result<bool, StateError> {
        let _ = address;
        Ok(false)
    }
    /// True when a read costs no more than a memory lookup (an in-memory state). The parallel
    /// executor then runs blocks of cheap transactions sequentially, because overlapping
    /// reads gains nothing there; for any other view it assumes reads may wait on storage.
    fn reads_are_cheap(&self) -> bool {
        false
    }
}

/// A reference or a shared pointer to a view is a view.
macro_rules! delegate_state_view {
    ($($ptr:ty),*) => {$(
        impl<T: StateView + ?Sized> StateView for $ptr {
            fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
                (**self).account(address)
            }
            fn code(&self, code_hash: B256) -> Result<Bytes, StateError> {
                (**self).code(code_hash)
            }
            fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
                (**self).storage(address, slot)
            }
            fn block_hash(&self, number: u64) -> Result<B256, StateError> {
                (**self).block_hash(number)
            }
            fn has_storage(&self, address: Address) -> Result<bool, StateError> {
                (**self).has_storage(address)
            }
            fn reads_are_cheap(&self) -> bool {
                (**self).reads_are_cheap()
            }
        }
    )*};
}

delegate_state_view!(&T, Arc<T>);

/// The hash BLOCKHASH returns when a state does not know the block: keccak256 of its number,
/// the convention of the Ethereum state tests.
pub fn default_block_hash(number: u64) -> B256 {
    keccak256(number.to_string().as_bytes())
}

/// An account of [`InMemoryState`], with its storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemAccount {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// The code (empty for none).
    pub code: Bytes,
    /// Non-zero storage slots.
    pub storage: BTreeMap<U256, U256>,
}

/// A state held in memory: tests, state tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct InMemoryState {
    accounts: HashMap<Address, (Account, HashMap<U256, U256>)>,
    codes: HashMap<B256, Bytes>,
    block_hashes: HashMap<u64, B256>,
}

impl InMemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) an account with its code and storage.
    pub fn insert(&mut self, address: Address, account: MemAccount) {
        let code_hash =
            if account.code.is_empty() { KECCAK_EMPTY } else { keccak256(&account.code) };
        if code_hash != KECCAK_EMPTY {
            self.codes.insert(code_hash, account.code.clone());
        }
        let storage = account.storage.into_iter().filter(|(_, v)| !v.is_zero()).collect();
        self.accounts.insert(
            address,
            (Account { balance: account.balance, nonce: account.nonce, code_hash }, storage),
        );
    }

    /// Sets the hash BLOCKHASH returns for `number`.
    pub fn set_block_hash(&mut self, number: u64, hash: B256) {
        self.block_hashes.insert(number, hash);
    }

    /// Applies a block's state diff, making this state the block's post-state.
    pub fn apply(&mut self, diff: &StateDiff) {
        for (hash, code) in &diff.code {
            self.codes.insert(*hash, code.clone());
        }
        for address in &diff.wiped {
            if let Some((_, storage)) = self.accounts.get_mut(address) {
                storage.clear();
            }
        }
        for (address, account) in &diff.accounts {
            match account {
                None => {
                    self.accounts.remove(address);
                }
                Some(account) => {
                    self.accounts.entry(*address).or_default().0 = *account;
                }
            }
        }
        for (address, slots) in &diff.storage {
            let Some((_, storage)) = self.accounts.get_mut(address) else { continue };
            for (slot, value) in slots {
                if value.is_zero() {
                    storage.remove(slot);
                } else {
                    storage.insert(*slot, *value);
                }
            }
        }
    }

    /// The whole state as a diff from an empty state: what a genesis writes into Farol Store
    /// (`StateDiff::store_changes`).
    pub fn genesis_diff(&self) -> StateDiff {
        let mut diff = StateDiff::default();
        for (address, (account, storage)) in &self.accounts {
            diff.accounts.insert(*address, Some(*account));
            if !storage.is_empty() {
                diff.storage.insert(*address, storage.iter().map(|(k, v)| (*k, *v)).collect());
            }
            if let Some(code) = self.codes.get(&account.code_hash) {
                diff.code.insert(account.code_hash, code.clone());
            }
        }
        diff
    }

    /// Every account with its non-zero storage, in address order.
    pub fn accounts(&self) -> BTreeMap<Address, (Account, BTreeMap<U256, U256>)> {
        self.accounts
            .iter()
            .map(|(a, (acc, st))| (*a, (*acc, st.iter().map(|(k, v)| (*k, *v)).collect())))
            .collect()
    }
}

impl Default for Account {
    fn default() -> Self {
        Account::with_balance(U256::ZERO)
    }
}

impl StateView for InMemoryState {
    fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
        Ok(self.accounts.get(&address).map(|(a, _)| *a))
    }
    fn code(&self, code_hash: B256) -> Result<Bytes, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(Bytes::new());
        }
        self.codes.get(&code_hash).cloned().ok_or(StateError::MissingCode(code_hash))
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        Ok(self.accounts.get(&address).and_then(|(_, s)| s.get(&slot).copied()).unwrap_or_default())
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Ok(self.block_hashes.get(&number).copied().unwrap_or_else(|| default_block_hash(number)))
    }
    fn has_storage(&self, address: Address) -> Result<bool, StateError> {
        Ok(self.accounts.get(&address).is_some_and(|(_, s)| !s.is_empty()))
    }
    fn reads_are_cheap(&self) -> bool {
        true
    }
}

/// Wraps a view so that every read sleeps first: a storage with `latency` per cold read (the
/// block-scoped cache in front of it makes each location cold once per block).
#[derive(Debug)]
pub struct LatencyState<S> {
    inner: S,
    latency: Duration,
}

impl<S> LatencyState<S> {
    /// `inner`, read with `latency` per read.
    pub fn new(inner: S, latency: Duration) -> Self {
        LatencyState { inner, latency }
    }
}

impl<S: StateView> StateView for LatencyState<S> {
    fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
        std::thread::sleep(self.latency);
        self.inner.account(address)
    }
    fn code(&self, code_hash: B256) -> Result<Bytes, StateError> {
        std::thread::sleep(self.latency);
        self.inner.code(code_hash)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        std::thread::sleep(self.latency);
        self.inner.storage(address, slot)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.inner.block_hash(number)
    }
    fn has_storage(&self, address: Address) -> Result<bool, StateError> {
        std::thread::sleep(self.latency);
        self.inner.has_storage(address)
    }
}

/// Block-scoped cache in front of a [`StateView`], shared by all workers of one block: each
/// location is read from the view at most once per block (up to a benign race that reads it
/// twice and keeps the same value).
pub(crate) struct CachedView<'a, S: ?Sized> {
    view: &'a S,
    /// The view's reads cost no more than a lookup here ([`StateView::reads_are_cheap`]):
    /// accounts and storage are read from it directly (code is still cached: it is analyzed
    /// once per block).
    direct: bool,
    shards: Vec<CachePadded<RwLock<Shard>>>,
}

#[derive(Default)]
struct Shard {
    accounts: hashbrown::HashMap<Address, Option<Account>>,
    storage: hashbrown::HashMap<(Address, U256), U256>,
    code: hashbrown::HashMap<B256, Bytecode>,
    has_storage: hashbrown::HashMap<Address, bool>,
}

/// Enough shards that two workers rarely touch the same lock at once.
pub(crate) const SHARDS: usize = 1024;

fn mix(address: &Address, extra: u64) -> usize {
    let a = address.0;
    let low = u64::from_le_bytes([a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19]]);
    let high = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    ((low ^ high.rotate_left(17) ^ extra.rotate_left(31)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54)
        as usize
        % SHARDS
}

fn shard_of(address: &Address) -> usize {
    mix(address, 0)
}

fn code_shard(code_hash: &B256) -> usize {
    code_hash.0[0] as usize % SHARDS
}

fn storage_shard(address: &Address, slot: &U256) -> usize {
    let l = slot.as_limbs();
    mix(address, l[0] ^ l[1].rotate_left(7) ^ l[2].rotate_left(13) ^ l[3].rotate_left(29))
}

impl<'a, S: StateView + ?Sized> CachedView<'a, S> {
    pub(crate) fn new(view: &'a S) -> Self {
        CachedView {
            view,
            direct: view.reads_are_cheap(),
            shards: (0..SHARDS).map(|_| CachePadded::new(RwLock::new(Shard::default()))).collect(),
        }
    }

    /// The value `map` caches for `key` in shard `shard` (read under the shared lock), loaded
    /// with `load` on a miss.
    fn cached<K: std::hash::Hash + Eq, V: Clone>(
        &self,
        shard: usize,
        map: fn(&Shard) -> &hashbrown::HashMap<K, V>,
        map_mut: fn(&mut Shard) -> &mut hashbrown::HashMap<K, V>,
        key: K,
        load: impl FnOnce() -> Result<V, StateError>,
    ) -> Result<V, StateError> {
        let shard = &self.shards[shard];
        if let Some(v) = map(&shard.read()).get(&key) {
            return Ok(v.clone());
        }
        let v = load()?;
        map_mut(&mut shard.write()).insert(key, v.clone());
        Ok(v)
    }

    pub(crate) fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
        if self.direct {
            return self.view.account(address);
        }
        self.cached(
            shard_of(&address),
            |s| &s.accounts,
            |s| &mut s.accounts,
            address,
            || self.view.account(address),
        )
    }

    pub(crate) fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        if self.direct {
            return self.view.storage(address, slot);
        }
        let shard = storage_shard(&address, &slot);
        self.cached(
            shard,
            |s| &s.storage,
            |s| &mut s.storage,
            (address, slot),
            || self.view.storage(address, slot),
        )
    }

    /// Code by hash; code created inside the block is inserted with [`Self::insert_code`].
    pub(crate) fn code(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        if code_hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        self.cached(
            code_shard(&code_hash),
            |s| &s.code,
            |s| &mut s.code,
            code_hash,
            || {
                if let Some(code) = shared_code(&code_hash) {
                    return Ok(code);
                }
                let bytes = self.view.code(code_hash)?;
                let code = if bytes.first() == Some(&0xFE) {
                    halting_code(bytes)
                } else {
                    // Bytes that look like an EIP-7702 delegation but are malformed run as
                    // legacy code.
                    Bytecode::new_raw_checked(bytes.clone())
                        .unwrap_or_else(|_| Bytecode::new_legacy(bytes))
                };
                share_code(code_hash, &code);
                Ok(code)
            },
        )
    }

    pub(crate) fn insert_code(&self, code_hash: B256, code: Bytecode) {
        share_code(code_hash, &code);
        self.shards[code_shard(&code_hash)].write().code.entry(code_hash).or_insert(code);
    }

    pub(crate) fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        self.view.block_hash(number)
    }

    pub(crate) fn has_storage(&self, address: Address) -> Result<bool, StateError> {
        if self.direct {
            return self.view.has_storage(address);
        }
        self.cached(
            shard_of(&address),
            |s| &s.has_storage,
            |s| &mut s.has_storage,
            address,
            || self.view.has_storage(address),
        )
    }
}

/// Bytes of analyzed code kept across blocks ([`shared_code`]).
pub(crate) const SHARED_CODE_BYTES: usize = 64 << 20;

/// Analyzed code by hash, kept across the blocks this process executes, least recently used
/// first out past [`SHARED_CODE_BYTES`]. Code never changes under its hash, so where a block
/// gets it from changes nothing; what it saves is loading the bytes from state, copying them
/// and analyzing their jump destinations again in every block (60–120 µs for a 40 KiB
/// contract).
static SHARED_CODE: parking_lot::Mutex<Option<SharedCode>> = parking_lot::Mutex::new(None);

struct SharedCode {
    codes: lru::LruCache<B256, Bytecode>,
    bytes: usize,
}

/// The analyzed code with hash `hash`, if a block of this process loaded or created it lately.
fn shared_code(hash: &B256) -> Option<Bytecode> {
    SHARED_CODE.lock().as_mut()?.codes.get(hash).cloned()
}

/// Keeps `code` (whose hash is `hash`) for later blocks.
fn share_code(hash: B256, code: &Bytecode) {
    let size = code.bytes_slice().len();
    if size > SHARED_CODE_BYTES / 16 {
        return;
    }
    let mut guard = SHARED_CODE.lock();
    let shared =
        guard.get_or_insert_with(|| SharedCode { codes: lru::LruCache::unbounded(), bytes: 0 });
    if shared.codes.contains(&hash) {
        return;
    }
    shared.codes.put(hash, code.clone());
    shared.bytes += size;
    while shared.bytes > SHARED_CODE_BYTES {
        let Some((_, old)) = shared.codes.pop_lru() else { break };
        shared.bytes = shared.bytes.saturating_sub(old.bytes_slice().len());
    }
}

/// Code that starts with 0xFE (INVALID), which includes every WASM contract: the EVM halts on
/// its first byte, so no JUMPDEST in it can ever be reached and revm's jump-table analysis (a
/// pass over the whole code, 60 µs or more for a 40 KiB contract) is skipped: the table says
/// "no valid jump destination" without looking.
fn halting_code(bytes: alloy_primitives::Bytes) -> Bytecode {
    /// Past the end of the code the interpreter may read the immediates of one instruction
    /// (PUSH32: 32 bytes) and then the STOP that ends it.
    const PADDING: usize = 33;
    let len = bytes.len();
    let mut padded = Vec::with_capacity(len + PADDING);
    padded.extend_from_slice(&bytes);
    padded.resize(len + PADDING, 0);
    let table = revm::bytecode::JumpTable::from_slice(&vec![0u8; len.div_ceil(8)], len);
    // SAFETY: `padded` holds the code and 33 zero bytes, more than any instruction reads past
    // the last one (`analyze_legacy` pads at most 33), so the interpreter never reads past the
    // allocation; `len` is the code's length and the table covers `len` bits. The table marks
    // no jump destination, which only matters to a JUMP, and execution never passes the first
    // byte (INVALID).
    #[allow(unsafe_code)]
    unsafe {
        Bytecode::new_analyzed(padded.into(), len, table)
    }
}

#[cfg(test)]
mod shared_code_tests {
    use super::*;

    #[test]
    fn code_is_kept_across_blocks_within_its_budget() {
        let code = |n: u8, len: usize| Bytecode::new_legacy(Bytes::from(vec![n; len]));
        let first = B256::repeat_byte(0xa1);
        share_code(first, &code(1, 100));
        assert_eq!(
            shared_code(&first).map(|c| c.original_bytes()),
            Some(code(1, 100).original_bytes())
        );
        // Code too large for a sixteenth of the budget is not kept.
        let huge = B256::repeat_byte(0xa2);
        share_code(huge, &code(2, SHARED_CODE_BYTES / 16 + 1));
        assert!(shared_code(&huge).is_none());
        // Past the budget the least recently used goes first.
        let chunk = SHARED_CODE_BYTES / 20;
        for i in 0..24u8 {
            share_code(B256::repeat_byte(i), &code(i, chunk));
        }
        assert!(shared_code(&first).is_none());
        assert!(shared_code(&B256::repeat_byte(23)).is_some());
        let kept = SHARED_CODE.lock().as_ref().map_or(0, |s| s.bytes);
        assert!(kept <= SHARED_CODE_BYTES, "{kept}");
    }
}
