//! `ferry templates list|show|check`: what templates exist, what one says, and whether a file compiles.
//! Finding, listing and checking are the library's ([`TemplateSearch`]); this prints what they return.

use clap::{Args, Subcommand};

use crate::env::Environment;
use crate::error::Result;
use crate::template::TemplateSearch;

const EXAMPLES: &str = "Examples:
  ferry templates list
  ferry templates show std-context
  ferry templates check my-template.yaml";

/// Arguments of `ferry templates`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct TemplatesArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the templates found in ./templates, $FERRY_TEMPLATES and the built-in ones.
    List,
    /// Print a template's YAML.
    Show {
        /// A template name or path.
        name: String,
    },
    /// Load and compile a template (and its schema), reporting every problem.
    Check {
        /// A template name or path.
        file: String,
    },
}

/// Runs `ferry templates`.
pub fn run(args: TemplatesArgs, env: &Environment) -> Result<()> {
    let search = TemplateSearch::new(env);
    match args.action {
        Action::List => {
            println!(
                "{:<16} {:<9} {:<28} description",
                "name", "version", "source"
            );
            for listed in search.list() {
                match listed.loaded {
                    Ok((version, source, description)) => println!(
                        "{:<16} {version:<9} {source:<28} {description}",
                        listed.name
                    ),
                    Err(e) => println!("{:<16} {:<9} {:<28} error: {e}", listed.name, "-", "-"),
                }
            }
        }
        Action::Show { name } => print!("{}", search.find(&name)?.text),
        Action::Check { file } => {
            let checked = search.check(&file)?;
            println!(
                "ok: template {} {} ({}) compiles: {} fields{}",
                checked.name,
                checked.version,
                checked.source,
                checked.fields,
                checked
                    .schema
                    .map(|s| format!(", schema {s}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
