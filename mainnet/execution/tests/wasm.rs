//! WASM contracts end to end: deployment, calls, gas, and hostile modules. Every block runs on
//! the sequential executor and the parallel one, which must agree.

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{Revert, SolError};
use farol_execution::wasm::{contract_code, deploy_code, FUEL_PER_GAS};
use farol_execution::workload::{Flavor, World, WorldSpec};
use farol_execution::{
    execute_sequential, BlockOutput, ParallelConfig, ParallelExecutor, RecoveredTx, StateView,
    TxStatus,
};

fn world() -> World {
    World::new(WorldSpec { users: 8, token_holders: 0, swappers: 0, tokens: 1, pools: 0, kits: 0 })
        .unwrap_or_else(|e| panic!("setting up the world: {e}"))
}

/// Runs `txs` as the next block on both executors, asserts they agree, commits it.
fn block(world: &mut World, txs: Vec<RecoveredTx>) -> BlockOutput {
    let env = world.block_env(Address::from([0xbe; 20]));
    let seq = execute_sequential(&world.state, &world.chain, &env, &txs)
        .unwrap_or_else(|e| panic!("sequential: {e}"));
    for threads in [2, 4] {
        let par = ParallelExecutor::new(ParallelConfig::always_parallel(threads))
            .execute(&world.state, &world.chain, &env, &txs)
            .map(|(o, _)| o)
            .unwrap_or_else(|e| panic!("parallel: {e}"));
        assert_eq!(par, seq, "{threads} threads");
    }
    world.commit(&seq);
    seq
}

fn wat(src: &str) -> Vec<u8> {
    wat::parse_str(src).unwrap_or_else(|e| panic!("bad test module: {e}"))
}

/// Deploys `module` from user 0 and returns the contract's address.
fn deploy(world: &mut World, module: &[u8]) -> Address {
    let from = world.users[0];
    let (addr, tx) = world.deploy(from, deploy_code(&contract_code(module)).into(), 16_000_000);
    let out = block(world, vec![tx]);
    assert_eq!(out.txs[0].status, TxStatus::Success, "deployment: {:?}", out.txs[0]);
    addr
}

fn call(world: &mut World, to: Address, data: Vec<u8>, gas: u64) -> RecoveredTx {
    let from = world.users[1];
    world.call(from, to, U256::ZERO, data, gas, Flavor::DynamicFee, 1)
}

const STORE: &str = r#"
(module
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "sstore" (func $sstore (param i32 i32)))
  (import "farol" "sload" (func $sload (param i32 i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (call $cd (i32.const 32) (i32.const 0) (i32.const 32))
    (call $sstore (i32.const 0) (i32.const 32))
    (call $sload (i32.const 0) (i32.const 64))
    (call $exit (i32.const 0) (i32.const 64) (i32.const 32))))
"#;

#[test]
fn a_wasm_contract_stores_and_returns() {
    let mut w = world();
    let addr = deploy(&mut w, &wat(STORE));
    let value = U256::from(0xfa201u64);
    let tx = call(&mut w, addr, value.to_be_bytes::<32>().to_vec(), 100_000);
    let out = block(&mut w, vec![tx]);
    let t = &out.txs[0];
    assert_eq!(t.status, TxStatus::Success, "{t:?}");
    assert_eq!(t.output, Bytes::from(value.to_be_bytes::<32>().to_vec()));
    assert_eq!(w.state.storage(addr, U256::ZERO).ok(), Some(value));
    // 21,000 intrinsic + calldata + a cold SSTORE of a new slot (22,100) + a warm SLOAD, plus
    // the page of memory and a few dozen operators.
    assert!(t.gas_used > 21_000 + 22_100 && t.gas_used < 21_000 + 22_100 + 2_000, "{}", t.gas_used);
}

#[test]
fn an_invalid_module_fails_deployment_with_a_reason() {
    let mut w = world();
    let module = wat(
        r#"(module (import "farol" "no_such_function" (func)) (memory (export "memory") 1) (func (export "call")))"#,
    );
    let from = w.users[0];
    let (addr, tx) = w.deploy(from, deploy_code(&contract_code(&module)).into(), 5_000_000);
    let out = block(&mut w, vec![tx]);
    let t = &out.txs[0];
    assert_eq!(t.status, TxStatus::Revert, "{t:?}");
    let reason = Revert::abi_decode(&t.output).map(|r| r.reason).unwrap_or_default();
    assert!(reason.contains("farol.no_such_function does not exist"), "{reason}");
    assert!(w.state.account(addr).ok().flatten().is_none());
}

#[test]
fn an_infinite_loop_runs_out_of_gas() {
    let mut w = world();
    let addr = deploy(
        &mut w,
        &wat(r#"(module (memory (export "memory") 1) (func (export "call") (loop $l (br $l))))"#),
    );
    let tx = call(&mut w, addr, vec![], 200_000);
    let out = block(&mut w, vec![tx]);
    assert!(matches!(out.txs[0].status, TxStatus::Halt(_)), "{:?}", out.txs[0]);
    assert_eq!(out.txs[0].gas_used, 200_000);
    let _ = FUEL_PER_GAS;
}
