//! Keccak hashes remembered per worker thread: the logs blooms the workers compute, and the
//! KECCAK256 instruction of their EVMs.
//!
//! A block's transactions hash the same few inputs over and over. A bloom sets three bits per
//! address and per topic of every log, each from a Keccak hash of it: event signatures, token
//! and pool addresses, the sender as both `from` and `to` (a swap's four logs take about 14
//! hashes, of which usually one or two are new). Contracts hash mapping keys (a pool's balance
//! in each token, read and written several times per swap) and, in Uniswap V2's router, the
//! pair address derived from the two tokens, twice per lookup.
//!
//! Each memo is a direct-mapped table of whole inputs and their hashes; a lookup compares the
//! whole input, so a collision (crafted or not) only costs a hash, never a wrong result. The
//! sequential reference keeps alloy's `logs_bloom` and revm's own KECCAK256, which hash every
//! input (the baseline of `farol bench exec`).

use std::cell::RefCell;

use alloy_primitives::{keccak256, Bloom, Log, B256};
use revm::context_interface::Host;
use revm::interpreter::interpreter::{resize_memory, EthInterpreter};
use revm::interpreter::{InstructionContext, InstructionResult};
use revm::primitives::KECCAK_EMPTY;

/// Entries of the blooms' memo per thread (addresses and topics: about 260 KiB).
const BLOOM_ENTRIES: usize = 4096;
/// Entries of KECCAK256's memo per thread (inputs of up to 96 bytes: about 516 KiB).
const KECCAK_ENTRIES: usize = 4096;

/// One remembered input (zero-padded, with its length) and its hash.
#[derive(Clone, Copy)]
struct Entry<const MAX: usize> {
    len: u8,
    input: [u8; MAX],
    hash: B256,
}

/// Remembered hashes of inputs of 1 to `MAX` bytes (`MAX` at most 255, a multiple of 8).
pub(super) struct Memo<const MAX: usize> {
    entries: Box<[Entry<MAX>]>,
}

impl<const MAX: usize> Memo<MAX> {
    /// A memo of `entries` entries (a power of two).
    fn new(entries: usize) -> Self {
        debug_assert!(entries.is_power_of_two() && MAX.is_multiple_of(8) && MAX <= 255);
        // Length 0 marks an empty entry: the empty input is never looked up.
        let empty = Entry { len: 0, input: [0; MAX], hash: B256::ZERO };
        Memo { entries: vec![empty; entries].into() }
    }

    /// `keccak256(input)`, remembered when the input has 1 to `MAX` bytes.
    fn hash(&mut self, input: &[u8]) -> B256 {
        if input.is_empty() || input.len() > MAX {
            return keccak256(input);
        }
        let len = input.len() as u8;
        let mut padded = [0u8; MAX];
        padded[..input.len()].copy_from_slice(input);
        let slot = index(&padded, len, self.entries.len());
        let e = &mut self.entries[slot];
        if e.len != len || e.input != padded {
            *e = Entry { len, input: padded, hash: keccak256(input) };
        }
        e.hash
    }

    /// The bloom of `logs`, the same as `alloy_primitives::logs_bloom(logs)`.
    fn logs_bloom<'a>(&mut self, logs: impl IntoIterator<Item = &'a Log>) -> Bloom {
        let mut bloom = Bloom::ZERO;
        for log in logs {
            bloom.m3_2048_hashed(&self.hash(log.address.as_slice()));
            for topic in log.topics() {
                bloom.m3_2048_hashed(&self.hash(topic.as_slice()));
            }
        }
        bloom
    }
}

/// The entry for an input: all its bytes mixed (addresses made of counters differ only in
/// their last bytes; hashes, in all of them).
fn index(padded: &[u8], len: u8, entries: usize) -> usize {
    let mut h = u64::from(len);
    for word in padded.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    (h as usize) & (entries - 1)
}

thread_local! {
    static BLOOM_MEMO: RefCell<Option<Memo<32>>> = const { RefCell::new(None) };
    static KECCAK_MEMO: RefCell<Option<Memo<96>>> = const { RefCell::new(None) };
}

/// The bloom of `logs` through this thread's memo.
pub(super) fn logs_bloom(logs: &[Log]) -> Bloom {
    BLOOM_MEMO.with(|m| match m.try_borrow_mut() {
        Ok(mut memo) => memo.get_or_insert_with(|| Memo::new(BLOOM_ENTRIES)).logs_bloom(logs),
        // Re-entered (nothing does so today): no memo.
        Err(_) => alloy_primitives::logs_bloom(logs),
    })
}

/// `keccak256(input)` through this thread's memo.
fn keccak_remembered(input: &[u8]) -> B256 {
    KECCAK_MEMO.with(|m| match m.try_borrow_mut() {
        Ok(mut memo) => memo.get_or_insert_with(|| Memo::new(KECCAK_ENTRIES)).hash(input),
        Err(_) => keccak256(input),
    })
}

/// KECCAK256 for the workers' EVMs: revm's `system::keccak256` step for step (the same
/// checks, gas and memory expansion, in the same order, through revm's own functions), with
/// the hash from this thread's memo. Its static gas stays in the table.
pub(super) fn keccak256_instruction<H: Host + ?Sized>(
    cx: InstructionContext<'_, H, EthInterpreter>,
) -> Result<(), InstructionResult> {
    let InstructionContext { interpreter, host } = cx;
    let Some(([offset], top)) = interpreter.stack.popn_top::<1>() else {
        return Err(InstructionResult::StackUnderflow);
    };
    let len = revm::interpreter::as_usize_or_fail!(interpreter, top);
    if !interpreter.gas.record_regular_cost(host.gas_params().keccak256_cost(len)) {
        return Err(InstructionResult::OutOfGas);
    }
    let hash = if len == 0 {
        KECCAK_EMPTY
    } else {
        let from = revm::interpreter::as_usize_or_fail!(interpreter, offset);
        resize_memory(&mut interpreter.gas, &mut interpreter.memory, host.gas_params(), from, len)?;
        keccak_remembered(interpreter.memory.slice_len(from, len).as_ref())
    };
    *top = hash.into();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Address, Bytes, LogData};
    use rand::{Rng, RngCore, SeedableRng};

    fn random_logs(rng: &mut impl Rng, pool: &[B256]) -> Vec<Log> {
        (0..rng.random_range(0..6))
            .map(|_| {
                let pick = |rng: &mut _| pool[Rng::random_range(rng, 0..pool.len())];
                let address = Address::from_slice(&pick(rng)[12..]);
                let topics: Vec<B256> = (0..rng.random_range(0..=4)).map(|_| pick(rng)).collect();
                Log { address, data: LogData::new_unchecked(topics, Bytes::new()) }
            })
            .collect()
    }

    #[test]
    fn blooms_through_the_memo_equal_alloys() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Few distinct inputs, so that most hashes come from the memo; addresses that differ
        // only in their last byte, and the zero input, among them.
        let mut pool: Vec<B256> = (0..40)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                B256::from(b)
            })
            .collect();
        pool.extend((0u8..8).map(B256::with_last_byte));
        // A memo of two entries also makes every kind of collision and eviction happen.
        for entries in [BLOOM_ENTRIES, 2, 1] {
            let mut memo = Memo::<32>::new(entries);
            for _ in 0..2_000 {
                let logs = random_logs(&mut rng, &pool);
                assert_eq!(memo.logs_bloom(&logs), alloy_primitives::logs_bloom(&logs));
            }
        }
        for _ in 0..200 {
            let logs = random_logs(&mut rng, &pool);
            assert_eq!(logs_bloom(&logs), alloy_primitives::logs_bloom(&logs));
        }
    }

    #[test]
    fn hashes_of_every_length_through_the_memo_equal_keccaks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for len in 0..=130 {
            let mut input = vec![0u8; len];
            rng.fill_bytes(&mut input);
            // The same bytes at another length, a zero input of that length, and one that
            // differs from it only in its last byte.
            let mut longer = input.clone();
            longer.push(0);
            let mut last = vec![0u8; len];
            if let Some(b) = last.last_mut() {
                *b = 1;
            }
            inputs.extend([input, longer, vec![0u8; len], last]);
        }
        for entries in [KECCAK_ENTRIES, 4, 1] {
            let mut memo = Memo::<96>::new(entries);
            for _ in 0..3 {
                for input in &inputs {
                    assert_eq!(memo.hash(input), keccak256(input), "{} bytes", input.len());
                }
            }
        }
        for input in &inputs {
            assert_eq!(keccak_remembered(input), keccak256(input));
        }
    }

    #[test]
    fn an_address_and_a_topic_with_the_same_leading_bytes_are_different_inputs() {
        let mut memo = Memo::<32>::new(BLOOM_ENTRIES);
        let address = Address::repeat_byte(0xab);
        let mut topic = [0u8; 32];
        topic[..20].copy_from_slice(address.as_slice());
        let topic = B256::from(topic);
        assert_eq!(memo.hash(address.as_slice()), keccak256(address));
        assert_eq!(memo.hash(topic.as_slice()), keccak256(topic));
        assert_eq!(memo.hash(address.as_slice()), keccak256(address));
    }
}
