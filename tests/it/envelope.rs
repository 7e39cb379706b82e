//! The envelope around encoded bytes, as a user meets it: split outputs with manifests, checksums, `verify`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{ferry, file_names};

fn ok(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "ferry failed:\n{stderr}");
    stderr
}

fn manifest(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn numbers(n: usize) -> String {
    (1..=n)
        .map(|i| format!("{{\"id\":{i},\"name\":\"row {i}\"}}\n"))
        .collect()
}

#[test]
fn split_parts_are_complete_files_listed_in_a_checksummed_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), numbers(25)).unwrap();
    for (ext, check) in [("csv", "id,name\n"), ("json", "]"), ("xml", "</records>")] {
        let out = format!("out.{ext}");
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "in.ndjson",
                "--to",
                &out,
                "--split-records",
                "10",
            ],
        ));
        let m = manifest(&d.join("out.manifest.json"));
        assert_eq!(m["format"], ext);
        assert_eq!(m["total_records"], 25);
        let parts = m["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        for (i, part) in parts.iter().enumerate() {
            let name = format!("out-{:05}.{ext}", i + 1);
            assert_eq!(part["file"], name.as_str());
            let bytes = fs::read(d.join(&name)).unwrap();
            assert_eq!(part["bytes"], bytes.len());
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.contains(check), "part {name} is not complete:\n{text}");
            // sha256sum agrees with the manifest.
            let sum = Command::new("sha256sum")
                .arg(&name)
                .current_dir(d)
                .output()
                .unwrap();
            let sum = String::from_utf8_lossy(&sum.stdout);
            assert!(sum.starts_with(part["sha256"].as_str().unwrap()), "{sum}");
        }
        assert_eq!(
            parts
                .iter()
                .map(|p| p["records"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [10, 10, 5]
        );
        // Reading the manifest reads every part in order.
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "out.manifest.json",
                "--to",
                "back.ndjson",
            ],
        ));
        assert_eq!(
            fs::read_to_string(d.join("back.ndjson"))
                .unwrap()
                .lines()
                .count(),
            25
        );
        let verified = ferry(d, &["verify", "out.manifest.json"]);
        ok(&verified);
        assert!(String::from_utf8_lossy(&verified.stdout).contains("3 parts, 25 records"));
        for name in file_names(d) {
            if name.starts_with("out") || name.starts_with("back") {
                fs::remove_file(d.join(name)).unwrap();
            }
        }
    }
}

#[test]
fn split_by_size_breaks_at_record_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), numbers(1000)).unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.ndjson",
            "--split-size",
            "4KB",
        ],
    ));
    let m = manifest(&d.join("out.manifest.json"));
    let parts = m["parts"].as_array().unwrap();
    assert!(parts.len() > 5, "{m}");
    let mut all = String::new();
    for part in parts {
        let text = fs::read_to_string(d.join(part["file"].as_str().unwrap())).unwrap();
        assert!(text.ends_with('\n'), "a part must end at a record boundary");
        assert!(part["bytes"].as_u64().unwrap() >= 4000 || part == parts.last().unwrap());
        all.push_str(&text);
    }
    assert_eq!(all, numbers(1000));
}

#[test]
fn an_empty_split_still_gives_one_readable_part() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), "").unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.json",
            "--split-records",
            "5",
        ],
    ));
    let m = manifest(&d.join("out.manifest.json"));
    assert_eq!(
        (
            m["total_records"].as_u64(),
            m["parts"].as_array().unwrap().len()
        ),
        (Some(0), 1)
    );
    ok(&ferry(d, &["verify", "out.manifest.json"]));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "out.manifest.json",
            "--to",
            "back.ndjson",
        ],
    ));
}

#[test]
fn a_failed_split_run_leaves_no_parts_and_no_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut input = numbers(50);
    input.push_str("{\"id\": broken\n");
    fs::write(d.join("in.ndjson"), input).unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.csv",
            "--split-records",
            "10",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        file_names(d),
        ["in.ndjson"],
        "no part, manifest or temporary file may remain"
    );
}

#[test]
fn verify_names_the_first_bad_part() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), numbers(30)).unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.csv",
            "--split-records",
            "10",
        ],
    ));
    // A changed byte.
    let second = d.join("out-00002.csv");
    let original = fs::read(&second).unwrap();
    let mut changed = original.clone();
    let last = changed.len() - 2;
    changed[last] ^= 1;
    fs::write(&second, &changed).unwrap();
    let out = ferry(d, &["verify", "out.manifest.json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("out-00002.csv") && stderr.contains("SHA-256"),
        "{stderr}"
    );
    // A missing part.
    fs::write(&second, &original).unwrap();
    fs::remove_file(d.join("out-00003.csv")).unwrap();
    let stderr =
        String::from_utf8_lossy(&ferry(d, &["verify", "out.manifest.json"]).stderr).into_owned();
    assert!(
        stderr.contains("out-00003.csv") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[test]
fn checksum_files_are_what_sha256sum_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), numbers(10)).unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.yaml",
            "--checksum",
        ],
    ));
    let check = Command::new("sha256sum")
        .args(["-c", "out.yaml.sha256"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    ok(&ferry(d, &["verify", "out.yaml"]));
    fs::write(d.join("out.yaml"), "changed").unwrap();
    assert_eq!(ferry(d, &["verify", "out.yaml"]).status.code(), Some(1));
}
