//! Between decode and sink, for a load with no map or validate stage into a table whose columns all take
//! text: rows of plain text go from the decoder's buffer straight into the table's COPY encoding on the
//! reading thread, with no record in between (see `Decoder::next_or_text_row`). The records-free path of a
//! raw CSV → PostgreSQL load; any row that is not plain text still comes as a record, in its place.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;

use crate::db::pgcopy;
use crate::format::TextRows;
use crate::record::{Key, Record, Value};

/// How rows with the input's fields go to a table whose loaded columns all take text: for each column,
/// the field (by position in `keys`) it takes, or none (NULL).
pub(super) struct TextPlan {
    /// The fields of the input's rows, in order: the records' keys.
    pub keys: Vec<Key>,
    columns: Vec<Option<usize>>,
}

impl TextPlan {
    /// The plan for rows with fields `keys` into columns loading `fields`; none when a key has no column
    /// (the record path rejects such records, naming the field) or names two.
    pub fn new(keys: Vec<Key>, fields: &[String]) -> Option<TextPlan> {
        let unique = keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
        let all_loaded = keys.iter().all(|k| fields.iter().any(|f| **f == **k));
        if !unique || !all_loaded {
            return None;
        }
        let columns = fields
            .iter()
            .map(|f| keys.iter().position(|k| **k == **f))
            .collect();
        Some(TextPlan { keys, columns })
    }

    /// The record a row encoded by this plan was read as (for the rejects file, when the table refuses
    /// it): every field a string, in input order.
    pub fn record(&self, row: &[u8], line: u64) -> Option<Record> {
        let fields = pgcopy::tuple_fields(row)?;
        let mut record = Record::with_capacity(self.keys.len());
        for (i, key) in self.keys.iter().enumerate() {
            let column = self.columns.iter().position(|c| *c == Some(i))?;
            let text = std::str::from_utf8(fields.get(column).copied().flatten()?).ok()?;
            record.push_unchecked(key.clone(), Value::String(text.to_owned()));
        }
        record.set_line(line);
        Some(record)
    }
}

/// The plan, shared by the encoding thread (which makes it once the table's columns are fixed) and the
/// reading thread (which switches to encoding rows itself once it is made). `None` inside: not this run.
pub(super) type SharedTextPlan = Arc<OnceLock<Option<Arc<TextPlan>>>>;

/// A batch of the input's rows in order: plain ones already encoded as COPY tuples, the others records.
pub(super) struct EncodedBatch {
    pub plan: Arc<TextPlan>,
    /// The encoded rows, one after another.
    pub bytes: BytesMut,
    pub items: Vec<Item>,
}

/// One row of an [`EncodedBatch`].
pub(super) enum Item {
    /// Encoded: `start..end` of the batch's bytes; it was read from `line`.
    Row { start: usize, end: usize, line: u64 },
    /// Not plain text: its record.
    Record(Record),
}

impl EncodedBatch {
    /// A batch for about `rows` rows, encoded into `buffer` (empty).
    pub fn new(plan: Arc<TextPlan>, rows: usize, buffer: BytesMut) -> EncodedBatch {
        EncodedBatch {
            plan,
            bytes: buffer,
            items: Vec::with_capacity(rows),
        }
    }

    /// The record of item `index`: as read, or rebuilt from its encoded row.
    pub fn record(&self, index: usize) -> Option<Cow<'_, Record>> {
        match self.items.get(index)? {
            Item::Record(record) => Some(Cow::Borrowed(record)),
            Item::Row { start, end, line } => {
                let row = self.bytes.get(*start..*end)?;
                self.plan.record(row, *line).map(Cow::Owned)
            }
        }
    }

    /// Its records and its buffer, to go back to the reading thread.
    pub fn into_parts(self) -> (Vec<Record>, BytesMut) {
        let records = self.items.into_iter().filter_map(|item| match item {
            Item::Record(record) => Some(record),
            Item::Row { .. } => None,
        });
        (records.collect(), self.bytes)
    }
}

impl TextRows for EncodedBatch {
    fn row(&mut self, line: u64, text: &str, ends: &[usize]) -> bool {
        let start = self.bytes.len();
        let taken = pgcopy::put_text_row(&mut self.bytes, text, ends, &self.plan.columns);
        if taken {
            let end = self.bytes.len();
            self.items.push(Item::Row { start, end, line });
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Key> {
        names.iter().map(|n| Key::from(*n)).collect()
    }

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_plan_needs_a_column_for_every_field_once() {
        assert!(TextPlan::new(keys(&["a", "b"]), &fields(&["b", "x", "a"])).is_some());
        assert!(TextPlan::new(keys(&["a", "c"]), &fields(&["b", "a"])).is_none());
        assert!(TextPlan::new(keys(&["a", "a"]), &fields(&["a"])).is_none());
    }

    #[test]
    fn an_encoded_row_gives_back_the_record_it_was_read_as() {
        let plan = Arc::new(TextPlan::new(keys(&["a", "b"]), &fields(&["b", "x", "a"])).unwrap());
        let mut batch = EncodedBatch::new(Arc::clone(&plan), 4, BytesMut::new());
        assert!(batch.row(2, "1héllo", &[1, 7]));
        let mut other = Record::new();
        other.insert("a", Value::Null);
        batch.items.push(Item::Record(other.clone()));
        assert!(batch.row(5, "2", &[1, 1]));
        let first = batch.record(0).unwrap();
        assert_eq!(first.get("a"), Some(&Value::String("1".into())));
        assert_eq!(first.get("b"), Some(&Value::String("héllo".into())));
        assert_eq!(first.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(first.line(), Some(2));
        assert_eq!(*batch.record(1).unwrap(), other);
        let third = batch.record(2).unwrap();
        assert_eq!(third.get("b"), Some(&Value::String(String::new())));
        assert_eq!(third.line(), Some(5));
        assert!(batch.record(3).is_none());
        let (records, bytes) = batch.into_parts();
        // Each row: its field count, then per column a length word and the bytes (none for NULL).
        assert_eq!(
            (records, bytes.len()),
            (vec![other], (2 + 4 + 6 + 4 + 4 + 1) + (2 + 4 + 4 + 4 + 1))
        );
    }
}
