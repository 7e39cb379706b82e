//! The data half of a migration: reading a table's rows from either database as [`Datum`]s of their planned
//! types, and loading them into the other (PostgreSQL binary COPY, or prepared SQLite inserts). The copy,
//! the checksums of `--validate` and `ferry diff` all read through [`scan`].

use std::io::{BufReader, Write};

use bytes::BytesMut;
use postgres::Client;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::plan::PlanTable;
use super::types::PgType;
use super::value::{describe, sqlite_json, Datum};
use crate::db::pgcopy::{self, ReadError, TupleReader};
use crate::db::quote_ident;
use crate::error::{Error, Position, Result, Stage};

/// Bytes of COPY data gathered before they are handed to the connection.
const COPY_CHUNK: usize = 256 * 1024;

/// A table to move: its name and the columns that carry data (generated ones are left out), with the
/// type each is read, hashed and loaded as.
#[derive(Debug, Clone)]
pub struct CopyTable {
    /// The table's name.
    pub name: String,
    /// Loaded columns: name and planned type.
    pub columns: Vec<(String, PgType)>,
    /// Primary-key columns (for `ferry diff`'s output).
    pub key: Vec<String>,
    /// Read only PostgreSQL pages `[from, to)` of the table (a part of a parallel read).
    pub pages: Option<(u64, u64)>,
    /// Values are hashed (validation, diff); false lets a copy skip building JSON values.
    pub hashed: bool,
}

impl CopyTable {
    /// The columns of a planned table that carry data.
    pub fn from_plan(table: &PlanTable) -> CopyTable {
        CopyTable {
            name: table.name.clone(),
            columns: table
                .columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| (c.name.clone(), c.translation.pg.clone()))
                .collect(),
            key: table.primary_key.clone(),
            pages: None,
            hashed: true,
        }
    }

    /// The loaded columns as `--on-conflict` SQL needs them.
    pub(crate) fn conflict_columns(&self) -> Vec<crate::db::conflict::ConflictColumn<'_>> {
        conflict_columns(&self.columns)
    }

    fn column_list(&self) -> String {
        let names: Vec<String> = self.columns.iter().map(|(c, _)| quote_ident(c)).collect();
        names.join(", ")
    }
}

/// Columns as `--on-conflict` SQL needs them: JSON merged key by key, types ferry does not model cast
/// from text (shared by sync and tenant import).
pub(crate) fn conflict_columns(
    columns: &[(String, PgType)],
) -> Vec<crate::db::conflict::ConflictColumn<'_>> {
    columns
        .iter()
        .map(|(name, ty)| crate::db::conflict::ConflictColumn {
            name,
            json: *ty == PgType::Jsonb,
            cast: match ty {
                PgType::Other(t) => Some(t.as_str()),
                _ => None,
            },
        })
        .collect()
}

/// A value that does not fit its column, with where it is.
#[derive(Debug, Clone)]
pub struct Misfit {
    /// The row: SQLite's rowid, or the row's position in the scan.
    pub row: i64,
    /// The column.
    pub column: String,
    /// The value, described (`text "abc"`).
    pub value: String,
    /// Why it does not fit.
    pub reason: String,
    /// The whole row as stored, for the rejects file.
    pub record: serde_json::Value,
}

/// One row of a scan: its values, or why one of them does not fit.
pub type Scanned = std::result::Result<Vec<Datum>, Box<Misfit>>;

/// One side of a migration, opened for reading or writing.
pub enum Side<'a> {
    /// A SQLite database.
    Sqlite(&'a Connection),
    /// A PostgreSQL database.
    Postgres(&'a mut Client),
}

/// Reads every row of `table`, calling `each` with it; `each` returns false to stop.
pub fn scan(
    side: &mut Side<'_>,
    label: &str,
    table: &CopyTable,
    each: &mut dyn FnMut(Scanned) -> Result<bool>,
) -> Result<()> {
    match side {
        Side::Sqlite(conn) => scan_sqlite(conn, label, table, each),
        Side::Postgres(client) => scan_postgres(client, label, table, each),
    }
}

fn sqlite_error(label: &str, table: &str, e: &rusqlite::Error) -> Error {
    let error = Error::data(
        Stage::Source,
        Position::file(label),
        format!("sqlite {label}: table {}: {e}", quote_ident(table)),
    );
    match crate::db::sqlite::cause(e) {
        Some(cause) => error.with_db_cause(cause),
        None => error,
    }
}

fn has_rowid(conn: &Connection, table: &str) -> bool {
    let sql = format!("SELECT rowid FROM {} LIMIT 0", quote_ident(table));
    conn.prepare(&sql).is_ok()
}

fn scan_sqlite(
    conn: &Connection,
    label: &str,
    table: &CopyTable,
    each: &mut dyn FnMut(Scanned) -> Result<bool>,
) -> Result<()> {
    // WITHOUT ROWID tables (and views) number their rows instead.
    let rowid = if has_rowid(conn, &table.name) {
        "rowid"
    } else {
        "NULL"
    };
    let columns = if table.columns.is_empty() {
        String::new()
    } else {
        format!(", {}", table.column_list())
    };
    let sql = format!("SELECT {rowid}{columns} FROM {}", quote_ident(&table.name));
    let fail = |e: rusqlite::Error| sqlite_error(label, &table.name, &e);
    let mut statement = conn.prepare(&sql).map_err(fail)?;
    let mut rows = statement.query([]).map_err(fail)?;
    let mut number = 0i64;
    while let Some(row) = rows.next().map_err(fail)? {
        number += 1;
        let id = row
            .get::<_, Option<i64>>(0)
            .map_err(fail)?
            .unwrap_or(number);
        let mut values = Vec::with_capacity(table.columns.len());
        let mut misfit = None;
        for (i, (name, ty)) in table.columns.iter().enumerate() {
            let value = row.get_ref(i + 1).map_err(fail)?;
            match Datum::from_sqlite_with(value, ty, table.hashed) {
                Ok(d) => values.push(d),
                Err(reason) => {
                    misfit = Some(Box::new(Misfit {
                        row: id,
                        column: name.clone(),
                        value: describe(value),
                        reason,
                        record: sqlite_record(row, table).map_err(fail)?,
                    }));
                    break;
                }
            }
        }
        let keep_going = each(match misfit {
            Some(m) => Err(m),
            None => Ok(values),
        })?;
        if !keep_going {
            break;
        }
    }
    Ok(())
}

fn sqlite_record(
    row: &rusqlite::Row<'_>,
    table: &CopyTable,
) -> rusqlite::Result<serde_json::Value> {
    let mut record = serde_json::Map::new();
    for (i, (name, _)) in table.columns.iter().enumerate() {
        let value: ValueRef<'_> = row.get_ref(i + 1)?;
        record.insert(name.clone(), sqlite_json(value));
    }
    Ok(serde_json::Value::Object(record))
}

/// The SELECT list that reads `table` from PostgreSQL: every column cast to its planned type, so binary
/// decoding holds even when the table was made by someone else; types ferry does not model come as text.
pub(crate) fn pg_select_list(table: &CopyTable) -> String {
    let items: Vec<String> = table
        .columns
        .iter()
        .map(|(name, ty)| match ty {
            PgType::Other(_) => format!("{}::text", quote_ident(name)),
            ty => format!("{}::{}", quote_ident(name), ty.sql()),
        })
        .collect();
    items.join(", ")
}

fn pg_fail(label: &str, table: &str, what: &str, e: &postgres::Error) -> Error {
    crate::db::postgres::pg_error(
        Stage::Source,
        &format!("{label}: table {}: {what}", quote_ident(table)),
        e,
    )
}

fn scan_postgres(
    client: &mut Client,
    label: &str,
    table: &CopyTable,
    each: &mut dyn FnMut(Scanned) -> Result<bool>,
) -> Result<()> {
    let select = if table.columns.is_empty() {
        format!("SELECT FROM {}", quote_ident(&table.name))
    } else {
        format!(
            "SELECT {} FROM {}",
            pg_select_list(table),
            quote_ident(&table.name)
        )
    };
    let select = match table.pages {
        // A TID range scan reads just these pages.
        Some((from, to)) => {
            format!("{select} WHERE ctid >= '({from},0)'::tid AND ctid < '({to},0)'::tid")
        }
        None => select,
    };
    let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
    let reader = client
        .copy_out(&copy)
        .map_err(|e| pg_fail(label, &table.name, "cannot read", &e))?;
    let broken = |what: &str| {
        Error::data(
            Stage::Source,
            Position::file(label),
            format!(
                "{label}: table {}: binary COPY stream {what}",
                quote_ident(&table.name)
            ),
        )
    };
    let fail = |e: ReadError| match e {
        ReadError::Io(e) => Error::io(Stage::Source, Some(label), e),
        ReadError::Broken(what) => broken(what),
    };
    let mut reader =
        TupleReader::new(BufReader::with_capacity(256 * 1024, reader)).map_err(fail)?;
    let mut number = 0i64;
    while let Some(count) = reader.next_tuple().map_err(fail)? {
        if count != table.columns.len() {
            return Err(broken("has a row of the wrong width"));
        }
        number += 1;
        let mut values = Vec::with_capacity(table.columns.len());
        let mut misfit = None;
        for (name, ty) in &table.columns {
            let raw = reader.next_field().map_err(fail)?;
            match Datum::from_pg(raw, ty) {
                Ok(d) => values.push(d),
                Err(reason) if misfit.is_none() => {
                    misfit = Some(Box::new(Misfit {
                        row: number,
                        column: name.clone(),
                        value: format!("{} bytes", raw.map_or(0, <[u8]>::len)),
                        reason,
                        record: serde_json::Value::Null,
                    }));
                }
                Err(_) => {}
            }
        }
        let keep_going = each(match misfit {
            Some(m) => Err(m),
            None => Ok(values),
        })?;
        if !keep_going {
            // Drain the stream so the connection stays usable.
            reader.drain().map_err(fail)?;
            break;
        }
    }
    Ok(())
}

/// Rows going into one table of the target.
pub trait Loader {
    /// Adds one row.
    fn push(&mut self, row: &[Datum]) -> Result<()>;
    /// Ends the load; returns the rows the database took.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// Opens a loader for `table` (which must exist; the caller owns the transaction).
pub fn loader<'a>(
    side: &'a mut Side<'_>,
    label: &str,
    table: &'a CopyTable,
    freeze: bool,
) -> Result<Box<dyn Loader + 'a>> {
    match side {
        Side::Postgres(client) => {
            let options = if freeze {
                "FORMAT binary, FREEZE"
            } else {
                "FORMAT binary"
            };
            let sql = format!(
                "COPY {} ({}) FROM STDIN ({options})",
                quote_ident(&table.name),
                table.column_list()
            );
            let writer = client
                .copy_in(&sql)
                .map_err(|e| sink_fail(label, &table.name, &e))?;
            let mut buffer = BytesMut::with_capacity(COPY_CHUNK + 64 * 1024);
            buffer.extend_from_slice(pgcopy::HEADER);
            Ok(Box::new(PgLoader {
                writer,
                buffer,
                table,
                label: label.to_owned(),
            }))
        }
        Side::Sqlite(conn) => {
            let marks = vec!["?"; table.columns.len()].join(", ");
            let sql = if table.columns.is_empty() {
                format!("INSERT INTO {} DEFAULT VALUES", quote_ident(&table.name))
            } else {
                format!(
                    "INSERT INTO {} ({}) VALUES ({marks})",
                    quote_ident(&table.name),
                    table.column_list()
                )
            };
            let statement = conn
                .prepare(&sql)
                .map_err(|e| sqlite_error(label, &table.name, &e))?;
            Ok(Box::new(SqliteLoader {
                statement,
                rows: 0,
                table,
                label: label.to_owned(),
            }))
        }
    }
}

fn sink_fail(label: &str, table: &str, e: &postgres::Error) -> Error {
    crate::db::postgres::pg_error(
        Stage::Sink,
        &format!("{label}: loading table {}", quote_ident(table)),
        e,
    )
}

struct PgLoader<'a> {
    writer: postgres::CopyInWriter<'a>,
    buffer: BytesMut,
    table: &'a CopyTable,
    label: String,
}

impl PgLoader<'_> {
    fn flush(&mut self) -> Result<()> {
        let chunk = self.buffer.split();
        self.writer
            .write_all(&chunk)
            .map_err(|e| Error::io(Stage::Sink, Some(&self.label), e))
    }
}

impl Loader for PgLoader<'_> {
    fn push(&mut self, row: &[Datum]) -> Result<()> {
        let width = i16::try_from(row.len()).map_err(|_| {
            Error::data(
                Stage::Encode,
                Position::file(&self.label),
                format!(
                    "table {} has too many columns for COPY",
                    quote_ident(&self.table.name)
                ),
            )
        })?;
        pgcopy::put_tuple_start(&mut self.buffer, width);
        for (datum, (name, ty)) in row.iter().zip(&self.table.columns) {
            datum.write_pg(ty, &mut self.buffer).map_err(|reason| {
                Error::data(
                    Stage::Encode,
                    Position::file(&self.label).with_field(name.clone()),
                    format!(
                        "table {}, column {}: {reason}",
                        quote_ident(&self.table.name),
                        quote_ident(name)
                    ),
                )
            })?;
        }
        if self.buffer.len() >= COPY_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.buffer.extend_from_slice(&pgcopy::TRAILER);
        self.flush()?;
        let PgLoader {
            writer,
            table,
            label,
            ..
        } = *self;
        writer
            .finish()
            .map_err(|e| sink_fail(&label, &table.name, &e))
    }
}

struct SqliteLoader<'a> {
    statement: rusqlite::Statement<'a>,
    rows: u64,
    table: &'a CopyTable,
    label: String,
}

impl Loader for SqliteLoader<'_> {
    fn push(&mut self, row: &[Datum]) -> Result<()> {
        let values: Vec<rusqlite::types::Value> = row.iter().map(Datum::to_sqlite).collect();
        self.statement
            .execute(rusqlite::params_from_iter(values))
            .map_err(|e| sqlite_error(&self.label, &self.table.name, &e))?;
        self.rows += 1;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.rows)
    }
}

/// Counts the rows of `table` that break foreign key `(from) → parent (to)` (non-null keys without a parent).
pub fn pg_orphans(
    client: &mut Client,
    table: &str,
    from: &[String],
    parent: &str,
    to: &[String],
) -> std::result::Result<i64, postgres::Error> {
    let not_null: Vec<String> = from
        .iter()
        .map(|c| format!("c.{} IS NOT NULL", quote_ident(c)))
        .collect();
    let joins: Vec<String> = from
        .iter()
        .zip(to)
        .map(|(f, t)| format!("p.{} = c.{}", quote_ident(t), quote_ident(f)))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
        quote_ident(table),
        not_null.join(" AND "),
        quote_ident(parent),
        joins.join(" AND ")
    );
    Ok(client.query_one(&sql, &[])?.get(0))
}
