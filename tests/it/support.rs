//! Shared helpers: where things are, how to run the binary, how to decode bytes in memory.

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ferry::{format, FormatOptions, Input, Record};

/// An application writing while ferry runs: `step(1)`, `step(2)`, … on a thread of its own, 3 ms apart,
/// until `stop` is set. The thread returns how many steps ran.
pub fn writer_thread(
    stop: Arc<AtomicBool>,
    mut step: impl FnMut(i64) + Send + 'static,
) -> JoinHandle<u64> {
    thread::spawn(move || {
        let mut n: u64 = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            step(n as i64);
            thread::sleep(Duration::from_millis(3));
        }
        n
    })
}

/// SQLite's time now to the millisecond, for the `updated_at` the writers set (ties happen).
pub const SQLITE_NOW: &str = "strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// An application writing to the SQLite file `db` while ferry runs: [`writer_thread`] running the SQL that
/// `sql(i)` gives for step `i`, each step waiting up to 30 s for ferry's locks.
pub fn sqlite_writer_thread(
    db: &Path,
    stop: Arc<AtomicBool>,
    sql: impl Fn(i64) -> String + Send + 'static,
) -> JoinHandle<u64> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    writer_thread(stop, move |i| c.execute_batch(&sql(i)).unwrap())
}

/// The project root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The external corpus in ../shared/corpus, or `None` (with a note) where it is absent. Under `CI=true`
/// absence is a failure: CI must never pass by skipping the corpus.
pub fn corpus(folder: &str) -> Option<PathBuf> {
    let dir = root().join("..").join("shared").join("corpus").join(folder);
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("corpus folder {} is missing under CI=true", dir.display());
    }
    eprintln!("SKIPPED: corpus folder {} is absent", dir.display());
    None
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs the ferry binary with `args` in `dir`.
pub fn ferry(dir: &Path, args: &[&str]) -> Output {
    // A fixed `now()` keeps computed timestamps (exportedAt) the same on every run.
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1717243200")
        .env_remove("FERRY_TEMPLATES")
        .output()
        .expect("run ferry")
}

/// Runs the ferry binary in `dir` with extra environment variables, and none of the ones that would change
/// what it does from outside (database URL, keys, template folders).
pub fn ferry_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferry"));
    command
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1717243200");
    for name in [
        "FERRY_TEMPLATES",
        "DATABASE_URL",
        "FERRY_KEY",
        "EXPORT_ENCRYPTION_KEY",
        "RUST_BACKTRACE",
    ] {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run ferry")
}

/// Asserts that a run succeeded; returns its stderr.
pub fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "ferry failed:\n{stderr}");
    stderr
}

/// Decodes `bytes` as `format` with `options`, returning every item (records and errors).
pub fn decode_with(
    format: &str,
    bytes: &[u8],
    options: &FormatOptions,
) -> Vec<ferry::Result<Record>> {
    let format = format::by_name(format).expect("registered format");
    let input = Input {
        reader: Box::new(Cursor::new(bytes.to_vec())),
        name: "test-input".into(),
        file: None,
    };
    match format.decode(input, options) {
        Ok(decoder) => decoder.collect(),
        Err(e) => vec![Err(e)],
    }
}

/// Decodes `bytes` as `format` with default options.
pub fn decode(format: &str, bytes: &[u8]) -> Vec<ferry::Result<Record>> {
    decode_with(format, bytes, &FormatOptions::default())
}

/// Decodes and fails the test on the first error.
pub fn decode_ok(format: &str, bytes: &[u8], options: &FormatOptions) -> Vec<Record> {
    decode_with(format, bytes, options)
        .into_iter()
        .collect::<ferry::Result<Vec<_>>>()
        .expect("decodes")
}

/// Encodes `records` as `format` into memory.
pub fn encode(format: &str, records: &[Record], options: &FormatOptions) -> ferry::Result<Vec<u8>> {
    let format = format::by_name(format).expect("registered format");
    let sink = ferry::sink::Memory::default();
    let mut encoder = format.encode(Box::new(sink.clone()), options)?;
    for record in records {
        encoder.write_record(record)?;
    }
    encoder.finish()?;
    Ok(sink.contents())
}
