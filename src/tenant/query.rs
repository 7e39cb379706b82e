//! The subset's questions to the source, on either database, inside the export's one read transaction:
//! which rows a filter selects (by identity only), and the rows of a set of identities with every column
//! read as its planned type. Keys always travel as parameters — SQLite `IN (?, …)` / `IN (VALUES (?, ?), …)`
//! in chunks, PostgreSQL text arrays cast to the column types (`= ANY($1::text[]::bigint[])`, `unnest` for
//! composite keys) — and identifiers are quoted. Results stream row by row (PostgreSQL's through
//! `query_raw`, read from the socket as they are consumed), so a tenant with millions of rows never has
//! them all in memory at once.

use postgres::types::{FromSql, ToSql, Type};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::graph::{Edge, Identity, Node};
use super::keys::{Key, KeyVal};
use crate::db::quote_ident;
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::value::{describe, Datum};
use crate::migrate::PgType;

/// Keys per SQLite statement (each a parameter, or one per key column).
const SQLITE_CHUNK: usize = 500;
/// Keys per PostgreSQL statement (one array parameter per key column).
const PG_CHUNK: usize = 10_000;

/// The source, inside its read transaction.
pub enum Reader<'a, 'c> {
    /// A SQLite database (a deferred transaction: one snapshot from the first read on).
    Sqlite(&'a Connection),
    /// A PostgreSQL connection inside a transaction (the export's: REPEATABLE READ, READ ONLY).
    Postgres(&'a mut postgres::Client, std::marker::PhantomData<&'c ()>),
}

/// Which rows of a table to select.
#[derive(Debug, Clone, Copy)]
pub enum Filter<'k> {
    /// The rows whose `column` equals `value` (text, converted to the column's type).
    Equals {
        /// The column.
        column: &'k str,
        /// Its value, as text.
        value: &'k str,
    },
    /// Every row.
    All,
    /// The rows of `edge`'s child that reference rows `keys` of `parent`.
    Down {
        /// The relation.
        edge: &'k Edge,
        /// Its parent table.
        parent: &'k Node,
        /// Identities of parent rows.
        keys: &'k [Key],
    },
    /// The rows of this table whose identities are `keys` (those that exist).
    Keys {
        /// Identities.
        keys: &'k [Key],
    },
    /// The rows of `edge`'s parent that rows `keys` of `child` reference.
    Up {
        /// The relation.
        edge: &'k Edge,
        /// Its child table.
        child: &'k Node,
        /// Identities of child rows.
        keys: &'k [Key],
    },
}

impl Filter<'_> {
    fn keys(&self) -> &[Key] {
        match self {
            Filter::Down { keys, .. } | Filter::Up { keys, .. } | Filter::Keys { keys } => keys,
            _ => &[],
        }
    }

    fn with_keys<'k>(&self, keys: &'k [Key]) -> Filter<'k>
    where
        Self: 'k,
    {
        match *self {
            Filter::Down { edge, parent, .. } => Filter::Down { edge, parent, keys },
            Filter::Up { edge, child, .. } => Filter::Up { edge, child, keys },
            Filter::Keys { .. } => Filter::Keys { keys },
            other => other,
        }
    }
}

/// A parameter of a PostgreSQL statement: one text, or an array of texts.
enum PgParam {
    Text(Option<String>),
    Array(Vec<Option<String>>),
}

/// A statement being built, with its parameters in the source's form.
struct Statement {
    postgres: bool,
    sqlite: Vec<rusqlite::types::Value>,
    pg: Vec<PgParam>,
}

impl Statement {
    fn new(postgres: bool) -> Statement {
        Statement {
            postgres,
            sqlite: Vec::new(),
            pg: Vec::new(),
        }
    }

    /// A column reference: `a."name"`, or the bare pseudo-columns `rowid`/`ctid`.
    fn column(alias: &str, name: &str, identity: &Identity) -> String {
        match identity {
            Identity::RowId if name == "rowid" => format!("{alias}.rowid"),
            Identity::Ctid if name == "ctid" => format!("{alias}.ctid"),
            _ => format!("{alias}.{}", quote_ident(name)),
        }
    }

    /// The PostgreSQL type an array parameter is cast to for a column of type `ty`.
    fn cast(ty: &PgType) -> String {
        ty.sql()
    }

    /// `columns` (of `alias`, typed like `types`) match one of `keys`.
    fn matches(&mut self, columns: &[String], types: &[PgType], keys: &[Key]) -> String {
        let width = columns.len();
        if self.postgres {
            let mut arrays: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(keys.len()); width];
            for key in keys {
                for (array, part) in arrays.iter_mut().zip(key.parts()) {
                    array.push(part.text());
                }
            }
            let mut casts = Vec::with_capacity(width);
            for (array, ty) in arrays.into_iter().zip(types) {
                self.pg.push(PgParam::Array(array));
                casts.push(format!(
                    "${}::text[]::{}[]",
                    self.pg.len(),
                    Statement::cast(ty)
                ));
            }
            return match (columns, casts.as_slice()) {
                ([column], [cast]) => format!("{column} = ANY({cast})"),
                _ => format!(
                    "({}) IN (SELECT * FROM unnest({}))",
                    columns.join(", "),
                    casts.join(", ")
                ),
            };
        }
        for key in keys {
            self.sqlite
                .extend(key.parts().iter().map(KeyVal::to_sqlite));
        }
        let marks = |n: usize| vec!["?"; n].join(", ");
        if width == 1 {
            return format!("{} IN ({})", columns[0], marks(keys.len()));
        }
        let tuple = format!("({})", marks(width));
        format!(
            "({}) IN (VALUES {})",
            columns.join(", "),
            vec![tuple; keys.len()].join(", ")
        )
    }
}

/// A PostgreSQL value as the binary bytes the server sent, whatever its type (decoded by [`Datum::from_pg`]).
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Raw<'a>, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl Reader<'_, '_> {
    fn postgres(&self) -> bool {
        matches!(self, Reader::Postgres(..))
    }

    /// Calls `each` with the identity of every row of `table` that `filter` selects.
    pub fn identities(
        &mut self,
        table: &Node,
        filter: Filter<'_>,
        label: &str,
        each: &mut dyn FnMut(Key) -> Result<()>,
    ) -> Result<()> {
        let chunk = if self.postgres() {
            PG_CHUNK
        } else {
            SQLITE_CHUNK
        };
        match filter {
            Filter::Down { .. } | Filter::Up { .. } | Filter::Keys { .. } => {
                for keys in filter.keys().chunks(chunk) {
                    self.identities_once(table, filter.with_keys(keys), label, each)?;
                }
                Ok(())
            }
            _ => self.identities_once(table, filter, label, each),
        }
    }

    fn identities_once(
        &mut self,
        table: &Node,
        filter: Filter<'_>,
        label: &str,
        each: &mut dyn FnMut(Key) -> Result<()>,
    ) -> Result<()> {
        let postgres = self.postgres();
        let mut st = Statement::new(postgres);
        let idents = table.identity_columns();
        let select: Vec<String> = idents
            .iter()
            .map(|(c, _)| {
                let column = Statement::column("a", c, &table.identity);
                if postgres {
                    format!("{column}::text")
                } else {
                    column
                }
            })
            .collect();
        let condition = match filter {
            Filter::All => "TRUE".to_owned(),
            Filter::Keys { keys } => key_match(&mut st, table, "a", keys),
            Filter::Equals { column, value } => {
                let ty = table.type_of(column);
                let column = Statement::column("a", column, &table.identity);
                if postgres {
                    st.pg.push(PgParam::Text(Some(value.to_owned())));
                    format!("{column} = $1::text::{}", Statement::cast(&ty))
                } else {
                    let datum = Datum::from_sqlite(ValueRef::Text(value.as_bytes()), &ty).map_err(
                        |why| {
                            Error::config(format!(
                                "{}.{}: {value:?} does not fit the column ({why})",
                                table.name(),
                                column
                            ))
                        },
                    )?;
                    st.sqlite.push(datum.to_sqlite());
                    format!("{column} = ?")
                }
            }
            Filter::Down { edge, parent, keys } => {
                let from: Vec<String> = edge
                    .from
                    .iter()
                    .map(|c| Statement::column("a", c, &table.identity))
                    .collect();
                match &parent.identity {
                    Identity::Key(cols) if *cols == edge.to => {
                        let types: Vec<PgType> = cols.iter().map(|c| parent.type_of(c)).collect();
                        st.matches(&from, &types, keys)
                    }
                    _ => {
                        let inner = key_match(&mut st, parent, "p", keys);
                        let to: Vec<String> = edge
                            .to
                            .iter()
                            .map(|c| Statement::column("p", c, &parent.identity))
                            .collect();
                        format!(
                            "({}) IN (SELECT {} FROM {} p WHERE {inner})",
                            from.join(", "),
                            to.join(", "),
                            quote_ident(parent.name())
                        )
                    }
                }
            }
            Filter::Up { edge, child, keys } => {
                let inner = key_match(&mut st, child, "c", keys);
                let to: Vec<String> = edge
                    .to
                    .iter()
                    .map(|c| Statement::column("a", c, &table.identity))
                    .collect();
                let from: Vec<String> = edge
                    .from
                    .iter()
                    .map(|c| Statement::column("c", c, &child.identity))
                    .collect();
                format!(
                    "({}) IN (SELECT {} FROM {} c WHERE {inner})",
                    to.join(", "),
                    from.join(", "),
                    quote_ident(child.name())
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM {} a WHERE {condition}",
            select.join(", "),
            quote_ident(table.name())
        );
        let integer: Vec<bool> = idents.iter().map(|(_, t)| t.is_integer()).collect();
        self.keys_of(&sql, &st, &integer, label, each)
    }

    /// The distinct values of `edge`'s referencing columns in rows `keys` of `child`, as keys of `edge`'s
    /// parent (whose identity they must be): which parent rows those rows point at, without visiting the
    /// parent (the caller skips those already taken and looks the others up).
    pub fn referenced(
        &mut self,
        child: &Node,
        parent: &Node,
        edge: &Edge,
        keys: &[Key],
        label: &str,
        each: &mut dyn FnMut(Key) -> Result<()>,
    ) -> Result<()> {
        let postgres = self.postgres();
        let chunk = if postgres { PG_CHUNK } else { SQLITE_CHUNK };
        let integer: Vec<bool> = edge
            .to
            .iter()
            .map(|c| parent.type_of(c).is_integer())
            .collect();
        let from: Vec<String> = edge
            .from
            .iter()
            .map(|c| Statement::column("c", c, &child.identity))
            .collect();
        let select: Vec<String> = from
            .iter()
            .map(|c| {
                if postgres {
                    format!("{c}::text")
                } else {
                    c.clone()
                }
            })
            .collect();
        let present: Vec<String> = from.iter().map(|c| format!("{c} IS NOT NULL")).collect();
        for keys in keys.chunks(chunk) {
            let mut st = Statement::new(postgres);
            let condition = key_match(&mut st, child, "c", keys);
            let sql = format!(
                "SELECT DISTINCT {} FROM {} c WHERE {condition} AND {}",
                select.join(", "),
                quote_ident(child.name()),
                present.join(" AND ")
            );
            self.keys_of(&sql, &st, &integer, label, each)?;
        }
        Ok(())
    }

    /// Runs `sql`, whose columns are one key's parts, handing each row's key to `each`.
    fn keys_of(
        &mut self,
        sql: &str,
        st: &Statement,
        integer: &[bool],
        label: &str,
        each: &mut dyn FnMut(Key) -> Result<()>,
    ) -> Result<()> {
        let width = integer.len();
        match self {
            Reader::Sqlite(conn) => {
                let fail = |e| crate::db::sqlite::sql_error(Stage::Source, label, sql, e);
                let mut statement = conn.prepare_cached(sql).map_err(fail)?;
                let mut rows = statement
                    .query(rusqlite::params_from_iter(st.sqlite.iter()))
                    .map_err(fail)?;
                while let Some(row) = rows.next().map_err(fail)? {
                    let mut parts = Vec::with_capacity(width);
                    for i in 0..width {
                        parts.push(KeyVal::from_sqlite(row.get_ref(i).map_err(fail)?));
                    }
                    each(Key::of(parts))?;
                }
                Ok(())
            }
            Reader::Postgres(client, _) => pg_stream(client, sql, &st.pg, label, &mut |row| {
                let mut parts = Vec::with_capacity(width);
                for (i, integer) in integer.iter().enumerate() {
                    let text: Option<String> =
                        row.try_get(i).map_err(|e| pg_fail(label, sql, &e))?;
                    parts.push(match text {
                        None => KeyVal::Null,
                        Some(t) if *integer => {
                            t.parse().map(KeyVal::Int).unwrap_or(KeyVal::Text(t))
                        }
                        Some(t) => KeyVal::Text(t),
                    });
                }
                each(Key::of(parts))
            }),
        }
    }

    /// Calls `each` with the rows of `table` whose identities are `keys` (every column the table's copy
    /// reads, as its planned type), in key order.
    pub fn rows(
        &mut self,
        table: &Node,
        keys: &[Key],
        label: &str,
        each: &mut dyn FnMut(Vec<Datum>) -> Result<()>,
    ) -> Result<()> {
        let postgres = self.postgres();
        let chunk = if postgres { PG_CHUNK } else { SQLITE_CHUNK };
        let columns = &table.copy.columns;
        let order: Vec<String> = table
            .identity_columns()
            .iter()
            .map(|(c, _)| Statement::column("a", c, &table.identity))
            .collect();
        for keys in keys.chunks(chunk) {
            let mut st = Statement::new(postgres);
            let condition = key_match(&mut st, table, "a", keys);
            let list = if postgres {
                crate::migrate::rows::pg_select_list(&table.copy)
            } else {
                let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
                names.join(", ")
            };
            let list = if list.is_empty() {
                "NULL".to_owned()
            } else {
                list
            };
            let sql = format!(
                "SELECT {list} FROM {} a WHERE {condition} ORDER BY {}",
                quote_ident(table.name()),
                order.join(", ")
            );
            match self {
                Reader::Sqlite(conn) => {
                    let fail = |e| crate::db::sqlite::sql_error(Stage::Source, label, &sql, e);
                    let mut statement = conn.prepare_cached(&sql).map_err(fail)?;
                    let mut rows = statement
                        .query(rusqlite::params_from_iter(st.sqlite.iter()))
                        .map_err(fail)?;
                    while let Some(row) = rows.next().map_err(fail)? {
                        let mut values = Vec::with_capacity(columns.len());
                        for (i, (name, ty)) in columns.iter().enumerate() {
                            let value = row.get_ref(i).map_err(fail)?;
                            let datum = Datum::from_sqlite(value, ty).map_err(|why| {
                                misfit(label, table, name, &describe(value), &why)
                            })?;
                            values.push(datum);
                        }
                        each(values)?;
                    }
                }
                Reader::Postgres(client, _) => {
                    pg_stream(client, &sql, &st.pg, label, &mut |row| {
                        let mut values = Vec::with_capacity(columns.len());
                        for (i, (name, ty)) in columns.iter().enumerate() {
                            let raw: Raw<'_> =
                                row.try_get(i).map_err(|e| pg_fail(label, &sql, &e))?;
                            let datum = Datum::from_pg(raw.0, ty).map_err(|why| {
                                misfit(
                                    label,
                                    table,
                                    name,
                                    &format!("{} bytes", raw.0.map_or(0, <[u8]>::len)),
                                    &why,
                                )
                            })?;
                            values.push(datum);
                        }
                        each(values)
                    })?
                }
            }
        }
        Ok(())
    }
}

/// The condition that `table`'s rows (as `alias`) are those of `keys`.
fn key_match(st: &mut Statement, table: &Node, alias: &str, keys: &[Key]) -> String {
    let idents = table.identity_columns();
    let columns: Vec<String> = idents
        .iter()
        .map(|(c, _)| Statement::column(alias, c, &table.identity))
        .collect();
    let types: Vec<PgType> = idents.into_iter().map(|(_, t)| t).collect();
    st.matches(&columns, &types, keys)
}

fn misfit(label: &str, table: &Node, column: &str, value: &str, why: &str) -> Error {
    Error::data(
        Stage::Decode,
        Position::file(label).with_field(column.to_owned()),
        format!(
            "table {}, column {}: {value}: {why}; read the column as another type with `casts:` in the spec \
             (e.g. {}.{column}: text)",
            quote_ident(table.name()),
            quote_ident(column),
            table.name()
        ),
    )
}

fn pg_fail(label: &str, sql: &str, e: &postgres::Error) -> Error {
    let what: String = sql.chars().take(120).collect();
    crate::db::postgres::pg_error(Stage::Source, &format!("{label}: {what}"), e)
}

/// Runs `sql`, handing its rows to `each` as they arrive.
fn pg_stream(
    client: &mut postgres::Client,
    sql: &str,
    params: &[PgParam],
    label: &str,
    each: &mut dyn FnMut(&postgres::Row) -> Result<()>,
) -> Result<()> {
    use postgres::fallible_iterator::FallibleIterator as _;
    let values: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| match p {
            PgParam::Text(t) => t as &(dyn ToSql + Sync),
            PgParam::Array(a) => a as &(dyn ToSql + Sync),
        })
        .collect();
    let mut rows = client
        .query_raw(sql, values)
        .map_err(|e| pg_fail(label, sql, &e))?;
    while let Some(row) = rows.next().map_err(|e| pg_fail(label, sql, &e))? {
        each(&row)?;
    }
    Ok(())
}
