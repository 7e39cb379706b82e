//! The rejects file: every record the lenient and skip policies refused, with its record number, position
//! and reasons, one JSON object per line — so a rejected record is never lost, only set aside.
//!
//! Each line: `{"record": N, "line": L, "stage": "validate", "reasons": ["…"], "data": {…original…}}`
//! (`line` where the format has lines; `data` is null when the input could not be decoded into a record).
//! The file is written like any output: under a temporary name, renamed when the run succeeds, and not at
//! all when nothing was rejected.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Stage};
use crate::record::{write_json_record, write_json_str, Record};
use crate::sink::{AtomicFile, ByteSink};

/// Collects rejected records into the rejects file.
pub struct RejectsWriter {
    path: PathBuf,
    file: Option<Box<AtomicFile>>,
    line: Vec<u8>,
}

impl RejectsWriter {
    /// A writer for `path`; nothing is created until the first reject.
    pub fn new(path: &Path) -> RejectsWriter {
        RejectsWriter {
            path: path.to_owned(),
            file: None,
            line: Vec::new(),
        }
    }

    /// The path the file will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets one record aside with its reasons. `record` is the record as read (None when it could not be
    /// decoded).
    pub fn write(&mut self, number: u64, record: Option<&Record>, errors: &[Error]) -> Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"record\":");
        self.line.extend_from_slice(number.to_string().as_bytes());
        if let Some(line) = errors
            .iter()
            .find_map(|e| e.position().and_then(|p| p.line))
        {
            self.line.extend_from_slice(b",\"line\":");
            self.line.extend_from_slice(line.to_string().as_bytes());
        }
        if let Some(stage) = errors.first().and_then(Error::stage) {
            self.line.extend_from_slice(b",\"stage\":");
            write_json_str(&mut self.line, &stage.to_string());
        }
        self.line.extend_from_slice(b",\"reasons\":[");
        for (i, e) in errors.iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            write_json_str(&mut self.line, &e.to_string());
        }
        self.line.extend_from_slice(b"],\"data\":");
        match record {
            Some(r) => write_json_record(&mut self.line, r),
            None => self.line.extend_from_slice(b"null"),
        }
        self.line.extend_from_slice(b"}\n");
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(Box::new(AtomicFile::create(&self.path)?)),
        };
        let name = self.path.display().to_string();
        file.write_all(&self.line)
            .map_err(|e| Error::io(Stage::Sink, Some(&name), e))
    }

    /// Makes the file final (if anything was rejected).
    pub fn finish(self) -> Result<()> {
        if let Some(file) = self.file {
            file.finish()?;
        }
        Ok(())
    }
}
