//! `ferry verify`: checks a split output against its manifest (each part's size, SHA-256 and record count),
//! or a single file against its `.sha256` — the integrity end of the envelope.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use sha2::{Digest as _, Sha256};

use crate::envelope::layers::source_error;
use crate::envelope::split::{is_manifest, Manifest};
use crate::envelope::KeySource;
use crate::error::{Error, Position, Result, Stage};
use crate::pipeline::{convert, ConvertJob};

const EXAMPLES: &str = "Examples:
  ferry verify contexts.manifest.json      # every part: size, SHA-256, record count
  ferry verify export.csv                  # against export.csv.sha256
  ferry verify parts.manifest.json --key-file export.key   # encrypted parts: also every chunk authenticated
  ferry verify export.ndjson.gz.enc --key-file export.key  # one encrypted file: every chunk authenticated

Encrypted parts are only counted and authenticated when the key is given (or FERRY_KEY is set); without
it, sizes and SHA-256 are still checked.

Exit codes: 0 everything matches, 1 a part or file does not (the first one is named), 2 usage error.";

/// Arguments of `ferry verify`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct VerifyArgs {
    /// A manifest (NAME.manifest.json) or a file with a NAME.sha256 beside it.
    #[arg(value_name = "MANIFEST|FILE")]
    path: PathBuf,

    #[command(flatten)]
    keys: super::KeyArgs,
}

/// Runs `ferry verify`.
pub fn run(args: VerifyArgs) -> Result<()> {
    let key = args.keys.source().or_else(KeySource::from_default_env);
    if is_manifest(&args.path) {
        return verify_manifest(&args.path, key.as_ref());
    }
    verify_file(&args.path, key.as_ref())
}

fn failure(path: &Path, message: String) -> Error {
    Error::data(
        Stage::Source,
        Position::file(path.display().to_string()),
        message,
    )
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

fn verify_manifest(path: &Path, key: Option<&KeySource>) -> Result<()> {
    let manifest = Manifest::read(path)?;
    let countable = manifest.head.encryption.is_none() || key.is_some();
    if !countable {
        eprintln!(
            "ferry: the parts are encrypted and no key was given: checking sizes and SHA-256 only"
        );
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut records = 0;
    for part in &manifest.parts {
        let file = dir.join(&part.file);
        if !file.exists() {
            return Err(failure(
                &file,
                "the manifest lists this part, but it is missing".into(),
            ));
        }
        let (bytes, sha256) = sha256_of(&file)?;
        if bytes != part.bytes {
            return Err(failure(
                &file,
                format!(
                    "its size is {bytes} bytes, but the manifest says {}",
                    part.bytes
                ),
            ));
        }
        if sha256 != part.sha256 {
            return Err(failure(
                &file,
                format!(
                    "its SHA-256 is {sha256}, but the manifest says {}",
                    part.sha256
                ),
            ));
        }
        if !countable {
            println!(
                "ok  {}  {} bytes  sha256 {}",
                part.file,
                bytes,
                &sha256[..16]
            );
            records += part.records;
            continue;
        }
        let count = count_records(&file, &manifest.head.format, key)?;
        if count != part.records {
            return Err(failure(
                &file,
                format!(
                    "it holds {count} records, but the manifest says {}",
                    part.records
                ),
            ));
        }
        records += count;
        println!(
            "ok  {}  {} records  {} bytes  sha256 {}",
            part.file,
            count,
            bytes,
            &sha256[..16]
        );
    }
    if records != manifest.total_records {
        return Err(failure(
            path,
            format!(
                "parts hold {records} records, the manifest's total says {}",
                manifest.total_records
            ),
        ));
    }
    println!(
        "ferry: verified {}: {} parts, {records} records",
        path.display(),
        manifest.parts.len()
    );
    Ok(())
}

/// Reads a part through the whole read side (envelope and format) and counts its records.
fn count_records(file: &Path, format: &str, key: Option<&KeySource>) -> Result<u64> {
    let mut job = ConvertJob::new(file.display().to_string(), "-");
    job.input_format = Some(format.to_owned());
    job.key_source = key.cloned();
    job.validate_only = true;
    let report = convert(&job).map_err(|e| failure(file, format!("cannot be read back: {e}")))?;
    Ok(report.read)
}

/// A single file: its `.sha256` when there is one, and, when it is encrypted and the key is at hand, every
/// chunk authenticated.
fn verify_file(path: &Path, key: Option<&KeySource>) -> Result<()> {
    let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
    let encrypted = is_encrypted_file(path)?;
    let can_authenticate = encrypted && key.is_some();
    if !sidecar.exists() && !can_authenticate {
        return Err(Error::usage(format!(
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
    if sidecar.exists() {
        verify_checksum(path, &sidecar)?;
    }
    if let (true, Some(key)) = (encrypted, key) {
        let bytes = authenticate(path, key)?;
        println!(
            "ferry: authenticated every chunk of {}: {bytes} bytes of content",
            path.display()
        );
    }
    Ok(())
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
/// decompressed: that is not needed to authenticate it).
fn authenticate(path: &Path, key: &KeySource) -> Result<u64> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
    let material = key.resolve()?;
    let mut reader = crate::envelope::DecryptReader::new(std::io::BufReader::new(file), &material)
        .map_err(|e| source_error(&name, e))?;
    std::io::copy(&mut reader, &mut std::io::sink()).map_err(|e| source_error(&name, e))
}

fn verify_checksum(path: &Path, sidecar: &Path) -> Result<()> {
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
    println!(
        "ferry: verified {}: {bytes} bytes, sha256 {actual}",
        path.display()
    );
    Ok(())
}
