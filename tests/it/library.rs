//! The library as a front end uses it: a job built and run with an observer and a cancellation token, the
//! report returned on success and on failure alike, caller streams in place of standard input and output.
//! A run cancelled from its observer leaves every kind of target as it was — a file, a SQLite database
//! (also one the run created), a PostgreSQL table — and its report says `cancelled` with the counts so far.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ferry::observe::{Event, Status};
use ferry::sink::Memory;
use ferry::{CancelToken, ConvertJob, Environment, RunContext, Streams};

use crate::pg::cluster;
use crate::support::file_names;

/// A CSV of `rows` records `id,name`.
fn csv(rows: usize) -> String {
    let mut text = String::from("id,name\n");
    for i in 0..rows {
        text.push_str(&format!("{i},name {i}\n"));
    }
    text
}

/// A context whose observer cancels the run once `after` records have been read, and keeps every event.
fn cancelling_after(after: u64) -> (RunContext, Arc<Mutex<Vec<Event>>>) {
    let token = CancelToken::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let (seen, cancel) = (Arc::clone(&events), token.clone());
    let observer = move |event: &Event| {
        if let Event::Progress(p) = event {
            if p.counts.read >= after {
                cancel.cancel();
            }
        }
        seen.lock().unwrap().push(event.clone());
    };
    let ctx = RunContext {
        observer: Arc::new(observer),
        cancel: token,
    };
    (ctx, events)
}

/// Runs `job` with a context that cancels it after 300 records and checks what every cancelled run
/// must say: the cancelled error and status, counts that balance and stop short of the input.
fn run_cancelled(job: &ConvertJob, rows: u64) -> ferry::Report {
    let (ctx, events) = cancelling_after(300);
    let failed = ferry::convert(job, &Environment::empty(), &ctx).expect_err("cancelled");
    assert!(failed.error.is_cancelled(), "{}", failed.error);
    assert_eq!(failed.error.exit_code(), 130);
    let report = failed.report;
    assert_eq!(report.status, Status::Cancelled);
    assert!(!report.ok);
    assert!(
        report.counts.read >= 300 && report.counts.read < rows,
        "{:?}",
        report.counts
    );
    assert!(report.balances(), "{:?}", report.counts);
    assert!(report.seconds > 0.0 && report.input_format == "csv");
    assert!(report
        .errors
        .last()
        .is_some_and(|e| e.message.contains("cancelled")));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["status"], "cancelled");
    let events = events.lock().unwrap();
    assert!(matches!(events.first(), Some(Event::Started { .. })));
    assert!(matches!(
        events.last(),
        Some(Event::Finished {
            status: Status::Cancelled,
            ..
        })
    ));
    report
}

/// A job reading `rows` records from `dir/in.csv` in batches of 100.
fn job_in(dir: &Path, rows: usize, output: String) -> ConvertJob {
    fs::write(dir.join("in.csv"), csv(rows)).unwrap();
    let mut job = ConvertJob::new(dir.join("in.csv").display().to_string(), output);
    job.batch_size = 100;
    job
}

#[test]
fn a_cancelled_run_leaves_a_file_as_it_was_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    fs::write(&out, "old\n").unwrap();
    let job = job_in(dir.path(), 20_000, out.display().to_string());
    run_cancelled(&job, 20_000);
    assert_eq!(fs::read_to_string(&out).unwrap(), "old\n");
    assert_eq!(file_names(dir.path()), ["in.csv", "out.ndjson"]);
}

#[test]
fn a_cancelled_split_output_leaves_no_part_and_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv.gz");
    let mut job = job_in(dir.path(), 20_000, out.display().to_string());
    job.split.max_records = Some(100);
    run_cancelled(&job, 20_000);
    assert_eq!(file_names(dir.path()), ["in.csv"]);
}

#[test]
fn a_cancelled_sqlite_load_rolls_back_and_removes_a_file_it_created() {
    let dir = tempfile::tempdir().unwrap();
    // A database the run creates is removed, journal files and all.
    let new_db = dir.path().join("new.db");
    let job = job_in(
        dir.path(),
        20_000,
        format!("sqlite://{}?table=t", new_db.display()),
    );
    let report = run_cancelled(&job, 20_000);
    assert_eq!(report.output_format, "sqlite");
    assert_eq!(file_names(dir.path()), ["in.csv"]);

    // A table that exists keeps exactly its rows.
    let old_db = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old_db).unwrap();
    conn.execute_batch("CREATE TABLE t (id TEXT, name TEXT); INSERT INTO t VALUES ('x', 'kept');")
        .unwrap();
    drop(conn);
    let job = job_in(
        dir.path(),
        20_000,
        format!("sqlite://{}?table=t", old_db.display()),
    );
    run_cancelled(&job, 20_000);
    let conn = rusqlite::Connection::open(&old_db).unwrap();
    let rows: Vec<String> = conn
        .prepare("SELECT id || ':' || name FROM t")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["x:kept"]);
}

#[test]
fn a_cancelled_postgres_load_rolls_back() {
    let pg = cluster();
    let url = pg.fresh_database("cancelled");
    pg.psql(
        &url,
        "CREATE TABLE t (id text, name text); INSERT INTO t VALUES ('x', 'kept');",
    );
    let dir = tempfile::tempdir().unwrap();
    let job = job_in(dir.path(), 20_000, format!("{url}?table=t"));
    let report = run_cancelled(&job, 20_000);
    assert_eq!(report.table.as_deref(), Some("t"));
    assert_eq!(pg.psql(&url, "SELECT id || ':' || name FROM t"), "x:kept");
    // A table the run would have created is not there either.
    let job = job_in(dir.path(), 20_000, format!("{url}?table=fresh"));
    run_cancelled(&job, 20_000);
    assert_eq!(
        pg.psql(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'fresh'"
        ),
        "0"
    );
}

#[test]
fn a_run_reads_and_writes_the_callers_streams() {
    let mut job = ConvertJob::new("-", "-");
    job.input_format = Some("csv".into());
    job.output_format = Some("ndjson".into());
    job.batch_size = 7;
    let out = Memory::default();
    let streams = Streams::new()
        .input(std::io::Cursor::new(csv(50).into_bytes()))
        .output(out.clone());
    let built = job.build(&Environment::empty()).unwrap();
    let report = built
        .run_with_streams(streams, &RunContext::default())
        .unwrap();
    assert_eq!((report.counts.read, report.counts.written), (50, 50));
    assert_eq!(report.status, Status::Succeeded);
    let text = String::from_utf8(out.contents()).unwrap();
    assert_eq!(text.lines().count(), 50);
    assert_eq!(
        text.lines().nth(49),
        Some(r#"{"id":"49","name":"name 49"}"#)
    );
    assert_eq!(report.bytes_written, text.len() as u64);

    // A stream is for an end the job says is `-`.
    let dir = tempfile::tempdir().unwrap();
    let job = job_in(
        dir.path(),
        3,
        dir.path().join("o.json").display().to_string(),
    );
    let failed = job
        .build(&Environment::empty())
        .unwrap()
        .run_with_streams(
            Streams::new().output(Memory::default()),
            &RunContext::default(),
        )
        .unwrap_err();
    assert!(failed.error.is_config(), "{}", failed.error);
    assert_eq!(file_names(dir.path()), ["in.csv"]);
}

#[test]
fn a_failed_run_returns_its_report_and_a_refused_job_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("t.yaml"),
        "name: t\nfields:\n  - name: id\n    type: integer\n",
    )
    .unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n2\nthree\n4\n").unwrap();
    let mut job = ConvertJob::new(
        dir.path().join("in.csv").display().to_string(),
        dir.path().join("out.json").display().to_string(),
    );
    job.template = Some(dir.path().join("t.yaml").display().to_string());
    let failed = ferry::convert(&job, &Environment::empty(), &RunContext::default()).unwrap_err();
    let report = &failed.report;
    assert_eq!(report.status, Status::Failed);
    assert_eq!(
        (
            report.counts.read,
            report.counts.written,
            report.counts.rejected
        ),
        (3, 2, 1)
    );
    assert!(report.balances());
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].message.contains("record 3"), "{report:?}");
    assert!(!dir.path().join("out.json").exists());

    // The environment is the caller's: SOURCE_DATE_EPOCH that is not a number refuses the job.
    let env = Environment::empty().with("SOURCE_DATE_EPOCH", "yesterday");
    let failed = ferry::convert(&job, &env, &RunContext::default()).unwrap_err();
    assert!(failed.error.is_config(), "{}", failed.error);
    assert_eq!(failed.report.status, Status::Failed);
    assert_eq!(failed.report.counts.read, 0);
}
