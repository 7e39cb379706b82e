//! The jobs every front end builds: plain serde data that says what to run, checked once by `build()`
//! against the run's [`Environment`] before anything is opened. The CLI turns flags into one
//! (`ferry convert … --print-job` prints it), a job file holds one (`ferry run job.json`), and the HTTP
//! service will make them from requests. A job never holds a secret: database URLs are kept without their
//! password, and keys are the names of files or variables.
//!
//! ```
//! let job: ferry::Job = serde_json::from_str(
//!     r#"{"job": "convert", "input": "in.csv", "output": "out.ndjson", "on_error": "lenient"}"#,
//! ).unwrap();
//! let ferry::Job::Convert(convert) = &job else { panic!() };
//! assert_eq!(convert.on_error, ferry::ErrorPolicy::Lenient);
//! assert!(serde_json::from_str::<ferry::Job>(r#"{"job": "convert", "inptu": "x"}"#).is_err());
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::{ConnectOptions, OnConflict};
use crate::env::Environment;
use crate::envelope::split::SplitOptions;
use crate::envelope::{CompressionSpec, KeySource, DEFAULT_MAX_DECOMPRESSED};
use crate::error::{Error, Result};
use crate::format::FormatOptions;
use crate::infer::{Kind, DEFAULT_SAMPLE_RECORDS};
use crate::migrate::{MigrateJob, MigrateReport};
use crate::observe::{Failed, RunContext, RunResult};
use crate::pipeline::BuiltConvert;
use crate::report::Report;

/// Default number of records per batch. 4096 beat 1024 by about 15% on the CSV → NDJSON benchmark
/// (BENCHMARKS.md), most likely because the encoding thread then reads records the decoding thread wrote
/// a while ago, from the shared cache rather than out of the other core's own.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// What a bad record (one that will not decode, map, validate or encode) does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// The first bad record fails the run, and nothing is written.
    #[default]
    Strict,
    /// Bad records go to the rejects file with their reasons; the run goes on and lists every error.
    Lenient,
    /// Bad records go to the rejects file; the run goes on and only counts them.
    #[serde(alias = "skip-errors")]
    Skip,
}

impl ErrorPolicy {
    /// Every policy, in the order `--help` lists them.
    pub const ALL: [ErrorPolicy; 3] =
        [ErrorPolicy::Strict, ErrorPolicy::Lenient, ErrorPolicy::Skip];

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorPolicy::Strict => "strict",
            ErrorPolicy::Lenient => "lenient",
            ErrorPolicy::Skip => "skip",
        }
    }
}

impl std::str::FromStr for ErrorPolicy {
    type Err = String;

    /// `strict`, `lenient` or `skip` (also `skip-errors`).
    fn from_str(text: &str) -> std::result::Result<ErrorPolicy, String> {
        match text {
            "skip-errors" => Ok(ErrorPolicy::Skip),
            _ => ErrorPolicy::ALL
                .into_iter()
                .find(|p| p.name() == text)
                .ok_or_else(|| format!("{text:?} is not one of strict, lenient, skip")),
        }
    }
}

impl std::fmt::Display for ErrorPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One conversion, as plain data: `ferry convert`'s flags, a job file's `{"job": "convert", …}`, or a
/// service's request. Everything but `input` and `output` has a default. [`ConvertJob::build`] checks it;
/// [`crate::convert`] builds and runs it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConvertJob {
    /// `--in`: a path, `-` (standard input, or the caller's stream), or a database URL.
    #[serde(with = "url_without_password")]
    pub input: String,
    /// `--to`: a path, `-` (standard output, or the caller's stream), or a database URL.
    #[serde(with = "url_without_password")]
    pub output: String,
    /// `--from-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_format: Option<String>,
    /// `--to-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    /// How to read the input.
    pub read_options: FormatOptions,
    /// How to write the output.
    pub write_options: FormatOptions,
    /// Records per batch, at most (a batch also ends after about 1 MiB of input; into a file, after about
    /// 256 KiB, and with one worker 1,024 records).
    pub batch_size: usize,
    /// The template (name or path) that maps records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A JSON Schema file (overrides the template's schema).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<PathBuf>,
    /// What a bad record does.
    pub on_error: ErrorPolicy,
    /// Where rejected records go (default: beside the output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects: Option<PathBuf>,
    /// Do everything but write.
    pub dry_run: bool,
    /// `--fail-on-rejects`: a run that succeeded but rejected records ends with exit code 3 (its output
    /// and rejects file stay); for the library, [`Report::rejected_error`] says so.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_on_rejects: bool,
    /// Only read, map and validate (`ferry validate`): implies `dry_run`.
    pub validate_only: bool,
    /// Worker threads for mapping and validation (default: one per core but one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<usize>,
    /// `--table`: the database table to load when the URL does not name one (default: the template's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// `--key`: the key columns for conflicts (default: the template's target key, else the primary key).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// `--on-conflict`: what a duplicate key does in a database load.
    pub on_conflict: OnConflict,
    /// `--commit-every N`: commit a database load every N records instead of once at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_every: Option<u64>,
    /// `--resume N`: records 1..=N were committed by an earlier run; they are read and counted as skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<u64>,
    /// Database connection retries and timeout (seconds).
    pub connect: ConnectOptions,
    /// `--split-size` / `--split-records`: write the output as parts with a manifest.
    pub split: SplitOptions,
    /// `--checksum`: write `<output>.sha256` beside an unsplit output.
    pub checksum: bool,
    /// `--compress`: the output's compression, `"gzip:6"` (default: from its extension chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<CompressionSpec>,
    /// `--encrypt`: encrypt the output (also when its name ends in `.enc`).
    pub encrypt: bool,
    /// Where the key or passphrase comes from — a file or a variable, never the key (default: `FERRY_KEY`,
    /// then `EXPORT_ENCRYPTION_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_source: Option<KeySource>,
    /// `--max-decompressed-size`: decompressed input bytes allowed.
    pub max_decompressed: u64,
    /// `--allow-plaintext`: read an input as it is although its name (`.enc`), a key option or its manifest
    /// says it should be encrypted.
    pub allow_plaintext: bool,
    /// `--types`: column types by field (`{"id": "integer"}`) for a table ferry creates, over what is
    /// inferred; the values of these fields are converted to them in every output.
    #[serde(with = "types_map", skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<(String, Kind)>,
    /// `--sample-records`: how many of the first records a new table's columns, a CSV or Markdown header,
    /// and inferred types are taken from.
    pub sample_records: usize,
    /// `--where`: a CEL expression; records for which it is not true are left out (counted as filtered).
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `--select`: the fields to keep, in this order, `old:new` renaming (`["id", "name:full_name"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub select: Vec<String>,
    /// `--limit`: write at most this many records, then stop reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `--sort`: order the output by these fields (`["country", "amount:desc"]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<String>,
    /// `--sort-memory`: bytes of records a sort holds before it spills a sorted run to a temporary file.
    pub sort_memory: u64,
    /// `--mkdir`: create a missing output folder (otherwise a missing folder is an error naming it).
    pub mkdir: bool,
    /// `--incremental`: the cursor column; only rows past the last run's mark are read, and the new mark
    /// is stored with what the run wrote ([`crate::sync::window`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<String>,
    /// `--lag`: how far behind the newest cursor value a run stops (`5s`, `1h`, or a number of values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<String>,
    /// `--deletes`: what an incremental load into a database does to target rows whose key has gone from
    /// the source.
    #[serde(skip_serializing_if = "is_ignore")]
    pub deletes: crate::sync::Deletes,
    /// `--report`: where the front end writes the JSON report. The run only checks that it names no file
    /// the run reads or writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

impl Default for ConvertJob {
    fn default() -> ConvertJob {
        ConvertJob {
            input: String::new(),
            output: String::new(),
            input_format: None,
            output_format: None,
            read_options: FormatOptions::default(),
            write_options: FormatOptions::default(),
            batch_size: DEFAULT_BATCH_SIZE,
            template: None,
            schema: None,
            on_error: ErrorPolicy::Strict,
            rejects: None,
            dry_run: false,
            fail_on_rejects: false,
            validate_only: false,
            jobs: None,
            table: None,
            key: Vec::new(),
            on_conflict: OnConflict::Error,
            commit_every: None,
            resume_after: None,
            connect: ConnectOptions::default(),
            split: SplitOptions::default(),
            checksum: false,
            compress: None,
            encrypt: false,
            key_source: None,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            allow_plaintext: false,
            types: Vec::new(),
            sample_records: DEFAULT_SAMPLE_RECORDS,
            filter: None,
            select: Vec::new(),
            limit: None,
            sort: Vec::new(),
            sort_memory: crate::sort::DEFAULT_SORT_MEMORY,
            mkdir: false,
            incremental: None,
            lag: None,
            deletes: crate::sync::Deletes::Ignore,
            report: None,
        }
    }
}

impl std::fmt::Debug for ConvertJob {
    /// The job as a job file shows it: no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "ConvertJob {text}")
    }
}

impl ConvertJob {
    /// A job from `input` to `output` with default options.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> ConvertJob {
        ConvertJob {
            input: input.into(),
            output: output.into(),
            ..ConvertJob::default()
        }
    }

    /// Checks the job before anything is opened for writing: endpoints, formats, template and schema
    /// compiled, keys resolved, every option and every path checked. A job that cannot run as configured is
    /// a configuration error (exit code 2).
    pub fn build(&self, env: &Environment) -> Result<BuiltConvert> {
        crate::pipeline::build(self, env)
    }
}

fn is_ignore(deletes: &crate::sync::Deletes) -> bool {
    *deletes == crate::sync::Deletes::Ignore
}

/// Database URLs in job files: written without a password, read as given.
mod url_without_password {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::migrate::state::without_password(url))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        String::deserialize(d)
    }
}

/// `--types` in job files: an object from field name to type name.
mod types_map {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::infer::Kind;

    pub fn serialize<S: Serializer>(types: &[(String, Kind)], s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(types.len()))?;
        for (name, kind) in types {
            map.serialize_entry(name, kind)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, Kind)>, D::Error> {
        let map = std::collections::BTreeMap::<String, Kind>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

/// A job file: one job, tagged with its kind — `{"job": "convert", …}` or `{"job": "migrate", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one job per run: its size does not matter
pub enum Job {
    /// A conversion.
    Convert(ConvertJob),
    /// A whole-database migration (or one tenant's, with `tenant`).
    Migrate(MigrateJob),
    /// One tenant's rows into a bundle.
    Export(crate::tenant::ExportJob),
    /// A bundle into a database.
    Import(crate::tenant::ImportJob),
}

/// What a job's run reports.
#[derive(Debug, Clone)]
pub enum JobReport {
    /// A conversion's report.
    Convert(Report),
    /// A migration's report.
    Migrate(MigrateReport),
    /// An export's report.
    Export(crate::tenant::ExportReport),
    /// An import's report.
    Import(crate::tenant::ImportReport),
}

impl Job {
    /// Reads a job file's text. A file that is not a job (unknown kind or field, wrong type) is a
    /// configuration error naming the line and column.
    pub fn from_json(text: &str) -> Result<Job> {
        serde_json::from_str(text).map_err(|e| Error::config(format!("not a ferry job: {e}")))
    }

    /// The job file's text (pretty JSON, no password).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Runs the job; the report comes back whether it succeeded or failed.
    pub fn run(&self, env: &Environment, ctx: &RunContext) -> RunResult<JobReport> {
        fn lift<R>(result: RunResult<R>, wrap: fn(R) -> JobReport) -> RunResult<JobReport> {
            result.map(wrap).map_err(|failed| {
                let Failed { report, error } = *failed;
                Box::new(Failed {
                    report: wrap(report),
                    error,
                })
            })
        }
        match self {
            Job::Convert(job) => lift(crate::pipeline::convert(job, env, ctx), JobReport::Convert),
            Job::Migrate(job) => lift(crate::migrate::migrate(job, env, ctx), JobReport::Migrate),
            Job::Export(job) => lift(crate::tenant::export(job, env, ctx), JobReport::Export),
            Job::Import(job) => lift(crate::tenant::import(job, env, ctx), JobReport::Import),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_convert_job_round_trips_through_its_json_without_secrets() {
        let mut job = ConvertJob::new("in.csv", "postgres://me:s3cret@db/app?table=t");
        job.compress = Some("zstd:19".parse().unwrap());
        job.key_source = Some(KeySource::Env("MY_KEY".into()));
        job.read_options.delimiter = Some(b';');
        job.read_options.encoding = Some("latin1".into());
        job.split.max_records = Some(10);
        let text = Job::Convert(job.clone()).to_json();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!format!("{job:?}").contains("s3cret"));
        for part in [
            r#""job": "convert""#,
            r#""compress": "zstd:19""#,
            r#""delimiter": ";""#,
            r#""encoding": "latin1""#,
            r#""key_env": "MY_KEY""#,
            r#""max_records": 10"#,
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
        let Job::Convert(back) = Job::from_json(&text).unwrap() else {
            panic!("not a convert job")
        };
        assert_eq!(back.output, "postgres://me@db/app?table=t");
        assert_eq!(
            ConvertJob {
                output: job.output.clone(),
                ..back
            },
            job
        );
    }

    #[test]
    fn job_files_are_checked_field_by_field() {
        let minimal = Job::from_json(r#"{"job": "convert", "input": "a.csv", "output": "b.json"}"#);
        let Ok(Job::Convert(job)) = minimal else {
            panic!("{minimal:?}")
        };
        assert_eq!(job.batch_size, DEFAULT_BATCH_SIZE);
        assert!(job.read_options.header);
        for bad in [
            r#"{"job": "convert", "input": "a", "output": "b", "batchsize": 1}"#,
            r#"{"job": "convert", "input": "a", "output": "b", "compress": "lzma"}"#,
            r#"{"job": "convert", "input": "a", "output": "b", "on_error": "sometimes"}"#,
            r#"{"job": "convert", "read_options": {"delimiter": "ab"}}"#,
            r#"{"job": "teleport"}"#,
        ] {
            let err = Job::from_json(bad).unwrap_err();
            assert!(err.is_config(), "{bad}: {err}");
        }
        let Job::Migrate(m) =
            Job::from_json(r#"{"job": "migrate", "from": "a.db", "to": "postgres"}"#).unwrap()
        else {
            panic!("not a migrate job")
        };
        assert_eq!(m.to.as_deref(), Some("postgres"));
    }

    #[test]
    fn policies_parse_from_their_names() {
        for policy in ErrorPolicy::ALL {
            assert_eq!(policy.name().parse::<ErrorPolicy>(), Ok(policy));
        }
        assert_eq!("skip-errors".parse::<ErrorPolicy>(), Ok(ErrorPolicy::Skip));
        assert!("loose".parse::<ErrorPolicy>().is_err());
    }
}
