//! Type inference and the union of fields against real databases and the corpus: CSV loaded into new SQLite
//! and PostgreSQL tables gets typed columns, records with differing fields get every field as a column,
//! `--types` overrides, a later value that breaks an inferred type fails its own record, and `ferry describe`
//! reads the corpus CSVs as `read_csv` would. Also the messages and defaults of database endpoints: a bare
//! `postgres?table=…`, the real target shown for `PG*` variables, a TLS-less server, and a source table's
//! name as the target's default.

use std::fs;
use std::io::{Read as _, Write as _};

use serde_json::Value as Json;

use crate::db::{ndjson, table_url};
use crate::pg::{cluster, PASSWORD, USER};
use crate::support::{corpus, ferry, ferry_env, ok};

const ORDERS: &str = "id,zip,total,paid,ordered,shipped_at,tags,note
1,08123,19.99,true,2024-01-31,2024-02-01T10:00:00Z,\"[\"\"a\"\"]\",
2,12345,5,false,2024-02-29,2024-03-01T09:30:00+01:00,[],gift
3,00501,1200.50,TRUE,2024-03-01,,\"[\"\"b\"\",\"\"c\"\"]\",
";

fn pg_columns(url: &str, table: &str) -> String {
    cluster().psql(
        url,
        &format!(
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) \
             FROM information_schema.columns WHERE table_name = '{table}'"
        ),
    )
}

fn sqlite_columns(path: &std::path::Path, table: &str) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut statement = conn
        .prepare("SELECT name || ' ' || type FROM pragma_table_info(?1) ORDER BY cid")
        .unwrap();
    let names: Vec<String> = statement
        .query_map([table], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names.join(", ")
}

#[test]
fn a_csv_loaded_into_new_tables_gets_inferred_column_types() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("orders.csv"), ORDERS).unwrap();
    let pg = cluster().fresh_database("infer");
    ok(&ferry(
        d,
        &[
            "convert",
            "orders.csv",
            &table_url(&pg, "orders"),
            "--key",
            "id",
        ],
    ));
    assert_eq!(
        pg_columns(&pg, "orders"),
        "id bigint, zip text, total numeric, paid boolean, ordered date, \
         shipped_at timestamp with time zone, tags jsonb, note text"
    );
    // Values keep their text where the type is text (the zip code's zero) and their value elsewhere.
    let rows = cluster().psql(
        &pg,
        "SELECT string_agg(zip || '|' || total || '|' || paid || '|' || coalesce(note, 'NULL') || '|' \
         || tags::text, ';' ORDER BY id) FROM orders",
    );
    assert_eq!(
        rows,
        "08123|19.99|true||[\"a\"];12345|5|false|gift|[];00501|1200.50|true||[\"b\", \"c\"]"
    );
    let key = cluster().psql(
        &pg,
        "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
         AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'orders'::regclass AND i.indisprimary",
    );
    assert_eq!(key, "id");

    ok(&ferry(
        d,
        &["convert", "orders.csv", "sqlite://shop.db?table=orders"],
    ));
    assert_eq!(
        sqlite_columns(&d.join("shop.db"), "orders"),
        "id INTEGER, zip TEXT, total DECIMAL_TEXT, paid BOOLEAN, ordered DATE, shipped_at TIMESTAMP, \
         tags JSON TEXT, note TEXT"
    );
    ok(&ferry(
        d,
        &["convert", "sqlite://shop.db?table=orders", "back.ndjson"],
    ));
    let back = ndjson(&d.join("back.ndjson"));
    assert_eq!(back[0]["zip"], Json::from("08123"));
    assert_eq!(back[0]["paid"], Json::from(true));
    assert_eq!(back[2]["shipped_at"], Json::Null);
    assert_eq!(back[1]["tags"], serde_json::json!([]));
}

#[test]
fn types_override_and_a_late_value_fails_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("orders.csv"), ORDERS).unwrap();
    let pg = cluster().fresh_database("types");
    ok(&ferry(
        d,
        &[
            "convert",
            "orders.csv",
            &table_url(&pg, "orders"),
            "--types",
            "id=string,total=number,ordered=string",
        ],
    ));
    assert!(
        pg_columns(&pg, "orders")
            .starts_with("id text, zip text, total double precision, paid boolean, ordered text"),
        "{}",
        pg_columns(&pg, "orders")
    );
    // The sample is the first two records: the third breaks the inferred integer type. Strict fails and
    // leaves nothing; lenient rejects that record alone and names the override.
    fs::write(d.join("late.csv"), "n\n1\n2\nthree\n4\n").unwrap();
    for target in [
        table_url(&pg, "late"),
        "sqlite://late.db?table=late".to_owned(),
    ] {
        let out = ferry(
            d,
            &[
                "convert",
                "late.csv",
                &target,
                "--sample-records",
                "2",
                "--batch-size",
                "2",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{target}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("record 3") && stderr.contains("--types n=string"),
            "{stderr}"
        );
        let out = ferry(
            d,
            &[
                "convert",
                "late.csv",
                &target,
                "--sample-records",
                "2",
                "--batch-size",
                "2",
                "--on-error",
                "lenient",
                "--rejects",
                "late.rejects.ndjson",
            ],
        );
        let stderr = ok(&out);
        assert!(stderr.contains("written 3 + rejected 1"), "{stderr}");
    }
    assert_eq!(
        cluster().psql(&pg, "SELECT string_agg(n::text, ',' ORDER BY n) FROM late"),
        "1,2,4"
    );
}

#[test]
fn records_with_differing_fields_get_the_union_as_columns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("differing.json"),
        r#"[{"id": 1, "name": "a"}, {"id": 2, "empty_s": "", "name": "b"}, {"id": 3, "extra": true}]"#,
    )
    .unwrap();
    let pg = cluster().fresh_database("union");
    ok(&ferry(
        d,
        &["convert", "differing.json", &table_url(&pg, "t")],
    ));
    assert_eq!(
        pg_columns(&pg, "t"),
        "id bigint, name text, empty_s text, extra boolean"
    );
    assert_eq!(
        cluster().psql(
            &pg,
            "SELECT count(*) || ',' || count(empty_s) || ',' || count(extra) FROM t"
        ),
        "3,1,1"
    );
    ok(&ferry(
        d,
        &["convert", "differing.json", "sqlite://u.db?table=t"],
    ));
    assert_eq!(
        sqlite_columns(&d.join("u.db"), "t"),
        "id INTEGER, name TEXT, empty_s TEXT, extra BOOLEAN"
    );
    ok(&ferry(d, &["convert", "differing.json", "u.csv"]));
    assert_eq!(
        fs::read_to_string(d.join("u.csv")).unwrap(),
        "id,name,empty_s,extra\n1,a,,\n2,b,,\n3,,,true\n"
    );
}

#[test]
fn a_json_column_keeps_every_digit_of_a_json_number_in_sqlite() {
    // A field holding objects and a bare number becomes a JSON column. Declared a bare `JSON`, its NUMERIC
    // affinity stored the number as a 15-digit double, and it came back as 1.2345678901234567e19.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = "{\"id\":1,\"j\":{\"a\":1}}\n{\"id\":2,\"j\":12345678901234567890.1}\n{\"id\":3,\"j\":[1,\"2\"]}\n";
    fs::write(d.join("in.ndjson"), input).unwrap();
    ok(&ferry(
        d,
        &["convert", "in.ndjson", "sqlite://j.db?table=t"],
    ));
    assert_eq!(
        sqlite_columns(&d.join("j.db"), "t"),
        "id INTEGER, j JSON TEXT"
    );
    let conn = rusqlite::Connection::open(d.join("j.db")).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT typeof(j) || ' ' || j FROM t WHERE id = 2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored, "text 12345678901234567890.1");
    ok(&ferry(
        d,
        &["convert", "sqlite://j.db?table=t", "back.ndjson"],
    ));
    assert_eq!(fs::read_to_string(d.join("back.ndjson")).unwrap(), input);
}

#[test]
fn describe_reads_the_corpus_csvs_as_read_csv_would() {
    let Some(dir) = corpus("csv-rust-csv-examples") else {
        return;
    };
    let out = ferry(&dir, &["describe", "uspop.csv", "--json"]);
    ok(&out);
    let described: Json = serde_json::from_slice(&out.stdout).unwrap();
    let types: Vec<(&str, &str)> = described["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("City", "string"),
            ("State", "string"),
            ("Population", "integer"),
            ("Latitude", "decimal"),
            ("Longitude", "decimal")
        ]
    );
    assert_eq!(described["records"], 100);
    assert_eq!(described["fields"][2]["nulls"], 50);
    // `NULL` cells are text unless they are the null marker.
    for (marker, expected) in [(None, "string"), (Some("NULL"), "integer")] {
        let mut args = vec!["describe", "uspop-null.csv", "--json"];
        if let Some(m) = marker {
            args.extend(["--null-marker", m]);
        }
        let out = ferry(&dir, &args);
        ok(&out);
        let described: Json = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(described["fields"][2]["type"], expected, "{marker:?}");
    }
    // Every corpus CSV is described without an error, and `headers` agrees with its header row. The one
    // with a quote inside an unquoted field is refused by default (strict quoting) and read when asked.
    let spectrum = corpus("csv-spectrum").unwrap().join("csvs");
    for entry in fs::read_dir(&spectrum).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut args = vec![name.as_str()];
        if name == "location_coordinates.csv" {
            let out = ferry(&spectrum, &["describe", &name]);
            assert_eq!(out.status.code(), Some(1), "{name}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("line 2, column 22"), "{stderr}");
            args.push("--csv-lenient-quotes");
        }
        let out = ferry(&spectrum, &[&["describe"], args.as_slice()].concat());
        ok(&out);
        let out = ferry(&spectrum, &[&["headers"], args.as_slice()].concat());
        ok(&out);
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        let first = text.lines().next().unwrap_or_default();
        let listed = String::from_utf8_lossy(&out.stdout).lines().count();
        if !first.contains('"') && !first.is_empty() && text.lines().count() > 1 {
            assert_eq!(listed, first.split(',').count(), "{name}");
        }
    }
}

#[test]
fn a_bare_postgres_takes_a_table_and_the_report_shows_the_real_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("rows.csv"), "id,name\n1,a\n2,b\n").unwrap();
    let pg = cluster().fresh_database("bare");
    let database = pg.rsplit('/').next().unwrap().to_owned();
    let port = cluster().port.to_string();
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", USER),
        ("PGPASSWORD", PASSWORD),
        ("PGDATABASE", database.as_str()),
    ];
    let out = ferry_env(
        d,
        &[
            "convert",
            "rows.csv",
            "--to",
            "postgres?table=people",
            "--report",
            "r.json",
        ],
        &env,
    );
    let stderr = ok(&out);
    let shown = format!("postgres://{USER}@127.0.0.1:{port}/{database}?table=people");
    assert!(stderr.contains(&shown), "{stderr}");
    assert!(!stderr.contains(PASSWORD));
    let report: Json = serde_json::from_slice(&fs::read(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(report["output"], Json::from(shown));
    assert_eq!(cluster().psql(&pg, "SELECT count(*) FROM people"), "2");
}

#[test]
fn a_source_tables_name_is_the_target_tables_default() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let conn = rusqlite::Connection::open(d.join("app.db")).unwrap();
    conn.execute_batch("CREATE TABLE contexts (id INTEGER PRIMARY KEY, title TEXT); INSERT INTO contexts VALUES (1, 'a'), (2, 'b');")
        .unwrap();
    drop(conn);
    let pg = cluster().fresh_database("sourcetable");
    let stderr = ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "sqlite://app.db?table=contexts",
            "--to",
            &pg,
        ],
    ));
    assert!(stderr.contains("table \"contexts\""), "{stderr}");
    assert_eq!(
        cluster().psql(
            &pg,
            "SELECT string_agg(title, ',' ORDER BY id) FROM contexts"
        ),
        "a,b"
    );
}

/// A server that answers PostgreSQL's TLS request with "N" (no TLS), as a server without `ssl = on` does,
/// and closes: what `sslmode=require` meets there.
fn server_without_tls() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 8];
            if stream.read_exact(&mut request).is_ok() {
                let _ = stream.write_all(b"N");
            }
        }
    });
    port
}

#[test]
fn sslmode_require_against_a_server_without_tls_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("rows.csv"), "id\n1\n").unwrap();
    let port = server_without_tls();
    let url = format!("postgres://app@127.0.0.1:{port}/app?sslmode=require&table=t");
    let out = ferry(d, &["convert", "rows.csv", &url, "--connect-retries", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not offer TLS") && !stderr.contains("is the server running"),
        "{stderr}"
    );
}
