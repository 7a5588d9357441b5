//! The on-disk cache of compiled WASM modules (its own test binary: it points the process's
//! one runtime at a temporary directory).

use std::sync::Mutex;

use alloy_primitives::{keccak256, Address, U256};
use alloy_sol_types::{sol, SolCall};
use farol_execution::wasm::{contract_code, deploy_code, transient, TierChoice, WasmRuntime};
use farol_execution::workload::{rust_module, Flavor, World, WorldSpec};
use farol_execution::{
    execute_sequential, BlockOutput, ParallelConfig, ParallelExecutor, RecoveredTx, TxStatus,
};

/// The tests point the process's one runtime at their own folders: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The process's runtime with its disk cache in a fresh folder, for this test alone (hold
/// the guard).
fn cache_on() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir, &'static WasmRuntime) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    rt.set_disk_cache(Some(dir.path().to_path_buf()));
    (serial, dir, rt)
}

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "cwasm") {
            found.push(entry);
        }
    }
    found
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn compiled_modules_are_kept_on_disk_and_a_bad_file_is_recompiled() {
    let (_serial, dir, rt) = cache_on();
    let module = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "call")) (func $unique (drop (i32.const 4242))))"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let code = contract_code(&module);

    let before = rt.stats();
    let hash = rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(hash);
    assert!(rt.is_ready(hash));
    assert_eq!(rt.stats().compiled, before.compiled + 1);
    let files = cwasm_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(rt.cache_file(hash).as_ref(), Some(&files[0]));
    let name = files[0].file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    assert_eq!(name, format!("{hash:x}.cwasm"));
    // Its folder is named by the build's rules too: another build's gas rules never load here.
    let folder = files[0]
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rules = folder.rsplit('-').next().unwrap_or_default();
    assert!(rules.len() == 16 && rules.chars().all(|c| c.is_ascii_hexdigit()), "{folder}");

    // Out of memory, back from disk: loaded, not compiled.
    rt.forget(hash);
    assert!(!rt.is_ready(hash));
    let mid = rt.stats();
    rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(hash);
    assert!(rt.is_ready(hash));
    assert_eq!((rt.stats().loaded, rt.stats().compiled), (mid.loaded + 1, mid.compiled));

    // A damaged file fails the checks and the module is compiled again: garbage, a file cut
    // short, one byte changed in the code hash, in the `ModuleInfo` or in the machine code
    // (the checksum), and a whole file of another module under this one's name.
    let good = std::fs::read(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    let flipped = |at: usize| {
        let mut f = good.clone();
        f[at] ^= 1;
        f
    };
    let other = contract_code(
        &wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "call")))"#)
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let other_hash = rt.deploy(&other).unwrap_or_else(|e| panic!("{e}"));
    rt.wait(other_hash);
    let other_file = rt.cache_file(other_hash).unwrap_or_else(|| panic!("the cache is on"));
    let other_bytes = std::fs::read(other_file).unwrap_or_else(|e| panic!("{e}"));
    for damaged in [
        b"not a compiled module".to_vec(),
        good[..good.len() / 2].to_vec(),
        flipped(8),
        flipped(40),
        flipped(good.len() - 1),
        other_bytes,
    ] {
        std::fs::write(&files[0], &damaged).unwrap_or_else(|e| panic!("{e}"));
        rt.forget(hash);
        let late = rt.stats();
        rt.deploy(&code).unwrap_or_else(|e| panic!("{e}"));
        rt.wait(hash);
        assert!(rt.is_ready(hash));
        assert_eq!((rt.stats().loaded, rt.stats().compiled), (late.loaded, late.compiled + 1));
        // And written again, whole.
        assert_eq!(std::fs::read(&files[0]).unwrap_or_else(|e| panic!("{e}")), good);
    }

    // Turning the cache on removes other builds' folders and writes left half done, and
    // keeps this build's files.
    let folder = files[0].parent().unwrap_or_else(|| panic!("a folder")).to_path_buf();
    let old = dir.path().join("wasmtime-0.0.0-0000000000000000-0000000000000000");
    std::fs::create_dir_all(&old).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(old.join(format!("{hash:x}.cwasm")), &good).unwrap_or_else(|e| panic!("{e}"));
    let half = folder.join(format!("{hash:x}.tmp1-2"));
    std::fs::write(&half, b"half").unwrap_or_else(|e| panic!("{e}"));
    // Left by a write an hour ago; one being written now (younger than a minute) stays.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&half)
        .and_then(|f| f.set_modified(hour_ago))
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh = folder.join(format!("{hash:x}.tmp1-3"));
    std::fs::write(&fresh, b"being written").unwrap_or_else(|e| panic!("{e}"));
    rt.set_disk_cache(Some(dir.path().to_path_buf()));
    // On a thread of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while (old.exists() || half.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!old.exists() && !half.exists());
    assert!(files[0].exists() && fresh.exists());
    rt.set_disk_cache(None);
}

sol! {
    interface IToken {
        function transfer(address to, uint256 amount) external returns (bool);
        function initialize(uint256 supply) external;
    }
}

/// Runs `txs` as the next block on the sequential executor, without committing it.
fn run(world: &World, txs: &[RecoveredTx]) -> BlockOutput {
    let env = world.block_env(Address::from([0xbe; 20]));
    execute_sequential(&world.state, &world.chain, &env, txs)
        .unwrap_or_else(|e| panic!("sequential: {e}"))
}

/// A module that left memory comes back compiled from the disk cache on its next call,
/// without validation, rewrite or translation for the interpreter (since stop 44: before, the
/// call paid all three, about 3 ms for this 41 KiB module, and ran on the interpreter), and
/// every block's output is the same as with the module in memory, on either tier, on the
/// parallel executor, and with the cache off.
#[test]
fn a_module_that_left_memory_comes_back_compiled_from_disk_with_the_same_results() {
    let (_serial, _dir, rt) = cache_on();
    rt.set_tier(TierChoice::Auto);
    let mut w = World::new(WorldSpec {
        users: 8,
        token_holders: 0,
        swappers: 0,
        tokens: 1,
        pools: 0,
        kits: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let code = contract_code(&rust_module("erc20").unwrap_or_else(|e| panic!("{e}")));
    let hash = keccak256(&code);
    let from = w.users[0];
    let (token, tx) = w.deploy(from, deploy_code(&code).into(), 16_000_000);
    let init = IToken::initializeCall { supply: U256::from(1_000_000u64) }.abi_encode();
    let init = w.call(from, token, U256::ZERO, init, 2_000_000, Flavor::DynamicFee, 1);
    for tx in [tx, init] {
        let out = run(&w, &[tx]);
        assert_eq!(out.txs[0].status, TxStatus::Success, "{:?}", out.txs[0]);
        w.commit(&out);
    }
    rt.wait(hash);
    assert!(rt.cache_file(hash).is_some_and(|f| f.exists()));
    let to = w.users[3];
    let transfer = IToken::transferCall { to, amount: U256::from(7u64) }.abi_encode();
    let txs = vec![w.call(from, token, U256::ZERO, transfer, 2_000_000, Flavor::DynamicFee, 1)];
    let expected = run(&w, &txs);
    assert_eq!(expected.txs[0].status, TxStatus::Success, "{:?}", expected.txs[0]);

    // Compiled tier: loaded, ready at once, nothing validated, compiled or interpreted.
    rt.forget(hash);
    let before = rt.stats();
    assert_eq!(run(&w, &txs), expected);
    let after = rt.stats();
    assert!(rt.is_ready(hash), "the call did not leave the module compiled in memory");
    assert_eq!(after.loaded, before.loaded + 1);
    assert_eq!((after.compiled, after.interpreted), (before.compiled, before.interpreted));

    // Interpreter tier: loaded, and its interpreter form made for the call.
    rt.forget(hash);
    rt.set_tier(TierChoice::Interpreter);
    let before = rt.stats();
    let interpreted = run(&w, &txs);
    rt.set_tier(TierChoice::Auto);
    assert_eq!(interpreted, expected);
    let after = rt.stats();
    assert_eq!(after.loaded, before.loaded + 1);
    assert_eq!(after.interpreted, before.interpreted + 1);

    // Work no block depends on (an `eth_call`): loaded compiled for that work alone, once
    // for its two calls; not kept, and given no ready instance.
    rt.forget(hash);
    let before = rt.stats();
    let (a, b) = transient(|| (run(&w, &txs), run(&w, &txs)));
    assert_eq!((a, b), (expected.clone(), expected.clone()));
    let after = rt.stats();
    assert_eq!(after.loaded, before.loaded + 1);
    assert_eq!((after.interpreted, after.transient), (before.interpreted, before.transient));
    assert!(!rt.holds(hash), "transient work kept the module");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(rt.stats().prepared, before.prepared, "a ready instance was made for it");
    assert_eq!(rt.transient_frames(), 0);

    // The parallel executor.
    rt.forget(hash);
    let env = w.block_env(Address::from([0xbe; 20]));
    let (par, _) = ParallelExecutor::new(ParallelConfig::always_parallel(2))
        .execute(&w.state, &w.chain, &env, &txs)
        .unwrap_or_else(|e| panic!("parallel: {e}"));
    assert_eq!(par, expected);

    // A file that fails the checks: validated again on the call, the same result, and the
    // file written anew. One changed byte of its `ModuleInfo` (which the frame's gas uses)
    // fails the checksum.
    let file = rt.cache_file(hash).unwrap_or_else(|| panic!("the cache is on"));
    let good = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let mut wrong_info = good.clone();
    wrong_info[40] ^= 1;
    for damaged in [b"FAROLWM2 damaged".to_vec(), wrong_info] {
        std::fs::write(&file, damaged).unwrap_or_else(|e| panic!("{e}"));
        rt.forget(hash);
        let before = rt.stats();
        assert_eq!(run(&w, &txs), expected);
        rt.wait(hash);
        assert_eq!(rt.stats().loaded, before.loaded);
        assert_eq!(std::fs::read(&file).unwrap_or_else(|e| panic!("{e}")), good);
    }

    // With the cache off, as every call to a module that left memory was before.
    rt.set_disk_cache(None);
    rt.forget(hash);
    assert_eq!(run(&w, &txs), expected);
    rt.wait(hash);
}
