//! The command line (clap derive): one file per subcommand. Turns flags into a job, hands it to the library
//! with an observer (the progress bar or JSON lines) and a cancellation token (cancelled by SIGTERM, SIGINT
//! and SIGHUP), and turns the report into text; the binary only maps the result to an exit code.

use std::ffi::OsString;
use std::sync::Arc;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::interrupt::CancelOnSignals;
use crate::job::ConvertJob;
use crate::observe::{Observer, RunContext, RunResult};
use crate::report::Report;

mod completions;
mod connect;
mod convert;
mod databases;
mod export;
mod formats;
mod import;
mod inspect;
mod keygen;
mod migrate;
mod plan_shards;
pub mod progress;
mod run;
mod serve;
mod shards;
mod sync;
mod templates;
mod validate;
mod verify;

/// ferry moves records between formats (CSV, TSV, JSON, NDJSON, XML, YAML, Markdown tables) and databases
/// (SQLite, PostgreSQL).
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  ferry head orders.csv
  ferry describe orders.csv
  ferry convert samples/legacy.csv contexts.ndjson --template std-context
  ferry convert samples/legacy.csv contexts.ndjson --template std-context \\
    --dry-run
  ferry convert samples/legacy.csv sqlite://contexts.db --template std-context
  DATABASE_URL=postgres://app@localhost/app \\
    ferry convert legacy.csv postgres --template std-context
  ferry validate samples/legacy.csv --template std-context
  ferry convert export.json export.md
  cat data.ndjson | ferry convert - - --from-format ndjson --to-format csv
  ferry convert legacy.csv contexts.ndjson --template std-context \\
    --print-job > job.json
  ferry run job.json
  ferry formats
  ferry templates list
  ferry migrate --from sqlite://app.db --plan
  ferry migrate --from sqlite://app.db --to postgres --report migrate.json
  ferry diff app.db postgres
  ferry completions bash > ferry.bash";

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert records from one file or format to another.
    Convert(Box<convert::ConvertArgs>),
    /// Read, map and validate records without writing anything.
    Validate(Box<validate::ValidateArgs>),
    /// List, show or check templates.
    Templates(templates::TemplatesArgs),
    /// List the formats ferry reads and writes.
    Formats(formats::FormatsArgs),
    /// Check a split output against its manifest, or a file against its .sha256.
    Verify(verify::VerifyArgs),
    /// Write a new random encryption key to a file (mode 0600).
    Keygen(keygen::KeygenArgs),
    /// Migrate a whole database, SQLite to PostgreSQL or back: schema, rows, validation, resume, rollback.
    Migrate(Box<migrate::MigrateArgs>),
    /// Compare the tables of two databases row by row and show the first differing rows.
    Diff(migrate::DiffArgs),
    /// Keep a target database caught up with a source (cursor, checksum or SQLite triggers), until stopped.
    Sync(Box<sync::SyncArgs>),
    /// Serve the data-migration REST API (export, import, validate, operations, templates) over HTTP.
    Serve(serve::ServeArgs),
    /// Run a job file (what `convert --print-job` or `migrate --print-job` printed), or one of its shards.
    Run(run::RunArgs),
    /// Split a job file into shards that separate processes run (`ferry run JOB --shard I`).
    PlanShards(plan_shards::PlanShardsArgs),
    /// Where a sharded job stands (done, failed, missing shards), and merging a file output's shards.
    Shards(shards::ShardsArgs),
    /// Export everything that belongs to one user (tenant) into a sanitized, checksummed bundle.
    Export(Box<export::ExportArgs>),
    /// Verify a bundle and import it into a database in one transaction.
    Import(Box<import::ImportArgs>),
    /// List the configured databases (DB_TYPE, DATABASE_URL, DB_PATH) and whether they answer.
    Databases(databases::DatabasesArgs),
    /// Print the first records of an input (10 by default), in its own format.
    Head(Box<inspect::HeadArgs>),
    /// Count the records of an input.
    Count(Box<inspect::CountArgs>),
    /// Print the field names of an input's first records, one a line.
    Headers(Box<inspect::HeadersArgs>),
    /// Describe an input's fields: inferred type, values, nulls, smallest and largest value.
    Describe(Box<inspect::DescribeArgs>),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Print ferry's man page, or write every page into a folder.
    Man(completions::ManArgs),
}

/// Parses `args` (program name first) and runs the subcommand.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; real usage errors print clap's message and exit 2.
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Ok(())
                }
                _ => Err(Error::usage(
                    "invalid command line (see above; --help lists every option)",
                )),
            };
        }
    };
    // The service handles its signals itself: SIGTERM lets running operations finish, then cancels them.
    if let Command::Serve(args) = cli.command {
        return serve::run(args);
    }
    // From here on, a run may create temporary files: SIGTERM, SIGINT and SIGHUP remove them.
    crate::interrupt::remove_temp_files_on_signals()?;
    // The only place the library's runs get their environment from.
    let env = Environment::from_process();
    match cli.command {
        Command::Convert(args) => convert::run(*args, &env),
        Command::Validate(args) => validate::run(*args, &env),
        Command::Templates(args) => templates::run(args, &env),
        Command::Formats(args) => formats::run(args),
        Command::Verify(args) => verify::run(args, &env),
        Command::Keygen(args) => keygen::run(args),
        Command::Migrate(args) => migrate::run(*args),
        Command::Diff(args) => migrate::run_diff(args),
        Command::Sync(args) => sync::run(*args),
        Command::Serve(_) => unreachable!("handled above"),
        Command::Run(args) => run::run(args, &env),
        Command::PlanShards(args) => plan_shards::run(args, &env),
        Command::Shards(args) => shards::run(args, &env),
        Command::Export(args) => export::run(*args, &env),
        Command::Import(args) => import::run(*args, &env),
        Command::Databases(args) => databases::run(args, &env),
        Command::Head(args) => inspect::head(*args, &env),
        Command::Count(args) => inspect::count(*args, &env),
        Command::Headers(args) => inspect::headers(*args, &env),
        Command::Describe(args) => inspect::describe(*args, &env),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}

/// Prints `text` on standard output; a reader that went away (`| head`) ends the command quietly.
pub(crate) fn print_out(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(crate::error::Stage::Sink, None, e))
}

/// How many record errors are printed on stderr (the report file lists up to 100, the rejects file all).
const ERRORS_SHOWN: usize = 20;

/// A run's context for the command line: `observer`, and a token that SIGTERM, SIGINT and SIGHUP cancel
/// while the returned guard lives.
pub(crate) fn context(observer: Arc<dyn Observer>) -> Result<(RunContext, CancelOnSignals)> {
    let ctx = RunContext::new(observer);
    let guard = crate::interrupt::cancel_on_signals(&ctx.cancel)?;
    Ok((ctx, guard))
}

/// Runs a convert job with the progress display asked for, prints what it did and writes its report.
pub(crate) fn run_convert(
    job: &ConvertJob,
    env: &Environment,
    progress: progress::ProgressMode,
    quiet: bool,
) -> Result<Report> {
    warn_about_passwords(&[&job.input, &job.output]);
    let (ctx, _signals) = context(progress::observer(progress, quiet))?;
    finish_report(crate::pipeline::convert(job, env, &ctx), job, quiet)
}

/// Prints the record errors (lenient runs) and the summary line — of a failed or cancelled run too — and
/// writes the JSON report if the job asks for one. A job refused before it ran (exit 2) prints and writes
/// nothing: its `--report` may even be what the refusal is about (a `--report` that names the input).
pub(crate) fn finish_report(
    result: RunResult<Report>,
    job: &ConvertJob,
    quiet: bool,
) -> Result<Report> {
    let (report, error) = match result {
        Ok(report) => (report, None),
        Err(failed) if failed.error.exit_code() == 2 => return Err(failed.error),
        Err(failed) => (failed.report, Some(failed.error)),
    };
    // A reader that went away (`| head`) ends the run quietly.
    if !error.as_ref().is_some_and(Error::is_broken_pipe) {
        print_report(&report, error.is_some(), quiet);
    }
    let written = job.report.as_deref().map(|path| report.write_json(path));
    match (error, written) {
        // The run's own error matters more than a failure to write its report.
        (Some(error), _) => Err(error),
        (None, Some(Err(e))) => Err(e),
        (None, _) if job.fail_on_rejects => report.rejected_error().map_or(Ok(report), Err),
        (None, _) => Ok(report),
    }
}

/// Prints a report's record errors and its summary line (`quiet` leaves out the line of a run that
/// succeeded). The error that stopped a `failed` run is its last, and the binary prints it.
fn print_report(report: &Report, failed: bool, quiet: bool) {
    let listed = report.errors.len() - usize::from(failed);
    for error in report.errors.iter().take(listed.min(ERRORS_SHOWN)) {
        eprintln!("ferry: {}", error.message);
    }
    let unshown = report
        .counts
        .rejected
        .saturating_sub(ERRORS_SHOWN.min(listed) as u64);
    if listed > 0 && unshown > 0 {
        let whereto = report
            .rejects_file
            .as_deref()
            .map(|f| format!(" (all are in {f})"))
            .unwrap_or_default();
        eprintln!("ferry: ... and {unshown} more rejected records{whereto}");
    }
    if !quiet || failed {
        eprintln!("{}", report.summary_line());
    }
    if !quiet && !report.columns.is_empty() {
        let columns: Vec<String> = report
            .columns
            .iter()
            .map(|c| format!("{} {} ({})", c.name, c.type_name, c.from))
            .collect();
        let table = report.table.as_deref().unwrap_or_default();
        eprintln!("ferry: table {table:?} columns: {}", columns.join(", "));
    }
}

/// A value parser for a flag whose values a library type parses (`FromStr`): `--help` lists `values`.
pub(crate) fn one_of<T>(
    values: impl IntoIterator<Item = PossibleValue>,
) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    PossibleValuesParser::new(values).try_map(|text: String| text.parse::<T>())
}

/// The values of `--on-error`.
pub(crate) fn error_policies() -> Vec<PossibleValue> {
    crate::job::ErrorPolicy::ALL
        .iter()
        .map(|p| match p {
            crate::job::ErrorPolicy::Skip => PossibleValue::new(p.name()).alias("skip-errors"),
            _ => PossibleValue::new(p.name()),
        })
        .collect()
}

/// Where an encryption key or passphrase comes from (shared by every subcommand that reads or writes
/// encrypted files). Keys are never taken from the command line itself.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// The encryption key: a file with 32 raw bytes, 64 hex digits or base64 (make one with `ferry keygen`).
    /// Without a key option, FERRY_KEY (then EXPORT_ENCRYPTION_KEY) is used.
    #[arg(long, value_name = "FILE", group = "key_source")]
    key_file: Option<std::path::PathBuf>,

    /// The environment variable holding the key (hex or base64).
    #[arg(long, value_name = "NAME", group = "key_source")]
    key_env: Option<String>,

    /// The environment variable holding a passphrase (the key is derived with Argon2id).
    #[arg(long, value_name = "NAME", group = "key_source")]
    passphrase_env: Option<String>,

    /// A file holding a passphrase (its final line break is not part of it).
    #[arg(long, value_name = "FILE", group = "key_source")]
    passphrase_file: Option<std::path::PathBuf>,
}

impl KeyArgs {
    /// The source an option names, if any.
    pub(crate) fn source(&self) -> Option<crate::envelope::KeySource> {
        use crate::envelope::KeySource;
        let named = [
            self.key_file.clone().map(KeySource::KeyFile),
            self.key_env.clone().map(KeySource::Env),
            self.passphrase_env.clone().map(KeySource::PassphraseEnv),
            self.passphrase_file.clone().map(KeySource::PassphraseFile),
        ];
        named.into_iter().flatten().next()
    }
}

/// Warns when a database URL on the command line holds a password (other users can read it from `ps`).
pub(crate) fn warn_about_passwords(endpoints: &[&str]) {
    for text in endpoints {
        let Some((_, rest)) = text.split_once("://") else {
            continue;
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority
            .split_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
        {
            eprintln!(
                "ferry: warning: a password in a URL on the command line can be seen by other users; \
                 put it in PGPASSWORD or DATABASE_URL instead"
            );
        }
    }
}
