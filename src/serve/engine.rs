//! The service's one door into the engine: every call the service makes into ferry's library — running a
//! convert job, finding and checking templates, peeking at an upload's first record, naming formats — is in
//! this file, in the service's own terms ([`RunSpec`] in, [`Outcome`] out), so that the rest of `serve`
//! does not change when the engine does.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::KeyConfig;
use super::operation::{Counts, ErrorInfo, RecordError, MAX_LISTED_ERRORS};
use crate::db::OnConflict;
use crate::env::Environment;
use crate::envelope::KeySource;
use crate::error::{Error, ErrorKind};
use crate::observe::{CancelToken, Event, Observer, RunContext, Status};
use crate::report::Report;
use crate::template::{OneOrMany, Template, TemplateSearch, TemplateSource, BUILTIN_TEMPLATES};
use crate::validate::SchemaValidator;
use crate::{ConvertJob, ErrorPolicy};

/// What a bad record does to a run (the guide's `errorHandling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The first bad record fails the run; nothing is written.
    Strict,
    /// Bad records are set aside and listed; the run goes on.
    Lenient,
    /// Bad records are set aside and counted; the run goes on.
    Skip,
}

/// What a duplicate key does to an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// The record is refused.
    Error,
    /// The existing row stays (`skipDuplicates`).
    Skip,
    /// The record replaces the row (`overwriteExisting`).
    Overwrite,
}

/// One run, in the service's terms: every path is in the operation's folder or the configuration, every
/// database endpoint comes from the configuration.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A file path or a database endpoint (`sqlite://…?table=`, `postgres://…?table=`).
    pub input: String,
    /// A file path (its extension chain says format, compression, encryption) or a database endpoint.
    pub output: String,
    /// The input's format, when its name does not say.
    pub input_format: Option<String>,
    /// The template file that maps (and validates) records.
    pub template: Option<PathBuf>,
    /// The error policy.
    pub policy: Policy,
    /// The conflict mode of a database load.
    pub conflict: Conflict,
    /// Records per batch.
    pub batch_size: usize,
    /// Everything but the final commit.
    pub dry_run: bool,
    /// Read, map and validate only.
    pub validate_only: bool,
    /// Where rejected records go (lenient and skip runs).
    pub rejects: Option<PathBuf>,
    /// Split the output into parts of about this many bytes.
    pub split_bytes: Option<u64>,
    /// The key that encrypts the output or decrypts the input.
    pub key: Option<KeyConfig>,
    /// Decompressed input bytes allowed.
    pub max_decompressed: u64,
    /// Worker threads for mapping and validation.
    pub jobs: Option<usize>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Done; the output is final.
    Succeeded,
    /// Stopped by an error; the target is as it was.
    Failed,
    /// Stopped by its token; the target is as it was.
    Cancelled,
}

/// What a run did, in the service's terms.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub status: RunStatus,
    /// Where every record went.
    pub counts: Counts,
    /// Input bytes read.
    pub bytes_read: u64,
    /// Output bytes written.
    pub bytes_written: u64,
    /// Database loads: inserted and updated rows.
    pub table: Option<(u64, u64)>,
    /// The first errors of records.
    pub errors: Vec<RecordError>,
    /// Why it failed, with the HTTP status that fits.
    pub failure: Option<Failure>,
}

/// A failed run's or request's error, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status that fits (409 conflict, 422 bad data or configuration, 500 …).
    pub status: u16,
    /// Code and sentence.
    pub info: ErrorInfo,
}

/// What a run tells the service while it goes.
pub trait Watch: Send + Sync {
    /// The run is in `step`.
    fn step(&self, step: &str);
    /// Counts and bytes so far; `total_bytes` is the input's size when known.
    fn progress(&self, counts: Counts, bytes_read: u64, total_bytes: Option<u64>, seconds: f64);
    /// A sync pass committed: passes so far, rows it found behind, seconds from snapshot to commit.
    fn lag(&self, _passes: u64, _rows: u64, _seconds: f64) {}
}

/// Runs a sync `job` until `cancel` is cancelled (or it fails), reporting each pass's lag to `watch`. A
/// cancelled sync keeps every pass it committed.
pub fn run_sync(
    job: &crate::sync::SyncJob,
    env: &Environment,
    watch: Arc<dyn Watch>,
    cancel: &CancelToken,
) -> Outcome {
    let ctx = RunContext {
        observer: Arc::new(Watcher(watch)),
        cancel: cancel.clone(),
    };
    let (report, error) = match crate::sync::sync(job, env, &ctx) {
        Ok(report) => (report, None),
        Err(failed) => (failed.report, Some(failed.error)),
    };
    let mut counts = Counts::default();
    let (mut inserted, mut updated) = (0, 0);
    for t in &report.tables {
        counts.read += t.moved.read;
        counts.written += t.moved.inserted + t.moved.updated;
        counts.skipped += t.moved.unchanged;
        inserted += t.moved.inserted;
        updated += t.moved.updated;
    }
    let status = match &error {
        None => RunStatus::Succeeded,
        Some(e) if e.is_cancelled() => RunStatus::Cancelled,
        Some(_) => RunStatus::Failed,
    };
    Outcome {
        status,
        counts,
        bytes_read: 0,
        bytes_written: 0,
        table: Some((inserted, updated)),
        errors: Vec::new(),
        failure: error.as_ref().map(classify),
    }
}

/// Runs `spec` to its end, reporting to `watch` and stopping when `cancel` is cancelled (between batches:
/// a cancelled run ends like a failed strict one). The outcome has the run's counts either way.
pub fn run(
    spec: &RunSpec,
    env: &Environment,
    watch: Arc<dyn Watch>,
    cancel: &CancelToken,
) -> Outcome {
    let ctx = RunContext {
        observer: Arc::new(Watcher(watch)),
        cancel: cancel.clone(),
    };
    match crate::convert(&convert_job(spec), env, &ctx) {
        Ok(report) => outcome(&report, None),
        Err(failed) => outcome(&failed.report, Some(&failed.error)),
    }
}

/// The run's events, as the service's [`Watch`] takes them.
struct Watcher(Arc<dyn Watch>);

impl Observer for Watcher {
    fn event(&self, event: &Event) {
        match event {
            Event::Started { total_bytes, .. } => {
                self.0.step("running");
                self.0.progress(Counts::default(), 0, *total_bytes, 0.0);
            }
            Event::Step { step } => self.0.step(step),
            Event::Lag {
                pass,
                rows,
                seconds,
                counts,
            } => {
                self.0.progress(*counts, 0, None, 0.0);
                self.0.lag(*pass, *rows, *seconds);
            }
            Event::Progress(p) | Event::Finished { progress: p, .. } => {
                self.0
                    .progress(p.counts, p.bytes_read, p.total_bytes, p.seconds);
            }
            _ => {}
        }
    }
}

/// A run's report (of a failed run too) in the service's terms.
fn outcome(report: &Report, error: Option<&Error>) -> Outcome {
    let status = match (report.status, error) {
        (Status::Cancelled, _) => RunStatus::Cancelled,
        (_, Some(e)) if e.is_cancelled() => RunStatus::Cancelled,
        (_, Some(_)) | (Status::Failed, _) => RunStatus::Failed,
        _ => RunStatus::Succeeded,
    };
    Outcome {
        status,
        counts: report.counts,
        bytes_read: report.bytes_read,
        bytes_written: report.bytes_written,
        table: report.inserted.zip(report.updated),
        errors: report
            .errors
            .iter()
            .take(MAX_LISTED_ERRORS)
            .map(|e| RecordError {
                record: e.position.as_ref().and_then(|p| p.record),
                line: e.position.as_ref().and_then(|p| p.line),
                field: e.position.as_ref().and_then(|p| p.field.clone()),
                stage: e.stage.map(|s| s.to_string()),
                error: e.message.clone(),
            })
            .collect(),
        failure: error.map(classify),
    }
}

/// The HTTP status and code an engine error maps to.
pub fn classify(e: &Error) -> Failure {
    let (status, code) = match e.kind() {
        ErrorKind::Usage { .. } | ErrorKind::Config { .. } => (422, "invalid_configuration"),
        ErrorKind::Cancelled => (409, "cancelled"),
        _ if e.is_unique_violation() => (409, "conflict"),
        ErrorKind::Record { .. }
        | ErrorKind::Data { .. }
        | ErrorKind::Verdict { .. }
        | ErrorKind::Rejected { .. } => (422, "invalid_data"),
        ErrorKind::Io { .. } => (500, "io_error"),
    };
    Failure {
        status,
        info: ErrorInfo {
            code: code.into(),
            message: crate::secret::redact(&e.to_string()).into_owned(),
        },
    }
}

fn convert_job(spec: &RunSpec) -> ConvertJob {
    let mut job = ConvertJob::new(spec.input.clone(), spec.output.clone());
    job.input_format = spec.input_format.clone();
    job.template = spec.template.as_ref().map(|p| p.display().to_string());
    job.on_error = match spec.policy {
        Policy::Strict => ErrorPolicy::Strict,
        Policy::Lenient => ErrorPolicy::Lenient,
        Policy::Skip => ErrorPolicy::Skip,
    };
    job.on_conflict = match spec.conflict {
        Conflict::Error => OnConflict::Error,
        Conflict::Skip => OnConflict::Skip,
        Conflict::Overwrite => OnConflict::Overwrite,
    };
    job.batch_size = spec.batch_size;
    job.dry_run = spec.dry_run || spec.validate_only;
    job.validate_only = spec.validate_only;
    if spec.validate_only {
        job.output_format = Some("ndjson".into());
    }
    job.rejects = spec.rejects.clone();
    job.split.max_bytes = spec.split_bytes;
    job.key_source = spec.key.as_ref().map(key_source);
    job.max_decompressed = spec.max_decompressed;
    job.jobs = spec.jobs;
    job
}

fn key_source(key: &KeyConfig) -> KeySource {
    match key {
        KeyConfig {
            env: Some(name), ..
        } => KeySource::Env(name.clone()),
        KeyConfig {
            file: Some(path), ..
        } => KeySource::KeyFile(path.clone()),
        KeyConfig {
            passphrase_env: Some(name),
            ..
        } => KeySource::PassphraseEnv(name.clone()),
        KeyConfig {
            passphrase_file: Some(path),
            ..
        } => KeySource::PassphraseFile(path.clone()),
        // The configuration check makes sure one is given.
        _ => KeySource::Env(KeySource::ENV.to_owned()),
    }
}

/// Checks that a key can be read (at start-up: a missing variable or file is a configuration error).
pub fn check_key(id: &str, key: &KeyConfig, env: &Environment) -> Result<(), String> {
    key_source(key)
        .resolve(env)
        .map(drop)
        .map_err(|e| format!("key {id:?}: {e}"))
}

/// A format's name and the extension its files get, or `None` when ferry has no such format.
pub fn format_extension(name: &str) -> Option<(&'static str, &'static str)> {
    let format = crate::format::by_name(name).ok()?;
    Some((format.name, format.extensions.first().copied()?))
}

/// The format a file name's extension chain names.
pub fn format_of_name(name: &str) -> Option<&'static str> {
    crate::format_from_path(Path::new(name)).map(|f| f.name)
}

/// True when `ext` is a file extension of some format, or of compression or encryption.
pub fn is_known_extension(ext: &str) -> bool {
    let ext = ext.to_ascii_lowercase();
    crate::format::by_extension(&ext).is_some()
        || matches!(ext.as_str(), "gz" | "br" | "zst" | "enc")
}

/// The names of every format.
pub fn format_names() -> Vec<&'static str> {
    crate::format::names()
}

/// A template's YAML and its schema, by name: a stored one in `stored` (a file `NAME.yaml`), else a
/// built-in one.
pub fn template_source(
    name: &str,
    stored: &Path,
) -> Result<(String, Option<serde_json::Value>), Failure> {
    let file = stored.join(format!("{name}.yaml"));
    let template = if file.is_file() {
        Template::from_file(&file)
    } else {
        match BUILTIN_TEMPLATES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Template::parse(text, TemplateSource::Builtin(n)),
            None => {
                return Err(Failure {
                    status: 422,
                    info: ErrorInfo {
                        code: "unknown_template".into(),
                        message: format!("no template named {name:?} is stored or built in"),
                    },
                })
            }
        }
    };
    let template = template.map_err(|e| classify(&e))?;
    let schema = schemas().schema_of(&template).map_err(|e| classify(&e))?;
    Ok((template.text, schema.map(|(_, json)| json)))
}

/// Where a template's schema is found: beside it, in ./schemas, or among the built-in ones (the server's
/// environment adds no template folder).
fn schemas() -> TemplateSearch {
    TemplateSearch::new(&Environment::empty())
}

/// The templates built into the binary: (name, YAML).
pub fn builtin_templates() -> &'static [(&'static str, &'static str)] {
    BUILTIN_TEMPLATES
}

/// A template that checked out.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TemplateSummary {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it is for.
    pub description: String,
    /// The JSON Schema it validates against.
    pub schema: Option<String>,
    /// Its output fields: name and declared type.
    pub fields: Vec<TemplateField>,
    /// The table it loads, when it names one.
    pub table: Option<String>,
}

/// One output field of a template.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TemplateField {
    /// The field's name.
    pub name: String,
    /// Its declared type.
    #[serde(rename = "type")]
    pub field_type: Option<String>,
    /// A record without it is rejected.
    pub required: bool,
}

/// A problem `ferry templates check` finds, with where it is when that is known.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TemplateProblem {
    /// The line in the template's YAML (1-based), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The output field concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, as one sentence (without the place: `line` and `field` say it).
    pub message: String,
}

impl TemplateProblem {
    /// The problem as one line: `line 4: field "b": …`.
    pub fn shown(&self) -> String {
        let place = self.line.map(|l| format!("line {l}: ")).unwrap_or_default();
        match &self.field {
            Some(field) => format!("{place}field {field:?}: {}", self.message),
            None => format!("{place}{}", self.message),
        }
    }
}

/// Checks template YAML exactly as `ferry templates check` does — parse, compile every field, transform
/// and expression, compile the schema — as if it were the file `path` (schemas are found beside it).
/// Every problem is returned, each with its line and field, as the CLI prints them.
pub fn check_template(text: &str, path: &Path) -> Result<TemplateSummary, Vec<TemplateProblem>> {
    let source = TemplateSource::File(path.to_owned());
    // A template whose top level cannot be read fails as one configuration error: "template PATH:LINE: …".
    let template = Template::parse(text, source).map_err(|e| vec![unplaced(&e, path)])?;
    let compiled = template.check().map_err(|problems| {
        problems
            .into_iter()
            .map(|p| TemplateProblem {
                line: p.line.map(|l| l as u64),
                field: p.field,
                message: p.message,
            })
            .collect::<Vec<_>>()
    })?;
    let schema = schemas()
        .schema_of(&template)
        .and_then(|found| match found {
            Some((name, schema)) => SchemaValidator::compile(&name, &schema).map(drop),
            None => Ok(()),
        });
    schema.map_err(|e| vec![unplaced(&e, path)])?;
    let spec = &template.spec;
    Ok(TemplateSummary {
        name: compiled.name.clone(),
        version: compiled.version.clone(),
        description: spec.description.clone(),
        schema: spec.schema.clone(),
        fields: spec
            .fields
            .iter()
            .map(|f| TemplateField {
                name: f.name.clone(),
                field_type: f.field_type.map(|t| t.name().to_owned()),
                required: f.required,
            })
            .collect(),
        table: spec.target.as_ref().map(|t| t.table.clone()),
    })
}

/// An error about template `path` as a problem: its line read from the `template PATH:LINE: ` the engine
/// puts first, and the server's path taken out (a client knows its template by its id).
fn unplaced(e: &Error, path: &Path) -> TemplateProblem {
    let message = e.to_string();
    let prefix = format!("template {}", path.display());
    let Some(rest) = message.strip_prefix(&prefix) else {
        return TemplateProblem {
            line: None,
            field: None,
            message: message.replace(&format!("{}", path.display()), "the template"),
        };
    };
    let numbered = rest.strip_prefix(':').and_then(|r| r.split_once(": "));
    match numbered.and_then(|(line, m)| Some((line.parse::<u64>().ok()?, m))) {
        Some((line, m)) => TemplateProblem {
            line: Some(line),
            field: None,
            message: m.to_owned(),
        },
        None => TemplateProblem {
            line: None,
            field: None,
            message: rest.trim_start_matches(':').trim_start().to_owned(),
        },
    }
}

/// For `auto-detect`: the alternatives of each required field of a template (a record fits when it has
/// one of each).
pub fn required_fields(text: &str) -> Vec<Vec<String>> {
    let Ok(spec) = serde_yaml::from_str::<crate::template::TemplateSpec>(text) else {
        return Vec::new();
    };
    spec.fields
        .iter()
        .filter(|f| f.required)
        .map(|f| match &f.from {
            None => vec![f.name.clone()],
            Some(OneOrMany::One(one)) => vec![one.clone()],
            Some(OneOrMany::Many(many)) => many.clone(),
        })
        .collect()
}

/// The field names of an upload's first record (decrypted and decompressed as a run would), for
/// `auto-detect`.
pub fn first_record_fields(
    path: &Path,
    format: &str,
    key: Option<&KeyConfig>,
    env: &Environment,
    max_decompressed: u64,
    shown: &str,
) -> Result<Vec<String>, Failure> {
    use crate::envelope::layers::{unwrap_reader, Expect, InputKey, ReadLayers};
    let fail = |e: Error| classify(&e);
    let format = crate::format::by_name(format).map_err(fail)?;
    let file = std::fs::File::open(path)
        .map_err(|e| fail(Error::io(crate::Stage::Source, Some(shown), e)))?;
    let source = key.map(key_source);
    let key = InputKey::resolve(source.as_ref(), env).map_err(fail)?;
    let layers = ReadLayers {
        key: &key,
        named: crate::envelope::layers::from_extensions(path).0,
        declared: false,
        expect: Expect::Either,
        max_decompressed,
    };
    let reader = unwrap_reader(Box::new(file), &layers, shown).map_err(fail)?;
    let input = crate::Input {
        reader: Box::new(BufReader::new(reader)),
        name: shown.to_owned(),
        file: None,
    };
    let mut decoder = format
        .decode(input, &crate::FormatOptions::default())
        .map_err(fail)?;
    match decoder.next() {
        Some(Ok(record)) => Ok(record.keys().map(|k| k.to_string()).collect()),
        Some(Err(e)) => Err(fail(e)),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_problems_carry_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let bad = "name: t\nfields:\n  - name: a\n  - name: b\n    transforms: [no_such_transform]\n  - name: c\n    compute: nope(a)\n";
        let problems = check_template(bad, &path).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].field.as_deref(), Some("b"));
        assert_eq!(problems[0].line, Some(5), "{problems:?}");
        assert_eq!(problems[1].field.as_deref(), Some("c"));
        assert_eq!(problems[1].line, Some(7), "{problems:?}");
        let broken = "name: t\nfields: [\n";
        let problems = check_template(broken, &path).unwrap_err();
        assert!(problems[0].line.is_some(), "{problems:?}");
        let path_text = path.display().to_string();
        assert!(!problems[0].message.contains(&path_text), "{problems:?}");
        let good =
            "name: t\nversion: 1.0.0\nfields:\n  - {name: a, type: integer, required: true}\n";
        let summary = check_template(good, &path).unwrap();
        assert_eq!(summary.fields[0].field_type.as_deref(), Some("integer"));
    }

    #[test]
    fn required_fields_list_their_alternatives() {
        let text = BUILTIN_TEMPLATES[0].1;
        let required = required_fields(text);
        assert!(required
            .iter()
            .any(|alts| alts.contains(&"legacy_title".to_owned())));
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(classify(&Error::config("x")).status, 422);
        assert_eq!(classify(&Error::cancelled()).info.code, "cancelled");
    }
}
