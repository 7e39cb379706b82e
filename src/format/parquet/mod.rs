//! The decode and encode stages for Parquet: row groups read in batches through the Apache Arrow project's
//! reader (projection, nested lists and structs, decimals, timestamps with unit and zone, dictionaries),
//! and records written as row groups with a schema inferred from the first records.
//!
//! Parquet keeps its index at the end of the file, so the reader needs a file it can seek: the input file
//! itself, or a stream copied aside under `--max-document-size` ([`Input::seekable`]). Compression is the
//! format's own (per page), not an outer layer.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float16Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveTime, Offset as _, TimeZone as _};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use serde::{Deserialize, Serialize};

use super::{Decoder, Fidelity, Format, FormatOptions, Input};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Decimal, Key, Record, Timestamp, Value};

pub(super) const FORMAT: Format = Format {
    name: "parquet",
    extensions: &["parquet", "pq"],
    description:
        "Apache Parquet (typed columns; read by row group; --parquet-compression, --row-group-size)",
    fidelity: Fidelity::Columns,
    streams: true,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

/// Rows per Arrow batch, read or written: the unit the encoder converts records in.
const BATCH_ROWS: usize = 8192;

/// Parquet's own options, under `"parquet"` in a job's `write_options`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParquetOptions {
    /// Page compression (default snappy, as DuckDB and pyarrow write).
    pub compression: ParquetCompression,
    /// Rows per row group (default 122,880, DuckDB's): the writer holds one row group's encoded pages.
    pub row_group_size: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: ParquetCompression::Snappy,
            row_group_size: 122_880,
        }
    }
}

impl ParquetOptions {
    /// Whether nothing differs from the defaults (job files leave the section out then).
    pub fn is_default(&self) -> bool {
        *self == ParquetOptions::default()
    }
}

/// How Parquet pages are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// Snappy: fast, the common default.
    Snappy,
    /// Zstandard, level 3: smaller files.
    Zstd,
    /// Gzip, level 6: for readers that know nothing newer.
    Gzip,
    /// No compression.
    None,
}

impl ParquetCompression {
    fn codec(self) -> Compression {
        match self {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Gzip => Compression::GZIP(GzipLevel::default()),
            ParquetCompression::None => Compression::UNCOMPRESSED,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Reading

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let name = input.name.clone();
    let file = input.seekable(options.max_document_size, "Parquet")?;
    let not_parquet = |e: parquet::errors::ParquetError| {
        Error::data(
            Stage::Decode,
            Position::file(name.clone()),
            format!("not a readable Parquet file: {e}"),
        )
    };
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(not_parquet)?;
    if let Some(keep) = &options.projection {
        let roots = builder.schema().fields().iter().enumerate();
        let indices: Vec<usize> = roots
            .filter(|(_, f)| keep.iter().any(|k| k == f.name()))
            .map(|(i, _)| i)
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
    }
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(not_parquet)?;
    Ok(Box::new(ParquetDecoder {
        reader,
        batch: None,
        row: 0,
        number: 0,
        name,
        failed: false,
        json_cells: options.json_cells,
        keys: ColumnKeys::default(),
    }))
}

/// Records from Parquet row groups, one Arrow batch at a time.
struct ParquetDecoder {
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
    number: u64,
    name: String,
    failed: bool,
    /// `--json-cells`: text holding a JSON array or object (a column of mixed values) is read as it.
    json_cells: bool,
    /// The current batch's column names, made once per batch and shared by its records.
    keys: ColumnKeys,
}

/// A batch's column names as record keys, and whether they are distinct (then a record's fields are
/// appended without looking for an earlier one of the same name).
#[derive(Default)]
struct ColumnKeys {
    keys: Vec<Key>,
    distinct: bool,
}

impl ColumnKeys {
    fn of(batch: &RecordBatch) -> ColumnKeys {
        let keys: Vec<Key> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| Key::from(f.name().as_str()))
            .collect();
        let distinct = keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
        ColumnKeys { keys, distinct }
    }
}

/// Builds each record whole from the parse (no cell-by-cell refill): reused records are dropped.
impl crate::format::Decoder for ParquetDecoder {}

impl Iterator for ParquetDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        while self.batch.as_ref().is_none_or(|b| self.row >= b.num_rows()) {
            match self.reader.next()? {
                Ok(batch) => {
                    self.keys = ColumnKeys::of(&batch);
                    (self.batch, self.row) = (Some(batch), 0);
                }
                Err(e) => {
                    self.failed = true;
                    let at = Position::file(self.name.clone()).with_record(self.number + 1);
                    let message = format!("the Parquet data cannot be read: {e}");
                    return Some(Err(Error::data(Stage::Decode, at, message)));
                }
            }
        }
        let batch = self.batch.as_ref()?;
        self.number += 1;
        let row = self.row;
        self.row += 1;
        Some(
            record_at(batch, &self.keys, row, self.json_cells).map_err(|(field, message)| {
                let at = Position::file(self.name.clone())
                    .with_record(self.number)
                    .with_field(field);
                Error::record(Stage::Decode, at, message)
            }),
        )
    }
}

/// One row of a batch as a record; an error names the field.
fn record_at(
    batch: &RecordBatch,
    keys: &ColumnKeys,
    row: usize,
    json_cells: bool,
) -> std::result::Result<Record, (String, String)> {
    let mut record = Record::with_capacity(batch.num_columns());
    for (key, column) in keys.keys.iter().zip(batch.columns()) {
        let value = match value_at(column.as_ref(), row).map_err(|m| (key.to_string(), m))? {
            Value::String(text) if json_cells => super::csv::cell_value(&text, true),
            value => value,
        };
        if keys.distinct {
            record.push_unchecked(key.clone(), value);
        } else {
            record.insert(&**key, value);
        }
    }
    Ok(record)
}

/// The value of one Arrow cell, exactly: decimals keep their scale, `float` keeps the digits it was
/// written with, timestamps their unit's precision and their zone as an offset.
fn value_at(array: &dyn Array, row: usize) -> std::result::Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let value = match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => Value::Int(array.as_primitive::<Int8Type>().value(row).into()),
        DataType::Int16 => Value::Int(array.as_primitive::<Int16Type>().value(row).into()),
        DataType::Int32 => Value::Int(array.as_primitive::<Int32Type>().value(row).into()),
        DataType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::Int(array.as_primitive::<UInt8Type>().value(row).into()),
        DataType::UInt16 => Value::Int(array.as_primitive::<UInt16Type>().value(row).into()),
        DataType::UInt32 => Value::Int(array.as_primitive::<UInt32Type>().value(row).into()),
        DataType::UInt64 => {
            let n = array.as_primitive::<UInt64Type>().value(row);
            i64::try_from(n).map_or_else(|_| Value::Decimal(Decimal::from_u64(n)), Value::Int)
        }
        // A 32- or 16-bit float keeps the shortest digits that read back as it (0.1, not 0.10000000149).
        DataType::Float16 => short_float(array.as_primitive::<Float16Type>().value(row)),
        DataType::Float32 => short_float(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal128(_, scale) => {
            let n = array.as_primitive::<Decimal128Type>().value(row);
            scaled(n.to_string(), *scale)?
        }
        DataType::Decimal256(_, scale) => {
            let n = array.as_primitive::<Decimal256Type>().value(row);
            scaled(n.to_string(), *scale)?
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Value::Bytes(array.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Value::Bytes(array.as_binary_view().value(row).to_vec()),
        DataType::FixedSizeBinary(_) => {
            Value::Bytes(array.as_fixed_size_binary().value(row).to_vec())
        }
        DataType::Date32 => date(array.as_primitive::<Date32Type>().value_as_date(row))?,
        DataType::Date64 => date(array.as_primitive::<Date64Type>().value_as_date(row))?,
        DataType::Timestamp(unit, zone) => timestamp(array, row, *unit, zone.as_deref())?,
        DataType::Time32(TimeUnit::Second) => {
            time(array.as_primitive::<Time32SecondType>().value_as_time(row))?
        }
        DataType::Time32(_) => time(
            array
                .as_primitive::<Time32MillisecondType>()
                .value_as_time(row),
        )?,
        DataType::Time64(TimeUnit::Microsecond) => time(
            array
                .as_primitive::<Time64MicrosecondType>()
                .value_as_time(row),
        )?,
        DataType::Time64(_) => time(
            array
                .as_primitive::<Time64NanosecondType>()
                .value_as_time(row),
        )?,
        DataType::List(_) => list(array.as_list::<i32>().value(row))?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row))?,
        DataType::FixedSizeList(_, _) => list(array.as_fixed_size_list().value(row))?,
        DataType::Struct(fields) => {
            let parts = array.as_struct();
            let mut record = Record::with_capacity(fields.len());
            for (field, column) in fields.iter().zip(parts.columns()) {
                record.insert(field.name().as_str(), value_at(column.as_ref(), row)?);
            }
            Value::Object(record)
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            let mut record = Record::with_capacity(entries.len());
            for i in 0..entries.len() {
                let key = value_at(keys.as_ref(), i)?.to_text();
                record.insert(key.as_str(), value_at(values.as_ref(), i)?);
            }
            Value::Object(record)
        }
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            let key = dictionary_key(dictionary.keys(), row)?;
            value_at(dictionary.values().as_ref(), key)?
        }
        other => {
            return Err(format!(
                "the Parquet column type {other} is not read by ferry"
            ))
        }
    };
    Ok(value)
}

fn short_float(n: impl std::fmt::Display) -> Value {
    Value::Float(n.to_string().parse().unwrap_or(f64::NAN))
}

/// An unscaled decimal integer's text with `scale` digits after the point.
fn scaled(digits: String, scale: i8) -> std::result::Result<Value, String> {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest.to_owned()),
        None => ("", digits),
    };
    let text = match usize::try_from(scale) {
        Ok(0) => format!("{sign}{digits}"),
        Ok(scale) => {
            let padded = format!("{digits:0>width$}", width = scale + 1);
            let (whole, fraction) = padded.split_at(padded.len() - scale);
            format!("{sign}{whole}.{fraction}")
        }
        Err(_) => format!("{sign}{digits}e{}", -i32::from(scale)),
    };
    Decimal::parse(&text)
        .map(Value::Decimal)
        .ok_or_else(|| format!("the decimal {text} cannot be read"))
}

fn date(date: Option<NaiveDate>) -> std::result::Result<Value, String> {
    date.map(Value::Date)
        .ok_or_else(|| "the date is out of range".to_owned())
}

/// Times of day have no value of their own in ferry: they are read as text (`10:30:00.25`).
fn time(time: Option<NaiveTime>) -> std::result::Result<Value, String> {
    time.map(|t| Value::String(t.to_string()))
        .ok_or_else(|| "the time of day is out of range".to_owned())
}

fn list(values: ArrayRef) -> std::result::Result<Value, String> {
    let items = (0..values.len()).map(|i| value_at(values.as_ref(), i));
    Ok(Value::Array(items.collect::<std::result::Result<_, _>>()?))
}

fn dictionary_key(keys: &dyn Array, row: usize) -> std::result::Result<usize, String> {
    let key = match keys.data_type() {
        DataType::Int8 => i64::from(keys.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => i64::from(keys.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => i64::from(keys.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => keys.as_primitive::<Int64Type>().value(row),
        DataType::UInt8 => i64::from(keys.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => i64::from(keys.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => i64::from(keys.as_primitive::<UInt32Type>().value(row)),
        other => {
            return Err(format!(
                "a dictionary keyed by {other} is not read by ferry"
            ))
        }
    };
    usize::try_from(key).map_err(|_| format!("the dictionary key {key} is negative"))
}

/// A timestamp in its unit; a zone (`UTC`, `+02:00`, `Europe/Paris` where known) becomes the offset it
/// has at that instant, and no zone a local time.
fn timestamp(
    array: &dyn Array,
    row: usize,
    unit: TimeUnit,
    zone: Option<&str>,
) -> std::result::Result<Value, String> {
    use arrow_array::types::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    let n = match unit {
        TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
        TimeUnit::Millisecond => array.as_primitive::<TimestampMillisecondType>().value(row),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(row),
    };
    let per_second: i64 = match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let nanos = n.rem_euclid(per_second) * (1_000_000_000 / per_second);
    let utc = DateTime::from_timestamp(n.div_euclid(per_second), nanos as u32)
        .ok_or_else(|| format!("the timestamp {n} ({unit:?}) is out of range"))?
        .naive_utc();
    let Some(zone) = zone else {
        return Ok(Value::Timestamp(Timestamp {
            datetime: utc,
            offset: None,
        }));
    };
    // A zone name this build does not know still reads as the exact instant, in UTC.
    let offset = match zone.parse::<arrow_array::timezone::Tz>() {
        Ok(tz) => tz.offset_from_utc_datetime(&utc).fix(),
        Err(_) => chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()),
    };
    Ok(Value::Timestamp(Timestamp {
        datetime: utc + offset,
        offset: Some(offset),
    }))
}

mod write;

use write::encoder;

#[cfg(test)]
mod tests {
    use super::write::{merge, unscaled, Seen};
    use super::*;
    use arrow_array::{DictionaryArray, TimestampMillisecondArray};
    use parquet::arrow::ArrowWriter;
    use std::sync::Arc;

    #[test]
    fn decimals_split_into_digits_and_scale() {
        assert_eq!(unscaled("1.50"), Some((150, 2)));
        assert_eq!(unscaled("-0.05"), Some((-5, 2)));
        assert_eq!(unscaled("1e3"), Some((1000, 0)));
        assert_eq!(unscaled("12.5E-2"), Some((125, 3)));
        assert_eq!(unscaled(&"9".repeat(39)), None);
        // Inferred columns keep a decimal's text: one the column would respell makes the column text.
        let column = |text: &str| {
            merge(
                Seen::Nothing,
                &Value::Decimal(Decimal::parse(text).unwrap()),
            )
        };
        assert!(matches!(
            column("1.50"),
            Seen::Type(DataType::Decimal128(38, 2))
        ));
        assert!(matches!(column("2358.315358e0"), Seen::Mixed));
        assert!(matches!(column("821388707E-3"), Seen::Mixed));
        assert!(matches!(column("-0.0"), Seen::Mixed));
        assert_eq!(
            scaled("-5".into(), 2).unwrap(),
            Value::Decimal(Decimal::parse("-0.05").unwrap())
        );
    }

    #[test]
    fn mixed_values_make_a_text_column_and_one_type_keeps_its_own() {
        let decimal = |t: &str| Value::Decimal(Decimal::parse(t).unwrap());
        let seen = |values: &[Value]| values.iter().fold(Seen::Nothing, merge);
        assert_eq!(
            seen(&[Value::Int(1), Value::Null, Value::Int(2)]),
            Seen::Type(DataType::Int64)
        );
        assert_eq!(seen(&[Value::Int(1), Value::Float(1.5)]), Seen::Mixed);
        assert_eq!(
            seen(&[decimal("1.50"), decimal("2.25")]),
            Seen::Type(DataType::Decimal128(38, 2))
        );
        assert_eq!(seen(&[decimal("1.50"), decimal("2.5")]), Seen::Mixed);
        assert_eq!(seen(&[Value::Null]), Seen::Nothing);
    }

    /// Dictionary columns and a timestamp in a named zone, as pyarrow and Spark write them, through a real
    /// file.
    #[test]
    fn dictionary_and_named_zone_columns_read_as_their_values() {
        let colors: DictionaryArray<Int32Type> = vec!["red", "blue", "red"].into_iter().collect();
        let at = TimestampMillisecondArray::from(vec![Some(1_719_835_200_000), None, Some(0)])
            .with_timezone("Europe/Paris");
        let batch = RecordBatch::try_from_iter([
            ("color", Arc::new(colors) as ArrayRef),
            ("at", Arc::new(at) as ArrayRef),
        ])
        .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut writer =
            ArrowWriter::try_new(file.reopen().unwrap(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let input = Input {
            reader: Box::new(std::io::empty()),
            name: "t.parquet".into(),
            file: Some(file.path().to_owned()),
        };
        let records: Vec<Record> = decoder(input, &FormatOptions::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let shown: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.get("color").unwrap().to_text(),
                    r.get("at").unwrap().to_text()
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "red 2024-07-01T14:00:00+02:00",
                "blue ",
                "red 1970-01-01T01:00:00+01:00"
            ]
        );
    }
}
