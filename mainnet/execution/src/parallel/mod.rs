//! The parallel optimistic executor (Block-STM on revm) with parallel hints and lazy
//! beneficiary credit. Its output equals [`crate::execute_sequential`]'s for every block.

mod handler;
mod hints;
mod memo;
mod mv;
mod partition;
mod scheduler;

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use alloy_primitives::{Address, Bloom, B256, U256};
use parking_lot::Mutex;
use rayon::prelude::*;
use revm::bytecode::Bytecode;
use revm::context::result::{EVMError, ExecutionResult};
use revm::context::{Context, ContextSetters, TxEnv};
use revm::database_interface::{DBErrorMarker, Database};
use revm::handler::Handler;
use revm::inspector::InspectorHandler;
use revm::primitives::hardfork::SpecId;
use revm::primitives::KECCAK_EMPTY;
use revm::state::AccountInfo;
use revm::{ExecuteEvm, MainContext};

use crate::collision::{needs_collision_check, CollisionInspector, StorageProbe};
use crate::diff::StateDiff;
use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::{ExecError, StateError};
use crate::output::{BlockOutput, TxOutcome};
use crate::sequential::{
    account_info, changed, check_block_gas, diff_from_changes, exec_error, execute_sequential,
};
use crate::state::{Account, CachedView, StateView};
use crate::writes::{collect_writes, Loc, Val};

use handler::LazyRewardHandler;
use mv::{credit, Entry, Found, MvMemory};
use scheduler::{Scheduler, Task, Version};

/// How the parallel executor runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParallelConfig {
    /// Worker threads (the calling thread is one of them).
    pub threads: usize,
    /// Over a state whose reads are cheap ([`StateView::reads_are_cheap`]), blocks with fewer
    /// transactions run sequentially (measured with `farol bench exec`).
    pub min_txs: usize,
    /// Blocks whose longest chain of predicted dependencies holds at least this percentage of
    /// their transactions run sequentially.
    pub max_dependent_percent: usize,
    /// Over a state whose reads are cheap ([`StateView::reads_are_cheap`]), blocks whose
    /// transactions declare less gas than this on average run sequentially (measured with
    /// `farol bench exec`: plain transfers do not gain in parallel there at any block size,
    /// ERC-20 transfers do).
    pub min_avg_gas_cheap_reads: u64,
    /// Whether blocks whose hints split them into independent groups run partitioned.
    pub partition: Partition,
    /// Blocks whose largest predicted group holds more than this percentage of the declared
    /// gas are not partitioned.
    pub max_group_percent: u64,
}

/// Partitioned execution: groups of transactions predicted to touch nothing in common run
/// sequentially, each on one thread, with every location claimed by one group; a conflict
/// stops the attempt and the block runs on the Block-STM path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partition {
    /// Never: Block-STM only.
    Off,
    /// Groups from the parallel hints.
    Predicted,
    /// For tests: transaction `i` goes to bin `i mod bins` whatever the hints say, so that
    /// most blocks conflict and the conflict must be caught.
    RoundRobin,
}

impl ParallelConfig {
    /// `threads` workers and no sequential fallback at all (tests, state tests, measuring
    /// the thresholds).
    pub fn always_parallel(threads: usize) -> Self {
        ParallelConfig {
            threads,
            min_txs: 0,
            max_dependent_percent: 101,
            min_avg_gas_cheap_reads: 0,
            partition: Partition::Off,
            max_group_percent: 100,
        }
    }

    /// `threads` workers, partitioned whenever `partition` makes at least two bins, Block-STM
    /// otherwise (and when the attempt conflicts), no sequential fallback (tests, benchmarks).
    pub fn always_partitioned(threads: usize, partition: Partition) -> Self {
        ParallelConfig { partition, ..ParallelConfig::always_parallel(threads) }
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            min_txs: 1024,
            max_dependent_percent: 60,
            min_avg_gas_cheap_reads: 40_000,
            partition: Partition::Predicted,
            max_group_percent: 60,
        }
    }
}

/// What the parallel executor did for one block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Transaction executions, all incarnations included.
    pub executions: u64,
    /// Executions beyond the first of each transaction.
    pub re_executions: u64,
    /// Executions stopped at a read of an estimate, or held back by a hint.
    pub waits: u64,
    /// Validations run.
    pub validations: u64,
    /// Validations that failed.
    pub aborts: u64,
    /// Why the block ran sequentially instead, if it did.
    pub fallback: Option<&'static str>,
    /// Wall time of the parallel phase (reported by benchmarks, never used in results).
    pub parallel_time: std::time::Duration,
    /// Wall time of assembling the output after it (receipts, receipts root, diff).
    pub finish_time: std::time::Duration,
    /// Bins the block ran in when it ran partitioned, 0 otherwise.
    pub bins: usize,
    /// Why a partitioned attempt was given up, if one was.
    pub partition_abandoned: Option<&'static str>,
}

/// Runs blocks in parallel on its own worker threads, kept across blocks (a thread's
/// allocator state stays warm, and no block pays for spawning threads).
#[derive(Clone)]
pub struct ParallelExecutor {
    config: ParallelConfig,
    pool: Option<Arc<rayon::ThreadPool>>,
    profiles: Arc<hints::Profiles>,
}

impl std::fmt::Debug for ParallelExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelExecutor").field("config", &self.config).finish()
    }
}

impl Default for ParallelExecutor {
    fn default() -> Self {
        ParallelExecutor::new(ParallelConfig::default())
    }
}

/// A read failed: it hit an estimate of a lower transaction, or the parent state failed.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("read an estimate of transaction {0}")]
    Blocked(usize),
    #[error(transparent)]
    State(#[from] StateError),
    /// Partitioned execution met the beneficiary, whose fees are known only at the end (see
    /// [`partition`]).
    #[error("a partitioned transaction touched the beneficiary")]
    Beneficiary,
}

impl DBErrorMarker for ReadError {}

/// What the last incarnation of a transaction produced.
struct TxSlot {
    result: Result<ExecutionResult, ExecError>,
    code: Vec<(B256, Bytecode)>,
    wiped: Vec<Address>,
    tx_type: alloy_consensus::TxType,
    /// The receipt's logs bloom; `None` when it has no logs (most transfers), so that the
    /// 256 bytes are not moved around for nothing.
    bloom: Option<Box<alloy_primitives::Bloom>>,
}

/// The beneficiary fee of one transaction's latest incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fee {
    /// Not executed yet: contributes nothing for now (validation catches a later change).
    Pending,
    /// Credited on top of the writes below it.
    Amount(U256),
    /// Its incarnation was aborted: readers wait.
    Estimate,
}

struct Shared<'a, S: ?Sized> {
    base: CachedView<'a, S>,
    mv: MvMemory,
    fees: Vec<Mutex<Fee>>,
    /// Fee entries scanned by beneficiary reads and lazy credits folded by reads so far, and
    /// the most allowed.
    fee_scan: AtomicU64,
    fee_scan_budget: u64,
    /// Set when the parallel attempt is given up (the block then runs sequentially).
    abandoned: std::sync::atomic::AtomicBool,
    scheduler: Scheduler,
    tx_envs: Vec<TxEnv>,
    hints: Vec<Option<usize>>,
    reads: Vec<Mutex<Vec<(Loc, Val, ReadKind)>>>,
    /// Per transaction, the recipient it may credit lazily (see [`lazy_recipient`]).
    lazy: Vec<Option<Address>>,
    slots: Vec<Mutex<Option<TxSlot>>>,
    beneficiary: Address,
    state_clear: bool,
    spec: SpecId,
    executions: AtomicU64,
    waits: AtomicU64,
    validations: AtomicU64,
    aborts: AtomicU64,
}

impl<S: StateView + ?Sized> Shared<'_, S> {
    /// The value of `loc` as transaction `idx` sees it.
    /// The value of `loc` as transaction `idx` sees it, and whether it is the parent state's.
    fn read(&self, loc: Loc, idx: usize) -> Result<(Val, bool), ReadError> {
        if loc == Loc::Account(self.beneficiary) {
            return self.read_beneficiary(idx).map(|a| (Val::Account(a), false));
        }
        match self.mv.read(&loc, idx) {
            Found::Value(v, credits) => {
                self.scanned(credits.len());
                Ok((self.apply_credits(v, &credits), false))
            }
            Found::Blocked(i) => Err(ReadError::Blocked(i)),
            Found::Base(credits) => {
                self.scanned(credits.len());
                let v = match loc {
                    Loc::Account(a) => Val::Account(self.base.account(a)?),
                    Loc::Storage(a, s) => Val::Storage(self.base.storage(a, s)?),
                };
                Ok((self.apply_credits(v, &credits), credits.is_empty()))
            }
        }
    }

    /// Counts `n` entries walked by a read. Each read of an account walks the lazy credits
    /// since its last full write, so many payments to one account that read it (every lazy
    /// payment does, for its nonce and code) would make the block quadratic: past a budget
    /// linear in the block the parallel attempt is abandoned and the block runs
    /// sequentially, as for the beneficiary's fees. Before stop 38 only the beneficiary's
    /// walk was counted: 47,000 payments to one account took seconds.
    fn scanned(&self, n: usize) {
        if n > 0 {
            let total = self.fee_scan.fetch_add(n as u64, Relaxed) + n as u64;
            if total > self.fee_scan_budget {
                self.abandoned.store(true, Relaxed);
            }
        }
    }

    /// Adds lazy balance credits to an account value, in order.
    fn apply_credits(&self, v: Val, credits: &[U256]) -> Val {
        match v {
            Val::Account(mut a) if !credits.is_empty() => {
                for c in credits {
                    a = credit(a, *c, self.state_clear);
                }
                Val::Account(a)
            }
            other => other,
        }
    }

    /// The beneficiary as transaction `idx` sees it: the nearest full write below (or the
    /// parent state's account) plus the fees of the transactions between, in order.
    fn read_beneficiary(&self, idx: usize) -> Result<Option<Account>, ReadError> {
        let loc = Loc::Account(self.beneficiary);
        // The beneficiary is never a lazy recipient, so it has no credits in the memory.
        let (mut account, from) = match self.mv.read_with_index(&loc, idx) {
            (Found::Value(Val::Account(a), _), Some(i)) => (a, i + 1),
            (Found::Blocked(i), _) => return Err(ReadError::Blocked(i)),
            (Found::Base(_), _) => (self.base.account(self.beneficiary)?, 0),
            _ => return Err(StateError::Corrupt("beneficiary holds a storage value".into()).into()),
        };
        // Reading the beneficiary costs one step per fee since its last full write. Many such
        // reads in one block would make the block quadratic: past a budget linear in the block,
        // the parallel attempt is abandoned and the block runs sequentially.
        self.scanned(idx - from);
        for (i, fee) in self.fees[from..idx].iter().enumerate() {
            match *fee.lock() {
                Fee::Pending => {}
                Fee::Amount(f) => account = credit(account, f, self.state_clear),
                Fee::Estimate => return Err(ReadError::Blocked(from + i)),
            }
        }
        Ok(account)
    }

    fn validate(&self, v: Version) -> Option<Task> {
        self.validations.fetch_add(1, Relaxed);
        let valid = self.reads[v.idx].lock().iter().all(|(loc, seen, kind)| {
            // A value read from the parent state is still right while nothing below writes
            // the location: parent values never change, so only the memory is consulted.
            if *kind == ReadKind::Parent && *loc != Loc::Account(self.beneficiary) {
                if let Found::Base(credits) = self.mv.read(loc, v.idx) {
                    if credits.is_empty() {
                        return true;
                    }
                }
            }
            match (self.read(*loc, v.idx), kind) {
                (Ok((now, _)), ReadKind::Meta) => {
                    let value = self.tx_envs[v.idx].value;
                    meta(&now, value, self.spec) == meta(seen, value, self.spec)
                }
                (Ok((now, _)), _) => now == *seen,
                (Err(_), _) => false,
            }
        });
        let aborted = !valid && self.scheduler.try_validation_abort(v);
        if aborted {
            self.aborts.fetch_add(1, Relaxed);
            self.mv.mark_estimates(v.idx);
            *self.fees[v.idx].lock() = Fee::Estimate;
        }
        self.scheduler.finish_validation(v.idx, aborted)
    }
}

/// How a transaction used a value it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadKind {
    /// The parent state's value (no write below).
    Parent,
    /// A value some transaction below wrote.
    Written,
    /// A lazy recipient: only its nonce and code matter (its balance is only added to).
    Meta,
}

/// The part of an account a lazy recipient's transaction depends on: its nonce, its code,
/// whether it is empty (from Amsterdam on, EIP-2780 charges for paying an empty account;
/// before, a payment costs the same either way), and whether adding `value` would overflow
/// its balance (revm then fails the payment).
fn meta(v: &Val, value: U256, spec: SpecId) -> Option<(u64, B256, bool, bool)> {
    match v {
        Val::Account(a) => {
            let a = a.unwrap_or_default();
            let empty = a.is_empty() && spec.is_enabled_in(SpecId::AMSTERDAM);
            Some((a.nonce, a.code_hash, empty, a.balance.checked_add(value).is_none()))
        }
        Val::Storage(_) => None,
    }
}

/// The account a transaction may credit lazily: the recipient of a plain value transfer,
/// unless it is the sender, the beneficiary or a precompile, or the transaction carries
/// EIP-7702 authorizations. Whether the recipient has code is only known when it is read;
/// with code, it is read and written in full.
fn lazy_recipient(tx: &RecoveredTx, beneficiary: Address) -> Option<Address> {
    use alloy_consensus::Transaction as _;
    let to = tx.tx.to()?;
    let precompile = to.0[..18].iter().all(|b| *b == 0);
    (!tx.tx.value().is_zero()
        && to != tx.sender
        && to != beneficiary
        && !precompile
        && tx.tx.authorization_list().is_none())
    .then_some(to)
}

/// The parent-state values a transaction read, by location.
enum Parents {
    Few(Vec<(Loc, Val)>),
    Many(hashbrown::HashMap<Loc, Val>),
}

impl Parents {
    fn new(reads: &[(Loc, Val, ReadKind)]) -> Self {
        let it = reads.iter().filter(|(_, _, k)| *k == ReadKind::Parent).map(|(l, v, _)| (*l, *v));
        if reads.len() <= 32 {
            Parents::Few(it.collect())
        } else {
            Parents::Many(it.collect())
        }
    }

    fn get(&self, loc: &Loc) -> Option<Val> {
        match self {
            Parents::Few(v) => v.iter().find(|(l, _)| l == loc).map(|(_, v)| *v),
            Parents::Many(m) => m.get(loc).copied(),
        }
    }
}

/// revm's view of the state while one worker executes transaction `idx`.
struct WorkerDb<'s, 'a, S: ?Sized> {
    shared: &'s Shared<'a, S>,
    idx: Cell<usize>,
    reads: RefCell<Vec<(Loc, Val, ReadKind)>>,
    /// The balance given to revm for the lazy recipient, when it was read as one.
    lazy_given: Cell<Option<Account>>,
}

#[derive(Clone, Copy)]
struct DbRef<'w, 's, 'a, S: ?Sized>(&'w WorkerDb<'s, 'a, S>);

impl<S: StateView + ?Sized> DbRef<'_, '_, '_, S> {
    fn read(&self, loc: Loc) -> Result<Val, ReadError> {
        let (v, from_parent) = self.0.shared.read(loc, self.0.idx.get())?;
        let kind = if from_parent { ReadKind::Parent } else { ReadKind::Written };
        self.0.reads.borrow_mut().push((loc, v, kind));
        Ok(v)
    }
}

impl<S: StateView + ?Sized> StorageProbe for DbRef<'_, '_, '_, S> {
    fn parent_has_storage(&self, address: Address) -> Result<bool, StateError> {
        self.0.shared.base.has_storage(address)
    }
}

impl<S: StateView + ?Sized> Database for DbRef<'_, '_, '_, S> {
    type Error = ReadError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, ReadError> {
        let idx = self.0.idx.get();
        if self.0.shared.lazy[idx] == Some(address) {
            let loc = Loc::Account(address);
            let (v, _) = self.0.shared.read(loc, idx)?;
            if let Val::Account(account) = v {
                let value = self.0.shared.tx_envs[idx].value;
                let fits = account.is_none_or(|a| a.balance.checked_add(value).is_some());
                if fits && account.is_none_or(|a| a.code_hash == KECCAK_EMPTY) {
                    // Only its nonce and code matter to this transaction.
                    self.0.reads.borrow_mut().push((loc, v, ReadKind::Meta));
                    self.0.lazy_given.set(Some(account.unwrap_or_default()));
                    return Ok(account.map(|a| account_info(a, Bytecode::default())));
                }
            }
        }
        let Val::Account(account) = self.read(Loc::Account(address))? else {
            return Err(
                StateError::Corrupt(format!("account {address} holds a storage value")).into()
            );
        };
        match account {
            None => Ok(None),
            Some(a) => Ok(Some(account_info(a, self.0.shared.base.code(a.code_hash)?))),
        }
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, ReadError> {
        Ok(self.0.shared.base.code(code_hash)?)
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, ReadError> {
        match self.read(Loc::Storage(address, index))? {
            Val::Storage(v) => Ok(v),
            Val::Account(_) => {
                Err(StateError::Corrupt(format!("slot {index} of {address} holds an account"))
                    .into())
            }
        }
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, ReadError> {
        Ok(self.0.shared.base.block_hash(number)?)
    }
}

impl ParallelExecutor {
    /// An executor with `config`.
    ///
    /// Without threads (the pool cannot be created, or `threads <= 1`), blocks run
    /// sequentially. At most [`crate::wasm::MAX_PARALLEL_WORKERS`] threads are used.
    pub fn new(config: ParallelConfig) -> Self {
        let config = ParallelConfig {
            threads: config.threads.min(crate::wasm::MAX_PARALLEL_WORKERS),
            ..config
        };
        let pool = (config.threads > 1)
            .then(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.threads)
                    .thread_name(|i| format!("farol-exec-{i}"))
                    // Room for WASM contracts (see `wasm::WASM_STACK`).
                    .stack_size(crate::wasm::EXECUTOR_STACK)
                    .build()
                    .ok()
            })
            .flatten()
            .map(Arc::new);
        ParallelExecutor { config, pool, profiles: Arc::new(hints::Profiles::default()) }
    }

    /// The configuration.
    pub fn config(&self) -> &ParallelConfig {
        &self.config
    }

    /// Executes `txs` over `state`; the output equals [`execute_sequential`]'s.
    pub fn execute<S: StateView + ?Sized>(
        &self,
        state: &S,
        chain: &ChainSpec,
        env: &BlockEnv,
        txs: &[RecoveredTx],
    ) -> Result<(BlockOutput, ParallelStats), ExecError> {
        let n = txs.len();
        let mut abandoned = None;
        let sequential = |why, abandoned| {
            execute_sequential(state, chain, env, txs).map(|o| {
                (
                    o,
                    ParallelStats {
                        executions: n as u64,
                        fallback: Some(why),
                        partition_abandoned: abandoned,
                        ..Default::default()
                    },
                )
            })
        };
        let Some(pool) = self.pool.as_ref().filter(|_| self.config.threads > 1) else {
            return sequential("one thread", None);
        };
        // Over storage that may make reads wait, overlapping them pays even for small blocks.
        if state.reads_are_cheap() && n < self.config.min_txs {
            return sequential("small block over an in-memory state", None);
        }
        // Cheap transactions over cheap reads only gain when partitioned; when one sender
        // sends most of the block, its chain of nonces is a group too large to partition,
        // and the analysis is skipped.
        let cheap = state.reads_are_cheap() && {
            let gas: u128 =
                txs.iter().map(|t| alloy_consensus::Transaction::gas_limit(&t.tx) as u128).sum();
            gas < self.config.min_avg_gas_cheap_reads as u128 * n as u128
        };
        if cheap
            && (self.config.partition != Partition::Predicted
                || one_sender_dominates(txs, self.config.max_group_percent))
        {
            return sequential("cheap transactions over an in-memory state", None);
        }
        let threads = self.config.threads.min(n);
        let bins = 16 * threads;
        // The analysis and the plan, in one visit to the pool.
        let (lazy, analysis, plan) = pool.install(|| {
            let lazy: Vec<Option<Address>> = txs
                .par_iter()
                .with_min_len(1024)
                .map(|t| lazy_recipient(t, env.beneficiary))
                .collect();
            let analysis = hints::analyze(txs, &lazy, &self.profiles);
            let plan = match self.config.partition {
                Partition::Off => None,
                Partition::Predicted => {
                    let gas: Vec<u64> = txs
                        .par_iter()
                        .with_min_len(1024)
                        .map(|t| alloy_consensus::Transaction::gas_limit(&t.tx))
                        .collect();
                    partition::plan(&analysis.group, &gas, bins, self.config.max_group_percent)
                }
                Partition::RoundRobin => partition::round_robin(n, bins),
            };
            (lazy, analysis, plan)
        });
        if let Some(plan) = plan {
            let bins = plan.len();
            match partition::execute(
                pool,
                threads,
                state,
                chain,
                env,
                txs,
                lazy.clone(),
                plan,
                &self.profiles,
            ) {
                Ok((output, parallel_time, finish_time)) => {
                    return output.map(|o| {
                        (
                            o,
                            ParallelStats {
                                executions: n as u64,
                                parallel_time,
                                finish_time,
                                bins,
                                ..Default::default()
                            },
                        )
                    })
                }
                Err(why) => abandoned = Some(why),
            }
        }
        if cheap {
            return sequential("cheap transactions over an in-memory state", abandoned);
        }
        let hints = analysis.deps;
        // The longest chain of predicted dependencies bounds the parallelism.
        let mut depth = vec![0usize; n];
        for (j, dep) in hints.iter().enumerate() {
            depth[j] = dep.map_or(1, |d| depth[d] + 1);
        }
        let critical_path = depth.iter().copied().max().unwrap_or(0);
        if critical_path.saturating_mul(100) >= self.config.max_dependent_percent.saturating_mul(n)
        {
            return sequential("dependent block", abandoned);
        }
        let shared = Shared {
            base: CachedView::new(state),
            mv: MvMemory::new(n),
            fees: (0..n).map(|_| Mutex::new(Fee::Pending)).collect(),
            fee_scan: AtomicU64::new(0),
            fee_scan_budget: 16 * n as u64 + 100_000,
            abandoned: std::sync::atomic::AtomicBool::new(false),
            scheduler: Scheduler::new(n),
            tx_envs: pool.install(|| txs.par_iter().map(RecoveredTx::tx_env).collect()),
            hints,
            reads: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
            lazy,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            beneficiary: env.beneficiary,
            state_clear: chain.spec.is_enabled_in(SpecId::SPURIOUS_DRAGON),
            spec: chain.spec,
            executions: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
        };
        let started = std::time::Instant::now();
        pool.scope(|s| {
            for _ in 1..threads {
                s.spawn(|_| worker(&shared, chain, env, txs));
            }
            worker(&shared, chain, env, txs);
        });
        if shared.abandoned.load(Relaxed) {
            return sequential("reads walk too many fees or lazy credits", abandoned);
        }
        let stats = ParallelStats {
            executions: shared.executions.load(Relaxed),
            re_executions: shared.executions.load(Relaxed).saturating_sub(n as u64),
            waits: shared.waits.load(Relaxed),
            validations: shared.validations.load(Relaxed),
            aborts: shared.aborts.load(Relaxed),
            fallback: None,
            parallel_time: started.elapsed(),
            finish_time: std::time::Duration::ZERO,
            bins: 0,
            partition_abandoned: abandoned,
        };
        let started = std::time::Instant::now();
        let output = pool.install(|| finish(shared, env, txs, &self.profiles))?;
        Ok((output, ParallelStats { finish_time: started.elapsed(), ..stats }))
    }
}

/// Assembles the block output once every transaction is executed and validated.
fn finish<S: StateView + ?Sized>(
    mut shared: Shared<'_, S>,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    profiles: &hints::Profiles,
) -> Result<BlockOutput, ExecError> {
    profiles.learn(txs, &shared.mv.take_written());
    let ben_read = crate::sequential::beneficiary_read_error(&shared.base, shared.beneficiary);
    let beneficiary_final = shared.read_beneficiary(shared.slots.len());
    let ben = Loc::Account(shared.beneficiary);
    let created_by_reward = !shared.state_clear
        && mv::first_reward_creates_beneficiary(
            shared.base.account(shared.beneficiary).ok().flatten(),
            shared.fees.first().and_then(|f| match *f.lock() {
                Fee::Amount(fee) => Some(fee),
                Fee::Pending | Fee::Estimate => None,
            }),
            shared.mv.read_with_index(&ben, 1).1 == Some(0),
        );
    let Shared { base, mv, slots, beneficiary, state_clear, .. } = shared;
    let diff = move |code, mut wiped: Vec<Address>| -> Result<_, ExecError> {
        if created_by_reward {
            wiped.push(beneficiary);
        }
        let mut locations = mv.into_locations();
        // The beneficiary's final value folds in every fee; it is a location of the block even
        // when no transaction wrote it in full.
        locations.retain(|(l, _)| *l != Loc::Account(beneficiary));
        let ben = beneficiary_final.map_err(|e| match e {
            ReadError::State(s) => ExecError::State(s),
            ReadError::Blocked(_) | ReadError::Beneficiary => internal(&Loc::Account(beneficiary)),
        })?;
        locations.push((
            Loc::Account(beneficiary),
            mv::Versions::single(Entry::Value(Val::Account(ben)), None),
        ));
        locations.par_sort_unstable_by_key(|(l, _)| *l);
        // The final value of each location, kept when it differs from the parent state.
        let finals: Vec<Result<Option<(Loc, Val)>, ExecError>> = locations
            .par_iter()
            .map(|(loc, versions)| {
                // The last full write plus the credits after it.
                let mut value: Option<Val> = None;
                for entry in versions.entries() {
                    value = Some(match entry {
                        Entry::Value(v) => *v,
                        Entry::Credit(c) => {
                            let start = match (value, versions.parent(), loc) {
                                (Some(v), _, _) => v,
                                (None, Some(p), _) => p,
                                (None, None, Loc::Account(a)) => Val::Account(base.account(*a)?),
                                (None, None, Loc::Storage(..)) => return Err(internal(loc)),
                            };
                            match start {
                                Val::Account(a) => Val::Account(credit(a, *c, state_clear)),
                                Val::Storage(_) => return Err(internal(loc)),
                            }
                        }
                        Entry::Estimate => return Err(internal(loc)),
                    });
                }
                let Some(value) = value else { return Err(internal(loc)) };
                let differs = match versions.parent() {
                    Some(parent) => parent != value,
                    None => changed(&base, *loc, value)?,
                };
                Ok(differs.then_some((*loc, value)))
            })
            .collect();
        let mut changed = Vec::with_capacity(finals.len());
        for f in finals {
            changed.extend(f?);
        }
        Ok(diff_from_changes(changed, code, wiped))
    };
    assemble(slots, env, txs, ben_read, diff)
}

/// The block output from each transaction's result, in block order: the running gas total
/// and the block gas check, receipts and their root on the current rayon pool, and the state
/// diff from `diff`, given the code deployed and the accounts wiped (in block order).
/// `ben_read` is the error reading the beneficiary gives, if any
/// ([`beneficiary_read_error`](crate::sequential::beneficiary_read_error)): it is the
/// block's error at the first transaction that passes its checks, as in sequential
/// execution, and `diff` is then never called.
fn assemble(
    slots: Vec<Mutex<Option<TxSlot>>>,
    env: &BlockEnv,
    txs: &[RecoveredTx],
    mut ben_read: Option<ExecError>,
    diff: impl FnOnce(Vec<(B256, Bytecode)>, Vec<Address>) -> Result<StateDiff, ExecError> + Send,
) -> Result<BlockOutput, ExecError> {
    // The gas of each transaction, read in parallel; then the running total and the checks in
    // block order over those numbers alone.
    let used: Vec<Option<u64>> = slots
        .par_iter()
        .with_min_len(1024)
        .map(|s| s.lock().as_ref().and_then(|s| s.result.as_ref().ok()).map(|r| r.tx_gas_used()))
        .collect();
    let mut cumulative = Vec::with_capacity(used.len());
    let mut total = 0u64;
    for (index, used) in used.iter().enumerate() {
        let limit = alloy_consensus::Transaction::gas_limit(&txs[index].tx);
        check_block_gas(env, index, total, limit)?;
        let Some(used) = used else {
            return Err(match slots[index].lock().take() {
                Some(TxSlot { result: Err(e), .. }) => e,
                _ => ExecError::Evm {
                    index,
                    reason: "the scheduler finished without executing it".into(),
                },
            });
        };
        if let Some(e) = ben_read.take() {
            return Err(e);
        }
        total += used;
        cumulative.push(total);
    }
    // Every result is there and valid: turned into outcomes in parallel (and freed there).
    type Part = (
        TxOutcome,
        alloy_consensus::TxType,
        Option<Box<Bloom>>,
        Vec<(B256, Bytecode)>,
        Vec<Address>,
    );
    let parts: Vec<Part> = slots
        .into_par_iter()
        .zip(cumulative)
        .with_min_len(256)
        .filter_map(|(slot, cumulative)| {
            let TxSlot { result, code, wiped, tx_type, bloom } = slot.into_inner()?;
            let outcome = TxOutcome::from_revm(result.as_ref().ok()?, cumulative);
            Some((outcome, tx_type, bloom, code, wiped))
        })
        .collect();
    let mut outcomes = Vec::with_capacity(parts.len());
    let mut types = Vec::with_capacity(parts.len());
    let mut blooms = Vec::with_capacity(parts.len());
    let mut code = Vec::new();
    let mut wiped = Vec::new();
    for (outcome, ty, bloom, c, w) in parts {
        outcomes.push(outcome);
        types.push(ty);
        blooms.push(bloom);
        code.extend(c);
        wiped.extend(w);
    }
    BlockOutput::build_parallel(outcomes, &types, blooms, move || diff(code, wiped))
}

/// Whether one sender sends more than `percent` % of an evenly spaced sample of the block
/// (a guess that only picks a path: a wrong one costs time, never a different result).
fn one_sender_dominates(txs: &[RecoveredTx], percent: u64) -> bool {
    const SAMPLE: usize = 128;
    let step = txs.len().div_ceil(SAMPLE).max(1);
    let mut senders: Vec<Address> = txs.iter().step_by(step).map(|t| t.sender).collect();
    senders.sort_unstable();
    let most = senders.chunk_by(|a, b| a == b).map(<[Address]>::len).max().unwrap_or(0);
    most as u64 * 100 > senders.len() as u64 * percent
}

/// The credit a lazy recipient's write amounts to: its balance grew and nothing else changed.
fn lazy_credit(lazy: Option<Address>, given: Option<Account>, loc: Loc, val: Val) -> Option<U256> {
    let (Loc::Account(address), Val::Account(Some(after)), Some(before)) = (loc, val, given) else {
        return None;
    };
    if Some(address) != lazy || after.nonce != before.nonce || after.code_hash != before.code_hash {
        return None;
    }
    after.balance.checked_sub(before.balance).filter(|c| !c.is_zero())
}

/// The logs bloom of a receipt, computed by the worker that executed the transaction (through
/// its memo of hashes, [`memo`]).
fn bloom_of(result: &Result<ExecutionResult, ExecError>) -> Option<Box<alloy_primitives::Bloom>> {
    match result {
        Ok(r) if r.is_success() && !r.logs().is_empty() => {
            Some(Box::new(memo::logs_bloom(r.logs())))
        }
        _ => None,
    }
}

fn internal(loc: &Loc) -> ExecError {
    ExecError::Evm {
        index: 0,
        reason: format!("internal: unresolved write at {loc:?} after the block finished"),
    }
}

/// A worker's EVM: [`crate::wasm::build_evm`]'s, with KECCAK256 hashing through the thread's
/// memo ([`memo::keccak256_instruction`]).
fn worker_evm<CTX: revm::context::ContextTr>(
    ctx: CTX,
    chain: &ChainSpec,
) -> crate::wasm::FarolEvm<CTX, CollisionInspector> {
    let mut evm = crate::wasm::build_evm(ctx, CollisionInspector, chain);
    evm.instruction.instruction_table_mut()[usize::from(revm::bytecode::opcode::KECCAK256)] =
        revm::interpreter::Instruction::new(memo::keccak256_instruction::<CTX>);
    evm
}

/// The revm instance of a worker, over its database `D`.
type WorkerEvm<D> = crate::wasm::FarolEvm<
    Context<revm::context::BlockEnv, TxEnv, revm::context::CfgEnv, D>,
    CollisionInspector,
>;

/// Runs the transaction `tx` builds with the beneficiary's fee set aside, and again with the
/// EIP-7610 inspector when the first run loaded an address that has storage in the parent
/// state (after `reset`, which clears what the first run recorded). Returns the result,
/// revm's state and the fee.
fn transact<D>(
    evm: &mut WorkerEvm<D>,
    tx: impl Fn() -> TxEnv,
    reset: impl FnOnce(),
) -> (Result<ExecutionResult, EVMError<ReadError>>, revm::state::EvmState, U256)
where
    D: Database<Error = ReadError> + StorageProbe,
{
    evm.ctx.set_tx(tx());
    let mut handler = LazyRewardHandler::new();
    let mut result: Result<ExecutionResult, EVMError<ReadError>> = handler.run(evm);
    let mut state = evm.finalize();
    if result.is_ok() {
        match needs_collision_check(&state, &evm.ctx.journaled_state.database) {
            Ok(false) => {}
            Ok(true) => {
                reset();
                evm.ctx.set_tx(tx());
                handler = LazyRewardHandler::new();
                result = handler.inspect_run(evm);
                state = evm.finalize();
            }
            Err(e) => result = Err(EVMError::Database(ReadError::State(e))),
        }
    }
    (result, state, handler.fee.get())
}

/// One worker: asks the scheduler for tasks until the block is done.
fn worker<S: StateView + ?Sized>(
    shared: &Shared<'_, S>,
    chain: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) {
    let db = WorkerDb {
        shared,
        idx: Cell::new(0),
        reads: RefCell::new(Vec::new()),
        lazy_given: Cell::new(None),
    };
    let ctx = Context::mainnet()
        .with_db(DbRef(&db))
        .with_cfg(chain.cfg())
        .with_block(env.revm(chain.spec));
    let mut evm = worker_evm(ctx, chain);
    let mut execute = |v: Version| -> Option<Task> {
        let idx = v.idx;
        if v.incarnation == 0 {
            if let Some(dep) = shared.hints[idx] {
                if shared.scheduler.add_dependency(idx, dep) {
                    shared.waits.fetch_add(1, Relaxed);
                    return None;
                }
            }
        }
        loop {
            db.idx.set(idx);
            db.reads.borrow_mut().clear();
            db.lazy_given.set(None);
            shared.executions.fetch_add(1, Relaxed);
            let (result, state, fee) = transact(
                &mut evm,
                || shared.tx_envs[idx].clone(),
                || {
                    db.reads.borrow_mut().clear();
                    db.lazy_given.set(None);
                },
            );
            let (result, entries, code, wiped) = match result {
                Err(EVMError::Database(ReadError::Blocked(blocking))) => {
                    shared.waits.fetch_add(1, Relaxed);
                    if shared.scheduler.add_dependency(idx, blocking) {
                        return None;
                    }
                    continue;
                }
                Err(e) => {
                    let e = exec_error(idx, e, |d| match d {
                        ReadError::State(s) => ExecError::State(s),
                        // Handled by the arm above; conflicts only arise in partitions.
                        ReadError::Blocked(_) | ReadError::Beneficiary => {
                            internal(&Loc::Account(shared.beneficiary))
                        }
                    });
                    (Err(e), Vec::new(), Vec::new(), Vec::new())
                }
                Ok(r) => {
                    let w = collect_writes(&state, shared.spec);
                    let ben = Loc::Account(shared.beneficiary);
                    let destroyed =
                        state.get(&shared.beneficiary).is_some_and(|a| a.is_selfdestructed());
                    let mut entries: Vec<(Loc, Entry, Option<Val>)> =
                        Vec::with_capacity(w.writes.len());
                    let mut wrote_beneficiary = false;
                    let mut wiped = w.wiped;
                    let parents = Parents::new(&db.reads.borrow());
                    for (loc, val) in w.writes {
                        if loc == ben {
                            wrote_beneficiary = true;
                            // Before Spurious Dragon revm marks a touched empty account that
                            // did not exist as created; sequential execution pays the fee
                            // first, so a transaction that touches the absent beneficiary and
                            // pays a fee leaves it existing, not created. With the fee set
                            // aside, it looked created here (found by stop 49's review).
                            if let Val::Account(Some(a)) = val {
                                let empty = a.balance.is_zero()
                                    && a.nonce == 0
                                    && a.code_hash == alloy_primitives::KECCAK256_EMPTY;
                                if !shared.state_clear && !destroyed && empty && !fee.is_zero() {
                                    wiped.retain(|w| *w != shared.beneficiary);
                                }
                            }
                            let val = match val {
                                Val::Account(a) if !destroyed => {
                                    Val::Account(credit(a, fee, shared.state_clear))
                                }
                                other => other,
                            };
                            entries.push((loc, Entry::Value(val), None));
                        } else if let Some(amount) =
                            lazy_credit(shared.lazy[idx], db.lazy_given.get(), loc, val)
                        {
                            entries.push((loc, Entry::Credit(amount), parents.get(&loc)));
                        } else {
                            if db.lazy_given.get().is_some()
                                && Some(loc) == shared.lazy[idx].map(Loc::Account)
                            {
                                // A lazy recipient written in full after all: its write rests on
                                // the balance read, so validate that balance too.
                                for read in db.reads.borrow_mut().iter_mut() {
                                    if read.0 == loc && read.2 == ReadKind::Meta {
                                        read.2 = ReadKind::Written;
                                    }
                                }
                            }
                            entries.push((loc, Entry::Value(val), parents.get(&loc)));
                        }
                    }
                    // A full write already holds its fee.
                    *shared.fees[idx].lock() =
                        Fee::Amount(if wrote_beneficiary { U256::ZERO } else { fee });
                    (Ok(r), entries, w.code, wiped)
                }
            };
            if result.is_err() {
                // No effect at all, so no fee: a reader of the beneficiary must not wait for
                // this transaction (an earlier abort left its fee an estimate).
                *shared.fees[idx].lock() = Fee::Pending;
            }
            for (hash, c) in &code {
                shared.base.insert_code(*hash, c.clone());
            }
            // Swap buffers so that both keep their allocations.
            std::mem::swap(&mut *shared.reads[idx].lock(), &mut *db.reads.borrow_mut());
            *shared.slots[idx].lock() = Some(TxSlot {
                bloom: bloom_of(&result),
                result,
                code,
                wiped,
                tx_type: txs[idx].tx.tx_type(),
            });
            let wrote_new = shared.mv.record(idx, entries);
            return shared.scheduler.finish_execution(v, wrote_new);
        }
    };
    let mut task = None;
    let mut idle = 0u32;
    while !shared.scheduler.done() && !shared.abandoned.load(Relaxed) {
        task = match task {
            Some(Task::Execute(v)) => execute(v),
            Some(Task::Validate(v)) => shared.validate(v),
            None => {
                let t = shared.scheduler.next_task();
                if t.is_none() {
                    // Nothing to do until another worker finishes: spin briefly, then let
                    // the core go (there may be more workers than cores).
                    idle += 1;
                    if idle < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                } else {
                    idle = 0;
                }
                t
            }
        };
    }
}
