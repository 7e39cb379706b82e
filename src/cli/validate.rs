//! `ferry validate`: read, map and validate every record, write nothing, and say which records fail.

use std::path::PathBuf;

use clap::Args;

use super::convert::InputArgs;
use super::progress::ProgressMode;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::job::{ConvertJob, ErrorPolicy, DEFAULT_BATCH_SIZE};

const EXAMPLES: &str = "Examples:
  # Would this legacy export load through the standard context template?
  ferry validate --in samples/legacy.csv --template std-context

  # Check records against a schema without mapping them
  ferry validate --in samples/contexts.json --schema \\
    schemas/context.schema.json

Exit codes: 0 every record is valid, 1 some records are invalid (each is
listed), 2 usage or configuration error.";

/// Arguments of `ferry validate`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ValidateArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Map records through this template (a name or a path) before validating.
    #[arg(long, value_name = "NAME|PATH")]
    template: Option<String>,

    /// Validate against this JSON Schema (instead of, or in addition to, the template's).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Records per batch.
    #[arg(long, value_name = "N", env = "FERRY_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Worker threads for mapping and validation (default: one per core but one).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,

    /// Print only the summary.
    #[arg(long, short)]
    quiet: bool,
}

/// Runs `ferry validate`.
pub fn run(args: ValidateArgs, env: &Environment) -> Result<()> {
    if args.template.is_none() && args.schema.is_none() {
        return Err(Error::usage(
            "ferry validate needs --template or --schema (or both)",
        ));
    }
    let mut job = ConvertJob::new("", "-");
    args.input.apply(&mut job);
    job.output_format = Some("ndjson".into());
    job.template = args.template.clone();
    job.schema = args.schema.clone();
    job.on_error = ErrorPolicy::Lenient;
    job.dry_run = true;
    job.validate_only = true;
    job.batch_size = args.batch_size;
    job.jobs = args.jobs;
    job.report = args.report.clone();
    // One verdict: the summary line when every record is valid, else the error that ends the run (the
    // invalid records are listed before it).
    let (ctx, _signals) =
        super::context(super::progress::observer(ProgressMode::Auto, args.quiet))?;
    let result = crate::pipeline::convert(&job, env, &ctx);
    let report = super::finish_report(result, &job, true)?;
    let c = &report.counts;
    if c.rejected == 0 {
        if !args.quiet {
            eprintln!("{}", report.summary_line());
        }
        return Ok(());
    }
    Err(Error::data(
        crate::error::Stage::Validate,
        crate::error::Position::file(report.input.clone()),
        format!(
            "{} of {} records are invalid (read {} = valid {} + invalid {} + filtered {} + skipped {})",
            c.rejected, c.read, c.read, c.written, c.rejected, c.filtered, c.skipped
        ),
    ))
}
