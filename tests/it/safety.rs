//! Security and data-safety defects found by probing (issue 12, part B), each reproduced as it was found:
//! paths a run writes that collide with what it reads or writes, records of unbounded size, passwords in
//! messages, temporary files left by signals, read-only outputs replaced, CRLF line numbers, XML in another
//! encoding, and very wide CSV.

use std::fs;
use std::io::{BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferry::{format, FormatOptions, Input};

use crate::support::{ferry, file_names, ok};

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A usage error (exit 2) whose message names both flags.
fn refused(out: &Output, flags: [&str; 2]) -> String {
    let text = stderr(out);
    assert_eq!(code(out), Some(2), "expected a usage error:\n{text}");
    for flag in flags {
        assert!(text.contains(flag), "the error should name {flag}:\n{text}");
    }
    text
}

/// The input of the probe: a header, 200,000 good rows and one ragged row — 200,002 lines.
fn bigbad(dir: &Path) -> Vec<u8> {
    let mut text = String::from("id,name\n");
    for i in 1..=200_000 {
        text.push_str(&format!("{i},name{i}\n"));
    }
    text.push_str("200001\n");
    fs::write(dir.join("bigbad.csv"), &text).unwrap();
    text.into_bytes()
}

fn no_temp_files(dir: &Path) {
    let temps: Vec<String> = file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

// --- 3. --rejects, --report and every derived path against the input and the output -----------------------

#[test]
fn rejects_naming_the_input_leaves_the_input_whole() {
    let dir = tempfile::tempdir().unwrap();
    let before = bigbad(dir.path());
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "bigbad.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "lenient",
            "--rejects",
            "bigbad.csv",
        ],
    );
    refused(&out, ["--in", "--rejects"]);
    assert_eq!(fs::read(dir.path().join("bigbad.csv")).unwrap(), before);
    assert!(!dir.path().join("out.ndjson").exists());
}

#[test]
fn report_naming_the_input_leaves_the_input_whole() {
    let dir = tempfile::tempdir().unwrap();
    let before = bigbad(dir.path());
    fs::write(dir.path().join("any.schema.json"), r#"{"type": "object"}"#).unwrap();
    for args in [
        &[
            "convert",
            "--in",
            "bigbad.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "lenient",
            "--report",
            "./bigbad.csv",
        ][..],
        &[
            "convert",
            "--in",
            "bigbad.csv",
            "--to",
            "out.ndjson",
            "--report",
            "bigbad.csv",
        ],
        &[
            "validate",
            "--in",
            "bigbad.csv",
            "--schema",
            "any.schema.json",
            "--report",
            "bigbad.csv",
        ],
    ] {
        let out = ferry(dir.path(), args);
        refused(&out, ["--in", "--report"]);
        assert_eq!(
            fs::read(dir.path().join("bigbad.csv")).unwrap(),
            before,
            "{args:?}"
        );
    }
}

#[test]
fn rejects_naming_the_output_leaves_the_good_output() {
    let dir = tempfile::tempdir().unwrap();
    bigbad(dir.path());
    let first = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "bigbad.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "lenient",
            "-q",
        ],
    );
    ok(&first);
    let good = fs::read(dir.path().join("out.ndjson")).unwrap();
    assert_eq!(good.iter().filter(|&&b| b == b'\n').count(), 200_000);
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "bigbad.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "lenient",
            "--rejects",
            "out.ndjson",
        ],
    );
    refused(&out, ["--to", "--rejects"]);
    assert_eq!(fs::read(dir.path().join("out.ndjson")).unwrap(), good);
}

#[test]
fn symlinks_hard_links_and_spellings_are_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = b"id\n1\n2\n";
    fs::write(dir.path().join("in.csv"), input).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("in.csv", dir.path().join("link.csv")).unwrap();
    fs::hard_link(dir.path().join("in.csv"), dir.path().join("hard.csv")).unwrap();
    for (flag, path) in [
        ("--to", "link.csv"),
        ("--to", "hard.csv"),
        ("--to", "./sub/../in.csv"),
        ("--report", "link.csv"),
        ("--rejects", "hard.csv"),
    ] {
        let mut args = vec!["convert", "--in", "in.csv", "--on-error", "lenient"];
        if flag == "--to" {
            args.extend(["--to", path]);
        } else {
            args.extend(["--to", "out.ndjson", flag, path]);
        }
        let out = ferry(dir.path(), &args);
        refused(&out, ["--in", flag]);
        assert_eq!(
            fs::read(dir.path().join("in.csv")).unwrap(),
            input,
            "{args:?}"
        );
    }
}

#[test]
fn derived_paths_are_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n2\n").unwrap();
    // The checksum file, the parts and the manifest of a split output, the default rejects file.
    let cases: [(&[&str], [&str; 2]); 5] = [
        (
            &[
                "--to",
                "out.csv",
                "--checksum",
                "--report",
                "out.csv.sha256",
            ],
            ["the checksum file of --to", "--report"],
        ),
        (
            &[
                "--to",
                "out.csv",
                "--split-records",
                "1",
                "--report",
                "out-00002.csv",
            ],
            ["the parts of --to", "--report"],
        ),
        (
            &[
                "--to",
                "out.csv",
                "--split-records",
                "1",
                "--rejects",
                "out.manifest.json",
                "--on-error",
                "skip",
            ],
            ["the manifest of --to", "--rejects"],
        ),
        (
            &[
                "--to",
                "in.csv.rejects.ndjson",
                "--on-error",
                "lenient",
                "--report",
                "in.csv.rejects.ndjson.rejects.ndjson",
            ],
            ["the default rejects file", "--report"],
        ),
        (
            &[
                "--to",
                "out.csv",
                "--checksum",
                "--rejects",
                "out.csv.sha256",
                "--on-error",
                "lenient",
            ],
            ["the checksum file of --to", "--rejects"],
        ),
    ];
    for (extra, flags) in cases {
        let args = [&["convert", "--in", "in.csv"][..], extra].concat();
        let out = ferry(dir.path(), &args);
        refused(&out, flags);
    }
    assert_eq!(file_names(dir.path()), ["in.csv"], "nothing was written");
    // The parts a manifest input lists are inputs too.
    ok(&ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            "p.csv",
            "--split-records",
            "1",
            "-q",
        ],
    ));
    let part = fs::read(dir.path().join("p-00001.csv")).unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "p.manifest.json",
            "--to",
            "all.csv",
            "--report",
            "p-00001.csv",
        ],
    );
    refused(&out, ["a part --in's manifest lists", "--report"]);
    assert_eq!(fs::read(dir.path().join("p-00001.csv")).unwrap(), part);
}

#[test]
fn files_beside_a_sqlite_database_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n").unwrap();
    ok(&ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            "sqlite://app.db?table=t",
            "-q",
        ],
    ));
    let db = fs::read(dir.path().join("app.db")).unwrap();
    for args in [
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            "sqlite://app.db?table=u",
            "--report",
            "app.db",
        ][..],
        &[
            "convert",
            "--in",
            "sqlite://app.db?table=t",
            "--to",
            "out.csv",
            "--report",
            "./app.db",
        ],
        &[
            "convert",
            "--in",
            "sqlite://app.db?table=t",
            "--to",
            "app.db-wal",
            "--to-format",
            "csv",
        ],
    ] {
        let out = ferry(dir.path(), args);
        assert_eq!(code(&out), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(fs::read(dir.path().join("app.db")).unwrap(), db, "{args:?}");
    }
}

#[test]
fn migrate_paths_never_name_the_sqlite_source() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(conn);
    let db = fs::read(&path).unwrap();
    // The target is never reached: the check comes before anything is opened.
    let base = [
        "migrate",
        "--from",
        "app.db",
        "--to",
        "postgres://nobody@127.0.0.1:1/none",
    ];
    for (extra, flag) in [
        (&["--report", "app.db"][..], "--report"),
        (&["--state", "./app.db"], "--state"),
        (&["--backup", "app.db"], "--backup"),
        (&["--report", "app.db-journal"], "--report"),
    ] {
        let out = ferry(dir.path(), &[&base[..], extra].concat());
        refused(&out, ["--from", flag]);
        assert_eq!(fs::read(&path).unwrap(), db, "{extra:?}");
    }
    // Files the run writes in its folders: a per-table rejects file, a backup file.
    fs::create_dir(dir.path().join("bk")).unwrap();
    let out = ferry(
        dir.path(),
        &[&base[..], &["--backup", "bk", "--state", "bk/t.ndjson.zst"]].concat(),
    );
    refused(&out, ["--state", "--backup"]);
    let out = ferry(
        dir.path(),
        &[
            &base[..],
            &[
                "--on-error",
                "lenient",
                "--rejects",
                "rj",
                "--report",
                "rj/t.rejects.ndjson",
            ],
        ]
        .concat(),
    );
    refused(&out, ["--rejects", "--report"]);
    // `ferry diff` writes a report too.
    let out = ferry(
        dir.path(),
        &[
            "diff",
            "app.db",
            "postgres://nobody@127.0.0.1:1/none",
            "--report",
            "app.db",
        ],
    );
    refused(&out, ["SRC", "--report"]);
    assert_eq!(fs::read(&path).unwrap(), db);
}

// --- 5. a cap on the size of one record -----------------------------------------------------------------------

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The probe's bomb, scaled down: zeros that decompress to one endless record.
#[test]
fn a_gzip_of_zeros_stops_at_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = gzip(&vec![0u8; 4 << 20]);
    for name in ["zeros.ndjson.gz", "zeros.csv.gz"] {
        fs::write(dir.path().join(name), &zeros).unwrap();
        let out = ferry(
            dir.path(),
            &[
                "convert",
                "--in",
                name,
                "--to",
                "out.ndjson",
                "--max-record-size",
                "64KiB",
            ],
        );
        let text = stderr(&out);
        assert_eq!(code(&out), Some(1), "{name}: {text}");
        assert!(
            text.contains("record 1, line 1")
                && text.contains("larger than the limit of 64 KiB (--max-record-size)"),
            "{name}: {text}"
        );
        assert!(!dir.path().join("out.ndjson").exists());
        no_temp_files(dir.path());
    }
}

#[test]
fn a_huge_csv_field_names_its_record_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let field = "x".repeat(200 * 1024);
    fs::write(
        dir.path().join("big.csv"),
        format!("id,body\n1,a\n2,{field}\n3,c\n"),
    )
    .unwrap();
    let args = [
        "convert",
        "--in",
        "big.csv",
        "--to",
        "out.ndjson",
        "--max-record-size",
        "64KiB",
    ];
    let out = ferry(dir.path(), &args);
    let text = stderr(&out);
    assert_eq!(code(&out), Some(1), "{text}");
    assert!(text.contains("in big.csv at record 2, line 3"), "{text}");
    assert!(text.contains("--max-record-size"), "{text}");
    // Raised, the same file goes through.
    let args = [
        "convert",
        "--in",
        "big.csv",
        "--to",
        "out.ndjson",
        "--max-record-size",
        "1MiB",
        "-q",
    ];
    ok(&ferry(dir.path(), &args));
}

/// A reader that never ends: without a cap, decoding it would fill memory.
fn endless(head: &'static [u8], fill: u8) -> Input {
    Input {
        reader: Box::new(BufReader::new(head.chain(std::io::repeat(fill)))),
        name: "endless".into(),
        file: None,
    }
}

fn first_error(format: &str, input: Input, options: &FormatOptions) -> String {
    let format = format::by_name(format).unwrap();
    let error = match format.decode(input, options) {
        Err(e) => e,
        Ok(mut decoder) => loop {
            match decoder.next() {
                Some(Err(e)) => break e,
                Some(Ok(_)) => continue,
                None => panic!("an endless input ended"),
            }
        },
    };
    error.to_string()
}

#[test]
fn every_decoder_stops_an_endless_record() {
    let options = FormatOptions {
        max_record_size: 100_000,
        max_document_size: 300_000,
        ..FormatOptions::default()
    };
    let cases: [(&str, &'static [u8], u8, &str); 7] = [
        ("csv", b"a,b\n1,", b'x', "record 1, line 2"),
        ("tsv", b"a\tb\n1\t\"", b'x', "record 1, line 2"),
        ("ndjson", b"{\"a\":1}\n{\"a\":\"", b'x', "record 2, line 2"),
        (
            "json",
            b"[\n{\"a\": 1},\n{\"a\": \"",
            b'x',
            "record 2, line 3",
        ),
        ("xml", b"<r><x><a>1</a></x><x><a>", b'x', "record 2, byte"),
        ("yaml", b"- a: ", b'x', "--max-document-size"),
        ("markdown", b"| a |\n|---|\n| ", b'x', "--max-document-size"),
    ];
    for (format, head, fill, expected) in cases {
        let text = first_error(format, endless(head, fill), &options);
        assert!(text.contains(expected), "{format}: {text}");
        let limit = if expected == "--max-document-size" {
            "larger than the limit of 300000 bytes"
        } else {
            "larger than the limit of 100000 bytes (--max-record-size)"
        };
        assert!(text.contains(limit), "{format}: {text}");
    }
}

#[test]
fn a_record_of_exactly_the_limit_passes() {
    let dir = tempfile::tempdir().unwrap();
    // The line with its line break is 1024 bytes.
    let line = format!("{{\"a\":\"{}\"}}\n", "x".repeat(1024 - 9));
    assert_eq!(line.len(), 1024);
    fs::write(dir.path().join("edge.ndjson"), &line).unwrap();
    let args = [
        "convert",
        "--in",
        "edge.ndjson",
        "--to",
        "out.ndjson",
        "--max-record-size",
        "1024",
        "-q",
    ];
    ok(&ferry(dir.path(), &args));
    let args = [
        "convert",
        "--in",
        "edge.ndjson",
        "--to",
        "out2.ndjson",
        "--max-record-size",
        "1023",
    ];
    assert_eq!(code(&ferry(dir.path(), &args)), Some(1));
}

// --- 7a. passwords in connection strings ----------------------------------------------------------------------

#[test]
fn a_libpq_connection_string_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n").unwrap();
    let conninfo = "host=db.internal password=s3cret-pw dbname=app";
    for args in [
        &["convert", "--in", conninfo, "--to", "out.ndjson"][..],
        &["convert", "--in", "in.csv", "--to", conninfo],
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            conninfo,
            "--to-format",
            "csv",
        ],
        &[
            "convert",
            "--in",
            "in.csv",
            "--to",
            "user=me password='s3cret-pw' host=db",
        ],
        &["migrate", "--from", conninfo, "--to", "out.db"],
        &[
            "convert",
            "--in",
            "password=s3cret-pw.csv",
            "--to",
            "out.ndjson",
        ],
        &[
            "convert",
            "--in",
            "postgres://me:s3cret-pw@127.0.0.1:1/app?table=t",
            "--to",
            "x.csv",
            "--connect-retries",
            "0",
        ],
    ] {
        let out = ferry(dir.path(), args);
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_ne!(code(&out), Some(0), "{args:?}");
        assert!(
            !text.contains("s3cret"),
            "{args:?} echoed the password:\n{text}"
        );
    }
    let out = ferry(dir.path(), &["convert", "--in", "in.csv", "--to", conninfo]);
    assert!(stderr(&out).contains("libpq"), "{}", stderr(&out));
    assert_eq!(file_names(dir.path()), ["in.csv"]);
}

// --- 7b. temporary files and signals --------------------------------------------------------------------------

/// Starts ferry reading a FIFO that this test keeps open, so the run is in flight with its temporary file
/// created; sends `signal`; checks the exit code and that nothing is left.
fn interrupted(signal: i32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "convert",
            "--in",
            "in.csv",
            "--to",
            "out.ndjson",
            "--batch-size",
            "1",
            "-q",
        ])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Opening the FIFO for writing waits until ferry opens it for reading.
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"id,name\n").unwrap();
    for i in 0..1000 {
        writer.write_all(format!("{i},n{i}\n").as_bytes()).unwrap();
    }
    writer.flush().unwrap();
    // Wait for the temporary file: the run is then writing.
    let mut waited = Duration::ZERO;
    while !file_names(dir.path()).iter().any(|n| n.ends_with(".tmp")) {
        assert!(
            waited < Duration::from_secs(30),
            "no temporary file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    let temp = file_names(dir.path())
        .into_iter()
        .find(|n| n.ends_with(".tmp"))
        .unwrap();
    assert!(temp.starts_with(".out.ndjson.ferry-"), "{temp}");
    assert!(
        temp.contains(&format!("-{}-", child.id())),
        "the pid names the owner: {temp}"
    );
    // SAFETY: sends a signal to the child this test started.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0);
    let status = child.wait().unwrap();
    drop(writer);
    assert_eq!(status.code(), Some(128 + signal), "{name}");
    no_temp_files(dir.path());
    assert!(!dir.path().join("out.ndjson").exists(), "{name}");
    assert_eq!(file_names(dir.path()), ["in.csv"], "{name}");
}

#[test]
fn sigterm_leaves_nothing_behind() {
    interrupted(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_leaves_nothing_behind() {
    interrupted(libc::SIGINT, "SIGINT");
}

#[test]
fn sighup_leaves_nothing_behind() {
    interrupted(libc::SIGHUP, "SIGHUP");
}

/// The host part of ferry's temporary names: the host name's letters and digits, at most 32.
fn host_tag() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tag: String = name
        .trim()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(32)
        .collect();
    if tag.is_empty() {
        "host".into()
    } else {
        tag
    }
}

#[test]
fn stale_temporary_files_of_dead_runs_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n").unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let alive = std::process::id();
    let host = host_tag();
    let stale = [
        format!(".out.ndjson.ferry-{host}-{dead}-a1B2c3.tmp"),
        format!(".other.csv.ferry-{host}-{dead}-Zz9yY8.tmp"),
    ];
    let kept = [
        format!(".out.ndjson.ferry-{host}-{alive}-a1B2c3.tmp"), // its process runs
        format!(".out.ndjson.ferry-elsewhere-{dead}-a1B2c3.tmp"), // another host's
        format!(".out.ndjson.ferry-{host}-{dead}-a1B2c3d.tmp"), // not ferry's pattern
        format!(".out.ndjson.{host}-{dead}-a1B2c3.tmp"),        // not ferry's pattern
        "notes.tmp".to_owned(),
    ];
    for name in stale.iter().chain(&kept) {
        fs::write(dir.path().join(name), "partial").unwrap();
    }
    fs::create_dir(dir.path().join("sub")).unwrap();
    let elsewhere = format!("sub/.x.ferry-{host}-{dead}-a1B2c3.tmp");
    fs::write(dir.path().join(&elsewhere), "partial").unwrap();
    ok(&ferry(
        dir.path(),
        &["convert", "--in", "in.csv", "--to", "out.ndjson", "-q"],
    ));
    for name in &stale {
        assert!(!dir.path().join(name).exists(), "{name} should be removed");
    }
    for name in &kept {
        assert!(dir.path().join(name).exists(), "{name} should be kept");
    }
    assert!(
        dir.path().join(&elsewhere).exists(),
        "only the target's own folder is cleaned"
    );
}

// --- 7c. CRLF line numbers -------------------------------------------------------------------------------------

#[test]
fn crlf_csv_errors_name_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("crlf.csv", "a,b\r\n1,2\r\n3\r\n5,6\r\n"),
        ("lf.csv", "a,b\n1,2\n3\n5,6\n"),
        ("blank.csv", "a,b\r\n\r\n1,2\r\n\r\n\r\n3\r\n"),
        ("quoted.csv", "a,b\r\n1,\"x\r\ny\"\r\n3\r\n"),
    ] {
        fs::write(dir.path().join(name), text).unwrap();
        let out = ferry(dir.path(), &["convert", "--in", name, "--to", "out.ndjson"]);
        let line = text.lines().position(|l| l.trim_end() == "3").unwrap() + 1;
        let expected = format!("at record 2, line {line}:");
        assert!(
            stderr(&out).contains(&expected),
            "{name}: want {expected}\n{}",
            stderr(&out)
        );
    }
}

// --- 7d. read-only outputs --------------------------------------------------------------------------------------

#[test]
fn a_read_only_output_is_not_replaced() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("in.csv"), "id\n1\n").unwrap();
    for target in ["out.ndjson", "rejects.ndjson"] {
        let path = dir.path().join(target);
        fs::write(&path, "keep me\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
    }
    let out = ferry(
        dir.path(),
        &["convert", "--in", "in.csv", "--to", "out.ndjson"],
    );
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("out.ndjson: it is read-only for you (mode 0444)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("out.ndjson")).unwrap(),
        "keep me\n"
    );
    // Every file a run writes goes through the same check.
    fs::write(dir.path().join("bad.csv"), "id,x\n1\n").unwrap();
    let out = ferry(
        dir.path(),
        &[
            "convert",
            "--in",
            "bad.csv",
            "--to",
            "new.ndjson",
            "--on-error",
            "lenient",
            "--rejects",
            "rejects.ndjson",
        ],
    );
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rejects.ndjson: it is read-only"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap(),
        "keep me\n"
    );
    no_temp_files(dir.path());
    // A writable one is replaced as before.
    let path = dir.path().join("out.ndjson");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    ok(&ferry(
        dir.path(),
        &["convert", "--in", "in.csv", "--to", "out.ndjson", "-q"],
    ));
    assert_eq!(fs::read_to_string(&path).unwrap(), "{\"id\":\"1\"}\n");
}

// --- 7e. XML in another encoding --------------------------------------------------------------------------------

#[test]
fn xml_in_another_encoding_suggests_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let text = "<records><record><a>é</a></record></records>";
    let utf16le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let utf16be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    fs::write(dir.path().join("le.xml"), &utf16le).unwrap();
    fs::write(dir.path().join("be.xml"), &utf16be).unwrap();
    let declared = b"<?xml version=\"1.0\" encoding=\"windows-1252\"?><records><record><a>\xe9</a></record></records>";
    fs::write(dir.path().join("cp.xml"), declared).unwrap();
    fs::write(
        dir.path().join("latin.xml"),
        b"<records><record><a>\xe9</a></record></records>",
    )
    .unwrap();
    for (name, hint) in [
        ("le.xml", "pass --encoding utf-16le"),
        ("be.xml", "pass --encoding utf-16be"),
        (
            "cp.xml",
            "declares encoding=\"windows-1252\": pass --encoding windows-1252",
        ),
        ("latin.xml", "pass --encoding"),
    ] {
        let out = ferry(dir.path(), &["convert", "--in", name, "--to", "out.ndjson"]);
        assert_eq!(code(&out), Some(1), "{name}");
        assert!(stderr(&out).contains(hint), "{name}: {}", stderr(&out));
    }
    // And with it, each reads.
    for (name, label) in [
        ("le.xml", "utf-16le"),
        ("be.xml", "utf-16be"),
        ("cp.xml", "windows-1252"),
    ] {
        let args = [
            "convert",
            "--in",
            name,
            "--to",
            "-",
            "--to-format",
            "ndjson",
            "--encoding",
            label,
            "-q",
        ];
        let out = ferry(dir.path(), &args);
        ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "{\"a\":\"é\"}\n",
            "{name}"
        );
    }
}

// --- 7f. very wide CSV --------------------------------------------------------------------------------------------

#[test]
fn a_200000_column_csv_reads_whole() {
    let columns = 200_000;
    let header: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    let row: Vec<String> = (0..columns).map(|i| i.to_string()).collect();
    let text = format!("{}\n{}\n", header.join(","), row.join(","));
    let records = crate::support::decode_ok("csv", text.as_bytes(), &FormatOptions::default());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].len(), columns);
    assert_eq!(records[0].get("c199999").unwrap().to_text(), "199999");
    // A name repeated at the far end is still found.
    let twice = format!("{},c0\n{},x\n", header.join(","), row.join(","));
    let err = crate::support::decode("csv", twice.as_bytes())
        .remove(0)
        .unwrap_err();
    assert!(err.to_string().contains("column 200001"), "{err}");
    // A JSON object as wide comes back whole, its last duplicate key winning in the first one's place.
    let object: Vec<String> = (0..columns).map(|i| format!("\"c{i}\":{i}")).collect();
    let json = format!("{{{},\"c0\":-1}}\n", object.join(","));
    let records = crate::support::decode_ok("ndjson", json.as_bytes(), &FormatOptions::default());
    assert_eq!(records[0].len(), columns);
    assert_eq!(records[0].get("c0").unwrap().to_text(), "-1");
    assert_eq!(records[0].keys().next(), Some("c0"));
}
