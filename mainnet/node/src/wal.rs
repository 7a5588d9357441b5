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
        Ok((Wal { file, path: name, dirty: false }, records))
    }

    /// Appends a record (not yet durable: see [`Wal::sync`]).
    pub fn append(&mut self, record: &[u8]) -> Result<(), WalError> {
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(record.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc32fast::hash(record).to_le_bytes());
        self.file.write_all(&header).map_err(Self::err(&self.path))?;
        self.file.write_all(record).map_err(Self::err(&self.path))?;
        self.dirty = true;
        Ok(())
    }

    /// Replaces the whole log with `records`, atomically (a new file renamed over the old):
    /// a crash leaves either the old log or the new one.
    pub fn reset(&mut self, records: &[&[u8]]) -> Result<(), WalError> {
        let path = std::path::PathBuf::from(&self.path);
        let tmp = path.with_extension("new");
        let name = tmp.display().to_string();
        {
            let mut f = File::create(&tmp).map_err(Self::err(&name))?;
            for r in records {
                let mut header = [0u8; 8];
                header[..4].copy_from_slice(&(r.len() as u32).to_le_bytes());
                header[4..].copy_from_slice(&crc32fast::hash(r).to_le_bytes());
                f.write_all(&header).map_err(Self::err(&name))?;
                f.write_all(r).map_err(Self::err(&name))?;
            }
            f.sync_all().map_err(Self::err(&name))?;
        }
        std::fs::rename(&tmp, &path).map_err(Self::err(&self.path))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir).and_then(|d| d.sync_all()).map_err(Self::err(&self.path))?;
        }
        self.file = OpenOptions::new().append(true).open(&path).map_err(Self::err(&self.path))?;
        self.dirty = false;
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
