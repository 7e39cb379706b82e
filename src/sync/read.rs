//! Sync, reading: a table's rows from either database as [`Datum`]s of their planned types, filtered and in
//! key order, with the filter's values bound as parameters (never spliced into SQL). The whole-table scan
//! of a migration ([`crate::migrate::rows::scan`]) uses PostgreSQL's binary COPY, which takes no
//! parameters; here PostgreSQL rows come through a portal in binary and are decoded by the same
//! [`Datum::from_pg`], so both paths give equal values for equal rows.

use std::cmp::Ordering;

use postgres::types::{FromSql, ToSql, Type};
use rusqlite::types::{Value, ValueRef};

use crate::db::quote_ident;
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::rows::CopyTable;
use crate::migrate::types::PgType;
use crate::migrate::value::Datum;
use crate::migrate::Conn;

/// A table as sync reads it: its columns, where its key columns are among them, and its cursor column.
#[derive(Debug, Clone)]
pub struct SyncTable {
    /// Columns and planned types (the migration's view of the table).
    pub copy: CopyTable,
    /// Positions of the primary-key columns in `copy.columns`.
    pub key: Vec<usize>,
    /// Position of the cursor column, when the table has the one sync was told about.
    pub cursor: Option<usize>,
}

impl SyncTable {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.copy.name
    }

    /// The key values of `row`.
    pub fn key_of(&self, row: &[Datum]) -> Vec<Datum> {
        self.key.iter().map(|&i| row[i].clone()).collect()
    }

    /// The key columns: name and type.
    pub fn key_columns(&self) -> Vec<(String, PgType)> {
        self.key
            .iter()
            .map(|&i| self.copy.columns[i].clone())
            .collect()
    }
}

/// True for the key types whose order is the same in SQLite (BINARY) and PostgreSQL (`COLLATE "C"`), so
/// two key-ordered streams can be merged.
pub fn orderable_key(ty: &PgType) -> bool {
    matches!(
        ty,
        PgType::BigInt | PgType::Integer | PgType::SmallInt | PgType::Text | PgType::Varchar(_)
    )
}

/// Compares two keys the way both databases order them: integers by value, text by its UTF-8 bytes.
pub fn key_cmp(a: &[Datum], b: &[Datum]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Datum::Int(x), Datum::Int(y)) => x.cmp(y),
            (Datum::Text(x), Datum::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Datum::Null, Datum::Null) => Ordering::Equal,
            (Datum::Null, _) => Ordering::Less,
            (_, Datum::Null) => Ordering::Greater,
            _ => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A key or mark value as text, the form PostgreSQL parameters take (cast to the column's type in SQL).
pub fn param_text(d: &Datum) -> String {
    match d {
        Datum::Int(i) => i.to_string(),
        Datum::Text(t) => t.clone(),
        other => other.to_json().to_string(),
    }
}

/// A value bound to a statement: text for PostgreSQL (cast in SQL), a SQLite value as stored.
#[derive(Debug, Clone)]
pub enum Param {
    /// A SQLite value.
    Sqlite(Value),
    /// PostgreSQL: text, cast by the statement.
    Pg(String),
}

impl Param {
    /// The value as SQLite binds it (PostgreSQL text as text).
    pub fn sqlite_value(&self) -> Value {
        match self {
            Param::Sqlite(v) => v.clone(),
            Param::Pg(t) => Value::Text(t.clone()),
        }
    }

    /// The value as PostgreSQL text (a SQLite value as its JSON form, strings unquoted).
    pub fn text(&self) -> String {
        match self {
            Param::Pg(t) => t.clone(),
            Param::Sqlite(Value::Text(t)) => t.clone(),
            Param::Sqlite(v) => sqlite_json(ValueRef::from(v)).to_string(),
        }
    }

    /// A key value for the kind of database `conn` is.
    pub fn key(conn: &Conn, d: &Datum) -> Param {
        match conn {
            Conn::Sqlite(_) => Param::Sqlite(d.to_sqlite()),
            Conn::Postgres(_) => Param::Pg(param_text(d)),
        }
    }
}

/// The `n`-th placeholder for `ty` on `conn`'s kind: `?n`, or `($n::text)::type`.
pub fn placeholder(conn: &Conn, n: usize, ty: &PgType) -> String {
    match conn {
        Conn::Sqlite(_) => format!("?{n}"),
        Conn::Postgres(_) => format!("(${n}::text)::{}", pg_type(ty)),
    }
}

fn pg_type(ty: &PgType) -> String {
    match ty {
        PgType::Other(name) => name.clone(),
        ty => ty.sql(),
    }
}

/// A key column as ORDER BY and comparisons use it: text compared by its bytes on both kinds.
pub fn key_expr(conn: &Conn, name: &str, ty: &PgType) -> String {
    let col = quote_ident(name);
    match (conn, matches!(ty, PgType::Text | PgType::Varchar(_))) {
        (_, false) => col,
        (Conn::Sqlite(_), true) => format!("{col} COLLATE BINARY"),
        (Conn::Postgres(_), true) => format!("{col} COLLATE \"C\""),
    }
}

/// `ORDER BY` the table's key.
pub fn order_by(conn: &Conn, table: &SyncTable) -> String {
    let keys: Vec<String> = table
        .key_columns()
        .iter()
        .map(|(n, t)| key_expr(conn, n, t))
        .collect();
    format!(" ORDER BY {}", keys.join(", "))
}

/// `(k1, k2) > (p1, p2)` starting at placeholder `first`.
pub fn key_after(conn: &Conn, table: &SyncTable, first: usize) -> String {
    let cols = table.key_columns();
    let left: Vec<String> = cols.iter().map(|(n, t)| key_expr(conn, n, t)).collect();
    let right: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, (_, t))| placeholder(conn, first + i, t))
        .collect();
    format!("({}) > ({})", left.join(", "), right.join(", "))
}

/// `k1 = p1 AND k2 = p2` starting at placeholder `first`.
pub fn key_equals(conn: &Conn, table: &SyncTable, first: usize) -> String {
    let cols = table.key_columns();
    let parts: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, (n, t))| format!("{} = {}", quote_ident(n), placeholder(conn, first + i, t)))
        .collect();
    parts.join(" AND ")
}

/// The SELECT list of the table's columns (PostgreSQL: cast to their planned types).
pub fn select_list(conn: &Conn, table: &CopyTable) -> String {
    match conn {
        Conn::Postgres(_) => crate::migrate::rows::pg_select_list(table),
        Conn::Sqlite(_) => {
            let names: Vec<String> = table.columns.iter().map(|(c, _)| quote_ident(c)).collect();
            names.join(", ")
        }
    }
}

/// A PostgreSQL field as sent, for [`Datum::from_pg`].
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// One row read: its values, and the raw cursor value when the query selected one after them (SQLite: as
/// stored; PostgreSQL: as text) — the mark is kept in the source's own terms.
pub struct Read {
    /// The row's values.
    pub values: Vec<Datum>,
    /// The cursor as stored (JSON: number or string), when asked for.
    pub cursor: Option<serde_json::Value>,
}

fn misfit(label: &str, table: &str, column: &str, reason: &str) -> Error {
    Error::data(
        Stage::Source,
        Position::file(label).with_field(column.to_owned()),
        format!(
            "{label}: table {}, column {}: {reason}",
            quote_ident(table),
            quote_ident(column)
        ),
    )
}

/// Runs `sql` (selecting `table`'s columns, then the raw cursor when `with_cursor`) with `params`, calling
/// `each` for every row in order; `each` returns false to stop.
pub fn query(
    conn: &mut Conn,
    label: &str,
    table: &CopyTable,
    sql: &str,
    params: &[Param],
    with_cursor: bool,
    each: &mut dyn FnMut(Read) -> Result<bool>,
) -> Result<()> {
    let width = table.columns.len();
    match conn {
        Conn::Sqlite(c) => {
            let fail = |e: rusqlite::Error| {
                crate::db::sqlite::sql_error(
                    Stage::Source,
                    label,
                    &format!("reading {}", quote_ident(&table.name)),
                    e,
                )
            };
            let values: Vec<Value> = params
                .iter()
                .map(|p| match p {
                    Param::Sqlite(v) => v.clone(),
                    Param::Pg(t) => Value::Text(t.clone()),
                })
                .collect();
            let mut statement = c.prepare_cached(sql).map_err(fail)?;
            let mut rows = statement
                .query(rusqlite::params_from_iter(values))
                .map_err(fail)?;
            while let Some(row) = rows.next().map_err(fail)? {
                let mut out = Vec::with_capacity(width);
                for (i, (name, ty)) in table.columns.iter().enumerate() {
                    let value = row.get_ref(i).map_err(fail)?;
                    out.push(
                        Datum::from_sqlite(value, ty)
                            .map_err(|r| misfit(label, &table.name, name, &r))?,
                    );
                }
                let cursor = match with_cursor {
                    true => Some(sqlite_json(row.get_ref(width).map_err(fail)?)),
                    false => None,
                };
                if !each(Read {
                    values: out,
                    cursor,
                })? {
                    break;
                }
            }
            Ok(())
        }
        Conn::Postgres(client) => {
            let what = format!("{label}: reading {}", quote_ident(&table.name));
            let fail = |e: postgres::Error| crate::db::postgres::pg_error(Stage::Source, &what, &e);
            let texts: Vec<String> = params
                .iter()
                .map(|p| match p {
                    Param::Pg(t) => t.clone(),
                    Param::Sqlite(v) => sqlite_json(ValueRef::from(v)).to_string(),
                })
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            let mut rows = client.query_raw(sql, refs).map_err(fail)?;
            use postgres::fallible_iterator::FallibleIterator as _;
            let mut stopped = false;
            while let Some(row) = rows.next().map_err(fail)? {
                if stopped {
                    continue;
                }
                let mut out = Vec::with_capacity(width);
                for (i, (name, ty)) in table.columns.iter().enumerate() {
                    let raw: Raw<'_> = row.try_get(i).map_err(fail)?;
                    out.push(
                        Datum::from_pg(raw.0, ty)
                            .map_err(|r| misfit(label, &table.name, name, &r))?,
                    );
                }
                let cursor = match with_cursor {
                    true => row
                        .try_get::<_, Option<String>>(width)
                        .map_err(fail)?
                        .map(serde_json::Value::String),
                    false => None,
                };
                stopped = !each(Read {
                    values: out,
                    cursor,
                })?;
            }
            Ok(())
        }
    }
}

/// A SQLite value as JSON: integers and reals as numbers, text as a string.
pub fn sqlite_json(v: ValueRef<'_>) -> serde_json::Value {
    match v {
        ValueRef::Null => serde_json::Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(f) => {
            serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
        }
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned().into(),
    }
}

/// A mark (JSON, as [`sqlite_json`] or PostgreSQL text made it) bound as a parameter on `conn`'s kind.
pub fn mark_param(conn: &Conn, mark: &serde_json::Value) -> Param {
    match conn {
        Conn::Postgres(_) => Param::Pg(match mark {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        Conn::Sqlite(_) => Param::Sqlite(match mark {
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Real(n.as_f64().unwrap_or_default()),
            },
            serde_json::Value::String(s) => Value::Text(s.clone()),
            other => Value::Text(other.to_string()),
        }),
    }
}
