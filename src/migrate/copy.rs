//! Copying one table: its rows read from the source as [`Datum`](super::value::Datum)s of their planned
//! types and loaded into the target (binary COPY or prepared inserts), its own keys, indexes and checks
//! added in the same transaction, and the table read back for validation. Rows whose values do not fit go
//! to the [rejects file](crate::rejects) under a lenient policy. After every batch of rows the run's
//! observer hears the counts and the cancellation token is checked.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::catalog::missing;
use super::conn::{Conn, Db, Refusal};
use super::report::NotCreated;
use super::rows::{loader, scan, CopyTable, Misfit};
use super::state::TableDone;
use super::value::TableChecksum;
use crate::db::{quote_ident, ConnectOptions};
use crate::error::{Error, Position, Result, Stage};
use crate::observe::{Event, Progress, RunContext};
use crate::pipeline::ErrorPolicy;
use crate::rejects::{file_stem, RejectsWriter};
use crate::report::Counts;
use crate::report::MAX_REPORTED_ERRORS;

/// Rows copied between two reports to the observer (and two looks at the cancellation token).
const BATCH_ROWS: u64 = 4096;

/// Tables of more pages than this are read back by up to `--jobs` connections at once (each a TID range);
/// the checksum is order-independent, so the parts just add up.
const PARALLEL_READ_PAGES: u64 = 2048;

/// The run's row counts as every copy worker adds to them, and what the observer is told.
pub(crate) struct Meter {
    read: AtomicU64,
    written: AtomicU64,
    rejected: AtomicU64,
    /// Rows in all, as the plan counted them (an estimate for PostgreSQL).
    total: u64,
    started: Instant,
}

impl Meter {
    /// A meter for a run of about `total` rows.
    pub(crate) fn new(total: u64) -> Meter {
        Meter {
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            total,
            started: Instant::now(),
        }
    }

    /// Adds a batch of `table`'s rows and tells the observer where the run stands.
    fn add(&self, ctx: &RunContext, table: &str, read: u64, written: u64, rejected: u64) {
        let progress = Progress {
            counts: Counts {
                read: self.read.fetch_add(read, Ordering::Relaxed) + read,
                written: self.written.fetch_add(written, Ordering::Relaxed) + written,
                rejected: self.rejected.fetch_add(rejected, Ordering::Relaxed) + rejected,
                ..Counts::default()
            },
            total_records: Some(self.total),
            table: Some(table.to_owned()),
            seconds: self.started.elapsed().as_secs_f64(),
            ..Progress::default()
        };
        ctx.emit(Event::Progress(progress));
    }
}

/// What copying one table did.
pub(crate) struct Copied {
    pub done: TableDone,
    pub rejects_file: Option<String>,
    pub seconds: f64,
    /// Keys and checks that failed or were added NOT VALID (lenient runs).
    pub not_created: Vec<NotCreated>,
    /// The table as read back from the target (when validating).
    pub target: Option<TableChecksum>,
    /// The first rows rejected, as errors for the report.
    pub errors: Vec<Error>,
}

/// What every table's copy shares.
pub(crate) struct CopyContext<'a> {
    pub source_label: &'a str,
    pub target_label: &'a str,
    pub policy: ErrorPolicy,
    pub rejects_dir: &'a Path,
    /// The table was made by this migration: empty it first (a resumed table) and let PostgreSQL skip
    /// its row-visibility work (`COPY … FREEZE`).
    pub fresh: bool,
    /// Run inside the caller's transaction (a dry run) rather than one per table.
    pub own_transaction: bool,
    /// Read each table back after its copy.
    pub validate: bool,
    /// The target, for the extra connections that read a big table back in parallel.
    pub target_db: &'a Db,
    /// Connection options for those.
    pub connect: &'a ConnectOptions,
    /// Connections a read-back may use at once.
    pub jobs: usize,
    /// A resumed run: keys, indexes and checks the interrupted run committed with the rows are skipped.
    pub resume: bool,
    /// A resumed `--data-only` run: its tables were empty when the migration began, so rows in a table
    /// not finished are the interrupted copy's, deleted before it is loaded again.
    pub reload: bool,
    /// Who watches the run, and its cancellation token.
    pub ctx: &'a RunContext,
    /// The run's counts.
    pub meter: &'a Meter,
}

/// The error for a value that does not fit its column; `hint` adds what `--on-error lenient` would do.
fn misfit_error(label: &str, table: &str, m: &Misfit, hint: bool) -> Error {
    Error::data(
        Stage::Decode,
        Position::file(label)
            .with_record(u64::try_from(m.row).unwrap_or(0))
            .with_field(m.column.clone()),
        format!(
            "table {}, row {}, column {}: {}: {}{}",
            quote_ident(table),
            m.row,
            quote_ident(&m.column),
            m.value,
            m.reason,
            if hint {
                "; --on-error lenient sends such rows to a rejects file"
            } else {
                ""
            }
        ),
    )
}

/// Copies one table and adds its keys, indexes and checks: all of it commits, or none. Then reads it
/// back for validation when asked.
pub(crate) fn copy_table(
    source: &mut Conn,
    target: &mut Conn,
    table: &CopyTable,
    statements: &[String],
    cx: &CopyContext<'_>,
) -> Result<Copied> {
    let started = Instant::now();
    let what = format!("loading table {}", quote_ident(&table.name));
    if cx.own_transaction {
        target
            .begin()
            .map_err(|r| r.error(cx.target_label, &what))?;
    }
    let result = copy_rows(source, target, table, cx).and_then(|mut copied| {
        let statements = missing(target, statements, cx.resume)?;
        copied.not_created = run_statements(target, &statements, cx.policy, cx.target_label)?;
        Ok(copied)
    });
    let mut copied = match result {
        Ok(copied) => copied,
        Err(e) => {
            if cx.own_transaction {
                target.rollback();
            }
            return Err(e);
        }
    };
    if cx.own_transaction {
        target
            .exec("COMMIT")
            .map_err(|r| r.error(cx.target_label, &what))?;
    }
    copied.seconds = started.elapsed().as_secs_f64();
    if cx.validate {
        copied.target = Some(parallel_checksum(target, cx, table)?);
    }
    Ok(copied)
}

/// Runs `sql` under a savepoint, so a failure leaves the transaction usable.
pub(crate) fn savepoint(target: &mut Conn, sql: &str) -> std::result::Result<(), Refusal> {
    target.exec("SAVEPOINT ferry_ddl")?;
    match target.exec(sql) {
        Ok(()) => target.exec("RELEASE SAVEPOINT ferry_ddl"),
        Err(r) => {
            let _ = target.exec("ROLLBACK TO SAVEPOINT ferry_ddl");
            Err(r)
        }
    }
}

/// Runs after-data statements on the caller's transaction. Strict: the first failure fails. Otherwise
/// each runs under a savepoint, and a CHECK or foreign key the data breaks is added `NOT VALID` (enforced
/// for new rows) and reported.
pub(crate) fn run_statements(
    target: &mut Conn,
    statements: &[String],
    policy: ErrorPolicy,
    label: &str,
) -> Result<Vec<NotCreated>> {
    let mut not_created = Vec::new();
    for s in statements {
        if policy == ErrorPolicy::Strict || !target.is_postgres() {
            target.exec(s).map_err(|r| r.error(label, s))?;
            continue;
        }
        if let Err(refusal) = savepoint(target, s) {
            let can_defer = s.contains(" CHECK (") || s.contains(" FOREIGN KEY (");
            let retried = can_defer && savepoint(target, &format!("{s} NOT VALID")).is_ok();
            not_created.push(NotCreated {
                statement: s.clone(),
                reason: refusal.message,
                not_valid: retried,
            });
        } else if s.ends_with(" NOT VALID") {
            not_created.push(NotCreated {
                statement: s.clone(),
                reason: "the source already breaks this key".into(),
                not_valid: true,
            });
        }
    }
    Ok(not_created)
}

/// Rows of one table as the copy counts them between two reports to the observer.
#[derive(Default)]
struct Batch {
    read: u64,
    written: u64,
    rejected: u64,
}

impl Batch {
    /// Hands the batch to the meter and checks the cancellation token.
    fn report(&mut self, cx: &CopyContext<'_>, table: &str) -> Result<()> {
        let batch = std::mem::take(self);
        cx.meter
            .add(cx.ctx, table, batch.read, batch.written, batch.rejected);
        cx.ctx.cancel.check()
    }
}

fn copy_rows(
    source: &mut Conn,
    target: &mut Conn,
    table: &CopyTable,
    cx: &CopyContext<'_>,
) -> Result<Copied> {
    let fresh_freeze = cx.fresh && cx.own_transaction && target.is_postgres();
    if cx.fresh || cx.reload {
        // A reload keeps DELETE: TRUNCATE refuses a table other tables' foreign keys point at.
        let empty = if cx.fresh && target.is_postgres() {
            format!("TRUNCATE {}", quote_ident(&table.name))
        } else {
            format!("DELETE FROM {}", quote_ident(&table.name))
        };
        target.exec(&empty).map_err(|r| {
            r.error(
                cx.target_label,
                &format!("emptying {}", quote_ident(&table.name)),
            )
        })?;
    }
    let rejects_path = cx
        .rejects_dir
        .join(format!("{}.rejects.ndjson", file_stem(&table.name)));
    let mut rejects = RejectsWriter::new(&rejects_path);
    let mut errors = Vec::new();
    let mut checksum = TableChecksum::default();
    let (mut read, mut rejected) = (0u64, 0u64);
    let mut batch = Batch::default();
    let mut target_side = target.side();
    let mut load = loader(&mut target_side, cx.target_label, table, fresh_freeze)?;
    // Without validation nothing is hashed, so JSON is only checked, never built.
    let unhashed = CopyTable {
        hashed: cx.validate,
        ..table.clone()
    };
    scan(&mut source.side(), cx.source_label, &unhashed, &mut |row| {
        read += 1;
        batch.read += 1;
        match row {
            Ok(values) => {
                if cx.validate {
                    checksum.add(&values);
                }
                load.push(&values)?;
                batch.written += 1;
            }
            Err(m) if cx.policy == ErrorPolicy::Strict => {
                return Err(misfit_error(cx.source_label, &table.name, &m, true))
            }
            Err(m) => {
                if rejected == 0 {
                    std::fs::create_dir_all(cx.rejects_dir).map_err(|e| {
                        Error::io(Stage::Sink, Some(&cx.rejects_dir.display().to_string()), e)
                    })?;
                }
                rejected += 1;
                batch.rejected += 1;
                let error = misfit_error(cx.source_label, &table.name, &m, false);
                rejects.write_row(
                    u64::try_from(m.row).unwrap_or(0),
                    &table.name,
                    &m.record,
                    std::slice::from_ref(&error),
                )?;
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(error);
                }
            }
        }
        if batch.read >= BATCH_ROWS {
            batch.report(cx, &table.name)?;
        }
        Ok(true)
    })?;
    let written = load.finish()?;
    batch.report(cx, &table.name)?;
    let rejects_file = (rejected > 0).then(|| rejects.path().display().to_string());
    rejects.finish()?;
    Ok(Copied {
        done: TableDone {
            read,
            written,
            rejected,
            // Empty when not validating: nothing was hashed.
            checksum: if cx.validate {
                checksum.hex()
            } else {
                String::new()
            },
        },
        rejects_file,
        seconds: 0.0,
        not_created: Vec::new(),
        target: None,
        errors,
    })
}

/// Reads `table` back from the target and checksums it, with up to `--jobs` connections for a big
/// PostgreSQL table.
pub(crate) fn parallel_checksum(
    target: &mut Conn,
    cx: &CopyContext<'_>,
    table: &CopyTable,
) -> Result<TableChecksum> {
    // Other connections cannot see a dry run's uncommitted rows.
    let pages = match target {
        Conn::Postgres(client) if cx.jobs > 1 && cx.own_transaction => client
            .query_one(
                "SELECT (pg_relation_size(quote_ident($1)) / current_setting('block_size')::bigint)::bigint",
                &[&table.name],
            )
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            .unwrap_or(0),
        _ => 0,
    };
    if pages < PARALLEL_READ_PAGES {
        return target_checksum(target, cx.target_label, table);
    }
    let parts = cx.jobs as u64;
    let part = |i: u64| {
        let mut t = table.clone();
        // The last part reads to the end, whatever the table has grown to.
        let to = if i + 1 == parts {
            u64::from(u32::MAX)
        } else {
            pages * (i + 1) / parts
        };
        t.pages = Some((pages * i / parts, to));
        t
    };
    let mut sum = TableChecksum::default();
    std::thread::scope(|s| {
        let others: Vec<_> = (1..parts)
            .map(|i| {
                let t = part(i);
                s.spawn(move || {
                    let mut conn = cx.target_db.open(cx.connect, false)?;
                    target_checksum(&mut conn, cx.target_label, &t)
                })
            })
            .collect();
        let first = target_checksum(target, cx.target_label, &part(0));
        let mut result = first.map(|c| sum.merge(c));
        for handle in others {
            let joined = handle.join().unwrap_or_else(|_| {
                Err(Error::data(
                    Stage::Source,
                    Position::file(cx.target_label),
                    "a read-back thread stopped unexpectedly",
                ))
            });
            if result.is_ok() {
                result = joined.map(|c| sum.merge(c));
            }
        }
        result
    })?;
    Ok(sum)
}

/// Reads a table back from the target and checksums it.
pub(crate) fn target_checksum(
    target: &mut Conn,
    label: &str,
    table: &CopyTable,
) -> Result<TableChecksum> {
    let mut checksum = TableChecksum::default();
    let mut bad = None;
    scan(&mut target.side(), label, table, &mut |row| {
        match row {
            Ok(values) => checksum.add(&values),
            Err(m) => {
                bad = Some(format!(
                    "row {}, column {}: {}",
                    m.row,
                    quote_ident(&m.column),
                    m.reason
                ));
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    match bad {
        Some(reason) => Err(Refusal::from(reason)
            .error(label, &format!("reading back {}", quote_ident(&table.name)))),
        None => Ok(checksum),
    }
}
