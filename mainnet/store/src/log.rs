//! The append-only log: numbered segment files of framed records, and the file layer that
//! counts every read and write the store makes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::{self, FRAME};
use crate::error::{corrupt, io_err, Result};

/// Bytes at the start of every segment: magic, segment id, format version.
pub(crate) const SEGMENT_HEADER: u64 = 16;
const MAGIC: &[u8; 8] = b"FAROLSEG";
const FORMAT: u32 = 1;

/// Where a record lives: segment id, byte offset, total length (frame included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Loc {
    pub(crate) seg: u32,
    pub(crate) off: u32,
    pub(crate) len: u32,
}

/// Counters of the file layer: what the store asked the operating system for.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    pub(crate) reads: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) writes: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) housekeeping_failures: AtomicU64,
}

/// I/O the store has done since it was opened, counted at the file layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Read system calls (`pread`) on store files.
    pub reads: u64,
    /// Bytes those reads returned.
    pub bytes_read: u64,
    /// Write system calls (`pwrite`) on store files.
    pub writes: u64,
    /// Bytes written, log, checkpoints and garbage collection included.
    pub bytes_written: u64,
    /// `fdatasync`/`fsync` calls.
    pub syncs: u64,
    /// Segment rotations and checkpoint writes that failed after their version was
    /// published (the version stands; the work is retried later).
    pub housekeeping_failures: u64,
}

impl IoCounters {
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            reads: self.reads.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            housekeeping_failures: self.housekeeping_failures.load(Ordering::Relaxed),
        }
    }
    pub(crate) fn housekeeping_failed(&self) {
        self.housekeeping_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn wrote(&self, n: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes_written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: u32,
    pub(crate) path: PathBuf,
    file: File,
}

pub(crate) fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:08}.log"))
}

/// The segment id in a file name, if it is a segment's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u32> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

impl Segment {
    /// Creates a new, empty segment. The header is written and synced under a temporary
    /// name first, so a segment file always has a whole header, whenever a crash comes.
    pub(crate) fn create(dir: &Path, id: u32, io: &IoCounters) -> Result<Segment> {
        let path = segment_path(dir, id);
        let tmp = path.with_extension("log.tmp");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut header = [0u8; SEGMENT_HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&id.to_le_bytes());
        header[12..16].copy_from_slice(&FORMAT.to_le_bytes());
        file.write_all_at(&header, 0).map_err(io_err(&tmp))?;
        io.wrote(header.len());
        io.syncs.fetch_add(1, Ordering::Relaxed);
        file.sync_all().map_err(io_err(&tmp))?;
        if path.exists() {
            return Err(corrupt(&path, 0, "a segment with this id already exists"));
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(dir)?;
        Ok(Segment { id, path, file })
    }

    /// Opens an existing segment, checking its header.
    pub(crate) fn open(dir: &Path, id: u32, io: &IoCounters) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
        let seg = Segment { id, path, file };
        let mut header = [0u8; SEGMENT_HEADER as usize];
        seg.read_exact_at(&mut header, 0, io)
            .map_err(|_| corrupt(&seg.path, 0, "segment header missing"))?;
        if &header[..8] != MAGIC {
            return Err(corrupt(&seg.path, 0, "not a Farol Store segment (bad magic)"));
        }
        if header[8..12] != id.to_le_bytes() {
            return Err(corrupt(&seg.path, 8, "segment id does not match the file name"));
        }
        if header[12..16] != FORMAT.to_le_bytes() {
            return Err(corrupt(&seg.path, 12, "unknown segment format version"));
        }
        Ok(seg)
    }

    pub(crate) fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(io_err(&self.path))?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64, io: &IoCounters) -> std::io::Result<()> {
        io.reads.fetch_add(1, Ordering::Relaxed);
        io.bytes_read.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.file.read_exact_at(buf, off)
    }

    /// Reads `len` bytes at `off` (one system call).
    pub(crate) fn read_at(&self, off: u64, len: usize, io: &IoCounters) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, off, io).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt(&self.path, off, "record runs past the end of the file")
            } else {
                io_err(&self.path)(e)
            }
        })?;
        Ok(buf)
    }

    /// Reads the record at `loc` with one system call and checks its frame and checksum.
    /// Returns the whole record; its body starts at [`FRAME`].
    pub(crate) fn read_record(&self, loc: Loc, io: &IoCounters) -> Result<Vec<u8>> {
        if (loc.len as usize) <= FRAME || loc.len as usize > FRAME + codec::MAX_BODY {
            return Err(corrupt(&self.path, loc.off as u64, "indexed record length out of range"));
        }
        let rec = self.read_at(loc.off as u64, loc.len as usize, io)?;
        codec::check_record(&rec).map_err(|r| corrupt(&self.path, loc.off as u64, r))?;
        Ok(rec)
    }

    pub(crate) fn write_at(&self, buf: &[u8], off: u64, io: &IoCounters) -> Result<()> {
        self.file.write_all_at(buf, off).map_err(io_err(&self.path))?;
        io.wrote(buf.len());
        Ok(())
    }

    pub(crate) fn sync(&self, io: &IoCounters) -> Result<()> {
        io.syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data().map_err(io_err(&self.path))
    }

    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(io_err(&self.path))?;
        self.file.sync_all().map_err(io_err(&self.path))
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// One record found while scanning a segment.
pub(crate) struct Scanned<'a> {
    pub(crate) off: u64,
    pub(crate) len: u32,
    pub(crate) body: &'a [u8],
}

/// How a scan of a segment's bytes ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte was part of a whole, valid record.
    Clean,
    /// At `off` the bytes stop being a valid record: `reason` says why, `truncated` is true
    /// when the record would run past the end of the file (what an interrupted append leaves).
    Bad { off: u64, reason: &'static str, truncated: bool },
}

/// Scans `bytes` (the segment's content from file offset `start`) record by record.
pub(crate) fn scan(
    bytes: &[u8],
    start: u64,
    mut f: impl FnMut(Scanned<'_>) -> Result<()>,
) -> Result<ScanEnd> {
    let mut pos = 0usize;
    while pos < bytes.len() {
        let off = start + pos as u64;
        let rest = &bytes[pos..];
        if rest.len() < FRAME {
            return Ok(ScanEnd::Bad { off, reason: "truncated record header", truncated: true });
        }
        let mut header = [0u8; FRAME];
        header.copy_from_slice(&rest[..FRAME]);
        let len = match codec::frame_len(&header) {
            Ok(l) => l,
            Err(reason) => return Ok(ScanEnd::Bad { off, reason, truncated: false }),
        };
        if rest.len() < FRAME + len {
            return Ok(ScanEnd::Bad { off, reason: "record runs past the end", truncated: true });
        }
        let rec = &rest[..FRAME + len];
        match codec::check_record(rec) {
            Ok(body) => f(Scanned { off, len: (FRAME + len) as u32, body })?,
            Err(reason) => return Ok(ScanEnd::Bad { off, reason, truncated: false }),
        }
        pos += FRAME + len;
    }
    Ok(ScanEnd::Clean)
}

/// The first valid commit record that starts anywhere in `bytes` (at any byte, not only
/// where a record would start): its offset in `bytes` and its whole record. Used to tell a
/// torn tail from damage in the middle of the log (docs/store.md §7). With a `seal` only a
/// commit carrying it counts: values are written into the log verbatim, so any value of 69
/// bytes or more can hold a valid-looking commit record of an older kind, or of this kind
/// with another seal (before stop 38 such a value could make a store refuse to open after a
/// crash during its write).
pub(crate) fn first_commit_in(bytes: &[u8], seal: Option<u64>) -> Option<(usize, &[u8])> {
    (0..bytes.len().saturating_sub(FRAME)).find_map(|i| {
        let rest = &bytes[i..];
        let mut header = [0u8; FRAME];
        header.copy_from_slice(&rest[..FRAME]);
        match codec::frame_len(&header) {
            // Cheap shape checks first (kind byte, length of a commit body), then the checksum.
            Ok(len) if rest.len() >= FRAME + len && codec::looks_like_commit(rest[FRAME], len) => {
                // With a seal, the seal is compared before the checksum: values crafted to
                // look like commit headers every few bytes would otherwise each cost a
                // checksum over up to the rest of the segment (quadratic; until stop 47).
                if seal.is_some_and(|s| !codec::carries_seal(&rest[FRAME..FRAME + len], s)) {
                    return None;
                }
                let rec = &rest[..FRAME + len];
                let sealed = |body: &[u8]| {
                    seal.is_none_or(|s| codec::decode_commit(body).is_ok_and(|c| c.seal == Some(s)))
                };
                codec::check_record(rec).is_ok_and(sealed).then_some((i, rec))
            }
            _ => None,
        }
    })
}

/// Whether `rest` (the bytes from a record that seems to run past the end of the file) is in
/// fact one whole record whose length field was damaged: its checksum matches when the
/// length is taken to be what is left. A torn append never looks like that.
pub(crate) fn whole_record_with_bad_length(rest: &[u8]) -> bool {
    if rest.len() <= FRAME {
        return false;
    }
    let len = ((rest.len() - FRAME) as u32).to_le_bytes();
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    codec::checksum(&len, &rest[FRAME..]) == crc
}
