//! PostgreSQL as a source stage (binary `COPY (SELECT …) TO STDOUT`, values typed from the column types) and
//! a sink stage (binary `COPY … FROM STDIN` in batches, inside one transaction; a staging table and
//! `INSERT … ON CONFLICT` for `--on-conflict skip|overwrite|merge`).
//!
//! Rows are encoded once into the COPY wire format as they arrive. When the server refuses a batch (a
//! constraint, a value out of range), the batch is rolled back to its savepoint and split in halves until
//! the refused rows are found, so each bad row is rejected with the server's own message and the others
//! load. The framing is written here rather than through `BinaryCopyInWriter` so that those retries resend
//! already-encoded bytes instead of re-encoding held values.

use std::any::Any;
use std::io::Write as _;
use std::ops::Range;
use std::str::FromStr as _;
use std::sync::mpsc;

use bytes::{BufMut as _, Bytes, BytesMut};
use postgres::types::{FromSql, Kind, ToSql, Type};
use postgres::{Client, Config};

use super::{
    check_field_names, check_key_enforced, check_sink_names, coerce, loaded_columns,
    new_table_columns, quote_ident, with_retries, Cell, Column, ColumnKind, ConnectOptions,
    Database, DbEndpoint, FieldLookup, OnConflict, SinkOptions, TableSink, Tally,
};
use crate::error::{Error, Position, Result, Stage};
use crate::format::Decoder;
use crate::record::{Decimal, Record, Timestamp, Value};

/// The PostgreSQL database kind.
pub static DATABASE: Database = Database {
    name: "postgres",
    schemes: &["postgres", "postgresql"],
    open_source,
    open_sink,
};

/// The endpoint for a bare `postgres`: `DATABASE_URL`, else libpq's `PG*` variables (read at connect time).
pub(crate) fn from_environment() -> Result<DbEndpoint> {
    let connection = std::env::var("DATABASE_URL").unwrap_or_default();
    let connection = if connection.trim().is_empty() {
        String::from("postgres://")
    } else {
        connection
    };
    match DbEndpoint::parse(&connection)? {
        Some(endpoint) if endpoint.database.name == "postgres" => Ok(endpoint),
        _ => Err(Error::usage("DATABASE_URL must be a postgres:// URL")),
    }
}

/// The connection settings with libpq's environment defaults filled in, and whether certificates are checked.
fn config(connection: &str, options: &ConnectOptions) -> Result<(Config, SslCheck)> {
    // tokio-postgres knows sslmode disable/prefer/require; verify-ca and verify-full are require plus checks.
    let mut check = SslCheck::None;
    let mut text = connection.to_owned();
    for (mode, wanted) in [("verify-full", SslCheck::Full), ("verify-ca", SslCheck::Ca)] {
        let needle = format!("sslmode={mode}");
        if text.contains(&needle) {
            text = text.replace(&needle, "sslmode=require");
            check = wanted;
        }
    }
    let mut config = if text == "postgres://" || text == "postgresql://" {
        Config::new()
    } else {
        Config::from_str(&text).map_err(|e| {
            Error::usage(format!(
                "{}: not a valid connection URL: {e}",
                redacted(connection)
            ))
        })?
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if !text.contains("sslmode=") {
        match env("PGSSLMODE").as_deref() {
            Some("disable") => {
                config.ssl_mode(postgres::config::SslMode::Disable);
            }
            Some("require") => {
                config.ssl_mode(postgres::config::SslMode::Require);
            }
            Some("verify-ca") | Some("verify-full") => {
                config.ssl_mode(postgres::config::SslMode::Require);
                check = SslCheck::Full;
            }
            _ => {}
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("ferry");
    }
    Ok((config, check))
}

/// How far a TLS server certificate is checked (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslCheck {
    /// prefer/require: encrypted, certificate not checked.
    None,
    /// verify-ca: the chain is checked, not the host name.
    Ca,
    /// verify-full: chain and host name.
    Full,
}

/// `postgres://user@host:port/db`: what errors and reports show. Never the password.
pub(crate) fn redacted(connection: &str) -> String {
    let Ok(config) = Config::from_str(connection) else {
        return String::from("postgres://…");
    };
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{host}{port}/{db}")
}

fn where_is(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(name)) => name.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects, retrying with backoff while the server cannot be reached (not when it refuses the login).
pub(crate) fn connect(
    endpoint: &DbEndpoint,
    options: &ConnectOptions,
    stage: Stage,
) -> Result<Client> {
    let (config, check) = config(endpoint.connection(), options)?;
    let mut builder = native_tls::TlsConnector::builder();
    if check != SslCheck::Full {
        builder.danger_accept_invalid_hostnames(true);
    }
    if check == SslCheck::None {
        builder.danger_accept_invalid_certs(true);
    }
    let tls = builder
        .build()
        .map_err(|e| Error::usage(format!("cannot set up TLS: {e}")))?;
    let tls = postgres_native_tls::MakeTlsConnector::new(tls);
    let client = with_retries(
        options,
        || config.connect(tls.clone()),
        |e| e.as_db_error().is_none(),
    );
    client.map_err(|e| {
        let place = where_is(&config);
        let message = match e.as_db_error() {
            Some(db) => format!(
                "postgres at {place} refused the connection: {}",
                db.message()
            ),
            None => format!("cannot connect to postgres at {place}: {e}; is the server running?"),
        };
        Error::data(stage, Position::default(), message)
    })
}

pub(crate) fn pg_error(stage: Stage, what: &str, e: &postgres::Error) -> Error {
    let message = match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            format!("{what}: {}{detail}", db.message())
        }
        None => format!("{what}: {e}"),
    };
    Error::data(stage, Position::default(), message)
}

// ---------------------------------------------------------------------------------------------------------
// Source

fn open_source(endpoint: &DbEndpoint, options: &ConnectOptions) -> Result<Box<dyn Decoder>> {
    let inner = match (&endpoint.table, &endpoint.query) {
        (_, Some(query)) => query.trim().trim_end_matches(';').to_owned(),
        (Some(table), None) => format!("SELECT * FROM {}", qualified_name(table)),
        (None, None) => {
            return Err(Error::usage(format!(
                "{endpoint}: say what to read with ?table=NAME or ?query=SELECT…"
            )))
        }
    };
    let mut client = connect(endpoint, options, Stage::Source)?;
    let statement = client.prepare(&inner).map_err(|e| {
        Error::usage(pg_error(Stage::Source, &format!("{endpoint}: cannot read"), &e).message())
    })?;
    // Columns of types ferry does not decode are read as their text form.
    let mut select = Vec::new();
    let mut columns = Vec::new();
    for column in statement.columns() {
        let name = quote_ident(column.name());
        if PgValue::accepts(column.type_()) {
            select.push(format!("q.{name}"));
            columns.push((
                crate::record::Key::from(column.name()),
                column.type_().clone(),
            ));
        } else {
            select.push(format!("q.{name}::text AS {name}"));
            columns.push((crate::record::Key::from(column.name()), Type::TEXT));
        }
    }
    let copy = format!(
        "COPY (SELECT {} FROM ({inner}) AS q) TO STDOUT (FORMAT binary)",
        select.join(", ")
    );
    let name = endpoint.to_string();
    Ok(Box::new(crate::format::pushed_records(move |emit| {
        if let Err(e) = stream_rows(&mut client, &copy, &columns, emit) {
            emit(Err(e.with_context(Some(&name), None)));
        }
    })))
}

fn stream_rows(
    client: &mut Client,
    copy: &str,
    columns: &[(crate::record::Key, Type)],
    emit: &mut dyn FnMut(Result<Record>) -> bool,
) -> Result<()> {
    use postgres::fallible_iterator::FallibleIterator as _;
    let reader = client
        .copy_out(copy)
        .map_err(|e| pg_error(Stage::Source, "cannot read", &e))?;
    let types: Vec<Type> = columns.iter().map(|(_, t)| t.clone()).collect();
    let mut rows = postgres::binary_copy::BinaryCopyOutIter::new(reader, &types);
    let mut number = 0u64;
    while let Some(row) = rows
        .next()
        .map_err(|e| pg_error(Stage::Source, "reading stopped", &e))?
    {
        number += 1;
        let mut record = Record::with_capacity(columns.len());
        for (i, (name, _)) in columns.iter().enumerate() {
            let value = row.try_get::<Option<PgValue>>(i).map_err(|e| {
                Error::data(
                    Stage::Decode,
                    Position::default()
                        .with_record(number)
                        .with_field(name.to_string()),
                    format!("cannot decode column {:?}: {e}", &**name),
                )
            })?;
            record.push_unchecked(name.clone(), value.map_or(Value::Null, |v| v.0));
        }
        if !emit(Ok(record)) {
            break;
        }
    }
    Ok(())
}

/// A value read from PostgreSQL's binary format.
struct PgValue(Value);

pub(crate) type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl<'a> FromSql<'a> for PgValue {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        let value = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::OID => Value::Int(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric_from_binary(raw)?,
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::DATE => Value::Date(chrono::NaiveDate::from_sql(ty, raw)?),
            Type::TIMESTAMP => Value::Timestamp(Timestamp {
                datetime: chrono::NaiveDateTime::from_sql(ty, raw)?,
                offset: None,
            }),
            Type::TIMESTAMPTZ => Value::Timestamp(Timestamp {
                datetime: chrono::DateTime::<chrono::Utc>::from_sql(ty, raw)?.naive_utc(),
                offset: chrono::FixedOffset::east_opt(0),
            }),
            Type::JSON => serde_json::from_slice(raw)?,
            Type::JSONB => serde_json::from_slice(raw.get(1..).unwrap_or_default())?,
            Type::UUID => Value::String(uuid_text(raw)?),
            _ if matches!(ty.kind(), Kind::Array(_)) => {
                let items = Vec::<Option<PgValue>>::from_sql(ty, raw)?;
                Value::Array(
                    items
                        .into_iter()
                        .map(|i| i.map_or(Value::Null, |v| v.0))
                        .collect(),
                )
            }
            _ => Value::String(String::from_utf8(raw.to_vec())?),
        };
        Ok(PgValue(value))
    }

    fn accepts(ty: &Type) -> bool {
        match ty.kind() {
            Kind::Array(member) => {
                PgValue::accepts(member) && !matches!(member.kind(), Kind::Array(_))
            }
            _ => matches!(
                *ty,
                Type::BOOL
                    | Type::INT2
                    | Type::INT4
                    | Type::INT8
                    | Type::OID
                    | Type::FLOAT4
                    | Type::FLOAT8
                    | Type::NUMERIC
                    | Type::BYTEA
                    | Type::DATE
                    | Type::TIMESTAMP
                    | Type::TIMESTAMPTZ
                    | Type::JSON
                    | Type::JSONB
                    | Type::UUID
                    | Type::TEXT
                    | Type::VARCHAR
                    | Type::BPCHAR
                    | Type::NAME
            ),
        }
    }
}

fn uuid_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let bytes: [u8; 16] = raw.try_into().map_err(|_| "a uuid must be 16 bytes")?;
    Ok(super::column::uuid_text(&bytes))
}

/// Decodes PostgreSQL's binary numeric to an exact decimal value (NaN and infinities as floats).
fn numeric_from_binary(raw: &[u8]) -> std::result::Result<Value, BoxError> {
    match raw.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]])) {
        Some(0xC000) => return Ok(Value::Float(f64::NAN)),
        Some(0xD000) => return Ok(Value::Float(f64::INFINITY)),
        Some(0xF000) => return Ok(Value::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    Decimal::parse(&numeric_text(raw)?)
        .map(Value::Decimal)
        .ok_or_else(|| "numeric value did not decode".into())
}

/// Decodes PostgreSQL's binary numeric (base-10000 digits with a weight and a display scale) to exact text
/// (`NaN`, `Infinity`, `-Infinity` for the special values).
pub(crate) fn numeric_text(raw: &[u8]) -> std::result::Result<String, BoxError> {
    let word = |i: usize| -> std::result::Result<i16, BoxError> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("numeric value too short")?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let ndigits = word(0)?.max(0) as usize;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = word(3)?.max(0) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<std::result::Result<_, _>>()?;
    let digit = |index: i64| -> i16 {
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit(0).to_string());
        for group in 1..=weight {
            text.push_str(&format!("{:04}", digit(group)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut group = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(group)));
            group += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// Encodes exact decimal text (`-12.50`, `1.5e3`) as PostgreSQL's binary numeric.
pub(crate) fn numeric_to_binary(text: &str, out: &mut BytesMut) -> std::result::Result<(), String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = unsigned[i + 1..].parse().map_err(|_| "bad exponent")?;
            (&unsigned[..i], e)
        }
        None => (unsigned, 0),
    };
    if exponent.abs() > 100_000 {
        return Err("exponent out of range for numeric".into());
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let mut point = int.len() as i64 + exponent;
    let dscale = (frac.len() as i64 - exponent).max(0);
    if dscale > 16383 {
        return Err("too many digits after the decimal point for numeric".into());
    }
    if point < 0 {
        let pad = usize::try_from(-point).unwrap_or(0);
        digits.splice(0..0, std::iter::repeat_n(0, pad));
        point = 0;
    }
    let point = usize::try_from(point).unwrap_or(0);
    if point > digits.len() {
        digits.resize(point, 0);
    }
    // Base-10000 groups aligned on the decimal point.
    let lead = (4 - point % 4) % 4;
    let mut aligned = vec![0u8; lead];
    aligned.extend_from_slice(&digits);
    let trail = (4 - aligned.len() % 4) % 4;
    aligned.extend(std::iter::repeat_n(0, trail));
    let mut groups: Vec<i16> = aligned
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d)))
        .collect();
    let mut weight = ((point + lead) / 4) as i64 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "too many digits for numeric")?;
    let weight = i16::try_from(weight).map_err(|_| "number too large for numeric")?;
    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(dscale as u16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Sink

/// A table name for SQL: `schema.table` names a table in a schema (each part quoted), anything else is one
/// quoted identifier.
fn qualified_name(table: &str) -> String {
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

fn open_sink(endpoint: &DbEndpoint, options: SinkOptions) -> Result<Box<dyn TableSink>> {
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
        return Err(Error::usage(format!(
            "--on-conflict {} needs a key: table {:?} has no primary key, so give --key COLUMN (or a template target key)",
            options.on_conflict.name(),
            options.table
        )));
    }
    Ok(Box::new(PgSink {
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
        sent: 0,
    }))
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
            return Err(Error::usage(format!(
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

    /// Creates the table if needed and fixes the columns and statements, from the first record.
    fn prepare(&mut self, first: Option<&Record>) -> Result<()> {
        let fields = first.into_iter().flat_map(|r| r.keys());
        check_field_names(&self.options.table, fields, true)?;
        let (columns, types) = match (self.existing.take(), first) {
            (Some(existing), Some(first)) => {
                let types_by_name: Vec<(String, Type)> = existing
                    .iter()
                    .map(|(c, t)| (c.name.clone(), t.clone()))
                    .collect();
                let plain = existing.into_iter().map(|(c, _)| c).collect();
                let loaded = loaded_columns(&self.options.table, plain, first)?;
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
            (Some(existing), None) => {
                self.existing = Some(existing);
                return Ok(());
            }
            (None, _) => {
                let columns = new_table_columns(&self.options, first);
                if columns.is_empty() {
                    return Ok(());
                }
                self.create_table(&columns)?;
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
                );
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
            (copy, Some(self.upsert_sql(&columns, &list)))
        };
        self.loaded = Some(Loaded {
            columns,
            types,
            copy,
            upsert,
        });
        Ok(())
    }

    fn upsert_sql(&self, columns: &[(Column, String)], list: &str) -> String {
        let key: Vec<String> = self.key.iter().map(|k| quote_ident(k)).collect();
        let insert = format!(
            "INSERT INTO {} AS t ({list}) SELECT {list} FROM {STAGING} ON CONFLICT ({})",
            self.table,
            key.join(", ")
        );
        let is_key = |c: &Column| self.key.iter().any(|k| k == &c.name);
        let sets: Vec<String> = match self.options.on_conflict {
            OnConflict::Error | OnConflict::Skip => return format!("{insert} DO NOTHING"),
            OnConflict::Overwrite => columns
                .iter()
                .filter(|(c, _)| !is_key(c))
                .map(|(c, _)| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                .collect(),
            OnConflict::Merge => columns
                .iter()
                .filter(|(c, _)| !is_key(c))
                .map(|(c, _)| {
                    let col = quote_ident(&c.name);
                    match c.kind {
                        ColumnKind::Json { binary: true } => format!(
                            "{col} = CASE WHEN jsonb_typeof(t.{col}) = 'object' AND jsonb_typeof(EXCLUDED.{col}) = 'object' \
                             THEN t.{col} || EXCLUDED.{col} ELSE COALESCE(EXCLUDED.{col}, t.{col}) END"
                        ),
                        _ => format!("{col} = COALESCE(EXCLUDED.{col}, t.{col})"),
                    }
                })
                .collect(),
        };
        // With only key columns loaded, the update is a no-op that still counts the row as updated.
        let sets = if sets.is_empty() {
            key.iter().map(|k| format!("{k} = EXCLUDED.{k}")).collect()
        } else {
            sets
        };
        format!(
            "WITH written AS ({insert} DO UPDATE SET {} RETURNING (xmax = 0) AS inserted) \
             SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written",
            sets.join(", ")
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
        self.rows.put_i16(loaded.columns.len() as i16);
        for (i, ((column, _), ty)) in loaded.columns.iter().zip(&loaded.types).enumerate() {
            let encoded = coerce(self.lookup.value(record, i), column)
                .map_err(|message| (message, false))
                .and_then(|cell| {
                    encode_cell(&cell, column.kind, ty, &mut self.rows).map_err(|m| (m, true))
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
            self.wire.copy_start(copy, COPY_HEADER)?;
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
        self.stream()?;
        self.copy_open = false;
        let copied = self.wire.copy_end();
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
        self.wire
            .copy_start(copy, COPY_HEADER)
            .map_err(|_| WireError::Gone)?;
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

    fn row_error(&self, e: &WireError) -> Error {
        let db = match e {
            WireError::Db(e) => e.as_db_error(),
            WireError::Gone => None,
        };
        let (message, column) = match db {
            Some(db) => {
                let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
                (
                    format!("{}{detail}", db.message()),
                    db.column().map(str::to_owned),
                )
            }
            None => (e.to_string(), None),
        };
        let mut position = Position::default();
        if let Some(column) = column {
            position = position.with_field(column);
        }
        Error::record(
            Stage::Sink,
            position,
            format!("table {} refused the row: {message}", self.options.table),
        )
    }
}

/// True when a CREATE TABLE lost a race: another transaction created the table (or its row type) and
/// committed first, which PostgreSQL reports as `relation … already exists` or as a duplicate key in
/// its catalog index `pg_type_typname_nsp_index`.
fn created_meanwhile(e: &WireError) -> bool {
    let WireError::Db(e) = e else { return false };
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code == "42P07" || (code == "23505" && db.constraint() == Some("pg_type_typname_nsp_index"))
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
    let length_at = out.len();
    out.put_i32(0);
    match (cell, kind) {
        (Cell::Null, _) => {
            out.truncate(length_at);
            out.put_i32(-1);
            return Ok(());
        }
        (Cell::Text(s), _) => out.put_slice(s.as_bytes()),
        (Cell::Int(n), ColumnKind::Integer { bits: 16 }) => out.put_i16(*n as i16),
        (Cell::Int(n), ColumnKind::Integer { bits: 32 }) => out.put_i32(*n as i32),
        (Cell::Int(n), _) => out.put_i64(*n),
        (Cell::Float(f), ColumnKind::Float { single: true }) => {
            let single = *f as f32;
            if f.is_finite() && !single.is_finite() {
                return Err("too large for a 32-bit real".into());
            }
            out.put_f32(single)
        }
        (Cell::Float(f), _) => out.put_f64(*f),
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
        (Cell::Json(text), ColumnKind::Json { binary: true }) => {
            out.put_u8(1);
            out.put_slice(text.as_bytes());
        }
        (Cell::Json(text), _) => out.put_slice(text.as_bytes()),
        (Cell::Bytes(b), _) => out.put_slice(b),
        (Cell::TextArray(items), _) => put_sql(items, ty, out)?,
        (Cell::Uuid(b), _) => out.put_slice(b),
    }
    let length = out.len() - length_at - 4;
    let length = i32::try_from(length).map_err(|_| "value larger than 2 GiB")?;
    out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

fn put_sql<T: ToSql>(value: &T, ty: &Type, out: &mut BytesMut) -> std::result::Result<(), String> {
    value.to_sql(ty, out).map(|_| ()).map_err(|e| e.to_string())
}

impl TableSink for PgSink {
    fn write(&mut self, number: u64, record: &Record) -> Result<()> {
        if self.loaded.is_none() {
            self.prepare(Some(record))?;
        }
        self.encode(record)?;
        self.numbers.push(number);
        if self.rows.len() - self.sent >= STREAM_CHUNK {
            self.stream()?;
        }
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

    fn finish(mut self: Box<Self>) -> Result<Tally> {
        if !self.row_ends.is_empty() {
            return Err(Error::data(
                Stage::Sink,
                Position::default(),
                "rows left unsent (internal error)",
            ));
        }
        if self.loaded.is_none() && self.existing.is_none() && !self.options.declared.is_empty() {
            self.prepare(None)?;
        }
        let end = if self.options.dry_run {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
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
            }
            let _ = self.wire.exec("ROLLBACK");
        }
    }
}

/// The start of every binary COPY stream: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of every binary COPY stream.
const COPY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// Encoded rows are streamed to the server in pieces of about this size.
const STREAM_CHUNK: usize = 64 * 1024;

/// Why a statement sent to the connection thread did not succeed.
#[derive(Debug)]
enum WireError {
    /// The server or the driver said no.
    Db(postgres::Error),
    /// The connection thread is gone.
    Gone,
}

impl From<postgres::Error> for WireError {
    fn from(e: postgres::Error) -> Self {
        WireError::Db(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Db(e) => write!(f, "{e}"),
            WireError::Gone => f.write_str("the connection thread stopped"),
        }
    }
}

type Reply = std::result::Result<Box<dyn Any + Send>, postgres::Error>;

/// Work for the connection thread.
enum Job {
    /// Run this with the client and reply.
    Run(Box<dyn FnOnce(&mut Client) -> Reply + Send>),
    /// Open a COPY with this statement and send these first bytes; no reply until `CopyEnd`.
    CopyStart(String, Bytes),
    /// More COPY data.
    CopyData(Bytes),
    /// Finish the COPY and reply with the number of rows copied.
    CopyEnd,
}

/// The sink's connection, owned by a thread of its own so that the server parses one part of a batch
/// while the next part is being encoded (the sync driver's COPY writer borrows the client, so it cannot be
/// kept open across calls on this side).
struct Wire {
    jobs: Option<mpsc::SyncSender<Job>>,
    replies: mpsc::Receiver<Reply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Wire {
    fn start(client: Client) -> Wire {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(16);
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        let thread = std::thread::spawn(move || serve(client, &job_rx, &reply_tx));
        Wire {
            jobs: Some(jobs),
            replies,
            thread: Some(thread),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .map(|j| j.send(job).is_ok())
            .unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(Error::data(
                Stage::Sink,
                Position::default(),
                "the database connection thread stopped unexpectedly",
            ))
        }
    }

    fn reply(&self) -> std::result::Result<Box<dyn Any + Send>, WireError> {
        match self.replies.recv() {
            Ok(reply) => reply.map_err(WireError::Db),
            Err(_) => Err(WireError::Gone),
        }
    }

    /// Runs `f` with the client on the connection thread and waits for its result.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> std::result::Result<T, WireError> {
        let job = Job::Run(Box::new(move |c| {
            f(c).map(|v| Box::new(v) as Box<dyn Any + Send>)
        }));
        self.send(job).map_err(|_| WireError::Gone)?;
        self.reply()?
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| WireError::Gone)
    }

    fn exec(&self, sql: &str) -> std::result::Result<(), WireError> {
        let sql = sql.to_owned();
        self.call(move |c| c.batch_execute(&sql))
    }

    fn copy_start(&self, sql: String, header: &'static [u8]) -> Result<()> {
        self.send(Job::CopyStart(sql, Bytes::from_static(header)))
    }

    fn copy_data(&self, data: &[u8]) -> Result<()> {
        self.send(Job::CopyData(Bytes::copy_from_slice(data)))
    }

    fn copy_end(&self) -> std::result::Result<u64, WireError> {
        self.send(Job::CopyData(Bytes::from_static(&COPY_TRAILER)))
            .map_err(|_| WireError::Gone)?;
        self.send(Job::CopyEnd).map_err(|_| WireError::Gone)?;
        self.reply()?
            .downcast::<u64>()
            .map(|b| *b)
            .map_err(|_| WireError::Gone)
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which drops the client and so closes the connection.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The connection thread's loop.
fn serve(mut client: Client, jobs: &mpsc::Receiver<Job>, replies: &mpsc::Sender<Reply>) {
    while let Ok(job) = jobs.recv() {
        let reply = match job {
            Job::Run(f) => f(&mut client),
            Job::CopyStart(sql, first) => copy(&mut client, &sql, first, jobs),
            // Out of order (a COPY that failed to start has already replied): nothing to do.
            Job::CopyData(_) | Job::CopyEnd => continue,
        };
        if replies.send(reply).is_err() {
            break;
        }
    }
}

/// Runs one COPY: its data arrives as jobs until `CopyEnd`. Once sending fails the rest is only drained;
/// finishing then reports the server's reason.
fn copy(client: &mut Client, sql: &str, first: Bytes, jobs: &mpsc::Receiver<Job>) -> Reply {
    let mut writer = match client.copy_in(sql) {
        Ok(writer) => Some(writer),
        Err(e) => {
            while let Ok(job) = jobs.recv() {
                if matches!(job, Job::CopyEnd) {
                    break;
                }
            }
            return Err(e);
        }
    };
    let mut failed = writer
        .as_mut()
        .is_some_and(|w| w.write_all(&first).is_err());
    while let Ok(job) = jobs.recv() {
        match job {
            Job::CopyData(data) if !failed => {
                failed = writer.as_mut().is_some_and(|w| w.write_all(&data).is_err());
            }
            Job::CopyEnd => {
                return match writer.take() {
                    Some(w) => w.finish().map(|n| Box::new(n) as Box<dyn Any + Send>),
                    None => Ok(Box::new(0u64)),
                };
            }
            _ => {}
        }
    }
    // The sink went away mid-COPY: dropping the writer aborts it.
    Ok(Box::new(0u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = BytesMut::new();
        numeric_to_binary(text, &mut buf).unwrap();
        match numeric_from_binary(&buf).unwrap() {
            Value::Decimal(d) => d.as_str().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numerics_survive_the_binary_format_exactly() {
        for (input, output) in [
            ("0", "0"),
            ("-0.00", "0.00"),
            ("12.50", "12.50"),
            (
                "-12345678901234567890.123456789",
                "-12345678901234567890.123456789",
            ),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            ("10000", "10000"),
            ("1e3", "1000"),
            ("1.5E-3", "0.0015"),
            ("99999999.99999999", "99999999.99999999"),
        ] {
            assert_eq!(round_trip(input), output, "{input}");
        }
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            redacted("postgres://me:hunter2@db.example:6543/app?sslmode=require"),
            "postgres://me@db.example:6543/app"
        );
        assert_eq!(redacted("not a url"), "postgres://…");
    }
}
