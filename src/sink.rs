//! The bottom of the write side: where encoded (and later compressed, encrypted, split) bytes end up.
//!
//! Every layer on the write side is an `io::Write` with an explicit [`ByteSink::finish`]. A file is written
//! under a temporary name in the target's directory and renamed only in `finish()`, so a failed or
//! interrupted run never leaves a partial file under the final name: dropping a sink without `finish()`
//! deletes the temporary file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Stage};

/// A byte destination that must be finished explicitly to make its output final.
pub trait ByteSink: Write + Send {
    /// Flushes and makes the output final (renames a temporary file into place).
    /// Returns the bytes written.
    fn finish(self: Box<Self>) -> Result<u64>;

    /// Bytes written so far.
    fn bytes_written(&self) -> u64;
}

/// A file written under a temporary name beside the target and renamed into place by `finish()`.
pub struct AtomicFile {
    target: PathBuf,
    temp: Option<io::BufWriter<tempfile::NamedTempFile>>,
    written: u64,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s directory (which must exist).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(Stage::Sink, Some(&dir.display().to_string()), e))?;
        Ok(AtomicFile {
            target: target.to_owned(),
            temp: Some(io::BufWriter::with_capacity(256 * 1024, temp)),
            written: 0,
        })
    }

    fn path_text(&self) -> String {
        self.target.display().to_string()
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let temp = self
            .temp
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        let n = temp.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let temp = self
            .temp
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        temp.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.as_mut().map_or(Ok(()), |t| t.flush())
    }
}

impl AtomicFile {
    /// Flushes and syncs the file but leaves it under its temporary name: the caller makes it final with
    /// [`PendingFile::persist`] (a split output renames all its parts only once the whole run succeeds).
    pub fn close(mut self) -> Result<(u64, PendingFile)> {
        let path = self.path_text();
        let io_err = |e: io::Error| Error::io(Stage::Sink, Some(&path), e);
        let temp = self
            .temp
            .take()
            .ok_or_else(|| io_err(io::Error::other("closed twice")))?;
        let temp = temp.into_inner().map_err(|e| io_err(e.into_error()))?;
        temp.as_file().sync_all().map_err(io_err)?;
        // New files get the usual permissions (tempfile creates them 0600).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&self.target)
                .map(|m| m.permissions().mode())
                .unwrap_or(0o644);
            fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode)).map_err(io_err)?;
        }
        // Only the path is kept: a split output may hold thousands of finished parts, and their file
        // descriptors must not stay open until the run ends.
        let pending = PendingFile {
            temp: temp.into_temp_path(),
            target: std::mem::take(&mut self.target),
        };
        Ok((self.written, pending))
    }
}

/// A complete file still under its temporary name; dropped without [`PendingFile::persist`], it is deleted.
pub struct PendingFile {
    temp: tempfile::TempPath,
    target: PathBuf,
}

impl PendingFile {
    /// Renames the file to its final name.
    pub fn persist(self) -> Result<()> {
        let path = self.target.display().to_string();
        self.temp
            .persist(&self.target)
            .map_err(|e| Error::io(Stage::Sink, Some(&path), e.error))
    }

    /// The final name.
    pub fn target(&self) -> &Path {
        &self.target
    }
}

impl ByteSink for AtomicFile {
    fn finish(self: Box<Self>) -> Result<u64> {
        if self.temp.is_none() {
            return Ok(self.written);
        }
        let (written, pending) = (*self).close()?;
        pending.persist()?;
        Ok(written)
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// Standard output. There is nothing to rename; `finish()` flushes.
pub struct Stdout {
    out: io::BufWriter<io::Stdout>,
    written: u64,
}

impl Stdout {
    /// Buffered standard output.
    pub fn new() -> Stdout {
        Stdout {
            out: io::BufWriter::with_capacity(256 * 1024, io::stdout()),
            written: 0,
        }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ByteSink for Stdout {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out
            .flush()
            .map_err(|e| Error::io(Stage::Sink, Some("-"), e))?;
        Ok(self.written)
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// Counts bytes and throws them away: the sink of a dry run, which still encodes everything to measure it.
#[derive(Default)]
pub struct Discard {
    written: u64,
}

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ByteSink for Discard {
    fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.written)
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// An in-memory sink, for tests and for callers that want the bytes.
#[derive(Default, Clone)]
pub struct Memory {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Memory {
    /// A handle that can read the bytes after the sink is finished.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut inner = self
            .buf
            .lock()
            .map_err(|_| io::Error::other("poisoned buffer"))?;
        inner.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ByteSink for Memory {
    fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.bytes_written())
    }

    fn bytes_written(&self) -> u64 {
        self.buf.lock().map(|b| b.len() as u64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let mut sink = AtomicFile::create(&target).unwrap();
        sink.write_all(b"partial").unwrap();
        drop(sink);
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file must be removed"
        );
    }

    #[test]
    fn finished_file_appears_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let mut sink = Box::new(AtomicFile::create(&target).unwrap());
        sink.write_all(b"a,b\n").unwrap();
        sink.finish().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"a,b\n");
    }
}
