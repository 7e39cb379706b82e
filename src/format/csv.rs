//! CSV and TSV codec (the `csv` crate): a header row, quotes, embedded newlines, CRLF, a UTF-8 BOM.
//!
//! Every cell is read as a string: no type is guessed, so `08123` keeps its zero (a template declares types).
//! Nested values are written as compact JSON text in the cell and, with `--json-cells`, read back as nested
//! values. The header is fixed by the first record; a later record with a field the header lacks is an error,
//! not a silently dropped value.

use std::collections::HashSet;
use std::io::BufRead;

use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input};
use crate::error::{Error, Position, Result, Stage};
use crate::infer::HeaderSample;
use crate::record::{Key, Record, Value};
use crate::sink::ByteSink;

pub(super) const CSV: Format = Format {
    name: "csv",
    extensions: &["csv"],
    description:
        "CSV with a header row (RFC 4180 quoting; --delimiter, --no-header, --allow-ragged)",
    fidelity: Fidelity::Text,
    streams: true,
    decoder: csv_decoder,
    encoder: csv_encoder,
};

pub(super) const TSV: Format = Format {
    name: "tsv",
    extensions: &["tsv", "tab"],
    description: "tab-separated values (CSV rules with a tab delimiter)",
    fidelity: Fidelity::Text,
    streams: true,
    decoder: tsv_decoder,
    encoder: tsv_encoder,
};

fn csv_decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    CsvDecoder::build(input, options, b',')
}

fn tsv_decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    CsvDecoder::build(input, options, b'\t')
}

fn csv_encoder(sink: Box<dyn ByteSink>, options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    CsvEncoder::build(sink, options, b',')
}

fn tsv_encoder(sink: Box<dyn ByteSink>, options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    CsvEncoder::build(sink, options, b'\t')
}

struct CsvDecoder {
    input: Box<dyn BufRead + Send>,
    parser: csv_core::Reader,
    name: String,
    header: Option<Vec<Key>>,
    row: Row,
    /// `--comment`: lines starting with it are skipped.
    comment: Option<u8>,
    /// `--max-record-size`: the input bytes one row may take.
    max_row: u64,
    records: u64,
    allow_ragged: bool,
    json_cells: bool,
    /// `--null-marker`: a cell holding exactly it is null.
    null_marker: Option<String>,
    done: bool,
}

/// The cells of the row just read, one after another, and where each ends.
#[derive(Default)]
struct Row {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// The line the row starts on (1-based).
    line: u64,
    /// The row's text as read (kept for the rejects file when the row is bad).
    raw: Vec<u8>,
}

impl Row {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }

    /// All the cells' bytes.
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.ends.last().copied().unwrap_or(0)]
    }

    /// The row's text as read, without its line ending (invalid UTF-8 shown as U+FFFD).
    fn raw_text(&self) -> String {
        let end = self.raw.iter().rposition(|&b| b != b'\n' && b != b'\r');
        String::from_utf8_lossy(&self.raw[..end.map_or(0, |i| i + 1)]).into_owned()
    }
}

impl CsvDecoder {
    fn build(
        input: Input,
        options: &FormatOptions,
        default_delimiter: u8,
    ) -> Result<Box<dyn Decoder>> {
        let parser = csv_core::ReaderBuilder::new()
            .delimiter(options.delimiter.unwrap_or(default_delimiter))
            .quote(options.quote)
            .escape(options.escape)
            .double_quote(options.escape.is_none())
            .comment(options.comment)
            .build();
        let mut decoder = CsvDecoder {
            input: input.reader,
            parser,
            name: input.name,
            header: None,
            row: Row::default(),
            comment: options.comment,
            max_row: options.max_record_size,
            records: 0,
            allow_ragged: options.allow_ragged,
            json_cells: options.json_cells,
            null_marker: options.null_marker.clone(),
            done: false,
        };
        if options.header {
            decoder.header = decoder.read_header()?;
        }
        if let Some(columns) = &options.columns {
            decoder.header = Some(checked_names(
                columns.iter().map(String::as_str),
                &decoder.name,
            )?);
        }
        Ok(Box::new(decoder))
    }

    fn row_position(&self) -> Position {
        Position::file(self.name.clone()).with_line(self.row.line)
    }

    /// Skips what lies between rows — blank lines, the `\n` of a `\r\n`, comment lines — so that the row
    /// read next starts exactly where its line number says. (Left to the parser, they would be skipped as
    /// part of the next row, whose line would then be where the skipping began: one too low under CRLF.)
    fn skip_to_row(&mut self) -> Result<()> {
        let mut in_comment = false;
        loop {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| Error::io(Stage::Decode, Some(&self.name), e))?;
            let Some(&first) = buf.first() else {
                return Ok(());
            };
            let (skip, newlines) = if in_comment {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        in_comment = false;
                        (end + 1, 1)
                    }
                    None => (buf.len(), 0),
                }
            } else if first == b'\r' || first == b'\n' {
                let skip = buf
                    .iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count();
                (skip, buf[..skip].iter().filter(|&&b| b == b'\n').count())
            } else if Some(first) == self.comment {
                in_comment = true;
                (0, 0)
            } else {
                return Ok(());
            };
            self.input.consume(skip);
            let line = self.parser.line() + newlines as u64;
            self.parser.set_line(line);
        }
    }

    /// Reads the next row into `self.row`; false at the end of the input.
    fn read_row(&mut self) -> Result<bool> {
        self.skip_to_row()?;
        self.row.line = self.parser.line();
        if self.row.bytes.is_empty() {
            self.row.bytes.resize(1024, 0);
        }
        self.row.ends.clear();
        self.row.ends.resize(64, 0);
        self.row.raw.clear();
        let (mut out, mut ends, mut taken) = (0, 0, 0u64);
        loop {
            let input = self
                .input
                .fill_buf()
                .map_err(|e| Error::io(Stage::Decode, Some(&self.name), e))?;
            let (result, read, written, ended) = self.parser.read_record(
                input,
                &mut self.row.bytes[out..],
                &mut self.row.ends[ends..],
            );
            self.row.raw.extend_from_slice(&input[..read]);
            self.input.consume(read);
            taken += read as u64;
            out += written;
            ends += ended;
            if taken > self.max_row {
                let position = self.row_position().with_record(self.records + 1);
                return Err(super::limit::too_large(position, self.max_row));
            }
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                // Never more room than the limit allows: a row holds at most as many bytes, and one more
                // cell, as it took from the input, and taking more than the limit has stopped above.
                csv_core::ReadRecordResult::OutputFull => {
                    let len = self.row.bytes.len();
                    self.row.bytes.resize(grown(len, self.max_row), 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.row.ends.len();
                    self.row.ends.resize(grown(len, self.max_row), 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.row.ends.truncate(ends);
                    return Ok(true);
                }
                csv_core::ReadRecordResult::End => {
                    self.row.ends.clear();
                    return Ok(false);
                }
            }
        }
    }

    fn read_header(&mut self) -> Result<Option<Vec<Key>>> {
        if !self.read_row()? {
            return Ok(None);
        }
        let mut names = Vec::with_capacity(self.row.len());
        for (i, cell) in self.row.cells().enumerate() {
            let name = std::str::from_utf8(cell).map_err(|e| {
                let pos = self.row_position().with_column(i as u64 + 1);
                Error::data(Stage::Decode, pos, format!("header cell is not valid UTF-8 ({e}); pass --encoding if the file is not UTF-8"))
            })?;
            names.push(name);
        }
        checked_names(names.into_iter(), &self.name).map(Some)
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        if !self.read_row()? {
            return Ok(None);
        }
        self.records += 1;
        if self.header.is_none() {
            let generated = (1..=self.row.len()).map(|i| Key::from(format!("column{i}")));
            self.header = Some(generated.collect());
        }
        let header = self.header.as_deref().unwrap_or_default();
        let pos = || self.row_position().with_record(self.records);
        if self.row.len() != header.len() && !self.allow_ragged {
            let message = format!(
                "the row has {} fields but the header has {}; pass --allow-ragged to pad short rows",
                self.row.len(),
                header.len()
            );
            let error = Error::record(Stage::Decode, pos(), message);
            return Err(error.with_raw(self.row.raw_text()));
        }
        let mut record = Record::with_capacity(header.len().max(self.row.len()));
        record.set_line(self.row.line);
        // One UTF-8 check for the whole row is cheaper than one per cell, each cell then a slice of it. If
        // the row is not valid UTF-8, or a cell's ends are not character boundaries, the cell is checked on
        // its own, so that the error names it.
        let row_text = std::str::from_utf8(self.row.as_slice()).unwrap_or_default();
        let mut end = 0;
        for (i, cell) in self.row.cells().enumerate() {
            let start = end;
            end += cell.len();
            let text = match row_text.get(start..end) {
                Some(text) => Ok(text),
                None => std::str::from_utf8(cell),
            };
            let text = text.map_err(|e| {
                let field = header
                    .get(i)
                    .map_or_else(|| format!("column{}", i + 1), |k| k.to_string());
                let message = format!(
                    "invalid UTF-8 ({e}); pass --encoding (e.g. latin1) if the file is not UTF-8"
                );
                Error::record(
                    Stage::Decode,
                    pos().with_column(i as u64 + 1).with_field(field),
                    message,
                )
                .with_raw(self.row.raw_text())
            })?;
            let value = if self.null_marker.as_deref() == Some(text) {
                Value::Null
            } else {
                cell_value(text, self.json_cells)
            };
            match header.get(i) {
                Some(key) => record.push_unchecked(key.clone(), value),
                None => {
                    record.insert(format!("column{}", i + 1), value);
                }
            }
        }
        for key in header.iter().skip(self.row.len()) {
            record.push_unchecked(key.clone(), Value::Null);
        }
        Ok(Some(record))
    }
}

/// A row buffer's next size: doubled, but no larger than a row of `max_row` bytes can need.
fn grown(len: usize, max_row: u64) -> usize {
    let cap = usize::try_from(max_row.saturating_add(2)).unwrap_or(usize::MAX);
    (len * 2).min(cap).max(len + 1)
}

/// A cell's value: its text, or with `json_cells` the nested value its JSON array/object text stands for.
pub(super) fn cell_value(text: &str, json_cells: bool) -> Value {
    if json_cells && (text.starts_with('[') || text.starts_with('{')) {
        if let Ok(value @ (Value::Array(_) | Value::Object(_))) =
            super::json::parse_value(text.as_bytes())
        {
            return value;
        }
    }
    Value::String(text.to_owned())
}

/// Turns header names into keys, refusing duplicates (a duplicate would silently overwrite a cell).
pub(super) fn checked_names<'a>(
    names: impl Iterator<Item = &'a str>,
    file: &str,
) -> Result<Vec<Key>> {
    let mut keys: Vec<Key> = Vec::new();
    // A set, not a search of the names so far: a header may have hundreds of thousands of columns.
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name) {
            let pos = Position::file(file)
                .with_column(i as u64 + 1)
                .with_field(name);
            let message = "the header names this column twice; rename one (or pass --columns)";
            return Err(Error::data(Stage::Decode, pos, message));
        }
        keys.push(Key::from(name));
    }
    Ok(keys)
}

impl Iterator for CsvDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        // An I/O error ends the stream. Row-level errors (ragged rows, bad UTF-8) leave the reader in place,
        // so the stream goes on for lenient runs.
        match &item {
            None => self.done = true,
            Some(Err(e)) if !e.is_record() => self.done = true,
            _ => {}
        }
        item
    }
}

struct CsvEncoder {
    writer: csv::Writer<Box<dyn ByteSink>>,
    /// The header, once the first records have fixed it.
    header: Option<Vec<Key>>,
    /// The first records, held until they fix the header (the union of their fields).
    sample: HeaderSample,
    write_header: bool,
    options: FormatOptions,
    cell: String,
    records: u64,
}

impl CsvEncoder {
    fn build(
        sink: Box<dyn ByteSink>,
        options: &FormatOptions,
        default_delimiter: u8,
    ) -> Result<Box<dyn Encoder>> {
        let writer = csv::WriterBuilder::new()
            .delimiter(options.delimiter.unwrap_or(default_delimiter))
            .quote(options.quote)
            .buffer_capacity(64 * 1024)
            .from_writer(sink);
        Ok(Box::new(CsvEncoder {
            writer,
            header: None,
            sample: HeaderSample::new(options.sample_records),
            write_header: options.header,
            options: options.clone(),
            cell: String::new(),
            records: 0,
        }))
    }

    fn csv_error(&self, e: csv::Error) -> Error {
        match e.into_kind() {
            csv::ErrorKind::Io(io) => Error::io(Stage::Sink, None, io),
            other => Error::data(
                Stage::Encode,
                Position::default().with_record(self.records),
                format!("{other:?}"),
            ),
        }
    }

    fn write_cell(&mut self, value: Option<&Value>) -> Result<()> {
        let result = match value {
            // Text goes to the writer as it is, without a copy into `cell` first.
            Some(Value::String(s)) => self.writer.write_field(s.as_bytes()),
            None | Some(Value::Null) => {
                let marker = self.options.null_marker.as_deref().unwrap_or_default();
                self.writer.write_field(marker.as_bytes())
            }
            Some(v) => {
                self.cell.clear();
                v.write_text(&mut self.cell);
                self.writer.write_field(self.cell.as_bytes())
            }
        };
        result.map_err(|e| self.csv_error(e))
    }

    fn end_row(&mut self) -> Result<()> {
        let result = self.writer.write_record(None::<&[u8]>);
        result.map_err(|e| self.csv_error(e))
    }
}

impl CsvEncoder {
    /// Writes the header the held records fix, then the records.
    fn release(&mut self) -> Result<()> {
        let (header, held) = self.sample.take();
        if self.write_header {
            for key in &header {
                let result = self.writer.write_field(key.as_bytes());
                result.map_err(|e| self.csv_error(e))?;
            }
            self.end_row()?;
        }
        let first = self.records - held.len() as u64;
        for (i, record) in held.iter().enumerate() {
            self.write_row(&header, record, first + i as u64 + 1)?;
        }
        self.header = Some(header);
        Ok(())
    }
}

impl Encoder for CsvEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.records += 1;
        self.options.marker_clash(record, self.records)?;
        let Some(header) = self.header.take() else {
            if self.sample.push(record) {
                self.release()?;
            }
            return Ok(());
        };
        let result = self.write_row(&header, record, self.records);
        self.header = Some(header);
        result
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.header.is_none() && self.records > 0 {
            self.release()?;
        }
        let sink = self
            .writer
            .into_inner()
            .map_err(|e| Error::io(Stage::Sink, None, e.into_error()))?;
        sink.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.writer.get_ref().bytes_written()
    }
}

impl CsvEncoder {
    fn write_row(&mut self, header: &[Key], record: &Record, number: u64) -> Result<()> {
        // Decoders share one key per column between records, so comparing pointers usually answers without
        // reading the names (whose reference counts the decoding thread is busy updating).
        let same_shape = record.len() == header.len()
            && record
                .iter()
                .zip(header)
                .all(|((a, _), b)| std::sync::Arc::ptr_eq(a, b) || a == b);
        if same_shape {
            for value in record.values() {
                self.write_cell(Some(value))?;
            }
            return self.end_row();
        }
        if let Some(extra) = record.keys().find(|k| !header.iter().any(|h| &**h == *k)) {
            let pos = Position::default().with_record(number).with_field(extra);
            let message = format!(
                "the record has a field the CSV header lacks: the header is every field of the first {} \
                 records (--sample-records), and none of them had it",
                self.options.sample_records
            );
            return Err(Error::record(Stage::Encode, pos, message));
        }
        for key in header {
            self.write_cell(record.get(key))?;
        }
        self.end_row()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &'static [u8]) -> Vec<Result<Record>> {
        let input = Input {
            reader: Box::new(bytes),
            name: "t.csv".to_owned(),
        };
        let decoder = csv_decoder(input, &FormatOptions::default()).unwrap();
        decoder.collect()
    }

    #[test]
    fn rows_know_their_line_under_crlf_blank_and_comment_lines() {
        let text = b"#c\r\na,b\r\n\r\n#x\r\n1,\"2\r\nz\"\r\n3\r\n\n4\n5,6";
        let input = Input {
            reader: Box::new(&text[..]),
            name: "t.csv".to_owned(),
        };
        let options = FormatOptions {
            comment: Some(b'#'),
            ..FormatOptions::default()
        };
        let items: Vec<_> = csv_decoder(input, &options).unwrap().collect();
        let lines: Vec<Option<u64>> = items
            .iter()
            .map(|item| item.as_ref().err().and_then(|e| e.position()?.line))
            .collect();
        // Rows: `1,"2\r\nz"` (line 5, good), `3` (line 7), `4` (line 9), `5,6` (line 10, good).
        assert_eq!(lines, [None, Some(7), Some(9), None]);
    }

    #[test]
    fn utf8_is_checked_per_cell_even_when_the_row_is_valid() {
        // "a\xC3" and "\xA9b" are invalid alone, though the row's bytes together spell "aéb".
        let rows = decode(b"x,y\na\xC3,\xA9b\n\xC3\xA9,ok\n");
        let err = rows[0].as_ref().unwrap_err();
        assert!(err.is_data() && err.to_string().contains("UTF-8"), "{err}");
        let record = rows[1].as_ref().unwrap();
        assert_eq!(record.get("x"), Some(&Value::String("é".into())));
        assert_eq!(record.get("y"), Some(&Value::String("ok".into())));
    }
}
