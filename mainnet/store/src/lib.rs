//! Farol Store: an authenticated, versioned state store with the Merkle tree inside the
//! storage engine.
//!
//! Keys are 32 bytes, values byte strings of up to [`MAX_VALUE_LEN`] bytes, versions are
//! block heights that only grow. Each version has a state root: the root of a binary
//! sparse Merkle tree (keccak256, single-key subtrees compressed into their leaf) whose
//! nodes are kept as versioned pages of 256 slots, addressed by (page id, version) and
//! written to an append-only log of segment files as full or delta records. An in-memory
//! index maps page ids to their record locations and every live key to the record holding
//! its newest value, so a read of the latest state costs one disk read. The index is
//! rebuilt at open from a checkpoint and the log written after it.
//!
//! Durability: [`Store::apply`] returns after the version's records and its commit record
//! are written (and, with [`FsyncPolicy::Always`], synced). After a crash at any point,
//! [`Store::open`] returns the last version whose commit record is whole, with its root.
//!
//! Concurrency: one writer (`apply`, `prune`) at a time; garbage collection and checkpoint
//! writes run on a background thread and hold the writer only briefly; any number of
//! readers, at any retained version, run concurrently with all of them. [`Store`] is cheap to clone
//! and `Send + Sync`.
//!
//! The tree, the on-disk format, the proof format and the crash-safety argument are in
//! `docs/store.md`.

mod codec;
mod error;
mod gc;
mod log;
mod proof;
mod recovery;
mod store;
mod tree;
mod write;

pub use error::{Result, StoreError};
pub use log::IoStats;
pub use proof::{verify, Proof, ProofError, Terminal};
pub use store::{GcStats, Snapshot, Store, StoreWatch};
pub use tree::{key_bit, leaf_hash, node_hash};

/// The largest value the store accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024;

/// When the store asks the operating system to make writes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` the log before [`Store::apply`] returns: an applied version survives a
    /// power loss.
    #[default]
    Always,
    /// Write to the operating system before returning but never sync: an applied version
    /// survives the process being killed, not a power loss. For tests and benchmarks that
    /// say so.
    Never,
}

/// Options of [`Store::open`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Memory budget of the page cache, in bytes (the in-memory indexes come on top:
    /// about 60 bytes per live key and 30 bytes per retained page version).
    pub cache_bytes: usize,
    /// When writes are synced.
    pub fsync: FsyncPolicy,
    /// Keep only this many newest versions: each `apply` prunes the ones below. `None`
    /// keeps every version until [`Store::prune`] is called.
    pub retain_versions: Option<u64>,
    /// A segment file is closed and a new one started once it passes this many bytes.
    pub segment_bytes: u64,
    /// A checkpoint of the index is written once the log has grown by this many bytes
    /// since the last one; it bounds the log tail replayed at open.
    pub checkpoint_bytes: u64,
    /// A page is written whole (not as a delta) once it has this many deltas since its
    /// last full record; it bounds the reads needed to rebuild a page.
    pub max_delta_chain: u32,
    /// Run a background thread that collects garbage after versions are pruned and writes
    /// periodic checkpoints. Without it both happen on the calling thread (`apply` writes
    /// the checkpoint; garbage is collected only by [`Store::collect_garbage`]).
    pub background_gc: bool,
    /// Garbage collection rewrites a closed segment once at least this percentage of its
    /// bytes is dead.
    pub gc_dead_percent: u8,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cache_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
            retain_versions: None,
            segment_bytes: 128 << 20,
            checkpoint_bytes: 192 << 20,
            max_delta_chain: 8,
            background_gc: true,
            gc_dead_percent: 50,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        let bad =
            |name, reason: &str| Err(StoreError::InvalidOption { name, reason: reason.into() });
        if self.segment_bytes < 4096 || self.segment_bytes > u32::MAX as u64 / 2 {
            return bad("segment_bytes", "must be between 4 KiB and 2 GiB");
        }
        if self.max_delta_chain == 0 {
            return bad("max_delta_chain", "must be at least 1");
        }
        if self.retain_versions == Some(0) {
            return bad("retain_versions", "must keep at least 1 version");
        }
        if self.gc_dead_percent == 0 || self.gc_dead_percent > 100 {
            return bad("gc_dead_percent", "must be between 1 and 100");
        }
        Ok(())
    }
}
