//! `ferry plan-shards JOB`: splits a job file into shards ([`crate::shard::plan`]) and writes the job file
//! with its `shards` list, for `ferry run JOB --shard I`.

use std::path::PathBuf;

use clap::Args;

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::shard::{By, Plan, ShardedJob};

const EXAMPLES: &str = "Examples:
  # 8 shards by ranges of an integer key (split at the data's quantiles)
  ferry plan-shards job.json --by range:id --shards 8 -o sharded.json
  # one shard per part of a split input (the job's input is NAME.manifest.json)
  ferry plan-shards job.json --by parts -o sharded.json
  # one shard per file
  ferry plan-shards job.json --by files exports/*.csv -o sharded.json
  # a tenant migration: its tenant list in 16 slices
  ferry plan-shards tenants-job.json --by tenants --shards 16 -o sharded.json
  ferry run sharded.json --shard 3

The plan keeps the job as it was and adds \"job_id\" and \"shards\": each shard
replaces the job's input (a file, a part, a key range's query), its file output
(each shard writes its own parts; `ferry shards finish` merges them) or its
tenants. The job id (default: a digest of the plan) names the job in the
target's `_ferry_shards` ledger.";

/// Arguments of `ferry plan-shards`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct PlanShardsArgs {
    /// The job file to split (what `--print-job` printed), or - for standard input.
    #[arg(value_name = "JOB")]
    path: PathBuf,

    /// How to split: range:COLUMN (an integer key of the input table), parts (of a split input), files
    /// (the FILES given), tenants (of a tenant migration).
    #[arg(long, value_name = "HOW")]
    by: String,

    /// How many shards (range, tenants).
    #[arg(long, value_name = "N", default_value_t = 4)]
    shards: usize,

    /// The input files (with --by files).
    #[arg(value_name = "FILES")]
    files: Vec<String>,

    /// The job id in the ledger (default: a digest of the plan).
    #[arg(long, value_name = "ID")]
    job_id: Option<String>,

    /// Where to write the sharded job file (default: standard output).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `ferry plan-shards`.
pub fn run(args: PlanShardsArgs, env: &Environment) -> Result<()> {
    let text = if args.path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Error::config(format!("cannot read the job from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(&args.path).map_err(|e| {
            Error::config(format!(
                "cannot read the job file {}: {e}",
                args.path.display()
            ))
        })?
    };
    let job = ShardedJob::from_json(&text)?.job;
    let by = match args.by.as_str() {
        "parts" => By::Parts,
        "files" => By::Files(args.files.clone()),
        "tenants" => By::Tenants {
            shards: args.shards,
        },
        other => match other.strip_prefix("range:") {
            Some(column) if !column.is_empty() => By::Range {
                column: column.to_owned(),
                shards: args.shards,
            },
            _ => {
                return Err(Error::usage(format!(
                    "--by {other}: say range:COLUMN, parts, files or tenants"
                )))
            }
        },
    };
    if !args.files.is_empty() && !matches!(by, By::Files(_)) {
        return Err(Error::usage("FILES are only taken with --by files"));
    }
    let sharded = crate::shard::plan(
        &Plan {
            job,
            by,
            job_id: args.job_id,
        },
        env,
    )?;
    let text = format!("{}\n", sharded.to_json());
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            Error::io(
                crate::error::Stage::Sink,
                Some(&path.display().to_string()),
                e,
            )
        })?,
        None => super::print_out(&text)?,
    }
    eprintln!(
        "ferry: job {}: {} shards",
        sharded.job_id,
        sharded.shards.len()
    );
    Ok(())
}
