//! `ferry migrate` and `ferry diff`: whole databases, SQLite ⇄ PostgreSQL. Parses the flags into a
//! [`MigrateJob`] (or a plan, DDL, rollback or diff request), runs it and prints the summary.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::db::ConnectOptions;
use crate::envelope::KeySource;
use crate::error::{Error, Result};
use crate::migrate::diff::{diff, render, DiffJob};
use crate::migrate::run::{build_plan, migrate, rollback, Db, MigrateJob};
use crate::migrate::CastRules;
use crate::paths::RunPaths;
use crate::pipeline::ErrorPolicy;

const EXAMPLES: &str = "Examples:
  ferry migrate --from app.db --plan                      # what would be created, and why each type
  ferry migrate --from app.db --ddl                       # the PostgreSQL statements, before and after the data
  PGPASSWORD=… ferry migrate --from sqlite://app.db --to postgres://app@db.internal/app --jobs 4 --report migrate.json
  ferry migrate --from app.db --to postgres --dry-run     # DATABASE_URL or PG* names the server; all rolled back
  ferry migrate --from app.db --to postgres --backup backups/ --key-file backup.key
  ferry migrate --from app.db --to postgres --on-error lenient --rejects rejects/
  ferry migrate --resume ferry-migrate.state.json --from app.db --to postgres   # after a crash or kill
  ferry migrate --rollback ferry-migrate.state.json       # drop exactly what that migration created
  ferry migrate --from postgres://app@db/app --to fallback.db                    # the way back
  ferry diff app.db postgres://app@db/app --table users

Passwords: give them in PGPASSWORD, DATABASE_URL or ~/.pgpass, not in a URL on the command line.
The state file (--state, default ferry-migrate.state.json) is written before the target is touched and
before and after every step; it never holds a password. A failed run drops what it created, so the target is
left as it was; a killed run continues with --resume (what it had committed is found in the target's catalog),
and a failed resume drops nothing. Exit codes: 0 done and valid, 1 failed or not valid, 2 usage.";

/// Arguments of `ferry migrate`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct MigrateArgs {
    /// The source database: sqlite://PATH, a .db path, postgres://… or `postgres` (DATABASE_URL / PG*).
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
    #[arg(long, value_enum, default_value_t = ErrorPolicy::Strict)]
    on_error: ErrorPolicy,

    /// Where per-table rejects files go (made only when a row is rejected).
    #[arg(long, value_name = "DIR", default_value = "migrate-rejects")]
    rejects: PathBuf,

    /// Skip validation (row counts, content checksums of every table on both sides, foreign keys).
    #[arg(long)]
    no_validate: bool,

    /// Export every migrated source table here first (NDJSON, zstd, SHA-256 per file, backup.json
    /// manifest; encrypted when a key option is given).
    #[arg(long, value_name = "DIR")]
    backup: Option<PathBuf>,

    #[command(flatten)]
    keys: super::KeyArgs,

    /// The state file this migration keeps.
    #[arg(long, value_name = "FILE", default_value = "ferry-migrate.state.json")]
    state: PathBuf,

    /// Continue the migration this state file describes (give --from and --to as before).
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

    /// Retries when the server cannot be reached (with backoff).
    #[arg(long, value_name = "N", default_value_t = 0)]
    connect_retries: u32,

    /// Seconds allowed for each connection attempt.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    connect_timeout: u64,

    /// No progress lines on stderr (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,
}

fn connect_options(retries: u32, timeout: u64) -> ConnectOptions {
    ConnectOptions {
        retries,
        timeout: std::time::Duration::from_secs(timeout.max(1)),
    }
}

fn required<'a>(value: &'a Option<String>, flag: &str) -> Result<&'a str> {
    value
        .as_deref()
        .ok_or_else(|| Error::usage(format!("ferry migrate needs {flag} (see --help)")))
}

/// Runs `ferry migrate`.
pub fn run(args: MigrateArgs) -> Result<()> {
    let connect = connect_options(args.connect_retries, args.connect_timeout);
    if let Some(state) = &args.rollback {
        super::warn_about_passwords(&[args.to.as_deref().unwrap_or("")]);
        let dropped = rollback(state, args.to.as_deref(), &connect)?;
        eprintln!(
            "rolled back: dropped {} table(s) this migration created ({})",
            dropped.len(),
            dropped.join(", ")
        );
        return Ok(());
    }
    // A resumed run may take --from and --to from its state file (which holds no password).
    let resumed = match &args.resume {
        Some(path) => Some(crate::migrate::state::State::load(path)?),
        None => None,
    };
    let from_state = resumed.as_ref().map(|s| s.source.clone());
    let to_state = resumed.as_ref().map(|s| s.target.clone());
    let from = match &args.from {
        Some(f) => f.as_str(),
        None => required(&from_state, "--from")?,
    };
    if args.plan || args.ddl {
        return show_plan(from, &args, &connect);
    }
    let to = match &args.to {
        Some(t) => t.as_str(),
        None => required(&to_state, "--to")?,
    };
    super::warn_about_passwords(&[from, to]);
    let job = MigrateJob {
        from: from.to_owned(),
        to: to.to_owned(),
        tables: args.tables.clone(),
        exclude: args.exclude.clone(),
        schema_only: args.schema_only,
        data_only: args.data_only,
        dry_run: args.dry_run,
        jobs: args.jobs.max(1),
        on_error: args.on_error,
        rejects_dir: args.rejects.clone(),
        validate: !args.no_validate,
        backup: args.backup.clone(),
        backup_key: args.keys.source(),
        state: args.resume.clone().unwrap_or_else(|| args.state.clone()),
        resume: args.resume.is_some(),
        cast_rules: args.cast_rules.clone(),
        connect,
        progress: !args.quiet,
    };
    migrate_paths(&job, args.report.as_deref()).check()?;
    let report = migrate(&job)?;
    eprintln!("{}", report.summary());
    if let Some(path) = &args.report {
        report.write_json(path)?;
    }
    if report.valid == Some(false) {
        return Err(Error::data(
            crate::error::Stage::Sink,
            crate::error::Position::default(),
            "the migrated data does not match the source (see the report above)",
        ));
    }
    Ok(())
}

/// Every path a migration reads and writes: SQLite files, the state file, the report, the rejects and
/// backup folders' files, the cast rules and key files.
fn migrate_paths(job: &MigrateJob, report: Option<&Path>) -> RunPaths {
    let mut paths = RunPaths::new();
    for (flag, text) in [("--from", &job.from), ("--to", &job.to)] {
        if let Ok(Db::Sqlite(file)) = Db::parse(text, flag) {
            paths.database(flag, &file);
        }
    }
    let state_flag = if job.resume { "--resume" } else { "--state" };
    paths.write(state_flag, &job.state);
    if let Some(report) = report {
        paths.write("--report", report);
    }
    if job.on_error != ErrorPolicy::Strict {
        let label = "--rejects";
        paths.write_family(label, &job.rejects_dir, "", false, &[".rejects.ndjson"]);
    }
    if let Some(dir) = &job.backup {
        paths.write("--backup (its backup.json)", &dir.join("backup.json"));
        let suffixes = [
            ".ndjson.zst",
            ".ndjson.zst.sha256",
            ".ndjson.zst.enc",
            ".ndjson.zst.enc.sha256",
        ];
        paths.write_family("--backup", dir, "", false, &suffixes);
    }
    if let Some(rules) = &job.cast_rules {
        paths.read("--cast-rules", rules);
    }
    match &job.backup_key {
        Some(KeySource::KeyFile(file)) => {
            paths.read("--key-file", file);
        }
        Some(KeySource::PassphraseFile(file)) => {
            paths.read("--passphrase-file", file);
        }
        _ => {}
    }
    paths
}

fn show_plan(from: &str, args: &MigrateArgs, connect: &ConnectOptions) -> Result<()> {
    let rules = match &args.cast_rules {
        Some(path) => CastRules::load(path)?,
        None => CastRules::default(),
    };
    let db = Db::parse(from, "--from")?;
    let mut conn = db.open(connect, false)?;
    let plan = build_plan(
        &mut conn,
        &db.label(),
        &rules,
        &args.tables,
        &args.exclude,
        args.jobs,
    )?;
    if args.plan {
        print!("{}", plan.render());
    }
    if args.ddl {
        let ddl = plan.ddl();
        println!("-- before the data");
        for stmt in &ddl.create {
            println!("{stmt};");
        }
        println!("-- after the data");
        for stmt in &ddl.after_data {
            println!("{stmt};");
        }
    }
    Ok(())
}

const DIFF_EXAMPLES: &str = "Examples:
  ferry diff app.db postgres://app@db/app                 # every table of app.db
  ferry diff app.db postgres://app@db/app --table users --limit 20
  ferry diff postgres://app@db/app fallback.db

SRC's schema decides each column's type; both sides are read as that type and compared as canonical values
(numbers, dates, JSON and booleans compare by value, not spelling), rows in any order.
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
    if let Some(report) = &args.report {
        let mut paths = RunPaths::new();
        for (label, text) in [("SRC", &args.source), ("DST", &args.target)] {
            if let Ok(Db::Sqlite(file)) = Db::parse(text, label) {
                paths.database(label, &file);
            }
        }
        paths.write("--report", report).check()?;
    }
    let job = DiffJob {
        source: args.source,
        target: args.target,
        tables: args.table,
        limit: args.limit,
        cast_rules: args.cast_rules,
        connect: connect_options(0, 10),
    };
    let diffs = diff(&job)?;
    print!("{}", render(&diffs));
    if let Some(path) = &args.report {
        let text = serde_json::to_string_pretty(&diffs)
            .map_err(|e| Error::usage(format!("cannot encode the report: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| {
            Error::io(
                crate::error::Stage::Sink,
                Some(&path.display().to_string()),
                e,
            )
        })?;
    }
    let different = diffs.iter().filter(|d| !d.equal()).count();
    if different > 0 {
        return Err(Error::data(
            crate::error::Stage::Source,
            crate::error::Position::default(),
            format!("{different} of {} table(s) differ", diffs.len()),
        ));
    }
    Ok(())
}
