//! Executing over Farol Store: the same block over an in-memory state and over a store
//! holding the same state gives the same output, and applying the diff to the store gives
//! the same post-state; the blocks' diffs folded into one give, over the first version, the
//! root the store reached block by block.

use alloy_primitives::U256;
use farol_execution::workload::{rng, World, WorldSpec};
use farol_execution::{
    execute_sequential, ParallelConfig, ParallelExecutor, Partition, StateDiff, StateView,
    StoreState,
};
use farol_store::{Options, Store};

#[test]
fn blocks_over_the_store_match_blocks_over_memory() {
    let mut world = World::new(WorldSpec {
        users: 12,
        token_holders: 12,
        swappers: 12,
        tokens: 3,
        pools: 2,
        kits: 2,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let mut version = 1;
    store.apply(version, world.state.genesis_diff().store_changes()).unwrap();
    let mut r = rng(11);
    let mut folded = StateDiff::default();
    for b in 0..25 {
        let (env, txs) = world.random_block(1 + b % 40, &mut r);
        let over_memory = execute_sequential(&world.state, &world.chain, &env, &txs).unwrap();
        let view = StoreState::new(store.snapshot(version).unwrap());
        let over_store = execute_sequential(&view, &world.chain, &env, &txs).unwrap();
        assert_eq!(over_store, over_memory, "block {b}: sequential over the store differs");
        let (parallel, _) = ParallelExecutor::new(ParallelConfig::always_parallel(2))
            .execute(&view, &world.chain, &env, &txs)
            .unwrap();
        assert_eq!(parallel, over_memory, "block {b}: parallel over the store differs");
        for mode in [Partition::Predicted, Partition::RoundRobin] {
            let (partitioned, _) =
                ParallelExecutor::new(ParallelConfig::always_partitioned(2, mode))
                    .execute(&view, &world.chain, &env, &txs)
                    .unwrap();
            assert_eq!(partitioned, over_memory, "block {b}: partitioned {mode:?} differs");
        }
        version += 1;
        let root = store.apply(version, over_memory.diff.store_changes()).unwrap();
        folded.extend_with(&over_memory.diff);
        let first = StoreState::new(store.snapshot(1).unwrap());
        assert_eq!(first.root_with(folded.store_changes()).unwrap(), root, "block {b}: folded");
        world.commit(&over_memory);
        // Every account and slot the block changed reads back the same from the store.
        let view = StoreState::new(store.snapshot(version).unwrap());
        for address in over_memory.diff.accounts.keys() {
            assert_eq!(
                view.account(*address).unwrap(),
                world.state.account(*address).unwrap(),
                "block {b}: {address}"
            );
        }
        for (address, slots) in &over_memory.diff.storage {
            for slot in slots.keys() {
                assert_eq!(
                    view.storage(*address, *slot).unwrap(),
                    world.state.storage(*address, *slot).unwrap()
                );
            }
        }
        for (hash, code) in &over_memory.diff.code {
            assert_eq!(&view.code(*hash).unwrap(), code);
        }
    }
    // The store's state root moved with the blocks.
    assert_ne!(store.root(1).unwrap(), store.root(version).unwrap());
    // The blocks created and destroyed contracts: the fold zeroed slots of wiped accounts.
    assert!(!folded.wiped.is_empty());
    let _ = U256::ZERO;
}

#[test]
fn code_of_any_size_round_trips_through_the_store_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let mut diff = farol_execution::StateDiff::default();
    let sizes =
        [1usize, farol_execution::CODE_CHUNK - 4, farol_execution::CODE_CHUNK - 3, 24_576, 49_152];
    let codes: Vec<alloy_primitives::Bytes> = sizes
        .iter()
        .map(|n| (0..*n).map(|i| (i * 7 + n) as u8).collect::<Vec<u8>>().into())
        .collect();
    for code in &codes {
        diff.code.insert(alloy_primitives::keccak256(code), code.clone());
    }
    store.apply(1, diff.store_changes()).unwrap();
    let view = StoreState::new(store.snapshot(1).unwrap());
    for code in &codes {
        assert_eq!(
            &view.code(alloy_primitives::keccak256(code)).unwrap(),
            code,
            "{} bytes",
            code.len()
        );
    }
    // Code the store does not hold is a clear error, not a panic.
    assert!(view.code(alloy_primitives::B256::repeat_byte(9)).is_err());
}
