//! YAML codec (serde_yaml): a sequence of mappings, or a stream of `---` documents each holding a mapping
//! (or a sequence of them).
//!
//! The YAML parser needs the whole input in memory, so this decoder reads it at once: a format limit, said in
//! `ferry formats`. Aliases are expanded by serde_yaml, which stops a "billion laughs" document with an error.
//! Tags are dropped and their values kept, as YAML → JSON converters do. Decimals, dates, timestamps and bytes
//! are written as strings, because a YAML float could not keep every digit.

use std::io::Read as _;

use serde::Deserialize;

use super::json::into_record;
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Record, Value};
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
        documents.push(Value::deserialize(document).map_err(|e| yaml_error(&e))?);
    }
    Ok(documents)
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
    Error::data(Stage::Decode, pos, message)
}

fn decoder(input: Input, _options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input { mut reader, name } = input;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(Stage::Decode, Some(&name), e))?;
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
