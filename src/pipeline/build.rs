//! The checked plan of a conversion: [`ConvertJob::build`](crate::ConvertJob::build) resolves endpoints and
//! formats, compiles the template and schema, resolves the keys, checks every option against the others
//! and every path against every other — and opens nothing for writing. What it returns,
//! [`BuiltConvert`], runs without a configuration error left to find.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::stages::Stages;
use crate::db::{ColumnKind, SinkOptions};
use crate::endpoint::Endpoint;
use crate::env::Environment;
use crate::envelope::layers::{self, Expect, InputKey};
use crate::envelope::manifest::PartSet;
use crate::envelope::split::{is_manifest, PartNames};
use crate::envelope::{Compression, CompressionSpec, KeyMaterial, KeySource};
use crate::error::{Error, Position, Result, Stage};
use crate::format::{Fidelity, Format};
use crate::job::{ConvertJob, ErrorPolicy};
use crate::paths::RunPaths;
use crate::sort::{parse_sort, SortKey};

/// A conversion checked against its environment, ready to run ([`BuiltConvert::run`]).
pub struct BuiltConvert {
    /// The job as given.
    pub(super) job: ConvertJob,
    pub(super) source: Endpoint,
    pub(super) target: Endpoint,
    /// The input format; `None` for a database.
    pub(super) input_format: Option<&'static Format>,
    /// The output format; `None` for a database.
    pub(super) output_format: Option<&'static Format>,
    /// The input's character encoding, when it is not UTF-8.
    pub(super) encoding: Option<&'static encoding_rs::Encoding>,
    pub(super) stages: Arc<Stages>,
    pub(super) rejects: Option<PathBuf>,
    /// How to load the target table, when the target is a database.
    pub(super) table: Option<SinkOptions>,
    /// The split set, when the input is a manifest: its parts are read in order, each checked.
    pub(super) manifest: Option<PartSet>,
    /// What the input's encryption must be.
    pub(super) expect: Expect,
    /// The key an encrypted input is read with.
    pub(super) input_key: InputKey,
    /// The output's compression.
    pub(super) compression: CompressionSpec,
    /// The output's key, when it is encrypted.
    pub(super) key: Option<Arc<KeyMaterial>>,
    /// `--sort`: the fields, and where a large sort spills its runs (`TMPDIR`).
    pub(super) sort: Option<(Vec<SortKey>, PathBuf)>,
    /// `--incremental`: the range read and where its mark goes.
    pub(super) incremental: Option<crate::sync::window::Window>,
}

impl BuiltConvert {
    /// Makes the run one shard of a sharded job: a database load writes `entry` into the target's shard
    /// ledger in its own transaction. `false` when the output is not a database (a file output's shard is
    /// its own part set instead).
    pub(crate) fn keep_ledger(&mut self, entry: crate::shard::ledger::Entry) -> bool {
        match &mut self.table {
            Some(options) => {
                options.ledger = Some(entry);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for BuiltConvert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltConvert")
            .field("job", &self.job)
            .finish_non_exhaustive()
    }
}

impl BuiltConvert {
    /// The job this was built from.
    pub fn job(&self) -> &ConvertJob {
        &self.job
    }
}

/// The format of a file endpoint; `None` for a database.
fn endpoint_format(
    endpoint: &Endpoint,
    explicit: Option<&str>,
    flag: &str,
) -> Result<Option<&'static Format>> {
    match endpoint {
        Endpoint::Database(db) if explicit.is_some() => Err(Error::config(format!(
            "{db} is a database: {flag} does not apply to it"
        ))),
        Endpoint::Database(_) => Ok(None),
        other => other.format(explicit, flag).map(Some),
    }
}

/// Checks `job` against `env` (see [`ConvertJob::build`]).
pub(crate) fn build(job: &ConvertJob, env: &Environment) -> Result<BuiltConvert> {
    let mut source = Endpoint::parse(&job.input, env)?;
    let target = Endpoint::parse(&job.output, env)?;
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
    // A read-only format (a workbook) as output, or a write-only one as input, fails before anything opens.
    input_format.map(Format::reader).transpose()?;
    output_format.map(Format::writer).transpose()?;
    let encoding = job.read_options.encoding()?;
    if job.batch_size == 0 {
        return Err(Error::config("--batch-size must be at least 1"));
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
            return Err(Error::config(
                "--on-error lenient/skip writing to standard output needs --rejects FILE",
            ));
        }
    };
    let text_source = input_format.is_some_and(|f| f.fidelity == Fidelity::Text);
    let stages = Arc::new(Stages::build(job, env, text_source)?);
    let mut table = match &target {
        Endpoint::Database(db) if !job.validate_only => {
            Some(sink_options(job, db, &source, &stages, text_source)?)
        }
        _ => None,
    };
    check_options(job, &target, table.is_some())?;
    check_output_folder(job, &target)?;
    let sort = sort_plan(job, &target, env)?;
    let input_key = InputKey::resolve(job.key_source.as_ref(), env)?;
    let (compression, key) = output_envelope(job, &target, &input_key)?;
    let head = crate::sync::window::OutputHead {
        format: output_format.map_or("ndjson", |f| f.name),
        compression: compression.kind.name(),
        key: key.as_deref(),
    };
    let incremental =
        crate::sync::window::plan(job, &mut source, &target, table.as_mut(), head, env)?;
    let expect = input_expectation(job, &source, manifest.as_ref(), key.is_some())?;
    if let Some(set) = &manifest {
        authenticate_set(set, &input_key)?;
    }
    let rejects = match (&rejects, &target, &table) {
        (None, Endpoint::Database(db), Some(options))
            if writes && job.on_error != ErrorPolicy::Strict =>
        {
            Some(default_table_rejects(db, &options.table))
        }
        _ => rejects,
    };
    let built = BuiltConvert {
        job: job.clone(),
        source,
        target,
        input_format,
        output_format,
        encoding,
        stages,
        rejects,
        table,
        manifest,
        expect,
        input_key,
        compression,
        key,
        sort,
        incremental,
    };
    run_paths(job, &built).check()?;
    Ok(built)
}

/// The options that only make sense together, or for some targets.
fn check_options(job: &ConvertJob, target: &Endpoint, loads_table: bool) -> Result<()> {
    if !loads_table && (job.commit_every.is_some() || job.resume_after.is_some()) {
        return Err(Error::config(
            "--commit-every and --resume apply to database targets only",
        ));
    }
    if (job.split.splits() || job.checksum) && !matches!(target, Endpoint::File(_)) {
        return Err(Error::config(
            "--split-size, --split-records and --checksum need a file output (not - or a database)",
        ));
    }
    if job.split.splits() && job.checksum {
        return Err(Error::config(
            "--checksum is for a single file; a split output's manifest already lists each part's SHA-256",
        ));
    }
    if job.split.max_records == Some(0) {
        return Err(Error::config("--split-records must be at least 1"));
    }
    if job.commit_every == Some(0) {
        return Err(Error::config("--commit-every must be at least 1"));
    }
    Ok(())
}

/// A file output's folder must exist, unless `--mkdir` asks ferry to create it (when the run opens the
/// output: a dry run creates nothing).
fn check_output_folder(job: &ConvertJob, target: &Endpoint) -> Result<()> {
    let Endpoint::File(path) = target else {
        return Ok(());
    };
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if job.validate_only || dir.is_dir() || (job.mkdir && !dir.exists()) {
        return Ok(());
    }
    let shown = crate::secret::redact(&dir.display().to_string()).into_owned();
    Err(Error::config(if dir.exists() {
        format!("the output's folder {shown} is not a folder")
    } else {
        format!("the output's folder {shown} does not exist: create it, or pass --mkdir")
    }))
}

/// `--sort`'s fields and the folder its runs spill to; a sort applies to file and stream outputs only.
fn sort_plan(
    job: &ConvertJob,
    target: &Endpoint,
    env: &Environment,
) -> Result<Option<(Vec<SortKey>, PathBuf)>> {
    let keys = parse_sort(&job.sort).map_err(|e| Error::config(format!("--sort: {e}")))?;
    if keys.is_empty() || job.validate_only {
        return Ok(None);
    }
    if matches!(target, Endpoint::Database(_)) {
        return Err(Error::config(
            "--sort applies to file outputs: a table keeps no order (sort when you read it, with \
             ?query=SELECT … ORDER BY …)",
        ));
    }
    let dir = env
        .non_empty("TMPDIR")
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    Ok(Some((keys, dir)))
}

/// Every path the run reads and writes, derived ones included, for the collision check.
fn run_paths(job: &ConvertJob, plan: &BuiltConvert) -> RunPaths {
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
            let names = PartNames::new(path, super::open::is_envelope_extension);
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
    if let Some((flag, file)) = job.key_source.as_ref().and_then(KeySource::file) {
        paths.read(flag, file);
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
fn authenticate_set(set: &PartSet, key: &InputKey) -> Result<()> {
    if !set.is_encrypted() {
        return Ok(());
    }
    let material = match key {
        InputKey::Ready(material) => material,
        InputKey::Unusable(message) => return Err(Error::config(message.clone())),
        InputKey::Missing => {
            return Err(Error::config(format!(
            "the parts of {} are encrypted: give the key with --key-file, FERRY_KEY (or --key-env \
                 NAME), or a passphrase with --passphrase-env NAME / --passphrase-file",
            set.path().display()
        )))
        }
    };
    set.authenticate(material)
}

/// The output's compression and key: `--compress`/`--encrypt`, else what its extension chain says
/// (`out.ndjson.gz.enc`). The key is the input's: the key option's, else the default variables'.
fn output_envelope(
    job: &ConvertJob,
    target: &Endpoint,
    key: &InputKey,
) -> Result<(CompressionSpec, Option<Arc<KeyMaterial>>)> {
    let (named, named_encrypted) = match target {
        Endpoint::File(path) if !job.validate_only => layers::from_extensions(path),
        _ => (Compression::None, false),
    };
    let compression = job.compress.unwrap_or_else(|| CompressionSpec::new(named));
    let encrypt = job.encrypt || named_encrypted;
    if (encrypt || compression.kind != Compression::None) && matches!(target, Endpoint::Database(_))
    {
        return Err(Error::config(
            "--compress and --encrypt apply to file outputs, not databases",
        ));
    }
    if !encrypt {
        return Ok((compression, None));
    }
    match key {
        InputKey::Ready(material) => Ok((compression, Some(material.clone()))),
        InputKey::Unusable(message) => Err(Error::config(message.clone())),
        InputKey::Missing => Err(Error::config(
            "the output is encrypted (.enc or --encrypt) but no key was given: use --key-file FILE, \
             FERRY_KEY (or --key-env NAME), or --passphrase-env NAME / --passphrase-file FILE \
             (ferry keygen FILE makes a key)",
        )),
    }
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
/// template's target table, else the source's table when the input is a database table.
fn sink_options(
    job: &ConvertJob,
    db: &crate::db::DbEndpoint,
    source: &Endpoint,
    stages: &Stages,
    text_source: bool,
) -> Result<SinkOptions> {
    let target = stages.template.as_ref().and_then(|t| t.target.as_ref());
    if db.query.is_some() {
        return Err(Error::config(format!(
            "{db}: ?query= is for reading; name a table to load with ?table="
        )));
    }
    let table = db
        .table
        .clone()
        .or_else(|| job.table.clone())
        .or_else(|| target.map(|t| t.table.clone()))
        // A table copied from a database keeps its name: `--in 'sqlite://app.db?table=contexts' --to postgres`.
        .or_else(|| match source {
            Endpoint::Database(from) => from.table.clone(),
            _ => None,
        })
        .ok_or_else(|| {
            Error::config(format!(
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
        types: job.types.clone(),
        text_source,
        sample_records: job.sample_records,
        ledger: None,
        mark: None,
    })
}
