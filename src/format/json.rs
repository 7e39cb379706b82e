//! JSON codec: a top-level array of records streamed one element at a time, or a single object.
//!
//! Reading never holds more than one element in memory, so a 2 GB array streams. An element that is not an
//! object (a number, a string, a nested array) becomes the record `{"value": ...}` rather than being lost.
//! Writing produces an array with one record per line. Numbers keep their exact text (see
//! [`crate::record::number_from_text`]).

use std::fmt;
use std::io::BufRead;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::limit::{too_large, Budget, Limited};
use super::{pushed_records, Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::record::exponents::{self, Spelling};
use crate::record::{write_json_record, Key, Record, Value};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "json",
    extensions: &["json"],
    description: "JSON: an array of objects (streamed), or one object",
    fidelity: Fidelity::Typed,
    streams: true,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

/// Parses one complete JSON value from bytes (used by tests and by other codecs' cells).
pub fn parse_value(bytes: &[u8]) -> Result<Value> {
    let bytes = strip_bom(bytes);
    exponents::start();
    ExponentScan::default().feed(bytes);
    let value = serde_json::from_slice(bytes).map_err(|e| json_error(&e, None));
    exponents::stop();
    value
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Converts a serde_json error into a decode error with line and column.
pub(super) fn json_error(e: &serde_json::Error, record: Option<u64>) -> Error {
    let text = e.to_string();
    // serde_json appends " at line L column C"; the position carries those, so keep the sentence short.
    let message = match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let message = super::limit::clear_depth_message(message);
    let mut position = Position::default();
    if e.line() > 0 {
        position = position
            .with_line(e.line() as u64)
            .with_column(e.column() as u64);
    }
    if let Some(r) = record {
        position = position.with_record(r);
    }
    Error::data(Stage::Decode, position, message)
}

/// Turns any JSON value into a record: objects are records, anything else is wrapped as `{"value": ...}`.
pub(super) fn into_record(value: Value) -> Record {
    match value {
        Value::Object(record) => record,
        other => {
            let mut record = Record::with_capacity(1);
            record.push_unchecked(Key::from("value"), other);
            record
        }
    }
}

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input {
        mut reader, name, ..
    } = input;
    let max_record = options.max_record_size;
    Ok(Box::new(pushed_records(move |emit| {
        if let Err(e) = skip_bom(&mut reader) {
            emit(Err(Error::io(Stage::Decode, Some(&name), e)));
            return;
        }
        let mut count = 0u64;
        // The exponents' spellings are queued as the bytes go to the parser, for the numbers' exact text.
        exponents::start();
        let reader = SpellingReader {
            inner: reader,
            scan: ExponentScan::default(),
        };
        // Each array element (or the one root object) may take at most `max_record` bytes.
        let (reader, budget) = Limited::new(reader, max_record);
        let mut de = serde_json::Deserializer::from_reader(reader);
        let root = RootVisitor {
            emit: &mut *emit,
            count: &mut count,
            budget: &budget,
            cancelled: false,
        };
        let result = de.deserialize_any(root).and_then(|()| de.end());
        match result {
            Err(_) if budget.exceeded() => {
                let position = Position::file(name.clone())
                    .with_record(count + 1)
                    .with_line(budget.record_line());
                emit(Err(too_large(position, budget.limit())));
            }
            Err(e) if !e.to_string().starts_with(CANCELLED) => {
                emit(Err(
                    json_error(&e, Some(count + 1)).with_context(Some(&name), None)
                ));
            }
            _ => {}
        }
        exponents::stop();
    })))
}

/// Finds how the exponents of JSON numbers are spelled (`1E3`, `1e+3`, `1e3`), outside strings, in input
/// that arrives in pieces, and queues each spelling for [`number_from_text`](crate::record::number_from_text),
/// in the order the parser meets the numbers.
#[derive(Debug, Default)]
pub(super) struct ExponentScan {
    in_string: bool,
    escaped: bool,
    /// The byte before the current one (a digit before `e` makes it an exponent).
    previous: u8,
    /// An exponent letter ended the last piece: its sign (or digit) is the next byte.
    pending: Option<bool>,
}

impl ExponentScan {
    /// Scans the next piece of input.
    pub(super) fn feed(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if let Some(upper) = self.pending.take() {
                let signed = matches!(bytes[i], b'+' | b'-');
                exponents::push(Spelling { upper, signed });
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    Some(at) => {
                        i += at;
                        if bytes[i] == b'"' {
                            self.in_string = false;
                        } else {
                            self.escaped = true;
                        }
                    }
                    None => i = bytes.len() - 1,
                }
            } else {
                match memchr::memchr3(b'"', b'e', b'E', &bytes[i..]) {
                    Some(at) => {
                        i += at;
                        let previous = if at > 0 { bytes[i - 1] } else { self.previous };
                        match bytes[i] {
                            b'"' => self.in_string = true,
                            letter if previous.is_ascii_digit() => {
                                self.pending = Some(letter == b'E')
                            }
                            _ => {}
                        }
                    }
                    None => i = bytes.len() - 1,
                }
            }
            self.previous = bytes[i];
            i += 1;
        }
    }
}

/// A reader that shows every byte it passes on to an [`ExponentScan`].
struct SpellingReader<R> {
    inner: R,
    scan: ExponentScan,
}

impl<R: std::io::Read> std::io::Read for SpellingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.scan.feed(&buf[..n]);
        Ok(n)
    }
}

fn skip_bom(reader: &mut Box<dyn BufRead + Send>) -> std::io::Result<()> {
    if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
        reader.consume(3);
    }
    Ok(())
}

const CANCELLED: &str = "ferry: reader went away";

/// Drives the root of the document, emitting each array element as soon as it is parsed.
struct RootVisitor<'a> {
    emit: &'a mut dyn FnMut(Result<Record>) -> bool,
    count: &'a mut u64,
    /// Marks where each element starts, for `--max-record-size`.
    budget: &'a Budget,
    cancelled: bool,
}

impl RootVisitor<'_> {
    fn single<E: de::Error>(mut self, value: Value) -> Result<(), E> {
        *self.count += 1;
        let mut record = into_record(value);
        record.set_line(self.budget.record_line());
        self.cancelled = !(self.emit)(Ok(record));
        Ok(())
    }
}

impl<'de> Visitor<'de> for RootVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of records or a JSON object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element_seed(ElementSeed)? {
            let line = self.budget.record_line();
            self.budget.next_record();
            *self.count += 1;
            let mut record = into_record(value);
            record.set_line(line);
            if !(self.emit)(Ok(record)) {
                return Err(de::Error::custom(CANCELLED));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.single(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.single(Value::Null)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.single(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<(), E> {
        self.single(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        self.single(Value::deserialize(de::value::U64Deserializer::<E>::new(u))?)
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.single(Value::Float(x))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.single(Value::String(s.to_owned()))
    }
}

struct ElementSeed;

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
}

fn encoder(sink: Box<dyn ByteSink>, _options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    Ok(Box::new(JsonEncoder {
        out: OutBuf::new(sink),
        records: 0,
    }))
}

struct JsonEncoder {
    out: OutBuf,
    records: u64,
}

impl Encoder for JsonEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.out
            .buf
            .extend_from_slice(if self.records == 0 { b"[\n" } else { b",\n" });
        write_json_record(&mut self.out.buf, record);
        self.records += 1;
        self.out.maybe_flush()
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out
            .buf
            .extend_from_slice(if self.records == 0 { b"[]\n" } else { b"\n]\n" });
        self.out.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.out.bytes_written()
    }
}
