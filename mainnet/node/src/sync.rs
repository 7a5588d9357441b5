//! Block sync: a node that is behind (a full node, or a validator that was down longer than
//! its peers keep consensus history) fetches block-final blocks from its peers' JSON-RPC and
//! executes them itself.
//!
//! One round of sync against a peer:
//! 1. `farol_getCertificate`: the peer's newest finality certificate, checked against the
//!    committee (validators holding more than two thirds of the stake signed that hash).
//! 2. `farol_getBlocks` with headers only, from the certified block down to ours, in
//!    segments of [`HEADER_BATCH`]: each header's hash must be the parent hash of the one
//!    above, the lowest's parent our head. The hash of each segment's top is kept.
//! 3. Segment by segment, upwards: the headers again (chained to the segment's top and to
//!    the segment below), then `farol_getBlocks` with transactions: each block must have its
//!    header's hash, and its header must commit to its transactions and ordering data. Senders are
//!    recovered here (in parallel), then the pipeline executes the block; a result other than
//!    the certified header stops the node (its execution differs from the validators').
//! 4. Once the certified block is stored, its certificate is kept: everything is final.
//!
//! A peer that answers wrongly (bad certificate, broken hash chain, malformed blocks, too
//! large an answer) is left for the next one; nothing it sent is executed. Transactions a
//! full node receives go to the validators' JSON-RPC ([`spawn_forwarder`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Bytes, B256};
use farol_consensus::{Committee, Snapshot, Transaction};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::chain::{Certificate, SyncBlock};
use crate::client::{Capped, RpcClient};
use crate::finality::vote_message;
use crate::pipeline::{Import, State, Work};

/// How many of its newest blocks a stalled validator looks through for the newest consensus
/// checkpoint (`genesis.consensus.checkpoint_every` is at most this).
pub const CHECKPOINT_SCAN: u64 = 4096;
/// Headers asked for in one request.
pub const HEADER_BATCH: u64 = 1024;
/// Blocks with transactions asked for in one request (the peer may send fewer: it stops at
/// [`MAX_SYNC_ANSWER`] bytes).
pub const BLOCK_BATCH: u64 = 64;
/// About the most bytes of blocks a peer puts in one answer (at least one block).
pub const MAX_SYNC_ANSWER: usize = 16 << 20;
/// The most bytes of an answer of [`HEADER_BATCH`] headers read: a Farol header is about 600
/// bytes, 1.3 KB as hex in JSON, so 1,024 of them about 1.3 MiB.
const HEADERS_ANSWER: usize = 4 << 20;

/// How a node syncs.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Peers' HTTP JSON-RPC addresses.
    pub peers: Vec<SocketAddr>,
    /// The chain id (certificates sign it).
    pub chain_id: u64,
    /// The validator set.
    pub committee: Arc<Committee>,
    /// Sync only when the head has not moved for this long (a validator follows its own
    /// commits and syncs only when they stopped coming); `None`: always (a full node).
    pub when_stalled: Option<Duration>,
    /// How often to ask for a newer certificate.
    pub poll: Duration,
    /// Headers per request, and blocks per segment (at most [`HEADER_BATCH`]).
    pub segment: u64,
    /// A peer whose answers take longer than this on average (over at least
    /// [`SLOW_AFTER_ANSWERS`]) is left for the next peer, keeping what it gave.
    pub slow_answer: Duration,
    /// A validator's consensus: where to send a peer's snapshot (checked against a
    /// checkpoint digest in the block-final chain) when its engine stalled behind it.
    pub rejoin: Option<mpsc::Sender<Arc<Snapshot>>>,
    /// The consensus chain tag, which the snapshot's blocks are signed under.
    pub chain_tag: [u8; 32],
}

/// Starts syncing on a thread of its own. It stops when `stop` is set or the pipeline is
/// gone. `work` should be a weak sender: the pipeline ends when the node drops its own.
pub fn spawn(
    state: Arc<State>,
    work: mpsc::WeakSender<Work>,
    cfg: SyncConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("farol-sync".into()).spawn(move || run(state, work, cfg, stop))
}

fn run(state: Arc<State>, work: mpsc::WeakSender<Work>, cfg: SyncConfig, stop: Arc<AtomicBool>) {
    if cfg.peers.is_empty() {
        return;
    }
    let mut clients: Vec<RpcClient> = cfg.peers.iter().map(|a| RpcClient::new(*a)).collect();
    // Whether each peer was found to run this node's chain rules (asked again after it failed).
    let mut same_rules = vec![false; clients.len()];
    let mut turn = 0usize;
    let mut last_head = state.chain.head_number();
    let mut moved = Instant::now();
    let mut failures = 0u32;
    // Peers left for being slow since the last completed sync (see `SlowPeers`).
    let mut slow = SlowPeers::new(clients.len());
    let mut rests = Rests::new(clients.len());
    while !stop.load(Ordering::Relaxed) {
        // Sleep in short steps so that a stop is seen soon; back off after failures.
        let pause = cfg.poll * (1 << failures.min(5));
        let until = Instant::now() + pause;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(pause));
        }
        let head = state.chain.head_number();
        if head != last_head {
            last_head = head;
            moved = Instant::now();
        }
        if cfg.when_stalled.is_some_and(|d| moved.elapsed() < d) {
            continue;
        }
        // The next peer not resting; if all are, the next one anyway.
        let i = rests.next(turn, Instant::now());
        turn = i;
        let peer = cfg.peers[i];
        let mut pace = Pace::new(cfg.slow_answer, slow.judged());
        let checked = if same_rules[i] { Ok(()) } else { check_rules(&mut clients[i]) };
        let outcome = checked.and_then(|()| {
            same_rules[i] = true;
            sync_once(&state, &work, &cfg, &mut clients[i], &stop, &mut pace)
        });
        if outcome.is_err() {
            same_rules[i] = false;
        }
        let rest = rests.record(i, &outcome, Instant::now());
        match outcome {
            Ok(Progress::Pipeline) => return,
            // The node cannot go on from a chain the committee did not certify: closing the
            // chain makes it report itself failed (`farol node` exits naming the error in
            // its log). Before stop 47 this was a failed sync, counted against the peer, and
            // the node went on serving its own chain as if healthy.
            Ok(Progress::Diverged(why)) => {
                tracing::error!(%peer, reason = %why, "this node's chain is not the certified chain: stopping");
                state.chain.close();
                return;
            }
            Ok(Progress::Slow) => {
                // Before stop 28 a peer that answered slowly but correctly (one block per
                // answer, just inside the time limit) held this node for as long as it did.
                slow.found(i);
                turn += 1;
                tracing::warn!(%peer, ?rest, "block sync: this peer answers slowly, asking the next");
            }
            Ok(Progress::Synced(n)) => {
                slow.synced();
                failures = 0;
                tracing::debug!(%peer, head = n, "synced to a block-final block");
                rejoin_if_stalled(&state, &cfg, &mut clients[i], peer);
                // The next poll asks the next peer here too: a peer that is itself behind
                // always has a certified block a little above ours, and asked again after
                // every sync it would hold this node behind it (before stop 32 it was).
                turn += 1;
            }
            Ok(Progress::UpToDate) => {
                failures = 0;
                // The next poll asks the next peer: one that is behind, halted or lying
                // about having nothing newer cannot hold this node back (before stop 27 it
                // was asked again for as long as it answered). No rejoin once the node is
                // stopping (a stopped sync reads as up to date; before stop 41 it could then
                // spend up to a minute fetching a snapshot during shutdown).
                if !stop.load(Ordering::Relaxed) {
                    rejoin_if_stalled(&state, &cfg, &mut clients[i], peer);
                }
                turn += 1;
            }
            Err(e) => {
                failures += 1;
                turn += 1;
                state.metrics.sync_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, error = %e, ?rest, "block sync from this peer failed");
            }
        }
    }
}

/// Which peers rest, and for how long, after what their syncs gave.
///
/// - A peer left for being slow rests before it is asked again, longer each time in a row
///   (before stop 29 a slow peer was asked again at its next turn, every other poll with two
///   peers, and each time held this node for its three slow answers).
/// - A peer that failed rests too, longer each time in a row, so that one that holds
///   requests until they time out (60 s each) is not asked at every other turn (before stop
///   35 it was).
/// - Only a completed sync forgives either, or [`STRIKES_KEPT`] without a new one (a
///   validator that is always up to date completes no sync). "Nothing newer" does not: it
///   costs a peer nothing to say, and one that said it between requests it held for a
///   minute each kept its rest at 5 s and this node's sync on it most of the time (before
///   stop 39).
struct Rests {
    until: Vec<Option<Instant>>,
    slow: Vec<u32>,
    failed: Vec<u32>,
    /// When each peer was last found slow or failing.
    struck: Vec<Option<Instant>>,
}

/// How long a peer's strikes (slow or failed syncs) are kept without a new one.
pub const STRIKES_KEPT: Duration = Duration::from_secs(30 * 60);

impl Rests {
    fn new(peers: usize) -> Rests {
        Rests {
            until: vec![None; peers],
            slow: vec![0; peers],
            failed: vec![0; peers],
            struck: vec![None; peers],
        }
    }

    /// The first peer from `turn` on that does not rest at `now`; `turn`'s if all do.
    fn next(&self, turn: usize, now: Instant) -> usize {
        let n = self.until.len().max(1);
        (0..n)
            .map(|k| (turn + k) % n)
            .find(|&j| self.until.get(j).is_some_and(|u| u.is_none_or(|u| u <= now)))
            .unwrap_or(turn % n)
    }

    /// Notes what peer `i`'s sync gave at `now`; the rest it starts, if any.
    fn record(
        &mut self,
        i: usize,
        outcome: &Result<Progress, String>,
        now: Instant,
    ) -> Option<Duration> {
        if self.struck[i].is_some_and(|at| now.saturating_duration_since(at) >= STRIKES_KEPT) {
            self.slow[i] = 0;
            self.failed[i] = 0;
        }
        let (strikes, base) = match outcome {
            Ok(Progress::Synced(_)) => {
                self.until[i] = None;
                self.slow[i] = 0;
                self.failed[i] = 0;
                return None;
            }
            Ok(Progress::UpToDate | Progress::Pipeline | Progress::Diverged(_)) => return None,
            Ok(Progress::Slow) => (&mut self.slow[i], SLOW_PEER_REST),
            Err(_) => (&mut self.failed[i], FAILED_PEER_REST),
        };
        *strikes = strikes.saturating_add(1);
        let rest = base.saturating_mul(1 << (*strikes - 1).min(4));
        self.until[i] = Some(now + rest);
        self.struck[i] = Some(now);
        Some(rest)
    }
}

enum Progress {
    /// Nothing newer was certified.
    UpToDate,
    /// Synced to this block.
    Synced(u64),
    /// Stopped early: the peer answers too slowly (what it gave is kept).
    Slow,
    /// The pipeline is gone (the node stops).
    Pipeline,
    /// A certificate a quorum signed names another block than ours at its height, or a chain
    /// that does not extend ours: this node's chain left the chain's (the node stops).
    Diverged(String),
}

/// How long a peer left for being slow rests before it is asked again: doubled for each
/// time in a row it is found slow, up to 16 times this.
pub const SLOW_PEER_REST: Duration = Duration::from_secs(30);

/// How long a peer whose sync failed rests before it is asked again (unless every peer
/// rests): doubled for each failure in a row, up to 16 times this.
pub const FAILED_PEER_REST: Duration = Duration::from_secs(5);

/// The longest a peer may take to answer for its newest certificate.
pub const CERTIFICATE_TIME: Duration = Duration::from_secs(5);

/// The peers found slow since the last completed sync. Once every peer was, the slow rule
/// is off until a sync completes, so a node whose only useful peers are slow still gets
/// somewhere (a peer with nothing newer does not reset it). Distinct peers are counted:
/// before stop 41 each finding was, so one peer found slow as often as there are peers (or
/// honest peers each found slow once under load) turned the rule off, and a faulty peer
/// could then trickle blocks for as long as it liked.
#[derive(Debug)]
struct SlowPeers {
    found: std::collections::BTreeSet<usize>,
    peers: usize,
}

impl SlowPeers {
    fn new(peers: usize) -> SlowPeers {
        SlowPeers { found: std::collections::BTreeSet::new(), peers }
    }

    /// Whether answers are judged by their pace.
    fn judged(&self) -> bool {
        self.found.len() < self.peers
    }

    fn found(&mut self, peer: usize) {
        self.found.insert(peer);
    }

    fn synced(&mut self) {
        self.found.clear();
    }
}

/// The most bytes of a certificate answer read (it is a few hundred: before stop 41 up to the
/// client's 256 MiB were, on every poll).
pub const CERTIFICATE_ANSWER: usize = 64 << 10;

/// The longest an answer of headers (at most `HEADERS_ANSWER` bytes) may take, the wait
/// for one of the serving node's sync places included (which block answers share).
pub const HEADERS_TIME: Duration = Duration::from_secs(20);

/// Answers a peer must have given before its pace is judged.
pub const SLOW_AFTER_ANSWERS: u32 = 3;

/// How fast the peer of one sync round answers: the time of its requests only (not this
/// node's own waits, such as handing blocks to a busy pipeline), against the whole answers
/// they are worth.
struct Pace {
    spent: Duration,
    answers: u32,
    /// What the answers held, in thousandths of a whole answer.
    worth: u64,
    slow_answer: Duration,
    judged: bool,
}

impl Pace {
    fn new(slow_answer: Duration, judged: bool) -> Pace {
        Pace { spent: Duration::ZERO, answers: 0, worth: 0, slow_answer, judged }
    }

    /// Counts an answer to a request made at `asked`; true when the peer's answers took
    /// longer than the limit on average.
    fn answered_slowly(&mut self, asked: Instant) -> bool {
        self.answered_part_slowly(asked, 1000)
    }

    /// [`Pace::answered_slowly`] for an answer that held `per_mille` thousandths of what
    /// was asked (counted by blocks or by bytes against [`MAX_SYNC_ANSWER`], whichever is
    /// more): the peer is slow when its answers took longer than the limit per whole
    /// answer they held together. A peer could otherwise send one block per answer, each
    /// just inside the limit, and hold this node to its pace. (Before stop 48 each answer's
    /// time was scaled up to a whole answer's alone, so an honest answer cut short of a
    /// block over 8 MiB, with one small block in it, counted as 64 answers at its pace.)
    fn answered_part_slowly(&mut self, asked: Instant, per_mille: u64) -> bool {
        self.answers = self.answers.saturating_add(1);
        self.worth = self.worth.saturating_add(per_mille.clamp(1, 1000));
        self.spent = self.spent.saturating_add(asked.elapsed());
        self.judged
            && self.answers >= SLOW_AFTER_ANSWERS
            && self.spent.as_nanos().saturating_mul(1000)
                > self.slow_answer.as_nanos().saturating_mul(u128::from(self.worth))
    }
}

/// A certificate as `farol_getCertificate` answers it, read straight from the answer.
#[derive(serde::Deserialize)]
struct CertificateJson {
    number: alloy_primitives::U64,
    hash: B256,
    quorum: Bytes,
}

/// A certificate as `farol_getCertificate` answers it.
pub fn certificate_to_json(c: &Certificate) -> Value {
    json!({
        "number": format!("{:#x}", c.number),
        "hash": c.hash,
        "quorum": Bytes::copy_from_slice(&c.quorum),
    })
}

/// Checks that validators holding more than two thirds of the stake signed `c` on the chain
/// of tag `chain`.
pub fn verify_certificate(
    c: &Certificate,
    committee: &Committee,
    chain: &[u8; 32],
) -> Result<(), String> {
    let quorum = farol_consensus::Certificate::from_bytes(&c.quorum, committee.len())
        .map_err(|e| format!("certificate of block {}: {e}", c.number))?;
    quorum
        .verify(committee, &vote_message(chain, c.number, &c.hash))
        .map_err(|e| format!("certificate of block {}: {e}", c.number))
}

/// Fetches blocks `from..from+count` (fewer if the peer stops early; never more).
fn get_blocks(
    client: &mut RpcClient,
    from: u64,
    count: u64,
    full: bool,
) -> Result<Vec<SyncBlock>, String> {
    get_blocks_sized(client, from, count, full).map(|(blocks, _)| blocks)
}

/// [`get_blocks`], with the blocks' encoded bytes.
fn get_blocks_sized(
    client: &mut RpcClient,
    from: u64,
    count: u64,
    full: bool,
) -> Result<(Vec<SyncBlock>, usize), String> {
    let params = json!([format!("{from:#x}"), format!("{count:#x}"), full]);
    // Headers alone are small (about 1.3 KB each as hex): an answer of them is read up to
    // HEADERS_ANSWER, not the client's 256 MiB (before stop 37 a peer could send that much
    // for any request). Blocks have no such bound: one block may pass 16 MiB.
    // Headers are also given a short time (since stop 41: before, the client's 60 s, and a
    // faulty peer that certified a newer block and then held its headers that long kept a
    // follower about a minute behind much of the time).
    let (most, time) =
        if full { (usize::MAX, Duration::MAX) } else { (HEADERS_ANSWER, HEADERS_TIME) };
    let Capped(list) = client
        .call_limited::<Capped<Bytes, { HEADER_BATCH as usize }>>(
            "farol_getBlocks",
            params,
            time,
            most,
        )?
        .ok_or("farol_getBlocks: no result")?;
    if list.len() as u64 > count {
        return Err(format!("farol_getBlocks: {} blocks, asked for {count}", list.len()));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let number = from + i as u64;
        let b = SyncBlock::decode(raw).map_err(|e| format!("block {number}: {e}"))?;
        if b.header.number != number {
            return Err(format!("block {number}: the peer sent block {}", b.header.number));
        }
        if full != b.ordering.is_some() {
            return Err(format!("block {number}: not the form asked for"));
        }
        out.push(b);
    }
    Ok((out, list.iter().map(|b| b.len()).sum()))
}

/// Fetches headers `lo..=hi` and checks they chain up to `top` (the hash of block `hi`).
/// Returns the parent hash of block `lo` and the hashes of `lo..=hi`.
fn segment_hashes(
    client: &mut RpcClient,
    lo: u64,
    hi: u64,
    top: B256,
) -> Result<(B256, Vec<B256>), String> {
    let headers = get_blocks(client, lo, hi - lo + 1, false)?;
    if headers.len() as u64 != hi - lo + 1 {
        return Err(format!("headers {lo}..={hi}: the peer sent {}", headers.len()));
    }
    let mut want = top;
    let mut hashes = vec![B256::ZERO; headers.len()];
    for (i, h) in headers.iter().enumerate().rev() {
        if h.hash != want {
            let n = h.header.number;
            return Err(format!("header {n}: hash {}, the chain above says {want}", h.hash));
        }
        hashes[i] = h.hash;
        want = h.header.parent_hash;
    }
    Ok((want, hashes))
}

fn sync_once(
    state: &Arc<State>,
    work: &mpsc::WeakSender<Work>,
    cfg: &SyncConfig,
    client: &mut RpcClient,
    stop: &AtomicBool,
    pace: &mut Pace,
) -> Result<Progress, String> {
    let asked = Instant::now();
    // A certificate is a few hundred bytes: a peer that holds the request longer than this
    // is failing, not slow.
    let Some(cert) = client.call_limited::<CertificateJson>(
        "farol_getCertificate",
        json!([]),
        CERTIFICATE_TIME,
        CERTIFICATE_ANSWER,
    )?
    else {
        return Ok(Progress::UpToDate);
    };
    // The certificate's answer counts (it cannot make the peer slow alone).
    let _ = pace.answered_slowly(asked);
    let cert =
        Certificate { number: cert.number.to(), hash: cert.hash, quorum: cert.quorum.to_vec() };
    let head = state.chain.head();
    if cert.number <= head.number() {
        // Ours at that height must be the certified block: compared first, and the quorum's
        // signature checked only when they differ.
        if let Some(ours) = state.chain.hash(cert.number).filter(|h| *h != cert.hash) {
            verify_certificate(&cert, &cfg.committee, &cfg.chain_tag)?;
            return Ok(Progress::Diverged(format!(
                "block {} is {ours} here, certified {}",
                cert.number, cert.hash
            )));
        }
        return Ok(Progress::UpToDate);
    }
    verify_certificate(&cert, &cfg.committee, &cfg.chain_tag)?;
    if state.metrics.sync_target.load(Ordering::Relaxed) <= head.number() {
        state.metrics.sync_start.store(head.number(), Ordering::Relaxed);
    }
    state.metrics.sync_target.store(cert.number, Ordering::Relaxed);

    // Headers, downwards, in segments: the hash of each segment's top block (so memory
    // stays small however far behind this node is).
    let base = head.number();
    let step = cfg.segment.clamp(1, HEADER_BATCH);
    let segment = |k: u64| {
        let lo = base + 1 + k * step;
        (lo, (lo + step - 1).min(cert.number))
    };
    let segments = (cert.number - base).div_ceil(step);
    let mut tops = vec![B256::ZERO; usize::try_from(segments).map_err(|_| "too far behind")?];
    let mut want = cert.hash;
    for k in (0..segments).rev() {
        if stop.load(Ordering::Relaxed) {
            return Ok(Progress::UpToDate);
        }
        tops[k as usize] = want;
        let (lo, hi) = segment(k);
        let asked = Instant::now();
        want = segment_hashes(client, lo, hi, want)?.0;
        if pace.answered_slowly(asked) {
            return Ok(Progress::Slow);
        }
    }
    if want != head.hash {
        return Ok(Progress::Diverged(format!(
            "the certified chain does not extend ours: block {base} is {} here, {want} there",
            head.hash
        )));
    }

    // Blocks, upwards, segment by segment: headers again (checked against the segment's top
    // and the previous one's), then the blocks, checked against them and executed. Block
    // answers are judged by a pace of their own: whole, fast header answers (about a
    // thousand when a node is a million blocks behind) would otherwise stand for as many
    // whole answers' time that slow block answers could spend.
    let mut block_pace = Pace::new(pace.slow_answer, pace.judged);
    let mut below = head.hash;
    for k in 0..segments {
        let (lo, hi) = segment(k);
        let asked = Instant::now();
        let (parent, hashes) = segment_hashes(client, lo, hi, tops[k as usize])?;
        if pace.answered_slowly(asked) {
            return Ok(Progress::Slow);
        }
        if parent != below {
            return Err(format!("header {lo}: parent {parent}, the chain below has {below}"));
        }
        below = tops[k as usize];
        let mut n = lo;
        while n <= hi {
            if stop.load(Ordering::Relaxed) {
                return Ok(Progress::UpToDate);
            }
            let asked = Instant::now();
            let want = BLOCK_BATCH.min(hi - n + 1);
            let (blocks, bytes) = get_blocks_sized(client, n, want, true)?;
            if blocks.is_empty() {
                return Err(format!("block {n}: the peer sent none"));
            }
            // A whole answer is `want` blocks, or as many bytes as a peer sends at once: it
            // stops before the block that would pass MAX_SYNC_ANSWER, so an honest answer
            // cut short holds more than half of it.
            let by_blocks = blocks.len() as u64 * 1000 / want;
            let by_bytes = bytes as u64 * 2000 / MAX_SYNC_ANSWER as u64;
            let slow = block_pace.answered_part_slowly(asked, by_blocks.max(by_bytes));
            for b in blocks {
                let expected = hashes[(n - lo) as usize];
                if b.hash != expected {
                    return Err(format!(
                        "block {n}: hash {}, the certified chain has {expected}",
                        b.hash
                    ));
                }
                let recovered = farol_execution::recover_senders(b.txs.clone())
                    .map_err(|e| format!("block {n}: {e}"))?;
                let senders = recovered.into_iter().map(|t| t.sender).collect();
                let Some(work) = work.upgrade() else { return Ok(Progress::Pipeline) };
                let import = Work::Import(Box::new(Import { block: b, senders }));
                if work.blocking_send(import).is_err() {
                    return Ok(Progress::Pipeline);
                }
                n += 1;
            }
            // The blocks handed over are kept; the next peer goes on from them.
            if slow {
                return Ok(Progress::Slow);
            }
        }
    }
    // Executed and stored (or the pipeline stopped: divergence is its error to report).
    let stored = loop {
        if let Some(b) = state.chain.block(cert.number) {
            break Some(b.hash);
        }
        // The pipeline is gone, or stopped taking work (a divergence, its error to report).
        // The storing thread failed (it closes the chain) or the pipeline is gone.
        if stop.load(Ordering::Relaxed)
            || state.chain.is_closed()
            || work.upgrade().is_none_or(|w| w.is_closed())
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    match stored {
        // Not once the node stops: it may be about to open its data directory again.
        Some(_) if stop.load(Ordering::Relaxed) => Ok(Progress::Pipeline),
        Some(h) if h == cert.hash => {
            let number = cert.number;
            state.chain.set_certificate(cert).map_err(|e| e.to_string())?;
            crate::finality::record_final(state, number);
            Ok(Progress::Synced(number))
        }
        Some(h) => Ok(Progress::Diverged(format!(
            "block {} is {h} here, certified {}",
            cert.number, cert.hash
        ))),
        None => Ok(Progress::Pipeline),
    }
}

/// Whether the peer runs this node's chain rules ([`crate::node::CHAIN_RULES`], in its
/// `farol_status`): blocks executed under other rules differ, so a peer of other rules is not
/// synced from (since stop 52; before, a full node fetched its blocks and stopped at the
/// first one it executed to another state than the certified one).
fn check_rules(client: &mut RpcClient) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(rename = "chainRules")]
        chain_rules: Option<u32>,
    }
    let status = client.call_limited::<Status>(
        "farol_status",
        json!([]),
        CERTIFICATE_TIME,
        CERTIFICATE_ANSWER,
    )?;
    match status.and_then(|s| s.chain_rules) {
        Some(r) if r == crate::node::CHAIN_RULES => Ok(()),
        theirs => Err(format!(
            "the peer runs chain rules {}, this node {}: not synced from (a node syncs only \
             from nodes of its chain rules' version; upgrade them together)",
            theirs.map_or_else(|| "unknown (its status names none)".to_string(), |r| r.to_string()),
            crate::node::CHAIN_RULES
        )),
    }
}

/// A validator whose consensus made no commit for the stall time while the block-final
/// chain holds a checkpoint above its height rejoins from `peer`'s snapshot, if the
/// snapshot's digest is the checkpoint a block-final block of ours carries at its height.
/// Rejoins consensus from `peer`'s snapshot if this validator's consensus stalled behind its
/// chain. False if it tried and the peer had no usable snapshot (the next try asks another).
fn rejoin_if_stalled(
    state: &State,
    cfg: &SyncConfig,
    client: &mut RpcClient,
    peer: SocketAddr,
) -> bool {
    let (Some(to), Some(stall)) = (&cfg.rejoin, cfg.when_stalled) else { return true };
    let st = &state.validator;
    let now = crate::validator::unix_ms();
    let last = st.last_commit_ms.load(Ordering::Relaxed).max(st.started_ms.load(Ordering::Relaxed));
    if now.saturating_sub(last) < stall.as_millis() as u64 {
        return true;
    }
    let height = st.height.load(Ordering::Relaxed);
    // The newest checkpoint in our chain (a commit of at most every block carries one).
    let head = state.chain.head_number();
    let newest = (head.saturating_sub(CHECKPOINT_SCAN)..=head)
        .rev()
        .filter_map(|n| state.chain.scanned_block(n))
        .find(|b| b.ordering.checkpoint.is_some());
    if newest.is_none_or(|b| b.ordering.height <= height) {
        return true;
    }
    match fetch_snapshot(state, client, height)
        .and_then(|s| s.map(|s| checked_blocks(s, cfg)).transpose())
    {
        Ok(Some(s)) => {
            let h = s.checkpoint.height;
            if to.try_send(s).is_ok() {
                tracing::warn!(%peer, from = height, to = h, "consensus fell behind its peers' history: rejoining from a snapshot");
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            state.metrics.sync_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "cannot rejoin from this peer's snapshot");
            false
        }
    }
}

/// `s` if it holds, signed, every block its (certified) checkpoint lists as ordered.
fn checked_blocks(s: Arc<Snapshot>, cfg: &SyncConfig) -> Result<Arc<Snapshot>, String> {
    s.check_blocks(&cfg.committee, &cfg.chain_tag)
        .map_err(|e| format!("snapshot at height {}: {e}", s.checkpoint.height))?;
    Ok(s)
}

/// A snapshot from the peer above consensus height `height` whose digest is the checkpoint a
/// block-final block of our chain carries (none usable yet: `Ok(None)`, try later).
///
/// It asks for the newest checkpoint our final chain carries above `height` (validators keep
/// their last few snapshots, `farol_getSnapshot(height)`), and only for that one: a peer's
/// newer snapshot could not be checked (its checkpoint's carrier is past our final chain).
/// Before stop 27 only the newest was asked for, and under load a peer's newest was usually
/// past our final chain, so the rejoin downloaded snapshots and threw them away; until stop
/// 39 the newest was still asked for when the peer lacked ours.
fn fetch_snapshot(
    state: &State,
    client: &mut RpcClient,
    height: u64,
) -> Result<Option<Arc<Snapshot>>, String> {
    let finalized = state.chain.finalized_number();
    let lowest = finalized.saturating_sub(1 << 16);
    let newest_ours = (lowest..=finalized)
        .rev()
        .filter_map(|n| state.chain.scanned_block(n))
        .take_while(|b| b.ordering.height > height)
        .find(|b| b.ordering.checkpoint.is_some() && b.ordering.last_in_group);
    // Without a checkpoint in our final chain above our height no snapshot can be checked.
    let Some(ours) = newest_ours else { return Ok(None) };
    // Only the snapshot of that checkpoint can be used: a newer one's carrier is not in our
    // final chain (the carrier of `ours` is its newest), so a peer without it has nothing
    // for us (before stop 39 its newest snapshot, up to 256 MiB, was fetched and dropped).
    let raw = client
        .call_as::<Bytes>("farol_getSnapshot", json!([format!("{:#x}", ours.ordering.height)]))?;
    let Some(raw) = raw else { return Ok(None) };
    let s = Snapshot::decode(&raw).map_err(|e| format!("snapshot: {e}"))?;
    let h = s.checkpoint.height;
    // Another height than asked for has no carrier to check it against here.
    if h != ours.ordering.height {
        return Ok(None);
    }
    let b = ours;
    let digest = B256::from(s.checkpoint.digest());
    if b.ordering.checkpoint != Some(digest) {
        return Err(format!(
            "snapshot at height {h}: digest {digest}, the final chain has {:?}",
            b.ordering.checkpoint
        ));
    }
    Ok(Some(Arc::new(s)))
}

/// How long the forwarder waits for a peer's `farol_status` (asked once per peer, to leave
/// out this node itself), and the most bytes of it read.
const STATUS_TIME: Duration = Duration::from_secs(2);
const STATUS_ANSWER: usize = 64 << 10;

/// The most bytes of a peer's answer to forwarded transactions (500 at a time) read.
const FORWARD_ANSWER: usize = 4 << 20;

/// Sends the transactions a full node accepted to the validators (the first that answers),
/// as JSON-RPC batches of `eth_sendRawTransaction`. Runs until `txs` closes. Before a peer
/// is first sent anything it is asked its `farol_status` (within 2 s; one that does not
/// answer is passed over and asked again when its turn comes): one whose `instance` is
/// `own` (this node, under an address it could not tell apart) is left out from then on.
pub fn spawn_forwarder(
    peers: Vec<SocketAddr>,
    mut txs: mpsc::Receiver<Vec<Transaction>>,
    own: String,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("farol-forward".into()).spawn(move || {
        // The answers (a hash or an error per transaction) are checked and dropped unread,
        // and are far below this bound: a peer's answer costs its bytes, at most this.
        let mut clients: Vec<RpcClient> =
            peers.iter().map(|a| RpcClient::new(*a).with_max_answer(FORWARD_ANSWER)).collect();
        // Per peer: whether it answered `farol_status`, and whether it is this node.
        let mut known = vec![false; peers.len()];
        let mut itself = vec![false; peers.len()];
        let mut told_alone = false;
        let mut turn = 0usize;
        while let Some(batch) = txs.blocking_recv() {
            for chunk in batch.chunks(500) {
                let body: Vec<Value> = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        json!({
                            "jsonrpc": "2.0",
                            "id": i,
                            "method": "eth_sendRawTransaction",
                            "params": [Bytes::copy_from_slice(&t.payload)],
                        })
                    })
                    .collect();
                let body = Value::Array(body).to_string();
                let mut sent = false;
                for _ in 0..clients.len() {
                    let i = turn % clients.len();
                    if !known[i] {
                        // Asked with a short deadline: a peer that hangs would otherwise hold
                        // the forwarding twice as long (the question, then the send).
                        match clients[i].call_answered(
                            "farol_status",
                            json!([]),
                            STATUS_TIME,
                            STATUS_ANSWER,
                        ) {
                            // A farol before stop 58 has no `instance`: another node.
                            Ok(Ok(status)) => {
                                known[i] = true;
                                itself[i] = status.get("instance").and_then(Value::as_str)
                                    == Some(own.as_str());
                                if itself[i] {
                                    tracing::warn!(peer = %peers[i], "sync.peers names this node itself: transactions are not forwarded there");
                                }
                            }
                            // Up, and refusing `farol_status` (`rpc.apis`): another node
                            // (this one, if it refuses it too, cannot be told apart).
                            Ok(Err(_)) => known[i] = true,
                            // Not reached, or too slow: the next peer, and this one is asked
                            // again next time.
                            Err(e) => {
                                tracing::warn!(peer = %peers[i], error = %e, "cannot forward transactions");
                                turn += 1;
                                continue;
                            }
                        }
                    }
                    if itself[i] {
                        turn += 1;
                        continue;
                    }
                    match clients[i].post_unread(&body) {
                        Ok(()) => {
                            sent = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(peer = %peers[i], error = %e, "cannot forward transactions");
                            turn += 1;
                        }
                    }
                }
                if !sent && itself.iter().all(|i| *i) {
                    // Said once: every peer listed is this node.
                    if !told_alone {
                        told_alone = true;
                        tracing::error!("every peer in sync.peers is this node: transactions are not forwarded");
                    }
                } else if !sent {
                    tracing::error!(count = chunk.len(), "no validator took the forwarded transactions");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {

    /// The slow rule goes off only once every peer was found slow, each counted once.
    #[test]
    fn the_slow_rule_counts_distinct_peers() {
        let mut s = super::SlowPeers::new(3);
        assert!(s.judged());
        for _ in 0..5 {
            s.found(1);
        }
        assert!(s.judged(), "one peer found slow again and again");
        s.found(0);
        assert!(s.judged());
        s.found(2);
        assert!(!s.judged(), "every peer slow: off until a sync completes");
        s.synced();
        assert!(s.judged());
    }

    /// A peer's failures are forgiven by a completed sync only: one that answers "nothing
    /// newer" between requests it holds until they time out rests longer each time.
    #[test]
    fn only_a_completed_sync_forgives_a_peers_failures() {
        use super::{Progress, Rests, FAILED_PEER_REST, SLOW_PEER_REST};
        let now = std::time::Instant::now();
        let mut r = Rests::new(2);
        let failed: Result<Progress, String> = Err("timed out".into());
        assert_eq!(r.record(0, &failed, now), Some(FAILED_PEER_REST));
        assert_eq!(r.next(0, now), 1, "peer 0 rests");
        assert_eq!(r.record(0, &Ok(Progress::UpToDate), now), None);
        assert_eq!(r.record(0, &failed, now), Some(FAILED_PEER_REST * 2));
        assert_eq!(r.record(0, &Ok(Progress::UpToDate), now), None);
        assert_eq!(r.record(0, &failed, now), Some(FAILED_PEER_REST * 4));
        // Up to 16 times.
        for _ in 0..5 {
            r.record(0, &failed, now);
        }
        assert_eq!(r.record(0, &failed, now), Some(FAILED_PEER_REST * 16));
        assert_eq!(r.record(0, &Ok(Progress::Slow), now), Some(SLOW_PEER_REST));
        assert_eq!(r.record(0, &Ok(Progress::Synced(9)), now), None);
        assert_eq!(r.next(0, now), 0, "a completed sync ends the rest");
        assert_eq!(r.record(0, &failed, now), Some(FAILED_PEER_REST));
        assert_eq!(r.record(0, &Ok(Progress::Slow), now), Some(SLOW_PEER_REST));
        // When every peer rests, the turn's own.
        r.record(1, &failed, now);
        assert_eq!(r.next(1, now), 1);
        assert_eq!(r.next(0, now + SLOW_PEER_REST), 0);
        // Strikes are forgotten after a long quiet time (a validator that is always up to
        // date completes no sync).
        assert_eq!(r.record(1, &failed, now), Some(FAILED_PEER_REST * 2));
        let later = now + super::STRIKES_KEPT;
        assert_eq!(r.record(1, &failed, later), Some(FAILED_PEER_REST));
    }
    use super::{Pace, SLOW_AFTER_ANSWERS};
    use std::time::{Duration, Instant};

    /// An answer with a small part of what was asked counts as the time a whole answer
    /// would take at its pace.
    #[test]
    fn a_short_answer_counts_at_its_pace() {
        // A second, so that whole answers stay fast however long this thread is held up (a
        // limit of 200 ms left 180 ms).
        let limit = Duration::from_millis(1000);
        let asked = Instant::now() - Duration::from_millis(20);
        // Whole answers in 20 ms each: fast.
        let mut whole = Pace::new(limit, true);
        assert!((0..SLOW_AFTER_ANSWERS).all(|_| !whole.answered_slowly(asked)));
        // One block of 64 in 20 ms each: 1.28 s a whole answer, slow.
        let mut part = Pace::new(limit, true);
        let slow: Vec<bool> =
            (0..SLOW_AFTER_ANSWERS).map(|_| part.answered_part_slowly(asked, 1000 / 64)).collect();
        assert_eq!(slow, [false, false, true]);
        // Nothing is judged where the rule is off (every peer was found slow).
        let mut off = Pace::new(limit, false);
        assert!((0..5).all(|_| !off.answered_part_slowly(asked, 1)));
    }

    /// An honest answer cut short by a large block after a small one holds little, but the
    /// peer that sends such answers between whole ones is as fast as its time per whole
    /// answer says: one answer of one block in 30 ms, then one of a large block in 600 ms,
    /// by turns, are under a limit of a second (counted alone, each short answer stood for
    /// 2 s).
    #[test]
    fn answers_cut_short_by_large_blocks_count_at_the_pace_of_all_answers() {
        let limit = Duration::from_millis(1000);
        let now = Instant::now();
        let (small, large) = (now - Duration::from_millis(30), now - Duration::from_millis(600));
        let mut pace = Pace::new(limit, true);
        let slow: Vec<bool> = (0..8)
            .map(|i| {
                if i % 2 == 0 {
                    pace.answered_part_slowly(small, 1000 / 64)
                } else {
                    pace.answered_part_slowly(large, 1000)
                }
            })
            .collect();
        assert_eq!(slow, [false; 8]);
    }
}

#[cfg(test)]
mod certificate_tests {
    use super::{verify_certificate, vote_message};
    use crate::chain::Certificate;
    use alloy_primitives::B256;
    use farol_consensus::{sim, Added, Committee, ValidatorIndex, VoteCollector};

    /// A certificate is bound to its chain's tag (the chain id, the genesis and the
    /// committee): one its validators' keys made on another chain of the same chain id (a
    /// testnet started again with a new genesis) is refused. Before stop 48 votes signed the
    /// chain id alone, and such a certificate, served by a peer, stopped an honest node.
    #[test]
    fn a_certificate_of_another_chain_with_the_same_keys_is_refused() {
        let committee = Committee::new(sim::members(4, 1)).unwrap_or_else(|e| panic!("{e}"));
        let keys = sim::keys(4);
        let hash = B256::repeat_byte(7);
        let certify = |tag: &[u8; 32]| {
            let message = vote_message(tag, 5, &hash);
            let mut votes = VoteCollector::new(&committee, message.clone());
            for (i, k) in &keys {
                let signer = ValidatorIndex(*i as u16);
                if let Ok(Added::Certified(q)) = votes.add(signer, k.sign(&message)) {
                    return Certificate { number: 5, hash, quorum: q.to_bytes() };
                }
            }
            panic!("no quorum")
        };
        let (ours, theirs) = ([1u8; 32], [2u8; 32]);
        assert!(verify_certificate(&certify(&ours), &committee, &ours).is_ok());
        assert!(verify_certificate(&certify(&theirs), &committee, &ours).is_err());
    }
}
