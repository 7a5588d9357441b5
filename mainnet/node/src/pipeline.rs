//! The block pipeline: ordered batches from consensus are executed (parallel EVM/WASM), then
//! merklized and persisted (Farol Store, then the block log), as two threads working on
//! different blocks, joined by bounded queues: block N is stored while N+1 executes and
//! consensus orders N+2. A full queue makes the stage before it wait (backpressure reaches
//! consensus, whose commit channel is bounded too).
//!
//! Execution of block N reads the store at N−1 when it is there, or the newest stored
//! version with the diffs of the blocks executed since laid over it. BLOCKHASH of a block
//! not yet stored waits for it.
//!
//! With `pipelined` off (the benchmark's baseline), one thread executes a block and stores
//! it before it takes the next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use alloy_consensus::constants::{EMPTY_OMMER_ROOT_HASH, KECCAK_EMPTY};
use alloy_consensus::{Header, Transaction as _, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, Bytes, B256, B64, U256};
use farol_consensus::Committed;
use farol_execution::{
    execute_screened, execute_sequential, Account, BlockEnv, BlockOutput, ChainSpec, ExecError,
    ParallelConfig, ParallelExecutor, RecoveredTx, StateDiff, StateError, StateView, StoreState,
};
use farol_store::Store;
use parking_lot::Mutex;
use rayon::prelude::*;
use tokio::sync::{broadcast, mpsc};

use crate::chain::{Chain, Deferred, OrderingData, StoredBlock, SyncBlock};
use crate::genesis::Genesis;
use crate::metrics::Metrics;

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Stages run concurrently on different blocks (off: one block at a time).
    pub pipelined: bool,
    /// Executed blocks waiting to be stored before execution waits.
    pub queue: usize,
    /// Execution threads.
    pub threads: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { pipelined: true, queue: 4, threads: 2 }
    }
}

/// Why the pipeline stopped. The node cannot go on past such an error: it stops.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The state could not be read.
    #[error("block {number}: {source}")]
    Exec {
        /// The block.
        number: u64,
        /// The cause.
        source: ExecError,
    },
    /// The store failed.
    #[error("block {number}: store: {source}")]
    Store {
        /// The block.
        number: u64,
        /// The cause.
        source: farol_store::StoreError,
    },
    /// A block-final block received from peers does not execute to what validators holding
    /// more than two thirds of the stake signed: this node's execution differs from theirs.
    #[error("block {number}: execution differs from the certified block: {reason}")]
    Diverged {
        /// The block.
        number: u64,
        /// What differs.
        reason: String,
    },
    /// The state stored for a block before a crash (which came before the block's own
    /// write) is not what the block executes to now: another build's execution, or a damaged
    /// store. The node stops rather than build on it.
    #[error(
        "block {number}: the state stored for it before the restart is not what it executes \
         to: {reason}; this data directory's state cannot be used (start from a fresh one: \
         the node syncs the chain from its peers)"
    )]
    StoredStateDiffers {
        /// The block.
        number: u64,
        /// The two roots.
        reason: String,
    },
    /// The block log failed.
    #[error("block {number}: {source}")]
    Chain {
        /// The block.
        number: u64,
        /// The cause.
        source: crate::chain::ChainError,
    },
    /// The storing thread panicked (a bug): what it was storing may not be stored.
    #[error("the storing stage panicked")]
    StorerPanicked,
}

/// Closes the chain when the storing thread unwinds from a panic, as a failed store does:
/// the node reports itself failed, and execution waiting for a block that will never be
/// stored (`BLOCKHASH`, [`Chain::wait_hash`]) stops waiting.
struct CloseOnPanic(Arc<State>);

impl Drop for CloseOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.chain.close();
        }
    }
}

/// What the pipeline shares with RPC and the rest of the node.
pub struct State {
    /// The stored chain.
    pub chain: Arc<Chain>,
    /// The state.
    pub store: Arc<Store>,
    /// The genesis.
    pub genesis: Genesis,
    /// The execution rules.
    pub spec: ChainSpec,
    /// Who receives the priority fees of each validator's blocks (by committee position).
    pub fee_recipients: Vec<Address>,
    /// Transactions in a committed order, not yet in a stored block (ordering finality),
    /// with when they were ordered.
    pub ordered: Mutex<HashMap<B256, Instant>>,
    /// Transactions consensus ordered that execution dropped (wrong nonce, chain or sender,
    /// unaffordable, undecodable), with the reason; the newest 10,000.
    dropped: Mutex<Drops>,
    /// Dropped transactions the mempool has not yet forgotten (it drains this).
    pub unforgotten: Mutex<Vec<B256>>,
    /// Every stored block, as it is stored.
    pub blocks: broadcast::Sender<Arc<StoredBlock>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Senders this node already recovered (its mempool checked the signature), by
    /// transaction hash: execution takes them from here instead of recovering again
    /// ([`State::remember_sender`]).
    senders: Mutex<HashMap<B256, Address>>,
    /// When each transaction submitted to this node arrived (for the finality tier
    /// latencies); removed at block finality or when dropped.
    pub submitted: Mutex<HashMap<B256, Instant>>,
    /// What this node's consensus (if it is a validator) shows.
    pub validator: Arc<crate::validator::ValidatorStatus>,
    /// 16 random bytes this node chose when it started, `farol_status`'s `instance`: a node
    /// whose `sync.peers` names it under an address of this machine it cannot tell apart (a
    /// public one, a name) finds itself by asking (since stop 58).
    pub instance: String,
    /// Executed blocks not yet in the store: their numbers and diffs.
    pending: Mutex<Vec<(u64, Arc<StateDiff>)>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "State({:?})", self.chain)
    }
}

/// Most senders [`State::senders`] remembers. A transaction the pool accepted and that is
/// never ordered (dropped, replaced, evicted) leaves its entry behind; past this many the
/// map starts again empty, and what it held is recovered again when ordered.
const SENDERS_REMEMBERED: usize = 1 << 18;

impl State {
    /// Remembers the sender the mempool recovered for `hash`, so that execution does not
    /// recover it again. (Execution looked here from the start, but nothing was put here
    /// until stop 40: the validator a transaction was submitted to recovered its sender twice.)
    /// Whether it was not remembered before.
    pub fn remember_sender(&self, hash: B256, sender: Address) -> bool {
        let mut senders = self.senders.lock();
        if senders.len() >= SENDERS_REMEMBERED {
            senders.clear();
        }
        senders.insert(hash, sender).is_none()
    }

    /// Forgets the sender [`State::remember_sender`] remembered for `hash` (the pool refused
    /// the transaction after all).
    pub fn forget_sender(&self, hash: &B256) {
        self.senders.lock().remove(hash);
    }

    /// Shares `chain` and `store` (opened and at the same block, or the store one ahead).
    pub fn new(
        chain: Arc<Chain>,
        store: Arc<Store>,
        genesis: Genesis,
        fee_recipients: Vec<Address>,
        metrics: Arc<Metrics>,
    ) -> State {
        let spec = genesis.chain_spec();
        State {
            chain,
            store,
            genesis,
            spec,
            fee_recipients,
            ordered: Mutex::new(HashMap::new()),
            dropped: Mutex::new(Drops::default()),
            unforgotten: Mutex::new(Vec::new()),
            blocks: broadcast::channel(1024).0,
            metrics,
            submitted: Mutex::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            validator: Arc::default(),
            instance: {
                let bytes: [u8; 16] = rand::random();
                alloy_primitives::hex::encode_prefixed(bytes)
            },
            pending: Mutex::new(Vec::new()),
        }
    }

    /// A view of the state after block `number` (which must be stored or executed).
    pub fn view(self: &Arc<Self>, number: u64) -> Result<Overlay, StateError> {
        let store_err = |e: farol_store::StoreError| StateError::Store(e.to_string());
        // The storing stage applies block k to the store and then drops k's diff from
        // `pending` under this lock. Holding it across both reads means the snapshot and the
        // diffs meet: either k is in the store (and its diff, if still here, is skipped as
        // at or below the base), or its diff is still here. Reading the store's version
        // first, unlocked, could see k - 1 and then find k's diff gone.
        let pending = self.pending.lock();
        let latest = self.store.latest_version().unwrap_or(0);
        let base_version = latest.min(number);
        let base = StoreState::new(self.store.snapshot(base_version).map_err(store_err)?);
        let diffs = pending
            .iter()
            .filter(|(n, _)| *n > base_version && *n <= number)
            .map(|(_, d)| d.clone())
            .collect();
        Ok(Overlay {
            base,
            diffs,
            state: self.clone(),
            number,
            calls: false,
            hashes: Default::default(),
        })
    }

    fn drop_tx(&self, hash: B256, reason: String) {
        // A copy of a transaction the chain holds (ordered again by a faulty proposer past
        // the rounds consensus remembers) is not a drop of it; nor is one the index cannot
        // tell about (a page of it that cannot be read: it may be held; since stop 55, before
        // which it was recorded as dropped).
        if self.chain.has_transaction_checked(&hash).unwrap_or(true) {
            return;
        }
        tracing::debug!(%hash, %reason, "an ordered transaction is dropped");
        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        self.ordered.lock().remove(&hash);
        self.submitted.lock().remove(&hash);
        {
            let mut u = self.unforgotten.lock();
            if u.len() < 100_000 {
                u.push(hash);
            }
        }
        self.dropped.lock().push(hash, reason);
    }

    /// The newest drops, newest first.
    pub fn recent_drops(&self, n: usize) -> Vec<(B256, String)> {
        self.dropped.lock().by_seq.values().rev().take(n).cloned().collect()
    }

    /// Why transaction `hash` was dropped after it was ordered, if it was (among the newest
    /// 10,000 drops).
    pub fn drop_reason(&self, hash: &B256) -> Option<String> {
        let d = self.dropped.lock();
        let seq = d.by_hash.get(hash)?;
        d.by_seq.get(seq).map(|(_, r)| r.clone())
    }
}

/// The newest drops, in order and by hash.
#[derive(Default)]
struct Drops {
    by_seq: BTreeMap<u64, (B256, String)>,
    by_hash: HashMap<B256, u64>,
    next: u64,
}

impl Drops {
    const KEEP: usize = 10_000;

    fn push(&mut self, hash: B256, reason: String) {
        let seq = self.next;
        self.next += 1;
        self.by_seq.insert(seq, (hash, reason));
        self.by_hash.insert(hash, seq);
        while self.by_seq.len() > Drops::KEEP {
            if let Some((old, (h, _))) = self.by_seq.pop_first() {
                if self.by_hash.get(&h) == Some(&old) {
                    self.by_hash.remove(&h);
                }
            }
        }
    }
}

/// The state after a block: a store snapshot with the diffs of executed, not yet stored
/// blocks over it.
pub struct Overlay {
    base: StoreState,
    diffs: Vec<Arc<StateDiff>>,
    state: Arc<State>,
    /// The block the view is the state after.
    number: u64,
    /// For calls (RPC): hashes of blocks past `number` are not waited for (see `block_hash`).
    calls: bool,
    /// Hashes of blocks past `number` that calls may ask for (simulated blocks).
    hashes: std::collections::BTreeMap<u64, B256>,
}

impl Overlay {
    /// Lays `diff` over the view (state overrides of `eth_call`).
    pub fn push(&mut self, diff: StateDiff) {
        self.diffs.push(Arc::new(diff));
    }

    /// The changes of this view's diffs, folded in order, as Farol Store keys them: what
    /// [`Overlay::root_of`] lays over the stored version. `None` when the root they give
    /// could be wrong: a diff wiped an account that may have storage in the stored version
    /// (one with code or a nonce: storage is only ever written by code, and a contract
    /// account starts at nonce 1; a `state` override replacing its storage), and the store
    /// cannot enumerate that account's other slots. A block's own wipes never hit that case:
    /// since EIP-6780 only an account created in the same transaction is deleted, and
    /// creation needs no code, no nonce and no storage there.
    pub fn changes(&self) -> Result<Option<StoreChanges>, StateError> {
        let mut all = StateDiff::default();
        for d in &self.diffs {
            all.extend_with(d);
        }
        for address in &all.wiped {
            let before = self.base.account(*address)?;
            if before.is_some_and(|a| a.code_hash != KECCAK_EMPTY || a.nonce > 0) {
                return Ok(None);
            }
        }
        Ok(Some(all.store_changes()))
    }

    /// The Farol Store root of `changes` (this view's, [`Overlay::changes`]) over its stored
    /// version, computed without writing anything.
    pub fn root_of(&self, changes: StoreChanges) -> Result<B256, StateError> {
        self.base.root_with(changes)
    }

    /// How many diffs lie over the stored version (a view with as many as before, none
    /// pushed since, has the same root).
    pub fn layers(&self) -> usize {
        self.diffs.len()
    }

    /// The view for calls: BLOCKHASH of a block past the view's (a call whose block number
    /// is overridden ahead, a simulated block) is not waited for: it is the hash
    /// [`Overlay::set_block_hash`] gave, or zero, as geth answers for a block it does not
    /// have. Blocks do wait for their parents' hashes (a call's view is of a stored block,
    /// so its own and earlier blocks' hashes need no wait).
    pub fn for_calls(mut self) -> Self {
        self.calls = true;
        self
    }

    /// Block `number`'s hash for calls over this view (a simulated block's).
    pub fn set_block_hash(&mut self, number: u64, hash: B256) {
        self.hashes.insert(number, hash);
    }
}

impl StateView for Overlay {
    fn account(&self, address: Address) -> Result<Option<Account>, StateError> {
        for d in self.diffs.iter().rev() {
            if let Some(a) = d.accounts.get(&address) {
                return Ok(*a);
            }
        }
        self.base.account(address)
    }
    fn code(&self, code_hash: B256) -> Result<Bytes, StateError> {
        for d in self.diffs.iter().rev() {
            if let Some(c) = d.code.get(&code_hash) {
                return Ok(c.clone());
            }
        }
        self.base.code(code_hash)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, StateError> {
        for d in self.diffs.iter().rev() {
            if let Some(v) = d.storage.get(&address).and_then(|s| s.get(&slot)) {
                return Ok(*v);
            }
            if d.wiped.contains(&address) {
                return Ok(U256::ZERO);
            }
        }
        self.base.storage(address, slot)
    }
    fn block_hash(&self, number: u64) -> Result<B256, StateError> {
        if let Some(h) = self.hashes.get(&number) {
            return Ok(*h);
        }
        // A call's block past the view's has no hash yet. Before stop 46 a call also read
        // zero for a block whose place in blocks.idx could not be read; it fails now, as a
        // block's execution does.
        if self.calls && number > self.number {
            return Ok(B256::ZERO);
        }
        self.state.chain.wait_hash(number).ok_or_else(|| {
            StateError::Store(format!(
                "block {number}'s hash cannot be had (the chain closed without it, or its \
                     place in blocks.idx cannot be read)"
            ))
        })
    }
}

/// Changes as Farol Store takes them: `(key, Some(value))` sets, `(key, None)` deletes.
pub type StoreChanges = Vec<(B256, Option<Bytes>)>;

/// What the pipeline works on, in order.
#[derive(Debug)]
pub enum Work {
    /// A commit of this validator's consensus.
    Commit(Committed),
    /// A block-final block from peers (a node catching up, or a full node).
    Import(Box<Import>),
}

/// A block from peers, ready to be executed: its certificate (or a certified descendant's)
/// and its transactions root and ordering digest were checked, its senders recovered.
#[derive(Debug)]
pub struct Import {
    /// The block; its ordering data is present.
    pub block: SyncBlock,
    /// The transactions' senders.
    pub senders: Vec<Address>,
}

/// A block executed, waiting to be stored.
struct Executed {
    number: u64,
    env: BlockEnv,
    txs: Vec<RecoveredTx>,
    output: BlockOutput,
    diff: Arc<StateDiff>,
    ordered_at: Instant,
    executed_at: Instant,
    ordering: OrderingData,
    /// The hash the block must have (imported blocks).
    expect: Option<B256>,
}

impl Executed {
    /// Block `env.number`, executed since `started` (counted in the metrics).
    fn new(
        state: &State,
        env: BlockEnv,
        txs: Vec<RecoveredTx>,
        output: BlockOutput,
        started: Instant,
        ordering: OrderingData,
        expect: Option<B256>,
    ) -> Executed {
        let executed_at = Instant::now();
        let micros = executed_at.duration_since(started).as_micros() as u64;
        state.metrics.exec_micros.fetch_add(micros, Ordering::Relaxed);
        let diff = Arc::new(output.diff.clone());
        Executed {
            number: env.number,
            env,
            txs,
            output,
            diff,
            ordered_at: started,
            executed_at,
            ordering,
            expect,
        }
    }
}

/// Ordered transactions whose nonce is ahead of their sender's wait at most this many
/// commits for the missing ones.
const DEFER_COMMITS: u64 = 256;
/// At most this many wait at once.
const MAX_DEFERRED: usize = 20_000;
/// At most this many bytes of them (their EIP-2718 encodings) wait at once. The waiting set is
/// held in memory and stored with the last block of every group; before stop 37 only its
/// count was bounded, so one faulty validator proposing large transactions with nonce gaps
/// (from throwaway keys: waiting costs nothing) could make every validator hold up to 20,000
/// of 128 KiB, 2.5 GiB, and write them into every block that ends a group.
const MAX_DEFERRED_BYTES: usize = 1 << 20;

/// The transactions waiting for an earlier nonce, by sender and nonce, with the commit
/// height they were ordered at.
type Waiting = BTreeMap<(Address, u64), (u64, RecoveredTx)>;

/// A group of commits ends, at the latest, with the first commit this much consensus time
/// (the commits' `timestamp_ms`) after the group's first: under load the chain makes about
/// 1000 / `GROUP_WINDOW_MS` blocks a second, whatever the commit rate.
pub const GROUP_WINDOW_MS: u64 = 50;

/// A commit without transactions ends a group that carries some only once the group spans
/// this much consensus time, or [`GROUP_BLOCK_ROUNDS`] rounds passed since the chain's last
/// block. Before stop 28 it ended the group at once: at a third of the saturated load most
/// commits carry none, and the chain made about 50 blocks a second, more than four
/// validators' pipelines on two cores kept up with (docs/node.md §6).
pub const GROUP_QUIET_MS: u64 = 40;

/// See [`GROUP_QUIET_MS`]: a transaction that comes this many rounds or more after the last
/// block (a quiet chain, a light load) waits for no window; under load about 50 ms.
pub const GROUP_BLOCK_ROUNDS: u64 = 12;

/// A commit in a group: with its decoded transactions and when it reached the pipeline.
type GroupedCommit = (Committed, Vec<RecoveredTx>, Instant);

/// Consecutive commits that become one block (several, past the gas limit). Where a group
/// ends depends only on the commits, so every validator forms the same groups.
#[derive(Default)]
struct Group {
    commits: Vec<GroupedCommit>,
    /// The gas limits of its transactions, summed.
    gas: u64,
}

impl Group {
    /// Adds the next commit; true when the group ends with it: the commit carries no
    /// transactions and the group carries none either, or spans [`GROUP_QUIET_MS`], or the
    /// commit's round is [`GROUP_BLOCK_ROUNDS`] or more past `base_round` (the round of the
    /// chain's last block, which every validator has the same); or the commit carries a
    /// consensus checkpoint (its block certifies it), or comes [`GROUP_WINDOW_MS`] or more
    /// after the group's first commit, or the group's transactions reach the block gas limit.
    fn push(
        &mut self,
        c: Committed,
        txs: Vec<RecoveredTx>,
        arrived: Instant,
        gas_limit: u64,
        base_round: u64,
    ) -> bool {
        let start = self.commits.first().map_or(c.timestamp_ms, |f| f.0.timestamp_ms);
        let span = c.timestamp_ms.saturating_sub(start);
        self.gas = txs.iter().fold(self.gas, |g, t| g.saturating_add(t.tx.gas_limit()));
        let carries = self.commits.iter().any(|m| !m.0.transactions.is_empty());
        let quiet_end = c.transactions.is_empty()
            && (!carries
                || span >= GROUP_QUIET_MS
                || c.round >= base_round.saturating_add(GROUP_BLOCK_ROUNDS));
        let ends =
            quiet_end || c.checkpoint.is_some() || span >= GROUP_WINDOW_MS || self.gas >= gas_limit;
        self.commits.push((c, txs, arrived));
        ends
    }

    /// Whether commit `height` is in the group already.
    fn holds(&self, height: u64) -> bool {
        self.commits.last().is_some_and(|l| height <= l.0.height)
    }
}

/// A group whose first blocks are stored already (a restart, or an import, in its middle):
/// when the group that starts at commit `first` ends, its first `skip` blocks are not made
/// again; the group's first block follows block `before`.
struct Resume {
    first: u64,
    skip: usize,
    before: u64,
}

/// The waiting set a block's ordering data records.
fn waiting_of(deferred: &[Deferred]) -> Waiting {
    deferred
        .iter()
        .map(|d| {
            let t = RecoveredTx { tx: d.tx.clone(), sender: d.sender };
            ((d.sender, d.tx.nonce()), (d.since, t))
        })
        .collect()
}

/// Starts the pipeline on `work`. It returns when `work` closes or a stage fails.
pub fn spawn(
    state: Arc<State>,
    commits: mpsc::Receiver<Work>,
    cfg: PipelineConfig,
) -> std::thread::JoinHandle<Result<(), PipelineError>> {
    std::thread::Builder::new()
        .name("farol-execute".into())
        .spawn(move || run(state, commits, cfg))
        .unwrap_or_else(|e| panic!("cannot start the execution thread: {e}"))
}

fn run(
    state: Arc<State>,
    mut commits: mpsc::Receiver<Work>,
    cfg: PipelineConfig,
) -> Result<(), PipelineError> {
    let executor =
        ParallelExecutor::new(ParallelConfig { threads: cfg.threads, ..Default::default() });
    let (to_store, stored) = std::sync::mpsc::sync_channel::<Executed>(cfg.queue.max(1));
    let storer = if cfg.pipelined {
        let st = state.clone();
        Some(
            std::thread::Builder::new()
                .name("farol-store".into())
                .spawn(move || {
                    let _closes = CloseOnPanic(st.clone());
                    while let Ok(e) = stored.recv() {
                        if let Err(err) = store_block(&st, e) {
                            st.chain.close();
                            return Err(err);
                        }
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("cannot start the storing thread: {e}")),
        )
    } else {
        None
    };
    // Where to resume: after the last stored block; a group of commits whose last block was
    // not stored (a crash between its blocks) is formed and processed again, without the
    // blocks stored.
    let head = state.chain.head();
    let mut base = head.clone();
    // A block of the walk that cannot be read back is an error: resuming from the middle of
    // a group would form other blocks than the other validators (before stop 39 the walk
    // stopped there). Genesis ends a group, so the walk ends by block 0.
    while !base.ordering.last_in_group && base.number() > 0 {
        let number = base.number() - 1;
        let unreadable = crate::chain::ChainError::Unreadable { number };
        base =
            state.chain.block(number).ok_or(PipelineError::Chain { number, source: unreadable })?;
    }
    // The state before the group is read again when the group resumes: kept however many
    // blocks the group makes (the storing stage moves this on at each group's last block).
    state.store.keep_from(Some(base.number()));
    let mut waiting = waiting_of(&base.ordering.deferred);
    let mut moved = Moved::Any;
    // The round of the chain's last block that ends a group (the group rule's reference).
    let mut base_round = base.ordering.round;
    let o = &head.ordering;
    let (mut last_height, mut resume) = if o.last_in_group {
        (o.height, None)
    } else {
        let skip = o.chunk as usize + 1;
        (o.first.saturating_sub(1), Some(Resume { first: o.first, skip, before: base.number() }))
    };
    let mut next = head.number() + 1;
    let mut last_timestamp = head.header.timestamp;
    let mut group = Group::default();
    // Commits of an open group, taken back when an imported block moved the ordering on.
    let mut again: VecDeque<GroupedCommit> = VecDeque::new();
    // The transactions of the open group's blocks imported so far.
    let mut imported_in_group: HashSet<B256> = HashSet::new();
    let result = (|| {
        loop {
            let (c, decoded, arrived) = match again.pop_front() {
                Some(x) => x,
                None => match commits.blocking_recv() {
                    None => break,
                    Some(Work::Commit(c)) => {
                        state.metrics.ordered_height.store(c.height, Ordering::Relaxed);
                        // A restarted validator replays its commits from height 1.
                        if c.height <= last_height || group.holds(c.height) {
                            continue;
                        }
                        let decoded = decode(&state, &c);
                        (c, decoded, Instant::now())
                    }
                    Some(Work::Import(import)) => {
                        let number = import.block.header.number;
                        // Blocks this node already executed (from its own commits) are
                        // skipped; the syncing task sends the others in order.
                        if number != next {
                            if number > next {
                                tracing::warn!(number, next, "an imported block does not follow");
                            }
                            continue;
                        }
                        let Some(ord) = import.block.ordering.clone() else { continue };
                        let e = import_block(&state, &executor, *import)?;
                        moved = Moved::Any;
                        state.metrics.ordered_height.store(ord.height, Ordering::Relaxed);
                        // The ordering resumes after the imported block as after one of ours.
                        if ord.last_in_group {
                            last_height = ord.height;
                            base_round = ord.round;
                            resume = None;
                            let before = std::mem::replace(&mut waiting, waiting_of(&ord.deferred));
                            // What waited here and waits no more, and is not in the block nor
                            // in an earlier block of its group imported here, the certified
                            // ordering dropped. (Before stop 48 the earlier blocks were left
                            // out, and a transaction in one of them still in the storing
                            // queue, where `drop_tx` does not find it yet, was reported
                            // dropped although it was included.)
                            let mut kept = std::mem::take(&mut imported_in_group);
                            kept.extend(
                                e.txs
                                    .iter()
                                    .chain(waiting.values().map(|(_, t)| t))
                                    .map(|t| *t.tx.tx_hash()),
                            );
                            for (_, t) in before.values() {
                                if !kept.contains(t.tx.tx_hash()) {
                                    state.drop_tx(
                                        *t.tx.tx_hash(),
                                        "left out by the certified block imported".into(),
                                    );
                                }
                            }
                        } else {
                            last_height = ord.first.saturating_sub(1);
                            let skip = ord.chunk as usize + 1;
                            // The block before the group's first: the one before this block
                            // unless an earlier block of the group came before it. Not
                            // `number - skip`: a chunk whose transactions were all dropped
                            // made no block (before stop 38 that read the wrong state).
                            let before = match &resume {
                                Some(r) if r.first == ord.first => r.before,
                                _ => number - 1,
                            };
                            resume = Some(Resume { first: ord.first, skip, before });
                            imported_in_group.extend(e.txs.iter().map(|t| *t.tx.tx_hash()));
                        }
                        last_timestamp = e.env.timestamp;
                        next += 1;
                        if !hand_over(&state, &to_store, cfg.pipelined, e)? {
                            return Ok(());
                        }
                        // Commits gathered before the import that it does not cover form
                        // their group again, from the commit after it. Those it covers are
                        // done: their transactions are in its blocks (stored, they leave
                        // `ordered`), or were dropped by the ordering it certifies, which
                        // this node no longer computes: they leave `ordered` here.
                        let held = std::mem::take(&mut group).commits;
                        let (covered, rest): (Vec<_>, Vec<_>) =
                            held.into_iter().partition(|g| g.0.height <= last_height);
                        {
                            let mut ordered = state.ordered.lock();
                            for (_, txs, _) in &covered {
                                for t in txs {
                                    ordered.remove(t.tx.tx_hash());
                                }
                            }
                        }
                        again.extend(rest);
                        continue;
                    }
                },
            };
            if c.height <= last_height || group.holds(c.height) {
                continue;
            }
            if !group.push(c, decoded, arrived, state.genesis.gas_limit, base_round) {
                continue;
            }
            let Group { commits: members, .. } = std::mem::take(&mut group);
            let Some((first_height, ordered_at)) = members.first().map(|m| (m.0.height, m.2))
            else {
                continue;
            };
            let carries = members.iter().any(|m| !m.0.transactions.is_empty());
            // The group's transactions in commit order, and its last commit.
            let mut decoded: Vec<RecoveredTx> = Vec::new();
            let mut last = None;
            for (commit, txs, _) in members {
                decoded.extend(txs);
                last = Some(commit);
            }
            let Some(c) = last else { continue };
            last_height = c.height;
            // A group without transactions makes a block only when a new second began since
            // the last block: an idle chain still moves (about one block a second), which
            // clients that wait for the next block (ethers' `wait`) rely on.
            // A group that ends with a consensus checkpoint always makes one: the block-final
            // header certifies the checkpoint for validators that rejoin from it.
            if !carries && c.checkpoint.is_none() && c.timestamp_ms / 1000 <= last_timestamp {
                continue;
            }
            base_round = c.round;
            imported_in_group.clear();
            let (skip, before) = match resume.take() {
                Some(r) if r.first == first_height => (r.skip, r.before),
                _ => (0, next - 1),
            };
            let view = state
                .view(before)
                .map_err(|e| PipelineError::Exec { number: next, source: ExecError::State(e) })?;
            let txs = order(&state, &view, c.height, decoded, &mut waiting, &moved)
                .map_err(|e| PipelineError::Exec { number: next, source: ExecError::State(e) })?;
            drop(view);
            // Blocks stored before a restart are not executed here: their changes are not
            // known.
            moved = if skip > 0 { Moved::Any } else { Moved::none() };
            let timestamp = last_timestamp.max(c.timestamp_ms / 1000);
            last_timestamp = timestamp;
            let beneficiary =
                state.fee_recipients.get(usize::from(c.leader.0)).copied().unwrap_or_default();
            // Blocks are cut at the gas limit: one group can make several blocks. The last
            // is made even if empty: it records the transactions left waiting.
            let mut chunks = Vec::new();
            let mut rest = txs.as_slice();
            while !rest.is_empty() {
                let mut gas = 0u64;
                let take = rest
                    .iter()
                    .take_while(|t| {
                        gas = gas.saturating_add(t.tx.gas_limit());
                        gas <= state.genesis.gas_limit
                    })
                    .count()
                    .max(1);
                let (chunk, tail) = rest.split_at(take);
                chunks.push(chunk);
                rest = tail;
            }
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            let count = chunks.len();
            for (i, chunk) in chunks.into_iter().enumerate() {
                if i < skip {
                    // Stored already (imported, or before a restart): its transactions are
                    // not ordered-and-waiting any more, even those decoded after it was
                    // stored (which its storing could not clear).
                    let mut ordered = state.ordered.lock();
                    for t in chunk {
                        ordered.remove(t.tx.tx_hash());
                    }
                    continue;
                }
                let last = i + 1 == count;
                let env = BlockEnv {
                    number: next,
                    timestamp,
                    beneficiary,
                    base_fee: state.genesis.base_fee,
                    gas_limit: state.genesis.gas_limit,
                    prevrandao: B256::from(c.leader_digest),
                    difficulty: U256::ZERO,
                    excess_blob_gas: Some(0),
                };
                let e = execute(&state, &executor, env, chunk.to_vec(), c.height, c.round, last)?;
                let Some(mut e) = e else { continue };
                moved.note(&e.diff, &waiting);
                e.ordered_at = ordered_at;
                e.ordering.first = first_height;
                e.ordering.chunk = i as u32;
                e.ordering.last_in_group = last;
                if last {
                    e.ordering.checkpoint = c.checkpoint.map(B256::from);
                    e.ordering.deferred = waiting
                        .values()
                        .map(|(since, t)| Deferred {
                            since: *since,
                            sender: t.sender,
                            tx: t.tx.clone(),
                        })
                        .collect();
                }
                next += 1;
                if !hand_over(&state, &to_store, cfg.pipelined, e)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    })();
    drop(to_store);
    let stored = match storer {
        // A panic is an error (before stop 48 it read as a clean stop, and the chain stayed
        // open: the node served a chain that no longer moved and reported itself healthy).
        Some(h) => h.join().unwrap_or(Err(PipelineError::StorerPanicked)),
        None => Ok(()),
    };
    result.and(stored)
}

/// Hands an executed block to the storing stage (pipelined) or stores it. False when the
/// storing stage is gone.
fn hand_over(
    state: &Arc<State>,
    to_store: &std::sync::mpsc::SyncSender<Executed>,
    pipelined: bool,
    e: Executed,
) -> Result<bool, PipelineError> {
    state.pending.lock().push((e.number, e.diff.clone()));
    state.metrics.executed.store(e.number, Ordering::Relaxed);
    if pipelined {
        state.metrics.store_queue.fetch_add(1, Ordering::Relaxed);
        return Ok(to_store.send(e).is_ok());
    }
    store_block(state, e)?;
    Ok(true)
}

/// Decodes and pre-checks a commit's transactions, in order. What fails is dropped: an
/// undecodable payload, a sender that is not the one consensus was told, a wrong chain id,
/// a nonce that is not the sender's next. The same commit gives the same list everywhere.
fn decode(state: &Arc<State>, c: &Committed) -> Vec<RecoveredTx> {
    let chain_id = state.spec.chain_id;
    let decoded: Vec<Result<RecoveredTx, (Option<B256>, String)>> = c
        .transactions
        .par_iter()
        .map(|t| {
            let mut buf = &t.payload[..];
            let tx = TxEnvelope::decode_2718(&mut buf).map_err(|e| (None, e.to_string()))?;
            let hash = *tx.tx_hash();
            // Trailing bytes, or a sender other than the signer (below), are a faulty
            // proposer's wrapping of a transaction, not the transaction: skipped and counted
            // as undecodable, not recorded as a drop of the transaction's hash, which may
            // be ordered unwrapped too (before stop 41 the real one then read as dropped, and
            // every pool forgot it).
            if !buf.is_empty() {
                return Err((None, "trailing bytes".into()));
            }
            // The hash covers the signature: a sender recovered here before is this one.
            let known = state.senders.lock().remove(&hash);
            let sender = match known {
                Some(s) => {
                    state.metrics.senders_reused.fetch_add(1, Ordering::Relaxed);
                    s
                }
                None => farol_execution::recover_sender(&tx).map_err(|e| (Some(hash), e))?,
            };
            if sender.as_slice() != t.sender {
                return Err((None, "sender differs from the one forwarded".into()));
            }
            // A legacy transaction without a chain id (not replay-protected) is valid on
            // every chain, as in Ethereum; only pools refuse it unless told otherwise
            // (`mempool.allow_unprotected_txs`). Before stop 51 blocks dropped it too.
            if tx.chain_id().is_some_and(|id| id != chain_id) {
                return Err((Some(hash), format!("chain id {:?}, want {chain_id}", tx.chain_id())));
            }
            Ok(RecoveredTx { tx, sender })
        })
        .collect();
    {
        let mut ordered = state.ordered.lock();
        let submitted = state.submitted.lock();
        let now = Instant::now();
        for t in decoded.iter().flatten() {
            ordered.insert(*t.tx.tx_hash(), now);
            if let Some(at) = submitted.get(t.tx.tx_hash()) {
                state.metrics.ordered_latency.record(now.duration_since(*at));
            }
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for d in decoded {
        match d {
            Ok(t) => out.push(t),
            Err((Some(h), why)) => state.drop_tx(h, why),
            Err((None, _)) => {
                state.metrics.undecodable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    out
}

/// The waiting senders whose nonce may have moved since [`order`] last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Moved {
    /// Any of them: nothing is known since (a start, an import, blocks stored before a
    /// restart).
    Any,
    /// Only these: the waiting senders that the blocks executed since changed.
    Only(BTreeSet<Address>),
}

impl Moved {
    /// Nothing moved yet.
    fn none() -> Moved {
        Moved::Only(BTreeSet::new())
    }

    /// Adds the waiting senders that `diff` changes.
    fn note(&mut self, diff: &StateDiff, waiting: &Waiting) {
        let Moved::Only(senders) = self else { return };
        let mut last = None;
        for (sender, _) in waiting.keys() {
            if last != Some(*sender) && diff.accounts.contains_key(sender) {
                senders.insert(*sender);
            }
            last = Some(*sender);
        }
    }

    fn holds(&self, sender: &Address) -> bool {
        match self {
            Moved::Any => true,
            Moved::Only(senders) => senders.contains(sender),
        }
    }
}

/// Puts a commit's transactions in execution order: each sender's transactions must follow
/// on from its nonce (after `view`); one whose nonce is ahead waits in `waiting` (at most
/// [`DEFER_COMMITS`] commits) and joins the commit that brings the missing nonces, right
/// after them. A nonce already used is dropped. Deterministic: the same commits give the
/// same order everywhere.
///
/// First, a waiting transaction whose sender's nonce (in `view`) reached it without a
/// transaction of the sender's (another's transaction carried the sender's EIP-7702
/// authorization, or its delegated code ran CREATE) leads the order, with the sender's
/// waiting nonces after it; those below that nonce are dropped as used. Only the senders
/// `moved` names are read: a waiting sender that no block changed since the last call still
/// has the nonce that call saw, below every nonce it has waiting, so reading every waiting
/// sender (after a restart) gives the same order. Before stop 46 such a transaction waited
/// its [`DEFER_COMMITS`] commits and was dropped, with every later one of its sender.
fn order(
    state: &Arc<State>,
    view: &Overlay,
    height: u64,
    txs: Vec<RecoveredTx>,
    waiting: &mut Waiting,
    moved: &Moved,
) -> Result<Vec<RecoveredTx>, StateError> {
    let mut expected: HashMap<Address, u64> = HashMap::new();
    let mut out = Vec::with_capacity(txs.len());
    let size = |t: &RecoveredTx| t.tx.encode_2718_len();
    let mut bytes: usize = waiting.values().map(|(_, t)| size(t)).sum();
    let mut senders: Vec<Address> = waiting.keys().map(|(s, _)| *s).collect();
    senders.dedup();
    for sender in senders.into_iter().filter(|s| moved.holds(s)) {
        let mut e = view.account(sender)?.map(|a| a.nonce).unwrap_or(0);
        while let Some((_, w)) = waiting.remove(&(sender, e)) {
            bytes -= size(&w);
            out.push(w);
            e += 1;
        }
        expected.insert(sender, e);
    }
    for t in txs {
        let sender = t.sender;
        let exp = match expected.get(&sender) {
            Some(n) => *n,
            None => {
                let n = view.account(sender)?.map(|a| a.nonce).unwrap_or(0);
                expected.insert(sender, n);
                n
            }
        };
        let nonce = t.tx.nonce();
        if nonce == exp {
            out.push(t);
            let mut e = exp + 1;
            while let Some((_, w)) = waiting.remove(&(sender, e)) {
                bytes -= size(&w);
                out.push(w);
                e += 1;
            }
            expected.insert(sender, e);
        } else if nonce > exp {
            if let Some((_, w)) = waiting.get(&(sender, nonce)) {
                // The same transaction again (a faulty proposer's copy) is no rival.
                if w.tx.tx_hash() == t.tx.tx_hash() {
                    continue;
                }
                state.drop_tx(
                    *t.tx.tx_hash(),
                    format!("another transaction with nonce {nonce} waits"),
                );
            } else if waiting.len() >= MAX_DEFERRED || bytes + size(&t) > MAX_DEFERRED_BYTES {
                state.drop_tx(
                    *t.tx.tx_hash(),
                    "too many transactions wait for earlier nonces".into(),
                );
            } else {
                bytes += size(&t);
                waiting.insert((sender, nonce), (height, t));
            }
        } else {
            state.drop_tx(*t.tx.tx_hash(), format!("nonce {nonce}, want {exp}"));
        }
    }
    waiting.retain(|(sender, nonce), (since, t)| {
        let used = expected.get(sender).is_some_and(|e| nonce < e);
        let expired = height.saturating_sub(*since) > DEFER_COMMITS;
        if used {
            state
                .drop_tx(*t.tx.tx_hash(), format!("nonce {nonce} was used by another transaction"));
        } else if expired {
            state.drop_tx(
                *t.tx.tx_hash(),
                format!("nonce gap not filled within {DEFER_COMMITS} commits"),
            );
        }
        !used && !expired
    });
    Ok(out)
}

/// Executes `txs` as block `env.number`, dropping the transactions that turn out invalid.
/// Returns nothing when none is left, unless `always` (the last block of a commit).
fn execute(
    state: &Arc<State>,
    executor: &ParallelExecutor,
    env: BlockEnv,
    mut txs: Vec<RecoveredTx>,
    committed_height: u64,
    round: u64,
    always: bool,
) -> Result<Option<Executed>, PipelineError> {
    let number = env.number;
    let view = state
        .view(number - 1)
        .map_err(|e| PipelineError::Exec { number, source: ExecError::State(e) })?;
    let started = Instant::now();
    if txs.is_empty() && !always {
        return Ok(None);
    }
    let output = match execute_here(executor, &view, &state.spec, &env, &txs) {
        Ok(output) => output,
        // Only what is wrong with a transaction itself drops it: every validator finds the
        // same. One sequential run over the block finds every transaction to drop and
        // executes the others (a run per invalid transaction would let a block of many make
        // every validator run it that many times). A fault of this node (`ExecError::Evm`,
        // see `execute_here`) stops here.
        Err(
            ExecError::InvalidTransaction { index, .. }
            | ExecError::BadSignature { index, .. }
            | ExecError::BlockGasLimit { index, .. },
        ) if index < txs.len() => {
            let screened = retry_node_faults(
                number,
                execute_screened(&view, &state.spec, &env, &txs),
                || execute_screened(&view, &state.spec, &env, &txs),
                std::thread::sleep,
            );
            let (output, left_out) =
                screened.map_err(|source| PipelineError::Exec { number, source })?;
            let mut dropped = left_out.into_iter().peekable();
            let mut i = 0;
            txs.retain(|t| {
                let gone = dropped.next_if(|(at, _)| *at == i);
                i += 1;
                match gone {
                    Some((_, reason)) => {
                        state.drop_tx(*t.tx.tx_hash(), reason);
                        false
                    }
                    None => true,
                }
            });
            if txs.is_empty() && !always {
                return Ok(None);
            }
            output
        }
        Err(source) => return Err(PipelineError::Exec { number, source }),
    };
    let ordering = OrderingData {
        round,
        first: committed_height,
        height: committed_height,
        chunk: 0,
        last_in_group: false,
        deferred: Vec::new(),
        checkpoint: None,
    };
    Ok(Some(Executed::new(state, env, txs, output, started, ordering, None)))
}

/// Times a block is run again after a fault of this node before the pipeline stops.
const NODE_FAULT_RETRIES: u32 = 4;

/// Executes a block on the parallel executor. revm's fatal errors (`ExecError::Evm`: this
/// node out of memory or of WASM instances, which RPC calls share, or a fault of the
/// parallel executor) are not properties of the block, and dropping a transaction for one
/// would make this node's block differ from every other validator's. Such a block runs
/// again on the sequential reference (the same result by construction), and then again after
/// growing pauses; the error is returned only if it persists.
fn execute_here(
    executor: &ParallelExecutor,
    view: &Overlay,
    spec: &ChainSpec,
    env: &BlockEnv,
    txs: &[RecoveredTx],
) -> Result<BlockOutput, ExecError> {
    let first = executor.execute(view, spec, env, txs).map(|(output, _)| output);
    retry_node_faults(
        env.number,
        first,
        || execute_sequential(view, spec, env, txs),
        std::thread::sleep,
    )
}

/// `first`, or while it is a fault of this node (`ExecError::Evm`) the result of `again`,
/// run at most [`NODE_FAULT_RETRIES`] times: at once, then after pauses of 200, 400 and
/// 800 ms (`pause`). Any other error, and the last fault, are returned as they are.
fn retry_node_faults<T>(
    number: u64,
    first: Result<T, ExecError>,
    mut again: impl FnMut() -> Result<T, ExecError>,
    mut pause: impl FnMut(std::time::Duration),
) -> Result<T, ExecError> {
    let mut result = first;
    let mut attempt = 0;
    while let Err(ExecError::Evm { reason, .. }) = &result {
        if attempt == NODE_FAULT_RETRIES {
            tracing::error!(number, %reason, "the block cannot be executed on this node");
            break;
        }
        tracing::warn!(number, attempt, %reason, "executing the block failed on this node; running it again");
        if attempt > 0 {
            pause(std::time::Duration::from_millis(100 << attempt));
        }
        attempt += 1;
        result = again();
    }
    result
}

/// Executes a block-final block from peers as it was executed by those who signed it: its
/// header gives the environment; every transaction must be valid and the receipts, gas and
/// bloom must be the header's (the state root is checked when the block is stored).
/// The environment the block with header `h` was executed in (`base_fee` where the header
/// has none).
pub(crate) fn header_env(h: &Header, base_fee: u64) -> BlockEnv {
    BlockEnv {
        number: h.number,
        timestamp: h.timestamp,
        beneficiary: h.beneficiary,
        base_fee: h.base_fee_per_gas.unwrap_or(base_fee),
        gas_limit: h.gas_limit,
        prevrandao: h.mix_hash,
        difficulty: h.difficulty,
        excess_blob_gas: Some(h.excess_blob_gas.unwrap_or(0)),
    }
}

fn import_block(
    state: &Arc<State>,
    executor: &ParallelExecutor,
    import: Import,
) -> Result<Executed, PipelineError> {
    let Import { block, senders } = import;
    let h = &block.header;
    let number = h.number;
    let diverged = |reason: String| PipelineError::Diverged { number, reason };
    let ord = block.ordering.ok_or_else(|| diverged("no ordering data".into()))?;
    if senders.len() != block.txs.len() {
        return Err(diverged("a sender is missing".into()));
    }
    let env = header_env(h, state.genesis.base_fee);
    let txs: Vec<RecoveredTx> =
        block.txs.into_iter().zip(senders).map(|(tx, sender)| RecoveredTx { tx, sender }).collect();
    let started = Instant::now();
    let view = state
        .view(number - 1)
        .map_err(|e| PipelineError::Exec { number, source: ExecError::State(e) })?;
    let output = match execute_here(executor, &view, &state.spec, &env, &txs) {
        Ok(output) => output,
        // This node's fault, not a difference from the certified block.
        Err(e @ (ExecError::State(_) | ExecError::Evm { .. })) => {
            return Err(PipelineError::Exec { number, source: e })
        }
        Err(e) => return Err(diverged(e.to_string())),
    };
    drop(view);
    if output.receipts_root != h.receipts_root {
        return Err(diverged(format!(
            "receipts root {}, certified {}",
            output.receipts_root, h.receipts_root
        )));
    }
    if output.gas_used != h.gas_used || output.logs_bloom != h.logs_bloom {
        return Err(diverged(format!("gas used {}, certified {}", output.gas_used, h.gas_used)));
    }
    Ok(Executed::new(state, env, txs, output, started, ord, Some(block.hash)))
}

/// Merklizes and persists an executed block, then publishes it.
fn store_block(state: &Arc<State>, e: Executed) -> Result<(), PipelineError> {
    let number = e.number;
    let started = Instant::now();
    let parent = state.chain.head();
    let (txs, senders): (Vec<TxEnvelope>, Vec<Address>) =
        e.txs.into_iter().map(|t| (t.tx, t.sender)).unzip();
    let ordering = e.ordering;
    let transactions_root = alloy_consensus::proofs::calculate_transaction_root(&txs);
    let header_with = |state_root: B256| Header {
        parent_hash: parent.hash,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: e.env.beneficiary,
        state_root,
        transactions_root,
        receipts_root: e.output.receipts_root,
        logs_bloom: e.output.logs_bloom,
        difficulty: U256::ZERO,
        number,
        gas_limit: e.env.gas_limit,
        gas_used: e.output.gas_used,
        timestamp: e.env.timestamp,
        extra_data: Bytes::copy_from_slice(ordering.digest().as_slice()),
        mix_hash: e.env.prevrandao,
        nonce: B64::ZERO,
        base_fee_per_gas: Some(e.env.base_fee),
        ..crate::chain::fixed_header_fields()
    };
    let merkle_from = Instant::now();
    let stored = match state.store.latest_version() {
        // Stored before a crash that came before the block log write: the same block, the
        // same diff (execution is deterministic; an imported block's version is written
        // only once its hash is the certified one, below). Checked, not assumed (since stop
        // 42): the root this block's diff gives over the version before must be the stored
        // one, or the stored version is not this block's state (another build's execution,
        // a damaged store) and the node stops rather than build on it.
        Some(v) if v >= number => {
            let check = state.store.root(number).and_then(|stored| {
                let want = state.store.root_with(number - 1, e.diff.store_changes())?;
                Ok((stored, want))
            });
            match check {
                Ok((stored, want)) if stored != want => {
                    state.chain.close();
                    return Err(PipelineError::StoredStateDiffers {
                        number,
                        reason: format!("stored root {stored}, executed root {want}"),
                    });
                }
                checked => checked.map(|(root, _)| (root, true)),
            }
        }
        // A block from peers: its version is written only if it gives the certified hash.
        // Before stop 37 it was written first, so a block that diverged left its version in
        // the store, and after a restart the node took that version for the block instead
        // of executing it again (reporting the divergence at every start, even once a fixed
        // build would execute the block as its signers did).
        _ => match e.expect {
            Some(want) => state.store.apply_if(number, e.diff.store_changes(), |root| {
                header_with(*root).hash_slow() == want
            }),
            None => state.store.apply(number, e.diff.store_changes()).map(|root| (root, true)),
        },
    };
    let (root, _) = stored.map_err(|source| PipelineError::Store { number, source })?;
    let merklized = Instant::now();
    let header = header_with(root);
    let hash = header.hash_slow();
    if let Some(want) = e.expect.filter(|w| *w != hash) {
        state.chain.close();
        return Err(PipelineError::Diverged {
            number,
            reason: format!("block hash {hash} (state root {root}), certified {want}"),
        });
    }
    let created = e.output.txs.iter().map(|o| o.contract_address).collect();
    let block =
        StoredBlock { header, hash, txs, senders, receipts: e.output.receipts, created, ordering };
    let block =
        state.chain.append(block).map_err(|source| PipelineError::Chain { number, source })?;
    if block.ordering.last_in_group {
        state.validator.durable_height.fetch_max(block.ordering.height, Ordering::Relaxed);
        // The next group resumes, after a restart in its middle, from this block's state:
        // the store keeps it however many blocks that group makes. Before stop 48 it kept
        // only `retain_versions` (64 at least), and a group of more blocks than that (one
        // commit of many transactions near the gas limit each) could not be resumed: the
        // node stopped at every start.
        state.store.keep_from(Some(number));
    }
    state.pending.lock().retain(|(n, _)| *n > number);
    let now = Instant::now();
    {
        let mut ordered = state.ordered.lock();
        let submitted = state.submitted.lock();
        for h in block.tx_hashes() {
            ordered.remove(&h);
            if let Some(at) = submitted.get(&h) {
                state.metrics.receipt_latency.record(now.duration_since(*at));
            }
        }
    }
    let m = &state.metrics;
    m.store_micros.fetch_add(now.duration_since(started).as_micros() as u64, Ordering::Relaxed);
    m.merkle_micros
        .fetch_add(merklized.duration_since(merkle_from).as_micros() as u64, Ordering::Relaxed);
    m.order_to_receipt_micros
        .fetch_add(now.duration_since(e.ordered_at).as_micros() as u64, Ordering::Relaxed);
    m.execute_to_receipt_micros
        .fetch_add(now.duration_since(e.executed_at).as_micros() as u64, Ordering::Relaxed);
    m.blocks.fetch_add(1, Ordering::Relaxed);
    m.transactions.fetch_add(block.txs.len() as u64, Ordering::Relaxed);
    m.head.store(number, Ordering::Relaxed);
    m.head_stored_ms.store(crate::validator::unix_ms(), Ordering::Relaxed);
    m.store_queue
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| Some(q.saturating_sub(1)))
        .ok();
    let _ = state.blocks.send(block);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use alloy_consensus::SignableTransaction;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    /// A block that fails on this node (out of WASM instances, say) runs again: at once, then
    /// after growing pauses, until it runs; a fault that persists is returned after the last
    /// try, and a refusal that is the block's own (an invalid transaction) is not retried.
    #[test]
    fn a_node_fault_is_retried_and_a_block_error_is_not() {
        let fault =
            || ExecError::Evm { index: 0, reason: "WASM instance: the pool is full".into() };
        let ok = || BlockOutput {
            txs: Vec::new(),
            receipts: Vec::new(),
            diff: Default::default(),
            gas_used: 0,
            receipts_root: B256::ZERO,
            logs_bloom: Default::default(),
        };
        let run = |faults: usize, first: Result<BlockOutput, ExecError>| {
            let (mut runs, mut pauses) = (0usize, Vec::new());
            let result = retry_node_faults(
                7,
                first,
                || {
                    runs += 1;
                    if runs <= faults {
                        Err(fault())
                    } else {
                        Ok(ok())
                    }
                },
                |d| pauses.push(d.as_millis()),
            );
            (result, runs, pauses)
        };
        let (r, runs, pauses) = run(0, Ok(ok()));
        assert!(r.is_ok() && runs == 0 && pauses.is_empty());
        let (r, runs, pauses) = run(0, Err(fault()));
        assert!(r.is_ok());
        assert_eq!((runs, pauses), (1, vec![]));
        let (r, runs, pauses) = run(2, Err(fault()));
        assert!(r.is_ok());
        assert_eq!((runs, pauses), (3, vec![200, 400]));
        let (r, runs, pauses) = run(usize::MAX, Err(fault()));
        assert!(matches!(r, Err(ExecError::Evm { .. })));
        assert_eq!((runs, pauses), (NODE_FAULT_RETRIES as usize, vec![200, 400, 800]));
        let invalid = ExecError::InvalidTransaction { index: 0, reason: "nonce too low".into() };
        let (r, runs, _) = run(0, Err(invalid));
        assert!(matches!(r, Err(ExecError::InvalidTransaction { .. })));
        assert_eq!(runs, 0);
    }

    fn tx(key: &PrivateKeySigner, nonce: u64) -> RecoveredTx {
        RecoveredTx { tx: crate::chain::tests::transfer(key, nonce), sender: key.address() }
    }

    fn nonces(txs: &[RecoveredTx]) -> Vec<(Address, u64)> {
        txs.iter().map(|t| (t.sender, t.tx.nonce())).collect()
    }

    /// A node's state in `dir`, from `genesis` (or as it was left there).
    fn node_state(dir: &std::path::Path, genesis: Genesis) -> Arc<State> {
        node_state_keeping(dir, genesis, None)
    }

    /// [`node_state`] with a store that keeps `retain_versions`.
    fn node_state_keeping(
        dir: &std::path::Path,
        genesis: Genesis,
        retain_versions: Option<u64>,
    ) -> Arc<State> {
        let opts = farol_store::Options { retain_versions, ..farol_store::Options::default() };
        let store = Store::open(dir.join("state"), opts).unwrap_or_else(|e| panic!("{e}"));
        let root = match store.latest_version() {
            Some(_) => B256::ZERO,
            None => {
                store.apply(0, genesis.state().store_changes()).unwrap_or_else(|e| panic!("{e}"))
            }
        };
        let g = genesis.clone();
        let chain = Chain::open(dir, move || g.block(root)).unwrap_or_else(|e| panic!("{e}"));
        Arc::new(State::new(
            Arc::new(chain),
            Arc::new(store),
            genesis,
            Vec::new(),
            Arc::new(Metrics::default()),
        ))
    }

    /// A restart in the middle of a group walks back to the group's start; a block of that
    /// walk that cannot be read back from the block log (here: damaged on disk after the log
    /// was checked at open, and no longer decoded in memory) stops the pipeline with an
    /// error naming it, rather than resuming from the middle of the group (which would form
    /// other blocks than the other validators). Untested until stop 43.
    #[test]
    fn a_group_whose_earlier_block_cannot_be_read_back_stops_the_resume() {
        use crate::chain::tests::stored;
        use crate::chain::{OrderingData, Recent};
        let key = PrivateKeySigner::random();
        let genesis = Genesis::dev(&[key.address()], U256::from(10u64).pow(U256::from(20)), 0);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path().join("state"), farol_store::Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let root =
            store.apply(0, genesis.state().store_changes()).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("blocks.log");
        let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        // Block 1 ends a group; blocks 2 and 3 are the first two chunks of the next one.
        let chunk = |chunk: u32| OrderingData {
            round: 2,
            first: 2,
            height: 3,
            chunk,
            last_in_group: false,
            deferred: Vec::new(),
            checkpoint: None,
        };
        let span = {
            let g = genesis.clone();
            let chain =
                Chain::open(dir.path(), move || g.block(root)).unwrap_or_else(|e| panic!("{e}"));
            let append = |n: u64, ordering: OrderingData| {
                let b = stored(n, &key, Vec::new(), Vec::new(), ordering);
                let before = size();
                chain.append(b).unwrap_or_else(|e| panic!("{e}"));
                (before, size())
            };
            append(1, crate::chain::tests::single_commit(1));
            let span = append(2, chunk(0));
            append(3, chunk(1));
            span
        };
        // Reopened keeping only the head decoded; then block 2's record is damaged.
        let g = genesis.clone();
        let chain = Chain::open_keeping(
            dir.path(),
            move || g.block(root),
            Recent { blocks: 1, transactions: 100, ..Recent::default() },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(chain.head_number(), 3);
        {
            use std::io::{Read, Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&log)
                .unwrap_or_else(|e| panic!("{e}"));
            let middle = (span.0 + span.1) / 2;
            let mut byte = [0u8];
            f.seek(SeekFrom::Start(middle)).unwrap_or_else(|e| panic!("{e}"));
            f.read_exact(&mut byte).unwrap_or_else(|e| panic!("{e}"));
            f.seek(SeekFrom::Start(middle)).unwrap_or_else(|e| panic!("{e}"));
            f.write_all(&[byte[0] ^ 0xff]).unwrap_or_else(|e| panic!("{e}"));
        }
        let state = Arc::new(State::new(
            Arc::new(chain),
            Arc::new(store),
            genesis,
            Vec::new(),
            Arc::new(Metrics::default()),
        ));
        assert!(state.chain.block(2).is_none(), "block 2 still reads back");
        // No commits come: a pipeline that resumed would just end.
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let cfg = PipelineConfig { threads: 2, ..PipelineConfig::default() };
        let result = spawn(state, rx, cfg).join().unwrap_or_else(|_| panic!("it panicked"));
        match result {
            Err(e @ PipelineError::Chain { number: 2, .. }) => {
                assert!(e.to_string().contains('2'), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The drop record keeps the newest 10,000, answers by hash, and a hash dropped twice
    /// keeps its newest reason.
    #[test]
    fn drops_are_kept_newest_and_found_by_hash() {
        let mut d = Drops::default();
        let h = |i: u64| B256::from(U256::from(i));
        for i in 0..12_000u64 {
            d.push(h(i % 11_000), format!("reason {i}"));
        }
        assert_eq!(d.by_seq.len(), Drops::KEEP);
        assert_eq!(d.by_hash.len(), Drops::KEEP);
        // 0..1000 were dropped again (11,000..12,000): the newest reason stands.
        let reason = |d: &Drops, i: u64| {
            d.by_hash.get(&h(i)).and_then(|s| d.by_seq.get(s)).map(|r| r.1.clone())
        };
        assert_eq!(reason(&d, 5), Some("reason 11005".into()));
        assert_eq!(reason(&d, 1_500), None, "too old");
        assert_eq!(reason(&d, 10_999), Some("reason 10999".into()));
    }

    /// While the storing stage applies blocks to the store and drops their diffs, a view of
    /// the newest executed block always sees every block up to it (a view that read the
    /// store's version before the diffs could miss the block stored in between).
    #[test]
    fn a_view_never_misses_the_block_being_stored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let who = Address::repeat_byte(0x5a);
        let state = node_state(dir.path(), Genesis::dev(&[who], U256::from(1u64), 0));
        let executed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let storer = {
            let (state, executed, done) = (state.clone(), executed.clone(), done.clone());
            std::thread::spawn(move || {
                for k in 1..=400u64 {
                    let mut diff = StateDiff::default();
                    diff.accounts.insert(who, Some(Account::with_balance(U256::from(k))));
                    let changes = diff.store_changes();
                    state.pending.lock().push((k, Arc::new(diff)));
                    executed.store(k, Ordering::SeqCst);
                    state.store.apply(k, changes).unwrap_or_else(|e| panic!("{e}"));
                    state.pending.lock().retain(|(n, _)| *n > k);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut views = 0u64;
        while !done.load(Ordering::SeqCst) {
            let n = executed.load(Ordering::SeqCst);
            if n == 0 {
                continue;
            }
            let view = state.view(n).unwrap_or_else(|e| panic!("{e}"));
            let balance = view.account(who).ok().flatten().map(|a| a.balance);
            assert_eq!(balance, Some(U256::from(n)), "the view of block {n}");
            views += 1;
        }
        storer.join().unwrap_or_else(|_| panic!("the storer panicked"));
        assert!(views > 100, "{views} views");
    }

    /// Block 1, as executed here, leaving `who` with `balance`, imported when `expect` is
    /// the certified hash.
    fn block_one(state: &State, who: Address, balance: u64, expect: Option<B256>) -> Executed {
        let mut diff = StateDiff::default();
        diff.accounts.insert(who, Some(Account::with_balance(U256::from(balance))));
        let output = BlockOutput {
            txs: Vec::new(),
            receipts: Vec::new(),
            diff,
            gas_used: 0,
            receipts_root: alloy_consensus::constants::EMPTY_ROOT_HASH,
            logs_bloom: Default::default(),
        };
        let env = BlockEnv {
            number: 1,
            timestamp: 1,
            beneficiary: Address::ZERO,
            base_fee: 7,
            gas_limit: 30_000_000,
            prevrandao: B256::ZERO,
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        };
        Executed::new(
            state,
            env,
            Vec::new(),
            output,
            Instant::now(),
            OrderingData::unordered(),
            expect,
        )
    }

    /// An imported block whose state gives another hash than the certified one leaves
    /// nothing in the store: after a restart the block is executed into again, and what
    /// that execution gives is what is stored. (Before stop 37 the diverged state stayed as
    /// the block's version and the restart took it.)
    #[test]
    fn a_block_that_diverged_leaves_no_state_behind() {
        let who = Address::repeat_byte(0x5a);
        let genesis = Genesis::dev(&[who], U256::from(1u64), 0);
        let good = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let certified = {
            let state = node_state(good.path(), genesis.clone());
            store_block(&state, block_one(&state, who, 3, None)).unwrap_or_else(|e| panic!("{e}"));
            state.chain.block(1).map(|b| b.hash).unwrap_or_else(|| panic!("block 1 not stored"))
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        {
            let state = node_state(dir.path(), genesis.clone());
            match store_block(&state, block_one(&state, who, 2, Some(certified))) {
                Err(PipelineError::Diverged { number: 1, .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(state.store.latest_version(), Some(0));
            assert!(state.chain.block(1).is_none());
        }
        let state = node_state(dir.path(), genesis);
        assert_eq!(state.store.latest_version(), Some(0), "after the restart");
        store_block(&state, block_one(&state, who, 3, Some(certified)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(state.chain.block(1).map(|b| b.hash), Some(certified));
        let balance = state.view(1).ok().and_then(|v| v.account(who).ok().flatten());
        assert_eq!(balance.map(|a| a.balance), Some(U256::from(3u64)));
    }

    /// A block whose state was stored before a crash that came before the block log's
    /// write is stored with that state if the block executes to it again, and refused if it
    /// does not (since stop 42; before, the stored state was taken unchecked).
    #[test]
    fn a_state_stored_ahead_of_its_block_is_checked() {
        let who = Address::repeat_byte(0x5b);
        let genesis = Genesis::dev(&[who], U256::from(1u64), 0);
        for (stored, executed) in [(3u64, 3u64), (3, 4)] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            {
                // The crash: block 1's state written, the block not.
                let state = node_state(dir.path(), genesis.clone());
                let e = block_one(&state, who, stored, None);
                state.store.apply(1, e.diff.store_changes()).unwrap_or_else(|e| panic!("{e}"));
            }
            let state = node_state(dir.path(), genesis.clone());
            assert_eq!(state.store.latest_version(), Some(1));
            let result = store_block(&state, block_one(&state, who, executed, None));
            if stored == executed {
                result.unwrap_or_else(|e| panic!("{e}"));
                assert!(state.chain.block(1).is_some());
            } else {
                match result {
                    Err(e @ PipelineError::StoredStateDiffers { number: 1, .. }) => {
                        assert!(e.to_string().contains("stored root"), "{e}")
                    }
                    other => panic!("{other:?}"),
                }
                assert!(state.chain.block(1).is_none());
            }
        }
    }

    /// A block's invalid transactions are dropped, each with its reason, and the sender's
    /// later nonces with them; the block holds the rest. (That it takes one run is by
    /// construction: `execute_screened`.)
    #[test]
    fn invalid_transactions_are_dropped_with_their_reasons() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, poor) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let genesis = Genesis::dev(&[a.address()], U256::from(10u64).pow(U256::from(20)), 0);
        let base_fee = genesis.base_fee;
        let state = node_state(dir.path(), genesis);
        let executor = ParallelExecutor::new(ParallelConfig { threads: 2, ..Default::default() });
        let env = BlockEnv {
            number: 1,
            timestamp: 1,
            beneficiary: Address::ZERO,
            base_fee,
            gas_limit: 21_000 * 3,
            prevrandao: B256::ZERO,
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        };
        let txs =
            vec![tx(&a, 0), tx(&poor, 0), tx(&a, 9), tx(&a, 1), tx(&poor, 1), tx(&a, 2), tx(&a, 3)];
        let hash = |t: &RecoveredTx| *t.tx.tx_hash();
        let why = |t: &RecoveredTx| state.drop_reason(&hash(t)).unwrap_or_default();
        let out = execute(&state, &executor, env.clone(), txs.clone(), 1, 1, false)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no block"));
        assert_eq!(nonces(&out.txs), [(a.address(), 0), (a.address(), 1), (a.address(), 2)]);
        assert_eq!(out.output.receipts.len(), 3);
        assert!(why(&txs[1]).contains("insufficient funds"), "{}", why(&txs[1]));
        assert!(why(&txs[2]).contains("nonce too high"), "{}", why(&txs[2]));
        assert_eq!(why(&txs[4]), "an earlier nonce was dropped");
        assert_eq!(why(&txs[6]), "gas limit above the block's");
        assert_eq!(state.metrics.dropped.load(Ordering::Relaxed), 4);
        // Nothing left: no block, unless the commit needs one.
        let none = execute(&state, &executor, env.clone(), vec![tx(&poor, 0)], 1, 1, false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(none.is_none());
        let empty = execute(&state, &executor, env, vec![tx(&poor, 0)], 1, 1, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no block"));
        assert!(empty.txs.is_empty() && empty.output.receipts.is_empty());
    }

    #[test]
    fn early_nonces_wait_for_the_missing_ones_then_expire() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let genesis =
            Genesis::dev(&[a.address(), b.address()], U256::from(10u64).pow(U256::from(20)), 0);
        let state = node_state(dir.path(), genesis);
        let view = state.view(0).unwrap_or_else(|e| panic!("{e}"));
        let mut waiting = Waiting::new();
        // Commit 1: a's 2 and 1 arrive before its 0 (a rival 2 is dropped, the same 2 again
        // is no rival and ignored); b's 0 is in order.
        let mut rival = tx(&a, 2);
        if let TxEnvelope::Eip1559(signed) = &rival.tx {
            let mut t = signed.tx().clone();
            t.value = U256::from(2);
            let sig = a.sign_hash_sync(&t.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
            rival.tx = TxEnvelope::Eip1559(t.into_signed(sig));
        }
        let first = vec![tx(&a, 2), tx(&b, 0), tx(&a, 1), tx(&a, 2), rival];
        let out = order(&state, &view, 1, first, &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nonces(&out), [(b.address(), 0)]);
        assert_eq!(waiting.len(), 2);
        // Commit 2: a's 0 arrives: 1 and 2 follow it.
        let out = order(&state, &view, 2, vec![tx(&a, 0)], &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nonces(&out), [(a.address(), 0), (a.address(), 1), (a.address(), 2)]);
        assert!(waiting.is_empty());
        assert_eq!(state.metrics.dropped.load(Ordering::Relaxed), 1);
        // A gap never filled: dropped after DEFER_COMMITS commits.
        let out = order(&state, &view, 3, vec![tx(&b, 5)], &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.is_empty() && waiting.len() == 1);
        let _ = order(&state, &view, 3 + DEFER_COMMITS, vec![], &mut waiting, &Moved::none());
        assert_eq!(waiting.len(), 1, "kept for {DEFER_COMMITS} commits");
        let _ = order(&state, &view, 4 + DEFER_COMMITS, vec![], &mut waiting, &Moved::none());
        assert!(waiting.is_empty());
        assert!(state.recent_drops(1)[0].1.contains("gap not filled"));
    }

    /// A faulty proposer's wrappings of a transaction (its bytes with one more after them, or
    /// another sender named for it) are skipped and counted, not recorded as drops of the
    /// transaction, which is ordered unwrapped in the same commit and executes.
    #[test]
    fn wrapped_copies_are_not_drops_of_the_transaction() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = PrivateKeySigner::random();
        let genesis = Genesis::dev(&[a.address()], U256::from(10u64).pow(U256::from(20)), 0);
        let state = node_state(dir.path(), genesis);
        let raw = crate::chain::tests::transfer(&a, 0).encoded_2718();
        let hash = alloy_primitives::keccak256(&raw);
        let sender = a.address().into_array();
        let mut longer = raw.clone();
        longer.push(0);
        let consensus_tx = |sender: [u8; 20], payload: Vec<u8>| farol_consensus::Transaction {
            sender,
            payload: bytes::Bytes::from(payload),
        };
        let commit = Committed {
            height: 1,
            round: 1,
            leader: farol_consensus::ValidatorIndex(0),
            leader_digest: [0; 32],
            timestamp_ms: 0,
            transactions: vec![
                consensus_tx(sender, longer),
                consensus_tx([9; 20], raw.clone()),
                consensus_tx(sender, raw),
            ],
            proposals: 1,
            checkpoint: None,
        };
        let decoded = decode(&state, &commit);
        assert_eq!(decoded.len(), 1);
        assert_eq!(*decoded[0].tx.tx_hash(), hash);
        assert_eq!(state.drop_reason(&hash), None);
        assert_eq!(state.metrics.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(state.metrics.undecodable.load(Ordering::Relaxed), 2);
    }

    /// The waiting set is bounded by bytes as well as by count: transactions of 100 KiB with
    /// nonce gaps (what a faulty validator can propose from keys without funds) fill it after
    /// ten; the next is dropped, a small one still fits, and a set emptied by the missing
    /// nonce takes large ones again.
    #[test]
    fn the_waiting_set_is_bounded_by_bytes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let funded = PrivateKeySigner::random();
        let genesis = Genesis::dev(&[funded.address()], U256::from(10u64).pow(U256::from(20)), 0);
        let state = node_state(dir.path(), genesis);
        let view = state.view(0).unwrap_or_else(|e| panic!("{e}"));
        let big = |key: &PrivateKeySigner, nonce: u64| {
            let t = alloy_consensus::TxEip1559 {
                chain_id: 31337,
                nonce,
                gas_limit: 2_000_000,
                max_fee_per_gas: 2_000_000_000,
                to: alloy_primitives::TxKind::Call(Address::repeat_byte(1)),
                input: vec![0xab; 100 << 10].into(),
                ..Default::default()
            };
            use alloy_consensus::SignableTransaction;
            use alloy_signer::SignerSync;
            let sig = key.sign_hash_sync(&t.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
            RecoveredTx { tx: TxEnvelope::Eip1559(t.into_signed(sig)), sender: key.address() }
        };
        let keys: Vec<PrivateKeySigner> = (0..11).map(|_| PrivateKeySigner::random()).collect();
        let gapped: Vec<RecoveredTx> = keys.iter().map(|k| big(k, 1)).collect();
        let last = *gapped[10].tx.tx_hash();
        let mut waiting = Waiting::new();
        let out = order(&state, &view, 1, gapped, &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.is_empty());
        assert_eq!(waiting.len(), 10, "ten of 100 KiB fit in 1 MiB, the eleventh does not");
        assert!(state
            .recent_drops(1)
            .iter()
            .any(|(h, why)| *h == last && why.contains("too many")));
        let out = order(&state, &view, 2, vec![tx(&funded, 1)], &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.is_empty());
        assert_eq!(waiting.len(), 11, "a transfer still fits");
        // The funded sender's gap filled: its waiting transfer leaves, but the set stays full
        // of large ones until they expire.
        let out = order(&state, &view, 3, vec![tx(&funded, 0)], &mut waiting, &Moved::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(nonces(&out), [(funded.address(), 0), (funded.address(), 1)]);
        assert_eq!(waiting.len(), 10);
        let _ = order(&state, &view, 2 + DEFER_COMMITS, vec![], &mut waiting, &Moved::none());
        assert!(waiting.is_empty());
        let again: Vec<RecoveredTx> = keys.iter().take(3).map(|k| big(k, 1)).collect();
        let _ = order(&state, &view, 3 + DEFER_COMMITS, again, &mut waiting, &Moved::none());
        assert_eq!(waiting.len(), 3);
    }

    fn commit(height: u64, timestamp_ms: u64, txs: usize) -> Committed {
        let t = farol_consensus::Transaction { sender: [1; 20], payload: Default::default() };
        Committed {
            height,
            round: 2 * height,
            leader: farol_consensus::ValidatorIndex(0),
            leader_digest: [0; 32],
            timestamp_ms,
            transactions: vec![t; txs],
            proposals: 1,
            checkpoint: None,
        }
    }

    #[test]
    fn a_group_ends_by_a_rule_of_its_commits_alone() {
        let key = PrivateKeySigner::random();
        let now = Instant::now();
        let limit = 30_000_000;
        let pushes = |commits: Vec<(Committed, usize)>, limit: u64| {
            let mut g = Group::default();
            let ends: Vec<bool> = commits
                .into_iter()
                .map(|(c, n)| {
                    let txs = (0..n as u64).map(|i| tx(&key, i)).collect();
                    g.push(c, txs, now, limit, 0)
                })
                .collect();
            (ends, g)
        };
        // (`commit(h, ..)` is at round 2h; the chain's last block at round 0.)
        // Commits with transactions, 20 ms apart: the first 50 ms or more after the group's
        // first ends it (the 4th, 60 ms after).
        let (ends, g) = pushes((1..=4).map(|h| (commit(h, 1_000 + 20 * h, 3), 3)).collect(), limit);
        assert_eq!(ends, [false, false, false, true]);
        assert!(g.holds(4) && !g.holds(5));
        // 49 ms is not enough.
        let (ends, _) = pushes(vec![(commit(1, 1_000, 1), 1), (commit(2, 1_049, 1), 1)], limit);
        assert_eq!(ends, [false, false]);
        // A commit without transactions ends a group without any at once.
        let (ends, _) = pushes(vec![(commit(1, 1_000, 0), 0)], limit);
        assert_eq!(ends, [true]);
        // After transactions, it ends the group once the group spans 40 ms...
        let quiet = vec![
            (commit(1, 1_000, 2), 2),
            (commit(2, 1_001, 0), 0),
            (commit(3, 1_039, 0), 0),
            (commit(4, 1_040, 0), 0),
        ];
        let (ends, _) = pushes(quiet, limit);
        assert_eq!(ends, [false, false, false, true]);
        // ... or is 12 rounds or more past the last block (round 12 is; round 10 is not).
        let (ends, _) = pushes(
            vec![(commit(1, 1_000, 2), 2), (commit(5, 1_001, 0), 0), (commit(6, 1_002, 0), 0)],
            limit,
        );
        assert_eq!(ends, [false, false, true]);
        // A checkpoint ends it.
        let mut cp = commit(2, 1_001, 2);
        cp.checkpoint = Some([7; 32]);
        let (ends, _) = pushes(vec![(commit(1, 1_000, 2), 2), (cp, 2)], limit);
        assert_eq!(ends, [false, true]);
        // So does reaching the block gas limit (transfers of 21,000 gas).
        let (ends, _) =
            pushes(vec![(commit(1, 1_000, 2), 2), (commit(2, 1_001, 2), 2)], 4 * 21_000);
        assert_eq!(ends, [false, true]);
        // A commit whose transactions all failed to decode still counts as carrying some.
        let (ends, _) = pushes(vec![(commit(1, 1_000, 2), 0), (commit(2, 1_001, 2), 0)], limit);
        assert_eq!(ends, [false, false]);
    }

    /// Runs a pipeline on `work` until its chain's head is `head`; returns the chain's blocks
    /// after genesis.
    fn run_pipeline(state: &Arc<State>, work: Vec<Work>, head: u64) -> Vec<Arc<StoredBlock>> {
        let (tx, rx) = mpsc::channel(64);
        let cfg = PipelineConfig { threads: 2, ..PipelineConfig::default() };
        let handle = spawn(state.clone(), rx, cfg);
        for w in work {
            tx.blocking_send(w).unwrap_or_else(|e| panic!("the pipeline stopped: {e}"));
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        while state.chain.head_number() < head {
            assert!(Instant::now() < deadline, "head {} of {head}", state.chain.head_number());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(tx);
        let result = handle.join().unwrap_or_else(|_| panic!("the pipeline panicked"));
        result.unwrap_or_else(|e| panic!("{e}"));
        (1..=head).map(|n| state.chain.block(n).unwrap_or_else(|| panic!("block {n}"))).collect()
    }

    /// `k`'s transfer with `nonce`, as consensus carries it.
    fn t(k: &PrivateKeySigner, nonce: u64) -> farol_consensus::Transaction {
        use alloy_eips::eip2718::Encodable2718;
        farol_consensus::Transaction {
            sender: k.address().into_array(),
            payload: crate::chain::tests::transfer(k, nonce).encoded_2718().into(),
        }
    }

    /// Commit `height` at `ms` carrying `txs`.
    fn with(height: u64, ms: u64, txs: Vec<farol_consensus::Transaction>) -> Committed {
        Committed { transactions: txs, ..commit(height, ms, 0) }
    }

    /// Blocks from groups of commits, one group cut at the gas limit: a node that imports
    /// the group's first block from a peer while it forms the group (as a validator that
    /// catches up does) makes the same blocks as the node that formed it alone, and so does
    /// one restarted after that block (its consensus replays every commit).
    #[test]
    fn groups_make_the_same_blocks_after_an_import_in_their_middle() {
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut genesis =
            Genesis::dev(&[a.address(), b.address()], U256::from(10u64).pow(U256::from(20)), 0);
        // Two transfers to a block.
        genesis.gas_limit = 2 * 21_000;
        let commits = [
            // One group: commit 2 brings its transactions' gas to the limit; three transfers
            // make two blocks.
            with(1, 5_000, vec![t(&a, 0)]),
            with(2, 5_010, vec![t(&b, 0), t(&a, 1)]),
            // Another: commit 4 carries nothing and comes 40 ms after the group's first.
            with(3, 5_020, vec![t(&b, 1)]),
            with(4, 5_060, vec![]),
            // An empty group in a new second makes an empty block.
            with(5, 7_000, vec![]),
        ];
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let alone = node_state(dir.path(), genesis.clone());
        let work = commits.iter().cloned().map(Work::Commit).collect();
        let blocks = run_pipeline(&alone, work, 4);
        let shape: Vec<_> = blocks
            .iter()
            .map(|b| {
                let o = &b.ordering;
                (b.txs.len(), o.first, o.height, o.chunk, o.last_in_group, b.header.timestamp)
            })
            .collect();
        assert_eq!(
            shape,
            [
                (2, 1, 2, 0, false, 5),
                (1, 1, 2, 1, true, 5),
                (1, 3, 4, 0, true, 5),
                (0, 5, 5, 0, true, 7)
            ]
        );
        // A header commits to its group's first commit.
        assert_eq!(blocks[0].header.extra_data.as_ref(), blocks[0].ordering.digest().as_slice());
        let hashes = |bs: &[Arc<StoredBlock>]| bs.iter().map(|b| b.hash).collect::<Vec<_>>();
        let import = || {
            let block = SyncBlock::decode(&blocks[0].encode_for_sync(true))
                .unwrap_or_else(|e| panic!("{e}"));
            Work::Import(Box::new(Import { block, senders: blocks[0].senders.clone() }))
        };

        // Another node has taken commit 1 when block 1 arrives from a peer; its consensus
        // goes on with commit 2.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let joined = node_state(dir.path(), genesis.clone());
        let mut work = vec![Work::Commit(commits[0].clone()), import()];
        work.extend(commits[1..].iter().cloned().map(Work::Commit));
        assert_eq!(hashes(&run_pipeline(&joined, work, 4)), hashes(&blocks));
        // Every ordered transaction was stored: none is left "ordered" once the storing
        // stage has finished with the last block (it clears them after the block is out).
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while !joined.ordered.lock().is_empty() {
            assert!(Instant::now() < deadline, "{:?}", joined.ordered.lock().keys());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }

        // A node whose chain ends with block 1 (the first of its group) restarts: its
        // consensus replays every commit.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = node_state(dir.path(), genesis.clone());
        assert_eq!(hashes(&run_pipeline(&first, vec![import()], 1)), hashes(&blocks[..1]));
        drop(first);
        let restarted = node_state(dir.path(), genesis);
        let work = commits.iter().cloned().map(Work::Commit).collect();
        assert_eq!(hashes(&run_pipeline(&restarted, work, 4)), hashes(&blocks));
    }

    /// A group of more blocks than the store keeps versions resumes after a restart in its
    /// middle: the state before the group stays until the group's last block is stored.
    /// Before stop 48 a node restarted after importing seven of a group's ten blocks, with
    /// four versions kept, found that state pruned and stopped.
    #[test]
    fn a_group_of_more_blocks_than_versions_kept_resumes() {
        let a = PrivateKeySigner::random();
        let mut genesis = Genesis::dev(&[a.address()], U256::from(10u64).pow(U256::from(20)), 0);
        // One transfer to a block: one commit of ten makes a group of ten blocks; then a
        // group of one (its empty commit comes 100 ms after its first).
        genesis.gas_limit = 30_000;
        let commits = [
            with(1, 5_000, (0..10).map(|n| t(&a, n)).collect()),
            with(2, 5_100, vec![t(&a, 10)]),
            with(3, 5_200, vec![]),
        ];
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let alone = node_state_keeping(dir.path(), genesis.clone(), Some(4));
        let work = commits.iter().cloned().map(Work::Commit).collect();
        let blocks = run_pipeline(&alone, work, 11);
        assert!(blocks[..10].iter().all(|b| b.txs.len() == 1 && b.ordering.first == 1));
        let ends: Vec<u64> =
            blocks.iter().filter(|b| b.ordering.last_in_group).map(|b| b.number()).collect();
        assert_eq!(ends, [10, 11]);
        // Seven of the ten imported from a peer, then a restart: the commit is replayed.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = node_state_keeping(dir.path(), genesis.clone(), Some(4));
        let import = |b: &Arc<StoredBlock>| {
            let block =
                SyncBlock::decode(&b.encode_for_sync(true)).unwrap_or_else(|e| panic!("{e}"));
            Work::Import(Box::new(Import { block, senders: b.senders.clone() }))
        };
        run_pipeline(&first, blocks[..7].iter().map(import).collect(), 7);
        assert_eq!(first.store.oldest_version(), Some(0), "the state before the group is kept");
        drop(first);
        let restarted = node_state_keeping(dir.path(), genesis, Some(4));
        let work = commits.iter().cloned().map(Work::Commit).collect();
        let again = run_pipeline(&restarted, work, 11);
        let hashes = |bs: &[Arc<StoredBlock>]| bs.iter().map(|b| b.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&again), hashes(&blocks));
        // Past the group, the versions before it go as the setting says: block 11's write
        // keeps the four newest.
        assert_eq!(restarted.store.oldest_version(), Some(8));
    }

    /// A group whose first chunk's transactions are all dropped makes no block for it: a
    /// node that imports the group's next block (its chunk 1, the first block of the group)
    /// from a peer and then forms the rest of the group itself makes the same blocks as the
    /// node that formed it alone. Before stop 38 it took the state before the group from
    /// the block `chunk + 1` back (one too far) and diverged.
    #[test]
    fn an_import_after_a_chunk_that_made_no_block_resumes_the_group() {
        let (a, b, poor) =
            (PrivateKeySigner::random(), PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut genesis =
            Genesis::dev(&[a.address(), b.address()], U256::from(10u64).pow(U256::from(20)), 0);
        genesis.gas_limit = 2 * 21_000;
        let commits = [
            // Block 1: b's 0 (the group ends 60 ms after its first commit).
            with(1, 5_000, vec![t(&b, 0)]),
            with(2, 5_060, vec![]),
            // One group cut in three chunks: the first (two transfers from a key without
            // funds) makes no block, the second block 2, the third block 3.
            with(3, 5_100, vec![t(&poor, 0), t(&poor, 1), t(&a, 0), t(&b, 1), t(&a, 1)]),
            with(4, 7_000, vec![]),
        ];
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let alone = node_state(dir.path(), genesis.clone());
        let blocks = run_pipeline(&alone, commits.iter().cloned().map(Work::Commit).collect(), 4);
        let shape: Vec<_> = blocks
            .iter()
            .map(|b| (b.txs.len(), b.ordering.first, b.ordering.chunk, b.ordering.last_in_group))
            .collect();
        assert_eq!(shape, [(1, 1, 0, true), (2, 3, 1, false), (1, 3, 2, true), (0, 4, 0, true)]);
        let hashes = |bs: &[Arc<StoredBlock>]| bs.iter().map(|b| b.hash).collect::<Vec<_>>();
        let block =
            SyncBlock::decode(&blocks[1].encode_for_sync(true)).unwrap_or_else(|e| panic!("{e}"));
        let import = Work::Import(Box::new(Import { block, senders: blocks[1].senders.clone() }));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let joined = node_state(dir.path(), genesis);
        let mut work: Vec<Work> = commits[..2].iter().cloned().map(Work::Commit).collect();
        work.push(import);
        work.extend(commits[2..].iter().cloned().map(Work::Commit));
        assert_eq!(hashes(&run_pipeline(&joined, work, 4)), hashes(&blocks));
    }

    /// `tx` as consensus carries it.
    fn carried(sender: &PrivateKeySigner, tx: &TxEnvelope) -> farol_consensus::Transaction {
        farol_consensus::Transaction {
            sender: sender.address().into_array(),
            payload: tx.encoded_2718().into(),
        }
    }

    /// A waiting transaction whose sender's nonce another sender's transaction moved to it
    /// (here: b's EIP-7702 transaction carries a's authorization to code that runs CREATE,
    /// and calls a, which takes a's nonces 0 and 1) leads the next block, at a node that ran
    /// the chain throughout and at one restarted after that transaction's block (which
    /// reads every waiting sender's nonce again). Before stop 46 it waited its 256 commits
    /// and was dropped.
    #[test]
    fn a_nonce_moved_by_another_senders_transaction_releases_the_waiting_one() {
        use alloy_consensus::{SignableTransaction, TxLegacy};
        use alloy_primitives::TxKind;
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let genesis =
            Genesis::dev(&[a.address(), b.address()], U256::from(10u64).pow(U256::from(20)), 0);
        // Code that runs CREATE with empty init code: PUSH1 0, PUSH1 0, PUSH1 0, CREATE, STOP;
        // deployed by init code that copies it out and returns it.
        let runtime = [0x60, 0, 0x60, 0, 0x60, 0, 0xf0, 0x00];
        let mut init = vec![0x60, 8, 0x60, 12, 0x60, 0, 0x39, 0x60, 8, 0x60, 0, 0xf3];
        init.extend_from_slice(&runtime);
        let deploy = TxLegacy {
            chain_id: Some(31337),
            nonce: 0,
            gas_price: 2_000_000_000,
            gas_limit: 200_000,
            to: TxKind::Create,
            input: init.into(),
            ..Default::default()
        };
        let sig = b.sign_hash_sync(&deploy.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
        let deploy = TxEnvelope::Legacy(deploy.into_signed(sig));
        let code = b.address().create(0);
        let call = crate::chain::tests::delegating(&b, 1, &a, code, 200_000, 2_000_000_000);
        let commits = [
            with(1, 5_000, vec![carried(&b, &deploy)]),
            with(2, 5_060, vec![]),
            // a's transfer with nonce 2 is ordered after b's call, which will take a's 0 and 1:
            // when the group is ordered, a's nonce is 0, so the transfer waits.
            with(3, 6_000, vec![carried(&b, &call), t(&a, 2)]),
            with(4, 6_060, vec![]),
            // A new second: a group without transactions makes a block.
            with(5, 7_000, vec![]),
        ];
        let nonce = |state: &Arc<State>, n: u64| {
            let view = state.view(n).unwrap_or_else(|e| panic!("{e}"));
            view.account(a.address()).unwrap_or_else(|e| panic!("{e}")).map_or(0, |x| x.nonce)
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let alone = node_state(dir.path(), genesis.clone());
        let blocks = run_pipeline(&alone, commits.iter().cloned().map(Work::Commit).collect(), 3);
        let senders = |b: &StoredBlock| -> Vec<(Address, u64)> {
            b.txs.iter().zip(&b.senders).map(|(t, s)| (*s, t.nonce())).collect()
        };
        assert_eq!(senders(&blocks[1]), [(b.address(), 1)]);
        assert_eq!(nonce(&alone, 2), 2, "the authorization and the CREATE took a's 0 and 1");
        assert_eq!(blocks[1].ordering.deferred.len(), 1, "a's transfer waits");
        assert_eq!(senders(&blocks[2]), [(a.address(), 2)]);
        assert!(blocks[2].ordering.deferred.is_empty());
        assert_eq!(nonce(&alone, 3), 3);

        // A node restarted after block 2 (its consensus replays every commit).
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = node_state(dir.path(), genesis.clone());
        let work = commits[..4].iter().cloned().map(Work::Commit).collect();
        let _ = run_pipeline(&first, work, 2);
        drop(first);
        let restarted = node_state(dir.path(), genesis);
        let work = commits.iter().cloned().map(Work::Commit).collect();
        let again = run_pipeline(&restarted, work, 3);
        let hashes = |bs: &[Arc<StoredBlock>]| bs.iter().map(|b| b.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&again), hashes(&blocks));
    }

    /// A call's BLOCKHASH of a block past its view's is zero (unless the call set it); of its
    /// view's block or an earlier one, the block's hash, or an error when the chain cannot
    /// give it (before stop 46, zero: a block whose place in blocks.idx could not be read
    /// made calls read zero silently). The chain gives none here because it was closed
    /// before the block came; `chain::tests::old_block_places_are_read_from_blocks_idx`
    /// checks that it gives none for a damaged place too.
    #[test]
    fn a_calls_blockhash_fails_where_the_chain_cannot_give_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = node_state(dir.path(), Genesis::dev(&[], U256::ZERO, 0));
        let genesis = state.chain.hash(0).unwrap_or_else(|| panic!("genesis"));
        let mut view = state.view(3).unwrap_or_else(|e| panic!("{e}")).for_calls();
        view.set_block_hash(5, B256::repeat_byte(5));
        state.chain.close();
        assert_eq!(view.block_hash(0).ok(), Some(genesis));
        assert_eq!(view.block_hash(4).ok(), Some(B256::ZERO));
        assert_eq!(view.block_hash(5).ok(), Some(B256::repeat_byte(5)));
        assert!(view.block_hash(2).is_err());
    }
}
