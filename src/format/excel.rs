//! The decode stage for workbooks — Excel (`.xlsx`, `.xls`) and OpenDocument (`.ods`) — through calamine:
//! one sheet's rows as records under its header row. ferry reads workbooks and does not write them.
//!
//! A workbook is a zip (or an OLE file) with its directory at the end, so the reader needs a file it can
//! seek ([`Input::seekable`]), and calamine reads the chosen sheet whole: memory grows with the sheet.
//! Cells keep their types: numbers as the cell holds them (whole numbers as integers), booleans, text,
//! and date-formatted cells as dates (midnight) or timestamps. Empty cells are null; a merged range's value
//! is in its first cell and the others are empty; rows with no value at all are skipped. A cell holding an
//! error (`#DIV/0!`) rejects its record, naming the sheet, row and column.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use calamine::{Data, Range, Reader, Sheets};
use serde::{Deserialize, Serialize};

use super::{Decoder, Fidelity, Format, FormatOptions, Input};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Record, Timestamp, Value};

pub(super) const XLSX: Format = workbook(
    "xlsx",
    &["xlsx", "xlsm"],
    "Excel workbook (read only; --sheet, --header-row)",
);
pub(super) const XLS: Format = workbook(
    "xls",
    &["xls"],
    "Excel 97-2003 workbook (read only; --sheet, --header-row)",
);
pub(super) const ODS: Format = workbook(
    "ods",
    &["ods"],
    "OpenDocument spreadsheet (read only; --sheet, --header-row)",
);

const fn workbook(
    name: &'static str,
    extensions: &'static [&'static str],
    description: &'static str,
) -> Format {
    Format {
        name,
        extensions,
        description,
        fidelity: Fidelity::Typed,
        streams: false,
        decoder: Some(decoder),
        encoder: None,
    }
}

/// Workbook options, under `"excel"` in a job's `read_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExcelOptions {
    /// `--sheet`: the sheet's name, or its number counting from 1 (default: the first sheet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// `--header-row`: the sheet row (counting from 1, as the spreadsheet shows it) that holds the field
    /// names; the rows above it are left out. Default: the first row with a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_row: Option<u32>,
}

impl ExcelOptions {
    /// Whether nothing differs from the defaults (job files leave the section out then).
    pub fn is_default(&self) -> bool {
        *self == ExcelOptions::default()
    }
}

/// The names of a workbook's sheets, in order (`ferry headers book.xlsx`); `None` when the file is not in a
/// workbook format.
pub fn sheet_names(path: &Path) -> Result<Option<Vec<String>>> {
    let is_workbook = path
        .extension()
        .and_then(|e| super::by_extension(&e.to_string_lossy()))
        .is_some_and(|f| [XLSX.name, XLS.name, ODS.name].contains(&f.name));
    if !is_workbook {
        return Ok(None);
    }
    let name = path.display().to_string();
    let file = File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    Ok(Some(open(file, &name)?.sheet_names()))
}

/// Opens a workbook: an OLE file is Excel 97-2003; a zip is Excel's or OpenDocument's, whichever reads.
fn open(file: File, name: &str) -> Result<Sheets<BufReader<File>>> {
    use std::io::{Read as _, Seek as _};
    let fail = |message: String| {
        Error::data(
            Stage::Decode,
            Position::file(name.to_owned()),
            format!("not a readable workbook: {message}"),
        )
    };
    let io_fail = |e: std::io::Error| Error::io(Stage::Source, Some(name), e);
    let from_start = || -> Result<BufReader<File>> {
        let mut copy = file.try_clone().map_err(io_fail)?;
        copy.rewind().map_err(io_fail)?;
        Ok(BufReader::new(copy))
    };
    let mut magic = [0u8; 4];
    from_start()?
        .read_exact(&mut magic)
        .map_err(|e| fail(e.to_string()))?;
    if magic == [0xD0, 0xCF, 0x11, 0xE0] {
        let book = calamine::Xls::new(from_start()?).map_err(|e| fail(e.to_string()))?;
        return Ok(Sheets::Xls(book));
    }
    match calamine::Xlsx::new(from_start()?) {
        Ok(book) => Ok(Sheets::Xlsx(book)),
        Err(xlsx) => match calamine::Ods::new(from_start()?) {
            Ok(book) => Ok(Sheets::Ods(book)),
            Err(_) => Err(fail(xlsx.to_string())),
        },
    }
}

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let name = input.name.clone();
    let file = input.seekable(options.max_document_size, "a workbook")?;
    let mut book = open(file, &name)?;
    let sheets = book.sheet_names();
    let sheet = choose_sheet(&sheets, options.excel.sheet.as_deref())
        .map_err(|m| Error::config(format!("{name}: {m}")))?;
    let shown = format!("{name}, sheet {sheet:?}");
    let range = book.worksheet_range(&sheet).map_err(|e| {
        Error::data(
            Stage::Decode,
            Position::file(shown.clone()),
            format!("the sheet cannot be read: {e}"),
        )
    })?;
    SheetDecoder::new(range, shown, options).map(|d| Box::new(d) as Box<dyn Decoder>)
}

/// The sheet `--sheet` names: by name first, then by number from 1; the first sheet by default.
fn choose_sheet(sheets: &[String], wanted: Option<&str>) -> std::result::Result<String, String> {
    let listed = || format!("the workbook's sheets are {sheets:?}");
    let Some(wanted) = wanted else {
        return sheets
            .first()
            .cloned()
            .ok_or_else(|| "the workbook has no sheet".to_owned());
    };
    if let Some(found) = sheets.iter().find(|s| *s == wanted) {
        return Ok(found.clone());
    }
    match wanted.parse::<usize>() {
        Ok(n) if n >= 1 && n <= sheets.len() => Ok(sheets[n - 1].clone()),
        Ok(n) => Err(format!("--sheet {n}: there is no sheet {n}; {}", listed())),
        Err(_) => Err(format!(
            "--sheet {wanted:?}: no sheet has that name; {}",
            listed()
        )),
    }
}

/// A sheet's rows below its header as records.
struct SheetDecoder {
    range: Range<Data>,
    /// The sheet's name as errors show it: `book.xlsx, sheet "Sales"`.
    name: String,
    /// Field names, one per column of the range.
    fields: Vec<String>,
    /// The next row of the range to read, and the first row and column the range starts at (0-based).
    row: usize,
    origin: (u32, u32),
    number: u64,
}

impl SheetDecoder {
    fn new(range: Range<Data>, name: String, options: &FormatOptions) -> Result<SheetDecoder> {
        let origin = range.start().unwrap_or((0, 0));
        let (height, width) = range.get_size();
        let has_value = |r: usize| (0..width).any(|c| !is_empty(range.get((r, c))));
        // The header row: `--header-row` (a sheet row, from 1), else the first row with a value.
        let header = match options.excel.header_row {
            Some(0) => return Err(Error::config("--header-row counts from 1")),
            Some(n) => (n - 1).checked_sub(origin.0).map(|r| r as usize),
            None => (0..height).find(|&r| has_value(r)),
        };
        let mut fields: Vec<String> = (0..width)
            .map(|c| column_letters(origin.1 + c as u32))
            .collect();
        let mut row = 0;
        if options.header {
            if let Some(r) = header {
                for (c, field) in fields.iter_mut().enumerate() {
                    match range.get((r, c)) {
                        Some(cell) if !is_empty(Some(cell)) => *field = cell.to_string(),
                        _ => {}
                    }
                }
                row = r + 1;
            }
        } else if let Some(r) = header {
            row = r;
        }
        if let Some(columns) = &options.columns {
            for (field, given) in fields.iter_mut().zip(columns) {
                field.clone_from(given);
            }
        }
        dedupe(&mut fields);
        options.input_columns.learn(fields.iter().cloned());
        Ok(SheetDecoder {
            range,
            name,
            fields,
            row,
            origin,
            number: 0,
        })
    }

    /// The record of one row, or the error of its first cell that holds an error value.
    fn record(&self, r: usize) -> Result<Record> {
        let mut record = Record::with_capacity(self.fields.len());
        for (c, field) in self.fields.iter().enumerate() {
            let cell = self.range.get((r, c)).unwrap_or(&Data::Empty);
            let value = cell_value(cell).map_err(|message| {
                let (sheet_row, sheet_column) =
                    (self.origin.0 + r as u32 + 1, self.origin.1 + c as u32);
                let at = Position::file(self.name.clone())
                    .with_record(self.number)
                    .with_line(u64::from(sheet_row))
                    .with_column(u64::from(sheet_column) + 1)
                    .with_field(field.clone());
                Error::record(
                    Stage::Decode,
                    at,
                    format!("cell {}{sheet_row} {message}", column_letters(sheet_column)),
                )
            })?;
            record.insert(field.as_str(), value);
        }
        record.set_line(u64::from(self.origin.0) + r as u64 + 1);
        Ok(record)
    }
}

/// Builds each record whole from the parse (no cell-by-cell refill): reused records are dropped.
impl crate::format::Decoder for SheetDecoder {}

impl Iterator for SheetDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        let (height, width) = self.range.get_size();
        // Rows with no value at all are not records (spacer rows, the end of a formatted area).
        while self.row < height && (0..width).all(|c| is_empty(self.range.get((self.row, c)))) {
            self.row += 1;
        }
        if self.row >= height {
            return None;
        }
        self.number += 1;
        self.row += 1;
        Some(self.record(self.row - 1))
    }
}

fn is_empty(cell: Option<&Data>) -> bool {
    match cell {
        None | Some(Data::Empty) => true,
        Some(Data::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// A cell's value: whole numbers (up to 2^53, where a float is exact) as integers, other numbers as the
/// float the cell holds, date-formatted cells as dates or timestamps, durations and ISO texts as text.
fn cell_value(cell: &Data) -> std::result::Result<Value, String> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    Ok(match cell {
        Data::Empty => Value::Null,
        Data::String(s) if s.is_empty() => Value::Null,
        Data::String(s) => Value::String(s.clone()),
        Data::Bool(b) => Value::Bool(*b),
        Data::Int(n) => Value::Int(*n),
        Data::Float(f) if f.fract() == 0.0 && f.abs() <= EXACT => Value::Int(*f as i64),
        Data::Float(f) => Value::Float(*f),
        Data::DateTime(d) if d.is_duration() => Value::String(cell.to_string()),
        Data::DateTime(d) => match d.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => Value::Date(t.date()),
            Some(t) => Value::Timestamp(Timestamp {
                datetime: t,
                offset: None,
            }),
            None => return Err(format!("holds a date out of range ({})", d.as_f64())),
        },
        Data::DateTimeIso(text) => match (Timestamp::parse(text), text.parse()) {
            (_, Ok(date)) => Value::Date(date),
            (Some(t), _) => Value::Timestamp(t),
            _ => Value::String(text.clone()),
        },
        Data::DurationIso(text) => Value::String(text.clone()),
        Data::Error(e) => return Err(format!("holds the error {e}")),
    })
}

/// A column's letters as the spreadsheet shows them: 0 is A, 25 is Z, 26 is AA.
fn column_letters(column: u32) -> String {
    let mut n = column + 1;
    let mut letters = Vec::new();
    while n > 0 {
        let rest = (n - 1) % 26;
        letters.push(b'A' + rest as u8);
        n = (n - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).unwrap_or_default()
}

/// Makes header names unique: a repeated name gets `_2`, `_3`, … (a record cannot hold a field twice).
fn dedupe(fields: &mut [String]) {
    for i in 1..fields.len() {
        let mut n = 2;
        let base = fields[i].clone();
        while fields[..i].contains(&fields[i]) {
            fields[i] = format!("{base}_{n}");
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        let shown: Vec<String> = [0, 25, 26, 51, 52, 701, 702].map(column_letters).into();
        assert_eq!(shown, ["A", "Z", "AA", "AZ", "BA", "ZZ", "AAA"]);
    }

    #[test]
    fn repeated_header_names_get_a_suffix() {
        let mut fields = vec![
            "a".to_owned(),
            "a".to_owned(),
            "b".to_owned(),
            "a".to_owned(),
        ];
        dedupe(&mut fields);
        assert_eq!(fields, ["a", "a_2", "b", "a_3"]);
    }

    #[test]
    fn a_sheet_is_chosen_by_name_then_number() {
        let sheets = vec!["Sales".to_owned(), "2".to_owned(), "Notes".to_owned()];
        assert_eq!(choose_sheet(&sheets, None).unwrap(), "Sales");
        assert_eq!(choose_sheet(&sheets, Some("Notes")).unwrap(), "Notes");
        assert_eq!(choose_sheet(&sheets, Some("2")).unwrap(), "2");
        assert_eq!(choose_sheet(&sheets, Some("3")).unwrap(), "Notes");
        let missing = choose_sheet(&sheets, Some("Q3")).unwrap_err();
        assert!(missing.contains("no sheet has that name"), "{missing}");
        assert!(choose_sheet(&sheets, Some("9"))
            .unwrap_err()
            .contains("no sheet 9"));
    }
}
