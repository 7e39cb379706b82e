//! `ferry convert`: one input to one output, through the pipeline.

use std::path::PathBuf;

use clap::Args;

use super::parse_byte;
use crate::error::{Error, Result};
use crate::format::FormatOptions;
use crate::pipeline::{convert, ConvertJob, ErrorPolicy, DEFAULT_BATCH_SIZE};
use crate::progress::ProgressMode;

const EXAMPLES: &str = "Examples:
  # A legacy CSV export, mapped, cleaned and validated by the standard context template
  ferry convert --in samples/legacy.csv --template std-context --to contexts.ndjson

  # See what would happen first: every record is read, mapped and validated, nothing is written
  ferry convert --in samples/legacy.csv --template std-context --to contexts.ndjson --dry-run

  # Keep going past bad records; they go to contexts.ndjson.rejects.ndjson with their reasons
  ferry convert --in old.csv --template std-context --on-error lenient --to contexts.ndjson

  # Semicolon-separated Latin-1 CSV without a header, naming the columns
  ferry convert --in old.csv --delimiter ';' --encoding latin1 --no-header --columns id,name --to out.json

  # Standard input to standard output
  cat data.ndjson | ferry convert --in - --from-format ndjson --to - --to-format yaml

The output is written under a temporary name and renamed only when the run succeeds: a failed run leaves
no partial file behind. Exit codes: 0 ok, 1 the run failed (bad data or output), 2 usage error.";

/// Where records come from and how to read them (shared by `convert` and `validate`).
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Input: a file path, or - for standard input.
    #[arg(long = "in", value_name = "PATH")]
    pub input: String,

    /// Input format, when the extension does not tell (see `ferry formats`).
    #[arg(long, value_name = "FORMAT")]
    from_format: Option<String>,

    /// CSV/TSV input field delimiter (one character, or `tab`).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    delimiter: Option<u8>,

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
}

impl InputArgs {
    /// Fills the input side of `job`.
    pub fn apply(&self, job: &mut ConvertJob) -> Result<()> {
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
        job.input = self.input.clone();
        job.input_format = self.from_format.clone();
        job.read_options = FormatOptions {
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
        Ok(())
    }
}

/// Arguments of `ferry convert`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ConvertArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Output: a file path, or - for standard output.
    #[arg(long = "to", value_name = "PATH")]
    output: String,

    /// Output format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    to_format: Option<String>,

    /// CSV/TSV output field delimiter (default: the format's own).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    out_delimiter: Option<u8>,

    /// Map records through this template: a name (templates/NAME.yaml, $FERRY_TEMPLATES, built-in) or a path.
    #[arg(long, value_name = "NAME|PATH")]
    template: Option<String>,

    /// Validate records against this JSON Schema (with or without a template; a template's own schema is
    /// used when this is not given).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,

    /// What a bad record does: strict stops the run and writes nothing; lenient sets it aside in the
    /// rejects file, goes on and lists every error; skip sets it aside and only counts it.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = ErrorPolicy::Strict)]
    on_error: ErrorPolicy,

    /// Where rejected records go (default: OUTPUT.rejects.ndjson beside the output).
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,

    /// Read, map, validate and encode everything, write nothing, and report what would happen.
    #[arg(long)]
    dry_run: bool,

    /// Records per batch.
    #[arg(long, value_name = "N", env = "FERRY_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Worker threads for mapping and validation (default: one per core but one; 1 maps on the writing thread).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,

    /// Progress display: a bar on a terminal (auto), JSON lines on stderr (json), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,

    /// Write the run report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

impl ConvertArgs {
    fn job(&self) -> Result<ConvertJob> {
        let mut job = ConvertJob::new(self.input.input.clone(), self.output.clone());
        self.input.apply(&mut job)?;
        job.output_format = self.to_format.clone();
        job.write_options = FormatOptions {
            delimiter: self.out_delimiter,
            ..FormatOptions::default()
        };
        job.template = self.template.clone();
        job.schema = self.schema.clone();
        job.on_error = self.on_error;
        job.rejects = self.rejects.clone();
        job.dry_run = self.dry_run;
        job.batch_size = self.batch_size;
        job.jobs = self.jobs;
        job.progress = self.progress;
        job.quiet = self.quiet;
        Ok(job)
    }
}

/// Runs `ferry convert`.
pub fn run(args: ConvertArgs) -> Result<()> {
    let job = args.job()?;
    match convert(&job) {
        Ok(report) => super::finish_report(&report, args.report.as_deref(), args.quiet),
        Err(error) => {
            if let Some(path) = &args.report {
                let mut report = crate::report::Report {
                    ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
                    input: job.input.clone(),
                    output: job.output.clone(),
                    on_error: job.on_error.name().to_owned(),
                    dry_run: job.dry_run,
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
