//! Loading one bundled table into the target, inside the import's transaction: rows arrive as datums of
//! the target columns' types (keys already remapped), references first, and go in by the fastest way the
//! conflict mode allows — PostgreSQL binary COPY straight into the table, or into a staging table and on
//! with `INSERT … SELECT … ON CONFLICT` (one statement per batch); SQLite prepared inserts, with the
//! update of `overwrite`/`merge` where the insert found the key taken. Reference rows already on the
//! target are always left alone. The conflict SQL is the convert sinks' ([`crate::db::conflict`]).

use crate::db::conflict::{pg_upsert, sqlite_statements, ConflictColumn};
use crate::db::{quote_ident, OnConflict};
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::rows::{loader, CopyTable};
use crate::migrate::value::Datum;
use crate::migrate::{Conn, PgType};

/// Rows held before they are sent to PostgreSQL.
const PG_BATCH: usize = 20_000;
/// The staging table's name (a temporary table, first on the search path).
const STAGING: &str = "ferry_tenant_staging";

/// A table of the target as the import loads it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name on the target.
    pub name: String,
    /// The target's columns that take the bundle's values, in the bundle's column order, with their types.
    pub columns: Vec<(String, PgType)>,
    /// Its primary key (the conflict target); empty when it has none.
    pub key: Vec<String>,
    /// Its key column whose values the database generates, if one.
    pub generated: Option<String>,
    /// Made by this import.
    pub created: bool,
}

/// What loading a table did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// New rows.
    pub inserted: u64,
    /// Rows changed (`overwrite`, `merge`).
    pub updated: u64,
    /// Rows left alone (`skip`, and references already there).
    pub skipped: u64,
}

/// Loads the rows of one table (the connection is handed to each call: one table loads at a time).
pub struct Load<'a> {
    target: &'a Target,
    mode: OnConflict,
    label: &'a str,
    held: Vec<Vec<Datum>>,
    held_reference: bool,
    staging_made: bool,
    tally: Tally,
}

impl<'a> Load<'a> {
    /// Starts loading `target` under `mode`.
    pub fn new(target: &'a Target, mode: OnConflict, label: &'a str) -> Load<'a> {
        Load {
            target,
            mode,
            label,
            held: Vec::new(),
            held_reference: false,
            staging_made: false,
            tally: Tally::default(),
        }
    }

    /// Adds one row; `reference` rows are skipped when their key is already there.
    pub fn push(&mut self, conn: &mut Conn, row: Vec<Datum>, reference: bool) -> Result<()> {
        if conn.is_postgres() {
            if !self.held.is_empty()
                && (self.held_reference != reference || self.held.len() >= PG_BATCH)
            {
                self.flush(conn)?;
            }
            self.held_reference = reference;
            self.held.push(row);
            return Ok(());
        }
        let mode = if reference {
            OnConflict::Skip
        } else {
            self.mode
        };
        self.sqlite_row(conn, &row, mode)
    }

    /// Sends what is held; returns what the whole table's load did.
    pub fn finish(mut self, conn: &mut Conn) -> Result<Tally> {
        self.flush(conn)?;
        if self.staging_made {
            self.exec(conn, &format!("DROP TABLE IF EXISTS pg_temp.{STAGING}"))?;
        }
        Ok(self.tally)
    }

    fn columns(&self) -> Vec<ConflictColumn<'_>> {
        crate::migrate::rows::conflict_columns(&self.target.columns)
    }

    fn refused(&self, e: Error) -> Error {
        if e.sqlstate() == Some(crate::error::sqlstate::NOT_NULL_VIOLATION) {
            let message = format!(
                "{}; the bundle leaves sanitized columns out (omit): give the column a DEFAULT on the target, \
                 or export it with `keep` in the spec (into an encrypted bundle)",
                e.message()
            );
            let cause = e.db_cause().cloned();
            let error = Error::data(Stage::Sink, Position::file(self.label), message);
            return match cause {
                Some(c) => error.with_db_cause(c),
                None => error,
            };
        }
        if e.is_unique_violation() && self.mode == OnConflict::Error {
            let message = format!(
                "{}; the target already has a row with this key: --on-conflict skip|overwrite|merge decides what \
                 happens to rows already there, and --remap-keys gives the imported rows new keys",
                e.message()
            );
            let cause = e.db_cause().cloned();
            let error = Error::data(Stage::Sink, Position::file(self.label), message);
            return match cause {
                Some(c) => error.with_db_cause(c),
                None => error,
            };
        }
        e
    }

    fn exec(&self, conn: &mut Conn, sql: &str) -> Result<()> {
        conn.exec(sql).map_err(|r| {
            r.error(
                self.label,
                &format!("table {}", quote_ident(&self.target.name)),
            )
        })
    }

    /// PostgreSQL: sends the held rows, straight into the table when nothing can conflict and every type
    /// has a binary form ferry writes, else through the staging table.
    fn flush(&mut self, conn: &mut Conn) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.held);
        let mode = if self.held_reference {
            OnConflict::Skip
        } else {
            self.mode
        };
        let text_only = self
            .target
            .columns
            .iter()
            .any(|(_, t)| matches!(t, PgType::Other(_)));
        // Straight in with COPY when nothing can conflict: into a table this import made, or — under a
        // savepoint — when no row is there yet; a duplicate sends the batch the staging way instead.
        if mode == OnConflict::Error && !text_only {
            let table = CopyTable {
                name: self.target.name.clone(),
                columns: self.target.columns.clone(),
                key: self.target.key.clone(),
                pages: None,
                hashed: false,
            };
            if self.target.created {
                let n = self
                    .copy(conn, &table, &rows)
                    .map_err(|e| self.refused(e))?;
                self.tally.inserted += n;
                return Ok(());
            }
            self.exec(conn, "SAVEPOINT ferry_batch")?;
            match self.copy(conn, &table, &rows) {
                Ok(n) => {
                    self.tally.inserted += n;
                    return self.exec(conn, "RELEASE SAVEPOINT ferry_batch");
                }
                Err(e) if e.is_unique_violation() => {
                    self.exec(
                        conn,
                        "ROLLBACK TO SAVEPOINT ferry_batch; RELEASE SAVEPOINT ferry_batch",
                    )?;
                }
                Err(e) => return Err(self.refused(e)),
            }
        }
        if !self.staging_made {
            let select: Vec<String> = self
                .target
                .columns
                .iter()
                .map(|(name, ty)| match ty {
                    PgType::Other(_) => format!("{}::text AS {0}", quote_ident(name)),
                    _ => quote_ident(name),
                })
                .collect();
            self.exec(conn, &format!(
                "DROP TABLE IF EXISTS pg_temp.{STAGING}; CREATE TEMP TABLE {STAGING} AS SELECT {} FROM {} WITH NO DATA",
                select.join(", "),
                quote_ident(&self.target.name)
            ))?;
            self.staging_made = true;
        }
        let staging = CopyTable {
            name: STAGING.to_owned(),
            columns: self
                .target
                .columns
                .iter()
                .map(|(n, t)| {
                    (
                        n.clone(),
                        if let PgType::Other(_) = t {
                            PgType::Text
                        } else {
                            t.clone()
                        },
                    )
                })
                .collect(),
            key: Vec::new(),
            pages: None,
            hashed: false,
        };
        let n = self.copy(conn, &staging, &rows)?;
        // Rows already there are taken out before the insert sees them: under `skip` every row whose key is
        // there (a sanitized, left-out NOT NULL column would otherwise fail a row never to be written), under
        // `error` the rows that are there exactly as the bundle has them (no conflict: nothing would change).
        let mut unchanged = 0;
        if matches!(mode, OnConflict::Skip | OnConflict::Error) && self.has_key() {
            let mut matches: Vec<String> = self
                .target
                .key
                .iter()
                .map(|k| format!("s.{0} = t.{0}", quote_ident(k)))
                .collect();
            if mode == OnConflict::Error {
                let staged: Vec<String> = self
                    .target
                    .columns
                    .iter()
                    .map(|(c, ty)| match ty {
                        PgType::Other(t) => format!("s.{}::{t}", quote_ident(c)),
                        _ => format!("s.{}", quote_ident(c)),
                    })
                    .collect();
                let there: Vec<String> = self
                    .target
                    .columns
                    .iter()
                    .map(|(c, _)| format!("t.{}", quote_ident(c)))
                    .collect();
                matches.push(format!(
                    "ROW({}) IS NOT DISTINCT FROM ROW({})",
                    staged.join(", "),
                    there.join(", ")
                ));
            }
            let sql = format!(
                "DELETE FROM pg_temp.{STAGING} s USING {} t WHERE {}",
                quote_ident(&self.target.name),
                matches.join(" AND ")
            );
            if let Conn::Postgres(client) = &mut *conn {
                unchanged = client.execute(&sql, &[]).map_err(|e| {
                    crate::db::postgres::pg_error(
                        Stage::Sink,
                        &format!("{}: {sql}", self.label),
                        &e,
                    )
                })?;
            }
        }
        let sql = pg_upsert(
            &quote_ident(&self.target.name),
            &format!("pg_temp.{STAGING}"),
            &self.columns(),
            &self.target.key,
            mode,
        );
        let Conn::Postgres(client) = &mut *conn else {
            return Ok(());
        };
        let what = format!("table {}", quote_ident(&self.target.name));
        let fail = |e: postgres::Error| {
            crate::db::postgres::pg_error(Stage::Sink, &format!("{}: {what}", self.label), &e)
        };
        let (inserted, updated) = match mode {
            OnConflict::Overwrite | OnConflict::Merge => {
                let row = client.query_one(&sql, &[]).map_err(fail)?;
                (row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64)
            }
            _ => (
                client
                    .execute(&sql, &[])
                    .map_err(|e| self.refused(fail(e)))?,
                0,
            ),
        };
        self.tally.inserted += inserted;
        self.tally.updated += updated;
        self.tally.skipped += n - inserted - updated;
        debug_assert!(unchanged <= n);
        self.exec(conn, &format!("TRUNCATE pg_temp.{STAGING}"))
    }

    /// True when every key column is loaded (rows can be matched by key).
    fn has_key(&self) -> bool {
        !self.target.key.is_empty()
            && self
                .target
                .key
                .iter()
                .all(|k| self.target.columns.iter().any(|(c, _)| c == k))
    }

    fn copy(&self, conn: &mut Conn, table: &CopyTable, rows: &[Vec<Datum>]) -> Result<u64> {
        let mut side = conn.side();
        let mut load = loader(&mut side, self.label, table, false)?;
        for row in rows {
            load.push(row)?;
        }
        load.finish()
    }

    /// SQLite: true when a row with `values`' key is there.
    fn sqlite_exists(
        &self,
        conn: &rusqlite::Connection,
        values: &[rusqlite::types::Value],
    ) -> Result<bool> {
        let mut matches = Vec::new();
        let mut params = Vec::new();
        for k in &self.target.key {
            if let Some(at) = self.target.columns.iter().position(|(c, _)| c == k) {
                params.push(&values[at]);
                matches.push(format!("{} IS ?{}", quote_ident(k), params.len()));
            }
        }
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            quote_ident(&self.target.name),
            matches.join(" AND ")
        );
        conn.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))
            })
            .map(|n| n > 0)
            .map_err(|e| crate::db::sqlite::sql_error(Stage::Sink, self.label, &sql, e))
    }

    /// SQLite: true when the row is there exactly as the bundle has it (then it is no conflict).
    fn sqlite_identical(
        &self,
        conn: &rusqlite::Connection,
        values: &[rusqlite::types::Value],
    ) -> Result<bool> {
        let matches: Vec<String> = self
            .target
            .columns
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{} IS ?{}", quote_ident(c), i + 1))
            .collect();
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {}",
            quote_ident(&self.target.name),
            matches.join(" AND ")
        );
        conn.prepare_cached(&sql)
            .and_then(|mut s| {
                s.query_row(rusqlite::params_from_iter(values), |r| r.get::<_, i64>(0))
            })
            .map(|n| n > 0)
            .map_err(|e| crate::db::sqlite::sql_error(Stage::Sink, self.label, &sql, e))
    }

    /// SQLite: one row, its insert (and the update of `overwrite`/`merge` when the key was taken).
    fn sqlite_row(&mut self, conn: &mut Conn, row: &[Datum], mode: OnConflict) -> Result<()> {
        let Conn::Sqlite(conn) = &*conn else {
            return Ok(());
        };
        let columns = self.columns();
        let (insert, update) =
            sqlite_statements(&self.target.name, &columns, &self.target.key, mode);
        let values: Vec<rusqlite::types::Value> = row.iter().map(Datum::to_sqlite).collect();
        if mode == OnConflict::Skip && self.has_key() && self.sqlite_exists(conn, &values)? {
            self.tally.skipped += 1;
            return Ok(());
        }
        let fail = |e: rusqlite::Error| {
            crate::db::sqlite::sql_error(
                Stage::Sink,
                self.label,
                &format!("loading table {}", quote_ident(&self.target.name)),
                e,
            )
        };
        let inserted = conn
            .prepare_cached(&insert)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(values.iter())))
            .map_err(fail);
        let changed = match inserted {
            Err(e) if e.is_unique_violation() && self.sqlite_identical(conn, &values)? => {
                self.tally.skipped += 1;
                return Ok(());
            }
            other => other.map_err(|e| self.refused(e))?,
        };
        if changed > 0 {
            self.tally.inserted += 1;
            return Ok(());
        }
        match update.filter(|u| !u.is_empty()) {
            Some(update) => {
                conn.prepare_cached(&update)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(values.iter())))
                    .map_err(fail)?;
                self.tally.updated += 1;
            }
            None => self.tally.skipped += 1,
        }
        Ok(())
    }
}
