//! PostgreSQL as a sink stage: binary `COPY … FROM STDIN` in batches, inside one transaction; a staging
//! table and `INSERT … ON CONFLICT` for `--on-conflict skip|overwrite|merge`.
//!
//! Rows are encoded once into the COPY wire format ([`pgcopy`]) as they arrive. When the server refuses a
//! batch (a constraint, a value out of range), the batch is rolled back to its savepoint and split in
//! halves until the refused rows are found, so each bad row is rejected with the server's own message (and
//! SQLSTATE) and the others load. The framing is written here rather than through `BinaryCopyInWriter` so
//! that those retries resend already-encoded bytes instead of re-encoding held values.

use std::ops::Range;

use bytes::{BufMut as _, BytesMut};
use postgres::types::{ToSql, Type};
use postgres::Client;

use super::wire::{Wire, WireError};
use super::{cause, connect, message, pg_error};
use crate::db::conflict::{pg_upsert, ConflictColumn};
use crate::db::pgcopy::{self, numeric_to_binary};
use crate::db::{
    check_field_names, check_key_enforced, check_sink_names, loaded_columns, new_columns_shown,
    new_table_columns, quote_ident, sample_fields, Cell, Column, ColumnKind, DbEndpoint,
    FieldLookup, OnConflict, Sampled, SinkOptions, TableSink, Tally, TextColumns,
};
use crate::error::{Error, Position, Result, Stage};
use crate::record::Record;

/// Encoded rows are streamed to the server in pieces of about this size.
const STREAM_CHUNK: usize = 64 * 1024;

/// A table name for SQL: `schema.table` names a table in a schema (each part quoted), anything else is one
/// quoted identifier.
pub(crate) fn qualified_name(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) if !schema.is_empty() && !name.is_empty() => {
            format!("{}.{}", quote_ident(schema), quote_ident(name))
        }
        _ => quote_ident(table),
    }
}

/// The PostgreSQL type ferry creates for a column kind.
fn create_type(kind: ColumnKind) -> &'static str {
    match kind {
        ColumnKind::Text | ColumnKind::Any => "text",
        ColumnKind::Integer { bits: 16 } => "smallint",
        ColumnKind::Integer { bits: 32 } => "integer",
        ColumnKind::Integer { .. } => "bigint",
        ColumnKind::Float { single: true } => "real",
        ColumnKind::Float { .. } => "double precision",
        ColumnKind::Decimal => "numeric",
        ColumnKind::Boolean => "boolean",
        ColumnKind::Date => "date",
        ColumnKind::Timestamp { zoned: true } => "timestamptz",
        ColumnKind::Timestamp { zoned: false } => "timestamp",
        ColumnKind::Json { binary: true } => "jsonb",
        ColumnKind::Json { binary: false } => "json",
        ColumnKind::Bytes => "bytea",
        ColumnKind::TextArray => "text[]",
        ColumnKind::Uuid => "uuid",
    }
}

/// The column kind of a PostgreSQL type, or `None` if ferry cannot load it.
fn kind_of(ty: &Type) -> Option<ColumnKind> {
    Some(match *ty {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => ColumnKind::Text,
        Type::INT2 => ColumnKind::Integer { bits: 16 },
        Type::INT4 => ColumnKind::Integer { bits: 32 },
        Type::INT8 => ColumnKind::Integer { bits: 64 },
        Type::FLOAT4 => ColumnKind::Float { single: true },
        Type::FLOAT8 => ColumnKind::Float { single: false },
        Type::NUMERIC => ColumnKind::Decimal,
        Type::BOOL => ColumnKind::Boolean,
        Type::DATE => ColumnKind::Date,
        Type::TIMESTAMP => ColumnKind::Timestamp { zoned: false },
        Type::TIMESTAMPTZ => ColumnKind::Timestamp { zoned: true },
        Type::JSON => ColumnKind::Json { binary: false },
        Type::JSONB => ColumnKind::Json { binary: true },
        Type::BYTEA => ColumnKind::Bytes,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => ColumnKind::TextArray,
        Type::UUID => ColumnKind::Uuid,
        _ => return None,
    })
}

pub(super) fn open_sink(endpoint: &DbEndpoint, options: SinkOptions) -> Result<Box<dyn TableSink>> {
    check_sink_names(&options, true)?;
    let mut client = connect(endpoint, &options.connect, Stage::Sink)?;
    let name = endpoint.to_string();
    client
        .batch_execute("BEGIN")
        .map_err(|e| pg_error(Stage::Sink, "cannot start a transaction", &e))?;
    let table = qualified_name(&options.table);
    let existing = table_columns(&mut client, &table)?;
    if existing.is_some() && !options.key.is_empty() {
        // Held to the end: the unique index this check finds cannot be dropped under the load.
        client
            .batch_execute(&format!("LOCK TABLE {table} IN ROW EXCLUSIVE MODE"))
            .map_err(|e| pg_error(Stage::Sink, "cannot lock the table", &e))?;
        let unique = unique_keys(&mut client, &table)?;
        check_key_enforced(&options.table, &options.key, &unique, options.on_conflict)?;
    }
    let mut key = options.key.clone();
    if key.is_empty() && existing.is_some() {
        key = primary_key(&mut client, &table)?;
    }
    if options.on_conflict != OnConflict::Error && key.is_empty() {
        return Err(Error::config(format!(
            "--on-conflict {} needs a key: table {:?} has no primary key, so give --key COLUMN (or a template target key)",
            options.on_conflict.name(),
            options.table
        )));
    }
    let limit = options.sample_records;
    let sink = PgSink {
        wire: Wire::start(client),
        name,
        table,
        existing,
        key,
        options,
        loaded: None,
        rows: BytesMut::with_capacity(1 << 20),
        row_ends: Vec::new(),
        numbers: Vec::new(),
        tally: Tally::default(),
        since_commit: 0,
        finished: false,
        lookup: FieldLookup::default(),
        copy_open: false,
        ending: false,
        sent: 0,
    };
    Ok(Sampled::wrap(sink, limit))
}

/// The columns of a table, each with its type; `None` when the table does not exist.
fn table_columns(client: &mut Client, table: &str) -> Result<Option<Vec<(Column, Type)>>> {
    let sql = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, \
               (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''), a.attgenerated <> '' \
               FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
               AND NOT a.attisdropped ORDER BY a.attnum";
    let exists = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .map_err(|e| pg_error(Stage::Sink, "cannot look up the table", &e))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let rows = client
        .query(sql, &[&table])
        .map_err(|e| pg_error(Stage::Sink, "cannot read the table's columns", &e))?;
    let mut columns = Vec::new();
    for row in rows {
        let (name, type_name): (String, String) = (row.get(0), row.get(1));
        let oid: u32 = row.get(2);
        if row.get::<_, bool>(4) {
            continue; // generated: cannot be written
        }
        let ty = Type::from_oid(oid).unwrap_or(Type::UNKNOWN);
        let has_default: bool = row.get(3);
        let Some(kind) = kind_of(&ty) else {
            // A column ferry cannot write is fine as long as the database fills it in itself.
            if has_default {
                continue;
            }
            return Err(Error::config(format!(
                "column {name:?} of table {table} has type {type_name}, which ferry cannot load yet; \
                 load into a text column and convert in SQL"
            )));
        };
        columns.push((
            Column {
                name,
                type_name,
                kind,
                has_default,
                inferred: false,
            },
            ty,
        ));
    }
    Ok(Some(columns))
}

/// The column sets of the table's primary key and unique indexes that make a key unique: valid, over
/// the whole table (no WHERE), on plain columns (no expressions); INCLUDE columns left out.
fn unique_keys(client: &mut Client, table: &str) -> Result<Vec<Vec<String>>> {
    let sql = "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i \
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
               WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid \
               AND i.indpred IS NULL AND i.indexprs IS NULL AND k.n <= i.indnkeyatts \
               GROUP BY i.indexrelid";
    let rows = client
        .query(sql, &[&table])
        .map_err(|e| pg_error(Stage::Sink, "cannot read the table's unique indexes", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn primary_key(client: &mut Client, table: &str) -> Result<Vec<String>> {
    let sql = "SELECT a.attname::text FROM pg_index i \
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
               WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.n";
    let rows = client
        .query(sql, &[&table])
        .map_err(|e| pg_error(Stage::Sink, "cannot read the primary key", &e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What a load sends, fixed once the loaded columns are known.
struct Loaded {
    columns: Vec<(Column, String)>,
    types: Vec<Type>,
    /// `COPY … FROM STDIN (FORMAT binary)` into the table, or into the staging table.
    copy: String,
    /// For skip/overwrite/merge: the statement that moves staged rows into the table.
    upsert: Option<String>,
}

struct PgSink {
    wire: Wire,
    name: String,
    /// The quoted table name.
    table: String,
    existing: Option<Vec<(Column, Type)>>,
    key: Vec<String>,
    options: SinkOptions,
    loaded: Option<Loaded>,
    /// Encoded COPY tuples of the current batch, one after another.
    rows: BytesMut,
    /// Where each tuple in `rows` ends.
    row_ends: Vec<usize>,
    /// The record number of each tuple.
    numbers: Vec<u64>,
    tally: Tally,
    since_commit: u64,
    finished: bool,
    lookup: FieldLookup,
    /// True while this batch's COPY is open on the connection thread.
    copy_open: bool,
    /// How many bytes of `rows` have been streamed into the open COPY.
    sent: usize,
    /// The batch's COPY end is sent and its answer not yet taken (see `end_rows`): the connection's next
    /// reply is that answer.
    ending: bool,
}

/// What one successful load of some rows did.
#[derive(Default)]
struct Counts {
    inserted: u64,
    updated: u64,
    skipped: u64,
}

const STAGING: &str = "pg_temp.ferry_staging";

impl PgSink {
    /// Writes a sharded run's ledger row in the load's transaction; a shard another attempt committed
    /// meanwhile fails this one, which then rolls back.
    fn commit_ledger(&mut self, mut entry: crate::shard::ledger::Entry) -> Result<()> {
        // Duplicates were handed to the database as writes; it skipped them (as the report counts them).
        entry.counts.written -= self.tally.skipped.min(entry.counts.written);
        entry.counts.skipped += self.tally.skipped;
        let written = entry.clone();
        let fresh = self
            .wire
            .call(move |c| crate::shard::ledger::commit_pg(c, &written))
            .map_err(|e| self.fatal("cannot write the shard ledger", &e))?;
        if fresh {
            Ok(())
        } else {
            Err(crate::shard::ledger::done_elsewhere(&entry))
        }
    }

    fn fatal(&self, what: &str, e: &WireError) -> Error {
        match e {
            WireError::Db(e) => pg_error(Stage::Sink, &format!("{}: {what}", self.name), e),
            WireError::Gone => Error::data(
                Stage::Sink,
                Position::default(),
                format!(
                    "{}: {what}: the connection thread stopped unexpectedly",
                    self.name
                ),
            ),
        }
    }

    /// Creates the table if needed and fixes the columns and statements, from a sample of the first
    /// records.
    fn prepare_columns(&mut self, sample: &[Record]) -> Result<()> {
        check_field_names(
            &self.options.table,
            sample_fields(sample).iter().map(|k| &**k),
            true,
        )?;
        let (columns, types) = match self.existing.take() {
            Some(existing) if !sample.is_empty() => {
                let types_by_name: Vec<(String, Type)> = existing
                    .iter()
                    .map(|(c, t)| (c.name.clone(), t.clone()))
                    .collect();
                let plain = existing.into_iter().map(|(c, _)| c).collect();
                let loaded = loaded_columns(&self.options.table, plain, sample)?;
                let types = loaded
                    .iter()
                    .map(|(c, _)| {
                        types_by_name
                            .iter()
                            .find(|(name, _)| *name == c.name)
                            .map_or(Type::TEXT, |(_, t)| t.clone())
                    })
                    .collect();
                (loaded, types)
            }
            Some(existing) => {
                self.existing = Some(existing);
                return Ok(());
            }
            None => {
                let columns = new_table_columns(&self.options, sample);
                if columns.is_empty() {
                    return Ok(());
                }
                self.create_table(&columns)?;
                self.tally.columns =
                    new_columns_shown(&columns, &self.options, |k| create_type(k).to_owned());
                let types: Vec<Type> = columns.iter().map(|c| type_for(c.kind)).collect();
                let columns: Vec<(Column, String)> = columns
                    .into_iter()
                    .map(|mut c| {
                        c.type_name = create_type(c.kind).to_owned();
                        let field = c.name.clone();
                        (c, field)
                    })
                    .collect();
                (columns, types)
            }
        };
        self.fix_statements(columns, types)
    }

    fn create_table(&mut self, columns: &[Column]) -> Result<()> {
        let mut defs: Vec<String> = columns
            .iter()
            .map(|c| format!("{} {}", quote_ident(&c.name), create_type(c.kind)))
            .collect();
        if !self.key.is_empty() {
            let key: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
        }
        let sql = format!("CREATE TABLE {} ({})", self.table, defs.join(", "));
        self.wire.exec(&sql).map_err(|e| {
            if created_meanwhile(&e) {
                return Error::data(
                    Stage::Sink,
                    Position::default(),
                    format!(
                        "table {} was created by another session (another load?) while this run was \
                         creating it; this run wrote nothing: run it again to load into that table",
                        self.table
                    ),
                )
                // duplicate_table, whichever of the two ways the server said it: a caller may retry.
                .with_db_cause(crate::error::DbCause {
                    sqlstate: Some("42P07".into()),
                    table: Some(self.options.table.clone()),
                    ..Default::default()
                });
            }
            self.fatal("cannot create the table", &e)
        })?;
        self.tally.created_table = true;
        Ok(())
    }

    fn fix_statements(&mut self, columns: Vec<(Column, String)>, types: Vec<Type>) -> Result<()> {
        let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(&c.name)).collect();
        let list = names.join(", ");
        let (copy, upsert) = if self.options.on_conflict == OnConflict::Error {
            (
                format!("COPY {} ({list}) FROM STDIN (FORMAT binary)", self.table),
                None,
            )
        } else {
            let create = format!(
                "DROP TABLE IF EXISTS {STAGING}; CREATE TEMP TABLE ferry_staging AS SELECT {list} FROM {} WITH NO DATA",
                self.table
            );
            self.wire
                .exec(&create)
                .map_err(|e| self.fatal("cannot create the staging table", &e))?;
            let copy = format!("COPY {STAGING} ({list}) FROM STDIN (FORMAT binary)");
            (copy, Some(self.upsert_sql(&columns)))
        };
        self.loaded = Some(Loaded {
            columns,
            types,
            copy,
            upsert,
        });
        Ok(())
    }

    fn upsert_sql(&self, columns: &[(Column, String)]) -> String {
        let columns: Vec<ConflictColumn<'_>> = columns
            .iter()
            .map(|(c, _)| ConflictColumn {
                name: &c.name,
                json: c.kind == ColumnKind::Json { binary: true },
                cast: None,
            })
            .collect();
        pg_upsert(
            &self.table,
            STAGING,
            &columns,
            &self.key,
            self.options.on_conflict,
        )
    }

    /// Encodes one record as a COPY tuple at the end of `rows`.
    fn encode(&mut self, record: &Record) -> Result<()> {
        let Some(loaded) = &self.loaded else {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "no columns to load (internal error)",
            ));
        };
        // Each value is coerced and encoded straight into the batch buffer: no row of cells is built.
        self.lookup
            .check(&self.options.table, &loaded.columns, record)?;
        let start = self.rows.len();
        pgcopy::put_tuple_start(&mut self.rows, loaded.columns.len() as i16);
        for (i, ((column, _), ty)) in loaded.columns.iter().zip(&loaded.types).enumerate() {
            let encoded = self
                .lookup
                .cell(record, i, column)
                .map_err(|message| (message, false))
                .and_then(|cell| {
                    let encoded = encode_cell(&cell, column.kind, ty, &mut self.rows);
                    self.lookup.give_back(cell);
                    encoded.map_err(|m| (m, true))
                });
            if let Err((message, from_encoder)) = encoded {
                self.rows.truncate(start);
                let message = if from_encoder {
                    format!(
                        "value does not fit column {:?} ({}): {message}",
                        column.name, column.type_name
                    )
                } else {
                    message
                };
                return Err(Error::record(
                    Stage::Sink,
                    Position::default().with_field(column.name.clone()),
                    message,
                ));
            }
        }
        self.row_ends.push(self.rows.len());
        Ok(())
    }

    /// Notes that the row just encoded is record `number`, and streams the rows when enough are waiting.
    fn wrote(&mut self, number: u64) -> Result<()> {
        self.numbers.push(number);
        if self.rows.len() - self.sent >= STREAM_CHUNK {
            self.stream()?;
        }
        Ok(())
    }

    /// Streams the rows encoded since the last call into this batch's COPY, opening it (under a savepoint)
    /// first if needed. The server parses them while the next rows are encoded.
    fn stream(&mut self) -> Result<()> {
        if !self.copy_open {
            let Some(loaded) = &self.loaded else {
                return Ok(());
            };
            let open = match loaded.upsert {
                Some(_) => format!("SAVEPOINT ferry_batch; TRUNCATE {STAGING}"),
                None => "SAVEPOINT ferry_batch".to_owned(),
            };
            let copy = loaded.copy.clone();
            self.wire
                .exec(&open)
                .map_err(|e| self.fatal("cannot set a savepoint", &e))?;
            self.wire.copy_start(copy)?;
            self.copy_open = true;
        }
        if self.sent < self.rows.len() {
            self.wire.copy_data(&self.rows[self.sent..])?;
            self.sent = self.rows.len();
        }
        Ok(())
    }

    /// Ends the streamed COPY of the whole batch and moves staged rows; on a refusal caused by the data,
    /// rolls the batch back and finds the refused rows.
    fn end_streamed_batch(&mut self) -> Result<Vec<(u64, Error)>> {
        let copied = match std::mem::take(&mut self.ending) {
            true => self.wire.copy_ended(),
            false => {
                self.stream()?;
                self.copy_open = false;
                self.wire.copy_end()
            }
        };
        let outcome = copied.and_then(|n| self.move_staged(n));
        self.settle(outcome, 0..self.row_ends.len())
    }

    /// Ends the savepoint of an attempt to load `range`: released when it worked; otherwise, if the data was
    /// refused, rolled back and the range split until each refused row is alone.
    fn settle(
        &mut self,
        outcome: std::result::Result<Counts, WireError>,
        range: Range<usize>,
    ) -> Result<Vec<(u64, Error)>> {
        match outcome {
            Ok(counts) => {
                self.wire
                    .exec("RELEASE SAVEPOINT ferry_batch")
                    .map_err(|e| self.fatal("cannot release a savepoint", &e))?;
                self.add(counts);
                Ok(Vec::new())
            }
            Err(e) if refused_row(&e) => {
                self.wire
                    .exec("ROLLBACK TO SAVEPOINT ferry_batch; RELEASE SAVEPOINT ferry_batch")
                    .map_err(|e| self.fatal("cannot roll back to a savepoint", &e))?;
                if range.len() == 1 {
                    return Ok(vec![(self.numbers[range.start], self.row_error(&e))]);
                }
                let middle = range.start + range.len() / 2;
                let mut refused = self.load(range.start..middle)?;
                refused.extend(self.load(middle..range.end)?);
                Ok(refused)
            }
            Err(e) => Err(self.fatal("cannot load rows", &e)),
        }
    }

    fn add(&mut self, counts: Counts) {
        self.tally.inserted += counts.inserted;
        self.tally.updated += counts.updated;
        self.tally.skipped += counts.skipped;
    }

    /// Loads the tuples in `range` of the batch inside a savepoint; on a refusal caused by the data, splits
    /// the range until each refused row is alone, and returns those rows with the server's message.
    fn load(&mut self, range: Range<usize>) -> Result<Vec<(u64, Error)>> {
        self.wire
            .exec("SAVEPOINT ferry_batch")
            .map_err(|e| self.fatal("cannot set a savepoint", &e))?;
        let outcome = self.load_once(range.clone());
        self.settle(outcome, range)
    }

    fn load_once(&mut self, range: Range<usize>) -> std::result::Result<Counts, WireError> {
        let Some(loaded) = &self.loaded else {
            return Ok(Counts::default());
        };
        let start = if range.start == 0 {
            0
        } else {
            self.row_ends[range.start - 1]
        };
        let end = self.row_ends[range.end - 1];
        if loaded.upsert.is_some() {
            self.wire.exec(&format!("TRUNCATE {STAGING}"))?;
        }
        let copy = loaded.copy.clone();
        self.wire.copy_start(copy).map_err(|_| WireError::Gone)?;
        self.wire
            .copy_data(&self.rows[start..end])
            .map_err(|_| WireError::Gone)?;
        let copied = self.wire.copy_end()?;
        self.move_staged(copied)
    }

    /// For skip/overwrite/merge, moves the staged rows into the table and counts what happened; a plain
    /// COPY inserted them all.
    fn move_staged(&self, copied: u64) -> std::result::Result<Counts, WireError> {
        let Some(upsert) = self.loaded.as_ref().and_then(|l| l.upsert.clone()) else {
            return Ok(Counts {
                inserted: copied,
                ..Counts::default()
            });
        };
        if self.options.on_conflict == OnConflict::Skip {
            let inserted = self.wire.call(move |c| c.execute(upsert.as_str(), &[]))?;
            return Ok(Counts {
                inserted,
                skipped: copied - inserted,
                ..Counts::default()
            });
        }
        let (inserted, updated) = self.wire.call(move |c| {
            let row = c.query_one(upsert.as_str(), &[])?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })?;
        Ok(Counts {
            inserted: inserted as u64,
            updated: updated as u64,
            skipped: 0,
        })
    }

    /// A row the server refused, with its message and SQLSTATE (and the column it names, if any).
    fn row_error(&self, e: &WireError) -> Error {
        let (message, cause) = match e {
            WireError::Db(e) => (message(e), cause(e)),
            WireError::Gone => (e.to_string(), None),
        };
        let mut position = Position::default();
        if let Some(column) = cause.as_ref().and_then(|c| c.column.clone()) {
            position = position.with_field(column);
        }
        let error = Error::record(
            Stage::Sink,
            position,
            format!("table {} refused the row: {message}", self.options.table),
        );
        match cause {
            Some(cause) => error.with_db_cause(cause),
            None => error,
        }
    }
}

/// True when a CREATE TABLE lost a race: another transaction created the table (or its row type) and
/// committed first, which PostgreSQL reports as `relation … already exists` or as a duplicate key in
/// its catalog index `pg_type_typname_nsp_index`.
fn created_meanwhile(e: &WireError) -> bool {
    let WireError::Db(e) = e else { return false };
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        // 42710: the table's row type was created first ("type … already exists").
        code == "42P07"
            || code == "42710"
            || (code == "23505" && db.constraint() == Some("pg_type_typname_nsp_index"))
    })
}

/// True when the server refused rows for what they hold (a data exception, a constraint, a duplicate key
/// twice in one batch), as opposed to a broken connection or a wrong statement.
fn refused_row(e: &WireError) -> bool {
    let WireError::Db(e) = e else { return false };
    let Some(db) = e.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    code.starts_with("22")
        || code.starts_with("23")
        || code.starts_with("21")
        || code.starts_with("54")
        || code == "P0001"
}

/// The type ferry creates for a column kind, for encoding.
fn type_for(kind: ColumnKind) -> Type {
    match kind {
        ColumnKind::Text | ColumnKind::Any => Type::TEXT,
        ColumnKind::Integer { bits: 16 } => Type::INT2,
        ColumnKind::Integer { bits: 32 } => Type::INT4,
        ColumnKind::Integer { .. } => Type::INT8,
        ColumnKind::Float { single: true } => Type::FLOAT4,
        ColumnKind::Float { .. } => Type::FLOAT8,
        ColumnKind::Decimal => Type::NUMERIC,
        ColumnKind::Boolean => Type::BOOL,
        ColumnKind::Date => Type::DATE,
        ColumnKind::Timestamp { zoned: true } => Type::TIMESTAMPTZ,
        ColumnKind::Timestamp { zoned: false } => Type::TIMESTAMP,
        ColumnKind::Json { binary: true } => Type::JSONB,
        ColumnKind::Json { binary: false } => Type::JSON,
        ColumnKind::Bytes => Type::BYTEA,
        ColumnKind::TextArray => Type::TEXT_ARRAY,
        ColumnKind::Uuid => Type::UUID,
    }
}

/// Appends one field (length, then bytes in the type's binary format) to a COPY tuple.
fn encode_cell(
    cell: &Cell<'_>,
    kind: ColumnKind,
    ty: &Type,
    out: &mut BytesMut,
) -> std::result::Result<(), String> {
    pgcopy::put_field(out, matches!(cell, Cell::Null), |out| {
        match (cell, kind) {
            (Cell::Null, _) => {}
            (Cell::Text(s), _) => out.put_slice(s.as_bytes()),
            (Cell::Int(n), ColumnKind::Integer { bits }) => pgcopy::put_int(out, *n, bits / 8),
            (Cell::Int(n), _) => pgcopy::put_int(out, *n, 8),
            (Cell::Float(f), kind) => {
                pgcopy::put_float(out, *f, kind == ColumnKind::Float { single: true })?
            }
            (Cell::Decimal(d), _) => numeric_to_binary(d, out)?,
            (Cell::Bool(b), _) => out.put_u8(u8::from(*b)),
            (Cell::Date(d), _) => put_sql(d, ty, out)?,
            (Cell::Timestamp(t), ColumnKind::Timestamp { zoned: false }) => {
                put_sql(&t.datetime, ty, out)?
            }
            (Cell::Timestamp(t), _) => {
                let offset = t
                    .offset
                    .unwrap_or(chrono::FixedOffset::east_opt(0).ok_or("offset")?);
                let instant = (t.datetime - offset).and_utc();
                put_sql(&instant, ty, out)?
            }
            (Cell::Json(text), kind) => {
                pgcopy::put_json(out, text, kind == ColumnKind::Json { binary: true })
            }
            (Cell::Bytes(b), _) => out.put_slice(b),
            (Cell::TextArray(items), _) => put_sql(items, ty, out)?,
            (Cell::Uuid(b), _) => out.put_slice(b),
        }
        Ok(())
    })
}

fn put_sql<T: ToSql>(value: &T, ty: &Type, out: &mut BytesMut) -> std::result::Result<(), String> {
    value.to_sql(ty, out).map(|_| ()).map_err(|e| e.to_string())
}

impl TableSink for PgSink {
    fn prepare(&mut self, sample: &[Record]) -> Result<()> {
        if self.loaded.is_none() {
            self.prepare_columns(sample)?;
        }
        Ok(())
    }

    fn write(&mut self, number: u64, record: &Record) -> Result<()> {
        if self.loaded.is_none() {
            self.prepare_columns(std::slice::from_ref(record))?;
        }
        self.encode(record)?;
        self.wrote(number)
    }

    fn takes_encoded(&self) -> bool {
        true
    }

    /// A text column takes a string as it is (see `coerce`), and its binary COPY form is the string's bytes.
    fn text_columns(&self) -> TextColumns {
        let Some(loaded) = &self.loaded else {
            return TextColumns::NotYet;
        };
        match loaded
            .columns
            .iter()
            .all(|(c, _)| c.kind == ColumnKind::Text)
        {
            true => TextColumns::Fields(loaded.columns.iter().map(|(_, f)| f.clone()).collect()),
            false => TextColumns::No,
        }
    }

    fn write_encoded(&mut self, number: u64, row: &[u8]) -> Result<()> {
        // Only asked for after `text_columns`, so the columns are fixed.
        if self.loaded.is_none() {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "an encoded row before the columns are fixed (internal error)",
            ));
        }
        self.rows.extend_from_slice(row);
        self.row_ends.push(self.rows.len());
        self.wrote(number)
    }

    fn end_rows(&mut self) -> Result<()> {
        if self.row_ends.is_empty() || self.ending {
            return Ok(());
        }
        self.stream()?;
        self.copy_open = false;
        // Were the connection gone, `end_batch` hears it when it takes the answer.
        let _ = self.wire.copy_end_send();
        self.ending = true;
        Ok(())
    }

    fn end_batch(&mut self) -> Result<Vec<(u64, Error)>> {
        let rows = self.row_ends.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let refused = self.end_streamed_batch()?;
        self.since_commit += rows as u64;
        self.rows.clear();
        self.row_ends.clear();
        self.numbers.clear();
        self.sent = 0;
        Ok(refused)
    }

    fn checkpoint(&mut self, through: u64) -> Result<Option<u64>> {
        if self.options.commit_due(self.since_commit) {
            self.wire
                .exec("COMMIT; BEGIN")
                .map_err(|e| self.fatal("cannot commit", &e))?;
            self.since_commit = 0;
            return Ok(Some(through));
        }
        Ok(None)
    }

    fn final_counts(&mut self, counts: &crate::report::Counts) {
        if let Some(entry) = &mut self.options.ledger {
            entry.counts = *counts;
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Tally> {
        if !self.row_ends.is_empty() {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "rows left unsent (internal error)",
            ));
        }
        if self.loaded.is_none() && self.existing.is_none() && !self.options.declared.is_empty() {
            self.prepare_columns(&[])?;
        }
        let end = if self.options.dry_run {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        if let Some(mark) = self.options.mark.take().filter(|_| !self.options.dry_run) {
            let written = mark.clone();
            self.wire
                .call(move |c| {
                    crate::sync::mark::write_pg(c, &written.source, &written.table, &written.mark)
                })
                .map_err(|e| self.fatal("cannot write the mark into _ferry_state", &e))?;
            mark.crash_point();
        }
        if let Some(entry) = self.options.ledger.take().filter(|_| !self.options.dry_run) {
            self.commit_ledger(entry)?;
        }
        self.wire
            .exec(end)
            .map_err(|e| self.fatal("cannot commit", &e))?;
        self.finished = true;
        Ok(std::mem::take(&mut self.tally))
    }
}

impl Drop for PgSink {
    fn drop(&mut self) {
        if !self.finished {
            // The server would roll back when the connection closes; saying so is quicker and explicit.
            if self.copy_open {
                let _ = self.wire.copy_end();
            } else if self.ending {
                let _ = self.wire.copy_ended();
            }
            let _ = self.wire.exec("ROLLBACK");
        }
    }
}
