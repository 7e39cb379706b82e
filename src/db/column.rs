//! The sink side of a database stage: what type each target column has, and how a record's value is coerced
//! to it before it reaches the database — so a value that does not fit fails its own record (naming the
//! column, the value and the type) instead of the batch it travels in.

use std::borrow::Cow;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use crate::infer::Kind;
use crate::record::{write_json, Decimal, Timestamp, Value};
use crate::template::FieldType;

/// The kind of value a column holds, as far as coercion is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text of any length.
    Text,
    /// A whole number of `bits` bits (16, 32 or 64).
    Integer {
        /// The column's width.
        bits: u8,
    },
    /// A binary floating-point number (`single` for 32 bits).
    Float {
        /// True for a 32-bit column.
        single: bool,
    },
    /// An exact decimal.
    Decimal,
    /// true or false.
    Boolean,
    /// A calendar date.
    Date,
    /// A date and time; `zoned` columns store an instant (timestamptz).
    Timestamp {
        /// True for `timestamp with time zone`.
        zoned: bool,
    },
    /// JSON (`binary` for PostgreSQL's jsonb).
    Json {
        /// True for jsonb.
        binary: bool,
    },
    /// Raw bytes.
    Bytes,
    /// A list of text (PostgreSQL `text[]`).
    TextArray,
    /// A UUID (PostgreSQL `uuid`).
    Uuid,
    /// Any value as it is (SQLite columns without a type, or BLOB affinity).
    Any,
}

impl ColumnKind {
    /// The kind ferry gives a template field of this declared type when it creates the table.
    pub fn for_field(field_type: FieldType) -> ColumnKind {
        match field_type {
            FieldType::String => ColumnKind::Text,
            FieldType::Integer => ColumnKind::Integer { bits: 64 },
            FieldType::Number => ColumnKind::Float { single: false },
            FieldType::Decimal => ColumnKind::Decimal,
            FieldType::Boolean => ColumnKind::Boolean,
            FieldType::Date => ColumnKind::Date,
            FieldType::Datetime => ColumnKind::Timestamp { zoned: true },
            FieldType::Array | FieldType::Object => ColumnKind::Json { binary: true },
            FieldType::Bytes => ColumnKind::Bytes,
        }
    }

    /// The kind a JSON Schema property's type (and `format`) asks for.
    pub fn for_json_type(json_type: &str, format: Option<&str>) -> ColumnKind {
        match (json_type, format) {
            ("integer", _) => ColumnKind::Integer { bits: 64 },
            ("number", _) => ColumnKind::Float { single: false },
            ("boolean", _) => ColumnKind::Boolean,
            ("array" | "object", _) => ColumnKind::Json { binary: true },
            ("string", Some("date-time")) => ColumnKind::Timestamp { zoned: true },
            ("string", Some("date")) => ColumnKind::Date,
            ("string", Some("uuid")) => ColumnKind::Uuid,
            _ => ColumnKind::Text,
        }
    }

    /// The kind ferry gives a column whose type was inferred (or given with `--types`).
    pub fn for_kind(kind: Kind) -> ColumnKind {
        match kind {
            Kind::Boolean => ColumnKind::Boolean,
            Kind::Integer => ColumnKind::Integer { bits: 64 },
            Kind::Decimal => ColumnKind::Decimal,
            Kind::Number => ColumnKind::Float { single: false },
            Kind::Date => ColumnKind::Date,
            Kind::Datetime { zoned } => ColumnKind::Timestamp { zoned },
            Kind::Json => ColumnKind::Json { binary: true },
            Kind::Bytes => ColumnKind::Bytes,
            Kind::Text => ColumnKind::Text,
        }
    }

    /// The kind for a value when nothing declares one (a new table without a template).
    pub fn for_value(value: &Value) -> ColumnKind {
        match value {
            Value::Null | Value::String(_) => ColumnKind::Text,
            Value::Bool(_) => ColumnKind::Boolean,
            Value::Int(_) => ColumnKind::Integer { bits: 64 },
            Value::Float(_) => ColumnKind::Float { single: false },
            Value::Decimal(_) => ColumnKind::Decimal,
            Value::Bytes(_) => ColumnKind::Bytes,
            Value::Date(_) => ColumnKind::Date,
            Value::Timestamp(_) => ColumnKind::Timestamp { zoned: true },
            Value::Array(_) | Value::Object(_) => ColumnKind::Json { binary: true },
        }
    }
}

/// One column of a target table.
#[derive(Debug, Clone)]
pub struct Column {
    /// The column's name in the database.
    pub name: String,
    /// Its type as the database spells it (for messages).
    pub type_name: String,
    /// What values it takes.
    pub kind: ColumnKind,
    /// True when the database fills it in when no value is given (DEFAULT, identity, generated).
    pub has_default: bool,
    /// True when ferry creates the column with a type inferred from the first records' values.
    pub inferred: bool,
}

/// A value coerced to its column's kind, ready to be bound or encoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (already checked against the column's width).
    Int(i64),
    /// A float.
    Float(f64),
    /// An exact decimal, as text (`-12.50`, `1e3`).
    Decimal(Cow<'a, str>),
    /// Text.
    Text(Cow<'a, str>),
    /// Bytes.
    Bytes(Cow<'a, [u8]>),
    /// A date.
    Date(NaiveDate),
    /// A date and time; the offset is kept for databases that store text.
    Timestamp(Timestamp),
    /// JSON text.
    Json(String),
    /// A list of text, with NULL elements.
    TextArray(Vec<Option<String>>),
    /// A UUID's 16 bytes.
    Uuid([u8; 16]),
}

/// Coerces `value` to `column`; the error is the reason, without the record position (the caller adds it).
pub fn coerce<'a>(value: &'a Value, column: &Column) -> Result<Cell<'a>, String> {
    coerce_into(value, column, &mut Vec::new())
}

/// [`coerce`], the text of a JSON column written into one of `spare`'s buffers (texts of earlier rows'
/// cells, handed back when the row was written) rather than a new one.
pub(crate) fn coerce_into<'a>(
    value: &'a Value,
    column: &Column,
    spare: &mut Vec<String>,
) -> Result<Cell<'a>, String> {
    if matches!(value, Value::Null) {
        return Ok(Cell::Null);
    }
    // An empty cell of a CSV export means "no value": null, not an error, for every column but text.
    if let Value::String(s) = value {
        let textual = matches!(
            column.kind,
            ColumnKind::Text | ColumnKind::Json { .. } | ColumnKind::Any | ColumnKind::TextArray
        );
        if !textual && s.trim().is_empty() {
            return Ok(Cell::Null);
        }
    }
    let cell = match column.kind {
        ColumnKind::Any => any_cell(value, spare),
        ColumnKind::Text => Some(text_cell(value)),
        ColumnKind::Integer { bits } => integer(value).and_then(|n| fits(n, bits)).map(Cell::Int),
        ColumnKind::Float { .. } => float(value).map(Cell::Float),
        ColumnKind::Decimal => decimal(value).map(Cell::Decimal),
        ColumnKind::Boolean => boolean(value).map(Cell::Bool),
        ColumnKind::Date => date(value).map(Cell::Date),
        ColumnKind::Timestamp { .. } => timestamp(value).map(Cell::Timestamp),
        ColumnKind::Json { .. } => Some(Cell::Json(json(value, spare.pop()))),
        ColumnKind::Bytes => bytes(value).map(Cell::Bytes),
        ColumnKind::TextArray => text_array(value).map(Cell::TextArray),
        ColumnKind::Uuid => uuid(value).map(Cell::Uuid),
    };
    cell.ok_or_else(|| {
        let mut shown = value.to_text();
        if shown.len() > 60 {
            let cut = (0..=57)
                .rev()
                .find(|i| shown.is_char_boundary(*i))
                .unwrap_or(0);
            shown.truncate(cut);
            shown.push_str("...");
        }
        let inferred = if column.inferred {
            format!(
                "; the column's type was inferred from the first records (--sample-records): pass \
                 --types {}=string to load such values as text",
                column.name
            )
        } else {
            String::new()
        };
        format!(
            "value {shown:?} does not fit column {:?} ({}): {}{inferred}",
            column.name,
            column.type_name,
            expected(column.kind)
        )
    })
}

fn expected(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Integer { bits: 16 } => "expected an integer from -32768 to 32767",
        ColumnKind::Integer { bits: 32 } => "expected a 32-bit integer",
        ColumnKind::Integer { .. } => "expected a 64-bit integer",
        ColumnKind::Float { .. } => "expected a number",
        ColumnKind::Decimal => "expected a decimal number",
        ColumnKind::Boolean => "expected true/false, yes/no, on/off or 1/0",
        ColumnKind::Date => "expected a date (YYYY-MM-DD)",
        ColumnKind::Timestamp { .. } => "expected a date and time (ISO 8601)",
        ColumnKind::Bytes => "expected bytes (base64 text)",
        ColumnKind::TextArray => "expected a list of scalar values",
        ColumnKind::Uuid => "expected a UUID",
        ColumnKind::Text | ColumnKind::Json { .. } | ColumnKind::Any => "unsupported value",
    }
}

fn any_cell<'a>(value: &'a Value, spare: &mut Vec<String>) -> Option<Cell<'a>> {
    Some(match value {
        Value::Bool(b) => Cell::Bool(*b),
        Value::Int(n) => Cell::Int(*n),
        Value::Float(f) => Cell::Float(*f),
        Value::Bytes(b) => Cell::Bytes(Cow::Borrowed(b)),
        Value::Array(_) | Value::Object(_) => Cell::Json(json(value, spare.pop())),
        other => text_cell(other),
    })
}

fn text_cell(value: &Value) -> Cell<'_> {
    match value {
        Value::String(s) => Cell::Text(Cow::Borrowed(s)),
        Value::Array(_) | Value::Object(_) => Cell::Text(Cow::Owned(json(value, None))),
        other => Cell::Text(Cow::Owned(other.to_text())),
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        Value::Decimal(d) => integral_text(d.as_str()),
        Value::String(s) => integral_text(s.trim()),
        _ => None,
    }
}

/// `42`, `+42`, `42.000` as an integer; anything with a fraction or out of range is `None`.
fn integral_text(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let (int, frac) = text.split_once('.')?;
    (frac.bytes().all(|b| b == b'0') && !int.is_empty())
        .then(|| int.parse().ok())
        .flatten()
}

fn fits(n: i64, bits: u8) -> Option<i64> {
    let ok = match bits {
        16 => i16::try_from(n).is_ok(),
        32 => i32::try_from(n).is_ok(),
        _ => true,
    };
    ok.then_some(n)
}

fn float(value: &Value) -> Option<f64> {
    match value {
        Value::Float(f) => Some(*f),
        Value::Int(n) => Some(*n as f64),
        Value::Decimal(d) => d.as_str().parse().ok(),
        Value::String(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|f: &f64| !f.is_nan() || s.trim() == "NaN"),
        _ => None,
    }
}

fn decimal(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Decimal(d) => Some(Cow::Borrowed(d.as_str())),
        Value::Int(n) => Some(Cow::Owned(n.to_string())),
        Value::Float(f) if f.is_finite() => Some(Cow::Owned(value_text(*f))),
        Value::String(s) => Decimal::parse(s.trim()).map(|d| Cow::Owned(d.as_str().to_owned())),
        _ => None,
    }
}

fn value_text(f: f64) -> String {
    Value::Float(f).to_text()
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn date(value: &Value) -> Option<NaiveDate> {
    match value {
        Value::Date(d) => Some(*d),
        Value::String(s) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok(),
        _ => None,
    }
}

fn timestamp(value: &Value) -> Option<Timestamp> {
    match value {
        Value::Timestamp(t) => Some(*t),
        Value::Date(d) => Some(Timestamp {
            datetime: NaiveDateTime::new(*d, NaiveTime::MIN),
            offset: None,
        }),
        Value::String(s) => Timestamp::parse(s.trim()),
        _ => None,
    }
}

/// JSON text for a value, written over `buffer`'s text when there is one. Text that already holds a JSON
/// array or object (a CSV cell, say) is taken as that JSON rather than as a JSON string, so `{"a":1}` in a
/// CSV becomes an object in a json column.
pub(crate) fn json(value: &Value, buffer: Option<String>) -> String {
    // A new buffer is sized as `json_text` sizes one.
    let mut out = buffer.map_or_else(|| Vec::with_capacity(128), String::into_bytes);
    out.clear();
    match value {
        Value::String(s) if holds_json(s) => out.extend_from_slice(s.as_bytes()),
        _ => write_json(&mut out, value),
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Whether text is a JSON array or object.
fn holds_json(text: &str) -> bool {
    let t = text.trim_start();
    (t.starts_with('{') || t.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// A value as JSON text.
pub(crate) fn json_text(value: &Value) -> String {
    // Sized for the usual small array or object: grown from empty, its reallocations were ~3 % of a
    // templated load into SQLite.
    let mut out = Vec::with_capacity(128);
    write_json(&mut out, value);
    String::from_utf8(out).unwrap_or_default()
}

fn bytes(value: &Value) -> Option<Cow<'_, [u8]>> {
    use base64::Engine as _;
    match value {
        Value::Bytes(b) => Some(Cow::Borrowed(b)),
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .map(Cow::Owned),
        _ => None,
    }
}

fn text_array(value: &Value) -> Option<Vec<Option<String>>> {
    let Value::Array(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|item| match item {
            Value::Null => Some(None),
            Value::Array(_) | Value::Object(_) => None,
            Value::String(s) => Some(Some(s.clone())),
            other => Some(Some(other.to_text())),
        })
        .collect()
}

/// A UUID's canonical text: `123e4567-e89b-12d3-a456-426614174000`.
pub(crate) fn uuid_text(b: &[u8; 16]) -> String {
    // Stage folders know only record and error, so the hex is written here rather than borrowed.
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn uuid(value: &Value) -> Option<[u8; 16]> {
    let Value::String(s) = value else { return None };
    let hex: Vec<u8> = s
        .trim()
        .trim_matches(['{', '}'])
        .bytes()
        .filter(|b| *b != b'-')
        .collect();
    if hex.len() != 32 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(kind: ColumnKind) -> Column {
        Column {
            name: "c".into(),
            type_name: "t".into(),
            kind,
            has_default: false,
            inferred: false,
        }
    }

    #[test]
    fn integers_are_checked_against_the_column_width() {
        let small = col(ColumnKind::Integer { bits: 16 });
        assert_eq!(
            coerce(&Value::String(" 42 ".into()), &small),
            Ok(Cell::Int(42))
        );
        assert_eq!(
            coerce(&Value::String("7.00".into()), &small),
            Ok(Cell::Int(7))
        );
        let err = coerce(&Value::Int(70000), &small).unwrap_err();
        assert!(
            err.contains("\"c\"") && err.contains("70000") && err.contains("-32768"),
            "{err}"
        );
        assert!(coerce(
            &Value::String("abc".into()),
            &col(ColumnKind::Integer { bits: 64 })
        )
        .is_err());
    }

    #[test]
    fn text_and_json_take_anything() {
        let text = col(ColumnKind::Text);
        assert_eq!(coerce(&Value::Int(5), &text), Ok(Cell::Text("5".into())));
        let json_col = col(ColumnKind::Json { binary: true });
        assert_eq!(
            coerce(&Value::String("{\"a\": 1}".into()), &json_col),
            Ok(Cell::Json("{\"a\": 1}".into()))
        );
        assert_eq!(
            coerce(&Value::String("hi".into()), &json_col),
            Ok(Cell::Json("\"hi\"".into()))
        );
    }

    #[test]
    fn uuids_dates_and_booleans_parse_from_text() {
        let text = Value::String("123e4567-e89b-12d3-a456-426614174000".into());
        let parsed = coerce(&text, &col(ColumnKind::Uuid));
        assert!(matches!(parsed, Ok(Cell::Uuid(b)) if b[0] == 0x12 && b[15] == 0x00));
        assert!(coerce(&Value::String("2024-02-30".into()), &col(ColumnKind::Date)).is_err());
        assert_eq!(
            coerce(&Value::String("Yes".into()), &col(ColumnKind::Boolean)),
            Ok(Cell::Bool(true))
        );
        assert_eq!(
            coerce(&Value::Null, &col(ColumnKind::Boolean)),
            Ok(Cell::Null)
        );
    }
}
