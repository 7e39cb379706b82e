//! Running a migration: plan → (backup) → create tables → copy rows ([tables in parallel](super::tables))
//! → keys, indexes, constraints, sequences and views ([after the data](super::after_data)) → validate, with
//! a [state file](super::state) written at every step so a killed run resumes and a finished one can be
//! rolled back. Either database may be the source or the target; the [plan](super::plan) is built from the
//! source and its PostgreSQL types are the common language of both directions.
//!
//! The run tells its observer what it does (steps, a notice per line `ferry migrate` prints, progress after
//! every batch of rows, each table done) and checks its cancellation token between batches, tables and
//! steps: a cancelled run ends like a failed one, and the report comes back either way.

use std::time::Instant;

use super::conn::{Conn, Db};
use super::copy::{copy_table, Copied, CopyContext, Meter};
use super::job::{BuiltMigrate, MigrateJob};
use super::plan::Plan;
use super::planning::{build_plan, count_objects, source_key_violations, target_ddl, TargetDdl};
use super::report::{MigrateReport, TableReport};
use super::rollback::rollback_state;
use super::rows::CopyTable;
use super::state::{without_password, Phase, State};
use crate::db::quote_ident;
use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::observe::{Event, Failed, RunContext, RunKind, RunResult, Status};
use crate::pipeline::ErrorPolicy;
use crate::report::Counts;

/// Runs a migration job (the runner behind `{"job": "migrate", …}` job files): builds it against `env`,
/// then runs it with `ctx`'s observer and cancellation token.
pub fn run_migrate_job(
    job: MigrateJob,
    env: &Environment,
    ctx: &RunContext,
) -> RunResult<MigrateReport> {
    migrate(&job, env, ctx)
}

/// Runs a migration (or resumes one). The report comes back whether it succeeded or failed; a job that
/// cannot run as configured fails with a configuration error before anything is touched.
pub fn migrate(job: &MigrateJob, env: &Environment, ctx: &RunContext) -> RunResult<MigrateReport> {
    if job.tenant.is_some() {
        return crate::tenant::migrate_tenants(job, env, ctx);
    }
    if job.incremental {
        return crate::sync::catch_up(job, env, ctx);
    }
    match job.build(env) {
        Ok(built) => built.run(ctx),
        Err(error) => {
            let mut report = MigrateReport::begin(job);
            finish(&mut report, Instant::now(), Some(&error), ctx);
            Err(Box::new(Failed { report, error }))
        }
    }
}

impl MigrateReport {
    /// The report of a run of `job` that has not done anything yet.
    fn begin(job: &MigrateJob) -> MigrateReport {
        MigrateReport {
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            source: job
                .from
                .as_deref()
                .map(without_password)
                .unwrap_or_default(),
            target: job.to.as_deref().map(without_password).unwrap_or_default(),
            dry_run: job.dry_run,
            on_error: job.on_error.name().into(),
            ..MigrateReport::default()
        }
    }
}

/// Closes the report of a run that ended (with `error`, if it failed) and tells the observer.
fn finish(report: &mut MigrateReport, started: Instant, error: Option<&Error>, ctx: &RunContext) {
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
    ctx.emit(Event::Finished {
        status: report.status,
        progress: report.progress(),
    });
}

impl BuiltMigrate {
    /// Runs the checked job; the report comes back either way.
    pub fn run(self, ctx: &RunContext) -> RunResult<MigrateReport> {
        let started = Instant::now();
        let mut report = MigrateReport::begin(&self.job);
        let result = self.execute(ctx, &mut report);
        finish(&mut report, started, result.as_ref().err(), ctx);
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(Box::new(Failed { report, error })),
        }
    }

    fn execute(self, ctx: &RunContext, report: &mut MigrateReport) -> Result<()> {
        let BuiltMigrate {
            job,
            source: source_db,
            target: target_db,
            rules,
            mut state,
            env,
        } = self;
        let source_label = source_db.label();
        let target_label = target_db.label();
        ctx.emit(Event::Started {
            kind: RunKind::Migrate,
            input: source_label.clone(),
            output: target_label.clone(),
            total_bytes: None,
        });
        ctx.step("plan");
        let mut source = source_db.open(&job.connect, false)?;
        ctx.notice(format!("planning {source_label} → {target_label}"));
        let only = if job.resume {
            state.tables.clone()
        } else {
            job.tables.clone()
        };
        let mut plan = build_plan(
            &mut source,
            &source_label,
            &rules,
            &only,
            &job.exclude,
            job.jobs,
        )?;
        ctx.cancel.check()?;
        let target_is_new_sqlite = matches!(&target_db, Db::Sqlite(p) if !p.exists());
        let ddl = target_ddl(&mut plan, matches!(target_db, Db::Postgres(_)));
        // A new SQLite target is only made once the state file says this migration makes it.
        let mut target = match target_is_new_sqlite && !job.dry_run {
            true => None,
            false => Some(target_db.open(&job.connect, true)?),
        };
        let tables: Vec<CopyTable> = plan.tables.iter().map(CopyTable::from_plan).collect();
        let names: Vec<String> = plan.tables.iter().map(|t| t.name.clone()).collect();
        report.objects = count_objects(&plan);
        report.untranslated = plan.untranslated.clone();

        let existing = match &mut target {
            Some(target) => target.existing_tables(&names)?,
            None => Vec::new(),
        };
        check_existing(&job, &state, &names, &existing, &target_label)?;
        if let (true, false, Some(target)) = (job.data_only, job.resume, target.as_mut()) {
            // Rows already there would fail validation, and a resume could not tell them from its own.
            let filled = target.tables_with_rows(&names)?;
            if !filled.is_empty() {
                return Err(Error::config(format!(
                    "--data-only loads into empty tables (made by --schema-only), and {target_label} has rows in {}",
                    filled.iter().map(|t| quote_ident(t)).collect::<Vec<_>>().join(", ")
                )));
            }
        }

        let violations = if job.schema_only {
            Vec::new()
        } else {
            source_key_violations(&mut source, &plan)?
        };
        if !violations.is_empty() && job.on_error == ErrorPolicy::Strict {
            let first = &violations[0];
            return Err(Error::data(
                Stage::Source,
                Position::file(&source_label),
                format!(
                    "{source_label}: {} row(s) of {} reference missing rows of {} (and {} more such key(s)); \
                     nothing was written. --on-error lenient copies them and adds the key NOT VALID",
                    first.rows,
                    quote_ident(&first.table),
                    quote_ident(&first.references),
                    violations.len() - 1
                ),
            ));
        }
        let not_valid: Vec<(String, String)> = violations
            .iter()
            .map(|v| (v.table.clone(), v.references.clone()))
            .collect();
        report.key_violations.extend(violations);

        if let Some(dir) = &job.backup {
            if !job.dry_run && !job.resume {
                ctx.step("backup");
                let manifest = super::backup::backup(
                    job.from.as_deref().unwrap_or_default(),
                    &source_db,
                    &names,
                    dir,
                    job.backup_key.as_ref(),
                    (&env, ctx),
                )?;
                ctx.notice(format!("backup: {manifest}"));
                report.backup = Some(manifest);
                ctx.cancel.check()?;
            }
        }

        let meter = Meter::new(plan.tables.iter().map(|t| t.rows).sum());
        let run = Run {
            job: &job,
            plan: &plan,
            tables: &tables,
            source_db: &source_db,
            target_db: &target_db,
            source_label: &source_label,
            target_label: &target_label,
            not_valid: &not_valid,
            ctx,
            meter: &meter,
            crash_at: env.get("FERRY_CRASH_AT"),
        };
        let outcome = match target.as_mut() {
            // A dry run always has its target open (a new SQLite file is made and removed below).
            Some(target) if job.dry_run => run.dry(&mut source, target, &ddl, report),
            _ => {
                drop(target);
                state.created_file = state.created_file || target_is_new_sqlite;
                run.real(&mut state, &ddl, report)
            }
        };
        if job.dry_run && target_is_new_sqlite {
            if let Db::Sqlite(path) = &target_db {
                let _ = std::fs::remove_file(path);
            }
        }
        outcome?;
        if !job.dry_run {
            report.state_file = Some(job.state.display().to_string());
        }
        Ok(())
    }
}

/// Refuses a target that already has tables of the plan (ferry creates its tables), unless they are this
/// migration's own (a resume) or the run loads into them (`--data-only`, which needs them all).
fn check_existing(
    job: &MigrateJob,
    state: &State,
    names: &[String],
    existing: &[String],
    target_label: &str,
) -> Result<()> {
    if job.data_only {
        let missing: Vec<&String> = names.iter().filter(|n| !existing.contains(n)).collect();
        if !missing.is_empty() {
            return Err(Error::config(format!(
                "--data-only: {target_label} has no table {}; create the schema first (--schema-only)",
                missing.iter().map(|m| quote_ident(m)).collect::<Vec<_>>().join(", ")
            )));
        }
        return Ok(());
    }
    let foreign: Vec<String> = existing
        .iter()
        .filter(|n| !(job.resume && state.created_tables.contains(n)))
        .map(|n| quote_ident(n))
        .collect();
    if !foreign.is_empty() {
        return Err(Error::config(format!(
            "{target_label} already has table(s) {}; ferry migrate creates its tables and leaves existing ones alone: \
             drop them, leave them out with --exclude, or load into them with --data-only",
            foreign.join(", ")
        )));
    }
    Ok(())
}

/// One migration under way: what every phase reads.
pub(super) struct Run<'a> {
    pub job: &'a MigrateJob,
    pub plan: &'a Plan,
    pub tables: &'a [CopyTable],
    pub source_db: &'a Db,
    pub target_db: &'a Db,
    pub source_label: &'a str,
    pub target_label: &'a str,
    /// Foreign keys the source already breaks, as (table, referenced table): added `NOT VALID`.
    pub not_valid: &'a [(String, String)],
    pub ctx: &'a RunContext,
    pub meter: &'a Meter,
    /// The test hook's stopping point (`FERRY_CRASH_AT`), from the run's environment.
    pub crash_at: Option<&'a str>,
}

impl Run<'_> {
    pub(super) fn context(&self, own_transaction: bool) -> CopyContext<'_> {
        CopyContext {
            source_label: self.source_label,
            target_label: self.target_label,
            policy: self.job.on_error,
            rejects_dir: &self.job.rejects,
            fresh: !self.job.data_only,
            own_transaction,
            validate: self.job.validate,
            target_db: self.target_db,
            connect: &self.job.connect,
            jobs: self.job.jobs.max(1),
            resume: self.job.resume,
            reload: self.job.data_only && self.job.resume,
            ctx: self.ctx,
            meter: self.meter,
        }
    }

    /// A test hook: `FERRY_CRASH_AT=<point>` makes the process stop right there, as `kill -9` would (no
    /// rollback, no cleanup, no state saved; exit code 137), so the tests can land in the windows between a
    /// commit and the state file's next save: `tables-created`, `table-copied` (the first table committed;
    /// `table-copied:NAME` for that table), `constraints-added`, `validated`.
    pub(super) fn crash_point(&self, point: &str) {
        if self.crash_at == Some(point) {
            std::process::exit(137);
        }
    }

    /// Tells the observer a table is done, with the line `ferry migrate` prints for it, and adds its
    /// errors to the report.
    pub(super) fn table_done(&self, name: &str, copied: &Copied, report: &mut MigrateReport) {
        let d = &copied.done;
        self.ctx.emit(Event::TableDone {
            table: name.to_owned(),
            read: d.read,
            written: d.written,
            rejected: d.rejected,
            seconds: copied.seconds,
            line: format!(
                "  {:<28} {:>10} read = {:>10} written + {} rejected  {:.2} s",
                quote_ident(name),
                d.read,
                d.written,
                d.rejected,
                copied.seconds,
            ),
        });
        for e in &copied.errors {
            report.push_error(e);
        }
        report
            .not_created
            .extend(copied.not_created.iter().cloned());
    }

    /// A dry run: one connection each, one transaction, rolled back at the end.
    fn dry(
        &self,
        source: &mut Conn,
        target: &mut Conn,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        target
            .begin()
            .map_err(|r| r.error(self.target_label, "dry run"))?;
        let result = (|| {
            if !self.job.data_only {
                self.ctx.step("schema");
                for s in &ddl.create {
                    target.exec(s).map_err(|r| r.error(self.target_label, s))?;
                }
            }
            if !self.job.schema_only {
                self.ctx.step("copy");
                for (i, table) in self.tables.iter().enumerate() {
                    self.ctx.cancel.check()?;
                    let copied = copy_table(
                        source,
                        target,
                        table,
                        self.own_statements(ddl, i),
                        &self.context(false),
                    )?;
                    self.table_done(&table.name, &copied, report);
                    report.tables.push(table_report(&table.name, &copied));
                }
            }
            self.ctx.step("keys");
            self.after_data(target, &mut State::default(), ddl, report)?;
            if self.job.validate && !self.job.schema_only {
                self.ctx.step("validate");
                self.validate(target, report)?;
            }
            Ok(())
        })();
        target.rollback();
        result
    }

    /// A real run: tables created and committed, each table copied and committed by a worker, the state
    /// file kept before and after every step. A failed (or cancelled) first run drops what it created; a
    /// failed resumed run drops nothing (an earlier run finished some of it), so it can be resumed again
    /// or rolled back.
    fn real(&self, state: &mut State, ddl: &TargetDdl, report: &mut MigrateReport) -> Result<()> {
        let Err(e) = self.real_steps(state, ddl, report) else {
            return Ok(());
        };
        let shown = self.job.state.display();
        let undone = if self.job.resume {
            Ok(format!(
                "nothing was dropped (an earlier run copied part of it): fix the cause and continue with \
                 ferry migrate --resume {shown}, or undo it with --rollback {shown}"
            ))
        } else if state.created_tables.is_empty() && !state.created_file {
            // Nothing to undo: a new run may start over with this state file.
            state.phase = Phase::RolledBack;
            Ok(String::from("nothing had been created"))
        } else {
            rollback_state(state, self.target_db, &self.job.connect).map(|n| {
                format!(
                    "the {n} table(s) this run created were dropped, so the target is as it was"
                )
            })
        };
        let _ = state.save(&self.job.state);
        let note = match undone {
            Ok(note) => note,
            Err(r) => format!(
                "undoing it failed too ({}); ferry migrate --resume {shown} continues it, --rollback undoes it",
                r.message(),
            ),
        };
        if e.is_cancelled() {
            // The cancelled error keeps its own sentence; what was undone is told beside it.
            self.ctx.notice(format!("migration cancelled: {note}"));
            return Err(e);
        }
        Err(e.with_note(&format!("migration failed: {note}")))
    }

    fn real_steps(
        &self,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let state_path = &self.job.state;
        if state.phase == Phase::Planned {
            // What this migration is about to create is written down before any of it exists.
            state.tables = self.tables.iter().map(|t| t.name.clone()).collect();
            if !self.job.data_only {
                state.created_tables = state.tables.clone();
            }
            state.save(state_path)?;
        }
        let mut target = match self.target_db.open(&self.job.connect, true) {
            Ok(target) => target,
            Err(e) => {
                if state.phase == Phase::Planned && !self.job.resume {
                    // Not reached: nothing was created.
                    state.created_tables.clear();
                    state.created_file &= matches!(self.target_db, Db::Sqlite(p) if p.exists());
                }
                return Err(e);
            }
        };
        if state.phase == Phase::Planned {
            if !self.job.data_only {
                self.ctx.step("schema");
                self.create_tables(&mut target, state, ddl)?;
            }
            self.crash_point("tables-created");
            state.phase = if self.job.schema_only {
                Phase::Constraints
            } else {
                Phase::Copying
            };
            state.save(state_path)?;
        }
        if state.phase == Phase::Copying {
            self.ctx.cancel.check()?;
            self.ctx.step("copy");
            self.copy_all(state, ddl, report)?;
            state.phase = Phase::Constraints;
            state.save(state_path)?;
        } else {
            self.resumed_reports(state, report);
        }
        if state.phase == Phase::Constraints {
            self.ctx.cancel.check()?;
            self.ctx.step("keys");
            let what = "adding keys and constraints";
            target
                .begin()
                .map_err(|r| r.error(self.target_label, what))?;
            if let Err(e) = self.after_data(&mut target, state, ddl, report) {
                target.rollback();
                return Err(e);
            }
            target
                .exec("COMMIT")
                .map_err(|r| r.error(self.target_label, what))?;
            self.ctx.notice("foreign keys, sequences and views added");
            self.crash_point("constraints-added");
            state.phase = Phase::Validating;
            state.save(state_path)?;
        } else if state.phase == Phase::Validating {
            // Done by the interrupted run: only the views it made are counted again.
            self.count_views(&mut target, state, report)?;
        }
        if self.job.validate && !self.job.schema_only {
            self.ctx.cancel.check()?;
            self.ctx.step("validate");
            self.validate(&mut target, report)?;
        }
        self.crash_point("validated");
        state.phase = Phase::Done;
        state.save(state_path)
    }

    /// Creates the tables in one transaction; a resumed run skips those the target already has (the
    /// interrupted run committed them and was stopped before saying so).
    fn create_tables(&self, target: &mut Conn, state: &mut State, ddl: &TargetDdl) -> Result<()> {
        let statements = super::catalog::missing(target, &ddl.create, self.job.resume)?;
        target
            .begin()
            .map_err(|r| r.error(self.target_label, "BEGIN"))?;
        for s in &statements {
            if let Err(r) = target.exec(s) {
                target.rollback();
                if !self.job.resume {
                    // Rolled back: none of them was made, and a table someone else made is not ours to drop.
                    state.created_tables.clear();
                }
                return Err(r.error(self.target_label, s));
            }
        }
        target
            .exec("COMMIT")
            .map_err(|r| r.error(self.target_label, "COMMIT"))?;
        self.ctx.notice(format!(
            "created {} tables{}",
            statements.len(),
            match ddl.create.len() - statements.len() {
                0 => String::new(),
                n => format!(" ({n} made by the interrupted run)"),
            }
        ));
        Ok(())
    }

    /// Reports of the tables an interrupted run had finished.
    pub(super) fn resumed_reports(&self, state: &State, report: &mut MigrateReport) {
        for t in self.tables {
            if let Some(done) = state.finished.get(&t.name) {
                report.tables.push(TableReport {
                    name: t.name.clone(),
                    counts: Counts {
                        read: done.read,
                        written: done.written,
                        rejected: done.rejected,
                        ..Counts::default()
                    },
                    source_checksum: Some(done.checksum.clone()).filter(|c| !c.is_empty()),
                    resumed: true,
                    ..TableReport::default()
                });
            }
        }
    }

    /// A table's own keys, indexes and checks, run in its copy transaction (none for `--data-only`,
    /// whose tables have theirs).
    pub(super) fn own_statements<'d>(&self, ddl: &'d TargetDdl, i: usize) -> &'d [String] {
        match ddl.per_table.get(i) {
            Some(s) if !self.job.data_only => s,
            _ => &[],
        }
    }
}

/// A copied table's report.
pub(super) fn table_report(name: &str, copied: &Copied) -> TableReport {
    TableReport {
        name: name.to_owned(),
        counts: Counts {
            read: copied.done.read,
            written: copied.done.written,
            rejected: copied.done.rejected,
            ..Counts::default()
        },
        rejects_file: copied.rejects_file.clone(),
        source_checksum: Some(copied.done.checksum.clone()),
        target_checksum: copied.target.map(|c| c.hex()),
        target_rows: copied.target.map(|c| c.rows),
        seconds: copied.seconds,
        resumed: false,
        ..TableReport::default()
    }
}
