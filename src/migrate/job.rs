//! The migrate job: what `ferry migrate` (or a job file, or the HTTP service) asks for, as plain serde data,
//! and [`MigrateJob::build`], which checks all of it against the run's environment before anything is
//! touched — endpoints, the pair of database kinds, cast rules, the state file of a resumed run (whose
//! source, target and schema choices it takes), the backup folder — and gives a [`BuiltMigrate`] to run.
//!
//! A job file never holds a secret: database URLs are written without their password (give it in
//! `PGPASSWORD`, or `DATABASE_URL` with `postgres`), and a backup key is the name of a file or variable.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::conn::Db;
use super::state::{without_password, Phase, State};
use super::types::CastRules;
use crate::db::ConnectOptions;
use crate::env::Environment;
use crate::envelope::KeySource;
use crate::error::{Error, Result};
use crate::paths::RunPaths;
use crate::pipeline::ErrorPolicy;

/// The state file a migration keeps unless told otherwise.
pub const DEFAULT_STATE: &str = "ferry-migrate.state.json";
/// Where per-table rejects files go unless told otherwise.
pub const DEFAULT_REJECTS: &str = "migrate-rejects";

/// One migration, as plain data: `{"job": "migrate", "from": "app.db", "to": "postgres", …}` in a job
/// file (the `job` tag belongs to the job file, not to this struct). Every field but `from` and `to` has
/// a default; a resumed run (`resume`) may leave those out too and take them from its state file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrateJob {
    /// The source database: `sqlite://PATH`, a `.db` path, `postgres://…`, `postgres` (`DATABASE_URL`,
    /// `PG*`) or `sqlite` (`DB_PATH`).
    #[serde(with = "url_without_password", skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The target database (same forms).
    #[serde(with = "url_without_password", skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only these tables (empty: all).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Not these tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Create the schema, copy no rows.
    pub schema_only: bool,
    /// Copy rows into tables that already exist (made by `schema_only`).
    pub data_only: bool,
    /// Do everything inside one transaction and roll it back.
    pub dry_run: bool,
    /// Tables copied at once.
    pub jobs: usize,
    /// What a value that does not fit its column does: `strict`, `lenient` or `skip`.
    pub on_error: ErrorPolicy,
    /// Where per-table rejects files go.
    pub rejects: PathBuf,
    /// Read every table back and compare (off with `--no-validate`).
    pub validate: bool,
    /// `--fail-on-rejects`: a migration that succeeded but rejected rows ends with exit code 3.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_on_rejects: bool,
    /// Export every migrated source table here first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// Encrypt the backup with the key this names (a file or a variable, never the key itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_key: Option<KeySource>,
    /// The state file.
    pub state: PathBuf,
    /// Continue the migration the state file describes.
    pub resume: bool,
    /// Type overrides (`--cast-rules`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cast_rules: Option<PathBuf>,
    /// Connection retries and timeout (seconds).
    pub connect: ConnectOptions,
    /// Where the front end writes the JSON report: the run only checks that it names no file the run reads
    /// or writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
    /// Migrate one tenant's rows (or many tenants') instead of whole databases ([`crate::tenant`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<crate::tenant::TenantMigrateJob>,
    /// Re-run the finished migration of `state`, moving only what changed ([`crate::sync`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incremental: bool,
    /// With `incremental`: the cursor column of tables that have one (the others by key and checksum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Database URLs in job files: written without a password, read as given.
mod url_without_password {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match url {
            Some(url) => s.serialize_some(&super::without_password(url)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d)
    }
}

impl std::fmt::Debug for MigrateJob {
    /// The job as a job file shows it: no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "MigrateJob {text}")
    }
}

impl Default for MigrateJob {
    fn default() -> MigrateJob {
        MigrateJob {
            from: None,
            to: None,
            tables: Vec::new(),
            exclude: Vec::new(),
            schema_only: false,
            data_only: false,
            dry_run: false,
            jobs: 2,
            on_error: ErrorPolicy::Strict,
            rejects: PathBuf::from(DEFAULT_REJECTS),
            validate: true,
            fail_on_rejects: false,
            backup: None,
            backup_key: None,
            state: PathBuf::from(DEFAULT_STATE),
            resume: false,
            cast_rules: None,
            connect: ConnectOptions::default(),
            report: None,
            tenant: None,
            incremental: false,
            cursor: None,
        }
    }
}

/// A job checked against its environment, ready to run ([`BuiltMigrate::run`]).
#[derive(Debug)]
pub struct BuiltMigrate {
    /// The job, with a resumed run's source, target and schema choices taken from its state.
    pub(crate) job: MigrateJob,
    /// The source database.
    pub(crate) source: Db,
    /// The target database.
    pub(crate) target: Db,
    /// The type overrides.
    pub(crate) rules: CastRules,
    /// The state to keep: a resumed run's as it was left, else a new one.
    pub(crate) state: State,
    /// The environment the run was built with (the test hook `FERRY_CRASH_AT` is read from it).
    pub(crate) env: Environment,
}

impl MigrateJob {
    /// A migration of `from` into `to`, everything else as `ferry migrate` defaults it.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> MigrateJob {
        MigrateJob {
            from: Some(from.into()),
            to: Some(to.into()),
            ..MigrateJob::default()
        }
    }

    /// Checks the job before anything is touched: a configuration error (exit code 2) names what is wrong.
    pub fn build(&self, env: &Environment) -> Result<BuiltMigrate> {
        if self.schema_only && self.data_only {
            return Err(Error::config(
                "--schema-only and --data-only exclude each other",
            ));
        }
        let mut job = self.clone();
        job.jobs = job.jobs.max(1);
        // Before the state file is read: it may be the very file a path collides with.
        if let (Some(from), Some(to)) = (&job.from, &job.to) {
            let source = Db::parse(from, "--from", env)?;
            let target = Db::parse(to, "--to", env)?;
            job.run_paths(&source, &target).check()?;
        }
        let state = job.prepare_state()?;
        let source = Db::parse(required(&job.from, "source", "--from")?, "--from", env)?;
        let target = Db::parse(required(&job.to, "target", "--to")?, "--to", env)?;
        if matches!(
            (&source, &target),
            (Db::Sqlite(_), Db::Sqlite(_)) | (Db::Postgres(_), Db::Postgres(_))
        ) {
            return Err(Error::config(
                "ferry migrate moves SQLite to PostgreSQL or PostgreSQL to SQLite; for a copy within one \
                 kind of database use its own tools (sqlite3 .backup, pg_dump | pg_restore)",
            ));
        }
        job.run_paths(&source, &target).check()?;
        let rules = load_rules(job.cast_rules.as_ref())?;
        if let (Some(dir), false, false) = (&job.backup, job.dry_run, job.resume) {
            let manifest = dir.join("backup.json");
            if manifest.exists() {
                return Err(Error::config(format!(
                    "{} exists: choose an empty --backup directory (a backup is never overwritten)",
                    manifest.display()
                )));
            }
        }
        Ok(BuiltMigrate {
            job,
            source,
            target,
            rules,
            state,
            env: env.clone(),
        })
    }

    /// Every path a migration reads and writes: SQLite files, the state file, the report, the rejects and
    /// backup folders' files, the cast rules and key files (for the one collision check).
    fn run_paths(&self, source: &Db, target: &Db) -> RunPaths {
        let mut paths = RunPaths::new();
        for (flag, db) in [("--from", source), ("--to", target)] {
            if let Db::Sqlite(file) = db {
                paths.database(flag, file);
            }
        }
        let state_flag = if self.resume { "--resume" } else { "--state" };
        paths.write(state_flag, &self.state);
        if let Some(report) = &self.report {
            paths.write("--report", report);
        }
        if self.on_error != ErrorPolicy::Strict {
            paths.write_family("--rejects", &self.rejects, "", false, &[".rejects.ndjson"]);
        }
        if let Some(dir) = &self.backup {
            paths.write("--backup (its backup.json)", &dir.join("backup.json"));
            let suffixes = [
                ".ndjson.zst",
                ".ndjson.zst.sha256",
                ".ndjson.zst.enc",
                ".ndjson.zst.enc.sha256",
            ];
            paths.write_family("--backup", dir, "", false, &suffixes);
        }
        if let Some(rules) = &self.cast_rules {
            paths.read("--cast-rules", rules);
        }
        if let Some((flag, file)) = self.backup_key.as_ref().and_then(KeySource::file) {
            paths.read(flag, file);
        }
        paths
    }

    /// The state this run keeps. A resumed run loads it, checks it is unfinished and its own, and takes
    /// from it what the job leaves out (source, target) and what must not change (schema choices, cast
    /// rules); a new run refuses to overwrite an unfinished migration's state.
    fn prepare_state(&mut self) -> Result<State> {
        let shown = self.state.display().to_string();
        if self.resume {
            let state = State::load(&self.state)?;
            if state.phase.is_final() {
                return Err(Error::config(format!(
                    "{shown}: that migration is {}; there is nothing to resume",
                    if state.phase == Phase::Done {
                        "finished"
                    } else {
                        "rolled back"
                    }
                )));
            }
            let from = self.from.get_or_insert_with(|| state.source.clone());
            let to = self.to.get_or_insert_with(|| state.target.clone());
            if without_password(from) != state.source || without_password(to) != state.target {
                return Err(Error::config(format!(
                    "{shown} is the state of {} → {}, not of this --from/--to",
                    state.source, state.target
                )));
            }
            self.schema_only = state.schema_only;
            self.data_only = state.data_only;
            if self.cast_rules.is_none() {
                self.cast_rules = state.cast_rules.clone();
            }
            return Ok(state);
        }
        if !self.dry_run && self.state.exists() {
            let old = State::load(&self.state)?;
            if !old.phase.is_final() {
                return Err(Error::config(format!(
                    "{shown} holds an unfinished migration ({} → {}): continue it with --resume {shown}, \
                     undo it with --rollback {shown}, or choose another --state",
                    old.source, old.target
                )));
            }
            // A finished migration's state is what `--rollback` needs to undo it: never overwritten.
            if old.phase == Phase::Done {
                return Err(Error::config(format!(
                    "{shown} holds the state of a finished migration ({} → {}), which `ferry migrate \
                     --rollback {shown}` still needs: give this migration its own --state FILE (or move \
                     {shown} away once that migration will not be undone)",
                    old.source, old.target
                )));
            }
        }
        Ok(State {
            source: without_password(required(&self.from, "source", "--from")?),
            target: without_password(required(&self.to, "target", "--to")?),
            schema_only: self.schema_only,
            data_only: self.data_only,
            cast_rules: self.cast_rules.clone(),
            ..State::default()
        })
    }
}

/// The value of a required endpoint, or the configuration error that names its flag.
pub(crate) fn required<'a>(value: &'a Option<String>, what: &str, flag: &str) -> Result<&'a str> {
    value.as_deref().ok_or_else(|| {
        Error::config(format!(
            "ferry migrate needs a {what}: give {flag} (`{}` in a job file)",
            flag.trim_start_matches('-')
        ))
    })
}

/// The cast rules a job names, or none.
pub(crate) fn load_rules(path: Option<&PathBuf>) -> Result<CastRules> {
    match path {
        Some(path) => CastRules::load(path),
        None => Ok(CastRules::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_file_needs_only_its_endpoints_and_never_holds_a_password() {
        let job: MigrateJob =
            serde_json::from_str(r#"{"from": "app.db", "to": "postgres://me:pw@db/app"}"#).unwrap();
        assert_eq!(job.jobs, 2);
        assert!(job.validate && job.state == std::path::Path::new(DEFAULT_STATE));
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("pw"), "{text}");
        assert!(!format!("{job:?}").contains("pw"));
        assert!(text.contains("postgres://me@db/app"), "{text}");
        let back: MigrateJob = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to.as_deref(), Some("postgres://me@db/app"));
        assert!(serde_json::from_str::<MigrateJob>(r#"{"from": "a.db", "tabels": []}"#).is_err());
        let keyed: MigrateJob =
            serde_json::from_str(r#"{"backup": "b", "backup_key": {"key_env": "BACKUP_KEY"}}"#)
                .unwrap();
        assert_eq!(keyed.backup_key, Some(KeySource::Env("BACKUP_KEY".into())));
    }

    #[test]
    fn build_checks_everything_before_touching_anything() {
        let env = Environment::empty();
        let config = |job: MigrateJob| {
            let e = job.build(&env).unwrap_err();
            assert!(e.is_config(), "{e}");
            e.to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        let job = |from: &str, to: &str| MigrateJob {
            state: state.clone(),
            ..MigrateJob::new(from, to)
        };
        assert!(config(MigrateJob {
            schema_only: true,
            data_only: true,
            ..job("a.db", "postgres://h/db")
        })
        .contains("exclude each other"));
        assert!(config(job("a.db", "b.db")).contains("PostgreSQL to SQLite"));
        assert!(config(job("a.db", "mysql://h/db")).contains("mysql://"));
        assert!(config(job("a.db", "sqlite")).contains("DB_PATH"));
        assert!(config(MigrateJob {
            to: None,
            ..job("a.db", "x")
        })
        .contains("--to"));
        assert!(config(MigrateJob {
            resume: true,
            ..job("a.db", "postgres://h/db")
        })
        .contains("without --resume"));
        let built = job("a.db", "postgres://h/db").build(&env).unwrap();
        assert_eq!(built.state.source, "a.db");
        assert!(!state.exists(), "building touches nothing");
    }

    #[test]
    fn a_resumed_job_takes_its_endpoints_and_choices_from_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        State {
            source: "a.db".into(),
            target: "postgres://me@h/db".into(),
            schema_only: true,
            phase: Phase::Copying,
            ..State::default()
        }
        .save(&path)
        .unwrap();
        let job = MigrateJob {
            resume: true,
            state: path.clone(),
            ..MigrateJob::default()
        };
        let built = job.build(&Environment::empty()).unwrap();
        assert_eq!(built.job.from.as_deref(), Some("a.db"));
        assert_eq!(built.job.to.as_deref(), Some("postgres://me@h/db"));
        assert!(built.job.schema_only);
        let other = MigrateJob {
            from: Some("b.db".into()),
            ..job
        };
        assert!(other.build(&Environment::empty()).unwrap_err().is_config());
    }
}
