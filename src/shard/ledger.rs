//! The per-shard ledger, written in the target beside the rows: `_ferry_shards` holds one row per shard of a
//! sharded job (job id, shard, checksum, counts, finished time). A database sink writes its shard's row in the
//! same transaction as the shard's rows ([`commit_pg`], [`commit_sqlite`]), so a shard that is retried loads
//! nothing twice: either its row (and every one of its records) is there, or neither is.
//!
//! ```text
//! ferry run job.json --shard I ─► ledger: done? ─► yes: "already done"
//!                                               └► no: load rows ─► upsert ledger row ─► COMMIT
//! ```
//!
//! A failed attempt leaves a `failed` row (written after its rollback, in its own statement); a later attempt
//! replaces it. A `done` row is never replaced: a second attempt that reaches its commit while another one
//! already committed is refused by the upsert and rolls back whole.

use serde::Serialize;

use crate::error::{Error, Position, Result, Stage};
use crate::report::Counts;

/// The ledger table's name.
pub const TABLE: &str = "_ferry_shards";

const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS _ferry_shards (
    job_id text NOT NULL,
    shard integer NOT NULL,
    shards integer NOT NULL,
    status text NOT NULL,
    checksum text NOT NULL,
    read bigint NOT NULL DEFAULT 0,
    written bigint NOT NULL DEFAULT 0,
    rejected bigint NOT NULL DEFAULT 0,
    filtered bigint NOT NULL DEFAULT 0,
    skipped bigint NOT NULL DEFAULT 0,
    error text,
    finished timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, shard))";

const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS _ferry_shards (
    job_id TEXT NOT NULL,
    shard INTEGER NOT NULL,
    shards INTEGER NOT NULL,
    status TEXT NOT NULL,
    checksum TEXT NOT NULL,
    read INTEGER NOT NULL DEFAULT 0,
    written INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    filtered INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    finished TEXT NOT NULL,
    PRIMARY KEY (job_id, shard))";

/// The upsert both databases accept: a new row, or a `failed` one replaced; a `done` row stays, and the
/// statement then changes nothing (which the caller turns into a refusal).
const UPSERT: &str = "INSERT INTO _ferry_shards
    (job_id, shard, shards, status, checksum, read, written, rejected, filtered, skipped, error, finished)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FINISHED)
    ON CONFLICT (job_id, shard) DO UPDATE SET
      shards = excluded.shards, status = excluded.status, checksum = excluded.checksum,
      read = excluded.read, written = excluded.written, rejected = excluded.rejected,
      filtered = excluded.filtered, skipped = excluded.skipped, error = excluded.error,
      finished = excluded.finished
    WHERE _ferry_shards.status <> 'done'";

const FINISHED_PG: &str = "now()";
const FINISHED_SQLITE: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// One shard's ledger row, as a run writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The sharded job's id.
    pub job_id: String,
    /// The shard's index (from 0, as `--shard` and `$JOB_COMPLETION_INDEX` count).
    pub shard: u32,
    /// How many shards the job has.
    pub shards: u32,
    /// SHA-256 of the shard's definition (the job and the shard's part of it), hex: a row written under
    /// another plan does not count as this shard's.
    pub checksum: String,
    /// The shard run's counts.
    pub counts: Counts,
}

/// A shard's row as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The shard.
    pub shard: u32,
    /// `done` or `failed`.
    pub status: String,
    /// The checksum it was written with.
    pub checksum: String,
    /// Its counts.
    pub counts: Counts,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was written (RFC 3339).
    pub finished: String,
}

/// The message of an attempt whose commit found the shard done by another one.
pub fn done_elsewhere(entry: &Entry) -> Error {
    Error::data(
        Stage::Sink,
        Position::default(),
        format!(
            "shard {} of job {} was committed by another attempt while this one ran; this attempt's rows were \
             rolled back, so nothing is loaded twice",
            entry.shard, entry.job_id
        ),
    )
}

fn counts_of(c: &Counts) -> [i64; 5] {
    [c.read, c.written, c.rejected, c.filtered, c.skipped].map(|n| n as i64)
}

/// Creates the ledger table when it is missing (two shards starting at once may race on PostgreSQL's
/// catalog: the loser's duplicate is the winner's table, and is ignored).
pub fn create_pg(client: &mut postgres::Client) -> std::result::Result<(), postgres::Error> {
    match client.batch_execute(CREATE_PG) {
        Err(e) if matches!(e.code().map(|c| c.code()), Some("23505") | Some("42P07")) => Ok(()),
        other => other,
    }
}

/// Creates the ledger table in a SQLite database when it is missing.
pub fn create_sqlite(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(CREATE_SQLITE)
}

/// Writes `entry` as `done` in the open transaction of `client`; `Ok(false)` when the shard was already done.
pub fn commit_pg(
    client: &mut postgres::Client,
    entry: &Entry,
) -> std::result::Result<bool, postgres::Error> {
    create_pg(client)?;
    upsert_pg(client, entry, "done", None).map(|changed| changed == 1)
}

/// Writes `entry` as `done` in the open transaction of `conn`; `Ok(false)` when the shard was already done.
pub fn commit_sqlite(conn: &rusqlite::Connection, entry: &Entry) -> rusqlite::Result<bool> {
    create_sqlite(conn)?;
    upsert_sqlite(conn, entry, "done", None).map(|changed| changed == 1)
}

fn upsert_pg(
    client: &mut postgres::Client,
    entry: &Entry,
    status: &str,
    error: Option<&str>,
) -> std::result::Result<u64, postgres::Error> {
    let [read, written, rejected, filtered, skipped] = counts_of(&entry.counts);
    client.execute(
        &UPSERT.replace("FINISHED", FINISHED_PG),
        &[
            &entry.job_id,
            &(entry.shard as i32),
            &(entry.shards as i32),
            &status,
            &entry.checksum,
            &read,
            &written,
            &rejected,
            &filtered,
            &skipped,
            &error,
        ],
    )
}

fn upsert_sqlite(
    conn: &rusqlite::Connection,
    entry: &Entry,
    status: &str,
    error: Option<&str>,
) -> rusqlite::Result<usize> {
    let [read, written, rejected, filtered, skipped] = counts_of(&entry.counts);
    conn.execute(
        &UPSERT.replace("FINISHED", FINISHED_SQLITE),
        rusqlite::params![
            entry.job_id,
            entry.shard,
            entry.shards,
            status,
            entry.checksum,
            read,
            written,
            rejected,
            filtered,
            skipped,
            error,
        ],
    )
}

/// A connection to the ledger's database, opened by the shard commands (not by a load: that one writes
/// through its sink's own transaction).
pub enum Ledger {
    /// PostgreSQL.
    Postgres(Box<postgres::Client>),
    /// SQLite.
    Sqlite(rusqlite::Connection),
}

impl Ledger {
    /// Opens the ledger of the database `endpoint` names and creates its table when missing.
    pub fn open(
        endpoint: &crate::db::DbEndpoint,
        connect: &crate::db::ConnectOptions,
    ) -> Result<Ledger> {
        let shown = endpoint.to_string();
        if endpoint.database.name == "sqlite" {
            let fail = |e| crate::db::sqlite::sql_error(Stage::Sink, &shown, "shard ledger", e);
            let conn = rusqlite::Connection::open(endpoint.connection()).map_err(fail)?;
            conn.busy_timeout(std::time::Duration::from_secs(60))
                .and_then(|()| create_sqlite(&conn))
                .map_err(fail)?;
            return Ok(Ledger::Sqlite(conn));
        }
        let mut client = crate::db::postgres::connect(endpoint, connect, Stage::Sink)?;
        create_pg(&mut client).map_err(|e| {
            crate::db::postgres::pg_error(Stage::Sink, &format!("{shown}: shard ledger"), &e)
        })?;
        Ok(Ledger::Postgres(Box::new(client)))
    }

    /// The rows of job `job_id`, by shard.
    pub fn rows(&mut self, job_id: &str) -> Result<Vec<Row>> {
        const SELECT: &str =
            "SELECT shard, status, checksum, read, written, rejected, filtered, skipped, \
             error, FINISHED FROM _ferry_shards WHERE job_id = $1 ORDER BY shard";
        match self {
            Ledger::Postgres(client) => {
                let sql = SELECT.replace(
                    "FINISHED",
                    "to_char(finished AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                );
                let rows = client.query(&sql, &[&job_id]).map_err(|e| {
                    crate::db::postgres::pg_error(Stage::Source, "cannot read the shard ledger", &e)
                })?;
                Ok(rows
                    .iter()
                    .map(|r| Row {
                        shard: r.get::<_, i32>(0) as u32,
                        status: r.get(1),
                        checksum: r.get(2),
                        counts: Counts {
                            read: r.get::<_, i64>(3) as u64,
                            written: r.get::<_, i64>(4) as u64,
                            rejected: r.get::<_, i64>(5) as u64,
                            filtered: r.get::<_, i64>(6) as u64,
                            skipped: r.get::<_, i64>(7) as u64,
                        },
                        error: r.get(8),
                        finished: r.get(9),
                    })
                    .collect())
            }
            Ledger::Sqlite(conn) => {
                let fail = |e| {
                    crate::db::sqlite::sql_error(
                        Stage::Source,
                        TABLE,
                        "cannot read the shard ledger",
                        e,
                    )
                };
                let sql = SELECT.replace("FINISHED", "finished");
                let mut statement = conn.prepare(&sql).map_err(fail)?;
                let rows = statement
                    .query_map([job_id], |r| {
                        let n = |i: usize| r.get::<_, i64>(i).map(|v| v as u64);
                        Ok(Row {
                            shard: r.get(0)?,
                            status: r.get(1)?,
                            checksum: r.get(2)?,
                            counts: Counts {
                                read: n(3)?,
                                written: n(4)?,
                                rejected: n(5)?,
                                filtered: n(6)?,
                                skipped: n(7)?,
                            },
                            error: r.get(8)?,
                            finished: r.get(9)?,
                        })
                    })
                    .map_err(fail)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(fail)
            }
        }
    }

    /// Notes a failed attempt of `entry`'s shard (its rows were rolled back). A `done` row stays as it is.
    pub fn record_failure(&mut self, entry: &Entry, error: &str) -> Result<()> {
        match self {
            Ledger::Postgres(client) => upsert_pg(client, entry, "failed", Some(error))
                .map(drop)
                .map_err(|e| {
                    crate::db::postgres::pg_error(Stage::Sink, "cannot write the shard ledger", &e)
                }),
            Ledger::Sqlite(conn) => upsert_sqlite(conn, entry, "failed", Some(error))
                .map(drop)
                .map_err(|e| {
                    crate::db::sqlite::sql_error(
                        Stage::Sink,
                        TABLE,
                        "cannot write the shard ledger",
                        e,
                    )
                }),
        }
    }
}
