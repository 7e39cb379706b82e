//! The binary as a user meets it: help, exit codes, pipes, atomic output, and hostile inputs that must give
//! a clean error rather than a panic.

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::support::{decode, ferry, root};

#[test]
fn every_subcommand_has_help_with_examples() {
    let dir = root();
    for args in [
        &["--help"][..],
        &["convert", "--help"],
        &["formats", "--help"],
    ] {
        let out = ferry(&dir, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Example"),
            "{args:?} help lacks examples:\n{text}"
        );
    }
}

#[test]
fn formats_lists_every_registered_format() {
    let out = ferry(&root(), &["formats"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for format in ferry::FORMATS {
        assert!(
            text.lines().any(|l| l.starts_with(format.name)),
            "{} missing:\n{text}",
            format.name
        );
    }
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = ferry(
        &root(),
        &[
            "convert",
            "--in",
            "a.csv",
            "--to",
            "b.json",
            "--no-such-flag",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn missing_input_file_is_a_run_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(
        dir.path(),
        &["convert", "--in", "nope.csv", "--to", "out.json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.csv"));
    assert!(!dir.path().join("out.json").exists());
}

#[test]
fn same_input_and_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.csv"), "x\n1\n").unwrap();
    let out = ferry(dir.path(), &["convert", "--in", "a.csv", "--to", "./a.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        fs::read_to_string(dir.path().join("a.csv")).unwrap(),
        "x\n1\n"
    );
}

#[test]
fn stdin_to_stdout() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "-",
            "--from-format",
            "ndjson",
            "--to",
            "-",
            "--to-format",
            "csv",
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\":1,\"b\":\"x,y\"}\n{\"a\":2,\"b\":null}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "a,b\n1,\"x,y\"\n2,\n"
    );
}

#[test]
fn broken_pipe_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..200_000)
        .map(|i| format!("{{\"i\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxx\"}}\n"))
        .collect();
    fs::write(dir.path().join("big.ndjson"), lines).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "big.ndjson",
            "--to",
            "-",
            "--to-format",
            "csv",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, like `| head`
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.is_empty(),
        "a broken pipe ends the run quietly: {stderr}"
    );
}

/// A run that fails after many records were already encoded leaves neither the output nor a temporary file,
/// and an existing file of that name keeps its old content.
#[test]
fn failed_run_leaves_the_target_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: String = (0..5000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    lines.push_str("{\"i\": broken}\n");
    fs::write(dir.path().join("in.ndjson"), lines).unwrap();
    fs::write(dir.path().join("out.csv"), "OLD\n").unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.ndjson",
            "--to",
            "out.csv",
            "--batch-size",
            "100",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("record 5001") && stderr.contains("line 5001"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "OLD\n"
    );
    let names = crate::support::file_names(dir.path());
    assert_eq!(
        names,
        ["in.ndjson", "out.csv"],
        "no temporary file may be left behind"
    );
}

#[test]
fn successful_run_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.ndjson"), "{\"a\":1}\n").unwrap();
    fs::write(dir.path().join("out.csv"), "OLD\n").unwrap();
    let out = ferry(
        dir.path(),
        &["convert", "--in", "in.ndjson", "--to", "out.csv"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "a\n1\n"
    );
}

fn assert_clean_error(format: &str, bytes: &[u8]) {
    let items = decode(format, bytes);
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .unwrap_or_else(|| panic!("{format}: expected an error"));
    assert!(err.is_data() || err.is_io(), "{format}: {err}");
    assert!(!err.to_string().is_empty());
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 100_000;
    assert_clean_error("json", "[".repeat(depth).as_bytes());
    assert_clean_error("ndjson", format!("{}\n", "[".repeat(depth)).as_bytes());
    assert_clean_error("yaml", "[".repeat(depth).as_bytes());
    assert_clean_error("xml", format!("<r>{}", "<a>".repeat(depth)).as_bytes());
    let closed_json = format!("[{}{}]", "[".repeat(depth), "]".repeat(depth));
    assert_clean_error("json", closed_json.as_bytes());
}

#[test]
fn truncated_inputs_are_errors() {
    assert_clean_error("json", br#"[{"a":1},{"a":"#);
    // A row cut short is an error. (An unterminated quote at end of file is not: the csv crate ends the
    // field there, and has no strict mode to refuse it.)
    assert_clean_error("csv", b"a,b,c\n1,2,3\n4,5");
    assert_clean_error("xml", b"<records><record><a>1</a>");
    assert_clean_error("yaml", b"- a: [1, 2");
}

#[test]
fn bad_utf8_is_an_error_in_every_text_reader() {
    let bad = b"\xff\xfe\xfa";
    assert_clean_error("json", &[b"[{\"a\":\"".as_slice(), bad, b"\"}]"].concat());
    assert_clean_error("ndjson", &[b"{\"a\":\"".as_slice(), bad, b"\"}\n"].concat());
    assert_clean_error("csv", &[b"a\n".as_slice(), bad, b"\n"].concat());
    assert_clean_error("yaml", &[b"- a: ".as_slice(), bad, b"\n"].concat());
    assert_clean_error(
        "markdown",
        &[b"| a |\n| - |\n| ".as_slice(), bad, b" |\n"].concat(),
    );
    assert_clean_error(
        "xml",
        &[b"<r><x><a>".as_slice(), bad, b"</a></x></r>"].concat(),
    );
}

#[test]
fn huge_fields_pass_through_intact() {
    let big = "é".repeat(5_000_000);
    let csv = format!("id,body\n1,\"{big}\"\n");
    let records: Vec<_> = decode("csv", csv.as_bytes())
        .into_iter()
        .collect::<ferry::Result<_>>()
        .unwrap();
    assert_eq!(records[0].get("body").unwrap().to_text().len(), big.len());
}
