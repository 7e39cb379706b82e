//! `ferry migrate` end to end through the binary, against the throwaway PostgreSQL cluster: the corpus
//! databases there and back with every row checksum-equal, strict and lenient misfits, pre-existing
//! key violations, dry run, kill and resume, rollback, backup, and `ferry diff`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::pg::{cluster, PASSWORD};
use crate::support::{ferry_env, ok};

fn corpus(file: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/")).join(file)
}

/// A fresh database: (URL without the password, URL with it for the test's own client).
pub(crate) fn target(name: &str) -> (String, String) {
    let full = cluster().fresh_database(name);
    (full.replace(&format!(":{PASSWORD}@"), "@"), full)
}

/// Runs ferry with the password in PGPASSWORD.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    ferry_env(dir, args, &[("PGPASSWORD", PASSWORD)])
}

fn report(dir: &Path, file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

fn public_tables(client: &mut postgres::Client) -> i64 {
    count(
        client,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    )
}

/// Every table equal, read = written + rejected, no rejects.
fn assert_all_equal(r: &serde_json::Value, tables: usize) {
    assert_eq!(r["valid"], true, "{r:#}");
    let list = r["tables"].as_array().unwrap();
    assert_eq!(list.len(), tables);
    for t in list {
        assert_eq!(t["equal"], true, "{t}");
        assert_eq!(t["source_checksum"], t["target_checksum"], "{t}");
        assert_eq!(t["read"], t["written"], "{t}");
    }
    assert_eq!(
        r["read"].as_u64().unwrap(),
        r["written"].as_u64().unwrap() + r["rejected"].as_u64().unwrap()
    );
}

fn migrate_there_and_back(file: &str, name: &str, tables: usize) -> (PathBuf, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap().keep();
    let source = corpus(file);
    let (url, full) = target(name);
    let out = run(
        &dir,
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--report",
            "there.json",
        ],
    );
    let stderr = ok(&out);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let there = report(&dir, "there.json");
    assert_all_equal(&there, tables);
    let mut client = cluster().client(&full);
    assert_eq!(public_tables(&mut client), tables as i64);

    // The way back: PostgreSQL → a new SQLite file, equal to the original by `ferry diff`.
    let out = run(
        &dir,
        &[
            "migrate",
            "--from",
            &url,
            "--to",
            "back.db",
            "--state",
            "back.state.json",
            "--report",
            "back.json",
        ],
    );
    ok(&out);
    assert_all_equal(&report(&dir, "back.json"), tables);
    let out = run(&dir, &["diff", source.to_str().unwrap(), "back.db"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("= ")).count(),
        tables
    );
    (dir, there)
}

#[test]
fn chinook_migrates_there_and_back_equal() {
    let (dir, r) = migrate_there_and_back(
        "sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite",
        "copy_chinook",
        11,
    );
    assert_eq!(r["read"], 15607);
    assert_eq!(r["objects"]["foreign_keys"], 11);
    assert_eq!(r["objects"]["primary_keys"], 11);
    let back = rusqlite::Connection::open(dir.join("back.db")).unwrap();
    let fks: i64 = back
        .query_row(
            "SELECT count(*) FROM sqlite_schema s, pragma_foreign_key_list(s.name) WHERE s.type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fks, 11, "foreign keys survive the way back");
}

#[test]
fn northwind_migrates_with_views_checks_and_sequences() {
    let (_dir, r) = migrate_there_and_back("sqlite-northwind/northwind.db", "copy_northwind", 13);
    assert_eq!(r["objects"]["checks"], 7);
    assert!(r["objects"]["views"].as_u64().unwrap() >= 8, "{r:#}");
    // Views PostgreSQL refuses are listed with its reason, never dropped silently.
    let views: Vec<&serde_json::Value> = r["untranslated"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "view")
        .collect();
    assert_eq!(
        views.len() as u64 + r["objects"]["views"].as_u64().unwrap(),
        17
    );
    assert!(views.iter().all(|v| v["reason"]
        .as_str()
        .unwrap()
        .starts_with("PostgreSQL refused")));
}

#[test]
fn sakila_migrates_with_its_cycle_and_lists_triggers() {
    let (_dir, r) = migrate_there_and_back("sqlite-sakila/sakila.db", "copy_sakila", 16);
    assert_eq!(r["read"], 47273);
    assert_eq!(r["objects"]["foreign_keys"], 22);
    let triggers = r["untranslated"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["kind"] == "trigger")
        .count();
    assert_eq!(triggers, 3);
}

/// A fixture with what the corpus lacks.
fn fixture(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("fixture.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            email TEXT NOT NULL COLLATE NOCASE UNIQUE,
            age INTEGER CHECK (age >= 0),
            created_at TEXT DEFAULT CURRENT_TIMESTAMP,
            seen DATETIME,
            is_admin BOOLEAN NOT NULL DEFAULT 0,
            settings_json TEXT,
            born DATE
         );
         CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
         CREATE TABLE s (id INTEGER PRIMARY KEY, n INT NOT NULL, r REAL) STRICT;
         CREATE TABLE gen (a INTEGER, b INTEGER, total INTEGER GENERATED ALWAYS AS (a + b) STORED);
         CREATE TABLE epochs (id INTEGER PRIMARY KEY, at INTEGER);
         CREATE INDEX users_lower_email ON users (lower(email));
         CREATE INDEX users_adult ON users (age DESC) WHERE age >= 18;
         CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users ON DELETE SET NULL,
                              total NUMERIC(10,2), note TEXT);
         INSERT INTO kv VALUES ('a', x'00ff'), ('b', NULL);
         INSERT INTO s VALUES (1, 2, 0.5);
         INSERT INTO gen (a, b) VALUES (2, 3);
         INSERT INTO epochs (at) VALUES (1700000000), (0);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO users (email, age, seen, is_admin, settings_json, born) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![
                format!("u{i}@x"),
                (i % 90) as i64,
                format!("2024-01-{:02} 10:00:00", i % 28 + 1),
                (i % 2) as i64,
                format!("{{\"n\": {i}, \"tags\": [\"a\", 1.50]}}"),
                "1990-05-17"
            ],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO orders (user_id, total, note) VALUES (?1, ?2, ?3)",
            rusqlite::params![(i + 1) as i64, (i as f64) + 0.25, "ünïcode ✓"],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    path
}

#[test]
fn fixture_migrates_equal_and_postgres_enforces_what_sqlite_did() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture(dir.path(), 50);
    let (url, full) = target("copy_fixture");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--report",
            "r.json",
        ],
    ));
    let r = report(dir.path(), "r.json");
    assert_all_equal(&r, 6);
    let mut pg = cluster().client(&full);
    let row = pg
        .query_one(
            "SELECT is_admin, seen = '2024-01-02 10:00:00+00', settings_json->>'n', total::text \
             FROM users JOIN orders ON orders.user_id = users.id WHERE users.id = 2",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert!(row.get::<_, bool>(1), "naive date-times are UTC");
    assert_eq!(row.get::<_, String>(2), "1");
    assert_eq!(row.get::<_, String>(3), "1.25");
    let next: i64 = pg
        .query_one(
            "INSERT INTO users (email) VALUES ('new@x') RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(next, 51, "the identity continues past the copied ids");
    assert!(pg
        .batch_execute("INSERT INTO users (email, age) VALUES ('neg@x', -1)")
        .is_err());
    assert!(pg
        .batch_execute("INSERT INTO orders (user_id) VALUES (9999)")
        .is_err());
    let total: i64 = pg.query_one("SELECT total FROM gen", &[]).unwrap().get(0);
    assert_eq!(total, 5, "generated columns are computed by PostgreSQL");
}

#[test]
fn text_in_an_integer_column_fails_strict_and_is_rejected_lenient() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture(dir.path(), 20);
    let conn = rusqlite::Connection::open(&source).unwrap();
    conn.execute("UPDATE users SET age = 'forty' WHERE id = 7", [])
        .unwrap();
    drop(conn);
    let (url, full) = target("copy_misfit");
    let out = run(
        dir.path(),
        &["migrate", "--from", source.to_str().unwrap(), "--to", &url],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("table \"users\", row 7, column \"age\": text \"forty\"")
            && stderr.contains("is not an integer")
            && stderr.contains("target is as it was"),
        "{stderr}"
    );
    let mut pg = cluster().client(&full);
    assert_eq!(
        public_tables(&mut pg),
        0,
        "a failed strict run leaves nothing behind"
    );

    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--on-error",
            "lenient",
            "--state",
            "lenient.state.json",
            "--report",
            "r.json",
        ],
    );
    ok(&out);
    let r = report(dir.path(), "r.json");
    let users = r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "users")
        .unwrap()
        .clone();
    assert_eq!(
        (
            users["read"].clone(),
            users["written"].clone(),
            users["rejected"].clone()
        ),
        (20.into(), 19.into(), 1.into())
    );
    assert_eq!(users["equal"], true);
    let rejects =
        std::fs::read_to_string(dir.path().join("migrate-rejects/users.rejects.ndjson")).unwrap();
    let line: serde_json::Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    // The rejects line shape convert writes too: number, stage, table, reasons, the row as stored.
    assert_eq!(line["record"], 7);
    assert_eq!(line["table"], "users");
    assert!(
        line["reasons"][0]
            .as_str()
            .unwrap()
            .contains("column \"age\": text \"forty\""),
        "{line}"
    );
    assert_eq!(line["data"]["age"], "forty");
    // Its order now points at a missing user: the key is added NOT VALID and the violation reported.
    assert!(
        r["not_created"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["not_valid"] == true),
        "{r:#}"
    );
    assert_eq!(r["key_violations"][0]["table"], "orders");
    assert_eq!(count(&mut pg, "SELECT count(*) FROM users"), 19);
}

#[test]
fn existing_key_violations_fail_strict_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture(dir.path(), 5);
    let conn = rusqlite::Connection::open(&source).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = OFF; INSERT INTO orders (user_id) VALUES (777)")
        .unwrap();
    drop(conn);
    let (url, full) = target("copy_fk");
    let out = run(
        dir.path(),
        &["migrate", "--from", source.to_str().unwrap(), "--to", &url],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reference missing rows of \"users\""),
        "{stderr}"
    );
    assert_eq!(public_tables(&mut cluster().client(&full)), 0);
    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--on-error",
            "lenient",
            "--report",
            "r.json",
        ],
    );
    ok(&out);
    let r = report(dir.path(), "r.json");
    assert_eq!(r["key_violations"][0]["found_in"], "source");
    let mut pg = cluster().client(&full);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND NOT convalidated"
        ),
        1
    );
    assert_eq!(
        count(&mut pg, "SELECT count(*) FROM orders WHERE user_id = 777"),
        1,
        "nothing lost"
    );
}

#[test]
fn dry_run_reports_the_real_counts_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture(dir.path(), 30);
    let (url, full) = target("copy_dry");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--dry-run",
            "--report",
            "dry.json",
        ],
    ));
    assert_eq!(public_tables(&mut cluster().client(&full)), 0);
    assert!(!dir.path().join("ferry-migrate.state.json").exists());
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--report",
            "real.json",
        ],
    ));
    let (dry, real) = (
        report(dir.path(), "dry.json"),
        report(dir.path(), "real.json"),
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["valid"], true);
    for key in ["read", "written", "rejected", "objects"] {
        assert_eq!(dry[key], real[key], "{key}");
    }
}

#[test]
fn rollback_drops_exactly_what_the_migration_created() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus("sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite");
    let (url, full) = target("copy_rollback");
    let mut pg = cluster().client(&full);
    pg.batch_execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1)")
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--tables",
            "Artist,Album",
            "--backup",
            "bk",
        ],
    );
    ok(&out);
    assert_eq!(public_tables(&mut pg), 3);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bk/backup.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["tables"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["tables"][0]["records"], 275, "{manifest:#}");
    let sha = Command::new("sha256sum")
        .args(["-c", "Artist.ndjson.zst.sha256"])
        .current_dir(dir.path().join("bk"))
        .output()
        .unwrap();
    assert!(
        sha.status.success(),
        "{}",
        String::from_utf8_lossy(&sha.stdout)
    );
    // A second run refuses: its tables exist, and the state file is finished.
    let again = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--tables",
            "Artist",
        ],
    );
    assert_eq!(
        again.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    ok(&run(
        dir.path(),
        &["migrate", "--rollback", "ferry-migrate.state.json"],
    ));
    assert_eq!(public_tables(&mut pg), 1);
    assert_eq!(count(&mut pg, "SELECT count(*) FROM keep_me"), 1);
}

#[test]
fn a_killed_migration_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    // t0 is big enough (over 2048 pages in PostgreSQL) to be read back by two connections at once.
    for t in 0..6 {
        let rows = if t == 0 { 220_000 } else { 60_000 };
        conn.execute_batch(&format!(
            "CREATE TABLE t{t} (id INTEGER PRIMARY KEY, body TEXT, n REAL);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows})
             INSERT INTO t{t} (body, n) SELECT printf('row %d of t{t} %s', i, hex(randomblob(20))), i / 7.0 FROM c;"
        ))
        .unwrap();
    }
    drop(conn);
    let (url, full) = target("copy_resume");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "migrate",
            "--from",
            path.to_str().unwrap(),
            "--to",
            &url,
            "--jobs",
            "1",
            "-q",
        ])
        .current_dir(dir.path())
        .env("PGPASSWORD", PASSWORD)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.path().join("ferry-migrate.state.json");
    let started = Instant::now();
    // Kill it once the first table is done and before the last.
    loop {
        let finished = std::fs::read_to_string(&state)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map_or(0, |s| s["finished"].as_object().map_or(0, |f| f.len()));
        if finished >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no table finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(s["phase"], "copying", "killed mid-copy: {s:#}");
    assert!(s["finished"].as_object().unwrap().len() < 6);
    assert!(!std::fs::read_to_string(&state).unwrap().contains(PASSWORD));

    let out = run(
        dir.path(),
        &[
            "migrate",
            "--resume",
            "ferry-migrate.state.json",
            "--report",
            "r.json",
        ],
    );
    ok(&out);
    let r = report(dir.path(), "r.json");
    assert_all_equal(&r, 6);
    assert!(r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["resumed"] == true));
    let mut pg = cluster().client(&full);
    for t in 0..6 {
        let rows = if t == 0 { 220_000 } else { 60_000 };
        assert_eq!(count(&mut pg, &format!("SELECT count(*) FROM t{t}")), rows);
    }
    assert!(
        count(&mut pg, "SELECT (pg_relation_size('t0') / 8192)::bigint") > 2048,
        "t0 took the parallel read-back"
    );
    let out = run(dir.path(), &["diff", path.to_str().unwrap(), &url]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn diff_shows_the_rows_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let source = corpus("sqlite-chinook/Chinook_Sqlite_AutoIncrementPKs.sqlite");
    let (url, full) = target("copy_diff");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            source.to_str().unwrap(),
            "--to",
            &url,
            "--tables",
            "Genre,MediaType",
            "-q",
        ],
    ));
    let mut pg = cluster().client(&full);
    pg.batch_execute("UPDATE \"Genre\" SET \"Name\" = 'Polka' WHERE \"GenreId\" = 3")
        .unwrap();
    let out = run(
        dir.path(),
        &[
            "diff",
            source.to_str().unwrap(),
            &url,
            "--table",
            "Genre,MediaType",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("= \"MediaType\": 5 rows, equal"),
        "{stdout}"
    );
    assert!(
        stdout.contains("≠ \"Genre\": 25 rows in SRC, 25 in DST; 1 only in SRC, 1 only in DST")
            && stdout.contains(r#"  - {"GenreId":3,"Name":"Metal"}"#)
            && stdout.contains(r#"  + {"GenreId":3,"Name":"Polka"}"#),
        "{stdout}"
    );
}

/// Issue 12: PostgreSQL cuts names over 63 bytes silently. A table or column with such a name stops the
/// migration before anything is written (the table can be left out with --exclude); index names ferry
/// shortens itself, each unique, and the plan says so.
#[test]
fn names_over_63_bytes_are_refused_or_shortened_and_said_so() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("long.db");
    let (table, column, index) = ("L".repeat(70), "c".repeat(70), "i".repeat(70));
    rusqlite::Connection::open(&source)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             CREATE INDEX \"{index}_a\" ON t (v);
             CREATE INDEX \"{index}_b\" ON t (v, id);
             CREATE TABLE \"{table}\" (x TEXT);
             CREATE TABLE w (id INTEGER PRIMARY KEY, \"{column}\" TEXT);
             INSERT INTO t (v) VALUES ('a'), ('b');"
        ))
        .unwrap();
    let (url, full) = target("copy_long_names");
    let src = source.to_str().unwrap();
    let out = run(dir.path(), &["migrate", "--from", src, "--to", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the name of table \"{table}\" is 70 bytes long; PostgreSQL keeps only 63"
        )) && stderr.contains("--exclude"),
        "{stderr}"
    );
    let out = run(
        dir.path(),
        &["migrate", "--from", src, "--to", &url, "--exclude", &table],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "column \"{column}\" of table \"w\" is 70 bytes long"
        )),
        "{stderr}"
    );
    let mut pg = cluster().client(&full);
    assert_eq!(public_tables(&mut pg), 0, "nothing was written");

    let exclude = format!("{table},w");
    let plan = run(
        dir.path(),
        &["migrate", "--from", src, "--plan", "--exclude", &exclude],
    );
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains(&format!(
            "index \"{index}_a\" is named \"{}\"",
            &index[..63]
        )),
        "{shown}"
    );
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            src,
            "--to",
            &url,
            "--exclude",
            &exclude,
            "-q",
        ],
    ));
    let names: std::collections::BTreeSet<String> = pg
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename = 't' AND indexname <> 't_pkey'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [index[..63].to_owned(), format!("{}_2", &index[..61])].into(),
        "shortened, and still two indexes"
    );
}
