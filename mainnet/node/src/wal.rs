//! The consensus write-ahead log: records an engine asked to persist, each written as a
//! length, a CRC-32 and the bytes. Opening reads every whole record and cuts the file after
//! the last one, so a write torn by a crash loses only that record (which the engine never
//! acted on: records are synced before the messages that follow them are sent).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
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
    /// A record before the end does not check, and a whole record follows it: not a torn
    /// last write but damage inside the log. Cutting there would lose the records after it
    /// (for the consensus log, the record of blocks this validator already sent).
    #[error("write-ahead log {path}: the record at byte {at} is corrupt, and records follow it")]
    Corrupt {
        /// The file.
        path: String,
        /// Where the bad record starts.
        at: u64,
    },
}

/// Most bytes of one record (a consensus snapshot can be large).
const MAX_RECORD: usize = 1 << 30;

/// An append-only log of records.
#[derive(Debug)]
pub struct Wal {
    /// Shared with syncs running on the blocking pool ([`Wal::sync_off_thread`]).
    file: Arc<File>,
    path: String,
    dirty: bool,
    /// Bytes in the file.
    len: u64,
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
    /// file in pieces rather than whole. A torn or corrupt tail is cut.
    pub fn open_with<E: From<WalError>>(
        path: &Path,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<Wal, E> {
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(Self::err(&name))?;
        let size = file.metadata().map_err(Self::err(&name))?.len();
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &file);
        let mut body = Vec::new();
        let mut pos = 0u64;
        loop {
            let mut header = [0u8; 8];
            if !read_whole(&mut reader, &mut header).map_err(Self::err(&name))? {
                break;
            }
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            // No record is empty (`append` refuses them): a zero length is the zeros a file
            // system may leave past the last write after a power loss, not a record (before
            // stop 27 they read as empty records, which the block log then refused).
            if len == 0 || len > MAX_RECORD || pos + 8 + len as u64 > size {
                break;
            }
            body.resize(len, 0);
            if !read_whole(&mut reader, &mut body).map_err(Self::err(&name))? {
                break;
            }
            if crc32fast::hash(&body) != crc {
                // A torn write is the last; a whole record after this one means damage.
                let mut next = [0u8; 8];
                if read_whole(&mut reader, &mut next).map_err(Self::err(&name))? {
                    let len = u32::from_le_bytes([next[0], next[1], next[2], next[3]]) as usize;
                    let crc = u32::from_le_bytes([next[4], next[5], next[6], next[7]]);
                    let rest = size.saturating_sub(pos + 16 + body.len() as u64);
                    if len > 0 && len as u64 <= rest && len <= MAX_RECORD {
                        let mut after = vec![0u8; len];
                        read_whole(&mut reader, &mut after).map_err(Self::err(&name))?;
                        if crc32fast::hash(&after) == crc {
                            return Err(WalError::Corrupt { path: name, at: pos }.into());
                        }
                    }
                }
                break;
            }
            visit(pos + 8, &body)?;
            pos += 8 + len as u64;
        }
        drop(reader);
        if pos < size {
            tracing::warn!(path = %name, kept = pos, dropped = size - pos, "cutting a torn write-ahead log tail");
            file.set_len(pos).map_err(Self::err(&name))?;
            file.seek(SeekFrom::End(0)).map_err(Self::err(&name))?;
            file.sync_all().map_err(Self::err(&name))?;
        }
        Ok(Wal { file: Arc::new(file), path: name, dirty: false, len: pos })
    }

    /// Appends a record (not yet durable: see [`Wal::sync`]). Empty records are refused:
    /// opening reads a zero length as the end of the log. A write that fails is cut off
    /// again, so that the next record does not land after its partial bytes.
    pub fn append(&mut self, record: &[u8]) -> Result<(), WalError> {
        if record.is_empty() || record.len() > MAX_RECORD {
            let why = format!("a record of {} bytes (1 to {MAX_RECORD})", record.len());
            return Err(WalError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(why),
            });
        }
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(record).to_le_bytes());
        let mut file = &*self.file;
        let written = file.write_all(&header).and_then(|()| file.write_all(record));
        if let Err(e) = written {
            let _ = self.file.set_len(self.len);
            return Err(WalError::Io { path: self.path.clone(), source: e });
        }
        self.dirty = true;
        self.len += 8 + record.len() as u64;
        Ok(())
    }

    /// Bytes in the log (a position [`Wal::replace`] can keep the records from).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the whole log with `records`, atomically (a new file renamed over the old):
    /// a crash leaves either the old log or the new one.
    pub fn reset(&mut self, records: &[&[u8]]) -> Result<(), WalError> {
        self.replace(records, self.len)
    }

    /// Replaces the log with `head` followed by the records from position `keep_from` on
    /// (a [`Wal::len`] taken before them), atomically.
    pub fn replace(&mut self, head: &[&[u8]], keep_from: u64) -> Result<(), WalError> {
        let path = std::path::PathBuf::from(&self.path);
        let tmp = path.with_extension("new");
        let name = tmp.display().to_string();
        let mut tail = Vec::new();
        if keep_from < self.len {
            let mut old = File::open(&path).map_err(Self::err(&self.path))?;
            old.seek(SeekFrom::Start(keep_from)).map_err(Self::err(&self.path))?;
            old.read_to_end(&mut tail).map_err(Self::err(&self.path))?;
        }
        let mut len = tail.len() as u64;
        {
            let mut f = File::create(&tmp).map_err(Self::err(&name))?;
            for r in head {
                len += 8 + r.len() as u64;
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&(r.len() as u32).to_le_bytes());
                header[4..].copy_from_slice(&crc32fast::hash(r).to_le_bytes());
                f.write_all(&header).map_err(Self::err(&name))?;
                f.write_all(r).map_err(Self::err(&name))?;
            }
            f.write_all(&tail).map_err(Self::err(&name))?;
            f.sync_all().map_err(Self::err(&name))?;
        }
        std::fs::rename(&tmp, &path).map_err(Self::err(&self.path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(Self::err(&self.path))?;
        }
        self.file =
            Arc::new(OpenOptions::new().append(true).open(&path).map_err(Self::err(&self.path))?);
        self.dirty = false;
        self.len = len;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        if self.dirty {
            self.file.sync_data().map_err(Self::err(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// [`Wal::sync`] on tokio's blocking pool: the caller waits for the disk, the runtime's
    /// worker threads (which other validators' and connections' tasks share) do not.
    /// Returns how long the disk took, or `None` when there was nothing to sync.
    pub async fn sync_off_thread(&mut self) -> Result<Option<Duration>, WalError> {
        if !self.dirty {
            return Ok(None);
        }
        let file = self.file.clone();
        let synced = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            file.sync_data().map(|()| started.elapsed())
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let took = synced.map_err(Self::err(&self.path))?;
        self.dirty = false;
        Ok(Some(took))
    }
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
}

impl WalReader {
    /// A reader of the log at `path`.
    pub fn open(path: &Path) -> Result<WalReader, WalError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(Wal::err(&name))?;
        Ok(WalReader { file, path: name })
    }

    /// The `len` bytes of the record at `pos` (a position [`Wal::open_with`] gave, or
    /// [`Wal::len`] before the record was appended plus 8), checked against its CRC.
    pub fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, WalError> {
        use std::os::unix::fs::FileExt;
        let io = |source| WalError::Io { path: self.path.clone(), source };
        let mut header = [0u8; 8];
        let start = pos.checked_sub(8).ok_or_else(|| {
            io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "position before a record"))
        })?;
        self.file.read_exact_at(&mut header, start).map_err(io)?;
        let mut body = vec![0u8; len];
        self.file.read_exact_at(&mut body, pos).map_err(io)?;
        let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if stored != len || crc32fast::hash(&body) != crc {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the record at {pos} does not match its length and checksum"),
            )));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_records_after_a_position_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(records.is_empty() && wal.is_empty());
        wal.append(b"a").unwrap_or_else(|e| panic!("{e}"));
        let after_a = wal.len();
        wal.append(b"bb").unwrap_or_else(|e| panic!("{e}"));
        wal.append(b"ccc").unwrap_or_else(|e| panic!("{e}"));
        wal.replace(&[b"head", b"floor"], after_a).unwrap_or_else(|e| panic!("{e}"));
        wal.append(b"dd").unwrap_or_else(|e| panic!("{e}"));
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        let len = wal.len();
        drop(wal);
        let (wal, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<&[u8]> = records.iter().map(|r| r.as_ref()).collect();
        assert_eq!(got, [&b"head"[..], b"floor", b"bb", b"ccc", b"dd"]);
        assert_eq!(wal.len(), len);
        // Nothing kept: only the new records.
        let (mut wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        wal.reset(&[b"only"]).unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let (_, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records, [Bytes::from_static(b"only")]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_cut_and_records_read_back_by_position() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut at = Vec::new();
        for r in [&b"one"[..], &[7u8; 3000], b"three"] {
            at.push((wal.len() + 8, r.len()));
            wal.append(r).unwrap_or_else(|e| panic!("{e}"));
        }
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        let reader = WalReader::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reader.read_at(at[1].0, at[1].1).ok(), Some(vec![7u8; 3000]));
        assert!(reader.read_at(at[1].0, 5).is_err(), "a length that is not the record's");
        assert!(reader.read_at(at[1].0 + 1, 10).is_err(), "a position inside a record");
        let full = wal.len();
        drop(wal);
        // A torn last record: the first two stay, at the positions they had.
        let f = OpenOptions::new().write(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(full - 2).unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let mut seen = Vec::new();
        let wal = Wal::open_with(&path, |pos, r| {
            seen.push((pos, r.len()));
            Ok::<(), WalError>(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen, at[..2]);
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(wal.len()));
        drop(wal);
        // A flipped byte in the second record: only the first stays.
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        bytes[at[1].0 as usize + 100] ^= 1;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let (wal, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records, [Bytes::from_static(b"one")]);
        assert_eq!(wal.len(), at[1].0 - 8);
        drop(wal);
        // A flipped byte in a record that has a whole record after it is damage, not a torn
        // write: the log is not cut, and opening it says where.
        let mut wal = Wal::open(&path).map(|(w, _)| w).unwrap_or_else(|e| panic!("{e}"));
        let second = wal.len() + 8;
        for r in [&[9u8; 500][..], b"last"] {
            wal.append(r).unwrap_or_else(|e| panic!("{e}"));
        }
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
        bytes[second as usize + 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        match Wal::open(&path) {
            Err(WalError::Corrupt { at, .. }) => assert_eq!(at, second - 8),
            other => panic!("{:?}", other.map(|(_, r)| r)),
        }
        assert_eq!(std::fs::read(&path).ok(), Some(bytes), "the damaged log was left as it was");
    }

    /// Zeros past the last record (what a file system may leave after a power loss) are a
    /// torn tail, not empty records; empty records cannot be appended.
    #[test]
    fn a_zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("log");
        let (mut wal, _) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        wal.append(b"kept").unwrap_or_else(|e| panic!("{e}"));
        assert!(wal.append(b"").is_err(), "an empty record");
        wal.sync().unwrap_or_else(|e| panic!("{e}"));
        let len = wal.len();
        drop(wal);
        let f = OpenOptions::new().write(true).open(&path).unwrap_or_else(|e| panic!("{e}"));
        f.set_len(len + 4096).unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let (wal, records) = Wal::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(records, [Bytes::from_static(b"kept")]);
        assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(len));
        assert_eq!(wal.len(), len);
    }
}
