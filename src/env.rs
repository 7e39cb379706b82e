//! The environment a run may read, captured once by the front end: the CLI takes the process's variables,
//! the HTTP service gives the ones its configuration names. The library never calls `std::env::var` on its
//! own, so a job means the same thing whoever runs it, and a service's requests cannot reach the server's
//! own environment. Values are secrets as often as not (`DATABASE_URL`, `PGPASSWORD`, `FERRY_KEY`): `Debug`
//! shows names only.

use std::collections::BTreeMap;

/// Variables a run reads: `DATABASE_URL` and libpq's `PG*` for `postgres`, `DB_PATH` for `sqlite`,
/// `FERRY_KEY` / `EXPORT_ENCRYPTION_KEY` and the ones `--key-env` / `--passphrase-env` name, `FERRY_TEMPLATES`,
/// `SOURCE_DATE_EPOCH`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    /// No variables at all.
    pub fn empty() -> Environment {
        Environment::default()
    }

    /// Every variable of this process whose name and value are valid UTF-8.
    pub fn from_process() -> Environment {
        Environment {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The value of `name` when it is set and not empty (libpq treats an empty variable as unset).
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// True when `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    /// Sets `name` (builder style, for services and tests).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Environment {
        self.set(name, value);
        self
    }

    /// Sets `name`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: &str) {
        self.vars.remove(name);
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values hold passwords and keys.
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Environment {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Environment {
        Environment {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_value() {
        let env = Environment::empty().with("PGPASSWORD", "hunter2");
        let shown = format!("{env:?}");
        assert!(
            shown.contains("PGPASSWORD") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn empty_values_count_as_unset_where_libpq_says_so() {
        let env: Environment = [("PGHOST", ""), ("PGPORT", "5433")].into_iter().collect();
        assert_eq!(env.get("PGHOST"), Some(""));
        assert_eq!(env.non_empty("PGHOST"), None);
        assert_eq!(env.non_empty("PGPORT"), Some("5433"));
    }
}
