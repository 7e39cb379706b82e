//! The map stage's built-in transforms: one table, each entry parsed and checked once when a template is
//! loaded, then applied per value without further checks.
//!
//! In a template a transform is either a bare name (`trim`) or a one-key map from the name to its arguments
//! (`split: {separators: [";", ","]}`, `truncate: 80`).

use std::fmt::Write as _;

use chrono::{FixedOffset, NaiveDate};
use sha2::Digest as _;

use super::FieldType;
use crate::record::{Decimal, Timestamp, Value};

/// One configured transform.
#[derive(Debug, Clone)]
pub enum Transform {
    /// Strips leading and trailing whitespace.
    Trim,
    /// Lowercases text.
    Lowercase,
    /// Uppercases text.
    Uppercase,
    /// Splits text into an array on any of the separators.
    Split {
        separators: Vec<String>,
        trim: bool,
        drop_empty: bool,
    },
    /// Joins an array into text.
    Join { separator: String },
    /// Replaces every occurrence of a string.
    Replace { from: String, to: String },
    /// Replaces every match of a regular expression (`$1` refers to groups).
    RegexReplace {
        pattern: regex::Regex,
        replacement: String,
    },
    /// Parses text as a date or date-time with the first matching strftime format.
    ParseDate {
        formats: Vec<DateFormat>,
        offset: Option<FixedOffset>,
    },
    /// Formats a date or date-time as text.
    FormatDate { format: DateFormat },
    /// Converts to the named type (to_integer, to_number, to_decimal, to_boolean).
    Convert(FieldType),
    /// Replaces an empty (or missing) value.
    DefaultIfEmpty(Value),
    /// Turns any of these texts into null.
    NullIf(Vec<String>),
    /// Keeps at most this many characters.
    Truncate(usize),
    /// Replaces the value with its SHA-256, in hex.
    HashSha256,
    /// Replaces a non-empty value with a marker.
    Redact(String),
    /// Removes the field from the output.
    Drop,
}

/// The names of every transform, for messages.
pub const TRANSFORM_NAMES: &[&str] = &[
    "trim",
    "lowercase",
    "uppercase",
    "split",
    "join",
    "replace",
    "regex_replace",
    "parse_date",
    "format_date",
    "to_integer",
    "to_number",
    "to_decimal",
    "to_boolean",
    "default_if_empty",
    "null_if",
    "truncate",
    "hash",
    "redact",
    "drop",
];

type Args = serde_yaml::Value;

impl Transform {
    /// Builds a transform from its template form; the error says what is wrong with the name or arguments.
    pub fn parse(spec: &Args) -> Result<Transform, String> {
        let (name, args) = match spec {
            Args::String(name) => (name.as_str(), Args::Null),
            Args::Mapping(map) if map.len() == 1 => {
                let (k, v) = map.iter().next().ok_or("empty transform")?;
                (
                    k.as_str().ok_or("a transform name must be text")?,
                    v.clone(),
                )
            }
            _ => return Err("a transform is a name or a one-key map `name: arguments`".into()),
        };
        let no_args = |t: Transform| {
            if args.is_null() {
                Ok(t)
            } else {
                Err(format!("{name} takes no arguments"))
            }
        };
        match name {
            "trim" => no_args(Transform::Trim),
            "lowercase" => no_args(Transform::Lowercase),
            "uppercase" => no_args(Transform::Uppercase),
            "split" => parse_split(&args),
            "join" => Ok(Transform::Join {
                separator: opt_str(&args, "separator")?.unwrap_or_else(|| ",".into()),
            }),
            "replace" => Ok(Transform::Replace {
                from: req_str(&args, "from")?,
                to: opt_str(&args, "to")?.unwrap_or_default(),
            }),
            "regex_replace" => {
                let pattern = req_str(&args, "pattern")?;
                let pattern =
                    regex::Regex::new(&pattern).map_err(|e| format!("invalid pattern: {e}"))?;
                Ok(Transform::RegexReplace {
                    pattern,
                    replacement: opt_str(&args, "replacement")?.unwrap_or_default(),
                })
            }
            "parse_date" => parse_parse_date(&args),
            "format_date" => Ok(Transform::FormatDate {
                format: DateFormat::compile(&scalar_or_key(&args, "format")?)?,
            }),
            "to_integer" => no_args(Transform::Convert(FieldType::Integer)),
            "to_number" => no_args(Transform::Convert(FieldType::Number)),
            "to_decimal" => no_args(Transform::Convert(FieldType::Decimal)),
            "to_boolean" => no_args(Transform::Convert(FieldType::Boolean)),
            "default_if_empty" => {
                let value = match &args {
                    Args::Mapping(m) if m.contains_key("value") => {
                        m.get("value").cloned().unwrap_or(Args::Null)
                    }
                    other => other.clone(),
                };
                Ok(Transform::DefaultIfEmpty(yaml_to_value(&value)?))
            }
            "null_if" => Ok(Transform::NullIf(str_list(&args, "values")?)),
            "truncate" => {
                let n = match &args {
                    Args::Number(n) => n.as_u64(),
                    Args::Mapping(m) => m.get("length").and_then(Args::as_u64),
                    _ => None,
                };
                n.map(|n| Transform::Truncate(n as usize))
                    .ok_or_else(|| "truncate needs a length (a whole number)".into())
            }
            "hash" => match opt_str(&args, "algorithm")?.as_deref().unwrap_or("sha256") {
                "sha256" => Ok(Transform::HashSha256),
                other => Err(format!(
                    "hash algorithm {other:?} is not supported (only sha256)"
                )),
            },
            "redact" => Ok(Transform::Redact(
                opt_str(&args, "marker")?.unwrap_or_else(|| "[REDACTED]".into()),
            )),
            "drop" => no_args(Transform::Drop),
            other => Err(format!(
                "unknown transform {other:?}; known: {}",
                TRANSFORM_NAMES.join(", ")
            )),
        }
    }

    /// Applies the transform. `Ok(None)` means the field is dropped.
    pub fn apply(&self, value: Value) -> Result<Option<Value>, String> {
        if matches!(self, Transform::Drop) {
            return Ok(None);
        }
        self.apply_value(value).map(Some)
    }

    fn apply_value(&self, value: Value) -> Result<Value, String> {
        // Text transforms map over arrays, so `[" a ", "b "]` trims item by item.
        if let Value::Array(items) = value {
            if self.maps_over_arrays() {
                return items
                    .into_iter()
                    .map(|v| self.apply_value(v))
                    .collect::<Result<_, _>>()
                    .map(Value::Array);
            }
            return self.apply_scalar(Value::Array(items));
        }
        self.apply_scalar(value)
    }

    fn maps_over_arrays(&self) -> bool {
        matches!(
            self,
            Transform::Trim
                | Transform::Lowercase
                | Transform::Uppercase
                | Transform::Replace { .. }
                | Transform::RegexReplace { .. }
                | Transform::Truncate(_)
                | Transform::NullIf(_)
                | Transform::Convert(_)
                | Transform::ParseDate { .. }
                | Transform::FormatDate { .. }
        )
    }

    fn apply_scalar(&self, value: Value) -> Result<Value, String> {
        if value == Value::Null && !matches!(self, Transform::DefaultIfEmpty(_)) {
            return Ok(Value::Null); // nothing to transform; `required` and `default` decide about nulls
        }
        Ok(match self {
            Transform::Trim => edit_text(value, trim_in_place),
            Transform::Lowercase => edit_text(value, |s| change_case(s, false)),
            Transform::Uppercase => edit_text(value, |s| change_case(s, true)),
            Transform::Split {
                separators,
                trim,
                drop_empty,
            } => split(&value, separators, *trim, *drop_empty),
            Transform::Join { separator } => match value {
                Value::Array(items) => Value::String(
                    items
                        .iter()
                        .map(Value::to_text)
                        .collect::<Vec<_>>()
                        .join(separator),
                ),
                other => other,
            },
            Transform::Replace { from, to } => map_text(value, |s| s.replace(from.as_str(), to)),
            Transform::RegexReplace {
                pattern,
                replacement,
            } => map_text(value, |s| {
                pattern.replace_all(s, replacement.as_str()).into_owned()
            }),
            Transform::ParseDate { formats, offset } => parse_date(&value, formats, *offset)?,
            Transform::FormatDate { format } => format_date(value, format)?,
            Transform::Convert(ty) => ty.coerce(value)?,
            Transform::DefaultIfEmpty(default) => match &value {
                Value::Null => default.clone(),
                Value::String(s) if s.trim().is_empty() => default.clone(),
                Value::Array(a) if a.is_empty() => default.clone(),
                _ => value,
            },
            Transform::NullIf(values) => {
                let text = value.to_text();
                if values.contains(&text) {
                    Value::Null
                } else {
                    value
                }
            }
            Transform::Truncate(n) => map_text(value, |s| s.chars().take(*n).collect()),
            Transform::HashSha256 => {
                let digest = sha2::Sha256::digest(value.to_text().as_bytes());
                let mut hex = String::with_capacity(64);
                for byte in digest {
                    let _ = write!(hex, "{byte:02x}");
                }
                Value::String(hex)
            }
            Transform::Redact(marker) => match &value {
                Value::String(s) if s.is_empty() => value,
                _ => Value::String(marker.clone()),
            },
            Transform::Drop => Value::Null,
        })
    }
}

/// Changes text in place: most values need no change, or one that fits in their own buffer, so the common
/// case allocates nothing.
fn edit_text(value: Value, f: impl Fn(&mut String)) -> Value {
    match value {
        Value::String(mut s) => {
            f(&mut s);
            Value::String(s)
        }
        other => other,
    }
}

fn trim_in_place(s: &mut String) {
    let end = s.trim_end().len();
    s.truncate(end);
    let start = s.len() - s.trim_start().len();
    s.drain(..start);
}

fn change_case(s: &mut String, upper: bool) {
    if s.is_ascii() {
        if upper {
            s.make_ascii_uppercase();
        } else {
            s.make_ascii_lowercase();
        }
    } else {
        *s = if upper {
            s.to_uppercase()
        } else {
            s.to_lowercase()
        };
    }
}

fn map_text(value: Value, f: impl Fn(&str) -> String) -> Value {
    match value {
        Value::String(s) => Value::String(f(&s)),
        other => other,
    }
}

fn split(value: &Value, separators: &[String], trim: bool, drop_empty: bool) -> Value {
    let Value::String(text) = value else {
        return value.clone();
    };
    let mut parts: Vec<&str> = vec![text.as_str()];
    for sep in separators {
        parts = parts
            .into_iter()
            .flat_map(|p| p.split(sep.as_str()))
            .collect();
    }
    let items = parts
        .into_iter()
        .map(|p| if trim { p.trim() } else { p })
        .filter(|p| !(drop_empty && p.is_empty()))
        .map(|p| Value::String(p.to_owned()))
        .collect();
    Value::Array(items)
}

/// A strftime format, parsed once when the template is loaded.
#[derive(Debug, Clone)]
pub struct DateFormat {
    text: String,
    items: Vec<chrono::format::Item<'static>>,
}

impl DateFormat {
    fn compile(text: &str) -> Result<DateFormat, String> {
        let items = chrono::format::StrftimeItems::new(text).parse_to_owned();
        let items = items.map_err(|_| format!("invalid format {text:?}"))?;
        Ok(DateFormat {
            text: text.to_owned(),
            items,
        })
    }
}

fn parse_date(
    value: &Value,
    formats: &[DateFormat],
    offset: Option<FixedOffset>,
) -> Result<Value, String> {
    let text = match value {
        Value::String(s) => s.trim(),
        Value::Date(_) | Value::Timestamp(_) => return Ok(value.clone()),
        other => return Err(format!("cannot parse a {} as a date", other.type_name())),
    };
    if text.is_empty() {
        return Ok(Value::Null);
    }
    for format in formats {
        let mut parsed = chrono::format::Parsed::new();
        if chrono::format::parse(&mut parsed, text, format.items.iter()).is_err() {
            continue;
        }
        // A format with an offset (%z, %:z, %+) keeps the offset it read; one without gets the template's.
        if let Ok(dt) = parsed.to_datetime() {
            return Ok(Value::Timestamp(Timestamp {
                datetime: dt.naive_local(),
                offset: Some(*dt.offset()),
            }));
        }
        if let Ok(datetime) = parsed.to_naive_datetime_with_offset(0) {
            return Ok(Value::Timestamp(Timestamp { datetime, offset }));
        }
        if let Ok(date) = parsed.to_naive_date() {
            return Ok(Value::Date(date));
        }
    }
    let texts: Vec<&str> = formats.iter().map(|f| f.text.as_str()).collect();
    Err(format!(
        "{text:?} matches none of the date formats {texts:?}"
    ))
}

fn format_date(value: Value, format: &DateFormat) -> Result<Value, String> {
    // chrono reports a specifier the value cannot fill (an offset for a local time) as a formatting error;
    // write into a String so that becomes a message, not a panic.
    let mut text = String::new();
    let written = match &value {
        Value::Date(d) => write!(text, "{}", d.format_with_items(format.items.iter())),
        Value::Timestamp(t) => match t.offset {
            Some(o) => {
                let dt =
                    chrono::DateTime::<FixedOffset>::from_naive_utc_and_offset(t.datetime - o, o);
                write!(text, "{}", dt.format_with_items(format.items.iter()))
            }
            None => write!(
                text,
                "{}",
                t.datetime.format_with_items(format.items.iter())
            ),
        },
        _ => return Ok(value),
    };
    match written {
        Ok(()) => Ok(Value::String(text)),
        Err(_) => Err(format!(
            "cannot format {} {} with {:?} (it asks for a part the value does not have, such as a time zone)",
            value.type_name(),
            preview(&value),
            format.text
        )),
    }
}

fn parse_split(args: &Args) -> Result<Transform, String> {
    let separators = match args {
        Args::Null => vec![",".to_owned()],
        Args::String(s) => vec![s.clone()],
        Args::Mapping(m) => match (m.get("separators"), m.get("separator")) {
            (Some(list), _) => str_list(list, "separators")?,
            (None, Some(Args::String(s))) => vec![s.clone()],
            (None, None) => vec![",".to_owned()],
            _ => return Err("split: separator must be text".into()),
        },
        _ => return Err("split takes a separator or {separators, trim, drop_empty}".into()),
    };
    if separators.iter().any(String::is_empty) {
        return Err("split: a separator cannot be empty".into());
    }
    let flag = |key: &str| match args {
        Args::Mapping(m) => m
            .get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or(format!("split: {key} must be true or false"))
            })
            .transpose(),
        _ => Ok(None),
    };
    Ok(Transform::Split {
        separators,
        trim: flag("trim")?.unwrap_or(true),
        drop_empty: flag("drop_empty")?.unwrap_or(true),
    })
}

fn parse_parse_date(args: &Args) -> Result<Transform, String> {
    let formats = match args {
        Args::String(s) => vec![s.clone()],
        Args::Sequence(_) => str_list(args, "formats")?,
        Args::Mapping(m) => match (m.get("formats"), m.get("format")) {
            (Some(list), _) => str_list(list, "formats")?,
            (None, Some(Args::String(s))) => vec![s.clone()],
            _ => return Err("parse_date needs format or formats".into()),
        },
        _ => return Err("parse_date needs format or formats".into()),
    };
    let formats = formats
        .iter()
        .map(|f| DateFormat::compile(f).map_err(|e| format!("parse_date: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let offset = match opt_str(args, "timezone")? {
        None => None,
        Some(tz) => Some(parse_offset(&tz)?),
    };
    Ok(Transform::ParseDate { formats, offset })
}

/// `UTC`, `Z`, or a fixed offset such as `+02:00`.
fn parse_offset(text: &str) -> Result<FixedOffset, String> {
    if matches!(text, "UTC" | "utc" | "Z" | "GMT") {
        return FixedOffset::east_opt(0).ok_or_else(|| "bad offset".into());
    }
    let parsed = chrono::DateTime::parse_from_str(
        &format!("2000-01-01T00:00:00{text}"),
        "%Y-%m-%dT%H:%M:%S%:z",
    );
    parsed
        .map(|dt| *dt.offset())
        .map_err(|_| format!("timezone {text:?} is not UTC or a fixed offset like +02:00 (named zones are not supported)"))
}

fn opt_str(args: &Args, key: &str) -> Result<Option<String>, String> {
    match args {
        Args::Mapping(m) => match m.get(key) {
            None | Some(Args::Null) => Ok(None),
            Some(Args::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{key} must be text, got {other:?}")),
        },
        _ => Ok(None),
    }
}

fn req_str(args: &Args, key: &str) -> Result<String, String> {
    opt_str(args, key)?.ok_or_else(|| format!("missing argument {key:?}"))
}

fn scalar_or_key(args: &Args, key: &str) -> Result<String, String> {
    match args {
        Args::String(s) => Ok(s.clone()),
        _ => req_str(args, key),
    }
}

fn str_list(args: &Args, key: &str) -> Result<Vec<String>, String> {
    let list = match args {
        Args::Mapping(m) => m.get(key).cloned().unwrap_or(Args::Null),
        other => other.clone(),
    };
    match list {
        Args::String(s) => Ok(vec![s]),
        Args::Sequence(items) => items
            .iter()
            .map(|i| match i {
                Args::String(s) => Ok(s.clone()),
                Args::Number(n) => Ok(n.to_string()),
                Args::Bool(b) => Ok(b.to_string()),
                other => Err(format!("{key}: expected text items, got {other:?}")),
            })
            .collect(),
        _ => Err(format!("{key}: expected a list of texts")),
    }
}

/// A YAML value from a template (a default) as a record value.
pub fn yaml_to_value(value: &Args) -> Result<Value, String> {
    serde_yaml::from_value::<Value>(value.clone()).map_err(|e| format!("invalid value: {e}"))
}

impl FieldType {
    /// Converts `value` to this type, or says why it cannot. Empty text becomes null for every type but
    /// string (an empty cell in a legacy export means "no value", not zero).
    pub fn coerce(self, value: Value) -> Result<Value, String> {
        if let Value::String(s) = &value {
            if self != FieldType::String && s.trim().is_empty() {
                return Ok(Value::Null);
            }
        }
        if value == Value::Null {
            return Ok(Value::Null);
        }
        let fail = |v: &Value| {
            format!(
                "cannot convert {} {} to {}",
                v.type_name(),
                preview(v),
                self.name()
            )
        };
        Ok(match (self, value) {
            (FieldType::String, Value::String(s)) => Value::String(s),
            (FieldType::String, v) if !v.is_nested() => Value::String(v.to_text()),
            (FieldType::Integer, Value::Int(i)) => Value::Int(i),
            (FieldType::Integer, Value::String(s)) => s
                .trim()
                .parse()
                .map(Value::Int)
                .map_err(|_| fail(&Value::String(s)))?,
            (FieldType::Integer, Value::Float(x)) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
                Value::Int(x as i64)
            }
            (FieldType::Integer, Value::Decimal(d)) => d
                .as_str()
                .parse()
                .map(Value::Int)
                .map_err(|_| fail(&Value::Decimal(d)))?,
            (FieldType::Number, Value::Float(x)) => Value::Float(x),
            (FieldType::Number, Value::Int(i)) => Value::Float(i as f64),
            (FieldType::Number, v @ (Value::String(_) | Value::Decimal(_))) => {
                let parsed = v
                    .to_text()
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite());
                parsed.map(Value::Float).ok_or_else(|| fail(&v))?
            }
            (FieldType::Decimal, Value::Decimal(d)) => Value::Decimal(d),
            (FieldType::Decimal, v @ (Value::Int(_) | Value::Float(_) | Value::String(_))) => {
                Decimal::parse(v.to_text().trim())
                    .map(Value::Decimal)
                    .ok_or_else(|| fail(&v))?
            }
            (FieldType::Boolean, Value::Bool(b)) => Value::Bool(b),
            (FieldType::Boolean, Value::Int(i @ (0 | 1))) => Value::Bool(i == 1),
            (FieldType::Boolean, Value::String(s)) => parse_bool(&s)
                .map(Value::Bool)
                .ok_or_else(|| fail(&Value::String(s)))?,
            (FieldType::Date, Value::Date(d)) => Value::Date(d),
            (FieldType::Date, Value::Timestamp(t)) => Value::Date(t.datetime.date()),
            (FieldType::Date, Value::String(s)) => {
                let parsed = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok();
                parsed
                    .map(Value::Date)
                    .ok_or_else(|| fail(&Value::String(s)))?
            }
            (FieldType::Datetime, Value::Timestamp(t)) => Value::Timestamp(t),
            (FieldType::Datetime, Value::Date(d)) => Value::Timestamp(Timestamp {
                datetime: d.and_time(chrono::NaiveTime::MIN),
                offset: None,
            }),
            (FieldType::Datetime, Value::String(s)) => Timestamp::parse(s.trim())
                .map(Value::Timestamp)
                .ok_or_else(|| fail(&Value::String(s)))?,
            (FieldType::Array, Value::Array(a)) => Value::Array(a),
            (FieldType::Object, Value::Object(o)) => Value::Object(o),
            (FieldType::Array | FieldType::Object, Value::String(s)) => {
                match serde_json::from_str::<Value>(&s) {
                    Ok(v @ Value::Array(_)) if self == FieldType::Array => v,
                    Ok(v @ Value::Object(_)) if self == FieldType::Object => v,
                    _ => return Err(fail(&Value::String(s))),
                }
            }
            (FieldType::Bytes, Value::Bytes(b)) => Value::Bytes(b),
            (FieldType::Bytes, Value::String(s)) => {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .ok();
                decoded
                    .map(Value::Bytes)
                    .ok_or_else(|| fail(&Value::String(s)))?
            }
            (_, v) => return Err(fail(&v)),
        })
    }
}

/// yes/no, y/n, true/false, on/off, 1/0, in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" | "t" => Some(true),
        "false" | "no" | "n" | "off" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// A short quoted rendering of a value for error messages.
pub fn preview(value: &Value) -> String {
    let text = value.to_text();
    let short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(spec: &str) -> Transform {
        Transform::parse(&serde_yaml::from_str(spec).unwrap()).unwrap()
    }

    fn s(text: &str) -> Value {
        Value::String(text.into())
    }

    #[test]
    fn text_transforms() {
        assert_eq!(t("trim").apply(s("  a b ")).unwrap(), Some(s("a b")));
        assert_eq!(t("lowercase").apply(s("MeEt")).unwrap(), Some(s("meet")));
        assert_eq!(t("uppercase").apply(s("é")).unwrap(), Some(s("É")));
        assert_eq!(
            t("truncate: 3").apply(s("日本語です")).unwrap(),
            Some(s("日本語"))
        );
        assert_eq!(
            t("{replace: {from: a, to: b}}").apply(s("aXa")).unwrap(),
            Some(s("bXb"))
        );
        assert_eq!(
            t("{regex_replace: {pattern: '(\\d+)', replacement: '<$1>'}}")
                .apply(s("a12b"))
                .unwrap(),
            Some(s("a<12>b"))
        );
    }

    #[test]
    fn split_and_join() {
        let split = t("{split: {separators: [';', ',']}}");
        let got = split.apply(s(" planning; budget ,q3;")).unwrap().unwrap();
        assert_eq!(got, Value::Array(vec![s("planning"), s("budget"), s("q3")]));
        assert_eq!(
            t("{join: {separator: '|'}}").apply(got).unwrap(),
            Some(s("planning|budget|q3"))
        );
    }

    #[test]
    fn dates() {
        let parse = t("{parse_date: {formats: ['%m/%d/%Y %H:%M', '%Y-%m-%d'], timezone: UTC}}");
        assert_eq!(
            parse
                .apply(s("03/14/2019 09:30"))
                .unwrap()
                .unwrap()
                .to_text(),
            "2019-03-14T09:30:00Z"
        );
        assert_eq!(
            parse.apply(s("2019-03-14")).unwrap().unwrap(),
            Value::Date(NaiveDate::from_ymd_opt(2019, 3, 14).unwrap())
        );
        assert!(parse
            .apply(s("13/45/2019 09:30"))
            .unwrap_err()
            .contains("matches none"));
        let fmt = t("{format_date: '%d.%m.%Y'}");
        assert_eq!(
            fmt.apply(Value::Date(NaiveDate::from_ymd_opt(2020, 1, 2).unwrap()))
                .unwrap(),
            Some(s("02.01.2020"))
        );
    }

    #[test]
    fn conversions() {
        assert_eq!(
            t("to_integer").apply(s(" 42 ")).unwrap(),
            Some(Value::Int(42))
        );
        assert_eq!(
            t("to_number").apply(s("1.5")).unwrap(),
            Some(Value::Float(1.5))
        );
        assert_eq!(
            t("to_decimal").apply(s("1.50")).unwrap(),
            Some(Value::Decimal(Decimal::parse("1.50").unwrap()))
        );
        for (text, b) in [
            ("yes", true),
            ("N", false),
            ("1", true),
            ("off", false),
            ("True", true),
        ] {
            assert_eq!(
                t("to_boolean").apply(s(text)).unwrap(),
                Some(Value::Bool(b)),
                "{text}"
            );
        }
        assert!(t("to_integer")
            .apply(s("12abc"))
            .unwrap_err()
            .contains("cannot convert"));
        assert_eq!(
            t("to_integer").apply(s("")).unwrap(),
            Some(Value::Null),
            "empty is no value, not zero"
        );
    }

    #[test]
    fn defaults_nulls_hash_redact_drop() {
        assert_eq!(
            t("{default_if_empty: n/a}").apply(s("  ")).unwrap(),
            Some(s("n/a"))
        );
        assert_eq!(
            t("{null_if: ['N/A', '-']}").apply(s("N/A")).unwrap(),
            Some(Value::Null)
        );
        assert_eq!(
            t("hash").apply(s("abc")).unwrap(),
            Some(s(
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            ))
        );
        assert_eq!(
            t("redact").apply(s("tok_123")).unwrap(),
            Some(s("[REDACTED]"))
        );
        assert_eq!(
            t("{redact: {marker: '***'}}").apply(s("x")).unwrap(),
            Some(s("***"))
        );
        assert_eq!(t("drop").apply(s("x")).unwrap(), None);
    }

    #[test]
    fn bad_specs_are_refused_with_reasons() {
        let err = |spec: &str| Transform::parse(&serde_yaml::from_str(spec).unwrap()).unwrap_err();
        assert!(err("uppercut").contains("unknown transform \"uppercut\""));
        assert!(err("{trim: 3}").contains("takes no arguments"));
        assert!(err("{regex_replace: {pattern: '('}}").contains("invalid pattern"));
        assert!(err("{truncate: many}").contains("length"));
        assert!(err("{parse_date: {format: '%Q'}}").contains("invalid format"));
        assert!(err("{parse_date: {format: '%Y', timezone: Europe/Paris}}").contains("named zones"));
        assert!(err("{hash: {algorithm: md5}}").contains("md5"));
    }
}
