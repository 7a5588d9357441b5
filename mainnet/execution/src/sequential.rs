//! The sequential reference executor: plain revm, one transaction after another.

use hashbrown::HashMap;

use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use revm::context::result::EVMError;
use revm::context::{Context, ContextTr};
use revm::database_interface::Database;
use revm::state::AccountInfo;
use revm::{ExecuteEvm, InspectEvm, MainBuilder, MainContext};

use crate::collision::{needs_collision_check, CollisionInspector, StorageProbe};

use crate::diff::StateDiff;
use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::{ExecError, StateError};
use crate::output::{BlockOutput, TxOutcome};
use crate::state::{Account, CachedView, StateView};
use crate::writes::{collect_writes, Loc, Val};

/// revm's view of the state in the sequential executor: the block's writes so far over the
/// cached parent state.
struct SeqDb<'a, S: ?Sized> {
    base: &'a CachedView<'a, S>,
    overlay: HashMap<Loc, Val>,
}

pub(crate) fn account_info(account: Account, code: Bytecode) -> AccountInfo {
    AccountInfo::new(account.balance, account.nonce, account.code_hash, code)
}

impl<S: StateView + ?Sized> StorageProbe for SeqDb<'_, S> {
    fn parent_has_storage(&self, address: Address) -> Result<bool, StateError> {
        self.base.has_storage(address)
    }
}

impl<S: StateView + ?Sized> Database for SeqDb<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let account = match self.overlay.get(&Loc::Account(address)) {
            Some(Val::Account(a)) => *a,
            _ => self.base.account(address)?,
        };
        account.map(|a| Ok(account_info(a, self.base.code(a.code_hash)?))).transpose()
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.base.code(code_hash)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        match self.overlay.get(&Loc::Storage(address, index)) {
            Some(Val::Storage(v)) => Ok(*v),
            _ => self.base.storage(address, index),
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash(number)
    }
}

/// Maps revm's error for transaction `index` to ours.
pub(crate) fn exec_error(index: usize, e: EVMError<StateError>) -> ExecError {
    match e {
        EVMError::Transaction(t) => ExecError::InvalidTransaction { index, reason: t.to_string() },
        EVMError::Header(h) => ExecError::InvalidTransaction { index, reason: h.to_string() },
        EVMError::Database(d) => ExecError::State(d),
        other => ExecError::Evm { index, reason: other.to_string() },
    }
}

/// Checks that transaction `index` fits in what is left of the block's gas.
pub(crate) fn check_block_gas(
    env: &BlockEnv,
    index: usize,
    used: u64,
    limit: u64,
) -> Result<(), ExecError> {
    match used.checked_add(limit) {
        Some(total) if total <= env.gas_limit => Ok(()),
        _ => Err(ExecError::BlockGasLimit { index, used, limit, block_limit: env.gas_limit }),
    }
}

/// Builds the diff from the final value of every written location, keeping only the
/// locations whose value differs from the parent state.
pub(crate) fn build_diff<S: StateView + ?Sized>(
    base: &CachedView<'_, S>,
    finals: impl IntoIterator<Item = (Loc, Val)>,
    code: impl IntoIterator<Item = (B256, Bytecode)>,
    wiped: impl IntoIterator<Item = Address>,
) -> Result<StateDiff, StateError> {
    let mut diff = StateDiff::default();
    for (loc, val) in finals {
        match (loc, val) {
            (Loc::Account(a), Val::Account(v)) => {
                if base.account(a)? != v {
                    diff.accounts.insert(a, v);
                }
            }
            (Loc::Storage(a, s), Val::Storage(v)) => {
                if base.storage(a, s)? != v {
                    diff.storage.entry(a).or_default().insert(s, v);
                }
            }
            _ => return Err(StateError::Corrupt(format!("value of the wrong kind at {loc:?}"))),
        }
    }
    for (hash, c) in code {
        diff.code.insert(hash, c.original_bytes());
    }
    diff.wiped.extend(wiped);
    Ok(diff)
}

/// Executes `txs` one after another on revm over `state`: the reference every other executor
/// must match byte for byte.
pub fn execute_sequential<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) -> Result<BlockOutput, ExecError> {
    let base = CachedView::new(state);
    let db = SeqDb { base: &base, overlay: HashMap::new() };
    let mut evm = Context::mainnet()
        .with_db(db)
        .with_cfg(chain.cfg())
        .with_block(env.revm(chain.spec))
        .build_mainnet_with_inspector(CollisionInspector);
    let mut outcomes = Vec::with_capacity(txs.len());
    let mut cumulative = 0u64;
    let mut code = Vec::new();
    let mut wiped = Vec::new();
    for (index, tx) in txs.iter().enumerate() {
        let tx_env = tx.tx_env();
        check_block_gas(env, index, cumulative, tx_env.gas_limit)?;
        let mut result = evm.transact_one(tx_env.clone());
        let mut state = evm.finalize();
        if result.is_ok()
            && needs_collision_check(&state, evm.ctx.db_mut()).map_err(ExecError::State)?
        {
            result = evm.inspect_one_tx(tx_env);
            state = evm.finalize();
        }
        let result = result.map_err(|e| exec_error(index, e))?;
        cumulative += result.tx_gas_used();
        outcomes.push(TxOutcome::from_revm(&result, cumulative));
        let w = collect_writes(&state, chain.spec);
        let db = evm.ctx.db_mut();
        for (hash, c) in w.code {
            base.insert_code(hash, c.clone());
            code.push((hash, c));
        }
        wiped.extend(w.wiped);
        db.overlay.extend(w.writes);
    }
    let overlay = std::mem::take(&mut evm.ctx.db_mut().overlay);
    drop(evm);
    let mut finals: Vec<(Loc, Val)> = overlay.into_iter().collect();
    finals.sort_unstable_by_key(|(l, _)| *l);
    let diff = build_diff(&base, finals, code, wiped)?;
    let types: Vec<_> = txs.iter().map(|t| t.tx.tx_type()).collect();
    Ok(BlockOutput::build(outcomes, &types, diff))
}
