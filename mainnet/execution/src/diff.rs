//! The state diff of a block, and how it maps onto Farol Store keys.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use farol_store::Snapshot;

use crate::error::StateError;
use crate::state::{Account, StateView};

/// What a block changed, in deterministic order. An account mapped to `None` was deleted
/// (self-destructed, or touched while empty under EIP-161); its storage goes with it.
/// Only locations whose final value differs from the parent state appear.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Changed accounts.
    pub accounts: BTreeMap<Address, Option<Account>>,
    /// Changed storage slots (a zero value deletes the slot).
    pub storage: BTreeMap<Address, BTreeMap<U256, U256>>,
    /// Code first deployed in this block, by hash.
    pub code: BTreeMap<B256, Bytes>,
    /// Accounts deleted or (re)created in this block: any parent storage they had is gone. The
    /// slots written in the block are listed in `storage` as well.
    pub wiped: BTreeSet<Address>,
}

/// Domain byte of account keys in Farol Store.
const ACCOUNT_DOMAIN: u8 = 0x00;
/// Domain byte of storage keys.
const STORAGE_DOMAIN: u8 = 0x01;
/// Domain byte of code keys.
const CODE_DOMAIN: u8 = 0x02;

/// Farol Store key of an account: `keccak256(0x00 ‖ address)`.
pub fn account_key(address: &Address) -> B256 {
    let mut buf = [0u8; 21];
    buf[0] = ACCOUNT_DOMAIN;
    buf[1..].copy_from_slice(address.as_slice());
    keccak256(buf)
}

/// Farol Store key of a storage slot: `keccak256(0x01 ‖ address ‖ slot as 32 bytes)`.
pub fn storage_key(address: &Address, slot: &U256) -> B256 {
    let mut buf = [0u8; 53];
    buf[0] = STORAGE_DOMAIN;
    buf[1..21].copy_from_slice(address.as_slice());
    buf[21..].copy_from_slice(&slot.to_be_bytes::<32>());
    keccak256(buf)
}

/// Code is stored in chunks of at most this many bytes (Farol Store values are at most
/// 16 KiB; contract code can be 24 KiB under EIP-170, more later).
pub const CODE_CHUNK: usize = 16 * 1024 - 8;

/// Farol Store key of chunk `index` of code: `keccak256(0x02 ‖ code hash ‖ index as 4 bytes)`.
/// Chunk 0 starts with the code's length (4 bytes, big-endian).
pub fn code_key(code_hash: &B256, index: u32) -> B256 {
    let mut buf = [0u8; 37];
    buf[0] = CODE_DOMAIN;
    buf[1..33].copy_from_slice(code_hash.as_slice());
    buf[33..].copy_from_slice(&index.to_be_bytes());
    keccak256(buf)
}

/// The store values holding `code`: its length, then its bytes, cut into chunks.
fn code_chunks(code: &[u8]) -> Vec<Bytes> {
    let mut framed = Vec::with_capacity(code.len() + 4);
    framed.extend_from_slice(&(code.len() as u32).to_be_bytes());
    framed.extend_from_slice(code);
    framed.chunks(CODE_CHUNK).map(Bytes::copy_from_slice).collect()
}

/// An account's value in Farol Store: nonce (8 bytes, big-endian) ‖ balance (32) ‖ code hash (32).
pub fn encode_account(account: &Account) -> Bytes {
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&account.nonce.to_be_bytes());
    out.extend_from_slice(&account.balance.to_be_bytes::<32>());
    out.extend_from_slice(account.code_hash.as_slice());
    out.into()
}

/// Decodes [`encode_account`]'s bytes.
pub fn decode_account(bytes: &[u8]) -> Result<Account, StateError> {
    if bytes.len() != 72 {
        return Err(StateError::Corrupt(format!(
            "account value of {} bytes, want 72",
            bytes.len()
        )));
    }
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&bytes[..8]);
    Ok(Account {
        nonce: u64::from_be_bytes(nonce),
        balance: U256::from_be_slice(&bytes[8..40]),
        code_hash: B256::from_slice(&bytes[40..72]),
    })
}

impl StateDiff {
    /// Lays `later`, a diff over the state this one leaves, on top of this one, so that this
    /// one goes from its parent state to `later`'s result. Slots of an account `later` wipes
    /// are zeroed here (a slot set back to its parent value may then be listed). Accounts
    /// and slots `later` lists take its values.
    pub fn extend_with(&mut self, later: &StateDiff) {
        for address in &later.wiped {
            if let Some(slots) = self.storage.get_mut(address) {
                slots.values_mut().for_each(|v| *v = U256::ZERO);
            }
            self.wiped.insert(*address);
        }
        for (address, account) in &later.accounts {
            self.accounts.insert(*address, *account);
        }
        for (address, slots) in &later.storage {
            self.storage.entry(*address).or_default().extend(slots);
        }
        for (hash, code) in &later.code {
            self.code.entry(*hash).or_insert_with(|| code.clone());
        }
    }

    /// The changes in the form [`farol_store::Store::apply`] takes, in key order.
    ///
    /// Storage of a wiped account is cleared only for the slots the block wrote: Farol Store
    /// keys storage by hash, so it cannot enumerate an account's slots. Since Cancun
    /// (EIP-6780) an account can only be deleted in the transaction that created it, and
    /// creation requires empty storage (EIP-7610), so no other slot can exist.
    pub fn store_changes(&self) -> Vec<(B256, Option<Bytes>)> {
        let mut out = BTreeMap::new();
        for (address, account) in &self.accounts {
            out.insert(account_key(address), account.as_ref().map(encode_account));
        }
        for (address, slots) in &self.storage {
            for (slot, value) in slots {
                let v = (!value.is_zero()).then(|| Bytes::from(value.to_be_bytes::<32>().to_vec()));
                out.insert(storage_key(address, slot), v);
            }
        }
        for (hash, code) in &self.code {
            for (i, chunk) in code_chunks(code).into_iter().enumerate() {
                out.insert(code_key(hash, i as u32), Some(chunk));
            }
        }
        out.into_iter().collect()
    }
}

/// A [`StateView`] over a Farol Store snapshot, with the key scheme of [`StateDiff::store_changes`].
pub struct StoreState {
    snapshot: Snapshot,
    block_hashes: BTreeMap<u64, B256>,
}

impl StoreState {
    /// Reads the state at `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        StoreState { snapshot, block_hashes: BTreeMap::new() }
    }

    /// The Farol Store root that `changes` on top of this state would give; nothing is
    /// written (see [`farol_store::Store::root_with`]).
    pub fn root_with(
        &self,
        changes: impl IntoIterator<Item = (B256, Option<Bytes>)>,
    ) -> Result<B256, StateError> {
        self.snapshot.root_with(changes).map_err(|e| StateError::Store(e.to_string()))
    }

    /// Sets the hashes of the recent blocks BLOCKHASH can see (others read as zero).
    pub fn with_block_hashes(mut self, hashes: BTreeMap<u64, B256>) -> Self {
        self.block_hashes = hashes;
        self
    }
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreState(version {})", self.snapshot.version())
    }
}

impl StateView for StoreState {
    fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
        let v = self
            .snapshot
            .get(&account_key(&address))
            .map_err(|e| StateError::Store(e.to_string()))?;
        v.map(|b| decode_account(&b)).transpose()
    }
    fn code(&self, code_hash: B256) -> Result<Bytes, StateError> {
        if code_hash == revm::primitives::KECCAK_EMPTY {
            return Ok(Bytes::new());
        }
        let chunk = |i: u32| -> Result<Bytes, StateError> {
            self.snapshot
                .get(&code_key(&code_hash, i))
                .map_err(|e| StateError::Store(e.to_string()))?
                .ok_or(StateError::MissingCode(code_hash))
        };
        let first = chunk(0)?;
        let Some(len) =
            first.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            return Err(StateError::Corrupt(format!(
                "code {code_hash}: chunk 0 of {} bytes",
                first.len()
            )));
        };
        let mut framed = first.to_vec();
        let mut i = 1;
        while framed.len() < len + 4 {
            if framed.len() % CODE_CHUNK != 0 {
                return Err(StateError::Corrupt(format!(
                    "code {code_hash}: short chunk {}",
                    i - 1
                )));
            }
            framed.extend_from_slice(&chunk(i)?);
            i += 1;
        }
        let code = Bytes::copy_from_slice(&framed[4..]);
        if code.len() != len || keccak256(&code) != code_hash {
            return Err(StateError::Corrupt(format!(
                "code {code_hash}: stored bytes do not hash to it"
            )));
        }
        Ok(code)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        let v = self
            .snapshot
            .get(&storage_key(&address, &slot))
            .map_err(|e| StateError::Store(e.to_string()))?;
        match v {
            None => Ok(U256::ZERO),
            Some(b) if b.len() == 32 => Ok(U256::from_be_slice(&b)),
            Some(b) => Err(StateError::Corrupt(format!("storage value of {} bytes", b.len()))),
        }
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        Ok(self.block_hashes.get(&number).copied().unwrap_or_default())
    }
}
