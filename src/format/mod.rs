//! The decode and encode stages: the [`Decoder`] and [`Encoder`] traits and the one list of registered formats.
//!
//! Adding a format is one new file in this folder and one line in [`FORMATS`]; the round-trip tests loop over
//! that list, so a new format is tested the day it is added.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record::{Key, Record};
use crate::sink::ByteSink;

mod csv;
mod excel;
mod json;
pub mod limit;
mod markdown;
mod ndjson;
mod parquet;
mod xml;
mod yaml;

pub use excel::{sheet_names, ExcelOptions};
pub use json::parse_value as parse_json_value;
pub use parquet::{ParquetCompression, ParquetOptions};
pub use yaml::parse_documents as parse_yaml_documents;

/// Turns input bytes into records, in input order. Errors name the record and, where the format has them,
/// line and column.
pub trait Decoder: Iterator<Item = Result<Record>> + Send {
    /// Takes back a record the run has finished with. A decoder that builds records cell by cell refills
    /// its memory for the next record instead of allocating anew (and freeing the old); the others drop it.
    fn reuse(&mut self, record: Record) {
        drop(record);
    }

    /// Like [`Iterator::next`], but a row holding exactly the fields `keys` names, in that order, each as
    /// plain text (which a record would hold, unchanged, as [`crate::Value::String`]) may go to `rows`
    /// instead of becoming a record: then `Ok(None)`. Every other row comes back as its record, or its
    /// error, as from `next`. A decoder that does not know its rows' text returns records only.
    fn next_or_text_row(
        &mut self,
        keys: &[Key],
        rows: &mut dyn TextRows,
    ) -> Option<Result<Option<Record>>> {
        let _ = (keys, rows);
        self.next().map(|item| item.map(Some))
    }
}

/// Where a decoder hands rows of plain text that skip the record stage (see
/// [`Decoder::next_or_text_row`]): a table sink whose columns take text as it is encodes them directly.
pub trait TextRows {
    /// One row: its fields' texts one after another in `text`, field `i` ending at `ends[i]`; `line` is
    /// where the row starts in the input. False when the row is not taken: the decoder then makes it a
    /// record.
    fn row(&mut self, line: u64, text: &str, ends: &[usize]) -> bool;
}

/// Any iterator of records, as a decoder that does not reuse records.
///
/// ```
/// use ferry::{Decoded, Decoder, Record};
/// let records = vec![Record::new(), Record::new()];
/// let decoder: Box<dyn Decoder> = Box::new(Decoded(records.into_iter().map(Ok)));
/// assert_eq!(decoder.count(), 2);
/// ```
pub struct Decoded<I>(pub I);

impl<I: Iterator<Item = Result<Record>> + Send> Iterator for Decoded<I> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<I: Iterator<Item = Result<Record>> + Send> Decoder for Decoded<I> {}

/// Turns records into output bytes. `finish()` closes what the encoder opened (the JSON array, the XML root)
/// and then finishes the sink beneath; dropping an encoder without `finish()` leaves no final output.
pub trait Encoder: Send {
    /// Writes one record.
    fn write_record(&mut self, record: &Record) -> Result<()>;

    /// Closes the format and finishes the sink; returns the bytes written.
    fn finish(self: Box<Self>) -> Result<u64>;

    /// Bytes handed to the sink so far.
    fn bytes_written(&self) -> u64;

    /// Records taken that `finish()` will leave out (a sort's `--limit`): the run counts them as filtered.
    fn left_out(&self) -> u64 {
        0
    }

    /// An encoder of single records for another thread, making exactly the bytes `write_record` would write,
    /// when this encoder's records are written independently of one another and never refused (NDJSON
    /// lines); its bytes come back through `write_record_bytes`, in order.
    fn record_bytes(&self) -> Option<Box<dyn RecordBytes>> {
        None
    }

    /// Writes the bytes `record_bytes`' encoder made of one record, as `write_record` would have.
    fn write_record_bytes(&mut self, _bytes: &[u8]) -> Result<()> {
        Err(Error::data(
            crate::error::Stage::Encode,
            crate::error::Position::default(),
            "encoded bytes for an encoder that does not take them (internal error)",
        ))
    }
}

/// Encodes records on another thread than their encoder's (see `Encoder::record_bytes`).
pub trait RecordBytes: Send {
    /// Appends the bytes of `record` to `out`.
    fn encode(&mut self, record: &Record, out: &mut Vec<u8>);
}

/// An input stream with the name errors should use for it.
pub struct Input {
    /// The bytes.
    pub reader: Box<dyn BufRead + Send>,
    /// The file name, or `-` for standard input.
    pub name: String,
    /// The file itself, when `reader` gives exactly its bytes (no envelope layer, no transcoding): a format
    /// that must seek (Parquet's footer, a workbook's zip directory) opens it instead of spooling.
    pub file: Option<std::path::PathBuf>,
}

impl Input {
    /// An input read as a stream only.
    pub fn new(reader: Box<dyn BufRead + Send>, name: impl Into<String>) -> Input {
        Input {
            reader,
            name: name.into(),
            file: None,
        }
    }

    /// The input as a file that can seek: the file itself when there is one, else the stream copied to an
    /// anonymous temporary file (deleted when closed) of at most `cap` bytes (`--max-document-size`): a
    /// pipe, a compressed or encrypted file. A larger stream is an error naming the cap.
    pub fn seekable(self, cap: u64, format: &str) -> Result<std::fs::File> {
        use crate::error::{Position, Stage};
        if let Some(path) = &self.file {
            return std::fs::File::open(path)
                .map_err(|e| Error::io(Stage::Source, Some(&self.name), e));
        }
        let Input { reader, name, .. } = self;
        let io_error = |e: std::io::Error| Error::io(Stage::Source, Some(&name), e);
        let mut spool = tempfile::tempfile().map_err(io_error)?;
        let copied = std::io::copy(
            &mut std::io::Read::take(reader, cap.saturating_add(1)),
            &mut spool,
        )
        .map_err(io_error)?;
        if copied > cap {
            return Err(Error::data(
                Stage::Source,
                Position::file(name.clone()),
                format!(
                    "{format} is read from a file that can seek, and this input is a stream (a pipe, or a \
                     compressed or encrypted file) larger than --max-document-size ({cap} bytes) to copy \
                     aside: give the plain file's path, or raise --max-document-size"
                ),
            ));
        }
        std::io::Seek::rewind(&mut spool).map_err(io_error)?;
        Ok(spool)
    }
}

/// How much of a record's types a format carries through a write and a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    /// Nulls, booleans, numbers, strings, arrays and objects come back typed (JSON, NDJSON, YAML).
    Typed,
    /// Everything comes back as text, in [`crate::Value::to_text`] form (CSV, Markdown, XML).
    Text,
    /// Each field is one typed column (Parquet): values come back typed where a field's values share one
    /// type, and as their text (nested values as JSON) in a field whose values differ in type.
    Columns,
}

/// Format options, checked once when a job is built ([`FormatOptions::encoding`]) and a decoder or encoder
/// made. In a job file characters are one-character strings (`"delimiter": ";"`, `"\t"` for a tab) and the
/// encoding is its label (`"encoding": "latin1"`); everything has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormatOptions {
    /// CSV field delimiter (default `,`; `\t` for TSV).
    #[serde(with = "byte_char", skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<u8>,
    /// CSV quote character (default `"`).
    #[serde(with = "one_char")]
    pub quote: u8,
    /// CSV escape character for quotes inside quoted fields (default: doubled quotes).
    #[serde(with = "byte_char", skip_serializing_if = "Option::is_none")]
    pub escape: Option<u8>,
    /// CSV comment character: lines starting with it are skipped.
    #[serde(with = "byte_char", skip_serializing_if = "Option::is_none")]
    pub comment: Option<u8>,
    /// CSV: the first row is a header (default true).
    pub header: bool,
    /// Column names to use instead of (or, without a header, for) the first row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// CSV: rows with fewer fields than the header are padded with nulls instead of failing.
    pub allow_ragged: bool,
    /// CSV: accept malformed quoting as the csv crate does (`--csv-lenient-quotes`): a quote inside an
    /// unquoted field is kept as text, text after a closing quote is appended, and an unterminated quote runs
    /// to the end of the input. By default each of these is an error naming its line and column.
    pub csv_lenient_quotes: bool,
    /// CSV/Markdown: cells holding a JSON array or object are read back as nested values.
    pub json_cells: bool,
    /// The character encoding of the input, as a WHATWG label (`latin1`, `windows-1252`, `utf-16le`);
    /// default UTF-8. [`FormatOptions::encoding`] looks it up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// `--max-record-size`: input bytes one record may take (default 64 MiB).
    pub max_record_size: u64,
    /// `--max-document-size`: input bytes a format read whole (YAML, Markdown) may take (default 64 MiB).
    pub max_document_size: u64,
    /// `--null-marker`: CSV/Markdown text that stands for null (`\N`, `NULL`): a cell holding exactly it
    /// is read as null, and null is written as it. Default: none — null is written as an empty cell, and
    /// an empty cell is read as empty text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_marker: Option<String>,
    /// How many of the first records fix a CSV or Markdown header (the union of their fields), or a
    /// Parquet schema; set from the job's `sample_records`.
    #[serde(skip)]
    pub sample_records: usize,
    /// The fields the run keeps (`--select` without a template or `--where`): a columnar reader reads only
    /// these columns. Set by the run, never by a job file.
    #[serde(skip)]
    pub projection: Option<Vec<String>>,
    /// The template's output fields in order, with their declared column kinds (through the one type
    /// table, [`crate::db::ColumnKind`]): a typed writer (Parquet) takes its schema from them
    /// instead of sampling. Set by the run, never by a job file.
    #[serde(skip)]
    pub declared: Vec<(String, Option<crate::db::ColumnKind>)>,
    /// The input's column names once its decoder knows them (a CSV header), shared by the run's read and
    /// write options: an output of no records still gets its columns (a Parquet schema). Never in a job
    /// file.
    #[serde(skip)]
    pub input_columns: InputColumns,
    /// Parquet's own options (`"parquet": {"compression": "zstd", "row_group_size": 122880}`).
    #[serde(skip_serializing_if = "ParquetOptions::is_default")]
    pub parquet: ParquetOptions,
    /// Workbook options (`"excel": {"sheet": "Sales", "header_row": 3}`).
    #[serde(skip_serializing_if = "ExcelOptions::is_default")]
    pub excel: ExcelOptions,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            delimiter: None,
            quote: b'"',
            escape: None,
            comment: None,
            header: true,
            columns: None,
            allow_ragged: false,
            csv_lenient_quotes: false,
            json_cells: false,
            encoding: None,
            max_record_size: limit::DEFAULT_MAX_RECORD_SIZE,
            max_document_size: limit::DEFAULT_MAX_DOCUMENT_SIZE,
            null_marker: None,
            sample_records: crate::infer::DEFAULT_SAMPLE_RECORDS,
            projection: None,
            declared: Vec::new(),
            input_columns: InputColumns::default(),
            parquet: ParquetOptions::default(),
            excel: ExcelOptions::default(),
        }
    }
}

impl FormatOptions {
    /// The input's character encoding: `None` for UTF-8 (the default), else the one its label names. An
    /// unknown label is a configuration error.
    ///
    /// ```
    /// let options = ferry::FormatOptions { encoding: Some("latin1".into()), ..Default::default() };
    /// assert_eq!(options.encoding().unwrap().unwrap().name(), "windows-1252");
    /// ```
    pub fn encoding(&self) -> Result<Option<&'static encoding_rs::Encoding>> {
        let Some(label) = &self.encoding else {
            return Ok(None);
        };
        encoding_rs::Encoding::for_label(label.trim().as_bytes())
            .map(Some)
            .ok_or_else(|| {
                Error::config(format!(
                    "unknown encoding {label:?}; try utf-8, latin1, windows-1252, utf-16le"
                ))
            })
    }
}

/// The input's column names as its decoder learns them, shared between clones of the options it was made
/// with (so the run's encoder sees what the decoder read); options compare equal whatever it holds.
#[derive(Debug, Clone, Default)]
pub struct InputColumns(std::sync::Arc<std::sync::OnceLock<Vec<String>>>);

impl InputColumns {
    /// Records the input's columns (the first call wins).
    pub fn learn(&self, names: impl Iterator<Item = String>) {
        let _ = self.0.set(names.collect());
    }

    /// The columns, once learnt.
    pub fn get(&self) -> Option<&[String]> {
        self.0.get().map(Vec::as_slice)
    }
}

impl PartialEq for InputColumns {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InputColumns {}

/// Parses a one-character option such as `--delimiter`: a single ASCII character, or `tab` / `\t`.
pub fn parse_byte(text: &str) -> std::result::Result<u8, String> {
    match text {
        "\\t" | "tab" | "\t" => Ok(b'\t'),
        _ if text.len() == 1 && text.is_ascii() => Ok(text.as_bytes()[0]),
        _ => Err(format!(
            "expected one ASCII character (or `tab`), got {text:?}"
        )),
    }
}

/// A byte option as a one-character string in job files.
mod one_char {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(byte: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&char::from(*byte).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        super::parse_byte(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// An optional byte option as a one-character string in job files.
mod byte_char {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(byte: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
        match byte {
            Some(b) => super::one_char::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::one_char")] u8);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(b)| b))
    }
}

impl FormatOptions {
    /// The error for a text value that a `--null-marker` would turn into null when read back.
    pub(crate) fn marker_clash(&self, record: &Record, number: u64) -> Result<()> {
        let Some(marker) = &self.null_marker else {
            return Ok(());
        };
        let clash = record
            .iter()
            .find(|(_, v)| matches!(v, crate::record::Value::String(s) if s == marker));
        match clash {
            Some((key, _)) => Err(Error::record(
                crate::error::Stage::Encode,
                crate::error::Position::default()
                    .with_record(number)
                    .with_field(key.to_string()),
                format!(
                    "the text {marker:?} is the --null-marker, so it would be read back as null; choose \
                     a marker that no value equals"
                ),
            )),
            None => Ok(()),
        }
    }

    /// A cell read from text: null when it is the `--null-marker`.
    pub(crate) fn is_null_marker(&self, text: &str) -> bool {
        self.null_marker.as_deref() == Some(text)
    }
}

/// Builds a decoder for an input.
pub type DecoderFactory = fn(Input, &FormatOptions) -> Result<Box<dyn Decoder>>;
/// Builds an encoder over a sink.
pub type EncoderFactory = fn(Box<dyn ByteSink>, &FormatOptions) -> Result<Box<dyn Encoder>>;

/// A registered format.
pub struct Format {
    /// The name used by `--from-format` / `--to-format`.
    pub name: &'static str,
    /// File extensions (without the dot) that select this format.
    pub extensions: &'static [&'static str],
    /// One line for `ferry formats`.
    pub description: &'static str,
    /// What survives a round trip through this format.
    pub fidelity: Fidelity,
    /// Whether the decoder streams (constant memory) or must read the whole input.
    pub streams: bool,
    /// Builds a decoder; `None` for a format ferry only writes.
    pub decoder: Option<DecoderFactory>,
    /// Builds an encoder; `None` for a format ferry only reads (a workbook).
    pub encoder: Option<EncoderFactory>,
}

impl Format {
    /// The decoder factory, or the error for a format ferry does not read.
    pub fn reader(&self) -> Result<DecoderFactory> {
        self.decoder.ok_or_else(|| {
            Error::config(format!("ferry writes {} but does not read it", self.name))
        })
    }

    /// The encoder factory, or the error for a format ferry does not write.
    pub fn writer(&self) -> Result<EncoderFactory> {
        self.encoder.ok_or_else(|| {
            Error::config(format!(
                "ferry reads {} but does not write it; write csv or parquet instead",
                self.name
            ))
        })
    }

    /// A decoder for `input` (see [`Format::reader`]).
    pub fn decode(&self, input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
        (self.reader()?)(input, options)
    }

    /// An encoder over `sink` (see [`Format::writer`]).
    pub fn encode(
        &self,
        sink: Box<dyn ByteSink>,
        options: &FormatOptions,
    ) -> Result<Box<dyn Encoder>> {
        (self.writer()?)(sink, options)
    }
}

/// Every format ferry reads and writes.
pub static FORMATS: &[Format] = &[
    json::FORMAT,
    ndjson::FORMAT,
    csv::CSV,
    csv::TSV,
    xml::FORMAT,
    yaml::FORMAT,
    markdown::FORMAT,
    parquet::FORMAT,
    excel::XLSX,
    excel::XLS,
    excel::ODS,
];

/// Finds a format by name (case-insensitive).
pub fn by_name(name: &str) -> Result<&'static Format> {
    FORMATS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Error::config(format!(
                "unknown format {name:?}; known formats: {}",
                names().join(", ")
            ))
        })
}

/// Finds a format by file extension (case-insensitive, without the dot).
pub fn by_extension(ext: &str) -> Option<&'static Format> {
    FORMATS
        .iter()
        .find(|f| f.extensions.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// The names of all registered formats.
pub fn names() -> Vec<&'static str> {
    FORMATS.iter().map(|f| f.name).collect()
}

/// Splits a decoder's work into a thread that does not block the caller: used by decoders whose parser
/// pushes values (serde visitors) rather than letting us pull them.
pub(crate) fn pushed_records<F>(produce: F) -> Decoded<impl Iterator<Item = Result<Record>> + Send>
where
    F: FnOnce(&mut dyn FnMut(Result<Record>) -> bool) + Send + 'static,
{
    const BATCH: usize = 256;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Record>>>(4);
    std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        let mut emit = |item: Result<Record>| {
            let is_err = item.is_err();
            batch.push(item);
            if batch.len() >= BATCH || is_err {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if tx.send(full).is_err() {
                    return false; // the reader went away: stop parsing
                }
            }
            !is_err
        };
        // A panic in the parser must not look like a clean end of input: it becomes an error record.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(&mut emit)));
        if outcome.is_err() {
            let message = "the parser stopped unexpectedly (internal error); the input was not read to its end";
            batch.push(Err(Error::data(
                crate::error::Stage::Decode,
                crate::error::Position::default(),
                message,
            )));
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
    });
    Decoded(rx.into_iter().flatten())
}

/// An output buffer in front of a sink: encoders append bytes and the buffer goes to the sink in large writes.
pub(crate) struct OutBuf {
    sink: Box<dyn ByteSink>,
    /// The bytes not yet handed to the sink.
    pub buf: Vec<u8>,
}

impl OutBuf {
    const SIZE: usize = 64 * 1024;

    pub fn new(sink: Box<dyn ByteSink>) -> OutBuf {
        OutBuf {
            sink,
            buf: Vec::with_capacity(Self::SIZE + 4096),
        }
    }

    /// Hands the buffer to the sink once it is large enough.
    pub fn maybe_flush(&mut self) -> Result<()> {
        if self.buf.len() >= Self::SIZE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        use std::io::Write as _;
        self.sink
            .write_all(&self.buf)
            .map_err(|e| Error::io(crate::error::Stage::Sink, None, e))?;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left and finishes the sink.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        self.sink.finish()
    }

    /// Bytes written so far, buffered ones included.
    pub fn bytes_written(&self) -> u64 {
        self.sink.bytes_written() + self.buf.len() as u64
    }
}
