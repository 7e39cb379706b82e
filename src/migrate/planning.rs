//! Planning a migration from its source: the [plan](super::plan) of the chosen tables (built from SQLite's
//! schema or PostgreSQL's catalog), names checked against what PostgreSQL keeps, the statements for the
//! target in the order the run needs them, and what the source already breaks. [`show_plan`] is what
//! `ferry migrate --plan` and `--ddl` print, for any front end to show.

use std::collections::BTreeMap;
use std::path::Path;

use super::conn::{Conn, Db};
use super::job::{load_rules, required, MigrateJob};
use super::plan::{Plan, Untranslated};
use super::report::{KeyViolation, ObjectCounts};
use super::types::{CastRules, PgType};
use crate::db::quote_ident;
use crate::env::Environment;
use crate::error::{Error, Result, Stage};

/// What `ferry migrate --plan` and `--ddl` show: the plan of the job's source, and its PostgreSQL DDL.
#[derive(Debug, Clone)]
pub struct PlanView {
    /// The plan: tables, types and why, keys, indexes, checks, sequences, what is not translated.
    pub plan: Plan,
}

impl PlanView {
    /// The plan as `--plan` prints it.
    pub fn render_plan(&self) -> String {
        self.plan.render()
    }

    /// The PostgreSQL statements as `--ddl` prints them, in their two phases.
    pub fn render_ddl(&self) -> String {
        let ddl = self.plan.ddl();
        let mut out = String::from("-- before the data\n");
        for stmt in &ddl.create {
            out.push_str(&format!("{stmt};\n"));
        }
        out.push_str("-- after the data\n");
        for stmt in &ddl.after_data {
            out.push_str(&format!("{stmt};\n"));
        }
        out
    }
}

/// Plans the job's source (`from`, or a resumed run's state's source) with its tables, exclusions and
/// cast rules, touching no target.
pub fn show_plan(job: &MigrateJob, env: &Environment) -> Result<PlanView> {
    let mut job = job.clone();
    if job.resume && job.from.is_none() {
        job.from = Some(super::state::State::load(&job.state)?.source);
    }
    let rules = load_rules(job.cast_rules.as_ref())?;
    let db = Db::parse(required(&job.from, "source", "--from")?, "--from", env)?;
    let mut conn = db.open(&job.connect, false)?;
    let plan = build_plan(
        &mut conn,
        &db.label(),
        &rules,
        &job.tables,
        &job.exclude,
        job.jobs.max(1),
    )?;
    Ok(PlanView { plan })
}

// Planning

/// Builds the plan from the source and keeps the chosen tables.
pub fn build_plan(
    source: &mut Conn,
    label: &str,
    rules: &CastRules,
    only: &[String],
    exclude: &[String],
    jobs: usize,
) -> Result<Plan> {
    let mut plan = match source {
        Conn::Sqlite(c) => match c.path().filter(|p| !p.is_empty()) {
            Some(path) => Plan::build_parallel(Path::new(path), label, rules, jobs)?,
            None => Plan::build(c, label, rules)?,
        },
        Conn::Postgres(c) => super::pg_schema::read_plan(c, "public", label)?,
    };
    for name in only.iter().chain(exclude) {
        if plan.table(name).is_none() {
            return Err(Error::config(format!(
                "{label} has no table {}",
                quote_ident(name)
            )));
        }
    }
    plan.tables
        .retain(|t| (only.is_empty() || only.contains(&t.name)) && !exclude.contains(&t.name));
    let kept: Vec<String> = plan.tables.iter().map(|t| t.name.clone()).collect();
    for t in &mut plan.tables {
        let table = t.name.clone();
        t.foreign_keys.retain(|fk| {
            let keep = kept.contains(&fk.table);
            if !keep {
                plan.untranslated.push(Untranslated {
                    kind: "foreign key",
                    name: format!("{table}.{}", fk.name),
                    reason: format!("references {}, which is not migrated", fk.table),
                });
            }
            keep
        });
    }
    if matches!(source, Conn::Sqlite(_)) {
        fit_postgres_names(&mut plan, label)?;
    }
    Ok(plan)
}

/// PostgreSQL cuts names longer than 63 bytes silently, so two long names could become one: a table or
/// column of the plan with such a name stops the migration before anything is written (rename it in the
/// source, or leave the table out with `--exclude`), and a view with one is not created (listed with the
/// reason). Index and constraint names ferry shortens itself (see the plan's notes).
fn fit_postgres_names(plan: &mut Plan, label: &str) -> Result<()> {
    for t in &plan.tables {
        let columns = t.columns.iter().map(|c| (c.name.as_str(), true));
        for (name, is_column) in std::iter::once((t.name.as_str(), false)).chain(columns) {
            let Some(why) = crate::db::unfit_name(name, true) else {
                continue;
            };
            let what = match is_column {
                true => format!(
                    "column {} of table {}",
                    quote_ident(name),
                    quote_ident(&t.name)
                ),
                false => format!("table {}", quote_ident(name)),
            };
            return Err(Error::config(format!(
                "{label}: the name of {what} {why}; rename it in the source, or leave the table out with --exclude"
            )));
        }
    }
    let mut refused = Vec::new();
    plan.views
        .retain(|(name, _)| match crate::db::unfit_name(name, true) {
            Some(why) => {
                refused.push((name.clone(), why));
                false
            }
            None => true,
        });
    for (name, why) in refused {
        for u in &mut plan.untranslated {
            if u.kind == "view" && u.name == name {
                u.reason = format!("its name {why}");
            }
        }
    }
    Ok(())
}

/// PostgreSQL types ferry cannot encode (named in `--cast-rules`) are loaded as text and converted after the
/// data; returns those conversions.
fn text_first(plan: &mut Plan) -> Vec<String> {
    let mut alters = Vec::new();
    for t in &mut plan.tables {
        for c in &mut t.columns {
            if let PgType::Other(ty) = &c.translation.pg {
                alters.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {} TYPE {ty} USING {}::{ty}",
                    quote_ident(&t.name),
                    quote_ident(&c.name),
                    quote_ident(&c.name)
                ));
                c.translation.pg = PgType::Text;
            }
        }
    }
    alters
}

/// The statements of a plan for the target.
pub(crate) struct TargetDdl {
    /// Tables, before the data.
    pub create: Vec<String>,
    /// Each table's keys, indexes and checks (in plan order), run in its transaction after its rows.
    pub per_table: Vec<Vec<String>>,
    /// Foreign keys, sequences, type conversions and (SQLite) indexes, once every table is loaded.
    pub last: Vec<String>,
}

pub(crate) fn target_ddl(plan: &mut Plan, postgres: bool) -> TargetDdl {
    if postgres {
        let alters = text_first(plan);
        let ddl = plan.ddl();
        let mut last = alters;
        last.extend(ddl.last);
        TargetDdl {
            create: ddl.create,
            per_table: ddl.per_table,
            last,
        }
    } else {
        let is_index = |s: &String| {
            let upper = s.trim_start().to_ascii_uppercase();
            upper.starts_with("CREATE INDEX") || upper.starts_with("CREATE UNIQUE INDEX")
        };
        let (last, create) = super::sqlite_ddl::sqlite_ddl(plan)
            .into_iter()
            .partition(is_index);
        TargetDdl {
            create,
            per_table: vec![Vec::new(); plan.tables.len()],
            last,
        }
    }
}

pub(crate) fn count_objects(plan: &Plan) -> ObjectCounts {
    let mut o = ObjectCounts {
        tables: plan.tables.len(),
        ..ObjectCounts::default()
    };
    for t in &plan.tables {
        o.primary_keys += usize::from(!t.primary_key.is_empty());
        o.uniques += t.uniques.len();
        o.indexes += t.indexes.len();
        o.checks += t.checks.len();
        o.foreign_keys += t.foreign_keys.len();
        o.sequences += usize::from(t.sequence.is_some());
        o.not_null += t.columns.iter().filter(|c| c.not_null).count();
        o.defaults += t.columns.iter().filter(|c| c.default.is_some()).count();
    }
    o
}

/// Foreign-key violations already in a SQLite source (`PRAGMA foreign_key_check`), by (table, parent).
pub(crate) fn source_key_violations(source: &mut Conn, plan: &Plan) -> Result<Vec<KeyViolation>> {
    let Conn::Sqlite(conn) = source else {
        return Ok(Vec::new());
    };
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in &plan.tables {
        if t.foreign_keys.is_empty() {
            continue;
        }
        let fail = |e: rusqlite::Error| {
            crate::db::sqlite::sql_error(
                Stage::Source,
                "source",
                &format!("foreign_key_check on {}", t.name),
                e,
            )
        };
        let mut statement = conn
            .prepare("SELECT parent FROM pragma_foreign_key_check(?1)")
            .map_err(fail)?;
        let parents = statement
            .query_map([&t.name], |r| r.get::<_, String>(0))
            .map_err(fail)?;
        for parent in parents {
            let parent = parent.map_err(fail)?;
            *counts.entry((t.name.clone(), parent)).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|((table, references), rows)| KeyViolation {
            table,
            references,
            rows,
            found_in: "source",
        })
        .collect())
}
