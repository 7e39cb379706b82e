//! `ferry convert`: one input to one output, through the pipeline.

use std::path::PathBuf;

use clap::Args;

use super::parse_byte;
use crate::error::{Error, Result};
use crate::format::FormatOptions;
use crate::pipeline::{convert, ConvertJob, DEFAULT_BATCH_SIZE};

const EXAMPLES: &str = "Examples:
  # A legacy CSV export to NDJSON
  ferry convert --in samples/legacy.csv --to contexts.ndjson

  # Semicolon-separated Latin-1 CSV without a header, naming the columns
  ferry convert --in old.csv --delimiter ';' --encoding latin1 --no-header --columns id,name --to out.json

  # Standard input to standard output
  cat data.ndjson | ferry convert --in - --from-format ndjson --to - --to-format yaml

  # Keep a machine-readable report of the run
  ferry convert --in samples/contexts.json --to contexts.xml --report run.json

The output is written under a temporary name and renamed only when the run succeeds: a failed run leaves
no partial file behind. Exit codes: 0 ok, 1 the run failed (bad data or output), 2 usage error.";

/// Arguments of `ferry convert`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ConvertArgs {
    /// Input: a file path, or - for standard input.
    #[arg(long = "in", value_name = "PATH")]
    input: String,

    /// Output: a file path, or - for standard output.
    #[arg(long = "to", value_name = "PATH")]
    output: String,

    /// Input format, when the extension does not tell (see `ferry formats`).
    #[arg(long, value_name = "FORMAT")]
    from_format: Option<String>,

    /// Output format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    to_format: Option<String>,

    /// CSV/TSV input field delimiter (one character, or `tab`).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    delimiter: Option<u8>,

    /// CSV/TSV output field delimiter (default: the format's own).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    out_delimiter: Option<u8>,

    /// CSV quote character.
    #[arg(long, value_name = "CHAR", value_parser = parse_byte, default_value = "\"")]
    quote: u8,

    /// CSV escape character for quotes inside quoted fields (default: a doubled quote, as in RFC 4180).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    escape: Option<u8>,

    /// CSV comment character: input lines starting with it are skipped.
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    comment: Option<u8>,

    /// The CSV input has no header row (columns are named column1, column2, ... unless --columns is given).
    #[arg(long)]
    no_header: bool,

    /// Column names for CSV input, comma-separated: they replace the header row (or name the columns of a
    /// file without one).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',')]
    columns: Option<Vec<String>>,

    /// Pad CSV rows that have fewer fields than the header with nulls (extra fields are kept as columnN).
    #[arg(long)]
    allow_ragged: bool,

    /// Read CSV/Markdown cells that hold a JSON array or object back as nested values.
    #[arg(long)]
    json_cells: bool,

    /// Character encoding of the input (e.g. latin1, windows-1252, utf-16le); default UTF-8.
    #[arg(long, value_name = "LABEL")]
    encoding: Option<String>,

    /// Records per batch.
    #[arg(long, value_name = "N", env = "FERRY_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Write the run report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

impl ConvertArgs {
    fn job(&self) -> Result<ConvertJob> {
        let encoding = match &self.encoding {
            None => None,
            Some(label) => Some(
                encoding_rs::Encoding::for_label(label.as_bytes()).ok_or_else(|| {
                    Error::usage(format!(
                        "unknown encoding {label:?}; try utf-8, latin1, windows-1252, utf-16le"
                    ))
                })?,
            ),
        };
        let read_options = FormatOptions {
            delimiter: self.delimiter,
            quote: self.quote,
            escape: self.escape,
            comment: self.comment,
            header: !self.no_header,
            columns: self.columns.clone(),
            allow_ragged: self.allow_ragged,
            json_cells: self.json_cells,
            encoding,
        };
        let write_options = FormatOptions {
            delimiter: self.out_delimiter,
            quote: self.quote,
            ..FormatOptions::default()
        };
        Ok(ConvertJob {
            input: self.input.clone(),
            output: self.output.clone(),
            input_format: self.from_format.clone(),
            output_format: self.to_format.clone(),
            read_options,
            write_options,
            batch_size: self.batch_size,
        })
    }
}

/// Runs `ferry convert`.
pub fn run(args: ConvertArgs) -> Result<()> {
    let job = args.job()?;
    match convert(&job) {
        Ok(report) => {
            if !args.quiet {
                eprintln!("{}", report.summary_line());
            }
            if let Some(path) = &args.report {
                report.write_json(path)?;
            }
            Ok(())
        }
        Err(error) => {
            if let Some(path) = &args.report {
                let mut report = crate::report::Report {
                    ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
                    input: job.input.clone(),
                    output: job.output.clone(),
                    ..Default::default()
                };
                report.push_error(&error);
                // The run's own error matters more than a failure to write its report.
                let _ = report.write_json(path);
            }
            Err(error)
        }
    }
}
