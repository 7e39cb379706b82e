//! The command line (clap derive): one file per subcommand. Parses arguments into jobs, runs them, prints
//! the report; the binary only maps the result to an exit code.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use std::path::Path;

use crate::error::{Error, Result};
use crate::report::Report;

mod convert;
mod formats;
mod keygen;
mod migrate;
mod serve;
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
  ferry convert --in samples/legacy.csv --template std-context --to contexts.ndjson
  ferry convert --in samples/legacy.csv --template std-context --to contexts.ndjson --dry-run
  ferry convert --in samples/legacy.csv --template std-context --to sqlite://contexts.db
  DATABASE_URL=postgres://app@localhost/app ferry convert --in legacy.csv --template std-context --to postgres
  ferry validate --in samples/legacy.csv --template std-context
  ferry convert --in export.json --to export.md
  cat data.ndjson | ferry convert --in - --from-format ndjson --to - --to-format csv
  ferry formats
  ferry templates list
  ferry migrate --from sqlite://app.db --plan
  ferry migrate --from sqlite://app.db --to postgres --report migrate.json
  ferry diff app.db postgres";

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
    /// Serve the data-migration REST API (export, import, validate, operations, templates) over HTTP.
    Serve(serve::ServeArgs),
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
    match cli.command {
        Command::Convert(args) => convert::run(*args),
        Command::Validate(args) => validate::run(*args),
        Command::Templates(args) => templates::run(args),
        Command::Formats(args) => formats::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Migrate(args) => migrate::run(*args),
        Command::Diff(args) => migrate::run_diff(args),
        Command::Serve(_) => unreachable!("handled above"),
    }
}

/// How many record errors are printed on stderr (the report file lists up to 100, the rejects file all).
const ERRORS_SHOWN: usize = 20;

/// Prints the record errors (lenient runs) and the summary line, and writes the JSON report if asked.
pub(crate) fn finish_report(report: &Report, path: Option<&Path>, quiet: bool) -> Result<()> {
    for error in report.errors.iter().take(ERRORS_SHOWN) {
        eprintln!("ferry: {}", error.message);
    }
    let unshown = report
        .rejected
        .saturating_sub(ERRORS_SHOWN.min(report.errors.len()) as u64);
    if !report.errors.is_empty() && unshown > 0 {
        let whereto = report
            .rejects_file
            .as_deref()
            .map(|f| format!(" (all are in {f})"))
            .unwrap_or_default();
        eprintln!("ferry: ... and {unshown} more rejected records{whereto}");
    }
    if !quiet {
        eprintln!("{}", report.summary_line());
    }
    if let Some(path) = path {
        report.write_json(path)?;
    }
    Ok(())
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

/// An endpoint as reports and messages show it: a database URL without its password.
pub(crate) fn shown_endpoint(text: &str) -> String {
    match crate::endpoint::Endpoint::parse(text) {
        Ok(endpoint) => endpoint.display_name(),
        Err(_) if text.contains("://") => "(unparsable URL)".to_owned(),
        Err(_) => crate::secret::redact(text).into_owned(),
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

/// Parses a one-character option such as `--delimiter`: a single ASCII character, or `tab` / `\t`.
pub(crate) fn parse_byte(text: &str) -> std::result::Result<u8, String> {
    match text {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() => Ok(text.as_bytes()[0]),
        _ => Err(format!(
            "expected one ASCII character (or `tab`), got {text:?}"
        )),
    }
}
