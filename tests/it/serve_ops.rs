//! `ferry serve` operations under stress: cancel mid-import, kill -9 mid-import, restart with history,
//! SIGTERM with a grace period, and twenty imports and exports at once whose counts all reconcile.

use std::time::Duration;

use serde_json::{json, Value};

use crate::pg;
use crate::serve::{
    assert_error, config, counts, fixture_with, notes, sqlite_count, status_json, Fixture, Server,
};

/// A large upload: `n` notes, with ids from `first`.
fn large(first: u64, n: u64) -> Vec<u8> {
    notes(first, n, None)
}

fn start_import(f: &Fixture, data: Vec<u8>, data_type: &str, options: Value) -> String {
    let (status, op) = f.server.upload(
        &f.mover,
        "/api/data-migration/import",
        "big.ndjson",
        data,
        data_type,
        &options,
    );
    assert_eq!(status, 202, "{op:#}");
    op["operationId"].as_str().unwrap().to_owned()
}

fn op_dirs(f: &Fixture) -> Vec<String> {
    crate::support::file_names(&f.dir.path().join("work/ops"))
}

#[test]
fn serve_cancel_during_a_large_import_leaves_the_table_as_it_was() {
    let f = fixture_with(|pg| {
        config(pg, "").replace("max_concurrent_jobs: 2", "max_concurrent_jobs: 1")
    });
    let s = &f.server;
    let db = f.dir.path().join("app.db");
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "first.ndjson",
        notes(1, 100, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(sqlite_count(&db, "notes"), 100);

    // A large import runs; a second one waits in the queue (one worker).
    let running = start_import(&f, large(1000, 200_000), "notes", json!({"batchSize": 500}));
    let queued = start_import(&f, large(500_000, 10), "notes", json!({}));
    let op = s.poll(&f.mover, &running, Duration::from_secs(60), |op| {
        op["currentRecord"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(op["status"], "running");
    assert!(
        op["progress"]
            .as_f64()
            .is_some_and(|p| p > 0.0 && p < 100.0),
        "percent from bytes: {op:#}"
    );
    assert!(op["estimatedCompletion"].is_string(), "{op:#}");
    let queued_op = s.get_json(
        &f.mover,
        &format!("/api/data-migration/operations/{queued}/progress"),
    );
    assert_eq!(queued_op["status"], "queued");

    // Cancel the queued one (it ends at once) and the running one (at its next batch).
    let cancel = |id: &str| {
        status_json(
            s.http
                .post(s.url(&format!("/api/data-migration/operations/{id}/cancel")))
                .bearer_auth(&f.mover)
                .send()
                .unwrap(),
        )
    };
    let (status, op) = cancel(&queued);
    assert_eq!(status, 202, "{op:#}");
    let (status, op) = cancel(&running);
    assert_eq!(status, 202, "{op:#}");
    assert!(
        ["cancelling", "cancelled"].contains(&op["status"].as_str().unwrap()),
        "{op:#}"
    );
    let op = s.finish(&f.mover, &running);
    assert_eq!(op["status"], "cancelled", "{op:#}");
    assert_eq!(op["error"]["code"], "cancelled");
    let (read, written, ..) = counts(&op);
    assert!(read > 0 && read < 200_000, "it stopped part-way: {op:#}");
    assert!(written <= read);
    let op = s.finish(&f.mover, &queued);
    assert_eq!(op["status"], "cancelled", "{op:#}");
    assert_eq!(counts(&op).0, 0);

    // Like a failed strict run: the table as it was, nothing left behind.
    assert_eq!(sqlite_count(&db, "notes"), 100);
    assert_eq!(op_dirs(&f), Vec::<String>::new());
    let (status, body) = cancel(&running);
    assert_error(status, &body, 409, "already_finished");
    let audit = s.audit(&f.admin);
    assert!(audit
        .iter()
        .any(|a| a["action"] == "cancel" && a["operationId"] == running.as_str()));
    assert!(audit.iter().any(|a| a["action"] == "operation.finished"
        && a["operationId"] == running.as_str()
        && a["result"] == "cancelled: cancelled"));
}

#[test]
fn serve_cancel_during_an_export_leaves_no_file() {
    let f = fixture_with(|pg| config(pg, ""));
    let s = &f.server;
    let (status, op) = s.upload(
        &f.mover,
        "/api/data-migration/import?wait=120",
        "n.ndjson",
        large(1, 150_000),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let (status, op) = s.post_json(
        &f.mover,
        "/api/data-migration/export",
        &json!({"dataType": "notes", "options": {"format": "csv", "batchSize": 500}}),
    );
    assert_eq!(status, 202, "{op:#}");
    let id = op["operationId"].as_str().unwrap().to_owned();
    s.poll(&f.mover, &id, Duration::from_secs(60), |op| {
        op["currentRecord"].as_u64().unwrap_or(0) > 0
    });
    let (status, _) = status_json(
        s.http
            .post(s.url(&format!("/api/data-migration/operations/{id}/cancel")))
            .bearer_auth(&f.mover)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 202);
    let op = s.finish(&f.mover, &id);
    assert_eq!(op["status"], "cancelled", "{op:#}");
    assert!(op["result"].is_null());
    assert_eq!(
        op_dirs(&f),
        Vec::<String>::new(),
        "an export cancelled leaves no file"
    );
    let (status, body) = status_json(s.get(
        &f.mover,
        &format!("/api/data-migration/operations/{id}/result"),
    ));
    assert_error(status, &body, 409, "no_result");
}

#[test]
fn serve_kill_9_mid_import_leaves_the_tables_and_a_restart_marks_it_interrupted() {
    let mut f = fixture_with(|pg| config(pg, ""));
    let db = f.dir.path().join("app.db");
    let (status, op) = f.server.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "first.ndjson",
        notes(1, 100, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    let done = op["operationId"].as_str().unwrap().to_owned();
    let sessions = |from: u64, n: u64| -> Vec<u8> {
        (from..from + n)
            .map(|i| json!({"sid": format!("s{i}"), "owner": "x", "v": i}).to_string() + "\n")
            .collect::<String>()
            .into_bytes()
    };
    let (status, op) = f.server.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "s.ndjson",
        sessions(0, 10),
        "sessions",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");

    // Two large imports at once, SQLite and PostgreSQL; the server is killed while they run.
    let into_sqlite = start_import(&f, large(1000, 400_000), "notes", json!({"batchSize": 500}));
    let into_pg = start_import(
        &f,
        sessions(100, 200_000),
        "sessions",
        json!({"batchSize": 500}),
    );
    // Each killed while rows flow: frozen (SIGSTOP) as soon as both have loaded some, so that neither can
    // finish before the kill however long this thread waits on a loaded machine; neither has committed a row.
    for id in [&into_pg, &into_sqlite] {
        f.server.poll(&f.mover, id, Duration::from_secs(60), |op| {
            op["status"] == "running" && op["currentRecord"].as_u64().unwrap_or(0) > 0
        });
    }
    f.server.freeze();
    assert_eq!(sqlite_count(&db, "notes"), 100, "SQLite, mid-import");
    assert_eq!(
        pg::cluster().psql(&f.pg_url, "SELECT count(*) FROM sessions"),
        "10",
        "PostgreSQL, mid-import"
    );
    f.server.kill9();
    assert_eq!(
        sqlite_count(&db, "notes"),
        100,
        "SQLite: the table as it was"
    );
    assert_eq!(
        pg::cluster().psql(&f.pg_url, "SELECT count(*) FROM sessions"),
        "10",
        "PostgreSQL: the table as it was"
    );

    // The restarted server keeps the history and says what happened to the killed operations.
    let server = Server::start_again(f.dir.path());
    for id in [&into_sqlite, &into_pg] {
        let op = server.get_json(
            &f.reader,
            &format!("/api/data-migration/operations/{id}/progress"),
        );
        assert_eq!(op["status"], "failed", "{op:#}");
        assert_eq!(op["error"]["code"], "interrupted", "{op:#}");
        assert!(op["endTime"].is_string());
    }
    let op = server.get_json(
        &f.reader,
        &format!("/api/data-migration/operations/{done}/progress"),
    );
    assert_eq!(op["status"], "succeeded");
    let history = server.get_json(
        &f.reader,
        "/api/data-migration/operations/history?state=failed",
    );
    assert_eq!(history["total"], 2);
    assert_eq!(
        op_dirs(&f),
        Vec::<String>::new(),
        "the killed operations' files are removed"
    );
    let audit = server.audit(&f.admin);
    assert_eq!(
        audit
            .iter()
            .filter(|a| a["action"] == "operation.interrupted")
            .count(),
        2
    );
    // And it works as before.
    let (status, op) = server.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "more.ndjson",
        notes(200, 5, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200, "{op:#}");
    assert_eq!(sqlite_count(&db, "notes"), 105);
    f.server = server;
}

#[test]
fn serve_sigterm_lets_operations_finish_within_the_grace_period_then_cancels() {
    // A generous grace period: the running import finishes, and the server exits 0.
    let mut f = fixture_with(|pg| config(pg, ""));
    let db = f.dir.path().join("app.db");
    let id = start_import(&f, large(1, 20_000), "notes", json!({}));
    f.server.poll(&f.mover, &id, Duration::from_secs(60), |op| {
        op["status"] == "running"
    });
    assert_eq!(f.server.terminate(Duration::from_secs(60)), Some(0));
    let server = Server::start_again(f.dir.path());
    let op = server.get_json(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/progress"),
    );
    assert_eq!(op["status"], "succeeded", "{op:#}");
    assert_eq!(sqlite_count(&db, "notes"), 20_000);
    drop(server);

    // A short one: the running import is cancelled cleanly, the table as it was.
    let mut f =
        fixture_with(|pg| config(pg, "").replace("shutdown_grace: 5", "shutdown_grace: 0.2"));
    let db = f.dir.path().join("app.db");
    let (status, _) = f.server.upload(
        &f.mover,
        "/api/data-migration/import?wait=60",
        "n.ndjson",
        notes(1, 10, None),
        "notes",
        &json!({}),
    );
    assert_eq!(status, 200);
    let id = start_import(&f, large(100, 200_000), "notes", json!({"batchSize": 500}));
    f.server.poll(&f.mover, &id, Duration::from_secs(60), |op| {
        op["currentRecord"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(f.server.terminate(Duration::from_secs(60)), Some(0));
    assert_eq!(sqlite_count(&db, "notes"), 10);
    let server = Server::start_again(f.dir.path());
    let op = server.get_json(
        &f.reader,
        &format!("/api/data-migration/operations/{id}/progress"),
    );
    assert_eq!(op["status"], "cancelled", "{op:#}");
    f.server = server;
}

#[test]
fn serve_twenty_concurrent_imports_and_exports_reconcile() {
    // Ten datasets to import into and ten to export from, half on PostgreSQL, half in SQLite files.
    let mut datasets = String::new();
    for i in 0..10 {
        for (prefix, role) in [("in", "imports"), ("out", "exports")] {
            let _ = role;
            if i % 2 == 0 {
                datasets.push_str(&format!(
                    "  {prefix}{i}: {{database: pg, table: {prefix}{i}}}\n"
                ));
            } else {
                datasets.push_str(&format!(
                    "  {prefix}{i}: {{database: db{prefix}{i}, table: t}}\n"
                ));
            }
        }
    }
    let mut databases = String::new();
    for i in (1..10).step_by(2) {
        for prefix in ["in", "out"] {
            databases.push_str(&format!("  db{prefix}{i}: {{path: {prefix}{i}.db}}\n"));
        }
    }
    let f = fixture_with(|pg| {
        config(pg, &format!("{datasets}max_concurrent_uploads: 20\n"))
            .replace("max_concurrent_jobs: 2", "max_concurrent_jobs: 3")
            .replace("databases:\n", &format!("databases:\n{databases}"))
    });
    let s = &f.server;
    // The export datasets get their rows first.
    let mut expected_out = Vec::new();
    for i in 0..10u64 {
        let n = 300 + i * 37;
        let (status, op) = s.upload(
            &f.mover,
            "/api/data-migration/import?wait=60",
            "seed.ndjson",
            notes(1, n, None),
            &format!("out{i}"),
            &json!({}),
        );
        assert_eq!(status, 200, "{op:#}");
        expected_out.push(n);
    }
    // Twenty at once: each import has some records the table refuses (lenient), each export all its rows.
    let bad_every = 50u64;
    let f = &f;
    let results: Vec<(String, Value, u64, u64)> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for i in 0..10u64 {
            handles.push(scope.spawn(move || {
                let n = 1000 + i * 101;
                let mut data = Vec::new();
                for k in 1..=n {
                    let n_value = if k % bad_every == 0 {
                        json!("not a number")
                    } else {
                        json!(k)
                    };
                    let r = json!({"id": k, "title": format!("t{k}"), "n": n_value});
                    data.extend_from_slice(format!("{r}\n").as_bytes());
                }
                let (status, op) = s.upload(
                    &f.mover,
                    "/api/data-migration/import",
                    "load.ndjson",
                    data,
                    &format!("in{i}"),
                    &json!({"errorHandling": "lenient", "batchSize": 100}),
                );
                assert_eq!(status, 202, "{op:#}");
                let id = op["operationId"].as_str().unwrap().to_owned();
                (format!("in{i}"), s.finish(&f.mover, &id), n, n / bad_every)
            }));
            let expected = expected_out[i as usize];
            handles.push(scope.spawn(move || {
                let (status, op) = s.post_json(
                    &f.mover,
                    "/api/data-migration/export",
                    &json!({"dataType": format!("out{i}"), "options": {"format": "ndjson"}}),
                );
                assert_eq!(status, 202, "{op:#}");
                let id = op["operationId"].as_str().unwrap().to_owned();
                (format!("out{i}"), s.finish(&f.mover, &id), expected, 0)
            }));
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.len(), 20);
    for (dataset, op, n, bad) in &results {
        assert_eq!(op["status"], "succeeded", "{dataset}: {op:#}");
        let (read, written, rejected, filtered, skipped) = counts(op);
        assert_eq!(
            (read, written, rejected, filtered, skipped),
            (*n, n - bad, *bad, 0, 0),
            "{dataset}: {op:#}"
        );
        let i: usize = dataset
            .trim_start_matches(|c: char| c.is_alphabetic())
            .parse()
            .unwrap();
        let rows = if i % 2 == 0 {
            pg::cluster()
                .psql(&f.pg_url, &format!("SELECT count(*) FROM \"{dataset}\""))
                .parse::<u64>()
                .unwrap()
        } else {
            sqlite_count(&f.dir.path().join(format!("{dataset}.db")), "t")
        };
        assert_eq!(rows, written, "{dataset}: the table holds what was written");
        if dataset.starts_with("out") {
            let id = op["operationId"].as_str().unwrap();
            let text = s
                .get(
                    &f.reader,
                    &format!("/api/data-migration/operations/{id}/result"),
                )
                .text()
                .unwrap();
            assert_eq!(
                text.lines().count() as u64,
                written,
                "{dataset}: the file holds what was written"
            );
        } else {
            assert_eq!(
                op["result"]["files"][0]["role"], "rejects",
                "{dataset}: {op:#}"
            );
        }
    }
    // Nothing lost anywhere: the audit and the metrics agree with the operations.
    let audit = s.audit(&f.admin);
    let finished = audit
        .iter()
        .filter(|a| a["action"] == "operation.finished" && a["result"] == "succeeded")
        .count();
    assert_eq!(finished, 30);
    let total_read: u64 =
        results.iter().map(|r| r.2).sum::<u64>() + expected_out.iter().sum::<u64>();
    let metrics = s.get(&f.reader, "/metrics").text().unwrap();
    let read_metric: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_records_total{") && l.contains(r#"outcome="read""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(read_metric, total_read, "{metrics}");
    assert_eq!(
        s.get_json(&f.reader, "/api/data-migration/operations/active")["total"],
        0
    );
}
