//! Four validators in one process over real sockets. One is stopped while the others go on
//! for many times the consensus history they keep (`gc_depth` rounds); restarted, it cannot
//! catch up through consensus, so it syncs the block-final chain from its peers, rejoins
//! consensus from a peer's snapshot whose digest a final block carries, and then orders,
//! executes and finalizes new transactions with the others — including ones sent to it.
//! Then it restarts from its (snapshot-headed) log, and finally from an empty data
//! directory, syncing the chain from genesis.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use farol_crypto::SecretKey;
use farol_network::Identity;
use farol_node::client::{quantity, RpcClient};
use farol_node::config::{
    Member, NetworkSettings, PipelineSettings, RpcConfig, SyncSettings, ValidatorKeys,
};
use farol_node::genesis::ConsensusParams;
use farol_node::{Genesis, Node, NodeConfig};
use serde_json::{json, Value};

fn configs(root: &std::path::Path, n: usize, funded: &[Address]) -> Vec<NodeConfig> {
    let keys: Vec<(SecretKey, Identity)> = (0..n)
        .map(|i| {
            let id = Identity::generate().unwrap_or_else(|e| panic!("{e}"));
            (SecretKey::from_seed(&[i as u8 + 1; 32]), id)
        })
        .collect();
    // Distinct ports (free ones probed one at a time may come back twice).
    let addrs = farol_network::free_loopback_addrs(n).unwrap_or_else(|e| panic!("{e}"));
    let committee: Vec<Member> = keys
        .iter()
        .zip(addrs)
        .map(|((bls, id), address)| Member {
            bls_public: Bytes::copy_from_slice(&bls.public_key().to_bytes()),
            bls_possession: Bytes::copy_from_slice(&bls.prove_possession().to_bytes()),
            network_public: Bytes::copy_from_slice(&id.public_key().0),
            address,
            stake: 1,
            fee_recipient: Address::repeat_byte(0xfe),
            coin_public: None,
        })
        .collect();
    // With the common coin (threshold 2 of 4): wave slots and their commits go through
    // checkpoints and rejoins too.
    let coin =
        farol_crypto::coin::deal(&[3; 32], n, (n - 1) / 3 + 1).unwrap_or_else(|e| panic!("{e}"));
    let committee: Vec<Member> = committee
        .into_iter()
        .zip(&coin.publics)
        .map(|(m, k)| Member { coin_public: Some(Bytes::copy_from_slice(&k.to_bytes())), ..m })
        .collect();
    // Restarted nodes bind their HTTP ports again: below the ephemeral range.
    let base = farol_node::client::free_listen_ports(n as u16).unwrap_or_else(|e| panic!("{e}"));
    let https: Vec<SocketAddr> =
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], base + i as u16))).collect();
    let mut genesis = Genesis::dev(funded, U256::from(10u64).pow(U256::from(21)), 1_700_000_000);
    // A short history, so that a short outage is already far behind it.
    genesis.consensus = ConsensusParams { gc_depth: 20, checkpoint_every: 8 };
    keys.into_iter()
        .enumerate()
        .map(|(i, (bls, id))| NodeConfig {
            data_dir: root.join(format!("v{i}")),
            genesis: genesis.clone(),
            validator: Some(ValidatorKeys {
                index: i as u16,
                bls_secret: Bytes::copy_from_slice(&bls.to_bytes()),
                network_secret: Bytes::copy_from_slice(id.to_pkcs8()),
                coin_secret: Some(Bytes::copy_from_slice(&coin.secrets[i].to_bytes())),
            }),
            committee: committee.clone(),
            rpc: RpcConfig { http: Some(https[i]), ws: None, ..RpcConfig::default() },
            mempool: Default::default(),
            // Every snapshot cuts the consensus log: restarts recover from one.
            pipeline: PipelineSettings {
                fsync: false,
                consensus_log_bytes: 1,
                ..PipelineSettings::default()
            },
            sync: SyncSettings {
                peers: https.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| *a).collect(),
                stalled_secs: 1,
                poll_millis: 100,
                ..SyncSettings::default()
            },
            // Peers forget what they queued for a validator that is down after 64 frames.
            network: NetworkSettings { peer_queue: 64, ..NetworkSettings::default() },
            log: "warn".into(),
            log_json: false,
        })
        .collect()
}

fn transfer(key: &PrivateKeySigner, nonce: u64) -> String {
    let tx = TxEip1559 {
        chain_id: 31337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 2_000_000_000,
        to: TxKind::Call(Address::repeat_byte(0x66)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
    let raw = TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718();
    format!("0x{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn status(addr: SocketAddr) -> Value {
    RpcClient::new(addr).call("farol_status", json!([])).unwrap_or_default()
}

/// Sends transfers `nonces` through `addr`; returns the block of the last once every node in
/// `all` holds it final with the same hash.
fn send(
    addr: SocketAddr,
    key: &PrivateKeySigner,
    nonces: std::ops::Range<u64>,
    all: &[SocketAddr],
) -> u64 {
    let mut c = RpcClient::new(addr);
    let mut last = Value::Null;
    for nonce in nonces {
        last = c
            .call("eth_sendRawTransaction", json!([transfer(key, nonce)]))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let n = loop {
        let r = c.call("eth_getTransactionReceipt", json!([last])).unwrap_or(Value::Null);
        if !r.is_null() {
            break quantity(&r["blockNumber"]).unwrap_or(0);
        }
        assert!(Instant::now() < deadline, "no receipt for {last} via {addr}: {}", status(addr));
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut hashes = Vec::new();
    for a in all {
        loop {
            let s = status(*a);
            if quantity(&s["finalized"]).unwrap_or(0) >= n {
                break;
            }
            assert!(Instant::now() < deadline, "{a} never finalized block {n}: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let b = RpcClient::new(*a)
            .call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .unwrap_or_default();
        hashes.push(b["hash"].clone());
    }
    assert!(hashes.iter().all(|h| *h == hashes[0] && !h.is_null()), "block {n}: {hashes:?}");
    n
}

/// Starts a node again, waiting for its UDP port (released asynchronously after a stop).
async fn restart(cfg: &NodeConfig) -> Node {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Node::start(cfg.clone()).await {
            Ok(n) => return n,
            Err(e @ farol_node::NodeError::Bind { .. }) if Instant::now() < deadline => {
                eprintln!("{e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Starts every node of `cfgs` and sends `key`'s transfers of nonces 0 to 2 through node
/// `via`, until final everywhere; returns the nodes and their HTTP addresses.
async fn start_and_send(
    cfgs: &[NodeConfig],
    via: usize,
    key: &PrivateKeySigner,
) -> (Vec<Option<Node>>, Vec<SocketAddr>) {
    let mut nodes = Vec::new();
    for c in cfgs {
        nodes.push(Some(Node::start(c.clone()).await.unwrap_or_else(|e| panic!("{e}"))));
    }
    let https: Vec<SocketAddr> = cfgs.iter().filter_map(|c| c.rpc.http).collect();
    let all = https.clone();
    let k = key.clone();
    tokio::task::spawn_blocking(move || send(all[via], &k, 0..3, &all))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (nodes, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_far_behind_syncs_and_rejoins_consensus() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x61; 32]).unwrap_or_else(|e| panic!("{e}"));
    // A second sender whose transactions validator 3 proposes (the first assignee of its
    // address in a committee of four equal stakes).
    let four = farol_consensus::Committee::new(farol_consensus::sim::members(4, 1))
        .unwrap_or_else(|e| panic!("{e}"));
    let held_key = (0x70u8..)
        .map(|b| PrivateKeySigner::from_slice(&[b; 32]).unwrap_or_else(|e| panic!("{e}")))
        .find(|k| {
            farol_consensus::asyncbft::AsyncBft::assignee(&four, &k.address().into_array(), 0)
                == farol_consensus::ValidatorIndex(3)
        })
        .unwrap_or_else(|| panic!("no key assigned to validator 3"));
    let cfgs = configs(root.path(), 4, &[key.address(), held_key.address()]);
    let (mut nodes, https) = start_and_send(&cfgs, 0, &key).await;

    // Validator 3 stops; the others commit many times its history's worth.
    if let Some(n) = nodes[3].take() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let three = https[..3].to_vec();
    let k = key.clone();
    let before = tokio::task::spawn_blocking(move || {
        let at = quantity(&status(three[0])["consensusHeight"]).unwrap_or(0);
        let mut nonce = 3;
        // 20 rounds of history; at least 4 commits a round among 3 live validators: 400
        // commits are 5 times the history and more.
        while quantity(&status(three[0])["consensusHeight"]).unwrap_or(0) < at + 400 {
            send(three[0], &k, nonce..nonce + 2, &three);
            nonce += 2;
        }
        nonce
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Restarted: it syncs, rejoins, and takes part again. Marked as stood down (as if
    // another process had signed with its key) before it rejoins: the rejoin's new engine
    // listens as a restarted one does, and the mark goes (since stop 55: untested before).
    let restarted = restart(&cfgs[3]).await;
    let validator = restarted.state.validator.clone();
    validator.stood_down.store(true, std::sync::atomic::Ordering::Relaxed);
    let marked_first = validator.rejoins.load(std::sync::atomic::Ordering::Relaxed) == 0;
    nodes[3] = Some(restarted);
    let all = https.clone();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        // Before the rejoin (its block sync first fetches hundreds of blocks, and it waits
        // a second without commits), a transfer validator 3 is to propose: its pool hands
        // it to the engine at once, which holds it (far behind, it proposes empty blocks).
        // The rejoin's engine is given it (since stop 57; before, the pool handed it over
        // again 10 to 15 s later).
        RpcClient::new(all[3])
            .call("eth_sendRawTransaction", json!([transfer(&held_key, 0)]))
            .unwrap_or_else(|e| panic!("{e}"));
        // (Its way from the pool to the engine takes far less than this; a rejoin within it
        // leaves the check below out.)
        std::thread::sleep(Duration::from_millis(300));
        let given_first = validator.rejoins.load(std::sync::atomic::Ordering::Relaxed) == 0;
        if !given_first {
            eprintln!("validator 3 rejoined before its engine surely held the transfer");
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let s = status(all[3]);
            if quantity(&s["rejoins"]).unwrap_or(0) >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "validator 3 never rejoined: {s}\n{}",
                status(all[0])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // (Only if it was marked before the rejoin: a rejoin within microseconds of the
        // start would leave the mark made after it.)
        let stood_down = validator.stood_down.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!marked_first || !stood_down, "the rejoin left the stood-down mark");
        let carried = validator.rejoin_carried.load(std::sync::atomic::Ordering::Relaxed);
        assert!(!given_first || carried >= 1, "the rejoin dropped what consensus held");
        // Its consensus commits again, in step with the others.
        let h = quantity(&status(all[3])["consensusHeight"]).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while quantity(&status(all[3])["consensusHeight"]).unwrap_or(0) < h + 50 {
            assert!(Instant::now() < deadline, "validator 3 does not commit: {}", status(all[3]));
            std::thread::sleep(Duration::from_millis(50));
        }
        // Transactions sent to it are ordered, executed and final everywhere (the held
        // transfer among them: its sender's next nonce cannot be included before it).
        send(all[3], &held_key, 1..2, &all);
        send(all[3], &k, before..before + 3, &all);
        send(all[1], &k, before + 3..before + 5, &all);
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // A restart after the rejoin recovers from the snapshot its log now starts with.
    if let Some(n) = nodes[3].take() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
    nodes[3] = Some(restart(&cfgs[3]).await);
    let all = https.clone();
    let k = key.clone();
    tokio::task::spawn_blocking(move || send(all[2], &k, before + 5..before + 7, &all))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // Its disk is lost: started from an empty data directory, it syncs the whole chain from
    // genesis and rejoins again.
    if let Some(n) = nodes[3].take() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::remove_dir_all(&cfgs[3].data_dir).unwrap_or_else(|e| panic!("{e}"));
    nodes[3] = Some(restart(&cfgs[3]).await);
    let all = https.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        while quantity(&status(all[3])["rejoins"]).unwrap_or(0) < 1 {
            assert!(
                Instant::now() < deadline,
                "the wiped validator never rejoined: {}",
                status(all[3])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        send(all[3], &key, before + 7..before + 9, &all);
        // Snapshots are served by checkpoint height too (a rejoining validator asks for the
        // one its final chain carries): the newest by its height is the same bytes, and a
        // height no snapshot was kept for is null.
        let mut c = RpcClient::new(all[0]);
        let newest = c.call("farol_getSnapshot", json!([])).unwrap_or_else(|e| panic!("{e}"));
        let raw: alloy_primitives::Bytes =
            serde_json::from_value(newest.clone()).unwrap_or_else(|e| panic!("{e}"));
        let s = farol_consensus::Snapshot::decode(&raw).unwrap_or_else(|e| panic!("{e}"));
        let h = s.checkpoint.height;
        let by_height = c
            .call("farol_getSnapshot", json!([format!("{h:#x}")]))
            .unwrap_or_else(|e| panic!("{e}"));
        let raw2: alloy_primitives::Bytes =
            serde_json::from_value(by_height).unwrap_or_else(|e| panic!("{e}"));
        let s2 = farol_consensus::Snapshot::decode(&raw2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s2.checkpoint.height, h);
        let none = c.call("farol_getSnapshot", json!([format!("{:#x}", h + 1)]));
        assert_eq!(none.ok(), Some(Value::Null));
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for n in nodes.into_iter().flatten() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Copies a data directory (a stopped node's: a backup).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// The count of a consensus fault kind in a node's `farol_status`.
fn fault(s: &Value, kind: &str) -> u64 {
    s["consensusFaults"][kind].as_u64().unwrap_or(0)
}

/// An operator restores a validator's data directory from a backup: its consensus log no
/// longer holds the blocks it signed after the copy, and the others do (they keep a long
/// history here). Without the restart guard (stop 53) it proposed in the round after its
/// log's newest as it started, which it had signed before, and the others counted it an
/// equivocator (the simulator's `a_validator_restored_from_a_backup_never_signs_a_round_twice`
/// covers catching up through consensus; this node, listening, is caught up by block sync
/// and rejoins from a snapshot). Here no validator counts an equivocator, and the restored
/// one proposes above the rounds it reached before and commits with the others again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_restored_from_a_backup_signs_no_round_twice() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let key = PrivateKeySigner::from_slice(&[0x62; 32]).unwrap_or_else(|e| panic!("{e}"));
    let mut cfgs = configs(root.path(), 4, &[key.address()]);
    for c in &mut cfgs {
        // History enough that the others still hold every block the restored validator
        // signed after the copy, and its log kept whole.
        c.genesis.consensus = ConsensusParams { gc_depth: 5_000, checkpoint_every: 8 };
        c.pipeline.consensus_log_bytes = 1 << 30;
    }
    let (mut nodes, https) = start_and_send(&cfgs, 3, &key).await;

    // The backup: validator 3 stopped and its directory copied, then started again.
    if let Some(n) = nodes[3].take() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let backup = root.path().join("v3-backup");
    copy_dir(&cfgs[3].data_dir, &backup);
    nodes[3] = Some(restart(&cfgs[3]).await);
    let all = https.clone();
    let k = key.clone();
    let round = tokio::task::spawn_blocking(move || {
        // It proposes in many rounds past the copy, transactions through it among them.
        let from = quantity(&status(all[3])["consensusRound"]).unwrap_or(0);
        let mut nonce = 3;
        let deadline = Instant::now() + Duration::from_secs(90);
        while quantity(&status(all[3])["consensusRound"]).unwrap_or(0) < from + 100 {
            assert!(Instant::now() < deadline, "validator 3 does not go on: {}", status(all[3]));
            send(all[nonce as usize % 4], &k, nonce..nonce + 2, &all);
            nonce += 2;
        }
        (nonce, quantity(&status(all[3])["consensusRound"]).unwrap_or(0))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (nonce, reached) = round;

    // Stopped, and its directory replaced by the backup.
    if let Some(n) = nodes[3].take() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::remove_dir_all(&cfgs[3].data_dir).unwrap_or_else(|e| panic!("{e}"));
    copy_dir(&backup, &cfgs[3].data_dir);
    nodes[3] = Some(restart(&cfgs[3]).await);
    let all = https.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(90);
        // It gets above the rounds it reached before the restore (by a rejoin from a snapshot,
        // or through consensus), then proposes there: its round goes on rising.
        let round = |s: &Value| quantity(&s["consensusRound"]).unwrap_or(0);
        let mut above = None;
        loop {
            let s = status(all[3]);
            match above {
                None if round(&s) > reached => above = Some(round(&s)),
                Some(r) if round(&s) > r + 20 => break,
                _ => {}
            }
            assert!(Instant::now() < deadline, "the restored validator is stuck: {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
        send(all[3], &key, nonce..nonce + 3, &all);
        send(all[0], &key, nonce + 3..nonce + 5, &all);
        for a in &all {
            let s = status(*a);
            assert_eq!(fault(&s, "equivocators"), 0, "{a} saw an equivocator: {s}");
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    for n in nodes.into_iter().flatten() {
        n.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
}
