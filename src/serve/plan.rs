//! From a request to runs: the guide's export and import options are checked and turned into
//! [`RunSpec`]s over the configuration's datasets. Nothing of a request becomes a path, a URL or SQL:
//! filters and a user binding become a template in the operation's folder — a CEL filter whose values are
//! literals written by a JSON encoder (never pasted text), a user field stamped with the token's user,
//! and a JSON Schema `const` that rejects another user's records.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value as Json};
use utoipa::ToSchema;

use super::config::{is_plain_name, Dataset, KeyConfig, Settings};
use super::engine::{self, Conflict, Policy, RunSpec};
use super::error::ApiError;
use super::tokens::Caller;

/// `POST /export`'s body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportRequest {
    /// A dataset of the configuration (`contexts`, `sessions`, `templates`) or `all`.
    pub data_type: String,
    /// How to export.
    #[serde(default)]
    pub options: ExportOptions,
}

/// An export's options, as the guide names them.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExportOptions {
    /// json (default), ndjson, csv, tsv, xml, yaml or markdown.
    pub format: Option<String>,
    /// gzip, brotli, zstd or none (default).
    pub compression: Option<String>,
    /// Encrypt the files with one of the server's keys (AES-256-GCM).
    pub encryption: Option<Encryption>,
    /// false leaves the dataset's metadata field out (default true).
    pub include_metadata: Option<bool>,
    /// Accepted for the guide's clients; bytes are always exported (as base64 in text formats).
    pub include_binary_data: Option<bool>,
    /// Which records.
    pub filters: Option<Filters>,
    /// Split into parts of at most about `maxSizeBytes`, listed in a manifest.
    pub split_large_files: Option<SplitFiles>,
    /// Records per batch.
    pub batch_size: Option<usize>,
    /// A stored or built-in template to map records through (default: the dataset's export template).
    pub template: Option<String>,
}

/// Encryption options. A key is never taken from a request: `keyId` names one of the server's.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Encryption {
    /// true to encrypt.
    #[serde(default)]
    pub enabled: bool,
    /// aes-256-gcm (the only one).
    pub algorithm: Option<String>,
    /// The id of a key in the server's configuration (default: its `default_key`).
    pub key_id: Option<String>,
    /// Refused: keys are never sent in a request.
    #[schema(value_type = Option<String>)]
    pub key: Option<Json>,
}

/// The guide's export filters; each tests the field the dataset's configuration names.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Filters {
    /// Records whose date is in this range (RFC 3339 or YYYY-MM-DD; `end` included).
    pub date_range: Option<DateRange>,
    /// Records of these types.
    #[serde(default)]
    pub types: Vec<String>,
    /// Records with any of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Records of these sessions.
    #[serde(default)]
    pub session_ids: Vec<String>,
    /// Records of these importances (text or numbers).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub importance: Vec<Json>,
}

/// A date range.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    /// From (included).
    pub start: Option<String>,
    /// To (included).
    pub end: Option<String>,
}

/// Splitting.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SplitFiles {
    /// true to split.
    #[serde(default)]
    pub enabled: bool,
    /// A part's size, about (default 50 MiB).
    pub max_size_bytes: Option<u64>,
}

/// An import's (or validation's) options, as the guide names them: the multipart field `options`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImportOptions {
    /// The upload's format (default: from its file name).
    pub format: Option<String>,
    /// Validate against the template's schema (default true).
    pub validate_schema: Option<bool>,
    /// Leave existing rows with the same key alone (counted as skipped).
    pub skip_duplicates: Option<bool>,
    /// Replace existing rows with the same key.
    pub overwrite_existing: Option<bool>,
    /// Records per batch.
    pub batch_size: Option<usize>,
    /// Everything but the commit; the table is left as it was.
    pub dry_run: Option<bool>,
    /// strict (default for imports), lenient (default for validation) or skip-errors.
    pub error_handling: Option<String>,
    /// A stored or built-in template to map records through (default: the dataset's).
    pub template: Option<String>,
    /// For an encrypted upload: `{"keyId": "…"}`.
    pub encryption: Option<Encryption>,
    /// Refused: mappings are templates (store one with POST /templates and name it in `template`).
    #[schema(value_type = Option<Object>)]
    pub mapping: Option<Json>,
}

/// The runs of one operation, and the options as accepted (for its JSON).
#[derive(Debug)]
pub struct Planned {
    /// One run per dataset (`all` exports several).
    pub runs: Vec<(String, RunSpec)>,
    /// The options as the operation shows them.
    pub options: Json,
    /// A dry run or a validation.
    pub dry_run: bool,
    /// A sync operation runs this job instead of `runs`, until cancelled.
    pub sync: Option<crate::sync::SyncJob>,
}

/// Plans an export by the operation whose folder is `dir` (`work/` and `result/` exist).
pub fn export(
    settings: &Settings,
    caller: &Caller,
    req: &ExportRequest,
    dir: &Path,
) -> Result<Planned, ApiError> {
    let o = &req.options;
    let datasets = datasets_for(settings, &req.data_type, true)?;
    let format = o.format.as_deref().unwrap_or("json");
    let (format, extension) = engine::format_extension(format).ok_or_else(|| {
        ApiError::invalid(format!(
            "options.format {format:?} is not one of {}",
            engine::format_names().join(", ")
        ))
    })?;
    let compression = match o.compression.as_deref().unwrap_or("none") {
        "none" => "",
        "gzip" => ".gz",
        "brotli" => ".br",
        "zstd" => ".zst",
        other => {
            return Err(ApiError::invalid(format!(
                "options.compression {other:?} is not one of gzip, brotli, zstd, none"
            )))
        }
    };
    let key = encryption_key(settings, o.encryption.as_ref(), true)?;
    let split_bytes = match &o.split_large_files {
        Some(s) if s.enabled => {
            let bytes = s.max_size_bytes.unwrap_or(50 << 20);
            if bytes < 1024 {
                return Err(ApiError::invalid(
                    "options.splitLargeFiles.maxSizeBytes must be at least 1024",
                ));
            }
            Some(bytes)
        }
        _ => None,
    };
    let batch_size = batch_size(settings, o.batch_size)?;
    if let Some(t) = &o.template {
        check_template_name(t)?;
    }
    let mut runs = Vec::new();
    for dataset in datasets {
        let user = bound_user(caller, dataset)?;
        let filter = filter_expression(dataset, o.filters.as_ref(), user.as_deref())?;
        let drop: Vec<String> = match (o.include_metadata, &dataset.config.metadata_field) {
            (Some(false), Some(field)) => vec![field.clone()],
            _ => Vec::new(),
        };
        let base_name = o
            .template
            .as_ref()
            .or(dataset.config.export_template.as_ref());
        let template = if base_name.is_some() || filter.is_some() || !drop.is_empty() {
            let base = base_template(settings, base_name)?;
            let edits = Edits {
                filter,
                drop,
                stamp_user: None,
                keep_schema: true,
            };
            Some(materialize(
                &dir.join("work"),
                &format!("export-{}", dataset.name),
                base,
                &edits,
            )?)
        } else {
            None
        };
        let encrypted = if key.is_some() { ".enc" } else { "" };
        let output = dir.join("result").join(format!(
            "{}.{extension}{compression}{encrypted}",
            dataset.name
        ));
        runs.push((
            dataset.name.clone(),
            RunSpec {
                input: dataset.database.endpoint(&dataset.config.table),
                output: output.display().to_string(),
                input_format: None,
                template,
                policy: Policy::Strict,
                conflict: Conflict::Error,
                batch_size,
                dry_run: false,
                validate_only: false,
                rejects: None,
                split_bytes,
                key: key.clone().map(|(_, k)| k),
                max_decompressed: settings.config.max_decompressed_size.0,
                jobs: settings.config.jobs_per_operation,
            },
        ));
    }
    let options = json!({
        "format": format,
        "compression": o.compression.as_deref().unwrap_or("none"),
        "encryption": key.as_ref().map(|(id, _)| json!({"enabled": true, "algorithm": "aes-256-gcm", "keyId": id})),
        "includeMetadata": o.include_metadata.unwrap_or(true),
        "filters": o.filters.as_ref().map(filters_json),
        "splitLargeFiles": split_bytes.map(|b| json!({"enabled": true, "maxSizeBytes": b})),
        "batchSize": batch_size,
        "template": base_names(o.template.as_deref()),
    });
    Ok(Planned {
        runs,
        options,
        dry_run: false,
        sync: None,
    })
}

fn base_names(t: Option<&str>) -> Json {
    t.map_or(Json::Null, |t| Json::String(t.to_owned()))
}

fn filters_json(f: &Filters) -> Json {
    json!({
        "dateRange": f.date_range.as_ref().map(|r| json!({"start": r.start, "end": r.end})),
        "types": f.types, "tags": f.tags, "sessionIds": f.session_ids, "importance": f.importance,
    })
}

/// What an import or validation is about.
#[derive(Debug)]
pub struct Upload<'a> {
    /// The stored upload.
    pub path: &'a Path,
    /// The format, from the options or the file's name.
    pub format: Option<String>,
    /// The name the client gave (for messages).
    pub shown: &'a str,
}

/// Plans an import (or, with `validate_only`, a validation) of `upload` into `dataset`.
pub fn import(
    settings: &Settings,
    caller: &Caller,
    data_type: &str,
    o: &ImportOptions,
    upload: &Upload<'_>,
    dir: &Path,
    validate_only: bool,
) -> Result<Planned, ApiError> {
    if o.mapping.is_some() {
        return Err(ApiError::invalid(
            "options.mapping is not taken from a request: store the mapping as a template \
             (POST /api/data-migration/templates) and name it in options.template",
        ));
    }
    let key = encryption_key(settings, o.encryption.as_ref(), false)?;
    let format = upload.format.clone().ok_or_else(|| {
        ApiError::invalid(format!(
            "cannot tell the format of {:?} from its name: give options.format (one of {})",
            upload.shown,
            engine::format_names().join(", ")
        ))
    })?;
    let dataset =
        match data_type {
            "auto-detect" => detect(settings, upload, &format, key.as_ref().map(|k| &k.1))?,
            "all" => return Err(ApiError::invalid(
                "dataType all is for exports: import each file with its dataType, or auto-detect",
            )),
            name => datasets_for(settings, name, false)?
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::invalid("no dataset"))?,
        };
    let policy = match o.error_handling.as_deref() {
        None if validate_only => Policy::Lenient,
        None | Some("strict") => Policy::Strict,
        Some("lenient") => Policy::Lenient,
        Some("skip-errors" | "skip") => Policy::Skip,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "options.errorHandling {other:?} is not one of strict, lenient, skip-errors"
            )))
        }
    };
    let conflict = match (
        o.skip_duplicates.unwrap_or(false),
        o.overwrite_existing.unwrap_or(false),
    ) {
        (true, true) => return Err(ApiError::invalid(
            "options.skipDuplicates and options.overwriteExisting contradict each other: give one",
        )),
        (true, false) => Conflict::Skip,
        (false, true) => Conflict::Overwrite,
        (false, false) => Conflict::Error,
    };
    if let Some(t) = &o.template {
        check_template_name(t)?;
    }
    let user = bound_user(caller, dataset)?;
    let keep_schema = o.validate_schema.unwrap_or(true);
    let base_name = o.template.as_ref().or(dataset.config.template.as_ref());
    let template = if base_name.is_some() || user.is_some() {
        let base = base_template(settings, base_name)?;
        let edits = Edits {
            filter: None,
            drop: Vec::new(),
            stamp_user: user.clone().zip(dataset.config.user_column.clone()),
            keep_schema,
        };
        Some(materialize(
            &dir.join("work"),
            &format!("import-{}", dataset.name),
            base,
            &edits,
        )?)
    } else {
        None
    };
    let batch_size = batch_size(settings, o.batch_size)?;
    let dry_run = o.dry_run.unwrap_or(false) || validate_only;
    let target = if validate_only {
        "-".to_owned()
    } else {
        dataset.database.endpoint(&dataset.config.table)
    };
    let spec = RunSpec {
        input: upload.path.display().to_string(),
        output: target,
        input_format: Some(format.clone()),
        template,
        policy,
        conflict,
        batch_size,
        dry_run,
        validate_only,
        rejects: Some(dir.join("work").join("rejects.ndjson")),
        split_bytes: None,
        key: key.as_ref().map(|(_, k)| k.clone()),
        max_decompressed: settings.config.max_decompressed_size.0,
        jobs: settings.config.jobs_per_operation,
    };
    let options = json!({
        "format": format,
        "validateSchema": keep_schema,
        "skipDuplicates": conflict == Conflict::Skip,
        "overwriteExisting": conflict == Conflict::Overwrite,
        "batchSize": batch_size,
        "dryRun": dry_run,
        "errorHandling": match policy { Policy::Strict => "strict", Policy::Lenient => "lenient", Policy::Skip => "skip-errors" },
        "template": base_names(o.template.as_deref()),
        "encryption": key.as_ref().map(|(id, _)| json!({"keyId": id})),
    });
    Ok(Planned {
        runs: vec![(dataset.name.clone(), spec)],
        options,
        dry_run,
        sync: None,
    })
}

/// The datasets `data_type` names (`all`: every one, when `all_allowed`).
fn datasets_for<'a>(
    settings: &'a Settings,
    data_type: &str,
    all_allowed: bool,
) -> Result<Vec<&'a Dataset>, ApiError> {
    if data_type == "all" && all_allowed {
        return Ok(settings.datasets.values().collect());
    }
    settings
        .datasets
        .get(data_type)
        .map(|d| vec![d])
        .ok_or_else(|| {
            let mut names: Vec<&str> = settings.datasets.keys().map(String::as_str).collect();
            if all_allowed {
                names.push("all");
            }
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_data_type",
                format!(
                    "dataType {data_type:?} is not one of this server's: {}",
                    names.join(", ")
                ),
            )
        })
}

/// The user a user-bound token's run is held to, or `None` for an unbound token.
fn bound_user(caller: &Caller, dataset: &Dataset) -> Result<Option<String>, ApiError> {
    match (&caller.user, &dataset.config.user_column) {
        (None, _) => Ok(None),
        (Some(user), Some(_)) => Ok(Some(user.clone())),
        (Some(_), None) => Err(ApiError::forbidden(format!(
            "this token is bound to one user, and dataset {:?} has no user column to hold it to",
            dataset.name
        ))),
    }
}

/// The key an export is encrypted with, or an import's upload decrypted with.
fn encryption_key(
    settings: &Settings,
    e: Option<&Encryption>,
    export: bool,
) -> Result<Option<(String, KeyConfig)>, ApiError> {
    let Some(e) = e else { return Ok(None) };
    if e.key.is_some() {
        return Err(ApiError::invalid(
            "encryption.key is refused: keys are never sent in a request; name one of the server's keys \
             with encryption.keyId",
        ));
    }
    if let Some(alg) = e
        .algorithm
        .as_deref()
        .filter(|a| !a.eq_ignore_ascii_case("aes-256-gcm"))
    {
        return Err(ApiError::invalid(format!(
            "encryption.algorithm {alg:?} is not supported: ferry encrypts with aes-256-gcm"
        )));
    }
    if export && !e.enabled {
        return Ok(None);
    }
    let id = e
        .key_id
        .clone()
        .or_else(|| settings.config.default_key.clone())
        .ok_or_else(|| {
            ApiError::invalid("encryption needs encryption.keyId: the server has no default_key")
        })?;
    let key = settings.config.keys.get(&id).ok_or_else(|| {
        ApiError::invalid(format!(
            "encryption.keyId {id:?} is not one of the server's keys"
        ))
    })?;
    Ok(Some((id, key.clone())))
}

fn batch_size(settings: &Settings, asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        None => Ok(settings.config.batch_size),
        Some(n) if n >= 1 && n <= settings.config.max_batch_size => Ok(n),
        Some(n) => Err(ApiError::invalid(format!(
            "options.batchSize {n} is not between 1 and {}",
            settings.config.max_batch_size
        ))),
    }
}

fn check_template_name(name: &str) -> Result<(), ApiError> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "options.template {name:?} is not a template name (letters, digits, ., - and _)"
        )))
    }
}

/// The base template's YAML and schema, by name.
fn base_template(
    settings: &Settings,
    name: Option<&String>,
) -> Result<Option<(String, Option<Json>)>, ApiError> {
    name.map(|n| engine::template_source(n, &settings.templates_dir))
        .transpose()
        .map_err(ApiError::from_failure)
}

/// How the service changes a template for one run.
#[derive(Debug, Default)]
pub struct Edits {
    /// A CEL filter to add (and-ed with the template's own).
    pub filter: Option<String>,
    /// Fields to leave out of the output.
    pub drop: Vec<String>,
    /// (user, field): the field is stamped with the user where a record has none, and a record with
    /// another user's id is rejected.
    pub stamp_user: Option<(String, String)>,
    /// Keep the template's schema.
    pub keep_schema: bool,
}

/// Writes the template a run uses into `dir` (`<stem>.yaml`, and its schema beside it) and returns its
/// path. Without a base template, the template keeps every field as it comes (`keep_unmapped`).
pub fn materialize(
    dir: &Path,
    stem: &str,
    base: Option<(String, Option<Json>)>,
    edits: &Edits,
) -> Result<PathBuf, ApiError> {
    use serde_yaml::{Mapping, Value as Yaml};
    let (mut doc, schema) = match base {
        Some((text, schema)) => (
            serde_yaml::from_str::<Yaml>(&text).map_err(ApiError::internal)?,
            schema,
        ),
        None => {
            let mut m = Mapping::new();
            m.insert("name".into(), Yaml::String(stem.to_owned()));
            m.insert("keep_unmapped".into(), Yaml::Bool(true));
            m.insert("fields".into(), Yaml::Sequence(Vec::new()));
            (Yaml::Mapping(m), None)
        }
    };
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| ApiError::internal("a template is not a mapping"))?;
    if let Some(filter) = &edits.filter {
        let combined = match map.get("filter").and_then(Yaml::as_str) {
            Some(own) => format!("({own}) && ({filter})"),
            None => filter.clone(),
        };
        map.insert("filter".into(), Yaml::String(combined));
    }
    let fields = map
        .entry("fields".into())
        .or_insert_with(|| Yaml::Sequence(Vec::new()));
    let fields = fields
        .as_sequence_mut()
        .ok_or_else(|| ApiError::internal("a template's fields are not a list"))?;
    let position = |fields: &Vec<Yaml>, name: &str| {
        fields
            .iter()
            .position(|f| f.get("name").and_then(Yaml::as_str) == Some(name))
    };
    for name in &edits.drop {
        match position(fields, name) {
            Some(i) => {
                let field = fields[i]
                    .as_mapping_mut()
                    .ok_or_else(|| ApiError::internal("field"))?;
                let transforms = field
                    .entry("transforms".into())
                    .or_insert_with(|| Yaml::Sequence(Vec::new()));
                if let Some(list) = transforms.as_sequence_mut() {
                    list.push(Yaml::String("drop".into()));
                }
            }
            None => fields.push(
                serde_yaml::to_value(json!({"name": name, "transforms": ["drop"]}))
                    .map_err(ApiError::internal)?,
            ),
        }
    }
    if let Some((user, column)) = &edits.stamp_user {
        match position(fields, column) {
            Some(i) => {
                let field = fields[i]
                    .as_mapping_mut()
                    .ok_or_else(|| ApiError::internal("field"))?;
                field.insert("default".into(), Yaml::String(user.clone()));
            }
            None => fields.push(
                serde_yaml::to_value(json!({"name": column, "type": "string", "default": user}))
                    .map_err(ApiError::internal)?,
            ),
        }
    }
    if fields.is_empty() {
        // A template needs a field: this one reads nothing and is dropped.
        fields.push(
            serde_yaml::to_value(json!({"name": "__ferry_none", "transforms": ["drop"]}))
                .map_err(ApiError::internal)?,
        );
    }
    let schema = match (
        edits.keep_schema.then_some(schema).flatten(),
        &edits.stamp_user,
    ) {
        (schema, Some((user, column))) => {
            let mut held = json!({
                "properties": {column.as_str(): {"const": user}},
                "required": [column],
            });
            if let Some(own) = schema {
                held["allOf"] = json!([own]);
            }
            Some(held)
        }
        (schema, None) => schema,
    };
    map.remove("schema");
    if let Some(schema) = schema {
        let file = format!("{stem}.schema.json");
        let text = serde_json::to_vec_pretty(&schema).map_err(ApiError::internal)?;
        std::fs::write(dir.join(&file), text).map_err(ApiError::internal)?;
        map.insert("schema".into(), Yaml::String(file));
    }
    let text = serde_yaml::to_string(&doc).map_err(ApiError::internal)?;
    let path = dir.join(format!("{stem}.yaml"));
    std::fs::write(&path, text).map_err(ApiError::internal)?;
    Ok(path)
}

/// A CEL string literal: JSON's escapes are CEL's, so a JSON encoder writes it (the value is data, never
/// expression text).
fn cel_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A CEL literal for a JSON scalar.
fn cel_literal(value: &Json) -> Result<String, ApiError> {
    match value {
        Json::String(s) => Ok(cel_string(s)),
        Json::Bool(b) => Ok(b.to_string()),
        Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(format!("{f:?}")),
            _ => Err(ApiError::invalid("a filter value is not a finite number")),
        },
        _ => Err(ApiError::invalid(
            "filter values are text, numbers or booleans",
        )),
    }
}

/// `field` (dotted for nested objects) as a guard that it is there and an expression that reads it.
fn cel_field(field: &str) -> (String, String) {
    let mut guards = Vec::new();
    let mut access = "record".to_owned();
    for (i, part) in field.split('.').enumerate() {
        if i > 0 {
            guards.push(format!("type({access}) == type({{}})"));
        }
        guards.push(format!("{} in {access}", cel_string(part)));
        access = format!("{access}[{}]", cel_string(part));
    }
    (guards.join(" && "), access)
}

fn cel_list(values: &[Json]) -> Result<String, ApiError> {
    let items = values
        .iter()
        .map(cel_literal)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("[{}]", items.join(", ")))
}

/// A date or date-time as CEL's `timestamp(…)` (a date alone is midnight UTC).
fn cel_time(text: &str, what: &str, end: bool) -> Result<String, ApiError> {
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|d| {
                let day = if end { d.succ_opt().unwrap_or(d) } else { d };
                day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
            })
        })
        .map_err(|_| {
            ApiError::invalid(format!(
                "filters.dateRange.{what} {text:?} is not an RFC 3339 date-time or a YYYY-MM-DD date"
            ))
        })?;
    Ok(format!(
        "timestamp({})",
        cel_string(&parsed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    ))
}

/// The CEL filter for a request's `filters` and a token's user, over the dataset's configured fields.
pub fn filter_expression(
    dataset: &Dataset,
    filters: Option<&Filters>,
    user: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let names = &dataset.config.filters;
    let field_for = |name: &Option<String>, option: &str| {
        name.clone().ok_or_else(|| {
            ApiError::invalid(format!(
                "dataset {:?} has no field for filters.{option} (datasets.{}.filters.{option} in the \
                 server's configuration)",
                dataset.name, dataset.name
            ))
        })
    };
    let mut parts = Vec::new();
    if let (Some(user), Some(column)) = (user, &dataset.config.user_column) {
        let (guard, access) = cel_field(column);
        parts.push(format!("{guard} && {access} == {}", cel_string(user)));
    }
    if let Some(f) = filters {
        if let Some(range) = &f.date_range {
            let (guard, access) = cel_field(&field_for(&names.date_range, "dateRange")?);
            // Text and timestamps alike: a timestamp's string() is RFC 3339.
            let value = format!("timestamp(string({access}))");
            let mut test = vec![guard];
            if let Some(start) = &range.start {
                test.push(format!("{value} >= {}", cel_time(start, "start", false)?));
            }
            if let Some(end) = &range.end {
                let inclusive = !end.contains('T');
                let op = if inclusive { "<" } else { "<=" };
                test.push(format!("{value} {op} {}", cel_time(end, "end", true)?));
            }
            parts.push(test.join(" && "));
        }
        let lists: [(&Option<String>, &str, Vec<Json>); 3] = [
            (
                &names.types,
                "types",
                f.types.iter().cloned().map(Json::String).collect(),
            ),
            (
                &names.session_ids,
                "sessionIds",
                f.session_ids.iter().cloned().map(Json::String).collect(),
            ),
            (&names.importance, "importance", f.importance.clone()),
        ];
        for (name, option, values) in lists {
            if values.is_empty() {
                continue;
            }
            let (guard, access) = cel_field(&field_for(name, option)?);
            parts.push(format!("{guard} && {access} in {}", cel_list(&values)?));
        }
        if !f.tags.is_empty() {
            let (guard, access) = cel_field(&field_for(&names.tags, "tags")?);
            let tags: Vec<Json> = f.tags.iter().cloned().map(Json::String).collect();
            parts.push(format!(
                "{guard} && type({access}) == type([]) && {access}.exists(t, t in {})",
                cel_list(&tags)?
            ));
        }
    }
    Ok((!parts.is_empty()).then(|| {
        parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" && ")
    }))
}

/// Picks the dataset an upload's first record fits.
fn detect<'a>(
    settings: &'a Settings,
    upload: &Upload<'_>,
    format: &str,
    key: Option<&KeyConfig>,
) -> Result<&'a Dataset, ApiError> {
    let fields = engine::first_record_fields(
        upload.path,
        format,
        key,
        &settings.env,
        settings.config.max_decompressed_size.0,
        upload.shown,
    )
    .map_err(ApiError::from_failure)?;
    let detect_failed = |message: String| {
        ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "detect_failed",
            message,
        )
    };
    if fields.is_empty() {
        return Err(detect_failed(format!(
            "auto-detect cannot tell the dataType of {:?}: it holds no record",
            upload.shown
        )));
    }
    let has = |name: &String| fields.contains(name);
    let mut fits = Vec::new();
    let mut needs = Vec::new();
    for dataset in settings.datasets.values() {
        let groups: Vec<Vec<String>> = if !dataset.config.detect.is_empty() {
            dataset
                .config
                .detect
                .iter()
                .map(|f| vec![f.clone()])
                .collect()
        } else if let Some(name) = &dataset.config.template {
            match engine::template_source(name, &settings.templates_dir) {
                Ok((text, _)) => engine::required_fields(&text),
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        if groups.is_empty() {
            continue;
        }
        if groups.iter().all(|alts| alts.iter().any(has)) {
            fits.push(dataset);
        } else {
            let wanted: Vec<String> = groups.iter().map(|alts| alts.join("|")).collect();
            needs.push(format!("{} needs {}", dataset.name, wanted.join(", ")));
        }
    }
    match fits.as_slice() {
        [one] => Ok(one),
        [] => Err(detect_failed(format!(
            "auto-detect cannot tell the dataType of {:?}: its first record has the fields {} and \
             no dataset fits ({}); give dataType",
            upload.shown,
            fields.join(", "),
            needs.join("; ")
        ))),
        many => {
            Err(detect_failed(format!(
            "auto-detect cannot tell the dataType of {:?}: its first record fits {}; give dataType",
            upload.shown,
            many.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(" and ")
        )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::config::{Database, DatasetConfig, FilterFields};
    use crate::template::{Mapped, Template};
    use crate::{Record, Value};

    fn dataset() -> Dataset {
        Dataset {
            name: "contexts".into(),
            database_name: "sqlite".into(),
            database: Database::Sqlite("/x.db".into()),
            config: DatasetConfig {
                table: "contexts".into(),
                user_column: Some("userId".into()),
                filters: FilterFields {
                    date_range: Some("createdAt".into()),
                    types: Some("type".into()),
                    tags: Some("tags".into()),
                    session_ids: None,
                    importance: Some("metadata.importance".into()),
                },
                ..DatasetConfig::default()
            },
        }
    }

    /// Runs the filter through a real template, as the engine will.
    fn passes(filter: &str, record: serde_json::Value) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let edits = Edits {
            filter: Some(filter.to_owned()),
            ..Edits::default()
        };
        let path = materialize(dir.path(), "t", None, &edits).unwrap();
        let template = Template::from_file(&path).unwrap().compile().unwrap();
        let evaluator = template.evaluator(chrono::Utc::now().fixed_offset());
        let mut record = decode(&record);
        // Database rows carry typed timestamps: the filter must read them as it reads text.
        if let Some(Value::String(text)) = record.get("createdAt").cloned() {
            if let Some(t) = crate::Timestamp::parse(&text).filter(|_| text.ends_with('Z')) {
                if text.contains("10:00") {
                    record.insert("createdAt", Value::Timestamp(t));
                }
            }
        }
        match template.map(&evaluator, &record) {
            Ok(Mapped::Keep(_)) => true,
            Ok(Mapped::Filtered) => false,
            Err(e) => panic!("the filter failed on a record: {}", e[0]),
        }
    }

    fn decode(json: &serde_json::Value) -> Record {
        let format = crate::format::by_name("ndjson").unwrap();
        let input = crate::Input {
            reader: Box::new(std::io::Cursor::new(json.to_string().into_bytes())),
            name: "test".into(),
            file: None,
        };
        let mut decoder = format
            .decode(input, &crate::FormatOptions::default())
            .unwrap();
        decoder.next().unwrap().unwrap()
    }

    #[test]
    fn filters_become_one_cel_expression_that_passes_and_filters() {
        let filters: Filters = serde_json::from_value(json!({
            "dateRange": {"start": "2024-01-01T00:00:00Z", "end": "2024-12-31"},
            "types": ["note"], "tags": ["important"], "importance": [3, "high"]
        }))
        .unwrap();
        let f = filter_expression(&dataset(), Some(&filters), Some("alice"))
            .unwrap()
            .unwrap();
        let good = json!({"userId": "alice", "createdAt": "2024-06-01T10:00:00Z", "type": "note",
                          "tags": ["x", "important"], "metadata": {"importance": 3}});
        assert!(passes(&f, good.clone()), "{f}");
        for (field, value) in [
            ("userId", json!("bob")),
            ("createdAt", json!("2025-01-01T00:00:00Z")),
            ("type", json!("idea")),
            ("tags", json!(["x"])),
            ("metadata", json!({"importance": 1})),
            ("metadata", json!(null)),
            ("tags", json!("important")),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert!(!passes(&f, bad.clone()), "{bad} passed {f}");
        }
        // The last day of a date-only end is included.
        let mut last = good.clone();
        last["createdAt"] = json!("2024-12-31T23:59:59Z");
        assert!(passes(&f, last));
    }

    #[test]
    fn a_value_cannot_escape_its_literal() {
        let evil = r#"alice" || true || ""=="#;
        let f = filter_expression(&dataset(), None, Some(evil))
            .unwrap()
            .unwrap();
        assert!(!passes(&f, json!({"userId": "bob"})), "{f}");
        assert!(passes(&f, json!({"userId": evil})), "{f}");
    }

    #[test]
    fn a_filter_the_dataset_does_not_map_is_refused() {
        let filters: Filters = serde_json::from_value(json!({"sessionIds": ["s1"]})).unwrap();
        let err = filter_expression(&dataset(), Some(&filters), None).unwrap_err();
        assert!(err.message.contains("sessionIds"), "{err}");
    }
}
