//! `farol bench wasm`: WASM contracts against the same work on the EVM, on Farol's executor.
//!
//! - `wasm.compute.option_pricer`: the Rust binomial option pricer against its Solidity twin,
//!   blocks of identical calls (the outputs must be equal);
//! - `wasm.call.evm_to_wasm`: a Solidity loop calling an empty WASM contract against the same
//!   loop calling an empty EVM contract, per call;
//! - `wasm.call.wasm_to_evm`: a WASM loop calling an EVM contract that stops at once (the
//!   host `call`) against the Solidity loop calling it, per call;
//! - `wasm.first_call.compiled` / `.compiling`: the block with the first call to a freshly
//!   deployed Rust ERC-20, once its compilation has finished and when the call arrives right
//!   after deployment (so the interpreter runs it), against the first call to the Solidity
//!   (OpenZeppelin) ERC-20 under the same conditions (after another module's compilation,
//!   and right after deployment); the compiled case is run again with ready instances off
//!   (`params.without_ready_instances`);
//! - `wasm.repeated_call`: a block of calls to one Rust ERC-20 with ready instances against
//!   the same without (they must not slow a contract called many times in a block);
//! - `wasm.evicted_call`: the block with a call to a Rust ERC-20 whose module has left
//!   memory (as `MAX_MODULES` others' calls make it leave), loaded back from the disk cache
//!   as a node does, against the same call with the module in memory; with the gas that call
//!   pays, and the time when the disk cache does not hold it (validated, rewritten and
//!   translated again on the call: every reload before stop 44) (docs/wasm.md §5, §9);
//! - `wasm.evicted_loop.tiny`, `.erc20`: a WASM contract that calls, in turn and over again,
//!   one more module (58-byte ones, or copies of the Rust ERC-20) than memory holds (so that
//!   every call finds its module gone), against the same loop over modules that all fit: the
//!   rounds after the first, in µs per 1,000 gas (docs/wasm.md §9: the worst case of modules
//!   leaving memory);
//! - `wasm.fuel`: the pricer's module with fuel metering against the same module without.

use std::time::{Duration, Instant};

use alloy_primitives::{keccak256, Address, U256};
use alloy_sol_types::{sol, SolCall, SolValue};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use farol_execution::wasm::{contract_code, deploy_code, time_standalone, WasmRuntime};
use farol_execution::workload::{
    creation_code, option_price_input, rust_module, Flavor, World, WorldSpec,
};
use farol_execution::{execute_sequential, BlockOutput, RecoveredTx, TxStatus};
use serde_json::json;

use super::{median, progress, BenchResult, Better};

/// Arguments of `farol bench wasm`.
#[derive(Debug, Args)]
pub(crate) struct WasmBenchArgs {
    /// Fewer and smaller runs, well under a minute.
    #[arg(long)]
    quick: bool,
    /// Runs of each side; the median is reported.
    #[arg(long)]
    runs: Option<usize>,
    /// Only the benchmarks whose name contains this (`compute`, `call`, `first_call`,
    /// `repeated_call`, `evicted_call`, `evicted_loop`, `fuel`).
    #[arg(long)]
    only: Option<String>,
}

sol! {
    function run(address target, uint256 n, bytes data) external returns (uint256);
    function balanceOf(address owner) external view returns (uint256);
}

/// Runs `farol bench wasm`.
pub(crate) fn run(args: WasmBenchArgs) -> Result<()> {
    let runs = args.runs.unwrap_or(if args.quick { 3 } else { 7 }).max(1);
    let mut world = World::new(WorldSpec {
        users: 64,
        token_holders: 0,
        swappers: 0,
        tokens: 1,
        pools: 0,
        kits: 0,
    })
    .map_err(|e| anyhow!("setting up the world: {e}"))?;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|o| name.contains(o));
    if wanted("wasm.compute") {
        compute(&mut world, args.quick, runs)?;
    }
    if wanted("wasm.call") {
        call_overhead(&mut world, args.quick, runs)?;
    }
    if wanted("wasm.first_call") {
        first_call(&mut world, if args.quick { 5 } else { 31 })?;
    }
    if wanted("wasm.repeated_call") {
        repeated_call(&mut world, if args.quick { 100 } else { 500 }, runs)?;
    }
    if wanted("wasm.evicted_call") {
        evicted_call(&mut world, if args.quick { 5 } else { 21 })?;
    }
    if wanted("wasm.evicted_loop") {
        let rounds = if args.quick { 2 } else { 3 };
        evicted_loop(&mut world, "wasm.evicted_loop.tiny", rounds, &|n| {
            let src = format!(
                r#"(module (memory (export "memory") 1) (func (export "call")) (func (drop (i32.const {}))))"#,
                8_000_000 + n
            );
            wat::parse_str(src).map_err(|e| anyhow!("{e}"))
        })?;
        if !args.quick {
            let erc20 = module("erc20")?;
            evicted_loop(&mut world, "wasm.evicted_loop.erc20", rounds, &|n| {
                Ok(with_nonce(&erc20, 8_100_000 + n as u64))
            })?;
        }
    }
    if wanted("wasm.fuel") {
        fuel(args.quick, runs)?;
    }
    Ok(())
}

/// A call to a module that left memory, `samples` times (the module made to leave before
/// each), loaded from the disk cache, against the same call with it in memory (compiled);
/// with the gas it pays and the time of the same call without the disk cache.
fn evicted_call(world: &mut World, samples: usize) -> Result<()> {
    progress(format!("wasm.evicted_call: {samples} calls to a module that left memory"));
    let runtime = WasmRuntime::global().map_err(|e| anyhow!("{e}"))?;
    let cache = tempfile::tempdir()?;
    runtime.set_disk_cache(Some(cache.path().to_path_buf()));
    let measured = evicted_samples(world, runtime, samples);
    runtime.set_disk_cache(None);
    let (evicted, present, uncached, gas, file_bytes) = measured?;
    BenchResult::new(
        "wasm.evicted_call",
        evicted,
        present,
        "us",
        Better::Lower,
        json!({
            "module_bytes": module("erc20")?.len(),
            "cached_file_bytes": file_bytes,
            "samples": samples,
            "gas_used": gas,
            "evicted_us_per_1000_gas": evicted * 1000.0 / gas.max(1) as f64,
            "evicted_without_disk_cache_us": uncached,
            "measured": "one block with one balanceOf call (sequential executor), the module \
                         made to leave memory before it and loaded back from the disk cache",
            "baseline": "the same block with the module in memory, compiled",
        }),
    )
    .print()
}

/// The medians of [`evicted_call`] in µs (from the disk cache, in memory, without the disk
/// cache), the gas of the call and the size of the cached file.
fn evicted_samples(
    world: &mut World,
    runtime: &'static WasmRuntime,
    samples: usize,
) -> Result<(f64, f64, f64, u64, u64)> {
    let erc20 = module("erc20")?;
    let code = contract_code(&with_nonce(&erc20, 9_000_000));
    let hash = keccak256(&code);
    let token = deploy_compiled(world, &code)?;
    let loaded = runtime.stats().loaded;
    let caller = world.users[1];
    let query = balanceOfCall { owner: caller }.abi_encode();
    let saved = world.nonces();
    let txs = calls(world, token, &query, 1, 1_000_000);
    world.set_nonces(saved);
    let (mut evicted, mut present, mut uncached) = (Vec::new(), Vec::new(), Vec::new());
    let mut gas = 0;
    for _ in 0..samples {
        runtime.forget(hash);
        let (out, t) = time_block(world, &txs, 1)?;
        gas = out.txs[0].gas_used;
        evicted.push(t);
        // In memory again, compiled.
        runtime.wait(hash);
        let (_, t) = time_block(world, &txs, 1)?;
        present.push(t);
    }
    if runtime.stats().loaded < loaded + samples as u64 {
        bail!("the module was not loaded from the disk cache at every sample");
    }
    let file_bytes =
        runtime.cache_file(hash).and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
    let cache = runtime.disk_cache();
    runtime.set_disk_cache(None);
    for _ in 0..samples {
        runtime.forget(hash);
        let (out, t) = time_block(world, &txs, 1)?;
        if out.txs[0].gas_used != gas {
            bail!(
                "the call paid {} gas without the disk cache, {gas} with it",
                out.txs[0].gas_used
            );
        }
        uncached.push(t);
        runtime.wait(hash);
    }
    runtime.set_disk_cache(cache);
    let m = |v: &mut Vec<Duration>| us(median(v));
    Ok((m(&mut evicted), m(&mut present), m(&mut uncached), gas, file_bytes))
}

/// A contract that calls in turn, `rounds` times over, each address of its input (after
/// `rounds`, a little-endian `u32`), with a static call of `balanceOf(0)`; a call that fails
/// traps.
const LOOPER: &str = r#"
(module
  (import "farol" "calldata_size" (func $size (result i32)))
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "call" (func $call (param i32 i32 i32 i32 i32 i64) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "\70\a0\82\31")
  (func (export "call")
    (local $n i32) (local $r i32) (local $i i32)
    (local.set $n (call $size))
    (call $cd (i32.const 1024) (i32.const 0) (local.get $n))
    (local.set $r (i32.load (i32.const 1024)))
    (block $done
      (loop $round
        (br_if $done (i32.eqz (local.get $r)))
        (local.set $i (i32.const 4))
        (block $end
          (loop $next
            (br_if $end (i32.gt_u (i32.add (local.get $i) (i32.const 20)) (local.get $n)))
            (if (i32.eqz (call $call (i32.const 1) (i32.add (i32.const 1024) (local.get $i))
                  (i32.const 64) (i32.const 0) (i32.const 36) (i64.const 1000000)))
              (then unreachable))
            (local.set $i (i32.add (local.get $i) (i32.const 20)))
            (br $next)))
        (local.set $r (i32.sub (local.get $r) (i32.const 1)))
        (br $round)))))
"#;

/// `wasm.evicted_loop.*`: [`LOOPER`] over `MAX_MODULES + 1` modules made by `make` (each
/// of its calls finds its module gone: the least recently used leaves first), against the
/// same loop over 1,000 of them (all in memory): the time and gas of `rounds` rounds less
/// those of one (so the rounds whose calls pay warm account access), with the disk cache on,
/// as the node runs, and the attack again with it off.
fn evicted_loop(
    world: &mut World,
    name: &str,
    rounds: u32,
    make: &dyn Fn(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let runtime = WasmRuntime::global().map_err(|e| anyhow!("{e}"))?;
    let k = farol_execution::wasm::MAX_MODULES + 1;
    progress(format!("{name}: deploying {k} modules, then {rounds} rounds of calls"));
    let cache = tempfile::tempdir()?;
    runtime.set_disk_cache(Some(cache.path().to_path_buf()));
    let measured = evicted_loop_runs(world, runtime, k, rounds, make);
    runtime.set_disk_cache(None);
    let m = measured?;
    let (attack, fit, uncached) = (m.attack.per_kgas(), m.fit.per_kgas(), m.uncached.per_kgas());
    BenchResult::new(
        name,
        attack,
        fit,
        "us/1000 gas",
        Better::Lower,
        json!({
            "module_bytes": make(0)?.len(),
            "modules_cycled": k,
            "modules_that_fit": m.fit_modules,
            "rounds": rounds,
            "attack_extra_gas": m.attack.gas,
            "attack_extra_ms": us(m.attack.time) / 1000.0,
            "attack_extra_calls": m.attack.calls,
            "attack_us_per_load": us(m.attack.time) / m.attack.calls.max(1) as f64,
            "gas_per_call": m.attack.gas / m.attack.calls.max(1),
            "fit_extra_gas": m.fit.gas,
            "fit_extra_ms": us(m.fit.time) / 1000.0,
            "s_per_30m_gas_block": attack * 30_000.0 / 1e6,
            "without_disk_cache_us_per_1000_gas": uncached,
            "without_disk_cache_s_per_30m_gas_block": uncached * 30_000.0 / 1e6,
            "measured": "the rounds after the first of a WASM loop over one more module than \
                         memory holds (every call finds its module gone and loads it from \
                         the disk cache; warm account access): the time and gas of the loop \
                         of `rounds` rounds less those of one round, memory cycled before",
            "baseline": "the same over modules that all stay in memory",
        }),
    )
    .print()
}

/// The rounds after the first of a loop: their time and gas, and their calls.
struct Extra {
    time: Duration,
    gas: u64,
    calls: u64,
}

impl Extra {
    fn per_kgas(&self) -> f64 {
        us(self.time) * 1000.0 / self.gas.max(1) as f64
    }
}

/// What [`evicted_loop`] measured: the attack, the loop over modules that fit, and the
/// attack without the disk cache.
struct LoopRuns {
    attack: Extra,
    fit: Extra,
    uncached: Extra,
    fit_modules: usize,
}

fn evicted_loop_runs(
    world: &mut World,
    runtime: &'static WasmRuntime,
    k: usize,
    rounds: u32,
    make: &dyn Fn(usize) -> Result<Vec<u8>>,
) -> Result<LoopRuns> {
    let codes: Vec<Vec<u8>> =
        (0..k).map(|n| make(n).map(|m| contract_code(&m))).collect::<Result<_>>()?;
    let mut targets = Vec::with_capacity(k);
    for chunk in codes.chunks(32) {
        let mut txs = Vec::with_capacity(chunk.len());
        for (i, code) in chunk.iter().enumerate() {
            let from = world.users[i % world.users.len()];
            let (addr, tx) = world.deploy(from, deploy_code(code).into(), 16_000_000);
            targets.push(addr);
            txs.push(tx);
        }
        commit(world, txs)?;
    }
    for code in &codes {
        runtime.wait(keccak256(code));
    }
    for code in &codes {
        if !runtime.cache_file(keccak256(code)).is_some_and(|f| f.exists()) {
            bail!("a module's compiled form is not in the disk cache");
        }
    }
    let looper = wat::parse_str(LOOPER).map_err(|e| anyhow!("{e}"))?;
    let looper = deploy_compiled(world, &contract_code(&looper))?;
    let caller = world.users[1];
    let saved = world.nonces();
    let tx = |world: &mut World, list: &[Address], rounds: u32| {
        let mut input = rounds.to_le_bytes().to_vec();
        for a in list {
            input.extend_from_slice(a.as_slice());
        }
        world.set_nonces(saved.clone());
        vec![world.call(caller, looper, U256::ZERO, input, 16_000_000, Flavor::DynamicFee, 1)]
    };
    let fit_modules = 1_000.min(k - 1);
    let (fit_one, fit_all) =
        (tx(world, &targets[..fit_modules], 1), tx(world, &targets[..fit_modules], rounds));
    let (attack_one, attack_all) = (tx(world, &targets, 1), tx(world, &targets, rounds));
    world.set_nonces(saved);
    // The extra rounds of `all` over `one`, `runs` times each (medians).
    let extra = |world: &World, one: &[RecoveredTx], all: &[RecoveredTx], runs: usize| {
        let (o1, t1) = time_block(world, one, runs)?;
        let (oa, ta) = time_block(world, all, runs)?;
        let gas = oa.txs[0].gas_used.saturating_sub(o1.txs[0].gas_used);
        Ok::<_, anyhow::Error>(Extra { time: ta.saturating_sub(t1), gas, calls: 0 })
    };
    // The modules that fit, twice first: every one of them in memory.
    time_block(world, &fit_all, 2)?;
    let mut fit = extra(world, &fit_one, &fit_all, 5)?;
    fit.calls = u64::from(rounds - 1) * fit_modules as u64;
    // Memory cycled once first: from then on every call of the attack finds its module gone.
    time_block(world, &attack_one, 1)?;
    let before = runtime.stats().loaded;
    let mut attack = extra(world, &attack_one, &attack_all, 3)?;
    attack.calls = u64::from(rounds - 1) * k as u64;
    let loads = runtime.stats().loaded - before;
    // Three runs of one round and three of all rounds: every call loads, and the looper at
    // most once a transaction.
    let calls = 3 * (k as u64 + u64::from(rounds) * k as u64);
    if loads < calls {
        bail!("{loads} loads from the disk cache for {calls} calls: not every call found its module gone");
    }
    let cache = runtime.disk_cache();
    runtime.set_disk_cache(None);
    let uncached = (|| {
        time_block(world, &attack_one, 1)?;
        extra(world, &attack_one, &attack_all, 1)
    })();
    for code in &codes {
        runtime.wait(keccak256(code));
    }
    runtime.set_disk_cache(cache);
    let mut uncached = uncached?;
    uncached.calls = u64::from(rounds - 1) * k as u64;
    Ok(LoopRuns { attack, fit, uncached, fit_modules })
}

fn module(name: &str) -> Result<Vec<u8>> {
    rust_module(name).map_err(|e| anyhow!(e))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Executes `txs` as the next block on the sequential executor; returns its output and time.
fn exec(world: &World, txs: &[RecoveredTx]) -> Result<(BlockOutput, Duration)> {
    let env = world.block_env(Address::from([0xbe; 20]));
    let t = Instant::now();
    let out =
        execute_sequential(&world.state, &world.chain, &env, txs).map_err(|e| anyhow!("{e}"))?;
    Ok((out, t.elapsed()))
}

/// Executes and commits `txs`, requiring every one to succeed.
fn commit(world: &mut World, txs: Vec<RecoveredTx>) -> Result<BlockOutput> {
    let (out, _) = exec(world, &txs)?;
    if let Some(t) = out.txs.iter().find(|t| t.status != TxStatus::Success) {
        bail!("setup transaction failed: {t:?}");
    }
    world.commit(&out);
    Ok(out)
}

/// Deploys WASM contract `code` and waits until its module is compiled, so that what follows
/// measures the compiled tier rather than the interpreter that runs calls until then.
fn deploy_compiled(world: &mut World, code: &[u8]) -> Result<Address> {
    let addr = deploy(world, deploy_code(code))?;
    WasmRuntime::global().map_err(|e| anyhow!("{e}"))?.wait(keccak256(code));
    Ok(addr)
}

fn deploy(world: &mut World, initcode: Vec<u8>) -> Result<Address> {
    let from = world.users[0];
    let (addr, tx) = world.deploy(from, initcode.into(), 16_000_000);
    commit(world, vec![tx])?;
    Ok(addr)
}

fn deploy_sol(world: &mut World, name: &str, args: Vec<u8>) -> Result<Address> {
    let mut code = creation_code(name).map_err(|e| anyhow!(e))?.to_vec();
    code.extend(args);
    deploy(world, code)
}

/// The same call from `n` users (one transaction each).
fn calls(world: &mut World, to: Address, data: &[u8], n: usize, gas: u64) -> Vec<RecoveredTx> {
    (0..n)
        .map(|i| {
            let from = world.users[i % world.users.len()];
            world.call(from, to, U256::ZERO, data.to_vec(), gas, Flavor::DynamicFee, 1)
        })
        .collect()
}

/// Median time of `runs` executions of `txs`; all must succeed.
fn time_block(world: &World, txs: &[RecoveredTx], runs: usize) -> Result<(BlockOutput, Duration)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let (out, t) = exec(world, txs)?;
        if let Some(t) = out.txs.iter().find(|t| t.status != TxStatus::Success) {
            bail!("benchmark transaction failed: {t:?}");
        }
        times.push(t);
        last = Some(out);
    }
    let out = last.ok_or_else(|| anyhow!("no runs"))?;
    Ok((out, median(&mut times)))
}

fn compute(world: &mut World, quick: bool, runs: usize) -> Result<()> {
    let (steps, n) = if quick { (64, 8) } else { (128, 32) };
    progress(format!("wasm.compute: {n} option pricings of {steps} steps per block"));
    let wasm = deploy_compiled(world, &contract_code(&module("option_pricer")?))?;
    let evm = deploy_sol(world, "OptionPricer", vec![])?;
    let input = option_price_input(steps);
    let saved = world.nonces();
    let wasm_txs = calls(world, wasm, &input, n, 16_000_000);
    world.set_nonces(saved.clone());
    let evm_txs = calls(world, evm, &input, n, 16_000_000);
    world.set_nonces(saved);
    let (w_out, w_time) = time_block(world, &wasm_txs, runs)?;
    let (e_out, e_time) = time_block(world, &evm_txs, runs)?;
    for (a, b) in w_out.txs.iter().zip(&e_out.txs) {
        if a.output != b.output {
            bail!("the pricers disagree: wasm {:?}, evm {:?}", a.output, b.output);
        }
    }
    let per_s = |t: Duration| n as f64 / t.as_secs_f64();
    let params = json!({"steps": steps, "calls_per_block": n, "runs": runs, "goal_ratio": 10});
    BenchResult::new(
        "wasm.compute.option_pricer",
        per_s(w_time),
        per_s(e_time),
        "calls/s",
        Better::Higher,
        params,
    )
    .print()?;
    let gas = |o: &BlockOutput| o.txs.first().map_or(0, |t| t.gas_used) as f64;
    BenchResult::new(
        "wasm.compute.gas_per_call",
        gas(&w_out),
        gas(&e_out),
        "gas",
        Better::Lower,
        json!({"steps": steps}),
    )
    .print()
}

fn call_overhead(world: &mut World, quick: bool, runs: usize) -> Result<()> {
    let n: u64 = if quick { 200 } else { 1_000 };
    progress(format!("wasm.call: {n} calls from a Solidity loop"));
    let empty_wasm = wat_module(r#"(module (memory (export "memory") 1) (func (export "call")))"#)?;
    let wasm = deploy_compiled(world, &contract_code(&empty_wasm))?;
    // STOP: the smallest EVM contract.
    let evm = deploy(world, deploy_code(&[0x00]))?;
    let looper = deploy_sol(world, "CallLoop", vec![])?;
    let time = |world: &mut World, target: Address| -> Result<Duration> {
        let saved = world.nonces();
        let data = runCall { target, n: U256::from(n), data: Default::default() }.abi_encode();
        let txs = calls(world, looper, &data, 1, 16_000_000);
        world.set_nonces(saved);
        let (out, t) = time_block(world, &txs, runs)?;
        if out.txs[0].output != U256::from(n).abi_encode() {
            bail!("not every call succeeded: {:?}", out.txs[0]);
        }
        Ok(t)
    };
    let w = time(world, wasm)?;
    let e = time(world, evm)?;
    let per_call = |t: Duration| us(t) / n as f64;
    BenchResult::new(
        "wasm.call.evm_to_wasm",
        per_call(w),
        per_call(e),
        "us/call",
        Better::Lower,
        json!({"calls": n, "runs": runs, "baseline": "EVM->EVM call to a STOP contract", "goal_us": 5}),
    )
    .print()?;
    // The other way: a WASM loop making the same calls through the host `call` (kind 0, no
    // value, no input, 10,000 gas each), halting if one fails.
    let target: String = evm.as_slice().iter().map(|b| format!("\\{b:02x}")).collect();
    let wasm_loop = wat_module(&format!(
        r#"(module
             (import "farol" "call" (func $call (param i32 i32 i32 i32 i32 i64) (result i32)))
             (memory (export "memory") 1)
             (data (i32.const 0) "{target}")
             (func (export "call") (local $i i32)
               (loop $l
                 (if (i32.eqz (call $call (i32.const 0) (i32.const 0) (i32.const 64) (i32.const 128)
                                          (i32.const 0) (i64.const 10000)))
                   (then unreachable))
                 (local.set $i (i32.add (local.get $i) (i32.const 1)))
                 (br_if $l (i32.lt_u (local.get $i) (i32.const {n}))))))"#
    ))?;
    let caller = deploy_compiled(world, &contract_code(&wasm_loop))?;
    let saved = world.nonces();
    let txs = calls(world, caller, &[], 1, 16_000_000);
    world.set_nonces(saved);
    let (_, from_wasm) = time_block(world, &txs, runs)?;
    BenchResult::new(
        "wasm.call.wasm_to_evm",
        per_call(from_wasm),
        per_call(e),
        "us/call",
        Better::Lower,
        json!({"calls": n, "runs": runs, "baseline": "EVM->EVM call to a STOP contract (the Solidity loop above)"}),
    )
    .print()
}

fn wat_module(src: &str) -> Result<Vec<u8>> {
    wat::parse_str(src).map_err(|e| anyhow!("{e}"))
}

/// A distinct copy of `module`: a custom section holding `nonce` changes the code hash (so
/// nothing is cached) and nothing else.
fn with_nonce(module: &[u8], nonce: u64) -> Vec<u8> {
    let mut m = module.to_vec();
    let name = b"farol-bench-nonce";
    let payload = 1 + name.len() + 8;
    m.push(0);
    m.push(payload as u8);
    m.push(name.len() as u8);
    m.extend_from_slice(name);
    m.extend_from_slice(&nonce.to_le_bytes());
    m
}

fn first_call(world: &mut World, samples: usize) -> Result<()> {
    progress(format!("wasm.first_call: {samples} fresh deployments per case"));
    let runtime = WasmRuntime::global().map_err(|e| anyhow!("{e}"))?;
    let erc20 = module("erc20")?;
    let caller = world.users[1];
    let query = balanceOfCall { owner: caller }.abi_encode();
    let mut compiled = Vec::new();
    let mut compiling = Vec::new();
    let mut compile_times = Vec::new();
    let mut second = Vec::new();
    let mut compiled_frames = Vec::new();
    let mut compiling_frames = Vec::new();
    let mut second_frames = Vec::new();
    let mut deploys = Vec::new();
    let mut unready = Vec::new();
    let mut unready_frames = Vec::new();
    let interpreted_before = runtime.stats().interpreted;
    let ready_before = runtime.stats().ready_calls;
    for i in 0..samples as u64 {
        for (waits, into) in [(true, &mut compiled), (false, &mut compiling)] {
            let code = contract_code(&with_nonce(&erc20, i * 2 + waits as u64));
            let hash = keccak256(&code);
            let started = Instant::now();
            let token = deploy(world, deploy_code(&code))?;
            if waits {
                runtime.wait(hash);
                compile_times.push(started.elapsed());
            } else {
                deploys.push(started.elapsed());
            }
            let saved = world.nonces();
            let txs = calls(world, token, &query, 1, 1_000_000);
            world.set_nonces(saved);
            let (t, frame) = timed_frames(world, runtime, &txs)?;
            into.push(t);
            if waits {
                compiled_frames.push(frame);
                let (again, frame) = timed_frames(world, runtime, &txs)?;
                second_frames.push(frame);
                second.push(again);
            } else {
                compiling_frames.push(frame);
                if runtime.is_ready(hash) {
                    bail!("the module was compiled before its first call: nothing measured");
                }
            }
        }
        // The same compiled first call without ready instances (every call instantiates and
        // drops its own instance), interleaved with the above so drift falls on both.
        let ready = runtime.ready_instances();
        runtime.set_ready_instances(false);
        let txs = compiled_copy(world, runtime, &erc20, 1_000_000 + i, &query, 1);
        let timed = txs.and_then(|txs| timed_frames(world, runtime, &txs));
        runtime.set_ready_instances(ready);
        let (t, frame) = timed?;
        unready.push(t);
        unready_frames.push(frame);
    }
    let interpreted = runtime.stats().interpreted - interpreted_before;
    let ready_calls = runtime.stats().ready_calls - ready_before;
    // The baselines: the first call to a fresh OpenZeppelin ERC-20 right after its deployment
    // (as the `compiling` case calls), and after a WASM module compiled meanwhile on another
    // thread (as the `compiled` case calls: the compiler has pushed the caller's working set
    // out of the caches, which costs any first call about 100 µs on this machine).
    let (mut evm_hot, mut evm_cold) = (Vec::new(), Vec::new());
    for i in 0..samples as u64 {
        for cold in [false, true] {
            let args = ("Token".to_string(), "TKN".to_string(), U256::from(1_000_000u64))
                .abi_encode_params();
            let token = deploy_sol(world, "FarolToken", args)?;
            if cold {
                compiled_copy(world, runtime, &erc20, 2_000_000 + i, &query, 0)?;
            }
            let saved = world.nonces();
            let txs = calls(world, token, &query, 1, 1_000_000);
            world.set_nonces(saved);
            let (_, t) = time_block(world, &txs, 1)?;
            if cold { &mut evm_cold } else { &mut evm_hot }.push(t);
        }
    }
    let (evm_hot, evm_cold) = (us(median(&mut evm_hot)), us(median(&mut evm_cold)));
    let params = |goal: u64, frames: &mut Vec<Duration>| {
        json!({
            "frame_us_median": us(median(frames)),
            "second_frame_us_median": us(median(&mut second_frames.clone())),
            "module_bytes": erc20.len(),
            "samples": samples,
            "measured": "one block with the one call (sequential executor)",
            "baseline": "the first call to OpenZeppelin's ERC-20 on the EVM, under the same conditions",
            "evm_block_us_median": {"right_after_deployment": evm_hot, "after_a_compilation": evm_cold},
            "deployed_to_compiled_us_median": us(median(&mut compile_times.clone())),
            "second_call_us": us(median(&mut second.clone())),
            "deploy_block_us_median": us(median(&mut deploys.clone())),
            "interpreted_calls": interpreted,
            "ready_instance_calls": ready_calls,
            "without_ready_instances": {
                "frame_us_median": us(median(&mut unready_frames.clone())),
                "block_us_median": us(median(&mut unready.clone())),
            },
            "goal_us": goal,
        })
    };
    BenchResult::new(
        "wasm.first_call.compiled",
        us(median(&mut compiled)),
        evm_cold,
        "us",
        Better::Lower,
        params(50, &mut compiled_frames),
    )
    .print()?;
    BenchResult::new(
        "wasm.first_call.compiling",
        us(median(&mut compiling)),
        evm_hot,
        "us",
        Better::Lower,
        params(950, &mut compiling_frames),
    )
    .print()
}

/// Times one block of `txs`: the whole block, and the time inside WASM frames.
fn timed_frames(
    world: &World,
    runtime: &WasmRuntime,
    txs: &[RecoveredTx],
) -> Result<(Duration, Duration)> {
    let before = runtime.stats().call_time;
    let (_, t) = time_block(world, txs, 1)?;
    Ok((t, runtime.stats().call_time.saturating_sub(before)))
}

/// Deploys a copy of `module` made new to every cache by `nonce`, waits until it is compiled,
/// and returns `n` calls of `query` to it, not yet run.
fn compiled_copy(
    world: &mut World,
    runtime: &WasmRuntime,
    module: &[u8],
    nonce: u64,
    query: &[u8],
    n: usize,
) -> Result<Vec<RecoveredTx>> {
    let code = contract_code(&with_nonce(module, nonce));
    let token = deploy(world, deploy_code(&code))?;
    runtime.wait(keccak256(&code));
    let saved = world.nonces();
    let txs = calls(world, token, query, n, 1_000_000);
    world.set_nonces(saved);
    Ok(txs)
}

/// A block of `n` calls to one compiled Rust ERC-20, with ready instances and without: a
/// module called again right away finds none and instantiates, so this must not be slower.
fn repeated_call(world: &mut World, n: usize, runs: usize) -> Result<()> {
    progress(format!("wasm.repeated_call: blocks of {n} calls to one contract"));
    let runtime = WasmRuntime::global().map_err(|e| anyhow!("{e}"))?;
    let erc20 = module("erc20")?;
    let query = balanceOfCall { owner: world.users[1] }.abi_encode();
    let ready = runtime.ready_instances();
    let mut per_call = [Vec::new(), Vec::new()];
    // Alternating, so that drift in the machine's speed falls on both sides.
    for round in 0..2 * runs as u64 {
        let on = round % 2 == 0;
        runtime.set_ready_instances(on);
        let txs = compiled_copy(world, runtime, &erc20, 3_000_000 + round, &query, n)?;
        let (_, t) = time_block(world, &txs, 1)?;
        per_call[usize::from(!on)].push(t / n as u32);
    }
    runtime.set_ready_instances(ready);
    let [mut with, mut without] = per_call;
    BenchResult::new(
        "wasm.repeated_call",
        us(median(&mut with)),
        us(median(&mut without)),
        "us/call",
        Better::Lower,
        json!({"calls_per_block": n, "blocks": runs, "measured": "a block of balanceOf calls to one freshly compiled Rust ERC-20", "baseline": "the same without ready instances"}),
    )
    .print()
}

fn fuel(quick: bool, runs: usize) -> Result<()> {
    let steps = if quick { 128 } else { 256 };
    progress(format!("wasm.fuel: one pricing of {steps} steps, metered and not"));
    let m = module("option_pricer")?;
    let input = option_price_input(steps);
    let runs = runs.max(5);
    let (out_m, mut metered) =
        time_standalone(&m, &input, true, runs).map_err(|e| anyhow!("{e}"))?;
    let (out_u, mut plain) =
        time_standalone(&m, &input, false, runs).map_err(|e| anyhow!("{e}"))?;
    if out_m != out_u {
        bail!("metering changed the result");
    }
    BenchResult::new(
        "wasm.fuel",
        us(median(&mut metered)),
        us(median(&mut plain)),
        "us",
        Better::Lower,
        json!({"steps": steps, "runs": runs, "baseline": "the same module without fuel metering", "goal_max_overhead": 2.0}),
    )
    .print()
}
