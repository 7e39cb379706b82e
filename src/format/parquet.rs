//! The decode and encode stages for Parquet: row groups read in batches through the Apache Arrow project's
//! reader (projection, nested lists and structs, decimals, timestamps with unit and zone, dictionaries),
//! and records written as row groups with a schema inferred from the first records.
//!
//! Parquet keeps its index at the end of the file, so the reader needs a file it can seek: the input file
//! itself, or a stream copied aside under `--max-document-size` ([`Input::seekable`]). Compression is the
//! format's own (per page), not an outer layer.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal128Type, Decimal256Type, Float16Type, Float32Type, Float64Type,
    Int16Type, Int32Type, Int64Type, Int8Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array,
    Int64Array, ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
    TimestampNanosecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveTime, Offset as _, TimeZone as _};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};

use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Decimal, Record, Timestamp, Value};
use crate::sink::ByteSink;

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
}

impl Iterator for ParquetDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.failed {
            return None;
        }
        while self.batch.as_ref().is_none_or(|b| self.row >= b.num_rows()) {
            match self.reader.next()? {
                Ok(batch) => (self.batch, self.row) = (Some(batch), 0),
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
            record_at(batch, row, self.json_cells).map_err(|(field, message)| {
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
    row: usize,
    json_cells: bool,
) -> std::result::Result<Record, (String, String)> {
    let schema = batch.schema();
    let mut record = Record::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let value = match value_at(column.as_ref(), row).map_err(|m| (field.name().clone(), m))? {
            Value::String(text) if json_cells => super::csv::cell_value(&text, true),
            value => value,
        };
        record.insert(field.name().as_str(), value);
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

// ---------------------------------------------------------------------------------------------------------
// Writing

fn encoder(sink: Box<dyn ByteSink>, options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    if options.parquet.row_group_size == 0 {
        return Err(Error::config("--row-group-size must be at least 1"));
    }
    Ok(Box::new(ParquetEncoder {
        sink: Some(sink),
        writer: None,
        columns: Vec::new(),
        schema: Arc::new(Schema::empty()),
        pending: Vec::new(),
        sample: options.sample_records.max(1),
        options: options.parquet.clone(),
    }))
}

/// Records written as Parquet: the first `sample` records fix the schema, then records go out in Arrow
/// batches, and the writer cuts a row group every `row_group_size` rows.
struct ParquetEncoder {
    sink: Option<Box<dyn ByteSink>>,
    writer: Option<ArrowWriter<Box<dyn ByteSink>>>,
    /// The schema's columns, with what the sample said about them.
    columns: Vec<(String, DataType)>,
    schema: Arc<Schema>,
    /// Records not yet written.
    pending: Vec<Record>,
    sample: usize,
    options: ParquetOptions,
}

impl ParquetEncoder {
    /// Fixes the schema from the records held so far and opens the writer.
    fn start(&mut self) -> Result<()> {
        let mut columns: Vec<(String, Seen)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for record in &self.pending {
            for (key, value) in record.iter() {
                let i = *index.entry(key.to_string()).or_insert_with(|| {
                    columns.push((key.to_string(), Seen::Nothing));
                    columns.len() - 1
                });
                let seen = std::mem::replace(&mut columns[i].1, Seen::Nothing);
                columns[i].1 = merge(seen, value);
            }
        }
        // A column of nulls only, or of values of more than one type, holds text.
        self.columns = columns
            .into_iter()
            .map(|(name, seen)| match seen {
                Seen::Type(t) => (name, t),
                Seen::Nothing | Seen::Mixed => (name, DataType::Utf8),
            })
            .collect();
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, t)| Field::new(name, t.clone(), true))
            .collect();
        let properties = WriterProperties::builder()
            .set_compression(self.options.compression.codec())
            .set_max_row_group_row_count(Some(self.options.row_group_size))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("ferry {}", env!("CARGO_PKG_VERSION")))
            .build();
        let sink = self
            .sink
            .take()
            .ok_or_else(|| sink_error("the output is closed"))?;
        let schema = Arc::new(Schema::new(fields));
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(properties))
            .map_err(|e| sink_error(&e.to_string()))?;
        self.schema = schema;
        self.writer = Some(writer);
        Ok(())
    }

    /// Converts the pending records to one Arrow batch and writes it.
    fn flush(&mut self) -> Result<()> {
        if self.writer.is_none() {
            self.start()?;
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(()); // no records: a file with the schema (if any) and no row group
        }
        let pending = std::mem::take(&mut self.pending);
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (name, data_type) in &self.columns {
            let values: Vec<&Value> = pending
                .iter()
                .map(|r| r.get(name).unwrap_or(&Value::Null))
                .collect();
            // check() let only fitting records in, so a failure here is ferry's own: it ends the run.
            let array = build_array(data_type, &values).map_err(|(_, message)| {
                let at = Position::default().with_field(name.clone());
                Error::data(Stage::Encode, at, format!("{message} (internal error)"))
            })?;
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| sink_error(&e.to_string()))?;
        writer.write(&batch).map_err(|e| sink_error(&e.to_string()))
    }
}

impl Encoder for ParquetEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        // Once the schema is fixed, a record that does not fit it is refused here, alone: the batch it
        // would have joined is written whole.
        if self.writer.is_some() {
            self.check(record)?;
        }
        self.pending.push(record.clone());
        let limit = if self.writer.is_none() {
            self.sample
        } else {
            BATCH_ROWS.min(self.options.row_group_size)
        };
        if self.pending.len() >= limit {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if !self.pending.is_empty() || self.writer.is_none() {
            self.flush()?;
        }
        let writer = self
            .writer
            .take()
            .ok_or_else(|| sink_error("the output is closed"))?;
        let sink = writer
            .into_inner()
            .map_err(|e| sink_error(&e.to_string()))?;
        sink.finish()
    }

    fn bytes_written(&self) -> u64 {
        match &self.writer {
            Some(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            None => 0,
        }
    }
}

fn sink_error(message: &str) -> Error {
    Error::data(
        Stage::Encode,
        Position::default(),
        format!("the Parquet output cannot be written: {message}"),
    )
}

impl ParquetEncoder {
    /// The error for a record the schema cannot hold: a field the first records did not have, or a value
    /// of another type than its column's (dropping or converting either would lose it).
    fn check(&self, record: &Record) -> Result<()> {
        for (key, value) in record.iter() {
            let column = self.columns.iter().find(|(name, _)| name == key.as_ref());
            let problem = match column {
                None => Some(format!(
                    "the field is not in the Parquet schema, which the first {} records fixed; raise \
                     --sample-records so that they show it",
                    self.sample
                )),
                Some((_, data_type)) if !fits(data_type, value) => Some(format!(
                    "the {} {} does not fit the Parquet column's type {data_type}, which the first {} \
                     records fixed; raise --sample-records so that they show it",
                    value.type_name(),
                    shown(value),
                    self.sample
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                let at = Position::default().with_field(key.to_string());
                return Err(Error::record(Stage::Encode, at, message));
            }
        }
        Ok(())
    }
}

/// Whether a column of `data_type` holds `value` exactly (what [`build_array`] accepts).
fn fits(data_type: &DataType, value: &Value) -> bool {
    use chrono::Timelike as _;
    match (data_type, value) {
        (_, Value::Null) | (DataType::Utf8, _) => true,
        (DataType::Boolean, Value::Bool(_))
        | (DataType::Int64, Value::Int(_))
        | (DataType::Float64, Value::Float(_))
        | (DataType::Binary, Value::Bytes(_))
        | (DataType::Date32, Value::Date(_)) => true,
        (DataType::Decimal128(_, scale), Value::Decimal(_)) => decimal_in(value, *scale).is_some(),
        (DataType::Timestamp(unit, zone), Value::Timestamp(t)) => {
            let in_unit = match unit {
                TimeUnit::Nanosecond => t.datetime.and_utc().timestamp_nanos_opt().is_some(),
                _ => t.datetime.nanosecond() % 1000 == 0,
            };
            t.offset.is_some() == zone.is_some() && in_unit
        }
        (DataType::List(item), Value::Array(items)) => {
            items.iter().all(|v| fits(item.data_type(), v))
        }
        (DataType::Struct(fields), Value::Object(record)) => {
            record.keys().all(|k| fields.find(k).is_some())
                && fields
                    .iter()
                    .all(|f| fits(f.data_type(), record.get(f.name()).unwrap_or(&Value::Null)))
        }
        _ => false,
    }
}

/// What the sample says a column holds: nothing yet, one type, or values of more than one type.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Nothing,
    Type(DataType),
    Mixed,
}

/// The column type that keeps every value exactly: values must agree in type (decimals in scale,
/// timestamps in having an offset, objects in their fields), else the column is [`Seen::Mixed`] and holds
/// each value's text (nested values as JSON, which `--json-cells` reads back).
fn merge(seen: Seen, value: &Value) -> Seen {
    let new = match value {
        Value::Null => return seen,
        Value::Bool(_) => DataType::Boolean,
        Value::Int(_) => DataType::Int64,
        Value::Float(_) => DataType::Float64,
        Value::Decimal(d) => match decimal_type(d.as_str()) {
            Some(t) => t,
            None => return Seen::Mixed,
        },
        Value::String(_) => DataType::Utf8,
        Value::Bytes(_) => DataType::Binary,
        Value::Date(_) => DataType::Date32,
        Value::Timestamp(t) => timestamp_type(t),
        Value::Array(items) => return merge_list(seen, items),
        Value::Object(record) => return merge_struct(seen, record),
    };
    match seen {
        Seen::Nothing => Seen::Type(new),
        Seen::Type(old) if old == new => Seen::Type(old),
        // Timestamps that agree on their zone widen to the finer unit.
        Seen::Type(DataType::Timestamp(a, za)) => match new {
            DataType::Timestamp(b, zb) if za == zb => {
                Seen::Type(DataType::Timestamp(finer(a, b), za))
            }
            _ => Seen::Mixed,
        },
        _ => Seen::Mixed,
    }
}

fn finer(a: TimeUnit, b: TimeUnit) -> TimeUnit {
    if a == TimeUnit::Nanosecond || b == TimeUnit::Nanosecond {
        TimeUnit::Nanosecond
    } else {
        TimeUnit::Microsecond
    }
}

fn merge_list(seen: Seen, items: &[Value]) -> Seen {
    let start = match seen {
        Seen::Nothing => Seen::Nothing,
        Seen::Type(DataType::List(item)) => Seen::Type(item.data_type().clone()),
        _ => return Seen::Mixed,
    };
    match items.iter().fold(start, merge) {
        Seen::Mixed => Seen::Mixed,
        Seen::Nothing => Seen::Type(DataType::new_list(DataType::Utf8, true)),
        Seen::Type(item) => Seen::Type(DataType::new_list(item, true)),
    }
}

fn merge_struct(seen: Seen, record: &Record) -> Seen {
    let old: Vec<(String, Seen)> = match seen {
        Seen::Nothing => record
            .keys()
            .map(|k| (k.to_owned(), Seen::Nothing))
            .collect(),
        Seen::Type(DataType::Struct(fields)) => fields
            .iter()
            .map(|f| (f.name().clone(), Seen::Type(f.data_type().clone())))
            .collect(),
        _ => return Seen::Mixed,
    };
    // A struct's fields are fixed: an object with other fields would come back with nulls it never had.
    if old.len() != record.len()
        || !old
            .iter()
            .zip(record.keys())
            .all(|((name, _), k)| name == k)
    {
        return Seen::Mixed;
    }
    let mut fields = Vec::with_capacity(old.len());
    for ((name, seen), value) in old.into_iter().zip(record.values()) {
        let data_type = match merge(seen, value) {
            Seen::Mixed => return Seen::Mixed,
            Seen::Nothing => DataType::Utf8,
            Seen::Type(t) => t,
        };
        fields.push(Field::new(name, data_type, true));
    }
    Seen::Type(DataType::Struct(Fields::from(fields)))
}

/// A decimal's column: 38 digits, with as many after the point as it has; `None` past 38 digits.
fn decimal_type(text: &str) -> Option<DataType> {
    unscaled(text).map(|(_, scale)| DataType::Decimal128(38, scale))
}

/// A decimal's digits as an integer and its scale, when they fit Parquet's 38-digit decimal.
fn unscaled(text: &str) -> Option<(i128, i8)> {
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let scale = i32::try_from(fraction.len()).ok()? - exponent;
    let mut digits = format!("{whole}{fraction}");
    let scale = if scale < 0 {
        digits.push_str(&"0".repeat(usize::try_from(-scale).ok()?));
        0
    } else {
        scale
    };
    let significant = digits.trim_start_matches(['-', '+', '0']).len() as i32;
    if significant > 38 || scale > 38 {
        return None;
    }
    Some((digits.parse().ok()?, i8::try_from(scale).ok()?))
}

fn timestamp_type(t: &Timestamp) -> DataType {
    use chrono::Timelike as _;
    let unit = if t.datetime.nanosecond() % 1000 == 0 {
        TimeUnit::Microsecond
    } else {
        TimeUnit::Nanosecond
    };
    DataType::Timestamp(unit, t.offset.map(|o| o.to_string().into()))
}

/// A failure to put a value in its column: the row within the batch and why.
type Bad = (usize, String);

/// One column of a batch from its values, checked against the column's type.
fn build_array(data_type: &DataType, values: &[&Value]) -> std::result::Result<ArrayRef, Bad> {
    let array: ArrayRef = match data_type {
        DataType::Boolean => Arc::new(BooleanArray::from(column(values, |v| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        })?)),
        DataType::Int64 => Arc::new(Int64Array::from(column(values, |v| match v {
            Value::Int(n) => Some(*n),
            _ => None,
        })?)),
        DataType::Float64 => Arc::new(Float64Array::from(column(values, |v| match v {
            Value::Float(f) => Some(*f),
            _ => None,
        })?)),
        DataType::Decimal128(precision, scale) => {
            let numbers = column(values, |v| decimal_in(v, *scale))?;
            let array = Decimal128Array::from(numbers).with_precision_and_scale(*precision, *scale);
            Arc::new(array.map_err(|e| (0, e.to_string()))?)
        }
        DataType::Utf8 => {
            let texts: Vec<Option<String>> = values.iter().map(|v| text_of(v)).collect();
            Arc::new(StringArray::from(texts))
        }
        DataType::Binary => {
            let bytes = column(values, |v| match v {
                Value::Bytes(b) => Some(b.as_slice()),
                _ => None,
            })?;
            Arc::new(BinaryArray::from(bytes))
        }
        DataType::Date32 => Arc::new(Date32Array::from(column(values, |v| match v {
            Value::Date(d) => Some(Date32Type::from_naive_date(*d)),
            _ => None,
        })?)),
        DataType::Timestamp(unit, zone) => timestamps(values, *unit, zone.clone())?,
        DataType::List(item) => {
            let mut offsets = vec![0i32];
            let mut flat: Vec<&Value> = Vec::new();
            let mut valid = Vec::with_capacity(values.len());
            for (row, v) in values.iter().enumerate() {
                match v {
                    Value::Array(items) => flat.extend(items.iter()),
                    Value::Null => {}
                    other => return Err((row, mismatch(other, data_type))),
                }
                valid.push(!matches!(v, Value::Null));
                offsets.push(
                    i32::try_from(flat.len())
                        .map_err(|_| (row, "the list is too long".to_owned()))?,
                );
            }
            // An item's error names the row whose list holds it.
            let child = build_array(item.data_type(), &flat).map_err(|(i, m)| {
                (
                    offsets
                        .partition_point(|&o| o as usize <= i)
                        .saturating_sub(1),
                    m,
                )
            })?;
            let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
            let list =
                ListArray::try_new(item.clone(), offsets, child, Some(NullBuffer::from(valid)));
            Arc::new(list.map_err(|e| (0, e.to_string()))?)
        }
        DataType::Struct(fields) => {
            let mut children = Vec::with_capacity(fields.len());
            for field in fields.iter() {
                let mut parts = Vec::with_capacity(values.len());
                for (row, v) in values.iter().enumerate() {
                    parts.push(match v {
                        Value::Object(record) => record.get(field.name()).unwrap_or(&Value::Null),
                        Value::Null => &Value::Null,
                        other => return Err((row, mismatch(other, data_type))),
                    });
                }
                children.push(build_array(field.data_type(), &parts)?);
            }
            for (row, v) in values.iter().enumerate() {
                if let Value::Object(record) = v {
                    if let Some(key) = record.keys().find(|k| fields.find(k).is_none()) {
                        return Err((
                            row,
                            format!("the object's field {key:?} is not in the Parquet schema"),
                        ));
                    }
                }
            }
            let valid: Vec<bool> = values.iter().map(|v| !matches!(v, Value::Null)).collect();
            let parts =
                StructArray::try_new(fields.clone(), children, Some(NullBuffer::from(valid)));
            Arc::new(parts.map_err(|e| (0, e.to_string()))?)
        }
        other => return Err((0, format!("ferry does not write the Parquet type {other}"))),
    };
    Ok(array)
}

/// A column's values through `take`, which says what a non-null value is in this column; a value it refuses
/// is an error naming its row.
fn column<'v, T>(
    values: &[&'v Value],
    take: impl Fn(&'v Value) -> Option<T>,
) -> std::result::Result<Vec<Option<T>>, Bad> {
    values
        .iter()
        .enumerate()
        .map(|(row, v)| match v {
            Value::Null => Ok(None),
            v => take(v).map(Some).ok_or_else(|| (row, refused(v))),
        })
        .collect()
}

fn refused(value: &Value) -> String {
    format!(
        "the {} {} does not fit the Parquet column's type, which the first records fixed; raise \
         --sample-records so that they show it",
        value.type_name(),
        shown(value)
    )
}

fn mismatch(value: &Value, data_type: &DataType) -> String {
    format!(
        "the {} {} does not fit the Parquet column's type {data_type}",
        value.type_name(),
        shown(value)
    )
}

/// A value for an error message, cut short.
fn shown(value: &Value) -> String {
    let text = value.to_text();
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// A text column takes any value as its text (a field that held more than one type); nested values as JSON.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            let mut out = Vec::new();
            crate::record::write_json(&mut out, value);
            Some(String::from_utf8_lossy(&out).into_owned())
        }
        other => Some(other.to_text()),
    }
}

/// A decimal as a decimal column's unscaled integer: its digits must have the column's scale (a decimal
/// with other digits after the point would come back changed).
fn decimal_in(value: &Value, scale: i8) -> Option<i128> {
    match value {
        Value::Decimal(d) => unscaled(d.as_str())
            .filter(|(_, own)| *own == scale)
            .map(|(n, _)| n),
        _ => None,
    }
}

/// A timestamp column: instants in its unit and zone (local times when it has none).
fn timestamps(
    values: &[&Value],
    unit: TimeUnit,
    zone: Option<Arc<str>>,
) -> std::result::Result<ArrayRef, Bad> {
    let zoned = zone.is_some();
    let numbers = column(values, |v| match v {
        Value::Timestamp(t) if t.offset.is_some() == zoned => {
            let utc = match t.offset {
                Some(offset) => t.datetime - offset,
                None => t.datetime,
            };
            let utc = utc.and_utc();
            match unit {
                TimeUnit::Nanosecond => utc.timestamp_nanos_opt(),
                _ if utc.timestamp_subsec_nanos() % 1000 != 0 => None,
                _ => Some(utc.timestamp_micros()),
            }
        }
        _ => None,
    })?;
    Ok(match unit {
        TimeUnit::Nanosecond => {
            Arc::new(TimestampNanosecondArray::from(numbers).with_timezone_opt(zone))
        }
        _ => Arc::new(TimestampMicrosecondArray::from(numbers).with_timezone_opt(zone)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{DictionaryArray, TimestampMillisecondArray};

    #[test]
    fn decimals_split_into_digits_and_scale() {
        assert_eq!(unscaled("1.50"), Some((150, 2)));
        assert_eq!(unscaled("-0.05"), Some((-5, 2)));
        assert_eq!(unscaled("1e3"), Some((1000, 0)));
        assert_eq!(unscaled("12.5E-2"), Some((125, 3)));
        assert_eq!(unscaled(&"9".repeat(39)), None);
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
