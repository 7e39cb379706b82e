//! Sharded runs, beside the pipeline rather than inside it: a job file split into independent shards
//! ([`plan`]: by input file or manifest part, by key range of a table, or by tenant list), each run by its own
//! `ferry run job.json --shard I` process — on one machine with `xargs -P`, or one pod per index of a
//! Kubernetes Indexed Job — and proved complete by the target's [`ledger`] (databases) or by each shard's own
//! part set, merged at the end ([`finish`]).
//!
//! ```text
//! job.json ─► plan-shards ─► job.json + "shards": [...] ─► run --shard 0 ─► convert (input/output of shard 0)
//!                                                      ├─► run --shard 1 ─►   rows + ledger row: one commit
//!                                                      └─► …
//! shards status job.json ◄─ ledger rows / shard manifests ─► shards finish job.json (one manifest)
//! ```
//!
//! A shard is an ordinary job with a few fields replaced; the runs are the engine's own. ferry has no
//! scheduler: whatever starts processes (a shell, GNU parallel, Kubernetes) starts the shards, and retries them.

pub mod finish;
pub mod ledger;
pub mod plan;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::job::{ConvertJob, Job, JobReport};
use crate::observe::{Failed, RunContext, RunResult};
use crate::report::Counts;

pub use finish::{finish, Finished};
pub use ledger::{Entry, Ledger, Row};
pub use plan::{plan, By, Plan};

/// One shard: what it changes in the job it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shard {
    /// A convert job's input for this shard (a file, a manifest part, or a database query of a key range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// A convert job's output for this shard, when the output is a file: the shard writes its own part set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A tenant migration's tenants for this shard (`users:123`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// The key range this shard reads, `[from, to)` (`to` absent: to the end), for people reading the plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<KeyRange>,
    /// Rows (or bytes, for files) the plan expected this shard to hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
}

/// A key range of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRange {
    /// The key column.
    pub column: String,
    /// The first key of the range (absent: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    /// The first key after the range (absent: to the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

/// A job file with shards: the job as it would run unsharded, its id, and its shards. In the file, the id
/// and the shards are two more top-level fields: `{"job": "convert", …, "job_id": …, "shards": [{…}, …]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardedJob {
    /// The whole job.
    pub job: Job,
    /// The id the ledger knows the job by.
    pub job_id: String,
    /// The shards, in order; `--shard I` runs `shards[I]`.
    pub shards: Vec<Shard>,
}

/// How a shard's run ended, when it did not fail.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per run: its size does not matter
pub enum Outcome {
    /// An earlier attempt committed the shard; nothing was run. The text says where that is recorded.
    AlreadyDone(String),
    /// The shard ran.
    Ran(JobReport),
}

impl ShardedJob {
    /// Reads a job file. A file without `shards` is a job with none (an error for `--shard`, not here).
    pub fn from_json(text: &str) -> Result<ShardedJob> {
        let bad = |e: serde_json::Error| Error::config(format!("not a ferry job: {e}"));
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
        let (shards, job_id) = match value.as_object_mut() {
            Some(fields) => (fields.remove("shards"), fields.remove("job_id")),
            None => (None, None),
        };
        let job: Job = serde_json::from_value(value).map_err(bad)?;
        let shards: Vec<Shard> = match shards {
            Some(list) => serde_json::from_value(list)
                .map_err(|e| Error::config(format!("the job's \"shards\": {e}")))?,
            None => Vec::new(),
        };
        let job_id = match job_id {
            Some(serde_json::Value::String(id)) if !id.trim().is_empty() => id,
            Some(_) => {
                return Err(Error::config(
                    "the job's \"job_id\" must be a non-empty string",
                ))
            }
            None => default_id(&job, &shards),
        };
        Ok(ShardedJob {
            job,
            job_id,
            shards,
        })
    }

    /// Reads a job file from `path`.
    pub fn read(path: &Path) -> Result<ShardedJob> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read the job file {shown}: {e}")))?;
        ShardedJob::from_json(&text).map_err(|e| Error::config(format!("{shown}: {}", e.message())))
    }

    /// The job file's text: the job's fields, then `job_id` and `shards` (no password anywhere).
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.job).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields.insert("job_id".into(), self.job_id.clone().into());
            fields.insert(
                "shards".into(),
                serde_json::to_value(&self.shards).unwrap_or_default(),
            );
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Shard `index`, or a usage error naming the valid ones.
    pub fn shard(&self, index: usize) -> Result<&Shard> {
        match self.shards.len() {
            0 => Err(Error::usage(
                "the job has no shards: split it with `ferry plan-shards JOB --shards N` first",
            )),
            n => self.shards.get(index).ok_or_else(|| {
                Error::usage(format!(
                    "--shard {index}: the job has {n} shards, numbered 0 to {}",
                    n - 1
                ))
            }),
        }
    }

    /// The job shard `index` runs: the whole job with the shard's input, output or tenants.
    pub fn job_of(&self, index: usize) -> Result<Job> {
        let shard = self.shard(index)?;
        let mut job = self.job.clone();
        match &mut job {
            Job::Convert(convert) => {
                if let Some(input) = &shard.input {
                    convert.input = input.clone();
                }
                if let Some(output) = &shard.output {
                    convert.output = output.clone();
                    // A file-output shard always writes a part set: its manifest says it is done.
                    if !convert.split.splits() {
                        convert.split.max_records = Some(u64::MAX);
                    }
                }
            }
            Job::Migrate(migrate) if !shard.tenants.is_empty() => {
                let Some(tenant) = &mut migrate.tenant else {
                    return Err(Error::config(
                        "a shard lists tenants, but the job is not a tenant migration",
                    ));
                };
                // The runner writes the shard's tenants to a file the job reads (see `run`).
                tenant.tenant = None;
            }
            _ => {
                return Err(Error::config(
                    "only convert jobs and tenant migrations can be sharded",
                ))
            }
        }
        Ok(job)
    }

    /// The ledger row shard `index` writes (its counts filled in by the run).
    pub fn entry(&self, index: usize) -> Result<Entry> {
        let job = self.job_of(index)?;
        let shard = self.shard(index)?;
        let text = serde_json::to_string(&(&job, shard)).unwrap_or_default();
        Ok(Entry {
            job_id: self.job_id.clone(),
            shard: index as u32,
            shards: self.shards.len() as u32,
            checksum: hex(&Sha256::digest(text.as_bytes())),
            counts: Counts::default(),
        })
    }

    /// Where shard `index` keeps its proof of completion: a database's ledger, or its part set's manifest.
    pub fn target(&self, index: usize, env: &Environment) -> Result<Target> {
        match self.job_of(index)? {
            Job::Convert(job) => Target::of(&job.output, job.connect, env),
            Job::Migrate(job) => {
                let to = job.to.clone().unwrap_or_else(|| "postgres".into());
                Target::of(&to, job.connect, env)
            }
            _ => Err(Error::config(
                "only convert jobs and tenant migrations can be sharded",
            )),
        }
    }

    /// Runs shard `index`: nothing when the target says an earlier attempt committed it, else the shard's
    /// job, whose database load commits the shard's ledger row with its rows. A failed attempt is noted in
    /// the ledger as failed (its rows were rolled back).
    pub fn run(&self, index: usize, env: &Environment, ctx: &RunContext) -> RunResult<Outcome> {
        let refused = |error: Error| {
            Box::new(Failed {
                report: Outcome::AlreadyDone(String::new()),
                error,
            })
        };
        let job = self.job_of(index).map_err(refused)?;
        let entry = self.entry(index).map_err(refused)?;
        let mut target = self.target(index, env).map_err(refused)?;
        if let Some(done) = target.done(&entry).map_err(refused)? {
            return Ok(Outcome::AlreadyDone(done));
        }
        let result = match &job {
            Job::Convert(convert) => run_convert(convert, entry.clone(), env, ctx),
            Job::Migrate(_) => self.run_tenants(index, job.clone(), &mut target, &entry, env, ctx),
            _ => unreachable_job(),
        };
        match result {
            Ok(report) => Ok(Outcome::Ran(report)),
            Err(failed) => {
                let mut noted = entry;
                noted.counts = counts_of(&failed.report);
                if !failed.error.is_cancelled() {
                    // Best effort: the run's own error is what the caller needs to see.
                    let _ = target.record_failure(&noted, &failed.error.to_string());
                }
                Err(Box::new(Failed {
                    report: Outcome::Ran(failed.report),
                    error: failed.error,
                }))
            }
        }
    }

    /// A tenant shard: its tenants written to a file the migration reads, then the ledger row. Each tenant
    /// commits on its own (tenant migration's rule), so the row is written after the last one; a retried
    /// shard runs them again, and the job's `on_conflict` (`skip` for a retried shard) decides what rows
    /// already there do.
    fn run_tenants(
        &self,
        index: usize,
        mut job: Job,
        target: &mut Target,
        entry: &Entry,
        env: &Environment,
        ctx: &RunContext,
    ) -> RunResult<JobReport> {
        let shard = &self.shards[index];
        let list = tempfile::Builder::new()
            .prefix("ferry-shard-")
            .suffix(".tenants")
            .tempfile()
            .and_then(|mut file| {
                use std::io::Write as _;
                file.write_all(shard.tenants.join("\n").as_bytes())?;
                Ok(file)
            });
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                return Err(Box::new(Failed {
                    report: JobReport::Convert(Default::default()),
                    error: Error::io(crate::Stage::Source, None, e),
                }))
            }
        };
        if let Job::Migrate(migrate) = &mut job {
            if let Some(tenant) = &mut migrate.tenant {
                tenant.tenants_from = Some(list.path().to_path_buf());
            }
        }
        let report = job.run(env, ctx)?;
        let mut done = entry.clone();
        done.counts = counts_of(&report);
        if let Err(error) = target.commit(&done) {
            return Err(Box::new(Failed { report, error }));
        }
        Ok(report)
    }
}

fn unreachable_job() -> RunResult<JobReport> {
    Err(Box::new(Failed {
        report: JobReport::Convert(Default::default()),
        error: Error::config("only convert jobs and tenant migrations can be sharded"),
    }))
}

/// A convert shard: the engine's run, with the ledger row handed to its database sink.
fn run_convert(
    job: &ConvertJob,
    entry: Entry,
    env: &Environment,
    ctx: &RunContext,
) -> RunResult<JobReport> {
    if job.commit_every.is_some() || job.resume_after.is_some() {
        return Err(Box::new(Failed {
            report: JobReport::Convert(Default::default()),
            error: Error::config(
                "a shard commits its rows and its ledger row once, together: remove commit_every and \
                 resume_after from a sharded job (a failed shard is simply run again)",
            ),
        }));
    }
    let mut attempt = 0;
    let result = loop {
        let result = match job.build(env) {
            Ok(mut built) => {
                built.keep_ledger(entry.clone());
                built.run(ctx)
            }
            Err(_) => crate::pipeline::convert(job, env, ctx),
        };
        attempt += 1;
        match result {
            // Shards that start together race to create a missing table; the losers wrote nothing and
            // load into the winner's table when they run again.
            Err(failed) if attempt < 3 && failed.error.sqlstate() == Some("42P07") => continue,
            result => break result,
        }
    };
    result.map(JobReport::Convert).map_err(|failed| {
        Box::new(Failed {
            report: JobReport::Convert(failed.report),
            error: failed.error,
        })
    })
}

/// A report's counts.
pub fn counts_of(report: &JobReport) -> Counts {
    match report {
        JobReport::Convert(r) => r.counts,
        JobReport::Migrate(r) => r.counts,
        JobReport::Export(r) => r.counts,
        JobReport::Import(r) => r.counts,
    }
}

/// Where a shard's completion is recorded.
pub enum Target {
    /// A database: the ledger table.
    Database(Ledger),
    /// A file output: the shard's part set, complete once its manifest is there (written last, by rename).
    Files(PathBuf),
}

impl Target {
    fn of(output: &str, connect: crate::db::ConnectOptions, env: &Environment) -> Result<Target> {
        match crate::db::DbEndpoint::parse(output, env)? {
            Some(endpoint) => Ok(Target::Database(Ledger::open(&endpoint, &connect)?)),
            None if output == "-" => Err(Error::config(
                "a sharded job cannot write to standard output: each shard needs its own output",
            )),
            None => Ok(Target::Files(finish::shard_manifest(Path::new(output)))),
        }
    }

    /// What says the shard is done, or `None`. A ledger row of another plan is an error: the job file
    /// changed under the same job id.
    pub fn done(&mut self, entry: &Entry) -> Result<Option<String>> {
        match self {
            Target::Files(manifest) => Ok(manifest.exists().then(|| {
                format!(
                    "shard {} of job {} is already done: its manifest {} exists",
                    entry.shard,
                    entry.job_id,
                    manifest.display()
                )
            })),
            Target::Database(ledger) => {
                let rows = ledger.rows(&entry.job_id)?;
                let Some(row) = rows
                    .into_iter()
                    .find(|r| r.shard == entry.shard && r.status == "done")
                else {
                    return Ok(None);
                };
                if row.checksum != entry.checksum {
                    return Err(Error::config(format!(
                        "shard {} of job {} was committed under another plan (its checksum differs): the job \
                         file changed after shards ran; give the new plan its own job_id",
                        entry.shard, entry.job_id
                    )));
                }
                Ok(Some(format!(
                    "shard {} of job {} is already done: committed {} ({} read, {} written)",
                    entry.shard, entry.job_id, row.finished, row.counts.read, row.counts.written
                )))
            }
        }
    }

    fn record_failure(&mut self, entry: &Entry, error: &str) -> Result<()> {
        match self {
            Target::Database(ledger) => ledger.record_failure(entry, error),
            Target::Files(_) => Ok(()),
        }
    }

    /// Writes a `done` row outside any load (tenant shards, whose tenants commit one by one).
    fn commit(&mut self, entry: &Entry) -> Result<()> {
        match self {
            Target::Database(Ledger::Postgres(client)) => {
                ledger::commit_pg(client, entry).map(drop).map_err(|e| {
                    crate::db::postgres::pg_error(
                        crate::Stage::Sink,
                        "cannot write the shard ledger",
                        &e,
                    )
                })
            }
            Target::Database(Ledger::Sqlite(conn)) => {
                ledger::commit_sqlite(conn, entry).map(drop).map_err(|e| {
                    crate::db::sqlite::sql_error(
                        crate::Stage::Sink,
                        ledger::TABLE,
                        "cannot write the shard ledger",
                        e,
                    )
                })
            }
            Target::Files(_) => Ok(()),
        }
    }
}

/// A shard's state, as `ferry shards status` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardState {
    /// The shard.
    pub shard: u32,
    /// `done`, `failed` or `missing`.
    pub status: String,
    /// Its counts (done and failed shards).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
    /// When its row was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Why its last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where a sharded job stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The job's id.
    pub job_id: String,
    /// Every shard, in order.
    pub shards: Vec<ShardState>,
    /// The done shards' counts added up.
    pub total: Counts,
    /// True when every shard is done.
    pub complete: bool,
}

impl Status {
    /// How many shards are in `status`.
    pub fn count(&self, status: &str) -> usize {
        self.shards.iter().filter(|s| s.status == status).count()
    }

    /// The status as text: one line per shard that is not done, then the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.shards {
            let detail = match (&s.status[..], &s.counts, &s.error) {
                ("done", Some(c), _) => format!("{} read, {} written", c.read, c.written),
                (_, _, Some(e)) => e.clone(),
                _ => String::new(),
            };
            out.push_str(&format!(
                "shard {:>4}  {:<7}  {detail}\n",
                s.shard, s.status
            ));
        }
        let t = &self.total;
        out.push_str(&format!(
            "job {}: {} of {} shards done, {} failed, {} missing; {} read, {} written, {} rejected, {} filtered, {} skipped{}\n",
            self.job_id,
            self.count("done"),
            self.shards.len(),
            self.count("failed"),
            self.count("missing"),
            t.read,
            t.written,
            t.rejected,
            t.filtered,
            t.skipped,
            if self.complete { " — complete" } else { "" }
        ));
        out
    }
}

/// Reads where every shard of `job` stands from its target: the ledger, or the shards' manifests.
pub fn status(job: &ShardedJob, env: &Environment) -> Result<Status> {
    job.shard(0)?;
    let mut rows: Vec<Option<ShardState>> = vec![None; job.shards.len()];
    match job.target(0, env)? {
        Target::Database(mut ledger) => {
            for row in ledger.rows(&job.job_id)? {
                let index = row.shard as usize;
                let current = job.entry(index).ok().map(|e| e.checksum);
                if index >= rows.len() || current.as_deref() != Some(&row.checksum) {
                    continue;
                }
                rows[index] = Some(ShardState {
                    shard: row.shard,
                    status: row.status,
                    counts: Some(row.counts),
                    finished: Some(row.finished),
                    error: row.error,
                });
            }
        }
        Target::Files(_) => {
            for (index, slot) in rows.iter_mut().enumerate() {
                let Target::Files(manifest) = job.target(index, env)? else {
                    continue;
                };
                if let Ok(m) = crate::envelope::split::Manifest::read(&manifest) {
                    *slot = Some(ShardState {
                        shard: index as u32,
                        status: "done".into(),
                        counts: Some(Counts {
                            read: m.total_records,
                            written: m.total_records,
                            ..Counts::default()
                        }),
                        finished: Some(m.created),
                        error: None,
                    });
                }
            }
        }
    }
    let shards: Vec<ShardState> = rows
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            s.unwrap_or(ShardState {
                shard: i as u32,
                status: "missing".into(),
                counts: None,
                finished: None,
                error: None,
            })
        })
        .collect();
    let mut total = Counts::default();
    for s in shards.iter().filter(|s| s.status == "done") {
        if let Some(c) = &s.counts {
            total.add(c);
        }
    }
    let complete = shards.iter().all(|s| s.status == "done");
    Ok(Status {
        job_id: job.job_id.clone(),
        shards,
        total,
        complete,
    })
}

/// A plan's default id: the SHA-256 of the job and its shards, shortened — the same file gives the same id,
/// another plan another one.
fn default_id(job: &Job, shards: &[Shard]) -> String {
    let text = serde_json::to_string(&(job, shards)).unwrap_or_default();
    hex(&Sha256::digest(text.as_bytes()))[..16].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharded() -> ShardedJob {
        let job = Job::Convert(ConvertJob::new(
            "postgres://me:s3cret@db/app?table=t",
            "out/t.ndjson.gz",
        ));
        let shards = vec![
            Shard {
                input: Some("postgres://me@db/app?query=SELECT%201".into()),
                output: Some("out/t.shard-00000.ndjson.gz".into()),
                ..Shard::default()
            },
            Shard {
                input: Some("postgres://me@db/app?query=SELECT%202".into()),
                output: Some("out/t.shard-00001.ndjson.gz".into()),
                ..Shard::default()
            },
        ];
        ShardedJob {
            job_id: default_id(&job, &shards),
            job,
            shards,
        }
    }

    #[test]
    fn a_sharded_job_file_round_trips_without_secrets_and_keeps_its_id() {
        let job = sharded();
        let text = job.to_json();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains(r#""job_id""#) && text.contains(r#""shards""#));
        let back = ShardedJob::from_json(&text).unwrap();
        assert_eq!(back.job_id, job.job_id);
        assert_eq!(back.shards, job.shards);
        // Without a job_id the id comes from the plan: the same plan, the same id.
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        value.as_object_mut().unwrap().remove("job_id");
        let first = ShardedJob::from_json(&value.to_string()).unwrap();
        let second = ShardedJob::from_json(&value.to_string()).unwrap();
        assert_eq!(first.job_id, second.job_id);
        assert_eq!(first.job_id.len(), 16);
        // A plain job is a job with no shards; bad shards or ids are configuration errors.
        let plain = ShardedJob::from_json(r#"{"job": "convert", "input": "a", "output": "b"}"#);
        assert!(plain.unwrap().shards.is_empty());
        for bad in [
            r#"{"job": "convert", "input": "a", "output": "b", "shards": [{"inptu": "x"}]}"#,
            r#"{"job": "convert", "input": "a", "output": "b", "job_id": 7}"#,
            r#"{"job": "convert", "input": "a", "output": "b", "shards": [], "extra": 1}"#,
        ] {
            assert!(ShardedJob::from_json(bad).unwrap_err().is_config(), "{bad}");
        }
    }

    #[test]
    fn each_shard_replaces_input_and_output_and_has_its_own_checksum() {
        let job = sharded();
        let Job::Convert(zero) = job.job_of(0).unwrap() else {
            panic!("not a convert job")
        };
        assert_eq!(zero.input, "postgres://me@db/app?query=SELECT%201");
        assert_eq!(zero.output, "out/t.shard-00000.ndjson.gz");
        assert!(zero.split.splits(), "a file-output shard writes a part set");
        let (a, b) = (job.entry(0).unwrap(), job.entry(1).unwrap());
        assert_ne!(a.checksum, b.checksum);
        assert_eq!((a.shard, a.shards), (0, 2));
        assert_eq!(a.checksum, job.entry(0).unwrap().checksum);
        let err = job.job_of(2).unwrap_err();
        assert!(
            err.is_usage() && err.to_string().contains("0 to 1"),
            "{err}"
        );
    }

    #[test]
    fn shard_outputs_keep_the_extension_chain() {
        let out = finish::shard_output(Path::new("exports/contexts.ndjson.gz.enc"), 3);
        assert_eq!(out, Path::new("exports/contexts.shard-00003.ndjson.gz.enc"));
        assert_eq!(
            finish::shard_manifest(&out),
            Path::new("exports/contexts.shard-00003.manifest.json")
        );
        assert_eq!(
            finish::shard_output(Path::new("a.b.csv"), 0),
            Path::new("a.b.shard-00000.csv")
        );
    }
}
