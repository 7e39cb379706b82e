//! Type inference, beside the pipeline: what a sample of records says about their fields — the union of
//! their names (in the order they first appear) and, for each, the narrowest type every value fits:
//! boolean, integer, decimal, number, date, datetime, JSON, bytes, else text. A table ferry creates takes
//! its columns from it, the CSV and Markdown writers take their header from it, and `ferry describe`
//! reports it with null counts and the smallest and largest value.
//!
//! Text from a text-only format (CSV, TSV, Markdown, XML) is read like DuckDB's `read_csv` does: `42` is an
//! integer, `1.50` a decimal, `true` a boolean, `2024-05-01` a date, `2024-05-01T10:00:00Z` a datetime, a JSON
//! array or object JSON; an empty cell says nothing; a column with any other text is text. A value with a
//! leading zero (`08123`) or a sign (`+5`) is text, so codes keep their digits. From typed formats (JSON,
//! YAML, databases) a value's own type counts — text is text — and for a table's columns the first kind
//! seen wins over a stray value of another kind (a string among integers), which then fails its own
//! record rather than turn the column into text.
//!
//! The sample is the first [`DEFAULT_SAMPLE_RECORDS`] records (`--sample-records`), at most
//! [`SAMPLE_BYTES`] of their text. A later value that does not fit its column's type is an error for its own
//! record, naming the column and the `--types` override; types are never widened after the sample, so a
//! table is created once, in the load's transaction, and the all-or-nothing guarantee holds.

use std::collections::HashMap;

use serde::Serialize;

use crate::record::{Key, NumberParts, Record, Timestamp, Value};

/// Records a sample holds by default (`--sample-records`).
pub const DEFAULT_SAMPLE_RECORDS: usize = 4096;

/// The most text a sample holds, whatever its record count: a sample of wide records stops earlier.
pub const SAMPLE_BYTES: usize = 16 << 20;

/// The union of the records' field names, in the order they first appear.
pub fn field_union(records: &[Record]) -> Vec<Key> {
    let mut names: Vec<Key> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for record in records {
        for (key, _) in record.iter() {
            if seen.insert(key) {
                names.push(key.clone());
            }
        }
    }
    names
}

/// The first records of an output whose header they fix (CSV, Markdown): held until there are
/// `limit` of them or [`SAMPLE_BYTES`] of their text, or the output ends.
#[derive(Debug)]
pub struct HeaderSample {
    held: Vec<Record>,
    bytes: usize,
    limit: usize,
}

impl HeaderSample {
    /// A sample of at most `limit` records.
    pub fn new(limit: usize) -> HeaderSample {
        HeaderSample {
            held: Vec::new(),
            bytes: 0,
            limit: limit.max(1),
        }
    }

    /// Holds `record`; true once the sample is full.
    pub fn push(&mut self, record: &Record) -> bool {
        self.bytes += record
            .iter()
            .map(|(k, v)| k.len() + v.to_text().len())
            .sum::<usize>();
        self.held.push(record.clone());
        self.held.len() >= self.limit || self.bytes >= SAMPLE_BYTES
    }

    /// The header (the union of the held records' fields) and the held records.
    pub fn take(&mut self) -> (Vec<Key>, Vec<Record>) {
        let held = std::mem::take(&mut self.held);
        (field_union(&held), held)
    }
}

/// A field's inferred type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// true or false.
    Boolean,
    /// A 64-bit integer.
    Integer,
    /// An exact decimal (or an integer beyond 64 bits).
    Decimal,
    /// A binary floating-point number.
    Number,
    /// A calendar date.
    Date,
    /// A date and time (`datetime`, or `timestamp` when no value had an offset).
    Datetime {
        /// Every value had a UTC offset.
        zoned: bool,
    },
    /// A JSON array or object.
    Json,
    /// Raw bytes.
    Bytes,
    /// Anything else.
    Text,
}

impl Kind {
    /// The type's name, as `--types`, templates and `ferry describe` spell it (`timestamp` is a date and
    /// time without an offset).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Decimal => "decimal",
            Kind::Number => "number",
            Kind::Date => "date",
            Kind::Datetime { zoned: true } => "datetime",
            Kind::Datetime { zoned: false } => "timestamp",
            Kind::Json => "json",
            Kind::Bytes => "bytes",
            Kind::Text => "string",
        }
    }

    /// The narrowest type both `self` and `other` fit.
    pub fn join(self, other: Kind) -> Kind {
        use Kind::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Integer, Decimal) | (Decimal, Integer) => Decimal,
            (Integer | Number, Number) | (Number, Integer) => Number,
            (Decimal, Number) | (Number, Decimal) => Decimal,
            (Date, Datetime { zoned }) | (Datetime { zoned }, Date) => Datetime { zoned },
            (Datetime { .. }, Datetime { .. }) => Datetime { zoned: true },
            _ => Text,
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Kind {
    type Err = String;

    /// A type name as `--types` takes it: the template types (string, integer, number, decimal, boolean,
    /// date, datetime, array, object, bytes), `json`, and the common SQL spellings (text, int, bigint,
    /// float, double, numeric, bool, timestamp, timestamptz, jsonb, bytea).
    fn from_str(text: &str) -> Result<Kind, String> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" => Kind::Text,
            "integer" | "int" | "bigint" => Kind::Integer,
            "number" | "float" | "double" | "real" => Kind::Number,
            "decimal" | "numeric" => Kind::Decimal,
            "boolean" | "bool" => Kind::Boolean,
            "date" => Kind::Date,
            "datetime" | "timestamptz" | "timestamp with time zone" => {
                Kind::Datetime { zoned: true }
            }
            "timestamp" => Kind::Datetime { zoned: false },
            "json" | "jsonb" | "array" | "object" => Kind::Json,
            "bytes" | "bytea" | "blob" => Kind::Bytes,
            other => {
                return Err(format!(
                    "unknown type {other:?}; use string, integer, number, decimal, boolean, date, \
                     datetime, json or bytes"
                ))
            }
        })
    }
}

/// Parses `--types id=integer,price=decimal` into (field, type) pairs.
pub fn parse_types(text: &str) -> Result<Vec<(String, Kind)>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let (name, kind) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected FIELD=TYPE (e.g. id=integer)"))?;
            Ok((name.trim().to_owned(), kind.parse()?))
        })
        .collect()
}

/// What the values of one field were.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldStats {
    /// The field's name.
    pub name: String,
    /// The inferred type; `None` when no value said anything (all null or empty): `"null"` in JSON.
    #[serde(rename = "type", serialize_with = "kind_name")]
    pub kind: Option<Kind>,
    /// Values that were there (not null, not an empty cell of a text format).
    pub values: u64,
    /// Records without a value: null, an empty cell of a text format, or no such field.
    pub nulls: u64,
    /// The smallest value, in text form (numbers compared as numbers, text as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// The largest value, in text form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    #[serde(skip)]
    numbers: Option<(f64, String, f64, String)>,
    #[serde(skip)]
    texts: Option<(String, String)>,
}

fn kind_name<S: serde::Serializer>(kind: &Option<Kind>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.map_or("null", Kind::name))
}

impl FieldStats {
    /// The type a column for this field gets: the inferred one, text when nothing said.
    pub fn column_kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Text)
    }
}

/// Builds [`FieldStats`] for every field from records, one at a time, in constant memory per field.
#[derive(Debug, Clone, Default)]
pub struct Inference {
    fields: Vec<FieldStats>,
    index: HashMap<Key, usize>,
    records: u64,
    /// Text from a text-only format: numbers, booleans and JSON are read from it.
    text_source: bool,
    /// Keep the smallest and largest values (for `ferry describe`).
    extremes: bool,
    /// A value that does not fit the kind so far does not widen it to text (a table's column: the value
    /// is the error, not the column).
    first_kind_wins: bool,
}

impl Inference {
    /// An empty inference; `text_source` when the records come from a text-only format.
    pub fn new(text_source: bool) -> Inference {
        Inference {
            text_source,
            ..Inference::default()
        }
    }

    /// For typed values (JSON, YAML, databases): a value of another kind than the field's so far (a string
    /// among integers) does not make the field text; it will not fit the column and fails its own record.
    /// Numbers still widen (integer → decimal → number) and dates to datetimes.
    pub fn first_kind_wins(mut self) -> Inference {
        self.first_kind_wins = true;
        self
    }

    /// Also keeps each field's smallest and largest value.
    pub fn with_extremes(mut self) -> Inference {
        self.extremes = true;
        self
    }

    /// Records seen.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Takes one record into account.
    pub fn add(&mut self, record: &Record) {
        self.records += 1;
        for (key, value) in record.iter() {
            let i = match self.index.get(key) {
                Some(i) => *i,
                None => {
                    self.fields.push(FieldStats {
                        name: key.to_string(),
                        // Records before this one had no such field.
                        nulls: self.records - 1,
                        ..FieldStats::default()
                    });
                    self.index.insert(key.clone(), self.fields.len() - 1);
                    self.fields.len() - 1
                }
            };
            let text_source = self.text_source;
            let extremes = self.extremes;
            let first_wins = self.first_kind_wins;
            let stats = &mut self.fields[i];
            match kind_of(value, text_source) {
                None => stats.nulls += 1,
                Some(kind) => {
                    stats.values += 1;
                    stats.kind = Some(match stats.kind {
                        None => kind,
                        Some(k) if first_wins && k != Kind::Text && k.join(kind) == Kind::Text => k,
                        Some(k) => k.join(kind),
                    });
                    if extremes {
                        note_extremes(stats, value);
                    }
                }
            }
        }
        // Fields this record lacks count as null for it.
        if record.len() < self.fields.len() {
            for stats in &mut self.fields {
                if !record.contains_key(&stats.name) {
                    stats.nulls += 1;
                }
            }
        }
    }

    /// The fields, in the order they first appeared, with their types (and extremes).
    pub fn fields(&self) -> Vec<FieldStats> {
        self.fields
            .iter()
            .cloned()
            .map(|mut f| {
                let numeric = matches!(f.kind, Some(Kind::Integer | Kind::Decimal | Kind::Number));
                match (&f.numbers, &f.texts) {
                    (Some((_, lo, _, hi)), _) if numeric => {
                        f.min = Some(lo.clone());
                        f.max = Some(hi.clone());
                    }
                    (_, Some((lo, hi))) => {
                        f.min = Some(lo.clone());
                        f.max = Some(hi.clone());
                    }
                    _ => {}
                }
                f
            })
            .collect()
    }

    /// The field names, in the order they first appeared.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }

    /// The inferred type of `field`, if it had a value.
    pub fn kind(&self, field: &str) -> Option<Kind> {
        self.fields.iter().find(|f| f.name == field)?.kind
    }
}

fn note_extremes(stats: &mut FieldStats, value: &Value) {
    if value.is_nested() {
        return;
    }
    let text = value.to_text();
    let number = match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        Value::Decimal(d) => d.as_str().parse().ok(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    };
    if let Some(x) = number {
        let entry = stats
            .numbers
            .get_or_insert_with(|| (x, text.clone(), x, text.clone()));
        if x < entry.0 {
            *entry = (x, text.clone(), entry.2, entry.3.clone());
        }
        if x > entry.2 {
            entry.2 = x;
            entry.3 = text.clone();
        }
    }
    let entry = stats
        .texts
        .get_or_insert_with(|| (text.clone(), text.clone()));
    if text < entry.0 {
        entry.0 = text.clone();
    }
    if text > entry.1 {
        entry.1 = text;
    }
}

/// The type one value says its field has; `None` for no value (null, or an empty cell of a text format).
pub fn kind_of(value: &Value, text_source: bool) -> Option<Kind> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => Kind::Boolean,
        Value::Int(_) => Kind::Integer,
        Value::Float(_) => Kind::Number,
        Value::Decimal(_) => Kind::Decimal,
        Value::Bytes(_) => Kind::Bytes,
        Value::Date(_) => Kind::Date,
        Value::Timestamp(t) => Kind::Datetime {
            zoned: t.offset.is_some(),
        },
        Value::Array(_) | Value::Object(_) => Kind::Json,
        Value::String(s) if text_source && s.is_empty() => return None,
        Value::String(s) if text_source => kind_of_text(s),
        // From a typed format, text is text: `"2024-01-01"` in JSON was written as a string.
        Value::String(_) => Kind::Text,
    })
}

/// What a cell of a text-only format holds.
pub fn kind_of_text(text: &str) -> Kind {
    if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
        return Kind::Boolean;
    }
    if let Some(kind) = number_kind(text) {
        return kind;
    }
    if let Some(kind) = time_kind(text) {
        return kind;
    }
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return Kind::Json;
    }
    Kind::Text
}

/// `-?(0|[1-9][0-9]*)` is an integer (a decimal beyond 64 bits), with `.[0-9]+` a decimal, with an exponent
/// a number. No leading zero, no `+`, no bare dot: `08123`, `+5`, `1.`, `.5` and ` 7` are text.
fn number_kind(text: &str) -> Option<Kind> {
    let parts = NumberParts::of(text)?;
    let int_ok = !parts.int.is_empty() && (parts.int == "0" || !parts.int.starts_with('0'));
    let frac_ok = parts.frac.is_none_or(|f| !f.is_empty());
    if parts.sign == Some('+') || !int_ok || !frac_ok {
        return None;
    }
    Some(match (parts.frac, parts.exp) {
        (_, Some(_)) => Kind::Number,
        (Some(_), None) => Kind::Decimal,
        (None, None) if text.parse::<i64>().is_ok() => Kind::Integer,
        (None, None) => Kind::Decimal,
    })
}

/// `YYYY-MM-DD` is a date; a date with a time (`T` or a space, optional fraction and offset) a datetime.
fn time_kind(text: &str) -> Option<Kind> {
    let bytes = text.as_bytes();
    if bytes.len() < 10 || !bytes[0].is_ascii_digit() || bytes[4] != b'-' {
        return None;
    }
    if bytes.len() == 10 {
        return chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .map(|_| Kind::Date);
    }
    Timestamp::parse(text).map(|t| Kind::Datetime {
        zoned: t.offset.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Option<Kind> {
        kind_of(&Value::String(s.into()), true)
    }

    #[test]
    fn text_cells_are_read_like_read_csv_reads_them() {
        assert_eq!(text("42"), Some(Kind::Integer));
        assert_eq!(text("-7"), Some(Kind::Integer));
        assert_eq!(text("0"), Some(Kind::Integer));
        assert_eq!(text("99999999999999999999"), Some(Kind::Decimal));
        assert_eq!(text("1.50"), Some(Kind::Decimal));
        assert_eq!(text("1e3"), Some(Kind::Number));
        assert_eq!(text("TRUE"), Some(Kind::Boolean));
        assert_eq!(text("2024-02-29"), Some(Kind::Date));
        assert_eq!(text("2024-02-30"), Some(Kind::Text));
        assert_eq!(
            text("2024-05-01T10:00:00Z"),
            Some(Kind::Datetime { zoned: true })
        );
        assert_eq!(
            text("2024-05-01 10:00:00"),
            Some(Kind::Datetime { zoned: false })
        );
        assert_eq!(text("{\"a\": 1}"), Some(Kind::Json));
        assert_eq!(text(""), None);
        for code in [
            "08123",
            "+5",
            " 7",
            "1.",
            ".5",
            "1,5",
            "yes",
            "0x1F",
            "[not json",
        ] {
            assert_eq!(text(code), Some(Kind::Text), "{code}");
        }
        // From a typed format, text stays text.
        assert_eq!(
            kind_of(&Value::String("42".into()), false),
            Some(Kind::Text)
        );
        assert_eq!(
            kind_of(&Value::String("2024-01-01".into()), false),
            Some(Kind::Text)
        );
        let mut typed = Inference::new(false).first_kind_wins();
        for v in [Value::Int(1), Value::String("x".into()), Value::Float(1.5)] {
            typed.add(&Record::from_iter([(Key::from("n"), v)]));
        }
        assert_eq!(typed.kind("n"), Some(Kind::Number));
    }

    #[test]
    fn types_widen_and_fields_are_unioned_in_order() {
        let mut inference = Inference::new(true).with_extremes();
        let rows = [
            vec![("id", "1"), ("price", "1.5"), ("when", "2024-01-01")],
            vec![
                ("id", "2"),
                ("price", "3"),
                ("extra", "x"),
                ("when", "2024-01-02T10:00:00"),
            ],
            vec![("id", ""), ("price", "10")],
        ];
        for row in rows {
            let record: Record = row
                .into_iter()
                .map(|(k, v)| (Key::from(k), Value::String(v.into())))
                .collect();
            inference.add(&record);
        }
        let fields = inference.fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["id", "price", "when", "extra"]);
        assert_eq!(fields[0].kind, Some(Kind::Integer));
        assert_eq!(fields[0].nulls, 1);
        assert_eq!(fields[1].kind, Some(Kind::Decimal));
        assert_eq!(
            (fields[1].min.as_deref(), fields[1].max.as_deref()),
            (Some("1.5"), Some("10"))
        );
        assert_eq!(fields[2].kind, Some(Kind::Datetime { zoned: false }));
        assert_eq!(fields[3].kind, Some(Kind::Text));
        assert_eq!(fields[3].nulls, 2);
    }

    #[test]
    fn types_parse_from_their_names() {
        assert_eq!(
            parse_types("id=integer, price=numeric,at=timestamp").unwrap(),
            [
                ("id".to_owned(), Kind::Integer),
                ("price".to_owned(), Kind::Decimal),
                ("at".to_owned(), Kind::Datetime { zoned: false })
            ]
        );
        assert!(parse_types("id").is_err());
        assert!(parse_types("id=money").is_err());
    }
}
