//! A deterministic, seeded simulator: validators running AsyncBFT over a simulated network
//! with per-link latency and jitter (so messages reorder), drops, partitions and heals,
//! crashes and restarts from the persisted log, and Byzantine validators. It checks, after
//! every commit, agreement, no duplicates and validity, and at the end liveness. Everything
//! random comes from the seed, so a failing seed reproduces exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use farol_crypto::{ed25519, SecretKey};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::asyncbft::{AsyncBft, Config, SignatureCache};
use crate::block::Message;
use crate::committee::{Committee, ValidatorIndex};
use crate::engine::{Action, Committed, Consensus, Input, Target, Transaction};

/// Microseconds of simulated time.
pub type Micros = u64;

/// Simulated time between two ticks.
pub const TICK: Micros = 5_000;

/// How a Byzantine validator misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Byzantine {
    /// Two processes with the same key, each proposing its own blocks (equivocation).
    Twins,
    /// Sends nothing at all.
    Silent,
    /// Runs the protocol but signs its blocks wrongly (valid points, wrong message).
    BadSignatures,
    /// Runs the protocol but flips bytes in its blocks and sends random bytes too.
    Garbage,
    /// Runs the protocol with a wrong coin key: its validly signed blocks carry coin shares
    /// that do not verify.
    BadCoinShares,
    /// Runs the protocol but censors: it drops every transaction forwarded to it, so its
    /// blocks (always on time: it stays live) carry none of the senders assigned to it.
    Censor,
    /// Withholds its blocks of even rounds (they go out only when asked for) and names each
    /// in its next block under the oldest round its own floor allows
    /// ([`Config::fault_stale_own_reference`]): validators with a higher floor do not fetch
    /// it. Its even blocks also name a block of its floor's round under a later round
    /// ([`Config::fault_raised_reference`]; since stop 48, and off with
    /// `FAROL_NO_RAISED_CLAIMS` set; before, only with `FAROL_RAISED_CLAIMS`). Scenarios with it keep
    /// less history (`gc_depth` 30 to 39), so floors move.
    StaleClaims,
}

/// What happens in a run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Validators (equal stake).
    pub n: usize,
    /// Byzantine validators and how they behave.
    pub byzantine: Vec<(usize, Byzantine)>,
    /// Validators that crash at a time and, if given, restart later from their log.
    pub crashes: Vec<(usize, Micros, Option<Micros>)>,
    /// Backups: validator `v`'s durable log is copied at a time, and its next restart
    /// starts from that copy instead of its log (an operator restoring a backup): the
    /// blocks it signed after the copy are gone from its log but not from the others.
    pub backups: Vec<(usize, Micros)>,
    /// Copies: at a time, a second process of validator `v` starts from a copy of `v`'s
    /// durable log while `v` runs on (an operator starting a copy of a running validator's
    /// directory elsewhere). Both run the honest engine, and no two blocks of one round may
    /// leave the two together. No transaction is submitted to the copy (one it took for
    /// itself would wait with it).
    pub copies: Vec<(usize, Micros)>,
    /// Validators that crash at a time and rejoin later from the newest snapshot of an
    /// honest validator that is up (as a node does after syncing the certified chain past
    /// the snapshot's height), its digest checked against the committed one.
    pub rejoins: Vec<(usize, Micros, Micros)>,
    /// Validators whose running process replaces its engine, from a time on, by one that
    /// rejoins from the newest snapshot of an honest validator that is up and ahead of it (as
    /// a node does whose block sync found it stranded), given the old engine's
    /// [held transactions](Consensus::held_transactions) as the node's driver gives them.
    /// It did not crash: what was submitted to it must commit.
    pub live_rejoins: Vec<(usize, Micros)>,
    /// A partition: from, to, and the validators cut off from the others.
    pub partition: Option<(Micros, Micros, Vec<usize>)>,
    /// Probability (per million) that any message is lost.
    pub loss_ppm: u32,
    /// Validators whose every incoming and outgoing message is lost with `lossy_ppm`.
    pub lossy: Vec<usize>,
    /// Loss probability at the lossy validators (per million).
    pub lossy_ppm: u32,
    /// Link latency: each link gets a base in this range, and each message adds up to the
    /// base again as jitter.
    pub latency: (Micros, Micros),
    /// Whether each message adds random jitter (up to its link's base) to its latency.
    pub jitter: bool,
    /// Simulated duration.
    pub duration: Micros,
    /// Transactions submitted per simulated second (to random honest validators).
    pub tx_rate: u64,
    /// Bytes of each transaction's payload.
    pub tx_bytes: usize,
    /// Time after `duration` (no new transactions) for every honest validator that is up to
    /// commit every transaction submitted to a validator that never crashed.
    pub drain: Micros,
    /// Engine parameters.
    pub config: Config,
    /// Whether the committee has a common coin (the asynchronous fallback runs).
    pub coin: bool,
    /// An adversarial scheduler: each validator gets the blocks of round `k` of `f` authors
    /// (a window that rotates with the round and the receiver) only once it has proposed in
    /// round `k + 1`, so its vote is never for them. Every block then gets votes from all
    /// but `f` validators and a certificate from exactly one block of the round after: no
    /// slot is ever decided by the partially synchronous rules. Only the coin's wave slots
    /// (votes through any path) make progress.
    pub split_votes: bool,
}

impl Scenario {
    /// A fault-free run of `n` validators.
    pub fn clean(n: usize) -> Scenario {
        Scenario {
            n,
            byzantine: Vec::new(),
            crashes: Vec::new(),
            backups: Vec::new(),
            copies: Vec::new(),
            rejoins: Vec::new(),
            live_rejoins: Vec::new(),
            partition: None,
            loss_ppm: 0,
            lossy: Vec::new(),
            lossy_ppm: 0,
            latency: (2_000, 15_000),
            jitter: true,
            duration: 1_500_000,
            tx_rate: 400,
            tx_bytes: 16,
            drain: 10_000_000,
            config: Config::default(),
            coin: true,
            split_votes: false,
        }
    }

    /// The largest number of faulty validators the run may have: `(n − 1) / 3`.
    pub fn f(&self) -> usize {
        (self.n - 1) / 3
    }

    /// A random scenario for `seed`: committee size and faults drawn from it.
    pub fn random(seed: u64) -> Scenario {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ce7_a210);
        let n = [4, 4, 4, 7, 7, 10][rng.random_range(0..6)];
        let mut s = Scenario::clean(n);
        let f = s.f();
        let mut ids: Vec<usize> = (0..n).collect();
        // Shuffle so faults hit random positions.
        for i in (1..n).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let d = s.duration;
        match rng.random_range(0..10) {
            0 => {}
            1 => s.loss_ppm = rng.random_range(10_000..100_000),
            2 => {
                let cut = rng.random_range(1..=n / 2);
                let start = rng.random_range(100_000..400_000);
                s.partition =
                    Some((start, start + rng.random_range(100_000..400_000), ids[..cut].to_vec()));
            }
            3 => {
                s.crashes =
                    ids[..f].iter().map(|i| (*i, rng.random_range(0..d / 3), None)).collect()
            }
            4 => {
                s.crashes = ids[..f]
                    .iter()
                    .map(|i| {
                        let at = rng.random_range(0..d / 3);
                        (*i, at, Some(at + rng.random_range(50_000..300_000)))
                    })
                    .collect()
            }
            5 => s.byzantine = ids[..f].iter().map(|i| (*i, Byzantine::Twins)).collect(),
            6 => s.byzantine = ids[..f].iter().map(|i| (*i, Byzantine::Silent)).collect(),
            7 => {
                s.byzantine = ids[..f]
                    .iter()
                    .map(|i| {
                        let b = match rng.random_range(0..5) {
                            0 => Byzantine::BadSignatures,
                            1 => Byzantine::Garbage,
                            2 => Byzantine::Censor,
                            3 => Byzantine::StaleClaims,
                            _ => Byzantine::BadCoinShares,
                        };
                        (*i, b)
                    })
                    .collect()
            }
            8 => s.split_votes = true,
            _ => {
                // Mixed: Byzantine and crashed up to f together, loss, and a short partition.
                let byz = rng.random_range(0..=f);
                let kinds = [
                    Byzantine::Twins,
                    Byzantine::Silent,
                    Byzantine::BadSignatures,
                    Byzantine::Garbage,
                    Byzantine::BadCoinShares,
                    Byzantine::Censor,
                    Byzantine::StaleClaims,
                ];
                s.byzantine = ids[..byz]
                    .iter()
                    .map(|i| (*i, kinds[rng.random_range(0..kinds.len())]))
                    .collect();
                s.crashes = ids[byz..f]
                    .iter()
                    .map(|i| {
                        let at = rng.random_range(0..d / 3);
                        let back =
                            rng.random_bool(0.5).then(|| at + rng.random_range(50_000..300_000));
                        (*i, at, back)
                    })
                    .collect();
                s.loss_ppm = rng.random_range(0..30_000);
                if rng.random_bool(0.5) {
                    let start = rng.random_range(100_000..400_000);
                    s.partition = Some((
                        start,
                        start + rng.random_range(50_000..200_000),
                        ids[f..f + 1].to_vec(),
                    ));
                }
            }
        }
        if rng.random_bool(0.3) {
            s.latency = (1_000, 40_000);
        }
        // A quarter of the runs without a coin (the partially synchronous protocol alone),
        // except against the adversarial scheduler, which only the coin gets past.
        s.coin = s.split_votes || rng.random_range(0..4) != 0;
        if s.byzantine.iter().any(|(_, b)| *b == Byzantine::StaleClaims) {
            s.config.gc_depth = rng.random_range(30..40);
        }
        // Since stop 53, half the validators that restart start from a backup taken up to
        // 300 ms before they crashed (drawn last, so that the rest of each seed's scenario
        // is what it was before).
        for (v, at, back) in s.crashes.clone() {
            if back.is_some() && at > 100_000 && rng.random_bool(0.5) {
                s.backups.push((v, rng.random_range(at.saturating_sub(300_000).max(50_000)..at)));
            }
        }
        // Since stop 54, a tenth of the runs with no other validator fault and no partition
        // start a copy of one validator (drawn last, like the backups). A copy started while
        // the validator it copies is cut off takes over, and the two may sign a round each
        // when it comes back (docs/consensus.md rule 13).
        if f > 0
            && s.byzantine.is_empty()
            && s.crashes.is_empty()
            && s.rejoins.is_empty()
            && s.live_rejoins.is_empty()
            && s.partition.is_none()
            && rng.random_bool(0.1)
        {
            s.copies.push((ids[0], rng.random_range(50_000..d / 2)));
        }
        // Since stop 58, a tenth of the runs make one honest validator that neither crashes
        // nor has a copy replace its running engine, from a time on, by one rejoining from a
        // peer's snapshot, given what the old one held (drawn last, like the copies): it
        // takes the first snapshot ahead of its commits, as a node's driver does, whether it
        // was cut off (a partition), lost messages or is only a few commits behind at that
        // moment; what was submitted to it must still commit, once.
        if rng.random_bool(0.1) {
            let busy = |v: &usize| {
                s.byzantine.iter().any(|(b, _)| b == v)
                    || s.crashes.iter().any(|(c, _, _)| c == v)
                    || s.copies.iter().any(|(c, _)| c == v)
            };
            // The partition's side first, where there is one: that is who falls behind.
            let cut = s.partition.as_ref().map(|(_, _, cut)| cut.clone()).unwrap_or_default();
            let pick = cut.iter().chain(&ids).find(|v| !busy(v)).copied();
            if let Some(v) = pick {
                s.live_rejoins.push((v, rng.random_range(100_000..d / 2)));
            }
        }
        s
    }
}

/// A broken property, with the seed that reproduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed of the run.
    pub seed: u64,
    /// Simulated time it was found at.
    pub at: Micros,
    /// What broke.
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} at {} µs: {}", self.seed, self.at, self.what)
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Commits at the first honest validator.
    pub height: u64,
    /// Transactions committed.
    pub committed: usize,
    /// Transactions submitted.
    pub submitted: usize,
    /// Commit latency of each transaction (submission to commit at its submitter), µs.
    pub latencies: Vec<Micros>,
    /// Messages sent.
    pub messages: u64,
    /// Highest round reached by an honest validator.
    pub rounds: u64,
    /// The longest time no honest validator committed, after the first commit, µs.
    pub longest_stall: Micros,
    /// For every commit at an honest validator of a block with transactions: its round and
    /// the time since it was proposed, µs.
    pub leader_delays: Vec<(u64, Micros)>,
    /// A hash of the whole run: the agreed chain, every message count and the simulated
    /// time of every commit. The same seed gives the same fingerprint.
    pub fingerprint: [u8; 32],
    /// Validators that rejoined from a snapshot.
    pub rejoins: u64,
    /// Of those, running processes that replaced their engine ([`Scenario::live_rejoins`]).
    pub live_rejoins: u64,
    /// Transactions the replaced engines held, given to the new ones.
    pub carried: u64,
    /// Times an honest validator's log was cut to a snapshot.
    pub compactions: u64,
    /// Restarts from a backup ([`Scenario::backups`]).
    pub restores: u64,
    /// Blocks validators restarted from a backup proposed after it.
    pub restored_proposals: u64,
    /// Copies started ([`Scenario::copies`]).
    pub copies: u64,
    /// Blocks the copies proposed.
    pub copy_proposals: u64,
    /// When a copy first proposed.
    pub copy_first_proposal_at: Option<Micros>,
    /// Honest processes that stood down: blocks signed with their key that they did not
    /// sign came from the others (only where a copy runs).
    pub stood_down: u64,
    /// Coin shares the honest validators up at the end found bad.
    pub bad_coin_shares: u64,
}

enum Event {
    Deliver { to: usize, from: ValidatorIndex, bytes: Bytes },
    Tick(usize),
    Submit,
    Crash(usize),
    Restart(usize),
    Rejoin(usize),
    LiveRejoin(usize),
    Backup(usize),
    Copy(usize),
}

struct Process {
    index: ValidatorIndex,
    engine: Option<AsyncBft>,
    wal: Vec<Bytes>,
    behavior: Option<Byzantine>,
    /// Per height, the digest of what this process committed.
    chain: Vec<[u8; 32]>,
    seen: HashSet<[u8; 32]>,
    /// When it last crashed.
    last_crash: Option<Micros>,
    /// The snapshot its log was last cut to.
    compacted: Option<Arc<crate::checkpoint::Snapshot>>,
    /// How much of its log is durable (a crash loses the rest), as the node's driver syncs:
    /// everything before a call's first message or commit.
    durable: usize,
    /// The block it sent in each round, to check that it never sends two.
    own_sent: HashMap<u64, [u8; 32]>,
    /// A copy of its durable log its next restart starts from ([`Scenario::backups`]).
    backup: Option<Vec<Bytes>>,
    /// Whether it restarted from a backup.
    restored: bool,
    /// For a copy ([`Scenario::copies`]), the process it copies and when it starts.
    copy_of: Option<(usize, Micros)>,
    /// For a copy, the round its engine started in (its log's): its blocks above are its
    /// own proposals.
    copied_round: u64,
    /// How far its wall clock is from the simulated time (ms).
    skew_ms: i64,
}

impl Process {
    /// A process of validator `index` that is not running yet.
    fn new(index: ValidatorIndex, behavior: Option<Byzantine>, skew_ms: i64) -> Process {
        Process {
            index,
            engine: None,
            wal: Vec::new(),
            behavior,
            chain: Vec::new(),
            seen: HashSet::new(),
            last_crash: None,
            compacted: None,
            durable: 0,
            own_sent: HashMap::new(),
            backup: None,
            restored: false,
            copy_of: None,
            copied_round: 0,
            skew_ms,
        }
    }
}

/// The Unix time (ms) of the simulation's start.
const EPOCH_MS: i64 = 1_700_000_000_000;

/// Whether `StaleClaims` validators also make references claiming a later round than their
/// block's (unless `FAROL_NO_RAISED_CLAIMS` is set).
fn raised_claims() -> bool {
    std::env::var_os("FAROL_NO_RAISED_CLAIMS").is_none()
}

/// Runs `scenario` with `seed`.
pub fn run(seed: u64, scenario: &Scenario) -> Result<Report, Violation> {
    Sim::new(seed, scenario).run().map_err(|mut v| {
        // It changes what the Byzantine validators do: a rerun needs it too.
        if !raised_claims() {
            v.what.push_str(" (with FAROL_NO_RAISED_CLAIMS set)");
        }
        v
    })
}

struct Sim<'s> {
    seed: u64,
    s: &'s Scenario,
    rng: ChaCha8Rng,
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Reverse<(Micros, u64)>>,
    events: HashMap<u64, Event>,
    procs: Vec<Process>,
    committee: Arc<Committee>,
    keys: Vec<ed25519::SigningKey>,
    /// Each validator's coin share (empty without a coin).
    coin_keys: Vec<SecretKey>,
    /// Each validator's cache of checked signatures and coins (twins share theirs), as each
    /// node has its own: shared by all, an engine took a coin another had combined before it
    /// held enough valid shares itself (until stop 40).
    caches: Vec<Arc<SignatureCache>>,
    links: HashMap<(usize, usize), Micros>,
    /// The agreed chain: per height, the digest of the commit.
    chain: Vec<[u8; 32]>,
    /// Per height, the transactions committed there.
    chain_txs: Vec<Vec<[u8; 32]>>,
    /// Per height with a checkpoint, its digest.
    checkpoints: HashMap<u64, [u8; 32]>,
    submitted: HashMap<[u8; 32], (Micros, usize)>,
    next_tx: u64,
    report: Report,
    last_commit: Option<Micros>,
    longest_stall: Micros,
    /// When each honest validator's block was proposed, by digest.
    proposed: HashMap<[u8; 32], Micros>,
    /// Messages the adversarial scheduler holds back: (to, until it proposed past this
    /// round, from, bytes, since when).
    held: Vec<(usize, u64, ValidatorIndex, Bytes, Micros)>,
    /// When each honest validator committed each height (for the fingerprint).
    commit_times: Vec<(Micros, usize, u64)>,
}

fn commit_digest(c: &Committed) -> [u8; 32] {
    let mut h = alloy_primitives::Keccak256::new();
    h.update(c.round.to_le_bytes());
    h.update(c.leader.0.to_le_bytes());
    h.update(c.leader_digest);
    for t in &c.transactions {
        h.update(t.digest());
    }
    if let Some(cp) = c.checkpoint {
        h.update(cp);
    }
    // The commit's time becomes the block's timestamp, so every validator must agree on it
    // too (until stop 40 it was not compared, and every clock read 0).
    h.update(c.timestamp_ms.to_le_bytes());
    h.update((c.proposals as u64).to_le_bytes());
    h.finalize().0
}

impl<'s> Sim<'s> {
    fn new(seed: u64, s: &'s Scenario) -> Sim<'s> {
        let members = members(s.n, 1);
        let keys = block_keys(s.n);
        // Equal stakes and distinct keys with valid proofs: a committee always forms.
        let mut committee = match Committee::new(members) {
            Ok(c) => c,
            Err(e) => unreachable!("simulated committee: {e}"),
        };
        let mut coin_keys = Vec::new();
        if s.coin {
            // Equal stakes always have a threshold, and a dealing is consistent.
            let t = committee.coin_threshold().unwrap_or(1);
            let dealt = match farol_crypto::coin::deal(&[0xc0; 32], s.n, t) {
                Ok(d) => d,
                Err(e) => unreachable!("simulated dealing: {e}"),
            };
            committee = match committee.with_coin(dealt.publics) {
                Ok(c) => c,
                Err(e) => unreachable!("simulated coin: {e}"),
            };
            coin_keys = dealt.secrets;
        }
        let committee = Arc::new(committee);
        let mut sim = Sim {
            seed,
            s,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            procs: Vec::new(),
            committee,
            keys,
            coin_keys,
            caches: (0..s.n).map(|_| Arc::new(SignatureCache::default())).collect(),
            links: HashMap::new(),
            chain: Vec::new(),
            chain_txs: Vec::new(),
            checkpoints: HashMap::new(),
            submitted: HashMap::new(),
            next_tx: 0,
            report: Report::default(),
            last_commit: None,
            longest_stall: 0,
            proposed: HashMap::new(),
            held: Vec::new(),
            commit_times: Vec::new(),
        };
        for v in 0..s.n {
            let behavior = s.byzantine.iter().find(|(i, _)| *i == v).map(|(_, b)| *b);
            if behavior == Some(Byzantine::Silent) {
                continue;
            }
            let copies = if behavior == Some(Byzantine::Twins) { 2 } else { 1 };
            for copy in 0..copies {
                let engine = sim.engine(v);
                // Clocks differ by up to 200 ms either way, drawn from the seed (not from
                // the run's random stream); a faulty validator's is an hour ahead, and each
                // twin's a second from the other's, so that the twins' blocks always differ.
                let mut h = alloy_primitives::Keccak256::new();
                h.update(seed.to_le_bytes());
                h.update((sim.procs.len() as u64).to_le_bytes());
                let draw = u64::from_le_bytes(h.finalize().0[..8].try_into().unwrap_or([0; 8]));
                let skew_ms = if behavior.is_some() {
                    3_600_000 + 1_000 * copy as i64
                } else {
                    (draw % 401) as i64 - 200
                };
                let mut proc_ = Process::new(ValidatorIndex(v as u16), behavior, skew_ms);
                proc_.engine = Some(engine);
                sim.procs.push(proc_);
            }
        }
        // Each copy is a process of its own, not started yet, with a clock of its own.
        for (v, at) in &s.copies {
            let Some(of) = sim.procs.iter().position(|q| usize::from(q.index.0) == *v) else {
                continue;
            };
            let mut copy =
                Process::new(ValidatorIndex(*v as u16), None, sim.procs[of].skew_ms + 37);
            copy.copy_of = Some((of, *at));
            sim.procs.push(copy);
        }
        let p = sim.procs.len();
        for a in 0..p {
            for b in 0..p {
                let base = sim.rng.random_range(s.latency.0..=s.latency.1);
                sim.links.insert((a, b), base);
            }
        }
        sim
    }

    /// Validator `v`'s engine parameters.
    fn config(&self, v: usize) -> Config {
        let mut cfg = self.s.config.clone();
        cfg.chain = [7; 32];
        cfg.coin = self.coin_keys.get(v).cloned();
        // Odd validators combine coins eagerly, even ones lazily: agreement between them
        // checks that both commit the same order.
        cfg.eager_coins = v % 2 == 1;
        cfg.fault_stale_own_reference = self.s.byzantine.contains(&(v, Byzantine::StaleClaims));
        cfg.fault_raised_reference = cfg.fault_stale_own_reference && raised_claims();
        // Byzantine twins sign on whatever the other signs.
        cfg.fault_ignore_other_signer = self.s.byzantine.contains(&(v, Byzantine::Twins));
        if self.s.byzantine.contains(&(v, Byzantine::BadCoinShares)) && cfg.coin.is_some() {
            cfg.coin = Some(SecretKey::from_seed(&[0xba; 32]));
        }
        cfg
    }

    fn engine(&self, v: usize) -> AsyncBft {
        let cfg = self.config(v);
        AsyncBft::new(
            self.committee.clone(),
            ValidatorIndex(v as u16),
            self.keys[v].clone(),
            cfg,
            self.caches[v].clone(),
        )
    }

    fn schedule(&mut self, at: Micros, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn violation(&self, what: String) -> Violation {
        Violation { seed: self.seed, at: self.now, what }
    }

    fn honest(&self, p: usize) -> bool {
        self.procs[p].behavior.is_none()
    }

    /// Each Byzantine validator that puts something wrong on the wire was noticed by an
    /// honest engine up at the end: otherwise the scenario ran honest in effect (a broken
    /// `corrupt`, twins proposing the same blocks) and proved nothing about the fault.
    fn faults_were_noticed(&self) -> Result<(), Violation> {
        let engines: Vec<_> = (0..self.procs.len())
            .filter(|p| self.honest(*p))
            .filter_map(|p| self.procs[p].engine.as_ref())
            .map(|e| e.faults())
            .collect();
        for (v, behavior) in &self.s.byzantine {
            let noticed = |f: &crate::asyncbft::Faults| match behavior {
                Byzantine::BadSignatures => f.bad_signatures > 0,
                Byzantine::Garbage => f.malformed + f.bad_signatures + f.invalid > 0,
                Byzantine::Twins => f.equivocators.contains(&ValidatorIndex(*v as u16)),
                _ => true,
            };
            if !engines.iter().any(|f| noticed(f)) {
                return Err(self.violation(format!(
                    "validator {v} was {behavior:?}, and no honest validator noticed"
                )));
            }
        }
        Ok(())
    }

    fn run(mut self) -> Result<Report, Violation> {
        for p in 0..self.procs.len() {
            let offset = if self.s.jitter { self.rng.random_range(0..TICK) } else { 0 };
            self.schedule(offset, Event::Tick(p));
        }
        if self.s.tx_rate > 0 {
            self.schedule(0, Event::Submit);
        }
        for (v, at, back) in self.s.crashes.clone() {
            for p in 0..self.procs.len() {
                if usize::from(self.procs[p].index.0) == v && self.procs[p].copy_of.is_none() {
                    self.schedule(at, Event::Crash(p));
                    if let Some(back) = back {
                        self.schedule(back, Event::Restart(p));
                    }
                }
            }
        }
        for (v, at) in self.s.backups.clone() {
            for p in 0..self.procs.len() {
                if usize::from(self.procs[p].index.0) == v && self.procs[p].copy_of.is_none() {
                    self.schedule(at, Event::Backup(p));
                }
            }
        }
        for (v, at, back) in self.s.rejoins.clone() {
            for p in 0..self.procs.len() {
                if usize::from(self.procs[p].index.0) == v && self.procs[p].copy_of.is_none() {
                    self.schedule(at, Event::Crash(p));
                    self.schedule(back, Event::Rejoin(p));
                }
            }
        }
        for (v, at) in self.s.live_rejoins.clone() {
            for p in 0..self.procs.len() {
                if usize::from(self.procs[p].index.0) == v && self.procs[p].copy_of.is_none() {
                    self.schedule(at, Event::LiveRejoin(p));
                }
            }
        }
        for p in 0..self.procs.len() {
            if let Some((_, at)) = self.procs[p].copy_of {
                self.schedule(at, Event::Copy(p));
            }
        }
        for p in 0..self.procs.len() {
            let mut out = Vec::new();
            let clock = self.clock(p);
            if let Some(e) = self.procs[p].engine.as_mut() {
                e.set_time(clock);
                e.start(&mut out);
            }
            self.apply(p, out)?;
        }
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            // After the run, keep going (no new transactions) until every honest validator
            // that is up has committed what liveness requires, or the drain time is over.
            if at > self.s.duration + self.s.drain {
                break;
            }
            self.now = at;
            let Some(event) = self.events.remove(&seq) else { continue };
            match event {
                Event::Deliver { to, from, bytes } => {
                    if self.procs[to].behavior == Some(Byzantine::Censor)
                        && matches!(
                            crate::block::Message::decode(&bytes),
                            Ok(crate::block::Message::Transactions(_))
                        )
                    {
                        continue;
                    }
                    self.step(to, Input::Messages(vec![(from, bytes)]))?;
                }
                Event::Tick(p) => {
                    if p == 0 && self.now > self.s.duration && self.done() {
                        break;
                    }
                    self.step(p, Input::Tick)?;
                    self.schedule(self.now + TICK, Event::Tick(p));
                }
                Event::Submit => {
                    if self.now >= self.s.duration {
                        continue;
                    }
                    self.submit()?;
                    let gap = 1_000_000 / self.s.tx_rate.max(1);
                    self.schedule(self.now + gap.max(1), Event::Submit);
                }
                Event::Crash(p) => {
                    // What was not durable is lost.
                    let proc_ = &mut self.procs[p];
                    proc_.engine = None;
                    proc_.last_crash = Some(self.now);
                    proc_.wal.truncate(proc_.durable);
                }
                Event::Backup(p) => {
                    let proc_ = &mut self.procs[p];
                    proc_.backup = Some(proc_.wal[..proc_.durable.min(proc_.wal.len())].to_vec());
                }
                Event::Copy(p) => {
                    let Some((of, _)) = self.procs[p].copy_of else { continue };
                    let o = &self.procs[of];
                    let wal = o.wal[..o.durable.min(o.wal.len())].to_vec();
                    // What the first committed (the node's chain, copied with the directory;
                    // the log's commits replay against it).
                    let (chain, seen) = (o.chain.clone(), o.seen.clone());
                    self.procs[p].durable = wal.len();
                    self.procs[p].wal = wal;
                    self.procs[p].chain = chain;
                    self.procs[p].seen = seen;
                    self.report.copies += 1;
                    let v = usize::from(self.procs[p].index.0);
                    let mut out = Vec::new();
                    // Another machine: a cache of its own.
                    let mut e = AsyncBft::recover(
                        self.committee.clone(),
                        ValidatorIndex(v as u16),
                        self.keys[v].clone(),
                        self.config(v),
                        Arc::new(SignatureCache::default()),
                        self.procs[p].wal.clone(),
                        &mut out,
                    );
                    e.set_time(self.clock(p));
                    self.procs[p].copied_round = e.round();
                    e.start(&mut out);
                    self.procs[p].engine = Some(e);
                    self.apply(p, out)?;
                }
                Event::Restart(p) => {
                    if let Some(backup) = self.procs[p].backup.take() {
                        self.procs[p].wal = backup;
                        self.procs[p].durable = self.procs[p].wal.len();
                        self.procs[p].compacted = None;
                        self.procs[p].restored = true;
                        self.report.restores += 1;
                    }
                    let v = usize::from(self.procs[p].index.0);
                    let cfg = self.config(v);
                    let mut out = Vec::new();
                    // A restarted node's caches start empty.
                    self.caches[v] = Arc::new(SignatureCache::default());
                    let mut e = AsyncBft::recover(
                        self.committee.clone(),
                        ValidatorIndex(v as u16),
                        self.keys[v].clone(),
                        cfg,
                        self.caches[v].clone(),
                        self.procs[p].wal.clone(),
                        &mut out,
                    );
                    e.set_time(self.clock(p));
                    e.start(&mut out);
                    self.procs[p].engine = Some(e);
                    self.apply(p, out)?;
                }
                Event::Rejoin(p) => self.rejoin(p, false)?,
                Event::LiveRejoin(p) => self.rejoin(p, true)?,
            }
        }
        self.finish()
    }

    /// Validator process `p` rejoins from the newest snapshot an honest validator that is up
    /// holds; without one yet, it tries again a little later. `live`: its process runs on
    /// and replaces its engine, and only by a snapshot ahead of what it committed (the
    /// node's driver takes no other); it keeps trying until the run's end.
    fn rejoin(&mut self, p: usize, live: bool) -> Result<(), Violation> {
        if live && !self.alive(p) {
            return Ok(());
        }
        let behind = self.procs[p].chain.len() as u64;
        let best = (0..self.procs.len())
            .filter(|q| *q != p && self.honest(*q) && self.alive(*q))
            .filter_map(|q| self.procs[q].engine.as_ref()?.snapshot())
            .filter(|s| !live || s.checkpoint.height > behind)
            .max_by_key(|s| s.checkpoint.height);
        let Some(snapshot) = best else {
            if !live {
                self.schedule(self.now + 100_000, Event::Rejoin(p));
            } else if self.now < self.s.duration {
                self.schedule(self.now + 100_000, Event::LiveRejoin(p));
            }
            return Ok(());
        };
        let h = snapshot.checkpoint.height;
        if self.checkpoints.get(&h) != Some(&snapshot.checkpoint.digest()) {
            return Err(self.violation(format!(
                "the snapshot at height {h} does not match the committed checkpoint"
            )));
        }
        // What travels is bytes.
        let encoded = snapshot.encode();
        let snapshot = crate::checkpoint::Snapshot::decode(&encoded)
            .map_err(|e| self.violation(format!("a snapshot does not decode: {e}")))?;
        // The node syncs the certified chain up to the snapshot's height first.
        let h = h as usize;
        let proc_ = &mut self.procs[p];
        for k in proc_.chain.len()..h {
            proc_.chain.push(self.chain[k]);
            proc_.seen.extend(self.chain_txs[k].iter().copied());
        }
        let v = usize::from(proc_.index.0);
        // The highest round it proposed in before (its own blocks and round floors in its
        // log).
        let proposed = proc_
            .wal
            .iter()
            .filter_map(|r| match crate::block::Message::decode(r) {
                Ok(crate::block::Message::Block(b)) if b.author == proc_.index => Some(b.round),
                _ => crate::checkpoint::decode_round_floor(r),
            })
            .max()
            .unwrap_or(0);
        // A running process's floor is the highest round its engine knows its key signed
        // (`signed_round`, as the node's driver passes), and it keeps its caches.
        let old = proc_.engine.take();
        let proposed = proposed.max(old.as_ref().map_or(0, |e| e.signed_round()));
        // Less what the chain it synced holds (the node's driver asks its chain): one
        // committed before the snapshot's dedup window would commit again.
        let mut held = old.as_ref().map(|e| e.held_transactions()).unwrap_or_default();
        // Its own blocks not yet ordered go to the new engine (since stop 58): one the
        // others never got would otherwise be lost, and the new engine may not sign that
        // round again.
        let own = old.as_ref().map(|e| e.own_unordered_blocks()).unwrap_or_default();
        held.retain(|t| !proc_.seen.contains(&t.digest()));
        let cfg = self.config(v);
        let mut out = Vec::new();
        if !live {
            self.caches[v] = Arc::new(SignatureCache::default());
        }
        let mut e = AsyncBft::from_snapshot(
            self.committee.clone(),
            ValidatorIndex(v as u16),
            self.keys[v].clone(),
            cfg,
            self.caches[v].clone(),
            &snapshot,
            proposed,
            &mut out,
        );
        if e.round() < proposed {
            return Err(self.violation(format!(
                "validator {v} rejoined at round {} below its own round {proposed}",
                e.round()
            )));
        }
        if live {
            e.adopt_own_blocks(own, &mut out);
        }
        e.set_time(self.clock(p));
        e.start(&mut out);
        if live {
            self.report.live_rejoins += 1;
            self.report.carried += held.len() as u64;
            if !held.is_empty() {
                e.handle(Input::Transactions(held), &mut out);
            }
        }
        let proc_ = &mut self.procs[p];
        proc_.wal = vec![encoded, crate::checkpoint::round_floor_record(proposed)];
        proc_.durable = proc_.wal.len();
        proc_.engine = Some(e);
        self.report.rejoins += 1;
        self.apply(p, out)
    }

    fn alive(&self, p: usize) -> bool {
        self.procs[p].engine.is_some()
    }

    fn submit(&mut self) -> Result<(), Violation> {
        let candidates: Vec<usize> = (0..self.procs.len())
            .filter(|p| self.honest(*p) && self.alive(*p) && self.procs[*p].copy_of.is_none())
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let p = candidates[self.rng.random_range(0..candidates.len())];
        self.next_tx += 1;
        let mut sender = [0u8; 20];
        sender[0] = self.rng.random_range(0..64);
        let mut payload = vec![0u8; self.s.tx_bytes.max(8)];
        payload[..8].copy_from_slice(&self.next_tx.to_le_bytes());
        let tx = Transaction { sender, payload: Bytes::from(payload) };
        self.submitted.insert(tx.digest(), (self.now, p));
        self.step(p, Input::Transactions(vec![tx]))
    }

    fn partitioned(&self, a: ValidatorIndex, b: ValidatorIndex) -> bool {
        match &self.s.partition {
            Some((from, to, cut)) if self.now >= *from && self.now < *to => {
                cut.contains(&usize::from(a.0)) != cut.contains(&usize::from(b.0))
            }
            _ => false,
        }
    }

    fn lost(&mut self, a: ValidatorIndex, b: ValidatorIndex) -> bool {
        if self.partitioned(a, b) {
            return true;
        }
        if self.s.loss_ppm > 0 && self.rng.random_range(0..1_000_000) < self.s.loss_ppm {
            return true;
        }
        let lossy =
            self.s.lossy.contains(&usize::from(a.0)) || self.s.lossy.contains(&usize::from(b.0));
        lossy && self.rng.random_range(0..1_000_000) < self.s.lossy_ppm
    }

    /// What a Byzantine sender actually puts on the wire for `bytes`.
    fn corrupt(&mut self, p: usize, bytes: Bytes) -> Vec<Bytes> {
        match self.procs[p].behavior {
            Some(Byzantine::BadSignatures) if crate::block::is_block(&bytes) => {
                let v = usize::from(self.procs[p].index.0);
                let bad = self.keys[v].sign(&bytes[..bytes.len().min(64)]).to_bytes();
                let mut b = bytes.to_vec();
                let len = b.len();
                let at = len.saturating_sub(bad.len());
                b[at..].copy_from_slice(&bad[..len - at]);
                vec![Bytes::from(b)]
            }
            Some(Byzantine::Garbage) if crate::block::is_block(&bytes) => {
                let mut b = bytes.to_vec();
                for _ in 0..self.rng.random_range(1..4) {
                    let i = self.rng.random_range(0..b.len());
                    b[i] ^= 1 << self.rng.random_range(0..8);
                }
                let len = self.rng.random_range(0..200);
                let noise: Vec<u8> = (0..len).map(|_| self.rng.random()).collect();
                vec![Bytes::from(b), Bytes::from(noise)]
            }
            _ => vec![bytes],
        }
    }

    fn send(&mut self, p: usize, to: Target, bytes: Bytes) {
        let from = self.procs[p].index;
        // A stale claimer's even blocks go out only when asked for; its odd ones, which name
        // them under old rounds, arrive late, each receiver at its own time, when the
        // receivers' floors have moved apart (some past the claim, some not).
        let mut late = false;
        if self.procs[p].behavior == Some(Byzantine::StaleClaims) && to == Target::All {
            if let Ok(Message::Block(b)) = Message::decode(&bytes) {
                if b.round % 2 == 0 {
                    return;
                }
                late = true;
            }
        }
        let mut targets: Vec<usize> = (0..self.procs.len())
            .filter(|q| *q != p)
            .filter(|q| match to {
                Target::All => self.procs[*q].index != from,
                Target::One(v) => self.procs[*q].index == v,
            })
            .collect();
        // Twins split the honest validators: each twin broadcasts to its own half (the two
        // halves share the middle validator, so each holds f + 1), the
        // schedule in which each twin's block can gather votes from a different honest
        // group. (Until stop 40 both twins reached every honest validator.)
        let split = targets.iter().any(|q| self.honest(*q));
        if self.procs[p].behavior == Some(Byzantine::Twins) && to == Target::All && split {
            let first_twin = (0..p).all(|q| self.procs[q].index != from);
            let honest: Vec<usize> = targets.iter().copied().filter(|q| self.honest(*q)).collect();
            let mid = honest.len() / 2;
            let half: Vec<usize> = if first_twin {
                honest[..=mid.min(honest.len().saturating_sub(1))].to_vec()
            } else {
                honest[mid..].to_vec()
            };
            targets.retain(|q| !self.honest(*q) || half.contains(q));
        }
        for q in targets {
            for b in self.corrupt(p, bytes.clone()) {
                self.report.messages += 1;
                if self.lost(from, self.procs[q].index) {
                    continue;
                }
                if let Some(round) = self.held_back(&b, self.procs[q].index) {
                    self.held.push((q, round, from, b, self.now));
                    continue;
                }
                let base = self.links[&(p, q)];
                let mut delay =
                    if self.s.jitter { base + self.rng.random_range(0..=base) } else { base };
                if late {
                    delay += self.rng.random_range(20_000..200_000);
                }
                self.schedule(self.now + delay, Event::Deliver { to: q, from, bytes: b });
            }
        }
    }

    /// Whether the adversarial scheduler holds back `bytes` sent to `to` (see
    /// [`Scenario::split_votes`]), and the block's round: blocks of round `k` by `f` other
    /// authors, a window rotating with `k`, however they travel (first sent, resent, or in
    /// answer to a request).
    fn held_back(&self, bytes: &[u8], to: ValidatorIndex) -> Option<u64> {
        if !self.s.split_votes || !crate::block::is_block(bytes) || bytes.len() < 11 {
            return None;
        }
        let author = u64::from(u16::from_le_bytes([bytes[1], bytes[2]]));
        let mut round = [0u8; 8];
        round.copy_from_slice(&bytes[3..11]);
        let round = u64::from_le_bytes(round);
        // The window: authors to + 1 + ((round + j) mod (n − 1)), j < f — never `to` itself
        // (its own block it always has).
        let n = self.s.n as u64;
        let offset = (author + n - u64::from(to.0)) % n;
        let held =
            offset != 0 && (offset - 1 + (n - 1) - round % (n - 1)) % (n - 1) < self.s.f() as u64;
        held.then_some(round)
    }

    /// Delivers what the adversarial scheduler held back from process `p` once `p` has
    /// proposed past the held blocks' round, or after `HOLD_AT_MOST` whatever happened (the
    /// scheduler may delay any message, but every message arrives: a validator that cannot
    /// advance without a held block gets it).
    fn release(&mut self, p: usize) {
        const HOLD_AT_MOST: Micros = 500_000;
        let Some(now_round) = self.procs[p].engine.as_ref().map(|e| e.round()) else { return };
        let now = self.now;
        let (go, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|(q, round, _, _, since)| {
                *q == p && (*round < now_round || now >= since + HOLD_AT_MOST)
            });
        self.held = keep;
        for (q, _, from, bytes, _) in go {
            let delay = self.s.latency.0;
            self.schedule(self.now + delay, Event::Deliver { to: q, from, bytes });
        }
    }

    /// The wall clock `p` reads now (Unix ms), as the node's driver gives it to the engine
    /// before each call.
    fn clock(&self, p: usize) -> u64 {
        (EPOCH_MS + (self.now / 1_000) as i64 + self.procs[p].skew_ms).max(0) as u64
    }

    /// Runs one input through `p`'s engine in its two parts, as the node's driver does.
    fn step(&mut self, p: usize, input: Input) -> Result<(), Violation> {
        // A snapshot the step takes keeps the step's records from its start, as the node's
        // driver keeps them (until stop 40 those of the first half were dropped here).
        let start = self.procs[p].wal.len();
        let mut out = Vec::new();
        let clock = self.clock(p);
        if let Some(e) = self.procs[p].engine.as_mut() {
            e.set_time(clock);
            e.handle_first(input, &mut out);
        }
        self.apply_from(p, out, start)?;
        let mut out = Vec::new();
        if let Some(e) = self.procs[p].engine.as_mut() {
            e.finish(&mut out);
        }
        self.apply_from(p, out, start)
    }

    /// Carries out one call's actions as the node's driver does: records first (durable
    /// before the call's first message or commit, see [`Process::durable`]), then the rest
    /// in order.
    fn apply(&mut self, p: usize, out: Vec<Action>) -> Result<(), Violation> {
        let offset = self.procs[p].wal.len();
        self.apply_from(p, out, offset)
    }

    /// [`Sim::apply`] for a call of a step that began at log position `offset`.
    fn apply_from(&mut self, p: usize, out: Vec<Action>, offset: usize) -> Result<(), Violation> {
        let mut leaves = false;
        for a in &out {
            match a {
                Action::Persist(b) => {
                    self.note_proposal(p, b);
                    self.procs[p].wal.push(b.clone())
                }
                Action::Send { .. } | Action::Commit(_) => leaves = true,
            }
        }
        if leaves {
            self.procs[p].durable = self.procs[p].wal.len();
        }
        for a in out {
            match a {
                Action::Send { to, bytes } => {
                    self.check_own_block(p, &bytes)?;
                    self.send(p, to, bytes)
                }
                Action::Commit(c) => self.on_commit(p, c)?,
                Action::Persist(_) => {}
            }
        }
        if let Some(e) = &self.procs[p].engine {
            if self.honest(p) {
                self.report.rounds = self.report.rounds.max(e.round());
            }
        }
        self.compact(p, offset);
        if self.s.split_votes {
            self.release(p);
        }
        Ok(())
    }

    /// Cuts an honest validator's log when its engine took a new snapshot, as the node does:
    /// the snapshot, the round floor, then the records of the step that took it and after.
    /// Restarts then recover from the snapshot.
    fn compact(&mut self, p: usize, offset: usize) {
        if !self.honest(p) {
            return;
        }
        let proc_ = &mut self.procs[p];
        let Some(e) = proc_.engine.as_ref() else { return };
        let Some(s) = e.snapshot() else { return };
        if proc_.compacted.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s)) {
            return;
        }
        let mut wal = vec![s.encode(), crate::checkpoint::round_floor_record(e.round())];
        wal.extend(proc_.wal.drain(offset.min(proc_.wal.len())..));
        proc_.wal = wal;
        // The node writes the cut log anew and syncs it.
        proc_.durable = proc_.wal.len();
        proc_.compacted = Some(s);
        self.report.compactions += 1;
    }

    /// An honest validator never sends two blocks of one round, after a crash neither (its
    /// log loses what no message or commit followed).
    fn check_own_block(&mut self, p: usize, bytes: &Bytes) -> Result<(), Violation> {
        if !self.honest(p) || !crate::block::is_block(bytes) {
            return Ok(());
        }
        let Ok(crate::block::Message::Block(b)) = crate::block::Message::decode(bytes) else {
            return Ok(());
        };
        if b.author != self.procs[p].index {
            return Ok(());
        }
        // The other process of the same validator, if a copy runs: the two must not sign two
        // blocks of one round between them either.
        let twin = (0..self.procs.len()).find(|q| {
            *q != p
                && self.procs[*q].index == b.author
                && (self.procs[*q].copy_of.is_some_and(|(of, _)| of == p)
                    || self.procs[p].copy_of.is_some_and(|(of, _)| of == *q))
        });
        if let Some(first) = twin.and_then(|q| self.procs[q].own_sent.get(&b.round)) {
            if *first != b.digest() {
                return Err(self.violation(format!(
                    "validator {} sent two blocks of round {} from two processes",
                    b.author.0, b.round
                )));
            }
        }
        // A copy relays the blocks the first signed (answers to requests): only its own count.
        let relayed = twin.and_then(|q| self.procs[q].own_sent.get(&b.round)).is_some();
        let proc_ = &mut self.procs[p];
        let restored = proc_.restored && !proc_.own_sent.contains_key(&b.round);
        let new = !proc_.own_sent.contains_key(&b.round) && !relayed;
        let first = *proc_.own_sent.entry(b.round).or_insert(b.digest());
        if restored {
            self.report.restored_proposals += 1;
        }
        if new && proc_.copy_of.is_some() && b.round > proc_.copied_round {
            self.report.copy_proposals += 1;
            self.report.copy_first_proposal_at.get_or_insert(self.now);
        }
        if first != b.digest() {
            return Err(self
                .violation(format!("honest validator {p} sent two blocks of round {}", b.round)));
        }
        Ok(())
    }

    /// Records when an honest validator persisted its own block (that is, proposed it).
    fn note_proposal(&mut self, p: usize, record: &Bytes) {
        if !self.honest(p) {
            return;
        }
        // Only blocks that carry transactions: empty ones may wait for idle rounds.
        if let Ok(crate::block::Message::Block(b)) = crate::block::Message::decode(record) {
            if !b.transactions.is_empty() && b.author == self.procs[p].index {
                self.proposed.entry(b.digest()).or_insert(self.now);
            }
        }
    }

    fn on_commit(&mut self, p: usize, c: Committed) -> Result<(), Violation> {
        if !self.honest(p) {
            return Ok(());
        }
        let digest = commit_digest(&c);
        let h = c.height as usize;
        let proc_ = &mut self.procs[p];
        if h == 0 || h > proc_.chain.len() + 1 {
            return Err(self.violation(format!("validator {p} skipped to height {h}")));
        }
        if h <= proc_.chain.len() {
            // A restarted validator replays its commits: they must be what it committed.
            if proc_.chain[h - 1] != digest {
                return Err(self
                    .violation(format!("validator {p} replayed a different block at height {h}")));
            }
            return Ok(());
        }
        for t in &c.transactions {
            let d = t.digest();
            if !proc_.seen.insert(d) {
                return Err(Violation {
                    seed: self.seed,
                    at: self.now,
                    what: format!("validator {p} committed a transaction twice (height {h})"),
                });
            }
            if !self.submitted.contains_key(&d) {
                return Err(Violation {
                    seed: self.seed,
                    at: self.now,
                    what: format!("validator {p} committed a transaction nobody submitted"),
                });
            }
        }
        proc_.chain.push(digest);
        match self.chain.get(h - 1) {
            Some(agreed) if *agreed != digest => {
                return Err(self.violation(format!(
                    "disagreement at height {h}: validator {p} committed another block"
                )));
            }
            Some(_) => {}
            None => {
                self.chain.push(digest);
                self.chain_txs.push(c.transactions.iter().map(|t| t.digest()).collect());
                if let Some(cp) = c.checkpoint {
                    self.checkpoints.insert(c.height, cp);
                }
            }
        }
        if let Some(last) = self.last_commit {
            self.longest_stall = self.longest_stall.max(self.now - last);
        }
        self.last_commit = Some(self.now);
        self.commit_times.push((self.now, p, c.height));
        if let Some(t) = self.proposed.get(&c.leader_digest) {
            self.report.leader_delays.push((c.round, self.now - t));
        }
        // Latency: at the validator the transaction was submitted to.
        for t in &c.transactions {
            if let Some((at, sub)) = self.submitted.get(&t.digest()) {
                if *sub == p {
                    self.report.latencies.push(self.now - at);
                }
            }
        }
        Ok(())
    }

    /// Liveness: every transaction submitted to an honest validator that did not crash
    /// after it was submitted is committed by every honest validator that is up at the end
    /// (one that crashed may have lost it from its queue; one that restarted or rejoined
    /// must commit what it was given after, which until stop 40 was not required).
    /// (Computed when asked: submissions and crashes after that are added by `finish`.)
    fn required(&self) -> BTreeSet<[u8; 32]> {
        self.submitted
            .iter()
            .filter(|(_, (at, p))| self.procs[*p].last_crash.is_none_or(|c| c < *at))
            .map(|(d, _)| *d)
            .collect()
    }

    fn done(&self) -> bool {
        let required = self.required();
        (0..self.procs.len())
            .filter(|p| self.honest(*p) && self.alive(*p))
            .all(|p| required.iter().all(|d| self.procs[p].seen.contains(d)))
    }

    fn finish(mut self) -> Result<Report, Violation> {
        let required = self.required();
        for p in 0..self.procs.len() {
            if !self.honest(p) || !self.alive(p) {
                continue;
            }
            let missing = required.iter().filter(|d| !self.procs[p].seen.contains(*d)).count();
            if missing > 0 {
                if let Some(d) = required.iter().find(|d| !self.procs[p].seen.contains(*d)) {
                    let (at, by) = self.submitted[d];
                    let held: Vec<String> = self
                        .procs
                        .iter()
                        .map(|q| q.engine.as_ref().map_or("down".into(), |e| e.locate(d)))
                        .collect();
                    eprintln!("first missing: submitted at {at} µs to {by}; held: {held:?}");
                }
                let states: Vec<String> = self
                    .procs
                    .iter()
                    .map(|q| {
                        let state = q.engine.as_ref().map_or("down".to_string(), |e| {
                            format!("{}\n{}", e.summary(), e.explain())
                        });
                        format!("\n  {}: height {} {state}", q.index.0, q.chain.len())
                    })
                    .collect();
                return Err(self.violation(format!(
                    "liveness: validator {p} has not committed {missing} of {} transactions \
                     ({})",
                    required.len(),
                    states.join(", "),
                )));
            }
        }
        self.report.bad_coin_shares = (0..self.procs.len())
            .filter(|p| self.honest(*p))
            .filter_map(|p| self.procs[p].engine.as_ref())
            .map(|e| e.faults().bad_coin_shares)
            .sum();
        self.faults_were_noticed()?;
        for p in 0..self.procs.len() {
            let Some(e) = self.procs[p].engine.as_ref().filter(|_| self.honest(p)) else {
                continue;
            };
            if e.faults().other_signer == 0 {
                continue;
            }
            let v = self.procs[p].index;
            if !self.procs.iter().any(|q| q.copy_of.is_some() && q.index == v) {
                return Err(self.violation(format!(
                    "honest validator {p} stood down, and no other process has its key"
                )));
            }
            self.report.stood_down += 1;
        }
        let first = (0..self.procs.len()).find(|p| self.honest(*p) && self.alive(*p));
        if let Some(p) = first {
            self.report.height = self.procs[p].chain.len() as u64;
            self.report.committed = self.procs[p].seen.len();
        }
        self.report.submitted = self.submitted.len();
        let mut h = alloy_primitives::Keccak256::new();
        for d in &self.chain {
            h.update(d);
        }
        h.update(self.report.messages.to_le_bytes());
        for (round, delay) in &self.report.leader_delays {
            h.update(round.to_le_bytes());
            h.update(delay.to_le_bytes());
        }
        for l in &self.report.latencies {
            h.update(l.to_le_bytes());
        }
        for (at, p, height) in &self.commit_times {
            h.update(at.to_le_bytes());
            h.update((*p as u64).to_le_bytes());
            h.update(height.to_le_bytes());
        }
        self.report.fingerprint = h.finalize().0;
        self.report.longest_stall = self.longest_stall;
        Ok(self.report)
    }
}

/// Summary statistics of latencies.
pub fn percentile(sorted: &[Micros], p: u64) -> Micros {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as u64 - 1) * p / 100) as usize;
    sorted[i]
}

fn seed(i: usize, tag: &[u8; 8]) -> [u8; 32] {
    let mut seed32 = [0u8; 32];
    seed32[..8].copy_from_slice(&(i as u64).to_le_bytes());
    seed32[8..16].copy_from_slice(tag);
    seed32
}

/// The BLS keys the simulator gives `n` validators, by index.
pub fn keys(n: usize) -> BTreeMap<usize, SecretKey> {
    (0..n).map(|i| (i, SecretKey::from_seed(&seed(i, b"farolsim")))).collect()
}

/// The block-signing keys the simulator gives `n` validators, in order.
pub fn block_keys(n: usize) -> Vec<ed25519::SigningKey> {
    (0..n).map(|i| ed25519::SigningKey::from_seed(&seed(i, b"farolblk"))).collect()
}

/// The simulator's `n` validators as committee members with `stake` each.
pub fn members(n: usize, stake: crate::Stake) -> Vec<crate::Member> {
    keys(n)
        .into_values()
        .zip(block_keys(n))
        .map(|(k, b)| crate::Member {
            key: k.public_key(),
            possession: k.prove_possession(),
            block_key: b.public_key(),
            stake,
        })
        .collect()
}
