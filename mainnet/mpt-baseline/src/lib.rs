//! The baseline Farol Store is measured against: an Ethereum Merkle Patricia Trie over RocksDB.
//!
//! [`MptStore`] keeps the state in an [`eth_trie::EthTrie`] whose nodes live in RocksDB, keyed by
//! their keccak256 hash, the way hash-based Ethereum clients store state. Every
//! [`MptStore::apply`] computes the new root and writes the block as one RocksDB write batch
//! (new nodes, pruned nodes, version metadata), synced when [`MptOptions::sync`] is set.
//!
//! Pruning: the nodes a version replaces are not deleted at once. They wait in a pruning window
//! and are deleted by the commit `retain_versions - 1` versions later, so the state of the
//! `retain_versions` newest versions stays readable (the same meaning as Farol Store's
//! `Options::retain_versions`, so both keep equal history). The window is
//! persisted with the version it was queued at, so a reopened store keeps pruning where it
//! stopped. Nodes are not reference-counted (as in hash-keyed Ethereum databases): a node
//! whose exact bytes appear twice in one trie is assumed not to exist, which holds for tries
//! over hashed 32-byte keys; a node written again while it waits in the window is taken out of
//! the window.
//!
//! RocksDB runs with its default options except for three settings: an LRU block cache of
//! exactly [`MptOptions::cache_bytes`], a 10 bits/key bloom filter and `create_if_missing`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{b256, B256};
use eth_trie::{EthTrie, Trie, TrieError, DB as TrieDb};
use parking_lot::RwLock;
use rocksdb::{
    properties, BlockBasedOptions, Cache, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

/// The root of an empty Ethereum trie: keccak256 of the RLP empty string (`0x80`).
pub const EMPTY_TRIE_ROOT: B256 =
    b256!("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421");

/// Metadata key prefix: `ROOT_PREFIX ++ version (8 bytes, big endian)` → 32-byte state root.
/// Metadata keys are never 32 bytes long, so they cannot collide with node hashes.
const ROOT_PREFIX: &[u8] = b"\0farol-mpt/root/";
/// Metadata key prefix: `PRUNE_PREFIX ++ version` → the concatenated 32-byte hashes of the
/// nodes that version replaced, waiting in the pruning window.
const PRUNE_PREFIX: &[u8] = b"\0farol-mpt/prune/";

/// How long [`MptStore::settle`] waits for RocksDB's background work before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Errors of the baseline store.
#[derive(Debug, thiserror::Error)]
pub enum MptError {
    /// RocksDB returned an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The trie returned an error (a missing node, a node that does not decode, ...).
    #[error("trie: {0}")]
    Trie(#[from] TrieError),
    /// Reading the store's directory failed.
    #[error("i/o on the store directory: {0}")]
    Io(#[from] std::io::Error),
    /// `apply` was called with a version that is not newer than the latest one.
    #[error("version {version} is not newer than the latest version {latest}")]
    VersionNotNewer {
        /// The version passed to `apply`.
        version: u64,
        /// The latest committed version.
        latest: u64,
    },
    /// The version was never committed.
    #[error("unknown version {0}")]
    UnknownVersion(u64),
    /// The version was committed but is older than the retained history.
    #[error("version {version} is pruned (the oldest retained version is {oldest})")]
    Pruned {
        /// The version asked for.
        version: u64,
        /// The oldest version still readable.
        oldest: u64,
    },
    /// The store's metadata is not in the expected format.
    #[error("corrupt store metadata: {0}")]
    Corrupt(String),
    /// RocksDB's background work did not finish in time.
    #[error("rocksdb background work did not finish within {0:?}")]
    SettleTimeout(Duration),
}

/// Options of [`MptStore::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MptOptions {
    /// Size of RocksDB's LRU block cache in bytes.
    pub cache_bytes: usize,
    /// How many of the newest versions stay readable, the latest included (0 counts as 1).
    pub retain_versions: u64,
    /// Whether every commit is synced to disk before `apply` returns.
    pub sync: bool,
}

impl Default for MptOptions {
    fn default() -> Self {
        Self { cache_bytes: 16 << 20, retain_versions: 8, sync: true }
    }
}

/// Trie nodes written or dropped by the trie since the last commit, not yet in RocksDB.
#[derive(Debug, Default)]
struct Pending {
    puts: HashMap<Vec<u8>, Vec<u8>>,
    removed: Vec<Vec<u8>>,
}

/// The RocksDB-backed node database the trie reads and writes through.
///
/// Reads see the nodes written since the last commit (the trie reads its new root right after
/// writing it); writes and removals only collect into [`Pending`] until [`MptStore::apply`]
/// turns them into one write batch.
#[derive(Debug)]
struct NodeDb {
    db: DB,
    pending: RwLock<Pending>,
}

impl NodeDb {
    fn take_pending(&self) -> Pending {
        std::mem::take(&mut *self.pending.write())
    }
}

impl TrieDb for NodeDb {
    type Error = MptError;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MptError> {
        if let Some(value) = self.pending.read().puts.get(key) {
            return Ok(Some(value.clone()));
        }
        Ok(self.db.get(key)?)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), MptError> {
        self.pending.write().puts.insert(key.to_vec(), value);
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<(), MptError> {
        self.pending.write().removed.push(key.to_vec());
        Ok(())
    }

    fn insert_batch(&self, keys: Vec<Vec<u8>>, values: Vec<Vec<u8>>) -> Result<(), MptError> {
        let mut pending = self.pending.write();
        pending.puts.extend(keys.into_iter().zip(values));
        Ok(())
    }

    fn remove_batch(&self, keys: &[Vec<u8>]) -> Result<(), MptError> {
        self.pending.write().removed.extend_from_slice(keys);
        Ok(())
    }

    fn flush(&self) -> Result<(), MptError> {
        Ok(())
    }
}

/// Node hashes waiting in the pruning window.
#[derive(Debug, Default)]
struct PruneWindow {
    /// Per version: the hashes of the nodes that version replaced.
    rows: BTreeMap<u64, Vec<B256>>,
    /// For every waiting hash, the version whose row deletes it.
    doomed: HashMap<B256, u64>,
}

/// An Ethereum Merkle Patricia Trie over RocksDB with versions and a pruning window.
pub struct MptStore {
    dir: PathBuf,
    opts: MptOptions,
    nodes: Arc<NodeDb>,
    /// The trie at the latest version.
    trie: EthTrie<NodeDb>,
    /// Root of every retained version.
    roots: BTreeMap<u64, B256>,
    window: PruneWindow,
    write_opts: WriteOptions,
    /// The block cache; RocksDB holds its own reference too.
    _cache: Cache,
}

impl std::fmt::Debug for MptStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MptStore")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .field("latest", &self.latest_version())
            .field("oldest", &self.oldest_version())
            .finish_non_exhaustive()
    }
}

fn root_key(version: u64) -> Vec<u8> {
    [ROOT_PREFIX, &version.to_be_bytes()].concat()
}

fn prune_key(version: u64) -> Vec<u8> {
    [PRUNE_PREFIX, &version.to_be_bytes()].concat()
}

fn hash_of(key: &[u8]) -> Result<B256, MptError> {
    B256::try_from(key).map_err(|_| {
        MptError::Corrupt(format!("trie node key of {} bytes, expected 32", key.len()))
    })
}

/// Reads the retained versions' roots and the pruning window.
fn load_meta(db: &DB) -> Result<(BTreeMap<u64, B256>, PruneWindow), MptError> {
    let mut roots = BTreeMap::new();
    for (version, value) in read_meta(db, ROOT_PREFIX)? {
        let root = B256::try_from(&value[..])
            .map_err(|_| MptError::Corrupt(format!("root of version {version}")))?;
        roots.insert(version, root);
    }
    let mut window = PruneWindow::default();
    for (version, value) in read_meta(db, PRUNE_PREFIX)? {
        if value.len() % 32 != 0 {
            return Err(MptError::Corrupt(format!("prune row of version {version}")));
        }
        let row: Vec<B256> = value.chunks_exact(32).map(B256::from_slice).collect();
        for hash in &row {
            // Rows are read in version order: a later row wins.
            window.doomed.insert(*hash, version);
        }
        window.rows.insert(version, row);
    }
    Ok((roots, window))
}

fn concat_hashes(hashes: &[B256]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

/// A metadata entry: the version in its key, and its value.
type MetaEntry = (u64, Box<[u8]>);

/// Reads every `prefix ++ version` metadata entry, in version order.
fn read_meta(db: &DB, prefix: &[u8]) -> Result<Vec<MetaEntry>, MptError> {
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(prefix, Direction::Forward)) {
        let (key, value) = item?;
        let Some(suffix) = key.strip_prefix(prefix) else { break };
        let version = <[u8; 8]>::try_from(suffix)
            .map(u64::from_be_bytes)
            .map_err(|_| MptError::Corrupt(format!("metadata key of {} bytes", key.len())))?;
        out.push((version, value));
    }
    Ok(out)
}

impl MptStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, opts: MptOptions) -> Result<MptStore, MptError> {
        let cache = Cache::new_lru_cache(opts.cache_bytes)?;
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.set_block_based_table_factory(&table);
        let db = DB::open(&db_opts, dir)?;

        let (roots, window) = load_meta(&db)?;

        let nodes = Arc::new(NodeDb { db, pending: RwLock::new(Pending::default()) });
        let trie = match roots.last_key_value() {
            Some((_, root)) => EthTrie::from(nodes.clone(), *root)?,
            None => EthTrie::new(nodes.clone()),
        };
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(opts.sync);
        Ok(MptStore {
            dir: dir.to_path_buf(),
            opts,
            nodes,
            trie,
            roots,
            window,
            write_opts,
            _cache: cache,
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The latest committed version, if any.
    pub fn latest_version(&self) -> Option<u64> {
        self.roots.last_key_value().map(|(v, _)| *v)
    }

    /// The oldest version that is still readable, if any.
    pub fn oldest_version(&self) -> Option<u64> {
        self.roots.first_key_value().map(|(v, _)| *v)
    }

    /// Applies one block of changes as `version` (newer than every committed version):
    /// `Some(value)` sets a key, `None` (or an empty value, as in Ethereum) deletes it.
    /// Computes the new root and commits everything as one RocksDB write batch, synced if
    /// [`MptOptions::sync`] is set. Returns the new root.
    ///
    /// On error nothing of the block is committed and the store stays at its previous version.
    pub fn apply(
        &mut self,
        version: u64,
        changes: &[(B256, Option<Vec<u8>>)],
    ) -> Result<B256, MptError> {
        if let Some(latest) = self.latest_version() {
            if version <= latest {
                return Err(MptError::VersionNotNewer { version, latest });
            }
        }
        let result = self.apply_inner(version, changes);
        if result.is_err() {
            // Drop whatever the failed block left in memory and continue from disk.
            self.reload()?;
        }
        result
    }

    fn apply_inner(
        &mut self,
        version: u64,
        changes: &[(B256, Option<Vec<u8>>)],
    ) -> Result<B256, MptError> {
        for (key, value) in changes {
            match value {
                Some(value) if !value.is_empty() => self.trie.insert(key.as_slice(), value)?,
                _ => {
                    self.trie.remove(key.as_slice())?;
                }
            }
        }
        // `root_hash` encodes the changed nodes, hands them to `insert_batch` in one call,
        // then the replaced nodes to `remove_batch` in one call, then reads the new root
        // back through `get`; it never calls `flush`.
        let root = self.trie.root_hash()?;
        let pending = self.nodes.take_pending();

        let mut replaced = Vec::with_capacity(pending.removed.len() + 1);
        for key in &pending.removed {
            replaced.push(hash_of(key)?);
        }
        // The trie keeps its root decoded in memory, so the previous root node never shows up
        // among the removed nodes: it is replaced by this version unless the root is unchanged.
        if let Some((_, previous)) = self.roots.last_key_value() {
            if *previous != root {
                replaced.push(*previous);
            }
        }

        let mut batch = WriteBatch::default();
        let mut rewrite = BTreeSet::new();
        for hash in &replaced {
            self.window.doomed.insert(*hash, version);
        }
        // A node written again must not be deleted by an older row of the window.
        for (key, value) in &pending.puts {
            if let Some(was) = self.window.doomed.remove(&hash_of(key)?) {
                rewrite.insert(was);
            }
            batch.put(key, value);
        }
        let row: Vec<B256> =
            replaced.into_iter().filter(|h| self.window.doomed.get(h) == Some(&version)).collect();
        if !row.is_empty() {
            batch.put(prune_key(version), concat_hashes(&row));
            self.window.rows.insert(version, row);
        }

        // Rows queued at versions <= version - (retain - 1) fall out of the window now.
        let cut = version.checked_sub(self.opts.retain_versions.max(1) - 1);
        if let Some(cut) = cut {
            let keep = self.window.rows.split_off(&(cut + 1));
            let expired = std::mem::replace(&mut self.window.rows, keep);
            for (queued_at, hashes) in expired {
                for hash in hashes {
                    if self.window.doomed.get(&hash) == Some(&queued_at) {
                        self.window.doomed.remove(&hash);
                        batch.delete(hash);
                    }
                }
                batch.delete(prune_key(queued_at));
                rewrite.remove(&queued_at);
            }
        }
        for queued_at in rewrite {
            let Some(hashes) = self.window.rows.get_mut(&queued_at) else { continue };
            hashes.retain(|h| self.window.doomed.get(h) == Some(&queued_at));
            if hashes.is_empty() {
                self.window.rows.remove(&queued_at);
                batch.delete(prune_key(queued_at));
            } else {
                batch.put(prune_key(queued_at), concat_hashes(hashes));
            }
        }

        batch.put(root_key(version), root);
        self.roots.insert(version, root);
        // Rows up to `cut` have run, so a version stays readable if no committed version lies
        // between it and `cut`: the newest version <= cut and all later ones.
        let oldest = match cut {
            Some(cut) => self.roots.range(..=cut).next_back().map_or(0, |(v, _)| *v),
            None => 0,
        };
        let kept = self.roots.split_off(&oldest);
        for old in std::mem::replace(&mut self.roots, kept).into_keys() {
            batch.delete(root_key(old));
        }

        self.nodes.db.write_opt(batch, &self.write_opts)?;
        Ok(root)
    }

    /// Rebuilds the in-memory state (versions, window, trie) from what RocksDB holds.
    fn reload(&mut self) -> Result<(), MptError> {
        drop(self.nodes.take_pending());
        let (roots, window) = load_meta(&self.nodes.db)?;
        self.trie = match roots.last_key_value() {
            Some((_, root)) => EthTrie::from(self.nodes.clone(), *root)?,
            None => EthTrie::new(self.nodes.clone()),
        };
        self.roots = roots;
        self.window = window;
        Ok(())
    }

    /// The state root of `version`.
    pub fn root(&self, version: u64) -> Result<B256, MptError> {
        if let Some(root) = self.roots.get(&version) {
            return Ok(*root);
        }
        match self.oldest_version() {
            Some(oldest) if version < oldest => Err(MptError::Pruned { version, oldest }),
            _ => Err(MptError::UnknownVersion(version)),
        }
    }

    /// The value of `key` at the latest version.
    pub fn get(&self, key: &B256) -> Result<Option<Vec<u8>>, MptError> {
        Ok(self.trie.get(key.as_slice())?)
    }

    /// The value of `key` at a retained `version`.
    pub fn get_at(&self, key: &B256, version: u64) -> Result<Option<Vec<u8>>, MptError> {
        if Some(version) == self.latest_version() {
            return self.get(key);
        }
        let root = self.root(version)?;
        let trie = EthTrie::from(self.nodes.clone(), root)?;
        Ok(trie.get(key.as_slice())?)
    }

    /// A Merkle proof of `key` (of its value or of its absence) at a retained `version`: the
    /// RLP-encoded trie nodes from the root down, as `eth_getProof` returns them.
    pub fn prove(&self, key: &B256, version: u64) -> Result<Vec<Vec<u8>>, MptError> {
        let root = self.root(version)?;
        let mut trie = EthTrie::from(self.nodes.clone(), root)?;
        Ok(trie.get_proof(key.as_slice())?)
    }

    /// Checks `proof` of `key` against `root`; returns the proven value (`None`: proven absent).
    pub fn verify_proof(
        root: B256,
        key: &B256,
        proof: Vec<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, MptError> {
        let trie = EthTrie::new(Arc::new(eth_trie::MemoryDB::new(true)));
        Ok(trie.verify_proof(root, key.as_slice(), proof)?)
    }

    /// Bytes on disk: the sum of the sizes of the files in the store's directory.
    pub fn disk_usage(&self) -> Result<u64, MptError> {
        dir_size(&self.dir)
    }

    /// Waits until RocksDB has no background work left: flushes the memtable, then waits for
    /// pending and running flushes and compactions. Use before measuring size or bytes written,
    /// so that work RocksDB deferred is counted; this forces no compaction RocksDB would not
    /// run by itself.
    pub fn settle(&self) -> Result<(), MptError> {
        let db = &self.nodes.db;
        db.flush()?;
        let start = Instant::now();
        loop {
            let mut busy = 0;
            for property in [
                properties::MEM_TABLE_FLUSH_PENDING,
                properties::NUM_RUNNING_FLUSHES,
                properties::COMPACTION_PENDING,
                properties::NUM_RUNNING_COMPACTIONS,
            ] {
                busy += db.property_int_value(property)?.unwrap_or(0);
            }
            if busy == 0 {
                return Ok(());
            }
            if start.elapsed() > SETTLE_TIMEOUT {
                return Err(MptError::SettleTimeout(SETTLE_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn dir_size(dir: &Path) -> Result<u64, MptError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eth_trie::MemoryDB;

    fn key(i: u64) -> B256 {
        let mut k = [0u8; 32];
        // Spread keys over the key space like hashed keys would be.
        for (j, b) in k.iter_mut().enumerate() {
            *b = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(j as u32 * 7) >> 3) as u8;
        }
        k[24..].copy_from_slice(&i.to_be_bytes());
        B256::from(k)
    }

    fn value(i: u64, round: u64) -> Vec<u8> {
        let mut v = vec![0xa5; 32];
        v[..8].copy_from_slice(&i.to_be_bytes());
        v[8..16].copy_from_slice(&round.to_be_bytes());
        v
    }

    fn opts(retain: u64) -> MptOptions {
        MptOptions { cache_bytes: 1 << 20, retain_versions: retain, sync: false }
    }

    fn reference_root(entries: &[(B256, Vec<u8>)]) -> B256 {
        let mut trie = EthTrie::new(Arc::new(MemoryDB::new(true)));
        for (k, v) in entries {
            trie.insert(k.as_slice(), v).unwrap();
        }
        trie.root_hash().unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MptStore>();
        check::<MptError>();
    }

    #[test]
    fn empty_state_has_the_ethereum_empty_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MptStore::open(dir.path(), opts(4)).unwrap();
        assert_eq!(store.latest_version(), None);
        assert_eq!(store.apply(1, &[]).unwrap(), EMPTY_TRIE_ROOT);
        assert_eq!(store.root(1).unwrap(), EMPTY_TRIE_ROOT);
        assert_eq!(reference_root(&[]), EMPTY_TRIE_ROOT);
        assert_eq!(store.get(&key(1)).unwrap(), None);
    }

    #[test]
    fn roots_match_an_in_memory_trie() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MptStore::open(dir.path(), opts(2)).unwrap();
        let mut model: BTreeMap<B256, Vec<u8>> = BTreeMap::new();
        for round in 0..6u64 {
            let mut changes = Vec::new();
            for i in 0..200u64 {
                let i = (i * 7 + round * 13) % 500;
                if round > 2 && i % 5 == 0 {
                    changes.push((key(i), None));
                    model.remove(&key(i));
                } else {
                    changes.push((key(i), Some(value(i, round))));
                    model.insert(key(i), value(i, round));
                }
            }
            let root = store.apply(round + 1, &changes).unwrap();
            let entries: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
            assert_eq!(root, reference_root(&entries), "round {round}");
        }
        for (k, v) in &model {
            assert_eq!(store.get(k).unwrap().as_ref(), Some(v));
        }
        // Deleting everything gives the empty root again.
        let all: Vec<_> = model.keys().map(|k| (*k, None)).collect();
        assert_eq!(store.apply(100, &all).unwrap(), EMPTY_TRIE_ROOT);
    }

    #[test]
    fn history_is_readable_within_the_window_and_not_after() {
        let dir = tempfile::tempdir().unwrap();
        let retain = 3;
        let mut store = MptStore::open(dir.path(), opts(retain)).unwrap();
        let n = 300u64;
        for version in 1..=12u64 {
            let changes: Vec<_> = (0..n).map(|i| (key(i), Some(value(i, version)))).collect();
            store.apply(version, &changes).unwrap();
            let oldest = (version + 1).saturating_sub(retain).max(1);
            assert_eq!(store.oldest_version(), Some(oldest));
            for v in oldest..=version {
                for i in [0, n / 2, n - 1] {
                    assert_eq!(store.get_at(&key(i), v).unwrap(), Some(value(i, v)));
                }
                let proof = store.prove(&key(7), v).unwrap();
                let proven = MptStore::verify_proof(store.root(v).unwrap(), &key(7), proof);
                assert_eq!(proven.unwrap(), Some(value(7, v)));
            }
            for v in 1..oldest {
                assert!(matches!(store.get_at(&key(0), v), Err(MptError::Pruned { .. })));
            }
        }
        // The pruned nodes are really gone: exactly the retained versions' nodes are left.
        let stored: std::collections::HashSet<B256> = store
            .nodes
            .db
            .iterator(IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .filter(|k| k.len() == 32)
            .map(|k| B256::from_slice(&k))
            .collect();
        let mut reachable = std::collections::HashSet::new();
        for v in store.oldest_version().unwrap()..=12 {
            reachable_nodes(&store.nodes.db, store.root(v).unwrap(), &mut reachable);
        }
        assert_eq!(stored, reachable, "pruned too much or too little");
    }

    /// Collects the hashes of all nodes reachable from `root`, reading them from `db`.
    fn reachable_nodes(db: &DB, root: B256, seen: &mut std::collections::HashSet<B256>) {
        use eth_trie::node::Node;
        fn children(node: &Node, out: &mut Vec<B256>) {
            match node {
                Node::Hash(h) => out.push(h.hash),
                Node::Branch(b) => {
                    for c in b.read().unwrap().children.iter() {
                        children(c, out);
                    }
                }
                Node::Extension(e) => children(&e.read().unwrap().node, out),
                Node::Empty | Node::Leaf(_) => {}
            }
        }
        let mut stack = vec![root];
        while let Some(h) = stack.pop() {
            if !seen.insert(h) {
                continue;
            }
            let data = db.get(h).unwrap().expect("reachable node is missing");
            let node = eth_trie::decode_node(&mut data.as_slice()).unwrap();
            children(&node, &mut stack);
        }
    }

    #[test]
    fn rewriting_a_waiting_node_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MptStore::open(dir.path(), opts(3)).unwrap();
        let a: Vec<_> = (0..50u64).map(|i| (key(i), Some(value(i, 0)))).collect();
        let b: Vec<_> = (0..50u64).map(|i| (key(i), Some(value(i, 1)))).collect();
        // Version 2 replaces version 1's nodes; version 3 writes them again, so version 2's row
        // (run by version 4, after a reopen) must no longer delete them.
        store.apply(1, &a).unwrap();
        store.apply(2, &b).unwrap();
        store.apply(3, &a).unwrap();
        drop(store);
        let mut store = MptStore::open(dir.path(), opts(3)).unwrap();
        for version in 4..=6 {
            store.apply(version, &[(key(1000 + version), Some(value(version, 0)))]).unwrap();
        }
        for (k, v) in &a {
            assert_eq!(&store.get(k).unwrap(), v);
        }
        let mut reachable = std::collections::HashSet::new();
        reachable_nodes(&store.nodes.db, store.root(6).unwrap(), &mut reachable);
    }

    #[test]
    fn reopen_keeps_data_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut roots = Vec::new();
        {
            let mut store = MptStore::open(dir.path(), opts(5)).unwrap();
            for version in 1..=5u64 {
                let changes: Vec<_> =
                    (0..100u64).map(|i| (key(i), Some(value(i, version)))).collect();
                roots.push(store.apply(version, &changes).unwrap());
            }
        }
        let mut store = MptStore::open(dir.path(), opts(5)).unwrap();
        assert_eq!(store.latest_version(), Some(5));
        assert_eq!(store.oldest_version(), Some(1));
        for version in 1..=5u64 {
            assert_eq!(store.root(version).unwrap(), roots[version as usize - 1]);
            assert_eq!(store.get_at(&key(3), version).unwrap(), Some(value(3, version)));
        }
        assert_eq!(store.get(&key(99)).unwrap(), Some(value(99, 5)));
        assert!(matches!(store.apply(5, &[]), Err(MptError::VersionNotNewer { .. })));
        // Pruning continues across the reopen.
        let changes: Vec<_> = (0..100u64).map(|i| (key(i), Some(value(i, 6)))).collect();
        store.apply(6, &changes).unwrap();
        assert_eq!(store.oldest_version(), Some(2));
        assert!(matches!(store.get_at(&key(3), 1), Err(MptError::Pruned { .. })));
        assert_eq!(store.get_at(&key(3), 2).unwrap(), Some(value(3, 2)));
        assert!(store.disk_usage().unwrap() > 0);
        store.settle().unwrap();
    }
}
