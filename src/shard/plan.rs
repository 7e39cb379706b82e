//! Shard planning, before any shard runs: splits a job into independent shards — one per input file or per
//! part of a split input, by key range of a table (split points found from the data, so that skewed keys
//! still give shards of about equal rows), or by tenant list — and names each file-output shard's own output.
//!
//! ```text
//! job ─► By::Files    (the files given: one shard each)
//!     ├► By::Parts    (the input's manifest: one shard per part)
//!     ├► By::Range    (table + integer key: N-quantiles of the key ─► WHERE key >= a AND key < b)
//!     └► By::Tenants  (the tenant list: N contiguous slices)
//! ```
//!
//! Range bounds are integers the planner read back from the database and formats itself; table and column
//! names are quoted. Nothing a user typed is spliced into SQL.

use std::path::Path;

use super::{KeyRange, Shard, ShardedJob};
use crate::db::{quote_ident, DbEndpoint};
use crate::env::Environment;
use crate::error::{Error, Result, Stage};
use crate::job::{ConvertJob, Job};

/// How to split a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    /// One shard per file, each read with the job's options.
    Files(Vec<String>),
    /// One shard per part of the job's input (a split set's manifest).
    Parts,
    /// N shards by ranges of an integer key column of the input table.
    Range {
        /// The key column.
        column: String,
        /// How many shards.
        shards: usize,
    },
    /// N shards of the job's tenant list.
    Tenants {
        /// How many shards.
        shards: usize,
    },
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The job to split (it may already have shards: they are replaced).
    pub job: Job,
    /// How.
    pub by: By,
    /// The id the ledger will know the job by (default: derived from the plan).
    pub job_id: Option<String>,
}

/// Splits the job as `plan` says. A configuration error when the job cannot be split that way.
pub fn plan(plan: &Plan, env: &Environment) -> Result<ShardedJob> {
    let mut shards = match (&plan.by, &plan.job) {
        (By::Files(files), Job::Convert(_)) => by_files(files)?,
        (By::Parts, Job::Convert(job)) => by_parts(job)?,
        (By::Range { column, shards }, Job::Convert(job)) => by_range(job, column, *shards, env)?,
        (By::Tenants { shards }, Job::Migrate(job)) => by_tenants(job, *shards, env)?,
        (By::Tenants { .. }, _) => {
            return Err(Error::config(
                "--by tenants splits a tenant migration (a migrate job with \"tenant\")",
            ))
        }
        _ => {
            return Err(Error::config(
                "--by files, parts and range split a convert job",
            ))
        }
    };
    if let Job::Convert(job) = &plan.job {
        name_outputs(job, &mut shards, env)?;
    }
    let mut sharded = ShardedJob {
        job: plan.job.clone(),
        job_id: String::new(),
        shards,
    };
    sharded.job_id = match &plan.job_id {
        Some(id) => id.clone(),
        None => super::default_id(&sharded.job, &sharded.shards),
    };
    Ok(sharded)
}

fn by_files(files: &[String]) -> Result<Vec<Shard>> {
    if files.is_empty() {
        return Err(Error::config("--by files needs at least one file"));
    }
    Ok(files
        .iter()
        .map(|file| Shard {
            input: Some(file.clone()),
            estimate: std::fs::metadata(file).ok().map(|m| m.len()),
            ..Shard::default()
        })
        .collect())
}

fn by_parts(job: &ConvertJob) -> Result<Vec<Shard>> {
    let path = Path::new(&job.input);
    if !crate::envelope::split::is_manifest(path) {
        return Err(Error::config(format!(
            "--by parts: the job's input {} is not a split set's manifest (NAME.manifest.json)",
            job.input
        )));
    }
    let set = crate::envelope::manifest::PartSet::open(path)?;
    Ok((0..set.len())
        .map(|i| Shard {
            input: Some(set.part_path(i).display().to_string()),
            estimate: Some(set.manifest().parts[i].records),
            ..Shard::default()
        })
        .collect())
}

/// Each file-output shard writes its own part set beside the job's output: `out.ndjson` → shard 3 writes
/// `out.shard-00003-00001.ndjson` … and `out.shard-00003.manifest.json`.
fn name_outputs(job: &ConvertJob, shards: &mut [Shard], env: &Environment) -> Result<()> {
    if DbEndpoint::parse(&job.output, env)?.is_some() {
        return Ok(());
    }
    if job.output == "-" {
        return Err(Error::config(
            "a sharded job cannot write to standard output: give it an output file (each shard writes its own parts)",
        ));
    }
    for (index, shard) in shards.iter_mut().enumerate() {
        shard.output = Some(
            super::finish::shard_output(Path::new(&job.output), index)
                .display()
                .to_string(),
        );
    }
    Ok(())
}

/// Splits the input table by its key: the N-quantiles of the key are the bounds, so every shard holds about
/// the same number of rows however the keys are spread (rows with a NULL key go to the first shard).
fn by_range(
    job: &ConvertJob,
    column: &str,
    shards: usize,
    env: &Environment,
) -> Result<Vec<Shard>> {
    let endpoint = DbEndpoint::parse(&job.input, env)?
        .filter(|e| e.table.is_some())
        .ok_or_else(|| {
            Error::config(format!(
                "--by range:{column} splits a table: the job's input must be a database URL with ?table= (it is {})",
                crate::Endpoint::shown(&job.input, env)
            ))
        })?;
    if shards == 0 {
        return Err(Error::config("--shards must be at least 1"));
    }
    let table = endpoint.table.clone().unwrap_or_default();
    let quoted = match endpoint.database.name {
        "sqlite" => quote_ident(&table),
        _ => crate::db::postgres::qualified_name(&table),
    };
    let key = quote_ident(column);
    let (points, rows) = split_points(&endpoint, &job.connect, &quoted, &key, shards)?;
    let mut bounds: Vec<i64> = points;
    bounds.dedup();
    let per_shard = rows / shards as u64;
    let mut out = Vec::new();
    // Bounds: from(None) .. p1, p1 .. p2, …, p_last .. to(None).
    let mut from: Option<i64> = None;
    for to in bounds.iter().copied().map(Some).chain([None]) {
        if from.is_some() && from == to {
            continue;
        }
        let mut conditions = Vec::new();
        if let Some(a) = from {
            conditions.push(format!("{key} >= {a}"));
        }
        if let Some(b) = to {
            conditions.push(format!("{key} < {b}"));
        }
        let mut condition = conditions.join(" AND ");
        if from.is_none() {
            // The first shard also takes the rows without a key, so every row is in exactly one shard.
            condition = match condition.is_empty() {
                true => "TRUE".into(),
                false => format!("({condition}) OR {key} IS NULL"),
            };
        }
        let query = format!("SELECT * FROM {quoted} WHERE {condition}");
        out.push(Shard {
            input: Some(with_query(&endpoint, &query)),
            range: Some(KeyRange {
                column: column.to_owned(),
                from,
                to,
            }),
            estimate: Some(per_shard),
            ..Shard::default()
        });
        from = to;
    }
    Ok(out)
}

/// The `shards - 1` inner N-quantiles of the key, and the table's row count. PostgreSQL computes them with
/// `percentile_disc`; SQLite reads the key at each quantile's offset in key order.
fn split_points(
    endpoint: &DbEndpoint,
    connect: &crate::db::ConnectOptions,
    table: &str,
    key: &str,
    shards: usize,
) -> Result<(Vec<i64>, u64)> {
    let fractions: Vec<f64> = (1..shards).map(|k| k as f64 / shards as f64).collect();
    let shown = endpoint.to_string();
    if endpoint.database.name == "sqlite" {
        let fail = |e| crate::db::sqlite::sql_error(Stage::Source, &shown, "cannot plan shards", e);
        let conn = rusqlite::Connection::open_with_flags(
            endpoint.connection(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .map_err(fail)?;
        let rows: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE {key} IS NOT NULL"),
                [],
                |r| r.get(0),
            )
            .map_err(fail)?;
        let mut points = Vec::new();
        let mut statement = conn
            .prepare(&format!(
                "SELECT {key} FROM {table} WHERE {key} IS NOT NULL ORDER BY {key} LIMIT 1 OFFSET ?1"
            ))
            .map_err(fail)?;
        for f in &fractions {
            let offset = ((rows as f64) * f).floor() as i64;
            if offset >= rows {
                continue;
            }
            let value: rusqlite::types::Value =
                statement.query_row([offset], |r| r.get(0)).map_err(fail)?;
            match value {
                rusqlite::types::Value::Integer(v) => points.push(v),
                other => return Err(not_integer(key, &format!("{:?}", other.data_type()))),
            }
        }
        return Ok((points, rows as u64));
    }
    let mut client = crate::db::postgres::connect(endpoint, connect, Stage::Source)?;
    let fail = |e: postgres::Error| {
        crate::db::postgres::pg_error(Stage::Source, &format!("{shown}: cannot plan shards"), &e)
    };
    let kind: Option<String> = client
        .query_opt(
            &format!("SELECT pg_typeof({key})::text FROM {table} WHERE {key} IS NOT NULL LIMIT 1"),
            &[],
        )
        .map_err(fail)?
        .map(|r| r.get(0));
    let Some(kind) = kind else {
        // No keys at all: one shard takes the table.
        return Ok((Vec::new(), 0));
    };
    if !["smallint", "integer", "bigint"].contains(&kind.as_str()) {
        return Err(not_integer(key, &kind));
    }
    let row = client
        .query_one(
            &format!(
                "SELECT count({key}), percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY {key}::bigint) \
                 FROM {table}"
            ),
            &[&fractions],
        )
        .map_err(fail)?;
    let rows: i64 = row.get(0);
    let points: Option<Vec<Option<i64>>> = row.get(1);
    Ok((
        points.unwrap_or_default().into_iter().flatten().collect(),
        rows as u64,
    ))
}

fn not_integer(key: &str, kind: &str) -> Error {
    Error::config(format!(
        "--by range:{}: key-range shards need an integer key column, and this one holds {kind}; \
         shard by files, parts or tenants, or by another column",
        key.trim_matches('"')
    ))
}

/// The input URL of one range: the job's database (without its password) with `?query=`.
fn with_query(endpoint: &DbEndpoint, query: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC);
    if endpoint.database.name == "sqlite" {
        return format!("sqlite://{}?query={encoded}", endpoint.connection());
    }
    let base = crate::migrate::state::without_password(endpoint.connection());
    let join = if base.contains('?') { '&' } else { '?' };
    format!("{base}{join}query={encoded}")
}

/// Splits the tenant list into `shards` contiguous slices of (almost) equal length.
fn by_tenants(
    job: &crate::migrate::MigrateJob,
    shards: usize,
    env: &Environment,
) -> Result<Vec<Shard>> {
    let Some(options) = &job.tenant else {
        return Err(Error::config(
            "--by tenants splits a tenant migration (a migrate job with \"tenant\")",
        ));
    };
    if shards == 0 {
        return Err(Error::config("--shards must be at least 1"));
    }
    let tenants: Vec<String> = crate::tenant::listed_tenants(job, options, env)?
        .iter()
        .map(ToString::to_string)
        .collect();
    if tenants.is_empty() {
        return Err(Error::config("the job lists no tenants to shard"));
    }
    let size = tenants.len().div_ceil(shards);
    Ok(tenants
        .chunks(size)
        .map(|chunk| Shard {
            tenants: chunk.to_vec(),
            estimate: Some(chunk.len() as u64),
            ..Shard::default()
        })
        .collect())
}
