//! NDJSON / JSON Lines codec: one JSON value per line, blank lines skipped, the line number in every error.

use std::io::{BufRead, Read as _};
use std::sync::Arc;

use serde::de;

use super::json::{into_record, json_error, ExponentScan};
use super::limit::too_large;
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf, RecordBytes};
use crate::error::{Error, Position, Result, Stage};
use crate::record::exponents;
use crate::record::{
    number_from_text, write_json, write_json_str, Key, Record, RecordBuilder, Value,
};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "ndjson",
    extensions: &["ndjson", "jsonl"],
    description: "NDJSON / JSON Lines: one JSON object per line",
    fidelity: Fidelity::Typed,
    streams: true,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    Ok(Box::new(NdjsonDecoder {
        input,
        max_line: options.max_record_size,
        line: Vec::with_capacity(4096),
        line_no: 0,
        records: 0,
        done: false,
        keys: Vec::new(),
    }))
}

struct NdjsonDecoder {
    input: Input,
    /// `--max-record-size`: the longest line read (a longer one stops the run before it fills memory).
    max_line: u64,
    line: Vec<u8>,
    line_no: u64,
    records: u64,
    done: bool,
    /// The field names of the last record, shared with the next one when it has the same names.
    keys: Vec<Key>,
}

/// Parses one line into a record. A line holding an object is read straight into a record whose keys are
/// shared with the previous record's where the names repeat (as they do, line after line, in most files):
/// no allocation per key and no duplicate search. Anything else goes through [`Value`] and [`into_record`].
/// Either way the result, and every error, is what `serde_json::from_slice::<Value>` gives.
///
/// A line holding a number with an exponent is read again with the exponents' spellings queued (see
/// [`ExponentScan`]), so that `1e3` keeps its text; the others are read once.
fn parse_line(text: &[u8], keys: &mut Vec<Key>) -> serde_json::Result<Record> {
    exponents::take_seen();
    let record = parse_line_once(text, keys)?;
    if !exponents::take_seen() {
        return Ok(record);
    }
    exponents::start();
    ExponentScan::default().feed(text);
    let again = parse_line_once(text, keys);
    exponents::stop();
    again
}

fn parse_line_once(text: &[u8], keys: &mut Vec<Key>) -> serde_json::Result<Record> {
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return serde_json::from_slice::<Value>(text).map(into_record); // exponents: see parse_line
    }
    // One UTF-8 check for the whole line is cheaper than one per string; a line that fails it is parsed
    // from bytes, so that the error is serde_json's own.
    match std::str::from_utf8(text) {
        Ok(text) => read_record(serde_json::Deserializer::from_str(text), keys),
        Err(_) => read_record(serde_json::Deserializer::from_slice(text), keys),
    }
}

fn read_record<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    keys: &mut Vec<Key>,
) -> serde_json::Result<Record> {
    let record = de::Deserializer::deserialize_map(&mut de, RecordVisitor { keys })?;
    de.end()?;
    Ok(record)
}

/// Reads a top-level object into a [`Record`], reusing `keys` (see [`parse_line`]).
struct RecordVisitor<'a> {
    keys: &'a mut Vec<Key>,
}

impl<'de> de::Visitor<'de> for RecordVisitor<'_> {
    type Value = Record;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Record, A::Error> {
        let cached = &*self.keys;
        let mut record = RecordBuilder::with_capacity(cached.len().max(8));
        // True while every key so far is the cached key at its position: cached keys are distinct, so the
        // next one can then be appended without searching for a duplicate.
        let mut same = true;
        while let Some(key) = map.next_key_seed(KeySeed {
            cached: cached.get(record.len()).filter(|_| same),
        })? {
            if record.is_empty() && &*key == JSON_NUMBER_TOKEN {
                // What serde_json hands a `Value` for a number; keep `from_slice::<Value>`'s reading of it.
                let text: String = map.next_value()?;
                let number = number_from_text(&text)
                    .ok_or_else(|| de::Error::custom(format!("invalid number {text}")))?;
                return Ok(into_record(number));
            }
            let value: Value = map.next_value()?;
            if same
                && cached
                    .get(record.len())
                    .is_some_and(|c| Arc::ptr_eq(c, &key))
            {
                record.push_unchecked(key, value);
            } else {
                same = false;
                // Duplicate keys: the last one wins, in the first one's place, as in `Value`.
                record.insert(key, value);
            }
        }
        let record = record.finish();
        if !same || record.len() != cached.len() {
            *self.keys = record.iter().map(|(k, _)| k.clone()).collect();
        }
        Ok(record)
    }
}

/// serde_json's private name for a number kept as text (`arbitrary_precision`); see `record.rs`.
const JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// A key: the cached one when the text matches it, a new one otherwise.
struct KeySeed<'a> {
    cached: Option<&'a Key>,
}

impl<'de> de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Key, E> {
        Ok(match self.cached {
            Some(key) if &**key == s => key.clone(),
            _ => Key::from(s),
        })
    }
}

impl NdjsonDecoder {
    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.line.clear();
            let n = (&mut self.input.reader)
                .take(self.max_line.saturating_add(1))
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Error::io(Stage::Decode, Some(&self.input.name), e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            if n as u64 > self.max_line {
                let position = Position::file(self.input.name.clone())
                    .with_record(self.records + 1)
                    .with_line(self.line_no);
                return Err(too_large(position, self.max_line));
            }
            let mut text: &[u8] = &self.line;
            if self.line_no == 1 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.records += 1;
            return match parse_line(text, &mut self.keys) {
                Ok(mut record) => {
                    record.set_line(self.line_no);
                    Ok(Some(record))
                }
                Err(e) => {
                    let err = json_error(&e, Some(self.records));
                    let mut pos = err.position().cloned().unwrap_or_default();
                    pos.line = Some(self.line_no);
                    pos.file = Some(self.input.name.clone());
                    let raw = String::from_utf8_lossy(text.trim_ascii_end()).into_owned();
                    Err(Error::record(Stage::Decode, pos, err.message()).with_raw(raw))
                }
            };
        }
    }
}

/// Builds each record whole from the parse (no cell-by-cell refill): reused records are dropped.
impl crate::format::Decoder for NdjsonDecoder {}

impl Iterator for NdjsonDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        // An I/O error ends the stream; a bad line does not (the next line is independent).
        if matches!(&item, None | Some(Err(_))) && !matches!(&item, Some(Err(e)) if e.is_record()) {
            self.done = true;
        }
        item
    }
}

fn encoder(sink: Box<dyn ByteSink>, _options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    Ok(Box::new(NdjsonEncoder {
        out: OutBuf::new(sink),
        lines: Lines::default(),
    }))
}

struct NdjsonEncoder {
    out: OutBuf,
    lines: Lines,
}

/// Writes records as NDJSON lines: the one place a line is made, for the encoder and for another thread
/// encoding records ahead of it (`Encoder::record_bytes`).
#[derive(Default)]
struct Lines {
    /// The field names of the last record whose shape was new...
    keys: Vec<Key>,
    /// ...and each one written as JSON once: `{"name":` for the first, `,"name":` for the others.
    key_json: Vec<Vec<u8>>,
}

impl Lines {
    /// True if `record` has the cached field names, in order. Decoders with a header (CSV) share one
    /// `Key` per column between all records, so pointer equality usually answers without reading the names
    /// (or touching the reference counts, which the decoding thread is busy updating).
    fn same_shape(&self, record: &Record) -> bool {
        record.len() == self.keys.len()
            && record
                .iter()
                .zip(&self.keys)
                .all(|((key, _), cached)| Arc::ptr_eq(key, cached) || key == cached)
    }

    fn cache_shape(&mut self, record: &Record) {
        self.keys = record.iter().map(|(key, _)| key.clone()).collect();
        self.key_json = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let mut json = vec![if i == 0 { b'{' } else { b',' }];
                write_json_str(&mut json, key);
                json.push(b':');
                json
            })
            .collect();
    }
}

impl RecordBytes for Lines {
    fn encode(&mut self, record: &Record, buf: &mut Vec<u8>) {
        if !self.same_shape(record) {
            self.cache_shape(record);
        }
        if record.is_empty() {
            buf.extend_from_slice(b"{}\n");
            return;
        }
        for (key_json, value) in self.key_json.iter().zip(record.values()) {
            buf.extend_from_slice(key_json);
            write_json(buf, value);
        }
        buf.extend_from_slice(b"}\n");
    }
}

impl Encoder for NdjsonEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.lines.encode(record, &mut self.out.buf);
        self.out.maybe_flush()
    }

    fn record_bytes(&self) -> Option<Box<dyn RecordBytes>> {
        Some(Box::new(Lines::default()))
    }

    fn write_record_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.buf.extend_from_slice(bytes);
        self.out.maybe_flush()
    }

    fn finish(self: Box<Self>) -> Result<u64> {
        self.out.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.out.bytes_written()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the generic path makes of a line: the reference the shared-key path must match.
    fn reference(line: &str) -> serde_json::Result<Record> {
        serde_json::from_slice::<Value>(line.as_bytes()).map(into_record)
    }

    #[test]
    fn shared_keys_read_every_line_as_the_generic_path_does() {
        let lines = [
            r#"{"a":1,"b":"x"}"#,
            r#"{"a":2,"b":"y"}"#,
            r#" {"a":3,"b":"z","c":null}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2,"b":3}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"a":{"x":[1,{"y":0.10}]},"b":"\u00e9\n"}"#,
            r#"{}"#,
            r#"{"a\"":1}"#,
            r#"{"$serde_json::private::Number":"12"}"#,
            r#"[1,2]"#,
            r#"7"#,
            r#"{"a":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":"#,
        ];
        let mut keys = Vec::new();
        for line in lines {
            let ours = parse_line(line.as_bytes(), &mut keys);
            match (ours, reference(line)) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{line}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{line}"),
                (a, b) => panic!("{line}: {a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn repeated_names_share_one_key() {
        let mut keys = Vec::new();
        let first = parse_line(br#"{"id":1,"name":"a"}"#, &mut keys).unwrap();
        let second = parse_line(br#"{"id":2,"name":"b"}"#, &mut keys).unwrap();
        for ((a, _), (b, _)) in first.iter().zip(second.iter()) {
            assert!(Arc::ptr_eq(a, b), "{a}");
        }
    }
}
