//! Block finality: every validator signs the hash of each block it stored (which commits to
//! the state root) and sends the vote to the others. When validators holding more than two
//! thirds of the stake signed the hash this node computed for a block, their aggregate is the
//! block's certificate: that block and every block before it are final. Votes for another
//! hash than ours mean the state diverged; they are counted and logged, never certified.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use bytes::Bytes;
use farol_consensus::{Added, Committee, ValidatorIndex, VoteCollector};
use farol_crypto::{SecretKey, Signature, SIGNATURE_LEN};
use farol_network::Network;
use tokio::sync::{broadcast, mpsc};

use crate::chain::{Certificate, StoredBlock};
use crate::pipeline::State;
use crate::validator::{NodeFrame, MAX_NODE_FRAME};

/// Kind byte of a finality vote frame.
pub const KIND_VOTE: u8 = 0x41;
/// Kind byte of a certificate announcement (each validator sends its newest every second,
/// so that one that missed the votes, being down, still learns what is final).
pub const KIND_CERTIFICATE: u8 = 0x42;
const VOTE_LEN: usize = 1 + 8 + 32 + 2 + SIGNATURE_LEN;
/// Votes are kept for blocks at most this far past our head.
const AHEAD: u64 = 4096;
/// Validators sign every block whose number is a multiple of this, and the newest block once
/// no newer one came for [`IDLE_VOTE`]. A certificate of a block makes every block before it
/// final, so signing each of the blocks a loaded chain makes (up to about 20 a second, from
/// groups of commits) costs BLS signatures and aggregate checks (2 pairings a certificate)
/// without finalizing more; every other block halves that and adds one block's wait.
pub const VOTE_EVERY: u64 = 2;
/// How long the newest block must stay the newest before a validator signs it anyway. Every
/// honest validator stores the same chain, so when blocks stop (an idle chain makes one a
/// second) all sign the same head and it gets its certificate.
pub const IDLE_VOTE: Duration = Duration::from_millis(25);

/// Which stored blocks a validator signs, and when (see [`VOTE_EVERY`] and [`IDLE_VOTE`]).
struct VotePlan<B> {
    /// The newest block stored and not signed yet, and when it came.
    unsigned: Option<(B, Instant)>,
}

impl<B> VotePlan<B> {
    fn new() -> VotePlan<B> {
        VotePlan { unsigned: None }
    }

    /// Block `number` was stored at `now`: returns it if it is to be signed now.
    fn stored(&mut self, number: u64, block: B, now: Instant) -> Option<B> {
        if number.is_multiple_of(VOTE_EVERY) {
            self.unsigned = None;
            Some(block)
        } else {
            self.unsigned = Some((block, now));
            None
        }
    }

    /// Returns the newest block once it has been the newest for [`IDLE_VOTE`].
    fn idle(&mut self, now: Instant) -> Option<B> {
        match self.unsigned.take() {
            Some((b, at)) if now.duration_since(at) >= IDLE_VOTE => Some(b),
            other => {
                self.unsigned = other;
                None
            }
        }
    }
}

/// What a validator signs for block `number` with `hash` on the chain of tag `chain` (the
/// consensus chain tag: the chain id, the genesis hash and the committee). Before stop 48 the
/// chain id alone was signed, and a certificate of another chain with that id whose
/// validators reused their keys (a testnet started again) passed here: served by a peer, it
/// made an honest node take its own chain for one that left the certified one, and stop.
pub fn vote_message(chain: &[u8; 32], number: u64, hash: &B256) -> Vec<u8> {
    let mut m = Vec::with_capacity(13 + 32 + 8 + 32);
    m.extend_from_slice(b"farol/block/2");
    m.extend_from_slice(chain);
    m.extend_from_slice(&number.to_le_bytes());
    m.extend_from_slice(hash.as_slice());
    m
}

fn encode_vote(number: u64, hash: &B256, signer: u16, sig: &Signature) -> Bytes {
    let mut out = Vec::with_capacity(VOTE_LEN);
    out.push(KIND_VOTE);
    out.extend_from_slice(&number.to_le_bytes());
    out.extend_from_slice(hash.as_slice());
    out.extend_from_slice(&signer.to_le_bytes());
    out.extend_from_slice(&sig.to_bytes());
    Bytes::from(out)
}

/// A vote's block, hash and signer, and its signature's bytes: decoded (a subgroup check,
/// tens of µs) only for a vote that counts (since stop 48; before, every vote frame paid it
/// before the cheap checks, a duplicate or one out of the window too).
fn decode_vote(b: &[u8]) -> Option<(u64, B256, u16, &[u8])> {
    if b.len() != VOTE_LEN || b[0] != KIND_VOTE {
        return None;
    }
    let number = u64::from_le_bytes(b[1..9].try_into().ok()?);
    let hash = B256::from_slice(&b[9..41]);
    let signer = u16::from_le_bytes(b[41..43].try_into().ok()?);
    Some((number, hash, signer, &b[43..]))
}

fn encode_certificate(c: &Certificate) -> Bytes {
    let mut out = Vec::with_capacity(41 + c.quorum.len());
    out.push(KIND_CERTIFICATE);
    out.extend_from_slice(&c.number.to_le_bytes());
    out.extend_from_slice(c.hash.as_slice());
    out.extend_from_slice(&c.quorum);
    Bytes::from(out)
}

/// The largest certificate frame: a quorum bitmap of 65,536 validators and a signature.
const MAX_CERTIFICATE_FRAME: usize = 41 + 8 * 1024 + SIGNATURE_LEN;
const _: () = assert!(MAX_CERTIFICATE_FRAME <= MAX_NODE_FRAME && VOTE_LEN <= MAX_NODE_FRAME);

fn decode_certificate(b: &[u8]) -> Option<Certificate> {
    if b.len() < 41 || b[0] != KIND_CERTIFICATE || b.len() > MAX_CERTIFICATE_FRAME {
        return None;
    }
    let number = u64::from_le_bytes(b[1..9].try_into().ok()?);
    Some(Certificate { number, hash: B256::from_slice(&b[9..41]), quorum: b[41..].to_vec() })
}

/// Certificates other validators announced, unchecked: each validator's newest, for a block
/// past our finalized one and at most [`AHEAD`] past our head. Kept apart by validator, so
/// that a faulty one's (made up, far ahead) cannot stand in for the others'.
#[derive(Debug, Default)]
struct Heard {
    by: BTreeMap<u16, Certificate>,
    /// The highest number each validator announced, kept after its announcement is taken:
    /// a validator is heard only above it. Before stop 32 a taken slot took any number
    /// again, so a faulty validator re-announcing one made-up certificate for a block we
    /// have cost a quorum check (two pairings) at every tick.
    highest: BTreeMap<u16, u64>,
}

impl Heard {
    /// Keeps `c`, announced by `from`, if it is above every number `from` announced before
    /// and within the window.
    fn offer(&mut self, from: u16, c: Certificate, finalized: u64, head: u64) {
        let newer = self.highest.get(&from).is_none_or(|h| c.number > *h);
        if newer && c.number > finalized && c.number <= head.saturating_add(AHEAD) {
            self.highest.insert(from, c.number);
            self.by.insert(from, c);
        }
    }

    /// Removes and returns the announcements whose blocks we have (at most `head`), highest
    /// first; forgets those at or below `finalized`; keeps the rest waiting.
    fn take_ready(&mut self, finalized: u64, head: u64) -> Vec<Certificate> {
        let mut ready = Vec::new();
        self.by.retain(|_, c| {
            if c.number <= finalized {
                return false;
            }
            if c.number > head {
                return true;
            }
            ready.push(c.clone());
            false
        });
        ready.sort_by_key(|c| std::cmp::Reverse(c.number));
        ready
    }
}

/// Votes received and made: block number → hash → signer → signature.
type Votes = BTreeMap<u64, HashMap<B256, BTreeMap<u16, Signature>>>;

/// The finality task of a validator.
pub struct Finality {
    /// Shared node state.
    pub state: Arc<State>,
    /// The validator set.
    pub committee: Arc<Committee>,
    /// This validator's position and key.
    pub me: (u16, SecretKey),
    /// Where votes go.
    pub network: Arc<Network>,
    /// The consensus chain tag, which votes sign ([`vote_message`]).
    pub chain: [u8; 32],
}

impl Finality {
    /// Runs until `frames` closes.
    pub async fn run(
        self,
        mut frames: mpsc::Receiver<NodeFrame>,
        mut blocks: broadcast::Receiver<Arc<StoredBlock>>,
    ) {
        let mut votes = Votes::new();
        // Validators whose vote for a block failed its check: their later votes for it are
        // dropped (before stop 32 each re-sent bad vote cost an aggregate check and a check
        // of every vote for the block).
        let mut faulty: BTreeMap<u64, BTreeSet<u16>> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut last_seen: HashMap<u16, Instant> = HashMap::new();
        let mut diverged_logged = 0u64;
        let mut announce = tokio::time::interval(Duration::from_secs(1));
        let mut heard = Heard::default();
        let mut plan = VotePlan::new();
        loop {
            tokio::select! {
                f = frames.recv() => {
                    let Some(NodeFrame { from, bytes, .. }) = f else { break };
                    last_seen.insert(from, Instant::now());
                    if bytes.first() == Some(&KIND_CERTIFICATE) {
                        // Each validator's newest announcement is kept apart, so that a
                        // faulty one's (made up, far ahead) cannot stand in for the others'.
                        if let Some(c) = decode_certificate(&bytes) {
                            let chain = &self.state.chain;
                            heard.offer(from, c, chain.finalized_number(), chain.head_number());
                        }
                        continue;
                    }
                    let Some((number, hash, signer, raw)) = decode_vote(&bytes) else { continue };
                    // The network authenticates the sender: a validator votes only for itself.
                    let head = self.state.chain.head_number();
                    if signer != from || number <= self.state.chain.finalized_number() || number > head + AHEAD {
                        continue;
                    }
                    // One vote per validator and block: a validator's first counts, so one
                    // voting for many hashes cannot grow the table.
                    if faulty.get(&number).is_some_and(|f| f.contains(&signer)) {
                        continue;
                    }
                    let by_hash = votes.entry(number).or_default();
                    if by_hash.values().any(|s| s.contains_key(&signer)) {
                        continue;
                    }
                    let Ok(sig) = Signature::from_bytes(raw) else { continue };
                    by_hash.entry(hash).or_default().insert(signer, sig);
                }
                b = blocks.recv() => {
                    let b = match b {
                        Ok(b) => b,
                        Err(broadcast::error::RecvError::Lagged(_)) => self.state.chain.head(),
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    // A block synced from peers under a certificate already checked needs no
                    // vote (a validator catching up would sign thousands), nor does one a
                    // certificate it holds covers already (a validator catching up through
                    // consensus after adopting a newer certificate; since stop 47).
                    if b.number() <= self.state.metrics.sync_target.load(Ordering::Relaxed)
                        || b.number() <= self.state.chain.finalized_number()
                    {
                        continue;
                    }
                    if let Some(b) = plan.stored(b.number(), b, Instant::now()) {
                        self.vote(&b, &mut votes);
                    }
                }
                _ = announce.tick() => {
                    if let Some(c) = self.state.chain.certificate() {
                        self.network.broadcast(encode_certificate(&c));
                    }
                }
                _ = tick.tick() => {
                    if let Some(b) = plan.idle(Instant::now()) {
                        self.vote(&b, &mut votes);
                    }
                    self.adopt_heard(&mut heard);
                    let now = Instant::now();
                    last_seen.retain(|_, t| now.duration_since(*t) < Duration::from_secs(5));
                    self.state.metrics.peers.store(last_seen.len() as u64, Ordering::Relaxed);
                    let certified =
                        self.certify(&mut votes, &mut faulty, &mut diverged_logged);
                    if let Some(n) = certified {
                        votes = votes.split_off(&(n + 1));
                        faulty = faulty.split_off(&(n + 1));
                    }
                    // Without a quorum (too many validators down) votes are kept for the
                    // newest blocks only.
                    while votes.len() > 2 * AHEAD as usize {
                        votes.pop_first();
                    }
                    while faulty.len() > 2 * AHEAD as usize {
                        faulty.pop_first();
                    }
                }
            }
        }
    }

    /// Signs block `b`, sends the vote to the others and counts it.
    fn vote(&self, b: &StoredBlock, votes: &mut Votes) {
        let (me, key) = &self.me;
        let sig = key.sign(&vote_message(&self.chain, b.number(), &b.hash));
        self.network.broadcast(encode_vote(b.number(), &b.hash, *me, &sig));
        votes.entry(b.number()).or_default().entry(b.hash).or_default().insert(*me, sig);
    }

    /// Certifies the highest block with a quorum of votes for our hash; returns its number.
    /// Signers whose vote failed its check are removed and listed in `faulty`.
    fn certify(
        &self,
        votes: &mut Votes,
        faulty: &mut BTreeMap<u64, BTreeSet<u16>>,
        diverged_logged: &mut u64,
    ) -> Option<u64> {
        let head = self.state.chain.head_number();
        let quorum = self.committee.quorum_threshold();
        let stake = |signers: &BTreeMap<u16, Signature>| {
            self.committee
                .stake_of(signers.keys().map(|i| ValidatorIndex(*i)).collect::<Vec<_>>().iter())
        };
        for (number, by_hash) in votes.range_mut(..=head).rev() {
            // The hash from the chain's index: the block itself (read from the log and
            // decoded when it is not among the newest) is not needed (before stop 41 it was
            // read for every voted number, every tick).
            let Some(ours_hash) = self.state.chain.hash(*number) else { continue };
            for (hash, signers) in by_hash.iter() {
                if *hash != ours_hash
                    && stake(signers) >= self.committee.validity_threshold()
                    && *number > *diverged_logged
                {
                    *diverged_logged = *number;
                    tracing::error!(number, ours = %ours_hash, theirs = %hash, "validators holding over a third of the stake signed another block hash: state diverged");
                }
            }
            let Some(signers) = by_hash.get_mut(&ours_hash) else { continue };
            if stake(signers) < quorum {
                continue;
            }
            let message = vote_message(&self.chain, *number, &ours_hash);
            let mut collector = VoteCollector::new(&self.committee, message);
            let mut cert = None;
            for (i, s) in signers.iter() {
                if let Ok(Added::Certified(c)) = collector.add(ValidatorIndex(*i), *s) {
                    cert = Some(c);
                    break;
                }
            }
            for bad in collector.faulty() {
                signers.remove(&bad.0);
                faulty.entry(*number).or_default().insert(bad.0);
            }
            let Some(cert) = cert else { continue };
            let number = *number;
            let c = Certificate { number, hash: ours_hash, quorum: cert.to_bytes() };
            match self.state.chain.set_certificate(c) {
                Ok(_) => self.finalized(number),
                Err(e) => {
                    tracing::error!(number, error = %e, "cannot store a finality certificate")
                }
            }
            return Some(number);
        }
        None
    }

    /// Adopts the highest certificate other validators announced whose block we have: it
    /// must be for the hash we computed and carry a quorum's valid aggregate. Announcements
    /// for blocks not stored yet wait; the others are used up.
    fn adopt_heard(&self, heard: &mut Heard) {
        let chain = &self.state.chain;
        for c in heard.take_ready(chain.finalized_number(), chain.head_number()) {
            // Hashes compared before the pairing check, from the index (no block read).
            let Some(ours) = self.state.chain.hash(c.number) else { continue };
            if ours != c.hash {
                // This node's chain left the certified one: it stops (the chain closed, it
                // reports itself failed) rather than serve and sign a chain the committee
                // did not certify (before stop 47 it only logged this).
                if self.signed_by_quorum(&c) {
                    tracing::error!(number = c.number, %ours, theirs = %c.hash, "a quorum certified another block hash: state diverged, stopping");
                    self.state.chain.close();
                    return;
                }
                continue;
            }
            if !self.signed_by_quorum(&c) {
                continue;
            }
            let number = c.number;
            match self.state.chain.set_certificate(c) {
                Ok(_) => self.finalized(number),
                Err(e) => {
                    tracing::error!(number, error = %e, "cannot store a finality certificate")
                }
            }
            return;
        }
    }

    /// Whether `c` carries a valid aggregate of a quorum's votes for its block.
    fn signed_by_quorum(&self, c: &Certificate) -> bool {
        farol_consensus::Certificate::from_bytes(&c.quorum, self.committee.len()).is_ok_and(|q| {
            q.verify(&self.committee, &vote_message(&self.chain, c.number, &c.hash)).is_ok()
        })
    }

    /// Records the block-finality latency of the transactions submitted here.
    fn finalized(&self, number: u64) {
        record_final(&self.state, number);
    }
}

/// Blocks up to `number` are block-final: counted in the metrics, and the block-finality
/// latency of the transactions submitted here recorded. Called by whichever stores the
/// certificate first, finality or block sync (before stop 49 sync only moved the count, so
/// the latencies of blocks it finalized first were never recorded: on a full node, none).
pub(crate) fn record_final(state: &State, number: u64) {
    let m = &state.metrics;
    // The highest: a certificate stored by the other may be above this one.
    let before = m.finalized.fetch_max(number, Ordering::Relaxed);
    let now = Instant::now();
    let waiting = state.submitted.lock().len() as u64;
    if waiting == 0 {
        return;
    }
    // More blocks than transactions waiting (a node adopting a certificate after catching
    // up): each waiting transaction is looked up in the index instead, no block read (since
    // stop 50; before, every block of the gap was read, on block sync's thread, whenever one
    // transaction submitted here was still waiting, one never included among them).
    if number.saturating_sub(before) > waiting.max(256) {
        let hashes: Vec<B256> = state.submitted.lock().keys().copied().collect();
        let found: Vec<B256> = hashes
            .into_iter()
            .filter(|h| state.chain.transaction_block(h).is_some_and(|n| n <= number))
            .collect();
        let mut submitted = state.submitted.lock();
        for h in found {
            if let Some(at) = submitted.remove(&h) {
                m.final_latency.record(now.duration_since(at));
            }
        }
        return;
    }
    // The blocks are read before the lock is taken, a few hundred at a time: a node that
    // adopts a certificate after catching up reads many, some from disk, and the storer
    // and admissions take the same lock (until stop 47 they waited for those reads).
    let mut from = before.saturating_add(1);
    while from <= number {
        let to = from.saturating_add(255).min(number);
        let mut hashes = Vec::new();
        for n in from..=to {
            // (Not kept among the old blocks cached for readers.)
            if let Some(b) = state.chain.scanned_block(n) {
                hashes.extend(b.tx_hashes());
            }
        }
        let mut submitted = state.submitted.lock();
        for h in hashes {
            if let Some(at) = submitted.remove(&h) {
                m.final_latency.record(now.duration_since(at));
            }
        }
        if submitted.is_empty() || to == u64::MAX {
            break;
        }
        drop(submitted);
        from = to + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a catch-up of more blocks than transactions waiting (and 256), the waiting
    /// transactions are looked up in the index instead of every block of the gap being read
    /// (stop 50): those included up to the final block are recorded and forgotten, one
    /// included after it, or never, waits on. (Since stop 51: the route was untested.)
    #[test]
    fn a_long_catch_up_records_finality_through_the_index() {
        let key = alloy_signer_local::PrivateKeySigner::random();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let keep = crate::chain::Recent { blocks: 8, transactions: 16, ..Default::default() };
        let (chain, made) = crate::chain::tests::settled_chain(dir.path(), &key, keep, 310);
        let store = farol_store::Store::open(dir.path().join("state"), Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let genesis = crate::Genesis::dev(&[key.address()], alloy_primitives::U256::from(1), 0);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let state =
            State::new(Arc::new(chain), Arc::new(store), genesis, Vec::new(), metrics.clone());
        let tx = |n: usize| made[n].tx_hashes().next().unwrap_or_else(|| panic!("block {n}"));
        let never = B256::repeat_byte(0x77);
        let waiting = |hashes: &[B256]| {
            let mut s = state.submitted.lock();
            for h in hashes {
                s.insert(*h, Instant::now());
            }
        };
        // A short step reads its blocks.
        waiting(&[tx(3), never]);
        record_final(&state, 5);
        assert_eq!(metrics.final_latency.count(), 1);
        // A long one (295 blocks, 4 waiting) looks the waiting ones up.
        waiting(&[tx(200), tx(300), tx(305)]);
        record_final(&state, 300);
        assert_eq!(metrics.final_latency.count(), 3);
        let left: BTreeSet<B256> = state.submitted.lock().keys().copied().collect();
        assert_eq!(left, BTreeSet::from([never, tx(305)]));
        assert_eq!(metrics.finalized.load(Ordering::Relaxed), 300);
    }

    /// Every `VOTE_EVERY`-th block is signed when stored; another waits, and is signed only if
    /// no newer block came for `IDLE_VOTE`.
    /// A validator announcing a made-up certificate far ahead, again and again, keeps only
    /// its own slot: the others' real announcements still come out once their blocks exist.
    #[test]
    fn a_made_up_announcement_cannot_hide_the_others() {
        let cert = |number: u64, tag: u8| Certificate {
            number,
            hash: B256::repeat_byte(tag),
            quorum: vec![tag; 4],
        };
        let mut heard = Heard::default();
        let (finalized, head) = (10, 20);
        heard.offer(3, cert(20 + AHEAD, 0xee), finalized, head);
        heard.offer(3, cert(u64::MAX, 0xee), finalized, head); // past the window: ignored
        heard.offer(1, cert(15, 1), finalized, head);
        heard.offer(2, cert(18, 2), finalized, head);
        heard.offer(2, cert(16, 2), finalized, head); // older than 2's last: ignored
        heard.offer(0, cert(9, 0), finalized, head); // finalized already: ignored
        let ready = heard.take_ready(finalized, head);
        assert_eq!(ready.iter().map(|c| c.number).collect::<Vec<_>>(), vec![18, 15]);
        // The made-up one waits in validator 3's slot; it never comes out while its block
        // does not exist, and is dropped once the chain is finalized past it.
        assert!(heard.take_ready(finalized, head + 100).is_empty());
        heard.offer(1, cert(30, 1), finalized, head + 100);
        assert_eq!(heard.take_ready(finalized, head + 100)[0].number, 30);
        assert_eq!(heard.by.len(), 1);
        assert!(heard.take_ready(20 + AHEAD, 20 + AHEAD).is_empty());
        assert!(heard.by.is_empty());
        // A validator is heard only above what it announced before, even once taken: the
        // same (or an older) announcement again is not checked again.
        let (finalized, head) = (20 + AHEAD, 100 + AHEAD);
        heard.offer(1, cert(head, 1), finalized, head);
        assert_eq!(heard.take_ready(finalized, head).len(), 1);
        heard.offer(1, cert(head, 1), finalized, head);
        heard.offer(1, cert(head - 1, 1), finalized, head);
        assert!(heard.take_ready(finalized, head).is_empty());
        heard.offer(1, cert(head + 1, 1), finalized, head + 1);
        assert_eq!(heard.take_ready(finalized, head + 1).len(), 1);
    }

    #[test]
    fn validators_sign_every_few_blocks_and_an_idle_head() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let k = VOTE_EVERY;
        let mut plan = VotePlan::new();
        assert_eq!(plan.stored(2 * k, 2 * k, ms(0)), Some(2 * k));
        assert_eq!(plan.idle(ms(100)), None, "a signed block is not signed again");
        assert_eq!(plan.stored(2 * k + 1, 2 * k + 1, ms(100)), None);
        // The newest for less than IDLE_VOTE: not yet.
        assert_eq!(plan.idle(ms(110)), None);
        assert_eq!(plan.idle(ms(100) + IDLE_VOTE), Some(2 * k + 1));
        assert_eq!(plan.idle(ms(500)), None);
        // The next multiple clears the one waiting: it finalizes it.
        assert_eq!(plan.stored(3 * k - 1, 3 * k - 1, ms(500)), None);
        assert_eq!(plan.stored(3 * k, 3 * k, ms(501)), Some(3 * k));
        assert_eq!(plan.idle(ms(1000)), None);
    }
}
