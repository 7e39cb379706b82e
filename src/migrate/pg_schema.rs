//! The schema half of the reverse migration, PostgreSQL → SQLite (the emergency fallback of `ferry migrate`):
//! [`read_plan`] reads one PostgreSQL schema through `pg_catalog` into the same [`Plan`] the forward
//! direction builds, with defaults, CHECKs, generated columns and partial-index predicates already in
//! SQLite dialect; [`sqlite_ddl`] writes the SQLite statements that create a plan's tables, from either
//! direction. The data copy is not here.
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
//! Expressions (CHECKs, generated columns, index predicates) are re-rendered, not copied: `::text`,
//! `::character varying`, `::bpchar`, `::numeric`, `::bigint`, `::integer`, `::smallint`, `::real` and
//! `::double precision` casts of a literal or a column are dropped (a number written as a string
//! becomes the number); `x = ANY (ARRAY[…])` becomes `x IN (…)` and `x <> ALL (ARRAY[…])`
//! `x NOT IN (…)`; `~~*` (ILIKE) becomes SQLite's case-insensitive `LIKE`; `char_length` → `length`,
//! `strpos` → `instr`, `btrim` → `trim`. Anything else PostgreSQL-specific (another cast, `~` and other
//! regular expressions, case-sensitive `~~`, arrays, unknown words and functions) makes the whole
//! expression untranslatable, with the reason.

use postgres::Client;

use super::plan::{Plan, PlanColumn, PlanForeignKey, PlanTable, Untranslated};
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
fn pg_type(declared: &str) -> PgType {
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

fn is_nextval(expr: &str) -> bool {
    let Ok(toks) = tokenize(expr) else {
        return false;
    };
    let toks = unwrap_parens(&toks);
    matches!(toks.first(), Some(t) if t.is_word("nextval"))
        && toks.get(1).is_some_and(|t| t.is_punct('('))
        && matching_paren(toks, 1) == Some(toks.len() - 1)
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

// ---------------------------------------------------------------------------------------------------------
// SQLite DDL

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

/// The SQLite type written for a PostgreSQL type (its affinity follows SQLite's rules for the name).
pub fn sqlite_type(pg: &PgType) -> String {
    match pg {
        PgType::BigInt | PgType::Integer | PgType::SmallInt => "INTEGER".into(),
        PgType::Double | PgType::Real => "REAL".into(),
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
    let toks = tokenize(stmt).ok()?;
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
    if !toks.get(i)?.is_punct('(') {
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

// ---------------------------------------------------------------------------------------------------------
// Expressions: a small tokenizer for what pg_get_expr and pg_get_constraintdef print, and the rewrites.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A string literal as written, quotes included.
    Str,
    /// A quoted identifier; `text` is the name.
    Ident,
    Num,
    Word,
    /// An operator: a run of `+-*/<>=~!@#%^&|?`.
    Op,
    /// `::`.
    Cast,
    /// `( ) [ ] , .`
    Punct,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    text: String,
    start: usize,
    end: usize,
}

impl Token {
    fn is_word(&self, w: &str) -> bool {
        self.kind == Tok::Word && self.text.eq_ignore_ascii_case(w)
    }

    fn is_punct(&self, c: char) -> bool {
        self.kind == Tok::Punct && self.text.len() == 1 && self.text.starts_with(c)
    }

    fn is_op(&self, op: &str) -> bool {
        self.kind == Tok::Op && self.text == op
    }

    /// The name a word or quoted identifier stands for.
    fn name(&self) -> Option<&str> {
        matches!(self.kind, Tok::Word | Tok::Ident).then_some(self.text.as_str())
    }
}

fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    const OPERATOR: &[u8] = b"+-*/<>=~!@#%^&|?";
    let bytes = sql.as_bytes();
    let word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let (kind, text) = match c {
            b'\'' | b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("an unterminated quote".into()),
                        Some(&q) if q == c && bytes.get(i + 1) == Some(&c) => i += 2,
                        Some(&q) if q == c => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                if c == b'\'' {
                    (Tok::Str, sql[start..i].to_owned())
                } else {
                    (Tok::Ident, sql[start + 1..i - 1].replace("\"\"", "\""))
                }
            }
            b'0'..=b'9' => {
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                    i += 1;
                }
                if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                    let mut j = i + 1;
                    if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                        j += 1;
                    }
                    if j < bytes.len() && bytes[j].is_ascii_digit() {
                        i = j;
                        while i < bytes.len() && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                (Tok::Num, sql[start..i].to_owned())
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                i += 2;
                (Tok::Cast, "::".to_owned())
            }
            b'(' | b')' | b'[' | b']' | b',' | b'.' => {
                i += 1;
                (Tok::Punct, sql[start..i].to_owned())
            }
            _ if OPERATOR.contains(&c) => {
                while i < bytes.len() && OPERATOR.contains(&bytes[i]) {
                    i += 1;
                }
                let op = &sql[start..i];
                if op.contains("--") || op.contains("/*") {
                    return Err("a comment".into());
                }
                (Tok::Op, op.to_owned())
            }
            _ if word_byte(c) => {
                while i < bytes.len() && word_byte(bytes[i]) {
                    i += 1;
                }
                (Tok::Word, sql[start..i].to_owned())
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('?');
                return Err(format!("the character {ch:?}"));
            }
        };
        toks.push(Token {
            kind,
            text,
            start,
            end: i,
        });
    }
    Ok(toks)
}

fn matching_paren(toks: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        if t.is_punct('(') {
            depth += 1;
        } else if t.is_punct(')') {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// The opening `(` of the group whose `)` is the last token of `toks`.
fn opening_paren(toks: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().rev() {
        if t.is_punct(')') {
            depth += 1;
        } else if t.is_punct('(') {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn split_commas(toks: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct('(') || t.is_punct('[') {
            depth += 1;
        } else if t.is_punct(')') || t.is_punct(']') {
            depth -= 1;
        } else if depth == 0 && t.is_punct(',') {
            parts.push(&toks[from..i]);
            from = i + 1;
        }
    }
    if from < toks.len() {
        parts.push(&toks[from..]);
    }
    parts
}

/// `toks` without parentheses around the whole of it.
fn unwrap_parens(mut toks: &[Token]) -> &[Token] {
    while toks.len() >= 2
        && toks[0].is_punct('(')
        && matching_paren(toks, 0) == Some(toks.len() - 1)
    {
        toks = &toks[1..toks.len() - 1];
    }
    toks
}

/// The text of a string literal token, unquoted.
fn unquote(literal: &str) -> String {
    literal[1..literal.len() - 1].replace("''", "'")
}

/// Casts dropped when they apply to a literal or a column; the numeric ones turn a string into a number.
const SIMPLE_CASTS: &[(&[&str], bool)] = &[
    (&["double", "precision"], true),
    (&["character", "varying"], false),
    (&["text"], false),
    (&["bpchar"], false),
    (&["numeric"], true),
    (&["bigint"], true),
    (&["integer"], true),
    (&["smallint"], true),
    (&["real"], true),
];

/// A number as SQLite reads it, when `text` is one.
fn plain_number(text: &str) -> Option<&str> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.parse::<f64>().is_ok_and(f64::is_finite);
    ok.then_some(t)
}

/// Drops the simple casts (see [`SIMPLE_CASTS`]) of literals and columns; other casts stay.
fn strip_casts(toks: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i].kind != Tok::Cast {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        let cast = SIMPLE_CASTS.iter().find(|(words, _)| {
            words
                .iter()
                .enumerate()
                .all(|(k, w)| toks.get(i + 1 + k).is_some_and(|t| t.is_word(w)))
                && !toks
                    .get(i + 1 + words.len())
                    .is_some_and(|t| t.is_punct('(') || t.is_punct('['))
        });
        // The operand: one literal or column, bare or alone in parentheses (not a function's arguments).
        let operand = match out.last() {
            Some(t) if t.is_punct(')') => opening_paren(&out).filter(|&open| {
                out.len() - open == 3
                    && !out
                        .get(open.wrapping_sub(1))
                        .is_some_and(|f| matches!(f.kind, Tok::Word | Tok::Ident))
            }),
            Some(_) => Some(out.len() - 1),
            None => None,
        }
        .map(|at| if out[at].is_punct('(') { at + 1 } else { at })
        .filter(|&at| matches!(out[at].kind, Tok::Str | Tok::Num | Tok::Ident | Tok::Word));
        match (cast, operand) {
            (Some((words, numeric)), Some(at)) => {
                if *numeric && out[at].kind == Tok::Str {
                    if let Some(n) = plain_number(&unquote(&out[at].text)) {
                        out[at].text = n.to_owned();
                        out[at].kind = Tok::Num;
                    }
                }
                i += 1 + words.len();
            }
            _ => {
                out.push(toks[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// `x = ANY (ARRAY[a, b])` → `x IN (a, b)`, `x <> ALL (ARRAY[a, b])` → `x NOT IN (a, b)`, when the
/// elements are literals (the array may carry a `::type[]` cast, as PostgreSQL prints for varchar).
fn rewrite_arrays(toks: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let quantified = (toks[i].is_op("=") && toks.get(i + 1).is_some_and(|t| t.is_word("ANY")))
            || (toks[i].is_op("<>") && toks.get(i + 1).is_some_and(|t| t.is_word("ALL")));
        if quantified && toks.get(i + 2).is_some_and(|t| t.is_punct('(')) {
            if let Some((elements, end)) = array_literal(&toks, i + 2) {
                let at = |text: &str, kind: Tok| Token {
                    kind,
                    text: text.to_owned(),
                    start: toks[i].start,
                    end: toks[i].end,
                };
                if toks[i].is_op("<>") {
                    out.push(at("NOT", Tok::Word));
                }
                out.push(at("IN", Tok::Word));
                out.push(at("(", Tok::Punct));
                out.extend(elements.iter().cloned());
                out.push(at(")", Tok::Punct));
                i = end + 1;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Reads `( ARRAY[…] )` or `( (ARRAY[…])::type[] )` opening at `open`: the elements (literals and
/// commas) and the index of the closing `)`.
fn array_literal(toks: &[Token], open: usize) -> Option<(&[Token], usize)> {
    let close = matching_paren(toks, open)?;
    let mut inner = &toks[open + 1..close];
    if inner.first()?.is_punct('(') {
        // (ARRAY[…])::type[]
        let end = matching_paren(inner, 0)?;
        let cast = &inner[end + 1..];
        let is_array_cast = cast.len() >= 4
            && cast[0].kind == Tok::Cast
            && cast[cast.len() - 2].is_punct('[')
            && cast[cast.len() - 1].is_punct(']')
            && cast[1..cast.len() - 2].iter().all(|t| t.kind == Tok::Word);
        if !is_array_cast {
            return None;
        }
        inner = &inner[1..end];
    }
    let body = match inner {
        [a, open_b, body @ .., close_b]
            if a.is_word("ARRAY") && open_b.is_punct('[') && close_b.is_punct(']') =>
        {
            body
        }
        _ => return None,
    };
    let literals = !body.is_empty()
        && body
            .iter()
            .all(|t| matches!(t.kind, Tok::Str | Tok::Num) || t.is_punct(',') || t.is_op("-"));
    literals.then_some((body, close))
}

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "IN", "BETWEEN", "LIKE", "ESCAPE", "CASE",
    "WHEN", "THEN", "ELSE", "END", "DISTINCT", "FROM",
];

/// PostgreSQL function → SQLite function, for the functions both have (under these names).
const FUNCTIONS: &[(&str, &str)] = &[
    ("lower", "lower"),
    ("upper", "upper"),
    ("length", "length"),
    ("char_length", "length"),
    ("character_length", "length"),
    ("abs", "abs"),
    ("coalesce", "coalesce"),
    ("nullif", "nullif"),
    ("btrim", "trim"),
    ("trim", "trim"),
    ("ltrim", "ltrim"),
    ("rtrim", "rtrim"),
    ("replace", "replace"),
    ("round", "round"),
    ("substr", "substr"),
    ("strpos", "instr"),
    ("instr", "instr"),
];

/// Re-renders a PostgreSQL expression (CHECK body, generated column, index predicate) for SQLite, or
/// says why it cannot; `columns` are the table's columns. Its output translates to itself.
fn translate_expr(expr: &str, columns: &[&str]) -> Result<String, String> {
    let toks = rewrite_arrays(strip_casts(tokenize(expr)?));
    if toks.is_empty() {
        return Err("an empty expression".into());
    }
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| **c == name)
            .map(|c| quote_ident(c))
            .ok_or_else(|| format!("{} is not a column of this table", quote_ident(name)))
    };
    // Each piece, and whether it sticks to the next one (a function name to its parenthesis, a sign
    // to its operand).
    let mut pieces: Vec<(String, bool)> = Vec::with_capacity(toks.len());
    for (i, t) in toks.iter().enumerate() {
        let call = toks.get(i + 1).is_some_and(|n| n.is_punct('('));
        let piece = match t.kind {
            Tok::Str | Tok::Num => t.text.clone(),
            Tok::Cast => {
                let ty = toks.get(i + 1).map_or("", |n| n.text.as_str());
                return Err(format!("the PostgreSQL cast ::{ty}"));
            }
            Tok::Punct => match t.text.as_str() {
                "(" | ")" | "," => t.text.clone(),
                "[" | "]" => return Err("an array".into()),
                _ => return Err("a qualified name".into()),
            },
            Tok::Op => match t.text.as_str() {
                "=" | "<>" | "!=" | "<" | ">" | "<=" | ">=" | "+" | "-" | "*" | "/" | "%"
                | "||" => t.text.clone(),
                "~~*" => "LIKE".into(),
                "!~~*" => "NOT LIKE".into(),
                "~~" | "!~~" => {
                    return Err("a case-sensitive LIKE (SQLite's LIKE ignores case)".into())
                }
                "~" | "~*" | "!~" | "!~*" => return Err("a regular expression match".into()),
                other => return Err(format!("the operator {other}")),
            },
            Tok::Word
                if toks
                    .get(i + 1)
                    .is_some_and(|n| n.kind == Tok::Str && n.start == t.end) =>
            {
                return Err(format!("the {}'…' string form", t.text));
            }
            Tok::Word if KEYWORDS.contains(&t.text.to_ascii_uppercase().as_str()) => {
                t.text.to_ascii_uppercase()
            }
            Tok::Word if t.is_word("ILIKE") => "LIKE".into(),
            Tok::Word if ["ANY", "ALL", "SOME", "ARRAY"].iter().any(|w| t.is_word(w)) => {
                return Err("an array comparison (ANY/ALL)".into());
            }
            Tok::Word | Tok::Ident if call => {
                let lower = t.text.to_ascii_lowercase();
                match FUNCTIONS.iter().find(|(pg, _)| *pg == lower) {
                    Some((_, sqlite)) => {
                        pieces.push(((*sqlite).to_owned(), true));
                        continue;
                    }
                    None => return Err(format!("the function {}()", t.text)),
                }
            }
            Tok::Word | Tok::Ident => column(&t.text)?,
        };
        let sign = t.is_op("-") || t.is_op("+");
        let unary = sign
            && i.checked_sub(1).is_none_or(|p| {
                let p = &toks[p];
                let upper = p.text.to_ascii_uppercase();
                p.is_punct('(')
                    || p.is_punct(',')
                    || p.kind == Tok::Op
                    || (p.kind == Tok::Word
                        && KEYWORDS.contains(&upper.as_str())
                        && !["NULL", "TRUE", "FALSE", "END"].contains(&upper.as_str()))
            });
        pieces.push((piece, unary));
    }
    let mut text = String::new();
    for (n, (piece, _)) in pieces.iter().enumerate() {
        let glue =
            n > 0 && piece != ")" && piece != "," && pieces[n - 1].0 != "(" && !pieces[n - 1].1;
        if glue {
            text.push(' ');
        }
        text.push_str(piece);
    }
    Ok(text)
}

/// The expression inside `pg_get_constraintdef`'s `CHECK (…)` (a `NO INHERIT` after it is ignored).
fn check_body(def: &str) -> Result<&str, String> {
    let toks = tokenize(def)?;
    let open = match toks.as_slice() {
        [c, o, ..] if c.is_word("CHECK") && o.is_punct('(') => 1,
        _ => return Err("not a CHECK (…) definition".into()),
    };
    let close = matching_paren(&toks, open).ok_or("unbalanced parentheses")?;
    match &toks[close + 1..] {
        [] => {}
        [n, i] if n.is_word("NO") && i.is_word("INHERIT") => {}
        rest => {
            let after = &def[rest[0].start..];
            return Err(format!("{after} after the expression"));
        }
    }
    if close == open + 1 {
        return Err("an empty CHECK".into());
    }
    Ok(&def[toks[open + 1].start..toks[close - 1].end])
}

/// Translates a DEFAULT expression to SQLite: `Ok(None)` for none (`NULL`, a sequence's `nextval`).
/// Accepts PostgreSQL's spelling (`pg_get_expr`) and the SQLite spellings it produces, so a plan's
/// defaults from either direction go through it.
fn translate_default(expr: &str) -> Result<Option<String>, String> {
    let all = tokenize(expr)?;
    let toks = unwrap_parens(&all);
    if toks.is_empty() {
        return Err("an empty default".into());
    }
    if is_nextval(expr) {
        return Ok(None);
    }
    // A literal followed by casts only: `'x'::text`, `'-1'::integer`, `NULL::character varying`.
    let literal_end = toks
        .iter()
        .position(|t| t.kind == Tok::Cast)
        .unwrap_or(toks.len());
    let casts = &toks[literal_end..];
    let cast_to = |ty: &str| {
        casts.iter().any(|t| t.is_word(ty)) && casts.iter().all(|t| t.kind != Tok::Punct)
    };
    let numeric_cast = SIMPLE_CASTS
        .iter()
        .any(|(words, numeric)| *numeric && cast_to(words[0]));
    match &toks[..literal_end] {
        [t] if t.is_word("NULL") => return Ok(None),
        [t] if t.is_word("TRUE") => return Ok(Some("1".into())),
        [t] if t.is_word("FALSE") => return Ok(Some("0".into())),
        [t] if t.kind == Tok::Str => {
            let text = unquote(&t.text);
            if cast_to("bytea") {
                if let Some(hex) = text.strip_prefix("\\x") {
                    if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Ok(Some(format!("X'{hex}'")));
                    }
                }
                return Err("a bytea literal not in hex form".into());
            }
            if cast_to("boolean") {
                return match text.to_ascii_lowercase().as_str() {
                    "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Some("1".into())),
                    "f" | "false" | "n" | "no" | "off" | "0" => Ok(Some("0".into())),
                    _ => Err("not a boolean".into()),
                };
            }
            if numeric_cast {
                return plain_number(&text)
                    .map(|n| Some(n.to_owned()))
                    .ok_or_else(|| "not a number".into());
            }
            return Ok(Some(t.text.clone()));
        }
        [t] if t.kind == Tok::Num => return Ok(Some(t.text.clone())),
        // SQLite's blob literal, as read_plan writes a bytea default.
        [x, s]
            if x.is_word("X")
                && s.kind == Tok::Str
                && x.end == s.start
                && unquote(&s.text).bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            return Ok(Some(format!("X{}", s.text)));
        }
        [m, t] if m.is_op("-") && t.kind == Tok::Num => return Ok(Some(format!("-{}", t.text))),
        _ => {}
    }
    let words: Vec<String> = toks
        .iter()
        .filter(|t| !t.is_punct('(') && !t.is_punct(')'))
        .map(|t| t.text.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let now = match words.as_slice() {
        ["now"
        | "transaction_timestamp"
        | "statement_timestamp"
        | "current_timestamp"
        | "localtimestamp"] => Some("CURRENT_TIMESTAMP"),
        ["current_date"] => Some("CURRENT_DATE"),
        ["current_time" | "localtime"] => Some("CURRENT_TIME"),
        // What the forward direction writes for SQLite's CURRENT_TIMESTAMP in a text column.
        ["to_char", "now", "at", "time", "zone", "'utc'", ",", "'yyyy-mm-dd hh24:mi:ss'"]
        | ["to_char", "now", "at", "time", "zone", "'utc'", "::", "text", ",", "'yyyy-mm-dd hh24:mi:ss'", "::", "text"] => {
            Some("CURRENT_TIMESTAMP")
        }
        _ => None,
    };
    now.map(|n| Some(n.to_owned()))
        .ok_or_else(|| "no SQLite counterpart".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expr: &str, columns: &[&str]) -> Result<String, String> {
        translate_expr(expr, columns)
    }

    #[test]
    fn defaults() {
        let d = |e: &str| translate_default(e);
        assert_eq!(d("nextval('t_id_seq'::regclass)"), Ok(None));
        assert_eq!(d("nextval('\"we\"\"ird_id_seq\"'::regclass)"), Ok(None));
        assert_eq!(d("NULL::character varying"), Ok(None));
        assert_eq!(d("now()"), Ok(Some("CURRENT_TIMESTAMP".into())));
        assert_eq!(d("CURRENT_TIMESTAMP"), Ok(Some("CURRENT_TIMESTAMP".into())));
        assert_eq!(d("CURRENT_DATE"), Ok(Some("CURRENT_DATE".into())));
        assert_eq!(
            d("to_char((now() AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD HH24:MI:SS'::text)"),
            Ok(Some("CURRENT_TIMESTAMP".into()))
        );
        assert_eq!(
            d("to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"),
            Ok(Some("CURRENT_TIMESTAMP".into()))
        );
        assert_eq!(d("'x'::text"), Ok(Some("'x'".into())));
        assert_eq!(d("'it''s'::character varying"), Ok(Some("'it''s'".into())));
        assert_eq!(d("'G'::bpchar"), Ok(Some("'G'".into())));
        assert_eq!(d("'{}'::jsonb"), Ok(Some("'{}'".into())));
        assert_eq!(d("'0'"), Ok(Some("'0'".into())));
        assert_eq!(d("0"), Ok(Some("0".into())));
        assert_eq!(d("4.99"), Ok(Some("4.99".into())));
        assert_eq!(d("(0)"), Ok(Some("0".into())));
        assert_eq!(d("'-1'::integer"), Ok(Some("-1".into())));
        assert_eq!(d("'-2.5'::numeric"), Ok(Some("-2.5".into())));
        assert_eq!(d("'1e10'::double precision"), Ok(Some("1e10".into())));
        assert_eq!(d("-1"), Ok(Some("-1".into())));
        assert_eq!(d("true"), Ok(Some("1".into())));
        assert_eq!(d("false"), Ok(Some("0".into())));
        assert_eq!(d("'\\x00ff'::bytea"), Ok(Some("X'00ff'".into())));
        assert!(d("'NaN'::numeric").is_err());
        assert!(d("gen_random_uuid()").is_err());
        assert!(d("(now() + '1 day'::interval)").is_err());
        assert!(d("lower('X'::text)").is_err());
        assert!(d("'[1,2]'::int4range").is_ok(), "a literal keeps its text");
        // Idempotent on its own output.
        for out in [
            "CURRENT_TIMESTAMP",
            "CURRENT_DATE",
            "'x'",
            "-1",
            "1",
            "2.5",
            "X'00ff'",
        ] {
            assert_eq!(d(out), Ok(Some(out.to_owned())), "{out}");
        }
    }

    #[test]
    fn checks() {
        let cols = ["Discount", "age", "status", "name", "select", "we\"ird"];
        assert_eq!(
            check(
                "((\"Discount\" >= (0)::double precision) AND (\"Discount\" <= (1)::double precision))",
                &cols
            ),
            Ok("((\"Discount\" >= (0)) AND (\"Discount\" <= (1)))".into())
        );
        assert_eq!(check("(age >= 0)", &cols), Ok("(\"age\" >= 0)".into()));
        assert_eq!(
            check("((- age) < - 1) AND (age - 1 > -2)", &cols),
            Ok("((-\"age\") < -1) AND (\"age\" - 1 > -2)".into())
        );
        assert_eq!(
            check("((age)::numeric > '-1'::numeric)", &cols),
            Ok("((\"age\") > -1)".into())
        );
        assert_eq!(
            check("(status = ANY (ARRAY['a'::text, 'b'::text]))", &cols),
            Ok("(\"status\" IN ('a', 'b'))".into())
        );
        assert_eq!(
            check(
                "((status)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[]))",
                &cols
            ),
            Ok("((\"status\") IN ('a', 'b'))".into())
        );
        assert_eq!(
            check("(status <> ALL (ARRAY[1, 2]))", &cols),
            Ok("(\"status\" NOT IN (1, 2))".into())
        );
        assert_eq!(
            check("(name ~~* 'a%'::text)", &cols),
            Ok("(\"name\" LIKE 'a%')".into())
        );
        assert_eq!(
            check("(char_length(name) > 2)", &cols),
            Ok("(length(\"name\") > 2)".into())
        );
        assert_eq!(
            check(
                "((\"select\" IS NOT NULL) AND (\"we\"\"ird\" <> ''::text))",
                &cols
            ),
            Ok("((\"select\" IS NOT NULL) AND (\"we\"\"ird\" <> ''))".into())
        );
        let err = |e: &str| check(e, &cols).unwrap_err();
        assert!(err("(name ~ '^[a-z]+$'::text)").contains("regular expression"));
        assert!(err("(name ~~ 'a%'::text)").contains("case-sensitive"));
        assert!(err("(status = ANY (ARRAY[name, 'b'::text]))").contains("ANY"));
        assert!(err("((age)::numeric(10,2) > 0)").contains("::numeric"));
        assert!(err("((age + 1)::text <> ''::text)").contains("::text"));
        assert!(err("(lower(name)::text <> ''::text)").contains("::text"));
        assert!(err("(name <> E'a\\n'::text)").contains("E'…'"));
        assert!(err("(md5(name) <> ''::text)").contains("md5"));
        assert!(err("(other > 0)").contains("\"other\""));
        assert!(err("((name)::date > '2000-01-01'::date)").contains("::date"));
        // The output translates to itself.
        for e in [
            "((\"Discount\" >= (0)) AND (\"Discount\" <= (1)))",
            "(\"status\" NOT IN (1, 2))",
            "(length(\"name\") > 2)",
            "(\"age\" > (-100))",
            "\"name\" LIKE 'a%'",
        ] {
            assert_eq!(check(e, &cols).as_deref(), Ok(e));
        }
        // The forward direction's PostgreSQL spelling.
        assert_eq!(
            check("\"name\" ILIKE 'a%' AND strpos(\"name\", 'b') > 0", &cols),
            Ok("\"name\" LIKE 'a%' AND instr(\"name\", 'b') > 0".into())
        );
    }

    #[test]
    fn check_definitions() {
        assert_eq!(check_body("CHECK ((age >= 0))"), Ok("(age >= 0)"));
        assert_eq!(
            check_body("CHECK ((age >= 0)) NO INHERIT"),
            Ok("(age >= 0)")
        );
        assert!(check_body("CHECK ((age >= 0)) NOT VALID").is_err());
        assert!(check_body("UNIQUE (a)").is_err());
    }

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
        assert_eq!(sqlite_type(&pg_type("bigint")), "INTEGER");
        assert_eq!(sqlite_type(&pg_type("numeric(4,2)")), "NUMERIC(4,2)");
        assert_eq!(sqlite_type(&PgType::Jsonb), "JSON");
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
            create.contains("\"total\" NUMERIC GENERATED ALWAYS AS ((\"price\" * 2)) STORED"),
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
        let (id, total, at): (i64, f64, String) = conn
            .query_row(
                "SELECT id, total, at FROM \"we\"\"ird; DROP TABLE x; --\"",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((id, total, at.len()), (1, 5.0, 19));
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
