//! The fuzz targets on stable, inside `cargo test`: every seed and every regression input of every target
//! (fuzz/seeds, fuzz/regressions, and the corpus files the fuzzers start from) goes through the same
//! `ferry::fuzz` function the libFuzzer target calls, and then a few hundred deterministic mutations of them
//! do — a short smoke pass of the fuzzers that needs no nightly compiler and no cargo-fuzz. Each input runs
//! under a time limit: a hang fails the test as a crash does. See TESTING.md.
//!
//! `cargo run --example fuzz_replay TARGET FILE` runs one input (a libFuzzer artifact, say) on stable, so its
//! panic and backtrace show.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use crate::support;

/// How long one input may take here (debug build, shared machine): libFuzzer's own limit is 1 s on an
/// optimised build.
const PER_INPUT: Duration = Duration::from_secs(20);
/// Mutations per target in the smoke pass.
const MUTATIONS: usize = 2000;

/// Runs `target` on `data` in a thread of its own; the panic message, or a hang, as an error.
///
/// The thread is joined, never detached: glibc's `pthread_detach` reads the thread's descriptor, at the top
/// of its stack, after marking it detached, and a thread ending just then frees that stack — unmapped, not
/// cached, a 64 MiB stack being larger than glibc's stack cache — so the read can fault. That killed the whole test
/// binary with SIGSEGV once on CI (`pthread_detach+28` in the kernel's log, in this test's thread). A thread
/// that hangs is neither joined nor detached: its handle is forgotten, and the test fails.
fn guarded(target: &'static str, data: Vec<u8>) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let outcome = std::panic::catch_unwind(|| ferry::fuzz::run(target, &data));
            let _ = tx.send(outcome.map_err(|p| {
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        })
        .expect("spawn");
    let outcome = rx.recv_timeout(PER_INPUT);
    if outcome.is_ok() {
        let _ = thread.join();
    } else {
        std::mem::forget(thread);
    }
    match outcome {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(format!("no fuzz target {target}")),
        Ok(Err(message)) => Err(format!("panicked: {message}")),
        Err(_) => Err(format!("took more than {PER_INPUT:?}")),
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The inputs a target starts from: its committed seeds and regression inputs, and for decoders the
/// corpus files of their format (after the option byte 0, and the first few once more after 0xFF, every
/// option on).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = support::root().join("fuzz");
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for kind in ["seeds", "regressions"] {
        for path in files_in(&fuzz.join(kind).join(target)) {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    let samples: &[&str] = match target {
        "csv" => &[
            "samples/contexts.csv",
            "samples/legacy.csv",
            "samples/users.csv",
        ],
        "json" => &["samples/contexts.json"],
        "ndjson" => &["samples/contexts.ndjson"],
        "xml" => &["samples/contexts.xml"],
        "yaml" => &["samples/contexts.yaml"],
        "markdown" => &["samples/contexts.md"],
        "template" => &["templates/std-context.yaml", "templates/user-export.yaml"],
        _ => &[],
    };
    for sample in samples {
        let mut data = std::fs::read(support::root().join(sample)).unwrap();
        if target != "template" {
            data.insert(0, 0);
        }
        out.push((sample.to_string(), data));
    }
    if target == "markdown" {
        out.extend(gfm_tables());
    }
    if target == "sql_sqlite_to_pg" {
        out.extend(sqlite_schemas());
    }
    let corpus: &[(&str, &str)] = match target {
        "csv" => &[("csv-spectrum", "csvs"), ("csv-rust-csv-examples", "")],
        "json" => &[("json-test-suite", "test_parsing")],
        "ndjson" => &[("json-test-suite", "test_parsing")],
        "xml" => &[("xml-roxmltree", ""), ("xml-quick-xml-documents", "")],
        "yaml" => &[("yaml-test-suite", "cases")],
        _ => &[],
    };
    for (folder, sub) in corpus {
        let Some(dir) = support::corpus(folder) else {
            continue;
        };
        let mut paths = files_in(&dir.join(sub));
        if target == "yaml" {
            paths = case_files(&dir.join(sub), "in.yaml");
        }
        let wanted = |p: &PathBuf| match target {
            "csv" => p.extension().is_some_and(|e| e == "csv"),
            "json" => p.extension().is_some_and(|e| e == "json"),
            "ndjson" => p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("y_")),
            "xml" => p.extension().is_some_and(|e| e == "xml"),
            _ => true,
        };
        for (i, path) in paths.into_iter().filter(wanted).enumerate() {
            let bytes = std::fs::read(&path).unwrap();
            for option in [0u8, 0xFF].into_iter().take(if i < 20 { 2 } else { 1 }) {
                let mut data = vec![option];
                data.extend_from_slice(&bytes);
                out.push((format!("{} (options {option:#x})", path.display()), data));
            }
        }
    }
    out
}

/// The GFM spec's examples that hold a pipe (its table examples among them), after the option byte 0.
fn gfm_tables() -> Vec<(String, Vec<u8>)> {
    let Some(dir) = support::corpus("markdown-gfm-spec") else {
        return Vec::new();
    };
    let examples: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("gfm_examples.json")).unwrap()).unwrap();
    examples
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let markdown = e.get("markdown")?.as_str()?;
            markdown.contains('|').then(|| {
                let mut data = vec![0];
                data.extend_from_slice(markdown.as_bytes());
                (format!("gfm example {i}"), data)
            })
        })
        .collect()
}

/// Every `CREATE` statement of the corpus's SQLite databases (tables, indexes, views, triggers).
fn sqlite_schemas() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let databases = [
        ("sqlite-chinook", "Chinook_Sqlite.sqlite"),
        ("sqlite-northwind", "northwind.db"),
        ("sqlite-sakila", "sakila.db"),
    ];
    for (folder, file) in databases {
        let Some(dir) = support::corpus(folder) else {
            continue;
        };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let db = rusqlite::Connection::open_with_flags(dir.join(file), flags).unwrap();
        let mut statement = db
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
            .unwrap();
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .unwrap();
        for row in rows {
            let (name, sql) = row.unwrap();
            out.push((format!("{file}: {name}"), sql.into_bytes()));
        }
    }
    out
}

/// The `name` files of the yaml-test-suite's cases (one level of sub-cases deep).
fn case_files(cases: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for case in files_and_dirs(cases) {
        let file = case.join(name);
        if file.is_file() {
            out.push(file);
        }
        for sub in files_and_dirs(&case) {
            if sub.join(name).is_file() {
                out.push(sub.join(name));
            }
        }
    }
    out
}

fn files_and_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn every_fuzz_seed_and_regression_input_runs_cleanly() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for &target in ferry::fuzz::TARGETS {
        let inputs = inputs(target);
        assert!(!inputs.is_empty(), "{target}: no seeds");
        counts.push(format!("{target} {}", inputs.len()));
        for (name, data) in inputs {
            if let Err(e) = guarded(target, data) {
                failures.push(format!("{target} {name}: {e}"));
            }
        }
    }
    eprintln!("fuzz inputs replayed: {}", counts.join(", "));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// xorshift64*: a fixed sequence, so a failing mutation is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One of libFuzzer's simpler mutations: flip, set, insert, erase, duplicate or splice bytes.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    const INTERESTING: &[u8] = b"\"'\\,;:\n\r\t{}[]<>&#|-!*%0\x00\xFF";
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if at < data.len() => data[at] ^= 1 << rng.below(8),
            1 if at < data.len() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 if at < data.len() => {
                let end = (at + 1 + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            4 if at < data.len() => {
                let end = (at + 1 + rng.below(32)).min(data.len());
                let piece = data[at..end].repeat(1 + rng.below(8));
                data.splice(at..at, piece);
            }
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                data.splice(at..at, other[from..end].iter().copied());
            }
            _ => data.truncate(at),
        }
    }
}

#[test]
fn fuzz_smoke_pass_of_every_target_on_stable() {
    let mut failures = Vec::new();
    for &target in ferry::fuzz::TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(target)
            .into_iter()
            .map(|(_, d)| d)
            .filter(|d| d.len() <= 16 << 10)
            .collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ target.len() as u64);
        for _ in 0..MUTATIONS {
            let mut data = seeds[rng.below(seeds.len())].clone();
            let other = seeds[rng.below(seeds.len())].clone();
            mutate(&mut rng, &mut data, &other);
            if let Err(e) = guarded(target, data.clone()) {
                let dump: String = data.iter().map(|b| format!("{b:02x}")).collect();
                failures.push(format!("{target}: {e}\n  input (hex): {dump}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Hand-made malformed quoting through the command line: strict stops at the first problem naming line,
/// column and field; lenient rejects those records (and nothing else); `--csv-lenient-quotes` reads them as
/// the csv crate does.
#[test]
fn malformed_csv_quoting_is_refused_rejected_or_read_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = "id,size,note\n\
                1,\"5 in\",ok\n\
                2,5\" disk,stray quote\n\
                3,\"a\"b,text after the quote\n\
                4,\"multi\nline\",ok\n\
                5,x,\"never closed\n\
                6,y,swallowed\n";
    std::fs::write(d.join("bad.csv"), text).unwrap();
    let strict = support::ferry(d, &["convert", "--in", "bad.csv", "--to", "out.ndjson"]);
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.csv at record 2, line 3, column 4, field \"size\": a quote inside an unquoted field"),
        "{stderr}"
    );
    assert!(!d.join("out.ndjson").exists());

    let lenient = support::ferry(
        d,
        &[
            "convert",
            "--in",
            "bad.csv",
            "--to",
            "out.ndjson",
            "--on-error",
            "lenient",
            "--rejects",
            "r.ndjson",
        ],
    );
    support::ok(&lenient);
    let ids: Vec<String> = std::fs::read_to_string(d.join("out.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["1", "4"]);
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(d.join("r.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<u64> = rejects
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4, 7], "{rejects:?}");
    assert!(rejects[2]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("never closed"));

    let as_before = support::ferry(
        d,
        &[
            "convert",
            "--in",
            "bad.csv",
            "--to",
            "all.ndjson",
            "--csv-lenient-quotes",
        ],
    );
    support::ok(&as_before);
    let all = std::fs::read_to_string(d.join("all.ndjson")).unwrap();
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(
        all.contains("\"5\\\" disk\"") && all.contains("never closed\\n6,y,swallowed\\n"),
        "{all}"
    );
}
