//! The rejects file as a way back in: a row that could not be decoded keeps its text (`raw`), is fixed and
//! fed back, and the second run loads it; every rejects line names the line its record was read from.

use std::fs;

use crate::support::ferry;

fn lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_ragged_row_is_fixed_from_its_raw_text_and_fed_back() {
    let dir = tempfile::tempdir().unwrap();
    let header = "id,name,amount";
    let csv = format!(
        "{header}\n1,Ada,2.50\n2,\"Hopper, Grace\"\n3,\"Alan\nTuring\",7\n4,Edsger,1,extra\n"
    );
    fs::write(dir.path().join("orders.csv"), &csv).unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "orders.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "skip",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejects = fs::read_to_string(dir.path().join("out.ndjson.rejects.ndjson")).unwrap();
    let rejects = lines(&rejects);
    assert_eq!(rejects.len(), 2);
    // The raw text is the row exactly as written, quotes included; the line is where it starts.
    assert_eq!(rejects[0]["raw"], "2,\"Hopper, Grace\"");
    assert_eq!(rejects[0]["line"], 3);
    assert_eq!(rejects[0]["data"], serde_json::Value::Null);
    assert_eq!(rejects[1]["raw"], "4,Edsger,1,extra");
    assert_eq!(rejects[1]["line"], 6); // after the row that spans lines 4 and 5

    // The user fixes each raw row (here: the missing amount, the extra cell) and feeds them back.
    let fixed: Vec<String> = rejects
        .iter()
        .map(|r| {
            let raw = r["raw"].as_str().unwrap();
            let reason = r["reasons"][0].as_str().unwrap();
            if reason.contains("has 2 fields") {
                format!("{raw},0")
            } else {
                raw.rsplit_once(',').unwrap().0.to_owned()
            }
        })
        .collect();
    fs::write(
        dir.path().join("fixed.csv"),
        format!("{header}\n{}\n", fixed.join("\n")),
    )
    .unwrap();
    let again = ferry(
        dir.path(),
        &["convert", "--in", "fixed.csv", "--to", "fixed.ndjson"],
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let loaded = fs::read_to_string(dir.path().join("fixed.ndjson")).unwrap();
    assert_eq!(
        loaded,
        "{\"id\":\"2\",\"name\":\"Hopper, Grace\",\"amount\":\"0\"}\n{\"id\":\"4\",\"name\":\"Edsger\",\"amount\":\"1\"}\n"
    );
    // Nothing was lost: the first run wrote the two good rows, the second the two fixed ones.
    let first = fs::read_to_string(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(first.lines().count() + loaded.lines().count(), 4);
}

#[test]
fn map_validate_and_sink_rejects_name_the_line_of_their_record() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("in.json"),
        "[\n  {\"id\": 1, \"n\": \"1\"},\n  {\"id\": 2,\n   \"n\": \"two\"},\n  {\"id\": 3, \"n\": \"-3\"}\n]\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("t.yaml"),
        "name: t\nschema: s.json\nfields:\n  - {name: id, type: integer}\n  - {name: n, type: integer}\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("s.json"),
        r#"{"properties": {"n": {"type": "integer", "minimum": 0}}}"#,
    )
    .unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.json",
            "--template",
            "t.yaml",
            "--to",
            "out.csv",
            "--on-error",
            "lenient",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rejects = lines(&fs::read_to_string(dir.path().join("out.csv.rejects.ndjson")).unwrap());
    assert_eq!(
        rejects
            .iter()
            .map(|r| (
                r["record"].as_u64(),
                r["line"].as_u64(),
                r["stage"].as_str()
            ))
            .collect::<Vec<_>>(),
        [
            (Some(2), Some(3), Some("map")),
            (Some(3), Some(5), Some("validate"))
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at record 2, line 3, field \"n\""),
        "{stderr}"
    );
}
