//! The service's configuration (`ferry-serve.yaml`): where it listens and keeps its state, its limits, the
//! databases and keys it may use, and the datasets a request names by `dataType`. A request never names a
//! path, URL, key or SQL: everything it can reach is named here, checked once at start-up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::env::Environment;
use crate::error::{Error, Result};

/// The names a request may not give a dataset: `all` means every dataset, `auto-detect` asks the server.
pub const RESERVED_DATA_TYPES: &[&str] = &["all", "auto-detect"];

/// A size in bytes, written as a number or as text (`1GiB`, `50MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => crate::envelope::split::parse_size(&text)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The configuration file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address and port to listen on (`--listen` wins).
    pub listen: String,
    /// Uploads, export results and (by default) the state, tokens and templates live here.
    pub work_dir: PathBuf,
    /// The SQLite file with the operation history and the audit table (default `<work_dir>/state.db`).
    pub state: Option<PathBuf>,
    /// The token file (default `<work_dir>/tokens.yaml`).
    pub tokens: Option<PathBuf>,
    /// Where `POST /templates` stores templates (default `<work_dir>/templates`).
    pub templates_dir: Option<PathBuf>,
    /// Operations that run at once; more wait in the queue.
    pub max_concurrent_jobs: usize,
    /// Operations that may wait; beyond, a request gets 429.
    pub max_queued_jobs: usize,
    /// The largest upload accepted (413 beyond).
    pub max_upload_size: ByteSize,
    /// Uploads received at once (429 beyond).
    pub max_concurrent_uploads: usize,
    /// Decompressed bytes an upload may expand to (the CLI's `--max-decompressed-size`).
    pub max_decompressed_size: ByteSize,
    /// Seconds a request may take until its response starts (uploads included).
    pub request_timeout: f64,
    /// Seconds running operations get to finish after SIGTERM before they are cancelled.
    pub shutdown_grace: f64,
    /// Seconds an export's result files are kept after the operation ends.
    pub result_retention: f64,
    /// Records per batch when a request does not say.
    pub batch_size: usize,
    /// The largest `batchSize` a request may ask for.
    pub max_batch_size: usize,
    /// Worker threads for mapping and validation, per operation (default: the engine's).
    pub jobs_per_operation: Option<usize>,
    /// text or json.
    pub log_format: LogFormat,
    /// The databases datasets live in, by name.
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The database of datasets that name none (default: `DB_TYPE`, else `sqlite`).
    pub default_database: Option<String>,
    /// Encryption keys by id; a request names one with `encryption.keyId`.
    pub keys: BTreeMap<String, KeyConfig>,
    /// The key an export with `encryption.enabled` and no `keyId` uses.
    pub default_key: Option<String>,
    /// The datasets, by the `dataType` a request names.
    pub datasets: BTreeMap<String, DatasetConfig>,
    /// Syncs between two of the databases, by name: `POST /api/data-migration/syncs/{name}` starts one
    /// as an operation that runs until cancelled.
    pub syncs: BTreeMap<String, SyncConfig>,
}

/// A sync the service runs: two databases of `databases`, and how changes are found ([`crate::sync`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// The source (a name under `databases`).
    pub from: String,
    /// The target (a name under `databases`): its tables exist.
    pub to: String,
    /// Only these tables (default: all of the source's).
    pub tables: Vec<String>,
    /// `cursor`, `checksum`, `triggers` or `logical`.
    pub capture: crate::sync::Capture,
    /// The cursor column of tables that have it.
    pub cursor: Option<String>,
    /// `delete`, `ignore`, `list` or `{soft: COLUMN}`.
    pub deletes: crate::sync::Deletes,
    /// Seconds between passes.
    pub every: f64,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            from: String::new(),
            to: String::new(),
            tables: Vec::new(),
            capture: crate::sync::Capture::Cursor,
            cursor: None,
            deletes: crate::sync::Deletes::Delete,
            every: 5.0,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            listen: "127.0.0.1:3000".into(),
            work_dir: PathBuf::from("ferry-serve"),
            state: None,
            tokens: None,
            templates_dir: None,
            max_concurrent_jobs: 2,
            max_queued_jobs: 100,
            max_upload_size: ByteSize(1 << 30),
            max_concurrent_uploads: 4,
            max_decompressed_size: ByteSize(crate::envelope::DEFAULT_MAX_DECOMPRESSED),
            request_timeout: 300.0,
            shutdown_grace: 30.0,
            result_retention: 86_400.0,
            batch_size: crate::DEFAULT_BATCH_SIZE,
            max_batch_size: 100_000,
            jobs_per_operation: None,
            log_format: LogFormat::Text,
            databases: BTreeMap::new(),
            default_database: None,
            keys: BTreeMap::new(),
            default_key: None,
            datasets: BTreeMap::new(),
            syncs: BTreeMap::new(),
        }
    }
}

/// A database, by URL or SQLite path, given in the file or through an environment variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A `postgres://` URL (put the password in `PGPASSWORD`, not here) or `sqlite://PATH`.
    pub url: Option<String>,
    /// The environment variable holding the URL (`DATABASE_URL`); wins over `url` when set.
    pub url_env: Option<String>,
    /// A SQLite file.
    pub path: Option<PathBuf>,
    /// The environment variable holding the SQLite path (`DB_PATH`); wins over `path` when set.
    pub path_env: Option<String>,
}

/// Where an encryption key comes from: exactly one of these.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyConfig {
    /// An environment variable holding the key (hex or base64).
    pub env: Option<String>,
    /// A key file (32 raw bytes, 64 hex digits or base64), as `ferry keygen` writes.
    pub file: Option<PathBuf>,
    /// An environment variable holding a passphrase (Argon2id).
    pub passphrase_env: Option<String>,
    /// A file holding a passphrase.
    pub passphrase_file: Option<PathBuf>,
}

/// The record fields a request's `filters` test. Names are the exported record's fields; a dotted name
/// (`metadata.importance`) reaches into an object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct FilterFields {
    /// `filters.dateRange` tests this date-time field.
    pub date_range: Option<String>,
    /// `filters.types`.
    pub types: Option<String>,
    /// `filters.tags` (an array field: a record with any of the tags passes).
    pub tags: Option<String>,
    /// `filters.sessionIds`.
    pub session_ids: Option<String>,
    /// `filters.importance`.
    pub importance: Option<String>,
}

/// One dataset: a table in a database, and how records are mapped on the way in and out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetConfig {
    /// The database (a name under `databases`; default: `default_database`).
    pub database: Option<String>,
    /// The table (on PostgreSQL `schema.table` names another schema).
    pub table: String,
    /// The template imports are mapped and validated through (a stored or built-in template's name).
    pub template: Option<String>,
    /// The template exports are mapped through (default: rows as the table holds them).
    pub export_template: Option<String>,
    /// The field holding the owning user's id: a user-bound token's exports are filtered on it, and its
    /// imports stamped and checked with it.
    pub user_column: Option<String>,
    /// The fields `filters` test.
    pub filters: FilterFields,
    /// The field `includeMetadata: false` leaves out.
    pub metadata_field: Option<String>,
    /// Fields whose presence in an upload's first record picks this dataset for `auto-detect` (default: the
    /// template's required fields).
    pub detect: Vec<String>,
}

/// A database as the engine takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// A PostgreSQL URL (may hold a password: never shown).
    Postgres(String),
    /// A SQLite file.
    Sqlite(PathBuf),
}

impl Database {
    /// The endpoint text for `table` (the table name percent-encoded into `?table=`).
    pub fn endpoint(&self, table: &str) -> String {
        let table: String =
            percent_encoding::utf8_percent_encode(table, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        match self {
            Database::Postgres(url) if url.contains('?') => format!("{url}&table={table}"),
            Database::Postgres(url) => format!("{url}?table={table}"),
            Database::Sqlite(path) => format!("sqlite://{}?table={table}", path.display()),
        }
    }

    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }
}

/// A dataset, resolved: its database known, its names checked.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The `dataType` that names it.
    pub name: String,
    /// The database's name in the config.
    pub database_name: String,
    /// The database.
    pub database: Database,
    /// The rest of its configuration.
    pub config: DatasetConfig,
}

/// The configuration, checked and resolved against the environment: what the server runs with.
#[derive(Debug)]
pub struct Settings {
    /// The file as written (paths made absolute).
    pub config: ServeConfig,
    /// `work_dir`, absolute.
    pub work_dir: PathBuf,
    /// The state database.
    pub state: PathBuf,
    /// The token file.
    pub tokens: PathBuf,
    /// Stored templates.
    pub templates_dir: PathBuf,
    /// Datasets by `dataType`.
    pub datasets: BTreeMap<String, Dataset>,
    /// Syncs by name, as jobs (passes every `every` seconds until cancelled).
    pub syncs: BTreeMap<String, crate::sync::SyncJob>,
    /// The variables runs may read: the ones the configuration names, and libpq's `PG*`.
    pub env: Environment,
}

/// A name that can be a `dataType`, key id or template id: letters, digits, `-`, `_`, `.`, at most 64.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl ServeConfig {
    /// Reads `path` (YAML).
    pub fn load(path: &Path) -> Result<ServeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read the configuration {}: {e}",
                path.display()
            ))
        })?;
        let mut config: ServeConfig = serde_yaml::from_str(&text)
            .map_err(|e| Error::config(format!("configuration {}: {e}", path.display())))?;
        // Relative paths in the file are relative to the file.
        let base = path.parent().unwrap_or(Path::new("."));
        config.rebase(base);
        Ok(config)
    }

    fn rebase(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.work_dir);
        for p in [&mut self.state, &mut self.tokens, &mut self.templates_dir]
            .into_iter()
            .flatten()
        {
            join(p);
        }
        for db in self.databases.values_mut() {
            if let Some(p) = &mut db.path {
                join(p);
            }
        }
        for key in self.keys.values_mut() {
            for p in [&mut key.file, &mut key.passphrase_file]
                .into_iter()
                .flatten()
            {
                join(p);
            }
        }
    }

    /// Checks everything and resolves databases against `process` (the server's environment).
    pub fn resolve(mut self, process: &Environment) -> Result<Settings> {
        let bad = |m: String| Error::config(m);
        if self.max_concurrent_jobs == 0 || self.max_concurrent_uploads == 0 || self.batch_size == 0
        {
            return Err(bad(
                "max_concurrent_jobs, max_concurrent_uploads and batch_size must be at least 1"
                    .into(),
            ));
        }
        for (what, secs) in [
            ("request_timeout", self.request_timeout),
            ("shutdown_grace", self.shutdown_grace),
            ("result_retention", self.result_retention),
        ] {
            if !(secs.is_finite() && secs >= 0.0) {
                return Err(bad(format!(
                    "{what} must be a number of seconds, at least 0"
                )));
            }
        }
        if self.databases.is_empty() {
            self.databases = default_databases();
        }
        if self.datasets.is_empty() {
            self.datasets = default_datasets();
        }
        let default_db = self
            .default_database
            .clone()
            .or_else(|| process.non_empty("DB_TYPE").map(str::to_owned))
            .unwrap_or_else(|| "sqlite".into());
        let mut names: Vec<String> = Vec::new();
        for (name, key) in &self.keys {
            if !is_plain_name(name) {
                return Err(bad(format!(
                    "key id {name:?}: use letters, digits, - and _"
                )));
            }
            let given = [
                key.env.is_some(),
                key.file.is_some(),
                key.passphrase_env.is_some(),
                key.passphrase_file.is_some(),
            ];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(bad(format!(
                    "key {name:?}: give exactly one of env, file, passphrase_env, passphrase_file"
                )));
            }
            names.extend(key.env.clone());
            names.extend(key.passphrase_env.clone());
        }
        if let Some(id) = &self.default_key {
            if !self.keys.contains_key(id) {
                return Err(bad(format!("default_key {id:?} is not one of the keys")));
            }
        }
        let mut databases = BTreeMap::new();
        for (name, db) in &self.databases {
            names.extend(db.url_env.clone());
            names.extend(db.path_env.clone());
            if let Some(resolved) = resolve_database(name, db, process)? {
                databases.insert(name.clone(), resolved);
            }
        }
        let mut datasets = BTreeMap::new();
        for (name, config) in &self.datasets {
            if !is_plain_name(name) || RESERVED_DATA_TYPES.contains(&name.as_str()) {
                return Err(bad(format!(
                    "dataset {name:?}: a dataType is letters, digits, - and _, and not {}",
                    RESERVED_DATA_TYPES.join(" or ")
                )));
            }
            if config.table.is_empty() {
                return Err(bad(format!("dataset {name:?} names no table")));
            }
            let database_name = config
                .database
                .clone()
                .unwrap_or_else(|| default_db.clone());
            let database = match databases.get(&database_name) {
                Some(db) => db,
                None if self.databases.contains_key(&database_name) => {
                    // Named but not set (e.g. DATABASE_URL unset): the dataset is left out, with a warning.
                    tracing::warn!(
                        dataset = %name,
                        database = %database_name,
                        "dataset left out: its database is not configured in this environment"
                    );
                    continue;
                }
                None => {
                    return Err(bad(format!(
                    "dataset {name:?}: database {database_name:?} is not one of the databases ({})",
                    self.databases
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
                }
            };
            datasets.insert(
                name.clone(),
                Dataset {
                    name: name.clone(),
                    database_name,
                    database: database.clone(),
                    config: config.clone(),
                },
            );
        }
        let mut syncs = BTreeMap::new();
        for (name, sync) in &self.syncs {
            let url = |db: &str| match databases.get(db) {
                Some(Database::Postgres(url)) => Ok(url.clone()),
                Some(Database::Sqlite(path)) => Ok(format!("sqlite://{}", path.display())),
                None => Err(bad(format!(
                    "sync {name:?}: database {db:?} is not one of the databases configured here"
                ))),
            };
            if !is_plain_name(name) {
                return Err(bad(format!(
                    "sync {name:?}: a name is letters, digits, -, _ and ."
                )));
            }
            syncs.insert(
                name.clone(),
                crate::sync::SyncJob {
                    from: url(&sync.from)?,
                    to: url(&sync.to)?,
                    tables: sync.tables.clone(),
                    capture: sync.capture,
                    cursor: sync.cursor.clone(),
                    deletes: sync.deletes.clone(),
                    every: Some(sync.every.max(0.1)),
                    ..crate::sync::SyncJob::default()
                },
            );
        }
        let work_dir = absolute(&self.work_dir)?;
        let state = absolute(
            &self
                .state
                .clone()
                .unwrap_or_else(|| work_dir.join("state.db")),
        )?;
        let tokens = absolute(
            &self
                .tokens
                .clone()
                .unwrap_or_else(|| work_dir.join("tokens.yaml")),
        )?;
        let templates_dir = absolute(
            &self
                .templates_dir
                .clone()
                .unwrap_or_else(|| work_dir.join("templates")),
        )?;
        let env = run_environment(process, &names);
        Ok(Settings {
            config: self,
            work_dir,
            state,
            tokens,
            templates_dir,
            datasets,
            syncs,
            env,
        })
    }
}

/// The token file a configuration names (for `ferry serve token …`, which needs nothing else of it).
pub fn token_file(config: Option<&Path>) -> Result<PathBuf> {
    let config = match config {
        Some(path) => ServeConfig::load(path)?,
        None => ServeConfig::default(),
    };
    let path = config
        .tokens
        .clone()
        .unwrap_or_else(|| config.work_dir.join("tokens.yaml"));
    absolute(&path)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| Error::config(format!("cannot make {} absolute: {e}", path.display())))
}

/// Only what runs may read: libpq's variables, `SOURCE_DATE_EPOCH`, and the ones the configuration names.
fn run_environment(process: &Environment, names: &[String]) -> Environment {
    let mut env = crate::db::postgres::libpq_environment(process);
    for name in names
        .iter()
        .map(String::as_str)
        .chain(["SOURCE_DATE_EPOCH"])
    {
        if let Some(value) = process.get(name) {
            env.set(name, value);
        }
    }
    env
}

/// A database's connection, or `None` when it comes from a variable that is not set.
fn resolve_database(
    name: &str,
    db: &DatabaseConfig,
    env: &Environment,
) -> Result<Option<Database>> {
    let from_env = |var: &Option<String>| var.as_deref().and_then(|v| env.non_empty(v));
    let url = from_env(&db.url_env)
        .map(str::to_owned)
        .or_else(|| db.url.clone());
    let path = from_env(&db.path_env)
        .map(PathBuf::from)
        .or_else(|| db.path.clone());
    match (url, path) {
        (Some(_), Some(_)) => Err(Error::config(format!(
            "database {name:?}: give a url or a path, not both"
        ))),
        (Some(url), None) => {
            if let Some(rest) = url.strip_prefix("sqlite://") {
                return sqlite(name, PathBuf::from(rest)).map(Some);
            }
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(Error::config(format!(
                    "database {name:?}: the url must start with postgres:// or sqlite://"
                )));
            }
            Ok(Some(Database::Postgres(url)))
        }
        (None, Some(path)) => sqlite(name, path).map(Some),
        (None, None) => Ok(None),
    }
}

fn sqlite(name: &str, path: PathBuf) -> Result<Database> {
    let text = path.to_string_lossy();
    if text.contains('?') || text.contains('#') {
        return Err(Error::config(format!(
            "database {name:?}: a SQLite path may not contain ? or #"
        )));
    }
    Ok(Database::Sqlite(absolute(&path)?))
}

/// Without a `databases` section: the variables the reference guides use, `DATABASE_URL` for
/// PostgreSQL and `DB_PATH` (default `./data.sqlite`) for SQLite.
fn default_databases() -> BTreeMap<String, DatabaseConfig> {
    BTreeMap::from([
        (
            "postgres".to_owned(),
            DatabaseConfig {
                url_env: Some("DATABASE_URL".into()),
                ..DatabaseConfig::default()
            },
        ),
        (
            "sqlite".to_owned(),
            DatabaseConfig {
                path_env: Some("DB_PATH".into()),
                path: Some(PathBuf::from("data.sqlite")),
                ..DatabaseConfig::default()
            },
        ),
    ])
}

/// Without a `datasets` section: the Persistent Context Store's data types.
fn default_datasets() -> BTreeMap<String, DatasetConfig> {
    let contexts = DatasetConfig {
        table: "contexts".into(),
        template: Some("std-context".into()),
        filters: FilterFields {
            date_range: Some("createdAt".into()),
            types: Some("type".into()),
            tags: Some("tags".into()),
            session_ids: Some("sessionId".into()),
            importance: Some("metadata.importance".into()),
        },
        metadata_field: Some("metadata".into()),
        ..DatasetConfig::default()
    };
    let sessions = DatasetConfig {
        table: "sessions".into(),
        filters: FilterFields {
            date_range: Some("createdAt".into()),
            ..FilterFields::default()
        },
        ..DatasetConfig::default()
    };
    let templates = DatasetConfig {
        table: "templates".into(),
        ..DatasetConfig::default()
    };
    BTreeMap::from([
        ("contexts".to_owned(), contexts),
        ("sessions".to_owned(), sessions),
        ("templates".to_owned(), templates),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_numbers_or_text() {
        let c: ServeConfig =
            serde_yaml::from_str("max_upload_size: 2MiB\nmax_decompressed_size: 1000\n").unwrap();
        assert_eq!(c.max_upload_size, ByteSize(2 << 20));
        assert_eq!(c.max_decompressed_size, ByteSize(1000));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_yaml::from_str::<ServeConfig>("listen: x\nlisten_port: 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
    }

    #[test]
    fn defaults_follow_the_guides_variables() {
        let env = Environment::empty()
            .with("DATABASE_URL", "postgres://app@db/app")
            .with("DB_TYPE", "postgres")
            .with("HOME", "/root");
        let settings = ServeConfig::default().resolve(&env).unwrap();
        let contexts = &settings.datasets["contexts"];
        assert_eq!(contexts.database_name, "postgres");
        assert_eq!(
            contexts.database.endpoint("contexts"),
            "postgres://app@db/app?table=contexts"
        );
        // Runs see the variables the configuration names, not the whole process's.
        assert_eq!(
            settings.env.get("DATABASE_URL"),
            Some("postgres://app@db/app")
        );
        assert_eq!(settings.env.get("HOME"), None);
    }

    #[test]
    fn table_names_are_encoded_into_the_endpoint() {
        let db = Database::Sqlite(PathBuf::from("/data/app.db"));
        assert_eq!(
            db.endpoint("my table&x"),
            "sqlite:///data/app.db?table=my%20table%26x"
        );
        let pg = Database::Postgres("postgres://a@h/db?sslmode=require".into());
        assert_eq!(
            pg.endpoint("t"),
            "postgres://a@h/db?sslmode=require&table=t"
        );
    }

    #[test]
    fn a_dataset_on_an_unknown_database_is_refused() {
        let config: ServeConfig =
            serde_yaml::from_str("datasets:\n  notes: {table: notes, database: nope}\n").unwrap();
        let err = config.resolve(&Environment::empty()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
