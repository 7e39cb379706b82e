//! `ferry sync`: keeps a target database caught up with a source (by cursor, key and checksum, or SQLite
//! change-capture triggers). Turns the flags into a [`SyncJob`], runs it with the progress observer and a
//! cancellation token (SIGINT/SIGTERM end a continuous sync after its current pass), prints the summary.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::progress::ProgressMode;
use crate::env::Environment;
use crate::error::{Error, Result, Stage};
use crate::observe::{Event, Observer};
use crate::sync::{sync, uninstall, Capture, Deletes, SyncJob};

const EXAMPLES: &str = "Examples:
  # copy once (ferry migrate), then catch up while the application runs
  ferry migrate --from app.db --to postgres
  ferry sync --from app.db --to postgres --cursor updated_at --every 5s
  # exact updates and deletes, no cursor column: triggers in a SQLite source
  ferry sync --from app.db --to postgres --capture triggers --every 2s
  # at the cut-over: wait for lag zero, then compare counts and checksums
  ferry sync --from app.db --to postgres --capture triggers --cutover
  ferry sync --from app.db --to postgres --uninstall

Marks are kept in a _ferry_state table in the target, written by the same
transaction as the rows they cover. Exit codes: 0 done, 1 failed or (with
--cutover) a table differs, 2 usage or configuration, 130 cancelled.";

/// Arguments of `ferry sync`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct SyncArgs {
    /// The source database (sqlite://PATH, a .db path, postgres://…, `postgres`, `sqlite`).
    #[arg(long, value_name = "DATABASE")]
    from: String,

    /// The target database; its tables exist (ferry migrate made them).
    #[arg(long, value_name = "DATABASE")]
    to: Option<String>,

    /// Only these tables (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    tables: Vec<String>,

    /// Leave these tables out (comma-separated).
    #[arg(long, value_name = "TABLES", value_delimiter = ',')]
    exclude: Vec<String>,

    /// How changes are found: cursor (the --cursor column where a table has it, else checksum), checksum
    /// (both sides read in key order), triggers (SQLite source: a change log kept by triggers), logical
    /// (PostgreSQL source: logical replication with pgoutput when wal_level = logical, else cursor).
    #[arg(long, value_name = "HOW", default_value = "cursor", value_parser = parse_capture)]
    capture: Capture,

    /// The cursor column (updated_at, a version number): rows at or past the last mark are read again.
    #[arg(long, value_name = "COLUMN")]
    cursor: Option<String>,

    /// Target rows whose key has gone from the source: delete, ignore, list, or soft:COLUMN (set to the
    /// time they were found gone).
    #[arg(long, value_name = "WHAT", default_value = "delete", value_parser = parse_deletes)]
    deletes: Deletes,

    /// Repeat passes this often (5s, 500ms, 1m) until stopped (SIGINT, SIGTERM).
    #[arg(long, value_name = "INTERVAL", value_parser = parse_interval)]
    every: Option<f64>,

    /// Pass until nothing is behind, then compare row counts and checksums of both sides.
    #[arg(long)]
    cutover: bool,

    /// Stop after this many passes.
    #[arg(long, value_name = "N", default_value_t = 0)]
    passes: u64,

    /// Tables compared at once by cursor or checksum into PostgreSQL, each worker with its own
    /// connections and target transaction (a SQLite target takes one writer).
    #[arg(long, value_name = "N", default_value_t = 1)]
    jobs: usize,

    /// Remove the change-capture triggers and log from the SQLite source (and its marks from --to).
    #[arg(long)]
    uninstall: bool,

    /// --cast-rules, as the migration used them.
    #[arg(long, value_name = "FILE")]
    cast_rules: Option<PathBuf>,

    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,

    /// Progress display: json prints one line per pass with the lag (`{"event":"lag",…}`).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    progress: ProgressMode,

    #[command(flatten)]
    connect: super::connect::ConnectArgs,

    /// No lines on stderr but the summary.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_capture(text: &str) -> std::result::Result<Capture, String> {
    match text {
        "cursor" => Ok(Capture::Cursor),
        "checksum" => Ok(Capture::Checksum),
        "triggers" => Ok(Capture::Triggers),
        "logical" => Ok(Capture::Logical),
        _ => Err("expected cursor, checksum, triggers or logical".into()),
    }
}

/// `delete`, `ignore`, `list` or `soft:COLUMN`.
pub(super) fn parse_deletes(text: &str) -> std::result::Result<Deletes, String> {
    match text {
        "delete" | "detect" => Ok(Deletes::Delete),
        "ignore" | "none" => Ok(Deletes::Ignore),
        "list" => Ok(Deletes::List),
        _ => match text.strip_prefix("soft:") {
            Some(col) if !col.is_empty() => Ok(Deletes::Soft(col.to_owned())),
            _ => Err("expected delete, ignore, list or soft:COLUMN".into()),
        },
    }
}

/// `5s`, `500ms`, `2m`, or a number of seconds.
fn parse_interval(text: &str) -> std::result::Result<f64, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(n * scale),
        _ => Err("expected an interval such as 5s, 500ms or 1m".into()),
    }
}

/// Prints each pass's lag line (the notices) unless quiet.
struct Lines {
    inner: Arc<dyn Observer>,
}

impl Observer for Lines {
    fn event(&self, event: &Event) {
        if let Event::Notice { message } = event {
            eprintln!("{message}");
        }
        self.inner.event(event);
    }
}

/// Runs `ferry sync`.
pub fn run(args: SyncArgs) -> Result<()> {
    let env = Environment::from_process();
    super::warn_about_passwords(&[&args.from, args.to.as_deref().unwrap_or("")]);
    if args.uninstall {
        let n = uninstall(
            &args.from,
            args.to.as_deref(),
            &env,
            &args.connect.options(),
        )?;
        eprintln!("removed {n} change-capture trigger(s) and the _ferry_changes log");
        return Ok(());
    }
    let Some(to) = args.to.clone() else {
        return Err(Error::usage("ferry sync needs --to (or --uninstall)"));
    };
    let job = SyncJob {
        from: args.from.clone(),
        to,
        tables: args.tables.clone(),
        exclude: args.exclude.clone(),
        capture: args.capture,
        cursor: args.cursor.clone(),
        deletes: args.deletes.clone(),
        every: args.every,
        cutover: args.cutover,
        passes: args.passes,
        cast_rules: args.cast_rules.clone(),
        connect: args.connect.options(),
        jobs: args.jobs.max(1),
    };
    let inner = super::progress::observer(args.progress, args.quiet);
    let observer: Arc<dyn Observer> = match args.quiet {
        true => inner,
        false => Arc::new(Lines { inner }),
    };
    let (ctx, _signals) = super::context(observer)?;
    let result = sync(&job, &env, &ctx);
    let report = match &result {
        Ok(r) => r,
        Err(f) => &f.report,
    };
    if let Some(path) = &args.report {
        let shown = path.display().to_string();
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
    }
    eprint!("{}", report.render());
    result.map(drop).map_err(|f| f.error)
}
