//! Sharded runs through the command line, with real processes against a real PostgreSQL and real files:
//! `ferry plan-shards`, `ferry run JOB --shard I` (some shards killed with SIGKILL and started again, one
//! run twice at once, one run again once done), `ferry shards status` and `ferry shards finish`, checked
//! against one unsharded run of the same job.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::pg::{cluster, PASSWORD};
use crate::support::{ferry_env, ok};

/// Runs ferry with the test cluster's password in `PGPASSWORD` (job files never hold one).
fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    ferry_env(dir, args, &[("PGPASSWORD", PASSWORD)])
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("PGPASSWORD", PASSWORD)
        .env_remove("DATABASE_URL")
        .env_remove("FERRY_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A SQLite source whose keys are skewed: a dense run, a few far-away keys, a dense run near 10^12, and
/// some rows without a key.
fn skewed_source(path: &Path, dense: i64) -> i64 {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE events (id INTEGER, account TEXT NOT NULL, amount REAL, note TEXT)",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    let mut rows = 0;
    {
        let mut insert = tx
            .prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        let ids = (1..=dense)
            .chain((0..50).map(|i| 1_000_000 + i * 7_919))
            .chain((0..dense / 3).map(|i| 1_000_000_000_000 + i));
        for id in ids {
            let note = (id % 5 == 0).then(|| format!("note, \"quoted\" {id}"));
            insert
                .execute(rusqlite::params![
                    id,
                    format!("acct-{}", id % 97),
                    id as f64 / 4.0,
                    note
                ])
                .unwrap();
            rows += 1;
        }
        for i in 0..7 {
            insert
                .execute(rusqlite::params![
                    None::<i64>,
                    "no-key",
                    i as f64,
                    None::<String>
                ])
                .unwrap();
            rows += 1;
        }
    }
    tx.commit().unwrap();
    rows
}

fn sqlite_count(path: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

fn write_job(dir: &Path, name: &str, job: serde_json::Value) {
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(&job).unwrap()).unwrap();
}

fn without_password(url: &str) -> String {
    url.replace(&format!(":{PASSWORD}@"), "@")
}

#[test]
fn shards_killed_restarted_and_run_twice_load_exactly_the_rows_of_one_unsharded_run() {
    let pg = cluster();
    let dir = tempfile::tempdir().unwrap();
    let rows = skewed_source(&dir.path().join("src.db"), 60_000);
    let url = pg.fresh_database("shards_kill");
    let target = without_password(&url);
    write_job(
        dir.path(),
        "job.json",
        serde_json::json!({"job": "convert", "input": "sqlite://src.db?table=events",
            "output": format!("{target}?table=events"), "batch_size": 1000}),
    );
    ok(&run(
        dir.path(),
        &[
            "plan-shards",
            "job.json",
            "--by",
            "range:id",
            "--shards",
            "4",
            "-o",
            "sharded.json",
        ],
    ));
    let sharded = std::fs::read_to_string(dir.path().join("sharded.json")).unwrap();
    assert!(!sharded.contains(PASSWORD), "{sharded}");

    // All four at once, shard 2 twice at the same time; shards 1 and 3 killed shortly after they start.
    let mut children: Vec<(usize, Child)> = [0, 1, 2, 2, 3]
        .into_iter()
        .map(|i| {
            (
                i,
                spawn(
                    dir.path(),
                    &["run", "sharded.json", "--shard", &i.to_string(), "-q"],
                ),
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    for (i, child) in children.iter_mut() {
        if *i == 1 || *i == 3 {
            child.kill().unwrap();
        }
    }
    let mut twice = Vec::new();
    let mut killed = 0;
    for (i, child) in children {
        let out = child.wait_with_output().unwrap();
        if i == 2 {
            twice.push((out.status.code(), stderr(&out)));
        }
        killed +=
            usize::from(std::os::unix::process::ExitStatusExt::signal(&out.status) == Some(9));
    }
    assert!(killed > 0, "no shard was killed while it ran");
    // Of the two attempts at shard 2, at least one committed; the other either found it done, or was
    // refused at its commit and rolled back.
    assert!(twice.iter().any(|(code, _)| *code == Some(0)), "{twice:?}");
    for (code, text) in &twice {
        assert!(
            *code == Some(0) || text.contains("committed by another attempt"),
            "{text}"
        );
    }
    // The killed shards are started again (as a scheduler would retry them); shard 0 runs once more.
    for i in ["1", "3"] {
        ok(&run(
            dir.path(),
            &["run", "sharded.json", "--shard", i, "-q"],
        ));
    }
    let again = ok(&run(dir.path(), &["run", "sharded.json", "--shard", "0"]));
    assert!(again.contains("already done"), "{again}");

    let status = run(dir.path(), &["shards", "status", "sharded.json"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.status.code(), Some(0), "{text}{}", stderr(&status));
    assert!(
        text.contains("4 of 4 shards done, 0 failed, 0 missing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{rows} read, {rows} written")),
        "{text}"
    );
    assert!(text.contains("complete"), "{text}");

    // The same job unsharded, into another table of the same database.
    write_job(
        dir.path(),
        "whole.json",
        serde_json::json!({"job": "convert", "input": "sqlite://src.db?table=events",
            "output": format!("{target}?table=whole")}),
    );
    ok(&run(dir.path(), &["run", "whole.json", "-q"]));
    let count = |sql: &str| pg.psql(&url, sql);
    assert_eq!(count("SELECT count(*) FROM events"), rows.to_string());
    assert_eq!(count("SELECT count(*) FROM whole"), rows.to_string());
    for (a, b) in [("events", "whole"), ("whole", "events")] {
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) d"
            )),
            "0",
            "{a} minus {b}"
        );
    }
    assert_eq!(
        count("SELECT count(*), sum(read), sum(written) FROM _ferry_shards WHERE status = 'done'"),
        format!("4|{rows}|{rows}")
    );
}

#[test]
fn a_failed_shard_is_listed_as_failed_and_loads_nothing_until_it_is_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.csv"), "id,name\n1,ann\n2,bob\n").unwrap();
    std::fs::write(d.join("b.csv"), "id,name\n3,cy\n4,dee,extra\n").unwrap();
    std::fs::write(d.join("c.csv"), "id,name\n5,eve\n").unwrap();
    write_job(
        d,
        "job.json",
        serde_json::json!({"job": "convert", "input": "a.csv", "output": "sqlite://out.db?table=people",
            "types": {"id": "integer"}}),
    );
    ok(&run(
        d,
        &[
            "plan-shards",
            "job.json",
            "--by",
            "files",
            "a.csv",
            "b.csv",
            "c.csv",
            "-o",
            "s.json",
        ],
    ));
    for i in ["0", "1", "2"] {
        let out = run(d, &["run", "s.json", "--shard", i, "-q"]);
        assert_eq!(
            out.status.code(),
            Some(if i == "1" { 1 } else { 0 }),
            "{}",
            stderr(&out)
        );
    }
    let status = run(d, &["shards", "status", "s.json"]);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.status.code(), Some(1), "{text}");
    assert!(
        text.contains("2 of 3 shards done, 1 failed, 0 missing"),
        "{text}"
    );
    assert!(text.contains("b.csv"), "the failure names the file: {text}");
    let count = |sql: &str| sqlite_count(&d.join("out.db"), sql);
    assert_eq!(
        count("SELECT count(*) FROM people"),
        3,
        "shard 1 loaded nothing"
    );

    std::fs::write(d.join("b.csv"), "id,name\n3,cy\n4,dee\n").unwrap();
    // The plan is the job file: the fixed input is the same shard, run again.
    ok(&run(d, &["run", "s.json", "--shard", "1", "-q"]));
    let status = run(d, &["shards", "status", "s.json", "--json"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["complete"], true);
    assert_eq!(json["total"]["read"], 5);
    assert_eq!(count("SELECT count(*) FROM people"), 5);
    assert_eq!(count("SELECT count(DISTINCT id) FROM people"), 5);

    // A shard number the job does not have, or none at all, is a usage error.
    let out = run(d, &["run", "s.json", "--shard", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("numbered 0 to 2"), "{}", stderr(&out));
    let out = run(d, &["run", "s.json", "--shard", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&out)
    );
    let out = run(d, &["run", "s.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--shard"), "{}", stderr(&out));
}

/// Rows per shard of a plan, counted by running each shard's own query.
fn rows_per_shard(dir: &Path, plan: &str) -> Vec<u64> {
    let job = ferry::shard::ShardedJob::read(&dir.join(plan)).unwrap();
    (0..job.shards.len())
        .map(|i| {
            let ferry::Job::Convert(convert) = job.job_of(i).unwrap() else {
                panic!("not a convert job")
            };
            let out = run(dir, &["count", "--in", &convert.input]);
            ok(&out);
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        })
        .collect()
}

#[test]
fn range_plans_on_skewed_keys_give_shards_within_twice_of_each_other() {
    let pg = cluster();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = skewed_source(&d.join("src.db"), 20_000) as u64;
    // The same rows in PostgreSQL, where the split points come from percentile_disc.
    let url = pg.fresh_database("shards_skew");
    let target = without_password(&url);
    ok(&run(
        d,
        &[
            "convert",
            "--in",
            "sqlite://src.db?table=events",
            "--to",
            &format!("{target}?table=events"),
            "-q",
        ],
    ));
    for (name, input) in [
        ("sqlite", "sqlite://src.db?table=events".to_owned()),
        ("postgres", format!("{target}?table=events")),
    ] {
        for shards in [2, 5, 8] {
            write_job(
                d,
                "job.json",
                serde_json::json!({"job": "convert", "input": input, "output": "out.ndjson"}),
            );
            let plan = format!("{name}-{shards}.json");
            ok(&run(
                d,
                &[
                    "plan-shards",
                    "job.json",
                    "--by",
                    "range:id",
                    "--shards",
                    &shards.to_string(),
                    "-o",
                    &plan,
                ],
            ));
            let counts = rows_per_shard(d, &plan);
            assert_eq!(counts.len(), shards, "{name}: {counts:?}");
            assert_eq!(
                counts.iter().sum::<u64>(),
                rows,
                "{name}: every row in one shard: {counts:?}"
            );
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max <= &(2 * min), "{name}, {shards} shards: {counts:?}");
        }
    }
    // A key that is not an integer is refused with the reason.
    write_job(
        d,
        "job.json",
        serde_json::json!({"job": "convert", "input": "sqlite://src.db?table=events", "output": "o.ndjson"}),
    );
    let out = run(
        d,
        &[
            "plan-shards",
            "job.json",
            "--by",
            "range:account",
            "--shards",
            "3",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("integer key column"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn encrypted_file_shards_finish_into_one_set_that_verify_and_convert_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = skewed_source(&d.join("src.db"), 3_000);
    ok(&run(d, &["keygen", "k.key"]));
    write_job(
        d,
        "job.json",
        serde_json::json!({"job": "convert", "input": "sqlite://src.db?table=events",
            "output": "out/events.ndjson.gz.enc", "mkdir": true, "key_source": {"key_file": "k.key"},
            "split": {"max_records": 700}}),
    );
    ok(&run(
        d,
        &[
            "plan-shards",
            "job.json",
            "--by",
            "range:id",
            "--shards",
            "3",
            "-o",
            "s.json",
        ],
    ));
    // Finishing before every shard is done names the missing ones.
    ok(&run(d, &["run", "s.json", "--shard", "0", "-q"]));
    let out = run(d, &["shards", "finish", "s.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("shards 1, 2 are not done"),
        "{}",
        stderr(&out)
    );
    for i in ["1", "2"] {
        ok(&run(d, &["run", "s.json", "--shard", i, "-q"]));
    }
    let again = ok(&run(d, &["run", "s.json", "--shard", "2"]));
    assert!(again.contains("already done"), "{again}");
    let status = run(d, &["shards", "status", "s.json"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    ok(&run(d, &["shards", "finish", "s.json"]));
    let names = crate::support::file_names(&d.join("out"));
    assert!(
        names.contains(&"events.manifest.json".to_owned()),
        "{names:?}"
    );
    assert!(names.iter().all(|n| !n.contains("shard")), "{names:?}");
    let out = run(
        d,
        &["verify", "out/events.manifest.json", "--key-file", "k.key"],
    );
    let verified = ok(&out) + &String::from_utf8_lossy(&out.stdout);
    assert!(verified.contains("manifest authenticated"), "{verified}");
    assert!(verified.contains(&format!("{rows} records")), "{verified}");
    // Read back whole, it holds exactly the rows of an unsharded export.
    ok(&run(
        d,
        &[
            "convert",
            "--in",
            "out/events.manifest.json",
            "--key-file",
            "k.key",
            "--to",
            "sharded.csv",
            "--sort",
            "id",
            "-q",
        ],
    ));
    ok(&run(
        d,
        &[
            "convert",
            "--in",
            "sqlite://src.db?table=events",
            "--to",
            "whole.csv",
            "--sort",
            "id",
            "-q",
        ],
    ));
    let sharded = std::fs::read_to_string(d.join("sharded.csv")).unwrap();
    assert_eq!(sharded.lines().count() as i64, rows + 1);
    assert_eq!(
        sharded,
        std::fs::read_to_string(d.join("whole.csv")).unwrap()
    );
    // A second finish finds the set merged.
    let again = ok(&run(d, &["shards", "finish", "s.json"]));
    assert!(again.contains("already merged"), "{again}");
}

#[test]
fn tenant_list_shards_migrate_every_tenant_once_and_report_complete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::tenant::app_db(&d.join("app.db"), "shards");
    write_job(
        d,
        "job.json",
        serde_json::json!({"job": "migrate", "from": "app.db", "to": "t.db",
            "tenant": {"tenant": "users:all"}}),
    );
    ok(&run(
        d,
        &[
            "plan-shards",
            "job.json",
            "--by",
            "tenants",
            "--shards",
            "2",
            "-o",
            "s.json",
        ],
    ));
    let job = ferry::shard::ShardedJob::read(&d.join("s.json")).unwrap();
    assert_eq!(job.shards.len(), 2);
    assert_eq!(job.shards[0].tenants, ["users:1", "users:2"]);
    assert_eq!(job.shards[1].tenants, ["users:3"]);
    let out = run(d, &["shards", "status", "s.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 of 2 shards done, 0 failed, 2 missing")
    );
    for i in ["1", "0"] {
        ok(&run(d, &["run", "s.json", "--shard", i, "-q"]));
    }
    let again = ok(&run(d, &["run", "s.json", "--shard", "1"]));
    assert!(again.contains("already done"), "{again}");
    let out = run(d, &["shards", "status", "s.json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let count = |db: &str, sql: &str| sqlite_count(&d.join(db), sql);
    for table in [
        "users",
        "posts",
        "social_accounts",
        "notification_preferences",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count("t.db", &sql), count("app.db", &sql), "{table}");
    }
}
