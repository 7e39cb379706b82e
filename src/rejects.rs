//! The rejects file: every record the lenient and skip policies refused — records of `ferry convert`, rows
//! of `ferry migrate` — with its number, position and reasons, one JSON object per line, so a rejected
//! record is never lost, only set aside. One writer and one line shape for both:
//!
//! `{"record": N, "line": L, "stage": "validate", "table": "t", "reasons": ["…"], "raw": "…", "data": {…}}`
//!
//! `record` is the record's number in its input (for a migrated table, the SQLite rowid, or the row's
//! position in a PostgreSQL scan); `line` is the line the record starts on, where the format has lines
//! (whatever stage refused it); `table` appears for a migration; `reasons` are full error sentences; `raw`
//! is the text of a record that could not be decoded (a ragged CSV row, a broken NDJSON line), without
//! its line ending, so that it can be fixed and fed back; `data` is the record as read, null when it could
//! not be decoded.
//! The file is written like any output: under a temporary name, renamed when it is finished, and not at
//! all when nothing was rejected.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Stage};
use crate::record::{write_json_record, write_json_str, Record};
use crate::sink::{AtomicFile, ByteSink};

/// A file name stem for a table or other name that may hold anything: ASCII letters, digits, `-` and `_`
/// are kept, everything else becomes `_`, so a file named after it stays in the folder the user chose.
pub(crate) fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

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
        self.start(number, None, errors);
        match record {
            Some(r) => write_json_record(&mut self.line, r),
            None => self.line.extend_from_slice(b"null"),
        }
        self.end()
    }

    /// Sets one row of a migrated `table` aside with its reasons; `row` is the row as stored.
    pub fn write_row(
        &mut self,
        number: u64,
        table: &str,
        row: &serde_json::Value,
        errors: &[Error],
    ) -> Result<()> {
        self.start(number, Some(table), errors);
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.line, row);
        self.end()
    }

    /// Everything of a line before its `data`.
    fn start(&mut self, number: u64, table: Option<&str>, errors: &[Error]) {
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
        if let Some(table) = table {
            self.line.extend_from_slice(b",\"table\":");
            write_json_str(&mut self.line, table);
        }
        self.line.extend_from_slice(b",\"reasons\":[");
        for (i, e) in errors.iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            write_json_str(&mut self.line, &e.to_string());
        }
        self.line.push(b']');
        // A record that could not be decoded keeps its text, so that it can be fixed and fed back.
        if let Some(raw) = errors.iter().find_map(Error::raw) {
            self.line.extend_from_slice(b",\"raw\":");
            write_json_str(&mut self.line, raw);
        }
        self.line.extend_from_slice(b",\"data\":");
    }

    /// Ends the line and writes it, creating the file at the first reject.
    fn end(&mut self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Position;

    #[test]
    fn convert_and_migrate_rejects_share_one_line_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.ndjson");
        let mut writer = RejectsWriter::new(&path);
        assert!(!path.exists(), "nothing until the first reject");
        let bad = Error::record(
            Stage::Validate,
            Position::file("in.csv").with_record(2).with_line(3),
            "too short",
        );
        let mut record = Record::new();
        record.insert("a", crate::record::Value::Int(1));
        writer.write(2, Some(&record), &[bad]).unwrap();
        let misfit = Error::data(
            Stage::Decode,
            Position::file("app.db").with_record(7),
            "not an integer",
        );
        writer
            .write_row(7, "users", &serde_json::json!({"age": "forty"}), &[misfit])
            .unwrap();
        assert!(!path.exists(), "only once finished");
        writer.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["record"], 2);
        assert_eq!(lines[0]["line"], 3);
        assert_eq!(lines[0]["stage"], "validate");
        assert!(lines[0].get("table").is_none());
        assert_eq!(lines[0]["data"]["a"], 1);
        assert_eq!(lines[1]["record"], 7);
        assert_eq!(lines[1]["table"], "users");
        assert_eq!(lines[1]["stage"], "decode");
        assert!(lines[1]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not an integer"));
        assert_eq!(lines[1]["data"]["age"], "forty");
        let second = text.lines().nth(1).unwrap();
        assert!(
            second.starts_with(r#"{"record":7,"stage":"decode","table":"users","reasons":["#),
            "{second}"
        );
    }

    #[test]
    fn stems_keep_files_in_their_folder() {
        assert_eq!(file_stem("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_stem("Order Details"), "Order_Details");
        assert_eq!(file_stem("Müller-2"), "M_ller-2");
    }
}
