//! `ferry sync`: a SQLite source with a writer thread inserting, updating and deleting while passes run,
//! a real PostgreSQL target (ferry migrate made its tables), and `ferry diff` as the judge at the end.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::pg::{cluster, PASSWORD};
use crate::support::{ferry_env, ok, sqlite_writer_thread, writer_thread, SQLITE_NOW};

const ENV: &[(&str, &str)] = &[("PGPASSWORD", PASSWORD)];

/// The URL of `url` without its password (given in PGPASSWORD instead).
fn bare(url: &str) -> String {
    url.replace(&format!(":{PASSWORD}@"), "@")
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ferry_env(dir, args, ENV)
}

/// A SQLite source in WAL mode (readers and the writer do not wait for each other) with two tables: one
/// with an `updated_at` cursor and an integer key, one with a text key and no cursor.
fn source(dir: &Path, users: i64) -> std::path::PathBuf {
    let path = dir.join("app.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score INTEGER,
                             updated_at TEXT NOT NULL);
         CREATE TABLE tags (code TEXT PRIMARY KEY, label TEXT);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 1..=users {
        tx.execute(
            "INSERT INTO users VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                i,
                format!("user {i}"),
                i % 7,
                format!(
                    "2024-01-01 {:02}:{:02}:{:02}.000",
                    i / 3600,
                    i / 60 % 60,
                    i % 60
                )
            ],
        )
        .unwrap();
    }
    for i in 0..40 {
        tx.execute(
            "INSERT INTO tags VALUES (?1, ?2)",
            rusqlite::params![format!("t{i:03}"), format!("label {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    path
}

/// `ferry migrate` SOURCE → a fresh PostgreSQL database; returns its URL (with password, for clients).
fn migrated(dir: &Path, db: &Path, name: &str) -> String {
    let url = cluster().fresh_database(name);
    let state = dir.join(format!("{name}.state.json"));
    ok(&run(
        dir,
        &[
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &bare(&url),
            "--state",
            state.to_str().unwrap(),
            "-q",
        ],
    ));
    url
}

/// Runs `ferry sync` with `extra` flags and returns its JSON report.
fn sync(dir: &Path, db: &Path, url: &str, extra: &[&str]) -> serde_json::Value {
    let report = dir.join("sync.json");
    let target = bare(url);
    let mut args = vec![
        "sync",
        "--from",
        db.to_str().unwrap(),
        "--to",
        &target,
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&run(dir, &args));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

/// `ferry diff` says every table is equal.
fn assert_equal(dir: &Path, db: &Path, url: &str) {
    // The application's tables (a change log of trigger capture is ferry's own).
    let out = run(
        dir,
        &[
            "diff",
            db.to_str().unwrap(),
            &bare(url),
            "--table",
            "users,tags",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "source and target differ:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn table<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:#}"))
}

/// A writer that keeps inserting, updating (with a fresh `updated_at`, milliseconds: ties happen) and
/// deleting users and tags until stopped.
fn writer(db: &Path, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    sqlite_writer_thread(db, stop, |i| {
        let now = SQLITE_NOW;
        let mut sql = format!(
            "BEGIN IMMEDIATE;
             INSERT INTO users (name, score, updated_at) VALUES ('new {i}', {i}, {now});
             UPDATE users SET score = score + 1, updated_at = {now} WHERE id = {};
             INSERT OR REPLACE INTO tags VALUES ('w{:03}', 'written {i}');
             UPDATE tags SET label = 'changed {i}' WHERE code = 't{:03}';
             COMMIT;",
            (i * 37) % 300 + 1,
            i % 50,
            i % 40,
        );
        if i % 5 == 0 {
            // After the commit: deletes of their own.
            sql += &format!(
                "DELETE FROM users WHERE id = {}; DELETE FROM tags WHERE code = 'w{:03}';",
                (i * 13) % 300 + 1,
                (i / 5) % 50
            );
        }
        sql
    })
}

#[test]
fn sync_by_cursor_catches_up_while_a_writer_inserts_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 3_000);
    let url = migrated(dir.path(), &db, "sync_cursor");
    let stop = Arc::new(AtomicBool::new(false));
    let handle = writer(&db, stop.clone());
    for _ in 0..4 {
        let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
        assert_eq!(report["status"], "succeeded", "{report:#}");
        thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::SeqCst);
    let writes = handle.join().unwrap();
    assert!(writes > 10, "the writer ran {writes} transactions");
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    assert_eq!(table(&report, "users")["by"], "cursor");
    assert_eq!(table(&report, "tags")["by"], "checksum");
    assert_equal(dir.path(), &db, &url);
    // The mark is in the target, next to the rows it covers.
    let mut pg = cluster().client(&url);
    let mark: String = pg
        .query_one(
            "SELECT mark FROM _ferry_state WHERE table_name = 'users'",
            &[],
        )
        .unwrap()
        .get(0);
    let newest: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT max(updated_at) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mark, serde_json::Value::String(newest).to_string());
    // Nothing changed since: the next pass moves nothing but the rows at the mark (read again by design).
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    assert_eq!(report["lag_rows"], 0, "{report:#}");
    assert_eq!(table(&report, "users")["deleted"], 0);
}

#[test]
fn equal_timestamps_at_the_mark_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 10);
    let url = migrated(dir.path(), &db, "sync_ties");
    // The first pass finds nothing to write and starts the mark at the newest row (id 10).
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    assert_eq!(report["lag_rows"], 0, "{report:#}");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE users SET updated_at = '2024-05-05 10:00:00.000', name = 'a' WHERE id <= 3",
    )
    .unwrap();
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    let users = table(&report, "users");
    assert_eq!(users["read"], 4, "{report:#}");
    assert_eq!(users["at_mark"], 1, "{report:#}");
    assert_eq!(report["lag_rows"], 3, "{report:#}");
    // A row committed later with the mark's own timestamp (a slow transaction stamped it earlier).
    c.execute_batch(
        "INSERT INTO users VALUES (100, 'late', 1, '2024-05-05 10:00:00.000');
         UPDATE users SET name = 'late too' WHERE id = 2",
    )
    .unwrap();
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    let users = table(&report, "users");
    // The closed range reads the three rows at the mark again and the late one: none lost, none doubled.
    assert_eq!(users["read"], 4, "{report:#}");
    assert_eq!(users["inserted"], 1, "{report:#}");
    assert_eq!(users["updated"], 3, "{report:#}");
    assert_eq!(users["at_mark"], 4, "{report:#}");
    assert_equal(dir.path(), &db, &url);
    let mut pg = cluster().client(&url);
    let n: i64 = pg
        .query_one("SELECT count(*) FROM users WHERE id = 100", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_pass_killed_before_its_commit_leaves_the_mark_and_is_loaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 50);
    let url = migrated(dir.path(), &db, "sync_crash");
    sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    let mut pg = cluster().client(&url);
    let mark_before: String = pg
        .query_one(
            "SELECT mark FROM _ferry_state WHERE table_name = 'users'",
            &[],
        )
        .unwrap()
        .get(0);
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE users SET name = 'renamed', updated_at = '2025-01-01 00:00:00.000' WHERE id <= 5;
         INSERT INTO users VALUES (500, 'new', 0, '2025-01-01 00:00:00.000');
         DELETE FROM users WHERE id = 40;",
    )
    .unwrap();
    let target = bare(&url);
    let mut env = ENV.to_vec();
    env.push(("FERRY_CRASH_AT", "sync-loaded"));
    let out = ferry_env(
        dir.path(),
        &[
            "sync",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--cursor",
            "updated_at",
        ],
        &env,
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Neither the rows nor the mark moved.
    let mark_after: String = pg
        .query_one(
            "SELECT mark FROM _ferry_state WHERE table_name = 'users'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(mark_after, mark_before);
    let renamed: i64 = pg
        .query_one(
            "SELECT count(*) FROM users WHERE name = 'renamed' OR id = 500",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(renamed, 0);
    // The next pass loads the same rows again, merged by key: nothing doubled.
    let report = sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    let users = table(&report, "users");
    // Five updated, one new, and the row at the old mark (id 50) read again.
    assert_eq!(users["read"], 7, "{report:#}");
    assert_eq!(users["at_mark"], 1, "{report:#}");
    assert_eq!(users["inserted"], 1, "{report:#}");
    assert_eq!(users["updated"], 6, "{report:#}");
    assert_eq!(users["deleted"], 1, "{report:#}");
    assert_equal(dir.path(), &db, &url);
}

#[test]
fn checksum_mode_finds_changes_and_deletions_across_key_pages() {
    let dir = tempfile::tempdir().unwrap();
    // More rows than one page of the target (5,000), with text and integer keys.
    let db = source(dir.path(), 12_345);
    let url = migrated(dir.path(), &db, "sync_checksum");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "UPDATE users SET score = -1 WHERE id % 1000 = 0;
         DELETE FROM users WHERE id % 997 = 0 OR id = 1 OR id = 12345;
         INSERT INTO users VALUES (20000, 'after', 0, 'x');
         DELETE FROM tags WHERE code IN ('t000', 't039');
         INSERT INTO tags VALUES ('a', 'first'), ('zzz', 'last'), ('t005x', 'between');
         UPDATE tags SET label = NULL WHERE code = 't010';",
    )
    .unwrap();
    let deleted_users: i64 = 12 + 2;
    let report = sync(dir.path(), &db, &url, &["--capture", "checksum"]);
    let users = table(&report, "users");
    assert_eq!(users["by"], "checksum");
    assert_eq!(users["deleted"], deleted_users, "{report:#}");
    assert_eq!(users["inserted"], 1, "{report:#}");
    assert_eq!(users["updated"], 12, "{report:#}");
    let tags = table(&report, "tags");
    assert_eq!(tags["deleted"], 2, "{report:#}");
    assert_eq!(tags["inserted"], 3, "{report:#}");
    assert_eq!(tags["updated"], 1, "{report:#}");
    // Every source row is accounted for: written or unchanged.
    for t in [users, tags] {
        let read = t["read"].as_u64().unwrap();
        let sum = ["inserted", "updated", "unchanged"]
            .iter()
            .map(|k| t[k].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(read, sum, "{t:#}");
    }
    assert_equal(dir.path(), &db, &url);
}

#[test]
fn deletions_can_be_listed_or_marked_instead() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 20);
    let url = migrated(dir.path(), &db, "sync_soft");
    let mut pg = cluster().client(&url);
    pg.batch_execute("ALTER TABLE users ADD COLUMN deleted_at timestamptz")
        .unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DELETE FROM users WHERE id IN (3, 7)")
        .unwrap();
    let report = sync(
        dir.path(),
        &db,
        &url,
        &["--capture", "checksum", "--deletes", "list"],
    );
    assert_eq!(table(&report, "users")["deleted"], 2);
    assert_eq!(
        table(&report, "users")["listed"],
        serde_json::json!([[3], [7]])
    );
    let n: i64 = pg
        .query_one("SELECT count(*) FROM users", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 20, "listing deletes nothing");
    let report = sync(
        dir.path(),
        &db,
        &url,
        &["--capture", "checksum", "--deletes", "soft:deleted_at"],
    );
    assert_eq!(table(&report, "users")["deleted"], 2);
    let marked: i64 = pg
        .query_one(
            "SELECT count(*) FROM users WHERE deleted_at IS NOT NULL AND id IN (3, 7)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(marked, 2);
    // Marked once: the next pass finds them again but changes nothing.
    let report = sync(
        dir.path(),
        &db,
        &url,
        &["--capture", "checksum", "--deletes", "soft:deleted_at"],
    );
    assert_eq!(table(&report, "users")["deleted"], 0, "{report:#}");
}

#[test]
fn triggers_capture_updates_and_deletes_while_a_writer_runs_then_cut_over() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 500);
    let url = migrated(dir.path(), &db, "sync_triggers");
    // The first pass installs the triggers and compares whole tables.
    let report = sync(dir.path(), &db, &url, &["--capture", "triggers"]);
    assert_eq!(table(&report, "users")["by"], "triggers");
    let c = rusqlite::Connection::open(&db).unwrap();
    let triggers: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'trigger' AND name LIKE '_ferry_sync_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 6);
    // No cursor column involved: an update that leaves updated_at alone, and deletes.
    c.execute_batch(
        "UPDATE users SET name = 'quiet change' WHERE id = 10;
         DELETE FROM users WHERE id = 11;
         UPDATE users SET id = 9999 WHERE id = 12;
         DELETE FROM tags WHERE code = 't001';",
    )
    .unwrap();
    let report = sync(dir.path(), &db, &url, &["--capture", "triggers"]);
    let users = table(&report, "users");
    assert_eq!(users["updated"], 1, "{report:#}");
    assert_eq!(users["inserted"], 1, "{report:#}");
    assert_eq!(users["deleted"], 2, "{report:#}");
    assert_eq!(table(&report, "tags")["deleted"], 1, "{report:#}");
    assert_equal(dir.path(), &db, &url);
    // The applied changes left the log.
    let left: i64 = c
        .query_row("SELECT count(*) FROM _ferry_changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);

    // A continuous sync while the writer runs; then the cut-over: lag zero, both sides compared.
    let stop = Arc::new(AtomicBool::new(false));
    let handle = writer(&db, stop.clone());
    let report = sync(
        dir.path(),
        &db,
        &url,
        &[
            "--capture",
            "triggers",
            "--every",
            "100ms",
            "--passes",
            "5",
            "--progress",
            "json",
        ],
    );
    assert_eq!(report["passes"], 5);
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
    let report = sync(
        dir.path(),
        &db,
        &url,
        &["--capture", "triggers", "--cutover"],
    );
    assert_eq!(report["lag_rows"], 0, "{report:#}");
    for t in report["cutover"].as_array().unwrap() {
        assert_eq!(t["equal"], true, "{t:#}");
        assert_eq!(t["source_checksum"], t["target_checksum"]);
    }
    assert_equal(dir.path(), &db, &url);

    // --uninstall takes the triggers and the log away again.
    let target = bare(&url);
    ok(&run(
        dir.path(),
        &[
            "sync",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--uninstall",
        ],
    ));
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '_ferry_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn lag_is_reported_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 5);
    let url = migrated(dir.path(), &db, "sync_lag");
    sync(dir.path(), &db, &url, &["--cursor", "updated_at"]);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("INSERT INTO users VALUES (6, 'six', 0, '2030-01-01 00:00:00.000')")
        .unwrap();
    let target = bare(&url);
    let out = run(
        dir.path(),
        &[
            "sync",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--cursor",
            "updated_at",
            "--every",
            "10ms",
            "--passes",
            "2",
            "--progress",
            "json",
        ],
    );
    let stderr = ok(&out);
    let lags: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "lag")
        .collect();
    assert_eq!(lags.len(), 2, "{stderr}");
    assert_eq!(lags[0]["lag_rows"], 1, "{stderr}");
    assert_eq!(lags[1]["lag_rows"], 0, "{stderr}");
    assert!(lags[0]["lag_seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_table_without_a_key_is_refused_before_anything_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 5);
    let url = migrated(dir.path(), &db, "sync_nokey");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE log (line TEXT)")
        .unwrap();
    let target = bare(&url);
    let out = run(
        dir.path(),
        &["sync", "--from", db.to_str().unwrap(), "--to", &target],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"log\" has no primary key") || stderr.contains("log has no primary key"),
        "{stderr}"
    );
    assert!(!stderr.contains(PASSWORD));
}

#[test]
fn migrate_incremental_catches_a_finished_migration_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 2_000);
    let url = migrated(dir.path(), &db, "sync_incremental");
    let state = dir.path().join("sync_incremental.state.json");
    let c = rusqlite::Connection::open(&db).unwrap();
    // 1 % of the rows changed while the application ran on: updated (one without touching its cursor),
    // inserted, deleted.
    c.execute_batch(
        "UPDATE users SET score = 99, updated_at = '2030-01-01 00:00:00.000' WHERE id % 200 = 0;
         UPDATE tags SET label = 'moved' WHERE code = 't007';
         INSERT INTO users VALUES (5000, 'late', 1, '2030-01-01 00:00:01.000');
         DELETE FROM users WHERE id IN (1, 2);
         INSERT INTO tags VALUES ('t999', 'new');",
    )
    .unwrap();
    let report_path = dir.path().join("incremental.json");
    let target = bare(&url);
    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--state",
            state.to_str().unwrap(),
            "--incremental",
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    let stderr = ok(&out);
    assert!(stderr.contains("caught up 2 tables"), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let users = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "users")
        .unwrap();
    // By key and checksum (no --cursor): 10 updated + 1 new written, the rest left alone, 2 deleted.
    assert_eq!(users["written"], 11, "{report:#}");
    assert_eq!(users["skipped"], 1_988, "{report:#}");
    assert_eq!(users["deleted"], 2, "{report:#}");
    assert_equal(dir.path(), &db, &url);
    // Again, by cursor: the first such run starts the marks, the next reads only what is past them.
    c.execute_batch(
        "UPDATE users SET name = 'again', updated_at = '2031-01-01 00:00:00.000' WHERE id = 3",
    )
    .unwrap();
    for _ in 0..2 {
        ok(&run(
            dir.path(),
            &[
                "migrate",
                "--from",
                db.to_str().unwrap(),
                "--to",
                &target,
                "--state",
                state.to_str().unwrap(),
                "--incremental",
                "--cursor",
                "updated_at",
                "--report",
                report_path.to_str().unwrap(),
            ],
        ));
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let users = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "users")
        .unwrap();
    assert_eq!(users["read"], 1, "only the row at the mark: {report:#}");
    assert_equal(dir.path(), &db, &url);
    // An unfinished migration is not caught up.
    let other = dir.path().join("missing.state.json");
    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            db.to_str().unwrap(),
            "--to",
            &target,
            "--state",
            other.to_str().unwrap(),
            "--incremental",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL writer: inserts, updates (one changes its key), deletes, truncates nothing, until stopped.
fn pg_writer(url: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let mut c = cluster().client(url);
    writer_thread(stop, move |i| {
        c.batch_execute(&format!(
            "BEGIN;
             INSERT INTO users (id, name, score) VALUES ({}, 'new {i}', {i});
             UPDATE users SET score = score + 1 WHERE id = {};
             INSERT INTO tags VALUES ('w{i:05}', 'written') ON CONFLICT (code) DO UPDATE SET label = 'again';
             DELETE FROM users WHERE id = {};
             UPDATE users SET id = {} WHERE id = {};
             COMMIT;",
            100_000 + i,
            (i * 37) % 300 + 1,
            (i * 13) % 300 + 1,
            200_000 + i,
            (i * 7) % 300 + 301,
        ))
        .unwrap();
    })
}

#[test]
fn logical_replication_from_postgresql_sees_updates_deletes_and_changed_keys() {
    let dir = tempfile::tempdir().unwrap();
    let pg_url = cluster().fresh_database("sync_logical");
    let mut pg = cluster().client(&pg_url);
    pg.batch_execute(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score integer);
         CREATE TABLE tags (code text PRIMARY KEY, label text);
         INSERT INTO users SELECT g, 'user ' || g, g % 7 FROM generate_series(1, 1000) g;
         INSERT INTO tags SELECT 't' || g, 'label ' || g FROM generate_series(1, 40) g;",
    )
    .unwrap();
    let copy = dir.path().join("copy.db");
    let source = bare(&pg_url);
    let state = dir.path().join("back.state.json");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            &source,
            "--to",
            copy.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "-q",
        ],
    ));
    let sync_args = |extra: &[&str]| -> serde_json::Value {
        let report = dir.path().join("logical.json");
        let mut args = vec![
            "sync",
            "--from",
            &source,
            "--to",
            copy.to_str().unwrap(),
            "--capture",
            "logical",
            "--report",
            report.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&run(dir.path(), &args));
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
    };
    // The first pass makes the slot and compares whole tables.
    let report = sync_args(&[]);
    assert_eq!(table(&report, "users")["by"], "logical", "{report:#}");
    let slots: i64 = pg
        .query_one("SELECT count(*) FROM pg_replication_slots WHERE plugin = 'pgoutput' AND database = current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(slots, 1);
    // Changes no cursor column would show: a quiet update, a delete, a changed key.
    pg.batch_execute(
        "UPDATE users SET name = 'quiet' WHERE id = 5;
         DELETE FROM users WHERE id = 6;
         UPDATE users SET id = 7007 WHERE id = 7;
         DELETE FROM tags WHERE code = 't1';",
    )
    .unwrap();
    let report = sync_args(&[]);
    let users = table(&report, "users");
    assert_eq!(users["deleted"], 2, "{report:#}");
    assert_eq!(users["inserted"], 1, "{report:#}");
    assert_eq!(users["updated"], 1, "{report:#}");
    assert_eq!(table(&report, "tags")["deleted"], 1, "{report:#}");

    // While a writer runs, then the cut-over.
    let stop = Arc::new(AtomicBool::new(false));
    let handle = pg_writer(&pg_url, stop.clone());
    let report = sync_args(&["--every", "100ms", "--passes", "5"]);
    assert_eq!(report["passes"], 5);
    stop.store(true, Ordering::SeqCst);
    assert!(handle.join().unwrap() > 5);
    let report = sync_args(&["--cutover"]);
    for t in report["cutover"].as_array().unwrap() {
        assert_eq!(t["equal"], true, "{t:#}");
    }
    let out = run(
        dir.path(),
        &[
            "diff",
            &source,
            copy.to_str().unwrap(),
            "--table",
            "users,tags",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // --uninstall drops the slot (it would keep WAL forever) and the publication.
    ok(&run(
        dir.path(),
        &[
            "sync",
            "--from",
            &source,
            "--to",
            copy.to_str().unwrap(),
            "--uninstall",
        ],
    ));
    let left: i64 = pg
        .query_one(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()) + \
             (SELECT count(*) FROM pg_publication)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn serve_runs_a_configured_sync_as_an_operation_until_cancelled() {
    use crate::serve::{add_token, Server};
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), 200);
    let url = migrated(dir.path(), &db, "sync_serve");
    let config = format!(
        "work_dir: work\nshutdown_grace: 5\ndatabases:\n  app: {{path: app.db}}\n  pg: {{url: \"{}\"}}\n\
         default_database: app\nsyncs:\n  live: {{from: app, to: pg, capture: triggers, every: 0.1}}\n",
        bare(&url)
    );
    std::fs::write(dir.path().join("ferry-serve.yaml"), &config).unwrap();
    let admin = add_token(dir.path(), "admin", "admin", None);
    let reader = add_token(dir.path(), "reader", "read", None);
    let server = Server::start_again(dir.path());
    let api = format!("{}/api/data-migration", server.base);
    let refused = server
        .http
        .post(format!("{api}/syncs/live"))
        .bearer_auth(&reader)
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let missing = server
        .http
        .post(format!("{api}/syncs/other"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let started = server
        .http
        .post(format!("{api}/syncs/live"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(started.status().as_u16(), 202);
    let op: serde_json::Value = started.json().unwrap();
    assert_eq!(op["type"], "sync");
    let id = op["operationId"]
        .as_str()
        .or(op["operation_id"].as_str())
        .unwrap()
        .to_owned();
    let progress = || -> serde_json::Value {
        server
            .http
            .get(format!("{api}/operations/{id}/progress"))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let wait_for =
        |what: &str, done: &mut dyn FnMut(&serde_json::Value) -> bool| -> serde_json::Value {
            for _ in 0..300 {
                let p = progress();
                if done(&p) {
                    return p;
                }
                thread::sleep(Duration::from_millis(50));
            }
            panic!("{what}: {:#}\n{}", progress(), server.log.lock().unwrap());
        };
    let first = wait_for("a first pass", &mut |p| {
        p["lag"]["passes"].as_u64() >= Some(1)
    });
    assert_eq!(first["status"], "running", "{first:#}");
    let passes = first["lag"]["passes"].as_u64().unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "UPDATE users SET name = 'served' WHERE id = 1; DELETE FROM users WHERE id = 2;
             INSERT INTO tags VALUES ('new', 'row');",
        )
        .unwrap();
    let mut pg = cluster().client(&url);
    wait_for("the change to arrive", &mut |p| {
        p["lag"]["passes"].as_u64() > Some(passes + 1)
            && pg
                .query_one(
                    "SELECT count(*) FROM users WHERE name = 'served' OR id = 2",
                    &[],
                )
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
    });
    let cancel = server
        .http
        .post(format!("{api}/operations/{id}/cancel"))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(cancel.status().as_u16(), 202);
    let end = wait_for("the cancel", &mut |p| p["status"] == "cancelled");
    assert!(end["lag"]["passes"].as_u64() > Some(passes), "{end:#}");
    assert_equal(dir.path(), &db, &url);
}

#[test]
fn postgresql_cursors_of_timestamp_and_integer_types_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let pg_url = cluster().fresh_database("sync_pg_cursor");
    let mut pg = cluster().client(&pg_url);
    pg.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, body text, updated_at timestamptz NOT NULL);
         CREATE TABLE docs (id text PRIMARY KEY, body text, version integer NOT NULL);
         INSERT INTO events SELECT g, 'e' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
           FROM generate_series(1, 100) g;
         INSERT INTO docs SELECT 'd' || g, 'body', 1 FROM generate_series(1, 30) g;",
    )
    .unwrap();
    let source = bare(&pg_url);
    let copy = dir.path().join("copy.db");
    let state = dir.path().join("pgc.state.json");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            &source,
            "--to",
            copy.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "-q",
        ],
    ));
    let pass = |cursor: &str| -> serde_json::Value {
        let report = dir.path().join("pgc.json");
        ok(&run(
            dir.path(),
            &[
                "sync",
                "--from",
                &source,
                "--to",
                copy.to_str().unwrap(),
                "--cursor",
                cursor,
                "--deletes",
                "ignore",
                "--report",
                report.to_str().unwrap(),
            ],
        ));
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
    };
    pass("updated_at");
    pass("version");
    // Microseconds past the mark, a row at the mark, and a version bump.
    pg.batch_execute(
        "UPDATE events SET body = 'later', updated_at = updated_at + interval '1 microsecond' WHERE id = 100;
         INSERT INTO events VALUES (101, 'tie', timestamptz '2024-01-01 00:01:40.000001+00');
         UPDATE docs SET body = 'v2', version = 2 WHERE id IN ('d3', 'd10');",
    )
    .unwrap();
    let report = pass("updated_at");
    let events = table(&report, "events");
    assert_eq!(events["by"], "cursor");
    assert_eq!(events["read"], 2, "{report:#}");
    assert_eq!(events["inserted"], 1, "{report:#}");
    // Every doc was at the mark (version 1): all are read again, two of them behind.
    let report = pass("version");
    let docs = table(&report, "docs");
    assert_eq!(docs["by"], "cursor");
    assert_eq!(docs["read"], 30, "{report:#}");
    assert_eq!(docs["at_mark"], 28, "{report:#}");
    assert_eq!(report["lag_rows"], 2, "{report:#}");
    // Now the mark is 2: only those two are read.
    let report = pass("version");
    assert_eq!(table(&report, "docs")["read"], 2, "{report:#}");
    assert_eq!(report["lag_rows"], 0, "{report:#}");
    let out = run(dir.path(), &["diff", &source, copy.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
