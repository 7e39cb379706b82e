//! What a tenant job is asked for: the root row (`--tenant users:123`, `users:email=a@b.c`, `users:all`) and
//! the subset spec file (`--spec`), which adds what the schema does not say — relations it does not
//! declare, tables to leave out, paths not to follow, lookup tables to take whole, and how each column is
//! sanitized. Both are checked when a job is built, before any database is opened.
//!
//! ```yaml
//! relations:                          # foreign keys the schema does not declare
//!   - {from: posts.author_id, to: users.id}
//! exclude: [audit_log]                # never exported, never followed
//! stop: [comments.parent_id, teams]   # a relation (by its referencing columns), or a table, not followed
//! include: [countries]                # lookup tables taken whole (as references)
//! columns:                            # table.column, or *.column for every table
//!   users.password_hash: omit         # omit | redact | hash | keep
//!   "*.api_token": redact
//!   users.email: hash
//! marker: "[REDACTED]"                # what redact writes (default [ENCRYPTED], the reference's word)
//! casts: {events.at: text}            # read a column as this type (the migrate type names)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::migrate::{CastRules, PgType};

/// The marker a redacted value becomes unless the spec says otherwise: the reference document's word.
pub const DEFAULT_MARKER: &str = "[ENCRYPTED]";

/// Which rows of the root table a job starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Select {
    /// The row whose (single-column) primary key has this value: `users:123`.
    Key(String),
    /// The row whose `column` has `value`: `users:email=a@b.c` (it must be exactly one).
    Column {
        /// The column.
        column: String,
        /// The value, as text (converted to the column's type).
        value: String,
    },
    /// Every row, each a tenant of its own: `users:all` (migrate only).
    All,
}

/// The root of a tenant: a table and which of its rows (`users:123`). In job files it is that text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Root {
    /// The root table.
    pub table: String,
    /// Which rows.
    pub select: Select,
}

impl FromStr for Root {
    type Err = Error;

    /// `TABLE:KEY`, `TABLE:COLUMN=VALUE` or `TABLE:all` (the table name is everything before the first `:`).
    fn from_str(text: &str) -> Result<Root> {
        let Some((table, rest)) = text.split_once(':') else {
            return Err(Error::config(format!(
                "--tenant {text:?}: write TABLE:KEY (users:123), TABLE:COLUMN=VALUE (users:email=a@b.c) or TABLE:all"
            )));
        };
        if table.is_empty() || rest.is_empty() {
            return Err(Error::config(format!(
                "--tenant {text:?}: both the table and the key are needed, as in users:123"
            )));
        }
        let select = match rest.split_once('=') {
            _ if rest == "all" => Select::All,
            Some((column, value)) if !column.is_empty() => Select::Column {
                column: column.to_owned(),
                value: value.to_owned(),
            },
            _ => Select::Key(rest.to_owned()),
        };
        Ok(Root {
            table: table.to_owned(),
            select,
        })
    }
}

impl TryFrom<String> for Root {
    type Error = Error;
    fn try_from(text: String) -> Result<Root> {
        text.parse()
    }
}

impl From<Root> for String {
    fn from(root: Root) -> String {
        root.to_string()
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.select {
            Select::Key(key) => write!(f, "{}:{key}", self.table),
            Select::Column { column, value } => write!(f, "{}:{column}={value}", self.table),
            Select::All => write!(f, "{}:all", self.table),
        }
    }
}

/// How a column is sanitized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Left out of the bundle (passwords, password hashes).
    Omit,
    /// Replaced by the marker (text columns; JSON columns get it as a JSON string; others become null).
    Redact,
    /// Replaced by the SHA-256 of its text, in hex (the column becomes text in the bundle).
    Hash,
    /// Exported as it is, even if its name or values look like a secret.
    Keep,
}

impl Action {
    /// The action's name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Omit => "omit",
            Action::Redact => "redact",
            Action::Hash => "hash",
            Action::Keep => "keep",
        }
    }
}

/// A relation the schema does not declare: `{from: posts.author_id, to: users.id}` (`to: users` means
/// the table's primary key; several columns are written `t.a,b`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    /// The referencing table and columns.
    pub from: String,
    /// The referenced table and columns.
    pub to: String,
}

/// The subset spec file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Spec {
    /// Relations the schema does not declare.
    pub relations: Vec<Relation>,
    /// Tables never exported or followed.
    pub exclude: Vec<String>,
    /// Relations (`table.column[,column]`) or tables not followed.
    pub stop: Vec<String>,
    /// Lookup tables taken whole.
    pub include: Vec<String>,
    /// Per column (`table.column` or `*.column`): omit, redact, hash or keep.
    pub columns: BTreeMap<String, Action>,
    /// What redact writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<String>,
    /// Column types to read with (`table.column: text`), as `--cast-rules` columns.
    pub casts: BTreeMap<String, String>,
}

/// `table.column` or `table.a,b` split into the table and its columns (at the last `.`).
pub fn table_columns(text: &str) -> Option<(String, Vec<String>)> {
    let (table, columns) = text.rsplit_once('.')?;
    let columns: Vec<String> = columns.split(',').map(|c| c.trim().to_owned()).collect();
    if table.is_empty() || columns.iter().any(String::is_empty) {
        return None;
    }
    Some((table.to_owned(), columns))
}

impl Spec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Spec> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("cannot read the spec file {shown}: {e}")))?;
        Spec::parse(&text).map_err(|e| Error::config(format!("spec file {shown}: {}", e.message())))
    }

    /// Parses and checks a spec (YAML).
    pub fn parse(text: &str) -> Result<Spec> {
        let spec: Spec = serde_yaml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        for r in &spec.relations {
            for side in [&r.from, &r.to] {
                if table_columns(side).is_none() && side != &r.to {
                    return Err(Error::config(format!(
                        "relation {side:?}: write table.column (several columns as table.a,b)"
                    )));
                }
            }
        }
        for key in spec.columns.keys().chain(spec.casts.keys()) {
            if table_columns(key).is_none_or(|(_, c)| c.len() != 1) {
                return Err(Error::config(format!(
                    "column {key:?}: write table.column or *.column"
                )));
            }
        }
        spec.cast_rules()?;
        Ok(spec)
    }

    /// The marker redacted values become.
    pub fn marker(&self) -> &str {
        self.marker.as_deref().unwrap_or(DEFAULT_MARKER)
    }

    /// The rule the spec gives `table.column` (an exact entry first, then `*.column`).
    pub fn rule(&self, table: &str, column: &str) -> Option<Action> {
        self.columns
            .get(&format!("{table}.{column}"))
            .or_else(|| self.columns.get(&format!("*.{column}")))
            .copied()
    }

    /// The casts as migrate's cast rules, every type checked.
    pub fn cast_rules(&self) -> Result<CastRules> {
        for (column, ty) in &self.casts {
            PgType::parse(ty).map_err(|e| Error::config(format!("casts {column}: {e}")))?;
        }
        Ok(CastRules {
            columns: self.casts.clone(),
            ..CastRules::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_read_and_print_in_their_three_forms() {
        let root: Root = "users:123".parse().unwrap();
        assert_eq!(root.select, Select::Key("123".into()));
        let root: Root = "users:email=a@b.c".parse().unwrap();
        assert_eq!(
            root.select,
            Select::Column {
                column: "email".into(),
                value: "a@b.c".into()
            }
        );
        assert_eq!(root.to_string(), "users:email=a@b.c");
        assert_eq!("users:all".parse::<Root>().unwrap().select, Select::All);
        for bad in ["users", ":1", "users:"] {
            assert!(bad.parse::<Root>().unwrap_err().is_config(), "{bad}");
        }
        let json = serde_json::to_string(&"t:x=1".parse::<Root>().unwrap()).unwrap();
        assert_eq!(json, "\"t:x=1\"");
    }

    #[test]
    fn a_spec_is_checked_whole() {
        let spec = Spec::parse(
            "relations: [{from: posts.author_id, to: users}]\ncolumns: {users.pw: omit, '*.token': keep}\n\
             casts: {events.at: text}\nmarker: '[REDACTED]'\n",
        )
        .unwrap();
        assert_eq!(spec.rule("users", "pw"), Some(Action::Omit));
        assert_eq!(spec.rule("other", "token"), Some(Action::Keep));
        assert_eq!(spec.rule("users", "email"), None);
        assert_eq!(spec.marker(), "[REDACTED]");
        assert_eq!(spec.cast_rules().unwrap().columns.len(), 1);
        for bad in [
            "columns: {pw: omit}",
            "columns: {users.pw: shred}",
            "casts: {t.c: 'no such type!'}",
            "relations: [{from: posts, to: users}]",
            "exclued: [x]",
        ] {
            assert!(Spec::parse(bad).unwrap_err().is_config(), "{bad}");
        }
        assert_eq!(
            table_columns("t.a, b"),
            Some(("t".into(), vec!["a".into(), "b".into()]))
        );
    }
}
