//! `ferry migrate --backup DIR`: before the target is touched, every migrated table of the source is
//! exported through the ordinary convert pipeline as `DIR/<table>.ndjson.zst` (`.enc` appended when a key
//! is given), each with its `.sha256`, and `DIR/backup.json` lists them: table, file, records, bytes,
//! SHA-256 — and, for an encrypted backup, a MAC over all of that by the rule of split sets' manifests, so
//! that `ferry verify DIR/backup.json` proves with the key that nothing was altered, added or dropped. Any
//! file reads back with `ferry convert --in DIR/<table>.ndjson.zst --to …`.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::envelope::manifest::{mac_of, ManifestMac};

use super::conn::Db;
use crate::env::Environment;
use crate::envelope::KeySource;
use crate::error::{Error, Result, Stage};
use crate::job::ConvertJob;
use crate::observe::{RunContext, Silent};
use crate::pipeline::convert;
use crate::rejects::file_stem;

/// The backup manifest format this build writes: 2 added the MAC of an encrypted backup.
pub const BACKUP_VERSION: u32 = 2;
/// The first bytes of the canonical encoding a backup manifest's MAC covers.
pub const BACKUP_MAGIC: &[u8; 8] = b"FERRYBAK";

/// One exported table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupEntry {
    /// The source table.
    pub table: String,
    /// Its file, a plain name in the manifest's folder.
    pub file: String,
    /// Records exported.
    pub records: u64,
    /// The file's size.
    pub bytes: u64,
    /// The file's SHA-256, hex.
    pub sha256: String,
}

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupManifest {
    /// The format version ([`BACKUP_VERSION`]).
    pub ferry_backup: u32,
    /// The source database (no password).
    pub source: String,
    /// When the backup was made (UTC, RFC 3339).
    pub created: String,
    /// The files' format (`ndjson`).
    pub format: String,
    /// Their compression (`zstd`).
    pub compression: String,
    /// True when every file is encrypted.
    pub encrypted: bool,
    /// The ferry that wrote it.
    pub ferry_version: String,
    /// The tables, in export order.
    pub tables: Vec<BackupEntry>,
    /// For an encrypted backup: the MAC of everything above (see [`BackupManifest::canonical`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<ManifestMac>,
}

impl BackupManifest {
    /// Reads a backup manifest; anything else is an error saying so.
    pub fn read(path: &Path) -> Result<BackupManifest> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(Stage::Source, Some(&shown), e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::config(format!(
                "{shown} is not a ferry migration backup manifest: {e}"
            ))
        })
    }

    /// True when `path` holds a backup manifest (a JSON object with `ferry_backup`).
    pub fn is_backup(path: &Path) -> bool {
        path.extension().is_some_and(|e| e == "json")
            && std::fs::read(path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .is_some_and(|v| v.get("ferry_backup").is_some())
    }

    /// The bytes the MAC covers: every field but the MAC, each text length-prefixed (4 bytes, big-endian)
    /// and each number 8 bytes big-endian, in a fixed order (docs/encryption.md, "Backup manifest MAC").
    pub fn canonical(&self) -> Vec<u8> {
        fn text(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let mut out = Vec::with_capacity(256 + self.tables.len() * 160);
        out.extend_from_slice(BACKUP_MAGIC);
        out.extend_from_slice(&self.ferry_backup.to_be_bytes());
        text(&mut out, &self.ferry_version);
        text(&mut out, &self.created);
        text(&mut out, &self.source);
        text(&mut out, &self.format);
        text(&mut out, &self.compression);
        out.push(u8::from(self.encrypted));
        out.extend_from_slice(&(self.tables.len() as u64).to_be_bytes());
        for t in &self.tables {
            text(&mut out, &t.table);
            text(&mut out, &t.file);
            out.extend_from_slice(&t.records.to_be_bytes());
            out.extend_from_slice(&t.bytes.to_be_bytes());
            text(&mut out, &t.sha256);
        }
        out
    }
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
    let mut manifest = BackupManifest {
        ferry_backup: BACKUP_VERSION,
        source: super::state::without_password(from),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        format: "ndjson".to_owned(),
        compression: "zstd".to_owned(),
        encrypted: key.is_some(),
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        tables: entries,
        mac: None,
    };
    if let Some(key) = key {
        // The key that encrypted the files seals the manifest.
        let material = key.resolve(env)?;
        manifest.mac = Some(mac_of(&manifest.canonical(), &material)?);
    }
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
    std::fs::write(&manifest_path, text + "\n")
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
    Ok(shown)
}
