//! YAML codec (serde_yaml): a sequence of mappings, or a stream of `---` documents each holding a mapping
//! (or a sequence of them).
//!
//! The YAML parser needs the whole input in memory, so this decoder reads it at once — at most
//! `--max-document-size` bytes (64 MiB by default): a format limit, said in `ferry formats`. Aliases are
//! expanded by serde_yaml, which stops a "billion laughs" document with an error. Tags are dropped and their
//! values kept, as YAML → JSON converters do. Decimals, dates, timestamps and bytes are written as strings,
//! because a YAML float could not keep every digit.

use std::fmt;

use serde::de::{self, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::json::into_record;
use super::limit::read_whole;
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Record, Value, ValueVisitor};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "yaml",
    extensions: &["yaml", "yml"],
    description: "YAML: a sequence of mappings or a stream of documents (read whole)",
    fidelity: Fidelity::Typed,
    streams: false,
    decoder,
    encoder,
};

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
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let document = document
            .deserialize_any(DocumentVisitor)
            .map_err(|e| yaml_error(&e))?;
        documents.extend(document);
    }
    Ok(documents)
}

/// One document of a stream, or `None` for the placeholder serde_yaml reports for a stream that holds no
/// document at all (only comments, or nothing). The placeholder is the one thing that reaches a visitor
/// through `visit_none`; an empty document (`---` alone) is a null scalar and arrives through `visit_unit`.
struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML document")
    }
    fn visit_none<E>(self) -> Result<Option<Value>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<Value>, E> {
        Ok(Some(Value::Null))
    }
    fn visit_bool<E>(self, b: bool) -> Result<Option<Value>, E> {
        Ok(Some(Value::Bool(b)))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Option<Value>, E> {
        Ok(Some(Value::Int(i)))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Option<Value>, E> {
        ValueVisitor.visit_u64(u).map(Some)
    }
    fn visit_i128<E: de::Error>(self, i: i128) -> Result<Option<Value>, E> {
        ValueVisitor.visit_i128(i).map(Some)
    }
    fn visit_u128<E: de::Error>(self, u: u128) -> Result<Option<Value>, E> {
        ValueVisitor.visit_u128(u).map(Some)
    }
    fn visit_f64<E>(self, x: f64) -> Result<Option<Value>, E> {
        Ok(Some(Value::Float(x)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Option<Value>, E> {
        Ok(Some(Value::String(s)))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        Value::deserialize(d).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<Value>, A::Error> {
        ValueVisitor.visit_seq(seq).map(Some)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<Value>, A::Error> {
        ValueVisitor.visit_map(map).map(Some)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Option<Value>, A::Error> {
        ValueVisitor.visit_enum(data).map(Some)
    }
}

fn yaml_error(e: &serde_yaml::Error) -> Error {
    let mut pos = Position::default();
    if let Some(loc) = e.location() {
        pos = pos
            .with_line(loc.line() as u64)
            .with_column(loc.column() as u64);
    }
    let text = e.to_string();
    // serde_yaml appends " at line L column C"; the position already says it.
    let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
    let message = super::limit::clear_depth_message(message);
    Error::data(Stage::Decode, pos, message)
}

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input { mut reader, name } = input;
    let bytes = read_whole(&mut reader, options.max_document_size, &name, "YAML")?;
    let items: Vec<Result<Record>> = match parse_documents(&bytes) {
        Ok(documents) => documents
            .into_iter()
            .flat_map(document_records)
            .map(Ok)
            .collect(),
        Err(e) => vec![Err(e.with_context(Some(&name), None))],
    };
    Ok(Box::new(items.into_iter()))
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
    /// Each record becomes one item of a top-level sequence: serde_yaml renders the mapping, and its lines
    /// are indented under `- `.
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.records += 1;
        let text = serde_yaml::to_string(record).map_err(|e| {
            Error::data(
                Stage::Encode,
                Position::default().with_record(self.records),
                e.to_string(),
            )
        })?;
        for (i, line) in text.lines().enumerate() {
            let prefix: &[u8] = match (i, line.is_empty()) {
                (0, _) => b"- ",
                (_, true) => b"",
                _ => b"  ",
            };
            self.out.buf.extend_from_slice(prefix);
            self.out.buf.extend_from_slice(line.as_bytes());
            self.out.buf.push(b'\n');
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Decimal;

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
    fn integers_beyond_64_bits_are_exact_decimals() {
        let docs = parse_documents(
            b"big: 100000000000000000000\nneg: -100000000000000000000\n18446744073709551616: k\n",
        )
        .unwrap();
        let Value::Object(record) = &docs[0] else {
            panic!("not a mapping: {docs:?}")
        };
        let decimal = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
        assert_eq!(record.get("big"), Some(&decimal("100000000000000000000")));
        assert_eq!(record.get("neg"), Some(&decimal("-100000000000000000000")));
        assert_eq!(
            record.get("18446744073709551616"),
            Some(&Value::String("k".into()))
        );
    }

    #[test]
    fn the_non_specific_tag_keeps_a_scalar_as_written_text() {
        let docs =
            parse_documents(b"a: ! 012\nb: ! true\nc: !!int 12\nd: !local 7\ne: !local [1]\n")
                .unwrap();
        let Value::Object(record) = &docs[0] else {
            panic!("not a mapping: {docs:?}")
        };
        assert_eq!(record.get("a"), Some(&Value::String("012".into())));
        assert_eq!(record.get("b"), Some(&Value::String("true".into())));
        assert_eq!(record.get("c"), Some(&Value::Int(12)));
        assert_eq!(
            record.get("d"),
            Some(&Value::Int(7)),
            "other tags are dropped"
        );
        assert_eq!(record.get("e"), Some(&Value::Array(vec![Value::Int(1)])));
        let err = parse_documents(b"e: ! [1]\n").unwrap_err();
        assert!(err.to_string().contains("on scalars only"), "{err}");
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
    }

    #[test]
    fn an_alias_bomb_ends_fast_with_an_error() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..30 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let err = parse_documents(bomb.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("repetition limit exceeded"),
            "{err}"
        );
    }
}
