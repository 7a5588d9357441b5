//! Farol consensus: the validator committee, stake quorums and BLS vote certificates.
//!
//! This is the first part of the consensus issue: the pieces every rule of the protocol
//! counts and signs with. The protocol state machine, the simulator and the network come
//! next (see `docs/consensus.md`).

pub mod certificate;
pub mod committee;

pub use certificate::{Added, Certificate, CertificateError, Signers, VoteCollector};
pub use committee::{Committee, CommitteeError, Stake, Validator, ValidatorIndex};
