//! Undoing a migration: [`rollback`] (`ferry migrate --rollback STATE`) drops exactly the views and tables
//! the state file says the migration created, and a failed or cancelled first run does the same through
//! [`rollback_state`] before it returns, so the target is as it was.

use std::path::Path;

use rusqlite::Connection;

use super::catalog::{self, Object};
use super::conn::Db;
use super::state::{without_password, Phase, State};
use crate::db::{quote_ident, ConnectOptions};
use crate::env::Environment;
use crate::error::{Error, Result};

/// Drops the tables a migration created (all in one statement, without CASCADE, so anything else that
/// depends on them makes it fail rather than disappear); removes a SQLite file it created once empty.
/// Returns how many tables were dropped.
pub(crate) fn rollback_state(
    state: &mut State,
    target_db: &Db,
    connect: &ConnectOptions,
) -> Result<usize> {
    let mut target = target_db.open(connect, true)?;
    let present = target.existing_tables(&state.created_tables)?;
    let mut views = Vec::new();
    for view in &state.created_views {
        if catalog::exists(&mut target, &Object::View(view.clone()))? {
            views.push(quote_ident(view));
        }
    }
    // Its views first (they depend on its tables), all in one transaction. PostgreSQL drops a list in
    // one statement; SQLite takes one name per DROP.
    let tables: Vec<String> = present.iter().map(|t| quote_ident(t)).collect();
    let statements: Vec<String> = match target_db {
        Db::Postgres(_) => [("VIEW", &views), ("TABLE", &tables)]
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(kind, names)| format!("DROP {kind} {}", names.join(", ")))
            .collect(),
        Db::Sqlite(_) => views
            .iter()
            .map(|v| format!("DROP VIEW {v}"))
            .chain(tables.iter().map(|t| format!("DROP TABLE {t}")))
            .collect(),
    };
    if !statements.is_empty() {
        let sql = format!("BEGIN;\n{};\nCOMMIT", statements.join(";\n"));
        target.exec(&sql).map_err(|r| {
            target.rollback();
            r.error(&target_db.label(), "rolling back")
        })?;
    }
    if let (Db::Sqlite(path), true) = (target_db, state.created_file) {
        drop(target);
        let empty = Connection::open(path)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .is_ok_and(|n| n == 0);
        if empty {
            let _ = std::fs::remove_file(path);
        }
    }
    state.phase = Phase::RolledBack;
    Ok(present.len())
}

/// `ferry migrate --rollback STATE`: undoes a migration (finished or not). `to` overrides the target the
/// state names (for a password in the URL); `env` is read for a bare `postgres` or `sqlite`. Returns the
/// tables the migration created, now dropped.
pub fn rollback(
    state_path: &Path,
    to: Option<&str>,
    env: &Environment,
    connect: &ConnectOptions,
) -> Result<Vec<String>> {
    let mut state = State::load(state_path)?;
    if state.phase == Phase::RolledBack {
        return Err(Error::config(format!(
            "{}: that migration was already rolled back",
            state_path.display()
        )));
    }
    let target = match to {
        Some(to) if without_password(to) != state.target => {
            return Err(Error::config(format!(
                "{} is the state of a migration into {}, not {}",
                state_path.display(),
                state.target,
                without_password(to)
            )))
        }
        Some(to) => to.to_owned(),
        None => state.target.clone(),
    };
    let target_db = Db::parse(&target, "--to", env)?;
    let tables = state.created_tables.clone();
    rollback_state(&mut state, &target_db, connect)?;
    state.save(state_path)?;
    Ok(tables)
}
