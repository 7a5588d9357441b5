//! Farol consensus: AsyncBFT as a deterministic state machine, the Consensus trait engines
//! share, BLS certificates and a seeded fault simulator.
//!
//! - [`engine`]: the [`Consensus`] trait every engine implements (AsyncBFT here, the SPN
//!   framework's PoA, PBFT and PoS later): a deterministic state machine with no I/O.
//! - [`asyncbft`]: the mainnet's engine: every validator proposes each round, proposals form
//!   a DAG, every proposal commits three message delays after it is sent in the good case.
//! - [`committee`] and [`certificate`]: stake quorums and BLS certificates.
//! - [`checkpoint`]: what a validator rejoins from after falling behind its peers' history.
//! - [`sim`]: the seeded simulator that checks safety and liveness under faults.
//!
//! `docs/consensus.md` describes the protocol and its argument.

pub mod asyncbft;
pub mod block;
pub mod certificate;
pub mod checkpoint;
pub mod committee;
pub mod engine;
pub mod sim;

pub use asyncbft::{AsyncBft, Config, Faults, SignatureCache};
pub use block::{Block, BlockRef, DecodeError, Message};
pub use certificate::{Added, Certificate, CertificateError, Signers, VoteCollector};
pub use checkpoint::{Checkpoint, Snapshot};
pub use committee::{
    CoinKeys, Committee, CommitteeError, Member, Stake, Validator, ValidatorIndex,
};
pub use engine::{Action, Committed, Consensus, Input, Target, Transaction};
