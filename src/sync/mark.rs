//! Sync, the high-water marks: a small `_ferry_state` table in the target, one row per source and table
//! (and one for the change log of trigger capture). A mark is written by the same transaction that loads
//! the rows it covers, so it can never move past a load that did not commit: a run killed between the
//! load and the commit leaves both the rows and the old mark, and the next run loads the same rows again
//! (merged by key, nothing doubled).

use crate::error::{Error, Result, Stage};
use crate::migrate::Conn;

/// The table that keeps the marks, in the target.
pub const STATE_TABLE: &str = "_ferry_state";

fn sqlite_fail(what: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| crate::db::sqlite::sql_error(Stage::Sink, STATE_TABLE, what, e)
}

fn pg_fail(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| crate::db::postgres::pg_error(Stage::Sink, what, &e)
}

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS _ferry_state (source TEXT NOT NULL, table_name TEXT NOT NULL, \
     mark TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (source, table_name))";

/// Creates `_ferry_state` when the target has none.
pub fn ensure(target: &mut Conn) -> Result<()> {
    let what = "creating _ferry_state";
    match target {
        Conn::Sqlite(c) => c.execute_batch(CREATE).map_err(sqlite_fail(what)),
        Conn::Postgres(c) => c.batch_execute(CREATE).map_err(pg_fail(what)),
    }
}

/// The mark stored for `table` of `source` (JSON text), if a load committed one.
pub fn read(target: &mut Conn, source: &str, table: &str) -> Result<Option<serde_json::Value>> {
    let what = "reading _ferry_state";
    let text: Option<String> = match target {
        Conn::Sqlite(c) => {
            let mut s = c
                .prepare_cached(
                    "SELECT mark FROM _ferry_state WHERE source = ?1 AND table_name = ?2",
                )
                .map_err(sqlite_fail(what))?;
            let mut rows = s.query([source, table]).map_err(sqlite_fail(what))?;
            match rows.next().map_err(sqlite_fail(what))? {
                Some(r) => Some(r.get(0).map_err(sqlite_fail(what))?),
                None => None,
            }
        }
        Conn::Postgres(c) => c
            .query_opt(
                "SELECT mark FROM _ferry_state WHERE source = $1 AND table_name = $2",
                &[&source, &table],
            )
            .map_err(pg_fail(what))?
            .map(|r| r.get(0)),
    };
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            Error::config(format!(
                "_ferry_state: the mark of {table} is not readable ({e}); delete its row to load the table again"
            ))
        })
    })
    .transpose()
}

/// Stores `mark` for `table` of `source`: call inside the load's transaction.
pub fn write(target: &mut Conn, source: &str, table: &str, mark: &serde_json::Value) -> Result<()> {
    let what = "writing _ferry_state";
    match target {
        Conn::Sqlite(c) => write_sqlite(c, source, table, mark).map_err(sqlite_fail(what)),
        Conn::Postgres(c) => write_pg(c, source, table, mark).map_err(pg_fail(what)),
    }
}

/// [`write`] on a SQLite connection a loader holds (creating `_ferry_state` first when needed).
pub fn write_sqlite(
    c: &rusqlite::Connection,
    source: &str,
    table: &str,
    mark: &serde_json::Value,
) -> rusqlite::Result<()> {
    c.execute_batch(CREATE)?;
    c.execute(
        "INSERT INTO _ferry_state (source, table_name, mark, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (source, table_name) DO UPDATE SET mark = excluded.mark, updated_at = excluded.updated_at",
        [source, table, &mark.to_string(), &chrono::Utc::now().to_rfc3339()],
    )
    .map(drop)
}

/// [`write`] on a PostgreSQL connection a loader holds (creating `_ferry_state` first when needed).
pub fn write_pg(
    c: &mut postgres::Client,
    source: &str,
    table: &str,
    mark: &serde_json::Value,
) -> std::result::Result<(), postgres::Error> {
    c.batch_execute(CREATE)?;
    c.execute(
        "INSERT INTO _ferry_state (source, table_name, mark, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (source, table_name) DO UPDATE SET mark = EXCLUDED.mark, updated_at = EXCLUDED.updated_at",
        &[&source, &table, &mark.to_string(), &chrono::Utc::now().to_rfc3339()],
    )
    .map(drop)
}

/// A mark a table loader writes in its own transaction, just before it commits (`ferry convert
/// --incremental` into a database).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingMark {
    /// The source, as `_ferry_state` names it.
    pub source: String,
    /// What the mark is of (`convert:<target table>:<cursor>`).
    pub table: String,
    /// The new mark.
    pub mark: serde_json::Value,
    /// The test hook `FERRY_CRASH_AT=convert-loaded`: the process stops after the rows and the mark are
    /// written and before the commit, as `kill -9` would.
    pub crash_before_commit: bool,
}

impl PendingMark {
    /// Stops the process here when the test hook asks for it.
    pub fn crash_point(&self) {
        if self.crash_before_commit {
            std::process::exit(137);
        }
    }
}

/// Forgets every mark of `source` (a sync started over, or `--uninstall`).
pub fn forget(target: &mut Conn, source: &str) -> Result<()> {
    let what = "clearing _ferry_state";
    match target {
        Conn::Sqlite(c) => c
            .execute("DELETE FROM _ferry_state WHERE source = ?1", [source])
            .map(drop)
            .map_err(sqlite_fail(what)),
        Conn::Postgres(c) => c
            .execute("DELETE FROM _ferry_state WHERE source = $1", &[&source])
            .map(drop)
            .map_err(pg_fail(what)),
    }
}
