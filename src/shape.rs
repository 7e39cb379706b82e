//! The shaping steps of the map stage that need no template: `--types` (convert fields to a type), `--where`
//! (a CEL filter over the record, compiled by the template's expression compiler) and `--select` (keep
//! fields, in the order given, renaming with `old:new`). They run on each record around the template's
//! mapping: types first (on the record as read, so that `--where` compares numbers as numbers), then the
//! template, the schema, `--where`, and `--select` last.

use std::sync::Arc;

use crate::error::{Error, Position, Result, Stage};
use crate::infer::Kind;
use crate::record::{Key, Record, Value};
use crate::template::{Evaluator, Expression, FieldType};

/// One field `--select` keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The field read.
    pub from: String,
    /// The name it is written under.
    pub name: String,
}

/// Parses `--select id,name:full_name`: fields in output order, each optionally renamed with `:NEW`.
pub fn parse_select(text: &str) -> std::result::Result<Vec<Selected>, String> {
    let mut selected: Vec<Selected> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (from, name) = match part.split_once(':') {
            Some((from, name)) => (from.trim(), name.trim()),
            None => (part, part),
        };
        if from.is_empty() || name.is_empty() {
            return Err(format!("{part:?}: expected FIELD or FIELD:NEW_NAME"));
        }
        if selected.iter().any(|s| s.name == name) {
            return Err(format!("{name:?} is selected twice"));
        }
        selected.push(Selected {
            from: from.to_owned(),
            name: name.to_owned(),
        });
    }
    if selected.is_empty() {
        return Err("no field named".to_owned());
    }
    Ok(selected)
}

/// `--types`, `--where` and `--select`, compiled once.
pub(crate) struct Shape {
    types: Vec<(String, Kind)>,
    filter: Option<Expression>,
    /// The records come from a text-only format: `--where` sees number- and boolean-shaped text as
    /// numbers and booleans (`total > 10` on a CSV), as [`crate::infer`] reads them.
    text_source: bool,
    env: Arc<cel::Env>,
    select: Vec<(String, Key)>,
}

impl Shape {
    /// Compiles the steps; `None` when there is none. A `--where` that does not compile is a
    /// configuration error.
    pub(crate) fn build(
        types: &[(String, Kind)],
        filter: Option<&str>,
        select: &[Selected],
        text_source: bool,
    ) -> Result<Option<Shape>> {
        if types.is_empty() && filter.is_none() && select.is_empty() {
            return Ok(None);
        }
        let env = Arc::new(cel::Env::stdlib());
        let filter = match filter {
            Some(source) => Some(
                Expression::compile(&env, source)
                    .map_err(|e| Error::config(format!("--where: {e}")))?,
            ),
            None => None,
        };
        Ok(Some(Shape {
            types: types.to_vec(),
            filter,
            text_source,
            env,
            select: select
                .iter()
                .map(|s| (s.from.clone(), Key::from(s.name.as_str())))
                .collect(),
        }))
    }

    /// An evaluator for `--where`, with `now()` fixed at `now`; `None` without one.
    pub(crate) fn evaluator(
        &self,
        now: chrono::DateTime<chrono::FixedOffset>,
    ) -> Option<Evaluator> {
        self.filter
            .as_ref()
            .map(|_| Evaluator::new(self.env.clone(), now))
    }

    /// Converts the fields `--types` names; `None` when it names none of this record's.
    pub(crate) fn convert(
        &self,
        record: &Record,
    ) -> std::result::Result<Option<Record>, Vec<Error>> {
        if !self.types.iter().any(|(name, _)| record.contains_key(name)) {
            return Ok(None);
        }
        let mut out = record.clone();
        let mut errors = Vec::new();
        for (name, kind) in &self.types {
            let Some(value) = out.get_mut(name) else {
                continue;
            };
            match convert(std::mem::replace(value, Value::Null), *kind) {
                Ok(converted) => *value = converted,
                Err(message) => errors.push(Error::record(
                    Stage::Map,
                    Position::default().with_field(name.clone()),
                    format!("{message} (--types {name}={})", kind.name()),
                )),
            }
        }
        if errors.is_empty() {
            Ok(Some(out))
        } else {
            Err(errors)
        }
    }

    /// Whether `--where` keeps the record (true without one).
    pub(crate) fn keep(&self, evaluator: Option<&Evaluator>, record: &Record) -> Result<bool> {
        let (Some(filter), Some(evaluator)) = (&self.filter, evaluator) else {
            return Ok(true);
        };
        let fail = |message: String| Error::record(Stage::Map, Position::default(), message);
        let typed;
        let record = if self.text_source {
            typed = typed_view(record);
            &typed
        } else {
            record
        };
        match evaluator.eval(filter, record) {
            Ok(Value::Bool(keep)) => Ok(keep),
            Ok(Value::Null) => Ok(false),
            Ok(other) => Err(fail(format!(
                "--where {:?} returned {} instead of true or false",
                filter.source(),
                other.type_name()
            ))),
            Err(message) => Err(fail(format!("--where: {message}"))),
        }
    }

    /// The record `--select` makes: the named fields in the order given (null when a record lacks one),
    /// renamed; the record as it is without `--select`.
    pub(crate) fn select(&self, record: Record) -> Record {
        if self.select.is_empty() {
            return record;
        }
        let mut out = Record::with_capacity(self.select.len());
        for (from, name) in &self.select {
            let value = record.get(from).cloned().unwrap_or(Value::Null);
            out.push_unchecked(name.clone(), value);
        }
        out
    }

    /// True when the steps change records (a filter alone only drops them).
    pub(crate) fn changes_records(&self) -> bool {
        !self.types.is_empty() || !self.select.is_empty()
    }
}

/// A text record as `--where` sees it: text that is a number or a boolean (as [`crate::infer`] reads a CSV
/// cell) becomes one — integers as integers, other numbers as doubles, as CEL compares them.
fn typed_view(record: &Record) -> Record {
    record
        .iter()
        .map(|(key, value)| {
            let typed = match value {
                Value::String(s) => match crate::infer::kind_of_text(s) {
                    Kind::Integer => s.parse().map(Value::Int).ok(),
                    Kind::Decimal | Kind::Number => s.parse().map(Value::Float).ok(),
                    Kind::Boolean => Some(Value::Bool(s.eq_ignore_ascii_case("true"))),
                    _ => None,
                },
                _ => None,
            };
            (key.clone(), typed.unwrap_or_else(|| value.clone()))
        })
        .collect()
}

/// Converts a value to a `--types` type, as a template field's declared type converts it.
fn convert(value: Value, kind: Kind) -> std::result::Result<Value, String> {
    let field_type = match kind {
        Kind::Boolean => FieldType::Boolean,
        Kind::Integer => FieldType::Integer,
        Kind::Decimal => FieldType::Decimal,
        Kind::Number => FieldType::Number,
        Kind::Date => FieldType::Date,
        Kind::Datetime { .. } => FieldType::Datetime,
        Kind::Bytes => FieldType::Bytes,
        Kind::Text => FieldType::String,
        Kind::Json => {
            return match value {
                Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
                Value::String(s) => crate::format::parse_json_value(s.as_bytes())
                    .map_err(|_| format!("cannot convert string {s:?} to json")),
                other => Ok(other),
            }
        }
    };
    field_type.coerce(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_names_fields_and_renames() {
        let selected = parse_select("id, name:full_name").unwrap();
        assert_eq!(selected[1].from, "name");
        assert_eq!(selected[1].name, "full_name");
        assert!(parse_select("a,a").is_err());
        assert!(parse_select("a:").is_err());
        assert!(parse_select(" , ").is_err());
    }

    #[test]
    fn types_where_and_select_shape_a_record() {
        let types = [("n".to_owned(), Kind::Integer)];
        let select = parse_select("n:count,missing").unwrap();
        let shape = Shape::build(&types, Some("n > 1"), &select, false)
            .unwrap()
            .unwrap();
        let now = chrono::Utc::now().fixed_offset();
        let evaluator = shape.evaluator(now);
        let mut record = Record::new();
        record.insert("n", Value::String("2".into()));
        record.insert("x", Value::String("y".into()));
        let converted = shape.convert(&record).unwrap().unwrap();
        assert_eq!(converted.get("n"), Some(&Value::Int(2)));
        assert!(shape.keep(evaluator.as_ref(), &converted).unwrap());
        let out = shape.select(converted);
        assert_eq!(out.keys().collect::<Vec<_>>(), ["count", "missing"]);
        assert_eq!(out.get("missing"), Some(&Value::Null));
        record.insert("n", Value::String("abc".into()));
        let errors = shape.convert(&record).unwrap_err();
        assert!(
            errors[0].to_string().contains("--types n=integer"),
            "{}",
            errors[0]
        );
        assert!(Shape::build(&[], Some("n >"), &[], false).is_err());
        // From a CSV, number-shaped text compares as a number.
        let csv = Shape::build(&[], Some("total > 10 && paid"), &[], true)
            .unwrap()
            .unwrap();
        let mut row = Record::new();
        row.insert("total", Value::String("12.5".into()));
        row.insert("paid", Value::String("true".into()));
        assert!(csv.keep(csv.evaluator(now).as_ref(), &row).unwrap());
        row.insert("total", Value::String("9".into()));
        assert!(!csv.keep(csv.evaluator(now).as_ref(), &row).unwrap());
    }
}
