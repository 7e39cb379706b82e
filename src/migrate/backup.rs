//! `ferry migrate --backup DIR`: before the target is touched, every migrated table of the source is
//! exported through the ordinary convert pipeline as `DIR/<table>.ndjson.zst` (`.enc` appended when a key
//! is given), each with its `.sha256`, and `DIR/backup.json` lists them: table, file, records, bytes,
//! SHA-256. Any file reads back with `ferry convert --in DIR/<table>.ndjson.zst --to …`.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use super::conn::Db;
use crate::env::Environment;
use crate::envelope::KeySource;
use crate::error::{Error, Result, Stage};
use crate::job::ConvertJob;
use crate::observe::{RunContext, Silent};
use crate::pipeline::convert;
use crate::rejects::file_stem;

#[derive(Serialize)]
struct BackupEntry {
    table: String,
    file: String,
    records: u64,
    bytes: u64,
    sha256: String,
}

#[derive(Serialize)]
struct BackupManifest {
    ferry_backup: u32,
    source: String,
    created: String,
    format: &'static str,
    compression: &'static str,
    encrypted: bool,
    ferry_version: &'static str,
    tables: Vec<BackupEntry>,
}

/// Exports `tables` of the source into `dir`; returns the manifest's path. `from` is the source as the job
/// gave it (the manifest shows it without a password). Each export is a convert run with the migration's
/// environment and cancellation token.
pub fn backup(
    from: &str,
    db: &Db,
    tables: &[String],
    dir: &Path,
    key: Option<&KeySource>,
    (env, ctx): (&Environment, &RunContext),
) -> Result<String> {
    let quiet = RunContext {
        observer: std::sync::Arc::new(Silent),
        cancel: ctx.cancel.clone(),
    };
    let manifest_path = dir.join("backup.json");
    let shown = manifest_path.display().to_string();
    if manifest_path.exists() {
        return Err(Error::config(format!(
            "{shown} exists: choose an empty --backup directory (a backup is never overwritten)"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
    let mut taken = HashSet::new();
    let mut entries = Vec::new();
    for table in tables {
        let mut stem = file_stem(table);
        while !taken.insert(stem.clone()) {
            stem.push('_');
        }
        let file = format!(
            "{stem}.ndjson.zst{}",
            if key.is_some() { ".enc" } else { "" }
        );
        let path = dir.join(&file);
        let mut job = ConvertJob::new(db.table_url(table), path.display().to_string());
        job.checksum = true;
        job.encrypt = key.is_some();
        job.key_source = key.cloned();
        let report = convert(&job, env, &quiet)?;
        let digest_file = format!("{}.sha256", path.display());
        let sha256 = std::fs::read_to_string(&digest_file)
            .ok()
            .and_then(|t| t.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        entries.push(BackupEntry {
            table: table.clone(),
            file,
            records: report.counts.written,
            bytes,
            sha256,
        });
    }
    let manifest = BackupManifest {
        ferry_backup: 1,
        source: super::state::without_password(from),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        format: "ndjson",
        compression: "zstd",
        encrypted: key.is_some(),
        ferry_version: env!("CARGO_PKG_VERSION"),
        tables: entries,
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
    std::fs::write(&manifest_path, text + "\n")
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
    Ok(shown)
}
