//! `ferry diff SRC DST`: compares the tables of two databases (either kind) row by row, through the same
//! canonical values as `--validate`: the plan of SRC decides each column's type, both sides are read as
//! that type, and rows are matched as a multiset, so row order does not matter. Shows the first rows found
//! only on one side.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};

use super::conn::Db;
use super::job::load_rules;
use super::planning::build_plan;
use super::rows::{scan, CopyTable};
use super::state::without_password;
use super::value::{row_hash, Datum};
use crate::db::{quote_ident, ConnectOptions};
use crate::env::Environment;
use crate::error::{Error, Result, Stage};

/// What `ferry diff` compares, as plain data (`{"source": "app.db", "target": "postgres", …}`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiffJob {
    /// The first database (its schema decides the types).
    #[serde(serialize_with = "serialize_without_password")]
    pub source: String,
    /// The second database.
    #[serde(serialize_with = "serialize_without_password")]
    pub target: String,
    /// Only these tables (empty: all of SRC's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Rows shown per side and table.
    pub limit: usize,
    /// `--cast-rules`, as the migration used them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cast_rules: Option<PathBuf>,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
}

fn serialize_without_password<S: serde::Serializer>(
    url: &str,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&without_password(url))
}

impl DiffJob {
    /// A comparison of `source` and `target`, every table, ten rows shown per side.
    pub fn new(source: impl Into<String>, target: impl Into<String>) -> DiffJob {
        DiffJob {
            source: source.into(),
            target: target.into(),
            ..DiffJob::default()
        }
    }
}

impl std::fmt::Debug for DiffJob {
    /// The job as a job file shows it: no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "DiffJob {text}")
    }
}

impl Default for DiffJob {
    fn default() -> DiffJob {
        DiffJob {
            source: String::new(),
            target: String::new(),
            tables: Vec::new(),
            limit: 10,
            cast_rules: None,
            connect: ConnectOptions::default(),
        }
    }
}

/// What `ferry diff` found: one entry per table of SRC.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffReport {
    /// SRC, without a password.
    pub source: String,
    /// DST, without a password.
    pub target: String,
    /// True when every table holds the same rows on both sides.
    pub equal: bool,
    /// How many tables differ.
    pub different: usize,
    /// Per table.
    pub tables: Vec<TableDiff>,
}

impl DiffReport {
    /// The readable comparison `ferry diff` prints.
    pub fn render(&self) -> String {
        render(&self.tables)
    }

    /// Writes the comparison as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(Stage::Sink, Some(&shown), e))
    }

    /// The data error a front end ends with when the databases differ (exit code 1), if they do.
    pub fn difference(&self) -> Option<Error> {
        (self.different > 0).then(|| {
            Error::verdict(format!(
                "{} of {} table(s) differ",
                self.different,
                self.tables.len()
            ))
        })
    }
}

/// One table's comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableDiff {
    /// The table.
    pub table: String,
    /// Rows in SRC.
    pub source_rows: u64,
    /// Rows in DST (`None`: DST has no such table).
    pub target_rows: Option<u64>,
    /// Rows only in SRC (first `limit`, as JSON objects).
    pub only_in_source: Vec<serde_json::Value>,
    /// Rows only in DST.
    pub only_in_target: Vec<serde_json::Value>,
    /// How many rows are only in SRC.
    pub source_only_count: u64,
    /// How many rows are only in DST.
    pub target_only_count: u64,
}

impl TableDiff {
    /// True when both sides hold the same rows.
    pub fn equal(&self) -> bool {
        self.target_rows == Some(self.source_rows)
            && self.source_only_count == 0
            && self.target_only_count == 0
    }
}

fn row_json(table: &CopyTable, row: &[Datum]) -> serde_json::Value {
    let map = table
        .columns
        .iter()
        .zip(row)
        .map(|((name, _), d)| (name.clone(), d.to_json()))
        .collect();
    serde_json::Value::Object(map)
}

/// Rows that do not convert to the column's type still count: they hash by their description.
fn hash_of(table: &CopyTable, row: &super::rows::Scanned) -> (u128, serde_json::Value) {
    match row {
        Ok(values) => (row_hash(values), row_json(table, values)),
        Err(m) => {
            let text = Datum::Text(format!("unreadable: {} {}", m.column, m.value));
            (row_hash(&[text]), m.record.clone())
        }
    }
}

/// Compares the databases; one entry per table. `env` is read for a bare `postgres` or `sqlite`.
pub fn diff(job: &DiffJob, env: &Environment) -> Result<DiffReport> {
    let source_db = Db::parse(&job.source, "SRC", env)?;
    let target_db = Db::parse(&job.target, "DST", env)?;
    let rules = load_rules(job.cast_rules.as_ref())?;
    let (source_label, target_label) = (source_db.label(), target_db.label());
    let mut source = source_db.open(&job.connect, false)?;
    let mut target = target_db.open(&job.connect, false)?;
    let plan = build_plan(&mut source, &source_label, &rules, &job.tables, &[], 2)?;
    let mut out = Vec::new();
    for planned in &plan.tables {
        let table = CopyTable::from_plan(planned);
        let mut d = TableDiff {
            table: table.name.clone(),
            ..TableDiff::default()
        };
        let mut counts: HashMap<u128, u32> = HashMap::new();
        scan(&mut source.side(), &source_label, &table, &mut |row| {
            d.source_rows += 1;
            *counts.entry(hash_of(&table, &row).0).or_default() += 1;
            Ok(true)
        })?;
        if target
            .existing_tables(std::slice::from_ref(&table.name))?
            .is_empty()
        {
            d.source_only_count = d.source_rows;
            out.push(d);
            continue;
        }
        let mut target_rows = 0;
        scan(&mut target.side(), &target_label, &table, &mut |row| {
            target_rows += 1;
            let (hash, json) = hash_of(&table, &row);
            match counts.get_mut(&hash) {
                Some(n) if *n > 0 => *n -= 1,
                _ => {
                    d.target_only_count += 1;
                    if d.only_in_target.len() < job.limit {
                        d.only_in_target.push(json);
                    }
                }
            }
            Ok(true)
        })?;
        d.target_rows = Some(target_rows);
        d.source_only_count = counts.values().map(|&n| u64::from(n)).sum();
        if d.source_only_count > 0 {
            scan(&mut source.side(), &source_label, &table, &mut |row| {
                let (hash, json) = hash_of(&table, &row);
                if let Some(n) = counts.get_mut(&hash).filter(|n| **n > 0) {
                    *n -= 1;
                    d.only_in_source.push(json);
                }
                Ok(d.only_in_source.len() < job.limit)
            })?;
        }
        out.push(d);
    }
    let different = out.iter().filter(|d| !d.equal()).count();
    Ok(DiffReport {
        source: without_password(&job.source),
        target: without_password(&job.target),
        equal: different == 0,
        different,
        tables: out,
    })
}

/// The readable comparison of `diffs`.
fn render(diffs: &[TableDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let name = quote_ident(&d.table);
        match d.target_rows {
            _ if d.equal() => out.push_str(&format!("= {name}: {} rows, equal\n", d.source_rows)),
            None => out.push_str(&format!(
                "≠ {name}: {} rows in SRC, no such table in DST\n",
                d.source_rows
            )),
            Some(rows) => {
                out.push_str(&format!(
                    "≠ {name}: {} rows in SRC, {rows} in DST; {} only in SRC, {} only in DST\n",
                    d.source_rows, d.source_only_count, d.target_only_count
                ));
                for row in &d.only_in_source {
                    out.push_str(&format!("  - {row}\n"));
                }
                for row in &d.only_in_target {
                    out.push_str(&format!("  + {row}\n"));
                }
            }
        }
    }
    out
}
