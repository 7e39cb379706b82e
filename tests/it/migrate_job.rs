//! `ferry migrate` as a library run: a job cancelled from another thread in the middle of its copy ends
//! like a failed strict run (the target as it was, the state saying so) with the status `cancelled` and
//! its report so far; and the job `--print-job` prints, run from its JSON, gives the target the command
//! line gives.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use ferry::migrate::{diff, migrate, run_migrate_job, DiffJob, MigrateJob};
use ferry::{Environment, Event, Observer, RunContext, Status};

use crate::pg::{cluster, PASSWORD};
use crate::support::{ferry_env, ok};

const ROWS: u64 = 60_000;

/// A SQLite database with two tables of [`ROWS`] rows each, a key between them and an index.
fn big_sqlite(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC(10,2), at DATETIME);
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id), note TEXT);
         CREATE INDEX child_parent ON child (parent);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO parent SELECT i, 'name ' || i, i / 100.0, '2024-01-01 00:00:00' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO child SELECT i, i, hex(randomblob(16)) FROM n;"
    ))
    .unwrap();
}

/// An observer that, at the `after`-th progress event, hands over to the test's thread (which cancels the
/// run) and waits until it has: the cancellation comes from another thread, mid-copy, every time.
struct HandOver {
    after: usize,
    seen: AtomicUsize,
    /// Rows read when the run was handed over.
    read: AtomicUsize,
    reached: Mutex<mpsc::Sender<()>>,
    resume: Mutex<mpsc::Receiver<()>>,
}

impl Observer for HandOver {
    fn event(&self, event: &Event) {
        if let Event::Notice { message } = event {
            eprintln!("{message}");
        }
        if let Event::Progress(progress) = event {
            if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
                self.read
                    .store(progress.counts.read as usize, Ordering::SeqCst);
                let _ = self.reached.lock().unwrap().send(());
                let _ = self.resume.lock().unwrap().recv();
            }
        }
    }
}

/// Runs `job`, cancels it from this thread at its third progress event, and returns what the run gave back
/// with the rows it had read by then.
fn cancel_mid_copy(
    job: &MigrateJob,
    env: &Environment,
) -> (Box<ferry::Failed<ferry::migrate::MigrateReport>>, u64) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (resume_tx, resume_rx) = mpsc::channel();
    let observer = Arc::new(HandOver {
        after: 3,
        seen: AtomicUsize::new(0),
        read: AtomicUsize::new(0),
        reached: Mutex::new(reached_tx),
        resume: Mutex::new(resume_rx),
    });
    let ctx = RunContext::new(observer.clone());
    let token = ctx.cancel.clone();
    std::thread::scope(|s| {
        let run = s.spawn(|| migrate(job, env, &ctx));
        if reached_rx
            .recv_timeout(std::time::Duration::from_secs(300))
            .is_err()
        {
            let ended = run.join().unwrap().map(|r| r.status);
            panic!("the run never reached its third batch: {ended:?}");
        }
        token.cancel();
        resume_tx.send(()).unwrap();
        let result = run.join().unwrap();
        let read = observer.read.load(Ordering::SeqCst) as u64;
        (result.expect_err("a cancelled run fails"), read)
    })
}

#[test]
fn a_migration_cancelled_mid_copy_leaves_the_target_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("big.db");
    big_sqlite(&source);
    let target = cluster().fresh_database("cancelled");
    let env = Environment::empty();

    // SQLite → PostgreSQL: the tables it created are dropped.
    let job = MigrateJob {
        state: dir.path().join("to-pg.state.json"),
        rejects: dir.path().join("rejects"),
        jobs: 1,
        ..MigrateJob::new(source.display().to_string(), target.clone())
    };
    let (failed, read) = cancel_mid_copy(&job, &env);
    assert!(failed.error.is_cancelled(), "{}", failed.error);
    assert_eq!(failed.error.exit_code(), 130);
    assert!(read > 0 && read < ROWS, "cancelled mid-copy, at row {read}");
    let report = &failed.report;
    assert_eq!(report.status, Status::Cancelled);
    // The report counts the tables the run finished: none, the first was still being copied.
    assert!(
        report.tables.is_empty() && report.counts.read == 0,
        "{report:?}"
    );
    assert!(report.errors[0].message.contains("cancelled"));
    assert_eq!(
        cluster().psql(
            &target,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public'"
        ),
        "0",
        "nothing of the run is left in the target"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&job.state).unwrap()).unwrap();
    assert_eq!(state["phase"], "rolled-back");

    // The same job runs to the end afterwards: the cancelled run left nothing in its way.
    let fresh = MigrateJob {
        state: dir.path().join("again.state.json"),
        ..job.clone()
    };
    let report = migrate(&fresh, &env, &RunContext::default()).expect("a full run");
    assert_eq!(report.status, Status::Succeeded);
    assert_eq!(report.counts.written, 2 * ROWS);
    assert_eq!(report.valid, Some(true));

    // PostgreSQL → SQLite: the file the run created is gone.
    let back = dir.path().join("back.db");
    let job = MigrateJob {
        state: dir.path().join("to-sqlite.state.json"),
        rejects: dir.path().join("rejects"),
        ..MigrateJob::new(target, back.display().to_string())
    };
    let (failed, read) = cancel_mid_copy(&job, &env);
    assert!(failed.error.is_cancelled(), "{}", failed.error);
    assert!(read > 0 && read < ROWS, "cancelled mid-copy, at row {read}");
    assert_eq!(failed.report.status, Status::Cancelled);
    assert!(
        !back.exists(),
        "the SQLite file this run created is removed; state: {}",
        std::fs::read_to_string(&job.state).unwrap_or_default()
    );
}

#[test]
fn a_printed_job_run_from_json_gives_the_target_the_command_line_gives() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let source = d.join("app.db");
    rusqlite::Connection::open(&source)
        .unwrap()
        .execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE NOT NULL, active BOOLEAN, meta JSON);
             CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id),
                                  total NUMERIC(10,2) CHECK (total >= 0), placed DATE, raw BLOB);
             CREATE INDEX orders_user ON orders (user_id);
             INSERT INTO users VALUES (1, 'a@x', 1, '{\"k\": [1, 2]}'), (2, 'b@x', 0, NULL);
             INSERT INTO orders VALUES (1, 1, 12.5, '2024-02-29', X'00ff'), (2, 2, 0.99, NULL, NULL),
                                       (3, 1, 'oops', '2024-03-01', NULL);",
        )
        .unwrap();
    let by_cli = cluster().fresh_database("job_cli");
    let by_json = cluster().fresh_database("job_json");
    let path = |name: &str| d.join(name).display().to_string();
    let flags = |to: &str, state: &str| {
        vec![
            "migrate".to_owned(),
            "--from".to_owned(),
            path("app.db"),
            "--to".to_owned(),
            to.to_owned(),
            "--on-error".to_owned(),
            "lenient".to_owned(),
            "--rejects".to_owned(),
            path(&format!("{state}-rejects")),
            "--state".to_owned(),
            path(&format!("{state}.json")),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry_env(d, &args, &[])
    };
    let mut cli = flags(&by_cli, "cli");
    cli.extend(["--report".to_owned(), path("cli-report.json")]);
    ok(&run(cli));

    let mut print = flags(&by_json, "json");
    print.push("--print-job".to_owned());
    let printed = run(print);
    ok(&printed);
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(!text.contains(PASSWORD), "no password in a job: {text}");
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["job"], "migrate");
    value.as_object_mut().unwrap().remove("job");
    let job: MigrateJob = serde_json::from_value(value).unwrap();
    assert!(!json_state_exists(d), "printing a job runs nothing");
    // The password comes from the environment the front end captured, as PGPASSWORD.
    let env = Environment::empty().with("PGPASSWORD", PASSWORD);
    let report = run_migrate_job(job, &env, &RunContext::default()).expect("the job runs");

    let cli_report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("cli-report.json")).unwrap()).unwrap();
    let json_report = serde_json::to_value(&report).unwrap();
    for key in [
        "status",
        "read",
        "written",
        "rejected",
        "objects",
        "valid",
        "untranslated",
    ] {
        assert_eq!(cli_report[key], json_report[key], "{key}");
    }
    let tables =
        |r: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
            r["tables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["name"].clone(),
                        t["rejected"].clone(),
                        t["target_checksum"].clone(),
                    )
                })
                .collect()
        };
    assert_eq!(tables(&cli_report), tables(&json_report));
    assert_eq!(json_report["rejected"], 1);
    let compared = diff(&DiffJob::new(by_cli, by_json), &env).unwrap();
    assert!(compared.equal, "{}", compared.render());
}

fn json_state_exists(dir: &Path) -> bool {
    dir.join("json.json").exists()
}
