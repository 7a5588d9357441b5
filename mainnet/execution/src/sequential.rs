//! The sequential reference executor: plain revm, one transaction after another.

use std::collections::BTreeMap;

use hashbrown::HashMap;

use alloy_consensus::Transaction as _;
use alloy_primitives::{Address, B256, U256};
use revm::bytecode::Bytecode;
use revm::context::result::{EVMError, InvalidTransaction};
use revm::context::{Context, ContextTr};
use revm::database_interface::{Database, DatabaseRef};
use revm::state::AccountInfo;
use revm::{ExecuteEvm, InspectEvm, MainContext};

use crate::collision::{needs_collision_check, CollisionInspector, StorageProbe};

use crate::diff::StateDiff;
use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::{ExecError, StateError};
use crate::output::{BlockOutput, TxOutcome};
use crate::state::{Account, CachedView, StateView};
use crate::writes::{collect_writes, Loc, Val};

/// revm's view of the state in the sequential executor: the block's writes so far over the
/// cached parent state.
pub(crate) struct SeqDb<'a, S: ?Sized> {
    pub(crate) base: &'a CachedView<'a, S>,
    pub(crate) overlay: HashMap<Loc, Val>,
}

pub(crate) fn account_info(account: Account, code: Bytecode) -> AccountInfo {
    AccountInfo::new(account.balance, account.nonce, account.code_hash, code)
}

impl<S: StateView + ?Sized> StorageProbe for SeqDb<'_, S> {
    fn parent_has_storage(&self, address: Address) -> Result<bool, StateError> {
        self.base.has_storage(address)
    }
}

impl<S: StateView + ?Sized> DatabaseRef for SeqDb<'_, S> {
    type Error = StateError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        let account = match self.overlay.get(&Loc::Account(address)) {
            Some(Val::Account(a)) => *a,
            _ => self.base.account(address)?,
        };
        account.map(|a| Ok(account_info(a, self.base.code(a.code_hash)?))).transpose()
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.base.code(code_hash)
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, StateError> {
        match self.overlay.get(&Loc::Storage(address, index)) {
            Some(Val::Storage(v)) => Ok(*v),
            _ => self.base.storage(address, index),
        }
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, StateError> {
        self.base.block_hash(number)
    }
}

impl<S: StateView + ?Sized> Database for SeqDb<'_, S> {
    type Error = StateError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, StateError> {
        self.basic_ref(address)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, StateError> {
        self.code_by_hash_ref(code_hash)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, StateError> {
        self.storage_ref(address, index)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, StateError> {
        self.block_hash_ref(number)
    }
}

impl<S: StateView + ?Sized> SeqDb<'_, S> {
    /// Lays a finished transaction's writes over the block's so far (its code also into the
    /// cache, for the transactions after it); returns the code it deployed and the accounts
    /// it wiped.
    pub(crate) fn apply(
        &mut self,
        state: &revm::state::EvmState,
        spec: revm::primitives::hardfork::SpecId,
    ) -> (Vec<(B256, Bytecode)>, Vec<Address>) {
        let w = collect_writes(state, spec);
        for (hash, c) in &w.code {
            self.base.insert_code(*hash, c.clone());
        }
        self.overlay.extend(w.writes);
        (w.code, w.wiped)
    }
}

/// Maps revm's error for transaction `index` to ours; `db` maps the database's errors.
pub(crate) fn exec_error<E>(
    index: usize,
    e: EVMError<E>,
    db: impl FnOnce(E) -> ExecError,
) -> ExecError {
    match e {
        EVMError::Transaction(t) => {
            ExecError::InvalidTransaction { index, reason: invalid_reason(&t) }
        }
        EVMError::Header(h) => ExecError::InvalidTransaction { index, reason: h.to_string() },
        EVMError::Database(d) => db(d),
        EVMError::Custom(reason) => ExecError::Evm { index, reason },
        EVMError::CustomAny(any) => ExecError::Evm { index, reason: format!("{any:?}") },
    }
}

/// Why a transaction is invalid, in geth's words where geth has some: clients (viem's and
/// ethers' error classes) recognise these, and `eth_call`, `eth_estimateGas` and the drop
/// reasons of `farol_transactionStatus` pass them on.
pub(crate) fn invalid_reason(t: &InvalidTransaction) -> String {
    use InvalidTransaction as T;
    match t {
        T::NonceTooLow { tx, state } => format!("nonce too low: tx: {tx} state: {state}"),
        T::NonceTooHigh { tx, state } => format!("nonce too high: tx: {tx} state: {state}"),
        T::LackOfFundForMaxFee { fee, balance } => {
            format!("insufficient funds for gas * price + value: have {balance} want {fee}")
        }
        T::CallGasCostMoreThanGasLimit { initial_gas, gas_limit } => {
            format!("intrinsic gas too low: gas {gas_limit}, minimum needed {initial_gas}")
        }
        T::GasFloorMoreThanGasLimit { gas_floor, gas_limit } => format!(
            "insufficient gas for floor data gas cost: gas {gas_limit}, minimum needed {gas_floor}"
        ),
        T::GasPriceLessThanBasefee => "max fee per gas less than block base fee".into(),
        T::PriorityFeeGreaterThanMaxFee => {
            "max priority fee per gas higher than max fee per gas".into()
        }
        T::CallerGasLimitMoreThanBlock => "exceeds block gas limit".into(),
        T::TxGasLimitGreaterThanCap { gas_limit, cap } => {
            format!("transaction gas limit too high (cap: {cap}, tx: {gas_limit})")
        }
        T::RejectCallerWithCode => "sender not an eoa".into(),
        T::CreateInitCodeSizeLimit => "max initcode size exceeded".into(),
        T::InvalidChainId => "invalid chain id".into(),
        T::EmptyAuthorizationList => "EIP-7702 transaction with empty auth list".into(),
        T::NonceOverflowInTransaction => "nonce has max value".into(),
        other => other.to_string(),
    }
}

/// The error sequential execution meets when revm credits the first valid transaction's
/// fee to the beneficiary: the reward reads the account, and its code when it has some
/// (`SeqDb::basic_ref`). The parallel executors read the beneficiary only at the end, and
/// its code never, so they take this error to [`assemble`](crate::parallel) and return it at
/// the transaction where sequential execution meets it (until stop 40 they returned it
/// later, or not at all when only the code was unreadable).
pub(crate) fn beneficiary_read_error<S: StateView + ?Sized>(
    base: &CachedView<'_, S>,
    beneficiary: Address,
) -> Option<ExecError> {
    let read =
        base.account(beneficiary).and_then(|a| a.map(|a| base.code(a.code_hash)).transpose());
    read.err().map(ExecError::State)
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

/// Whether `val`, the final value of `loc`, differs from the parent state's.
pub(crate) fn changed<S: StateView + ?Sized>(
    base: &CachedView<'_, S>,
    loc: Loc,
    val: Val,
) -> Result<bool, StateError> {
    match (loc, val) {
        (Loc::Account(a), Val::Account(v)) => Ok(base.account(a)? != v),
        (Loc::Storage(a, s), Val::Storage(v)) => Ok(base.storage(a, s)? != v),
        _ => Err(StateError::Corrupt(format!("value of the wrong kind at {loc:?}"))),
    }
}

/// The diff made of the `changed` locations (in location order), the code deployed and the
/// accounts wiped. Both executors build their diff here.
pub(crate) fn diff_from_changes(
    changed: impl IntoIterator<Item = (Loc, Val)>,
    code: Vec<(B256, Bytecode)>,
    wiped: Vec<Address>,
) -> StateDiff {
    let mut accounts = Vec::new();
    let mut storage: Vec<(Address, Vec<(U256, U256)>)> = Vec::new();
    for (loc, val) in changed {
        match (loc, val) {
            (Loc::Account(a), Val::Account(v)) => accounts.push((a, v)),
            (Loc::Storage(a, slot), Val::Storage(v)) => match storage.last_mut() {
                Some((last, slots)) if *last == a => slots.push((slot, v)),
                _ => storage.push((a, vec![(slot, v)])),
            },
            // `changed` refuses values of the wrong kind.
            _ => {}
        }
    }
    StateDiff {
        accounts: accounts.into_iter().collect(),
        storage: storage.into_iter().map(|(a, slots)| (a, slots.into_iter().collect())).collect(),
        code: code.into_iter().map(|(h, c)| (h, c.original_bytes())).collect(),
        wiped: wiped.into_iter().collect(),
    }
}

/// Executes `txs` one after another on revm over `state`: the reference every other executor
/// must match byte for byte.
pub fn execute_sequential<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) -> Result<BlockOutput, ExecError> {
    on_enough_stack(state, chain, env, txs, false, None).map(|(output, _)| output)
}

/// What [`execute_screened`] left out of a block: each transaction's index among those it
/// was given, and why.
pub type LeftOut = Vec<(usize, String)>;

/// [`execute_sequential`] for a block whose transactions may not all be valid. A transaction
/// that is invalid against the state the ones before it left (its nonce, its balance for the
/// gas, ...) is left out, and so is every later transaction of its sender with a higher
/// nonce; a transaction whose gas limit does not fit in what the block has left is left out
/// alone. The output is [`execute_sequential`]'s for the transactions kept, in their order:
/// one run finds everything to leave out, where running the block again without each invalid
/// transaction in turn would cost a run per invalid transaction.
pub fn execute_screened<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) -> Result<(BlockOutput, LeftOut), ExecError> {
    on_enough_stack(state, chain, env, txs, false, Some(LeftOut::new()))
}

/// [`execute_sequential`] for a simulated call (`eth_call`, `eth_estimateGas`): the same
/// rules, except that a sender holding code is not refused (EIP-3607 guards real
/// transactions, whose senders sign; a call names any `from`, a contract wallet's included)
/// and the nonce is not checked (a client may name the next pending nonce): geth skips both
/// checks for calls too.
pub fn execute_call<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) -> Result<BlockOutput, ExecError> {
    on_enough_stack(state, chain, env, txs, true, None).map(|(output, _)| output)
}

/// WASM contracts run on this thread's stack; a thread with too little left (a test harness
/// thread has 2 MiB) runs the block on a fresh one instead.
fn on_enough_stack<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    call: bool,
    screen: Option<LeftOut>,
) -> Result<(BlockOutput, LeftOut), ExecError> {
    stacker::maybe_grow(crate::wasm::EXECUTOR_STACK_NEEDED, crate::wasm::EXECUTOR_STACK, || {
        sequential_block(state, chain, env, txs, call, screen)
    })
}

fn sequential_block<S: StateView + ?Sized>(
    state: &S,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    call: bool,
    mut screen: Option<LeftOut>,
) -> Result<(BlockOutput, LeftOut), ExecError> {
    let base = CachedView::new(state);
    let db = SeqDb { base: &base, overlay: HashMap::new() };
    let cfg = chain.call_cfg(call);
    let ctx = Context::mainnet().with_db(db).with_cfg(cfg).with_block(env.revm(chain.spec));
    let mut evm = crate::wasm::build_evm(ctx, CollisionInspector, chain);
    let mut outcomes = Vec::with_capacity(txs.len());
    let mut cumulative = 0u64;
    let mut code = Vec::new();
    let mut wiped = Vec::new();
    // With a screen: the kept transactions, and the lowest nonce left out of each sender as
    // invalid (its later transactions with a higher nonce are left out too).
    let mut kept = Vec::new();
    let mut invalid: BTreeMap<Address, u64> = BTreeMap::new();
    for (index, tx) in txs.iter().enumerate() {
        if let Some(left) = screen.as_mut() {
            if invalid.get(&tx.sender).is_some_and(|n| tx.tx.nonce() > *n) {
                left.push((index, "an earlier nonce was dropped".into()));
                continue;
            }
        }
        let tx_env = tx.tx_env();
        // Calls are held to their own gas alone, not the block's (since stop 50, as geth).
        let fits =
            if call { Ok(()) } else { check_block_gas(env, index, cumulative, tx_env.gas_limit) };
        match (fits, screen.as_mut()) {
            (Ok(()), _) => {}
            (Err(ExecError::BlockGasLimit { .. }), Some(left)) => {
                left.push((index, "gas limit above the block's".into()));
                continue;
            }
            (Err(e), _) => return Err(e),
        }
        let mut result = evm.transact_one(tx_env);
        let mut state = evm.finalize();
        if result.is_ok()
            && needs_collision_check(&state, evm.ctx.db_mut()).map_err(ExecError::State)?
        {
            let again = evm.ctx.tx.clone();
            result = evm.inspect_one_tx(again);
            state = evm.finalize();
        }
        let result = match (result.map_err(|e| exec_error(index, e, ExecError::State)), &mut screen)
        {
            (Ok(r), _) => r,
            // revm discarded what the invalid transaction did (its state above is empty).
            (Err(ExecError::InvalidTransaction { reason, .. }), Some(left)) => {
                left.push((index, reason));
                let nonce = invalid.entry(tx.sender).or_insert(u64::MAX);
                *nonce = (*nonce).min(tx.tx.nonce());
                continue;
            }
            (Err(e), _) => return Err(e),
        };
        if screen.is_some() {
            kept.push(tx.clone());
        }
        cumulative += result.tx_gas_used();
        outcomes.push(TxOutcome::from_revm(&result, cumulative));
        let (c, w) = evm.ctx.db_mut().apply(&state, chain.spec);
        code.extend(c);
        wiped.extend(w);
    }
    let overlay = std::mem::take(&mut evm.ctx.db_mut().overlay);
    drop(evm);
    match screen {
        Some(left) => Ok((finish_block(&base, overlay, code, wiped, outcomes, &kept)?, left)),
        None => Ok((finish_block(&base, overlay, code, wiped, outcomes, txs)?, LeftOut::new())),
    }
}

/// The output of a block executed one transaction after another: the state diff of the
/// writes `overlay` holds (less those that leave a value as it was), with the code deployed
/// and the accounts wiped, and the receipts of `outcomes`.
pub(crate) fn finish_block<S: StateView + ?Sized>(
    base: &CachedView<'_, S>,
    overlay: HashMap<Loc, Val>,
    code: Vec<(B256, Bytecode)>,
    wiped: Vec<Address>,
    outcomes: Vec<TxOutcome>,
    txs: &[RecoveredTx],
) -> Result<BlockOutput, ExecError> {
    let mut finals: Vec<(Loc, Val)> = overlay.into_iter().collect();
    finals.sort_unstable_by_key(|(l, _)| *l);
    let mut kept = Vec::with_capacity(finals.len());
    for (loc, val) in finals {
        if changed(base, loc, val)? {
            kept.push((loc, val));
        }
    }
    let diff = diff_from_changes(kept, code, wiped);
    let types: Vec<_> = txs.iter().map(|t| t.tx.tx_type()).collect();
    Ok(BlockOutput::build(outcomes, &types, diff))
}
