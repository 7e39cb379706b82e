//! `ferry migrate` and `ferry diff`: whole databases, SQLite ⇄ PostgreSQL. Turns the flags into a
//! [`MigrateJob`] (or a plan, DDL, rollback or diff request), hands it to the library with an observer that
//! prints the run's lines on stderr, and turns the report into the summary and an exit code.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::job::ErrorPolicy;
use crate::migrate::{diff, migrate, rollback, show_plan, DiffJob, MigrateJob};
use crate::observe::{Event, Observer};

const EXAMPLES: &str = "Examples:
  # what would be created, and why each type
  ferry migrate --from app.db --plan
  # the PostgreSQL statements, before and after the data
  ferry migrate --from app.db --ddl
  PGPASSWORD=… ferry migrate --from sqlite://app.db --to \\
    postgres://app@db.internal/app --jobs 4 --report migrate.json
  # DATABASE_URL or PG* names the server; all rolled back
  ferry migrate --from app.db --to postgres --dry-run
  ferry migrate --from app.db --to postgres --backup backups/ --key-file \\
    backup.key
  ferry migrate --from app.db --to postgres --on-error lenient --rejects \\
    rejects/
  # after a crash or kill
  ferry migrate --resume ferry-migrate.state.json
  # the job, as a job file
  ferry migrate --from app.db --to postgres --print-job > migrate.json
  # drop exactly what that migration created
  ferry migrate --rollback ferry-migrate.state.json
  # the way back
  ferry migrate --from postgres://app@db/app --to fallback.db
  ferry diff app.db postgres://app@db/app --table users

Passwords: give them in PGPASSWORD, DATABASE_URL or ~/.pgpass, not in a URL on
the command line. The state file (--state, default ferry-migrate.state.json)
is written before the target is touched and before and after every step; it
never holds a password, and a new migration never overwrites the state of one
that was not rolled back (--rollback needs it): give each migration its own
--state. A failed run drops what it created, so the target is left as it was;
a killed run continues with --resume (what it had committed is found in the
target's catalog), and a failed resume drops nothing. --print-job prints the
job these flags make, as JSON, without running it.

Exit codes: 0 done (valid, or valid but for the rows a lenient run rejected),
1 failed or a table differs from its source, 2 usage or configuration, 3 rows
were rejected and --fail-on-rejects was given, 130 cancelled.";

/// Arguments of `ferry migrate`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct MigrateArgs {
    /// The source database: sqlite://PATH, a .db path, postgres://…, `postgres` (DATABASE_URL / PG*) or
    /// `sqlite` (DB_PATH).
    #[arg(long, value_name = "DATABASE")]
    from: Option<String>,

    /// The target database (same forms as --from).
    #[arg(long, value_name = "DATABASE")]
    to: Option<String>,

    /// Only these tables (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    tables: Vec<String>,

    /// Leave these tables out (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    exclude: Vec<String>,

    /// Create tables, keys, indexes and constraints; copy no rows.
    #[arg(long, conflicts_with = "data_only")]
    schema_only: bool,

    /// Copy rows into tables that already exist (made by --schema-only), then reset sequences.
    #[arg(long)]
    data_only: bool,

    /// Do everything inside one transaction and roll it back: the report shows what would happen.
    #[arg(long)]
    dry_run: bool,

    /// Tables copied at once, each on its own connections.
    #[arg(long, value_name = "N", default_value_t = 2)]
    jobs: usize,

    /// A value that does not fit its column: strict fails (naming table, row, column, value) and undoes the
    /// migration; lenient and skip send the row to <rejects>/<table>.rejects.ndjson with the reason.
    #[arg(long, default_value_t = ErrorPolicy::Strict,
          value_parser = super::one_of::<ErrorPolicy>(super::error_policies()))]
    on_error: ErrorPolicy,

    /// Where per-table rejects files go (made only when a row is rejected).
    #[arg(long, value_name = "DIR", default_value = "migrate-rejects")]
    rejects: PathBuf,

    /// Skip validation (row counts, content checksums of every table on both sides, foreign keys).
    #[arg(long)]
    no_validate: bool,

    /// Exit with code 3 when the migration succeeded but rejected rows (lenient or skip).
    #[arg(long)]
    fail_on_rejects: bool,

    /// Export every migrated source table here first (NDJSON, zstd, SHA-256 per file, backup.json
    /// manifest; encrypted when a key option is given).
    #[arg(long, value_name = "DIR")]
    backup: Option<PathBuf>,

    #[command(flatten)]
    keys: super::KeyArgs,

    /// The state file this migration keeps.
    #[arg(long, value_name = "FILE", default_value = "ferry-migrate.state.json")]
    state: PathBuf,

    /// Continue the migration this state file describes (--from and --to default to the state's; give
    /// them when a URL needs what the state leaves out).
    #[arg(long, value_name = "STATE", conflicts_with_all = ["state", "rollback"])]
    resume: Option<PathBuf>,

    /// Undo the migration this state file describes: drop exactly the views and tables it created.
    #[arg(long, value_name = "STATE", conflicts_with_all = ["state", "from", "dry_run"])]
    rollback: Option<PathBuf>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Print the migration plan (types and why, keys, indexes, checks, sequences, what is not translated).
    #[arg(long)]
    plan: bool,

    /// Print the PostgreSQL DDL in its two phases.
    #[arg(long)]
    ddl: bool,

    /// A YAML file overriding type translation: `columns: {"table.column": type}`, `types: {"DECLARED": type}`.
    #[arg(long, value_name = "FILE")]
    cast_rules: Option<PathBuf>,

    #[command(flatten)]
    connect: super::connect::ConnectArgs,

    /// No progress lines on stderr (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,

    /// Print the job these flags make (JSON, no password) and exit without running it.
    #[arg(long)]
    print_job: bool,

    /// Migrate one tenant's rows instead of the whole database: TABLE:KEY (users:123),
    /// TABLE:COLUMN=VALUE (users:email=a@b.c), or TABLE:all for every row of the table, each on its own.
    #[arg(long, value_name = "TABLE:KEY", help_heading = "One user's data")]
    tenant: Option<crate::tenant::Root>,

    /// Migrate the tenants this file lists, one per line (users:123); `#` starts a comment.
    #[arg(long, value_name = "FILE", help_heading = "One user's data")]
    tenants_from: Option<PathBuf>,

    /// The subset spec (YAML): relations the schema does not declare, tables to exclude, paths to stop,
    /// lookup tables to include, how columns are sanitized.
    #[arg(long, value_name = "FILE", help_heading = "One user's data")]
    spec: Option<PathBuf>,

    /// Lookup tables taken whole into each tenant's bundle (comma-separated).
    #[arg(
        long,
        value_name = "TABLES",
        value_delimiter = ',',
        help_heading = "One user's data"
    )]
    include: Vec<String>,

    /// A tenant's row whose key is already on the target: error, skip, overwrite or merge.
    #[arg(
        long,
        value_name = "MODE",
        default_value = "error",
        help_heading = "One user's data"
    )]
    on_conflict: crate::db::OnConflict,

    /// Give generated keys new values on the target and rewrite every reference to them.
    #[arg(long, help_heading = "One user's data")]
    remap_keys: bool,

    /// Validate (the default; with --tenant, each tenant's rows are read back before its commit).
    #[arg(long, conflicts_with = "no_validate")]
    validate: bool,

    /// Re-run the finished migration of --state, moving only what changed since (by --cursor where a table
    /// has it, else by key and row checksum; deleted rows are deleted).
    #[arg(long, conflicts_with_all = ["resume", "rollback", "schema_only", "dry_run"])]
    incremental: bool,

    /// With --incremental: the cursor column (updated_at, a version number) of tables that have one.
    #[arg(long, value_name = "COLUMN", requires = "incremental")]
    cursor: Option<String>,
}

impl MigrateArgs {
    /// The job the flags describe.
    fn job(&self) -> MigrateJob {
        MigrateJob {
            from: self.from.clone(),
            to: self.to.clone(),
            tables: self.tables.clone(),
            exclude: self.exclude.clone(),
            schema_only: self.schema_only,
            data_only: self.data_only,
            dry_run: self.dry_run,
            jobs: self.jobs.max(1),
            on_error: self.on_error,
            rejects: self.rejects.clone(),
            validate: !self.no_validate,
            fail_on_rejects: self.fail_on_rejects,
            backup: self.backup.clone(),
            backup_key: self.keys.source(),
            state: self.resume.clone().unwrap_or_else(|| self.state.clone()),
            resume: self.resume.is_some(),
            cast_rules: self.cast_rules.clone(),
            connect: self.connect.options(),
            report: self.report.clone(),
            tenant: (self.tenant.is_some() || self.tenants_from.is_some()).then(|| {
                crate::tenant::TenantMigrateJob {
                    tenant: self.tenant.clone(),
                    tenants_from: self.tenants_from.clone(),
                    spec: self.spec.clone(),
                    include: self.include.clone(),
                    on_conflict: self.on_conflict,
                    remap_keys: self.remap_keys,
                }
            }),
            incremental: self.incremental,
            cursor: self.cursor.clone(),
        }
    }
}

/// A migrate job as a job file holds it: `{"job": "migrate", …}`.
#[derive(serde::Serialize)]
struct JobFile<'a> {
    job: &'static str,
    #[serde(flatten)]
    migrate: &'a MigrateJob,
}

/// Prints what the run says, line by line, on stderr: each table as it finishes and the notes between
/// steps (none with `--quiet`).
pub(super) struct Lines;

impl Observer for Lines {
    fn event(&self, event: &Event) {
        match event {
            Event::Notice { message } => eprintln!("{message}"),
            Event::TableDone { line, .. } => eprintln!("{line}"),
            _ => {}
        }
    }
}

/// Runs `ferry migrate`.
pub fn run(args: MigrateArgs) -> Result<()> {
    let env = Environment::from_process();
    let job = args.job();
    if args.print_job {
        let file = JobFile {
            job: "migrate",
            migrate: &job,
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::io(Stage::Sink, Some("-"), std::io::Error::other(e)))?;
        println!("{text}");
        return Ok(());
    }
    if let Some(state) = &args.rollback {
        super::warn_about_passwords(&[args.to.as_deref().unwrap_or("")]);
        let dropped = rollback(state, args.to.as_deref(), &env, &job.connect)?;
        eprintln!(
            "rolled back: dropped {} table(s) this migration created ({})",
            dropped.len(),
            dropped.join(", ")
        );
        return Ok(());
    }
    if args.plan || args.ddl {
        let view = show_plan(&job, &env)?;
        if args.plan {
            print!("{}", view.render_plan());
        }
        if args.ddl {
            print!("{}", view.render_ddl());
        }
        return Ok(());
    }
    run_job(&job, &env, args.quiet)
}

/// Runs a migrate job (from the flags, or a job file), printing its lines and summary and writing its
/// report. SIGTERM, SIGINT and SIGHUP cancel it: it stops at its next check and undoes what it created.
pub(super) fn run_job(job: &MigrateJob, env: &Environment, quiet: bool) -> Result<()> {
    super::warn_about_passwords(&[
        job.from.as_deref().unwrap_or(""),
        job.to.as_deref().unwrap_or(""),
    ]);
    let observer: Arc<dyn Observer> = match quiet {
        true => Arc::new(crate::observe::Silent),
        false => Arc::new(Lines),
    };
    let (ctx, _signals) = super::context(observer)?;
    let result = migrate(job, env, &ctx);
    // A job refused before it started (exit 2) writes no report: its --report may be the very path the
    // collision check refused.
    let (report, refused) = match &result {
        Ok(report) => (report, false),
        Err(failed) => (
            &failed.report,
            failed.error.is_config() || failed.error.is_usage(),
        ),
    };
    if let (Some(path), false) = (&job.report, refused) {
        report.write_json(path)?;
    }
    let report = result?;
    if job.incremental {
        let c = &report.counts;
        let deleted: u64 = report.tables.iter().map(|t| t.deleted).sum();
        eprintln!(
            "caught up {} tables: {} rows read = {} written + {} unchanged; {deleted} deleted",
            report.tables.len(),
            c.read,
            c.written,
            c.skipped
        );
        return Ok(());
    }
    eprintln!("{}", report.summary());
    if report.differs() {
        return Err(Error::data(
            Stage::Sink,
            Position::default(),
            "the migrated data does not match the source (see the report above)",
        ));
    }
    if job.fail_on_rejects && report.counts.rejected > 0 {
        let rejects = job.rejects.display().to_string();
        return Err(Error::rejected(report.counts.rejected, Some(rejects)));
    }
    Ok(())
}

const DIFF_EXAMPLES: &str = "Examples:
  # every table of app.db
  ferry diff app.db postgres://app@db/app
  ferry diff app.db postgres://app@db/app --table users --limit 20
  ferry diff postgres://app@db/app fallback.db

SRC's schema decides each column's type; both sides are read as that type and
compared as canonical values (numbers, dates, JSON and booleans compare by
value, not spelling), rows in any order.

Exit codes: 0 equal, 1 different, 2 usage.";

/// Arguments of `ferry diff`.
#[derive(Debug, Args)]
#[command(after_help = DIFF_EXAMPLES)]
pub struct DiffArgs {
    /// The first database (sqlite://PATH, a .db path, postgres://… or `postgres`).
    #[arg(value_name = "SRC")]
    source: String,

    /// The second database.
    #[arg(value_name = "DST")]
    target: String,

    /// Only this table (repeat or comma-separate for more).
    #[arg(long, value_name = "TABLE", value_delimiter = ',')]
    table: Vec<String>,

    /// Rows shown per side and table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    limit: usize,

    /// The --cast-rules the migration used.
    #[arg(long, value_name = "FILE")]
    cast_rules: Option<PathBuf>,

    /// Write the comparison as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Runs `ferry diff`.
pub fn run_diff(args: DiffArgs) -> Result<()> {
    super::warn_about_passwords(&[&args.source, &args.target]);
    let env = Environment::from_process();
    if let Some(report) = &args.report {
        let mut paths = crate::paths::RunPaths::new();
        for (label, text) in [("SRC", &args.source), ("DST", &args.target)] {
            if let Ok(crate::migrate::Db::Sqlite(file)) =
                crate::migrate::Db::parse(text, label, &env)
            {
                paths.database(label, &file);
            }
        }
        paths.write("--report", report).check()?;
    }
    let job = DiffJob {
        tables: args.table,
        limit: args.limit,
        cast_rules: args.cast_rules,
        connect: super::connect::options(0, 10),
        ..DiffJob::new(args.source, args.target)
    };
    let report = diff(&job, &env)?;
    print!("{}", report.render());
    if let Some(path) = &args.report {
        report.write_json(path)?;
    }
    match report.difference() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
