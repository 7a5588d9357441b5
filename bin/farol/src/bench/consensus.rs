//! `farol bench consensus`: AsyncBFT alone (no execution), 512-byte transactions.
//!
//! Over real QUIC on loopback (every validator a set of tasks in this process, each with its
//! own sockets, keys, signature cache and write-ahead log):
//! - `consensus.throughput.n{N}`: committed transactions per second under saturating load,
//!   every validator proposing (ours) against the same code with one proposer per round
//!   (the baseline, leader-based like HotStuff);
//! - `consensus.latency_p50.n{N}` / `latency_p99`: submission to commit at half of our
//!   saturated throughput (the baseline at the same offered load);
//! - `consensus.crashed.n{N}`: throughput with f validators down against fault-free.
//!
//! Ours and the baseline each run twice, ours first and last ([`abba`]).
//!
//! In the simulator (exact message delays, deterministic):
//! - `consensus.delays.n{N}`: message delays from a block's proposal to its commit, every
//!   validator's block (ours) against the leader-only mode's transactions;
//! - `consensus.loss.n{N}`: p50 commit latency with 1% message loss at f validators against
//!   none;
//! - `consensus.stall.n{N}`: the longest time without a commit with f crashed, in rounds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use farol_consensus::sim::{self, Scenario};
use farol_consensus::{
    AsyncBft, Committed, Committee, Config, Member, SignatureCache, Transaction, ValidatorIndex,
};
use farol_crypto::ed25519;
use farol_network::{Identity, Network, NetworkConfig, Peer};
use farol_node::validator::signature_precheck;
use farol_node::{Parts, Validator, ValidatorConfig, ValidatorStatus, Wal};
use serde_json::json;
use tokio::sync::mpsc;

use super::{progress, BenchResult, Better};

/// Arguments of `farol bench consensus`.
#[derive(Debug, Args)]
pub(crate) struct ConsensusBenchArgs {
    /// n = 4 only and shorter runs, well under a minute.
    #[arg(long)]
    quick: bool,
    /// Seconds measured per run, after a warm-up of a third of it (default 24; 3 with
    /// --quick). At n = 10 under saturation, shorter windows measure the start-up, while the
    /// distance between the DAG and its commits still grows.
    #[arg(long)]
    secs: Option<f64>,
    /// Committee sizes to run over QUIC (default 4,7,10; 4 with --quick).
    #[arg(long, value_delimiter = ',')]
    n: Option<Vec<usize>>,
    /// Only one QUIC run of ours at this offered load (tx/s), for exploring.
    #[arg(long)]
    rate: Option<u64>,
    /// Only one saturated QUIC run of ours with this many validators down (0: fault-free),
    /// for exploring.
    #[arg(long, conflicts_with = "rate")]
    down: Option<usize>,
    /// Runs ours without the common coin (the asynchronous fallback), to see what it costs.
    #[arg(long)]
    no_coin: bool,
    /// Only ours against this machine's floor at `--rate` (default 42,541 tx/s, the full
    /// run's half load), n = 4 unless `--n` says: the same QUIC network, load and fsynced
    /// logs exchanging rounds of transactions with no consensus at all (see [`floor_run`]).
    #[arg(long, conflicts_with = "down")]
    floor: bool,
}

/// Bytes of every transaction.
const TX_BYTES: usize = 512;

/// Half of the saturated rate of the full run at n = 4 in docs/consensus.md §9 (stop 23).
const HALF_LOAD_N4: u64 = 42_541;

/// Runs `farol bench consensus`.
pub(crate) fn run(args: ConsensusBenchArgs) -> Result<()> {
    let secs = args.secs.unwrap_or(if args.quick { 3.0 } else { 24.0 });
    let sizes = args.n.clone().unwrap_or(if args.quick { vec![4] } else { vec![4, 7, 10] });
    if let Some(n) = sizes.iter().find(|n| **n == 0 || **n > 64) {
        return Err(anyhow!("--n: committee sizes are 1 to 64, not {n}"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.floor {
        let rate = args.rate.unwrap_or(HALF_LOAD_N4);
        let sizes = args.n.clone().unwrap_or(vec![4]);
        for n in sizes {
            progress(format!(
                "n = {n}: {rate} tx/s, ours against the floor (no consensus), twice each"
            ));
            let (ours, floor) = abba(|bare| {
                rt.block_on(async {
                    if bare {
                        floor_run(n, rate, secs).await
                    } else {
                        quic_run(n, 0, false, Some(rate), secs, !args.no_coin).await
                    }
                })
            })?;
            let params = json!({
                "n": n, "tx_bytes": TX_BYTES, "secs": secs, "offered_tx_per_s": rate,
                "order": ABBA, "p99_ms": {"ours": ours.p99_ms, "floor": floor.p99_ms},
                "rounds_per_s": {"ours": ours.rounds, "floor": floor.rounds},
                "committed_tx_per_s": {"ours": ours.tps, "floor": floor.tps},
                "baseline_is": "the floor, a reference and not a lower bound: the same QUIC \
                    network, load and fsynced logs, each validator broadcasting its \
                    transactions once per round when it holds all of the round before, a \
                    round committed when the round two after it is complete (3 message \
                    delays, as ours) and counted after the next frame is synced and sent; no \
                    engine, signatures, hashing or coin",
            });
            BenchResult::new(
                &format!("consensus.floor_p50.n{n}"),
                ours.p50_ms,
                floor.p50_ms,
                "ms",
                Better::Lower,
                params,
            )
            .print()?;
        }
        return Ok(());
    }
    if let Some(rate) = args.rate {
        for &n in &sizes {
            rt.block_on(quic_run(n, 0, false, Some(rate), secs, !args.no_coin))?;
        }
        return Ok(());
    }
    if let Some(down) = args.down {
        for &n in &sizes {
            if down >= n {
                return Err(anyhow!("--down: {down} of {n} validators leaves none running"));
            }
            rt.block_on(quic_run(n, down, false, None, secs, !args.no_coin))?;
        }
        return Ok(());
    }
    for &n in &sizes {
        let f = (n - 1) / 3;
        let coin = !args.no_coin;
        progress(format!(
            "n = {n}: saturating load, every validator proposing against one proposer per round"
        ));
        let (ours, single) =
            abba(|single| rt.block_on(quic_run(n, 0, single, None, secs, coin && !single)))?;
        let params = json!({
            "n": n, "tx_bytes": TX_BYTES, "secs": secs, "network": "QUIC on loopback",
            "order": ABBA,
            "runs_tx_per_s": {"ours": ours.runs, "baseline": single.runs},
            "log_syncs_20ms_or_more": {"ours": ours.slow_syncs, "baseline": single.slow_syncs},
            "log_sync_longest_ms": {"ours": ours.longest_sync_ms, "baseline": single.longest_sync_ms},
        });
        BenchResult::new(
            &format!("consensus.throughput.n{n}"),
            ours.tps,
            single.tps,
            "tx/s",
            Better::Higher,
            params.clone(),
        )
        .print()?;
        let half = (ours.tps / 2.0).max(100.0) as u64;
        progress(format!("n = {n}: {half} tx/s offered (half load), both modes"));
        let (ours_half, single_half) =
            abba(|single| rt.block_on(quic_run(n, 0, single, Some(half), secs, coin && !single)))?;
        let mut p = params.clone();
        p["offered_tx_per_s"] = json!(half);
        p["committed_tx_per_s"] = json!({"ours": ours_half.tps, "baseline": single_half.tps});
        p["runs_tx_per_s"] = json!({"ours": ours_half.runs, "baseline": single_half.runs});
        p["log_syncs_20ms_or_more"] =
            json!({"ours": ours_half.slow_syncs, "baseline": single_half.slow_syncs});
        p["log_sync_longest_ms"] =
            json!({"ours": ours_half.longest_sync_ms, "baseline": single_half.longest_sync_ms});
        for (name, a, b) in [
            ("latency_p50", ours_half.p50_ms, single_half.p50_ms),
            ("latency_p99", ours_half.p99_ms, single_half.p99_ms),
        ] {
            BenchResult::new(
                &format!("consensus.{name}.n{n}"),
                a,
                b,
                "ms",
                Better::Lower,
                p.clone(),
            )
            .print()?;
        }
        if f > 0 {
            progress(format!("n = {n}: {f} validators down, saturating load"));
            let crashed = rt.block_on(quic_run(n, f, false, None, secs, coin))?;
            let mut p = params.clone();
            p["crashed"] = json!(f);
            p["goal_fraction"] = json!((n - f) as f64 / n as f64 - 0.1);
            p["fraction"] = json!(crashed.tps / ours.tps);
            p["log_syncs_20ms_or_more"] = json!(crashed.slow_syncs);
            p["log_sync_longest_ms"] = json!(crashed.longest_sync_ms);
            BenchResult::new(
                &format!("consensus.crashed.n{n}"),
                crashed.tps,
                ours.tps,
                "tx/s",
                Better::Higher,
                p,
            )
            .print()?;
        }
    }
    for &n in &sizes {
        simulated(n, args.quick, !args.no_coin)?;
    }
    Ok(())
}

/// What one QUIC run measured at validator 0 (or the mean of runs, each run's throughput in
/// `runs`).
#[derive(Debug, Clone)]
struct Measured {
    tps: f64,
    p50_ms: f64,
    p99_ms: f64,
    runs: Vec<f64>,
    /// Per run: syncs of the consensus logs (all validators) that took the disk 20 ms or
    /// more, and the longest. All validators' logs share this machine's one disk, and a
    /// slow sync holds up every proposal waiting on it (the 197 and 226 ms p99s traced in
    /// docs/consensus.md §9 were such syncs).
    slow_syncs: Vec<u64>,
    longest_sync_ms: Vec<u64>,
    /// Rounds a second at validator 0.
    rounds: f64,
}

/// The round of validator 0's commits at the end of the warm-up and of the window: rounds a
/// second within the window (before stop 59, the last round over the whole run, start-up
/// and warm-up included, which read low).
#[derive(Debug, Default)]
struct Rounds {
    at_warmup: AtomicU64,
    at_end: AtomicU64,
}

impl Rounds {
    /// A commit of `round` at `now`.
    fn note(&self, round: u64, now: Duration, warmup: Duration, end: Duration) {
        if now <= warmup {
            self.at_warmup.store(round, Ordering::Relaxed);
        }
        if now <= end {
            self.at_end.store(round, Ordering::Relaxed);
        }
    }

    fn per_second(&self, secs: f64) -> f64 {
        let rounds = self.at_end.load(Ordering::Relaxed);
        rounds.saturating_sub(self.at_warmup.load(Ordering::Relaxed)) as f64 / secs
    }
}

impl Measured {
    /// One run's: `committed` transactions in `secs`, their `latencies` (microseconds), the
    /// log syncs of [`SLOW_SYNC_MS`] or more and the longest, and rounds a second.
    fn of_run(
        committed: f64,
        latencies: &Mutex<Vec<u64>>,
        secs: f64,
        (slow_syncs, longest_sync_ms): (u64, u64),
        rounds: f64,
    ) -> Measured {
        let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
        l.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        Measured {
            tps: committed / secs,
            p50_ms: ms(sim::percentile(&l, 50)),
            p99_ms: ms(sim::percentile(&l, 99)),
            runs: vec![committed / secs],
            slow_syncs: vec![slow_syncs],
            longest_sync_ms: vec![longest_sync_ms],
            rounds,
        }
    }
}

/// Each identity at a free port on loopback.
fn loopback_peers(ids: &[Identity]) -> Result<Vec<Peer>> {
    let addrs = farol_network::free_loopback_addrs(ids.len()).context("finding free ports")?;
    Ok(ids.iter().zip(addrs).map(|(i, addr)| Peer { key: i.public_key().clone(), addr }).collect())
}

/// A transaction's bytes: its number and the time it was submitted (microseconds since the
/// run's start, from which its latency is taken), then zeros.
fn payload(seq: u64, at_us: u64) -> Bytes {
    let mut payload = vec![0u8; TX_BYTES];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[8..16].copy_from_slice(&at_us.to_le_bytes());
    Bytes::from(payload)
}

/// Sends each validator its share of the load (`by[v]` to `submitters[v]`); false once one
/// is gone.
async fn hand_out<T>(submitters: &[mpsc::Sender<Vec<T>>], by: Vec<Vec<T>>) -> bool {
    for (v, txs) in by.into_iter().enumerate() {
        if !txs.is_empty() && submitters[v].send(txs).await.is_err() {
            return false;
        }
    }
    true
}

/// A sync of a consensus log this slow or slower is counted in the results.
const SLOW_SYNC_MS: u64 = 20;

/// How [`abba`] orders the runs.
const ABBA: &str = "ours, baseline, baseline, ours; each side the mean of its two runs";

/// Runs ours (`false`: every validator proposing) and the baseline (`true`: one proposer
/// per round) twice each, in the order ours, baseline, baseline, ours, and returns the means
/// (ours, baseline). The first runs of a process are the slowest on this machine (as in
/// `farol bench node`), so neither side may always go first.
fn abba(run: impl FnMut(bool) -> Result<Measured>) -> Result<(Measured, Measured)> {
    let ((a1, a2), (b1, b2)) = super::abba(false, run)?;
    let mean = |x: Measured, y: Measured| Measured {
        tps: (x.tps + y.tps) / 2.0,
        p50_ms: (x.p50_ms + y.p50_ms) / 2.0,
        p99_ms: (x.p99_ms + y.p99_ms) / 2.0,
        runs: [x.runs, y.runs].concat(),
        slow_syncs: [x.slow_syncs, y.slow_syncs].concat(),
        longest_sync_ms: [x.longest_sync_ms, y.longest_sync_ms].concat(),
        rounds: (x.rounds + y.rounds) / 2.0,
    };
    Ok((mean(a1, a2), mean(b1, b2)))
}

/// The chain tag of the bench's validators.
const CHAIN: [u8; 32] = [3; 32];

/// Runs `n` validators (the last `down` never started) for `secs` after a warm-up, with
/// transactions offered at `rate` per second (as fast as accepted if `None`).
async fn quic_run(
    n: usize,
    down: usize,
    single: bool,
    rate: Option<u64>,
    secs: f64,
    with_coin: bool,
) -> Result<Measured> {
    let ids = (0..n).map(|_| Identity::generate()).collect::<Result<Vec<_>, _>>()?;
    // Blocks are signed with the network identities, as `farol node` does.
    let keys = ids
        .iter()
        .map(|i| ed25519::SigningKey::from_pkcs8(i.to_pkcs8()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut members = Vec::with_capacity(n);
    for ((k, id), block) in sim::keys(n).into_values().zip(&ids).zip(&keys) {
        let block_key = ed25519::PublicKey::from_spki(&id.public_key().0)?;
        if block_key != block.public_key() {
            bail!("a network identity's public key is not its signing key's");
        }
        members.push(Member {
            key: k.public_key(),
            possession: k.prove_possession(),
            block_key,
            stake: 1,
        });
    }
    let committee = Committee::new(members).map_err(|e| anyhow!("committee: {e}"))?;
    // With the common coin, as `farol devnet` runs (its shares cost one more signature
    // every other round).
    let t = committee.coin_threshold().context("no coin threshold")?;
    let coin = farol_crypto::coin::deal(&[0xc0; 32], n, t).map_err(|e| anyhow!("dealing: {e}"))?;
    let committee = if with_coin {
        Arc::new(committee.with_coin(coin.publics).map_err(|e| anyhow!("coin: {e}"))?)
    } else {
        Arc::new(committee)
    };
    let peers = loopback_peers(&ids)?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(secs / 3.0);
    let window = Duration::from_secs_f64(secs);
    let counted = Arc::new(AtomicU64::new(0));
    // Committed at validator 0 over the whole run, and its latest round.
    let total = Arc::new(AtomicU64::new(0));
    let last_round = Arc::new(Rounds::default());
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut validators = Vec::new();
    let mut submitters = Vec::new();
    let mut statuses = Vec::new();
    let mut networks = Vec::new();
    for i in 0..n - down {
        let (wal, _) = Wal::open(&dir.path().join(format!("{i}.wal")))?;
        let cfg = Config {
            chain: CHAIN,
            single_leader: single,
            coin: with_coin.then(|| coin.secrets[i].clone()),
            ..Config::default()
        };
        let cache = Arc::new(SignatureCache::default());
        let engine = AsyncBft::new(
            committee.clone(),
            ValidatorIndex(i as u16),
            keys[i].clone(),
            cfg,
            cache.clone(),
        );
        let mut ncfg = NetworkConfig::new(i as u16, ids[i].clone(), peers[i].addr, peers.clone());
        // Blocks' signatures checked by the connections' readers, as `farol node` does.
        ncfg.precheck = Some(signature_precheck(cache, committee.clone(), CHAIN));
        let (network, inbound) = Network::start(ncfg)?;
        let (tx, mut rx) = mpsc::channel::<Committed>(1024);
        if i == 0 {
            let counted = counted.clone();
            let latencies = latencies.clone();
            let total = total.clone();
            let last_round = last_round.clone();
            tokio::spawn(async move {
                while let Some(c) = rx.recv().await {
                    total.fetch_add(c.transactions.len() as u64, Ordering::Relaxed);
                    let now = start.elapsed();
                    last_round.note(c.round, now, warmup, warmup + window);
                    if now < warmup || now > warmup + window {
                        continue;
                    }
                    counted.fetch_add(c.transactions.len() as u64, Ordering::Relaxed);
                    let now_us = now.as_micros() as u64;
                    let mut l = latencies.lock().unwrap_or_else(|e| e.into_inner());
                    for t in &c.transactions {
                        let mut at = [0u8; 8];
                        at.copy_from_slice(&t.payload[8..16]);
                        l.push(now_us.saturating_sub(u64::from_le_bytes(at)));
                    }
                }
            });
        } else {
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
        }
        let status = Arc::new(ValidatorStatus::default());
        statuses.push(status.clone());
        let network = Arc::new(network);
        networks.push(network.clone());
        let parts = Parts {
            engine: Box::new(engine),
            replayed: Vec::new(),
            network,
            inbound,
            wal,
            commits: tx,
            node_frames: None,
        };
        let v = Validator::spawn_with(parts, ValidatorConfig::default(), None, status);
        submitters.push(v.submitter());
        validators.push(v);
    }
    // The load: every millisecond, the transactions due at the offered rate, each submitted
    // to the validator it is assigned to (as the node's mempool forwards them). Without a
    // rate, the load is closed-loop: at most `WINDOW` submitted and not yet committed.
    const WINDOW: u64 = 150_000;
    let stop_at = warmup + window;
    let running = n - down;
    let load_committee = committee.clone();
    let load_total = total.clone();
    let load = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut owed = 0f64;
        while start.elapsed() < stop_at {
            tick.tick().await;
            let batch = match rate {
                Some(r) => {
                    owed += r as f64 / 1000.0;
                    let b = owed.floor() as usize;
                    owed -= b as f64;
                    b
                }
                None => {
                    let open = seq.saturating_sub(load_total.load(Ordering::Relaxed));
                    WINDOW.saturating_sub(open).min(4_000) as usize
                }
            };
            if batch == 0 {
                continue;
            }
            let at = start.elapsed().as_micros() as u64;
            let txs: Vec<Transaction> = (0..batch)
                .map(|_| {
                    seq += 1;
                    let mut sender = [0u8; 20];
                    sender[..4].copy_from_slice(&((seq % 4096) as u32).to_le_bytes());
                    Transaction { sender, payload: payload(seq, at) }
                })
                .collect();
            let mut by: Vec<Vec<Transaction>> = vec![Vec::new(); running];
            for t in txs {
                // Transactions of a validator that is down go to the first assignee that
                // is up, as the engines reassign them.
                let to = AsyncBft::first_assignee(&load_committee, &t.sender, 0, |v| {
                    usize::from(v.0) < running
                })
                .map_or(0, |(_, v)| usize::from(v.0));
                by[to].push(t);
            }
            if !hand_out(&submitters, by).await {
                return;
            }
        }
    });
    tokio::time::sleep(stop_at + Duration::from_millis(200)).await;
    load.abort();
    for v in validators {
        v.stop().await?;
    }
    let committed = counted.load(Ordering::Relaxed) as f64;
    let slow_syncs = statuses.iter().map(|s| s.log_sync.count_from_ms(SLOW_SYNC_MS)).sum();
    let longest_sync = statuses.iter().filter_map(|s| s.log_sync.max_ms()).max().unwrap_or(0);
    let rounds = last_round.per_second(secs);
    let m = Measured::of_run(committed, &latencies, secs, (slow_syncs, longest_sync), rounds);
    // What the validators' networks did: connections made (n - 1 each when none broke),
    // connections a peer's stateless reset ended, frames dropped for full queues.
    let sum = |f: fn(&farol_network::Stats) -> u64| -> u64 {
        networks.iter().map(|n| f(n.stats())).sum()
    };
    let connects = sum(|s| s.connects.load(Ordering::Relaxed));
    let resets = sum(|s| s.resets.load(Ordering::Relaxed));
    let dropped = sum(|s| s.dropped.load(Ordering::Relaxed));
    progress(format!(
        "  {}: {:.0} tx/s, p50 {:.1} ms, p99 {:.1} ms, {rounds:.0} rounds/s; \
         log syncs of {SLOW_SYNC_MS} ms or more: {slow_syncs} (longest {longest_sync} ms); \
         connections {connects}, reset {resets}, frames dropped {dropped}",
        if single { "one proposer per round" } else { "every validator proposing" },
        m.tps,
        m.p50_ms,
        m.p99_ms
    ));
    Ok(m)
}

/// A reference for [`quic_run`] at `rate`: what the same QUIC network, load and fsynced logs
/// take with no consensus at all. Each of `n` validators, in every round, logs and syncs its
/// round's frame (the 512-byte transactions submitted to it since its last one, behind the
/// round number) with the frames it received since, broadcasts it, and waits for every
/// validator's frame of that round before the next. Validator 0 takes a round as committed
/// when it holds all of the round two after it (three message delays after its frames were
/// sent, as ours commits every validator's block), and counts it after its next frame is
/// synced and sent, as ours delivers commits after its next proposal. No engine,
/// signatures, hashing, coin or checkpoints. Not a lower bound: it waits for all `n` frames
/// of a round where ours moves on at a quorum (plus a bounded wait), and it has no repair,
/// so a lost frame stalls it (the run then fails).
async fn floor_run(n: usize, rate: u64, secs: f64) -> Result<Measured> {
    let ids = (0..n).map(|_| Identity::generate()).collect::<Result<Vec<_>, _>>()?;
    let peers = loopback_peers(&ids)?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(secs / 3.0);
    let stop_at = warmup + Duration::from_secs_f64(secs);
    let tally = Arc::new(FloorTally::new(warmup, stop_at));
    let mut tasks = Vec::new();
    let mut networks = Vec::new();
    let mut submitters = Vec::new();
    let mut slow = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (mut wal, _) = Wal::open(&dir.path().join(format!("{i}.wal")))?;
        let ncfg = NetworkConfig::new(i as u16, id.clone(), peers[i].addr, peers.clone());
        let (network, mut inbound) = Network::start(ncfg)?;
        let network = Arc::new(network);
        networks.push(network.clone());
        let (tx, mut submitted) = mpsc::channel::<Vec<Bytes>>(4096);
        submitters.push(tx);
        let slow_syncs = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
        slow.push(slow_syncs.clone());
        let tally = (i == 0).then(|| tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut frames = std::collections::BTreeMap::<u64, Vec<Option<Bytes>>>::new();
            let mut held: Vec<Bytes> = Vec::new();
            // The round the last one completed, counted once this round's frame is out.
            let mut done: Option<(u64, Vec<Option<Bytes>>)> = None;
            for round in 1u64.. {
                while let Ok(t) = submitted.try_recv() {
                    held.extend(t);
                }
                let mut frame = Vec::with_capacity(8 + held.len() * TX_BYTES);
                frame.extend_from_slice(&round.to_le_bytes());
                for t in held.drain(..) {
                    frame.extend_from_slice(&t);
                }
                let frame = Bytes::from(frame);
                wal.append(&frame)?;
                if let Some(took) = wal.sync_off_thread().await? {
                    let ms = took.as_millis() as u64;
                    if ms >= SLOW_SYNC_MS {
                        slow_syncs.0.fetch_add(1, Ordering::Relaxed);
                    }
                    slow_syncs.1.fetch_max(ms, Ordering::Relaxed);
                }
                network.broadcast(frame.clone());
                if let (Some((r, committed)), Some(t)) = (done.take(), &tally) {
                    t.count(r, committed, start.elapsed());
                }
                frames.entry(round).or_insert_with(|| vec![None; n])[i] = Some(frame);
                while frames.get(&round).is_some_and(|f| f.iter().any(Option::is_none)) {
                    let Some((from, bytes)) = inbound.recv().await else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    let Some(r) = bytes.get(..8).and_then(|b| b.try_into().ok()) else {
                        continue;
                    };
                    let r = u64::from_le_bytes(r);
                    if r.saturating_add(2) < round || usize::from(from) >= n {
                        continue;
                    }
                    wal.append(&bytes)?;
                    frames.entry(r).or_insert_with(|| vec![None; n])[usize::from(from)] =
                        Some(bytes);
                }
                done = round.checked_sub(2).and_then(|r| Some((r, frames.remove(&r)?)));
            }
            Ok(())
        }));
    }
    // The load of `quic_run` at a rate, spread evenly (the assignment costs nothing here).
    let load = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut owed = 0f64;
        while start.elapsed() < stop_at {
            tick.tick().await;
            owed += rate as f64 / 1000.0;
            let batch = owed.floor() as usize;
            owed -= batch as f64;
            let at = start.elapsed().as_micros() as u64;
            let mut by: Vec<Vec<Bytes>> = vec![Vec::new(); n];
            for _ in 0..batch {
                seq += 1;
                by[(seq % n as u64) as usize].push(payload(seq, at));
            }
            if !hand_out(&submitters, by).await {
                return;
            }
        }
    });
    tokio::time::sleep(stop_at + Duration::from_millis(200)).await;
    load.abort();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        match t.await {
            Ok(Err(e)) => return Err(e.context("a floor validator failed")),
            Err(e) if e.is_panic() => bail!("a floor validator panicked: {e}"),
            Ok(Ok(())) | Err(_) => {}
        }
    }
    let dropped: u64 = networks.iter().map(|n| n.stats().dropped.load(Ordering::Relaxed)).sum();
    let committed = tally.counted.load(Ordering::Relaxed) as f64;
    let twice = tally.twice.load(Ordering::Relaxed);
    if twice > 0 {
        bail!("the floor counted {twice} transactions twice");
    }
    // Without repair, a frame lost stalls every validator: the run would read as a floor
    // with the latencies from before the stall.
    if committed < 0.8 * rate as f64 * secs {
        bail!(
            "the floor committed {committed:.0} transactions in {secs} s of {rate} tx/s offered \
             ({dropped} frames dropped): it stalled or did not keep up, so it is no reference"
        );
    }
    let slow_syncs = slow.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    let longest_sync = slow.iter().map(|s| s.1.load(Ordering::Relaxed)).max().unwrap_or(0);
    let rounds = tally.rounds.per_second(secs);
    let syncs = (slow_syncs, longest_sync);
    let m = Measured::of_run(committed, &tally.latencies, secs, syncs, rounds);
    progress(format!(
        "  floor: {:.0} tx/s, p50 {:.1} ms, p99 {:.1} ms, {rounds:.0} rounds/s; log syncs of \
         {SLOW_SYNC_MS} ms or more: {slow_syncs} (longest {longest_sync} ms); frames dropped \
         {dropped}",
        m.tps, m.p50_ms, m.p99_ms
    ));
    Ok(m)
}

/// What validator 0 of [`floor_run`] committed.
struct FloorTally {
    warmup: Duration,
    end: Duration,
    /// Transactions committed within the window.
    counted: AtomicU64,
    /// Their latencies, in microseconds.
    latencies: Mutex<Vec<u64>>,
    rounds: Rounds,
    /// Every transaction committed (by its number), and how many came twice.
    seen: Mutex<std::collections::HashSet<u64>>,
    twice: AtomicU64,
}

impl FloorTally {
    fn new(warmup: Duration, end: Duration) -> FloorTally {
        FloorTally {
            warmup,
            end,
            counted: AtomicU64::new(0),
            latencies: Mutex::new(Vec::new()),
            rounds: Rounds::default(),
            seen: Mutex::new(std::collections::HashSet::new()),
            twice: AtomicU64::new(0),
        }
    }

    /// Counts `round`'s frames as committed at `now` (since the run's start).
    fn count(&self, round: u64, frames: Vec<Option<Bytes>>, now: Duration) {
        self.rounds.note(round, now, self.warmup, self.end);
        let within = now >= self.warmup && now <= self.end;
        let now_us = now.as_micros() as u64;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut l = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        for f in frames.into_iter().flatten() {
            for t in f.get(8..).unwrap_or_default().chunks_exact(TX_BYTES) {
                let field = |at: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&t[at..at + 8]);
                    u64::from_le_bytes(b)
                };
                if !seen.insert(field(0)) {
                    self.twice.fetch_add(1, Ordering::Relaxed);
                }
                if within {
                    l.push(now_us.saturating_sub(field(8)));
                    self.counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Message delays, loss and stalls in the simulator, where delays are exact.
fn simulated(n: usize, quick: bool, coin: bool) -> Result<()> {
    let latency = 10_000;
    let base = |single: bool| {
        let mut s = Scenario::clean(n);
        s.latency = (latency, latency);
        s.jitter = false;
        s.tx_rate = 5_000;
        s.duration = if quick { 1_000_000 } else { 3_000_000 };
        s.config.single_leader = single;
        s.coin = coin && !single;
        s
    };
    let run = |s: &Scenario| sim::run(1, s).map_err(|v| anyhow!("simulation: {v}"));
    progress(format!("n = {n}: simulator, message delays"));
    // Ours: every block with transactions, proposal to commit. Baseline: every transaction,
    // submission to commit (it waits for its proposer's turn to lead).
    let ours = run(&base(false))?;
    let single = run(&base(true))?;
    let delays = |v: &mut Vec<u64>| {
        v.sort_unstable();
        sim::percentile(v, 50) as f64 / latency as f64
    };
    let mut ours_blocks: Vec<u64> =
        ours.leader_delays.iter().filter(|(r, _)| *r > 10).map(|(_, d)| *d).collect();
    let mut ours_txs = ours.latencies.clone();
    let mut single_txs = single.latencies.clone();
    let params = json!({"n": n, "link_latency_ms": latency / 1000, "tx_per_s": 5000});
    let mut p = params.clone();
    p["ours_block_p50_delays"] = json!(delays(&mut ours_blocks));
    BenchResult::new(
        &format!("consensus.delays.n{n}"),
        delays(&mut ours_txs),
        delays(&mut single_txs),
        "message delays (p50, submission to commit)",
        Better::Lower,
        p,
    )
    .print()?;
    let f = (n - 1) / 3;
    if f == 0 {
        return Ok(());
    }
    progress(format!("n = {n}: simulator, 1% loss at {f} validators"));
    let mut lossy = base(false);
    lossy.lossy = (0..f).collect();
    lossy.lossy_ppm = 10_000;
    let mut with = run(&lossy)?.latencies;
    let mut without = ours.latencies.clone();
    with.sort_unstable();
    without.sort_unstable();
    BenchResult::new(
        &format!("consensus.loss.n{n}"),
        sim::percentile(&with, 50) as f64 / 1000.0,
        sim::percentile(&without, 50) as f64 / 1000.0,
        "ms (p50, with loss vs without)",
        Better::Lower,
        json!({"n": n, "lossy_validators": f, "loss": 0.01, "goal": "ours ≤ 1.5 × baseline"}),
    )
    .print()?;
    progress(format!("n = {n}: simulator, {f} crashed"));
    let mut crashed = base(false);
    crashed.crashes = (0..f).map(|v| (v, 200_000, None)).collect();
    let r = run(&crashed)?;
    let round_us = (crashed.duration as f64 / ours.rounds.max(1) as f64).max(1.0);
    BenchResult::new(
        &format!("consensus.stall.n{n}"),
        r.longest_stall as f64 / round_us,
        ours.longest_stall as f64 / round_us,
        "rounds (longest time without a commit)",
        Better::Lower,
        json!({"n": n, "crashed": f, "goal": "≤ 2 rounds"}),
    )
    .print()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor's validators exchange rounds over real sockets and validator 0 commits the
    /// transactions offered, each with the time it waited.
    #[test]
    fn the_floor_commits_what_is_offered() -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        // It fails by itself when a transaction is counted twice or the rounds stall.
        let m = rt.block_on(floor_run(4, 2_000, 2.0))?;
        assert!(m.rounds > 0.0 && m.p50_ms > 0.0, "{m:?}");
        Ok(())
    }
}
