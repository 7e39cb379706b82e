//! `ferry migrate`: a whole SQLite database to PostgreSQL. This build has the plan step only:
//! `--plan` prints the translation (types with their reasons, keys, indexes, checks, foreign keys,
//! sequences, and what is not translated), `--ddl` the PostgreSQL statements in their two phases.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::db::DbEndpoint;
use crate::error::{Error, Result};
use crate::migrate::{introspect, CastRules, Plan};

/// Arguments of `ferry migrate`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ferry migrate --from sqlite://app.db --plan\n  \
                        ferry migrate --from app.db --plan --cast-rules casts.yaml\n  \
                        ferry migrate --from app.db --ddl"
)]
pub struct MigrateArgs {
    /// The source database: sqlite://PATH or a .db/.sqlite path.
    #[arg(long, value_name = "DATABASE")]
    from: String,
    /// Print the migration plan and stop.
    #[arg(long)]
    plan: bool,
    /// Print the PostgreSQL DDL (before-data and after-data phases) and stop.
    #[arg(long)]
    ddl: bool,
    /// A YAML file overriding type translation: `columns: {"table.column": type}`, `types: {"DECLARED": type}`.
    #[arg(long, value_name = "FILE")]
    cast_rules: Option<PathBuf>,
}

/// Builds the plan and prints what was asked.
pub fn run(args: MigrateArgs) -> Result<()> {
    if !args.plan && !args.ddl {
        return Err(Error::usage(
            "this build of ferry migrate only plans: add --plan or --ddl (copying is not implemented yet)",
        ));
    }
    let endpoint = DbEndpoint::parse(&args.from)?.ok_or_else(|| {
        Error::usage(format!(
            "--from {}: not a database (sqlite://PATH or a .db path)",
            args.from
        ))
    })?;
    if endpoint.database.name != "sqlite" {
        return Err(Error::usage(format!(
            "--from: ferry migrate reads SQLite databases; {} sources are not supported yet",
            endpoint.database.name
        )));
    }
    let rules = match &args.cast_rules {
        Some(path) => CastRules::load(path)?,
        None => CastRules::default(),
    };
    let path = Path::new(endpoint.connection());
    let conn = introspect::open(path)?;
    let plan = Plan::build(&conn, &path.display().to_string(), &rules)?;
    if args.plan {
        print!("{}", plan.render());
    }
    if args.ddl {
        let ddl = plan.ddl();
        println!("-- before the data");
        for stmt in &ddl.create {
            println!("{stmt};");
        }
        println!("-- after the data");
        for stmt in &ddl.after_data {
            println!("{stmt};");
        }
    }
    Ok(())
}
