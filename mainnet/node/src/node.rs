//! A running node: consensus, the pipeline, the mempool, block finality and JSON-RPC, wired
//! together from a [`NodeConfig`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use farol_consensus::{
    AsyncBft, Committee, Config as ConsensusConfig, SignatureCache, Transaction, ValidatorIndex,
};
use farol_crypto::{ed25519, SecretKey};
use farol_network::{Identity, Network, NetworkConfig, Peer};
use farol_store::{FsyncPolicy, Options as StoreOptions, Store};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::chain::Chain;
use crate::config::{NodeConfig, ValidatorKeys};
use crate::finality::Finality;
use crate::genesis::Genesis;
use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::pipeline::{self, PipelineConfig, PipelineError, State, Work};
use crate::rpc::{self, Rpc};
use crate::sync::{self, SyncConfig};
use crate::validator::{Parts, Rejoin, Validator, ValidatorConfig};
use crate::wal::Wal;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A key or setting in the configuration is unusable.
    #[error("{field}: {reason}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The data directory could not be opened.
    #[error("{what}: {reason}")]
    Storage {
        /// What failed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
}

fn config_err(field: impl Into<String>, reason: impl ToString) -> NodeError {
    NodeError::Config { field: field.into(), reason: reason.to_string() }
}

fn storage_err(what: &'static str, reason: impl ToString) -> NodeError {
    NodeError::Storage { what, reason: reason.to_string() }
}

/// A validator's data directory holds its consensus log: its own blocks and votes. Started
/// with another validator's keys (`--data-dir` naming the wrong directory), a node would
/// replay that history as its own and could sign a second block in a round the other
/// validator proposed in. So the first validator to use a directory leaves its position and
/// key there (`validator.json`), and another is refused (since stop 41). A full node may use
/// any directory, and a directory from before stop 41 takes the first validator that starts
/// on it.
fn check_validator_identity(dir: &std::path::Path, cfg: &NodeConfig) -> Result<(), NodeError> {
    let Some(keys) = &cfg.validator else { return Ok(()) };
    let Some(member) = cfg.committee.get(usize::from(keys.index)) else {
        return Err(config_err("validator.index", "is not a position in the committee"));
    };
    let ours = serde_json::json!({ "index": keys.index, "bls_public": member.bls_public });
    match kept_record(dir, "validator.json", &ours)? {
        Some(before) => Err(config_err(
            "validator",
            format!(
                "{} belongs to validator {} ({}): these keys are validator {}'s",
                dir.display(),
                before["index"],
                dir.join("validator.json").display(),
                keys.index
            ),
        )),
        None => Ok(()),
    }
}

/// `ours`, kept in `dir/name` (written atomically) the first time; afterwards what that
/// file holds when it is not `ours` (`None`: the same).
fn kept_record(
    dir: &std::path::Path,
    name: &str,
    ours: &serde_json::Value,
) -> Result<Option<serde_json::Value>, NodeError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(before) => {
            let before: serde_json::Value = serde_json::from_slice(&before)
                .map_err(|e| storage_err("reading a record", format!("{name}: {e}")))?;
            Ok((before != *ours).then_some(before))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec_pretty(ours)
                .map_err(|e| storage_err("encoding a record", format!("{name}: {e}")))?;
            write_file_atomically(dir, &path, &bytes)
                .map_err(|e| storage_err("writing a record", format!("{name}: {e}")))?;
            Ok(None)
        }
        Err(e) => Err(storage_err("reading a record", format!("{name}: {e}"))),
    }
}

/// The committee a data directory's chain was started with: a node started on it with
/// another (keys, stakes, fee recipients or coin keys; the members' network addresses may
/// change) is refused. A full node checks blocks with the committee's certificates, so over
/// another committee's configuration it would follow whatever that committee certifies on
/// top of this chain (since stop 42; before, only the genesis was kept). A directory from
/// before stop 42 takes the committee it next starts with.
fn check_committee(
    dir: &std::path::Path,
    cfg: &NodeConfig,
    genesis_hash: &alloy_primitives::B256,
) -> Result<(), NodeError> {
    let tag = chain_tag(cfg.genesis.chain_id, genesis_hash, &cfg.committee);
    let ours = serde_json::json!({
        "validators": cfg.committee.len(),
        "tag": alloy_primitives::hex::encode(tag),
    });
    match kept_record(dir, "committee.json", &ours)? {
        Some(_) => Err(config_err(
            "committee",
            format!(
                "differs from the committee {} was started with ({}): its keys, stakes, fee \
                 recipients or coin keys changed (network addresses may change)",
                dir.display(),
                dir.join("committee.json").display()
            ),
        )),
        None => Ok(()),
    }
}

/// A running node.
pub struct Node {
    /// The chain and state it serves.
    pub state: Arc<State>,
    /// Where HTTP JSON-RPC listens.
    pub http: Option<SocketAddr>,
    /// Where WebSocket JSON-RPC listens.
    pub ws: Option<SocketAddr>,
    validator: Option<Validator>,
    pipeline: std::thread::JoinHandle<Result<(), PipelineError>>,
    tasks: Vec<JoinHandle<()>>,
    /// The node's own handle on the pipeline's work queue (the sync thread holds a weak one).
    work: Option<mpsc::Sender<Work>>,
    stop_sync: Arc<AtomicBool>,
    /// Set when the node stops: JSON-RPC's WebSocket sessions end (HTTP connections end
    /// with the listeners' tasks).
    closing: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({:?})", self.state)
    }
}

/// The consensus chain tag: the chain id, the genesis block hash and the committee (keys,
/// stakes, fee recipients; not network addresses), so that neither blocks nor votes of one
/// chain count in another, and validators configured with different committees (whose
/// blocks would differ: the fee recipient is the leader's) refuse each other's blocks at
/// once instead of diverging later.
fn chain_tag(
    chain_id: u64,
    genesis_hash: &alloy_primitives::B256,
    committee: &[crate::config::Member],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"farol/chain/2");
    h.update(&chain_id.to_le_bytes());
    h.update(genesis_hash.as_slice());
    h.update(&(committee.len() as u64).to_le_bytes());
    for m in committee {
        let coin: &[u8] = m.coin_public.as_ref().map_or(&[], |c| c.as_ref());
        for part in [m.bls_public.as_ref(), m.network_public.as_ref(), coin] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(&m.stake.to_le_bytes());
        h.update(m.fee_recipient.as_slice());
    }
    *h.finalize().as_bytes()
}

/// The version of the chain's rules this farol runs: what a block executes to and how
/// consensus orders. It rises with every change to them (release notes and docs say "a rule
/// change"), and validators of different versions do not connect (they speak different
/// validator protocols, [`validator_protocol`]), so that a committee whose farols were
/// upgraded one by one across such a change stalls, naming the cause, instead of making
/// blocks it cannot agree on. 1: stop 52's rules (farols before stop 52 named no version).
pub const CHAIN_RULES: u32 = 1;

/// The validator network's protocol name (TLS ALPN) for [`CHAIN_RULES`].
pub fn validator_protocol() -> Vec<u8> {
    format!("farol-validator/1 rules/{CHAIN_RULES}").into_bytes()
}

/// The mempool's journal in the data directory.
pub const MEMPOOL_JOURNAL: &str = "mempool.journal";

/// Opens the mempool journal at `path` and returns it with the transactions it holds. They
/// stay in it until a rewrite ([`Mempool::compact_journal`]) keeps only what waits, so a
/// node stopped while it reads them back loses none. A damaged journal is set aside (renamed
/// `.damaged`) rather than stopping the node: it only ever held what clients sent.
/// Writes `bytes` to `path` in `dir` atomically: a temporary file, synced, renamed over
/// `path`, the directory synced.
fn write_file_atomically(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn open_journal(path: &std::path::Path) -> Result<(Wal, Vec<bytes::Bytes>), NodeError> {
    let opened = match Wal::open(path) {
        Ok(o) => o,
        // Only a damaged journal is set aside; an I/O error (a full disk, a permission)
        // fails the start and leaves the file as it is (since stop 55: it was set aside,
        // and the transactions it held lost).
        Err(e @ crate::wal::WalError::Corrupt { .. }) => {
            tracing::warn!("mempool journal: {e}; setting it aside");
            let aside = path.with_extension("damaged");
            std::fs::rename(path, &aside)
                .map_err(|e| storage_err("setting the mempool journal aside", e))?;
            Wal::open(path).map_err(|e| storage_err("opening the mempool journal", e))?
        }
        Err(e) => return Err(storage_err("opening the mempool journal", e)),
    };
    Ok(opened)
}

/// The signers of a block's EIP-7702 authorizations, with their nonces after it.
type AuthorityNonces = Vec<(alloy_primitives::Address, u64)>;

/// What the pool's task is told.
enum Event<'a> {
    /// A block stored, with the nonces its authorizations set.
    Block(Arc<crate::chain::StoredBlock>, AuthorityNonces),
    /// The feed of stored blocks skipped some: every block since the last one cleared.
    Lagged,
    /// Time to hand over again what consensus may have lost (not among these, ordered);
    /// whether this validator's consensus is in trouble.
    Rehand(std::collections::HashSet<alloy_primitives::B256>, bool),
    /// Time to expire what waited too long.
    Expire,
    /// Room in the channel to consensus, for what waits to be handed over.
    Room(crate::mempool::Place<'a>),
}

/// The signers of `block`'s EIP-7702 authorizations with their nonces after it, for the
/// mempool ([`Mempool::on_block`]). Read without the pool's lock; a state no longer kept
/// leaves the signer out (its waiting transactions then wait as before).
fn authority_nonces(state: &Arc<State>, block: &crate::chain::StoredBlock) -> AuthorityNonces {
    use farol_execution::StateView as _;
    let authorities = crate::mempool::authorities(block);
    if authorities.is_empty() {
        return Vec::new();
    }
    let Ok(view) = state.view(block.number()) else { return Vec::new() };
    authorities
        .into_iter()
        .filter_map(|a| Some((a, view.account(a).ok()?.map_or(0, |acct| acct.nonce))))
        .collect()
}

/// The folder of the data directory that holds compiled WASM modules.
pub const WASM_CACHE: &str = "wasm";

impl Node {
    /// Opens the data directory (creating the genesis on first start), recovers consensus
    /// from its log, and starts every part. Must run inside a tokio runtime.
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        let dir = cfg.data_dir.clone();
        let fresh = !dir.exists();
        // The error names the directory and the setting (before stop 46 it said only
        // "creating the data directory: File exists" for a path that is a file).
        std::fs::create_dir_all(&dir).map_err(|e| {
            config_err("data_dir", format!("{}: cannot be made a directory: {e}", dir.display()))
        })?;
        // A new directory's entry made durable in its parent: a power loss soon after the
        // first start could otherwise lose the whole directory, consensus log included
        // (since stop 41).
        if fresh {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                // A parent this user may write but not read cannot be opened: said, not fatal.
                if let Err(e) = std::fs::File::open(parent).and_then(|f| f.sync_all()) {
                    tracing::warn!(parent = %parent.display(), "not synced: {e}");
                }
            }
        }
        let metrics = Arc::new(Metrics::default());
        // Compiled WASM modules are kept in the data directory (docs/wasm.md §5): a module
        // that left memory, and every module after a restart, is loaded from there rather
        // than validated, rewritten and compiled again. The process has one runtime, started
        // by the first WASM work (the last node started in a process names its folder).
        farol_execution::wasm::use_disk_cache(dir.join(WASM_CACHE));

        // State and chain.
        let store_opts = StoreOptions {
            fsync: if cfg.pipeline.fsync { FsyncPolicy::Always } else { FsyncPolicy::Never },
            retain_versions: match cfg.pipeline.retain_versions {
                0 => None,
                n => Some(n),
            },
            ..StoreOptions::default()
        };
        let store = Store::open(dir.join("state"), store_opts)
            .map_err(|e| storage_err("opening the state", e))?;
        let genesis = cfg.genesis.clone();
        // The genesis a data directory was started with is kept beside it; another one is
        // refused (it would be another chain over the same data). It is written before the
        // chain is created, so a chain without it is not one this node made (a directory
        // copied without it): since stop 41 that is refused, where before any genesis was
        // taken and written down as the chain's (the genesis block's hash does not cover
        // the chain id, the allocations or the consensus parameters, so it cannot tell).
        let kept = dir.join("genesis.json");
        match std::fs::read(&kept) {
            Ok(before) => {
                let before: Genesis = serde_json::from_slice(&before)
                    .map_err(|e| storage_err("reading genesis.json", e))?;
                if before != genesis {
                    return Err(config_err(
                        "genesis",
                        format!(
                            "differs from the genesis {} was started with ({})",
                            dir.display(),
                            kept.display()
                        ),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if store.latest_version().is_some() || dir.join("blocks.log").exists() {
                    return Err(config_err(
                        "genesis",
                        format!(
                            "{} holds a chain but not its genesis ({}): restore that file \
                             (every node of the chain has the same) or use a fresh directory",
                            dir.display(),
                            kept.display()
                        ),
                    ));
                }
                // Atomically (a temporary file, synced, renamed, the directory synced): before
                // stop 38 a power loss right after the first start could leave it empty, and
                // every start after refused the data directory.
                let ours = serde_json::to_vec_pretty(&genesis)
                    .map_err(|e| storage_err("encoding the genesis", e))?;
                write_file_atomically(&dir, &kept, &ours)
                    .map_err(|e| storage_err("writing genesis.json", e))?;
            }
            Err(e) => return Err(storage_err("reading genesis.json", e)),
        }
        let genesis_root = match store.latest_version() {
            None => Some(
                store
                    .apply(0, genesis.state().store_changes())
                    .map_err(|e| storage_err("writing the genesis state", e))?,
            ),
            // Once the chain is longer than `retain_versions`, the store no longer holds
            // version 0: the genesis block in the block log says what its root was (before
            // stop 27 such a node could not start again).
            Some(_) => match store.root(0) {
                Ok(r) => Some(r),
                Err(farol_store::StoreError::Pruned { .. }) => None,
                Err(e) => return Err(storage_err("reading the genesis state", e)),
            },
        };
        let g = genesis.clone();
        let chain = Chain::open(&dir, move || g.block(genesis_root.unwrap_or_default()))
            .map_err(|e| storage_err("opening the block log", e))?;
        let genesis_block =
            chain.block(0).ok_or_else(|| storage_err("the block log", "no genesis block"))?;
        let genesis_root = match genesis_root {
            Some(r) => r,
            // The block log had no genesis to give (only a zero root could have come from
            // it here): refuse rather than run a chain on a made-up genesis.
            None if genesis_block.header.state_root.is_zero() => {
                return Err(storage_err(
                    "the block log",
                    "holds no genesis block, and the state no longer holds the genesis version",
                ))
            }
            None => genesis_block.header.state_root,
        };
        if genesis_block.hash != genesis.block(genesis_root).hash {
            return Err(config_err(
                "genesis",
                format!("differs from the genesis block of {}", dir.display()),
            ));
        }
        let head = chain.head_number();
        if store.latest_version().unwrap_or(0) < head {
            return Err(storage_err(
                "the state",
                format!("is behind the block log (block {head})"),
            ));
        }
        // A block's state is stored just before the block, one block at a time: the state
        // can be one version ahead after a crash between the two, never more. More is
        // another chain's state, or a log that lost blocks, and the node would take those
        // versions for blocks it has yet to execute (since stop 41; before, it started).
        if let Some(v) = store.latest_version().filter(|v| *v > head + 1) {
            return Err(storage_err(
                "the state",
                format!("is at version {v}, more than one ahead of the block log (block {head})"),
            ));
        }
        metrics.head.store(head, Ordering::Relaxed);
        metrics.head_stored_ms.store(crate::validator::unix_ms(), Ordering::Relaxed);
        metrics.executed.store(head, Ordering::Relaxed);
        metrics.finalized.store(chain.finalized_number(), Ordering::Relaxed);

        // The committee (its keys checked by `validate` already, before anything was
        // written; parsed again here for a configuration that skipped it).
        let (committee, peers) = cfg.committee().map_err(|e| match e {
            crate::config::ConfigError::Invalid { field, reason } => config_err(field, reason),
            e => config_err("committee", e),
        })?;
        let coin = committee.coin().is_some();
        if !coin {
            tracing::warn!(
                "the committee has no coin keys: consensus is live under partial synchrony only"
            );
        }
        let committee = Arc::new(committee);
        // Recorded once the committee's keys are known good (since stop 42): a first start
        // refused for a bad key must not leave that committee as the directory's.
        check_validator_identity(&dir, &cfg)?;
        check_committee(&dir, &cfg, &genesis_block.hash)?;
        let fee_recipients = cfg.committee.iter().map(|m| m.fee_recipient).collect();
        let state = Arc::new(State::new(
            Arc::new(chain),
            Arc::new(store),
            genesis.clone(),
            fee_recipients,
            metrics.clone(),
        ));

        state.validator.coin.store(coin, Ordering::Relaxed);
        // Consensus may cut its log to snapshots of commits stored in full.
        {
            let o = &state.chain.head().ordering;
            let durable = if o.last_in_group { o.height } else { o.first.saturating_sub(1) };
            state.validator.durable_height.store(durable, Ordering::Relaxed);
        }

        // The pipeline's work: this validator's commits, and blocks synced from peers.
        let (work_tx, work_rx) = mpsc::channel::<Work>(64);
        let mut tasks = Vec::new();
        let mut role = "full node".to_string();
        let (validator, submit, rejoin) = match &cfg.validator {
            Some(keys) => {
                let (v, submit, rejoin) = start_validator(
                    &cfg,
                    keys,
                    &committee,
                    peers,
                    &genesis_block.hash,
                    &state,
                    work_tx.clone(),
                    &mut tasks,
                )?;
                role = format!("validator {}", keys.index);
                (Some(v), submit, Some(rejoin))
            }
            None => {
                let (submit, forward) = mpsc::channel(1024);
                sync::spawn_forwarder(cfg.sync.peers.clone(), forward, state.instance.clone())
                    .map_err(|e| storage_err("starting the forwarding thread", e))?;
                (None, submit, None)
            }
        };
        let pcfg = PipelineConfig {
            pipelined: cfg.pipeline.pipelined,
            queue: 4,
            threads: cfg.pipeline.threads,
        };
        let pipeline = pipeline::spawn(state.clone(), work_rx, pcfg);
        let stop_sync = Arc::new(AtomicBool::new(false));
        let weak_work = work_tx.downgrade();
        // From here on consensus and the pipeline run: a later step that fails stops them
        // again (since stop 42; before, they went on after `start` returned its error, and
        // a retry in the same process found the store still locked).
        let mut node = Node {
            state: state.clone(),
            http: None,
            ws: None,
            validator,
            pipeline,
            tasks,
            work: Some(work_tx),
            stop_sync: stop_sync.clone(),
            closing: tokio::sync::watch::Sender::new(false),
        };
        let rest = node
            .start_rest(
                &cfg,
                &genesis,
                &committee,
                &genesis_block.hash,
                metrics,
                weak_work,
                submit,
                rejoin,
                &role,
                head,
            )
            .await;
        match rest {
            Ok(()) => Ok(node),
            Err(e) => {
                // Not `stop`: this function still holds the state, which it drops as it
                // returns; waiting here for the store to be let go would wait in vain.
                if let Err(stopped) = node.halt().await {
                    tracing::warn!("stopping what had started: {stopped}");
                }
                Err(e)
            }
        }
    }

    /// The parts of [`Node::start`] after consensus and the pipeline: block sync, the
    /// mempool and JSON-RPC.
    #[allow(clippy::too_many_arguments)]
    async fn start_rest(
        &mut self,
        cfg: &NodeConfig,
        genesis: &Genesis,
        committee: &Arc<Committee>,
        genesis_hash: &alloy_primitives::B256,
        metrics: Arc<Metrics>,
        weak_work: mpsc::WeakSender<Work>,
        submit: mpsc::Sender<Vec<Transaction>>,
        rejoin: Option<SnapshotSender>,
        role: &str,
        head: u64,
    ) -> Result<(), NodeError> {
        let state = self.state.clone();
        let tasks = &mut self.tasks;
        let stop_sync = &self.stop_sync;
        if !cfg.sync.peers.is_empty() {
            let scfg = SyncConfig {
                peers: cfg.sync.peers.clone(),
                chain_id: genesis.chain_id,
                committee: committee.clone(),
                when_stalled: self
                    .validator
                    .is_some()
                    .then(|| Duration::from_secs(cfg.sync.stalled_secs)),
                poll: Duration::from_millis(cfg.sync.poll_millis),
                segment: cfg.sync.headers_per_request,
                slow_answer: Duration::from_millis(cfg.sync.slow_answer_millis),
                rejoin,
                chain_tag: chain_tag(genesis.chain_id, genesis_hash, &cfg.committee),
            };
            sync::spawn(state.clone(), weak_work, scfg, stop_sync.clone())
                .map_err(|e| storage_err("starting the sync thread", e))?;
        }

        // Mempool: stored blocks clear it; what they unblock goes to consensus.
        let mut pool = Mempool::new(
            cfg.mempool.clone(),
            genesis.chain_spec(),
            genesis.base_fee,
            genesis.gas_limit,
        );
        let journaled = if cfg.mempool.journal {
            let (journal, records) = open_journal(&cfg.data_dir.join(MEMPOOL_JOURNAL))?;
            pool.set_journal(journal);
            // Not rewritten before its records are read back (`Rpc::readmit`).
            pool.set_reading_back(!records.is_empty());
            records
        } else {
            Vec::new()
        };
        let mempool = Arc::new(Mutex::new(pool));
        // While a validator's consensus is in trouble, what its pool hands over again also
        // goes to its peers' JSON-RPC, as a full node's transactions go (since stop 57): a
        // validator the others do not hear (its UDP blocked, say, while its JSON-RPC and
        // block sync get through) proposes them to no one, however often they are handed
        // over again. (Only then: a healthy validator's peers would only take the same
        // transactions through a second door, and under load that doubles the work.)
        // (Its own address, listed by mistake, would take them and order them no better:
        // the forwarder leaves out a peer whose `farol_status` names this node.)
        let peers: Vec<_> = cfg
            .sync
            .peers
            .iter()
            .filter(|p| !cfg.rpc.http.is_some_and(|own| same_listener(**p, own)))
            .copied()
            .collect();
        let fallback = match (&self.validator, peers.is_empty()) {
            (Some(_), false) => {
                let (tx, rx) = mpsc::channel::<Vec<Transaction>>(16);
                sync::spawn_forwarder(peers, rx, state.instance.clone())
                    .map_err(|e| storage_err("starting the forwarding thread", e))?;
                Some(tx)
            }
            _ => None,
        };
        {
            let submit = submit.clone();
            let mempool = mempool.clone();
            let mut blocks = state.blocks.subscribe();
            let metrics = metrics.clone();
            let state = state.clone();
            let lifetime = cfg.mempool.lifetime_secs;
            let validator = self.validator.is_some();
            tasks.push(tokio::spawn(async move {
                let mut expire = tokio::time::interval(Duration::from_millis(500));
                let mut rehand = tokio::time::interval(REHAND_TICK);
                let mut rehanded = Instant::now();
                // When each transaction last went to the peers' JSON-RPC.
                let mut forwarded: std::collections::HashMap<alloy_primitives::B256, Instant> =
                    Default::default();
                // The newest block the pool was cleared of.
                let mut cleared = state.chain.head_number();
                loop {
                    // Released transactions that found no room wait in the pool, in order.
                    let backlog = mempool.lock().has_unsent();
                    let event = tokio::select! {
                        b = blocks.recv() => match b {
                            Ok(b) => {
                                cleared = cleared.max(b.number());
                                let auths = authority_nonces(&state, &b);
                                Event::Block(b, auths)
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                // Catch up from the chain itself, every block missed, a block
                                // at a time below.
                                Event::Lagged
                            }
                            Err(_) => break,
                        },
                        // Copied first: the pool's lock is never held with another.
                        _ = rehand.tick() => {
                            // Sooner, and every tick, while this validator's consensus is in
                            // trouble (since stop 57; before, every 5 s after 10 s).
                            let troubled = validator
                                && state.validator.troubled(crate::validator::unix_ms());
                            if !troubled && rehanded.elapsed() < REHAND_EVERY {
                                continue;
                            }
                            rehanded = Instant::now();
                            Event::Rehand(state.ordered.lock().keys().copied().collect(), troubled)
                        }
                        _ = expire.tick() => Event::Expire,
                        room = submit.reserve(), if backlog => match room {
                            Ok(place) => Event::Room(place),
                            // Consensus is gone; the pool lets what waits go at its next
                            // hand-over.
                            Err(_) => Event::Expire,
                        },
                    };
                    let expired = matches!(event, Event::Expire);
                    let one = |m: &mut Mempool,
                               b: &crate::chain::StoredBlock,
                               auths: &AuthorityNonces| {
                        let released = m.on_block(b, auths);
                        m.hand_over(released, None, &submit);
                    };
                    match event {
                        Event::Block(b, auths) => one(&mut mempool.lock(), &b, &auths),
                        Event::Lagged => {
                            let head = state.chain.head_number();
                            for n in cleared + 1..=head {
                                if let Some(b) = state.chain.block(n) {
                                    let auths = authority_nonces(&state, &b);
                                    one(&mut mempool.lock(), &b, &auths);
                                }
                            }
                            cleared = cleared.max(head);
                        }
                        Event::Rehand(ordered, troubled) => {
                            let after = if troubled { REHAND_AFTER_TROUBLED } else { REHAND_AFTER };
                            let to_peers = {
                                let mut m = mempool.lock();
                                // While released transactions wait for room, consensus is
                                // not taking what it gets: handing the same over again would
                                // only grow what waits.
                                if m.has_unsent() {
                                    None
                                } else {
                                    let again =
                                        m.rehand(Instant::now(), after, |h| ordered.contains(h));
                                    let copy =
                                        (troubled && !again.is_empty()).then(|| again.clone());
                                    m.hand_over(again, None, &submit);
                                    copy
                                }
                            };
                            // Each goes to the peers at most once per `REHAND_AFTER` (what the
                            // pool hands over again every 2 s would otherwise reach one peer's
                            // JSON-RPC as often).
                            let now = Instant::now();
                            forwarded.retain(|_, at| now.duration_since(*at) < REHAND_AFTER);
                            if let (Some(f), Some(txs)) = (fallback.as_ref(), to_peers) {
                                let fresh: Vec<Transaction> = txs
                                    .into_iter()
                                    .filter(|t| {
                                        let h = alloy_primitives::keccak256(&t.payload);
                                        match forwarded.entry(h) {
                                            std::collections::hash_map::Entry::Vacant(v) => {
                                                v.insert(now);
                                                true
                                            }
                                            std::collections::hash_map::Entry::Occupied(_) => false,
                                        }
                                    })
                                    .collect();
                                if !fresh.is_empty() {
                                    // Dropped when the peers are slow to take the last ones:
                                    // sent again `REHAND_AFTER` later.
                                    let _ = f.try_send(fresh);
                                }
                            }
                        }
                        Event::Expire => {
                            let mut m = mempool.lock();
                            m.expire(Instant::now());
                            m.compact_journal(false);
                            m.hand_over(Vec::new(), None, &submit);
                        }
                        Event::Room(place) => {
                            mempool.lock().hand_over(Vec::new(), Some(place), &submit)
                        }
                    }
                    if expired {
                        // Submissions never ordered (expired, evicted) stop being timed.
                        let now = Instant::now();
                        let life = Duration::from_secs(lifetime.saturating_add(60));
                        state.submitted.lock().retain(|_, at| now.duration_since(*at) < life);
                    }
                    let dropped = std::mem::take(&mut *state.unforgotten.lock());
                    {
                        let mut m = mempool.lock();
                        for h in &dropped {
                            m.forget(h);
                        }
                        metrics.mempool.store(m.len() as u64, Ordering::Relaxed);
                    }
                }
            }));
        }

        // JSON-RPC.
        let fee_recipient =
            cfg.validator.as_ref().and_then(|k| cfg.committee.get(usize::from(k.index)));
        let health = crate::rpc::Health {
            role: role.to_string(),
            validator: cfg.validator.is_some(),
            sync_peers: !cfg.sync.peers.is_empty(),
            gc_depth: genesis.consensus.gc_depth,
        };
        let rpc = Rpc::new(state.clone(), mempool.clone(), submit, cfg.rpc.clone())
            .with_coinbase(fee_recipient.map(|m| m.fee_recipient))
            .with_members(cfg.committee.iter().map(|m| m.address.ip()))
            .with_closing(self.closing.subscribe())
            .with_health(health);
        let rpc = Arc::new(rpc);
        // Peers sync blocks and rejoin consensus through the `farol` namespace.
        if cfg.rpc.apis.as_ref().is_some_and(|a| !a.iter().any(|n| n == "farol")) {
            tracing::warn!(
                "rpc.apis leaves out farol: no node can sync blocks or rejoin consensus from \
                 this one"
            );
        }
        // A validator of a committee with others, with no peers to sync blocks from,
        // catches up only through consensus, within the rounds the others keep: down
        // longer than that (about half a minute on a quiet chain) it never does. Said at
        // the start, and again, as an error, once it is so (before stop 52 nothing was said
        // and the node looked healthy).
        if cfg.validator.is_some() && cfg.committee.len() > 1 && cfg.sync.peers.is_empty() {
            tracing::warn!(
                gc_depth = genesis.consensus.gc_depth,
                "no sync.peers: this validator cannot catch up after being down longer than \
                 the rounds the others keep; give it peers (farol node --peer HOST:PORT, another \
                 node's JSON-RPC)"
            );
            let rpc = rpc.clone();
            let state = state.clone();
            let mut closing = self.closing.subscribe();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                let mut said = false;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = closing.wait_for(|c| *c) => return,
                    }
                    let v = &state.validator;
                    let why = rpc
                        .stranded(
                            v.round.load(Ordering::Relaxed),
                            v.seen_round.load(Ordering::Relaxed),
                        )
                        .filter(|_| !v.stood_down.load(Ordering::Relaxed));
                    if let Some(why) = why.as_ref().filter(|_| !said) {
                        tracing::error!("{why}");
                    }
                    said = why.is_some();
                }
            }));
        }
        let (http, ws, rpc_tasks) = rpc::serve(rpc.clone(), &cfg.rpc).await?;
        tasks.extend(rpc_tasks);
        // What the pool held before a restart comes back through the usual checks.
        if !journaled.is_empty() {
            tasks.push(tokio::spawn(async move {
                let (taken, refused) = rpc.readmit(&journaled).await;
                tracing::info!(taken, refused, "mempool journal read back");
            }));
        }
        tracing::info!(%role, head, http = ?http, ws = ?ws, "node started");
        self.http = http;
        self.ws = ws;
        Ok(())
    }

    /// Stops consensus, lets the pipeline store what it executed, closes the listeners and
    /// their connections, and returns once the data directory can be opened again: it waits
    /// (up to 30 s, then warns) for whatever still holds the state store to let go, so a
    /// caller holding a clone of [`Node::state`] makes it wait that long. A process about
    /// to exit wants [`Node::stop_before_exit`].
    pub async fn stop(self) -> Result<(), String> {
        let store = self.state.store.watch();
        let stopped = self.halt().await;
        // Whatever still holds the state store lets go: tasks aborted above are dropped on
        // the runtime's threads after their abort, a call running on the blocking pool ends
        // within its time limit, and block sync's thread, not waited for, within its
        // request. Until then the data directory cannot be opened again (the store's lock:
        // before stop 51 a node started again at once could find it held, seen in a test
        // under load). Waited for up to STORE_RELEASE_WAIT.
        let deadline = Instant::now() + STORE_RELEASE_WAIT;
        while !store.closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !store.closed() {
            tracing::warn!(
                "the state store is still held {} s after the node stopped",
                STORE_RELEASE_WAIT.as_secs()
            );
        }
        stopped
    }

    /// [`Node::stop`] without the wait for the store to be let go: for a process about to
    /// exit, whose exit lets go of everything (`farol node`: a supervisor's SIGKILL after
    /// its SIGTERM, 15 s in a devnet and 10 s in `docker stop`, could come first).
    pub async fn stop_before_exit(self) -> Result<(), String> {
        self.halt().await
    }

    /// [`Node::stop`] but the wait for the store.
    async fn halt(mut self) -> Result<(), String> {
        self.stop_sync.store(true, Ordering::Relaxed);
        self.closing.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
        self.work = None;
        let r = match self.validator.take() {
            Some(v) => v.stop().await.map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let state = self.state.clone();
        let joined = tokio::task::spawn_blocking(move || self.pipeline.join()).await;
        // Block sync may be in the middle of a request (up to a minute): its thread is not
        // waited for, but from here it cannot write to the block log, so the data directory
        // may be opened again at once (before stop 39 it could store a certificate after
        // this returned, beside a new node's writes). Shut whatever the join gave.
        state.chain.shut();
        let p = joined
            .map_err(|e| e.to_string())?
            .map_err(|_| "the pipeline thread panicked".to_string())?;
        r?;
        p.map_err(|e| e.to_string())
    }

    /// Whether the pipeline or the validator stopped (each does only on an error it cannot
    /// go past: the node then serves a chain that no longer moves).
    pub fn failed(&self) -> bool {
        // A closed chain is a storing thread that failed: the pipeline's own thread notices
        // only at its next block, which a full node may never get (before stop 35 such a
        // node served a frozen chain and reported nothing).
        self.pipeline.is_finished()
            || self.state.chain.is_closed()
            || self.validator.as_ref().is_some_and(Validator::is_finished)
    }
}

/// How long [`Node::stop`] waits for whatever still holds the state store to let go.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(30);

/// How often the mempool looks for transactions handed to consensus and never ordered.
const REHAND_EVERY: Duration = Duration::from_secs(5);
/// How long after its hand-over a transaction not yet ordered is handed over again.
const REHAND_AFTER: Duration = Duration::from_secs(10);
/// How often the mempool looks while a validator's consensus is
/// [troubled](crate::validator::ValidatorStatus::troubled).
const REHAND_TICK: Duration = Duration::from_secs(1);
/// [`REHAND_AFTER`] while a validator's consensus is troubled.
const REHAND_AFTER_TROUBLED: Duration = Duration::from_secs(2);

/// Whether `peer` names the listener bound to `own` on this machine: the same port at the
/// same address, or at a loopback address where `own` is unspecified (all interfaces).
/// (Another loopback address may be another node's; a public address of this machine is
/// not told apart here: the forwarder finds it by asking, `farol_status`'s `instance`.)
fn same_listener(peer: std::net::SocketAddr, own: std::net::SocketAddr) -> bool {
    peer.port() == own.port()
        && (peer.ip() == own.ip() || (own.ip().is_unspecified() && peer.ip().is_loopback()))
}

/// Where checked snapshots go for consensus to rejoin from.
type SnapshotSender = mpsc::Sender<Arc<farol_consensus::Snapshot>>;

/// Starts consensus (recovered from its log), the validator network and block finality for
/// the validator `keys` names; its commits go to `work`. Returns where to submit
/// transactions and where to send snapshots to rejoin from.
#[allow(clippy::too_many_arguments)]
fn start_validator(
    cfg: &NodeConfig,
    keys: &ValidatorKeys,
    committee: &Arc<Committee>,
    peers: Vec<Peer>,
    genesis_hash: &alloy_primitives::B256,
    state: &Arc<State>,
    work: mpsc::Sender<Work>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Result<(Validator, mpsc::Sender<Vec<Transaction>>, SnapshotSender), NodeError> {
    let me = keys.index;
    let key = SecretKey::from_bytes(&keys.bls_secret)
        .map_err(|e| config_err("validator.bls_secret", e))?;
    if committee.validator(ValidatorIndex(me)).map(|v| v.key) != Some(key.public_key()) {
        return Err(config_err(
            "validator.bls_secret",
            format!("is not the key of committee[{me}]"),
        ));
    }
    let identity = Identity::from_pkcs8(&keys.network_secret)
        .map_err(|e| config_err("validator.network_secret", e))?;
    if peers.get(usize::from(me)).map(|p| &p.key) != Some(identity.public_key()) {
        return Err(config_err(
            "validator.network_secret",
            format!("is not the identity of committee[{me}]"),
        ));
    }
    let block_key = ed25519::SigningKey::from_pkcs8(identity.to_pkcs8())
        .map_err(|e| config_err("validator.network_secret", e))?;
    let (wal, records) = Wal::open(&cfg.data_dir.join("consensus.wal"))
        .map_err(|e| storage_err("opening the consensus log", e))?;
    if let Some(i) = records.iter().position(|r| !farol_consensus::asyncbft::readable_record(r)) {
        return Err(storage_err(
            "the consensus log",
            format!(
                "record {i} is in a format this version does not read (a data directory from \
                 before blocks were signed with Ed25519?); start from a fresh data directory"
            ),
        ));
    }
    let coin = match (&keys.coin_secret, committee.coin()) {
        (Some(k), Some(c)) => {
            let k = SecretKey::from_bytes(k).map_err(|e| config_err("validator.coin_secret", e))?;
            if c.shares.get(usize::from(me)) != Some(&k.public_key()) {
                return Err(config_err(
                    "validator.coin_secret",
                    format!("is not the share of committee[{me}].coin_public"),
                ));
            }
            Some(k)
        }
        _ => None,
    };
    let chain = chain_tag(cfg.genesis.chain_id, genesis_hash, &cfg.committee);
    let ccfg = ConsensusConfig {
        chain,
        gc_depth: cfg.genesis.consensus.gc_depth,
        checkpoint_every: cfg.genesis.consensus.checkpoint_every,
        coin,
        ..ConsensusConfig::default()
    };
    let cache = Arc::new(SignatureCache::default());
    // Blocks' signatures are checked by the connections' readers, beside the engine, into
    // the cache it looks in (since stop 60).
    let precheck = crate::validator::signature_precheck(cache.clone(), committee.clone(), chain);
    let mut replayed = Vec::new();
    let engine = AsyncBft::recover(
        committee.clone(),
        ValidatorIndex(me),
        block_key.clone(),
        ccfg.clone(),
        cache.clone(),
        records,
        &mut replayed,
    );
    let (snapshots_tx, snapshots) = mpsc::channel(1);
    let rejoin = {
        let committee = committee.clone();
        let state = state.clone();
        Rejoin {
            in_chain: Box::new(move |t| {
                let hash = alloy_primitives::keccak256(&t.payload);
                state.chain.has_transaction_checked(&hash).unwrap_or(true)
            }),
            snapshots,
            engine: Box::new(move |s, min_round, out| {
                Box::new(AsyncBft::from_snapshot(
                    committee.clone(),
                    ValidatorIndex(me),
                    block_key.clone(),
                    ccfg.clone(),
                    cache.clone(),
                    s,
                    min_round,
                    out,
                ))
            }),
        }
    };
    let listen = cfg.network.listen.unwrap_or(peers[usize::from(me)].addr);
    let mut ncfg = NetworkConfig::new(me, identity, listen, peers);
    ncfg.protocol = validator_protocol();
    ncfg.queue = cfg.network.peer_queue;
    ncfg.precheck = Some(precheck);
    let (network, inbound) = Network::start(ncfg).map_err(|e| match e {
        // Which setting gave the address (since stop 52): a cloud machine's public address
        // is seldom on any of its interfaces, and the committee's is the default.
        farol_network::NetworkError::Bind { source, .. } => NodeError::Bind {
            addr: match cfg.network.listen {
                Some(_) => format!("{listen} (network.listen, --listen)"),
                None => format!(
                    "{listen} (committee[{me}].address; where this machine cannot bind it, \
                     behind NAT say, set network.listen or --listen 0.0.0.0:{})",
                    listen.port()
                ),
            },
            reason: source.to_string(),
        },
        e => NodeError::Bind { addr: listen.to_string(), reason: e.to_string() },
    })?;
    let network = Arc::new(network);
    let (commits_tx, mut commits_rx) = mpsc::channel(64);
    let (capacity, share) = crate::validator::node_frames_queue(committee.len());
    let (frames_tx, frames_rx) = mpsc::channel(capacity);
    let parts = Parts {
        engine: Box::new(engine),
        replayed,
        network: network.clone(),
        inbound,
        wal,
        commits: commits_tx,
        node_frames: Some(crate::validator::NodeFrames::new(frames_tx, share)),
    };
    state.validator.count_rejoins_for(Duration::from_secs(cfg.sync.stalled_secs));
    let validator = Validator::spawn_with(
        parts,
        ValidatorConfig {
            sync: cfg.pipeline.fsync,
            compact_bytes: cfg.pipeline.consensus_log_bytes,
            ..ValidatorConfig::default()
        },
        Some(rejoin),
        state.validator.clone(),
    );
    tasks.push(tokio::spawn(async move {
        while let Some(c) = commits_rx.recv().await {
            if work.send(Work::Commit(c)).await.is_err() {
                break;
            }
        }
    }));
    let finality = Finality {
        state: state.clone(),
        committee: committee.clone(),
        me: (me, key),
        network,
        chain,
    };
    tasks.push(tokio::spawn(finality.run(frames_rx, state.blocks.subscribe())));
    let submit = validator.submitter();
    Ok((validator, submit, snapshots_tx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_knows_its_own_listener_among_its_peers() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
        let own = super::same_listener;
        assert!(own(a("127.0.0.1:8545"), a("127.0.0.1:8545")));
        assert!(own(a("127.0.0.1:8545"), a("0.0.0.0:8545")));
        assert!(!own(a("127.0.0.2:8545"), a("127.0.0.1:8545")), "another node's, perhaps");
        assert!(own(a("[::1]:8545"), a("[::]:8545")));
        assert!(!own(a("127.0.0.1:8546"), a("127.0.0.1:8545")), "another port");
        assert!(!own(a("10.0.0.7:8545"), a("0.0.0.0:8545")), "another machine, perhaps");
        assert!(!own(a("127.0.0.1:8545"), a("10.0.0.7:8545")), "it listens elsewhere");
    }
}
