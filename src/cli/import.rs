//! `ferry import`: a bundle into a database. Turns the flags into an [`ImportJob`], runs it with an observer
//! that prints each table as it is loaded, and prints the summary.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::db::OnConflict;
use crate::env::Environment;
use crate::error::Result;
use crate::observe::Observer;
use crate::tenant::{import, ImportJob};

const EXAMPLES: &str = "Examples:
  # PGPASSWORD or DATABASE_URL give the password
  ferry import user123.bundle.json.gz --to postgres://app@db/app
  ferry import user123.bundle.json.gz.enc --to postgres --key-file export.key
  ferry import user123.bundle.json --to app.db --on-conflict overwrite
  # two users from two databases into one, each with new keys
  ferry import alice.bundle.json --to merged.db --remap-keys
  ferry import bob.bundle.json --to merged.db --remap-keys
  ferry import user123.bundle.manifest.json --to postgres --dry-run

The checksum and counts are verified before the target is touched. Every table
is then loaded in foreign-key order in one transaction, which also creates the
tables the target lacks (with the bundle's column types, keys and foreign
keys); any failure rolls it back, leaving the target as it was. Rows the tenant
refers to (a lookup row, another user) are skipped when their key is already
there.

Exit codes: 0 imported, 1 failed (tampered bundle, a conflict, a database
error), 2 usage or configuration, 130 cancelled.";

/// Arguments of `ferry import`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ImportArgs {
    /// The bundle (or a split set's NAME.manifest.json).
    #[arg(value_name = "BUNDLE")]
    bundle: Option<PathBuf>,

    /// The target database: sqlite://PATH, a .db path, postgres://…, `postgres` or `sqlite`.
    #[arg(long, value_name = "DATABASE")]
    to: Option<String>,

    /// A row whose key is already there: error (the default: "already exists"), skip, overwrite, merge.
    #[arg(long, value_name = "MODE", default_value = "error")]
    on_conflict: OnConflict,

    /// Give database-generated keys new values on the target and rewrite every foreign key to them, so
    /// users from different databases merge without collisions.
    #[arg(long)]
    remap_keys: bool,

    /// Require every table to exist on the target (by default missing ones are created).
    #[arg(long)]
    no_create_tables: bool,

    /// Do everything inside the transaction, then roll it back.
    #[arg(long)]
    dry_run: bool,

    /// Read the tenant's rows back before committing and compare counts and checksums.
    #[arg(long)]
    validate: bool,

    #[command(flatten)]
    keys: super::KeyArgs,

    /// The most bytes decompression may produce (a bomb stops there).
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size, default_value = "16GiB")]
    max_decompressed_size: u64,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    #[command(flatten)]
    connect: super::connect::ConnectArgs,

    /// No per-table lines (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,

    /// Print the job these flags make (JSON, no password) and exit.
    #[arg(long)]
    print_job: bool,
}

/// Runs `ferry import`.
pub fn run(args: ImportArgs, env: &Environment) -> Result<()> {
    let job = ImportJob {
        bundle: args.bundle.clone(),
        to: args.to.clone(),
        key: args.keys.source(),
        on_conflict: args.on_conflict,
        remap_keys: args.remap_keys,
        create_tables: !args.no_create_tables,
        dry_run: args.dry_run,
        validate: args.validate,
        max_decompressed_size: args.max_decompressed_size,
        connect: args.connect.options(),
        report: args.report.clone(),
    };
    if args.print_job {
        return super::export::print_job("import", &job);
    }
    run_job(&job, env, args.quiet)
}

/// Runs an import job as `ferry import` (and `ferry run`) does: per-table lines unless `quiet`, the
/// summary, the report file when asked.
pub(super) fn run_job(job: &ImportJob, env: &Environment, quiet: bool) -> Result<()> {
    super::warn_about_passwords(&[job.to.as_deref().unwrap_or("")]);
    let observer: Arc<dyn Observer> = match quiet {
        true => Arc::new(crate::observe::Silent),
        false => Arc::new(super::migrate::Lines),
    };
    let (ctx, _signals) = super::context(observer)?;
    let result = import(job, env, &ctx);
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
    eprintln!("{}", report.summary());
    Ok(())
}
