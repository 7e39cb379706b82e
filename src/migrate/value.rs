//! The values a migration moves: every cell read from either database is converted once to a [`Datum`]
//! of its planned PostgreSQL type, which both the loaders (PostgreSQL binary COPY, SQLite parameters) and
//! the content checksums of `--validate` and `ferry diff` consume.
//!
//! Conversions from SQLite are strict about what a type holds and say why a value does not fit
//! (`text "abc" is not an integer`), so the copy's `--on-error` can name table, row, column and value.
//! The canonical encoding ([`Datum::hash_into`]) makes equal values hash equal whichever side they were
//! read from: numerics and JSON numbers without trailing zeros, JSON objects with sorted keys, timestamps
//! as UTC microseconds.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _, Utc};
use rusqlite::types::ValueRef;
use sha2::{Digest as _, Sha256};

use super::types::PgType;
use crate::db::pgcopy::{self, EPOCH_DAYS as PG_EPOCH_DAYS, EPOCH_MICROS as PG_EPOCH_MICROS};

/// One cell, converted to its column's planned type.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    /// NULL.
    Null,
    /// Any integer type.
    Int(i64),
    /// `double precision` or `real`.
    Float(f64),
    /// `numeric`: exact decimal text, normalized (no leading zeros, no trailing fractional zeros).
    Numeric(String),
    /// `boolean`.
    Bool(bool),
    /// `text`, `varchar`, and types ferry moves as text.
    Text(String),
    /// `bytea`.
    Bytes(Vec<u8>),
    /// `date`: days since 1970-01-01.
    Date(i32),
    /// `timestamptz` / `timestamp`: microseconds since 1970-01-01 (UTC for timestamptz).
    Timestamp(i64),
    /// `jsonb`: the parsed value (hashed canonically) and the text as the source wrote it, when it came as
    /// text (sent on unchanged, so PostgreSQL keeps `1.50` as written).
    Json(serde_json::Value, Option<String>),
}

/// Why a value does not fit its column's type.
pub type Misfit = String;

/// How a SQLite value reads for an error message: `text "abc"`, `integer 7`, `blob of 3 bytes`.
pub fn describe(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => format!("integer {i}"),
        ValueRef::Real(f) => format!("real {f}"),
        ValueRef::Text(t) => {
            let text = String::from_utf8_lossy(t);
            let shown: String = text.chars().take(60).collect();
            let more = if text.chars().count() > 60 { "…" } else { "" };
            format!("text {shown:?}{more}")
        }
        ValueRef::Blob(b) => format!("blob of {} bytes", b.len()),
    }
}

fn text_of(bytes: &[u8]) -> Result<&str, Misfit> {
    std::str::from_utf8(bytes).map_err(|_| "text is not valid UTF-8".to_owned())
}

fn float_text(f: f64) -> String {
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(f);
    text.strip_suffix(".0").unwrap_or(text).to_owned()
}

impl Datum {
    /// Converts a SQLite value to `ty`.
    pub fn from_sqlite(value: ValueRef<'_>, ty: &PgType) -> Result<Datum, Misfit> {
        Datum::from_sqlite_with(value, ty, true)
    }

    /// [`Datum::from_sqlite`], where `hashable: false` only checks JSON text rather than keeping its parsed
    /// value (a copy that is not validated never hashes it; [`Datum::hash_into`] then treats it as null).
    pub fn from_sqlite_with(
        value: ValueRef<'_>,
        ty: &PgType,
        hashable: bool,
    ) -> Result<Datum, Misfit> {
        if let ValueRef::Null = value {
            return Ok(Datum::Null);
        }
        match ty {
            PgType::BigInt => integer(value, i64::MIN, i64::MAX),
            PgType::Integer => integer(value, i32::MIN.into(), i32::MAX.into()),
            PgType::SmallInt => integer(value, i16::MIN.into(), i16::MAX.into()),
            PgType::Double | PgType::Real => float(value, matches!(ty, PgType::Real)),
            PgType::Numeric(params) => numeric(value, *params),
            PgType::Boolean => boolean(value),
            PgType::Date => match value {
                ValueRef::Text(t) => parse_date(text_of(t)?).map(Datum::Date),
                _ => Err("a date must be YYYY-MM-DD text".into()),
            },
            PgType::Timestamptz | PgType::Timestamp => timestamp(value),
            PgType::Jsonb if !hashable => json_checked(value),
            PgType::Jsonb => json(value),
            PgType::Bytea => Ok(Datum::Bytes(match value {
                ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
                ValueRef::Integer(i) => i.to_string().into_bytes(),
                ValueRef::Real(f) => float_text(f).into_bytes(),
                ValueRef::Null => Vec::new(),
            })),
            PgType::Text | PgType::Other(_) => text(value, None),
            PgType::Varchar(n) => text(value, Some(*n)),
        }
    }

    /// Converts a value read from a database of the other direction (PostgreSQL) back for SQLite.
    pub fn to_sqlite(&self) -> rusqlite::types::Value {
        use rusqlite::types::Value as V;
        match self {
            Datum::Null => V::Null,
            Datum::Int(i) => V::Integer(*i),
            Datum::Float(f) => V::Real(*f),
            Datum::Numeric(n) => V::Text(n.clone()),
            Datum::Bool(b) => V::Integer(i64::from(*b)),
            Datum::Text(t) => V::Text(t.clone()),
            Datum::Bytes(b) => V::Blob(b.clone()),
            Datum::Date(d) => V::Text(date_text(*d)),
            Datum::Timestamp(t) => V::Text(timestamp_text(*t)),
            Datum::Json(_, Some(text)) => V::Text(text.clone()),
            Datum::Json(j, None) => V::Text(j.to_string()),
        }
    }

    /// Appends the value as one field of a PostgreSQL binary COPY row (length word included).
    pub fn write_pg(&self, ty: &PgType, out: &mut BytesMut) -> Result<(), Misfit> {
        pgcopy::put_field(out, matches!(self, Datum::Null), |out| {
            match (self, ty) {
                (Datum::Null, _) => {}
                (Datum::Int(i), ty) => pgcopy::put_int(out, *i, ty.int_bytes()),
                (Datum::Float(f), ty) => pgcopy::put_float(out, *f, *ty == PgType::Real)?,
                (Datum::Numeric(n), _) => pgcopy::numeric_to_binary(n, out)?,
                (Datum::Bool(b), _) => out.put_u8(u8::from(*b)),
                (Datum::Text(t), _) => out.put_slice(t.as_bytes()),
                (Datum::Bytes(b), _) => out.put_slice(b),
                (Datum::Date(d), _) => pgcopy::put_date(out, *d),
                (Datum::Timestamp(t), _) => pgcopy::put_timestamp(out, *t),
                (Datum::Json(_, Some(text)), _) => pgcopy::put_json(out, text, true),
                (Datum::Json(j, None), _) => pgcopy::put_json(out, &j.to_string(), true),
            }
            Ok(())
        })
    }

    /// Decodes one field of a PostgreSQL binary COPY row of type `ty` (`None` is NULL).
    pub fn from_pg(raw: Option<&[u8]>, ty: &PgType) -> Result<Datum, Misfit> {
        let Some(raw) = raw else {
            return Ok(Datum::Null);
        };
        let fixed = |n: usize| -> Result<&[u8], Misfit> {
            raw.get(..n)
                .filter(|_| raw.len() == n)
                .ok_or_else(|| format!("a {} value must be {n} bytes", ty.sql()))
        };
        Ok(match ty {
            PgType::BigInt => Datum::Int(i64::from_be_bytes(array(fixed(8)?))),
            PgType::Integer => Datum::Int(i32::from_be_bytes(array(fixed(4)?)).into()),
            PgType::SmallInt => Datum::Int(i16::from_be_bytes(array(fixed(2)?)).into()),
            PgType::Double => Datum::Float(f64::from_be_bytes(array(fixed(8)?))),
            PgType::Real => Datum::Float(f32::from_be_bytes(array(fixed(4)?)).into()),
            PgType::Numeric(_) => Datum::Numeric(normalize_decimal(&pgcopy::numeric_text(raw)?)),
            PgType::Boolean => Datum::Bool(fixed(1)?[0] != 0),
            PgType::Date => Datum::Date(i32::from_be_bytes(array(fixed(4)?)) + PG_EPOCH_DAYS),
            PgType::Timestamptz | PgType::Timestamp => {
                Datum::Timestamp(i64::from_be_bytes(array(fixed(8)?)) + PG_EPOCH_MICROS)
            }
            PgType::Jsonb => {
                let text = raw.get(1..).ok_or("empty jsonb value")?;
                Datum::Json(
                    serde_json::from_slice(text)
                        .map_err(|e| format!("jsonb does not parse: {e}"))?,
                    None,
                )
            }
            PgType::Bytea => Datum::Bytes(raw.to_vec()),
            PgType::Text | PgType::Varchar(_) | PgType::Other(_) => {
                Datum::Text(String::from_utf8(raw.to_vec()).map_err(|_| "text is not valid UTF-8")?)
            }
        })
    }

    /// Feeds the value's canonical encoding to a row hash: equal values give equal bytes whichever
    /// database they were read from.
    pub fn hash_into(&self, hasher: &mut Sha256) {
        let mut scratch = String::new();
        let number: [u8; 8];
        let (tag, payload): (u8, &[u8]) = match self {
            Datum::Null => (0, &[]),
            Datum::Int(i) => {
                number = i.to_le_bytes();
                (1, &number)
            }
            Datum::Float(f) => {
                // Every NaN is the same value.
                number = if f.is_nan() { u64::MAX } else { f.to_bits() }.to_le_bytes();
                (2, &number)
            }
            Datum::Numeric(n) => (3, n.as_bytes()),
            Datum::Bool(b) => (4, if *b { b"t" } else { b"f" }),
            Datum::Text(t) => (5, t.as_bytes()),
            Datum::Bytes(b) => (6, b),
            Datum::Date(d) => {
                number = i64::from(*d).to_le_bytes();
                (7, &number)
            }
            Datum::Timestamp(t) => {
                number = t.to_le_bytes();
                (8, &number)
            }
            Datum::Json(j, _) => {
                canonical_json(j, &mut scratch);
                (9, scratch.as_bytes())
            }
        };
        hasher.update([tag]);
        hasher.update((payload.len() as u64).to_le_bytes());
        hasher.update(payload);
    }

    /// The value as a JSON value, for rejects files and `ferry diff`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Datum::Null => J::Null,
            Datum::Int(i) => J::from(*i),
            Datum::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Datum::Numeric(n) | Datum::Text(n) => J::String(n.clone()),
            Datum::Bool(b) => J::Bool(*b),
            Datum::Bytes(b) => {
                use base64::Engine as _;
                J::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            Datum::Date(d) => J::String(date_text(*d)),
            Datum::Timestamp(t) => J::String(timestamp_text(*t)),
            Datum::Json(j, _) => j.clone(),
        }
    }
}

/// A SQLite value as JSON, for rejects files (the value as stored, before conversion).
pub fn sqlite_json(value: ValueRef<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        ValueRef::Null => J::Null,
        ValueRef::Integer(i) => J::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        ValueRef::Text(t) => J::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => {
            use base64::Engine as _;
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn integer(value: ValueRef<'_>, min: i64, max: i64) -> Result<Datum, Misfit> {
    let i = match value {
        ValueRef::Integer(i) => i,
        ValueRef::Real(f) if f.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&f) => f as i64,
        ValueRef::Real(f) => return Err(format!("real {f} is not a whole number")),
        ValueRef::Text(t) => {
            let text = text_of(t)?;
            text.trim()
                .parse::<i64>()
                .map_err(|_| format!("text {text:?} is not an integer"))?
        }
        ValueRef::Blob(_) => return Err("a blob is not an integer".into()),
        ValueRef::Null => return Ok(Datum::Null),
    };
    if i < min || i > max {
        return Err(format!("{i} is out of range ({min} to {max})"));
    }
    Ok(Datum::Int(i))
}

fn float(value: ValueRef<'_>, single: bool) -> Result<Datum, Misfit> {
    let f = match value {
        ValueRef::Integer(i) => i as f64,
        ValueRef::Real(f) => f,
        ValueRef::Text(t) => {
            let text = text_of(t)?;
            text.trim()
                .parse::<f64>()
                .map_err(|_| format!("text {text:?} is not a number"))?
        }
        _ => return Err("a blob is not a number".into()),
    };
    if single && f.is_finite() && (f as f32).is_infinite() {
        return Err(format!("{f} is too large for real"));
    }
    // real columns keep single precision: what is hashed is what PostgreSQL will hold.
    Ok(Datum::Float(if single { f64::from(f as f32) } else { f }))
}

fn numeric(value: ValueRef<'_>, params: Option<(u32, Option<u32>)>) -> Result<Datum, Misfit> {
    let text = match value {
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) if f.is_finite() => float_text(f),
        ValueRef::Real(f) => return Err(format!("{f} does not fit numeric")),
        ValueRef::Text(t) => {
            let text = text_of(t)?.trim();
            if crate::record::Decimal::parse(text).is_none() {
                return Err(format!("text {text:?} is not a number"));
            }
            text.to_owned()
        }
        _ => return Err("a blob is not a number".into()),
    };
    let normalized = normalize_decimal(&text);
    if let Some((precision, scale)) = params {
        let scale = scale.unwrap_or(0) as usize;
        let (int, frac) = normalized
            .trim_start_matches('-')
            .split_once('.')
            .unwrap_or((normalized.trim_start_matches('-'), ""));
        let int_digits = int.trim_start_matches('0').len();
        if frac.len() > scale {
            return Err(format!(
                "{normalized} has more digits after the point than numeric({precision},{scale}) keeps (it would be rounded)"
            ));
        }
        if int_digits + scale > precision as usize {
            return Err(format!(
                "{normalized} is too large for numeric({precision},{scale})"
            ));
        }
    }
    Ok(Datum::Numeric(normalized))
}

/// Exact decimal text in one spelling: no exponent, no leading zeros, no trailing fractional zeros, no `-0`.
pub fn normalize_decimal(text: &str) -> String {
    let text = text.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i64>().unwrap_or(0),
        ),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int.chars().chain(frac.chars()).collect();
    let exponent = exponent.clamp(-100_000, 100_000);
    let point = int.len() as i64 + exponent;
    let (int_part, frac_part) = if point <= 0 {
        let pad = "0".repeat(usize::try_from(-point).unwrap_or(0));
        (String::new(), format!("{pad}{digits}"))
    } else {
        let point = usize::try_from(point).unwrap_or(0);
        if point >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point - digits.len())),
                String::new(),
            )
        } else {
            (digits[..point].to_owned(), digits[point..].to_owned())
        }
    };
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let mut out = String::new();
    if negative && !(int_part.is_empty() && frac_part.is_empty()) {
        out.push('-');
    }
    out.push_str(if int_part.is_empty() { "0" } else { int_part });
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    out
}

fn boolean(value: ValueRef<'_>) -> Result<Datum, Misfit> {
    match value {
        ValueRef::Integer(0) => Ok(Datum::Bool(false)),
        ValueRef::Integer(1) => Ok(Datum::Bool(true)),
        ValueRef::Text(t) => match text_of(t)?.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => Ok(Datum::Bool(true)),
            "0" | "f" | "false" => Ok(Datum::Bool(false)),
            other => Err(format!("text {other:?} is not a boolean (0/1/true/false)")),
        },
        other => Err(format!("{} is not a boolean (0 or 1)", describe(other))),
    }
}

fn parse_date(text: &str) -> Result<i32, Misfit> {
    let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("text {text:?} is not a date (YYYY-MM-DD)"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).map_err(|_| format!("date {text:?} out of range"))
}

/// Date-time text: ISO 8601 with `T` or a space, optional seconds and fraction, optional `Z`/offset.
/// Text without an offset is UTC (SQLite's `CURRENT_TIMESTAMP` is).
fn parse_timestamp(text: &str) -> Result<i64, Misfit> {
    if let Some(micros) = fast_timestamp(text.as_bytes()) {
        return Ok(micros);
    }
    let t = text.trim();
    let bad = || format!("text {text:?} is not a date-time (YYYY-MM-DD HH:MM:SS[.f][±HH:MM])");
    if t.len() == 10 {
        return parse_date(t).map(|d| i64::from(d) * 86_400_000_000);
    }
    let normalized = t.replacen(' ', "T", 1);
    if let Ok(zoned) = DateTime::parse_from_rfc3339(&normalized) {
        return Ok(zoned.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z"] {
        if let Ok(zoned) = DateTime::parse_from_str(&normalized, format) {
            return Ok(zoned.timestamp_micros());
        }
    }
    let naive = normalized.trim_end_matches('Z');
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(naive, format) {
            return Ok(Utc.from_utc_datetime(&n).timestamp_micros());
        }
    }
    Err(bad())
}

/// The common spellings, `YYYY-MM-DD HH:MM:SS[.ffffff]` with `T` or a space and an optional `Z`, read
/// byte by byte (chrono's format parser was the copy's hottest spot); anything else returns `None` and
/// goes the general way.
fn fast_timestamp(b: &[u8]) -> Option<i64> {
    let b = b.strip_suffix(b"Z").unwrap_or(b);
    if b.len() < 19 || !(b[10] == b' ' || b[10] == b'T') || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let micros = match &b[19..] {
        [] => 0,
        [b'.', digits @ ..] if !digits.is_empty() && digits.len() <= 6 => {
            let n = num(20..b.len())?;
            n * 10u32.pow(6 - digits.len() as u32)
        }
        _ => return None,
    };
    let days = date
        .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?)
        .num_days();
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(seconds * 1_000_000 + i64::from(micros))
}

fn timestamp(value: ValueRef<'_>) -> Result<Datum, Misfit> {
    match value {
        ValueRef::Text(t) => parse_timestamp(text_of(t)?).map(Datum::Timestamp),
        // Only reachable through --cast-rules: whole numbers are Unix seconds.
        ValueRef::Integer(i) => i
            .checked_mul(1_000_000)
            .map(Datum::Timestamp)
            .ok_or_else(|| format!("{i} is out of range for a Unix time")),
        other => Err(format!("{} is not a date-time", describe(other))),
    }
}

/// JSON text checked (it parses, it holds no `\u0000`) but not kept as a value.
fn json_checked(value: ValueRef<'_>) -> Result<Datum, Misfit> {
    let ValueRef::Text(t) = value else {
        return json(value);
    };
    serde_json::from_slice::<serde::de::IgnoredAny>(t).map_err(|e| {
        format!(
            "{} is not JSON ({e})",
            describe(value).trim_start_matches("text ")
        )
    })?;
    // A NUL can only be written as an escape in valid JSON text.
    if t.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return json(value);
    }
    Ok(Datum::Json(
        serde_json::Value::Null,
        Some(text_of(t)?.to_owned()),
    ))
}

fn json(value: ValueRef<'_>) -> Result<Datum, Misfit> {
    let parsed: serde_json::Value = match value {
        ValueRef::Text(t) => serde_json::from_slice(t).map_err(|e| {
            format!(
                "{} is not JSON ({e})",
                describe(ValueRef::Text(t)).trim_start_matches("text ")
            )
        })?,
        ValueRef::Integer(i) => serde_json::Value::from(i),
        ValueRef::Real(f) => serde_json::from_str(&float_text(f)).map_err(|e| e.to_string())?,
        _ => return Err("a blob is not JSON".into()),
    };
    if has_nul(&parsed) {
        return Err("PostgreSQL jsonb cannot hold the character \\u0000".into());
    }
    let original = match value {
        ValueRef::Text(t) => Some(text_of(t)?.to_owned()),
        _ => None,
    };
    Ok(Datum::Json(parsed, original))
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn text(value: ValueRef<'_>, limit: Option<u32>) -> Result<Datum, Misfit> {
    let text = match value {
        ValueRef::Text(t) => text_of(t)?.to_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => float_text(f),
        ValueRef::Blob(b) => return Err(format!("a blob of {} bytes is not text", b.len())),
        ValueRef::Null => return Ok(Datum::Null),
    };
    if text.contains('\0') {
        return Err("PostgreSQL text cannot hold the character \\0".into());
    }
    if let Some(n) = limit {
        let chars = text.chars().count();
        if chars > n as usize {
            return Err(format!("{chars} characters do not fit varchar({n})"));
        }
    }
    Ok(Datum::Text(text))
}

/// `YYYY-MM-DD` of days since 1970-01-01.
pub fn date_text(days: i32) -> String {
    NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::Duration::days(days.into())))
        .map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC) of microseconds since 1970-01-01.
pub fn timestamp_text(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) if micros % 1_000_000 == 0 => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => micros.to_string(),
    }
}

/// JSON with object keys sorted and numbers in [`normalize_decimal`] form.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => out.push_str(&normalize_decimal(&n.to_string())),
        J::String(s) => {
            let _ = write!(out, "{}", serde_json::Value::String(s.clone()));
        }
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", serde_json::Value::String(key.clone()));
                if let Some(v) = map.get(key) {
                    canonical_json(v, out);
                }
            }
            out.push('}');
        }
    }
}

/// An order-independent checksum of a table's rows: the wrapping sum of each row's SHA-256 (first 128
/// bits), so rows may be read in any order, and a changed, missing or extra row changes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableChecksum {
    /// Rows summed.
    pub rows: u64,
    sum: u128,
}

impl TableChecksum {
    /// Adds one row.
    pub fn add(&mut self, row: &[Datum]) {
        self.add_hash(row_hash(row));
    }

    /// Adds one row's hash (from [`row_hash`]).
    pub fn add_hash(&mut self, hash: u128) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(hash);
    }

    /// Combines two partial checksums.
    pub fn merge(&mut self, other: TableChecksum) {
        self.rows += other.rows;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// The checksum as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// One row's hash, over the canonical encoding of its values.
pub fn row_hash(row: &[Datum]) -> u128 {
    let mut hasher = Sha256::new();
    for datum in row {
        datum.hash_into(&mut hasher);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(value: ValueRef<'_>, ty: &PgType) -> Result<Datum, Misfit> {
        Datum::from_sqlite(value, ty)
    }

    #[test]
    fn decimals_have_one_spelling() {
        for (input, output) in [
            ("0.990", "0.99"),
            ("-0.00", "0"),
            ("1e3", "1000"),
            ("1.5E-3", "0.0015"),
            ("007.50", "7.5"),
            ("-12", "-12"),
            ("100", "100"),
        ] {
            assert_eq!(normalize_decimal(input), output, "{input}");
        }
    }

    #[test]
    fn sqlite_values_convert_or_say_why() {
        assert_eq!(
            from(ValueRef::Real(0.99), &PgType::Numeric(Some((10, Some(2))))),
            Ok(Datum::Numeric("0.99".into()))
        );
        let e = from(ValueRef::Real(1.005), &PgType::Numeric(Some((10, Some(2))))).unwrap_err();
        assert!(e.contains("rounded"), "{e}");
        let e = from(ValueRef::Text(b"abc"), &PgType::BigInt).unwrap_err();
        assert_eq!(e, "text \"abc\" is not an integer");
        assert!(from(ValueRef::Integer(70_000), &PgType::SmallInt).is_err());
        assert_eq!(
            from(ValueRef::Integer(1), &PgType::Boolean),
            Ok(Datum::Bool(true))
        );
        assert!(from(ValueRef::Integer(2), &PgType::Boolean).is_err());
        assert_eq!(
            from(ValueRef::Text(b"1970-01-02 00:00:01"), &PgType::Timestamptz),
            Ok(Datum::Timestamp(86_401_000_000))
        );
        assert_eq!(
            from(
                ValueRef::Text(b"1970-01-02T02:00:01+02:00"),
                &PgType::Timestamptz
            ),
            Ok(Datum::Timestamp(86_401_000_000))
        );
        assert!(from(ValueRef::Text(b"{\"a\":\"\\u0000\"}"), &PgType::Jsonb).is_err());
        assert!(from(ValueRef::Text(b"abcd"), &PgType::Varchar(3)).is_err());
        assert_eq!(
            from(ValueRef::Real(2.0), &PgType::Text),
            Ok(Datum::Text("2".into()))
        );
    }

    #[test]
    fn values_survive_the_binary_copy_format() {
        let cases = [
            (Datum::Int(-5), PgType::SmallInt),
            (Datum::Int(1 << 40), PgType::BigInt),
            (Datum::Float(0.1), PgType::Double),
            (Datum::Numeric("-1234.5".into()), PgType::Numeric(None)),
            (Datum::Bool(true), PgType::Boolean),
            (Datum::Text("ß".into()), PgType::Text),
            (Datum::Bytes(vec![0, 255]), PgType::Bytea),
            (Datum::Date(-1), PgType::Date),
            (Datum::Timestamp(1_700_000_000_123_456), PgType::Timestamptz),
            (Datum::Null, PgType::Jsonb),
        ];
        for (datum, ty) in cases {
            let mut buf = BytesMut::new();
            datum.write_pg(&ty, &mut buf).unwrap();
            let len = i32::from_be_bytes(array(&buf[..4]));
            let raw = (len >= 0).then(|| &buf[4..]);
            assert_eq!(Datum::from_pg(raw, &ty).unwrap(), datum, "{ty:?}");
        }
    }

    #[test]
    fn json_hashes_ignore_key_order_and_number_spelling() {
        let a = from(ValueRef::Text(br#"{"b":1.50,"a":[1e2]}"#), &PgType::Jsonb).unwrap();
        let b = from(ValueRef::Text(br#"{"a":[100],"b":1.5}"#), &PgType::Jsonb).unwrap();
        assert_eq!(row_hash(&[a]), row_hash(&[b]));
    }

    #[test]
    fn checksums_do_not_depend_on_row_order() {
        let rows = [vec![Datum::Int(1)], vec![Datum::Int(2)], vec![Datum::Null]];
        let mut forward = TableChecksum::default();
        let mut backward = TableChecksum::default();
        rows.iter().for_each(|r| forward.add(r));
        rows.iter().rev().for_each(|r| backward.add(r));
        assert_eq!(forward, backward);
        let mut changed = TableChecksum::default();
        changed.add(&[Datum::Int(1)]);
        changed.add(&[Datum::Int(3)]);
        changed.add(&[Datum::Null]);
        assert_ne!(forward, changed);
    }

    #[test]
    fn text_for_sqlite_round_trips_dates() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(timestamp_text(86_401_000_000), "1970-01-02 00:00:01");
        assert_eq!(parse_timestamp(&timestamp_text(1_500)).unwrap(), 1_500);
        for text in [
            "2024-02-29 23:59:59",
            "2024-02-29T23:59:59.5",
            "1969-12-31 23:59:59.000001Z",
            "2024-01-01 10:00:00+02:00",
            "2024-01-01",
        ] {
            let general = {
                let normalized = text.replacen(' ', "T", 1);
                DateTime::parse_from_rfc3339(&normalized)
                    .map(|t| t.timestamp_micros())
                    .or_else(|_| {
                        NaiveDateTime::parse_from_str(
                            normalized.trim_end_matches('Z'),
                            "%Y-%m-%dT%H:%M:%S%.f",
                        )
                        .map(|n| Utc.from_utc_datetime(&n).timestamp_micros())
                    })
                    .or_else(|_| {
                        parse_date(text)
                            .map(|d| i64::from(d) * 86_400_000_000)
                            .map_err(|_| ())
                    })
            };
            assert_eq!(parse_timestamp(text).ok(), general.ok(), "{text}");
        }
        assert_eq!(fast_timestamp(b"2024-02-30 00:00:00"), None);
    }
}
