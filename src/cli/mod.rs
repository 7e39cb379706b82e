//! The command line (clap derive): one file per subcommand. Parses arguments into jobs, runs them, prints
//! the report; the binary only maps the result to an exit code.

use std::ffi::OsString;

use clap::{Parser, Subcommand};

use crate::error::{Error, Result};

mod convert;
mod formats;

/// ferry moves records between formats: CSV, TSV, JSON, NDJSON, XML, YAML and Markdown tables.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  ferry convert --in samples/legacy.csv --to contexts.ndjson
  ferry convert --in export.json --to export.md
  cat data.ndjson | ferry convert --in - --from-format ndjson --to - --to-format csv
  ferry formats";

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert records from one file or format to another.
    Convert(convert::ConvertArgs),
    /// List the formats ferry reads and writes.
    Formats(formats::FormatsArgs),
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
    match cli.command {
        Command::Convert(args) => convert::run(args),
        Command::Formats(args) => formats::run(args),
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
