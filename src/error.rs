//! Errors for every stage of the pipeline: one boxed kind, a stage, and the position of the record at fault.
//!
//! Shaped like the `csv` crate's error: [`Error`] wraps a `Box<ErrorKind>` so `Result<T>` stays one word wide,
//! [`ErrorKind`] is `#[non_exhaustive]`, and `Display` reads as one sentence that names the stage, the file,
//! the record number and, where the format has them, the line, column and field.

use std::fmt;
use std::io;

/// The sentence a cancelled run ends with.
const CANCELLED: &str = "the run was cancelled; whatever it had not committed was undone";

/// A `Result` whose error is ferry's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in the pipeline something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Stage {
    /// Opening or reading the input.
    Source,
    /// Turning input bytes into records.
    Decode,
    /// Template field mapping and transforms.
    Map,
    /// JSON Schema validation.
    Validate,
    /// Turning records into output bytes.
    Encode,
    /// Writing, finishing or renaming the output.
    Sink,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Source => "source",
            Stage::Decode => "decode",
            Stage::Map => "map",
            Stage::Validate => "validate",
            Stage::Encode => "encode",
            Stage::Sink => "sink",
        })
    }
}

/// Where a record sits in its input. Every part is optional because not every format has lines or columns.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    /// The file (or `-` for standard input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The 1-based record number in the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// The 1-based line number, where the format has lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The 1-based column (a character or field column, as the format counts it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    /// The 0-based byte offset, for formats whose parser counts bytes rather than lines (XML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte: Option<u64>,
    /// The field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Position {
    /// A position that names only the file.
    pub fn file(file: impl Into<String>) -> Position {
        Position {
            file: Some(file.into()),
            ..Position::default()
        }
    }

    /// Sets the record number.
    pub fn with_record(mut self, record: u64) -> Position {
        self.record = Some(record);
        self
    }

    /// Sets the line number.
    pub fn with_line(mut self, line: u64) -> Position {
        self.line = Some(line);
        self
    }

    /// Sets the column number.
    pub fn with_column(mut self, column: u64) -> Position {
        self.column = Some(column);
        self
    }

    /// Sets the byte offset.
    pub fn with_byte(mut self, byte: u64) -> Position {
        self.byte = Some(byte);
        self
    }

    /// Sets the field name.
    pub fn with_field(mut self, field: impl Into<String>) -> Position {
        self.field = Some(field.into());
        self
    }

    fn is_empty(&self) -> bool {
        *self == Position::default()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(record) = self.record {
            parts.push(format!("record {record}"));
        }
        if let Some(line) = self.line {
            parts.push(format!("line {line}"));
        }
        if let Some(column) = self.column {
            parts.push(format!("column {column}"));
        }
        if let Some(byte) = self.byte {
            parts.push(format!("byte {byte}"));
        }
        if let Some(field) = &self.field {
            parts.push(format!("field {field:?}"));
        }
        match &self.file {
            Some(file) if parts.is_empty() => write!(f, "in {file}"),
            Some(file) => write!(f, "in {file} at {}", parts.join(", ")),
            None => write!(f, "at {}", parts.join(", ")),
        }
    }
}

/// An error from any stage of ferry.
///
/// ```
/// use ferry::{Error, Position, Stage};
/// let err = Error::data(Stage::Decode, Position::file("in.csv").with_record(3).with_line(4), "unclosed quote");
/// assert_eq!(err.to_string(), "decode error in in.csv at record 3, line 4: unclosed quote");
/// assert_eq!(err.exit_code(), 1);
/// ```
pub struct Error(Box<ErrorKind>);

/// The database's own account of an error, kept so that a caller can tell a unique violation (HTTP 409)
/// from a lost connection (503) without reading the message. SQLite's constraint errors carry the
/// SQLSTATE PostgreSQL would give for the same violation (23505 unique, 23502 not null, 23503 foreign key,
/// 23514 check), so one test serves both databases.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DbCause {
    /// The SQLSTATE code (`23505`), where the database gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// The constraint at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// The table at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The column at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

/// SQLSTATE class 23 codes by name.
pub mod sqlstate {
    /// A duplicate key.
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// A null where NOT NULL holds.
    pub const NOT_NULL_VIOLATION: &str = "23502";
    /// A reference to a missing parent.
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    /// A CHECK constraint refused the row.
    pub const CHECK_VIOLATION: &str = "23514";
}

/// What kind of error happened.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The command line is wrong (an unknown flag, a missing argument). Exit code 2.
    Usage {
        /// What is wrong, as one sentence.
        message: String,
    },
    /// The job cannot run as configured: a bad URL, a missing key, an unreadable or invalid template or
    /// schema, options that contradict each other. Found before any record moves. Exit code 2.
    Config {
        /// What is wrong, as one sentence.
        message: String,
    },
    /// The run was cancelled through its token (or a signal): it ended like a failed strict run.
    Cancelled,
    /// The run did its work and its answer is no (`ferry diff`: the databases differ). Exit code 1; the
    /// message is the answer, without a stage.
    Verdict {
        /// The answer, as one sentence.
        message: String,
    },
    /// The run succeeded but set records aside, and the job asked that this count as a failure
    /// (`--fail-on-rejects`). Exit code 3; the output and the rejects file stay.
    Rejected {
        /// How many records were rejected.
        rejected: u64,
        /// Where they are, when a rejects file was written.
        rejects_file: Option<String>,
    },
    /// Reading or writing bytes failed.
    Io {
        /// The stage that was reading or writing.
        stage: Stage,
        /// The file involved, where known.
        path: Option<String>,
        /// The underlying error.
        source: io::Error,
    },
    /// One record is bad (a ragged row, a field that will not convert, a schema violation): the run can
    /// skip it and go on under the lenient and skip policies.
    Record {
        /// The stage that found the problem.
        stage: Stage,
        /// Where the record is.
        position: Position,
        /// What is wrong with it.
        message: String,
        /// The database's account, when a database refused the record.
        db: Option<Box<DbCause>>,
        /// The record's text as read, when it could not be decoded (the rejects file keeps it, so that
        /// the record can be fixed and fed back).
        raw: Option<Box<str>>,
    },
    /// The input cannot be read further (broken syntax in a JSON or XML document), or an output refused a
    /// record: the run stops.
    Data {
        /// The stage that found the problem.
        stage: Stage,
        /// Where the record is.
        position: Position,
        /// What is wrong with it.
        message: String,
        /// The database's account, when the error came from a database.
        db: Option<Box<DbCause>>,
    },
}

impl Error {
    /// A usage or configuration error (exit code 2).
    pub fn usage(message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Usage {
            message: message.into(),
        }))
    }

    /// A configuration error: the job cannot run as given (exit code 2).
    pub fn config(message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Config {
            message: message.into(),
        }))
    }

    /// A negative answer of a run that worked (exit code 1): the databases differ.
    pub fn verdict(message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Verdict {
            message: message.into(),
        }))
    }

    /// True for a negative answer ([`Error::verdict`]).
    pub fn is_verdict(&self) -> bool {
        matches!(*self.0, ErrorKind::Verdict { .. })
    }

    /// The run was cancelled.
    pub fn cancelled() -> Error {
        Error(Box::new(ErrorKind::Cancelled))
    }

    /// A run that succeeded rejected `rejected` records, and was asked to fail on that (exit code 3).
    pub fn rejected(rejected: u64, rejects_file: Option<String>) -> Error {
        Error(Box::new(ErrorKind::Rejected {
            rejected,
            rejects_file,
        }))
    }

    /// True for a run that rejected records under `--fail-on-rejects`.
    pub fn is_rejected(&self) -> bool {
        matches!(*self.0, ErrorKind::Rejected { .. })
    }

    /// An I/O error while `stage` was working on `path`.
    pub fn io(stage: Stage, path: Option<&str>, source: io::Error) -> Error {
        Error(Box::new(ErrorKind::Io {
            stage,
            path: path.map(str::to_owned),
            source,
        }))
    }

    /// A per-record error: the record at `position` is wrong, but the records after it can still be read.
    pub fn record(stage: Stage, position: Position, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Record {
            stage,
            position,
            message: message.into(),
            db: None,
            raw: None,
        }))
    }

    /// Keeps the text of a record that could not be decoded (only per-record errors carry it).
    pub fn with_raw(mut self, text: impl Into<String>) -> Error {
        if let ErrorKind::Record { raw, .. } = &mut *self.0 {
            *raw = Some(text.into().into_boxed_str());
        }
        self
    }

    /// The text of the record that could not be decoded, when the decoder kept it.
    pub fn raw(&self) -> Option<&str> {
        match &*self.0 {
            ErrorKind::Record { raw, .. } => raw.as_deref(),
            _ => None,
        }
    }

    /// Fills in the line of the record at fault when the error does not name one (a map, validate or
    /// sink error learns it from the record the decoder read).
    pub fn with_line(mut self, line: Option<u64>) -> Error {
        if let ErrorKind::Data { position, .. } | ErrorKind::Record { position, .. } = &mut *self.0
        {
            if position.line.is_none() {
                position.line = line;
            }
        }
        self
    }

    /// A data error that ends the run: the input cannot be read past `position`, or the output refused it.
    pub fn data(stage: Stage, position: Position, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Data {
            stage,
            position,
            message: message.into(),
            db: None,
        }))
    }

    /// Keeps the database's account of a data or record error (other kinds are returned unchanged).
    pub fn with_db_cause(mut self, cause: DbCause) -> Error {
        if let ErrorKind::Data { db, .. } | ErrorKind::Record { db, .. } = &mut *self.0 {
            *db = Some(Box::new(cause));
        }
        self
    }

    /// Adds a sentence to the message — what the run did about the failure — keeping the kind, stage,
    /// position and database cause. A cancelled run keeps its own sentence; an I/O error becomes a data
    /// error of its stage, positioned at its file, so the sentence can follow it.
    pub fn with_note(self, note: &str) -> Error {
        let add = |message: String| format!("{message}\n{note}");
        let kind = match *self.0 {
            ErrorKind::Usage { message } => ErrorKind::Usage {
                message: add(message),
            },
            ErrorKind::Config { message } => ErrorKind::Config {
                message: add(message),
            },
            ErrorKind::Record {
                stage,
                position,
                message,
                db,
                raw,
            } => ErrorKind::Record {
                stage,
                position,
                message: add(message),
                db,
                raw,
            },
            ErrorKind::Data {
                stage,
                position,
                message,
                db,
            } => ErrorKind::Data {
                stage,
                position,
                message: add(message),
                db,
            },
            ErrorKind::Io {
                stage,
                path,
                source,
            } => ErrorKind::Data {
                stage,
                position: path.map(Position::file).unwrap_or_default(),
                message: add(source.to_string()),
                db: None,
            },
            ErrorKind::Verdict { message } => ErrorKind::Verdict {
                message: add(message),
            },
            other @ (ErrorKind::Cancelled | ErrorKind::Rejected { .. }) => other,
        };
        Error(Box::new(kind))
    }

    /// The database's account of the error, when a database raised it.
    pub fn db_cause(&self) -> Option<&DbCause> {
        match &*self.0 {
            ErrorKind::Data { db, .. } | ErrorKind::Record { db, .. } => db.as_deref(),
            _ => None,
        }
    }

    /// The SQLSTATE code, when a database raised the error.
    pub fn sqlstate(&self) -> Option<&str> {
        self.db_cause().and_then(|c| c.sqlstate.as_deref())
    }

    /// True for a duplicate key (SQLSTATE 23505, or SQLite's UNIQUE / PRIMARY KEY constraint).
    pub fn is_unique_violation(&self) -> bool {
        self.sqlstate() == Some(sqlstate::UNIQUE_VIOLATION)
    }

    /// The kind of this error.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Unwraps the kind.
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }

    /// True for command-line errors.
    pub fn is_usage(&self) -> bool {
        matches!(*self.0, ErrorKind::Usage { .. })
    }

    /// True for configuration errors (the job cannot run as given).
    pub fn is_config(&self) -> bool {
        matches!(*self.0, ErrorKind::Config { .. })
    }

    /// True when the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(*self.0, ErrorKind::Cancelled)
    }

    /// True for per-record data errors (bad input, not a broken machine).
    pub fn is_data(&self) -> bool {
        matches!(*self.0, ErrorKind::Data { .. } | ErrorKind::Record { .. })
    }

    /// True for errors that concern one record only: the run may reject it and go on.
    pub fn is_record(&self) -> bool {
        matches!(*self.0, ErrorKind::Record { .. })
    }

    /// True for I/O errors.
    pub fn is_io(&self) -> bool {
        matches!(*self.0, ErrorKind::Io { .. })
    }

    /// True when the reader of our output went away (`ferry ... | head`): not a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(&*self.0, ErrorKind::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }

    /// The stage, where the error belongs to one.
    pub fn stage(&self) -> Option<Stage> {
        match &*self.0 {
            ErrorKind::Io { stage, .. }
            | ErrorKind::Data { stage, .. }
            | ErrorKind::Record { stage, .. } => Some(*stage),
            ErrorKind::Usage { .. }
            | ErrorKind::Config { .. }
            | ErrorKind::Cancelled
            | ErrorKind::Verdict { .. }
            | ErrorKind::Rejected { .. } => None,
        }
    }

    /// The position of the record at fault, for data errors.
    pub fn position(&self) -> Option<&Position> {
        match &*self.0 {
            ErrorKind::Data { position, .. } | ErrorKind::Record { position, .. } => Some(position),
            _ => None,
        }
    }

    /// The message without stage and position.
    pub fn message(&self) -> String {
        match &*self.0 {
            ErrorKind::Usage { message }
            | ErrorKind::Config { message }
            | ErrorKind::Verdict { message }
            | ErrorKind::Data { message, .. }
            | ErrorKind::Record { message, .. } => message.clone(),
            ErrorKind::Io { source, .. } => source.to_string(),
            ErrorKind::Cancelled => CANCELLED.to_owned(),
            ErrorKind::Rejected { .. } => self.to_string(),
        }
    }

    /// The process exit code this error calls for: 2 for usage and configuration errors, 3 for a run that
    /// rejected records under `--fail-on-rejects`, 130 for a cancelled run (as a shell reports an
    /// interrupted command), 0 for a broken pipe, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.is_usage() || self.is_config() {
            2
        } else if self.is_rejected() {
            3
        } else if self.is_cancelled() {
            130
        } else if self.is_broken_pipe() {
            0
        } else {
            1
        }
    }

    /// Fills in the parts of the position that a lower layer could not know (the file name, the record number).
    pub fn with_context(mut self, file: Option<&str>, record: Option<u64>) -> Error {
        if let ErrorKind::Data { position, .. } | ErrorKind::Record { position, .. } = &mut *self.0
        {
            if position.file.is_none() {
                position.file = file.map(str::to_owned);
            }
            if position.record.is_none() {
                position.record = record;
            }
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            ErrorKind::Usage { message }
            | ErrorKind::Config { message }
            | ErrorKind::Verdict { message } => f.write_str(message),
            ErrorKind::Cancelled => f.write_str(CANCELLED),
            ErrorKind::Rejected {
                rejected,
                rejects_file,
            } => {
                let plural = if *rejected == 1 {
                    "record was"
                } else {
                    "records were"
                };
                write!(f, "{rejected} {plural} rejected")?;
                if let Some(file) = rejects_file {
                    write!(f, " (they are in {file})")?;
                }
                f.write_str("; --fail-on-rejects makes that exit code 3")
            }
            ErrorKind::Io {
                stage,
                path: Some(path),
                source,
            } => write!(f, "{stage} error on {path}: {source}"),
            ErrorKind::Io {
                stage,
                path: None,
                source,
            } => write!(f, "{stage} error: {source}"),
            ErrorKind::Data {
                stage,
                position,
                message,
                ..
            }
            | ErrorKind::Record {
                stage,
                position,
                message,
                ..
            } => {
                if position.is_empty() {
                    write!(f, "{stage} error: {message}")
                } else {
                    write!(f, "{stage} error {position}: {message}")
                }
            }
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_sentence_with_every_known_part() {
        let pos = Position::file("a.csv")
            .with_record(2)
            .with_line(3)
            .with_column(4)
            .with_field("id");
        let err = Error::data(Stage::Decode, pos, "invalid UTF-8");
        assert_eq!(
            err.to_string(),
            "decode error in a.csv at record 2, line 3, column 4, field \"id\": invalid UTF-8"
        );
    }

    #[test]
    fn exit_codes_follow_the_kind() {
        assert_eq!(Error::usage("bad flag").exit_code(), 2);
        assert_eq!(
            Error::data(Stage::Encode, Position::default(), "x").exit_code(),
            1
        );
        let pipe = Error::io(
            Stage::Sink,
            None,
            io::Error::from(io::ErrorKind::BrokenPipe),
        );
        assert!(pipe.is_broken_pipe());
        assert_eq!(pipe.exit_code(), 0);
    }

    #[test]
    fn config_and_cancel_have_their_own_kinds_and_codes() {
        let config = Error::config("no key");
        assert!(config.is_config() && !config.is_usage());
        assert_eq!(config.exit_code(), 2);
        let cancelled = Error::cancelled();
        assert!(cancelled.is_cancelled() && cancelled.stage().is_none());
        assert_eq!(cancelled.exit_code(), 130);
        assert!(cancelled.to_string().contains("cancelled"));
    }

    #[test]
    fn a_database_cause_survives_context() {
        let err = Error::record(Stage::Sink, Position::default(), "duplicate key")
            .with_db_cause(DbCause {
                sqlstate: Some(sqlstate::UNIQUE_VIOLATION.to_owned()),
                constraint: Some("t_pkey".to_owned()),
                ..DbCause::default()
            })
            .with_context(Some("in.csv"), Some(3));
        assert!(err.is_unique_violation() && err.is_record());
        assert_eq!(
            err.db_cause().unwrap().constraint.as_deref(),
            Some("t_pkey")
        );
        assert_eq!(err.position().unwrap().record, Some(3));
    }

    #[test]
    fn a_note_keeps_the_kind_and_the_cause() {
        let err = Error::data(Stage::Sink, Position::file("db"), "refused")
            .with_db_cause(DbCause {
                sqlstate: Some(sqlstate::NOT_NULL_VIOLATION.to_owned()),
                ..DbCause::default()
            })
            .with_note("migration failed: nothing was dropped");
        assert!(err.is_data() && err.sqlstate() == Some("23502"));
        assert!(err
            .to_string()
            .ends_with("refused\nmigration failed: nothing was dropped"));
        assert!(Error::config("x").with_note("y").is_config());
        assert!(Error::cancelled().with_note("y").is_cancelled());
        let io = Error::io(Stage::Sink, Some("f"), io::Error::other("disk full")).with_note("n");
        assert_eq!(io.to_string(), "sink error in f: disk full\nn");
    }

    #[test]
    fn context_fills_only_missing_parts() {
        let err = Error::data(Stage::Decode, Position::default().with_line(9), "x")
            .with_context(Some("f"), Some(5));
        let pos = err.position().unwrap();
        assert_eq!(
            (pos.file.as_deref(), pos.record, pos.line),
            (Some("f"), Some(5), Some(9))
        );
    }
}
