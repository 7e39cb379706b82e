//! Databases as sources and sinks, against real SQLite files and a real throwaway PostgreSQL cluster
//! (tests/it/pg.rs): round trips of every value type, conflicts, strict failures that leave the table as it
//! was, dry runs, hostile identifiers, connection errors that never show a password.

use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::Value as Json;

use crate::pg::{cluster, PASSWORD};
use crate::support::{corpus, ferry, ferry_env, ok};

fn failed(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failed run:\n{stderr}"
    );
    stderr
}

pub(crate) fn ndjson(path: &Path) -> Vec<Json> {
    fs::read_to_string(path)
        .expect("read output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn report(path: &Path) -> Json {
    serde_json::from_slice(&fs::read(path).expect("report")).expect("report json")
}

/// A URL with `?table=` appended.
pub(crate) fn table_url(url: &str, table: &str) -> String {
    format!(
        "{url}?table={}",
        table
            .replace('%', "%25")
            .replace(' ', "%20")
            .replace('"', "%22")
            .replace(';', "%3B")
    )
}

pub(crate) const TYPES_TEMPLATE: &str = "name: every-type
version: '1'
target: {table: things, key: [id]}
fields:
  - {name: id, type: integer, required: true}
  - {name: label, type: string}
  - {name: ratio, type: number}
  - {name: amount, type: decimal}
  - {name: active, type: boolean}
  - {name: born, type: date}
  - {name: seen, type: datetime}
  - {name: tags, type: array}
  - {name: meta, type: object}
  - {name: blob, type: bytes}
";

pub(crate) const TYPES_INPUT: &str = r#"{"id":1,"label":"Grüße, 世界 🚀\nline two\ttab \"quoted\"","ratio":0.1,"amount":"12345678901234567890.000000000001","active":true,"born":"1999-12-31","seen":"2024-06-01T12:30:45.123456+02:00","tags":["a","b c",""],"meta":{"k":[1,{"deep":null}],"n":1.5},"blob":"AAEC/w=="}
{"id":2,"label":"","ratio":-1e-7,"amount":"-0.10","active":false,"born":"2024-02-29","seen":"2024-01-01T00:00:00Z","tags":[],"meta":{},"blob":""}
{"id":3,"label":null,"ratio":null,"amount":null,"active":null,"born":null,"seen":null,"tags":null,"meta":null,"blob":null}
"#;

/// Timestamps compared as instants: PostgreSQL's timestamptz keeps the instant, not the offset written.
pub(crate) fn same_records(expected: &[Json], actual: &[Json]) {
    assert_eq!(expected.len(), actual.len());
    for (e, a) in expected.iter().zip(actual) {
        for (key, ev) in e.as_object().expect("object") {
            let av = &a[key];
            if key == "seen" && !ev.is_null() {
                let parse = |v: &Json| {
                    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("text"))
                        .expect("rfc3339")
                };
                assert_eq!(parse(ev), parse(av), "{key} in {e}");
            } else {
                assert_eq!(ev, av, "field {key} of {e}\n got {a}");
            }
        }
    }
}

#[test]
fn every_value_type_survives_file_to_sqlite_to_postgres_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("types.yaml"), TYPES_TEMPLATE).unwrap();
    fs::write(d.join("in.ndjson"), TYPES_INPUT).unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--template",
            "types.yaml",
            "--to",
            "mapped.ndjson",
        ],
    ));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--template",
            "types.yaml",
            "--to",
            "sqlite://app.db",
        ],
    ));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://app.db?table=things",
            "--to",
            "from-sqlite.ndjson",
        ],
    ));
    let mapped = ndjson(&d.join("mapped.ndjson"));
    // SQLite keeps everything exactly, offsets included.
    assert_eq!(mapped, ndjson(&d.join("from-sqlite.ndjson")));

    let pg = cluster().fresh_database("types");
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://app.db?table=things",
            "--template",
            "types.yaml",
            "--to",
            &pg,
        ],
    ));
    let columns = cluster().psql(
        &pg,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'things'",
    );
    assert_eq!(
        columns,
        "id bigint, label text, ratio double precision, amount numeric, active boolean, born date, \
         seen timestamp with time zone, tags jsonb, meta jsonb, blob bytea"
    );
    assert_eq!(
        cluster().psql(&pg, "SELECT amount::text FROM things WHERE id = 1"),
        "12345678901234567890.000000000001"
    );
    assert_eq!(
        cluster().psql(&pg, "SELECT count(*) FROM things WHERE label = ''"),
        "1"
    );
    assert_eq!(
        cluster().psql(&pg, "SELECT count(*) FROM things WHERE label IS NULL"),
        "1"
    );
    assert_eq!(
        cluster().psql(&pg, "SELECT encode(blob, 'hex') FROM things WHERE id = 1"),
        "000102ff"
    );

    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            &table_url(&pg, "things"),
            "--to",
            "from-pg.ndjson",
        ],
    ));
    same_records(&mapped, &ndjson(&d.join("from-pg.ndjson")));
    // And a query, back into SQLite: types still exact.
    let query = format!("{pg}?query=SELECT * FROM things WHERE id >= 2 ORDER BY id");
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            &query,
            "--to",
            "sqlite://back.db?table=things",
        ],
    ));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://back.db?table=things",
            "--to",
            "back.ndjson",
        ],
    ));
    same_records(&mapped[1..], &ndjson(&d.join("back.ndjson")));
}

/// Loads `input` (NDJSON with id/title/meta) with a conflict mode, returns the table as sorted JSON rows.
fn load_with_conflict(d: &Path, target: &str, mode: &str, input: &str) -> (Output, Json) {
    fs::write(d.join("batch.ndjson"), input).unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "batch.ndjson",
            "--to",
            target,
            "--key",
            "id",
            "--on-conflict",
            mode,
            "--report",
            "r.json",
        ],
    );
    let r = if out.status.success() {
        report(&d.join("r.json"))
    } else {
        Json::Null
    };
    (out, r)
}

fn conflict_modes_on(target: &str, d: &Path, read_back: &dyn Fn() -> Vec<Json>) {
    let first = "{\"id\":1,\"title\":\"one\",\"note\":\"keep\",\"meta\":{\"a\":1,\"b\":1}}\n{\"id\":2,\"title\":\"two\",\"note\":\"n2\",\"meta\":{\"a\":2}}\n";
    let (out, _) = load_with_conflict(d, target, "error", first);
    ok(&out);
    let second = "{\"id\":2,\"title\":\"TWO\",\"note\":null,\"meta\":{\"b\":3}}\n{\"id\":3,\"title\":\"three\",\"note\":\"n3\",\"meta\":null}\n";

    // error: the duplicate is rejected with the database's message; the run fails under strict.
    let (out, _) = load_with_conflict(d, target, "error", second);
    let stderr = failed(&out);
    assert!(
        stderr.contains("record 1") && stderr.to_lowercase().contains("unique")
            || stderr.contains("duplicate key"),
        "{stderr}"
    );
    assert_eq!(
        read_back().len(),
        2,
        "a failed strict run must leave the table as it was"
    );

    // skip: the existing row stays.
    let (out, r) = load_with_conflict(d, target, "skip", second);
    ok(&out);
    assert_eq!(
        (
            r["inserted"].as_u64(),
            r["updated"].as_u64(),
            r["skipped"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(r["read"], 2);
    let rows = read_back();
    assert_eq!(rows[1]["title"], "two");
    assert_eq!(rows.len(), 3);

    // overwrite: the record replaces the loaded columns, nulls included.
    let third = "{\"id\":2,\"title\":\"TWO\",\"note\":null,\"meta\":{\"b\":3}}\n{\"id\":4,\"title\":\"four\",\"note\":null,\"meta\":null}\n";
    let (out, r) = load_with_conflict(d, target, "overwrite", third);
    ok(&out);
    assert_eq!(
        (
            r["inserted"].as_u64(),
            r["updated"].as_u64(),
            r["skipped"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let rows = read_back();
    assert_eq!(
        (rows[1]["title"].clone(), rows[1]["note"].clone()),
        (Json::from("TWO"), Json::Null)
    );

    // merge: only non-null values overwrite; objects are merged key by key.
    let fourth = "{\"id\":1,\"title\":\"ONE\",\"note\":null,\"meta\":{\"b\":2,\"c\":3}}\n";
    let (out, r) = load_with_conflict(d, target, "merge", fourth);
    ok(&out);
    assert_eq!(
        (r["inserted"].as_u64(), r["updated"].as_u64()),
        (Some(0), Some(1))
    );
    let rows = read_back();
    assert_eq!(rows[0]["title"], "ONE");
    assert_eq!(
        rows[0]["note"], "keep",
        "a null in merge must not overwrite"
    );
    assert_eq!(rows[0]["meta"], serde_json::json!({"a": 1, "b": 2, "c": 3}));
    assert_eq!(rows.len(), 4);
}

#[test]
fn conflict_modes_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let pg = cluster().fresh_database("conflicts");
    let target = table_url(&pg, "items");
    let read = {
        let (d, target) = (d.clone(), target.clone());
        move || {
            ok(&ferry(
                &d,
                &[
                    "convert",
                    "--in",
                    &format!("{pg}?query=SELECT * FROM items ORDER BY id"),
                    "--to",
                    "back.ndjson",
                ],
            ));
            let _ = &target;
            ndjson(&d.join("back.ndjson"))
        }
    };
    conflict_modes_on(&target, &d, &read);
}

#[test]
fn conflict_modes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let target = "sqlite://app.db?table=items".to_owned();
    let read = {
        let d = d.clone();
        move || {
            ok(&ferry(
                &d,
                &[
                    "convert",
                    "--in",
                    "sqlite://app.db?query=SELECT * FROM items ORDER BY id",
                    "--to",
                    "back.ndjson",
                ],
            ));
            ndjson(&d.join("back.ndjson"))
        }
    };
    conflict_modes_on(&target, &d, &read);
}

/// 5,000 records whose record 3,500 does not fit the integer column.
fn numbers_with_a_bad_one() -> String {
    (1..=5000)
        .map(|i| {
            if i == 3500 {
                format!("{{\"id\":{i},\"n\":\"not a number\"}}\n")
            } else {
                format!("{{\"id\":{i},\"n\":{}}}\n", i * 2)
            }
        })
        .collect()
}

#[test]
fn a_strict_failure_midway_leaves_either_table_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("seed.ndjson"), "{\"id\":-1,\"n\":7}\n").unwrap();
    fs::write(d.join("big.ndjson"), numbers_with_a_bad_one()).unwrap();
    let pg = cluster().fresh_database("strict");
    for target in [
        table_url(&pg, "nums"),
        "sqlite://s.db?table=nums".to_owned(),
    ] {
        ok(&ferry(
            d,
            &["convert", "--in", "seed.ndjson", "--to", &target],
        ));
        let out = ferry(
            d,
            &[
                "convert",
                "--in",
                "big.ndjson",
                "--to",
                &target,
                "--batch-size",
                "100",
            ],
        );
        let stderr = failed(&out);
        assert!(
            stderr.contains("record 3500")
                && stderr.contains("\"n\"")
                && stderr.contains("not a number"),
            "{stderr}"
        );
        let source = if target.starts_with("sqlite") {
            "sqlite://s.db?table=nums".to_owned()
        } else {
            target.clone()
        };
        ok(&ferry(
            d,
            &["convert", "--in", &source, "--to", "after.ndjson"],
        ));
        assert_eq!(
            ndjson(&d.join("after.ndjson")),
            vec![serde_json::json!({"id": -1, "n": 7})],
            "{target}"
        );
        // Lenient: the bad record goes to the rejects file, the 4,999 others load.
        let out = ferry(
            d,
            &[
                "convert",
                "--in",
                "big.ndjson",
                "--to",
                &target,
                "--on-error",
                "lenient",
                "--rejects",
                "bad.ndjson",
            ],
        );
        ok(&out);
        let rejects = fs::read_to_string(d.join("bad.ndjson")).unwrap();
        assert_eq!(rejects.lines().count(), 1);
        assert!(rejects.contains("\"record\":3500"), "{rejects}");
        ok(&ferry(
            d,
            &["convert", "--in", &source, "--to", "after.ndjson"],
        ));
        assert_eq!(ndjson(&d.join("after.ndjson")).len(), 5000);
    }
    // A new SQLite file from a failed run is not left behind.
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "big.ndjson",
            "--to",
            "sqlite://new.db?table=nums",
        ],
    );
    failed(&out);
    assert!(!d.join("new.db").exists());
}

/// A database file the run creates is loaded under a rollback journal (each page written once) and left in
/// WAL mode with 16 KiB pages; a load killed with SIGKILL after pages reached the file leaves a hot journal
/// that rolls it back to an empty, valid database — not a half-loaded or corrupt one.
#[test]
fn a_new_sqlite_file_ends_in_wal_mode_and_a_killed_load_leaves_it_empty() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows = |from: u64, to: u64| -> String {
        (from..to)
            .map(|i| format!("{i},name {i},{}\n", "x".repeat(200)))
            .collect()
    };
    fs::write(
        d.join("in.csv"),
        format!("id,name,pad\n{}", rows(0, 20_000)),
    )
    .unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            "sqlite://new.db?table=t",
            "-q",
        ],
    ));
    let conn = rusqlite::Connection::open(d.join("new.db")).unwrap();
    let pragma = |name: &str| -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Integer(n) => n.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "wal");
    assert_eq!(pragma("page_size"), "16384");
    assert_eq!(pragma("integrity_check"), "ok");
    let count: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 20_000);
    drop(conn);

    // The input comes through a pipe that stays open, so the run is still loading when it is killed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "-",
            "sqlite://killed.db?table=t",
            "--from-format",
            "csv",
            "-q",
        ])
        .current_dir(d)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"id,name,pad\n").unwrap();
    let file = d.join("killed.db");
    let mut next = 0;
    // Past SQLite's page cache (2 MiB): pages have been written into the file itself.
    while fs::metadata(&file).map_or(0, |m| m.len()) < 4 << 20 {
        assert!(next < 2_000_000, "the load never reached the file");
        stdin
            .write_all(rows(next, next + 5_000).as_bytes())
            .unwrap();
        next += 5_000;
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(
        d.join("killed.db-journal").exists(),
        "a hot journal is left"
    );
    let conn = rusqlite::Connection::open(&file).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "the killed load's table was rolled back");
}

#[test]
fn rows_the_server_refuses_are_found_and_rejected_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("bisect");
    let input: String = (1..=1000)
        .map(|i| match i {
            17 | 500 | 999 => format!("{{\"id\":{i},\"score\":-{i},\"name\":\"bad\"}}\n"),
            640 => format!("{{\"id\":{i},\"score\":null,\"name\":\"no score\"}}\n"),
            _ => format!("{{\"id\":{i},\"score\":{i},\"name\":\"ok\"}}\n"),
        })
        .collect();
    fs::write(d.join("scores.ndjson"), input).unwrap();
    // One batch; then batches of 100, each COPY's end sent before the next batch is mapped and its answer
    // (a refusal in the 1st, 5th, 7th and 10th batch) taken after; then `--limit 500`, reached in the batch
    // of records 401–500, whose record 500 the server refuses: settled, it does not count, and records 501
    // and 502 are read to take its place (and that of record 17).
    let loads = [
        (
            "scores",
            "4096",
            None,
            [1000, 996, 4],
            &[17, 500, 640, 999][..],
            "996|498344",
        ),
        (
            "scores_in_batches",
            "100",
            None,
            [1000, 996, 4],
            &[17, 500, 640, 999],
            "996|498344",
        ),
        (
            "scores_limited",
            "100",
            Some("500"),
            [502, 500, 2],
            &[17, 500],
            "500|125736",
        ),
    ];
    for (table, batch_size, limit, counts, refused, loaded) in loads {
        cluster().psql(
            &pg,
            &format!("CREATE TABLE {table} (id int PRIMARY KEY, score int NOT NULL CHECK (score >= 0), name text)"),
        );
        let target = table_url(&pg, table);
        let mut args = vec![
            "convert",
            "--in",
            "scores.ndjson",
            "--to",
            &target,
            "--on-error",
            "lenient",
            "--batch-size",
            batch_size,
            "--report",
            "r.json",
        ];
        args.extend(limit.iter().flat_map(|n| ["--limit", n]));
        let stderr = ok(&ferry(d, &args));
        let r = report(&d.join("r.json"));
        let counted = ["read", "written", "rejected"].map(|k| r[k].as_u64().unwrap());
        assert_eq!(counted, counts, "{table}");
        assert!(stderr.contains("_score_check"), "{stderr}");
        assert!(
            limit.is_some() || stderr.contains("not-null") || stderr.contains("null value"),
            "{stderr}"
        );
        // Beside a table output, the rejects file is named after the table.
        let rejects = fs::read_to_string(d.join(format!("{table}.rejects.ndjson"))).unwrap();
        let numbers: Vec<u64> = rejects
            .lines()
            .map(|l| {
                serde_json::from_str::<Json>(l).unwrap()["record"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(numbers, refused, "{table}");
        let count = format!("SELECT count(*), sum(id) FROM {table}");
        assert_eq!(cluster().psql(&pg, &count), loaded, "{table}");
    }
}

/// A raw CSV for a table of text columns: plain rows, and rows that are not plain (a JSON cell, the null
/// marker, a ragged row, invalid UTF-8) or that the server refuses (a NUL byte, a CHECK), spread over the
/// first batches (records) and the later ones (encoded straight from the text).
fn text_table_csv() -> Vec<u8> {
    let mut csv = b"id,name,note\n".to_vec();
    for i in 1..=400u32 {
        let row: Vec<u8> = match i % 97 {
            5 => format!("{i},\"{{\"\"a\"\": [1, 2]}}\",json cell\n").into_bytes(),
            11 => format!("{i},NULL,null marker\n").into_bytes(),
            23 => format!("{i},short row\n").into_bytes(),
            31 => [format!("{i},caf").as_bytes(), b"\xe9", b",latin1\n"].concat(),
            42 => format!("{i},nul\0byte,server refuses\n").into_bytes(),
            60 => format!("{i},bad,check refuses\n").into_bytes(),
            70 => format!("{i},\"two\nlines, \"\"quoted\"\"\",\n").into_bytes(),
            _ => format!("{i},name {i} é,note {}\n", "x".repeat(i as usize % 13)).into_bytes(),
        };
        csv.extend(row);
    }
    csv
}

#[test]
fn a_raw_csv_load_into_text_columns_skips_records_and_keeps_every_row_as_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("textrows");
    fs::write(d.join("rows.csv"), text_table_csv()).unwrap();
    // A `--where` that keeps every record makes a shaping step, which keeps every row a record: the
    // same load the long way.
    let mut loads = Vec::new();
    // The whole file; the first 250 rows written (`--limit`); all but the first 130 rows (`--resume`:
    // skipped, so the table's columns are fixed only in the seventh batch).
    let runs = [None, Some(["--limit", "250"]), Some(["--resume", "130"])];
    for (shaped, limit) in runs.iter().flat_map(|run| [(false, run), (true, run)]) {
        let table = format!("rows_{shaped}_{}", limit.map_or("all", |l| &l[0][2..]));
        let create = format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, name text CHECK (name <> 'bad'), note text)"
        );
        cluster().psql(&pg, &create);
        let target = table_url(&pg, &table);
        let mut args = vec![
            "convert",
            "--in",
            "rows.csv",
            "--to",
            &target,
            "--json-cells",
            "--null-marker",
            "NULL",
            "--on-error",
            "skip",
            "--batch-size",
            "20",
            "--report",
            "r.json",
        ];
        args.extend(limit.iter().flatten());
        if shaped {
            args.extend(["--where", "true"]);
        }
        ok(&ferry(d, &args));
        let r = report(&d.join("r.json"));
        let counts = ["read", "written", "rejected", "filtered", "skipped"].map(|k| r[k].as_u64());
        let [read, written, rejected, filtered, skipped] = counts.map(Option::unwrap);
        assert_eq!(read, written + rejected + filtered + skipped, "{table}");
        let from_text = r["rows_from_text"].as_u64().unwrap_or(0);
        let content = format!(
            "SELECT string_agg(concat_ws('|', id, coalesce(name, '<null>'), note), E'\\n' \
             ORDER BY id::int) FROM {table}"
        );
        let rows = cluster().psql(&pg, &content);
        let rejects = ndjson(&d.join(format!("{table}.rejects.ndjson")));
        let rejected_rows: Vec<(Json, Json, Json)> = rejects
            .iter()
            .map(|j| (j["record"].clone(), j["line"].clone(), j["data"].clone()))
            .collect();
        loads.push((limit, counts, from_text, rows, rejected_rows));
    }
    for pair in loads.chunks(2) {
        let [(limit, counts, from_text, rows, rejected), (_, counts_2, from_text_2, rows_2, rejected_2)] =
            pair
        else {
            unreachable!()
        };
        // Past the first two batches of 20, every plain row went straight from its text into the table.
        assert!(*from_text > 150, "{from_text} rows from text ({limit:?})");
        assert!(*from_text > 200 || limit.is_some());
        assert_eq!(*from_text_2, 0);
        assert_eq!(
            (counts, rows, rejected),
            (counts_2, rows_2, rejected_2),
            "{limit:?}"
        );
    }
    // What the loads did, row by row: the refusals named with their records and lines, the odd cells as read.
    let (_, counts, _, rows, rejected) = &loads[0];
    assert_eq!(counts[..3], [Some(400), Some(384), Some(16)]);
    assert!(rows.contains("5|{\"a\":[1,2]}|json cell"), "{rows}");
    assert!(rows.contains("11|<null>|null marker"));
    assert!(rows.contains("70|two\nlines, \"quoted\"|\n"));
    assert!(rows.contains("398|name 398 é|note xxxxxxxx"));
    let refused: Vec<u64> = rejected.iter().map(|(n, ..)| n.as_u64().unwrap()).collect();
    let every_97th = |k: u64| [23, 31, 42, 60].map(|i| 97 * k + i);
    assert_eq!(refused, (0..4).flat_map(every_97th).collect::<Vec<_>>());
    let nul = rejected.iter().find(|(n, ..)| n == 139).unwrap();
    assert_eq!(
        nul.1, 141,
        "line of record 139, after the two-line cell of record 70"
    );
    assert_eq!(nul.2["name"], "nul\0byte");
    assert_eq!(nul.2["note"], "server refuses");
    // Rows the server refuses in the batch where the limit is reached (236 and 254) do not count.
    assert_eq!(loads[2].1[1], Some(250), "--limit 250 writes 250 rows");
    // Rows that do not decode are rejected whatever `--resume` says (rows 23, 31, 120 and 128).
    assert_eq!(
        loads[4].1[4],
        Some(126),
        "--resume 130 skips the rows it loaded"
    );
}

#[test]
fn a_dry_run_reports_what_a_real_run_does_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("dryrun");
    let samples = crate::support::root().join("samples").join("legacy.csv");
    let samples = samples.to_str().unwrap();
    for target in [pg.clone(), "sqlite://dry.db".to_owned()] {
        let args = |extra: &[&'static str]| -> Vec<String> {
            let mut a: Vec<String> = [
                "convert",
                "--in",
                samples,
                "--template",
                "std-context",
                "--to",
                &target,
                "--report",
                "r.json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let run = |extra: &[&'static str]| {
            let a = args(extra);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = ferry(d, &refs);
            ok(&out);
            report(&d.join("r.json"))
        };
        let counts = |r: &Json| {
            [
                "read", "written", "rejected", "filtered", "skipped", "inserted", "updated",
            ]
            .map(|k| r[k].as_u64())
        };
        let dry = run(&["--dry-run"]);
        assert_eq!(dry["created_table"], true);
        if target.starts_with("sqlite") {
            assert!(
                !d.join("dry.db").exists(),
                "a dry run must not create the database file"
            );
        } else {
            assert_eq!(
                cluster().psql(&pg, "SELECT to_regclass('contexts') IS NULL"),
                "t"
            );
        }
        let real = run(&[]);
        assert_eq!(counts(&dry), counts(&real), "{target}");
        assert_eq!(real["inserted"], 6);
        // Again, with conflicts: a dry run of skip and merge counts them without touching the rows.
        let dry = run(&["--dry-run", "--on-conflict", "skip"]);
        assert_eq!(
            (dry["skipped"].as_u64(), dry["inserted"].as_u64()),
            (Some(6), Some(0))
        );
        let dry = run(&["--dry-run", "--on-conflict", "merge"]);
        let real = run(&["--on-conflict", "merge"]);
        assert_eq!(counts(&dry), counts(&real));
        assert_eq!(real["updated"], 6);
    }
}

#[test]
fn hostile_identifiers_are_quoted_and_cannot_inject_sql() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("idents");
    let table = "we\"ird; DROP TABLE victim; --";
    fs::write(
        d.join("in.ndjson"),
        "{\"select\":1,\"a b\":\"x\",\"q\\\"uote\":\"y\",\"Mixed Case\":true,\"x'); DROP TABLE victim; --\":2}\n",
    )
    .unwrap();
    cluster().psql(&pg, "CREATE TABLE victim (id int)");
    for target in [table_url(&pg, table), table_url("sqlite://odd.db", table)] {
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "in.ndjson",
                "--to",
                &target,
                "--key",
                "select",
                "--on-conflict",
                "merge",
            ],
        ));
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "in.ndjson",
                "--to",
                &target,
                "--key",
                "select",
                "--on-conflict",
                "overwrite",
            ],
        ));
        let source = target.clone();
        ok(&ferry(
            d,
            &["convert", "--in", &source, "--to", "back.ndjson"],
        ));
        assert_eq!(ndjson(&d.join("back.ndjson")), ndjson(&d.join("in.ndjson")));
    }
    assert_eq!(
        cluster().psql(&pg, "SELECT to_regclass('victim') IS NOT NULL"),
        "t"
    );
}

#[test]
fn values_that_do_not_fit_an_existing_table_name_record_column_value_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("coerce");
    cluster().psql(
        &pg,
        "CREATE TABLE t (id smallint, at date, flag boolean, extra text DEFAULT 'd')",
    );
    fs::write(
        d.join("in.csv"),
        "id,at,flag\n1,2024-01-02,yes\n70000,2024-01-02,no\n3,2024-13-01,true\n4,2024-01-04,maybe\n5,2024-01-05,0\n",
    )
    .unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            &table_url(&pg, "t"),
            "--on-error",
            "lenient",
        ],
    );
    let stderr = ok(&out);
    assert!(
        stderr.contains("record 2")
            && stderr.contains("\"70000\"")
            && stderr.contains("\"id\" (smallint)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("record 3") && stderr.contains("\"at\" (date)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("record 4") && stderr.contains("\"flag\" (boolean)"),
        "{stderr}"
    );
    assert_eq!(
        cluster().psql(
            &pg,
            "SELECT string_agg(id || ':' || flag || ':' || extra, ',' ORDER BY id) FROM t"
        ),
        "1:true:d,5:false:d"
    );
    // A field the table has no column for stops the run before anything is written.
    fs::write(d.join("extra.csv"), "id,nope\n1,2\n").unwrap();
    let stderr = failed(&ferry(
        d,
        &["convert", "--in", "extra.csv", "--to", &table_url(&pg, "t")],
    ));
    assert!(
        stderr.contains("\"nope\"") && stderr.contains("no column"),
        "{stderr}"
    );
}

#[test]
fn connections_fail_clearly_and_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), "{\"id\":1}\n").unwrap();
    // Nothing listens on a port we bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ferry:{PASSWORD}@127.0.0.1:{port}/x?table=t");
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            &url,
            "--connect-retries",
            "1",
            "--report",
            "r.json",
        ],
    );
    let stderr = failed(&out);
    assert!(
        stderr.contains(&format!("cannot connect to postgres at 127.0.0.1:{port}"))
            && stderr.contains("is the server running?"),
        "{stderr}"
    );
    assert!(stderr.contains("warning: a password in a URL"), "{stderr}");
    let r = fs::read_to_string(d.join("r.json")).unwrap();
    assert!(
        !stderr.contains(PASSWORD) && !r.contains(PASSWORD),
        "password leaked:\n{stderr}\n{r}"
    );
    // A wrong password is refused, not retried, and not shown.
    let wrong = cluster().url("postgres").replace(PASSWORD, "wrong-pw-123");
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            &table_url(&wrong, "t"),
        ],
    );
    let stderr = failed(&out);
    assert!(
        stderr.contains("refused the connection") && !stderr.contains("wrong-pw-123"),
        "{stderr}"
    );
}

#[test]
fn bare_postgres_uses_database_url_and_pg_variables_with_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), "{\"id\":1,\"v\":\"a\"}\n").unwrap();
    let pg = cluster().fresh_database("envurl");
    let without_password = pg.replace(&format!(":{PASSWORD}@"), "@");
    let tls = format!("{without_password}?sslmode=require");
    let out = ferry_env(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "postgres",
            "--table",
            "t",
        ],
        &[("DATABASE_URL", &tls), ("PGPASSWORD", PASSWORD)],
    );
    let stderr = ok(&out);
    assert!(
        !stderr.contains("warning") && !stderr.contains(PASSWORD),
        "{stderr}"
    );
    assert_eq!(cluster().psql(&pg, "SELECT v FROM t"), "a");
    // libpq variables alone.
    let port = cluster().port.to_string();
    let db = pg.rsplit('/').next().unwrap();
    let out = ferry_env(
        d,
        &[
            "convert",
            "--in",
            "postgres",
            "--to",
            "-",
            "--to-format",
            "ndjson",
            "--quiet",
        ],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "ferry"),
            ("PGPASSWORD", PASSWORD),
            ("PGDATABASE", db),
        ],
    );
    // No table or query: a usage error saying how to name one.
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ferry_env(
        d,
        &[
            "convert",
            "--in",
            "postgres",
            "--to",
            "-",
            "--to-format",
            "ndjson",
            "--quiet",
        ],
        &[
            (
                "DATABASE_URL",
                &format!("{without_password}?query=SELECT v FROM t"),
            ),
            ("PGPASSWORD", PASSWORD),
        ],
    );
    ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"v\":\"a\"}\n");
}

#[test]
fn commit_every_leaves_committed_batches_and_resume_finishes_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("big.ndjson"), numbers_with_a_bad_one()).unwrap();
    let pg = cluster().fresh_database("resume");
    let target = table_url(&pg, "nums");
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "big.ndjson",
            "--to",
            &target,
            "--batch-size",
            "500",
            "--commit-every",
            "1000",
        ],
    );
    let stderr = failed(&out);
    assert!(stderr.contains("rerun with --resume 3000"), "{stderr}");
    assert_eq!(cluster().psql(&pg, "SELECT count(*) FROM nums"), "3000");
    // Fix the bad record, then resume: nothing duplicated, nothing lost.
    let fixed = numbers_with_a_bad_one().replace("\"not a number\"", "7000");
    fs::write(d.join("big.ndjson"), fixed).unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "big.ndjson",
            "--to",
            &target,
            "--resume",
            "3000",
            "--report",
            "r.json",
        ],
    );
    ok(&out);
    let r = report(&d.join("r.json"));
    assert_eq!(
        (r["skipped"].as_u64(), r["inserted"].as_u64()),
        (Some(3000), Some(2000))
    );
    assert_eq!(
        cluster().psql(&pg, "SELECT count(*), count(DISTINCT id), sum(n) FROM nums"),
        "5000|5000|25005000"
    );
}

#[test]
fn chinook_tracks_go_from_sqlite_to_ndjson_to_postgres() {
    let Some(chinook) = corpus("sqlite-chinook") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = chinook.join("Chinook_Sqlite.sqlite");
    let source = format!("sqlite://{}?table=Track", db.display());
    ok(&ferry(
        d,
        &["convert", "--in", &source, "--to", "tracks.ndjson"],
    ));
    let tracks = ndjson(&d.join("tracks.ndjson"));
    assert_eq!(tracks.len(), 3503);
    assert_eq!(tracks[0]["Name"], "For Those About To Rock (We Salute You)");
    let pg = cluster().fresh_database("chinook");
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "tracks.ndjson",
            "--to",
            &table_url(&pg, "Track"),
            "--key",
            "TrackId",
        ],
    ));
    assert_eq!(
        cluster().psql(
            &pg,
            "SELECT count(*), sum(\"Milliseconds\"), count(\"Composer\") FROM \"Track\""
        ),
        "3503|1378778040|2526"
    );
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            &format!("{pg}?query=SELECT * FROM \"Track\" ORDER BY \"TrackId\""),
            "--to",
            "back.ndjson",
        ],
    ));
    assert_eq!(ndjson(&d.join("back.ndjson")), tracks);
}

#[test]
fn without_a_template_a_schema_or_the_values_give_the_column_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("s.json"),
        r#"{"type":"object","properties":{"at":{"type":"string","format":"date-time"},"n":{"type":["null","integer"]},"tags":{"type":"array"}}}"#,
    )
    .unwrap();
    fs::write(d.join("in.ndjson"), "{\"n\":1,\"at\":\"2024-01-01T00:00:00Z\",\"tags\":[\"x\"],\"f\":1.5,\"d\":\"2024-01-01\"}\n").unwrap();
    let pg = cluster().fresh_database("schemakinds");
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--schema",
            "s.json",
            "--to",
            &table_url(&pg, "t"),
        ],
    ));
    let columns = cluster().psql(
        &pg,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 't'",
    );
    // Record order; the schema's types, else the value's (a date-shaped string stays text: no guessing).
    assert_eq!(
        columns,
        "n bigint, at timestamp with time zone, tags jsonb, f double precision, d text"
    );
}

#[test]
fn a_new_sqlite_file_keeps_its_committed_rows_when_a_later_batch_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("big.ndjson"), numbers_with_a_bad_one()).unwrap();
    let target = "sqlite://new.db?table=nums";
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "big.ndjson",
            "--to",
            target,
            "--batch-size",
            "500",
            "--commit-every",
            "1000",
        ],
    );
    let stderr = failed(&out);
    assert!(stderr.contains("rerun with --resume 3000"), "{stderr}");
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://new.db?query=SELECT count(*) AS n FROM nums",
            "--to",
            "n.ndjson",
        ],
    ));
    assert_eq!(
        ndjson(&d.join("n.ndjson")),
        vec![serde_json::json!({"n": 3000})]
    );
}

#[test]
fn resuming_inside_a_batch_keeps_each_record_with_its_own_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("t.yaml"),
        "name: upper\ntarget: {table: people, key: [id]}\nfields:\n  - {name: id, type: integer}\n  - {name: name, transforms: [uppercase]}\n",
    )
    .unwrap();
    let input: String = (1..=10)
        .map(|i| format!("{{\"id\":{i},\"name\":\"person {i}\"}}\n"))
        .collect();
    fs::write(d.join("in.ndjson"), input).unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--template",
            "t.yaml",
            "--to",
            "sqlite://p.db",
            "--batch-size",
            "4",
            "--resume",
            "3",
            "--report",
            "r.json",
        ],
    );
    ok(&out);
    assert_eq!(report(&d.join("r.json"))["skipped"], 3);
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://p.db?query=SELECT * FROM people ORDER BY id",
            "--to",
            "back.ndjson",
        ],
    ));
    let rows = ndjson(&d.join("back.ndjson"));
    assert_eq!(rows.len(), 7);
    for row in rows {
        let id = row["id"].as_i64().unwrap();
        assert_eq!(row["name"], format!("PERSON {id}"), "{row}");
    }
}

#[test]
fn overwriting_a_table_of_only_key_columns_counts_updates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("in.ndjson"),
        "{\"a\":1,\"b\":2}\n{\"a\":1,\"b\":2}\n",
    )
    .unwrap();
    let pg = cluster().fresh_database("keyonly");
    for target in [
        "sqlite://k.db?table=pairs".to_owned(),
        table_url(&pg, "pairs"),
    ] {
        let out = ferry(
            d,
            &[
                "convert",
                "--in",
                "in.ndjson",
                "--to",
                &target,
                "--key",
                "a,b",
                "--on-conflict",
                "overwrite",
                "--report",
                "r.json",
            ],
        );
        ok(&out);
        let r = report(&d.join("r.json"));
        assert_eq!(
            (r["inserted"].as_u64(), r["updated"].as_u64()),
            (Some(1), Some(1)),
            "{target}"
        );
    }
}

/// 200,000 records with ids 0…199,999, as in issue 12.
fn two_hundred_thousand(path: &Path) {
    let mut text = String::with_capacity(6 << 20);
    for id in 0..200_000 {
        text.push_str(&format!("{{\"id\":{id},\"name\":\"n{id}\"}}\n"));
    }
    fs::write(path, text).unwrap();
}

/// Loads rows.ndjson into `url` with `--key id` twice at the same moment.
fn two_loads_at_once(dir: &Path, url: &str) -> [Output; 2] {
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args([
                "convert",
                "--in",
                "rows.ndjson",
                "--to",
                url,
                "--key",
                "id",
                "-q",
            ])
            .current_dir(dir)
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ferry")
    };
    let (a, b) = (start(), start());
    [
        a.wait_with_output().expect("wait"),
        b.wait_with_output().expect("wait"),
    ]
}

/// Issue 12: two loads at once with `--key id` into a table without a unique index on `id` both exited
/// 0, leaving 400,000 rows with 200,000 distinct ids. Such a table cannot catch a duplicate key, so
/// ferry refuses to load it with a key (on both databases); with a unique index, one load wins and the
/// other fails on the duplicate keys, leaving every id once.
#[test]
fn concurrent_loads_never_double_rows_of_a_table_that_does_not_enforce_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    two_hundred_thousand(&d.join("rows.ndjson"));
    let pg = cluster().fresh_database("concurrent");
    let sqlite = d.join("c.db");
    rusqlite::Connection::open(&sqlite)
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER, name TEXT)")
        .unwrap();
    cluster().psql(&pg, "CREATE TABLE t (id bigint, name text)");
    let count = |target: &str| -> (i64, i64) {
        let sql = "SELECT count(*), count(DISTINCT id) FROM t";
        match target {
            "postgres" => {
                let row = cluster().client(&pg).query_one(sql, &[]).unwrap();
                (row.get(0), row.get(1))
            }
            _ => rusqlite::Connection::open(&sqlite)
                .unwrap()
                .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap(),
        }
    };
    let targets = [
        ("postgres", table_url(&pg, "t")),
        ("sqlite", format!("sqlite://{}?table=t", sqlite.display())),
    ];
    for (name, url) in &targets {
        for out in two_loads_at_once(d, url) {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
            assert!(
                stderr.contains("has no primary key or unique index on its key (\"id\")")
                    && stderr.contains("CREATE UNIQUE INDEX \"t_id_key\" ON \"t\" (\"id\")"),
                "{name}: {stderr}"
            );
        }
        assert_eq!(count(name), (0, 0), "{name}: nothing loaded");
        // The other conflict modes need the same index, and say so before reading a record.
        let skip = ferry(
            d,
            &[
                "convert",
                "--in",
                "rows.ndjson",
                "--to",
                url,
                "--key",
                "id",
                "--on-conflict",
                "skip",
            ],
        );
        assert!(
            String::from_utf8_lossy(&skip.stderr).contains("--on-conflict skip could not catch it"),
            "{name}: {}",
            String::from_utf8_lossy(&skip.stderr)
        );
    }
    cluster().psql(&pg, "CREATE UNIQUE INDEX t_id_key ON t (id)");
    rusqlite::Connection::open(&sqlite)
        .unwrap()
        .execute_batch("CREATE UNIQUE INDEX t_id_key ON t (id)")
        .unwrap();
    for (name, url) in &targets {
        let outs = two_loads_at_once(d, url);
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let loser = outs.iter().find(|o| o.status.code() == Some(1));
        assert!(
            codes.contains(&Some(0)) && loser.is_some(),
            "{name}: one load wins, the other fails: {codes:?}"
        );
        let stderr = String::from_utf8_lossy(&loser.unwrap().stderr).to_lowercase();
        assert!(
            stderr.contains("duplicate key") || stderr.contains("unique constraint failed"),
            "{name}: {stderr}"
        );
        assert_eq!(count(name), (200_000, 200_000), "{name}: every id once");
    }
}

/// Issue 12: the losing run of two concurrent table creations failed with PostgreSQL's
/// `duplicate key value violates unique constraint "pg_type_typname_nsp_index"`. Here the first load
/// creates the table and holds its transaction open (its input is still coming); the second, which
/// cannot see the uncommitted table, tries to create it too and waits; when the first commits, the
/// second is told what happened.
#[test]
fn the_loser_of_two_concurrent_table_creations_is_told_so() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("create_race");
    let url = table_url(&pg, "u");
    let wait_for = |what: &str, sql: &str| {
        let started = std::time::Instant::now();
        while cluster().psql(&pg, sql) == "0" {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "-",
            "--from-format",
            "ndjson",
            "--to",
            &url,
            "--key",
            "id",
            "-q",
        ])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = first.stdin.take().unwrap();
    for id in 0..10_000 {
        writeln!(input, "{{\"id\":{id}}}").unwrap();
    }
    input.flush().unwrap();
    wait_for(
        "the first load to create the table",
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE a.datname = current_database() AND a.application_name = 'ferry' \
         AND l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'",
    );
    fs::write(d.join("second.ndjson"), "{\"id\":20000}\n{\"id\":20001}\n").unwrap();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "second.ndjson",
            "--to",
            &url,
            "--key",
            "id",
            "-q",
        ])
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "the second load to wait for the first",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'ferry' AND wait_event_type = 'Lock'",
    );
    drop(input);
    let first = first.wait_with_output().unwrap();
    ok(&first);
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("table \"u\" was created by another session (another load?) while this run was creating it")
            && stderr.contains("run it again")
            && !stderr.contains("pg_type_typname_nsp_index"),
        "{stderr}"
    );
    assert_eq!(cluster().psql(&pg, "SELECT count(*) FROM u"), "10000");
    // Run again, as it says, it loads into the table the first run made.
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "second.ndjson",
            "--to",
            &url,
            "--key",
            "id",
        ],
    ));
    assert_eq!(cluster().psql(&pg, "SELECT count(*) FROM u"), "10002");
}

/// Issue 12: PostgreSQL cut names over 63 bytes silently, and a NUL in a header cell failed with the
/// driver's `error encoding message to server`. Both are refused before the server sees them, naming
/// the field; a NUL is refused on SQLite too.
#[test]
fn names_postgres_would_cut_and_nul_characters_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pg = cluster().fresh_database("names");
    let long = "c".repeat(70);
    fs::write(d.join("long.csv"), format!("id,{long}\n1,2\n")).unwrap();
    fs::write(d.join("nul.csv"), "id,na\0me\n1,2\n").unwrap();
    let tables = || {
        cluster().psql(
            &pg,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        )
    };

    let stderr = failed(&ferry(
        d,
        &["convert", "--in", "long.csv", "--to", &table_url(&pg, "l")],
    ));
    assert!(
        stderr.contains(&format!("field \"{long}\""))
            && stderr.contains("is 70 bytes long; PostgreSQL keeps only 63"),
        "{stderr}"
    );
    let out = ferry(
        d,
        &["convert", "--in", "nul.csv", "--to", &table_url(&pg, &long)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("table name \"{long}\" is 70 bytes long")),
        "{stderr}"
    );

    for target in [table_url(&pg, "n"), "sqlite://n.db?table=n".to_owned()] {
        let stderr = failed(&ferry(d, &["convert", "--in", "nul.csv", "--to", &target]));
        assert!(
            stderr.contains("field \"na\\0me\"")
                && stderr.contains("holds a NUL character")
                && !stderr.contains("error encoding message"),
            "{target}: {stderr}"
        );
    }
    assert_eq!(tables(), "0", "no table was created");
    assert!(!d.join("n.db").exists(), "no SQLite file was left behind");
}
