//! CSV and TSV codec (the `csv` crate): a header row, quotes, embedded newlines, CRLF, a UTF-8 BOM.
//!
//! Every cell is read as a string: no type is guessed, so `08123` keeps its zero (a template declares types).
//! Nested values are written as compact JSON text in the cell and, with `--json-cells`, read back as nested
//! values. The header is fixed by the first record; a later record with a field the header lacks is an error,
//! not a silently dropped value.

use std::collections::HashSet;
use std::io::BufRead;

use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, TextRows};
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
    decoder: Some(csv_decoder),
    encoder: Some(csv_encoder),
};

pub(super) const TSV: Format = Format {
    name: "tsv",
    extensions: &["tsv", "tab"],
    description: "tab-separated values (CSV rules with a tab delimiter)",
    fidelity: Fidelity::Text,
    streams: true,
    decoder: Some(tsv_decoder),
    encoder: Some(tsv_encoder),
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
    /// Malformed quoting in the row just read (`None` with `--csv-lenient-quotes`).
    quotes: Option<QuoteCheck>,
    records: u64,
    allow_ragged: bool,
    json_cells: bool,
    /// `--null-marker`: a cell holding exactly it is null.
    null_marker: Option<String>,
    done: bool,
    /// A record the run has finished with, refilled as the next one (see `Decoder::reuse`).
    spare: Option<Record>,
    /// Whether the keys rows of text are asked for are the header's (see `Decoder::next_or_text_row`).
    header_is_keys: Option<bool>,
}

/// The cells of the row just read, one after another, and where each ends.
#[derive(Default)]
struct Row {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// The line the row starts on (1-based).
    line: u64,
    /// The row has more than [`super::limit::MAX_FIELDS`] fields (and `bytes`/`ends` hold only its end).
    too_wide: bool,
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
            quotes: (!options.csv_lenient_quotes)
                .then(|| QuoteCheck::new(options, default_delimiter)),
            records: 0,
            allow_ragged: options.allow_ragged,
            json_cells: options.json_cells,
            null_marker: options.null_marker.clone(),
            done: false,
            spare: None,
            header_is_keys: None,
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
        if let Some(header) = &decoder.header {
            options
                .input_columns
                .learn(header.iter().map(|k| k.to_string()));
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
        self.row.too_wide = false;
        self.row.raw.clear();
        let (mut out, mut ends, mut taken) = (0, 0, 0u64);
        if let Some(quotes) = &mut self.quotes {
            quotes.start_row(self.row.line);
        }
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
            if let Some(quotes) = &mut self.quotes {
                quotes.scan(&input[..read]);
            }
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
                // Past the field limit the row is read to its end with its field ends overwritten, so that
                // the error is the row's alone (a lenient run goes on with the next row).
                csv_core::ReadRecordResult::OutputEndsFull if ends > super::limit::MAX_FIELDS => {
                    self.row.too_wide = true;
                    (out, ends) = (0, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let len = self.row.ends.len();
                    self.row.ends.resize(grown(len, self.max_row), 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.row.too_wide |= ends > super::limit::MAX_FIELDS;
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
        if self.row.too_wide {
            let pos = Position::file(self.name.clone()).with_line(self.row.line);
            return Err(Error::data(
                Stage::Decode,
                pos,
                format!("in the header, {}", super::limit::too_many_fields()),
            ));
        }
        if let Some(problem) = self.quote_problem() {
            let pos = Position::file(self.name.clone())
                .with_line(problem.line)
                .with_column(problem.column);
            return Err(Error::data(
                Stage::Decode,
                pos,
                format!("in the header, {}", problem.kind),
            ));
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
        self.record_of_row().map(Some)
    }

    /// The row just read, as the text of the header's fields when it can go to a table as is: as many
    /// cells as the header has, valid UTF-8 ending on character boundaries, well quoted, none of them null
    /// (the `--null-marker`) or JSON (`--json-cells`). A record would hold each as the same string.
    fn plain_row(&self) -> Option<&str> {
        let header = self.header.as_deref()?;
        if self.row.too_wide || self.row.len() != header.len() || self.quote_problem().is_some() {
            return None;
        }
        let text = simdutf8::basic::from_utf8(self.row.as_slice()).ok()?;
        let mut start = 0;
        for &end in &self.row.ends {
            let cell = text.get(start..end)?;
            if self.null_marker.as_deref() == Some(cell) || may_be_json(cell, self.json_cells) {
                return None;
            }
            start = end;
        }
        Some(text)
    }

    /// Reads the next row into `rows` when it is plain (see `plain_row`), else as a record.
    fn next_record_or_row(
        &mut self,
        keys: &[Key],
        rows: &mut dyn TextRows,
    ) -> Result<Option<Option<Record>>> {
        if !self.read_row()? {
            return Ok(None);
        }
        // The keys are checked against the header once: they are the first records' fields.
        let header_fits = *self
            .header_is_keys
            .get_or_insert_with(|| self.header.as_deref() == Some(keys));
        let plain = self.plain_row().filter(|_| header_fits);
        if plain.is_some_and(|text| rows.row(self.row.line, text, &self.row.ends)) {
            self.records += 1;
            return Ok(Some(None));
        }
        self.record_of_row().map(|record| Some(Some(record)))
    }

    /// The row just read as the next record.
    fn record_of_row(&mut self) -> Result<Record> {
        self.records += 1;
        let spare = self.spare.take();
        if self.header.is_none() {
            let generated = (1..=self.row.len()).map(|i| Key::from(format!("column{i}")));
            self.header = Some(generated.collect());
        }
        let header = self.header.as_deref().unwrap_or_default();
        let pos = || self.row_position().with_record(self.records);
        if self.row.too_wide {
            let error = Error::record(Stage::Decode, pos(), super::limit::too_many_fields());
            return Err(error.with_raw(self.row.raw_text()));
        }
        if let Some(problem) = self.quote_problem() {
            let field = header
                .get(problem.field)
                .map_or_else(|| format!("column{}", problem.field + 1), |k| k.to_string());
            let pos = Position::file(self.name.clone())
                .with_record(self.records)
                .with_line(problem.line)
                .with_column(problem.column)
                .with_field(field);
            let error = Error::record(Stage::Decode, pos, problem.kind.to_string());
            return Err(error.with_raw(self.row.raw_text()));
        }
        if self.row.len() != header.len() && !self.allow_ragged {
            let message = format!(
                "the row has {} fields but the header has {}; pass --allow-ragged to pad short rows",
                self.row.len(),
                header.len()
            );
            let error = Error::record(Stage::Decode, pos(), message);
            return Err(error.with_raw(self.row.raw_text()));
        }
        let cells = self.row.len();
        let width = header.len().max(cells);
        // Nor is a record with room for many more fields kept (a wide ragged row, a wide mapped record).
        let spare = spare.filter(|r| r.field_room() <= 2 * width + 16);
        let mut record = spare.unwrap_or_else(|| Record::with_capacity(width));
        record.set_line(self.row.line);
        // One UTF-8 check for the whole row is cheaper than one per cell, each cell then a slice of it. If
        // the row is not valid UTF-8, or a cell's ends are not character boundaries, the cell is checked on
        // its own, so that the error names it.
        let row_text = simdutf8::basic::from_utf8(self.row.as_slice()).unwrap_or_default();
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
            let null = self.null_marker.as_deref() == Some(text);
            let plain = !null && !may_be_json(text, self.json_cells);
            let value = || match null {
                true => Value::Null,
                false => cell_value(text, self.json_cells),
            };
            match header.get(i) {
                Some(key) if plain => record.refill_text(i, key, text),
                Some(key) => record.refill(i, key, value()),
                None => {
                    // Past the header (a ragged row): the stale fields of a refilled record go first.
                    record.truncate(i.max(header.len()));
                    record.insert(format!("column{}", i + 1), value());
                }
            }
        }
        if cells <= header.len() {
            record.truncate(cells);
            for key in &header[cells..] {
                record.push_unchecked(key.clone(), Value::Null);
            }
        }
        Ok(record)
    }
}

impl CsvDecoder {
    /// The first quoting problem of the row just read, if quotes are checked.
    fn quote_problem(&self) -> Option<QuoteProblem> {
        let quotes = self.quotes.as_ref()?;
        quotes.problem(&self.row.raw, self.row.line)
    }
}

/// Finds the quoting the csv crate accepts silently: a quote inside an unquoted field (kept as text), text
/// after a field's closing quote (appended to it), and a quote that is never closed (which swallows the rest
/// of the input into one field). It follows the bytes csv-core parses, row by row, in step with csv-core's
/// own state machine. While rows are read it follows only the quoting state, jumping from quote to quote;
/// only a row that has a problem is stepped through again byte by byte to say where the problem is.
#[derive(Clone, Copy)]
struct QuoteCheck {
    quote: u8,
    delimiter: u8,
    escape: Option<u8>,
    state: QuoteState,
    /// Where the scan is: line (1-based), column in characters (1-based) and field index (0-based).
    line: u64,
    column: u64,
    field: usize,
    /// Where the open quoted field began, for an unterminated quote.
    opened: (u64, u64, usize),
    problem: Option<QuoteProblem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteState {
    FieldStart,
    Unquoted,
    Quoted,
    /// After the escape character inside a quoted field (`--escape`).
    Escaped,
    /// After a quote inside a quoted field: the closing quote, or the first of a doubled one.
    QuoteInQuoted,
}

/// A quoting problem and where it is.
#[derive(Debug, Clone, Copy)]
struct QuoteProblem {
    kind: QuoteProblemKind,
    line: u64,
    column: u64,
    field: usize,
}

#[derive(Debug, Clone, Copy)]
enum QuoteProblemKind {
    StrayQuote,
    TextAfterQuote,
    Unterminated,
}

impl std::fmt::Display for QuoteProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuoteProblemKind::StrayQuote => {
                "a quote inside an unquoted field: quote the whole field and double the quote (\"a \"\"b\"\"\"), \
                 or pass --csv-lenient-quotes to keep it as text"
            }
            QuoteProblemKind::TextAfterQuote => {
                "text after the closing quote of a quoted field: a quote inside a quoted field must be doubled, \
                 or pass --csv-lenient-quotes to append the text to the field"
            }
            QuoteProblemKind::Unterminated => {
                "the quote opened here is never closed, so the field would run to the end of the input; \
                 close it, or pass --csv-lenient-quotes to read it that way"
            }
        })
    }
}

impl QuoteCheck {
    fn new(options: &FormatOptions, default_delimiter: u8) -> QuoteCheck {
        QuoteCheck {
            quote: options.quote,
            delimiter: options.delimiter.unwrap_or(default_delimiter),
            escape: options.escape,
            state: QuoteState::FieldStart,
            line: 1,
            column: 1,
            field: 0,
            opened: (1, 1, 0),
            problem: None,
        }
    }

    fn start_row(&mut self, line: u64) {
        self.state = QuoteState::FieldStart;
        self.line = line;
        self.column = 1;
        self.field = 0;
        self.problem = None;
    }

    /// Follows `bytes`, the next bytes of the row as csv-core consumed them. Only quotes (and the escape
    /// character inside quotes) can change the state or reveal a problem, so the scan jumps to the next one
    /// with `memchr`; the line, column and field it keeps meanwhile are not exact (see [`QuoteCheck::problem`]).
    /// Stepping every byte made this check a fifth of a raw CSV load's CPU.
    fn scan(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(&first) = rest.first() {
            rest = match self.state {
                QuoteState::FieldStart | QuoteState::Unquoted => self.skip_unquoted_text(rest),
                QuoteState::Quoted => self.skip_quoted_text(rest),
                QuoteState::Escaped | QuoteState::QuoteInQuoted => {
                    self.step(first);
                    &rest[1..]
                }
            };
        }
    }

    /// Outside quotes a byte other than a quote only decides whether the next byte starts a field.
    fn skip_unquoted_text<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let Some(at) = memchr::memchr(self.quote, bytes) else {
            if let Some(&last) = bytes.last() {
                self.state = self.state_after_unquoted(last);
            }
            return &[];
        };
        if let Some(at_before) = at.checked_sub(1) {
            self.state = self.state_after_unquoted(bytes[at_before]);
        }
        self.step(self.quote);
        &bytes[at + 1..]
    }

    fn state_after_unquoted(&self, b: u8) -> QuoteState {
        if self.ends_field(b) {
            QuoteState::FieldStart
        } else {
            QuoteState::Unquoted
        }
    }

    fn ends_field(&self, b: u8) -> bool {
        b == self.delimiter || b == b'\n' || b == b'\r'
    }

    /// Inside quotes only a quote or the escape character changes the state.
    fn skip_quoted_text<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let next = match self.escape {
            Some(escape) => memchr::memchr2(self.quote, escape, bytes),
            None => memchr::memchr(self.quote, bytes),
        };
        match next {
            Some(at) => {
                self.step(bytes[at]);
                &bytes[at + 1..]
            }
            None => &[],
        }
    }

    fn step(&mut self, b: u8) {
        let ends_field = self.ends_field(b);
        self.state = match self.state {
            QuoteState::FieldStart | QuoteState::Unquoted if ends_field => {
                self.field += usize::from(b == self.delimiter);
                QuoteState::FieldStart
            }
            QuoteState::FieldStart if b == self.quote => {
                self.opened = (self.line, self.column, self.field);
                QuoteState::Quoted
            }
            QuoteState::Unquoted if b == self.quote => {
                self.note(QuoteProblemKind::StrayQuote);
                QuoteState::Unquoted
            }
            QuoteState::FieldStart | QuoteState::Unquoted => QuoteState::Unquoted,
            QuoteState::Quoted if Some(b) == self.escape => QuoteState::Escaped,
            QuoteState::Quoted if b == self.quote => QuoteState::QuoteInQuoted,
            QuoteState::Quoted | QuoteState::Escaped => QuoteState::Quoted,
            QuoteState::QuoteInQuoted if b == self.quote && self.escape.is_none() => {
                QuoteState::Quoted
            }
            QuoteState::QuoteInQuoted if ends_field => {
                self.field += usize::from(b == self.delimiter);
                QuoteState::FieldStart
            }
            QuoteState::QuoteInQuoted => {
                self.note(QuoteProblemKind::TextAfterQuote);
                QuoteState::Unquoted
            }
        };
    }

    fn note(&mut self, kind: QuoteProblemKind) {
        if self.problem.is_none() {
            self.problem = Some(QuoteProblem {
                kind,
                line: self.line,
                column: self.column,
                field: self.field,
            });
        }
    }

    /// The row's first problem, once the row is read (`raw`, starting on `line`), with its exact place: a row
    /// the scan found a problem in is stepped through again byte by byte. A row that ends inside quotes ended
    /// with the input.
    fn problem(&self, raw: &[u8], line: u64) -> Option<QuoteProblem> {
        let unterminated = matches!(self.state, QuoteState::Quoted | QuoteState::Escaped);
        if self.problem.is_none() && !unterminated {
            return None;
        }
        let mut exact = *self;
        exact.start_row(line);
        exact.step_through(raw);
        exact.first_problem()
    }

    /// Steps through every byte of `bytes`, keeping the line and the column (in characters) of each.
    fn step_through(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.step(b);
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                self.column += 1;
            }
        }
    }

    fn first_problem(&self) -> Option<QuoteProblem> {
        if self.problem.is_some() {
            return self.problem;
        }
        matches!(self.state, QuoteState::Quoted | QuoteState::Escaped).then(|| {
            let (line, column, field) = self.opened;
            QuoteProblem {
                kind: QuoteProblemKind::Unterminated,
                line,
                column,
                field,
            }
        })
    }
}

/// A row buffer's next size: doubled, but no larger than a row of `max_row` bytes can need.
fn grown(len: usize, max_row: u64) -> usize {
    let cap = usize::try_from(max_row.saturating_add(2)).unwrap_or(usize::MAX);
    (len * 2).min(cap).max(len + 1)
}

/// A cell's value: its text, or with `json_cells` the nested value its JSON array/object text stands for.
pub(super) fn cell_value(text: &str, json_cells: bool) -> Value {
    if may_be_json(text, json_cells) {
        if let Ok(value @ (Value::Array(_) | Value::Object(_))) =
            super::json::parse_value(text.as_bytes())
        {
            return value;
        }
    }
    Value::String(text.to_owned())
}

/// True when, with `json_cells`, the cell's text may stand for a JSON array or object; otherwise it is text.
fn may_be_json(text: &str, json_cells: bool) -> bool {
    json_cells && (text.starts_with('[') || text.starts_with('{'))
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

/// The record is refilled cell by cell as the next one: no allocation for a cell whose text fits the
/// buffer the same column's cell had.
impl Decoder for CsvDecoder {
    fn reuse(&mut self, record: Record) {
        self.spare = Some(record);
    }

    fn next_or_text_row(
        &mut self,
        keys: &[Key],
        rows: &mut dyn TextRows,
    ) -> Option<Result<Option<Record>>> {
        if self.done {
            return None;
        }
        let item = self.next_record_or_row(keys, rows).transpose();
        self.note_end(&item);
        item
    }
}

impl Iterator for CsvDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        self.note_end(&item);
        item
    }
}

impl CsvDecoder {
    /// An I/O error ends the stream. Row-level errors (ragged rows, bad UTF-8) leave the reader in place,
    /// so the stream goes on for lenient runs.
    fn note_end<T>(&mut self, item: &Option<Result<T>>) {
        match item {
            None => self.done = true,
            Some(Err(e)) if !e.is_record() => self.done = true,
            _ => {}
        }
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
            file: None,
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
            file: None,
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
    fn a_record_handed_back_is_refilled_to_exactly_the_record_a_fresh_decoder_reads() {
        // Long cells then short ones (a buffer with too much room is not kept), short and long ragged rows,
        // the null marker, JSON cells, a bad row, and records of other shapes handed back.
        let bytes: &[u8] = b"a,b,c\n\
            xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,2,3\n\
            y,NULL,[1]\n\
            1\n\
            1,2,3,4,5\n\
            \"q,\"\"\",,{\"k\":1}\n\
            z,\xff,3\n\
            a,bb,ccc\n";
        let options = FormatOptions {
            allow_ragged: true,
            null_marker: Some("NULL".to_owned()),
            json_cells: true,
            ..FormatOptions::default()
        };
        let mut foreign = Record::new();
        foreign.insert("other", Value::String("x".repeat(100)));
        assert_refilled_as_fresh(bytes, &options, 1, Some(foreign));
        assert!(
            decode_with(bytes, &options)[5].is_err(),
            "the row with invalid UTF-8 is refused"
        );
    }

    #[test]
    fn a_record_with_room_for_a_wide_row_is_not_refilled_for_narrow_ones() {
        let wide = vec!["x"; 1000].join(",");
        let bytes = format!("a,b\n{wide}\n1,2\n");
        let options = FormatOptions {
            allow_ragged: true,
            ..FormatOptions::default()
        };
        let mut decoder = decoder_of(bytes.as_bytes(), &options);
        let wide = decoder.next().unwrap().unwrap();
        assert_eq!(wide.len(), 1000);
        decoder.reuse(wide);
        let narrow = decoder.next().unwrap().unwrap();
        assert_eq!(narrow.len(), 2);
        assert!(
            narrow.field_room() < 100,
            "room for {} fields",
            narrow.field_room()
        );
    }

    /// Decodes `bytes` twice — fresh, and handing each record back `back` records later (after `first`) —
    /// and asserts the same records, lines, field order and errors.
    fn assert_refilled_as_fresh(
        bytes: &[u8],
        options: &FormatOptions,
        back: usize,
        first: Option<Record>,
    ) {
        let fresh = decode_with(bytes, options);
        let mut decoder = decoder_of(bytes, options);
        let mut handed: std::collections::VecDeque<Record> = first.into_iter().collect();
        let mut refilled = Vec::new();
        loop {
            if handed.len() >= back {
                if let Some(record) = handed.pop_front() {
                    decoder.reuse(record);
                }
            }
            let Some(item) = decoder.next() else { break };
            if let Ok(record) = &item {
                handed.push_back(record.clone());
            }
            refilled.push(item);
        }
        assert_eq!(refilled.len(), fresh.len());
        for (got, want) in refilled.iter().zip(&fresh) {
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want);
                    assert_eq!(got.line(), want.line());
                    let keys: Vec<&str> = got.keys().collect();
                    assert_eq!(keys, want.keys().collect::<Vec<_>>());
                }
                (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string()),
                _ => panic!("refilled {got:?} where a fresh decoder read {want:?}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_rows_refilled_read_as_a_fresh_decoder_reads_them(
            rows in proptest::collection::vec(
                proptest::collection::vec("[a-z, \"N\\[{}\n]{0,12}|x{60,140}|NULL", 1..7),
                1..40,
            ),
            json_cells in proptest::bool::ANY,
            back in 1usize..4,
        ) {
            let mut writer = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
            writer.write_record(["a", "b", "c", "d"]).unwrap();
            for row in &rows {
                writer.write_record(row).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let options = FormatOptions {
                allow_ragged: true,
                null_marker: Some("NULL".to_owned()),
                json_cells,
                ..FormatOptions::default()
            };
            assert_refilled_as_fresh(&bytes, &options, back, None);
        }
    }

    fn decode_with(bytes: &[u8], options: &FormatOptions) -> Vec<Result<Record>> {
        decoder_of(bytes, options).collect()
    }

    /// A CSV decoder of `bytes` named `t.csv`.
    fn decoder_of(bytes: &[u8], options: &FormatOptions) -> Box<dyn Decoder> {
        let input = Input {
            reader: Box::new(std::io::Cursor::new(bytes.to_vec())),
            name: "t.csv".to_owned(),
            file: None,
        };
        csv_decoder(input, options).unwrap()
    }

    /// Rows handed over as text: (line, cells).
    #[derive(Default)]
    struct Taken(Vec<(u64, Vec<String>)>);

    impl TextRows for Taken {
        fn row(&mut self, line: u64, text: &str, ends: &[usize]) -> bool {
            let starts = std::iter::once(0).chain(ends.iter().copied());
            let cells = starts.zip(ends).map(|(a, &b)| text[a..b].to_owned());
            self.0.push((line, cells.collect()));
            true
        }
    }

    #[test]
    fn plain_rows_go_as_text_and_the_others_as_the_records_next_makes() {
        // Row 6 ends in a Latin-1 é: not UTF-8.
        let bytes = b"a,b\n1,x\n2,NULL\n3,\"[1]\"\n4\n5,\"two\nlines\"\n6,caf\xe9\n7,\xc3\xa9\n";
        let options = FormatOptions {
            json_cells: true,
            null_marker: Some("NULL".into()),
            ..FormatOptions::default()
        };
        let records: Vec<_> = decoder_of(bytes, &options).collect();
        let mut decoder = decoder_of(bytes, &options);
        let keys: Vec<Key> = ["a", "b"].map(Key::from).to_vec();
        let mut taken = Taken::default();
        let mut items = Vec::new();
        while let Some(item) = decoder.next_or_text_row(&keys, &mut taken) {
            items.push(item);
        }
        // The first row makes the header known, so it goes as text as well.
        let lines: Vec<u64> = taken.0.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 6, 9]);
        assert_eq!(taken.0[1].1, ["5", "two\nlines"]);
        assert_eq!(taken.0[2].1, ["7", "é"]);
        // Every other row is what `next` makes of it, in its place.
        assert_eq!(items.len(), records.len());
        for (item, record) in items.iter().zip(&records) {
            match (item, record) {
                (Ok(None), Ok(r)) => assert!(r.values().all(|v| matches!(v, Value::String(_)))),
                (Ok(Some(a)), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("{item:?} against {record:?}"),
            }
        }
        let records_as_text = items.iter().filter(|i| matches!(i, Ok(Some(_)))).count();
        assert_eq!(records_as_text, 2, "the null marker and the JSON cell");
        // Keys that are not the header's: every row is a record.
        let mut decoder = decoder_of(bytes, &options);
        let other: Vec<Key> = ["a", "c"].map(Key::from).to_vec();
        let mut none = Taken::default();
        while decoder.next_or_text_row(&other, &mut none).is_some() {}
        assert!(none.0.is_empty());
    }

    /// (line, column, field, message) of an error.
    fn located(item: &Result<Record>) -> (Option<u64>, Option<u64>, Option<String>, String) {
        let e = item.as_ref().unwrap_err();
        let p = e.position().cloned().unwrap_or_default();
        (p.line, p.column, p.field, e.to_string())
    }

    #[test]
    fn a_stray_quote_in_an_unquoted_field_is_an_error_at_its_line_and_column() {
        let rows = decode(b"a,b\n1,x\"y\n\"2\",ok\n");
        assert_eq!(rows.len(), 2);
        let (line, column, field, message) = located(&rows[0]);
        assert_eq!(
            (line, column, field.as_deref()),
            (Some(2), Some(4), Some("b"))
        );
        assert!(
            message.contains("a quote inside an unquoted field"),
            "{message}"
        );
        assert!(message.contains("record 1"), "{message}");
        // The next row is read as usual: a lenient run rejects the one record and goes on.
        assert_eq!(
            rows[1].as_ref().unwrap().get("a"),
            Some(&Value::String("2".into()))
        );
    }

    #[test]
    fn text_after_a_closing_quote_is_an_error() {
        let rows = decode(b"a,b\n\"x\"y,2\n");
        let (line, column, field, message) = located(&rows[0]);
        assert_eq!(
            (line, column, field.as_deref()),
            (Some(2), Some(4), Some("a"))
        );
        assert!(
            message.contains("text after the closing quote"),
            "{message}"
        );
    }

    #[test]
    fn an_unterminated_quote_is_an_error_where_it_opens() {
        let rows = decode(b"a,b\n1,2\n3,\"unclosed\n4,5\n6,7\n");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].is_ok());
        let (line, column, field, message) = located(&rows[1]);
        assert_eq!(
            (line, column, field.as_deref()),
            (Some(3), Some(3), Some("b"))
        );
        assert!(message.contains("never closed"), "{message}");
    }

    #[test]
    fn columns_count_characters_and_lines_count_quoted_newlines() {
        // The stray quote is on the row's second line, after a two-byte character.
        let rows = decode("a,b\n\"multi\nline\",é\"\n".as_bytes());
        let (line, column, ..) = located(&rows[0]);
        assert_eq!((line, column), (Some(3), Some(8)));
    }

    /// The row's problem found by stepping through every byte of it, as the check did at first.
    fn problem_byte_by_byte(q: &QuoteCheck, row: &[u8]) -> (QuoteState, Option<QuoteProblem>) {
        let mut q = *q;
        q.start_row(1);
        q.step_through(row);
        (q.state, q.first_problem())
    }

    #[test]
    fn jumping_from_quote_to_quote_finds_what_stepping_every_byte_finds() {
        // Random rows of the bytes that matter (and a two-byte character), cut into random pieces: the scan
        // that jumps between quotes must end in the state and report the problem, line, column and field of
        // one that steps every byte of the whole row.
        let alphabet: [&[u8]; 9] = [
            b"a",
            b",",
            b"\"",
            b"\n",
            b"\r",
            "é".as_bytes(),
            b"\\",
            b"xyz",
            b"\"\"",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut problems, mut clean) = (0, 0);
        for escape in [None, Some(b'\\')] {
            let options = FormatOptions {
                escape,
                ..FormatOptions::default()
            };
            for _ in 0..4000 {
                let row: Vec<u8> = (0..next(40))
                    .flat_map(|_| alphabet[next(alphabet.len())].to_vec())
                    .collect();
                let mut fast = QuoteCheck::new(&options, b',');
                fast.start_row(1);
                let mut rest = &row[..];
                while !rest.is_empty() {
                    let (piece, after) = rest.split_at(1 + next(rest.len()));
                    fast.scan(piece);
                    rest = after;
                }
                let (state, expected) = problem_byte_by_byte(&fast, &row);
                let found = fast.problem(&row, 1);
                assert_eq!(fast.state, state, "{:?}", String::from_utf8_lossy(&row));
                assert_eq!(
                    format!("{found:?}"),
                    format!("{expected:?}"),
                    "{:?}",
                    String::from_utf8_lossy(&row)
                );
                if expected.is_some() {
                    problems += 1;
                } else {
                    clean += 1;
                }
            }
        }
        // Both outcomes were tried many times.
        assert!(problems > 1000 && clean > 1000, "{problems} {clean}");
    }

    #[test]
    fn a_problem_after_a_long_plain_piece_is_placed_exactly() {
        // The row comes in pieces; the first has no quote at all. The stray quote's column counts every
        // character before it, also those of the piece that was skipped whole.
        let row = "abcdefghij,klm\"n\n".as_bytes();
        let mut q = QuoteCheck::new(&FormatOptions::default(), b',');
        q.start_row(7);
        q.scan(&row[..10]);
        q.scan(&row[10..]);
        let problem = q.problem(row, 7).expect("a stray quote");
        assert_eq!((problem.line, problem.column, problem.field), (7, 15, 1));
    }

    #[test]
    fn a_bad_header_quote_stops_the_read() {
        let input = Input {
            reader: Box::new(&b"a\"b,c\n1,2\n"[..]),
            name: "t.csv".to_owned(),
            file: None,
        };
        let err = csv_decoder(input, &FormatOptions::default()).err().unwrap();
        assert!(err.to_string().contains("in the header"), "{err}");
        assert_eq!(err.position().and_then(|p| p.column), Some(2));
    }

    #[test]
    fn well_formed_quoting_passes_in_every_dialect() {
        let good = b"a,b\n\"x,\"\"y\"\"\",\"\"\n\"multi\r\nline\",z\r\n";
        assert!(decode(good).iter().all(Result::is_ok));
        let escaped = FormatOptions {
            escape: Some(b'\\'),
            delimiter: Some(b';'),
            ..FormatOptions::default()
        };
        let rows = decode_with(b"a;b\n\"x\\\"y\";2\n", &escaped);
        assert_eq!(
            rows[0].as_ref().unwrap().get("a"),
            Some(&Value::String("x\"y".into()))
        );
        let tsv = Input {
            reader: Box::new(&b"a\tb\n\"x\"\t2\n"[..]),
            name: "t.tsv".to_owned(),
            file: None,
        };
        let rows: Vec<_> = tsv_decoder(tsv, &FormatOptions::default())
            .unwrap()
            .collect();
        assert!(rows[0].is_ok(), "{rows:?}");
    }

    #[test]
    fn lenient_quotes_read_malformed_quoting_as_the_csv_crate_does() {
        let options = FormatOptions {
            csv_lenient_quotes: true,
            ..FormatOptions::default()
        };
        let rows = decode_with(b"a,b\n1,x\"y\n\"p\"q,2\n3,\"open\n4\n", &options);
        let texts: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.as_ref().unwrap().values().map(Value::to_text).collect())
            .collect();
        assert_eq!(texts, [["1", "x\"y"], ["pq", "2"], ["3", "open\n4\n"]]);
    }

    #[test]
    fn a_row_with_more_fields_than_the_limit_is_its_own_error() {
        let max = crate::format::limit::MAX_FIELDS;
        let mut text = b"a\n".to_vec();
        for fields in [max + 1, 3 * max] {
            text.extend(std::iter::repeat_n(b',', fields - 1));
            text.push(b'\n');
        }
        text.extend_from_slice(b"ok\n");
        let options = FormatOptions {
            allow_ragged: true,
            ..FormatOptions::default()
        };
        let rows = decode_with(&text, &options);
        assert_eq!(rows.len(), 3);
        for (i, row) in rows[..2].iter().enumerate() {
            let (line, _, _, message) = located(row);
            assert_eq!(line, Some(i as u64 + 2));
            assert!(message.contains("more than 1048576 fields"), "{message}");
        }
        assert_eq!(
            rows[2].as_ref().unwrap().get("a"),
            Some(&Value::String("ok".into()))
        );
        let mut wide_header = vec![b','; max + 1];
        wide_header.push(b'\n');
        let input = Input {
            reader: Box::new(std::io::Cursor::new(wide_header)),
            name: "t.csv".to_owned(),
            file: None,
        };
        let err = csv_decoder(input, &FormatOptions::default()).err().unwrap();
        assert!(
            err.to_string()
                .contains("in the header, the record has more than"),
            "{err}"
        );
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
