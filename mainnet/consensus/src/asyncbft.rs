//! AsyncBFT: every validator proposes in every round, proposals form a DAG, and every
//! validator's proposal is a leader slot decided by the DAG's own votes.
//!
//! - **Rounds.** A block of round `r` references blocks of round `r − 1` holding more than
//!   two thirds of the stake (at most one per author), plus its author's previous block. A
//!   validator proposes round `r + 1` as soon as it holds such a quorum of round `r` — no
//!   timer; it waits a bounded number of ticks for validators that were live in the round
//!   before, so that in the good case every block is referenced.
//! - **Votes and certificates.** A round `r + 1` block referencing `B` votes for `B`; a round
//!   `r + 2` block whose parents hold a quorum of votes for `B` certifies `B`. The only
//!   signature a validator makes per round is the one on its own block.
//! - **Direct decisions.** Slot (author `A`, round `r`) commits `B` once blocks of round
//!   `r + 2` holding a quorum of stake certify `B` (three message delays after `B` was
//!   sent); it is skipped once blocks of round `r + 1` holding a quorum of stake vote for no
//!   block of the slot.
//! - **Indirect decisions.** An undecided slot is decided by the first slot of a round
//!   `≥ r + 3` that is not skipped: if that one commits, the slot commits the block its
//!   history certifies, or is skipped if there is none; if that one is undecided, so is the
//!   slot.
//! - **Order.** Slots are decided in order (round, then a rotation of the committee); each
//!   committed block brings along its not yet ordered history, sorted by (round, author,
//!   digest), and its transactions not committed before form one [`Committed`] block.
//! - **The asynchronous fallback** (when the committee has a common coin). Every other
//!   round has a wave slot whose author a threshold-BLS coin elects after the fact; blocks
//!   three rounds later vote for the block of it they reach through any path. Only wave
//!   slots are then anchors of indirect decisions, so no undecided slot stalls the order
//!   forever, however messages are scheduled.
//!
//! `docs/consensus.md` has the argument for safety and liveness.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use farol_crypto::{coin, ed25519, SecretKey, Signature, SIGNATURE_LEN};
use farol_primitives::SplitSet;

use crate::block::{Block, BlockRef, Message, MAX_REQUEST};
use crate::checkpoint::{decode_round_floor, round_hash, Checkpoint, Snapshot, SNAPSHOT_RECORD};
use crate::committee::{Committee, Stake, ValidatorIndex};
use crate::engine::{Action, Committed, Consensus, Input, Target, Transaction};

type Digest = [u8; 32];
/// Per voter block and wave round: the block of each author it votes for.
type WaveVotes = HashMap<(Digest, u64), Arc<Vec<Option<Digest>>>>;

/// AsyncBFT's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Identifies the chain and epoch; signed into every block.
    pub chain: [u8; 32],
    /// After a quorum of a round is in, the least ticks to wait for the validators that
    /// were live in the round before. The wait is as long as the quorum took to come, within
    /// `wait_ticks..=max_wait_ticks`.
    pub wait_ticks: u32,
    /// The longest such wait.
    pub max_wait_ticks: u32,
    /// Ticks without progress after which the last own block is sent again and missing
    /// blocks are requested from everyone.
    pub resend_ticks: u32,
    /// Ticks between rounds when there is nothing to order.
    pub idle_ticks: u32,
    /// Rounds after which a forwarded transaction that is not committed is reassigned.
    pub reassign_rounds: u64,
    /// Most transactions in one proposal (at most [`MAX_PROPOSAL_TRANSACTIONS`], the rule for
    /// every block).
    pub max_batch_transactions: usize,
    /// Most payload bytes in one proposal (at most [`MAX_PROPOSAL_BYTES`], the rule for every
    /// block), unless its first transaction alone is larger.
    pub max_batch_bytes: usize,
    /// Most transactions waiting to be proposed here (and, separately, forwarded and
    /// watched); more are dropped and counted in [`Faults::queue_full`] (the mempool
    /// decides what to resubmit). Each other validator may fill at most twice its stake's
    /// share of it (and of `max_queue_bytes`) with transactions it forwards
    /// ([`Faults::share_full`]): `2/n` with equal stakes. Faulty validators (less than a
    /// third of the stake) then leave at least a third to the rest and to this validator's
    /// own clients.
    pub max_queue: usize,
    /// Most payload bytes waiting to be proposed here; more are dropped like past
    /// `max_queue`.
    pub max_queue_bytes: usize,
    /// The baseline mode: one proposer per round (the round's leader, `round mod n`) puts
    /// transactions in its block and only leaders' blocks are committed, as in a
    /// leader-based protocol. Everything else is the same code.
    pub single_leader: bool,
    /// Blocks more than this many rounds below the latest committed block are no longer
    /// ordered, stored or accepted.
    pub gc_depth: u64,
    /// A [`Checkpoint`] is taken after every this many commits (0: never). Keep it well
    /// below `gc_depth` rounds' worth of commits: a validator rejoins from the newest one and
    /// needs the blocks above its floor from its peers.
    pub checkpoint_every: u64,
    /// This validator's share of the common coin's key, when the committee has a coin
    /// ([`Committee::with_coin`]). Without one it still follows the coin from the others'
    /// shares, but adds none.
    pub coin: Option<SecretKey>,
    /// Combine every coin as soon as its shares are in, instead of only when a wave slot's
    /// decision needs it ([`AsyncBft`]'s commit rule). Both commit the same order; the
    /// simulator runs some validators each way to check that.
    pub eager_coins: bool,
    /// A fault for the simulator (a Byzantine validator; never set by a node): each proposal
    /// of an odd round names this validator's own block of the round before under the
    /// oldest round it may claim that its own floor does not pass. Validators whose floors
    /// are above the claim do not fetch that block (the simulator withholds it from them);
    /// those below fetch it. The commit rule must give both the same order (rule 9).
    #[doc(hidden)]
    pub fault_stale_own_reference: bool,
    /// A fault for the simulator: each proposal of an even round also names a block of this
    /// validator's floor round under a later round than its own (`raised_reference`).
    /// Validators whose floor passed that block wait for it by the claim
    /// (docs/consensus.md rules 2 and 12). In CI's scenarios since stop 48 (the simulator's
    /// `StaleClaims` validators; `FAROL_NO_RAISED_CLAIMS` turns it off), when blocks named
    /// so are kept aside until the floor passes the claim and all 500 seeds pass with it.
    #[doc(hidden)]
    pub fault_raised_reference: bool,
    /// A fault for the simulator (its twins, two processes of one Byzantine validator): go
    /// on proposing after blocks signed with this validator's key that this engine did not
    /// sign come from the others (an honest engine stands down, [`Faults::other_signer`]).
    #[doc(hidden)]
    pub fault_ignore_other_signer: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            chain: [0; 32],
            wait_ticks: 2,
            max_wait_ticks: 20,
            resend_ticks: 8,
            idle_ticks: 5,
            reassign_rounds: 6,
            max_batch_transactions: MAX_PROPOSAL_TRANSACTIONS,
            max_batch_bytes: MAX_PROPOSAL_BYTES,
            max_queue: 200_000,
            max_queue_bytes: 256 * 1024 * 1024,
            gc_depth: 500,
            checkpoint_every: 64,
            single_leader: false,
            coin: None,
            eager_coins: false,
            fault_stale_own_reference: false,
            fault_raised_reference: false,
            fault_ignore_other_signer: false,
        }
    }
}

/// A validator with no block in this many latest rounds is not assigned transactions.
const LIVE_ROUNDS: u64 = 3;
/// Attempts tried for a live assignee before a validator keeps a transaction itself: with
/// less than a third of the stake not live, all of them miss with odds below 3^-32.
const ASSIGN_ATTEMPTS: u64 = 32;
/// A validator this many rounds behind the highest round it has seen proposes no
/// transactions.
const CATCH_UP_ROUNDS: u64 = 32;
/// Most transactions in one forwarding message.
const FORWARD_TRANSACTIONS: usize = 4_096;
/// Most payload bytes in one forwarding message.
const FORWARD_BYTES: usize = 4 << 20;
/// Most block bytes sent in answer to one request (at least one block is always sent).
const MAX_ANSWER: usize = 8 << 20;
/// Block bytes a validator may be sent in answer to its requests in a burst: each validator
/// has a budget of this much, which its answers spend and each tick refills by
/// [`ANSWER_PER_TICK`]. A request that finds its sender's budget spent is not answered
/// (the sender asks everyone again when it stalls), so one that asks again and again gets
/// no more than that rate of this validator's upload.
const ANSWER_BURST: i64 = 64 << 20;
/// What each tick gives back to a validator's answer budget: 100 MiB/s at the node's 10 ms
/// ticks, several times the DAG's growth under the saturated benchmark (about 25 MB/s of
/// blocks per validator), so a validator catching up from one peer is not held back.
const ANSWER_PER_TICK: i64 = 1 << 20;
/// Most blocks held while their parents are fetched.
const MAX_PENDING: usize = 20_000;
/// Most bytes of blocks held while their parents are fetched.
const MAX_PENDING_BYTES: usize = 1 << 30;
/// Takes a block that leaves `pending` off the load of the validator it was counted for.
fn unload(load: &mut [(usize, usize)], h: &Held) {
    if let Some(l) = load.get_mut(usize::from(h.charged)) {
        *l = (l.0.saturating_sub(1), l.1.saturating_sub(h.block.encoded().len()));
    }
}

/// A block held while its parents are fetched.
#[derive(Debug)]
struct Held {
    block: Arc<Block>,
    /// How many of its parents it still waits for.
    left: usize,
    /// The validator whose share of [`MAX_PENDING`] it counts in: its author, or when the
    /// author's share is full, a validator whose held blocks wait for it.
    charged: u16,
    /// The validators whose held blocks wait for it, directly or through other held blocks
    /// (one bit per validator). It only grows while the block is held.
    wanted_by: Vec<u64>,
}

/// Sets bit `i`.
fn set_bit(bits: &mut Vec<u64>, i: usize) {
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

/// The bits of `add` not in `bits`.
fn new_bits(bits: &[u64], add: &[u64]) -> Vec<u64> {
    let mut new: Vec<u64> =
        add.iter().enumerate().map(|(i, a)| a & !bits.get(i).copied().unwrap_or(0)).collect();
    while new.last() == Some(&0) {
        new.pop();
    }
    new
}

/// Adds the bits of `add` to `bits`.
fn add_bits(bits: &mut Vec<u64>, add: &[u64]) {
    if bits.len() < add.len() {
        bits.resize(add.len(), 0);
    }
    for (b, a) in bits.iter_mut().zip(add) {
        *b |= a;
    }
}

/// The set bits, lowest first.
fn bits_of(bits: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bits.iter().enumerate().flat_map(|(w, word)| {
        (0..64).filter(move |b| word & (1u64 << b) != 0).map(move |b| w * 64 + b)
    })
}

/// Committed transaction digests are remembered for this many times `gc_depth` rounds.
const DEDUP_DEPTHS: u64 = 4;

/// Most transactions in a block: a rule every block received must meet, as every honest
/// proposal does. The wire allows 20,000 ([`crate::block::MAX_BLOCK_TRANSACTIONS`]); before
/// stop 64 a faulty validator could fill each of its blocks with that many made-up
/// transactions, whose digests every engine keeps for `DEDUP_DEPTHS × gc_depth` rounds and
/// puts in its checkpoints, until the snapshots were too large to fetch or to read back.
pub const MAX_PROPOSAL_TRANSACTIONS: usize = 1_000;
/// Most payload bytes in a block. A proposal takes its first transaction whatever its size,
/// and the wire allows [`crate::block::MAX_TRANSACTION_BYTES`], less than this.
pub const MAX_PROPOSAL_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(MAX_PROPOSAL_BYTES >= crate::block::MAX_TRANSACTION_BYTES);

/// The asynchronous fallback (with a coin): every `COIN_EVERY`-th round `R` has a *wave
/// slot*, whose author the coin elects after the fact. Blocks of round `R + VOTE_LAG` vote
/// for the block of that slot they reach (through any path), blocks of `R + VOTE_LAG + 1`
/// certify, and the coin's shares ride in blocks of round `R + COIN_LAG`.
const COIN_EVERY: u64 = 2;
/// Rounds from a wave slot to the blocks that vote for it (two rounds in between spread it).
const VOTE_LAG: u64 = 3;
/// Rounds from a wave slot to the blocks carrying the coin shares that elect it: after the
/// certifying round, so the coin is unknown until the blocks that decide it exist.
pub const COIN_LAG: u64 = 5;
/// The wave slot of round `R` comes, in the order of slots, right after round `R + 3`'s
/// validator slots (it can be decided at about the same time as those).
const WAVE_AT: u64 = 3;

/// Signatures already checked, shared by engines in one process (a block reaches a node
/// several times; the simulator runs many nodes). Keyed by a hash of (digest, signature), so
/// a hit means exactly this signature on exactly this block was valid.
#[derive(Debug, Default)]
pub struct SignatureCache {
    inner: Mutex<(SplitSet<Digest>, VecDeque<Digest>)>,
    /// Coins already combined and checked, by (chain, round): the coin is unique, so an
    /// engine sharing the cache need not combine it again.
    coins: Mutex<BTreeMap<([u8; 32], u64), ValidatorIndex>>,
}

impl SignatureCache {
    const CAPACITY: usize = 200_000;

    /// Checks the signature of the block a message holds, if it holds one, against its
    /// author's key in `committee`, and keeps it if it verifies: an engine sharing this
    /// cache then finds it here and does not check it again. For a network's reader, which
    /// runs beside the engine (`farol_network::Precheck`). Anything else, and a block that
    /// does not verify, is left to the engine, which checks and counts it as before.
    pub fn precheck(&self, committee: &Committee, chain: &[u8; 32], message: &Bytes) {
        if !crate::block::is_block(message) {
            return;
        }
        let Ok(Message::Block(b)) = Message::decode(message) else { return };
        if self.contains(chain, &b) {
            return;
        }
        let Some(v) = committee.validator(b.author) else { return };
        if v.block_key.verify(&Block::signing_message(chain, &b.digest()), &b.signature).is_ok() {
            self.insert(chain, &b);
        }
    }

    /// Keyed by the chain too: a block signed for another chain is never taken as checked
    /// for this one, whatever chain a caller of [`SignatureCache::precheck`] names.
    fn key(chain: &[u8; 32], block: &Block) -> Digest {
        let mut h = alloy_primitives::Keccak256::new();
        h.update(chain);
        h.update(block.digest());
        h.update(block.signature.to_bytes());
        h.finalize().0
    }

    fn contains(&self, chain: &[u8; 32], block: &Block) -> bool {
        let key = Self::key(chain, block);
        self.inner.lock().map(|g| g.0.contains(&key)).unwrap_or(false)
    }

    fn coin(&self, chain: &[u8; 32], round: u64) -> Option<ValidatorIndex> {
        self.coins.lock().ok().and_then(|g| g.get(&(*chain, round)).copied())
    }

    fn insert_coin(&self, chain: &[u8; 32], round: u64, elected: ValidatorIndex) {
        if let Ok(mut g) = self.coins.lock() {
            g.insert((*chain, round), elected);
            if g.len() > Self::CAPACITY {
                g.pop_first();
            }
        }
    }

    fn insert(&self, chain: &[u8; 32], block: &Block) {
        let key = Self::key(chain, block);
        if let Ok(mut g) = self.inner.lock() {
            if g.0.insert(key) {
                g.1.push_back(key);
                if g.1.len() > Self::CAPACITY {
                    if let Some(old) = g.1.pop_front() {
                        g.0.remove(&old);
                    }
                }
            }
        }
    }
}

/// How a slot is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Commit(Digest),
    Skip,
    Undecided,
    /// A wave slot whose coin is not combined yet (`try_commit` combines a coin only when
    /// its slot's decision matters: see [`AsyncBft::try_commit`]).
    Lazy,
    /// Undecided because the anchor is a [`Decision::Lazy`] wave slot: its coin is needed.
    NeedsCoin,
}

/// How a pass of [`AsyncBft::try_commit`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Done,
    /// A slot's decision needs a coin not combined yet.
    NeedsCoins,
}

/// The decision an anchor search leads to when it finds `anchor` (the first later slot that
/// is not skipped, if any): the anchor's committed block, or what to decide without one.
fn anchored(anchor: Option<Decision>) -> Result<Digest, Decision> {
    match anchor {
        Some(Decision::Commit(d)) => Ok(d),
        Some(Decision::Lazy | Decision::NeedsCoin) => Err(Decision::NeedsCoin),
        _ => Err(Decision::Undecided),
    }
}

/// A transaction this validator forwarded and watches until it commits.
#[derive(Clone, Debug)]
struct Watch {
    tx: Transaction,
    attempt: u64,
    deadline: u64,
    /// When it was first forwarded (a round). After `LIVE_PATIENCE` deadlines from then it
    /// moves at every deadline, live assignee or not: resetting this at each move (tried in
    /// stop 48, against duplicates in several queues) made transactions wait 60 rounds at
    /// each live validator that left them out, and three simulator seeds with raised claims
    /// failed liveness.
    since: u64,
    /// Order of arrival: reassigned transactions are forwarded in it, so that one sender's
    /// transactions keep their order.
    seq: u64,
}

/// A transaction whose assignee is live (proposing) is reassigned only after this many
/// times `reassign_rounds`: a long queue is no reason to move it (moving it would let the
/// sender's later transactions overtake earlier ones still queued), a validator that
/// proposes but leaves it out is.
const LIVE_PATIENCE: u64 = 10;

/// Counters of what the engine refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Blocks breaking a rule (parents, rounds, author).
    pub invalid: u64,
    /// Blocks whose signature did not verify.
    pub bad_signatures: u64,
    /// Transactions dropped because the queue (or the forwarded set) was full.
    pub queue_full: u64,
    /// Transactions forwarded by a validator dropped because its share of the queue (twice
    /// its stake's share of [`Config::max_queue`] and of [`Config::max_queue_bytes`]) was
    /// full.
    pub share_full: u64,
    /// Blocks not held while their parents are fetched, because their author's share of
    /// the held blocks was full (they are fetched again once their parents are in).
    pub pending_full: u64,
    /// Validators seen proposing two blocks in one round.
    pub equivocators: BTreeSet<ValidatorIndex>,
    /// Versions of a slot past the second that no held block needed, not added (a block
    /// that references one gets it when it asks for it).
    pub versions_dropped: u64,
    /// Coin shares that did not verify (in validly signed blocks: their authors are faulty).
    pub bad_coin_shares: u64,
    /// Requests for blocks not answered because their sender's answer budget was spent.
    pub answers_withheld: u64,
    /// Blocks signed with this validator's own key for a round above its own (the round it
    /// last proposed in, or the floor its log or snapshot gave it) that come from others:
    /// blocks of a life its log does not hold (a restored backup, a log lost) or of another
    /// process running with its key. It proposes only above them.
    pub own_blocks_elsewhere: u64,
    /// Blocks signed with this validator's own key, for rounds above its first proposal
    /// since it started, that it did not sign: another process is signing with its key
    /// right now (a copy of its directory or its key started elsewhere). At the first, the
    /// engine stands down: it proposes no more (the two would sign the same rounds) and
    /// hands the transactions queued here to the other validators. It goes on following
    /// and committing the chain.
    pub other_signer: u64,
}

/// What a restarted validator has heard before its first proposal (see
/// [`AsyncBft::restart_allows`]).
#[derive(Default)]
struct Restarted {
    /// The validators whose own blocks came from them since the start and are in the DAG
    /// (all they build on fetched: its own old blocks among them).
    heard: BTreeSet<ValidatorIndex>,
    /// Per validator, such blocks still held for their parents, the newest
    /// [`COMING_PER_PEER`] (a Byzantine one sending blocks over made-up parents without end
    /// holds that many entries; one on a slow link, whose newest is always held, is heard
    /// when an older one enters the DAG).
    coming: BTreeMap<ValidatorIndex, VecDeque<Digest>>,
    /// The tick at which the heard ones first held the stake needed.
    heard_at: Option<u64>,
    /// The tick at which a block signed with this validator's key that it did not know
    /// last came from the others (its log did not hold it; 0 if none came): while another
    /// process signs with the key, such blocks keep coming, even from one catching up far
    /// behind (see [`AsyncBft::restart_allows`]).
    own_news_at: u64,
    /// The tick at which the round the others reached (rule 4's) last rose.
    seen_rose_at: u64,
    /// The highest round with a quorum when a proposal was last considered, and the tick it
    /// rose to it at.
    quorum: (u64, u64),
}

/// Blocks of one peer a restarted validator keeps waiting to hear it by.
const COMING_PER_PEER: usize = 64;

/// Ticks a restarted validator that has heard enough waits for catching up to the round the
/// others reached before it proposes anyway, if it is at most [`CATCH_UP_ROUNDS`] behind
/// it: one that is always more than a round behind (far from the others, on a slow link)
/// would otherwise never propose again. The blocks it heard the others by are in its DAG,
/// with all they build on.
const RESTART_PATIENCE_TICKS: u64 = 100;

/// Rounds the others must reach past the newest block signed with a restarted validator's
/// key (in its log or from them) before it proposes, with none it did not know coming for
/// [`RESTART_PATIENCE_TICKS`]; or else as many ticks in which neither such a block came nor
/// the others' round rose (a committee that stalled, or restarted together). A process
/// still signing with the key keeps up with the others' rounds, or catches up to them, and
/// its blocks keep coming; one catching up from far behind may be quiet for a while, hence
/// the ticks (a second on a node).
///
/// A copy started during a stall holds what the running validator holds, and the two would
/// propose at once when the round's quorum comes: the copy waits that long after its
/// quorum's round rose too, in which the running one's proposal reaches it.
const OTHER_SIGNER_ROUNDS: u64 = 10;

/// The AsyncBFT engine of one validator.
pub struct AsyncBft {
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: ed25519::SigningKey,
    cfg: Config,
    cache: Arc<SignatureCache>,

    blocks: HashMap<Digest, Arc<Block>>,
    /// Per round, per author, digests in the order they arrived.
    rounds: BTreeMap<u64, Vec<Vec<Digest>>>,
    /// Per slot (round, author) with more than two versions, the versions past the second
    /// taken for each validator: for its own held blocks that reference them, and for held
    /// blocks that its held blocks wait for (see [`AsyncBft::take_extra_version`]).
    extra_versions: BTreeMap<(u64, ValidatorIndex), Vec<[u16; 2]>>,
    ordered: HashSet<Digest>,
    /// Blocks no known block references yet, by (round, author): a new proposal references
    /// them, so a block that arrived too late to be voted for still gets into the history
    /// of later blocks and is ordered.
    tips: BTreeMap<(u64, ValidatorIndex), Digest>,
    highest: u64,
    /// The highest round that validators holding more than a third of the stake have signed
    /// blocks for (in the DAG or waiting for parents).
    highest_seen: u64,
    /// The highest round each validator signed a block for (seen, not necessarily in the DAG).
    author_rounds: Vec<u64>,
    /// The lowest round still kept.
    floor: u64,

    pending: HashMap<Digest, Held>,
    /// Blocks and bytes in `pending`, by the validator each is counted for: each may fill
    /// only its share of [`MAX_PENDING`] and [`MAX_PENDING_BYTES`], so a faulty one's blocks
    /// over made-up parents (which may never arrive) cannot crowd out the others' or exhaust
    /// memory. A block counts for its author, or, when its author's share is full, for a
    /// validator whose held blocks wait for it: a faulty author that fills its share cannot
    /// keep out its own block that honest blocks build on, since those blocks carry it.
    pending_load: Vec<(usize, usize)>,
    /// For each block held blocks wait for, those blocks. A held block waits only for the
    /// parents its references claim at or above the floor: when the floor rises past a
    /// claim, or the parent arrives and is below the floor (its reference claimed a later
    /// round than its own), the held block stops waiting for it ([`AsyncBft::collect_garbage`],
    /// [`AsyncBft::accept`]), as a validator that had dropped that parent already did not
    /// wait for it.
    waiting: HashMap<Digest, Vec<Digest>>,
    /// Held blocks the floor released (all they waited for fell below it), to be added once
    /// the commit pass that raised the floor is over.
    released: Vec<Arc<Block>>,
    /// Blocks that arrived below the floor while held blocks waited for them (a reference
    /// claimed a later round than theirs), with the floor they came at: never in the DAG,
    /// but kept for `gc_depth` rounds of floor so that later blocks naming them do not wait
    /// for them either, requests for them are answered (a peer still waiting gets them),
    /// snapshots carry them, and the log holds them for a restart to release the same
    /// blocks (without them a restarted validator held those blocks, and its own after
    /// them, for good).
    gone: HashMap<Digest, (Arc<Block>, u64)>,
    /// Blocks in the DAG that a block in the DAG names under a later round than their own
    /// (a reference claiming a later round), with the latest such claim. When the floor
    /// passes such a block while a claim on it is still at or above the floor, it is kept
    /// aside (`gone`) rather than dropped: a validator that takes the naming block from a
    /// snapshot waits for the parents its references claim at or above its floor, and before
    /// stop 48 no snapshot held this one, so a validator restarted from its cut log or
    /// rejoined from a peer's snapshot held the naming block, and every block voting for it,
    /// for good (found by a review).
    raised: HashMap<Digest, u64>,
    /// For each missing parent, the peers it was asked from: each peer that sends a block
    /// needing it is asked once (before stop 39 only the first was, so a Byzantine peer
    /// that relayed an honest block first, and never answered, held it until a stall).
    asked: HashMap<Digest, Vec<ValidatorIndex>>,
    /// Each validator's budget of block bytes sent in answer to its requests
    /// ([`ANSWER_BURST`]); an answer may take it below zero by its last block.
    answer_budget: Vec<i64>,

    round: u64,
    last_own: Option<BlockRef>,
    /// Set when the engine was made from a log with history of its own or from a snapshot,
    /// until its first proposal since: the validators whose blocks came since the start.
    /// Its log may be older than the blocks it signed before (a restored backup), so it
    /// first listens (see [`AsyncBft::restart_allows`]).
    restarted: Option<Restarted>,
    /// The round of this engine's first proposal after round 1 (its own blocks from then
    /// on are all in its DAG until the floor passes them). Round 1's, made at the start of
    /// an empty log, does not count: an empty log is also that of a validator whose
    /// directory was lost, on a chain long past round 1, whose old blocks then come back.
    signed_from: Option<u64>,
    /// The highest round of a block of this engine's (its author, at or above
    /// `signed_from`) that a commit ordered ([`Consensus::own_ordered_round`]).
    own_ordered: u64,
    /// Set at the first block signed with this validator's key for a round above
    /// `signed_from` that this engine did not sign ([`Faults::other_signer`]): it proposes
    /// no more.
    stood_down: bool,
    /// The newest round in the DAG when a validator that stood down last looked at its
    /// watched transactions ([`AsyncBft::hand_on`]).
    handed_on_at: u64,
    quorum_round: u64,
    quorum_tick: u64,
    proposed_tick: u64,
    ticks: u64,
    progress_tick: u64,
    /// Resends since the last progress.
    resends: u32,
    /// Transactions to propose, each with the validator that forwarded it (`None`: this
    /// validator's own clients, or its own transactions back in the queue).
    queue: VecDeque<(Digest, Transaction, Option<ValidatorIndex>)>,
    queued: HashSet<Digest>,
    /// Payload bytes in `queue`.
    queued_bytes: usize,
    /// Transactions and payload bytes in `queue` that each validator forwarded.
    forwarded_load: Vec<(usize, usize)>,
    watched: BTreeMap<Digest, Watch>,
    watch_seq: u64,

    next_slot: (u64, usize),
    height: u64,
    last_commit_round: u64,
    /// The driver's clock (Unix milliseconds), stamped on proposals.
    clock_ms: u64,
    /// The time of the last commit (commit times never decrease).
    last_commit_ms: u64,
    committed: SplitSet<Digest>,
    committed_at: BTreeMap<u64, Arc<Vec<Digest>>>,
    /// [`round_hash`] of `committed_at`'s rounds, with the count it was taken at: a
    /// checkpoint hashes again only rounds that grew since.
    round_hashes: BTreeMap<u64, (usize, Digest)>,

    faults: Faults,
    replaying: bool,
    /// Replaying a peer's snapshot: only its ordered blocks are certified (the checkpoint's
    /// digest), so the rest get the live limits on versions of a slot.
    from_peer: bool,
    /// Restoring a snapshot: versions of a slot past the second that nothing waited for when
    /// they came, tried again once the snapshot's blocks (and, restarting, the log's) are in
    /// ([`AsyncBft::retake_set_aside`]).
    set_aside: Option<Vec<Arc<Block>>>,
    /// The set-aside versions being tried again: they alone get the live limits, whatever
    /// `from_peer` says (the log's blocks they release are trusted as the log's).
    retaking: HashSet<Digest>,
    dag_changed: bool,
    /// A proposal was made by the step `finish` completes (see `Consensus::handle_first`).
    proposed: bool,
    /// The coin share of a wave round, signed ahead for the next proposal.
    next_share: Option<(u64, Signature)>,
    /// The newest checkpoint with the blocks held then.
    snapshot: Option<Arc<Snapshot>>,

    /// Wave slots' elected authors, by round, once the coin is known.
    coins: BTreeMap<u64, ValidatorIndex>,
    /// Blocks whose coin share did not verify, and blocks whose share did (checked one by
    /// one after a combination failed).
    bad_shares: HashSet<Digest>,
    good_shares: HashSet<Digest>,
    /// For a voter block and a wave round: the block of each author in that round it votes
    /// for (the smallest digest it reaches). Facts of the DAG, computed once.
    wave_votes: RefCell<WaveVotes>,
}

impl std::fmt::Debug for AsyncBft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBft")
            .field("me", &self.me)
            .field("round", &self.round)
            .field("height", &self.height)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// Whether `record`, from an engine's log, is one this version wrote and reads: a snapshot,
/// a round floor, or a message. [`AsyncBft::recover`] skips records it cannot read (a log
/// cuts a torn last write before they get here); a driver refuses a log holding any, since
/// they come from another version, and skipping its own blocks could make a validator
/// propose twice in one round.
pub fn readable_record(record: &Bytes) -> bool {
    if record.first() == Some(&SNAPSHOT_RECORD) {
        return Snapshot::decode(record).is_ok();
    }
    decode_round_floor(record).is_some() || Message::decode(record).is_ok()
}

impl AsyncBft {
    /// The engine of validator `me` (whose block-signing key is `key`) in `committee`.
    pub fn new(
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: ed25519::SigningKey,
        cfg: Config,
        cache: Arc<SignatureCache>,
    ) -> AsyncBft {
        AsyncBft {
            pending_load: vec![(0, 0); committee.len()],
            forwarded_load: vec![(0, 0); committee.len()],
            answer_budget: vec![ANSWER_BURST; committee.len()],
            committee,
            me,
            key,
            cfg,
            cache,
            blocks: HashMap::new(),
            rounds: BTreeMap::new(),
            extra_versions: BTreeMap::new(),
            ordered: HashSet::new(),
            tips: BTreeMap::new(),
            highest: 0,
            highest_seen: 0,
            author_rounds: Vec::new(),
            floor: 0,
            pending: HashMap::new(),
            waiting: HashMap::new(),
            released: Vec::new(),
            asked: HashMap::new(),
            gone: HashMap::new(),
            raised: HashMap::new(),
            round: 0,
            last_own: None,
            restarted: None,
            signed_from: None,
            own_ordered: 0,
            stood_down: false,
            handed_on_at: 0,
            quorum_round: 0,
            quorum_tick: 0,
            proposed_tick: 0,
            ticks: 0,
            progress_tick: 0,
            resends: 0,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            queued_bytes: 0,
            watched: BTreeMap::new(),
            watch_seq: 0,
            next_slot: (1, 0),
            height: 0,
            last_commit_round: 0,
            clock_ms: 0,
            last_commit_ms: 0,
            committed: SplitSet::default(),
            committed_at: BTreeMap::new(),
            round_hashes: BTreeMap::new(),
            faults: Faults::default(),
            replaying: false,
            from_peer: false,
            set_aside: None,
            retaking: HashSet::new(),
            dag_changed: false,
            proposed: false,
            next_share: None,
            snapshot: None,
            coins: BTreeMap::new(),
            bad_shares: HashSet::new(),
            good_shares: HashSet::new(),
            wave_votes: RefCell::new(HashMap::new()),
        }
    }

    /// Rebuilds an engine from the records it asked to persist (in order), then replays its
    /// commits into `out` (heights from 1: the driver skips the ones it already applied).
    /// The engine never proposes again in a round it proposed in before the restart.
    pub fn recover(
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: ed25519::SigningKey,
        cfg: Config,
        cache: Arc<SignatureCache>,
        records: impl IntoIterator<Item = Bytes>,
        out: &mut Vec<Action>,
    ) -> AsyncBft {
        let mut records = records.into_iter().peekable();
        let from = records
            .peek()
            .filter(|r| r.first() == Some(&SNAPSHOT_RECORD))
            .and_then(|r| Snapshot::decode(r).ok());
        let mut e = match from {
            Some(s) => {
                records.next();
                AsyncBft::restore(committee, me, key, cfg, cache, &s, 0, false, out)
            }
            None => AsyncBft::new(committee, me, key, cfg, cache),
        };
        e.replaying = true;
        for r in records {
            if let Some(floor) = decode_round_floor(&r) {
                e.round = e.round.max(floor);
                continue;
            }
            // Records were checked before they were written; a record that does not decode
            // (a torn last write) is skipped.
            if let Ok(Message::Block(b)) = Message::decode(&r) {
                // Nor one that does not fit this committee (a log kept while the committee
                // in the configuration changed).
                if !e.well_formed(&b) {
                    continue;
                }
                let b: Arc<Block> = Arc::from(b);
                if b.author == me && b.round > e.round {
                    e.round = b.round;
                    e.last_own = Some(b.reference());
                }
                e.accept(b, None, out);
                // Commit as the records come, as the live engine did: its garbage-collection
                // floor then rises no later than it did live, so a block accepted live with
                // a parent below the floor is accepted again.
                e.commit_all(out);
            }
        }
        // The snapshot's versions past the second that the log's blocks wait for.
        e.retake_set_aside(true, out);
        e.commit_all(out);
        e.replaying = false;
        if e.round > 0 {
            e.restarted = Some(Restarted::default());
        }
        e
    }

    /// Accepts again the versions of a slot past the second that a snapshot being restored
    /// held and nothing waited for when they came, under the live limits (as a peer's
    /// snapshot's: only the versions held blocks wait for are taken). The snapshot's blocks
    /// come by round, so a version came before the later block that names it, was dropped,
    /// and that block then waited for it until the stall timer asked the peers (before stop
    /// 49, also after a restart from the validator's own log cut to a snapshot: found by a
    /// review). With `last`, the versions still not taken are dropped and counted;
    /// otherwise they wait for the log's blocks.
    fn retake_set_aside(&mut self, last: bool, out: &mut Vec<Action>) {
        let Some(kept) = self.set_aside.take() else { return };
        if !last {
            self.set_aside = Some(Vec::new());
        }
        let replaying = std::mem::replace(&mut self.replaying, true);
        self.retaking = kept.iter().map(|b| b.digest()).collect();
        for b in kept {
            self.accept(b, None, out);
        }
        self.retaking.clear();
        self.replaying = replaying;
    }

    /// An engine that rejoins from `snapshot` (a peer's, whose checkpoint digest the caller
    /// checked against a certified one): it holds what every honest validator held after
    /// the snapshot's commit, and the snapshot's blocks whose signatures verify, and goes on
    /// from the next slot; its commits continue the chain from the snapshot's height. It
    /// proposes only in or above the highest round of the snapshot's blocks it adds to its
    /// DAG (a block held for missing parents does not count: its round may be made up), and
    /// above its own blocks' rounds in the snapshot and above `min_round` (the highest round
    /// this validator proposed in before). Past the snapshot's ordered blocks (which the
    /// checkpoint certifies) a slot takes versions within the live limits. Actions (requests for missing
    /// blocks, commits already decidable) go to `out`; the driver starts a fresh log with
    /// the snapshot ([`Snapshot::encode`]) and a
    /// [`round_floor_record`](crate::checkpoint::round_floor_record) of `min_round`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_snapshot(
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: ed25519::SigningKey,
        cfg: Config,
        cache: Arc<SignatureCache>,
        snapshot: &Snapshot,
        min_round: u64,
        out: &mut Vec<Action>,
    ) -> AsyncBft {
        let mut e =
            AsyncBft::restore(committee, me, key, cfg, cache, snapshot, min_round, true, out);
        e.restarted = Some(Restarted::default());
        e
    }

    /// [`AsyncBft::from_snapshot`]; unless `last`, the versions of a slot it could not take
    /// yet stay set aside for the log's blocks ([`AsyncBft::retake_set_aside`]).
    #[allow(clippy::too_many_arguments)]
    fn restore(
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: ed25519::SigningKey,
        cfg: Config,
        cache: Arc<SignatureCache>,
        snapshot: &Snapshot,
        min_round: u64,
        last: bool,
        out: &mut Vec<Action>,
    ) -> AsyncBft {
        let mut e = AsyncBft::new(committee, me, key, cfg, cache);
        let cp = &snapshot.checkpoint;
        e.height = cp.height;
        e.next_slot =
            (cp.next_slot.0.max(1), cp.next_slot.1.min(e.committee.len() as u64) as usize);
        e.last_commit_round = cp.last_commit_round;
        e.last_commit_ms = cp.last_commit_ms;
        e.floor = cp.floor;
        e.ordered = cp.ordered.iter().copied().collect();
        for (round, ds) in &cp.committed {
            e.committed.extend(ds.iter().copied());
            e.committed_at.insert(*round, ds.clone());
        }
        e.snapshot = Some(Arc::new(snapshot.clone()));
        // Blocks below the floor are the ones its validator kept aside (`gone`): replaying,
        // `accept` keeps them aside here too.
        let mut blocks: Vec<(ValidatorIndex, Block)> = snapshot
            .blocks
            .iter()
            .filter(|b| e.well_formed(b))
            .map(|b| (b.author, Block::clone(b)))
            .collect();
        blocks.sort_by_key(|(_, b)| (b.round, b.author, b.digest()));
        let replaying = std::mem::replace(&mut e.replaying, true);
        e.from_peer = true;
        e.set_aside = Some(Vec::new());
        for (_, b) in e.verified(blocks) {
            if b.author == me && e.last_own.is_none_or(|o| o.round < b.round) {
                e.last_own = Some(b.reference());
            }
            e.accept(Arc::new(b), None, out);
        }
        e.retake_set_aside(last, out);
        e.replaying = replaying;
        e.from_peer = false;
        // The highest round of the blocks taken into the DAG (each stands on a quorum of the
        // round before), not of every signed block the snapshot holds: one Byzantine block
        // of a huge round over made-up parents would otherwise set this validator's round
        // past anything a quorum ever reaches, and it would never propose again.
        let top = e.blocks.values().map(|b| b.round).max().unwrap_or(0);
        // Never propose again in a round it proposed in: its own blocks in the snapshot,
        // `min_round` (what it proposed in before, from its log and its running engine), and
        // the blocks of its key it meets later (`author_rounds`, the restart guard) say
        // which. Rounds below the snapshot's top are skipped (the others have moved past
        // them). The top round itself stays open: the others may wait there for this
        // validator's block. Until stop 58 it was closed too, and with exactly a quorum of
        // the stake up besides this validator (the rest down), a rejoin while the others
        // waited for its block of that round stopped the chain for good: they could not
        // leave the round without it, nor it propose there (simulator seeds 60, 116, 300
        // and 404 of the random scenarios with live rejoins).
        e.round = top
            .saturating_sub(1)
            .max(e.last_own.map_or(0, |o| o.round))
            .max(cp.last_commit_round)
            .max(min_round)
            .max(1);
        e.commit_all(out);
        e
    }

    /// The deterministic part of the state, right after a commit.
    fn checkpoint(&self) -> Checkpoint {
        let mut ordered: Vec<Digest> = self.ordered.iter().copied().collect();
        ordered.sort_unstable();
        Checkpoint {
            height: self.height,
            next_slot: (self.next_slot.0, self.next_slot.1 as u64),
            last_commit_round: self.last_commit_round,
            last_commit_ms: self.last_commit_ms,
            floor: self.floor,
            ordered,
            committed: self.committed_at.iter().map(|(r, ds)| (*r, ds.clone())).collect(),
        }
    }

    /// Takes a checkpoint and puts its digest on the commit just made (the last in `out`).
    fn take_checkpoint(&mut self, out: &mut [Action]) {
        let checkpoint = self.checkpoint();
        let hashes = &mut self.round_hashes;
        let digest = checkpoint.digest_with(|round, ds| match hashes.get(&round) {
            Some((len, h)) if *len == ds.len() => *h,
            _ => {
                let h = round_hash(ds);
                hashes.insert(round, (ds.len(), h));
                h
            }
        });
        if let Some(Action::Commit(c)) =
            out.iter_mut().rev().find(|a| matches!(a, Action::Commit(_)))
        {
            c.checkpoint = Some(digest);
        }
        let mut blocks: Vec<Arc<Block>> =
            self.blocks.values().filter(|b| b.round >= self.floor).cloned().collect();
        blocks.extend(self.gone.values().map(|g| g.0.clone()));
        blocks.sort_by_key(|b| (b.round, b.author, b.digest()));
        self.snapshot = Some(Arc::new(Snapshot { checkpoint, blocks }));
    }

    /// A one-line summary of the DAG's top rounds, for diagnostics.
    pub fn summary(&self) -> String {
        let top: Vec<String> = self
            .rounds
            .iter()
            .rev()
            .take(4)
            .map(|(r, slots)| {
                let present: String =
                    slots.iter().map(|v| char::from(b'0' + v.len().min(9) as u8)).collect();
                format!("r{r}:{present}")
            })
            .collect();
        format!(
            "round {} ticks {} progress {} faults {:?} next slot {:?} pending {} waiting {} [{}]",
            self.round,
            self.ticks,
            self.progress_tick,
            self.faults,
            self.next_slot,
            self.pending.len(),
            self.waiting.len(),
            top.join(" ")
        )
    }

    /// Blocks held while their parents are fetched, and the digests they wait for.
    pub fn held(&self) -> (usize, usize) {
        (self.pending.len(), self.waiting.len())
    }

    /// Why the next undecided slot is undecided, for diagnostics.
    pub fn explain(&self) -> String {
        let (r, p) = self.next_slot;
        if p == self.committee.len() {
            let wave = r.saturating_sub(WAVE_AT);
            return format!(
                "wave slot of round {wave}: elected {:?}, {} shares in",
                self.coins.get(&wave).map(|a| a.0),
                self.blocks_of(wave + COIN_LAG).filter(|b| b.coin.is_some()).count()
            );
        }
        let author = self.slot_author(r, p);
        let mut lines = vec![format!("slot ({r}, {p}) author {}", author.0)];
        for v in self.blocks_of(r + 1) {
            lines.push(format!(
                "  r+1 {} votes {:?}",
                v.author.0,
                self.vote_of(v, r, author).map(|d| d[0])
            ));
        }
        for target in self.slot_blocks(r, author) {
            for c in self.blocks_of(r + 2) {
                lines.push(format!(
                    "  r+2 {} certifies {}: {}",
                    c.author.0,
                    target[0],
                    self.certifies(c, r, author, &target)
                ));
            }
        }
        lines.join("\n")
    }

    /// Where this engine holds transaction `digest`, for diagnostics: `committed`,
    /// `queued`, `watched` (forwarded, attempt and deadline round) or `unknown`.
    pub fn locate(&self, digest: &[u8; 32]) -> String {
        if self.committed.contains(digest) {
            "committed".into()
        } else if self.queued.contains(digest) {
            "queued".into()
        } else if let Some(w) = self.watched.get(digest) {
            format!("watched (attempt {}, deadline {})", w.attempt, w.deadline)
        } else {
            let mut found: Vec<String> = self
                .blocks
                .values()
                .filter(|b| b.transaction_digests().contains(digest))
                .map(|b| {
                    let ordered = self.ordered.contains(&b.digest());
                    format!("in block ({}, {}) ordered {ordered}", b.author.0, b.round)
                })
                .collect();
            found.sort();
            if found.is_empty() {
                "unknown".into()
            } else {
                found.join(", ")
            }
        }
    }

    /// What was refused so far.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Number of blocks committed (the height of the last [`Committed`]).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The validator that proposes `sender`'s transactions on attempt `attempt` (0 first): a
    /// stake-weighted choice by the hash of the sender (and, after the first attempt, of the
    /// attempt), so the transactions of a validator that is down spread over all the others
    /// by stake instead of landing on its neighbour.
    pub fn assignee(committee: &Committee, sender: &[u8; 20], attempt: u64) -> ValidatorIndex {
        let h = if attempt == 0 {
            alloy_primitives::keccak256(sender)
        } else {
            let mut input = [0u8; 28];
            input[..20].copy_from_slice(sender);
            input[20..].copy_from_slice(&attempt.to_le_bytes());
            alloy_primitives::keccak256(input)
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&h[..8]);
        let mut point = u64::from_le_bytes(word) % committee.total_stake();
        for (i, v) in committee.iter() {
            if point < v.stake {
                return i;
            }
            point -= v.stake;
        }
        ValidatorIndex(0)
    }

    /// The first of the [`ASSIGN_ATTEMPTS`] attempts from `from` on whose assignee `usable`
    /// accepts, with that assignee: where a validator sends a transaction when some
    /// validators are not live.
    pub fn first_assignee(
        committee: &Committee,
        sender: &[u8; 20],
        from: u64,
        usable: impl Fn(ValidatorIndex) -> bool,
    ) -> Option<(u64, ValidatorIndex)> {
        (from..from + ASSIGN_ATTEMPTS)
            .map(|attempt| (attempt, AsyncBft::assignee(committee, sender, attempt)))
            .find(|(_, v)| usable(*v))
    }

    fn quorum(&self) -> Stake {
        self.committee.quorum_threshold()
    }

    fn stake(&self, v: ValidatorIndex) -> Stake {
        self.committee.validator(v).map_or(0, |v| v.stake)
    }

    fn send(&self, out: &mut Vec<Action>, to: Target, msg: &Message) {
        self.send_bytes(out, to, msg.encode());
    }

    fn send_bytes(&self, out: &mut Vec<Action>, to: Target, bytes: Bytes) {
        if !self.replaying {
            out.push(Action::Send { to, bytes });
        }
    }

    /// The author of slot `pos` in `round`: the committee rotated by the round.
    fn slot_author(&self, round: u64, pos: usize) -> ValidatorIndex {
        let n = self.committee.len() as u64;
        ValidatorIndex(((pos as u64 + round) % n) as u16)
    }

    /// The simulator's fault ([`Config::fault_stale_own_reference`]): the reference to this
    /// validator's own block of round `k` in `parents` (a proposal of round `k + 1`) claims
    /// an old round instead, where the block stays valid (the others' blocks of round `k`
    /// still a quorum, the claim within `gc_depth` and its slot free).
    fn stale_own_reference(&self, k: u64, parents: &mut [BlockRef]) {
        let claim = self.floor.max((k + 1).saturating_sub(self.cfg.gc_depth));
        if claim >= k || parents.iter().any(|p| (p.round, p.author) == (claim, self.me)) {
            return;
        }
        let others: Stake = parents
            .iter()
            .filter(|p| p.round == k && p.author != self.me)
            .map(|p| self.stake(p.author))
            .sum();
        if others < self.quorum() {
            return;
        }
        if let Some(own) = parents.iter_mut().find(|p| p.round == k && p.author == self.me) {
            own.round = claim;
            parents.sort_by_key(|p| (p.round, p.author));
        }
    }

    /// The simulator's other lie ([`Config::fault_raised_reference`], even rounds): the
    /// proposal of round `k + 1` also names a block of the lowest round this validator keeps
    /// (its floor) under round `k − 1` and its own author, a later round than the block's
    /// own, where the slot is free. Validators whose floor passed the block's real round but
    /// not the claim wait for it by the claim (rule 12 of docs/consensus.md).
    fn raised_reference(&self, k: u64, parents: &mut Vec<BlockRef>) {
        let claim = k.saturating_sub(1);
        if claim <= self.floor + 1
            || parents.iter().any(|p| (p.round, p.author) == (claim, self.me))
        {
            return;
        }
        let Some(d) = self.rounds.get(&self.floor).and_then(|slots| slots.iter().flatten().next())
        else {
            return;
        };
        parents.push(BlockRef { round: claim, author: self.me, digest: *d });
        parents.sort_by_key(|p| (p.round, p.author));
    }

    /// Whether a block received from the network is no larger than a proposal may be
    /// (`propose`): at most MAX_PROPOSAL_TRANSACTIONS, and at most MAX_PROPOSAL_BYTES of
    /// payload. Checked where blocks arrive, beside [`AsyncBft::well_formed`], and not on
    /// blocks read back from this validator's log or taken from a snapshot: those were
    /// accepted under the rules of their time, and a replay that dropped one of them could
    /// order differently than the validator did.
    fn within_proposal_limits(b: &Block) -> bool {
        b.transactions.len() <= MAX_PROPOSAL_TRANSACTIONS
            && b.transactions.iter().map(|t| t.payload.len()).sum::<usize>() <= MAX_PROPOSAL_BYTES
    }

    /// Structural rules a block must meet, checked before its signature.
    fn well_formed(&self, b: &Block) -> bool {
        let n = self.committee.len();
        if usize::from(b.author.0) >= n || b.round == 0 {
            return false;
        }
        // A coin share only where one is due, and only with a coin.
        if b.coin.is_some()
            && !(self.coin_on() && b.round > COIN_LAG && AsyncBft::wave_round(b.round - COIN_LAG))
        {
            return false;
        }
        if b.round == 1 {
            return b.parents.is_empty();
        }
        // An honest proposal names at most 3n parents: its own last block and late blocks,
        // 2n in all, and the round before's, n (`propose`). Before stop 37 a block could name
        // one parent per slot of gc_depth rounds (2,000 with n = 4), each made up: a held
        // block then cost several times the bytes its author's share of held blocks counts.
        if b.parents.len() > 3 * n {
            return false;
        }
        let lowest = b.round.saturating_sub(self.cfg.gc_depth);
        let mut seen = BTreeSet::new();
        let mut prev_stake: Stake = 0;
        for (i, p) in b.parents.iter().enumerate() {
            if usize::from(p.author.0) >= n || p.round >= b.round || p.round < lowest {
                return false;
            }
            // Sorted by (round, author): one parent per slot, no repeats.
            if i > 0 && (b.parents[i - 1].round, b.parents[i - 1].author) >= (p.round, p.author) {
                return false;
            }
            if p.round + 1 == b.round && seen.insert(p.author) {
                prev_stake += self.stake(p.author);
            }
        }
        prev_stake >= self.quorum()
    }

    /// Records that `author` signed a block of `round`, and updates the highest round that
    /// validators holding more than a third of the stake have reached, which at least one
    /// honest validator has (one Byzantine block with a huge round cannot move it).
    fn note_round(&mut self, author: ValidatorIndex, round: u64) {
        let n = self.committee.len();
        if self.author_rounds.len() != n {
            self.author_rounds = vec![0; n];
        }
        let Some(top) = self.author_rounds.get_mut(usize::from(author.0)) else { return };
        if round <= *top {
            return;
        }
        *top = round;
        let mut by_round: Vec<(u64, ValidatorIndex)> = self
            .author_rounds
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, ValidatorIndex(i as u16)))
            .collect();
        by_round.sort_unstable_by(|a, b| b.cmp(a));
        let mut stake: Stake = 0;
        for (r, v) in by_round {
            stake += self.stake(v);
            if stake >= self.committee.validity_threshold() {
                if r > self.highest_seen {
                    self.highest_seen = r;
                    if let Some(restarted) = self.restarted.as_mut() {
                        restarted.seen_rose_at = self.ticks;
                    }
                }
                break;
            }
        }
    }

    /// Takes a block whose signature is checked: into the DAG if its parents are there,
    /// else held while they are fetched from `from`.
    fn accept(&mut self, b: Arc<Block>, from: Option<ValidatorIndex>, out: &mut Vec<Action>) {
        self.note_round(b.author, b.round);
        let d = b.digest();
        if b.round < self.floor {
            let mut ready = Vec::new();
            self.below_floor(b, &mut ready, out);
            for r in ready {
                self.insert(r, out);
            }
            return;
        }
        if self.blocks.contains_key(&d) || self.pending.contains_key(&d) {
            return;
        }
        if b.author == self.me && !self.replaying {
            self.own_block_elsewhere(b.round, out);
        }
        let missing: Vec<Digest> = b
            .parents
            .iter()
            .filter(|p| {
                p.round >= self.floor
                    && !self.blocks.contains_key(&p.digest)
                    && !self.gone.contains_key(&p.digest)
            })
            .map(|p| p.digest)
            .collect();
        if missing.is_empty() {
            self.insert(b, out);
            return;
        }
        let n = self.committee.len().max(1);
        let size = b.encoded().len();
        // Counted for its author if that share has room, else for the first validator
        // (in index order) whose held blocks wait for it and whose share has room. Before
        // stop 47 only the author's share was tried, so a faulty validator that filled its
        // share with blocks over made-up parents (of rounds no floor reaches) kept out its own
        // block that honest blocks referenced, and the validator waited on them for good.
        let wanted_by = self.wanted_by(&d);
        let room =
            |l: &(usize, usize)| l.0 < MAX_PENDING / n && l.1 + size <= MAX_PENDING_BYTES / n;
        let charged = std::iter::once(usize::from(b.author.0))
            .chain(bits_of(&wanted_by))
            .find(|v| self.pending_load.get(*v).is_some_and(room));
        let Some(charged) = charged.filter(|_| self.pending.len() < MAX_PENDING) else {
            self.faults.pending_full += 1;
            return;
        };
        let Some(load) = self.pending_load.get_mut(charged) else { return };
        *load = (load.0 + 1, load.1 + size);
        let mut ask = Vec::new();
        for m in &missing {
            self.waiting.entry(*m).or_default().push(d);
            // A held parent is itself waiting for its own parents.
            if self.pending.contains_key(m) {
                continue;
            }
            if let Some(from) = from {
                let asked = self.asked.entry(*m).or_default();
                if !asked.contains(&from) {
                    asked.push(from);
                    ask.push(*m);
                }
            }
        }
        // The held parents it waits for are wanted by its author and by its own wanters.
        let mut wants = wanted_by.clone();
        set_bit(&mut wants, usize::from(b.author.0));
        let charged = u16::try_from(charged).unwrap_or(u16::MAX);
        self.pending.insert(d, Held { block: b, left: missing.len(), charged, wanted_by });
        for m in &missing {
            self.spread_wanted(*m, &wants);
        }
        if let Some(from) = from {
            for chunk in ask.chunks(MAX_REQUEST) {
                self.send(out, Target::One(from), &Message::Request(chunk.to_vec()));
            }
        }
    }

    /// The validators whose held blocks wait for `d`, directly or through other held blocks.
    fn wanted_by(&self, d: &Digest) -> Vec<u64> {
        let mut bits = Vec::new();
        for c in self.waiting.get(d).into_iter().flatten() {
            if let Some(h) = self.pending.get(c) {
                set_bit(&mut bits, usize::from(h.block.author.0));
                add_bits(&mut bits, &h.wanted_by);
            }
        }
        bits
    }

    /// Adds `add` to the wanters of held block `d` and of the held blocks it waits for, and
    /// so on down. Each held block's set only grows, so each takes at most n additions.
    fn spread_wanted(&mut self, d: Digest, add: &[u64]) {
        let mut stack = vec![(d, add.to_vec())];
        while let Some((d, add)) = stack.pop() {
            let Some(h) = self.pending.get_mut(&d) else { continue };
            let new = new_bits(&h.wanted_by, &add);
            if new.is_empty() {
                continue;
            }
            add_bits(&mut h.wanted_by, &new);
            let parents: Vec<Digest> = h.block.parents.iter().map(|p| p.digest).collect();
            for p in parents {
                if self.pending.contains_key(&p) {
                    stack.push((p, new.clone()));
                }
            }
        }
    }

    /// The most validators whose stake stays below the validity threshold: how many may be
    /// faulty.
    fn most_faulty(&self) -> usize {
        let mut stakes: Vec<Stake> = self.committee.iter().map(|(_, v)| v.stake).collect();
        stakes.sort_unstable();
        let mut sum: Stake = 0;
        let mut count = 0;
        for s in stakes {
            sum = sum.saturating_add(s);
            if sum >= self.committee.validity_threshold() {
                break;
            }
            count += 1;
        }
        count
    }

    /// Whether version `d` of `b`'s slot, past the slot's second, is taken, counting it for
    /// the validator it is taken for.
    ///
    /// It is taken for a held block whose author has referenced at most one further version
    /// of this slot so far (an honest author references one, and perhaps a second later as a
    /// tip): so a slot has at most two versions plus two per referencing author, whoever
    /// references them (the equivocator too).
    ///
    /// When every referencing author has used that (a faulty author referencing its own
    /// versions), it is taken for a validator other than the slot's author whose held blocks
    /// wait for the referencing ones, up to 2 + 2 × (the most faulty validators) times per
    /// slot for each (the author itself would otherwise spend this allowance too): an honest
    /// validator's DAG holds the first two versions and at most two per referencing author,
    /// and those it took for faulty authors may have been spent on others here. Before stop
    /// 47 only the direct references counted, so a faulty author that spent its allowance at
    /// one validator on versions no one else had kept out the version honest blocks built on
    /// there, and with it every later honest block.
    fn take_extra_version(&mut self, d: &Digest, b: &Block) -> bool {
        let n = self.committee.len();
        let through_most = 2 + 2 * self.most_faulty();
        let mut direct = Vec::new();
        let mut through = Vec::new();
        for c in self.waiting.get(d).into_iter().flatten() {
            if let Some(h) = self.pending.get(c) {
                direct.push(usize::from(h.block.author.0));
                add_bits(&mut through, &h.wanted_by);
            }
        }
        let author = usize::from(b.author.0);
        let counts =
            self.extra_versions.entry((b.round, b.author)).or_insert_with(|| vec![[0, 0]; n]);
        let by = direct
            .into_iter()
            .find(|a| counts.get(*a).is_some_and(|c| c[0] < 2))
            .map(|a| (a, 0))
            .or_else(|| {
                bits_of(&through)
                    .filter(|a| *a != author)
                    .find(|a| counts.get(*a).is_some_and(|c| usize::from(c[1]) < through_most))
                    .map(|a| (a, 1))
            });
        let Some((by, kind)) = by else { return false };
        if let Some(c) = counts.get_mut(by) {
            c[kind] = c[kind].saturating_add(1);
        }
        true
    }

    /// Adds a block with all its parents present, then the held blocks that waited on it.
    fn insert(&mut self, b: Arc<Block>, out: &mut Vec<Action>) {
        let mut ready = vec![b];
        while let Some(b) = ready.pop() {
            let d = b.digest();
            if self.blocks.contains_key(&d) {
                continue;
            }
            // A reference names its block by digest, round and author, and the rules count
            // a parent's stake by the reference: a block whose reference to a block this
            // validator holds names another round or author is refused (otherwise one
            // Byzantine block, referenced n times under n names, would stand for a quorum
            // in any round). The blocks held waiting on it are dropped with the rest
            // below the garbage-collection floor.
            // Only references to the round before are checked: those carry the quorum and
            // the votes, and every validator that adds the block holds them (they are at or
            // above its floor, so they were fetched), so all refuse the same blocks. A
            // fetched one may have come below the floor and been kept aside (`gone`): it is
            // checked there too. Before stop 41 it was not, and a Byzantine block claiming
            // a huge round over references to an old block (fetched, then kept aside)
            // entered the DAG with no quorum under it, set the highest round past any a
            // quorum reaches, and made every honest validator count through the rounds up
            // to it (found by a review).
            let lies = b.parents.iter().filter(|p| p.round + 1 == b.round).any(|p| {
                self.blocks
                    .get(&p.digest)
                    .or_else(|| self.gone.get(&p.digest).map(|g| &g.0))
                    .is_some_and(|q| (q.round, q.author) != (p.round, p.author))
            });
            if lies {
                self.faults.invalid += 1;
                continue;
            }
            let n = self.committee.len();
            // Two versions of a slot show its author equivocates; more are taken only when
            // a held block references them. An equivocator could otherwise add versions
            // without bound, each stored, and each multiplying the work of deciding the
            // slot. (What the log holds was taken before, and is taken again.)
            let trusted = self.replaying
                && (!self.from_peer || self.ordered.contains(&d))
                && !self.retaking.contains(&d);
            let taken = self
                .rounds
                .get(&b.round)
                .and_then(|slot| slot.get(usize::from(b.author.0)))
                .map_or(0, Vec::len);
            if taken >= 2 && !trusted && !self.take_extra_version(&d, &b) {
                match &mut self.set_aside {
                    Some(kept) => kept.push(b),
                    None => self.faults.versions_dropped += 1,
                }
                continue;
            }
            let slot = self.rounds.entry(b.round).or_insert_with(|| vec![Vec::new(); n]);
            let versions = &mut slot[usize::from(b.author.0)];
            versions.push(d);
            if !self.replaying {
                out.push(Action::Persist(b.encoded()));
            }
            let version = versions.len();
            if version > 1 {
                self.faults.equivocators.insert(b.author);
            }
            if let Some(r) = self.restarted.as_mut() {
                if r.coming.get(&b.author).is_some_and(|c| c.contains(&d)) {
                    r.coming.remove(&b.author);
                    self.heard_from(b.author);
                }
            }
            self.highest = self.highest.max(b.round);
            for p in &b.parents {
                if self.tips.get(&(p.round, p.author)) == Some(&p.digest) {
                    self.tips.remove(&(p.round, p.author));
                }
                if self.blocks.get(&p.digest).is_some_and(|q| q.round < p.round) {
                    let claim = self.raised.entry(p.digest).or_insert(p.round);
                    *claim = (*claim).max(p.round);
                } else if let Some((_, at)) = self.gone.get_mut(&p.digest) {
                    // Kept aside while a claim on it may still be waited for.
                    *at = (*at).max(p.round);
                }
            }
            // A block some held block already references is no tip; nor is a second version
            // of a slot while the first is one. Nor is a version past the second: live, one is
            // taken only for held blocks that wait for it, so it never is one, and replaying
            // the log (which holds no held block) must not make it one either: the
            // validator's proposals after a restart would name a version other validators
            // may not have taken.
            if version <= 2 && self.waiting.get(&d).is_none_or(|c| c.is_empty()) {
                self.tips.entry((b.round, b.author)).or_insert(d);
            }
            self.blocks.insert(d, b);
            self.dag_changed = true;
            self.arrived(&d, &mut ready);
        }
    }

    /// A block below the floor that held blocks may wait for. They named it under a round at
    /// or above the floor: a false claim. They stop waiting for it (those left waiting for
    /// nothing go to `ready`); validators that had dropped it already did not wait (a block
    /// is kept by its real round, so at the commit that reaches them it is below every
    /// validator's floor alike). It is kept aside (`gone`) and logged before the blocks it
    /// releases; replaying the log, any block below the floor is kept aside (the blocks it
    /// released come after it in the log).
    fn below_floor(&mut self, b: Arc<Block>, ready: &mut Vec<Arc<Block>>, out: &mut Vec<Action>) {
        let d = b.digest();
        if (self.replaying || self.waiting.contains_key(&d)) && !self.gone.contains_key(&d) {
            if !self.replaying {
                out.push(Action::Persist(b.encoded()));
            }
            self.gone.insert(d, (b, self.floor));
        }
        self.arrived(&d, ready);
    }

    /// The held blocks that waited for `d` wait for it no more: those left waiting for
    /// nothing go to `ready`.
    fn arrived(&mut self, d: &Digest, ready: &mut Vec<Arc<Block>>) {
        self.asked.remove(d);
        for child in self.waiting.remove(d).unwrap_or_default() {
            if let Some(h) = self.pending.get_mut(&child) {
                h.left = h.left.saturating_sub(1);
                if h.left == 0 {
                    if let Some(h) = self.pending.remove(&child) {
                        unload(&mut self.pending_load, &h);
                        ready.push(h.block);
                    }
                }
            }
        }
    }

    /// Commits what the DAG allows, then adds the held blocks a risen floor released, and
    /// commits again, until nothing changes.
    fn commit_all(&mut self, out: &mut Vec<Action>) {
        loop {
            if std::mem::take(&mut self.dag_changed) {
                self.try_commit(out);
            }
            let released = std::mem::take(&mut self.released);
            if released.is_empty() && !self.dag_changed {
                return;
            }
            for b in released {
                // A later commit of the same pass may have raised the floor past it: then it
                // is a block below the floor, as one arriving there (its waiters go on).
                if b.round < self.floor {
                    let mut ready = Vec::new();
                    self.below_floor(b, &mut ready, out);
                    self.released.extend(ready);
                    continue;
                }
                self.insert(b, out);
            }
        }
    }

    /// The stake of distinct authors with a block in `round`.
    fn round_stake(&self, round: u64) -> Stake {
        self.rounds.get(&round).map_or(0, |slots| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(i, _)| self.stake(ValidatorIndex(i as u16)))
                .sum()
        })
    }

    fn has_block(&self, round: u64, author: usize) -> bool {
        self.rounds.get(&round).and_then(|s| s.get(author)).is_some_and(|v| !v.is_empty())
    }

    /// Proposes the next round if a quorum of the round below is in (and the wait for the
    /// validators that were live is over). True if it did.
    fn maybe_propose(&mut self, out: &mut Vec<Action>) -> bool {
        if self.round == 0 || self.stood_down {
            return false;
        }
        // The highest round with a quorum, at least the one proposed in last.
        let mut k = self.highest;
        while k >= self.round && self.round_stake(k) < self.quorum() {
            k -= 1;
        }
        if k < self.round {
            return false;
        }
        // Never in or below a round this validator's key signed a block for, whichever life
        // of it did (a block of its own comes back from the others only when its log lost it).
        if self.author_rounds.get(usize::from(self.me.0)).is_some_and(|r| *r > k) {
            return false;
        }
        if !self.restart_allows(k) {
            return false;
        }
        let n = self.committee.len();
        if k == self.round {
            if self.quorum_round != k {
                self.quorum_round = k;
                self.quorum_tick = self.ticks;
            }
            // Not for a validator already seen in a later round: it went past `k` without a
            // block there (it got a quorum of `k` before it could propose in it) and will
            // never make one.
            let moved_on = |a: usize| self.author_rounds.get(a).is_some_and(|r| *r > k);
            let waiting_for = (0..n).any(|a| {
                !self.has_block(k, a) && (k <= 1 || self.has_block(k - 1, a)) && !moved_on(a)
            });
            // Wait as long as the quorum took to come (at least `wait_ticks`, at most
            // `max_wait_ticks`): stragglers are usually a little slower, not absent.
            let took = self.quorum_tick - self.proposed_tick;
            let wait =
                took.min(u64::from(self.cfg.max_wait_ticks)).max(u64::from(self.cfg.wait_ticks));
            if waiting_for && self.ticks - self.quorum_tick < wait {
                return false;
            }
        }
        // Idle: nothing to propose, and no transactions in the round being proposed in or the
        // two before it (whose blocks still need votes and certificates). Rounds then
        // advance every `idle_ticks` only, so history (and the window a restarted validator
        // can catch up in) is not spent on empty rounds.
        let carries = |r: u64| {
            self.rounds.get(&r).is_some_and(|slots| {
                slots
                    .iter()
                    .flatten()
                    .any(|d| self.blocks.get(d).is_some_and(|b| !b.transactions.is_empty()))
            })
        };
        let idle = self.queue.is_empty()
            && !carries(k + 1)
            && !carries(k)
            && !carries(k.saturating_sub(1));
        if idle && self.ticks - self.proposed_tick < u64::from(self.cfg.idle_ticks) {
            return false;
        }
        let mut parents: Vec<BlockRef> = Vec::with_capacity(n + 1);
        // Its previous block only if its DAG holds it: one taken from a snapshot or from the
        // engine it replaced may still wait for parents, and a proposal standing on a block
        // this validator does not hold would leave that block out of its commits where the
        // others order it (found by a review in stop 58).
        if let Some(own) = self.last_own {
            if own.round < k
                && own.round + self.cfg.gc_depth > k
                && self.blocks.contains_key(&own.digest)
            {
                parents.push(own);
            }
        }
        // Older blocks nothing references yet (late arrivals), at most 2n of them.
        let lowest = (k + 1).saturating_sub(self.cfg.gc_depth).max(self.floor);
        let late = (lowest, ValidatorIndex(0))..(k, ValidatorIndex(0));
        for ((round, author), d) in self.tips.range(late) {
            if parents.len() >= 2 * n {
                break;
            }
            if parents.iter().all(|p| (p.round, p.author) != (*round, *author)) {
                parents.push(BlockRef { round: *round, author: *author, digest: *d });
            }
        }
        parents.sort_by_key(|p| (p.round, p.author));
        if let Some(slots) = self.rounds.get(&k) {
            for (a, versions) in slots.iter().enumerate() {
                if let Some(d) = versions.first() {
                    parents.push(BlockRef {
                        round: k,
                        author: ValidatorIndex(a as u16),
                        digest: *d,
                    });
                }
            }
        }
        if self.cfg.fault_stale_own_reference && (k + 1) % 2 == 1 {
            self.stale_own_reference(k, &mut parents);
        }
        if self.cfg.fault_raised_reference && (k + 1).is_multiple_of(2) {
            self.raised_reference(k, &mut parents);
        }
        let mut txs = Vec::new();
        let mut digests = Vec::new();
        let mut bytes = 0usize;
        // An empty block when far behind the rounds more than a third of the stake reached
        // (restarting, or cut off: an old round's block may never be ordered), or, in the
        // baseline mode, when not the round's leader.
        let empty = self.highest_seen > k + 1 + CATCH_UP_ROUNDS
            || (self.cfg.single_leader && self.slot_author(k + 1, 0) != self.me);
        let most = self.cfg.max_batch_transactions.min(MAX_PROPOSAL_TRANSACTIONS);
        let most_bytes = self.cfg.max_batch_bytes.min(MAX_PROPOSAL_BYTES);
        while !empty && txs.len() < most {
            let Some((_, t, _)) = self.queue.front() else { break };
            if bytes + t.payload.len() > most_bytes && !txs.is_empty() {
                break;
            }
            let Some((d, t, from)) = self.queue.pop_front() else { break };
            self.queued.remove(&d);
            self.queued_bytes -= t.payload.len();
            if let Some(load) = from.and_then(|v| self.forwarded_load.get_mut(usize::from(v.0))) {
                load.0 -= 1;
                load.1 -= t.payload.len();
            }
            if self.committed.contains(&d) {
                continue;
            }
            bytes += t.payload.len();
            txs.push(t);
            digests.push(d);
        }
        // The proposer's own clock, never taken from a parent: a Byzantine parent's far-future
        // time must not spread to honest blocks (the commit time's median relies on it).
        let time_ms = self.clock_ms;
        let key = &self.key;
        // This validator's coin share for the wave COIN_LAG rounds back, if one is due.
        let share = match (&self.cfg.coin, k + 1 > COIN_LAG && self.coin_on()) {
            (Some(ck), true) if AsyncBft::wave_round(k + 1 - COIN_LAG) => {
                let wave = k + 1 - COIN_LAG;
                match self.next_share.take() {
                    Some((w, share)) if w == wave => Some(share),
                    _ => Some(ck.sign(&Block::coin_message(&self.cfg.chain, wave))),
                }
            }
            _ => None,
        };
        let block =
            Block::with_coin(&self.cfg.chain, self.me, k + 1, time_ms, parents, txs, share, |m| {
                key.sign(m)
            })
            .with_transaction_digests(digests);
        self.cache.insert(&self.cfg.chain, &block);
        self.round = k + 1;
        self.last_own = Some(block.reference());
        self.restarted = None;
        self.signed_from.get_or_insert(k + 1);
        self.progress_tick = self.ticks;
        self.proposed_tick = self.ticks;
        self.resends = 0;
        let bytes = block.encoded();
        self.insert(Arc::new(block), out);
        self.send_bytes(out, Target::All, bytes);
        true
    }

    /// Whether a restarted validator may make its first proposal, in round `k + 1`. Its log
    /// may be older than what it signed before it stopped (a backup restored, a copy of
    /// the data directory), and the others hold those blocks: proposing in one of their
    /// rounds again would be equivocating. So it first hears from the others' part of a
    /// quorum (all of them, if they hold less), so that the round they have reached is
    /// known (each resends its newest block when it restarts too, or stalls; with only
    /// more than a third heard, a simulator run went wrong: one of the few heard had just
    /// restarted too, and the round seen came out below the old life's), and then proposes
    /// only once it has caught up to that round: catching up, it fetches the blocks the
    /// others built on, its own old ones among them, from the newest down, before its DAG
    /// can fill from below, and a block of its own seen anywhere puts its next round above
    /// it (`maybe_propose`). One that stays more than a round behind (a slow link) proposes
    /// anyway [`RESTART_PATIENCE_TICKS`] after it heard enough, if it is within
    /// [`CATCH_UP_ROUNDS`]. A block its old life sent that no validator holds, or that none
    /// built on yet (its last round or two, when the others stalled with it), is not seen.
    /// And it proposes only once no other process signs with its key (a copy of a running
    /// validator's directory): see [`OTHER_SIGNER_ROUNDS`].
    fn restart_allows(&mut self, k: u64) -> bool {
        let ticks = self.ticks;
        let Some(r) = self.restarted.as_mut() else { return true };
        if r.quorum.0 != k {
            r.quorum = (k, ticks);
        }
        let Some(r) = &self.restarted else { return true };
        if !self.heard_enough(&r.heard) {
            return false;
        }
        let own = self.author_rounds.get(usize::from(self.me.0)).copied().unwrap_or(0);
        let passed = self.highest_seen >= own.saturating_add(OTHER_SIGNER_ROUNDS)
            && ticks - r.own_news_at >= RESTART_PATIENCE_TICKS;
        let news = r.own_news_at.max(r.seen_rose_at).max(r.quorum.1);
        if !passed && ticks - news < RESTART_PATIENCE_TICKS {
            return false;
        }
        let patient = r.heard_at.is_some_and(|t| self.ticks - t >= RESTART_PATIENCE_TICKS);
        let caught_up = |margin: u64| self.highest_seen <= k.saturating_add(1 + margin);
        caught_up(0) || (patient && caught_up(CATCH_UP_ROUNDS))
    }

    /// Whether `heard` holds the others' part of a quorum (all of them, if they hold less):
    /// with up to a third of the stake down besides this validator, the rest hold that.
    fn heard_enough(&self, heard: &BTreeSet<ValidatorIndex>) -> bool {
        let others = self.committee.total_stake() - self.stake(self.me);
        let need = others.min(self.quorum().saturating_sub(self.stake(self.me)));
        heard.iter().map(|v| self.stake(*v)).sum::<Stake>() >= need
    }

    /// Signs the coin share the next proposal (of the round after this validator's) will
    /// carry, if it carries one, so that it is not signed while the round waits. Signing is
    /// deterministic: the share is the one `maybe_propose` would sign.
    fn prepare_share(&mut self) {
        let next = self.round + 1;
        if next <= COIN_LAG || !self.coin_on() || !AsyncBft::wave_round(next - COIN_LAG) {
            return;
        }
        let wave = next - COIN_LAG;
        if let Some(ck) = &self.cfg.coin {
            if self.next_share.is_none_or(|(w, _)| w != wave) {
                self.next_share =
                    Some((wave, ck.sign(&Block::coin_message(&self.cfg.chain, wave))));
            }
        }
    }

    /// Hands watched transactions whose assignee did not commit them in time to the next
    /// validator that has proposed recently.
    fn reassign(&mut self, out: &mut Vec<Action>) {
        let now = self.clock_round();
        let mut due: Vec<(u64, Digest)> = self
            .watched
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(d, w)| (w.seq, *d))
            .collect();
        due.sort_unstable();
        let mut forward: BTreeMap<ValidatorIndex, Vec<Transaction>> = BTreeMap::new();
        for (_, d) in due {
            let Some(w) = self.watched.get(&d) else { continue };
            let current = AsyncBft::assignee(&self.committee, &w.tx.sender, w.attempt);
            if self.live(current) && now < w.since + LIVE_PATIENCE * self.cfg.reassign_rounds {
                if let Some(w) = self.watched.get_mut(&d) {
                    w.deadline = now + self.cfg.reassign_rounds;
                }
                continue;
            }
            // A live assignee that left the transaction out gets it no more: the next
            // stake-weighted pick could be the same validator again.
            let left_out = self.live(current).then_some(current);
            let (attempt, to) = self.live_assignee(&w.tx.sender, w.attempt + 1, left_out);
            let tx = w.tx.clone();
            if let Some(w) = self.watched.get_mut(&d) {
                w.attempt = attempt;
                w.deadline = now + self.cfg.reassign_rounds;
            }
            if to == self.me {
                if let Some(w) = self.watched.remove(&d) {
                    self.enqueue(d, w.tx, None);
                }
            } else {
                forward.entry(to).or_default().push(tx);
            }
        }
        for (to, txs) in forward {
            self.forward(out, to, txs);
        }
    }

    /// Sends `txs` to `to` in messages within the decoder's limits.
    fn forward(&self, out: &mut Vec<Action>, to: ValidatorIndex, txs: Vec<Transaction>) {
        let mut chunk = Vec::new();
        let mut bytes = 0usize;
        for t in txs {
            if chunk.len() == FORWARD_TRANSACTIONS || bytes + t.payload.len() > FORWARD_BYTES {
                let full = std::mem::take(&mut chunk);
                self.send(out, Target::One(to), &Message::Transactions(full));
                bytes = 0;
            }
            bytes += t.payload.len();
            chunk.push(t);
        }
        if !chunk.is_empty() {
            self.send(out, Target::One(to), &Message::Transactions(chunk));
        }
    }

    /// The round transactions are watched by: the round proposed in, or, once stood down,
    /// the newest round in the DAG (it proposes no more, and the chain goes on).
    fn clock_round(&self) -> u64 {
        if self.stood_down {
            self.round.max(self.highest)
        } else {
            self.round
        }
    }

    /// Whether `v` proposed in one of the last few rounds (everyone counts as live in the
    /// first rounds).
    fn live(&self, v: ValidatorIndex) -> bool {
        let now = self.clock_round();
        if now <= LIVE_ROUNDS {
            return true;
        }
        self.rounds
            .range(now - LIVE_ROUNDS..)
            .any(|(_, slots)| slots.get(usize::from(v.0)).is_some_and(|b| !b.is_empty()))
    }

    /// The first live assignee of `sender`'s transactions from attempt `from` on, other than
    /// `except` (this validator if none is among the next [`ASSIGN_ATTEMPTS`]).
    fn live_assignee(
        &self,
        sender: &[u8; 20],
        from: u64,
        except: Option<ValidatorIndex>,
    ) -> (u64, ValidatorIndex) {
        AsyncBft::first_assignee(&self.committee, sender, from, |v| {
            Some(v) != except && if v == self.me { !self.stood_down } else { self.live(v) }
        })
        .unwrap_or((from, self.me))
    }

    /// Queues `tx` to be proposed here (unless it is queued or committed already); `from` is
    /// the validator that forwarded it.
    fn enqueue(&mut self, d: Digest, tx: Transaction, from: Option<ValidatorIndex>) {
        if self.committed.contains(&d) || self.queued.contains(&d) {
            return;
        }
        let len = tx.payload.len();
        if self.queue.len() >= self.cfg.max_queue
            || self.queued_bytes.saturating_add(len) > self.cfg.max_queue_bytes
        {
            self.faults.queue_full += 1;
            return;
        }
        if let Some(v) = from {
            // A validator's share is twice its stake's share of the committee's, so validators
            // holding less than a third of the stake hold less than two thirds of the queue.
            let Some(stake) = self.committee.validator(v).map(|m| m.stake) else {
                self.faults.share_full += 1;
                return;
            };
            let total = u128::from(self.committee.total_stake()).max(1);
            let share = |most: usize| {
                let s = (most as u128).saturating_mul(2).saturating_mul(u128::from(stake)) / total;
                usize::try_from(s).unwrap_or(usize::MAX).max(1)
            };
            let Some(load) = self.forwarded_load.get_mut(usize::from(v.0)) else {
                self.faults.share_full += 1;
                return;
            };
            if load.0 >= share(self.cfg.max_queue)
                || load.1.saturating_add(len) > share(self.cfg.max_queue_bytes)
            {
                self.faults.share_full += 1;
                return;
            }
            load.0 += 1;
            load.1 += len;
        }
        self.queued.insert(d);
        self.queued_bytes += len;
        self.queue.push_back((d, tx, from));
    }

    /// The block of slot (`author`, `round`) that a block votes for, if any.
    fn vote_of(&self, voter: &Block, round: u64, author: ValidatorIndex) -> Option<Digest> {
        voter.parents.iter().find(|p| p.round == round && p.author == author).map(|p| p.digest)
    }

    fn blocks_of(&self, round: u64) -> impl Iterator<Item = &Arc<Block>> {
        self.rounds
            .get(&round)
            .into_iter()
            .flat_map(|slots| slots.iter().flatten())
            .filter_map(|d| self.blocks.get(d))
    }

    /// Whether `cert` (a block of round `r + 2`) certifies `target` of slot (`author`, `r`).
    fn certifies(&self, cert: &Block, round: u64, author: ValidatorIndex, target: &Digest) -> bool {
        let mut voters = BTreeSet::new();
        let mut stake: Stake = 0;
        for p in cert.parents.iter().filter(|p| p.round == round + 1) {
            if let Some(v) = self.blocks.get(&p.digest) {
                if self.vote_of(v, round, author).as_ref() == Some(target)
                    && voters.insert(v.author)
                {
                    stake += self.stake(v.author);
                }
            }
        }
        stake >= self.quorum()
    }

    /// The digests of the blocks of slot (`author`, `round`) (more than one if it
    /// equivocated).
    fn slot_blocks(&self, round: u64, author: ValidatorIndex) -> Vec<Digest> {
        self.rounds
            .get(&round)
            .and_then(|s| s.get(usize::from(author.0)))
            .cloned()
            .unwrap_or_default()
    }

    fn decide_directly(&self, round: u64, author: ValidatorIndex) -> Decision {
        // Skip: a quorum of round r + 1 authors voted for no block of the slot.
        let mut abstain = BTreeSet::new();
        for v in self.blocks_of(round + 1) {
            if self.vote_of(v, round, author).is_none() {
                abstain.insert(v.author);
            }
        }
        if self.committee.stake_of(&abstain) >= self.quorum() {
            return Decision::Skip;
        }
        let candidates = self.slot_blocks(round, author);
        for target in candidates {
            let mut certifiers = BTreeSet::new();
            for c in self.blocks_of(round + 2) {
                if self.certifies(c, round, author, &target) {
                    certifiers.insert(c.author);
                }
            }
            if self.committee.stake_of(&certifiers) >= self.quorum() {
                return Decision::Commit(target);
            }
        }
        Decision::Undecided
    }

    fn decide_indirectly(
        &self,
        round: u64,
        author: ValidatorIndex,
        later: &BTreeMap<(u64, usize), Decision>,
    ) -> Decision {
        // The anchor: the first slot of a round ≥ r + 3 that is not skipped. With a coin,
        // only wave slots are anchors (a wave slot of round R sits at (R + WAVE_AT, n)):
        // under asynchrony validator slots may stay undecided forever, wave slots do not.
        let anchor = if self.coin_on() {
            let n = self.committee.len();
            later
                .range((round + 3 + WAVE_AT, n)..)
                .filter(|((_, p), _)| *p == n)
                .map(|(_, d)| *d)
                .find(|d| *d != Decision::Skip)
        } else {
            later.range((round + 3, 0)..).map(|(_, d)| *d).find(|d| *d != Decision::Skip)
        };
        let anchor = match anchored(anchor) {
            Ok(a) => a,
            Err(d) => return d,
        };
        // Search the anchor's history down to round r + 2 for a certificate of a slot block.
        let candidates = self.slot_blocks(round, author);
        let mut seen = HashSet::new();
        let mut stack = vec![anchor];
        while let Some(d) = stack.pop() {
            let Some(b) = self.blocks.get(&d) else { continue };
            if b.round == round + 2 {
                if let Some(t) = candidates.iter().find(|t| self.certifies(b, round, author, t)) {
                    return Decision::Commit(*t);
                }
                continue;
            }
            for p in &b.parents {
                if p.round >= round + 2 && seen.insert(p.digest) {
                    stack.push(p.digest);
                }
            }
        }
        Decision::Skip
    }

    /// Whether the asynchronous fallback runs: the committee has a coin (and this is not the
    /// single-leader baseline).
    fn coin_on(&self) -> bool {
        self.committee.coin().is_some() && !self.cfg.single_leader
    }

    /// Whether round `r` has a wave slot.
    fn wave_round(r: u64) -> bool {
        r >= 1 && r.is_multiple_of(COIN_EVERY)
    }

    /// Slots per round in the order of slots: one per validator, and the wave slot of round
    /// `r − WAVE_AT` (position `n`) when there is a coin.
    fn slots_per_round(&self) -> usize {
        self.committee.len() + usize::from(self.coin_on())
    }

    /// The author the coin elects for the wave slot of `round`, once `threshold` valid
    /// shares are in blocks of round `round + COIN_LAG`. The combined signature is checked
    /// against the group key (two pairings); only if that fails are the shares checked one
    /// by one and the bad ones dropped. Any `threshold` valid shares combine to the same
    /// signature, so every validator elects the same author.
    fn elect(&mut self, round: u64) -> Option<ValidatorIndex> {
        if let Some(a) = self.coins.get(&round) {
            return Some(*a);
        }
        let committee = self.committee.clone();
        let keys = committee.coin()?;
        let msg = Block::coin_message(&self.cfg.chain, round);
        let mut raw: Vec<(u16, Digest, [u8; SIGNATURE_LEN])> = self
            .blocks_of(round + COIN_LAG)
            .filter(|b| !self.bad_shares.contains(&b.digest()))
            .filter_map(|b| b.coin.map(|c| (b.author.0, b.digest(), c)))
            .collect();
        raw.sort_by_key(|(a, d, _)| (*a, *d));
        raw.dedup_by_key(|(a, _, _)| *a);
        if raw.len() < keys.threshold {
            return None;
        }
        // Another engine in this process combined it already (the simulator's many).
        if let Some(a) = self.cache.coin(&self.cfg.chain, round) {
            self.coins.insert(round, a);
            return Some(a);
        }
        // Shares are checked to be points of the group only now (see `Block::coin`); one
        // that is not is a bad share, as one that does not verify.
        let mut shares: Vec<(u16, Digest, Signature)> = Vec::with_capacity(raw.len());
        for (a, d, c) in raw {
            match Signature::from_bytes(&c) {
                Ok(sig) => shares.push((a, d, sig)),
                Err(_) => {
                    self.bad_shares.insert(d);
                    self.faults.bad_coin_shares += 1;
                }
            }
        }
        if shares.len() < keys.threshold {
            return None;
        }
        let pick = |shares: &[(u16, Digest, Signature)]| -> Option<Signature> {
            let chosen: Vec<(u16, Signature)> =
                shares.iter().take(keys.threshold).map(|(a, _, c)| (*a, *c)).collect();
            let sig = coin::combine(&chosen).ok()?;
            sig.verify(&keys.group, &msg).is_ok().then_some(sig)
        };
        let sig = match pick(&shares) {
            Some(sig) => sig,
            // Shares are checked in order until `threshold` are valid: any that many give
            // the same signature, so the rest need no pairings (before stop 46 every share
            // of the round was checked, two pairings each, so a faulty validator's bad share
            // among the first made each validator check all n).
            None => {
                let mut valid = Vec::with_capacity(keys.threshold);
                for (a, d, c) in shares {
                    if valid.len() == keys.threshold {
                        break;
                    }
                    let ok = self.good_shares.contains(&d)
                        || keys
                            .shares
                            .get(usize::from(a))
                            .is_some_and(|k| c.verify(k, &msg).is_ok());
                    if ok {
                        self.good_shares.insert(d);
                        valid.push((a, d, c));
                    } else {
                        self.bad_shares.insert(d);
                        self.faults.bad_coin_shares += 1;
                    }
                }
                if valid.len() < keys.threshold {
                    return None;
                }
                pick(&valid)?
            }
        };
        let mut h = blake3::Hasher::new();
        h.update(b"farol/coin-leader/1");
        h.update(&sig.to_bytes());
        let mut word = [0u8; 8];
        word.copy_from_slice(&h.finalize().as_bytes()[..8]);
        let mut point = u64::from_le_bytes(word) % self.committee.total_stake();
        let mut elected = ValidatorIndex(0);
        for (i, v) in self.committee.iter() {
            if point < v.stake {
                elected = i;
                break;
            }
            point -= v.stake;
        }
        self.coins.insert(round, elected);
        self.cache.insert_coin(&self.cfg.chain, round, elected);
        Some(elected)
    }

    /// For each author, the block of `round` that `voter` votes for as a wave voter: the
    /// smallest digest among that author's round-`round` blocks in its history (reached
    /// through any path). One per author per voter: a validator that makes one block per
    /// round votes once per slot.
    fn wave_votes(&self, voter: &Block, round: u64) -> Arc<Vec<Option<Digest>>> {
        let key = (voter.digest(), round);
        if let Some(v) = self.wave_votes.borrow().get(&key) {
            return v.clone();
        }
        let mut votes: Vec<Option<Digest>> = vec![None; self.committee.len()];
        let mut seen = HashSet::new();
        let mut stack: Vec<Digest> =
            voter.parents.iter().filter(|p| p.round >= round).map(|p| p.digest).collect();
        while let Some(d) = stack.pop() {
            if !seen.insert(d) {
                continue;
            }
            let Some(b) = self.blocks.get(&d) else { continue };
            if b.round == round {
                if let Some(v) = votes.get_mut(usize::from(b.author.0)) {
                    if v.is_none_or(|old| d < old) {
                        *v = Some(d);
                    }
                }
                continue;
            }
            stack.extend(b.parents.iter().filter(|p| p.round >= round).map(|p| p.digest));
        }
        let votes = Arc::new(votes);
        self.wave_votes.borrow_mut().insert(key, votes.clone());
        votes
    }

    fn wave_vote(&self, voter: &Block, round: u64, author: ValidatorIndex) -> Option<Digest> {
        self.wave_votes(voter, round).get(usize::from(author.0)).copied().flatten()
    }

    /// Whether `cert` (a block of round `R + VOTE_LAG + 1`) certifies `target` of wave slot
    /// (`author`, `R`): its parents of round `R + VOTE_LAG` that vote for `target` hold a
    /// quorum.
    fn wave_certifies(
        &self,
        cert: &Block,
        round: u64,
        author: ValidatorIndex,
        target: &Digest,
    ) -> bool {
        let mut voters = BTreeSet::new();
        let mut stake: Stake = 0;
        for p in cert.parents.iter().filter(|p| p.round == round + VOTE_LAG) {
            if let Some(v) = self.blocks.get(&p.digest) {
                if self.wave_vote(v, round, author).as_ref() == Some(target)
                    && voters.insert(v.author)
                {
                    stake += self.stake(v.author);
                }
            }
        }
        stake >= self.quorum()
    }

    /// Decides the wave slot of `round` (its author elected): commit a block certified by
    /// blocks of round `R + VOTE_LAG + 1` holding a quorum; skip if voters of round
    /// `R + VOTE_LAG` holding a quorum reach no block of the slot; otherwise by the first
    /// later wave slot, of a round ≥ `R + VOTE_LAG + 2`, that is not skipped: if it
    /// commits, the block of the slot its history certifies (or skip if none).
    fn decide_wave(
        &self,
        round: u64,
        author: ValidatorIndex,
        later: &BTreeMap<(u64, usize), Decision>,
    ) -> Decision {
        let mut abstain = BTreeSet::new();
        for v in self.blocks_of(round + VOTE_LAG) {
            if self.wave_vote(v, round, author).is_none() {
                abstain.insert(v.author);
            }
        }
        if self.committee.stake_of(&abstain) >= self.quorum() {
            return Decision::Skip;
        }
        let candidates = self.slot_blocks(round, author);
        for target in &candidates {
            let mut certifiers = BTreeSet::new();
            for c in self.blocks_of(round + VOTE_LAG + 1) {
                if self.wave_certifies(c, round, author, target) {
                    certifiers.insert(c.author);
                }
            }
            if self.committee.stake_of(&certifiers) >= self.quorum() {
                return Decision::Commit(*target);
            }
        }
        let n = self.committee.len();
        let anchor = later
            .range((round + VOTE_LAG + 2 + WAVE_AT, n)..)
            .filter(|((_, p), _)| *p == n)
            .map(|(_, d)| *d)
            .find(|d| *d != Decision::Skip);
        let anchor = match anchored(anchor) {
            Ok(a) => a,
            Err(d) => return d,
        };
        let cert_round = round + VOTE_LAG + 1;
        let mut seen = HashSet::new();
        let mut stack = vec![anchor];
        while let Some(d) = stack.pop() {
            let Some(b) = self.blocks.get(&d) else { continue };
            if b.round == cert_round {
                if let Some(t) =
                    candidates.iter().find(|t| self.wave_certifies(b, round, author, t))
                {
                    return Decision::Commit(*t);
                }
                continue;
            }
            for p in &b.parents {
                if p.round >= cert_round && seen.insert(p.digest) {
                    stack.push(p.digest);
                }
            }
        }
        Decision::Skip
    }

    /// Decides what can be decided and commits the decided prefix of slots.
    ///
    /// Coins are combined lazily. A first pass decides wave slots only where the coin is
    /// known; the others are [`Decision::Lazy`]. Reaching one, it checks whether the slot
    /// would change nothing whoever the coin elected: for every author the slot is skipped
    /// or commits a block already ordered. Then the slot is passed without the coin. That
    /// is the good case: a wave slot's block was ordered by its own validator slot. If a
    /// slot needs a coin (a lazy slot that matters, or a slot whose anchor is one), a second
    /// pass combines every coin whose shares are in and decides as if all had been combined
    /// from the start. Decisions are the same for every author, so the order committed is
    /// the one eager coins give.
    fn try_commit(&mut self, out: &mut Vec<Action>) {
        if self.cfg.eager_coins || self.commit_pass(false, out) == Pass::NeedsCoins {
            self.commit_pass(true, out);
        }
    }

    fn commit_pass(&mut self, elect_all: bool, out: &mut Vec<Action>) -> Pass {
        let n = self.committee.len();
        let slots = self.slots_per_round();
        let (r0, p0) = self.next_slot;
        if self.highest < r0 + 1 {
            return Pass::Done;
        }
        let top = self.highest - 1;
        // The coins the wave slots in range need: the ones combined before, and in the
        // second pass every one whose shares are in (the rest stay undecided).
        let mut elected: BTreeMap<u64, ValidatorIndex> = BTreeMap::new();
        if self.coin_on() {
            for r in r0.max(WAVE_AT + 1)..=top {
                let wave = r - WAVE_AT;
                if !AsyncBft::wave_round(wave) {
                    continue;
                }
                let coin = match self.coins.get(&wave) {
                    Some(a) => Some(*a),
                    None if elect_all && wave + COIN_LAG <= self.highest => self.elect(wave),
                    None => None,
                };
                if let Some(a) = coin {
                    elected.insert(wave, a);
                }
            }
        }
        let mut decisions: BTreeMap<(u64, usize), Decision> = BTreeMap::new();
        for r in (r0..=top).rev() {
            for p in (0..slots).rev() {
                if r == r0 && p < p0 {
                    continue;
                }
                if p == n {
                    // The wave slot of round r − WAVE_AT (none: nothing to decide).
                    let wave = r.checked_sub(WAVE_AT).filter(|w| AsyncBft::wave_round(*w));
                    let d = match wave {
                        None => Decision::Skip,
                        Some(w) => match elected.get(&w) {
                            Some(a) => self.decide_wave(w, *a, &decisions),
                            None if elect_all => Decision::Undecided,
                            None => Decision::Lazy,
                        },
                    };
                    decisions.insert((r, p), d);
                    continue;
                }
                if self.cfg.single_leader && p != 0 {
                    decisions.insert((r, p), Decision::Skip);
                    continue;
                }
                let author = self.slot_author(r, p);
                let mut d = self.decide_directly(r, author);
                if d == Decision::Undecided {
                    d = self.decide_indirectly(r, author, &decisions);
                }
                decisions.insert((r, p), d);
            }
        }
        for ((r, p), d) in &decisions {
            let (r, p) = (*r, *p);
            let committed = match *d {
                Decision::Undecided => break,
                Decision::NeedsCoin => return Pass::NeedsCoins,
                Decision::Lazy => {
                    let wave = r - WAVE_AT;
                    let moot = self.committee.iter().all(|(a, _)| {
                        match self.decide_wave(wave, a, &decisions) {
                            Decision::Skip => true,
                            Decision::Commit(digest) => self.ordered.contains(&digest),
                            _ => false,
                        }
                    });
                    if !moot {
                        return Pass::NeedsCoins;
                    }
                    false
                }
                Decision::Skip => false,
                // A wave slot's block is usually ordered already, by its own slot's commit
                // or a later one's history: then there is nothing to add.
                Decision::Commit(digest) if p == n && self.ordered.contains(&digest) => false,
                Decision::Commit(digest) => self.commit(digest, out),
            };
            self.next_slot = if p + 1 == slots { (r + 1, 0) } else { (r, p + 1) };
            let every = self.cfg.checkpoint_every;
            if committed && every > 0 && self.height.is_multiple_of(every) {
                self.take_checkpoint(out);
            }
        }
        Pass::Done
    }

    /// The stake-weighted median of the times of `block`'s parents: more than two thirds of
    /// the stake stands behind them, so Byzantine validators alone cannot move it outside
    /// the honest validators' clocks. A block without parents (round 1) gives 0.
    fn median_parent_time(&self, block: &Block) -> u64 {
        let mut times: Vec<(u64, u64)> = block
            .parents
            .iter()
            .filter(|p| p.round + 1 == block.round)
            .filter_map(|p| {
                let b = self.blocks.get(&p.digest)?;
                let stake = self.committee.validator(b.author)?.stake;
                Some((b.time_ms, stake))
            })
            .collect();
        times.sort_unstable();
        let total: u64 = times.iter().map(|t| t.1).sum();
        let mut acc = 0;
        for (t, stake) in times {
            acc += stake;
            if 2 * acc >= total {
                return t;
            }
        }
        0
    }

    /// Orders `leader` and its history not ordered before; false if the leader is unknown.
    fn commit(&mut self, leader: Digest, out: &mut Vec<Action>) -> bool {
        let Some(lb) = self.blocks.get(&leader).cloned() else { return false };
        let floor = lb.round.saturating_sub(self.cfg.gc_depth);
        let edge_floor = floor.max(self.floor);
        let mut found = Vec::new();
        let mut stack = vec![leader];
        let mut seen = HashSet::new();
        seen.insert(leader);
        while let Some(d) = stack.pop() {
            if self.ordered.contains(&d) {
                continue;
            }
            let Some(b) = self.blocks.get(&d) else { continue };
            if b.round < floor {
                continue;
            }
            found.push(b.clone());
            // A reference is followed by the round it claims, as `accept` fetched by it, and
            // only at or above the garbage-collection floor too: every validator's floor
            // when it added the block was at most the floor it has now, at this commit, which
            // is the same at every validator (it follows from the commits before), so each
            // fetched every parent followed here. Before stop 37 every reference was
            // followed and a held block kept by its real round: a Byzantine block naming a
            // recent block of its author's under an old round (below some validators'
            // floors, above others') had that parent fetched only where the claim was at or
            // above the floor, and those validators alone ordered it. (The real round counts
            // too, above: a block below the floor may be gone where floors are higher.)
            for p in &b.parents {
                if p.round >= edge_floor && seen.insert(p.digest) {
                    stack.push(p.digest);
                }
            }
        }
        found.sort_by_key(|b| (b.round, b.author, b.digest()));
        let mut transactions = Vec::new();
        for b in &found {
            self.ordered.insert(b.digest());
            // Blocks of its key below its first proposal since the start are an earlier
            // life's, or another process's (which a block above it makes it stand down for).
            if b.author == self.me && self.signed_from.is_some_and(|first| b.round >= first) {
                self.own_ordered = self.own_ordered.max(b.round);
            }
            for (t, d) in b.transactions.iter().zip(b.transaction_digests()) {
                let d = *d;
                if self.committed.insert(d) {
                    Arc::make_mut(self.committed_at.entry(lb.round).or_default()).push(d);
                    self.watched.remove(&d);
                    transactions.push(t.clone());
                }
            }
        }
        self.height += 1;
        self.last_commit_round = self.last_commit_round.max(lb.round);
        self.progress_tick = self.ticks;
        self.last_commit_ms = self.last_commit_ms.max(self.median_parent_time(&lb));
        out.push(Action::Commit(Committed {
            height: self.height,
            round: lb.round,
            timestamp_ms: self.last_commit_ms,
            leader: lb.author,
            leader_digest: leader,
            transactions,
            proposals: found.len(),
            checkpoint: None,
        }));
        self.collect_garbage();
        true
    }

    /// Drops blocks below the ordering floor and transaction digests past the dedup window.
    fn collect_garbage(&mut self) {
        let floor = self.last_commit_round.saturating_sub(self.cfg.gc_depth);
        // Decisions still need the rounds of undecided slots (a wave slot's is WAVE_AT
        // rounds below its place in the order).
        let floor = floor.min(self.next_slot.0.saturating_sub(WAVE_AT));
        if floor > self.floor {
            let keep = self.rounds.split_off(&floor);
            let mut orphaned = Vec::new();
            for (_, slots) in std::mem::replace(&mut self.rounds, keep) {
                for d in slots.into_iter().flatten() {
                    let block = self.blocks.remove(&d);
                    let was_ordered = self.ordered.remove(&d);
                    // An own block that fell below the floor unordered never will be: its
                    // transactions go back into the queue.
                    if let Some(b) = block.as_ref().filter(|b| b.author == self.me && !was_ordered)
                    {
                        let digests = b.transaction_digests().iter().copied();
                        orphaned.extend(digests.zip(b.transactions.iter().cloned()));
                    }
                    // A block a kept block names under a round the floor has not passed is
                    // kept aside (see `raised`), until the floor is `gc_depth` rounds past
                    // that claim.
                    if let (Some(b), Some(claim)) = (block, self.raised.remove(&d)) {
                        if claim >= floor {
                            self.gone.insert(d, (b, claim));
                        }
                    }
                }
            }
            for (d, t) in orphaned {
                self.enqueue(d, t, None);
            }
            self.floor = floor;
            self.coins = self.coins.split_off(&floor);
            self.bad_shares.retain(|d| self.blocks.contains_key(d));
            self.good_shares.retain(|d| self.blocks.contains_key(d));
            self.wave_votes.borrow_mut().retain(|(_, r), _| *r >= floor);
            let load = &mut self.pending_load;
            let ordered = &mut self.ordered;
            self.pending.retain(|d, h| {
                let keep = h.block.round >= floor;
                if !keep {
                    unload(load, h);
                    // An ordered block still held here (a validator that rejoined from a
                    // snapshot and never got one of its parents) leaves the ordered set as
                    // the others' copy does when it leaves their DAG: otherwise it stayed
                    // for good, and this validator's checkpoint digests differed from
                    // theirs (since stop 41; found by a review).
                    ordered.remove(d);
                }
                keep
            });
            // What the rest wait for, counted again against the new floor: parents claimed
            // below it are no longer waited for (a held block's made-up parents would
            // otherwise stay here for good, and a block whose reference claimed a round
            // above its parent's real one would wait for a parent every validator dropped,
            // and with it every later block of each validator that voted for it). A held
            // block left waiting for nothing is released, in digest order.
            let mut held: Vec<Digest> = self.pending.keys().copied().collect();
            held.sort_unstable();
            self.waiting.clear();
            for d in held {
                let Some(h) = self.pending.get_mut(&d) else { continue };
                h.left = 0;
                for p in h.block.parents.iter() {
                    if p.round >= floor
                        && !self.blocks.contains_key(&p.digest)
                        && !self.gone.contains_key(&p.digest)
                    {
                        self.waiting.entry(p.digest).or_default().push(d);
                        h.left += 1;
                    }
                }
                if h.left == 0 {
                    if let Some(h) = self.pending.remove(&d) {
                        unload(&mut self.pending_load, &h);
                        self.released.push(h.block);
                    }
                }
            }
            let waiting = &self.waiting;
            self.asked.retain(|d, _| waiting.contains_key(d));
            let depth = self.cfg.gc_depth;
            self.gone.retain(|_, (_, at)| at.saturating_add(depth) > floor);
            let blocks = &self.blocks;
            self.raised.retain(|d, claim| *claim >= floor && blocks.contains_key(d));
            self.tips = self.tips.split_off(&(floor, ValidatorIndex(0)));
            self.extra_versions = self.extra_versions.split_off(&(floor, ValidatorIndex(0)));
        }
        let dedup_floor = self.last_commit_round.saturating_sub(self.cfg.gc_depth * DEDUP_DEPTHS);
        let keep = self.committed_at.split_off(&dedup_floor);
        for (_, ds) in std::mem::replace(&mut self.committed_at, keep) {
            for d in ds.iter() {
                self.committed.remove(d);
            }
        }
        self.round_hashes = self.round_hashes.split_off(&dedup_floor);
    }

    fn on_messages(&mut self, batch: Vec<(ValidatorIndex, Bytes)>, out: &mut Vec<Action>) {
        let mut to_check: Vec<(ValidatorIndex, Block)> = Vec::new();
        for (from, bytes) in batch {
            let msg = match Message::decode(&bytes) {
                Ok(m) => m,
                Err(_) => {
                    self.faults.malformed += 1;
                    continue;
                }
            };
            match msg {
                Message::Block(b) => {
                    let b = *b;
                    let d = b.digest();
                    if self.blocks.contains_key(&d) || self.pending.contains_key(&d) {
                        // Checked when it came first: a peer that restarted too resends
                        // its newest, which this validator's log may hold.
                        self.hear(from, &b);
                        continue;
                    }
                    if !AsyncBft::within_proposal_limits(&b) || !self.well_formed(&b) {
                        self.faults.invalid += 1;
                        continue;
                    }
                    to_check.push((from, b));
                }
                Message::Request(ds) => {
                    // At most MAX_ANSWER bytes per request, so a small request cannot make
                    // this validator send much more, and only while the sender's answer
                    // budget lasts, so many requests cannot either.
                    let mut sent = 0usize;
                    for d in ds {
                        let Some(budget) = self.answer_budget.get_mut(usize::from(from.0)) else {
                            break;
                        };
                        if *budget <= 0 {
                            self.faults.answers_withheld += 1;
                            break;
                        }
                        if let Some(b) =
                            self.blocks.get(&d).or_else(|| self.gone.get(&d).map(|g| &g.0))
                        {
                            let bytes = b.encoded();
                            sent += bytes.len();
                            if sent > MAX_ANSWER && sent != bytes.len() {
                                break;
                            }
                            *budget = budget.saturating_sub(bytes.len() as i64);
                            self.send_bytes(out, Target::One(from), bytes);
                        }
                    }
                }
                Message::Transactions(txs) => {
                    for t in txs {
                        // Its own copy: a slice would keep the whole frame (up to the
                        // network's frame limit) alive for as long as it waits.
                        let t = Transaction {
                            sender: t.sender,
                            payload: Bytes::copy_from_slice(&t.payload),
                        };
                        self.enqueue(t.digest(), t, Some(from));
                    }
                }
            }
        }
        for (from, b) in self.verified(to_check) {
            self.hear(from, &b);
            self.accept(Arc::new(b), Some(from), out);
        }
    }

    /// A restarted validator hears from a peer by a block of the peer's own that the peer
    /// sent (the network authenticated it), whose signature verified, that is the newest
    /// of the peer's it knows of (an answer to a request for an older one says nothing of
    /// the round the peer is in now), once the block is in the DAG: everything it builds
    /// on is then here, this validator's own old blocks among them, which the own-block
    /// rule needs to have seen (before, a peer was heard as its block came, and with one
    /// of two heard behind, a stale peer or a Byzantine one resending an old block, the
    /// engine proposed at once, before the other's parents came; found by a review).
    fn hear(&mut self, from: ValidatorIndex, b: &Block) {
        if b.author != from || from == self.me || self.restarted.is_none() {
            return;
        }
        if self.author_rounds.get(usize::from(from.0)).is_some_and(|r| *r > b.round) {
            return;
        }
        let d = b.digest();
        if self.blocks.contains_key(&d) {
            self.heard_from(from);
        } else if let Some(r) = self.restarted.as_mut() {
            if r.heard.contains(&from) {
                return;
            }
            let c = r.coming.entry(from).or_default();
            if c.len() == COMING_PER_PEER {
                c.pop_front();
            }
            c.push_back(d);
        }
    }

    /// A block of round `round` signed with this validator's key that this engine did not
    /// sign (not in its log, not made here) came from the others: from a life its log
    /// lost, or from another process signing with its key now. Above the round of its
    /// first proposal since it started it can only be the second (or the guard's residual,
    /// an old block it learned of too late): it stands down (a copy started from its
    /// directory would sign the rounds it signs). In that round itself it may be its old
    /// life's block, which its log lost: if it is the other process's, that one stands
    /// down at this engine's block (above its own first), and one of the two goes on.
    fn own_block_elsewhere(&mut self, round: u64, out: &mut Vec<Action>) {
        if round > self.round {
            self.faults.own_blocks_elsewhere += 1;
        }
        if let Some(r) = self.restarted.as_mut() {
            r.own_news_at = self.ticks;
        }
        if self.signed_from.is_some_and(|first| round > first) {
            self.faults.other_signer += 1;
            if !self.stood_down && !self.cfg.fault_ignore_other_signer {
                self.stand_down(out);
            }
        }
    }

    /// Proposes no more, and hands what is queued here to the validators next in line, as
    /// a validator that is down is passed over: watched like forwarded transactions, they
    /// move on if those leave them out ([`AsyncBft::hand_on`]).
    fn stand_down(&mut self, out: &mut Vec<Action>) {
        self.stood_down = true;
        self.hand_on(out);
    }

    /// What a validator that stood down does in place of proposing, after each step: the
    /// transactions in its queue (forwarded to it by others, back from its own blocks never
    /// ordered, or with no other assignee) go to the validators next in line, and, as its
    /// DAG moves on, watched ones whose assignee left them out or went quiet move on again.
    fn hand_on(&mut self, out: &mut Vec<Action>) {
        if !self.queue.is_empty() {
            let queued: Vec<Transaction> = self.queue.drain(..).map(|(_, t, _)| t).collect();
            self.queued.clear();
            self.queued_bytes = 0;
            for load in &mut self.forwarded_load {
                *load = (0, 0);
            }
            self.on_transactions(queued, out);
        }
        if self.highest > self.handed_on_at {
            self.handed_on_at = self.highest;
            self.reassign(out);
        }
    }

    /// Counts `from` as heard (see [`AsyncBft::hear`]).
    fn heard_from(&mut self, from: ValidatorIndex) {
        let Some(mut r) = self.restarted.take() else { return };
        r.heard.insert(from);
        if r.heard_at.is_none() && self.heard_enough(&r.heard) {
            r.heard_at = Some(self.ticks);
        }
        self.restarted = Some(r);
    }

    /// This validator's newest block, to send again: from the DAG, or held for its parents
    /// (a restarted validator whose newest block waits for parents still announces itself,
    /// and the others hear it).
    fn own_newest(&self) -> Option<Bytes> {
        let d = self.last_own?.digest;
        let b = self.blocks.get(&d).or_else(|| self.pending.get(&d).map(|h| &h.block))?;
        Some(b.encoded())
    }

    /// The blocks whose signatures verify: those already in the cache, then the rest, each
    /// checked against its author's Ed25519 key.
    fn verified(&mut self, blocks: Vec<(ValidatorIndex, Block)>) -> Vec<(ValidatorIndex, Block)> {
        let mut good = Vec::with_capacity(blocks.len());
        for (from, b) in blocks {
            if self.cache.contains(&self.cfg.chain, &b) {
                good.push((from, b));
                continue;
            }
            let Some(v) = self.committee.validator(b.author) else {
                self.faults.invalid += 1;
                continue;
            };
            let message = Block::signing_message(&self.cfg.chain, &b.digest());
            if v.block_key.verify(&message, &b.signature).is_ok() {
                self.cache.insert(&self.cfg.chain, &b);
                good.push((from, b));
            } else {
                self.faults.bad_signatures += 1;
            }
        }
        good
    }

    fn on_transactions(&mut self, txs: Vec<Transaction>, out: &mut Vec<Action>) {
        let mut forward: BTreeMap<ValidatorIndex, Vec<Transaction>> = BTreeMap::new();
        for t in txs {
            let d = t.digest();
            if self.committed.contains(&d) || self.watched.contains_key(&d) {
                continue;
            }
            if self.watched.len() >= self.cfg.max_queue {
                self.faults.queue_full += 1;
                continue;
            }
            let (attempt, to) = self.live_assignee(&t.sender, 0, None);
            if to == self.me {
                self.enqueue(d, t, None);
            } else {
                forward.entry(to).or_default().push(t.clone());
                let now = self.clock_round();
                let deadline = now + self.cfg.reassign_rounds;
                self.watch_seq += 1;
                let w = Watch { tx: t, attempt, deadline, since: now, seq: self.watch_seq };
                self.watched.insert(d, w);
            }
        }
        for (to, txs) in forward {
            self.forward(out, to, txs);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        self.ticks += 1;
        for b in &mut self.answer_budget {
            *b = b.saturating_add(ANSWER_PER_TICK).min(ANSWER_BURST);
        }
        // Resend when stalled, backing off (doubling up to 32 times `resend_ticks`) while the
        // stall lasts, so an overloaded network is not loaded further with repeats.
        let interval = u64::from(self.cfg.resend_ticks) << self.resends.min(5);
        if self.ticks - self.progress_tick >= interval {
            self.progress_tick = self.ticks;
            self.resends += 1;
            if let Some(bytes) = self.own_newest() {
                self.send_bytes(out, Target::All, bytes);
            }
            let missing: Vec<Digest> = self
                .waiting
                .keys()
                .filter(|d| !self.pending.contains_key(*d))
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for chunk in missing.chunks(MAX_REQUEST) {
                self.send(out, Target::All, &Message::Request(chunk.to_vec()));
            }
        }
    }
}

impl Consensus for AsyncBft {
    fn fault_counts(&self) -> Vec<(&'static str, u64)> {
        let f = &self.faults;
        vec![
            ("malformed", f.malformed),
            ("invalid", f.invalid),
            ("bad_signatures", f.bad_signatures),
            ("queue_full", f.queue_full),
            ("share_full", f.share_full),
            ("pending_full", f.pending_full),
            ("versions_dropped", f.versions_dropped),
            ("bad_coin_shares", f.bad_coin_shares),
            ("answers_withheld", f.answers_withheld),
            ("equivocators", f.equivocators.len() as u64),
            ("own_blocks_elsewhere", f.own_blocks_elsewhere),
            ("other_signer", f.other_signer),
        ]
    }

    fn start(&mut self, out: &mut Vec<Action>) {
        if self.round == 0 {
            let key = &self.key;
            let block = Block::new(
                &self.cfg.chain,
                self.me,
                1,
                self.clock_ms,
                Vec::new(),
                Vec::new(),
                |m| key.sign(m),
            );
            self.cache.insert(&self.cfg.chain, &block);
            self.round = 1;
            self.last_own = Some(block.reference());
            let bytes = block.encoded();
            self.insert(Arc::new(block), out);
            self.send_bytes(out, Target::All, bytes);
        } else if let Some(bytes) = self.own_newest() {
            self.send_bytes(out, Target::All, bytes);
        }
        if self.maybe_propose(out) {
            self.reassign(out);
        }
    }

    fn handle(&mut self, input: Input, out: &mut Vec<Action>) {
        self.handle_first(input, out);
        self.finish(out);
    }

    /// The input, then the proposal it allows: the next round waits for that, and nothing
    /// a proposal holds depends on this step's commits (a queued transaction committed
    /// meanwhile through another validator's block is still ordered once).
    fn handle_first(&mut self, input: Input, out: &mut Vec<Action>) {
        match input {
            Input::Messages(batch) => self.on_messages(batch, out),
            Input::Transactions(txs) => self.on_transactions(txs, out),
            Input::Tick => self.on_tick(out),
        }
        self.proposed |= self.maybe_propose(out);
    }

    /// Commits, a proposal they allow, reassignment (which needs this step's commits), and
    /// the coin share of the next proposal, signed ahead.
    fn finish(&mut self, out: &mut Vec<Action>) {
        self.commit_all(out);
        self.proposed |= self.maybe_propose(out);
        if std::mem::take(&mut self.proposed) {
            self.reassign(out);
            self.prepare_share();
        } else if self.stood_down {
            self.hand_on(out);
        }
    }

    fn round(&self) -> u64 {
        self.round
    }

    fn seen_round(&self) -> u64 {
        self.highest_seen.max(self.round)
    }

    fn own_ordered_round(&self) -> u64 {
        self.own_ordered
    }

    fn signed_round(&self) -> u64 {
        self.author_rounds.get(usize::from(self.me.0)).copied().unwrap_or(0).max(self.round)
    }

    fn own_unordered_blocks(&self) -> Vec<Bytes> {
        let me = usize::from(self.me.0);
        let mut own = Vec::new();
        for slots in self.rounds.values() {
            for d in slots.get(me).into_iter().flatten() {
                if let Some(b) = self.blocks.get(d).filter(|_| !self.ordered.contains(d)) {
                    own.push(b.encoded());
                }
            }
        }
        own
    }

    fn adopt_own_blocks(&mut self, blocks: Vec<Bytes>, out: &mut Vec<Action>) {
        let replaying = std::mem::replace(&mut self.replaying, true);
        for bytes in blocks {
            let Ok(Message::Block(b)) = Message::decode(&bytes) else { continue };
            if b.author != self.me || !self.well_formed(&b) {
                continue;
            }
            let b: Arc<Block> = Arc::from(b);
            self.round = self.round.max(b.round);
            if self.last_own.is_none_or(|o| o.round < b.round) {
                self.last_own = Some(b.reference());
            }
            out.push(Action::Persist(bytes));
            self.accept(b, None, out);
            self.commit_all(out);
        }
        self.replaying = replaying;
    }

    fn held_transactions(&self) -> Vec<Transaction> {
        let mut out = Vec::new();
        let mut taken = HashSet::new();
        let mut take = |d: &Digest, t: &Transaction, out: &mut Vec<Transaction>| {
            if !self.committed.contains(d) && taken.insert(*d) {
                out.push(t.clone());
            }
        };
        // Its own unordered blocks first, oldest round first: they were given before what
        // still waits in the queue. (A block below the floor left the DAG and its
        // transactions went back into the queue.)
        let me = usize::from(self.me.0);
        for slots in self.rounds.values() {
            for d in slots.get(me).into_iter().flatten() {
                let Some(b) = self.blocks.get(d).filter(|_| !self.ordered.contains(d)) else {
                    continue;
                };
                for (d, t) in b.transaction_digests().iter().zip(&b.transactions) {
                    take(d, t, &mut out);
                }
            }
        }
        for (d, t, _) in &self.queue {
            take(d, t, &mut out);
        }
        let mut watched: Vec<_> = self.watched.iter().collect();
        watched.sort_by_key(|(_, w)| w.seq);
        for (d, w) in watched {
            take(d, &w.tx, &mut out);
        }
        out
    }

    fn set_time(&mut self, unix_ms: u64) {
        self.clock_ms = unix_ms;
    }

    fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{block_keys, members};

    /// The network readers' precheck keeps a block only when its author's key signed it for
    /// this chain (an engine sharing the cache then takes it without checking it again, and
    /// checks anything else itself); garbage and other messages are passed over.
    #[test]
    fn a_precheck_keeps_only_blocks_their_authors_signed() {
        let committee = Committee::new(members(4, 1)).unwrap_or_else(|e| panic!("{e}"));
        let ks = block_keys(4);
        let chain = [5u8; 32];
        let block = |chain: &[u8; 32], time: u64, key: &ed25519::SigningKey| {
            Block::new(chain, ValidatorIndex(1), 1, time, vec![], vec![], |m| key.sign(m))
        };
        let good = block(&chain, 0, &ks[1]);
        let forged = block(&chain, 1, &ks[2]);
        let elsewhere = block(&[6; 32], 2, &ks[1]);
        let cache = SignatureCache::default();
        for b in [&good, &forged, &elsewhere] {
            cache.precheck(&committee, &chain, &Message::Block(Box::new(b.clone())).encode());
        }
        let other = Message::Request(vec![[1; 32]]).encode();
        for junk in [Bytes::new(), Bytes::from_static(&[1]), Bytes::from_static(&[4, 0, 1]), other]
        {
            cache.precheck(&committee, &chain, &junk);
        }
        assert!(cache.contains(&chain, &good), "a block its author signed is kept");
        assert!(!cache.contains(&chain, &forged), "a block another key signed is not");
        assert!(!cache.contains(&chain, &elsewhere), "a block signed for another chain is not");
        // Checked under another chain's name, a block is not taken as checked for this one.
        let misnamed = SignatureCache::default();
        let other = [6u8; 32];
        misnamed.precheck(
            &committee,
            &other,
            &Message::Block(Box::new(elsewhere.clone())).encode(),
        );
        assert!(misnamed.contains(&other, &elsewhere) && !misnamed.contains(&chain, &elsewhere));
    }
}
