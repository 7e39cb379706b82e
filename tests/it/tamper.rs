//! Forged and tampered inputs, as an attacker who can write files but does not hold the key would make
//! them: plaintext where ciphertext belongs, edited manifests, swapped parts, names that leave the set's
//! folder. Every one must be refused with a clear message, and leave no output behind.

use std::fs;
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{ferry_env, file_names};

/// A fixed key, so that every case can be made without running keygen.
const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn records(range: std::ops::RangeInclusive<u32>) -> String {
    range
        .map(|i| format!("{{\"id\":{i},\"name\":\"row {i}\"}}\n"))
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    ferry_env(dir, args, env)
}

fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "ferry failed:\n{stderr}");
    stderr
}

/// Writes a split set of 10 records in parts of 4 (3 parts) named `set…` in `dir`: `ext` is its extension
/// chain (`ndjson.gz`, `ndjson.gz.enc`).
fn write_set(dir: &Path, ext: &str) {
    fs::write(dir.join("in.ndjson"), records(1..=10)).unwrap();
    let out = format!("set.{ext}");
    let mut args = vec![
        "convert",
        "--in",
        "in.ndjson",
        "--to",
        &out,
        "--split-records",
        "4",
    ];
    if ext.ends_with(".enc") {
        args.extend(["--key-file", "k.key"]);
    }
    succeeded(&run(dir, &args, &[]));
    fs::remove_file(dir.join("in.ndjson")).unwrap();
}

fn read_manifest(dir: &Path) -> Value {
    serde_json::from_slice(&fs::read(dir.join("set.manifest.json")).unwrap()).unwrap()
}

fn write_manifest(dir: &Path, manifest: &Value) {
    fs::write(
        dir.join("set.manifest.json"),
        serde_json::to_vec_pretty(manifest).unwrap(),
    )
    .unwrap();
}

/// Edits the manifest's parts list and keeps its total in step with it, as a careful forger would.
fn edit_parts(dir: &Path, edit: impl FnOnce(&mut Vec<Value>)) {
    let mut m = read_manifest(dir);
    let mut parts = m["parts"].as_array().unwrap().clone();
    edit(&mut parts);
    let total: u64 = parts.iter().map(|p| p["records"].as_u64().unwrap()).sum();
    m["parts"] = Value::Array(parts);
    m["total_records"] = total.into();
    write_manifest(dir, &m);
}

/// Gives part `index` (from 0) a name, keeping its size and digest.
fn rename_part(dir: &Path, index: usize, name: &str) {
    edit_parts(dir, |parts| parts[index]["file"] = name.into());
}

fn part_name(dir: &Path, index: usize) -> String {
    read_manifest(dir)["parts"][index]["file"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One forged input: how it is made, how it is read, and what ferry must say.
struct Case {
    name: &'static str,
    /// Makes the forged input in a folder holding `k.key` (and the secret `x` two folders up); returns what
    /// `--in` and `verify` get.
    make: fn(&Path) -> &'static str,
    /// Reads with `--key-file k.key` when true.
    key_file: bool,
    /// Extra environment (FERRY_KEY).
    env: &'static [(&'static str, &'static str)],
    /// What the error must say, for both `convert` and `verify`.
    message: &'static str,
}

const WITH_FERRY_KEY: &[(&str, &str)] = &[("FERRY_KEY", KEY_HEX)];
const NOT_ENCRYPTED: &str = "not an encrypted ferry file";

fn forged_plain_enc(d: &Path) -> &'static str {
    fs::write(
        d.join("data.ndjson.enc"),
        "{\"id\":\"0\",\"name\":\"ATTACKER\"}\n",
    )
    .unwrap();
    "data.ndjson.enc"
}

fn forged_plain_gz_enc(d: &Path) -> &'static str {
    let plain = gzip(b"{\"id\":\"0\",\"name\":\"ATTACKER\"}\n");
    fs::write(d.join("data.ndjson.gz.enc"), plain).unwrap();
    "data.ndjson.gz.enc"
}

fn empty_enc(d: &Path) -> &'static str {
    fs::write(d.join("data.ndjson.enc"), "").unwrap();
    "data.ndjson.enc"
}

fn wrong_magic(d: &Path) -> &'static str {
    fs::write(
        d.join("data.ndjson.enc"),
        "FERRYENX{\"id\":\"0\",\"name\":\"ATTACKER\"}\n",
    )
    .unwrap();
    "data.ndjson.enc"
}

fn wrong_magic_plain_name(d: &Path) -> &'static str {
    fs::write(
        d.join("data.ndjson"),
        "[{\"id\":\"0\",\"name\":\"ATTACKER\"}]\n",
    )
    .unwrap();
    "data.ndjson"
}

fn plain_set(d: &Path) {
    write_set(d, "ndjson.gz");
}

fn enc_set(d: &Path) {
    write_set(d, "ndjson.gz.enc");
}

fn reorder(d: &Path) {
    edit_parts(d, |p| p.swap(0, 1));
}

fn drop_middle(d: &Path) {
    edit_parts(d, |p| {
        p.remove(1);
    });
}

fn drop_last(d: &Path) {
    edit_parts(d, |p| {
        p.pop();
    });
}

fn duplicate(d: &Path) {
    edit_parts(d, |p| {
        let first = p[0].clone();
        p.insert(1, first);
    });
}

/// Changes one digit of a record in part 2 (a plain part: decompress, change, compress again).
fn change_a_digit(d: &Path, encrypted: bool) {
    let name = part_name(d, 1);
    let path = d.join(&name);
    if encrypted {
        // Without the key, a forger can only change ciphertext bytes.
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() - 20;
        bytes[at] ^= 0x01;
        fs::write(&path, bytes).unwrap();
        return;
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(fs::File::open(&path).unwrap()),
        &mut text,
    )
    .unwrap();
    let changed = text.replacen("\"id\":5", "\"id\":6", 1);
    assert_ne!(changed, text);
    fs::write(&path, gzip(changed.as_bytes())).unwrap();
}

fn swap_files(d: &Path) {
    let (a, b) = (d.join(part_name(d, 0)), d.join(part_name(d, 1)));
    let (x, y) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    fs::write(&a, y).unwrap();
    fs::write(&b, x).unwrap();
}

/// Points part 2 at a plain gzip file of the forger's, with its true size and digest.
fn point_at_plain_gzip(d: &Path) {
    let name = part_name(d, 1);
    let forged = gzip(b"{\"id\":\"0\",\"name\":\"ATTACKER\"}\n");
    fs::write(d.join(&name), &forged).unwrap();
    edit_parts(d, |p| {
        p[1]["bytes"] = forged.len().into();
        p[1]["sha256"] = sha256_hex(&forged).into();
        p[1]["records"] = 1.into();
    });
}

/// Says the plain set is encrypted (no MAC: the forger has no key).
fn claim_encryption(d: &Path) {
    let mut m = read_manifest(d);
    m["encryption"] = serde_json::json!({"algorithm": "AES-256-GCM", "kdf": "none"});
    write_manifest(d, &m);
}

/// Strips the encryption claim and the MAC from an encrypted set's manifest.
fn strip_encryption(d: &Path) {
    let mut m = read_manifest(d);
    let object = m.as_object_mut().unwrap();
    object.remove("encryption");
    object.remove("mac");
    write_manifest(d, &m);
}

fn remove_mac(d: &Path) {
    let mut m = read_manifest(d);
    m.as_object_mut().unwrap().remove("mac");
    write_manifest(d, &m);
}

const MANIFEST: &str = "set.manifest.json";

fn matrix() -> Vec<Case> {
    vec![
        // Plaintext where ciphertext belongs.
        Case {
            name: "plaintext .enc, --key-file",
            make: forged_plain_enc,
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "plaintext .enc, FERRY_KEY",
            make: forged_plain_enc,
            key_file: false,
            env: WITH_FERRY_KEY,
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "plain gzip .gz.enc, --key-file",
            make: forged_plain_gz_enc,
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "plain gzip .gz.enc, FERRY_KEY",
            make: forged_plain_gz_enc,
            key_file: false,
            env: WITH_FERRY_KEY,
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "empty .enc",
            make: empty_enc,
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "empty .enc, no key at all",
            make: empty_enc,
            key_file: false,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "wrong magic bytes",
            make: wrong_magic,
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "a plain file read with a key option",
            make: wrong_magic_plain_name,
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        // Manifest edits on an unencrypted set: what can be enforced without a key.
        Case {
            name: "plain set: parts reordered",
            make: |d| {
                plain_set(d);
                reorder(d);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "where set-00001.ndjson.gz belongs",
        },
        Case {
            name: "plain set: a middle part dropped",
            make: |d| {
                plain_set(d);
                drop_middle(d);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "where set-00002.ndjson.gz belongs",
        },
        Case {
            name: "plain set: the last part dropped, total left",
            make: |d| {
                plain_set(d);
                let mut m = read_manifest(d);
                m["parts"].as_array_mut().unwrap().pop();
                write_manifest(d, &m);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "but its total says 10",
        },
        Case {
            name: "plain set: a part listed twice",
            make: |d| {
                plain_set(d);
                duplicate(d);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "each once",
        },
        Case {
            name: "plain set: a digit changed in a part",
            make: |d| {
                plain_set(d);
                change_a_digit(d, false);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "but the manifest says",
        },
        Case {
            name: "plain set: a digit changed in an uncompressed part",
            make: |d| {
                write_set(d, "ndjson");
                let path = d.join("set-00002.ndjson");
                let text = fs::read_to_string(&path).unwrap();
                fs::write(&path, text.replacen("\"id\":5", "\"id\":6", 1)).unwrap();
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "its SHA-256 is",
        },
        Case {
            name: "plain set: two parts' files swapped",
            make: |d| {
                plain_set(d);
                swap_files(d);
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "SHA-256",
        },
        Case {
            name: "plain set: claims AES-256-GCM over plain gzip parts",
            make: |d| {
                plain_set(d);
                claim_encryption(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "carries no MAC",
        },
        Case {
            name: "plain set: a part named ../../../x",
            make: |d| {
                plain_set(d);
                rename_part(d, 0, "../../../x");
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "plain file names",
        },
        Case {
            name: "plain set: a part named by an absolute path",
            make: |d| {
                plain_set(d);
                let secret = d.join("../../../x").canonicalize().unwrap();
                rename_part(d, 0, secret.to_str().unwrap());
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "plain file names",
        },
        Case {
            name: "plain set: a part name with a separator",
            make: |d| {
                plain_set(d);
                fs::create_dir(d.join("sub")).unwrap();
                let name = part_name(d, 0);
                fs::copy(d.join(&name), d.join("sub").join(&name)).unwrap();
                rename_part(d, 0, &format!("sub/{name}"));
                MANIFEST
            },
            key_file: false,
            env: &[],
            message: "plain file names",
        },
        // The same edits on an encrypted set, read with its key: the MAC covers what the names do not.
        Case {
            name: "encrypted set: parts reordered",
            make: |d| {
                enc_set(d);
                reorder(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "where set-00001.ndjson.gz.enc belongs",
        },
        Case {
            name: "encrypted set: the last part dropped, total fixed",
            make: |d| {
                enc_set(d);
                drop_last(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "the manifest failed authentication",
        },
        Case {
            name: "encrypted set: a record count moved between parts",
            make: |d| {
                enc_set(d);
                edit_parts(d, |p| {
                    p[0]["records"] = 3.into();
                    p[1]["records"] = 5.into();
                });
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "the manifest failed authentication",
        },
        Case {
            name: "encrypted set: a part listed twice",
            make: |d| {
                enc_set(d);
                duplicate(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "each once",
        },
        Case {
            name: "encrypted set: a byte changed in a part",
            make: |d| {
                enc_set(d);
                change_a_digit(d, true);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "SHA-256",
        },
        Case {
            name: "encrypted set: two parts' files swapped",
            make: |d| {
                enc_set(d);
                swap_files(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "SHA-256",
        },
        Case {
            name: "encrypted set: a part pointed at a plain gzip",
            make: |d| {
                enc_set(d);
                point_at_plain_gzip(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "the manifest failed authentication",
        },
        Case {
            name: "encrypted set: encryption claim and MAC stripped, read with --key-file",
            make: |d| {
                enc_set(d);
                strip_encryption(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: NOT_ENCRYPTED,
        },
        Case {
            name: "encrypted set: encryption claim and MAC stripped, read with FERRY_KEY",
            make: |d| {
                enc_set(d);
                strip_encryption(d);
                MANIFEST
            },
            key_file: false,
            env: WITH_FERRY_KEY,
            message: "the part is encrypted, but the manifest says the parts are not",
        },
        Case {
            name: "encrypted set: MAC removed",
            make: |d| {
                enc_set(d);
                remove_mac(d);
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "carries no MAC",
        },
        Case {
            name: "encrypted set: a part named ../../../x",
            make: |d| {
                enc_set(d);
                rename_part(d, 0, "../../../x");
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "plain file names",
        },
        Case {
            name: "encrypted set: another key",
            make: |d| {
                enc_set(d);
                fs::write(d.join("k.key"), "ff".repeat(32)).unwrap();
                MANIFEST
            },
            key_file: true,
            env: &[],
            message: "the key does not open this set",
        },
    ]
}

/// Every forgery, through `convert --in` and `ferry verify`: exit code 1, the message, no output left.
#[test]
fn every_forged_or_tampered_input_is_refused_and_leaves_no_output() {
    for case in matrix() {
        let root = tempfile::tempdir().unwrap();
        // The set lives three folders down; `../../../x` from there is a real file, and a secret.
        let d = root.path().join("a").join("b").join("c");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            root.path().join("x"),
            "{\"id\":\"secret\",\"name\":\"SECRET\"}\n",
        )
        .unwrap();
        fs::write(d.join("k.key"), KEY_HEX).unwrap();
        let input = (case.make)(&d);
        let key: &[&str] = if case.key_file {
            &["--key-file", "k.key"]
        } else {
            &[]
        };
        let mut convert = vec!["convert", "--in", input, "--to", "out.csv"];
        convert.extend(key);
        let mut verify = vec!["verify", input];
        verify.extend(key);
        for (what, args) in [("convert", &convert), ("verify", &verify)] {
            let out = run(&d, args, case.env);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let label = format!("{} ({what})", case.name);
            assert_eq!(out.status.code(), Some(1), "{label}:\n{stderr}");
            assert!(
                stderr.contains(case.message),
                "{label}: expected {:?} in:\n{stderr}",
                case.message
            );
            assert!(!stderr.contains("panicked"), "{label}:\n{stderr}");
            assert!(
                !stdout.contains("verified") && !stdout.contains("SECRET"),
                "{label}:\n{stdout}"
            );
            let left: Vec<String> = file_names(&d)
                .into_iter()
                .filter(|n| n.contains("out.csv"))
                .collect();
            assert!(left.is_empty(), "{label}: output left behind: {left:?}");
        }
    }
}

/// A manifest that passes authentication (made here with the key, as only its holder could) still cannot
/// turn a plain gzip into a part of an encrypted set: the encryption claim is checked on every part.
#[test]
fn an_authenticated_encryption_claim_is_held_against_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("k.key"), KEY_HEX).unwrap();
    enc_set(d);
    point_at_plain_gzip(d);
    let mut manifest: ferry::envelope::split::Manifest =
        serde_json::from_slice(&fs::read(d.join(MANIFEST)).unwrap()).unwrap();
    let key = ferry::envelope::KeySource::KeyFile(d.join("k.key"))
        .resolve(&ferry::Environment::empty())
        .unwrap();
    ferry::envelope::manifest::seal(&mut manifest, &key).unwrap();
    fs::write(d.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
    let convert = [
        "convert",
        "--in",
        MANIFEST,
        "--to",
        "out.csv",
        "--key-file",
        "k.key",
    ];
    for args in [&convert[..], &["verify", MANIFEST, "--key-file", "k.key"]] {
        let out = run(d, args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("set-00002.ndjson.gz.enc") && stderr.contains(NOT_ENCRYPTED),
            "{stderr}"
        );
        assert!(!d.join("out.csv").exists());
    }
}

/// `--allow-plaintext` is the one way to read a plain file that is named or keyed as encrypted.
#[test]
fn allow_plaintext_reads_a_plain_file_that_should_be_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("k.key"), KEY_HEX).unwrap();
    forged_plain_enc(d);
    let out = run(
        d,
        &[
            "convert",
            "--in",
            "data.ndjson.enc",
            "--to",
            "out.csv",
            "--key-file",
            "k.key",
            "--allow-plaintext",
        ],
        &[],
    );
    succeeded(&out);
    assert_eq!(
        fs::read_to_string(d.join("out.csv")).unwrap(),
        "id,name\n0,ATTACKER\n"
    );
    // verify checks the plain file against its checksum instead.
    let sum = sha256_hex(&fs::read(d.join("data.ndjson.enc")).unwrap());
    fs::write(
        d.join("data.ndjson.enc.sha256"),
        format!("{sum}  data.ndjson.enc\n"),
    )
    .unwrap();
    let refused = run(d, &["verify", "data.ndjson.enc"], &[]);
    assert_eq!(refused.status.code(), Some(1));
    let out = run(d, &["verify", "data.ndjson.enc", "--allow-plaintext"], &[]);
    succeeded(&out);
    // And a plain set read with a key option.
    write_set(d, "ndjson.gz");
    let read = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--in",
            MANIFEST,
            "--to",
            "all.csv",
            "--key-file",
            "k.key",
        ];
        args.extend(extra);
        run(d, &args, &[])
    };
    let refused = read(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains(NOT_ENCRYPTED));
    succeeded(&read(&["--allow-plaintext"]));
    assert_eq!(
        fs::read_to_string(d.join("all.csv"))
            .unwrap()
            .lines()
            .count(),
        11
    );
}

/// A key kept in FERRY_KEY for exports decrypts encrypted inputs but never stops a plain one from being
/// read; a key option for a plain output is there for the input, which must then be encrypted.
#[test]
fn a_default_environment_key_forces_nothing_and_a_key_option_means_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("k.key"), KEY_HEX).unwrap();
    fs::write(d.join("data.ndjson"), records(1..=3)).unwrap();
    for name in ["FERRY_KEY", "EXPORT_ENCRYPTION_KEY"] {
        let out = run(
            d,
            &["convert", "--in", "data.ndjson", "--to", "out.csv"],
            &[(name, KEY_HEX)],
        );
        succeeded(&out);
        fs::remove_file(d.join("out.csv")).unwrap();
    }
    // Encrypting a plain file with a key option: the key is the output's.
    let out = run(
        d,
        &[
            "convert",
            "--in",
            "data.ndjson",
            "--to",
            "data.csv.gz.enc",
            "--key-file",
            "k.key",
        ],
        &[],
    );
    succeeded(&out);
    // A key option and a plain output: the key can only be for the input.
    let out = run(
        d,
        &[
            "convert",
            "--in",
            "data.ndjson",
            "--to",
            "out.csv",
            "--key-file",
            "k.key",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(NOT_ENCRYPTED) && stderr.contains("--allow-plaintext"),
        "{stderr}"
    );
    assert!(!d.join("out.csv").exists());
}

/// Decrypting to standard output prints no byte of a chunk before the chunk authenticates: what reaches
/// stdout before a failure is a prefix of the true plaintext, from chunks that authenticated.
#[test]
fn stdout_gets_only_authenticated_chunks_before_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("k.key"), KEY_HEX).unwrap();
    let plain = records(1..=20_000); // about 600 KiB: ten 64 KiB chunks
    fs::write(d.join("in.ndjson"), &plain).unwrap();
    let convert = |input: &str| {
        run(
            d,
            &[
                "convert",
                "--in",
                input,
                "--to",
                "-",
                "--to-format",
                "ndjson",
                "--key-file",
                "k.key",
            ],
            &[],
        )
    };
    succeeded(&run(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "x.ndjson.enc",
            "--key-file",
            "k.key",
        ],
        &[],
    ));
    let good = fs::read(d.join("x.ndjson.enc")).unwrap();
    let whole = convert("x.ndjson.enc");
    succeeded(&whole);
    assert!(whole.stdout == plain.as_bytes());
    let (header, chunk, size) = (51, 65536 + 16, 65536);
    // Chunk 2 altered; cut after chunk 3; cut inside chunk 5.
    let mut altered = good.clone();
    altered[header + 2 * chunk + 100] ^= 1;
    for (bytes, authenticated, phrase) in [
        (altered, 2, "altered"),
        (good[..header + 4 * chunk].to_vec(), 4, "truncated"),
        (good[..header + 5 * chunk + 500].to_vec(), 5, "truncated"),
    ] {
        fs::write(d.join("bad.ndjson.enc"), &bytes).unwrap();
        let out = convert("bad.ndjson.enc");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(phrase), "{stderr}");
        assert!(
            plain.as_bytes().starts_with(&out.stdout),
            "stdout must be a prefix of the plaintext"
        );
        assert!(
            out.stdout.len() <= authenticated * size,
            "{} bytes printed, but only {authenticated} chunks authenticated",
            out.stdout.len()
        );
    }
    // Parts are checked whole before they are decoded: nothing of a changed part reaches stdout, while the
    // part before it (large enough to be flushed) may have been printed.
    succeeded(&run(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "set.ndjson",
            "--split-records",
            "10000",
        ],
        &[],
    ));
    let second = d.join("set-00002.ndjson");
    let text = fs::read_to_string(&second).unwrap();
    fs::write(&second, text.replace("row 10001\"", "row X\"")).unwrap();
    let out = run(
        d,
        &[
            "convert",
            "--in",
            MANIFEST,
            "--to",
            "-",
            "--to-format",
            "ndjson",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("set-00002.ndjson"), "{stderr}");
    let first = records(1..=10_000);
    assert!(!out.stdout.is_empty() && first.as_bytes().starts_with(&out.stdout));
}

/// gzip and zstd refuse bytes appended after their stream; brotli does too.
#[test]
fn bytes_after_a_compressed_stream_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), records(1..=100)).unwrap();
    for ext in ["br", "gz", "zst"] {
        let packed = format!("x.ndjson.{ext}");
        succeeded(&run(
            d,
            &["convert", "--in", "in.ndjson", "--to", &packed],
            &[],
        ));
        let mut bytes = fs::read(d.join(&packed)).unwrap();
        bytes.extend_from_slice(b"{\"id\":\"0\",\"name\":\"APPENDED\"}\n");
        fs::write(d.join(&packed), bytes).unwrap();
        let out = run(d, &["convert", "--in", &packed, "--to", "out.csv"], &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{ext}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!d.join("out.csv").exists(), "{ext}");
    }
    let out = run(
        d,
        &["convert", "--in", "x.ndjson.br", "--to", "out.csv"],
        &[],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("after the end of the brotli stream"));
}

/// A key pasted where a variable name or a file path belongs is never printed back.
#[test]
fn a_key_given_where_a_name_belongs_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("k.key"), KEY_HEX).unwrap();
    fs::write(d.join("in.ndjson"), records(1..=2)).unwrap();
    succeeded(&run(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "x.ndjson.enc",
            "--key-file",
            "k.key",
        ],
        &[],
    ));
    let pasted = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for (option, says) in [
        (
            "--key-env",
            "the environment variable named by --key-env is not set",
        ),
        ("--key-file", "the file named by --key-file does not exist"),
        (
            "--passphrase-env",
            "the environment variable named by --passphrase-env is not set",
        ),
        (
            "--passphrase-file",
            "the file named by --passphrase-file does not exist",
        ),
    ] {
        for args in [
            vec![
                "convert",
                "--in",
                "x.ndjson.enc",
                "--to",
                "out.csv",
                option,
                pasted,
            ],
            vec!["verify", "x.ndjson.enc", option, pasted],
        ] {
            let out = run(d, &args, &[]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{option}: {stderr}");
            assert!(stderr.contains(says), "{option}: {stderr}");
            assert!(!stderr.contains(&pasted[..12]), "{option} echoed: {stderr}");
        }
    }
}

/// A set's manifest MAC works with a passphrase too; manifests of version 1 are still read when the set is
/// not encrypted.
#[test]
fn passphrase_sets_are_authenticated_and_old_plain_manifests_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("in.ndjson"), records(1..=6)).unwrap();
    let right = [("PW", "correct horse battery staple")];
    let wrong = [("PW", "incorrect horse")];
    succeeded(&run(
        d,
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "pw.ndjson.enc",
            "--split-records",
            "4",
            "--passphrase-env",
            "PW",
        ],
        &right,
    ));
    let m: Value = serde_json::from_slice(&fs::read(d.join("pw.manifest.json")).unwrap()).unwrap();
    assert_eq!(m["manifest_version"], 2);
    assert_eq!(m["mac"]["kdf"], "argon2id");
    assert_eq!(m["mac"]["argon2id"]["salt"].as_str().unwrap().len(), 32);
    let read = |env: &[(&str, &str)]| {
        run(
            d,
            &[
                "convert",
                "--in",
                "pw.manifest.json",
                "--to",
                "back.ndjson",
                "--passphrase-env",
                "PW",
            ],
            env,
        )
    };
    succeeded(&read(&right));
    assert_eq!(
        fs::read_to_string(d.join("back.ndjson")).unwrap(),
        records(1..=6)
    );
    fs::remove_file(d.join("back.ndjson")).unwrap();
    let out = read(&wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the key does not open this set"));
    let out = run(
        d,
        &["verify", "pw.manifest.json", "--passphrase-env", "PW"],
        &right,
    );
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifest authenticated"));
    // Without the key, verify checks what it can and says it verified nothing.
    let out = run(d, &["verify", "pw.manifest.json"], &[]);
    succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("NOT verified") && !stdout.contains("ferry: verified"),
        "{stdout}"
    );
    // A version 1 manifest of a plain set is read as before.
    write_set(d, "csv");
    let mut m = read_manifest(d);
    m["manifest_version"] = 1.into();
    write_manifest(d, &m);
    succeeded(&run(
        d,
        &["convert", "--in", MANIFEST, "--to", "all.ndjson"],
        &[],
    ));
    succeeded(&run(d, &["verify", MANIFEST], &[]));
}
