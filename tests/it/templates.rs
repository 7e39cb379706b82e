//! The map and validate stages through the binary: templates, policies, dry runs and parallel order.

use std::fs;
use std::path::Path;

use crate::support::{ferry, root};

fn report(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(name)).unwrap()).unwrap()
}

fn counts(r: &serde_json::Value) -> [u64; 5] {
    ["read", "written", "rejected", "filtered", "skipped"].map(|k| r[k].as_u64().unwrap())
}

/// A legacy CSV with a bad date every 97th row and a filtered-out category every 89th.
fn write_legacy(dir: &Path, rows: usize) {
    let mut csv = String::from(
        "legacy_id,legacy_title,legacy_body,legacy_category,legacy_keywords,old_created\n",
    );
    for i in 0..rows {
        let date = if i % 97 == 0 {
            "13/45/2020 10:00".to_owned()
        } else {
            format!("{:02}/{:02}/2020 10:00", i % 12 + 1, i % 28 + 1)
        };
        let category = if i % 89 == 0 { "Draft" } else { "Note" };
        csv.push_str(&format!(
            "{i},\"Title {i}, with comma\",\"Body {i}\nline two\",{category},a;b;c{},{date}\n",
            i % 5
        ));
    }
    fs::write(dir.join("legacy.csv"), csv).unwrap();
    let template = fs::read_to_string(root().join("templates/std-context.yaml")).unwrap();
    fs::write(
        dir.join("filtered.yaml"),
        template.replace(
            "name: std-context",
            "name: filtered\nfilter: type != 'draft'",
        ),
    )
    .unwrap();
}

/// The same bytes and rejects whoever maps: two workers (`--jobs 2`), the writing thread (`--jobs 1`), and
/// with a slow writer (brotli at level 9) the reading thread too, which maps and encodes records while the
/// writer has half a batch or more of them waiting (`perf` shows it doing so in this run); with batches of
/// 300 records (past the reading thread's pieces of 64), a batch is sometimes split where the writer catches
/// up, its rest sent as read.
#[test]
fn output_order_is_the_same_with_one_or_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), 20_000);
    for (name, jobs, compress, batch) in [
        ("1", "1", "none", "64"),
        ("2", "2", "none", "64"),
        ("1br", "1", "brotli:9", "64"),
        ("1big", "1", "none", "300"),
    ] {
        let out = format!("out-{name}.ndjson");
        let rejects = format!("rejects-{name}.ndjson");
        let args = [
            "convert",
            "--in",
            "legacy.csv",
            "--template",
            "filtered.yaml",
            "--to",
            &out,
            "--on-error",
            "skip",
            "--rejects",
            &rejects,
            "--jobs",
            jobs,
            "--batch-size",
            batch,
            "--compress",
            compress,
        ];
        let run = ferry(dir.path(), &args);
        assert_eq!(
            run.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let one = fs::read(dir.path().join("out-1.ndjson")).unwrap();
    let two = fs::read(dir.path().join("out-2.ndjson")).unwrap();
    let mut shared = Vec::new();
    std::io::Read::read_to_end(
        &mut brotli::Decompressor::new(
            fs::File::open(dir.path().join("out-1br.ndjson")).unwrap(),
            4096,
        ),
        &mut shared,
    )
    .unwrap();
    assert!(one.len() > 1_000_000);
    assert!(
        one == two,
        "--jobs 1 and --jobs 2 must write the same bytes"
    );
    assert!(
        one == shared,
        "mapping on the reading thread must not change a byte"
    );
    let big = fs::read(dir.path().join("out-1big.ndjson")).unwrap();
    assert!(
        one == big,
        "batches split on the reading thread must not change a byte"
    );
    let rejects = |name: &str| fs::read(dir.path().join(format!("rejects-{name}.ndjson"))).unwrap();
    let lines = String::from_utf8(rejects("1")).unwrap();
    assert_eq!(lines.lines().count(), 207, "a bad date every 97th record");
    for line in lines.lines() {
        let reject: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            reject["data"]["legacy_title"]
                .as_str()
                .unwrap()
                .starts_with("Title "),
            "the record as read: {line}"
        );
    }
    assert_eq!(rejects("1"), rejects("2"));
    assert_eq!(rejects("1"), rejects("1br"));
    let ids: Vec<u64> = String::from_utf8(one)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "records keep input order"
    );
}

/// Into SQLite the reading thread maps too (the writing thread inserts, the longer job) and batches are a
/// file's size: the table's rows, in order, and the rejects are the same as when a worker pool maps
/// (`--jobs 2`), and the same rows as the file output of the same template.
#[test]
fn sqlite_rows_are_the_same_whoever_maps() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), 20_000);
    let run = |to: &str, jobs: &str, rejects: &str| {
        let args = [
            "convert",
            "--in",
            "legacy.csv",
            "--template",
            "filtered.yaml",
            "--to",
            to,
            "--on-error",
            "skip",
            "--rejects",
            rejects,
            "--jobs",
            jobs,
            "-q",
        ];
        let run = ferry(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(0), "{stderr}");
    };
    run("sqlite://one.db?table=contexts", "1", "rejects-1.ndjson");
    run("sqlite://two.db?table=contexts", "2", "rejects-2.ndjson");
    run("out.ndjson", "1", "rejects-file.ndjson");
    let rows = |name: &str| -> Vec<String> {
        let conn = rusqlite::Connection::open(dir.path().join(name)).unwrap();
        let mut statement = conn
            .prepare("SELECT CAST(id AS TEXT), title, type, tags FROM contexts ORDER BY rowid")
            .unwrap();
        let rows = statement
            .query_map([], |r| {
                let id: String = r.get(0)?;
                let title: String = r.get(1)?;
                let kind: String = r.get(2)?;
                let tags: String = r.get(3)?;
                Ok(format!("{id}|{title}|{kind}|{tags}"))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    };
    let one = rows("one.db");
    assert_eq!(one, rows("two.db"), "the same rows in the same order");
    let lines = fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    // A bad date every 97th record is rejected before the filter sees it; the other drafts are left out.
    let drafts = (0..20_000).filter(|i| i % 89 == 0 && i % 97 != 0).count();
    assert_eq!(one.len(), 20_000 - 207 - drafts);
    let from_file: Vec<String> = lines
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |name: &str| record[name].as_str().unwrap().to_owned();
            let (id, title, kind) = (text("id"), text("title"), text("type"));
            format!("{id}|{title}|{kind}|{}", record["tags"])
        })
        .collect();
    assert_eq!(
        one, from_file,
        "the table holds the file's records, in order"
    );
    let rejects = |name: &str| fs::read(dir.path().join(name)).unwrap();
    assert_eq!(rejects("rejects-1.ndjson"), rejects("rejects-2.ndjson"));
    assert_eq!(rejects("rejects-1.ndjson"), rejects("rejects-file.ndjson"));
}

#[test]
fn dry_run_reports_what_a_real_run_does_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), 2_000);
    let base = [
        "convert",
        "--in",
        "legacy.csv",
        "--template",
        "filtered.yaml",
        "--to",
        "out.ndjson",
        "--on-error",
        "lenient",
    ];
    let dry = ferry(
        dir.path(),
        &[&base[..], &["--dry-run", "--report", "dry.json"]].concat(),
    );
    assert_eq!(dry.status.code(), Some(0));
    let names = crate::support::file_names(dir.path());
    assert_eq!(
        names,
        ["dry.json", "filtered.yaml", "legacy.csv"],
        "a dry run writes no output and no rejects"
    );
    let real = ferry(
        dir.path(),
        &[&base[..], &["--report", "real.json"]].concat(),
    );
    assert_eq!(real.status.code(), Some(0));
    let (dry, real) = (
        report(dir.path(), "dry.json"),
        report(dir.path(), "real.json"),
    );
    assert_eq!(counts(&dry), counts(&real));
    assert_eq!(
        dry["bytes_written"], real["bytes_written"],
        "the dry run's size estimate is the real size"
    );
    assert_eq!(dry["dry_run"], true);
    let [read, written, rejected, filtered, skipped] = counts(&real);
    assert_eq!(read, 2_000);
    assert_eq!(rejected, 21, "every 97th row has a bad date");
    assert!(filtered > 0);
    assert_eq!(read, written + rejected + filtered + skipped);
    let rejects = fs::read_to_string(dir.path().join("out.ndjson.rejects.ndjson")).unwrap();
    assert_eq!(rejects.lines().count() as u64, rejected);
    let first: serde_json::Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert_eq!(first["record"], 1);
    assert_eq!(
        first["data"]["old_created"], "13/45/2020 10:00",
        "the rejected record keeps its original content"
    );
}

#[test]
fn strict_failure_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), 500);
    fs::write(dir.path().join("out.ndjson"), "OLD\n").unwrap();
    let run = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "legacy.csv",
            "--template",
            "std-context",
            "--to",
            "out.ndjson",
            "--batch-size",
            "10",
        ],
    );
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("record 1") && stderr.contains("createdAt"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("out.ndjson")).unwrap(),
        "OLD\n"
    );
    assert!(!dir.path().join("out.ndjson.rejects.ndjson").exists());
}

#[test]
fn readme_main_command_maps_the_shipped_sample() {
    let dir = tempfile::tempdir().unwrap();
    let sample = root().join("samples/legacy.csv");
    let run = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            sample.to_str().unwrap(),
            "--template",
            "std-context",
            "--to",
            "contexts.ndjson",
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = fs::read_to_string(dir.path().join("contexts.ndjson")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    assert_eq!(
        records[0]["title"], "Quarterly planning notes",
        "title trimmed"
    );
    assert_eq!(records[0]["type"], "meeting", "type lowercased");
    assert_eq!(
        records[0]["tags"],
        serde_json::json!(["planning", "budget", "q3"]),
        "tags split and trimmed"
    );
    assert_eq!(
        records[0]["createdAt"], "2019-03-14T09:30:00Z",
        "MM/DD/YYYY HH:MM to ISO 8601"
    );
    assert_eq!(
        records[0]["exportedAt"], "2024-06-01T12:00:00Z",
        "now() is SOURCE_DATE_EPOCH when set"
    );
}

#[test]
fn templates_are_found_by_path_directory_and_builtin_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("templates")).unwrap();
    fs::write(
        dir.path().join("templates/local.yaml"),
        "name: local\nversion: '2'\nfields:\n  - {name: a, type: integer}\n",
    )
    .unwrap();
    fs::write(dir.path().join("in.ndjson"), "{\"a\":\"5\",\"b\":1}\n").unwrap();
    let run = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--template",
            "local",
            "--to",
            "out.ndjson",
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("out.ndjson")).unwrap(),
        "{\"a\":5}\n"
    );
    let list = ferry(dir.path(), &["templates", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    for name in ["local", "std-context", "user-export"] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from:\n{text}"
        );
    }
    let show = ferry(dir.path(), &["templates", "show", "user-export"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("redact"));
    fs::write(
        dir.path().join("broken.yaml"),
        "name: broken\nfields:\n  - {name: a, transforms: [{truncate: -1}]}\n",
    )
    .unwrap();
    let check = ferry(dir.path(), &["templates", "check", "broken.yaml"]);
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr)
        .contains("field \"a\": transform 1: truncate needs a length"));
}

#[test]
fn user_export_drops_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let sample = root().join("samples/users.csv");
    let run = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            sample.to_str().unwrap(),
            "--template",
            "user-export",
            "--to",
            "users.json",
            "--on-error",
            "lenient",
        ],
    );
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = fs::read_to_string(dir.path().join("users.json")).unwrap();
    assert!(
        !out.contains("$2b$") && !out.contains("tok_live"),
        "secrets must not be exported:\n{out}"
    );
    assert!(out.contains("[REDACTED]"));
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        records.as_array().unwrap().len(),
        2,
        "one inactive user filtered, one bad record rejected"
    );
}

#[test]
fn progress_json_reports_the_final_counts() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy(dir.path(), 300);
    let args = [
        "convert",
        "--in",
        "legacy.csv",
        "--template",
        "std-context",
        "--to",
        "out.ndjson",
        "--on-error",
        "skip",
        "--progress",
        "json",
        "--quiet",
    ];
    let run = ferry(dir.path(), &args);
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let done: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "done")
        .unwrap_or_else(|| panic!("no done event in:\n{stderr}"));
    assert_eq!(done["records"], 300);
    assert_eq!(
        done["bytes"], done["total_bytes"],
        "the whole input was read"
    );
}
