//! Every registered format against every other: generated records are written as format A, read back,
//! written as format B, read back, and must equal the originals up to what the formats can carry.
//!
//! What "equal" means is stated once, in [`canonical`]: typed formats (JSON, NDJSON, YAML) keep nulls,
//! booleans, numbers, strings, arrays and objects; text formats (CSV, TSV, Markdown, XML) keep every value's
//! text form. Decimals, dates, timestamps and bytes travel as text everywhere except JSON numbers. Nested
//! data goes through every format (CSV/Markdown as JSON text in the cell, read back with `--json-cells`).

use proptest::prelude::*;
use serde_json::{json, Map, Value as Json};

use ferry::{Decimal, Fidelity, FormatOptions, Key, Record, Value, FORMATS};

use crate::support::{decode_ok, encode};

/// The comparable form of a value. With `text_leaves`, every scalar is its text (null is empty), as text
/// formats carry it; otherwise nulls, booleans and numbers keep their JSON type. Decimals, dates, timestamps
/// and bytes are text in both (YAML writes decimals as strings to keep their digits).
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

fn scalar_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
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
        for a in FORMATS {
            for b in FORMATS {
                let text_leaves = a.fidelity == Fidelity::Text || b.fidelity == Fidelity::Text;
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
    for format in ["json", "ndjson"] {
        let back = through(format, std::slice::from_ref(&record));
        assert_eq!(back, vec![record.clone()], "{format}");
    }
}

#[test]
fn sample_files_convert_to_every_format_and_back() {
    let sample = std::fs::read(crate::support::root().join("samples/contexts.json")).unwrap();
    let original = decode_ok("json", &sample, &FormatOptions::default());
    assert_eq!(original.len(), 5);
    for format in FORMATS {
        let text_leaves = format.fidelity == Fidelity::Text;
        let back = through(format.name, &original);
        let canon = |rs: &[Record]| {
            rs.iter()
                .map(|r| canonical_record(r, text_leaves))
                .collect::<Vec<_>>()
        };
        assert_eq!(canon(&back), canon(&original), "{}", format.name);
    }
}
