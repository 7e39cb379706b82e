//! Every registered format against every other: generated records are written as format A, read back,
//! written as format B, read back, and must equal the originals up to what the formats can carry.
//!
//! What "equal" means is stated once, in [`canonical`]: typed formats (JSON, NDJSON, YAML) keep nulls,
//! booleans, numbers (exact decimals and their exponent spelling included), strings, arrays and objects;
//! text formats (CSV, TSV, Markdown, XML) keep every value's text form. Dates, timestamps and bytes travel
//! as text. Nested data goes through every format (CSV/Markdown as JSON text in the cell, read back with
//! `--json-cells`). Strings a YAML 1.1 reader would retype (`yes`, `NO`, `1_000`, `2024-01-01`) stay
//! strings, and PyYAML — a YAML 1.1 reader — reads ferry's YAML as the same values; CSV and Markdown keep
//! null apart from empty text with `--null-marker`.

use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

use ferry::{Decimal, Fidelity, FormatOptions, Key, Record, Value, FORMATS};

use crate::support::{decode_ok, encode};

/// The comparable form of a value. With `text_leaves`, every scalar is its text (null is empty), as text
/// formats carry it; otherwise nulls, booleans and numbers (decimals with their exact text) keep their
/// type. Dates, timestamps and bytes are text in both.
fn canonical(value: &Value, text_leaves: bool) -> Json {
    match value {
        Value::Array(items) => {
            Json::Array(items.iter().map(|v| canonical(v, text_leaves)).collect())
        }
        Value::Object(record) => canonical_record(record, text_leaves),
        _ if text_leaves => Json::String(value.to_text()),
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({ "int": i }),
        Value::Float(x) => json!({ "float": x }),
        Value::Decimal(d) => json!({ "decimal": d.as_str() }),
        other => Json::String(other.to_text()),
    }
}

fn canonical_record(record: &Record, text_leaves: bool) -> Json {
    let map: Map<String, Json> = record
        .iter()
        .map(|(k, v)| (k.to_string(), canonical(v, text_leaves)))
        .collect();
    Json::Object(map)
}

fn read_options() -> FormatOptions {
    FormatOptions {
        json_cells: true,
        ..FormatOptions::default()
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    // Names with spaces, non-ASCII and leading digits exercise XML name escaping and CSV/Markdown headers.
    "[a-zA-Zé日][a-zA-Z0-9 _é日-]{0,8}"
        .prop_map(|k| k.trim_end().to_owned())
        .prop_filter("non-empty", |k| !k.is_empty())
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Quotes, separators, markup and line ends: everything a codec must escape. Strings that begin like
    // JSON arrays/objects are left out because --json-cells reads those back as nested values by design.
    proptest::string::string_regex(r#"[a-zA-Z0-9 ,;"'|\\*_`<>&\n\t\r:é日😀#\[\]{}-]{0,16}"#)
        .expect("valid regex")
        .prop_map(|s| {
            if s.starts_with(['[', '{']) {
                format!("x{s}")
            } else {
                s
            }
        })
}

/// Text that a YAML 1.1 reader (PyYAML) or a YAML 1.2 one would take for something else if it were written
/// bare: booleans of either version, numbers with `_`, octal, hex, dates, times, null words, exponents.
const RETYPED_TEXT: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "NO",
    "Yes",
    "y",
    "n",
    "true",
    "False",
    "null",
    "Null",
    "~",
    "1_000",
    "0x1F",
    "0o17",
    "017",
    "08123",
    "2024-01-01",
    "2024-01-01 10:00:00",
    "12:30:00",
    "1e3",
    "1.5",
    "-.inf",
    ".NaN",
    "+1",
    "=",
    "<<",
    "",
    " ",
];

/// Numbers as JSON gives them: exact decimals, exponents in every spelling, integers beyond 64 bits.
fn number_strategy() -> impl Strategy<Value = Value> {
    "-?[1-9][0-9]{0,30}(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,3})?".prop_map(|text| {
        // What a JSON decoder makes of it: a float when a float prints it back identically, else a decimal.
        ferry::number_from_text(&text).expect("a number")
    })
}

fn scalar_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(RETYPED_TEXT).prop_map(|t| Value::String(t.to_owned())),
        number_strategy(),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-1e12f64..1e12).prop_map(Value::Float),
        // A trailing zero keeps a decimal from being read back as the float that prints the same.
        "-?[1-9][0-9]{0,24}\\.[0-9]{1,6}0"
            .prop_map(|d| Value::Decimal(Decimal::parse(&d).expect("decimal"))),
        text_strategy().prop_map(Value::String),
        (0i64..3_000_000).prop_map(|days| {
            let date =
                chrono::NaiveDate::from_num_days_from_ce_opt(700_000 + (days % 100_000) as i32)
                    .expect("date");
            Value::Date(date)
        }),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Bytes),
    ]
}

/// Nested values every format can carry: arrays of two or more items and non-empty objects (XML cannot tell
/// an empty array from no element, nor a one-item array from its item; that loss is documented).
fn nested_strategy() -> impl Strategy<Value = Value> {
    let object = || {
        proptest::collection::vec((key_strategy(), scalar_strategy()), 1..4)
            .prop_map(|fields| Value::Object(dedup_record(fields)))
    };
    prop_oneof![
        3 => scalar_strategy(),
        1 => proptest::collection::vec(scalar_strategy(), 2..4).prop_map(Value::Array),
        1 => object(),
        1 => proptest::collection::vec(object(), 2..3).prop_map(Value::Array),
    ]
}

fn dedup_record(fields: Vec<(String, Value)>) -> Record {
    let mut record = Record::new();
    for (k, v) in fields {
        if !record.contains_key(&k) {
            record.insert(k, v);
        }
    }
    record
}

/// A batch of records that share one set of field names (CSV and Markdown headers come from the first).
fn records_strategy() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::hash_set(key_strategy(), 1..6).prop_flat_map(|keys| {
        let keys: Vec<String> = keys.into_iter().collect();
        let n = keys.len();
        proptest::collection::vec(proptest::collection::vec(nested_strategy(), n..=n), 1..5)
            .prop_map(move |rows| {
                rows.into_iter()
                    .map(|values| {
                        keys.iter()
                            .map(|k| Key::from(k.as_str()))
                            .zip(values)
                            .collect::<Record>()
                    })
                    .collect::<Vec<Record>>()
            })
    })
}

fn through(format: &str, records: &[Record]) -> Vec<Record> {
    let bytes = encode(format, records, &FormatOptions::default())
        .unwrap_or_else(|e| panic!("encode {format}: {e}"));
    decode_ok(format, &bytes, &read_options())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_format_round_trips_through_every_other(records in records_strategy()) {
        for a in FORMATS.iter().filter(|f| f.decoder.is_some() && f.encoder.is_some()) {
            for b in FORMATS.iter().filter(|f| f.decoder.is_some() && f.encoder.is_some()) {
                // Parquet keeps types per column: a field of mixed values comes back as their text.
                let text_leaves = a.fidelity != Fidelity::Typed || b.fidelity != Fidelity::Typed;
                let back = through(b.name, &through(a.name, &records));
                let expected: Vec<Json> = records.iter().map(|r| canonical_record(r, text_leaves)).collect();
                let got: Vec<Json> = back.iter().map(|r| canonical_record(r, text_leaves)).collect();
                prop_assert_eq!(&got, &expected, "{} -> {}", a.name, b.name);
                // Field order survives too (CSV and Markdown headers depend on it).
                let order = |rs: &[Record]| rs.iter().map(|r| r.keys().map(str::to_owned).collect::<Vec<_>>()).collect::<Vec<_>>();
                prop_assert_eq!(order(&back), order(&records), "field order {} -> {}", a.name, b.name);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// With `--null-marker`, CSV, TSV and Markdown keep null apart from empty text, both ways.
    #[test]
    fn a_null_marker_keeps_null_apart_from_empty_text(records in records_strategy()) {
        let marker = FormatOptions { null_marker: Some("\\N".into()), ..read_options() };
        let records: Vec<Record> = records
            .into_iter()
            .filter(|r| !r.values().any(|v| *v == Value::String("\\N".into())))
            .collect();
        for format in ["csv", "tsv", "markdown"] {
            let bytes = encode(format, &records, &marker).unwrap();
            let back = decode_ok(format, &bytes, &marker);
            let canon = |rs: &[Record]| rs.iter().map(|r| {
                r.iter().map(|(k, v)| (k.to_string(), match v {
                    Value::Null => Json::Null,
                    Value::Array(_) | Value::Object(_) => canonical(v, true),
                    other => Json::String(other.to_text()),
                })).collect::<Map<String, Json>>()
            }).collect::<Vec<_>>();
            prop_assert_eq!(canon(&back), canon(&records), "{}", format);
        }
    }
}

#[test]
fn json_numbers_keep_their_text_through_every_typed_format() {
    let texts = [
        "1e3",
        "1E3",
        "1e+3",
        "1e-3",
        "1.5e300",
        "1.5e+300",
        "1.10",
        "0.10",
        "-0.0",
        "123456789012345678901234567890",
        "1e400",
        "12345678901234567890.5",
    ];
    let input: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{{\"i\":{i},\"n\":{t}}}\n"))
        .collect();
    let records = decode_ok("ndjson", input.as_bytes(), &FormatOptions::default());
    for a in ["json", "ndjson", "yaml"] {
        for b in ["json", "ndjson", "yaml"] {
            let back = through(b, &through(a, &records));
            let json = encode("ndjson", &back, &FormatOptions::default()).unwrap();
            assert_eq!(String::from_utf8(json).unwrap(), input, "{a} -> {b}");
        }
    }
    // Text formats carry the same text.
    for format in ["csv", "markdown", "xml"] {
        let back = through(format, &records);
        let shown: Vec<String> = back.iter().map(|r| r.get("n").unwrap().to_text()).collect();
        assert_eq!(shown, texts, "{format}");
    }
}

/// PyYAML reads YAML 1.1: `yes` is a boolean, `1_000` an integer, `2024-01-01` a date, `1e3` a string. Every
/// value ferry writes must reach it as what it is: strings as strings, numbers as numbers, null as None.
#[test]
fn pyyaml_reads_ferrys_yaml_as_the_same_values() {
    let mut record = Record::new();
    for (i, text) in RETYPED_TEXT.iter().enumerate() {
        record.insert(format!("s{i}"), Value::String((*text).to_owned()));
    }
    for (i, text) in [
        "1",
        "-7",
        "1.10",
        "1e3",
        "1.5e300",
        "1E-7",
        "123456789012345678901234567890",
    ]
    .iter()
    .enumerate()
    {
        record.insert(format!("n{i}"), ferry::number_from_text(text).unwrap());
    }
    record.insert("float", Value::Float(0.1));
    record.insert("null", Value::Null);
    record.insert("yes", Value::Bool(true));
    record.insert(
        "nested",
        Value::Array(vec![Value::String("on".into()), Value::Int(1)]),
    );
    let yaml = encode(
        "yaml",
        std::slice::from_ref(&record),
        &FormatOptions::default(),
    )
    .unwrap();
    let script = r#"
import json, sys, yaml
def typed(v):
    if v is None: return None
    if isinstance(v, bool): return {"bool": v}
    if isinstance(v, (int, float)): return {"number": repr(float(v)) if isinstance(v, float) else str(v)}
    if isinstance(v, str): return {"str": v}
    if isinstance(v, list): return [typed(x) for x in v]
    if isinstance(v, dict): return {str(k): typed(x) for k, x in v.items()}
    return {"other": type(v).__name__}
print(json.dumps(typed(yaml.safe_load(sys.stdin))))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "python3 runs (scripts/test installs it with PyYAML: apt-get install python3-yaml)",
        );
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML could not read ferry's YAML (install it: apt-get install python3-yaml): {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&yaml)
    );
    let read: Json = serde_json::from_slice(&out.stdout).unwrap();
    let item = &read[0];
    for (key, value) in record.iter() {
        let expected = match value {
            Value::Null => Json::Null,
            Value::Bool(b) => json!({ "bool": b }),
            Value::String(s) => json!({ "str": s }),
            Value::Array(_) => json!([{ "str": "on" }, { "number": "1" }]),
            number => {
                let text = number.to_text();
                match text.parse::<i128>() {
                    Ok(i) => json!({ "number": i.to_string() }),
                    Err(_) => json!({ "number": format!("{:?}", text.parse::<f64>().unwrap()) }),
                }
            }
        };
        let got = &item[&**key];
        let same = match (got, &expected) {
            (Json::Object(g), Json::Object(e)) if e.contains_key("number") => {
                let parse = |j: &Json| j["number"].as_str().and_then(|t| t.parse::<f64>().ok());
                g.contains_key("number") && parse(&Json::Object(g.clone())) == parse(&expected)
            }
            _ => *got == expected,
        };
        assert!(
            same,
            "{key}: PyYAML read {got}, expected {expected}\n{}",
            String::from_utf8_lossy(&yaml)
        );
    }
}

/// Records with differing fields: the CSV and Markdown header is the union of the first records' fields,
/// in the order they first appear; a record without a field gets an empty cell (or the null marker).
#[test]
fn text_headers_are_the_union_of_the_first_records_fields() {
    let records = decode_ok(
        "json",
        br#"[{"id": 1, "a": "x"}, {"id": 2, "empty_s": "", "b": null}, {"b": 3}]"#,
        &FormatOptions::default(),
    );
    let marker = FormatOptions {
        null_marker: Some("NULL".into()),
        ..FormatOptions::default()
    };
    let csv = encode("csv", &records, &marker).unwrap();
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "id,a,empty_s,b\n1,x,NULL,NULL\n2,NULL,,NULL\nNULL,NULL,NULL,3\n"
    );
    let md = encode("markdown", &records, &FormatOptions::default()).unwrap();
    assert!(String::from_utf8(md)
        .unwrap()
        .starts_with("| id | a | empty\\_s | b |\n"));
    // A field that none of the sampled records had is an error naming the sample.
    let late = FormatOptions {
        sample_records: 1,
        ..FormatOptions::default()
    };
    let e = encode("csv", &records, &late).unwrap_err();
    assert!(e.to_string().contains("--sample-records"), "{e}");
}

#[test]
fn typed_formats_keep_exact_types() {
    let mut record = Record::new();
    record.insert("null", Value::Null);
    record.insert(
        "big",
        Value::Decimal(Decimal::parse("123456789012345678901234567890.000001").unwrap()),
    );
    record.insert("int", Value::Int(i64::MIN));
    record.insert("float", Value::Float(0.1));
    record.insert("empty", Value::String(String::new()));
    for format in ["json", "ndjson", "yaml"] {
        let back = through(format, std::slice::from_ref(&record));
        assert_eq!(back, vec![record.clone()], "{format}");
    }
}

#[test]
fn sample_files_convert_to_every_format_and_back() {
    let sample = std::fs::read(crate::support::root().join("samples/contexts.json")).unwrap();
    let original = decode_ok("json", &sample, &FormatOptions::default());
    assert_eq!(original.len(), 5);
    for format in FORMATS.iter().filter(|f| f.encoder.is_some()) {
        let text_leaves = format.fidelity != Fidelity::Typed;
        let back = through(format.name, &original);
        let canon = |rs: &[Record]| {
            rs.iter()
                .map(|r| canonical_record(r, text_leaves))
                .collect::<Vec<_>>()
        };
        assert_eq!(canon(&back), canon(&original), "{}", format.name);
    }
}
