//! Markdown codec: writes a GitHub-flavoured pipe table; reads pipe tables back with pulldown-cmark.
//!
//! Cells are escaped so that a GFM renderer gives back exactly the text written: Markdown punctuation is
//! backslash-escaped (`\|`, `\*`, ...), a newline becomes `<br>`, and leading or trailing spaces become `&#32;`
//! (GFM would trim them). Nested values are compact JSON text, read back as nested values with `--json-cells`.
//! Every table in the document is read, in order, each with its own header. The whole document is parsed at
//! once (Markdown has no streaming parser), so this decoder's memory grows with its input, up to
//! `--max-document-size` (64 MiB by default).

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::csv::{cell_value, checked_names};
use super::limit::{read_whole, too_many_fields, MAX_FIELDS};
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::infer::HeaderSample;
use crate::record::{Key, Record, Value};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "markdown",
    extensions: &["md", "markdown"],
    description: "Markdown: GitHub pipe tables (read whole)",
    fidelity: Fidelity::Text,
    streams: false,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input {
        mut reader, name, ..
    } = input;
    let bytes = read_whole(&mut reader, options.max_document_size, &name, "Markdown")?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let message = format!(
            "Markdown input is not valid UTF-8 ({}); pass --encoding if it is not",
            e.utf8_error()
        );
        Error::data(Stage::Decode, Position::file(name.clone()), message)
    })?;
    let records = read_tables(&text, &name, options)?;
    Ok(Box::new(super::Decoded(records.into_iter().map(Ok))))
}

/// Collects the cells of every table: one record per body row, keyed by that table's header.
fn read_tables(text: &str, name: &str, options: &FormatOptions) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut header: Vec<Key> = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut cell: Option<String> = None;
    // The line of the row being read, counted on from the last row's: a count from the top each time would
    // take quadratic time over a document of many small tables.
    let (mut counted_to, mut line) = (0, 1u64);
    let mut row_line = 0;
    for (event, range) in Parser::new_ext(text, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::TableHead | Tag::TableRow) => {
                row.clear();
                let start = range.start.max(counted_to);
                line += text[counted_to..start].matches('\n').count() as u64;
                counted_to = start;
                row_line = line;
            }
            Event::Start(Tag::TableCell) => cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                row.extend(cell.take());
                if row.len() > MAX_FIELDS {
                    let position = Position::file(name)
                        .with_record(records.len() as u64 + 1)
                        .with_line(row_line);
                    return Err(Error::data(Stage::Decode, position, too_many_fields()));
                }
            }
            Event::End(TagEnd::TableHead) => {
                header = checked_names(row.iter().map(String::as_str), name).map_err(|e| {
                    Error::data(
                        Stage::Decode,
                        Position::file(name).with_line(row_line),
                        e.message(),
                    )
                })?;
            }
            Event::End(TagEnd::TableRow) => {
                let mut record = Record::with_capacity(header.len());
                record.set_line(row_line);
                for (key, text) in header.iter().zip(row.drain(..)) {
                    let value = if options.is_null_marker(&text) {
                        Value::Null
                    } else {
                        cell_value(&text, options.json_cells)
                    };
                    record.push_unchecked(key.clone(), value);
                }
                records.push(record);
            }
            Event::Text(t) | Event::Code(t) => push_text(&mut cell, &t),
            Event::SoftBreak | Event::HardBreak => push_text(&mut cell, "\n"),
            Event::InlineHtml(html) | Event::Html(html) => {
                let tag = html.trim().to_ascii_lowercase();
                let is_br = matches!(tag.as_str(), "<br>" | "<br/>" | "<br />");
                push_text(&mut cell, if is_br { "\n" } else { &html });
            }
            _ => {}
        }
    }
    Ok(records)
}

fn push_text(cell: &mut Option<String>, text: &str) {
    if let Some(cell) = cell {
        cell.push_str(text);
    }
}

/// Escapes a cell so that GFM renders exactly `text`.
fn escape_cell(text: &str, out: &mut String) {
    let start = text.len() - text.trim_start_matches([' ', '\t']).len();
    let end = text.trim_end_matches([' ', '\t']).len().max(start);
    for (i, c) in text.char_indices() {
        let edge = i < start || i >= end;
        match c {
            ' ' if edge => out.push_str("&#32;"),
            '\t' if edge => out.push_str("&#9;"),
            '\n' => out.push_str("<br>"),
            '\r' => out.push_str("&#13;"),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '&' | '~' | '!' | '^' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
}

fn encoder(sink: Box<dyn ByteSink>, options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    Ok(Box::new(MarkdownEncoder {
        out: OutBuf::new(sink),
        header: None,
        sample: HeaderSample::new(options.sample_records),
        options: options.clone(),
        line: String::new(),
        records: 0,
    }))
}

struct MarkdownEncoder {
    out: OutBuf,
    /// The header, once the first records have fixed it.
    header: Option<Vec<Key>>,
    /// The first records, held until they fix the header (the union of their fields).
    sample: HeaderSample,
    options: FormatOptions,
    line: String,
    records: u64,
}

impl MarkdownEncoder {
    fn push_row<'a>(&mut self, cells: impl Iterator<Item = Option<&'a Value>>) {
        self.line.clear();
        self.line.push('|');
        for value in cells {
            self.line.push(' ');
            match value {
                None | Some(Value::Null) => {
                    let marker = self.options.null_marker.as_deref().unwrap_or_default();
                    escape_cell(marker, &mut self.line);
                }
                Some(v) => escape_cell(&v.to_text(), &mut self.line),
            }
            self.line.push_str(" |");
        }
        self.line.push('\n');
        self.out.buf.extend_from_slice(self.line.as_bytes());
    }
}

impl MarkdownEncoder {
    /// Writes the header the held records fix, then the records.
    fn release(&mut self) -> Result<()> {
        let (header, held) = self.sample.take();
        let names: Vec<Value> = header
            .iter()
            .map(|k| Value::String(k.to_string()))
            .collect();
        self.push_header(names.iter().map(Some));
        let rule = "| --- ".repeat(header.len().max(1)) + "|\n";
        self.out.buf.extend_from_slice(rule.as_bytes());
        let first = self.records - held.len() as u64;
        for (i, record) in held.iter().enumerate() {
            self.write_row(&header, record, first + i as u64 + 1)?;
        }
        self.header = Some(header);
        self.out.maybe_flush()
    }

    /// The header row: names are text, never the null marker.
    fn push_header<'a>(&mut self, names: impl Iterator<Item = Option<&'a Value>>) {
        let marker = self.options.null_marker.take();
        self.push_row(names);
        self.options.null_marker = marker;
    }

    fn write_row(&mut self, header: &[Key], record: &Record, number: u64) -> Result<()> {
        let extra = record
            .keys()
            .find(|k| !header.iter().any(|h| &**h == *k))
            .map(str::to_owned);
        if let Some(extra) = extra {
            let pos = Position::default().with_record(number).with_field(extra);
            let message = format!(
                "the record has a field the table header lacks: the header is every field of the first \
                 {} records (--sample-records), and none of them had it",
                self.options.sample_records
            );
            return Err(Error::record(Stage::Encode, pos, message));
        }
        self.push_row(header.iter().map(|k| record.get(k)));
        Ok(())
    }
}

impl Encoder for MarkdownEncoder {
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
        result?;
        self.out.maybe_flush()
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.header.is_none() && self.records > 0 {
            self.release()?;
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

    #[test]
    fn awkward_cells_come_back_exactly() {
        let cells = [
            "a|b",
            " lead",
            "trail ",
            "two\nlines",
            "*not em*",
            "back\\slash",
            "<br>",
            "&amp;",
            "`code`",
            "",
            "セン",
        ];
        let mut text = String::from("| h |\n| --- |\n");
        for c in cells {
            let mut escaped = String::new();
            escape_cell(c, &mut escaped);
            text.push_str(&format!("| {escaped} |\n"));
        }
        let records = read_tables(&text, "t.md", &FormatOptions::default()).unwrap();
        let got: Vec<String> = records
            .iter()
            .map(|r| r.get("h").unwrap().to_text())
            .collect();
        assert_eq!(got, cells);
    }
}
