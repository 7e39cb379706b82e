//! Running a migration: plan → (backup) → create tables → copy rows (tables in parallel) → keys, indexes,
//! constraints and sequences → validate, with a [state file](super::state) written at every step so a
//! killed run resumes and a finished one can be rolled back. Either database may be the source or the
//! target; the [plan](super::plan) is built from the source and its PostgreSQL types are the common
//! language of both directions.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use postgres::Client;
use rusqlite::Connection;
use serde::Serialize;

use super::catalog::{self, Object};
use super::plan::Plan;
use super::rows::{loader, scan, CopyTable, Misfit, Side};
use super::state::{without_password, Phase, State, TableDone};
use super::types::{CastRules, PgType};
use super::value::TableChecksum;
use crate::db::{quote_ident, ConnectOptions, DbEndpoint};
use crate::envelope::KeySource;
use crate::error::{Error, Position, Result, Stage};
use crate::pipeline::ErrorPolicy;

/// One `ferry migrate` run, as the command line gave it.
#[derive(Debug, Clone)]
pub struct MigrateJob {
    /// `--from`: the source database.
    pub from: String,
    /// `--to`: the target database.
    pub to: String,
    /// `--tables`: only these (empty: all).
    pub tables: Vec<String>,
    /// `--exclude`: not these.
    pub exclude: Vec<String>,
    /// `--schema-only`: create the schema, copy no rows.
    pub schema_only: bool,
    /// `--data-only`: copy rows into tables that already exist.
    pub data_only: bool,
    /// `--dry-run`: do everything in one transaction and roll it back.
    pub dry_run: bool,
    /// `--jobs`: tables copied at once.
    pub jobs: usize,
    /// `--on-error`: what a value that does not fit its column does.
    pub on_error: ErrorPolicy,
    /// Where per-table rejects files go.
    pub rejects_dir: PathBuf,
    /// `--validate` (on unless `--no-validate`).
    pub validate: bool,
    /// `--backup DIR`.
    pub backup: Option<PathBuf>,
    /// Encrypt the backup with this key.
    pub backup_key: Option<KeySource>,
    /// The state file.
    pub state: PathBuf,
    /// `--resume`: continue the migration the state file describes.
    pub resume: bool,
    /// `--cast-rules`.
    pub cast_rules: Option<PathBuf>,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
    /// Print progress per table on stderr.
    pub progress: bool,
}

/// What one table's migration did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    /// The table.
    pub name: String,
    /// Rows read from the source.
    pub read: u64,
    /// Rows written to the target.
    pub written: u64,
    /// Rows sent to the rejects file.
    pub rejected: u64,
    /// The rejects file, when rows were rejected.
    pub rejects_file: Option<String>,
    /// Checksum of the written rows, computed from the source.
    pub source_checksum: Option<String>,
    /// Checksum of the table as read back from the target.
    pub target_checksum: Option<String>,
    /// Rows read back from the target.
    pub target_rows: Option<u64>,
    /// Rows and checksum agree (None: not validated).
    pub equal: Option<bool>,
    /// Copied by an earlier, interrupted run.
    pub resumed: bool,
    /// Seconds spent copying.
    pub seconds: f64,
}

/// A schema object that could not be created, or only as `NOT VALID`.
#[derive(Debug, Clone, Serialize)]
pub struct NotCreated {
    /// The statement.
    pub statement: String,
    /// The database's reason.
    pub reason: String,
    /// Created `NOT VALID` instead (enforced for new rows; the existing ones are listed).
    pub not_valid: bool,
}

/// Rows breaking a foreign key.
#[derive(Debug, Clone, Serialize)]
pub struct KeyViolation {
    /// The referencing table.
    pub table: String,
    /// The referenced table.
    pub references: String,
    /// Rows whose key has no parent.
    pub rows: u64,
    /// Where it was found: `source` (before the copy) or `target` (after it).
    pub found_in: &'static str,
}

/// Schema objects of the migrated tables.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ObjectCounts {
    /// Tables.
    pub tables: usize,
    /// Primary keys.
    pub primary_keys: usize,
    /// UNIQUE constraints.
    pub uniques: usize,
    /// Secondary indexes.
    pub indexes: usize,
    /// CHECK constraints.
    pub checks: usize,
    /// Foreign keys.
    pub foreign_keys: usize,
    /// NOT NULL columns.
    pub not_null: usize,
    /// Columns with defaults.
    pub defaults: usize,
    /// Identity sequences.
    pub sequences: usize,
    /// Views created on the target.
    pub views: usize,
}

/// What a migration did: `--report` writes it as JSON, and its summary goes to stderr.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// The source (no password).
    pub source: String,
    /// The target (no password).
    pub target: String,
    /// A dry run (everything rolled back).
    pub dry_run: bool,
    /// `--on-error`.
    pub on_error: String,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Rows read.
    pub read: u64,
    /// Rows written.
    pub written: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Schema objects created.
    pub objects: ObjectCounts,
    /// Objects not translated, with the reason.
    pub untranslated: Vec<super::plan::Untranslated>,
    /// Statements that failed or were created `NOT VALID`.
    pub not_created: Vec<NotCreated>,
    /// Foreign-key violations found.
    pub key_violations: Vec<KeyViolation>,
    /// Every table validated equal and no key violated (None: not validated).
    pub valid: Option<bool>,
    /// The state file.
    pub state_file: Option<String>,
    /// The backup manifest.
    pub backup: Option<String>,
    /// Seconds for the whole run.
    pub seconds: f64,
}

impl MigrateReport {
    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::usage(format!("cannot encode the report: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Error::io(Stage::Sink, Some(&path.display().to_string()), e))
    }

    /// The closing summary: `read = written + rejected`, objects, validation.
    pub fn summary(&self) -> String {
        let o = &self.objects;
        let verb = if self.dry_run {
            "would migrate"
        } else {
            "migrated"
        };
        let mut out = format!(
            "{verb} {} tables: {} rows read = {} written + {} rejected\n\
             schema: {} primary keys, {} unique, {} indexes, {} checks, {} foreign keys, {} not-null columns, {} defaults, {} sequences, {} views",
            o.tables, self.read, self.written, self.rejected, o.primary_keys, o.uniques, o.indexes,
            o.checks, o.foreign_keys, o.not_null, o.defaults, o.sequences, o.views
        );
        if !self.untranslated.is_empty() {
            out.push_str(&format!("\nnot translated ({}):", self.untranslated.len()));
            for u in &self.untranslated {
                out.push_str(&format!("\n  {} {}: {}", u.kind, u.name, u.reason));
            }
        }
        for n in &self.not_created {
            let what = if n.not_valid {
                "created NOT VALID"
            } else {
                "not created"
            };
            out.push_str(&format!("\n{what}: {} ({})", n.statement, n.reason));
        }
        for v in &self.key_violations {
            out.push_str(&format!(
                "\nforeign key {} → {}: {} row(s) without a parent (in the {})",
                quote_ident(&v.table),
                quote_ident(&v.references),
                v.rows,
                v.found_in
            ));
        }
        match self.valid {
            Some(true) => out.push_str("\nvalidation: every table has equal rows and checksums"),
            Some(false) => {
                let bad: Vec<&str> = self
                    .tables
                    .iter()
                    .filter(|t| t.equal == Some(false))
                    .map(|t| t.name.as_str())
                    .collect();
                out.push_str(&format!(
                    "\nvalidation FAILED: {} table(s) differ ({}), {} key violation(s); see `ferry diff`",
                    bad.len(),
                    bad.join(", "),
                    self.key_violations.len()
                ));
            }
            None => {}
        }
        if let Some(state) = &self.state_file {
            out.push_str(&format!(
                "\nstate: {state} (ferry migrate --rollback {state} undoes it)"
            ));
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------------------
// Databases

/// A database the migration reads or writes.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(DbEndpoint),
}

/// An open connection.
pub enum Conn {
    /// SQLite.
    Sqlite(Connection),
    /// PostgreSQL.
    Postgres(Client),
}

impl Db {
    /// Parses `--from`/`--to`.
    pub fn parse(text: &str, flag: &str) -> Result<Db> {
        let endpoint = DbEndpoint::parse(text)?.ok_or_else(|| {
            Error::usage(format!(
                "{flag} {text}: not a database (sqlite://PATH, a .db path, postgres://… or `postgres`)"
            ))
        })?;
        if endpoint.table.is_some() || endpoint.query.is_some() {
            return Err(Error::usage(format!(
                "{flag}: migrate moves whole databases; choose tables with --tables, not ?table= or ?query="
            )));
        }
        Ok(match endpoint.database.name {
            "sqlite" => Db::Sqlite(PathBuf::from(endpoint.connection())),
            _ => Db::Postgres(endpoint),
        })
    }

    /// How the database is shown (never with a password).
    pub fn label(&self) -> String {
        match self {
            Db::Sqlite(path) => path.display().to_string(),
            Db::Postgres(endpoint) => endpoint.to_string(),
        }
    }

    /// Opens a connection: read-only for a SQLite source; a SQLite target is created when missing.
    pub fn open(&self, connect: &ConnectOptions, write: bool) -> Result<Conn> {
        match self {
            Db::Sqlite(path) if !write => Ok(Conn::Sqlite(super::introspect::open(path)?)),
            Db::Sqlite(path) => {
                let conn = Connection::open(path)
                    .map_err(|e| Error::usage(format!("cannot open {}: {e}", path.display())))?;
                conn.busy_timeout(std::time::Duration::from_secs(30))
                    .and_then(|()| conn.execute_batch("PRAGMA foreign_keys = OFF"))
                    .map_err(|e| Error::usage(format!("{}: {e}", path.display())))?;
                Ok(Conn::Sqlite(conn))
            }
            Db::Postgres(endpoint) => {
                let stage = if write { Stage::Sink } else { Stage::Source };
                let mut client = crate::db::postgres::connect(endpoint, connect, stage)?;
                // Date-time text without an offset is UTC, and no statement may hang forever on a lock.
                client
                    .batch_execute(
                        "SET TimeZone = 'UTC'; SET lock_timeout = '60s'; SET maintenance_work_mem = '256MB'",
                    )
                    .map_err(|e| crate::db::postgres::pg_error(stage, "cannot set up", &e))?;
                Ok(Conn::Postgres(client))
            }
        }
    }
}

impl Conn {
    pub(crate) fn side(&mut self) -> Side<'_> {
        match self {
            Conn::Sqlite(c) => Side::Sqlite(c),
            Conn::Postgres(c) => Side::Postgres(c),
        }
    }

    fn exec(&mut self, sql: &str) -> std::result::Result<(), String> {
        match self {
            Conn::Sqlite(c) => c.execute_batch(sql).map_err(|e| e.to_string()),
            Conn::Postgres(c) => c.batch_execute(sql).map_err(|e| match e.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => e.to_string(),
            }),
        }
    }

    fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(_))
    }

    /// Which of `names` exist as tables.
    pub(crate) fn existing_tables(&mut self, names: &[String]) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for name in names {
            let exists = match self {
                Conn::Sqlite(c) => c
                    .query_row(
                        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                        [name],
                        |r| r.get::<_, i64>(0),
                    )
                    .map(|n| n > 0)
                    .map_err(|e| Error::usage(format!("cannot read the target's tables: {e}")))?,
                Conn::Postgres(c) => c
                    .query_one("SELECT to_regclass(quote_ident($1)) IS NOT NULL", &[name])
                    .map(|r| r.get::<_, bool>(0))
                    .map_err(|e| {
                        crate::db::postgres::pg_error(
                            Stage::Sink,
                            "cannot read the target's tables",
                            &e,
                        )
                    })?,
            };
            if exists {
                found.push(name.clone());
            }
        }
        Ok(found)
    }

    /// Which of `names` (existing tables) hold rows.
    fn tables_with_rows(&mut self, names: &[String]) -> Result<Vec<String>> {
        let mut filled = Vec::new();
        for name in names {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT 1) AS t",
                quote_ident(name)
            );
            let rows = match self {
                Conn::Sqlite(c) => c
                    .query_row(&sql, [], |r| r.get::<_, i64>(0))
                    .map_err(|e| Error::usage(format!("cannot read the target's tables: {e}")))?,
                Conn::Postgres(c) => {
                    c.query_one(&sql, &[])
                        .map(|r| r.get::<_, i64>(0))
                        .map_err(|e| {
                            crate::db::postgres::pg_error(
                                Stage::Sink,
                                "cannot read the target's tables",
                                &e,
                            )
                        })?
                }
            };
            if rows > 0 {
                filled.push(name.clone());
            }
        }
        Ok(filled)
    }

    fn begin(&mut self) -> std::result::Result<(), String> {
        self.exec(if self.is_postgres() {
            "BEGIN"
        } else {
            "BEGIN IMMEDIATE"
        })
    }

    fn rollback(&mut self) {
        let _ = self.exec("ROLLBACK");
    }
}

fn target_error(label: &str, what: &str, reason: &str) -> Error {
    Error::data(
        Stage::Sink,
        Position::file(label),
        format!("{label}: {what}: {reason}"),
    )
}

// ---------------------------------------------------------------------------------------------------------
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
            return Err(Error::usage(format!(
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
                plan.untranslated.push(super::plan::Untranslated {
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
            return Err(Error::usage(format!(
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
struct TargetDdl {
    /// Tables, before the data.
    create: Vec<String>,
    /// Each table's keys, indexes and checks (in plan order), run in its transaction after its rows.
    per_table: Vec<Vec<String>>,
    /// Foreign keys, sequences, type conversions and (SQLite) indexes, once every table is loaded.
    last: Vec<String>,
}

fn target_ddl(plan: &mut Plan, postgres: bool) -> TargetDdl {
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
        let (last, create) = super::pg_schema::sqlite_ddl(plan)
            .into_iter()
            .partition(is_index);
        TargetDdl {
            create,
            per_table: vec![Vec::new(); plan.tables.len()],
            last,
        }
    }
}

fn count_objects(plan: &Plan) -> ObjectCounts {
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
fn source_key_violations(source: &mut Conn, plan: &Plan) -> Result<Vec<KeyViolation>> {
    let Conn::Sqlite(conn) = source else {
        return Ok(Vec::new());
    };
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in &plan.tables {
        if t.foreign_keys.is_empty() {
            continue;
        }
        let fail =
            |e: rusqlite::Error| Error::usage(format!("foreign_key_check on {}: {e}", t.name));
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

// ---------------------------------------------------------------------------------------------------------
// Copying

/// Where rejected rows go: `<dir>/<table>.rejects.ndjson`, made only when a row is rejected.
struct Rejects {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

/// A file name stem for a table: table names may hold anything, the stem keeps ASCII letters, digits, `-`
/// and `_` (others become `_`), so a file stays in the directory the user chose.
pub(crate) fn file_stem(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Rejects {
    fn new(dir: &Path, table: &str) -> Rejects {
        let safe = file_stem(table);
        Rejects {
            path: dir.join(format!("{safe}.rejects.ndjson")),
            file: None,
        }
    }

    fn write(&mut self, table: &str, misfit: &Misfit) -> Result<()> {
        let shown = self.path.display().to_string();
        let io = |e| Error::io(Stage::Sink, Some(&shown), e);
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            self.file = Some(std::io::BufWriter::new(
                std::fs::File::create(&self.path).map_err(io)?,
            ));
        }
        let line = serde_json::json!({
            "table": table,
            "row": misfit.row,
            "column": misfit.column,
            "value": misfit.value,
            "reason": misfit.reason,
            "record": misfit.record,
        });
        if let Some(file) = self.file.as_mut() {
            writeln!(file, "{line}").map_err(io)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<String>> {
        let shown = self.path.display().to_string();
        match self.file {
            Some(mut f) => {
                f.flush()
                    .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
                Ok(Some(shown))
            }
            None => Ok(None),
        }
    }
}

fn misfit_error(label: &str, table: &str, m: &Misfit) -> Error {
    Error::data(
        Stage::Decode,
        Position::file(label)
            .with_record(u64::try_from(m.row).unwrap_or(0))
            .with_field(m.column.clone()),
        format!(
            "table {}, row {}, column {}: {}: {}; --on-error lenient sends such rows to a rejects file",
            quote_ident(table),
            m.row,
            quote_ident(&m.column),
            m.value,
            m.reason
        ),
    )
}

struct Copied {
    done: TableDone,
    rejects_file: Option<String>,
    seconds: f64,
    /// Keys and checks that failed or were added NOT VALID (lenient runs).
    not_created: Vec<NotCreated>,
    /// The table as read back from the target (when validating).
    target: Option<TableChecksum>,
}

struct CopyContext<'a> {
    source_label: &'a str,
    target_label: &'a str,
    policy: ErrorPolicy,
    rejects_dir: &'a Path,
    /// The table was made by this migration: empty it first (a resumed table) and let PostgreSQL skip
    /// its row-visibility work (`COPY … FREEZE`).
    fresh: bool,
    /// Run inside the caller's transaction (a dry run) rather than one per table.
    own_transaction: bool,
    /// Read each table back after its copy.
    validate: bool,
    /// The target, for the extra connections that read a big table back in parallel.
    target_db: &'a Db,
    /// Connection options for those.
    connect: &'a ConnectOptions,
    /// Connections a read-back may use at once.
    jobs: usize,
    /// A resumed run: keys, indexes and checks the interrupted run committed with the rows are skipped.
    resume: bool,
    /// A resumed `--data-only` run: its tables were empty when the migration began, so rows in a table
    /// not finished are the interrupted copy's, deleted before it is loaded again.
    reload: bool,
}

/// Copies one table and adds its keys, indexes and checks: all of it commits, or none. Then reads it
/// back for validation when asked.
fn copy_table(
    source: &mut Conn,
    target: &mut Conn,
    table: &CopyTable,
    statements: &[String],
    cx: &CopyContext<'_>,
) -> Result<Copied> {
    let started = Instant::now();
    let fail = |reason: String| {
        target_error(
            cx.target_label,
            &format!("loading table {}", quote_ident(&table.name)),
            &reason,
        )
    };
    if cx.own_transaction {
        target.begin().map_err(fail)?;
    }
    let result = copy_rows(source, target, table, cx).and_then(|mut copied| {
        let statements = missing(target, statements, cx.resume)?;
        copied.not_created = run_statements(target, &statements, cx.policy, cx.target_label)?;
        Ok(copied)
    });
    let mut copied = match result {
        Ok(copied) => copied,
        Err(e) => {
            if cx.own_transaction {
                target.rollback();
            }
            return Err(e);
        }
    };
    if cx.own_transaction {
        target.exec("COMMIT").map_err(fail)?;
    }
    copied.seconds = started.elapsed().as_secs_f64();
    if cx.validate {
        copied.target = Some(parallel_checksum(target, cx, table)?);
    }
    Ok(copied)
}

/// Runs after-data statements on the caller's transaction. Strict: the first failure fails. Otherwise
/// each runs under a savepoint, and a CHECK or foreign key the data breaks is added `NOT VALID` (enforced
/// for new rows) and reported.
fn run_statements(
    target: &mut Conn,
    statements: &[String],
    policy: ErrorPolicy,
    label: &str,
) -> Result<Vec<NotCreated>> {
    let mut not_created = Vec::new();
    for s in statements {
        if policy == ErrorPolicy::Strict || !target.is_postgres() {
            target.exec(s).map_err(|r| target_error(label, s, &r))?;
            continue;
        }
        if let Err(reason) = savepoint(target, s) {
            let can_defer = s.contains(" CHECK (") || s.contains(" FOREIGN KEY (");
            let retried = can_defer && savepoint(target, &format!("{s} NOT VALID")).is_ok();
            not_created.push(NotCreated {
                statement: s.clone(),
                reason,
                not_valid: retried,
            });
        } else if s.ends_with(" NOT VALID") {
            not_created.push(NotCreated {
                statement: s.clone(),
                reason: "the source already breaks this key".into(),
                not_valid: true,
            });
        }
    }
    Ok(not_created)
}

fn copy_rows(
    source: &mut Conn,
    target: &mut Conn,
    table: &CopyTable,
    cx: &CopyContext<'_>,
) -> Result<Copied> {
    let fresh_freeze = cx.fresh && cx.own_transaction && target.is_postgres();
    if cx.fresh || cx.reload {
        // A reload keeps DELETE: TRUNCATE refuses a table other tables' foreign keys point at.
        let empty = if cx.fresh && target.is_postgres() {
            format!("TRUNCATE {}", quote_ident(&table.name))
        } else {
            format!("DELETE FROM {}", quote_ident(&table.name))
        };
        target.exec(&empty).map_err(|r| {
            target_error(
                cx.target_label,
                &format!("emptying {}", quote_ident(&table.name)),
                &r,
            )
        })?;
    }
    let mut rejects = Rejects::new(cx.rejects_dir, &table.name);
    let mut checksum = TableChecksum::default();
    let mut read = 0u64;
    let mut rejected = 0u64;
    let mut target_side = target.side();
    let mut load = loader(&mut target_side, cx.target_label, table, fresh_freeze)?;
    // Without validation nothing is hashed, so JSON is only checked, never built.
    let unhashed = CopyTable {
        hashed: cx.validate,
        ..table.clone()
    };
    scan(&mut source.side(), cx.source_label, &unhashed, &mut |row| {
        read += 1;
        match row {
            Ok(values) => {
                if cx.validate {
                    checksum.add(&values);
                }
                load.push(&values)?;
            }
            Err(m) if cx.policy == ErrorPolicy::Strict => {
                return Err(misfit_error(cx.source_label, &table.name, &m))
            }
            Err(m) => {
                rejected += 1;
                rejects.write(&table.name, &m)?;
            }
        }
        Ok(true)
    })?;
    let written = load.finish()?;
    Ok(Copied {
        done: TableDone {
            read,
            written,
            rejected,
            // Empty when not validating: nothing was hashed.
            checksum: if cx.validate {
                checksum.hex()
            } else {
                String::new()
            },
        },
        rejects_file: rejects.finish()?,
        seconds: 0.0,
        not_created: Vec::new(),
        target: None,
    })
}

/// Tables of more pages than this are read back by up to `--jobs` connections at once (each a TID range);
/// the checksum is order-independent, so the parts just add up.
const PARALLEL_READ_PAGES: u64 = 2048;

fn parallel_checksum(
    target: &mut Conn,
    cx: &CopyContext<'_>,
    table: &CopyTable,
) -> Result<TableChecksum> {
    // Other connections cannot see a dry run's uncommitted rows.
    let pages = match target {
        Conn::Postgres(client) if cx.jobs > 1 && cx.own_transaction => client
            .query_one(
                "SELECT (pg_relation_size(quote_ident($1)) / current_setting('block_size')::bigint)::bigint",
                &[&table.name],
            )
            .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
            .unwrap_or(0),
        _ => 0,
    };
    if pages < PARALLEL_READ_PAGES {
        return target_checksum(target, cx.target_label, table);
    }
    let parts = cx.jobs as u64;
    let part = |i: u64| {
        let mut t = table.clone();
        // The last part reads to the end, whatever the table has grown to.
        let to = if i + 1 == parts {
            u64::from(u32::MAX)
        } else {
            pages * (i + 1) / parts
        };
        t.pages = Some((pages * i / parts, to));
        t
    };
    let mut sum = TableChecksum::default();
    std::thread::scope(|s| {
        let others: Vec<_> = (1..parts)
            .map(|i| {
                let t = part(i);
                s.spawn(move || {
                    let mut conn = cx.target_db.open(cx.connect, false)?;
                    target_checksum(&mut conn, cx.target_label, &t)
                })
            })
            .collect();
        let first = target_checksum(target, cx.target_label, &part(0));
        let mut result = first.map(|c| sum.merge(c));
        for handle in others {
            let joined = handle
                .join()
                .unwrap_or_else(|_| Err(Error::usage("a read-back thread stopped unexpectedly")));
            if result.is_ok() {
                result = joined.map(|c| sum.merge(c));
            }
        }
        result
    })?;
    Ok(sum)
}

/// Reads a table back from the target and checksums it.
fn target_checksum(target: &mut Conn, label: &str, table: &CopyTable) -> Result<TableChecksum> {
    let mut checksum = TableChecksum::default();
    let mut bad = None;
    scan(&mut target.side(), label, table, &mut |row| {
        match row {
            Ok(values) => checksum.add(&values),
            Err(m) => {
                bad = Some(format!(
                    "row {}, column {}: {}",
                    m.row,
                    quote_ident(&m.column),
                    m.reason
                ));
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    match bad {
        Some(reason) => Err(target_error(
            label,
            &format!("reading back {}", quote_ident(&table.name)),
            &reason,
        )),
        None => Ok(checksum),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The run

fn say(progress: bool, line: &str) {
    if progress {
        eprintln!("{line}");
    }
}

/// Runs a migration (or resumes one).
pub fn migrate(job: &MigrateJob) -> Result<MigrateReport> {
    let started = Instant::now();
    if job.schema_only && job.data_only {
        return Err(Error::usage(
            "--schema-only and --data-only exclude each other",
        ));
    }
    let mut state = prepare_state(job)?;
    // A resumed run finishes the migration its state describes, with the same schema choices.
    let resumed;
    let job = match job.resume {
        true => {
            resumed = MigrateJob {
                schema_only: state.schema_only,
                data_only: state.data_only,
                cast_rules: job.cast_rules.clone().or_else(|| state.cast_rules.clone()),
                ..job.clone()
            };
            &resumed
        }
        false => job,
    };
    let source_db = Db::parse(&job.from, "--from")?;
    let target_db = Db::parse(&job.to, "--to")?;
    if matches!(
        (&source_db, &target_db),
        (Db::Sqlite(_), Db::Sqlite(_)) | (Db::Postgres(_), Db::Postgres(_))
    ) {
        return Err(Error::usage(
            "ferry migrate moves SQLite to PostgreSQL or PostgreSQL to SQLite; for a copy within one \
             kind of database use its own tools (sqlite3 .backup, pg_dump | pg_restore)",
        ));
    }
    let source_label = source_db.label();
    let target_label = target_db.label();
    let rules = match &job.cast_rules {
        Some(path) => CastRules::load(path)?,
        None => CastRules::default(),
    };
    let mut source = source_db.open(&job.connect, false)?;
    say(
        job.progress,
        &format!("planning {source_label} → {target_label}"),
    );
    let only = if job.resume {
        state.tables.clone()
    } else {
        job.tables.clone()
    };
    let mut plan = build_plan(
        &mut source,
        &source_label,
        &rules,
        &only,
        &job.exclude,
        job.jobs,
    )?;
    let target_is_new_sqlite = matches!(&target_db, Db::Sqlite(p) if !p.exists());
    let ddl = target_ddl(&mut plan, matches!(target_db, Db::Postgres(_)));
    // A new SQLite target is only made once the state file says this migration makes it.
    let mut target = match target_is_new_sqlite && !job.dry_run {
        true => None,
        false => Some(target_db.open(&job.connect, true)?),
    };
    let tables: Vec<CopyTable> = plan.tables.iter().map(CopyTable::from_plan).collect();
    let names: Vec<String> = plan.tables.iter().map(|t| t.name.clone()).collect();

    let mut report = MigrateReport {
        source: without_password(&job.from),
        target: without_password(&job.to),
        dry_run: job.dry_run,
        on_error: job.on_error.name().into(),
        objects: count_objects(&plan),
        untranslated: plan.untranslated.clone(),
        ..MigrateReport::default()
    };

    let existing = match &mut target {
        Some(target) => target.existing_tables(&names)?,
        None => Vec::new(),
    };
    check_existing(job, &state, &names, &existing, &target_label)?;
    if let (true, false, Some(target)) = (job.data_only, job.resume, target.as_mut()) {
        // Rows already there would fail validation, and a resume could not tell them from its own.
        let filled = target.tables_with_rows(&names)?;
        if !filled.is_empty() {
            return Err(Error::usage(format!(
                "--data-only loads into empty tables (made by --schema-only), and {target_label} has rows in {}",
                filled.iter().map(|t| quote_ident(t)).collect::<Vec<_>>().join(", ")
            )));
        }
    }

    let violations = if job.schema_only {
        Vec::new()
    } else {
        source_key_violations(&mut source, &plan)?
    };
    if !violations.is_empty() && job.on_error == ErrorPolicy::Strict {
        let first = &violations[0];
        return Err(Error::data(
            Stage::Source,
            Position::file(&source_label),
            format!(
                "{source_label}: {} row(s) of {} reference missing rows of {} (and {} more such key(s)); \
                 nothing was written. --on-error lenient copies them and adds the key NOT VALID",
                first.rows,
                quote_ident(&first.table),
                quote_ident(&first.references),
                violations.len() - 1
            ),
        ));
    }
    let not_valid: Vec<(String, String)> = violations
        .iter()
        .map(|v| (v.table.clone(), v.references.clone()))
        .collect();
    report.key_violations.extend(violations);

    if let Some(dir) = &job.backup {
        if !job.dry_run && !job.resume {
            let manifest =
                super::backup::backup(&job.from, &source_db, &names, dir, job.backup_key.as_ref())?;
            say(job.progress, &format!("backup: {manifest}"));
            report.backup = Some(manifest);
        }
    }

    let run = Run {
        job,
        plan: &plan,
        tables: &tables,
        source_db: &source_db,
        target_db: &target_db,
        source_label: &source_label,
        target_label: &target_label,
        not_valid: &not_valid,
    };
    let outcome = match target.as_mut() {
        // A dry run always has its target open (a new SQLite file is made and removed below).
        Some(target) if job.dry_run => run.dry(&mut source, target, &ddl, &mut report),
        _ => {
            drop(target);
            state.created_file = state.created_file || target_is_new_sqlite;
            run.real(&mut state, &ddl, &mut report)
        }
    };
    if job.dry_run && target_is_new_sqlite {
        if let Db::Sqlite(path) = &target_db {
            let _ = std::fs::remove_file(path);
        }
    }
    outcome?;
    report.read = report.tables.iter().map(|t| t.read).sum();
    report.written = report.tables.iter().map(|t| t.written).sum();
    report.rejected = report.tables.iter().map(|t| t.rejected).sum();
    report.seconds = started.elapsed().as_secs_f64();
    if !job.dry_run {
        report.state_file = Some(job.state.display().to_string());
    }
    Ok(report)
}

fn prepare_state(job: &MigrateJob) -> Result<State> {
    let shown = job.state.display().to_string();
    if job.resume {
        let state = State::load(&job.state)?;
        if state.phase.is_final() {
            return Err(Error::usage(format!(
                "{shown}: that migration is {}; there is nothing to resume",
                if state.phase == Phase::Done {
                    "finished"
                } else {
                    "rolled back"
                }
            )));
        }
        if without_password(&job.from) != state.source || without_password(&job.to) != state.target
        {
            return Err(Error::usage(format!(
                "{shown} is the state of {} → {}, not of this --from/--to",
                state.source, state.target
            )));
        }
        return Ok(state);
    }
    if !job.dry_run && job.state.exists() {
        let old = State::load(&job.state)?;
        if !old.phase.is_final() {
            return Err(Error::usage(format!(
                "{shown} holds an unfinished migration ({} → {}): continue it with --resume {shown}, \
                 undo it with --rollback {shown}, or choose another --state",
                old.source, old.target
            )));
        }
    }
    Ok(State {
        source: without_password(&job.from),
        target: without_password(&job.to),
        schema_only: job.schema_only,
        data_only: job.data_only,
        cast_rules: job.cast_rules.clone(),
        ..State::default()
    })
}

fn check_existing(
    job: &MigrateJob,
    state: &State,
    names: &[String],
    existing: &[String],
    target_label: &str,
) -> Result<()> {
    if job.data_only {
        let missing: Vec<&String> = names.iter().filter(|n| !existing.contains(n)).collect();
        if !missing.is_empty() {
            return Err(Error::usage(format!(
                "--data-only: {target_label} has no table {}; create the schema first (--schema-only)",
                missing.iter().map(|m| quote_ident(m)).collect::<Vec<_>>().join(", ")
            )));
        }
        return Ok(());
    }
    let foreign: Vec<String> = existing
        .iter()
        .filter(|n| !(job.resume && state.created_tables.contains(n)))
        .map(|n| quote_ident(n))
        .collect();
    if !foreign.is_empty() {
        return Err(Error::usage(format!(
            "{target_label} already has table(s) {}; ferry migrate creates its tables and leaves existing ones alone: \
             drop them, leave them out with --exclude, or load into them with --data-only",
            foreign.join(", ")
        )));
    }
    Ok(())
}

struct Run<'a> {
    job: &'a MigrateJob,
    plan: &'a Plan,
    tables: &'a [CopyTable],
    source_db: &'a Db,
    target_db: &'a Db,
    source_label: &'a str,
    target_label: &'a str,
    not_valid: &'a [(String, String)],
}

impl Run<'_> {
    fn context(&self, own_transaction: bool) -> CopyContext<'_> {
        CopyContext {
            source_label: self.source_label,
            target_label: self.target_label,
            policy: self.job.on_error,
            rejects_dir: &self.job.rejects_dir,
            fresh: !self.job.data_only,
            own_transaction,
            validate: self.job.validate,
            target_db: self.target_db,
            connect: &self.job.connect,
            jobs: self.job.jobs.max(1),
            resume: self.job.resume,
            reload: self.job.data_only && self.job.resume,
        }
    }

    /// A dry run: one connection each, one transaction, rolled back at the end.
    fn dry(
        &self,
        source: &mut Conn,
        target: &mut Conn,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let fail = |r: String| target_error(self.target_label, "dry run", &r);
        target.begin().map_err(fail)?;
        let result = (|| {
            if !self.job.data_only {
                for s in &ddl.create {
                    target
                        .exec(s)
                        .map_err(|r| target_error(self.target_label, s, &r))?;
                }
            }
            if !self.job.schema_only {
                for (i, table) in self.tables.iter().enumerate() {
                    let copied = copy_table(
                        source,
                        target,
                        table,
                        self.own_statements(ddl, i),
                        &self.context(false),
                    )?;
                    say(self.job.progress, &table_line(&table.name, &copied, false));
                    report
                        .not_created
                        .extend(copied.not_created.iter().cloned());
                    report
                        .tables
                        .push(table_report(&table.name, &copied, false));
                }
            }
            self.after_data(target, &mut State::default(), ddl, report)?;
            if self.job.validate && !self.job.schema_only {
                self.validate(target, report)?;
            }
            Ok(())
        })();
        target.rollback();
        result
    }

    /// A real run: tables created and committed, each table copied and committed by a worker, the state
    /// file kept before and after every step. A failed first run drops what it created; a failed resumed
    /// run drops nothing (an earlier run finished some of it), so it can be resumed again or rolled back.
    fn real(&self, state: &mut State, ddl: &TargetDdl, report: &mut MigrateReport) -> Result<()> {
        let result = self.real_steps(state, ddl, report);
        if let Err(e) = result {
            let shown = self.job.state.display();
            let undone = if self.job.resume {
                Ok(format!(
                    "nothing was dropped (an earlier run copied part of it): fix the cause and continue with \
                     ferry migrate --resume {shown}, or undo it with --rollback {shown}"
                ))
            } else if state.created_tables.is_empty() && !state.created_file {
                // Nothing to undo: a new run may start over with this state file.
                state.phase = Phase::RolledBack;
                Ok(String::from("nothing had been created"))
            } else {
                rollback_state(state, self.target_db, &self.job.connect).map(|n| {
                    format!("the {n} table(s) this run created were dropped, so the target is as it was")
                })
            };
            let _ = state.save(&self.job.state);
            let note = match undone {
                Ok(note) => note,
                Err(r) => format!(
                    "undoing it failed too ({}); ferry migrate --resume {shown} continues it, --rollback undoes it",
                    r.message(),
                ),
            };
            return Err(Error::data(
                e.stage().unwrap_or(Stage::Sink),
                e.position().cloned().unwrap_or_default(),
                format!("{}\nmigration failed: {note}", e.message()),
            ));
        }
        Ok(())
    }

    fn real_steps(
        &self,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let state_path = &self.job.state;
        if state.phase == Phase::Planned {
            // What this migration is about to create is written down before any of it exists.
            state.tables = self.tables.iter().map(|t| t.name.clone()).collect();
            if !self.job.data_only {
                state.created_tables = state.tables.clone();
            }
            state.save(state_path)?;
        }
        let mut target = match self.target_db.open(&self.job.connect, true) {
            Ok(target) => target,
            Err(e) => {
                if state.phase == Phase::Planned && !self.job.resume {
                    // Not reached: nothing was created.
                    state.created_tables.clear();
                    state.created_file &= matches!(self.target_db, Db::Sqlite(p) if p.exists());
                }
                return Err(e);
            }
        };
        if state.phase == Phase::Planned {
            if !self.job.data_only {
                self.create_tables(&mut target, state, ddl)?;
            }
            crash_point("tables-created");
            state.phase = if self.job.schema_only {
                Phase::Constraints
            } else {
                Phase::Copying
            };
            state.save(state_path)?;
        }
        if state.phase == Phase::Copying {
            self.copy_all(state, ddl, report)?;
            state.phase = Phase::Constraints;
            state.save(state_path)?;
        } else {
            self.resumed_reports(state, report);
        }
        if state.phase == Phase::Constraints {
            let fail =
                |r: String| target_error(self.target_label, "adding keys and constraints", &r);
            target.begin().map_err(fail)?;
            if let Err(e) = self.after_data(&mut target, state, ddl, report) {
                target.rollback();
                return Err(e);
            }
            target.exec("COMMIT").map_err(fail)?;
            say(self.job.progress, "foreign keys, sequences and views added");
            crash_point("constraints-added");
            state.phase = Phase::Validating;
            state.save(state_path)?;
        } else if state.phase == Phase::Validating {
            // Done by the interrupted run: only the views it made are counted again.
            self.count_views(&mut target, state, report)?;
        }
        if self.job.validate && !self.job.schema_only {
            self.validate(&mut target, report)?;
        }
        crash_point("validated");
        state.phase = Phase::Done;
        state.save(state_path)
    }

    /// Creates the tables in one transaction; a resumed run skips those the target already has (the
    /// interrupted run committed them and was stopped before saying so).
    fn create_tables(&self, target: &mut Conn, state: &mut State, ddl: &TargetDdl) -> Result<()> {
        let fail = |s: &str, r: String| target_error(self.target_label, s, &r);
        let statements = missing(target, &ddl.create, self.job.resume)?;
        target.begin().map_err(|r| fail("BEGIN", r))?;
        for s in &statements {
            if let Err(r) = target.exec(s) {
                target.rollback();
                if !self.job.resume {
                    // Rolled back: none of them was made, and a table someone else made is not ours to drop.
                    state.created_tables.clear();
                }
                return Err(fail(s, r));
            }
        }
        target.exec("COMMIT").map_err(|r| fail("COMMIT", r))?;
        say(
            self.job.progress,
            &format!(
                "created {} tables{}",
                statements.len(),
                match ddl.create.len() - statements.len() {
                    0 => String::new(),
                    n => format!(" ({n} made by the interrupted run)"),
                }
            ),
        );
        Ok(())
    }

    fn resumed_reports(&self, state: &State, report: &mut MigrateReport) {
        for t in self.tables {
            if let Some(done) = state.finished.get(&t.name) {
                report.tables.push(TableReport {
                    name: t.name.clone(),
                    read: done.read,
                    written: done.written,
                    rejected: done.rejected,
                    source_checksum: Some(done.checksum.clone()).filter(|c| !c.is_empty()),
                    resumed: true,
                    ..TableReport::default()
                });
            }
        }
    }

    /// Copies every unfinished table, `--jobs` at a time, biggest first.
    fn copy_all(
        &self,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..self.tables.len())
            .filter(|&i| !state.finished.contains_key(&self.tables[i].name))
            .collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.plan.tables[i].rows));
        let queue = Mutex::new(order.into_iter().collect::<VecDeque<usize>>());
        let shared = Mutex::new((std::mem::take(state), Vec::new(), Vec::new()));
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        // A SQLite file has one writer at a time.
        let jobs = if matches!(self.target_db, Db::Sqlite(_)) {
            1
        } else {
            self.job.jobs.max(1)
        };
        let workers = jobs.min(self.tables.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    if let Err(e) = self.worker(&queue, &shared, &stop, ddl) {
                        stop.store(true, Ordering::SeqCst);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                });
            }
        });
        let (back, reports, not_created) = shared.into_inner().unwrap_or_else(|p| p.into_inner());
        report.not_created.extend(not_created);
        *state = back;
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        // Plan order: tables copied now, and those an interrupted run had finished.
        report.tables.clear();
        self.resumed_reports(state, report);
        for r in reports {
            report.tables.retain(|t| t.name != r.name);
            report.tables.push(r);
        }
        report
            .tables
            .sort_by_key(|r| self.tables.iter().position(|t| t.name == r.name));
        Ok(())
    }

    fn worker(
        &self,
        queue: &Mutex<VecDeque<usize>>,
        shared: &Mutex<Shared>,
        stop: &AtomicBool,
        ddl: &TargetDdl,
    ) -> Result<()> {
        let mut source = self.source_db.open(&self.job.connect, false)?;
        let mut target = self.target_db.open(&self.job.connect, true)?;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            let Some(i) = next else {
                return Ok(());
            };
            let table = &self.tables[i];
            let again = {
                let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
                let state = &mut guard.0;
                let again = state.copying.contains(&table.name);
                if !again {
                    state.copying.push(table.name.clone());
                    state.save(&self.job.state)?;
                }
                again
            };
            let note = if again {
                " (again: it was being copied when the run stopped)"
            } else {
                ""
            };
            say(
                self.job.progress,
                &format!("  copying {} …{note}", quote_ident(&table.name)),
            );
            let copied = copy_table(
                &mut source,
                &mut target,
                table,
                self.own_statements(ddl, i),
                &self.context(true),
            )?;
            crash_point("table-copied");
            crash_point(&format!("table-copied:{}", table.name));
            say(self.job.progress, &table_line(&table.name, &copied, false));
            let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
            let (state, reports, not_created) = &mut *guard;
            not_created.extend(copied.not_created.iter().cloned());
            state
                .finished
                .insert(table.name.clone(), copied.done.clone());
            state.copying.retain(|t| *t != table.name);
            state.save(&self.job.state)?;
            reports.push(table_report(&table.name, &copied, false));
        }
    }

    /// A table's own keys, indexes and checks, run in its copy transaction (none for `--data-only`,
    /// whose tables have theirs).
    fn own_statements<'d>(&self, ddl: &'d TargetDdl, i: usize) -> &'d [String] {
        match ddl.per_table.get(i) {
            Some(s) if !self.job.data_only => s,
            _ => &[],
        }
    }

    /// What runs once every table is loaded, on the caller's transaction: foreign keys, sequences, type
    /// conversions, views (and every table's keys when no rows were copied, `--schema-only`). A resumed
    /// run skips what the target already has.
    fn after_data(
        &self,
        target: &mut Conn,
        state: &mut State,
        ddl: &TargetDdl,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let own: Vec<&String> = if self.job.schema_only {
            ddl.per_table.iter().flatten().collect()
        } else {
            Vec::new()
        };
        let statements: Vec<String> = own
            .into_iter()
            .chain(&ddl.last)
            .filter(|s| !self.job.data_only || s.starts_with("SELECT setval"))
            .map(|s| self.known_not_valid(s))
            .collect();
        let statements = missing(target, &statements, self.job.resume)?;
        let not_created =
            run_statements(target, &statements, self.job.on_error, self.target_label)?;
        report.not_created.extend(not_created);
        if target.is_postgres() && !self.job.data_only {
            self.create_views(target, state, report)?;
        }
        Ok(())
    }

    /// Tries each view on the target (a view may use another, so until no more succeed); those PostgreSQL
    /// refuses stay listed with its reason. Each view is written into the state before it is tried, so
    /// `--rollback` drops it; a relation of that name this migration did not make is left alone.
    fn create_views(
        &self,
        target: &mut Conn,
        state: &mut State,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let mut reasons: BTreeMap<&str, String> = BTreeMap::new();
        let mut pending: Vec<&(String, String)> = Vec::new();
        for view in &self.plan.views {
            let name = &view.0;
            if state.created_views.contains(name) {
                if catalog::exists(target, &Object::View(name.clone()))? {
                    view_created(report, name);
                    continue;
                }
            } else if !target
                .existing_tables(std::slice::from_ref(name))?
                .is_empty()
            {
                reasons.insert(
                    name,
                    "the target already has a relation of that name".into(),
                );
                continue;
            }
            pending.push(view);
        }
        for (name, _) in &pending {
            if !state.created_views.contains(name) {
                state.created_views.push(name.clone());
            }
        }
        self.save(state)?;
        loop {
            let before = pending.len();
            pending.retain(|(name, select)| {
                let sql = format!("CREATE VIEW {} AS {select}", quote_ident(name));
                match savepoint(target, &sql) {
                    Ok(()) => {
                        view_created(report, name);
                        false
                    }
                    Err(reason) => {
                        reasons.insert(name, reason);
                        true
                    }
                }
            });
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        // Those refused never existed; the list is saved with the next phase, once the views are committed.
        state
            .created_views
            .retain(|v| !pending.iter().any(|(name, _)| name == v));
        for u in &mut report.untranslated {
            if let Some(reason) = reasons.get(u.name.as_str()).filter(|_| u.kind == "view") {
                u.reason = format!("PostgreSQL refused its SQL: {reason}");
            }
        }
        Ok(())
    }

    /// Counts the views an interrupted run created (after its keys and views were committed).
    fn count_views(
        &self,
        target: &mut Conn,
        state: &State,
        report: &mut MigrateReport,
    ) -> Result<()> {
        for name in &state.created_views {
            if catalog::exists(target, &Object::View(name.clone()))? {
                view_created(report, name);
            }
        }
        Ok(())
    }

    /// Saves the state file (not in a dry run, which keeps none).
    fn save(&self, state: &mut State) -> Result<()> {
        match self.job.dry_run {
            true => Ok(()),
            false => state.save(&self.job.state),
        }
    }

    /// A foreign key the source already breaks is added `NOT VALID` (only reachable when not strict).
    fn known_not_valid(&self, statement: &str) -> String {
        for t in &self.plan.tables {
            for fk in &t.foreign_keys {
                let breaks = self
                    .not_valid
                    .iter()
                    .any(|(c, p)| *c == t.name && *p == fk.table);
                let names_it = statement.starts_with(&format!(
                    "ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY",
                    quote_ident(&t.name),
                    quote_ident(&fk.name)
                ));
                if breaks && names_it {
                    return format!("{statement} NOT VALID");
                }
            }
        }
        statement.to_owned()
    }

    /// Reads every table back, compares rows and checksums, and counts rows breaking foreign keys.
    fn validate(&self, target: &mut Conn, report: &mut MigrateReport) -> Result<()> {
        let mut all_equal = true;
        for table in self.tables {
            let Some(r) = report.tables.iter_mut().find(|r| r.name == table.name) else {
                continue;
            };
            // Tables copied by this run were read back right after their copy; resumed ones now.
            let checksum = match r.target_checksum.is_some() {
                true => None,
                false => Some(parallel_checksum(
                    target,
                    &self.context(!self.job.dry_run),
                    table,
                )?),
            };
            if let Some(checksum) = checksum {
                r.target_checksum = Some(checksum.hex());
                r.target_rows = Some(checksum.rows);
            }
            // A table an earlier run copied without validating: checksum its source now.
            if r.source_checksum.is_none() {
                let mut source = self.source_db.open(&self.job.connect, false)?;
                let mut sum = TableChecksum::default();
                // Rows that do not fit were rejected, not written: they are not in the checksum.
                scan(&mut source.side(), self.source_label, table, &mut |row| {
                    if let Ok(values) = row {
                        sum.add(&values);
                    }
                    Ok(true)
                })?;
                r.source_checksum = Some(sum.hex());
            }
            {
                let target_hex = r.target_checksum.clone().unwrap_or_default();
                let target_rows = r.target_rows.unwrap_or(0);
                let equal = r.source_checksum.as_deref() == Some(target_hex.as_str())
                    && r.written == target_rows;
                r.equal = Some(equal);
                all_equal &= equal;
                if !equal {
                    say(
                        self.job.progress,
                        &format!(
                            "  {}: target has {} rows, checksum {} — source wrote {} rows, checksum {}",
                            quote_ident(&table.name),
                            target_rows,
                            target_hex,
                            r.written,
                            r.source_checksum.as_deref().unwrap_or("?")
                        ),
                    );
                }
            }
        }
        // Rows breaking a key can only reach the target through --on-error lenient/skip (rejected parents,
        // or a source that already broke the key): they are listed, and the key is in place NOT VALID.
        let violations = self.target_key_violations(target)?;
        report.key_violations.extend(violations);
        report.valid = Some(all_equal);
        Ok(())
    }

    fn target_key_violations(&self, target: &mut Conn) -> Result<Vec<KeyViolation>> {
        let mut out = Vec::new();
        for t in &self.plan.tables {
            for fk in &t.foreign_keys {
                let rows = match target {
                    Conn::Postgres(client) => {
                        let to = if fk.to.is_empty() {
                            self.plan
                                .table(&fk.table)
                                .map(|p| p.primary_key.clone())
                                .unwrap_or_default()
                        } else {
                            fk.to.clone()
                        };
                        super::rows::pg_orphans(client, &t.name, &fk.from, &fk.table, &to).map_err(
                            |e| {
                                crate::db::postgres::pg_error(
                                    Stage::Sink,
                                    "checking foreign keys",
                                    &e,
                                )
                            },
                        )?
                    }
                    Conn::Sqlite(conn) => conn
                        .query_row(
                            "SELECT count(*) FROM pragma_foreign_key_check(?1) WHERE parent = ?2",
                            [&t.name, &fk.table],
                            |r| r.get::<_, i64>(0),
                        )
                        .map_err(|e| Error::usage(format!("checking foreign keys: {e}")))?,
                };
                if rows > 0
                    && !out
                        .iter()
                        .any(|v: &KeyViolation| v.table == t.name && v.references == fk.table)
                {
                    out.push(KeyViolation {
                        table: t.name.clone(),
                        references: fk.table.clone(),
                        rows: rows as u64,
                        found_in: "target",
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Counts a view as created and takes it off the list of what was not translated.
fn view_created(report: &mut MigrateReport, name: &str) {
    report
        .untranslated
        .retain(|u| !(u.kind == "view" && u.name == name));
    report.objects.views += 1;
}

/// The statements whose object the target does not have yet: all of them for a first run, whose
/// target was checked before anything was created; on a resumed run, those the catalog does not show
/// (the interrupted run may have committed them and been stopped before its state file said so).
fn missing(target: &mut Conn, statements: &[String], resume: bool) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(statements.len());
    for s in statements {
        if !resume || !catalog::exists(target, &catalog::object_of(s))? {
            out.push(s.clone());
        }
    }
    Ok(out)
}

/// A test hook: `FERRY_CRASH_AT=<point>` makes the process stop right there, as `kill -9` would (no
/// rollback, no cleanup, no state saved; exit code 137), so the tests can land in the windows between a
/// commit and the state file's next save: `tables-created`, `table-copied` (the first table committed;
/// `table-copied:NAME` for that table), `constraints-added`, `validated`.
fn crash_point(point: &str) {
    if std::env::var_os("FERRY_CRASH_AT").is_some_and(|v| v == point) {
        std::process::exit(137);
    }
}

/// Runs `sql` under a savepoint, so a failure leaves the transaction usable.
fn savepoint(target: &mut Conn, sql: &str) -> std::result::Result<(), String> {
    target.exec("SAVEPOINT ferry_ddl")?;
    match target.exec(sql) {
        Ok(()) => target.exec("RELEASE SAVEPOINT ferry_ddl"),
        Err(r) => {
            let _ = target.exec("ROLLBACK TO SAVEPOINT ferry_ddl");
            Err(r)
        }
    }
}

/// What the copy workers share: the state file's content, the reports of the tables done, and the keys
/// and checks that failed or went in NOT VALID.
type Shared = (State, Vec<TableReport>, Vec<NotCreated>);

fn table_line(name: &str, copied: &Copied, resumed: bool) -> String {
    let d = &copied.done;
    format!(
        "  {:<28} {:>10} read = {:>10} written + {} rejected  {:.2} s{}",
        quote_ident(name),
        d.read,
        d.written,
        d.rejected,
        copied.seconds,
        if resumed { " (resumed)" } else { "" }
    )
}

fn table_report(name: &str, copied: &Copied, resumed: bool) -> TableReport {
    TableReport {
        name: name.to_owned(),
        read: copied.done.read,
        written: copied.done.written,
        rejected: copied.done.rejected,
        rejects_file: copied.rejects_file.clone(),
        source_checksum: Some(copied.done.checksum.clone()),
        target_checksum: copied.target.map(|c| c.hex()),
        target_rows: copied.target.map(|c| c.rows),
        seconds: copied.seconds,
        resumed,
        ..TableReport::default()
    }
}

/// Drops the tables a migration created (all in one statement, without CASCADE, so anything else that
/// depends on them makes it fail rather than disappear); removes a SQLite file it created once empty.
/// Returns how many tables were dropped.
fn rollback_state(state: &mut State, target_db: &Db, connect: &ConnectOptions) -> Result<usize> {
    let mut target = target_db.open(connect, true)?;
    let present = target.existing_tables(&state.created_tables)?;
    let mut views = Vec::new();
    for view in &state.created_views {
        if catalog::exists(&mut target, &Object::View(view.clone()))? {
            views.push(quote_ident(view));
        }
    }
    // Its views first (they depend on its tables), all in one implicit transaction.
    let mut sql = match views.is_empty() {
        true => String::new(),
        false => format!("DROP VIEW {};\n", views.join(", ")),
    };
    if !present.is_empty() {
        let list: Vec<String> = present.iter().map(|t| quote_ident(t)).collect();
        sql.push_str(&format!("DROP TABLE {}", list.join(", ")));
    }
    if !sql.is_empty() {
        target
            .exec(&sql)
            .map_err(|r| target_error(&target_db.label(), "rolling back", &r))?;
    }
    if let (Db::Sqlite(path), true) = (target_db, state.created_file) {
        drop(target);
        let empty = Connection::open(path)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n == 0);
        if empty {
            let _ = std::fs::remove_file(path);
        }
    }
    state.phase = Phase::RolledBack;
    Ok(present.len())
}

/// `ferry migrate --rollback STATE`: undoes a migration (finished or not). `to` overrides the target the
/// state names (for a password in the URL); returns the tables dropped.
pub fn rollback(
    state_path: &Path,
    to: Option<&str>,
    connect: &ConnectOptions,
) -> Result<Vec<String>> {
    let mut state = State::load(state_path)?;
    if state.phase == Phase::RolledBack {
        return Err(Error::usage(format!(
            "{}: that migration was already rolled back",
            state_path.display()
        )));
    }
    let target = match to {
        Some(to) if without_password(to) != state.target => {
            return Err(Error::usage(format!(
                "{} is the state of a migration into {}, not {}",
                state_path.display(),
                state.target,
                without_password(to)
            )))
        }
        Some(to) => to.to_owned(),
        None => state.target.clone(),
    };
    let target_db = Db::parse(&target, "--to")?;
    let tables = state.created_tables.clone();
    rollback_state(&mut state, &target_db, connect)?;
    state.save(state_path)?;
    Ok(tables)
}
