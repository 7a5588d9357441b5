//! Typed errors of the store.

use std::path::PathBuf;

use farol_primitives::Version;

/// Everything that can go wrong in the store. No operation panics on bad data: a damaged
/// file is reported with the file and the offset where the damage was found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system I/O error on a file of the store.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk failed a check (checksum, length, structure).
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record inside the file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// `apply` was given a version that is not above the latest one.
    #[error("version {version} is not above the latest version {latest}")]
    VersionNotIncreasing {
        /// The version passed in.
        version: Version,
        /// The latest version in the store.
        latest: Version,
    },
    /// The version has been pruned.
    #[error("version {version} is pruned (the oldest retained version is {oldest})")]
    Pruned {
        /// The version asked for.
        version: Version,
        /// The oldest version still readable.
        oldest: Version,
    },
    /// The version was never written (it is above the latest, or was skipped).
    #[error("version {0} was never written to this store")]
    UnknownVersion(Version),
    /// A value is larger than [`crate::MAX_VALUE_LEN`].
    #[error("value of {len} bytes for key {key} exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The key of the value.
        key: farol_primitives::B256,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another process holds the store's directory lock.
    #[error("the store at {0} is in use by another process")]
    Locked(PathBuf),
    /// An option is out of range.
    #[error("invalid option {name}: {reason}")]
    InvalidOption {
        /// The option's field name in [`crate::Options`].
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An earlier write failed half-way and could not be rolled back; the store refuses
    /// further writes until it is reopened (which repairs the log).
    #[error("the store refuses writes after an unrecoverable write error; reopen it")]
    Poisoned,
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

pub(crate) fn corrupt(
    path: impl Into<PathBuf>,
    offset: u64,
    reason: impl Into<String>,
) -> StoreError {
    StoreError::Corrupt { path: path.into(), offset, reason: reason.into() }
}
