//! `ferry export --tenant users:123 --from app.db --to user123.bundle.json.gz.enc`: the export job as plain
//! data ([`ExportJob`], checked whole by [`ExportJob::build`]), and its run: one read transaction on the
//! source (a single snapshot), the root row, the [subset](super::subset), then every bundled table's rows
//! fetched by key in dependency order, sanitized, hashed and written through the envelope. `--plan`
//! stops after the subset and reports the traversal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bundle::{
    self, carried, value_of, BundleColumn, BundleForeignKey, BundleHead, BundleMeta, BundleTable,
    BundleWriter, Checksums, Envelope, TableMeta,
};
use super::graph::{read_plan, Graph, Node};
use super::keys::{Key, KeyVal};
use super::query::{Filter, Reader};
use super::sanitize::{TableSanitizer, Treated};
use super::spec::{Root, Select, Spec};
use super::subset::{self, PathCount, Subset};
use crate::db::{quote_ident, ConnectOptions};
use crate::env::Environment;
use crate::envelope::split::SplitOptions;
use crate::envelope::{Compression, CompressionSpec, KeySource};
use crate::error::{Error, Position, Result, Stage};
use crate::migrate::state::without_password;
use crate::migrate::{Conn, Db};
use crate::observe::{Event, Failed, Progress, RunContext, RunKind, RunResult, Status};
use crate::paths::RunPaths;
use crate::record::{Key as FieldName, Record};
use crate::report::{Counts, ReportedError, MAX_REPORTED_ERRORS};

/// Rows between two progress events (and two looks at the cancellation token).
const BATCH_ROWS: u64 = 4096;

/// One tenant's export, as plain data: `{"job": "export", "tenant": "users:123", "from": "app.db", "to":
/// "user123.bundle.json.gz", …}` in a job file.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportJob {
    /// The root row: `users:123` or `users:email=a@b.c`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Root>,
    /// The source database (`sqlite://…`, a `.db` path, `postgres://…`, `postgres`, `sqlite`); a job file
    /// shows it without its password.
    #[serde(
        serialize_with = "super::url_without_password",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<String>,
    /// The bundle: `NAME.bundle.json[.gz|.zst|.br][.enc]`, or `NAME.bundle.ndjson…` split into parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<PathBuf>,
    /// The subset spec file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PathBuf>,
    /// Lookup tables taken whole (with the spec's `include`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Sanitize (off only into an encrypted bundle).
    pub sanitize: bool,
    /// Encrypt even when the name does not end in `.enc`.
    pub encrypt: bool,
    /// The key (a file or variable name, never the key): default `FERRY_KEY`, then `EXPORT_ENCRYPTION_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySource>,
    /// `gzip`, `zstd:19`, `none`…; default from the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress: Option<String>,
    /// Split into parts of about this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_size: Option<u64>,
    /// Split into parts of at most this many rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_records: Option<u64>,
    /// Write `<bundle>.sha256` too.
    pub checksum: bool,
    /// Find the subset and report it; write nothing.
    pub plan: bool,
    /// Connection retries and timeout.
    pub connect: ConnectOptions,
    /// Where the front end writes the JSON report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

impl Default for ExportJob {
    fn default() -> ExportJob {
        ExportJob {
            tenant: None,
            from: None,
            to: None,
            spec: None,
            include: Vec::new(),
            sanitize: true,
            encrypt: false,
            key: None,
            compress: None,
            split_size: None,
            split_records: None,
            checksum: false,
            plan: false,
            connect: ConnectOptions::default(),
            report: None,
        }
    }
}

impl std::fmt::Debug for ExportJob {
    /// The job as a job file shows it: no password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        write!(f, "ExportJob {text}")
    }
}

/// One bundled table in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportTable {
    /// The table.
    pub name: String,
    /// Rows exported (references and own).
    pub records: u64,
    /// Of which references.
    pub references: u64,
    /// The table's checksum.
    pub checksum: String,
}

/// What an export did (or, for `--plan`, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportReport {
    /// ferry's version.
    pub ferry_version: String,
    /// How the run ended.
    pub status: Status,
    /// The tenant as asked for.
    pub tenant: String,
    /// The root row's key.
    pub user_id: String,
    /// The source (no password).
    pub source: String,
    /// The bundle (or a split set's manifest); none for `--plan`.
    pub output: Option<String>,
    /// Rows read and written.
    #[serde(flatten)]
    pub counts: Counts,
    /// Bundled tables in dependency order.
    pub tables: Vec<ExportTable>,
    /// Rows each relation brought in.
    pub paths: Vec<PathCount>,
    /// Relations not followed (the spec's `stop`).
    pub stopped: Vec<String>,
    /// Columns sanitized, and how.
    pub sanitized: Vec<Treated>,
    /// The bundle's checksum.
    pub checksum: Option<String>,
    /// Bytes of the bundle as written (compressed, encrypted).
    pub bytes_written: u64,
    /// Seconds.
    pub seconds: f64,
    /// What stopped a failed run.
    pub errors: Vec<ReportedError>,
}

impl ExportReport {
    fn push_error(&mut self, e: &Error) {
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(ReportedError::from(e));
        }
    }

    /// The traversal as `ferry export --plan` prints it: tables with their rows, the relations followed
    /// and the rows each brought in, what is not followed, and what sanitizing will do.
    pub fn render_plan(&self) -> String {
        let mut out = format!(
            "tenant {} (root row {}) in {}: {} rows in {} tables\n",
            self.tenant,
            self.user_id,
            self.source,
            self.counts.read,
            self.tables.len()
        );
        out.push_str("\ntables, in the order they are written and imported:\n");
        for t in &self.tables {
            let own = t.records - t.references;
            out.push_str(&format!(
                "  {:<28} {:>8} own + {:>6} references\n",
                quote_ident(&t.name),
                own,
                t.references
            ));
        }
        out.push_str("\nkey paths followed (down: rows that reference the tenant's rows; up: rows they reference):\n");
        for p in &self.paths {
            let spec = if p.declared { "" } else { "  (from the spec)" };
            out.push_str(&format!(
                "  {:<4} {:<48} {:>8} rows{spec}\n",
                p.direction, p.relation, p.rows
            ));
        }
        for s in &self.stopped {
            out.push_str(&format!("  not followed: {s}\n"));
        }
        if self.sanitized.is_empty() {
            out.push_str("\nsanitized: nothing matched the rules\n");
        } else {
            out.push_str("\nsanitized:\n");
            for t in &self.sanitized {
                out.push_str(&format!(
                    "  {}.{}: {} ({})\n",
                    t.table, t.column, t.action, t.reason
                ));
            }
        }
        out
    }

    /// The closing lines `ferry export` prints.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "exported {} ({}): {} rows in {} tables ({} references) to {}, {} bytes, checksum {}",
            self.tenant,
            self.user_id,
            self.counts.written,
            self.tables.len(),
            self.tables.iter().map(|t| t.references).sum::<u64>(),
            self.output.as_deref().unwrap_or("-"),
            self.bytes_written,
            self.checksum.as_deref().unwrap_or("-"),
        );
        for t in &self.sanitized {
            out.push_str(&format!(
                "\nsanitized {}.{}: {} ({}; {} values)",
                t.table, t.column, t.action, t.reason, t.values
            ));
        }
        out
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        write_json(self, path)
    }
}

/// Writes any report as pretty JSON.
pub(crate) fn write_json<T: Serialize>(report: &T, path: &std::path::Path) -> Result<()> {
    let shown = path.display().to_string();
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
    std::fs::write(path, text + "\n").map_err(|e| Error::io(Stage::Sink, Some(&shown), e))
}

/// An export checked against its environment, ready to run.
#[derive(Debug)]
pub struct BuiltExport {
    pub(crate) job: ExportJob,
    pub(crate) root: Root,
    pub(crate) db: Db,
    pub(crate) spec: Spec,
    pub(crate) envelope: Option<EnvelopePlan>,
}

/// The envelope an export writes through, decided at build time (the key is read when the run starts).
#[derive(Debug, Clone)]
pub(crate) struct EnvelopePlan {
    pub path: PathBuf,
    pub compression: CompressionSpec,
    pub key: Option<Arc<crate::envelope::KeyMaterial>>,
    pub split: SplitOptions,
    pub checksum_file: bool,
}

impl EnvelopePlan {
    fn open(&self) -> Result<Envelope> {
        Ok(Envelope {
            compression: self.compression,
            key: self.key.clone(),
            split: self.split,
            checksum_file: self.checksum_file,
        })
    }

    /// Where the bundle is, once written: the file, or the split set's manifest.
    pub fn shown(&self) -> String {
        if self.split.splits() {
            bundle::manifest_path(&self.path).display().to_string()
        } else {
            self.path.display().to_string()
        }
    }
}

impl ExportJob {
    /// The export of `tenant` from `from` into `to`, everything else as `ferry export` defaults it.
    pub fn new(tenant: Root, from: impl Into<String>, to: impl Into<PathBuf>) -> ExportJob {
        ExportJob {
            tenant: Some(tenant),
            from: Some(from.into()),
            to: Some(to.into()),
            ..ExportJob::default()
        }
    }

    /// Checks the job before anything is opened: a configuration error (exit code 2) names what is wrong.
    pub fn build(&self, env: &Environment) -> Result<BuiltExport> {
        let root = self.tenant.clone().ok_or_else(|| {
            Error::config("ferry export needs --tenant TABLE:KEY (as in users:123)")
        })?;
        if root.select == Select::All {
            return Err(Error::config(
                "--tenant users:all exports every user: a bundle holds one; use ferry migrate --tenant users:all, \
                 or one export per user",
            ));
        }
        let from = self
            .from
            .as_deref()
            .ok_or_else(|| Error::config("ferry export needs --from DATABASE"))?;
        let db = Db::parse(from, "--from", env)?;
        let mut spec = match &self.spec {
            Some(path) => Spec::load(path)?,
            None => Spec::default(),
        };
        spec.include.extend(self.include.iter().cloned());
        let mut paths = RunPaths::new();
        if let Db::Sqlite(file) = &db {
            paths.database("--from", file);
        }
        if let Some(spec) = &self.spec {
            paths.read("--spec", spec);
        }
        if let Some(report) = &self.report {
            paths.write("--report", report);
        }
        let envelope = match (&self.to, self.plan) {
            (_, true) => None,
            (None, false) => {
                return Err(Error::config(
                    "ferry export needs --to FILE (NAME.bundle.json, .json.gz, .json.gz.enc, …), or --plan",
                ))
            }
            (Some(path), false) => Some(self.envelope(path, env, &mut paths)?),
        };
        paths.check()?;
        Ok(BuiltExport {
            job: self.clone(),
            root,
            db,
            spec,
            envelope,
        })
    }

    fn envelope(
        &self,
        path: &std::path::Path,
        env: &Environment,
        paths: &mut RunPaths,
    ) -> Result<EnvelopePlan> {
        let (named, named_encrypted) = bundle::named_envelope(path);
        let compression = match &self.compress {
            Some(text) => Compression::parse(text)?,
            None => CompressionSpec::new(named),
        };
        let encrypted = named_encrypted || self.encrypt || self.key.is_some();
        let key = match encrypted {
            true => Some(super::key_source(self.key.as_ref(), env).ok_or_else(|| {
                Error::config(format!(
                    "{} is to be encrypted: give the key with --key-file, --key-env NAME or FERRY_KEY / \
                     EXPORT_ENCRYPTION_KEY, or a passphrase with --passphrase-env / --passphrase-file",
                    path.display()
                ))
            })?),
            false => None,
        };
        if !self.sanitize && !encrypted {
            return Err(Error::config(
                "--no-sanitize keeps passwords and tokens in the bundle: it is allowed only into an encrypted \
                 bundle (a name ending in .enc, or --encrypt with a key)",
            ));
        }
        let split = SplitOptions {
            max_bytes: self.split_size,
            max_records: self.split_records,
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if split.splits() && !name.contains(".ndjson") {
            return Err(Error::config(format!(
                "a split bundle is NDJSON: name it NAME.bundle.ndjson[.gz][.enc], not {name}"
            )));
        }
        if !split.splits() && name.contains(".ndjson") {
            return Err(Error::config(format!(
                "{name}: a single bundle is one JSON document (NAME.bundle.json…); NDJSON is for split sets \
                 (--split-size or --split-records)"
            )));
        }
        if split.splits() {
            // Parts are `<stem>-00001<suffix>` beside the manifest `<stem>.manifest.json`.
            let manifest = bundle::manifest_path(path);
            paths.write("the manifest of --to", &manifest);
            let stem = manifest
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".manifest.json"))
                .unwrap_or_default()
                .to_owned();
            let suffix = name
                .strip_prefix(stem.as_str())
                .unwrap_or_default()
                .to_owned();
            let dir = manifest
                .parent()
                .unwrap_or(std::path::Path::new(""))
                .to_owned();
            paths.write_family(
                "--to (its parts)",
                &dir,
                &format!("{stem}-"),
                true,
                &[suffix.as_str()],
            );
        } else {
            paths.write("--to", path);
            if self.checksum {
                paths.write(
                    "the checksum of --to",
                    &PathBuf::from(format!("{}.sha256", path.display())),
                );
            }
        }
        match &key {
            Some(KeySource::KeyFile(file)) => {
                paths.read("--key-file", file);
            }
            Some(KeySource::PassphraseFile(file)) => {
                paths.read("--passphrase-file", file);
            }
            _ => {}
        }
        let key = match key {
            Some(source) => Some(Arc::new(source.resolve(env)?)),
            None => None,
        };
        Ok(EnvelopePlan {
            path: path.to_owned(),
            compression,
            key,
            split,
            checksum_file: self.checksum,
        })
    }
}

/// Runs an export job (builds it against `env`, then runs it); the report comes back either way.
pub fn export(job: &ExportJob, env: &Environment, ctx: &RunContext) -> RunResult<ExportReport> {
    match job.build(env) {
        Ok(built) => built.run(ctx),
        Err(error) => {
            let mut report = ExportReport::begin(job);
            finish(&mut report, Instant::now(), Some(&error), ctx);
            Err(Box::new(Failed { report, error }))
        }
    }
}

impl ExportReport {
    fn begin(job: &ExportJob) -> ExportReport {
        ExportReport {
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            tenant: job.tenant.as_ref().map(Root::to_string).unwrap_or_default(),
            source: job
                .from
                .as_deref()
                .map(without_password)
                .unwrap_or_default(),
            ..ExportReport::default()
        }
    }
}

fn finish(report: &mut ExportReport, started: Instant, error: Option<&Error>, ctx: &RunContext) {
    report.seconds = started.elapsed().as_secs_f64();
    report.status = match error {
        None => Status::Succeeded,
        Some(e) if e.is_cancelled() => Status::Cancelled,
        Some(_) => Status::Failed,
    };
    if let Some(e) = error {
        report.push_error(e);
    }
    ctx.emit(Event::Finished {
        status: report.status,
        progress: Progress {
            counts: report.counts,
            seconds: report.seconds,
            ..Progress::default()
        },
    });
}

/// The source of exports, kept open across tenants: its connection and its schema graph (`ferry migrate
/// --tenant users:all` reads the catalog once per worker, not once per tenant).
pub(crate) struct SourceSession {
    conn: Conn,
    graph: Graph,
}

impl BuiltExport {
    /// Runs the checked export; the report comes back either way.
    pub fn run(self, ctx: &RunContext) -> RunResult<ExportReport> {
        self.run_with(None, ctx)
    }

    /// Opens the source and reads its schema, for [`BuiltExport::run_in`].
    pub(crate) fn open_session(&self) -> Result<SourceSession> {
        let mut conn = self.db.open(&self.job.connect, false)?;
        let plan = read_plan(&mut conn, &self.db.label(), &self.spec)?;
        let graph = Graph::new(&plan, &self.spec, conn.is_postgres())?;
        Ok(SourceSession { conn, graph })
    }

    /// Runs the checked export on an open session (made by an export of the same source and spec).
    pub(crate) fn run_in(
        self,
        session: &mut SourceSession,
        ctx: &RunContext,
    ) -> RunResult<ExportReport> {
        self.run_with(Some(session), ctx)
    }

    fn run_with(
        self,
        session: Option<&mut SourceSession>,
        ctx: &RunContext,
    ) -> RunResult<ExportReport> {
        let started = Instant::now();
        let mut report = ExportReport::begin(&self.job);
        report.source = self.db.label();
        let result = self.execute(session, ctx, &mut report);
        finish(&mut report, started, result.as_ref().err(), ctx);
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(Box::new(Failed { report, error })),
        }
    }

    fn execute(
        &self,
        session: Option<&mut SourceSession>,
        ctx: &RunContext,
        report: &mut ExportReport,
    ) -> Result<()> {
        let label = self.db.label();
        ctx.emit(Event::Started {
            kind: RunKind::Export,
            input: label.clone(),
            output: self
                .envelope
                .as_ref()
                .map(EnvelopePlan::shown)
                .unwrap_or_default(),
            total_bytes: None,
        });
        ctx.step("plan");
        let mut own;
        let session = match session {
            Some(session) => session,
            None => {
                own = self.open_session()?;
                &mut own
            }
        };
        let SourceSession { conn, graph } = session;
        let graph = &*graph;
        let writer = |reader: &mut Reader<'_, '_>| -> Result<()> {
            let roots = root_keys(reader, graph, &self.root, &label)?;
            let root = graph.find(&self.root.table)?;
            let key = match roots.as_slice() {
                [key] => key.clone(),
                [] => {
                    return Err(Error::data(
                        Stage::Source,
                        Position::file(&label),
                        format!("user not found: {} has no row {}", label, self.root),
                    ))
                }
                many => {
                    return Err(Error::data(
                        Stage::Source,
                        Position::file(&label),
                        format!(
                            "{} matches {} rows of {}; a tenant is one row: choose it by its key",
                            self.root,
                            many.len(),
                            quote_ident(&self.root.table)
                        ),
                    ))
                }
            };
            ctx.step("subset");
            let include: Vec<usize> = self
                .spec
                .include
                .iter()
                .map(|t| graph.find(t))
                .collect::<Result<_>>()?;
            let subset = subset::find(
                reader,
                graph,
                root,
                vec![key.clone()],
                &include,
                &label,
                ctx,
            )?;
            let mut export = Exporter {
                graph,
                subset: &subset,
                spec: &self.spec,
                sanitize: self.job.sanitize,
                root,
                key: &key,
                tenant: &self.root,
                label: &label,
                kind: if matches!(self.db, Db::Postgres(_)) {
                    "postgres"
                } else {
                    "sqlite"
                },
            };
            export.describe(report);
            let Some(envelope) = &self.envelope else {
                return Ok(());
            };
            ctx.step("write");
            export.write(reader, envelope, report, ctx)
        };
        read_transaction(conn, &label, writer)
    }
}

/// Runs `work` inside one read transaction on the source: a single snapshot for the subset and its rows.
pub(crate) fn read_transaction(
    conn: &mut Conn,
    label: &str,
    work: impl FnOnce(&mut Reader<'_, '_>) -> Result<()>,
) -> Result<()> {
    match conn {
        Conn::Sqlite(c) => {
            c.execute_batch("BEGIN")
                .map_err(|e| crate::db::sqlite::sql_error(Stage::Source, label, "BEGIN", e))?;
            let result = work(&mut Reader::Sqlite(c));
            let _ = c.execute_batch("ROLLBACK");
            result
        }
        Conn::Postgres(c) => {
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .map_err(|e| {
                    crate::db::postgres::pg_error(
                        Stage::Source,
                        "cannot start a read transaction",
                        &e,
                    )
                })?;
            let result = work(&mut Reader::Postgres(c, std::marker::PhantomData));
            let _ = c.batch_execute("ROLLBACK");
            result
        }
    }
}

/// The identities of the root rows a tenant names.
pub(crate) fn root_keys(
    reader: &mut Reader<'_, '_>,
    graph: &Graph,
    root: &Root,
    label: &str,
) -> Result<Vec<Key>> {
    let node = &graph.nodes[graph.find(&root.table)?];
    let filter = match &root.select {
        Select::All => Filter::All,
        Select::Column { column, value } => {
            if !node.plan.columns.iter().any(|c| &c.name == column) {
                return Err(Error::config(format!(
                    "--tenant {root}: {} has no column {}",
                    quote_ident(node.name()),
                    quote_ident(column)
                )));
            }
            Filter::Equals { column, value }
        }
        Select::Key(value) => match node.plan.primary_key.as_slice() {
            [column] => Filter::Equals { column, value },
            [] => {
                return Err(Error::config(format!(
                    "--tenant {root}: {} has no primary key; name a column, as {}:COLUMN=VALUE",
                    quote_ident(node.name()),
                    root.table
                )))
            }
            _ => {
                return Err(Error::config(format!(
                    "--tenant {root}: the primary key of {} has several columns; name one, as {}:COLUMN=VALUE",
                    quote_ident(node.name()),
                    root.table
                )))
            }
        },
    };
    let mut keys = Vec::new();
    reader.identities(node, filter, label, &mut |k| {
        keys.push(k);
        Ok(())
    })?;
    Ok(keys)
}

/// One export under way.
struct Exporter<'a> {
    graph: &'a Graph,
    subset: &'a Subset,
    spec: &'a Spec,
    sanitize: bool,
    root: usize,
    key: &'a Key,
    tenant: &'a Root,
    label: &'a str,
    kind: &'static str,
}

impl Exporter<'_> {
    fn sanitizer(&self, node: &Node) -> TableSanitizer {
        TableSanitizer::new(node.name(), &node.copy.columns, self.spec, self.sanitize)
    }

    /// Fills the report with what the subset holds (all a `--plan` shows).
    fn describe(&self, report: &mut ExportReport) {
        report.user_id = user_id(self.key);
        report.paths = self.subset.paths.clone();
        report.stopped = self
            .graph
            .edges
            .iter()
            .filter(|e| e.stopped)
            .map(|e| self.graph.edge_text(e))
            .collect();
        report.tables = self
            .subset
            .tables
            .iter()
            .map(|&i| {
                let set = &self.subset.sets[i];
                ExportTable {
                    name: self.graph.nodes[i].name().to_owned(),
                    records: set.len() as u64,
                    references: (set.len() - set.owned()) as u64,
                    checksum: String::new(),
                }
            })
            .collect();
        report.counts.read = report.tables.iter().map(|t| t.records).sum();
        // What the rules will do, before any value is seen (value matches are added as rows are read).
        report.sanitized = self
            .subset
            .tables
            .iter()
            .flat_map(|&i| self.sanitizer(&self.graph.nodes[i]).treated())
            .collect();
    }

    fn head(&self, sanitizers: &[TableSanitizer]) -> BundleHead {
        let in_bundle = |i: usize| self.subset.tables.contains(&i);
        let tables = self
            .subset
            .tables
            .iter()
            .zip(sanitizers)
            .map(|(&i, sanitizer)| {
                let node = &self.graph.nodes[i];
                let set = &self.subset.sets[i];
                let exported = sanitizer.exported();
                let omitted = sanitizer.omitted();
                let columns = node
                    .copy
                    .columns
                    .iter()
                    .map(|(name, ty)| {
                        let plan = node.plan.columns.iter().find(|c| &c.name == name);
                        let ty = exported
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(ty, |(_, t)| t);
                        BundleColumn {
                            name: name.clone(),
                            ty: ty.sql(),
                            not_null: plan.is_some_and(|c| c.not_null),
                            generated: plan.is_some_and(|c| c.translation.identity),
                            omitted: omitted.contains(name),
                        }
                    })
                    .collect();
                let foreign_keys = self
                    .graph
                    .edges
                    .iter()
                    .filter(|e| e.child == i && in_bundle(e.parent))
                    .map(|e| BundleForeignKey {
                        columns: e.from.clone(),
                        references: self.graph.nodes[e.parent].name().to_owned(),
                        to: e.to.clone(),
                        declared: e.declared,
                    })
                    .collect();
                BundleTable {
                    name: node.name().to_owned(),
                    columns,
                    primary_key: node.plan.primary_key.clone(),
                    uniques: node
                        .plan
                        .uniques
                        .iter()
                        .map(|(_, cols)| cols.clone())
                        .collect(),
                    foreign_keys,
                    records: set.len() as u64,
                    references: (set.len() - set.owned()) as u64,
                    parts: None,
                }
            })
            .collect();
        let root = &self.graph.nodes[self.root];
        let mut root_key = serde_json::Map::new();
        for ((column, _), part) in root.identity_columns().iter().zip(self.key.parts()) {
            let value = match part {
                KeyVal::Int(i) => serde_json::Value::from(i),
                other => other
                    .text()
                    .map_or(serde_json::Value::Null, serde_json::Value::String),
            };
            root_key.insert(column.clone(), value);
        }
        BundleHead {
            format: bundle::FORMAT.to_owned(),
            version: bundle::VERSION.to_owned(),
            user_id: user_id(self.key),
            tenant: self.tenant.to_string(),
            root_table: root.name().to_owned(),
            root_key,
            export_date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
            source: self.label.to_owned(),
            source_kind: self.kind.to_owned(),
            tables,
        }
    }

    fn write(
        &mut self,
        reader: &mut Reader<'_, '_>,
        plan: &EnvelopePlan,
        report: &mut ExportReport,
        ctx: &RunContext,
    ) -> Result<()> {
        let mut sanitizers: Vec<TableSanitizer> = self
            .subset
            .tables
            .iter()
            .map(|&i| self.sanitizer(&self.graph.nodes[i]))
            .collect();
        let head = self.head(&sanitizers);
        let exported: Vec<(String, Vec<(String, crate::migrate::PgType)>)> = head
            .tables
            .iter()
            .map(|t| Ok((t.name.clone(), t.exported()?)))
            .collect::<Result<_>>()?;
        let mut sums = Checksums::new(&exported);
        let total = report.counts.read;
        let mut writer = BundleWriter::create(&plan.path, head, &plan.open()?)?;
        let started = Instant::now();
        let mut written = 0u64;
        for (position, &i) in self.subset.tables.iter().enumerate() {
            ctx.cancel.check()?;
            let node = &self.graph.nodes[i];
            let (keys, leading) = self.subset.sets[i].ordered();
            let names: Vec<FieldName> = exported[position]
                .1
                .iter()
                .map(|(n, _)| FieldName::from(n.as_str()))
                .collect();
            let types: Vec<crate::migrate::PgType> = exported[position]
                .1
                .iter()
                .map(|(_, t)| t.clone())
                .collect();
            writer.begin_table(position)?;
            let sanitizer = &mut sanitizers[position];
            let mut in_table = 0u64;
            // References first, then the tenant's own rows (each query returns its rows in key order).
            let (references, own) = keys.split_at(leading);
            let mut each_row = |row: Vec<crate::migrate::value::Datum>| -> Result<()> {
                let row: Vec<_> = sanitizer.apply(row).into_iter().map(carried).collect();
                sums.add(position, &row);
                let mut record = Record::with_capacity(row.len());
                for ((name, datum), ty) in names.iter().zip(&row).zip(&types) {
                    record.push_unchecked(name.clone(), value_of(datum, ty));
                }
                writer.row(&record)?;
                written += 1;
                in_table += 1;
                if written % BATCH_ROWS == 0 {
                    ctx.emit(Event::Progress(Progress {
                        counts: Counts {
                            read: written,
                            written,
                            ..Counts::default()
                        },
                        total_records: Some(total),
                        table: Some(node.name().to_owned()),
                        seconds: started.elapsed().as_secs_f64(),
                        ..Progress::default()
                    }));
                    ctx.cancel.check()?;
                }
                Ok(())
            };
            reader.rows(node, references, self.label, &mut each_row)?;
            reader.rows(node, own, self.label, &mut each_row)?;
            if in_table != keys.len() as u64 {
                return Err(Error::data(
                    Stage::Source,
                    Position::file(self.label),
                    format!(
                        "table {}: {} rows were found but {in_table} could be read back (changed under the export?)",
                        quote_ident(node.name()),
                        keys.len()
                    ),
                ));
            }
            let (_, checksum) = sums.table(position);
            report.tables[position].checksum = checksum;
            ctx.emit(Event::TableDone {
                table: node.name().to_owned(),
                read: in_table,
                written: in_table,
                rejected: 0,
                seconds: started.elapsed().as_secs_f64(),
                line: format!("  {:<28} {:>10} rows", quote_ident(node.name()), in_table),
            });
        }
        report.sanitized = sanitizers
            .iter()
            .flat_map(TableSanitizer::treated)
            .collect();
        let meta = BundleMeta {
            total_records: written,
            tables: report
                .tables
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        TableMeta {
                            records: t.records,
                            references: t.references,
                            checksum: t.checksum.clone(),
                        },
                    )
                })
                .collect(),
            checksum: sums.digest(),
            checksum_encoding: bundle::CHECKSUM_ENCODING.to_owned(),
            sanitized: report.sanitized.clone(),
        };
        report.checksum = Some(meta.checksum.clone());
        report.bytes_written = writer.finish(&meta)?;
        report.counts.written = written;
        report.output = Some(plan.shown());
        Ok(())
    }
}

/// A root key as the bundle's `userId` shows it.
fn user_id(key: &Key) -> String {
    key.parts()
        .iter()
        .map(|p| p.text().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",")
}
