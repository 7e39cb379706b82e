//! Reads a SQLite database's schema into a neutral model: tables, columns, keys, UNIQUE constraints,
//! indexes, foreign keys, CHECKs, views and triggers.
//!
//! Everything the pragmas expose comes from their table-valued forms (`pragma_table_xinfo(?1)`,
//! `pragma_index_list(?1)`, …) with bound names; CHECK constraints, COLLATE clauses, generated-column
//! expressions and AUTOINCREMENT come from the `CREATE TABLE` text through a small tokenizer, and
//! partial-index WHERE clauses and expression-index terms from the `CREATE INDEX` text. Internal
//! tables (`sqlite_sequence`, `sqlite_stat*`, any `sqlite_` name) and virtual-table shadow tables are
//! skipped; virtual tables themselves are listed in [`Schema::virtual_tables`].

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::sql::sqlite as sql;
use crate::error::{Error, Position, Result, Stage};

/// A SQLite database's schema.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// Ordinary tables in `sqlite_schema` order.
    pub tables: Vec<Table>,
    /// Views: name and `CREATE VIEW` text.
    pub views: Vec<SqlObject>,
    /// Triggers: name, table and `CREATE TRIGGER` text.
    pub triggers: Vec<SqlObject>,
    /// Virtual tables (FTS, R-Tree, …): name and `CREATE VIRTUAL TABLE` text.
    pub virtual_tables: Vec<SqlObject>,
}

/// A view, trigger or virtual table, kept as its SQL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlObject {
    /// Its name.
    pub name: String,
    /// The table it belongs to (triggers), else the name itself.
    pub table: String,
    /// Its `CREATE …` statement.
    pub sql: String,
}

/// One table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// Its `CREATE TABLE` text.
    pub sql: String,
    /// Columns in order, hidden and generated ones included.
    pub columns: Vec<Column>,
    /// Primary-key columns in key order (empty: no declared key, rows are keyed by rowid).
    pub primary_key: Vec<String>,
    /// The `INTEGER PRIMARY KEY` column that aliases the rowid, if any.
    pub rowid_alias: Option<String>,
    /// Declared `AUTOINCREMENT`.
    pub autoincrement: bool,
    /// Its `sqlite_sequence` value (the largest id ever handed out), when it has one.
    pub sequence: Option<i64>,
    /// `WITHOUT ROWID`.
    pub without_rowid: bool,
    /// `STRICT`.
    pub strict: bool,
    /// UNIQUE constraints (`origin = 'u'`), as indexes.
    pub uniques: Vec<Index>,
    /// Indexes made by `CREATE INDEX` (`origin = 'c'`).
    pub indexes: Vec<Index>,
    /// Foreign keys.
    pub foreign_keys: Vec<ForeignKey>,
    /// CHECK constraints, table- and column-level.
    pub checks: Vec<Check>,
}

impl Table {
    /// The column called `name` (exact spelling first, then ignoring ASCII case as SQLite does).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name).or_else(|| {
            self.columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(name))
        })
    }
}

/// Whether and how a column is hidden or generated (`pragma table_xinfo`'s `hidden`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generated {
    /// An ordinary column.
    #[default]
    No,
    /// `GENERATED ALWAYS AS (…) VIRTUAL`.
    Virtual,
    /// `GENERATED ALWAYS AS (…) STORED`.
    Stored,
    /// A hidden column of a virtual table.
    Hidden,
}

/// One column.
#[derive(Debug, Clone, Default)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// The declared type as written (may be empty).
    pub declared_type: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// The DEFAULT expression as written.
    pub default: Option<String>,
    /// 1-based position in the primary key; 0 when not part of it.
    pub pk_position: u32,
    /// Hidden or generated.
    pub generated: Generated,
    /// The generated column's expression.
    pub generated_expr: Option<String>,
    /// The COLLATE clause (`NOCASE`, `RTRIM`, …), when not the default BINARY.
    pub collation: Option<String>,
}

/// Where an index came from (`pragma index_list`'s `origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOrigin {
    /// `CREATE INDEX`.
    Created,
    /// A UNIQUE constraint.
    Unique,
    /// The PRIMARY KEY.
    PrimaryKey,
}

/// An index or UNIQUE constraint.
#[derive(Debug, Clone)]
pub struct Index {
    /// Its name (`sqlite_autoindex_…` for constraints).
    pub name: String,
    /// UNIQUE.
    pub unique: bool,
    /// Where it came from.
    pub origin: IndexOrigin,
    /// Key terms in order.
    pub terms: Vec<IndexTerm>,
    /// A partial index's WHERE expression.
    pub where_clause: Option<String>,
}

impl Index {
    /// True when a key term is an expression rather than a column.
    pub fn has_expression(&self) -> bool {
        self.terms.iter().any(|t| t.column.is_none())
    }

    /// The key's column names, when every term is a plain column.
    pub fn column_names(&self) -> Option<Vec<String>> {
        self.terms.iter().map(|t| t.column.clone()).collect()
    }
}

/// One key term of an index.
#[derive(Debug, Clone)]
pub struct IndexTerm {
    /// The column, or `None` for an expression.
    pub column: Option<String>,
    /// The term as written in `CREATE INDEX` (the expression for expression terms), when known.
    pub text: Option<String>,
    /// Descending.
    pub desc: bool,
    /// The collation (`BINARY` by default).
    pub collation: String,
}

/// A foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Its name, when the `CREATE TABLE` text gives one (`CONSTRAINT name FOREIGN KEY …`).
    pub name: Option<String>,
    /// The referencing columns.
    pub from: Vec<String>,
    /// The referenced table.
    pub table: String,
    /// The referenced columns; empty when the key names none (it then references the primary key).
    pub to: Vec<String>,
    /// `ON UPDATE` action as SQLite reports it (`NO ACTION`, `CASCADE`, `SET NULL`, …).
    pub on_update: String,
    /// `ON DELETE` action.
    pub on_delete: String,
}

/// A CHECK constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Its name (`CONSTRAINT name CHECK …`).
    pub name: Option<String>,
    /// The column it is written on, for column constraints.
    pub column: Option<String>,
    /// The expression as written.
    pub expr: String,
}

fn sql_error(path: &str, what: &str, e: rusqlite::Error) -> Error {
    Error::data(
        Stage::Source,
        Position::file(path),
        format!("sqlite {path}: {what}: {e}"),
    )
}

/// Opens a SQLite database read-only.
pub fn open(path: &Path) -> Result<Connection> {
    let label = path.display().to_string();
    if !path.exists() {
        return Err(Error::config(format!(
            "sqlite database {label} does not exist"
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    Connection::open_with_flags(path, flags).map_err(|e| sql_error(&label, "cannot open", e))
}

impl Schema {
    /// Reads the schema of the `main` database of `conn`; `label` names it in errors.
    pub fn read(conn: &Connection, label: &str) -> Result<Schema> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e| sql_error(label, &what, e)
        };
        let mut schema = Schema::default();
        let mut kinds = std::collections::HashMap::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main'",
                )
                .map_err(err("cannot list tables"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        (
                            r.get::<_, String>(1)?,
                            r.get::<_, bool>(2)?,
                            r.get::<_, bool>(3)?,
                        ),
                    ))
                })
                .map_err(err("cannot list tables"))?;
            for row in rows {
                let (name, kind) = row.map_err(err("cannot list tables"))?;
                kinds.insert(name, kind);
            }
        }
        let mut objects = Vec::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema \
                     WHERE type IN ('table', 'view', 'trigger') ORDER BY rowid",
                )
                .map_err(err("cannot read sqlite_schema"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(err("cannot read sqlite_schema"))?;
            for row in rows {
                objects.push(row.map_err(err("cannot read sqlite_schema"))?);
            }
        }
        let sequences = read_sequences(conn, label)?;
        for (kind, name, table, sql_text) in objects {
            let object = SqlObject {
                name: name.clone(),
                table,
                sql: sql_text.clone(),
            };
            match kind.as_str() {
                "view" => schema.views.push(object),
                "trigger" => schema.triggers.push(object),
                _ if is_internal(&name) => {}
                _ => match kinds.get(&name) {
                    Some((k, _, _)) if k == "virtual" => schema.virtual_tables.push(object),
                    Some((k, _, _)) if k == "shadow" => {}
                    other => {
                        let (without_rowid, strict) =
                            other.map_or((false, false), |(_, w, s)| (*w, *s));
                        let mut t = read_table(conn, label, &name, &sql_text)?;
                        t.without_rowid = without_rowid;
                        t.strict = strict;
                        if without_rowid {
                            t.rowid_alias = None;
                        }
                        t.sequence = sequences.iter().find(|(n, _)| *n == name).map(|(_, s)| *s);
                        schema.tables.push(t);
                    }
                },
            }
        }
        Ok(schema)
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name).or_else(|| {
            self.tables
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(name))
        })
    }
}

/// True for SQLite's own tables (`sqlite_sequence`, `sqlite_stat1`, …), which are never migrated.
pub fn is_internal(name: &str) -> bool {
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"))
}

fn read_sequences(conn: &Connection, label: &str) -> Result<Vec<(String, i64)>> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| sql_error(label, "cannot look for sqlite_sequence", e))?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT name, seq FROM sqlite_sequence")
        .map_err(|e| sql_error(label, "cannot read sqlite_sequence", e))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(|e| sql_error(label, "cannot read sqlite_sequence", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| sql_error(label, "cannot read sqlite_sequence", e))
}

fn read_table(conn: &Connection, label: &str, name: &str, create_sql: &str) -> Result<Table> {
    let err = |what: String| move |e| sql_error(label, &what, e);
    let ddl = sql::parse_create_table(create_sql).map_err(|e| {
        Error::data(
            Stage::Source,
            Position::file(label),
            format!("sqlite {label}: cannot read the CREATE TABLE text of {name}: {e}"),
        )
    })?;
    let mut table = Table {
        name: name.to_owned(),
        sql: create_sql.to_owned(),
        autoincrement: ddl.autoincrement,
        ..Table::default()
    };
    let mut stmt = conn
        .prepare(
            "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1)",
        )
        .map_err(err(format!("cannot read the columns of {name}")))?;
    let rows = stmt
        .query_map([name], |r| {
            let hidden: i64 = r.get(5)?;
            Ok(Column {
                name: r.get(0)?,
                declared_type: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                not_null: r.get(2)?,
                default: r.get(3)?,
                pk_position: r.get(4)?,
                generated: match hidden {
                    2 => Generated::Virtual,
                    3 => Generated::Stored,
                    1 => Generated::Hidden,
                    _ => Generated::No,
                },
                generated_expr: None,
                collation: None,
            })
        })
        .map_err(err(format!("cannot read the columns of {name}")))?;
    for row in rows {
        let mut column = row.map_err(err(format!("cannot read the columns of {name}")))?;
        if let Some(c) = ddl
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&column.name))
        {
            column.collation = c
                .collation
                .clone()
                .filter(|c| !c.eq_ignore_ascii_case("BINARY"));
            if column.generated != Generated::No {
                column.generated_expr = c.generated.clone();
            }
        }
        table.columns.push(column);
    }
    let mut pk: Vec<&Column> = table.columns.iter().filter(|c| c.pk_position > 0).collect();
    pk.sort_by_key(|c| c.pk_position);
    table.primary_key = pk.iter().map(|c| c.name.clone()).collect();
    if let [only] = pk.as_slice() {
        if only.declared_type.eq_ignore_ascii_case("INTEGER") {
            table.rowid_alias = Some(only.name.clone());
        }
    }
    table.checks = ddl
        .checks
        .into_iter()
        .map(|c| Check {
            name: c.name,
            column: c.column,
            expr: c.expr,
        })
        .collect();
    read_indexes(conn, label, &mut table)?;
    read_foreign_keys(conn, label, &mut table)?;
    for fk in &mut table.foreign_keys {
        fk.name = ddl
            .foreign_key_names
            .iter()
            .find(|(from, _)| {
                from.len() == fk.from.len()
                    && from
                        .iter()
                        .zip(&fk.from)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .map(|(_, name)| name.clone());
    }
    Ok(table)
}

fn read_indexes(conn: &Connection, label: &str, table: &mut Table) -> Result<()> {
    let err = |what: String| move |e| sql_error(label, &what, e);
    let what = format!("cannot read the indexes of {}", table.name);
    let list: Vec<(String, bool, String, Option<String>)> = {
        let mut stmt = conn
            .prepare(
                "SELECT l.name, l.\"unique\", l.origin, s.sql FROM pragma_index_list(?1) AS l \
                 LEFT JOIN sqlite_schema AS s ON s.type = 'index' AND s.name = l.name ORDER BY l.seq DESC",
            )
            .map_err(err(what.clone()))?;
        let rows = stmt
            .query_map([&table.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .map_err(err(what.clone()))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(err(what.clone()))?
    };
    for (name, unique, origin, index_sql) in list {
        let origin = match origin.as_str() {
            "pk" => IndexOrigin::PrimaryKey,
            "u" => IndexOrigin::Unique,
            _ => IndexOrigin::Created,
        };
        let parsed = match &index_sql {
            Some(text) => sql::parse_create_index(text).map_err(|e| {
                Error::data(
                    Stage::Source,
                    Position::file(label),
                    format!("sqlite {label}: cannot read the CREATE INDEX text of {name}: {e}"),
                )
            })?,
            None => sql::IndexDdl::default(),
        };
        let mut stmt = conn
            .prepare("SELECT cid, name, \"desc\", coll FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno")
            .map_err(err(what.clone()))?;
        let rows = stmt
            .query_map([&name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(err(what.clone()))?;
        let mut terms = Vec::new();
        for (n, row) in rows.enumerate() {
            let (cid, column, desc, coll) = row.map_err(err(what.clone()))?;
            let text = parsed.terms.get(n).cloned();
            terms.push(IndexTerm {
                // cid -2: an expression; -1: the rowid.
                column: if cid == -2 { None } else { column },
                text,
                desc,
                collation: coll.unwrap_or_else(|| "BINARY".into()),
            });
        }
        let index = Index {
            name,
            unique,
            origin,
            terms,
            where_clause: parsed.where_clause,
        };
        match origin {
            IndexOrigin::Created => table.indexes.push(index),
            IndexOrigin::Unique => table.uniques.push(index),
            IndexOrigin::PrimaryKey => {}
        }
    }
    Ok(())
}

fn read_foreign_keys(conn: &Connection, label: &str, table: &mut Table) -> Result<()> {
    let what = format!("cannot read the foreign keys of {}", table.name);
    let mut stmt = conn
        .prepare(
            "SELECT id, \"table\", \"from\", \"to\", on_update, on_delete FROM pragma_foreign_key_list(?1) \
             ORDER BY id DESC, seq",
        )
        .map_err(|e| sql_error(label, &what, e))?;
    let rows = stmt
        .query_map([&table.name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(|e| sql_error(label, &what, e))?;
    let mut last_id = None;
    for row in rows {
        let (id, to_table, from, to, on_update, on_delete) =
            row.map_err(|e| sql_error(label, &what, e))?;
        if last_id != Some(id) {
            table.foreign_keys.push(ForeignKey {
                name: None,
                from: Vec::new(),
                table: to_table,
                to: Vec::new(),
                on_update,
                on_delete,
            });
            last_id = Some(id);
        }
        if let Some(fk) = table.foreign_keys.last_mut() {
            fk.from.push(from);
            if let Some(to) = to {
                fk.to.push(to);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A corpus database, opened read-only.
    pub(crate) fn corpus(file: &str) -> Connection {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/")).join(file);
        open(&path).unwrap()
    }

    /// The synthetic fixture: what the corpus lacks.
    pub(crate) fn fixture() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE users (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                email TEXT NOT NULL COLLATE NOCASE UNIQUE,
                age INTEGER CHECK (age >= 0),
                created_at TEXT DEFAULT CURRENT_TIMESTAMP,
                seen DATETIME DEFAULT (datetime('now')),
                is_admin BOOLEAN NOT NULL DEFAULT 0,
                settings_json TEXT,
                weird ENUM DEFAULT 'a'
             );
             CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
             CREATE TABLE strict_t (id INTEGER PRIMARY KEY, n INT NOT NULL, r REAL, full ANY) STRICT;
             CREATE TABLE gen (
                a INTEGER, b INTEGER,
                s INTEGER GENERATED ALWAYS AS (a + b) STORED,
                v TEXT AS (upper(typeof(a))) VIRTUAL
             );
             CREATE INDEX users_lower_email ON users (lower(email));
             CREATE INDEX users_adult ON users (age DESC) WHERE age >= 18;
             CREATE INDEX users_glob ON users (email) WHERE email GLOB '*@x';
             CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users ON DELETE SET NULL,
                amount INTEGER NOT NULL);
             INSERT INTO users (email, age, is_admin, settings_json) VALUES
                ('a@x', 30, 1, '{\"t\":1}'), ('b@x', 12, 0, '[1,2]'), ('c@x', NULL, 0, NULL);
             INSERT INTO orders (id, user_id, amount) VALUES (1, 1, 10), (2, 1, 'ten'), (3, 2, 2.5), (4, NULL, 7);
             INSERT INTO gen (a, b) VALUES (1, 2);
             CREATE TABLE events (at DATETIME, day DATE, flag BOOLEAN);
             INSERT INTO events VALUES (1700000000, '2024-01-31', 1), (1700000060, '2024-02-01', 2);
             DELETE FROM users WHERE id = 3;",
        )
        .unwrap();
        conn
    }

    #[test]
    fn internal_names() {
        assert!(is_internal("sqlite_sequence") && is_internal("SQLITE_STAT1"));
        assert!(!is_internal("sqlit") && !is_internal("sqlitéx_1") && !is_internal("users"));
    }

    #[test]
    fn chinook_schema() {
        let schema =
            Schema::read(&corpus("sqlite-chinook/Chinook_Sqlite.sqlite"), "chinook").unwrap();
        assert_eq!(schema.tables.len(), 11);
        let fks: usize = schema.tables.iter().map(|t| t.foreign_keys.len()).sum();
        assert_eq!(fks, 11);
        let pt = schema.table("PlaylistTrack").unwrap();
        assert_eq!(pt.primary_key, ["PlaylistId", "TrackId"]);
        assert_eq!(pt.rowid_alias, None);
        assert_eq!(
            pt.indexes.len(),
            2,
            "the autoindex of the PK is not an index"
        );
        let track = schema.table("Track").unwrap();
        assert_eq!(track.rowid_alias.as_deref(), Some("TrackId"));
        assert!(!track.autoincrement);
        assert_eq!(
            track.column("UnitPrice").unwrap().declared_type,
            "NUMERIC(10,2)"
        );
        let employee = schema.table("Employee").unwrap();
        assert_eq!(employee.foreign_keys[0].table, "Employee");
        assert!(schema.views.is_empty() && schema.triggers.is_empty());

        let auto = Schema::read(
            &corpus("sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite"),
            "c",
        )
        .unwrap();
        assert_eq!(auto.tables.len(), 11, "sqlite_sequence is skipped");
        let invoice = auto.table("Invoice").unwrap();
        assert!(invoice.autoincrement);
        assert_eq!(invoice.sequence, Some(412));
    }

    #[test]
    fn northwind_schema() {
        let schema = Schema::read(&corpus("sqlite-northwind/northwind.db"), "northwind").unwrap();
        assert_eq!(schema.tables.len(), 13);
        assert_eq!(schema.views.len(), 17);
        assert!(schema.triggers.is_empty());
        let fks: usize = schema.tables.iter().map(|t| t.foreign_keys.len()).sum();
        assert_eq!(fks, 13);
        let checks: usize = schema.tables.iter().map(|t| t.checks.len()).sum();
        assert_eq!(checks, 7);
        let od = schema.table("Order Details").unwrap();
        assert_eq!(od.primary_key, ["OrderID", "ProductID"]);
        assert_eq!(od.checks[0].expr, "[Discount]>=(0) AND [Discount]<=(1)");
        assert_eq!(
            od.column("UnitPrice").unwrap().default.as_deref(),
            Some("0")
        );
        let orders = schema.table("Orders").unwrap();
        assert!(orders.autoincrement);
        assert_eq!(orders.sequence, Some(11077));
        let customers = schema.table("Customers").unwrap();
        assert_eq!(customers.primary_key, ["CustomerID"]);
        assert!(!customers.column("CustomerID").unwrap().not_null);
        let products = schema.table("Products").unwrap();
        assert_eq!(
            products.column("Discontinued").unwrap().default.as_deref(),
            Some("'0'")
        );
    }

    #[test]
    fn sakila_schema() {
        let schema = Schema::read(&corpus("sqlite-sakila/sakila.db"), "sakila").unwrap();
        assert_eq!(schema.tables.len(), 16);
        assert_eq!(schema.views.len(), 7);
        assert_eq!(schema.triggers.len(), 3);
        assert!(schema.triggers.iter().all(|t| t.table == "film"));
        let fks: usize = schema.tables.iter().map(|t| t.foreign_keys.len()).sum();
        assert_eq!(fks, 22);
        let store = schema.table("store").unwrap();
        assert!(store
            .foreign_keys
            .iter()
            .any(|f| f.table == "staff" && f.name.as_deref() == Some("fk_store_staff")));
        let staff = schema.table("staff").unwrap();
        assert!(staff.foreign_keys.iter().any(|f| f.table == "store"));
        let all: Vec<&ForeignKey> = schema.tables.iter().flat_map(|t| &t.foreign_keys).collect();
        assert!(all.iter().any(|f| f.on_delete == "SET NULL"));
        assert!(all
            .iter()
            .any(|f| f.on_update == "CASCADE" && f.on_delete == "RESTRICT"));
        let film = schema.table("film").unwrap();
        assert_eq!(film.column("special_features").unwrap().declared_type, "");
        assert_eq!(film.column("rating").unwrap().declared_type, "ENUM");
        assert_eq!(schema.table("address").unwrap().sequence, Some(605));
    }

    #[test]
    fn fixture_schema() {
        let schema = Schema::read(&fixture(), "fixture").unwrap();
        let names: Vec<_> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["users", "kv", "strict_t", "gen", "orders", "events"]
        );
        let users = schema.table("users").unwrap();
        assert!(users.autoincrement);
        assert_eq!(users.sequence, Some(3));
        assert_eq!(users.rowid_alias.as_deref(), Some("id"));
        assert_eq!(
            users.column("email").unwrap().collation.as_deref(),
            Some("NOCASE")
        );
        assert_eq!(users.uniques.len(), 1);
        assert_eq!(users.uniques[0].terms[0].collation, "NOCASE");
        assert_eq!(users.checks.len(), 1);
        assert_eq!(
            users.column("created_at").unwrap().default.as_deref(),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(users.indexes.len(), 3);
        let lower = users
            .indexes
            .iter()
            .find(|i| i.name == "users_lower_email")
            .unwrap();
        assert!(lower.has_expression());
        assert_eq!(lower.terms[0].text.as_deref(), Some("lower(email)"));
        let adult = users
            .indexes
            .iter()
            .find(|i| i.name == "users_adult")
            .unwrap();
        assert_eq!(adult.where_clause.as_deref(), Some("age >= 18"));
        assert!(adult.terms[0].desc);
        let kv = schema.table("kv").unwrap();
        assert!(kv.without_rowid && !kv.strict);
        assert_eq!(kv.primary_key, ["k"]);
        let strict = schema.table("strict_t").unwrap();
        assert!(strict.strict && !strict.without_rowid);
        let gen = schema.table("gen").unwrap();
        assert_eq!(gen.columns.len(), 4);
        assert_eq!(gen.column("s").unwrap().generated, Generated::Stored);
        assert_eq!(
            gen.column("s").unwrap().generated_expr.as_deref(),
            Some("a + b")
        );
        assert_eq!(gen.column("v").unwrap().generated, Generated::Virtual);
        let orders = schema.table("orders").unwrap();
        assert_eq!(orders.foreign_keys[0].to, Vec::<String>::new());
        assert_eq!(orders.foreign_keys[0].on_delete, "SET NULL");
    }
}
