//! `ferry migrate --incremental`: a finished migration run again, moving only what changed per table —
//! by the `--cursor` column where a table has one, else by key and row checksum — with deleted rows
//! deleted. A large database is copied once while the application runs; this catches it up during the
//! downtime window. It is one [sync](super) pass over the migration's tables, reported as a migration.

use std::time::Instant;

use super::{sync, Capture, Deletes, SyncJob};
use crate::env::Environment;
use crate::error::Error;
use crate::migrate::state::{Phase, State};
use crate::migrate::{MigrateJob, MigrateReport, TableReport};
use crate::observe::{Event, Failed, RunContext, RunResult, Status};
use crate::report::Counts;

/// Runs `job` (with `incremental`) against the finished migration its state file describes.
pub fn catch_up(job: &MigrateJob, env: &Environment, ctx: &RunContext) -> RunResult<MigrateReport> {
    let started = Instant::now();
    let mut report = MigrateReport {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        on_error: job.on_error.name().into(),
        state_file: Some(job.state.display().to_string()),
        ..MigrateReport::default()
    };
    let result = plan(job).and_then(|sync_job| {
        report.source = crate::migrate::state::without_password(&sync_job.from);
        report.target = crate::migrate::state::without_password(&sync_job.to);
        sync(&sync_job, env, ctx).map_err(|f| f.error)
    });
    match result {
        Ok(done) => {
            for t in &done.tables {
                let m = &t.moved;
                ctx.emit(Event::TableDone {
                    table: t.table.clone(),
                    read: m.read,
                    written: m.inserted + m.updated,
                    rejected: 0,
                    seconds: 0.0,
                    line: format!(
                        "  {:<28} by {:<8} {:>8} read, {} inserted, {} updated, {} unchanged, {} deleted",
                        crate::db::quote_ident(&t.table),
                        t.by,
                        m.read,
                        m.inserted,
                        m.updated,
                        m.unchanged,
                        m.deleted
                    ),
                });
                report.tables.push(TableReport {
                    name: t.table.clone(),
                    counts: Counts {
                        read: m.read,
                        written: m.inserted + m.updated,
                        skipped: m.unchanged,
                        ..Counts::default()
                    },
                    deleted: m.deleted,
                    ..TableReport::default()
                });
            }
            report.add_up();
            report.status = Status::Succeeded;
            report.seconds = started.elapsed().as_secs_f64();
            ctx.emit(Event::Finished {
                status: report.status,
                progress: report.progress(),
            });
            Ok(report)
        }
        Err(error) => {
            report.status = match error.is_cancelled() {
                true => Status::Cancelled,
                false => Status::Failed,
            };
            report.push_error(&error);
            report.seconds = started.elapsed().as_secs_f64();
            ctx.emit(Event::Finished {
                status: report.status,
                progress: report.progress(),
            });
            Err(Box::new(Failed { report, error }))
        }
    }
}

/// The sync pass a `--incremental` job asks for, from the job and its finished migration's state.
fn plan(job: &MigrateJob) -> crate::error::Result<SyncJob> {
    let state = State::load(&job.state)?;
    if state.phase != Phase::Done {
        return Err(Error::config(format!(
            "--incremental catches up a finished migration, and {} is at phase {:?}: finish it first (--resume)",
            job.state.display(),
            state.phase
        )));
    }
    let tables = match job.tables.is_empty() {
        true => state.tables.clone(),
        false => job.tables.clone(),
    };
    Ok(SyncJob {
        from: job.from.clone().unwrap_or(state.source),
        to: job.to.clone().unwrap_or(state.target),
        tables,
        exclude: job.exclude.clone(),
        capture: Capture::Cursor,
        cursor: job.cursor.clone(),
        deletes: Deletes::Delete,
        every: None,
        cutover: false,
        passes: 1,
        cast_rules: job.cast_rules.clone().or(state.cast_rules),
        connect: job.connect,
        jobs: job.jobs.max(1),
    })
}
