//! The transaction index: where each transaction of the chain is (its block and position),
//! by hash; each block's own hash is an entry too, with its number and the position
//! `BLOCK_MARK` (since stop 45: before, a map in memory held them).
//!
//! The newest transactions are indexed in memory (`Memory`: the hash's first 16 bytes map
//! to the place). Once `flush_at` of them are, that part is frozen and a thread of its own
//! writes it out as a sorted *run* file in the index's directory, `txs-<first>-<last>.run`
//! for the blocks `first..=last`; once written, the run replaces it. Runs of similar size are
//! merged (two adjacent runs while the older holds at most twice the newer's entries, the
//! newest such pair first), so a
//! chain of N transactions has about log2(N / `flush_at`) runs. The runs cover the chain
//! from the genesis without a gap, oldest first.
//!
//! A run is 28-byte entries (the hash's first 16 bytes, the block, the position) sorted by
//! prefix and then newest first, in pages of 128 entries, each page followed by its CRC-32,
//! and a footer: the entry count, the blocks covered, the hash of the last block, the first
//! prefix of every page (the *fences*), a Bloom filter of the prefixes (10 bits an entry,
//! 7 probes: about 1 % false positives) and the footer's CRC. Only the footers stay in
//! memory: about 1.4 bytes a transaction, against 29–57 bytes for an entry of `Memory`.
//! A lookup checks each run's filter in memory and reads one page (3.5 KiB) of the runs
//! that may hold the hash.
//!
//! A part frozen while runs merge is written out by the merging thread at its next page, so
//! memory holds at most about twice `flush_at` transactions however long a merge takes.
//!
//! At open, runs are read by their footers; of those, the ones that chain from the genesis
//! without a gap furthest are used, and the others (superseded by a merge a crash
//! interrupted, or after a gap) and temporary files are removed. The chain then checks each
//! run's last block hash against its block log (`TxIndex::runs_match`); a mismatch (a block
//! log replaced or cut shorter) drops every run and the index is rebuilt from the log. A run
//! page whose CRC does not match is logged and answers nothing, and its run is renamed
//! `<name>.damaged` (merged no more; dropped at the next open, which indexes its blocks again
//! from the log).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use alloy_primitives::B256;
use farol_primitives::SplitMap;
use parking_lot::{Mutex, RwLock};

/// Bits of a packed place that hold the position in the block.
const POSITION_BITS: u32 = 24;
/// The position under which a block's own hash is indexed (with its number): the index
/// answers blocks by hash too. A block would need 16,777,215 transactions, 352 billion gas
/// of them, to reach it.
pub(crate) const BLOCK_MARK: u32 = (1 << POSITION_BITS) - 1;
/// Bytes of an entry of a run: the prefix, the block (u64 LE), the position (u32 LE).
const ENTRY: usize = 28;
/// Entries in a page of a run.
const PAGE_ENTRIES: usize = 128;
/// Bytes of a whole page: its entries and their CRC-32.
const PAGE_BYTES: u64 = (PAGE_ENTRIES * ENTRY + 4) as u64;
/// A run file's first 8 bytes.
const MAGIC: &[u8; 8] = b"FAROLTX2";
/// A run file's last 8 bytes (after the footer's length).
const END: &[u8; 8] = b"FAROLTXE";
/// Bloom filter bits per entry, and probes.
const BLOOM_BITS_PER_ENTRY: u64 = 10;
const PROBES: u64 = 7;
/// The most transactions indexed in memory before they are written out, by default.
pub const FLUSH_AT: usize = 1 << 18;

/// What [`Memory::find`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The place of this very hash.
    Exact((u64, u32)),
    /// The place of the transaction whose hash begins with the same 16 bytes.
    Prefix(u64, u32),
}

impl Found {
    pub(crate) fn place(self) -> (u64, u32) {
        match self {
            Found::Exact(p) => p,
            Found::Prefix(n, i) => (n, i),
        }
    }
}

fn prefix_of(hash: &B256) -> [u8; 16] {
    let mut p = [0u8; 16];
    p.copy_from_slice(&hash[..16]);
    p
}

/// One transaction's place under its hash's first 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    prefix: [u8; 16],
    block: u64,
    pos: u32,
}

impl Entry {
    /// The order of a run: by prefix, then newest first.
    fn key(&self) -> ([u8; 16], std::cmp::Reverse<(u64, u32)>) {
        (self.prefix, std::cmp::Reverse((self.block, self.pos)))
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(&self.block.to_le_bytes());
        out.extend_from_slice(&self.pos.to_le_bytes());
    }

    fn get(b: &[u8]) -> Entry {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&b[..16]);
        let mut block = [0u8; 8];
        block.copy_from_slice(&b[16..24]);
        let mut pos = [0u8; 4];
        pos.copy_from_slice(&b[24..28]);
        Entry { prefix, block: u64::from_le_bytes(block), pos: u32::from_le_bytes(pos) }
    }
}

/// Transactions indexed in memory, 24 bytes an entry: the hash's first 16 bytes map to its
/// block (the high 40 bits) and position (the low 24). A transaction whose hash begins with
/// the same 16 bytes as one already indexed (a 2^-128 chance a pair, or about 2^64
/// signatures ground on purpose) is kept under its whole hash beside it, so no place is
/// lost; a lookup takes a match of the 16 bytes for the hash. Until stop 43 every entry held
/// the whole hash: 48 bytes an entry, 56–112 bytes a transaction with the table's free room,
/// against 29–57 now.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    by_prefix: SplitMap<[u8; 16], u64>,
    whole: HashMap<B256, (u64, u32)>,
    /// The first block this part indexes.
    first: u64,
    /// The last block indexed, with its hash.
    last: Option<(u64, B256)>,
}

impl Memory {
    fn starting_at(first: u64) -> Memory {
        Memory { first, ..Memory::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_prefix.len() + self.whole.len()
    }

    /// Records transaction `hash` at position `i` of block `n` (a later record of the same
    /// hash stands over an earlier one).
    pub(crate) fn insert(&mut self, hash: B256, n: u64, i: u32) {
        let packed = (n < 1 << (64 - POSITION_BITS) && i < 1 << POSITION_BITS)
            .then(|| n << POSITION_BITS | u64::from(i));
        let prefix = prefix_of(&hash);
        match (self.by_prefix.get(&prefix), packed) {
            (None, Some(p)) => {
                self.by_prefix.insert(prefix, p);
            }
            _ => {
                self.whole.insert(hash, (n, i));
            }
        }
    }

    /// The place of `hash`, if this part has one for it or for its first 16 bytes.
    pub(crate) fn find(&self, hash: &B256) -> Option<Found> {
        if let Some(p) = self.whole.get(hash) {
            return Some(Found::Exact(*p));
        }
        let p = *self.by_prefix.get(&prefix_of(hash))?;
        Some(Found::Prefix(p >> POSITION_BITS, (p & ((1 << POSITION_BITS) - 1)) as u32))
    }

    /// Every entry, in a run's order.
    fn sorted(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .by_prefix
            .iter()
            .map(|(prefix, p)| Entry {
                prefix: *prefix,
                block: p >> POSITION_BITS,
                pos: (p & ((1 << POSITION_BITS) - 1)) as u32,
            })
            .chain(self.whole.iter().map(|(h, (n, i))| Entry {
                prefix: prefix_of(h),
                block: *n,
                pos: *i,
            }))
            .collect();
        out.sort_unstable_by_key(Entry::key);
        out
    }
}

/// A run file, by its footer (its pages are read when asked).
#[derive(Debug)]
struct Run {
    path: PathBuf,
    file: File,
    /// Set when a page failed its CRC: the file was renamed `<name>.damaged`, so that the
    /// next start rebuilds its blocks from the log, and it is merged no more.
    damaged: AtomicBool,
    first: u64,
    last: u64,
    last_hash: B256,
    entries: u64,
    fences: Vec<[u8; 16]>,
    bloom: Vec<u64>,
}

fn bloom_bits(entries: u64) -> u64 {
    (entries.saturating_mul(BLOOM_BITS_PER_ENTRY).max(64)).div_ceil(64) * 64
}

fn probes(prefix: &[u8; 16], bits: u64) -> impl Iterator<Item = u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(&prefix[..8]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&prefix[8..]);
    let (h1, h2) = (u64::from_le_bytes(a), u64::from_le_bytes(b) | 1);
    (0..PROBES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

impl Run {
    fn pages(&self) -> usize {
        self.fences.len()
    }

    fn page_entries(&self, p: usize) -> usize {
        if p + 1 < self.pages() {
            PAGE_ENTRIES
        } else {
            (self.entries as usize) - p * PAGE_ENTRIES
        }
    }

    /// Whether the filter lets `prefix` through (it does for every prefix the run holds).
    fn may_hold(&self, prefix: &[u8; 16]) -> bool {
        let bits = self.bloom.len() as u64 * 64;
        probes(prefix, bits).all(|b| self.bloom[(b / 64) as usize] & (1 << (b % 64)) != 0)
    }

    /// Page `p`'s entries, checked against its CRC.
    fn page(&self, p: usize) -> Result<Vec<Entry>, String> {
        let n = self.page_entries(p);
        let mut buf = vec![0u8; n * ENTRY + 4];
        self.file
            .read_exact_at(&mut buf, MAGIC.len() as u64 + p as u64 * PAGE_BYTES)
            .map_err(|e| format!("{}: reading page {p}: {e}", self.path.display()))?;
        let (body, crc) = buf.split_at(n * ENTRY);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(c) {
            self.set_damaged();
            return Err(format!("{}: page {p} does not match its checksum", self.path.display()));
        }
        Ok(body.chunks_exact(ENTRY).map(Entry::get).collect())
    }

    /// Sets the run aside for the next start (see [`Run::damaged`]), once.
    fn set_damaged(&self) {
        if !self.damaged.swap(true, Ordering::AcqRel) {
            let mut aside = self.path.clone().into_os_string();
            aside.push(".damaged");
            tracing::error!(path = %self.path.display(), "transaction index: a damaged run is set aside; the next start indexes its blocks again from the block log");
            if let Err(e) = std::fs::rename(&self.path, &aside) {
                tracing::error!(path = %self.path.display(), error = %e, "setting a damaged run aside failed");
            }
        }
    }

    /// The places of the entries with `prefix`, newest first (the run's pages are read),
    /// into `out`; a page that may hold more but cannot be read is logged and said in
    /// `unread` (the caller decides whether what was found answers it).
    fn find(&self, prefix: &[u8; 16], out: &mut Vec<(u64, u32)>, unread: &mut Option<String>) {
        if self.pages() == 0 {
            return;
        }
        // Entries with the prefix begin in the last page whose first prefix is below it (or
        // the first page), and may go on into pages that begin with it.
        let mut p = self.fences.partition_point(|f| f < prefix).saturating_sub(1);
        loop {
            match self.page(p) {
                Ok(entries) => out.extend(
                    entries.iter().filter(|e| e.prefix == *prefix).map(|e| (e.block, e.pos)),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "transaction index: a run page could not be read");
                    *unread =
                        Some(format!("a page of the transaction index could not be read: {e}"));
                }
            }
            p += 1;
            if p >= self.pages() || self.fences[p] != *prefix {
                return;
            }
        }
    }

    /// Reads the run at `path` by its footer.
    fn open(path: &Path) -> Result<Run, RunError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| RunError::Io(format!("{name}: {e}"));
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        Run::read_footer(path, file, size).map_err(|e| match e {
            RunError::Io(what) => RunError::Io(format!("{name}: {what}")),
            RunError::Damaged(what) => RunError::Damaged(format!("{name}: {what}")),
        })
    }

    /// [`Run::open`] past opening the file: what it holds not being a run is damage (a read
    /// past the end of a file cut short is too); a read that fails otherwise (EIO, no
    /// memory) is not, and the run is kept (before stop 46 it was set aside as damaged,
    /// with every run after it, and the start indexed their blocks again).
    fn read_footer(path: &Path, file: File, size: u64) -> Result<Run, RunError> {
        let err = |what: &str| RunError::Damaged(what.to_string());
        let read = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => RunError::Damaged(e.to_string()),
            _ => RunError::Io(e.to_string()),
        };
        if size < 32 {
            return Err(err("not a run file"));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0).map_err(read)?;
        if &magic != MAGIC {
            return Err(err("not a run file"));
        }
        let mut tail = [0u8; 16];
        file.read_exact_at(&mut tail, size - 16).map_err(read)?;
        if &tail[8..] != END {
            return Err(err("no footer end"));
        }
        let mut l = [0u8; 8];
        l.copy_from_slice(&tail[..8]);
        let footer_len = u64::from_le_bytes(l);
        let Some(footer_at) = size.checked_sub(16).and_then(|s| s.checked_sub(footer_len)) else {
            return Err(err("footer longer than the file"));
        };
        if footer_len < 60 || footer_at < MAGIC.len() as u64 {
            return Err(err("footer too short"));
        }
        let mut footer = vec![0u8; footer_len as usize];
        file.read_exact_at(&mut footer, footer_at).map_err(read)?;
        let (body, crc) = footer.split_at(footer.len() - 4);
        let mut c = [0u8; 4];
        c.copy_from_slice(crc);
        if crc32fast::hash(body) != u32::from_le_bytes(c) {
            return Err(err("footer does not match its checksum"));
        }
        let mut b = body;
        let u64_of = |b: &mut &[u8]| -> Result<u64, RunError> {
            let (head, rest) = b.split_at_checked(8).ok_or_else(|| err("footer truncated"))?;
            *b = rest;
            let mut x = [0u8; 8];
            x.copy_from_slice(head);
            Ok(u64::from_le_bytes(x))
        };
        let entries = u64_of(&mut b)?;
        // Bounds the sizes computed from it (a footer that checks cannot claim more).
        if entries > size / ENTRY as u64 {
            return Err(err("footer does not match the file"));
        }
        let first = u64_of(&mut b)?;
        let last = u64_of(&mut b)?;
        let (h, rest) = b.split_at_checked(32).ok_or_else(|| err("footer truncated"))?;
        b = rest;
        let last_hash = B256::from_slice(h);
        let pages = entries.div_ceil(PAGE_ENTRIES as u64);
        let data = (entries / PAGE_ENTRIES as u64) * PAGE_BYTES
            + match entries % PAGE_ENTRIES as u64 {
                0 => 0,
                r => r * ENTRY as u64 + 4,
            };
        let words = bloom_bits(entries) / 64;
        if first > last
            || MAGIC.len() as u64 + data != footer_at
            || b.len() as u64 != pages * 16 + words * 8
        {
            return Err(err("footer does not match the file"));
        }
        let (f, rest) = b.split_at((pages * 16) as usize);
        let fences = f
            .chunks_exact(16)
            .map(|c| {
                let mut p = [0u8; 16];
                p.copy_from_slice(c);
                p
            })
            .collect();
        let bloom = rest
            .chunks_exact(8)
            .map(|c| {
                let mut x = [0u8; 8];
                x.copy_from_slice(c);
                u64::from_le_bytes(x)
            })
            .collect();
        Ok(Run {
            path: path.to_path_buf(),
            file,
            damaged: AtomicBool::new(false),
            first,
            last,
            last_hash,
            entries,
            fences,
            bloom,
        })
    }
}

/// Why a run file could not be opened.
#[derive(Debug)]
enum RunError {
    /// Reading it failed (kept: the index stays in memory).
    Io(String),
    /// It is not a whole run file (removed).
    Damaged(String),
}

/// Writes a run file from entries given in a run's order.
struct RunWriter {
    out: std::io::BufWriter<File>,
    tmp: PathBuf,
    page: Vec<u8>,
    fences: Vec<[u8; 16]>,
    bloom: Vec<u64>,
    entries: u64,
}

/// Tells apart the temporary files of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl RunWriter {
    fn new(dir: &Path, total: u64) -> std::io::Result<RunWriter> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("run.{}.{seq}.tmp", std::process::id()));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(MAGIC)?;
        Ok(RunWriter {
            out,
            tmp,
            page: Vec::with_capacity(PAGE_ENTRIES * ENTRY),
            fences: Vec::new(),
            bloom: vec![0; (bloom_bits(total) / 64) as usize],
            entries: 0,
        })
    }

    fn push(&mut self, e: &Entry) -> std::io::Result<()> {
        if self.page.is_empty() {
            self.fences.push(e.prefix);
        }
        e.put(&mut self.page);
        let bits = self.bloom.len() as u64 * 64;
        for b in probes(&e.prefix, bits) {
            self.bloom[(b / 64) as usize] |= 1 << (b % 64);
        }
        self.entries += 1;
        if self.page.len() == PAGE_ENTRIES * ENTRY {
            self.end_page()?;
        }
        Ok(())
    }

    fn end_page(&mut self) -> std::io::Result<()> {
        if !self.page.is_empty() {
            self.out.write_all(&self.page)?;
            self.out.write_all(&crc32fast::hash(&self.page).to_le_bytes())?;
            self.page.clear();
        }
        Ok(())
    }

    /// Ends the file (synced), names it for `first..=last` in `dir` and opens it.
    fn finish(mut self, dir: &Path, first: u64, last: u64, last_hash: B256) -> Result<Run, String> {
        let io = |e: std::io::Error| e.to_string();
        let bits = self.bloom.len() as u64 * 64;
        if bits != bloom_bits(self.entries) {
            // Written with another count than announced: the filter would not match.
            return Err(format!("{} entries written, another count announced", self.entries));
        }
        self.end_page().map_err(io)?;
        let mut footer = Vec::with_capacity(60 + self.fences.len() * 16 + self.bloom.len() * 8);
        footer.extend_from_slice(&self.entries.to_le_bytes());
        footer.extend_from_slice(&first.to_le_bytes());
        footer.extend_from_slice(&last.to_le_bytes());
        footer.extend_from_slice(last_hash.as_slice());
        for f in &self.fences {
            footer.extend_from_slice(f);
        }
        for w in &self.bloom {
            footer.extend_from_slice(&w.to_le_bytes());
        }
        let crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&crc.to_le_bytes());
        self.out.write_all(&footer).map_err(io)?;
        self.out.write_all(&(footer.len() as u64).to_le_bytes()).map_err(io)?;
        self.out.write_all(END).map_err(io)?;
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)?;
        let path = dir.join(run_name(first, last));
        std::fs::rename(&self.tmp, &path).map_err(io)?;
        // Past the rename a failure removes the file again: a run the index does not hold
        // must not be taken for one at the next start.
        let run = File::open(dir).and_then(|d| d.sync_all()).map_err(io).and_then(|()| {
            Run::open(&path).map_err(|e| match e {
                RunError::Io(e) | RunError::Damaged(e) => e,
            })
        });
        if run.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        run
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        // After `finish` the temporary name is gone; before it, the file is dropped unfinished.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn run_name(first: u64, last: u64) -> String {
    format!("txs-{first:020}-{last:020}.run")
}

/// Reads a run's entries in order, a page at a time.
struct Entries<'a> {
    run: &'a Run,
    page: usize,
    buf: std::vec::IntoIter<Entry>,
}

impl<'a> Entries<'a> {
    fn new(run: &'a Run) -> Entries<'a> {
        Entries { run, page: 0, buf: Vec::new().into_iter() }
    }

    fn next(&mut self) -> Result<Option<Entry>, String> {
        loop {
            if let Some(e) = self.buf.next() {
                return Ok(Some(e));
            }
            if self.page >= self.run.pages() {
                return Ok(None);
            }
            self.buf = self.run.page(self.page)?.into_iter();
            self.page += 1;
        }
    }
}

/// The part of the index on disk, shared with the thread that writes and merges runs.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    part: RwLock<DiskPart>,
    /// Set while the writing thread runs.
    busy: AtomicBool,
    /// Set when the chain closes: the thread stops at its next page.
    stop: AtomicBool,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct DiskPart {
    /// The memory part being written out (still answering lookups).
    frozen: Option<Arc<Memory>>,
    /// The runs, oldest first, covering the blocks from the genesis without a gap.
    runs: Vec<Arc<Run>>,
}

impl Disk {
    /// The writing thread: writes the frozen part out, then merges runs, and does it again
    /// if a part was frozen as it was finishing. A write that failed ends it.
    fn run_writer(&self) {
        loop {
            if let Err(e) = self.work() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "the transaction index writer stopped");
                self.busy.store(false, Ordering::Release);
                return;
            }
            self.busy.store(false, Ordering::Release);
            // A part frozen after the last look, while this thread still counted as busy,
            // is this thread's to write (unless a new writer took it).
            if self.part.read().frozen.is_none() || self.busy.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    /// Writes the frozen part out, then merges the newest runs while the older holds at most
    /// twice the newer's entries. A part frozen during a merge is written out at once
    /// (memory stays bounded however long the merge takes). A merge stops when the chain
    /// closes; a write out does not.
    fn work(&self) -> Result<(), String> {
        self.flush()?;
        loop {
            // The newest such pair, not only the last two: parts written out during a merge
            // come after its output, and the pair before them may qualify once it is done
            // (a review of a flaky test found twelve runs where seven were due).
            let pair = {
                let p = self.part.read();
                let runs: Vec<(u64, bool)> =
                    p.runs.iter().map(|r| (r.entries, r.damaged.load(Ordering::Acquire))).collect();
                pair_to_merge(&runs).map(|i| (p.runs[i].clone(), p.runs[i + 1].clone()))
            };
            let Some((a, b)) = pair else { return Ok(()) };
            let run = match self.merge(&a, &b) {
                Ok(run) => run,
                // A merge stopped by the close, or by a damaged page (that run merges no
                // more): the runs stay as they are.
                Err(e) if self.stop.load(Ordering::Acquire) => return Err(e),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "merging transaction index runs failed");
                    return Ok(());
                }
            };
            {
                let mut p = self.part.write();
                let at = p.runs.iter().position(|r| Arc::ptr_eq(r, &a));
                match at {
                    Some(i) if p.runs.get(i + 1).is_some_and(|r| Arc::ptr_eq(r, &b)) => {
                        p.runs.splice(i..i + 2, [Arc::new(run)]);
                    }
                    _ => return Err("the runs changed under a merge".into()),
                }
            }
            // The merged run is in place (synced, renamed) before its inputs go.
            for r in [&a, &b] {
                if let Err(e) = std::fs::remove_file(&r.path) {
                    tracing::warn!(path = %r.path.display(), error = %e, "removing a merged run failed");
                }
            }
        }
    }

    /// Writes the frozen part out, if there is one, and puts its run in its place.
    fn flush(&self) -> Result<(), String> {
        let frozen = self.part.read().frozen.clone();
        if let Some(m) = frozen {
            let run = self.write_memory(&m)?;
            let mut p = self.part.write();
            p.runs.push(Arc::new(run));
            p.frozen = None;
        }
        Ok(())
    }

    fn stopped(&self) -> Result<(), String> {
        match self.stop.load(Ordering::Acquire) {
            true => Err("the chain closed".into()),
            false => Ok(()),
        }
    }

    fn write_memory(&self, m: &Memory) -> Result<Run, String> {
        let Some((last, last_hash)) = m.last else { return Err("an empty part".into()) };
        let entries = m.sorted();
        let mut w = RunWriter::new(&self.dir, entries.len() as u64).map_err(|e| e.to_string())?;
        for e in &entries {
            w.push(e).map_err(|e| e.to_string())?;
        }
        w.finish(&self.dir, m.first, last, last_hash)
    }

    /// One run of `older` and `newer` (the blocks right after it), in a run's order.
    fn merge(&self, older: &Run, newer: &Run) -> Result<Run, String> {
        if older.last + 1 != newer.first {
            return Err(format!(
                "runs {}..{} and {}..{} do not follow",
                older.first, older.last, newer.first, newer.last
            ));
        }
        let mut w =
            RunWriter::new(&self.dir, older.entries + newer.entries).map_err(|e| e.to_string())?;
        let (mut a, mut b) = (Entries::new(older), Entries::new(newer));
        let (mut x, mut y) = (a.next()?, b.next()?);
        let mut i = 0u64;
        loop {
            if i.is_multiple_of(PAGE_ENTRIES as u64) {
                self.stopped()?;
                // A part frozen meanwhile goes out first.
                if self.part.read().frozen.is_some() {
                    self.flush()?;
                }
            }
            i += 1;
            let e = match (x, y) {
                (None, None) => break,
                (Some(e), None) => {
                    x = a.next()?;
                    e
                }
                (None, Some(e)) => {
                    y = b.next()?;
                    e
                }
                (Some(p), Some(q)) => {
                    if q.key() <= p.key() {
                        y = b.next()?;
                        q
                    } else {
                        x = a.next()?;
                        p
                    }
                }
            };
            w.push(&e).map_err(|e| e.to_string())?;
        }
        w.finish(&self.dir, older.first, newer.last, newer.last_hash)
    }
}

/// Of `runs`, those that chain from block 0 without a gap furthest; the others' files are
/// removed (superseded by a merge a crash interrupted, or past a gap).
fn chain_from_genesis(mut runs: Vec<Run>) -> Vec<Arc<Run>> {
    runs.sort_by_key(|r| (r.first, r.last));
    // For each block a chain reaches (its next block), the runs of one such chain.
    let mut reach: std::collections::BTreeMap<u64, Vec<usize>> = std::collections::BTreeMap::new();
    reach.insert(0, Vec::new());
    for (i, r) in runs.iter().enumerate() {
        if let Some(before) = reach.get(&r.first).cloned() {
            if r.last < u64::MAX {
                reach.entry(r.last + 1).or_insert_with(|| [before, vec![i]].concat());
            }
        }
    }
    let best = reach.into_iter().next_back().map(|(_, c)| c).unwrap_or_default();
    let mut out = Vec::new();
    for (i, r) in runs.into_iter().enumerate() {
        if best.contains(&i) {
            out.push(Arc::new(r));
        } else {
            let _ = std::fs::remove_file(&r.path);
        }
    }
    out
}

/// The chain's transaction index: the newest part in memory, the rest in run files (see the
/// module's documentation). Without a directory it stays in memory.
#[derive(Debug)]
pub(crate) struct TxIndex {
    fresh: Memory,
    disk: Option<Arc<Disk>>,
    flush_at: usize,
    /// After a write out failed: it is tried again once `fresh` holds this many.
    retry_at: Option<usize>,
    /// Runs were opened and not yet checked against the block log ([`TxIndex::runs_match`],
    /// [`TxIndex::runs_checked`]): nothing is frozen or written meanwhile. (Before stop 50 a
    /// part frozen while the log was read could be merged with runs of another log into one
    /// run whose last block was the new log's, which the check then took for a match.) A
    /// start checks each run's end as it reads the log, so parts freeze again once it has
    /// passed the last run's end.
    unchecked: bool,
}

/// What the runs hold for a hash's first 16 bytes: the places found, newest first, and why
/// some page that may hold more could not be read (logged), if one could not. Only the
/// caller, which checks a place against the hash itself, can tell whether what was found
/// answers it: a place of another hash with the same prefix does not (since stop 56; stop
/// 55's first version took any place found for an answer, and a damaged page of one run
/// made lookups of hashes held by other runs errors).
pub(crate) struct RunPlaces {
    pub(crate) places: Vec<(u64, u32)>,
    pub(crate) unread: Option<String>,
}

/// What a lookup found in memory, and the runs that may hold the hash, newest first.
pub(crate) struct Lookup {
    pub(crate) memory: Vec<Found>,
    runs: Vec<Arc<Run>>,
    prefix: [u8; 16],
}

impl Lookup {
    /// Whether any run may hold the hash (by their filters).
    pub(crate) fn runs_may_hold(&self) -> bool {
        !self.runs.is_empty()
    }

    /// The places the runs hold for the hash's first 16 bytes, newest first (their pages
    /// are read: I/O), and whether a page that may hold more could not be read.
    pub(crate) fn run_places(&self) -> RunPlaces {
        let mut found = RunPlaces { places: Vec::new(), unread: None };
        for r in &self.runs {
            r.find(&self.prefix, &mut found.places, &mut found.unread);
        }
        found
    }
}

impl TxIndex {
    /// Opens the index's runs in `dir` (created if missing): the runs that chain from the
    /// genesis, the others and temporary files removed. A directory that cannot be made or
    /// read leaves the index in memory (logged).
    pub(crate) fn open(dir: &Path, flush_at: usize) -> TxIndex {
        let mut ix = TxIndex {
            fresh: Memory::default(),
            disk: None,
            flush_at: flush_at.max(1),
            retry_at: None,
            unchecked: false,
        };
        let listed = std::fs::create_dir_all(dir).and_then(|()| std::fs::read_dir(dir));
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "the transaction index stays in memory");
                return ix;
            }
        };
        let mut runs = Vec::new();
        for entry in listed.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.ends_with(".damaged") {
                let _ = std::fs::remove_file(&path);
            } else if name.starts_with("txs-") && name.ends_with(".run") {
                match Run::open(&path) {
                    Ok(r) => runs.push(r),
                    Err(RunError::Damaged(e)) => {
                        tracing::warn!(error = %e, "a transaction index run is removed");
                        let _ = std::fs::remove_file(&path);
                    }
                    Err(RunError::Io(e)) => {
                        // Kept for a later start; this one indexes in memory.
                        tracing::warn!(error = %e, "the transaction index stays in memory");
                        return ix;
                    }
                }
            }
        }
        let chained = chain_from_genesis(runs);
        ix.fresh = Memory::starting_at(chained.last().map_or(0, |r| r.last + 1));
        ix.unchecked = !chained.is_empty();
        ix.disk = Some(Arc::new(Disk {
            dir: dir.to_path_buf(),
            part: RwLock::new(DiskPart { frozen: None, runs: chained }),
            busy: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            worker: Mutex::new(None),
        }));
        ix
    }

    /// Each run's last block and its hash (what [`TxIndex::runs_match`] checks).
    pub(crate) fn run_ends(&self) -> Vec<(u64, B256)> {
        self.disk.as_ref().map_or(Vec::new(), |d| {
            d.part.read().runs.iter().map(|r| (r.last, r.last_hash)).collect()
        })
    }

    /// Says the runs opened were checked against the block log and match it (their ends
    /// read back as the log's blocks): parts may be frozen and written again.
    pub(crate) fn runs_checked(&mut self) {
        self.unchecked = false;
    }

    /// The last block the runs cover, if any.
    pub(crate) fn covered(&self) -> Option<u64> {
        let d = self.disk.as_ref()?;
        d.part.read().runs.last().map(|r| r.last)
    }

    /// Whether each run's last block has the hash `hash_of` gives for its number. If not,
    /// every run is removed (the index is then built again from the block log).
    pub(crate) fn runs_match(&mut self, hash_of: impl Fn(u64) -> Option<B256>) -> bool {
        self.unchecked = false;
        let Some(d) = self.disk.clone() else { return true };
        if d.part.read().runs.iter().all(|r| hash_of(r.last) == Some(r.last_hash)) {
            return true;
        }
        tracing::warn!(dir = %d.dir.display(), "the transaction index does not match the block log: built again");
        // A writer started while the log was read (its runs go too).
        self.settle();
        let mut p = d.part.write();
        for r in p.runs.drain(..) {
            let _ = std::fs::remove_file(&r.path);
        }
        p.frozen = None;
        self.fresh = Memory::starting_at(0);
        self.retry_at = None;
        false
    }

    /// Records transaction `hash` at position `i` of block `n`.
    pub(crate) fn insert(&mut self, hash: B256, n: u64, i: u32) {
        self.fresh.insert(hash, n, i);
    }

    /// Block `n` (hash `hash`) is indexed: past `flush_at` transactions in memory, they are
    /// frozen and written out on a thread of their own (or by the one running, which takes
    /// a part frozen while it works). Returns whether it froze them.
    pub(crate) fn block_done(&mut self, n: u64, hash: B256) -> bool {
        self.fresh.last = Some((n, hash));
        let Some(disk) = &self.disk else { return false };
        if self.unchecked {
            return false;
        }
        // Nothing is started once the chain closed.
        if self.fresh.len() < self.flush_at || disk.stop.load(Ordering::Acquire) {
            return false;
        }
        let mut part = disk.part.write();
        let froze = part.frozen.is_none();
        if froze {
            let m = std::mem::replace(&mut self.fresh, Memory::starting_at(n + 1));
            part.frozen = Some(Arc::new(m));
            self.retry_at = None;
        } else if disk.busy.load(Ordering::Acquire)
            || self.retry_at.is_some_and(|at| self.fresh.len() < at)
        {
            // The writer has it in hand; or its write failed and is tried again later.
            return false;
        } else {
            // Its write failed: tried again now, and then once as many more are indexed.
            self.retry_at = Some(self.fresh.len().saturating_add(self.flush_at));
        }
        drop(part);
        if disk.busy.swap(true, Ordering::AcqRel) {
            return froze;
        }
        let d = disk.clone();
        let spawned =
            std::thread::Builder::new().name("farol-txindex".into()).spawn(move || d.run_writer());
        match spawned {
            Ok(h) => {
                // A finished writer's handle is dropped (it has nothing to join).
                *disk.worker.lock() = Some(h);
            }
            Err(e) => {
                disk.busy.store(false, Ordering::Release);
                tracing::warn!(error = %e, "the transaction index writer could not start");
            }
        }
        froze
    }

    /// The hash's places in memory (newest first), and the runs whose filters let it through.
    pub(crate) fn lookup(&self, hash: &B256) -> Lookup {
        let prefix = prefix_of(hash);
        let mut memory: Vec<Found> = self.fresh.find(hash).into_iter().collect();
        let mut runs = Vec::new();
        if let Some(d) = &self.disk {
            let p = d.part.read();
            memory.extend(p.frozen.as_ref().and_then(|m| m.find(hash)));
            runs = p.runs.iter().rev().filter(|r| r.may_hold(&prefix)).cloned().collect();
        }
        Lookup { memory, runs, prefix }
    }

    /// Stops the writing thread at its next page and waits for it.
    pub(crate) fn stop(&self) {
        if let Some(d) = &self.disk {
            d.stop.store(true, Ordering::Release);
            let h = d.worker.lock().take();
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }

    /// Runs, transactions in memory (the frozen part included), and whether a writer runs.
    pub(crate) fn stats(&self) -> IndexStats {
        let (runs, frozen, busy) = match &self.disk {
            Some(d) => {
                let p = d.part.read();
                (
                    p.runs.iter().map(|r| (r.first, r.last, r.entries)).collect(),
                    p.frozen.as_ref().map_or(0, |m| m.len()),
                    d.busy.load(Ordering::Acquire),
                )
            }
            None => (Vec::new(), 0, false),
        };
        IndexStats { runs, in_memory: self.fresh.len() + frozen, writing: busy }
    }

    /// Waits until no writer runs (for tests and benchmarks).
    pub(crate) fn settle(&self) {
        if let Some(d) = &self.disk {
            let h = d.worker.lock().take();
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }
}

impl Drop for TxIndex {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the transaction index holds where (`Chain::index_stats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Each run's blocks and entries, oldest first.
    pub runs: Vec<(u64, u64, u64)>,
    /// Transactions indexed in memory.
    pub in_memory: usize,
    /// Whether a run is being written or merged.
    pub writing: bool,
}

/// Of runs (their entries, and whether damaged) in block order, the first of the newest
/// adjacent pair to merge: the older holds at most twice the newer's entries, and neither is
/// damaged.
fn pair_to_merge(runs: &[(u64, bool)]) -> Option<usize> {
    (0..runs.len().saturating_sub(1)).rev().find(|&i| {
        let ((older, a), (newer, b)) = (runs[i], runs[i + 1]);
        older <= 2 * newer && !a && !b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transaction index keeps 16 bytes of each hash: a second hash with the same first
    /// 16 bytes is kept whole and found exactly, a hash of those 16 bytes that was never
    /// indexed is found as the other's place, and places too large to pack are kept whole.
    #[test]
    fn the_transaction_index_tells_prefixes_from_hashes() {
        let hash = |first: u8, rest: u8| {
            let mut h = B256::repeat_byte(rest);
            h[..16].copy_from_slice(&[first; 16]);
            h
        };
        let mut ix = Memory::default();
        ix.insert(hash(1, 1), 7, 3);
        ix.insert(hash(1, 2), 9, 0);
        ix.insert(hash(2, 2), (1 << 40) + 5, 1);
        ix.insert(hash(3, 3), 5, 1 << 24);
        assert_eq!(ix.find(&hash(1, 1)), Some(Found::Prefix(7, 3)));
        assert_eq!(ix.find(&hash(1, 2)), Some(Found::Exact((9, 0))));
        // Never indexed, same first 16 bytes: the other's place.
        assert_eq!(ix.find(&hash(1, 3)), Some(Found::Prefix(7, 3)));
        assert_eq!(ix.find(&hash(4, 4)), None);
        assert_eq!(ix.find(&hash(2, 2)), Some(Found::Exact(((1 << 40) + 5, 1))));
        assert_eq!(ix.find(&hash(3, 3)), Some(Found::Exact((5, 1 << 24))));
        // The largest packed place round-trips.
        ix.insert(hash(5, 5), (1 << 40) - 1, (1 << 24) - 1);
        assert_eq!(ix.find(&hash(5, 5)), Some(Found::Prefix((1 << 40) - 1, (1 << 24) - 1)));
        // A hash indexed again (its prefix taken by itself) stands at its later place.
        ix.insert(hash(1, 1), 8, 2);
        assert_eq!(ix.find(&hash(1, 1)), Some(Found::Exact((8, 2))));
    }

    fn hash(rng: &mut impl rand::Rng) -> B256 {
        B256::from(rng.random::<[u8; 32]>())
    }

    /// Every place `ix` has for `hash`, newest first (memory, then the runs).
    fn places(ix: &TxIndex, hash: &B256) -> Vec<(u64, u32)> {
        let l = ix.lookup(hash);
        let runs = l.run_places();
        assert_eq!(runs.unread, None, "{hash}");
        l.memory.iter().map(|f| f.place()).chain(runs.places).collect()
    }

    /// What was indexed: each hash's own place, and every place under each prefix, newest
    /// first.
    #[derive(Default)]
    struct Model {
        own: Vec<(B256, (u64, u32))>,
        by_prefix: std::collections::BTreeMap<[u8; 16], Vec<(u64, u32)>>,
    }

    impl Model {
        /// Indexes `blocks` blocks of random transactions into `ix`, some with hashes that
        /// share an earlier one's first 16 bytes.
        fn fill(
            &mut self,
            ix: &mut TxIndex,
            rng: &mut impl rand::Rng,
            blocks: std::ops::Range<u64>,
        ) {
            self.fill_with(ix, rng, blocks, false);
        }

        /// [`Model::fill`], waiting for the writer before each block and after each part
        /// frozen: the runs are then what the entries make, however slow the disk (a
        /// writer that lags behind leaves more in memory, which tests that count runs must
        /// not depend on).
        fn fill_settled(
            &mut self,
            ix: &mut TxIndex,
            rng: &mut impl rand::Rng,
            blocks: std::ops::Range<u64>,
        ) {
            self.fill_with(ix, rng, blocks, true);
        }

        fn fill_with(
            &mut self,
            ix: &mut TxIndex,
            rng: &mut impl rand::Rng,
            blocks: std::ops::Range<u64>,
            settle: bool,
        ) {
            for n in blocks {
                for i in 0..rng.random_range(0..12u32) {
                    let h = match rng.random_range(0..10) {
                        0 if !self.own.is_empty() => {
                            let mut h = self.own[rng.random_range(0..self.own.len())].0;
                            h[20] ^= rng.random_range(1..=255u8);
                            h
                        }
                        _ => hash(rng),
                    };
                    if self.own.iter().any(|(o, _)| *o == h) {
                        continue;
                    }
                    ix.insert(h, n, i);
                    self.by_prefix.entry(prefix_of(&h)).or_default().insert(0, (n, i));
                    self.own.push((h, (n, i)));
                }
                if settle {
                    // No part is pending: this block freezes one once there are enough.
                    ix.settle();
                }
                if ix.block_done(n, B256::with_last_byte(n as u8)) && settle {
                    ix.settle();
                }
            }
        }

        /// `ix` answers as the model says: the runs give every place under a prefix up to
        /// the blocks they cover, newest first; every place found is one under the prefix,
        /// and the hash's own place is among them; random hashes find nothing.
        fn check(&self, ix: &TxIndex) {
            let covered = ix.covered();
            for (h, at) in &self.own {
                let under = &self.by_prefix[&prefix_of(h)];
                let in_runs: Vec<_> = under
                    .iter()
                    .copied()
                    .filter(|(n, _)| covered.is_some_and(|c| *n <= c))
                    .collect();
                let got = ix.lookup(h).run_places();
                assert_eq!((got.places, got.unread), (in_runs, None), "{h}");
                let all = places(ix, h);
                assert!(all.iter().all(|p| under.contains(p)), "{h}: {all:?} {under:?}");
                assert!(all.contains(at), "{h}: its own place {at:?} in {all:?}");
            }
            for _ in 0..2_000 {
                assert!(places(ix, &hash(&mut rand::rng())).is_empty());
            }
        }

        /// The model of what a reopened index holds: the blocks up to `covered`.
        fn cut(&self, covered: Option<u64>) -> Model {
            let keep = |p: &(u64, u32)| covered.is_some_and(|c| p.0 <= c);
            Model {
                own: self.own.iter().copied().filter(|(_, p)| keep(p)).collect(),
                by_prefix: self
                    .by_prefix
                    .iter()
                    .map(|(k, v)| (*k, v.iter().copied().filter(keep).collect()))
                    .collect(),
            }
        }
    }

    /// The pair merged is the newest that qualifies, not only the last two: parts written
    /// out during a long merge come after its output (here the runs of 4 and 1), and the
    /// pair before them (4 and 4) is due. Before stop 45's fix only the last two were looked
    /// at, and runs piled up under a slow disk. A damaged run merges with neither neighbour.
    #[test]
    fn the_newest_qualifying_pair_is_merged() {
        use super::pair_to_merge;
        let sizes = |s: &[u64]| s.iter().map(|&e| (e, false)).collect::<Vec<_>>();
        assert_eq!(pair_to_merge(&sizes(&[16, 4, 4, 1])), Some(1));
        assert_eq!(pair_to_merge(&sizes(&[16, 8, 4, 2])), Some(2));
        assert_eq!(pair_to_merge(&sizes(&[64, 16, 4, 1])), None);
        assert_eq!(pair_to_merge(&sizes(&[4])), None);
        assert_eq!(pair_to_merge(&[]), None);
        assert_eq!(pair_to_merge(&[(4, false), (4, true), (4, false)]), None);
        assert_eq!(pair_to_merge(&[(4, false), (4, false), (4, true)]), Some(0));
    }

    /// Transactions written out to runs and merged are found where they were indexed, newest
    /// first under a shared prefix, by a lookup and after the index is opened again; hashes
    /// never indexed are not; runs stay few and chain from the genesis.
    #[test]
    fn runs_hold_every_place_and_merge_in_order() {
        use rand::SeedableRng;
        for seed in 0..4 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let mut ix = TxIndex::open(dir.path(), 50);
            let mut model = Model::default();
            for step in 0..20u64 {
                model.fill(&mut ix, &mut rng, step * 30..(step + 1) * 30);
                if step % 3 == 0 {
                    ix.settle();
                }
            }
            // The last part frozen and written whatever the writer lagged before.
            model.fill_settled(&mut ix, &mut rng, 600..620);
            ix.settle();
            let stats = ix.stats();
            assert!(!stats.writing);
            assert!((1..=8).contains(&stats.runs.len()), "{:?}", stats.runs);
            assert!(
                stats.in_memory < 200,
                "{} in memory: {stats:?}, {} indexed",
                stats.in_memory,
                model.own.len()
            );
            // The runs chain from the genesis and hold every entry not in memory.
            let mut next = 0;
            for (first, last, _) in &stats.runs {
                assert_eq!(*first, next);
                next = last + 1;
            }
            let in_runs: u64 = stats.runs.iter().map(|r| r.2).sum();
            assert_eq!(in_runs as usize + stats.in_memory, model.own.len());
            model.check(&ix);
            let covered = ix.covered();
            assert_eq!(covered, stats.runs.last().map(|r| r.1));
            drop(ix);
            // Opened again: the runs alone (the memory part is the chain's to index again).
            let ix = TxIndex::open(dir.path(), 50);
            assert_eq!((ix.covered(), ix.stats().runs), (covered, stats.runs));
            model.cut(covered).check(&ix);
        }
    }

    /// A write out that fails (here the index's folder replaced by a file, so no file can
    /// be made in it) keeps the frozen part in memory, answering; the write is tried again
    /// as more is indexed, and once the folder is back the runs take the older part and
    /// every place is found as before.
    #[test]
    fn a_failed_write_keeps_its_part_and_is_tried_again() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let top = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = top.path().join("txindex");
        let mut ix = TxIndex::open(&dir, 50);
        std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&dir, b"not a folder").unwrap_or_else(|e| panic!("{e}"));
        let mut model = Model::default();
        for step in 0..6u64 {
            model.fill(&mut ix, &mut rng, step * 10..(step + 1) * 10);
            ix.settle();
        }
        let stats = ix.stats();
        assert!(model.own.len() > 150, "{} indexed", model.own.len());
        assert!(stats.runs.is_empty() && stats.in_memory == model.own.len(), "{stats:?}");
        model.check(&ix);
        std::fs::remove_file(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        for step in 6..20u64 {
            model.fill(&mut ix, &mut rng, step * 10..(step + 1) * 10);
            ix.settle();
        }
        let stats = ix.stats();
        let in_runs: u64 = stats.runs.iter().map(|r| r.2).sum();
        assert!(in_runs > 0 && stats.in_memory < 150, "{stats:?}");
        assert_eq!(in_runs as usize + stats.in_memory, model.own.len());
        model.check(&ix);
    }

    /// The writer stopped at any moment (a node stopping mid-merge) leaves files that a
    /// reopen uses: the runs chain from the genesis and answer for what they cover.
    #[test]
    fn a_writer_stopped_at_any_moment_leaves_usable_runs() {
        use rand::SeedableRng;
        for seed in 0..12u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed);
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let mut ix = TxIndex::open(dir.path(), 64);
            let mut model = Model::default();
            model.fill(&mut ix, &mut rng, 0..300);
            std::thread::sleep(std::time::Duration::from_micros(seed * seed * 50));
            ix.stop();
            drop(ix);
            let ix = TxIndex::open(dir.path(), 64);
            let runs = ix.stats().runs;
            let mut next = 0;
            for (first, last, _) in &runs {
                assert_eq!(*first, next, "seed {seed}: {runs:?}");
                next = last + 1;
            }
            model.cut(ix.covered()).check(&ix);
            let left: Vec<_> = std::fs::read_dir(dir.path())
                .map(|d| {
                    d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                })
                .unwrap_or_default();
            assert_eq!(left.len(), runs.len(), "seed {seed}: {left:?}");
        }
    }

    /// At open, temporary files, runs superseded by a merge a crash left behind, runs after
    /// a gap and damaged footers go; a damaged page answers nothing (the rest still
    /// answers) and sets its run aside, so the next start indexes its blocks again; a run
    /// that does not match the log goes with every other.
    #[test]
    fn runs_that_cannot_be_used_are_removed() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut ix = TxIndex::open(dir.path(), 40);
        let mut model = Model::default();
        model.fill_settled(&mut ix, &mut rng, 0..20);
        ix.settle();
        let first = ix.stats().runs;
        assert!(!first.is_empty(), "{first:?}");
        let first_path = dir.path().join(run_name(first[0].0, first[0].1));
        let kept = std::fs::read(&first_path).unwrap_or_else(|e| panic!("{e}"));
        model.fill_settled(&mut ix, &mut rng, 20..60);
        ix.settle();
        let runs = ix.stats().runs;
        assert!(runs.len() < 3 && runs[0].1 > first[0].1, "merged: {runs:?}");
        drop(ix);
        // The merge's input back, a stray temporary file, a run after a gap.
        std::fs::write(&first_path, &kept).unwrap_or_else(|e| panic!("{e}"));
        let stray = dir.path().join("run.1.2.tmp");
        std::fs::write(&stray, b"half").unwrap_or_else(|e| panic!("{e}"));
        let mut w = RunWriter::new(dir.path(), 1).unwrap_or_else(|e| panic!("{e}"));
        let e = Entry { prefix: [9; 16], block: 1_005, pos: 0 };
        w.push(&e).unwrap_or_else(|e| panic!("{e}"));
        let gap = w.finish(dir.path(), 1_000, 1_010, B256::ZERO).unwrap_or_else(|e| panic!("{e}"));
        let ix = TxIndex::open(dir.path(), 40);
        assert_eq!(ix.stats().runs, runs);
        assert!(!first_path.exists() && !stray.exists() && !gap.path.exists());
        model.cut(ix.covered()).check(&ix);
        drop(ix);
        // A damaged page: a lookup of its entries is an error (since stop 55; before, they
        // were not found), the others are found, and the run is set aside; the next open
        // drops it, and the runs after it (a gap).
        let path = dir.path().join(run_name(runs[0].0, runs[0].1));
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        bytes[MAGIC.len() + 5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let ix = TxIndex::open(dir.path(), 40);
        assert_eq!(ix.stats().runs, runs);
        let fences = ix.lookup(&model.own[0].0).runs.last().map(|r| r.fences.clone());
        let fences = fences.unwrap_or_else(|| panic!("no run"));
        // Hashes of the later runs whose prefixes fall in the damaged page's range are found
        // all the same (since stop 56: they were errors).
        let (mut lost, mut found, mut elsewhere) = (0, 0, 0);
        let covered = runs.last().map_or(0, |r| r.1);
        for (h, at) in model.own.iter().filter(|(_, at)| at.0 <= covered) {
            let got = ix.lookup(h).run_places();
            let in_damaged_page = fences.len() > 1 && prefix_of(h) < fences[1];
            if at.0 > runs[0].1 {
                assert!(got.places.contains(at), "{h}: {:?}", got.places);
                elsewhere += usize::from(in_damaged_page);
            } else if in_damaged_page {
                assert!(got.unread.is_some() && !got.places.contains(at), "{h}");
                lost += 1;
            } else {
                assert!(got.places.contains(at), "{h}");
                found += 1;
            }
        }
        assert!(lost > 0 && found > 0, "{lost} lost, {found} found");
        assert!(elsewhere > 0, "no hash of a later run in the damaged page's range");
        let mut aside = path.clone().into_os_string();
        aside.push(".damaged");
        assert!(!path.exists() && Path::new(&aside).exists());
        drop(ix);
        let ix = TxIndex::open(dir.path(), 40);
        assert_eq!(ix.covered(), None);
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(0));
        drop(ix);
        // A damaged footer: the run goes.
        let mut ix = TxIndex::open(dir.path(), 40);
        let mut model = Model::default();
        model.fill(&mut ix, &mut rng, 0..20);
        ix.settle();
        drop(ix);
        let path = dir.path().join(run_name(0, ix_last(dir.path())));
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let at = bytes.len() - 30;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let ix = TxIndex::open(dir.path(), 40);
        assert_eq!(ix.covered(), None);
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(0));
        drop(ix);
        // A run whose last block is not the log's: all go.
        let mut ix = TxIndex::open(dir.path(), 40);
        model.fill(&mut ix, &mut rng, 0..20);
        ix.settle();
        drop(ix);
        let mut ix = TxIndex::open(dir.path(), 40);
        let last = ix.covered().unwrap_or_else(|| panic!("no run"));
        assert!(ix.runs_match(|n| Some(B256::with_last_byte(n as u8))));
        assert!(!ix.runs_match(|n| (n < last).then(|| B256::with_last_byte(n as u8))));
        assert_eq!((ix.covered(), ix.stats().in_memory), (None, 0));
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(0));
    }

    /// The last block of the one run in `dir`.
    fn ix_last(dir: &Path) -> u64 {
        TxIndex::open(dir, usize::MAX).covered().unwrap_or_else(|| panic!("no run"))
    }
}
