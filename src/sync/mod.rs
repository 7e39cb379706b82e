//! Incremental moves and sync (`ferry sync`, `ferry migrate --incremental`): it sits beside the migration,
//! on the same plan, canonical values and loaders, and moves only what changed since the last pass.
//!
//! What changed is found one of three ways ([`Capture`]): by a **cursor** column (rows whose value is at
//! or past the high-water mark), by **key and row checksum** (a merge-join of both sides in key order),
//! or from a **change log** that triggers keep in a SQLite source ([`capture`]). Deletions are found by
//! the same merge-join, in key-ordered pages ([`pass`]). Marks live in a `_ferry_state` table in the
//! target ([`mark`]), written by the transaction that loads the rows, so a mark never moves past a load
//! that did not commit.
//!
//! A pass: the source is read in one snapshot, the target written in one transaction (rows, deletions
//! and marks together), committed at the end. `ferry sync --every` repeats passes until cancelled and
//! reports the lag after each; `--cutover` stops at the first pass that finds nothing behind and compares
//! counts and checksums of both sides.

pub mod apply;
pub mod capture;
mod incremental;
pub mod logical;
pub mod mark;
pub mod pass;
pub mod read;
pub mod window;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use apply::Deletes;
pub use incremental::catch_up;
use pass::Ends;
pub use pass::Moved;
use read::{orderable_key, SyncTable};

use crate::db::{quote_ident, ConnectOptions};
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::migrate::rows::{scan, CopyTable};
use crate::migrate::state::without_password;
use crate::migrate::value::TableChecksum;
use crate::migrate::{Conn, Db};
use crate::observe::{Event, Failed, RunContext, RunResult, Status};

/// How a pass finds what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capture {
    /// By the `cursor` column where a table has it, else by key and checksum.
    #[default]
    Cursor,
    /// By key and row checksum: both sides read in key order every pass.
    Checksum,
    /// SQLite sources: the `_ferry_changes` log kept by triggers (installed on the first pass).
    Triggers,
    /// PostgreSQL sources: logical replication (`pgoutput`) where the server has `wal_level = logical`,
    /// else as `cursor`.
    Logical,
}

/// One sync, as plain data (`{"job": "sync", "from": "app.db", "to": "postgres", …}`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncJob {
    /// The source database.
    pub from: String,
    /// The target database: its tables exist (made by `ferry migrate`, or `--schema-only`).
    pub to: String,
    /// Only these tables (empty: all of the source's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Not these tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// How changes are found.
    pub capture: Capture,
    /// The cursor column (`updated_at`, a version number, …), used by tables that have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// What happens to target rows whose key has gone from the source.
    pub deletes: Deletes,
    /// Seconds between passes; `None`: one pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<f64>,
    /// Stop at the first pass that finds nothing behind and compare both sides.
    pub cutover: bool,
    /// Stop after this many passes (0: no limit).
    pub passes: u64,
    /// `--cast-rules`, as the migration used them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cast_rules: Option<PathBuf>,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
    /// Tables compared at once by cursor or checksum, each worker with its own connection to each side
    /// and its own target transaction (a PostgreSQL target; a SQLite target takes one writer).
    pub jobs: usize,
}

impl Default for SyncJob {
    fn default() -> SyncJob {
        SyncJob {
            from: String::new(),
            to: String::new(),
            tables: Vec::new(),
            exclude: Vec::new(),
            capture: Capture::Cursor,
            cursor: None,
            deletes: Deletes::Delete,
            every: None,
            cutover: false,
            passes: 0,
            cast_rules: None,
            connect: ConnectOptions::default(),
            jobs: 1,
        }
    }
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field("from", &without_password(&self.from))
            .field("to", &without_password(&self.to))
            .field("tables", &self.tables)
            .field("capture", &self.capture)
            .field("cursor", &self.cursor)
            .field("deletes", &self.deletes)
            .field("every", &self.every)
            .field("cutover", &self.cutover)
            .finish_non_exhaustive()
    }
}

/// One table's totals over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSync {
    /// The table.
    pub table: String,
    /// How its changes were found: `cursor`, `checksum` or `triggers`.
    pub by: String,
    /// Totals over every pass.
    #[serde(flatten)]
    pub moved: Moved,
}

/// Both sides of a table at the cut-over.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CutoverTable {
    /// The table.
    pub table: String,
    /// Rows in the source.
    pub source_rows: u64,
    /// Rows in the target.
    pub target_rows: u64,
    /// The source's checksum (the order-independent sum of `ferry migrate --validate`).
    pub source_checksum: String,
    /// The target's checksum.
    pub target_checksum: String,
    /// Rows and checksums agree.
    pub equal: bool,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// The ferry that ran it.
    pub ferry_version: String,
    /// The source, without a password.
    pub source: String,
    /// The target, without a password.
    pub target: String,
    /// How it ended.
    pub status: Status,
    /// Passes committed.
    pub passes: u64,
    /// Rows the last pass found behind (written and deleted).
    pub lag_rows: u64,
    /// Seconds between the last committed pass's snapshot and its commit.
    pub lag_seconds: f64,
    /// Per table, over all passes.
    pub tables: Vec<TableSync>,
    /// `--cutover`: both sides, table by table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover: Option<Vec<CutoverTable>>,
    /// Errors (one sentence each).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Seconds the run took.
    pub seconds: f64,
}

impl SyncReport {
    /// The summary lines `ferry sync` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out.push_str(&format!(
                "  {:<28} by {:<8} {:>8} read, {} inserted, {} updated, {} unchanged, {} deleted\n",
                quote_ident(&t.table),
                t.by,
                t.moved.read,
                t.moved.inserted,
                t.moved.updated,
                t.moved.unchanged,
                t.moved.deleted
            ));
        }
        if let Some(c) = &self.cutover {
            for t in c {
                out.push_str(&format!(
                    "  cut-over {:<20} {} rows / {} rows, checksum {} / {} {}\n",
                    quote_ident(&t.table),
                    t.source_rows,
                    t.target_rows,
                    t.source_checksum,
                    t.target_checksum,
                    if t.equal { "equal" } else { "DIFFERENT" }
                ));
            }
        }
        out.push_str(&format!(
            "{} pass(es); lag {} rows, {:.3} s\n",
            self.passes, self.lag_rows, self.lag_seconds
        ));
        out
    }
}

/// Runs a sync; the report comes back whether it succeeded or failed.
pub fn sync(job: &SyncJob, env: &Environment, ctx: &RunContext) -> RunResult<SyncReport> {
    let started = Instant::now();
    let mut report = SyncReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: without_password(&job.from),
        target: without_password(&job.to),
        ..SyncReport::default()
    };
    let result = Syncer::open(job, env, ctx).and_then(|mut s| s.run(&mut report));
    report.seconds = started.elapsed().as_secs_f64();
    report.status = match &result {
        Ok(()) => Status::Succeeded,
        Err(e) if e.is_cancelled() => Status::Cancelled,
        Err(_) => Status::Failed,
    };
    if let Err(e) = &result {
        report.errors.push(e.to_string());
    }
    match result {
        Ok(()) => Ok(report),
        Err(error) => Err(Box::new(Failed { report, error })),
    }
}

/// Removes the change-capture triggers and log from a SQLite source, and the marks they kept from the
/// target (`ferry sync --uninstall`); returns the triggers dropped.
pub fn uninstall(
    from: &str,
    to: Option<&str>,
    env: &Environment,
    connect: &ConnectOptions,
) -> Result<usize> {
    let source = Db::parse(from, "--from", env)?;
    let target = to.map(|t| Db::parse(t, "--to", env)).transpose()?;
    let label = source.label();
    let n = match &source {
        Db::Sqlite(path) => capture::uninstall(&capture::open_writer(path)?, &label)?,
        Db::Postgres(_) => {
            let Some(target) = &target else {
                return Err(Error::config(
                    "--uninstall of a PostgreSQL source needs --to: its replication slot is named after both",
                ));
            };
            let Conn::Postgres(mut client) = source.open(connect, false)? else {
                return Ok(0);
            };
            let names = logical::Slot::named(&label, &target.label());
            usize::from(logical::uninstall(&mut client, &names)?)
        }
    };
    if let Some(target) = &target {
        let mut target = target.open(connect, true)?;
        mark::ensure(&mut target)?;
        mark::forget(&mut target, &label)?;
    }
    Ok(n)
}

/// An open sync: both connections and the tables as planned from the source.
struct Syncer<'a> {
    job: &'a SyncJob,
    ctx: &'a RunContext,
    source_db: Db,
    target_db: Db,
    source: Conn,
    target: Conn,
    source_label: String,
    target_label: String,
    tables: Vec<SyncTable>,
    crash_at: Option<String>,
    /// How changes are found (the job's, or `cursor` where logical replication is not available).
    capture: Capture,
    /// Logical replication: the slot, and what the pass under way peeked.
    slot: Option<logical::Slot>,
    peeked: Option<logical::Peeked>,
}

impl<'a> Syncer<'a> {
    fn open(job: &'a SyncJob, env: &Environment, ctx: &'a RunContext) -> Result<Syncer<'a>> {
        let source_db = Db::parse(&job.from, "--from", env)?;
        let target_db = Db::parse(&job.to, "--to", env)?;
        if job.capture == Capture::Triggers && !matches!(source_db, Db::Sqlite(_)) {
            return Err(Error::config(
                "--capture triggers is for SQLite sources; a PostgreSQL source syncs by --cursor or checksum",
            ));
        }
        if matches!(target_db, Db::Sqlite(ref p) if !p.exists()) {
            return Err(Error::config(format!(
                "--to {}: no such database; make its tables first (ferry migrate, or --schema-only)",
                target_db.label()
            )));
        }
        let (source_label, target_label) = (source_db.label(), target_db.label());
        let mut source = source_db.open(&job.connect, false)?;
        if let Conn::Sqlite(c) = &source {
            // A writer committing must not fail the pass's read: wait for it.
            let _ = c.busy_timeout(Duration::from_secs(30));
        }
        ctx.emit(Event::Started {
            kind: crate::observe::RunKind::Migrate,
            input: source_label.clone(),
            output: target_label.clone(),
            total_bytes: None,
        });
        ctx.step("plan");
        let rules = crate::migrate::load_rules(job.cast_rules.as_ref())?;
        // ferry's own tables (a change log, marks of a sync that reads this database) are not synced.
        let mut exclude = job.exclude.clone();
        let own = [capture::CHANGES.to_owned(), mark::STATE_TABLE.to_owned()];
        exclude.extend(source.existing_tables(&own)?);
        let plan = crate::migrate::build_plan(
            &mut source,
            &source_label,
            &rules,
            &job.tables,
            &exclude,
            1,
        )?;
        let mut tables = Vec::new();
        let mut problems = Vec::new();
        for planned in &plan.tables {
            let copy = CopyTable::from_plan(planned);
            let key: Vec<usize> = planned
                .primary_key
                .iter()
                .filter_map(|k| copy.columns.iter().position(|(c, _)| c == k))
                .collect();
            if key.is_empty() || key.len() != planned.primary_key.len() {
                problems.push(format!("{} has no primary key", quote_ident(&planned.name)));
                continue;
            }
            if let Some(i) = key.iter().find(|&&i| !orderable_key(&copy.columns[i].1)) {
                problems.push(format!(
                    "{} has a key column {} of type {} (sync reads keys in order: integer or text keys)",
                    quote_ident(&planned.name),
                    quote_ident(&copy.columns[*i].0),
                    copy.columns[*i].1.sql()
                ));
                continue;
            }
            let cursor = job
                .cursor
                .as_ref()
                .and_then(|c| copy.columns.iter().position(|(n, _)| n == c));
            tables.push(SyncTable { copy, key, cursor });
        }
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "sync matches rows by key, and {}; leave such tables out with --exclude",
                problems.join(", ")
            )));
        }
        let mut target = target_db.open(&job.connect, true)?;
        let names: Vec<String> = tables.iter().map(|t| t.name().to_owned()).collect();
        let existing = target.existing_tables(&names)?;
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !existing.contains(n))
            .map(|n| quote_ident(n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "{target_label} has no table {}; make the target's tables first (ferry migrate, or --schema-only)",
                missing.join(", ")
            )));
        }
        mark::ensure(&mut target)?;
        let mut capture = job.capture;
        let mut slot = None;
        if capture == Capture::Logical {
            let decodes = match &mut source {
                Conn::Postgres(client) => logical::available(client)?,
                Conn::Sqlite(_) => false,
            };
            match decodes {
                true => slot = Some(logical::Slot::named(&source_label, &target_label)),
                false => {
                    ctx.notice(format!(
                        "{source_label} has no logical decoding (wal_level = logical, PostgreSQL): syncing by cursor and checksum"
                    ));
                    capture = Capture::Cursor;
                }
            }
        }
        Ok(Syncer {
            capture,
            slot,
            peeked: None,
            job,
            ctx,
            source_db,
            target_db,
            source,
            target,
            source_label,
            target_label,
            tables,
            crash_at: env.get("FERRY_CRASH_AT").map(str::to_owned),
        })
    }

    /// Passes until done: one; `passes`; every `every` seconds until cancelled; or until nothing is behind
    /// (`cutover`).
    fn run(&mut self, report: &mut SyncReport) -> Result<()> {
        report.tables = self
            .tables
            .iter()
            .map(|t| TableSync {
                table: t.name().to_owned(),
                by: self.by(t).to_owned(),
                ..TableSync::default()
            })
            .collect();
        if self.capture == Capture::Triggers {
            if let Db::Sqlite(path) = &self.source_db {
                capture::install(
                    &capture::open_writer(path)?,
                    &self.source_label,
                    &self.tables,
                )?;
            }
        }
        if let (Some(slot), Conn::Postgres(client)) = (&self.slot, &mut self.source) {
            logical::install(client, slot, &self.tables)?;
        }
        self.ctx.step("sync");
        loop {
            self.ctx.cancel.check()?;
            let started = Instant::now();
            let moved = self.pass()?;
            report.passes += 1;
            report.lag_rows = moved.iter().map(Moved::behind).sum();
            report.lag_seconds = started.elapsed().as_secs_f64();
            for (total, m) in report.tables.iter_mut().zip(&moved) {
                add(&mut total.moved, m);
            }
            self.ctx.emit(Event::Notice {
                message: format!(
                    "pass {}: lag {} rows, {:.3} s",
                    report.passes, report.lag_rows, report.lag_seconds
                ),
            });
            self.emit_progress(report);
            let done = match (self.job.cutover, self.job.every) {
                _ if self.job.passes > 0 && report.passes >= self.job.passes => true,
                (true, _) => report.lag_rows == 0,
                (false, None) => true,
                (false, Some(_)) => false,
            };
            if done {
                break;
            }
            self.wait()?;
        }
        if self.job.cutover {
            self.ctx.step("cutover");
            let tables = self.compare()?;
            let different: Vec<String> = tables
                .iter()
                .filter(|t| !t.equal)
                .map(|t| quote_ident(&t.table))
                .collect();
            report.cutover = Some(tables);
            if !different.is_empty() {
                return Err(Error::verdict(format!(
                    "cut-over: {} differ between source and target",
                    different.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn emit_progress(&self, report: &SyncReport) {
        let mut counts = crate::report::Counts::default();
        for t in &report.tables {
            counts.read += t.moved.read;
            counts.written += t.moved.inserted + t.moved.updated;
            counts.skipped += t.moved.unchanged;
        }
        self.ctx.emit(Event::Lag {
            pass: report.passes,
            rows: report.lag_rows,
            seconds: report.lag_seconds,
            counts,
        });
    }

    /// Sleeps `every` seconds, waking to see whether the run was cancelled.
    fn wait(&self) -> Result<()> {
        let until =
            Instant::now() + Duration::from_secs_f64(self.job.every.unwrap_or(0.0).max(0.0));
        while Instant::now() < until {
            self.ctx.cancel.check()?;
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        Ok(())
    }

    fn by(&self, t: &SyncTable) -> &'static str {
        match self.capture {
            Capture::Triggers => "triggers",
            Capture::Logical => "logical",
            Capture::Checksum => "checksum",
            Capture::Cursor if t.cursor.is_some() => "cursor",
            Capture::Cursor => "checksum",
        }
    }

    /// A test hook: `FERRY_CRASH_AT=sync-loaded` stops the process after a pass loaded its rows and
    /// before its commit (with the marks), as `kill -9` would.
    fn crash_point(&self, point: &str) {
        if self.crash_at.as_deref() == Some(point) {
            std::process::exit(137);
        }
    }

    /// One pass over every table: one source snapshot, one target transaction — or, with `jobs` workers
    /// (cursor and checksum capture into PostgreSQL), one of each per worker.
    fn pass(&mut self) -> Result<Vec<Moved>> {
        let workers = self.job.jobs.min(self.tables.len());
        let parallel = matches!(self.capture, Capture::Cursor | Capture::Checksum)
            && matches!(self.target_db, Db::Postgres(_));
        if parallel && workers > 1 {
            return self.pass_parallel(workers);
        }
        if let (Some(slot), Conn::Postgres(client)) = (&self.slot, &mut self.source) {
            // Peeked before the snapshot: every change peeked is visible to it.
            let started = mark::read(&mut self.target, &self.source_label, &slot.slot)?.is_some();
            self.peeked = match started {
                true => Some(logical::peek(client, slot, &self.tables)?),
                false => None,
            };
        }
        snapshot(&mut self.source, &self.source_label)?;
        self.target
            .begin()
            .map_err(|r| r.error(&self.target_label, "BEGIN"))?;
        let result = self.pass_tables();
        match result {
            Ok((moved, trim)) => {
                self.crash_point("sync-loaded");
                let committed = self.target.exec("COMMIT");
                self.source.rollback();
                committed.map_err(|r| r.error(&self.target_label, "COMMIT"))?;
                if let (Some(upto), Db::Sqlite(path)) = (trim, &self.source_db) {
                    capture::trim(&capture::open_writer(path)?, &self.source_label, upto)?;
                }
                let upto = self.peeked.take().and_then(|p| p.upto);
                if let (Some(slot), Some(upto), Conn::Postgres(client)) =
                    (&self.slot, upto, &mut self.source)
                {
                    logical::advance(client, slot, &upto)?;
                }
                Ok(moved)
            }
            Err(e) => {
                self.target.rollback();
                self.source.rollback();
                Err(e)
            }
        }
    }

    /// Runs `one` for every table, with the pass's endpoints, checking for cancellation between tables.
    fn each_table(
        &mut self,
        mut one: impl FnMut(&mut Ends<'_>, &SyncTable, usize) -> Result<Moved>,
    ) -> Result<Vec<Moved>> {
        let mut out = Vec::with_capacity(self.tables.len());
        for (slot, table) in self.tables.iter().enumerate() {
            self.ctx.cancel.check()?;
            let mut ends = Ends {
                source: &mut self.source,
                target: &mut self.target,
                source_label: &self.source_label,
                target_label: &self.target_label,
            };
            out.push(one(&mut ends, table, slot)?);
        }
        Ok(out)
    }

    /// The tables of a pass; also the change-log position to trim to once it committed.
    fn pass_tables(&mut self) -> Result<(Vec<Moved>, Option<i64>)> {
        if self.capture == Capture::Triggers {
            return self.pass_triggers();
        }
        if self.capture == Capture::Logical {
            return self.pass_logical();
        }
        let (capture, deletes) = (self.capture, self.job.deletes.clone());
        let out =
            self.each_table(|ends, table, slot| one_table(ends, table, slot, capture, &deletes))?;
        Ok((out, None))
    }

    /// A pass by cursor or checksum with `workers` threads: each opens both sides, takes the next table
    /// until none is left, and commits its own target transaction (each table's rows with its mark). A
    /// failed worker's tables roll back; the others' stay committed, and the next pass finds the rest.
    fn pass_parallel(&mut self, workers: usize) -> Result<Vec<Moved>> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: std::sync::Mutex<Vec<Option<Moved>>> =
            std::sync::Mutex::new(vec![None; self.tables.len()]);
        let (capture, deletes) = (self.capture, self.job.deletes.clone());
        let worker = || -> Result<()> {
            let mut source = self.source_db.open(&self.job.connect, false)?;
            let mut target = self.target_db.open(&self.job.connect, true)?;
            snapshot(&mut source, &self.source_label)?;
            target
                .begin()
                .map_err(|r| r.error(&self.target_label, "BEGIN"))?;
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(table) = self.tables.get(i) else {
                    break;
                };
                self.ctx.cancel.check()?;
                let mut ends = Ends {
                    source: &mut source,
                    target: &mut target,
                    source_label: &self.source_label,
                    target_label: &self.target_label,
                };
                mine.push((i, one_table(&mut ends, table, i, capture, &deletes)?));
            }
            if self.crash_at.as_deref() == Some("sync-loaded") {
                std::process::exit(137);
            }
            target
                .exec("COMMIT")
                .map_err(|r| r.error(&self.target_label, "COMMIT"))?;
            source.rollback();
            let mut slots = done
                .lock()
                .map_err(|_| Error::config("a sync worker panicked"))?;
            for (i, moved) in mine {
                slots[i] = Some(moved);
            }
            Ok(())
        };
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::config("a sync worker panicked")))
                })
                .collect()
        });
        results.into_iter().collect::<Result<Vec<()>>>()?;
        let slots = done
            .into_inner()
            .map_err(|_| Error::config("a sync worker panicked"))?;
        Ok(slots.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// A pass by change log: the first one compares whole tables (the log starts with the triggers); later
    /// ones apply the keys the log names after the mark.
    fn pass_triggers(&mut self) -> Result<(Vec<Moved>, Option<i64>)> {
        let Conn::Sqlite(c) = &self.source else {
            return Err(Error::config("--capture triggers needs a SQLite source"));
        };
        let old = mark::read(&mut self.target, &self.source_label, capture::CHANGES)?;
        let (upto, keys) = match old.as_ref().and_then(serde_json::Value::as_i64) {
            None => (capture::newest(c, &self.source_label)?, None),
            Some(from) => {
                let (upto, keys) =
                    capture::changes_after(c, &self.source_label, from, &self.tables)?;
                (upto, Some(keys))
            }
        };
        let out = self.each_table(|ends, table, slot| match &keys {
            None => pass::by_merge(ends, table, slot, Deletes::Delete, false),
            Some(keys) => match keys.get(table.name()) {
                Some(k) => pass::by_keys(ends, table, slot, k),
                None => Ok(Moved::default()),
            },
        })?;
        mark::write(
            &mut self.target,
            &self.source_label,
            capture::CHANGES,
            &upto.into(),
        )?;
        Ok((out, Some(upto)))
    }

    /// A pass by logical replication: the first one compares whole tables (the slot was made before its
    /// snapshot); later ones apply the keys the slot's changes name (tables truncated are compared whole).
    fn pass_logical(&mut self) -> Result<(Vec<Moved>, Option<i64>)> {
        let Some(slot) = self.slot.clone() else {
            return Err(Error::config("--capture logical needs a PostgreSQL source"));
        };
        let peeked = self.peeked.take();
        let out = self.each_table(|ends, table, slot| match &peeked {
            Some(p) if !p.truncated.contains(table.name()) => match p.keys.get(table.name()) {
                Some(k) => pass::by_keys(ends, table, slot, k),
                None => Ok(Moved::default()),
            },
            _ => pass::by_merge(ends, table, slot, Deletes::Delete, false),
        })?;
        let at = peeked
            .as_ref()
            .and_then(|p| p.upto.clone())
            .unwrap_or_else(|| String::from("started"));
        mark::write(&mut self.target, &self.source_label, &slot.slot, &at.into())?;
        self.peeked = peeked;
        Ok((out, None))
    }

    /// Rows and checksums of both sides, table by table (the cut-over's evidence).
    fn compare(&mut self) -> Result<Vec<CutoverTable>> {
        let mut out = Vec::new();
        for t in &self.tables {
            let mut sums = [TableChecksum::default(), TableChecksum::default()];
            for (i, (conn, label)) in [
                (&mut self.source, &self.source_label),
                (&mut self.target, &self.target_label),
            ]
            .into_iter()
            .enumerate()
            {
                let sum = &mut sums[i];
                scan(&mut conn.side(), label, &t.copy, &mut |row| {
                    match row {
                        Ok(values) => sum.add(&values),
                        Err(m) => sum.add(&[crate::migrate::value::Datum::Text(format!(
                            "unreadable: {}",
                            m.value
                        ))]),
                    }
                    Ok(true)
                })?;
            }
            out.push(CutoverTable {
                table: t.name().to_owned(),
                source_rows: sums[0].rows,
                target_rows: sums[1].rows,
                source_checksum: sums[0].hex(),
                target_checksum: sums[1].hex(),
                equal: sums[0] == sums[1],
            });
        }
        Ok(out)
    }
}

/// Starts a read snapshot of the source: one read transaction (SQLite), `REPEATABLE READ` (PostgreSQL).
fn snapshot(source: &mut Conn, label: &str) -> Result<()> {
    let sql = match source {
        Conn::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        Conn::Sqlite(_) => "BEGIN",
    };
    source
        .exec(sql)
        .map_err(|r| r.error(label, "starting a snapshot"))?;
    if let Conn::Sqlite(c) = source {
        // A deferred BEGIN takes its snapshot at the first read.
        let _ = c.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()));
    }
    Ok(())
}

/// One table of a pass by cursor (where it has the column) or by key and checksum; a cursor pass also
/// looks for deleted keys and stores the new mark in the target's transaction.
fn one_table(
    ends: &mut Ends<'_>,
    table: &SyncTable,
    slot: usize,
    capture: Capture,
    deletes: &Deletes,
) -> Result<Moved> {
    if capture != Capture::Cursor || table.cursor.is_none() {
        return pass::by_merge(ends, table, slot, deletes.clone(), false);
    }
    let source = ends.source_label;
    let old = mark::read(ends.target, source, table.name())?;
    let mut moved = pass::by_cursor(ends, table, slot, old.as_ref(), deletes.clone())?;
    if old.is_some() && *deletes != Deletes::Ignore {
        let gone = pass::by_merge(ends, table, slot, deletes.clone(), true)?;
        moved.deleted += gone.deleted;
        moved.listed.extend(gone.listed);
    }
    if let Some(m) = &moved.mark {
        mark::write(ends.target, source, table.name(), m)?;
    }
    Ok(moved)
}

fn add(total: &mut Moved, m: &Moved) {
    total.read += m.read;
    total.inserted += m.inserted;
    total.updated += m.updated;
    total.unchanged += m.unchanged;
    total.at_mark += m.at_mark;
    total.deleted += m.deleted;
    if total.listed.len() < 20 {
        total
            .listed
            .extend(m.listed.iter().take(20 - total.listed.len()).cloned());
    }
    if m.mark.is_some() {
        total.mark = m.mark.clone();
    }
}
