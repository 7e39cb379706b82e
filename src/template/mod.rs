//! The map stage: templates (YAML files) that turn a source record into the target's fields — renames,
//! alternatives, transforms, computed fields, types, defaults, a filter — checked whole when loaded.
//!
//! A template is found by path, or by name in `./templates`, then `$FERRY_TEMPLATES`, then among the
//! templates built into the binary (so an installed ferry works anywhere): [`TemplateSearch`] is that one
//! rule, for runs and for `ferry templates list|show|check` alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Position, Result, Stage};
use crate::record::{Key, Record, Value};

pub(crate) mod expr;
mod functions;
mod positions;
mod search;
mod transform;

pub use expr::{environment as expression_environment, Evaluator, Expression, Scope};
pub use functions::{name_part, NamePart, FUNCTIONS};
pub use search::{CheckedTemplate, ListedTemplate, TemplateSearch};
pub use transform::{parse_bool, Transform, TRANSFORM_NAMES};

/// Templates compiled into the binary: (name, YAML text).
pub const BUILTIN_TEMPLATES: &[(&str, &str)] = &[
    (
        "std-context",
        include_str!("../../templates/std-context.yaml"),
    ),
    (
        "user-export",
        include_str!("../../templates/user-export.yaml"),
    ),
];

/// Schemas compiled into the binary: (file name, JSON text).
pub const BUILTIN_SCHEMAS: &[(&str, &str)] = &[
    (
        "context.schema.json",
        include_str!("../../schemas/context.schema.json"),
    ),
    (
        "user.schema.json",
        include_str!("../../schemas/user.schema.json"),
    ),
];

/// A field's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// Text.
    String,
    /// A 64-bit integer.
    Integer,
    /// A float.
    Number,
    /// An exact decimal.
    Decimal,
    /// true/false (yes/no, y/n, 1/0, on/off are accepted).
    Boolean,
    /// A calendar date.
    Date,
    /// A date and time.
    Datetime,
    /// A list.
    Array,
    /// A nested record.
    Object,
    /// Raw bytes (base64 in text).
    Bytes,
}

impl FieldType {
    /// The type's name as templates spell it.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Decimal => "decimal",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Array => "array",
            FieldType::Object => "object",
            FieldType::Bytes => "bytes",
        }
    }
}

/// One name or a list of alternatives.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single source field.
    One(String),
    /// Alternatives: the first present (non-null) wins.
    Many(Vec<String>),
}

/// A template as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// The template's name.
    pub name: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The JSON Schema mapped records must satisfy (a file name in schemas/, or a path).
    #[serde(default)]
    pub schema: Option<String>,
    /// The database table and key used by database sinks.
    #[serde(default)]
    pub target: Option<TargetSpec>,
    /// Keep source fields that no output field reads (after the mapped ones).
    #[serde(default)]
    pub keep_unmapped: bool,
    /// A CEL expression over the mapped record: records for which it is false are filtered out.
    #[serde(default)]
    pub filter: Option<String>,
    /// Source fields that only expressions read (so that a misspelt name is caught when loading).
    #[serde(default)]
    pub source_fields: Vec<String>,
    /// The output fields, in output order.
    pub fields: Vec<FieldSpec>,
}

/// The database target of a template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The table.
    pub table: String,
    /// The key fields (the primary key when ferry creates the table, the conflict key on load).
    #[serde(default)]
    pub key: Vec<String>,
}

/// One output field as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// The output name.
    pub name: String,
    /// The source field, or alternatives; defaults to `name`.
    #[serde(default)]
    pub from: Option<OneOrMany>,
    /// The declared type.
    #[serde(default, rename = "type")]
    pub field_type: Option<FieldType>,
    /// A record without a value here is rejected.
    #[serde(default)]
    pub required: bool,
    /// The value when the source has none.
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    /// Transforms applied in order.
    #[serde(default)]
    pub transforms: Vec<serde_yaml::Value>,
    /// A CEL expression computing the value from the source record (instead of `from`).
    #[serde(default)]
    pub compute: Option<String>,
    /// Documentation.
    #[serde(default)]
    pub description: Option<String>,
}

/// Where a template came from.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    /// A file.
    File(PathBuf),
    /// Built into the binary.
    Builtin(&'static str),
}

impl std::fmt::Display for TemplateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateSource::File(p) => write!(f, "{}", p.display()),
            TemplateSource::Builtin(name) => write!(f, "built-in template {name}"),
        }
    }
}

/// One problem with a template: where it is (line, field) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The line in the template's YAML (1-based), where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The output field it concerns, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong, as one sentence.
    pub message: String,
}

impl Problem {
    /// The problem as one line: `FILE:LINE: field "x": message`.
    pub fn shown(&self, source: &TemplateSource) -> String {
        let place = match (source, self.line) {
            (TemplateSource::File(p), Some(line)) => format!("{}:{line}", p.display()),
            (TemplateSource::Builtin(name), Some(line)) => {
                format!("built-in template {name}, line {line}")
            }
            (other, None) => other.to_string(),
        };
        match &self.field {
            Some(field) => format!("{place}: field {field:?}: {}", self.message),
            None => format!("{place}: {}", self.message),
        }
    }
}

/// Every problem of a template as one configuration error: one line each, after a line that counts them.
fn problems_error(source: &TemplateSource, problems: &[Problem]) -> Error {
    let lines: Vec<String> = problems.iter().map(|p| p.shown(source)).collect();
    match lines.as_slice() {
        [one] => Error::config(format!("template {one}")),
        _ => Error::config(format!(
            "template {source} has {} problems:\n  {}",
            lines.len(),
            lines.join("\n  ")
        )),
    }
}

/// A template's top level as written, its fields still YAML so that each is read (and its problems
/// reported) on its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    target: Option<TargetSpec>,
    #[serde(default)]
    keep_unmapped: bool,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    source_fields: Vec<String>,
    fields: Vec<serde_yaml::Value>,
}

/// A loaded (parsed, not yet compiled) template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The parsed YAML (the fields that could be read: see [`Template::compile`]).
    pub spec: TemplateSpec,
    /// Where it was found.
    pub source: TemplateSource,
    /// The YAML text.
    pub text: String,
    /// Where each part is in the text.
    positions: positions::Positions,
    /// Problems found while reading the fields, reported by [`Template::compile`] with the others.
    problems: Vec<Problem>,
    /// For each field of `spec`, its index in the YAML list.
    yaml_indexes: Vec<usize>,
}

impl Template {
    /// Reads a template file.
    pub fn from_file(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read template {}: {e}", path.display())))?;
        Template::parse(&text, TemplateSource::File(path.to_owned()))
    }

    /// Parses template YAML. A text that is not YAML, or whose top level is wrong, fails here; each
    /// field is read on its own, and a field's problems wait for [`Template::compile`], so that every
    /// field's are reported together.
    pub fn parse(text: &str, source: TemplateSource) -> Result<Template> {
        let positions = positions::Positions::of(text);
        let raw: RawSpec = serde_yaml::from_str(text).map_err(|e| {
            let problem = Problem {
                line: e.location().map(|l| l.line()),
                field: None,
                message: without_location(&e.to_string()),
            };
            problems_error(&source, &[problem])
        })?;
        let mut problems = Vec::new();
        let mut fields = Vec::with_capacity(raw.fields.len());
        let mut yaml_indexes = Vec::with_capacity(raw.fields.len());
        for (i, value) in raw.fields.iter().enumerate() {
            match serde_yaml::from_value::<FieldSpec>(value.clone()) {
                Ok(field) => {
                    fields.push(field);
                    yaml_indexes.push(i);
                }
                Err(e) => {
                    let message = e.to_string();
                    let field = value
                        .get("name")
                        .and_then(|n| n.as_str())
                        .map(str::to_owned);
                    // `unknown field `comptue``: point at that key's line.
                    let key = message
                        .split("unknown field `")
                        .nth(1)
                        .and_then(|rest| rest.split('`').next());
                    let index = i.to_string();
                    let mut at = vec!["fields", index.as_str()];
                    at.extend(key);
                    problems.push(Problem {
                        line: positions.line(&positions::path(&at)),
                        field: field.or_else(|| Some(format!("#{}", i + 1))),
                        message: without_location(&message),
                    });
                }
            }
        }
        let spec = TemplateSpec {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            schema: raw.schema,
            target: raw.target,
            keep_unmapped: raw.keep_unmapped,
            filter: raw.filter,
            source_fields: raw.source_fields,
            fields,
        };
        Ok(Template {
            spec,
            source,
            text: text.to_owned(),
            positions,
            problems,
            yaml_indexes,
        })
    }

    /// Checks every field, transform and expression, and compiles them; nothing is checked per record.
    /// Every problem is reported, each with its line and field.
    pub fn compile(&self) -> Result<CompiledTemplate> {
        self.check()
            .map_err(|problems| problems_error(&self.source, &problems))
    }

    /// Like [`Template::compile`], with the problems as a list.
    pub fn check(&self) -> std::result::Result<CompiledTemplate, Vec<Problem>> {
        let mut checker = Checker {
            template: self,
            env: Arc::new(expr::environment()),
            problems: self.problems.clone(),
        };
        let compiled = checker.compile();
        let mut problems = checker.problems;
        if problems.is_empty() {
            return Ok(compiled);
        }
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(problems)
    }
}

/// A serde_yaml message without its trailing ` at line L column C` (the problem carries the line).
fn without_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Compiles a template, collecting its problems.
struct Checker<'a> {
    template: &'a Template,
    env: Arc<cel::Env>,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, at: &[&str], field: Option<&str>, message: String) {
        self.problems.push(Problem {
            line: self.template.positions.line(&positions::path(at)),
            field: field.map(str::to_owned),
            message,
        });
    }

    /// The index a field of the spec has in the YAML list (fields that could not be read are not in the
    /// spec).
    fn yaml_index(&self, spec_index: usize) -> String {
        let index = self.template.yaml_indexes.get(spec_index).copied();
        index.unwrap_or(spec_index).to_string()
    }

    fn compile(&mut self) -> CompiledTemplate {
        let spec = &self.template.spec;
        if spec.fields.is_empty() && self.problems.is_empty() {
            self.problem(&["fields"], None, "it has no fields".into());
        }
        // The names of the source fields the template reads: every `from`, and the name of a field
        // without one; and those listed in `source_fields` (read only by expressions).
        let mut source_names: Vec<&str> = spec.source_fields.iter().map(String::as_str).collect();
        for field in &spec.fields {
            match (&field.from, &field.compute) {
                (Some(OneOrMany::One(one)), _) => source_names.push(one),
                (Some(OneOrMany::Many(many)), _) => {
                    source_names.extend(many.iter().map(String::as_str))
                }
                (None, None) => source_names.push(&field.name),
                (None, Some(_)) => {}
            }
        }
        let outputs: Vec<&str> = spec.fields.iter().map(|f| f.name.as_str()).collect();
        let mut fields: Vec<CompiledField> = Vec::with_capacity(spec.fields.len());
        for (i, field_spec) in spec.fields.iter().enumerate() {
            let index = self.yaml_index(i);
            let at = |key: &'static str| ["fields", index.as_str(), key];
            let name = field_spec.name.as_str();
            let field = Some(name);
            if outputs[..i].contains(&name) {
                self.problem(&at("name"), field, "defined twice".into());
            }
            if field_spec.compute.is_some() && field_spec.from.is_some() {
                self.problem(
                    &at("compute"),
                    field,
                    "has both `from` and `compute`; use one".into(),
                );
            }
            let compute = field_spec.compute.as_ref().and_then(|source| {
                let compiled = self.expression(&at("compute"), field, "compute", source);
                if let Some(expr) = &compiled {
                    self.check_compute_names(
                        &at("compute"),
                        name,
                        expr,
                        &outputs,
                        i,
                        &source_names,
                    );
                }
                compiled
            });
            let mut transforms = Vec::with_capacity(field_spec.transforms.len());
            for (j, t) in field_spec.transforms.iter().enumerate() {
                match Transform::parse(t) {
                    Ok(t) => transforms.push(t),
                    Err(e) => {
                        let j_text = j.to_string();
                        self.problem(
                            &["fields", index.as_str(), "transforms", &j_text],
                            field,
                            format!("transform {}: {e}", j + 1),
                        );
                    }
                }
            }
            let default = field_spec.default.as_ref().and_then(|v| {
                transform::yaml_to_value(v)
                    .map_err(|e| self.problem(&at("default"), field, format!("default: {e}")))
                    .ok()
            });
            let from = match &field_spec.from {
                None if field_spec.compute.is_some() => Vec::new(),
                None => vec![name.to_owned()],
                Some(OneOrMany::One(one)) => vec![one.clone()],
                Some(OneOrMany::Many(many)) if many.is_empty() => {
                    self.problem(&at("from"), field, "`from` is an empty list".into());
                    Vec::new()
                }
                Some(OneOrMany::Many(many)) => many.clone(),
            };
            fields.push(CompiledField {
                name: Key::from(name),
                from,
                field_type: field_spec.field_type,
                required: field_spec.required,
                default,
                transforms,
                compute,
            });
        }
        let filter = spec.filter.as_ref().and_then(|source| {
            let compiled = self.expression(&["filter"], None, "filter", source);
            if let Some(expr) = &compiled {
                let mut known = outputs.clone();
                if spec.keep_unmapped {
                    known.extend(source_names.iter().copied());
                }
                for var in expr.variables().filter(|v| *v != "record" && !known.contains(v)) {
                    self.problem(
                        &["filter"],
                        None,
                        format!(
                            "filter: unknown variable {var:?}: the filter reads the mapped record, whose fields are {}",
                            quoted_list(&outputs)
                        ),
                    );
                }
            }
            compiled
        });
        if let Some(target) = &spec.target {
            for (k, key) in target.key.iter().enumerate() {
                if !outputs.contains(&key.as_str()) {
                    let k_text = k.to_string();
                    self.problem(
                        &["target", "key", &k_text],
                        None,
                        format!("target key {key:?} is not one of the fields"),
                    );
                }
            }
        }
        CompiledTemplate {
            name: spec.name.clone(),
            version: spec.version.clone(),
            source: self.template.source.to_string(),
            fields,
            filter,
            keep_unmapped: spec.keep_unmapped,
            target: spec.target.clone(),
            env: self.env.clone(),
        }
    }

    /// Compiles an expression; a syntax error or an unknown function is a problem.
    fn expression(
        &mut self,
        at: &[&str],
        field: Option<&str>,
        what: &str,
        source: &str,
    ) -> Option<Expression> {
        match Expression::compile(&self.env, source) {
            Ok(expr) => {
                for f in expr.unknown_functions() {
                    self.problem(
                        at,
                        field,
                        format!(
                            "{what}: unknown function {f:?} in {source:?} (the README lists the functions expressions have)"
                        ),
                    );
                }
                for f in expr.methods_called_as_functions() {
                    self.problem(
                        at,
                        field,
                        format!(
                            "{what}: {f:?} in {source:?} is a method, called on its first argument: write \
                             x.{f}(…) for {f}(x, …)"
                        ),
                    );
                }
                Some(expr)
            }
            Err(e) => {
                self.problem(at, field, format!("{what}: {e}"));
                None
            }
        }
    }

    /// A computed field reads the fields mapped before it and the source fields the template names.
    fn check_compute_names(
        &mut self,
        at: &[&str],
        name: &str,
        expr: &Expression,
        outputs: &[&str],
        index: usize,
        source_names: &[&str],
    ) {
        let field = Some(name);
        for var in expr.variables().filter(|v| *v != "record") {
            if outputs[..index].contains(&var) {
                continue;
            }
            let message = if outputs[index..].contains(&var) {
                format!(
                    "compute reads {var:?}, which is mapped at or after this field: fields are mapped in \
                     template order and a computed field sees those above it; move {var:?} above {name:?}, \
                     or read the source field as record[{var:?}]"
                )
            } else if source_names.contains(&var) {
                continue;
            } else {
                format!(
                    "compute: unknown variable {var:?}: it is neither a field mapped above nor a source field \
                     the template reads (list source fields that only expressions read under \
                     `source_fields:`, or write record[{var:?}] for one that may be absent)"
                )
            };
            self.problem(at, field, message);
        }
    }
}

/// `"a", "b"` for messages.
fn quoted_list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
struct CompiledField {
    name: Key,
    from: Vec<String>,
    field_type: Option<FieldType>,
    required: bool,
    default: Option<Value>,
    transforms: Vec<Transform>,
    compute: Option<Expression>,
}

/// A template ready to map records: every check already done.
pub struct CompiledTemplate {
    /// The template's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it came from.
    pub source: String,
    fields: Vec<CompiledField>,
    filter: Option<Expression>,
    keep_unmapped: bool,
    /// The database table and key, when the template names them.
    pub target: Option<TargetSpec>,
    env: Arc<cel::Env>,
}

/// What a compiled template guarantees about every record it maps ([`CompiledTemplate::guarantees`]).
#[derive(Debug)]
pub struct Guarantees<'a> {
    /// One per output field, in output order.
    pub fields: Vec<FieldGuarantee<'a>>,
    /// The mapped record has no fields but the template's own (no `keep_unmapped`).
    pub only_own_fields: bool,
}

/// What a template guarantees about one output field whenever the field is in a mapped record.
#[derive(Debug, Clone, Copy)]
pub struct FieldGuarantee<'a> {
    /// The output name.
    pub name: &'a str,
    /// In every mapped record (perhaps null): no transform can drop it.
    pub always_present: bool,
    /// The declared type: every non-null value is what [`FieldType::coerce`] made of it. `None`: any value.
    pub field_type: Option<FieldType>,
    /// What a null becomes, as written (not coerced).
    pub default: Option<&'a Value>,
    /// The value may be null: the field is not required and has no non-null default.
    pub may_be_null: bool,
}

/// What mapping did with a record.
#[derive(Debug)]
pub enum Mapped {
    /// The mapped record.
    Keep(Record),
    /// The filter left it out.
    Filtered,
}

impl CompiledTemplate {
    /// An evaluator for this template's expressions, with `now()` fixed at `now`.
    pub fn evaluator(&self, now: chrono::DateTime<chrono::FixedOffset>) -> Evaluator {
        let mut evaluator = Evaluator::new(self.env.clone(), now);
        // Every mapped record counts a reference to each output name: with names of its own, a thread
        // does not stall on the counts another thread mapping at the same time is changing.
        evaluator.names = self.fields.iter().map(|f| Key::from(&*f.name)).collect();
        evaluator
    }

    /// The fields whose value is the same for every record of a run, with that value: those whose `compute`
    /// reads no field (`now()`, a literal). (A field without `compute` reads its `from` names, its own name
    /// when it has none.) The validate stage checks these once instead of on every record. A field that
    /// fails to map, or that a transform drops, is left out.
    pub fn constants(&self, evaluator: &Evaluator) -> Vec<(Key, Value)> {
        let nothing = Record::new();
        self.fields
            .iter()
            .filter(|f| match &f.compute {
                Some(expr) => expr.variables().next().is_none(),
                None => f.from.is_empty(),
            })
            .filter_map(|f| match self.map_field(evaluator, f, &nothing, &nothing) {
                Ok(Some(value)) => Some((f.name.clone(), value)),
                Ok(None) | Err(_) => None,
            })
            .collect()
    }

    /// What every record this template maps is sure to be, for the validate stage to leave out of the
    /// schema what it proves ([`crate::validate::SchemaValidator::with_guarantees`]).
    pub fn guarantees(&self) -> Guarantees<'_> {
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let may_drop = f.transforms.iter().any(Transform::may_drop);
                // With `keep_unmapped`, a source field of the same name takes the place of a dropped one:
                // then nothing is known of the value.
                if may_drop && self.keep_unmapped {
                    return FieldGuarantee {
                        name: &f.name,
                        always_present: false,
                        field_type: None,
                        default: None,
                        may_be_null: true,
                    };
                }
                FieldGuarantee {
                    name: &f.name,
                    // `map` pushes every field it does not drop, null or not.
                    always_present: !may_drop,
                    field_type: f.field_type,
                    default: f.default.as_ref(),
                    // A required field that is null is a mapping error: such records are never validated.
                    may_be_null: !f.required
                        && f.default.as_ref().is_none_or(|d| *d == Value::Null),
                }
            })
            .collect();
        Guarantees {
            fields,
            only_own_fields: !self.keep_unmapped,
        }
    }

    /// The output field names and declared types, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, Option<FieldType>)> {
        self.fields.iter().map(|f| (&*f.name, f.field_type))
    }

    /// Maps one source record. Every field's problem is reported, not only the first.
    pub fn map(
        &self,
        evaluator: &Evaluator,
        source: &Record,
    ) -> std::result::Result<Mapped, Vec<Error>> {
        let mut out = Record::with_capacity(self.fields.len());
        let mut errors = Vec::new();
        // An evaluator keeps the names of the template that made it, and only that one's.
        let own = Arc::ptr_eq(&evaluator.env, &self.env);
        let names = if own { &evaluator.names[..] } else { &[] };
        for (index, field) in self.fields.iter().enumerate() {
            match self.map_field(evaluator, field, source, &out) {
                Ok(Some(value)) => {
                    let name = names.get(index).unwrap_or(&field.name);
                    out.push_unchecked(name.clone(), value)
                }
                Ok(None) => {}
                Err(message) => errors.push(Error::record(
                    Stage::Map,
                    Position::default().with_field(&*field.name),
                    message,
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if self.keep_unmapped {
            for (key, value) in source.iter() {
                let consumed = self
                    .fields
                    .iter()
                    .any(|f| f.from.iter().any(|s| s == &**key));
                if !consumed && !out.contains_key(key) {
                    out.push_unchecked(key.clone(), value.clone());
                }
            }
        }
        match &self.filter {
            None => Ok(Mapped::Keep(out)),
            Some(filter) => match evaluator.eval(filter, &out) {
                Ok(Value::Bool(true)) => Ok(Mapped::Keep(out)),
                Ok(Value::Bool(false) | Value::Null) => Ok(Mapped::Filtered),
                Ok(other) => Err(vec![Error::record(
                    Stage::Map,
                    Position::default(),
                    format!(
                        "filter {:?} returned {} instead of true or false",
                        filter.source(),
                        other.type_name()
                    ),
                )]),
                Err(message) => Err(vec![Error::record(
                    Stage::Map,
                    Position::default(),
                    format!("filter: {message}"),
                )]),
            },
        }
    }

    fn map_field(
        &self,
        evaluator: &Evaluator,
        field: &CompiledField,
        source: &Record,
        mapped: &Record,
    ) -> std::result::Result<Option<Value>, String> {
        let mut transforms = field.transforms.iter();
        let mut value = match &field.compute {
            // A computed field sees the fields mapped before it (by their output names) over the source's.
            Some(expr) => evaluator.eval_in(
                expr,
                Scope {
                    mapped: Some(mapped),
                    source,
                },
            )?,
            None => {
                let found = field
                    .from
                    .iter()
                    .find_map(|name| source.get(name).filter(|v| !matches!(v, Value::Null)));
                // A first transform that only reads the value (split, parse_date) saves copying it.
                let borrowed = found
                    .zip(field.transforms.first())
                    .and_then(|(v, first)| first.apply_borrowed(v));
                match borrowed {
                    Some(result) => {
                        transforms.next();
                        match result? {
                            Some(v) => v,
                            None => return Ok(None),
                        }
                    }
                    None => found.cloned().unwrap_or(Value::Null),
                }
            }
        };
        for transform in transforms {
            match transform.apply(value)? {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        if let Some(ty) = field.field_type {
            value = ty.coerce(value)?;
        }
        if matches!(value, Value::Null) {
            if let Some(default) = &field.default {
                value = default.clone();
            }
        }
        if matches!(value, Value::Null) && field.required {
            let looked = if field.compute.is_some() {
                "its expression returned null".to_owned()
            } else {
                format!("none of {:?} has a value", field.from)
            };
            return Err(format!("required field is missing: {looked}"));
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[(&Key, Option<&str>)]) -> Record {
        let value = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
        fields
            .iter()
            .map(|(key, v)| (Arc::clone(key), value(*v)))
            .collect()
    }

    fn twice(key: &Key, first: &str, second: &str) -> Record {
        let mut record = Record::new();
        record.push_unchecked(Arc::clone(key), Value::String(first.to_owned()));
        record.push_unchecked(Arc::clone(key), Value::String(second.to_owned()));
        record
    }

    #[test]
    fn one_evaluator_maps_records_of_changing_shapes_as_fresh_ones_would() {
        let text =
            "name: t\nversion: 1.0.0\nfields:\n  - name: id\n    from: [legacy_id, old_id, id]\n  \
                    - name: title\n    from: [legacy_title, title]\n    default: none\n";
        let template = Template::parse(text, TemplateSource::Builtin("t"))
            .unwrap()
            .compile()
            .unwrap();
        let now = chrono::DateTime::UNIX_EPOCH.fixed_offset();
        let key = |name: &str| -> Key { Arc::from(name) };
        let (legacy_id, old_id, title) = (key("legacy_id"), key("old_id"), key("title"));
        let title_again = key("title");
        let records = [
            record(&[(&legacy_id, Some("1")), (&title, Some("a"))]),
            record(&[(&legacy_id, Some("2")), (&title, Some("b"))]),
            // A null first name falls through to the next one.
            record(&[
                (&legacy_id, None),
                (&old_id, Some("3")),
                (&title, Some("c")),
            ]),
            // The same names under other keys; then fields in another order.
            record(&[(&key("legacy_id"), Some("4")), (&title_again, Some("d"))]),
            record(&[(&title, Some("e")), (&legacy_id, Some("5"))]),
            // A name twice (a decoder may keep both): the first one counts, as `Record::get` finds it.
            twice(&old_id, "6", "7"),
            Record::new(),
            record(&[(&legacy_id, Some("8")), (&title, Some("f"))]),
        ];
        let ids = ["1", "2", "3", "4", "5", "6", "", "8"];
        let show = |m: &std::result::Result<Mapped, Vec<Error>>| match m {
            Ok(Mapped::Keep(r)) => format!("{:?}", r.iter().collect::<Vec<_>>()),
            Ok(Mapped::Filtered) => "filtered".to_owned(),
            Err(e) => format!("{e:?}"),
        };
        let shared = template.evaluator(now);
        for (source, id) in records.iter().zip(ids) {
            let Ok(Mapped::Keep(mapped)) = template.map(&shared, source) else {
                panic!("{source:?} did not map");
            };
            let want = (!id.is_empty()).then(|| Value::String(id.to_owned()));
            assert_eq!(
                mapped.get("id").filter(|v| !matches!(v, Value::Null)),
                want.as_ref()
            );
            let expected = template.map(&template.evaluator(now), source);
            assert_eq!(
                show(&Ok(Mapped::Keep(mapped))),
                show(&expected),
                "{source:?}"
            );
        }
        // An evaluator of another template with as many fields keeps its names to itself.
        let other = text
            .replace("name: id", "name: key")
            .replace("legacy_title", "old_id");
        let other = Template::parse(&other, TemplateSource::Builtin("o"))
            .unwrap()
            .compile()
            .unwrap();
        for source in &records {
            let expected = show(&other.map(&other.evaluator(now), source));
            assert_eq!(show(&other.map(&shared, source)), expected, "{source:?}");
        }
    }
}
