//! `ferry verify`: checks a split output against its manifest (each part's size, SHA-256 and record count),
//! or a single file against its `.sha256` — the integrity end of the envelope.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::Args;
use sha2::{Digest as _, Sha256};

use crate::envelope::layers::source_error;
use crate::envelope::manifest::{not_encrypted, PartSet};
use crate::envelope::split::is_manifest;
use crate::envelope::KeySource;
use crate::error::{Error, Position, Result, Stage};
use crate::pipeline::{convert, ConvertJob};

const EXAMPLES: &str = "Examples:
  ferry verify contexts.manifest.json      # every part: size, SHA-256, record count
  ferry verify export.csv                  # against export.csv.sha256
  ferry verify parts.manifest.json --key-file export.key   # encrypted set: also the manifest's MAC, every chunk
  ferry verify export.ndjson.gz.enc --key-file export.key  # one encrypted file: every chunk authenticated

An encrypted set is only verified with its key (a key option, or FERRY_KEY / EXPORT_ENCRYPTION_KEY): the
key checks the manifest's MAC and authenticates every part. Without it, sizes and SHA-256 are checked and
the output says that nothing was authenticated. A file named .enc, or checked with a key option, must be a
ferry-encrypted file (--allow-plaintext lifts that).

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

    /// Check a file or set that should be encrypted (named .enc, checked with a key option) as it is when
    /// it is not. Without it such a file is refused.
    #[arg(long)]
    allow_plaintext: bool,
}

/// Runs `ferry verify`.
pub fn run(args: VerifyArgs) -> Result<()> {
    let explicit = args.keys.source();
    if crate::tenant::bundle::is_bundle_name(&args.path) {
        return super::export::verify_bundle(&args.path, explicit);
    }
    if is_manifest(&args.path) {
        return verify_manifest(&args.path, explicit, args.allow_plaintext);
    }
    verify_file(&args.path, explicit, args.allow_plaintext)
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

/// A split set: with the key (or for an unencrypted set), every part goes through the same read side as
/// `convert --in MANIFEST` — manifest structure and MAC, each part's size, SHA-256, encryption, chunks and
/// record count. Without the key, an encrypted set gets what needs none: structure, sizes, SHA-256 and
/// that every part is encrypted.
fn verify_manifest(path: &Path, explicit: Option<KeySource>, allow_plaintext: bool) -> Result<()> {
    let set = PartSet::open(path)?;
    let key = explicit.clone().or_else(KeySource::from_default_env);
    if set.is_encrypted() && key.is_none() {
        for index in 0..set.len() {
            set.check_part(index, allow_plaintext)?;
            let part = &set.manifest().parts[index];
            println!(
                "ok  {}  {} bytes  sha256 {}",
                part.file,
                part.bytes,
                &part.sha256[..16]
            );
        }
        println!(
            "ferry: checked {}: {} parts match the manifest's sizes and SHA-256, but NOT verified: the \
             parts are encrypted and no key was given, so neither the manifest's MAC nor any part was \
             authenticated",
            path.display(),
            set.len()
        );
        return Ok(());
    }
    let mut job = ConvertJob::new(path.display().to_string(), "-");
    job.key_source = explicit;
    job.allow_plaintext = allow_plaintext;
    job.validate_only = true;
    let report = convert(&job)?;
    let manifest = set.manifest();
    if report.read != manifest.total_records {
        return Err(failure(
            path,
            format!(
                "parts hold {} records, the manifest's total says {}",
                report.read, manifest.total_records
            ),
        ));
    }
    for part in &manifest.parts {
        println!(
            "ok  {}  {} records  {} bytes  sha256 {}",
            part.file,
            part.records,
            part.bytes,
            &part.sha256[..16]
        );
    }
    let proof = if set.is_encrypted() {
        "manifest authenticated"
    } else {
        "an unencrypted set has no MAC: anyone who can rewrite the manifest and the parts together \
         goes unnoticed"
    };
    println!(
        "ferry: verified {}: {} parts, {} records ({proof})",
        path.display(),
        manifest.parts.len(),
        report.read
    );
    Ok(())
}

/// A single file: its `.sha256` when there is one, and, when it is encrypted and the key is at hand, every
/// chunk authenticated. A file named `.enc`, or checked with a key option, must be encrypted.
fn verify_file(path: &Path, explicit: Option<KeySource>, allow_plaintext: bool) -> Result<()> {
    let sidecar = PathBuf::from(format!("{}.sha256", path.display()));
    let encrypted = is_encrypted_file(path)?;
    let named = crate::envelope::layers::from_extensions(path).1;
    if !encrypted && !allow_plaintext && (named || explicit.is_some()) {
        let why = if named {
            "its name ends in .enc"
        } else {
            "a key option was given to authenticate it"
        };
        return Err(failure(path, not_encrypted(why)));
    }
    let key = explicit.or_else(KeySource::from_default_env);
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
    match (encrypted, key) {
        (true, Some(key)) => {
            let bytes = authenticate(path, &key)?;
            println!(
                "ferry: authenticated every chunk of {}: {bytes} bytes of content",
                path.display()
            );
        }
        (true, None) => eprintln!(
            "ferry: {} is encrypted and no key was given: its chunks were not authenticated",
            path.display()
        ),
        _ => {}
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
