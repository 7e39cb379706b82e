//! Copying every table of a real run: `--jobs` workers, each with its own connections, take the unfinished
//! tables biggest first; each table is copied and committed on its own ([`copy_table`]), and the state file
//! says which table's copy began and which finished, so a killed run resumes at the right table. A worker
//! checks the cancellation token before every table (and the copy, between batches of rows).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::copy::copy_table;
use super::planning::TargetDdl;
use super::report::MigrateReport;
use super::run::{table_report, Run};
use super::state::State;
use crate::db::quote_ident;
use crate::error::{Error, Result};
use crate::report::MAX_REPORTED_ERRORS;

/// What the copy workers share: the state file's content, and a report of the tables they finished (their
/// counts, rejected rows and the keys and checks that failed or went in `NOT VALID`).
struct Shared {
    state: State,
    report: MigrateReport,
}

impl Run<'_> {
    /// Copies every unfinished table, `--jobs` at a time, biggest first.
    pub(super) fn copy_all(
        &self,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..self.tables.len())
            .filter(|&i| !state.finished.contains_key(&self.tables[i].name))
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.plan.tables[i].rows));
        let queue = Mutex::new(order.into_iter().collect::<VecDeque<usize>>());
        let shared = Mutex::new(Shared {
            state: std::mem::take(state),
            report: MigrateReport::default(),
        });
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        // A SQLite file has one writer at a time.
        let jobs = match self.target_db {
            super::conn::Db::Sqlite(_) => 1,
            super::conn::Db::Postgres(_) => self.job.jobs.max(1),
        };
        let workers = jobs.min(self.tables.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    if let Err(e) = self.worker(&queue, &shared, &stop, ddl) {
                        stop.store(true, Ordering::SeqCst);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                });
            }
        });
        let Shared {
            state: back,
            report: done,
        } = shared.into_inner().unwrap_or_else(|p| p.into_inner());
        *state = back;
        report.not_created.extend(done.not_created);
        let room = MAX_REPORTED_ERRORS.saturating_sub(report.errors.len());
        report.errors.extend(done.errors.into_iter().take(room));
        // Plan order: tables copied now, and those an interrupted run had finished.
        report.tables.clear();
        self.resumed_reports(state, report);
        for r in done.tables {
            report.tables.retain(|t| t.name != r.name);
            report.tables.push(r);
        }
        report
            .tables
            .sort_by_key(|r| self.tables.iter().position(|t| t.name == r.name));
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn worker(
        &self,
        queue: &Mutex<VecDeque<usize>>,
        shared: &Mutex<Shared>,
        stop: &AtomicBool,
        ddl: &TargetDdl,
    ) -> Result<()> {
        let mut source = self.source_db.open(&self.job.connect, false)?;
        let mut target = self.target_db.open(&self.job.connect, true)?;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            self.ctx.cancel.check()?;
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(i) = next else {
                return Ok(());
            };
            let table = &self.tables[i];
            let again = {
                let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                let state = &mut guard.state;
                let again = state.copying.contains(&table.name);
                if !again {
                    state.copying.push(table.name.clone());
                    state.save(&self.job.state)?;
                }
                again
            };
            let note = if again {
                " (again: it was being copied when the run stopped)"
            } else {
                ""
            };
            self.ctx
                .notice(format!("  copying {} …{note}", quote_ident(&table.name)));
            let copied = copy_table(
                &mut source,
                &mut target,
                table,
                self.own_statements(ddl, i),
                &self.context(true),
            )?;
            self.crash_point("table-copied");
            self.crash_point(&format!("table-copied:{}", table.name));
            let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
            let Shared { state, report } = &mut *guard;
            self.table_done(&table.name, &copied, report);
            state
                .finished
                .insert(table.name.clone(), copied.done.clone());
            state.copying.retain(|t| *t != table.name);
            state.save(&self.job.state)?;
            report.tables.push(table_report(&table.name, &copied));
        }
    }
}
