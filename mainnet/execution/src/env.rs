//! Block inputs: the chain spec, the block environment and recovered transactions.

use alloy_consensus::{Transaction, TxEnvelope, Typed2718};
use alloy_primitives::{Address, B256, U256};
use rayon::prelude::*;
use revm::context::either::Either;
use revm::context::result::InvalidTransaction;
use revm::context::{BlockEnv as RevmBlockEnv, CfgEnv, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::primitives::eip4844::{
    BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN, BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
};
use revm::primitives::hardfork::SpecId;

use crate::error::ExecError;

/// The chain id Farol uses unless configured otherwise.
pub const DEFAULT_CHAIN_ID: u64 = 7_447;

/// Chain-wide execution rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The hardfork whose rules apply.
    pub spec: SpecId,
    /// Whether code that starts with [`crate::wasm::MARKER`] runs as a WASM contract (and is
    /// validated at deployment). Off, such code is EVM code that halts on its first byte.
    pub wasm: bool,
    /// Largest deployed code in bytes (init code may be twice as large); `None` keeps the
    /// hardfork's limit (EIP-170: 24,576 bytes).
    pub max_code_size: Option<usize>,
}

/// Farol's code size limit: EIP-7954's 64 KiB, so that a typical WASM contract fits.
pub const FAROL_MAX_CODE_SIZE: usize = 0x10000;

impl Default for ChainSpec {
    /// Farol's chain: its chain id, the newest hardfork revm supports by default (Osaka),
    /// WASM contracts, and 64 KiB code.
    fn default() -> Self {
        ChainSpec {
            chain_id: DEFAULT_CHAIN_ID,
            spec: SpecId::default(),
            wasm: true,
            max_code_size: Some(FAROL_MAX_CODE_SIZE),
        }
    }
}

impl ChainSpec {
    /// Ethereum's rules under `spec` on chain `chain_id`: no WASM, the hardfork's code size.
    pub fn ethereum(chain_id: u64, spec: SpecId) -> Self {
        ChainSpec { chain_id, spec, wasm: false, max_code_size: None }
    }

    pub(crate) fn cfg(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(self.spec);
        cfg.chain_id = self.chain_id;
        cfg.limit_contract_code_size = self.max_code_size;
        // Blobs per transaction: the block maximum until Prague (6, then 9), and Osaka's
        // per-transaction cap of 6 (EIP-7594).
        if self.spec.is_enabled_in(SpecId::OSAKA) {
            cfg.set_max_blobs_per_tx(6);
        } else if self.spec.is_enabled_in(SpecId::PRAGUE) {
            cfg.set_max_blobs_per_tx(9);
        } else if self.spec.is_enabled_in(SpecId::CANCUN) {
            cfg.set_max_blobs_per_tx(6);
        }
        cfg
    }

    /// The most gas one transaction may name under these rules (EIP-7825: 2^24 from Osaka;
    /// no cap before).
    pub fn tx_gas_cap(&self) -> u64 {
        use revm::context_interface::Cfg;
        self.cfg().tx_gas_limit_cap()
    }

    /// [`ChainSpec::cfg`], for a call when `call` is set: the sender's nonce and code are not
    /// checked (EIP-3607 is for signed transactions), and neither are the block's gas limit
    /// nor EIP-7825's cap on a transaction's gas (2^24 from Osaka), as in geth since
    /// September 2025: a call may use up to the node's gas cap (before stop 50, a cap raised
    /// past 2^24 made every call that named no gas fail).
    pub(crate) fn call_cfg(&self, call: bool) -> CfgEnv {
        let mut cfg = self.cfg();
        if call {
            cfg.disable_eip3607 = true;
            cfg.disable_nonce_check = true;
            cfg.disable_block_gas_limit = true;
            cfg.tx_gas_limit_cap = Some(u64::MAX);
        }
        cfg
    }

    /// EIP-4844's update fraction of the blob base fee under these rules (EIP-7691 raised it
    /// in Prague), `None` before Cancun.
    pub fn blob_update_fraction(&self) -> Option<u64> {
        blob_update_fraction(self.spec)
    }

    /// The blob base fee at `excess_blob_gas`, as BLOBBASEFEE reads it in a block with that
    /// excess (`None` before Cancun).
    pub fn blob_base_fee(&self, excess_blob_gas: u64) -> Option<u128> {
        let fraction = self.blob_update_fraction()?;
        Some(BlobExcessGasAndPrice::new(excess_blob_gas, fraction).blob_gasprice)
    }

    /// The precompiles of these rules, by address, with their EIP-7910 names (`ECREC`, …).
    /// Farol adds none: WASM contracts run as code at their own addresses.
    pub fn precompiles(&self) -> Vec<(String, Address)> {
        use revm::precompile::{PrecompileSpecId, Precompiles};
        let all = Precompiles::new(PrecompileSpecId::from_spec_id(self.spec));
        let mut out: Vec<_> = all
            .addresses()
            .filter_map(|a| all.get(a).map(|p| (p.id().name().to_string(), *a)))
            .collect();
        out.sort_by_key(|(_, a)| *a);
        out
    }
}

fn blob_update_fraction(spec: SpecId) -> Option<u64> {
    if spec.is_enabled_in(SpecId::PRAGUE) {
        Some(BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE)
    } else if spec.is_enabled_in(SpecId::CANCUN) {
        Some(BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN)
    } else {
        None
    }
}

/// The environment of one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEnv {
    /// Block number.
    pub number: u64,
    /// Unix timestamp in seconds.
    pub timestamp: u64,
    /// Who receives the priority fees.
    pub beneficiary: Address,
    /// EIP-1559 base fee per gas.
    pub base_fee: u64,
    /// Gas limit of the block.
    pub gas_limit: u64,
    /// PREVRANDAO (post-merge).
    pub prevrandao: B256,
    /// Pre-merge DIFFICULTY.
    pub difficulty: U256,
    /// EIP-4844 excess blob gas (Cancun and later).
    pub excess_blob_gas: Option<u64>,
}

impl Default for BlockEnv {
    fn default() -> Self {
        BlockEnv {
            number: 1,
            timestamp: 1,
            beneficiary: Address::ZERO,
            base_fee: 0,
            gas_limit: 30_000_000,
            prevrandao: B256::ZERO,
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        }
    }
}

impl BlockEnv {
    pub(crate) fn revm(&self, spec: SpecId) -> RevmBlockEnv {
        let blobs = blob_update_fraction(spec);
        RevmBlockEnv {
            number: U256::from(self.number),
            beneficiary: self.beneficiary,
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: self.base_fee,
            difficulty: self.difficulty,
            prevrandao: Some(self.prevrandao),
            blob_excess_gas_and_price: self
                .excess_blob_gas
                .zip(blobs)
                .map(|(e, fraction)| BlobExcessGasAndPrice::new(e, fraction)),
            ..Default::default()
        }
    }
}

/// A decoded transaction with the sender recovered from its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredTx {
    /// The signed transaction.
    pub tx: TxEnvelope,
    /// Its sender.
    pub sender: Address,
}

/// Recovers the senders of `txs` once, in parallel, before execution.
pub fn recover_senders(txs: Vec<TxEnvelope>) -> Result<Vec<RecoveredTx>, ExecError> {
    txs.into_par_iter()
        .enumerate()
        .map(|(index, tx)| match recover_sender(&tx) {
            Ok(sender) => Ok(RecoveredTx { tx, sender }),
            Err(reason) => Err(ExecError::BadSignature { index, reason }),
        })
        .collect()
}

/// Half the order of secp256k1: EIP-2 refuses signatures whose `s` is above it.
const SECP256K1N_HALF: U256 = U256::from_be_bytes([
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
]);

/// The sender of a signed transaction: the same answer as alloy's `recover_signer` (EIP-2's
/// low `s` required), computed with libsecp256k1 (revm's ECRECOVER), several times faster
/// than the pure-Rust k256 curve arithmetic. A node recovers every transaction it orders.
pub fn recover_sender(tx: &TxEnvelope) -> Result<Address, String> {
    let sig = tx.signature();
    if sig.s() > SECP256K1N_HALF {
        return Err("signature s is in the upper half of the curve order (EIP-2)".into());
    }
    let mut compact = [0u8; 64];
    compact[..32].copy_from_slice(&sig.r().to_be_bytes::<32>());
    compact[32..].copy_from_slice(&sig.s().to_be_bytes::<32>());
    let hash = tx.signature_hash();
    let key = revm::precompile::secp256k1::ecrecover(&compact.into(), u8::from(sig.v()), &hash)
        .map_err(|e| format!("signature does not recover: {e}"))?;
    Ok(Address::from_slice(&key[12..]))
}

/// The checks of `sender`'s transaction that need no state, as block execution makes them
/// under `spec` (revm's `validate_tx_env` and `validate_initial_tx_gas`, but for what
/// depends on the block: the base fee, the blob gas price, the block's gas limit): its
/// gas limit against the per-transaction cap (EIP-7825 from Osaka, not under EIP-8037) and
/// against its intrinsic gas (calldata, creation, access list, authorizations, the EIP-7623
/// floor; under Amsterdam with EIP-2780's prices and EIP-8037's state gas), its priority
/// fee against its fee cap, its type against the fork, a blob transaction's blobs, an
/// EIP-7702 transaction's authorizations, its init code's size and its nonce. A mempool
/// that admits only what passes never hands a client a hash for a transaction execution
/// will refuse. Errors are in geth's words (see `invalid_reason`).
pub fn check_transaction(spec: &ChainSpec, tx: &TxEnvelope, sender: Address) -> Result<(), String> {
    use revm::context_interface::Cfg;
    let cfg = spec.cfg();
    let env = tx_env(tx, sender);
    let reason = crate::sequential::invalid_reason;
    let cap = cfg.tx_gas_limit_cap();
    // revm enforces the cap only without EIP-8037's state gas.
    if env.gas_limit > cap && !cfg.is_amsterdam_eip8037_enabled() {
        return Err(reason(&InvalidTransaction::TxGasLimitGreaterThanCap {
            gas_limit: env.gas_limit,
            cap,
        }));
    }
    if let Some(tip) = env.gas_priority_fee {
        if tip > env.gas_price {
            return Err(reason(&InvalidTransaction::PriorityFeeGreaterThanMaxFee));
        }
    }
    // The rest of revm's checks of a transaction alone (`validate_tx_env`), which execution
    // makes (until stop 40 these were not made here: an EIP-7702 transaction with no
    // authorization, for one, was accepted, ordered for free, and made every validator run
    // its block twice before dropping it).
    let at = |fork| spec.spec.is_enabled_in(fork);
    let unsupported = match tx.ty() {
        1 if !at(SpecId::BERLIN) => Some(InvalidTransaction::Eip2930NotSupported),
        2 if !at(SpecId::LONDON) => Some(InvalidTransaction::Eip1559NotSupported),
        3 if !at(SpecId::CANCUN) => Some(InvalidTransaction::Eip4844NotSupported),
        4 if !at(SpecId::PRAGUE) => Some(InvalidTransaction::Eip7702NotSupported),
        _ => None,
    };
    if let Some(e) = unsupported {
        return Err(reason(&e));
    }
    if tx.is_eip4844() {
        // The block's blob gas price is not known here: only the blobs themselves.
        revm::handler::validation::validate_eip4844_tx(
            &env.blob_hashes,
            env.max_fee_per_blob_gas,
            0,
            cfg.max_blobs_per_tx(),
        )
        .map_err(|e| reason(&e))?;
    }
    if tx.is_eip7702() && env.authorization_list.is_empty() {
        return Err(reason(&InvalidTransaction::EmptyAuthorizationList));
    }
    if at(SpecId::SHANGHAI) && env.kind.is_create() && env.data.len() > cfg.max_initcode_size() {
        return Err(reason(&InvalidTransaction::CreateInitCodeSizeLimit));
    }
    if env.nonce == u64::MAX {
        return Err(reason(&InvalidTransaction::NonceOverflowInTransaction));
    }
    // As revm's handler computes it (until stop 40 without EIP-2780 and EIP-8037: under
    // Amsterdam valid zero-value calls were refused, and some always-refused ones passed).
    let eip2780 = cfg.is_amsterdam_eip2780_enabled().then(|| {
        revm::context_interface::cfg::gas_params::Eip2780TxInfo {
            value: env.value,
            is_self_transfer: env.kind.to() == Some(&sender),
        }
    });
    revm::handler::validation::validate_initial_tx_gas_with_gas_params(
        &env,
        spec.spec,
        cfg.gas_params(),
        cfg.is_eip7623_disabled(),
        cfg.is_amsterdam_eip8037_enabled(),
        cap,
        eip2780,
    )
    .map(|_| ())
    .map_err(|e| reason(&e))
}

impl RecoveredTx {
    /// The revm transaction environment.
    pub(crate) fn tx_env(&self) -> TxEnv {
        tx_env(&self.tx, self.sender)
    }
}

/// The revm transaction environment of `tx` sent by `sender`.
fn tx_env(tx: &TxEnvelope, sender: Address) -> TxEnv {
    let eip1559 = tx.is_dynamic_fee();
    TxEnv {
        tx_type: tx.ty(),
        caller: sender,
        gas_limit: tx.gas_limit(),
        gas_price: if eip1559 { tx.max_fee_per_gas() } else { tx.gas_price().unwrap_or_default() },
        kind: tx.kind(),
        value: tx.value(),
        data: tx.input().clone(),
        nonce: tx.nonce(),
        chain_id: tx.chain_id(),
        access_list: tx.access_list().cloned().unwrap_or_default(),
        gas_priority_fee: if eip1559 { tx.max_priority_fee_per_gas() } else { None },
        blob_hashes: tx.blob_versioned_hashes().map(<[B256]>::to_vec).unwrap_or_default(),
        max_fee_per_blob_gas: tx.max_fee_per_blob_gas().unwrap_or_default(),
        authorization_list: tx
            .authorization_list()
            .map(|l| l.iter().cloned().map(Either::Left).collect())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_primitives::{keccak256, Signature, TxKind};
    use k256::ecdsa::SigningKey;

    #[test]
    fn blob_fee_and_precompiles_follow_the_hardfork() {
        let farol = ChainSpec::default();
        // e^(excess / fraction) rounded down, at least 1 wei: 1 at no excess, 2 at e^1.
        assert_eq!(farol.blob_base_fee(0), Some(1));
        let prague = BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE;
        assert_eq!(farol.blob_base_fee(prague), Some(2));
        let cancun = ChainSpec::ethereum(1, SpecId::CANCUN);
        assert_eq!(cancun.blob_update_fraction(), Some(BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN));
        assert_eq!(cancun.blob_base_fee(prague), Some(4)); // e^1.5
        assert_eq!(ChainSpec::ethereum(1, SpecId::SHANGHAI).blob_base_fee(0), None);

        let names = |spec| -> Vec<String> {
            ChainSpec::ethereum(1, spec).precompiles().into_iter().map(|p| p.0).collect()
        };
        let london = names(SpecId::LONDON);
        assert_eq!(london.first().map(String::as_str), Some("ECREC"));
        assert_eq!(london.last().map(String::as_str), Some("BLAKE2F"));
        assert_eq!(london.len(), 9);
        assert_eq!(names(SpecId::CANCUN).len(), 10);
        assert_eq!(names(SpecId::PRAGUE).len(), 17);
        let osaka = farol.precompiles();
        assert_eq!(osaka.len(), 18);
        let p256 = osaka.last().cloned();
        assert_eq!(p256, Some(("P256VERIFY".to_string(), Address::left_padding_from(&[1, 0]))));
    }

    /// What execution refuses whatever the state, the pool refuses before it takes the
    /// transaction (until stop 40 these four passed `check_transaction`).
    #[test]
    fn transactions_execution_always_refuses_are_refused_up_front() {
        use alloy_consensus::TxEip7702;
        let spec = ChainSpec::default();
        let sig = Signature::new(U256::from(1), U256::from(1), false);
        let delegation = |auths: Vec<alloy_eips::eip7702::SignedAuthorization>, nonce| {
            let tx = TxEip7702 {
                chain_id: spec.chain_id,
                nonce,
                gas_limit: 100_000,
                max_fee_per_gas: 10,
                to: Address::repeat_byte(1),
                authorization_list: auths,
                ..Default::default()
            };
            TxEnvelope::Eip7702(tx.into_signed(sig))
        };
        let err = check_transaction(&spec, &delegation(Vec::new(), 0), Address::ZERO)
            .err()
            .unwrap_or_default();
        assert_eq!(err, "EIP-7702 transaction with empty auth list", "geth's words");
        let auth = alloy_eips::eip7702::Authorization {
            chain_id: U256::from(spec.chain_id),
            address: Address::repeat_byte(2),
            nonce: 0,
        }
        .into_signed(sig);
        assert_eq!(
            check_transaction(&spec, &delegation(vec![auth.clone()], 0), Address::ZERO),
            Ok(())
        );
        let err =
            check_transaction(&spec, &delegation(vec![auth.clone()], u64::MAX), Address::ZERO);
        assert!(err.is_err_and(|e| e.contains("nonce")));
        // Before Prague there is no such type.
        let cancun = ChainSpec::ethereum(spec.chain_id, SpecId::CANCUN);
        assert!(check_transaction(&cancun, &delegation(vec![auth], 0), Address::ZERO).is_err());
        // Under Amsterdam (EIP-2780) a call that moves no value costs less than 21,000 gas:
        // the intrinsic gas is revm's for the fork, not Osaka's.
        let amsterdam = ChainSpec::ethereum(spec.chain_id, SpecId::AMSTERDAM);
        let call = TxEip1559 {
            chain_id: spec.chain_id,
            gas_limit: 20_000,
            max_fee_per_gas: 10,
            to: TxKind::Call(Address::repeat_byte(3)),
            ..Default::default()
        };
        let call = TxEnvelope::Eip1559(call.into_signed(sig));
        let sender = Address::repeat_byte(4);
        assert_eq!(check_transaction(&amsterdam, &call, sender), Ok(()));
        let err = check_transaction(&spec, &call, sender);
        assert!(err.is_err_and(|e| e.contains("intrinsic gas too low")));
        // Init code past the limit.
        use revm::context_interface::Cfg;
        let create = TxEip1559 {
            chain_id: spec.chain_id,
            gas_limit: 16_000_000,
            max_fee_per_gas: 10,
            to: TxKind::Create,
            input: vec![0u8; spec.cfg().max_initcode_size() + 1].into(),
            ..Default::default()
        };
        let err =
            check_transaction(&spec, &TxEnvelope::Eip1559(create.into_signed(sig)), Address::ZERO);
        assert!(err.is_err_and(|e| e.contains("initcode")));
    }

    /// secp256k1's order.
    const N: U256 = U256::from_be_bytes([
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ]);

    #[test]
    fn libsecp256k1_recovery_agrees_with_alloy_and_refuses_high_s() {
        for i in 1..=200u64 {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&keccak256(i.to_be_bytes())[..8]);
            seed[31] = 1;
            let key = SigningKey::from_slice(&seed).unwrap_or_else(|e| panic!("{e}"));
            let point = key.verifying_key().to_encoded_point(false);
            let address = Address::from_slice(&keccak256(&point.as_bytes()[1..])[12..]);
            let tx = TxEip1559 {
                chain_id: 7,
                nonce: i,
                gas_limit: 21_000,
                max_fee_per_gas: 10,
                to: TxKind::Call(Address::repeat_byte(i as u8)),
                value: U256::from(i),
                ..Default::default()
            };
            let hash = tx.signature_hash();
            let (sig, recid) =
                key.sign_prehash_recoverable(hash.as_slice()).unwrap_or_else(|e| panic!("{e}"));
            let sig = Signature::from_signature_and_parity(sig, recid.is_y_odd());
            let env = TxEnvelope::Eip1559(tx.clone().into_signed(sig));
            assert_eq!(recover_sender(&env), Ok(address));
            assert_eq!(env.recover_signer().ok(), Some(address));
            // The same signature with s mirrored (valid ECDSA, refused by EIP-2).
            let high = Signature::new(sig.r(), N - sig.s(), !sig.v());
            let env = TxEnvelope::Eip1559(tx.into_signed(high));
            assert!(recover_sender(&env).is_err());
            assert!(env.recover_signer().is_err());
        }
    }
}
