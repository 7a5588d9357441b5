//! The genesis: chain id, first block parameters and funded accounts; and the development
//! accounts derived from a BIP-39 mnemonic (the same ones anvil and hardhat fund).

use std::collections::BTreeMap;

use alloy_consensus::{constants::EMPTY_OMMER_ROOT_HASH, Header, EMPTY_ROOT_HASH};
use alloy_primitives::{Address, Bloom, Bytes, B256, B64, U256};
use alloy_signer_local::{coins_bip39::English, MnemonicBuilder, PrivateKeySigner};
use farol_execution::{Account, ChainSpec, StateDiff};
use serde::{Deserialize, Serialize};

use crate::chain::{OrderingData, StoredBlock};

/// The mnemonic of anvil's and hardhat's development accounts.
pub const DEV_MNEMONIC: &str = "test test test test test test test test test test test junk";

/// Chain id of development chains (anvil's and hardhat's).
pub const DEV_CHAIN_ID: u64 = 31_337;

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
    /// Balances at genesis (wei). An account given twice (its address in two cases) is an
    /// error naming it (before stop 46 the later balance silently replaced the earlier).
    #[serde(deserialize_with = "unique_accounts")]
    pub alloc: BTreeMap<Address, U256>,
    /// Consensus parameters every validator must share.
    #[serde(default)]
    pub consensus: ConsensusParams,
}

/// A map of accounts in which no address comes twice.
fn unique_accounts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<Address, U256>, D::Error> {
    struct Accounts;
    impl<'de> serde::de::Visitor<'de> for Accounts {
        type Value = BTreeMap<Address, U256>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table of addresses and balances")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut m: M,
        ) -> Result<Self::Value, M::Error> {
            let mut out = BTreeMap::new();
            while let Some((address, balance)) = m.next_entry::<Address, U256>()? {
                if out.insert(address, balance).is_some() {
                    return Err(serde::de::Error::custom(format!("{address} is given twice")));
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Accounts)
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
            gas_limit: 1_000_000_000,
            base_fee: 1_000_000_000,
            alloc: accounts.iter().map(|a| (*a, balance)).collect(),
            consensus: ConsensusParams::default(),
        }
    }

    /// The execution rules: Farol's (newest hardfork, WASM contracts, 64 KiB code) on this
    /// chain id.
    pub fn chain_spec(&self) -> ChainSpec {
        ChainSpec { chain_id: self.chain_id, ..ChainSpec::default() }
    }

    /// The genesis state as a diff over the empty state.
    pub fn state(&self) -> StateDiff {
        let mut diff = StateDiff::default();
        for (a, balance) in &self.alloc {
            diff.accounts.insert(*a, Some(Account::with_balance(*balance)));
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
pub fn mnemonic_accounts(mnemonic: &str, n: u32) -> Result<Vec<PrivateKeySigner>, String> {
    (0..n)
        .map(|i| {
            MnemonicBuilder::<English>::default()
                .phrase(mnemonic)
                .index(i)
                .and_then(|b| b.build())
                .map_err(|e| format!("mnemonic account {i}: {e}"))
        })
        .collect()
}
