//! Parses `--in` / `--to` into an endpoint and picks its format: the first stage of every run.
//!
//! A path's format comes from its extension chain (`export.ndjson`, `legacy.CSV`), or from
//! `--from-format` / `--to-format`, which always win. `-` is standard input or output and needs an explicit
//! format.

use std::path::{Path, PathBuf};

use crate::db::DbEndpoint;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::format::{self, Format};

/// Where records come from or go to.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Standard input (for `--in -`) or standard output (for `--to -`).
    Stdio,
    /// A file path.
    File(PathBuf),
    /// A database table or query (`sqlite://…`, `postgres://…`, `postgres`, a bare `.db` path).
    Database(DbEndpoint),
}

impl Endpoint {
    /// Parses the text of `--in` or `--to`; `postgres` and `sqlite` read `DATABASE_URL` (or libpq's `PG*`)
    /// and `DB_PATH` from `env`. A text that cannot name an endpoint is a configuration error.
    ///
    /// ```
    /// use ferry::{Endpoint, Environment};
    /// let env = Environment::empty();
    /// assert!(matches!(Endpoint::parse("-", &env).unwrap(), Endpoint::Stdio));
    /// assert!(matches!(Endpoint::parse("out.csv", &env).unwrap(), Endpoint::File(_)));
    /// assert!(matches!(Endpoint::parse("sqlite://app.db?table=t", &env).unwrap(), Endpoint::Database(_)));
    /// assert!(Endpoint::parse("", &env).is_err());
    /// ```
    pub fn parse(text: &str, env: &Environment) -> Result<Endpoint> {
        if text.is_empty() {
            return Err(Error::config("an empty path was given for --in or --to"));
        }
        if crate::secret::looks_like_libpq(text) {
            // Never echoed: it may hold a password.
            return Err(Error::config(
                "a libpq keyword/value connection string (host=… dbname=…) was given for --in or --to; \
                 ferry takes a URL: postgres://USER@HOST:PORT/DB?table=T, or `postgres` with DATABASE_URL \
                 or the PG* variables (put the password in PGPASSWORD, never on the command line)",
            ));
        }
        if let Some(database) = DbEndpoint::parse(text, env)? {
            return Ok(Endpoint::Database(database));
        }
        Ok(if text == "-" {
            Endpoint::Stdio
        } else {
            Endpoint::File(PathBuf::from(text))
        })
    }

    /// How reports and messages show an endpoint given as `text`, also one that does not parse: a database
    /// URL without its password.
    pub fn shown(text: &str, env: &Environment) -> String {
        match Endpoint::parse(text, env) {
            Ok(endpoint) => endpoint.display_name(),
            Err(_) if text.contains("://") => "(unparsable URL)".to_owned(),
            Err(_) => crate::secret::redact(text).into_owned(),
        }
    }

    /// The name used in errors and reports.
    pub fn display_name(&self) -> String {
        match self {
            Endpoint::Stdio => "-".to_owned(),
            Endpoint::File(p) => crate::secret::redact(&p.display().to_string()).into_owned(),
            Endpoint::Database(db) => db.to_string(),
        }
    }

    /// The format: the explicit name if given, else the one the file's extension names.
    pub fn format(&self, explicit: Option<&str>, flag: &str) -> Result<&'static Format> {
        if let Some(name) = explicit {
            return format::by_name(name);
        }
        match self {
            Endpoint::Stdio => Err(Error::config(format!(
                "standard input/output has no file extension; pass {flag}"
            ))),
            Endpoint::Database(db) => Err(Error::config(format!(
                "{db} is a database, not a file: {flag} does not apply"
            ))),
            Endpoint::File(path) => format_from_path(path).ok_or_else(|| {
                Error::config(format!(
                    "cannot tell the format of {} from its extension; pass {flag} (one of: {})",
                    crate::secret::redact(&path.display().to_string()),
                    format::names().join(", ")
                ))
            }),
        }
    }
}

/// The format named by the last extension of `path` that names one.
pub fn format_from_path(path: &Path) -> Option<&'static Format> {
    let name = path.file_name()?.to_str()?;
    let extensions: Vec<&str> = name.split('.').skip(1).collect();
    extensions.into_iter().rev().find_map(format::by_extension)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension_chain() {
        let fmt = |p: &str| format_from_path(Path::new(p)).map(|f| f.name);
        assert_eq!(fmt("a/b/export.ndjson"), Some("ndjson"));
        assert_eq!(fmt("legacy.CSV"), Some("csv"));
        assert_eq!(fmt("data.jsonl"), Some("ndjson"));
        assert_eq!(fmt("table.md"), Some("markdown"));
        assert_eq!(fmt("noext"), None);
    }

    #[test]
    fn unknown_schemes_are_refused_clearly() {
        let err = Endpoint::parse("mysql://u@h/db", &Environment::empty()).unwrap_err();
        assert!(
            err.is_config() && err.to_string().contains("mysql://"),
            "{err}"
        );
    }
}
