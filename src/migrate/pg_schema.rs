//! The schema half of the reverse migration, PostgreSQL → SQLite (the emergency fallback of `ferry migrate`):
//! [`read_plan`] reads one PostgreSQL schema through `pg_catalog` into the same [`Plan`] the forward
//! direction builds, with defaults, CHECKs, generated columns and partial-index predicates already in
//! SQLite dialect (translated by [`sql::postgres`](super::sql::postgres)); [`sqlite_ddl`](super::sqlite_ddl)
//! writes the SQLite statements that create a plan's tables, from either direction. The data copy is not
//! here.
//!
//! What [`read_plan`] carries over, and what it lists in [`Plan::untranslated`] instead:
//!
//! | PostgreSQL                                   | in the plan                                  | listed as untranslated |
//! |----------------------------------------------|----------------------------------------------|------------------------|
//! | ordinary and partitioned tables (`relkind` `r`, `p`) | tables in foreign-key order; partitions are not tables of their own (their rows are read through the parent) | |
//! | column types                                 | `format_type(…)` in `declared`; [`PgType`] when ferry models the type, else [`PgType::Other`] (written as `TEXT` in SQLite) | |
//! | identity columns, `serial` (`nextval` default) | `identity`; the sequence's next value in `sequence` | |
//! | DEFAULT `now()`/`CURRENT_TIMESTAMP`/`CURRENT_DATE`/`CURRENT_TIME`, numbers, booleans, `'x'::type` | the SQLite spelling (`CURRENT_TIMESTAMP`, `-1`, `1`/`0`, `'x'`; `'\x…'::bytea` → `X'…'`) | any other default (`kind` `default`) |
//! | `GENERATED ALWAYS AS (…) STORED`             | the expression, when it has no `::` cast and only the operators and functions below | the others (`generated column`; the column is created plain) |
//! | PRIMARY KEY, UNIQUE, FOREIGN KEY (all actions) | as such                                    | keys to tables outside the schema (`foreign key`) |
//! | CHECK                                        | the expression, simple casts stripped        | regular expressions, arrays, other casts, unknown functions (`check`); `NOT VALID` checks |
//! | btree indexes on columns, partial ones too   | `CREATE [UNIQUE] INDEX` in SQLite dialect (INCLUDE columns, operator classes and NULLS FIRST/LAST are dropped) | expression indexes, other access methods (`index`) |
//! | exclusion constraints                        |                                              | `constraint` |
//! | views, materialized views, foreign tables, triggers |                                       | `view`, `materialized view`, `foreign table`, `trigger` |
//!
//! Expressions (CHECKs, generated columns, index predicates) are re-rendered, not copied, by the rules of
//! [`sql::postgres`](super::sql::postgres); what does not translate is listed with the reason.

use postgres::Client;

use super::plan::{Plan, PlanColumn, PlanForeignKey, PlanTable, Untranslated};
use super::sql::postgres::{check_body, is_nextval, translate_default, translate_expr};
use super::types::{PgType, Translation};
use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};

fn pg_error(label: &str, what: &str, e: &postgres::Error) -> Error {
    crate::db::postgres::pg_error(Stage::Source, &format!("postgres {label}: {what}"), e)
}

const TABLES: &str = "SELECT c.oid, c.relname::text, c.reltuples::float8 \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
     ORDER BY c.relname";

const COLUMNS: &str =
    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
     a.attidentity::text, a.attgenerated::text, pg_get_expr(d.adbin, d.adrelid), a.attnum \
     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const CONSTRAINTS: &str = "SELECT con.conname::text, con.contype::text, \
     ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n) \
           JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.n), \
     rc.relname::text, rn.nspname::text, \
     ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n) \
           JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.n), \
     con.confupdtype::text, con.confdeltype::text, pg_get_constraintdef(con.oid), con.convalidated \
     FROM pg_constraint con \
     LEFT JOIN pg_class rc ON rc.oid = con.confrelid \
     LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
     WHERE con.conrelid = $1 ORDER BY con.conname";

const INDEXES: &str = "SELECT ic.relname::text, i.indisunique, am.amname::text, \
     pg_get_expr(i.indpred, i.indrelid), \
     ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
           LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
           WHERE k.n <= i.indnkeyatts ORDER BY k.n), \
     i.indoption::int2[] \
     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
     WHERE i.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
           WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) \
     ORDER BY ic.relname";

const OWNED_SEQUENCE: &str = "SELECT sn.nspname::text, sc.relname::text FROM pg_depend d \
     JOIN pg_class sc ON sc.oid = d.objid JOIN pg_namespace sn ON sn.oid = sc.relnamespace \
     WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
     AND d.refobjid = $1 AND d.refobjsubid = $2 AND sc.relkind = 'S' AND d.deptype IN ('a', 'i')";

const VIEWS: &str = "SELECT viewname::text FROM pg_views WHERE schemaname = $1 ORDER BY viewname";

const OTHER_RELATIONS: &str = "SELECT c.relname::text, c.relkind::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relkind IN ('m', 'f') ORDER BY c.relname";

const TRIGGERS: &str = "SELECT c.relname::text, t.tgname::text \
     FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND NOT t.tgisinternal ORDER BY c.relname, t.tgname";

/// Reads every ordinary table of the PostgreSQL schema `schema` (usually `public`) into a [`Plan`]:
/// tables in foreign-key order (cycles in [`Plan::cycles`]), defaults, CHECKs, generated columns and
/// indexes in SQLite dialect, and everything that does not carry over in [`Plan::untranslated`] with
/// its reason (see the [module documentation](self)). `label` names the database in errors; it must not
/// hold a password. Every value reaches the server as a bound parameter; the one name spliced into SQL,
/// an identity column's sequence (read for its position, which no catalog view gives when `setval(…,
/// false)` set it), is quoted.
pub fn read_plan(client: &mut Client, schema: &str, label: &str) -> Result<Plan> {
    let mut plan = Plan::default();
    let rows = client
        .query(TABLES, &[&schema])
        .map_err(|e| pg_error(label, "cannot list tables", &e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: u32 = row.get(0);
        let name: String = row.get(1);
        let estimate: f64 = row.get(2);
        let table = read_table(
            client,
            label,
            schema,
            oid,
            name,
            estimate,
            &mut plan.untranslated,
        )?;
        tables.push(table);
    }
    let (tables, cycles) = dependency_order(tables);
    plan.tables = tables;
    plan.cycles = cycles;

    let rows = client
        .query(VIEWS, &[&schema])
        .map_err(|e| pg_error(label, "cannot list views", &e))?;
    for row in rows {
        plan.untranslated.push(Untranslated {
            kind: "view",
            name: row.get(0),
            reason: "view SQL is PostgreSQL dialect; recreate it by hand".into(),
        });
    }
    let rows = client
        .query(OTHER_RELATIONS, &[&schema])
        .map_err(|e| pg_error(label, "cannot list relations", &e))?;
    for row in rows {
        let kind: String = row.get(1);
        let (kind, reason) = if kind == "m" {
            (
                "materialized view",
                "its query is PostgreSQL dialect; recreate it as a table or view by hand",
            )
        } else {
            ("foreign table", "its data lives on another server")
        };
        plan.untranslated.push(Untranslated {
            kind,
            name: row.get(0),
            reason: reason.into(),
        });
    }
    let rows = client
        .query(TRIGGERS, &[&schema])
        .map_err(|e| pg_error(label, "cannot list triggers", &e))?;
    for row in rows {
        let table: String = row.get(0);
        let name: String = row.get(1);
        plan.untranslated.push(Untranslated {
            kind: "trigger",
            name: format!("{table}.{name}"),
            reason: "PostgreSQL triggers run plpgsql functions; SQLite triggers are written in SQL"
                .into(),
        });
    }
    Ok(plan)
}

fn read_table(
    client: &mut Client,
    label: &str,
    schema: &str,
    oid: u32,
    name: String,
    estimate: f64,
    untranslated: &mut Vec<Untranslated>,
) -> Result<PlanTable> {
    let mut skip = |kind: &'static str, what: &str, reason: String| {
        untranslated.push(Untranslated {
            kind,
            name: format!("{name}.{what}"),
            reason,
        });
    };
    let mut table = PlanTable {
        // reltuples is -1 for a table never analyzed.
        rows: if estimate > 0.0 { estimate as u64 } else { 0 },
        ..PlanTable::default()
    };
    let rows = client
        .query(COLUMNS, &[&oid])
        .map_err(|e| pg_error(label, &format!("cannot read the columns of {name}"), &e))?;
    let column_names: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let names: Vec<&str> = column_names.iter().map(String::as_str).collect();
    let mut identities = Vec::new();
    for row in &rows {
        let column: String = row.get(0);
        let declared: String = row.get(1);
        let not_null: bool = row.get(2);
        let identity_kind: String = row.get(3);
        let generated_kind: String = row.get(4);
        let expr: Option<String> = row.get(5);
        let attnum: i16 = row.get(6);
        let serial = generated_kind.is_empty() && expr.as_deref().is_some_and(is_nextval);
        let identity = !identity_kind.is_empty() || serial;
        let pg = pg_type(&declared);
        let reason = match (&pg, identity_kind.as_str(), serial) {
            (_, "a", _) => "identity column (GENERATED ALWAYS)".to_owned(),
            (_, "d", _) => "identity column (GENERATED BY DEFAULT)".to_owned(),
            (_, _, true) => "serial column (nextval default)".to_owned(),
            (PgType::Other(_), _, _) => {
                format!("PostgreSQL {declared}, not modelled: kept as text")
            }
            _ => format!("PostgreSQL {declared}"),
        };
        let mut generated = None;
        let mut default = None;
        match (generated_kind.is_empty(), expr) {
            (false, Some(e)) => {
                let result = if e.contains("::") {
                    Err("it has a PostgreSQL cast (::)".to_owned())
                } else {
                    translate_expr(&e, &names)
                };
                match result {
                    Ok(g) => generated = Some(g),
                    Err(why) => skip(
                        "generated column",
                        &column,
                        format!("{e}: {why}; created as a plain column holding the copied values"),
                    ),
                }
            }
            (true, Some(e)) if !serial => match translate_default(&e) {
                Ok(d) => default = d,
                Err(why) => skip("default", &column, format!("{e}: {why}")),
            },
            _ => {}
        }
        if identity {
            identities.push((column.clone(), attnum));
        }
        table.columns.push(PlanColumn {
            name: column,
            declared,
            translation: Translation {
                pg,
                identity,
                reason,
                warnings: Vec::new(),
                nonconforming: 0,
            },
            not_null,
            default,
            generated,
        });
    }

    let rows = client
        .query(CONSTRAINTS, &[&oid])
        .map_err(|e| pg_error(label, &format!("cannot read the constraints of {name}"), &e))?;
    for row in rows {
        let con: String = row.get(0);
        let kind: String = row.get(1);
        let columns: Vec<String> = row.get(2);
        match kind.as_str() {
            "p" => table.primary_key = columns,
            "u" => table.uniques.push((con, columns)),
            "c" => {
                let def: String = row.get(8);
                let validated: bool = row.get(9);
                if !validated {
                    skip(
                        "check",
                        &con,
                        format!("{def}: NOT VALID in PostgreSQL, so existing rows may break it"),
                    );
                    continue;
                }
                match check_body(&def).and_then(|body| translate_expr(body, &names)) {
                    Ok(expr) => table.checks.push((con, expr)),
                    Err(why) => skip("check", &con, format!("{def}: {why}")),
                }
            }
            "f" => {
                let target: Option<String> = row.get(3);
                let target_schema: Option<String> = row.get(4);
                let to: Vec<String> = row.get(5);
                let (Some(target), Some(target_schema)) = (target, target_schema) else {
                    skip(
                        "foreign key",
                        &con,
                        "its referenced table is not visible".into(),
                    );
                    continue;
                };
                if target_schema != schema {
                    skip(
                        "foreign key",
                        &con,
                        format!("references {target_schema}.{target}, outside the migrated schema"),
                    );
                    continue;
                }
                let on_update: String = row.get(6);
                let on_delete: String = row.get(7);
                table.foreign_keys.push(PlanForeignKey {
                    name: con,
                    from: columns,
                    table: target,
                    to,
                    on_update: fk_action(&on_update).into(),
                    on_delete: fk_action(&on_delete).into(),
                });
            }
            "x" => {
                let def: String = row.get(8);
                skip(
                    "constraint",
                    &con,
                    format!("{def}: SQLite has no exclusion constraints"),
                );
            }
            // Constraint triggers are listed with the triggers; NOT NULL is a column property.
            _ => {}
        }
    }

    let rows = client
        .query(INDEXES, &[&oid])
        .map_err(|e| pg_error(label, &format!("cannot read the indexes of {name}"), &e))?;
    for row in rows {
        let index: String = row.get(0);
        let unique: bool = row.get(1);
        let method: String = row.get(2);
        let predicate: Option<String> = row.get(3);
        let keys: Vec<Option<String>> = row.get(4);
        let options: Vec<i16> = row.get(5);
        if method != "btree" {
            skip(
                "index",
                &index,
                format!("a {method} index; SQLite has only b-trees"),
            );
            continue;
        }
        let mut terms = Vec::with_capacity(keys.len());
        for (n, key) in keys.iter().enumerate() {
            let Some(key) = key else { break };
            // indoption bit 0: DESC.
            let desc = options.get(n).is_some_and(|o| o & 1 == 1);
            terms.push(format!(
                "{}{}",
                quote_ident(key),
                if desc { " DESC" } else { "" }
            ));
        }
        if terms.len() != keys.len() || terms.is_empty() {
            skip(
                "index",
                &index,
                "an expression index; recreate it by hand".into(),
            );
            continue;
        }
        let mut stmt = format!(
            "CREATE {}INDEX {} ON {} ({})",
            if unique { "UNIQUE " } else { "" },
            quote_ident(&index),
            quote_ident(&name),
            terms.join(", ")
        );
        if let Some(p) = predicate {
            match translate_expr(&p, &names) {
                Ok(w) => {
                    stmt.push_str(" WHERE ");
                    stmt.push_str(&w);
                }
                Err(why) => {
                    skip("index", &index, format!("WHERE {p}: {why}"));
                    continue;
                }
            }
        }
        table.indexes.push((index, stmt));
    }

    if let Some((column, attnum)) = identities.first() {
        let next = next_value(client, oid, *attnum);
        table.sequence = next.map(|n| (column.clone(), n));
    }
    table.name = name;
    Ok(table)
}

/// The next value of the sequence owned by column `attnum` of table `oid`, when it can be read.
fn next_value(client: &mut Client, oid: u32, attnum: i16) -> Option<i64> {
    let row = client
        .query_opt(OWNED_SEQUENCE, &[&oid, &i32::from(attnum)])
        .ok()??;
    let (schema, sequence): (String, String) = (row.get(0), row.get(1));
    // A relation name cannot be a bound parameter: it is quoted instead.
    let sql = format!(
        "SELECT last_value, is_called FROM {}.{}",
        quote_ident(&schema),
        quote_ident(&sequence)
    );
    let row = client.query_one(&sql, &[]).ok()?;
    let (last, called): (i64, bool) = (row.get(0), row.get(1));
    Some(if called { last.saturating_add(1) } else { last })
}

/// The [`PgType`] of a `format_type` name: a modelled variant, else [`PgType::Other`] with the name as given.
pub(crate) fn pg_type(declared: &str) -> PgType {
    let parsed = PgType::parse(declared)
        .ok()
        .filter(|t| !matches!(t, PgType::Other(_)));
    if let Some(t) = parsed {
        return t;
    }
    // Fractional-second precision (`timestamp(3) with time zone`) does not change what a timestamp holds.
    if let Some((digits, tail)) = declared
        .strip_prefix("timestamp(")
        .and_then(|rest| rest.split_once(')'))
    {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            match tail.trim() {
                "" | "without time zone" => return PgType::Timestamp,
                "with time zone" => return PgType::Timestamptz,
                _ => {}
            }
        }
    }
    PgType::Other(declared.to_owned())
}

fn fk_action(code: &str) -> &'static str {
    match code {
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

/// Tables in creation order (referenced tables first, ties in name order) and the cycles met: the same
/// ordering as a SQLite schema's, over plan tables.
fn dependency_order(tables: Vec<PlanTable>) -> (Vec<PlanTable>, Vec<Vec<String>>) {
    let (order, cycles) = {
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        let references: Vec<Vec<&str>> = tables
            .iter()
            .map(|t| t.foreign_keys.iter().map(|f| f.table.as_str()).collect())
            .collect();
        super::plan::order_by_references(&names, &references)
    };
    let mut slots: Vec<Option<PlanTable>> = tables.into_iter().map(Some).collect();
    let ordered = order.iter().filter_map(|&i| slots[i].take()).collect();
    (ordered, cycles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(pg_type("character varying(20)"), PgType::Varchar(20));
        assert_eq!(
            pg_type("numeric(10,2)"),
            PgType::Numeric(Some((10, Some(2))))
        );
        assert_eq!(pg_type("timestamp with time zone"), PgType::Timestamptz);
        assert_eq!(pg_type("timestamp(3) without time zone"), PgType::Timestamp);
        assert_eq!(pg_type("timestamp(0) with time zone"), PgType::Timestamptz);
        assert_eq!(pg_type("uuid"), PgType::Other("uuid".into()));
        assert_eq!(pg_type("text[]"), PgType::Other("text[]".into()));
        assert_eq!(pg_type("\"Mood\""), PgType::Other("\"Mood\"".into()));
    }

    #[test]
    fn order_puts_referenced_tables_first() {
        let table = |name: &str, refs: &[&str]| PlanTable {
            name: name.into(),
            foreign_keys: refs
                .iter()
                .map(|r| PlanForeignKey {
                    name: format!("{name}_{r}"),
                    from: vec!["x".into()],
                    table: (*r).into(),
                    to: vec!["y".into()],
                    on_update: "NO ACTION".into(),
                    on_delete: "NO ACTION".into(),
                })
                .collect(),
            ..PlanTable::default()
        };
        let (order, cycles) = dependency_order(vec![
            table("a", &["b"]),
            table("b", &["c", "b"]),
            table("c", &[]),
            table("d", &["e"]),
            table("e", &["d"]),
        ]);
        let names: Vec<&str> = order.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a", "d", "e"]);
        assert_eq!(cycles, [vec!["d".to_owned(), "e".to_owned()]]);
    }
}
