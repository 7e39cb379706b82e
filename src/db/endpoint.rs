//! Database endpoints: `sqlite://PATH`, `sqlite:PATH`, a bare `.db`/`.sqlite` path, `postgres://…`, and the
//! bare `postgres` (`DATABASE_URL`, else libpq's `PG*`) and `sqlite` (`DB_PATH`), with ferry's own URL
//! parameters (`?table=`, `?query=`) taken out and the driver's kept. The variables come from the run's
//! [`Environment`], captured by the front end; the library reads no process environment of its own.

use super::{postgres, sqlite, Database, DATABASES};
use crate::env::Environment;
use crate::error::{Error, Result};

/// File extensions that make a bare path a SQLite database.
const SQLITE_EXTENSIONS: &[&str] = &["db", "sqlite", "sqlite3", "db3"];

/// A parsed database endpoint. Its `Display` never shows a password.
#[derive(Clone)]
pub struct DbEndpoint {
    /// Which database.
    pub database: &'static Database,
    /// What the driver connects with: a file path for SQLite, a URL for PostgreSQL (ferry's own parameters
    /// removed). May hold a password: never print it.
    pub(super) connection: String,
    /// `?table=`.
    pub table: Option<String>,
    /// `?query=`.
    pub query: Option<String>,
    /// Values the query's placeholders are bound to (never spliced into it): `?1`, `?2` … on SQLite;
    /// `current_setting('ferry.p1')` … on PostgreSQL, whose `COPY` takes no parameters (set on the
    /// reading connection with `set_config`). Set by the library (`--incremental`), never by a URL.
    pub params: Vec<crate::sync::read::Param>,
    /// For PostgreSQL, libpq's variables (`PGHOST`, `PGUSER`, `PGPASSWORD`, …) from the environment the
    /// endpoint was parsed with, read at connect time for what the URL leaves out. May hold a password.
    pub(super) env: Environment,
}

impl std::fmt::Debug for DbEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DbEndpoint({self})")
    }
}

impl std::fmt::Display for DbEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.database.name == "sqlite" {
            format!("sqlite://{}", self.connection)
        } else {
            postgres::shown(self)
        };
        f.write_str(&shown)?;
        match (&self.table, &self.query) {
            (Some(table), _) => write!(f, "?table={table}"),
            (None, Some(_)) => f.write_str("?query=…"),
            (None, None) => Ok(()),
        }
    }
}

impl DbEndpoint {
    /// Parses a database endpoint, or returns `None` when `text` names a file or `-`. A bare `postgres`
    /// means `DATABASE_URL` (else libpq's `PG*` variables) and a bare `sqlite` means the file `DB_PATH`,
    /// both read from `env`; a PostgreSQL endpoint keeps libpq's variables from `env` for connect time.
    /// A URL ferry cannot use is a configuration error.
    ///
    /// ```
    /// use ferry::{db::DbEndpoint, Environment};
    /// let env = Environment::empty().with("DB_PATH", "data/app.sqlite");
    /// let e = DbEndpoint::parse("sqlite://out/app.db?table=contexts", &env).unwrap().unwrap();
    /// assert_eq!((e.database.name, e.table.as_deref()), ("sqlite", Some("contexts")));
    /// let e = DbEndpoint::parse("postgres://u:secret@db:5433/app?table=t&sslmode=require", &env).unwrap().unwrap();
    /// assert_eq!(e.to_string(), "postgres://u@db:5433/app?table=t");
    /// assert_eq!(DbEndpoint::parse("sqlite", &env).unwrap().unwrap().to_string(), "sqlite://data/app.sqlite");
    /// assert!(DbEndpoint::parse("export.csv", &env).unwrap().is_none());
    /// ```
    pub fn parse(text: &str, env: &Environment) -> Result<Option<DbEndpoint>> {
        match text {
            "postgres" | "postgresql" => return postgres::from_environment(env).map(Some),
            "sqlite" | "sqlite3" => return sqlite::from_environment(env).map(Some),
            _ => {}
        }
        if let Some((name @ ("postgres" | "postgresql" | "sqlite" | "sqlite3"), params)) =
            text.split_once('?')
        {
            return DbEndpoint::from_environment_with(name, params, env).map(Some);
        }
        let Some((scheme, rest)) = text
            .split_once("://")
            .or_else(|| sqlite_without_slashes(text))
        else {
            return Ok(bare_sqlite_path(text));
        };
        let scheme = scheme.to_ascii_lowercase();
        let database = DATABASES
            .iter()
            .find(|d| d.schemes.contains(&scheme.as_str()))
            .ok_or_else(|| {
                Error::config(format!(
                    "{scheme}:// is not a database ferry knows; use sqlite://PATH or postgres://…"
                ))
            })?;
        let (location, params) = match rest.split_once('?') {
            Some((l, p)) => (l, p),
            None => (rest, ""),
        };
        let (own, passed) = split_params(params)?;
        let connection = if database.name == "sqlite" {
            if location.is_empty() {
                return Err(Error::config(
                    "sqlite:// needs a file path, as in sqlite://data/app.db",
                ));
            }
            location.to_owned()
        } else {
            let mut url = format!("{scheme}://{location}");
            if !passed.is_empty() {
                url.push('?');
                url.push_str(&passed.join("&"));
            }
            url
        };
        let endpoint = DbEndpoint {
            database,
            connection,
            table: own.table,
            query: own.query,
            params: Vec::new(),
            env: match database.name {
                "postgres" => postgres::libpq_environment(env),
                _ => Environment::empty(),
            },
        };
        if endpoint.table.is_some() && endpoint.query.is_some() {
            return Err(Error::config(format!(
                "{endpoint}: give ?table= or ?query=, not both"
            )));
        }
        Ok(Some(endpoint))
    }

    /// `postgres?table=t` (or `sqlite?table=t`): the database the environment names, with these parameters
    /// (PostgreSQL's driver parameters, such as `sslmode=require`, are passed on).
    fn from_environment_with(name: &str, params: &str, env: &Environment) -> Result<DbEndpoint> {
        let base = match name {
            "postgres" | "postgresql" => postgres::from_environment(env)?,
            _ => sqlite::from_environment(env)?,
        };
        let (own, passed) = split_params(params)?;
        let mut connection = base.connection.clone();
        if !passed.is_empty() && base.database.name == "postgres" {
            connection.push(if connection.contains('?') { '&' } else { '?' });
            connection.push_str(&passed.join("&"));
        }
        let endpoint = DbEndpoint {
            connection,
            table: own.table,
            query: own.query,
            params: Vec::new(),
            ..base
        };
        if endpoint.table.is_some() && endpoint.query.is_some() {
            return Err(Error::config(format!(
                "{endpoint}: give ?table= or ?query=, not both"
            )));
        }
        Ok(endpoint)
    }

    /// A SQLite endpoint for the file `path`.
    pub(crate) fn sqlite_file(path: &str) -> DbEndpoint {
        DbEndpoint {
            database: &sqlite::DATABASE,
            connection: path.to_owned(),
            table: None,
            query: None,
            params: Vec::new(),
            env: Environment::empty(),
        }
    }

    /// What the driver connects with (may hold a password: never print it).
    pub(crate) fn connection(&self) -> &str {
        &self.connection
    }

    /// A copy that names the database only (no table, query or parameters).
    pub fn database_only(&self) -> DbEndpoint {
        DbEndpoint {
            table: None,
            query: None,
            params: Vec::new(),
            ..self.clone()
        }
    }

    /// A copy that names another table.
    pub fn with_table(&self, table: &str) -> DbEndpoint {
        DbEndpoint {
            table: Some(table.to_owned()),
            query: None,
            params: Vec::new(),
            ..self.clone()
        }
    }
}

/// `sqlite:path.db` (no slashes) is accepted as well.
fn sqlite_without_slashes(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix("sqlite:")?;
    Some(("sqlite", rest))
}

fn bare_sqlite_path(text: &str) -> Option<DbEndpoint> {
    let path = text.split_once('?').map_or(text, |(p, _)| p);
    let extension = std::path::Path::new(path)
        .extension()?
        .to_str()?
        .to_ascii_lowercase();
    if !SQLITE_EXTENSIONS.contains(&extension.as_str()) {
        return None;
    }
    let params = text.split_once('?').map_or("", |(_, q)| q);
    let (own, _) = split_params(params).ok()?;
    Some(DbEndpoint {
        table: own.table,
        query: own.query,
        params: Vec::new(),
        ..DbEndpoint::sqlite_file(path)
    })
}

#[derive(Default)]
struct OwnParams {
    table: Option<String>,
    query: Option<String>,
}

/// Splits URL parameters into ferry's own (`table`, `query`) and the driver's. `query=` takes the rest of
/// the URL, so SQL may contain `&`; values are percent-decoded.
fn split_params(params: &str) -> Result<(OwnParams, Vec<String>)> {
    let mut own = OwnParams::default();
    let mut passed = Vec::new();
    let mut rest = params;
    while !rest.is_empty() {
        if let Some(query) = rest.strip_prefix("query=") {
            own.query = Some(decode(query)?);
            break;
        }
        let (pair, tail) = rest.split_once('&').unwrap_or((rest, ""));
        rest = tail;
        match pair.split_once('=') {
            Some(("table", value)) => own.table = Some(decode(value)?),
            _ if !pair.is_empty() => passed.push(pair.to_owned()),
            _ => {}
        }
    }
    if own.table.as_deref() == Some("") || own.query.as_deref().is_some_and(|q| q.trim().is_empty())
    {
        return Err(Error::config("?table= and ?query= must not be empty"));
    }
    Ok((own, passed))
}

fn decode(value: &str) -> Result<String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::config("a URL parameter is not valid UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_driver_parameters_and_take_ferrys_own() {
        let e = DbEndpoint::parse(
            "postgresql://u:p%40ss@h/db?sslmode=require&table=my%20table",
            &Environment::empty(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.table.as_deref(), Some("my table"));
        assert_eq!(e.connection(), "postgresql://u:p%40ss@h/db?sslmode=require");
        assert!(!e.to_string().contains("p%40ss"), "{e}");
        let q = DbEndpoint::parse(
            "sqlite://a.db?query=SELECT * FROM t WHERE a=1 & b=2",
            &Environment::empty(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(q.query.as_deref(), Some("SELECT * FROM t WHERE a=1 & b=2"));
        assert_eq!(q.connection(), "a.db");
    }

    #[test]
    fn bare_paths_with_database_extensions_are_sqlite() {
        let e = DbEndpoint::parse("out/app.sqlite3", &Environment::empty())
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.database.name, e.connection()),
            ("sqlite", "out/app.sqlite3")
        );
        assert!(DbEndpoint::parse("out.ndjson", &Environment::empty())
            .unwrap()
            .is_none());
        assert!(DbEndpoint::parse("mysql://x/y", &Environment::empty())
            .unwrap_err()
            .is_config());
        assert!(DbEndpoint::parse(
            "sqlite://a.db?table=t&query=SELECT 1",
            &Environment::empty()
        )
        .is_err());
    }

    #[test]
    fn bare_names_take_parameters_and_show_the_real_target() {
        let env = Environment::empty()
            .with("PGHOST", "db.internal")
            .with("PGPORT", "6543")
            .with("PGUSER", "app")
            .with("PGDATABASE", "shop")
            .with("PGPASSWORD", "hunter2")
            .with("DB_PATH", "data.db");
        let e = DbEndpoint::parse("postgres?table=orders&sslmode=disable", &env)
            .unwrap()
            .unwrap();
        assert_eq!(e.table.as_deref(), Some("orders"));
        assert_eq!(
            e.to_string(),
            "postgres://app@db.internal:6543/shop?table=orders"
        );
        assert!(e.connection().contains("sslmode=disable"));
        let bare = DbEndpoint::parse("postgres", &env).unwrap().unwrap();
        assert_eq!(bare.to_string(), "postgres://app@db.internal:6543/shop");
        let s = DbEndpoint::parse("sqlite?table=t", &env).unwrap().unwrap();
        assert_eq!(s.to_string(), "sqlite://data.db?table=t");
    }

    #[test]
    fn bare_sqlite_is_the_file_db_path_names() {
        let env = Environment::empty().with("DB_PATH", "./data.sqlite");
        let e = DbEndpoint::parse("sqlite", &env).unwrap().unwrap();
        assert_eq!(
            (e.database.name, e.connection()),
            ("sqlite", "./data.sqlite")
        );
        let e = DbEndpoint::parse("sqlite", &Environment::empty()).unwrap_err();
        assert!(e.is_config() && e.to_string().contains("DB_PATH"), "{e}");
    }
}
