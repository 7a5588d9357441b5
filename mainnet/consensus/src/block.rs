//! AsyncBFT's wire format: proposals (blocks of the DAG), requests for missing blocks and
//! forwarded transactions, with a strict decoder: every length is bounded and checked, and
//! trailing bytes are refused.

use bytes::Bytes;
use farol_crypto::ed25519;
use farol_crypto::{Signature, SIGNATURE_LEN};
use thiserror::Error;

use crate::committee::ValidatorIndex;
use crate::engine::Transaction;

/// Most transactions in one proposal.
pub const MAX_BLOCK_TRANSACTIONS: usize = 20_000;
/// Most bytes of one transaction.
pub const MAX_TRANSACTION_BYTES: usize = 128 * 1024;
/// Most bytes of one message.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Most digests in one request.
pub const MAX_REQUEST: usize = 256;

/// Why a message was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end early.
    #[error("truncated message")]
    Truncated,
    /// Bytes follow the message.
    #[error("trailing bytes")]
    Trailing,
    /// An unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A count or size past its limit.
    #[error("{0} exceeds its limit")]
    Limit(&'static str),
    /// A signature that is not a valid point.
    #[error("bad signature encoding")]
    Signature,
}

/// Names one proposal: its author, round and digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// The round it was proposed in.
    pub round: u64,
    /// Its author.
    pub author: ValidatorIndex,
    /// `blake3` of its unsigned encoding.
    pub digest: [u8; 32],
}

/// A block's transaction digests, once computed. They follow from its transactions, so two
/// blocks compare equal whether or not either has computed them yet.
#[derive(Clone, Debug, Default)]
struct LazyDigests(std::sync::OnceLock<Vec<[u8; 32]>>);

impl PartialEq for LazyDigests {
    fn eq(&self, _: &LazyDigests) -> bool {
        true
    }
}

impl Eq for LazyDigests {}

/// A proposal: a vertex of the DAG. Its parents are blocks of earlier rounds (more than two
/// thirds of the stake from the round just before); referencing a block is voting for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The proposer.
    pub author: ValidatorIndex,
    /// The round, from 1.
    pub round: u64,
    /// The proposer's clock when it proposed (Unix milliseconds). Committed blocks take the
    /// stake-weighted median of their leader's parents' times.
    pub time_ms: u64,
    /// The blocks it builds on, in increasing (round, author) order.
    pub parents: Vec<BlockRef>,
    /// The batch it proposes.
    pub transactions: Vec<Transaction>,
    /// The author's share of the common coin of round `round − COIN_LAG` (see
    /// `asyncbft`): its coin share key's signature of [`Block::coin_message`]. Part of the
    /// digest, so the block's signature covers it. Kept as its 48 bytes: most coins are
    /// never combined (rule 16), and checking that a share is a point of the group costs
    /// about as much as signing; it is checked when its coin is combined.
    pub coin: Option<[u8; SIGNATURE_LEN]>,
    /// The author's Ed25519 signature of the digest (see [`Block::signing_message`]), by
    /// its network identity key.
    pub signature: ed25519::Signature,
    digest: [u8; 32],
    /// The digest of each transaction, computed once, when first asked for: after the
    /// proposal a received block allows, off the path rounds wait on.
    tx_digests: LazyDigests,
    /// The encoded message (sent and persisted as is, never encoded twice).
    raw: Bytes,
}

impl Block {
    /// A block signed by `sign` (which receives the message to sign).
    pub fn new(
        chain: &[u8; 32],
        author: ValidatorIndex,
        round: u64,
        time_ms: u64,
        parents: Vec<BlockRef>,
        transactions: Vec<Transaction>,
        sign: impl FnOnce(&[u8]) -> ed25519::Signature,
    ) -> Block {
        Block::with_coin(chain, author, round, time_ms, parents, transactions, None, sign)
    }

    /// A block that carries a coin share, signed by `sign`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_coin(
        chain: &[u8; 32],
        author: ValidatorIndex,
        round: u64,
        time_ms: u64,
        parents: Vec<BlockRef>,
        transactions: Vec<Transaction>,
        coin: Option<Signature>,
        sign: impl FnOnce(&[u8]) -> ed25519::Signature,
    ) -> Block {
        let mut raw = vec![if coin.is_some() { KIND_BLOCK_COIN } else { KIND_BLOCK }];
        encode_unsigned(&mut raw, author, round, time_ms, &parents, &transactions);
        let coin = coin.map(|c| c.to_bytes());
        if let Some(c) = &coin {
            raw.extend_from_slice(c);
        }
        let digest = *blake3::hash(&raw[1..]).as_bytes();
        let signature = sign(&Block::signing_message(chain, &digest));
        raw.extend_from_slice(&signature.to_bytes());
        let unsigned = Unsigned { author, round, time_ms, parents, transactions, coin };
        Block::assemble(unsigned, signature, digest, Bytes::from(raw))
    }

    /// The block of `unsigned` with its signature, digest and encoding (made or decoded).
    fn assemble(u: Unsigned, signature: ed25519::Signature, digest: [u8; 32], raw: Bytes) -> Block {
        let tx_digests = LazyDigests::default();
        let Unsigned { author, round, time_ms, parents, transactions, coin } = u;
        Block {
            author,
            round,
            time_ms,
            parents,
            transactions,
            coin,
            signature,
            digest,
            tx_digests,
            raw,
        }
    }

    /// What a coin share of `round` signs: a domain tag, the chain and the round.
    pub fn coin_message(chain: &[u8; 32], round: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(12 + 40);
        m.extend_from_slice(b"farol/coin/1");
        m.extend_from_slice(chain);
        m.extend_from_slice(&round.to_le_bytes());
        m
    }

    /// The block's message encoding (what is sent and persisted).
    pub fn encoded(&self) -> Bytes {
        self.raw.clone()
    }

    /// The digest of each transaction, in order.
    pub fn transaction_digests(&self) -> &[[u8; 32]] {
        self.tx_digests
            .0
            .get_or_init(|| self.transactions.iter().map(Transaction::digest).collect())
    }

    /// Gives the block the digests of its transactions, already known to whoever made it
    /// (they must be [`Transaction::digest`] of each, in order).
    pub(crate) fn with_transaction_digests(self, digests: Vec<[u8; 32]>) -> Block {
        debug_assert!(
            digests.len() == self.transactions.len()
                && self.transactions.iter().zip(&digests).all(|(t, d)| t.digest() == *d)
        );
        let _ = self.tx_digests.0.set(digests);
        self
    }

    /// What the author signs: a domain tag, the chain (so a block of one chain or epoch is no
    /// vote in another), and the digest.
    pub fn signing_message(chain: &[u8; 32], digest: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(16 + 64);
        m.extend_from_slice(b"farol/asyncbft/2");
        m.extend_from_slice(chain);
        m.extend_from_slice(digest);
        m
    }

    /// `blake3` of the unsigned encoding.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The reference to this block.
    pub fn reference(&self) -> BlockRef {
        BlockRef { round: self.round, author: self.author, digest: self.digest }
    }
}

/// A block's fields before it is signed.
struct Unsigned {
    author: ValidatorIndex,
    round: u64,
    time_ms: u64,
    parents: Vec<BlockRef>,
    transactions: Vec<Transaction>,
    coin: Option<[u8; SIGNATURE_LEN]>,
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_len(out: &mut Vec<u8>, len: usize) {
    // Every length written is bounded far below u32::MAX by the limits above.
    put_u32(out, len as u32);
}

fn encode_unsigned(
    out: &mut Vec<u8>,
    author: ValidatorIndex,
    round: u64,
    time_ms: u64,
    parents: &[BlockRef],
    transactions: &[Transaction],
) {
    put_u16(out, author.0);
    put_u64(out, round);
    put_u64(out, time_ms);
    put_len(out, parents.len());
    for p in parents {
        put_u64(out, p.round);
        put_u16(out, p.author.0);
        out.extend_from_slice(&p.digest);
    }
    encode_transactions(out, transactions);
}

/// An AsyncBFT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A proposal (sent by its author, or in answer to a request).
    Block(Box<Block>),
    /// "Send me these blocks" (digests of missing parents).
    Request(Vec<[u8; 32]>),
    /// Transactions forwarded to the validator they are assigned to.
    Transactions(Vec<Transaction>),
}

const KIND_BLOCK: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_TRANSACTIONS: u8 = 3;
const KIND_BLOCK_COIN: u8 = 4;

/// Whether `bytes` (a message) is a block, with or without a coin share.
pub fn is_block(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&KIND_BLOCK) | Some(&KIND_BLOCK_COIN))
}

fn encode_transactions(out: &mut Vec<u8>, txs: &[Transaction]) {
    put_len(out, txs.len());
    for t in txs {
        out.extend_from_slice(&t.sender);
        put_len(out, t.payload.len());
        out.extend_from_slice(&t.payload);
    }
}

impl Message {
    /// The encoding: a kind byte, then the body.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        match self {
            Message::Block(b) => return b.raw.clone(),
            Message::Request(ds) => {
                out.push(KIND_REQUEST);
                put_len(&mut out, ds.len());
                for d in ds {
                    out.extend_from_slice(d);
                }
            }
            Message::Transactions(txs) => {
                out.push(KIND_TRANSACTIONS);
                encode_transactions(&mut out, txs);
            }
        }
        Bytes::from(out)
    }

    /// Decodes a message. The signature of a block is not checked to be the author's (the
    /// engine does that), nor is a coin share (see [`Block::coin`]).
    pub fn decode(bytes: &Bytes) -> Result<Message, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::Limit("message size"));
        }
        let mut r = Reader { bytes, pos: 0 };
        let msg = match r.u8()? {
            kind @ (KIND_BLOCK | KIND_BLOCK_COIN) => {
                let start = r.pos;
                let author = ValidatorIndex(r.u16()?);
                let round = r.u64()?;
                let time_ms = r.u64()?;
                let np = r.len(usize::from(u16::MAX) + 1, "parents")?;
                // Capacity from what the bytes can hold, not from the claimed count.
                let mut parents = Vec::with_capacity(np.min(bytes.len() / 42));
                for _ in 0..np {
                    let round = r.u64()?;
                    let author = ValidatorIndex(r.u16()?);
                    parents.push(BlockRef { round, author, digest: r.array()? });
                }
                let transactions = r.transactions()?;
                let coin = if kind == KIND_BLOCK_COIN { Some(r.array()?) } else { None };
                let digest = *blake3::hash(&bytes[start..r.pos]).as_bytes();
                let sig = r.take(ed25519::SIGNATURE_LEN)?;
                let signature =
                    ed25519::Signature::from_bytes(sig).map_err(|_| DecodeError::Signature)?;
                if r.pos != bytes.len() {
                    return Err(DecodeError::Trailing);
                }
                let unsigned = Unsigned { author, round, time_ms, parents, transactions, coin };
                Message::Block(Box::new(Block::assemble(
                    unsigned,
                    signature,
                    digest,
                    bytes.clone(),
                )))
            }
            KIND_REQUEST => {
                let n = r.len(MAX_REQUEST, "request")?;
                let mut ds = Vec::with_capacity(n);
                for _ in 0..n {
                    ds.push(r.array()?);
                }
                Message::Request(ds)
            }
            KIND_TRANSACTIONS => Message::Transactions(r.transactions()?),
            k => return Err(DecodeError::Kind(k)),
        };
        if r.pos != bytes.len() {
            return Err(DecodeError::Trailing);
        }
        Ok(msg)
    }
}

struct Reader<'a> {
    bytes: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.bytes.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn len(&mut self, max: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        if n > max {
            return Err(DecodeError::Limit(what));
        }
        Ok(n)
    }
    fn transactions(&mut self) -> Result<Vec<Transaction>, DecodeError> {
        let n = self.len(MAX_BLOCK_TRANSACTIONS, "transactions")?;
        let mut txs = Vec::with_capacity(n.min(self.bytes.len() / 24));
        for _ in 0..n {
            let sender = self.array()?;
            let len = self.len(MAX_TRANSACTION_BYTES, "transaction size")?;
            let start = self.pos;
            self.take(len)?;
            txs.push(Transaction { sender, payload: self.bytes.slice(start..start + len) });
        }
        Ok(txs)
    }
}
