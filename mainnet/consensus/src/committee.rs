//! The validator committee of an epoch: keys, stakes and the two thresholds every rule of the
//! protocol counts against.

use std::collections::BTreeSet;

use farol_crypto::{ed25519, PublicKey, Signature};
use thiserror::Error;

/// Stake, in the smallest unit.
pub type Stake = u64;

/// A validator's position in its committee (0-based, the order the committee was given in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorIndex(pub u16);

/// One validator as the committee knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Its BLS key (admitted with a proof of possession): certificates.
    pub key: PublicKey,
    /// Its Ed25519 key (its network identity): the signatures of its blocks.
    pub block_key: ed25519::PublicKey,
    /// Its voting weight.
    pub stake: Stake,
}

/// Why a committee cannot be formed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CommitteeError {
    /// No validators.
    #[error("a committee needs at least one validator")]
    Empty,
    /// More validators than a [`ValidatorIndex`] can name.
    #[error("{0} validators; at most 65,536")]
    TooMany(usize),
    /// A validator with no stake.
    #[error("validator {0} has no stake")]
    ZeroStake(usize),
    /// The stakes add up past what the thresholds can be computed for.
    #[error("total stake overflows")]
    Overflow,
    /// The same key twice.
    #[error("validator {0} repeats the key of an earlier validator")]
    DuplicateKey(usize),
    /// The same block-signing key twice.
    #[error("validator {0} repeats the block-signing key of an earlier validator")]
    DuplicateBlockKey(usize),
    /// A proof of possession that does not verify.
    #[error("validator {0}: the proof of possession does not verify")]
    BadPossession(usize),
    /// Coin share keys for a different number of validators.
    #[error("{0} coin share keys for {1} validators")]
    CoinShares(usize, usize),
    /// Stakes so uneven that no share count separates the Byzantine validators from the
    /// honest ones (see [`Committee::coin_threshold`]).
    #[error("stakes too uneven for a coin with one share per validator")]
    CoinStakes,
    /// Coin share keys that do not come from one dealing of [`Committee::coin_threshold`].
    #[error("the coin share keys do not come from one dealing of threshold {0}")]
    CoinDealing(usize),
}

/// [`Committee::coin_threshold`] for a committee with these stakes (in any order), before
/// there is one (a dealer needs it to deal).
pub fn coin_threshold(stakes: &[Stake]) -> Option<usize> {
    let total: u128 = stakes.iter().map(|s| u128::from(*s)).sum();
    let (validity, quorum) = (total / 3 + 1, total * 2 / 3 + 1);
    let mut stakes: Vec<u128> = stakes.iter().map(|s| u128::from(*s)).collect();
    stakes.sort_unstable();
    // The most validators, smallest stakes first, below the validity threshold.
    let mut sum = 0;
    let byzantine = stakes.iter().take_while(|s| {
        sum += **s;
        sum < validity
    });
    let byzantine = byzantine.count();
    // The fewest honest validators a quorum can hold: a quorum with Byzantine members
    // holds honest ones of at least `quorum - (validity - 1)` stake, so at least as many
    // validators as, largest stakes first, reach that (whose shares a coin can count on
    // when the Byzantine members of the quorum withhold theirs).
    let honest_stake = quorum - (validity - 1);
    let mut sum = 0;
    let mut honest = 0;
    for s in stakes.iter().rev() {
        if sum >= honest_stake {
            break;
        }
        sum += s;
        honest += 1;
    }
    (byzantine < honest).then_some(byzantine + 1)
}

/// The common coin's public side: one share key per validator, the number of shares that
/// make a coin, and the group key they make it for (see `farol_crypto::coin`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoinKeys {
    /// Validator `i`'s share key.
    pub shares: Vec<PublicKey>,
    /// Shares needed: more than any Byzantine set of validators holds, at most what the
    /// honest ones hold.
    pub threshold: usize,
    /// The key the combined signature verifies under.
    pub group: PublicKey,
}

/// The validators of one epoch, in a fixed order.
///
/// With total stake `N` and Byzantine stake below `N/3`:
/// - a **quorum** is more than two thirds of the stake ([`Committee::quorum_threshold`]).
///   Two quorums share more stake than any Byzantine coalition can hold, so they share an
///   honest validator. The honest validators alone always make a quorum.
/// - **validity** is more than one third ([`Committee::validity_threshold`]): any such set
///   contains an honest validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    validators: Vec<Validator>,
    total: Stake,
    coin: Option<CoinKeys>,
}

/// A validator as a committee is given it.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its BLS key.
    pub key: PublicKey,
    /// The proof of possession of `key`.
    pub possession: Signature,
    /// Its Ed25519 block-signing key.
    pub block_key: ed25519::PublicKey,
    /// Its stake.
    pub stake: Stake,
}

impl Committee {
    /// A committee of `members` in this order. Every proof of possession is checked; keys
    /// must be distinct and stakes non-zero.
    pub fn new(members: Vec<Member>) -> Result<Committee, CommitteeError> {
        if members.is_empty() {
            return Err(CommitteeError::Empty);
        }
        if members.len() > usize::from(u16::MAX) + 1 {
            return Err(CommitteeError::TooMany(members.len()));
        }
        let mut seen = BTreeSet::new();
        let mut seen_block = BTreeSet::new();
        let mut total: Stake = 0;
        let mut validators = Vec::with_capacity(members.len());
        for (i, Member { key, possession, block_key, stake }) in members.into_iter().enumerate() {
            if stake == 0 {
                return Err(CommitteeError::ZeroStake(i));
            }
            if !seen.insert(key.to_bytes()) {
                return Err(CommitteeError::DuplicateKey(i));
            }
            if !seen_block.insert(block_key) {
                return Err(CommitteeError::DuplicateBlockKey(i));
            }
            key.verify_possession(&possession).map_err(|_| CommitteeError::BadPossession(i))?;
            // Thresholds are computed as 2 * total; keep that in range.
            total = total
                .checked_add(stake)
                .filter(|t| t.checked_mul(2).is_some())
                .ok_or(CommitteeError::Overflow)?;
            validators.push(Validator { key, block_key, stake });
        }
        Ok(Committee { validators, total, coin: None })
    }

    /// This committee with a common coin whose share keys are `shares` (validator `i`'s at
    /// `i`), dealt with [`Committee::coin_threshold`]. The keys are checked to come from one
    /// dealing: otherwise different sets of shares could make different coins.
    pub fn with_coin(mut self, shares: Vec<PublicKey>) -> Result<Committee, CommitteeError> {
        if shares.len() != self.len() {
            return Err(CommitteeError::CoinShares(shares.len(), self.len()));
        }
        let threshold = self.coin_threshold().ok_or(CommitteeError::CoinStakes)?;
        let group = farol_crypto::coin::group_key(&shares, threshold)
            .map_err(|_| CommitteeError::CoinDealing(threshold))?;
        self.coin = Some(CoinKeys { shares, threshold, group });
        Ok(self)
    }

    /// The common coin, if the committee has one.
    pub fn coin(&self) -> Option<&CoinKeys> {
        self.coin.as_ref()
    }

    /// How many validators' shares make a coin: one more than the most validators whose
    /// stakes together stay below a third (so Byzantine validators alone never make it), if
    /// every quorum (more than two thirds of the stake) holds that many honest members
    /// whatever Byzantine validators it holds (the coin's shares come from a quorum's blocks,
    /// and Byzantine members may withhold theirs). With equal stakes that is `f + 1` of
    /// `n = 3f + 1`. `None` when the stakes are so uneven that no count works.
    pub fn coin_threshold(&self) -> Option<usize> {
        let stakes: Vec<Stake> = self.validators.iter().map(|v| v.stake).collect();
        coin_threshold(&stakes)
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Always false: a committee has at least one validator.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// Total stake `N`.
    pub fn total_stake(&self) -> Stake {
        self.total
    }

    /// The smallest stake above two thirds of the total: `floor(2N/3) + 1`.
    pub fn quorum_threshold(&self) -> Stake {
        self.total * 2 / 3 + 1
    }

    /// The smallest stake above one third of the total: `floor(N/3) + 1`.
    pub fn validity_threshold(&self) -> Stake {
        self.total / 3 + 1
    }

    /// The validator at `index`, if there is one.
    pub fn validator(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(usize::from(index.0))
    }

    /// The index of the validator with `key`.
    pub fn index_of(&self, key: &PublicKey) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|v| v.key == *key)
            .and_then(|i| u16::try_from(i).ok())
            .map(ValidatorIndex)
    }

    /// Every validator with its index, in order.
    pub fn iter(&self) -> impl Iterator<Item = (ValidatorIndex, &Validator)> {
        self.validators.iter().enumerate().map(|(i, v)| (ValidatorIndex(i as u16), v))
    }

    /// The stake of validators `indices` (indices past the committee count nothing; a
    /// repeated index counts again, saturating).
    pub fn stake_of<'a>(&self, indices: impl IntoIterator<Item = &'a ValidatorIndex>) -> Stake {
        indices
            .into_iter()
            .filter_map(|i| self.validator(*i))
            .fold(0, |sum: Stake, v| sum.saturating_add(v.stake))
    }
}
