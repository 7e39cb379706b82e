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

mod expr;
mod search;
mod transform;

pub use expr::{Evaluator, Expression};
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

/// A loaded (parsed, not yet compiled) template.
#[derive(Debug, Clone)]
pub struct Template {
    /// The parsed YAML.
    pub spec: TemplateSpec,
    /// Where it was found.
    pub source: TemplateSource,
    /// The YAML text.
    pub text: String,
}

impl Template {
    /// Reads a template file.
    pub fn from_file(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read template {}: {e}", path.display())))?;
        Template::parse(&text, TemplateSource::File(path.to_owned()))
    }

    /// Parses template YAML.
    pub fn parse(text: &str, source: TemplateSource) -> Result<Template> {
        let spec: TemplateSpec = serde_yaml::from_str(text)
            .map_err(|e| Error::config(format!("template {source}: {e}")))?;
        Ok(Template {
            spec,
            source,
            text: text.to_owned(),
        })
    }

    /// Checks every field, transform and expression, and compiles them; nothing is checked per record.
    pub fn compile(&self) -> Result<CompiledTemplate> {
        let env = Arc::new(cel::Env::stdlib());
        let problem = |field: Option<&str>, message: String| match field {
            Some(f) => Error::config(format!("template {}: field {f:?}: {message}", self.source)),
            None => Error::config(format!("template {}: {message}", self.source)),
        };
        if self.spec.fields.is_empty() {
            return Err(problem(None, "it has no fields".into()));
        }
        let mut fields: Vec<CompiledField> = Vec::with_capacity(self.spec.fields.len());
        for spec in &self.spec.fields {
            let name = spec.name.as_str();
            if fields.iter().any(|f| &*f.name == name) {
                return Err(problem(Some(name), "defined twice".into()));
            }
            if spec.compute.is_some() && spec.from.is_some() {
                return Err(problem(
                    Some(name),
                    "has both `from` and `compute`; use one".into(),
                ));
            }
            let compute = match &spec.compute {
                Some(source) => {
                    Some(Expression::compile(&env, source).map_err(|e| problem(Some(name), e))?)
                }
                None => None,
            };
            let transforms = spec
                .transforms
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Transform::parse(t)
                        .map_err(|e| problem(Some(name), format!("transform {}: {e}", i + 1)))
                })
                .collect::<Result<Vec<_>>>()?;
            let default = match &spec.default {
                Some(v) => Some(
                    transform::yaml_to_value(v)
                        .map_err(|e| problem(Some(name), format!("default: {e}")))?,
                ),
                None => None,
            };
            let from = match &spec.from {
                None if compute.is_some() => Vec::new(),
                None => vec![name.to_owned()],
                Some(OneOrMany::One(one)) => vec![one.clone()],
                Some(OneOrMany::Many(many)) if many.is_empty() => {
                    return Err(problem(Some(name), "`from` is an empty list".into()))
                }
                Some(OneOrMany::Many(many)) => many.clone(),
            };
            fields.push(CompiledField {
                name: Key::from(name),
                from,
                field_type: spec.field_type,
                required: spec.required,
                default,
                transforms,
                compute,
            });
        }
        let filter = match &self.spec.filter {
            Some(source) => Some(
                Expression::compile(&env, source)
                    .map_err(|e| problem(None, format!("filter: {e}")))?,
            ),
            None => None,
        };
        if let Some(target) = &self.spec.target {
            if let Some(missing) = target
                .key
                .iter()
                .find(|k| !fields.iter().any(|f| &*f.name == k.as_str()))
            {
                return Err(problem(
                    None,
                    format!("target key {missing:?} is not one of the fields"),
                ));
            }
        }
        Ok(CompiledTemplate {
            name: self.spec.name.clone(),
            version: self.spec.version.clone(),
            source: self.source.to_string(),
            fields,
            filter,
            keep_unmapped: self.spec.keep_unmapped,
            target: self.spec.target.clone(),
            env,
        })
    }
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
        Evaluator::new(self.env.clone(), now)
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
        for field in &self.fields {
            match self.map_field(evaluator, field, source) {
                Ok(Some(value)) => out.push_unchecked(field.name.clone(), value),
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
    ) -> std::result::Result<Option<Value>, String> {
        let mut value = match &field.compute {
            Some(expr) => evaluator.eval(expr, source)?,
            None => field
                .from
                .iter()
                .find_map(|name| source.get(name).filter(|v| **v != Value::Null))
                .cloned()
                .unwrap_or(Value::Null),
        };
        for transform in &field.transforms {
            match transform.apply(value)? {
                Some(v) => value = v,
                None => return Ok(None),
            }
        }
        if let Some(ty) = field.field_type {
            value = ty.coerce(value)?;
        }
        if value == Value::Null {
            if let Some(default) = &field.default {
                value = default.clone();
            }
        }
        if value == Value::Null && field.required {
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
