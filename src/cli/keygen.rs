//! `ferry keygen`: writes a new random 256-bit key for the envelope's encryption, readable only by its owner.

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;

const EXAMPLES: &str = "Example:
  ferry keygen export.key
  ferry convert --in contexts.ndjson --to contexts.ndjson.gz.enc --key-file \\
    export.key

The key is written as 64 hex digits to a new file with mode 0600; an existing
file is never overwritten. Keep it apart from the exports it opens.";

/// Arguments of `ferry keygen`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct KeygenArgs {
    /// Where to write the key (must not exist yet).
    #[arg(value_name = "FILE")]
    path: PathBuf,
}

/// Runs `ferry keygen`.
pub fn run(args: KeygenArgs) -> Result<()> {
    crate::envelope::keygen(&args.path)?;
    eprintln!(
        "ferry: wrote a new key to {} (mode 0600)",
        args.path.display()
    );
    Ok(())
}
