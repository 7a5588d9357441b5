//! What executing a block produces.

use alloy_consensus::{Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxType};
use alloy_primitives::{Address, Bloom, Bytes, Log, B256};
use revm::context::result::{ExecutionResult, HaltReason};

use crate::diff::StateDiff;

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// It succeeded.
    Success,
    /// It executed REVERT (the output holds the revert data).
    Revert,
    /// It halted exceptionally (out of gas, invalid opcode, ...), spending all its gas; with
    /// geth's words for why ([`halt_message`]), which clients show (before stop 46, revm's
    /// names: `OutOfGas(Basic)`).
    Halt(String),
}

/// geth's words for a halt that ran out of gas.
pub const OUT_OF_GAS: &str = "out of gas";

/// geth's words (its VM errors) for why execution halted, where geth has them; revm's
/// otherwise. An opcode geth does not know it names (`opcode 0x0c not defined`): revm does
/// not say which, so that is `invalid opcode`.
pub fn halt_message(reason: &HaltReason) -> String {
    let words = match reason {
        HaltReason::OutOfGas(_) => OUT_OF_GAS,
        HaltReason::OpcodeNotFound | HaltReason::NotActivated => "invalid opcode",
        HaltReason::InvalidFEOpcode => "invalid opcode: INVALID",
        HaltReason::InvalidJump => "invalid jump destination",
        HaltReason::StackUnderflow => "stack underflow",
        HaltReason::StackOverflow => "stack limit reached 1024",
        HaltReason::OutOfOffset => "return data out of bounds",
        HaltReason::CreateCollision => "contract address collision",
        HaltReason::NonceOverflow => "nonce uint64 overflow",
        HaltReason::CreateContractSizeLimit => "max code size exceeded",
        HaltReason::CreateContractStartingWithEF => "invalid code: must not begin with 0xef",
        HaltReason::CreateInitCodeSizeLimit => "max initcode size exceeded",
        HaltReason::OverflowPayment => "gas uint64 overflow",
        HaltReason::StateChangeDuringStaticCall | HaltReason::CallNotAllowedInsideStatic => {
            "write protection"
        }
        HaltReason::OutOfFunds => "insufficient balance for transfer",
        HaltReason::CallTooDeep => "max call depth exceeded",
        other => return other.to_string(),
    };
    words.to_string()
}

/// The result of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    /// How it ended.
    pub status: TxStatus,
    /// Gas it used (what the sender paid for).
    pub gas_used: u64,
    /// Gas used by the block up to and including it.
    pub cumulative_gas_used: u64,
    /// Logs it emitted (empty unless it succeeded).
    pub logs: Vec<Log>,
    /// The address of the contract it created, if it was a successful creation.
    pub contract_address: Option<Address>,
    /// Return or revert data.
    pub output: Bytes,
}

impl TxOutcome {
    pub(crate) fn from_revm(result: &ExecutionResult, cumulative_gas_used: u64) -> Self {
        let status = match result {
            ExecutionResult::Success { .. } => TxStatus::Success,
            ExecutionResult::Revert { .. } => TxStatus::Revert,
            ExecutionResult::Halt { reason, .. } => TxStatus::Halt(halt_message(reason)),
        };
        TxOutcome {
            status,
            gas_used: result.tx_gas_used(),
            cumulative_gas_used,
            logs: if result.is_success() { result.logs().to_vec() } else { Vec::new() },
            contract_address: result.created_address(),
            output: result.output().cloned().unwrap_or_default(),
        }
    }

    /// Its receipt, as a transaction of type `ty`.
    pub fn receipt(&self, ty: TxType) -> ReceiptEnvelope {
        receipt(self, ty, None)
    }

    /// True when the transaction succeeded (receipt status 1).
    pub fn is_success(&self) -> bool {
        self.status == TxStatus::Success
    }
}

/// Everything a block's execution produces. Both executors produce equal values for a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutput {
    /// Per-transaction results, in block order.
    pub txs: Vec<TxOutcome>,
    /// Receipts, typed like their transactions, in block order.
    pub receipts: Vec<ReceiptEnvelope>,
    /// The block's state changes.
    pub diff: StateDiff,
    /// Gas used by the block.
    pub gas_used: u64,
    /// Root of the receipts trie (Ethereum's ordered MPT over the 2718-encoded receipts).
    pub receipts_root: B256,
    /// Bloom filter over all the block's logs.
    pub logs_bloom: Bloom,
}

fn receipt(o: &TxOutcome, ty: TxType, bloom: Option<Bloom>) -> ReceiptEnvelope {
    let receipt = Receipt {
        status: Eip658Value::Eip658(o.is_success()),
        cumulative_gas_used: o.cumulative_gas_used,
        logs: o.logs.clone(),
    };
    let with_bloom = match bloom {
        Some(logs_bloom) => ReceiptWithBloom { receipt, logs_bloom },
        None => ReceiptWithBloom::from(receipt),
    };
    match ty {
        TxType::Legacy => ReceiptEnvelope::Legacy(with_bloom),
        TxType::Eip2930 => ReceiptEnvelope::Eip2930(with_bloom),
        TxType::Eip1559 => ReceiptEnvelope::Eip1559(with_bloom),
        TxType::Eip4844 => ReceiptEnvelope::Eip4844(with_bloom),
        TxType::Eip7702 => ReceiptEnvelope::Eip7702(with_bloom),
    }
}

impl BlockOutput {
    /// Receipts, blooms and roots, one after another (the sequential reference).
    pub(crate) fn build(txs: Vec<TxOutcome>, types: &[TxType], diff: StateDiff) -> Self {
        let receipts: Vec<ReceiptEnvelope> =
            txs.iter().zip(types).map(|(o, ty)| receipt(o, *ty, None)).collect();
        let logs_bloom = receipts.iter().fold(Bloom::ZERO, |acc, r| acc | *r.logs_bloom());
        let receipts_root = alloy_consensus::proofs::calculate_receipt_root(&receipts);
        let gas_used = txs.last().map(|t| t.cumulative_gas_used).unwrap_or(0);
        BlockOutput { txs, receipts, diff, gas_used, receipts_root, logs_bloom }
    }

    /// The same as [`Self::build`], with receipts, blooms and the receipts trie computed on
    /// the current rayon pool; `diff` is computed alongside.
    /// `blooms` are the receipts' logs blooms, computed as the transactions were executed
    /// (`None` for a receipt without logs).
    pub(crate) fn build_parallel<E: Send>(
        txs: Vec<TxOutcome>,
        types: &[TxType],
        blooms: Vec<Option<Box<Bloom>>>,
        diff: impl FnOnce() -> Result<StateDiff, E> + Send,
    ) -> Result<Self, E> {
        use alloy_eips::eip2718::Encodable2718;
        use rayon::prelude::*;
        let (diff, (receipts, logs_bloom, receipts_root)) = rayon::join(diff, || {
            let receipts: Vec<ReceiptEnvelope> = txs
                .par_iter()
                .zip(types)
                .zip(&blooms)
                .map(|((o, ty), b)| {
                    receipt(o, *ty, Some(b.as_deref().copied().unwrap_or_default()))
                })
                .collect();
            let logs_bloom = blooms.iter().flatten().fold(Bloom::ZERO, |a, b| a | **b);
            let root = crate::trie::ordered_root_with(receipts.len(), &|i, out| {
                receipts[i].encode_2718(out);
            });
            (receipts, logs_bloom, root)
        });
        let gas_used = txs.last().map(|t| t.cumulative_gas_used).unwrap_or(0);
        Ok(BlockOutput { txs, receipts, diff: diff?, gas_used, receipts_root, logs_bloom })
    }
}
