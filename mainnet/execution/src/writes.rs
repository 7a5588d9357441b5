//! Turning revm's per-transaction state into writes, the same way for both executors.

use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use revm::primitives::hardfork::SpecId;
use revm::state::EvmState;

use crate::state::Account;

/// A location of the state a transaction can read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Loc {
    /// An account's balance, nonce and code hash.
    Account(Address),
    /// A storage slot.
    Storage(Address, U256),
}

/// The value at a [`Loc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Val {
    /// An account, `None` when it does not exist.
    Account(Option<Account>),
    /// A storage slot.
    Storage(U256),
}

/// What one transaction wrote.
#[derive(Debug, Default)]
pub(crate) struct TxWrites {
    /// Locations and their new values, at most one entry per location.
    pub(crate) writes: Vec<(Loc, Val)>,
    /// Code deployed by the transaction.
    pub(crate) code: Vec<(B256, Bytecode)>,
    /// Accounts created or deleted by the transaction.
    pub(crate) wiped: Vec<Address>,
}

/// Collects the writes of a finished transaction from revm's state, with the commit rules
/// revm's own databases apply: untouched accounts are skipped, self-destructed accounts are
/// deleted with their storage, touched empty accounts are deleted (EIP-161), and only storage
/// slots whose value changed are written.
pub(crate) fn collect_writes(state: &EvmState, spec: SpecId) -> TxWrites {
    let state_clear = spec.is_enabled_in(SpecId::SPURIOUS_DRAGON);
    let mut out = TxWrites::default();
    for (address, acc) in state {
        if !acc.is_touched() {
            continue;
        }
        let address = *address;
        if acc.is_selfdestructed() {
            out.writes.push((Loc::Account(address), Val::Account(None)));
            for slot in acc.storage.keys() {
                out.writes.push((Loc::Storage(address, *slot), Val::Storage(U256::ZERO)));
            }
            out.wiped.push(address);
            continue;
        }
        if state_clear && acc.is_empty() {
            out.writes.push((Loc::Account(address), Val::Account(None)));
            continue;
        }
        if acc.is_created() {
            out.wiped.push(address);
        }
        // New code: a deployment, or an EIP-7702 delegation set on an existing account.
        if let Some(code) = &acc.info.code {
            if !code.is_empty()
                && (acc.is_created() || acc.info.code_hash != acc.original_info().code_hash)
            {
                out.code.push((acc.info.code_hash, code.clone()));
            }
        }
        let info = Account {
            balance: acc.info.balance,
            nonce: acc.info.nonce,
            code_hash: acc.info.code_hash,
        };
        out.writes.push((Loc::Account(address), Val::Account(Some(info))));
        for (slot, value) in &acc.storage {
            if value.is_changed() {
                out.writes
                    .push((Loc::Storage(address, *slot), Val::Storage(value.present_value())));
            }
        }
    }
    out
}
