//! `ferry verify`: checks a split output against its manifest (each part's size, SHA-256 and record count),
//! a single file against its `.sha256`, or a tenant bundle against its checksum — the integrity end of the
//! envelope. The checking is the
//! library's ([`crate::verify`]); this prints what it found.

use std::path::PathBuf;

use clap::Args;

use crate::env::Environment;
use crate::error::Result;
use crate::verify::{Verification, VerifyJob};

const EXAMPLES: &str = "Examples:
  # every part: size, SHA-256, record count
  ferry verify contexts.manifest.json
  # against export.csv.sha256
  ferry verify export.csv
  # encrypted set: also the manifest's MAC, every chunk
  ferry verify parts.manifest.json --key-file export.key
  # one encrypted file: every chunk authenticated
  ferry verify export.ndjson.gz.enc --key-file export.key
  # a tenant bundle: every row against its checksum and counts
  ferry verify user123.bundle.json.gz

An encrypted set is only verified with its key (a key option, or FERRY_KEY /
EXPORT_ENCRYPTION_KEY): the key checks the manifest's MAC and authenticates
every part. Without it, sizes and SHA-256 are checked and the output says that
nothing was authenticated. A file named .enc, or checked with a key option,
must be a ferry-encrypted file (--allow-plaintext lifts that).

Exit codes: 0 everything matches, 1 a part or file does not (the first one is
named), 2 usage or configuration error.";

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
pub fn run(args: VerifyArgs, env: &Environment) -> Result<()> {
    let job = VerifyJob {
        path: args.path,
        key_source: args.keys.source(),
        allow_plaintext: args.allow_plaintext,
    };
    let (ctx, _signals) = super::context(std::sync::Arc::new(crate::observe::Silent))?;
    print(&job.run(env, &ctx)?);
    Ok(())
}

/// Prints what a verification found.
fn print(found: &Verification) {
    match found {
        Verification::SetWithoutKey { manifest, parts } => {
            for part in parts {
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
                manifest.display(),
                parts.len()
            );
        }
        Verification::Set {
            manifest,
            parts,
            records,
            authenticated,
        } => {
            for part in parts {
                println!(
                    "ok  {}  {} records  {} bytes  sha256 {}",
                    part.file,
                    part.records,
                    part.bytes,
                    &part.sha256[..16]
                );
            }
            let proof = if *authenticated {
                "manifest authenticated"
            } else {
                "an unencrypted set has no MAC: anyone who can rewrite the manifest and the parts together \
                 goes unnoticed"
            };
            println!(
                "ferry: verified {}: {} parts, {records} records ({proof})",
                manifest.display(),
                parts.len(),
            );
        }
        Verification::Bundle { path, verified } => println!(
            "ferry: verified bundle {}: {} (key {}), {} rows in {} tables, checksum {}",
            path.display(),
            verified.head.tenant,
            verified.head.user_id,
            verified.meta.total_records,
            verified.head.tables.len(),
            verified.meta.checksum
        ),
        Verification::File {
            path,
            checksum,
            authenticated,
        } => {
            if let Some((bytes, sha256)) = checksum {
                println!(
                    "ferry: verified {}: {bytes} bytes, sha256 {sha256}",
                    path.display()
                );
            }
            match authenticated {
                Some(Some(bytes)) => println!(
                    "ferry: authenticated every chunk of {}: {bytes} bytes of content",
                    path.display()
                ),
                Some(None) => eprintln!(
                    "ferry: {} is encrypted and no key was given: its chunks were not authenticated",
                    path.display()
                ),
                None => {}
            }
        }
    }
}
