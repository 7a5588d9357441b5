//! The parallel executor's output equals the sequential reference's on random blocks over
//! real contracts. CI runs a few hundred blocks; `FAROL_LONG=1` (`scripts/test.sh --long`)
//! runs 10,000.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, TxKind, U256};
use farol_execution::workload::{outcome_counts, rng, Flavor, World, WorldSpec};
use farol_execution::{
    execute_sequential, ExecError, ParallelConfig, ParallelExecutor, ParallelStats, Partition,
};
use rand::Rng;

fn long() -> bool {
    std::env::var("FAROL_LONG").is_ok_and(|v| v == "1")
}

/// A world of `users` funded accounts and one token, nothing else.
fn users_world(users: usize) -> World {
    let spec = WorldSpec { users, token_holders: 0, swappers: 0, tokens: 1, pools: 0, kits: 0 };
    World::new(spec).unwrap_or_else(|e| panic!("setting up the world: {e}"))
}

fn small_world() -> World {
    World::new(WorldSpec::SMALL).unwrap_or_else(|e| panic!("setting up the world: {e}"))
}

/// Runs `txs` sequentially and, with each of 2, 4 and 8 workers, in parallel; asserts that
/// all outputs are equal and returns the sequential one.
fn agree(
    world: &World,
    env: &farol_execution::BlockEnv,
    txs: &[farol_execution::RecoveredTx],
) -> Result<farol_execution::BlockOutput, ExecError> {
    let seq = execute_sequential(&world.state, &world.chain, env, txs);
    for threads in [2, 4, 8] {
        let par = executor(threads).execute(&world.state, &world.chain, env, txs).map(|(o, _)| o);
        assert_eq!(par, seq, "{threads} threads");
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let par = partitioned(threads, mode)
                .execute(&world.state, &world.chain, env, txs)
                .map(|(o, _)| o);
            assert_eq!(par, seq, "{threads} threads, partitioned {mode:?}");
        }
    }
    seq
}

/// `n` users each pay `value` to `to`.
fn payments(
    world: &mut World,
    to: Address,
    n: usize,
    value: U256,
) -> Vec<farol_execution::RecoveredTx> {
    (0..n)
        .map(|i| {
            let from = world.users[i];
            world.transfer(from, to, value)
        })
        .collect()
}

fn executor(threads: usize) -> ParallelExecutor {
    // Never fall back to sequential here: the point is to exercise the parallel path.
    ParallelExecutor::new(ParallelConfig::always_parallel(threads))
}

/// Partitioned whenever `mode` makes two bins, Block-STM after a conflict, never sequential.
fn partitioned(threads: usize, mode: Partition) -> ParallelExecutor {
    ParallelExecutor::new(ParallelConfig::always_partitioned(threads, mode))
}

/// Runs `txs` partitioned with `mode` and checks the output against `seq`; returns the stats.
fn partitioned_agrees(
    world: &World,
    env: &farol_execution::BlockEnv,
    txs: &[farol_execution::RecoveredTx],
    seq: &Result<farol_execution::BlockOutput, ExecError>,
    threads: usize,
    mode: Partition,
    what: &str,
) -> Option<ParallelStats> {
    let (par, stats) =
        match partitioned(threads, mode).execute(&world.state, &world.chain, env, txs) {
            Ok((o, s)) => (Ok(o), Some(s)),
            Err(e) => (Err(e), None),
        };
    assert_eq!(&par, seq, "{what}: partitioned {mode:?} with {threads} threads differs");
    stats
}

#[test]
fn random_blocks_parallel_equals_sequential() {
    random_blocks(farol_execution::SpecId::OSAKA, if long() { 10_000 } else { 300 }, 0xfa201);
}

/// The same under Amsterdam (state gas, EIP-2780 payments, EIP-8246 self-destructs).
#[test]
fn random_blocks_parallel_equals_sequential_under_amsterdam() {
    random_blocks(farol_execution::SpecId::AMSTERDAM, if long() { 2_000 } else { 150 }, 0xa3d);
}

fn random_blocks(spec: farol_execution::SpecId, blocks: usize, seed: u64) {
    let mut world = small_world();
    world.chain.spec = spec;
    let mut r = rng(seed);
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    let mut re_executions = 0;
    let mut waits = 0;
    // (hints or round-robin, ran partitioned or gave up) -> blocks
    let mut partition_runs: BTreeMap<(bool, bool), usize> = BTreeMap::new();
    // One executor per thread count for the whole run, so that the profiles each learns
    // from a block shape its plans for the next ones (a wrong profile must cost time only).
    let executors: Vec<ParallelExecutor> = [2, 3, 4, 8].into_iter().map(executor).collect();
    for b in 0..blocks {
        let n = r.random_range(1..=64);
        let (env, txs) = world.random_block(n, &mut r);
        let seq = execute_sequential(&world.state, &world.chain, &env, &txs);
        let threads = [2, 3, 4, 8][b % 4];
        let (par, stats) = match executors[b % 4].execute(&world.state, &world.chain, &env, &txs) {
            Ok((o, s)) => (Ok(o), Some(s)),
            Err(e) => (Err(e), None),
        };
        assert_eq!(par, seq, "block {b} ({n} txs, {threads} threads) differs");
        // Partitioned by the hints, and round-robin: most of those conflict, and a conflict
        // missed would show as a different output.
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let what = format!("block {b} ({n} txs)");
            if let Some(s) = partitioned_agrees(&world, &env, &txs, &seq, threads, mode, &what) {
                let kept = s.bins > 0;
                *partition_runs.entry((mode == Partition::Predicted, kept)).or_default() += 1;
            }
        }
        let out = seq.unwrap_or_else(|e| panic!("block {b}: generated block is invalid: {e}"));
        if let Some(s) = stats {
            re_executions += s.re_executions;
            waits += s.waits;
        }
        for (k, v) in outcome_counts(&out) {
            *totals.entry(k).or_default() += v;
        }
        world.commit(&out);
    }
    // The workload really exercised what it claims, and so did the parallel machinery.
    for kind in ["success", "revert", "halt", "create"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 0, "no {kind} outcome in {totals:?}");
    }
    assert!(
        re_executions > 0 && waits > 0,
        "no conflicts happened: {re_executions} re-executions, {waits} waits"
    );
    // Both partitioned outcomes happened in both modes: blocks kept, and conflicts caught.
    for key in [(true, true), (false, true), (false, false)] {
        assert!(partition_runs.get(&key).copied().unwrap_or(0) > 0, "{partition_runs:?}");
    }
}

#[test]
fn benchmark_blocks_parallel_equals_sequential() {
    let mut world = World::new(WorldSpec {
        users: 400,
        token_holders: 400,
        swappers: 400,
        tokens: 8,
        pools: 20,
        kits: 1,
    })
    .unwrap();
    let mut r = rng(7);
    let blocks = [
        world.independent_transfers(300),
        world.erc20_transfers(300, &mut r),
        world.swaps(300, 1, &mut r),
        world.swaps(300, 20, &mut r),
        world.hybrid(300, 30, &mut r),
        world.dependent_chain(100),
    ];
    for (i, txs) in blocks.into_iter().enumerate() {
        let env = world.block_env(Address::repeat_byte(0xcb));
        let seq = execute_sequential(&world.state, &world.chain, &env, &txs).unwrap();
        assert!(
            seq.txs.iter().all(|t| t.is_success()),
            "block {i}: a benchmark transaction failed"
        );
        for threads in [2, 4] {
            let (par, _) =
                executor(threads).execute(&world.state, &world.chain, &env, &txs).unwrap();
            assert_eq!(par, seq, "benchmark block {i} differs with {threads} threads");
            let what = format!("benchmark block {i}");
            let seq = Ok(seq.clone());
            for mode in [Partition::Predicted, Partition::RoundRobin] {
                let stats = partitioned_agrees(&world, &env, &txs, &seq, threads, mode, &what);
                // Transfers, ERC-20 transfers and swaps over 20 pools split by the hints.
                if mode == Partition::Predicted && [0, 1, 3].contains(&i) {
                    let stats = stats.unwrap_or_default();
                    assert!(stats.bins >= 2, "{what} did not run partitioned: {stats:?}");
                }
            }
        }
        // The default configuration (with its sequential fallbacks) agrees too.
        let (par, _) =
            ParallelExecutor::default().execute(&world.state, &world.chain, &env, &txs).unwrap();
        assert_eq!(par, seq);
        world.commit(&seq);
    }
}

/// An invalid transaction from `from`, of one of three kinds by `case`: a nonce far ahead,
/// more value than it has, a gas limit below the intrinsic cost.
fn invalid_tx(world: &mut World, from: Address, case: usize) -> farol_execution::RecoveredTx {
    match case % 3 {
        // A nonce far in the future.
        0 => {
            let mut t = world.tx(
                from,
                TxKind::Call(Address::ZERO),
                U256::ZERO,
                Bytes::new(),
                21_000,
                Flavor::DynamicFee,
                1,
            );
            if let alloy_consensus::TxEnvelope::Eip1559(s) = &t.tx {
                let mut inner = s.tx().clone();
                inner.nonce += 1000;
                t.tx = alloy_consensus::TxEnvelope::Eip1559(
                    alloy_consensus::SignableTransaction::into_signed(inner, *s.signature()),
                );
            }
            t
        }
        // More value than the sender has.
        1 => world.tx(
            from,
            TxKind::Call(Address::ZERO),
            U256::MAX >> 1,
            Bytes::new(),
            21_000,
            Flavor::DynamicFee,
            1,
        ),
        // Gas limit below the intrinsic cost.
        _ => world.tx(
            from,
            TxKind::Call(Address::ZERO),
            U256::ZERO,
            Bytes::new(),
            20_000,
            Flavor::DynamicFee,
            1,
        ),
    }
}

#[test]
fn invalid_transactions_fail_the_block_the_same_way() {
    let mut world = small_world();
    let mut r = rng(3);
    for case in 0..40 {
        let saved = world.nonces();
        let (env, mut txs) = world.random_block(20, &mut r);
        let at = r.random_range(0..txs.len());
        let from = world.users[r.random_range(0..world.users.len())];
        let bad = invalid_tx(&mut world, from, case);
        txs.insert(at, bad);
        // Every executor and partitioning reports the same error (`agree`).
        let seq = agree(&world, &env, &txs);
        assert!(seq.is_err(), "case {case}: the invalid transaction was accepted");
        world.set_nonces(saved);
    }
}

/// The transactions a block keeps when each invalid one is removed in turn (with its
/// sender's later transactions of higher nonces) and the block run again, as the node did
/// before `execute_screened`; and the output of the block they make.
fn removed_one_by_one(
    world: &World,
    env: &farol_execution::BlockEnv,
    mut txs: Vec<farol_execution::RecoveredTx>,
) -> (Vec<farol_execution::RecoveredTx>, farol_execution::BlockOutput) {
    use alloy_consensus::Transaction as _;
    loop {
        match execute_sequential(&world.state, &world.chain, env, &txs) {
            Ok(output) => return (txs, output),
            Err(ExecError::InvalidTransaction { index, .. }) => {
                let t = txs.remove(index);
                let mut i = index;
                while i < txs.len() {
                    if txs[i].sender == t.sender && txs[i].tx.nonce() > t.tx.nonce() {
                        txs.remove(i);
                    } else {
                        i += 1;
                    }
                }
            }
            Err(ExecError::BlockGasLimit { index, .. }) => {
                txs.remove(index);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn screening_a_block_keeps_what_removing_invalid_transactions_one_by_one_keeps() {
    let mut world = small_world();
    let mut r = rng(0x5c4ee);
    let mut left_out = 0;
    let mut reasons = BTreeMap::<String, usize>::new();
    for case in 0..60 {
        let saved = world.nonces();
        let (mut env, mut txs) = world.random_block(30, &mut r);
        for k in 0..r.random_range(1..5) {
            let from = world.users[r.random_range(0..world.users.len())];
            let bad = invalid_tx(&mut world, from, case + k);
            txs.insert(r.random_range(0..=txs.len()), bad);
            // The sender's next transaction, after it: left out with it when the invalid
            // one took a nonce.
            if r.random_bool(0.5) {
                let to = world.users[0];
                txs.push(world.transfer(from, to, U256::from(1)));
            }
        }
        if case % 4 == 3 {
            // A block too small for all of them: some are left out for their gas alone.
            env.gas_limit = 21_000 * 20 + r.random_range(0..2_000_000);
        }
        let (kept, expected) = removed_one_by_one(&world, &env, txs.clone());
        let (output, left) =
            farol_execution::execute_screened(&world.state, &world.chain, &env, &txs)
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_eq!(output, expected, "case {case}");
        let gone: Vec<usize> = left.iter().map(|(i, _)| *i).collect();
        let screened: Vec<_> = txs
            .iter()
            .enumerate()
            .filter(|(i, _)| !gone.contains(i))
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(screened, kept, "case {case}");
        assert!(left.iter().all(|(_, why)| !why.is_empty()));
        assert!(gone.windows(2).all(|w| w[0] < w[1]), "case {case}: {gone:?}");
        left_out += left.len();
        for (_, why) in &left {
            *reasons.entry(why.split(':').next().unwrap_or_default().to_string()).or_insert(0) += 1;
        }
        // A block with nothing to leave out is the sequential block.
        let (again, none) =
            farol_execution::execute_screened(&world.state, &world.chain, &env, &kept)
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert!(none.is_empty());
        assert_eq!(again, expected);
        world.set_nonces(saved);
    }
    assert!(left_out >= 60, "only {left_out} transactions were left out");
    for why in ["an earlier nonce was dropped", "gas limit above the block's", "nonce too high"] {
        assert!(reasons.contains_key(why), "nothing left out as {why:?}: {reasons:?}");
    }
}

#[test]
fn block_gas_limit_is_enforced_identically() {
    let mut world = small_world();
    let txs = world.independent_transfers(40);
    let mut env = world.block_env(Address::ZERO);
    env.gas_limit = 21_000 * 25;
    let seq = agree(&world, &env, &txs);
    assert!(matches!(seq, Err(ExecError::BlockGasLimit { index: 25, .. })), "{seq:?}");
}

#[test]
fn transfers_to_one_recipient_are_credited_lazily() {
    let mut world = World::new(WorldSpec {
        users: 64,
        token_holders: 0,
        swappers: 0,
        tokens: 1,
        pools: 0,
        kits: 1,
    })
    .unwrap_or_else(|e| panic!("setting up the world: {e}"));
    let hot = world.users[63];
    let kit = world.kits[0];
    // 62 distinct senders pay one recipient, then a contract reads the recipient's balance
    // and the recipient itself sends.
    let mut txs: Vec<_> = (0..62)
        .map(|i| {
            let from = world.users[i];
            world.tx(
                from,
                TxKind::Call(hot),
                U256::from(1_000 + i),
                Bytes::new(),
                21_000,
                Flavor::DynamicFee,
                1,
            )
        })
        .collect();
    let data = alloy_sol_types::SolCall::abi_encode(
        &farol_execution::workload::ITestKit::snapBalanceCall { who: hot },
    );
    let reader = world.users[62];
    txs.push(world.call(reader, kit, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1));
    txs.push(world.tx(
        hot,
        TxKind::Call(reader),
        U256::from(5),
        Bytes::new(),
        21_000,
        Flavor::DynamicFee,
        1,
    ));
    let env = world.block_env(Address::repeat_byte(0xcb));
    let seq = execute_sequential(&world.state, &world.chain, &env, &txs).unwrap();
    assert!(seq.txs.iter().all(|t| t.is_success()));
    for threads in [2, 4] {
        let (par, stats) =
            executor(threads).execute(&world.state, &world.chain, &env, &txs).unwrap();
        assert_eq!(par, seq);
        // The 62 payments never read the recipient's balance, so none of them conflicts:
        // only the two transactions that read it may have to run again.
        assert!(stats.executions <= txs.len() as u64 + 2 * threads as u64, "{stats:?}");
    }
}

/// Thousands of payments to one account on the Block-STM path: each reads the account
/// through the lazy credits of the payments below it, which would make the block
/// quadratic; past a budget linear in the block it runs sequentially instead (before stop
/// 38, 47,000 such payments took seconds). A hundred stay parallel.
#[test]
fn many_payments_to_one_account_do_not_make_the_block_quadratic() {
    let mut world = users_world(3_001);
    let hot = world.users[3_000];
    let env = world.block_env(Address::repeat_byte(0xcb));
    for (n, fallback) in [(100, None), (3_000, Some("reads walk too many fees or lazy credits"))] {
        let saved = world.nonces();
        let txs = payments(&mut world, hot, n, U256::from(7));
        let seq = execute_sequential(&world.state, &world.chain, &env, &txs)
            .unwrap_or_else(|e| panic!("{e}"));
        let (par, stats) = executor(2)
            .execute(&world.state, &world.chain, &env, &txs)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(par, seq, "{n} payments");
        assert_eq!(stats.fallback, fallback, "{n} payments: {stats:?}");
        world.set_nonces(saved);
    }
}

/// EIP-7702: a user delegates its account to contract code, then is called, paid and called
/// again; both executors agree.
#[test]
fn eip7702_delegation_parallel_equals_sequential() {
    use alloy_consensus::{SignableTransaction, TxEip7702, TxEnvelope};
    use alloy_eips::eip7702::Authorization;
    use alloy_primitives::Signature;
    use farol_execution::workload::ITestKit;
    use farol_execution::RecoveredTx;

    let mut world = small_world();
    let key = k256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let authority = Address::from_private_key(&key);
    let kit = world.kits[0];
    let auth = Authorization { chain_id: U256::from(world.chain.chain_id), address: kit, nonce: 0 };
    let (sig, recid) = key.sign_prehash_recoverable(auth.signature_hash().as_slice()).unwrap();
    let signed = auth.into_signed(Signature::from_signature_and_parity(sig, recid.is_y_odd()));
    let bump = alloy_sol_types::SolCall::abi_encode(&ITestKit::bumpCall {});
    let from = world.users[0];
    let nonce = world.next_nonce(from);
    let tx = TxEip7702 {
        chain_id: world.chain.chain_id,
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: world.base_fee as u128 * 2 + 1,
        max_priority_fee_per_gas: 1,
        to: authority,
        value: U256::ZERO,
        access_list: Default::default(),
        authorization_list: vec![signed],
        input: bump.clone().into(),
    };
    let delegate = RecoveredTx {
        tx: TxEnvelope::Eip7702(tx.into_signed(Signature::new(
            U256::from(1),
            U256::from(1),
            false,
        ))),
        sender: from,
    };
    let mut txs = vec![delegate];
    let payer = world.users[1];
    txs.push(world.tx(
        payer,
        TxKind::Call(authority),
        U256::from(77),
        Bytes::new(),
        60_000,
        Flavor::DynamicFee,
        1,
    ));
    let caller = world.users[2];
    txs.push(world.call(
        caller,
        authority,
        U256::ZERO,
        bump.clone(),
        100_000,
        Flavor::DynamicFee,
        1,
    ));
    txs.push(world.call(world.users[3], kit, U256::ZERO, bump, 100_000, Flavor::Legacy, 1));
    let env = world.block_env(Address::repeat_byte(0xcb));
    let seq = execute_sequential(&world.state, &world.chain, &env, &txs).unwrap();
    assert!(seq.txs.iter().all(|t| t.is_success()), "{:?}", seq.txs);
    // The authority now runs the kit's code: its account holds the delegation designator.
    let designated = seq.diff.accounts.get(&authority).copied().flatten().unwrap();
    assert_ne!(designated.code_hash, revm::primitives::KECCAK_EMPTY);
    assert_eq!(
        seq.diff.storage.get(&authority).and_then(|s| s.get(&U256::ZERO)),
        Some(&U256::from(2))
    );
    // Block-STM and both partitionings.
    assert_eq!(agree(&world, &env, &txs).as_ref(), Ok(&seq));
}

/// A transaction that is invalid, is aborted because a lower transaction changed what it
/// read, and is invalid again, must not leave later readers of the beneficiary waiting on
/// it: the block ends with the same error as sequential execution.
#[test]
fn an_invalid_transaction_aborted_twice_does_not_stall_the_block() {
    use farol_execution::workload::ITestKit;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut world = small_world();
        let kit = world.kits[0];
        let poor = Address::repeat_byte(0x77);
        let ether = U256::from(1_000_000_000_000_000_000u128);
        for round in 0..60 {
            let saved = world.nonces();
            let pay = alloy_sol_types::SolCall::abi_encode(&ITestKit::payCall { to: poor });
            let snap = alloy_sol_types::SolCall::abi_encode(&ITestKit::snapCoinbaseCall {});
            let (a, b) = (world.users[0], world.users[1]);
            let mut txs = vec![
                world.call(a, kit, ether, pay, 100_000, Flavor::DynamicFee, 1),
                world.transfer(poor, Address::repeat_byte(0x78), ether * U256::from(2)),
            ];
            for _ in 0..6 {
                let snap = snap.clone();
                txs.push(world.call(b, kit, U256::ZERO, snap, 100_000, Flavor::DynamicFee, 1));
            }
            let env = world.block_env(Address::repeat_byte(0xcb));
            let seq = execute_sequential(&world.state, &world.chain, &env, &txs);
            assert!(matches!(seq, Err(ExecError::InvalidTransaction { index: 1, .. })), "{seq:?}");
            let par = executor(2 + round % 3)
                .execute(&world.state, &world.chain, &env, &txs)
                .map(|(o, _)| o);
            assert_eq!(par, seq, "round {round}");
            world.set_nonces(saved);
        }
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(std::time::Duration::from_secs(120)).is_ok(),
        "the parallel executor stalled (or the test panicked)"
    );
}

/// Payments that would overflow a recipient's balance fail in revm; the lazy credit must
/// notice that the balance it did not read matters then.
#[test]
fn payments_near_balance_overflow_match_sequential() {
    let mut world = small_world();
    let rich = Address::repeat_byte(0x99);
    world.state.insert(
        rich,
        farol_execution::MemAccount { balance: U256::MAX - U256::from(10), ..Default::default() },
    );
    let txs = payments(&mut world, rich, 8, U256::from(6));
    let env = world.block_env(Address::repeat_byte(0xcb));
    // The first payment fits and the second overflows.
    let out = agree(&world, &env, &txs).unwrap();
    assert!(out.txs[0].is_success() && !out.txs[1].is_success(), "{:?}", out.txs);
}

/// A beneficiary whose balance is near the top: the fees set aside would overflow it, and
/// revm then leaves the balance as it was; the fold of the fees must do the same, with and
/// without transactions that read the beneficiary in between.
#[test]
fn fees_that_would_overflow_the_beneficiary_match_sequential() {
    use farol_execution::workload::ITestKit;
    for k in [0u64, 5, 21_000 * 3] {
        let mut world = small_world();
        let ben = Address::repeat_byte(0xbf);
        world.state.insert(
            ben,
            farol_execution::MemAccount {
                balance: U256::MAX - U256::from(k),
                ..Default::default()
            },
        );
        let to = world.users[12];
        let mut txs = payments(&mut world, to, 6, U256::from(3));
        let snap = alloy_sol_types::SolCall::abi_encode(&ITestKit::snapCoinbaseCall {});
        let (kit, reader) = (world.kits[0], world.users[13]);
        txs.insert(3, world.call(reader, kit, U256::ZERO, snap, 200_000, Flavor::DynamicFee, 1));
        let env = world.block_env(ben);
        let out = agree(&world, &env, &txs).unwrap_or_else(|e| panic!("{k}: {e}"));
        assert!(out.txs.iter().all(|t| t.is_success()), "{k}: {:?}", out.txs);
    }
}

/// Before Spurious Dragon (no EIP-161 clearing) a beneficiary absent from the state that
/// the first transaction pays nothing (gas price 0) is created empty by the reward's touch,
/// which revm marks as a creation: the diff lists it among the accounts created. The
/// parallel paths set fees aside and left it out until stop 49 (found by a stop 47
/// review). Here with a transaction of its own touching the beneficiary first, later or
/// never, and with the first transaction paying a fee or not.
#[test]
fn a_fresh_beneficiary_paid_nothing_before_spurious_dragon_matches_sequential() {
    use farol_execution::SpecId;
    let ben = Address::repeat_byte(0xbe);
    for spec in [SpecId::FRONTIER, SpecId::HOMESTEAD, SpecId::TANGERINE, SpecId::SPURIOUS_DRAGON] {
        // (The touching transaction's tip: at position 0, it is the first to pay.)
        for (touch, first_tip, touch_tip) in [
            (None, 0, 0),
            (Some(0), 0, 0),
            (Some(0), 0, 1),
            (Some(3), 0, 0),
            (None, 1, 0),
            (Some(3), 1, 0),
        ] {
            let what = format!(
                "{spec:?}, touched by transaction {touch:?} tipping {touch_tip}, first tip {first_tip}"
            );
            let mut world = small_world();
            world.chain.spec = spec;
            world.base_fee = 0;
            let mut txs: Vec<_> = (0..6)
                .map(|i| {
                    let (from, to) = (world.users[i], world.users[i + 6]);
                    let (kind, tip) = (TxKind::Call(to), if i == 0 { first_tip } else { 0 });
                    world.tx(from, kind, U256::from(1), Bytes::new(), 21_000, Flavor::Legacy, tip)
                })
                .collect();
            if let Some(at) = touch {
                // A transaction of its own calls the beneficiary, sending nothing.
                let from = world.users[12];
                let kind = TxKind::Call(ben);
                let t = world.tx(
                    from,
                    kind,
                    U256::ZERO,
                    Bytes::new(),
                    21_000,
                    Flavor::Legacy,
                    touch_tip,
                );
                txs.insert(at, t);
            }
            let env = world.block_env(ben);
            let out = agree(&world, &env, &txs).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(out.txs.iter().all(|t| t.is_success()), "{what}: {:?}", out.txs);
            let old = spec < SpecId::SPURIOUS_DRAGON;
            let paid = if touch == Some(0) { touch_tip } else { first_tip };
            let balance = U256::from(paid * 1_000_000_000 * 21_000);
            let want = (old || paid > 0).then_some(Some(farol_execution::Account {
                balance,
                nonce: 0,
                code_hash: alloy_primitives::KECCAK256_EMPTY,
            }));
            assert_eq!(out.diff.accounts.get(&ben).copied(), want, "{what}");
            assert_eq!(out.diff.wiped.contains(&ben), old && paid == 0, "{what}");
        }
    }
}

/// Under Amsterdam (EIP-2780), paying an empty account costs more gas, so a lazy payment
/// depends on whether its recipient is empty; payments to one fresh account must agree.
#[test]
fn payments_to_a_fresh_account_match_sequential_under_amsterdam() {
    let mut world = small_world();
    world.chain.spec = farol_execution::SpecId::AMSTERDAM;
    let fresh = Address::repeat_byte(0x5a);
    // Room for the state gas of creating the recipient.
    let txs: Vec<_> = (0..12)
        .map(|i| {
            let from = world.users[i];
            world.tx(
                from,
                TxKind::Call(fresh),
                U256::from(1),
                Bytes::new(),
                300_000,
                Flavor::DynamicFee,
                1,
            )
        })
        .collect();
    let env = world.block_env(Address::repeat_byte(0xcb));
    let out = agree(&world, &env, &txs).unwrap_or_else(|e| panic!("{e}"));
    // The first payment created the account and paid for it; the others did not.
    assert!(out.txs.iter().all(|t| t.is_success()), "{:?}", out.txs);
    assert!(out.txs[0].gas_used > out.txs[1].gas_used, "{:?}", out.txs);
    assert_eq!(out.txs[1].gas_used, out.txs[11].gas_used);
}

/// Where the kit's `deploy(salt)` would put its child, found by running it on a scratch
/// block (the world is left as it was).
fn child_address(world: &mut World, kit: Address, salt: alloy_primitives::B256) -> Address {
    use alloy_sol_types::SolCall;
    let saved = world.nonces();
    let data = farol_execution::workload::ITestKit::deployCall { salt }.abi_encode();
    let probe = world.call(world.users[0], kit, U256::ZERO, data, 1_000_000, Flavor::DynamicFee, 1);
    let scratch = world.block_env(Address::repeat_byte(0xcb));
    let out = execute_sequential(&world.state, &world.chain, &scratch, &[probe])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.txs[0].is_success(), "{:?}", out.txs[0]);
    world.set_nonces(saved);
    Address::from_slice(&out.txs[0].output[12..32])
}

/// The beneficiary itself is created and self-destructed by a fee-paying transaction. Under
/// Amsterdam (EIP-8246) revm keeps a self-destructed account that still holds a balance at
/// the end of the transaction, and the transaction's own fee is that balance: a fee set aside
/// and added after that point deleted the account in the parallel executor (found by a
/// review, stop 27). Later transactions read and pay the beneficiary.
#[test]
fn a_beneficiary_destroyed_by_a_fee_paying_transaction_matches_sequential() {
    use alloy_sol_types::SolCall;
    use farol_execution::workload::ITestKit;
    for spec in [farol_execution::SpecId::OSAKA, farol_execution::SpecId::AMSTERDAM] {
        let mut world = small_world();
        world.chain.spec = spec;
        let kit = world.kits[0];
        let salt = alloy_primitives::B256::repeat_byte(0x5c);
        // Where `deploy(salt)` puts the child: the block's beneficiary.
        let child = child_address(&mut world, kit, salt);
        let destroy =
            ITestKit::deployAndDestroyCall { salt, beneficiary: world.users[5] }.abi_encode();
        let snap = ITestKit::snapCoinbaseCall {}.abi_encode();
        let (a, b, c) = (world.users[0], world.users[1], world.users[2]);
        let mut txs =
            vec![world.call(a, kit, U256::ZERO, destroy, 1_000_000, Flavor::DynamicFee, 3)];
        let to = world.users[9];
        txs.extend(payments(&mut world, to, 4, U256::from(7)));
        txs.push(world.call(b, kit, U256::ZERO, snap, 400_000, Flavor::DynamicFee, 2));
        txs.push(world.transfer(c, child, U256::from(11)));
        let env = world.block_env(child);
        let out = agree(&world, &env, &txs).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert!(out.txs.iter().all(|t| t.is_success()), "{spec:?}: {:?}", out.txs);
    }
}

/// EIP-7610 inside blocks of many transactions: CREATE2 at an address that has storage (and
/// no code or nonce) collides; payments to that address and creations elsewhere run around
/// it, so the collision is met inside bins and after re-executions, not only in one-
/// transaction state tests.
#[test]
fn creations_colliding_with_storage_match_sequential() {
    use alloy_sol_types::SolCall;
    use farol_execution::workload::ITestKit;
    let mut world = small_world();
    let kit = world.kits[0];
    let (taken, free) =
        (alloy_primitives::B256::repeat_byte(0x71), alloy_primitives::B256::repeat_byte(0x72));
    let target = child_address(&mut world, kit, taken);
    let storage = [(U256::from(1), U256::from(5))].into_iter().collect();
    world.state.insert(target, farol_execution::MemAccount { storage, ..Default::default() });
    let mut txs = Vec::new();
    for i in 0..12 {
        let from = world.users[i];
        let tx = match i % 4 {
            0 => {
                let data = ITestKit::deployCall { salt: taken }.abi_encode();
                world.call(from, kit, U256::ZERO, data, 1_000_000, Flavor::DynamicFee, 1)
            }
            1 => world.transfer(from, target, U256::from(3)),
            2 => {
                let data =
                    ITestKit::deployAndDestroyCall { salt: free, beneficiary: target }.abi_encode();
                world.call(from, kit, U256::from(2), data, 1_000_000, Flavor::DynamicFee, 1)
            }
            _ => world.transfer(from, world.users[15], U256::from(1)),
        };
        txs.push(tx);
    }
    let env = world.block_env(Address::repeat_byte(0xcb));
    let out = agree(&world, &env, &txs).unwrap_or_else(|e| panic!("{e}"));
    // The colliding creations failed; the others went through.
    assert!(out.txs.iter().step_by(4).all(|t| !t.is_success()), "{:?}", out.txs);
    assert!(out.txs.iter().skip(1).step_by(4).all(|t| t.is_success()), "{:?}", out.txs);
}

/// A block in which every transaction reads the beneficiary's balance would make the lazy
/// fee fold quadratic; the executor gives the parallel attempt up and runs it sequentially.
#[test]
fn a_block_reading_the_beneficiary_everywhere_runs_sequentially() {
    use farol_execution::workload::ITestKit;
    let mut world = World::new(WorldSpec {
        users: 3000,
        token_holders: 0,
        swappers: 0,
        tokens: 1,
        pools: 0,
        kits: 1,
    })
    .unwrap_or_else(|e| panic!("setting up the world: {e}"));
    let kit = world.kits[0];
    let snap = alloy_sol_types::SolCall::abi_encode(&ITestKit::snapCoinbaseCall {});
    let txs: Vec<_> = (0..3000)
        .map(|i| {
            let from = world.users[i];
            world.call(from, kit, U256::ZERO, snap.clone(), 100_000, Flavor::DynamicFee, 1)
        })
        .collect();
    let env = world.block_env(Address::repeat_byte(0xcb));
    let seq = execute_sequential(&world.state, &world.chain, &env, &txs).unwrap();
    let (par, stats) = executor(2).execute(&world.state, &world.chain, &env, &txs).unwrap();
    assert_eq!(par, seq);
    assert_eq!(stats.fallback, Some("reads walk too many fees or lazy credits"));
}

/// Transactions with arbitrary field values (fees, limits, values up to 2^256 - 1, random
/// recipients and calldata, any envelope type) never crash either executor, and both give
/// the same answer.
#[test]
fn arbitrary_transactions_never_crash_and_agree() {
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
    use alloy_primitives::Signature;
    use farol_execution::RecoveredTx;

    let mut world = small_world();
    let mut r = rng(0xbad);
    let sig = Signature::new(U256::from(1), U256::from(1), false);
    let any_u256 = |r: &mut rand_chacha::ChaCha8Rng| match r.random_range(0..4) {
        0 => U256::ZERO,
        1 => U256::MAX,
        2 => U256::from(r.random::<u64>()),
        _ => U256::from_be_bytes(r.random::<[u8; 32]>()),
    };
    let blocks = if long() { 2_000 } else { 200 };
    let mut valid = 0;
    for b in 0..blocks {
        let n = r.random_range(1..6);
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            // Most transactions are sane with random recipients and calldata; a few have wild
            // values in every field.
            let wild = r.random_bool(0.15);
            let sender = if !wild || r.random_bool(0.5) {
                world.users[r.random_range(0..world.users.len())]
            } else {
                Address::from(r.random::<[u8; 20]>())
            };
            let nonce = if !wild || r.random_bool(0.5) {
                world.next_nonce(sender)
            } else {
                r.random::<u64>()
            };
            let to = match r.random_range(0..4) {
                0 => TxKind::Create,
                1 => TxKind::Call(world.kits[0]),
                2 => TxKind::Call(world.users[0]),
                _ => TxKind::Call(Address::from(r.random::<[u8; 20]>())),
            };
            let input: Bytes =
                (0..r.random_range(0..64)).map(|_| r.random::<u8>()).collect::<Vec<u8>>().into();
            let (gas_limit, value, fee, tip, chain_id) = if wild {
                (
                    match r.random_range(0..3) {
                        0 => r.random::<u64>(),
                        1 => r.random_range(0..100_000),
                        _ => 21_000,
                    },
                    any_u256(&mut r),
                    r.random::<u128>() >> r.random_range(0..128),
                    r.random::<u128>() >> r.random_range(0..128),
                    if r.random_bool(0.5) { world.chain.chain_id } else { r.random() },
                )
            } else {
                let base = world.base_fee as u128;
                (
                    r.random_range(60_000..2_000_000),
                    U256::from(r.random_range(0..1000u64)),
                    base * 2,
                    r.random_range(0..base),
                    world.chain.chain_id,
                )
            };
            let tx = match r.random_range(0..3) {
                0 => TxEnvelope::Legacy(
                    TxLegacy {
                        chain_id: Some(chain_id),
                        nonce,
                        gas_price: fee,
                        gas_limit,
                        to,
                        value,
                        input,
                    }
                    .into_signed(sig),
                ),
                1 => TxEnvelope::Eip2930(
                    TxEip2930 {
                        chain_id,
                        nonce,
                        gas_price: fee,
                        gas_limit,
                        to,
                        value,
                        input,
                        access_list: Default::default(),
                    }
                    .into_signed(sig),
                ),
                _ => TxEnvelope::Eip1559(
                    TxEip1559 {
                        chain_id,
                        nonce,
                        gas_limit,
                        max_fee_per_gas: fee,
                        max_priority_fee_per_gas: tip,
                        to,
                        value,
                        input,
                        access_list: Default::default(),
                    }
                    .into_signed(sig),
                ),
            };
            txs.push(RecoveredTx { tx, sender });
        }
        let env = world.block_env(Address::repeat_byte(0xcb));
        let seq = execute_sequential(&world.state, &world.chain, &env, &txs);
        let par = executor(2).execute(&world.state, &world.chain, &env, &txs).map(|(o, _)| o);
        assert_eq!(par, seq, "block {b}");
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let par = partitioned(2, mode).execute(&world.state, &world.chain, &env, &txs);
            assert_eq!(par.map(|(o, _)| o), seq, "block {b}, partitioned {mode:?}");
        }
        if let Ok(out) = seq {
            valid += 1;
            world.commit(&out);
        }
        world.set_nonces(Default::default());
        // Nonces are re-derived from the state for the next block.
        let users = world.users.clone();
        let mut nonces = std::collections::HashMap::new();
        for u in users {
            let nonce = farol_execution::StateView::account(&world.state, u)
                .ok()
                .flatten()
                .map_or(0, |a| a.nonce);
            nonces.insert(u, nonce);
        }
        world.set_nonces(nonces);
    }
    // Some blocks are valid, so execution, not only validation, met the odd values.
    assert!(valid > 0, "no valid block in {blocks}");
}

/// Payments from many groups to a few fresh accounts run partitioned: the groups share the
/// recipients as credits, checked in block order at the end. Under Amsterdam the first
/// payment to an empty account costs more, so each group's first payment saw the account
/// differently than block order would: the attempt is given up, and the output still agrees.
#[test]
fn payments_to_shared_recipients_run_partitioned() {
    for spec in [farol_execution::SpecId::OSAKA, farol_execution::SpecId::AMSTERDAM] {
        let mut world = users_world(256);
        world.chain.spec = spec;
        let hot: Vec<Address> = (0..3u8).map(|i| Address::repeat_byte(0x70 + i)).collect();
        let txs: Vec<_> = (0..256)
            .map(|i| {
                let from = world.users[i];
                world.tx(
                    from,
                    TxKind::Call(hot[i % 3]),
                    U256::from(1 + i),
                    Bytes::new(),
                    300_000,
                    Flavor::DynamicFee,
                    1,
                )
            })
            .collect();
        let env = world.block_env(Address::repeat_byte(0xcb));
        let seq = execute_sequential(&world.state, &world.chain, &env, &txs);
        assert!(seq.as_ref().is_ok_and(|o| o.txs.iter().all(|t| t.is_success())), "{spec:?}");
        let stats =
            partitioned_agrees(&world, &env, &txs, &seq, 2, Partition::Predicted, "payments")
                .unwrap_or_default();
        if spec == farol_execution::SpecId::AMSTERDAM {
            assert_eq!(stats.bins, 0, "{stats:?}");
            assert_eq!(
                stats.partition_abandoned,
                Some("a payment depends on another group's payment")
            );
        } else {
            assert!(stats.bins >= 2 && stats.partition_abandoned.is_none(), "{stats:?}");
        }
    }
}

/// The world's state with the beneficiary's reads failing: its account (`code` false) or
/// only its code (`code` true, the account then having code the view cannot return).
struct BrokenBeneficiary<'a> {
    inner: &'a farol_execution::InMemoryState,
    beneficiary: Address,
    code: bool,
}

/// A code hash nothing else uses, so that no shared code cache can hold it.
fn unreadable_code() -> alloy_primitives::B256 {
    alloy_primitives::keccak256(b"farol: code a test view cannot return")
}

impl farol_execution::StateView for BrokenBeneficiary<'_> {
    fn account(
        &self,
        address: Address,
    ) -> Result<Option<farol_execution::Account>, farol_execution::StateError> {
        if address != self.beneficiary {
            return self.inner.account(address);
        }
        if !self.code {
            return Err(farol_execution::StateError::Store("the beneficiary is unreadable".into()));
        }
        let code_hash = unreadable_code();
        Ok(Some(farol_execution::Account { balance: U256::ZERO, nonce: 1, code_hash }))
    }
    fn code(&self, hash: alloy_primitives::B256) -> Result<Bytes, farol_execution::StateError> {
        if hash == unreadable_code() {
            return Err(farol_execution::StateError::Store("the code is unreadable".into()));
        }
        self.inner.code(hash)
    }
    fn storage(&self, address: Address, slot: U256) -> Result<U256, farol_execution::StateError> {
        self.inner.storage(address, slot)
    }
    fn block_hash(
        &self,
        number: u64,
    ) -> Result<alloy_primitives::B256, farol_execution::StateError> {
        self.inner.block_hash(number)
    }
}

/// When reading the beneficiary fails, the block fails where sequential execution fails:
/// at the first transaction that passes its checks, whose fee revm credits by reading the
/// beneficiary (its account and its code). Until stop 40 the parallel executors read it at
/// the end, and its code never: an unreadable code went unnoticed, an invalid transaction
/// after the first valid one was reported instead of the read error (Block-STM), and the
/// read error instead of an invalid first transaction (partitioned).
#[test]
fn a_failed_beneficiary_read_fails_the_block_where_sequential_does() {
    let mut world = users_world(8);
    let ben = Address::repeat_byte(0xbb);
    let env = world.block_env(ben);
    let u = world.users.clone();
    let valid = world.transfer(u[0], u[2], U256::from(1));
    let valid2 = world.transfer(u[1], u[3], U256::from(1));
    // Nonces one past the account's: refused by their checks.
    let _ = world.transfer(u[4], u[5], U256::from(1));
    let too_high = world.transfer(u[4], u[5], U256::from(1));
    let _ = world.transfer(u[6], u[7], U256::from(1));
    let too_high2 = world.transfer(u[6], u[7], U256::from(1));
    let cases = [
        (true, vec![valid.clone(), valid2.clone()], "code unreadable"),
        (false, vec![valid.clone(), too_high.clone()], "account unreadable, then invalid"),
        (false, vec![too_high2.clone(), valid2.clone()], "invalid, then account unreadable"),
    ];
    for (code, txs, what) in cases {
        let view = BrokenBeneficiary { inner: &world.state, beneficiary: ben, code };
        let seq = execute_sequential(&view, &world.chain, &env, &txs);
        assert!(seq.is_err(), "{what}: {seq:?}");
        for threads in [2, 4] {
            let par = executor(threads).execute(&view, &world.chain, &env, &txs).map(|(o, _)| o);
            assert_eq!(par, seq, "{what}: {threads} threads");
            for mode in [Partition::Predicted, Partition::RoundRobin] {
                let par = partitioned(threads, mode)
                    .execute(&view, &world.chain, &env, &txs)
                    .map(|(o, _)| o);
                assert_eq!(par, seq, "{what}: {threads} threads, partitioned {mode:?}");
            }
        }
    }
}

/// The workers' KECCAK256 takes its hashes from a memo of each thread (`parallel::memo`); the
/// sequential reference runs revm's own instruction. Blocks of calls that hash every kind of
/// memory range (empty, within memory, expanding it, past what a `usize` or the gas allows,
/// longer than the memo's inputs), most of them many times over so that the memo answers,
/// with gas limits that run out at every step, must give the same receipts and state.
#[test]
fn keccak_of_any_memory_range_in_parallel_equals_sequential() {
    use farol_execution::MemAccount;
    // Memory[0..64] from calldata words 2 and 3, then KECCAK256(offset = word 0, length =
    // word 1) twice: the first into the caller's slot, the second into the slot `not(caller)`
    // (no other sender's slot, so that the transactions touch nothing in common and both
    // partitionings run the block without a conflict).
    let code: Vec<u8> = vec![
        0x60, 0x40, 0x35, 0x60, 0x00, 0x52, // mstore(0, calldataload(0x40))
        0x60, 0x60, 0x35, 0x60, 0x20, 0x52, // mstore(0x20, calldataload(0x60))
        0x60, 0x20, 0x35, 0x60, 0x00, 0x35, 0x20, // keccak256(word 0, length word 1)
        0x33, 0x55, // sstore(caller, hash)
        0x60, 0x20, 0x35, 0x60, 0x00, 0x35, 0x20, // the same hash again
        0x33, 0x19, 0x55, // sstore(not(caller), hash)
        0x00,
    ];
    let mut world = users_world(256);
    let hasher = Address::repeat_byte(0x4a);
    world.state.insert(hasher, MemAccount { code: code.into(), ..Default::default() });
    let mut r = rng(0x6ecc);
    let big = [U256::from(u64::MAX), U256::from(1u64) << 64, U256::MAX, U256::from(1u64) << 255];
    for block in 0..8 {
        let txs: Vec<_> = (0..256)
            .map(|i| {
                let offset = match r.random_range(0..20) {
                    0 => big[r.random_range(0..big.len())],
                    1..=3 => U256::from(r.random_range(64..5_000u64)),
                    _ => U256::from(r.random_range(0..64u64)),
                };
                let len = match r.random_range(0..20) {
                    0 => big[r.random_range(0..big.len())],
                    1 => U256::ZERO,
                    2..=3 => U256::from(r.random_range(97..3_000u64)),
                    // A few fixed ranges, so that most hashes repeat within the block.
                    4..=13 => U256::from([20u64, 32, 40, 64, 85, 96][r.random_range(0..6)]),
                    _ => U256::from(r.random_range(1..=96u64)),
                };
                // Words 2 and 3 (the hashed bytes) from a few values, again so that they repeat.
                let word = |r: &mut rand_chacha::ChaCha8Rng| U256::from(r.random_range(0..4u64));
                let mut data = Vec::with_capacity(128);
                for w in [offset, len, word(&mut r), word(&mut r)] {
                    data.extend_from_slice(&w.to_be_bytes::<32>());
                }
                // From too little for the first hash to enough for both stores.
                let gas = 21_000 + 2_500 + r.random_range(0..60_000u64);
                world.call(world.users[i], hasher, U256::ZERO, data, gas, Flavor::DynamicFee, 1)
            })
            .collect();
        let env = world.block_env(Address::repeat_byte(0xcb));
        let seq = agree(&world, &env, &txs);
        let out = seq.as_ref().unwrap_or_else(|e| panic!("block {block}: {e}"));
        let ok = out.txs.iter().filter(|t| t.is_success()).count();
        assert!((40..=230).contains(&ok), "block {block}: {ok} of 256 succeeded");
        // The partitioned workers ran the block to its end (`agree` would also pass if they
        // gave up and Block-STM ran it).
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let stats =
                partitioned_agrees(&world, &env, &txs, &seq, 2, mode, "keccak").unwrap_or_default();
            assert!(stats.bins >= 2 && stats.partition_abandoned.is_none(), "{mode:?}: {stats:?}");
        }
        world.commit(out);
    }
}
