//! `farol bench exec`: Farol's parallel executor against sequential revm on the same blocks.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use farol_execution::workload::{rng, World, WorldSpec};
use farol_execution::{
    execute_sequential, BlockOutput, LatencyState, ParallelConfig, ParallelExecutor, ParallelStats,
    RecoveredTx, StateView,
};
use serde_json::json;

use super::{median, progress, BenchResult, Better};

/// Arguments of `farol bench exec`.
#[derive(Debug, Args)]
pub(crate) struct ExecBenchArgs {
    /// Small blocks, under a minute in all.
    #[arg(long)]
    quick: bool,
    /// Worker threads of the parallel executor (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Runs of each side per block; the median is reported.
    #[arg(long)]
    runs: Option<usize>,
    /// Only the workloads whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

struct Sizes {
    transfers: usize,
    erc20: usize,
    swaps: usize,
    hybrid: usize,
    chain: usize,
    latency: usize,
    runs: usize,
}

/// Runs `farol bench exec`.
pub(crate) fn run(args: ExecBenchArgs) -> Result<()> {
    let sizes = if args.quick {
        Sizes {
            transfers: 8_000,
            erc20: 4_000,
            swaps: 2_000,
            hybrid: 4_000,
            chain: 2_000,
            latency: 400,
            runs: 3,
        }
    } else {
        // A 1-gigagas block of transfers is 47,619 transfers of 21,000 gas.
        Sizes {
            transfers: 47_600,
            erc20: 20_000,
            swaps: 8_000,
            hybrid: 20_000,
            chain: 10_000,
            latency: 2_000,
            runs: 5,
        }
    };
    let runs = args.runs.unwrap_or(sizes.runs).max(1);
    let threads = args.threads.unwrap_or_else(|| ParallelConfig::default().threads);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    let spec = WorldSpec {
        users: sizes.transfers.max(sizes.erc20).max(sizes.hybrid),
        // The threshold blocks go up to 4,096 ERC-20 senders.
        token_holders: sizes.erc20.max(4096),
        swappers: sizes.swaps,
        tokens: 16,
        pools: 100,
        kits: 1,
    };
    progress(format!("setting up {} users, 16 tokens, 100 Uniswap V2 pools", spec.users));
    let started = Instant::now();
    let mut world = World::new(spec).map_err(|e| anyhow!("setting up the world: {e}"))?;
    progress(format!("set up in {:.1} s", started.elapsed().as_secs_f64()));
    let mut r = rng(42);
    let parallel = ParallelExecutor::new(ParallelConfig { threads, ..ParallelConfig::default() });

    // Every block is generated against the set-up state (none is committed), so each starts
    // from the same nonces.
    let nonces = world.nonces();
    let fresh = |world: &mut World| world.set_nonces(nonces.clone());
    let mut blocks: Vec<(&str, Vec<RecoveredTx>)> = Vec::new();
    if wanted("exec.transfers") {
        blocks.push(("exec.transfers", {
            fresh(&mut world);
            world.independent_transfers(sizes.transfers)
        }));
    }
    if wanted("exec.erc20") {
        blocks.push(("exec.erc20", {
            fresh(&mut world);
            world.erc20_transfers(sizes.erc20, &mut r)
        }));
    }
    for (name, pools) in [("exec.swaps.1", 1), ("exec.swaps.10", 10), ("exec.swaps.100", 100)] {
        if wanted(name) {
            blocks.push((name, {
                fresh(&mut world);
                world.swaps(sizes.swaps, pools, &mut r)
            }));
        }
    }
    if wanted("exec.hybrid30") {
        blocks.push(("exec.hybrid30", {
            fresh(&mut world);
            world.hybrid(sizes.hybrid, 30, &mut r)
        }));
    }
    if wanted("exec.dependent") {
        blocks.push(("exec.dependent", {
            fresh(&mut world);
            world.dependent_chain(sizes.chain)
        }));
    }
    for (name, txs) in &blocks {
        let halves = Some(by_sender_halves(txs));
        measure(name, &world, &world.state, txs, &parallel, threads, runs, halves, json!({}))?;
    }

    // Storage with 100 µs per cold read: overlapping reads is what matters.
    let latency = Duration::from_micros(100);
    let wide = ParallelExecutor::new(ParallelConfig { threads: 8, ..ParallelConfig::default() });
    let mut slow_blocks: Vec<(&str, Vec<RecoveredTx>)> = Vec::new();
    if wanted("exec.latency.transfers") {
        slow_blocks.push(("exec.latency.transfers", {
            fresh(&mut world);
            world.independent_transfers(sizes.latency)
        }));
    }
    if wanted("exec.latency.erc20") {
        slow_blocks.push(("exec.latency.erc20", {
            fresh(&mut world);
            world.erc20_transfers(sizes.latency, &mut r)
        }));
    }
    let slow = LatencyState::new(&world.state, latency);
    for (name, txs) in &slow_blocks {
        let extra = json!({"read_latency_us": 100});
        measure(name, &world, &slow, txs, &wide, 8, runs.min(3), None, extra)?;
    }

    // Where parallel starts to pay: blocks of growing size, forced parallel (no fallback), on
    // the Block-STM path and partitioned.
    if wanted("exec.threshold") {
        let forced = ParallelExecutor::new(ParallelConfig::always_parallel(threads));
        let partitioned = ParallelExecutor::new(ParallelConfig::always_partitioned(
            threads,
            farol_execution::Partition::Predicted,
        ));
        for n in [16usize, 64, 256, 1024, 4096] {
            let transfers = {
                fresh(&mut world);
                world.independent_transfers(n)
            };
            let erc20 = {
                fresh(&mut world);
                world.erc20_transfers(n, &mut r)
            };
            for (kind, txs) in [("transfers", transfers), ("erc20", erc20)] {
                let name = format!("exec.threshold.{kind}.{n}");
                measure(
                    &name,
                    &world,
                    &world.state,
                    &txs,
                    &forced,
                    threads,
                    runs.max(5),
                    None,
                    json!({"forced_parallel": true}),
                )?;
                let name = format!("exec.threshold.{kind}.{n}.partitioned");
                measure(
                    &name,
                    &world,
                    &world.state,
                    &txs,
                    &partitioned,
                    threads,
                    runs.max(5),
                    None,
                    json!({"forced_parallel": true, "partitioned": true}),
                )?;
            }
        }
    }
    Ok(())
}

/// The least time spent on the sequential side of one block's measurement.
const MIN_SIDE_TIME: Duration = Duration::from_secs(5);

/// The most timed runs of each side per block.
const MAX_RUNS: usize = 41;

/// The block's transactions split in two by sender (the last bit of the address), each half
/// in block order: every sender's chain of nonces stays whole in one half.
fn by_sender_halves(txs: &[RecoveredTx]) -> [Vec<RecoveredTx>; 2] {
    let (odd, even): (Vec<RecoveredTx>, Vec<RecoveredTx>) =
        txs.iter().cloned().partition(|t| t.sender.0[19] & 1 == 1);
    [even, odd]
}

/// Runs the sequential executor on each half at once, on two threads that share nothing
/// but the parent state, and returns the time until both are done (`None` if either half
/// failed, which would end it early). The outputs are thrown away: a half misses the other
/// half's effects. This is what two cores give the sequential executor's own work on the
/// block with no coordination at all: how well this machine runs two threads at once, in
/// this run. An executor doing less work per transaction than the sequential one can pass it.
fn uncoordinated<S: StateView>(
    world: &World,
    state: &S,
    env: &farol_execution::BlockEnv,
    halves: &[Vec<RecoveredTx>; 2],
) -> Result<Option<Duration>> {
    let started = Instant::now();
    let ok = std::thread::scope(|s| -> Result<bool> {
        let mut running = Vec::new();
        for half in halves {
            running.push(
                std::thread::Builder::new()
                    .stack_size(farol_execution::wasm::EXECUTOR_STACK)
                    .spawn_scoped(s, move || {
                        execute_sequential(state, &world.chain, env, half).is_ok()
                    })
                    .context("starting a thread")?,
            );
        }
        let mut ok = true;
        for r in running {
            ok &= r.join().map_err(|_| anyhow!("a half's thread panicked"))?;
        }
        Ok(ok)
    })?;
    Ok(ok.then(|| started.elapsed()))
}

/// Times both executors on `txs` over `state` and prints the result line; with `halves`,
/// also [`uncoordinated`] runs of them.
#[allow(clippy::too_many_arguments)]
fn measure<S: StateView>(
    name: &str,
    world: &World,
    state: &S,
    txs: &[RecoveredTx],
    parallel: &ParallelExecutor,
    threads: usize,
    runs: usize,
    halves: Option<[Vec<RecoveredTx>; 2]>,
    extra: serde_json::Value,
) -> Result<()> {
    let env = world.block_env(farol_execution::workload::fresh_address(0xc0ffee));
    let run_seq = || -> Result<(Duration, BlockOutput)> {
        let t = Instant::now();
        let seq = execute_sequential(state, &world.chain, &env, txs)
            .map_err(|e| anyhow!("{name}: sequential: {e}"))?;
        Ok((t.elapsed(), seq))
    };
    let run_par = || -> Result<(Duration, BlockOutput, ParallelStats)> {
        let t = Instant::now();
        let (par, s) = parallel
            .execute(state, &world.chain, &env, txs)
            .map_err(|e| anyhow!("{name}: parallel: {e}"))?;
        Ok((t.elapsed(), par, s))
    };
    // One untimed run of each side first: the first touch of the state, the allocator's
    // first pages and the pool's wake-up cost either side up to 30 % in the first run.
    let (warm, reference) = run_seq()?;
    let (_, par, mut stats) = run_par()?;
    if par != reference {
        return Err(anyhow!("{name}: the parallel output differs from the sequential one"));
    }
    if let Some(failed) = reference.txs.iter().position(|t| !t.is_success()) {
        return Err(anyhow!(
            "{name}: transaction {failed} did not succeed: {:?}",
            reference.txs[failed].status
        ));
    }
    drop(par);
    // Short blocks get more runs (at least about five seconds of the sequential side, at most
    // `MAX_RUNS`), and the sides take turns going first, so that neither gains from the other.
    let runs = runs.max((MIN_SIDE_TIME.as_nanos() / warm.as_nanos().max(1)) as usize).min(MAX_RUNS);
    let mut seq_times = Vec::with_capacity(runs);
    let mut par_times = Vec::with_capacity(runs);
    let mut uncoordinated_times = halves.as_ref().map(|_| Vec::with_capacity(runs));
    for k in 0..runs {
        let (seq, par) = if k % 2 == 0 {
            let seq = run_seq()?;
            (seq, run_par()?)
        } else {
            let par = run_par()?;
            (run_seq()?, par)
        };
        if par.1 != reference || seq.1 != reference {
            return Err(anyhow!("{name}: an output differs from the first sequential one"));
        }
        seq_times.push(seq.0);
        par_times.push(par.0);
        stats = par.2;
        if let Some(h) = &halves {
            // `None` once a half fails: the block has no uncoordinated figure.
            uncoordinated_times = match (uncoordinated_times, uncoordinated(world, state, &env, h)?)
            {
                (Some(mut v), Some(t)) => {
                    v.push(t);
                    Some(v)
                }
                _ => None,
            };
        }
    }
    // When the executor chose to run sequentially, also show what forcing parallel would give.
    let mut forced_ms = None;
    if stats.fallback.is_some() {
        let forced = ParallelExecutor::new(ParallelConfig::always_parallel(threads));
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            forced
                .execute(state, &world.chain, &env, txs)
                .map_err(|e| anyhow!("{name}: forced parallel: {e}"))?;
            times.push(t.elapsed());
        }
        forced_ms = Some(median(&mut times).as_secs_f64() * 1e3);
    }
    let gas = reference.gas_used;
    let seq = median(&mut seq_times);
    let par = median(&mut par_times);
    let per_s = |d: Duration, x: f64| x / d.as_secs_f64().max(1e-9);
    let mut params = json!({
        "txs": txs.len(),
        "gas": gas,
        "threads": threads,
        "runs": runs,
        "tx_per_s_ours": per_s(par, txs.len() as f64).round(),
        "tx_per_s_baseline": per_s(seq, txs.len() as f64).round(),
        "ms_ours": par.as_secs_f64() * 1e3,
        "ms_baseline": seq.as_secs_f64() * 1e3,
        "executions": stats.executions,
        "re_executions": stats.re_executions,
        "waits": stats.waits,
        "fallback": stats.fallback,
        "bins": stats.bins,
        "partition_abandoned": stats.partition_abandoned,
        "ms_ours_parallel_phase": stats.parallel_time.as_secs_f64() * 1e3,
        "ms_ours_finish_phase": stats.finish_time.as_secs_f64() * 1e3,
        "baseline_is": "execute_sequential: revm 43 transact_one per transaction, same cached state view, same block",
        "ms_forced_parallel": forced_ms,
    });
    if let Some(mut times) = uncoordinated_times {
        let t = median(&mut times);
        params["ms_uncoordinated_halves"] = json!(t.as_secs_f64() * 1e3);
        params["uncoordinated_ratio"] = json!(seq.as_secs_f64() / t.as_secs_f64().max(1e-9));
        params["uncoordinated_is"] = json!("the sequential executor on each half of the block's senders at once, two threads sharing only the parent state, outputs thrown away: two cores with no coordination at all");
    }
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    BenchResult::new(
        name,
        per_s(par, gas as f64),
        per_s(seq, gas as f64),
        "gas/s",
        Better::Higher,
        params,
    )
    .print()
}
