//! `ferry migrate --tenant users:123 --from app.db --to postgres://… --backup DIR`: one tenant's rows from
//! one database into another in one step — export (a bundle, kept in `--backup DIR` or a temporary
//! folder), import in one transaction that reads the tenant's rows back and compares them before it
//! commits (so a failed validation leaves nothing behind), and a report. `--tenant users:all` or
//! `--tenants-from FILE` does it for many tenants, `--jobs` at a time, each in its own transaction, with a
//! line per tenant; the first runs alone, so tables the target lacks are created once. Unlike a whole
//! migration, both databases may be of one kind (two users' SQLite files merged into one).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::export::{read_transaction, root_keys, ExportJob};
use super::graph::{read_plan, Graph};
use super::import::ImportJob;
use super::spec::{Root, Select, Spec};
use crate::db::{quote_ident, OnConflict};
use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::state::without_password;
use crate::migrate::{Db, MigrateJob, MigrateReport};
use crate::observe::{Event, Failed, Progress, RunContext, RunKind, RunResult, Status};
use crate::report::Counts;

/// What makes a migration a tenant's: `"tenant": {"tenant": "users:123", …}` in a migrate job file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantMigrateJob {
    /// The tenant (`users:123`, `users:email=a@b.c`) or every row of the root table (`users:all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Root>,
    /// A file of tenants, one per line (`users:123`), `#` comments and blank lines skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants_from: Option<PathBuf>,
    /// The subset spec file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PathBuf>,
    /// Lookup tables taken whole.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// What a row whose key is already on the target does.
    pub on_conflict: OnConflict,
    /// Give generated keys new values on the target.
    pub remap_keys: bool,
}

/// One tenant's line in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TenantOutcome {
    /// The tenant.
    pub tenant: String,
    /// Its key in the source.
    pub user_id: String,
    /// Its key on the target (differs with `--remap-keys`).
    pub target_user_id: String,
    /// How its migration ended.
    pub status: Status,
    /// Rows read and written.
    #[serde(flatten)]
    pub counts: Counts,
    /// The bundle's checksum.
    pub checksum: Option<String>,
    /// The bundle kept in `--backup`.
    pub bundle: Option<String>,
    /// Its rows read back equal (None: not validated).
    pub valid: Option<bool>,
    /// Seconds.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

impl TenantOutcome {
    /// The report's line for this tenant.
    pub fn line(&self) -> String {
        match &self.error {
            None => format!(
                "  {:<24} {} → {}: {} rows read = {} written + {} skipped{}  {:.2} s",
                self.tenant,
                self.user_id,
                self.target_user_id,
                self.counts.read,
                self.counts.written,
                self.counts.skipped,
                match self.valid {
                    Some(true) => ", validated",
                    _ => "",
                },
                self.seconds
            ),
            Some(e) => format!("  {:<24} FAILED (nothing written): {e}", self.tenant),
        }
    }
}

/// The tenants a job names, in order.
pub(crate) fn tenants(
    job: &MigrateJob,
    options: &TenantMigrateJob,
    env: &Environment,
) -> Result<Vec<Root>> {
    let mut roots = Vec::new();
    if let Some(file) = &options.tenants_from {
        let text = std::fs::read_to_string(file).map_err(|e| {
            Error::config(format!(
                "cannot read --tenants-from {}: {e}",
                file.display()
            ))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let root: Root = line.parse().map_err(|e: Error| {
                Error::config(format!(
                    "{}, line {}: {}",
                    file.display(),
                    n + 1,
                    e.message()
                ))
            })?;
            if root.select == Select::All {
                return Err(Error::config(format!(
                    "{}, line {}: one tenant per line, not TABLE:all",
                    file.display(),
                    n + 1
                )));
            }
            roots.push(root);
        }
    }
    match &options.tenant {
        Some(root) if root.select == Select::All => {
            roots.extend(every_row(job, options, root, env)?)
        }
        Some(root) => roots.push(root.clone()),
        None => {}
    }
    if roots.is_empty() && options.tenants_from.is_none() {
        return Err(Error::config(
            "a tenant migration needs --tenant TABLE:KEY (or TABLE:all) or --tenants-from FILE",
        ));
    }
    Ok(roots)
}

/// `users:all`: every row of the root table, by its primary key.
fn every_row(
    job: &MigrateJob,
    options: &TenantMigrateJob,
    root: &Root,
    env: &Environment,
) -> Result<Vec<Root>> {
    let from = job
        .from
        .as_deref()
        .ok_or_else(|| Error::config("ferry migrate needs --from"))?;
    let db = Db::parse(from, "--from", env)?;
    let label = db.label();
    let spec = match &options.spec {
        Some(path) => Spec::load(path)?,
        None => Spec::default(),
    };
    let mut conn = db.open(&job.connect, false)?;
    let plan = read_plan(&mut conn, &label, &spec)?;
    let graph = Graph::new(&plan, &spec, conn.is_postgres())?;
    let node = &graph.nodes[graph.find(&root.table)?];
    let [_] = node.plan.primary_key.as_slice() else {
        return Err(Error::config(format!(
            "--tenant {root}: {} needs a one-column primary key to list its rows",
            quote_ident(&root.table)
        )));
    };
    let mut keys = Vec::new();
    read_transaction(&mut conn, &label, |reader| {
        keys = root_keys(reader, &graph, root, &label)?;
        Ok(())
    })?;
    keys.sort_unstable();
    Ok(keys
        .into_iter()
        .map(|k| Root {
            table: root.table.clone(),
            select: Select::Key(k.parts().first().and_then(|p| p.text()).unwrap_or_default()),
        })
        .collect())
}

/// A file name for a tenant's bundle: the tenant with everything but letters, digits, `-` and `_` as `_`.
fn bundle_name(root: &Root, job: &MigrateJob) -> String {
    let stem: String = root
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A kept bundle is compressed (and encrypted with a key); a passing one is not worth the work.
    match (&job.backup, &job.backup_key) {
        (Some(_), Some(_)) => format!("{stem}.bundle.json.zst.enc"),
        (Some(_), None) => format!("{stem}.bundle.json.zst"),
        (None, _) => format!("{stem}.bundle.json"),
    }
}

/// Runs a tenant migration (the `tenant` part of a migrate job); the report comes back either way, with a
/// line per tenant. It fails when any tenant failed (the others are committed, each whole).
pub fn migrate_tenants(
    job: &MigrateJob,
    env: &Environment,
    ctx: &RunContext,
) -> RunResult<MigrateReport> {
    let started = Instant::now();
    let mut report = MigrateReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: job
            .from
            .as_deref()
            .map(without_password)
            .unwrap_or_default(),
        target: job.to.as_deref().map(without_password).unwrap_or_default(),
        dry_run: job.dry_run,
        on_error: job.on_error.name().into(),
        tenant: Some(asked(job)),
        ..MigrateReport::default()
    };
    let result = run(job, env, ctx, &mut report);
    report.seconds = started.elapsed().as_secs_f64();
    report.status = Status::of(&result);
    if let Err(e) = &result {
        report.push_error(e);
    }
    ctx.emit(Event::Finished {
        status: report.status,
        progress: report.progress(),
    });
    match result {
        Ok(()) => Ok(report),
        Err(error) => Err(Box::new(Failed { report, error })),
    }
}

/// The tenants a job asks for, as the report names them.
fn asked(job: &MigrateJob) -> String {
    let options = job.tenant.clone().unwrap_or_default();
    let mut parts: Vec<String> = options.tenant.iter().map(Root::to_string).collect();
    if let Some(file) = &options.tenants_from {
        parts.push(format!("--tenants-from {}", file.display()));
    }
    parts.join(" and ")
}

/// The closing lines of a tenant migration (`ferry migrate --tenant …`).
pub fn summary(report: &MigrateReport) -> String {
    let failed = report.tenants.iter().filter(|t| t.error.is_some()).count();
    let c = &report.counts;
    let verb = match (report.dry_run, report.status) {
        (_, Status::Failed | Status::Cancelled) => "stopped after migrating",
        (true, _) => "would migrate",
        (false, _) => "migrated",
    };
    let mut out = format!(
        "{verb} {} tenant(s) of {} ({failed} failed): {} rows read = {} written + {} skipped",
        report.tenants.len() - failed,
        report.tenant.as_deref().unwrap_or_default(),
        c.read,
        c.written,
        c.skipped
    );
    match report.valid {
        Some(true) => {
            out.push_str("\nvalidation: each tenant's rows read back equal before its commit")
        }
        Some(false) => {
            out.push_str("\nvalidation FAILED for some tenant (nothing of it was committed)")
        }
        None => {}
    }
    out
}

fn check(job: &MigrateJob) -> Result<()> {
    let defaults = MigrateJob::default();
    let refused = [
        (!job.tables.is_empty(), "--tables (use the spec's exclude)"),
        (
            !job.exclude.is_empty(),
            "--exclude (use the spec's exclude)",
        ),
        (job.schema_only, "--schema-only"),
        (job.data_only, "--data-only"),
        (job.resume, "--resume"),
        (
            job.cast_rules.is_some(),
            "--cast-rules (use the spec's casts)",
        ),
        (job.on_error != defaults.on_error, "--on-error"),
    ];
    if let Some((_, flag)) = refused.iter().find(|(set, _)| *set) {
        return Err(Error::config(format!(
            "{flag} does not apply to a tenant migration"
        )));
    }
    if job.from.is_none() || job.to.is_none() {
        return Err(Error::config("a tenant migration needs --from and --to"));
    }
    Ok(())
}

fn run(
    job: &MigrateJob,
    env: &Environment,
    ctx: &RunContext,
    report: &mut MigrateReport,
) -> Result<()> {
    check(job)?;
    let options = job.tenant.clone().unwrap_or_default();
    let roots = tenants(job, &options, env)?;
    let (from, to) = (
        job.from.clone().unwrap_or_default(),
        job.to.clone().unwrap_or_default(),
    );
    ctx.emit(Event::Started {
        kind: RunKind::Migrate,
        input: without_password(&from),
        output: without_password(&to),
        total_bytes: None,
    });
    let temp;
    let dir: &Path = match &job.backup {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(Stage::Sink, Some(&dir.display().to_string()), e))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().map_err(|e| Error::io(Stage::Sink, None, e))?;
            temp.path()
        }
    };
    // Every tenant's jobs are checked before the first one runs.
    let pairs: Vec<(Root, ExportJob, ImportJob)> = roots
        .into_iter()
        .map(|root| {
            let bundle = dir.join(bundle_name(&root, job));
            let export = ExportJob {
                spec: options.spec.clone(),
                include: options.include.clone(),
                key: job.backup.as_ref().and(job.backup_key.clone()),
                encrypt: job.backup.is_some() && job.backup_key.is_some(),
                connect: job.connect,
                ..ExportJob::new(root.clone(), from.clone(), bundle.clone())
            };
            let import = ImportJob {
                key: job.backup.as_ref().and(job.backup_key.clone()),
                on_conflict: options.on_conflict,
                remap_keys: options.remap_keys,
                dry_run: job.dry_run,
                validate: job.validate,
                connect: job.connect,
                ..ImportJob::new(bundle, to.clone())
            };
            if bundle_exists(&export) && job.backup.is_some() {
                return Err(Error::config(format!(
                    "{} exists: choose an empty --backup directory (a backup is never overwritten)",
                    export.to.as_deref().unwrap_or(Path::new("")).display()
                )));
            }
            export.build(env)?;
            Ok((root, export, import))
        })
        .collect::<Result<_>>()?;
    ctx.step("tenants");
    let outcomes: Mutex<Vec<Option<TenantOutcome>>> = Mutex::new(vec![None; pairs.len()]);
    let next = AtomicUsize::new(1);
    let keep = job.backup.is_some();
    let one = |i: usize, sessions: &mut Sessions| {
        let (root, export, import) = &pairs[i];
        let outcome = migrate_one(root, export, import, env, ctx, keep, sessions);
        ctx.notice(outcome.line());
        ctx.emit(Event::Progress(Progress {
            counts: Counts {
                read: next.load(Ordering::Relaxed).min(pairs.len()) as u64,
                ..Counts::default()
            },
            total_records: Some(pairs.len() as u64),
            ..Progress::default()
        }));
        outcomes.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(outcome);
    };
    if !pairs.is_empty() {
        // The first alone: it creates the tables the target lacks.
        one(0, &mut Sessions::default());
        let workers = job.jobs.max(1).min(pairs.len().saturating_sub(1).max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    // Each worker keeps its connections and the schemas it read, tenant after tenant.
                    let mut sessions = Sessions::default();
                    loop {
                        if ctx.cancel.is_cancelled() {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= pairs.len() {
                            return;
                        }
                        one(i, &mut sessions);
                    }
                });
            }
        });
    }
    let outcomes: Vec<TenantOutcome> = outcomes
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    summarize(report, &outcomes);
    ctx.cancel.check()?;
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if failed > 0 {
        let first = outcomes
            .iter()
            .find_map(|o| o.error.clone())
            .unwrap_or_default();
        return Err(Error::data(
            Stage::Sink,
            Position::default(),
            format!(
                "{failed} of {} tenant(s) failed and left the target as it was for them (the others were \
                 committed): first, {first}",
                outcomes.len()
            ),
        ));
    }
    Ok(())
}

fn bundle_exists(export: &ExportJob) -> bool {
    export.to.as_deref().is_some_and(Path::exists)
}

/// Sums the tenants into the report's tables and counts.
fn summarize(report: &mut MigrateReport, outcomes: &[TenantOutcome]) {
    report.valid = match outcomes.iter().all(|o| o.valid.is_some()) && !outcomes.is_empty() {
        true => Some(outcomes.iter().all(|o| o.valid == Some(true))),
        false => None,
    };
    report.counts = outcomes.iter().fold(Counts::default(), |mut c, o| {
        c.add(&o.counts);
        c
    });
    report.tenants = outcomes.to_vec();
}

/// A worker's open source and target, kept from one tenant to the next.
#[derive(Default)]
struct Sessions {
    source: Option<super::export::SourceSession>,
    target: Option<super::import::TargetSession>,
}

/// One tenant: export, then import (retried once after a deadlock with a parallel tenant), each on the
/// worker's sessions when it has them. A failure drops them: the next tenant starts on fresh connections.
#[allow(clippy::too_many_arguments)]
fn migrate_one(
    root: &Root,
    export: &ExportJob,
    import: &ImportJob,
    env: &Environment,
    ctx: &RunContext,
    keep: bool,
    sessions: &mut Sessions,
) -> TenantOutcome {
    let started = Instant::now();
    let quiet = RunContext {
        observer: std::sync::Arc::new(crate::observe::Silent),
        cancel: ctx.cancel.clone(),
    };
    let mut outcome = TenantOutcome {
        tenant: root.to_string(),
        ..TenantOutcome::default()
    };
    let fail = |outcome: &mut TenantOutcome, error: &Error| {
        outcome.status = if error.is_cancelled() {
            Status::Cancelled
        } else {
            Status::Failed
        };
        outcome.error = Some(error.to_string());
        outcome.seconds = started.elapsed().as_secs_f64();
    };
    let exported = match export_in(export, env, &quiet, sessions) {
        Ok(r) => r,
        Err(error) => {
            sessions.source = None;
            fail(&mut outcome, &error);
            return outcome;
        }
    };
    outcome.user_id = exported.user_id.clone();
    outcome.checksum = exported.checksum.clone();
    let mut result = import_in(import, env, &quiet, sessions);
    let retry = matches!(&result, Err((_, e)) if matches!(e.sqlstate(), Some("40P01" | "40001")));
    if retry {
        result = import_in(import, env, &quiet, sessions);
    }
    let bundle = export.to.clone().unwrap_or_default();
    if keep {
        outcome.bundle = Some(bundle.display().to_string());
    } else {
        let _ = std::fs::remove_file(&bundle);
    }
    match result {
        Ok(imported) => {
            outcome.status = Status::Succeeded;
            outcome.target_user_id = imported.target_user_id;
            outcome.counts = imported.counts;
            outcome.valid = imported.valid;
            outcome.seconds = started.elapsed().as_secs_f64();
        }
        Err((read, error)) => {
            sessions.target = None;
            outcome.counts.read = read;
            fail(&mut outcome, &error);
        }
    }
    outcome
}

fn export_in(
    job: &ExportJob,
    env: &Environment,
    ctx: &RunContext,
    sessions: &mut Sessions,
) -> Result<super::ExportReport> {
    let built = job.build(env)?;
    if sessions.source.is_none() {
        sessions.source = Some(built.open_session()?);
    }
    match sessions.source.as_mut() {
        Some(session) => built.run_in(session, ctx).map_err(|f| f.error),
        None => built.run(ctx).map_err(|f| f.error),
    }
}

/// The import on the worker's target session; a failure comes with the rows the bundle holds.
fn import_in(
    job: &ImportJob,
    env: &Environment,
    ctx: &RunContext,
    sessions: &mut Sessions,
) -> std::result::Result<super::ImportReport, (u64, Error)> {
    let built = job.build(env).map_err(|e| (0, e))?;
    if sessions.target.is_none() {
        sessions.target = built.open_session().map_err(|e| (0, e))?;
    }
    let result = match sessions.target.as_mut() {
        Some(session) => built.run_in(session, ctx),
        None => built.run(ctx),
    };
    result.map_err(|f| (f.report.counts.read, f.error))
}
