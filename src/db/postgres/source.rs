//! PostgreSQL as a source stage: the rows of `?table=` or `?query=` streamed with binary
//! `COPY (SELECT …) TO STDOUT` and typed from the result's column types; types ferry does not decode are
//! read as their text form.

use postgres::types::{FromSql, Kind, Type};
use postgres::Client;

use super::{connect, pg_error};
use crate::db::pgcopy::numeric_text;
use crate::db::{quote_ident, ConnectOptions, DbEndpoint};
use crate::error::{Error, Position, Result, Stage};
use crate::format::Decoder;
use crate::record::{Decimal, Record, Timestamp, Value};

pub(super) fn open_source(
    endpoint: &DbEndpoint,
    options: &ConnectOptions,
) -> Result<Box<dyn Decoder>> {
    let inner = match (&endpoint.table, &endpoint.query) {
        (_, Some(query)) => query.trim().trim_end_matches(';').to_owned(),
        (Some(table), None) => format!("SELECT * FROM {}", super::sink::qualified_name(table)),
        (None, None) => {
            return Err(Error::config(format!(
                "{endpoint}: say what to read with ?table=NAME or ?query=SELECT…"
            )))
        }
    };
    let mut client = connect(endpoint, options, Stage::Source)?;
    // COPY takes no parameters: the query reads its values back with current_setting('ferry.pN').
    for (i, param) in endpoint.params.iter().enumerate() {
        let (name, value) = (format!("ferry.p{}", i + 1), param.text());
        client
            .execute("SELECT set_config($1, $2, false)", &[&name, &value])
            .map_err(|e| pg_error(Stage::Source, &format!("{endpoint}: cannot set {name}"), &e))?;
    }
    // A table or query the server refuses is the job's mistake, found before any record moves.
    let statement = client.prepare(&inner).map_err(|e| {
        Error::config(pg_error(Stage::Source, &format!("{endpoint}: cannot read"), &e).message())
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

type BoxError = Box<dyn std::error::Error + Sync + Send>;

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
    Ok(crate::db::column::uuid_text(&bytes))
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
