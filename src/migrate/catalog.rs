//! What makes a resumed migration idempotent: which schema object each statement of the
//! [run](super::run) creates, and whether the target's catalog already has it. A run killed after a
//! commit and before its state file caught up resumes by skipping what the catalog shows is there,
//! instead of failing on `multiple primary keys` or `already exists`.

use super::conn::Conn;
use super::sql::{tokenize, Dialect, Token};
use crate::error::Result;

/// The schema object a migration statement creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    /// `CREATE TABLE "t" …`.
    Table(String),
    /// `ALTER TABLE "t" ADD PRIMARY KEY …` (PostgreSQL names it itself).
    PrimaryKey(String),
    /// `ALTER TABLE "t" ADD CONSTRAINT "c" …`: UNIQUE, CHECK, FOREIGN KEY.
    Constraint { table: String, name: String },
    /// `CREATE [UNIQUE] INDEX "i" ON …`.
    Index(String),
    /// `ALTER TABLE "t" ALTER COLUMN "c" TYPE …`: a column loaded as text and converted after the data.
    ColumnType { table: String, column: String },
    /// `CREATE VIEW "v" …`.
    View(String),
    /// Safe to run again as it is (`SELECT setval(…)` sets the same position from the same rows).
    Repeatable,
}

/// The object `statement` (one ferry wrote) creates.
pub(crate) fn object_of(statement: &str) -> Object {
    let Ok(tokens) = tokenize(statement, Dialect::Sqlite) else {
        return Object::Repeatable;
    };
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.is_word(w));
    let name = |i: usize| tokens.get(i).and_then(Token::name).map(str::to_owned);
    let object = if word(0, "CREATE") && word(1, "TABLE") {
        name(2).map(Object::Table)
    } else if word(0, "CREATE") && word(1, "VIEW") {
        name(2).map(Object::View)
    } else if word(0, "CREATE") && (word(1, "INDEX") || word(1, "UNIQUE") && word(2, "INDEX")) {
        name(if word(1, "UNIQUE") { 3 } else { 2 }).map(Object::Index)
    } else if word(0, "ALTER") && word(1, "TABLE") && word(3, "ADD") && word(4, "PRIMARY") {
        name(2).map(Object::PrimaryKey)
    } else if word(0, "ALTER") && word(1, "TABLE") && word(3, "ADD") && word(4, "CONSTRAINT") {
        name(2)
            .zip(name(5))
            .map(|(table, name)| Object::Constraint { table, name })
    } else if word(0, "ALTER") && word(1, "TABLE") && word(3, "ALTER") && word(4, "COLUMN") {
        name(2)
            .zip(name(5))
            .map(|(table, column)| Object::ColumnType { table, column })
    } else {
        None
    };
    object.unwrap_or(Object::Repeatable)
}

/// True when the target already has `object` (never for [`Object::Repeatable`]).
pub(crate) fn exists(target: &mut Conn, object: &Object) -> Result<bool> {
    let (sql, params): (&str, Vec<&str>) = match target {
        Conn::Postgres(_) => match object {
            Object::Repeatable => return Ok(false),
            Object::Table(t) => (
                "SELECT count(*) FROM pg_class WHERE oid = to_regclass(quote_ident($1)) AND relkind IN ('r', 'p')",
                vec![t.as_str()],
            ),
            Object::View(v) => (
                "SELECT count(*) FROM pg_class WHERE oid = to_regclass(quote_ident($1)) AND relkind IN ('v', 'm')",
                vec![v.as_str()],
            ),
            Object::Index(i) => (
                "SELECT count(*) FROM pg_class WHERE oid = to_regclass(quote_ident($1)) AND relkind IN ('i', 'I')",
                vec![i.as_str()],
            ),
            Object::PrimaryKey(t) => (
                "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(quote_ident($1)) AND contype = 'p'",
                vec![t.as_str()],
            ),
            Object::Constraint { table, name } => (
                "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(quote_ident($1)) AND conname = $2",
                vec![table.as_str(), name.as_str()],
            ),
            // The column was created as text; any other type means the conversion ran.
            Object::ColumnType { table, column } => (
                "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(quote_ident($1)) \
                 AND attname = $2 AND atttypid <> 'text'::regtype",
                vec![table.as_str(), column.as_str()],
            ),
        },
        Conn::Sqlite(_) => {
            let (kind, name) = match object {
                Object::Table(t) => ("table", t),
                Object::View(v) => ("view", v),
                Object::Index(i) => ("index", i),
                // SQLite targets get their keys and constraints inside CREATE TABLE.
                _ => return Ok(false),
            };
            (
                "SELECT count(*) FROM sqlite_schema WHERE type = ?1 AND name = ?2",
                vec![kind, name.as_str()],
            )
        }
    };
    target.catalog_has(sql, &params)
}

/// The statements whose object the target does not have yet: all of them for a first run, whose
/// target was checked before anything was created; on a resumed run, those the catalog does not show
/// (the interrupted run may have committed them and been stopped before its state file said so).
pub(crate) fn missing(
    target: &mut Conn,
    statements: &[String],
    resume: bool,
) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(statements.len());
    for s in statements {
        if !resume || !exists(target, &object_of(s))? {
            out.push(s.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_what_they_create() {
        let table = |t: &str| t.to_owned();
        for (sql, object) in [
            (
                "CREATE TABLE \"a \"\"b\" (\n  x bigint\n)",
                Object::Table(table("a \"b")),
            ),
            (
                "ALTER TABLE \"Genre\" ADD PRIMARY KEY (\"GenreId\")",
                Object::PrimaryKey(table("Genre")),
            ),
            (
                "ALTER TABLE \"t\" ADD CONSTRAINT \"t_a_key\" UNIQUE (\"a\")",
                Object::Constraint {
                    table: table("t"),
                    name: table("t_a_key"),
                },
            ),
            (
                "ALTER TABLE \"t\" ADD CONSTRAINT \"fk\" FOREIGN KEY (\"a\") REFERENCES \"u\" (\"id\") ON UPDATE NO ACTION ON DELETE NO ACTION NOT VALID",
                Object::Constraint {
                    table: table("t"),
                    name: table("fk"),
                },
            ),
            (
                "CREATE UNIQUE INDEX \"i\" ON \"t\" (\"a\")",
                Object::Index(table("i")),
            ),
            ("CREATE INDEX \"j\" ON \"t\" ((lower(\"a\")))", Object::Index(table("j"))),
            (
                "ALTER TABLE \"t\" ALTER COLUMN \"c\" TYPE inet USING \"c\"::inet",
                Object::ColumnType {
                    table: table("t"),
                    column: table("c"),
                },
            ),
            ("CREATE VIEW \"v\" AS SELECT 1", Object::View(table("v"))),
            (
                "SELECT setval(pg_get_serial_sequence('\"t\"', 'id'), 1, false)",
                Object::Repeatable,
            ),
        ] {
            assert_eq!(object_of(sql), object, "{sql}");
        }
    }

    #[test]
    fn every_statement_of_the_corpus_plans_names_its_object() {
        use super::super::introspect::tests::{corpus, fixture};
        for (file, conn) in [
            ("chinook", corpus("sqlite-chinook/Chinook_Sqlite.sqlite")),
            ("northwind", corpus("sqlite-northwind/northwind.db")),
            ("sakila", corpus("sqlite-sakila/sakila.db")),
            ("fixture", fixture()),
        ] {
            let plan = super::super::Plan::build(&conn, file, &Default::default()).unwrap();
            let ddl = plan.ddl();
            for s in ddl.create.iter().chain(&ddl.after_data) {
                let repeatable = s.starts_with("SELECT setval(");
                assert_eq!(object_of(s) == Object::Repeatable, repeatable, "{s}");
            }
            for s in super::super::sqlite_ddl::sqlite_ddl(&plan) {
                assert_ne!(object_of(&s), Object::Repeatable, "{s}");
            }
        }
    }
}
