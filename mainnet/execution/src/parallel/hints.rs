//! Parallel hints: a prediction of the locations each transaction writes, from its envelope
//! and the profiles learned from earlier blocks, used to start a transaction only after the nearest earlier one predicted to write
//! what it touches. A wrong hint costs time, never correctness: validation checks every read.

use hashbrown::HashMap;
use parking_lot::Mutex;

use crate::writes::Loc;

use alloy_consensus::Transaction;
use alloy_primitives::{Address, U256};

use crate::env::RecoveredTx;

/// An abstract location two transactions can both touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Hint {
    /// An account's balance or nonce.
    Account(Address),
    /// A storage slot.
    Slot(Address, U256),
    /// A pool of an automated market maker, named by its two tokens in order.
    Pool(Address, Address),
    /// The balance of an owner (`.1`) in a token (`.0`). It names the slot by its owner
    /// instead of hashing the mapping key (two Keccak permutations per transaction, as much
    /// as the transaction's own), so it does not meet an access list naming that slot: a
    /// missed prediction, never a wrong result.
    Balance(Address, Address),
}

/// `transfer(address,uint256)`.
const ERC20_TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `transferFrom(address,address,uint256)`.
const ERC20_TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
/// Uniswap V2 router `swapExactTokensForTokens(uint256,uint256,address[],address,uint256)`.
const SWAP_EXACT_TOKENS: [u8; 4] = [0x38, 0xed, 0x17, 0x39];
/// Uniswap V2 router `swapTokensForExactTokens(uint256,uint256,address[],address,uint256)`.
const SWAP_FOR_EXACT_TOKENS: [u8; 4] = [0x88, 0x03, 0xdb, 0xee];

fn word(data: &[u8], i: usize) -> Option<&[u8]> {
    data.get(4 + 32 * i..4 + 32 * (i + 1))
}

fn address_word(data: &[u8], i: usize) -> Option<Address> {
    word(data, i).map(|w| Address::from_slice(&w[12..]))
}

/// Per-contract profiles learned from earlier blocks: for each (contract, selector), the
/// storage slots of the contract that every observed call wrote (a counter, a total, a
/// pool's reserves), as opposed to slots that depend on the arguments.
#[derive(Debug, Default)]
pub(crate) struct Profiles {
    learned: Mutex<HashMap<ProfileKey, Vec<U256>>>,
}

/// A contract and a function selector.
type ProfileKey = (Address, [u8; 4]);

/// Profiles stop growing past this many (contract, selector) pairs.
const MAX_PROFILES: usize = 1 << 16;

impl Profiles {
    fn key(tx: &RecoveredTx) -> Option<ProfileKey> {
        let to = tx.tx.to()?;
        let selector: [u8; 4] = tx.tx.input().get(..4)?.try_into().ok()?;
        Some((to, selector))
    }

    /// Learns from a finished block: `written[i]` are the locations transaction `i` wrote.
    pub(crate) fn learn(&self, txs: &[RecoveredTx], written: &[Vec<Loc>]) {
        self.learn_from(txs.iter().zip(written.iter().map(Vec::as_slice)));
    }

    /// Learns from transactions and the locations each wrote.
    pub(crate) fn learn_from<'t>(&self, done: impl Iterator<Item = (&'t RecoveredTx, &'t [Loc])>) {
        let mut learned = self.learned.lock();
        for (tx, locs) in done {
            let Some((to, selector)) = Self::key(tx) else { continue };
            let slots = locs.iter().filter_map(|l| match l {
                Loc::Storage(a, s) if *a == to => Some(*s),
                _ => None,
            });
            let full = learned.len() >= MAX_PROFILES;
            match learned.get_mut(&(to, selector)) {
                // Keep only the slots every call wrote.
                Some(known) => {
                    let now: Vec<U256> = slots.collect();
                    known.retain(|s| now.contains(s));
                }
                None if !full => {
                    // The lowest eight, not the first eight: a bin's writes come in the order
                    // of revm's hash map, which differs between processes, and the profile
                    // (so the plan and the path a block takes, never its result) would too.
                    let mut now: Vec<U256> = slots.collect();
                    now.sort_unstable();
                    now.dedup();
                    now.truncate(8);
                    learned.insert((to, selector), now);
                }
                None => {}
            }
        }
    }

    /// The learned slots of the function `tx` calls, in `learned` (the locked map).
    fn slots<'m>(learned: &'m HashMap<ProfileKey, Vec<U256>>, tx: &RecoveredTx) -> &'m [U256] {
        Self::key(tx).and_then(|k| learned.get(&k)).map_or(&[], Vec::as_slice)
    }
}

/// Whether the profiles learn from what `tx` writes (a call with a selector).
pub(crate) fn learns_from(tx: &RecoveredTx) -> bool {
    Profiles::key(tx).is_some()
}

/// A transaction's hints; most have three or fewer.
type Hints = smallvec::SmallVec<[Hint; 4]>;

fn hints_of(tx: &RecoveredTx, learned: &HashMap<ProfileKey, Vec<U256>>, out: &mut Hints) {
    out.push(Hint::Account(tx.sender));
    // The storage keys of an access list are slots the sender says the transaction touches
    // (its addresses alone are mostly contracts it only calls, so they predict nothing).
    if let Some(list) = tx.tx.access_list() {
        for item in list.iter() {
            out.extend(
                item.storage_keys
                    .iter()
                    .map(|k| Hint::Slot(item.address, U256::from_be_bytes(k.0))),
            );
        }
    }
    let Some(to) = tx.tx.to() else { return };
    for slot in Profiles::slots(learned, tx) {
        out.push(Hint::Slot(to, *slot));
    }
    let data = tx.tx.input();
    // A value transfer without calldata is most likely to an account with no code, which the
    // executor credits lazily: no conflict to predict. With calldata, the callee may move it.
    if !tx.tx.value().is_zero() && !data.is_empty() {
        out.push(Hint::Account(to));
    }
    let Some(selector) = data.get(..4) else { return };
    if selector == ERC20_TRANSFER {
        out.push(Hint::Balance(to, tx.sender));
        if let Some(r) = address_word(data, 0) {
            out.push(Hint::Balance(to, r));
        }
    } else if selector == ERC20_TRANSFER_FROM {
        for i in 0..2 {
            if let Some(a) = address_word(data, i) {
                out.push(Hint::Balance(to, a));
            }
        }
    } else if selector == SWAP_EXACT_TOKENS || selector == SWAP_FOR_EXACT_TOKENS {
        // The path is a dynamic array: its offset is word 2.
        let path = word(data, 2)
            .map(|w| U256::from_be_slice(w))
            .and_then(|o| usize::try_from(o).ok())
            // Calldata is untrusted: every offset is checked.
            .and_then(|o| o.checked_add(4))
            .and_then(|start| {
                let word_at = |i: usize| {
                    let from = start.checked_add(i.checked_mul(32)?)?;
                    data.get(from..from.checked_add(32)?)
                };
                let len =
                    usize::try_from(U256::from_be_slice(word_at(0)?)).ok().filter(|l| *l <= 8)?;
                (1..=len)
                    .map(|k| word_at(k).map(|w| Address::from_slice(&w[12..])))
                    .collect::<Option<Vec<_>>>()
            });
        if let Some(path) = path {
            for pair in path.windows(2) {
                let (a, b) =
                    if pair[0] < pair[1] { (pair[0], pair[1]) } else { (pair[1], pair[0]) };
                out.push(Hint::Pool(a, b));
                out.push(Hint::Balance(pair[0], tx.sender));
            }
        }
    }
}

/// What the hints say about a block.
pub(crate) struct Analysis {
    /// For each transaction, the nearest earlier transaction predicted to write a location
    /// it touches.
    pub(crate) deps: Vec<Option<usize>>,
    /// For each transaction, a representative of its group: two transactions predicted to
    /// touch one location (or one pays an account the other writes) are in one group.
    pub(crate) group: Vec<u32>,
}

/// Union-find over transaction indices (path halving; the lower index is the root, so the
/// result depends on nothing but the block).
struct Groups(Vec<u32>);

impl Groups {
    fn find(&mut self, mut i: u32) -> u32 {
        while self.0[i as usize] != i {
            let up = self.0[self.0[i as usize] as usize];
            self.0[i as usize] = up;
            i = up;
        }
        i
    }

    fn union(&mut self, a: u32, b: u32) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            self.0[hi as usize] = lo;
        }
    }
}

/// A 64-bit fingerprint of a hint. Two hints with one fingerprint are treated as one
/// location, which can only add a dependency or merge two groups: the hints steer the
/// schedule, and validation or the partition's claims check every access anyway.
fn fingerprint(h: &Hint) -> u64 {
    fn word(b: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    }
    fn mix(acc: u64, w: u64) -> u64 {
        (acc ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }
    fn address(acc: u64, a: &Address) -> u64 {
        let a = a.as_slice();
        mix(mix(mix(acc, word(&a[..8])), word(&a[8..16])), word(&a[16..]))
    }
    let acc = match h {
        Hint::Account(a) => address(1, a),
        Hint::Slot(a, s) => s.as_limbs().iter().fold(address(2, a), |acc, l| mix(acc, *l)),
        Hint::Pool(a, b) => address(address(3, a), b),
        Hint::Balance(t, o) => address(address(4, t), o),
    };
    // A final avalanche: the map below uses these bits as they are.
    let x = (acc ^ (acc >> 32)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    x ^ (x >> 32)
}

/// The fingerprint of a location, equal to that of the hint naming it.
pub(super) fn loc_fingerprint(loc: &Loc) -> u64 {
    match loc {
        Loc::Account(a) => fingerprint(&Hint::Account(*a)),
        Loc::Storage(a, s) => fingerprint(&Hint::Slot(*a, *s)),
    }
}

/// Hashes a fingerprint to itself (it is already well mixed).
#[derive(Default)]
pub(super) struct Same(u64);

impl std::hash::Hasher for Same {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// A map keyed by fingerprints.
pub(super) type ByFingerprint<V> = HashMap<u64, V, std::hash::BuildHasherDefault<Same>>;

/// Predicts each transaction's locations and links the block.
///
/// `paid[i]` is the account transaction `i` pays lazily ([`super::lazy_recipient`]): it
/// predicts no dependency (payments to one account commute), but it joins the group of the
/// transactions predicted to write that account, if any.
///
/// The hints of each transaction (decoding, balance-slot hashes, fingerprints) are computed
/// on the current rayon pool; the pass that links them runs in block order.
pub(crate) fn analyze(
    txs: &[RecoveredTx],
    paid: &[Option<Address>],
    profiles: &Profiles,
) -> Analysis {
    use rayon::prelude::*;
    let fingerprints: Vec<smallvec::SmallVec<[u64; 4]>> = {
        let learned = profiles.learned.lock();
        let learned = &*learned;
        txs.par_iter()
            .with_min_len(256)
            .map(|tx| {
                let mut out = Hints::new();
                hints_of(tx, learned, &mut out);
                out.iter().map(fingerprint).collect()
            })
            .collect()
    };
    let n = txs.len();
    let mut last: ByFingerprint<u32> = HashMap::with_capacity_and_hasher(2 * n, Default::default());
    let mut groups = Groups((0..n as u32).collect());
    let mut deps = Vec::with_capacity(n);
    for (j, fps) in fingerprints.iter().enumerate() {
        let j32 = j as u32;
        let mut dep = None;
        for fp in fps {
            if let Some(i) = last.insert(*fp, j32) {
                // A transaction's own hints can repeat (a transfer to oneself).
                if i != j32 {
                    dep = dep.max(Some(i as usize));
                    groups.union(i, j32);
                }
            }
        }
        deps.push(dep);
    }
    // A payment joins the last predicted writer of the account it pays; the writers of one
    // location are already one group.
    let paying: Vec<(u32, u32)> = paid
        .par_iter()
        .with_min_len(1024)
        .enumerate()
        .filter_map(|(j, to)| {
            let i = *last.get(&fingerprint(&Hint::Account((*to)?)))?;
            Some((i, j as u32))
        })
        .collect();
    for (i, j) in paying {
        groups.union(i, j);
    }
    let group = (0..n as u32).map(|i| groups.find(i)).collect();
    Analysis { deps, group }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_primitives::{Bytes, Signature, TxKind};

    fn call(input: Vec<u8>) -> RecoveredTx {
        let tx = TxEip1559 {
            to: TxKind::Call(Address::repeat_byte(1)),
            input: Bytes::from(input),
            ..Default::default()
        };
        RecoveredTx {
            tx: TxEnvelope::Eip1559(tx.into_signed(Signature::new(
                U256::from(1),
                U256::from(1),
                false,
            ))),
            sender: Address::repeat_byte(2),
        }
    }

    /// Hints decode calldata nobody checked: hostile offsets and lengths predict nothing
    /// and never panic.
    #[test]
    fn hostile_calldata_never_panics() {
        let profiles = Profiles::default();
        let mut seed = 1u64;
        let mut txs = Vec::new();
        for selector in
            [SWAP_EXACT_TOKENS, SWAP_FOR_EXACT_TOKENS, ERC20_TRANSFER, ERC20_TRANSFER_FROM]
        {
            for offset in [
                U256::MAX,
                U256::from(u64::MAX),
                U256::from(usize::MAX - 3),
                U256::from(32),
                U256::ZERO,
            ] {
                for len in 0..200usize {
                    let mut input = selector.to_vec();
                    input.extend_from_slice(&[0u8; 64]);
                    input.extend_from_slice(&offset.to_be_bytes::<32>());
                    while input.len() < len {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        input.push((seed >> 56) as u8);
                    }
                    input.truncate(len.max(4));
                    txs.push(call(input));
                }
            }
        }
        let a = analyze(&txs, &vec![None; txs.len()], &profiles);
        assert_eq!(a.deps.len(), txs.len());
    }
}
