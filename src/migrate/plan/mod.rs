//! The migration plan: every table of a SQLite [`Schema`] translated for PostgreSQL, in dependency
//! order, with what could not be translated and why. [`Plan::render`] is what `ferry migrate --plan`
//! prints; [`Plan::ddl`] gives the PostgreSQL statements in two phases: tables (columns, types,
//! NOT NULL, DEFAULT, identity, generated columns, PRIMARY KEY) before the data, and UNIQUE constraints,
//! indexes, CHECKs, foreign keys and sequence positions after it, so circular references load (see
//! [`output`]); tables come in foreign-key order ([`order`]).

mod order;
mod output;

use order::dependency_order;
pub(crate) use order::order_by_references;

use std::collections::HashSet;

use rusqlite::Connection;

use super::introspect::{Generated, Schema, Table};
use super::profile::{profile_table, TableProfile};
use super::sql::sqlite::{translate_default, translate_expr, ExprColumn};
use super::sql::{self, Dialect};
use super::types::{translate, CastRules, ColumnContext, PgType, Translation};
use crate::db::{quote_ident, PG_NAME_BYTES};
use crate::error::Result;

/// The whole plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Tables in creation order: referenced tables before referencing ones where a cycle allows it.
    pub tables: Vec<PlanTable>,
    /// Objects left out, each with the reason (views, triggers, virtual tables, constraints, …).
    pub untranslated: Vec<Untranslated>,
    /// Foreign-key cycles (table names), which only adding the keys after the data resolves.
    pub cycles: Vec<Vec<String>>,
    /// Views as (name, `SELECT …` with identifiers requoted for PostgreSQL): the migration tries each on
    /// the target after the data and keeps those PostgreSQL accepts; the others stay in `untranslated`.
    pub views: Vec<(String, String)>,
}

/// Something the plan does not carry over.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Untranslated {
    /// `view`, `trigger`, `index`, `check`, `default`, …
    pub kind: &'static str,
    /// Its name (`table.what` for parts of a table).
    pub name: String,
    /// Why.
    pub reason: String,
}

/// One table.
#[derive(Debug, Clone, Default)]
pub struct PlanTable {
    /// Its name (kept exactly, quoted everywhere).
    pub name: String,
    /// Rows at profiling time.
    pub rows: u64,
    /// Columns in order.
    pub columns: Vec<PlanColumn>,
    /// Primary-key columns.
    pub primary_key: Vec<String>,
    /// UNIQUE constraints: name and columns.
    pub uniques: Vec<(String, Vec<String>)>,
    /// Secondary indexes, as complete `CREATE INDEX` statements.
    pub indexes: Vec<(String, String)>,
    /// CHECK constraints: name and translated expression.
    pub checks: Vec<(String, String)>,
    /// Foreign keys.
    pub foreign_keys: Vec<PlanForeignKey>,
    /// The identity column and the value its sequence continues from (max of the data and `sqlite_sequence`, plus one).
    pub sequence: Option<(String, i64)>,
    /// Notes: STRICT, WITHOUT ROWID, collations, …
    pub notes: Vec<String>,
}

/// One column.
#[derive(Debug, Clone)]
pub struct PlanColumn {
    /// Its name.
    pub name: String,
    /// The SQLite declared type.
    pub declared: String,
    /// The type decision.
    pub translation: Translation,
    /// NOT NULL (primary-key columns always are in PostgreSQL).
    pub not_null: bool,
    /// The translated DEFAULT expression.
    pub default: Option<String>,
    /// The translated generation expression (`GENERATED ALWAYS AS (…) STORED`); the copy skips the column.
    pub generated: Option<String>,
}

/// A foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanForeignKey {
    /// Constraint name.
    pub name: String,
    /// Referencing columns.
    pub from: Vec<String>,
    /// Referenced table.
    pub table: String,
    /// Referenced columns.
    pub to: Vec<String>,
    /// ON UPDATE action.
    pub on_update: String,
    /// ON DELETE action.
    pub on_delete: String,
}

/// The PostgreSQL statements of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ddl {
    /// `CREATE TABLE` statements, run before the data.
    pub create: Vec<String>,
    /// Primary keys, UNIQUE, indexes, CHECKs, foreign keys and sequence positions, run after the data:
    /// each table's own statements first (as in `per_table`), then the foreign keys and sequences.
    pub after_data: Vec<String>,
    /// Each table's own after-data statements (primary key, UNIQUE, indexes, CHECKs), in `tables` order:
    /// the copy runs them in the table's transaction, right after its rows.
    pub per_table: Vec<Vec<String>>,
    /// Foreign keys and sequence positions, which need every table loaded.
    pub last: Vec<String>,
}

/// The `SELECT …` of a `CREATE VIEW` text for PostgreSQL: identifiers (bare, `[name]`, `` `name` ``) that
/// name a table or column of the schema, in any case, are written double-quoted in the schema's exact
/// spelling, since PostgreSQL folds bare names to lower case and SQLite does not care.
fn view_select(sql: &str, names: &std::collections::HashMap<String, String>) -> Option<String> {
    let tokens = sql::tokenize(sql, Dialect::Sqlite).ok()?;
    let view = tokens.iter().position(|t| t.is_word("VIEW"))?;
    let select = tokens.iter().skip(view).position(|t| t.is_word("AS"))? + view + 1;
    let mut out = String::with_capacity(sql.len());
    let mut at = tokens.get(select)?.start;
    for token in tokens.get(select..)? {
        out.push_str(sql.get(at..token.start)?);
        let known = names.get(&token.text.to_lowercase());
        match (token.kind, known) {
            (sql::Kind::Word | sql::Kind::Ident, Some(exact)) => out.push_str(&quote_ident(exact)),
            (sql::Kind::Ident, None) => out.push_str(&quote_ident(&token.text)),
            _ => out.push_str(sql.get(token.start..token.end)?),
        }
        at = token.end;
    }
    Some(out.trim().trim_end_matches(';').to_owned())
}

/// A name for an index or constraint: `base` when PostgreSQL keeps it as written and no table, index or
/// constraint of the plan has it; else cut to fit its 63 bytes (PostgreSQL would cut it silently) and
/// made unique with `_2`, `_3` … .
fn pg_name(taken: &mut HashSet<String>, base: &str) -> String {
    let cut = |s: &str, max: usize| {
        let mut end = max.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    let mut name = cut(base, PG_NAME_BYTES);
    let mut n = 1;
    while !taken.insert(name.clone()) {
        n += 1;
        let suffix = format!("_{n}");
        name = format!("{}{suffix}", cut(base, PG_NAME_BYTES - suffix.len()));
    }
    name
}

/// The plan's note when a name the source gave had to change in PostgreSQL.
fn renamed(kind: &str, from: &str, to: &str) -> Option<String> {
    (from != to).then(|| {
        format!(
            "{kind} {} is named {} in PostgreSQL (names longer than {PG_NAME_BYTES} bytes are shortened, and each must be unique)",
            quote_ident(from),
            quote_ident(to)
        )
    })
}

impl Plan {
    /// Introspects, profiles and translates the database behind `conn`.
    pub fn build(conn: &Connection, label: &str, rules: &CastRules) -> Result<Plan> {
        let schema = Schema::read(conn, label)?;
        let mut profiles = Vec::with_capacity(schema.tables.len());
        for table in &schema.tables {
            profiles.push(profile_table(conn, label, table)?);
        }
        Plan::from_schema(&schema, &profiles, rules)
    }

    /// Like [`Plan::build`], profiling up to `jobs` tables at once, each on its own read-only connection.
    pub fn build_parallel(
        path: &std::path::Path,
        label: &str,
        rules: &CastRules,
        jobs: usize,
    ) -> Result<Plan> {
        let schema = Schema::read(&super::introspect::open(path)?, label)?;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<TableProfile>>>> = schema
            .tables
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..jobs.clamp(1, schema.tables.len().max(1)) {
                scope.spawn(|| {
                    let conn = match super::introspect::open(path) {
                        Ok(conn) => conn,
                        Err(e) => {
                            if let Some(slot) = slots.first() {
                                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(e));
                            }
                            return;
                        }
                    };
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let (Some(table), Some(slot)) = (schema.tables.get(i), slots.get(i)) else {
                            return;
                        };
                        let profile = profile_table(&conn, label, table);
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(profile);
                    }
                });
            }
        });
        let mut profiles = Vec::with_capacity(slots.len());
        for slot in slots {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(profile) => profiles.push(profile?),
                None => return Plan::build(&super::introspect::open(path)?, label, rules),
            }
        }
        Plan::from_schema(&schema, &profiles, rules)
    }

    /// Translates an introspected schema with the profiles of its tables (same order as `schema.tables`).
    pub fn from_schema(
        schema: &Schema,
        profiles: &[TableProfile],
        rules: &CastRules,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        // Tables, indexes and constraints share PostgreSQL's relation namespace: generated names avoid tables.
        let mut taken: HashSet<String> = schema.tables.iter().map(|t| t.name.clone()).collect();
        let mut tables = Vec::new();
        for (i, table) in schema.tables.iter().enumerate() {
            tables.push(plan_table(
                schema,
                table,
                profiles.get(i),
                rules,
                &mut taken,
                &mut plan.untranslated,
            )?);
        }
        let (order, cycles) = dependency_order(schema);
        plan.cycles = cycles;
        plan.tables = order
            .into_iter()
            .filter_map(|i| tables.get(i).cloned())
            .collect();
        let mut names = std::collections::HashMap::new();
        for t in &schema.tables {
            names.insert(t.name.to_lowercase(), t.name.clone());
            for c in &t.columns {
                names
                    .entry(c.name.to_lowercase())
                    .or_insert_with(|| c.name.clone());
            }
        }
        for v in &schema.views {
            names.insert(v.name.to_lowercase(), v.name.clone());
        }
        for v in &schema.views {
            match view_select(&v.sql, &names) {
                Some(select) => {
                    plan.views.push((v.name.clone(), select));
                    plan.untranslated.push(Untranslated {
                        kind: "view",
                        name: v.name.clone(),
                        reason: "tried on the target after the data; kept only if PostgreSQL accepts its SQL".into(),
                    });
                }
                None => plan.untranslated.push(Untranslated {
                    kind: "view",
                    name: v.name.clone(),
                    reason: "its CREATE VIEW text could not be read".into(),
                }),
            }
        }
        for t in &schema.triggers {
            plan.untranslated.push(Untranslated {
                kind: "trigger",
                name: t.name.clone(),
                reason: format!(
                    "PostgreSQL triggers need a plpgsql function (on {})",
                    t.table
                ),
            });
        }
        for v in &schema.virtual_tables {
            plan.untranslated.push(Untranslated {
                kind: "virtual table",
                name: v.name.clone(),
                reason: "SQLite virtual table module".into(),
            });
        }
        Ok(plan)
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&PlanTable> {
        self.tables.iter().find(|t| t.name == name)
    }
}

fn plan_table(
    schema: &Schema,
    table: &Table,
    profile: Option<&TableProfile>,
    rules: &CastRules,
    taken: &mut HashSet<String>,
    untranslated: &mut Vec<Untranslated>,
) -> Result<PlanTable> {
    let mut out = PlanTable {
        name: table.name.clone(),
        rows: profile.map_or(0, |p| p.rows),
        primary_key: table.primary_key.clone(),
        ..PlanTable::default()
    };
    let mut skip = |kind: &'static str, what: &str, reason: String| {
        untranslated.push(Untranslated {
            kind,
            name: format!("{}.{what}", table.name),
            reason,
        });
    };
    if table.strict {
        out.notes
            .push("STRICT: PostgreSQL types are always enforced".into());
    }
    if table.without_rowid {
        out.notes
            .push("WITHOUT ROWID: no difference in PostgreSQL".into());
    }
    // Types first: expressions need to know which columns become boolean.
    let mut translations = Vec::new();
    for c in &table.columns {
        let context = ColumnContext {
            table: &table.name,
            column: &c.name,
            rowid_alias: table.rowid_alias.as_deref() == Some(c.name.as_str()),
        };
        translations.push(translate(
            &c.declared_type,
            context,
            profile.and_then(|p| p.column(&c.name)),
            rules,
        )?);
    }
    let expr_columns: Vec<ExprColumn<'_>> = table
        .columns
        .iter()
        .zip(&translations)
        .map(|(c, t)| ExprColumn {
            name: &c.name,
            boolean: t.pg == PgType::Boolean,
        })
        .collect();
    for (c, translation) in table.columns.iter().zip(translations) {
        if c.generated == Generated::Hidden {
            continue;
        }
        if let Some(coll) = &c.collation {
            out.notes.push(format!(
                "{} COLLATE {coll} is not carried over: comparisons become case- and space-sensitive",
                quote_ident(&c.name)
            ));
        }
        let mut generated = None;
        if matches!(c.generated, Generated::Virtual | Generated::Stored) {
            match c
                .generated_expr
                .as_deref()
                .map(|e| translate_expr(e, &expr_columns))
            {
                Some(Ok(g)) => generated = Some(g),
                Some(Err(why)) => skip(
                    "generated column",
                    &c.name,
                    format!("created as a plain column holding the copied values: {why}"),
                ),
                None => skip(
                    "generated column",
                    &c.name,
                    "expression not found; created as a plain column".into(),
                ),
            }
        }
        let default = match &c.default {
            Some(d) if generated.is_none() => {
                match translate_default(d, &translation.pg, &expr_columns) {
                    Ok(v) => v,
                    Err(why) => {
                        skip("default", &c.name, format!("{d}: {why}"));
                        None
                    }
                }
            }
            _ => None,
        };
        if translation.identity {
            let max = profile
                .and_then(|p| p.column(&c.name))
                .and_then(|p| p.max_integer)
                .unwrap_or(0);
            let at = max.max(table.sequence.unwrap_or(0)).saturating_add(1);
            out.sequence = Some((c.name.clone(), at));
        }
        out.columns.push(PlanColumn {
            name: c.name.clone(),
            declared: c.declared_type.clone(),
            not_null: c.not_null || c.pk_position > 0,
            translation,
            default,
            generated,
        });
    }
    for u in &table.uniques {
        match u.column_names() {
            Some(cols) => {
                let name = pg_name(taken, &format!("{}_{}_key", table.name, cols.join("_")));
                out.uniques.push((name, cols));
            }
            None => skip("unique", &u.name, "UNIQUE on an expression".into()),
        }
    }
    for index in &table.indexes {
        match index_statement(table, index, &expr_columns, taken) {
            Ok((stmt, name)) => {
                out.notes.extend(renamed("index", &index.name, &name));
                out.indexes.push((index.name.clone(), stmt))
            }
            Err(why) => skip("index", &index.name, why),
        }
    }
    for (n, check) in table.checks.iter().enumerate() {
        let base = check
            .name
            .clone()
            .unwrap_or_else(|| format!("{}_check{}", table.name, n + 1));
        match translate_expr(&check.expr, &expr_columns) {
            Ok(expr) => {
                let name = pg_name(taken, &base);
                if check.name.is_some() {
                    out.notes.extend(renamed("CHECK", &base, &name));
                }
                out.checks.push((name, expr))
            }
            Err(why) => skip("check", &base, format!("{}: {why}", check.expr)),
        }
    }
    for (n, fk) in table.foreign_keys.iter().enumerate() {
        let base = fk
            .name
            .clone()
            .unwrap_or_else(|| format!("{}_{}_fkey", table.name, fk.from.join("_")));
        let name = pg_name(taken, &base);
        if fk.name.is_some() {
            out.notes.extend(renamed("foreign key", &base, &name));
        }
        let Some(target) = schema.table(&fk.table) else {
            skip(
                "foreign key",
                &name,
                format!("references {}, which is not migrated", fk.table),
            );
            continue;
        };
        let to = if fk.to.is_empty() {
            target.primary_key.clone()
        } else {
            fk.to.clone()
        };
        let keyed = to == target.primary_key
            || target
                .uniques
                .iter()
                .chain(
                    target
                        .indexes
                        .iter()
                        .filter(|i| i.unique && i.where_clause.is_none()),
                )
                .any(|u| u.column_names().as_deref() == Some(to.as_slice()));
        if to.len() != fk.from.len() || !keyed {
            skip(
                "foreign key",
                &format!("{name}#{n}"),
                format!(
                    "{}({}) is not a primary key or UNIQUE, which PostgreSQL requires",
                    fk.table,
                    to.join(", ")
                ),
            );
            continue;
        }
        out.foreign_keys.push(PlanForeignKey {
            name,
            from: fk.from.clone(),
            table: target.name.clone(),
            to,
            on_update: fk.on_update.clone(),
            on_delete: fk.on_delete.clone(),
        });
    }
    Ok(out)
}

fn index_statement(
    table: &Table,
    index: &super::introspect::Index,
    columns: &[ExprColumn<'_>],
    taken: &mut HashSet<String>,
) -> Result<(String, String), String> {
    let mut terms = Vec::new();
    for term in &index.terms {
        let mut text = match (&term.column, &term.text) {
            (Some(c), _) => quote_ident(c),
            (None, Some(expr)) => {
                // The written term may end in COLLATE/ASC/DESC; the pragma already told those.
                let toks = sql::tokenize(expr, Dialect::Sqlite)?;
                let cut = toks
                    .iter()
                    .position(|t| t.is_word("COLLATE") || t.is_word("ASC") || t.is_word("DESC"))
                    .unwrap_or(toks.len());
                format!(
                    "({})",
                    translate_expr(sql::text_of(expr, &toks[..cut]), columns)?
                )
            }
            (None, None) => return Err("expression term without its SQL text".into()),
        };
        // The column's own collation is already reported as not carried over; only a COLLATE written on
        // the index term itself makes the index untranslatable.
        let own = term
            .column
            .as_deref()
            .and_then(|c| table.column(c))
            .and_then(|c| c.collation.as_deref())
            .unwrap_or("BINARY");
        if !term.collation.eq_ignore_ascii_case(own) {
            return Err(format!(
                "COLLATE {} has no PostgreSQL counterpart",
                term.collation
            ));
        }
        if term.desc {
            text.push_str(" DESC");
        }
        terms.push(text);
    }
    let where_clause = match &index.where_clause {
        Some(w) => format!(" WHERE {}", translate_expr(w, columns)?),
        None => String::new(),
    };
    let name = pg_name(taken, &index.name);
    let stmt = format!(
        "CREATE {}INDEX {} ON {} ({}){where_clause}",
        if index.unique { "UNIQUE " } else { "" },
        quote_ident(&name),
        quote_ident(&table.name),
        terms.join(", ")
    );
    Ok((stmt, name))
}

#[cfg(test)]
mod tests {
    use super::super::introspect::tests::{corpus, fixture};
    use super::*;

    fn plan(file: &str) -> Plan {
        Plan::build(&corpus(file), file, &CastRules::default()).unwrap()
    }

    fn col<'a>(plan: &'a Plan, table: &str, column: &str) -> &'a PlanColumn {
        plan.table(table)
            .unwrap()
            .columns
            .iter()
            .find(|c| c.name == column)
            .unwrap()
    }

    #[test]
    fn names_fit_postgres_and_do_not_collide() {
        let mut taken: HashSet<String> = ["t_a_key".to_owned()].into();
        assert_eq!(pg_name(&mut taken, "t_a_key"), "t_a_key_2");
        let long = "é".repeat(40);
        let first = pg_name(&mut taken, &long);
        let second = pg_name(&mut taken, &long);
        assert!(first.len() <= 63 && second.len() <= 63 && first != second);
        assert!(second.ends_with("_2"));
    }

    #[test]
    fn chinook_plan() {
        let p = plan("sqlite-chinook/Chinook_Sqlite.sqlite");
        assert_eq!(p.tables.len(), 11);
        assert_eq!(
            p.tables.iter().map(|t| t.foreign_keys.len()).sum::<usize>(),
            11
        );
        assert_eq!(p.tables.iter().map(|t| t.indexes.len()).sum::<usize>(), 11);
        assert!(p.untranslated.is_empty(), "{:?}", p.untranslated);
        assert!(p.cycles.is_empty());
        let pos = |n: &str| p.tables.iter().position(|t| t.name == n).unwrap();
        assert!(
            pos("Artist") < pos("Album")
                && pos("Track") < pos("PlaylistTrack")
                && pos("Employee") < pos("Customer")
        );
        assert_eq!(
            col(&p, "Invoice", "Total").translation.pg.sql(),
            "numeric(10,2)"
        );
        assert_eq!(col(&p, "Album", "Title").translation.pg.sql(), "text");
        assert_eq!(
            col(&p, "Invoice", "InvoiceDate").translation.pg.sql(),
            "timestamptz"
        );
        assert!(col(&p, "Track", "TrackId").translation.identity);
        assert_eq!(
            p.table("PlaylistTrack").unwrap().primary_key,
            ["PlaylistId", "TrackId"]
        );
        assert_eq!(
            p.table("Invoice").unwrap().sequence,
            Some(("InvoiceId".into(), 413))
        );
        let ddl = p.ddl();
        assert_eq!(ddl.create.len(), 11);
        // Primary keys are built after the data, in the table's own after-data statements.
        assert!(ddl
            .per_table
            .iter()
            .flatten()
            .any(|s| s
                == "ALTER TABLE \"PlaylistTrack\" ADD PRIMARY KEY (\"PlaylistId\", \"TrackId\")"));
        assert!(!ddl.create.iter().any(|s| s.contains("PRIMARY KEY")));
        assert!(ddl
            .create
            .iter()
            .any(|s| s.contains("\"TrackId\" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL")));
        assert!(ddl
            .after_data
            .iter()
            .any(|s| s == "CREATE INDEX \"IFK_AlbumArtistId\" ON \"Album\" (\"ArtistId\")"));
        assert!(ddl.after_data.iter().any(|s| s.contains("FOREIGN KEY (\"ReportsTo\") REFERENCES \"Employee\" (\"EmployeeId\") ON UPDATE NO ACTION ON DELETE NO ACTION")));
        assert_eq!(
            ddl.after_data
                .iter()
                .filter(|s| s.starts_with("SELECT setval"))
                .count(),
            10
        );
        let text = p.render();
        assert!(text.starts_with("11 tables, 11 foreign keys"), "{text}");
        assert!(text.contains("NUMERIC(10,2)") && text.contains("numeric(10,2)"));
    }

    #[test]
    fn northwind_plan() {
        let p = plan("sqlite-northwind/northwind.db");
        assert_eq!(p.tables.len(), 13);
        assert_eq!(
            p.tables.iter().map(|t| t.foreign_keys.len()).sum::<usize>(),
            13
        );
        assert_eq!(p.tables.iter().map(|t| t.checks.len()).sum::<usize>(), 7);
        assert_eq!(
            p.untranslated.iter().filter(|u| u.kind == "view").count(),
            17
        );
        assert_eq!(p.untranslated.len(), 17, "{:?}", p.untranslated);
        assert_eq!(
            col(&p, "Categories", "Picture").translation.pg,
            PgType::Bytea
        );
        assert_eq!(
            col(&p, "Territories", "TerritoryID").translation.pg,
            PgType::Text
        );
        assert!(
            col(&p, "Customers", "CustomerID").not_null,
            "PK columns are NOT NULL in PostgreSQL"
        );
        assert_eq!(
            col(&p, "Products", "Discontinued").translation.pg,
            PgType::Text
        );
        assert_eq!(
            col(&p, "Products", "Discontinued").default.as_deref(),
            Some("'0'")
        );
        assert_eq!(
            col(&p, "Orders", "OrderDate").translation.pg,
            PgType::Timestamptz
        );
        assert_eq!(
            col(&p, "Employees", "BirthDate").translation.pg,
            PgType::Date
        );
        assert_eq!(
            col(&p, "Order Details", "UnitPrice").translation.pg,
            PgType::Numeric(None)
        );
        assert_eq!(
            p.table("Orders").unwrap().sequence,
            Some(("OrderID".into(), 11078))
        );
        let od = p.table("Order Details").unwrap();
        assert!(od
            .checks
            .iter()
            .any(|(_, e)| e == "\"Discount\" >= (0) AND \"Discount\" <= (1)"));
        let ddl = p.ddl();
        assert!(ddl
            .create
            .iter()
            .any(|s| s.starts_with("CREATE TABLE \"Order Details\"")));
        assert!(ddl.after_data.iter().any(|s| s
            .contains("ALTER TABLE \"Order Details\" ADD CONSTRAINT")
            && s.contains("CHECK (\"Quantity\" > (0))")));
        let pos = |n: &str| p.tables.iter().position(|t| t.name == n).unwrap();
        assert!(pos("Orders") < pos("Order Details") && pos("Shippers") < pos("Orders"));
    }

    #[test]
    fn sakila_plan() {
        let p = plan("sqlite-sakila/sakila.db");
        assert_eq!(p.tables.len(), 16);
        assert_eq!(
            p.tables.iter().map(|t| t.foreign_keys.len()).sum::<usize>(),
            22
        );
        assert_eq!(p.cycles.len(), 1);
        let mut cycle = p.cycles[0].clone();
        cycle.sort();
        assert_eq!(cycle, ["staff", "store"]);
        assert_eq!(
            p.untranslated
                .iter()
                .filter(|u| u.kind == "trigger")
                .count(),
            3
        );
        assert_eq!(
            p.untranslated.iter().filter(|u| u.kind == "view").count(),
            7
        );
        assert_eq!(
            col(&p, "film", "rental_rate").translation.pg.sql(),
            "numeric(4,2)"
        );
        assert_eq!(
            col(&p, "film", "rental_rate").default.as_deref(),
            Some("4.99")
        );
        assert_eq!(
            col(&p, "film", "release_year").translation.pg,
            PgType::SmallInt
        );
        assert_eq!(col(&p, "film", "rating").translation.pg, PgType::Text);
        assert_eq!(
            col(&p, "film", "special_features").translation.pg,
            PgType::Text
        );
        assert_eq!(
            col(&p, "film", "language_id").translation.pg,
            PgType::BigInt
        );
        assert_eq!(
            col(&p, "customer", "active").translation.pg,
            PgType::Boolean
        );
        assert_eq!(
            col(&p, "customer", "active").default.as_deref(),
            Some("true")
        );
        assert_eq!(col(&p, "staff", "picture").translation.pg, PgType::Bytea);
        assert_eq!(
            col(&p, "rental", "rental_date").translation.pg,
            PgType::Timestamptz
        );
        assert_eq!(
            p.table("address").unwrap().sequence,
            Some(("address_id".into(), 606))
        );
        let ddl = p.ddl();
        assert!(ddl
            .after_data
            .iter()
            .any(|s| s.contains("ON DELETE SET NULL")));
        assert!(ddl
            .after_data
            .iter()
            .any(|s| s.contains("ON UPDATE CASCADE ON DELETE RESTRICT")));
        assert!(p.render().contains("foreign-key cycle"));
    }

    #[test]
    fn fixture_plan() {
        let p = Plan::build(&fixture(), "fixture", &CastRules::default()).unwrap();
        let users = p.table("users").unwrap();
        assert_eq!(
            col(&p, "users", "created_at").default.as_deref(),
            Some("to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
        );
        assert_eq!(col(&p, "users", "seen").default.as_deref(), Some("now()"));
        assert_eq!(col(&p, "users", "is_admin").translation.pg, PgType::Boolean);
        assert_eq!(
            col(&p, "users", "is_admin").default.as_deref(),
            Some("false")
        );
        assert_eq!(
            col(&p, "users", "settings_json").translation.pg,
            PgType::Jsonb
        );
        assert_eq!(col(&p, "users", "weird").translation.pg, PgType::Text);
        assert_eq!(users.uniques.len(), 1);
        assert!(users.notes.iter().any(|n| n.contains("COLLATE NOCASE")));
        assert_eq!(
            users.sequence,
            Some(("id".into(), 4)),
            "past sqlite_sequence (3), not max (2)"
        );
        let idx: Vec<&str> = users.indexes.iter().map(|(_, s)| s.as_str()).collect();
        assert!(
            idx.contains(&"CREATE INDEX \"users_lower_email\" ON \"users\" ((lower(\"email\")))"),
            "{idx:?}"
        );
        assert!(
            idx.contains(
                &"CREATE INDEX \"users_adult\" ON \"users\" (\"age\" DESC) WHERE \"age\" >= 18"
            ),
            "{idx:?}"
        );
        assert!(p
            .untranslated
            .iter()
            .any(|u| u.name == "users.users_glob" && u.reason.contains("GLOB")));
        assert_eq!(
            users.checks,
            [("users_check1".to_owned(), "\"age\" >= 0".to_owned())]
        );
        let amount = col(&p, "orders", "amount");
        assert_eq!(amount.translation.pg, PgType::BigInt);
        assert_eq!(amount.translation.nonconforming, 2, "'ten' and 2.5");
        let fk = &p.table("orders").unwrap().foreign_keys[0];
        assert_eq!(
            (fk.to.as_slice(), fk.on_delete.as_str()),
            (["id".to_owned()].as_slice(), "SET NULL")
        );
        assert_eq!(
            col(&p, "gen", "s").generated.as_deref(),
            Some("\"a\" + \"b\"")
        );
        assert_eq!(col(&p, "gen", "v").generated, None);
        assert!(p
            .untranslated
            .iter()
            .any(|u| u.name == "gen.v" && u.reason.contains("typeof")));
        assert_eq!(p.table("kv").unwrap().primary_key, ["k"]);
        assert!(
            !col(&p, "strict_t", "id").translation.identity
                || p.table("strict_t").unwrap().sequence.is_some()
        );
        let at = col(&p, "events", "at");
        assert_eq!(
            at.translation.pg,
            PgType::Text,
            "epoch numbers are not date-time text"
        );
        assert!(
            at.translation.warnings[0].contains("2 value(s)"),
            "{:?}",
            at.translation.warnings
        );
        assert_eq!(col(&p, "events", "day").translation.pg, PgType::Date);
        let flag = col(&p, "events", "flag");
        assert_eq!(
            (flag.translation.pg.clone(), flag.translation.nonconforming),
            (PgType::Boolean, 1)
        );
        assert!(p.render().contains("1 value(s) do not fit boolean"));
        let ddl = p.ddl();
        assert!(ddl
            .create
            .iter()
            .any(|s| s.contains("\"s\" bigint GENERATED ALWAYS AS (\"a\" + \"b\") STORED")));
        assert!(ddl
            .after_data
            .iter()
            .any(|s| s.contains("ADD CONSTRAINT \"users_email_key\" UNIQUE (\"email\")")));
    }
}
