//! The last layer of the write side: splits the output into parts at record boundaries (`--split-size`,
//! `--split-records`), each a complete file with its own envelope, and writes a manifest listing every part
//! with its record count, size and SHA-256. Also the `.sha256` checksum of an unsplit output (`--checksum`).
//!
//! Parts and manifest are written under temporary names and renamed only when the whole run succeeds.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::KeyMaterial;
use crate::error::{Error, Position, Result, Stage};
use crate::format::Encoder;
use crate::record::Record;
use crate::sink::{AtomicFile, ByteSink, PendingFile};

/// When a part ends. In a job file: `{"max_bytes": 50000000}` and/or `{"max_records": 100000}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitOptions {
    /// A part ends at the first record boundary once its file holds this many bytes (after compression and
    /// encryption).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// A part ends after this many records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
}

impl SplitOptions {
    /// True when the output is split at all.
    pub fn splits(&self) -> bool {
        self.max_bytes.is_some() || self.max_records.is_some()
    }
}

/// Parses a size such as `50MB`, `1.5GiB`, `4096` (bytes). Decimal units are powers of 1000, binary of 1024.
///
/// ```
/// use ferry::envelope::split::parse_size;
/// assert_eq!(parse_size("50MB").unwrap(), 50_000_000);
/// assert_eq!(parse_size("1KiB").unwrap(), 1024);
/// assert!(parse_size("0").is_err());
/// ```
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {text:?} (try 50MB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    let bytes = (number * factor as f64).round();
    if bytes < 1.0 || !bytes.is_finite() {
        return Err(format!("a size must be at least 1 byte, got {text:?}"));
    }
    Ok(bytes as u64)
}

/// The names of a split output's parts and manifest: `contexts.ndjson.gz` → `contexts-00001.ndjson.gz` …
/// and `contexts.manifest.json`.
#[derive(Debug, Clone)]
pub struct PartNames {
    dir: PathBuf,
    stem: String,
    /// The extension chain with its leading dot (`.ndjson.gz`), or empty.
    suffix: String,
}

impl PartNames {
    /// Splits `target`'s file name into a stem and the trailing extensions `known` recognises.
    pub fn new(target: &Path, known: impl Fn(&str) -> bool) -> PartNames {
        let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let pieces: Vec<&str> = name.split('.').collect();
        let mut cut = pieces.len();
        while cut > 1 && known(pieces[cut - 1]) {
            cut -= 1;
        }
        let stem = pieces[..cut].join(".");
        let suffix = pieces[cut..].iter().map(|p| format!(".{p}")).collect();
        PartNames { dir, stem, suffix }
    }

    /// The file name of part `n` (from 1).
    pub fn part(&self, n: usize) -> PathBuf {
        self.dir
            .join(format!("{}-{n:05}{}", self.stem, self.suffix))
    }

    /// The manifest's path.
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(format!("{}.manifest.json", self.stem))
    }
}

/// One part as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartEntry {
    /// The file name, relative to the manifest's folder.
    pub file: String,
    /// Records in the part.
    pub records: u64,
    /// The file's size in bytes.
    pub bytes: u64,
    /// The file's SHA-256, hex.
    pub sha256: String,
}

/// What was applied to every part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ManifestHead {
    /// The record format.
    pub format: String,
    /// `gzip`, `brotli`, `zstd` or `none`.
    pub compression: String,
    /// The encryption algorithm and key derivation (never the key), when encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The template, as `name version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The JSON Schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// How the parts are encrypted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EncryptionInfo {
    /// `AES-256-GCM`.
    pub algorithm: String,
    /// `none` (a raw key) or `argon2id` (a passphrase).
    pub kdf: String,
}

/// The manifest of a split output (`<stem>.manifest.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest format's version.
    pub manifest_version: u32,
    /// ferry's version.
    pub ferry_version: String,
    /// When the run started, RFC 3339.
    pub created: String,
    /// What every part holds and how it is wrapped.
    #[serde(flatten)]
    pub head: ManifestHead,
    /// Records in all parts.
    pub total_records: u64,
    /// The parts, in order.
    pub parts: Vec<PartEntry>,
    /// `ferry convert --incremental`: the cursor, its mark, and the range each run wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalLog>,
    /// The MAC over the rest of the manifest, when the parts are encrypted (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<super::manifest::ManifestMac>,
}

/// The runs of an incremental set (`ferry convert --incremental COL --to FILE`): each run wrote new
/// parts with the rows whose cursor lay in its range; the mark is where the next run starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncrementalLog {
    /// The cursor column.
    pub cursor: String,
    /// The last run's upper end: the next run reads rows whose cursor is past it.
    pub mark: serde_json::Value,
    /// Every run that wrote rows, in order.
    pub runs: Vec<IncrementalRun>,
}

/// One run of an incremental set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncrementalRun {
    /// The mark it started from (rows past it were read); null for the first run (every row).
    pub from: serde_json::Value,
    /// Its upper end (rows up to and including it were read).
    pub to: serde_json::Value,
    /// Rows it wrote.
    pub rows: u64,
    /// The parts it wrote.
    pub parts: Vec<String>,
    /// When it ran, RFC 3339.
    pub at: String,
}

/// An incremental run's place in its set: the set so far (none on the first run) and the range read.
#[derive(Debug, Clone)]
pub struct Continuation {
    /// The set's manifest as the last run left it.
    pub earlier: Option<Manifest>,
    /// The cursor column.
    pub cursor: String,
    /// The mark the run starts from.
    pub from: serde_json::Value,
    /// The run's upper end (the new mark).
    pub to: serde_json::Value,
}

impl Manifest {
    /// Reads a manifest file.
    pub fn read(path: &Path) -> Result<Manifest> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
        Manifest::parse(&bytes, name)
    }

    /// Parses a manifest's bytes; `name` is for the error.
    pub fn parse(bytes: &[u8], name: String) -> Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::data(
                Stage::Source,
                Position::file(name),
                format!("not a ferry manifest: {e}"),
            )
        })
    }
}

/// True for a path that names a manifest.
pub fn is_manifest(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".manifest.json"))
}

/// A finished file: its size, hash and the temporary file that becomes it.
struct Closed {
    bytes: u64,
    sha256: String,
    pending: PendingFile,
}

/// The bottom of a part's (or a checksummed file's) layers: an [`AtomicFile`] that hashes what it writes
/// and, when finished, hands itself over instead of renaming.
pub struct HashedFile {
    file: Option<AtomicFile>,
    hasher: Sha256,
    written: u64,
    closed: Arc<Mutex<Option<Closed>>>,
}

impl HashedFile {
    fn create(path: &Path, closed: Arc<Mutex<Option<Closed>>>) -> Result<HashedFile> {
        Ok(HashedFile {
            file: Some(AtomicFile::create(path)?),
            hasher: Sha256::new(),
            written: 0,
            closed,
        })
    }
}

impl Write for HashedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("write after finish"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl ByteSink for HashedFile {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let file = self.file.take().ok_or_else(|| {
            Error::data(
                Stage::Sink,
                Position::default(),
                "a part was finished twice (internal error)",
            )
        })?;
        let (bytes, pending) = file.close()?;
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        let mut slot = self.closed.lock().map_err(|_| {
            Error::data(
                Stage::Sink,
                Position::default(),
                "lock poisoned (internal error)",
            )
        })?;
        *slot = Some(Closed {
            bytes,
            sha256,
            pending,
        });
        Ok(bytes)
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// Bytes as lowercase hex, as `sha256sum` prints digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds the layers (compression, encryption, format) of one file on top of its bottom sink.
pub type LayerFactory = Box<dyn FnMut(Box<dyn ByteSink>) -> Result<Box<dyn Encoder>> + Send>;

/// An encoder that writes each part through a fresh set of layers and, when finished, renames every part
/// and writes the manifest.
pub struct SplitEncoder {
    layers: LayerFactory,
    names: PartNames,
    options: SplitOptions,
    head: ManifestHead,
    created: String,
    current: Option<OpenPart>,
    done: Vec<(PartEntry, PendingFile)>,
    bytes_before: u64,
    /// The key the parts are encrypted with: the manifest gets a MAC under it.
    seal: Option<Arc<KeyMaterial>>,
    /// An incremental run: its parts are added to an earlier set.
    continues: Option<Continuation>,
}

struct OpenPart {
    encoder: Box<dyn Encoder>,
    file_name: String,
    records: u64,
    closed: Arc<Mutex<Option<Closed>>>,
    /// The part file's bytes so far, shared with its bottom sink.
    size: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// `u64::MAX` when the encoder's bytes are the file's bytes (no compression); 0 when they are not.
    uncompressed_cap: u64,
}

impl SplitEncoder {
    /// A split output at `target` (the name parts and manifest are derived from).
    pub fn new(
        names: PartNames,
        options: SplitOptions,
        head: ManifestHead,
        created: String,
        layers: LayerFactory,
    ) -> SplitEncoder {
        SplitEncoder {
            layers,
            names,
            options,
            head,
            created,
            current: None,
            done: Vec::new(),
            bytes_before: 0,
            seal: None,
            continues: None,
        }
    }

    /// Authenticates the manifest with a MAC under `key` (for parts encrypted with it).
    pub fn sealed_with(mut self, key: Arc<KeyMaterial>) -> SplitEncoder {
        self.seal = Some(key);
        self
    }

    /// Makes the run an incremental one: parts are numbered after the earlier set's, the manifest lists
    /// the earlier parts and these, with the run's range and the new mark; a run without records writes
    /// nothing (the earlier set and its mark stay as they are).
    pub fn continuing(mut self, continuation: Continuation) -> SplitEncoder {
        self.continues = Some(continuation);
        self
    }

    fn earlier_parts(&self) -> usize {
        self.continues
            .as_ref()
            .and_then(|c| c.earlier.as_ref())
            .map_or(0, |m| m.parts.len())
    }

    /// Ends the part being written, if any: the next record starts a new part (a tenant bundle gives each
    /// table parts of its own).
    pub fn end_part(&mut self) -> Result<()> {
        self.close_part()
    }

    /// Parts begun so far (finished ones and the one being written).
    pub fn parts_begun(&self) -> usize {
        self.done.len() + usize::from(self.current.is_some())
    }

    fn open_part(&mut self) -> Result<()> {
        let path = self.names.part(self.earlier_parts() + self.done.len() + 1);
        let closed = Arc::new(Mutex::new(None));
        let file = HashedFile::create(&path, closed.clone())?;
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = CountingSink {
            inner: Box::new(file),
            count: counter.clone(),
        };
        let encoder = (self.layers)(Box::new(sink))?;
        let size = move || counter.load(std::sync::atomic::Ordering::Relaxed);
        self.current = Some(OpenPart {
            encoder,
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            records: 0,
            closed,
            size: Arc::new(size),
            uncompressed_cap: if self.head.compression == "none" {
                u64::MAX
            } else {
                0
            },
        });
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        part.encoder.finish()?;
        let closed = take_closed(&part.closed)?;
        self.bytes_before += closed.bytes;
        let entry = PartEntry {
            file: part.file_name,
            records: part.records,
            bytes: closed.bytes,
            sha256: closed.sha256,
        };
        self.done.push((entry, closed.pending));
        Ok(())
    }

    fn part_is_full(&self, part: &OpenPart) -> bool {
        self.options.max_records.is_some_and(|n| part.records >= n)
            || self.options.max_bytes.is_some_and(|n| part_size(part) >= n)
    }
}

impl Encoder for SplitEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        if self.current.is_none() {
            self.open_part()?;
        }
        let Some(part) = self.current.as_mut() else {
            return Ok(());
        };
        part.encoder.write_record(record)?;
        part.records += 1;
        let full = self.current.as_ref().is_some_and(|p| self.part_is_full(p));
        if full {
            self.close_part()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.current.is_none() && self.done.is_empty() {
            if self.continues.is_some() {
                // An incremental run that found nothing new leaves the set and its mark as they are.
                return Ok(0);
            }
            // No records at all still gives one (empty, readable) part, so the manifest lists something to read.
            self.open_part()?;
        }
        self.close_part()?;
        let mut manifest = Manifest {
            manifest_version: super::manifest::MANIFEST_VERSION,
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            created: std::mem::take(&mut self.created),
            head: std::mem::take(&mut self.head),
            total_records: self.done.iter().map(|(e, _)| e.records).sum(),
            parts: self.done.iter().map(|(e, _)| e.clone()).collect(),
            incremental: None,
            mac: None,
        };
        if let Some(c) = self.continues.take() {
            continue_set(&mut manifest, c);
        }
        if let Some(key) = &self.seal {
            super::manifest::seal(&mut manifest, key)?;
        }
        let path = self.names.manifest();
        let mut file = AtomicFile::create(&path)?;
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            Error::io(
                Stage::Sink,
                Some(&path.display().to_string()),
                io::Error::other(e),
            )
        })?;
        let name = path.display().to_string();
        file.write_all(&json)
            .and_then(|()| file.write_all(b"\n"))
            .map_err(|e| Error::io(Stage::Sink, Some(&name), e))?;
        let (_, manifest_file) = file.close()?;
        let total = self.bytes_before;
        // The parts first and the manifest last, all under one hold of the signal cleanup: a signal
        // leaves either the whole set or none of it, and a failed rename never leaves a manifest.
        let mut files: Vec<PendingFile> = self.done.drain(..).map(|(_, p)| p).collect();
        files.push(manifest_file);
        crate::sink::persist_all(files)?;
        Ok(total)
    }

    fn bytes_written(&self) -> u64 {
        self.bytes_before + self.current.as_ref().map_or(0, part_size)
    }
}

/// Puts an incremental run's parts after the earlier set's and records its range and the new mark.
fn continue_set(manifest: &mut Manifest, c: Continuation) {
    let run = IncrementalRun {
        from: c.from,
        to: c.to.clone(),
        rows: manifest.total_records,
        parts: manifest.parts.iter().map(|p| p.file.clone()).collect(),
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let mut log = IncrementalLog {
        cursor: c.cursor,
        mark: c.to,
        runs: Vec::new(),
    };
    if let Some(earlier) = c.earlier {
        manifest.created = earlier.created;
        let mut parts = earlier.parts;
        parts.append(&mut manifest.parts);
        manifest.parts = parts;
        manifest.total_records = manifest.parts.iter().map(|p| p.records).sum();
        log.runs = earlier.incremental.map(|l| l.runs).unwrap_or_default();
    }
    log.runs.push(run);
    manifest.incremental = Some(log);
}

/// A part's size so far: the bytes that reached its file, or, while layers above still buffer them, the
/// bytes its format encoder produced (exact for plain parts; for compressed parts the file's count, which
/// lags by what the compressor holds).
fn part_size(part: &OpenPart) -> u64 {
    (part.size)().max(part.encoder.bytes_written().min(part.uncompressed_cap))
}

/// Counts the bytes that reach the file beneath, for `--split-size`.
struct CountingSink {
    inner: Box<dyn ByteSink>,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ByteSink for CountingSink {
    fn finish(self: Box<Self>) -> Result<u64> {
        self.inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }
}

/// What a [`HashedFile`] left when it was finished.
fn take_closed(slot: &Mutex<Option<Closed>>) -> Result<Closed> {
    slot.lock().ok().and_then(|mut c| c.take()).ok_or_else(|| {
        Error::data(
            Stage::Sink,
            Position::default(),
            "a file was not closed (internal error)",
        )
    })
}

/// An unsplit output that also gets a `sha256sum`-compatible `<file>.sha256` beside it (`--checksum`).
pub struct ChecksummedFile {
    file: HashedFile,
    target: PathBuf,
}

impl ChecksummedFile {
    /// Starts the file.
    pub fn create(target: &Path) -> Result<ChecksummedFile> {
        Ok(ChecksummedFile {
            file: HashedFile::create(target, Arc::new(Mutex::new(None)))?,
            target: target.to_owned(),
        })
    }
}

impl Write for ChecksummedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl ByteSink for ChecksummedFile {
    fn finish(self: Box<Self>) -> Result<u64> {
        let closed = self.file.closed.clone();
        let bytes = Box::new(self.file).finish()?;
        let Closed {
            sha256, pending, ..
        } = take_closed(&closed)?;
        let name = self
            .target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sidecar_path = PathBuf::from(format!("{}.sha256", self.target.display()));
        let mut sidecar = AtomicFile::create(&sidecar_path)?;
        let line = format!("{sha256}  {name}\n");
        sidecar
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(Stage::Sink, Some(&sidecar_path.display().to_string()), e))?;
        let (_, sidecar) = sidecar.close()?;
        crate::sink::persist_all(vec![pending, sidecar])?;
        Ok(bytes)
    }

    fn bytes_written(&self) -> u64 {
        self.file.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_keep_the_extension_chain() {
        let known = |e: &str| ["ndjson", "gz", "enc", "csv"].contains(&e);
        let names = PartNames::new(Path::new("out/my.data.ndjson.gz.enc"), known);
        assert_eq!(names.part(1), Path::new("out/my.data-00001.ndjson.gz.enc"));
        assert_eq!(names.manifest(), Path::new("out/my.data.manifest.json"));
        let bare = PartNames::new(Path::new("export"), known);
        assert_eq!(bare.part(12), Path::new("export-00012"));
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5 MiB"), Ok(1_572_864));
        assert!(parse_size("12 parsecs").is_err());
    }
}
