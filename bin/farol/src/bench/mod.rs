//! `farol bench <what>`: ours and the baseline in the same process run, on the same generated
//! workload. Every result is one JSON line on stdout
//! (`{"bench":..,"ours":..,"baseline":..,"unit":..,"ratio":..,"params":{..}}`, `ratio` oriented
//! so that higher is always better); progress goes to stderr.

mod chain;
mod consensus;
mod exec;
mod node;
mod store;
mod wasm;

use std::io::Write;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

/// Arguments of `farol bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark to run.
    #[command(subcommand)]
    what: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Farol Store against an Ethereum Merkle Patricia Trie over RocksDB.
    Store(store::StoreBenchArgs),
    /// The parallel executor against sequential revm on the same blocks.
    Exec(exec::ExecBenchArgs),
    /// WASM contracts against the same work on the EVM.
    Wasm(wasm::WasmBenchArgs),
    /// AsyncBFT over QUIC, every validator proposing, against one proposer per round.
    Consensus(consensus::ConsensusBenchArgs),
    /// A devnet of validator processes under a JSON-RPC load of transfers, pipelined
    /// against one block at a time.
    Node(node::NodeBenchArgs),
    /// The chain's data at a restart: the transaction index in run files against the whole
    /// index rebuilt in memory from the block log.
    Chain(chain::ChainBenchArgs),
    /// Internal: the child process `bench chain` runs to open the chain and measure it.
    #[command(hide = true)]
    ChainOpen(chain::ChainOpenArgs),
    /// Internal: the child process `bench store` kills to measure reopening after a crash.
    #[command(hide = true)]
    StoreWriter(store::StoreWriterArgs),
}

/// Runs `farol bench`.
pub(crate) fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchCommand::Store(args) => store::run(args),
        BenchCommand::Exec(args) => exec::run(args),
        BenchCommand::Wasm(args) => wasm::run(args),
        BenchCommand::Consensus(args) => consensus::run(args),
        BenchCommand::Node(args) => node::run(args),
        BenchCommand::Chain(args) => chain::run(args),
        BenchCommand::ChainOpen(args) => chain::run_open(args),
        BenchCommand::StoreWriter(args) => store::run_writer(args),
    }
}

/// Which way a measurement is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    /// Throughput: `ratio = ours / baseline`.
    Higher,
    /// Latency, sizes, counts: `ratio = baseline / ours`.
    Lower,
}

/// One result line.
#[derive(Debug, Serialize)]
pub(crate) struct BenchResult {
    /// Name, `<area>.<what>[.<variant>]`.
    bench: String,
    /// Farol's measurement.
    ours: f64,
    /// The baseline's measurement.
    baseline: f64,
    /// Unit of `ours` and `baseline`.
    unit: String,
    /// Improvement factor over the baseline, higher is better (`null` if undefined).
    ratio: f64,
    /// The workload's parameters.
    params: serde_json::Value,
}

impl BenchResult {
    /// A result; `ratio` follows from `better`.
    pub(crate) fn new(
        bench: &str,
        ours: f64,
        baseline: f64,
        unit: &str,
        better: Better,
        params: serde_json::Value,
    ) -> BenchResult {
        let (num, den) = match better {
            Better::Higher => (ours, baseline),
            Better::Lower => (baseline, ours),
        };
        // Equal zeros are a tie; x / 0 is infinite and prints as `null`.
        let ratio = if num == 0.0 && den == 0.0 { 1.0 } else { num / den };
        BenchResult {
            bench: bench.to_owned(),
            ours,
            baseline,
            unit: unit.to_owned(),
            ratio,
            params,
        }
    }

    /// Prints the result as one JSON line on stdout.
    pub(crate) fn print(&self) -> Result<()> {
        let line = serde_json::to_string(self).context("encoding a bench result")?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").context("writing a bench result to stdout")?;
        out.flush().context("flushing stdout")?;
        Ok(())
    }
}

/// Runs ours (`run(ours)`) and the baseline (`run(!ours)`) twice each, in the order ours,
/// baseline, baseline, ours, and returns both runs of each side: `((ours, ours), (baseline,
/// baseline))`. The first runs a bench makes are the slowest on this machine, so neither side
/// may always go first (each bench's `abba` gives its numbers).
pub(crate) fn abba<M>(
    ours: bool,
    mut run: impl FnMut(bool) -> Result<M>,
) -> Result<((M, M), (M, M))> {
    let a1 = run(ours)?;
    let b1 = run(!ours)?;
    let b2 = run(!ours)?;
    let a2 = run(ours)?;
    Ok(((a1, a2), (b1, b2)))
}

/// The median of `times` (sorts them); zero for none.
pub(crate) fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Prints a progress line to stderr.
pub(crate) fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}

/// The process's I/O counters from `/proc/self/io` (all threads, Linux only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcIo {
    /// Bytes passed to write-like system calls (`wchar`).
    pub(crate) wchar: u64,
    /// Read system calls (`syscr`).
    pub(crate) syscr: u64,
}

impl ProcIo {
    /// Reads the counters now.
    pub(crate) fn now() -> Result<ProcIo> {
        let text = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
        ProcIo::parse(&text)
    }

    /// Parses the text of `/proc/<pid>/io`.
    fn parse(text: &str) -> Result<ProcIo> {
        let field = |name: &str| -> Result<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .with_context(|| format!("no `{name}` in /proc/self/io"))?
                .trim()
                .parse()
                .with_context(|| format!("`{name}` in /proc/self/io is not a number"))
        };
        Ok(ProcIo { wchar: field("wchar")?, syscr: field("syscr")? })
    }

    /// The counters accumulated since `earlier`.
    pub(crate) fn since(self, earlier: ProcIo) -> ProcIo {
        ProcIo {
            wchar: self.wchar.saturating_sub(earlier.wchar),
            syscr: self.syscr.saturating_sub(earlier.syscr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_oriented_so_higher_is_better() {
        let p = serde_json::json!({});
        assert_eq!(
            BenchResult::new("t", 20.0, 10.0, "ops/s", Better::Higher, p.clone()).ratio,
            2.0
        );
        assert_eq!(BenchResult::new("t", 5.0, 10.0, "ms", Better::Lower, p.clone()).ratio, 2.0);
        assert_eq!(BenchResult::new("t", 0.0, 0.0, "ms", Better::Lower, p).ratio, 1.0);
    }

    #[test]
    fn parses_proc_io() {
        let text = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 0\nwrite_bytes: 0\n\
                    cancelled_write_bytes: 0\n";
        let io = ProcIo::parse(text).unwrap();
        assert_eq!(io, ProcIo { wchar: 20, syscr: 3 });
        let later = ProcIo { wchar: 30, syscr: 5 };
        assert_eq!(later.since(io), ProcIo { wchar: 10, syscr: 2 });
    }
}
