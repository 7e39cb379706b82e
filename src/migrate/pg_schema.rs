//! The way back (PostgreSQL → SQLite): reads a PostgreSQL schema from `pg_catalog` into the same
//! [`Plan`] the SQLite side produces (column types as [`PgType`], keys, UNIQUE, CHECK, foreign keys,
//! indexes), and writes SQLite DDL for a plan ([`sqlite_ddl`]).
//!
//! Only what SQLite can hold is carried: CHECK and partial-index expressions lose PostgreSQL's `::type`
//! casts and are dropped (and listed) when anything else PostgreSQL-only remains; expression indexes,
//! non-btree indexes, views and triggers are listed in `untranslated` with the reason. Every catalog query
//! binds its parameters.

use postgres::Client;

use super::plan::{Plan, PlanColumn, PlanForeignKey, PlanTable, Untranslated};
use super::types::{PgType, Translation};
use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};

fn catalog_error(label: &str, e: &postgres::Error) -> Error {
    crate::db::postgres::pg_error(Stage::Source, &format!("{label}: reading the schema"), e)
}

/// Reads every ordinary table of `schema` (usually `public`).
pub fn read_plan(client: &mut Client, schema: &str, label: &str) -> Result<Plan> {
    let fail = |e: postgres::Error| catalog_error(label, &e);
    let mut plan = Plan::default();
    let tables = client
        .query(
            "SELECT c.oid, c.relname::text, greatest(c.reltuples, 0)::bigint FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname",
            &[&schema],
        )
        .map_err(fail)?;
    for row in &tables {
        let oid: u32 = row.get(0);
        let name: String = row.get(1);
        let mut table = PlanTable {
            name: name.clone(),
            rows: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            ..PlanTable::default()
        };
        read_columns(client, oid, &mut table, &mut plan.untranslated).map_err(fail)?;
        read_constraints(client, oid, &mut table, &mut plan.untranslated).map_err(fail)?;
        read_indexes(client, oid, &mut table, &mut plan.untranslated).map_err(fail)?;
        plan.tables.push(table);
    }
    for row in client
        .query(
            "SELECT viewname::text FROM pg_views WHERE schemaname = $1 ORDER BY viewname",
            &[&schema],
        )
        .map_err(fail)?
    {
        plan.untranslated.push(Untranslated {
            kind: "view",
            name: row.get(0),
            reason: "view SQL is PostgreSQL dialect; recreate it by hand".into(),
        });
    }
    for row in client
        .query(
            "SELECT t.tgname::text, c.relname::text FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY t.tgname",
            &[&schema],
        )
        .map_err(fail)?
    {
        plan.untranslated.push(Untranslated {
            kind: "trigger",
            name: row.get(0),
            reason: format!(
                "SQLite triggers cannot call PostgreSQL functions (on {})",
                row.get::<_, String>(1)
            ),
        });
    }
    Ok(plan)
}

fn read_columns(
    client: &mut Client,
    oid: u32,
    table: &mut PlanTable,
    untranslated: &mut Vec<Untranslated>,
) -> std::result::Result<(), postgres::Error> {
    let rows = client.query(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        &[&oid],
    )?;
    for row in rows {
        let name: String = row.get(0);
        let declared: String = row.get(1);
        let expr: Option<String> = row.get(3);
        let identity = !row.get::<_, String>(4).is_empty()
            || expr.as_deref().is_some_and(|e| e.starts_with("nextval("));
        let generated_stored = row.get::<_, String>(5) == "s";
        let pg = match declared.as_str() {
            "json" => PgType::Jsonb,
            other => PgType::parse(other).unwrap_or_else(|_| PgType::Other(other.to_owned())),
        };
        let what = format!("{}.{name}", table.name);
        let (default, generated) = match (&expr, generated_stored) {
            (Some(e), true) => match sqlite_expression(e) {
                Some(x) => (None, Some(x)),
                None => {
                    untranslated.push(Untranslated {
                        kind: "generated column",
                        name: what.clone(),
                        reason: format!("expression {e} is PostgreSQL-only; its values are copied"),
                    });
                    (None, None)
                }
            },
            (Some(e), false) if identity => {
                let _ = e;
                (None, None)
            }
            (Some(e), false) => match sqlite_default(e) {
                Some(d) => (Some(d), None),
                None => {
                    untranslated.push(Untranslated {
                        kind: "default",
                        name: what.clone(),
                        reason: format!("DEFAULT {e} has no SQLite spelling"),
                    });
                    (None, None)
                }
            },
            (None, _) => (None, None),
        };
        table.columns.push(PlanColumn {
            name,
            declared: declared.clone(),
            translation: Translation {
                pg,
                identity,
                reason: format!("PostgreSQL {declared}"),
                warnings: Vec::new(),
                nonconforming: 0,
            },
            not_null: row.get(2),
            default,
            generated,
        });
    }
    Ok(())
}

fn action(code: &str) -> String {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
    .into()
}

fn read_constraints(
    client: &mut Client,
    oid: u32,
    table: &mut PlanTable,
    untranslated: &mut Vec<Untranslated>,
) -> std::result::Result<(), postgres::Error> {
    let rows = client.query(
        "SELECT con.conname::text, con.contype::text, \
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o), \
           coalesce(fc.relname::text, ''), \
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o) \
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o), \
           con.confupdtype::text, con.confdeltype::text, pg_get_constraintdef(con.oid) \
         FROM pg_constraint con LEFT JOIN pg_class fc ON fc.oid = con.confrelid \
         WHERE con.conrelid = $1 ORDER BY con.conname",
        &[&oid],
    )?;
    for row in rows {
        let name: String = row.get(0);
        let columns: Vec<String> = row.get(2);
        match row.get::<_, String>(1).as_str() {
            "p" => table.primary_key = columns,
            "u" => table.uniques.push((name, columns)),
            "f" => table.foreign_keys.push(PlanForeignKey {
                name,
                from: columns,
                table: row.get(3),
                to: row.get(4),
                on_update: action(&row.get::<_, String>(5)),
                on_delete: action(&row.get::<_, String>(6)),
            }),
            "c" => {
                let def: String = row.get(7);
                let body = def
                    .trim_end_matches(" NOT VALID")
                    .strip_prefix("CHECK ")
                    .unwrap_or(&def);
                match sqlite_expression(body) {
                    Some(expr) => table.checks.push((name, expr)),
                    None => untranslated.push(Untranslated {
                        kind: "check",
                        name: format!("{}.{name}", table.name),
                        reason: format!("{def} is PostgreSQL-only"),
                    }),
                }
            }
            other => untranslated.push(Untranslated {
                kind: "constraint",
                name: format!("{}.{name}", table.name),
                reason: format!("constraint type {other:?} has no SQLite equivalent"),
            }),
        }
    }
    Ok(())
}

fn read_indexes(
    client: &mut Client,
    oid: u32,
    table: &mut PlanTable,
    untranslated: &mut Vec<Untranslated>,
) -> std::result::Result<(), postgres::Error> {
    let rows = client.query(
        "SELECT i.relname::text, ix.indisunique, ix.indexprs IS NOT NULL, am.amname::text, \
                pg_get_expr(ix.indpred, ix.indrelid), \
                ARRAY(SELECT a.attname::text FROM unnest(ix.indkey::int2[]) WITH ORDINALITY k(n, o) \
                      JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.n ORDER BY k.o), \
                ARRAY(SELECT (o.opt & 1) = 1 FROM unnest(ix.indoption::int2[]) WITH ORDINALITY o(opt, n) ORDER BY o.n) \
         FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_am am ON am.oid = i.relam \
         WHERE ix.indrelid = $1 AND NOT EXISTS \
           (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid AND c.contype IN ('p', 'u', 'x')) \
         ORDER BY i.relname",
        &[&oid],
    )?;
    for row in rows {
        let name: String = row.get(0);
        let skip = |reason: String, untranslated: &mut Vec<Untranslated>| {
            untranslated.push(Untranslated {
                kind: "index",
                name: format!("{}.{name}", table.name),
                reason,
            });
        };
        if row.get::<_, bool>(2) {
            skip("expression index".into(), untranslated);
            continue;
        }
        let method: String = row.get(3);
        if method != "btree" {
            skip(format!("{method} index"), untranslated);
            continue;
        }
        let predicate = match row.get::<_, Option<String>>(4) {
            Some(p) => match sqlite_expression(&p) {
                Some(p) => Some(p),
                None => {
                    skip(
                        format!("partial index WHERE {p} is PostgreSQL-only"),
                        untranslated,
                    );
                    continue;
                }
            },
            None => None,
        };
        let columns: Vec<String> = row.get(5);
        let desc: Vec<bool> = row.get(6);
        let terms: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let order = if desc.get(i).copied().unwrap_or(false) {
                    " DESC"
                } else {
                    ""
                };
                format!("{}{order}", quote_ident(c))
            })
            .collect();
        let unique = if row.get::<_, bool>(1) { "UNIQUE " } else { "" };
        let mut statement = format!(
            "CREATE {unique}INDEX {} ON {} ({})",
            quote_ident(&name),
            quote_ident(&table.name),
            terms.join(", ")
        );
        if let Some(p) = predicate {
            statement.push_str(&format!(" WHERE {p}"));
        }
        table.indexes.push((name, statement));
    }
    Ok(())
}

/// A PostgreSQL expression as SQLite can run it: `::type` casts removed; `None` when something
/// PostgreSQL-only remains (`::`, regex operators, `ANY (ARRAY …)`, `E'…'` strings).
fn sqlite_expression(expr: &str) -> Option<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find("::") {
        out.push_str(&rest[..at]);
        rest = &rest[at + 2..];
        rest = &rest[cast_len(rest)..];
    }
    out.push_str(rest);
    let pg_only = ["::", " ~ ", " ~* ", "!~", "ANY (ARRAY", "ALL (ARRAY", "E'"];
    if pg_only.iter().any(|p| out.contains(p)) {
        return None;
    }
    Some(out)
}

/// The length of the type name a `::` cast is followed by: a word, PostgreSQL's multi-word names
/// (`double precision`, `character varying`, `timestamp with time zone`), `(p,s)` and `[]`.
fn cast_len(rest: &str) -> usize {
    let mut end = rest
        .bytes()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
        .count();
    for more in [
        " precision",
        " varying",
        " with time zone",
        " without time zone",
    ] {
        if rest[end..].starts_with(more) {
            end += more.len();
        }
    }
    if rest[end..].starts_with('(') {
        if let Some(close) = rest[end..].find(')') {
            end += close + 1;
        }
    }
    if rest[end..].starts_with("[]") {
        end += 2;
    }
    end
}

/// A column DEFAULT for SQLite: literals, `CURRENT_TIMESTAMP`/`now()`, `CURRENT_DATE`; `None` otherwise.
fn sqlite_default(expr: &str) -> Option<String> {
    let e = expr.trim();
    let lower = e.to_ascii_lowercase();
    match lower.as_str() {
        "now()"
        | "current_timestamp"
        | "statement_timestamp()"
        | "transaction_timestamp()"
        | "localtimestamp" => return Some("CURRENT_TIMESTAMP".into()),
        "current_date" => return Some("CURRENT_DATE".into()),
        "true" => return Some("1".into()),
        "false" => return Some("0".into()),
        "null" => return Some("NULL".into()),
        _ => {}
    }
    let stripped = sqlite_expression(e)?;
    let inner = stripped
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .trim();
    let is_number = inner.parse::<f64>().is_ok();
    let is_string = inner.len() >= 2
        && inner.starts_with('\'')
        && inner.ends_with('\'')
        && !inner[1..inner.len() - 1].replace("''", "").contains('\'');
    (is_number || is_string).then(|| inner.to_owned())
}

/// The SQLite type name for a PostgreSQL type.
fn sqlite_type(pg: &PgType) -> String {
    match pg {
        PgType::BigInt => "BIGINT".into(),
        PgType::Integer => "INTEGER".into(),
        PgType::SmallInt => "SMALLINT".into(),
        PgType::Double => "DOUBLE PRECISION".into(),
        PgType::Real => "REAL".into(),
        PgType::Numeric(None) => "NUMERIC".into(),
        PgType::Numeric(Some((p, None))) => format!("NUMERIC({p})"),
        PgType::Numeric(Some((p, Some(s)))) => format!("NUMERIC({p},{s})"),
        PgType::Boolean => "BOOLEAN".into(),
        PgType::Date => "DATE".into(),
        PgType::Timestamptz => "TIMESTAMP".into(),
        PgType::Timestamp => "DATETIME".into(),
        PgType::Jsonb => "JSON".into(),
        PgType::Bytea => "BLOB".into(),
        PgType::Text | PgType::Other(_) => "TEXT".into(),
        PgType::Varchar(n) => format!("VARCHAR({n})"),
    }
}

/// SQLite statements creating every table of a plan read by [`read_plan`]: columns, NOT NULL, DEFAULT,
/// keys (a single integer primary key becomes `INTEGER PRIMARY KEY`, SQLite's rowid), UNIQUE, CHECK and
/// foreign keys inside `CREATE TABLE` (SQLite cannot add them later), then the indexes.
pub fn sqlite_ddl(plan: &Plan) -> Vec<String> {
    let mut tables = Vec::new();
    let mut indexes = Vec::new();
    for t in &plan.tables {
        let rowid_key = match t.primary_key.as_slice() {
            [key] => t
                .columns
                .iter()
                .find(|c| &c.name == key)
                .filter(|c| c.translation.pg.is_integer())
                .map(|c| c.name.clone()),
            _ => None,
        };
        let mut lines = Vec::new();
        for c in &t.columns {
            let mut line = if rowid_key.as_deref() == Some(c.name.as_str()) {
                format!("{} INTEGER PRIMARY KEY", quote_ident(&c.name))
            } else {
                format!(
                    "{} {}",
                    quote_ident(&c.name),
                    sqlite_type(&c.translation.pg)
                )
            };
            if let Some(g) = &c.generated {
                line.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
            }
            if c.not_null {
                line.push_str(" NOT NULL");
            }
            if let Some(d) = c.default.as_deref().and_then(sqlite_default) {
                line.push_str(&format!(" DEFAULT {d}"));
            }
            lines.push(line);
        }
        if rowid_key.is_none() && !t.primary_key.is_empty() {
            lines.push(format!("PRIMARY KEY ({})", idents(&t.primary_key)));
        }
        for (name, cols) in &t.uniques {
            lines.push(format!(
                "CONSTRAINT {} UNIQUE ({})",
                quote_ident(name),
                idents(cols)
            ));
        }
        for (name, expr) in &t.checks {
            lines.push(format!("CONSTRAINT {} CHECK ({expr})", quote_ident(name)));
        }
        for fk in &t.foreign_keys {
            lines.push(format!(
                "CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}) ON UPDATE {} ON DELETE {}",
                quote_ident(&fk.name),
                idents(&fk.from),
                quote_ident(&fk.table),
                idents(&fk.to),
                fk.on_update,
                fk.on_delete
            ));
        }
        tables.push(format!(
            "CREATE TABLE {} (\n  {}\n)",
            quote_ident(&t.name),
            lines.join(",\n  ")
        ));
        indexes.extend(t.indexes.iter().map(|(_, s)| s.clone()));
    }
    tables.extend(indexes);
    tables
}

fn idents(names: &[String]) -> String {
    names
        .iter()
        .map(|n| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_are_dropped_and_postgres_only_expressions_refused() {
        assert_eq!(
            sqlite_expression("((score >= (0)::double precision))").as_deref(),
            Some("((score >= (0)))")
        );
        assert_eq!(
            sqlite_expression("((rating)::text = 'G'::character varying(5))").as_deref(),
            Some("((rating) = 'G')")
        );
        assert_eq!(sqlite_expression("(email ~ '@'::text)"), None);
        assert_eq!(
            sqlite_expression("(status = ANY (ARRAY['a'::text, 'b'::text]))"),
            None
        );
    }

    #[test]
    fn defaults_have_a_sqlite_spelling_or_none() {
        assert_eq!(
            sqlite_default("now()").as_deref(),
            Some("CURRENT_TIMESTAMP")
        );
        assert_eq!(sqlite_default("'G'::text").as_deref(), Some("'G'"));
        assert_eq!(
            sqlite_default("'it''s'::character varying").as_deref(),
            Some("'it''s'")
        );
        assert_eq!(sqlite_default("4.99").as_deref(), Some("4.99"));
        assert_eq!(sqlite_default("'-1'::integer").as_deref(), Some("'-1'"));
        assert_eq!(sqlite_default("(-1)").as_deref(), Some("-1"));
        assert_eq!(sqlite_default("false").as_deref(), Some("0"));
        assert_eq!(sqlite_default("gen_random_uuid()"), None);
        assert_eq!(sqlite_default("nextval('t_id_seq'::regclass)"), None);
    }

    #[test]
    fn sqlite_ddl_runs_in_sqlite() {
        let column = |name: &str, pg: PgType, not_null: bool, default: Option<&str>| PlanColumn {
            name: name.into(),
            declared: String::new(),
            translation: Translation {
                pg,
                identity: false,
                reason: String::new(),
                warnings: Vec::new(),
                nonconforming: 0,
            },
            not_null,
            default: default.map(str::to_owned),
            generated: None,
        };
        let parent = PlanTable {
            name: "we\"ird; DROP TABLE x; --".into(),
            columns: vec![
                column("id", PgType::BigInt, true, None),
                column("select", PgType::Varchar(5), false, Some("'G'::text")),
            ],
            primary_key: vec!["id".into()],
            uniques: vec![("u_select".into(), vec!["select".into()])],
            checks: vec![("c_len".into(), "(length(\"select\") > 0)".into())],
            indexes: vec![(
                "i_sel".into(),
                "CREATE INDEX \"i_sel\" ON \"we\"\"ird; DROP TABLE x; --\" (\"select\" DESC)"
                    .into(),
            )],
            ..PlanTable::default()
        };
        let child = PlanTable {
            name: "child".into(),
            columns: vec![
                column("a", PgType::Integer, true, None),
                column("b", PgType::Text, true, None),
                column("p", PgType::BigInt, false, None),
                column("at", PgType::Timestamptz, false, Some("now()")),
            ],
            primary_key: vec!["a".into(), "b".into()],
            foreign_keys: vec![PlanForeignKey {
                name: "fk_p".into(),
                from: vec!["p".into()],
                table: parent.name.clone(),
                to: vec!["id".into()],
                on_update: "NO ACTION".into(),
                on_delete: "SET NULL".into(),
            }],
            ..PlanTable::default()
        };
        let plan = Plan {
            tables: vec![parent, child],
            ..Plan::default()
        };
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for s in sqlite_ddl(&plan) {
            conn.execute_batch(&s)
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        conn.execute_batch(
            "PRAGMA foreign_keys = ON; INSERT INTO \"we\"\"ird; DROP TABLE x; --\" (id) VALUES (7);
             INSERT INTO child (a, b, p) VALUES (1, 'x', 7);",
        )
        .unwrap();
        let (select, at): (String, Option<String>) = conn
            .query_row(
                "SELECT \"select\", (SELECT at FROM child) FROM \"we\"\"ird; DROP TABLE x; --\"",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(select, "G");
        assert!(at.is_some());
        assert!(conn
            .execute_batch("INSERT INTO child (a, b, p) VALUES (2, 'y', 99)")
            .is_err());
        let pk: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('child') WHERE pk > 0",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pk, 2);
    }
}
