//! The two databases of a migration: [`Db`] names one (parsed once, with the run's environment), [`Conn`]
//! is an open connection to it, with the few catalog questions and statements the run asks of either kind.
//! A statement the target refuses comes back as a [`Refusal`] that keeps the database's SQLSTATE.

use std::path::PathBuf;

use postgres::Client;
use rusqlite::Connection;

use super::rows::Side;
use crate::db::{quote_ident, ConnectOptions, DbEndpoint};
use crate::env::Environment;
use crate::error::{DbCause, Error, Position, Result, Stage};

/// A database the migration reads or writes.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(DbEndpoint),
}

/// An open connection.
pub enum Conn {
    /// SQLite.
    Sqlite(Connection),
    /// PostgreSQL.
    Postgres(Client),
}

/// Why the target refused a statement: the database's message, and its account of it (SQLSTATE,
/// constraint, table, column) where it gave one.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The database's message.
    pub message: String,
    /// The database's account.
    pub cause: Option<DbCause>,
}

impl Refusal {
    fn sqlite(e: &rusqlite::Error) -> Refusal {
        Refusal {
            message: e.to_string(),
            cause: crate::db::sqlite::cause(e),
        }
    }

    fn postgres(e: &postgres::Error) -> Refusal {
        Refusal {
            message: match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            },
            cause: crate::db::postgres::cause(e),
        }
    }

    /// The data error of a run whose target `label` refused `what`, with the database's cause kept.
    pub(crate) fn error(self, label: &str, what: &str) -> Error {
        let error = Error::data(
            Stage::Sink,
            Position::file(label),
            format!("{label}: {what}: {}", self.message),
        );
        match self.cause {
            Some(cause) => error.with_db_cause(cause),
            None => error,
        }
    }
}

impl From<String> for Refusal {
    fn from(message: String) -> Refusal {
        Refusal {
            message,
            cause: None,
        }
    }
}

impl Db {
    /// Parses `--from`/`--to` (`flag` names it in errors); `postgres` and `sqlite` alone read `env`.
    pub fn parse(text: &str, flag: &str, env: &Environment) -> Result<Db> {
        let endpoint = DbEndpoint::parse(text, env)?.ok_or_else(|| {
            Error::config(format!(
                "{flag} {text}: not a database (sqlite://PATH, a .db path, postgres://…, `postgres` or `sqlite`)"
            ))
        })?;
        if endpoint.table.is_some() || endpoint.query.is_some() {
            return Err(Error::config(format!(
                "{flag}: migrate moves whole databases; choose tables with --tables, not ?table= or ?query="
            )));
        }
        Ok(match endpoint.database.name {
            "sqlite" => Db::Sqlite(PathBuf::from(endpoint.connection())),
            _ => Db::Postgres(endpoint),
        })
    }

    /// How the database is shown (never with a password).
    pub fn label(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(endpoint) => endpoint.to_string(),
        }
    }

    /// The URL that reads one table of this database through the convert pipeline (may hold a password:
    /// never print it).
    pub(crate) fn table_url(&self, table: &str) -> String {
        let table =
            percent_encoding::utf8_percent_encode(table, percent_encoding::NON_ALPHANUMERIC);
        match self {
            Db::Sqlite(path) => format!("sqlite://{}?table={table}", path.display()),
            Db::Postgres(endpoint) => {
                let base = endpoint.connection();
                let join = if base.contains('?') { '&' } else { '?' };
                format!("{base}{join}table={table}")
            }
        }
    }

    /// Opens a connection: read-only for a SQLite source; a SQLite target is created when missing.
    pub fn open(&self, connect: &ConnectOptions, write: bool) -> Result<Conn> {
        match self {
            Db::Sqlite(path) if !write => Ok(Conn::Sqlite(super::introspect::open(path)?)),
            Db::Sqlite(path) => {
                let shown = path.display().to_string();
                let fail =
                    |what: &str, e| crate::db::sqlite::sql_error(Stage::Sink, &shown, what, e);
                let conn = Connection::open(path).map_err(|e| fail("cannot open", e))?;
                conn.busy_timeout(std::time::Duration::from_secs(30))
                    .and_then(|()| conn.execute_batch("PRAGMA foreign_keys = OFF"))
                    .map_err(|e| fail("cannot set up", e))?;
                Ok(Conn::Sqlite(conn))
            }
            Db::Postgres(endpoint) => {
                let stage = if write { Stage::Sink } else { Stage::Source };
                let mut client = crate::db::postgres::connect(endpoint, connect, stage)?;
                // Date-time text without an offset is UTC, and no statement may hang forever on a lock.
                client
                    .batch_execute(
                        "SET TimeZone = 'UTC'; SET lock_timeout = '60s'; SET maintenance_work_mem = '256MB'",
                    )
                    .map_err(|e| crate::db::postgres::pg_error(stage, "cannot set up", &e))?;
                Ok(Conn::Postgres(client))
            }
        }
    }
}

impl Conn {
    pub(crate) fn side(&mut self) -> Side<'_> {
        match self {
            Conn::Sqlite(c) => Side::Sqlite(c),
            Conn::Postgres(c) => Side::Postgres(c),
        }
    }

    /// Runs `sql` (one or more statements).
    pub(crate) fn exec(&mut self, sql: &str) -> std::result::Result<(), Refusal> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(|e| Refusal::sqlite(&e)),
            Conn::Postgres(c) => c.batch_execute(sql).map_err(|e| Refusal::postgres(&e)),
        }
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }

    /// The number `sql` (a `SELECT count(*) …` with the parameters `params`) counts, on either kind.
    fn count(&mut self, sql: &str, params: &[&str], what: &str) -> Result<i64> {
        match self {
            Conn::Sqlite(c) => c
                .query_row(sql, rusqlite::params_from_iter(params), |r| r.get(0))
                .map_err(|e| crate::db::sqlite::sql_error(Stage::Sink, "target", what, e)),
            Conn::Postgres(c) => {
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                c.query_one(sql, &params)
                    .map(|r| r.get(0))
                    .map_err(|e| crate::db::postgres::pg_error(Stage::Sink, what, &e))
            }
        }
    }

    /// Which of `names` exist as tables.
    pub(crate) fn existing_tables(&mut self, names: &[String]) -> Result<Vec<String>> {
        let sql = match self {
            Conn::Sqlite(_) => {
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1"
            }
            Conn::Postgres(_) => "SELECT count(to_regclass(quote_ident($1)))",
        };
        let mut found = Vec::new();
        for name in names {
            if self.count(sql, &[name], "cannot read the target's tables")? > 0 {
                found.push(name.clone());
            }
        }
        Ok(found)
    }

    /// Which of `names` (existing tables) hold rows.
    pub(crate) fn tables_with_rows(&mut self, names: &[String]) -> Result<Vec<String>> {
        let mut filled = Vec::new();
        for name in names {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) AS t",
                quote_ident(name)
            );
            if self.count(&sql, &[], "cannot read the target's tables")? > 0 {
                filled.push(name.clone());
            }
        }
        Ok(filled)
    }

    /// True when the catalog query `sql` (a `SELECT count(*) …` over `params`) counts anything.
    pub(crate) fn catalog_has(&mut self, sql: &str, params: &[&str]) -> Result<bool> {
        Ok(self.count(sql, params, "reading the target's catalog")? > 0)
    }

    /// Starts a transaction (on SQLite one that holds the write lock from the start).
    pub(crate) fn begin(&mut self) -> std::result::Result<(), Refusal> {
        self.exec(if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        })
    }

    pub(crate) fn rollback(&mut self) {
        let _ = self.exec("ROLLBACK");
    }
}
