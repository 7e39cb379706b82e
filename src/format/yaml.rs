//! YAML codec: a sequence of mappings, or a stream of `---` documents each holding a mapping (or a sequence
//! of them).
//!
//! Reading walks the events of `saphyr-parser` (a YAML 1.2 parser) and resolves plain scalars by the YAML 1.2
//! core schema itself, so a number keeps the text it was written with: `1.10`, `1e3` and
//! `123456789012345678901234567890` come back as the same exact decimals JSON gives them, not as floats.
//! An integer written with a leading zero (`08123`) stays text, as in a CSV. The parser needs the whole
//! input in memory, so this decoder reads it at once — at most `--max-document-size` bytes (64 MiB by
//! default): a format limit, said in `ferry formats`. Aliases are expanded, within a budget of nodes that
//! stops a "billion laughs" document. Tags are dropped and their values kept (`!!str` makes text).
//!
//! Writing emits block YAML that YAML 1.1 readers (PyYAML) and YAML 1.2 readers read alike: a string is
//! written bare only when no reader of either version could take it for anything else (`yes`, `NO`, `on`,
//! `1_000`, `2024-01-01`, `0x1F`, `null` are quoted), numbers are written with their exact text, and dates,
//! timestamps and bytes as quoted text.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Tag};

use super::json::into_record;
use super::limit::{read_whole, too_deep, too_many_fields, MAX_DEPTH, MAX_FIELDS};
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{number_from_text, Decimal, Key, NumberParts, Record, RecordBuilder, Value};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "yaml",
    extensions: &["yaml", "yml"],
    description: "YAML: a sequence of mappings or a stream of documents (read whole)",
    fidelity: Fidelity::Typed,
    streams: false,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

/// Nodes (scalars and collections, aliases expanded) one document may build per byte of input, beyond a
/// fixed allowance: an alias bomb (`&a [*b, *b, …]` nested) reaches it long before it fills memory.
const NODES_PER_BYTE: usize = 16;
const NODES_ALLOWED: usize = 1_000_000;

/// Parses every document of a YAML stream (used by tests and the decoder).
pub fn parse_documents(bytes: &[u8]) -> Result<Vec<Value>> {
    let text =
        std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)).map_err(|e| {
            Error::data(
                Stage::Decode,
                Position::default(),
                format!("YAML input is not valid UTF-8 ({e})"),
            )
        })?;
    let budget = NODES_ALLOWED.saturating_add(text.len().saturating_mul(NODES_PER_BYTE));
    Builder::new(budget).documents(Parser::new_from_str(text))
}

/// A collection being built.
enum Frame {
    Sequence {
        items: Vec<Value>,
        anchor: usize,
    },
    Mapping {
        record: RecordBuilder,
        key: Option<Key>,
        anchor: usize,
    },
}

/// Builds values from parser events.
struct Builder {
    stack: Vec<Frame>,
    /// Anchored values of the current document, with their node counts (what expanding an alias costs) and
    /// heights (how deep an alias to them nests).
    anchors: HashMap<usize, (Value, usize, usize)>,
    /// Node counts of the collections on the stack, for anchors.
    counts: Vec<usize>,
    /// Heights of the collections on the stack (1 for an empty one): with aliases, a value can nest deeper
    /// than the events that built it, so depth is measured on values, not on the stack alone.
    heights: Vec<usize>,
    nodes: usize,
    budget: usize,
}

impl Builder {
    fn new(budget: usize) -> Builder {
        Builder {
            stack: Vec::new(),
            anchors: HashMap::new(),
            counts: Vec::new(),
            heights: Vec::new(),
            nodes: 0,
            budget,
        }
    }

    fn documents<'a, I>(mut self, events: I) -> Result<Vec<Value>>
    where
        I: Iterator<Item = std::result::Result<(Event<'a>, saphyr_parser::Span), ScanError>>,
    {
        let mut documents = Vec::new();
        let mut document: Option<Value> = None;
        for event in events {
            let (event, span) = event.map_err(|e| scan_error(&e))?;
            let at = || {
                Position::default()
                    .with_line(span.start.line() as u64)
                    .with_column(span.start.col() as u64 + 1)
            };
            let node = match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
                Event::DocumentStart(_) => {
                    self.anchors.clear();
                    document = None;
                    continue;
                }
                Event::DocumentEnd => {
                    documents.push(document.take().unwrap_or(Value::Null));
                    continue;
                }
                Event::SequenceStart(anchor, _) => {
                    self.stack.push(Frame::Sequence {
                        items: Vec::new(),
                        anchor,
                    });
                    self.counts.push(1);
                    self.heights.push(1);
                    if self.stack.len() > MAX_DEPTH {
                        return Err(Error::data(Stage::Decode, at(), too_deep()));
                    }
                    continue;
                }
                Event::MappingStart(anchor, _) => {
                    self.stack.push(Frame::Mapping {
                        record: RecordBuilder::default(),
                        key: None,
                        anchor,
                    });
                    self.counts.push(1);
                    self.heights.push(1);
                    if self.stack.len() > MAX_DEPTH {
                        return Err(Error::data(Stage::Decode, at(), too_deep()));
                    }
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (value, anchor) = match self.stack.pop() {
                        Some(Frame::Sequence { items, anchor }) => (Value::Array(items), anchor),
                        Some(Frame::Mapping { record, anchor, .. }) => {
                            (Value::Object(record.finish()), anchor)
                        }
                        None => {
                            return Err(structure_error(at(), "a collection ends that never began"))
                        }
                    };
                    let count = self.counts.pop().unwrap_or(1);
                    let height = self.heights.pop().unwrap_or(1);
                    (value, anchor, count, height)
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let value = resolve(&text, style, tag.as_deref())
                        .map_err(|m| Error::data(Stage::Decode, at(), m))?;
                    (value, anchor, 1, 0)
                }
                Event::Alias(id) => {
                    let (value, count, height) =
                        self.anchors.get(&id).cloned().ok_or_else(|| {
                            structure_error(
                                at(),
                                "an alias refers to an anchor that is not defined",
                            )
                        })?;
                    (value, 0, count, height)
                }
            };
            let (value, anchor, count, height) = node;
            if self.stack.len() + height > MAX_DEPTH {
                return Err(Error::data(Stage::Decode, at(), too_deep()));
            }
            self.nodes = self.nodes.saturating_add(count);
            if self.nodes > self.budget {
                return Err(structure_error(
                    at(),
                    "the document expands to too many values (an alias bomb?): its aliases were not expanded",
                ));
            }
            if anchor != 0 {
                self.anchors.insert(anchor, (value.clone(), count, height));
            }
            if let Some(parent) = self.counts.last_mut() {
                *parent = parent.saturating_add(count);
            }
            if let Some(parent) = self.heights.last_mut() {
                *parent = (*parent).max(height + 1);
            }
            match self.stack.last_mut() {
                None => document = Some(value),
                Some(Frame::Sequence { items, .. }) => items.push(value),
                Some(Frame::Mapping { record, key, .. }) => match key.take() {
                    None => *key = Some(key_text(value).map_err(|m| structure_error(at(), m))?),
                    // Duplicate keys: the last one wins, in the first one's place, as in JSON.
                    Some(name) => {
                        record.insert(name, value);
                        if record.len() > MAX_FIELDS {
                            return Err(Error::data(Stage::Decode, at(), too_many_fields()));
                        }
                    }
                },
            }
        }
        Ok(documents)
    }
}

fn structure_error(at: Position, message: &str) -> Error {
    Error::data(Stage::Decode, at, message)
}

fn scan_error(e: &ScanError) -> Error {
    let at = Position::default()
        .with_line(e.marker().line() as u64)
        .with_column(e.marker().col() as u64 + 1);
    Error::data(Stage::Decode, at, e.info().to_owned())
}

/// A mapping key as a field name: text as it is; numbers, booleans and null as their text.
fn key_text(value: Value) -> std::result::Result<Key, &'static str> {
    match value {
        Value::String(s) => Ok(Key::from(s)),
        Value::Null => Ok(Key::from("null")),
        Value::Array(_) | Value::Object(_) => {
            Err("a mapping key is a collection; ferry's field names are text")
        }
        other => Ok(Key::from(other.to_text())),
    }
}

/// A scalar's value: quoted and block scalars are text; plain ones are resolved by the YAML 1.2 core schema;
/// a core-schema tag (`!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!binary`) decides, other tags are
/// dropped.
fn resolve(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
) -> std::result::Result<Value, String> {
    let core = tag
        .filter(|t| t.is_yaml_core_schema())
        .map(|t| t.suffix.as_str());
    // `! 12`: the non-specific tag makes the scalar text.
    let non_specific = tag.is_some_and(|t| t.handle.is_empty() && t.suffix == "!");
    match core {
        Some("str") => return Ok(Value::String(text.to_owned())),
        Some("null") => return Ok(Value::Null),
        Some("bool") => {
            return plain_bool(text)
                .map(Value::Bool)
                .ok_or_else(|| format!("{text:?} is not a boolean (!!bool)"))
        }
        Some("int" | "float") => {
            return plain_number(text.trim())
                .filter(|v| !matches!(v, Value::String(_)))
                .ok_or_else(|| format!("{text:?} is not a number (!!{})", core.unwrap_or("")))
        }
        _ => {}
    }
    if style != ScalarStyle::Plain || non_specific {
        return Ok(Value::String(text.to_owned()));
    }
    Ok(plain(text))
}

/// A plain scalar by the YAML 1.2 core schema: null, booleans, integers, floats (kept as their exact text),
/// anything else text. An integer with a leading zero (`08123`) stays text.
fn plain(text: &str) -> Value {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = plain_bool(text) {
        return Value::Bool(b);
    }
    plain_number(text).unwrap_or_else(|| Value::String(text.to_owned()))
}

fn plain_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Numbers of the YAML 1.2 core schema: `[-+]?[0-9]+`, `0o17`, `0x1F`, floats with `.` and/or an exponent,
/// `.inf`, `.nan`.
fn plain_number(text: &str) -> Option<Value> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Value::Float(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Value::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Value::Float(f64::NAN)),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return radix(hex, 16);
    }
    if let Some(octal) = text.strip_prefix("0o") {
        return radix(octal, 8);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if integer && digits.len() > 1 && digits.starts_with('0') {
        return None; // `08123`: a code, not a number
    }
    if !integer && !is_core_float(digits) {
        return None;
    }
    number_from_text(text.strip_prefix('+').unwrap_or(text))
}

fn radix(digits: &str, base: u32) -> Option<Value> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(base)) {
        return None;
    }
    match i64::from_str_radix(digits, base) {
        Ok(n) => Some(Value::Int(n)),
        Err(_) => u128::from_str_radix(digits, base)
            .ok()
            .map(|n| Value::Decimal(Decimal::from_u128(n))),
    }
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, the unsigned float of the YAML 1.2 core schema.
fn is_core_float(text: &str) -> bool {
    NumberParts::of(text).is_some_and(|p| p.sign.is_none())
}

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input {
        mut reader, name, ..
    } = input;
    let bytes = read_whole(&mut reader, options.max_document_size, &name, "YAML")?;
    let items: Vec<Result<Record>> = match parse_documents(&bytes) {
        Ok(documents) => documents
            .into_iter()
            .flat_map(document_records)
            .map(Ok)
            .collect(),
        Err(e) => vec![Err(e.with_context(Some(&name), None))],
    };
    Ok(Box::new(super::Decoded(items.into_iter())))
}

/// A document's records: each item of a sequence, a mapping as one record, nothing for an empty document.
fn document_records(document: Value) -> Vec<Record> {
    match document {
        Value::Null => Vec::new(),
        Value::Array(items) => items.into_iter().map(into_record).collect(),
        other => vec![into_record(other)],
    }
}

fn encoder(sink: Box<dyn ByteSink>, _options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    Ok(Box::new(YamlEncoder {
        out: OutBuf::new(sink),
        records: 0,
    }))
}

struct YamlEncoder {
    out: OutBuf,
    records: u64,
}

impl Encoder for YamlEncoder {
    /// Each record becomes one item of a top-level sequence.
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.records += 1;
        let mut text = String::new();
        text.push('-');
        write_record(&mut text, record, 2);
        self.out.buf.extend_from_slice(text.as_bytes());
        self.out.maybe_flush()
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.records == 0 {
            self.out.buf.extend_from_slice(b"[]\n");
        }
        self.out.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.out.bytes_written()
    }
}

/// Keys longer than this are written as explicit keys (`? key`): YAML limits implicit keys to 1024
/// characters.
const LONG_KEY: usize = 1000;

/// Writes `record` as a block mapping whose first key follows what is already on the line (`-` or `- -`);
/// the other keys start at `indent`.
fn write_record(out: &mut String, record: &Record, indent: usize) {
    if record.is_empty() {
        out.push_str(" {}\n");
        return;
    }
    for (i, (key, value)) in record.iter().enumerate() {
        if i > 0 {
            push_indent(out, indent);
        } else {
            out.push(' ');
        }
        let mut name = String::new();
        write_string(&mut name, key);
        if name.chars().count() > LONG_KEY {
            out.push_str("? ");
            out.push_str(&name);
            out.push('\n');
            push_indent(out, indent);
        } else {
            out.push_str(&name);
        }
        out.push(':');
        write_node(out, value, indent + 2);
    }
}

/// Writes a value after `key:` or `-`: a scalar or empty collection on the same line, a collection on
/// the lines below at `indent`.
fn write_node(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(record) if !record.is_empty() => {
            out.push('\n');
            push_indent(out, indent);
            write_record_at(out, record, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_items(out, items, indent, false);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar);
            out.push('\n');
        }
    }
}

/// Writes a non-empty mapping whose first key starts at the current position (already indented).
fn write_record_at(out: &mut String, record: &Record, indent: usize) {
    // write_record puts a space before the first key; here the line is already indented.
    let mut text = String::new();
    write_record(&mut text, record, indent);
    out.push_str(text.strip_prefix(' ').unwrap_or(&text));
}

/// Writes sequence items, each `- item` at `indent` (the first one after what is on the line when
/// `inline`).
fn write_items(out: &mut String, items: &[Value], indent: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            push_indent(out, indent);
        }
        out.push('-');
        match item {
            Value::Object(record) if !record.is_empty() => write_record(out, record, indent + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                write_items(out, inner, indent + 2, true);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar);
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar (or an empty collection) in flow form.
fn write_scalar(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::Float(x) if x.is_nan() => out.push_str(".nan"),
        Value::Float(x) if x.is_infinite() => out.push_str(if *x > 0.0 { ".inf" } else { "-.inf" }),
        Value::Float(_) => write_number(out, &value.to_text()),
        // Every decimal's text is a YAML 1.2 number; one with a leading zero (`007`) would be read back
        // as text, as `08123` is, so it is written as text.
        Value::Decimal(d) if is_yaml_number_text(d.as_str()) => write_number(out, d.as_str()),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(record) if record.is_empty() => out.push_str("{}"),
        other => write_string(out, &other.to_text()),
    }
}

/// Writes a number's exact text: bare when YAML 1.1 readers take it for a number too, else with the
/// standard `!!float` tag (`1e3`, `1.5e300`: YAML 1.1 wants a dot and a signed exponent), which every
/// reader of either version reads as a number, and ferry reads with this very text.
fn write_number(out: &mut String, text: &str) {
    if !is_yaml11_number(text) {
        out.push_str("!!float ");
    }
    out.push_str(text);
}

/// YAML 1.1's implicit integers and floats, as numbers ferry writes spell them (no `_`, no `+` sign):
/// `-?(0|[1-9][0-9]*)`, `-?[0-9]+\\.[0-9]*([eE][-+][0-9]+)?`, `\\.[0-9]+([eE][-+][0-9]+)?`.
fn is_yaml11_number(text: &str) -> bool {
    let Some(parts) = NumberParts::of(text) else {
        return false;
    };
    let signed_exponent = parts.exp.is_none_or(|(sign, _)| sign.is_some());
    match (parts.frac, parts.exp) {
        (None, None) => parts.int == "0" || !parts.int.starts_with('0'),
        (None, Some(_)) => false,
        (Some(_), _) if parts.int.is_empty() => parts.sign.is_none() && signed_exponent,
        (Some(_), _) => signed_exponent,
    }
}

/// True when `text` is read back by [`plain_number`] as a number with this very text.
fn is_yaml_number_text(text: &str) -> bool {
    matches!(
        plain_number(text),
        Some(Value::Int(_) | Value::Float(_) | Value::Decimal(_))
    ) && !text.starts_with('+')
}

/// Writes text: bare when every YAML reader, 1.1 or 1.2, takes it as this very string; double-quoted
/// otherwise.
fn write_string(out: &mut String, text: &str) {
    if is_plain_safe(text) {
        out.push_str(text);
    } else {
        write_quoted(out, text);
    }
}

/// Words a YAML 1.1 or 1.2 reader takes for null or a boolean (YAML 1.1's `y`/`n`, `yes`/`no`, `on`/`off`
/// included), in the spellings the specs list.
const KEYWORDS: &[&str] = &[
    "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true",
    "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
];

/// Text that can be written bare: it starts with a letter (or `_`, `/`), holds only letters, digits,
/// spaces and `_ - . / @ ( ) +`, does not end in a space, and is no keyword. Anything starting with a digit,
/// a sign or a dot is quoted, so no number, date or timestamp of either YAML version (`1_000`,
/// `2024-01-01`, `0x1F`, `.inf`, `1:30`) is ever written bare.
fn is_plain_safe(text: &str) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let first_ok = first.is_alphabetic() || first == '_' || first == '/';
    let rest_ok = text
        .chars()
        .all(|c| c.is_alphanumeric() || " _-./@()+".contains(c));
    first_ok && rest_ok && !text.ends_with(' ') && !KEYWORDS.contains(&text)
}

/// A double-quoted scalar: `"` and `\` escaped, control characters, C1 characters, line and paragraph
/// separators, the byte order mark and non-characters escaped; everything else as it is.
fn write_quoted(out: &mut String, text: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(yaml: &str) -> Record {
        match parse_documents(yaml.as_bytes()).unwrap().remove(0) {
            Value::Object(r) => r,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    fn written(r: &Record) -> String {
        let mut out = String::from("-");
        write_record(&mut out, r, 2);
        out
    }

    /// Writes `r` as ferry's YAML writer does and reads it back.
    fn again(r: &Record) -> Record {
        let text = written(r);
        match parse_documents(text.as_bytes()).unwrap().remove(0) {
            Value::Array(mut items) => match items.remove(0) {
                Value::Object(back) => back,
                other => panic!("{text}: {other:?}"),
            },
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_stream_without_documents_has_none_but_an_empty_document_is_null() {
        for empty in ["", "# only a comment\n", "  # comment\n\n"] {
            assert_eq!(parse_documents(empty.as_bytes()).unwrap(), [], "{empty:?}");
        }
        assert_eq!(parse_documents(b"---\n").unwrap(), [Value::Null]);
        assert_eq!(parse_documents(b"~\n").unwrap(), [Value::Null]);
        assert_eq!(
            parse_documents(b"--- 1\n--- a\n").unwrap(),
            [Value::Int(1), Value::String("a".into())]
        );
    }

    #[test]
    fn numbers_keep_their_text_and_codes_stay_text() {
        let r = record(
            "big: 100000000000000000000\nneg: -100000000000000000000\ndec: 1.10\nexp: 1e3\n\
             f: 1.5\nzip: 08123\nhex: 0x1F\nq: '1.10'\n18446744073709551616: k\ninf: .inf\n",
        );
        let decimal = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
        assert_eq!(r.get("big"), Some(&decimal("100000000000000000000")));
        assert_eq!(r.get("neg"), Some(&decimal("-100000000000000000000")));
        assert_eq!(r.get("dec"), Some(&decimal("1.10")));
        assert_eq!(r.get("exp"), Some(&decimal("1e3")));
        assert_eq!(r.get("f"), Some(&Value::Float(1.5)));
        assert_eq!(r.get("zip"), Some(&Value::String("08123".into())));
        assert_eq!(r.get("hex"), Some(&Value::Int(31)));
        assert_eq!(r.get("q"), Some(&Value::String("1.10".into())));
        assert_eq!(
            r.get("18446744073709551616"),
            Some(&Value::String("k".into()))
        );
        assert_eq!(r.get("inf"), Some(&Value::Float(f64::INFINITY)));
    }

    #[test]
    fn strings_a_yaml_1_1_reader_would_retype_are_quoted() {
        for text in [
            "yes",
            "no",
            "on",
            "NO",
            "Off",
            "y",
            "1_000",
            "2024-01-01",
            "0x1F",
            "0o17",
            "1e3",
            ".inf",
            "null",
            "~",
            "",
            " lead",
            "trail ",
            "a: b",
            "#x",
            "- x",
            "12:30",
            "3.0",
            "+1",
            "-",
            "@x",
            "multi\nline",
            "tab\there",
            "quote\"",
            "[x]",
            "{x}",
            "!tag",
            "&a",
            "*a",
            "%x",
            "`x",
            "=",
            "<<",
            "?x",
            "|",
            ">",
        ] {
            let mut out = String::new();
            write_string(&mut out, text);
            assert!(out.starts_with('"'), "{text:?} written bare as {out}");
            let mut r = Record::new();
            r.insert("k", Value::String(text.into()));
            let back = again(&r);
            assert_eq!(back.get("k"), Some(&Value::String(text.into())), "{text:?}");
        }
        for text in [
            "active",
            "New York",
            "a_b-c.d/e",
            "Zürich",
            "x+y",
            "user@example.com",
        ] {
            let mut out = String::new();
            write_string(&mut out, text);
            assert_eq!(out, text);
        }
    }

    #[test]
    fn numbers_yaml_1_1_would_read_as_text_are_tagged() {
        for (text, tagged) in [
            ("1", false),
            ("-12345678901234567890123", false),
            ("1.10", false),
            ("1.5e+300", false),
            ("-0.5", false),
            ("1.", false),
            ("1e3", true),
            ("1.5e300", true),
            ("1E3", true),
            ("-.5", true),
            (".5", false),
        ] {
            let mut out = String::new();
            write_number(&mut out, text);
            assert_eq!(out.starts_with("!!float "), tagged, "{text}");
            let mut r = Record::new();
            r.insert("n", Value::Decimal(Decimal::parse(text).unwrap()));
            let back = again(&r);
            let value = back.get("n").unwrap();
            assert_eq!(value.to_text(), text, "{text} came back as {value:?}");
        }
    }

    #[test]
    fn nested_values_round_trip() {
        let text = "a:\n  b: [1, {c: [], d: {}}, [x, [y]]]\n  e: \"\\x85\\u2028\"\nf: [{}, []]\n";
        let r = record(text);
        assert_eq!(again(&r), r, "{}", written(&r));
    }

    #[test]
    fn nesting_past_the_limit_is_a_clear_error() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let err = parse_documents(deep.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("nests deeper than 128 levels"),
            "{err}"
        );
        let mut block = String::new();
        for level in 0..200 {
            block.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
        }
        let err = parse_documents(block.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("nests deeper than 128 levels"),
            "{err}"
        );
        // 128 levels are allowed.
        let limit = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        parse_documents(limit.as_bytes()).unwrap();
    }

    #[test]
    fn aliases_cannot_nest_past_the_limit() {
        // Each anchor holds the one before it 100 levels down: few events, a value thousands of levels deep
        // (whose drop alone would overflow the stack) unless depth is measured on values.
        let mut doc = String::from("- &a0 x\n");
        for i in 1..40 {
            let open = "[".repeat(100);
            let close = "]".repeat(100);
            doc.push_str(&format!("- &a{i} {open}*a{}{close}\n", i - 1));
        }
        let err = parse_documents(doc.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("nests deeper than 128 levels"),
            "{err}"
        );
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let e = parse_documents(doc.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("too many values"), "{e}");
    }
}
