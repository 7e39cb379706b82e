//! The envelope around encoded bytes, as a user meets it: split outputs with manifests, checksums, `verify`.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{ferry, ferry_env, file_names, ok};

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

fn failed_with(out: &std::process::Output, phrase: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failure mentioning {phrase:?}:\n{stderr}"
    );
    assert!(stderr.contains(phrase), "expected {phrase:?} in:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const AWKWARD: &str = r#"{"id":1,"text":"Grüße, 世界 🚀\nline two, \"quoted\"","n":1.5,"ok":true,"tags":["a","b"]}
{"id":2,"text":"","n":-7,"ok":false,"tags":[]}
{"id":3,"text":"<xml> & stuff | pipes","n":0,"ok":true,"tags":["x"]}
"#;

fn awkward_input(copies: usize) -> String {
    (0..copies)
        .flat_map(|c| {
            AWKWARD
                .lines()
                .map(move |l| l.replacen("\"id\":", &format!("\"copy\":{c},\"id\":"), 1))
        })
        .map(|l| l + "\n")
        .collect()
}

#[test]
fn every_format_round_trips_through_every_compression_encryption_and_split() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), awkward_input(5)).unwrap();
    ok(&ferry(d, &["keygen", "k.key"]));
    for format in ["ndjson", "csv", "json", "xml", "yaml", "md"] {
        // What the format alone gives back: the envelope must not change it.
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                "in.ndjson",
                "--to",
                &format!("plain.{format}"),
            ],
        ));
        ok(&ferry(
            d,
            &[
                "convert",
                "--in",
                &format!("plain.{format}"),
                "--to",
                "plain-back.ndjson",
            ],
        ));
        let expected = fs::read_to_string(d.join("plain-back.ndjson")).unwrap();
        for compression in ["", ".gz", ".br", ".zst"] {
            for encryption in ["", ".enc"] {
                for split in [false, true] {
                    let out = format!("out.{format}{compression}{encryption}");
                    // A key option for an unencrypted output would be there to decrypt the input, which is
                    // plain: it is given only when the output is encrypted.
                    let key: &[&str] = if encryption.is_empty() {
                        &[]
                    } else {
                        &["--key-file", "k.key"]
                    };
                    let mut args = vec!["convert", "--in", "in.ndjson", "--to", &out];
                    args.extend(key);
                    if split {
                        args.extend(["--split-records", "4"]);
                    }
                    ok(&ferry(d, &args));
                    let read_from = if split {
                        "out.manifest.json".to_owned()
                    } else {
                        out.clone()
                    };
                    let mut args = vec!["convert", "--in", &read_from, "--to", "back.ndjson"];
                    args.extend(key);
                    ok(&ferry(d, &args));
                    let back = fs::read_to_string(d.join("back.ndjson")).unwrap();
                    assert_eq!(back, expected, "{out} split={split}");
                    if split {
                        let mut args = vec!["verify", "out.manifest.json"];
                        args.extend(key);
                        ok(&ferry(d, &args));
                    }
                    for name in file_names(d) {
                        if name.starts_with("out") || name == "back.ndjson" {
                            fs::remove_file(d.join(name)).unwrap();
                        }
                    }
                }
            }
        }
    }
}

/// Fails with an install hint when a system tool the test compares against is missing.
fn system_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is needed by this test: apt-get install {name} (.ci/run does)"
    );
}

#[test]
fn compressed_output_is_read_by_the_system_tools() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = awkward_input(2000);
    fs::write(d.join("in.ndjson"), &input).unwrap();
    for (ext, tool) in [("gz", "gzip"), ("zst", "zstd"), ("br", "brotli")] {
        system_tool(tool);
        let out = format!("out.ndjson.{ext}");
        ok(&ferry(d, &["convert", "--in", "in.ndjson", "--to", &out]));
        let back = Command::new(tool)
            .args(["-d", "-c", &out])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            back.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&back.stderr)
        );
        assert_eq!(String::from_utf8(back.stdout).unwrap(), input, "{tool}");
    }
    // And ferry reads what the tools write, told by magic bytes whatever the name (brotli: by its name).
    let gz = Command::new("gzip")
        .args(["-c", "in.ndjson"])
        .current_dir(d)
        .output()
        .unwrap();
    fs::write(d.join("from-gzip.data"), gz.stdout).unwrap();
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "from-gzip.data",
            "--from-format",
            "ndjson",
            "--to",
            "back.ndjson",
        ],
    ));
    assert_eq!(fs::read_to_string(d.join("back.ndjson")).unwrap(), input);
}

#[test]
fn tampering_truncation_and_wrong_keys_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Several 64 KiB chunks, uncompressed so that sizes are predictable.
    fs::write(d.join("in.ndjson"), awkward_input(1500)).unwrap();
    ok(&ferry(d, &["keygen", "k.key"]));
    ok(&ferry(d, &["keygen", "other.key"]));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "good.ndjson.enc",
            "--key-file",
            "k.key",
        ],
    ));
    let good = fs::read(d.join("good.ndjson.enc")).unwrap();
    let header = 51;
    let chunk = 65536 + 16;
    assert!(
        good.len() > header + 3 * chunk,
        "the test needs at least four chunks"
    );
    let read = |bytes: &[u8], key: &str| {
        fs::write(d.join("bad.ndjson.enc"), bytes).unwrap();
        let out = ferry(
            d,
            &[
                "convert",
                "--in",
                "bad.ndjson.enc",
                "--to",
                "out.ndjson",
                "--key-file",
                key,
            ],
        );
        if !out.status.success() {
            assert!(
                !d.join("out.ndjson").exists(),
                "no plaintext may be written when reading fails"
            );
        }
        out
    };
    ok(&read(&good, "k.key"));
    fs::remove_file(d.join("out.ndjson")).unwrap();
    failed_with(&read(&good, "other.key"), "the key does not open this file");
    let flip = |at: usize| {
        let mut bytes = good.clone();
        bytes[at] ^= 0x01;
        bytes
    };
    // The header's nonce prefix is covered by the key check.
    failed_with(&read(&flip(30), "k.key"), "the key does not open this file");
    // A bit in the first, a middle chunk, and a tag.
    failed_with(&read(&flip(header + 10), "k.key"), "altered");
    failed_with(&read(&flip(header + chunk + 1000), "k.key"), "altered");
    failed_with(&read(&flip(header + 2 * chunk - 1), "k.key"), "altered");
    // Truncated at a chunk boundary, inside a chunk, and just before the end.
    for cut in [header + chunk, header + 2 * chunk + 100, good.len() - 1] {
        failed_with(&read(&good[..cut], "k.key"), "truncated");
    }
    // Two chunks swapped.
    let mut swapped = good.clone();
    let (a, b) = (header..header + chunk, header + chunk..header + 2 * chunk);
    let first: Vec<u8> = swapped[a.clone()].to_vec();
    swapped.copy_within(b.clone(), a.start);
    swapped[b].copy_from_slice(&first);
    failed_with(&read(&swapped, "k.key"), "altered");
    // Garbage appended.
    let mut longer = good.clone();
    longer.extend_from_slice(b"garbage after the end");
    failed_with(&read(&longer, "k.key"), "after");
    // Passphrases: right and wrong.
    let env = [("PW", "correct horse battery staple")];
    ok(&ferry_env(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "pw.ndjson.gz.enc",
            "--passphrase-env",
            "PW",
        ],
        &env,
    ));
    ok(&ferry_env(
        d,
        &[
            "convert",
            "--in",
            "pw.ndjson.gz.enc",
            "--to",
            "pw.ndjson",
            "--passphrase-env",
            "PW",
        ],
        &env,
    ));
    let wrong = [("PW", "incorrect horse")];
    let out = ferry_env(
        d,
        &[
            "convert",
            "--in",
            "pw.ndjson.gz.enc",
            "--to",
            "pw2.ndjson",
            "--passphrase-env",
            "PW",
        ],
        &wrong,
    );
    failed_with(&out, "the key does not open this file");
    // Keys from the environment, under both names, never echoed.
    let key = fs::read_to_string(d.join("k.key")).unwrap();
    let key = key.trim();
    for name in ["FERRY_KEY", "EXPORT_ENCRYPTION_KEY"] {
        let out = ferry_env(
            d,
            &[
                "convert",
                "--in",
                "good.ndjson.enc",
                "--to",
                "env.ndjson",
                "--report",
                "r.json",
            ],
            &[(name, key)],
        );
        let stderr = ok(&out);
        assert!(
            !stderr.contains(key) && !fs::read_to_string(d.join("r.json")).unwrap().contains(key)
        );
        fs::remove_file(d.join("env.ndjson")).unwrap();
    }
}

#[test]
fn a_compression_bomb_stops_at_the_cap() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 64 MiB of blank lines compress to about 64 KiB.
    let file = fs::File::create(d.join("bomb.ndjson.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let block = vec![b'\n'; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&block).unwrap();
    }
    gz.finish().unwrap();
    let out = ferry(
        d,
        &[
            "convert",
            "--in",
            "bomb.ndjson.gz",
            "--to",
            "out.ndjson",
            "--max-decompressed-size",
            "8MiB",
        ],
    );
    failed_with(&out, "exceeds the limit");
    assert!(!d.join("out.ndjson").exists());
    // Under the default cap it is only 64 MiB of nothing: zero records.
    ok(&ferry(
        d,
        &["convert", "--in", "bomb.ndjson.gz", "--to", "out.ndjson"],
    ));
}

#[test]
fn an_empty_input_makes_a_valid_empty_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), "").unwrap();
    ok(&ferry(d, &["keygen", "k.key"]));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.json.zst.enc",
            "--key-file",
            "k.key",
        ],
    ));
    ok(&ferry(
        d,
        &[
            "convert",
            "--in",
            "out.json.zst.enc",
            "--to",
            "back.ndjson",
            "--key-file",
            "k.key",
        ],
    ));
    assert_eq!(fs::read_to_string(d.join("back.ndjson")).unwrap(), "");
    ok(&ferry(
        d,
        &["verify", "out.json.zst.enc", "--key-file", "k.key"],
    ));
}

#[test]
fn keygen_never_overwrites_and_keeps_the_key_private() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&ferry(d, &["keygen", "k.key"]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(d.join("k.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let before = fs::read(d.join("k.key")).unwrap();
    assert_ne!(ferry(d, &["keygen", "k.key"]).status.code(), Some(0));
    assert_eq!(fs::read(d.join("k.key")).unwrap(), before);
    // Encrypting without any key is a usage error that says how to give one.
    fs::write(d.join("in.ndjson"), "{\"a\":1}\n").unwrap();
    let out = ferry_env(
        d,
        &["convert", "--in", "in.ndjson", "--to", "out.ndjson.enc"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-file"));
}
