//! The encode stage for Parquet: records appended straight into per-column Arrow builders, cut into
//! batches of [`BATCH_ROWS`] and written as row groups of `--row-group-size` rows.
//!
//! The schema comes from the template's declared types where it declares them (through the one type
//! table, [`ColumnKind`]), else from the first `--sample-records` records; a record that does not fit it
//! is rejected alone, naming the field. Memory holds the sample, one batch of builders and the row group's
//! encoded pages.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder, TimestampNanosecondBuilder,
};
use arrow_array::types::Date32Type;
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int64Array,
    ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
    TimestampNanosecondArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use super::{ParquetOptions, BATCH_ROWS};
use crate::db::ColumnKind;
use crate::error::{Error, Position, Result, Stage};
use crate::format::{Encoder, FormatOptions, InputColumns};
use crate::record::{Record, Timestamp, Value};
use crate::sink::ByteSink;

pub(super) fn encoder(
    sink: Box<dyn ByteSink>,
    options: &FormatOptions,
) -> Result<Box<dyn Encoder>> {
    if options.parquet.row_group_size == 0 {
        return Err(Error::config("--row-group-size must be at least 1"));
    }
    let declared = options
        .declared
        .iter()
        .map(|(name, kind)| (name.clone(), Plan::of(*kind)))
        .collect();
    Ok(Box::new(ParquetEncoder {
        sink: Some(sink),
        writer: None,
        columns: Vec::new(),
        schema: Arc::new(Schema::empty()),
        sample: Vec::new(),
        sample_size: options.sample_records.max(1),
        declared,
        known: options.input_columns.clone(),
        rows: 0,
        slots: Vec::new(),
        options: options.parquet.clone(),
    }))
}

/// The one column of an output of no records whose columns nothing names (no template, no header).
const NO_COLUMNS: &str = "_ferry_no_columns";

/// What the template's declaration fixes about a column before any record is seen.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    /// The column's type, whole.
    Fixed(DataType),
    /// An exact decimal: the sample gives the scale (the most digits after the point it shows), and
    /// values with fewer digits are widened to it exactly.
    Decimal,
    /// A timestamp in microseconds: the first value says whether the column holds instants (UTC) or
    /// local times, and the others must agree.
    Timestamp(Option<bool>),
    /// Nothing declared (or arrays and objects, whose items the declaration does not say): the sample
    /// decides.
    Sampled,
}

impl Plan {
    fn of(kind: Option<ColumnKind>) -> Plan {
        let fixed = match kind {
            None | Some(ColumnKind::Json { .. } | ColumnKind::Any) => return Plan::Sampled,
            Some(ColumnKind::Decimal) => return Plan::Decimal,
            Some(ColumnKind::Timestamp { .. }) => return Plan::Timestamp(None),
            Some(ColumnKind::Text | ColumnKind::Uuid) => DataType::Utf8,
            Some(ColumnKind::Integer { .. }) => DataType::Int64,
            Some(ColumnKind::Float { .. }) => DataType::Float64,
            Some(ColumnKind::Boolean) => DataType::Boolean,
            Some(ColumnKind::Date) => DataType::Date32,
            Some(ColumnKind::Bytes) => DataType::Binary,
            Some(ColumnKind::TextArray) => DataType::new_list(DataType::Utf8, true),
        };
        Plan::Fixed(fixed)
    }

    /// Why `value` cannot go in a column declared so, if it cannot; a timestamp plan learns its zone from
    /// the first value.
    fn refuses(&mut self, value: &Value) -> Option<String> {
        use chrono::Timelike as _;
        match (&mut *self, value) {
            (_, Value::Null) | (Plan::Sampled, _) => None,
            (Plan::Fixed(data_type), value) if fits(data_type, value, false) => None,
            (Plan::Fixed(data_type), value) => Some(mismatch(value, data_type)),
            (Plan::Decimal, Value::Decimal(d)) if unscaled(d.as_str()).is_some() => None,
            (Plan::Timestamp(zoned), Value::Timestamp(t))
                if t.datetime.nanosecond() % 1000 == 0 =>
            {
                let has = t.offset.is_some();
                match *zoned.get_or_insert(has) == has {
                    true => None,
                    false => Some(format!(
                        "the timestamp {} {} a UTC offset and the column's first ones {}: a Parquet \
                         timestamp column holds either instants or local times",
                        shown(value),
                        if has { "has" } else { "has no" },
                        if has { "had none" } else { "had one" }
                    )),
                }
            }
            (Plan::Decimal, _) => Some(format!(
                "the {} {} is not a decimal of at most 38 digits, as the template declares",
                value.type_name(),
                shown(value)
            )),
            (Plan::Timestamp(_), _) => Some(format!(
                "the {} {} is not a timestamp in whole microseconds, as the template declares",
                value.type_name(),
                shown(value)
            )),
        }
    }
}

/// Records written as Parquet: the schema is fixed from the declaration and the first `sample_size`
/// records, then each record's values go straight into the column builders, a batch is written every
/// [`BATCH_ROWS`] rows, and the writer cuts a row group every `row_group_size` rows.
struct ParquetEncoder {
    sink: Option<Box<dyn ByteSink>>,
    writer: Option<RowGroups>,
    columns: Vec<Column>,
    schema: Arc<Schema>,
    /// The records held until the schema is fixed.
    sample: Vec<Record>,
    sample_size: usize,
    /// The template's fields in order, with what their declared types fix.
    declared: Vec<(String, Plan)>,
    /// The input's columns (a CSV header), as its decoder learns them: an output of no records, and no
    /// declared fields, still has them.
    known: InputColumns,
    /// Rows in the builders.
    rows: usize,
    /// For each column, the index of its field in the record at hand (`usize::MAX`: absent).
    slots: Vec<usize>,
    options: ParquetOptions,
}

/// One column of the schema and the builder its values go to.
struct Column {
    name: String,
    data_type: DataType,
    /// A declared decimal: values with fewer digits after the point are widened to the column's scale.
    widen: bool,
    builder: Builder,
}

impl ParquetEncoder {
    /// Fixes the schema from the declaration and the sample, opens the writer and writes the sample.
    fn start(&mut self) -> Result<()> {
        let sample = std::mem::take(&mut self.sample);
        self.columns = self.schema_columns(&sample);
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect();
        let mut properties = WriterProperties::builder()
            .set_compression(self.options.compression.codec())
            .set_max_row_group_row_count(Some(self.options.row_group_size))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("ferry {}", env!("CARGO_PKG_VERSION")));
        for column in self
            .columns
            .iter()
            .filter(|c| mostly_distinct(&c.name, &sample))
        {
            properties = properties
                .set_column_dictionary_enabled(ColumnPath::new(vec![column.name.clone()]), false);
        }
        let properties = properties.build();
        let sink = self
            .sink
            .take()
            .ok_or_else(|| sink_error("the output is closed"))?;
        let schema = Arc::new(Schema::new(fields));
        let writer = RowGroups::new(
            sink,
            schema.clone(),
            properties,
            self.options.row_group_size,
        )
        .map_err(|e| sink_error(&e.to_string()))?;
        self.schema = schema;
        self.writer = Some(writer);
        // The schema was made to hold the sample, so a refusal here is ferry's own: it ends the run.
        for record in &sample {
            self.append(record).map_err(|e| {
                Error::data(
                    Stage::Encode,
                    Position::default(),
                    format!("{e} (internal error)"),
                )
            })?;
        }
        Ok(())
    }

    /// The schema's columns: the template's fields in order, then the fields the sample shows in the order
    /// they first appear (or, for an output of no records, the input's header); each column's type is the
    /// declared one completed by the sample ([`column_type`]).
    fn schema_columns(&self, sample: &[Record]) -> Vec<Column> {
        let mut seen: Vec<(String, Seen)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let known = match (sample.is_empty(), self.declared.is_empty()) {
            (true, true) => match self.known.get() {
                Some(names) if !names.is_empty() => names.to_vec(),
                // Nothing says what the columns are: one text column, because a Parquet file without
                // columns is refused by DuckDB and others.
                _ => vec![NO_COLUMNS.to_owned()],
            },
            _ => Vec::new(),
        };
        for name in self.declared.iter().map(|(n, _)| n).chain(&known) {
            index.entry(name.clone()).or_insert_with(|| {
                seen.push((name.clone(), Seen::Nothing));
                seen.len() - 1
            });
        }
        for record in sample {
            for (key, value) in record.iter() {
                let i = *index.entry(key.to_string()).or_insert_with(|| {
                    seen.push((key.to_string(), Seen::Nothing));
                    seen.len() - 1
                });
                let before = std::mem::replace(&mut seen[i].1, Seen::Nothing);
                seen[i].1 = merge(before, value);
            }
        }
        let plans: HashMap<&str, &Plan> =
            self.declared.iter().map(|(n, p)| (n.as_str(), p)).collect();
        seen.into_iter()
            .map(|(name, seen)| {
                let plan = plans.get(name.as_str()).copied().unwrap_or(&Plan::Sampled);
                let data_type = column_type(plan, &name, seen, sample);
                Column {
                    builder: Builder::new(&data_type),
                    widen: *plan == Plan::Decimal,
                    data_type,
                    name,
                }
            })
            .collect()
    }

    /// Checks a record against the schema, then appends its values to the builders.
    fn append(&mut self, record: &Record) -> Result<()> {
        self.locate(record)?;
        for (column, &slot) in self.columns.iter().zip(&self.slots) {
            let value = record.value_at(slot).unwrap_or(&Value::Null);
            if !fits(&column.data_type, value, column.widen) {
                let declared = self.declared.iter().any(|(n, _)| *n == column.name);
                let message = column.refusal(value, declared, self.sample_size);
                let at = Position::default().with_field(column.name.clone());
                return Err(Error::record(Stage::Encode, at, message));
            }
        }
        for (column, &slot) in self.columns.iter_mut().zip(&self.slots) {
            let value = record.value_at(slot).unwrap_or(&Value::Null);
            column.push(value).map_err(|message| {
                let at = Position::default().with_field(column.name.clone());
                Error::data(Stage::Encode, at, format!("{message} (internal error)"))
            })?;
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS.min(self.options.row_group_size) {
            self.flush()?;
        }
        Ok(())
    }

    /// Finds each column's field in the record (in place when the record has the schema's order); a field
    /// the schema does not have is the record's error.
    fn locate(&mut self, record: &Record) -> Result<()> {
        self.slots.clear();
        self.slots.resize(self.columns.len(), usize::MAX);
        for (i, (key, _)) in record.iter().enumerate() {
            let column = match self.columns.get(i) {
                Some(c) if c.name == **key => Some(i),
                _ => self.columns.iter().position(|c| c.name == **key),
            };
            if let Some(c) = column {
                self.slots[c] = i;
                continue;
            }
            let message = match self.declared.is_empty() {
                true => format!(
                    "the field is not in the Parquet schema, which the first {} records fixed; raise \
                     --sample-records so that they show it",
                    self.sample_size
                ),
                false => "the field is not in the Parquet schema, which the template's fields and the \
                          first records fixed"
                    .to_owned(),
            };
            let at = Position::default().with_field(key.to_string());
            return Err(Error::record(Stage::Encode, at, message));
        }
        Ok(())
    }

    /// Writes the rows in the builders as one Arrow batch.
    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut arrays = Vec::with_capacity(self.columns.len());
        for column in &mut self.columns {
            let array = column
                .builder
                .finish(&column.data_type)
                .map_err(|message| {
                    let at = Position::default().with_field(column.name.clone());
                    Error::data(Stage::Encode, at, format!("{message} (internal error)"))
                })?;
            arrays.push(array);
        }
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| sink_error(&e.to_string()))?;
        writer.write(&batch).map_err(|e| sink_error(&e.to_string()))
    }

    /// Checks a record held in the sample against what the template declares.
    fn check_declared(&mut self, record: &Record) -> Result<()> {
        for (name, plan) in &mut self.declared {
            let value = record.get(name).unwrap_or(&Value::Null);
            if let Some(message) = plan.refuses(value) {
                let at = Position::default().with_field(name.clone());
                return Err(Error::record(Stage::Encode, at, message));
            }
        }
        Ok(())
    }
}

/// Whether a text column's sampled values are mostly distinct (ids, free text, timestamps as text): a
/// dictionary would not make it smaller, and trying one costs a hash of every value of every row group
/// until the dictionary overflows, so such a column is written plain.
fn mostly_distinct(name: &str, sample: &[Record]) -> bool {
    let texts: Vec<&str> = sample
        .iter()
        .filter_map(|r| match r.get(name) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let distinct: std::collections::HashSet<&str> = texts.iter().copied().collect();
    texts.len() >= 64 && distinct.len() * 2 > texts.len()
}

/// A column's type: what the declaration fixes, completed by the sample; a column of nulls only, or of
/// values of more than one type, holds text.
fn column_type(plan: &Plan, name: &str, seen: Seen, sample: &[Record]) -> DataType {
    match plan {
        Plan::Fixed(data_type) => data_type.clone(),
        Plan::Timestamp(zoned) => DataType::Timestamp(
            TimeUnit::Microsecond,
            (*zoned != Some(false)).then(|| "UTC".into()),
        ),
        Plan::Decimal => {
            let scale = sample
                .iter()
                .filter_map(|r| match r.get(name) {
                    Some(Value::Decimal(d)) => unscaled(d.as_str()).map(|(_, s)| s),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            DataType::Decimal128(38, scale)
        }
        Plan::Sampled => match seen {
            Seen::Type(t) => t,
            Seen::Nothing | Seen::Mixed => DataType::Utf8,
        },
    }
}

impl Encoder for ParquetEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        if self.writer.is_some() {
            // A record that does not fit the schema is refused here, alone.
            return self.append(record);
        }
        self.check_declared(record)?;
        self.sample.push(record.clone());
        if self.sample.len() >= self.sample_size {
            self.start()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.writer.is_none() {
            self.start()?;
        }
        self.flush()?;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| sink_error("the output is closed"))?;
        let sink = writer.finish().map_err(|e| sink_error(&e.to_string()))?;
        sink.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.writer.as_ref().map_or(0, RowGroups::bytes_written)
    }
}

/// The file writer and the open row group's column writers: a batch's columns are encoded and compressed
/// on rayon's threads, one column each (the parquet crate's `ArrowColumnWriter`s), while the pipeline's
/// other threads go on decoding. A row group is closed (its column chunks appended in order) every
/// `limit` rows.
struct RowGroups {
    file: SerializedFileWriter<Box<dyn ByteSink>>,
    factory: ArrowRowGroupWriterFactory,
    schema: Arc<Schema>,
    /// The open row group's writers, one per leaf column.
    open: Option<Vec<ArrowColumnWriter>>,
    /// Row groups closed so far.
    closed: usize,
    /// Rows in the open row group.
    rows: usize,
    limit: usize,
}

type ParquetResult<T> = std::result::Result<T, parquet::errors::ParquetError>;

impl RowGroups {
    fn new(
        sink: Box<dyn ByteSink>,
        schema: Arc<Schema>,
        properties: WriterProperties,
        limit: usize,
    ) -> ParquetResult<RowGroups> {
        // ArrowWriter writes the header and keeps the Arrow schema (zones, units) in the file's metadata.
        let (file, factory) = ArrowWriter::try_new(sink, schema.clone(), Some(properties))?
            .into_serialized_writer()?;
        Ok(RowGroups {
            file,
            factory,
            schema,
            open: None,
            closed: 0,
            rows: 0,
            limit,
        })
    }

    /// Writes a batch, cut where a row group ends.
    fn write(&mut self, batch: &RecordBatch) -> ParquetResult<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let rows = (self.limit - self.rows).min(batch.num_rows() - offset);
            self.encode(&batch.slice(offset, rows))?;
            offset += rows;
            if self.rows >= self.limit {
                self.close_group()?;
            }
        }
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> ParquetResult<()> {
        let writers = match &mut self.open {
            Some(writers) => writers,
            None => self
                .open
                .insert(self.factory.create_column_writers(self.closed)?),
        };
        let mut leaves = Vec::with_capacity(writers.len());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        writers
            .par_iter_mut()
            .zip(leaves.par_iter())
            .try_for_each(|(writer, leaf)| writer.write(leaf))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    fn close_group(&mut self) -> ParquetResult<()> {
        let Some(writers) = self.open.take() else {
            return Ok(());
        };
        let chunks: Vec<ArrowColumnChunk> = writers
            .into_par_iter()
            .map(ArrowColumnWriter::close)
            .collect::<ParquetResult<_>>()?;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        (self.closed, self.rows) = (self.closed + 1, 0);
        Ok(())
    }

    /// Closes the last row group, writes the footer and hands back the sink.
    fn finish(mut self) -> ParquetResult<Box<dyn ByteSink>> {
        self.close_group()?;
        self.file.into_inner()
    }

    fn bytes_written(&self) -> u64 {
        let open: usize = self
            .open
            .iter()
            .flatten()
            .map(|w| w.get_estimated_total_bytes())
            .sum();
        (self.file.bytes_written() + open) as u64
    }
}

fn sink_error(message: &str) -> Error {
    Error::data(
        Stage::Encode,
        Position::default(),
        format!("the Parquet output cannot be written: {message}"),
    )
}

/// Where one column's values gather until the batch is written.
enum Builder {
    Boolean(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Decimal(Decimal128Builder),
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Micros(TimestampMicrosecondBuilder),
    Nanos(TimestampNanosecondBuilder),
    /// Lists and structs: the values, built into arrays when the batch is written.
    Nested(Vec<Value>),
}

impl Builder {
    fn new(data_type: &DataType) -> Builder {
        match data_type {
            DataType::Boolean => Builder::Boolean(BooleanBuilder::new()),
            DataType::Int64 => Builder::Int(Int64Builder::new()),
            DataType::Float64 => Builder::Float(Float64Builder::new()),
            DataType::Decimal128(..) => Builder::Decimal(Decimal128Builder::new()),
            DataType::Utf8 => {
                Builder::Text(StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16))
            }
            DataType::Binary => Builder::Binary(BinaryBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::new()),
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                Builder::Nanos(TimestampNanosecondBuilder::new())
            }
            DataType::Timestamp(..) => Builder::Micros(TimestampMicrosecondBuilder::new()),
            _ => Builder::Nested(Vec::new()),
        }
    }

    /// The batch's array, checked against the column's type; the builder starts the next batch empty.
    fn finish(&mut self, data_type: &DataType) -> std::result::Result<ArrayRef, String> {
        let array: ArrayRef = match (self, data_type) {
            (Builder::Boolean(b), _) => Arc::new(b.finish()),
            (Builder::Int(b), _) => Arc::new(b.finish()),
            (Builder::Float(b), _) => Arc::new(b.finish()),
            (Builder::Decimal(b), DataType::Decimal128(precision, scale)) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            ),
            // The next batch's builder starts at this one's size: no regrowing (and copying) each batch.
            (Builder::Text(b), _) => {
                let bytes = b.values_slice().len();
                let array = b.finish();
                *b = StringBuilder::with_capacity(BATCH_ROWS, bytes + bytes / 8);
                Arc::new(array)
            }
            (Builder::Binary(b), _) => Arc::new(b.finish()),
            (Builder::Date(b), _) => Arc::new(b.finish()),
            (Builder::Micros(b), DataType::Timestamp(_, zone)) => {
                Arc::new(b.finish().with_timezone_opt(zone.clone()))
            }
            (Builder::Nanos(b), DataType::Timestamp(_, zone)) => {
                Arc::new(b.finish().with_timezone_opt(zone.clone()))
            }
            (Builder::Nested(values), data_type) => {
                let refs: Vec<&Value> = values.iter().collect();
                let array = build_array(data_type, &refs).map_err(|(_, m)| m)?;
                values.clear();
                array
            }
            (_, other) => return Err(format!("no builder for the Parquet type {other}")),
        };
        Ok(array)
    }
}

impl Column {
    /// Why a value that does not [`fits`] the column is refused, and what fixed the column's type.
    fn refusal(&self, value: &Value, declared: bool, sample: usize) -> String {
        let sampled = format!(
            "which the first {sample} records fixed; raise --sample-records so that they show it"
        );
        match (&self.data_type, value) {
            (DataType::Timestamp(_, zone), Value::Timestamp(t))
                if t.offset.is_some() != zone.is_some() =>
            {
                format!(
                    "the timestamp {} {} UTC offset, and the column holds {}, {}",
                    shown(value),
                    if t.offset.is_some() { "has a" } else { "has no" },
                    if zone.is_some() { "instants (UTC)" } else { "local times" },
                    if declared { "as its first values did" } else { &sampled }
                )
            }
            (DataType::Decimal128(_, scale), Value::Decimal(_)) if declared => format!(
                "the decimal {} has more than {scale} digits after the point (or 38 in all), the \
                 most the declared decimal's first {sample} records showed; raise --sample-records so \
                 that they show it",
                shown(value)
            ),
            _ if declared => format!(
                "{}, which the template declares",
                mismatch(value, &self.data_type)
            ),
            _ => format!("{}, {sampled}", mismatch(value, &self.data_type)),
        }
    }

    /// Appends a value that [`fits`] the column.
    fn push(&mut self, value: &Value) -> std::result::Result<(), String> {
        let wrong = || format!("the {} does not fit the column", value.type_name());
        if matches!(value, Value::Null) {
            match &mut self.builder {
                Builder::Boolean(b) => b.append_null(),
                Builder::Int(b) => b.append_null(),
                Builder::Float(b) => b.append_null(),
                Builder::Decimal(b) => b.append_null(),
                Builder::Text(b) => b.append_null(),
                Builder::Binary(b) => b.append_null(),
                Builder::Date(b) => b.append_null(),
                Builder::Micros(b) => b.append_null(),
                Builder::Nanos(b) => b.append_null(),
                Builder::Nested(values) => values.push(Value::Null),
            }
            return Ok(());
        }
        match (&mut self.builder, value) {
            (Builder::Text(b), Value::String(s)) => b.append_value(s),
            (Builder::Text(b), value) => b.append_value(text_of(value).unwrap_or_default()),
            (Builder::Boolean(b), Value::Bool(v)) => b.append_value(*v),
            (Builder::Int(b), Value::Int(n)) => b.append_value(*n),
            (Builder::Float(b), Value::Float(f)) => b.append_value(*f),
            (Builder::Binary(b), Value::Bytes(bytes)) => b.append_value(bytes),
            (Builder::Date(b), Value::Date(d)) => b.append_value(Date32Type::from_naive_date(*d)),
            (Builder::Decimal(b), value) => {
                let DataType::Decimal128(_, scale) = self.data_type else {
                    return Err(wrong());
                };
                b.append_value(decimal_in(value, scale, self.widen).ok_or_else(wrong)?);
            }
            (Builder::Micros(b), Value::Timestamp(t)) => {
                b.append_value(instant(t, TimeUnit::Microsecond).ok_or_else(wrong)?)
            }
            (Builder::Nanos(b), Value::Timestamp(t)) => {
                b.append_value(instant(t, TimeUnit::Nanosecond).ok_or_else(wrong)?)
            }
            (Builder::Nested(values), value) => values.push(value.clone()),
            _ => return Err(wrong()),
        }
        Ok(())
    }
}

/// A timestamp as a number of `unit`s since the epoch, in UTC when it has an offset (its local time when
/// not); `None` when the unit cannot hold it exactly.
fn instant(t: &Timestamp, unit: TimeUnit) -> Option<i64> {
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

/// Whether a column of `data_type` holds `value` exactly (what [`build_array`] and the builders accept);
/// `widen`: a decimal column takes decimals with fewer digits after the point too.
fn fits(data_type: &DataType, value: &Value, widen: bool) -> bool {
    use chrono::Timelike as _;
    match (data_type, value) {
        (_, Value::Null) | (DataType::Utf8, _) => true,
        (DataType::Boolean, Value::Bool(_))
        | (DataType::Int64, Value::Int(_))
        | (DataType::Float64, Value::Float(_))
        | (DataType::Binary, Value::Bytes(_))
        | (DataType::Date32, Value::Date(_)) => true,
        (DataType::Decimal128(_, scale), Value::Decimal(_)) => {
            decimal_in(value, *scale, widen).is_some()
        }
        (DataType::Timestamp(unit, zone), Value::Timestamp(t)) => {
            let in_unit = match unit {
                TimeUnit::Nanosecond => t.datetime.and_utc().timestamp_nanos_opt().is_some(),
                _ => t.datetime.nanosecond() % 1000 == 0,
            };
            t.offset.is_some() == zone.is_some() && in_unit
        }
        (DataType::List(item), Value::Array(items)) => {
            items.iter().all(|v| fits(item.data_type(), v, false))
        }
        (DataType::Struct(fields), Value::Object(record)) => {
            record.keys().all(|k| fields.find(k).is_some())
                && fields.iter().all(|f| {
                    fits(
                        f.data_type(),
                        record.get(f.name()).unwrap_or(&Value::Null),
                        false,
                    )
                })
        }
        _ => false,
    }
}
/// What the sample says a column holds: nothing yet, one type, or values of more than one type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    Nothing,
    Type(DataType),
    Mixed,
}

/// The column type that keeps every value exactly: values must agree in type (decimals in scale,
/// timestamps in having an offset, objects in their fields), else the column is [`Seen::Mixed`] and holds
/// each value's text (nested values as JSON, which `--json-cells` reads back).
pub(super) fn merge(seen: Seen, value: &Value) -> Seen {
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

/// A decimal's column: 38 digits, with as many after the point as it has; `None` past 38 digits, and for a
/// text the column would not give back as it is (an exponent, `-0.0`): an inferred column keeps every value
/// exactly, so such a decimal makes its column text.
fn decimal_type(text: &str) -> Option<DataType> {
    let (digits, scale) = unscaled(text)?;
    let back = super::scaled(digits.to_string(), scale).ok()?;
    matches!(&back, Value::Decimal(d) if d.as_str() == text)
        .then_some(DataType::Decimal128(38, scale))
}

/// A decimal's digits as an integer and its scale, when they fit Parquet's 38-digit decimal.
pub(super) fn unscaled(text: &str) -> Option<(i128, i8)> {
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
            let numbers = column(values, |v| decimal_in(v, *scale, false))?;
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
/// with other digits after the point would come back changed), or with `widen` (a declared decimal) at
/// most as many, widened to it exactly.
fn decimal_in(value: &Value, scale: i8, widen: bool) -> Option<i128> {
    let Value::Decimal(d) = value else {
        return None;
    };
    let (n, own) = unscaled(d.as_str())?;
    match own == scale {
        true => Some(n),
        false if widen && own < scale => {
            let n = n.checked_mul(10i128.checked_pow(u32::try_from(scale - own).ok()?)?)?;
            (n.unsigned_abs() < 10u128.pow(38)).then_some(n)
        }
        false => None,
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
        Value::Timestamp(t) if t.offset.is_some() == zoned => instant(t, unit),
        _ => None,
    })?;
    Ok(match unit {
        TimeUnit::Nanosecond => {
            Arc::new(TimestampNanosecondArray::from(numbers).with_timezone_opt(zone))
        }
        _ => Arc::new(TimestampMicrosecondArray::from(numbers).with_timezone_opt(zone)),
    })
}
