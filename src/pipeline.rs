//! Wires the stages in their one order — source → decode → map & transform → validate → encode → sink — and
//! drives records through them in batches, applying the error policy and counting every record so that the
//! report always balances: `read = written + rejected + filtered + skipped`.
//!
//! Decoding runs on its own thread and hands batches to this one through a bounded channel; mapping and
//! validation run on a batch in parallel (rayon) with output order kept; encoding runs here. Memory stays at
//! a few batches whatever the input size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use chrono::SubsecRound as _;
use rayon::prelude::*;

use crate::db::{ColumnKind, ConnectOptions, OnConflict, SinkOptions, TableSink};
use crate::endpoint::Endpoint;
use crate::envelope::layers::{self, Expect, ReadLayers, WriteLayers};
use crate::envelope::manifest::{PartGuard, PartSet};
use crate::envelope::split::{
    is_manifest, ChecksummedFile, EncryptionInfo, ManifestHead, PartNames, SplitEncoder,
    SplitOptions,
};
use crate::envelope::{
    Compression, CompressionSpec, KeyMaterial, KeySource, DEFAULT_MAX_DECOMPRESSED,
};
use crate::error::{Error, Position, Result, Stage};
use crate::format::{Decoder, Encoder, Format, FormatOptions, Input};
use crate::paths::RunPaths;
use crate::progress::{Progress, ProgressMode};
use crate::record::Record;
use crate::rejects::RejectsWriter;
use crate::report::Report;
use crate::sink::{AtomicFile, ByteSink, Discard, Stdout};
use crate::template::{CompiledTemplate, Evaluator, Mapped, Template};
use crate::validate::SchemaValidator;

/// Default number of records per batch. 4096 beat 1024 by about 15% on the CSV → NDJSON benchmark
/// (BENCHMARKS.md), most likely because the encoding thread then reads records the decoding thread wrote
/// a while ago, from the shared cache rather than out of the other core's own.
pub const DEFAULT_BATCH_SIZE: usize = 4096;
/// Batches in flight between the decoding and encoding threads.
const BATCHES_IN_FLIGHT: usize = 4;
/// A batch also ends once about this much input has been read for it, so that wide records cannot make a
/// batch (and the few in flight) large: memory stays at a few MiB whatever the record width.
const BATCH_INPUT_BYTES: u64 = 1 << 20;

/// What a bad record (one that will not decode, map, validate or encode) does to the run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// The first bad record fails the run, and nothing is written.
    #[default]
    Strict,
    /// Bad records go to the rejects file with their reasons; the run goes on and lists every error.
    Lenient,
    /// Bad records go to the rejects file; the run goes on and only counts them.
    #[value(alias = "skip-errors")]
    #[serde(alias = "skip-errors")]
    Skip,
}

impl ErrorPolicy {
    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            ErrorPolicy::Strict => "strict",
            ErrorPolicy::Lenient => "lenient",
            ErrorPolicy::Skip => "skip",
        }
    }
}

/// One run, configured and checked before any record moves.
#[derive(Debug, Clone)]
pub struct ConvertJob {
    /// `--in`: a path or `-`.
    pub input: String,
    /// `--to`: a path or `-`.
    pub output: String,
    /// `--from-format`.
    pub input_format: Option<String>,
    /// `--to-format`.
    pub output_format: Option<String>,
    /// How to read the input.
    pub read_options: FormatOptions,
    /// How to write the output.
    pub write_options: FormatOptions,
    /// Records per batch, at most (a batch also ends after about 1 MiB of input).
    pub batch_size: usize,
    /// The template (name or path) that maps records.
    pub template: Option<String>,
    /// A JSON Schema file (overrides the template's schema).
    pub schema: Option<PathBuf>,
    /// What a bad record does.
    pub on_error: ErrorPolicy,
    /// Where rejected records go (default: beside the output).
    pub rejects: Option<PathBuf>,
    /// Do everything but write.
    pub dry_run: bool,
    /// Only read, map and validate (`ferry validate`): implies `dry_run`.
    pub validate_only: bool,
    /// Worker threads for mapping and validation.
    pub jobs: Option<usize>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// No progress bar.
    pub quiet: bool,
    /// `--table`: the database table to load when the URL does not name one (default: the template's).
    pub table: Option<String>,
    /// `--key`: the key columns for conflicts (default: the template's target key, else the primary key).
    pub key: Vec<String>,
    /// `--on-conflict`: what a duplicate key does in a database load.
    pub on_conflict: OnConflict,
    /// `--commit-every N`: commit a database load every N records instead of once at the end.
    pub commit_every: Option<u64>,
    /// `--resume N`: records 1..=N were committed by an earlier run; they are read and counted as skipped.
    pub resume_after: Option<u64>,
    /// Database connection retries and timeout.
    pub connect: ConnectOptions,
    /// `--split-size` / `--split-records`: write the output as parts with a manifest.
    pub split: SplitOptions,
    /// `--checksum`: write `<output>.sha256` beside an unsplit output.
    pub checksum: bool,
    /// `--compress`: the output's compression (default: from its extension chain, `.gz`, `.br`, `.zst`).
    pub compress: Option<CompressionSpec>,
    /// `--encrypt`: encrypt the output (also when its name ends in `.enc`).
    pub encrypt: bool,
    /// Where the key or passphrase comes from (default: `FERRY_KEY`, then `EXPORT_ENCRYPTION_KEY`).
    pub key_source: Option<KeySource>,
    /// `--max-decompressed-size`: decompressed input bytes allowed.
    pub max_decompressed: u64,
    /// `--allow-plaintext`: read an input as it is although its name (`.enc`), a key option or its manifest
    /// says it should be encrypted.
    pub allow_plaintext: bool,
    /// `--report`: where the front end writes the JSON report. The run only checks that it names no file
    /// the run reads or writes.
    pub report: Option<PathBuf>,
}

impl ConvertJob {
    /// A job with default options.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> ConvertJob {
        ConvertJob {
            input: input.into(),
            output: output.into(),
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
            validate_only: false,
            jobs: None,
            progress: ProgressMode::None,
            quiet: true,
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
            report: None,
        }
    }
}

/// The checked plan of a run: endpoints, formats, template and schema resolved and compiled, nothing opened.
struct Plan {
    source: Endpoint,
    target: Endpoint,
    /// The input format; `None` for a database.
    input_format: Option<&'static Format>,
    /// The output format; `None` for a database.
    output_format: Option<&'static Format>,
    stages: Arc<Stages>,
    rejects: Option<PathBuf>,
    /// How to load the target table, when the target is a database.
    table: Option<SinkOptions>,
    /// The split set, when the input is a manifest: its parts are read in order, each checked.
    manifest: Option<PartSet>,
    /// What the input's encryption must be.
    expect: Expect,
    /// The output's compression.
    compression: CompressionSpec,
    /// The output's key, when it is encrypted.
    key: Option<Arc<KeyMaterial>>,
}

/// The format of a file endpoint; `None` for a database.
fn endpoint_format(
    endpoint: &Endpoint,
    explicit: Option<&str>,
    flag: &str,
) -> Result<Option<&'static Format>> {
    match endpoint {
        Endpoint::Database(db) if explicit.is_some() => Err(Error::usage(format!(
            "{db} is a database: {flag} does not apply to it"
        ))),
        Endpoint::Database(_) => Ok(None),
        other => other.format(explicit, flag).map(Some),
    }
}

fn plan(job: &ConvertJob) -> Result<Plan> {
    let source = Endpoint::parse(&job.input)?;
    let target = Endpoint::parse(&job.output)?;
    let manifest = match &source {
        Endpoint::File(path) if is_manifest(path) => Some(PartSet::open(path)?),
        _ => None,
    };
    let input_format = match &manifest {
        Some(set) => Some(crate::format::by_name(&set.manifest().head.format)?),
        None => endpoint_format(&source, job.input_format.as_deref(), "--from-format")?,
    };
    let output_format = if job.validate_only {
        None
    } else {
        endpoint_format(&target, job.output_format.as_deref(), "--to-format")?
    };
    if job.batch_size == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
    let writes = !(job.dry_run || job.validate_only);
    let rejects = match (&job.rejects, &target) {
        _ if job.on_error == ErrorPolicy::Strict || !writes => None,
        (Some(path), _) => Some(path.clone()),
        (None, Endpoint::File(path)) => {
            Some(PathBuf::from(format!("{}.rejects.ndjson", path.display())))
        }
        (None, Endpoint::Database(_)) => None, // decided below, once the table is known
        (None, Endpoint::Stdio) => {
            return Err(Error::usage(
                "--on-error lenient/skip writing to standard output needs --rejects FILE",
            ));
        }
    };
    let stages = Arc::new(Stages::build(job)?);
    let table = match &target {
        Endpoint::Database(db) if !job.validate_only => Some(sink_options(job, db, &stages)?),
        _ => None,
    };
    if table.is_none() && (job.commit_every.is_some() || job.resume_after.is_some()) {
        return Err(Error::usage(
            "--commit-every and --resume apply to database targets only",
        ));
    }
    if (job.split.splits() || job.checksum) && !matches!(target, Endpoint::File(_)) {
        return Err(Error::usage(
            "--split-size, --split-records and --checksum need a file output (not - or a database)",
        ));
    }
    if job.split.splits() && job.checksum {
        return Err(Error::usage(
            "--checksum is for a single file; a split output's manifest already lists each part's SHA-256",
        ));
    }
    if job.split.max_records == Some(0) {
        return Err(Error::usage("--split-records must be at least 1"));
    }
    if job.commit_every == Some(0) {
        return Err(Error::usage("--commit-every must be at least 1"));
    }
    let (compression, key) = output_envelope(job, &target)?;
    let expect = input_expectation(job, &source, manifest.as_ref(), key.is_some())?;
    if let Some(set) = &manifest {
        authenticate_set(job, set)?;
    }
    let rejects = match (&rejects, &target, &table) {
        (None, Endpoint::Database(db), Some(options))
            if writes && job.on_error != ErrorPolicy::Strict =>
        {
            Some(default_table_rejects(db, &options.table))
        }
        _ => rejects,
    };
    let plan = Plan {
        source,
        target,
        input_format,
        output_format,
        stages,
        rejects,
        table,
        manifest,
        expect,
        compression,
        key,
    };
    run_paths(job, &plan).check()?;
    Ok(plan)
}

/// Every path the run reads and writes, derived ones included, for the collision check.
fn run_paths(job: &ConvertJob, plan: &Plan) -> RunPaths {
    let mut paths = RunPaths::new();
    match &plan.source {
        Endpoint::File(path) => {
            paths.read("--in", path);
            if let Some(set) = &plan.manifest {
                for index in 0..set.len() {
                    paths.read("a part --in's manifest lists", &set.part_path(index));
                }
            }
        }
        Endpoint::Database(db) if db.database.name == "sqlite" => {
            paths.database("--in", Path::new(db.connection()));
        }
        Endpoint::Stdio | Endpoint::Database(_) => {}
    }
    match &plan.target {
        _ if job.validate_only => {}
        Endpoint::File(path) if job.split.splits() => {
            let names = PartNames::new(path, is_envelope_extension);
            paths.write("the manifest of --to", &names.manifest());
            // Parts are `<stem>-<number><suffix>`: the first one's name gives both ends.
            let first = names.part(1);
            let name = first.file_name().unwrap_or_default().to_string_lossy();
            if let Some((prefix, suffix)) = name.rsplit_once("-00001") {
                let dir = first.parent().unwrap_or(Path::new(""));
                let prefix = format!("{prefix}-");
                paths.write_family("the parts of --to", dir, &prefix, true, &[suffix]);
            }
        }
        Endpoint::File(path) => {
            paths.write("--to", path);
            if job.checksum {
                let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
                paths.write("the checksum file of --to", &sidecar);
            }
        }
        Endpoint::Database(db) if db.database.name == "sqlite" => {
            paths.database("--to", Path::new(db.connection()));
        }
        Endpoint::Stdio | Endpoint::Database(_) => {}
    }
    if let Some(rejects) = &plan.rejects {
        let label = if job.rejects.is_some() {
            "--rejects"
        } else {
            "the default rejects file"
        };
        paths.write(label, rejects);
    }
    if let Some(report) = &job.report {
        paths.write("--report", report);
    }
    if let Some(schema) = &job.schema {
        paths.read("--schema", schema);
    }
    if let Some(template) = job
        .template
        .as_deref()
        .map(Path::new)
        .filter(|p| p.is_file())
    {
        paths.read("--template", template);
    }
    match &job.key_source {
        Some(KeySource::KeyFile(file)) => {
            paths.read("--key-file", file);
        }
        Some(KeySource::PassphraseFile(file)) => {
            paths.read("--passphrase-file", file);
        }
        _ => {}
    }
    paths
}

/// What the input's encryption must be. A split set's parts are what its manifest says. Any other input
/// must be a ferry-encrypted stream when its name ends in `.enc`, or when a key option was given and the
/// output is not encrypted (so the key can only be there to read the input). A key found only in
/// `FERRY_KEY` or `EXPORT_ENCRYPTION_KEY` decrypts an encrypted input but forces nothing: a user who keeps
/// it exported for their exports still reads plain files as before. `--allow-plaintext` lifts the rule.
fn input_expectation(
    job: &ConvertJob,
    source: &Endpoint,
    set: Option<&PartSet>,
    output_encrypted: bool,
) -> Result<Expect> {
    let key_for_input = job.key_source.is_some() && !output_encrypted;
    match set {
        Some(set) if set.is_encrypted() && !job.allow_plaintext => Ok(Expect::Encrypted(
            "the manifest says the parts are encrypted".to_owned(),
        )),
        Some(set) if set.is_encrypted() => Ok(Expect::Either),
        Some(set) if key_for_input && !job.allow_plaintext => Err(Error::data(
            Stage::Source,
            Position::file(set.path().display().to_string()),
            "not an encrypted ferry file: the manifest says its parts are not encrypted, but a key was \
             given to decrypt them; pass --allow-plaintext to read them as they are",
        )),
        Some(_) => Ok(Expect::Plain),
        None if job.allow_plaintext => Ok(Expect::Either),
        None => {
            let named = matches!(source, Endpoint::File(path) if layers::from_extensions(path).1);
            Ok(if named {
                Expect::Encrypted("its name ends in .enc".to_owned())
            } else if key_for_input {
                Expect::Encrypted(
                    "a key option was given to decrypt it and the output is not encrypted".to_owned(),
                )
            } else {
                Expect::Either
            })
        }
    }
}

/// Checks the MAC of an encrypted set's manifest before any part is read; it needs the key.
fn authenticate_set(job: &ConvertJob, set: &PartSet) -> Result<()> {
    if !set.is_encrypted() {
        return Ok(());
    }
    let source = job
        .key_source
        .clone()
        .or_else(KeySource::from_default_env)
        .ok_or_else(|| {
            Error::usage(format!(
                "the parts of {} are encrypted: give the key with --key-file, FERRY_KEY (or --key-env \
                 NAME), or a passphrase with --passphrase-env NAME / --passphrase-file",
                set.path().display()
            ))
        })?;
    set.authenticate(&source.resolve()?)
}

/// The output's compression and key: `--compress`/`--encrypt`, else what its extension chain says
/// (`out.ndjson.gz.enc`).
fn output_envelope(
    job: &ConvertJob,
    target: &Endpoint,
) -> Result<(CompressionSpec, Option<Arc<KeyMaterial>>)> {
    let (named, named_encrypted) = match target {
        Endpoint::File(path) if !job.validate_only => layers::from_extensions(path),
        _ => (Compression::None, false),
    };
    let compression = job.compress.unwrap_or_else(|| CompressionSpec::new(named));
    let encrypt = job.encrypt || named_encrypted;
    if (encrypt || compression.kind != Compression::None) && matches!(target, Endpoint::Database(_))
    {
        return Err(Error::usage(
            "--compress and --encrypt apply to file outputs, not databases",
        ));
    }
    if !encrypt {
        return Ok((compression, None));
    }
    let source = job.key_source.clone().or_else(KeySource::from_default_env).ok_or_else(|| {
        Error::usage(
            "the output is encrypted (.enc or --encrypt) but no key was given: use --key-file FILE, \
             FERRY_KEY (or --key-env NAME), or --passphrase-env NAME / --passphrase-file FILE \
             (ferry keygen FILE makes a key)",
        )
    })?;
    Ok((compression, Some(Arc::new(source.resolve()?))))
}

/// Where rejected records of a database load go by default: beside a SQLite file, or in the current folder
/// for a server.
fn default_table_rejects(db: &crate::db::DbEndpoint, table: &str) -> PathBuf {
    let safe = crate::rejects::file_stem(table);
    match db.database.name {
        "sqlite" => PathBuf::from(format!("{}.{safe}.rejects.ndjson", db.connection())),
        _ => PathBuf::from(format!("{safe}.rejects.ndjson")),
    }
}

/// The table, key and declared columns of a database load: the URL's `?table=`, else `--table`, else the
/// template's target table.
fn sink_options(
    job: &ConvertJob,
    db: &crate::db::DbEndpoint,
    stages: &Stages,
) -> Result<SinkOptions> {
    let target = stages.template.as_ref().and_then(|t| t.target.as_ref());
    if db.query.is_some() {
        return Err(Error::usage(format!(
            "{db}: ?query= is for reading; name a table to load with ?table="
        )));
    }
    let table = db
        .table
        .clone()
        .or_else(|| job.table.clone())
        .or_else(|| target.map(|t| t.table.clone()))
        .ok_or_else(|| {
            Error::usage(format!(
                "{db}: which table? add ?table=NAME to the URL, pass --table NAME, or use a template with a target table"
            ))
        })?;
    let key = if job.key.is_empty() {
        target.map(|t| t.key.clone()).unwrap_or_default()
    } else {
        job.key.clone()
    };
    // Column kinds: the template's declared types, else the schema's property types.
    let schema_kinds: Vec<(String, ColumnKind)> = stages
        .schema
        .as_ref()
        .map(|s| {
            s.property_types()
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        ColumnKind::for_json_type(&p.json_type, p.format.as_deref()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let declared = stages
        .template
        .as_ref()
        .map(|t| {
            t.fields()
                .map(|(name, ty)| (name.to_owned(), ty.map(ColumnKind::for_field)))
                .collect()
        })
        .unwrap_or_default();
    Ok(SinkOptions {
        table,
        declared,
        schema_kinds,
        key,
        on_conflict: job.on_conflict,
        dry_run: job.dry_run || job.validate_only,
        commit_every: job.commit_every,
        connect: job.connect,
    })
}

/// The map and validate stages of a run, compiled once.
struct Stages {
    template: Option<CompiledTemplate>,
    schema: Option<SchemaValidator>,
    pool: Option<rayon::ThreadPool>,
    now: chrono::DateTime<chrono::FixedOffset>,
}

/// What the map and validate stages decided about one record.
enum Outcome {
    /// Write the record as read.
    Pass,
    /// Write this mapped record.
    Mapped(Record),
    /// The template's filter left it out.
    Filtered,
    /// It is bad, for these reasons.
    Rejected(Vec<Error>),
}

impl Stages {
    fn build(job: &ConvertJob) -> Result<Stages> {
        let template = match &job.template {
            Some(name) => Some(Template::find(name)?),
            None => None,
        };
        let schema = match (&job.schema, &template) {
            (Some(path), _) => Some(SchemaValidator::from_file(path)?),
            (None, Some(t)) => match t.schema()? {
                Some((name, json)) => Some(SchemaValidator::compile(&name, &json)?),
                None => None,
            },
            (None, None) => None,
        };
        let template = template.map(|t| t.compile()).transpose()?;
        let threads = match job.jobs {
            Some(0) => return Err(Error::usage("--jobs must be at least 1")),
            Some(n) => n,
            // One core is taken by the decoding thread: on two cores, mapping on the encoding thread
            // beat a two-worker pool (same time, a second less CPU: idle rayon workers spin).
            None => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
        };
        // With one worker, or nothing to map, there is no pool: mapping (if any) runs on the encoding thread.
        let pool =
            if (template.is_some() || schema.is_some()) && threads > 1 {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                Some(pool.map_err(|e| {
                    Error::usage(format!("cannot start {threads} worker threads: {e}"))
                })?)
            } else {
                None
            };
        let now = run_time()?;
        Ok(Stages {
            template,
            schema,
            pool,
            now,
        })
    }

    /// Starts mapping and validating `batch` on the worker pool and returns at once, so that the previous
    /// batch can be encoded meanwhile. Without a template or schema there is nothing to start.
    fn start(self: &Arc<Self>, batch: Vec<Record>) -> Pending {
        let batch = Arc::new(batch);
        let (tx, outcomes) = mpsc::sync_channel(1);
        if let Some(pool) = &self.pool {
            let (stages, records) = (Arc::clone(self), Arc::clone(&batch));
            pool.spawn(move || {
                let result = stages.process_all(&records);
                drop(records); // before sending, so the receiver holds the only reference to the batch
                let _ = tx.send(result);
            });
        }
        Pending { batch, outcomes }
    }

    /// True when there is a template or a schema to apply.
    fn maps(&self) -> bool {
        self.template.is_some() || self.schema.is_some()
    }

    /// Maps and validates a batch on this thread.
    fn process_here(&self, batch: &[Record]) -> Vec<Outcome> {
        let evaluator = self.template.as_ref().map(|t| t.evaluator(self.now));
        batch
            .iter()
            .map(|record| self.process_one(evaluator.as_ref(), record))
            .collect()
    }

    /// Maps and validates a batch in parallel; the outcomes are in the batch's order.
    fn process_all(&self, batch: &[Record]) -> Vec<Outcome> {
        let evaluator = || self.template.as_ref().map(|t| t.evaluator(self.now));
        batch
            .par_iter()
            .map_init(evaluator, |ev, record| {
                self.process_one(ev.as_ref(), record)
            })
            .collect()
    }

    fn process_one(&self, evaluator: Option<&Evaluator>, record: &Record) -> Outcome {
        // A panic in a library (expressions, schema validation) must not take the run down with it: the
        // record is rejected with the reason, and the policy decides what happens next.
        let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.map_and_validate(evaluator, record)
        }));
        guarded.unwrap_or_else(|_| {
            let message =
                "internal error while mapping or validating this record (please report it)";
            Outcome::Rejected(vec![Error::record(
                Stage::Map,
                Position::default(),
                message,
            )])
        })
    }

    fn map_and_validate(&self, evaluator: Option<&Evaluator>, record: &Record) -> Outcome {
        let mapped = match (&self.template, evaluator) {
            (Some(template), Some(evaluator)) => match template.map(evaluator, record) {
                Ok(Mapped::Keep(mapped)) => Some(mapped),
                Ok(Mapped::Filtered) => return Outcome::Filtered,
                Err(errors) => return Outcome::Rejected(errors),
            },
            _ => None,
        };
        if let Some(schema) = &self.schema {
            if let Err(errors) = schema.validate(mapped.as_ref().unwrap_or(record)) {
                return Outcome::Rejected(errors);
            }
        }
        mapped.map_or(Outcome::Pass, Outcome::Mapped)
    }
}

/// The time `now()` returns in expressions: the run's start, to the millisecond, or `SOURCE_DATE_EPOCH`
/// (seconds since 1970) when set, for reproducible output.
fn run_time() -> Result<chrono::DateTime<chrono::FixedOffset>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map(|t| t.fixed_offset())
            .ok_or_else(|| {
                Error::usage(format!(
                    "SOURCE_DATE_EPOCH must be whole seconds since 1970, got {text:?}"
                ))
            }),
        Err(_) => Ok(chrono::Utc::now().fixed_offset().trunc_subsecs(3)),
    }
}

/// Runs a conversion. On success the output is final and the report balances; on failure nothing is left
/// under the output's name and the error says which record and why.
pub fn convert(job: &ConvertJob) -> Result<Report> {
    let started = Instant::now();
    let plan = plan(job)?;
    let dry_run = job.dry_run || job.validate_only;
    let mut report = Report {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        dry_run,
        input: plan.source.display_name(),
        output: if job.validate_only {
            crate::report::VALIDATION_ONLY.to_owned()
        } else {
            plan.target.display_name()
        },
        input_format: format_name(&plan.source, plan.input_format),
        output_format: if job.validate_only {
            String::new()
        } else {
            format_name(&plan.target, plan.output_format)
        },
        table: plan.table.as_ref().map(|t| t.table.clone()),
        on_conflict: plan.table.as_ref().map(|t| t.on_conflict.name().to_owned()),
        template: plan
            .stages
            .template
            .as_ref()
            .map(|t| format!("{} {}", t.name, t.version).trim().to_owned()),
        schema: plan.stages.schema.as_ref().map(|s| s.name().to_owned()),
        on_error: job.on_error.name().to_owned(),
        ..Report::default()
    };
    let bytes_read = Arc::new(AtomicU64::new(0));
    let decoder = open_decoder(&plan, job, bytes_read.clone())?;
    let output = open_output(&plan, job, dry_run)?;
    let total = match &plan.source {
        Endpoint::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
        Endpoint::Stdio | Endpoint::Database(_) => None,
    };
    let progress = Progress::start(job.progress, job.quiet, total);

    let mut run = Run {
        stages: Arc::clone(&plan.stages),
        policy: job.on_error,
        rejects: plan.rejects.as_deref().map(RejectsWriter::new),
        input_name: report.input.clone(),
        report: &mut report,
        progress,
        bytes_read: bytes_read.clone(),
        resume_after: job.resume_after.unwrap_or(0),
    };
    let result = run.drive(decoder, output, job.batch_size);
    report.bytes_read = bytes_read.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    report.records_per_second = if report.seconds > 0.0 {
        report.read as f64 / report.seconds
    } else {
        0.0
    };
    debug_assert!(result.is_err() || report.balances());
    match result {
        Ok(()) => {
            report.ok = true;
            Ok(report)
        }
        Err(e) => Err(with_resume_hint(
            e.with_context(Some(&report.output), None),
            report.last_committed_record,
        )),
    }
}

/// The report's name for an endpoint's format: the format, or the database.
fn format_name(endpoint: &Endpoint, format: Option<&'static Format>) -> String {
    match (endpoint, format) {
        (Endpoint::Database(db), _) => db.database.name.to_owned(),
        (_, Some(f)) => f.name.to_owned(),
        (_, None) => String::new(),
    }
}

/// A failed load that committed part of its records says where a rerun should resume.
fn with_resume_hint(error: Error, committed: Option<u64>) -> Error {
    let Some(n) = committed else { return error };
    let position = error.position().cloned().unwrap_or_default();
    let stage = error.stage().unwrap_or(Stage::Sink);
    Error::data(
        stage,
        position,
        format!(
            "{}; records 1 to {n} were committed before the failure: rerun with --resume {n} to load the rest",
            error.message()
        ),
    )
}

/// Opens the records source: a file or standard input through its format's decoder, or a database.
fn open_decoder(
    plan: &Plan,
    job: &ConvertJob,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn Decoder>> {
    if let Endpoint::Database(db) = &plan.source {
        return (db.database.open_source)(db, &job.connect);
    }
    let format = plan
        .input_format
        .ok_or_else(|| Error::usage("the input has no format (internal error)"))?;
    if let Some(set) = &plan.manifest {
        let set = set.clone();
        let parts = (0..set.len())
            .map(|i| (set.part_path(i), set.manifest().parts[i].records))
            .collect();
        let options = job.read_options.clone();
        let envelope = InputEnvelope::of(job, plan);
        let allow_plaintext = job.allow_plaintext;
        let open = move |index: usize| -> Result<(Box<dyn Decoder>, PartGuard)> {
            // The whole part is checked before a byte of it is decoded, and again as it is read.
            set.check_part(index, allow_plaintext)?;
            let (raw, guard) = set.open_part(index)?;
            let name = set.part_path(index).display().to_string();
            let named = (set.compression(), true);
            let input = wrap_input(Box::new(raw), name, named, &options, &bytes_read, &envelope)?;
            Ok(((format.decoder)(input, &options)?, guard))
        };
        return Ok(Box::new(PartsDecoder {
            parts,
            next: 0,
            current: None,
            open: Box::new(open),
        }));
    }
    let input = open_input(
        &plan.source,
        &job.read_options,
        bytes_read,
        &InputEnvelope::of(job, plan),
    )?;
    (format.decoder)(input, &job.read_options)
}

/// Reads the parts a manifest lists, in order, as one input. Each part's size and SHA-256 are checked before
/// it is decoded and again once it has been read, and its record count at its end.
struct PartsDecoder {
    parts: Vec<(PathBuf, u64)>,
    next: usize,
    /// The part being read, its guard and the records read from it so far.
    current: Option<(Box<dyn Decoder>, PartGuard, u64)>,
    open: OpenPart,
}

/// Checks and opens part `index` of a split input as a decoder.
type OpenPart = Box<dyn FnMut(usize) -> Result<(Box<dyn Decoder>, PartGuard)> + Send>;

impl PartsDecoder {
    /// Ends the current part: its bytes and its record count must be the manifest's.
    fn end_part(&mut self) -> Result<()> {
        let Some((decoder, guard, read)) = self.current.take() else {
            return Ok(());
        };
        drop(decoder);
        guard.finish()?;
        let (path, expected) = &self.parts[self.next - 1];
        if read != *expected {
            return Err(Error::data(
                Stage::Source,
                Position::file(path.display().to_string()),
                format!("the manifest lists {expected} records in this part, but it holds {read}"),
            ));
        }
        Ok(())
    }
}

impl Iterator for PartsDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some((decoder, _, count)) = &mut self.current {
                if let Some(item) = decoder.next() {
                    *count += 1;
                    return Some(item);
                }
                if let Err(e) = self.end_part() {
                    self.next = self.parts.len(); // nothing after a part that fails
                    return Some(Err(e));
                }
            }
            if self.next >= self.parts.len() {
                return None;
            }
            let index = self.next;
            self.next += 1;
            match (self.open)(index) {
                Ok((decoder, guard)) => self.current = Some((decoder, guard, 0)),
                Err(e) => {
                    self.next = self.parts.len(); // nothing after a part that cannot be opened
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Opens where records go: an encoder over a file, standard output or nothing (dry run), or a table loader
/// (which runs a dry run in a transaction it rolls back).
fn open_output(plan: &Plan, job: &ConvertJob, dry_run: bool) -> Result<Output> {
    if let (Endpoint::Database(db), Some(options)) = (&plan.target, &plan.table) {
        return Ok(Output::Table((db.database.open_sink)(db, options.clone())?));
    }
    let format = match plan.output_format {
        Some(format) => format,
        None => crate::format::by_name("ndjson")?,
    };
    let base: Box<dyn ByteSink> = match &plan.target {
        _ if dry_run => Box::new(Discard::default()),
        Endpoint::Stdio => Box::new(Stdout::new()),
        Endpoint::File(path) if job.split.splits() => {
            return Ok(Output::File(Box::new(split_encoder(
                plan, job, path, format,
            ))));
        }
        Endpoint::File(path) if job.checksum => Box::new(ChecksummedFile::create(path)?),
        Endpoint::File(path) => Box::new(AtomicFile::create(path)?),
        Endpoint::Database(_) => Box::new(Discard::default()), // `ferry validate` into a database URL
    };
    let write_layers = WriteLayers {
        compression: plan.compression,
        key: plan.key.as_deref(),
    };
    let sink = layers::wrap_sink(base, &write_layers)?;
    Ok(Output::File((format.encoder)(sink, &job.write_options)?))
}

/// The encoder of a split output: every part gets its own layers; the manifest describes them.
fn split_encoder(
    plan: &Plan,
    job: &ConvertJob,
    path: &std::path::Path,
    format: &'static Format,
) -> SplitEncoder {
    let names = PartNames::new(path, is_envelope_extension);
    let head = ManifestHead {
        format: format.name.to_owned(),
        compression: plan.compression.kind.name().to_owned(),
        encryption: plan.key.as_deref().map(|key| EncryptionInfo {
            algorithm: "AES-256-GCM".to_owned(),
            kdf: match key {
                KeyMaterial::Key(_) => "none".to_owned(),
                KeyMaterial::Passphrase(_) => "argon2id".to_owned(),
            },
        }),
        template: plan
            .stages
            .template
            .as_ref()
            .map(|t| format!("{} {}", t.name, t.version).trim().to_owned()),
        schema: plan.stages.schema.as_ref().map(|s| s.name().to_owned()),
    };
    let created = plan
        .stages
        .now
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let options = job.write_options.clone();
    let (compression, key) = (plan.compression, plan.key.clone());
    let layers = Box::new(move |sink: Box<dyn ByteSink>| {
        let write_layers = WriteLayers {
            compression,
            key: key.as_deref(),
        };
        (format.encoder)(layers::wrap_sink(sink, &write_layers)?, &options)
    });
    let encoder = SplitEncoder::new(names, job.split, head, created, layers);
    match &plan.key {
        Some(key) => encoder.sealed_with(key.clone()),
        None => encoder,
    }
}

/// True for an extension that is part of an output's extension chain (format, compression, encryption).
fn is_envelope_extension(extension: &str) -> bool {
    crate::format::by_extension(extension).is_some()
        || ["gz", "br", "zst", "zstd", "enc"].contains(&extension.to_ascii_lowercase().as_str())
}

/// Where records go.
enum Output {
    /// Bytes through a format's encoder.
    File(Box<dyn Encoder>),
    /// Rows into a database table.
    Table(Box<dyn TableSink>),
}

impl Output {
    fn write(&mut self, number: u64, record: &Record) -> Result<()> {
        match self {
            Output::File(encoder) => encoder.write_record(record),
            Output::Table(table) => table.write(number, record),
        }
    }
}

/// A batch on its way through the map and validate stages.
struct Pending {
    batch: Arc<Vec<Record>>,
    /// The outcomes, in the batch's order; nothing is ever sent when there are no stages.
    outcomes: mpsc::Receiver<Vec<Outcome>>,
}

/// Messages from the decoding thread.
enum Batch {
    /// Records in input order.
    Records(Vec<Record>),
    /// One record could not be decoded; the ones after it can.
    BadRecord(Error),
    /// The input cannot be read any further.
    Fatal(Error),
}

/// The state of a run while records move.
struct Run<'a> {
    stages: Arc<Stages>,
    policy: ErrorPolicy,
    rejects: Option<RejectsWriter>,
    input_name: String,
    report: &'a mut Report,
    progress: Progress,
    bytes_read: Arc<AtomicU64>,
    /// Records up to this number were loaded by an earlier run (`--resume`).
    resume_after: u64,
}

impl Run<'_> {
    /// Moves every record from the decoder through the stages to the encoder, the decoder on its own thread.
    fn drive(
        &mut self,
        decoder: Box<dyn Decoder>,
        mut output: Output,
        batch_size: usize,
    ) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel::<Batch>(BATCHES_IN_FLIGHT);
        // Encoded batches go back to the reading thread, which drops their records: memory is freed by the
        // thread that allocated it, so the two threads never contend for the allocator's locks (freeing on
        // this thread made malloc the decoder's largest cost).
        let (done_tx, done_rx) = mpsc::channel::<Vec<Record>>();
        let input_bytes = self.bytes_read.clone();
        let reader = std::thread::spawn(move || {
            read_batches(decoder, batch_size, &input_bytes, &tx, &done_rx)
        });
        let mut outcome = Ok(());
        // The batch whose stages are running on the pool while this thread encodes the one before it.
        let mut pending: Option<Pending> = None;
        for message in rx.iter() {
            outcome = match message {
                Batch::Records(batch) if self.stages.pool.is_none() => {
                    let outcomes = self.stages.maps().then(|| self.stages.process_here(&batch));
                    let result = self.records(&batch, outcomes, &mut output);
                    // If the reader has already finished, the batch is simply dropped here.
                    let _ = done_tx.send(batch);
                    result
                }
                Batch::Records(batch) => {
                    let next = self.stages.start(batch);
                    match pending.replace(next) {
                        Some(previous) => self.finish_batch(previous, &mut output, &done_tx),
                        None => Ok(()),
                    }
                }
                Batch::BadRecord(error) => {
                    // Records keep their order: the batch before the bad record is written first.
                    let earlier = match pending.take() {
                        Some(previous) => self.finish_batch(previous, &mut output, &done_tx),
                        None => Ok(()),
                    };
                    earlier.and_then(|()| {
                        self.report.read += 1;
                        let number = error
                            .position()
                            .and_then(|p| p.record)
                            .unwrap_or(self.report.read);
                        self.reject(number, None, vec![error])
                    })
                }
                Batch::Fatal(error) => Err(error),
            };
            if outcome.is_err() {
                break;
            }
            self.progress
                .update(self.report.read, self.bytes_read.load(Ordering::Relaxed));
        }
        if let (Ok(()), Some(last)) = (&outcome, pending.take()) {
            outcome = self.finish_batch(last, &mut output, &done_tx);
        }
        drop(rx); // stops the reader thread if we left early
        let _ = reader.join();
        if outcome.is_err() && self.report.last_committed_record.is_some() {
            // Records up to the last commit are loaded for good, and a resumed run skips them: their rejects
            // must stay too.
            if let Some(rejects) = self.rejects.take() {
                if self.report.rejected > 0 {
                    self.report.rejects_file = Some(rejects.path().display().to_string());
                }
                let _ = rejects.finish();
            }
        }
        outcome?;
        self.finish_output(output)?;
        if let Some(rejects) = self.rejects.take() {
            if self.report.rejected > 0 {
                self.report.rejects_file = Some(rejects.path().display().to_string());
            }
            rejects.finish()?;
        }
        let progress = std::mem::replace(
            &mut self.progress,
            Progress::start(ProgressMode::None, true, None),
        );
        progress.finish(self.report.read, self.bytes_read.load(Ordering::Relaxed));
        Ok(())
    }

    /// Waits for a batch's stages, encodes it, and hands its records back to the reading thread.
    fn finish_batch(
        &mut self,
        pending: Pending,
        output: &mut Output,
        done: &mpsc::Sender<Vec<Record>>,
    ) -> Result<()> {
        let outcomes = pending.outcomes.recv().map_err(|_| {
            Error::data(
                Stage::Map,
                Position::default(),
                "a mapping worker stopped unexpectedly (internal error)",
            )
        })?;
        let result = self.records(&pending.batch, Some(outcomes), output);
        if let Ok(batch) = Arc::try_unwrap(pending.batch) {
            let _ = done.send(batch);
        }
        result
    }

    /// One batch through the error policy and the encoder; `outcomes` are its map and validate results.
    fn records(
        &mut self,
        batch: &[Record],
        outcomes: Option<Vec<Outcome>>,
        output: &mut Output,
    ) -> Result<()> {
        let mut outcomes = outcomes.map(Vec::into_iter);
        let first_number = self.report.read + 1;
        for record in batch {
            self.report.read += 1;
            let number = self.report.read;
            // Taken for every record, so that outcomes stay paired with their records.
            let outcome = outcomes
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or(Outcome::Pass);
            if number <= self.resume_after {
                // Loaded by the run being resumed.
                self.report.skipped += 1;
                continue;
            }
            let mapped;
            let to_write = match outcome {
                Outcome::Pass => record,
                Outcome::Mapped(record) => {
                    mapped = record;
                    &mapped
                }
                Outcome::Filtered => {
                    self.report.filtered += 1;
                    continue;
                }
                Outcome::Rejected(errors) => {
                    self.reject(number, Some(record), errors)?;
                    continue;
                }
            };
            match output.write(number, to_write) {
                Ok(()) => self.report.written += 1,
                Err(e) if e.is_record() => self.reject(number, Some(record), vec![e])?,
                Err(e) => return Err(e.with_context(None, Some(number))),
            }
        }
        if let Output::Table(table) = output {
            // Rows the database refused were counted as written when they were handed over.
            for (number, error) in table.end_batch()? {
                self.report.written -= 1;
                let index = usize::try_from(number - first_number).unwrap_or(usize::MAX);
                self.reject(number, batch.get(index), vec![error])?;
            }
            if let Some(through) = table.checkpoint(self.report.read)? {
                self.report.last_committed_record = Some(through);
            }
        }
        Ok(())
    }

    /// Closes the output: the encoder's last bytes, or the table load's commit (rollback for a dry run).
    fn finish_output(&mut self, output: Output) -> Result<()> {
        match output {
            Output::File(encoder) => self.report.bytes_written = encoder.finish()?,
            Output::Table(table) => {
                let tally = table.finish()?;
                // Duplicates were handed to the database as writes; it skipped them.
                self.report.written -= tally.skipped;
                self.report.skipped += tally.skipped;
                self.report.inserted = Some(tally.inserted);
                self.report.updated = Some(tally.updated);
                self.report.created_table = tally.created_table;
            }
        }
        Ok(())
    }

    /// Applies the error policy to a bad record: strict fails the run; lenient and skip set it aside.
    fn reject(&mut self, number: u64, record: Option<&Record>, errors: Vec<Error>) -> Result<()> {
        let errors: Vec<Error> = errors
            .into_iter()
            .map(|e| e.with_context(Some(&self.input_name), Some(number)))
            .collect();
        if self.policy == ErrorPolicy::Strict {
            return Err(first_of(errors, number));
        }
        self.report.rejected += 1;
        if self.policy == ErrorPolicy::Lenient {
            for e in &errors {
                self.report.push_error(e);
            }
        }
        match &mut self.rejects {
            Some(rejects) => rejects.write(number, record, &errors),
            None => Ok(()),
        }
    }
}

/// The error a strict run fails with: the record's first problem, saying how many more it has.
fn first_of(mut errors: Vec<Error>, number: u64) -> Error {
    let more = errors.len().saturating_sub(1);
    let Some(first) = (!errors.is_empty()).then(|| errors.remove(0)) else {
        return Error::record(
            Stage::Map,
            Position::default().with_record(number),
            "the record was rejected",
        );
    };
    if more == 0 {
        return first;
    }
    let stage = first.stage().unwrap_or(Stage::Map);
    let position = first.position().cloned().unwrap_or_default();
    let plural = if more == 1 { "problem" } else { "problems" };
    Error::record(
        stage,
        position,
        format!(
            "{} (and {more} more {plural} with this record)",
            first.message()
        ),
    )
}

fn read_batches(
    mut decoder: Box<dyn Decoder>,
    batch_size: usize,
    input_bytes: &AtomicU64,
    tx: &mpsc::SyncSender<Batch>,
    done: &mpsc::Receiver<Vec<Record>>,
) {
    // Records of a batch the encoder has finished with. One is dropped just before each record is decoded, so
    // that the memory it frees is still in this thread's allocator cache when the new record's cells need it.
    // One for one only keeps pace, though: every moment with nothing to retire leaves the next batches
    // waiting longer, for good. So when the next batch is taken, any others already waiting are dropped at
    // once, and no more than a few batches ever exist, however long the input.
    let mut retired: Vec<Record> = Vec::new();
    let mut batch = Vec::with_capacity(batch_size.min(DEFAULT_BATCH_SIZE));
    let mut batch_start = input_bytes.load(Ordering::Relaxed);
    loop {
        if retired.pop().is_none() {
            if let Ok(used) = done.try_recv() {
                retired = used;
                while let Ok(waiting) = done.try_recv() {
                    drop(waiting);
                }
            }
        }
        let Some(item) = decoder.next() else { break };
        match item {
            Ok(record) => batch.push(record),
            Err(e) => {
                if !batch.is_empty() && tx.send(Batch::Records(std::mem::take(&mut batch))).is_err()
                {
                    return;
                }
                // A bad record does not end the stream: the decoder has already moved past it.
                let recoverable = e.is_record();
                let message = if recoverable {
                    Batch::BadRecord(e)
                } else {
                    Batch::Fatal(e)
                };
                if tx.send(message).is_err() || !recoverable {
                    return;
                }
                continue;
            }
        }
        let read = input_bytes.load(Ordering::Relaxed);
        if batch.len() >= batch_size || read - batch_start >= BATCH_INPUT_BYTES {
            let next = Vec::with_capacity(batch.len());
            let full = std::mem::replace(&mut batch, next);
            if tx.send(Batch::Records(full)).is_err() {
                return;
            }
            batch_start = read;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Batch::Records(batch));
    }
}

/// Opens the input, counting bytes and transcoding to UTF-8 when an encoding was given.
fn open_input(
    source: &Endpoint,
    options: &FormatOptions,
    counter: Arc<AtomicU64>,
    envelope: &InputEnvelope,
) -> Result<Input> {
    let name = source.display_name();
    let raw: Box<dyn Read + Send> = match source {
        Endpoint::Stdio => Box::new(io::stdin()),
        Endpoint::Database(db) => {
            return Err(Error::usage(format!("{db} is not a file (internal error)")))
        }
        Endpoint::File(path) => {
            Box::new(File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?)
        }
    };
    let named = match source {
        Endpoint::File(path) => layers::from_extensions(path).0,
        _ => Compression::None,
    };
    wrap_input(raw, name, (named, false), options, &counter, envelope)
}

/// Takes the envelope off raw input bytes and makes them an [`Input`]. `named` is the compression the
/// name says, and whether a manifest declares it (then the first bytes must agree).
fn wrap_input(
    raw: Box<dyn Read + Send>,
    name: String,
    named: (Compression, bool),
    options: &FormatOptions,
    counter: &Arc<AtomicU64>,
    envelope: &InputEnvelope,
) -> Result<Input> {
    let read_layers = ReadLayers {
        key: envelope.key.as_ref(),
        named: named.0,
        declared: named.1,
        expect: envelope.expect.clone(),
        max_decompressed: envelope.max_decompressed,
    };
    // The bytes read count the file as it is on disk (compressed, encrypted).
    let counted = CountingReader {
        inner: raw,
        count: counter.clone(),
    };
    let counted = layers::unwrap_reader(Box::new(counted), &read_layers, &name)?;
    let reader: Box<dyn BufRead + Send> = match options.encoding {
        Some(encoding) => {
            let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .build(counted);
            Box::new(BufReader::with_capacity(256 * 1024, decoded))
        }
        None => Box::new(BufReader::with_capacity(256 * 1024, counted)),
    };
    Ok(Input { reader, name })
}

/// How to take the envelope off an input: the key's source, what its encryption must be, and the
/// decompression cap.
#[derive(Clone)]
struct InputEnvelope {
    key: Option<KeySource>,
    expect: Expect,
    max_decompressed: u64,
}

impl InputEnvelope {
    fn of(job: &ConvertJob, plan: &Plan) -> InputEnvelope {
        InputEnvelope {
            key: job.key_source.clone(),
            expect: plan.expect.clone(),
            max_decompressed: job.max_decompressed,
        }
    }
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
