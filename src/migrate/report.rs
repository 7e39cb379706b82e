//! What a migration did: [`MigrateReport`], returned whether the run succeeded or failed (a failure carries
//! the report so far), written as JSON by `--report` and summed up in a few lines by
//! [`MigrateReport::summary`]. It is one of the report family: the counts ([`Counts`], flattened so `read`,
//! `written` and `rejected` stay at the top of the JSON), `status`, `seconds` and `errors` mean what they
//! mean in the convert report.

use std::path::Path;

use serde::Serialize;

use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};
use crate::observe::{Progress, Status};
use crate::report::{Counts, ReportedError, MAX_REPORTED_ERRORS};

use super::plan::Untranslated;

/// What one table's migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    /// The table.
    pub name: String,
    /// Rows read, written and rejected.
    #[serde(flatten)]
    pub counts: Counts,
    /// The rejects file, when rows were rejected.
    pub rejects_file: Option<String>,
    /// Checksum of the written rows, computed from the source.
    pub source_checksum: Option<String>,
    /// Checksum of the table as read back from the target.
    pub target_checksum: Option<String>,
    /// Rows read back from the target.
    pub target_rows: Option<u64>,
    /// Rows and checksum agree (None: not validated).
    pub equal: Option<bool>,
    /// Copied by an earlier, interrupted run.
    pub resumed: bool,
    /// Seconds spent copying.
    pub seconds: f64,
    /// `--incremental`: target rows deleted because their key had gone from the source.
    #[serde(skip_serializing_if = "is_zero")]
    pub deleted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A schema object that could not be created, or only as `NOT VALID`.
#[derive(Debug, Clone, Serialize)]
pub struct NotCreated {
    /// The statement.
    pub statement: String,
    /// The database's reason.
    pub reason: String,
    /// Created `NOT VALID` instead (enforced for new rows; the existing ones are listed).
    pub not_valid: bool,
}

/// Rows breaking a foreign key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyViolation {
    /// The referencing table.
    pub table: String,
    /// The referenced table.
    pub references: String,
    /// Rows whose key has no parent.
    pub rows: u64,
    /// Where it was found: `source` (before the copy) or `target` (after it).
    pub found_in: &'static str,
}

/// Schema objects of the migrated tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectCounts {
    /// Tables.
    pub tables: usize,
    /// Primary keys.
    pub primary_keys: usize,
    /// UNIQUE constraints.
    pub uniques: usize,
    /// Secondary indexes.
    pub indexes: usize,
    /// CHECK constraints.
    pub checks: usize,
    /// Foreign keys.
    pub foreign_keys: usize,
    /// NOT NULL columns.
    pub not_null: usize,
    /// Columns with defaults.
    pub defaults: usize,
    /// Identity sequences.
    pub sequences: usize,
    /// Views created on the target.
    pub views: usize,
}

/// What a migration did: `--report` writes it as JSON, and its summary goes to stderr.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// ferry's version.
    pub ferry_version: String,
    /// How the run ended.
    pub status: Status,
    /// The source (no password).
    pub source: String,
    /// The target (no password).
    pub target: String,
    /// A dry run (everything rolled back).
    pub dry_run: bool,
    /// `--on-error`.
    pub on_error: String,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Rows read, written and rejected over all tables.
    #[serde(flatten)]
    pub counts: Counts,
    /// Schema objects created.
    pub objects: ObjectCounts,
    /// Objects not translated, with the reason.
    pub untranslated: Vec<Untranslated>,
    /// Statements that failed or were created `NOT VALID`.
    pub not_created: Vec<NotCreated>,
    /// Foreign-key violations found.
    pub key_violations: Vec<KeyViolation>,
    /// Every table validated equal and no key violated (None: not validated).
    pub valid: Option<bool>,
    /// The state file.
    pub state_file: Option<String>,
    /// The backup manifest.
    pub backup: Option<String>,
    /// Seconds for the whole run.
    pub seconds: f64,
    /// The first errors (at most 100): rows a lenient run rejected, and what stopped a failed run.
    pub errors: Vec<ReportedError>,
    /// A tenant migration: the tenants asked for (`users:123`, `users:all`, `--tenants-from FILE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A tenant migration's line per tenant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<crate::tenant::TenantOutcome>,
}

impl MigrateReport {
    /// Records an error, keeping at most [`MAX_REPORTED_ERRORS`] in full.
    pub fn push_error(&mut self, e: &Error) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ReportedError::from(e));
        }
    }

    /// Sums the tables' counts into the run's.
    pub(crate) fn add_up(&mut self) {
        self.counts = Counts::default();
        for t in &self.tables {
            self.counts.add(&t.counts);
        }
    }

    /// The counts as an observer's final [`Progress`].
    pub fn progress(&self) -> Progress {
        Progress {
            counts: self.counts,
            seconds: self.seconds,
            ..Progress::default()
        }
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(Stage::Sink, Some(&shown), e))
    }

    /// True when a table read back differs from its source (the data written is not what was read).
    pub fn differs(&self) -> bool {
        self.tables.iter().any(|t| t.equal == Some(false))
    }

    /// What validation found, as the summary's last verdict: equal only when every table matches and no
    /// row was rejected (a lenient run's rejected rows are not in the target).
    fn validation_line(&self) -> Option<String> {
        let valid = self.valid?;
        if valid {
            return Some("validation: every table has equal rows and checksums".to_owned());
        }
        let bad: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| t.equal == Some(false))
            .map(|t| t.name.as_str())
            .collect();
        let mut found = Vec::new();
        if !bad.is_empty() {
            found.push(format!(
                "{} table(s) differ ({}); see `ferry diff`",
                bad.len(),
                bad.join(", ")
            ));
        }
        if self.counts.rejected > 0 {
            found.push(format!(
                "{} row(s) were rejected, so the target lacks them (they are in the rejects files); the rows \
                 written match their source",
                self.counts.rejected
            ));
        }
        if !self.key_violations.is_empty() {
            found.push(format!("{} key violation(s)", self.key_violations.len()));
        }
        Some(format!("validation FAILED: {}", found.join("; ")))
    }

    /// The closing summary: `read = written + rejected`, objects, validation.
    pub fn summary(&self) -> String {
        if self.tenant.is_some() {
            return crate::tenant::summary(self);
        }
        let o = &self.objects;
        let verb = match (self.dry_run, self.status) {
            (_, Status::Failed | Status::Cancelled) => "stopped after migrating",
            (true, _) => "would migrate",
            (false, _) => "migrated",
        };
        let c = &self.counts;
        let mut out = format!(
            "{verb} {} tables: {} rows read = {} written + {} rejected\n\
             schema: {} primary keys, {} unique, {} indexes, {} checks, {} foreign keys, {} not-null columns, {} defaults, {} sequences, {} views",
            o.tables, c.read, c.written, c.rejected, o.primary_keys, o.uniques, o.indexes,
            o.checks, o.foreign_keys, o.not_null, o.defaults, o.sequences, o.views
        );
        if !self.untranslated.is_empty() {
            out.push_str(&format!("\nnot translated ({}):", self.untranslated.len()));
            for u in &self.untranslated {
                out.push_str(&format!("\n  {} {}: {}", u.kind, u.name, u.reason));
            }
        }
        for n in &self.not_created {
            let what = if n.not_valid {
                "created NOT VALID"
            } else {
                "not created"
            };
            out.push_str(&format!("\n{what}: {} ({})", n.statement, n.reason));
        }
        for v in &self.key_violations {
            out.push_str(&format!(
                "\nforeign key {} → {}: {} row(s) without a parent (in the {})",
                quote_ident(&v.table),
                quote_ident(&v.references),
                v.rows,
                v.found_in
            ));
        }
        if let Some(line) = self.validation_line() {
            out.push('\n');
            out.push_str(&line);
        }
        if let Some(state) = &self.state_file {
            out.push_str(&format!(
                "\nstate: {state} (ferry migrate --rollback {state} undoes it)"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_at_the_top_of_the_json_and_status_says_how_it_ended() {
        let mut report = MigrateReport {
            status: Status::Cancelled,
            tables: vec![TableReport {
                name: "t".into(),
                counts: Counts {
                    read: 3,
                    written: 2,
                    rejected: 1,
                    ..Counts::default()
                },
                ..TableReport::default()
            }],
            ..MigrateReport::default()
        };
        report.add_up();
        report.push_error(&Error::cancelled());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["read"], 3);
        assert_eq!(json["written"], 2);
        assert_eq!(json["rejected"], 1);
        assert_eq!(json["status"], "cancelled");
        assert_eq!(json["tables"][0]["read"], 3);
        assert!(json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"));
        assert!(report.counts.balances());
        assert!(report.summary().starts_with("stopped after migrating"));
    }
}
