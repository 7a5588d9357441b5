//! The mempool: checks submitted transactions, holds those whose nonce is ahead of their
//! sender's (a gap), replaces one with a higher-paying one of the same nonce, bounds what
//! one sender and everyone together may hold, and hands each sender's transactions to
//! consensus in nonce order once they follow on from its account nonce. Consensus forwards
//! each to the validator its sender is assigned to.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use alloy_consensus::{Transaction as _, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, Bytes, B256, U256};
use farol_consensus::Transaction;
use farol_execution::{check_transaction, ChainSpec};
use serde::{Deserialize, Serialize};

use crate::chain::StoredBlock;
use crate::wal::Wal;

/// Limits of the mempool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Most transactions one sender may have waiting (also how far past its account nonce
    /// a nonce may be).
    pub per_sender: usize,
    /// Most transactions waiting in all.
    pub global: usize,
    /// Most of them held behind a nonce gap (never handed to consensus, so never paying
    /// for their place): a transaction ready to hand evicts a held one when the pool is
    /// full, whatever their tips.
    pub held: usize,
    /// Most bytes of transactions waiting in all.
    pub global_bytes: usize,
    /// A replacement must raise both fee caps by at least this many percent.
    pub price_bump_percent: u64,
    /// Largest encoded transaction accepted, in bytes.
    pub max_tx_bytes: usize,
    /// A transaction held behind a nonce gap for this many seconds is dropped.
    pub lifetime_secs: u64,
    /// Keep the transactions accepted in `mempool.journal` under the data directory, so that
    /// a restarted node takes back what waited (checked again, as if sent anew).
    pub journal: bool,
    /// Take legacy transactions signed without a chain id (not replay-protected, EIP-155),
    /// as geth's `--rpc.allow-unprotected-txs`: what the keyless deployments of contracts
    /// found at one address on every chain need. Off by default, as in geth; on in
    /// `farol devnet`, as anvil and hardhat take them.
    pub allow_unprotected_txs: bool,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            per_sender: 1024,
            global: 200_000,
            held: 50_000,
            global_bytes: 256 << 20,
            price_bump_percent: 10,
            max_tx_bytes: 128 * 1024,
            lifetime_secs: 600,
            journal: true,
            allow_unprotected_txs: false,
        }
    }
}

/// Why a transaction was refused. The messages follow the ones Ethereum tools know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// Not a transaction.
    #[error("invalid transaction: {0}")]
    Decode(String),
    /// Too large (geth's words since stop 46).
    #[error("oversized data: transaction size {size}, limit {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Signed for another chain, or not replay-protected: geth's words for each (since stop
    /// 46; ethers matches "only replay-protected" and says the transaction needs EIP-155).
    #[error("{}", match got {
        None => "only replay-protected (EIP-155) transactions allowed over RPC".to_string(),
        Some(got) => format!("invalid sender: invalid chain id for signer: have {got} want {want}"),
    })]
    ChainId {
        /// The transaction's.
        got: Option<u64>,
        /// This chain's.
        want: u64,
    },
    /// The signature does not recover.
    #[error("invalid sender: {0}")]
    Signature(String),
    /// Already in the pool or in a block.
    #[error("already known")]
    Known,
    /// These very bytes were ordered and then dropped; consensus will not order them again
    /// while it remembers them.
    #[error("this transaction was ordered and then dropped ({0}); consensus will not order the same bytes again soon: sign a new one (another fee) to send it again")]
    Dropped(String),
    /// The nonce is used.
    #[error("nonce too low: next nonce {next}, tx nonce {nonce}")]
    NonceTooLow {
        /// The sender's next nonce.
        next: u64,
        /// The transaction's.
        nonce: u64,
    },
    /// Too far ahead of the sender's nonce.
    #[error("nonce too high: next nonce {next}, tx nonce {nonce}, at most {max_gap} ahead")]
    NonceTooHigh {
        /// The sender's next nonce.
        next: u64,
        /// The transaction's.
        nonce: u64,
        /// The largest gap held.
        max_gap: usize,
    },
    /// The sender has as many transactions waiting as one sender may (geth's words for an
    /// account over its limit; since stop 50, before which this was `nonce too high`, which
    /// viem reports as a nonce gap although the nonce was the next one).
    #[error(
        "account limit exceeded: {pooled} transactions of this sender wait here, at most {max}"
    )]
    AccountLimit {
        /// Its transactions in the pool.
        pooled: usize,
        /// The most one sender may have.
        max: usize,
    },
    /// The sender cannot pay for the gas and the value, with what its other waiting
    /// transactions may take (geth's words since stop 46).
    #[error("insufficient funds for gas * price + value: balance {balance}, {}tx cost {cost}, overshot {}",
        if queued.is_zero() { String::new() } else { format!("queued cost {queued}, ") },
        queued.saturating_add(*cost).saturating_sub(*balance))]
    InsufficientFunds {
        /// The balance.
        balance: U256,
        /// What the sender's other waiting transactions may take.
        queued: U256,
        /// This one's gas limit × fee cap + value.
        cost: U256,
    },
    /// A transaction type the chain does not take (blob transactions).
    #[error("transaction type not supported: {0}")]
    Unsupported(String),
    /// The fee cap is below the base fee.
    #[error("max fee per gas less than block base fee: maxFeePerGas: {cap}, baseFee: {base_fee}")]
    FeeCapTooLow {
        /// The fee cap.
        cap: u128,
        /// The base fee.
        base_fee: u64,
    },
    /// The gas limit is below a transfer's.
    /// Execution would refuse it whatever the state: intrinsic gas, the per-transaction gas
    /// cap, a priority fee above the fee cap (the message is geth's).
    #[error("{0}")]
    Invalid(String),
    /// The gas limit is above the block's.
    #[error("exceeds block gas limit: gas {gas}, block {block}")]
    GasLimit {
        /// The transaction's.
        gas: u64,
        /// The block's.
        block: u64,
    },
    /// A replacement that does not pay enough more.
    #[error("replacement transaction underpriced")]
    ReplacementUnderpriced,
    /// The transaction with this nonce is already with consensus, which orders each
    /// validator's transactions first in, first out: a replacement would come after it and
    /// fail on its nonce.
    #[error(
        "the transaction with nonce {nonce} is already being ordered and can no longer be replaced"
    )]
    AlreadyOrdering {
        /// The nonce.
        nonce: u64,
    },
    /// The pool is full and this transaction pays no more than the cheapest waiting.
    #[error("txpool is full")]
    Full,
    /// The sender delegates to code (EIP-7702), which can spend its whole balance in any
    /// transaction: it may have one transaction in the pool, at its next nonce (geth's
    /// message).
    #[error("in-flight transaction limit reached for delegated accounts")]
    DelegatedInFlight,
    /// A delegated sender's transaction not at its next nonce (geth's message; before stop
    /// 50, [`MempoolError::DelegatedInFlight`]'s).
    #[error("gapped-nonce tx from delegated accounts")]
    DelegatedGap,
    /// An authorization of an account with more than one transaction waiting (geth's
    /// message; since stop 50).
    #[error("authority already reserved")]
    AuthorityReserved,
    /// The sender's nonce and balance were read from a block older than one the pool has
    /// already cleared: read them again.
    #[error("the chain moved on while the transaction was checked; send it again")]
    StaleState {
        /// The block the account was read at.
        read_at: u64,
        /// The newest block the pool cleared.
        cleared: u64,
    },
}

struct Entry {
    hash: B256,
    payload: Bytes,
    /// Gas limit × fee cap + value: the most it can take from its sender.
    cost: U256,
    max_fee: u128,
    tip: u128,
    /// When it was last handed to consensus.
    handed: Option<Instant>,
    added: Instant,
    /// The signers of its EIP-7702 authorizations ([`Checked::authorities`]).
    authorities: Vec<Address>,
}

#[derive(Default)]
struct Queue {
    txs: BTreeMap<u64, Entry>,
    /// The account nonce when last known.
    next: u64,
}

/// A checked transaction, with its sender.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The transaction.
    pub tx: TxEnvelope,
    /// Its hash.
    pub hash: B256,
    /// Its sender.
    pub sender: Address,
    /// Its encoding.
    pub payload: Bytes,
    /// The signers of its EIP-7702 authorizations (recovered outside the pool's lock; those
    /// that do not recover are left out, as execution skips them).
    pub authorities: Vec<Address>,
}

/// The mempool.
pub struct Mempool {
    cfg: MempoolConfig,
    spec: ChainSpec,
    base_fee: u64,
    gas_limit: u64,
    senders: HashMap<Address, Queue>,
    by_hash: HashMap<B256, (Address, u64)>,
    /// The accounts whose EIP-7702 authorizations wait in the pool, with how many waiting
    /// transactions carry one (since stop 50): such an account is taken as delegated, as
    /// geth takes it, since its delegation may run before its next transaction.
    authorized: HashMap<Address, usize>,
    /// The senders whose last transaction is held (not handed), by that transaction's tip:
    /// the candidates for eviction, cheapest first. Kept in step with `senders` by
    /// [`Mempool::reindex`] after every change to a sender's queue (since stop 42; before,
    /// each eviction looked through every sender, up to 200,000 under the pool's lock).
    evictable: BTreeSet<(u128, Address)>,
    /// Each sender's key in `evictable`.
    evict_key: HashMap<Address, u128>,
    /// The newest block [`Mempool::on_block`] cleared.
    cleared: u64,
    /// Where accepted transactions are appended, so that a restarted node takes them back
    /// ([`Mempool::set_journal`]).
    journal: Option<Wal>,
    /// Bytes of the waiting transactions' encodings.
    bytes: usize,
    /// Transactions held behind a nonce gap (not handed).
    held: usize,
    /// The journal's old records are being added again: it is not rewritten meanwhile (it
    /// still holds the ones not read back yet).
    reading_back: bool,
    /// What the pool released for consensus and could not send yet (the channel was full),
    /// oldest first: everything released later goes after it ([`Mempool::hand_over`]).
    /// Each with whether it found no room once (and so may have left the pool meanwhile).
    unsent: VecDeque<(Vec<Transaction>, bool)>,
    /// Transactions in `unsent`.
    unsent_len: usize,
    /// When a hand-over last found no room, or last sent what had waited: the hand-over again
    /// ([`Mempool::rehand`]) waits its period after that, since what waited was sent late.
    backlog_seen: Option<Instant>,
}

/// The channel to consensus, which takes what the pool hands over.
pub type ToConsensus = tokio::sync::mpsc::Sender<Vec<Transaction>>;

/// A place in [`ToConsensus`] taken before the pool's lock.
pub type Place<'a> = tokio::sync::mpsc::Permit<'a, Vec<Transaction>>;

/// The first byte of a journal record that forgets a transaction (`TOMBSTONE ‖ hash`): the
/// RLP empty string, which no transaction's encoding starts with.
const TOMBSTONE: u8 = 0x80;

fn tombstone(hash: &B256) -> Vec<u8> {
    let mut r = Vec::with_capacity(33);
    r.push(TOMBSTONE);
    r.extend_from_slice(hash.as_slice());
    r
}

/// The journal's records less the transactions a later tombstone forgot, and the
/// tombstones themselves, in order. A tombstone forgets only what came before it: the same
/// transaction sent again after it was dropped stays.
pub fn without_forgotten(records: &[bytes::Bytes]) -> Vec<bytes::Bytes> {
    let mut forgotten = std::collections::HashSet::new();
    let mut kept = Vec::with_capacity(records.len());
    for r in records.iter().rev() {
        if r.len() == 33 && r[0] == TOMBSTONE {
            forgotten.insert(B256::from_slice(&r[1..]));
        } else if forgotten.is_empty() || !forgotten.contains(&alloy_primitives::keccak256(r)) {
            kept.push(r.clone());
        }
    }
    kept.reverse();
    kept
}

/// Lifetimes after which even a handed transaction leaves the pool (see [`Mempool::expire`]).
pub const HANDED_LIFETIMES: u32 = 10;

/// The least time a handed transaction stays, however short the lifetime: ten of the
/// default's. Before stop 48 a `lifetime_secs` of 0 (or a few seconds) made handed
/// transactions leave while consensus still held them: the pool then forgot their nonces
/// (`eth_getTransactionCount` with `pending` gave one again) and took a second transaction
/// for one, of which execution dropped one.
pub const MIN_HANDED_LIFE: Duration = Duration::from_secs(6_000);

/// A journal at least this large is rewritten when it holds twice what waits.
const JOURNAL_MIN_REWRITE: u64 = 4 << 20;

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mempool({} transactions)", self.len())
    }
}

/// Decodes and checks what can be checked without state: size, encoding, chain id (a legacy
/// transaction without one only if `allow_unprotected`), fee cap, gas limit, signature, and
/// what execution checks without state ([`check_transaction`], which needs the sender:
/// under Amsterdam a transfer to oneself costs less).
pub fn check(
    raw: &[u8],
    spec: &ChainSpec,
    base_fee: u64,
    gas_limit: u64,
    max_bytes: usize,
    allow_unprotected: bool,
) -> Result<Checked, MempoolError> {
    // A blob transaction as wallets send it carries its blobs (128 KiB each): refused as
    // what it is before its size (before stop 46 it read "oversized data").
    if raw.first() == Some(&0x03) {
        return Err(MempoolError::Unsupported("blob transactions are not accepted".into()));
    }
    if raw.len() > max_bytes {
        return Err(MempoolError::TooLarge { size: raw.len(), max: max_bytes });
    }
    let mut buf = raw;
    let tx = TxEnvelope::decode_2718(&mut buf).map_err(|e| MempoolError::Decode(e.to_string()))?;
    if !buf.is_empty() {
        return Err(MempoolError::Decode(format!("{} trailing bytes", buf.len())));
    }
    if tx.is_eip4844() {
        return Err(MempoolError::Unsupported("blob transactions are not accepted".into()));
    }
    // Only a legacy transaction can lack a chain id (typed ones always carry one).
    let unprotected = tx.chain_id().is_none() && allow_unprotected;
    if tx.chain_id() != Some(spec.chain_id) && !unprotected {
        return Err(MempoolError::ChainId { got: tx.chain_id(), want: spec.chain_id });
    }
    if tx.max_fee_per_gas() < u128::from(base_fee) {
        return Err(MempoolError::FeeCapTooLow { cap: tx.max_fee_per_gas(), base_fee });
    }
    if tx.gas_limit() > gas_limit {
        return Err(MempoolError::GasLimit { gas: tx.gas_limit(), block: gas_limit });
    }
    let sender = farol_execution::recover_sender(&tx).map_err(MempoolError::Signature)?;
    check_transaction(spec, &tx, sender).map_err(MempoolError::Invalid)?;
    let hash = *tx.tx_hash();
    let mut authorities: Vec<Address> = tx
        .authorization_list()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a.recover_authority().ok())
        .collect();
    authorities.sort_unstable();
    authorities.dedup();
    Ok(Checked { tx, hash, sender, payload: Bytes::copy_from_slice(raw), authorities })
}

/// The stateless checks of one pool ([`Mempool::checker`]): admissions decode transactions
/// and recover their senders with these, outside the pool's lock (before stop 48 they did
/// under it, so every admission, junk included, held up the pool's other users, the block
/// pipeline's promotions among them, for a signature recovery).
#[derive(Clone, Debug)]
pub struct Checker {
    spec: ChainSpec,
    base_fee: u64,
    gas_limit: u64,
    max_bytes: usize,
    allow_unprotected: bool,
}

impl Checker {
    /// Checks `raw` without state (see [`check`]).
    pub fn check(&self, raw: &[u8]) -> Result<Checked, MempoolError> {
        check(
            raw,
            &self.spec,
            self.base_fee,
            self.gas_limit,
            self.max_bytes,
            self.allow_unprotected,
        )
    }
}

/// The signers of the EIP-7702 authorizations in `block`'s transactions, each once.
/// Authorizations whose signature does not recover are left out (execution skips them too).
pub fn authorities(block: &StoredBlock) -> Vec<Address> {
    let mut out = std::collections::BTreeSet::new();
    for tx in &block.txs {
        for auth in tx.authorization_list().unwrap_or_default() {
            if let Ok(a) = auth.recover_authority() {
                out.insert(a);
            }
        }
    }
    out.into_iter().collect()
}

/// Of the transactions `checked` (in the order they were accepted), the last of each sender
/// and nonce, in that order: what a journal that also holds replaced transactions should
/// add back.
pub fn latest_of_each_nonce(checked: Vec<Checked>) -> Vec<Checked> {
    let mut last: HashMap<(Address, u64), usize> = HashMap::new();
    for (i, c) in checked.iter().enumerate() {
        last.insert((c.sender, c.tx.nonce()), i);
    }
    let keep: std::collections::HashSet<usize> = last.into_values().collect();
    checked.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, c)| c).collect()
}

impl Mempool {
    /// An empty mempool for a chain.
    pub fn new(cfg: MempoolConfig, spec: ChainSpec, base_fee: u64, gas_limit: u64) -> Mempool {
        Mempool {
            cfg,
            spec,
            base_fee,
            gas_limit,
            senders: HashMap::new(),
            by_hash: HashMap::new(),
            authorized: HashMap::new(),
            evictable: BTreeSet::new(),
            evict_key: HashMap::new(),
            cleared: 0,
            journal: None,
            bytes: 0,
            held: 0,
            reading_back: false,
            unsent: VecDeque::new(),
            unsent_len: 0,
            backlog_seen: None,
        }
    }

    /// Hands `released` (what a change to the pool just let go to consensus) over after
    /// whatever is still waiting to go, and sends from the front while the channel has room:
    /// into `place` first (taken before the pool's lock, so that a caller that waited for
    /// room sends at least one), then into any room left. What does not fit waits here for
    /// the next call. Called under the pool's lock, so what reaches consensus comes in the
    /// order the pool released it: one sender's nonces in order. (Until stop 43 releases were
    /// sent after the lock was let go, and two racing admissions could send nonce n + 1
    /// ahead of n.) What waited and left the pool meanwhile (included by a block, dropped) is
    /// not sent, and is let go at once when more waits than the pool's limit of transactions.
    /// A closed channel (consensus gone) takes nothing more: what waits is let go.
    pub fn hand_over(
        &mut self,
        released: Vec<Transaction>,
        mut place: Option<Place<'_>>,
        to: &ToConsensus,
    ) {
        if !released.is_empty() {
            self.unsent_len += released.len();
            self.unsent.push_back((released, false));
            if self.unsent_len > self.cfg.global {
                // More waits than the pool may hold: some of it left the pool. Only that goes
                // (dropping what the pool still holds would let a later nonce go first).
                for (batch, _) in &mut self.unsent {
                    batch.retain(|t| {
                        self.by_hash.contains_key(&alloy_primitives::keccak256(&t.payload))
                    });
                }
                self.unsent.retain(|(batch, _)| !batch.is_empty());
                self.unsent_len = self.unsent.iter().map(|(batch, _)| batch.len()).sum();
            }
        }
        while !self.unsent.is_empty() {
            let place = match place.take() {
                Some(p) => p,
                None => match to.try_reserve() {
                    Ok(p) => p,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {
                        self.backlog_seen = Some(Instant::now());
                        for (_, waited) in &mut self.unsent {
                            *waited = true;
                        }
                        return;
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => {
                        self.unsent.clear();
                        self.unsent_len = 0;
                        return;
                    }
                },
            };
            let Some((mut next, waited)) = self.unsent.pop_front() else { break };
            self.unsent_len -= next.len();
            if waited {
                // What waited is sent late: the hand-over again counts its period from here.
                self.backlog_seen = Some(Instant::now());
                // Only what the pool still holds goes.
                next.retain(|t| {
                    self.by_hash.contains_key(&alloy_primitives::keccak256(&t.payload))
                });
            }
            if next.is_empty() {
                // The place goes back unused (dropped here); the next batch takes another.
                continue;
            }
            place.send(next);
        }
    }

    /// Whether released transactions wait for room in the channel to consensus.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Marks the journal's read-back as running (no rewrite) or over (rewritten at once with
    /// what waits).
    pub fn set_reading_back(&mut self, running: bool) {
        self.reading_back = running;
        if !running {
            self.compact_journal(true);
        }
    }

    /// From now on, appends every transaction accepted to `journal` (as opened: what it held
    /// is added again through the usual checks, see `Rpc::readmit`, and stays in it until the
    /// read-back is over and the journal is rewritten). Appends are
    /// not synced: a killed process loses nothing the kernel has, a lost machine the last
    /// appends. The journal is rewritten with what waits when it grows to twice that
    /// ([`Mempool::compact_journal`]).
    pub fn set_journal(&mut self, journal: Wal) {
        self.journal = Some(journal);
    }

    fn journal_append(&mut self, payload: &[u8]) {
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.append(payload) {
                tracing::warn!("mempool journal: {e}; not journaling from now on");
                self.journal = None;
            }
        }
    }

    /// Rewrites the journal with the transactions waiting, in sender and nonce order, if it
    /// holds more than twice their bytes (or `always`).
    pub fn compact_journal(&mut self, always: bool) {
        let Some(j) = &self.journal else { return };
        if self.reading_back {
            return;
        }
        let live = self.bytes as u64 + crate::wal::RECORD_HEADER * self.by_hash.len() as u64;
        if !always && j.len() <= JOURNAL_MIN_REWRITE.max(2 * live) {
            return;
        }
        let mut senders: Vec<&Address> = self.senders.keys().collect();
        senders.sort();
        let records: Vec<&[u8]> = senders
            .into_iter()
            .filter_map(|a| self.senders.get(a))
            .flat_map(|q| q.txs.values().map(|e| &e.payload[..]))
            .collect();
        let result = self.journal.as_mut().map(|j| j.reset(&records));
        if let Some(Err(e)) = result {
            tracing::warn!("mempool journal: {e}; not journaling from now on");
            self.journal = None;
        }
    }

    /// Checks `raw` without state (see [`check`]).
    pub fn check(&self, raw: &[u8]) -> Result<Checked, MempoolError> {
        self.checker().check(raw)
    }

    /// What [`Mempool::check`] needs (fixed when the pool is made), to check transactions
    /// without the pool's lock.
    pub fn checker(&self) -> Checker {
        Checker {
            spec: self.spec.clone(),
            base_fee: self.base_fee,
            gas_limit: self.gas_limit,
            max_bytes: self.cfg.max_tx_bytes,
            allow_unprotected: self.cfg.allow_unprotected_txs,
        }
    }

    /// Transactions waiting.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The waiting transaction `hash` and its sender.
    pub fn get(&self, hash: &B256) -> Option<(TxEnvelope, Address)> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        let e = self.senders.get(sender)?.txs.get(nonce)?;
        let tx = TxEnvelope::decode_2718(&mut &e.payload[..]).ok()?;
        Some((tx, *sender))
    }

    /// Whether `hash` is waiting.
    pub fn contains(&self, hash: &B256) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// The highest nonce waiting for `sender` plus one, if any waits contiguous with its
    /// account nonce (what `eth_getTransactionCount(.., "pending")` reports).
    pub fn pending_nonce(&self, sender: &Address, account_nonce: u64) -> u64 {
        let mut n = account_nonce;
        if let Some(q) = self.senders.get(sender) {
            while q.txs.contains_key(&n) {
                n += 1;
            }
        }
        n
    }

    /// [`Mempool::pending_nonce`] for an account nonce read at block `read_at`, refused as
    /// stale (as [`Mempool::add`] refuses) when the pool has cleared a newer block: that
    /// block's transactions left the pool, and the answer would be a nonce it used.
    pub fn next_nonce(
        &self,
        sender: &Address,
        account_nonce: u64,
        read_at: u64,
    ) -> Result<u64, MempoolError> {
        if read_at < self.cleared {
            return Err(MempoolError::StaleState { read_at, cleared: self.cleared });
        }
        Ok(self.pending_nonce(sender, account_nonce))
    }

    /// Whether `sender`'s transaction of `nonce` waits in the pool held behind a nonce gap
    /// (not handed to consensus); false when the pool does not hold it.
    pub fn is_held(&self, sender: &Address, nonce: u64) -> bool {
        self.senders.get(sender).and_then(|q| q.txs.get(&nonce)).is_some_and(|e| e.handed.is_none())
    }

    /// How many transactions wait handed to consensus (executable) and held (behind a
    /// nonce gap).
    pub fn status(&self) -> (usize, usize) {
        (self.by_hash.len() - self.held, self.held)
    }

    /// The encodings of the transactions waiting, by sender and nonce (of `only` if given),
    /// each with whether it was handed to consensus or is held; `Err` with their number
    /// when more than `limit` wait (nothing is copied then).
    pub fn content(
        &self,
        only: Option<&Address>,
        limit: usize,
    ) -> Result<Vec<(Address, u64, Bytes, bool)>, usize> {
        let mut senders: Vec<&Address> = match only {
            Some(a) => self.senders.get_key_value(a).map(|(k, _)| k).into_iter().collect(),
            None => self.senders.keys().collect(),
        };
        let count: usize =
            senders.iter().filter_map(|a| self.senders.get(*a)).map(|q| q.txs.len()).sum();
        if count > limit {
            return Err(count);
        }
        senders.sort();
        let mut out = Vec::with_capacity(count);
        for a in senders {
            let Some(q) = self.senders.get(a) else { continue };
            for (nonce, e) in &q.txs {
                out.push((*a, *nonce, e.payload.clone(), e.handed.is_some()));
            }
        }
        Ok(out)
    }

    /// The newest block the pool cleared (0 before any).
    pub fn cleared(&self) -> u64 {
        self.cleared
    }

    /// Adds a checked transaction, given its sender's account nonce and balance after block
    /// `read_at`. Returns what to hand to consensus now (this transaction and any it
    /// unblocked, in nonce order).
    ///
    /// The account must not be older than the newest block the pool cleared
    /// ([`MempoolError::StaleState`]): that block may have used the sender's nonces and
    /// emptied its queue, and the pool would then hold this transaction for nonces no block
    /// will ever bring again.
    pub fn add(
        &mut self,
        c: Checked,
        read_at: u64,
        account_nonce: u64,
        balance: U256,
    ) -> Result<Vec<Transaction>, MempoolError> {
        self.add_from(c, read_at, account_nonce, balance, false)
    }

    /// [`Mempool::add`] for a sender whose account `delegated` (EIP-7702) or not. A
    /// delegated sender's code can move its whole balance in any transaction, so the pool's
    /// balance check says nothing about its later ones: it may have one transaction here,
    /// at its next nonce (or a replacement of it), as in geth. Since stop 41: before, such a
    /// sender could queue a draining call and a thousand transfers behind it, which passed
    /// the pool, took consensus's bandwidth and were dropped unpaid at execution.
    pub fn add_from(
        &mut self,
        c: Checked,
        read_at: u64,
        account_nonce: u64,
        balance: U256,
        delegated: bool,
    ) -> Result<Vec<Transaction>, MempoolError> {
        if read_at < self.cleared {
            return Err(MempoolError::StaleState { read_at, cleared: self.cleared });
        }
        if self.by_hash.contains_key(&c.hash) {
            return Err(MempoolError::Known);
        }
        let nonce = c.tx.nonce();
        if nonce < account_nonce {
            return Err(MempoolError::NonceTooLow { next: account_nonce, nonce });
        }
        if nonce - account_nonce >= self.cfg.per_sender as u64 {
            return Err(MempoolError::NonceTooHigh {
                next: account_nonce,
                nonce,
                max_gap: self.cfg.per_sender,
            });
        }
        let cost = U256::from(c.tx.gas_limit())
            .saturating_mul(U256::from(c.tx.max_fee_per_gas()))
            .saturating_add(c.tx.value());
        let max_fee = c.tx.max_fee_per_gas();
        let tip =
            c.tx.max_priority_fee_per_gas()
                .unwrap_or(max_fee)
                .min(max_fee.saturating_sub(u128::from(self.base_fee)));
        let bump =
            |old: u128| old.saturating_mul(100 + u128::from(self.cfg.price_bump_percent)) / 100;
        let replacing = match self.senders.get(&c.sender).and_then(|q| q.txs.get(&nonce)) {
            Some(old) => {
                // An unbumped one gets geth's words whether or not the first is handed (since
                // stop 50: before, a resend at a handed nonce, the usual case, got the words
                // below, which ethers does not know as REPLACEMENT_UNDERPRICED).
                if max_fee < bump(old.max_fee) || tip < bump(old.tip) {
                    return Err(MempoolError::ReplacementUnderpriced);
                }
                // Before stop 27 a replacement of a handed transaction was accepted and handed
                // too, and then almost always lost to the original.
                if old.handed.is_some() {
                    return Err(MempoolError::AlreadyOrdering { nonce });
                }
                Some(old.hash)
            }
            None => None,
        };
        // A sender whose authorization waits here may have one transaction in flight too
        // (since stop 50, as geth: before, a sender whose self-sponsored delegation at nonce
        // n named n + 1 could send n + 1 as well, which the pool reported as pending and
        // execution dropped as used). Unlike geth, such a sender with nothing in flight may
        // send a nonce past its authorization's: it waits behind the gap until the block
        // that applies the authorization (a sponsored delegation and the signer's next
        // transaction sent together, as the client test does).
        let authorized = self.authorized.contains_key(&c.sender);
        if (delegated || authorized) && replacing.is_none() {
            let in_flight = self
                .senders
                .get(&c.sender)
                .is_some_and(|q| q.txs.range(account_nonce..).next().is_some());
            if in_flight {
                return Err(MempoolError::DelegatedInFlight);
            }
            if delegated && nonce != account_nonce {
                return Err(MempoolError::DelegatedGap);
            }
        }
        // An authority with more than one transaction waiting is not delegated by another
        // (geth's rule: its delegation would run between them).
        for a in &c.authorities {
            if self.senders.get(a).is_some_and(|q| q.txs.range(q.next..).nth(1).is_some()) {
                return Err(MempoolError::AuthorityReserved);
            }
        }
        // What the sender's other waiting transactions may take counts too (as geth): before
        // stop 38 each was checked alone, so a sender could send one that spends nearly all
        // its balance and others after it that execution could only drop; until stop 39 only
        // those before it counted, so one filling a gap below held ones (or replacing one)
        // still could. (Not those below the account nonce: a stored block ran them, and the
        // pool has not cleared them yet; their cost has left the balance already.)
        let others: U256 = self.senders.get(&c.sender).map_or(U256::ZERO, |q| {
            q.txs
                .range(account_nonce..)
                .filter(|(n, _)| **n != nonce)
                .fold(U256::ZERO, |sum, (_, e)| sum.saturating_add(e.cost))
        });
        if balance < others.saturating_add(cost) {
            return Err(MempoolError::InsufficientFunds { balance, queued: others, cost });
        }
        let pooled = self.senders.get(&c.sender).map_or(0, |q| q.txs.len());
        if replacing.is_none() && pooled >= self.cfg.per_sender {
            return Err(MempoolError::AccountLimit { pooled, max: self.cfg.per_sender });
        }
        // Whether it is handed at once: every nonce from the account's to its is here.
        let ready = {
            let next =
                self.senders.get(&c.sender).map_or(account_nonce, |q| q.next.max(account_nonce));
            self.pending_nonce(&c.sender, next) >= nonce
        };
        // What the replaced transaction frees.
        let freed = replacing
            .and_then(|_| self.senders.get(&c.sender)?.txs.get(&nonce))
            .map_or(0, |e| e.payload.len());
        let slots = usize::from(replacing.is_none());
        let held_slots = usize::from(replacing.is_none() && !ready);
        let over_bytes =
            |p: &Mempool| (p.bytes - freed + c.payload.len()).saturating_sub(p.cfg.global_bytes);
        let need = over_bytes(self);
        // Nothing is evicted for a transaction that would be refused anyway: the held
        // transactions it could evict must be able to make room for it.
        if need > 0 && self.room(&c.sender, (!ready).then_some(tip), need) < need {
            return Err(MempoolError::Full);
        }
        loop {
            let full = self.by_hash.len() + slots > self.cfg.global || over_bytes(self) > 0;
            let held_full = self.held + held_slots > self.cfg.held;
            if !full && !held_full {
                break;
            }
            // A transaction ready to hand takes the place of any held one; a held one only
            // of a held one that tips less.
            let over = if ready { None } else { Some(tip) };
            if !self.evict_held(over, &c.sender) {
                return Err(MempoolError::Full);
            }
        }
        if let Some(old) = replacing {
            self.by_hash.remove(&old);
        }
        self.journal_append(&c.payload);
        self.bytes += c.payload.len();
        let q = self.senders.entry(c.sender).or_default();
        q.next = q.next.max(account_nonce);
        self.held += 1;
        let replaced = q.txs.insert(
            nonce,
            Entry {
                hash: c.hash,
                payload: c.payload,
                cost,
                max_fee,
                tip,
                handed: None,
                added: Instant::now(),
                authorities: c.authorities,
            },
        );
        if let Some(e) = q.txs.get(&nonce) {
            for a in &e.authorities {
                *self.authorized.entry(*a).or_default() += 1;
            }
        }
        if let Some(old) = replaced {
            Self::forget_authorities(&mut self.authorized, &old.authorities);
            self.bytes = self.bytes.saturating_sub(old.payload.len());
            // Only a held transaction can be replaced.
            self.held -= usize::from(old.handed.is_none());
            // The journal forgets the replaced one: read back, it would stand in for its
            // replacement should that be dropped (before stop 41, a cancelled transaction
            // came back after a restart and could execute).
            self.journal_append(&tombstone(&old.hash));
        }
        self.by_hash.insert(c.hash, (c.sender, nonce));
        Ok(self.promote(c.sender))
    }

    /// Evicts the cheapest last-in-line transaction of another sender, if it tips less than
    /// `below` when that is given. Only transactions not handed to consensus (held behind a
    /// nonce gap) are candidates: a handed one is in consensus's queue whatever the pool
    /// does, and evicted it would still be ordered, untracked (before stop 27 it could be
    /// evicted). A sender's last transaction is handed only if all its others are, so the
    /// last is the one to look at.
    fn evict_held(&mut self, below: Option<u128>, sender: &Address) -> bool {
        // One key per sender: at most one is skipped.
        let victim = self.evictable.iter().find(|(_, a)| a != sender).copied();
        let last = |p: &Self, a: &Address| p.senders.get(a)?.txs.last_key_value().map(|(n, _)| *n);
        match victim {
            Some((t, a)) if below.is_none_or(|tip| t < tip) => match last(self, &a) {
                Some(n) => {
                    self.discard(&a, n);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The bytes evicting held transactions of senders other than `sender` could free, for
    /// a transaction that may take only those tipping less than `below` (a held one) or any
    /// (`None`: one ready to hand), counted up to `need`. Eviction takes the cheapest
    /// last-in-line transaction each time (`evict_held`), and the one before it in its
    /// sender's queue then comes to the end of the line: this walks that order, from the
    /// index and the transactions each step brings to the end, so it costs the evictions it
    /// counts, not a look at every sender.
    fn room(&self, sender: &Address, below: Option<u128>, need: usize) -> usize {
        let mut firsts = self.evictable.iter().filter(|(_, a)| a != sender).peekable();
        // Transactions that came to the end of their sender's line in this walk.
        let mut brought: BinaryHeap<Reverse<(u128, Address, u64)>> = BinaryHeap::new();
        let last = |a: &Address| self.senders.get(a)?.txs.last_key_value().map(|(n, _)| *n);
        let mut freed = 0usize;
        while freed < need {
            let first = firsts.peek().and_then(|(t, a)| Some((*t, *a, last(a)?)));
            let next = match (first, brought.peek().map(|r| r.0)) {
                (Some(f), Some(b)) if b < f => brought.pop().map(|r| r.0),
                (Some(f), _) => {
                    firsts.next();
                    Some(f)
                }
                (None, _) => brought.pop().map(|r| r.0),
            };
            let Some((t, a, n)) = next else { break };
            if below.is_some_and(|tip| t >= tip) {
                break;
            }
            let Some(q) = self.senders.get(&a) else { break };
            freed += q.txs.get(&n).map_or(0, |e| e.payload.len());
            if let Some((before, e)) = q.txs.range(..n).next_back() {
                if e.handed.is_none() {
                    brought.push(Reverse((e.tip, a, *before)));
                }
            }
        }
        freed
    }

    /// Puts `sender` where it belongs in the eviction index: keyed by its last transaction's
    /// tip if that one is held, absent otherwise.
    fn reindex(&mut self, sender: &Address) {
        if let Some(t) = self.evict_key.remove(sender) {
            self.evictable.remove(&(t, *sender));
        }
        let held_last = self
            .senders
            .get(sender)
            .and_then(|q| q.txs.last_key_value())
            .filter(|(_, e)| e.handed.is_none())
            .map(|(_, e)| e.tip);
        if let Some(t) = held_last {
            self.evictable.insert((t, *sender));
            self.evict_key.insert(*sender, t);
        }
    }

    /// Removes a transaction the pool gives up on (evicted or expired), with a tombstone in
    /// the journal: read back after a restart it would come again, with a fresh lifetime
    /// (before stop 41).
    fn discard(&mut self, sender: &Address, nonce: u64) {
        let hash = self.senders.get(sender).and_then(|q| q.txs.get(&nonce)).map(|e| e.hash);
        self.remove(sender, nonce);
        if let Some(h) = hash {
            self.journal_append(&tombstone(&h));
        }
    }

    /// Counts `authorities` (of a transaction that left the pool) out of `authorized`.
    fn forget_authorities(authorized: &mut HashMap<Address, usize>, authorities: &[Address]) {
        for a in authorities {
            if let Some(n) = authorized.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    authorized.remove(a);
                }
            }
        }
    }

    fn remove(&mut self, sender: &Address, nonce: u64) {
        if let Some(q) = self.senders.get_mut(sender) {
            if let Some(e) = q.txs.remove(&nonce) {
                Self::forget_authorities(&mut self.authorized, &e.authorities);
                self.by_hash.remove(&e.hash);
                self.bytes = self.bytes.saturating_sub(e.payload.len());
                self.held -= usize::from(e.handed.is_none());
            }
            if q.txs.is_empty() {
                self.senders.remove(sender);
            }
            self.reindex(sender);
        }
    }

    /// Hands over `sender`'s transactions that follow on from its nonce and were not handed.
    fn promote(&mut self, sender: Address) -> Vec<Transaction> {
        let mut out = Vec::new();
        if let Some(q) = self.senders.get_mut(&sender) {
            let mut n = q.next;
            while let Some(e) = q.txs.get_mut(&n) {
                if e.handed.is_none() {
                    e.handed = Some(Instant::now());
                    self.held -= 1;
                    out.push(Transaction {
                        sender: sender.into_array(),
                        payload: e.payload.0.clone(),
                    });
                }
                n += 1;
            }
        }
        self.reindex(&sender);
        out
    }

    /// Hands over again the transactions handed more than `after` ago that are still not
    /// ordered (`ordered` says which are). Consensus may have dropped them without a word (its
    /// queue full, a full node's forward lost) and it ignores what it already holds, so a
    /// second hand-over costs nothing where the first arrived.
    pub fn rehand(
        &mut self,
        now: Instant,
        after: Duration,
        ordered: impl Fn(&B256) -> bool,
    ) -> Vec<Transaction> {
        let mut out = Vec::new();
        // Released transactions still wait for room, or waited lately: consensus is not
        // taking what it gets, or just took what was stamped long ago. Handing the same over
        // again would only grow what waits, or send it twice.
        if !self.unsent.is_empty()
            || self.backlog_seen.is_some_and(|t| now.duration_since(t) < after)
        {
            return out;
        }
        for (sender, q) in &mut self.senders {
            for e in q.txs.values_mut() {
                let Some(at) = e.handed else { break };
                if now.duration_since(at) > after && !ordered(&e.hash) {
                    e.handed = Some(now);
                    out.push(Transaction {
                        sender: sender.into_array(),
                        payload: e.payload.0.clone(),
                    });
                }
            }
        }
        out
    }

    /// A block was stored: its transactions and the nonces they used leave the pool; what
    /// they unblocked is returned, to hand to consensus. `authorities` are the accounts
    /// whose EIP-7702 authorizations the block carries ([`authorities`]), with their nonces
    /// after it: an applied authorization uses its signer's nonce without a transaction of
    /// the signer's (before stop 27 the pool missed that, and the signer's later
    /// transactions waited for a nonce that had been used).
    pub fn on_block(
        &mut self,
        block: &StoredBlock,
        authorities: &[(Address, u64)],
    ) -> Vec<Transaction> {
        self.cleared = self.cleared.max(block.header.number);
        let mut next: HashMap<Address, u64> = HashMap::new();
        for (tx, sender) in block.txs.iter().zip(&block.senders) {
            let n = next.entry(*sender).or_default();
            *n = (*n).max(tx.nonce() + 1);
        }
        for (authority, nonce) in authorities {
            let n = next.entry(*authority).or_default();
            *n = (*n).max(*nonce);
        }
        let mut out = Vec::new();
        for (sender, n) in next {
            let Some(q) = self.senders.get_mut(&sender) else { continue };
            q.next = q.next.max(n);
            let stale: Vec<u64> = q.txs.range(..n).map(|(k, _)| *k).collect();
            for k in stale {
                self.remove(&sender, k);
            }
            out.extend(self.promote(sender));
        }
        out
    }

    /// Forgets transaction `hash` (execution dropped it: a wallet may send it again, or
    /// another with its nonce). The journal gets a tombstone for it, so that a restart does
    /// not read it back: consensus would ignore the same bytes again for a while, and the
    /// pool would hold it as handed, refusing another transaction with its nonce (before
    /// stop 38 it did, until the journal was next rewritten).
    ///
    /// The tombstone is written even when the pool no longer holds the transaction (it
    /// expired meanwhile, or another node's pool had it): the journal may still (since stop
    /// 41; before, such a transaction came back after a restart, held as handed, and the
    /// pool refused another with its nonce until consensus forgot the bytes).
    pub fn forget(&mut self, hash: &B256) {
        if let Some((sender, nonce)) = self.by_hash.get(hash).copied() {
            self.remove(&sender, nonce);
        }
        self.journal_append(&tombstone(hash));
    }

    /// Drops the transactions held (behind a nonce gap, never handed) longer than the
    /// lifetime; returns how many. Handed ones are in consensus's queue: they leave the pool
    /// when a block orders them or execution drops them (before stop 27 they expired too,
    /// and one ordered after that had no record here), or, as a last resort against a
    /// consensus that never takes one, after [`HANDED_LIFETIMES`] lifetimes (at least
    /// [`MIN_HANDED_LIFE`]).
    pub fn expire(&mut self, now: Instant) -> usize {
        let life = Duration::from_secs(self.cfg.lifetime_secs);
        let handed_life = life.saturating_mul(HANDED_LIFETIMES).max(MIN_HANDED_LIFE);
        let old: Vec<(Address, u64)> = self
            .senders
            .iter()
            .flat_map(|(a, q)| {
                q.txs
                    .iter()
                    .filter(|(_, e)| {
                        let age = now.duration_since(e.added);
                        if e.handed.is_some() {
                            age > handed_life
                        } else {
                            age > life
                        }
                    })
                    .map(|(n, _)| (*a, *n))
            })
            .collect();
        for (a, n) in &old {
            self.discard(a, *n);
        }
        old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559};
    use alloy_eips::eip2718::Encodable2718;
    use alloy_primitives::TxKind;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    fn signed(key: &PrivateKeySigner, nonce: u64, fee: u128, chain_id: u64) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit: 21_000,
            max_fee_per_gas: fee,
            max_priority_fee_per_gas: fee / 2,
            to: TxKind::Call(Address::repeat_byte(7)),
            value: U256::from(1),
            ..Default::default()
        };
        let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
        TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718()
    }

    /// A call from `key` at `nonce` tipping 1,000 (fee cap 2,000) with `len` bytes of input.
    fn with_input(key: &PrivateKeySigner, nonce: u64, len: usize) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id: 31337,
            nonce,
            gas_limit: 1_000_000,
            max_fee_per_gas: 2_000,
            max_priority_fee_per_gas: 1_000,
            to: TxKind::Call(Address::repeat_byte(7)),
            input: vec![1u8; len].into(),
            ..Default::default()
        };
        let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
        TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718()
    }

    fn pool(per_sender: usize, global: usize) -> Mempool {
        let cfg = MempoolConfig { per_sender, global, ..MempoolConfig::default() };
        let spec = ChainSpec::ethereum(31337, farol_execution::SpecId::OSAKA);
        Mempool::new(cfg, spec, 1_000, 30_000_000)
    }

    const RICH: u64 = 1_000_000_000_000;

    /// What the pool releases reaches consensus in release order whatever room the channel
    /// has: a release that finds the channel full waits in the pool, later releases go
    /// behind it, a place taken beforehand sends the oldest first, what left the pool while
    /// it waited is not sent, the hand-over again waits while anything waits, and a closed
    /// channel lets what waits go.
    #[test]
    fn hand_overs_reach_consensus_in_release_order() {
        let mut m = pool(16, 100);
        let keys: Vec<PrivateKeySigner> = (0..10).map(|_| PrivateKeySigner::random()).collect();
        let raws: Vec<Vec<u8>> = keys.iter().map(|k| signed(k, 0, 2_000, 31337)).collect();
        let hashes: Vec<B256> = raws.iter().map(alloy_primitives::keccak256).collect();
        // Release n: sender n's first transaction, which the pool hands on at once.
        let release = |m: &mut Mempool, n: usize| {
            let c = m.check(&raws[n]).unwrap_or_else(|e| panic!("{e}"));
            let handed = m.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(handed.len(), 1);
            handed
        };
        let who = |t: &Transaction| keys.iter().position(|k| k.address().into_array() == t.sender);
        let (to, mut from) = tokio::sync::mpsc::channel(2);
        let mut got = || from.try_recv().ok().and_then(|t: Vec<Transaction>| who(&t[0]));
        for n in 0..4 {
            let r = release(&mut m, n);
            m.hand_over(r, None, &to);
        }
        assert!(m.has_unsent(), "two of four fit");
        assert_eq!(got(), Some(0));
        // Room for one: a new release goes behind the two waiting, the oldest is sent.
        let r = release(&mut m, 4);
        m.hand_over(r, None, &to);
        assert_eq!((got(), got(), got()), (Some(1), Some(2), None));
        // While anything waits, the hand-over again hands nothing.
        let later = Instant::now() + Duration::from_secs(60);
        assert!(m.rehand(later, Duration::from_secs(10), |_| false).is_empty());
        // Release 3 leaves the pool while it waits: it is not sent.
        m.forget(&hashes[3]);
        let place = to.try_reserve().unwrap_or_else(|e| panic!("{e}"));
        m.hand_over(Vec::new(), Some(place), &to);
        assert!(!m.has_unsent());
        assert_eq!((got(), got()), (Some(4), None));
        // Nothing waiting: a release goes at once.
        let r = release(&mut m, 5);
        m.hand_over(r, None, &to);
        assert_eq!(got(), Some(5));
        // Full, then closed: what waits is let go.
        for n in 6..9 {
            let r = release(&mut m, n);
            m.hand_over(r, None, &to);
        }
        assert!(m.has_unsent());
        drop(from);
        m.hand_over(Vec::new(), None, &to);
        assert!(!m.has_unsent());
    }

    /// When more waits to be handed over than the pool's limit, only what left the pool goes:
    /// a sender's waiting nonces stay, in order (dropping the oldest waiting would send its
    /// later nonces first).
    #[test]
    fn waiting_hand_overs_past_the_limit_drop_only_what_left_the_pool() {
        let mut m = pool(16, 4);
        let key = PrivateKeySigner::random();
        let others: Vec<PrivateKeySigner> = (0..3).map(|_| PrivateKeySigner::random()).collect();
        let (to, mut from) = tokio::sync::mpsc::channel(1);
        let add = |m: &mut Mempool, k: &PrivateKeySigner, nonce: u64| {
            let raw = signed(k, nonce, 2_000, 31337);
            let c = m.check(&raw).unwrap_or_else(|e| panic!("{e}"));
            let handed = m.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
            (alloy_primitives::keccak256(&raw), handed)
        };
        // The channel takes one; then the sender's nonce 0 and two others wait, oldest first.
        let (_, r) = add(&mut m, &others[0], 0);
        m.hand_over(r, None, &to);
        let (_, r) = add(&mut m, &key, 0);
        m.hand_over(r, None, &to);
        for k in &others[1..] {
            let (hash, r) = add(&mut m, k, 0);
            m.hand_over(r, None, &to);
            // It leaves the pool while it waits (a block included it, say).
            m.forget(&hash);
        }
        // Two more of the sender's: five would wait, past the limit of four.
        for nonce in 1..3 {
            let (_, r) = add(&mut m, &key, nonce);
            m.hand_over(r, None, &to);
        }
        let mut sent = Vec::new();
        while m.has_unsent() || !from.is_empty() {
            if let Ok(batch) = from.try_recv() {
                sent.extend(batch.iter().map(|t| {
                    let tx = TxEnvelope::decode_2718(&mut &t.payload[..]);
                    (t.sender, tx.map(|x| x.nonce()).unwrap_or(99))
                }));
            }
            m.hand_over(Vec::new(), None, &to);
        }
        let mine: Vec<u64> = sent
            .iter()
            .filter(|(s, _)| *s == key.address().into_array())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(mine, [0, 1, 2], "the sender's nonces, in order: {sent:?}");
        assert_eq!(sent.len(), 4, "the first, and the sender's three: {sent:?}");
    }

    #[test]
    fn gaps_are_held_until_filled_and_handed_in_nonce_order() {
        let key = PrivateKeySigner::random();
        let mut p = pool(16, 100);
        let add = |p: &mut Mempool, n| {
            let c = p.check(&signed(&key, n, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(add(&mut p, 2).is_empty(), "nonce 2 waits for 0 and 1");
        assert!(add(&mut p, 1).is_empty());
        assert!(p.is_held(&key.address(), 2) && p.is_held(&key.address(), 1));
        assert!(!p.is_held(&key.address(), 0), "not in the pool");
        let handed = add(&mut p, 0);
        assert!(!(0..3).any(|n| p.is_held(&key.address(), n)), "all handed");
        let nonces: Vec<u64> = handed
            .iter()
            .map(|t| TxEnvelope::decode_2718(&mut &t.payload[..]).map(|x| x.nonce()).unwrap_or(99))
            .collect();
        assert_eq!(nonces, [0, 1, 2]);
        assert_eq!(p.pending_nonce(&key.address(), 0), 3);
    }

    #[test]
    fn refusals_name_the_problem() {
        let key = PrivateKeySigner::random();
        let mut p = pool(4, 100);
        let wrong_chain = p.check(&signed(&key, 0, 2_000, 1));
        assert!(matches!(wrong_chain, Err(MempoolError::ChainId { got: Some(1), .. })));
        // A legacy transaction without a chain id: refused unless the pool allows it, and
        // one for another chain refused either way.
        let legacy = |chain_id: Option<u64>| {
            let tx = alloy_consensus::TxLegacy {
                chain_id,
                gas_price: 2_000,
                gas_limit: 21_000,
                to: TxKind::Call(Address::repeat_byte(7)),
                ..Default::default()
            };
            let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
            TxEnvelope::Legacy(tx.into_signed(sig)).encoded_2718()
        };
        let refused = p.check(&legacy(None));
        assert!(matches!(refused, Err(MempoolError::ChainId { got: None, .. })), "{refused:?}");
        assert!(p.check(&legacy(Some(31337))).is_ok());
        p.cfg.allow_unprotected_txs = true;
        let taken = p.check(&legacy(None)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(taken.sender, key.address());
        let other = p.check(&legacy(Some(1)));
        assert!(matches!(other, Err(MempoolError::ChainId { got: Some(1), .. })), "{other:?}");
        p.cfg.allow_unprotected_txs = false;
        assert!(matches!(
            p.check(&signed(&key, 0, 10, 31337)),
            Err(MempoolError::FeeCapTooLow { .. })
        ));
        assert!(matches!(p.check(&[0x02, 0xc0]), Err(MempoolError::Decode(_))));
        assert!(matches!(p.check(&[]), Err(MempoolError::Decode(_))));
        // What execution refuses whatever the state, refused here (in geth's words): gas
        // below the intrinsic cost of the calldata, above Osaka's 2^24 cap, a priority fee
        // above the fee cap.
        let with = |f: &dyn Fn(&mut TxEip1559)| {
            let mut tx = TxEip1559 {
                chain_id: 31337,
                gas_limit: 21_000,
                max_fee_per_gas: 2_000,
                to: TxKind::Call(Address::repeat_byte(7)),
                ..Default::default()
            };
            f(&mut tx);
            let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap_or_else(|e| panic!("{e}"));
            TxEnvelope::Eip1559(tx.into_signed(sig)).encoded_2718()
        };
        let refused = |raw: Vec<u8>, words: &str| match p.check(&raw) {
            Err(MempoolError::Invalid(why)) => assert!(why.contains(words), "{why}"),
            other => panic!("{:?}", other.map(|c| c.hash)),
        };
        refused(with(&|t| t.input = vec![1u8; 100].into()), "intrinsic gas too low");
        refused(with(&|t| t.gas_limit = 20_999), "intrinsic gas too low");
        refused(with(&|t| t.gas_limit = (1 << 24) + 1), "gas limit too high");
        refused(with(&|t| t.max_priority_fee_per_gas = 2_001), "max priority fee");
        refused(with(&|t| t.to = TxKind::Create), "intrinsic gas too low");
        assert!(p.check(&with(&|t| t.gas_limit = 1 << 24)).is_ok());
        let c = p.check(&signed(&key, 0, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            p.add(c.clone(), 0, 0, U256::from(5)),
            Err(MempoolError::InsufficientFunds { .. })
        ));
        assert!(matches!(
            p.add(c.clone(), 0, 1, U256::from(RICH)),
            Err(MempoolError::NonceTooLow { .. })
        ));
        p.add(c.clone(), 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)), Err(MempoolError::Known));
        let far = p.check(&signed(&key, 9, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            p.add(far, 0, 0, U256::from(RICH)),
            Err(MempoolError::NonceTooHigh { .. })
        ));
        // A sender with as many waiting as one may (a stored block ran the first two, not yet
        // cleared): its next nonce is refused for the sender's limit, in geth's words, not
        // as a nonce too high (before stop 50).
        for n in 1..4 {
            let c = p.check(&signed(&key, n, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let next = p.check(&signed(&key, 4, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        let e = p.add(next, 0, 2, U256::from(RICH));
        assert_eq!(e, Err(MempoolError::AccountLimit { pooled: 4, max: 4 }));
        assert!(e.is_err_and(|e| e.to_string().starts_with("account limit exceeded")));
    }

    /// A transaction handed over and not ordered within the wait is handed over again (once
    /// per wait); one ordered, or not handed yet (behind a gap), is not.
    #[test]
    fn transactions_never_ordered_are_handed_again() {
        let key = PrivateKeySigner::random();
        let mut p = pool(16, 100);
        let add = |p: &mut Mempool, n| {
            let c = p.check(&signed(&key, n, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            let hash = c.hash;
            let handed = p.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
            (hash, handed.len())
        };
        let (first, handed) = add(&mut p, 0);
        assert_eq!(handed, 1);
        let (_, handed) = add(&mut p, 2);
        assert_eq!(handed, 0, "nonce 2 waits for 1");
        let wait = Duration::from_secs(10);
        let now = Instant::now();
        assert!(p.rehand(now, wait, |_| false).is_empty(), "too early");
        let later = now + Duration::from_secs(11);
        assert!(p.rehand(later, wait, |h| *h == first).is_empty(), "ordered already");
        let again = p.rehand(later, wait, |_| false);
        assert_eq!(again.len(), 1, "only nonce 0: nonce 2 was never handed");
        assert!(p.rehand(later + Duration::from_secs(1), wait, |_| false).is_empty());
        assert_eq!(p.rehand(later + Duration::from_secs(12), wait, |_| false).len(), 1);
    }

    /// A waiting transaction (held behind a nonce gap) can be replaced with a fee bump; one
    /// already handed to consensus cannot: consensus orders first in, first out, so the
    /// replacement would come second and fail on its nonce.
    #[test]
    fn only_a_transaction_not_yet_handed_can_be_replaced() {
        let key = PrivateKeySigner::random();
        let mut p = pool(4, 100);
        let add = |p: &mut Mempool, nonce, fee| {
            let c = p.check(&signed(&key, nonce, fee, 31337)).unwrap_or_else(|e| panic!("{e}"));
            let hash = c.hash;
            (hash, p.add(c, 0, 0, U256::from(RICH)).map(|v| v.len()))
        };
        assert_eq!(add(&mut p, 0, 2_000).1, Ok(1));
        assert_eq!(add(&mut p, 0, 4_000).1, Err(MempoolError::AlreadyOrdering { nonce: 0 }));
        // Unbumped: geth's words, handed or not (since stop 50).
        assert_eq!(add(&mut p, 0, 2_100).1, Err(MempoolError::ReplacementUnderpriced));
        let (held, handed) = add(&mut p, 2, 2_000);
        assert_eq!(handed, Ok(0), "nonce 2 waits for 1");
        assert_eq!(add(&mut p, 2, 2_100).1, Err(MempoolError::ReplacementUnderpriced));
        let (replacement, handed) = add(&mut p, 2, 2_200);
        assert_eq!(handed, Ok(0));
        assert!(p.contains(&replacement) && !p.contains(&held));
        assert_eq!(p.len(), 2);
        // Nonce 1 arrives: it and the replacement go to consensus.
        assert_eq!(add(&mut p, 1, 2_000).1, Ok(2));
    }

    /// A journal read back adds the last transaction of each sender and nonce (a replaced
    /// one must not come back), in the order they were accepted.
    #[test]
    fn only_the_latest_of_each_nonce_is_read_back() {
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let p = pool(16, 100);
        let c = |k: &PrivateKeySigner, nonce, fee| {
            p.check(&signed(k, nonce, fee, 31337)).unwrap_or_else(|e| panic!("{e}"))
        };
        let all = vec![c(&a, 3, 2_000), c(&b, 3, 2_000), c(&a, 3, 3_000), c(&a, 4, 2_000)];
        let want: Vec<B256> = [&all[1], &all[2], &all[3]].iter().map(|c| c.hash).collect();
        let got: Vec<B256> = latest_of_each_nonce(all).iter().map(|c| c.hash).collect();
        assert_eq!(got, want);
    }

    /// Eviction takes the cheapest held transaction of another sender (for a held one, only
    /// one tipping less); a handed one is in consensus's queue whatever the pool does, so it
    /// is never evicted.
    #[test]
    fn a_full_pool_evicts_the_cheapest_held_transaction_or_refuses() {
        let mut p = pool(4, 2);
        let (a, b, c) =
            (PrivateKeySigner::random(), PrivateKeySigner::random(), PrivateKeySigner::random());
        // a's waits for nonce 0; b's cheaper one is handed.
        let held = p.check(&signed(&a, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(held.clone(), 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(0));
        let handed = p.check(&signed(&b, 0, 1_200, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(handed.clone(), 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(1));
        // A held one evicts a held one only if it tips more.
        let cheap = p.check(&signed(&c, 1, 1_500, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(cheap, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
        let rich = p.check(&signed(&c, 1, 8_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        let rich_hash = rich.hash;
        p.add(rich, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 2);
        assert!(!p.contains(&held.hash), "a's held transaction was evicted");
        assert!(p.contains(&handed.hash), "b's handed one stays");
        // A ready one evicts a held one whatever it tips.
        let d = PrivateKeySigner::random();
        let ready = p.check(&signed(&d, 0, 1_100, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(ready, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(1));
        assert!(!p.contains(&rich_hash));
        // Now both are handed: nothing can be evicted.
        let e = PrivateKeySigner::random();
        let richer = p.check(&signed(&e, 0, 90_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(richer, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
    }

    /// Held transactions (behind a nonce gap) never pay for their place: at most `held` of
    /// them wait, and one ready to hand takes a held one's place in a full pool whatever
    /// the tips. Before stop 38 throwaway keys could fill the pool with held transactions
    /// that outbid every honest one.
    #[test]
    fn held_transactions_cannot_crowd_out_ready_ones() {
        let mut p = pool(8, 6);
        p.cfg.held = 4;
        let add = |p: &mut Mempool, key: &PrivateKeySigner, nonce, fee| {
            let c = p.check(&signed(key, nonce, fee, 31337)).unwrap_or_else(|e| panic!("{e}"));
            let hash = c.hash;
            let r = p.add(c, 0, 0, U256::from(RICH));
            assert_eq!(p.held, p.status().1, "the count of held transactions");
            r.map(|handed| (hash, handed.len()))
        };
        let spammers: Vec<_> = (0..5).map(|_| PrivateKeySigner::random()).collect();
        // Four held transactions, paying well; a fifth is refused unless it tips more.
        let mut held = Vec::new();
        for k in &spammers[..4] {
            held.push(add(&mut p, k, 1, 50_000).unwrap_or_else(|e| panic!("{e}")).0);
        }
        assert_eq!(add(&mut p, &spammers[4], 1, 50_000), Err(MempoolError::Full));
        add(&mut p, &spammers[4], 1, 60_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.status(), (0, 4));
        // Two ready transactions fill the pool; a third, tipping far less than the held ones,
        // takes a held one's place.
        let honest: Vec<_> = (0..3).map(|_| PrivateKeySigner::random()).collect();
        for k in &honest {
            assert_eq!(add(&mut p, k, 0, 2_000).map(|(_, n)| n), Ok(1));
        }
        assert_eq!(p.status(), (3, 3));
        assert_eq!(p.len(), 6);
        // A sender's missing nonce is ready too, and hands its held one with it.
        assert_eq!(add(&mut p, &spammers[4], 0, 2_000).map(|(_, n)| n), Ok(2));
        assert_eq!(p.status(), (5, 1));
        // Only handed transactions left to evict: a ready one is refused.
        let late = PrivateKeySigner::random();
        add(&mut p, &late, 0, 2_000).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.status(), (6, 0));
        assert_eq!(add(&mut p, &PrivateKeySigner::random(), 0, 90_000), Err(MempoolError::Full));
    }

    /// A sender's waiting transactions are checked against its balance together: one that
    /// the balance covers alone, but not after the ones before it, is refused.
    #[test]
    fn a_senders_transactions_must_be_affordable_together() {
        let mut p = pool(8, 100);
        let key = PrivateKeySigner::random();
        // Each costs 21,000 × 2,000 + 1.
        let cost = U256::from(21_000u64 * 2_000 + 1);
        let balance = cost * U256::from(2) + U256::from(5);
        let add = |p: &mut Mempool, nonce| {
            let c = p.check(&signed(&key, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(c, 0, 0, balance)
        };
        assert!(add(&mut p, 0).is_ok());
        assert!(add(&mut p, 1).is_ok());
        // geth's words: the balance, what the others may take, this one's cost, the gap.
        let e = add(&mut p, 2).map(|h| h.len()).err().map(|e| e.to_string());
        let words = format!(
            "insufficient funds for gas * price + value: balance {balance}, queued cost {}, tx \
             cost {cost}, overshot {}",
            cost * U256::from(2),
            cost - U256::from(5)
        );
        assert_eq!(e, Some(words));
        assert_eq!(
            add(&mut p, 2),
            Err(MempoolError::InsufficientFunds { balance, queued: cost * U256::from(2), cost })
        );
        // Only the ones before it count: nonce 0 at 2,200 a gas fits the balance alone (with
        // nonce 1 it would not), and is refused only because consensus has it already.
        let c = p.check(&signed(&key, 0, 2_200, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, balance), Err(MempoolError::AlreadyOrdering { nonce: 0 }));
        // A stored block ran nonce 0 and the pool has not cleared it yet: its cost has left
        // the balance already, and is not counted again.
        let c = p.check(&signed(&key, 2, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.add(c, 1, 1, cost * U256::from(2)).is_ok());
        // The ones after it count too: another sender holds nonces 1 and 2 (behind a gap),
        // which its balance pays for; nonce 0, filling the gap, would make three.
        let other = PrivateKeySigner::random();
        let add = |p: &mut Mempool, nonce| {
            let c = p.check(&signed(&other, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(c, 0, 0, balance)
        };
        assert!(add(&mut p, 1).is_ok());
        assert!(add(&mut p, 2).is_ok());
        assert_eq!(
            add(&mut p, 0),
            Err(MempoolError::InsufficientFunds { balance, queued: cost * U256::from(2), cost })
        );
    }

    /// A transaction execution dropped is forgotten in the journal too: read back after a
    /// restart, the journal no longer holds it (others stay).
    #[test]
    fn a_forgotten_transaction_does_not_come_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        let mut p = pool(8, 100);
        let (journal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        p.set_journal(journal);
        let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut hashes = Vec::new();
        for k in [&a, &b] {
            let c = p.check(&signed(k, 0, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            hashes.push(c.hash);
            p.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        }
        p.forget(&hashes[0]);
        drop(p);
        let (_, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records.len(), 3, "two transactions and a tombstone");
        let back = without_forgotten(&records);
        assert_eq!(back.len(), 1);
        assert_eq!(alloy_primitives::keccak256(&back[0]), hashes[1]);
        // A tombstone forgets what came before it only: the same transaction sent again
        // after it stays.
        let mut again = records.clone();
        again.push(records[0].clone());
        let back = without_forgotten(&again);
        let back: Vec<_> = back.iter().map(alloy_primitives::keccak256).collect();
        assert_eq!(back, vec![hashes[1], hashes[0]]);
    }

    /// A sender that delegates to code (EIP-7702) may have one transaction in the pool, at
    /// its next nonce (which is handed at once, so it cannot be replaced either).
    #[test]
    fn a_delegated_sender_has_one_transaction_in_flight() {
        let mut p = pool(8, 100);
        let k = PrivateKeySigner::random();
        let add = |p: &mut Mempool, nonce: u64, fee: u128, account_nonce: u64| {
            let c = p.check(&signed(&k, nonce, fee, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add_from(c, 0, account_nonce, U256::from(RICH), true).map(|h| h.len())
        };
        // (geth's words for a gap since stop 50.)
        assert_eq!(add(&mut p, 3, 2_000, 0), Err(MempoolError::DelegatedGap), "a gap");
        assert_eq!(add(&mut p, 0, 2_000, 0), Ok(1));
        assert_eq!(add(&mut p, 1, 2_000, 0), Err(MempoolError::DelegatedInFlight));
        // Not delegated, the same sender queues more.
        let c = p.check(&signed(&k, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|h| h.len()), Ok(1));
    }

    /// A replaced transaction, and ones the pool evicted or let expire, are forgotten in the
    /// journal: a replacement that execution drops later does not bring back the
    /// transaction it replaced (a cancelled payment), and nothing the pool gave up on comes
    /// back with a fresh lifetime.
    #[test]
    fn replaced_evicted_and_expired_transactions_do_not_come_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("journal");
        let mut p = pool(8, 100);
        let (journal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        p.set_journal(journal);
        let k = PrivateKeySigner::random();
        // Held behind a gap (nonce 1), then replaced with a fee bump, then dropped.
        let a = p.check(&signed(&k, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        p.add(a, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        let b = p.check(&signed(&k, 1, 4_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        let b_hash = b.hash;
        p.add(b, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        p.forget(&b_hash);
        // Another sender's held transaction expires.
        let other = PrivateKeySigner::random();
        let c = p.check(&signed(&other, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        p.add(c, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        let later = Instant::now() + Duration::from_secs(p.cfg.lifetime_secs + 1);
        assert_eq!(p.expire(later), 1);
        // With room for one held transaction, a third sender's (tipping more) evicts a
        // fourth's.
        p.cfg.held = 1;
        let (third, fourth) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let d = p.check(&signed(&fourth, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        p.add(d, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        let e = p.check(&signed(&third, 1, 4_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        let kept = e.payload.clone();
        p.add(e, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.status(), (0, 1), "one evicted");
        drop(p);
        let (_, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        // Only the transaction that won its place is read back.
        assert_eq!(without_forgotten(&records), vec![bytes::Bytes::from(kept.to_vec())]);
    }

    /// The pool's bytes are bounded too: held transactions give way to a ready one that does
    /// not fit, and with only handed ones left the pool refuses.
    #[test]
    fn the_pool_is_bounded_by_bytes() {
        let mut p = pool(8, 100);
        // Fixed keys: a signature's r or s with a leading zero byte encodes a byte shorter,
        // and with random keys about 1 % of these transactions came out a byte shorter (45 of
        // 4,000 in a count), enough to fail the test a few times in a hundred runs.
        let key = |i: u8| PrivateKeySigner::from_slice(&[i; 32]).unwrap_or_else(|e| panic!("{e}"));
        let (a, b, c, d, e) = (key(1), key(2), key(3), key(4), key(5));
        let size = signed(&a, 0, 2_000, 31337).len();
        for (k, nonce) in [(&a, 1), (&b, 1), (&c, 0), (&d, 0), (&e, 1), (&e, 0)] {
            assert_eq!(signed(k, nonce, 2_000, 31337).len(), size);
        }
        p.cfg.global_bytes = 3 * size;
        for (k, nonce) in [(&a, 1), (&b, 1), (&c, 0)] {
            let t = p.check(&signed(k, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(t, 0, 0, U256::from(RICH)).unwrap_or_else(|e| panic!("{e}"));
        }
        // A ready transaction larger than the held ones could make room for is refused
        // without evicting any of them.
        let big = with_input(&d, 0, 4 * size);
        let t = p.check(&big).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
        assert_eq!(p.status(), (1, 2), "nothing was evicted");
        // d's ready transaction evicts a held one (a's or b's).
        let t = p.check(&signed(&d, 0, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(1));
        assert_eq!(p.status(), (2, 1));
        assert!(p.bytes <= p.cfg.global_bytes);
        // A held one that tips no more than the other held one is refused; a ready one takes its place.
        let t = p.check(&signed(&e, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
        let t = p.check(&signed(&e, 0, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(1));
        assert_eq!(p.status(), (3, 0));
        let t = p.check(&signed(&a, 0, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
    }

    /// Eviction takes each other sender's last held transaction in turn, so a held one
    /// behind a better-tipping one of its sender cannot be reached: it is not counted as
    /// room. Before stop 39 it was, and a transaction that could not be made room for
    /// evicted what it could reach before it was refused.
    #[test]
    fn room_behind_a_better_tipping_transaction_is_not_counted() {
        let mut p = pool(8, 100);
        let (b, d, c) =
            (PrivateKeySigner::random(), PrivateKeySigner::random(), PrivateKeySigner::random());
        // Tips (base fee 1,000): 200, 200 and 2,000, all held behind nonce gaps.
        let held = [(&b, 1, 1_200), (&d, 1, 1_200), (&d, 2, 4_000)];
        let mut bytes = 0;
        for (k, nonce, fee) in held {
            let t = p.check(&signed(k, nonce, fee, 31337)).unwrap_or_else(|e| panic!("{e}"));
            bytes += t.payload.len();
            assert_eq!(p.add(t, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(0));
        }
        p.cfg.global_bytes = bytes;
        let size = bytes / 3;
        // A held transaction tipping 1,000 that needs nearly two transactions' room: b's
        // could go (tip 200), d's first could not (d's last tips 2,000 and goes first).
        let big = with_input(&c, 1, size - 16);
        let t = p.check(&big).unwrap_or_else(|e| panic!("{e}"));
        let over = t.payload.len();
        assert!(over > size && over <= 2 * size, "{over} against {size}");
        assert_eq!(p.add(t, 0, 0, U256::from(RICH)), Err(MempoolError::Full));
        assert_eq!(p.status(), (0, 3), "nothing was evicted");
    }

    /// Expiry drops what waits behind a gap, not what consensus holds.
    #[test]
    fn only_held_transactions_expire() {
        let key = PrivateKeySigner::random();
        let mut p = pool(16, 100);
        for (nonce, handed) in [(0, 1), (2, 0)] {
            let c = p.check(&signed(&key, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(handed));
        }
        let now = Instant::now();
        assert_eq!(p.expire(now), 0);
        assert_eq!(p.expire(now + Duration::from_secs(601)), 1);
        assert_eq!(p.len(), 1);
        assert_eq!(p.pending_nonce(&key.address(), 0), 1, "nonce 0, handed, stays");
        // Only as a last resort, after ten lifetimes, does a handed one go too.
        assert_eq!(p.expire(now + Duration::from_secs(5_900)), 0);
        assert_eq!(p.expire(now + Duration::from_secs(6_001)), 1);
        assert!(p.is_empty());
    }

    /// A lifetime of nothing drops held transactions at once, never one consensus holds
    /// before [`MIN_HANDED_LIFE`].
    #[test]
    fn handed_transactions_outlive_a_short_lifetime() {
        let key = PrivateKeySigner::random();
        let mut p = pool(16, 100);
        p.cfg.lifetime_secs = 0;
        for (nonce, handed) in [(0, 1), (2, 0)] {
            let c = p.check(&signed(&key, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(handed));
        }
        let now = Instant::now();
        assert_eq!(p.expire(now + Duration::from_millis(1)), 1);
        assert_eq!(p.pending_nonce(&key.address(), 0), 1, "nonce 0, handed, stays");
        assert_eq!(p.expire(now + MIN_HANDED_LIFE - Duration::from_secs(1)), 0);
        assert_eq!(p.expire(now + MIN_HANDED_LIFE + Duration::from_secs(1)), 1);
        assert!(p.is_empty());
    }

    /// The eviction index as it should be: each sender whose last transaction is held, by
    /// that one's tip.
    fn index_from_scratch(p: &Mempool) -> BTreeSet<(u128, Address)> {
        p.senders
            .iter()
            .filter_map(|(a, q)| {
                let (_, e) = q.txs.last_key_value()?;
                e.handed.is_none().then_some((e.tip, *a))
            })
            .collect()
    }

    /// What eviction can free for `sender`'s transaction, by a look at every sender (the
    /// pool's rule before stop 42): each other sender's run of held transactions from its
    /// last, down to the first one tipping `below` or more.
    fn room_by_scan(p: &Mempool, sender: &Address, below: Option<u128>) -> usize {
        p.senders
            .iter()
            .filter(|(a, _)| *a != sender)
            .flat_map(|(_, q)| {
                q.txs
                    .values()
                    .rev()
                    .take_while(|e| e.handed.is_none() && below.is_none_or(|t| e.tip < t))
            })
            .map(|e| e.payload.len())
            .sum()
    }

    /// Random additions (gaps, replacements, sizes that fill the pool's bytes), blocks and
    /// forgotten transactions: after each, the eviction index is what the queues say, the
    /// walk that counts what eviction could free agrees with a look at every sender, and the
    /// cheapest held last-in-line transaction is the one evicted.
    #[test]
    fn the_eviction_index_follows_the_queues() {
        // Fixed keys, like the steps: the keys' addresses break ties and their signatures'
        // lengths (a byte less now and then) count against the pool's bytes.
        let keys: Vec<PrivateKeySigner> = (1..=6u8)
            .map(|i| PrivateKeySigner::from_slice(&[i; 32]).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let mut p = pool(6, 14);
        p.cfg.held = 8;
        p.cfg.global_bytes = 4_000;
        let mut account = vec![0u64; keys.len()];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut height = 0;
        let (mut added, mut evictions) = (0, 0);
        for step in 0..3_000 {
            let k = (next() % keys.len() as u64) as usize;
            match next() % 12 {
                0..=8 => {
                    let nonce = account[k] + next() % 5;
                    let raw = if next() % 3 == 0 {
                        with_input(&keys[k], nonce, (next() % 900) as usize)
                    } else {
                        signed(&keys[k], nonce, 1_000 + u128::from(next() % 40) * 100, 31337)
                    };
                    let Ok(c) = p.check(&raw) else { continue };
                    let sender = c.sender;
                    let others: Vec<B256> = p
                        .by_hash
                        .iter()
                        .filter(|(_, (a, _))| *a != sender)
                        .map(|(h, _)| *h)
                        .collect();
                    // The one eviction takes first: the cheapest held last-in-line one.
                    let first =
                        p.evictable.iter().find(|(_, a)| *a != sender).and_then(|(_, a)| {
                            p.senders.get(a)?.txs.last_key_value().map(|(_, e)| e.hash)
                        });
                    if p.add(c, height, account[k], U256::from(RICH)).is_ok() {
                        added += 1;
                        let gone: Vec<&B256> = others.iter().filter(|h| !p.contains(h)).collect();
                        if !gone.is_empty() {
                            evictions += 1;
                            assert!(first.is_some_and(|f| gone.contains(&&f)), "step {step}");
                        }
                    }
                }
                9 | 10 => {
                    // A block ran the sender's next nonces that the pool handed.
                    let handed = p.senders.get(&keys[k].address()).map_or(0, |q| {
                        q.txs.range(account[k]..).take_while(|(_, e)| e.handed.is_some()).count()
                    }) as u64;
                    if handed > 0 {
                        height += 1;
                        let used = account[k]..account[k] + 1 + next() % handed;
                        account[k] = used.end;
                        p.on_block(&block_of(height, &keys[k], used), &[]);
                    }
                }
                _ => {
                    let hashes: Vec<B256> = p.by_hash.keys().copied().collect();
                    if !hashes.is_empty() {
                        let h = hashes[(next() % hashes.len() as u64) as usize];
                        p.forget(&h);
                    }
                }
            }
            assert_eq!(p.evictable, index_from_scratch(&p), "step {step}");
            assert_eq!(p.evict_key.len(), p.evictable.len(), "step {step}");
            let s = keys[(next() % keys.len() as u64) as usize].address();
            let below = (next() % 2 == 0).then(|| 1_000 + u128::from(next() % 40) * 100);
            assert_eq!(p.room(&s, below, usize::MAX), room_by_scan(&p, &s, below), "step {step}");
        }
        // The run went through full pools, not only empty ones.
        assert!(added > 500 && evictions > 50, "{added} added, {evictions} evictions");
    }

    /// A block that used `nonces` of `key`'s transactions, as the pipeline stores it.
    fn block_of(number: u64, key: &PrivateKeySigner, nonces: std::ops::Range<u64>) -> StoredBlock {
        let txs: Vec<TxEnvelope> = nonces
            .map(|n| {
                TxEnvelope::decode_2718(&mut &signed(key, n, 2_000, 31337)[..])
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let ordering = crate::chain::tests::single_commit(number);
        crate::chain::tests::stored(number, key, txs, Vec::new(), ordering)
    }

    #[test]
    fn an_account_read_before_the_last_cleared_block_is_read_again() {
        // The race a benchmark found: the RPC read the sender's nonce (0) at block 4; block 5
        // then used nonces 0 and 1 and emptied the sender's queue; the transaction with
        // nonce 2, added with the stale nonce 0, waited for nonces that never come again.
        let key = PrivateKeySigner::random();
        let mut p = pool(16, 100);
        for n in 0..2 {
            let c = p.check(&signed(&key, n, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.add(c, 4, 0, U256::from(RICH)).map(|h| h.len()), Ok(1));
        }
        assert!(p.on_block(&block_of(5, &key, 0..2), &[]).is_empty());
        assert!(p.is_empty());
        assert_eq!(p.cleared(), 5);
        let c = p.check(&signed(&key, 2, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.add(c.clone(), 4, 0, U256::from(RICH)),
            Err(MempoolError::StaleState { read_at: 4, cleared: 5 })
        );
        assert!(p.is_empty(), "a stale add leaves nothing behind");
        // The same for the next nonce `eth_getTransactionCount(.., "pending")` answers: from
        // the stale read it would be 0, which block 5 used.
        assert_eq!(
            p.next_nonce(&key.address(), 0, 4),
            Err(MempoolError::StaleState { read_at: 4, cleared: 5 })
        );
        assert_eq!(p.next_nonce(&key.address(), 2, 5), Ok(2));
        // Read again at block 5: nonce 2 is next, and the transaction goes to consensus.
        assert_eq!(p.add(c, 5, 2, U256::from(RICH)).map(|h| h.len()), Ok(1));
    }

    /// An account whose EIP-7702 authorization waits in the pool may have one transaction in
    /// flight (geth's rule; before stop 50 it could queue more, which execution dropped once
    /// the delegation had used a nonce), and with none in flight may send one past its
    /// authorization's nonce, held until the authorization is applied; an account with more
    /// than one transaction waiting cannot be delegated by another's transaction; once the
    /// authorization leaves the pool, its signer queues again.
    #[test]
    fn a_waiting_authorization_makes_its_signer_delegated() {
        let keys = [(); 4].map(|()| PrivateKeySigner::random());
        let [signer, relayer, other, carol] = &keys;
        let mut p = pool(16, 100);
        let add = |p: &mut Mempool, key: &PrivateKeySigner, nonce: u64| {
            let c = p.check(&signed(key, nonce, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
            p.add(c, 0, 0, U256::from(RICH)).map(|h| h.len())
        };
        let env =
            crate::chain::tests::delegating(relayer, 0, signer, Address::ZERO, 100_000, 2_000);
        let c = p.check(&env.encoded_2718()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.authorities, vec![signer.address()]);
        let delegation = c.hash;
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|h| h.len()), Ok(1));
        assert_eq!(add(&mut p, signer, 0), Ok(1));
        assert_eq!(add(&mut p, signer, 1), Err(MempoolError::DelegatedInFlight));
        // Two of `other`'s wait: another's authorization of it is refused.
        assert_eq!((add(&mut p, other, 0), add(&mut p, other, 1)), (Ok(1), Ok(1)));
        let env = crate::chain::tests::delegating(relayer, 1, other, Address::ZERO, 100_000, 2_000);
        let c = p.check(&env.encoded_2718()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)), Err(MempoolError::AuthorityReserved));
        // Carol's authorization waits, nothing of hers does: her nonce past it is held.
        let env = crate::chain::tests::delegating(relayer, 1, carol, Address::ZERO, 100_000, 2_000);
        let c = p.check(&env.encoded_2718()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|h| h.len()), Ok(1));
        assert_eq!(add(&mut p, carol, 1), Ok(0));
        // The authorization gone from the pool, the signer queues more again.
        p.forget(&delegation);
        assert_eq!(add(&mut p, signer, 1), Ok(1));
        assert_eq!(p.authorized.keys().collect::<Vec<_>>(), vec![&carol.address()]);
    }

    /// An EIP-7702 authorization in another sender's transaction uses its signer's nonce:
    /// the signer's transaction held for the nonce after it goes to consensus.
    #[test]
    fn an_authorization_that_uses_a_nonce_unblocks_its_signer() {
        let (signer, relayer) = (PrivateKeySigner::random(), PrivateKeySigner::random());
        let mut p = pool(16, 100);
        let c = p.check(&signed(&signer, 1, 2_000, 31337)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.add(c, 0, 0, U256::from(RICH)).map(|v| v.len()), Ok(0), "waits for 0");
        let env =
            crate::chain::tests::delegating(&relayer, 0, &signer, Address::ZERO, 100_000, 2_000);
        let ordering = crate::chain::tests::single_commit(1);
        let block = crate::chain::tests::stored(1, &relayer, vec![env], Vec::new(), ordering);
        assert_eq!(authorities(&block), vec![signer.address()]);
        // Without the signer's nonce the held transaction stays held.
        assert!(p.on_block(&block, &[]).is_empty());
        let handed = p.on_block(&block, &[(signer.address(), 1)]);
        assert_eq!(handed.len(), 1);
        assert_eq!(handed[0].sender, signer.address().into_array());
    }
}
