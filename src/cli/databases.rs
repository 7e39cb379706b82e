//! `ferry databases`: the databases the environment configures (`DB_TYPE`, `DATABASE_URL` / `PG*`,
//! `DB_PATH`), each with whether it answers, its version, tables and size — never a password.

use clap::Args;

use crate::db::inventory::list;
use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};

const EXAMPLES: &str = "Examples:
  ferry databases
  DB_TYPE=postgres DATABASE_URL=postgres://app@db/app ferry databases --json

Exit codes: 0 every configured database answered, 1 one did not.";

/// Arguments of `ferry databases`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct DatabasesArgs {
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,

    /// Seconds allowed for each connection attempt.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    connect_timeout: u64,
}

/// Runs `ferry databases`.
pub fn run(args: DatabasesArgs, env: &Environment) -> Result<()> {
    let inventory = list(env, &super::connect::options(0, args.connect_timeout));
    if args.json {
        let text = serde_json::to_string_pretty(&inventory)
            .map_err(|e| Error::io(Stage::Sink, Some("-"), std::io::Error::other(e)))?;
        println!("{text}");
    } else {
        print!("{}", inventory.render());
    }
    if inventory.all_reachable() {
        Ok(())
    } else {
        Err(Error::data(
            Stage::Source,
            Position::default(),
            "a configured database cannot be reached",
        ))
    }
}
