//! Ready instances: which modules get one, and the bound on how many hold one (its own test
//! binary: it counts the process's one runtime's instances).

use farol_execution::wasm::{contract_code, WasmRuntime, READY_LIMIT, READY_MAX_PAGES};

/// Held by each test: they count and evict the one runtime's instances.
static RUNTIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn module(pages: u64, n: usize) -> Vec<u8> {
    let src = format!(
        r#"(module (memory (export "memory") {pages}) (func (export "call")) (func (drop (i32.const {n}))))"#
    );
    contract_code(&wat::parse_str(src).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn compiled_modules_keep_one_ready_instance_within_bounds() {
    let _runtime = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    rt.set_ready_instances(true);
    let deploy = |code: &[u8]| {
        let hash = rt.deploy(code).unwrap_or_else(|e| panic!("{e}"));
        rt.wait(hash);
        assert!(rt.is_ready(hash));
        hash
    };

    // The compile thread leaves one ready instance.
    let first = deploy(&module(1, 0));
    assert!(rt.is_prepared(first));

    // A module with a large initial memory gets none: it instantiates at its calls.
    let big = deploy(&module(READY_MAX_PAGES + 1, 0));
    assert!(!rt.is_prepared(big));

    // Past the limit the least recently prepared module gives its up.
    let mut last = first;
    for n in 1..=READY_LIMIT {
        last = deploy(&module(1, n));
        assert!(rt.stats().prepared <= READY_LIMIT as u64);
    }
    assert!(rt.is_prepared(last));
    assert!(!rt.is_prepared(first), "the oldest kept its instance");
    assert_eq!(rt.stats().prepared, READY_LIMIT as u64);

    // Forgetting a module drops its instance; turning them off drops them all.
    rt.forget(last);
    assert!(!rt.is_prepared(last));
    assert_eq!(rt.stats().prepared, READY_LIMIT as u64 - 1);
    rt.set_ready_instances(false);
    assert_eq!(rt.stats().prepared, 0);
    let off = deploy(&module(1, 10_000));
    assert!(!rt.is_prepared(off));
    rt.set_ready_instances(true);
}

/// Counts its calls in memory and in a global, and returns both counts: every call runs on
/// a fresh instance, so both are always 1.
const FRESH: &str = r#"
(module
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 0))
  (func (export "call")
    (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
    (global.set $g (i32.add (global.get $g) (i32.const 1)))
    (i32.store (i32.const 4) (global.get $g))
    (call $exit (i32.const 0) (i32.const 0) (i32.const 8))))
"#;

/// A call takes the module's ready instance, which has never run, and the helper thread
/// makes the next.
#[test]
fn a_call_takes_the_ready_instance_and_the_helper_makes_the_next() {
    let _runtime = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    use alloy_primitives::{keccak256, Address, U256};
    use farol_execution::wasm::deploy_code;
    use farol_execution::workload::{Flavor, World, WorldSpec};
    use farol_execution::{execute_sequential, TxStatus};

    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    // Ready instances are the compiled tier's (`FAROL_WASM_TIER` may say otherwise).
    rt.set_tier(farol_execution::wasm::TierChoice::Compiled);
    rt.set_ready_instances(true);
    let spec = WorldSpec { users: 2, token_holders: 0, swappers: 0, tokens: 0, pools: 0, kits: 0 };
    let mut w = World::new(spec).unwrap_or_else(|e| panic!("{e}"));
    let run = |w: &mut World, tx| {
        let env = w.block_env(Address::from([0xbe; 20]));
        let out =
            execute_sequential(&w.state, &w.chain, &env, &[tx]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.txs[0].status, TxStatus::Success, "{:?}", out.txs[0]);
        w.commit(&out);
        out.txs[0].output.clone()
    };
    let code = contract_code(&wat::parse_str(FRESH).unwrap_or_else(|e| panic!("{e}")));
    let from = w.users[0];
    let (token, tx) = w.deploy(from, deploy_code(&code).into(), 1_000_000);
    run(&mut w, tx);
    let hash = keccak256(&code);
    rt.wait(hash);
    assert!(rt.is_prepared(hash));
    let before = rt.stats().ready_calls;
    let once = [1u8, 0, 0, 0, 1, 0, 0, 0];
    let call = |w: &mut World| {
        let tx = w.call(w.users[1], token, U256::ZERO, vec![], 100_000, Flavor::DynamicFee, 1);
        assert_eq!(run(w, tx).as_ref(), once.as_slice());
    };
    call(&mut w);
    assert_eq!(rt.stats().ready_calls, before + 1);
    let refilled = (0..400).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(5));
        rt.is_prepared(hash)
    });
    assert!(refilled, "the helper did not make the next instance");
    // On the instance the helper made, then on instances made at the call.
    for _ in 0..3 {
        call(&mut w);
    }
    assert!(rt.stats().ready_calls >= before + 2);
}
