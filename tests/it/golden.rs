//! Golden CLI cases: every folder under tests/golden is one run of the ferry binary.
//!
//! A case folder holds `cmd` (the arguments, one line; double quotes group words), its input files, and
//! `expected/`: every file the run must leave behind, plus `stdout`, `stderr` (timings masked) and `exit`
//! (the exit code, 0 when absent). A run that leaves any other file fails, so a failed run that leaves a
//! partial or temporary file is caught. To add a case, make a folder with `cmd` and inputs and run
//! `FERRY_GOLDEN_REGEN=1 cargo test --test it golden`, then read what it wrote to `expected/`.
//!
//! An input the run changes counts as an output: it must be in `expected/` as it is after the run (a run
//! that must leave an input alone, such as `keygen` refusing an existing key, then shows that it did).
//!
//! Output that differs on every run (a new random key) is checked by its shape: `expected/NAME.shape`
//! instead of `expected/NAME`, holding lines `regex: PATTERN` (the whole file must match) and
//! `mode: 0600` (its permission bits). Regenerating keeps `.shape` files as they are.
//!
//! SQLite inputs are kept as SQL text: an input named `NAME.db.sql` is run into a fresh SQLite file
//! `NAME.db` beside the others before the command runs (and `NAME.db` counts as an input, not an output),
//! so `ferry migrate --plan`, `--ddl` and `ferry diff` cases need no binary files.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::support::{ferry, root};

/// Splits a command line: whitespace separates, double quotes group, `\"` is a quote.
fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.trim().chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'"') => current
                .get_or_insert_with(String::new)
                .push(chars.next().unwrap_or('"')),
            '"' => {
                quoted = !quoted;
                current.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => args.extend(current.take()),
            c => current.get_or_insert_with(String::new).push(c),
        }
    }
    args.extend(current);
    args
}

/// Masks what changes from run to run (durations, rates) in stderr.
fn mask(stderr: &str) -> String {
    stderr
        .lines()
        .map(|line| match line.find(" in ") {
            Some(i)
                if ["ferry: ok", "ferry: FAILED", "ferry: CANCELLED"]
                    .iter()
                    .any(|p| line.starts_with(p)) =>
            {
                format!("{} in <time>", &line[..i])
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Masks the run-dependent numbers of a JSON report (durations and rates).
fn mask_report(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes);
    let masked: Vec<String> = text
        .lines()
        .map(|line| {
            let key = line.trim_start();
            if key.starts_with("\"seconds\":") || key.starts_with("\"records_per_second\":") {
                let indent = &line[..line.len() - key.len()];
                let name = key.split(':').next().unwrap_or_default();
                format!(
                    "{indent}{name}: \"<masked>\"{}",
                    if key.ends_with(',') { "," } else { "" }
                )
            } else {
                line.to_owned()
            }
        })
        .collect();
    (masked.join("\n") + "\n").into_bytes()
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_file() {
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                fs::read(entry.path()).unwrap(),
            );
        }
    }
    files
}

fn run_case(case: &Path, regenerate: bool) -> Result<(), String> {
    let work = tempfile::tempdir().unwrap();
    let inputs: BTreeMap<String, Vec<u8>> = files_in(case);
    for (name, bytes) in &inputs {
        fs::write(work.path().join(name), bytes).unwrap();
    }
    let databases: Vec<String> = inputs
        .keys()
        .filter_map(|name| name.strip_suffix(".sql"))
        .filter(|name| name.ends_with(".db"))
        .map(str::to_owned)
        .collect();
    for db in &databases {
        let sql = String::from_utf8_lossy(&inputs[&format!("{db}.sql")]).into_owned();
        let conn = rusqlite::Connection::open(work.path().join(db)).unwrap();
        conn.execute_batch(&sql)
            .unwrap_or_else(|e| panic!("{}: {db}.sql: {e}", case.display()));
    }
    let databases_built = databases;
    let cmd = String::from_utf8_lossy(&inputs["cmd"]).into_owned();
    let args = split_args(&cmd);
    let output = ferry(
        work.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    let mut actual: BTreeMap<String, Vec<u8>> = files_in(work.path())
        .into_iter()
        .filter(|(name, bytes)| inputs.get(name).is_none_or(|before| before != bytes))
        .filter(|(name, _)| !databases_built.contains(name))
        .map(|(name, bytes)| {
            let masked = if name.starts_with("report") && name.ends_with(".json") {
                mask_report(&bytes)
            } else {
                bytes
            };
            (name, masked)
        })
        .collect();
    actual.insert("stdout".into(), output.stdout.clone());
    actual.insert(
        "stderr".into(),
        (mask(&String::from_utf8_lossy(&output.stderr)) + "\n").into_bytes(),
    );
    actual.insert(
        "exit".into(),
        format!("{}\n", output.status.code().unwrap_or(-1)).into_bytes(),
    );

    let expected_dir = case.join("expected");
    let existing = match expected_dir.is_dir() {
        true => files_in(&expected_dir),
        false => BTreeMap::new(), // a new case, being generated
    };
    let shapes: BTreeMap<String, String> = existing
        .into_iter()
        .filter_map(|(name, bytes)| {
            let file = name.strip_suffix(".shape")?.to_owned();
            Some((file, String::from_utf8_lossy(&bytes).into_owned()))
        })
        .collect();
    if regenerate {
        let _ = fs::remove_dir_all(&expected_dir);
        fs::create_dir_all(&expected_dir).unwrap();
        for (name, bytes) in &actual {
            match shapes.get(name) {
                Some(shape) => fs::write(expected_dir.join(format!("{name}.shape")), shape),
                None => fs::write(expected_dir.join(name), bytes),
            }
            .unwrap();
        }
        return Ok(());
    }
    for (name, shape) in &shapes {
        check_shape(&work.path().join(name), shape).map_err(|e| format!("{name}: {e}"))?;
        actual.remove(name);
    }
    let expected: BTreeMap<String, Vec<u8>> = files_in(&expected_dir)
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".shape"))
        .collect();
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    if names(&actual) != names(&expected) {
        return Err(format!(
            "files differ: got {:?}, expected {:?}",
            names(&actual),
            names(&expected)
        ));
    }
    for (name, bytes) in &expected {
        if actual[name] != *bytes {
            return Err(format!(
                "{name} differs:\n--- got\n{}\n--- expected\n{}",
                String::from_utf8_lossy(&actual[name]),
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    Ok(())
}

/// Checks a file against its `.shape`: `regex: PATTERN` lines (the whole text must match each) and a
/// `mode: NNNN` line (its permission bits, octal).
fn check_shape(path: &Path, shape: &str) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    for line in shape.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("bad shape line {line:?}"))?;
        match key {
            "regex" => {
                let pattern =
                    regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| e.to_string())?;
                if !pattern.is_match(&text) {
                    return Err(format!("{text:?} does not match {value}"));
                }
            }
            "mode" => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = fs::metadata(path)
                    .map_err(|e| e.to_string())?
                    .permissions()
                    .mode();
                let want = u32::from_str_radix(value, 8).map_err(|e| e.to_string())?;
                if mode & 0o7777 != want {
                    return Err(format!("mode is {:04o}, not {value}", mode & 0o7777));
                }
            }
            other => return Err(format!("unknown shape key {other:?}")),
        }
    }
    Ok(())
}

#[test]
fn golden_cases() {
    let regenerate = std::env::var("FERRY_GOLDEN_REGEN").is_ok_and(|v| v == "1");
    let dir = root().join("tests").join("golden");
    let mut cases: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the golden cases under {}",
        dir.display()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run_case(case, regenerate)
                .err()
                .map(|e| format!("{}: {e}", case.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn split_args_groups_quotes() {
    assert_eq!(
        split_args(r#"convert --in "a b.csv" --delimiter ";" --to x"#),
        [
            "convert",
            "--in",
            "a b.csv",
            "--delimiter",
            ";",
            "--to",
            "x"
        ]
    );
    assert_eq!(split_args(r#"--columns "" x"#), ["--columns", "", "x"]);
}
