//! Runs side by side on one database: loads racing for the same keys and a migration into the same
//! PostgreSQL database at the same time, and loads racing into one SQLite file. Whatever the interleaving,
//! every record read is accounted for (`read = inserted + skipped` in each report), every key ends in the
//! table exactly once, and the migration's copy equals its source. Also fifty uploads at once to
//! `ferry serve`.

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

/// Fifty uploads at once to `ferry serve`, into one PostgreSQL table and one SQLite table (25 each), each
/// with its own ids and some records the table refuses (lenient). Every operation succeeds with balanced
/// counts, and each table holds exactly the records the operations say they wrote, each id once.
#[test]
fn fifty_concurrent_http_imports_account_for_every_record() {
    use crate::serve::{config, counts, fixture_with, sqlite_count};
    use serde_json::json;

    let f = fixture_with(|pg| {
        config(
            pg,
            "  bulk_pg: {database: pg, table: bulk}\n  bulk_local: {table: bulk}\nmax_concurrent_uploads: 50\n",
        )
    });
    let s = &f.server;
    let bad_every = 40u64;
    let load = |first: u64, n: u64| {
        let mut data = Vec::new();
        for id in first..first + n {
            let value = if id % bad_every == 0 {
                json!("not a number")
            } else {
                json!(id)
            };
            let r = json!({"id": id, "title": format!("t{id}"), "n": value});
            data.extend_from_slice(format!("{r}\n").as_bytes());
        }
        data
    };
    // Each table is created by a first import, so that the fifty race for rows, not for the table.
    for dataset in ["bulk_pg", "bulk_local"] {
        let (status, op) = s.upload(
            &f.mover,
            "/api/data-migration/import?wait=60",
            "first.ndjson",
            load(1, 10),
            dataset,
            &json!({}),
        );
        assert_eq!(status, 200, "{op:#}");
    }
    let results: Vec<(String, Json, u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50u64)
            .map(|i| {
                let (load, f) = (&load, &f);
                scope.spawn(move || {
                    let dataset = if i % 2 == 0 { "bulk_pg" } else { "bulk_local" };
                    let (first, n) = (1_000 + i * 1_000, 200 + i * 7);
                    let bad = (first..first + n).filter(|id| id % bad_every == 0).count() as u64;
                    let (status, op) = s.upload(
                        &f.mover,
                        "/api/data-migration/import",
                        "load.ndjson",
                        load(first, n),
                        dataset,
                        &json!({"errorHandling": "lenient", "batchSize": 50}),
                    );
                    assert_eq!(status, 202, "{op:#}");
                    let id = op["operationId"].as_str().unwrap().to_owned();
                    (dataset.to_owned(), s.finish(&f.mover, &id), n, bad)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), 50);
    let (mut pg_written, mut local_written) = (10, 10);
    for (dataset, op, n, bad) in &results {
        assert_eq!(op["status"], "succeeded", "{dataset}: {op:#}");
        let (read, written, rejected, filtered, skipped) = counts(op);
        assert_eq!(
            (read, written, rejected, filtered, skipped),
            (*n, n - bad, *bad, 0, 0),
            "{dataset}: {op:#}"
        );
        if dataset == "bulk_pg" {
            pg_written += written;
        } else {
            local_written += written;
        }
    }
    let in_pg = cluster().psql(&f.pg_url, "SELECT count(*), count(DISTINCT id) FROM bulk");
    assert_eq!(in_pg, format!("{pg_written}|{pg_written}"));
    let local = f.server.dir.join("app.db");
    assert_eq!(sqlite_count(&local, "bulk"), local_written);
    let distinct: u64 = rusqlite::Connection::open(&local)
        .unwrap()
        .query_row("SELECT COUNT(DISTINCT id) FROM bulk", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64;
    assert_eq!(distinct, local_written);
}
