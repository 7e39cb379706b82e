//! `ferry convert`: one input to one output, through the pipeline.

use std::path::PathBuf;

use clap::Args;

use super::progress::ProgressMode;
use crate::db::OnConflict;
use crate::env::Environment;
use crate::envelope::CompressionSpec;
use crate::error::Result;
use crate::format::{parse_byte, FormatOptions};
use crate::job::{ConvertJob, ErrorPolicy, Job, DEFAULT_BATCH_SIZE};

const EXAMPLES: &str = "Examples:
  # A legacy CSV export, mapped, cleaned and validated by the standard
  # context template; or the same thing positionally
  ferry convert --in samples/legacy.csv --template std-context \\
    --to contexts.ndjson
  ferry convert samples/legacy.csv contexts.ndjson --template std-context

  # See what would happen first: every record is read, mapped and
  # validated, nothing is written
  ferry convert samples/legacy.csv -o contexts.ndjson \\
    --template std-context --dry-run

  # Keep going past bad records; they go to
  # contexts.ndjson.rejects.ndjson with their reasons
  ferry convert old.csv contexts.ndjson --template std-context \\
    --on-error lenient

  # Semicolon-separated Latin-1 CSV without a header, naming the columns
  ferry convert old.csv out.json --delimiter ';' --encoding latin1 \\
    --no-header --columns id,name

  # Some fields of some records, renamed, sorted, the first 10
  ferry convert orders.csv top.json --where 'amount > 100' \\
    --select id,amount,customer:cust --sort amount:desc --limit 10

  # Load into a new SQLite table: column types are inferred from the
  # first records (see them with --dry-run), or given with --types
  ferry convert orders.csv 'sqlite://shop.db?table=orders' \\
    --types zip=string,total=decimal --key id --dry-run

  # Into PostgreSQL (DATABASE_URL, else the PG* variables)
  ferry convert samples/legacy.csv postgres --template std-context

  # Upsert on the template's key; a dry run does it all in a
  # transaction that is rolled back
  ferry convert update.ndjson postgres --template std-context \\
    --on-conflict merge --dry-run

  # Read a table or a query back out
  ferry convert 'sqlite://contexts.db?table=contexts' contexts.ndjson
  ferry convert --to notes.csv \\
    'postgres://app@db/app?query=SELECT * FROM contexts WHERE type = $$note$$'

  # Parts of 50 MB with a manifest listing each part's records, size
  # and SHA-256; a checksum file
  ferry convert 'sqlite://app.db?table=contexts' contexts.ndjson \\
    --split-size 50MB
  ferry convert contexts.manifest.json all.csv
  ferry convert export.json export.csv --checksum

  # An encrypted gzip export, and reading it back with the same key
  ferry keygen export.key
  ferry convert 'sqlite://app.db?table=contexts' \\
    contexts.ndjson.gz.enc --key-file export.key
  ferry convert contexts.ndjson.gz.enc contexts.csv --key-file export.key

  # Standard input to standard output
  cat data.ndjson | ferry convert - - --from-format ndjson --to-format yaml

  # Incremental: each run reads only rows changed since the last one
  # (the mark is kept in the target); rows gone from the source are
  # deleted from the target too
  ferry convert 'sqlite://app.db?table=orders' \\
    'postgres://app@db/app?table=orders' \\
    --incremental updated_at --key id --deletes delete
  # Into files: each run adds a part to orders.manifest.json, holding
  # back the last 5 seconds of rows for the next run
  ferry convert 'sqlite://app.db?table=orders' orders.ndjson.gz \\
    --incremental updated_at --lag 5s

  # Keep the job these flags make, and run it again later
  ferry convert samples/legacy.csv contexts.ndjson --template std-context \\
    --print-job > job.json
  ferry run job.json

The output is written under a temporary name and renamed only when the
run succeeds: a failed run leaves no partial file behind. A database load
runs in one transaction (unless --commit-every), so a failed run leaves
the table as it was. Ctrl-C (SIGINT), SIGTERM and SIGHUP cancel the run
the same way: the output is not written, a load is rolled back.
Passwords: put them in DATABASE_URL or PGPASSWORD, not in a URL on the
command line, where other users can see them. Exit codes: 0 ok, 1 the
run failed (bad data or output), 2 usage or configuration error, 3 the
run succeeded but rejected records and --fail-on-rejects was given,
128 + the signal's number when a signal cancelled the run (130 for
Ctrl-C).";

/// Where records come from and how to read them (shared by `convert` and `validate`).
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Input: a file path, - for standard input, or a database: sqlite://FILE?table=T|query=SELECT…,
    /// postgres://USER@HOST:PORT/DB?table=T|query=…, or postgres (DATABASE_URL, then PG* variables).
    #[arg(
        long = "in",
        value_name = "PATH|URL",
        required_unless_present = "input_arg"
    )]
    input_flag: Option<String>,

    /// The input, as the first argument instead of --in.
    #[arg(value_name = "IN", conflicts_with = "input_flag")]
    input_arg: Option<String>,

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

    /// Accept malformed CSV quoting as it comes: a quote inside an unquoted field is kept as text, text after
    /// a closing quote is appended, an unterminated quote runs to the end of the input (by default each is an
    /// error naming its line and column).
    #[arg(long)]
    csv_lenient_quotes: bool,

    /// Read CSV/Markdown cells that hold a JSON array or object back as nested values.
    #[arg(long)]
    json_cells: bool,

    /// Character encoding of the input (e.g. latin1, windows-1252, utf-16le); default UTF-8.
    #[arg(long, value_name = "LABEL")]
    encoding: Option<String>,

    /// CSV/Markdown text that stands for null, both ways (e.g. '\N' or NULL): a cell holding exactly it
    /// is read as null, and null is written as it, so null and empty text stay apart. Default: none (null
    /// is written as an empty cell, and an empty cell is read as empty text).
    #[arg(long, value_name = "TEXT")]
    pub null_marker: Option<String>,

    #[command(flatten)]
    keys: super::KeyArgs,

    /// Read the input as it is although it should be encrypted (its name ends in .enc, a key option was
    /// given for it, or its manifest says so) and is not. Without it such an input is refused.
    #[arg(long)]
    allow_plaintext: bool,

    /// Stop with an error once a compressed input has given this many bytes (guards against compression
    /// bombs): 16GiB by default.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size)]
    max_decompressed_size: Option<u64>,

    /// The most input one record may take (a CSV row, an NDJSON line, a JSON array element, an XML
    /// record element): a larger one stops the run, naming it. Bounds memory whatever the input.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size, default_value = "64MiB")]
    max_record_size: u64,

    /// The most input a format that is read whole (YAML, Markdown) may take; parsing needs some 15 to 30
    /// times as much memory.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size, default_value = "64MiB")]
    max_document_size: u64,

    /// Workbooks (xlsx, xls, ods): the sheet to read, by name or number from 1 (default: the first).
    #[arg(long, value_name = "NAME|N")]
    sheet: Option<String>,

    /// Workbooks: the sheet row (from 1) that holds the field names (default: the first row with a value).
    #[arg(long, value_name = "N")]
    header_row: Option<u32>,
}

impl InputArgs {
    /// The input, from --in or the first argument.
    pub fn input(&self) -> String {
        self.input_flag
            .clone()
            .or_else(|| self.input_arg.clone())
            .unwrap_or_default()
    }

    /// Fills the input side of `job`.
    pub fn apply(&self, job: &mut ConvertJob) {
        job.input = self.input();
        job.input_format = self.from_format.clone();
        job.key_source = self.keys.source();
        job.allow_plaintext = self.allow_plaintext;
        if let Some(max) = self.max_decompressed_size {
            job.max_decompressed = max;
        }
        job.read_options = FormatOptions {
            delimiter: self.delimiter,
            quote: self.quote,
            escape: self.escape,
            comment: self.comment,
            header: !self.no_header,
            columns: self.columns.clone(),
            allow_ragged: self.allow_ragged,
            csv_lenient_quotes: self.csv_lenient_quotes,
            json_cells: self.json_cells,
            encoding: self.encoding.clone(),
            max_record_size: self.max_record_size,
            max_document_size: self.max_document_size,
            null_marker: self.null_marker.clone(),
            sample_records: crate::infer::DEFAULT_SAMPLE_RECORDS,
            projection: None,
            declared: Vec::new(),
            input_columns: Default::default(),
            parquet: Default::default(),
            excel: crate::format::ExcelOptions {
                sheet: self.sheet.clone(),
                header_row: self.header_row,
            },
        };
    }
}

/// Arguments of `ferry convert`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ConvertArgs {
    #[command(flatten)]
    input: InputArgs,

    /// Output: a file path, - for standard output, or a database table: sqlite://FILE?table=T (or a bare
    /// .db/.sqlite path), postgres://USER@HOST:PORT/DB?table=T, or postgres (DATABASE_URL, then PG*).
    #[arg(
        long = "to",
        short = 'o',
        visible_alias = "output",
        value_name = "PATH|URL",
        required_unless_present = "output_arg"
    )]
    output_flag: Option<String>,

    /// The output, as the second argument instead of --to / -o.
    #[arg(value_name = "OUT", conflicts_with = "output_flag")]
    output_arg: Option<String>,

    /// Create the output's folder when it does not exist (without it, a missing folder is an error that
    /// names it).
    #[arg(long)]
    mkdir: bool,

    /// Keep only the records for which this CEL expression is true (the rest count as filtered), e.g.
    /// 'amount > 100 && country == "NL"'. Fields are variables; `record["Order ID"]` reads any name. With
    /// a template it sees the mapped record.
    #[arg(long = "where", value_name = "EXPR")]
    filter: Option<String>,

    /// Keep only these fields, in this order; FIELD:NEW renames (id,name:full_name). A record without a
    /// field gets null.
    #[arg(long, value_name = "FIELDS")]
    select: Vec<String>,

    /// Write at most N records (after --where; with --sort, the first N in order), then stop reading.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// Sort the output by these fields, FIELD:desc for largest first (country,amount:desc). Numbers
    /// (also as text) sort as numbers, nulls last; ties keep their input order. Memory is bounded by
    /// --sort-memory: beyond it sorted runs spill to temporary files in TMPDIR.
    #[arg(long, value_name = "FIELDS")]
    sort: Vec<String>,

    /// The most record data --sort holds in memory before it spills a sorted run to disk.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size, default_value = "256MiB")]
    sort_memory: u64,

    /// Column types for a table ferry creates, over the inferred ones (id=integer,zip=string); the
    /// fields' values are converted to them for every output. Types: string, integer, number, decimal,
    /// boolean, date, datetime, timestamp, json, bytes.
    #[arg(long, value_name = "FIELD=TYPE,...", value_parser = crate::infer::parse_types)]
    types: Vec<Vec<(String, crate::infer::Kind)>>,

    /// How many of the first records a new table's column types, a CSV or Markdown header (the union of
    /// their fields) are taken from (for a table, at most the first batch).
    #[arg(long, value_name = "N", default_value_t = crate::infer::DEFAULT_SAMPLE_RECORDS)]
    sample_records: usize,

    /// The table to load when the URL has no ?table= (default: the template's target table).
    #[arg(long, value_name = "NAME")]
    table: Option<String>,

    /// Key columns for --on-conflict, comma-separated (default: the template's target key, else the
    /// table's primary key). A table ferry creates gets them as its primary key.
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    key: Vec<String>,

    /// What a record whose key is already in the table does: error (rejected, with the database's
    /// message), skip (the row stays), overwrite (the record replaces it), merge (non-null values
    /// overwrite; JSON objects are merged key by key).
    #[arg(long, value_name = "MODE", default_value_t = OnConflict::Error,
          value_parser = super::one_of::<OnConflict>(OnConflict::ALL.map(|m| m.name().into())))]
    on_conflict: OnConflict,

    /// Read only rows whose COLUMN (integer, timestamp, date or ISO-time text) is past the last run's
    /// mark, from a sqlite:// or postgres:// table or query. The mark is kept in _ferry_state in a
    /// database target (written with the rows) or in the manifest of a file target (each run adds a part).
    /// The first run reads everything. Into a database, rows are upserted by --key (default: the table's
    /// primary key) with --on-conflict (default: overwrite).
    #[arg(long, value_name = "COLUMN")]
    incremental: Option<String>,

    /// With --incremental: leave the newest values for the next run, as rows with them may still be
    /// being written: a time (5s, 2m, 1h, 1d) for time cursors, a number of values for integer ones.
    #[arg(long, value_name = "DURATION|N", requires = "incremental")]
    lag: Option<String>,

    /// With --incremental into a database: target rows whose key has gone from the source table are
    /// deleted (detect, delete), listed in the report (list), or marked with the time in a column
    /// (soft:COLUMN). Found by comparing both key sets in key order.
    #[arg(long, value_name = "WHAT", requires = "incremental",
          value_parser = super::sync::parse_deletes)]
    deletes: Option<crate::sync::Deletes>,

    /// Commit a database load every N records instead of once at the end (for very large loads). A failed
    /// run then says the last committed record, for --resume.
    #[arg(long, value_name = "N")]
    commit_every: Option<u64>,

    /// Skip the first N records, committed by an earlier run with --commit-every (they count as skipped).
    #[arg(long, value_name = "N")]
    resume: Option<u64>,

    /// Split the output into parts of about this size (after compression and encryption): 50MB, 1GiB, …
    /// Parts break at record boundaries and are complete files; OUTPUT's stem names them (out-00001.csv …)
    /// and a manifest (out.manifest.json) lists each with its record count, size and SHA-256.
    #[arg(long, value_name = "SIZE", value_parser = crate::envelope::split::parse_size)]
    split_size: Option<u64>,

    /// Split the output into parts of this many records.
    #[arg(long, value_name = "N")]
    split_records: Option<u64>,

    /// Also write OUTPUT.sha256 (the format `sha256sum -c` checks).
    #[arg(long)]
    checksum: bool,

    /// Compress the output: gzip, brotli, zstd or none, with an optional level (gzip:9, zstd:19). Default:
    /// what the output's name says (.gz, .br, .zst), else none. gzip and zstd use every core.
    #[arg(long, value_name = "KIND[:LEVEL]")]
    compress: Option<CompressionSpec>,

    /// Encrypt the output with AES-256-GCM (also implied by a name ending in .enc); the key comes from
    /// --key-file, --key-env, --passphrase-env, --passphrase-file, or FERRY_KEY.
    #[arg(long)]
    encrypt: bool,

    #[command(flatten)]
    connect: super::connect::ConnectArgs,

    /// Output format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    to_format: Option<String>,

    /// CSV/TSV output field delimiter (default: the format's own).
    #[arg(long, value_name = "CHAR", value_parser = parse_byte)]
    out_delimiter: Option<u8>,

    /// Parquet output: page compression (a Parquet option, not an outer layer).
    #[arg(long, value_name = "CODEC", default_value = "snappy")]
    parquet_compression: crate::format::ParquetCompression,

    /// Parquet output: rows per row group (the writer holds one row group in memory).
    #[arg(long, value_name = "N", default_value_t = 122_880)]
    row_group_size: usize,

    /// Map records through this template: a name (templates/NAME.yaml, $FERRY_TEMPLATES, built-in) or a path.
    #[arg(long, value_name = "NAME|PATH")]
    template: Option<String>,

    /// Validate records against this JSON Schema (with or without a template; a template's own schema is
    /// used when this is not given).
    #[arg(long, value_name = "FILE")]
    schema: Option<PathBuf>,

    /// What a bad record does: strict stops the run and writes nothing; lenient sets it aside in the
    /// rejects file, goes on and lists every error; skip sets it aside and only counts it.
    #[arg(long, value_name = "POLICY", default_value_t = ErrorPolicy::Strict,
          value_parser = super::one_of::<ErrorPolicy>(super::error_policies()))]
    on_error: ErrorPolicy,

    /// Where rejected records go (default: OUTPUT.rejects.ndjson beside the output).
    #[arg(long, value_name = "FILE")]
    rejects: Option<PathBuf>,

    /// Read, map, validate and encode everything, write nothing, and report what would happen.
    #[arg(long)]
    dry_run: bool,

    /// Exit with code 3 when the run succeeded but rejected records (lenient or skip); the output and
    /// the rejects file stay.
    #[arg(long)]
    fail_on_rejects: bool,

    /// Records per batch, at most. Into a database a batch (one savepoint, one round trip) also ends
    /// after about 1 MiB of input; into a file, where a batch only passes between threads, after about
    /// 256 KiB (and, with one worker, 1,024 records).
    #[arg(long, value_name = "N", env = "FERRY_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Worker threads for mapping and validation (default: one per core but one; 1 maps on the writing thread).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,

    /// Progress display: a bar on a terminal (auto), a bar (bar; what --progress alone means), JSON lines
    /// on stderr (json), or none.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ProgressMode::Auto,
          num_args = 0..=1, default_missing_value = "bar")]
    progress: ProgressMode,

    /// Write the run report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,

    /// Print the job these flags make (JSON, no password) and exit without running it; `ferry run FILE`
    /// runs it.
    #[arg(long)]
    print_job: bool,
}

impl ConvertArgs {
    /// The job the flags describe.
    fn job(&self) -> ConvertJob {
        let output = self
            .output_flag
            .clone()
            .or_else(|| self.output_arg.clone())
            .unwrap_or_default();
        let mut job = ConvertJob::new(self.input.input(), output);
        self.input.apply(&mut job);
        job.output_format = self.to_format.clone();
        job.write_options = FormatOptions {
            delimiter: self.out_delimiter,
            null_marker: self.input.null_marker.clone(),
            parquet: crate::format::ParquetOptions {
                compression: self.parquet_compression,
                row_group_size: self.row_group_size,
            },
            ..FormatOptions::default()
        };
        job.filter = self.filter.clone();
        job.select = self.select.clone();
        job.limit = self.limit;
        job.sort = self.sort.clone();
        job.sort_memory = self.sort_memory;
        job.types = self.types.concat();
        job.sample_records = self.sample_records;
        job.mkdir = self.mkdir;
        job.template = self.template.clone();
        job.schema = self.schema.clone();
        job.on_error = self.on_error;
        job.rejects = self.rejects.clone();
        job.dry_run = self.dry_run;
        job.fail_on_rejects = self.fail_on_rejects;
        job.batch_size = self.batch_size;
        job.jobs = self.jobs;
        job.table = self.table.clone();
        job.key = self.key.clone();
        job.on_conflict = self.on_conflict;
        job.incremental = self.incremental.clone();
        job.lag = self.lag.clone();
        job.deletes = self.deletes.clone().unwrap_or_default();
        job.commit_every = self.commit_every;
        job.resume_after = self.resume;
        job.split = crate::envelope::split::SplitOptions {
            max_bytes: self.split_size,
            max_records: self.split_records,
        };
        job.checksum = self.checksum;
        job.report = self.report.clone();
        job.compress = self.compress;
        job.encrypt = self.encrypt;
        job.connect = self.connect.options();
        job
    }
}

/// Runs `ferry convert` (or prints its job).
pub fn run(args: ConvertArgs, env: &Environment) -> Result<()> {
    let job = args.job();
    if args.print_job {
        println!("{}", Job::Convert(job).to_json());
        return Ok(());
    }
    super::run_convert(&job, env, args.progress, args.quiet).map(drop)
}
