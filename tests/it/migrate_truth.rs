//! `ferry migrate` telling the truth and undoing what it did, against the throwaway PostgreSQL cluster: a
//! lenient run that rejected rows is not called valid (and fails on request), a rollback drops the views
//! it created with its tables, a second migration never overwrites the state the first one's rollback
//! needs, a backup verifies like a split set (sizes, SHA-256, records; an encrypted one's MAC), and
//! `--connect-retries` defaults as for `convert`.

use std::path::{Path, PathBuf};

use crate::migrate_copy::{run, target};
use crate::pg::cluster;
use crate::support::ok;

/// A SQLite source: `users` (an identity key, an index), `orders` referring to it, and a view over both.
fn source(dir: &Path, bad_age: bool) -> PathBuf {
    let path = dir.join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, age INTEGER);
         CREATE INDEX users_name ON users (name);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id), total NUMERIC);
         CREATE VIEW big_orders AS SELECT o.id, u.name, o.total FROM orders o JOIN users u ON u.id = o.user_id WHERE o.total > 10;
         INSERT INTO users (name, age) VALUES ('ada', 36), ('grace', 85), ('alan', 41);
         INSERT INTO orders VALUES (1, 1, 12.50), (2, 2, 3.10), (3, 3, 99.99);",
    )
    .unwrap();
    if bad_age {
        conn.execute("UPDATE users SET age = 'forty' WHERE id = 3", [])
            .unwrap();
    }
    path
}

fn report(dir: &Path, file: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}

fn count(client: &mut postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_lenient_migration_that_rejected_rows_is_not_called_valid() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), true);
    let db = db.to_str().unwrap();
    let (url, _) = target("truth_lenient");
    let args = [
        "migrate",
        "--from",
        db,
        "--to",
        &url,
        "--on-error",
        "lenient",
        "--report",
        "r.json",
    ];
    let out = run(dir.path(), &args);
    let text = ok(&out);
    assert!(
        !text.contains("every table has equal rows and checksums"),
        "{text}"
    );
    assert!(
        text.contains("validation FAILED") && text.contains("1 row(s) were rejected"),
        "{text}"
    );
    let r = report(dir.path(), "r.json");
    assert_eq!(r["valid"], false, "{r:#}");
    assert_eq!(
        (r["read"].as_u64(), r["rejected"].as_u64()),
        (Some(6), Some(1))
    );

    // Asked to, the same run ends with exit code 3 (its target and rejects stay).
    let (url, mut pg) = {
        let (url, full) = target("truth_lenient_fail");
        (url, cluster().client(&full))
    };
    let out = run(
        dir.path(),
        &[
            "migrate",
            "--from",
            db,
            "--to",
            &url,
            "--on-error",
            "skip",
            "--state",
            "second.json",
            "--fail-on-rejects",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--fail-on-rejects"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&mut pg, "SELECT count(*) FROM users"), 2);
}

#[test]
fn rollback_drops_the_views_and_tables_it_created_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), false);
    let (url, full) = target("truth_rollback");
    let mut pg = cluster().client(&full);
    pg.batch_execute(
        "CREATE TABLE keep_me (x int); CREATE VIEW keep_view AS SELECT x FROM keep_me",
    )
    .unwrap();
    ok(&run(
        dir.path(),
        &["migrate", "--from", db.to_str().unwrap(), "--to", &url],
    ));
    assert_eq!(
        count(&mut pg, "SELECT count(*) FROM big_orders"),
        2,
        "the view was migrated"
    );
    let objects = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE n.nspname = 'public'";
    let before = count(&mut pg, objects);
    assert!(
        before > 4,
        "tables, their indexes, sequences and the view: {before}"
    );
    let out = run(
        dir.path(),
        &["migrate", "--rollback", "ferry-migrate.state.json"],
    );
    ok(&out);
    // What the migration made is gone — the view first, then the tables with their indexes and sequences
    // — and what was there before stays.
    let left: Vec<String> = pg
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["keep_me", "keep_view"]);
}

#[test]
fn a_second_migration_never_overwrites_the_state_the_first_ones_rollback_needs() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), false);
    let db = db.to_str().unwrap();
    let (first, first_full) = target("truth_state_one");
    ok(&run(dir.path(), &["migrate", "--from", db, "--to", &first]));
    let state = dir.path().join("ferry-migrate.state.json");
    let kept = std::fs::read(&state).unwrap();

    let (second, _) = target("truth_state_two");
    let out = run(dir.path(), &["migrate", "--from", db, "--to", &second]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds the state of a finished migration")
            && stderr(&out).contains("--state"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        kept,
        "the state file is untouched"
    );

    // With its own state file the second migration runs, and the first can still be undone.
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            db,
            "--to",
            &second,
            "--state",
            "second.state.json",
        ],
    ));
    ok(&run(
        dir.path(),
        &["migrate", "--rollback", "ferry-migrate.state.json"],
    ));
    let mut pg = cluster().client(&first_full);
    assert_eq!(
        count(
            &mut pg,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        0
    );
}

#[test]
fn a_backup_verifies_like_a_split_set_and_an_encrypted_one_by_its_mac() {
    let dir = tempfile::tempdir().unwrap();
    let db = source(dir.path(), false);
    let db = db.to_str().unwrap();
    let (url, _) = target("truth_backup_plain");
    ok(&run(
        dir.path(),
        &["migrate", "--from", db, "--to", &url, "--backup", "bk"],
    ));
    let out = run(dir.path(), &["verify", "bk/backup.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}{stdout}", stderr(&out));
    assert!(
        stdout.contains("verified bk/backup.json") && stdout.contains("6 records"),
        "{stdout}"
    );

    // A record count that does not match the file is found (by reading it back), as is a changed file.
    let manifest_path = dir.path().join("bk/backup.json");
    let original = std::fs::read_to_string(&manifest_path).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&original).unwrap();
    m["tables"][0]["records"] = 99.into();
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let out = run(dir.path(), &["verify", "bk/backup.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the backup manifest says 99"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&manifest_path, &original).unwrap();
    let file = dir.path().join("bk/users.ndjson.zst");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(0);
    std::fs::write(&file, bytes).unwrap();
    let out = run(dir.path(), &["verify", "bk/backup.json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("SHA-256"), "{}", stderr(&out));

    // Encrypted: the key verifies the manifest's MAC and every file; without it, only what needs none.
    ok(&run(dir.path(), &["keygen", "backup.key"]));
    let (url, _) = target("truth_backup_enc");
    ok(&run(
        dir.path(),
        &[
            "migrate",
            "--from",
            db,
            "--to",
            &url,
            "--backup",
            "enc",
            "--key-file",
            "backup.key",
            "--state",
            "enc.state.json",
        ],
    ));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("enc/backup.json")).unwrap())
            .unwrap();
    assert_eq!(m["mac"]["algorithm"], "HMAC-SHA256", "{m:#}");
    let out = run(
        dir.path(),
        &["verify", "enc/backup.json", "--key-file", "backup.key"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}{stdout}", stderr(&out));
    assert!(stdout.contains("manifest authenticated"), "{stdout}");
    let out = run(dir.path(), &["verify", "enc/backup.json"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("NOT verified"),
        "{stdout}"
    );
    // A manifest edited to match a swapped file's size and digest still fails: its MAC does not match.
    let mut edited = m.clone();
    edited["tables"][0]["records"] = 2.into();
    std::fs::write(dir.path().join("enc/backup.json"), edited.to_string()).unwrap();
    let out = run(
        dir.path(),
        &["verify", "enc/backup.json", "--key-file", "backup.key"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("failed authentication"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migrate_retries_a_connection_as_convert_does() {
    let dir = tempfile::tempdir().unwrap();
    let job = |args: &[&str]| -> serde_json::Value {
        let out = run(dir.path(), args);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let migrate = job(&[
        "migrate",
        "--from",
        "a.db",
        "--to",
        "postgres://u@h/db",
        "--print-job",
    ]);
    let convert = job(&["convert", "--in", "a.csv", "--to", "b.csv", "--print-job"]);
    assert_eq!(migrate["connect"]["retries"], convert["connect"]["retries"]);
    assert_eq!(migrate["connect"]["retries"], 3);
}
