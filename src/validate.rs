//! The validate stage: JSON Schema (the `jsonschema` crate, no network), compiled once per run and applied to
//! every mapped record. Each violation names the field by its JSON pointer and the rule it breaks.

use std::str::FromStr as _;

use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, Position, Result, Stage};
use crate::record::{Record, Value};

/// A compiled JSON Schema.
pub struct SchemaValidator {
    name: String,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchemaValidator({})", self.name)
    }
}

impl SchemaValidator {
    /// Compiles `schema` (its draft from `$schema`, 2020-12 when absent). `name` is used in messages.
    pub fn compile(name: &str, schema: &Json) -> Result<SchemaValidator> {
        let validator = jsonschema::options()
            .with_draft(draft_of(schema))
            .build(schema)
            .map_err(|e| Error::usage(format!("schema {name} is not a valid JSON Schema: {e}")))?;
        Ok(SchemaValidator {
            name: name.to_owned(),
            validator,
        })
    }

    /// Reads and compiles a schema file.
    pub fn from_file(path: &std::path::Path) -> Result<SchemaValidator> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::usage(format!("cannot read schema {name}: {e}")))?;
        let schema: Json = serde_json::from_slice(&bytes)
            .map_err(|e| Error::usage(format!("schema {name} is not valid JSON: {e}")))?;
        SchemaValidator::compile(&name, &schema)
    }

    /// The schema's name (its file or built-in name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Validates one record; every violation becomes one per-record error naming the field.
    pub fn validate(&self, record: &Record) -> std::result::Result<(), Vec<Error>> {
        let instance = record_to_json(record);
        let errors: Vec<Error> = self
            .validator
            .iter_errors(&instance)
            .map(|violation| {
                let pointer = violation.instance_path().to_string();
                let field = if pointer.is_empty() {
                    "/".to_owned()
                } else {
                    pointer
                };
                let message = format!("{violation} ({})", violation.kind().keyword());
                Error::record(
                    Stage::Validate,
                    Position::default().with_field(field),
                    message,
                )
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

fn draft_of(schema: &Json) -> jsonschema::Draft {
    let uri = schema
        .get("$schema")
        .and_then(Json::as_str)
        .unwrap_or_default();
    match uri {
        u if u.contains("draft-04") => jsonschema::Draft::Draft4,
        u if u.contains("draft-06") => jsonschema::Draft::Draft6,
        u if u.contains("draft-07") => jsonschema::Draft::Draft7,
        u if u.contains("2019-09") => jsonschema::Draft::Draft201909,
        _ => jsonschema::Draft::Draft202012,
    }
}

/// A record as the JSON a schema sees: numbers exact, dates and timestamps as ISO 8601 strings, bytes as
/// base64 strings.
pub fn record_to_json(record: &Record) -> Json {
    let map: Map<String, Json> = record
        .iter()
        .map(|(k, v)| (k.to_string(), value_to_json(v)))
        .collect();
    Json::Object(map)
}

fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::Number((*i).into()),
        Value::Float(x) if x.is_finite() => {
            Number::from_str(&value.to_text()).map_or(Json::Null, Json::Number)
        }
        Value::Decimal(d) => {
            Number::from_str(d.as_str()).map_or_else(|_| Json::String(d.to_string()), Json::Number)
        }
        Value::Array(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Object(record) => record_to_json(record),
        other => Json::String(other.to_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_the_field_and_rule() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["id"],
            "properties": {"title": {"type": "string", "minLength": 1}, "n": {"type": "integer", "maximum": 5}}
        });
        let v = SchemaValidator::compile("test", &schema).unwrap();
        let mut r = Record::new();
        r.insert("title", Value::String(String::new()));
        r.insert("n", Value::Int(9));
        let errors = v.validate(&r).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.contains("field \"/title\"") && t.contains("minLength")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("field \"/n\"") && t.contains("maximum")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("\"id\" is a required property")),
            "{text:?}"
        );
    }

    #[test]
    fn invalid_schema_is_a_usage_error() {
        let err = SchemaValidator::compile("bad", &serde_json::json!({"type": 12})).unwrap_err();
        assert!(err.is_usage(), "{err}");
    }
}
