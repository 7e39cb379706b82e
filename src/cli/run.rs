//! `ferry run JOB`: runs a job file — what `ferry convert … --print-job` or `ferry migrate … --print-job`
//! printed, or what a program wrote — exactly as the command line that made it would have.

use std::io::Read as _;
use std::path::PathBuf;

use clap::Args;

use super::progress::ProgressMode;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::shard::ShardedJob;

const EXAMPLES: &str = "Examples:
  ferry convert --in samples/legacy.csv --template std-context --to \\
    contexts.ndjson --print-job > job.json
  ferry run job.json
  ferry migrate --from app.db --to postgres --print-job | ferry run -

A job file is JSON: {\"job\": \"convert\", \"input\": …, \"output\": …},
{\"job\": \"migrate\", \"from\": …, \"to\": …}, {\"job\": \"export\", \"tenant\": …,
\"from\": …, \"to\": …} or {\"job\": \"import\", \"bundle\": …, \"to\": …}, every other
field optional (--print-job shows them all). A job `ferry plan-shards` split has
\"job_id\" and \"shards\" too: run each shard with --shard I. Relative paths are
relative to the folder ferry runs in. A job file holds no secret: give passwords
in PGPASSWORD or DATABASE_URL and keys in a file or variable the job names. The
report goes where the job's `report` says.

Exit codes: as for the job's command: 0 ok, 1 the run failed, 2 usage or
configuration error (a file that is not a job, or cannot be read), 128 + the
signal's number when a signal cancelled the run.";

/// Arguments of `ferry run`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// The job file (JSON), or - for standard input.
    #[arg(value_name = "JOB")]
    path: PathBuf,

    /// Progress display for a convert job: a bar on a terminal (auto), JSON lines on stderr (json), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,

    /// Run only shard I of a sharded job (from 0; `--shard "$JOB_COMPLETION_INDEX"` in a Kubernetes
    /// Indexed Job). A shard an earlier attempt committed is not run again.
    #[arg(long, value_name = "I")]
    shard: Option<String>,
}

/// Runs `ferry run`.
pub fn run(args: RunArgs, env: &Environment) -> Result<()> {
    let shown = args.path.display().to_string();
    let mut text = String::new();
    let read = if shown == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(&args.path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| Error::config(format!("cannot read the job file {shown}: {e}")))?;
    let sharded = ShardedJob::from_json(&text)
        .map_err(|e| Error::config(format!("{shown}: {}", e.message())))?;
    if let Some(index) = &args.shard {
        return super::shards::run_shard(&sharded, index, env, args.progress, args.quiet);
    }
    if !sharded.shards.is_empty() {
        return Err(Error::usage(format!(
            "{shown} has {} shards: run each with --shard I (0 to {}), e.g. from xargs -P or a Kubernetes \
             Indexed Job",
            sharded.shards.len(),
            sharded.shards.len() - 1
        )));
    }
    match sharded.job {
        Job::Convert(job) => super::run_convert(&job, env, args.progress, args.quiet).map(drop),
        Job::Migrate(job) => super::migrate::run_job(&job, env, args.quiet),
        Job::Export(job) => super::export::run_job(&job, env, args.quiet),
        Job::Import(job) => super::import::run_job(&job, env, args.quiet),
    }
}
