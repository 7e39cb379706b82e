//! Runs side by side on one database: loads racing for the same keys and a migration into the same
//! PostgreSQL database at the same time, and loads racing into one SQLite file. Whatever the interleaving,
//! every record read is accounted for (`read = inserted + skipped` in each report), every key ends in the
//! table exactly once, and the migration's copy equals its source.

use std::path::Path;
use std::process::Output;

use serde_json::Value as Json;

use crate::pg::{cluster, PASSWORD};
use crate::support::{corpus, ferry_env, ok};

/// Writes NDJSON records with ids `from..=to`.
fn records(dir: &Path, name: &str, from: i64, to: i64) {
    let text: String = (from..=to)
        .map(|id| format!("{{\"id\":{id},\"name\":\"item {id}\",\"n\":{}}}\n", id * 3))
        .collect();
    std::fs::write(dir.join(name), text).unwrap();
}

fn run(dir: &Path, args: &[&str]) -> Output {
    ferry_env(dir, args, &[("PGPASSWORD", PASSWORD)])
}

fn report(dir: &Path, name: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

/// The loads: (input, ids it holds). They overlap, so that the runs race for the same keys.
const LOADS: &[(&str, i64, i64)] = &[
    ("a.ndjson", 1, 20_000),
    ("b.ndjson", 15_001, 35_000),
    ("c.ndjson", 1, 40_000),
];

/// Starts every load of [`LOADS`] into `to` at once (plus `also`, another command run beside them) and
/// checks each report: read = inserted + skipped, nothing rejected. Returns the inserted counts' sum.
fn racing_loads(dir: &Path, to: &str, also: Option<Vec<String>>) -> u64 {
    for (name, from, last) in LOADS {
        records(dir, name, *from, *last);
    }
    let inserted = std::thread::scope(|scope| {
        let handles: Vec<_> = LOADS
            .iter()
            .map(|(name, ..)| {
                scope.spawn(move || {
                    let report_name = format!("{name}.report.json");
                    let args = [
                        "convert",
                        "--in",
                        name,
                        "--to",
                        to,
                        "--key",
                        "id",
                        "--on-conflict",
                        "skip",
                        "--batch-size",
                        "1000",
                        "-q",
                        "--report",
                        &report_name,
                    ];
                    ok(&run(dir, &args));
                    report(dir, &report_name)
                })
            })
            .collect();
        let other = also.as_ref().map(|args| {
            scope.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                ok(&run(dir, &args));
            })
        });
        if let Some(other) = other {
            other.join().expect("the other run");
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("a load"))
            .collect::<Vec<Json>>()
    });
    let mut total = 0;
    for (r, (name, from, last)) in inserted.iter().zip(LOADS) {
        let read = r["read"].as_u64().unwrap();
        let (ins, skipped) = (
            r["inserted"].as_u64().unwrap(),
            r["skipped"].as_u64().unwrap(),
        );
        assert_eq!(read, (last - from + 1) as u64, "{name}: {r}");
        assert_eq!(
            read,
            ins + skipped,
            "{name}: every record inserted or skipped: {r}"
        );
        assert_eq!(r["rejected"].as_u64(), Some(0), "{name}: {r}");
        total += ins;
    }
    total
}

#[test]
fn racing_loads_and_a_migration_on_one_postgres_database_account_for_every_record() {
    let Some(chinook) = corpus("sqlite-chinook") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(chinook.join("Chinook_Sqlite.sqlite"), d.join("chinook.db")).unwrap();
    let url = cluster().fresh_database("side_by_side");
    cluster()
        .client(&url)
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n bigint)")
        .unwrap();
    let plain = url.replace(&format!(":{PASSWORD}@"), "@");
    let to = format!("{plain}?table=items");
    let migrate = [
        "migrate",
        "--from",
        "chinook.db",
        "--to",
        &plain,
        "-q",
        "--jobs",
        "2",
    ];
    let inserted = racing_loads(
        d,
        &to,
        Some(migrate.iter().map(|s| s.to_string()).collect()),
    );
    assert_eq!(
        inserted, 40_000,
        "the loads inserted each key once between them"
    );
    assert_eq!(
        cluster().psql(
            &url,
            "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(n) FROM items"
        ),
        format!("40000|40000|1|40000|{}", 3_i64 * 40_000 * 40_001 / 2)
    );
    // The migration beside them copied Chinook whole.
    ok(&run(d, &["diff", "chinook.db", &plain]));
    assert_eq!(
        cluster().psql(&url, "SELECT count(*) FROM \"Track\""),
        "3503"
    );
}

#[test]
fn racing_loads_into_one_sqlite_file_account_for_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("shared.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER)",
        )
        .unwrap();
    let to = format!("sqlite://{}?table=items", db.display());
    let inserted = racing_loads(d, &to, None);
    assert_eq!(inserted, 40_000);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (count, distinct, sum): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT id), sum(n) FROM items",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (count, distinct, sum),
        (40_000, 40_000, 3_i64 * 40_000 * 40_001 / 2)
    );
}
