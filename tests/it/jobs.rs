//! Jobs as data through the binary: `ferry convert … --print-job` prints the job a command line makes, and
//! `ferry run` of that job gives byte for byte what the command line gives. A failed run's `--report`
//! keeps what it counted; a signal cancels a database load cleanly; `ferry run` runs a migrate job too.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{ferry, ferry_env, file_names, ok, root};

/// A folder's files, by name, with their bytes.
type Files = Vec<(String, Vec<u8>)>;

/// Runs `args` once as a command line and once as the job `--print-job` makes of it, each in a fresh copy
/// of `inputs`; returns the two folders' files after the runs.
fn both_ways(inputs: &[(&str, &[u8])], args: &[&str]) -> (Files, Files) {
    let direct = tempfile::tempdir().unwrap();
    let replay = tempfile::tempdir().unwrap();
    for dir in [direct.path(), replay.path()] {
        for (name, bytes) in inputs {
            fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let stderr = ok(&ferry(direct.path(), args));
    assert!(stderr.contains("ferry: ok"), "{stderr}");

    let mut printing = args.to_vec();
    printing.push("--print-job");
    let printed = ferry(replay.path(), &printing);
    ok(&printed);
    assert!(
        printed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert_eq!(
        file_names(replay.path()).len(),
        inputs.len(),
        "--print-job ran nothing"
    );
    fs::write(replay.path().join("job.json"), &printed.stdout).unwrap();
    let stderr = ok(&ferry(replay.path(), &["run", "job.json"]));
    assert!(stderr.contains("ferry: ok"), "{stderr}");
    fs::remove_file(replay.path().join("job.json")).unwrap();
    (contents(direct.path()), contents(replay.path()))
}

fn contents(dir: &Path) -> Files {
    file_names(dir)
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_printed_job_replays_a_templated_csv_to_ndjson_byte_for_byte() {
    let legacy = fs::read(root().join("samples/legacy.csv")).unwrap();
    let args = [
        "convert",
        "--in",
        "legacy.csv",
        "--template",
        "std-context",
        "--to",
        "contexts.ndjson.gz",
        "--compress",
        "gzip:9",
        "--on-error",
        "lenient",
        "--batch-size",
        "2",
        "--report",
        "report.json",
    ];
    let (direct, replayed) = both_ways(&[("legacy.csv", &legacy)], &args);
    let names: Vec<&str> = direct.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["contexts.ndjson.gz", "legacy.csv", "report.json"]);
    for ((name, a), (other, b)) in direct.iter().zip(&replayed) {
        assert_eq!(name, other);
        if name == "report.json" {
            continue; // seconds differ
        }
        assert!(
            a == b,
            "{name} differs between the command line and its job"
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&replayed[2].1).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["template"], "std-context 1.0.0");
}

#[test]
fn a_printed_job_replays_a_csv_to_sqlite_load_byte_for_byte() {
    let legacy = fs::read(root().join("samples/legacy.csv")).unwrap();
    let args = [
        "convert",
        "--in",
        "legacy.csv",
        "--template",
        "std-context",
        "--to",
        "sqlite://contexts.db",
        "--key",
        "id",
    ];
    let (direct, replayed) = both_ways(&[("legacy.csv", &legacy)], &args);
    assert_eq!(
        direct.len(),
        2,
        "{:?}",
        direct.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(
        direct == replayed,
        "the database differs between the command line and its job"
    );
}

#[test]
fn print_job_shows_every_option_and_never_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.csv",
            "--delimiter",
            ";",
            "--encoding",
            "latin1",
            "--to",
            "postgres://me:hunter2@db.internal/app?table=t",
            "--key-env",
            "MY_KEY",
            "--split-records",
            "5",
            "--print-job",
        ],
    );
    ok(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let job: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["job"], "convert");
    assert_eq!(job["output"], "postgres://me@db.internal/app?table=t");
    assert_eq!(job["read_options"]["delimiter"], ";");
    assert_eq!(job["read_options"]["encoding"], "latin1");
    assert_eq!(job["key_source"]["key_env"], "MY_KEY");
    assert_eq!(job["split"]["max_records"], 5);
    assert_eq!(job["connect"]["timeout"], 10);
    assert_eq!(file_names(dir.path()), Vec::<String>::new());
}

#[test]
fn run_takes_a_job_from_standard_input_and_refuses_what_is_not_a_job() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "a,b\n1,2\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["run", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"job": "convert", "input": "in.csv", "output": "out.json"}"#)
        .unwrap();
    ok(&child.wait_with_output().unwrap());
    assert_eq!(
        fs::read_to_string(dir.path().join("out.json")).unwrap(),
        "[\n{\"a\":\"1\",\"b\":\"2\"}\n]\n"
    );
    for (name, text) in [
        (
            "typo.json",
            r#"{"job": "convert", "input": "in.csv", "ouptut": "x.json"}"#,
        ),
        ("kind.json", r#"{"job": "teleport"}"#),
        ("empty.json", r#"{"job": "convert", "output": "x.json"}"#),
    ] {
        fs::write(dir.path().join(name), text).unwrap();
        let out = ferry(dir.path(), &["run", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("ferry: error:"), "{stderr}");
        assert!(!dir.path().join("x.json").exists());
    }
}

#[test]
fn a_failed_strict_runs_report_keeps_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("t.yaml"),
        "name: t\nfields:\n  - name: n\n    type: integer\n",
    )
    .unwrap();
    fs::write(dir.path().join("in.csv"), "n\n1\n2\nthree\n4\n").unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.csv",
            "--template",
            "t.yaml",
            "--to",
            "out.ndjson",
            "--report",
            "report.json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ferry: FAILED out.ndjson: read 3 = written 2 + rejected 1"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["ok"], false);
    assert_eq!(report["read"], 3);
    assert_eq!(report["written"], 2);
    assert_eq!(report["rejected"], 1);
    assert_eq!(report["input_format"], "csv");
    assert_eq!(report["output_format"], "ndjson");
    assert_eq!(report["template"], "t");
    assert!(report["bytes_read"].as_u64().unwrap() > 0);
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("at record 3"),
        "{errors:?}"
    );
    assert_eq!(file_names(dir.path()), ["in.csv", "report.json", "t.yaml"]);
}

#[test]
fn a_signal_during_a_sqlite_load_rolls_back_and_removes_the_database_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.csv");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "in.csv",
            "--to",
            "sqlite://new.db?table=t",
            "--batch-size",
            "1",
        ])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"id,name\n").unwrap();
    for i in 0..100 {
        writer.write_all(format!("{i},n{i}\n").as_bytes()).unwrap();
    }
    writer.flush().unwrap();
    // The database is open once its file exists; the run then waits for more input.
    let mut waited = Duration::ZERO;
    while !dir.path().join("new.db").exists() {
        assert!(waited < Duration::from_secs(30), "no database appeared");
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().unwrap();
    drop(writer);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("ferry: CANCELLED sqlite://new.db"),
        "{stderr}"
    );
    assert!(stderr.contains("cancelled"), "{stderr}");
    assert_eq!(file_names(dir.path()), ["in.csv"], "{stderr}");
}

#[test]
fn ferry_run_runs_a_printed_migrate_job() {
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("app.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL);
             INSERT INTO users VALUES (1, 'a@x'), (2, 'b@x');",
        )
        .unwrap();
    let url = crate::pg::cluster().fresh_database("run_migrate");
    let printed = ferry_env(
        dir.path(),
        &["migrate", "--from", "app.db", "--to", &url, "--print-job"],
        &[],
    );
    ok(&printed);
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(!text.contains(crate::pg::PASSWORD), "{text}");
    fs::write(dir.path().join("job.json"), text).unwrap();
    let out = ferry_env(
        dir.path(),
        &["run", "job.json"],
        &[("PGPASSWORD", crate::pg::PASSWORD)],
    );
    let stderr = ok(&out);
    assert!(
        stderr.contains("migrated 1 tables: 2 rows read = 2 written"),
        "{stderr}"
    );
    assert_eq!(
        crate::pg::cluster().psql(&url, "SELECT string_agg(email, ',' ORDER BY id) FROM users"),
        "a@x,b@x"
    );
}
