//! `farol bench chain`: the chain's data after a restart, with the transaction index in run
//! files (ours) against the whole index in memory, built by decoding every block of the log
//! at open (the baseline, what Farol did before stop 45).
//!
//! One chain of N transfers is written once (blocks of B transactions, appended and synced
//! as the node does; the signatures are fixed bytes, not made by a key: nothing here
//! recovers them). Then a child process (`farol bench chain-open`) opens it four times, in
//! the order ours, baseline, baseline, ours: it times the open, reads its resident memory
//! before and after, and times lookups: `has_transaction` for transactions the chain holds
//! and for hashes it does not (the index alone), and `transaction` for held ones (the index
//! and reading the block back). The baseline's child opens the same log with the runs set
//! aside and nothing written out. The files are in the page cache for both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloy_consensus::{
    Header, Receipt, ReceiptEnvelope, SignableTransaction, TxEip1559, TxEnvelope,
};
use alloy_primitives::{Address, Bytes, Signature, TxKind, B256, U256};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use farol_node::chain::{Chain, OrderingData, Recent, StoredBlock, TX_INDEX_DIR};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::{abba, median, progress, BenchResult, Better};

/// Arguments of `farol bench chain`.
#[derive(Debug, Args)]
pub(crate) struct ChainBenchArgs {
    /// A smaller chain (200,000 transactions, runs written every 16,384), under a minute.
    #[arg(long)]
    quick: bool,
    /// Transactions in the chain [default: 2000000; with --quick 200000].
    #[arg(long)]
    transactions: Option<u64>,
    /// Transactions per block.
    #[arg(long, default_value_t = 1000)]
    per_block: u64,
    /// Transactions the index holds in memory before it writes them to a run [default: the
    /// node's, 262144; with --quick 16384].
    #[arg(long)]
    indexed: Option<usize>,
    /// Lookups of each kind per open.
    #[arg(long, default_value_t = 2000)]
    lookups: u64,
    /// Where to write the chain (a temporary directory, removed after, by default).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Arguments of the hidden `farol bench chain-open` (the child).
#[derive(Debug, Args)]
pub(crate) struct ChainOpenArgs {
    /// The chain's directory.
    #[arg(long)]
    dir: PathBuf,
    /// Transactions in the chain.
    #[arg(long)]
    transactions: u64,
    /// Transactions per block.
    #[arg(long)]
    per_block: u64,
    /// Index in memory before runs are written (the baseline: never).
    #[arg(long)]
    indexed: usize,
    /// Lookups of each kind.
    #[arg(long)]
    lookups: u64,
    /// Seed of the lookups.
    #[arg(long)]
    seed: u64,
}

/// What one open measured.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    open_ms: f64,
    rss_growth_bytes: u64,
    runs: usize,
    indexed_in_memory: usize,
    log_records_read: usize,
    blocks_decoded: usize,
    has_hit_us: f64,
    has_miss_us: f64,
    transaction_us: f64,
}

/// Transfer `k` of the chain: its nonce is `k`, so every hash differs.
fn transfer(k: u64) -> TxEnvelope {
    let tx = TxEip1559 {
        chain_id: 31337,
        nonce: k,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(Address::with_last_byte(7)),
        value: U256::from(1u64),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let sig = Signature::new(U256::from(k + 1), U256::from(k + 2), false);
    TxEnvelope::from(tx.into_signed(sig))
}

/// Block `n` of the chain (block 0 is the genesis, with none).
fn block(n: u64, per_block: u64, transactions: u64) -> StoredBlock {
    let range = match n {
        0 => 0..0,
        _ => ((n - 1) * per_block).min(transactions)..(n * per_block).min(transactions),
    };
    let txs: Vec<TxEnvelope> = range.map(transfer).collect();
    let receipts = (0..txs.len() as u64)
        .map(|i| {
            let r = Receipt {
                status: true.into(),
                cumulative_gas_used: 21_000 * (i + 1),
                logs: Vec::new(),
            };
            ReceiptEnvelope::Eip1559(r.with_bloom())
        })
        .collect();
    let header = Header { number: n, gas_used: 21_000 * txs.len() as u64, ..Header::default() };
    StoredBlock {
        hash: header.hash_slow(),
        header,
        senders: vec![Address::with_last_byte(1); txs.len()],
        created: vec![None; txs.len()],
        receipts,
        txs,
        ordering: OrderingData {
            round: n,
            first: n,
            height: n,
            chunk: 0,
            last_in_group: true,
            deferred: Vec::new(),
            checkpoint: None,
        },
    }
}

fn resident_bytes() -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

fn micros(times: &mut [Duration]) -> f64 {
    median(times).as_secs_f64() * 1e6
}

/// Runs the child: opens the chain and measures (one JSON line on stdout).
pub(crate) fn run_open(a: ChainOpenArgs) -> Result<()> {
    let before = resident_bytes()?;
    let keep = Recent { indexed: a.indexed, ..Recent::default() };
    let start = Instant::now();
    let chain = Chain::open_keeping(&a.dir, || block(0, a.per_block, a.transactions), keep)
        .context("opening the chain")?;
    let open = start.elapsed();
    let after = resident_bytes()?;
    let stats = chain.index_stats();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let (mut hit, mut miss, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.lookups {
        let k = rng.random_range(0..a.transactions);
        let h = *transfer(k).tx_hash();
        let t = Instant::now();
        let held = chain.has_transaction(&h);
        hit.push(t.elapsed());
        ensure!(held, "transfer {k} is not found");
        let other = B256::from(rng.random::<[u8; 32]>());
        let t = Instant::now();
        let held = chain.has_transaction(&other);
        miss.push(t.elapsed());
        ensure!(!held, "{other} is found");
        let t = Instant::now();
        let at = chain.transaction(&h);
        full.push(t.elapsed());
        let want = (k / a.per_block + 1, (k % a.per_block) as usize);
        ensure!(
            at.map(|l| (l.block.number(), l.index)) == Some(want),
            "transfer {k} is not at {want:?}"
        );
    }
    let out = Opened {
        open_ms: open.as_secs_f64() * 1e3,
        rss_growth_bytes: after.saturating_sub(before),
        runs: stats.runs.len(),
        indexed_in_memory: stats.in_memory,
        log_records_read: chain.records_read_at_open(),
        blocks_decoded: chain.decoded_at_open(),
        has_hit_us: micros(&mut hit),
        has_miss_us: micros(&mut miss),
        transaction_us: micros(&mut full),
    };
    println!("{}", serde_json::to_string(&out).context("encoding the child's result")?);
    Ok(())
}

/// Opens the chain in `dir` in a child process, ours or the baseline.
fn open_in_child(dir: &Path, ours: bool, p: &Params, seed: u64) -> Result<Opened> {
    let index = dir.join(TX_INDEX_DIR);
    let aside = dir.join("txindex.aside");
    if !ours {
        std::fs::rename(&index, &aside).context("setting the index's runs aside")?;
    }
    let exe = std::env::current_exe().context("finding the farol executable")?;
    let indexed = if ours { p.indexed } else { usize::MAX };
    let output = Command::new(exe)
        .args(["bench", "chain-open", "--dir"])
        .arg(dir)
        .args(["--transactions", &p.transactions.to_string()])
        .args(["--per-block", &p.per_block.to_string()])
        .args(["--indexed", &indexed.to_string()])
        .args(["--lookups", &p.lookups.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the child");
    if !ours {
        // The baseline's open made an empty folder in the runs' place.
        std::fs::remove_dir_all(&index).context("removing the baseline's index folder")?;
        std::fs::rename(&aside, &index).context("putting the index's runs back")?;
    }
    let output = output?;
    ensure!(output.status.success(), "the child failed: {}", output.status);
    let line = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(line.trim()).context("reading the child's result")
}

/// A result line: its name, what it reports of a run, its unit.
type Line = (&'static str, fn(&Opened) -> f64, &'static str);

struct Params {
    transactions: u64,
    per_block: u64,
    indexed: usize,
    lookups: u64,
}

/// Runs `farol bench chain`.
pub(crate) fn run(args: ChainBenchArgs) -> Result<()> {
    let p = Params {
        transactions: args.transactions.unwrap_or(if args.quick { 200_000 } else { 2_000_000 }),
        per_block: args.per_block.max(1),
        indexed: args.indexed.unwrap_or(if args.quick {
            16_384
        } else {
            farol_node::txindex::FLUSH_AT
        }),
        lookups: args.lookups.max(1),
    };
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            if d.exists() {
                bail!("--dir {}: it exists; give a new directory", d.display());
            }
            d.clone()
        }
        None => {
            temp = tempfile::tempdir().context("making a temporary directory")?;
            temp.path().join("chain")
        }
    };
    std::fs::create_dir_all(&dir).context("making the chain's directory")?;
    let blocks = p.transactions.div_ceil(p.per_block);
    progress(format!("writing {} transactions in {blocks} blocks", p.transactions));
    let start = Instant::now();
    {
        let keep = Recent { indexed: p.indexed, ..Recent::default() };
        let chain = Chain::open_keeping(&dir, || block(0, p.per_block, p.transactions), keep)
            .context("creating the chain")?;
        for n in 1..=blocks {
            chain.append(block(n, p.per_block, p.transactions)).context("appending a block")?;
        }
        let stats = chain.index_stats();
        progress(format!(
            "written in {:.1} s: {} runs, {} transactions indexed in memory",
            start.elapsed().as_secs_f64(),
            stats.runs.len(),
            stats.in_memory
        ));
    }
    let log_bytes = std::fs::metadata(dir.join("blocks.log")).map(|m| m.len()).unwrap_or(0);
    let mut seed = 0;
    let ((o1, o2), (b1, b2)) = abba(true, |ours| {
        seed += 1;
        let r = open_in_child(&dir, ours, &p, seed)?;
        progress(format!("{}: {r:?}", if ours { "ours" } else { "baseline" }));
        Ok(r)
    })?;
    let lines: [Line; 5] = [
        ("chain.reopen", |o| o.open_ms, "ms"),
        ("chain.reopen_memory", |o| o.rss_growth_bytes as f64 / 1e6, "MB"),
        ("chain.has_transaction.held", |o| o.has_hit_us, "us"),
        ("chain.has_transaction.not_held", |o| o.has_miss_us, "us"),
        ("chain.transaction", |o| o.transaction_us, "us"),
    ];
    for (name, f, unit) in lines {
        let params = serde_json::json!({
            "transactions": p.transactions,
            "per_block": p.per_block,
            "indexed_in_memory_at_most": p.indexed,
            "lookups": p.lookups,
            "log_bytes": log_bytes,
            "runs": o1.runs,
            "ours_indexed_in_memory": o1.indexed_in_memory,
            "ours_log_records_read": o1.log_records_read,
            "ours_blocks_decoded": o1.blocks_decoded,
            "baseline_log_records_read": b1.log_records_read,
            "baseline_blocks_decoded": b1.blocks_decoded,
            "ours_runs": [f(&o1), f(&o2)],
            "baseline_runs": [f(&b1), f(&b2)],
        });
        let (ours, baseline) = ((f(&o1) + f(&o2)) / 2.0, (f(&b1) + f(&b2)) / 2.0);
        BenchResult::new(name, ours, baseline, unit, Better::Lower, params).print()?;
    }
    Ok(())
}
