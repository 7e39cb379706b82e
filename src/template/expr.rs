//! Expressions for the map stage's `compute` fields and `filter`: CEL (the Common Expression Language, via
//! the `cel` crate), compiled once per template and evaluated per record.
//!
//! A record's fields are variables (`title`, `old_created`), and the whole record is `record` (for names that
//! are not identifiers: `record["Order ID"]`). `now()` is the run's start time, the same for every record.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key as CelKey, Value as Cel};
use cel::{Context, Env, Program};
use chrono::{DateTime, FixedOffset, Offset as _};

use crate::record::{Decimal, Key, Record, Timestamp, Value};

/// A compiled expression and the variables it reads.
pub struct Expression {
    source: String,
    program: Program,
    variables: Vec<String>,
    wants_record: bool,
    /// The value of an expression that reads no field (`now()`, a literal): the same for every record of a
    /// run, so it is evaluated once.
    constant: std::sync::OnceLock<Result<Value, String>>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

impl Expression {
    /// Compiles `source`; the error is the parser's message.
    pub fn compile(env: &Env, source: &str) -> Result<Expression, String> {
        let program = env
            .compile(source)
            .map_err(|e| format!("invalid expression {source:?}: {e}"))?;
        let references = program.references();
        let variables: Vec<String> = references
            .variables()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let wants_record = variables.iter().any(|v| v == "record");
        Ok(Expression {
            source: source.to_owned(),
            program,
            variables,
            wants_record,
            constant: std::sync::OnceLock::new(),
        })
    }

    /// The expression's text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Evaluates expressions; one per worker thread, reused across records.
pub struct Evaluator {
    root: Context<'static, 'static>,
}

impl Evaluator {
    /// An evaluator whose `now()` is `now`.
    pub fn new(env: Arc<Env>, now: DateTime<FixedOffset>) -> Evaluator {
        let mut root = Context::with_env(env);
        // Registration only fails for a duplicate name, and this is the only function we add.
        let _ = root.add_function("now", move || now);
        Evaluator { root }
    }

    /// Evaluates `expr` against `record`.
    pub fn eval(&self, expr: &Expression, record: &Record) -> Result<Value, String> {
        if expr.variables.is_empty() {
            return expr
                .constant
                .get_or_init(|| self.eval_fresh(expr, record))
                .clone();
        }
        self.eval_fresh(expr, record)
    }

    fn eval_fresh(&self, expr: &Expression, record: &Record) -> Result<Value, String> {
        let mut scope = self.root.new_inner_scope();
        for name in &expr.variables {
            if name == "record" {
                continue;
            }
            // Every variable gets a value, null when the record lacks it, so a missing field never
            // resolves to a stale or undeclared name.
            let value = record.get(name).map_or(Cel::Null, to_cel);
            scope.add_variable_from_value(name.as_str(), value);
        }
        if expr.wants_record {
            scope.add_variable_from_value("record", to_cel(&Value::Object(record.clone())));
        }
        let result = expr
            .program
            .execute(&scope)
            .map_err(|e| format!("{}: {e}", expr.source))?;
        from_cel(result).map_err(|e| format!("{}: {e}", expr.source))
    }
}

fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Int(i) => Cel::Int(*i),
        Value::Float(x) => Cel::Float(*x),
        // CEL has no decimal type: a decimal is a double in expressions.
        Value::Decimal(d) => d
            .as_str()
            .parse::<f64>()
            .map_or_else(|_| Cel::String(Arc::new(d.to_string())), Cel::Float),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Bytes(b) => Cel::Bytes(Arc::new(b.clone())),
        Value::Timestamp(t) => {
            let offset = t.offset.unwrap_or_else(|| chrono::Utc.fix());
            Cel::Timestamp(DateTime::from_naive_utc_and_offset(
                t.datetime - offset,
                offset,
            ))
        }
        Value::Date(_) => Cel::String(Arc::new(value.to_text())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(record) => {
            let map: HashMap<CelKey, Cel> = record
                .iter()
                .map(|(k, v)| (CelKey::String(Arc::new(k.to_string())), to_cel(v)))
                .collect();
            Cel::Map(map.into())
        }
    }
}

fn from_cel(value: Cel) -> Result<Value, String> {
    Ok(match value {
        Cel::Null => Value::Null,
        Cel::Bool(b) => Value::Bool(b),
        Cel::Int(i) => Value::Int(i),
        Cel::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(Decimal::from_u64(u))),
        Cel::Float(x) => Value::Float(x),
        Cel::String(s) => Value::String(s.to_string()),
        Cel::Bytes(b) => Value::Bytes(b.to_vec()),
        Cel::Timestamp(t) => Value::Timestamp(Timestamp {
            datetime: t.naive_local(),
            offset: Some(*t.offset()),
        }),
        Cel::Duration(d) => Value::String(format!("{}s", d.num_milliseconds() as f64 / 1000.0)),
        Cel::List(items) => Value::Array(
            items
                .iter()
                .cloned()
                .map(from_cel)
                .collect::<Result<_, _>>()?,
        ),
        Cel::Map(map) => {
            // CEL maps have no order; sort the keys so output is the same on every run.
            let mut entries: Vec<(String, Cel)> = map
                .map
                .iter()
                .map(|(k, v)| (key_text(k), v.clone()))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut record = Record::with_capacity(entries.len());
            for (k, v) in entries {
                record.push_unchecked(Key::from(k), from_cel(v)?);
            }
            Value::Object(record)
        }
        other => {
            return Err(format!(
                "the result {other:?} is not a value a record can hold"
            ))
        }
    })
}

fn key_text(key: &CelKey) -> String {
    match key {
        CelKey::Int(i) => i.to_string(),
        CelKey::Uint(u) => u.to_string(),
        CelKey::Bool(b) => b.to_string(),
        CelKey::String(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, record: &Record) -> Result<Value, String> {
        let env = Arc::new(Env::stdlib());
        let expr = Expression::compile(&env, source)?;
        let now = DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z").unwrap();
        Evaluator::new(env, now).eval(&expr, record)
    }

    fn record() -> Record {
        let mut r = Record::new();
        r.insert("title", Value::String("Hello".into()));
        r.insert("n", Value::Int(4));
        r.insert("Order ID", Value::Int(7));
        r
    }

    #[test]
    fn fields_are_variables() {
        assert_eq!(eval("n * 2 + 1", &record()).unwrap(), Value::Int(9));
        assert_eq!(
            eval("title + '!'", &record()).unwrap(),
            Value::String("Hello!".into())
        );
        assert_eq!(
            eval("size(title) > 3 && n < 5", &record()).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval("record['Order ID']", &record()).unwrap(),
            Value::Int(7)
        );
        assert_eq!(
            eval("missing == null", &record()).unwrap(),
            Value::Bool(true)
        );
    }

    #[test]
    fn now_is_the_run_start() {
        assert_eq!(
            eval("now()", &record()).unwrap().to_text(),
            "2024-06-01T12:00:00Z"
        );
    }

    #[test]
    fn maps_come_back_sorted_and_errors_are_sentences() {
        let v = eval("{'source': 'import', 'importance': 1}", &record()).unwrap();
        assert_eq!(v.to_text(), r#"{"importance":1,"source":"import"}"#);
        assert!(eval("n +", &record())
            .unwrap_err()
            .contains("invalid expression"));
        assert!(eval("title * 2", &record()).is_err());
    }

    #[test]
    fn readme_examples_run() {
        let mut r = record();
        r.insert("first", Value::String("Ada".into()));
        r.insert("last", Value::String("Lovelace".into()));
        r.insert("type", Value::String("note".into()));
        assert_eq!(
            eval("first + \" \" + last", &r).unwrap(),
            Value::String("Ada Lovelace".into())
        );
        assert_eq!(
            eval("size(title) > 3 && type in ['note', 'idea']", &r).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            eval("title.startsWith('Draft') || title.contains('ell')", &r).unwrap(),
            Value::Bool(true)
        );
        let default = eval(
            "has(record.metadata) ? record.metadata : {'importance': 1}",
            &r,
        )
        .unwrap();
        assert_eq!(default.to_text(), r#"{"importance":1}"#);
        let mut meta = Record::new();
        meta.insert("source", Value::String("x".into()));
        r.insert("metadata", Value::Object(meta));
        let kept = eval(
            "has(record.metadata) ? record.metadata : {'importance': 1}",
            &r,
        )
        .unwrap();
        assert_eq!(kept.to_text(), r#"{"source":"x"}"#);
    }
}
