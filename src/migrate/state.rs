//! The migration's state file: written before the target is touched and before and after every schema
//! step, so a killed run can be resumed (`--resume STATE`) or undone (`--rollback STATE`). What ferry is
//! about to create is written down before the statement runs (so a kill between a commit and the next
//! save never leaves an object the state does not name), and which tables are fully copied after their
//! commit; a resumed run checks the target's catalog for anything in between. It never holds a password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Stage};

/// The format version written in every state file.
pub const STATE_VERSION: u32 = 1;

/// Where a migration got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Planned; nothing created yet.
    #[default]
    Planned,
    /// Tables created; rows being copied.
    Copying,
    /// Rows copied; keys, indexes and constraints being added.
    Constraints,
    /// Schema complete; the target being read back and compared.
    Validating,
    /// Finished.
    Done,
    /// Undone: what ferry created was dropped.
    RolledBack,
}

impl Phase {
    /// True when the migration is over (nothing to resume).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack)
    }
}

/// A table whose rows are all in the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDone {
    /// Rows read from the source.
    pub read: u64,
    /// Rows written.
    pub written: u64,
    /// Rows sent to the rejects file.
    pub rejected: u64,
    /// The checksum of the written rows, as read from the source.
    pub checksum: String,
}

/// The state file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Always [`STATE_VERSION`].
    pub ferry_migrate_state: u32,
    /// The source, as given (without a password).
    pub source: String,
    /// The target, as given (without a password).
    pub target: String,
    /// The tables this migration moves, in creation order.
    pub tables: Vec<String>,
    /// `--schema-only`.
    pub schema_only: bool,
    /// `--data-only`.
    pub data_only: bool,
    /// `--cast-rules`, when given.
    pub cast_rules: Option<PathBuf>,
    /// Where it got to.
    pub phase: Phase,
    /// Tables ferry created in the target, or was about to create when the state was saved (what
    /// `--rollback` drops, those that exist).
    pub created_tables: Vec<String>,
    /// Views ferry created, or was about to (dropped first by `--rollback`).
    #[serde(default)]
    pub created_views: Vec<String>,
    /// Tables whose copy transaction had begun and whose end was not yet recorded.
    #[serde(default)]
    pub copying: Vec<String>,
    /// True when ferry created the target SQLite file.
    pub created_file: bool,
    /// Tables fully copied.
    pub finished: BTreeMap<String, TableDone>,
    /// When the file was last written (UTC, RFC 3339).
    pub updated: String,
}

impl Default for State {
    /// A new migration's state: nothing planned, created or copied yet.
    fn default() -> State {
        State {
            ferry_migrate_state: STATE_VERSION,
            source: String::new(),
            target: String::new(),
            tables: Vec::new(),
            schema_only: false,
            data_only: false,
            cast_rules: None,
            phase: Phase::Planned,
            created_tables: Vec::new(),
            created_views: Vec::new(),
            copying: Vec::new(),
            created_file: false,
            finished: BTreeMap::new(),
            updated: String::new(),
        }
    }
}

impl State {
    /// Reads a state file.
    pub fn load(path: &Path) -> Result<State> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (the state is written before the target is touched: a migration stopped before \
                 writing it changed nothing, so run it again without --resume)"
            } else {
                ""
            };
            Error::config(format!(
                "cannot read the migration state {shown}: {e}{hint}"
            ))
        })?;
        let state: State = serde_json::from_str(&text).map_err(|e| {
            Error::config(format!("{shown} is not a ferry migration state file: {e}"))
        })?;
        if state.ferry_migrate_state != STATE_VERSION {
            return Err(Error::config(format!(
                "{shown}: state format {} is not the {STATE_VERSION} this ferry writes",
                state.ferry_migrate_state
            )));
        }
        Ok(state)
    }

    /// Writes the file atomically (a temporary file renamed over it), so a kill never leaves half a state.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.updated = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let shown = path.display().to_string();
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), std::io::Error::other(e)))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut file = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .and_then(|()| file.as_file().sync_all())
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
        file.persist(path)
            .map_err(|e| Error::io(Stage::Sink, Some(&shown), e.error))?;
        Ok(())
    }
}

/// A database URL with any password removed (`postgres://u:pw@h/db` → `postgres://u@h/db`), query kept.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("password="))
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    format!("{scheme}://{authority}{path}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_state_file() {
        assert_eq!(
            without_password("postgres://me:hunter2@db:5432/app?sslmode=require"),
            "postgres://me@db:5432/app?sslmode=require"
        );
        assert_eq!(
            without_password("postgres://db/app?password=x&user=u"),
            "postgres://db/app?user=u"
        );
        assert_eq!(without_password("sqlite://a.db"), "sqlite://a.db");
        assert_eq!(without_password("app.db"), "app.db");
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.state.json");
        let mut state = State {
            source: "sqlite://a.db".into(),
            target: "postgres://u@h/db".into(),
            tables: vec!["t".into()],
            phase: Phase::Copying,
            created_tables: vec!["t".into()],
            copying: vec!["t".into()],
            ..State::default()
        };
        state.save(&path).unwrap();
        let back = State::load(&path).unwrap();
        assert_eq!(back.phase, Phase::Copying);
        assert_eq!(back.created_tables, ["t"]);
        assert_eq!(back.copying, ["t"]);
    }

    #[test]
    fn a_state_written_before_views_were_recorded_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        let mut text = serde_json::to_value(State::default()).unwrap();
        let object = text.as_object_mut().unwrap();
        object.remove("created_views");
        object.remove("copying");
        std::fs::write(&path, text.to_string()).unwrap();
        let back = State::load(&path).unwrap();
        assert!(back.created_views.is_empty() && back.copying.is_empty());
    }

    #[test]
    fn a_missing_state_says_nothing_was_changed() {
        let e = State::load(Path::new("/nonexistent/ferry.state.json")).unwrap_err();
        assert!(
            e.to_string().contains("run it again without --resume"),
            "{e}"
        );
    }
}
