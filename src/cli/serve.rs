//! `ferry serve`: runs the HTTP service (src/serve/), and `ferry serve token add|list|remove` manages its
//! bearer tokens.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::Result;
use crate::serve::tokens::{self, Scope};

const EXAMPLES: &str = "Examples:
  # prints the token once; the token file keeps only its SHA-256
  ferry serve token add ci-bot --scope read,export,import
  ferry serve --config ferry-serve.yaml
  ferry serve --listen 0.0.0.0:3000
  curl -H \"Authorization: Bearer $TOKEN\" \\
    http://localhost:3000/api/data-migration/operations/history

Without --config, ./ferry-serve.yaml is read when it exists; without one,
the defaults serve the guide's datasets (contexts, sessions, templates) from
DB_PATH (SQLite, default ./data.sqlite) or DATABASE_URL (PostgreSQL, with
DB_TYPE=postgres). SIGTERM stops it gracefully. Open http://localhost:3000/
in a browser for the operations page (sign in with a token).";

/// Arguments of `ferry serve`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArgs {
    /// The configuration file (default: ./ferry-serve.yaml when it exists).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Address and port to listen on (default: the configuration's `listen`, else 127.0.0.1:3000).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<String>,

    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Manage the bearer tokens of the token file.
    #[command(subcommand)]
    Token(TokenAction),
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Make a token and print it (once: the file keeps only its SHA-256).
    Add {
        /// The token's name (as logs and the audit table show it).
        name: String,
        /// What it may do: read, export, import, admin (repeat or separate with commas).
        #[arg(long, value_name = "SCOPE", value_delimiter = ',', required = true)]
        scope: Vec<Scope>,
        /// Bind it to one user id: it sees and moves only that user's operations and data.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
    },
    /// List the tokens (names, scopes, users; never a token).
    List,
    /// Remove a token.
    Remove {
        /// The token's name.
        name: String,
    },
}

/// Runs `ferry serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let Some(Action::Token(action)) = args.action else {
        return crate::serve::run(crate::serve::ServeOptions {
            config: args.config,
            listen: args.listen,
        });
    };
    let config = args
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(crate::serve::DEFAULT_CONFIG)).filter(|p| p.is_file()));
    let file = crate::serve::config::token_file(config.as_deref())?;
    match action {
        TokenAction::Add { name, scope, user } => {
            let token = tokens::add(&file, &name, &scope, user.as_deref())?;
            eprintln!(
                "ferry: token {name:?} added to {} (shown once; keep it secret):",
                file.display()
            );
            println!("{token}");
        }
        TokenAction::List => {
            println!("{:<24} {:<28} user", "name", "scopes");
            for t in tokens::list(&file)? {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.name()).collect();
                println!(
                    "{:<24} {:<28} {}",
                    t.name,
                    scopes.join(","),
                    t.user.as_deref().unwrap_or("-")
                );
            }
        }
        TokenAction::Remove { name } => {
            tokens::remove(&file, &name)?;
            eprintln!("ferry: token {name:?} removed from {}", file.display());
        }
    }
    Ok(())
}
