//! `ferry formats`: the registered formats, their extensions and what survives a round trip through them.

use clap::Args;

use crate::error::Result;
use crate::format::{Fidelity, FORMATS};

/// Arguments of `ferry formats`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  ferry formats")]
pub struct FormatsArgs {}

/// Prints one line per format.
pub fn run(_args: FormatsArgs) -> Result<()> {
    println!(
        "{:<10} {:<18} {:<7} {:<9} description",
        "format", "extensions", "types", "reading"
    );
    for format in FORMATS {
        let extensions = format
            .extensions
            .iter()
            .map(|e| format!(".{e}"))
            .collect::<Vec<_>>()
            .join(" ");
        let types = match format.fidelity {
            Fidelity::Typed => "typed",
            Fidelity::Text => "text",
            Fidelity::Columns => "columns",
        };
        let reading = if format.streams { "streamed" } else { "whole" };
        println!(
            "{:<10} {:<18} {:<7} {:<9} {}",
            format.name, extensions, types, reading, format.description
        );
    }
    Ok(())
}
