//! `ferry export`: one tenant's rows into a bundle. Turns the flags into an [`ExportJob`], runs it with an
//! observer that prints each table as it is written, and prints the plan (`--plan`) or the summary.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::env::Environment;
use crate::error::{Error, Result, Stage};
use crate::observe::Observer;
use crate::tenant::{export, ExportJob, Root};

const EXAMPLES: &str = "Examples:
  # what would be exported, and why
  ferry export --tenant users:123 --from app.db --plan
  ferry export --tenant users:123 --from app.db --to user123.bundle.json.gz
  ferry export --tenant 'users:email=a@b.c' --from postgres \\
    --to user.bundle.json.zst.enc --key-file k.key
  ferry export --tenant users:123 --from app.db --to user123.bundle.ndjson \\
    --split-size 50MB
  ferry export --tenant users:123 --from app.db --spec subset.yaml \\
    --include countries --to u.bundle.json

From the root row, foreign keys are followed downstream (rows that reference
the user's rows are the user's) and upstream (rows they reference are taken as
references). Passwords are left out, tokens, secrets and keys replaced by
[ENCRYPTED], values that look like password hashes or tokens redacted; the
report lists every column so treated. --no-sanitize is allowed only into an
encrypted bundle.

Exit codes: 0 exported, 1 failed (user not found, a database error), 2 usage or
configuration, 130 cancelled.";

/// Arguments of `ferry export`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ExportArgs {
    /// The tenant's root row: TABLE:KEY (users:123) or TABLE:COLUMN=VALUE (users:email=a@b.c).
    #[arg(long, value_name = "TABLE:KEY")]
    tenant: Option<Root>,

    /// The source database: sqlite://PATH, a .db path, postgres://…, `postgres` (DATABASE_URL / PG*) or
    /// `sqlite` (DB_PATH).
    #[arg(long, value_name = "DATABASE")]
    from: Option<String>,

    /// The bundle: NAME.bundle.json, with .gz/.zst/.br to compress and .enc to encrypt; NAME.bundle.ndjson…
    /// with --split-size or --split-records.
    #[arg(long, value_name = "FILE")]
    to: Option<PathBuf>,

    /// The subset spec (YAML): relations, exclude, stop, include, columns (omit/redact/hash/keep), marker,
    /// casts.
    #[arg(long, value_name = "FILE")]
    spec: Option<PathBuf>,

    /// Lookup tables taken whole (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    include: Vec<String>,

    /// Keep passwords and tokens (only into an encrypted bundle).
    #[arg(long)]
    no_sanitize: bool,

    /// Encrypt even when the name does not end in .enc.
    #[arg(long)]
    encrypt: bool,

    #[command(flatten)]
    keys: super::KeyArgs,

    /// Compression: gzip, brotli, zstd or none, with an optional :LEVEL (default from the name).
    #[arg(long, value_name = "KIND[:LEVEL]")]
    compress: Option<String>,

    /// Split into NDJSON parts of about this size (each table in parts of its own) with a manifest.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size)]
    split_size: Option<u64>,

    /// Split into NDJSON parts of at most this many rows.
    #[arg(long, value_name = "N")]
    split_records: Option<u64>,

    /// Also write <bundle>.sha256.
    #[arg(long)]
    checksum: bool,

    /// Print the traversal (tables, key paths, row counts, sanitizing) and write nothing.
    #[arg(long)]
    plan: bool,

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

impl ExportArgs {
    fn job(&self) -> ExportJob {
        ExportJob {
            tenant: self.tenant.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            spec: self.spec.clone(),
            include: self.include.clone(),
            sanitize: !self.no_sanitize,
            encrypt: self.encrypt,
            key: self.keys.source(),
            compress: self.compress.clone(),
            split_size: self.split_size,
            split_records: self.split_records,
            checksum: self.checksum,
            plan: self.plan,
            connect: self.connect.options(),
            report: self.report.clone(),
        }
    }
}

/// Prints a job as its job file: `{"job": NAME, …}`.
pub(super) fn print_job<T: serde::Serialize>(name: &str, job: &T) -> Result<()> {
    let mut value = serde_json::to_value(job)
        .map_err(|e| Error::io(Stage::Sink, Some("-"), std::io::Error::other(e)))?;
    if let Some(map) = value.as_object_mut() {
        let mut file = serde_json::Map::new();
        file.insert("job".into(), name.into());
        file.extend(std::mem::take(map));
        *map = file;
    }
    let text = serde_json::to_string_pretty(&value)
        .map_err(|e| Error::io(Stage::Sink, Some("-"), std::io::Error::other(e)))?;
    println!("{text}");
    Ok(())
}

/// Runs `ferry export`.
pub fn run(args: ExportArgs, env: &Environment) -> Result<()> {
    let job = args.job();
    if args.print_job {
        return print_job("export", &job);
    }
    run_job(&job, env, args.quiet)
}

/// Runs an export job as `ferry export` (and `ferry run`) does: per-table lines unless `quiet`, the plan
/// or the summary, the report file when asked.
pub(super) fn run_job(job: &ExportJob, env: &Environment, quiet: bool) -> Result<()> {
    super::warn_about_passwords(&[job.from.as_deref().unwrap_or("")]);
    let observer: Arc<dyn Observer> = match quiet || job.plan {
        true => Arc::new(crate::observe::Silent),
        false => Arc::new(super::migrate::Lines),
    };
    let (ctx, _signals) = super::context(observer)?;
    let result = export(job, env, &ctx);
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
    if job.plan {
        print!("{}", report.render_plan());
    } else {
        eprintln!("{}", report.summary());
    }
    Ok(())
}
