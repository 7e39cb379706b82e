//! Every registered database kind against every other, the way the round-trip test loops over FORMATS:
//! typed records go from a file into kind A (typed by a template), from A into a new table of kind B (typed
//! by what A gives back), and from B to a file, and must equal the template's output value for value. A
//! new database in `DATABASES` is tested the day it is added (this file only needs to know how to make an
//! empty one). Then the errors: a refused row keeps the database's SQLSTATE on every kind.

use std::fs;
use std::path::Path;

use ferry::db::{ConnectOptions, Database, DbEndpoint, OnConflict, SinkOptions, DATABASES};
use ferry::{Environment, Error, Record, Value};

use crate::db::{ndjson, same_records, table_url, TYPES_INPUT, TYPES_TEMPLATE};
use crate::pg::cluster;
use crate::support::{ferry, ok};

/// A new, empty database of `kind`, as a URL ferry takes.
fn empty_database(kind: &Database, dir: &Path, name: &str) -> String {
    match kind.name {
        "sqlite" => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        "postgres" => cluster().fresh_database(name),
        other => panic!("database kind {other}: tell db_kinds.rs how to make an empty one"),
    }
}

#[test]
fn every_kind_to_every_kind_keeps_every_value() {
    assert!(DATABASES.len() >= 2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("types.yaml"), TYPES_TEMPLATE).unwrap();
    fs::write(d.join("in.ndjson"), TYPES_INPUT).unwrap();
    let convert = |input: &str, template: Option<&str>, output: &str| {
        let mut args = vec!["convert", "--in", input, "--to", output];
        if let Some(t) = template {
            args.extend(["--template", t]);
        }
        ok(&ferry(d, &args));
    };
    convert("in.ndjson", Some("types.yaml"), "mapped.ndjson");
    let mapped = ndjson(&d.join("mapped.ndjson"));
    for source in DATABASES {
        for sink in DATABASES {
            let pair = format!("{}_to_{}", source.name, sink.name);
            let from = empty_database(source, d, &format!("{pair}_from"));
            let to = empty_database(sink, d, &format!("{pair}_to"));
            convert("in.ndjson", Some("types.yaml"), &table_url(&from, "things"));
            convert(&table_url(&from, "things"), None, &table_url(&to, "copied"));
            let out = format!("{pair}.ndjson");
            convert(&table_url(&to, "copied"), None, &out);
            let mut back = ndjson(&d.join(&out));
            back.sort_by_key(|r| r["id"].as_i64());
            eprintln!("{pair}: {} records", back.len());
            same_records(&mapped, &back);
        }
    }
}

/// Loads `records` into a fresh table `t (id integer primary key, name text not null)` of `kind` through
/// its sink, and returns the refused records' numbers with their errors.
fn refusals(kind: &Database, dir: &Path, records: &[Record]) -> Vec<(u64, Error)> {
    let url = empty_database(kind, dir, &format!("refusals_{}", kind.name));
    let create = "CREATE TABLE t (id integer PRIMARY KEY, name text NOT NULL)";
    match kind.name {
        "sqlite" => {
            let path = url.trim_start_matches("sqlite://");
            rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(create)
                .unwrap();
        }
        _ => {
            cluster().psql(&url, create);
        }
    }
    let endpoint = DbEndpoint::parse(&url, &Environment::empty())
        .unwrap()
        .unwrap();
    let options = SinkOptions {
        table: "t".into(),
        declared: Vec::new(),
        schema_kinds: Vec::new(),
        key: vec!["id".into()],
        on_conflict: OnConflict::Error,
        dry_run: false,
        commit_every: None,
        connect: ConnectOptions::default(),
        ..SinkOptions::default()
    };
    let mut sink = (kind.open_sink)(&endpoint, options).unwrap();
    let mut refused = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let number = i as u64 + 1;
        if let Err(e) = sink.write(number, record) {
            assert!(e.is_record(), "{}: {e}", kind.name);
            refused.push((number, e));
        }
    }
    refused.extend(sink.end_batch().unwrap());
    sink.finish().unwrap();
    refused.sort_by_key(|(n, _)| *n);
    refused
}

fn row(id: i64, name: Option<&str>) -> Record {
    let mut record = Record::new();
    record.insert("id", Value::Int(id));
    record.insert(
        "name",
        name.map_or(Value::Null, |n| Value::String(n.into())),
    );
    record
}

#[test]
fn refused_rows_keep_the_databases_sqlstate_on_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let records = [
        row(1, Some("a")),
        row(1, Some("again")),
        row(2, None),
        row(3, Some("c")),
    ];
    for kind in DATABASES {
        let refused = refusals(kind, dir.path(), &records);
        let numbers: Vec<u64> = refused.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [2, 3], "{}: {refused:?}", kind.name);
        let duplicate = &refused[0].1;
        assert!(
            duplicate.is_unique_violation(),
            "{}: {duplicate} {:?}",
            kind.name,
            duplicate.db_cause()
        );
        let cause = duplicate.db_cause().unwrap();
        assert_eq!(cause.table.as_deref(), Some("t"), "{}", kind.name);
        let missing = &refused[1].1;
        assert_eq!(
            missing.sqlstate(),
            Some("23502"),
            "{}: {missing}",
            kind.name
        );
        assert_eq!(
            missing.db_cause().and_then(|c| c.column.as_deref()),
            Some("name"),
            "{}",
            kind.name
        );
    }
}

#[test]
fn a_lenient_load_reports_each_refused_rows_sqlstate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("dup.ndjson"),
        "{\"id\": 1, \"name\": \"a\"}\n{\"id\": 1, \"name\": \"b\"}\n{\"id\": 2, \"name\": \"c\"}\n",
    )
    .unwrap();
    for kind in DATABASES {
        let url = empty_database(kind, d, &format!("lenient_{}", kind.name));
        let report = format!("{}.report.json", kind.name);
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "dup.ndjson",
                "--to",
                &table_url(&url, "t"),
                "--key",
                "id",
                "--on-error",
                "lenient",
                "--report",
                &report,
            ],
        ));
        let report: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(d.join(&report)).unwrap()).unwrap();
        assert_eq!(report["rejected"], 1, "{}: {report}", kind.name);
        assert_eq!(
            report["errors"][0]["db"]["sqlstate"], "23505",
            "{}: {report}",
            kind.name
        );
    }
}

#[test]
fn a_bad_database_url_is_a_configuration_error() {
    let env = Environment::empty();
    for text in [
        "mysql://h/db",
        "sqlite://",
        "sqlite://a.db?table=t&query=SELECT 1",
        "postgres://h/db?table=",
        "sqlite",
    ] {
        let e = DbEndpoint::parse(text, &env).unwrap_err();
        assert!(e.is_config() && e.exit_code() == 2, "{text}: {e}");
    }
    let e = DbEndpoint::parse(
        "postgres",
        &env.clone().with("DATABASE_URL", "mysql://h/db"),
    )
    .unwrap_err();
    assert!(e.is_config(), "{e}");
}
