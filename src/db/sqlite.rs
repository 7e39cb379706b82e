//! SQLite as a source stage (rows of a table or query, typed by storage class and declared type) and a sink
//! stage (statements prepared once, run per row with its cells bound in place — see `sqlite_load` — in one
//! transaction, upserts for `--on-conflict`).
//!
//! A database file the run creates is loaded with 16 KiB pages under a rollback journal, which for a new
//! file holds next to nothing (pages past the file's size at the start of the transaction are never
//! journaled), and put in WAL mode once committed: every page is written once, where a WAL journal during
//! the load wrote each page twice (into the WAL, then into the file by checkpoints) — a third of the
//! time of a templated million-row load. A crash mid-load leaves a hot journal that rolls the file back to
//! empty on its next open, as the WAL's uncommitted frames did. An existing file keeps its page size and
//! journal mode, which other programs using it may rely on.
//!
//! SQLite has no exact decimal or timestamp type. Columns ferry creates for them are declared
//! `DECIMAL_TEXT` (TEXT affinity, so `12345678901234567890.10` is kept digit for digit rather than rounded
//! to a double by NUMERIC affinity), JSON columns `JSON TEXT` (TEXT affinity too, so a JSON number keeps its
//! digits) and `TIMESTAMP` (ISO 8601 text with its offset); on read, text in
//! columns declared DATE, DATETIME/TIMESTAMP, JSON or DECIMAL/NUMERIC comes back as that type. What each
//! declared type means is the [one table](super::sqlite_type) the migration uses too.
//!
//! A refused row keeps SQLite's account of why: its constraint errors carry the SQLSTATE PostgreSQL gives
//! for the same violation, and the table and column SQLite names.

use std::os::fd::{FromRawFd as _, RawFd};
use std::path::{Path, PathBuf};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::conflict::ConflictColumn;
use super::sqlite_load::LoadStatement;
use super::sqlite_type::SqliteType;
use super::{
    check_field_names, check_key_enforced, check_sink_names, loaded_columns, new_columns_shown,
    new_table_columns, quote_ident, sample_fields, Cell, Column, ColumnKind, ConnectOptions,
    Database, DbEndpoint, FieldLookup, OnConflict, Sampled, SinkOptions, TableSink, Tally,
};
use crate::env::Environment;
use crate::error::{sqlstate, DbCause, Error, Position, Result, Stage};
use crate::format::Decoder;
use crate::record::{Decimal, Record, Timestamp, Value};
use crate::sink::Writeback;

/// The SQLite database kind.
pub static DATABASE: Database = Database {
    name: "sqlite",
    schemes: &["sqlite", "sqlite3"],
    open_source,
    open_sink,
};

/// The endpoint for a bare `sqlite`: the file `DB_PATH` names (the variable the reference guides use).
pub(crate) fn from_environment(env: &Environment) -> Result<DbEndpoint> {
    match env.non_empty("DB_PATH") {
        Some(path) => Ok(DbEndpoint::sqlite_file(path)),
        None => Err(Error::config(
            "`sqlite` means the file DB_PATH names, and DB_PATH is not set; give sqlite://PATH instead",
        )),
    }
}

/// SQLite's account of an error: for a constraint, the SQLSTATE PostgreSQL gives the same violation,
/// and the table and column from its message (`UNIQUE constraint failed: t.id`).
pub(crate) fn cause(e: &rusqlite::Error) -> Option<DbCause> {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(failure, message) = e else {
        return None;
    };
    let code = match failure.extended_code {
        ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
            sqlstate::UNIQUE_VIOLATION
        }
        ffi::SQLITE_CONSTRAINT_NOTNULL => sqlstate::NOT_NULL_VIOLATION,
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => sqlstate::FOREIGN_KEY_VIOLATION,
        ffi::SQLITE_CONSTRAINT_CHECK => sqlstate::CHECK_VIOLATION,
        _ => return None,
    };
    // "UNIQUE constraint failed: t.a, t.b" names the first column; "CHECK constraint failed: name"
    // names the constraint.
    let named = message
        .as_deref()
        .and_then(|m| m.split_once("constraint failed: "))
        .map(|(_, named)| named.split(", ").next().unwrap_or(named).trim());
    let (table, column, constraint) = match named {
        Some(named) if code == sqlstate::CHECK_VIOLATION => (None, None, Some(named)),
        Some(named) => match named.split_once('.') {
            Some((table, column)) => (Some(table), Some(column), None),
            None => (None, None, None),
        },
        None => (None, None, None),
    };
    Some(DbCause {
        sqlstate: Some(code.to_owned()),
        constraint: constraint.map(str::to_owned),
        table: table.map(str::to_owned),
        column: column.map(str::to_owned),
    })
}

/// A data error naming the database and what failed, with SQLite's cause kept.
pub(crate) fn sql_error(stage: Stage, path: &str, what: &str, e: rusqlite::Error) -> Error {
    let error = Error::data(
        stage,
        Position::default(),
        format!("sqlite {path}: {what}: {e}"),
    );
    match cause(&e) {
        Some(cause) => error.with_db_cause(cause),
        None => error,
    }
}

fn open_source(endpoint: &DbEndpoint, options: &ConnectOptions) -> Result<Box<dyn Decoder>> {
    let path = endpoint.connection().to_owned();
    if !Path::new(&path).exists() {
        return Err(Error::config(format!(
            "sqlite database {path} does not exist"
        )));
    }
    let sql = match (&endpoint.table, &endpoint.query) {
        (_, Some(query)) => query.clone(),
        (Some(table), None) => format!("SELECT * FROM {}", quote_ident(table)),
        (None, None) => {
            return Err(Error::config(format!(
                "{endpoint}: say what to read with ?table=NAME or ?query=SELECT…"
            )))
        }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&path, flags)
        .map_err(|e| sql_error(Stage::Source, &path, "cannot open", e))?;
    conn.busy_timeout(options.timeout)
        .map_err(|e| sql_error(Stage::Source, &path, "cannot set the busy timeout", e))?;
    // Checked here, so a bad table name or query is a configuration error before any record moves.
    conn.prepare(&sql)
        .map_err(|e| Error::config(format!("sqlite {path}: cannot read {sql:?}: {e}")))?;
    let name = endpoint.to_string();
    let params: Vec<rusqlite::types::Value> = endpoint
        .params
        .iter()
        .map(crate::sync::read::Param::sqlite_value)
        .collect();
    Ok(Box::new(crate::format::pushed_records(move |emit| {
        if let Err(e) = stream_rows(&conn, &sql, &params, emit) {
            emit(Err(sql_error(Stage::Source, &name, "reading stopped", e)));
        }
    })))
}

fn stream_rows(
    conn: &Connection,
    sql: &str,
    params: &[rusqlite::types::Value],
    emit: &mut dyn FnMut(Result<Record>) -> bool,
) -> rusqlite::Result<()> {
    let mut statement = conn.prepare(sql)?;
    let columns: Vec<(crate::record::Key, ReadHint)> = statement
        .columns()
        .iter()
        .map(|c| {
            (
                c.name().into(),
                ReadHint::from_declared(c.decl_type().unwrap_or("")),
            )
        })
        .collect();
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    while let Some(row) = rows.next()? {
        let mut record = Record::with_capacity(columns.len());
        for (i, (name, hint)) in columns.iter().enumerate() {
            record.push_unchecked(name.clone(), hint.value(row.get_ref(i)?));
        }
        if !emit(Ok(record)) {
            break;
        }
    }
    Ok(())
}

/// How a column's declared type refines the value SQLite stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadHint {
    Plain,
    Boolean,
    Date,
    Timestamp,
    Json,
    Decimal,
}

impl ReadHint {
    fn from_declared(declared: &str) -> ReadHint {
        match column_kind(declared) {
            ColumnKind::Boolean => ReadHint::Boolean,
            ColumnKind::Date => ReadHint::Date,
            ColumnKind::Timestamp { .. } => ReadHint::Timestamp,
            ColumnKind::Json { .. } => ReadHint::Json,
            ColumnKind::Decimal => ReadHint::Decimal,
            _ => ReadHint::Plain,
        }
    }

    fn value(self, raw: ValueRef<'_>) -> Value {
        match raw {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) if self == ReadHint::Boolean && (n == 0 || n == 1) => {
                Value::Bool(n == 1)
            }
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(f) => Value::Float(f),
            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            ValueRef::Text(t) => self.text(&String::from_utf8_lossy(t)),
        }
    }

    fn text(self, text: &str) -> Value {
        let typed = match self {
            ReadHint::Date => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(Value::Date),
            ReadHint::Timestamp => Timestamp::parse(text).map(Value::Timestamp),
            ReadHint::Json => crate::format::parse_json_value(text.as_bytes()).ok(),
            ReadHint::Decimal => Decimal::parse(text).map(Value::Decimal),
            ReadHint::Plain | ReadHint::Boolean => None,
        };
        typed.unwrap_or_else(|| Value::String(text.to_owned()))
    }
}

/// The kind of a column from its declared type ([the one table](super::sqlite_type)).
fn column_kind(declared: &str) -> ColumnKind {
    match SqliteType::of(declared) {
        SqliteType::Integer | SqliteType::Year => ColumnKind::Integer { bits: 64 },
        SqliteType::Boolean => ColumnKind::Boolean,
        SqliteType::Date => ColumnKind::Date,
        SqliteType::Timestamp { .. } => ColumnKind::Timestamp { zoned: true },
        SqliteType::Json => ColumnKind::Json { binary: false },
        SqliteType::Decimal { .. } => ColumnKind::Decimal,
        SqliteType::Text { .. } | SqliteType::Enum => ColumnKind::Text,
        SqliteType::Float => ColumnKind::Float { single: false },
        SqliteType::Blob => ColumnKind::Bytes,
        SqliteType::Untyped | SqliteType::Other => ColumnKind::Any,
    }
}

/// The declared type ferry gives a new column ([the one table](super::sqlite_type)).
fn declared_type(kind: ColumnKind) -> String {
    let class = match kind {
        ColumnKind::Text | ColumnKind::Uuid => SqliteType::Text { length: None },
        ColumnKind::Integer { .. } => SqliteType::Integer,
        ColumnKind::Float { .. } => SqliteType::Float,
        ColumnKind::Decimal => SqliteType::Decimal { precision: None },
        ColumnKind::Boolean => SqliteType::Boolean,
        ColumnKind::Date => SqliteType::Date,
        ColumnKind::Timestamp { .. } => SqliteType::Timestamp { zoned: true },
        ColumnKind::Json { .. } | ColumnKind::TextArray => SqliteType::Json,
        ColumnKind::Bytes => SqliteType::Blob,
        ColumnKind::Any => SqliteType::Untyped,
    };
    class.declared().unwrap_or_default()
}

impl rusqlite::ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Owned;
        Ok(match self {
            Cell::Null => ToSqlOutput::Owned(Owned::Null),
            Cell::Bool(b) => ToSqlOutput::Owned(Owned::Integer(i64::from(*b))),
            Cell::Int(n) => ToSqlOutput::Owned(Owned::Integer(*n)),
            Cell::Float(f) => ToSqlOutput::Owned(Owned::Real(*f)),
            Cell::Decimal(text) | Cell::Text(text) => {
                ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes()))
            }
            Cell::Json(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Cell::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Cell::Date(d) => ToSqlOutput::Owned(Owned::Text(Value::Date(*d).to_text())),
            Cell::Timestamp(t) => {
                // Sized once: a timestamp's text is at most 35 bytes.
                let mut text = String::with_capacity(40);
                t.push_text(&mut text);
                ToSqlOutput::Owned(Owned::Text(text))
            }
            Cell::TextArray(items) => {
                let values = items
                    .iter()
                    .map(|i| i.clone().map_or(Value::Null, Value::String))
                    .collect();
                ToSqlOutput::Owned(Owned::Text(super::column::json_text(&Value::Array(values))))
            }
            Cell::Uuid(bytes) => ToSqlOutput::Owned(Owned::Text(super::column::uuid_text(bytes))),
        })
    }
}

fn open_sink(endpoint: &DbEndpoint, options: SinkOptions) -> Result<Box<dyn TableSink>> {
    check_sink_names(&options, false)?;
    let path = PathBuf::from(endpoint.connection());
    let name = endpoint.connection().to_owned();
    let exists = path.exists();
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        return Err(Error::config(format!(
            "cannot create sqlite database {name}: folder {} does not exist",
            parent.display()
        )));
    }
    // A dry run never creates the file: a new database is simulated in memory.
    let conn = if options.dry_run && !exists {
        Connection::open_in_memory()
    } else {
        Connection::open(&path)
    }
    .map_err(|e| sql_error(Stage::Sink, &name, "cannot open", e))?;
    // Without SQLite's descriptor of the file the load simply goes without writeback.
    let in_file = exists || !options.dry_run;
    let writeback = in_file
        .then(|| database_descriptor(&conn, &path))
        .flatten()
        .map(|fd| (fd, Writeback::default()));
    // From here on the sink exists, so any failure drops it: rolled back, and a file it created removed.
    let mut sink = SqliteSink {
        conn: Some(Link::Open(conn)),
        name,
        path,
        created_file: !exists && !options.dry_run,
        new_database: !exists && !options.dry_run,
        existing: None,
        key: options.key.clone(),
        options,
        loaded: None,
        tally: Tally::default(),
        since_commit: 0,
        finished: false,
        lookup: FieldLookup::default(),
        writeback,
    };
    sink.start()?;
    let limit = sink.options.sample_records;
    Ok(Sampled::wrap(sink, limit))
}

/// SQLite's own descriptor of the connection's main database file at `path`, for writeback hints. A
/// descriptor of ferry's would do as well, but closing it would drop every POSIX lock this process holds on
/// the file — those of SQLite's connections to it too, the sink's own or, in `ferry serve`, another job's.
/// SQLite hands out its file object (`SQLITE_FCNTL_FILE_POINTER`); under the unix VFSes that is a `unixFile`,
/// whose fourth member is its descriptor (`h`). The descriptor is taken only if it is the file at `path`
/// (same device and inode), so a layout other than the bundled SQLite's means no writeback, nothing worse.
#[cfg(target_os = "linux")]
fn database_descriptor(conn: &Connection, path: &Path) -> Option<RawFd> {
    use std::os::unix::fs::MetadataExt as _;
    /// The members of SQLite's `unixFile` up to its descriptor.
    #[repr(C)]
    struct UnixFileHead {
        methods: *const std::ffi::c_void,
        vfs: *const rusqlite::ffi::sqlite3_vfs,
        inode: *const std::ffi::c_void,
        fd: std::ffi::c_int,
    }
    let control = |op, out: *mut std::ffi::c_void| {
        // SAFETY: the connection is open; both file controls write one pointer to `out`.
        unsafe { rusqlite::ffi::sqlite3_file_control(conn.handle(), c"main".as_ptr(), op, out) }
    };
    let mut vfs: *mut rusqlite::ffi::sqlite3_vfs = std::ptr::null_mut();
    let mut file: *mut rusqlite::ffi::sqlite3_file = std::ptr::null_mut();
    let ok = rusqlite::ffi::SQLITE_OK;
    if control(
        rusqlite::ffi::SQLITE_FCNTL_VFS_POINTER,
        (&raw mut vfs).cast(),
    ) != ok
        || control(
            rusqlite::ffi::SQLITE_FCNTL_FILE_POINTER,
            (&raw mut file).cast(),
        ) != ok
        || vfs.is_null()
        || file.is_null()
    {
        return None;
    }
    // SAFETY: `vfs` is the connection's VFS, registered for the life of the process, its name a C string.
    let name = unsafe { std::ffi::CStr::from_ptr((*vfs).zName) };
    if !name.to_bytes().starts_with(b"unix") {
        return None;
    }
    // SAFETY: the unix VFSes' files are `unixFile`s, which begin with these members; the file is the open
    // connection's.
    let fd = unsafe { (*file.cast::<UnixFileHead>()).fd };
    let expected = std::fs::metadata(path).ok()?;
    // SAFETY: `stat` is plain data, for which all zeros is a value; `fstat` writes only into it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let same = unsafe { libc::fstat(fd, &mut stat) } == 0
        && stat.st_dev == expected.dev()
        && stat.st_ino == expected.ino();
    same.then_some(fd)
}

#[cfg(not(target_os = "linux"))]
fn database_descriptor(_conn: &Connection, _path: &Path) -> Option<RawFd> {
    None
}

impl SqliteSink {
    /// Starts the transaction and reads the table's columns and key.
    fn start(&mut self) -> Result<()> {
        let conn = self.conn();
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(self.options.connect.timeout)?;
            // See the module's notes: the journal choice of a new file is why a load writes each page once.
            if self.new_database {
                conn.pragma_update(None, "page_size", 16384)?;
                conn.pragma_update(None, "journal_mode", "DELETE")?;
                conn.pragma_update(None, "synchronous", "FULL")?;
            } else {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
            }
            conn.pragma_update(None, "foreign_keys", "ON")?;
            conn.execute_batch("BEGIN IMMEDIATE")
        };
        setup().map_err(|e| self.fatal("cannot start a transaction", e))?;
        let existing = table_columns(conn, &self.options.table)
            .map_err(|e| self.fatal("cannot read the table's columns", e))?;
        if existing.is_some() {
            // BEGIN IMMEDIATE holds the write lock, so no other load runs between this check and the end.
            let unique = unique_keys(conn, &self.options.table)
                .map_err(|e| self.fatal("cannot read the table's unique indexes", e))?;
            check_key_enforced(
                &self.options.table,
                &self.options.key,
                &unique,
                self.options.on_conflict,
            )?;
        }
        if self.key.is_empty() {
            self.key = primary_key(conn, &self.options.table)
                .map_err(|e| self.fatal("cannot read the primary key", e))?;
        }
        if self.options.on_conflict != OnConflict::Error && self.key.is_empty() {
            return Err(Error::config(format!(
                "--on-conflict {} needs a key: table {:?} has no primary key, so give --key COLUMN (or a template target key)",
                self.options.on_conflict.name(),
                self.options.table
            )));
        }
        self.existing = existing;
        Ok(())
    }
}

/// The columns of `table` (generated columns left out: they cannot be written), or `None` if it is missing.
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Option<Vec<Column>>> {
    let mut statement = conn.prepare(
        "SELECT name, type, dflt_value IS NOT NULL, pk, hidden FROM pragma_table_xinfo(?1)",
    )?;
    let rows = statement.query_map([table], |row| {
        let declared: String = row.get(1)?;
        let has_default: bool = row.get(2)?;
        let pk: i64 = row.get(3)?;
        let hidden: i64 = row.get(4)?;
        Ok((
            Column {
                name: row.get(0)?,
                kind: column_kind(&declared),
                has_default: has_default || (pk == 1 && declared.eq_ignore_ascii_case("INTEGER")),
                inferred: false,
                type_name: if declared.is_empty() {
                    "no type".into()
                } else {
                    declared
                },
            },
            hidden,
        ))
    })?;
    let mut columns = Vec::new();
    for row in rows {
        let (column, hidden) = row?;
        if hidden == 0 {
            columns.push(column);
        }
    }
    Ok((!columns.is_empty()).then_some(columns))
}

/// The column sets that make rows of `table` unique: its primary key (always unique, as the rowid or
/// through its own index) and its unique indexes over the whole table on plain columns.
fn unique_keys(conn: &Connection, table: &str) -> rusqlite::Result<Vec<Vec<String>>> {
    let mut sets = vec![primary_key(conn, table)?];
    let mut list = conn
        .prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND partial = 0")?;
    let indexes: Vec<String> = list
        .query_map([table], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut info = conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
    for index in indexes {
        // An expression term has no name.
        let columns: Vec<Option<String>> = info
            .query_map([&index], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if let Some(columns) = columns.into_iter().collect::<Option<Vec<String>>>() {
            sets.push(columns);
        }
    }
    Ok(sets)
}

fn primary_key(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement =
        conn.prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
    let names = statement.query_map([table], |row| row.get(0))?;
    names.collect()
}

/// The statements a load runs, built once the loaded columns are known.
struct Statements {
    insert: String,
    /// For overwrite and merge: the update run when the insert found the key taken.
    update: Option<String>,
}

/// The sink's connection: open, then (once the loaded columns are known) with the load's statements
/// prepared on it.
enum Link {
    Open(Connection),
    Loading(Loading),
}

self_cell::self_cell!(
    /// A connection with the load's statements prepared on it, kept from the first row to the last. Taken
    /// from rusqlite's statement cache for each row instead, a statement cost two hashes of its SQL and a
    /// clearing of its bindings, which freed SQLite's copy of every bound text only for the next row to
    /// allocate it again: 4 % of a templated load's instructions (BENCHMARKS.md, "Twelfth pass").
    struct Loading {
        owner: Connection,
        #[not_covariant]
        dependent: Prepared,
    }
);

// SAFETY: the connection and the statements prepared on it (SQLite's own handles, see `sqlite_load`) only
// ever move between threads together, inside this cell, which nothing outside borrows; `Loading` is not
// `Sync` (a `Connection` is not), so they are never used from two threads at once, which is all SQLite's
// multi-thread mode (rusqlite opens connections with `SQLITE_OPEN_NO_MUTEX`) asks. rusqlite's own
// statement cache, prepared statements kept inside the connection, is `Send` on the same grounds.
unsafe impl Send for Loading {}

/// The statements of [`Statements`], prepared.
struct Prepared<'c> {
    insert: LoadStatement<'c>,
    /// None when there is no update to run, or it is empty (the row is kept as it is).
    update: Option<LoadStatement<'c>>,
}

impl Link {
    fn connection(&self) -> &Connection {
        match self {
            Link::Open(conn) => conn,
            Link::Loading(loading) => loading.borrow_owner(),
        }
    }

    /// The connection, its statements finalized.
    fn into_connection(self) -> Connection {
        match self {
            Link::Open(conn) => conn,
            Link::Loading(loading) => loading.into_owner(),
        }
    }
}

struct SqliteSink {
    conn: Option<Link>,
    name: String,
    path: PathBuf,
    /// A file this run created and has not committed to: removed if the run fails.
    created_file: bool,
    /// The run created the file (committed or not): it is put in WAL mode when the run finishes.
    new_database: bool,
    existing: Option<Vec<Column>>,
    key: Vec<String>,
    options: SinkOptions,
    loaded: Option<(Vec<(Column, String)>, Statements)>,
    tally: Tally,
    since_commit: u64,
    finished: bool,
    lookup: FieldLookup,
    /// SQLite's own descriptor of the database file (see `database_descriptor`), to start the file's
    /// writeback as the load grows it.
    writeback: Option<(RawFd, Writeback)>,
}

impl SqliteSink {
    fn conn(&self) -> &Connection {
        // Only `Drop` takes the connection.
        self.conn
            .as_ref()
            .map(Link::connection)
            .expect("connection is open until drop")
    }

    /// Prepares the load's statements, kept until the load ends.
    fn prepare_statements(&mut self, statements: &Statements) -> Result<()> {
        let conn = self.conn.take().map(Link::into_connection);
        let conn = conn.expect("connection is open until drop");
        let update = statements.update.as_deref().filter(|u| !u.is_empty());
        let prepared = Loading::try_new_or_recover(conn, |c| {
            Ok::<_, rusqlite::Error>(Prepared {
                insert: LoadStatement::prepare(c, &statements.insert)?,
                update: update.map(|u| LoadStatement::prepare(c, u)).transpose()?,
            })
        });
        match prepared {
            Ok(loading) => {
                self.conn = Some(Link::Loading(loading));
                Ok(())
            }
            Err((conn, e)) => {
                self.conn = Some(Link::Open(conn));
                Err(self.fatal("cannot prepare the load's statements", e))
            }
        }
    }

    /// Finalizes the load's statements (before the commit and the switch to WAL).
    fn release_statements(&mut self) {
        self.conn = self.conn.take().map(|l| Link::Open(l.into_connection()));
    }

    /// Creates the table if needed and prepares the statements, from a sample of the first records.
    fn prepare_columns(&mut self, sample: &[Record]) -> Result<()> {
        let table = self.options.table.clone();
        check_field_names(&table, sample_fields(sample).iter().map(|k| &**k), false)?;
        let columns = match self.existing.take() {
            Some(existing) if !sample.is_empty() => loaded_columns(&table, existing, sample)?,
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
                self.tally.columns = new_columns_shown(&columns, &self.options, declared_type);
                columns
                    .into_iter()
                    .map(|mut c| {
                        c.type_name = declared_type(c.kind);
                        let f = c.name.clone();
                        (c, f)
                    })
                    .collect()
            }
        };
        let statements = self.statements(&columns);
        self.prepare_statements(&statements)?;
        self.loaded = Some((columns, statements));
        Ok(())
    }

    fn create_table(&mut self, columns: &[Column]) -> Result<()> {
        let mut sql = format!("CREATE TABLE {} (", quote_ident(&self.options.table));
        let defs: Vec<String> = columns
            .iter()
            .map(|c| {
                format!("{} {}", quote_ident(&c.name), declared_type(c.kind))
                    .trim_end()
                    .to_owned()
            })
            .collect();
        sql.push_str(&defs.join(", "));
        if !self.key.is_empty() {
            let key: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
            sql.push_str(&format!(", PRIMARY KEY ({})", key.join(", ")));
        }
        sql.push(')');
        self.conn()
            .execute_batch(&sql)
            .map_err(|e| self.fatal("cannot create the table", e))?;
        self.tally.created_table = true;
        Ok(())
    }

    fn statements(&self, columns: &[(Column, String)]) -> Statements {
        let columns: Vec<ConflictColumn<'_>> = columns
            .iter()
            .map(|(c, _)| ConflictColumn {
                name: &c.name,
                json: matches!(c.kind, ColumnKind::Json { .. }),
                cast: None,
            })
            .collect();
        let (insert, update) = crate::db::conflict::sqlite_statements(
            &self.options.table,
            &columns,
            &self.key,
            self.options.on_conflict,
        );
        Statements { insert, update }
    }

    /// Hands the pages SQLite has written into the file since the last time to the disk, once there are
    /// enough of them: they reach the file as its page cache spills them, and without this the commit's
    /// sync wrote them all at the end (0.11 s of a 1.4 s million-row load into a new file).
    fn start_writeback(&mut self) {
        let Some((fd, writeback)) = &mut self.writeback else {
            return;
        };
        // SAFETY: the descriptor is SQLite's, open while the connection is, which it is until `Drop`; the
        // `File` made of it is never dropped, so never closes it.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(*fd) });
        if let Ok(meta) = file.metadata() {
            writeback.follow(&file, meta.len());
        }
    }

    fn fatal(&self, what: &str, e: rusqlite::Error) -> Error {
        sql_error(Stage::Sink, &self.name, what, e)
    }

    /// Runs the insert (or the update) for a record: constraint failures are the record's error, anything
    /// else is fatal.
    fn run(&mut self, update: bool, cells: &[Cell<'_>]) -> Result<usize> {
        let Some(Link::Loading(loading)) = &mut self.conn else {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "no statement prepared (internal error)",
            ));
        };
        let result = loading.with_dependent_mut(|_, prepared| match update {
            false => prepared.insert.execute(cells),
            true => match &mut prepared.update {
                Some(statement) => statement.execute(cells),
                None => Ok(0),
            },
        });
        result.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ConstraintViolation)
            | Some(rusqlite::ErrorCode::TypeMismatch) => {
                let cause = cause(&e);
                let error = Error::record(
                    Stage::Sink,
                    Position::default(),
                    format!("table {:?} refused the row: {e}", self.options.table),
                );
                match cause {
                    Some(cause) => error.with_db_cause(cause),
                    None => error,
                }
            }
            _ => self.fatal("cannot write the row", e),
        })
    }
}

impl TableSink for SqliteSink {
    fn prepare(&mut self, sample: &[Record]) -> Result<()> {
        if self.loaded.is_none() {
            self.prepare_columns(sample)?;
        }
        Ok(())
    }

    fn write(&mut self, _number: u64, record: &Record) -> Result<()> {
        if self.loaded.is_none() {
            self.prepare_columns(std::slice::from_ref(record))?;
        }
        let Some((columns, statements)) = &self.loaded else {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "no columns to load (internal error)",
            ));
        };
        let updates = statements.update.is_some();
        let cells = self.lookup.cells(&self.options.table, columns, record)?;
        let changed = self.run(false, &cells)?;
        self.since_commit += 1;
        match (changed, updates) {
            (0, false) => self.tally.skipped += 1,
            (0, true) => {
                // An empty update (the row kept as it is) has no statement and runs nothing.
                self.run(true, &cells)?;
                self.tally.updated += 1;
            }
            _ => self.tally.inserted += 1,
        }
        self.lookup.recycle(cells);
        Ok(())
    }

    /// Rows are inserted one by one on the writing thread, and a batch's end is only a commit check.
    fn maps_beside(&self) -> bool {
        true
    }

    fn end_batch(&mut self) -> Result<Vec<(u64, Error)>> {
        Ok(Vec::new())
    }

    fn checkpoint(&mut self, through: u64) -> Result<Option<u64>> {
        self.start_writeback();
        if self.options.commit_due(self.since_commit) {
            self.conn()
                .execute_batch("COMMIT; BEGIN IMMEDIATE")
                .map_err(|e| self.fatal("cannot commit", e))?;
            self.since_commit = 0;
            // Committed rows are the user's now: the file stays even if the run fails later.
            self.created_file = false;
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
        if self.loaded.is_none() && !self.options.declared.is_empty() {
            self.prepare_columns(&[])?;
        }
        self.release_statements();
        let end = if self.options.dry_run {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        if let Some(mark) = self.options.mark.take().filter(|_| !self.options.dry_run) {
            crate::sync::mark::write_sqlite(self.conn(), &mark.source, &mark.table, &mark.mark)
                .map_err(|e| self.fatal("cannot write the mark into _ferry_state", e))?;
            mark.crash_point();
        }
        if let Some(mut entry) = self.options.ledger.take().filter(|_| !self.options.dry_run) {
            // Duplicates were handed to the database as writes; it skipped them (as the report counts them).
            entry.counts.written -= self.tally.skipped.min(entry.counts.written);
            entry.counts.skipped += self.tally.skipped;
            let fresh = crate::shard::ledger::commit_sqlite(self.conn(), &entry)
                .map_err(|e| self.fatal("cannot write the shard ledger", e))?;
            if !fresh {
                return Err(crate::shard::ledger::done_elsewhere(&entry));
            }
        }
        self.conn()
            .execute_batch(end)
            .map_err(|e| self.fatal("cannot commit", e))?;
        self.finished = true;
        if self.new_database {
            // The rows are committed; WAL lets readers and a writer share the file from now on. If another
            // connection holds it and the switch cannot be made, the file simply keeps its rollback journal.
            let _ = self.conn().pragma_update(None, "journal_mode", "WAL");
        }
        Ok(std::mem::take(&mut self.tally))
    }
}

impl Drop for SqliteSink {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take().map(Link::into_connection) else {
            return;
        };
        if self.finished {
            return;
        }
        let _ = conn.execute_batch("ROLLBACK");
        drop(conn);
        // A database file this run created and did not finish is removed, journal files included.
        if self.created_file {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = self.path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_for_writeback_is_sqlites_own_and_of_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("load.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
            .unwrap();
        let fd = database_descriptor(&conn, &path).expect("the file's descriptor");
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        assert_eq!(link, path.canonicalize().unwrap());
        // Another file at the path is not the one SQLite holds.
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        assert_eq!(database_descriptor(&conn, &other), None);
        assert_eq!(
            database_descriptor(&Connection::open_in_memory().unwrap(), &path),
            None
        );
        // The connection closes it: it was never ferry's to close.
        drop(conn);
        assert!(std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_or(true, |l| l != path.canonicalize().unwrap()));
    }
}
