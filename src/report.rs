//! The run report: what was read and where every record went, printed as one line and, with `--report`,
//! written as JSON.

use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::error::{DbCause, Error, Position, Result, Stage};
use crate::observe::{Progress, Status};

/// The output name of a `ferry validate` run, which writes nothing.
pub const VALIDATION_ONLY: &str = "(validation only)";

/// How many errors a report lists in full (the counts are always complete).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Where every record of a run went: the counts both report kinds (convert's [`Report`] and migrate's)
/// share, flattened into their JSON. `read = written + rejected + filtered + skipped` always holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Records (rows) read from the source.
    pub read: u64,
    /// Records written to the target.
    pub written: u64,
    /// Records refused (bad data), each with its reason in the rejects file.
    pub rejected: u64,
    /// Records a filter left out.
    pub filtered: u64,
    /// Records skipped: duplicates left alone, records an earlier run loaded.
    pub skipped: u64,
}

impl Counts {
    /// True when every record read is accounted for.
    pub fn balances(&self) -> bool {
        self.read == self.written + self.rejected + self.filtered + self.skipped
    }

    /// Adds another run's (or table's) counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.read += other.read;
        self.written += other.written;
        self.rejected += other.rejected;
        self.filtered += other.filtered;
        self.skipped += other.skipped;
    }
}

/// The outcome of one convert run, returned whether it succeeded or failed (a failure carries the report so
/// far). `read = written + rejected + filtered + skipped` always holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// ferry's version.
    pub ferry_version: String,
    /// True when the run finished and its output is final (`status` is `succeeded`).
    pub ok: bool,
    /// How the run ended: succeeded, failed or cancelled.
    pub status: Status,
    /// True for a dry run (nothing written).
    pub dry_run: bool,
    /// The input, as given.
    pub input: String,
    /// The output, as given.
    pub output: String,
    /// The input format.
    pub input_format: String,
    /// The output format.
    pub output_format: String,
    /// The template, as `name version`, when one mapped the records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The JSON Schema records were validated against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The error policy: strict, lenient or skip.
    pub on_error: String,
    /// Where rejected records were set aside (only when some were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    /// Where every record went. Skipped records are duplicates left alone by `--on-conflict skip` and
    /// records an earlier run loaded (`--resume`).
    #[serde(flatten)]
    pub counts: Counts,
    /// Database loads: new rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inserted: Option<u64>,
    /// Database loads: existing rows changed by `--on-conflict overwrite|merge`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    /// Database loads: the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `--incremental`: the cursor, the range read, and `--deletes`' count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<crate::sync::window::IncrementalReport>,
    /// Database loads: the conflict mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<String>,
    /// Database loads: true when ferry created the table (for a dry run: would have).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub created_table: bool,
    /// Database loads into a table ferry created (for a dry run: would have): its columns, each with its
    /// type and where the type came from (`declared`, `types`, `inferred`, `default`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<crate::db::NewColumn>,
    /// Database loads with `--commit-every`: the last record committed (a rerun resumes after it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_committed_record: Option<u64>,
    /// Database loads with no template, schema or shaping step into a table whose loaded columns are all
    /// text: the rows handed to the table straight from the input's text, no record made in between (see
    /// the README's "Progress and parallelism"); the other rows went as records.
    #[serde(skip_serializing_if = "is_zero")]
    pub rows_from_text: u64,
    /// Bytes read from the input.
    pub bytes_read: u64,
    /// Bytes written to the output (for a dry run: the bytes that would have been written).
    pub bytes_written: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Records read per second.
    pub records_per_second: f64,
    /// The first errors (at most 100).
    pub errors: Vec<ReportedError>,
}

/// One error as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportedError {
    /// The stage that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Where, when the error concerns a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The full sentence.
    pub message: String,
    /// The database's account (SQLSTATE, constraint, table, column), when a database refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db: Option<DbCause>,
}

impl From<&Error> for ReportedError {
    fn from(e: &Error) -> Self {
        ReportedError {
            stage: e.stage(),
            position: e.position().cloned(),
            message: crate::secret::redact(&e.to_string()).into_owned(),
            db: e.db_cause().cloned(),
        }
    }
}

impl Report {
    /// Records an error, keeping at most 100 in full.
    pub fn push_error(&mut self, e: &Error) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ReportedError::from(e));
        }
    }

    /// True when every record read is accounted for.
    pub fn balances(&self) -> bool {
        self.counts.balances()
    }

    /// Marks how the run ended: `ok` and `status` from `error` (none: succeeded). The error that stopped
    /// the run is always listed, last (in the place of the hundredth if the list is full).
    pub fn end(&mut self, error: Option<&Error>) {
        self.status = match error {
            None => Status::Succeeded,
            Some(e) if e.is_cancelled() => Status::Cancelled,
            Some(_) => Status::Failed,
        };
        self.ok = error.is_none();
        if let Some(e) = error {
            self.errors.truncate(MAX_REPORTED_ERRORS - 1);
            self.errors.push(ReportedError::from(e));
        }
    }

    /// The counts as an observer's [`Progress`].
    pub fn progress(&self) -> Progress {
        Progress {
            counts: self.counts,
            bytes_read: self.bytes_read,
            seconds: self.seconds,
            ..Progress::default()
        }
    }

    /// The one-line summary printed on stderr.
    pub fn summary_line(&self) -> String {
        let validating = self.output == VALIDATION_ONLY;
        let (verb, rejected) = match (validating, self.dry_run) {
            (true, _) => ("valid", "invalid"),
            (false, true) => ("would write", "rejected"),
            (false, false) => ("written", "rejected"),
        };
        let c = &self.counts;
        // A run that succeeded but set records aside says so in its verdict, not only in its counts.
        let verdict = match self.status {
            Status::Succeeded | Status::Running if validating && c.rejected > 0 => {
                "INVALID".to_owned()
            }
            Status::Succeeded | Status::Running if c.rejected > 0 => {
                format!("ok with {} rejected", c.rejected)
            }
            Status::Succeeded | Status::Running => "ok".to_owned(),
            Status::Failed => "FAILED".to_owned(),
            Status::Cancelled => "CANCELLED".to_owned(),
        };
        let mut line = format!(
            "ferry: {verdict} {}: read {} = {verb} {} + {rejected} {} + filtered {} + skipped {} in {:.2} s ({:.0} records/s)",
            self.output,
            c.read,
            c.written,
            c.rejected,
            c.filtered,
            c.skipped,
            self.seconds,
            self.records_per_second,
        );
        if let (Some(inserted), Some(updated)) = (self.inserted, self.updated) {
            let table = self.table.as_deref().unwrap_or_default();
            let created = if self.created_table {
                ", table created"
            } else {
                ""
            };
            let undone = if self.dry_run {
                "; rolled back (dry run)"
            } else {
                ""
            };
            line.push_str(&format!(
                "\nferry: table {table:?}: inserted {inserted}, updated {updated}, skipped {}{created}{undone}",
                self.counts.skipped
            ));
        }
        if let Some(inc) = &self.incremental {
            line.push_str(&format!(
                "\nferry: incremental by {:?}: from {} to {}",
                inc.cursor, inc.from, inc.to
            ));
            if let Some(deleted) = inc.deleted {
                line.push_str(&format!(", deleted {deleted}"));
            }
        }
        line
    }

    /// The error a run that rejected records ends with when its job asks (`fail_on_rejects`): exit code 3,
    /// the output and rejects file kept. `None` when nothing was rejected.
    pub fn rejected_error(&self) -> Option<Error> {
        (self.ok && self.counts.rejected > 0)
            .then(|| Error::rejected(self.counts.rejected, self.rejects_file.clone()))
    }

    /// Writes the report as pretty JSON to `path` (atomically, like every other output).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let mut sink = Box::new(crate::sink::AtomicFile::create(path)?);
        let name = path.display().to_string();
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::io(Stage::Sink, Some(&name), std::io::Error::other(e)))?;
        sink.write_all(&json)
            .and_then(|()| sink.write_all(b"\n"))
            .map_err(|e| Error::io(Stage::Sink, Some(&name), e))?;
        crate::sink::ByteSink::finish(sink)?;
        Ok(())
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
