//! Incremental conversions (`ferry convert --incremental COL`): planned when the conversion is built,
//! before anything is written. The last run's mark is read (from `_ferry_state` in a database target,
//! from the manifest of a file target), the source's newest cursor value (held back by `--lag`) becomes
//! the run's upper end, and the source's query is narrowed to the rows between them, the values bound as
//! parameters. The pipeline then runs as for any conversion; the new mark is stored only with what the
//! run wrote: in the load's transaction ([`super::mark::PendingMark`]) or in the manifest, written last
//! ([`crate::envelope::split::Continuation`]). `--deletes` runs after the load commits, by the key-ordered
//! merge of `ferry sync` ([`super::pass::by_merge_from`]).
//!
//! Ranges: into a database the range is closed at the mark (`cursor >= mark`): rows sharing the mark's
//! value are read again and overwrite themselves by key, so a row committed later with the mark's own
//! value is not lost. A file set cannot overwrite, so its range is open at the mark (`cursor > mark`):
//! every row sharing a value is read by the same run (the upper end is closed), and `--lag` keeps the
//! newest values for the next run while writers may still commit rows with them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::types::ToSql;
use serde::Serialize;
use serde_json::Value as Json;

use super::apply::Deletes;
use super::mark::{self, PendingMark};
use super::pass::{by_merge_from, Ends};
use super::read::{mark_param, orderable_key, sqlite_json, Param, SyncTable};
use crate::db::{quote_ident, ConnectOptions, DbEndpoint, OnConflict, SinkOptions};
use crate::endpoint::Endpoint;
use crate::env::Environment;
use crate::envelope::manifest::PartSet;
use crate::envelope::split::{Continuation, PartNames};
use crate::envelope::KeyMaterial;
use crate::error::{Error, Result, Stage};
use crate::job::ConvertJob;
use crate::migrate::rows::CopyTable;
use crate::migrate::{Conn, Db};
use crate::observe::RunContext;

/// How far behind the newest cursor value a run stops (`--lag`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lag {
    /// A time (`5s`, `2m`, `1h`, `1d`, `500ms`): for timestamp, date and ISO-time cursors.
    Time(Duration),
    /// A number (`100`): values of an integer cursor; seconds for a time cursor.
    Count(i64),
}

impl std::str::FromStr for Lag {
    type Err = String;

    /// `500ms`, `5s`, `2m`, `1h`, `1d`, or a bare number.
    fn from_str(text: &str) -> std::result::Result<Lag, String> {
        let t = text.trim();
        if let Ok(n) = t.parse::<i64>() {
            return match n >= 0 {
                true => Ok(Lag::Count(n)),
                false => Err(format!("--lag {text}: a lag cannot be negative")),
            };
        }
        let units = [
            ("ms", 0.001),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
            ("d", 86400.0),
        ];
        let (number, scale) = units
            .iter()
            .find_map(|(u, f)| t.strip_suffix(u).map(|n| (n, *f)))
            .ok_or_else(|| {
                format!("--lag {text}: expected a duration (5s, 2m, 1h, 1d) or a number")
            })?;
        match number.trim().parse::<f64>() {
            Ok(n) if n >= 0.0 && n.is_finite() => Ok(Lag::Time(Duration::from_secs_f64(n * scale))),
            _ => Err(format!(
                "--lag {text}: expected a duration (5s, 2m, 1h, 1d) or a number"
            )),
        }
    }
}

/// What kind of values the cursor column holds, which decides how they are compared and lagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Integers (a version, a sequence, Unix seconds).
    Integer,
    /// A PostgreSQL `timestamp`, `timestamptz` or `date` (lagged by the server's clock).
    PgTime,
    /// ISO dates or times as text (SQLite's usual dates): compared as text, so write them in one format.
    IsoText,
}

/// What an incremental run read, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IncrementalReport {
    /// The cursor column.
    pub cursor: String,
    /// The mark the run started from (null: the first run, a full load).
    pub from: Json,
    /// The mark after the run (unchanged when nothing was new).
    pub to: Json,
    /// `--deletes`: target rows whose key has gone from the source (deleted, marked or listed). Not part
    /// of `read = written + rejected + filtered + skipped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// `--deletes list`: the first keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<Json>,
}

/// An incremental run, planned: the range read and where the new mark goes.
#[derive(Debug, Clone)]
pub struct Window {
    report: IncrementalReport,
    /// A file target: the set so far and the run's range.
    continuation: Option<Continuation>,
    /// `--deletes` into a database target.
    deletes: Option<DeleteStep>,
}

/// The deletion pass run after the load.
#[derive(Debug, Clone)]
struct DeleteStep {
    source: DbEndpoint,
    target: DbEndpoint,
    source_table: String,
    target_table: String,
    key: Vec<String>,
    deletes: Deletes,
    connect: ConnectOptions,
}

/// What the run's file output is, to check it against the set it continues.
pub struct OutputHead<'a> {
    /// The record format's name.
    pub format: &'a str,
    /// The compression's name.
    pub compression: &'a str,
    /// The output key, when encrypted.
    pub key: Option<&'a KeyMaterial>,
}

impl Window {
    /// The report's account of the run.
    pub fn report(&self) -> IncrementalReport {
        self.report.clone()
    }

    /// A file target's place in its set.
    pub fn continuation(&self) -> Option<Continuation> {
        self.continuation.clone()
    }

    /// After the load committed: `--deletes`, counted in `report`. Nothing for a dry run.
    pub fn after_load(
        &self,
        report: &mut Option<IncrementalReport>,
        dry_run: bool,
        ctx: &RunContext,
    ) -> Result<()> {
        let (Some(step), false) = (&self.deletes, dry_run) else {
            return Ok(());
        };
        ctx.step("deletes");
        let moved = step.run()?;
        if let Some(r) = report {
            r.deleted = Some(moved.deleted);
            r.listed = moved.listed;
        }
        Ok(())
    }
}

/// Plans an incremental run (see the module's notes) when the job asks for one: narrows `source`'s query
/// to the run's range and gives a database load (`table`) its key, conflict mode and pending mark.
pub fn plan(
    job: &ConvertJob,
    source: &mut Endpoint,
    target: &Endpoint,
    table: Option<&mut SinkOptions>,
    head: OutputHead<'_>,
    env: &Environment,
) -> Result<Option<Window>> {
    let Some(cursor) = job.incremental.clone() else {
        if job.lag.is_some() || job.deletes != Deletes::Ignore {
            return Err(Error::config(
                "--lag and --deletes go with --incremental COLUMN",
            ));
        }
        return Ok(None);
    };
    let Endpoint::Database(db) = source else {
        return Err(Error::config(format!(
            "--incremental reads a database (sqlite://…?table=T or postgres://…?table=T); {} is not one",
            job.input
        )));
    };
    check_job(job, target)?;
    if job.deletes != Deletes::Ignore && (db.query.is_some() || db.table.is_none()) {
        return Err(Error::config(
            "--deletes compares the keys of a source table with the target's: read a ?table=, not a ?query=",
        ));
    }
    let lag = job
        .lag
        .as_deref()
        .map(str::parse::<Lag>)
        .transpose()
        .map_err(Error::config)?;
    let mut conn = database_of(db).open(&job.connect, false)?;
    if let Conn::Sqlite(c) = &conn {
        let _ = c.busy_timeout(Duration::from_secs(30));
    }
    let label = db.to_string();
    let state_source = mark_source(db);
    let from_sql = from_clause(db)?;
    let (kind, pg_type) = describe(&mut conn, &label, &from_sql, &cursor)?;
    let column = quote_ident(&cursor);
    let into_table = table.is_some();
    let old = match (target, &table) {
        (Endpoint::Database(t), Some(options)) => read_mark(
            t,
            &job.connect,
            &state_source,
            &mark_name(&options.table, &cursor),
        )?,
        _ => None,
    };
    let earlier = match target {
        Endpoint::File(path) => earlier_set(path, &cursor, &head)?,
        _ => None,
    };
    let old = old.or_else(|| {
        earlier
            .as_ref()
            .and_then(|m| m.incremental.as_ref())
            .map(|l| l.mark.clone())
    });
    let lower = if into_table { ">=" } else { ">" };
    // The upper end: the newest value past the mark, not newer than the lag allows.
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(mark) = &old {
        conditions.push(format!("{column} {lower} {}", bind(&conn, 1, &pg_type)));
        params.push(mark_param(&conn, mark));
    }
    if let Some(lag) = lag {
        let (condition, param) = lag_bound(
            &mut conn,
            &label,
            &from_sql,
            &cursor,
            kind,
            &pg_type,
            lag,
            params.len() + 1,
        )?;
        conditions.push(condition);
        params.extend(param);
    }
    let upper = newest(&mut conn, &label, &from_sql, &column, &conditions, &params)?;
    let ph = |n: usize| placeholder(&conn, n, &pg_type);
    // The rows: past the mark (or all, with rows without a cursor, on the first run), up to the upper end.
    let mut read = Vec::new();
    let mut read_params = Vec::new();
    match (&old, &upper) {
        (Some(_), None) => read.push("1 = 0".to_owned()),
        (Some(mark), Some(up)) => {
            read.push(format!("{column} {lower} {}", ph(1)));
            read.push(format!("{column} <= {}", ph(2)));
            read_params.extend([mark_param(&conn, mark), mark_param(&conn, up)]);
        }
        (None, Some(up)) => {
            read.push(format!("({column} <= {} OR {column} IS NULL)", ph(1)));
            read_params.push(mark_param(&conn, up));
        }
        (None, None) => read.push(format!("{column} IS NULL")),
    }
    let order = if into_table {
        String::new()
    } else {
        format!(" ORDER BY {column}")
    };
    db.query = Some(format!(
        "SELECT * FROM {from_sql} WHERE {}{order}",
        read.join(" AND ")
    ));
    db.params = read_params;
    let new_mark = upper.clone().or_else(|| old.clone());
    let mut window = Window {
        report: IncrementalReport {
            cursor: cursor.clone(),
            from: old.clone().unwrap_or(Json::Null),
            to: new_mark.clone().unwrap_or(Json::Null),
            ..IncrementalReport::default()
        },
        continuation: None,
        deletes: None,
    };
    match (target, table) {
        (Endpoint::Database(t), Some(options)) => {
            let pending = new_mark.map(|mark| PendingMark {
                source: state_source,
                table: mark_name(&options.table, &cursor),
                mark,
                crash_before_commit: env.get("FERRY_CRASH_AT") == Some("convert-loaded"),
            });
            load_options(job, db, t, options, pending, &mut conn, &label)?;
            if job.deletes != Deletes::Ignore {
                window.deletes = Some(DeleteStep {
                    source: db.clone(),
                    target: t.clone(),
                    source_table: db.table.clone().unwrap_or_default(),
                    target_table: options.table.clone(),
                    key: options.key.clone(),
                    deletes: job.deletes.clone(),
                    connect: job.connect,
                });
            }
        }
        _ => {
            window.continuation = Some(Continuation {
                earlier,
                cursor,
                from: old.unwrap_or(Json::Null),
                to: new_mark.unwrap_or(Json::Null),
            });
        }
    }
    Ok(Some(window))
}

/// The options that do not go with `--incremental`, and the targets it cannot add to.
fn check_job(job: &ConvertJob, target: &Endpoint) -> Result<()> {
    if matches!(target, Endpoint::Stdio) {
        return Err(Error::config(
            "--incremental adds to its output run after run: give a file or a database, not -",
        ));
    }
    if job.limit.is_some() || job.resume_after.is_some() {
        return Err(Error::config(
            "--limit and --resume do not go with --incremental: the mark would pass rows that were not read",
        ));
    }
    if job.deletes != Deletes::Ignore && !matches!(target, Endpoint::Database(_)) {
        return Err(Error::config(
            "--deletes applies to a database target (a file set only grows)",
        ));
    }
    Ok(())
}

/// The database of an endpoint (without its table or query), to open a connection of ferry's own.
fn database_of(db: &DbEndpoint) -> Db {
    match db.database.name {
        "sqlite" => Db::Sqlite(PathBuf::from(db.connection())),
        _ => Db::Postgres(db.database_only()),
    }
}

/// What the run reads from: the table, or the query as a subquery.
fn from_clause(db: &DbEndpoint) -> Result<String> {
    match (&db.table, &db.query) {
        (_, Some(q)) => Ok(format!(
            "({}) AS _ferry_window",
            q.trim().trim_end_matches(';')
        )),
        (Some(t), None) if db.database.name == "sqlite" => Ok(quote_ident(t)),
        (Some(t), None) => Ok(crate::db::postgres::qualified_name(t)),
        (None, None) => Err(Error::config(format!(
            "{db}: say what to read with ?table=NAME or ?query=SELECT…"
        ))),
    }
}

/// `_ferry_state`'s name for the source: the database and its table, or a digest of its query.
fn mark_source(db: &DbEndpoint) -> String {
    let base = db.database_only();
    match (&db.table, &db.query) {
        (_, Some(q)) => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(q.as_bytes());
            format!(
                "{base}?query-sha256={}",
                crate::envelope::split::hex(&digest[..8])
            )
        }
        (Some(t), None) => format!("{base}?table={t}"),
        (None, None) => base.to_string(),
    }
}

/// `_ferry_state`'s name for what the mark is of.
fn mark_name(target_table: &str, cursor: &str) -> String {
    format!("convert:{target_table}:{cursor}")
}

fn source_error<'a>(label: &'a str, what: &str) -> impl Fn(rusqlite::Error) -> Error + 'a {
    let what = what.to_owned();
    move |e| crate::db::sqlite::sql_error(Stage::Source, label, &what, e)
}

fn pg_source_error(label: &str, what: &str) -> impl Fn(postgres::Error) -> Error {
    let what = format!("{label}: {what}");
    move |e| crate::db::postgres::pg_error(Stage::Source, &what, &e)
}

/// The cursor column's kind (and PostgreSQL type name), or an error naming it.
fn describe(conn: &mut Conn, label: &str, from: &str, cursor: &str) -> Result<(Kind, String)> {
    let sql = format!("SELECT * FROM {from} LIMIT 0");
    let columns: Vec<(String, String)> = match conn {
        Conn::Sqlite(c) => {
            let s = c
                .prepare(&sql)
                .map_err(|e| Error::config(format!("{label}: cannot read it: {e}")))?;
            s.columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.decl_type().unwrap_or("").to_owned()))
                .collect()
        }
        Conn::Postgres(c) => {
            let s = c.prepare(&sql).map_err(|e| {
                Error::config(
                    crate::db::postgres::pg_error(
                        Stage::Source,
                        &format!("{label}: cannot read"),
                        &e,
                    )
                    .message(),
                )
            })?;
            s.columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_().name().to_owned()))
                .collect()
        }
    };
    let Some((_, ty)) = columns.iter().find(|(n, _)| n == cursor) else {
        let names: Vec<String> = columns.iter().map(|(n, _)| quote_ident(n)).collect();
        return Err(Error::config(format!(
            "--incremental {cursor}: {label} has no column {} (its columns: {})",
            quote_ident(cursor),
            names.join(", ")
        )));
    };
    let unfit = || {
        Error::config(format!(
            "--incremental {cursor}: column {} of {label} is of type {ty}; a cursor is an integer, timestamp, date or ISO-time text column",
            quote_ident(cursor)
        ))
    };
    let kind = match conn {
        Conn::Postgres(_) => match ty.as_str() {
            "int2" | "int4" | "int8" => Kind::Integer,
            "timestamp" | "timestamptz" | "date" => Kind::PgTime,
            "text" | "varchar" | "bpchar" => Kind::IsoText,
            _ => return Err(unfit()),
        },
        Conn::Sqlite(_) => {
            let upper = ty.to_ascii_uppercase();
            if upper.contains("INT") {
                Kind::Integer
            } else if ["REAL", "FLOA", "DOUB", "BLOB", "BOOL", "NUMERIC", "DECIMAL"]
                .iter()
                .any(|t| upper.contains(t))
            {
                return Err(unfit());
            } else {
                // Dates and times are text in SQLite (or, untyped, whatever was stored): decided by the values.
                Kind::IsoText
            }
        }
    };
    let kind = match (kind, &*conn) {
        (Kind::IsoText, _) | (Kind::Integer, Conn::Sqlite(_)) => {
            check_values(conn, label, from, cursor, kind)?
        }
        _ => kind,
    };
    Ok((kind, ty.clone()))
}

/// Looks at the newest value of a SQLite or text cursor (SQLite's declared types say little about what a
/// column holds): integers make an integer cursor; text must be an ISO date or time.
fn check_values(
    conn: &mut Conn,
    label: &str,
    from: &str,
    cursor: &str,
    kind: Kind,
) -> Result<Kind> {
    let sql = format!("SELECT max({}) FROM {from}", quote_ident(cursor));
    let newest = max_value(conn, label, &sql, &[])?;
    let bad = |shown: String| {
        Error::config(format!(
            "--incremental {cursor}: column {} of {label} holds {shown}, which is not an integer or an ISO date or time",
            quote_ident(cursor)
        ))
    };
    match (&newest, &*conn) {
        (None, _) => Ok(kind),
        (Some(Json::Number(n)), Conn::Sqlite(_)) if n.is_i64() => Ok(Kind::Integer),
        (Some(Json::String(s)), _) if iso_time(s) => Ok(Kind::IsoText),
        (Some(Json::String(s)), _) => Err(bad(format!("{s:?}"))),
        (Some(v), _) => Err(bad(v.to_string())),
    }
}

/// True for `2024-05-01`, `2024-05-01T10:00:00`, `2024-05-01 10:00:00.5`, with or without a zone.
fn iso_time(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%d %H:%M",
        ]
        .iter()
        .any(|f| chrono::NaiveDateTime::parse_from_str(s, f).is_ok())
        || ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"]
            .iter()
            .any(|f| chrono::DateTime::parse_from_str(s, f).is_ok())
}

/// The `n`-th placeholder: `?n` on SQLite; on PostgreSQL the setting the reading connection gets
/// ([`DbEndpoint::params`]), cast to the cursor's type.
fn placeholder(conn: &Conn, n: usize, pg_type: &str) -> String {
    match conn {
        Conn::Sqlite(_) => format!("?{n}"),
        Conn::Postgres(_) => format!("(current_setting('ferry.p{n}'))::{pg_type}"),
    }
}

/// The `n`-th parameter of a statement ferry runs itself: `?n`, or `($n::text)::type`.
fn bind(conn: &Conn, n: usize, pg_type: &str) -> String {
    match conn {
        Conn::Sqlite(_) => format!("?{n}"),
        Conn::Postgres(_) => format!("(${n}::text)::{pg_type}"),
    }
}

/// The condition that keeps rows older than the lag, and its parameter.
#[allow(clippy::too_many_arguments)]
fn lag_bound(
    conn: &mut Conn,
    label: &str,
    from: &str,
    cursor: &str,
    kind: Kind,
    pg_type: &str,
    lag: Lag,
    n: usize,
) -> Result<(String, Option<Param>)> {
    let column = quote_ident(cursor);
    let seconds = match lag {
        Lag::Time(d) => d.as_secs_f64(),
        Lag::Count(c) => c as f64,
    };
    match (kind, lag) {
        (Kind::Integer, Lag::Time(_)) => Err(Error::config(format!(
            "--lag {seconds}s: cursor {} is an integer; give the lag as a number of values (--lag 100)",
            quote_ident(cursor)
        ))),
        (Kind::Integer, Lag::Count(c)) => {
            let sql = format!("SELECT max({column}) FROM {from}");
            let newest = max_value(conn, label, &sql, &[])?;
            let newest = newest.as_ref().and_then(json_i64).unwrap_or(0);
            let bound = newest.saturating_sub(c);
            let param = match conn {
                Conn::Sqlite(_) => Param::Sqlite(rusqlite::types::Value::Integer(bound)),
                Conn::Postgres(_) => Param::Pg(bound.to_string()),
            };
            Ok((format!("{column} <= {}", bind(conn, n, pg_type)), Some(param)))
        }
        (Kind::PgTime, _) => Ok((
            format!("{column} <= (now() - (${n}::text)::interval)::{pg_type}"),
            Some(Param::Pg(format!("{seconds:.3} seconds"))),
        )),
        (Kind::IsoText, _) => {
            // Text compares as text: the bound is written in the newest value's own form.
            let sql = format!("SELECT max({column}) FROM {from}");
            let sample = max_value(conn, label, &sql, &[])?;
            let sample = sample.as_ref().and_then(Json::as_str).unwrap_or("0000-00-00T00:00:00");
            let at = chrono::Utc::now() - chrono::Duration::milliseconds((seconds * 1000.0) as i64);
            let text = iso_like(sample, at);
            let param = match conn {
                Conn::Sqlite(_) => Param::Sqlite(rusqlite::types::Value::Text(text)),
                Conn::Postgres(_) => Param::Pg(text),
            };
            Ok((format!("{column} <= {}", bind(conn, n, pg_type)), Some(param)))
        }
    }
}

/// `at` written like `sample`: a date, or a date and time with `T` or a space, with `Z` or `+00:00` when
/// the sample has one (ISO-text cursors are taken to be UTC).
fn iso_like(sample: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    if sample.len() == 10 {
        return at.format("%Y-%m-%d").to_string();
    }
    let sep = if sample.as_bytes().get(10) == Some(&b' ') {
        ' '
    } else {
        'T'
    };
    let mut out = at.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string();
    if sample.ends_with('Z') {
        out.push('Z');
    } else if sample.ends_with("+00:00") {
        out.push_str("+00:00");
    }
    out
}

fn json_i64(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64(),
        Json::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The newest cursor value under `conditions`: as stored on SQLite, as text on PostgreSQL.
fn newest(
    conn: &mut Conn,
    label: &str,
    from: &str,
    column: &str,
    conditions: &[String],
    params: &[Param],
) -> Result<Option<Json>> {
    let mut sql = format!("SELECT max({column}) FROM {from}");
    if !conditions.is_empty() {
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    max_value(conn, label, &sql, params)
}

/// Runs a `SELECT max(…)`; the value as stored (SQLite) or as text (PostgreSQL).
fn max_value(conn: &mut Conn, label: &str, sql: &str, params: &[Param]) -> Result<Option<Json>> {
    let what = "reading the newest cursor value";
    match conn {
        Conn::Sqlite(c) => {
            let values: Vec<rusqlite::types::Value> =
                params.iter().map(Param::sqlite_value).collect();
            let v = c
                .query_row(sql, rusqlite::params_from_iter(values), |r| {
                    Ok(sqlite_json(r.get_ref(0)?))
                })
                .map_err(source_error(label, what))?;
            Ok(Some(v).filter(|v| !v.is_null()))
        }
        Conn::Postgres(c) => {
            let sql = format!("SELECT ({})::text", sql);
            let texts: Vec<String> = params.iter().map(Param::text).collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
            let row = c
                .query_one(&sql, &refs)
                .map_err(pg_source_error(label, what))?;
            let v: Option<String> = row.get(0);
            Ok(v.map(Json::String))
        }
    }
}

/// The mark a committed load left in the target, if any.
fn read_mark(
    target: &DbEndpoint,
    connect: &ConnectOptions,
    source: &str,
    name: &str,
) -> Result<Option<Json>> {
    let db = database_of(target);
    if let Db::Sqlite(path) = &db {
        if !path.exists() {
            return Ok(None);
        }
    }
    let mut conn = db.open(connect, false)?;
    if conn
        .existing_tables(&[mark::STATE_TABLE.to_owned()])?
        .is_empty()
    {
        return Ok(None);
    }
    mark::read(&mut conn, source, name)
}

/// The set a file target's earlier runs wrote (authenticated when encrypted), or none yet.
fn earlier_set(
    path: &Path,
    cursor: &str,
    head: &OutputHead<'_>,
) -> Result<Option<crate::envelope::split::Manifest>> {
    let manifest = PartNames::new(path, crate::pipeline::is_envelope_extension).manifest();
    if !manifest.exists() {
        return Ok(None);
    }
    let set = PartSet::open(&manifest)?;
    let m = set.manifest().clone();
    let shown = manifest.display();
    let Some(log) = &m.incremental else {
        return Err(Error::config(format!(
            "{shown} is not an incremental set (it has no cursor mark): write the incremental runs under another name"
        )));
    };
    if log.cursor != cursor {
        return Err(Error::config(format!(
            "{shown}: its runs follow cursor {}, not {}; write under another name to follow another column",
            quote_ident(&log.cursor),
            quote_ident(cursor)
        )));
    }
    let this = (head.format, head.compression, head.key.is_some());
    let that = (
        m.head.format.as_str(),
        m.head.compression.as_str(),
        m.head.encryption.is_some(),
    );
    if this != that {
        return Err(Error::config(format!(
            "{shown}: the set's parts are {} ({}{}); this run would write {} ({}{}): keep the output's name and envelope, or start a new set",
            that.0, that.1, if that.2 { ", encrypted" } else { "" },
            this.0, this.1, if this.2 { ", encrypted" } else { "" },
        )));
    }
    if let Some(key) = head.key {
        // The new manifest is sealed under this key: the old one must be authentic first.
        set.authenticate(key)?;
    }
    Ok(Some(m))
}

/// A database load's options for an incremental run: upsert by key, the mark written with the rows.
fn load_options(
    job: &ConvertJob,
    source: &DbEndpoint,
    target: &DbEndpoint,
    options: &mut SinkOptions,
    mark: Option<PendingMark>,
    conn: &mut Conn,
    label: &str,
) -> Result<()> {
    if options.on_conflict == OnConflict::Error {
        // Rows at the mark are read again: they must overwrite themselves.
        options.on_conflict = OnConflict::Overwrite;
    }
    if options.key.is_empty() && !target_has_table(target, &job.connect, &options.table)? {
        // A table the first run creates gets the source table's primary key, for later runs' upserts.
        if let Some(t) = &source.table {
            options.key = source_key(conn, label, t)?;
        }
    }
    options.mark = mark;
    Ok(())
}

fn target_has_table(target: &DbEndpoint, connect: &ConnectOptions, table: &str) -> Result<bool> {
    let db = database_of(target);
    if let Db::Sqlite(path) = &db {
        if !path.exists() {
            return Ok(false);
        }
    }
    let mut conn = db.open(connect, false)?;
    Ok(!conn.existing_tables(&[table.to_owned()])?.is_empty())
}

/// The source table as the migration plans it (columns, types, primary key).
fn planned(conn: &mut Conn, label: &str, table: &str) -> Result<crate::migrate::plan::PlanTable> {
    let rules = crate::migrate::load_rules(None)?;
    let plan = crate::migrate::build_plan(conn, label, &rules, &[table.to_owned()], &[], 1)?;
    plan.tables
        .into_iter()
        .next()
        .ok_or_else(|| Error::config(format!("{label}: no table {}", quote_ident(table))))
}

fn source_key(conn: &mut Conn, label: &str, table: &str) -> Result<Vec<String>> {
    Ok(planned(conn, label, table)?.primary_key)
}

impl DeleteStep {
    /// The key-ordered merge of both sides; target rows whose key has gone are deleted, marked or listed,
    /// in one transaction.
    fn run(&self) -> Result<super::pass::Moved> {
        let source_db = database_of(&self.source);
        let source_label = self.source.to_string();
        let target_label = self.target.to_string();
        let mut source = source_db.open(&self.connect, false)?;
        let planned = planned(&mut source, &source_label, &self.source_table)?;
        let mut copy = CopyTable::from_plan(&planned);
        let names = match self.key.is_empty() {
            true => planned.primary_key.clone(),
            false => self.key.clone(),
        };
        let key: Vec<usize> = names
            .iter()
            .filter_map(|k| copy.columns.iter().position(|(c, _)| c == k))
            .collect();
        if key.is_empty() || key.len() != names.len() {
            return Err(Error::config(format!(
                "--deletes matches rows by key, and {} of {source_label} has no primary key (give --key)",
                quote_ident(&self.source_table)
            )));
        }
        if let Some(&i) = key.iter().find(|&&i| !orderable_key(&copy.columns[i].1)) {
            return Err(Error::config(format!(
                "--deletes reads keys in order: key column {} is of type {} (integer or text keys)",
                quote_ident(&copy.columns[i].0),
                copy.columns[i].1.sql()
            )));
        }
        copy.name = self.target_table.clone();
        let table = SyncTable {
            copy,
            key,
            cursor: None,
        };
        let mut target = database_of(&self.target).open(&self.connect, true)?;
        target
            .begin()
            .map_err(|r| r.error(&target_label, "BEGIN"))?;
        let mut ends = Ends {
            source: &mut source,
            target: &mut target,
            source_label: &source_label,
            target_label: &target_label,
        };
        let moved = by_merge_from(
            &mut ends,
            &table,
            &self.source_table,
            0,
            self.deletes.clone(),
            true,
        );
        match moved {
            Ok(moved) => {
                target
                    .exec("COMMIT")
                    .map_err(|r| r.error(&target_label, "COMMIT"))?;
                Ok(moved)
            }
            Err(e) => {
                target.rollback();
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_parse_as_times_or_counts() {
        assert_eq!("5s".parse::<Lag>(), Ok(Lag::Time(Duration::from_secs(5))));
        assert_eq!("2m".parse::<Lag>(), Ok(Lag::Time(Duration::from_secs(120))));
        assert_eq!(
            "1d".parse::<Lag>(),
            Ok(Lag::Time(Duration::from_secs(86_400)))
        );
        assert_eq!(
            "500ms".parse::<Lag>(),
            Ok(Lag::Time(Duration::from_millis(500)))
        );
        assert_eq!("100".parse::<Lag>(), Ok(Lag::Count(100)));
        assert!("-3".parse::<Lag>().is_err());
        assert!("soon".parse::<Lag>().is_err());
    }

    #[test]
    fn iso_text_bounds_follow_the_values_form() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:11:12Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(iso_like("2024-01-01", at), "2026-12-06");
        assert_eq!(iso_like("2024-01-01 00:00:00", at), "2026-12-06 10:11:12");
        assert_eq!(
            iso_like("2024-01-01T00:00:00.123Z", at),
            "2026-12-06T10:11:12Z"
        );
        assert!(iso_time("2024-01-01T00:00:00Z") && iso_time("2024-01-01 10:00:00.5"));
        assert!(!iso_time("yesterday") && !iso_time("12"));
    }
}
