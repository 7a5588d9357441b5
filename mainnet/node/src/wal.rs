//! The write-ahead logs of a node (the consensus log, the block log, the mempool journal):
//! records appended and synced, read back whole at open.
//!
//! The file (format 2, since stop 36; docs/node.md §3 has the table):
//! - a 20-byte header: the magic `farolwl2`, a salt (8 random bytes, new with every rewrite)
//!   and the CRC-32 of those 16 bytes;
//! - records, each a 20-byte header (the length, the CRC-32 of the bytes, how much of the
//!   file was synced when the record was appended, and the CRC-32 of the salt and those 16
//!   bytes) followed by the bytes. A header with length 0 is a sync mark: written (not
//!   synced) after every sync, it says the records before it were durable.
//!
//! Opening reads every whole record. A record that does not check is damage inside the log,
//! reported as [`WalError::Corrupt`] with the file left as it is, when a whole record after it
//! says the file was synced past it. Otherwise it and everything after it were never synced
//! (nothing acted on them), and the file is cut back to the record before it: a write torn by
//! a crash or a power loss. The header's own checksum is what lets a damaged length be told
//! apart: a length that checks is the writer's, and one that does not sends the search for a
//! whole record after it byte by byte. The salt keeps the bytes of a record (a transaction a
//! client sent), or a record of an earlier version of the file, from passing for a record
//! header: nobody outside knows it.
//!
//! A log of the first format (a length and a CRC-32 per record, before stop 36) is converted
//! at open, atomically; the old file stays beside it as `<name>.format1`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

/// Why the log failed.
#[derive(Debug, Error)]
pub enum WalError {
    /// An I/O error.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A record does not check, and a whole record after it says the file was synced past
    /// it: not a torn write but damage inside the log. Cutting there would lose synced records
    /// (for the consensus log, the record of blocks this validator already sent). Also a
    /// damaged file header (`at` 0), or a file of neither format.
    #[error(
        "write-ahead log {path}: the record at byte {at} is corrupt (a record after it was written once it was synced, or its header is one no writer makes)"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// Where the bad record starts.
        at: u64,
    },
}

/// Most bytes of one record (a consensus snapshot can be large).
const MAX_RECORD: usize = 1 << 30;
/// The first bytes of a log of format 2.
const MAGIC: [u8; 8] = *b"farolwl2";
/// Bytes of the file header: the magic, the salt, their CRC-32.
const FILE_HEADER: u64 = 20;
/// Bytes of a record's header: what [`Wal::append`]'s position is past [`Wal::len`].
pub const RECORD_HEADER: u64 = 20;

/// What a record's header says (its own checksum checked).
#[derive(Clone, Copy, Debug)]
struct Header {
    /// The record's bytes.
    len: u64,
    /// Their CRC-32.
    crc: u32,
    /// How much of the file was durable (synced) when the record was appended: a record
    /// damaged below a later record's `synced` had been synced, so the damage is not a torn
    /// write.
    synced: u64,
}

/// A record's header: its length, its bytes' CRC-32, how much of the file was synced when
/// it was written, and the header's own checksum (salted).
fn record_header(salt: u64, record: &[u8], synced: u64) -> [u8; RECORD_HEADER as usize] {
    let mut header = [0u8; RECORD_HEADER as usize];
    header[..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(record).to_le_bytes());
    header[8..16].copy_from_slice(&synced.to_le_bytes());
    let check = header_check(salt, &header);
    header[16..].copy_from_slice(&check.to_le_bytes());
    header
}

fn header_check(salt: u64, header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&salt.to_le_bytes());
    h.update(&header[..16]);
    h.finalize()
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// What a record header holds, if the header checks (whatever the length).
fn parse_header(salt: u64, header: &[u8]) -> Option<Header> {
    (header_check(salt, header) == le32(&header[16..20])).then(|| {
        let mut synced = [0u8; 8];
        synced.copy_from_slice(&header[8..16]);
        Header {
            len: u64::from(le32(&header[..4])),
            crc: le32(&header[4..8]),
            synced: u64::from_le_bytes(synced),
        }
    })
}

/// The header, if `header` (the 20 bytes at `at`) starts a whole record: it checks, its length
/// and sync point are ones the writer could have written, and the bytes match their CRC.
fn whole_at(
    file: &File,
    salt: u64,
    at: u64,
    header: &[u8],
    size: u64,
) -> std::io::Result<Option<Header>> {
    let Some(h) = parse_header(salt, header) else { return Ok(None) };
    if h.len > MAX_RECORD as u64 || h.synced > at || at + RECORD_HEADER + h.len > size {
        return Ok(None);
    }
    let mut body = vec![0u8; h.len as usize];
    file.read_exact_at(&mut body, at + RECORD_HEADER)?;
    Ok((crc32fast::hash(&body) == h.crc).then_some(h))
}

/// The first whole record at or after `from` (where it starts, and its header), searching
/// byte by byte (a damaged header says nothing about where the next record is).
fn find_record(
    file: &File,
    salt: u64,
    from: u64,
    size: u64,
) -> std::io::Result<Option<(u64, Header)>> {
    const CHUNK: usize = 1 << 20;
    let head = RECORD_HEADER as usize;
    let mut buf = vec![0u8; CHUNK + head - 1];
    let mut start = from;
    while start + RECORD_HEADER <= size {
        let n = (size - start).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], start)?;
        let mut i = 0;
        while i + head <= n {
            // A header of zeros never checks (`new_salt`): past runs of zeros (the space a
            // log writes ahead, megabytes of them) at once, to the first header that holds
            // a byte that is not.
            let window = &buf[i..i + head];
            if window[head - 1] == 0 && window.iter().all(|b| *b == 0) {
                match buf[i + head..n].iter().position(|b| *b != 0) {
                    Some(k) => {
                        i += k + 1;
                        continue;
                    }
                    None => break,
                }
            }
            let at = start + i as u64;
            if let Some(h) = whole_at(file, salt, at, window, size)? {
                return Ok(Some((at, h)));
            }
            i += 1;
        }
        if n < buf.len() {
            break;
        }
        start += (n - head + 1) as u64;
    }
    Ok(None)
}

/// Whether the bad record at `bad` had been synced: some whole record after `from` says the
/// file was durable past `bad` when it was written. If none does, every record from `bad` on
/// was unsynced (a power loss may keep later blocks of a write and lose earlier ones), so the
/// damage is a torn write that nothing acted on.
fn synced_past(file: &File, salt: u64, bad: u64, from: u64, size: u64) -> std::io::Result<bool> {
    let mut from = from;
    loop {
        // Past the first, records usually follow one another: look right there first.
        let mut header = [0u8; RECORD_HEADER as usize];
        let here = if from + RECORD_HEADER <= size {
            file.read_exact_at(&mut header, from)?;
            whole_at(file, salt, from, &header, size)?.map(|h| (from, h))
        } else {
            None
        };
        let found = match here {
            Some(f) => Some(f),
            None => find_record(file, salt, from + 1, size)?,
        };
        let Some((at, h)) = found else { return Ok(false) };
        if h.synced > bad {
            return Ok(true);
        }
        from = at + RECORD_HEADER + h.len;
    }
}

/// An append-only log of records.
#[derive(Debug)]
pub struct Wal {
    /// Shared with syncs running on the blocking pool ([`Wal::sync_off_thread`]).
    file: Arc<File>,
    path: String,
    /// This file's salt (a new one with every [`Wal::replace`]).
    salt: u64,
    dirty: bool,
    /// Where the log ends: the file's length, or where the space written ahead begins.
    len: u64,
    /// Bytes of the file known durable (the length at the last sync).
    synced: u64,
    /// A failed write could not be cut off again: what follows would land after its bytes,
    /// at positions this log does not know, so nothing more is appended.
    broken: bool,
    /// The space written ahead of the log's end ([`Wal::write_ahead`]), if any.
    ahead: Option<Ahead>,
    /// The file is open for writing at positions (space is or was written ahead), not to
    /// append: records are written at `len`. Appending logs write as before stop 62, so
    /// their system calls (`write`, which the fault tests fail) are unchanged.
    positioned: bool,
}

/// Space written (with zeros) past the end of a log before records need it. Writing into
/// space the file already has and holds written blocks changes no metadata a data sync must
/// commit (its size and blocks; the times are not), so a sync writes the data and flushes
/// the device, and ext4 commits no journal transaction for it (docs/consensus.md §9, stop
/// 62). Records are written at their positions, not appended at the file's end.
#[derive(Debug)]
struct Ahead {
    /// Bytes written per fill.
    chunk: u64,
    /// The log's file opened for direct writes (`O_DIRECT`), once, when the space ahead
    /// began or the file was rewritten: never by its name again, which a failed rewrite
    /// may have given to another file.
    direct: Arc<File>,
    /// Where the written space ends: from the log's end to here the file holds zeros (or
    /// nothing, where a record outran the fills).
    to: u64,
    /// The fill running, on a thread of its own.
    running: Option<Fill>,
    /// A fill failed (a full disk, say): no more are started, and records go on being
    /// written at their positions, past the space written so far (the zeros of the failed
    /// fill, if any, are cut at the next open).
    failed: bool,
}

/// A fill of `[from, to)` of the log's file with zeros, on its own thread. It always fills
/// the log's current file: [`Wal::replace`] waits for it before putting another in place.
#[derive(Debug)]
struct Fill {
    from: u64,
    to: u64,
    /// `Some(true)` once it filled and synced the space, `Some(false)` once it failed.
    done: Arc<(Mutex<Option<bool>>, Condvar)>,
}

impl Fill {
    /// Starts filling `[from, to)` of `file`, written through `direct`.
    fn start(file: Arc<File>, direct: Arc<File>, from: u64, to: u64) -> std::io::Result<Fill> {
        let done = Arc::new((Mutex::new(None), Condvar::new()));
        let d = done.clone();
        std::thread::Builder::new().name("farol-wal-ahead".into()).spawn(move || {
            // A panic is a failed fill too: whoever waits for it must not wait for ever.
            let fill =
                std::panic::AssertUnwindSafe(|| write_zeros(&file, &direct, from, to).is_ok());
            let ok = std::panic::catch_unwind(fill).unwrap_or(false);
            let (lock, cv) = &*d;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok);
            cv.notify_all();
        })?;
        Ok(Fill { from, to, done })
    }

    /// Whether it filled the space; `None` while it runs.
    fn outcome(&self) -> Option<bool> {
        *self.done.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for it to end; whether it filled the space.
    fn wait(&self) -> bool {
        let (lock, cv) = &*self.done;
        let mut g = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(ok) = *g {
                return ok;
            }
            g = cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Writes zeros over `[from, to)` (whole pages) of `file` through `direct`, the same file
/// opened past the OS's cache (`O_DIRECT`), syncs them, and reads them back into the cache.
/// Written through the cache, the zeros would be new data that ext4 writes out before the
/// journal commit their size change needs, inside whichever sync of the log's records came
/// next (p99 rose to 60–140 ms in stop 62's trials); read back, a record written into part
/// of a page finds the page in the cache rather than reading it from the disk first
/// (without that, p50 rose by 3–6 ms). Written a piece at a time, so the disk's queue never
/// holds more of them than a piece ahead of a sync.
fn write_zeros(file: &File, direct: &File, from: u64, to: u64) -> std::io::Result<()> {
    const PIECE: usize = 256 << 10;
    // Direct writes take memory aligned to the disk's blocks.
    let mut buf = vec![0u8; PIECE + 4096];
    let start = buf.as_ptr().align_offset(4096);
    let mut at = from;
    while at < to {
        let n = (to - at).min(PIECE as u64) as usize;
        direct.write_all_at(&buf[start..start + n], at)?;
        at += n as u64;
    }
    direct.sync_data()?;
    let mut at = from;
    while at < to {
        let n = (to - at).min(PIECE as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// `at` rounded up to a multiple of 64 KiB: whole pages on kernels with pages of up to
/// 64 KiB (a fill and a record never share one), and whole blocks for direct writes.
fn page_up(at: u64) -> u64 {
    at.div_ceil(ALIGN) * ALIGN
}

/// See [`page_up`].
const ALIGN: u64 = 64 << 10;

/// The log's file at `path` opened for direct writes.
fn open_direct(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(nix::libc::O_DIRECT).open(path)
}

impl Wal {
    fn err(path: &str) -> impl Fn(std::io::Error) -> WalError + '_ {
        move |source| WalError::Io { path: path.to_string(), source }
    }

    /// Opens (or creates) the log at `path` and returns it with the records it holds.
    pub fn open(path: &Path) -> Result<(Wal, Vec<Bytes>), WalError> {
        let mut records = Vec::new();
        let wal = Wal::open_with(path, |_, r| {
            records.push(Bytes::copy_from_slice(r));
            Ok::<(), WalError>(())
        })?;
        Ok((wal, records))
    }

    /// Opens (or creates) the log at `path` and hands each whole record to `visit`, in order,
    /// with the position of its bytes in the file (what [`WalReader::read_at`] takes), reading the
    /// file in pieces rather than whole. A torn tail is cut; damage inside is an error.
    pub fn open_with<E: From<WalError>>(
        path: &Path,
        visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Wal, E> {
        Wal::open_from(path, None, visit)
    }

    /// [`Wal::open_with`] reading only the records from `from` on (where a record begins:
    /// the end of one [`Wal::append`] or [`Wal::open_with`] gave, its position plus its
    /// length), the records before it taken as they were read or written earlier (they
    /// are not checked again; a reader checks a record's CRC when it reads it). `None`: from
    /// the first record. A `from` outside the file is an error.
    pub fn open_from<E: From<WalError>>(
        path: &Path,
        from: Option<u64>,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Wal, E> {
        let name = path.display().to_string();
        let salt = prepare(path, &name)?;
        let file =
            OpenOptions::new().read(true).append(true).open(path).map_err(Self::err(&name))?;
        // What a killed process appended may be in the OS's cache alone, and what the
        // caller derives from the records read (saved block places, index runs) may be
        // synced before this open ends: the log is made durable first, so nothing derived
        // from a record outlives the record in a power loss (since stop 55).
        file.sync_data().map_err(Self::err(&name))?;
        let size = file.metadata().map_err(Self::err(&name))?.len();
        let corrupt = |at| WalError::Corrupt { path: name.clone(), at };
        let start = from.unwrap_or(FILE_HEADER);
        if start < FILE_HEADER || start > size {
            let why = format!("no record starts at byte {start} of {size}");
            return Err(WalError::Io { path: name, source: std::io::Error::other(why) }.into());
        }
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        reader.seek(SeekFrom::Start(start)).map_err(Self::err(&name))?;
        let mut body = Vec::new();
        let mut pos = start;
        // Whether the last whole item read is a sync mark (then opening adds none).
        let mut ends_marked = false;
        while pos < size {
            let mut header = [0u8; RECORD_HEADER as usize];
            if !read_whole(&mut reader, &mut header).map_err(Self::err(&name))? {
                break;
            }
            let Some(Header { len, crc, synced }) = parse_header(salt, &header) else {
                // A torn header, the zeros a file system may leave past the last write after
                // a power loss, or damage: only the records after it tell.
                if synced_past(&file, salt, pos, pos + 1, size).map_err(Self::err(&name))? {
                    return Err(corrupt(pos).into());
                }
                break;
            };
            // A header that checks holds the writer's length and sync point, which are never
            // too large.
            if len > MAX_RECORD as u64 || synced > pos {
                return Err(corrupt(pos).into());
            }
            if len == 0 {
                pos += RECORD_HEADER;
                ends_marked = true;
                continue;
            }
            let end = pos + RECORD_HEADER + len;
            if end > size {
                break;
            }
            body.resize(len as usize, 0);
            if !read_whole(&mut reader, &mut body).map_err(Self::err(&name))? {
                break;
            }
            if crc32fast::hash(&body) != crc {
                if synced_past(&file, salt, pos, end, size).map_err(Self::err(&name))? {
                    return Err(corrupt(pos).into());
                }
                break;
            }
            visit(pos + RECORD_HEADER, &body)?;
            pos = end;
            ends_marked = false;
        }
        drop(reader);
        if pos < size {
            ends_marked = false;
            // Zeros alone after the records are space written ahead of them (or left by a
            // power loss): nothing was torn.
            if zeros_from(&file, pos, size).map_err(Self::err(&name))? {
                tracing::debug!(path = %name, kept = pos, dropped = size - pos, "cutting the space written ahead of a write-ahead log");
            } else {
                tracing::warn!(path = %name, kept = pos, dropped = size - pos, "cutting a torn write-ahead log tail");
            }
            file.set_len(pos).map_err(Self::err(&name))?;
        }
        // What a killed process wrote may still be only in the OS: the records appended from
        // now on say it is durable, so it must be.
        file.sync_all().map_err(Self::err(&name))?;
        let mut wal = Wal {
            file: Arc::new(file),
            path: name,
            salt,
            dirty: false,
            len: pos,
            synced: pos,
            broken: false,
            ahead: None,
            positioned: false,
        };
        if !wal.is_empty() && !ends_marked {
            wal.mark()?;
        }
        Ok(wal)
    }

    /// Appends a record (not yet durable: see [`Wal::sync`]) and returns the position of its
    /// bytes ([`WalReader::read_at`]). Empty records are refused. A write that fails is cut
    /// off again, so that the next record does not land after its partial bytes.
    pub fn append(&mut self, record: &[u8]) -> Result<u64, WalError> {
        self.check_size(record)?;
        if self.broken {
            let why = "an earlier write or sync failed";
            return Err(WalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(why),
            });
        }
        let header = record_header(self.salt, record, self.synced);
        self.before_write(self.len + RECORD_HEADER + record.len() as u64);
        let written = self.write_end(&header, record);
        if let Err(e) = written {
            self.broken = self.cut_back().is_err();
            return Err(WalError::Io { path: self.path.clone(), source: e });
        }
        self.dirty = true;
        let at = self.len + RECORD_HEADER;
        self.len = at + record.len() as u64;
        Ok(at)
    }

    /// Writes a sync mark (not synced itself): the records before it are durable. Without
    /// one, damage to the records of the last sync could not be told from a torn write.
    /// Best effort: a mark that cannot be written is only a warning (the records are
    /// durable), unless its partial bytes cannot be cut off again.
    fn mark(&mut self) -> Result<(), WalError> {
        if self.broken {
            return Ok(());
        }
        let header = record_header(self.salt, &[], self.synced);
        self.before_write(self.len + RECORD_HEADER);
        if let Err(e) = self.write_end(&header, &[]) {
            if self.cut_back().is_err() {
                self.broken = true;
                return Err(WalError::Io { path: self.path.clone(), source: e });
            }
            tracing::warn!(path = %self.path, "write-ahead log: no sync mark written: {e}");
            return Ok(());
        }
        self.len += RECORD_HEADER;
        Ok(())
    }

    /// Keeps about two to three `chunk`s of space written with zeros past the log's end, so
    /// that the records written into it and their syncs change no metadata a data sync must
    /// commit (see [`Ahead`]). The first two chunks are written and synced now (on the
    /// caller's thread); the next ones on a thread of their own, each started when a sync
    /// starts or ends, or a rewrite ends, with less than two chunks left (after a rewrite,
    /// from none: the records right after it go into space not yet written). Only zeros
    /// follow the records, which an open cuts as it cuts a torn tail. If writing ahead fails
    /// (no direct writes, a full disk), the log goes on without it. To be called before any
    /// sync is started ([`Wal::start_sync`]): the log's file is opened again, and a sync
    /// pending on the old handle would take it for a rewrite.
    pub fn write_ahead(&mut self, chunk: u64) {
        if chunk == 0 || self.ahead.is_some() || self.broken {
            return;
        }
        let chunk = page_up(chunk);
        let from = page_up(self.len);
        let to = from + 2 * chunk;
        // Records go at their positions from now on: a file opened to append would put
        // them after the space written ahead.
        let reopened = OpenOptions::new().read(true).write(true).open(&self.path);
        let written = reopened.and_then(|f| {
            let direct = open_direct(&self.path)?;
            write_zeros(&f, &direct, from, to)?;
            Ok((f, direct))
        });
        match written {
            Ok((f, direct)) => {
                self.file = Arc::new(f);
                self.positioned = true;
                let direct = Arc::new(direct);
                self.ahead = Some(Ahead { chunk, direct, to, running: None, failed: false });
            }
            Err(e) => {
                // A file system that takes no direct writes, or a full disk: the log goes on
                // as without.
                tracing::info!(path = %self.path, "write-ahead log: no space written ahead: {e}");
                // Zeros left past the end would go before the next record appended.
                self.broken |= self.file.set_len(self.len).is_err();
            }
        }
    }

    /// Takes in the running fill's outcome once it ended (waiting for it with `wait`).
    fn settle(&mut self, wait: bool) {
        let Some(a) = &mut self.ahead else { return };
        let Some(fill) = &a.running else { return };
        let ok = if wait { Some(fill.wait()) } else { fill.outcome() };
        let Some(ok) = ok else { return };
        if !ok {
            tracing::warn!(path = %self.path, "write-ahead log: writing space ahead failed; going on without it");
            a.failed = true;
        } else {
            a.to = a.to.max(fill.to);
        }
        a.running = None;
    }

    /// Before writing up to `end`: waits for a fill that is writing space there.
    fn before_write(&mut self, end: u64) {
        let crosses =
            self.ahead.as_ref().and_then(|a| a.running.as_ref()).is_some_and(|f| end > f.from);
        self.settle(crosses);
    }

    /// Starts a fill if less than two chunks of space are left ahead and none runs.
    fn fill_ahead(&mut self) {
        self.settle(false);
        let len = self.len;
        let Some(a) = &mut self.ahead else { return };
        if a.failed || self.broken || a.running.is_some() || a.to >= len + 2 * a.chunk {
            return;
        }
        // After records that outran the space (a large snapshot), from their end.
        let from = a.to.max(page_up(len));
        match Fill::start(self.file.clone(), a.direct.clone(), from, from + a.chunk) {
            Ok(f) => a.running = Some(f),
            Err(e) => {
                tracing::warn!(path = %self.path, "write-ahead log: no thread to write space ahead: {e}");
                a.failed = true;
            }
        }
    }

    /// Writes a record header and its bytes at the log's end.
    fn write_end(&self, header: &[u8], bytes: &[u8]) -> std::io::Result<()> {
        let mut file = &*self.file;
        if self.positioned {
            file.write_all_at(header, self.len)?;
            file.write_all_at(bytes, self.len + header.len() as u64)
        } else {
            file.write_all(header)?;
            file.write_all(bytes)
        }
    }

    /// Cuts the file back to the log's end after a failed write (the space written ahead
    /// goes with it).
    fn cut_back(&mut self) -> std::io::Result<()> {
        self.settle(true);
        if let Some(a) = &mut self.ahead {
            a.to = self.len;
        }
        self.file.set_len(self.len)
    }

    /// Bytes in the log (a position [`Wal::replace`] can keep the records from).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len <= FILE_HEADER
    }

    /// Whether a record of `len` bytes can be logged (1 byte to 1 GiB).
    pub fn fits(len: usize) -> bool {
        (1..=MAX_RECORD).contains(&len)
    }

    /// Refuses a record the log cannot take: an open reads one over [`MAX_RECORD`] as damage.
    fn check_size(&self, record: &[u8]) -> Result<(), WalError> {
        if Self::fits(record.len()) {
            return Ok(());
        }
        let why = format!("a record of {} bytes (1 to {MAX_RECORD})", record.len());
        Err(WalError::Io { path: self.path.clone(), source: std::io::Error::other(why) })
    }

    /// Replaces the whole log with `records`, atomically (a new file renamed over the old):
    /// a crash leaves either the old log or the new one.
    pub fn reset(&mut self, records: &[&[u8]]) -> Result<(), WalError> {
        self.replace(records, self.len)
    }

    /// Replaces the log with `head` followed by the records from position `keep_from` on
    /// (a [`Wal::len`] taken before them), atomically.
    pub fn replace(&mut self, head: &[&[u8]], keep_from: u64) -> Result<(), WalError> {
        // Checked as `append` checks: until stop 47 a record over the limit was written
        // here, and the next open refused the log as damaged.
        for r in head {
            self.check_size(r)?;
        }
        let path = std::path::PathBuf::from(&self.path);
        // A fill still writing the old file is waited for: it would write on after the
        // rename, into a file nobody reads, but its thread would hold the old file open.
        self.settle(true);
        let keep_from = keep_from.max(FILE_HEADER);
        // The records only, not the space written ahead of them, through this log's own
        // handle (its name may be another file's after a rewrite that failed).
        let mut tail = vec![0u8; self.len.saturating_sub(keep_from) as usize];
        self.file.read_exact_at(&mut tail, keep_from).map_err(Self::err(&self.path))?;
        // The records kept, each whole (read at open or appended here).
        let mut kept = Vec::new();
        let mut at = 0usize;
        while at < tail.len() {
            let header = tail.get(at..at + RECORD_HEADER as usize);
            let h = header.and_then(|h| parse_header(self.salt, h));
            // The bytes are checked too: rewritten under a fresh CRC, a record damaged on
            // the device since it was read would come back as a good one (until stop 47).
            let body = h.and_then(|h| {
                let from = at + RECORD_HEADER as usize;
                tail.get(from..from + h.len as usize).filter(|b| crc32fast::hash(b) == h.crc)
            });
            let Some(body) = body else {
                let why = format!("the record at {} does not check", keep_from + at as u64);
                return Err(Self::err(&self.path)(std::io::Error::other(why)));
            };
            if !body.is_empty() {
                kept.push(body);
            }
            at += RECORD_HEADER as usize + body.len();
        }
        // The whole new file is synced before it is renamed in: each record says that what is
        // before it is durable, and a sync mark closes it. A new salt, so that no record of
        // the old file, left in blocks the file system hands out again, can pass for one.
        let salt = new_salt();
        // The space ahead is taken up again only once the rewrite is done: one that fails
        // after its rename leaves this log's handle on the old file and its name on the new
        // one.
        let ahead = self.ahead.take();
        let len = write_atomically(&path, salt, |out, name| {
            let mut pos = FILE_HEADER;
            for r in head.iter().copied().chain(kept) {
                out.write_all(&record_header(salt, r, pos)).map_err(Self::err(name))?;
                out.write_all(r).map_err(Self::err(name))?;
                pos += RECORD_HEADER + r.len() as u64;
            }
            if pos > FILE_HEADER {
                out.write_all(&record_header(salt, &[], pos)).map_err(Self::err(name))?;
            }
            Ok(())
        })?;
        self.file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .append(ahead.is_none())
                .open(&path)
                .map_err(Self::err(&self.path))?,
        );
        self.positioned = ahead.is_some();
        self.salt = salt;
        self.dirty = false;
        self.len = len;
        self.synced = len;
        self.broken = false;
        if let Some(mut a) = ahead {
            // Not appending: records go at their positions whether or not the space ahead
            // goes on.
            match open_direct(&self.path) {
                Ok(direct) => {
                    a.direct = Arc::new(direct);
                    a.to = len;
                    self.ahead = Some(a);
                    self.fill_ahead();
                }
                Err(e) => {
                    tracing::warn!(path = %self.path, "write-ahead log: no space written ahead after a rewrite: {e}");
                }
            }
        }
        Ok(())
    }

    /// Makes every appended record durable.
    ///
    /// A failed sync breaks the log: it takes no more records and syncs no more. After a
    /// failed `fsync` the kernel may have dropped the pages it could not write and report
    /// the next sync as a success, whose mark would then vouch for lost bytes; a restart
    /// cuts the unsynced tail instead (before stop 41 the log went on, and a later restart
    /// could find a record its sync mark vouched for damaged and refuse to start).
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.broken {
            let why = "an earlier write or sync failed";
            return Err(WalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(why),
            });
        }
        if self.dirty {
            if let Err(e) = self.file.sync_data() {
                self.broken = true;
                return Err(Self::err(&self.path)(e));
            }
            self.dirty = false;
            self.synced = self.len;
            self.mark()?;
        }
        self.fill_ahead();
        Ok(())
    }

    /// [`Wal::sync`] on tokio's blocking pool: the caller waits for the disk, the runtime's
    /// worker threads (which other validators' and connections' tasks share) do not.
    /// Returns how long the disk took, or `None` when there was nothing to sync.
    pub async fn sync_off_thread(&mut self) -> Result<Option<Duration>, WalError> {
        match self.start_sync()? {
            Some(pending) => self.end_sync(pending).await.map(Some),
            None => Ok(None),
        }
    }

    /// Starts [`Wal::sync_off_thread`]'s sync on tokio's blocking pool and returns at once
    /// (`None` when there is nothing to sync), so the caller can work while the disk does;
    /// [`Wal::end_sync`] waits for it. What is appended in between is not covered by it,
    /// and a log rewritten in between ([`Wal::replace`], [`Wal::reset`]) syncs itself.
    pub fn start_sync(&mut self) -> Result<Option<PendingSync>, WalError> {
        if self.broken {
            let why = "an earlier write or sync failed";
            return Err(WalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(why),
            });
        }
        if !self.dirty {
            return Ok(None);
        }
        let file = self.file.clone();
        let task = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            file.sync_data().map(|()| started.elapsed())
        });
        let pending = PendingSync { file: self.file.clone(), len: self.len, task };
        self.fill_ahead();
        Ok(Some(pending))
    }

    /// Waits for a sync [`Wal::start_sync`] started and marks the log as synced up to where
    /// it stood then. Returns how long the disk took.
    pub async fn end_sync(&mut self, pending: PendingSync) -> Result<Duration, WalError> {
        let synced = pending.task.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let took = match synced {
            Ok(t) => t,
            Err(e) => {
                self.broken = true;
                return Err(Self::err(&self.path)(e));
            }
        };
        if !Arc::ptr_eq(&pending.file, &self.file) {
            // The log was rewritten meanwhile, and the rewrite synced the new file itself.
            return Ok(took);
        }
        self.synced = pending.len;
        // A mark after records appended while the sync ran would seem to vouch for them:
        // they wait for the next sync, whose mark vouches for all.
        if self.len == pending.len {
            self.dirty = false;
            self.mark()?;
        }
        Ok(took)
    }
}

impl Drop for Wal {
    /// Waits for a fill still writing space ahead: a log opened again after this one must
    /// not have zeros written over its new records.
    fn drop(&mut self) {
        self.settle(true);
    }
}

/// Whether `file` holds only zeros from `from` to `to`.
fn zeros_from(file: &File, from: u64, to: u64) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|b| *b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// A sync of a [`Wal`] running on tokio's blocking pool ([`Wal::start_sync`]).
#[derive(Debug)]
#[must_use = "the log is synced only once `Wal::end_sync` has waited for it"]
pub struct PendingSync {
    /// The file it syncs.
    file: Arc<File>,
    /// The log's length when it started: what it makes durable.
    len: u64,
    task: tokio::task::JoinHandle<std::io::Result<Duration>>,
}

/// A salt for a new file: random, and never one under which a header of zeros (what a file
/// system may leave past the last write after a power loss) would check as a sync mark.
fn new_salt() -> u64 {
    loop {
        let salt: u64 = rand::random();
        if header_check(salt, &[0u8; RECORD_HEADER as usize]) != 0 {
            return salt;
        }
    }
}

/// Writes a new log to `path` atomically (a temporary file, synced, renamed over it, the
/// directory synced): its file header, then what `fill` writes. Returns its length.
fn write_atomically(
    path: &Path,
    salt: u64,
    fill: impl FnOnce(&mut BufWriter<File>, &str) -> Result<(), WalError>,
) -> Result<u64, WalError> {
    let tmp = path.with_extension("new");
    let name = tmp.display().to_string();
    let mut header = [0u8; FILE_HEADER as usize];
    header[..8].copy_from_slice(&MAGIC);
    header[8..16].copy_from_slice(&salt.to_le_bytes());
    let check = crc32fast::hash(&header[..16]);
    header[16..].copy_from_slice(&check.to_le_bytes());
    let mut out = BufWriter::new(File::create(&tmp).map_err(Wal::err(&name))?);
    out.write_all(&header).map_err(Wal::err(&name))?;
    fill(&mut out, &name)?;
    let file = out.into_inner().map_err(|e| Wal::err(&name)(e.into_error()))?;
    file.sync_all().map_err(Wal::err(&name))?;
    let len = file.metadata().map_err(Wal::err(&name))?.len();
    drop(file);
    let path_name = path.display().to_string();
    std::fs::rename(&tmp, path).map_err(Wal::err(&path_name))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(Wal::err(&path_name))?;
    }
    Ok(len)
}

/// Makes `path` a log of format 2 and returns its salt: creates it when it does not exist,
/// converts a log of the first format, checks the file header of one of this format.
fn prepare(path: &Path, name: &str) -> Result<u64, WalError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let salt = new_salt();
            write_atomically(path, salt, |_, _| Ok(()))?;
            return Ok(salt);
        }
        Err(e) => return Err(Wal::err(name)(e)),
    };
    let mut head = Vec::with_capacity(FILE_HEADER as usize);
    (&mut file).take(FILE_HEADER).read_to_end(&mut head).map_err(Wal::err(name))?;
    let corrupt = || WalError::Corrupt { path: name.to_string(), at: 0 };
    if head.starts_with(&MAGIC) {
        // Created whole (renamed into place): a short or damaged header is damage.
        if head.len() < FILE_HEADER as usize || crc32fast::hash(&head[..16]) != le32(&head[16..]) {
            return Err(corrupt());
        }
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&head[8..16]);
        return Ok(u64::from_le_bytes(salt));
    }
    // A magic with a few bits changed is this format damaged, not a log of the first format
    // (whose first bytes, a record's length, are never this large).
    let differing: u32 = head.iter().zip(MAGIC).map(|(a, b)| (a ^ b).count_ones()).sum();
    if head.len() >= MAGIC.len() && differing <= 8 {
        return Err(corrupt());
    }
    // A magic damaged beyond that, with this format's first record behind it (its header
    // checks under the salt the file header holds), is this format damaged too: read as
    // the first format its magic would be a length past the file's end, a torn first
    // record, and the log would be converted to an empty one (before stop 41).
    if head.len() == FILE_HEADER as usize {
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&head[8..16]);
        let mut first = [0u8; RECORD_HEADER as usize];
        if file.read_exact_at(&mut first, FILE_HEADER).is_ok()
            && parse_header(u64::from_le_bytes(salt), &first).is_some()
        {
            return Err(corrupt());
        }
    }
    // A log of the first format starts with a whole record, or is shorter than a record's
    // header (its first write torn). Anything else is neither format (this format's header
    // lost, say, to a block read back as zeros), and converting it would drop the log.
    // A first record torn by a crash (running past the end, or failing its CRC with nothing
    // after it) has a length the writer could have written, which a lost header (zeros) has
    // not.
    if head.len() >= 8 {
        let (len, crc) = (u64::from(le32(&head[..4])), le32(&head[4..8]));
        let size = file.metadata().map_err(Wal::err(name))?.len();
        if len == 0 || len > MAX_RECORD as u64 {
            return Err(corrupt());
        }
        if 8 + len < size {
            let mut body = vec![0u8; len as usize];
            file.read_exact_at(&mut body, 8).map_err(Wal::err(name))?;
            if crc32fast::hash(&body) != crc {
                return Err(corrupt());
            }
        }
    }
    drop(file);
    // The old file stays beside the new one, under another name.
    let kept = std::path::PathBuf::from(format!("{}.format1", path.display()));
    let _ = std::fs::remove_file(&kept);
    if std::fs::hard_link(path, &kept).is_err() {
        std::fs::copy(path, &kept).map_err(Wal::err(name))?;
    }
    let converted = convert_first_format(path, name);
    if converted.is_err() {
        let _ = std::fs::remove_file(&kept);
    }
    converted
}

/// Rewrites a log of the first format (each record a length and a CRC-32, then its bytes)
/// in this one, atomically, with a new salt. A torn tail is dropped, as opening it used to;
/// damage inside is reported and the file left as it is.
fn convert_first_format(path: &Path, name: &str) -> Result<u64, WalError> {
    let file = File::open(path).map_err(Wal::err(name))?;
    let size = file.metadata().map_err(Wal::err(name))?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
    let salt = new_salt();
    let mut records = 0u64;
    let len = write_atomically(path, salt, |out, tmp| {
        let mut body = Vec::new();
        let mut pos = 0u64;
        // Where the record goes in the new file (all of it synced before it is renamed in).
        let mut written = FILE_HEADER;
        loop {
            let mut header = [0u8; 8];
            if !read_whole(&mut reader, &mut header).map_err(Wal::err(name))? {
                break;
            }
            let (len, crc) = (le32(&header[..4]) as usize, le32(&header[4..]));
            if len == 0 || len > MAX_RECORD || pos + 8 + len as u64 > size {
                break;
            }
            body.resize(len, 0);
            if !read_whole(&mut reader, &mut body).map_err(Wal::err(name))? {
                break;
            }
            if crc32fast::hash(&body) != crc {
                // A torn write is the last; a whole record after this one means damage.
                let mut next = [0u8; 8];
                if read_whole(&mut reader, &mut next).map_err(Wal::err(name))? {
                    let (len, crc) = (le32(&next[..4]) as usize, le32(&next[4..]));
                    let rest = size.saturating_sub(pos + 16 + body.len() as u64);
                    if len > 0 && len as u64 <= rest && len <= MAX_RECORD {
                        let mut after = vec![0u8; len];
                        read_whole(&mut reader, &mut after).map_err(Wal::err(name))?;
                        if crc32fast::hash(&after) == crc {
                            return Err(WalError::Corrupt { path: name.to_string(), at: pos });
                        }
                    }
                }
                break;
            }
            out.write_all(&record_header(salt, &body, written)).map_err(Wal::err(tmp))?;
            out.write_all(&body).map_err(Wal::err(tmp))?;
            records += 1;
            pos += 8 + len as u64;
            written += RECORD_HEADER + len as u64;
        }
        if written > FILE_HEADER {
            out.write_all(&record_header(salt, &[], written)).map_err(Wal::err(tmp))?;
        }
        Ok(())
    })?;
    tracing::info!(path = %name, records, bytes = len, "converted a write-ahead log of the first format");
    Ok(salt)
}

/// Fills `buf` from `r`; `false` if the input ends first (a torn tail).
fn read_whole(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads records of a log by position while it is being appended to (a separate handle:
/// readers never wait for the writer).
#[derive(Debug)]
pub struct WalReader {
    file: File,
    path: String,
    salt: u64,
}

impl WalReader {
    /// A reader of the log at `path` (opened by [`Wal::open_with`] first: of this format).
    pub fn open(path: &Path) -> Result<WalReader, WalError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(Wal::err(&name))?;
        let mut head = [0u8; FILE_HEADER as usize];
        file.read_exact_at(&mut head, 0).map_err(Wal::err(&name))?;
        if head[..8] != MAGIC || crc32fast::hash(&head[..16]) != le32(&head[16..]) {
            return Err(WalError::Corrupt { path: name, at: 0 });
        }
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&head[8..16]);
        Ok(WalReader { file, path: name, salt: u64::from_le_bytes(salt) })
    }

    /// The position of the log's first record.
    pub fn first_record(&self) -> u64 {
        FILE_HEADER + RECORD_HEADER
    }

    /// The log's salt (new with every rewrite of the file: [`Wal::replace`]).
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The file's length now.
    pub fn file_len(&self) -> Result<u64, WalError> {
        let io = |source| WalError::Io { path: self.path.clone(), source };
        Ok(self.file.metadata().map_err(io)?.len())
    }

    /// The length its header gives the record at `pos` (a position [`Wal::open_with`] or
    /// [`Wal::append`] gave); an error where no record header of this log is before `pos`.
    pub fn record_len(&self, pos: u64) -> Result<u64, WalError> {
        let io = |source| WalError::Io { path: self.path.clone(), source };
        let start = pos.checked_sub(RECORD_HEADER).filter(|s| *s >= FILE_HEADER);
        let start = start.ok_or_else(|| {
            io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "position before a record"))
        })?;
        let mut header = [0u8; RECORD_HEADER as usize];
        self.file.read_exact_at(&mut header, start).map_err(io)?;
        parse_header(self.salt, &header).map(|h| h.len).ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no record header before {pos}"),
            ))
        })
    }

    /// The `len` bytes of the record at `pos` (a position [`Wal::open_with`] or
    /// [`Wal::append`] gave), checked against its header.
    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, WalError> {
        let io = |source| WalError::Io { path: self.path.clone(), source };
        let mut header = [0u8; RECORD_HEADER as usize];
        let start =
            pos.checked_sub(RECORD_HEADER).filter(|s| *s >= FILE_HEADER).ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "position before a record",
                ))
            })?;
        self.file.read_exact_at(&mut header, start).map_err(io)?;
        let bad = || {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the record at {pos} does not match its length and checksum"),
            ))
        };
        // The length is checked before anything is allocated for it (a caller's length may
        // come from a damaged index).
        let Some(h) = parse_header(self.salt, &header).filter(|h| h.len == len as u64) else {
            return Err(bad());
        };
        let mut body = vec![0u8; len];
        self.file.read_exact_at(&mut body, pos).map_err(io)?;
        if crc32fast::hash(&body) != h.crc {
            return Err(bad());
        }
        Ok(body)
    }

    /// The first `len` bytes of the record at `pos` (at most its length), unchecked: a
    /// checksum covers only a whole record, so the caller checks what it reads (a block's
    /// header against the hash indexed when the log was opened).
    pub fn read_prefix(&self, pos: u64, len: usize) -> Result<Vec<u8>, WalError> {
        let record = self.record_len(pos)?;
        let mut body = vec![0u8; len.min(usize::try_from(record).unwrap_or(usize::MAX))];
        let io = |source| WalError::Io { path: self.path.clone(), source };
        self.file.read_exact_at(&mut body, pos).map_err(io)?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> (Wal, Vec<Bytes>) {
        Wal::open(path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok<T>(r: Result<T, WalError>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn file_len(path: &Path) -> Option<u64> {
        std::fs::metadata(path).map(|m| m.len()).ok()
    }

    fn corrupt_at(opened: Result<(Wal, Vec<Bytes>), WalError>) -> u64 {
        match opened {
            Err(WalError::Corrupt { at, .. }) => at,
            other => panic!("not reported: {:?}", other.map(|(_, r)| r)),
        }
    }

    #[test]
    fn replace_keeps_the_records_after_a_position_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, records) = open(&path);
        assert!(records.is_empty() && wal.is_empty());
        ok(wal.append(b"a"));
        let after_a = wal.len();
        ok(wal.append(b"bb"));
        ok(wal.sync());
        ok(wal.append(b"ccc"));
        ok(wal.replace(&[b"head", b"floor"], after_a));
        ok(wal.append(b"dd"));
        ok(wal.sync());
        drop(wal);
        let (_, records) = open(&path);
        let got: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
        assert_eq!(got, [&b"head"[..], b"floor", b"bb", b"ccc", b"dd"]);
        // Nothing kept: only the new records.
        let (mut wal, _) = open(&path);
        ok(wal.reset(&[b"only"]));
        drop(wal);
        let (_, records) = open(&path);
        assert_eq!(records, [Bytes::from_static(b"only")]);
    }

    /// A record the log cannot take is refused by `replace` as by `append`, and the log is
    /// left as it was. Until stop 47 `replace` wrote it, and the next open refused the log.
    #[test]
    fn replace_refuses_a_record_over_the_limit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        ok(wal.append(b"a"));
        ok(wal.sync());
        // Zeroed by the allocator's fresh pages: never touched, so no gigabyte is written.
        let big = vec![0u8; MAX_RECORD + 1];
        assert!(wal.replace(&[&big], wal.len()).is_err());
        assert!(wal.replace(&[b""], wal.len()).is_err(), "an empty record");
        ok(wal.append(b"b"));
        ok(wal.sync());
        drop(wal);
        let (_, records) = open(&path);
        assert_eq!(records, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    /// A kept record damaged on the device after it was read is not rewritten under a fresh
    /// checksum (where it would pass for good): the cut fails and the log stays as it was.
    #[test]
    fn replace_does_not_vouch_for_a_damaged_kept_record() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        ok(wal.append(b"first"));
        let keep_from = wal.len();
        ok(wal.append(b"kept record"));
        ok(wal.sync());
        // One bit of the kept record's bytes flips on the device.
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let at = usize::try_from(keep_from + RECORD_HEADER).unwrap_or_else(|e| panic!("{e}"));
        bytes[at + 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(wal.replace(&[b"head"], keep_from).is_err());
        drop(wal);
        assert!(Wal::open(&path).is_err(), "the damage is still reported");
    }

    #[test]
    fn a_torn_tail_is_cut_and_records_read_back_by_position() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        let mut at = Vec::new();
        for r in [&b"one"[..], &[7u8; 3000], b"three"] {
            at.push((ok(wal.append(r)), r.len()));
        }
        let reader = ok(WalReader::open(&path));
        assert_eq!(reader.read_at(at[1].0, at[1].1).ok(), Some(vec![7u8; 3000]));
        assert!(reader.read_at(at[1].0, 5).is_err(), "a length that is not the record's");
        assert!(reader.read_at(at[1].0 + 1, 10).is_err(), "a position inside a record");
        drop(wal);
        // A torn last record: the first two stay, at the positions they had.
        let f = ok(OpenOptions::new().write(true).open(&path).map_err(Wal::err("log")));
        ok(f.set_len(at[2].0 + 2).map_err(Wal::err("log")));
        drop(f);
        let mut seen = Vec::new();
        let wal = ok(Wal::open_with(&path, |pos, r| {
            seen.push((pos, r.len()));
            Ok::<(), WalError>(())
        }));
        assert_eq!(seen, at[..2]);
        // Cut back, synced, and marked.
        assert_eq!(wal.len(), at[1].0 + 3000 + RECORD_HEADER);
        assert_eq!(file_len(&path), Some(wal.len()));
        drop(wal);
        // Both are synced now: a flipped byte in the second is reported, and the log is left
        // as it was.
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[at[1].0 as usize + 100] ^= 1;
        ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
        assert_eq!(corrupt_at(Wal::open(&path)), at[1].0 - RECORD_HEADER);
        assert_eq!(std::fs::read(&path).ok(), Some(bytes), "the damaged log was left as it was");
    }

    /// A header that checks but holds what no writer writes (a sync point past itself, a
    /// length past the limit) is reported at once.
    #[test]
    fn a_header_no_writer_makes_is_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        let first = wal.len();
        ok(wal.append(b"one"));
        let salt = wal.salt;
        drop(wal);
        let whole = ok(std::fs::read(&path).map_err(Wal::err("log")));
        let at = first as usize;
        let mut past_itself = whole.clone();
        past_itself[at..at + 20].copy_from_slice(&record_header(salt, b"one", first + 1));
        let mut too_long = whole.clone();
        let mut header = record_header(salt, b"one", first);
        header[..4].copy_from_slice(&(MAX_RECORD as u32 + 1).to_le_bytes());
        let check = header_check(salt, &header);
        header[16..].copy_from_slice(&check.to_le_bytes());
        too_long[at..at + 20].copy_from_slice(&header);
        for bytes in [past_itself, too_long] {
            ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
            assert_eq!(corrupt_at(Wal::open(&path)), first);
        }
    }

    /// A magic overwritten beyond recognition (here with what reads as a first-format
    /// record length past the file's end) over this format's records is damage, not a
    /// torn log of the first format: before stop 41 it was converted to an empty log (a
    /// validator's consensus log so emptied, it could propose twice in a round).
    #[test]
    fn a_header_overwritten_over_records_is_reported_not_converted() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        for r in [&b"one"[..], b"two", b"three"] {
            ok(wal.append(r));
        }
        ok(wal.sync());
        drop(wal);
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4]);
        ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
        assert_eq!(corrupt_at(Wal::open(&path)), 0);
        assert_eq!(std::fs::read(&path).ok(), Some(bytes), "left as it was");
    }

    /// Zeros past the last record (what a file system may leave after a power loss) are a
    /// torn tail, not sync marks; empty records cannot be appended.
    #[test]
    fn a_zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        ok(wal.append(b"kept"));
        assert!(wal.append(b"").is_err(), "an empty record");
        ok(wal.sync());
        let len = wal.len();
        drop(wal);
        let f = ok(OpenOptions::new().write(true).open(&path).map_err(Wal::err("log")));
        ok(f.set_len(len + 4096).map_err(Wal::err("log")));
        drop(f);
        let (wal, records) = open(&path);
        assert_eq!(records, [Bytes::from_static(b"kept")]);
        assert_eq!(wal.len(), len + RECORD_HEADER, "cut, and a mark written");
        assert_eq!(file_len(&path), Some(wal.len()));
    }

    /// Every single-bit flip of a log, and lengths rewritten to other values. Three records,
    /// each synced (so each followed by its mark), and a fourth appended after them and not
    /// synced. Damage before the last mark is reported, naming the record or mark, and the file
    /// is left as it is; in the file header too. Damage to the last mark or to the unsynced
    /// record is a torn write: the log opens with the three. The unsynced record carries a
    /// record header made with another salt that would vouch for it, which must not pass.
    #[test]
    fn a_flipped_bit_is_reported_unless_it_is_past_the_last_sync() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        let synced: [&[u8]; 3] = [b"a", b"hello", &[5u8; 40]];
        // Where each record and each mark starts.
        let mut items = Vec::new();
        let mut starts = Vec::new();
        for r in synced {
            starts.push(wal.len());
            items.push(wal.len());
            ok(wal.append(r));
            items.push(wal.len());
            ok(wal.sync());
        }
        let last_mark = *items.last().unwrap_or(&0);
        let last = wal.len();
        // Inside the unsynced record: a header made with another salt that says the file was
        // synced past `last`, then one made with this file's salt that says the file was
        // synced past itself (which no writer does).
        let mut planted = record_header(0, b"planted!", last + 1).to_vec();
        planted.extend_from_slice(b"planted!");
        planted.extend_from_slice(&record_header(wal.salt, b"planted!", last + 1000));
        planted.extend_from_slice(b"planted!");
        ok(wal.append(&planted));
        starts.push(last);
        drop(wal);
        let whole = ok(std::fs::read(&path).map_err(Wal::err("log")));
        let expect = |bytes: &[u8], what: &str, at: u64| {
            ok(std::fs::write(&path, bytes).map_err(Wal::err("log")));
            let opened = Wal::open(&path);
            if at >= last_mark {
                let (wal, got) = opened.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(got, synced, "{what}");
                // Cut back to the damaged mark, or to the unsynced record, and marked again.
                let cut = if at < last { last_mark } else { last };
                assert_eq!(wal.len(), cut + RECORD_HEADER, "{what}");
            } else {
                let want = if at < FILE_HEADER {
                    0
                } else {
                    *items.iter().rfind(|s| **s <= at).unwrap_or(&0)
                };
                match opened {
                    Err(WalError::Corrupt { at, .. }) => assert_eq!(at, want, "{what}"),
                    other => panic!("{what}: {:?}", other.map(|(_, r)| r)),
                }
                assert_eq!(std::fs::read(&path).ok().as_deref(), Some(bytes), "{what}: left alone");
            }
        };
        for byte in 0..whole.len() {
            for bit in 0..8 {
                let mut bytes = whole.clone();
                bytes[byte] ^= 1 << bit;
                expect(&bytes, &format!("bit {bit} of byte {byte}"), byte as u64);
            }
        }
        // Lengths rewritten whole (zero, shorter, longer, past the end, past the limit).
        for (i, start) in starts.iter().enumerate() {
            for len in [0u32, 1, 4, 39, 41, 1000, u32::MAX] {
                let mut bytes = whole.clone();
                let at = *start as usize;
                bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
                if bytes == whole {
                    continue;
                }
                expect(&bytes, &format!("record {i} with length {len}"), *start);
            }
        }
    }

    /// A log written before stop 36 (each record a length and a CRC-32) opens with its records
    /// and is rewritten in this format; damage inside one is reported, and it is left as it was.
    #[test]
    fn a_log_of_the_first_format_is_converted() {
        let first_format = |records: &[&[u8]]| {
            let mut bytes = Vec::new();
            for r in records {
                bytes.extend_from_slice(&(r.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
                bytes.extend_from_slice(r);
            }
            bytes
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let big = [7u8; 3000];
        let records: [&[u8]; 3] = [b"one", &big, b"three"];
        let mut bytes = first_format(&records);
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let mut seen = Vec::new();
        let mut wal = Wal::open_with(&path, |pos, r| {
            seen.push((pos, r.to_vec()));
            Ok::<(), WalError>(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen.iter().map(|(_, r)| r.as_slice()).collect::<Vec<_>>(), records);
        let converted = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(converted.starts_with(&MAGIC));
        // The old file was kept beside the new one.
        let kept = dir.path().join("log.format1");
        assert_eq!(std::fs::read(&kept).ok(), Some(bytes.clone()));
        let reader = WalReader::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for (pos, r) in &seen {
            assert_eq!(reader.read_at(*pos, r.len()).ok().as_ref(), Some(r));
        }
        wal.append(b"four").unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let (_, again) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, [&b"one"[..], &big, b"three", b"four"]);

        // Damage with a whole record after it.
        let mut bytes = first_format(&records);
        bytes[8 + 3 + 8 + 100] ^= 4;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        match Wal::open(&path) {
            Err(WalError::Corrupt { at, .. }) => assert_eq!(at, 8 + 3),
            other => panic!("{:?}", other.map(|(_, r)| r)),
        }
        assert_eq!(std::fs::read(&path).ok(), Some(bytes));

        // A log of this format whose header was lost (a block read back as zeros) is neither
        // format: it is refused, not converted and emptied.
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let (mut wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        wal.append(b"kept").unwrap_or_else(|e| panic!("{e}"));
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        bytes[..FILE_HEADER as usize].fill(0);
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        match Wal::open(&path) {
            Err(WalError::Corrupt { at, .. }) => assert_eq!(at, 0),
            other => panic!("{:?}", other.map(|(_, r)| r)),
        }
        assert_eq!(std::fs::read(&path).ok(), Some(bytes));

        // A first-format log whose only record was torn: converted, without it.
        let mut torn = first_format(&[&[4u8; 100]]);
        torn.truncate(60);
        std::fs::write(&path, &torn).unwrap_or_else(|e| panic!("{e}"));
        let (wal, none) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(none.is_empty() && wal.is_empty());

        // An empty file (created by the first format, never written to).
        std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
        let (wal, none) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(none.is_empty() && wal.is_empty());
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(FILE_HEADER));
    }

    /// A power loss may keep later blocks of a write and lose earlier ones. Records appended
    /// together and synced once: damage to one of them is a torn write when nothing after it
    /// says it was synced (its sync mark lost too), and the log opens at the last synced
    /// record; with the mark whole, or a later record, the same damage is reported.
    #[test]
    fn damage_before_whole_records_is_a_torn_write_only_when_none_came_after_its_sync() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        ok(wal.append(b"synced"));
        ok(wal.sync());
        let batch = wal.len();
        for r in [&[1u8; 300][..], &[2u8; 300], b"three"] {
            ok(wal.append(r));
        }
        let unsynced = wal.len();
        drop(wal);
        let whole = ok(std::fs::read(&path).map_err(Wal::err("log")));
        let write = |bytes: &[u8]| ok(std::fs::write(&path, bytes).map_err(Wal::err("log")));
        let lose_first = |bytes: &mut Vec<u8>| bytes[batch as usize..batch as usize + 200].fill(0);
        // The first record of the batch lost (zeros, as a lost block reads back), the two
        // after it kept, no mark after them: the batch is dropped.
        let mut bytes = whole.clone();
        lose_first(&mut bytes);
        write(&bytes);
        let (wal, records) = open(&path);
        assert_eq!(records, [Bytes::from_static(b"synced")]);
        assert_eq!(wal.len(), batch + RECORD_HEADER);
        drop(wal);

        // The same batch synced (opening syncs it and marks it), then the same loss: reported.
        write(&whole);
        let (wal, records) = open(&path);
        assert_eq!(records.len(), 4);
        assert_eq!(wal.len(), unsynced + RECORD_HEADER);
        drop(wal);
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        lose_first(&mut bytes);
        write(&bytes);
        assert_eq!(corrupt_at(Wal::open(&path)), batch);

        // The mark lost too, but a record appended after the sync says it: reported.
        write(&whole);
        let (mut wal, _) = open(&path);
        ok(wal.append(b"after"));
        drop(wal);
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        lose_first(&mut bytes);
        bytes[unsynced as usize..unsynced as usize + 20].fill(0);
        write(&bytes);
        assert_eq!(corrupt_at(Wal::open(&path)), batch);

        // The records of the last sync, with nothing after them but its mark: reported.
        ok(std::fs::remove_file(&path).map_err(Wal::err("log")));
        let (mut wal, _) = open(&path);
        let first = wal.len();
        ok(wal.append(b"one"));
        ok(wal.append(&[3u8; 100]));
        ok(wal.sync());
        drop(wal);
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[first as usize + 21] ^= 1;
        write(&bytes);
        assert_eq!(corrupt_at(Wal::open(&path)), first);

        // A log rewritten keeping its last records says all of it is synced.
        write(&whole);
        let (mut wal, _) = open(&path);
        ok(wal.replace(&[b"head"], batch));
        let second = FILE_HEADER + RECORD_HEADER + 4;
        drop(wal);
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[second as usize + 30] ^= 1;
        write(&bytes);
        assert_eq!(corrupt_at(Wal::open(&path)), second);
    }

    /// A sync started apart from waiting for it ([`Wal::start_sync`], [`Wal::end_sync`], as
    /// the validator's driver overlaps it with the engine's work) vouches for what came
    /// before it only: a record appended while it ran is left for the next sync, and no mark
    /// is written after it until then.
    #[test]
    fn a_sync_started_apart_covers_what_came_before_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut wal, _) = open(&path);
        let first = wal.len();
        ok(wal.append(b"before"));
        let before = wal.len();
        let pending = rt.block_on(async { ok(wal.start_sync()) });
        let Some(pending) = pending else { panic!("an append left nothing to sync") };
        ok(wal.append(b"while it ran"));
        let appended = wal.len();
        let took = ok(rt.block_on(wal.end_sync(pending)));
        assert!(took < Duration::from_secs(60));
        assert_eq!(wal.len(), appended, "no mark after a record the sync did not cover");
        // Damage to that record now reads as a torn write (cut), not as damage inside the
        // log: nothing vouches for it.
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[appended as usize - 1] ^= 1;
        let torn = dir.path().join("torn");
        ok(std::fs::write(&torn, &bytes).map_err(Wal::err("log")));
        let (cut, records) = open(&torn);
        assert_eq!(records, vec![Bytes::from_static(b"before")]);
        assert_eq!(cut.len(), before + RECORD_HEADER, "cut after `before`, and marked");
        // The next sync is not a no-op: the record appended meanwhile was not durable yet.
        let next = ok(rt.block_on(wal.sync_off_thread()));
        assert!(next.is_some(), "the record appended during the sync was taken as synced");
        assert_eq!(wal.len(), appended + RECORD_HEADER);
        drop(wal);
        // Now a mark vouches for both: damage to the first is reported, not cut.
        let mut bytes = ok(std::fs::read(&path).map_err(Wal::err("log")));
        bytes[before as usize - 1] ^= 1;
        ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
        assert_eq!(corrupt_at(Wal::open(&path)), first);
    }

    /// A sync on the blocking pool marks the log like [`Wal::sync`]: the records it made
    /// durable are vouched for (damage to them is reported, not cut), and a sync with
    /// nothing appended does nothing.
    #[test]
    fn a_sync_off_thread_marks_the_log() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let rt =
            tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        let (mut wal, _) = open(&path);
        let first = wal.len();
        ok(wal.append(b"one"));
        ok(wal.append(&[3u8; 100]));
        let appended = wal.len();
        let took = ok(rt.block_on(wal.sync_off_thread()));
        assert!(took.is_some());
        assert_eq!(wal.len(), appended + RECORD_HEADER, "one mark after the sync");
        assert_eq!(ok(rt.block_on(wal.sync_off_thread())), None);
        assert_eq!(wal.len(), appended + RECORD_HEADER, "nothing to sync, no mark");
        // A sync started and waited for apart does the same.
        let pending = ok(wal.start_sync());
        assert!(pending.is_none(), "nothing appended, nothing to sync");
        drop(wal);
        assert_eq!(file_len(&path), Some(appended + RECORD_HEADER));
        let whole = ok(std::fs::read(&path).map_err(Wal::err("log")));
        let mut bytes = whole.clone();
        bytes[first as usize + 21] ^= 1;
        ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
        assert_eq!(corrupt_at(Wal::open(&path)), first);
        // Without the mark the same damage reads as a torn write of the last batch.
        bytes.truncate(appended as usize);
        ok(std::fs::write(&path, &bytes).map_err(Wal::err("log")));
        let (wal, records) = open(&path);
        assert!(records.is_empty());
        assert_eq!(wal.len(), first);
    }

    /// Records written into space written ahead, through several fills and a record larger
    /// than the space (which waits for the fill running where it goes), read back whole by
    /// the next open, which cuts the zeros after them.
    #[test]
    fn records_in_space_written_ahead_read_back_and_the_zeros_are_cut() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        ok(wal.append(b"before"));
        ok(wal.sync());
        const CHUNK: u64 = 64 << 10;
        wal.write_ahead(CHUNK);
        // A file system that takes no direct writes (tmpfs before Linux 6.6) has no space
        // ahead; the records
        // must read back all the same.
        let direct = wal.ahead.is_some();
        if direct {
            let ahead = file_len(&path).unwrap_or(0);
            assert!(ahead >= wal.len() + 2 * CHUNK, "two chunks written ahead: {ahead}");
        } else {
            eprintln!("no direct writes on this file system: no space written ahead");
        }
        let mut expected = vec![Bytes::from_static(b"before")];
        let mut grew = 0;
        for i in 0..200u32 {
            // Every 50th record is larger than all the space ahead.
            let len = if i % 50 == 49 { 3 * CHUNK as usize } else { 1000 + i as usize * 37 };
            let record: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
            ok(wal.append(&record));
            expected.push(Bytes::from(record));
            ok(wal.sync());
            if file_len(&path).unwrap_or(0) > wal.len() {
                grew += 1;
            }
        }
        assert!(!direct || grew > 150, "space was ahead after most syncs ({grew} of 200)");
        let len = wal.len();
        drop(wal);
        assert!(!direct || file_len(&path).unwrap_or(0) > len, "zeros past the records");
        let (wal, records) = open(&path);
        assert_eq!(records, expected);
        // Cut after the last sync's mark, and a mark written (as after any cut).
        let end = if direct { len + RECORD_HEADER } else { len };
        assert_eq!(wal.len(), end);
        assert_eq!(file_len(&path), Some(end), "the zeros cut");
    }

    /// A record torn in space written ahead (its first bytes written, then zeros) is cut as
    /// a torn write; damage to a synced record, with only zeros between it and a record
    /// written after its sync, is still reported (the search for that record passes over
    /// the zeros at once rather than byte by byte).
    #[test]
    fn a_record_torn_in_space_written_ahead_is_cut_and_damage_before_zeros_reported() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        wal.write_ahead(64 << 10);
        ok(wal.append(&[1u8; 5000]));
        ok(wal.sync());
        let second = wal.len();
        ok(wal.append(&[2u8; 5000]));
        ok(wal.sync());
        let synced = wal.len();
        // Torn: the header and some bytes of a record, then the zeros written ahead.
        let torn = record_header(wal.salt, &[3u8; 9000], synced);
        drop(wal);
        let f = ok(OpenOptions::new().write(true).open(&path).map_err(Wal::err("log")));
        ok(f.write_all_at(&torn, synced).map_err(Wal::err("log")));
        ok(f.write_all_at(&[3u8; 4000], synced + RECORD_HEADER).map_err(Wal::err("log")));
        drop(f);
        let (wal, records) = open(&path);
        assert_eq!(records, [Bytes::from(vec![1u8; 5000]), Bytes::from(vec![2u8; 5000])]);
        assert_eq!(wal.len(), synced + RECORD_HEADER, "cut, and a mark written");
        // Now the second record zeroed whole (a block lost), with a record written after
        // its sync 64 KiB of zeros further on (as past space written ahead): damage, not a
        // torn write. The search must find that record right after the zeros.
        let salt = wal.salt;
        drop(wal);
        let later = synced + (64 << 10);
        let f = ok(OpenOptions::new().write(true).open(&path).map_err(Wal::err("log")));
        ok(f.write_all_at(&vec![0u8; (later - second) as usize], second).map_err(Wal::err("log")));
        ok(f.write_all_at(&record_header(salt, &[5u8; 10], synced), later)
            .map_err(Wal::err("log")));
        ok(f.write_all_at(&[5u8; 10], later + RECORD_HEADER).map_err(Wal::err("log")));
        drop(f);
        assert_eq!(corrupt_at(Wal::open(&path)), second);
    }

    /// A log cut to a position ([`Wal::replace`], what a validator's compaction does) while
    /// space is written ahead of it keeps its records, not the zeros after them, and goes on
    /// writing ahead in the new file (until stop 62's review, the rewrite read the zeros as
    /// a record that does not check, and the validator stopped at its first compaction).
    #[test]
    fn a_log_cut_while_space_is_written_ahead_keeps_its_records_and_the_space() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = open(&path);
        wal.write_ahead(64 << 10);
        let direct = wal.ahead.is_some();
        ok(wal.append(b"dropped"));
        ok(wal.sync());
        let keep_from = wal.len();
        for i in 0..40u8 {
            ok(wal.append(&[i; 3000]));
            ok(wal.sync());
        }
        assert!(!direct || file_len(&path).unwrap_or(0) > wal.len(), "zeros ahead");
        ok(wal.replace(&[b"head"], keep_from));
        assert_eq!(wal.ahead.is_some(), direct, "the space ahead goes on in the new file");
        ok(wal.append(b"after"));
        ok(wal.sync());
        let len = wal.len();
        // Dropping the log waits for the fill the rewrite started.
        drop(wal);
        assert!(!direct || file_len(&path).unwrap_or(0) > len, "zeros ahead again");
        let (_, records) = open(&path);
        let mut expected = vec![Bytes::from_static(b"head")];
        expected.extend((0..40u8).map(|i| Bytes::from(vec![i; 3000])));
        expected.push(Bytes::from_static(b"after"));
        assert_eq!(records, expected);
    }
}
