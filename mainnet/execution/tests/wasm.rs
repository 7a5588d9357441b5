//! WASM contracts end to end: deployment, calls, gas, and hostile modules. Every block runs on
//! the sequential executor and the parallel one, which must agree.

use alloy_primitives::{keccak256, Address, Bytes, U256};
use alloy_sol_types::{sol, Revert, SolCall, SolError, SolEvent, SolValue};
use farol_execution::wasm::{contract_code, deploy_code};
use farol_execution::workload::{
    creation_code, option_price_input, rust_module, Flavor, World, WorldSpec,
};
use farol_execution::{
    execute_sequential, BlockOutput, ParallelConfig, ParallelExecutor, Partition, RecoveredTx,
    StateView, TxStatus,
};
use revm::primitives::KECCAK_EMPTY;

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
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let par = ParallelExecutor::new(ParallelConfig::always_partitioned(threads, mode))
                .execute(&world.state, &world.chain, &env, &txs)
                .map(|(o, _)| o)
                .unwrap_or_else(|e| panic!("partitioned {mode:?}: {e}"));
            assert_eq!(par, seq, "{threads} threads, partitioned {mode:?}");
        }
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
    // The node's work on the refused module is paid per byte before the revert returns the
    // rest (before stop 43 all of it came back; the init code's calldata is 16 gas a byte).
    let code = contract_code(&module).len() as u64;
    let paid = 21_000 + 32_000 + farol_execution::wasm::REFUSED_BYTE_GAS * code;
    assert!(t.gas_used >= paid && t.gas_used < paid + 30 * code + 1_000, "{} {paid}", t.gas_used);
}

/// A creation revm fails after its init code returns (no gas left for the code deposit)
/// has its module neither validated nor compiled: it ends out of gas, an invalid module too
/// (not with validation's revert), and the runtime does not hold the module. Before stop 38
/// every returned module was validated and compiled first, and kept, for what the init code
/// cost; before stop 40 that was still so under Amsterdam, whose deposit is state gas
/// (EIP-8037) and whose regular deposit costs nothing.
#[test]
fn a_module_whose_deposit_is_not_paid_is_not_compiled() {
    let rt = farol_execution::wasm::WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    // Each spec deploys modules of its own: the runtime's cache is shared by the process.
    for (spec, unique) in [(None, 97531), (Some(farol_execution::SpecId::AMSTERDAM), 97532)] {
        let mut w = world();
        if let Some(spec) = spec {
            w.chain.spec = spec;
        }
        let padded = |extra: &str| {
            wat(&format!(
                r#"(module {extra} (func $unique (drop (i32.const {unique}))) (memory (export "memory") 1) (data (i32.const 0) "{}") (func (export "call")))"#,
                "\\00".repeat(8192)
            ))
        };
        // 8 KiB of code: a deposit of 1.6 million gas (Amsterdam: of state gas), over what
        // the transaction's 1,000,000 leave.
        for (module, what) in [
            (padded(""), "valid"),
            (padded(r#"(import "farol" "no_such_function" (func))"#), "invalid"),
        ] {
            let code = contract_code(&module);
            let from = w.users[0];
            let (addr, tx) = w.deploy(from, deploy_code(&code).into(), 1_000_000);
            let t = block(&mut w, vec![tx]).txs.remove(0);
            assert!(matches!(t.status, TxStatus::Halt(_)), "{spec:?} {what}: {t:?}");
            assert!(!rt.holds(keccak256(&code)), "{spec:?} {what}: the module was prepared");
            assert!(w
                .state
                .account(addr)
                .ok()
                .flatten()
                .is_none_or(|a| a.code_hash == KECCAK_EMPTY));
        }
        // With the gas, the valid one deploys.
        let code = contract_code(&padded(""));
        let from = w.users[0];
        let (_, tx) = w.deploy(from, deploy_code(&code).into(), 16_000_000);
        let t = block(&mut w, vec![tx]).txs.remove(0);
        assert_eq!(t.status, TxStatus::Success, "{spec:?}: {t:?}");
        assert!(rt.holds(keccak256(&code)), "{spec:?}");
    }
}

/// Work no block depends on (JSON-RPC calls, traces: `wasm::transient`) deploys and calls
/// modules not in memory without keeping them, so it cannot evict the modules blocks use;
/// its verdicts and results are a block's. Until stop 40 such work kept every module it met.
#[test]
fn transient_work_keeps_no_module() {
    let mut w = world();
    let rt = farol_execution::wasm::WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let env = w.block_env(Address::from([0xbe; 20]));
    // Not user 0, which deploys in a block below: these are never committed.
    let from = w.users[2];
    let unique = |n: u32| {
        wat(&STORE.replacen(
            "(memory (export \"memory\") 1)",
            &format!("(memory (export \"memory\") 1) (func $unique (drop (i32.const {n})))"),
            1,
        ))
    };
    // Deployed in a call: deployment's checks, nothing kept.
    let code = contract_code(&unique(86_421));
    let (_, tx) = w.deploy(from, deploy_code(&code).into(), 16_000_000);
    let call = |w: &World, tx: &RecoveredTx| {
        farol_execution::wasm::transient(|| {
            farol_execution::execute_call(&w.state, &w.chain, &env, std::slice::from_ref(tx))
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .txs
        .remove(0)
    };
    assert_eq!(call(&w, &tx).status, TxStatus::Success);
    assert!(!rt.holds(keccak256(&code)), "a module deployed in a call was kept");
    let bad = wat(
        r#"(module (import "farol" "nope" (func)) (memory (export "memory") 1) (func (export "call")))"#,
    );
    let (_, tx) = w.deploy(from, deploy_code(&contract_code(&bad)).into(), 5_000_000);
    let t = call(&w, &tx);
    assert_eq!(t.status, TxStatus::Revert, "{t:?}");
    let reason = Revert::abi_decode(&t.output).map(|r| r.reason).unwrap_or_default();
    assert!(reason.contains("farol.nope does not exist"), "{reason}");
    // A deployed module that left memory runs in a call, and is not kept again.
    let code = contract_code(&unique(86_422));
    let hash = keccak256(&code);
    let addr = deploy(&mut w, &wat_of(&code));
    rt.forget(hash);
    let value = U256::from(77u64);
    // User `u` stores `value` in the contract.
    let store = |w: &mut World, u: usize| {
        let data = value.to_be_bytes::<32>().to_vec();
        w.call(w.users[u], addr, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1)
    };
    let tx = store(&mut w, 1);
    let t = call(&w, &tx);
    assert_eq!(t.status, TxStatus::Success, "{t:?}");
    assert_eq!(t.output, Bytes::from(value.to_be_bytes::<32>().to_vec()));
    assert!(!rt.holds(hash), "a module called in a call was kept");
    // Called twice in one piece of work, it is prepared once; no compiled frame is left
    // counted.
    let again = store(&mut w, 3);
    let before = rt.stats().transient;
    let out = farol_execution::wasm::transient(|| {
        farol_execution::execute_call(&w.state, &w.chain, &env, &[tx.clone(), again])
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.txs.iter().all(|t| t.status == TxStatus::Success), "{:?}", out.txs);
    assert_eq!(rt.stats().transient - before, 1, "prepared again within one piece of work");
    assert_eq!(rt.transient_frames(), 0);
    // In a block it is kept again.
    let t = block(&mut w, vec![tx.clone()]).txs.remove(0);
    assert_eq!(t.status, TxStatus::Success, "{t:?}");
    assert!(rt.holds(hash));
    // Compiled, a call runs it compiled, and gives its place in the share back.
    rt.wait(hash);
    let t = call(&w, &tx);
    assert_eq!(t.output, Bytes::from(value.to_be_bytes::<32>().to_vec()), "{t:?}");
    assert_eq!(rt.transient_frames(), 0);
}

/// The module of contract code made by `contract_code`.
fn wat_of(code: &[u8]) -> Vec<u8> {
    code[farol_execution::wasm::MARKER.len()..].to_vec()
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
}

// ---- the Rust ERC-20 and Solidity ------------------------------------------------------------

sol! {
    interface IToken {
        function name() external view returns (string);
        function symbol() external view returns (string);
        function decimals() external view returns (uint8);
        function totalSupply() external view returns (uint256);
        function balanceOf(address owner) external view returns (uint256);
        function allowance(address owner, address spender) external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
        function transferFrom(address from, address to, uint256 amount) external returns (bool);
        function initialize(uint256 supply) external;
        event Transfer(address indexed from, address indexed to, uint256 value);
        error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed);
    }
    interface ITokenUser {
        function calls() external view returns (uint256);
        function lastError() external view returns (string);
        function pullAndSplit(address to, uint256 amount) external returns (uint256);
        function tryPay(address receiver, uint256 amount, bytes data) external returns (bool);
        function forward(address to) external payable;
        function staticProbe(address target, bytes data) external view returns (bool);
    }
    interface IHookReceiver {
        function received() external view returns (uint256);
        function lastFrom() external view returns (address);
        function balanceSeen() external view returns (uint256);
    }
}

fn rust(name: &str) -> Vec<u8> {
    rust_module(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Deploys a Solidity contract from the artifacts with ABI-encoded constructor `args`.
fn deploy_sol(world: &mut World, name: &str, args: Vec<u8>) -> Address {
    let mut code = creation_code(name).unwrap_or_else(|e| panic!("{e}")).to_vec();
    code.extend(args);
    let from = world.users[0];
    let (addr, tx) = world.deploy(from, code.into(), 5_000_000);
    let out = block(world, vec![tx]);
    assert_eq!(out.txs[0].status, TxStatus::Success, "deploying {name}: {:?}", out.txs[0]);
    addr
}

/// One transaction from user `who` calling `to` with `data` and `value`; returns its outcome.
fn send(
    world: &mut World,
    who: usize,
    to: Address,
    value: U256,
    data: Vec<u8>,
) -> farol_execution::TxOutcome {
    let from = world.users[who];
    let tx = world.call(from, to, value, data, 2_000_000, Flavor::DynamicFee, 1);
    block(world, vec![tx]).txs.remove(0)
}

/// Calls a view function `c` on `to` in a transaction and decodes what it returns.
fn view<C: SolCall>(world: &mut World, to: Address, c: C) -> C::Return {
    let out = send(world, 7, to, U256::ZERO, c.abi_encode());
    assert_eq!(out.status, TxStatus::Success, "{out:?}");
    C::abi_decode_returns(&out.output).unwrap_or_else(|e| panic!("decoding: {e}"))
}

fn ok(out: &farol_execution::TxOutcome) {
    assert_eq!(out.status, TxStatus::Success, "{out:?}");
}

fn token_world() -> (World, Address) {
    let mut w = world();
    let token = deploy(&mut w, &rust("erc20"));
    let supply = U256::from(1_000_000u64);
    ok(&send(&mut w, 0, token, U256::ZERO, IToken::initializeCall { supply }.abi_encode()));
    (w, token)
}

#[test]
fn the_rust_erc20_behaves_like_an_erc20() {
    let (mut w, token) = token_world();
    let (u0, u1, u2) = (w.users[0], w.users[1], w.users[2]);
    assert_eq!(view(&mut w, token, IToken::nameCall {}), "Farol Rust Token");
    assert_eq!(view(&mut w, token, IToken::symbolCall {}), "FRT");
    assert_eq!(view(&mut w, token, IToken::decimalsCall {}), 18);
    assert_eq!(view(&mut w, token, IToken::totalSupplyCall {}), U256::from(1_000_000u64));
    // A second initialize is refused.
    let again = send(
        &mut w,
        1,
        token,
        U256::ZERO,
        IToken::initializeCall { supply: U256::from(5) }.abi_encode(),
    );
    assert_eq!(again.status, TxStatus::Revert);

    let out = send(
        &mut w,
        0,
        token,
        U256::ZERO,
        IToken::transferCall { to: u1, amount: U256::from(300) }.abi_encode(),
    );
    ok(&out);
    assert_eq!(out.output, true.abi_encode());
    assert_eq!(out.logs.len(), 1);
    let log = &out.logs[0];
    assert_eq!(log.address, token);
    let t = IToken::Transfer::decode_log_data(&log.data).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.from, t.to, t.value), (u0, u1, U256::from(300)));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: u1 }), U256::from(300));

    // Allowances: u1 lets u2 move 100; u2 moves 60 to itself.
    ok(&send(
        &mut w,
        1,
        token,
        U256::ZERO,
        IToken::approveCall { spender: u2, amount: U256::from(100) }.abi_encode(),
    ));
    ok(&send(
        &mut w,
        2,
        token,
        U256::ZERO,
        IToken::transferFromCall { from: u1, to: u2, amount: U256::from(60) }.abi_encode(),
    ));
    assert_eq!(
        view(&mut w, token, IToken::allowanceCall { owner: u1, spender: u2 }),
        U256::from(40)
    );
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: u2 }), U256::from(60));

    // Too much: OpenZeppelin's custom error, and nothing changes.
    let out = send(
        &mut w,
        1,
        token,
        U256::ZERO,
        IToken::transferCall { to: u2, amount: U256::from(1_000) }.abi_encode(),
    );
    assert_eq!(out.status, TxStatus::Revert);
    let e =
        IToken::ERC20InsufficientBalance::abi_decode(&out.output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((e.sender, e.balance, e.needed), (u1, U256::from(240), U256::from(1_000)));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: u1 }), U256::from(240));
    // Input that is no function of the token reverts without data.
    let out = send(&mut w, 1, token, U256::ZERO, vec![1, 2, 3]);
    assert_eq!((out.status, out.output.len()), (TxStatus::Revert, 0));
}

/// The SDK's allocator uses the free part of the initial memory first and grows the memory
/// when that runs out: input far larger than the initial memory is copied in whole and still
/// decodes (trailing bytes after `balanceOf`'s argument are ignored, as Solidity ignores
/// them). Had the allocator failed, the module would have trapped.
#[test]
fn the_sdk_allocator_grows_memory_past_the_initial_pages() {
    let (mut w, token) = token_world();
    let owner = w.users[0];
    let plain = IToken::balanceOfCall { owner }.abi_encode();
    let mut long = plain.clone();
    long.resize(plain.len() + 150 * 1024, 0);
    let mut run = |data: Vec<u8>| {
        let tx = w.call(w.users[7], token, U256::ZERO, data, 5_000_000, Flavor::DynamicFee, 1);
        block(&mut w, vec![tx]).txs.remove(0)
    };
    let (short, long) = (run(plain), run(long));
    ok(&short);
    ok(&long);
    assert_eq!(short.output, long.output);
    let supply = IToken::balanceOfCall::abi_decode_returns(&long.output).map_err(|e| e.to_string());
    assert_eq!(supply, Ok(U256::from(1_000_000u64)));
}

#[test]
fn solidity_and_rust_call_each_other_and_a_revert_undoes_both() {
    let (mut w, token) = token_world();
    let user = deploy_sol(&mut w, "TokenUser", token.abi_encode());
    let receiver = deploy_sol(&mut w, "HookReceiver", token.abi_encode());
    let u1 = w.users[1];

    // Solidity pulls from u0 through the Rust token and sends half on.
    ok(&send(
        &mut w,
        0,
        token,
        U256::ZERO,
        IToken::approveCall { spender: user, amount: U256::from(1_000) }.abi_encode(),
    ));
    let out = send(
        &mut w,
        0,
        user,
        U256::ZERO,
        ITokenUser::pullAndSplitCall { to: u1, amount: U256::from(1_000) }.abi_encode(),
    );
    ok(&out);
    assert_eq!(out.output, U256::from(500).abi_encode());
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: u1 }), U256::from(500));

    // Solidity -> Rust -> Solidity hook -> Rust (refund half) in one transaction.
    let out = send(
        &mut w,
        0,
        user,
        U256::ZERO,
        ITokenUser::tryPayCall { receiver, amount: U256::from(200), data: vec![1].into() }
            .abi_encode(),
    );
    ok(&out);
    assert_eq!(out.output, true.abi_encode());
    assert_eq!(view(&mut w, receiver, IHookReceiver::receivedCall {}), U256::from(200));
    assert_eq!(view(&mut w, receiver, IHookReceiver::lastFromCall {}), user);
    // The hook saw the balance the token had just written.
    assert_eq!(view(&mut w, receiver, IHookReceiver::balanceSeenCall {}), U256::from(200));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: receiver }), U256::from(100));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: user }), U256::from(400));

    // The hook writes, then reverts: the token's transfer (WASM) and the hook's writes (EVM)
    // are both undone; TokenUser catches the reason and keeps its own writes.
    let out = send(
        &mut w,
        0,
        user,
        U256::ZERO,
        ITokenUser::tryPayCall { receiver, amount: U256::from(50), data: vec![0xff].into() }
            .abi_encode(),
    );
    ok(&out);
    assert_eq!(out.output, false.abi_encode());
    assert!(out.logs.is_empty(), "a reverted transfer leaves no Transfer log: {:?}", out.logs);
    assert_eq!(view(&mut w, user, ITokenUser::lastErrorCall {}), "receiver says no");
    assert_eq!(view(&mut w, user, ITokenUser::callsCall {}), U256::from(3));
    assert_eq!(view(&mut w, receiver, IHookReceiver::receivedCall {}), U256::from(200));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: receiver }), U256::from(100));
    assert_eq!(view(&mut w, token, IToken::balanceOfCall { owner: user }), U256::from(400));
}

/// Accepts value with empty input; with input `(address to, uint256 amount)` sends `amount`
/// to `to` (a CALL with value from WASM) and reverts if that fails.
const VAULT: &str = r#"
(module
  (import "farol" "calldata_size" (func $size (result i32)))
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "call" (func $call (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (if (i32.eqz (call $size)) (then (return)))
    (call $cd (i32.const 0) (i32.const 0) (i32.const 64))
    (if (i32.eqz (call $call (i32.const 0) (i32.const 12) (i32.const 32) (i32.const 0) (i32.const 0) (i64.const 100000)))
      (then (call $exit (i32.const 1) (i32.const 0) (i32.const 0))))))
"#;

#[test]
fn value_moves_across_the_vms() {
    let mut w = world();
    let vault = deploy(&mut w, &wat(VAULT));
    let user = deploy_sol(&mut w, "TokenUser", Address::ZERO.abi_encode());
    let ether = U256::from(10u64).pow(U256::from(18));
    // EVM -> WASM with value.
    ok(&send(&mut w, 0, user, ether, ITokenUser::forwardCall { to: vault }.abi_encode()));
    let balance = |w: &World, a: Address| w.state.account(a).ok().flatten().map(|a| a.balance);
    assert_eq!(balance(&w, vault), Some(ether));
    // WASM -> an externally owned account with value.
    let to = Address::from([0x77; 20]);
    let half = ether / U256::from(2);
    let out = send(&mut w, 3, vault, U256::ZERO, (to, half).abi_encode());
    ok(&out);
    assert_eq!(balance(&w, to), Some(half));
    assert_eq!(balance(&w, vault), Some(ether - half));
    // More than it has: the inner call fails and the vault reverts.
    let out = send(&mut w, 3, vault, U256::ZERO, (to, ether).abi_encode());
    assert_eq!(out.status, TxStatus::Revert);
    assert_eq!(balance(&w, vault), Some(ether - half));
}

#[test]
fn static_calls_into_wasm_cannot_write_and_wasm_gas_exhaustion_stays_inside() {
    let mut w = world();
    let store = deploy(&mut w, &wat(STORE));
    let looper = deploy(
        &mut w,
        &wat(r#"(module (memory (export "memory") 1) (func (export "call") (loop $l (br $l))))"#),
    );
    let pricer = deploy(&mut w, &rust("option_pricer"));
    let user = deploy_sol(&mut w, "TokenUser", Address::ZERO.abi_encode());
    let probe = |w: &mut World, target: Address, data: Vec<u8>| {
        view(w, user, ITokenUser::staticProbeCall { target, data: data.into() })
    };
    // A write inside a static call halts the WASM frame; the caller sees a failure.
    assert!(!probe(&mut w, store, U256::from(5).to_be_bytes::<32>().to_vec()));
    assert_eq!(w.state.storage(store, U256::ZERO).ok(), Some(U256::ZERO));
    // Out of gas inside WASM: the frame fails, the caller keeps its 1/64 and carries on.
    assert!(!probe(&mut w, looper, vec![]));
    // A pure WASM computation succeeds in a static call.
    let price = option_price_input(10);
    assert!(probe(&mut w, pricer, price));
}

#[test]
fn the_rust_and_solidity_option_pricers_agree() {
    let mut w = world();
    let wasm = deploy(&mut w, &rust("option_pricer"));
    let evm = deploy_sol(&mut w, "OptionPricer", vec![]);
    for steps in [0, 1, 7, 64] {
        let a = send(&mut w, 1, wasm, U256::ZERO, option_price_input(steps));
        let b = send(&mut w, 1, evm, U256::ZERO, option_price_input(steps));
        ok(&a);
        ok(&b);
        assert_eq!(a.output, b.output, "{steps} steps");
        // Tiny trees cost the calldata floor (EIP-7623) on both sides.
        assert!(
            a.gas_used < b.gas_used || (steps < 7 && a.gas_used == b.gas_used),
            "{steps} steps: wasm {} gas, evm {} gas",
            a.gas_used,
            b.gas_used
        );
    }
    // Out-of-range input: the same revert from both.
    let mut bad = option_price_input(1000);
    let a = send(&mut w, 1, wasm, U256::ZERO, bad.clone());
    let b = send(&mut w, 1, evm, U256::ZERO, std::mem::take(&mut bad));
    assert_eq!((a.status, a.output), (b.status, b.output));
}

// ---- recursion and hostile modules -----------------------------------------------------------

/// Input: a 32-byte counter n. n > 0: calls itself with n - 1 and reverts if that fails.
const RECURSE: &str = r#"
(module
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "address" (func $address (param i32)))
  (import "farol" "call" (func $call (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (call $cd (i32.const 0) (i32.const 0) (i32.const 32))
    (if (i64.eqz (i64.load (i32.const 24))) (then (return)))
    ;; n - 1, big-endian in the last 8 bytes
    (i64.store (i32.const 24)
      (i64.sub (i64.load (i32.const 24)) (i64.const 0x0100000000000000)))
    (call $address (i32.const 100))
    (if (i32.eqz (call $call (i32.const 0) (i32.const 100) (i32.const 200) (i32.const 0) (i32.const 32) (i64.const -1)))
      (then (call $exit (i32.const 1) (i32.const 0) (i32.const 0))))))
"#;

#[test]
fn wasm_frames_nest_up_to_the_limit() {
    let mut w = world();
    let r = deploy(&mut w, &wat(RECURSE));
    let n = |k: u64| U256::from(k).to_be_bytes::<32>().to_vec();
    // Counter bytes are little-endian in the module's i64 view: k < 256 sits in byte 31.
    ok(&send(&mut w, 1, r, U256::ZERO, n(farol_execution::wasm::MAX_WASM_NESTING as u64 - 1)));
    let deep = send(&mut w, 1, r, U256::ZERO, n(farol_execution::wasm::MAX_WASM_NESTING as u64));
    assert_eq!(deep.status, TxStatus::Revert, "{deep:?}");
}

fn deploy_outcome(world: &mut World, code: Vec<u8>) -> farol_execution::TxOutcome {
    let from = world.users[0];
    let (_, tx) = world.deploy(from, deploy_code(&code).into(), 16_000_000);
    block(world, vec![tx]).txs.remove(0)
}

fn rejected(world: &mut World, module: &str, reason: &str) {
    let out = deploy_outcome(world, contract_code(&wat(module)));
    assert_eq!(out.status, TxStatus::Revert, "{module}: {out:?}");
    let got = Revert::abi_decode(&out.output).map(|r| r.reason).unwrap_or_default();
    assert!(got.contains(reason), "{module}: {got:?} does not mention {reason:?}");
}

#[test]
fn hostile_modules_are_refused_at_deployment() {
    let mut w = world();
    // The rewrite's own export name is Farol's.
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (global (export "__farol_gas") i64 (i64.const 0))
            (func (export "call")))"#,
        "names starting with `__farol`",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 300) (func (export "call")))"#,
        "memory of 300 pages",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 100000) (func (export "call")))"#,
        "not valid WebAssembly",
    );
    rejected(
        &mut w,
        r#"(module (import "farol" "sstore" (func (param i64))) (memory (export "memory") 1) (func (export "call")))"#,
        "wrong signature",
    );
    rejected(
        &mut w,
        r#"(module (import "env" "memory" (memory 1)) (func (export "call")))"#,
        "only functions may be imported",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (func (export "call") (drop (i32x4.splat (i32.const 1)))))"#,
        "not valid WebAssembly",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (func $s) (start $s) (func (export "call")))"#,
        "start function",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1 1 shared) (func (export "call")))"#,
        "not valid WebAssembly",
    );
    rejected(&mut w, r#"(module (memory (export "memory") 1))"#, "no exported function `call`");
    rejected(&mut w, r#"(module (func (export "call")))"#, "no memory");
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (func (export "call") (param i32)))"#,
        "must take and return nothing",
    );
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (table 100000 funcref) (func (export "call")))"#,
        "table of 100000 elements",
    );
    let locals = format!(
        r#"(module (memory (export "memory") 1) (func (export "call") (local {})))"#,
        "i32 ".repeat(2_000)
    );
    rejected(&mut w, &locals, "2000 locals");
    // Parameters count as locals.
    let params = format!(
        r#"(module (memory (export "memory") 1) (func (param {}) (local {})) (func (export "call")))"#,
        "i32 ".repeat(1_000),
        "i64 ".repeat(100)
    );
    rejected(&mut w, &params, "1100 locals");
    // A long constant expression (extended constants), where a global's value, a segment's
    // offset or an element is given; one of 32 operators is taken.
    let sum = |terms: usize| "(i32.const 1) (i32.add) ".repeat(terms);
    let global = |terms: usize| {
        format!(
            r#"(module (memory (export "memory") 1) (global i32 (i32.const 0) {}) (func (export "call")))"#,
            sum(terms)
        )
    };
    rejected(&mut w, &global(20), "constant expression of more than 32 operators");
    let out = deploy_outcome(&mut w, contract_code(&wat(&global(15))));
    assert_eq!(out.status, TxStatus::Success, "{out:?}");
    rejected(
        &mut w,
        &format!(
            r#"(module (memory (export "memory") 1) (data (offset (i32.const 0) {}) "x") (func (export "call")))"#,
            sum(20)
        ),
        "constant expression",
    );
    rejected(
        &mut w,
        &format!(
            r#"(module (memory (export "memory") 1) (table 1 funcref) (func $f)
                (elem (table 0) (offset (i32.const 0) {}) func $f) (func (export "call")))"#,
            sum(20)
        ),
        "constant expression",
    );
    // wasmtime's pool holds one table per instance.
    rejected(
        &mut w,
        r#"(module (memory (export "memory") 1) (table 1 funcref) (table 1 funcref) (func (export "call")))"#,
        "2 tables",
    );
    // An entry function whose own frame passes the stack budget: nothing in the module could
    // stop it before the engine's own limit, so it is refused.
    let tall = format!(
        r#"(module (memory (export "memory") 1) (func (export "call") {} {}))"#,
        "(i32.const 1) ".repeat(9_000),
        "(drop) ".repeat(9_000)
    );
    rejected(&mut w, &tall, "stack slots (at most 8192)");
    // Not a module at all.
    let out = deploy_outcome(&mut w, contract_code(b"\0asm\x01\0\0\0garbage"));
    assert_eq!(out.status, TxStatus::Revert, "{out:?}");
    // Past the 64 KiB code limit: the creation halts like any oversized EVM code.
    let mut big = String::from(r#"(module (memory (export "memory") 1) (data (i32.const 0) ""#);
    big.push_str(&"\\00".repeat(70_000));
    big.push_str(r#"") (func (export "call")))"#);
    let out = deploy_outcome(&mut w, contract_code(&wat(&big)));
    assert!(matches!(out.status, TxStatus::Halt(_)), "{out:?}");
}

#[test]
fn hostile_modules_halt_deterministically_at_run_time() {
    let mut w = world();
    // Deep recursion inside the module: a trap, not a crash.
    let deep = deploy(
        &mut w,
        &wat(
            r#"(module (memory (export "memory") 1) (func $f (call $f)) (func (export "call") (call $f)))"#,
        ),
    );
    let out = send(&mut w, 1, deep, U256::ZERO, vec![]);
    assert!(matches!(out.status, TxStatus::Halt(_)), "{out:?}");
    // Growing memory past 16 MiB fails (memory.grow returns -1) and the contract carries on;
    // every page asked for is paid, so a huge request runs out of gas.
    let grow = |w: &mut World, pages: u32| {
        deploy(
            w,
            &wat(&format!(
                r#"
          (module
            (import "farol" "exit" (func $exit (param i32 i32 i32)))
            (memory (export "memory") 1)
            (func (export "call")
              (i32.store (i32.const 0) (memory.grow (i32.const {pages})))
              (call $exit (i32.const 0) (i32.const 0) (i32.const 4))))"#
            )),
        )
    };
    let g = grow(&mut w, 300);
    let out = send(&mut w, 1, g, U256::ZERO, vec![]);
    ok(&out);
    assert_eq!(out.output.as_ref(), (-1i32).to_le_bytes());
    let g = grow(&mut w, 200);
    let out = send(&mut w, 1, g, U256::ZERO, vec![]);
    ok(&out);
    assert_eq!(out.output.as_ref(), 1i32.to_le_bytes());
    let g = grow(&mut w, 1 << 30);
    let out = send(&mut w, 1, g, U256::ZERO, vec![]);
    assert!(matches!(out.status, TxStatus::Halt(_)), "{out:?}");
    // NaN payloads are canonical: 0/0 and a NaN with a payload come out as the same bits.
    let nan = deploy(
        &mut w,
        &wat(r#"
      (module
        (import "farol" "exit" (func $exit (param i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "call")
          (i64.store (i32.const 0) (i64.reinterpret_f64 (f64.div (f64.const 0) (f64.const 0))))
          (i64.store (i32.const 8) (i64.reinterpret_f64 (f64.add (f64.const nan:0x4) (f64.const 1))))
          (i32.store (i32.const 16) (i32.reinterpret_f32 (f32.sqrt (f32.const -1))))
          (call $exit (i32.const 0) (i32.const 0) (i32.const 20))))"#),
    );
    let out = send(&mut w, 1, nan, U256::ZERO, vec![]);
    ok(&out);
    let mut want = Vec::new();
    want.extend(0x7ff8_0000_0000_0000u64.to_le_bytes());
    want.extend(0x7ff8_0000_0000_0000u64.to_le_bytes());
    want.extend(0x7fc0_0000u32.to_le_bytes());
    assert_eq!(out.output.as_ref(), want.as_slice());
    // A host call with a pointer outside memory halts.
    let wild = deploy(
        &mut w,
        &wat(r#"
      (module
        (import "farol" "sload" (func $sload (param i32 i32)))
        (memory (export "memory") 1)
        (func (export "call") (call $sload (i32.const 65530) (i32.const 0))))"#),
    );
    let out = send(&mut w, 1, wild, U256::ZERO, vec![]);
    assert!(matches!(out.status, TxStatus::Halt(_)), "{out:?}");
    // Integer division by zero traps.
    let div = deploy(
        &mut w,
        &wat(
            r#"(module (memory (export "memory") 1) (func (export "call") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#,
        ),
    );
    let out = send(&mut w, 1, div, U256::ZERO, vec![]);
    assert!(matches!(out.status, TxStatus::Halt(_)), "{out:?}");
}

/// Input byte 30: recursion depth inside each activation; byte 31: nested activations below
/// this one. At the bottom of its recursion each activation calls itself through the host.
const STACKED: &str = r#"
(module
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "address" (func $address (param i32)))
  (import "farol" "call" (func $call (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func $f (param $n i32)
    (if (i32.eqz (local.get $n))
      (then
        (if (i32.load8_u (i32.const 31))
          (then
            (i32.store8 (i32.const 31) (i32.sub (i32.load8_u (i32.const 31)) (i32.const 1)))
            (call $address (i32.const 100))
            (if (i32.eqz (call $call (i32.const 0) (i32.const 100) (i32.const 200) (i32.const 0) (i32.const 32) (i64.const -1)))
              (then (call $exit (i32.const 1) (i32.const 0) (i32.const 0))))))
        (return)))
    (call $f (i32.sub (local.get $n) (i32.const 1))))
  (func (export "call")
    (call $cd (i32.const 0) (i32.const 0) (i32.const 32))
    (call $f (i32.load8_u (i32.const 30)))))
"#;

#[test]
fn the_stack_count_bounds_recursion_in_every_nested_activation() {
    let mut w = world();
    let c = deploy(&mut w, &wat(STACKED));
    let input = |depth: u8, below: u8| {
        let mut v = vec![0u8; 32];
        v[30] = depth;
        v[31] = below;
        v
    };
    // 16 activations (the nesting limit), each 250 calls deep: well inside the budget, and
    // nothing in wasmtime or the host runs out of native stack.
    let max_nesting = farol_execution::wasm::MAX_WASM_NESTING as u8;
    let deepest = call(&mut w, c, input(250, max_nesting - 1), 2_000_000);
    // Traced, each activation also runs under the inspector's frame loop: still inside the
    // executor's stack, with every activation a frame of the call tracer.
    let mut frame = trace_next(&w, &deepest, serde_json::json!({ "tracer": "callTracer" }));
    let mut frames = 1;
    while let Some(inner) = frame["calls"].get(0).cloned() {
        assert!(frame.get("error").is_none(), "{frame:#}");
        frame = inner;
        frames += 1;
    }
    assert_eq!(frames, max_nesting as usize);
    let steps = trace_next(&w, &deepest, serde_json::json!({ "enableMemory": true }));
    assert_eq!(steps["failed"], serde_json::json!(false));
    let out = block(&mut w, vec![deepest]).txs.remove(0);
    ok(&out);
    // Recursion past the budget halts on Farol's count, the same at any nesting.
    let out = send(&mut w, 1, c, U256::ZERO, input(255, 0));
    ok(&out);
    let deep =
        wat(&STACKED
            .replace("(call $f (i32.load8_u (i32.const 30)))", "(call $f (i32.const 100000))"));
    let c2 = deploy(&mut w, &deep);
    let out = send(&mut w, 1, c2, U256::ZERO, input(0, 0));
    assert_eq!(out.status, TxStatus::Halt("invalid opcode: INVALID".into()), "{out:?}");
}

#[test]
fn instrumentation_keeps_modules_valid_and_counts_calls() {
    use farol_execution::wasm::{instrument, validate};
    for module in
        [wat(STORE), wat(VAULT), wat(RECURSE), wat(STACKED), rust("erc20"), rust("option_pricer")]
    {
        let counted = instrument(&module).unwrap_or_else(|e| panic!("{e}"));
        wasmparser::Validator::new()
            .validate_all(&counted)
            .unwrap_or_else(|e| panic!("the rewritten module is invalid: {e}"));
        validate(&module).unwrap_or_else(|e| panic!("{e}"));
        assert!(counted.len() > module.len());
        // Deterministic: the same input gives the same bytes.
        assert_eq!(instrument(&module).ok(), Some(counted));
    }
}

#[test]
fn evm_code_that_starts_with_invalid_still_halts_at_once() {
    // Loaded from state such code skips the jump-table analysis; it must still halt on its
    // first byte, whatever follows (here a JUMPDEST and a jump to it).
    let mut w = world();
    let from = w.users[0];
    let (addr, tx) = w.deploy(from, deploy_code(&[0xFE, 0x5B, 0x60, 0x01, 0x56]).into(), 1_000_000);
    ok(&block(&mut w, vec![tx]).txs[0]);
    let out = send(&mut w, 1, addr, U256::ZERO, vec![]);
    assert_eq!(out.status, TxStatus::Halt("invalid opcode: INVALID".into()), "{out:?}");
    // Loaded from state in a later block, EVM code sees its true size and bytes: a probe
    // returns EXTCODESIZE and the first word of EXTCODECOPY.
    let mut probe = vec![0x73];
    probe.extend_from_slice(addr.as_slice()); // PUSH20 addr
    probe.extend_from_slice(&[0x3B, 0x60, 0x00, 0x52]); // EXTCODESIZE, MSTORE at 0
    probe.push(0x73);
    probe.extend_from_slice(addr.as_slice()); // PUSH20 addr
    probe.extend_from_slice(&[0x60, 0x20, 0x60, 0x00, 0x60, 0x20, 0x83, 0x3C]); // EXTCODECOPY(addr, 32, 0, 32)
    probe.extend_from_slice(&[0x50, 0x60, 0x40, 0x60, 0x00, 0xF3]); // POP, RETURN(0, 64)
    let from = w.users[0];
    let (probe_addr, tx) = w.deploy(from, deploy_code(&probe).into(), 1_000_000);
    ok(&block(&mut w, vec![tx]).txs[0]);
    let out = send(&mut w, 1, probe_addr, U256::ZERO, vec![]);
    ok(&out);
    let mut want = U256::from(5).to_be_bytes::<32>().to_vec();
    let mut word = [0u8; 32];
    word[..5].copy_from_slice(&[0xFE, 0x5B, 0x60, 0x01, 0x56]);
    want.extend_from_slice(&word);
    assert_eq!(out.output.as_ref(), want.as_slice());
}

#[test]
fn blocks_of_conflicting_wasm_and_evm_calls_run_the_same_in_parallel() {
    use rand::Rng;
    let (mut w, token) = token_world();
    let user = deploy_sol(&mut w, "TokenUser", token.abi_encode());
    let receiver = deploy_sol(&mut w, "HookReceiver", token.abi_encode());
    // Every user holds tokens, and TokenUser holds some to pay with.
    let mut fund = Vec::new();
    let from = w.users[0];
    for i in 1..w.users.len() {
        let to = w.users[i];
        let data = IToken::transferCall { to, amount: U256::from(10_000) }.abi_encode();
        fund.push(w.call(from, token, U256::ZERO, data, 200_000, Flavor::DynamicFee, 1));
    }
    let data = IToken::transferCall { to: user, amount: U256::from(50_000) }.abi_encode();
    fund.push(w.call(from, token, U256::ZERO, data, 200_000, Flavor::DynamicFee, 1));
    let out = block(&mut w, fund);
    assert!(out.txs.iter().all(|t| t.status == TxStatus::Success));
    let mut rng = farol_execution::workload::rng(7);
    for _ in 0..5 {
        let mut txs = Vec::new();
        for _ in 0..60 {
            let who = rng.random_range(0..w.users.len());
            let from = w.users[who];
            let (to, data) = match rng.random_range(0..4) {
                0 | 1 => {
                    let to = w.users[rng.random_range(0..w.users.len())];
                    let amount = U256::from(rng.random_range(0..200u64));
                    (token, IToken::transferCall { to, amount }.abi_encode())
                }
                2 => {
                    let flag = if rng.random_bool(0.3) { 0xff } else { 1 };
                    let amount = U256::from(rng.random_range(1..50u64));
                    (
                        user,
                        ITokenUser::tryPayCall { receiver, amount, data: vec![flag].into() }
                            .abi_encode(),
                    )
                }
                _ => (
                    token,
                    IToken::balanceOfCall { owner: w.users[rng.random_range(0..w.users.len())] }
                        .abi_encode(),
                ),
            };
            txs.push(w.call(from, to, U256::ZERO, data, 500_000, Flavor::DynamicFee, 1));
        }
        // `block` runs 2 and 4 workers; add 8 here.
        let env = w.block_env(Address::from([0xbe; 20]));
        let seq =
            execute_sequential(&w.state, &w.chain, &env, &txs).unwrap_or_else(|e| panic!("{e}"));
        let (par, _) = ParallelExecutor::new(ParallelConfig::always_parallel(8))
            .execute(&w.state, &w.chain, &env, &txs)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(par, seq);
        // The block conflicts by construction: 60 transactions from 8 senders make nonce
        // chains, and they share the token's balances. (Whether the workers redo or wait on
        // any of it depends on thread timing, so that is not asserted.)
        let senders: std::collections::BTreeSet<Address> = txs.iter().map(|t| t.sender).collect();
        assert!(senders.len() < txs.len());
        block(&mut w, txs);
    }
}

/// Input: byte 0 the kind (0 CREATE, 1 CREATE2), bytes 32..64 the salt, then the init code.
/// Returns the new address, or reverts with the creation's revert data.
const FACTORY: &str = r#"
(module
  (import "farol" "calldata_size" (func $size (result i32)))
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "create" (func $create (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "farol" "returndata_size" (func $rsize (result i32)))
  (import "farol" "returndata_copy" (func $rcopy (param i32 i32 i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 2)
  (func (export "call") (local $n i32)
    (local.set $n (call $size))
    (call $cd (i32.const 1024) (i32.const 0) (local.get $n))
    (if (call $create (i32.load8_u (i32.const 1024)) (i32.const 0) (i32.const 1088)
          (i32.sub (local.get $n) (i32.const 64)) (i32.const 1056) (i32.const 512))
      (then (call $exit (i32.const 0) (i32.const 512) (i32.const 20))))
    (call $rcopy (i32.const 600) (i32.const 0) (call $rsize))
    (call $exit (i32.const 1) (i32.const 600) (call $rsize))))
"#;

#[test]
fn wasm_contracts_create_evm_and_wasm_contracts() {
    let mut w = world();
    let factory = deploy(&mut w, &wat(FACTORY));
    let input = |kind: u8, salt: u8, init: &[u8]| {
        let mut v = vec![0u8; 64];
        v[0] = kind;
        v[63] = salt;
        v.extend_from_slice(init);
        v
    };
    // CREATE of an EVM contract (code: STOP) at the factory's first nonce.
    let out = send(&mut w, 1, factory, U256::ZERO, input(0, 0, &deploy_code(&[0x00])));
    ok(&out);
    let evm_child = Address::from_slice(&out.output);
    assert_eq!(evm_child, factory.create(1));
    assert!(w.state.account(evm_child).ok().flatten().is_some_and(|a| a.nonce == 1));

    // CREATE2 of a WASM contract: the address follows EIP-1014, and the child works.
    let init = deploy_code(&contract_code(&wat(STORE)));
    let out = send(&mut w, 1, factory, U256::ZERO, input(1, 7, &init));
    ok(&out);
    let wasm_child = Address::from_slice(&out.output);
    let mut salt = [0u8; 32];
    salt[31] = 7;
    assert_eq!(wasm_child, factory.create2(salt, alloy_primitives::keccak256(&init)));
    let out = send(&mut w, 2, wasm_child, U256::ZERO, U256::from(99).to_be_bytes::<32>().to_vec());
    ok(&out);
    assert_eq!(w.state.storage(wasm_child, U256::ZERO).ok(), Some(U256::from(99)));

    // The same salt again: the address is taken, the creation fails, the factory reverts.
    let out = send(&mut w, 1, factory, U256::ZERO, input(1, 7, &init));
    assert_eq!(out.status, TxStatus::Revert, "{out:?}");

    // An invalid module from WASM: the deployment check runs there too, and its reason comes
    // back as the creation's revert data.
    let bad = deploy_code(&contract_code(&wat(r#"(module (memory (export "memory") 1))"#)));
    let out = send(&mut w, 1, factory, U256::ZERO, input(0, 0, &bad));
    assert_eq!(out.status, TxStatus::Revert, "{out:?}");
    let reason = Revert::abi_decode(&out.output).map(|r| r.reason).unwrap_or_default();
    assert!(reason.contains("no exported function `call`"), "{reason}");
}

/// Every host function, for wasm-smith to call with whatever arguments it likes.
const ALL_IMPORTS: &str = r#"
(module
  (import "farol" "calldata_size" (func (result i32)))
  (import "farol" "calldata_copy" (func (param i32 i32 i32)))
  (import "farol" "returndata_size" (func (result i32)))
  (import "farol" "returndata_copy" (func (param i32 i32 i32)))
  (import "farol" "caller" (func (param i32)))
  (import "farol" "address" (func (param i32)))
  (import "farol" "origin" (func (param i32)))
  (import "farol" "coinbase" (func (param i32)))
  (import "farol" "callvalue" (func (param i32)))
  (import "farol" "basefee" (func (param i32)))
  (import "farol" "gasprice" (func (param i32)))
  (import "farol" "block_number" (func (result i64)))
  (import "farol" "timestamp" (func (result i64)))
  (import "farol" "chain_id" (func (result i64)))
  (import "farol" "gas_left" (func (result i64)))
  (import "farol" "balance" (func (param i32 i32)))
  (import "farol" "sload" (func (param i32 i32)))
  (import "farol" "sstore" (func (param i32 i32)))
  (import "farol" "tload" (func (param i32 i32)))
  (import "farol" "tstore" (func (param i32 i32)))
  (import "farol" "log" (func (param i32 i32 i32 i32)))
  (import "farol" "keccak256" (func (param i32 i32 i32)))
  (import "farol" "call" (func (param i32 i32 i32 i32 i32 i64) (result i32)))
  (import "farol" "create" (func (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "farol" "exit" (func (param i32 i32 i32))))
"#;

/// A random module (wasm-smith) importing any of `imports`, with the exports of `exports`;
/// `None` when the random bytes make none. Float operators only if `floats`.
fn random_module(
    rng: &mut impl rand::RngCore,
    imports: &[u8],
    exports: &[u8],
    floats: bool,
) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; 4096];
    rng.fill_bytes(&mut bytes);
    let mut config = wasm_smith::Config {
        available_imports: Some(imports.to_vec()),
        exports: Some(exports.to_vec()),
        ..Default::default()
    };
    config.allow_start_export = false;
    config.allow_floats = floats;
    config.simd_enabled = false;
    config.relaxed_simd_enabled = false;
    config.threads_enabled = false;
    config.memory64_enabled = false;
    config.tail_call_enabled = false;
    config.exceptions_enabled = false;
    config.gc_enabled = false;
    config.max_memories = 0;
    config.reference_types_enabled = false;
    config.max_tables = 1;
    config.max_memory32_bytes = 1 << 24;
    config.max_table_elements = 1_000;
    config.max_funcs = 40;
    config.max_instructions = 200;
    let module = wasm_smith::Module::new(config, &mut arbitrary::Unstructured::new(&bytes)).ok()?;
    Some(module.to_bytes())
}

/// Four calls to `addr` from users 1 to 4 with random input of up to 200 bytes.
fn random_calls(w: &mut World, addr: Address, rng: &mut impl rand::RngCore) -> Vec<RecoveredTx> {
    (0..4)
        .map(|i| {
            let mut input = vec![0u8; (rng.next_u32() % 200) as usize];
            rng.fill_bytes(&mut input);
            let from = w.users[1 + i];
            w.call(from, addr, U256::ZERO, input, 300_000, Flavor::DynamicFee, 1)
        })
        .collect()
}

/// Random modules (wasm-smith) over all host functions: each is either refused at deployment
/// with a reason or deployed and called with random input; nothing panics, and the parallel
/// executor agrees with the sequential one on every block.
#[test]
fn random_modules_never_crash_and_run_the_same_in_parallel() {
    let cases: u64 = if std::env::var("FAROL_LONG").is_ok_and(|v| v == "1") { 2_000 } else { 120 };
    let mut w = world();
    let imports = wat(ALL_IMPORTS);
    let exports = wat(r#"(module (memory (export "memory") 1) (func (export "call")))"#);
    let mut rng = farol_execution::workload::rng(0x5eed);
    let (mut deployed, mut refused) = (0, 0);
    let mut outcomes = std::collections::BTreeMap::new();
    for case in 0..cases {
        let Some(module) = random_module(&mut rng, &imports, &exports, true) else {
            continue;
        };
        let from = w.users[0];
        let (addr, tx) = w.deploy(from, deploy_code(&contract_code(&module)).into(), 16_000_000);
        let out = block(&mut w, vec![tx]);
        match &out.txs[0].status {
            TxStatus::Success => deployed += 1,
            TxStatus::Revert => {
                refused += 1;
                let reason =
                    Revert::abi_decode(&out.txs[0].output).map(|r| r.reason).unwrap_or_default();
                assert!(reason.starts_with("invalid WASM contract"), "case {case}: {reason}");
                continue;
            }
            other => panic!("case {case}: deployment {other:?}"),
        }
        let txs = random_calls(&mut w, addr, &mut rng);
        // `block` asserts that 2 and 4 workers agree with the sequential executor.
        for t in block(&mut w, txs).txs {
            let kind = match &t.status {
                TxStatus::Success => "success".to_string(),
                TxStatus::Revert => "revert".to_string(),
                TxStatus::Halt(why) => why.clone(),
            };
            *outcomes.entry(kind).or_insert(0u32) += 1;
        }
    }
    eprintln!("{deployed} deployed, {refused} refused; calls: {outcomes:?}");
    assert!(
        deployed > cases / 4,
        "only {deployed} of {cases} modules deployed ({refused} refused)"
    );
    // The calls do more than trap at once: some finish, some run out of gas.
    assert!(outcomes.len() >= 3, "{outcomes:?}");
}

#[test]
fn a_creation_from_wasm_at_an_address_with_storage_collides() {
    // EIP-7610: an address with storage but no code and no nonce cannot be created at.
    let mut w = world();
    let factory = deploy(&mut w, &wat(FACTORY));
    let init = deploy_code(&[0x00]);
    let mut salt = [0u8; 32];
    salt[31] = 9;
    let target = factory.create2(salt, alloy_primitives::keccak256(&init));
    let storage = [(U256::from(1), U256::from(1))].into_iter().collect();
    w.state.insert(target, farol_execution::MemAccount { storage, ..Default::default() });
    let mut input = vec![0u8; 64];
    input[0] = 1;
    input[63] = 9;
    input.extend_from_slice(&init);
    let out = send(&mut w, 1, factory, U256::ZERO, input.clone());
    assert_eq!(out.status, TxStatus::Revert, "{out:?}");
    assert!(w
        .state
        .account(target)
        .ok()
        .flatten()
        .is_some_and(|a| a.code_hash == revm::primitives::KECCAK_EMPTY));
    // Another salt creates normally.
    input[63] = 10;
    ok(&send(&mut w, 1, factory, U256::ZERO, input));
}

/// EIP-7610 holds for EVM code a WASM contract calls: a CREATE2 there, at an address with
/// storage, collides (before stop 31 it created the contract), and its trace says the same.
#[test]
fn a_creation_from_evm_code_under_wasm_at_an_address_with_storage_collides() {
    let mut w = world();
    let init = deploy_code(&[0x00]);
    // CREATE2 of `init` with salt 9; reverts when it fails.
    let mut factory_code = vec![0x6d];
    factory_code.extend_from_slice(&init);
    factory_code.extend_from_slice(&[
        0x60, 0x00, 0x52, // PUSH1 0 MSTORE: init at memory 18..32
        0x60, 0x09, 0x60, 0x0e, 0x60, 0x12, 0x60, 0x00, 0xf5, // CREATE2(0, 18, 14, 9)
        0x15, 0x60, 0x20, 0x57, 0x00, // ISZERO PUSH1 32 JUMPI STOP
        0x5b, 0x60, 0x00, 0x60, 0x00, 0xfd, // JUMPDEST PUSH1 0 PUSH1 0 REVERT
    ]);
    assert_eq!(init.len(), 14);
    let from = w.users[0];
    let (factory, tx) = w.deploy(from, deploy_code(&factory_code).into(), 1_000_000);
    ok(&block(&mut w, vec![tx]).txs[0]);
    let vault = deploy(&mut w, &wat(VAULT));
    let target = factory.create2(U256::from(9).to_be_bytes::<32>(), keccak256(&init));
    let storage = [(U256::from(1), U256::from(1))].into_iter().collect();
    w.state.insert(target, farol_execution::MemAccount { storage, ..Default::default() });
    // The vault calls the factory (no value): the factory's CREATE2 collides and it reverts.
    let input = (factory, U256::ZERO).abi_encode();
    let tx = call(&mut w, vault, input, 1_000_000);
    let trace = trace_next(&w, &tx, serde_json::json!({ "tracer": "callTracer" }));
    let out = block(&mut w, vec![tx]).txs.remove(0);
    assert_eq!(out.status, TxStatus::Revert, "{out:?}");
    assert_eq!(trace["error"], serde_json::json!("execution reverted"), "{trace:#}");
    let created = &trace["calls"][0]["calls"][0];
    assert_eq!(created["type"], serde_json::json!("CREATE2"), "{trace:#}");
    assert!(created.get("error").is_some(), "{trace:#}");
    assert!(w.state.account(target).ok().flatten().is_some_and(|a| a.code_hash == KECCAK_EMPTY));
}

#[test]
fn memory_growth_is_paid_for() {
    use farol_execution::wasm::{memory_gas, CHEAP_PAGES, EXTRA_PAGE_GAS};
    let mut w = world();
    // Grows by 200 pages, then touches one byte in each 4 KiB of the new memory.
    let toucher = deploy(
        &mut w,
        &wat(r#"
      (module
        (import "farol" "exit" (func $exit (param i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "call") (local $p i32)
          (drop (memory.grow (i32.const 200)))
          (local.set $p (i32.const 65536))
          (loop $l
            (i32.store8 (local.get $p) (i32.const 1))
            (local.set $p (i32.add (local.get $p) (i32.const 4096)))
            (br_if $l (i32.lt_u (local.get $p) (i32.const 13172736))))
          (call $exit (i32.const 0) (i32.const 0) (i32.const 0))))"#),
    );
    let owed = memory_gas(201) - memory_gas(1);
    assert_eq!(owed, (CHEAP_PAGES - 1) * 256 + (201 - CHEAP_PAGES) * EXTRA_PAGE_GAS);
    // Enough gas: it succeeds and the growth is in its gas.
    let tx = call(&mut w, toucher, vec![], owed + 100_000);
    let out = block(&mut w, vec![tx]);
    ok(&out.txs[0]);
    assert!(out.txs[0].gas_used > 21_000 + owed, "{}", out.txs[0].gas_used);
    // Not enough for the growth: out of gas, although it returned.
    let tx = call(&mut w, toucher, vec![], 21_000 + owed / 2);
    let out = block(&mut w, vec![tx]);
    assert_eq!(
        out.txs[0].status,
        TxStatus::Halt(farol_execution::OUT_OF_GAS.into()),
        "{:?}",
        out.txs[0]
    );
    // Growth past the module's own declared maximum returns -1 and owes nothing, on either
    // tier (wasmtime used to record the refused growth's gas; wasmi never did): the same gas
    // as the same module asking for 0 pages.
    let capped = |w: &mut World, pages: u32| {
        deploy(
            w,
            &wat(&format!(
                r#"
          (module
            (import "farol" "exit" (func $exit (param i32 i32 i32)))
            (memory (export "memory") 1 1)
            (func (export "call")
              (i32.store (i32.const 0) (memory.grow (i32.const {pages})))
              (call $exit (i32.const 0) (i32.const 0) (i32.const 4))))"#
            )),
        )
    };
    let (refused, none) = (capped(&mut w, 255), capped(&mut w, 0));
    let tx = call(&mut w, refused, vec![], 1_000_000);
    let out = block(&mut w, vec![tx]);
    ok(&out.txs[0]);
    assert_eq!(out.txs[0].output.as_ref(), (-1i32).to_le_bytes());
    let grown = out.txs[0].gas_used;
    let tx = call(&mut w, none, vec![], 1_000_000);
    let out = block(&mut w, vec![tx]);
    ok(&out.txs[0]);
    assert_eq!(out.txs[0].output.as_ref(), 1i32.to_le_bytes());
    // What the refused one paid more is the instrumentation's price of the pages asked for,
    // nothing for memory (wasmtime charged about a million gas for it before stop 26, which
    // ran this case out of gas on the compiled tier only).
    let asked =
        255 * farol_execution::wasm::GROW_PAGE_FUEL as u64 / farol_execution::wasm::FUEL_PER_GAS;
    assert_eq!(grown - out.txs[0].gas_used, asked, "a refused growth owes nothing");
    // A module that starts with no memory pays for the pages it grows to.
    let empty = deploy(
        &mut w,
        &wat(r#"
      (module
        (import "farol" "exit" (func $exit (param i32 i32 i32)))
        (memory (export "memory") 0)
        (func (export "call")
          (drop (memory.grow (i32.const 200)))
          (call $exit (i32.const 0) (i32.const 0) (i32.const 0))))"#),
    );
    let tx = call(&mut w, empty, vec![], 21_000 + memory_gas(200) / 2);
    let out = block(&mut w, vec![tx]);
    assert_eq!(
        out.txs[0].status,
        TxStatus::Halt(farol_execution::OUT_OF_GAS.into()),
        "{:?}",
        out.txs[0]
    );
    let tx = call(&mut w, empty, vec![], 21_000 + memory_gas(200) + 100_000);
    let out = block(&mut w, vec![tx]);
    ok(&out.txs[0]);
    assert!(out.txs[0].gas_used > 21_000 + memory_gas(200), "{}", out.txs[0].gas_used);
    // A module that starts big pays up front.
    let big =
        deploy(&mut w, &wat(r#"(module (memory (export "memory") 200) (func (export "call")))"#));
    let tx = call(&mut w, big, vec![], 21_000 + memory_gas(200) / 2);
    let out = block(&mut w, vec![tx]);
    assert_eq!(
        out.txs[0].status,
        TxStatus::Halt(farol_execution::OUT_OF_GAS.into()),
        "{:?}",
        out.txs[0]
    );
}

/// Table operations pay per element, and a `table.grow` past the table's declared maximum
/// returns -1 on both tiers, owing nothing for the elements (wasmi reports a growth past the
/// maximum to the resource limiter as a failed growth, which now counts as a node fault, so
/// the limiter refuses it first).
#[test]
fn table_operations_are_paid_per_element() {
    use farol_execution::wasm::{TierChoice, WasmRuntime, FUEL_PER_GAS, TABLE_ELEMENT_FUEL};
    let _settings = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let before = rt.tier();
    let per = TABLE_ELEMENT_FUEL as u64 / FUEL_PER_GAS;
    let mut runs = Vec::new();
    for tier in [TierChoice::Compiled, TierChoice::Interpreter] {
        rt.set_tier(tier);
        let mut w = world();
        let t = deploy(&mut w, &wat(TABLES));
        // Gas left before and after each operation, and what `table.grow` returned.
        let mut run = |input: [u8; 3]| {
            let out = send(&mut w, 1, t, U256::ZERO, input.to_vec());
            ok(&out);
            let word = |i: usize| u64::from_le_bytes(out.output[i..i + 8].try_into().unwrap());
            let grew = i32::from_le_bytes(out.output[40..44].try_into().unwrap());
            ([word(0) - word(8), word(8) - word(16), word(16) - word(24)], grew)
        };
        let (zero, grew0) = run([0, 0, 0]);
        let (some, grew) = run([20, 90, 50]);
        assert_eq!((grew0, grew), (100, 100), "{tier:?}");
        assert_eq!(some[0] - zero[0], 100 * per, "{tier:?}: grow by 100");
        assert_eq!(some[1] - zero[1], 90 * per, "{tier:?}: fill 90");
        assert_eq!(some[2] - zero[2], 50 * per, "{tier:?}: copy 50");
        // Past the maximum (1,000): -1, the count paid, no growth.
        let (past, refused) = run([250, 0, 0]);
        assert_eq!(refused, -1, "{tier:?}");
        assert_eq!(past[0] - zero[0], 1_250 * per, "{tier:?}: asked for 1,250");
        runs.push((zero, some, past));
    }
    rt.set_tier(before);
    assert_eq!(runs[0], runs[1], "the tiers charge alike");
}

/// Reads the gas left around memory growth and bulk memory operations whose sizes come from
/// the input, and returns the readings: what both tiers must charge identically.
const METERED: &str = r#"
(module
  (import "farol" "gas_left" (func $gas (result i64)))
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (local $n i32)
    (call $cd (i32.const 0) (i32.const 0) (i32.const 4))
    (local.set $n (i32.load (i32.const 0)))
    (i64.store (i32.const 8) (call $gas))
    (drop (memory.grow (i32.and (local.get $n) (i32.const 7))))
    (i64.store (i32.const 16) (call $gas))
    (memory.fill (i32.const 64) (i32.const 1) (i32.and (local.get $n) (i32.const 0x3ffff)))
    (i64.store (i32.const 24) (call $gas))
    (memory.copy (i32.const 128) (i32.const 64) (i32.shr_u (local.get $n) (i32.const 14)))
    (i64.store (i32.const 32) (call $gas))
    (call $exit (i32.const 0) (i32.const 8) (i32.const 32))))
"#;

/// Table operations whose sizes come from the input (byte 0: elements to grow by; byte 1:
/// elements to fill; byte 2: elements to copy), with the gas left around each and what
/// `table.grow` returned: both tiers must charge and answer identically.
const TABLES: &str = r#"
(module
  (import "farol" "gas_left" (func $gas (result i64)))
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (table 100 1000 funcref)
  (func (export "call")
    (call $cd (i32.const 0) (i32.const 0) (i32.const 3))
    (i64.store (i32.const 8) (call $gas))
    (i32.store (i32.const 48)
      (table.grow (ref.null func) (i32.mul (i32.load8_u (i32.const 0)) (i32.const 5))))
    (i64.store (i32.const 16) (call $gas))
    (table.fill (i32.const 0) (ref.null func) (i32.load8_u (i32.const 1)))
    (i64.store (i32.const 24) (call $gas))
    (table.copy (i32.const 0) (i32.const 1) (i32.load8_u (i32.const 2)))
    (i64.store (i32.const 32) (call $gas))
    (call $exit (i32.const 0) (i32.const 8) (i32.const 44))))
"#;

/// Float arithmetic on operands from the input (f64 `a`, `b` at 0 and 8; f32 `c`, `d` at 16
/// and 20); returns the bits of each result, NaNs included.
const FLOATS: &str = r#"
(module
  (import "farol" "calldata_copy" (func $cd (param i32 i32 i32)))
  (import "farol" "exit" (func $exit (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "call")
    (call $cd (i32.const 0) (i32.const 0) (i32.const 24))
    (f64.store (i32.const 64) (f64.add (f64.load (i32.const 0)) (f64.load (i32.const 8))))
    (f64.store (i32.const 72) (f64.div (f64.load (i32.const 0)) (f64.load (i32.const 8))))
    (f64.store (i32.const 80) (f64.sqrt (f64.load (i32.const 0))))
    (f64.store (i32.const 88) (f64.min (f64.load (i32.const 0)) (f64.load (i32.const 8))))
    (f64.store (i32.const 96) (f64.promote_f32 (f32.load (i32.const 16))))
    (f32.store (i32.const 104) (f32.mul (f32.load (i32.const 16)) (f32.load (i32.const 20))))
    (f32.store (i32.const 108) (f32.demote_f64 (f64.load (i32.const 0))))
    (f32.store (i32.const 112) (f32.nearest (f32.load (i32.const 16))))
    (f64.store (i32.const 120) (f64.neg (f64.load (i32.const 8))))
    (call $exit (i32.const 0) (i32.const 64) (i32.const 64))))
"#;

/// Operands for [`FLOATS`]: NaNs with payloads and signs, infinities, zeros, negatives.
fn float_input(i: usize) -> Vec<u8> {
    let f64s: [u64; 8] = [
        0x7ff4_0000_0000_0001, // signalling NaN with a payload
        0xfff8_0000_0000_0000, // negative quiet NaN
        0x7ff8_dead_beef_0000, // quiet NaN with a payload
        0x0000_0000_0000_0000, // +0
        0x8000_0000_0000_0000, // -0
        0x7ff0_0000_0000_0000, // +inf
        0xbff0_0000_0000_0000, // -1
        0x3ff8_0000_0000_0000, // 1.5
    ];
    let f32s: [u32; 6] =
        [0x7fa0_0001, 0xffc0_0000, 0x7f80_0000, 0x0000_0000, 0xbf80_0000, 0x7fc1_2345];
    let mut v = Vec::new();
    v.extend_from_slice(&f64s[i % 8].to_le_bytes());
    v.extend_from_slice(&f64s[(i / 8) % 8].to_le_bytes());
    v.extend_from_slice(&f32s[i % 6].to_le_bytes());
    v.extend_from_slice(&f32s[(i / 6) % 6].to_le_bytes());
    v
}

/// The same contracts and calls on both tiers: examples, metering edge cases, float results
/// with NaNs, hostile modules and random modules. Returns every block's output.
fn tier_workload(cases: u64) -> Vec<BlockOutput> {
    use rand::RngCore;
    let mut w = world();
    let mut rng = farol_execution::workload::rng(0x7135);
    let mut outs = Vec::new();
    let metered = deploy(&mut w, &wat(METERED));
    let pricer = deploy(&mut w, &rust("option_pricer"));
    let token = deploy(&mut w, &rust("erc20"));
    let looping = deploy(
        &mut w,
        &wat(r#"(module (memory (export "memory") 1)
        (func (export "call") (loop (br 0))))"#),
    );
    let floats = deploy(&mut w, &wat(FLOATS));
    let tables = deploy(&mut w, &wat(TABLES));
    let deep = deploy(
        &mut w,
        &wat(&STACKED
            .replace("(call $f (i32.load8_u (i32.const 30)))", "(call $f (i32.const 100000))")),
    );
    for round in 0..8u32 {
        let mut txs = Vec::new();
        for i in 0..4 {
            let mut n = [0u8; 4];
            rng.fill_bytes(&mut n);
            let gas = [30_000, 60_000, 200_000, 1_000_000][i];
            txs.push(call(&mut w, metered, n.to_vec(), gas));
        }
        txs.push(call(&mut w, pricer, option_price_input(8 + u64::from(round)), 2_000_000));
        let mut junk = vec![0u8; (rng.next_u32() % 100) as usize];
        rng.fill_bytes(&mut junk);
        txs.push(call(&mut w, token, junk, 300_000));
        txs.push(call(&mut w, looping, vec![], 50_000 + u64::from(round) * 7));
        txs.push(call(&mut w, deep, vec![0; 32], 5_000_000));
        for i in 0..8 {
            txs.push(call(&mut w, floats, float_input(round as usize * 8 + i), 100_000));
        }
        for _ in 0..2 {
            let mut n = [0u8; 3];
            rng.fill_bytes(&mut n);
            txs.push(call(&mut w, tables, n.to_vec(), 100_000));
        }
        outs.push(block(&mut w, txs));
    }
    let imports = wat(ALL_IMPORTS);
    let exports = wat(r#"(module (memory (export "memory") 1) (func (export "call")))"#);
    for _ in 0..cases {
        let Some(module) = random_module(&mut rng, &imports, &exports, true) else { continue };
        let from = w.users[0];
        let (addr, tx) = w.deploy(from, deploy_code(&contract_code(&module)).into(), 16_000_000);
        let out = block(&mut w, vec![tx]);
        let deployed = out.txs[0].status == TxStatus::Success;
        outs.push(out);
        if !deployed {
            continue;
        }
        let txs = random_calls(&mut w, addr, &mut rng);
        outs.push(block(&mut w, txs));
    }
    outs
}

/// Held by the tests that change the process's runtime settings (the tier, ready instances),
/// so that each compares runs under the settings it chose.
static SETTINGS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The interpreter (calls before compilation finishes) and the compiled module run the same
/// rewritten code, so receipts, gas, output, logs and state must be identical, call for call.
#[test]
fn the_interpreter_and_the_compiled_tier_agree() {
    use farol_execution::wasm::{TierChoice, WasmRuntime};
    let _settings = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let cases: u64 = if std::env::var("FAROL_LONG").is_ok_and(|v| v == "1") { 1_000 } else { 60 };
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let before = rt.tier();
    rt.set_tier(TierChoice::Compiled);
    let compiled = tier_workload(cases);
    rt.set_tier(TierChoice::Interpreter);
    let interpreted_before = rt.stats().interpreted;
    let interpreted = tier_workload(cases);
    let ran = rt.stats().interpreted - interpreted_before;
    rt.set_tier(before);
    assert_eq!(compiled.len(), interpreted.len());
    for (i, (a, b)) in compiled.iter().zip(&interpreted).enumerate() {
        assert_eq!(a, b, "block {i}");
    }
    assert!(ran > 8 * 16, "only {ran} calls interpreted");
    // Every NaN an operation produced is the canonical one on both tiers; `neg` keeps bits.
    let float_outputs: Vec<&Bytes> =
        interpreted[..8].iter().flat_map(|b| &b.txs[8..16]).map(|t| &t.output).collect();
    let mut nans = 0;
    for out in &float_outputs {
        assert_eq!(out.len(), 64, "{out:?}");
        for at in [0, 8, 16, 24, 32] {
            let bits = u64::from_le_bytes(out[at..at + 8].try_into().unwrap_or_default());
            if f64::from_bits(bits).is_nan() {
                assert_eq!(bits, 0x7ff8_0000_0000_0000, "f64 at {at}: {bits:#x}");
                nans += 1;
            }
        }
        for at in [40, 44, 48] {
            let bits = u32::from_le_bytes(out[at..at + 4].try_into().unwrap_or_default());
            if f32::from_bits(bits).is_nan() {
                assert_eq!(bits, 0x7fc0_0000, "f32 at {at}: {bits:#x}");
                nans += 1;
            }
        }
    }
    assert!(nans > 50, "only {nans} NaN results");
    let statuses: std::collections::BTreeSet<String> =
        interpreted.iter().flat_map(|b| &b.txs).map(|t| format!("{:?}", t.status)).collect();
    eprintln!("{ran} calls interpreted; outcomes {statuses:?}");
    assert!(statuses.len() >= 4, "{statuses:?}");
}

/// A call that finds a ready instance (made on another thread before the call) and one that
/// instantiates its own give the same results: the same blocks run with ready instances on
/// and off must match exactly.
#[test]
fn ready_instances_change_nothing() {
    use farol_execution::wasm::{TierChoice, WasmRuntime};
    let _settings = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let (tier, ready) = (rt.tier(), rt.ready_instances());
    rt.set_tier(TierChoice::Compiled);
    rt.set_ready_instances(true);
    let used_before = rt.stats().ready_calls;
    let with = tier_workload(30);
    // Other tests' calls may take ready instances until they are off; none after.
    rt.set_ready_instances(false);
    let used = rt.stats().ready_calls - used_before;
    let without = tier_workload(30);
    assert_eq!(rt.stats().ready_calls - used_before, used, "an instance was used while off");
    rt.set_tier(tier);
    rt.set_ready_instances(ready);
    assert_eq!(with.len(), without.len());
    for (i, (a, b)) in with.iter().zip(&without).enumerate() {
        assert_eq!(a, b, "block {i}");
    }
    // Each module the workload deploys is called in the next block, on the instance its
    // compile thread left (unless other tests' modules pushed it out of the limit first).
    assert!(used > 0, "no call found a ready instance");
}

/// Traces `tx` as the next block's only transaction with the tracer `opts` names (the struct
/// logger's frame as JSON too).
fn trace_next(w: &World, tx: &RecoveredTx, opts: serde_json::Value) -> serde_json::Value {
    use farol_execution::{trace_transactions, GethTrace, TraceContext, TRACE_BUDGET};
    let env = w.block_env(Address::from([0xbe; 20]));
    let context =
        TraceContext { block_hash: None, call: false, budget: TRACE_BUDGET, deadline: None };
    let opts = serde_json::from_value(opts).unwrap_or_else(|e| panic!("options: {e}"));
    let txs = std::slice::from_ref(tx);
    let traces = trace_transactions(&w.state, &w.chain, &env, txs, 0..1, &opts, context)
        .unwrap_or_else(|e| panic!("trace: {e}"));
    match traces.into_iter().next() {
        Some(GethTrace::Default(steps)) => serde_json::to_value(steps),
        Some(other) => serde_json::to_value(other),
        None => panic!("no trace"),
    }
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The frames a WASM contract runs and the logs it makes are traced where they happen: in
/// Solidity -> Rust token -> Solidity hook -> Rust token, the call tracer shows every frame
/// at its depth, each Transfer log once, in the frame that made it and at its place among
/// that frame's calls; the 4byte tracer counts the calls WASM makes.
#[test]
fn traces_see_inside_wasm_frames() {
    use serde_json::{json, Value};

    let (mut w, token) = token_world();
    let user = deploy_sol(&mut w, "TokenUser", token.abi_encode());
    let receiver = deploy_sol(&mut w, "HookReceiver", token.abi_encode());
    let u1 = w.users[1];
    let approve = IToken::approveCall { spender: user, amount: U256::from(1_000) };
    ok(&send(&mut w, 0, token, U256::ZERO, approve.abi_encode()));
    let pull = ITokenUser::pullAndSplitCall { to: u1, amount: U256::from(1_000) };
    ok(&send(&mut w, 0, user, U256::ZERO, pull.abi_encode()));

    let pay = ITokenUser::tryPayCall { receiver, amount: U256::from(200), data: vec![1].into() };
    let from = w.users[0];
    let tx = w.call(from, user, U256::ZERO, pay.abi_encode(), 2_000_000, Flavor::DynamicFee, 1);
    let env = w.block_env(Address::from([0xbe; 20]));
    let out = execute_sequential(&w.state, &w.chain, &env, std::slice::from_ref(&tx))
        .unwrap_or_else(|e| panic!("sequential: {e}"));
    ok(&out.txs[0]);
    assert_eq!(out.txs[0].logs.len(), 2, "{:?}", out.txs[0].logs);
    let trace = |opts: Value| trace_next(&w, &tx, opts);

    let top = trace(json!({ "tracer": "callTracer", "tracerConfig": { "withLog": true } }));
    let addr = |a: Address| Value::String(format!("{a:#x}"));
    let calls = |f: &Value| f["calls"].as_array().cloned().unwrap_or_default();
    let logs = |f: &Value| f["logs"].as_array().cloned().unwrap_or_default();
    let transfer = IToken::Transfer::SIGNATURE_HASH;
    // The transaction's frame: TokenUser, which makes no log and one call.
    assert_eq!(top["to"], addr(user), "{top:#}");
    assert_eq!(top["gasUsed"], json!(format!("{:#x}", out.txs[0].gas_used)));
    assert!(logs(&top).is_empty(), "{top:#}");
    let [pay] = &calls(&top)[..] else { panic!("TokenUser's calls: {top:#}") };
    // The token's transferAndCall (WASM): its Transfer, then the hook.
    assert_eq!((&pay["to"], &pay["type"]), (&addr(token), &json!("CALL")), "{pay:#}");
    let [paid] = &logs(pay)[..] else { panic!("the token's logs: {pay:#}") };
    assert_eq!(paid["address"], addr(token));
    assert_eq!(paid["topics"][0], json!(format!("{transfer:#x}")));
    assert_eq!(paid["topics"][2], json!(format!("{:#x}", receiver.into_word())));
    assert_eq!(paid["position"], json!("0x0"), "the Transfer comes before the hook");
    let [hook] = &calls(pay)[..] else { panic!("the token's calls: {pay:#}") };
    // The hook (EVM): balanceOf and transfer, each back in the token (WASM).
    assert_eq!(hook["to"], addr(receiver), "{hook:#}");
    assert!(logs(hook).is_empty(), "{hook:#}");
    let [seen, refund] = &calls(hook)[..] else { panic!("the hook's calls: {hook:#}") };
    assert_eq!((&seen["to"], &seen["type"]), (&addr(token), &json!("STATICCALL")));
    assert!(logs(seen).is_empty() && calls(seen).is_empty(), "{seen:#}");
    assert_eq!((&refund["to"], &refund["type"]), (&addr(token), &json!("CALL")));
    let [back] = &logs(refund)[..] else { panic!("the refund's logs: {refund:#}") };
    assert_eq!(back["topics"][1], json!(format!("{:#x}", receiver.into_word())));
    assert_eq!(back["topics"][2], json!(format!("{:#x}", user.into_word())));

    // The 4byte tracer counts the calls WASM makes: the hook's selector is there.
    let selectors = trace(json!({ "tracer": "4byteTracer" }));
    let hook = alloy_primitives::keccak256("onTokenTransfer(address,uint256,bytes)");
    let key = format!("0x{}-", alloy_primitives::hex::encode(&hook[..4]));
    let found = selectors.as_object().is_some_and(|m| m.keys().any(|k| k.starts_with(&key)));
    assert!(found, "{selectors:#}");

    // The struct logger records EVM steps: TokenUser's (depth 1) and, right after its CALL
    // into the token (a WASM frame at depth 2, with no steps of its own), the hook's (depth 3),
    // in one run; then TokenUser's again.
    let steps = trace(json!({ "disableStack": true }));
    assert_eq!(steps["gas"], json!(out.txs[0].gas_used));
    assert_eq!(steps["failed"], json!(false));
    let logs = steps["structLogs"].as_array().cloned().unwrap_or_else(|| panic!("no steps"));
    let depths: Vec<u64> = logs.iter().filter_map(|s| s["depth"].as_u64()).collect();
    assert_eq!(depths.len(), logs.len());
    let first = depths.iter().position(|d| *d == 3).unwrap_or_else(|| panic!("no hook steps"));
    let after = first + depths[first..].iter().take_while(|d| **d == 3).count();
    assert_eq!(logs[first - 1]["op"], json!("CALL"), "{:#}", logs[first - 1]);
    assert_eq!(logs[first - 1]["depth"], json!(1));
    assert!(after < depths.len() && depths[after..].iter().all(|d| *d == 1), "{depths:?}");
    assert!(depths[..first].iter().all(|d| *d == 1), "{depths:?}");
    // Among the hook's steps: its balanceOf and transfer back into the token.
    let ops: Vec<&str> = logs[first..after].iter().filter_map(|s| s["op"].as_str()).collect();
    let calls: Vec<&str> = ops.into_iter().filter(|o| o.ends_with("CALL")).collect();
    assert_eq!(calls, ["STATICCALL", "CALL"]);
    // The struct logger's `limit` counts the steps shown.
    let limit = first + 5;
    let cut = trace(json!({ "disableStack": true, "limit": limit }));
    let cut = cut["structLogs"].as_array().cloned().unwrap_or_default();
    assert_eq!(cut.len(), limit);
    assert_eq!(cut[..], logs[..limit]);

    // Parity's vmTrace: TokenUser's CALL has the token's frame as its `sub`; that frame's one
    // entry (no opcode: WASM ran it) has the hook's steps, with its two calls back.
    use farol_execution::{trace_with, TraceContext, TraceType, Tracer, TxTrace, TRACE_BUDGET};
    let context =
        TraceContext { block_hash: None, call: false, budget: TRACE_BUDGET, deadline: None };
    let vm = Tracer::Parity([TraceType::VmTrace].into_iter().collect());
    let txs = std::slice::from_ref(&tx);
    let traces = trace_with(&w.state, &w.chain, &env, txs, 0..1, &vm, context)
        .unwrap_or_else(|e| panic!("{e}"));
    let Some(TxTrace::Parity(results)) = traces.into_iter().next() else { panic!("no trace") };
    let top = serde_json::to_value(results.vm_trace).unwrap_or_else(|e| panic!("{e}"));
    let ops = |t: &Value| t["ops"].as_array().cloned().unwrap_or_default();
    let subs = |t: &Value| -> Vec<Value> {
        ops(t).into_iter().filter(|o| !o["sub"].is_null()).map(|o| o["sub"].clone()).collect()
    };
    let [token_frame] = &subs(&top)[..] else { panic!("TokenUser's calls: {top:#}") };
    let [entry] = &ops(token_frame)[..] else { panic!("the token's entries: {token_frame:#}") };
    assert!(entry.get("op").is_none() && entry["ex"].is_null(), "{entry:#}");
    let hook = &entry["sub"];
    let hook_ops: Vec<Value> = ops(hook).iter().map(|o| o["op"].clone()).collect();
    assert!(hook_ops.contains(&json!("STATICCALL")) && hook_ops.contains(&json!("CALL")));
    assert_eq!(subs(hook).len(), 2, "{hook:#}");

    // A budget spent inside the WASM frame stops the transaction there (its further calls
    // do not run) and the trace is refused.
    let small = TraceContext { budget: 600, ..context };
    let tracer = Tracer::Geth(
        serde_json::from_value(
            json!({ "tracer": "callTracer", "tracerConfig": { "withLog": true } }),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    match trace_with(&w.state, &w.chain, &env, txs, 0..1, &tracer, small) {
        Err(farol_execution::TraceError::TooLarge { limit: 600 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

/// Under Amsterdam a value transfer journals a log (EIP-7708) before the called frame runs,
/// and revm shows the logs of a WASM frame to the tracer again when it ends: a value call into
/// the Rust token's `transfer` traces the transfer log and the token's Transfer, each once.
#[test]
fn a_value_call_into_wasm_traces_each_log_once() {
    let (mut w, token) = token_world();
    w.chain.spec = farol_execution::SpecId::AMSTERDAM;
    let (from, to) = (w.users[0], w.users[2]);
    let transfer = IToken::transferCall { to, amount: U256::from(5) }.abi_encode();
    let tx = w.call(from, token, U256::from(1_000), transfer, 500_000, Flavor::DynamicFee, 1);
    let env = w.block_env(Address::from([0xbe; 20]));
    let out = execute_sequential(&w.state, &w.chain, &env, std::slice::from_ref(&tx))
        .unwrap_or_else(|e| panic!("sequential: {e}"));
    ok(&out.txs[0]);
    let logs = &out.txs[0].logs;
    assert_eq!(logs.len(), 2, "the transfer log and the token's: {logs:?}");
    let opts = serde_json::json!({ "tracer": "callTracer", "tracerConfig": { "withLog": true } });
    let trace = trace_next(&w, &tx, opts);
    let traced: Vec<String> = trace["logs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["address"].as_str().unwrap_or_default().to_lowercase())
        .collect();
    let made: Vec<String> = logs.iter().map(|l| format!("{:#x}", l.address)).collect();
    assert_eq!(traced, made, "{trace:#}");
}

/// `eth_createAccessList` lists what WASM frames load as it lists what EVM code loads: the
/// Rust token's two balance slots for a transfer (priced with the list exactly as EIP-2930
/// says: the token's entry and two keys paid, two cold loads saved), and the account a WASM
/// contract sends value to.
#[test]
fn the_access_list_of_a_call_lists_what_wasm_loads() {
    use alloy_primitives::B256;
    use farol_execution::create_access_list;

    let (mut w, token) = token_world();
    let (from, to) = (w.users[0], w.users[2]);
    let transfer = IToken::transferCall { to, amount: U256::from(5) }.abi_encode();
    let tx = w.call(from, token, U256::ZERO, transfer, 500_000, Flavor::DynamicFee, 1);
    let env = w.block_env(Address::from([0xbe; 20]));
    let plain = execute_sequential(&w.state, &w.chain, &env, std::slice::from_ref(&tx))
        .unwrap_or_else(|e| panic!("sequential: {e}"));
    ok(&plain.txs[0]);
    let listed =
        create_access_list(&w.state, &w.chain, &env, &tx, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.outcome.status, TxStatus::Success);
    // OpenZeppelin's layout: balances in the mapping at slot 0.
    let balance_slot = |a: Address| keccak256((a, U256::ZERO).abi_encode());
    let list = &listed.access_list.0;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].address, token);
    let mut want = vec![balance_slot(from), balance_slot(to)];
    want.sort();
    assert_eq!(list[0].storage_keys, want);
    // An address costs 2,400 and a key 1,900; a listed slot's first load costs 100 instead
    // of 2,100.
    assert_eq!(listed.outcome.gas_used, plain.txs[0].gas_used + 2_400 + 2 * 1_900 - 2 * 2_000);
    ok(&block(&mut w, vec![tx]).txs[0]);

    // WASM sends value to an account: the account is listed (no slots).
    let vault = deploy(&mut w, &wat(VAULT));
    let ether = U256::from(10u64).pow(U256::from(18));
    let fund = w.call(from, vault, ether, vec![], 100_000, Flavor::DynamicFee, 1);
    ok(&block(&mut w, vec![fund]).txs[0]);
    let payee = Address::from([0x77; 20]);
    let pay = (payee, U256::from(1)).abi_encode();
    let tx = w.call(from, vault, U256::ZERO, pay, 500_000, Flavor::DynamicFee, 1);
    let env = w.block_env(Address::from([0xbe; 20]));
    let listed =
        create_access_list(&w.state, &w.chain, &env, &tx, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.outcome.status, TxStatus::Success);
    let list = &listed.access_list.0;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0].address, list[0].storage_keys.as_slice()), (payee, &[] as &[B256]));
}

/// `traceTransfers` (`eth_simulateV1`): each value transfer of a transaction that succeeds
/// shows among its logs, where it happened, as an ERC-20 Transfer of 0xeeee…eeee: EVM code
/// forwarding value to a WASM contract, a WASM contract sending value, a value call into the
/// Rust token before its own Transfer; nothing for a transaction that reverts. The state and
/// the outcomes are otherwise those of the plain execution.
#[test]
fn transfers_show_as_logs_where_they_happen() {
    use farol_execution::{execute_call, execute_with_transfer_logs, TRANSFER_LOG_ADDRESS};

    let (mut w, token) = token_world();
    let vault = deploy(&mut w, &wat(VAULT));
    let user = deploy_sol(&mut w, "TokenUser", Address::ZERO.abi_encode());
    let from = w.users[0];
    let ether = U256::from(10u64).pow(U256::from(18));
    let payee = Address::from([0x77; 20]);
    let mut call = |to: Address, value: U256, data: Vec<u8>| {
        w.call(from, to, value, data, 500_000, Flavor::DynamicFee, 1)
    };
    let mut txs = vec![
        // EVM -> WASM with value: the sender pays TokenUser, which pays the vault.
        call(user, ether, ITokenUser::forwardCall { to: vault }.abi_encode()),
        // WASM sends value.
        call(vault, U256::ZERO, (payee, U256::from(7)).abi_encode()),
        // Value into the token's transfer: the ether moves before its Transfer log.
        call(
            token,
            U256::from(3),
            IToken::transferCall { to: payee, amount: U256::from(5) }.abi_encode(),
        ),
        // More than the vault has: it reverts, and shows nothing.
        call(vault, U256::ZERO, (payee, ether * U256::from(2)).abi_encode()),
    ];
    txs.push(
        // A creation with value whose init code self-destructs to the payee.
        w.tx(
            from,
            alloy_primitives::TxKind::Create,
            U256::from(9),
            [&[0x73][..], payee.as_slice(), &[0xff]].concat().into(),
            100_000,
            Flavor::DynamicFee,
            1,
        ),
    );
    let env = w.block_env(Address::from([0xbe; 20]));
    let plain = execute_call(&w.state, &w.chain, &env, &txs).unwrap_or_else(|e| panic!("{e}"));
    let (output, shown) = execute_with_transfer_logs(&w.state, &w.chain, &env, &txs, true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output, plain, "the block is the plain execution's");
    let transfer = |log: &alloy_primitives::Log| -> Option<(Address, Address, U256)> {
        (log.address == TRANSFER_LOG_ADDRESS).then(|| {
            let t = log.topics();
            let word = |i: usize| Address::from_word(t[i]);
            (word(1), word(2), U256::from_be_slice(&log.data.data))
        })
    };
    let kinds = |i: usize| -> Vec<Option<(Address, Address, U256)>> {
        shown[i].iter().map(transfer).collect()
    };
    for (i, (logs, b)) in shown.iter().zip(&plain.txs).enumerate() {
        let real: Vec<_> =
            logs.iter().filter(|l| l.address != TRANSFER_LOG_ADDRESS).cloned().collect();
        assert_eq!(real, b.logs, "{i}");
    }
    assert_eq!(kinds(0), vec![Some((from, user, ether)), Some((user, vault, ether))]);
    assert_eq!(kinds(1), vec![Some((vault, payee, U256::from(7)))]);
    assert_eq!(kinds(2), vec![Some((from, token, U256::from(3))), None]);
    assert_eq!(plain.txs[3].status, TxStatus::Revert);
    assert!(shown[3].is_empty());
    let created = plain.txs[4].contract_address.unwrap_or_else(|| panic!("{:?}", plain.txs[4]));
    let nine = U256::from(9);
    assert_eq!(kinds(4), vec![Some((from, created, nine)), Some((created, payee, nine))]);
}

/// A WASM frame pays for its instance before its module runs: a fixed charge, its initial
/// memory, and what instantiation copies into it (active data segments per 32-byte word,
/// element segments per element: the interpreter sets up passive ones too, and they count
/// since stop 48; passive data is paid when `memory.init` copies it). Before stop 43 only
/// the memory was paid.
#[test]
fn a_frame_pays_for_its_instance_and_what_instantiation_copies() {
    use farol_execution::wasm::{
        frame_gas, validate, DATA_WORD_GAS, ELEMENT_GAS, SEGMENT_GAS, WASM_FRAME_GAS,
    };
    let _settings = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = world();
    let data = "x".repeat(4_000);
    let module = |extra: &str| {
        wat(&format!(
            r#"(module (memory (export "memory") 1) (table 16 funcref)
                 (func $f (export "call")) {extra})"#
        ))
    };
    let plain = module("");
    let with_data = module(&format!(r#"(data (i32.const 0) "{data}")"#));
    let passive_data = module(&format!(r#"(data "{data}")"#));
    let with_elements = module("(elem (i32.const 0) func $f $f $f $f $f $f $f $f $f $f)");
    let passive_elements = module("(elem func $f $f $f $f $f $f $f $f $f $f)");
    let info = |m: &[u8]| validate(m).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(frame_gas(&info(&plain)), WASM_FRAME_GAS + farol_execution::wasm::memory_gas(1));
    let gas_of = |w: &mut World, m: &[u8]| {
        let addr = deploy(w, m);
        let tx = call(w, addr, vec![], 100_000);
        let out = block(w, vec![tx]);
        ok(&out.txs[0]);
        (addr, out.txs[0].gas_used)
    };
    let (plain_addr, plain_gas) = gas_of(&mut w, &plain);
    // The instance's charge is taken up front: one gas short, the frame runs out at once.
    let up_front = frame_gas(&info(&plain));
    assert!(plain_gas >= 21_000 + up_front && plain_gas < 21_000 + up_front + 50, "{plain_gas}");
    let tx = call(&mut w, plain_addr, vec![], 21_000 + up_front - 1);
    let out = block(&mut w, vec![tx]);
    assert_eq!(
        out.txs[0].status,
        TxStatus::Halt(farol_execution::OUT_OF_GAS.into()),
        "{:?}",
        out.txs[0]
    );
    assert_eq!(out.txs[0].gas_used, 21_000 + up_front - 1);
    // 4,000 bytes of active data: 125 words; every segment pays for being set up.
    assert_eq!(gas_of(&mut w, &with_data).1, plain_gas + SEGMENT_GAS + 125 * DATA_WORD_GAS);
    assert_eq!(gas_of(&mut w, &passive_data).1, plain_gas + SEGMENT_GAS);
    assert_eq!(gas_of(&mut w, &with_elements).1, plain_gas + SEGMENT_GAS + 10 * ELEMENT_GAS);
    assert_eq!(gas_of(&mut w, &passive_elements).1, plain_gas + SEGMENT_GAS + 10 * ELEMENT_GAS);
    // Empty segments are not free: a hundred of them cost a hundred setups.
    let empties = module(&"(data (i32.const 0) \"\")".repeat(100));
    assert_eq!(gas_of(&mut w, &empties).1, plain_gas + 100 * SEGMENT_GAS);
}

/// A call pays for its callee's frame, one fuel per [`FRAME_SLOTS_PER_FUEL`] slots of its
/// stack cost (its locals, operands and distinct constants among them), on every tier alike:
/// the interpreter clears the frame and copies the constants in at every call. Before stop 48
/// a call cost 4 fuel whatever its callee, and a function of 1,000 locals and 4,000
/// constants that ran none of them took the interpreter 280 ns per gas.
#[test]
fn a_call_pays_for_its_callees_frame() {
    use farol_execution::wasm::{TierChoice, WasmRuntime, FRAME_SLOTS_PER_FUEL, FUEL_PER_GAS};
    let _settings = SETTINGS.lock().unwrap_or_else(|e| e.into_inner());
    let rt = WasmRuntime::global().unwrap_or_else(|e| panic!("{e}"));
    let before = rt.tier();
    // 64 calls of `$f`, whose body runs nothing but the `if`.
    let module = |locals: usize, constants: usize| {
        let sets: String = (0..constants)
            .map(|k| format!("(local.set 1 (i64.const {}))", 0x1_0000_0000u64 + k as u64))
            .collect();
        wat(&format!(
            r#"(module (memory (export "memory") 1)
                 (func $f (param i32) (local {}) (if (local.get 0) (then (nop) {sets})))
                 (func (export "call") (local $i i32)
                   (loop $l (call $f (i32.const 0))
                     (local.set $i (i32.add (local.get $i) (i32.const 1)))
                     (br_if $l (i32.lt_u (local.get $i) (i32.const 64))))))"#,
            "i64 ".repeat(locals)
        ))
    };
    let mut runs = Vec::new();
    for tier in [TierChoice::Compiled, TierChoice::Interpreter] {
        rt.set_tier(tier);
        let mut w = world();
        let mut gas = |m: &[u8]| {
            let addr = deploy(&mut w, m);
            let tx = call(&mut w, addr, vec![], 1_000_000);
            let out = block(&mut w, vec![tx]);
            ok(&out.txs[0]);
            out.txs[0].gas_used
        };
        runs.push([gas(&module(1, 0)), gas(&module(1_000, 0)), gas(&module(1_000, 1_000))]);
    }
    rt.set_tier(before);
    assert_eq!(runs[0], runs[1], "the tiers charge alike");
    // `$f`'s cost: its parameter and locals, one operand at most, its distinct constants, the
    // rewrite's 6 slots and the call's 8.
    let per_call = |slots: u64| slots.div_ceil(u64::from(FRAME_SLOTS_PER_FUEL));
    let small = per_call(2 + 1 + 6 + 8);
    let extra = |slots: u64| 64 * (per_call(slots) - small) / FUEL_PER_GAS;
    let [plain, locals, constants] = runs[0];
    assert_eq!(locals - plain, extra(1_001 + 1 + 6 + 8), "1,000 locals");
    assert_eq!(constants - plain, extra(1_001 + 1 + 1_000 + 6 + 8), "and 1,000 constants");
}

/// A parallel executor runs at most as many workers as the WASM pool has instances for at
/// full nesting, besides what its other users keep (found by a review in stop 58: with 41
/// threads or more, a block of deeply nested WASM calls could find the pool empty in
/// parallel only).
#[test]
fn a_parallel_executor_has_no_more_workers_than_the_wasm_pool_serves() {
    use farol_execution::wasm::MAX_PARALLEL_WORKERS;
    use farol_execution::{ParallelConfig, ParallelExecutor};
    // (That they fit in the pool is checked where they are defined, when it compiles.)
    assert_eq!(MAX_PARALLEL_WORKERS, 40);
    let many = ParallelExecutor::new(ParallelConfig { threads: 256, ..ParallelConfig::default() });
    assert_eq!(many.config().threads, MAX_PARALLEL_WORKERS);
    let two = ParallelExecutor::new(ParallelConfig { threads: 2, ..ParallelConfig::default() });
    assert_eq!(two.config().threads, 2);
}
