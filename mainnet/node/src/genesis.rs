//! The genesis: chain id, first block parameters and funded accounts; and the development
//! accounts derived from a BIP-39 mnemonic (the same ones anvil and hardhat fund).

use std::collections::BTreeMap;

use alloy_consensus::{constants::EMPTY_OMMER_ROOT_HASH, Header, EMPTY_ROOT_HASH};
use alloy_primitives::{
    address, keccak256, Address, Bloom, Bytes, B256, B64, KECCAK256_EMPTY, U256,
};
use alloy_signer_local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use farol_execution::{Account, ChainSpec, StateDiff};
use serde::{Deserialize, Serialize};

use crate::chain::{OrderingData, StoredBlock};

/// The mnemonic of anvil's and hardhat's development accounts.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Chain id of development chains (anvil's and hardhat's).
pub const DEV_CHAIN_ID: u64 = 31_337;

/// The block gas limit of a development chain and, by default, of `farol chain new`'s:
/// Ethereum's. Not more: MetaMask gives a transaction whose estimate failed 35 % of the
/// block gas limit, and past 47,935,000 that passes EIP-7825's 2^24 per transaction, which
/// every pool refuses (before stop 51 the limit was 10^9, and such sends failed; found by a
/// review). A group of commits past it makes several blocks (docs/node.md §2), so it does
/// not bound throughput.
pub const DEFAULT_GAS_LIMIT: u64 = 45_000_000;

/// The address of the deterministic CREATE2 deployer that Foundry's `forge script` deploys
/// salted contracts through, that anvil places at genesis and that most chains hold (its
/// keyless deploying transaction puts it there).
pub const CREATE2_DEPLOYER: Address = address!("4e59b44847b379578588920ca78fbf26c0b4956c");

/// The code at [`CREATE2_DEPLOYER`]: the runtime code that address holds on other chains,
/// byte for byte, because Foundry checks it (a salted deployment in `forge script` reverts
/// with `invalid CREATE2 deployer bytecode` unless the code's hash is
/// [`CREATE2_DEPLOYER_CODE_HASH`]; stop 51's first version, 42 bytes of Farol's own with the
/// same interface, failed there, found by a review). The call's data is a 32-byte salt
/// followed by init code, which it runs with CREATE2 (passing on the call's value); it
/// answers the new contract's 20-byte address. A failed creation reverts with no data, and
/// data shorter than a salt makes the copy's length wrap and the call run out of gas.
///
/// ```text
/// 00 PUSH32 -32  CALLDATASIZE  ADD              len = size - 32 (mod 2^256)
/// 23 PUSH1 0  DUP2  PUSH1 32  DUP3  CALLDATACOPY memory[0..len] = calldata[32..]
/// 2a DUP1  CALLDATALOAD                          salt = calldata[0..32]
/// 2c DUP3  DUP3  CALLVALUE  CREATE2              (value, 0, len, salt)
/// 30 DUP1  ISZERO  ISZERO  PUSH1 0x39  JUMPI     created: on to 0x39
/// 36 DUP2  DUP3  REVERT                          revert(0, 0)
/// 39 JUMPDEST  DUP1  DUP3  MSTORE  POP POP POP   memory[0..32] = address
/// 40 PUSH1 20  PUSH1 12  RETURN                  its 20 bytes
/// ```
pub const CREATE2_DEPLOYER_CODE: [u8; 69] = alloy_primitives::hex!(
    "7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe03601600081602082378035"
    "828234f58015156039578182fd5b8082525050506014600cf3"
);

/// The hash of [`CREATE2_DEPLOYER_CODE`], which Foundry requires at [`CREATE2_DEPLOYER`].
pub const CREATE2_DEPLOYER_CODE_HASH: B256 =
    alloy_primitives::b256!("2fa86add0aed31f33a762c9d88e807c475bd51d0f52bd0955754b2608f7e4989");

/// What the chain starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// Timestamp of block 0 (Unix seconds).
    pub timestamp: u64,
    /// Gas limit of every block.
    pub gas_limit: u64,
    /// Base fee per gas of every block (wei). Farol's fee does not float with demand: block
    /// size is set by consensus, not by gas.
    pub base_fee: u64,
    /// Accounts at genesis: each a balance (wei), or a table of `balance`, `nonce`, `code`
    /// and `storage` (a contract placed at genesis; since stop 51). An account given twice
    /// (its address in two cases) is an error naming it (before stop 46 the later balance
    /// silently replaced the earlier).
    #[serde(deserialize_with = "unique_accounts")]
    pub alloc: BTreeMap<Address, GenesisAccount>,
    /// Consensus parameters every validator must share.
    #[serde(default)]
    pub consensus: ConsensusParams,
}

/// A map of accounts in which no address comes twice.
fn unique_accounts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Address, GenesisAccount>, D::Error> {
    struct Accounts;
    impl<'de> serde::de::Visitor<'de> for Accounts {
        type Value = BTreeMap<Address, GenesisAccount>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of addresses and accounts")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut m: M,
        ) -> Result<Self::Value, M::Error> {
            let mut out = BTreeMap::new();
            while let Some(address) = m.next_key::<Address>()? {
                // The address goes into the account's errors: a bad field then names it.
                let account = m
                    .next_value::<GenesisAccount>()
                    .map_err(|e| serde::de::Error::custom(format!("{address}: {e}")))?;
                if out.insert(address, account).is_some() {
                    return Err(serde::de::Error::custom(format!("{address} is given twice")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Accounts)
}

/// Genesis accounts from a file's text: a table of addresses and accounts (balances, or
/// tables of `balance`, `nonce`, `code` and `storage`), or a file holding such a table as
/// `alloc`, as geth's genesis files do (their other fields are not read). JSON when `json`,
/// TOML otherwise. An address given twice is an error naming it.
pub fn read_accounts(text: &str, json: bool) -> Result<BTreeMap<Address, GenesisAccount>, String> {
    #[derive(Deserialize)]
    struct Accounts(
        #[serde(deserialize_with = "unique_accounts")] BTreeMap<Address, GenesisAccount>,
    );
    #[derive(Deserialize)]
    struct Wrapped {
        alloc: Accounts,
    }
    if json {
        let top: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        let read = if top.contains_key("alloc") {
            serde_json::from_str::<Wrapped>(text).map(|w| w.alloc)
        } else {
            serde_json::from_str::<Accounts>(text)
        };
        read.map(|a| a.0).map_err(|e| e.to_string())
    } else {
        let top: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let read = if top.contains_key("alloc") {
            toml::from_str::<Wrapped>(text).map(|w| w.alloc)
        } else {
            toml::from_str::<Accounts>(text)
        };
        read.map(|a| a.0).map_err(|e| e.to_string())
    }
}

/// An account at genesis: a balance, and for a contract placed there its nonce, code and
/// storage. Written as its balance alone when it has nothing else (what every genesis held
/// before stop 51), as a table otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenesisAccount {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// Code (EVM bytecode, or an EIP-7702 delegation); empty for none.
    pub code: Bytes,
    /// Storage slots; a zero value is the same as an absent slot.
    pub storage: BTreeMap<U256, U256>,
}

impl GenesisAccount {
    /// An account holding `balance` wei and nothing else.
    pub fn balance(balance: U256) -> Self {
        GenesisAccount { balance, ..Default::default() }
    }

    /// Whether the account holds a balance alone (written as one).
    fn is_balance(&self) -> bool {
        self.nonce == 0 && self.code.is_empty() && self.storage.is_empty()
    }

    /// Why its code cannot be placed at genesis, if it cannot. Code beginning with `0xEF` is
    /// refused unless it is an EIP-7702 delegation (EIP-3541: no deployment makes such code,
    /// so the executor never meets it), and a WASM contract's code too: a module becomes a
    /// contract through a deployment, which checks it and meters it.
    pub fn code_problem(&self) -> Option<String> {
        let code = &self.code[..];
        if farol_execution::wasm::is_wasm(code) {
            return Some(
                "a WASM contract cannot be placed at genesis: deploy it with a transaction".into(),
            );
        }
        let delegation = code.len() == 23 && code.starts_with(&[0xef, 0x01, 0x00]);
        if code.first() == Some(&0xef) && !delegation {
            return Some(
                "begins with 0xEF and is not an EIP-7702 delegation (0xef0100 and an address; \
                 EIP-3541)"
                    .into(),
            );
        }
        None
    }
}

/// A number as genesis files write them: a TOML or JSON number, or a string that `parse`
/// reads (`what` says which in errors). Balances, nonces and storage words differ only in
/// how their strings read.
struct Scalar<T> {
    what: &'static str,
    parse: fn(&str) -> Option<T>,
    from: fn(u64) -> T,
}

impl<T> serde::de::Visitor<'_> for Scalar<T> {
    type Value = T;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.what)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        Ok((self.from)(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v).map(self.from).map_err(|_| E::custom(format!("{v} is below zero")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).ok_or_else(|| E::custom(format!("{v:?} is not {}", self.what)))
    }
}

/// A balance: a number, or a string in decimal or `0x` hex (geth's reading of a genesis
/// balance).
struct Wei(U256);

impl Wei {
    /// How a balance reads.
    fn scalar() -> Scalar<U256> {
        Scalar {
            what: "an amount in wei: a number, or a string in decimal or 0x hex",
            parse: |v| {
                let text = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v);
                U256::deserialize(text).ok()
            },
            from: U256::from,
        }
    }
}

impl<'de> Deserialize<'de> for Wei {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Wei::scalar()).map(Wei)
    }
}

/// A storage slot or value: a string of hex digits, with or without `0x` (as geth reads
/// genesis storage: `"10"` is sixteen), or a number.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Word(U256);

impl<'de> Deserialize<'de> for Word {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |v: &str| {
            let h = v.strip_prefix("0x").unwrap_or(v);
            let ok = !h.is_empty() && h.len() <= 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
            ok.then(|| U256::from_str_radix(h, 16).ok()).flatten()
        };
        let what = "a 32-byte word: up to 64 hex digits, with or without 0x, or a number";
        d.deserialize_any(Scalar { what, parse, from: U256::from }).map(Word)
    }
}

/// A nonce: a number, or a string in decimal or `0x` hex (geth's genesis files write
/// `"0x1"`).
struct Nonce(u64);

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parse = |v: &str| match v.strip_prefix("0x") {
            Some(h) if !h.is_empty() => u64::from_str_radix(h, 16).ok(),
            Some(_) => None,
            None => v.parse().ok().filter(|_| v.bytes().all(|b| b.is_ascii_digit())),
        };
        let what = "a nonce: a number, or a string in decimal or 0x hex, below 2^64";
        d.deserialize_any(Scalar { what, parse, from: |v| v }).map(Nonce)
    }
}

/// An account's storage: slots and values ([`Word`]s), a slot given twice (in two
/// spellings) refused.
struct Storage(BTreeMap<U256, U256>);

impl<'de> Deserialize<'de> for Storage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Storage;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table of storage slots and values")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Storage, M::Error> {
                let mut out = BTreeMap::new();
                while let Some((Word(slot), Word(value))) = m.next_entry::<Word, Word>()? {
                    if out.insert(slot, value).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "slot {slot:#x} is given twice"
                        )));
                    }
                }
                Ok(Storage(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Serialize for GenesisAccount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.is_balance() {
            return self.balance.serialize(s);
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("balance", &self.balance)?;
        if self.nonce != 0 {
            // TOML's integers stop at 2^63 - 1: a larger nonce is written in hex.
            match i64::try_from(self.nonce) {
                Ok(n) => m.serialize_entry("nonce", &n)?,
                Err(_) => m.serialize_entry("nonce", &format!("{:#x}", self.nonce))?,
            }
        }
        if !self.code.is_empty() {
            m.serialize_entry("code", &self.code)?;
        }
        if !self.storage.is_empty() {
            m.serialize_entry("storage", &self.storage)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for GenesisAccount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = GenesisAccount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a balance in wei, or a table of balance, nonce, code and storage")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(GenesisAccount::balance(U256::from(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Wei::scalar().visit_i64(v).map(GenesisAccount::balance)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Wei::scalar().visit_str(v).map(GenesisAccount::balance)
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<Self::Value, M::Error> {
                use serde::de::Error;
                let mut a = GenesisAccount::default();
                let mut seen = [false; 4];
                while let Some(key) = m.next_key::<String>()? {
                    let i = match key.as_str() {
                        "balance" => 0,
                        "nonce" => 1,
                        "code" => 2,
                        "storage" => 3,
                        _ => {
                            return Err(M::Error::unknown_field(
                                &key,
                                &["balance", "nonce", "code", "storage"],
                            ))
                        }
                    };
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(M::Error::custom(format!("{key} is given twice")));
                    }
                    let named = |e: M::Error| M::Error::custom(format!("{key}: {e}"));
                    match i {
                        0 => a.balance = m.next_value::<Wei>().map_err(named)?.0,
                        1 => a.nonce = m.next_value::<Nonce>().map_err(named)?.0,
                        2 => a.code = m.next_value().map_err(named)?,
                        _ => a.storage = m.next_value::<Storage>().map_err(named)?.0,
                    }
                }
                Ok(a)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Consensus parameters of a chain (every validator must run the same).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusParams {
    /// Rounds of history validators keep: one down for longer rejoins from a snapshot.
    pub gc_depth: u64,
    /// Commits between checkpoints (what a validator rejoins from).
    pub checkpoint_every: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        let c = farol_consensus::Config::default();
        ConsensusParams { gc_depth: c.gc_depth, checkpoint_every: c.checkpoint_every }
    }
}

impl Genesis {
    /// No genesis: what a configuration file without a `[genesis]` table reads as (the chain
    /// then comes from `farol node --chain`). Chain id 0, which a node refuses to start on.
    pub fn none() -> Genesis {
        Genesis {
            chain_id: 0,
            timestamp: 0,
            gas_limit: 0,
            base_fee: 0,
            alloc: BTreeMap::new(),
            consensus: ConsensusParams::default(),
        }
    }

    /// A development genesis: `accounts` funded with `balance` wei each, chain id 31337.
    pub fn dev(accounts: &[Address], balance: U256, timestamp: u64) -> Genesis {
        Genesis {
            chain_id: DEV_CHAIN_ID,
            timestamp,
            gas_limit: DEFAULT_GAS_LIMIT,
            base_fee: 1_000_000_000,
            alloc: accounts.iter().map(|a| (*a, GenesisAccount::balance(balance))).collect(),
            consensus: ConsensusParams::default(),
        }
    }

    /// Places the CREATE2 deployer at [`CREATE2_DEPLOYER`] (nonce 1, as a contract
    /// created by a transaction), as anvil does. A balance given there is kept; an account
    /// given there with code of its own is left as it is.
    pub fn with_create2_deployer(mut self) -> Genesis {
        let a = self.alloc.entry(CREATE2_DEPLOYER).or_default();
        if a.code.is_empty() {
            a.code = Bytes::from_static(&CREATE2_DEPLOYER_CODE);
            a.nonce = a.nonce.max(1);
        }
        self
    }

    /// The execution rules: Farol's (newest hardfork, WASM contracts, 64 KiB code) on this
    /// chain id.
    pub fn chain_spec(&self) -> ChainSpec {
        ChainSpec { chain_id: self.chain_id, ..ChainSpec::default() }
    }

    /// The genesis state as a diff over the empty state.
    pub fn state(&self) -> StateDiff {
        let mut diff = StateDiff::default();
        for (a, account) in &self.alloc {
            let code_hash = if account.code.is_empty() {
                KECCAK256_EMPTY
            } else {
                let hash = keccak256(&account.code);
                diff.code.insert(hash, account.code.clone());
                hash
            };
            diff.accounts.insert(
                *a,
                Some(Account { balance: account.balance, nonce: account.nonce, code_hash }),
            );
            let slots: BTreeMap<U256, U256> = account
                .storage
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(k, v)| (*k, *v))
                .collect();
            if !slots.is_empty() {
                diff.storage.insert(*a, slots);
            }
        }
        diff
    }

    /// Block 0, over the genesis state root.
    pub fn block(&self, state_root: B256) -> StoredBlock {
        let header = Header {
            parent_hash: B256::ZERO,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: Address::ZERO,
            state_root,
            transactions_root: EMPTY_ROOT_HASH,
            receipts_root: EMPTY_ROOT_HASH,
            logs_bloom: Bloom::ZERO,
            difficulty: U256::ZERO,
            number: 0,
            gas_limit: self.gas_limit,
            gas_used: 0,
            timestamp: self.timestamp,
            extra_data: Bytes::from_static(b"farol"),
            mix_hash: B256::ZERO,
            nonce: B64::ZERO,
            base_fee_per_gas: Some(self.base_fee),
            ..crate::chain::fixed_header_fields()
        };
        let hash = header.hash_slow();
        StoredBlock {
            header,
            hash,
            txs: Vec::new(),
            senders: Vec::new(),
            receipts: Vec::new(),
            created: Vec::new(),
            ordering: OrderingData::unordered(),
        }
    }
}

/// The first `n` accounts of `mnemonic` on the path `m/44'/60'/0'/0/i`.
///
/// The seed (PBKDF2, 2,048 rounds of HMAC-SHA512) and the key at `m/44'/60'/0'/0` are derived
/// once, then one child per account: deriving each account from the phrase on its own made
/// `farol devnet --accounts 1000` answer JSON-RPC after 1.7–1.8 s, against 0.5 s now.
pub fn mnemonic_accounts(mnemonic: &str, n: u32) -> Result<Vec<PrivateKeySigner>, String> {
    let parent = MnemonicBuilder::<English>::default()
        .phrase(mnemonic)
        .build_parent_key()
        .map_err(|e| format!("mnemonic: {e}"))?;
    (0..n)
        .map(|i| {
            parent
                .child(i)
                .map(|key| key.signer())
                .map_err(|e| format!("mnemonic account {i}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_primitives::TxKind;
    use alloy_signer::SignerSync;
    use farol_execution::{
        execute_sequential, BlockEnv, InMemoryState, RecoveredTx, StateView, TxStatus,
    };

    /// Calls from the first development account to the deployer, one per input and value, in
    /// one block over a development genesis with the deployer.
    fn run_deployer(calls: &[(Vec<u8>, u64)]) -> (InMemoryState, Vec<farol_execution::TxOutcome>) {
        let key = mnemonic_accounts(DEV_MNEMONIC, 1).unwrap_or_else(|e| panic!("{e}")).remove(0);
        let ether = U256::from(10u64).pow(U256::from(18));
        let genesis = Genesis::dev(&[key.address()], ether, 0).with_create2_deployer();
        let mut state = InMemoryState::new();
        state.apply(&genesis.state());
        let txs: Vec<RecoveredTx> = calls
            .iter()
            .enumerate()
            .map(|(nonce, (input, value))| {
                let tx = TxEip1559 {
                    chain_id: DEV_CHAIN_ID,
                    nonce: nonce as u64,
                    gas_limit: 1_000_000,
                    max_fee_per_gas: 1_000_000_000,
                    to: TxKind::Call(CREATE2_DEPLOYER),
                    value: U256::from(*value),
                    input: input.clone().into(),
                    ..Default::default()
                };
                let sig =
                    key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
                RecoveredTx { tx: TxEnvelope::Eip1559(tx.into_signed(sig)), sender: key.address() }
            })
            .collect();
        let env = BlockEnv {
            base_fee: genesis.base_fee,
            gas_limit: genesis.gas_limit,
            ..Default::default()
        };
        let out = execute_sequential(&state, &genesis.chain_spec(), &env, &txs)
            .unwrap_or_else(|e| panic!("{e}"));
        state.apply(&out.diff);
        (state, out.txs)
    }

    /// `salt ‖ init`.
    fn input(salt: u8, init: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 31];
        v.push(salt);
        v.extend_from_slice(init);
        v
    }

    #[test]
    fn the_create2_deployer_deploys_at_the_create2_address() {
        // The code Foundry checks for.
        assert_eq!(keccak256(CREATE2_DEPLOYER_CODE), CREATE2_DEPLOYER_CODE_HASH);
        // Init code returning the one-byte runtime code 0x00 (STOP).
        let init = [0x60, 0x01, 0x5f, 0xf3]; // PUSH1 1 PUSH0 RETURN: memory[0..1] = 0x00
                                             // Init code reverting with the two bytes 0xdead.
        let reverting = [0x61, 0xde, 0xad, 0x5f, 0x52, 0x60, 0x02, 0x60, 0x1e, 0xfd];
        let (state, out) = run_deployer(&[
            (input(1, &init), 5),
            (input(1, &init), 0), // the same salt and code again: the address is taken
            (input(2, &reverting), 0),
            (vec![0u8; 31], 0), // shorter than a salt
            (input(3, &[]), 0), // empty init code: an empty contract at its address
        ]);
        let at = |salt: u8, init: &[u8]| {
            CREATE2_DEPLOYER.create2(B256::with_last_byte(salt), keccak256(init))
        };
        let first = at(1, &init);
        assert_eq!(out[0].status, TxStatus::Success, "{:?}", out[0]);
        assert_eq!(out[0].output[..], first[..], "the answer is the new address's 20 bytes");
        let account = state.account(first).unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        assert_eq!(account.balance, U256::from(5), "the call's value goes to the contract");
        assert_eq!(account.code_hash, keccak256([0x00]));
        assert_eq!(out[1].status, TxStatus::Revert, "{:?}", out[1]);
        assert!(out[1].output.is_empty());
        assert_eq!(out[2].status, TxStatus::Revert, "{:?}", out[2]);
        assert!(out[2].output.is_empty(), "a failed creation reverts with no data");
        // Data shorter than a salt: the copy's length wraps, and the call runs out of gas.
        assert!(matches!(out[3].status, TxStatus::Halt(_)), "{:?}", out[3]);
        assert_eq!(out[3].gas_used, 1_000_000);
        assert_eq!(out[4].status, TxStatus::Success, "{:?}", out[4]);
        assert_eq!(out[4].output[..], at(3, &[])[..]);
        let deployer =
            state.account(CREATE2_DEPLOYER).unwrap_or_else(|e| panic!("{e}")).unwrap_or_default();
        assert_eq!(deployer.nonce, 3, "nonce 1 at genesis, one more per creation made");
        assert_eq!(deployer.balance, U256::ZERO);
    }

    #[test]
    fn genesis_accounts_read_as_balances_or_tables_and_write_back_the_same() {
        let text = r#"
            chain_id = 7
            timestamp = 0
            gas_limit = 30000000
            base_fee = 1
            [alloc]
            "0x0000000000000000000000000000000000000001" = "0x10"
            "0x0000000000000000000000000000000000000002" = 17
            "0x0000000000000000000000000000000000000004" = { nonce = "0x1f" }
            "0x0000000000000000000000000000000000000005" = { balance = 1000, nonce = "0xffffffffffffffff", storage = { "10" = 7, "0x0A" = "ff" } }
            "0x0000000000000000000000000000000000000003" = { balance = "5", nonce = 2, code = "0x6000", storage = { "0x01" = "0x2a", "0x02" = "0x0" } }
        "#;
        let g: Genesis = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let a = |b: u8| g.alloc[&Address::with_last_byte(b)].clone();
        assert_eq!(a(1), GenesisAccount::balance(U256::from(16)));
        assert_eq!(a(2), GenesisAccount::balance(U256::from(17)));
        assert_eq!(a(4), GenesisAccount { nonce: 31, ..Default::default() });
        // Numbers in tables; storage in hex with or without 0x, as geth reads it.
        let e = a(5);
        assert_eq!((e.balance, e.nonce), (U256::from(1000), u64::MAX));
        let slots: Vec<(u64, u64)> =
            e.storage.iter().map(|(k, v)| (k.to::<u64>(), v.to::<u64>())).collect();
        assert_eq!(slots, [(10, 255), (16, 7)]);
        let c = a(3);
        assert_eq!((c.balance, c.nonce, &c.code[..]), (U256::from(5), 2, &[0x60, 0x00][..]));
        assert_eq!(c.storage.get(&U256::from(1)), Some(&U256::from(42)));
        // Back and forth through TOML and JSON (the data directory's genesis.json).
        let again: Genesis = toml::from_str(&toml::to_string(&g).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, g);
        let json = serde_json::to_string(&g).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.contains(r#""0x0000000000000000000000000000000000000001":"0x10""#), "{json}");
        assert_eq!(serde_json::from_str::<Genesis>(&json).unwrap_or_else(|e| panic!("{e}")), g);
        // The state: code by hash, the zero slot left out.
        let diff = g.state();
        let hash = keccak256([0x60, 0x00]);
        assert_eq!(diff.code.get(&hash).map(|c| &c[..]), Some(&[0x60, 0x00][..]));
        let account = diff.accounts[&Address::with_last_byte(3)].unwrap_or_else(|| panic!());
        assert_eq!((account.nonce, account.code_hash), (2, hash));
        assert_eq!(diff.storage[&Address::with_last_byte(3)].len(), 1);
        // Errors name the account and the field.
        for (entry, words) in [
            (r#"{ balance = "1", colour = "red" }"#, "unknown field `colour`"),
            (r#"{ nonce = "x" }"#, "nonce"),
            (r#"{ nonce = "0x10000000000000000" }"#, "nonce"),
            (r#"{ storage = { "0x1" = "0x1", "01" = "0x2" } }"#, "slot 0x1 is given twice"),
            (r#"{ storage = { "0xg" = "0x1" } }"#, "storage"),
            (r#"{ code = "0xzz" }"#, "code"),
            ("-1", "below zero"),
        ] {
            let bad = format!(
                "chain_id = 7\ntimestamp = 0\ngas_limit = 1\nbase_fee = 1\n[alloc]\n\
                 \"0x0000000000000000000000000000000000000009\" = {entry}\n"
            );
            let e = toml::from_str::<Genesis>(&bad).map(|_| ()).unwrap_err().to_string();
            assert!(
                e.contains(words) && e.contains("0x0000000000000000000000000000000000000009"),
                "{entry}: {e}"
            );
        }
    }

    /// The accounts are those anvil and hardhat derive (their first and tenth addresses), and
    /// each is the key the phrase gives on its own full path.
    #[test]
    fn mnemonic_accounts_are_anvils_and_each_its_own_path() {
        let keys = mnemonic_accounts(DEV_MNEMONIC, 12).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(keys.len(), 12);
        assert_eq!(keys[0].address(), address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"));
        assert_eq!(keys[9].address(), address!("a0Ee7A142d267C1f36714E4a8F75612F20a79720"));
        for (i, key) in keys.iter().enumerate() {
            let alone = MnemonicBuilder::<English>::default()
                .phrase(DEV_MNEMONIC)
                .derivation_path(format!("m/44'/60'/0'/0/{i}"))
                .and_then(|b| b.build())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(key.to_bytes(), alone.to_bytes(), "account {i}");
        }
        assert!(mnemonic_accounts("not a mnemonic at all", 1).unwrap_err().contains("mnemonic"));
    }

    #[test]
    fn code_genesis_cannot_hold_is_named() {
        let with = |code: Vec<u8>| GenesisAccount { code: code.into(), ..Default::default() };
        assert_eq!(with(CREATE2_DEPLOYER_CODE.to_vec()).code_problem(), None);
        let mut delegation = vec![0xef, 0x01, 0x00];
        delegation.extend_from_slice(&[7u8; 20]);
        assert_eq!(with(delegation.clone()).code_problem(), None);
        delegation.push(0);
        assert!(with(delegation).code_problem().is_some_and(|w| w.contains("EIP-3541")));
        assert!(with(vec![0xef]).code_problem().is_some());
        let wasm = farol_execution::wasm::contract_code(b"\0asm\x01\0\0\0");
        assert!(with(wasm).code_problem().is_some_and(|w| w.contains("WASM")));
        // The deployer keeps a balance given at its address, and code given there wins.
        let g = Genesis::dev(&[CREATE2_DEPLOYER], U256::from(9), 0).with_create2_deployer();
        let d = &g.alloc[&CREATE2_DEPLOYER];
        assert_eq!(
            (d.balance, d.nonce, &d.code[..]),
            (U256::from(9), 1, &CREATE2_DEPLOYER_CODE[..])
        );
        let mut own = Genesis::dev(&[], U256::ZERO, 0);
        own.alloc.insert(CREATE2_DEPLOYER, with(vec![0x00]));
        assert_eq!(own.clone().with_create2_deployer(), own);
    }
}
