//! The map stage's built-in transforms: one table, each entry parsed and checked once when a template is
//! loaded, then applied per value without further checks.
//!
//! In a template a transform is either a bare name (`trim`) or a one-key map from the name to its arguments
//! (`split: {separators: [";", ","]}`, `truncate: 80`).

use std::fmt::Write as _;
use std::str::FromStr as _;

use chrono::{FixedOffset, NaiveDate};
use sha2::Digest as _;

use super::functions::{name_part, round_decimal, NamePart};
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
        separators: Separators,
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
    /// Replaces a value by the one a table gives for its text; unlisted values take the default, or are
    /// an error when there is none.
    Map {
        values: Vec<(String, Value)>,
        default: Option<Value>,
    },
    /// Reads a number written for people: grouping separators, a decimal comma, currency signs or codes,
    /// a percent sign (which divides by 100), accounting parentheses for negatives; gives an exact decimal.
    ParseNumber { decimal: char },
    /// Rounds a number to `places` decimals (negative: tens, hundreds), exactly for decimals.
    Round {
        places: i64,
        mode: bigdecimal::RoundingMode,
    },
    /// One part of a person's full name.
    NamePart(NamePart),
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
    "map",
    "parse_number",
    "round",
    "floor",
    "ceil",
    "name_part",
];

/// A transform, the arguments it takes by name, the one a single value stands for, and the one a list
/// stands for.
type ArgumentNames = (
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Option<&'static str>,
);

/// The arguments each transform takes by name, the one a single value stands for, and the one a list
/// stands for. A transform not listed takes no arguments, or (`map`, `default_if_empty`) reads its own.
const ARGUMENTS: &[ArgumentNames] = &[
    (
        "split",
        &["separator", "separators", "trim", "drop_empty"],
        Some("separator"),
        Some("separators"),
    ),
    ("join", &["separator"], Some("separator"), None),
    ("replace", &["from", "to"], None, None),
    ("regex_replace", &["pattern", "replacement"], None, None),
    (
        "parse_date",
        &["format", "formats", "timezone"],
        Some("format"),
        Some("formats"),
    ),
    ("format_date", &["format"], Some("format"), None),
    ("null_if", &["values"], Some("values"), Some("values")),
    ("truncate", &["length"], Some("length"), None),
    ("hash", &["algorithm"], Some("algorithm"), None),
    ("redact", &["marker"], Some("marker"), None),
    ("parse_number", &["decimal"], Some("decimal"), None),
    ("round", &["places"], Some("places"), None),
    ("floor", &["places"], Some("places"), None),
    ("ceil", &["places"], Some("places"), None),
    ("name_part", &["part"], Some("part"), None),
];

/// A transform's arguments as a mapping from name to value, checked against the names it takes: an
/// argument it does not know is an error, never ignored (`split: {sep: ";"}` would split on commas).
fn named_arguments(name: &str, args: &Args) -> Result<serde_yaml::Mapping, String> {
    let Some((_, keys, scalar, list)) = ARGUMENTS.iter().find(|(n, ..)| *n == name) else {
        return Ok(serde_yaml::Mapping::new());
    };
    let takes = || keys.join(", ");
    let mut map = serde_yaml::Mapping::new();
    match args {
        Args::Null => {}
        Args::Mapping(m) => {
            for (key, value) in m {
                let key_text = key.as_str().unwrap_or_default();
                if !keys.contains(&key_text) {
                    return Err(format!(
                        "unknown argument {:?}; {name} takes {}",
                        yaml_text(key),
                        takes()
                    ));
                }
                map.insert(key.clone(), value.clone());
            }
        }
        Args::Sequence(_) => match list {
            Some(key) => {
                map.insert(Args::from(*key), args.clone());
            }
            None => return Err(format!("{name} takes {}, not a list", takes())),
        },
        scalar_value => match scalar {
            Some(key) => {
                map.insert(Args::from(*key), scalar_value.clone());
            }
            None => {
                return Err(format!(
                    "{name} takes {} by name (`{name}: {{{}: …}}`)",
                    takes(),
                    keys[0]
                ))
            }
        },
    }
    Ok(map)
}

/// A YAML scalar's text, for messages and value maps.
fn yaml_text(value: &Args) -> String {
    match value {
        Args::String(s) => s.clone(),
        Args::Null => "null".to_owned(),
        Args::Bool(b) => b.to_string(),
        Args::Number(n) => n.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

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
        let named = named_arguments(name, &args)?;
        let named = Args::Mapping(named);
        match name {
            "trim" => no_args(Transform::Trim),
            "lowercase" => no_args(Transform::Lowercase),
            "uppercase" => no_args(Transform::Uppercase),
            "split" => parse_split(&named),
            "join" => Ok(Transform::Join {
                separator: opt_str(&named, "separator")?.unwrap_or_else(|| ",".into()),
            }),
            "replace" => Ok(Transform::Replace {
                from: req_str(&named, "from")?,
                to: opt_str(&named, "to")?.unwrap_or_default(),
            }),
            "regex_replace" => {
                let pattern = req_str(&named, "pattern")?;
                let pattern =
                    regex::Regex::new(&pattern).map_err(|e| format!("invalid pattern: {e}"))?;
                Ok(Transform::RegexReplace {
                    pattern,
                    replacement: opt_str(&named, "replacement")?.unwrap_or_default(),
                })
            }
            "parse_date" => parse_parse_date(&named),
            "format_date" => Ok(Transform::FormatDate {
                format: DateFormat::compile(&req_str(&named, "format")?)?,
            }),
            "to_integer" => no_args(Transform::Convert(FieldType::Integer)),
            "to_number" => no_args(Transform::Convert(FieldType::Number)),
            "to_decimal" => no_args(Transform::Convert(FieldType::Decimal)),
            "to_boolean" => no_args(Transform::Convert(FieldType::Boolean)),
            "default_if_empty" => {
                let value = match &args {
                    Args::Mapping(m) if m.len() == 1 && m.contains_key("value") => {
                        m.get("value").cloned().unwrap_or(Args::Null)
                    }
                    other => other.clone(),
                };
                Ok(Transform::DefaultIfEmpty(yaml_to_value(&value)?))
            }
            "null_if" => Ok(Transform::NullIf(str_list(&named, "values")?)),
            "truncate" => named
                .get("length")
                .and_then(Args::as_u64)
                .map(|n| Transform::Truncate(n as usize))
                .ok_or_else(|| "truncate needs a length (a whole number)".into()),
            "hash" => match opt_str(&named, "algorithm")?.as_deref().unwrap_or("sha256") {
                "sha256" => Ok(Transform::HashSha256),
                other => Err(format!(
                    "hash algorithm {other:?} is not supported (only sha256)"
                )),
            },
            "redact" => Ok(Transform::Redact(
                opt_str(&named, "marker")?.unwrap_or_else(|| "[REDACTED]".into()),
            )),
            "drop" => no_args(Transform::Drop),
            "map" => parse_map(&args),
            "parse_number" => {
                let decimal = opt_str(&named, "decimal")?.unwrap_or_else(|| ".".into());
                match decimal.as_str() {
                    "." | "," => Ok(Transform::ParseNumber {
                        decimal: decimal.chars().next().unwrap_or('.'),
                    }),
                    other => Err(format!(
                        "parse_number: decimal is the decimal separator, \".\" or \",\", not {other:?}"
                    )),
                }
            }
            "round" | "floor" | "ceil" => {
                let places = match named.get("places") {
                    None => 0,
                    Some(v) => v
                        .as_i64()
                        .ok_or_else(|| format!("{name}: places must be a whole number"))?,
                };
                let mode = match name {
                    "floor" => bigdecimal::RoundingMode::Floor,
                    "ceil" => bigdecimal::RoundingMode::Ceiling,
                    _ => bigdecimal::RoundingMode::HalfUp,
                };
                Ok(Transform::Round { places, mode })
            }
            "name_part" => match opt_str(&named, "part")?.as_deref() {
                Some("first") => Ok(Transform::NamePart(NamePart::First)),
                Some("last") => Ok(Transform::NamePart(NamePart::Last)),
                _ => Err("name_part takes `first` or `last`".into()),
            },
            other => Err(format!(
                "unknown transform {other:?}; known: {}",
                TRANSFORM_NAMES.join(", ")
            )),
        }
    }

    /// Applies the transform. `Ok(None)` means the field is dropped.
    pub fn apply(&self, value: Value) -> Result<Option<Value>, String> {
        if self.may_drop() {
            return Ok(None);
        }
        self.apply_value(value).map(Some)
    }

    /// True for a transform that may remove the field ([`Transform::apply`] returns `Ok(None)`): the
    /// validate stage trusts a field that no such transform touches to be in every mapped record.
    pub fn may_drop(&self) -> bool {
        matches!(self, Transform::Drop)
    }

    /// The transform applied to a value it only reads, for a text value and a transform that builds a new
    /// value from it (`split`, `parse_date`): the same result as [`Transform::apply`] on a copy, without the
    /// copy. `None` when the transform needs the value itself.
    pub fn apply_borrowed(&self, value: &Value) -> Option<Result<Option<Value>, String>> {
        if !matches!(value, Value::String(_)) {
            return None;
        }
        match self {
            Transform::Split {
                separators,
                trim,
                drop_empty,
            } => Some(Ok(Some(split(value, separators, *trim, *drop_empty)))),
            Transform::ParseDate { formats, offset } => {
                Some(parse_date(value, formats, *offset).map(Some))
            }
            _ => None,
        }
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
                | Transform::Map { .. }
                | Transform::ParseNumber { .. }
                | Transform::Round { .. }
                | Transform::NamePart(_)
        )
    }

    fn apply_scalar(&self, value: Value) -> Result<Value, String> {
        if matches!(value, Value::Null) && !matches!(self, Transform::DefaultIfEmpty(_)) {
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
            Transform::Map { values, default } => {
                let text = value.to_text();
                match values.iter().find(|(k, _)| *k == text) {
                    Some((_, mapped)) => mapped.clone(),
                    None => default.clone().ok_or_else(|| {
                        let listed: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
                        format!(
                            "{} is not one of the values the map lists ({}) and the map has no default",
                            preview(&value),
                            listed.join(", ")
                        )
                    })?,
                }
            }
            Transform::ParseNumber { decimal } => parse_number(&value, *decimal)?,
            Transform::Round { places, mode } => round_value(value, *places, *mode)?,
            Transform::NamePart(part) => map_text(value, |s| name_part(s, *part)),
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

fn split(value: &Value, separators: &Separators, trim: bool, drop_empty: bool) -> Value {
    let Value::String(text) = value else {
        return value.clone();
    };
    let finish = |p: &str| {
        let p = if trim { p.trim() } else { p };
        (!(drop_empty && p.is_empty())).then(|| Value::String(p.to_owned()))
    };
    match separators {
        Separators::Bytes(bytes) => {
            // An ASCII byte is never part of a longer UTF-8 sequence: each cut is at a character's start.
            // (`iter().any`, not `contains`: for bytes that is a `memchr` call per byte.)
            let cuts = text
                .bytes()
                .enumerate()
                .filter(|(_, b)| bytes.iter().any(|s| s == b));
            let ends = cuts.map(|(i, _)| i).chain(std::iter::once(text.len()));
            let mut start = 0;
            let pieces = ends.filter_map(|end| {
                let piece = text.get(start..end);
                start = end + 1;
                piece
            });
            Value::Array(pieces.filter_map(finish).collect())
        }
        Separators::Chars(chars) => Value::Array(
            text.split(|c| chars.contains(&c))
                .filter_map(finish)
                .collect(),
        ),
        Separators::Strings(strings) => {
            let mut parts = vec![text.as_str()];
            for sep in strings {
                parts = parts
                    .into_iter()
                    .flat_map(|p| p.split(sep.as_str()))
                    .collect();
            }
            Value::Array(parts.into_iter().filter_map(finish).collect())
        }
    }
}

/// Where `split` cuts, worked out once when the template is loaded. Single-character separators (the
/// usual `;` and `,`) cut in one pass: splitting at each in turn cuts at exactly the same places.
#[derive(Debug, Clone)]
pub enum Separators {
    /// ASCII characters: cut on bytes.
    Bytes(Vec<u8>),
    /// Single characters.
    Chars(Vec<char>),
    /// Longer separators, cut at each in turn.
    Strings(Vec<String>),
}

impl Separators {
    fn of(separators: Vec<String>) -> Separators {
        let chars: Option<Vec<char>> = separators.iter().map(|s| single_char(s)).collect();
        match chars {
            Some(chars) if chars.iter().all(char::is_ascii) => {
                Separators::Bytes(chars.iter().map(|c| *c as u8).collect())
            }
            Some(chars) => Separators::Chars(chars),
            None => Separators::Strings(separators),
        }
    }
}

/// The one character `s` is made of, if it is one character.
fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// A strftime format, parsed once when the template is loaded.
#[derive(Debug, Clone)]
pub struct DateFormat {
    text: String,
    items: Vec<chrono::format::Item<'static>>,
    /// For the `epoch` styles: units per second (1, or 1000 for milliseconds).
    epoch: Option<i64>,
    /// The format read without chrono's general parser, when it is only digits and separators.
    digits: Option<DigitLayout>,
}

impl DateFormat {
    fn compile(text: &str) -> Result<DateFormat, String> {
        let epoch = match text {
            EPOCH_SECONDS => Some(1),
            EPOCH_MILLIS => Some(1000),
            _ => None,
        };
        if let Some(units) = epoch {
            let name = if units == 1 { "epoch" } else { "epoch_ms" };
            return Ok(DateFormat {
                text: name.to_owned(),
                items: Vec::new(),
                epoch,
                digits: None,
            });
        }
        let items = chrono::format::StrftimeItems::new(text).parse_to_owned();
        let items = items.map_err(|_| format!("invalid format {text:?}"))?;
        Ok(DateFormat {
            text: text.to_owned(),
            digits: DigitLayout::of(&items),
            items,
            epoch: None,
        })
    }

    /// The UTC timestamp of a number of seconds (or milliseconds) since 1970, if `text` is one.
    fn epoch_time(&self, units: i64, text: &str) -> Option<Timestamp> {
        let number = bigdecimal::BigDecimal::from_str(text).ok()?;
        let nanos = number * bigdecimal::BigDecimal::from(1_000_000_000 / units);
        let nanos: i64 = nanos
            .with_scale_round(0, bigdecimal::RoundingMode::HalfEven)
            .to_plain_string()
            .parse()
            .ok()?;
        let utc = chrono::DateTime::from_timestamp_nanos(nanos);
        Some(Timestamp {
            datetime: utc.naive_utc(),
            offset: FixedOffset::east_opt(0),
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
        if let Some(found) = format.digits.as_ref().and_then(|d| d.read(text, offset)) {
            return Ok(found);
        }
        if let Some(units) = format.epoch {
            match format.epoch_time(units, text) {
                Some(t) => return Ok(Value::Timestamp(t)),
                None => continue,
            }
        }
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

/// A date format of fixed-width numbers and separators only (`%m/%d/%Y %H:%M`, `%Y-%m-%d`), read
/// directly: chrono's general parser was ~5 % of a templated run. It reads a text only when chrono would
/// read it the same way — each number in its full width of ASCII digits (chrono takes at most that many,
/// and with a digit there skips no spaces), separators as chrono matches them — and the date and time it
/// makes exist; for any other text it answers nothing and chrono decides, so results and messages are
/// unchanged (`tests::digit_layouts_read_as_chrono_does`).
#[derive(Debug, Clone)]
struct DigitLayout {
    pieces: Vec<LayoutPiece>,
    /// Hours and minutes are in it (seconds may be): a timestamp, not a date.
    timed: bool,
}

#[derive(Debug, Clone)]
enum LayoutPiece {
    /// `width` ASCII digits of the part at `slot` (year, month, day, hour, minute, second).
    Number { slot: usize, width: usize },
    /// Text that must be there.
    Literal(String),
    /// Any whitespace, none included (chrono's `Space`).
    Space,
}

impl DigitLayout {
    /// The layout of `items`, when they are only `%Y %m %d %H %M %S` (each at most once; the year, month
    /// and day always; seconds only with hours and minutes), literals and spaces.
    fn of(items: &[chrono::format::Item<'_>]) -> Option<DigitLayout> {
        use chrono::format::{Item, Numeric};
        let mut seen = [false; 6];
        let mut pieces = Vec::new();
        for item in items {
            let piece = match item {
                Item::Literal(text) => LayoutPiece::Literal((*text).to_owned()),
                Item::OwnedLiteral(text) => LayoutPiece::Literal(text.to_string()),
                Item::Space(_) | Item::OwnedSpace(_) => LayoutPiece::Space,
                Item::Numeric(numeric, _) => {
                    let (slot, width) = match numeric {
                        Numeric::Year => (0, 4),
                        Numeric::Month => (1, 2),
                        Numeric::Day => (2, 2),
                        Numeric::Hour => (3, 2),
                        Numeric::Minute => (4, 2),
                        Numeric::Second => (5, 2),
                        _ => return None,
                    };
                    if std::mem::replace(&mut seen[slot], true) {
                        return None;
                    }
                    LayoutPiece::Number { slot, width }
                }
                _ => return None,
            };
            pieces.push(piece);
        }
        let [year, month, day, hour, minute, second] = seen;
        let timed = hour && minute;
        let whole = year && month && day && hour == minute && (!second || timed);
        whole.then_some(DigitLayout { pieces, timed })
    }

    /// What `parse_date` makes of `text` with this format, when the text is laid out as it says.
    fn read(&self, text: &str, offset: Option<FixedOffset>) -> Option<Value> {
        let mut parts = [0u32; 6];
        let mut rest = text;
        for piece in &self.pieces {
            match piece {
                LayoutPiece::Literal(literal) => rest = rest.strip_prefix(literal.as_str())?,
                LayoutPiece::Space => rest = rest.trim_start(),
                LayoutPiece::Number { slot, width } => {
                    let (digits, after) = rest.split_at_checked(*width)?;
                    parts[*slot] = digits.bytes().try_fold(0u32, |n, b| {
                        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
                    })?;
                    rest = after;
                }
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let [year, month, day, hour, minute, second] = parts;
        let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
        if !self.timed {
            return Some(Value::Date(date));
        }
        let time = chrono::NaiveTime::from_hms_opt(hour, minute, second)?;
        Some(Value::Timestamp(Timestamp {
            datetime: date.and_time(time),
            offset,
        }))
    }
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
    let separators = match (args.get("separators"), args.get("separator")) {
        (Some(_), Some(_)) => return Err("split takes separator or separators, not both".into()),
        (Some(list), None) => str_list(list, "separators")?,
        (None, Some(Args::String(s))) => vec![s.clone()],
        (None, Some(_)) => return Err("split: separator must be text".into()),
        (None, None) => vec![",".to_owned()],
    };
    if separators.iter().any(String::is_empty) {
        return Err("split: a separator cannot be empty".into());
    }
    let flag = |key: &str| {
        args.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or(format!("split: {key} must be true or false"))
            })
            .transpose()
    };
    Ok(Transform::Split {
        separators: Separators::of(separators),
        trim: flag("trim")?.unwrap_or(true),
        drop_empty: flag("drop_empty")?.unwrap_or(true),
    })
}

fn parse_parse_date(args: &Args) -> Result<Transform, String> {
    let formats = match (args.get("formats"), args.get("format")) {
        (Some(_), Some(_)) => return Err("parse_date takes format or formats, not both".into()),
        (Some(list), None) => str_list(list, "formats")?,
        (None, Some(Args::String(s))) => vec![s.clone()],
        _ => return Err("parse_date needs format or formats".into()),
    };
    let mut compiled = Vec::new();
    for format in &formats {
        match preset(format) {
            Some(list) => {
                for f in list {
                    compiled.push(DateFormat::compile(f).map_err(|e| format!("parse_date: {e}"))?);
                }
            }
            None => {
                compiled.push(DateFormat::compile(format).map_err(|e| format!("parse_date: {e}"))?)
            }
        }
    }
    let offset = match opt_str(args, "timezone")? {
        None => None,
        Some(tz) => Some(parse_offset(&tz)?),
    };
    Ok(Transform::ParseDate {
        formats: compiled,
        offset,
    })
}

/// The formats a named date style stands for in `parse_date`: `iso`, `european` (day first), `us`
/// (month first), and `epoch` / `epoch_ms` (seconds or milliseconds since 1970, UTC).
fn preset(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "iso" => &[
            "%+",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f%#z",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%d",
        ],
        "european" => &[
            "%d.%m.%Y %H:%M:%S",
            "%d.%m.%Y %H:%M",
            "%d.%m.%Y",
            "%d/%m/%Y %H:%M:%S",
            "%d/%m/%Y %H:%M",
            "%d/%m/%Y",
            "%d-%m-%Y %H:%M:%S",
            "%d-%m-%Y %H:%M",
            "%d-%m-%Y",
        ],
        "us" => &[
            "%m/%d/%Y %I:%M:%S %p",
            "%m/%d/%Y %I:%M %p",
            "%m/%d/%Y %H:%M:%S",
            "%m/%d/%Y %H:%M",
            "%m/%d/%Y",
        ],
        "epoch" => &[EPOCH_SECONDS],
        "epoch_ms" => &[EPOCH_MILLIS],
        _ => return None,
    })
}

/// Stand-ins for the epoch styles among compiled formats (no strftime format is written like these).
const EPOCH_SECONDS: &str = "\u{0}epoch";
const EPOCH_MILLIS: &str = "\u{0}epoch_ms";

/// A value map: `{A: active, I: inactive, default: unknown}`, or `{values: {…}, default: …}` when a
/// listed value is itself the text `default` or `values`.
fn parse_map(args: &Args) -> Result<Transform, String> {
    let Args::Mapping(m) = args else {
        return Err(
            "map takes a mapping of values: `map: {A: active, I: inactive, default: unknown}`"
                .into(),
        );
    };
    let explicit = m.get("values");
    let entries = match explicit {
        Some(Args::Mapping(values)) => {
            if let Some(other) = m
                .keys()
                .find(|k| !matches!(k.as_str(), Some("values" | "default")))
            {
                return Err(format!(
                    "unknown argument {:?}; map takes values and default (or the values themselves)",
                    yaml_text(other)
                ));
            }
            values
        }
        Some(_) => return Err("map: values must be a mapping".into()),
        None => m,
    };
    let mut values = Vec::new();
    for (key, value) in entries {
        if explicit.is_none() && key.as_str() == Some("default") {
            continue;
        }
        if key.is_mapping() || key.is_sequence() {
            return Err("map: the values to replace must be scalars".into());
        }
        values.push((yaml_text(key), yaml_to_value(value)?));
    }
    if values.is_empty() {
        return Err("map lists no values".into());
    }
    let default = m.get("default").map(yaml_to_value).transpose()?;
    Ok(Transform::Map { values, default })
}

/// Reads a number written for people (see [`Transform::ParseNumber`]) as an exact decimal.
fn parse_number(value: &Value, decimal: char) -> Result<Value, String> {
    let text = match value {
        Value::String(s) => s.as_str(),
        Value::Int(_) | Value::Decimal(_) => return Ok(value.clone()),
        Value::Float(x) => {
            return Decimal::parse(ryu::Buffer::new().format(*x))
                .map(Value::Decimal)
                .ok_or_else(|| format!("{x} is not a finite number"))
        }
        other => return Err(format!("cannot read a {} as a number", other.type_name())),
    };
    let fail = || {
        format!(
            "{text:?} is not a number written with {decimal:?} as the decimal separator (parse_number)"
        )
    };
    let mut body = text.trim();
    if body.is_empty() {
        return Ok(Value::Null);
    }
    let mut negative = false;
    if let Some(inner) = body.strip_prefix('(').and_then(|b| b.strip_suffix(')')) {
        negative = true;
        body = inner.trim();
    }
    // Signs, currency symbols and codes, and a percent sign, at either end, in any order.
    let mut percent = false;
    loop {
        let before = body;
        body = body.trim();
        if let Some(rest) = body.strip_prefix('-').or_else(|| body.strip_suffix('-')) {
            if negative {
                return Err(fail());
            }
            negative = true;
            body = rest;
        } else if let Some(rest) = body.strip_prefix('+') {
            body = rest;
        } else if let Some(rest) = body.strip_suffix('%') {
            if percent {
                return Err(fail());
            }
            percent = true;
            body = rest;
        } else if let Some(rest) = strip_currency(body) {
            body = rest;
        }
        if body == before {
            break;
        }
    }
    let grouping = if decimal == ',' { '.' } else { ',' };
    let (whole, fraction) = match body.rsplit_once(decimal) {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let groups: Vec<&str> = whole
        .split([grouping, ' ', '\u{a0}', '\u{202f}', '\''])
        .collect();
    // Grouped digits come in threes after the first group: `1.234.567`, never `1.5` read as a thousand.
    let grouped_ok = groups.len() == 1
        || (groups[0].len() <= 3
            && !groups[0].is_empty()
            && groups[1..].iter().all(|g| g.len() == 3));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !grouped_ok || !groups.iter().all(|g| digits(g)) || fraction.is_some_and(|f| !digits(f)) {
        return Err(fail());
    }
    let mut plain = String::with_capacity(body.len() + 1);
    if negative {
        plain.push('-');
    }
    plain.push_str(&groups.concat());
    if let Some(f) = fraction {
        plain.push('.');
        plain.push_str(f);
    }
    let mut number = bigdecimal::BigDecimal::from_str(&plain).map_err(|_| fail())?;
    if percent {
        // 19 % is 0.19: divided by a hundred, exactly (the scale grows by two).
        number = number / bigdecimal::BigDecimal::from(100);
        let scale = fraction.map_or(0, str::len) as i64 + 2;
        number = number.with_scale(scale);
    }
    Decimal::parse(&number.to_plain_string())
        .map(Value::Decimal)
        .ok_or_else(fail)
}

/// `body` without a currency symbol or a three-letter currency code at its start or end.
fn strip_currency(body: &str) -> Option<&str> {
    const SYMBOLS: &[char] = &[
        '$', '€', '£', '¥', '₹', '₽', '₩', '₪', '₺', '₫', '₱', '฿', '₴', '₦', '¢',
    ];
    if let Some(rest) = body
        .strip_prefix(SYMBOLS)
        .or_else(|| body.strip_suffix(SYMBOLS))
    {
        return Some(rest);
    }
    let code = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase());
    if let Some((head, rest)) = body.split_once(' ') {
        if code(head) {
            return Some(rest);
        }
    }
    if let Some((rest, tail)) = body.rsplit_once(' ') {
        if code(tail) {
            return Some(rest);
        }
    }
    // `CHF12.50`, `12.50EUR`
    let (head, tail) = (body.get(..3), body.get(body.len().saturating_sub(3)..));
    if head.is_some_and(code) && body.len() > 3 {
        return body.get(3..);
    }
    if tail.is_some_and(code) && body.len() > 3 {
        return body.get(..body.len() - 3);
    }
    None
}

/// Rounds a number (or text holding one): a decimal stays an exact decimal, a float a float, an integer
/// an integer.
fn round_value(value: Value, places: i64, mode: bigdecimal::RoundingMode) -> Result<Value, String> {
    let exact = |text: &str| bigdecimal::BigDecimal::from_str(text.trim()).ok();
    let (d, kind) = match &value {
        Value::Decimal(d) => (exact(d.as_str()), "decimal"),
        Value::Float(x) => (exact(ryu::Buffer::new().format(*x)), "float"),
        Value::Int(i) => (Some(bigdecimal::BigDecimal::from(*i)), "int"),
        Value::String(s) => (exact(s), "decimal"),
        other => return Err(format!("cannot round a {}", other.type_name())),
    };
    let d = d.ok_or_else(|| format!("cannot round {}: it is not a number", preview(&value)))?;
    let rounded = round_decimal(&d, places, mode).to_plain_string();
    match kind {
        "float" => rounded.parse().map(Value::Float).map_err(|e| e.to_string()),
        "int" => rounded.parse().map(Value::Int).map_err(|e| e.to_string()),
        _ => Decimal::parse(&rounded)
            .map(Value::Decimal)
            .ok_or_else(|| format!("cannot round {}", preview(&value))),
    }
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
            Some(other) => Err(format!("{key} must be text, got {}", yaml_text(other))),
        },
        _ => Ok(None),
    }
}

fn req_str(args: &Args, key: &str) -> Result<String, String> {
    opt_str(args, key)?.ok_or_else(|| format!("missing argument {key:?}"))
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
        if matches!(value, Value::Null) {
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

    /// `parse_date` with and without the digit layouts: the same value or the same message.
    fn read_alike(formats: &[&str], text: &str) {
        let compiled: Vec<DateFormat> = formats
            .iter()
            .map(|f| DateFormat::compile(f).unwrap())
            .collect();
        let general: Vec<DateFormat> = compiled
            .iter()
            .cloned()
            .map(|f| DateFormat { digits: None, ..f })
            .collect();
        let offset = FixedOffset::east_opt(0);
        assert_eq!(
            parse_date(&s(text), &compiled, offset),
            parse_date(&s(text), &general, offset),
            "{formats:?} {text:?}"
        );
    }

    const LAYOUTS: &[&str] = &[
        "%m/%d/%Y %H:%M",
        "%m/%d/%Y",
        "%Y-%m-%dT%H:%M:%S",
        "%d.%m.%Y",
        "%Y%m%d",
        "%e/%m/%Y  %H:%M",
    ];

    #[test]
    fn digit_layouts_are_taken_only_for_digits_and_separators() {
        for format in LAYOUTS {
            assert!(
                DateFormat::compile(format).unwrap().digits.is_some(),
                "{format}"
            );
        }
        for format in [
            "%+",
            "%Y-%m-%d %H",
            "%m/%d/%Y %H:%M:%S%.f",
            "%b %d %Y",
            "%Y-%m-%d %I:%M",
            "%Y/%Y/%m/%d",
            "%m/%d %H:%M",
            "%Y-%m-%d %:z",
        ] {
            assert!(
                DateFormat::compile(format).unwrap().digits.is_none(),
                "{format}"
            );
        }
        for text in [
            "11/01/2010 15:07",
            "02/30/2010 15:07",
            "11/01/2010",
            " 11/01/2010 15:07",
            "11/1/2010 15:07",
            "11/01/2010 24:00",
            "11/01/0000 00:00",
            "13/01/2010 10:00",
            "2010-11-01T15:07:60",
            "2010-11-01T15:07:59",
            "01.02.2003",
            "20030201",
            "200302011",
            "1/02/2003  10:10",
            " 1/02/2003 10:10",
            "11/01/+2010 15:07",
            "11/01/2010\t15:07",
            "11/01/2010 15:07 ",
            "١١/01/2010 15:07",
        ] {
            read_alike(LAYOUTS, text);
            for format in LAYOUTS {
                read_alike(&[format], text);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn digit_layouts_read_as_chrono_does(
            parts in (0u32..10_001, 0u32..14, 0u32..33, 0u32..26, 0u32..62, 0u32..62),
            format in 0usize..6,
            edit in 0usize..3,
            at in 0usize..24,
            inserted in proptest::sample::select(vec![' ', '0', '7', '/', ':', '-', '+', 'T', '\t', '١']),
        ) {
            let (year, month, day, hour, minute, second) = parts;
            // The format written out as chrono would for these numbers (out of range ones too).
            let mut text = LAYOUTS[format]
                .replace("%Y", &format!("{year:04}"))
                .replace("%m", &format!("{month:02}"))
                .replace("%d", &format!("{day:02}"))
                .replace("%e", &format!("{day:>2}"))
                .replace("%H", &format!("{hour:02}"))
                .replace("%M", &format!("{minute:02}"))
                .replace("%S", &format!("{second:02}"));
            let at = text.char_indices().map(|(i, _)| i).nth(at).unwrap_or(text.len());
            match edit {
                1 => text.insert(at, inserted),
                2 if at < text.len() => drop(text.remove(at)),
                _ => {}
            }
            read_alike(&[LAYOUTS[format]], &text);
            read_alike(LAYOUTS, &text);
        }
    }

    #[test]
    fn split_cuts_alike_on_bytes_characters_and_strings() {
        let texts = [
            "",
            ";",
            ";;a,,b;",
            " planning; budget ,q3;",
            "東京;Ångström,façade;;“smart”",
            "no separator at all",
            ",é,",
        ];
        let strings = || vec![";".to_owned(), ",".to_owned()];
        let forms = [
            Separators::of(strings()),
            Separators::Chars(vec![';', ',']),
            Separators::Strings(strings()),
        ];
        assert!(matches!(forms[0], Separators::Bytes(_)));
        for text in texts {
            for (trim, drop_empty) in [(true, true), (false, false), (true, false), (false, true)] {
                let got: Vec<Value> = forms
                    .iter()
                    .map(|f| split(&s(text), f, trim, drop_empty))
                    .collect();
                assert_eq!(
                    got[0], got[2],
                    "{text:?} trim {trim} drop_empty {drop_empty}"
                );
                assert_eq!(
                    got[1], got[2],
                    "{text:?} trim {trim} drop_empty {drop_empty}"
                );
            }
        }
        assert!(matches!(
            Separators::of(vec!["·".to_owned()]),
            Separators::Chars(_)
        ));
        assert!(matches!(
            Separators::of(vec![", ".to_owned()]),
            Separators::Strings(_)
        ));
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
