//! `ferry head`, `ferry count`, `ferry headers` and `ferry describe`: the first things to do with an
//! unknown export. Each turns its flags into a convert job (`head` is `convert --limit N` to standard
//! output, `count` a dry run) or calls [`crate::describe::describe`]; the library does the reading.

use clap::Args;

use super::convert::InputArgs;
use super::progress::ProgressMode;
use crate::env::Environment;
use crate::error::Result;
use crate::job::ConvertJob;

const HEAD_EXAMPLES: &str = "Examples:
  ferry head orders.csv
  ferry head -n 3 export.ndjson.gz --to-format yaml
  ferry head 'sqlite://app.db?table=users' -n 5";

const COUNT_EXAMPLES: &str = "Examples:
  ferry count orders.csv
  ferry count parts.manifest.json";

const HEADERS_EXAMPLES: &str = "Examples:
  ferry headers orders.csv
  ferry headers export.json --sample-records 100000
  # a workbook's sheets, one a line; then one sheet's field names
  ferry headers book.xlsx
  ferry headers book.xlsx --sheet Sales";

const DESCRIBE_EXAMPLES: &str = "Examples:
  ferry describe orders.csv
  ferry describe export.ndjson --json
  ferry describe big.csv --sample-records 10000

Types are inferred as a new table's columns are: integer, decimal, number,
boolean, date, datetime (timestamp without an offset), json, string. Nulls
count records without a value (null, an empty CSV cell, or no such field).";

/// Arguments of `ferry head`.
#[derive(Debug, Args)]
#[command(after_help = HEAD_EXAMPLES)]
pub struct HeadArgs {
    #[command(flatten)]
    input: InputArgs,

    /// How many records.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
    lines: u64,

    /// Output format (default: the input's, NDJSON for a database).
    #[arg(long, value_name = "FORMAT")]
    to_format: Option<String>,
}

/// Arguments of `ferry count`.
#[derive(Debug, Args)]
#[command(after_help = COUNT_EXAMPLES)]
pub struct CountArgs {
    #[command(flatten)]
    input: InputArgs,
}

/// Arguments of `ferry headers` and `ferry describe`.
#[derive(Debug, Args)]
#[command(after_help = DESCRIBE_EXAMPLES)]
pub struct DescribeArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Read only the first N records (describe reads them all by default; headers reads 4096).
    #[arg(long, value_name = "N")]
    sample_records: Option<u64>,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `ferry headers`.
#[derive(Debug, Args)]
#[command(after_help = HEADERS_EXAMPLES)]
pub struct HeadersArgs {
    #[command(flatten)]
    input: InputArgs,

    /// How many of the first records the field names are gathered from.
    #[arg(long, value_name = "N", default_value_t = crate::infer::DEFAULT_SAMPLE_RECORDS as u64)]
    sample_records: u64,
}

fn input_job(input: &InputArgs) -> ConvertJob {
    let mut job = ConvertJob::new("", "-");
    input.apply(&mut job);
    job
}

/// Runs `ferry head`: the first N records to standard output, in the input's format.
pub fn head(args: HeadArgs, env: &Environment) -> Result<()> {
    let mut job = input_job(&args.input);
    job.limit = Some(args.lines);
    job.output_format = match args.to_format {
        Some(format) => Some(format),
        None => Some(input_format(&job)),
    };
    job.write_options.null_marker = job.read_options.null_marker.clone();
    super::run_convert(&job, env, ProgressMode::None, true).map(drop)
}

/// The input's format name for `head`'s output: the format it is read in, NDJSON for a database.
fn input_format(job: &ConvertJob) -> String {
    job.input_format
        .clone()
        .or_else(|| {
            crate::format_from_path(std::path::Path::new(&job.input)).map(|f| f.name.to_owned())
        })
        .unwrap_or_else(|| "ndjson".to_owned())
}

/// Runs `ferry count`: reads every record and prints how many there are.
pub fn count(args: CountArgs, env: &Environment) -> Result<()> {
    let mut job = input_job(&args.input);
    job.output_format = Some("ndjson".to_owned());
    job.dry_run = true;
    let (ctx, _signals) = super::context(super::progress::observer(ProgressMode::Auto, false))?;
    let report = crate::pipeline::convert(&job, env, &ctx).map_err(|failed| failed.error)?;
    super::print_out(&format!("{}\n", report.counts.read))
}

/// Runs `ferry headers`: the field names of the first records, one a line.
pub fn headers(args: HeadersArgs, env: &Environment) -> Result<()> {
    let job = input_job(&args.input);
    // A workbook without --sheet: its sheets, one a line (`--sheet NAME` then gives a sheet's fields).
    if job.read_options.excel.sheet.is_none() {
        if let Some(sheets) = crate::format::sheet_names(std::path::Path::new(&job.input))? {
            return super::print_out(&sheets.iter().map(|s| format!("{s}\n")).collect::<String>());
        }
    }
    let (ctx, _signals) = super::context(std::sync::Arc::new(crate::observe::Silent))?;
    let description = crate::describe::describe(&job, env, &ctx, Some(args.sample_records))?;
    let names: String = description
        .fields
        .iter()
        .map(|f| format!("{}\n", f.name))
        .collect();
    super::print_out(&names)
}

/// Runs `ferry describe`: each field's type, null count, smallest and largest value.
pub fn describe(args: DescribeArgs, env: &Environment) -> Result<()> {
    let job = input_job(&args.input);
    let (ctx, _signals) = super::context(std::sync::Arc::new(crate::observe::Silent))?;
    let description = crate::describe::describe(&job, env, &ctx, args.sample_records)?;
    if args.json {
        let text = serde_json::to_string_pretty(&description).unwrap_or_default();
        super::print_out(&format!("{text}\n"))
    } else {
        super::print_out(&description.render())
    }
}
