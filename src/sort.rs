//! `--sort`, between the map stage and the encoder: an [`Encoder`] that takes every record, sorts them by
//! the given fields and hands them on in order when the run finishes — in bounded memory. Records are held
//! up to `--sort-memory` bytes (256 MiB by default); past that, the held records are sorted and written as
//! a run to a temporary file (in `TMPDIR`, removed when the run ends however it ends), and the runs are
//! merged at the end, so any input sorts with a few hundred MiB of memory and its size in temporary disk.
//!
//! Order: values of one kind compare naturally (numbers as numbers — text that is a number too, so a CSV's
//! `9` sorts before `10` — dates and times by instant, text by its bytes); null, missing and empty values
//! come last, ascending or descending; records that compare equal keep their input order. With `--limit N` the
//! first N records in that order are written and the others count as filtered.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Position, Result, Stage};
use crate::format::Encoder;
use crate::record::{Decimal, Key, Record, Timestamp, Value};

/// Bytes of records a sort holds in memory before it spills a sorted run (`--sort-memory`).
pub const DEFAULT_SORT_MEMORY: u64 = 256 << 20;

/// One field to sort by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The field.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

/// Parses `--sort country,amount:desc` (`:asc` is the default).
pub fn parse_sort(items: &[String]) -> std::result::Result<Vec<SortKey>, String> {
    let mut keys = Vec::new();
    for part in items
        .iter()
        .flat_map(|i| i.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (field, descending) = match part.rsplit_once(':') {
            Some((field, "desc")) => (field, true),
            Some((field, "asc")) => (field, false),
            Some((_, other)) => {
                return Err(format!(
                    "{part:?}: the order after ':' is asc or desc, not {other:?}"
                ))
            }
            None => (part, false),
        };
        keys.push(SortKey {
            field: field.to_owned(),
            descending,
        });
    }
    Ok(keys)
}

/// Compares two records by `keys`.
pub fn compare(keys: &[SortKey], a: &Record, b: &Record) -> Ordering {
    for key in keys {
        let (x, y) = (a.get(&key.field), b.get(&key.field));
        let order = match (absent(x), absent(y)) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater, // nulls last, whatever the direction
            (false, true) => Ordering::Less,
            (false, false) => {
                let order = compare_values(x.unwrap_or(&Value::Null), y.unwrap_or(&Value::Null));
                if key.descending {
                    order.reverse()
                } else {
                    order
                }
            }
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// No value to sort by: missing, null, or empty text (an empty CSV cell).
fn absent(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// The number a value stands for, if it is one (text included).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        Value::Decimal(d) => d.as_str().parse().ok(),
        Value::String(s) => Decimal::parse(s.trim())
            .and_then(|d| d.as_str().parse().ok())
            .filter(|x: &f64| x.is_finite()),
        _ => None,
    }
}

/// A date or time as an instant (naive times as if UTC), for ordering.
fn instant(value: &Value) -> Option<chrono::NaiveDateTime> {
    let at = |t: &Timestamp| match t.offset {
        Some(o) => t.datetime - chrono::Duration::seconds(i64::from(o.local_minus_utc())),
        None => t.datetime,
    };
    match value {
        Value::Date(d) => Some(d.and_time(chrono::NaiveTime::MIN)),
        Value::Timestamp(t) => Some(at(t)),
        _ => None,
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    if let (Value::Int(x), Value::Int(y)) = (a, b) {
        return x.cmp(y);
    }
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return x.total_cmp(&y);
    }
    if let (Some(x), Some(y)) = (instant(a), instant(b)) {
        return x.cmp(&y);
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| a.to_text().cmp(&b.to_text())),
    }
}

/// Kinds in the order mixed values sort: booleans, numbers, dates and times, text, bytes, nested.
fn rank(value: &Value) -> u8 {
    match value {
        Value::Null => 9,
        Value::Bool(_) => 0,
        Value::Int(_) | Value::Float(_) | Value::Decimal(_) => 1,
        Value::Date(_) | Value::Timestamp(_) => 2,
        Value::String(_) => 3,
        Value::Bytes(_) => 4,
        Value::Array(_) => 5,
        Value::Object(_) => 6,
    }
}

/// An encoder that sorts: see the module's documentation.
pub(crate) struct SortingEncoder {
    inner: Box<dyn Encoder>,
    keys: Vec<SortKey>,
    limit: Option<u64>,
    memory: u64,
    /// Where runs are spilled (`TMPDIR`).
    dir: PathBuf,
    held: Vec<(u64, Record)>,
    held_bytes: u64,
    /// Records taken so far (their input order breaks ties).
    taken: u64,
    spill: Option<tempfile::TempDir>,
    runs: Vec<PathBuf>,
}

impl SortingEncoder {
    /// Sorts what it is given by `keys` and writes it to `inner` when finished; spills runs into a new
    /// temporary folder under `dir` once `memory` bytes are held.
    pub(crate) fn new(
        inner: Box<dyn Encoder>,
        keys: Vec<SortKey>,
        limit: Option<u64>,
        memory: u64,
        dir: PathBuf,
    ) -> SortingEncoder {
        SortingEncoder {
            inner,
            keys,
            limit,
            memory: memory.max(1),
            dir,
            held: Vec::new(),
            held_bytes: 0,
            taken: 0,
            spill: None,
            runs: Vec::new(),
        }
    }

    fn sort_held(&mut self) {
        let keys = &self.keys;
        self.held
            .sort_by(|(i, a), (j, b)| compare(keys, a, b).then(i.cmp(j)));
    }

    /// Sorts the held records and writes them as a run.
    fn spill(&mut self) -> Result<()> {
        self.sort_held();
        let io = |e: std::io::Error| {
            let message = format!("--sort cannot write its temporary file: {e}");
            Error::data(Stage::Encode, Position::default(), message)
        };
        if self.spill.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("ferry-sort-")
                .tempdir_in(&self.dir)
                .map_err(|e| {
                    io(std::io::Error::other(format!(
                        "{}: {e}",
                        self.dir.display()
                    )))
                })?;
            self.spill = Some(dir);
        }
        let folder = self
            .spill
            .as_ref()
            .map(|d| d.path().to_owned())
            .unwrap_or_default();
        let path = folder.join(format!("run-{}", self.runs.len()));
        let mut out = BufWriter::new(File::create(&path).map_err(io)?);
        let keep = self
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        for (number, record) in self.held.drain(..).take(keep) {
            out.write_all(&number.to_le_bytes()).map_err(io)?;
            write_record(&mut out, &record).map_err(io)?;
        }
        out.flush().map_err(io)?;
        self.held_bytes = 0;
        self.runs.push(path);
        Ok(())
    }

    /// Writes the records in order to the inner encoder, at most `--limit` of them.
    fn write_sorted(&mut self) -> Result<()> {
        let limit = self.limit.unwrap_or(u64::MAX);
        if self.runs.is_empty() {
            self.sort_held();
            let held = std::mem::take(&mut self.held);
            for (_, record) in held
                .iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
            {
                self.inner.write_record(record)?;
            }
            return Ok(());
        }
        if !self.held.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::new();
        let mut heap = BinaryHeap::new();
        for (run, path) in self.runs.iter().enumerate() {
            let file = File::open(path).map_err(|e| spill_error(path, e))?;
            let mut reader = BufReader::new(file);
            if let Some((number, record)) =
                read_entry(&mut reader).map_err(|e| spill_error(path, e))?
            {
                heap.push(Head {
                    keys: &self.keys,
                    number,
                    record,
                    run,
                });
            }
            readers.push(reader);
        }
        let mut written = 0;
        while let Some(Head {
            number: _,
            record,
            run,
            ..
        }) = heap.pop()
        {
            if written >= limit {
                break;
            }
            self.inner.write_record(&record)?;
            written += 1;
            let path = &self.runs[run];
            if let Some((number, record)) =
                read_entry(&mut readers[run]).map_err(|e| spill_error(path, e))?
            {
                heap.push(Head {
                    keys: &self.keys,
                    number,
                    record,
                    run,
                });
            }
        }
        Ok(())
    }
}

fn spill_error(path: &Path, e: std::io::Error) -> Error {
    Error::data(
        Stage::Encode,
        Position::default(),
        format!(
            "--sort cannot read back its temporary file {}: {e}",
            path.display()
        ),
    )
}

/// The next record of a run, in the merge's heap (smallest first).
struct Head<'a> {
    keys: &'a [SortKey],
    number: u64,
    record: Record,
    run: usize,
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap pops the largest: reversed, so the smallest record (then the earliest) comes first.
        compare(self.keys, &self.record, &other.record)
            .then(self.number.cmp(&other.number))
            .reverse()
    }
}

impl Encoder for SortingEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.taken += 1;
        self.held_bytes += approximate_size(record) as u64;
        self.held.push((self.taken, record.clone()));
        if self.held_bytes >= self.memory {
            self.spill()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.write_sorted()?;
        let SortingEncoder { inner, spill, .. } = *self;
        drop(spill);
        inner.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.inner.bytes_written()
    }

    fn left_out(&self) -> u64 {
        self.limit.map_or(0, |l| self.taken.saturating_sub(l))
    }
}

/// About how many bytes a record takes in memory.
pub(crate) fn approximate_size(record: &Record) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => 24 + s.len(),
            Value::Decimal(d) => 24 + d.as_str().len(),
            Value::Bytes(b) => 24 + b.len(),
            Value::Array(items) => 24 + items.iter().map(value).sum::<usize>(),
            Value::Object(r) => 24 + approximate_size(r),
            _ => 24,
        }
    }
    record.iter().map(|(k, v)| 16 + k.len() + value(v)).sum()
}

// Runs are written in a private binary form that keeps every value's type (a typed value must come back
// from a spilled run exactly as it went in): a tag byte, then fixed-width little-endian numbers and
// length-prefixed bytes.

fn write_len(out: &mut impl Write, n: usize) -> std::io::Result<()> {
    out.write_all(&(n as u64).to_le_bytes())
}

fn write_bytes(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    write_len(out, bytes.len())?;
    out.write_all(bytes)
}

fn write_record(out: &mut impl Write, record: &Record) -> std::io::Result<()> {
    write_len(out, record.len())?;
    for (key, value) in record.iter() {
        write_bytes(out, key.as_bytes())?;
        write_value(out, value)?;
    }
    Ok(())
}

fn write_value(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    match value {
        Value::Null => out.write_all(&[0]),
        Value::Bool(b) => out.write_all(&[1, u8::from(*b)]),
        Value::Int(i) => {
            out.write_all(&[2])?;
            out.write_all(&i.to_le_bytes())
        }
        Value::Float(x) => {
            out.write_all(&[3])?;
            out.write_all(&x.to_bits().to_le_bytes())
        }
        Value::Decimal(d) => {
            out.write_all(&[4])?;
            write_bytes(out, d.as_str().as_bytes())
        }
        Value::String(s) => {
            out.write_all(&[5])?;
            write_bytes(out, s.as_bytes())
        }
        Value::Bytes(b) => {
            out.write_all(&[6])?;
            write_bytes(out, b)
        }
        Value::Date(_) | Value::Timestamp(_) => {
            // Their text form is exact (ISO 8601 with the offset, when there is one).
            out.write_all(&[if matches!(value, Value::Date(_)) {
                7
            } else {
                8
            }])?;
            write_bytes(out, value.to_text().as_bytes())
        }
        Value::Array(items) => {
            out.write_all(&[9])?;
            write_len(out, items.len())?;
            items.iter().try_for_each(|item| write_value(out, item))
        }
        Value::Object(record) => {
            out.write_all(&[10])?;
            write_record(out, record)
        }
    }
}

fn read_u64(input: &mut impl Read) -> std::io::Result<u64> {
    let mut buf = [0u8; 8];
    input.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

fn read_bytes(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let n = usize::try_from(read_u64(input)?).map_err(std::io::Error::other)?;
    let mut bytes = vec![0u8; n];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn read_text(input: &mut impl Read) -> std::io::Result<String> {
    String::from_utf8(read_bytes(input)?).map_err(std::io::Error::other)
}

/// The next (number, record) of a run, or `None` at its end.
fn read_entry(input: &mut impl Read) -> std::io::Result<Option<(u64, Record)>> {
    let mut buf = [0u8; 8];
    match input.read_exact(&mut buf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some((u64::from_le_bytes(buf), read_record(input)?)))
}

fn read_record(input: &mut impl Read) -> std::io::Result<Record> {
    let n = read_u64(input)?;
    let mut record = Record::new();
    for _ in 0..n {
        let key = Key::from(read_text(input)?);
        let value = read_value(input)?;
        record.push_unchecked(key, value);
    }
    Ok(record)
}

fn read_value(input: &mut impl Read) -> std::io::Result<Value> {
    let bad = || std::io::Error::other("the run is damaged");
    let mut tag = [0u8; 1];
    input.read_exact(&mut tag)?;
    Ok(match tag[0] {
        0 => Value::Null,
        1 => {
            input.read_exact(&mut tag)?;
            Value::Bool(tag[0] == 1)
        }
        2 => Value::Int(read_u64(input)? as i64),
        3 => Value::Float(f64::from_bits(read_u64(input)?)),
        4 => Value::Decimal(Decimal::parse(&read_text(input)?).ok_or_else(bad)?),
        5 => Value::String(read_text(input)?),
        6 => Value::Bytes(read_bytes(input)?),
        7 => {
            let text = read_text(input)?;
            Value::Date(chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| bad())?)
        }
        8 => Value::Timestamp(Timestamp::parse(&read_text(input)?).ok_or_else(bad)?),
        9 => {
            let n = read_u64(input)?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(read_value(input)?);
            }
            Value::Array(items)
        }
        10 => Value::Object(read_record(input)?),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Memory;

    fn record(id: i64, key: Value) -> Record {
        let mut r = Record::new();
        r.insert("id", Value::Int(id));
        r.insert("k", key);
        r
    }

    fn sorted(records: &[Record], keys: &str, limit: Option<u64>, memory: u64) -> Vec<i64> {
        let out = Memory::default();
        let inner = crate::format::by_name("ndjson")
            .unwrap()
            .encode(Box::new(out.clone()), &crate::FormatOptions::default())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let keys = parse_sort(&[keys.to_owned()]).unwrap();
        let mut encoder = Box::new(SortingEncoder::new(
            inner,
            keys,
            limit,
            memory,
            dir.path().to_owned(),
        ));
        for r in records {
            encoder.write_record(r).unwrap();
        }
        encoder.finish().unwrap();
        let text = String::from_utf8(out.contents()).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["id"].as_i64().unwrap()
            })
            .collect()
    }

    #[test]
    fn sorts_in_memory_and_through_spilled_runs_alike() {
        let keys = [
            Value::String("10".into()),
            Value::String("9".into()),
            Value::Null,
            Value::String("b".into()),
            Value::String("9".into()),
            Value::String("a".into()),
        ];
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| record(i as i64, k.clone()))
            .collect();
        for memory in [u64::MAX, 1, 200] {
            assert_eq!(
                sorted(&records, "k", None, memory),
                [1, 4, 0, 5, 3, 2],
                "{memory}"
            );
            assert_eq!(sorted(&records, "k:desc", None, memory), [3, 5, 0, 1, 4, 2]);
            assert_eq!(sorted(&records, "k", Some(2), memory), [1, 4]);
        }
    }

    #[test]
    fn runs_keep_every_type() {
        let mut r = Record::new();
        for (k, v) in [
            ("n", Value::Null),
            ("b", Value::Bool(true)),
            ("i", Value::Int(-5)),
            ("f", Value::Float(1.5)),
            ("d", Value::Decimal(Decimal::parse("1.10").unwrap())),
            ("s", Value::String("é".into())),
            ("y", Value::Bytes(vec![0, 255])),
            (
                "t",
                Value::Timestamp(Timestamp::parse("2024-05-01T10:00:00+02:00").unwrap()),
            ),
            ("a", Value::Array(vec![Value::Int(1), Value::Null])),
        ] {
            r.insert(k, v);
        }
        let mut nested = r.clone();
        nested.insert("o", Value::Object(r.clone()));
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&7u64.to_le_bytes());
        write_record(&mut bytes, &nested).unwrap();
        let mut input = &bytes[..];
        assert_eq!(read_entry(&mut input).unwrap(), Some((7, nested)));
        assert_eq!(read_entry(&mut input).unwrap(), None);
        assert!(parse_sort(&["a:up".into()])
            .unwrap_err()
            .contains("asc or desc"));
    }
}
