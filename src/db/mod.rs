//! Databases as source and sink stages: a database endpoint (`sqlite://…`, `postgres://…`, a bare `.db`
//! path, `postgres` for `DATABASE_URL`, or `sqlite` for `DB_PATH`) is read as a stream of typed records or loaded from one, in a
//! transaction, with per-record errors for values that do not fit and `--on-conflict` for duplicate keys.
//!
//! Adding a database is one file implementing [`Database`] and one line in [`DATABASES`].

mod column;
pub(crate) mod conflict;
mod endpoint;
pub mod inventory;
pub(crate) mod pgcopy;
pub mod postgres;
pub mod sqlite;
mod sqlite_load;
pub mod sqlite_type;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use column::{coerce, Cell, Column, ColumnKind};
pub use endpoint::DbEndpoint;

use crate::error::{Error, Position, Result, Stage};
use crate::format::Decoder;
use crate::infer::{Inference, Kind};
use crate::record::{Record, Value};

/// One database kind: how to read from it and how to load into it.
pub struct Database {
    /// Its name, as reports print it.
    pub name: &'static str,
    /// The URL schemes that name it.
    pub schemes: &'static [&'static str],
    /// Streams the rows of `?table=` or `?query=` as records.
    pub open_source: fn(&DbEndpoint, &ConnectOptions) -> Result<Box<dyn Decoder>>,
    /// Opens a loader for a table.
    pub open_sink: fn(&DbEndpoint, SinkOptions) -> Result<Box<dyn TableSink>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every database ferry reads and writes.
pub static DATABASES: &[&Database] = &[&sqlite::DATABASE, &postgres::DATABASE];

/// What to do when a record's key is already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// The record is rejected with the database's message (the error policy decides what follows).
    #[default]
    Error,
    /// The existing row stays; the record is counted as skipped.
    Skip,
    /// The record replaces the existing row's loaded columns.
    Overwrite,
    /// Only the record's non-null values overwrite; JSON objects are merged key by key.
    Merge,
}

impl OnConflict {
    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            OnConflict::Error => "error",
            OnConflict::Skip => "skip",
            OnConflict::Overwrite => "overwrite",
            OnConflict::Merge => "merge",
        }
    }

    /// Every mode, in the order `--help` lists them.
    pub const ALL: [OnConflict; 4] = [
        OnConflict::Error,
        OnConflict::Skip,
        OnConflict::Overwrite,
        OnConflict::Merge,
    ];
}

impl std::str::FromStr for OnConflict {
    type Err = String;

    /// `error`, `skip`, `overwrite` or `merge`.
    fn from_str(text: &str) -> std::result::Result<OnConflict, String> {
        OnConflict::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| format!("{text:?} is not one of error, skip, overwrite, merge"))
    }
}

impl std::fmt::Display for OnConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How hard to try to reach a database server. In a job file: `{"retries": 3, "timeout": 10}` (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectOptions {
    /// Attempts after the first one fails.
    pub retries: u32,
    /// The time allowed for each attempt (whole seconds in a job file).
    #[serde(with = "seconds")]
    pub timeout: Duration,
}

/// A [`Duration`] as whole seconds (at least one) in job files.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(|s| Duration::from_secs(s.max(1)))
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            retries: 3,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a table loader needs, checked before it opens.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// The table to load.
    pub table: String,
    /// Declared fields in order (from the template), with their column kinds when declared.
    pub declared: Vec<(String, Option<ColumnKind>)>,
    /// Kinds a JSON Schema gives its properties: used for fields the template does not type.
    pub schema_kinds: Vec<(String, ColumnKind)>,
    /// The key columns (primary key of a new table, conflict target on load).
    pub key: Vec<String>,
    /// Duplicate-key handling.
    pub on_conflict: OnConflict,
    /// Run everything, then roll back.
    pub dry_run: bool,
    /// Commit after this many records (at the next batch end) instead of once at the end.
    pub commit_every: Option<u64>,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
    /// `--types`: column types for a new table, by field name (they win over everything else).
    pub types: Vec<(String, Kind)>,
    /// The records come from a text-only format: a new table's types are inferred from the text.
    pub text_source: bool,
    /// Records a new table's columns are inferred from (at most the first batch).
    pub sample_records: usize,
    /// A sharded run's ledger row, written in the load's transaction just before it commits
    /// ([`crate::shard::ledger`]).
    pub ledger: Option<crate::shard::ledger::Entry>,
    /// `ferry convert --incremental`: the new mark, written into `_ferry_state` in the load's transaction
    /// just before it commits ([`crate::sync::mark`]).
    pub mark: Option<crate::sync::mark::PendingMark>,
}

impl Default for SinkOptions {
    fn default() -> SinkOptions {
        SinkOptions {
            table: String::new(),
            declared: Vec::new(),
            schema_kinds: Vec::new(),
            key: Vec::new(),
            on_conflict: OnConflict::Error,
            dry_run: false,
            commit_every: None,
            connect: ConnectOptions::default(),
            types: Vec::new(),
            text_source: false,
            sample_records: crate::infer::DEFAULT_SAMPLE_RECORDS,
            ledger: None,
            mark: None,
        }
    }
}

impl SinkOptions {
    /// True when `--commit-every` says the records written since the last commit should be committed now
    /// (never in a dry run, which is rolled back whole).
    pub(crate) fn commit_due(&self, since_commit: u64) -> bool {
        !self.dry_run && self.commit_every.is_some_and(|n| since_commit >= n)
    }
}

/// What a finished load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// New rows.
    pub inserted: u64,
    /// Existing rows changed (`overwrite`, `merge`).
    pub updated: u64,
    /// Records whose key was already there (`skip`).
    pub skipped: u64,
    /// True when ferry created the table.
    pub created_table: bool,
    /// The columns of a table ferry created (for a dry run: would have), with their types.
    pub columns: Vec<NewColumn>,
}

/// A column of a table ferry created, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewColumn {
    /// The column's name.
    pub name: String,
    /// Its type as the database spells it.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Where the type came from: `declared` (template or schema), `types` (`--types`), `inferred` (from the
    /// sample's values) or `default` (no value said anything: text).
    pub from: &'static str,
}

/// A loader for one table: records in, rows out, in one transaction unless `--commit-every` says otherwise.
///
/// Dropping a sink without [`TableSink::finish`] rolls back everything not yet committed.
pub trait TableSink: Send {
    /// Fixes the loaded columns from a sample of the first records, creating the table when it does not
    /// exist (its columns are the union of the sample's fields, typed by [`crate::infer`]). Called once,
    /// before the first write; an empty sample creates the table from the template's fields alone.
    fn prepare(&mut self, sample: &[Record]) -> Result<()>;

    /// Takes one record (numbered as the run counts them). A value that does not fit its column is an
    /// error for this record only ([`Error::is_record`]); the sink may hold the row until the batch ends.
    fn write(&mut self, number: u64, record: &Record) -> Result<()>;

    /// True when the sink can take rows already encoded ([`TableSink::write_encoded`]) once its columns are
    /// fixed and all take text.
    fn takes_encoded(&self) -> bool {
        false
    }

    /// True when the run should map records on its reading thread too and hand the sink small batches, as
    /// it does for a file: the sink's own work per row is on the writing thread (an embedded database), and
    /// a batch costs it no round trip. Into SQLite the writing thread maps, checks and inserts while the
    /// reading thread only decodes (80 % against 20 % of the samples); see `ReaderMapping`.
    fn maps_beside(&self) -> bool {
        false
    }

    /// Whether every loaded column takes a text value as it is; if so, the loaded fields in column order.
    /// Rows of such text may then come already encoded, by `pgcopy::put_text_row`, through
    /// [`TableSink::write_encoded`] instead of as records.
    fn text_columns(&self) -> TextColumns {
        TextColumns::No
    }

    /// Takes one row encoded as [`TableSink::text_columns`] says, like [`TableSink::write`] takes a record.
    fn write_encoded(&mut self, _number: u64, _row: &[u8]) -> Result<()> {
        Err(Error::data(
            Stage::Sink,
            Position::default(),
            "this table does not take encoded rows (internal error)",
        ))
    }

    /// Says the batch's last row is written; [`TableSink::end_batch`] follows. A sink streaming to a server
    /// starts ending the batch here, so that the server finishes it while the run maps the next records.
    fn end_rows(&mut self) -> Result<()> {
        Ok(())
    }

    /// Sends the held rows. Rows the database refused come back with its message; the others are loaded.
    fn end_batch(&mut self) -> Result<Vec<(u64, Error)>>;

    /// Commits if `--commit-every` says it is time; `through` is the last record number handled. Returns
    /// `through` when it committed.
    fn checkpoint(&mut self, through: u64) -> Result<Option<u64>>;

    /// The run's counts just before [`TableSink::finish`]: a sharded load writes them into its ledger row.
    fn final_counts(&mut self, _counts: &crate::report::Counts) {}

    /// Commits (or, for a dry run, rolls back) and says what happened.
    fn finish(self: Box<Self>) -> Result<Tally>;
}

/// Whether a table's loaded columns all take text as it is (see [`TableSink::text_columns`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextColumns {
    /// The columns are not fixed yet (no record has been loaded).
    NotYet,
    /// Not all of them take text as it is.
    No,
    /// They all do: the loaded fields, in column order.
    Fields(Vec<String>),
}

/// Quotes an SQL identifier (PostgreSQL and SQLite spell it alike): `a"b` → `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The longest name PostgreSQL keeps, in bytes (`NAMEDATALEN - 1`); it cuts longer ones silently.
pub const PG_NAME_BYTES: usize = 63;

/// Why `name` cannot be a table or column name as written, or `None` when it can: a NUL character
/// (no database accepts one; PostgreSQL's protocol cannot even carry it), or on PostgreSQL more than
/// [`PG_NAME_BYTES`] bytes, which the server would cut silently (so two long names could become one).
pub fn unfit_name(name: &str, postgres: bool) -> Option<String> {
    if name.contains('\0') {
        return Some("holds a NUL character, which no database accepts in a name".into());
    }
    if postgres && name.len() > PG_NAME_BYTES {
        return Some(format!(
            "is {} bytes long; PostgreSQL keeps only {PG_NAME_BYTES} and would cut the rest off silently",
            name.len()
        ));
    }
    None
}

/// Checks a table name before the server sees it (on PostgreSQL each part of `schema.table` alone).
pub(crate) fn check_table_name(table: &str, postgres: bool) -> Result<()> {
    let parts = match table.split_once('.') {
        Some((schema, name)) if postgres && !schema.is_empty() && !name.is_empty() => {
            vec![schema, name]
        }
        _ => vec![table],
    };
    match parts.into_iter().find_map(|p| unfit_name(p, postgres)) {
        Some(why) => Err(Error::config(format!("table name {table:?} {why}"))),
        None => Ok(()),
    }
}

/// Checks the names a sink is opened with (table, template fields, key) before the server sees them.
pub(crate) fn check_sink_names(options: &SinkOptions, postgres: bool) -> Result<()> {
    check_table_name(&options.table, postgres)?;
    let declared = options.declared.iter().map(|(n, _)| n.as_str());
    let key = options.key.iter().map(String::as_str);
    check_field_names(&options.table, declared.chain(key), postgres)
}

/// Checks the field names a load would give columns (the first record's, a CSV header say, and the
/// template's) before the server sees them; the error names the field.
pub(crate) fn check_field_names<'a>(
    table: &str,
    fields: impl IntoIterator<Item = &'a str>,
    postgres: bool,
) -> Result<()> {
    for field in fields {
        if let Some(why) = unfit_name(field, postgres) {
            return Err(Error::data(
                Stage::Sink,
                Position::default().with_field(field.to_owned()),
                format!(
                    "the field's name {why}, so it cannot name a column of table {table:?}: rename the field (a template's `name:` does)"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a load whose key the table does not enforce. `unique` lists the column sets of the table's
/// primary key and unique indexes (whole-table, on plain columns). A key is enforced when one of them
/// lies within it. Without that, the database accepts a duplicate key: `--on-conflict error` would
/// load it, and two loads at once would each load every row, so ferry refuses rather than pretend.
pub(crate) fn check_key_enforced(
    table: &str,
    key: &[String],
    unique: &[Vec<String>],
    on_conflict: OnConflict,
) -> Result<()> {
    let in_key = |column: &String| key.iter().any(|k| k.eq_ignore_ascii_case(column));
    if key.is_empty()
        || unique
            .iter()
            .any(|set| !set.is_empty() && set.iter().all(in_key))
    {
        return Ok(());
    }
    let columns: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
    let index = quote_ident(&format!("{table}_{}_key", key.join("_")));
    Err(Error::config(format!(
        "table {} has no primary key or unique index on its key ({}), so the database would accept a \
         duplicate key and --on-conflict {} could not catch it (two loads at once would each load every \
         row); add one, e.g. CREATE UNIQUE INDEX {index} ON {} ({}), or load without a key",
        quote_ident(table),
        columns.join(", "),
        on_conflict.name(),
        quote_ident(table),
        columns.join(", ")
    )))
}

/// Tries `attempt` up to `1 + retries` times while `retryable` says the failure may pass, waiting 0.25 s,
/// 0.5 s, 1 s … (at most 5 s) between tries.
pub(crate) fn with_retries<T, E>(
    options: &ConnectOptions,
    mut attempt: impl FnMut() -> std::result::Result<T, E>,
    retryable: impl Fn(&E) -> bool,
) -> std::result::Result<T, E> {
    let mut wait = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if tries >= options.retries || !retryable(&e) => return Err(e),
            Err(_) => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
                tries += 1;
            }
        }
    }
}

/// The columns of a table ferry creates: the template's fields in order, then the other fields of the
/// sample (in the order they first appear), then the schema's other properties. A column's type comes from
/// `--types`, else the template, else the schema, else what the sample's values say ([`crate::infer`]),
/// else text.
pub(crate) fn new_table_columns(options: &SinkOptions, sample: &[Record]) -> Vec<Column> {
    let mut inference = match options.text_source {
        true => Inference::new(true),
        false => Inference::new(false).first_kind_wins(),
    };
    sample.iter().for_each(|r| inference.add(r));
    let kind_of = |name: &str, declared: Option<ColumnKind>| -> (ColumnKind, &'static str) {
        if let Some((_, kind)) = options.types.iter().find(|(n, _)| n == name) {
            return (ColumnKind::for_kind(*kind), "types");
        }
        let schema = || {
            options
                .schema_kinds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, k)| *k)
        };
        match (declared.or_else(schema), inference.kind(name)) {
            (Some(kind), _) => (kind, "declared"),
            (None, Some(kind)) => (ColumnKind::for_kind(kind), "inferred"),
            (None, None) => (ColumnKind::Text, "default"),
        }
    };
    let mut names: Vec<(String, Option<ColumnKind>)> = options.declared.clone();
    let mut add = |name: &str| {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.to_owned(), None));
        }
    };
    inference.names().for_each(&mut add);
    if options.declared.is_empty() {
        options.schema_kinds.iter().for_each(|(n, _)| add(n));
    }
    names
        .into_iter()
        .map(|(name, declared)| {
            let (kind, from) = kind_of(&name, declared);
            Column {
                kind,
                name,
                type_name: String::new(),
                has_default: false,
                inferred: from == "inferred",
            }
        })
        .collect()
}

/// How the report shows a new table's columns.
pub(crate) fn new_columns_shown(
    columns: &[Column],
    options: &SinkOptions,
    type_name: impl Fn(ColumnKind) -> String,
) -> Vec<NewColumn> {
    columns
        .iter()
        .map(|c| NewColumn {
            name: c.name.clone(),
            type_name: type_name(c.kind),
            from: if options.types.iter().any(|(n, _)| *n == c.name) {
                "types"
            } else if c.inferred {
                "inferred"
            } else if options
                .declared
                .iter()
                .any(|(n, k)| *n == c.name && k.is_some())
                || options.schema_kinds.iter().any(|(n, _)| *n == c.name)
            {
                "declared"
            } else {
                "default"
            },
        })
        .collect()
}

/// The union of the field names of a sample, in the order they first appear.
pub(crate) fn sample_fields(sample: &[Record]) -> Vec<crate::record::Key> {
    crate::infer::field_union(sample)
}

/// The columns of an existing table that a load fills: those the sample's records have a field for (matched
/// exactly, else ignoring case), and those the database cannot fill itself. Each comes with the field name
/// it takes its value from. A field of the sample that matches no column is an error for the run.
pub(crate) fn loaded_columns(
    table: &str,
    existing: Vec<Column>,
    sample: &[Record],
) -> Result<Vec<(Column, String)>> {
    let fields = sample_fields(sample);
    let field_for = |column: &Column| {
        fields
            .iter()
            .find(|k| ***k == *column.name)
            .or_else(|| fields.iter().find(|k| k.eq_ignore_ascii_case(&column.name)))
            .map(|k| k.to_string())
    };
    for key in &fields {
        let key: &str = key;
        let known = existing
            .iter()
            .any(|c| c.name == key || c.name.eq_ignore_ascii_case(key));
        if !known {
            let names: Vec<&str> = existing.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::data(
                Stage::Sink,
                Position::default().with_field(key.to_string()),
                format!(
                    "field {:?} has no column in table {table:?} (its columns: {}); map or drop it with a template",
                    key,
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(existing
        .into_iter()
        .filter_map(|column| match field_for(&column) {
            Some(field) => Some((column, field)),
            None if !column.has_default => {
                let field = column.name.clone();
                Some((column, field))
            }
            None => None,
        })
        .collect())
}

/// Finds each loaded column's value in a record. Records of one input usually share their field names (the
/// same keys, in the same order, often the very same `Arc`s), so the positions worked out for one record are
/// kept and reused while the next record has the same shape: no name is compared twice. It also keeps what
/// a written row's cells were made in (JSON texts, the list of cells) for the next rows.
#[derive(Default)]
pub(crate) struct FieldLookup {
    /// The field names of the record the positions were worked out for.
    shape: Vec<crate::record::Key>,
    /// The same names as other `Arc`s, once a record with them is seen: the two threads that map records
    /// each name them with their own (see `pipeline::drive`), so records alternate between two sets.
    twin: Vec<crate::record::Key>,
    /// For each loaded column, the position of its field in such a record.
    positions: Vec<Option<usize>>,
    /// The JSON texts of rows already written, to be written over by the next rows' JSON cells.
    spare_json: Vec<String>,
    /// The last written row's list of cells, emptied, with its room.
    spare_cells: Vec<Cell<'static>>,
    /// For each loaded column, its last JSON value and text, while its values repeat.
    repeated: Vec<RepeatedJson>,
}

/// The last value of a JSON column and its text, kept while the column's values repeat from row to row
/// (a template's default, such as the same `metadata` object in every row): the text is copied rather
/// than written again (writing it was 2.9 % of the instructions of a templated load into SQLite; comparing
/// costs 0.8 %). A column whose values mostly differ gives up after a trial, so that it does not keep a
/// copy of every value.
#[derive(Default)]
struct RepeatedJson {
    last: Option<(Value, String)>,
    asked: u32,
    found: u32,
    given_up: bool,
}

impl RepeatedJson {
    /// Values looked up before a column whose values repeat less than half the time gives up.
    const TRIAL: u32 = 64;

    /// The JSON text of `value`, in `buffer` if one is given.
    fn text(&mut self, value: &Value, buffer: Option<String>) -> String {
        if self.given_up {
            return column::json(value, buffer);
        }
        self.asked = self.asked.saturating_add(1);
        if let Some((last, text)) = &self.last {
            if last.identical(value) {
                self.found = self.found.saturating_add(1);
                let mut out = buffer.unwrap_or_default();
                out.clear();
                out.push_str(text);
                return out;
            }
        }
        let text = column::json(value, buffer);
        if self.asked >= Self::TRIAL && self.found < self.asked / 2 {
            *self = RepeatedJson {
                given_up: true,
                ..RepeatedJson::default()
            };
        } else if text.len() <= SPARE_JSON_BYTES {
            self.last = Some((value.clone(), text.clone()));
        }
        text
    }
}

/// How many JSON texts, and how long ones, are kept for the next rows: one per JSON column of a row, and no
/// large document's buffer held for good.
const SPARE_JSON_TEXTS: usize = 64;
const SPARE_JSON_BYTES: usize = 64 << 10;

impl FieldLookup {
    /// Coerces a record to the loaded columns; a field with no column, or a value that does not fit, is an
    /// error for this record. Hand the cells back with [`FieldLookup::recycle`] once the row is written.
    pub(crate) fn cells<'a>(
        &mut self,
        table: &str,
        columns: &[(Column, String)],
        record: &'a Record,
    ) -> Result<Vec<Cell<'a>>> {
        self.check(table, columns, record)?;
        let mut cells: Vec<Cell<'a>> = std::mem::take(&mut self.spare_cells);
        for (i, (column, _)) in columns.iter().enumerate() {
            let cell = self.cell(record, i, column).map_err(|message| {
                Error::record(
                    Stage::Sink,
                    Position::default().with_field(column.name.clone()),
                    message,
                )
            })?;
            cells.push(cell);
        }
        Ok(cells)
    }

    /// The value of loaded column `index` (after [`FieldLookup::check`]) coerced to `column`; the error is
    /// the reason. Hand the cell back with [`FieldLookup::give_back`] once it is written.
    pub(crate) fn cell<'a>(
        &mut self,
        record: &'a Record,
        index: usize,
        column: &Column,
    ) -> std::result::Result<Cell<'a>, String> {
        let value = self.value(record, index);
        if matches!(column.kind, ColumnKind::Json { .. }) && !matches!(value, Value::Null) {
            if self.repeated.len() <= index {
                self.repeated.resize_with(index + 1, RepeatedJson::default);
            }
            let buffer = self.spare_json.pop();
            return Ok(Cell::Json(self.repeated[index].text(value, buffer)));
        }
        column::coerce_into(value, column, &mut self.spare_json)
    }

    /// Keeps a written cell's JSON text for a later row's.
    pub(crate) fn give_back(&mut self, cell: Cell<'_>) {
        if let Cell::Json(text) = cell {
            if self.spare_json.len() < SPARE_JSON_TEXTS && text.capacity() <= SPARE_JSON_BYTES {
                self.spare_json.push(text);
            }
        }
    }

    /// Keeps a written row's JSON texts and its list's room for the next rows.
    pub(crate) fn recycle(&mut self, mut cells: Vec<Cell<'_>>) {
        for cell in cells.drain(..) {
            self.give_back(cell);
        }
        // An empty list holds no borrowed text, so it can outlive the record: collected in place (the
        // standard library reuses the allocation for elements of one size), its room kept.
        self.spare_cells = cells.into_iter().map(|_| Cell::Null).collect();
    }

    /// Makes sure the positions fit `record` (working them out again if its shape is new); a field with
    /// no column is an error for this record.
    pub(crate) fn check(
        &mut self,
        table: &str,
        columns: &[(Column, String)],
        record: &Record,
    ) -> Result<()> {
        if self.same_shape(record) {
            return Ok(());
        }
        self.learn(table, columns, record)
    }

    /// The value of loaded column `column` in `record` (after [`FieldLookup::check`]); null when absent.
    pub(crate) fn value<'a>(&self, record: &'a Record, column: usize) -> &'a Value {
        self.positions
            .get(column)
            .copied()
            .flatten()
            .and_then(|i| record.value_at(i))
            .unwrap_or(&Value::Null)
    }

    fn same_shape(&mut self, record: &Record) -> bool {
        let same_keys = |known: &[crate::record::Key]| {
            record.len() == known.len()
                && record
                    .iter()
                    .zip(known)
                    .all(|((key, _), known)| std::sync::Arc::ptr_eq(key, known))
        };
        if same_keys(&self.shape) || same_keys(&self.twin) {
            return true;
        }
        let same_names = record.len() == self.shape.len()
            && record
                .iter()
                .zip(&self.shape)
                .all(|((key, _), known)| **key == **known);
        // Only the first other set is kept: a decoder that names each record anew (XML, YAML) would
        // otherwise have it copied for every row.
        if same_names && self.twin.is_empty() {
            self.twin = record.iter().map(|(k, _)| k.clone()).collect();
        }
        same_names
    }

    fn learn(&mut self, table: &str, columns: &[(Column, String)], record: &Record) -> Result<()> {
        if let Some(extra) = record
            .keys()
            .find(|k| !columns.iter().any(|(_, field)| field == k))
        {
            return Err(Error::record(
                Stage::Sink,
                Position::default().with_field(extra.to_string()),
                format!(
                    "field {extra:?} has no column being loaded in table {table:?}: the columns come \
                     from the fields of the first records (--sample-records), and no record among them \
                     had this field"
                ),
            ));
        }
        self.positions = columns
            .iter()
            .map(|(_, field)| record.keys().position(|k| k == field))
            .collect();
        self.shape = record.iter().map(|(k, _)| k.clone()).collect();
        // The twin named the last shape's fields.
        self.twin.clear();
        Ok(())
    }
}

/// A load that holds its first records until the first batch ends, so that the columns — a new table's,
/// or those of an existing table that are loaded — come from all of them rather than from the first
/// record alone. Every database's sink is opened through it; rows the database then refuses come back
/// from [`TableSink::end_batch`] with their record numbers, as any refused row does.
pub(crate) struct Sampled {
    inner: Box<dyn TableSink>,
    /// The records of the first batch, until it ends.
    held: Option<(Vec<u64>, Vec<Record>)>,
    /// How many of them the columns are taken from.
    limit: usize,
}

impl Sampled {
    /// Wraps a database's sink; `limit` is `--sample-records`.
    pub(crate) fn wrap(inner: impl TableSink + 'static, limit: usize) -> Box<dyn TableSink> {
        Box::new(Sampled {
            inner: Box::new(inner),
            held: Some((Vec::new(), Vec::new())),
            limit: limit.max(1),
        })
    }

    /// Fixes the columns from the held records and hands them to the database; rows it refuses come back.
    fn release(&mut self) -> Result<Vec<(u64, Error)>> {
        let Some((numbers, records)) = self.held.take() else {
            return Ok(Vec::new());
        };
        let mut sample_bytes = 0usize;
        let sample = records
            .iter()
            .take(self.limit)
            .take_while(|r| {
                sample_bytes += r.values().map(approximate_size).sum::<usize>();
                sample_bytes <= crate::infer::SAMPLE_BYTES
            })
            .count()
            .max(records.len().min(1));
        self.inner.prepare(&records[..sample])?;
        let mut refused = Vec::new();
        for (number, record) in numbers.into_iter().zip(&records) {
            match self.inner.write(number, record) {
                Ok(()) => {}
                Err(e) if e.is_record() => refused.push((number, e)),
                Err(e) => return Err(e.with_context(None, Some(number))),
            }
        }
        Ok(refused)
    }
}

/// About how much text a value takes, for the sample's byte limit.
fn approximate_size(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::Array(items) => items.iter().map(approximate_size).sum::<usize>() + 2,
        Value::Object(record) => {
            record
                .iter()
                .map(|(k, v)| k.len() + approximate_size(v))
                .sum::<usize>()
                + 2
        }
        _ => 8,
    }
}

impl TableSink for Sampled {
    fn prepare(&mut self, sample: &[Record]) -> Result<()> {
        self.held = None;
        self.inner.prepare(sample)
    }

    fn write(&mut self, number: u64, record: &Record) -> Result<()> {
        match &mut self.held {
            Some((numbers, records)) => {
                numbers.push(number);
                records.push(record.clone());
                Ok(())
            }
            None => self.inner.write(number, record),
        }
    }

    fn takes_encoded(&self) -> bool {
        self.inner.takes_encoded()
    }

    fn maps_beside(&self) -> bool {
        self.inner.maps_beside()
    }

    fn text_columns(&self) -> TextColumns {
        match self.held {
            Some(_) => TextColumns::NotYet,
            None => self.inner.text_columns(),
        }
    }

    fn write_encoded(&mut self, number: u64, row: &[u8]) -> Result<()> {
        self.inner.write_encoded(number, row)
    }

    fn end_rows(&mut self) -> Result<()> {
        // Held records reach the sink only when the batch ends.
        match self.held {
            Some(_) => Ok(()),
            None => self.inner.end_rows(),
        }
    }

    fn end_batch(&mut self) -> Result<Vec<(u64, Error)>> {
        let mut refused = self.release()?;
        refused.extend(self.inner.end_batch()?);
        Ok(refused)
    }

    fn checkpoint(&mut self, through: u64) -> Result<Option<u64>> {
        self.inner.checkpoint(through)
    }

    fn final_counts(&mut self, counts: &crate::report::Counts) {
        self.inner.final_counts(counts)
    }

    fn finish(mut self: Box<Self>) -> Result<Tally> {
        match self.held.take() {
            // Nothing was written: a table is still created from the template's fields.
            Some((numbers, _)) if numbers.is_empty() => self.inner.prepare(&[])?,
            Some(held) => {
                self.held = Some(held);
                if let Some((number, error)) = self.release()?.into_iter().next() {
                    return Err(error.with_context(None, Some(number)));
                }
                let refused = self.inner.end_batch()?;
                if let Some((number, error)) = refused.into_iter().next() {
                    return Err(error.with_context(None, Some(number)));
                }
            }
            None => {}
        }
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Key;
    use std::sync::Arc;

    fn lookup_columns() -> Vec<(Column, String)> {
        let column = |name: &str, kind| Column {
            name: name.to_owned(),
            type_name: String::new(),
            kind,
            has_default: false,
            inferred: false,
        };
        vec![
            (column("a", ColumnKind::Text), "a".to_owned()),
            (
                column("j", ColumnKind::Json { binary: false }),
                "j".to_owned(),
            ),
        ]
    }

    fn named(keys: &[Key], values: [Value; 2]) -> Record {
        let mut record = Record::new();
        for (key, value) in keys.iter().zip(values) {
            record.push_unchecked(Arc::clone(key), value);
        }
        record
    }

    #[test]
    fn a_lookup_finds_the_columns_of_records_named_by_either_thread_and_after_a_change_of_shape() {
        let columns = lookup_columns();
        let mut lookup = FieldLookup::default();
        let keys = |names: [&str; 2]| names.map(Key::from);
        // Two sets of the same names (each mapping thread has its own), then the fields in another order.
        let (first, second, swapped) = (keys(["a", "j"]), keys(["a", "j"]), keys(["j", "a"]));
        let text = |s: &str| Value::String(s.to_owned());
        let array = || Value::Array(vec![Value::Int(1)]);
        for (keys, values, expected) in [
            (&first, [text("x"), array()], ["x", "[1]"]),
            (&second, [text("y"), array()], ["y", "[1]"]),
            (&first, [text("z"), array()], ["z", "[1]"]),
            (&swapped, [array(), text("w")], ["w", "[1]"]),
            (&second, [text("v"), array()], ["v", "[1]"]),
            (&swapped, [array(), text("u")], ["u", "[1]"]),
        ] {
            let record = named(keys, values);
            let cells = lookup.cells("t", &columns, &record).unwrap();
            assert_eq!(
                cells,
                vec![
                    Cell::Text(expected[0].into()),
                    Cell::Json(expected[1].to_owned())
                ]
            );
            lookup.recycle(cells);
        }
    }

    #[test]
    fn the_json_text_of_a_written_row_is_written_over_by_the_next_rows() {
        let columns = lookup_columns();
        let mut lookup = FieldLookup::default();
        let keys = ["a", "j"].map(Key::from);
        let long = Value::Array((0..40).map(Value::Int).collect());
        let record = named(&keys, [Value::Null, long]);
        let cells = lookup.cells("t", &columns, &record).unwrap();
        let Cell::Json(text) = &cells[1] else {
            panic!("{cells:?}")
        };
        let buffer = text.as_ptr();
        lookup.recycle(cells);
        let mut object = Record::new();
        object.push_unchecked(Key::from("b"), Value::String("x".into()));
        let record = named(&keys, [Value::Null, Value::Object(object)]);
        let cells = lookup.cells("t", &columns, &record).unwrap();
        assert_eq!(cells[1], Cell::Json(r#"{"b":"x"}"#.to_owned()));
        let Cell::Json(text) = &cells[1] else {
            panic!("{cells:?}")
        };
        assert_eq!(
            text.as_ptr(),
            buffer,
            "the earlier row's text buffer is reused"
        );
    }

    #[test]
    fn a_repeated_json_value_gets_the_text_it_would_get_anew() {
        let columns = lookup_columns();
        let keys = ["a", "j"].map(Key::from);
        let object = |v: Value| Value::Object([(Key::from("k"), v)].into_iter().collect());
        let text_of = |lookup: &mut FieldLookup, value: &Value| {
            let record = named(&keys, [Value::Null, value.clone()]);
            let cells = lookup.cells("t", &columns, &record).unwrap();
            let text = match &cells[1] {
                Cell::Json(text) => text.clone(),
                other => panic!("{other:?}"),
            };
            lookup.recycle(cells);
            text
        };
        // Repeats, changes, and values `==` takes for equal whose texts differ (0.0 and -0.0).
        let values = [
            object(Value::Int(1)),
            object(Value::Int(1)),
            object(Value::Float(0.0)),
            object(Value::Float(-0.0)),
            object(Value::Float(-0.0)),
            Value::Float(0.0),
            Value::Float(-0.0),
            object(Value::Int(1)),
        ];
        let mut lookup = FieldLookup::default();
        for value in &values {
            assert_eq!(text_of(&mut lookup, value), column::json(value, None));
        }
        assert!(lookup.repeated[1].found > 0, "repeated texts were copied");
        // A column whose values differ from row to row stops keeping them.
        let mut lookup = FieldLookup::default();
        for i in 0..2 * RepeatedJson::TRIAL {
            let value = object(Value::Int(i.into()));
            assert_eq!(text_of(&mut lookup, &value), column::json(&value, None));
        }
        assert!(lookup.repeated[1].given_up);
        assert!(lookup.repeated[1].last.is_none());
    }

    #[test]
    fn conflict_modes_and_connect_options_read_and_write_as_job_data() {
        for mode in OnConflict::ALL {
            assert_eq!(mode.name().parse::<OnConflict>(), Ok(mode));
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.name()));
        }
        assert!("replace".parse::<OnConflict>().is_err());
        let options: ConnectOptions = serde_json::from_str(r#"{"timeout": 3}"#).unwrap();
        assert_eq!(options.retries, ConnectOptions::default().retries);
        assert_eq!(options.timeout, Duration::from_secs(3));
        assert_eq!(
            serde_json::to_string(&options).unwrap(),
            r#"{"retries":3,"timeout":3}"#
        );
        assert!(serde_json::from_str::<ConnectOptions>(r#"{"tries": 3}"#).is_err());
    }

    #[test]
    fn names_postgres_would_cut_or_no_database_takes_are_refused() {
        assert!(unfit_name(&"a".repeat(63), true).is_none());
        assert!(unfit_name(&"a".repeat(64), true)
            .unwrap()
            .contains("64 bytes"));
        assert!(unfit_name(&"é".repeat(32), true)
            .unwrap()
            .contains("64 bytes"));
        assert!(unfit_name(&"a".repeat(64), false).is_none());
        assert!(unfit_name("a\0b", false).unwrap().contains("NUL"));
        let e = check_field_names("t", ["ok", "bad\0"], false).unwrap_err();
        assert_eq!(e.position().and_then(|p| p.field.as_deref()), Some("bad\0"));
        let long = format!("public.{}", "t".repeat(63));
        assert!(check_table_name(&long, true).is_ok());
        assert!(check_table_name(&long, false).is_ok());
        assert!(check_table_name(&format!("{long}x"), true).is_err());
    }

    #[test]
    fn a_key_is_enforced_by_a_unique_set_within_it() {
        let key = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sets = vec![key(&["id"]), key(&["a", "b"])];
        for k in [&["id"][..], &["ID"], &["id", "x"], &["b", "a"]] {
            assert!(
                check_key_enforced("t", &key(k), &sets, OnConflict::Error).is_ok(),
                "{k:?}"
            );
        }
        assert!(check_key_enforced("t", &key(&["a"]), &sets, OnConflict::Error).is_err());
        let e = check_key_enforced("t", &key(&["x"]), &[], OnConflict::Error).unwrap_err();
        assert!(
            e.is_config() && e.to_string().contains("no primary key or unique index"),
            "{e}"
        );
        assert!(check_key_enforced("t", &[], &[], OnConflict::Error).is_ok());
    }

    #[test]
    fn identifiers_are_quoted_with_doubled_quotes() {
        assert_eq!(
            quote_ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
    }
}
