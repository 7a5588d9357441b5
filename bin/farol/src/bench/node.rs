//! `farol bench node`: a load generator submits pre-signed transfers through JSON-RPC to a
//! devnet of validator processes on this machine and measures sustained committed TPS and
//! the latency of each finality tier; then the same with the pipeline off (each validator
//! executes and stores one block at a time) as the baseline. Throughput is measured at
//! saturation (transfers submitted as fast as the nodes take them); latencies at an offered
//! load of a third of the baseline's throughput, on fresh devnets. Each variant runs twice,
//! in the order pipelined, baseline, baseline, pipelined, and reports the mean.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, TxKind, U256};
use anyhow::{bail, Context, Result};
use clap::Args;
use farol_node::client::{quantity, RpcClient};
use farol_node::genesis::{mnemonic_accounts, DEV_MNEMONIC};
use serde_json::{json, Value};

use super::{progress, BenchResult, Better};

/// Arguments of `farol bench node`.
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeBenchArgs {
    /// A short run (30,000 transfers instead of 200,000).
    #[arg(long)]
    quick: bool,
    /// Transfers to submit.
    #[arg(long)]
    transactions: Option<usize>,
    /// Sending accounts (each sends its transfers in nonce order).
    #[arg(long, default_value_t = 400)]
    senders: u32,
    /// Validator processes.
    #[arg(long, default_value_t = 4)]
    validators: u16,
    /// Transfers per JSON-RPC batch.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Sending threads per validator, each on its own connection with one batch in flight
    /// (a sender's transfers all go through one of them, in nonce order).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Transfers per second offered in the latency runs (default: a third of the baseline's
    /// saturated throughput in this run).
    #[arg(long)]
    rate: Option<f64>,
}

struct Measured {
    tps: f64,
    included: u64,
    rejected: u64,
    secs: f64,
    /// (tier, p50 ms, p99 ms), worst over the validators.
    tiers: Vec<(&'static str, f64, f64)>,
    /// Transfers per second of each run averaged into this one.
    runs: Vec<f64>,
    /// The height of validator 0's chain at the end of each run (with the block or two made
    /// before submission began).
    blocks: Vec<u64>,
    /// Per run: the share of the machine's CPU time that was idle while it ran, and the CPU
    /// time the rest of the machine (the validators, mostly) spent per included transfer, in
    /// microseconds.
    cpu: Vec<(f64, f64)>,
}

impl Measured {
    /// Two runs of one variant: the mean of their rates, times and latencies; the fewer
    /// included and the rejected of both.
    fn mean(a: Measured, b: Measured) -> Measured {
        let tiers = a
            .tiers
            .iter()
            .zip(&b.tiers)
            .map(|((t, a50, a99), (_, b50, b99))| (*t, (a50 + b50) / 2.0, (a99 + b99) / 2.0))
            .collect();
        Measured {
            tps: (a.tps + b.tps) / 2.0,
            included: a.included.min(b.included),
            rejected: a.rejected + b.rejected,
            secs: (a.secs + b.secs) / 2.0,
            tiers,
            runs: [a.runs, b.runs].concat(),
            blocks: [a.blocks, b.blocks].concat(),
            cpu: [a.cpu, b.cpu].concat(),
        }
    }
}

/// Runs each variant twice, pipelined, one block at a time, one block at a time, pipelined,
/// and returns (pipelined, one block at a time), each the mean of its two runs. On this
/// machine the first devnet a bench starts runs slower than the next (saturated, pipelined
/// first: 4,134–4,740 against 5,190–5,482 tx/s; one block at a time first: 4,270 against
/// 4,793), so neither variant may always go first.
fn abba(run: impl FnMut(bool) -> Result<Measured>) -> Result<(Measured, Measured)> {
    let ((a1, a2), (b1, b2)) = super::abba(true, run)?;
    Ok((Measured::mean(a1, a2), Measured::mean(b1, b2)))
}

struct Devnet {
    child: Child,
    http: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        crate::devnet::terminate(&mut [&mut self.child], Duration::from_secs(20));
    }
}

fn start_devnet(args: &NodeBenchArgs, pipelined: bool, port: u16) -> Result<Devnet> {
    let dir = tempfile::Builder::new().prefix("farol-bench-node-").tempdir()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["devnet", "--json", "--log", "warn", "--validators"])
        .arg(args.validators.to_string())
        .arg("--accounts")
        .arg(args.senders.to_string())
        .arg("--port")
        .arg(port.to_string())
        .arg("--ws-port")
        .arg((port + 1).to_string())
        .arg("--data-dir")
        .arg(dir.path().join("devnet"))
        // The newest 1,024 states, as every run before stop 52 kept (a devnet now keeps
        // all): the numbers stay comparable, and a node's own bound is what is measured.
        .args(["--retain-versions", "1024"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !pipelined {
        cmd.arg("--no-pipeline");
    }
    let mut child = cmd.spawn().context("starting the devnet")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let summary: Value =
        serde_json::from_str(&line).with_context(|| format!("devnet summary {line:?}"))?;
    let http = summary["validators"]
        .as_array()
        .context("no validators")?
        .iter()
        .map(|v| {
            v["http"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("http://")
                .parse::<SocketAddr>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let net = Devnet { child, http, _dir: dir };
    wait_live(&net)?;
    Ok(net)
}

/// Waits until every validator has committed a few consensus rounds and stored a block
/// after genesis: the validators are connected and the pipeline has run once, so what
/// the bench measures is the running chain, not its start.
fn wait_live(net: &Devnet) -> Result<()> {
    let began = Instant::now();
    let mut clients: Vec<RpcClient> = net.http.iter().map(|a| RpcClient::new(*a)).collect();
    loop {
        let live = clients.iter_mut().all(|c| {
            c.call("farol_status", json!([])).is_ok_and(|s| {
                let height = quantity(&s["consensusHeight"]).unwrap_or(0);
                let head = quantity(&s["head"]).unwrap_or(0);
                height >= 3 && head >= 1
            })
        });
        if live {
            return Ok(());
        }
        if began.elapsed() > Duration::from_secs(60) {
            bail!("the devnet made no progress within 60 s of starting");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pre-signs `n` transfers, round-robin over `keys` (each sender's in nonce order).
fn presign(keys: &[alloy_signer_local::PrivateKeySigner], n: usize) -> Vec<(usize, String)> {
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_eips::eip2718::Encodable2718;
    use alloy_signer::SignerSync;
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(2);
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in t * chunk..((t + 1) * chunk).min(n) {
                        let sender = i % keys.len();
                        let nonce = (i / keys.len()) as u64;
                        let mut to = [0x99u8; 20];
                        to[12..20].copy_from_slice(&(i as u64).to_be_bytes());
                        let tx = TxEip1559 {
                            chain_id: farol_node::genesis::DEV_CHAIN_ID,
                            nonce,
                            gas_limit: 21_000,
                            max_fee_per_gas: 2_000_000_000,
                            max_priority_fee_per_gas: 1,
                            to: TxKind::Call(Address::from(to)),
                            value: U256::from(1),
                            ..Default::default()
                        };
                        let Ok(sig) = keys[sender].sign_hash_sync(&tx.signature_hash()) else {
                            continue;
                        };
                        let raw = TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718();
                        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                        out.push((sender, format!("0x{hex}")));
                    }
                    out
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap_or_default()).collect()
    })
}

/// How fast this machine recovers the senders of the signed transfers `raw` (each validator
/// recovers every transfer's sender once: the one it was submitted to in its pool, the others
/// as they execute it; a validator cannot take another's word for a sender).
struct Recovery {
    /// Recoveries a second on one thread: Farol's (libsecp256k1) and alloy's (k256).
    one_thread: f64,
    baseline_one_thread: f64,
    /// Recoveries a second on all of the machine's cores at once, Farol's.
    all_cores: f64,
    cores: usize,
}

impl Recovery {
    /// The most transfers a second `validators` validators on this machine could commit if
    /// they did nothing but recover each transfer's sender once each.
    fn ceiling(&self, validators: u16) -> f64 {
        self.all_cores / f64::from(validators.max(1))
    }
}

/// Measures [`Recovery`] over the signed transfers (decoded first; recovery and the hash
/// of what was signed are timed):
/// `count` recoveries on one thread and on each core, a quarter of that with alloy's.
fn measure_recovery(raw: &[(usize, String)], count: usize) -> Result<Recovery> {
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_consensus::TxEnvelope;
    use alloy_eips::eip2718::Decodable2718;
    let txs = raw
        .iter()
        .take(count)
        .map(|(_, hex)| {
            let bytes = alloy_primitives::hex::decode(hex).context("a signed transfer's hex")?;
            TxEnvelope::decode_2718(&mut &bytes[..]).context("a signed transfer")
        })
        .collect::<Result<Vec<_>>>()?;
    if txs.is_empty() {
        bail!("no transfers to recover");
    }
    // Recoveries a second of `f` over `count` transfers (cycling through them), on `threads`
    // threads at once, each taking its share.
    let rate = |threads: usize, count: usize, f: &(dyn Fn(&TxEnvelope) -> bool + Sync)| {
        let start = Instant::now();
        let ok: Option<usize> = std::thread::scope(|s| {
            let parts: Vec<_> = (0..threads)
                .map(|t| {
                    let txs = &txs;
                    s.spawn(move || {
                        (t..count).step_by(threads).filter(|i| f(&txs[i % txs.len()])).count()
                    })
                })
                .collect();
            parts.into_iter().map(|p| p.join().ok()).sum()
        });
        let Some(ok) = ok else { bail!("a recovery thread panicked") };
        Ok((ok, count as f64 / start.elapsed().as_secs_f64()))
    };
    let ours = |t: &TxEnvelope| farol_execution::recover_sender(t).is_ok();
    let alloy = |t: &TxEnvelope| t.recover_signer().is_ok();
    let cores = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(2);
    // Each side warmed up, then measured (about a second each with 20,000). Both sides
    // also hash what was signed (the transaction encoded again, Keccak): recovering a
    // transaction's sender takes both.
    let base_count = count.div_ceil(4);
    rate(1, count.div_ceil(10), &ours)?;
    rate(1, base_count.div_ceil(10), &alloy)?;
    let (ok_one, one_thread) = rate(1, count, &ours)?;
    let (ok_base, baseline_one_thread) = rate(1, base_count, &alloy)?;
    let (ok_all, all_cores) = rate(cores, count * cores, &ours)?;
    if ok_one != count || ok_base != base_count || ok_all != count * cores {
        bail!("a signed transfer's sender did not recover");
    }
    Ok(Recovery { one_thread, baseline_one_thread, all_cores, cores })
}

/// Submits `txs` to a fresh devnet (as fast as the nodes take them, or at `rate` per second)
/// and waits until they are stored.
fn measure(
    args: &NodeBenchArgs,
    txs: &[(usize, String)],
    pipelined: bool,
    rate: Option<f64>,
    port: u16,
) -> Result<Measured> {
    let net = start_devnet(args, pipelined, port)?;
    let v = net.http.len();
    let rejected = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(FirstError::default());
    let cpu_before = CpuTimes::now();
    let start = Instant::now();
    // `--connections` sending threads per validator; a sender's transfers all go to the same
    // validator, through the same thread.
    let c = args.connections.max(1);
    let senders: Vec<_> = (0..v * c)
        .map(|k| {
            let (j, t) = (k % v, k / v);
            let mine: Vec<String> = txs
                .iter()
                .filter(|(s, _)| s % v == j && (s / v) % c == t)
                .map(|(_, t)| t.clone())
                .collect();
            let addr = net.http[j];
            let rejected = rejected.clone();
            let first_error = first_error.clone();
            let batch = args.batch.max(1);
            // Each thread offers its share of the rate: its share of the transfers.
            let per_thread = rate.map(|r| r * mine.len() as f64 / txs.len().max(1) as f64);
            std::thread::spawn(move || {
                let mut c = RpcClient::new(addr);
                let began = Instant::now();
                for (k, chunk) in mine.chunks(batch).enumerate() {
                    if let Some(r) = per_thread {
                        // Open loop at the offered rate: batch k leaves at k * batch / r.
                        let due = began + Duration::from_secs_f64((k * batch) as f64 / r);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let calls: Vec<Value> = chunk
                        .iter()
                        .enumerate()
                        .map(|(i, t)| json!({"jsonrpc":"2.0","id":k * batch + i,"method":"eth_sendRawTransaction","params":[t]}))
                        .collect();
                    match c.post(&Value::Array(calls).to_string()) {
                        Ok(Value::Array(answers)) => {
                            for a in answers {
                                if let Some(e) = a.get("error") {
                                    rejected.fetch_add(1, Ordering::Relaxed);
                                    first_error.set(e.to_string());
                                }
                            }
                        }
                        Ok(other) => {
                            rejected.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            first_error.set(other.to_string());
                        }
                        Err(e) => {
                            rejected.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            first_error.set(e);
                        }
                    }
                }
            })
        })
        .collect();
    // Wait until every accepted transfer is in a block at validator 0.
    let mut status = RpcClient::new(net.http[0]);
    let total = txs.len() as u64;
    let mut last_progress = Instant::now();
    // The count, when it last changed (and how long into the run), and the CPU times then.
    let mut last_change = (0, Instant::now(), start.elapsed(), cpu_before);
    let (included, done_at, cpu_after) = loop {
        let sent_all = senders.iter().all(|s| s.is_finished());
        let s = status.call("farol_status", json!([])).map_err(anyhow::Error::msg)?;
        let included = s["transactions"].as_u64().unwrap_or(0);
        let want = total - rejected.load(Ordering::Relaxed);
        if sent_all && included >= want {
            break (included, start.elapsed(), CpuTimes::now());
        }
        if included != last_change.0 {
            last_change = (included, Instant::now(), start.elapsed(), CpuTimes::now());
        }
        if sent_all && last_change.1.elapsed() > Duration::from_secs(10) {
            progress(format_args!(
                "  {} of {want} accepted transfers were never included (dropped: {})",
                want - included,
                s["dropped"]
            ));
            // The run ended at the last inclusion: the 10 s waited since are not in it.
            break (included, last_change.2, last_change.3);
        }
        if last_progress.elapsed() > Duration::from_secs(5) {
            progress(format_args!(
                "  {included} of {want} included after {:.1} s",
                start.elapsed().as_secs_f64()
            ));
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cpu = cpu_after.zip(cpu_before).map(|(after, before)| after.since(before, included));
    for s in senders {
        let _ = s.join();
    }
    // Let block finality catch up before reading the latencies.
    std::thread::sleep(Duration::from_millis(1500));
    let mut tiers = Vec::new();
    for tier in ["ordered", "receipt", "final"] {
        let (mut p50, mut p99) = (0.0f64, 0.0f64);
        for a in &net.http {
            let s =
                RpcClient::new(*a).call("farol_status", json!([])).map_err(anyhow::Error::msg)?;
            let l = &s["latency"][tier];
            p50 = p50.max(l["p50_ms"].as_f64().unwrap_or(f64::NAN));
            p99 = p99.max(l["p99_ms"].as_f64().unwrap_or(f64::NAN));
        }
        tiers.push((tier, p50, p99));
    }
    let head = quantity(&status.call("eth_blockNumber", json!([])).map_err(anyhow::Error::msg)?)
        .unwrap_or(0);
    let rejected = rejected.load(Ordering::Relaxed);
    if let Some(e) = first_error.get() {
        progress(format_args!("  {rejected} rejected; the first: {e}"));
    }
    let secs = done_at.as_secs_f64();
    let (idle, us_per_tx) = cpu.unwrap_or((f64::NAN, f64::NAN));
    progress(format_args!(
        "  {} pipeline: {included} transfers in {secs:.2} s over {head} blocks = {:.0} tx/s; \
         CPU {:.0} % idle, {us_per_tx:.0} µs of CPU outside the load generator per transfer",
        if pipelined { "with the" } else { "without the" },
        included as f64 / secs,
        idle * 100.0,
    ));
    let tps = included as f64 / secs;
    Ok(Measured {
        tps,
        included,
        rejected,
        secs,
        tiers,
        runs: vec![tps],
        blocks: vec![head],
        cpu: cpu.into_iter().collect(),
    })
}

/// CPU time of the whole machine and of this process (the load generator), from `/proc`, in
/// the kernel's user-visible ticks (100 a second on Linux).
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    /// All CPUs, busy (user, nice, system, interrupts; not time stolen by a hypervisor).
    busy: u64,
    /// All CPUs, idle or waiting for I/O.
    idle: u64,
    /// This process, user and system.
    own: u64,
}

impl CpuTimes {
    /// `None` where `/proc` is not there or not as Linux writes it.
    fn now() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        CpuTimes::parse(&stat, &own)
    }

    /// From the texts of `/proc/stat` and `/proc/self/stat`.
    fn parse(stat: &str, own: &str) -> Option<CpuTimes> {
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user). Time
        // stolen by the hypervisor is neither: this machine's processes did not run.
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        let busy = field(0) + field(1) + field(2) + field(5) + field(6);
        let idle = field(3) + field(4);
        // utime and stime are the 14th and 15th fields; the name (2nd) may hold spaces and
        // parentheses, so count from its last closing parenthesis.
        let mut rest = own.get(own.rfind(')')? + 1..)?.split_whitespace().skip(11);
        let own = rest.next()?.parse::<u64>().ok()? + rest.next()?.parse::<u64>().ok()?;
        Some(CpuTimes { busy, idle, own })
    }

    /// The idle share of the machine since `before`, and the CPU time outside this process per
    /// one of `items`, in microseconds.
    fn since(self, before: CpuTimes, items: u64) -> (f64, f64) {
        let busy = self.busy.saturating_sub(before.busy);
        let idle = self.idle.saturating_sub(before.idle);
        let others = busy.saturating_sub(self.own.saturating_sub(before.own));
        let share = idle as f64 / (busy + idle).max(1) as f64;
        (share, others as f64 * 10_000.0 / items.max(1) as f64)
    }
}

/// The first error message of a run.
#[derive(Debug, Default)]
struct FirstError(std::sync::Mutex<Option<String>>);

impl FirstError {
    fn set(&self, s: String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(s);
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sender recoveries timed per thread (about a second here).
const RECOVERIES: usize = 20_000;

/// Runs `farol bench node`.
pub(crate) fn run(args: NodeBenchArgs) -> Result<()> {
    let n = args.transactions.unwrap_or(if args.quick { 30_000 } else { 200_000 });
    if args.senders == 0 || args.validators == 0 || args.connections == 0 {
        bail!("--senders, --validators and --connections must be at least 1");
    }
    if let Some(r) = args.rate.filter(|r| !(r.is_finite() && *r >= 1.0)) {
        bail!("--rate {r}: must be at least 1 transfer a second");
    }
    progress(format_args!("deriving {} sending accounts and signing {n} transfers", args.senders));
    let keys = mnemonic_accounts(DEV_MNEMONIC, args.senders).map_err(anyhow::Error::msg)?;
    let txs = presign(&keys, n);
    if txs.len() != n {
        bail!("signed only {} of {n} transfers", txs.len());
    }
    let recovery = measure_recovery(&txs, RECOVERIES)?;
    progress(format_args!(
        "sender recovery: {:.1} µs on one thread ({:.1} µs with alloy's k256); {:.0} a second \
         on {} threads: at most {:.0} transfers a second for {} validators that did nothing else",
        1e6 / recovery.one_thread,
        1e6 / recovery.baseline_one_thread,
        recovery.all_cores,
        recovery.cores,
        recovery.ceiling(args.validators),
        args.validators
    ));
    let port = farol_node::client::free_listen_ports(2 * args.validators + 2)
        .map_err(anyhow::Error::msg)?;
    let (ours, base) = abba(|pipelined| {
        let how = if pipelined { "pipelined" } else { "one block at a time (baseline)" };
        progress(format_args!("{} validators, {how}, at saturation", args.validators));
        measure(&args, &txs, pipelined, None, port)
    })?;
    // Latency under load: `--rate`, or a third of the baseline's saturated throughput, in
    // small batches (which cost the nodes more per transaction than the saturation run's
    // large ones).
    let rate = args.rate.unwrap_or((base.tps / 3.0).max(100.0));
    let half = &txs[..txs.len() / 2];
    let paced = NodeBenchArgs { batch: 20, ..args.clone() };
    let (ours_lat, base_lat) = abba(|pipelined| {
        let how = if pipelined { "pipelined" } else { "one block at a time" };
        progress(format_args!("latency at {rate:.0} tx/s offered, {how}"));
        measure(&paced, half, pipelined, Some(rate), port)
    })?;
    let cpu_field = |m: &Measured, i: usize| -> Vec<f64> {
        m.cpu
            .iter()
            .map(|c| if i == 0 { (c.0 * 1000.0).round() / 1000.0 } else { c.1.round() })
            .collect()
    };
    let params = |m: &Measured, b: &Measured| {
        json!({
            "validators": args.validators, "transfers": n, "senders": args.senders, "batch": args.batch,
            "connections": args.connections,
            "included": [m.included, b.included], "rejected": [m.rejected, b.rejected],
            "seconds": [m.secs, b.secs], "runs": [m.runs, b.runs], "blocks": [m.blocks, b.blocks],
            "cpu_idle_share": [cpu_field(m, 0), cpu_field(b, 0)],
            "cpu_us_per_transfer_outside_the_load_generator": [cpu_field(m, 1), cpu_field(b, 1)],
            "order": "pipelined, baseline, baseline, pipelined; each side the mean of its two runs",
            "recovery_ceiling_tps": recovery.ceiling(args.validators).round(),
            "share_of_recovery_ceiling": [
                (m.tps / recovery.ceiling(args.validators) * 1000.0).round() / 1000.0,
                (b.tps / recovery.ceiling(args.validators) * 1000.0).round() / 1000.0,
            ],
        })
    };
    BenchResult::new(
        "node.transfers.tps",
        ours.tps,
        base.tps,
        "tx/s",
        Better::Higher,
        params(&ours, &base),
    )
    .print()?;
    // Sender recovery, Farol's (libsecp256k1) against alloy's default (k256), one thread.
    BenchResult::new(
        "node.sender_recovery",
        recovery.one_thread,
        recovery.baseline_one_thread,
        "recoveries/s",
        Better::Higher,
        json!({
            "threads": 1, "recoveries": RECOVERIES, "baseline_recoveries": RECOVERIES.div_ceil(4),
            "distinct_transfers": txs.len().min(RECOVERIES),
            "all_cores_per_s": recovery.all_cores.round(), "cores": recovery.cores,
            "recovery_ceiling_tps": recovery.ceiling(args.validators).round(),
            "ceiling": "transfers a second the validators could commit on all cores doing nothing but recover each sender once each",
        }),
    )
    .print()?;
    for ((tier, p50, p99), (_, b50, b99)) in ours_lat.tiers.iter().zip(&base_lat.tiers) {
        let p = json!({
            "validators": args.validators, "transfers": half.len(), "offered_tps": rate.round(),
            "achieved_tps": [ours_lat.tps.round(), base_lat.tps.round()],
            "blocks": [&ours_lat.blocks, &base_lat.blocks],
            "order": "pipelined, baseline, baseline, pipelined; each side the mean of its two runs",
            "from": "submission over JSON-RPC", "worst of": "the validators",
        });
        BenchResult::new(
            &format!("node.latency.{tier}.p50"),
            *p50,
            *b50,
            "ms",
            Better::Lower,
            p.clone(),
        )
        .print()?;
        BenchResult::new(&format!("node.latency.{tier}.p99"), *p99, *b99, "ms", Better::Lower, p)
            .print()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{measure_recovery, presign, CpuTimes};
    use farol_node::genesis::{mnemonic_accounts, DEV_MNEMONIC};

    /// The recovery measurement times real recoveries of the signed transfers, and a transfer
    /// whose sender does not recover is an error, not a faster rate.
    #[test]
    fn sender_recovery_is_measured_on_transfers_that_recover() {
        use alloy_consensus::{SignableTransaction, TxEnvelope};
        use alloy_eips::eip2718::{Decodable2718, Encodable2718};
        use alloy_primitives::{Signature, U256};
        let keys = mnemonic_accounts(DEV_MNEMONIC, 3).unwrap_or_else(|e| panic!("{e}"));
        let mut txs = presign(&keys, 6);
        let r = measure_recovery(&txs, 40).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.one_thread > 0.0 && r.baseline_one_thread > 0.0 && r.all_cores > 0.0);
        assert!(r.cores >= 1);
        assert!((r.ceiling(4) - r.all_cores / 4.0).abs() < 1e-9);
        // The last one signed again with its s in the upper half of the order (n - s, the
        // other parity: the same signer, which EIP-2 refuses).
        let (_, hex) = &mut txs[5];
        let bytes = alloy_primitives::hex::decode(&hex[..]).unwrap_or_else(|e| panic!("{e}"));
        let Ok(TxEnvelope::Eip1559(signed)) = TxEnvelope::decode_2718(&mut &bytes[..]) else {
            panic!("not a signed EIP-1559 transfer");
        };
        let order = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let sig = signed.signature();
        let high = Signature::new(sig.r(), order - sig.s(), !sig.v());
        let raw = TxEnvelope::Eip1559(signed.strip_signature().into_signed(high)).encoded_2718();
        *hex = alloy_primitives::hex::encode_prefixed(raw);
        match measure_recovery(&txs, 40) {
            Err(e) => assert!(e.to_string().contains("did not recover"), "{e}"),
            Ok(_) => panic!("a transfer that does not recover was timed"),
        }
    }

    /// The busy and idle ticks of all CPUs and this process's own, as Linux writes them (a
    /// process name with a space and a parenthesis included), and what a run derives.
    #[test]
    fn cpu_times_are_read_from_proc() {
        let stat = "cpu  100 5 30 800 20 1 2 3 0 0\ncpu0 50 2 15 400 10 0 1 1 0 0\n";
        let own = "4242 (farol (x) y) R 1 4242 4242 0 -1 4194304 10 0 0 0 40 7 0 0 20 0 9 0";
        let before = CpuTimes::parse(stat, own).unwrap_or_else(|| panic!("not parsed"));
        assert_eq!((before.busy, before.idle, before.own), (138, 820, 47));
        assert!(CpuTimes::parse("intr 1 2\n", own).is_none());
        assert!(CpuTimes::parse(stat, "4242 farol R").is_none());
        // 400 ticks later: 300 busy (50 of them this process), 100 idle, over 1,000 items.
        let after = CpuTimes { busy: 438, idle: 920, own: 97 };
        let (idle, us) = after.since(before, 1000);
        assert!((idle - 0.25).abs() < 1e-9, "{idle}");
        // 250 ticks of 10 ms outside this process, over 1,000 items: 2,500 µs each.
        assert!((us - 2500.0).abs() < 1e-9, "{us}");
    }
}
