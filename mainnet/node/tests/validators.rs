//! Validators running AsyncBFT over QUIC on loopback: real sockets, real signatures, real
//! write-ahead logs. They must agree on every block, commit every transaction once, keep
//! going with one validator killed, the restarted validator must catch up, and all of them
//! killed and restarted at once must go on.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use farol_consensus::{
    sim, AsyncBft, Committed, Committee, Config, Member, SignatureCache, Transaction,
    ValidatorIndex,
};
use farol_crypto::ed25519;
use farol_network::{Identity, Network, NetworkConfig, Peer};
use farol_node::{Parts, Validator, ValidatorConfig, ValidatorStatus, Wal};
use tokio::sync::mpsc;

fn free_addrs(n: usize) -> Vec<SocketAddr> {
    farol_network::free_loopback_addrs(n).unwrap_or_else(|e| panic!("free ports: {e}"))
}

struct Net {
    committee: Arc<Committee>,
    keys: Vec<ed25519::SigningKey>,
    ids: Vec<Identity>,
    peers: Vec<Peer>,
    dir: PathBuf,
    /// What each validator reports (kept across its restarts).
    statuses: Vec<Arc<ValidatorStatus>>,
}

type Log = Arc<Mutex<Vec<Committed>>>;

impl Net {
    fn start(&self, i: usize, cache: Arc<SignatureCache>) -> (Validator, Log) {
        let wal = self.dir.join(format!("{i}.wal"));
        self.start_at(i, &wal, self.peers[i].addr, self.statuses[i].clone(), cache)
    }

    /// Validator `i`'s keys run over the log at `wal`, listening at `listen`, reporting to
    /// `status` (another process with its keys, when not its own).
    fn start_at(
        &self,
        i: usize,
        wal: &Path,
        listen: SocketAddr,
        status: Arc<ValidatorStatus>,
        cache: Arc<SignatureCache>,
    ) -> (Validator, Log) {
        let (wal, records) = Wal::open(wal).unwrap_or_else(|e| panic!("{e}"));
        let mut replayed = Vec::new();
        let cfg = Config { chain: [9; 32], ..Config::default() };
        let engine = AsyncBft::recover(
            self.committee.clone(),
            ValidatorIndex(i as u16),
            self.keys[i].clone(),
            cfg,
            cache,
            records,
            &mut replayed,
        );
        let ncfg = NetworkConfig::new(i as u16, self.ids[i].clone(), listen, self.peers.clone());
        // A killed validator's socket is released once its aborted tasks are dropped, which a
        // loaded machine can take a while to do: binding again is retried for 10 s.
        let mut attempts = 0;
        let (network, inbound) = loop {
            match Network::start(ncfg.clone()) {
                Ok(n) => break n,
                Err(_) if attempts < 200 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let (tx, mut rx) = mpsc::channel::<Committed>(64);
        let log: Log = Arc::default();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let mut l = sink.lock().unwrap_or_else(|e| e.into_inner());
                // A recovered validator replays its commits from height 1.
                if c.height as usize == l.len() + 1 {
                    l.push(c);
                }
            }
        });
        let parts = Parts {
            engine: Box::new(engine),
            replayed,
            network: Arc::new(network),
            inbound,
            wal,
            commits: tx,
            node_frames: None,
        };
        let v = Validator::spawn_with(parts, ValidatorConfig::default(), None, status);
        (v, log)
    }
}

fn tx(i: u64) -> Transaction {
    let mut sender = [0u8; 20];
    sender[..8].copy_from_slice(&(i % 97).to_le_bytes());
    let mut payload = vec![0u8; 64];
    payload[..8].copy_from_slice(&i.to_le_bytes());
    Transaction { sender, payload: Bytes::from(payload) }
}

fn committed(log: &Log) -> HashSet<[u8; 32]> {
    let l = log.lock().unwrap_or_else(|e| e.into_inner());
    let mut seen = HashSet::new();
    for c in l.iter() {
        for t in &c.transactions {
            assert!(seen.insert(t.digest()), "a transaction committed twice");
        }
    }
    seen
}

async fn wait_for(logs: &[&Log], want: &HashSet<[u8; 32]>, what: &str) {
    for _ in 0..600 {
        if logs.iter().all(|l| want.is_subset(&committed(l))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let have: Vec<usize> = logs.iter().map(|l| committed(l).intersection(want).count()).collect();
    panic!("{what}: committed {have:?} of {}", want.len());
}

/// Every pair of logs agrees on every height both have.
fn agree(logs: &[&Log]) {
    let all: Vec<Vec<Committed>> =
        logs.iter().map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for a in &all {
        // Commit times come from the validators' clocks: they never decrease and are recent
        // (the first commits of round 1 have no parents and take the time 0).
        for w in a.windows(2) {
            assert!(w[0].timestamp_ms <= w[1].timestamp_ms, "commit time went back");
        }
        let last = a.last().map(|c| c.timestamp_ms).unwrap_or(0);
        assert!(
            a.len() < 3 || (now - 600_000..=now).contains(&last),
            "commit time {last}, now {now}"
        );
        for b in &all {
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x, y, "validators disagree at height {}", x.height);
            }
        }
    }
}

/// Submits transactions `range`, round-robin over the first `over` validators.
async fn submit(
    running: &[Option<(Validator, Log)>],
    range: std::ops::Range<u64>,
    over: u64,
    want: &mut HashSet<[u8; 32]>,
) {
    for i in range {
        let t = tx(i);
        want.insert(t.digest());
        if let Some((v, _)) = &running[(i % over) as usize] {
            v.submitter().send(vec![t]).await.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn setup(n: usize, dir: &Path) -> Net {
    let ids: Vec<Identity> =
        (0..n).map(|_| Identity::generate().unwrap_or_else(|e| panic!("{e}"))).collect();
    // Blocks are signed with the network identities, as `farol node` does.
    let keys: Vec<ed25519::SigningKey> = ids
        .iter()
        .map(|i| ed25519::SigningKey::from_pkcs8(i.to_pkcs8()).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let members = sim::keys(n)
        .into_values()
        .zip(&ids)
        .map(|(k, id)| Member {
            key: k.public_key(),
            possession: k.prove_possession(),
            block_key: ed25519::PublicKey::from_spki(&id.public_key().0)
                .unwrap_or_else(|e| panic!("{e}")),
            stake: 1,
        })
        .collect();
    let committee = Arc::new(Committee::new(members).unwrap_or_else(|e| panic!("{e}")));
    let peers = ids
        .iter()
        .zip(free_addrs(ids.len()))
        .map(|(i, addr)| Peer { key: i.public_key().clone(), addr })
        .collect();
    let statuses = (0..n).map(|_| Arc::default()).collect();
    Net { committee, keys, ids, peers, dir: dir.to_path_buf(), statuses }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validators_agree_survive_a_kill_and_the_restarted_one_catches_up() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let net = setup(4, dir.path());
    // Each validator has its own signature cache, as separate processes would.
    let mut running: Vec<Option<(Validator, Log)>> =
        (0..4).map(|i| Some(net.start(i, Arc::default()))).collect();
    let logs = |r: &Vec<Option<(Validator, Log)>>, which: &[usize]| -> Vec<Log> {
        which.iter().filter_map(|i| r[*i].as_ref().map(|(_, l)| l.clone())).collect()
    };

    let mut want = HashSet::new();
    submit(&running, 0..600, 4, &mut want).await;
    let all = logs(&running, &[0, 1, 2, 3]);
    wait_for(&all.iter().collect::<Vec<_>>(), &want, "all four").await;
    agree(&all.iter().collect::<Vec<_>>());

    // Kill validator 3 (no orderly shutdown); the others go on.
    if let Some((v, _)) = running[3].take() {
        v.kill();
    }
    submit(&running, 600..1200, 3, &mut want).await;
    let three = logs(&running, &[0, 1, 2]);
    wait_for(&three.iter().collect::<Vec<_>>(), &want, "three after the kill").await;

    // A faulty process with validator 3's key (and another address) sends validator 0 frames
    // that are no consensus message: it counts them, where the node publishes its faults,
    // and goes on.
    let malformed = |s: &ValidatorStatus| {
        s.faults.lock().iter().find(|(k, _)| *k == "malformed").map_or(0, |(_, n)| *n)
    };
    assert_eq!(malformed(&net.statuses[0]), 0);
    let listen = free_addrs(1)[0];
    let faulty = NetworkConfig::new(3, net.ids[3].clone(), listen, net.peers.clone());
    let (faulty, _inbound) = Network::start(faulty).unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while malformed(&net.statuses[0]) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "validator 0 counted no malformed frame");
        faulty.send(0, Bytes::from_static(&[0x3f, 0xff, 0xff, 0xff, 0xff]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    faulty.shutdown();
    submit(&running, 1200..1300, 3, &mut want).await;
    wait_for(&three.iter().collect::<Vec<_>>(), &want, "three after the garbage").await;

    // Restart it from its log: it replays, catches up, and agrees.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running[3] = Some(net.start(3, Arc::default()));
    submit(&running, 1300..1400, 4, &mut want).await;
    let all = logs(&running, &[0, 1, 2, 3]);
    wait_for(&all.iter().collect::<Vec<_>>(), &want, "all four after the restart").await;
    agree(&all.iter().collect::<Vec<_>>());

    // Kill all four at once and restart them all from their logs: they replay what they
    // committed and go on together (no round is left without the blocks to reach a quorum).
    for r in running.iter_mut() {
        if let Some((v, _)) = r.take() {
            v.kill();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, r) in running.iter_mut().enumerate() {
        *r = Some(net.start(i, Arc::default()));
    }
    submit(&running, 1400..1600, 4, &mut want).await;
    let all = logs(&running, &[0, 1, 2, 3]);
    wait_for(&all.iter().collect::<Vec<_>>(), &want, "all four after they all restarted").await;
    agree(&all.iter().collect::<Vec<_>>());
    for r in running.into_iter().flatten() {
        r.0.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A fault counter a validator published.
fn fault(s: &ValidatorStatus, kind: &str) -> u64 {
    s.faults.lock().iter().find(|(k, _)| *k == kind).map_or(0, |(_, n)| *n)
}

/// A copy of a running validator (its log copied while it runs, its keys, another address:
/// its directory copied to a second machine) proposes nothing, over real sockets. The others
/// send to the address the committee names, the original's, so the copy hears no block of
/// theirs, and a restarted engine proposes only once it has heard from a quorum (docs/node.md
/// §1 "Two processes with one key"); it can therefore not take over either while the
/// committee names the other address. The original never stands down (the copy sends only
/// the newest block of its log, which the original signed), and the chain goes on. Since
/// stop 55: the guard was tested in the simulator and the engine alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_of_a_running_validator_elsewhere_proposes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let net = setup(4, dir.path());
    let running: Vec<Option<(Validator, Log)>> =
        (0..4).map(|i| Some(net.start(i, Arc::default()))).collect();
    let all: Vec<Log> = running.iter().flatten().map(|(_, l)| l.clone()).collect();
    let all: Vec<&Log> = all.iter().collect();
    let mut want = HashSet::new();
    submit(&running, 0..300, 4, &mut want).await;
    wait_for(&all, &want, "all four").await;

    let copied = dir.path().join("3-copy.wal");
    std::fs::copy(dir.path().join("3.wal"), &copied).unwrap_or_else(|e| panic!("{e}"));
    let status = Arc::new(ValidatorStatus::default());
    let listen = free_addrs(1)[0];
    let (copy, copy_log) = net.start_at(3, &copied, listen, status.clone(), Arc::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let round = status.round.load(Ordering::Relaxed);
    assert!(round > 0, "the copy did not recover its log's round");
    let replayed = copy_log.lock().unwrap_or_else(|e| e.into_inner()).len();
    let replay_done = unix_ms();

    // Load through the four for longer than a restarted engine's patience (100 ticks of
    // 10 ms), and then some.
    for k in 0..4u64 {
        submit(&running, 300 + k * 200..500 + k * 200, 4, &mut want).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    wait_for(&all, &want, "all four beside the copy").await;
    agree(&all);
    assert_eq!(status.round.load(Ordering::Relaxed), round, "the copy moved on a round");
    assert_eq!(copy_log.lock().unwrap_or_else(|e| e.into_inner()).len(), replayed);
    assert!(!status.stood_down.load(Ordering::Relaxed));
    // None of the copy's blocks was committed since its log's replay; each of the four's
    // were (what `/health` reads: since stop 56 a validator none of whose blocks is
    // committed while the others' are is not healthy).
    let own = status.own_commit_ms.load(Ordering::Relaxed);
    assert!(own < replay_done, "a block of the copy was committed");
    for (i, s) in net.statuses.iter().enumerate() {
        let own = s.own_commit_ms.load(Ordering::Relaxed);
        assert!(own > replay_done, "no block of validator {i} committed");
        assert!(!s.stood_down.load(Ordering::Relaxed), "validator {i} stood down");
        assert_eq!(fault(s, "other_signer"), 0, "validator {i}");
        assert_eq!(fault(s, "equivocators"), 0, "validator {i} saw an equivocation");
    }
    copy.kill();
    submit(&running, 1100..1200, 4, &mut want).await;
    wait_for(&all, &want, "all four after the copy stopped").await;
    agree(&all);
    for r in running.into_iter().flatten() {
        r.0.stop().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Now, in Unix milliseconds.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
