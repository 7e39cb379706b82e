//! The compiled plan's validation against the full JSON Schema validator: checking what the template makes
//! constant once per run (`SchemaValidator::with_constants`), and leaving out what it proves of every record
//! (`SchemaValidator::with_guarantees`: declared types, fields always there, no others), must reject exactly
//! the records the full validator rejects, with exactly its messages. Run over every shipped template, the shipped samples, the
//! corpus's CSV files and records built to break each rule.

use std::path::{Path, PathBuf};

use ferry::template::TemplateSearch;
use ferry::template::{CompiledTemplate, Mapped};
use ferry::validate::SchemaValidator;
use ferry::{Environment, FormatOptions, Record, Value};

use crate::support;

/// Every record of every input the test can read: the samples, the corpus's CSV files, and hand-made
/// records that break the schemas' rules.
fn inputs() -> Vec<(String, Record)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(support::root().join("samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for folder in ["csv-rust-csv-examples", "csv-spectrum/csvs"] {
        if let Some(dir) = support::corpus(folder) {
            files.extend(std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    let mut records = Vec::new();
    for path in files {
        let Some(format) = format_of(&path) else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for record in support::decode_with(format, &bytes, &FormatOptions::default())
            .into_iter()
            .flatten()
        {
            records.push((name.clone(), record));
        }
    }
    records.extend(
        breaking_records()
            .into_iter()
            .map(|r| ("made".to_owned(), r)),
    );
    records
}

fn format_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()? {
        "csv" => Some("csv"),
        "tsv" => Some("tsv"),
        "ndjson" => Some("ndjson"),
        "json" => Some("json"),
        "yaml" => Some("yaml"),
        "xml" => Some("xml"),
        _ => None,
    }
}

/// Records that map but break the schemas: empty and over-long text, upper case where the schema wants
/// none, a long tag, bad e-mail addresses.
fn breaking_records() -> Vec<Record> {
    let text = |s: &str| Value::String(s.to_owned());
    let long = "x".repeat(600);
    let rows: Vec<Vec<(&str, Value)>> = vec![
        vec![
            ("id", text("  ")),
            ("title", text("t")),
            ("createdAt", text("2024-01-02T03:04:05Z")),
        ],
        vec![
            ("id", text("1")),
            ("title", text(&long)),
            ("createdAt", text("2024-01-02T03:04:05Z")),
        ],
        vec![
            ("id", text("2")),
            ("title", text("ok")),
            ("tags", text(&long)),
            ("createdAt", text("2024-01-02")),
        ],
        vec![
            ("legacy_id", text("3")),
            ("legacy_title", text("t")),
            ("old_created", text("01/02/20245 10:00")),
        ],
        vec![
            ("user_id", text("4")),
            ("email", text("not an address")),
            ("full_name", text("")),
        ],
        vec![
            ("user_id", text("")),
            ("email", text(&long)),
            ("signup_date", text("2021-13-40")),
        ],
    ];
    rows.into_iter()
        .map(|fields| {
            let mut record = Record::new();
            for (key, value) in fields {
                record.insert(key, value);
            }
            record
        })
        .collect()
}

/// Maps and validates every input with one template, through the full validator and through the one that
/// checks the template's constants once and leaves out what the template proves; returns (records validated, records the validator rejected).
fn compare(
    template: &CompiledTemplate,
    full: &SchemaValidator,
    planned: &SchemaValidator,
) -> (usize, usize) {
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T18:00:00.123Z").unwrap();
    let evaluator = template.evaluator(now);
    let (mut validated, mut rejected) = (0, 0);
    for (file, record) in inputs() {
        let Ok(Mapped::Keep(mapped)) = template.map(&evaluator, &record) else {
            continue;
        };
        let messages = |v: &SchemaValidator| match v.validate(&mapped) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        };
        let expected = messages(full);
        assert_eq!(
            messages(planned),
            expected,
            "{} on a record of {file}: {mapped:?}",
            template.name
        );
        validated += 1;
        rejected += usize::from(!expected.is_empty());
    }
    (validated, rejected)
}

#[test]
fn checking_once_what_the_template_proves_rejects_the_same_records_with_the_same_messages() {
    let search = TemplateSearch::new(&Environment::empty());
    let mut names: Vec<String> = std::fs::read_dir(support::root().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
    let mut total = (0, 0);
    for name in &names {
        let template = search.find(name).unwrap();
        let Some((schema_name, json)) = search.schema_of(&template).unwrap() else {
            continue;
        };
        let compiled = template.compile().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T18:00:00.123Z").unwrap();
        let full = SchemaValidator::compile(&schema_name, &json).unwrap();
        let planned = SchemaValidator::compile(&schema_name, &json)
            .unwrap()
            .with_constants(&compiled.constants(&compiled.evaluator(now)))
            .unwrap()
            .with_guarantees(&compiled.guarantees())
            .unwrap();
        match name.as_str() {
            "std-context" => {
                // exportedAt (now()) is the same for every record; metadata is not (a `metadata` column
                // would be read: a field without `from` reads its own name).
                assert_eq!(planned.checked_once(), ["exportedAt"]);
                // Every field is typed and non-null (required or defaulted), none can be dropped, and
                // there are no others.
                assert_eq!(
                    planned.proven(),
                    [
                        "id: type",
                        "title: type",
                        "content: type",
                        "type: type",
                        "tags: type",
                        "createdAt: type",
                        "metadata: type",
                        "required: id",
                        "required: title",
                        "required: content",
                        "required: type",
                        "required: tags",
                        "required: createdAt",
                        "additionalProperties",
                    ]
                );
            }
            "user-export" => {
                // name and signup_date may be null and the schema allows it; email_hash may be null (no
                // e-mail) where the schema wants a string, and api_token has an `enum`, so those stay;
                // `password` is dropped, so the `not` that forbids it stays.
                assert_eq!(
                    planned.proven(),
                    [
                        "id: type",
                        "email: type",
                        "name: type",
                        "active: type",
                        "signup_date: type",
                        "login_count: type",
                        "required: id",
                        "required: email",
                    ]
                );
            }
            _ => {}
        }
        let (validated, rejected) = compare(&compiled, &full, &planned);
        total = (total.0 + validated, total.1 + rejected);
    }
    // The comparison means something only if records both passed and failed validation (today 44
    // validated, 8 of them rejected).
    let (validated, rejected) = total;
    assert!(
        validated - rejected >= 20 && rejected >= 4,
        "validated {validated}, rejected {rejected}"
    );
}

/// A draft-4 schema (no boolean subschemas) with a template constant (`now()`): the constant is checked once
/// and the run validates every other field as the schema says. It used to fail before reading a record
/// ("true is not of type object": the constant's subschema was replaced by `true`).
#[test]
fn a_draft_4_schema_with_a_template_constant_validates_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let template = "name: d4\nversion: 1.0.0\nschema: s.json\nfields:\n  \
        - {name: id, from: id, type: string}\n  - {name: at, type: datetime, compute: now()}\n";
    std::fs::write(dir.path().join("t.yaml"), template).unwrap();
    let schema = r#"{"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
        "properties": {"id": {"type": "string", "maxLength": 2}, "at": {"type": "string"}}}"#;
    std::fs::write(dir.path().join("s.json"), schema).unwrap();
    std::fs::write(dir.path().join("in.csv"), "id\n1\nlong\n22\n").unwrap();
    let args = "convert --in in.csv --template ./t.yaml --to out.ndjson --on-error skip --rejects r.ndjson -q";
    let run = support::ferry(dir.path(), &args.split(' ').collect::<Vec<_>>());
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let out = std::fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(
        out,
        "{\"id\":\"1\",\"at\":\"2024-06-01T12:00:00Z\"}\n{\"id\":\"22\",\"at\":\"2024-06-01T12:00:00Z\"}\n"
    );
    let rejects = std::fs::read_to_string(dir.path().join("r.ndjson")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert!(
        rejects.contains("\"record\":2") && rejects.contains("maxLength"),
        "{rejects}"
    );
}
