//! The unit that moves through every stage: an insertion-ordered [`Record`] of typed [`Value`]s.
//!
//! Values are typed so that a decimal read from one database and written to another keeps every digit, a
//! timestamp keeps its offset, and bytes stay bytes. Formats that only carry text (CSV, Markdown, XML) use
//! [`Value::to_text`], one documented text form per type.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use chrono::{FixedOffset, NaiveDate, NaiveDateTime};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whether a text buffer of `room` bytes is written over with a text of `len` bytes rather than replaced.
/// A buffer is never grown (a grown one has spare room for good) and one with much more room than the text
/// is not kept: memory stays in proportion to the text held. The bound is loose enough for the texts of a
/// free-text column, which vary in length from row to row (at twice the length, half of such refills
/// allocated anew).
fn keeps_buffer(room: usize, len: usize) -> bool {
    len <= room && room <= 4 * len + 64
}

/// A copy of `text` in a buffer with the room the allocator gives its size anyway (jemalloc's size classes:
/// 8, multiples of 16 up to 128, then four classes per doubling), so that the next text written over it
/// may be a little longer at no cost in memory: an exact copy's room is its length, and a refilled cell
/// whose text is a byte longer than the last one's needed a new buffer.
fn text_with_room(text: &str) -> String {
    let len = text.len();
    let room = match len {
        0 => 0,
        1..=8 => 8,
        9..=128 => len.next_multiple_of(16),
        _ => {
            // Four classes between 2^k and 2^(k+1): spaced 2^(k-2).
            let spacing = 1usize << (usize::BITS - (len - 1).leading_zeros() - 3);
            len.next_multiple_of(spacing)
        }
    };
    let mut buffer = String::with_capacity(room);
    buffer.push_str(text);
    buffer
}

/// A field name. Shared, because every record of a CSV file carries the same names.
pub type Key = Arc<str>;

/// A typed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (SQL NULL, JSON null).
    Null,
    /// true or false.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// An exact decimal number, kept as its digits.
    Decimal(Decimal),
    /// UTF-8 text.
    String(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A calendar date.
    Date(NaiveDate),
    /// A date and time, with its UTC offset when it has one.
    Timestamp(Timestamp),
    /// An ordered list.
    Array(Vec<Value>),
    /// A nested record.
    Object(Record),
}

/// An exact decimal number, stored as its canonical text so that no digit is ever lost to a float.
///
/// ```
/// use ferry::Decimal;
/// let d = Decimal::parse("-12345678901234567890.10").unwrap();
/// assert_eq!(d.as_str(), "-12345678901234567890.10");
/// assert!(Decimal::parse("1.2.3").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal(String);

/// The parts of a number written as `[-+]int[.frac][(e|E)[-+]exp]`, for the readers that must decide what a
/// number's text is (decimals, YAML's number forms, a CSV cell's inferred type): one grammar, split once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumberParts<'a> {
    /// The sign written before the number, if any.
    pub sign: Option<char>,
    /// The digits before the dot (may be empty: `.5`).
    pub int: &'a str,
    /// The digits after the dot, when there is a dot (may be empty: `1.`).
    pub frac: Option<&'a str>,
    /// The exponent's sign (if written) and digits.
    pub exp: Option<(Option<char>, &'a str)>,
}

impl<'a> NumberParts<'a> {
    /// Splits `text`; `None` unless it is digits with at most a sign, a dot and an exponent, and at least
    /// one digit before or after the dot.
    pub fn of(text: &'a str) -> Option<NumberParts<'a>> {
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let sign = text.chars().next().filter(|c| matches!(c, '+' | '-'));
        let unsigned = &text[sign.map_or(0, char::len_utf8)..];
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
            None => (unsigned, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (mantissa, None),
        };
        let has_digit = !int.is_empty() || frac.is_some_and(|f| !f.is_empty());
        let exp = match exponent {
            None => None,
            Some(e) => {
                let exp_sign = e.chars().next().filter(|c| matches!(c, '+' | '-'));
                let e_digits = &e[exp_sign.map_or(0, char::len_utf8)..];
                if e_digits.is_empty() || !digits(e_digits) {
                    return None;
                }
                Some((exp_sign, e_digits))
            }
        };
        (has_digit && digits(int) && frac.is_none_or(digits)).then_some(NumberParts {
            sign,
            int,
            frac,
            exp,
        })
    }
}

impl Decimal {
    /// Accepts `[-+]digits[.digits][e[-+]digits]` (a leading `+` is dropped); anything else is `None`.
    pub fn parse(text: &str) -> Option<Decimal> {
        NumberParts::of(text)?;
        Some(Decimal(text.strip_prefix('+').unwrap_or(text).to_owned()))
    }

    /// An integer as a decimal.
    pub fn from_u64(value: u64) -> Decimal {
        Decimal(value.to_string())
    }

    /// An integer beyond 64 bits as a decimal.
    pub fn from_u128(value: u128) -> Decimal {
        Decimal(value.to_string())
    }

    /// The decimal's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A date and time; `offset` is `None` for a local ("naive") time such as SQL `timestamp without time zone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// The wall-clock date and time.
    pub datetime: NaiveDateTime,
    /// The UTC offset the time was written with, if any.
    pub offset: Option<FixedOffset>,
}

impl Timestamp {
    /// Parses RFC 3339 / ISO 8601 (`2024-05-01T10:00:00.5+02:00`, `...Z`, or without an offset; a space may
    /// stand for the `T`).
    pub fn parse(text: &str) -> Option<Timestamp> {
        if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(text) {
            return Some(Timestamp {
                datetime: dt.naive_local(),
                offset: Some(*dt.offset()),
            });
        }
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .find_map(|fmt| NaiveDateTime::parse_from_str(text, fmt).ok())
            .map(|datetime| Timestamp {
                datetime,
                offset: None,
            })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digits into a buffer on the stack, then one write: formatting each part through `write!` was about
        // 6 % of a templated run's CPU (timestamps are written for validation and for output).
        let mut buf = [0u8; 29];
        match timestamp_text(self.datetime, &mut buf) {
            Some(text) => f.write_str(text)?,
            // Years outside 0..=9999 and leap seconds take chrono's own (slower) path.
            None => write!(f, "{}", self.datetime.format("%Y-%m-%dT%H:%M:%S%.f"))?,
        }
        match self.offset {
            Some(o) if o.local_minus_utc() == 0 => f.write_str("Z"),
            Some(o) => write!(f, "{o}"),
            None => Ok(()),
        }
    }
}

impl Timestamp {
    /// Appends the text `Display` writes.
    fn append_text(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let mut buf = [0u8; 29];
        match self.plain_text(&mut buf) {
            Some((text, suffix)) => {
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(suffix.as_bytes());
            }
            // Writing to a vector cannot fail.
            None => drop(write!(out, "{self}")),
        }
    }

    /// [`Timestamp::append_text`] for a string (the validator's text of a timestamp, a database cell).
    pub(crate) fn push_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut buf = [0u8; 29];
        match self.plain_text(&mut buf) {
            Some((text, suffix)) => {
                out.push_str(text);
                out.push_str(suffix);
            }
            None => drop(write!(out, "{self}")),
        }
    }

    /// Which of eight layouts the text `Display` writes has, when it is a plain one (see `plain_text`): the
    /// fraction's width (none, 3, 6 or 9 digits) and the suffix (`Z` or none). Two timestamps of one layout
    /// have texts of one length that differ only in which ASCII digit stands where; `None` for the others.
    pub(crate) fn text_layout(&self) -> Option<u8> {
        use chrono::{Datelike as _, Timelike as _};
        let suffix = u8::from(!self.plain_suffix()?.is_empty());
        let nanos = self.datetime.nanosecond();
        if !(0..=9999).contains(&self.datetime.year()) || nanos >= 1_000_000_000 {
            return None;
        }
        let fraction = match nanos {
            0 => 0,
            n if n % 1_000_000 == 0 => 1,
            n if n % 1_000 == 0 => 2,
            _ => 3,
        };
        Some(fraction << 1 | suffix)
    }

    /// The text `Display` writes, as digits in `buf` and a suffix (`Z` or none), when it is that simple: a
    /// year in 0..=9999, no leap second, UTC or no offset.
    fn plain_text<'b>(&self, buf: &'b mut [u8; 29]) -> Option<(&'b str, &'static str)> {
        let suffix = self.plain_suffix()?;
        Some((timestamp_text(self.datetime, buf)?, suffix))
    }

    /// The suffix of a plain text: `Z` for UTC, none without an offset; `None` for another offset.
    fn plain_suffix(&self) -> Option<&'static str> {
        match self.offset {
            Some(o) if o.local_minus_utc() == 0 => Some("Z"),
            Some(_) => None,
            None => Some(""),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS` and the fraction (none, 3, 6 or 9 digits, the fewest that keep it exact) in
/// `buf`; `None` for years outside 0..=9999 and leap seconds.
fn timestamp_text(t: NaiveDateTime, buf: &mut [u8; 29]) -> Option<&str> {
    use chrono::Timelike as _;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 || !put_date(buf, t.date()) {
        return None;
    }
    buf[10] = b'T';
    put_digits(&mut buf[11..13], t.hour());
    buf[13] = b':';
    put_digits(&mut buf[14..16], t.minute());
    buf[16] = b':';
    put_digits(&mut buf[17..19], t.second());
    let end = match nanos {
        0 => 19,
        n if n % 1_000_000 == 0 => put_fraction(buf, n / 1_000_000, 3),
        n if n % 1_000 == 0 => put_fraction(buf, n / 1_000, 6),
        n => put_fraction(buf, n, 9),
    };
    std::str::from_utf8(&buf[..end]).ok()
}

/// `.` and `value` in `width` digits after the seconds; returns the end of the text.
fn put_fraction(buf: &mut [u8; 29], value: u32, width: usize) -> usize {
    buf[19] = b'.';
    put_digits(&mut buf[20..20 + width], value);
    20 + width
}

/// `YYYY-MM-DD` in `buf[..10]` for years 0..=9999 (returns true); false otherwise.
fn put_date(buf: &mut [u8], date: NaiveDate) -> bool {
    use chrono::Datelike as _;
    let Ok(year) = u32::try_from(date.year()) else {
        return false;
    };
    if year > 9999 {
        return false;
    }
    put_digits(&mut buf[0..4], year);
    buf[4] = b'-';
    put_digits(&mut buf[5..7], date.month());
    buf[7] = b'-';
    put_digits(&mut buf[8..10], date.day());
    true
}

/// `value`'s last `out.len()` decimal digits, zero-padded.
fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Writes `YYYY-MM-DD` for years 0..=9999 and returns true; writes nothing and returns false otherwise.
fn write_date(out: &mut impl fmt::Write, date: NaiveDate) -> Result<bool, fmt::Error> {
    let mut buf = [0u8; 10];
    if !put_date(&mut buf, date) {
        return Ok(false);
    }
    out.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)?;
    Ok(true)
}

impl Value {
    /// The name of this value's type, as templates and error messages spell it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Decimal(_) => "decimal",
            Value::String(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Timestamp(_) => "datetime",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// Whether two values are the same to the bit, so that their texts are too: `==` takes `0.0` and
    /// `-0.0` for equal (and NaN for unequal to itself), which a copy made in place of the other must not.
    pub(crate) fn identical(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.identical(b))
            }
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, a), (kb, b))| ka == kb && a.identical(b))
            }
            (a, b) => a == b,
        }
    }

    /// True for arrays and objects.
    pub fn is_nested(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_))
    }

    /// The text form used by formats that carry only text (CSV, Markdown, XML):
    /// null is empty, booleans `true`/`false`, numbers as written, bytes as standard base64, dates ISO 8601,
    /// timestamps RFC 3339, arrays and objects as compact JSON.
    ///
    /// ```
    /// use ferry::{Record, Value};
    /// let mut r = Record::new();
    /// r.insert("a", Value::Int(1));
    /// assert_eq!(Value::Object(r).to_text(), r#"{"a":1}"#);
    /// assert_eq!(Value::Null.to_text(), "");
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    /// Appends [`Value::to_text`] to `out` without an intermediate allocation for scalars.
    pub fn write_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        match self {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
            Value::Float(x) => push_float(out, *x),
            Value::Decimal(d) => out.push_str(d.as_str()),
            Value::String(s) => out.push_str(s),
            Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
            Value::Date(d) => {
                if !matches!(write_date(out, *d), Ok(true)) {
                    let _ = write!(out, "{}", d.format("%Y-%m-%d"));
                }
            }
            Value::Timestamp(t) => t.push_text(out),
            Value::Array(_) | Value::Object(_) => {
                let mut buf = Vec::new();
                write_json(&mut buf, self);
                out.push_str(&String::from_utf8_lossy(&buf));
            }
        }
    }
}

fn push_float(out: &mut String, x: f64) {
    if x.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(x));
    } else if x.is_nan() {
        out.push_str("NaN");
    } else if x > 0.0 {
        out.push_str("Infinity");
    } else {
        out.push_str("-Infinity");
    }
}

/// Appends `value` as compact JSON. Decimals are written as JSON numbers with every digit; bytes as base64
/// strings; dates and timestamps as ISO 8601 strings; non-finite floats as the strings `NaN`, `Infinity`,
/// `-Infinity` (JSON has no such numbers).
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(x) if x.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*x).as_bytes())
        }
        Value::Decimal(d) => out.extend_from_slice(d.as_str().as_bytes()),
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Object(record) => write_json_record(out, record),
        // Its text is ASCII with nothing to escape: written in place, with no string in between.
        Value::Timestamp(t) => {
            out.push(b'"');
            t.append_text(out);
            out.push(b'"');
        }
        other => write_json_str(out, &other.to_text()),
    }
}

/// Appends `record` as a compact JSON object.
pub fn write_json_record(out: &mut Vec<u8>, record: &Record) {
    out.push(b'{');
    for (i, (key, value)) in record.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, key);
        out.push(b':');
        write_json(out, value);
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json escapes it: `"` and `\` with a
/// backslash, `\b \f \n \r \t` by name, other control characters as `\u00XX`, everything else (all
/// non-ASCII text included) as it is.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Fast path: skip eight bytes at a time while none of them needs escaping. (Sixteen at a time,
        // as a fold the compiler turns into vector compares, took more instructions: most strings here
        // are short, and text with quotes leaves the fast path often.)
        while i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if needs_escape(u64::from_le_bytes(word)) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else { break };
        let escape = JSON_ESCAPE[usize::from(b)];
        if escape == 0 {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xF)]);
            }
            named => out.extend_from_slice(&[b'\\', named]),
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// True if any of the eight bytes in `word` is a control character, `"` or `\` (SWAR: the classic
/// "has a zero byte" and "has a byte less than n" tests, exact as a yes/no answer for the whole word).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash != 0
}

/// For each byte: 0 if it stands for itself in a JSON string, the letter of its escape otherwise
/// (`u` for `\u00XX`).
static JSON_ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0A] = b'n';
    table[0x0C] = b'f';
    table[0x0D] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// An insertion-ordered map from field names to values.
///
/// Field order is the input's order (CSV and Markdown headers depend on it). Lookups scan linearly, which
/// beats hashing for the few dozen fields a record has.
///
/// ```
/// use ferry::{Record, Value};
/// let mut r = Record::new();
/// r.insert("b", Value::Int(2));
/// r.insert("a", Value::Int(1));
/// r.insert("b", Value::Int(3));
/// assert_eq!(r.keys().collect::<Vec<_>>(), ["b", "a"]);
/// assert_eq!(r.get("b"), Some(&Value::Int(3)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Record {
    fields: Vec<(Key, Value)>,
    /// The line of its input the record starts on, where the format has lines: decoders set it, so that
    /// an error of a later stage (map, validate, sink) can name the line too. Not part of its value.
    line: Option<std::num::NonZeroU64>,
}

/// Records are equal when their fields are: where they were read does not count.
impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

/// Builds a record field by field where a repeated name's last value wins, in the first one's place — in
/// time linear in the number of fields: past a few dozen fields, names are found through a hash index
/// rather than by a search of the record (a wide JSON object or XML element may have hundreds of thousands).
#[derive(Debug, Default)]
pub struct RecordBuilder {
    record: Record,
    index: Option<std::collections::HashMap<Key, usize>>,
}

impl RecordBuilder {
    /// Fields up to which a search beats a hash index.
    const SEARCHED: usize = 32;

    /// An empty builder with room for `n` fields.
    pub fn with_capacity(n: usize) -> RecordBuilder {
        RecordBuilder {
            record: Record::with_capacity(n),
            index: None,
        }
    }

    /// The number of fields so far.
    pub fn len(&self) -> usize {
        self.record.len()
    }

    /// True when there are no fields yet.
    pub fn is_empty(&self) -> bool {
        self.record.is_empty()
    }

    /// The position of `key`, if present.
    fn position(&mut self, key: &str) -> Option<usize> {
        if self.index.is_none() && self.record.len() > Self::SEARCHED {
            let index = self.record.fields.iter().enumerate();
            self.index = Some(index.map(|(i, (k, _))| (k.clone(), i)).collect());
        }
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.record.fields.iter().position(|(k, _)| &**k == key),
        }
    }

    /// Sets `key` to `value`, keeping the key's first position if it is already present.
    pub fn insert(&mut self, key: Key, value: Value) {
        match self.position(&key) {
            Some(i) => self.record.fields[i].1 = value,
            None => self.push_unchecked(key, value),
        }
    }

    /// Appends a field whose key the caller knows is not present yet.
    pub fn push_unchecked(&mut self, key: Key, value: Value) {
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.record.fields.len());
        }
        self.record.fields.push((key, value));
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let i = self.position(key)?;
        Some(&mut self.record.fields[i].1)
    }

    /// The record.
    pub fn finish(self) -> Record {
        self.record
    }
}

impl Record {
    /// An empty record.
    pub fn new() -> Record {
        Record::default()
    }

    /// An empty record with room for `n` fields.
    pub fn with_capacity(n: usize) -> Record {
        Record {
            fields: Vec::with_capacity(n),
            line: None,
        }
    }

    /// The line of its input the record starts on (1-based), when the decoder knows it.
    pub fn line(&self) -> Option<u64> {
        self.line.map(std::num::NonZeroU64::get)
    }

    /// Sets the line the record starts on (0 means unknown).
    pub fn set_line(&mut self, line: u64) {
        self.line = std::num::NonZeroU64::new(line);
    }

    /// Sets `key` to `value`, keeping the key's position if it is already present; returns the old value.
    pub fn insert(&mut self, key: impl Into<Key> + AsRef<str>, value: Value) -> Option<Value> {
        match self.fields.iter_mut().find(|(k, _)| **k == *key.as_ref()) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.fields.push((key.into(), value));
                None
            }
        }
    }

    /// Appends a field whose key the caller knows is not present yet (decoders with checked headers).
    pub fn push_unchecked(&mut self, key: Key, value: Value) {
        self.fields.push((key, value));
    }

    /// Sets field `index` of a record a decoder is refilling (see [`crate::format::Decoder::reuse`]; the
    /// fields before it are already set) to `text` under `key`. The text buffer there is overwritten when it
    /// holds the same key and not much more room than `text` needs, so nothing is allocated or freed;
    /// otherwise the field is replaced. Fields after the last one set are stale until `truncate` cuts them.
    pub(crate) fn refill_text(&mut self, index: usize, key: &Key, text: &str) {
        if let Some((held, Value::String(buffer))) = self.fields.get_mut(index) {
            if Arc::ptr_eq(held, key) && keeps_buffer(buffer.capacity(), text.len()) {
                buffer.clear();
                buffer.push_str(text);
                return;
            }
        }
        self.refill(index, key, Value::String(text_with_room(text)));
    }

    /// Sets field `index` of a record a decoder is refilling to `value` under `key` (see `refill_text`).
    pub(crate) fn refill(&mut self, index: usize, key: &Key, value: Value) {
        debug_assert!(index <= self.fields.len(), "fields before {index} are set");
        match self.fields.get_mut(index) {
            Some((held, slot)) if Arc::ptr_eq(held, key) => *slot = value,
            Some(field) => *field = (Arc::clone(key), value),
            None => self.fields.push((Arc::clone(key), value)),
        }
    }

    /// How many fields the record has room for without growing (a refilled record keeps its room).
    pub(crate) fn field_room(&self) -> usize {
        self.fields.capacity()
    }

    /// Keeps the first `len` fields (the rest of a refilled record's stale fields go).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.fields.truncate(len);
    }

    /// The value of the field at `index` (in field order).
    pub fn value_at(&self, index: usize) -> Option<&Value> {
        self.fields.get(index).map(|(_, v)| v)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// The value of `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.fields
            .iter_mut()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(k, _)| &**k == key)?;
        Some(self.fields.remove(i).1)
    }

    /// True if the record has `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Key, &Value)> {
        self.fields.iter().map(|(k, v)| (k, v))
    }

    /// The field names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.fields.iter().map(|(k, _)| &**k)
    }

    /// The values in order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.fields.iter().map(|(_, v)| v)
    }

    /// Consumes the record, yielding its fields in order.
    pub fn into_fields(self) -> Vec<(Key, Value)> {
        self.fields
    }
}

impl FromIterator<(Key, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (Key, Value)>>(iter: I) -> Record {
        let mut record = Record::new();
        for (k, v) in iter {
            record.insert(k, v);
        }
        record
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

/// Generic serde form, used for YAML and reports: decimals, bytes, dates and timestamps become their text
/// form (a YAML number could not keep every decimal digit). JSON output uses [`write_json`] instead.
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(x) => serializer.serialize_f64(*x),
            Value::String(s) => serializer.serialize_str(s),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(record) => record.serialize(serializer),
            other => serializer.serialize_str(&other.to_text()),
        }
    }
}

/// serde_json's private marker for a number kept as text under its `arbitrary_precision` feature. A unit
/// test below fails loudly should serde_json ever change it.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// How the exponents of a JSON input's numbers were spelled. serde_json hands a number's text over with its
/// exponent rewritten (`1E3` and `1e3` both become `1e+3`); a JSON decoder that scans its input for the
/// spellings ([`crate::format`]) queues them here, on its own thread, and [`number_from_text`] puts them
/// back, so `1e3` is written out as `1e3`.
pub(crate) mod exponents {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// One exponent as written: `E` rather than `e`, and an explicit sign.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Spelling {
        /// `E` rather than `e`.
        pub upper: bool,
        /// A sign was written (`e+3`, `e-3`).
        pub signed: bool,
    }

    thread_local! {
        static QUEUE: RefCell<Option<VecDeque<Spelling>>> = const { RefCell::new(None) };
        static SEEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Starts queueing on this thread (the spellings of what is parsed next).
    pub fn start() {
        QUEUE.with(|q| *q.borrow_mut() = Some(VecDeque::new()));
    }

    /// Stops queueing on this thread.
    pub fn stop() {
        QUEUE.with(|q| *q.borrow_mut() = None);
    }

    /// Queues the next exponent's spelling.
    pub fn push(spelling: Spelling) {
        QUEUE.with(|q| {
            if let Some(q) = q.borrow_mut().as_mut() {
                q.push_back(spelling);
            }
        });
    }

    /// True once a number with an exponent was read on this thread while nothing queued (then the input
    /// should be scanned and read again); clears the flag.
    pub fn take_seen() -> bool {
        SEEN.with(|s| s.replace(false))
    }

    /// serde_json's text of a number with an exponent, spelled as the input spelled it.
    pub(super) fn respell(text: &str) -> Option<String> {
        let spelling = QUEUE.with(|q| q.borrow_mut().as_mut().map(VecDeque::pop_front));
        let Some(Some(spelling)) = spelling else {
            SEEN.with(|s| s.set(true));
            return None;
        };
        let i = text.find('e')?;
        let (mantissa, rest) = (&text[..i], &text[i + 1..]);
        let exponent = if spelling.signed {
            rest
        } else {
            rest.strip_prefix('+').unwrap_or(rest)
        };
        let e = if spelling.upper { "E" } else { "e" };
        Some(format!("{mantissa}{e}{exponent}"))
    }
}

/// Classifies the exact text of a JSON/YAML number: integers that fit in i64 are `Int`, numbers that a
/// float prints back identically are `Float`, everything else (1.10, 1e400, 2^70) is an exact `Decimal`.
pub fn number_from_text(text: &str) -> Option<Value> {
    if text.contains('e') {
        if let Some(respelled) = exponents::respell(text) {
            return classify_number(&respelled);
        }
    }
    classify_number(text)
}

fn classify_number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::Int(i));
    }
    if let Ok(x) = text.parse::<f64>() {
        if x.is_finite() && ryu::Buffer::new().format_finite(x) == text {
            return Some(Value::Float(x));
        }
    }
    Decimal::parse(text).map(Value::Decimal)
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Builds a [`Value`] from any serde data model (also used by the YAML codec's document visitor).
pub(crate) struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(Decimal(u.to_string()))))
    }
    fn visit_i128<E>(self, i: i128) -> Result<Value, E> {
        // YAML integers beyond 64 bits arrive here (serde_yaml); JSON's go through the number token.
        Ok(i64::try_from(i)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(Decimal(i.to_string()))))
    }
    fn visit_u128<E>(self, u: u128) -> Result<Value, E> {
        Ok(i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(Decimal(u.to_string()))))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
        Ok(Value::Float(x))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(b.to_vec()))
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(Value::Object(Record::new()));
        };
        if &*first == JSON_NUMBER_TOKEN {
            let text: String = map.next_value()?;
            return number_from_text(&text)
                .ok_or_else(|| de::Error::custom(format!("invalid number {text}")));
        }
        let mut record = RecordBuilder::with_capacity(map.size_hint().unwrap_or(8).min(256));
        record.push_unchecked(first, map.next_value()?);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // Duplicate keys: the last one wins, as in JSON.parse and serde_json.
            record.insert(key, map.next_value()?);
            if record.len() > crate::format::limit::MAX_FIELDS {
                return Err(de::Error::custom(crate::format::limit::too_many_fields()));
            }
        }
        Ok(Value::Object(record.finish()))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // YAML tags (`!foo value`) arrive as enums; the tag is dropped and the value kept, as in JSON.
        use serde::de::VariantAccess as _;
        let (_tag, variant): (de::IgnoredAny, _) = data.variant()?;
        variant.newtype_variant()
    }
}

/// Map keys: strings as they are; YAML's scalar keys (numbers, booleans, null) as their text.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or scalar map key")
    }
    fn visit_str<E>(self, s: &str) -> Result<Key, E> {
        Ok(Key::from(s))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Key, E> {
        Ok(Key::from(if b { "true" } else { "false" }))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Key, E> {
        Ok(Key::from(i.to_string()))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Key, E> {
        Ok(Key::from(u.to_string()))
    }
    fn visit_i128<E>(self, i: i128) -> Result<Key, E> {
        Ok(Key::from(i.to_string()))
    }
    fn visit_u128<E>(self, u: u128) -> Result<Key, E> {
        Ok(Key::from(u.to_string()))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Key, E> {
        Ok(Key::from(Value::Float(x).to_text()))
    }
    fn visit_unit<E>(self) -> Result<Key, E> {
        Ok(Key::from("null"))
    }
    fn visit_none<E>(self) -> Result<Key, E> {
        Ok(Key::from("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_refilled_text_keeps_its_buffer_for_texts_of_about_its_length_and_no_more_room_than_it_needs(
    ) {
        let key = Key::from("body");
        let buffer = |record: &Record| match record.value_at(0) {
            Some(Value::String(s)) => (s.as_ptr(), s.capacity()),
            other => panic!("{other:?}"),
        };
        let mut record = Record::new();
        record.refill_text(0, &key, &"x".repeat(100));
        let (first, _) = buffer(&record);
        // Texts from about a quarter of the room up to all of it are written into the same buffer.
        for len in [60, 100, 30, 99] {
            record.refill_text(0, &key, &"y".repeat(len));
            assert_eq!(buffer(&record).0, first, "{len} bytes");
            assert_eq!(record.value_at(0), Some(&Value::String("y".repeat(len))));
        }
        // A longer text gets a buffer of its own.
        record.refill_text(0, &key, &"z".repeat(1000));
        assert_eq!(record.value_at(0), Some(&Value::String("z".repeat(1000))));
        // As does a text much shorter than the room: memory follows the text held.
        record.refill_text(0, &key, "short");
        assert!(buffer(&record).1 < 64, "{}", buffer(&record).1);
        assert_eq!(record.value_at(0), Some(&Value::String("short".into())));
    }

    #[test]
    fn identical_values_are_equal_to_the_bit() {
        let object = |v: Value| Value::Object([(Key::from("a"), v)].into_iter().collect());
        let same = [
            Value::Float(f64::NAN),
            Value::Float(0.5),
            Value::String("x".into()),
            Value::Array(vec![Value::Int(1), Value::Float(-0.0)]),
            object(Value::Float(-0.0)),
        ];
        for value in &same {
            assert!(value.identical(&value.clone()), "{value:?}");
        }
        let differ = [
            (Value::Float(0.0), Value::Float(-0.0)),
            (Value::Int(1), Value::Float(1.0)),
            (
                Value::Array(vec![Value::Float(0.0)]),
                Value::Array(vec![Value::Float(-0.0)]),
            ),
            (object(Value::Float(0.0)), object(Value::Float(-0.0))),
            (object(Value::Int(1)), Value::Object(Record::new())),
        ];
        for (a, b) in &differ {
            assert!(!a.identical(b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_new_text_buffer_has_the_room_of_its_allocation_size_class() {
        let cases = [
            (0, 0),
            (1, 8),
            (8, 8),
            (9, 16),
            (16, 16),
            (17, 32),
            (128, 128),
            (129, 160),
            (200, 224),
            (256, 256),
            (257, 320),
            (1000, 1024),
            (1025, 1280),
        ];
        for (len, room) in cases {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let copy = text_with_room(&text);
            assert_eq!(copy, text);
            assert_eq!(copy.capacity(), room, "{len} bytes");
        }
    }

    #[test]
    fn timestamps_and_dates_are_written_as_chrono_writes_them() {
        // The hand-written digits must give chrono's text exactly, fraction widths and offsets included.
        let utc = FixedOffset::east_opt(0);
        let plus = FixedOffset::east_opt(5 * 3600 + 30 * 60);
        let dates = [
            (0, 1, 1),
            (9, 2, 28),
            (1999, 12, 31),
            (2024, 2, 29),
            (9999, 12, 31),
        ];
        let times = [
            (0, 0, 0, 0),
            (23, 59, 59, 0),
            (7, 5, 3, 120_000_000),
            (1, 2, 3, 4_000),
        ];
        let times = times
            .into_iter()
            .chain([(12, 0, 1, 123_456_789), (12, 0, 1, 999_999_999)]);
        let times: Vec<_> = times.collect();
        for (y, m, d) in dates {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(
                Value::Date(date).to_text(),
                date.format("%Y-%m-%d").to_string()
            );
            for &(h, mi, s, n) in &times {
                let datetime = date.and_hms_nano_opt(h, mi, s, n).unwrap();
                let naive = datetime.format("%Y-%m-%dT%H:%M:%S%.f").to_string();
                for (offset, suffix) in [
                    (None, String::new()),
                    (utc, "Z".into()),
                    (plus, "+05:30".into()),
                ] {
                    let timestamp = Timestamp { datetime, offset };
                    let text = timestamp.to_string();
                    assert_eq!(text, format!("{naive}{suffix}"));
                    let mut json = Vec::new();
                    write_json(&mut json, &Value::Timestamp(timestamp));
                    assert_eq!(json, format!("\"{text}\"").into_bytes());
                }
            }
        }
        // Outside 0..=9999 and on a leap second, chrono writes it (and the date only once).
        let far = NaiveDate::from_ymd_opt(12345, 1, 2)
            .unwrap()
            .and_hms_opt(3, 4, 5)
            .unwrap();
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_milli_opt(23, 59, 59, 1500)
            .unwrap();
        for datetime in [far, leap] {
            let text = Timestamp {
                datetime,
                offset: None,
            }
            .to_string();
            assert_eq!(text, datetime.format("%Y-%m-%dT%H:%M:%S%.f").to_string());
            for offset in [None, FixedOffset::east_opt(0), FixedOffset::east_opt(-3600)] {
                let timestamp = Timestamp { datetime, offset };
                let mut json = Vec::new();
                write_json(&mut json, &Value::Timestamp(timestamp));
                assert_eq!(json, format!("\"{timestamp}\"").into_bytes());
            }
        }
    }

    #[test]
    fn a_line_is_where_a_record_was_read_not_part_of_it() {
        let mut a = Record::new();
        a.insert("x", Value::Int(1));
        let mut b = a.clone();
        b.set_line(7);
        assert_eq!((a.line(), b.line()), (None, Some(7)));
        assert_eq!(a, b);
        // Carrying the line makes no value larger.
        assert_eq!(std::mem::size_of::<Value>(), 32);
    }

    #[test]
    fn json_numbers_keep_their_exact_text() {
        assert_eq!(json("1"), Value::Int(1));
        assert_eq!(json("1.5"), Value::Float(1.5));
        assert_eq!(json("1.10"), Value::Decimal(Decimal("1.10".into())));
        assert_eq!(
            json("123456789012345678901234567890"),
            Value::Decimal(Decimal("123456789012345678901234567890".into()))
        );
        // serde_json spells the exponent with its sign; the value is the same, exactly.
        assert_eq!(json("1e400"), Value::Decimal(Decimal("1e+400".into())));
    }

    #[test]
    fn serde_json_number_token_is_still_the_one_we_expect() {
        // If serde_json renamed its private token, a decimal would decode as an object: fail here first.
        assert!(matches!(json("[0.10]"), Value::Array(v) if matches!(v[0], Value::Decimal(_))));
    }

    #[test]
    fn objects_keep_order_and_last_duplicate_wins() {
        let Value::Object(r) = json(r#"{"z":1,"a":2,"z":3}"#) else {
            panic!("not an object")
        };
        assert_eq!(r.keys().collect::<Vec<_>>(), ["z", "a"]);
        assert_eq!(r.get("z"), Some(&Value::Int(3)));
    }

    #[test]
    fn json_writer_round_trips_every_type_as_text() {
        let mut r = Record::new();
        r.insert("d", Value::Decimal(Decimal::parse("0.10").unwrap()));
        r.insert("s", Value::String("a\"b\n".into()));
        r.insert("n", Value::Null);
        r.insert("nan", Value::Float(f64::NAN));
        let mut out = Vec::new();
        write_json_record(&mut out, &r);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"d":0.10,"s":"a\"b\n","n":null,"nan":"NaN"}"#
        );
    }

    #[test]
    fn timestamps_keep_offsets_and_fractions() {
        for text in [
            "2024-05-01T10:00:00.123456789+05:30",
            "2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.120Z",
            "2024-05-01T10:00:00.000001-08:00",
            "0001-01-01T00:00:00",
        ] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Timestamp::parse("2024-05-01 10:00:00").unwrap().to_string(),
            "2024-05-01T10:00:00"
        );
    }

    #[test]
    fn decimal_grammar() {
        for ok in ["0", "-1", "1.", ".5", "1.50", "1e10", "2E-3", "+7"] {
            assert!(Decimal::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", ".", "-", "1e", "e1", "1.2.3", "abc", "1,5", "--1"] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn json_strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut texts: Vec<String> = (0u8..=127).map(|b| char::from(b).to_string()).collect();
        texts.extend(
            [
                "",
                "plain ascii, longer than eight bytes",
                "Zürich 東京 🚀 \u{7f}\u{80}\u{2028}",
                "a\"b\\c\nd\re\tf\u{8}\u{c}\u{1}\u{1f}",
                "12345678\"12345678\\",
            ]
            .map(String::from),
        );
        // Every escape at every offset of the eight-byte fast path, several words in.
        for i in 0..41 {
            for special in ["\"", "\\", "\n", "\u{0}", "\u{1f}", "é", "\u{7f}"] {
                texts.push(format!("{}{special}{}", "x".repeat(i), "y".repeat(40 - i)));
            }
        }
        for text in texts {
            let mut ours = Vec::new();
            write_json_str(&mut ours, &text);
            assert_eq!(ours, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }
}
