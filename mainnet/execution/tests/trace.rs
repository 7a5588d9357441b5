//! The debug tracers and the access-list inspector run the transactions exactly as the
//! sequential executor does: every traced transaction ends as its block's outcome says.

use farol_execution::workload::{rng, World, WorldSpec};
use farol_execution::{
    create_access_list, execute_sequential, trace_transactions, trace_with, BlockOutput,
    GethDebugTracingOptions, GethTrace, TraceContext, TraceError, TraceType, Tracer, TRACE_BUDGET,
};
use serde_json::{json, Value};

fn world() -> World {
    World::new(WorldSpec::SMALL).unwrap_or_else(|e| panic!("setting up the world: {e}"))
}

fn options(v: Value) -> GethDebugTracingOptions {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("tracer options: {e}"))
}

const BLOCK: TraceContext =
    TraceContext { block_hash: None, call: false, budget: TRACE_BUDGET, deadline: None };

/// A random block over `world` that executes, with its output.
fn block(
    world: &mut World,
    seed: u64,
) -> (farol_execution::BlockEnv, Vec<farol_execution::RecoveredTx>, BlockOutput) {
    let (env, txs) = world.random_block(40, &mut rng(seed));
    let out = execute_sequential(&world.state, &world.chain, &env, &txs)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    (env, txs, out)
}

#[test]
fn traces_end_as_the_block_says() {
    let mut w = world();
    for seed in 0..4 {
        let (env, txs, out) = block(&mut w, seed);
        let all = 0..txs.len();
        let trace = |opts: Value, range| {
            trace_transactions(&w.state, &w.chain, &env, &txs, range, &options(opts), BLOCK)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
        };
        let calls = trace(json!({ "tracer": "callTracer" }), all.clone());
        let logs = trace(json!({}), all.clone());
        assert_eq!(calls.len(), txs.len());
        assert_eq!(logs.len(), txs.len());
        let mut failed = 0;
        for (i, o) in out.txs.iter().enumerate() {
            let GethTrace::CallTracer(frame) = &calls[i] else { panic!("not a call frame") };
            assert_eq!(
                frame.gas_used,
                alloy_primitives::U256::from(o.gas_used),
                "seed {seed} tx {i}"
            );
            assert_eq!(frame.error.is_none(), o.is_success(), "seed {seed} tx {i}: {frame:?}");
            assert_eq!(frame.from, txs[i].sender);
            let GethTrace::Default(steps) = &logs[i] else { panic!("not a struct log") };
            assert_eq!(steps.gas, o.gas_used, "seed {seed} tx {i}");
            assert_eq!(steps.failed, !o.is_success(), "seed {seed} tx {i}");
            if o.is_success() {
                assert_eq!(steps.return_value, o.output, "seed {seed} tx {i}");
            } else {
                failed += 1;
            }
        }
        assert!(failed > 0, "seed {seed}: the block should hold failing transactions");
        // One transaction alone is traced over the state its predecessors left.
        for i in [0, txs.len() / 2, txs.len() - 1] {
            let one = trace(json!({ "tracer": "callTracer" }), i..i + 1);
            assert_eq!(
                serde_json::to_value(&one[0]).ok(),
                serde_json::to_value(&calls[i]).ok(),
                "seed {seed} tx {i}"
            );
        }
        w.commit(&out);
    }
}

#[test]
fn prestate_and_4byte_tracers_run() {
    let mut w = world();
    let (env, txs, _) = block(&mut w, 7);
    let all = 0..txs.len();
    for tracer in [
        json!({ "tracer": "prestateTracer" }),
        json!({ "tracer": "prestateTracer", "tracerConfig": { "diffMode": true } }),
        json!({ "tracer": "4byteTracer" }),
        json!({ "tracer": "flatCallTracer" }),
        json!({ "tracer": "noopTracer" }),
        json!({ "tracer": "muxTracer", "tracerConfig": { "callTracer": {}, "4byteTracer": null } }),
    ] {
        let traces = trace_transactions(
            &w.state,
            &w.chain,
            &env,
            &txs,
            all.clone(),
            &options(tracer.clone()),
            BLOCK,
        )
        .unwrap_or_else(|e| panic!("{tracer}: {e}"));
        assert_eq!(traces.len(), txs.len(), "{tracer}");
    }
    // The pre-state of a transfer names its sender with the balance it had.
    let traces = trace_transactions(
        &w.state,
        &w.chain,
        &env,
        &txs,
        0..1,
        &options(json!({ "tracer": "prestateTracer" })),
        BLOCK,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::to_value(&traces[0]).unwrap_or_default();
    let sender = format!("{:#x}", txs[0].sender);
    assert!(v.get(&sender).is_some(), "the sender {sender} is missing from {v}");
}

#[test]
fn an_unknown_tracer_or_a_bad_config_is_refused() {
    let mut w = world();
    let (env, txs, _) = block(&mut w, 1);
    for bad in [
        json!({ "tracer": "fooTracer" }),
        json!({ "tracer": "callTracer", "tracerConfig": { "onlyTopCall": "yes" } }),
    ] {
        match trace_transactions(&w.state, &w.chain, &env, &txs, 0..1, &options(bad.clone()), BLOCK)
        {
            Err(TraceError::Options(m)) => assert!(!m.is_empty()),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn a_trace_past_its_budget_is_refused() {
    let mut w = world();
    let (env, txs, out) = block(&mut w, 2);
    let opts = options(json!({ "enableMemory": true, "enableReturnData": true }));
    let all = 0..txs.len();
    let small = TraceContext { budget: 20_000, ..BLOCK };
    match trace_transactions(&w.state, &w.chain, &env, &txs, all.clone(), &opts, small) {
        Err(TraceError::TooLarge { limit: 20_000 }) => {}
        other => panic!("{other:?}"),
    }
    // The struct logger's own limit keeps the same trace small.
    let limited = options(json!({ "enableMemory": true, "limit": 2 }));
    let ok = TraceContext { budget: 2_000_000, ..BLOCK };
    trace_transactions(&w.state, &w.chain, &env, &txs, all, &limited, ok)
        .unwrap_or_else(|e| panic!("{e}"));

    // Parity's vmTrace records the memory each step writes: one MCOPY of 64 KiB in a few
    // steps is past a 20 kB budget (revm-inspectors counts it and halts), not under it.
    w.commit(&out);
    let env = w.block_env(alloy_primitives::Address::ZERO);
    let mcopy = vec![0x62, 0x01, 0x00, 0x00, 0x60, 0x00, 0x60, 0x00, 0x5e, 0x00];
    let from = w.users[0];
    let (_, tx) = w.deploy(from, mcopy.into(), 1_000_000);
    let vm = Tracer::Parity([TraceType::VmTrace].into_iter().collect());
    let one = std::slice::from_ref(&tx);
    match trace_with(&w.state, &w.chain, &env, one, 0..1, &vm, small) {
        Err(TraceError::TooLarge { limit: 20_000 }) => {}
        other => panic!("{other:?}"),
    }
    // erc7562Tracer records every step's stack, and memory after a write: its steps count
    // against the budget too (until stop 40 they did not, and its small answer passed).
    let erc = options(json!({ "tracer": "erc7562Tracer" }));
    match trace_transactions(&w.state, &w.chain, &env, one, 0..1, &erc, small) {
        Err(TraceError::TooLarge { limit: 20_000 }) => {}
        other => panic!("erc7562Tracer: {other:?}"),
    }
    trace_transactions(&w.state, &w.chain, &env, one, 0..1, &erc, BLOCK)
        .unwrap_or_else(|e| panic!("erc7562Tracer: {e}"));
    let traces = trace_with(&w.state, &w.chain, &env, one, 0..1, &vm, BLOCK)
        .unwrap_or_else(|e| panic!("{e}"));
    let v = serde_json::to_value(&traces).unwrap_or_default();
    let written = v[0]["vmTrace"]["ops"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| op["ex"]["mem"]["data"].as_str())
        .map(|d| (d.len() - 2) / 2)
        .max();
    assert_eq!(written, Some(65_536), "{v}");
}

/// `erc7562Tracer` records a frame's memory again at its first step after a call returns,
/// however the callee ended; the budget counts that copy. Here a deployment with 16 KiB of
/// memory calls, over and over, a contract whose one opcode (ADD on an empty stack) halts:
/// about 7,000 copies of 16 KiB, past a 100 MB budget. Before stop 49 the callee's last step
/// stood for the caller's, no copy was counted, and the trace was made (found by a review:
/// with 1 MiB of memory such a call ran the node out of memory).
#[test]
fn memory_recorded_after_a_failed_call_counts_against_the_budget() {
    let mut w = world();
    let env = w.block_env(alloy_primitives::Address::ZERO);
    #[rustfmt::skip]
    let code = vec![
        // CREATE a contract whose code is 0x01 (ADD): its init code, right-aligned at 22.
        0x69, 0x60, 0x01, 0x60, 0x00, 0x53, 0x60, 0x01, 0x60, 0x00, 0xf3,
        0x60, 0x00, 0x52, 0x60, 0x0a, 0x60, 0x16, 0x60, 0x00, 0xf0,
        // 16 KiB of memory.
        0x60, 0x01, 0x61, 0x3f, 0xe0, 0x52,
        // Loop: CALL it with 1 gas (it halts at ADD), POP, again.
        0x5b, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x60, 0x00, 0x85, 0x60, 0x01,
        0xf1, 0x50, 0x60, 0x1b, 0x56,
    ];
    let from = w.users[0];
    let (_, tx) = w.deploy(from, code.into(), 1_000_000);
    let one = std::slice::from_ref(&tx);
    let erc = options(json!({ "tracer": "erc7562Tracer" }));
    let budget = TraceContext { budget: 100_000_000, ..BLOCK };
    match trace_transactions(&w.state, &w.chain, &env, one, 0..1, &erc, budget) {
        Err(TraceError::TooLarge { limit: 100_000_000 }) => {}
        Err(e) => panic!("{e}"),
        Ok(t) => panic!("made: {} bytes", serde_json::to_string(&t).map_or(0, |j| j.len())),
    }
}

#[test]
fn an_access_list_covers_what_a_swap_touches() {
    let mut w = world();
    let pools = w.pools.len();
    let swap = w.swaps(1, pools, &mut rng(3)).remove(0);
    let env = w.block_env(alloy_primitives::Address::ZERO);
    let plain = execute_sequential(&w.state, &w.chain, &env, std::slice::from_ref(&swap))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(plain.txs[0].is_success());
    let out =
        create_access_list(&w.state, &w.chain, &env, &swap, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.outcome.is_success());
    let list = &out.access_list.0;
    // The pair and both of its tokens, with their slots; not the router (the call's target)
    // nor the sender.
    assert!(list.len() >= 3, "{list:?}");
    assert!(list.iter().all(|item| item.address != w.router && item.address != swap.sender));
    assert!(list.iter().any(|item| !item.storage_keys.is_empty()));
    // Warm from the start, the same work costs less.
    assert!(
        out.outcome.gas_used < plain.txs[0].gas_used,
        "{} vs {}",
        out.outcome.gas_used,
        plain.txs[0].gas_used
    );
}

/// The value a Parity state-diff entry leaves (`None`: unchanged).
fn after<T: Clone + Default>(d: &alloy_rpc_types_trace::parity::Delta<T>) -> Option<T> {
    use alloy_rpc_types_trace::parity::Delta;
    match d {
        Delta::Unchanged => None,
        Delta::Added(v) => Some(v.clone()),
        Delta::Removed(_) => Some(T::default()),
        Delta::Changed(c) => Some(c.to.clone()),
    }
}

/// Parity's replay of each transaction of random blocks: its call trace ends as the
/// transaction did, its vmTrace has the steps of every transaction that ran code, and its
/// state diffs, applied in order, leave exactly the balances, nonces and storage the block's
/// own diff does.
#[test]
fn parity_replays_add_up_to_the_block() {
    use alloy_primitives::{B256, U256};
    use farol_execution::{StateView, TxTrace};
    use std::collections::BTreeMap;

    let mut w = world();
    let types = [TraceType::Trace, TraceType::VmTrace, TraceType::StateDiff].into_iter().collect();
    let tracer = Tracer::Parity(types);
    for seed in 10..13 {
        let (env, txs, out) = block(&mut w, seed);
        let traces = trace_with(&w.state, &w.chain, &env, &txs, 0..txs.len(), &tracer, BLOCK)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(traces.len(), txs.len());
        let mut balances = BTreeMap::new();
        let mut nonces = BTreeMap::new();
        let mut storage = BTreeMap::new();
        let mut ran_code = 0;
        for (i, (trace, o)) in traces.iter().zip(&out.txs).enumerate() {
            let TxTrace::Parity(r) = trace else { panic!("seed {seed} tx {i}: not Parity's") };
            let top = r.trace.first().unwrap_or_else(|| panic!("seed {seed} tx {i}: no trace"));
            assert_eq!(top.error.is_none(), o.is_success(), "seed {seed} tx {i}: {top:?}");
            if o.is_success() {
                assert_eq!(r.output, o.output, "seed {seed} tx {i}");
            }
            let steps = r.vm_trace.as_ref().map_or(0, |v| v.ops.len());
            if steps > 0 {
                ran_code += 1;
            }
            let diff = r.state_diff.as_ref().unwrap_or_else(|| panic!("no stateDiff"));
            for (addr, d) in diff.iter() {
                if let Some(b) = after(&d.balance) {
                    balances.insert(*addr, b);
                }
                if let Some(n) = after(&d.nonce) {
                    nonces.insert(*addr, n.to::<u64>());
                }
                for (slot, v) in &d.storage {
                    if let Some(v) = after(v) {
                        storage.insert((*addr, U256::from_be_bytes(slot.0)), v);
                    }
                }
            }
        }
        assert!(ran_code > txs.len() / 4, "seed {seed}: {ran_code} transactions ran code");
        let before = |a| w.state.account(a).ok().flatten().unwrap_or_default();
        for (addr, account) in &out.diff.accounts {
            let account = account.unwrap_or_default();
            let prior = before(*addr);
            let balance = balances.get(addr).copied().unwrap_or(prior.balance);
            assert_eq!(balance, account.balance, "seed {seed} {addr}");
            let nonce = nonces.get(addr).copied().unwrap_or(prior.nonce);
            assert_eq!(nonce, account.nonce, "seed {seed} {addr}");
        }
        // What the replays change and the block's diff leaves out ends where it began.
        for (addr, balance) in &balances {
            if !out.diff.accounts.contains_key(addr) {
                assert_eq!(*balance, before(*addr).balance, "seed {seed} {addr}");
            }
        }
        let mut block_slots = 0;
        for (addr, slots) in &out.diff.storage {
            for (slot, v) in slots {
                let replayed = storage.get(&(*addr, *slot)).copied().unwrap_or(B256::ZERO);
                assert_eq!(U256::from_be_bytes(replayed.0), *v, "seed {seed} {addr} {slot}");
                block_slots += 1;
            }
        }
        assert!(block_slots > 0, "seed {seed}: the block writes no storage");
        w.commit(&out);
    }
}

/// Slots the call's own list names for an account the list leaves out (the sender, the
/// target, a precompile) stay listed, as geth keeps them; such an account named without
/// slots is left out. Until stop 44 the slots were dropped with the account (revm-inspectors'
/// rule).
#[test]
fn an_access_list_keeps_the_slots_given_for_accounts_it_leaves_out() {
    use alloy_consensus::{SignableTransaction, TxEnvelope};
    use alloy_eips::eip2930::{AccessList, AccessListItem};
    use alloy_primitives::{Address, B256};

    let mut w = world();
    let pools = w.pools.len();
    let swap = w.swaps(1, pools, &mut rng(4)).remove(0);
    let env = w.block_env(Address::ZERO);
    let TxEnvelope::Eip1559(signed) = &swap.tx else {
        panic!("the workload's swaps are EIP-1559 transactions: {:?}", swap.tx)
    };
    let (ecrecover, sha256) = (Address::with_last_byte(1), Address::with_last_byte(2));
    let (sender_slot, router_slot, precompile_slot) =
        (B256::repeat_byte(0x51), B256::repeat_byte(0x52), B256::repeat_byte(0x53));
    let mut inner = signed.tx().clone();
    inner.access_list = AccessList(vec![
        AccessListItem { address: swap.sender, storage_keys: vec![sender_slot] },
        AccessListItem { address: w.router, storage_keys: vec![router_slot] },
        AccessListItem { address: ecrecover, storage_keys: vec![precompile_slot] },
        AccessListItem { address: sha256, storage_keys: vec![] },
    ]);
    let tx = farol_execution::RecoveredTx {
        tx: TxEnvelope::Eip1559(inner.into_signed(*signed.signature())),
        sender: swap.sender,
    };
    let out =
        create_access_list(&w.state, &w.chain, &env, &tx, None).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.outcome.is_success(), "{:?}", out.outcome);
    let slots = |a: Address| {
        out.access_list.0.iter().find(|i| i.address == a).map(|i| i.storage_keys.clone())
    };
    assert_eq!(slots(swap.sender), Some(vec![sender_slot]), "{:?}", out.access_list);
    assert!(slots(w.router).is_some_and(|s| s.contains(&router_slot)), "{:?}", out.access_list);
    assert_eq!(slots(ecrecover), Some(vec![precompile_slot]), "{:?}", out.access_list);
    assert_eq!(slots(sha256), None, "{:?}", out.access_list);
    // What the swap touches is still there: the pair and its tokens.
    assert!(out.access_list.0.len() >= 3 + 3, "{:?}", out.access_list);
}
