//! `verify`: the integrity end of the envelope, as a library run. A split set is read through the convert
//! pipeline's own read side (manifest structure and MAC, each part's size, SHA-256, encryption, chunks and
//! record count); a single file is checked against its `.sha256` and, when encrypted and the key is at hand,
//! every chunk is authenticated. The result is data ([`Verification`]); front ends print it.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::env::Environment;
use crate::envelope::layers::source_error;
use crate::envelope::manifest::{not_encrypted, PartSet};
use crate::envelope::split::{is_manifest, PartEntry};
use crate::envelope::KeySource;
use crate::error::{Error, Position, Result, Stage};
use crate::job::ConvertJob;
use crate::migrate::backup::BackupManifest;
use crate::observe::RunContext;

/// What to verify and with which key.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifyJob {
    /// A manifest (`NAME.manifest.json`) or a file with a `NAME.sha256` beside it.
    pub path: PathBuf,
    /// The key option, if any (else `FERRY_KEY`, then `EXPORT_ENCRYPTION_KEY`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_source: Option<KeySource>,
    /// Check a file or set that should be encrypted as it is when it is not.
    pub allow_plaintext: bool,
}

/// What a verification found: everything it checked matched (a mismatch is an error naming the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// A split set, every part read and checked: `authenticated` when it is encrypted (its manifest's MAC
    /// and every chunk checked with the key); an unencrypted set has no MAC.
    Set {
        /// The manifest.
        manifest: PathBuf,
        /// Its parts.
        parts: Vec<PartEntry>,
        /// Records read from all parts.
        records: u64,
        /// True for an encrypted set (authenticated with its key).
        authenticated: bool,
    },
    /// An encrypted set checked without its key: structure, sizes, SHA-256 and that every part is
    /// encrypted — but neither the MAC nor any part authenticated.
    SetWithoutKey {
        /// The manifest.
        manifest: PathBuf,
        /// Its parts.
        parts: Vec<PartEntry>,
    },
    /// A tenant bundle (`NAME.bundle.json…`, or a split bundle's `NAME.bundle.manifest.json`): every row
    /// read and checked against its table's columns, counts and checksums and the bundle's checksum (and,
    /// encrypted, every chunk authenticated; split, every part as a set's).
    Bundle {
        /// The bundle.
        path: PathBuf,
        /// What its head and metadata say, all of it checked.
        verified: Box<crate::tenant::Verified>,
    },
    /// A single file.
    File {
        /// The file.
        path: PathBuf,
        /// Its size and SHA-256, when its `.sha256` was checked.
        checksum: Option<(u64, String)>,
        /// For an encrypted file: the bytes of content its authenticated chunks hold, or `None` when no key
        /// was at hand and nothing was authenticated.
        authenticated: Option<Option<u64>>,
    },
}

impl VerifyJob {
    /// Verifies `path`; the default key variables come from `env`.
    pub fn run(&self, env: &Environment, ctx: &RunContext) -> Result<Verification> {
        if crate::tenant::bundle::is_bundle_name(&self.path) {
            let verified = crate::tenant::verify_file(&self.path, self.key_source.as_ref(), env)?;
            return Ok(Verification::Bundle {
                path: self.path.clone(),
                verified: Box::new(verified),
            });
        }
        if is_manifest(&self.path) {
            self.verify_set(env, ctx)
        } else if BackupManifest::is_backup(&self.path) {
            self.verify_backup(env, ctx)
        } else {
            self.verify_file(env)
        }
    }

    /// A migration's backup (`DIR/backup.json`), checked like a split set: every file's name, size and
    /// SHA-256, encryption as claimed, and — read through the convert pipeline — its record count; an
    /// encrypted backup's manifest MAC with the key. Without the key an encrypted backup gets only what
    /// needs none, as a set does ([`Verification::SetWithoutKey`]). Files are listed as parts.
    fn verify_backup(&self, env: &Environment, ctx: &RunContext) -> Result<Verification> {
        let path = &self.path;
        let manifest = BackupManifest::read(path)?;
        if manifest.ferry_backup > crate::migrate::backup::BACKUP_VERSION {
            return Err(failure(
                path,
                format!(
                    "backup manifest version {} is newer than this ferry reads",
                    manifest.ferry_backup
                ),
            ));
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let key = self
            .key_source
            .clone()
            .or_else(|| KeySource::from_default_env(env));
        if manifest.encrypted {
            let Some(mac) = &manifest.mac else {
                return Err(failure(
                    path,
                    "the manifest of an encrypted backup carries no MAC, so nothing proves it was not \
                     altered (backups written before manifest version 2 have none)"
                        .to_owned(),
                ));
            };
            if let Some(key) = &key {
                let material = key.resolve(env)?;
                if !crate::envelope::manifest::mac_matches(
                    path,
                    &manifest.canonical(),
                    mac,
                    &material,
                )? {
                    return Err(failure(
                        path,
                        "the backup manifest failed authentication (its MAC does not match): it was altered \
                         after it was written, or the key is not the backup's"
                            .to_owned(),
                    ));
                }
            }
        }
        let mut parts = Vec::with_capacity(manifest.tables.len());
        let mut records = 0;
        for entry in &manifest.tables {
            let file = plain_file(path, &dir, &entry.file)?;
            let (bytes, sha256) = sha256_of(&file)?;
            if bytes != entry.bytes || sha256 != entry.sha256 {
                return Err(failure(
                    &file,
                    format!(
                        "the file has {bytes} bytes and SHA-256 {sha256}, the backup manifest says {} bytes \
                         and {}",
                        entry.bytes, entry.sha256
                    ),
                ));
            }
            if is_encrypted_file(&file)? != manifest.encrypted && !self.allow_plaintext {
                let claim = if manifest.encrypted { "" } else { " not" };
                return Err(failure(
                    &file,
                    format!("the backup manifest says its files are{claim} encrypted, and this one is not so"),
                ));
            }
            parts.push(PartEntry {
                file: entry.file.clone(),
                records: entry.records,
                bytes,
                sha256,
            });
            if manifest.encrypted && key.is_none() {
                continue;
            }
            // Read back through the convert pipeline: every chunk authenticated, every record decoded.
            let mut job = ConvertJob::new(file.display().to_string(), "-");
            job.key_source = key.clone();
            job.allow_plaintext = self.allow_plaintext;
            job.validate_only = true;
            let read = crate::pipeline::convert(&job, env, ctx)?.counts.read;
            if read != entry.records {
                return Err(failure(
                    &file,
                    format!(
                        "the file holds {read} records, the backup manifest says {} (table {})",
                        entry.records, entry.table
                    ),
                ));
            }
            records += read;
        }
        if manifest.encrypted && key.is_none() {
            return Ok(Verification::SetWithoutKey {
                manifest: path.clone(),
                parts,
            });
        }
        Ok(Verification::Set {
            manifest: path.clone(),
            parts,
            records,
            authenticated: manifest.encrypted,
        })
    }

    /// A split set: with the key (or for an unencrypted set), every part goes through the same read side
    /// as `convert --in MANIFEST`. Without the key, an encrypted set gets what needs none.
    fn verify_set(&self, env: &Environment, ctx: &RunContext) -> Result<Verification> {
        let path = &self.path;
        let set = PartSet::open(path)?;
        let key = self
            .key_source
            .clone()
            .or_else(|| KeySource::from_default_env(env));
        if set.is_encrypted() && key.is_none() {
            for index in 0..set.len() {
                set.check_part(index, self.allow_plaintext)?;
            }
            return Ok(Verification::SetWithoutKey {
                manifest: path.clone(),
                parts: set.manifest().parts.clone(),
            });
        }
        let mut job = ConvertJob::new(path.display().to_string(), "-");
        job.key_source = self.key_source.clone();
        job.allow_plaintext = self.allow_plaintext;
        job.validate_only = true;
        let report = crate::pipeline::convert(&job, env, ctx)?;
        let manifest = set.manifest();
        if report.counts.read != manifest.total_records {
            return Err(failure(
                path,
                format!(
                    "parts hold {} records, the manifest's total says {}",
                    report.counts.read, manifest.total_records
                ),
            ));
        }
        Ok(Verification::Set {
            manifest: path.clone(),
            parts: manifest.parts.clone(),
            records: report.counts.read,
            authenticated: set.is_encrypted(),
        })
    }

    /// A single file: its `.sha256` when there is one, and, when it is encrypted and the key is at hand,
    /// every chunk authenticated. A file named `.enc`, or checked with a key option, must be encrypted.
    fn verify_file(&self, env: &Environment) -> Result<Verification> {
        let path = &self.path;
        let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
        let encrypted = is_encrypted_file(path)?;
        let named = crate::envelope::layers::from_extensions(path).1;
        let explicit = self.key_source.is_some();
        if !encrypted && !self.allow_plaintext && (named || explicit) {
            let why = if named {
                "its name ends in .enc"
            } else {
                "a key option was given to authenticate it"
            };
            return Err(failure(path, not_encrypted(why)));
        }
        let key = self
            .key_source
            .clone()
            .or_else(|| KeySource::from_default_env(env));
        let can_authenticate = encrypted && key.is_some();
        if !sidecar.exists() && !can_authenticate {
            return Err(Error::config(format!(
                "{} has no checksum file {} (write one with --checksum) and is not a manifest{}",
                path.display(),
                sidecar.display(),
                if encrypted {
                    "; give its key to authenticate it"
                } else {
                    ""
                }
            )));
        }
        let checksum = if sidecar.exists() {
            Some(verify_checksum(path, &sidecar)?)
        } else {
            None
        };
        let authenticated = match (encrypted, key) {
            (true, Some(key)) => Some(Some(authenticate(path, &key, env)?)),
            (true, None) => Some(None),
            (false, _) => None,
        };
        Ok(Verification::File {
            path: path.clone(),
            checksum,
            authenticated,
        })
    }
}

fn failure(path: &Path, message: String) -> Error {
    Error::data(
        Stage::Source,
        Position::file(path.display().to_string()),
        message,
    )
}

/// A file a manifest names, when it is a plain name in the manifest's folder (no path, no `..`).
fn plain_file(manifest: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(_)), None) if !name.contains(['/', '\\']) => {
            Ok(dir.join(name))
        }
        _ => Err(failure(
            manifest,
            format!("the manifest names {name:?}, which is not a plain file name in its folder"),
        )),
    }
}

fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let name = path.display().to_string();
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, crate::envelope::split::hex(&hasher.finalize())))
}

fn is_encrypted_file(path: &Path) -> Result<bool> {
    let name = path.display().to_string();
    let mut first = [0u8; 8];
    let mut file =
        std::fs::File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    let n = file
        .read(&mut first)
        .map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    Ok(crate::envelope::is_encrypted(&first[..n]))
}

/// Reads the whole file through decryption, which checks every chunk's tag (what it holds is not
/// decompressed: that is not needed to authenticate it). Returns the bytes of content.
fn authenticate(path: &Path, key: &KeySource, env: &Environment) -> Result<u64> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    let material = key.resolve(env)?;
    let mut reader = crate::envelope::DecryptReader::new(std::io::BufReader::new(file), &material)
        .map_err(|e| source_error(&name, e))?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| source_error(&name, e))
}

/// Compares the file with its `.sha256`; returns its size and SHA-256.
fn verify_checksum(path: &Path, sidecar: &Path) -> Result<(u64, String)> {
    let text = std::fs::read_to_string(sidecar)
        .map_err(|e| Error::io(Stage::Source, Some(&sidecar.display().to_string()), e))?;
    let expected = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (bytes, actual) = sha256_of(path)?;
    if actual != expected {
        return Err(failure(
            path,
            format!("SHA-256 is {actual}, {} says {expected}", sidecar.display()),
        ));
    }
    Ok((bytes, actual))
}
