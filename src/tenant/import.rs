//! `ferry import user123.bundle.json --to postgres://…`: the import job as plain data ([`ImportJob`],
//! checked whole by [`ImportJob::build`]) and its run. The bundle is read twice: first whole, to verify its
//! checksum and counts before the target is touched (and to collect the keys `--remap-keys` replaces);
//! then again to load it, every table in dependency order, in one transaction that also creates the
//! tables the target lacks (migrate's type table and DDL), checks every foreign key, optionally reads the
//! tenant's rows back, and commits — or rolls back, leaving the target as it was. A new SQLite file is
//! written under a temporary name and renamed into place only after the commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bundle::{self, row_of, BundleHead, BundleTable, Event, Source};
use super::graph::{Identity, Node};
use super::keys::{Key, KeyVal};
use super::load::{Load, Target};
use super::query::Reader;
use crate::db::{quote_ident, ConnectOptions, OnConflict};
use crate::env::Environment;
use crate::envelope::{KeySource, DEFAULT_MAX_DECOMPRESSED};
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::plan::{Plan, PlanColumn, PlanForeignKey, PlanTable};
use crate::migrate::rows::CopyTable;
use crate::migrate::state::without_password;
use crate::migrate::value::{Datum, TableChecksum};
use crate::migrate::{CastRules, Conn, Db, PgType, Translation};
use crate::observe::{Event as RunEvent, Failed, Progress, RunContext, RunKind, RunResult, Status};
use crate::paths::RunPaths;
use crate::report::{Counts, ReportedError, MAX_REPORTED_ERRORS};

/// One bundle's import, as plain data: `{"job": "import", "bundle": "user123.bundle.json.gz", "to":
/// "postgres", "on_conflict": "skip", …}` in a job file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportJob {
    /// The bundle file, or a split set's manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// The target database; a job file shows it without its password.
    #[serde(
        serialize_with = "super::url_without_password",
        skip_serializing_if = "Option::is_none"
    )]
    pub to: Option<String>,
    /// The key of an encrypted bundle (a file or variable name): default `FERRY_KEY`, then
    /// `EXPORT_ENCRYPTION_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySource>,
    /// What a row whose key is already there does (reference rows are always skipped).
    pub on_conflict: OnConflict,
    /// Give database-generated keys new values on the target and rewrite every reference to them.
    pub remap_keys: bool,
    /// Create the tables the target lacks (off: every table must exist).
    pub create_tables: bool,
    /// Everything, then roll back.
    pub dry_run: bool,
    /// Read the tenant's own rows back before committing and compare counts and checksums.
    pub validate: bool,
    /// Decompressed bytes allowed.
    pub max_decompressed_size: u64,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
    /// Where the front end writes the JSON report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

impl Default for ImportJob {
    fn default() -> ImportJob {
        ImportJob {
            bundle: None,
            to: None,
            key: None,
            on_conflict: OnConflict::Error,
            remap_keys: false,
            create_tables: true,
            dry_run: false,
            validate: false,
            max_decompressed_size: DEFAULT_MAX_DECOMPRESSED,
            connect: ConnectOptions::default(),
            report: None,
        }
    }
}

impl std::fmt::Debug for ImportJob {
    /// The job as a job file shows it: no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "ImportJob {text}")
    }
}

/// One table of an import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportTable {
    /// The table.
    pub name: String,
    /// Rows read from the bundle, and where they went (`written` = inserted + updated).
    #[serde(flatten)]
    pub counts: Counts,
    /// New rows.
    pub inserted: u64,
    /// Rows updated (`overwrite`, `merge`).
    pub updated: u64,
    /// Created by this import.
    pub created: bool,
    /// Keys given new values (`--remap-keys`).
    pub remapped: u64,
    /// The tenant's own rows read back equal (None: not validated).
    pub equal: Option<bool>,
}

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// ferry's version.
    pub ferry_version: String,
    /// How the run ended.
    pub status: Status,
    /// The bundle.
    pub bundle: String,
    /// The target (no password).
    pub target: String,
    /// The tenant, as the bundle names it.
    pub tenant: String,
    /// The root row's key in the bundle.
    pub user_id: String,
    /// The root row's key on the target (differs with `--remap-keys`).
    pub target_user_id: String,
    /// The bundle's checksum, verified before anything was written.
    pub checksum: Option<String>,
    /// Everything was rolled back at the end.
    pub dry_run: bool,
    /// `--on-conflict`.
    pub on_conflict: String,
    /// Per table, in the order loaded.
    pub tables: Vec<ImportTable>,
    /// Rows over all tables.
    #[serde(flatten)]
    pub counts: Counts,
    /// Every table validated equal (None: not validated).
    pub valid: Option<bool>,
    /// Seconds.
    pub seconds: f64,
    /// What stopped a failed run.
    pub errors: Vec<ReportedError>,
}

impl ImportReport {
    fn push_error(&mut self, e: &Error) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ReportedError::from(e));
        }
    }

    /// The closing lines `ferry import` prints.
    pub fn summary(&self) -> String {
        let verb = match (self.status, self.dry_run) {
            (Status::Failed | Status::Cancelled, _) => "import stopped, nothing was written:",
            (_, true) => "would import",
            _ => "imported",
        };
        let c = &self.counts;
        let mut out = format!(
            "{verb} {} ({} → {}) into {}: {} rows read = {} written ({} inserted, {} updated) + {} skipped",
            self.tenant,
            self.user_id,
            self.target_user_id,
            self.target,
            c.read,
            c.written,
            self.tables.iter().map(|t| t.inserted).sum::<u64>(),
            self.tables.iter().map(|t| t.updated).sum::<u64>(),
            c.skipped
        );
        let created: Vec<&str> = self
            .tables
            .iter()
            .filter(|t| t.created)
            .map(|t| t.name.as_str())
            .collect();
        if !created.is_empty() {
            out.push_str(&format!("\ncreated tables: {}", created.join(", ")));
        }
        match self.valid {
            Some(true) => out
                .push_str("\nvalidation: the tenant's rows read back equal (counts and checksums)"),
            Some(false) => out.push_str("\nvalidation FAILED: the rows read back differ"),
            None => {}
        }
        out
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        super::export::write_json(self, path)
    }

    fn add_up(&mut self) {
        self.counts = Counts::default();
        for t in &self.tables {
            self.counts.add(&t.counts);
        }
    }
}

/// An import checked against its environment, ready to run.
#[derive(Debug)]
pub struct BuiltImport {
    pub(crate) job: ImportJob,
    pub(crate) bundle: PathBuf,
    pub(crate) db: Db,
    pub(crate) key: crate::envelope::layers::InputKey,
    pub(crate) crash_at: Option<String>,
}

impl ImportJob {
    /// The import of `bundle` into `to`, everything else as `ferry import` defaults it.
    pub fn new(bundle: impl Into<PathBuf>, to: impl Into<String>) -> ImportJob {
        ImportJob {
            bundle: Some(bundle.into()),
            to: Some(to.into()),
            ..ImportJob::default()
        }
    }

    /// Checks the job before anything is touched.
    pub fn build(&self, env: &Environment) -> Result<BuiltImport> {
        let bundle = self.bundle.clone().ok_or_else(|| {
            Error::config("ferry import needs a bundle (BUNDLE, or `bundle` in a job file)")
        })?;
        let to = self
            .to
            .as_deref()
            .ok_or_else(|| Error::config("ferry import needs --to DATABASE"))?;
        let db = Db::parse(to, "--to", env)?;
        if !bundle.exists() {
            return Err(Error::config(format!(
                "the bundle {} does not exist",
                bundle.display()
            )));
        }
        if self.remap_keys && matches!(self.on_conflict, OnConflict::Overwrite | OnConflict::Merge)
        {
            return Err(Error::config(
                "--remap-keys gives every imported row a new key, so none can overwrite or merge into a row \
                 already there: use --on-conflict error or skip with it",
            ));
        }
        let mut paths = RunPaths::new();
        paths.read("BUNDLE", &bundle);
        if let Some(report) = &self.report {
            paths.write("--report", report);
        }
        if let Db::Sqlite(file) = &db {
            paths.database("--to", file);
        }
        let key = super::key_source(self.key.as_ref(), env);
        match &key {
            Some(KeySource::KeyFile(file)) => {
                paths.read("--key-file", file);
            }
            Some(KeySource::PassphraseFile(file)) => {
                paths.read("--passphrase-file", file);
            }
            _ => {}
        }
        paths.check()?;
        let key = crate::envelope::layers::InputKey::resolve(self.key.as_ref(), env)?;
        Ok(BuiltImport {
            job: self.clone(),
            bundle,
            db,
            key,
            crash_at: env.get("FERRY_CRASH_AT").map(str::to_owned),
        })
    }
}

/// Runs an import job (builds it against `env`, then runs it); the report comes back either way.
pub fn import(job: &ImportJob, env: &Environment, ctx: &RunContext) -> RunResult<ImportReport> {
    match job.build(env) {
        Ok(built) => built.run(ctx),
        Err(error) => {
            let mut report = ImportReport::begin(job);
            finish(&mut report, Instant::now(), Some(&error), ctx);
            Err(Box::new(Failed { report, error }))
        }
    }
}

impl ImportReport {
    fn begin(job: &ImportJob) -> ImportReport {
        ImportReport {
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            bundle: job
                .bundle
                .as_ref()
                .map(|b| b.display().to_string())
                .unwrap_or_default(),
            target: job.to.as_deref().map(without_password).unwrap_or_default(),
            dry_run: job.dry_run,
            on_conflict: job.on_conflict.name().to_owned(),
            ..ImportReport::default()
        }
    }
}

fn finish(report: &mut ImportReport, started: Instant, error: Option<&Error>, ctx: &RunContext) {
    report.add_up();
    report.seconds = started.elapsed().as_secs_f64();
    report.status = match error {
        None => Status::Succeeded,
        Some(e) if e.is_cancelled() => Status::Cancelled,
        Some(_) => Status::Failed,
    };
    if let Some(e) = error {
        report.push_error(e);
    }
    ctx.emit(RunEvent::Finished {
        status: report.status,
        progress: Progress {
            counts: report.counts,
            seconds: report.seconds,
            ..Progress::default()
        },
    });
}

/// A new SQLite target: written under a temporary name in its folder, renamed into place after the commit.
struct NewFile {
    temp: tempfile::TempPath,
    target: PathBuf,
    _registration: crate::interrupt::Registration,
}

/// The target of imports, kept open across tenants: its connection, and its schema once read (`ferry
/// migrate --tenant users:all` reads the catalog once per worker, not once per tenant).
pub(crate) struct TargetSession {
    conn: Conn,
    schema: Option<Plan>,
}

impl BuiltImport {
    /// Runs the checked import; the report comes back either way.
    pub fn run(self, ctx: &RunContext) -> RunResult<ImportReport> {
        self.run_with(None, ctx)
    }

    /// Opens the target for [`BuiltImport::run_in`]; `None` when it is a SQLite file that does not exist
    /// yet (its first import makes it under a temporary name, so it needs a run of its own).
    pub(crate) fn open_session(&self) -> Result<Option<TargetSession>> {
        if matches!(&self.db, Db::Sqlite(path) if !path.exists()) {
            return Ok(None);
        }
        Ok(Some(TargetSession {
            conn: self.db.open(&self.job.connect, true)?,
            schema: None,
        }))
    }

    /// Runs the checked import on an open session.
    pub(crate) fn run_in(
        self,
        session: &mut TargetSession,
        ctx: &RunContext,
    ) -> RunResult<ImportReport> {
        self.run_with(Some(session), ctx)
    }

    fn run_with(
        self,
        session: Option<&mut TargetSession>,
        ctx: &RunContext,
    ) -> RunResult<ImportReport> {
        let started = Instant::now();
        let mut report = ImportReport::begin(&self.job);
        report.target = self.db.label();
        let result = self.execute(session, ctx, &mut report);
        finish(&mut report, started, result.as_ref().err(), ctx);
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(Box::new(Failed { report, error })),
        }
    }

    fn source(&self) -> Source<'_> {
        Source {
            path: &self.bundle,
            key: &self.key,
            max_decompressed: self.job.max_decompressed_size,
        }
    }

    fn execute(
        &self,
        session: Option<&mut TargetSession>,
        ctx: &RunContext,
        report: &mut ImportReport,
    ) -> Result<()> {
        let label = self.db.label();
        ctx.emit(RunEvent::Started {
            kind: RunKind::Import,
            input: self.bundle.display().to_string(),
            output: label.clone(),
            total_bytes: None,
        });
        ctx.step("verify");
        let mut remap_columns: Option<Vec<Option<usize>>> = None;
        let mut old_keys: HashMap<usize, Vec<i64>> = HashMap::new();
        let remap = self.job.remap_keys;
        let verified = super::verify(&self.source(), &mut |head, index, row| {
            if !remap {
                return;
            }
            let columns = remap_columns
                .get_or_insert_with(|| head.tables.iter().map(generated_position).collect());
            if let Some(Datum::Int(old)) = columns
                .get(index)
                .copied()
                .flatten()
                .and_then(|at| row.get(at))
            {
                old_keys.entry(index).or_default().push(*old);
            }
        })?;
        let head = verified.head;
        report.tenant = head.tenant.clone();
        report.user_id = head.user_id.clone();
        report.target_user_id = head.user_id.clone();
        report.checksum = Some(verified.meta.checksum.clone());
        report.tables = head
            .tables
            .iter()
            .map(|t| ImportTable {
                name: t.name.clone(),
                counts: Counts {
                    read: t.records,
                    ..Counts::default()
                },
                ..ImportTable::default()
            })
            .collect();
        ctx.notice(format!(
            "{}: verified, {} rows in {} tables, checksum {}",
            self.bundle.display(),
            verified.meta.total_records,
            head.tables.len(),
            verified.meta.checksum
        ));
        ctx.cancel.check()?;
        let mut own;
        let mut new_file = None;
        let session = match session {
            Some(session) => session,
            None => {
                let (db, file) = self.target_db()?;
                new_file = file;
                own = TargetSession {
                    conn: db.open(&self.job.connect, true)?,
                    schema: None,
                };
                &mut own
            }
        };
        let TargetSession { conn, schema } = session;
        conn.begin().map_err(|r| r.error(&label, "BEGIN"))?;
        let outcome = self.load(conn, schema, &head, &old_keys, &label, report, ctx);
        let outcome = outcome.and_then(|()| {
            self.crash_point("import-loaded", ctx);
            match self.job.dry_run {
                true => {
                    conn.rollback();
                    Ok(())
                }
                false => conn.exec("COMMIT").map_err(|r| r.error(&label, "COMMIT")),
            }
        });
        if outcome.is_err() {
            conn.rollback();
            // What this transaction made is gone again: the schema is read afresh next time.
            *schema = None;
        }
        outcome?;
        if let (Some(file), false) = (new_file, self.job.dry_run) {
            let shown = file.target.display().to_string();
            file.temp
                .persist(&file.target)
                .map_err(|e| Error::io(Stage::Sink, Some(&shown), e.error))?;
        }
        Ok(())
    }

    /// A test hook: `FERRY_CRASH_AT=import-loaded` stops the process right before the commit, as `kill -9`
    /// would (exit code 137); `import-loaded:stall` waits there until it is killed.
    fn crash_point(&self, point: &str, ctx: &RunContext) {
        match self.crash_at.as_deref() {
            Some(p) if p == point => std::process::exit(137),
            Some(p) if p.strip_suffix(":stall") == Some(point) => {
                ctx.notice(format!("stalled at {point} (test hook)"));
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            _ => {}
        }
    }

    /// The database to open: a SQLite file that does not exist yet is made under a temporary name.
    fn target_db(&self) -> Result<(Db, Option<NewFile>)> {
        let Db::Sqlite(path) = &self.db else {
            return Ok((self.db.clone(), None));
        };
        if path.exists() {
            return Ok((self.db.clone(), None));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("target");
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.ferry-import-"))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(Stage::Sink, Some(&dir.display().to_string()), e))?
            .into_temp_path();
        let registration = crate::interrupt::register(&temp);
        let db = Db::Sqlite(temp.to_path_buf());
        Ok((
            db,
            Some(NewFile {
                temp,
                target: path.clone(),
                _registration: registration,
            }),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn load(
        &self,
        conn: &mut Conn,
        schema: &mut Option<Plan>,
        head: &BundleHead,
        old_keys: &HashMap<usize, Vec<i64>>,
        label: &str,
        report: &mut ImportReport,
        ctx: &RunContext,
    ) -> Result<()> {
        ctx.step("schema");
        let (targets, after) = prepare_targets(conn, schema, head, self.job.create_tables, label)?;
        for (t, target) in report.tables.iter_mut().zip(&targets) {
            t.created = target.created;
        }
        let created = targets.iter().filter(|t| t.created).count();
        if created > 0 {
            ctx.notice(format!(
                "created {created} table(s) from the bundle's schema"
            ));
        }
        let remaps = allocate(conn, head, &targets, old_keys, label)?;
        for (i, map) in remaps.iter().enumerate() {
            report.tables[i].remapped = map.as_ref().map_or(0, |m| m.len() as u64);
        }
        let root_map = remaps.get(root_index(head)).and_then(Option::as_ref);
        if let Some(new) =
            root_map.and_then(|m| head.user_id.parse::<i64>().ok().and_then(|old| m.get(&old)))
        {
            report.target_user_id = new.to_string();
        }
        let rewrites: Vec<Vec<(usize, usize)>> = head
            .tables
            .iter()
            .map(|t| rewrites_of(t, head, &remaps))
            .collect();
        ctx.step("load");
        let mut expected: Vec<(TableChecksum, Vec<Key>)> =
            vec![(TableChecksum::default(), Vec::new()); head.tables.len()];
        let bundle_columns: Vec<Vec<(String, PgType)>> = head
            .tables
            .iter()
            .map(|t| t.exported())
            .collect::<Result<_>>()?;
        let mut current: Option<(usize, Load<'_>, u64)> = None;
        let mut loaded = 0u64;
        let started = Instant::now();
        let mode = self.job.on_conflict;
        let validate = self.job.validate;
        let finish_table = |done: Option<(usize, Load<'_>, u64)>,
                            conn: &mut Conn,
                            report: &mut ImportReport|
         -> Result<()> {
            let Some((index, load, _)) = done else {
                return Ok(());
            };
            let tally = load.finish(conn)?;
            let t = &mut report.tables[index];
            t.inserted = tally.inserted;
            t.updated = tally.updated;
            t.counts.written = tally.inserted + tally.updated;
            t.counts.skipped = tally.skipped;
            ctx.emit(RunEvent::TableDone {
                table: t.name.clone(),
                read: t.counts.read,
                written: t.counts.written,
                rejected: 0,
                seconds: started.elapsed().as_secs_f64(),
                line: format!(
                    "  {:<28} {:>10} read = {:>10} written + {} skipped",
                    quote_ident(&t.name),
                    t.counts.read,
                    t.counts.written,
                    t.counts.skipped
                ),
            });
            Ok(())
        };
        bundle::read(&self.source(), &mut |event| {
            let Event::Row(index, record) = event else {
                return Ok(());
            };
            if current.as_ref().map(|c| c.0) != Some(index) {
                finish_table(current.take(), conn, report)?;
                ctx.cancel.check()?;
                current = Some((index, Load::new(&targets[index], mode, label), 0));
            }
            let Some((_, load, position)) = current.as_mut() else {
                return Ok(());
            };
            let table = &head.tables[index];
            let target = &targets[index];
            let at = *position + 1;
            let fail = |why: String| {
                Error::data(
                    Stage::Sink,
                    Position::file(label).with_record(at),
                    format!("table {}, row {at}: {why}", quote_ident(&table.name)),
                )
            };
            let mut row = row_of(&record, &target.columns, &table.name).map_err(fail)?;
            remap_row(&mut row, &rewrites[index], &remaps).map_err(fail)?;
            let reference = *position < table.references;
            if validate && !reference {
                let mut ours =
                    row_of(&record, &bundle_columns[index], &table.name).map_err(fail)?;
                remap_row(&mut ours, &rewrites[index], &remaps).map_err(fail)?;
                expected[index].0.add(&ours);
                if let Some(key) = row_key(&ours, &bundle_columns[index], &table.primary_key) {
                    expected[index].1.push(key);
                }
            }
            load.push(conn, row, reference)?;
            *position += 1;
            loaded += 1;
            if loaded % 4096 == 0 {
                ctx.emit(RunEvent::Progress(Progress {
                    counts: Counts {
                        read: loaded,
                        written: loaded,
                        ..Counts::default()
                    },
                    table: Some(table.name.clone()),
                    seconds: started.elapsed().as_secs_f64(),
                    ..Progress::default()
                }));
                ctx.cancel.check()?;
            }
            Ok(())
        })?;
        finish_table(current.take(), conn, report)?;
        ctx.step("keys");
        for statement in &after {
            conn.exec(statement)
                .map_err(|r| r.error(label, statement))?;
        }
        advance_sequences(conn, &targets, label)?;
        check_references(conn, &targets, label)?;
        if validate {
            ctx.step("validate");
            let valid = validate_rows(
                conn,
                head,
                &targets,
                &bundle_columns,
                &expected,
                label,
                report,
            )?;
            report.valid = Some(valid);
            if !valid {
                let bad: Vec<&str> = report
                    .tables
                    .iter()
                    .filter(|t| t.equal == Some(false))
                    .map(|t| t.name.as_str())
                    .collect();
                return Err(Error::data(
                    Stage::Sink,
                    Position::file(label),
                    format!(
                        "validation failed: the tenant's rows of {} read back differ from the bundle's; nothing was committed",
                        bad.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The index of the root table among the bundle's tables.
fn root_index(head: &BundleHead) -> usize {
    head.tables
        .iter()
        .position(|t| t.name == head.root_table)
        .unwrap_or(0)
}

/// The position, among a table's exported columns, of its single generated integer key — unless the key
/// also references another row (a one-to-one table keyed by its user's key), which gives it that row's new
/// key instead.
fn generated_position(table: &BundleTable) -> Option<usize> {
    let [key] = table.primary_key.as_slice() else {
        return None;
    };
    if table.foreign_keys.iter().any(|fk| fk.columns.contains(key)) {
        return None;
    }
    let column = table
        .columns
        .iter()
        .find(|c| &c.name == key && c.generated && !c.omitted)?;
    if !PgType::parse(&column.ty).is_ok_and(|t| t.is_integer()) {
        return None;
    }
    table
        .columns
        .iter()
        .filter(|c| !c.omitted)
        .position(|c| c.name == column.name)
}

/// For each column of `table` that references a remapped key: (its position, the referenced table).
fn rewrites_of(
    table: &BundleTable,
    head: &BundleHead,
    remaps: &[Option<HashMap<i64, i64>>],
) -> Vec<(usize, usize)> {
    let exported: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| !c.omitted)
        .map(|c| c.name.as_str())
        .collect();
    let mut out = Vec::new();
    let own = head.tables.iter().position(|t| t.name == table.name);
    if let (Some(own), Some(at)) = (own, generated_position(table)) {
        if remaps.get(own).is_some_and(Option::is_some) {
            out.push((at, own));
        }
    }
    for fk in &table.foreign_keys {
        let Some(parent) = head.tables.iter().position(|t| t.name == fk.references) else {
            continue;
        };
        if remaps.get(parent).is_none_or(Option::is_none) || fk.columns.len() != 1 {
            continue;
        }
        let parent_key =
            generated_position(&head.tables[parent]).map(|_| &head.tables[parent].primary_key);
        if parent_key != Some(&fk.to) {
            continue;
        }
        if let Some(at) = exported.iter().position(|c| *c == fk.columns[0]) {
            out.push((at, parent));
        }
    }
    out
}

/// Gives a row's references to remapped keys (its own key among them: the generated key is rewritten like
/// a reference to its own table) their new values.
fn remap_row(
    row: &mut [Datum],
    rewrites: &[(usize, usize)],
    remaps: &[Option<HashMap<i64, i64>>],
) -> std::result::Result<(), String> {
    for &(at, table) in rewrites {
        let Some(Some(map)) = remaps.get(table) else {
            continue;
        };
        if let Some(Datum::Int(old)) = row.get(at) {
            let new = map.get(old).ok_or_else(|| {
                format!(
                    "it references key {old}, which is not in the bundle, so --remap-keys has no new value for it \
                     (a relation the spec stops?)"
                )
            })?;
            row[at] = Datum::Int(*new);
        }
    }
    Ok(())
}

/// The key of a row (its primary-key columns), when the table has one.
fn row_key(row: &[Datum], columns: &[(String, PgType)], key: &[String]) -> Option<Key> {
    if key.is_empty() {
        return None;
    }
    let mut parts = Vec::with_capacity(key.len());
    for k in key {
        let at = columns.iter().position(|(c, _)| c == k)?;
        parts.push(match row.get(at)? {
            Datum::Int(i) => KeyVal::Int(*i),
            Datum::Null => KeyVal::Null,
            Datum::Text(t) | Datum::Numeric(t) => KeyVal::Text(t.clone()),
            other => KeyVal::Text(other.to_json().to_string().trim_matches('"').to_owned()),
        });
    }
    Some(Key::of(parts))
}

/// Finds or makes every bundled table on the target: existing tables are matched column by column (each
/// bundle column needs one of the same name); missing ones are created from the bundle's schema when
/// allowed. Returns the tables and the statements to run after the data (foreign keys, sequences, types).
fn prepare_targets(
    conn: &mut Conn,
    schema: &mut Option<Plan>,
    head: &BundleHead,
    create: bool,
    label: &str,
) -> Result<(Vec<Target>, Vec<String>)> {
    let names: Vec<String> = head.tables.iter().map(|t| t.name.clone()).collect();
    let known = schema
        .as_ref()
        .is_some_and(|plan| names.iter().all(|n| plan.table(n).is_some()));
    let existing = match known {
        true => names.clone(),
        false => conn.existing_tables(&names)?,
    };
    let missing: Vec<&BundleTable> = head
        .tables
        .iter()
        .filter(|t| !existing.contains(&t.name))
        .collect();
    if !missing.is_empty() && !create {
        return Err(Error::config(format!(
            "{label} has no table {}; import creates missing tables unless --no-create-tables is given",
            missing.iter().map(|t| quote_ident(&t.name)).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut after = Vec::new();
    if !missing.is_empty() {
        let (plan, alters) = plan_of(&missing, &existing);
        if conn.is_postgres() {
            let ddl = plan.ddl();
            for s in ddl.create.iter().chain(ddl.per_table.iter().flatten()) {
                conn.exec(s).map_err(|r| r.error(label, s))?;
            }
            after.extend(alters);
            after.extend(ddl.last);
        } else {
            for s in crate::migrate::sqlite_ddl::sqlite_ddl(&plan) {
                conn.exec(&s).map_err(|r| r.error(label, &s))?;
            }
        }
    }
    if !known || !missing.is_empty() {
        *schema = Some(existing_plan(conn, label)?);
    }
    let Some(plan) = schema.as_ref() else {
        return Ok((Vec::new(), after));
    };
    let mut targets = Vec::with_capacity(head.tables.len());
    for t in &head.tables {
        let table = plan.table(&t.name).ok_or_else(|| {
            Error::data(
                Stage::Sink,
                Position::file(label),
                format!(
                    "table {} was not found after it was created (internal error)",
                    quote_ident(&t.name)
                ),
            )
        })?;
        let mut columns = Vec::new();
        for (name, _) in t.exported()? {
            let column = table
                .columns
                .iter()
                .find(|c| c.name == name)
                .or_else(|| {
                    table
                        .columns
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(&name))
                })
                .ok_or_else(|| {
                    Error::config(format!(
                        "table {} on {label} has no column {} that the bundle has values for",
                        quote_ident(&t.name),
                        quote_ident(&name)
                    ))
                })?;
            if column.generated.is_some() {
                return Err(Error::config(format!(
                    "column {}.{} on {label} is generated by the database and cannot take the bundle's values",
                    quote_ident(&t.name),
                    quote_ident(&name)
                )));
            }
            columns.push((column.name.clone(), column.translation.pg.clone()));
        }
        let generated = match table.primary_key.as_slice() {
            [key] => table
                .columns
                .iter()
                .find(|c| &c.name == key && c.translation.identity && c.translation.pg.is_integer())
                .map(|c| c.name.clone()),
            _ => None,
        };
        targets.push(Target {
            name: table.name.clone(),
            columns,
            key: table.primary_key.clone(),
            generated,
            created: !existing.contains(&t.name),
        });
    }
    Ok((targets, after))
}

/// The target's schema as migrate reads it (types from declarations; nothing profiled).
fn existing_plan(conn: &mut Conn, label: &str) -> Result<Plan> {
    match conn {
        Conn::Sqlite(c) => {
            let schema = crate::migrate::Schema::read(c, label)?;
            Plan::from_schema(&schema, &[], &CastRules::default())
        }
        Conn::Postgres(c) => crate::migrate::pg_schema::read_plan(c, "public", label),
    }
}

/// The plan that creates `tables` from the bundle's schema: columns with the bundle's types (identity for
/// generated keys; omitted columns nullable), primary keys, UNIQUE constraints and the declared foreign
/// keys among bundled or existing tables. PostgreSQL types ferry has no binary form for are created as
/// text and converted after the data (the returned statements).
fn plan_of(tables: &[&BundleTable], existing: &[String]) -> (Plan, Vec<String>) {
    let mut plan = Plan::default();
    let mut alters = Vec::new();
    let known =
        |name: &str| tables.iter().any(|t| t.name == name) || existing.iter().any(|e| e == name);
    let short = |name: String| -> String {
        let mut end = name.len().min(crate::db::PG_NAME_BYTES);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_owned()
    };
    for t in tables {
        let mut table = PlanTable {
            name: t.name.clone(),
            primary_key: t.primary_key.clone(),
            ..PlanTable::default()
        };
        for c in &t.columns {
            let mut pg = PgType::parse(&c.ty).unwrap_or(PgType::Text);
            if let PgType::Other(ty) = &pg {
                alters.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {ty} USING {}::{ty}",
                    quote_ident(&t.name),
                    quote_ident(&c.name),
                    quote_ident(&c.name)
                ));
                pg = PgType::Text;
            }
            let identity = c.generated && pg.is_integer() && t.primary_key == [c.name.clone()];
            if identity {
                table.sequence = Some((c.name.clone(), 1));
            }
            table.columns.push(PlanColumn {
                name: c.name.clone(),
                declared: c.ty.clone(),
                translation: Translation {
                    pg,
                    identity,
                    reason: "the bundle's type".into(),
                    warnings: Vec::new(),
                    nonconforming: 0,
                },
                not_null: (c.not_null && !c.omitted) || t.primary_key.contains(&c.name),
                default: None,
                generated: None,
            });
        }
        for cols in &t.uniques {
            table.uniques.push((
                short(format!("{}_{}_key", t.name, cols.join("_"))),
                cols.clone(),
            ));
        }
        for fk in t
            .foreign_keys
            .iter()
            .filter(|fk| fk.declared && known(&fk.references))
        {
            table.foreign_keys.push(PlanForeignKey {
                name: short(format!("{}_{}_fkey", t.name, fk.columns.join("_"))),
                from: fk.columns.clone(),
                table: fk.references.clone(),
                to: fk.to.clone(),
                on_update: "NO ACTION".into(),
                on_delete: "NO ACTION".into(),
            });
        }
        plan.tables.push(table);
    }
    (plan, alters)
}

/// New keys for the rows of every table `--remap-keys` remaps (a generated single integer key on both
/// sides): a block of values from the target's own sequence (PostgreSQL) or past its largest rowid
/// (SQLite, whose write lock the transaction holds), old key → new key.
fn allocate(
    conn: &mut Conn,
    head: &BundleHead,
    targets: &[Target],
    old_keys: &HashMap<usize, Vec<i64>>,
    label: &str,
) -> Result<Vec<Option<HashMap<i64, i64>>>> {
    let mut out = vec![None; head.tables.len()];
    for (index, olds) in old_keys {
        let target = &targets[*index];
        let Some(column) = &target.generated else {
            return Err(Error::config(format!(
                "--remap-keys: the key of table {} on {label} is not generated by the database, so ferry cannot \
                 give rows new keys there",
                quote_ident(&target.name)
            )));
        };
        let n = olds.len() as i64;
        let new: Vec<i64> = match conn {
            Conn::Postgres(client) => {
                let sql = "SELECT nextval(pg_get_serial_sequence($1, $2)) FROM generate_series(1, $3::bigint)";
                let rows = client
                    .query(sql, &[&quote_ident(&target.name), column, &n])
                    .map_err(|e| {
                        crate::db::postgres::pg_error(
                            Stage::Sink,
                            &format!("{label}: new keys for {}", quote_ident(&target.name)),
                            &e,
                        )
                    })?;
                rows.iter().map(|r| r.get::<_, i64>(0)).collect()
            }
            Conn::Sqlite(c) => {
                let sql = format!(
                    "SELECT coalesce(max(rowid), 0) FROM {}",
                    quote_ident(&target.name)
                );
                let max: i64 = c
                    .query_row(&sql, [], |r| r.get(0))
                    .map_err(|e| crate::db::sqlite::sql_error(Stage::Sink, label, &sql, e))?;
                let seq: i64 = c
                    .query_row(
                        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
                        [&target.name],
                        |r| r.get(0),
                    )
                    .unwrap_or(0);
                let start = max.max(seq);
                (1..=n).map(|i| start + i).collect()
            }
        };
        out[*index] = Some(olds.iter().copied().zip(new).collect());
    }
    Ok(out)
}

/// PostgreSQL: moves each loaded table's key sequence past the largest key (never back), so the
/// application's next insert does not collide with an imported row — one statement for all of them.
fn advance_sequences(conn: &mut Conn, targets: &[Target], label: &str) -> Result<()> {
    use crate::migrate::quote_literal;
    if !conn.is_postgres() {
        return Ok(());
    }
    let moves: Vec<String> = targets
        .iter()
        .filter_map(|t| {
            let column = t.generated.as_ref()?;
            let (table, col) = (quote_ident(&t.name), quote_ident(column));
            let sequence = format!(
                "pg_get_serial_sequence({}, {})",
                quote_literal(&table),
                quote_literal(column)
            );
            Some(format!(
                "SELECT setval({sequence}, GREATEST(m, (SELECT last_value FROM pg_sequences \
                 WHERE format('%I.%I', schemaname, sequencename)::regclass = {sequence}::regclass))) \
                 FROM (SELECT max({col}) AS m FROM {table}) AS x WHERE m IS NOT NULL AND {sequence} IS NOT NULL"
            ))
        })
        .collect();
    if moves.is_empty() {
        return Ok(());
    }
    conn.exec(&moves.join(";\n"))
        .map_err(|r| r.error(label, "moving the key sequences past the imported keys"))
}

/// Every foreign key of the loaded tables holds: SQLite's `foreign_key_check` (the load ran with keys
/// off); on PostgreSQL deferred constraints are checked now, so a violation fails here, not at COMMIT.
fn check_references(conn: &mut Conn, targets: &[Target], label: &str) -> Result<()> {
    match conn {
        Conn::Postgres(_) => conn
            .exec("SET CONSTRAINTS ALL IMMEDIATE")
            .map_err(|r| r.error(label, "checking foreign keys")),
        Conn::Sqlite(c) => {
            for t in targets {
                let fail =
                    |e| crate::db::sqlite::sql_error(Stage::Sink, label, "foreign_key_check", e);
                let mut statement = c
                    .prepare("SELECT parent, rowid FROM pragma_foreign_key_check(?1)")
                    .map_err(fail)?;
                let mut rows = statement.query([&t.name]).map_err(fail)?;
                if let Some(row) = rows.next().map_err(fail)? {
                    let parent: String = row.get(0).map_err(fail)?;
                    return Err(Error::data(
                        Stage::Sink,
                        Position::file(label),
                        format!(
                            "a row of {} references a row of {} that is neither in the bundle nor on the target; \
                             nothing was written",
                            quote_ident(&t.name),
                            quote_ident(&parent)
                        ),
                    )
                    .with_db_cause(crate::error::DbCause {
                        sqlstate: Some(crate::error::sqlstate::FOREIGN_KEY_VIOLATION.into()),
                        table: Some(t.name.clone()),
                        ..crate::error::DbCause::default()
                    }));
                }
            }
            Ok(())
        }
    }
}

/// Reads the tenant's own rows back by their keys, inside the transaction, as the bundle's types, and
/// compares count and checksum with what the bundle holds (after remapping).
fn validate_rows(
    conn: &mut Conn,
    head: &BundleHead,
    targets: &[Target],
    columns: &[Vec<(String, PgType)>],
    expected: &[(TableChecksum, Vec<Key>)],
    label: &str,
    report: &mut ImportReport,
) -> Result<bool> {
    let mut all = true;
    for (index, table) in head.tables.iter().enumerate() {
        let (sum, keys) = &expected[index];
        if table.primary_key.is_empty() || sum.rows == 0 {
            continue;
        }
        let target = &targets[index];
        let node = node_of(target, &columns[index], &table.primary_key);
        let mut back = TableChecksum::default();
        let mut reader = match conn {
            Conn::Sqlite(c) => Reader::Sqlite(c),
            Conn::Postgres(c) => Reader::Postgres(c, std::marker::PhantomData),
        };
        reader.rows(&node, keys, label, &mut |row| {
            back.add(&row);
            Ok(())
        })?;
        let equal = back == *sum;
        report.tables[index].equal = Some(equal);
        all &= equal;
    }
    Ok(all)
}

/// A target table as the reader reads it: the target's column names, the bundle's types.
fn node_of(target: &Target, bundle: &[(String, PgType)], key: &[String]) -> Node {
    let columns: Vec<(String, PgType)> = target
        .columns
        .iter()
        .zip(bundle)
        .map(|((name, _), (_, ty))| (name.clone(), ty.clone()))
        .collect();
    let plan = PlanTable {
        name: target.name.clone(),
        primary_key: key.to_vec(),
        columns: columns
            .iter()
            .map(|(name, ty)| PlanColumn {
                name: name.clone(),
                declared: ty.sql(),
                translation: Translation {
                    pg: ty.clone(),
                    identity: false,
                    reason: String::new(),
                    warnings: Vec::new(),
                    nonconforming: 0,
                },
                not_null: false,
                default: None,
                generated: None,
            })
            .collect(),
        ..PlanTable::default()
    };
    Node {
        copy: CopyTable {
            name: target.name.clone(),
            columns,
            key: key.to_vec(),
            pages: None,
            hashed: true,
        },
        plan,
        identity: Identity::Key(key.to_vec()),
    }
}
