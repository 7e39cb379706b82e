//! SQLite DDL for a plan from either direction: the `CREATE TABLE` and `CREATE INDEX` statements of a
//! migration into SQLite. Column types come from [the one SQLite type table](crate::db::sqlite_type), and
//! expressions go through [`sql::postgres`](super::sql::postgres).

use super::plan::Plan;
use super::sql::postgres::{translate_default, translate_expr};
use super::sql::{matching_paren, split_commas, tokenize, Dialect};
use super::types::PgType;
use crate::db::quote_ident;
use crate::db::sqlite_type::SqliteType;

/// The SQLite statements that create every table of `plan`: one `CREATE TABLE` per table (columns with
/// a SQLite type per [`PgType`], NOT NULL, DEFAULT, `GENERATED ALWAYS AS (…) STORED`, the primary key —
/// a single-column integer identity key as `"id" INTEGER PRIMARY KEY`, so it aliases the rowid — and
/// UNIQUE, CHECK and FOREIGN KEY table constraints), then the `CREATE INDEX` statements.
///
/// A plan from [`read_plan`] is already in SQLite dialect and is written whole. A plan built from
/// SQLite by [`Plan::build`] holds PostgreSQL-dialect defaults, expressions and index statements: each
/// goes through the same translation as [`read_plan`]'s, and what does not translate is left out
/// (defaults and CHECKs omitted, generated columns written as plain columns, expression indexes
/// dropped), since SQLite would refuse the whole statement. Foreign keys are written inside
/// `CREATE TABLE`, as SQLite requires, in any order: load with `PRAGMA foreign_keys = OFF` (the SQLite
/// that rusqlite bundles turns them on by default).
pub fn sqlite_ddl(plan: &Plan) -> Vec<String> {
    let mut tables = Vec::with_capacity(plan.tables.len());
    let mut indexes = Vec::new();
    for t in &plan.tables {
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let rowid_key = match t.primary_key.as_slice() {
            [key] => t
                .columns
                .iter()
                .find(|c| &c.name == key && c.translation.identity && c.translation.pg.is_integer())
                .map(|c| c.name.as_str()),
            _ => None,
        };
        let mut lines = Vec::with_capacity(t.columns.len() + 4);
        for c in &t.columns {
            let mut line = format!(
                "{} {}",
                quote_ident(&c.name),
                sqlite_type(&c.translation.pg)
            );
            if rowid_key == Some(c.name.as_str()) {
                line.push_str(" PRIMARY KEY");
                lines.push(line);
                continue;
            }
            if c.not_null {
                line.push_str(" NOT NULL");
            }
            let generated = c
                .generated
                .as_deref()
                .and_then(|g| translate_expr(g, &names).ok());
            if let Some(g) = generated {
                line.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
            } else if let Some(d) = c
                .default
                .as_deref()
                .and_then(|d| translate_default(d).ok().flatten())
            {
                line.push_str(&format!(" DEFAULT {d}"));
            }
            lines.push(line);
        }
        if rowid_key.is_none() && !t.primary_key.is_empty() {
            lines.push(format!("PRIMARY KEY ({})", column_list(&t.primary_key)));
        }
        for (name, cols) in &t.uniques {
            lines.push(format!(
                "CONSTRAINT {} UNIQUE ({})",
                quote_ident(name),
                column_list(cols)
            ));
        }
        for (name, expr) in &t.checks {
            if let Ok(expr) = translate_expr(expr, &names) {
                lines.push(format!("CONSTRAINT {} CHECK ({expr})", quote_ident(name)));
            }
        }
        for fk in &t.foreign_keys {
            lines.push(format!(
                "CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON UPDATE {} ON DELETE {}",
                quote_ident(&fk.name),
                column_list(&fk.from),
                quote_ident(&fk.table),
                column_list(&fk.to),
                known_action(&fk.on_update),
                known_action(&fk.on_delete)
            ));
        }
        tables.push(format!(
            "CREATE TABLE {} (\n  {}\n)",
            quote_ident(&t.name),
            lines.join(",\n  ")
        ));
        indexes.extend(
            t.indexes
                .iter()
                .filter_map(|(_, stmt)| sqlite_index(stmt, &t.name, &names)),
        );
    }
    tables.extend(indexes);
    tables
}

/// The SQLite type written for a PostgreSQL type (its affinity follows SQLite's rules for the name): the
/// declared name of its class in [the one table](crate::db::sqlite_type), so an exact decimal too wide
/// for NUMERIC affinity becomes `DECIMAL_TEXT(p,s)` and keeps every digit.
pub fn sqlite_type(pg: &PgType) -> String {
    let class = match pg {
        PgType::BigInt | PgType::Integer | PgType::SmallInt => SqliteType::Integer,
        PgType::Double | PgType::Real => SqliteType::Float,
        PgType::Numeric(precision) => SqliteType::Decimal {
            precision: *precision,
        },
        PgType::Boolean => SqliteType::Boolean,
        PgType::Date => SqliteType::Date,
        PgType::Timestamptz => SqliteType::Timestamp { zoned: true },
        PgType::Timestamp => SqliteType::Timestamp { zoned: false },
        PgType::Jsonb => SqliteType::Json,
        PgType::Bytea => SqliteType::Blob,
        PgType::Text | PgType::Other(_) => SqliteType::Text { length: None },
        PgType::Varchar(n) => SqliteType::Text { length: Some(*n) },
    };
    class.declared().unwrap_or_else(|| "TEXT".into())
}

fn column_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

fn known_action(action: &str) -> &'static str {
    match action.to_ascii_uppercase().as_str() {
        "CASCADE" => "CASCADE",
        "SET NULL" => "SET NULL",
        "SET DEFAULT" => "SET DEFAULT",
        "RESTRICT" => "RESTRICT",
        _ => "NO ACTION",
    }
}

/// Re-renders `CREATE [UNIQUE] INDEX name ON table (col [DESC], …) [WHERE expr]` for SQLite; `None` for
/// anything else (expression terms, other syntax, an untranslatable predicate).
fn sqlite_index(stmt: &str, table: &str, columns: &[&str]) -> Option<String> {
    let toks = tokenize(stmt, Dialect::Postgres).ok()?;
    let mut i = 0;
    let word = |w: &str, i: &mut usize| {
        let hit = toks.get(*i).is_some_and(|t| t.is_word(w));
        if hit {
            *i += 1;
        }
        hit
    };
    if !word("CREATE", &mut i) {
        return None;
    }
    let unique = word("UNIQUE", &mut i);
    if !word("INDEX", &mut i) {
        return None;
    }
    let name = toks.get(i)?.name()?.to_owned();
    i += 1;
    if !word("ON", &mut i) || toks.get(i)?.name()? != table {
        return None;
    }
    i += 1;
    if !toks.get(i)?.is_punct("(") {
        return None;
    }
    let close = matching_paren(&toks, i)?;
    let mut terms = Vec::new();
    for term in split_commas(&toks[i + 1..close]) {
        let (col, desc) = match term {
            [c] => (c, false),
            [c, d] if d.is_word("DESC") => (c, true),
            [c, a] if a.is_word("ASC") => (c, false),
            _ => return None,
        };
        let col = col.name()?;
        let col = columns.iter().find(|c| **c == col)?;
        terms.push(format!(
            "{}{}",
            quote_ident(col),
            if desc { " DESC" } else { "" }
        ));
    }
    if terms.is_empty() {
        return None;
    }
    let mut out = format!(
        "CREATE {}INDEX {} ON {} ({})",
        if unique { "UNIQUE " } else { "" },
        quote_ident(&name),
        quote_ident(table),
        terms.join(", ")
    );
    let rest = &toks[close + 1..];
    if let Some(first) = rest.first() {
        if !first.is_word("WHERE") || rest.len() < 2 {
            return None;
        }
        let expr = &stmt[rest[1].start..rest[rest.len() - 1].end];
        out.push_str(" WHERE ");
        out.push_str(&translate_expr(expr, columns).ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::plan::{PlanColumn, PlanForeignKey, PlanTable};
    use crate::migrate::types::Translation;

    #[test]
    fn types() {
        use crate::migrate::pg_schema::pg_type;
        assert_eq!(sqlite_type(&pg_type("bigint")), "INTEGER");
        assert_eq!(sqlite_type(&pg_type("numeric(4,2)")), "NUMERIC(4,2)");
        assert_eq!(sqlite_type(&pg_type("numeric(20,2)")), "DECIMAL_TEXT(20,2)");
        assert_eq!(sqlite_type(&pg_type("numeric")), "DECIMAL_TEXT");
        assert_eq!(sqlite_type(&PgType::Jsonb), "JSON TEXT");
        assert_eq!(sqlite_type(&pg_type("interval")), "TEXT");
    }

    fn column(name: &str, pg: PgType) -> PlanColumn {
        PlanColumn {
            name: name.into(),
            declared: pg.sql(),
            translation: Translation {
                pg,
                identity: false,
                reason: String::new(),
                warnings: Vec::new(),
                nonconforming: 0,
            },
            not_null: false,
            default: None,
            generated: None,
        }
    }

    fn sample_plan() -> Plan {
        let mut id = column("id", PgType::BigInt);
        id.translation.identity = true;
        id.not_null = true;
        let mut name = column("select", PgType::Varchar(40));
        name.not_null = true;
        name.default = Some("'x'::character varying".into());
        let mut at = column("at", PgType::Timestamptz);
        at.default = Some("now()".into());
        let mut price = column("price", PgType::Numeric(Some((10, Some(2)))));
        price.default = Some("0".into());
        let mut total = column("total", PgType::Numeric(None));
        total.generated = Some("(price * 2)".into());
        let mut bad = column("bad", PgType::Text);
        bad.default = Some("gen_random_uuid()".into());
        let owner = column("owner", PgType::BigInt);
        let mut weird = PlanTable {
            name: "we\"ird; DROP TABLE x; --".into(),
            columns: vec![id, name, at, price, total, bad, owner],
            primary_key: vec!["id".into()],
            uniques: vec![("u_name".into(), vec!["select".into()])],
            checks: vec![
                ("c_price".into(), "(price >= (0)::numeric)".into()),
                ("c_regex".into(), "(\"select\" ~ 'a'::text)".into()),
            ],
            indexes: vec![
                (
                    "i_at".into(),
                    "CREATE INDEX \"i_at\" ON \"we\"\"ird; DROP TABLE x; --\" (\"at\" DESC, \"select\") WHERE \"price\" > 0".into(),
                ),
                (
                    "i_lower".into(),
                    "CREATE INDEX \"i_lower\" ON \"we\"\"ird; DROP TABLE x; --\" ((lower(\"select\")))".into(),
                ),
            ],
            ..PlanTable::default()
        };
        weird.foreign_keys.push(PlanForeignKey {
            name: "fk_owner".into(),
            from: vec!["owner".into()],
            table: "owner".into(),
            to: vec!["a".into()],
            on_update: "CASCADE".into(),
            on_delete: "SET NULL".into(),
        });
        let mut a = column("a", PgType::Integer);
        a.not_null = true;
        let b = column("b", PgType::Bytea);
        let owner = PlanTable {
            name: "owner".into(),
            columns: vec![a, b],
            primary_key: vec!["a".into()],
            ..PlanTable::default()
        };
        Plan {
            tables: vec![weird, owner],
            ..Plan::default()
        }
    }

    #[test]
    fn sqlite_ddl_runs() {
        let ddl = sqlite_ddl(&sample_plan());
        assert_eq!(ddl.len(), 3, "{ddl:#?}");
        let create = &ddl[0];
        assert!(create.contains("\"id\" INTEGER PRIMARY KEY,"), "{create}");
        assert!(
            create.contains("\"select\" VARCHAR(40) NOT NULL DEFAULT 'x'"),
            "{create}"
        );
        assert!(
            create.contains("\"at\" TIMESTAMP DEFAULT CURRENT_TIMESTAMP"),
            "{create}"
        );
        assert!(
            create.contains("\"price\" NUMERIC(10,2) DEFAULT 0"),
            "{create}"
        );
        assert!(
            create.contains("\"total\" DECIMAL_TEXT GENERATED ALWAYS AS ((\"price\" * 2)) STORED"),
            "{create}"
        );
        assert!(
            create.contains("\"bad\" TEXT,"),
            "untranslatable default omitted: {create}"
        );
        assert!(create.contains("CONSTRAINT \"c_price\" CHECK ((\"price\" >= (0)))"));
        assert!(!create.contains("c_regex"));
        assert!(create.contains(
            "CONSTRAINT \"fk_owner\" FOREIGN KEY (\"owner\") REFERENCES \"owner\" (\"a\") ON UPDATE CASCADE ON DELETE SET NULL"
        ));
        assert!(
            ddl[1].contains("\"a\" INTEGER NOT NULL") && ddl[1].contains("PRIMARY KEY (\"a\")")
        );
        assert_eq!(
            ddl[2],
            "CREATE INDEX \"i_at\" ON \"we\"\"ird; DROP TABLE x; --\" (\"at\" DESC, \"select\") WHERE \"price\" > 0"
        );

        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for stmt in &ddl {
            conn.execute_batch(stmt)
                .unwrap_or_else(|e| panic!("{stmt}\nfailed: {e}"));
        }
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            tables, 2,
            "the hostile name created one table, dropped none"
        );
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        conn.execute("INSERT INTO owner (a) VALUES (7)", [])
            .unwrap();
        conn.execute(
            "INSERT INTO \"we\"\"ird; DROP TABLE x; --\" (\"select\", price, owner) VALUES ('n', 2.5, 7)",
            [],
        )
        .unwrap();
        // An unbounded numeric is DECIMAL_TEXT in SQLite: text, computed values too.
        let (id, total, at): (i64, String, String) = conn
            .query_row(
                "SELECT id, total, at FROM \"we\"\"ird; DROP TABLE x; --\"",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((id, total.as_str(), at.len()), (1, "5.0", 19));
        assert!(
            conn.execute(
                "INSERT INTO \"we\"\"ird; DROP TABLE x; --\" (\"select\", price) VALUES ('m', -1)",
                []
            )
            .is_err(),
            "the CHECK holds"
        );
        assert!(
            conn.execute(
                "INSERT INTO \"we\"\"ird; DROP TABLE x; --\" (\"select\", owner) VALUES ('o', 8)",
                []
            )
            .is_err(),
            "the foreign key holds"
        );
        conn.execute("DELETE FROM owner", []).unwrap();
        let owner: Option<i64> = conn
            .query_row(
                "SELECT owner FROM \"we\"\"ird; DROP TABLE x; --\"",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(owner, None, "ON DELETE SET NULL");
    }

    #[test]
    fn sqlite_ddl_of_sqlite_plans_runs() {
        use super::super::introspect::tests::{corpus, fixture};
        use super::super::types::CastRules;
        let mut conns = vec![("fixture", fixture())];
        for file in [
            "sqlite-chinook/Chinook_Sqlite.sqlite",
            "sqlite-northwind/northwind.db",
            "sqlite-sakila/sakila.db",
        ] {
            conns.push((file, corpus(file)));
        }
        for (label, source) in conns {
            let plan = Plan::build(&source, label, &CastRules::default()).unwrap();
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            let ddl = sqlite_ddl(&plan);
            for stmt in &ddl {
                conn.execute_batch(stmt)
                    .unwrap_or_else(|e| panic!("{label}: {stmt}\nfailed: {e}"));
            }
            let tables: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tables as usize, plan.tables.len(), "{label}");
            let fks: i64 = conn
                .query_row(
                    "SELECT count(DISTINCT t.name || '.' || f.id) FROM sqlite_schema t, pragma_foreign_key_list(t.name) f WHERE t.type = 'table'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                fks as usize,
                plan.tables
                    .iter()
                    .map(|t| t.foreign_keys.len())
                    .sum::<usize>(),
                "{label}"
            );
        }
    }
}
