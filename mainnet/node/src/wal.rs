//! The consensus write-ahead log: records an engine asked to persist, each written as a
//! length, a CRC-32 and the bytes. Opening reads every whole record and cuts the file after
//! the last one, so a write torn by a crash loses only that record (which the engine never
//! acted on: records are synced before the messages that follow them are sent).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

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
}

/// Most bytes of one record (a consensus snapshot can be large).
const MAX_RECORD: usize = 1 << 30;

/// An append-only log of records.
#[derive(Debug)]
pub struct Wal {
    file: File,
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
        let name = path.display().to_string();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(Self::err(&name))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(Self::err(&name))?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while let Some(header) = data.get(pos..pos + 8) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
            let Some(body) = data.get(pos + 8..pos + 8 + len) else { break };
            if len > MAX_RECORD || crc32fast::hash(body) != crc {
                break;
            }
            records.push(Bytes::copy_from_slice(body));
            pos += 8 + len;
        }
        if pos < data.len() {
            tracing::warn!(path = %name, kept = pos, dropped = data.len() - pos, "cutting a torn write-ahead log tail");
            file.set_len(pos as u64).map_err(Self::err(&name))?;
            file.seek(SeekFrom::End(0)).map_err(Self::err(&name))?;
            file.sync_all().map_err(Self::err(&name))?;
        }
        Ok((Wal { file, path: name, dirty: false, len: pos as u64 }, records))
    }

    /// Appends a record (not yet durable: see [`Wal::sync`]).
    pub fn append(&mut self, record: &[u8]) -> Result<(), WalError> {
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(record).to_le_bytes());
        self.file.write_all(&header).map_err(Self::err(&self.path))?;
        self.file.write_all(record).map_err(Self::err(&self.path))?;
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
        self.file = OpenOptions::new().append(true).open(&path).map_err(Self::err(&self.path))?;
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
}
