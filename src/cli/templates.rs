//! `ferry templates list|show|check`: what templates exist, what one says, and whether a file compiles.

use clap::{Args, Subcommand};

use crate::error::Result;
use crate::template::{Template, BUILTIN_TEMPLATES};
use crate::validate::SchemaValidator;

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
pub fn run(args: TemplatesArgs) -> Result<()> {
    match args.action {
        Action::List => list(),
        Action::Show { name } => {
            let template = Template::find(&name)?;
            print!("{}", template.text);
            Ok(())
        }
        Action::Check { file } => check(&file),
    }
}

fn list() -> Result<()> {
    let mut names: Vec<String> = BUILTIN_TEMPLATES
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    let mut dirs = vec![std::path::PathBuf::from("templates")];
    dirs.extend(std::env::var_os("FERRY_TEMPLATES").map(std::path::PathBuf::from));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if let (true, Some(stem)) = (is_yaml, path.file_stem().and_then(|s| s.to_str())) {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    println!(
        "{:<16} {:<9} {:<28} description",
        "name", "version", "source"
    );
    for name in names {
        match Template::find(&name) {
            Ok(t) => println!(
                "{:<16} {:<9} {:<28} {}",
                t.spec.name,
                t.spec.version,
                t.source.to_string(),
                t.spec.description
            ),
            Err(e) => println!("{name:<16} {:<9} {:<28} error: {e}", "-", "-"),
        }
    }
    Ok(())
}

fn check(file: &str) -> Result<()> {
    let template = Template::find(file)?;
    let compiled = template.compile()?;
    if let Some((name, schema)) = template.schema()? {
        SchemaValidator::compile(&name, &schema)?;
    }
    println!(
        "ok: template {} {} ({}) compiles: {} fields{}",
        compiled.name,
        compiled.version,
        compiled.source,
        compiled.fields().count(),
        template
            .spec
            .schema
            .as_deref()
            .map(|s| format!(", schema {s}"))
            .unwrap_or_default()
    );
    Ok(())
}
