//! Sync, writing: the rows and deletions one pass found for a table, applied to the target inside the
//! pass's transaction in bounded batches. PostgreSQL: rows go through the one binary COPY loader into a
//! temporary staging table and are upserted from there (the `--on-conflict` SQL of [`crate::db::conflict`]);
//! deleted keys go through a second staging table. SQLite: the same conflict statements, row by row.

use serde::{Deserialize, Serialize};

use super::read::{key_equals, SyncTable};
use crate::db::conflict::{pg_upsert, sqlite_statements, ConflictColumn};
use crate::db::{quote_ident, OnConflict};
use crate::error::{Error, Result, Stage};
use crate::migrate::rows::{loader, CopyTable};
use crate::migrate::types::PgType;
use crate::migrate::value::Datum;
use crate::migrate::Conn;

/// Rows (or keys) gathered before they are written.
pub const BATCH: usize = 5_000;

/// What happens to a target row whose key has gone from the source.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deletes {
    /// Nothing: deletions are not looked for (cursor reads only see rows that are still there).
    #[default]
    Ignore,
    /// The row is deleted.
    Delete,
    /// The row stays and this column is set to the time it was found gone (once).
    Soft(String),
    /// The row stays; it is counted and the first keys are listed in the report.
    List,
}

/// How many rows a flush wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted (or marked deleted).
    pub deleted: u64,
}

/// The pending writes of one table.
pub struct Applier<'t> {
    table: &'t SyncTable,
    /// Which staging tables this connection uses (a number per table of the sync).
    slot: usize,
    label: String,
    deletes: Deletes,
    upserts: Vec<Vec<Datum>>,
    gone: Vec<Vec<Datum>>,
    /// Keys of rows found gone while `deletes` is `list` (the first 20).
    pub listed: Vec<serde_json::Value>,
    /// What was written so far.
    pub applied: Applied,
}

impl<'t> Applier<'t> {
    /// Writes for `table` into the target `label`.
    pub fn new(table: &'t SyncTable, slot: usize, label: &str, deletes: Deletes) -> Applier<'t> {
        Applier {
            table,
            slot,
            label: label.to_owned(),
            deletes,
            upserts: Vec::new(),
            gone: Vec::new(),
            listed: Vec::new(),
            applied: Applied::default(),
        }
    }

    /// True when a batch is full and should be flushed.
    pub fn full(&self) -> bool {
        self.upserts.len() + self.gone.len() >= BATCH
    }

    /// The row goes in (inserted, or overwrites the row with its key).
    pub fn upsert(&mut self, row: Vec<Datum>) {
        self.upserts.push(row);
    }

    /// The row with this key has gone from the source.
    pub fn gone(&mut self, key: Vec<Datum>) {
        match &self.deletes {
            Deletes::Ignore => {}
            Deletes::List => {
                self.applied.deleted += 1;
                if self.listed.len() < 20 {
                    self.listed.push(serde_json::Value::Array(
                        key.iter().map(Datum::to_json).collect(),
                    ));
                }
            }
            _ => self.gone.push(key),
        }
    }

    /// Writes what is pending (inside the caller's transaction).
    pub fn flush(&mut self, target: &mut Conn) -> Result<()> {
        let (upserts, gone) = (
            std::mem::take(&mut self.upserts),
            std::mem::take(&mut self.gone),
        );
        if !upserts.is_empty() {
            let (inserted, updated) = match target {
                Conn::Postgres(_) => self.pg_upsert(target, &upserts)?,
                Conn::Sqlite(c) => self.sqlite_upsert(c, &upserts)?,
            };
            self.applied.inserted += inserted;
            self.applied.updated += updated;
        }
        if !gone.is_empty() {
            self.applied.deleted += match target {
                Conn::Postgres(_) => self.pg_delete(target, &gone)?,
                Conn::Sqlite(_) => self.sqlite_delete(target, &gone)?,
            };
        }
        Ok(())
    }

    fn conflict_columns(&self) -> Vec<ConflictColumn<'_>> {
        self.table.copy.conflict_columns()
    }

    fn key_names(&self) -> Vec<String> {
        self.table
            .key_columns()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// Makes (once per connection) and empties a staging table with `columns`; returns its quoted name.
    fn stage(
        &self,
        target: &mut Conn,
        kind: &str,
        columns: &[(String, PgType)],
    ) -> Result<CopyTable> {
        let name = format!("_ferry_{kind}_{}", self.slot);
        let defs: Vec<String> = columns
            .iter()
            .map(|(n, t)| {
                let ty = match t {
                    PgType::Other(_) => "text".to_owned(),
                    t => t.sql(),
                };
                format!("{} {ty}", quote_ident(n))
            })
            .collect();
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {0} ({1}); DELETE FROM {0}",
            quote_ident(&name),
            defs.join(", ")
        );
        target
            .exec(&sql)
            .map_err(|r| r.error(&self.label, "staging rows"))?;
        let mut copy = self.table.copy.clone();
        copy.name = name;
        copy.columns = columns.to_vec();
        Ok(copy)
    }

    fn load_stage(
        target: &mut Conn,
        label: &str,
        stage: &CopyTable,
        rows: &[Vec<Datum>],
    ) -> Result<()> {
        let mut side = target.side();
        let mut load = loader(&mut side, label, stage, false)?;
        for row in rows {
            load.push(row)?;
        }
        load.finish().map(drop)
    }

    fn pg_upsert(&self, target: &mut Conn, rows: &[Vec<Datum>]) -> Result<(u64, u64)> {
        let stage = self.stage(target, "stage", &self.table.copy.columns)?;
        Self::load_stage(target, &self.label, &stage, rows)?;
        let sql = pg_upsert(
            &quote_ident(self.table.name()),
            &quote_ident(&stage.name),
            &self.conflict_columns(),
            &self.key_names(),
            OnConflict::Overwrite,
        );
        let Conn::Postgres(c) = target else {
            return Ok((0, 0));
        };
        let row = c
            .query_one(&sql, &[])
            .map_err(|e| pg_write_error(&self.label, self.table.name(), &e))?;
        let (inserted, updated): (i64, i64) = (row.get(0), row.get(1));
        Ok((inserted.unsigned_abs(), updated.unsigned_abs()))
    }

    fn pg_delete(&self, target: &mut Conn, keys: &[Vec<Datum>]) -> Result<u64> {
        let stage = self.stage(target, "gone", &self.table.key_columns())?;
        Self::load_stage(target, &self.label, &stage, keys)?;
        let matches: Vec<String> = self
            .key_names()
            .iter()
            .map(|k| format!("t.{0} = g.{0}", quote_ident(k)))
            .collect();
        let (table, gone) = (quote_ident(self.table.name()), quote_ident(&stage.name));
        let sql = match &self.deletes {
            Deletes::Soft(col) => format!(
                "UPDATE {table} AS t SET {0} = CURRENT_TIMESTAMP FROM {gone} AS g WHERE {1} AND t.{0} IS NULL",
                quote_ident(col),
                matches.join(" AND ")
            ),
            _ => format!("DELETE FROM {table} AS t USING {gone} AS g WHERE {}", matches.join(" AND ")),
        };
        let Conn::Postgres(c) = target else {
            return Ok(0);
        };
        c.execute(&sql, &[])
            .map_err(|e| pg_write_error(&self.label, self.table.name(), &e))
    }

    fn sqlite_upsert(&self, c: &rusqlite::Connection, rows: &[Vec<Datum>]) -> Result<(u64, u64)> {
        let columns = self.conflict_columns();
        let (insert, update) = sqlite_statements(
            self.table.name(),
            &columns,
            &self.key_names(),
            OnConflict::Overwrite,
        );
        let fail = |e| crate::db::sqlite::sql_error(Stage::Sink, &self.label, "writing rows", e);
        let mut insert = c.prepare_cached(&insert).map_err(fail)?;
        let mut update = match update.filter(|u| !u.is_empty()) {
            Some(u) => Some(c.prepare_cached(&u).map_err(fail)?),
            None => None,
        };
        let (mut inserted, mut updated) = (0, 0);
        for row in rows {
            let values: Vec<rusqlite::types::Value> = row.iter().map(Datum::to_sqlite).collect();
            if insert
                .execute(rusqlite::params_from_iter(&values))
                .map_err(fail)?
                > 0
            {
                inserted += 1;
            } else if let Some(u) = update.as_mut() {
                u.execute(rusqlite::params_from_iter(&values))
                    .map_err(fail)?;
                updated += 1;
            } else {
                updated += 1;
            }
        }
        Ok((inserted, updated))
    }

    fn sqlite_delete(&self, target: &mut Conn, keys: &[Vec<Datum>]) -> Result<u64> {
        let table = quote_ident(self.table.name());
        let sql = match &self.deletes {
            Deletes::Soft(col) => format!(
                "UPDATE {table} SET {0} = CURRENT_TIMESTAMP WHERE {1} AND {0} IS NULL",
                quote_ident(col),
                key_equals(target, self.table, 1)
            ),
            _ => format!(
                "DELETE FROM {table} WHERE {}",
                key_equals(target, self.table, 1)
            ),
        };
        let Conn::Sqlite(c) = target else {
            return Ok(0);
        };
        let fail = |e| crate::db::sqlite::sql_error(Stage::Sink, &self.label, "deleting rows", e);
        let mut statement = c.prepare_cached(&sql).map_err(fail)?;
        let mut deleted = 0;
        for key in keys {
            let values: Vec<rusqlite::types::Value> = key.iter().map(Datum::to_sqlite).collect();
            deleted += statement
                .execute(rusqlite::params_from_iter(&values))
                .map_err(fail)? as u64;
        }
        Ok(deleted)
    }
}

fn pg_write_error(label: &str, table: &str, e: &postgres::Error) -> Error {
    crate::db::postgres::pg_error(
        Stage::Sink,
        &format!("{label}: writing table {}", quote_ident(table)),
        e,
    )
}
