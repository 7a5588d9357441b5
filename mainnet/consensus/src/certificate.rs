//! Quorum certificates: a quorum of the committee's stake signing one message, as one BLS
//! aggregate and a bitmap of signers; and the aggregator that builds them from votes.

use std::collections::BTreeMap;

use farol_crypto::{aggregate, verify_aggregate, BlsError, Signature, SIGNATURE_LEN};
use thiserror::Error;

use crate::committee::{Committee, Stake, ValidatorIndex};

/// Why a certificate or a vote is refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CertificateError {
    /// The encoding is malformed.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// The signers' stake is below a quorum.
    #[error("signers hold {have} stake, a quorum is {need}")]
    NoQuorum {
        /// Stake of the signers.
        have: Stake,
        /// The quorum threshold.
        need: Stake,
    },
    /// A signer index outside the committee.
    #[error("validator {0} is not in the committee")]
    UnknownSigner(u16),
    /// The aggregate does not verify against the signers' keys.
    #[error("the aggregate signature does not verify: {0}")]
    BadSignature(BlsError),
}

/// Signers as a bitmap over committee positions.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Signers(Vec<u64>);

impl Signers {
    fn words(len: usize) -> usize {
        len.div_ceil(64)
    }

    /// An empty set for a committee of `len` validators.
    pub fn new(len: usize) -> Signers {
        Signers(vec![0; Self::words(len)])
    }

    /// Adds `index`; false if it was already there or is past the bitmap.
    pub fn insert(&mut self, index: ValidatorIndex) -> bool {
        let i = usize::from(index.0);
        match self.0.get_mut(i / 64) {
            Some(w) if *w & (1 << (i % 64)) == 0 => {
                *w |= 1 << (i % 64);
                true
            }
            _ => false,
        }
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: ValidatorIndex) -> bool {
        let i = usize::from(index.0);
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| ValidatorIndex((w * 64 + b) as u16))
        })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

/// A quorum of the committee's stake signing one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Who signed.
    pub signers: Signers,
    /// The aggregate of their signatures.
    pub signature: Signature,
}

impl Certificate {
    /// Checks that the signers hold a quorum of `committee`'s stake and that the aggregate is
    /// theirs on `message`: two pairings, however many signers.
    pub fn verify(&self, committee: &Committee, message: &[u8]) -> Result<(), CertificateError> {
        let mut keys = Vec::with_capacity(self.signers.len());
        let mut stake: Stake = 0;
        for i in self.signers.iter() {
            let v = committee.validator(i).ok_or(CertificateError::UnknownSigner(i.0))?;
            keys.push(v.key);
            stake += v.stake;
        }
        let need = committee.quorum_threshold();
        if stake < need {
            return Err(CertificateError::NoQuorum { have: stake, need });
        }
        verify_aggregate(&self.signature, message, &keys).map_err(CertificateError::BadSignature)
    }

    /// The encoding for a committee of `committee_len` validators: the signer bitmap
    /// (`ceil(len / 64)` little-endian words), then the 48-byte aggregate.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.signers.0.len() * 8 + SIGNATURE_LEN);
        for w in &self.signers.0 {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.signature.to_bytes());
        out
    }

    /// Decodes a certificate for a committee of `committee_len` validators. The length must
    /// be exact and no bit past the committee may be set; the signature is checked as a point
    /// (the quorum and the aggregate are [`Certificate::verify`]'s job).
    pub fn from_bytes(bytes: &[u8], committee_len: usize) -> Result<Certificate, CertificateError> {
        // Validator indexes are u16: past that a signer's index would wrap onto another's.
        if committee_len > usize::from(u16::MAX) + 1 {
            return Err(CertificateError::Malformed("a committee larger than indexes reach"));
        }
        let words = Signers::words(committee_len);
        if bytes.len() != words * 8 + SIGNATURE_LEN {
            return Err(CertificateError::Malformed("wrong length"));
        }
        let (bitmap, sig) = bytes.split_at(words * 8);
        let mut signers = Vec::with_capacity(words);
        for chunk in bitmap.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            signers.push(u64::from_le_bytes(w));
        }
        let used = committee_len % 64;
        if used != 0 && signers.last().is_some_and(|w| w >> used != 0) {
            return Err(CertificateError::Malformed("a signer past the committee"));
        }
        let signature = Signature::from_bytes(sig).map_err(CertificateError::BadSignature)?;
        Ok(Certificate { signers: Signers(signers), signature })
    }
}

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Counted; no quorum yet.
    Pending,
    /// The vote completed a quorum: here is the certificate.
    Certified(Box<Certificate>),
    /// Already had this validator's vote (or a certificate); ignored.
    Duplicate,
}

/// Collects votes on one message into a certificate, verifying optimistically: votes are not
/// checked one by one as they arrive. When the collected stake reaches a quorum the aggregate
/// is checked once (two pairings). Only if that fails are the votes checked singly; the bad
/// ones are dropped and their signers reported, and collection goes on.
#[derive(Debug)]
pub struct VoteCollector<'c> {
    committee: &'c Committee,
    message: Vec<u8>,
    votes: BTreeMap<ValidatorIndex, Signature>,
    stake: Stake,
    done: bool,
    faulty: Vec<ValidatorIndex>,
}

impl<'c> VoteCollector<'c> {
    /// A collector of votes on `message` by `committee`.
    pub fn new(committee: &'c Committee, message: Vec<u8>) -> VoteCollector<'c> {
        VoteCollector {
            committee,
            message,
            votes: BTreeMap::new(),
            stake: 0,
            done: false,
            faulty: Vec::new(),
        }
    }

    /// Validators whose votes turned out invalid, in the order they were found.
    pub fn faulty(&self) -> &[ValidatorIndex] {
        &self.faulty
    }

    /// Stake of the votes held (not yet known invalid).
    pub fn stake(&self) -> Stake {
        self.stake
    }

    /// Adds `signer`'s vote.
    pub fn add(
        &mut self,
        signer: ValidatorIndex,
        vote: Signature,
    ) -> Result<Added, CertificateError> {
        let v =
            self.committee.validator(signer).ok_or(CertificateError::UnknownSigner(signer.0))?;
        if self.done || self.faulty.contains(&signer) || self.votes.contains_key(&signer) {
            return Ok(Added::Duplicate);
        }
        self.votes.insert(signer, vote);
        self.stake += v.stake;
        if self.stake < self.committee.quorum_threshold() {
            return Ok(Added::Pending);
        }
        let cert = self.certificate()?;
        if cert.verify(self.committee, &self.message).is_ok() {
            self.done = true;
            return Ok(Added::Certified(Box::new(cert)));
        }
        // Some vote is bad: check each, drop the bad ones, and try again if a quorum is left.
        let bad: Vec<ValidatorIndex> = self
            .votes
            .iter()
            .filter(|(i, s)| {
                self.committee
                    .validator(**i)
                    .is_none_or(|v| s.verify(&v.key, &self.message).is_err())
            })
            .map(|(i, _)| *i)
            .collect();
        for i in bad {
            self.votes.remove(&i);
            self.stake -= self.committee.validator(i).map_or(0, |v| v.stake);
            self.faulty.push(i);
        }
        if self.stake < self.committee.quorum_threshold() {
            return Ok(Added::Pending);
        }
        let cert = self.certificate()?;
        cert.verify(self.committee, &self.message)?;
        self.done = true;
        Ok(Added::Certified(Box::new(cert)))
    }

    fn certificate(&self) -> Result<Certificate, CertificateError> {
        let mut signers = Signers::new(self.committee.len());
        for i in self.votes.keys() {
            signers.insert(*i);
        }
        let sigs: Vec<Signature> = self.votes.values().copied().collect();
        let signature = aggregate(&sigs).map_err(CertificateError::BadSignature)?;
        Ok(Certificate { signers, signature })
    }
}
