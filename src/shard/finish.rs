//! The end of a sharded run with a file output: every shard wrote its own part set (its parts and its own
//! manifest, complete or absent); [`finish`] merges them into the one set the unsharded job would have
//! written — parts renumbered in shard order, one manifest, sealed with its MAC when the parts are encrypted
//! (the rule of [`crate::envelope::manifest`]) — so `ferry verify` and `--in NAME.manifest.json` read it.
//!
//! ```text
//! out.shard-00000-00001.ndjson …  out.shard-00000.manifest.json ─┐
//! out.shard-00001-00001.ndjson …  out.shard-00001.manifest.json ─┼─► out-00001.ndjson … + out.manifest.json
//! …                                                              ─┘
//! ```
//!
//! The merged parts are hard links made before the merged manifest is renamed into place, and the shards'
//! files are removed only after it: a finish that is interrupted can be run again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ShardedJob;
use crate::env::Environment;
use crate::envelope::manifest::{seal, PartSet, MANIFEST_VERSION};
use crate::envelope::split::{Manifest, PartEntry, PartNames};
use crate::error::{Error, Position, Result, Stage};
use crate::job::Job;

/// What [`finish`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finished {
    /// The merged manifest.
    pub manifest: String,
    /// Parts in the merged set.
    pub parts: usize,
    /// Records in the merged set.
    pub records: u64,
    /// True when an earlier finish had already merged the set (nothing was done).
    pub already: bool,
}

fn names(output: &Path) -> PartNames {
    PartNames::new(output, crate::pipeline::is_envelope_extension)
}

/// The output shard `index` of a job writing `output` writes to: `out.ndjson.gz` → `out.shard-00003.ndjson.gz`.
pub fn shard_output(output: &Path, index: usize) -> PathBuf {
    let file = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let stem = names(output)
        .manifest()
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".manifest.json")
                .to_owned()
        })
        .unwrap_or_default();
    let suffix = &file[stem.len().min(file.len())..];
    output.with_file_name(format!("{stem}.shard-{index:05}{suffix}"))
}

/// The manifest a shard writing `output` leaves when it is done.
pub fn shard_manifest(output: &Path) -> PathBuf {
    names(output).manifest()
}

/// Merges the shards' part sets of `job` (a convert job with a file output) into one. Every shard must be
/// done; an encrypted set needs the job's key, for the merged manifest's MAC.
pub fn finish(job: &ShardedJob, env: &Environment) -> Result<Finished> {
    let Job::Convert(convert) = &job.job else {
        return Err(Error::config(
            "ferry shards finish merges a convert job's file outputs; a database target needs no finish",
        ));
    };
    if crate::db::DbEndpoint::parse(&convert.output, env)?.is_some() {
        return Err(Error::config(
            "the job loads a database: each shard committed its own rows, so there is nothing to merge \
             (ferry shards status says whether every shard is done)",
        ));
    }
    let output = Path::new(&convert.output);
    let merged = names(output);
    let manifests: Vec<PathBuf> = (0..job.shards.len())
        .map(|i| shard_manifest(&shard_output(output, i)))
        .collect();
    if merged.manifest().exists() && manifests.iter().all(|m| !m.exists()) {
        let set = PartSet::open(&merged.manifest())?;
        return Ok(Finished {
            manifest: merged.manifest().display().to_string(),
            parts: set.len(),
            records: set.manifest().total_records,
            already: true,
        });
    }
    let missing: Vec<String> = manifests
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.exists())
        .map(|(i, _)| i.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::data(
            Stage::Sink,
            Position::default(),
            format!(
                "shards {} are not done (no manifest): run them, then finish again",
                missing.join(", ")
            ),
        ));
    }
    let sets = manifests
        .iter()
        .map(|m| PartSet::open(m))
        .collect::<Result<Vec<_>>>()?;
    let input_key = crate::envelope::layers::InputKey::resolve(convert.key_source.as_ref(), env)?;
    let key = match sets[0].is_encrypted() {
        true => Some(input_key.material(&merged.manifest().display().to_string())?),
        false => None,
    };
    if let Some(material) = key {
        for set in &sets {
            set.authenticate(material)?;
        }
    }
    let head = sets[0].manifest().head.clone();
    let mut parts = Vec::new();
    for set in &sets {
        if set.manifest().head != head {
            return Err(Error::data(
                Stage::Sink,
                Position::file(set.path().display().to_string()),
                "this shard's parts differ in format, compression or encryption from shard 0's: the shards \
                 ran with different jobs",
            ));
        }
        for (i, entry) in set.manifest().parts.iter().enumerate() {
            let number = parts.len() + 1;
            let to = merged.part(number);
            link(&set.part_path(i), &to)?;
            parts.push(PartEntry {
                file: file_name(&to),
                ..entry.clone()
            });
        }
    }
    let mut manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        head,
        total_records: parts.iter().map(|p| p.records).sum(),
        parts,
        incremental: None,
        mac: None,
    };
    if let Some(material) = key {
        seal(&mut manifest, material)?;
    }
    write_manifest(&merged.manifest(), &manifest)?;
    for set in &sets {
        for i in 0..set.len() {
            let _ = std::fs::remove_file(set.part_path(i));
        }
        let _ = std::fs::remove_file(set.path());
    }
    Ok(Finished {
        manifest: merged.manifest().display().to_string(),
        parts: manifest.parts.len(),
        records: manifest.total_records,
        already: false,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Makes `to` the same file as `from` (a hard link; a copy where the file system has none). A `to` left by
/// an interrupted finish is replaced.
fn link(from: &Path, to: &Path) -> Result<()> {
    let fail = |e| Error::io(Stage::Sink, Some(&to.display().to_string()), e);
    if to.exists() {
        std::fs::remove_file(to).map_err(fail)?;
    }
    std::fs::hard_link(from, to)
        .or_else(|_| std::fs::copy(from, to).map(drop))
        .map_err(fail)
}

/// Writes the merged manifest under a temporary name in its folder, then renames it into place.
fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
    let name = path.display().to_string();
    let fail = |e| Error::io(Stage::Sink, Some(&name), e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| fail(std::io::Error::other(e)))?;
    file.write_all(&json)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.as_file().sync_all())
        .map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
