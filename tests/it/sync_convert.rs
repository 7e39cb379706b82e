//! `ferry convert --incremental`: real SQLite and PostgreSQL sources with a writer thread inserting,
//! updating and deleting while runs repeat; database targets (the mark in `_ferry_state`, written with
//! the rows) and file targets (a part per run, the ranges in the manifest); `ferry diff` and `ferry
//! verify` as judges. Also `ferry sync` SQLite → SQLite and PostgreSQL → PostgreSQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::pg::{cluster, PASSWORD};
use crate::support::{ferry_env, ok, sqlite_writer_thread, writer_thread, SQLITE_NOW};

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

fn bare(url: &str) -> String {
    url.replace(&format!(":{PASSWORD}@"), "@")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ferry_env(dir, args, ENV)
}

/// A SQLite source (WAL) with `users`: integer key, text `updated_at` with milliseconds (ties happen).
fn sqlite_source(dir: &Path, rows: i64) -> PathBuf {
    let path = dir.join("app.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score INTEGER,
                             updated_at TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=rows {
        tx.execute(
            "INSERT INTO users (id, name, score, updated_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                i,
                format!("user {i}"),
                i % 7,
                format!("2024-01-01 00:{:02}:{:02}.000", i / 60 % 60, i % 60)
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    path
}

/// A writer that keeps inserting, updating (a fresh `updated_at`) and deleting users until stopped.
fn sqlite_writer(db: &Path, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    sqlite_writer_thread(db, stop, |i| {
        let now = SQLITE_NOW;
        format!(
            "BEGIN IMMEDIATE;
             INSERT INTO users (name, score, updated_at) VALUES ('new {i}', {i}, {now});
             UPDATE users SET score = score + 1, updated_at = {now} WHERE id = {};
             DELETE FROM users WHERE id = {};
             COMMIT;",
            (i * 37) % 200 + 1,
            (i * 13) % 200 + 1,
        )
    })
}

/// `ferry convert FROM TO --incremental updated_at EXTRA…`; the JSON report.
fn convert(dir: &Path, from: &str, to: &str, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("report.json");
    let mut args = vec!["convert", from, to, "--report", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&run(dir, &args));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// `ferry diff` says the `users` tables are equal.
fn assert_equal(dir: &Path, a: &str, b: &str) {
    let out = run(dir, &["diff", a, b, "--table", "users"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "source and target differ:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn incremental_sqlite_to_sqlite_catches_up_while_a_writer_inserts_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 500);
    let from = format!("sqlite://{}?table=users", db.display());
    let target = dir.path().join("copy.db");
    let to = format!("sqlite://{}?table=users", target.display());
    let args = ["--incremental", "updated_at", "--deletes", "delete"];
    let first = convert(dir.path(), &from, &to, &args);
    assert_eq!(first["read"], 500, "{first:#}");
    assert_eq!(first["incremental"]["from"], serde_json::Value::Null);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = sqlite_writer(&db, stop.clone());
    for _ in 0..4 {
        let report = convert(dir.path(), &from, &to, &args);
        assert_eq!(report["status"], "succeeded", "{report:#}");
        // A later run reads far less than the table: only what changed, and the rows at the mark.
        assert!(report["read"].as_u64().unwrap() < 400, "{report:#}");
        let c = &report;
        assert_eq!(
            c["read"].as_u64(),
            Some(
                c["written"].as_u64().unwrap()
                    + c["rejected"].as_u64().unwrap()
                    + c["filtered"].as_u64().unwrap()
                    + c["skipped"].as_u64().unwrap()
            )
        );
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let writes = handle.join().unwrap();
    assert!(writes > 10, "the writer ran {writes} transactions");
    let last = convert(dir.path(), &from, &to, &args);
    assert_equal(dir.path(), db.to_str().unwrap(), target.to_str().unwrap());
    // The mark is the newest cursor value, in the target.
    let newest: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(updated_at) FROM users", [], |r| r.get(0))
        .unwrap();
    let mark: String = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row(
            "SELECT mark FROM _ferry_state WHERE table_name = 'convert:users:updated_at'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mark, serde_json::Value::String(newest.clone()).to_string());
    assert_eq!(last["incremental"]["to"], newest.as_str(), "{last:#}");
    // Deletions were seen: the writer deleted rows of the first load.
    let total_deleted: i64 = 500 + writes as i64 - count(&db, "SELECT count(*) FROM users");
    assert!(total_deleted > 0);
}

#[test]
fn equal_cursor_values_at_the_mark_are_not_lost_and_a_crash_before_the_commit_loads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 20);
    let from = format!("sqlite://{}?table=users", db.display());
    let target = dir.path().join("copy.db");
    let to = format!("sqlite://{}?table=users", target.display());
    let args = ["--incremental", "updated_at", "--key", "id"];
    convert(dir.path(), &from, &to, &args);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE users SET updated_at = '2024-05-05 10:00:00.000', name = 'tie' WHERE id <= 3",
    )
    .unwrap();
    let report = convert(dir.path(), &from, &to, &args);
    assert_eq!(report["read"], 4, "{report:#}"); // three new, and id 20 at the old mark
                                                 // Rows committed later with the mark's own value (a slow transaction stamped them earlier).
    c.execute_batch(
        "INSERT INTO users (id, name, score, updated_at) VALUES (100, 'late', 1, '2024-05-05 10:00:00.000');
         UPDATE users SET name = 'late too' WHERE id = 2",
    )
    .unwrap();
    let mark_sql = "SELECT mark FROM _ferry_state WHERE table_name = 'convert:users:updated_at'";
    let mark_before: String = rusqlite::Connection::open(&target)
        .unwrap()
        .query_row(mark_sql, [], |r| r.get(0))
        .unwrap();
    // Killed between the load and its commit: neither the rows nor the mark moved.
    let mut env = ENV.to_vec();
    env.push(("FERRY_CRASH_AT", "convert-loaded"));
    let mut crash_args = vec!["convert", from.as_str(), to.as_str()];
    crash_args.extend_from_slice(&args);
    let out = ferry_env(dir.path(), &crash_args, &env);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = rusqlite::Connection::open(&target).unwrap();
    let mark_after: String = t.query_row(mark_sql, [], |r| r.get(0)).unwrap();
    assert_eq!(mark_after, mark_before);
    assert_eq!(
        count(&target, "SELECT count(*) FROM users WHERE id = 100"),
        0
    );
    // The next run loads the same rows again: the closed range reads the three at the mark and the late
    // one; nothing lost, nothing doubled.
    let report = convert(dir.path(), &from, &to, &args);
    assert_eq!(report["read"], 4, "{report:#}");
    assert_eq!(report["inserted"], 1, "{report:#}");
    assert_eq!(report["updated"], 3, "{report:#}");
    assert_eq!(
        count(&target, "SELECT count(*) FROM users WHERE id = 100"),
        1
    );
    assert_eq!(count(&target, "SELECT count(*) FROM users"), 21);
    assert_equal(dir.path(), db.to_str().unwrap(), target.to_str().unwrap());
}

/// The records of a set, read back through its manifest.
fn read_set(dir: &Path, manifest: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let back = dir.join("back.ndjson");
    let mut args = vec![
        "convert",
        manifest.to_str().unwrap(),
        back.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&run(dir, &args));
    std::fs::read_to_string(&back)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn file_target_gets_a_part_per_run_with_its_range_and_reads_back_every_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 30);
    let from = format!("sqlite://{}?table=users", db.display());
    let out = dir.path().join("users.ndjson.gz");
    let to = out.to_str().unwrap().to_owned();
    let args = ["--incremental", "updated_at"];
    let c = rusqlite::Connection::open(&db).unwrap();
    let first = convert(dir.path(), &from, &to, &args);
    assert_eq!(first["read"], 30);
    c.execute_batch(
        "UPDATE users SET name = 'changed', updated_at = '2024-02-01 00:00:00.000' WHERE id IN (1, 2);
         INSERT INTO users (id, name, score, updated_at) VALUES (31, 'new', 0, '2024-02-01 00:00:00.000');",
    )
    .unwrap();
    let second = convert(dir.path(), &from, &to, &args);
    assert_eq!(second["read"], 3, "{second:#}");
    c.execute_batch(
        "UPDATE users SET name = 'again', updated_at = '2024-03-01 00:00:00.000' WHERE id = 1;",
    )
    .unwrap();
    let third = convert(dir.path(), &from, &to, &args);
    assert_eq!(third["read"], 1, "{third:#}");
    // Nothing new: no empty part, the mark stays.
    let fourth = convert(dir.path(), &from, &to, &args);
    assert_eq!(fourth["read"], 0, "{fourth:#}");
    assert_eq!(fourth["incremental"]["to"], "2024-03-01 00:00:00.000");
    let manifest_path = dir.path().join("users.manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let parts: Vec<&str> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        parts,
        [
            "users-00001.ndjson.gz",
            "users-00002.ndjson.gz",
            "users-00003.ndjson.gz"
        ]
    );
    assert!(!dir.path().join("users-00004.ndjson.gz").exists());
    let runs = manifest["incremental"]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{manifest:#}");
    assert_eq!(runs[0]["from"], serde_json::Value::Null);
    assert_eq!(runs[0]["to"], "2024-01-01 00:00:30.000");
    assert_eq!(runs[1]["from"], "2024-01-01 00:00:30.000");
    assert_eq!(runs[1]["to"], "2024-02-01 00:00:00.000");
    assert_eq!(runs[1]["rows"], 3);
    assert_eq!(runs[2]["to"], "2024-03-01 00:00:00.000");
    assert_eq!(manifest["incremental"]["mark"], "2024-03-01 00:00:00.000");
    assert_eq!(manifest["total_records"], 34);
    ok(&run(
        dir.path(),
        &["verify", manifest_path.to_str().unwrap()],
    ));
    // Every version once, in run order: the last one of each key is the source's row.
    let records = read_set(dir.path(), &manifest_path, &[]);
    assert_eq!(records.len(), 34);
    let mut versions = BTreeMap::new();
    for r in &records {
        let seen = versions
            .entry(r["id"].as_i64().unwrap())
            .or_insert_with(Vec::new);
        assert!(!seen.contains(&r["updated_at"]), "{r} twice");
        seen.push(r["updated_at"].clone());
    }
    assert_eq!(versions.len(), 31);
    let last: BTreeMap<i64, String> = records
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(last[&1], "again");
    assert_eq!(last[&2], "changed");
    assert_eq!(last[&31], "new");
}

#[test]
fn an_encrypted_set_seals_its_runs_and_marks_in_the_manifest_mac() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 10);
    let from = format!("sqlite://{}?table=users", db.display());
    let key = dir.path().join("set.key");
    ok(&run(dir.path(), &["keygen", key.to_str().unwrap()]));
    let out = dir.path().join("users.ndjson.enc");
    let args = ["--incremental", "id", "--key-file", key.to_str().unwrap()];
    convert(dir.path(), &from, out.to_str().unwrap(), &args);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO users (id, name, score, updated_at) VALUES (11, 'x', 0, '2025')",
        )
        .unwrap();
    let second = convert(dir.path(), &from, out.to_str().unwrap(), &args);
    assert_eq!(second["read"], 1, "{second:#}");
    let manifest = dir.path().join("users.manifest.json");
    let verify = |dir: &Path| {
        run(
            dir,
            &[
                "verify",
                manifest.to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
            ],
        )
    };
    ok(&verify(dir.path()));
    assert_eq!(
        read_set(
            dir.path(),
            &manifest,
            &["--key-file", key.to_str().unwrap()]
        )
        .len(),
        11
    );
    // Moving the mark back by hand (to make the next run read rows again) breaks the MAC.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let tampered = text.replacen("\"mark\": 11", "\"mark\": 5", 1);
    assert_ne!(text, tampered, "{text}");
    std::fs::write(&manifest, tampered).unwrap();
    let out = verify(dir.path());
    assert_ne!(out.status.code(), Some(0));
    let next = run(
        dir.path(),
        &[
            "convert",
            &from,
            dir.path().join("users.ndjson.enc").to_str().unwrap(),
            "--incremental",
            "id",
            "--key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_ne!(
        next.status.code(),
        Some(0),
        "a run must not continue a tampered set"
    );
    assert!(
        String::from_utf8_lossy(&next.stderr).contains("MAC"),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
}

#[test]
fn lag_holds_back_the_newest_values_until_a_later_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 10);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("UPDATE users SET version = id").unwrap();
    let from = format!("sqlite://{}?table=users", db.display());
    let out = dir.path().join("v.ndjson");
    let to = out.to_str().unwrap();
    // Integer cursor: the two newest versions wait.
    let first = convert(
        dir.path(),
        &from,
        to,
        &["--incremental", "version", "--lag", "2"],
    );
    assert_eq!(first["read"], 8, "{first:#}");
    assert_eq!(first["incremental"]["to"], 8);
    let second = convert(dir.path(), &from, to, &["--incremental", "version"]);
    assert_eq!(second["read"], 2, "{second:#}");
    // Time cursor: rows stamped just now wait out a lag of an hour, then come.
    let now = chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();
    c.execute(
        "INSERT INTO users (id, name, score, updated_at) VALUES (50, 'fresh', 0, ?1)",
        [&now],
    )
    .unwrap();
    let target = dir.path().join("t.db");
    let into = format!("sqlite://{}?table=users", target.display());
    let held = convert(
        dir.path(),
        &from,
        &into,
        &["--incremental", "updated_at", "--lag", "1h"],
    );
    assert_eq!(held["read"], 10, "{held:#}");
    assert_eq!(
        count(&target, "SELECT count(*) FROM users WHERE id = 50"),
        0
    );
    let caught = convert(dir.path(), &from, &into, &["--incremental", "updated_at"]);
    assert_eq!(caught["inserted"], 1, "{caught:#}");
    assert_equal(dir.path(), db.to_str().unwrap(), target.to_str().unwrap());
}

#[test]
fn a_bad_cursor_column_is_named_in_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 3);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE m (id INTEGER PRIMARY KEY, amount REAL, note TEXT);
             INSERT INTO m VALUES (1, 1.5, 'not a time');",
        )
        .unwrap();
    let cases = [
        ("users", "updatedAt", "has no column \"updatedAt\""),
        ("m", "amount", "column \"amount\""),
        (
            "m",
            "note",
            "\"not a time\", which is not an integer or an ISO date or time",
        ),
    ];
    for (table, cursor, expected) in cases {
        let from = format!("sqlite://{}?table={table}", db.display());
        let out = run(
            dir.path(),
            &["convert", &from, "out.ndjson", "--incremental", cursor],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{cursor}: {stderr}");
        assert!(stderr.contains(cursor), "{stderr}");
    }
    let out = run(
        dir.path(),
        &["convert", "in.csv", "out.ndjson", "--incremental", "id"],
    );
    assert_eq!(out.status.code(), Some(2));
}

/// A PostgreSQL source with `users` (`updated_at timestamptz`) and a writer.
fn pg_source(name: &str, rows: i64) -> String {
    let url = cluster().fresh_database(name);
    cluster()
        .client(&url)
        .batch_execute(&format!(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score integer,
                                 updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
             INSERT INTO users SELECT g, 'user ' || g, g % 7, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
               FROM generate_series(1, {rows}) g;"
        ))
        .unwrap();
    url
}

fn pg_writer(url: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let mut c = cluster().client(url);
    writer_thread(stop, move |i| {
        c.batch_execute(&format!(
            "BEGIN;
             INSERT INTO users (id, name, score) VALUES ({}, 'new {i}', {i});
             UPDATE users SET score = score + 1, updated_at = clock_timestamp() WHERE id = {};
             DELETE FROM users WHERE id = {};
             COMMIT;",
            100_000 + i,
            (i * 37) % 300 + 1,
            (i * 13) % 300 + 1,
        ))
        .unwrap();
    })
}

#[test]
fn incremental_postgres_to_postgres_catches_up_while_a_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let source = pg_source("inc_pg_src", 400);
    let target = cluster().fresh_database("inc_pg_dst");
    let from = format!("{}?table=users", bare(&source));
    let to = format!("{}?table=users", bare(&target));
    let args = ["--incremental", "updated_at", "--deletes", "delete"];
    let first = convert(dir.path(), &from, &to, &args);
    assert_eq!(first["read"], 400, "{first:#}");
    let stop = Arc::new(AtomicBool::new(false));
    let handle = pg_writer(&source, stop.clone());
    for _ in 0..3 {
        let report = convert(dir.path(), &from, &to, &args);
        assert_eq!(report["status"], "succeeded", "{report:#}");
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    assert!(handle.join().unwrap() > 5);
    let last = convert(dir.path(), &from, &to, &args);
    assert!(
        last["incremental"]["deleted"].as_u64().is_some(),
        "{last:#}"
    );
    assert_equal(dir.path(), &bare(&source), &bare(&target));
    let mut pg = cluster().client(&target);
    let marks: i64 = pg
        .query_one("SELECT count(*) FROM _ferry_state", &[])
        .unwrap()
        .get(0);
    assert_eq!(marks, 1);
    // A PostgreSQL source into a file set with the same rule; and a lag on the server's clock.
    let out = dir.path().join("pg.ndjson");
    let file = convert(
        dir.path(),
        &from,
        out.to_str().unwrap(),
        &["--incremental", "updated_at", "--lag", "1h"],
    );
    // Rows the writer stamped just now wait an hour; the seeded ones (2024) do not.
    assert_eq!(
        file["read"].as_u64(),
        Some(
            pg.query_one(
                "SELECT count(*) FROM users WHERE updated_at < now() - interval '1 hour'",
                &[]
            )
            .unwrap()
            .get::<_, i64>(0) as u64
        ),
        "{file:#}"
    );
}

/// `ferry sync` with `extra` flags; its JSON report.
fn sync(dir: &Path, from: &str, to: &str, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("sync.json");
    let mut args = vec![
        "sync",
        "--from",
        from,
        "--to",
        to,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&run(dir, &args));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

#[test]
fn sync_sqlite_to_sqlite_by_cursor_with_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 300);
    let copy = dir.path().join("copy.db");
    // ferry migrate moves between kinds of databases; the same schema, made by hand, serves here.
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute_batch(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score INTEGER,
                                 updated_at TEXT NOT NULL, version INTEGER NOT NULL DEFAULT 1);",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = sqlite_writer(&db, stop.clone());
    for _ in 0..3 {
        sync(
            dir.path(),
            db.to_str().unwrap(),
            copy.to_str().unwrap(),
            &["--cursor", "updated_at"],
        );
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    assert!(handle.join().unwrap() > 5);
    let report = sync(
        dir.path(),
        db.to_str().unwrap(),
        copy.to_str().unwrap(),
        &["--cursor", "updated_at"],
    );
    assert_eq!(report["tables"][0]["by"], "cursor", "{report:#}");
    assert_equal(dir.path(), db.to_str().unwrap(), copy.to_str().unwrap());
}

#[test]
fn sync_postgres_to_postgres_by_cursor_with_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let source = pg_source("sync_pp_src", 300);
    let target = cluster().fresh_database("sync_pp_dst");
    cluster()
        .client(&target)
        .batch_execute(
            "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score integer,
                                 updated_at timestamptz NOT NULL DEFAULT clock_timestamp());",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = pg_writer(&source, stop.clone());
    for _ in 0..3 {
        sync(
            dir.path(),
            &bare(&source),
            &bare(&target),
            &["--cursor", "updated_at"],
        );
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    assert!(handle.join().unwrap() > 5);
    let report = sync(
        dir.path(),
        &bare(&source),
        &bare(&target),
        &["--cursor", "updated_at", "--cutover"],
    );
    assert_eq!(report["cutover"][0]["equal"], true, "{report:#}");
    assert_equal(dir.path(), &bare(&source), &bare(&target));
}

#[test]
fn the_job_carries_the_incremental_fields_and_a_query_source_works_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 12);
    let from = format!(
        "sqlite://{}?query=SELECT id, name, updated_at FROM users WHERE score > 0",
        db.display()
    );
    let target = dir.path().join("q.db");
    let to = format!("sqlite://{}?table=active", target.display());
    let out = run(
        dir.path(),
        &[
            "convert",
            &from,
            &to,
            "--incremental",
            "updated_at",
            "--lag",
            "2s",
            "--key",
            "id",
            "--deletes",
            "list",
            "--print-job",
        ],
    );
    let text = ok(&out);
    let job_text = String::from_utf8_lossy(&out.stdout).into_owned();
    let job: serde_json::Value =
        serde_json::from_str(&job_text).unwrap_or_else(|e| panic!("{e}: {job_text} {text}"));
    assert_eq!(job["incremental"], "updated_at", "{job:#}");
    assert_eq!(job["lag"], "2s");
    assert_eq!(job["deletes"], "list");
    // --deletes needs a table to compare keys with; without it the job runs from its file.
    let refused = run(
        dir.path(),
        &[
            "convert",
            &from,
            &to,
            "--incremental",
            "updated_at",
            "--deletes",
            "list",
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("?table="));
    let mut job = job;
    job.as_object_mut().unwrap().remove("deletes");
    let path = dir.path().join("job.json");
    let report = dir.path().join("run.json");
    job["report"] = report.to_str().unwrap().into();
    std::fs::write(&path, job.to_string()).unwrap();
    let run_job = || {
        ok(&run(dir.path(), &["run", path.to_str().unwrap()]));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap())
            .unwrap()
    };
    let first = run_job();
    // Rows with score 0 (every seventh) are left out by the query.
    assert_eq!(first["written"], 11, "{first:#}");
    assert_eq!(count(&target, "SELECT count(*) FROM active"), 11);
    let second = run_job();
    // Only the row at the mark, read again.
    assert_eq!(second["read"], 1, "{second:#}");
    assert_eq!(second["incremental"]["from"], second["incremental"]["to"]);
}

#[test]
fn deletions_can_be_listed_or_marked_and_split_runs_list_all_their_parts() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 10);
    let from = format!("sqlite://{}?table=users", db.display());
    let target = dir.path().join("copy.db");
    let to = format!("sqlite://{}?table=users", target.display());
    convert(dir.path(), &from, &to, &["--incremental", "updated_at"]);
    rusqlite::Connection::open(&target)
        .unwrap()
        .execute_batch("ALTER TABLE users ADD COLUMN deleted_at TEXT")
        .unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM users WHERE id IN (3, 7)")
        .unwrap();
    let listed = convert(
        dir.path(),
        &from,
        &to,
        &["--incremental", "updated_at", "--deletes", "list"],
    );
    assert_eq!(listed["incremental"]["deleted"], 2, "{listed:#}");
    assert_eq!(
        listed["incremental"]["listed"],
        serde_json::json!([[3], [7]])
    );
    assert_eq!(count(&target, "SELECT count(*) FROM users"), 10);
    let marked = convert(
        dir.path(),
        &from,
        &to,
        &[
            "--incremental",
            "updated_at",
            "--deletes",
            "soft:deleted_at",
        ],
    );
    assert_eq!(marked["incremental"]["deleted"], 2, "{marked:#}");
    assert_eq!(
        count(
            &target,
            "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL"
        ),
        2
    );
    let gone = convert(
        dir.path(),
        &from,
        &to,
        &["--incremental", "updated_at", "--deletes", "delete"],
    );
    assert_eq!(gone["incremental"]["deleted"], 2, "{gone:#}");
    assert_eq!(count(&target, "SELECT count(*) FROM users"), 8);
    // A split incremental set: a run of several parts lists them all.
    let out = dir.path().join("s.csv");
    let args = ["--incremental", "id", "--split-records", "3"];
    convert(dir.path(), &from, out.to_str().unwrap(), &args);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "INSERT INTO users (id, name, score, updated_at) VALUES (20, 'a', 0, 'x'), (21, 'b', 0, 'y')",
        )
        .unwrap();
    convert(dir.path(), &from, out.to_str().unwrap(), &args);
    let manifest_path = dir.path().join("s.manifest.json");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let runs = &manifest["incremental"]["runs"];
    assert_eq!(
        runs[0]["parts"].as_array().unwrap().len(),
        3,
        "{manifest:#}"
    );
    assert_eq!(runs[1]["parts"], serde_json::json!(["s-00004.csv"]));
    assert_eq!(runs[1]["rows"], 2);
    ok(&run(
        dir.path(),
        &["verify", manifest_path.to_str().unwrap()],
    ));
    assert_eq!(read_set(dir.path(), &manifest_path, &[]).len(), 10);
}

#[test]
fn migrate_incremental_compares_tables_in_parallel_with_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_source(dir.path(), 300);
    let c = rusqlite::Connection::open(&db).unwrap();
    for t in ["a", "b", "c"] {
        c.execute_batch(&format!(
            "CREATE TABLE {t} (k TEXT PRIMARY KEY, v INTEGER);
             INSERT INTO {t} SELECT 'k' || id, id FROM users;"
        ))
        .unwrap();
    }
    let url = cluster().fresh_database("inc_jobs");
    let state = dir.path().join("jobs.state.json");
    let migrate = |extra: &[&str]| {
        let report = dir.path().join("m.json");
        let target = bare(&url);
        let mut args = vec![
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--state",
            state.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        ok(&run(dir.path(), &args));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(report).unwrap())
            .unwrap()
    };
    migrate(&[]);
    c.execute_batch(
        "UPDATE a SET v = -1 WHERE v % 50 = 0; DELETE FROM b WHERE v <= 3;
         INSERT INTO c VALUES ('new', 0); UPDATE users SET name = 'x' WHERE id = 9;",
    )
    .unwrap();
    let report = migrate(&["--incremental", "--jobs", "3"]);
    let table = |name: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {report:#}"))
            .clone()
    };
    assert_eq!(table("a")["written"], 6, "{report:#}");
    assert_eq!(table("b")["deleted"], 3, "{report:#}");
    assert_eq!(table("c")["written"], 1, "{report:#}");
    assert_eq!(table("users")["written"], 1, "{report:#}");
    let out = run(dir.path(), &["diff", db.to_str().unwrap(), &bare(&url)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
