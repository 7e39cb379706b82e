//! PostgreSQL as a source stage ([`source`]: binary `COPY (SELECT …) TO STDOUT`, values typed from the column
//! types) and a sink stage ([`sink`]: binary `COPY … FROM STDIN` in batches, inside one transaction; a
//! staging table and `INSERT … ON CONFLICT` for `--on-conflict skip|overwrite|merge`), and what both
//! share: connecting (libpq's environment defaults, taken from the run's [`Environment`] when the endpoint
//! was parsed, TLS modes, retries) and turning the server's errors into ferry's with their SQLSTATE kept.

mod sink;
mod source;
mod wire;

pub(crate) use sink::qualified_name;

use std::str::FromStr as _;

use postgres::{Client, Config};

use super::{with_retries, ConnectOptions, Database, DbEndpoint};
use crate::env::Environment;
use crate::error::{DbCause, Error, Position, Result, Stage};

/// The PostgreSQL database kind.
pub static DATABASE: Database = Database {
    name: "postgres",
    schemes: &["postgres", "postgresql"],
    open_source: source::open_source,
    open_sink: sink::open_sink,
};

/// The variables libpq reads for what a URL leaves out; an endpoint keeps them for connect time.
const LIBPQ_VARIABLES: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "USER",
];

/// The part of `env` a PostgreSQL connection may read (libpq's `PG*` variables and `USER`).
pub(crate) fn libpq_environment(env: &Environment) -> Environment {
    LIBPQ_VARIABLES
        .iter()
        .filter_map(|name| env.get(name).map(|value| (*name, value)))
        .collect()
}

/// The endpoint for a bare `postgres`: `DATABASE_URL`, else libpq's `PG*` variables.
pub(crate) fn from_environment(env: &Environment) -> Result<DbEndpoint> {
    let connection = match env.get("DATABASE_URL").map(str::trim) {
        Some(url) if !url.is_empty() => url,
        _ => "postgres://",
    };
    match DbEndpoint::parse(connection, env)? {
        Some(endpoint) if endpoint.database.name == "postgres" => Ok(endpoint),
        _ => Err(Error::config("DATABASE_URL must be a postgres:// URL")),
    }
}

/// The connection settings with libpq's environment defaults filled in, and whether certificates are checked.
fn config(endpoint: &DbEndpoint, options: &ConnectOptions) -> Result<(Config, SslCheck)> {
    let connection = endpoint.connection();
    // tokio-postgres knows sslmode disable/prefer/require; verify-ca and verify-full are require plus checks.
    let mut check = SslCheck::None;
    let mut text = connection.to_owned();
    for (mode, wanted) in [("verify-full", SslCheck::Full), ("verify-ca", SslCheck::Ca)] {
        let needle = format!("sslmode={mode}");
        if text.contains(&needle) {
            text = text.replace(&needle, "sslmode=require");
            check = wanted;
        }
    }
    let mut config = if text == "postgres://" || text == "postgresql://" {
        Config::new()
    } else {
        Config::from_str(&text).map_err(|e| {
            Error::config(format!(
                "{}: not a valid connection URL: {e}",
                redacted(connection)
            ))
        })?
    };
    let env = |name: &str| endpoint.env.non_empty(name);
    if config.get_hosts().is_empty() {
        config.host(env("PGHOST").unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT").and_then(|p| p.parse().ok()) {
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        config.user(env("PGUSER").or_else(|| env("USER")).unwrap_or("postgres"));
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(db);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        }
    }
    if !text.contains("sslmode=") {
        match env("PGSSLMODE") {
            Some("disable") => {
                config.ssl_mode(postgres::config::SslMode::Disable);
            }
            Some("require") => {
                config.ssl_mode(postgres::config::SslMode::Require);
            }
            Some("verify-ca") | Some("verify-full") => {
                config.ssl_mode(postgres::config::SslMode::Require);
                check = SslCheck::Full;
            }
            _ => {}
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("ferry");
    }
    Ok((config, check))
}

/// How far a TLS server certificate is checked (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslCheck {
    /// prefer/require: encrypted, certificate not checked.
    None,
    /// verify-ca: the chain is checked, not the host name.
    Ca,
    /// verify-full: chain and host name.
    Full,
}

/// `postgres://user@host:port/db`: what errors and reports show. Never the password.
pub(crate) fn redacted(connection: &str) -> String {
    match Config::from_str(connection) {
        Ok(config) => shown_config(&config),
        Err(_) => String::from("postgres://…"),
    }
}

/// Where `endpoint` connects, as `postgres://user@host:port/db` with what libpq's variables (`PGHOST`,
/// `PGUSER`, `PGDATABASE`, …) fill in — the real target, also for a bare `postgres` — and never the
/// password.
pub(crate) fn shown(endpoint: &DbEndpoint) -> String {
    match config(endpoint, &ConnectOptions::default()) {
        Ok((config, _)) => shown_config(&config),
        Err(_) => redacted(endpoint.connection()),
    }
}

fn shown_config(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{host}{port}/{db}")
}

fn where_is(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(name)) => name.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects, retrying with backoff while the server cannot be reached (not when it refuses the login).
pub(crate) fn connect(
    endpoint: &DbEndpoint,
    options: &ConnectOptions,
    stage: Stage,
) -> Result<Client> {
    let (config, check) = config(endpoint, options)?;
    let mut builder = native_tls::TlsConnector::builder();
    if check != SslCheck::Full {
        builder.danger_accept_invalid_hostnames(true);
    }
    if check == SslCheck::None {
        builder.danger_accept_invalid_certs(true);
    }
    let tls = builder
        .build()
        .map_err(|e| Error::config(format!("cannot set up TLS: {e}")))?;
    let tls = postgres_native_tls::MakeTlsConnector::new(tls);
    // A refused login or a failed TLS handshake will fail the same way again: only an unreachable server
    // is retried.
    let client = with_retries(
        options,
        || config.connect(tls.clone()),
        |e| e.as_db_error().is_none() && !is_tls_failure(e),
    );
    client.map_err(|e| {
        let place = where_is(&config);
        let message = match e.as_db_error() {
            Some(db) => format!(
                "postgres at {place} refused the connection: {}",
                db.message()
            ),
            None if chain(&e).contains("server does not support TLS") => format!(
                "postgres at {place} does not offer TLS, and sslmode (or PGSSLMODE) requires it: turn \
                 on ssl in the server's configuration, or connect with sslmode=prefer or sslmode=disable"
            ),
            None if is_tls_failure(&e) => format!(
                "the TLS handshake with postgres at {place} failed: {}; check sslmode and the server's \
                 certificate",
                chain(&e)
            ),
            None => format!("cannot connect to postgres at {place}: {e}; is the server running?"),
        };
        let error = Error::data(stage, Position::default(), message);
        match cause(&e) {
            Some(cause) => error.with_db_cause(cause),
            None => error,
        }
    })
}

/// An error with its causes: `error performing TLS handshake: server does not support TLS`.
fn chain(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// True when connecting failed in the TLS handshake (the server offers no TLS, or its certificate does not
/// check out), not because the server could not be reached.
fn is_tls_failure(e: &postgres::Error) -> bool {
    e.to_string().starts_with("error performing TLS handshake")
}

/// The server's account of an error: its SQLSTATE, and the constraint, table and column it names.
pub(crate) fn cause(e: &postgres::Error) -> Option<DbCause> {
    let db = e.as_db_error()?;
    Some(DbCause {
        sqlstate: Some(db.code().code().to_owned()),
        constraint: db.constraint().map(str::to_owned),
        table: db.table().map(str::to_owned),
        column: db.column().map(str::to_owned),
    })
}

/// The server's message, with its detail when it gives one.
pub(crate) fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            format!("{}{detail}", db.message())
        }
        None => e.to_string(),
    }
}

/// A data error for a statement the server refused (or a connection that broke) while `what`, with the
/// server's SQLSTATE, constraint, table and column kept.
pub(crate) fn pg_error(stage: Stage, what: &str, e: &postgres::Error) -> Error {
    let error = Error::data(
        stage,
        Position::default(),
        format!("{what}: {}", message(e)),
    );
    match cause(e) {
        Some(cause) => error.with_db_cause(cause),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            redacted("postgres://me:hunter2@db.example:6543/app?sslmode=require"),
            "postgres://me@db.example:6543/app"
        );
        assert_eq!(redacted("not a url"), "postgres://…");
    }

    #[test]
    fn libpq_defaults_come_from_the_environment_the_endpoint_was_parsed_with() {
        let env = Environment::empty()
            .with("PGHOST", "db.internal")
            .with("PGPORT", "6543")
            .with("PGUSER", "app")
            .with("PGPASSWORD", "hunter2")
            .with("HOME", "/root");
        let endpoint = DbEndpoint::parse("postgres://", &env).unwrap().unwrap();
        assert!(!format!("{endpoint:?}").contains("hunter2"));
        let (settings, _) = config(&endpoint, &ConnectOptions::default()).unwrap();
        assert_eq!(where_is(&settings), "db.internal:6543");
        assert_eq!(settings.get_user(), Some("app"));
        assert_eq!(settings.get_password(), Some(&b"hunter2"[..]));
        let bare = DbEndpoint::parse("postgres", &Environment::empty())
            .unwrap()
            .unwrap();
        let (settings, _) = config(&bare, &ConnectOptions::default()).unwrap();
        assert_eq!(where_is(&settings), "localhost:5432");
        let e = DbEndpoint::parse(
            "postgres",
            &Environment::empty().with("DATABASE_URL", "x.csv"),
        )
        .unwrap_err();
        assert!(e.is_config(), "{e}");
    }

    #[test]
    fn a_bad_url_is_a_configuration_error() {
        let endpoint = DbEndpoint::parse("postgres://h:notaport/db", &Environment::empty())
            .unwrap()
            .unwrap();
        let e = config(&endpoint, &ConnectOptions::default()).unwrap_err();
        assert!(
            e.is_config() && !e.to_string().contains("notaport/db?"),
            "{e}"
        );
    }
}
