//! A validator: one task that feeds a consensus engine with frames from the network,
//! submitted transactions and ticks, and carries out its actions in order — records to the
//! write-ahead log (synced before any message that follows them is sent), messages to the
//! network, commits to the application.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use farol_consensus::{
    Action, Committed, Committee, Consensus, Input, SignatureCache, Snapshot, Target, Transaction,
    ValidatorIndex,
};
use farol_network::Network;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics::Histogram;
use crate::wal::{PendingSync, Wal, WalError};

/// How a validator runs.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// The engine's tick period.
    pub tick: Duration,
    /// Most network frames handed to the engine in one step.
    pub max_batch: usize,
    /// After a frame arrives, how long to wait for more before handing them over (zero:
    /// only the frames already queued go with it). Block signatures are checked one by one
    /// (Ed25519), so waiting buys nothing but latency.
    pub batch_window: Duration,
    /// Whether to sync the log to disk before sending (off only for benchmarks that say so).
    pub sync: bool,
    /// Cut the log to the newest stored snapshot once it holds this many bytes (0: never).
    pub compact_bytes: u64,
    /// Space written ahead of the log's end, per fill ([`Wal::write_ahead`]; 0: none). Used
    /// only when the log is synced.
    pub write_ahead: u64,
}

/// [`ValidatorConfig::write_ahead`]'s default: 4 MiB per fill, about 8 to 12 MiB kept
/// ahead (at half load on `farol bench consensus` a validator logs about 20 MB/s: a fill
/// every 0.2 s). Fills of 16 MiB raised p99 more, and of 1 MiB gained nothing (stop 62).
pub const WRITE_AHEAD: u64 = 4 << 20;

/// Frames whose first byte is at least this are the node's own (finality votes, ...), not
/// the engine's; the driver hands them to [`Validator::spawn`]'s `node_frames`.
pub const NODE_FRAME_KIND: u8 = 0x40;

/// The largest node frame passed on; larger ones are dropped. The node's largest is a block
/// certificate, 8,329 bytes with a committee of 65,536 validators.
pub const MAX_NODE_FRAME: usize = 16 << 10;

/// The node frames' queue holds this many frames per validator (at least 4,096 in all), and
/// each validator at most its share; more are dropped, so that faulty validators (fewer
/// than a third) cannot fill the queue the others' votes go through.
pub const NODE_FRAMES_PER_PEER: usize = 64;

/// The node frames' queue for a committee of `n`: its capacity and each validator's share.
pub fn node_frames_queue(n: usize) -> (usize, usize) {
    let capacity = (NODE_FRAMES_PER_PEER * n).max(4096);
    (capacity, capacity / n.max(1))
}

/// A frame for the node (kind [`NODE_FRAME_KIND`] and above). It holds its sender's place in
/// the node's queue until it is dropped.
#[derive(Debug)]
pub struct NodeFrame {
    /// The validator it came from (authenticated by the network).
    pub from: u16,
    /// The frame.
    pub bytes: Bytes,
    _place: Place,
}

#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hands node frames to the node, at most a share of each validator's at a time (see
/// [`node_frames_queue`]) and none over [`MAX_NODE_FRAME`] bytes.
#[derive(Debug)]
pub struct NodeFrames {
    tx: mpsc::Sender<NodeFrame>,
    share: usize,
    held: BTreeMap<u16, Arc<AtomicUsize>>,
    /// Frames dropped (too large, their sender's share full, or the queue full).
    pub dropped: u64,
}

impl NodeFrames {
    /// Frames offered go to `tx`, at most `share` of each validator's waiting.
    pub fn new(tx: mpsc::Sender<NodeFrame>, share: usize) -> NodeFrames {
        NodeFrames { tx, share, held: BTreeMap::new(), dropped: 0 }
    }

    /// Passes `bytes` from `from` on, or drops it; says which.
    pub fn offer(&mut self, from: u16, bytes: Bytes) -> bool {
        let held = self.held.entry(from).or_default();
        if bytes.len() > MAX_NODE_FRAME || held.load(Ordering::Relaxed) >= self.share {
            self.dropped += 1;
            return false;
        }
        held.fetch_add(1, Ordering::Relaxed);
        let frame = NodeFrame { from, bytes, _place: Place(held.clone()) };
        // A frame refused is dropped here, giving its place back.
        if self.tx.try_send(frame).is_err() {
            self.dropped += 1;
            return false;
        }
        true
    }
}

impl Default for ValidatorConfig {
    fn default() -> ValidatorConfig {
        ValidatorConfig {
            tick: Duration::from_millis(10),
            max_batch: 256,
            batch_window: Duration::ZERO,
            sync: true,
            compact_bytes: 0,
            write_ahead: WRITE_AHEAD,
        }
    }
}

/// What a running validator's consensus shows the rest of the node.
#[derive(Debug, Default)]
pub struct ValidatorStatus {
    /// The height of the engine's newest commit.
    pub height: AtomicU64,
    /// The highest round the engine proposed in.
    pub round: AtomicU64,
    /// The highest round the engine saw more than a third of the stake reach.
    pub seen_round: AtomicU64,
    /// When it came (Unix milliseconds; 0 before the first).
    pub last_commit_ms: AtomicU64,
    /// When the engine started or rejoined (Unix milliseconds).
    pub started_ms: AtomicU64,
    /// The highest round of a block this validator proposed that a commit ordered
    /// ([`Consensus::own_ordered_round`]; it starts again at 0 with a rejoin's engine).
    pub own_ordered_round: AtomicU64,
    /// When that round last rose (Unix milliseconds; 0 before): while the others' blocks
    /// are ordered and its own are not, they do not hear it, or it does not propose.
    pub own_commit_ms: AtomicU64,
    /// The engine's newest snapshot (served to validators that rejoin).
    pub snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// The newest few snapshots, oldest first ([`RECENT_SNAPSHOTS`]): a rejoining validator
    /// asks for the one whose checkpoint its own final chain already carries, which under
    /// load is seldom the newest. They share their blocks.
    pub recent_snapshots: Mutex<std::collections::VecDeque<Arc<Snapshot>>>,
    /// Times the engine was replaced by one rejoining from a peer's snapshot.
    pub rejoins: AtomicU64,
    /// Transactions the replaced engines held that their successors were given
    /// ([`Consensus::held_transactions`], less those the chain holds).
    pub rejoin_carried: AtomicU64,
    /// When the engine rejoined the last [`REJOINS_IN_A_ROW`] times, oldest first (Unix
    /// milliseconds).
    pub recent_rejoins: Mutex<std::collections::VecDeque<u64>>,
    /// The window rejoins in a row are counted in, when the node set one longer than
    /// [`REJOINS_WINDOW_MS`] ([`ValidatorStatus::count_rejoins_for`]; 0: that).
    pub rejoins_window_ms: AtomicU64,
    /// The height of the newest commit the node has stored all blocks of (the log is cut
    /// only to snapshots at or below it).
    pub durable_height: AtomicU64,
    /// Times the log was cut to a snapshot.
    pub compactions: AtomicU64,
    /// Whether the committee has a common coin (consensus is then live under asynchrony).
    pub coin: std::sync::atomic::AtomicBool,
    /// How long each sync of the consensus log took the disk. Every proposal waits for one,
    /// so a slow disk shows here first.
    pub log_sync: Histogram,
    /// The engine's counters of what it refused ([`Consensus::fault_counts`]): a rising one
    /// is a faulty peer (or a full queue) to look at. A rejoin starts them again at 0.
    pub faults: Mutex<Vec<(&'static str, u64)>>,
    /// Set when the engine stood down: another process signs with this validator's key
    /// ([`STOOD_DOWN`]; `/health` fails until the node restarts or consensus rejoins from a
    /// snapshot, whose new engine proposes only once no other process signs).
    pub stood_down: std::sync::atomic::AtomicBool,
}

impl ValidatorStatus {
    /// How long before `now_ms` consensus last committed, and last ordered a block of this
    /// validator's, each counted from the engine's start (or rejoin) at most.
    pub fn commit_ages(&self, now_ms: u64) -> (u64, u64) {
        let started = self.started_ms.load(Ordering::Relaxed);
        let age = |t: &AtomicU64| now_ms.saturating_sub(t.load(Ordering::Relaxed).max(started));
        (age(&self.last_commit_ms), age(&self.own_commit_ms))
    }

    /// Whether, at `now_ms`, the others seem not to hear this validator: commits go on (one
    /// within [`TROUBLE_MS`]) and none of its own blocks was ordered for [`TROUBLE_MS`]
    /// (counted from the engine's start), or it rejoined from snapshots twice within
    /// [`rejoins_window`](Self::rejoins_window) and none of its own blocks was ordered since the first of
    /// the two (it falls behind as soon as it has rejoined, and each rejoin starts its engine,
    /// and the first rule's clock, again). The pool then hands over again sooner what
    /// consensus has not ordered, and sends it to the peers' JSON-RPC too. A stall of the
    /// whole chain (no commits) is neither: there the peers order nothing either, and more
    /// from every validator would only load them.
    pub fn troubled(&self, now_ms: u64) -> bool {
        // (A start counts as a commit and an own block: in its first `TROUBLE_MS` neither
        // age reaches it, and past that without a commit the first is over it.)
        let (commit_age, own_age) = self.commit_ages(now_ms);
        if commit_age < TROUBLE_MS && own_age >= TROUBLE_MS {
            return true;
        }
        let own = self.own_commit_ms.load(Ordering::Relaxed);
        let recent = self.recent_rejoins.lock();
        let earlier = recent.len().checked_sub(2).and_then(|i| recent.get(i)).copied();
        earlier.is_some_and(|t| now_ms.saturating_sub(t) < self.rejoins_window() && own < t)
    }

    /// The window rejoins are counted in: [`REJOINS_WINDOW_MS`], or longer for a node whose
    /// block sync waits longer before it takes a stalled validator's head for behind
    /// ([`ValidatorStatus::count_rejoins_for`]).
    pub fn rejoins_window(&self) -> u64 {
        self.rejoins_window_ms.load(Ordering::Relaxed).max(REJOINS_WINDOW_MS)
    }

    /// Counts rejoins in a window long enough for [`REJOINS_IN_A_ROW`] of them when each
    /// comes only after consensus stood still for `stalled` (`sync.stalled_secs`, and the
    /// fetch of a snapshot after it): three times that and half a minute, at least
    /// [`REJOINS_WINDOW_MS`]. Before stop 58 the window was a minute whatever the setting, and
    /// with `stalled_secs` of 30 or more three rejoins never fitted in it (with 20, only
    /// when each came within 10 s of its stall).
    pub fn count_rejoins_for(&self, stalled: Duration) {
        let ms = u64::try_from(stalled.as_millis()).unwrap_or(u64::MAX);
        let window = ms.saturating_mul(3).saturating_add(30_000).max(REJOINS_WINDOW_MS);
        self.rejoins_window_ms.store(window, Ordering::Relaxed);
    }

    /// Records a rejoin at `now_ms`.
    pub fn note_rejoin(&self, now_ms: u64) {
        let mut recent = self.recent_rejoins.lock();
        if recent.len() == REJOINS_IN_A_ROW {
            recent.pop_front();
        }
        recent.push_back(now_ms);
    }

    /// Whether the engine rejoined [`REJOINS_IN_A_ROW`] times within
    /// [`rejoins_window`](Self::rejoins_window) before `now_ms` and none of its own blocks was ordered since the last time (one that
    /// has, came back: healthy at once).
    pub fn rejoining_again_and_again(&self, now_ms: u64) -> bool {
        let recent = self.recent_rejoins.lock();
        let own = self.own_commit_ms.load(Ordering::Relaxed);
        recent.len() == REJOINS_IN_A_ROW
            && recent.front().is_some_and(|t| now_ms.saturating_sub(*t) < self.rejoins_window())
            && recent.back().is_some_and(|t| own < *t)
    }
}

/// The most of a replaced engine's held transactions its successor is given (the first
/// it names; the mempool hands the rest over again): each is looked up in the chain's index
/// on the validator's task, which proposes nothing meanwhile.
const MAX_CARRIED: usize = 65_536;

/// Groups transactions by sender (in address order), each sender's in nonce order: an
/// engine gives up what it holds in the order it holds it, and a sender's transaction that
/// went back to its queue from an own block never ordered comes after the sender's later
/// ones (execution holds a transaction that comes before its nonce only so far). Payloads
/// that do not decode come after their sender's others, in the order they were.
pub fn in_nonce_order(txs: &mut [Transaction]) {
    use alloy_consensus::Transaction as _;
    use alloy_eips::eip2718::Decodable2718;
    txs.sort_by_cached_key(|t| {
        let nonce = alloy_consensus::TxEnvelope::decode_2718(&mut &t.payload[..])
            .map_or(u64::MAX, |e| e.nonce());
        (t.sender, nonce)
    });
}

/// Rejoins within [`ValidatorStatus::rejoins_window`] that make a validator unhealthy: one that falls
/// behind again as soon as it has rejoined does not hear its peers, or they it, and each
/// rejoin starts the clocks `/health` reads again.
pub const REJOINS_IN_A_ROW: usize = 3;
/// The least window of [`REJOINS_IN_A_ROW`] (and of the two rejoins that make a validator
/// [troubled](ValidatorStatus::troubled)), the node's with `sync.stalled_secs` of 10 or less.
pub const REJOINS_WINDOW_MS: u64 = 60_000;

/// How long with commits but none of its own blocks ordered makes a validator
/// [troubled](ValidatorStatus::troubled).
pub const TROUBLE_MS: u64 = 3_000;

/// Makes the engine that rejoins from a snapshot (its first actions into the vector).
/// The `u64` is the highest round the validator proposed in so far (never to be proposed
/// in again).
pub type EngineFromSnapshot =
    Box<dyn Fn(&Snapshot, u64, &mut Vec<Action>) -> Box<dyn Consensus> + Send>;

/// How a validator that fell behind its peers' history rejoins: snapshots (checked against
/// the certified chain by whoever sends them) arrive on `snapshots`; `engine` builds the
/// engine that continues from one. The log then restarts with the snapshot.
pub struct Rejoin {
    /// Checked snapshots to rejoin from.
    pub snapshots: mpsc::Receiver<Arc<Snapshot>>,
    /// Builds the engine.
    pub engine: EngineFromSnapshot,
    /// Whether the chain holds a transaction, or cannot say (an index page it cannot
    /// read). The snapshot's checkpoint is carried by a final block of the chain, so every
    /// transaction committed up to its height is there; the old engine's held transactions
    /// that are go nowhere (one committed before the new engine's memory of commits would
    /// commit again; one the chain cannot tell of is left to the mempool's hand-overs).
    pub in_chain: Box<dyn Fn(&Transaction) -> bool + Send>,
}

/// What stopped a validator.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// Its consensus log failed.
    #[error(transparent)]
    Log(#[from] WalError),
    /// Its task panicked (a bug; the panic message went to the log).
    #[error("the validator's task panicked")]
    Panicked,
}

/// A running validator.
#[derive(Debug)]
pub struct Validator {
    submit: mpsc::Sender<Vec<Transaction>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WalError>>,
}

impl Validator {
    /// Starts `engine` (new, or recovered from `wal` with its replayed actions in
    /// `replayed`) on `network`. Commits go to `commits` (a full channel makes consensus
    /// wait: backpressure). Frames of kind [`NODE_FRAME_KIND`] and above go to
    /// `node_frames` (dropped when it is full or absent).
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        engine: Box<dyn Consensus>,
        replayed: Vec<Action>,
        network: Arc<Network>,
        inbound: farol_network::Inbound,
        wal: Wal,
        commits: mpsc::Sender<Committed>,
        node_frames: Option<NodeFrames>,
        cfg: ValidatorConfig,
    ) -> Validator {
        let parts = Parts { engine, replayed, network, inbound, wal, commits, node_frames };
        Validator::spawn_with(parts, cfg, None, Arc::default())
    }

    /// [`Validator::spawn`], able to rejoin from snapshots, reporting to `status`.
    pub fn spawn_with(
        parts: Parts,
        cfg: ValidatorConfig,
        rejoin: Option<Rejoin>,
        status: Arc<ValidatorStatus>,
    ) -> Validator {
        let (submit, submitted) = mpsc::channel(1024);
        let (stop, stopped) = oneshot::channel();
        let Parts { engine, replayed, network, inbound, wal, commits, node_frames } = parts;
        let task = tokio::spawn(run(
            engine,
            replayed,
            Route { network, node_frames },
            inbound,
            submitted,
            stopped,
            wal,
            commits,
            cfg,
            rejoin,
            status,
        ));
        Validator { submit, stop: Some(stop), task }
    }

    /// Where to submit transactions.
    pub fn submitter(&self) -> mpsc::Sender<Vec<Transaction>> {
        self.submit.clone()
    }

    /// Stops the validator and closes its connections. The error is what stopped it
    /// before, if something did.
    pub async fn stop(mut self) -> Result<(), StopError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.await {
            Ok(r) => Ok(r?),
            Err(e) if e.is_panic() => Err(StopError::Panicked),
            Err(_) => Ok(()),
        }
    }

    /// Whether the validator stopped by itself (its log failed, or it panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Kills the validator without any orderly shutdown (as a crash would).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// What a validator runs on (see [`Validator::spawn`]).
pub struct Parts {
    /// The engine, new or recovered from `wal`.
    pub engine: Box<dyn Consensus>,
    /// The actions its recovery produced.
    pub replayed: Vec<Action>,
    /// The validator network.
    pub network: Arc<Network>,
    /// Frames from it.
    pub inbound: farol_network::Inbound,
    /// The engine's log.
    pub wal: Wal,
    /// Where commits go.
    pub commits: mpsc::Sender<Committed>,
    /// Where the node's own frames go.
    pub node_frames: Option<NodeFrames>,
}

struct Route {
    network: Arc<Network>,
    node_frames: Option<NodeFrames>,
}

impl Route {
    /// Whether a frame is the engine's (else it went to the node).
    fn for_engine(&mut self, from: u16, bytes: &Bytes) -> bool {
        if bytes.first().is_some_and(|k| *k >= NODE_FRAME_KIND) {
            if let Some(n) = &mut self.node_frames {
                n.offer(from, bytes.clone());
            }
            return false;
        }
        true
    }
}

struct Executor {
    network: Arc<Network>,
    wal: Wal,
    commits: mpsc::Sender<Committed>,
    sync: bool,
    status: Arc<ValidatorStatus>,
}

impl Executor {
    /// Carries out the actions of one call into the engine: its records are appended and,
    /// with `sync`, synced once before anything leaves the validator: a message (its own
    /// block, which it must never contradict after a crash) or a commit (the application
    /// stores what it is derived from). The sync runs on tokio's blocking pool. Records
    /// nothing followed yet wait for the next call that sends or commits: a received block
    /// lost in a crash is fetched again.
    async fn execute(&mut self, out: &mut Vec<Action>) -> Result<(), WalError> {
        let pending = self.begin(out)?;
        self.complete(pending, out).await
    }

    /// [`Executor::execute`]'s first half: appends the records of `out` and starts the sync
    /// they need, without waiting for it.
    fn begin(&mut self, out: &[Action]) -> Result<Option<PendingSync>, WalError> {
        let mut leaves = false;
        for action in out {
            match action {
                Action::Persist(record) => {
                    self.wal.append(record)?;
                }
                Action::Send { .. } | Action::Commit(_) => leaves = true,
            }
        }
        if self.sync && leaves {
            return self.wal.start_sync();
        }
        Ok(None)
    }

    /// The second half: waits for the sync `begin` started, then sends the messages of
    /// `out` and hands on its commits.
    async fn complete(
        &mut self,
        pending: Option<PendingSync>,
        out: &mut Vec<Action>,
    ) -> Result<(), WalError> {
        if let Some(p) = pending {
            let took = self.wal.end_sync(p).await?;
            self.status.log_sync.record(took);
        }
        for action in out.drain(..) {
            match action {
                Action::Persist(_) => {}
                Action::Send { to, bytes } => match to {
                    Target::All => self.network.broadcast(bytes),
                    Target::One(v) => {
                        self.network.send(v.0, bytes);
                    }
                },
                Action::Commit(c) => {
                    self.status.height.store(c.height, Ordering::Relaxed);
                    self.status.last_commit_ms.store(unix_ms(), Ordering::Relaxed);
                    // The application may be gone (shutting down); consensus goes on.
                    let _ = self.commits.send(c).await;
                }
            }
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut engine: Box<dyn Consensus>,
    mut replayed: Vec<Action>,
    mut route: Route,
    mut inbound: farol_network::Inbound,
    mut submitted: mpsc::Receiver<Vec<Transaction>>,
    mut stopped: oneshot::Receiver<()>,
    mut wal: Wal,
    commits: mpsc::Sender<Committed>,
    cfg: ValidatorConfig,
    mut rejoin: Option<Rejoin>,
    status: Arc<ValidatorStatus>,
) -> Result<(), WalError> {
    status.started_ms.store(unix_ms(), Ordering::Relaxed);
    if cfg.sync {
        wal.write_ahead(cfg.write_ahead);
    }
    let mut ex = Executor { network: route.network.clone(), wal, commits, sync: cfg.sync, status };
    let mut out = std::mem::take(&mut replayed);
    // The actions of `finish`, apart from those of `handle_first` (see `step`).
    let mut rest = Vec::new();
    engine.set_time(unix_ms());
    engine.start(&mut out);
    ex.execute(&mut out).await?;
    // A log that starts with a snapshot and has no commit after it still has a height (the
    // replayed commits set it otherwise): before stop 41 it read 0 here, and block sync
    // took every checkpoint for one ahead of consensus.
    if let Some(s) = engine.snapshot() {
        ex.status.height.fetch_max(s.checkpoint.height, Ordering::Relaxed);
    }
    publish_snapshot(engine.as_ref(), &route, &ex.status);
    // The newest snapshots the log can be cut to, with the log position of the step that
    // took each, oldest first.
    let mut compaction = std::collections::VecDeque::new();
    // What the last cut left (a log that cannot get shorter is not rewritten every time).
    let mut left = 0u64;
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let input = tokio::select! {
            _ = &mut stopped => break,
            Some(first) = inbound.recv() => {
                let for_engine = |from, bytes: &Bytes| route.for_engine(from, bytes);
                let batch = take_frames(first, &mut inbound, &cfg, for_engine).await;
                if batch.is_empty() {
                    continue;
                }
                Input::Messages(batch)
            }
            Some(mut txs) = submitted.recv() => {
                take_submitted(&mut submitted, &mut txs, cfg.max_batch * 16);
                Input::Transactions(txs)
            }
            _ = tick.tick() => Input::Tick,
            Some(snapshot) = next_snapshot(&mut rejoin) => {
                let Some(r) = rejoin.as_ref() else { continue };
                // Consensus may have recovered while the snapshot was fetched and checked:
                // one at or below its height would only wind it back (since stop 41).
                if snapshot.checkpoint.height <= ex.status.height.load(Ordering::Relaxed) {
                    tracing::debug!(height = snapshot.checkpoint.height, "a snapshot not ahead of consensus: not taken");
                    continue;
                }
                // The highest round its key signed that the old engine knows of: its own
                // proposals and, since stop 58, blocks of its key from elsewhere (an earlier
                // life's) too; the new engine may propose in the snapshot's highest round,
                // so this, not the snapshot, must cover them.
                let floor = engine.signed_round();
                // What the old engine held (submitted here, not yet ordered) goes to the new
                // one: dropped, it waited for the mempool to hand it over again (every few
                // seconds; before stop 57), each time the validator rejoined.
                let mut held = engine.held_transactions();
                held.truncate(MAX_CARRIED);
                held.retain(|t| !(r.in_chain)(t));
                in_nonce_order(&mut held);
                let mut fresh = (r.engine)(&snapshot, floor, &mut out);
                // Its own blocks not yet ordered too (since stop 58): one the others never got
                // (sent while they could not hear it) is sent again by the new engine, which
                // may not sign that round again; lost, it left a committee with exactly a
                // quorum up waiting for it for good.
                fresh.adopt_own_blocks(engine.own_unordered_blocks(), &mut out);
                // The old log is history the new engine does not build on; the round it
                // reached stays (proposing there again would be equivocating).
                let floor_record = farol_consensus::checkpoint::round_floor_record(floor);
                ex.wal.reset(&[&snapshot.encode(), &floor_record])?;
                fresh.set_time(unix_ms());
                fresh.start(&mut out);
                let carried = held.len();
                if !held.is_empty() {
                    fresh.handle(Input::Transactions(held), &mut out);
                }
                engine = fresh;
                // Positions in the old log mean nothing in the new one; the snapshot the
                // new log starts with is the one the node serves now.
                publish_snapshot(engine.as_ref(), &route, &ex.status);
                compaction.clear();
                let s = &ex.status;
                s.rejoins.fetch_add(1, Ordering::Relaxed);
                s.rejoin_carried.fetch_add(carried as u64, Ordering::Relaxed);
                s.note_rejoin(unix_ms());
                // The new engine listens as a restarted one does (while another process signs
                // with the key it proposes nothing): whether it stood down starts again too.
                s.stood_down.store(false, Ordering::Relaxed);
                s.height.store(snapshot.checkpoint.height, Ordering::Relaxed);
                s.started_ms.store(unix_ms(), Ordering::Relaxed);
                tracing::info!(height = snapshot.checkpoint.height, carried, "consensus rejoined from a snapshot");
                ex.execute(&mut out).await?;
                left = ex.wal.len();
                continue;
            }
        };
        let offset = ex.wal.len();
        // Transactions submitted while the last step ran go in before this one: a step of
        // messages may complete a round and propose, and a transaction still in the channel
        // then would wait a whole round for the next proposal (at half load on the bench,
        // half of them reached the engine 1.6 ms or more after their submission, and were
        // proposed 4.3 ms after it at the median, about a round).
        if !matches!(input, Input::Transactions(_)) {
            let mut txs = Vec::new();
            take_submitted(&mut submitted, &mut txs, cfg.max_batch * 16);
            if !txs.is_empty() {
                let txs = Input::Transactions(txs);
                step(engine.as_mut(), &mut ex, txs, &mut out, &mut rest).await?;
            }
        }
        step(engine.as_mut(), &mut ex, input, &mut out, &mut rest).await?;
        if let Some(s) = publish_snapshot(engine.as_ref(), &route, &ex.status) {
            if compaction.len() == RECENT_SNAPSHOTS {
                compaction.pop_front();
            }
            compaction.push_back((s, offset));
        }
        compact(
            &mut ex.wal,
            &ex.status,
            &mut compaction,
            engine.round(),
            cfg.compact_bytes,
            &mut left,
        )?;
    }
    drop(ex);
    drop(route);
    Ok(())
}

/// The network readers' check of blocks' signatures for an engine of `chain` and
/// `committee` that looks in `cache` ([`farol_network::NetworkConfig::precheck`],
/// [`SignatureCache::precheck`]): the check runs beside the engine, not in its step.
pub fn signature_precheck(
    cache: Arc<SignatureCache>,
    committee: Arc<Committee>,
    chain: [u8; 32],
) -> farol_network::Precheck {
    farol_network::Precheck(Arc::new(move |_, frame| cache.precheck(&committee, &chain, frame)))
}

/// One input into `engine`, its actions carried out: what the next round waits for (the
/// engine's proposal) goes out first; commits and housekeeping follow. The engine works out
/// the rest (`finish`: ordering commits, the next coin share) while the disk syncs what the
/// proposal needs, and its actions are carried out after the proposal's, in order.
async fn step(
    engine: &mut dyn Consensus,
    ex: &mut Executor,
    input: Input,
    out: &mut Vec<Action>,
    rest: &mut Vec<Action>,
) -> Result<(), WalError> {
    engine.set_time(unix_ms());
    engine.handle_first(input, out);
    let pending = ex.begin(out)?;
    engine.finish(rest);
    ex.complete(pending, out).await?;
    ex.execute(rest).await
}

/// Where the driver takes frames from: the network's inbound queue (a channel in tests).
trait Frames: Send {
    /// The next frame if one is queued.
    fn try_next(&mut self) -> Option<(u16, Bytes)>;
    /// The next frame; `None` once there will be none.
    fn next(&mut self) -> impl std::future::Future<Output = Option<(u16, Bytes)>> + Send;
}

impl Frames for farol_network::Inbound {
    fn try_next(&mut self) -> Option<(u16, Bytes)> {
        self.try_recv().ok()
    }
    async fn next(&mut self) -> Option<(u16, Bytes)> {
        self.recv().await
    }
}

/// One step's frames: `first`, then those already queued and, with a
/// [`ValidatorConfig::batch_window`], those that come within it after `first`, up to
/// [`ValidatorConfig::max_batch`]. Those `for_engine` does not keep (the node's own frames,
/// handed on by it) are counted too: before stop 41 only the engine's were, and a peer
/// flooding tiny node frames kept this from ever ending (no ticks, no stop) while the
/// engine's frames waited.
async fn take_frames(
    first: (u16, Bytes),
    frames: &mut impl Frames,
    cfg: &ValidatorConfig,
    mut for_engine: impl FnMut(u16, &Bytes) -> bool,
) -> Vec<(ValidatorIndex, Bytes)> {
    let mut batch = Vec::new();
    if for_engine(first.0, &first.1) {
        batch.push((ValidatorIndex(first.0), first.1));
    }
    let until = tokio::time::Instant::now() + cfg.batch_window;
    let mut taken = 1;
    while taken < cfg.max_batch {
        taken += 1;
        let next = match frames.try_next() {
            Some(f) => f,
            // No window: only the frames already queued. A timeout at `until` would not end
            // at once: tokio rounds a timer's deadline up to its next whole millisecond and
            // fires it on the first turn of its driver after that (an idle runtime parks in
            // whole milliseconds), so until stop 61 every step of frames waited about a
            // millisecond more for one that was not coming (1.1 ms at the median, about 40 %
            // of a round at half load on the bench).
            None if cfg.batch_window.is_zero() => break,
            None => match tokio::time::timeout_at(until, frames.next()).await {
                Ok(Some(f)) => f,
                _ => break,
            },
        };
        if for_engine(next.0, &next.1) {
            batch.push((ValidatorIndex(next.0), next.1));
        }
    }
    batch
}

/// Moves the transactions already waiting in `submitted` into `txs`, until it holds `most`
/// (or more: batches are taken whole).
fn take_submitted(
    submitted: &mut mpsc::Receiver<Vec<Transaction>>,
    txs: &mut Vec<Transaction>,
    most: usize,
) {
    while txs.len() < most {
        match submitted.try_recv() {
            Ok(more) => txs.extend(more),
            Err(_) => break,
        }
    }
}

/// The next snapshot to rejoin from (never, without a rejoin channel).
async fn next_snapshot(rejoin: &mut Option<Rejoin>) -> Option<Arc<Snapshot>> {
    match rejoin {
        Some(r) => r.snapshots.recv().await,
        None => std::future::pending().await,
    }
}

/// What a validator that stood down says (in its log, once, and in `/health`).
pub const STOOD_DOWN: &str = "another process is signing consensus blocks with this validator's \
     key (blocks it did not sign, for rounds after it started, came from the others: a copy of \
     its data directory or its key running elsewhere); this validator stood down and proposes \
     nothing until it is restarted: stop one of the two, then restart the one kept";

/// A fault counter of `faults` (0 if not there).
fn fault(faults: &[(&'static str, u64)], kind: &str) -> u64 {
    faults.iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
}

/// Publishes the engine's round and fault counters (with the node frames `route` dropped),
/// and makes its newest snapshot the one
/// the node serves. Returns the snapshot when it is new.
fn publish_snapshot(
    engine: &dyn Consensus,
    route: &Route,
    status: &ValidatorStatus,
) -> Option<Arc<Snapshot>> {
    status.round.store(engine.round(), Ordering::Relaxed);
    status.seen_round.store(engine.seen_round(), Ordering::Relaxed);
    let own = engine.own_ordered_round();
    if own != status.own_ordered_round.swap(own, Ordering::Relaxed) && own > 0 {
        status.own_commit_ms.store(unix_ms(), Ordering::Relaxed);
    }
    let mut faults = engine.fault_counts();
    if let Some(n) = route.node_frames.as_ref().filter(|n| n.dropped > 0) {
        faults.push(("node_frames_dropped", n.dropped));
    }
    // Handshakes with validators (or anyone) speaking another protocol: other chain rules.
    let other = route.network.stats().other_protocol.load(Ordering::Relaxed);
    if other > 0 {
        faults.push(("other_protocol_handshakes", other));
    }
    let mut last = status.faults.lock();
    if fault(&last, "own_blocks_elsewhere") == 0 && fault(&faults, "own_blocks_elsewhere") > 0 {
        tracing::warn!(
            "peers hold blocks this validator signed that its consensus log does not (a backup \
             restored, a data directory copied, a log lost in a crash with pipeline.fsync off, \
             or another process running with its key): it proposes only in rounds above them"
        );
    }
    if fault(&faults, "other_signer") > 0 && !status.stood_down.swap(true, Ordering::Relaxed) {
        tracing::error!("{STOOD_DOWN}");
    }
    *last = faults;
    drop(last);
    let s = engine.snapshot()?;
    let mut slot = status.snapshot.lock();
    if slot.as_ref().is_some_and(|o| Arc::ptr_eq(o, &s)) {
        return None;
    }
    *slot = Some(s.clone());
    drop(slot);
    let mut recent = status.recent_snapshots.lock();
    if recent.len() == RECENT_SNAPSHOTS {
        recent.pop_front();
    }
    recent.push_back(s.clone());
    Some(s)
}

/// Snapshots a validator keeps to serve by height (`farol_getSnapshot`).
pub const RECENT_SNAPSHOTS: usize = 8;

/// Cuts the log once it holds `most` bytes, and twice what the last cut left: the newest
/// of the `pending` snapshots whose commit the node has stored, the round floor, then the
/// records logged from the step that took the snapshot on. A restart then rebuilds consensus
/// from the snapshot (commits from its height on) rather than from the whole history.
///
/// Several snapshots wait, not only the newest: under load the pipeline stores a commit
/// two or three checkpoints after consensus made it, so the newest snapshot is never stored
/// yet. Until stop 40 only the newest waited, and a validator whose pipeline trailed by more
/// than one checkpoint never cut its log. A cut empties `pending`: the positions of the
/// later snapshots mean nothing in the rewritten log.
fn compact(
    wal: &mut Wal,
    status: &ValidatorStatus,
    pending: &mut std::collections::VecDeque<(Arc<Snapshot>, u64)>,
    round: u64,
    most: u64,
    left: &mut u64,
) -> Result<(), WalError> {
    if most == 0 || wal.len() < most.max(left.saturating_mul(2)) {
        return Ok(());
    }
    let durable = status.durable_height.load(Ordering::Relaxed);
    let Some((s, from)) = pending.iter().rev().find(|(s, _)| s.checkpoint.height <= durable) else {
        return Ok(());
    };
    let floor = farol_consensus::checkpoint::round_floor_record(round);
    let before = wal.len();
    let snapshot = s.encode();
    // A snapshot too large for one record (blocks kept aside have no bound, consensus.md §7)
    // is not cut to: the log keeps its records, each within the limit, and the next cut waits
    // until the log has doubled. Until stop 47 such a record was written, and the next start
    // refused the log as damaged.
    if !Wal::fits(snapshot.len()) {
        tracing::warn!(
            bytes = snapshot.len(),
            height = s.checkpoint.height,
            "consensus snapshot too large for the log: not cut"
        );
        *left = wal.len();
        pending.clear();
        return Ok(());
    }
    wal.replace(&[&snapshot, &floor], *from)?;
    status.compactions.fetch_add(1, Ordering::Relaxed);
    *left = wal.len();
    tracing::debug!(
        before,
        after = wal.len(),
        height = s.checkpoint.height,
        "consensus log compacted"
    );
    pending.clear();
    Ok(())
}

/// The wall clock in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a validator of `engine` on `network` runs on, with nothing replayed and no
    /// frames for the node.
    fn parts(
        engine: Box<dyn Consensus>,
        (network, inbound): (Network, farol_network::Inbound),
        wal: Wal,
        commits: mpsc::Sender<Committed>,
    ) -> Parts {
        let network = Arc::new(network);
        Parts { engine, replayed: Vec::new(), network, inbound, wal, commits, node_frames: None }
    }

    /// An engine that reports what a rejoin must carry over, and records what it is given.
    struct Recording {
        round: u64,
        signed: u64,
        own: Vec<Bytes>,
        adopted: Arc<Mutex<Vec<Bytes>>>,
    }

    impl Consensus for Recording {
        fn start(&mut self, _: &mut Vec<Action>) {}
        fn handle(&mut self, _: Input, _: &mut Vec<Action>) {}
        fn round(&self) -> u64 {
            self.round
        }
        fn signed_round(&self) -> u64 {
            self.signed
        }
        fn own_unordered_blocks(&self) -> Vec<Bytes> {
            self.own.clone()
        }
        fn adopt_own_blocks(&mut self, blocks: Vec<Bytes>, _: &mut Vec<Action>) {
            self.adopted.lock().extend(blocks);
        }
    }

    /// A rejoin builds the new engine with the old one's signed round as its floor (not its
    /// round: blocks of its key from an earlier life can be higher, and the new engine may
    /// propose in the snapshot's top round) and hands it the old engine's own blocks not yet
    /// ordered (both since stop 58; until stop 59 checked only by reading the driver).
    #[tokio::test]
    async fn a_rejoin_carries_the_signed_round_and_the_own_blocks_over() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("consensus.wal");
        let (wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let id = farol_network::Identity::generate().unwrap_or_else(|e| panic!("{e}"));
        let addr = farol_network::free_loopback_addrs(1).unwrap_or_else(|e| panic!("{e}"))[0];
        let peers = vec![farol_network::Peer { key: id.public_key().clone(), addr }];
        let ncfg = farol_network::NetworkConfig::new(0, id, addr, peers);
        let (network, inbound) = Network::start(ncfg).unwrap_or_else(|e| panic!("{e}"));
        let (commits, _commits_rx) = mpsc::channel(16);
        let own = vec![Bytes::from_static(b"a block of its own, never ordered")];
        let old = Recording { round: 3, signed: 77, own: own.clone(), adopted: Arc::default() };
        let adopted = Arc::new(Mutex::new(Vec::new()));
        let floors = Arc::new(Mutex::new(Vec::new()));
        let (snapshots_tx, snapshots) = mpsc::channel(1);
        let (given, to_new) = (floors.clone(), adopted.clone());
        let engine: EngineFromSnapshot = Box::new(move |_, floor, _| {
            given.lock().push(floor);
            Box::new(Recording { round: 0, signed: 0, own: Vec::new(), adopted: to_new.clone() })
        });
        let rejoin = Rejoin { snapshots, engine, in_chain: Box::new(|_| false) };
        let parts = parts(Box::new(old), (network, inbound), wal, commits);
        let status = Arc::new(ValidatorStatus::default());
        let v =
            Validator::spawn_with(parts, ValidatorConfig::default(), Some(rejoin), status.clone());
        let checkpoint =
            farol_consensus::checkpoint::Checkpoint { height: 5, ..Default::default() };
        let snapshot = Arc::new(Snapshot { checkpoint, blocks: Vec::new() });
        snapshots_tx.send(snapshot).await.unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..500 {
            if status.rejoins.load(Ordering::Relaxed) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(status.rejoins.load(Ordering::Relaxed), 1, "the validator did not rejoin");
        assert_eq!(*floors.lock(), vec![77], "the floor is the old engine's signed round");
        assert_eq!(*adopted.lock(), own, "the old engine's own blocks go to the new one");
        v.stop().await.unwrap_or_else(|e| panic!("{e}"));
        // And the new log keeps the floor for a restart.
        let (_, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let floor = farol_consensus::checkpoint::round_floor_record(77);
        assert!(records.contains(&floor), "the rejoined log holds no floor of round 77");
    }

    /// An engine that records the kinds of input it is given, and holds its driver in
    /// `start` and in every step of messages until the test lets it go on.
    struct Gated {
        inputs: Arc<Mutex<Vec<&'static str>>>,
        gate: std::sync::mpsc::Receiver<()>,
    }

    impl Gated {
        /// Holds the driver until the test lets it go on, off the runtime's worker (a
        /// worker blocked in a task can hold up the runtime's timers).
        fn wait(&self) {
            let _ = tokio::task::block_in_place(|| self.gate.recv());
        }
    }

    impl Consensus for Gated {
        fn start(&mut self, _: &mut Vec<Action>) {
            self.wait();
        }
        fn handle(&mut self, input: Input, _: &mut Vec<Action>) {
            match input {
                Input::Transactions(_) => self.inputs.lock().push("transactions"),
                Input::Messages(_) => {
                    self.inputs.lock().push("messages");
                    self.wait();
                }
                Input::Tick => {}
            }
        }
        fn round(&self) -> u64 {
            0
        }
    }

    /// Transactions submitted while the driver was busy go into the engine before the
    /// frames that came meanwhile: a step of messages may complete a round and propose, and
    /// the transactions would otherwise wait a whole round. Before stop 60 the driver took
    /// whichever was ready at random, and this passed about once in 64 runs (it failed in
    /// both runs tried).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_waiting_go_in_before_the_frames_beside_them() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (wal, _) =
            Wal::open(&dir.path().join("consensus.wal")).unwrap_or_else(|e| panic!("{e}"));
        let ids =
            [(); 2].map(|_| farol_network::Identity::generate().unwrap_or_else(|e| panic!("{e}")));
        let addrs = farol_network::free_loopback_addrs(2).unwrap_or_else(|e| panic!("{e}"));
        let peers: Vec<farol_network::Peer> = ids
            .iter()
            .zip(&addrs)
            .map(|(id, addr)| farol_network::Peer { key: id.public_key().clone(), addr: *addr })
            .collect();
        let [id0, id1] = ids;
        let start = |i: u16, id, addr| {
            let cfg = farol_network::NetworkConfig::new(i, id, addr, peers.clone());
            Network::start(cfg).unwrap_or_else(|e| panic!("{e}"))
        };
        let (network, inbound) = start(0, id0, addrs[0]);
        let (peer, _peer_inbound) = start(1, id1, addrs[1]);
        let (commits, _commits_rx) = mpsc::channel(16);
        let inputs = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = std::sync::mpsc::channel();
        let engine = Box::new(Gated { inputs: inputs.clone(), gate });
        let parts = parts(engine, (network, inbound), wal, commits);
        // No ticks in the way.
        let cfg = ValidatorConfig { tick: Duration::from_secs(3600), ..ValidatorConfig::default() };
        let v = Validator::spawn_with(parts, cfg, None, Arc::new(ValidatorStatus::default()));
        let submit = v.submitter();
        for i in 0..6 {
            // The driver is held (in `start`, then in the last step of messages) while a
            // transaction and a frame arrive.
            let tx = Transaction { sender: [i; 20], payload: Bytes::from(vec![i; 8]) };
            submit.send(vec![tx]).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(peer.send(0, Bytes::from_static(b"\x01a frame for the engine")));
            tokio::time::sleep(Duration::from_millis(if i == 0 { 1000 } else { 300 })).await;
            open.send(()).unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..500 {
                if inputs.lock().len() >= 2 * (usize::from(i) + 1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let seen = inputs.lock().clone();
        assert_eq!(seen, ["transactions", "messages"].repeat(6), "the inputs in the order given");
        open.send(()).unwrap_or_else(|e| panic!("{e}"));
        v.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }

    impl Frames for mpsc::Receiver<(u16, Bytes)> {
        fn try_next(&mut self) -> Option<(u16, Bytes)> {
            self.try_recv().ok()
        }
        async fn next(&mut self) -> Option<(u16, Bytes)> {
            self.recv().await
        }
    }

    /// With no batch window a step takes the frames already queued and waits for nothing
    /// more: it runs here on a runtime without timers, where making one panics. Until stop
    /// 61 it waited for a timer due at once, which tokio fires on the next whole
    /// millisecond: each step of frames at half load waited about a millisecond more.
    #[test]
    fn without_a_window_a_step_takes_the_frames_queued_and_waits_for_no_timer() {
        let no_timers =
            tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        let (tx, mut rx) = mpsc::channel(8);
        let cfg = ValidatorConfig::default();
        assert!(cfg.batch_window.is_zero() && cfg.max_batch > 3);
        let got = no_timers.block_on(async {
            tx.send((2, Bytes::from_static(b"queued"))).await.unwrap_or_else(|e| panic!("{e}"));
            tx.send((3, Bytes::from_static(b"the node's"))).await.unwrap_or_else(|e| panic!("{e}"));
            let first = (1, Bytes::from_static(b"first"));
            take_frames(first, &mut rx, &cfg, |from, _| from != 3).await
        });
        let got: Vec<(u16, Bytes)> = got.into_iter().map(|(v, b)| (v.0, b)).collect();
        assert_eq!(got, [(1, Bytes::from_static(b"first")), (2, Bytes::from_static(b"queued"))]);
        drop(tx);
    }

    /// With a window a step waits for frames that come within it, stops waiting once it
    /// holds `max_batch`, and otherwise waits out the window.
    #[tokio::test]
    async fn with_a_window_a_step_takes_the_frames_that_come_within_it() {
        let (tx, mut rx) = mpsc::channel(8);
        // A window far longer than the test: only `max_batch` ends this step (a step that
        // ignored it would run into the outer timeout).
        let cfg = ValidatorConfig {
            batch_window: Duration::from_secs(3600),
            max_batch: 2,
            ..ValidatorConfig::default()
        };
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let later = (2, Bytes::from_static(b"later"));
            tx.send(later).await.unwrap_or_else(|e| panic!("{e}"));
            tx
        });
        let first = (1, Bytes::from_static(b"first"));
        let taking = take_frames(first.clone(), &mut rx, &cfg, |_, _| true);
        let got = tokio::time::timeout(Duration::from_secs(600), taking)
            .await
            .unwrap_or_else(|_| panic!("the step waited past max_batch"));
        assert_eq!(got.len(), 2, "the frame sent within the window was not taken");
        // Nothing more comes (the sender is still there): the step waits out a short window
        // and goes with the one frame it has.
        let _tx = sender.await.unwrap_or_else(|e| panic!("{e}"));
        let window = Duration::from_millis(30);
        let cfg = ValidatorConfig { batch_window: window, max_batch: 16, ..cfg };
        let started = tokio::time::Instant::now();
        let got = take_frames(first, &mut rx, &cfg, |_, _| true).await;
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() >= window, "the step did not wait out its window");
    }

    /// Under load the pipeline stores a commit a few checkpoints after consensus made it:
    /// the log is cut to the newest snapshot the node has stored, not only when the newest
    /// of all is stored. Until stop 40 this log was never cut.
    #[test]
    fn the_log_is_cut_to_the_newest_stored_snapshot() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("consensus.wal");
        let (mut wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let status = ValidatorStatus::default();
        let mut pending = std::collections::VecDeque::new();
        let snapshot = |height| {
            let checkpoint =
                farol_consensus::checkpoint::Checkpoint { height, ..Default::default() };
            Arc::new(Snapshot { checkpoint, blocks: Vec::new() })
        };
        let mut left = 0;
        // Snapshots at heights 64, 128 and 192, each after 100 records of a kilobyte.
        for (i, height) in [64, 128, 192].into_iter().enumerate() {
            for r in 0..100u32 {
                let record = [&(i as u32 * 100 + r).to_le_bytes()[..], &[7u8; 1020]].concat();
                wal.append(&record).unwrap_or_else(|e| panic!("{e}"));
            }
            pending.push_back((snapshot(height), wal.len()));
        }
        wal.append(b"last").unwrap_or_else(|e| panic!("{e}"));
        // Nothing stored yet: nothing to cut to.
        let cut = |wal: &mut Wal, pending: &mut _, left: &mut u64| {
            compact(wal, &status, pending, 9, 100_000, left).unwrap_or_else(|e| panic!("{e}"))
        };
        cut(&mut wal, &mut pending, &mut left);
        assert_eq!(status.compactions.load(Ordering::Relaxed), 0);
        // Stored up to 150: the cut is to 128's snapshot, which keeps what followed it.
        status.durable_height.store(150, Ordering::Relaxed);
        cut(&mut wal, &mut pending, &mut left);
        assert_eq!(status.compactions.load(Ordering::Relaxed), 1);
        assert!(pending.is_empty());
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let (_, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.len(), 2 + 100 + 1);
        let head = Snapshot::decode(&records[0]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(head.checkpoint.height, 128);
        assert_eq!(farol_consensus::checkpoint::decode_round_floor(&records[1]), Some(9));
        assert_eq!(records[2][..4], 200u32.to_le_bytes());
        assert_eq!(&records[102][..], b"last");
    }

    #[test]
    fn consensus_is_troubled_when_its_own_blocks_are_not_ordered() {
        let s = ValidatorStatus::default();
        let t0 = 1_000_000;
        s.started_ms.store(t0, Ordering::Relaxed);
        assert!(!s.troubled(t0 + 1_000), "just started");
        assert!(!s.troubled(t0 + 10_000), "no commit at all: a stall of everyone");
        s.last_commit_ms.store(t0 + 2_500, Ordering::Relaxed);
        s.own_commit_ms.store(t0 + 2_000, Ordering::Relaxed);
        assert!(!s.troubled(t0 + 4_000));
        // Commits go on, none of its own blocks among them.
        s.last_commit_ms.store(t0 + 5_000, Ordering::Relaxed);
        assert!(s.troubled(t0 + 5_000), "its own blocks are not ordered");
        assert!(!s.troubled(t0 + 8_000), "and then no commit at all");
        s.own_commit_ms.store(t0 + 4_900, Ordering::Relaxed);
        assert!(!s.troubled(t0 + 5_000));
        // One rejoin (its engine and clocks start again) is no trouble; a second with none
        // of its own blocks ordered since the first is, for a minute from the first.
        s.note_rejoin(t0 + 6_000);
        s.started_ms.store(t0 + 6_000, Ordering::Relaxed);
        s.last_commit_ms.store(t0 + 6_500, Ordering::Relaxed);
        assert!(!s.troubled(t0 + 7_000));
        s.note_rejoin(t0 + 9_000);
        s.started_ms.store(t0 + 9_000, Ordering::Relaxed);
        assert!(s.troubled(t0 + 9_000));
        assert!(s.troubled(t0 + 65_999));
        assert!(!s.troubled(t0 + 66_000));
        // One of its own blocks ordered since the first: no trouble.
        s.own_commit_ms.store(t0 + 7_000, Ordering::Relaxed);
        assert!(!s.troubled(t0 + 9_500));
    }

    #[test]
    fn held_transactions_are_carried_in_each_senders_nonce_order() {
        use alloy_consensus::{SignableTransaction, TxEip1559};
        use alloy_eips::eip2718::Encodable2718;
        use alloy_signer::SignerSync;
        let keys: Vec<alloy_signer_local::PrivateKeySigner> = [1u8, 2]
            .iter()
            .map(|b| alloy_signer_local::PrivateKeySigner::from_slice(&[*b; 32]))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        let tx = |k: usize, nonce: u64| {
            let t = TxEip1559 { chain_id: 1, nonce, gas_limit: 21_000, ..Default::default() };
            let sig = keys[k].sign_hash_sync(&t.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
            Transaction {
                sender: keys[k].address().into_array(),
                payload: t.into_signed(sig).encoded_2718().into(),
            }
        };
        let garbage =
            Transaction { sender: keys[0].address().into_array(), payload: vec![7].into() };
        let mut held = vec![tx(0, 5), tx(1, 2), garbage.clone(), tx(0, 3), tx(1, 1), tx(0, 4)];
        in_nonce_order(&mut held);
        let a = |n| tx(0, n);
        let b = |n| tx(1, n);
        let (first, second) = if keys[0].address() < keys[1].address() {
            (vec![a(3), a(4), a(5), garbage], vec![b(1), b(2)])
        } else {
            (vec![b(1), b(2)], vec![a(3), a(4), a(5), garbage])
        };
        assert_eq!(held, [first, second].concat());
    }

    #[test]
    fn rejoins_in_a_row_are_counted_within_their_window() {
        let s = ValidatorStatus::default();
        s.note_rejoin(1_000);
        s.note_rejoin(20_000);
        assert!(!s.rejoining_again_and_again(21_000), "two");
        s.note_rejoin(40_000);
        assert!(s.rejoining_again_and_again(40_000));
        assert!(s.rejoining_again_and_again(999 + REJOINS_WINDOW_MS));
        assert!(!s.rejoining_again_and_again(1_000 + REJOINS_WINDOW_MS), "the first is too old");
        s.note_rejoin(70_000);
        assert!(s.rejoining_again_and_again(70_000));
        // One of its own blocks ordered since the last rejoin: it came back.
        s.own_commit_ms.store(70_500, Ordering::Relaxed);
        assert!(!s.rejoining_again_and_again(71_000));
    }

    /// A node whose block sync waits 20 s or more before it syncs spaces its rejoins out by
    /// at least that: the window grows with the setting, or three never fit in it.
    #[test]
    fn rejoins_are_counted_over_a_window_that_fits_the_stall_setting() {
        let rejoins = |s: &ValidatorStatus| {
            for t in [1_000, 36_000, 71_000] {
                s.note_rejoin(t);
            }
        };
        let s = ValidatorStatus::default();
        s.count_rejoins_for(Duration::from_secs(3));
        assert_eq!(s.rejoins_window(), REJOINS_WINDOW_MS, "the default setting");
        rejoins(&s);
        assert!(!s.rejoining_again_and_again(72_000), "70 s apart: past a minute");
        assert!(s.troubled(72_000), "the last two are 35 s apart");
        let s = ValidatorStatus::default();
        s.count_rejoins_for(Duration::from_secs(20));
        assert_eq!(s.rejoins_window(), 90_000);
        rejoins(&s);
        assert!(s.rejoining_again_and_again(72_000));
        assert!(s.rejoining_again_and_again(90_999));
        assert!(!s.rejoining_again_and_again(91_000));
        let s = ValidatorStatus::default();
        s.count_rejoins_for(Duration::from_secs(30));
        assert_eq!(s.rejoins_window(), 120_000);
        s.note_rejoin(1_000);
        s.note_rejoin(80_000);
        assert!(s.troubled(80_000), "two rejoins 79 s apart, each after a stall of 30 s");
        assert!(!s.troubled(121_000));
        // An absurd setting neither overflows nor shortens the window.
        s.count_rejoins_for(Duration::from_secs(u64::MAX));
        assert_eq!(s.rejoins_window(), u64::MAX);
    }

    #[test]
    fn node_frames_are_queued_within_each_validators_share() {
        let (capacity, share) = node_frames_queue(4);
        assert_eq!((capacity, share), (4096, 1024));
        // Past 64 validators the queue grows with the committee.
        assert_eq!(node_frames_queue(100), (6400, 64));
        let (tx, mut rx) = mpsc::channel(capacity);
        let mut frames = NodeFrames::new(tx, share);
        let vote = Bytes::from(vec![NODE_FRAME_KIND; 139]);
        // A faulty validator floods: only its share waits.
        for _ in 0..share + 10 {
            frames.offer(3, vote.clone());
        }
        assert_eq!(frames.dropped, 10);
        // The others' frames still get through.
        assert!(frames.offer(1, vote.clone()));
        // A frame over the limit is dropped whoever sends it.
        assert!(!frames.offer(2, Bytes::from(vec![NODE_FRAME_KIND; MAX_NODE_FRAME + 1])));
        assert!(frames.offer(2, Bytes::from(vec![NODE_FRAME_KIND; MAX_NODE_FRAME])));
        assert_eq!(frames.dropped, 11);
        // Taking its frames gives the flooder its share back.
        for _ in 0..5 {
            let f = rx.try_recv().expect("a queued frame");
            assert_eq!(f.from, 3);
        }
        for _ in 0..5 {
            assert!(frames.offer(3, vote.clone()));
        }
        assert!(!frames.offer(3, vote.clone()));
        // A frame the full queue refuses gives its place back too.
        let (tx, _rx) = mpsc::channel(1);
        let mut frames = NodeFrames::new(tx, share);
        assert!(frames.offer(0, vote.clone()));
        assert!(!frames.offer(0, vote.clone()));
        assert_eq!(frames.held[&0].load(Ordering::Relaxed), 1);
    }
}
