//! `ferry shards status|finish JOB` and `ferry run JOB --shard I`: the command-line face of sharded runs.
//! Planning, running, the ledger and merging are the library's ([`crate::shard`]); this prints what they say.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::progress::ProgressMode;
use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::job::{Job, JobReport};
use crate::shard::{Outcome, ShardedJob};

const EXAMPLES: &str = "Examples:
  ferry plan-shards job.json --by range:id --shards 8 -o sharded.json
  ferry shards list sharded.json | \\
    xargs -P 4 -I{} ferry run sharded.json --shard {}
  ferry shards list sharded.json --pending    # the shards still to (re)run
  ferry shards status sharded.json
  ferry shards finish sharded.json     # file outputs: one manifest

`status` reads the target: the `_ferry_shards` ledger table of a database
(each shard's row is committed with its rows), or each shard's own manifest
for a file output. It lists every shard as done, failed or missing, and the
total counts of the done ones.

Exit codes: status: 0 every shard is done, 1 some are not; finish: 0 merged,
1 a shard is missing or a part does not match; 2 usage or configuration error.";

/// Arguments of `ferry shards`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ShardsArgs {
    #[command(subcommand)]
    command: ShardsCommand,
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// List every shard of a sharded job as done, failed or missing, with the total counts.
    Status {
        /// The sharded job file (what `ferry plan-shards` wrote).
        #[arg(value_name = "JOB")]
        path: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the shard numbers of a sharded job, one a line (for xargs or GNU parallel).
    List {
        /// The sharded job file.
        #[arg(value_name = "JOB")]
        path: PathBuf,
        /// Only the shards that are not done (missing or failed), read from the target.
        #[arg(long)]
        pending: bool,
    },
    /// Merge the shards' part sets of a file output into one set with one manifest.
    Finish {
        /// The sharded job file.
        #[arg(value_name = "JOB")]
        path: PathBuf,
    },
}

/// Runs `ferry shards`.
pub fn run(args: ShardsArgs, env: &Environment) -> Result<()> {
    match args.command {
        ShardsCommand::Status { path, json } => {
            let job = ShardedJob::read(&path)?;
            let status = crate::shard::status(&job, env)?;
            if json {
                let text = serde_json::to_string_pretty(&status).unwrap_or_default();
                super::print_out(&format!("{text}\n"))?;
            } else {
                super::print_out(&status.render())?;
            }
            match status.complete {
                true => Ok(()),
                false => Err(Error::data(
                    Stage::Sink,
                    Position::default(),
                    format!(
                        "job {} is not complete: {} of {} shards done",
                        status.job_id,
                        status.count("done"),
                        status.shards.len()
                    ),
                )),
            }
        }
        ShardsCommand::List { path, pending } => {
            let job = ShardedJob::read(&path)?;
            let numbers: Vec<u32> = match pending {
                false => (0..job.shards.len() as u32).collect(),
                true => crate::shard::status(&job, env)?
                    .shards
                    .iter()
                    .filter(|s| s.status != "done")
                    .map(|s| s.shard)
                    .collect(),
            };
            let text: String = numbers.iter().map(|n| format!("{n}\n")).collect();
            super::print_out(&text)
        }
        ShardsCommand::Finish { path } => {
            let job = ShardedJob::read(&path)?;
            let finished = crate::shard::finish(&job, env)?;
            let what = if finished.already {
                "already merged"
            } else {
                "merged"
            };
            eprintln!(
                "ferry: {what}: {} ({} parts, {} records)",
                finished.manifest, finished.parts, finished.records
            );
            Ok(())
        }
    }
}

/// `ferry run JOB --shard I`: runs one shard, or says that an earlier attempt committed it.
pub(crate) fn run_shard(
    job: &ShardedJob,
    index: &str,
    env: &Environment,
    progress: ProgressMode,
    quiet: bool,
) -> Result<()> {
    let index: usize = index.trim().parse().map_err(|_| {
        Error::usage(format!(
            "--shard {index:?}: not a shard number (0, 1, …); with a Kubernetes Indexed Job pass \
             --shard \"$JOB_COMPLETION_INDEX\""
        ))
    })?;
    let shard_job = job.job_of(index)?;
    let observer: Arc<dyn crate::observe::Observer> = match &shard_job {
        Job::Convert(_) => super::progress::observer(progress, quiet),
        _ => Arc::new(crate::observe::Silent),
    };
    let (ctx, _signals) = super::context(observer)?;
    let result = job.run(index, env, &ctx);
    let (outcome, error) = match result {
        Ok(outcome) => (outcome, None),
        Err(failed) => (failed.report, Some(failed.error)),
    };
    match (outcome, &shard_job) {
        (Outcome::AlreadyDone(said), _) if error.is_none() => {
            if !quiet {
                eprintln!("ferry: {said}; nothing to do");
            }
            Ok(())
        }
        (Outcome::Ran(JobReport::Convert(report)), Job::Convert(convert)) => {
            let result = match error {
                None => Ok(report),
                Some(error) => Err(Box::new(crate::observe::Failed { report, error })),
            };
            super::finish_report(result, convert, quiet).map(drop)
        }
        (Outcome::Ran(report), _) => {
            if !quiet || error.is_some() {
                let counts = crate::shard::counts_of(&report);
                eprintln!(
                    "ferry: shard {index}: {} read, {} written, {} rejected, {} skipped",
                    counts.read, counts.written, counts.rejected, counts.skipped
                );
            }
            error.map_or(Ok(()), Err)
        }
        (_, _) => error.map_or(Ok(()), Err),
    }
}
