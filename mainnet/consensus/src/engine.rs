//! The interface every consensus engine offers its driver: a deterministic state machine fed
//! with inputs (messages, transactions, ticks) that answers with actions (messages to send,
//! bytes to persist, committed blocks).
//!
//! AsyncBFT implements it for the mainnet; the SPN framework's PoA, PBFT and PoS engines are
//! meant to implement the same trait, so one driver (the simulator, or the node over QUIC)
//! runs any of them. An engine does no I/O, reads no clock, spawns nothing and draws no
//! randomness: the same inputs in the same order give the same actions.

use bytes::Bytes;

use crate::committee::ValidatorIndex;

/// A transaction as consensus sees it: an opaque payload and the account that sent it. The
/// account decides which validator proposes it (so one sender's transactions stay in order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transaction {
    /// The sending account (an Ethereum address on the mainnet).
    pub sender: [u8; 20],
    /// The encoded transaction.
    pub payload: Bytes,
}

impl Transaction {
    /// The transaction's identity in consensus: `blake3(sender || payload)`. Two
    /// transactions with the same digest are the same transaction; it is committed at most
    /// once within the rounds an engine remembers commits for (AsyncBFT: `4 × gc_depth`
    /// rounds). A faulty validator may propose one older than that again, and it commits
    /// again: the node's execution refuses its used nonce.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.sender);
        h.update(&self.payload);
        *h.finalize().as_bytes()
    }
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every other validator.
    All,
    /// One validator.
    One(ValidatorIndex),
}

/// A block of ordered transactions, the same at every honest validator for one height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Position in the chain of commits, from 1.
    pub height: u64,
    /// The round of the block whose commit produced this one.
    pub round: u64,
    /// Its author.
    pub leader: ValidatorIndex,
    /// Its digest.
    pub leader_digest: [u8; 32],
    /// The block's time (Unix milliseconds): derived from the proposers' clocks as the engine
    /// defines, never below the previous commit's.
    pub timestamp_ms: u64,
    /// The transactions, in order, none committed within the rounds the engine remembers
    /// (see [`Transaction::digest`]).
    pub transactions: Vec<Transaction>,
    /// How many proposals this commit orders (the leader's and the ones it builds on that
    /// were not ordered before).
    pub proposals: usize,
    /// The digest of the engine's checkpoint right after this commit, when it took one
    /// (AsyncBFT: every `checkpoint_every` commits). Every honest validator has the same.
    pub checkpoint: Option<[u8; 32]>,
}

/// What an engine asks its driver to do, in order.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send `bytes` to `to`.
    Send {
        /// The recipient(s).
        to: Target,
        /// The encoded message.
        bytes: Bytes,
    },
    /// Append `bytes` to the engine's log, durable before any later `Send` or `Commit`. On
    /// a restart the engine is rebuilt from these records (see the engine's `recover`).
    Persist(Bytes),
    /// A block is committed.
    Commit(Committed),
}

/// Something happened that an engine reacts to.
#[derive(Clone, Debug)]
pub enum Input {
    /// Messages from other validators (the driver passes what has queued up, several at
    /// once, so the engine decides once per batch).
    Messages(Vec<(ValidatorIndex, Bytes)>),
    /// Transactions submitted to this validator.
    Transactions(Vec<Transaction>),
    /// Time passed: the driver ticks at a fixed period. Engines use ticks only for
    /// performance (how long to wait for stragglers, when to resend), never for safety.
    Tick,
}

/// A consensus engine: a deterministic state machine.
pub trait Consensus: Send {
    /// Starts the engine (the first proposal). Called once, before any input.
    fn start(&mut self, out: &mut Vec<Action>);

    /// Reacts to `input`, appending what to do to `out`.
    fn handle(&mut self, input: Input, out: &mut Vec<Action>);

    /// [`Consensus::handle`] in two parts, for a driver that carries out the first part's
    /// actions before the second's (and may ask for the second while the first part's
    /// records are synced): this part is what other validators wait for (the engine's next
    /// proposal), [`Consensus::finish`] the rest (ordering commits, housekeeping). Together
    /// they do exactly what `handle` does; the driver gives no input in between. By default
    /// the first part is all of it.
    fn handle_first(&mut self, input: Input, out: &mut Vec<Action>) {
        self.handle(input, out);
    }

    /// The rest of the last [`Consensus::handle_first`].
    fn finish(&mut self, out: &mut Vec<Action>) {
        let _ = out;
    }

    /// The highest round this engine has proposed in (engines without rounds report their
    /// view or height).
    fn round(&self) -> u64;

    /// The driver's clock, in Unix milliseconds, given before inputs (and before `start`).
    /// Engines stamp their proposals with it; it never decides safety. A driver that never
    /// calls it leaves every time at 0 (the simulator gives each validator a skewed clock).
    fn set_time(&mut self, unix_ms: u64) {
        let _ = unix_ms;
    }

    /// The engine's newest checkpoint with what a validator needs to rejoin from it
    /// ([`Snapshot`](crate::Snapshot)); engines without checkpoints have none.
    fn snapshot(&self) -> Option<std::sync::Arc<crate::Snapshot>> {
        None
    }

    /// Counters of what the engine refused or dropped (malformed messages, invalid blocks,
    /// full queues…), by name, for the driver to publish. They start at 0 with the engine.
    fn fault_counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The highest round the engine saw validators of more than a third of the stake reach
    /// (at least one honest one did): how far ahead the others are. An engine that does
    /// not track it answers its own round.
    fn seen_round(&self) -> u64 {
        self.round()
    }

    /// The highest round of a block signed with this validator's key that the engine knows
    /// of: its own proposals, and blocks of its key that came from elsewhere (an earlier
    /// life's, a copy's). A driver that replaces the engine (a rejoin from a snapshot) keeps
    /// the new one from proposing in or below it. Engines that do not track the others'
    /// answer their round.
    fn signed_round(&self) -> u64 {
        self.round()
    }

    /// The highest round of a block this engine proposed (since it started) that a commit
    /// ordered, 0 before the first: while the others' blocks are ordered and its own are
    /// not, they do not hear it, or it does not propose. Engines that do not track it
    /// answer 0.
    fn own_ordered_round(&self) -> u64 {
        0
    }

    /// Its own signed blocks not yet ordered, encoded as it persists them, oldest round
    /// first. A driver that replaces the engine while its process runs (a rejoin from a
    /// peer's snapshot) gives them to the new one ([`Consensus::adopt_own_blocks`]) before
    /// `start`: a block that never reached the others (sent while they could not hear this
    /// validator) is sent again. Before stop 58 it was lost with the old engine, and the new
    /// one, which may not sign that round again, left a committee with exactly a quorum up
    /// waiting for it for good. Engines that keep none answer none.
    fn own_unordered_blocks(&self) -> Vec<Bytes> {
        Vec::new()
    }

    /// Takes the blocks of its own key that the engine it replaces signed
    /// ([`Consensus::own_unordered_blocks`]) into its DAG (or waiting for their parents: its
    /// proposals do not stand on one it does not hold), persisted again; it never proposes
    /// in their rounds. Called before `start`, which sends the newest again.
    fn adopt_own_blocks(&mut self, blocks: Vec<Bytes>, out: &mut Vec<Action>) {
        let _ = (blocks, out);
    }

    /// The transactions this engine holds and has not seen committed: given to it and not
    /// yet proposed, handed to another validator and watched, or in its own proposals not
    /// yet ordered, in the order it holds them (which may not be the order one sender's
    /// were given in: a transaction back from an own block never ordered joins the end of
    /// the queue; a driver that knows their nonces sorts them). A driver that replaces
    /// the engine while its process runs (a validator rejoining from a peer's snapshot)
    /// gives them to the new one as [`Input::Transactions`], less those its chain holds (one
    /// committed before the new engine's memory of commits would commit again), so nothing
    /// submitted here waits for the mempool to hand it over again. Engines that hold none
    /// answer none.
    fn held_transactions(&self) -> Vec<Transaction> {
        Vec::new()
    }
}
