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
use crate::interrupt::Registration;

/// What ends every temporary file's name.
const TEMP_SUFFIX: &str = ".tmp";
/// A file's writeback to disk is started every this many bytes (Linux: `sync_file_range`), so that the disk
/// writes while the run goes on and the sync that makes the file durable at its end finds little left to
/// write. Measured: see BENCHMARKS.md, issue 15, "Eighth pass".
const WRITEBACK_BYTES: u64 = 8 << 20;
/// Random characters in a temporary file's name.
const TEMP_RANDOM: usize = 6;

/// The folder a target is written in.
fn folder_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// This process's part of a temporary file's name: `ferry-<host>-<pid>-`.
fn temp_tag() -> String {
    format!("ferry-{}-{}-", host_tag(), std::process::id())
}

/// The host name, letters and digits only (at most 32): runs on other hosts sharing a folder (NFS, a
/// container's volume) are told apart from this one's, whose process ids mean nothing here.
fn host_tag() -> String {
    let mut buf = [0u8; 256];
    #[cfg(unix)]
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    #[cfg(not(unix))]
    let ok = false;
    let name = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let tag: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    if tag.is_empty() {
        "host".to_owned()
    } else {
        tag
    }
}

/// The process id in a temporary file name of ferry's made on this host, else `None`:
/// `.<name>.ferry-<host>-<pid>-<six letters or digits>.tmp`.
fn temp_file_owner(file_name: &str, host: &str) -> Option<u32> {
    let body = file_name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let mut pieces = body.rsplitn(4, '-');
    let random = pieces.next()?;
    let pid = pieces.next()?;
    let tagged_host = pieces.next()?;
    let rest = pieces.next()?;
    let ours = random.len() == TEMP_RANDOM
        && random.bytes().all(|b| b.is_ascii_alphanumeric())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && tagged_host == host
        && rest.len() > ".ferry".len()
        && rest.ends_with(".ferry");
    ours.then(|| pid.parse().ok()).flatten()
}

/// True while process `pid` exists (or cannot be told not to: another user's process counts as alive).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let sent = unsafe { libc::kill(pid, 0) } == 0;
    sent || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Removes, once per folder and process, the temporary files that runs on this host left in `dir` when
/// they were killed without a chance to clean up: only names of ferry's exact pattern, only of processes
/// that are gone.
fn remove_stale_temp_files(dir: &Path) {
    static CLEANED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let key = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    {
        let mut cleaned = CLEANED.lock().unwrap_or_else(|p| p.into_inner());
        if cleaned.contains(&key) {
            return;
        }
        cleaned.push(key);
    }
    let host = host_tag();
    let own = std::process::id();
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_file_owner(n, &host)) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && pid != own && !process_alive(pid) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Refuses to replace an existing `target` that the running user could not have opened for writing: the
/// permission bits decide, for the file's owner, group or others (root, whom the bits do not bind, is
/// refused a file no one may write). Renaming over a file needs only the folder's permission, so without
/// this a read-only file in a shared folder would be replaced.
fn check_replaceable(target: &Path) -> Result<()> {
    let Ok(meta) = fs::metadata(target) else {
        return Ok(()); // nothing there yet
    };
    if !meta.is_file() || may_write(&meta) {
        return Ok(());
    }
    let message = format!(
        "it is read-only for you{}: ferry does not replace a file you could not write; make it writable \
         (chmod u+w) or remove it first",
        mode_text(&meta)
    );
    Err(Error::io(
        Stage::Sink,
        Some(&target.display().to_string()),
        io::Error::new(io::ErrorKind::PermissionDenied, message),
    ))
}

#[cfg(unix)]
fn may_write(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let mode = meta.mode();
    // SAFETY: these calls take no arguments and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        mode & 0o222 != 0
    } else if meta.uid() == uid {
        mode & 0o200 != 0
    } else if meta.gid() == gid || supplementary_groups().contains(&meta.gid()) {
        mode & 0o020 != 0
    } else {
        mode & 0o002 != 0
    }
}

#[cfg(not(unix))]
fn may_write(meta: &fs::Metadata) -> bool {
    !meta.permissions().readonly()
}

#[cfg(unix)]
fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: a count of 0 with a null pointer asks only for the number of groups.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let Ok(len) = usize::try_from(count) else {
        return Vec::new();
    };
    let mut groups = vec![0; len];
    // SAFETY: the buffer holds `count` entries.
    let filled = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(filled).unwrap_or(0));
    groups
}

#[cfg(unix)]
fn mode_text(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    format!(" (mode {:04o})", meta.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn mode_text(_meta: &fs::Metadata) -> String {
    String::new()
}

/// A byte destination that must be finished explicitly to make its output final.
pub trait ByteSink: Write + Send {
    /// Flushes and makes the output final (renames a temporary file into place).
    /// Returns the bytes written.
    fn finish(self: Box<Self>) -> Result<u64>;

    /// Bytes written so far.
    fn bytes_written(&self) -> u64;
}

/// A file written under a temporary name beside the target and renamed into place by `finish()`.
///
/// The temporary name is `.<name>.ferry-<host>-<pid>-<random>.tmp`: ferry's, and whose. It is registered
/// with [`crate::interrupt`] so that a signal removes it, and a later run in the same folder removes those
/// of runs on this host whose process is gone.
pub struct AtomicFile {
    target: PathBuf,
    temp: Option<io::BufWriter<tempfile::NamedTempFile>>,
    registration: Option<Registration>,
    written: u64,
    writeback: Writeback,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s directory (which must exist). An existing target the user
    /// could not write is refused before anything is written.
    pub fn create(target: &Path) -> Result<AtomicFile> {
        let dir = folder_of(target);
        check_replaceable(target)?;
        remove_stale_temp_files(dir);
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output");
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.{}", temp_tag()))
            .rand_bytes(TEMP_RANDOM)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir)
            .map_err(|e| Error::io(Stage::Sink, Some(&dir.display().to_string()), e))?;
        let registration = crate::interrupt::register(temp.path());
        Ok(AtomicFile {
            target: target.to_owned(),
            temp: Some(io::BufWriter::with_capacity(256 * 1024, temp)),
            registration: Some(registration),
            written: 0,
            writeback: Writeback::default(),
        })
    }

    fn path_text(&self) -> String {
        self.target.display().to_string()
    }

    /// Starts writing the file's newest bytes to disk once there are [`WRITEBACK_BYTES`] of them.
    fn start_writeback(&mut self) {
        let Some(temp) = &self.temp else { return };
        // Bytes still in the buffer are not in the file yet.
        let in_file = self.written - temp.buffer().len() as u64;
        self.writeback.follow(temp.get_ref().as_file(), in_file);
    }
}

/// Starts a growing file's writeback to disk in steps of [`WRITEBACK_BYTES`], so that the disk writes while
/// the run goes on and the sync that makes the file durable at its end finds little left to write.
#[derive(Debug, Default)]
pub(crate) struct Writeback {
    /// Where the file's bytes not yet handed to writeback start.
    from: u64,
}

impl Writeback {
    /// The file is `len` bytes long now: its bytes since the last request are handed to writeback once
    /// there are enough of them.
    pub(crate) fn follow(&mut self, file: &fs::File, len: u64) {
        if len.saturating_sub(self.from) >= WRITEBACK_BYTES {
            request_writeback(file, self.from, len);
            self.from = len;
        }
    }
}

/// Asks the kernel to start writing bytes `from..to` of `file` to disk, without waiting for it. Only a
/// hint: the sync at the end makes the file durable and reports any error.
#[cfg(target_os = "linux")]
fn request_writeback(file: &fs::File, from: u64, to: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: the descriptor is the open file's; the call reads no memory of ours.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

#[cfg(not(target_os = "linux"))]
fn request_writeback(_file: &fs::File, _from: u64, _to: u64) {}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let temp = self
            .temp
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        let n = temp.write(buf).map_err(|e| naming(&self.target, e))?;
        self.written += n as u64;
        self.start_writeback();
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let temp = self
            .temp
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        temp.write_all(buf).map_err(|e| naming(&self.target, e))?;
        self.written += buf.len() as u64;
        self.start_writeback();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.temp.as_mut().map_or(Ok(()), |t| t.flush());
        flushed.map_err(|e| naming(&self.target, e))
    }
}

/// A write error as the user should read it: naming the output (not the temporary file, which the failed
/// run removes), with the system's own words (`No space left on device`) and kind kept.
fn naming(target: &Path, e: io::Error) -> io::Error {
    let cause = os_error(e);
    io::Error::new(
        cause.kind(),
        format!("cannot write {}: {cause}", target.display()),
    )
}

/// The error without the temporary file's path the tempfile crate appends (`… at path "…"`; its wrapper
/// gives no access to the system's error beneath), kind kept.
fn os_error(e: io::Error) -> io::Error {
    if e.raw_os_error().is_some() {
        return e;
    }
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((cause, _)) => io::Error::new(e.kind(), cause.to_owned()),
        None => e,
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
        let temp = temp
            .into_inner()
            .map_err(|e| io_err(os_error(e.into_error())))?;
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
            registration: self.registration.take(),
        };
        Ok((self.written, pending))
    }
}

/// Renames finished files into place, in order, as one step as far as signals go: the registry's lock is
/// held from the first rename to the last, so a signal either removes them all before any is renamed or
/// finds them all in place (a split output's parts and then its manifest, a file and its `.sha256`). A
/// target made read-only meanwhile stops it before any rename; a rename that fails stops it there, and the
/// files not yet renamed are removed — which is why a split output's manifest goes last.
pub fn persist_all(files: Vec<PendingFile>) -> Result<()> {
    for file in &files {
        check_replaceable(&file.target)?;
    }
    let mut files = files.into_iter();
    let outcome = {
        let mut registry = crate::interrupt::in_flight();
        files
            .by_ref()
            .try_for_each(|file| file.persist_locked(&mut registry))
    };
    // Dropped (and removed) only now that the lock is free: their registrations take it.
    drop(files);
    outcome
}

/// A complete file still under its temporary name; dropped without [`PendingFile::persist`], it is deleted.
pub struct PendingFile {
    temp: tempfile::TempPath,
    target: PathBuf,
    registration: Option<Registration>,
}

impl PendingFile {
    /// Renames the file to its final name (unless the target has meanwhile become a file the user could
    /// not write).
    pub fn persist(self) -> Result<()> {
        persist_all(vec![self])
    }

    /// Renames the file while the caller holds the registry's lock.
    fn persist_locked(mut self, registry: &mut Vec<PathBuf>) -> Result<()> {
        let path = self.target.display().to_string();
        // Released before anything is dropped: dropping a registration takes the lock the caller holds.
        if let Some(registration) = self.registration.take() {
            registration.release(registry);
        }
        // On failure the error hands the temporary file back, and dropping it removes the file.
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

/// Standard output, or a caller's writer (an HTTP response, a buffer). There is nothing to rename: what
/// was written cannot be taken back; `finish()` flushes.
pub struct WriterSink {
    out: io::BufWriter<Box<dyn Write + Send>>,
    written: u64,
}

impl WriterSink {
    /// Buffers writes to `writer`.
    pub fn new(writer: Box<dyn Write + Send>) -> WriterSink {
        WriterSink {
            out: io::BufWriter::with_capacity(256 * 1024, writer),
            written: 0,
        }
    }
}

impl WriterSink {
    /// Buffered standard output.
    pub fn stdout() -> WriterSink {
        WriterSink::new(Box::new(io::stdout()))
    }
}

impl Write for WriterSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ByteSink for WriterSink {
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
    fn temporary_names_say_whose_they_are() {
        let host = host_tag();
        let dir = tempfile::tempdir().unwrap();
        let sink = AtomicFile::create(&dir.path().join("out.csv")).unwrap();
        let name = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let name = name.to_str().unwrap();
        assert_eq!(
            temp_file_owner(name, &host),
            Some(std::process::id()),
            "{name}"
        );
        assert!(crate::interrupt::in_flight()
            .iter()
            .any(|p| p.ends_with(name)));
        drop(sink);
        assert!(!crate::interrupt::in_flight()
            .iter()
            .any(|p| p.ends_with(name)));
        for other in [
            ".out.csv.tmp",
            "out.csv.ferry-h-1-abcdef.tmp",
            ".out.csv.ferry-h-x1-abcdef.tmp",
            ".out.csv.ferry-h-1-abcdefg.tmp",
            ".out.csv.ferry-h-1-abc-ef.tmp",
            ".ferry-h-1-abcdef.tmp",
            ".out.csv.ferry-h-1-abcdef.tmpx",
        ] {
            assert_eq!(temp_file_owner(other, "h"), None, "{other}");
        }
        assert_eq!(
            temp_file_owner(".out.csv.ferry-h-1-abcdef.tmp", "h"),
            Some(1)
        );
        assert_eq!(
            temp_file_owner(".out.csv.ferry-h-1-abcdef.tmp", "other"),
            None
        );
    }

    #[test]
    fn a_file_no_one_may_write_is_not_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        fs::write(&target, "old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).unwrap();
        let err = AtomicFile::create(&target).err().expect("refused");
        assert!(err.to_string().contains("read-only"), "{err}");
        // Made read-only while the run was writing: the rename is refused too.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        let mut sink = AtomicFile::create(&target).unwrap();
        sink.write_all(b"new").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(Box::new(sink).finish().is_err());
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
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

    #[test]
    fn writeback_follows_the_bytes_in_the_file_and_the_file_comes_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let mut sink = Box::new(AtomicFile::create(&target).unwrap());
        let piece: Vec<u8> = (0..100_003u32).map(|i| (i % 251) as u8).collect();
        let mut expected = Vec::new();
        let mut started = Vec::new();
        while expected.len() < 4 * WRITEBACK_BYTES as usize {
            sink.write_all(&piece).unwrap();
            expected.extend_from_slice(&piece);
            started.push(sink.writeback.from);
        }
        // Started in steps of at least WRITEBACK_BYTES, never past what left the buffer for the file.
        let steps: Vec<u64> = started
            .windows(2)
            .filter(|w| w[0] != w[1])
            .map(|w| w[1] - w[0])
            .collect();
        assert_eq!(steps.len(), 3, "{steps:?}"); // the fourth is still partly in the buffer
        assert!(steps.iter().all(|s| *s >= WRITEBACK_BYTES), "{steps:?}");
        let buffered = sink.temp.as_ref().unwrap().buffer().len() as u64;
        assert!(sink.writeback.from <= sink.written - buffered);
        sink.finish().unwrap();
        assert_eq!(fs::read(&target).unwrap(), expected);
    }
}
