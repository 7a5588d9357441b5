//! `farol bench store`: Farol Store against an Ethereum Merkle Patricia Trie over RocksDB
//! (`farol-mpt-baseline`), on the same seeded workload, each side in its own directory.
//!
//! Keys are keccak256 of the account index (8 bytes, big endian); values are random bytes.
//! Per value size, each side runs the same phases in turn (ours first, then the baseline, so
//! they never compete for CPU, memory or page cache): load, uniform and Zipf updates (root and
//! durable commit per block on both sides), settle (ours: garbage collection;
//! baseline: memtable flush and RocksDB's pending compactions), size on disk, latest reads
//! (also counting read system calls), historical reads, proofs, and reopening after the
//! process writing the store was SIGKILLed.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use farol_mpt_baseline::{MptOptions, MptStore};
use farol_primitives::{keccak256, Bytes, Version, B256};
use farol_store::{FsyncPolicy, Options, Store};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{progress, BenchResult, Better, ProcIo};

/// Accounts per version while loading.
const LOAD_BATCH: u64 = 10_000;
/// Exponent of the Zipf key distribution.
const ZIPF_EXPONENT: f64 = 0.99;
/// How long the writer child keeps writing after it reported `ready` before it is killed.
const KILL_AFTER: Duration = Duration::from_millis(50);

/// Arguments of `farol bench store`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreBenchArgs {
    /// Small sizes that finish in under a minute on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Accounts loaded before the updates [default: 1000000; with --quick 100000].
    #[arg(long)]
    accounts: Option<u64>,
    /// Blocks per update phase [default: 20; with --quick 10].
    #[arg(long)]
    blocks: Option<u64>,
    /// Updates per block, distinct keys [default: 10000; with --quick 5000].
    #[arg(long)]
    updates: Option<u64>,
    /// Reads per read phase [default: 100000; with --quick 20000].
    #[arg(long)]
    gets: Option<u64>,
    /// Directory in which the stores' temporary directories are made [default: the system's
    /// temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Value size in bytes [default: 32, and also 256 without --quick].
    #[arg(long)]
    value_size: Option<usize>,
    /// Cache budget of each store, in MiB (smaller than the data set).
    #[arg(long, default_value_t = 16)]
    cache_mb: usize,
    /// Versions of history both stores keep readable (the latest included).
    #[arg(long, default_value_t = 8)]
    retain: u64,
    /// Seed of the workload generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Which store a process works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SideName {
    /// Farol Store.
    Ours,
    /// The Merkle Patricia Trie over RocksDB.
    Mpt,
}

/// Arguments of the hidden `farol bench store-writer`: opens an existing store, writes
/// `blocks` blocks of uniform updates, prints `ready <version>` (the last acknowledged
/// version) on stdout and keeps writing until it is killed.
#[derive(Debug, Clone, Args)]
pub(crate) struct StoreWriterArgs {
    /// Which store.
    #[arg(long, value_enum)]
    side: SideName,
    /// The store's directory.
    #[arg(long)]
    dir: PathBuf,
    /// Accounts in the store.
    #[arg(long)]
    accounts: u64,
    /// Blocks written before `ready`.
    #[arg(long)]
    blocks: u64,
    /// Updates per block.
    #[arg(long)]
    updates: u64,
    /// Value size in bytes.
    #[arg(long)]
    value_size: usize,
    /// Cache budget in MiB.
    #[arg(long)]
    cache_mb: usize,
    /// Versions of history kept.
    #[arg(long)]
    retain: u64,
    /// Seed of the workload generator.
    #[arg(long)]
    seed: u64,
}

/// The resolved workload parameters; printed with every result.
#[derive(Debug, Clone, Serialize)]
struct Params {
    accounts: u64,
    blocks: u64,
    updates: u64,
    gets: u64,
    value_size: usize,
    cache_mb: usize,
    retain: u64,
    seed: u64,
    quick: bool,
}

impl Params {
    fn cache_bytes(&self) -> usize {
        self.cache_mb << 20
    }

    fn load_batches(&self) -> u64 {
        self.accounts.div_ceil(LOAD_BATCH)
    }

    /// The version after the load and both update phases.
    fn last_version(&self) -> Version {
        self.load_batches() + 2 * self.blocks
    }
}

/// Runs `farol bench store`.
pub(crate) fn run(args: StoreBenchArgs) -> Result<()> {
    let quick = args.quick;
    let pick = |given: Option<u64>, full: u64, small: u64| {
        given.unwrap_or(if quick { small } else { full })
    };
    let accounts = pick(args.accounts, 1_000_000, 100_000);
    let blocks = pick(args.blocks, 20, 10);
    let updates = pick(args.updates, 10_000, 5_000);
    let gets = pick(args.gets, 100_000, 20_000);
    ensure!(accounts > 0 && blocks > 0 && updates > 0 && gets > 0, "sizes must be positive");
    ensure!(updates <= accounts, "--updates ({updates}) must not exceed --accounts ({accounts})");
    ensure!(args.retain >= 1, "--retain must be at least 1");
    ensure!(args.cache_mb >= 1, "--cache-mb must be at least 1");
    let value_sizes = match args.value_size {
        Some(size) => vec![size],
        None if quick => vec![32],
        None => vec![32, 256],
    };
    ensure!(value_sizes.iter().all(|s| *s > 0), "--value-size must be positive");

    let root = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            tempfile::Builder::new().prefix("farol-bench-store-").tempdir_in(dir)
        }
        None => tempfile::Builder::new().prefix("farol-bench-store-").tempdir(),
    }
    .context("creating the benchmark directory")?;
    let io_counters = match ProcIo::now() {
        Ok(_) => true,
        Err(e) => {
            progress(format!("no I/O counters ({e:#}): skipping reads_per_get and bytes_written"));
            false
        }
    };

    for value_size in value_sizes {
        let p = Params {
            accounts,
            blocks,
            updates,
            gets,
            value_size,
            cache_mb: args.cache_mb,
            retain: args.retain,
            seed: args.seed,
            quick,
        };
        progress(format!("workload: {p:?}"));
        let ours = run_side::<Ours>(&p, &root.path().join(format!("ours-{value_size}")))?;
        let baseline = run_side::<Mpt>(&p, &root.path().join(format!("mpt-{value_size}")))?;
        print_results(&p, &ours, &baseline, io_counters)?;
    }
    Ok(())
}

fn print_results(p: &Params, ours: &Measured, baseline: &Measured, io: bool) -> Result<()> {
    let params = serde_json::to_value(p).context("encoding the parameters")?;
    let result = |bench: &str, ours: f64, baseline: f64, unit: &str, better: Better| {
        BenchResult::new(bench, ours, baseline, unit, better, params.clone()).print()
    };
    result("store.load", ours.load_ops, baseline.load_ops, "ops/s", Better::Higher)?;
    for (i, kind) in UpdateKind::ALL.iter().enumerate() {
        let (o, b) = (&ours.updates[i], &baseline.updates[i]);
        let name = kind.bench_name();
        result(name, o.ops_per_s, b.ops_per_s, "ops/s", Better::Higher)?;
        let p50 = format!("{name}.block_latency_p50");
        result(&p50, o.p50_ms, b.p50_ms, "ms", Better::Lower)?;
    }
    result("store.get.latest", ours.get_ops, baseline.get_ops, "ops/s", Better::Higher)?;
    result("store.get.historical", ours.hist_ops, baseline.hist_ops, "ops/s", Better::Higher)?;
    result("store.prove", ours.prove_ops, baseline.prove_ops, "ops/s", Better::Higher)?;
    if io {
        let (o, b) = (ours.reads_per_get, baseline.reads_per_get);
        result("store.reads_per_get", o, b, "reads/get", Better::Lower)?;
        let (o, b) = (ours.bytes_per_update, baseline.bytes_per_update);
        result("store.bytes_written_per_update", o, b, "bytes/update", Better::Lower)?;
    }
    let (o, b) = (ours.disk_bytes as f64, baseline.disk_bytes as f64);
    result("store.disk_size", o, b, "bytes", Better::Lower)?;
    result("store.reopen", ours.reopen_ms, baseline.reopen_ms, "ms", Better::Lower)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The two stores behind one interface.

/// What the benchmark needs from a store.
trait Side: Sized {
    /// Name in progress lines and for the writer child.
    const NAME: SideName;
    /// A block of changes in the store's own input type, built outside the timed region.
    type Batch;

    fn open(dir: &Path, p: &Params) -> Result<Self>;
    fn batch(changes: Vec<(B256, Vec<u8>)>) -> Self::Batch;
    /// Applies a block: new root plus durable commit.
    fn apply(&mut self, version: Version, batch: Self::Batch) -> Result<B256>;
    /// Whether `key` has a value at the latest version.
    fn get(&self, key: &B256) -> Result<bool>;
    /// Whether `key` has a value at `version`.
    fn get_at(&self, key: &B256, version: Version) -> Result<bool>;
    /// Builds a proof of `key` at `version`.
    fn prove(&self, key: &B256, version: Version) -> Result<()>;
    /// Called once after the load, outside every measurement.
    fn after_load(&mut self) -> Result<()>;
    /// Finishes the work the store deferred (counted in bytes written).
    fn settle(&mut self) -> Result<()>;
    fn disk_usage(&self) -> Result<u64>;
    fn latest_version(&self) -> Option<Version>;
    fn oldest_version(&self) -> Option<Version>;
}

/// Farol Store.
struct Ours(Store);

impl Side for Ours {
    const NAME: SideName = SideName::Ours;
    type Batch = Vec<(B256, Option<Bytes>)>;

    fn open(dir: &Path, p: &Params) -> Result<Self> {
        let opts = Options {
            cache_bytes: p.cache_bytes(),
            fsync: FsyncPolicy::Always,
            retain_versions: Some(p.retain),
            ..Default::default()
        };
        let store = Store::open(dir, opts)
            .with_context(|| format!("opening Farol Store in {}", dir.display()))?;
        Ok(Ours(store))
    }

    fn batch(changes: Vec<(B256, Vec<u8>)>) -> Self::Batch {
        changes.into_iter().map(|(k, v)| (k, Some(Bytes::from(v)))).collect()
    }

    fn apply(&mut self, version: Version, batch: Self::Batch) -> Result<B256> {
        Ok(self.0.apply(version, batch)?)
    }

    fn get(&self, key: &B256) -> Result<bool> {
        Ok(self.0.get(key)?.is_some())
    }

    fn get_at(&self, key: &B256, version: Version) -> Result<bool> {
        Ok(self.0.get_at(key, version)?.is_some())
    }

    fn prove(&self, key: &B256, version: Version) -> Result<()> {
        std::hint::black_box(self.0.prove(key, version)?);
        Ok(())
    }

    fn after_load(&mut self) -> Result<()> {
        Ok(self.0.checkpoint()?)
    }

    fn settle(&mut self) -> Result<()> {
        // Garbage collection is part of the write cost; it checkpoints when it moves data.
        self.0.collect_garbage()?;
        Ok(())
    }

    fn disk_usage(&self) -> Result<u64> {
        Ok(self.0.disk_usage()?)
    }

    fn latest_version(&self) -> Option<Version> {
        self.0.latest_version()
    }

    fn oldest_version(&self) -> Option<Version> {
        self.0.oldest_version()
    }
}

/// The baseline: Ethereum Merkle Patricia Trie over RocksDB.
struct Mpt(MptStore);

impl Side for Mpt {
    const NAME: SideName = SideName::Mpt;
    type Batch = Vec<(B256, Option<Vec<u8>>)>;

    fn open(dir: &Path, p: &Params) -> Result<Self> {
        let opts =
            MptOptions { cache_bytes: p.cache_bytes(), retain_versions: p.retain, sync: true };
        let store = MptStore::open(dir, opts)
            .with_context(|| format!("opening the MPT baseline in {}", dir.display()))?;
        Ok(Mpt(store))
    }

    fn batch(changes: Vec<(B256, Vec<u8>)>) -> Self::Batch {
        changes.into_iter().map(|(k, v)| (k, Some(v))).collect()
    }

    fn apply(&mut self, version: Version, batch: Self::Batch) -> Result<B256> {
        Ok(self.0.apply(version, &batch)?)
    }

    fn get(&self, key: &B256) -> Result<bool> {
        Ok(self.0.get(key)?.is_some())
    }

    fn get_at(&self, key: &B256, version: Version) -> Result<bool> {
        Ok(self.0.get_at(key, version)?.is_some())
    }

    fn prove(&self, key: &B256, version: Version) -> Result<()> {
        std::hint::black_box(self.0.prove(key, version)?);
        Ok(())
    }

    fn after_load(&mut self) -> Result<()> {
        Ok(self.0.settle()?)
    }

    fn settle(&mut self) -> Result<()> {
        Ok(self.0.settle()?)
    }

    fn disk_usage(&self) -> Result<u64> {
        Ok(self.0.disk_usage()?)
    }

    fn latest_version(&self) -> Option<Version> {
        self.0.latest_version()
    }

    fn oldest_version(&self) -> Option<Version> {
        self.0.oldest_version()
    }
}

// ---------------------------------------------------------------------------------------
// The workload: the same bytes for both sides, regenerated from the seed when needed.

/// Independent random streams of the workload.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Load = 1,
    Uniform = 2,
    Zipf = 3,
    Gets = 4,
    Historical = 5,
    Proofs = 6,
    Writer = 7,
}

/// The generator of stream `stream`, item `index`, for `seed`.
fn rng(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut input = [0u8; 24];
    input[..8].copy_from_slice(&seed.to_be_bytes());
    input[8..16].copy_from_slice(&(stream as u64).to_be_bytes());
    input[16..].copy_from_slice(&index.to_be_bytes());
    ChaCha8Rng::from_seed(keccak256(input).0)
}

/// The key of account `index`.
fn account_key(index: u64) -> B256 {
    keccak256(index.to_be_bytes())
}

fn random_value(rng: &mut ChaCha8Rng, size: usize) -> Vec<u8> {
    let mut value = vec![0u8; size];
    rng.fill_bytes(&mut value);
    value
}

/// Load batch `batch`: accounts `batch * LOAD_BATCH ..` with random values.
fn load_batch(p: &Params, batch: u64) -> Vec<(B256, Vec<u8>)> {
    let mut rng = rng(p.seed, Stream::Load, batch);
    let end = ((batch + 1) * LOAD_BATCH).min(p.accounts);
    (batch * LOAD_BATCH..end)
        .map(|i| (account_key(i), random_value(&mut rng, p.value_size)))
        .collect()
}

/// How update blocks pick their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdateKind {
    Uniform,
    Zipf,
}

impl UpdateKind {
    const ALL: [UpdateKind; 2] = [UpdateKind::Uniform, UpdateKind::Zipf];

    fn bench_name(self) -> &'static str {
        match self {
            UpdateKind::Uniform => "store.update.uniform",
            UpdateKind::Zipf => "store.update.zipf",
        }
    }

    fn stream(self) -> Stream {
        match self {
            UpdateKind::Uniform => Stream::Uniform,
            UpdateKind::Zipf => Stream::Zipf,
        }
    }
}

/// Update block `block`: `p.updates` distinct accounts, new random values.
fn update_block(
    p: &Params,
    stream: Stream,
    zipf: Option<&Zipf>,
    block: u64,
) -> Vec<(B256, Vec<u8>)> {
    let mut rng = rng(p.seed, stream, block);
    let mut seen = HashSet::with_capacity(p.updates as usize);
    let mut changes = Vec::with_capacity(p.updates as usize);
    while (changes.len() as u64) < p.updates {
        let index = match zipf {
            Some(zipf) => zipf.sample(&mut rng) - 1,
            None => rng.random_range(0..p.accounts),
        };
        if seen.insert(index) {
            changes.push((account_key(index), random_value(&mut rng, p.value_size)));
        }
    }
    changes
}

/// Zipf distribution over ranks `1..=n` with `P(k) ∝ k^-s`, sampled by rejection-inversion
/// (Hörmann and Derflinger, 1996): constant time and memory per sample.
#[derive(Debug, Clone)]
struct Zipf {
    n: f64,
    s: f64,
    h_x1: f64,
    h_n: f64,
    cut: f64,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Result<Zipf> {
        ensure!(n >= 1, "Zipf needs at least one element");
        ensure!(s > 0.0 && s.is_finite(), "Zipf exponent must be positive");
        let mut z = Zipf { n: n as f64, s, h_x1: 0.0, h_n: 0.0, cut: 0.0 };
        z.h_x1 = z.big_h(1.5) - 1.0;
        z.h_n = z.big_h(z.n + 0.5);
        z.cut = 2.0 - z.big_h_inv(z.big_h(2.5) - z.h(2.0));
        Ok(z)
    }

    /// The density `x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// An antiderivative of `h`: `(x^(1-s) - 1) / (1-s)` (`ln x` when `s = 1`).
    fn big_h(&self, x: f64) -> f64 {
        let log_x = x.ln();
        expm1_over_x((1.0 - self.s) * log_x) * log_x
    }

    /// The inverse of `big_h`.
    fn big_h_inv(&self, y: f64) -> f64 {
        let t = (y * (1.0 - self.s)).max(-1.0);
        (log1p_over_x(t) * y).exp()
    }

    /// A rank in `1..=n`.
    fn sample(&self, rng: &mut impl Rng) -> u64 {
        loop {
            let u = self.h_n + rng.random::<f64>() * (self.h_x1 - self.h_n);
            let x = self.big_h_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.cut || u >= self.big_h(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }
}

/// `(e^x - 1) / x`, continuous at 0.
fn expm1_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x / 2.0 * (1.0 + x / 3.0)
    }
}

/// `ln(1 + x) / x`, continuous at 0.
fn log1p_over_x(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x / 3.0)
    }
}

// ---------------------------------------------------------------------------------------
// One side's run.

#[derive(Debug, Default)]
struct UpdateStats {
    ops_per_s: f64,
    p50_ms: f64,
}

/// Everything measured on one side.
#[derive(Debug, Default)]
struct Measured {
    load_ops: f64,
    updates: [UpdateStats; 2],
    get_ops: f64,
    reads_per_get: f64,
    hist_ops: f64,
    prove_ops: f64,
    bytes_per_update: f64,
    disk_bytes: u64,
    reopen_ms: f64,
}

fn per_second(ops: u64, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn run_side<S: Side>(p: &Params, dir: &Path) -> Result<Measured> {
    let name = format!("{:?}", S::NAME).to_lowercase();
    let mut m = Measured::default();
    let mut store = S::open(dir, p)?;

    // 1. Load.
    let mut elapsed = Duration::ZERO;
    for batch in 0..p.load_batches() {
        let changes = S::batch(load_batch(p, batch));
        let start = Instant::now();
        store.apply(batch + 1, changes).with_context(|| format!("{name}: load batch {batch}"))?;
        elapsed += start.elapsed();
    }
    m.load_ops = per_second(p.accounts, elapsed);
    progress(format!("{name}: load {:.0} ops/s", m.load_ops));
    store.after_load()?;

    // 2. Updates, then the deferred work they caused.
    let io_before = ProcIo::now().ok();
    let zipf = Zipf::new(p.accounts, ZIPF_EXPONENT)?;
    let mut version = p.load_batches();
    for (i, kind) in UpdateKind::ALL.iter().enumerate() {
        let mut latencies = Vec::with_capacity(p.blocks as usize);
        let zipf = (*kind == UpdateKind::Zipf).then_some(&zipf);
        for block in 0..p.blocks {
            let changes = S::batch(update_block(p, kind.stream(), zipf, block));
            version += 1;
            let start = Instant::now();
            store.apply(version, changes).with_context(|| format!("{name}: version {version}"))?;
            latencies.push(start.elapsed());
        }
        let total: Duration = latencies.iter().sum();
        latencies.sort_unstable();
        let p50 = latencies.get(latencies.len() / 2).copied().unwrap_or_default();
        m.updates[i] = UpdateStats {
            ops_per_s: per_second(p.blocks * p.updates, total),
            p50_ms: p50.as_secs_f64() * 1e3,
        };
        progress(format!(
            "{name}: {} {:.0} ops/s, block p50 {:.2} ms",
            kind.bench_name(),
            m.updates[i].ops_per_s,
            m.updates[i].p50_ms
        ));
    }
    store.settle()?;
    if let (Some(before), Ok(after)) = (io_before, ProcIo::now()) {
        let written = after.since(before).wchar;
        m.bytes_per_update = written as f64 / (2 * p.blocks * p.updates) as f64;
    }
    m.disk_bytes = store.disk_usage()?;
    progress(format!(
        "{name}: {:.0} bytes written per update, {} bytes on disk",
        m.bytes_per_update, m.disk_bytes
    ));

    // 3. Reads of the latest version, counting read system calls.
    let latest = p.last_version();
    ensure!(store.latest_version() == Some(latest), "{name}: latest version is not {latest}");
    let keys = random_keys(p, Stream::Gets);
    let io_before = ProcIo::now().ok();
    let start = Instant::now();
    for key in &keys {
        ensure!(store.get(key)?, "{name}: loaded key {key} has no value");
    }
    m.get_ops = per_second(p.gets, start.elapsed());
    if let (Some(before), Ok(after)) = (io_before, ProcIo::now()) {
        m.reads_per_get = after.since(before).syscr as f64 / p.gets as f64;
    }
    progress(format!("{name}: get {:.0} ops/s, {:.2} reads/get", m.get_ops, m.reads_per_get));

    // 4. Reads of retained older versions (the same ones on both sides).
    let oldest = latest.saturating_sub(p.retain - 1).max(1);
    match store.oldest_version() {
        Some(kept) if kept <= oldest => {}
        kept => bail!("{name}: oldest retained version is {kept:?}, expected at most {oldest}"),
    }
    if oldest < latest {
        let mut rng = rng(p.seed, Stream::Historical, 0);
        let reads: Vec<(B256, Version)> = (0..p.gets)
            .map(|_| {
                (account_key(rng.random_range(0..p.accounts)), rng.random_range(oldest..latest))
            })
            .collect();
        let start = Instant::now();
        for (key, version) in &reads {
            ensure!(store.get_at(key, *version)?, "{name}: key {key} has no value at {version}");
        }
        m.hist_ops = per_second(p.gets, start.elapsed());
    } else {
        // With one retained version there is no history: read the latest one.
        let start = Instant::now();
        for key in &keys {
            ensure!(store.get_at(key, latest)?, "{name}: key {key} has no value at {latest}");
        }
        m.hist_ops = per_second(p.gets, start.elapsed());
    }
    progress(format!("{name}: historical get {:.0} ops/s", m.hist_ops));

    // 5. Proofs at the latest version.
    let keys = random_keys(p, Stream::Proofs);
    let start = Instant::now();
    for key in &keys {
        store.prove(key, latest)?;
    }
    m.prove_ops = per_second(p.gets, start.elapsed());
    progress(format!("{name}: prove {:.0} ops/s", m.prove_ops));

    // 6. Reopen after a kill.
    drop(store);
    m.reopen_ms = reopen_after_kill::<S>(p, dir)?;
    progress(format!("{name}: reopen after kill {:.1} ms", m.reopen_ms));

    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(m)
}

fn random_keys(p: &Params, stream: Stream) -> Vec<B256> {
    let mut rng = rng(p.seed, stream, 0);
    (0..p.gets).map(|_| account_key(rng.random_range(0..p.accounts))).collect()
}

/// Starts `farol bench store-writer` on the store in `dir`, waits until it has acknowledged
/// `p.blocks` more blocks, SIGKILLs it while it writes the next ones, then times opening the
/// store and checks that no acknowledged version was lost.
fn reopen_after_kill<S: Side>(p: &Params, dir: &Path) -> Result<f64> {
    let exe = std::env::current_exe().context("finding the farol executable")?;
    let side = S::NAME.to_possible_value().map(|v| v.get_name().to_owned());
    let side = side.context("side has no command-line name")?;
    let mut child = Command::new(exe)
        .args(["bench", "store-writer", "--side", &side, "--dir"])
        .arg(dir)
        .args(["--accounts", &p.accounts.to_string()])
        .args(["--blocks", &p.blocks.to_string()])
        .args(["--updates", &p.updates.to_string()])
        .args(["--value-size", &p.value_size.to_string()])
        .args(["--cache-mb", &p.cache_mb.to_string()])
        .args(["--retain", &p.retain.to_string()])
        .args(["--seed", &p.seed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the writer child")?;
    let stdout = child.stdout.take().context("writer child has no stdout")?;
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let acked = line.trim().strip_prefix("ready ").and_then(|v| v.parse::<Version>().ok());
    std::thread::sleep(KILL_AFTER);
    // Killing a child that already exited is not an error worth reporting; `wait` tells.
    let _ = child.kill();
    let status = child.wait().context("waiting for the writer child")?;
    read.context("reading the writer child's output")?;
    let Some(acked) = acked else {
        bail!("the writer child stopped without reporting ready ({status}); output: {line:?}");
    };

    let start = Instant::now();
    let store = S::open(dir, p)?;
    let elapsed = start.elapsed();
    let latest = store.latest_version();
    ensure!(
        latest.is_some_and(|v| v >= acked),
        "{side}: reopened at version {latest:?} but version {acked} was acknowledged"
    );
    drop(store);
    Ok(elapsed.as_secs_f64() * 1e3)
}

/// Runs the hidden `farol bench store-writer`.
pub(crate) fn run_writer(args: StoreWriterArgs) -> Result<()> {
    let p = Params {
        accounts: args.accounts,
        blocks: args.blocks,
        updates: args.updates,
        gets: 0,
        value_size: args.value_size,
        cache_mb: args.cache_mb,
        retain: args.retain,
        seed: args.seed,
        quick: false,
    };
    ensure!(p.updates <= p.accounts && p.blocks > 0, "bad writer parameters");
    match args.side {
        SideName::Ours => write_until_killed::<Ours>(&p, &args.dir),
        SideName::Mpt => write_until_killed::<Mpt>(&p, &args.dir),
    }
}

/// Writes blocks of uniform updates; after `p.blocks` of them prints `ready <version>` and
/// keeps writing (for at most a minute) until killed.
fn write_until_killed<S: Side>(p: &Params, dir: &Path) -> Result<()> {
    let mut store = S::open(dir, p)?;
    let mut version = store.latest_version().context("the writer needs a loaded store")?;
    let deadline_after_ready = Duration::from_secs(60);
    let mut ready_at = None;
    for block in 0.. {
        let changes = S::batch(update_block(p, Stream::Writer, None, block));
        version += 1;
        store.apply(version, changes)?;
        if block + 1 == p.blocks {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready {version}").context("writing to the parent")?;
            out.flush().context("writing to the parent")?;
            ready_at = Some(Instant::now());
        }
        if ready_at.is_some_and(|t| t.elapsed() > deadline_after_ready) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_follows_its_law() {
        let n = 1000;
        let zipf = Zipf::new(n, ZIPF_EXPONENT).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..draws {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k));
            counts[k as usize] += 1;
        }
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-ZIPF_EXPONENT)).sum();
        for k in [1u64, 2, 3, 10, 100] {
            let expected = draws as f64 * (k as f64).powf(-ZIPF_EXPONENT) / norm;
            let got = counts[k as usize] as f64;
            assert!(
                (got - expected).abs() < 5.0 * expected.sqrt() + 1.0,
                "rank {k}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn workload_is_deterministic_and_distinct() {
        let p = Params {
            accounts: 1000,
            blocks: 1,
            updates: 500,
            gets: 10,
            value_size: 32,
            cache_mb: 1,
            retain: 2,
            seed: 9,
            quick: true,
        };
        let zipf = Zipf::new(p.accounts, ZIPF_EXPONENT).unwrap();
        let a = update_block(&p, Stream::Zipf, Some(&zipf), 3);
        assert_eq!(a, update_block(&p, Stream::Zipf, Some(&zipf), 3));
        assert_ne!(a, update_block(&p, Stream::Zipf, Some(&zipf), 4));
        let keys: HashSet<_> = a.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys.len(), 500);
        assert!(a.iter().all(|(_, v)| v.len() == 32));
        assert_eq!(load_batch(&p, 0).len(), 1000);
    }
}
