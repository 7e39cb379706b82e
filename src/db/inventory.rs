//! `ferry databases`: what the environment configures — `DB_TYPE` (the default kind), `DATABASE_URL` (or
//! libpq's `PG*` variables) for PostgreSQL, `DB_PATH` for SQLite, the reference document's variables — and
//! for each whether it can be reached, its server version, how many tables it has and its size. Nothing
//! shows a password: locations are printed as every other message prints them.

use serde::Serialize;

use super::{ConnectOptions, DbEndpoint};
use crate::env::Environment;
use crate::migrate::{Conn, Db};

/// One configured database.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The variable that configures it (`DATABASE_URL`, `PGHOST…`, `DB_PATH`).
    pub variable: String,
    /// `postgres` or `sqlite`.
    pub kind: String,
    /// Where it is (no password).
    pub location: String,
    /// `DB_TYPE` names this kind.
    pub default: bool,
    /// It answered.
    pub reachable: bool,
    /// The server's (or library's) version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Tables (PostgreSQL: in the `public` schema; SQLite: its own tables left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<u64>,
    /// Size in bytes (the database, or the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Why it cannot be reached or used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What `DB_TYPE` says, and every database the environment configures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// `DB_TYPE`, when set.
    pub db_type: Option<String>,
    /// A note about `DB_TYPE` (an unknown kind, or one with nothing configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The databases.
    pub databases: Vec<DatabaseInfo>,
}

impl Inventory {
    /// The lines `ferry databases` prints.
    pub fn render(&self) -> String {
        let mut out = match &self.db_type {
            Some(kind) => format!("DB_TYPE={kind}\n"),
            None => "DB_TYPE is not set\n".to_owned(),
        };
        if let Some(note) = &self.note {
            out.push_str(&format!("note: {note}\n"));
        }
        if self.databases.is_empty() {
            out.push_str("no database is configured (set DATABASE_URL or PG* for PostgreSQL, DB_PATH for SQLite)\n");
        }
        for d in &self.databases {
            let state = match (d.reachable, &d.problem) {
                (true, _) => "reachable".to_owned(),
                (false, Some(p)) => format!("NOT reachable: {p}"),
                (false, None) => "NOT reachable".to_owned(),
            };
            let mut line = format!("{:<14} {:<9} {}  {state}", d.variable, d.kind, d.location);
            if let Some(v) = &d.version {
                line.push_str(&format!(", {v}"));
            }
            if let Some(t) = d.tables {
                line.push_str(&format!(", {t} tables"));
            }
            if let Some(b) = d.size_bytes {
                line.push_str(&format!(", {}", human_bytes(b)));
            }
            if d.default {
                line.push_str("  (default)");
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// True when every configured database answered.
    pub fn all_reachable(&self) -> bool {
        self.databases.iter().all(|d| d.reachable)
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = b as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{b} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// Lists the databases `env` configures, trying each with `connect`.
pub fn list(env: &Environment, connect: &ConnectOptions) -> Inventory {
    let db_type = env.non_empty("DB_TYPE").map(str::to_ascii_lowercase);
    let mut inventory = Inventory {
        db_type: db_type.clone(),
        ..Inventory::default()
    };
    let libpq = ["PGHOST", "PGDATABASE", "PGUSER", "PGPORT"]
        .into_iter()
        .any(|v| env.non_empty(v).is_some());
    if env.non_empty("DATABASE_URL").is_some() || libpq {
        let variable = if env.non_empty("DATABASE_URL").is_some() {
            "DATABASE_URL"
        } else {
            "PG*"
        };
        inventory
            .databases
            .push(probe(variable, "postgres", env, connect));
    }
    if env.non_empty("DB_PATH").is_some() {
        inventory
            .databases
            .push(probe("DB_PATH", "sqlite", env, connect));
    }
    for d in &mut inventory.databases {
        d.default = db_type.as_deref().is_some_and(|t| {
            t == d.kind
                || (t == "postgresql" && d.kind == "postgres")
                || (t == "sqlite3" && d.kind == "sqlite")
        });
    }
    inventory.note = match db_type.as_deref() {
        Some(t) if !["postgres", "postgresql", "sqlite", "sqlite3"].contains(&t) => {
            Some(format!("DB_TYPE={t} is neither sqlite nor postgres"))
        }
        Some(t) if !inventory.databases.iter().any(|d| d.default) => Some(format!(
            "DB_TYPE={t}, but no {t} database is configured ({})",
            if t.starts_with("sqlite") {
                "set DB_PATH"
            } else {
                "set DATABASE_URL"
            }
        )),
        _ => None,
    };
    inventory
}

fn probe(variable: &str, kind: &str, env: &Environment, connect: &ConnectOptions) -> DatabaseInfo {
    let mut info = DatabaseInfo {
        variable: variable.to_owned(),
        kind: kind.to_owned(),
        ..DatabaseInfo::default()
    };
    let endpoint = match DbEndpoint::parse(kind, env) {
        Ok(Some(e)) => e,
        Ok(None) => return info,
        Err(e) => {
            info.problem = Some(crate::secret::redact(&e.to_string()).into_owned());
            return info;
        }
    };
    info.location = endpoint.to_string();
    let db = match Db::parse(kind, variable, env) {
        Ok(db) => db,
        Err(e) => {
            info.problem = Some(crate::secret::redact(&e.to_string()).into_owned());
            return info;
        }
    };
    if let Db::Sqlite(path) = &db {
        if !path.exists() {
            info.problem =
                Some("the file does not exist (a load or import would create it)".into());
            return info;
        }
        info.size_bytes = std::fs::metadata(path).ok().map(|m| m.len());
    }
    match db.open(connect, false) {
        Ok(mut conn) => {
            info.reachable = true;
            if let Err(e) = describe(&mut conn, &mut info) {
                info.problem = Some(crate::secret::redact(&e).into_owned());
            }
        }
        Err(e) => info.problem = Some(crate::secret::redact(&e.to_string()).into_owned()),
    }
    info
}

fn describe(conn: &mut Conn, info: &mut DatabaseInfo) -> std::result::Result<(), String> {
    match conn {
        Conn::Postgres(c) => {
            let row = c
                .query_one(
                    "SELECT current_setting('server_version'), \
                     (SELECT count(*) FROM pg_tables WHERE schemaname = 'public'), \
                     pg_database_size(current_database())",
                    &[],
                )
                .map_err(|e| e.to_string())?;
            info.version = Some(format!("PostgreSQL {}", row.get::<_, String>(0)));
            info.tables = Some(row.get::<_, i64>(1) as u64);
            info.size_bytes = Some(row.get::<_, i64>(2) as u64);
        }
        Conn::Sqlite(c) => {
            let (version, tables): (String, i64) = c
                .query_row(
                    "SELECT sqlite_version(), (SELECT count(*) FROM sqlite_schema WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\')",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| e.to_string())?;
            info.version = Some(format!("SQLite {version}"));
            info.tables = Some(tables as u64);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_configured_says_so_and_sizes_read_well() {
        let inventory = list(&Environment::empty(), &ConnectOptions::default());
        assert!(inventory.databases.is_empty());
        assert!(inventory.render().contains("no database is configured"));
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn a_sqlite_file_is_described_and_db_type_marks_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE a (x); CREATE TABLE b (y);")
            .unwrap();
        drop(conn);
        let env = Environment::empty()
            .with("DB_PATH", path.display().to_string())
            .with("DB_TYPE", "sqlite");
        let inventory = list(&env, &ConnectOptions::default());
        let d = &inventory.databases[0];
        assert!(d.reachable && d.default, "{d:?}");
        assert_eq!(d.tables, Some(2));
        assert!(d.version.as_deref().unwrap().starts_with("SQLite 3."));
        let missing = Environment::empty()
            .with("DB_PATH", "/nonexistent/x.db")
            .with("DB_TYPE", "postgres");
        let inventory = list(&missing, &ConnectOptions::default());
        assert!(!inventory.databases[0].reachable);
        assert!(inventory.note.as_deref().unwrap().contains("DATABASE_URL"));
    }
}
