//! Parquet against another implementation: files DuckDB writes are read exactly (decimals, timestamps
//! in their units and zone, lists, structs, dictionary-encoded text, nulls, several row groups), and what
//! ferry writes DuckDB reads back with the same values, compression and statistics. DuckDB is its Python
//! module (scripts/test installs it).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{ferry, ok};

/// Runs a Python script with the `duckdb` module in `dir` and returns what it printed.
pub fn duckdb(dir: &Path, script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", &format!("import duckdb\n{script}")])
        .current_dir(dir)
        .output()
        .expect("python3 runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "DuckDB's Python module failed (scripts/test installs it: python3 -m pip install duckdb): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A Parquet file DuckDB writes, with two rows per row group.
fn duckdb_file(dir: &Path) {
    duckdb(
        dir,
        r#"
duckdb.sql("SET TimeZone = 'UTC'")
duckdb.sql("""
COPY (
  SELECT * FROM (VALUES
    (1, 9007199254740993::BIGINT, 12345.6789::DECIMAL(18,4), '12345678901234567890123.4567890123'::DECIMAL(38,10),
     0.1::DOUBLE, 0.1::REAL, true, 'red', DATE '2024-02-29', TIMESTAMP '2024-05-01 10:00:00.123456',
     '2024-05-01 10:00:00.123'::TIMESTAMP_MS, '2024-05-01 10:00:00.123456789'::TIMESTAMP_NS,
     TIMESTAMPTZ '2024-05-01 10:00:00+02', ['a', 'b'], {'x': 1, 'y': 'q'}, '\x00\x01'::BLOB),
    (2, -1, -0.0500::DECIMAL(18,4), NULL, -2.5, NULL, false, 'blue', DATE '1900-01-01', NULL, NULL, NULL, NULL,
     [], {'x': NULL, 'y': 'z'}, NULL),
    (3, NULL, NULL, NULL, NULL, NULL, NULL, 'red', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
  ) AS t(id, big, amount, huge, f, r, flag, color, day, ts, ts_ms, ts_ns, tstz, tags, point, blob)
) TO 'duck.parquet' (FORMAT parquet, ROW_GROUP_SIZE 2)
""")
"#,
    );
}

#[test]
fn parquet_written_by_duckdb_is_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    duckdb_file(dir.path());
    ok(&ferry(
        dir.path(),
        &["convert", "duck.parquet", "out.ndjson"],
    ));
    let got = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    let expected = [
        r#"{"id":1,"big":9007199254740993,"amount":12345.6789,"huge":12345678901234567890123.4567890123,"f":0.1,"r":0.1,"flag":true,"color":"red","day":"2024-02-29","ts":"2024-05-01T10:00:00.123456","ts_ms":"2024-05-01T10:00:00.123","ts_ns":"2024-05-01T10:00:00.123456789","tstz":"2024-05-01T08:00:00Z","tags":["a","b"],"point":{"x":1,"y":"q"},"blob":"AAE="}"#,
        r#"{"id":2,"big":-1,"amount":-0.0500,"huge":null,"f":-2.5,"r":null,"flag":false,"color":"blue","day":"1900-01-01","ts":null,"ts_ms":null,"ts_ns":null,"tstz":null,"tags":[],"point":{"x":null,"y":"z"},"blob":null}"#,
        r#"{"id":3,"big":null,"amount":null,"huge":null,"f":null,"r":null,"flag":null,"color":"red","day":null,"ts":null,"ts_ms":null,"ts_ns":null,"tstz":null,"tags":null,"point":null,"blob":null}"#,
    ];
    assert_eq!(got.lines().collect::<Vec<_>>(), expected);
}

#[test]
fn select_reads_only_the_named_parquet_columns_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    duckdb_file(dir.path());
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "duck.parquet",
            "sel.ndjson",
            "--select",
            "tstz,id:key",
        ],
    );
    ok(&out);
    let got = std::fs::read_to_string(dir.path().join("sel.ndjson")).unwrap();
    assert_eq!(
        got,
        "{\"tstz\":\"2024-05-01T08:00:00Z\",\"key\":1}\n{\"tstz\":null,\"key\":2}\n{\"tstz\":null,\"key\":3}\n"
    );
}

#[test]
fn ferry_parquet_is_read_back_by_duckdb_with_its_compression_and_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(
        r#"{"id":1,"price":1.50,"big":123456789012345678901234567.5,"name":"a","ok":true,"tags":["x","y"],"at":{"lat":1.5,"lon":-2.25}}"#,
        "\n",
        r#"{"id":2,"price":2.20,"big":null,"name":null,"ok":false,"tags":[],"at":null}"#,
        "\n",
        r#"{"id":3,"price":null,"big":-98765432109876543210.1,"name":"日本","ok":null,"tags":null,"at":{"lat":0.5,"lon":3.0}}"#,
        "\n",
    );
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "in.ndjson",
            "out.parquet",
            "--parquet-compression",
            "zstd",
            "--row-group-size",
            "2",
        ],
    );
    ok(&out);
    let printed = duckdb(
        dir.path(),
        r#"
import json
rows = duckdb.sql("SELECT to_json(t) FROM 'out.parquet' t").fetchall()
for (row,) in rows: print(row)
meta = duckdb.sql("SELECT row_group_id, path_in_schema, compression, stats_min, stats_max, stats_null_count FROM parquet_metadata('out.parquet') WHERE path_in_schema = 'id' ORDER BY row_group_id").fetchall()
for m in meta: print(json.dumps(m))
types = duckdb.sql("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM 'out.parquet')").fetchall()
print(json.dumps(types))
"#,
    );
    let printed: Vec<&str> = printed.lines().collect();
    // DuckDB reads back exactly what went in: decimals of one scale are DECIMAL with every digit, floats
    // doubles, nested values lists and structs.
    assert_eq!(printed[..3], input.lines().collect::<Vec<_>>()[..]);
    // Two row groups of at most two rows, zstd, with min/max statistics.
    assert_eq!(printed[3], r#"[0, "id", "ZSTD", "1", "2", 0]"#);
    assert_eq!(printed[4], r#"[1, "id", "ZSTD", "3", "3", 0]"#);
    let types: serde_json::Value = serde_json::from_str(printed[5]).unwrap();
    assert_eq!(
        types,
        serde_json::json!([
            ["id", "BIGINT"],
            ["price", "DECIMAL(38,2)"],
            ["big", "DECIMAL(38,1)"],
            ["name", "VARCHAR"],
            ["ok", "BOOLEAN"],
            ["tags", "VARCHAR[]"],
            ["at", "STRUCT(lat DOUBLE, lon DOUBLE)"]
        ])
    );
}

#[test]
fn a_field_of_mixed_values_is_written_as_text_that_json_cells_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = "{\"v\":1}\n{\"v\":\"one\"}\n{\"v\":[1,\"a\"]}\n{\"v\":1.0}\n";
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    ok(&ferry(
        dir.path(),
        &["convert", "in.ndjson", "mixed.parquet"],
    ));
    ok(&ferry(
        dir.path(),
        &["convert", "mixed.parquet", "back.ndjson", "--json-cells"],
    ));
    let back = std::fs::read_to_string(dir.path().join("back.ndjson")).unwrap();
    assert_eq!(
        back,
        "{\"v\":\"1\"}\n{\"v\":\"one\"}\n{\"v\":[1,\"a\"]}\n{\"v\":\"1.0\"}\n"
    );
}

#[test]
fn a_value_that_does_not_fit_its_column_is_rejected_naming_record_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let input =
        "{\"id\":1}\n{\"id\":2}\n{\"id\":\"three\"}\n{\"id\":4,\"extra\":true}\n{\"id\":5}\n";
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    let strict = ferry(
        dir.path(),
        &[
            "convert",
            "in.ndjson",
            "out.parquet",
            "--sample-records",
            "2",
        ],
    );
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(stderr.contains("record 3"), "{stderr}");
    assert!(stderr.contains("field \"id\""), "{stderr}");
    assert!(stderr.contains("--sample-records"), "{stderr}");
    assert!(
        !dir.path().join("out.parquet").exists(),
        "a failed run leaves no output"
    );

    let lenient = ferry(
        dir.path(),
        &[
            "convert",
            "in.ndjson",
            "out.parquet",
            "--sample-records",
            "2",
            "--on-error",
            "skip",
            "--rejects",
            "rejects.ndjson",
        ],
    );
    let stderr = String::from_utf8_lossy(&lenient.stderr);
    assert!(
        stderr.contains("read 5 = written 3 + rejected 2"),
        "{stderr}"
    );
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("three") && rejects.contains("extra"),
        "{rejects}"
    );
    let back = duckdb(
        dir.path(),
        "print(duckdb.sql(\"SELECT list(id ORDER BY id) FROM 'out.parquet'\").fetchall()[0][0])",
    );
    assert_eq!(back.trim(), "[1, 2, 5]");
}

#[test]
fn parquet_from_a_pipe_or_a_compressed_file_is_spooled_under_the_document_cap() {
    let dir = tempfile::tempdir().unwrap();
    duckdb_file(dir.path());
    let path = dir.path().join("duck.parquet");
    let run_piped = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .current_dir(dir.path())
            .stdin(std::fs::File::open(&path).unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take();
        child.wait_with_output().unwrap()
    };
    let piped = run_piped(&[
        "convert",
        "-",
        "-",
        "--from-format",
        "parquet",
        "--to-format",
        "ndjson",
    ]);
    assert_eq!(piped.status.code(), Some(0), "{piped:?}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout).lines().count(), 3);

    let capped = run_piped(&[
        "convert",
        "-",
        "-",
        "--from-format",
        "parquet",
        "--to-format",
        "ndjson",
        "--max-document-size",
        "100",
    ]);
    assert_eq!(capped.status.code(), Some(1), "{capped:?}");
    let stderr = String::from_utf8_lossy(&capped.stderr);
    assert!(
        stderr.contains("--max-document-size (100 bytes)"),
        "{stderr}"
    );
    assert!(stderr.contains("give the plain file's path"), "{stderr}");

    let gz = Command::new("gzip").arg("-k").arg(&path).status().unwrap();
    assert!(gz.success());
    ok(&ferry(
        dir.path(),
        &["convert", "duck.parquet.gz", "gz.ndjson"],
    ));
    assert_eq!(lines(&dir.path().join("gz.ndjson")).len(), 3);
}

#[test]
fn a_file_that_is_not_parquet_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fake.parquet"), "id,name\n1,a\n").unwrap();
    let out = ferry(dir.path(), &["convert", "fake.parquet", "out.ndjson"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fake.parquet"), "{stderr}");
    assert!(stderr.contains("not a readable Parquet file"), "{stderr}");
}

#[test]
fn a_workbook_is_not_an_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.csv"), "id\n1\n").unwrap();
    let out = ferry(dir.path(), &["convert", "in.csv", "out.xlsx"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ferry reads xlsx but does not write it"),
        "{stderr}"
    );
    assert!(!dir.path().join("out.xlsx").exists());
}

#[test]
fn a_split_parquet_output_is_parts_that_stand_alone_and_read_back_through_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let input = "{\"id\":1}\n{\"id\":2}\n{\"id\":3}\n";
    std::fs::write(dir.path().join("in.ndjson"), input).unwrap();
    ok(&ferry(
        dir.path(),
        &[
            "convert",
            "in.ndjson",
            "out.parquet",
            "--split-records",
            "2",
        ],
    ));
    // Each part is a whole Parquet file of its own.
    let counts = duckdb(
        dir.path(),
        "print(duckdb.sql(\"SELECT list(n ORDER BY f) FROM (SELECT filename AS f, count(*) AS n FROM read_parquet('out-*.parquet', filename=true) GROUP BY f)\").fetchall()[0][0])",
    );
    assert_eq!(counts.trim(), "[2, 1]");
    ok(&ferry(
        dir.path(),
        &["convert", "out.manifest.json", "back.ndjson"],
    ));
    assert_eq!(read_to_string(dir.path().join("back.ndjson")), input);
}

fn read_to_string(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A template's declared types make the schema, even where the sampled records hold only nulls (which
/// sampling would make text): integer, decimal (scale from the sample, narrower values widened), date,
/// datetime (UTC instants), number, boolean, string. A value the declaration refuses is rejected alone.
#[test]
fn a_template_declares_the_parquet_schema_and_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "name: typed\nfields:\n  - {name: id, type: integer}\n  - {name: price, type: decimal}\n  \
         - {name: day, type: date}\n  - {name: seen, type: datetime}\n  - {name: score, type: number}\n  \
         - {name: ok, type: boolean}\n  - {name: code, type: string}\n",
    )
    .unwrap();
    let csv = "id,price,day,seen,score,ok,code\n\
               1,0.10,,,,,\n\
               2,1.5,2024-02-29,2024-05-01T10:00:00+02:00,2.5,true,007\n\
               3,2.25,2024-03-01,2024-05-01T08:00:00Z,3,false,x\n\
               4,1,2024-03-02,2024-05-01 10:00:00,1,true,y\n";
    std::fs::write(dir.path().join("in.csv"), csv).unwrap();
    let run = ferry(
        dir.path(),
        &[
            "convert",
            "in.csv",
            "out.parquet",
            "--template",
            "t.yaml",
            "--sample-records",
            "1",
            "--on-error",
            "skip",
            "--rejects",
            "rejects.ndjson",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("read 4 = written 3 + rejected 1"),
        "{stderr}"
    );
    // Record 4's timestamp has no offset where the column holds instants.
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    assert!(
        rejects.contains("\"seen\"") && rejects.contains("offset"),
        "{rejects}"
    );
    let described = duckdb(
        dir.path(),
        "duckdb.sql(\"SET TimeZone = 'UTC'\")\n\
         for name, kind, *_ in duckdb.sql(\"DESCRIBE SELECT * FROM 'out.parquet'\").fetchall(): print(name, kind)\n\
         for row in duckdb.sql(\"SELECT id, price, day, seen::VARCHAR, score, ok, code FROM 'out.parquet' ORDER BY id\").fetchall(): print(row)",
    );
    assert_eq!(
        described.lines().collect::<Vec<_>>(),
        [
            "id BIGINT",
            "price DECIMAL(38,2)",
            "day DATE",
            "seen TIMESTAMP WITH TIME ZONE",
            "score DOUBLE",
            "ok BOOLEAN",
            "code VARCHAR",
            "(1, Decimal('0.10'), None, None, None, None, '')",
            "(2, Decimal('1.50'), datetime.date(2024, 2, 29), '2024-05-01 08:00:00+00', 2.5, True, \
             '007')",
            "(3, Decimal('2.25'), datetime.date(2024, 3, 1), '2024-05-01 08:00:00+00', 3.0, False, \
             'x')",
        ]
    );
}

/// An output of no records still has its columns: the template's (typed), else the CSV header's (text),
/// else one placeholder column; DuckDB reads each as an empty table.
#[test]
fn an_empty_parquet_output_has_the_template_or_header_columns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.yaml"),
        "name: typed\nfields:\n  - {name: id, type: integer}\n  - {name: day, type: date}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("head.csv"), "id,day,name\n").unwrap();
    std::fs::write(dir.path().join("none.ndjson"), "").unwrap();
    ok(&ferry(
        dir.path(),
        &[
            "convert",
            "head.csv",
            "typed.parquet",
            "--template",
            "t.yaml",
        ],
    ));
    ok(&ferry(
        dir.path(),
        &["convert", "head.csv", "header.parquet"],
    ));
    ok(&ferry(
        dir.path(),
        &["convert", "none.ndjson", "none.parquet"],
    ));
    let described = duckdb(
        dir.path(),
        "for f in ['typed', 'header', 'none']:\n    \
         n = duckdb.sql(f\"SELECT count(*) FROM read_parquet('{f}.parquet')\").fetchall()[0][0]\n    \
         cols = duckdb.sql(f\"DESCRIBE SELECT * FROM read_parquet('{f}.parquet')\").fetchall()\n    \
         print(f, n, ' '.join(f'{c[0]}:{c[1]}' for c in cols))",
    );
    assert_eq!(
        described.lines().collect::<Vec<_>>(),
        [
            "typed 0 id:BIGINT day:DATE",
            "header 0 id:VARCHAR day:VARCHAR name:VARCHAR",
            "none 0 _ferry_no_columns:VARCHAR",
        ]
    );
}
