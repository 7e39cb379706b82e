//! Sanitizing, before anything is written: what each column of a tenant's rows becomes in the bundle.
//! Secure by default — a column whose name says it holds a password is left out, one whose name says it
//! holds a token, secret or key is redacted, and any other text value that looks like a secret (a password
//! hash, a JWT, a provider's API key, a private key) is redacted value by value — and the spec overrides it
//! per column (`omit`, `redact`, `hash`, `keep`). Every column so treated is listed in the export report.
//!
//! Redacted text becomes the marker (`[ENCRYPTED]`, the reference document's word, or the spec's); a JSON
//! column gets the marker as a JSON string; a binary column becomes null. Name rules apply to text-like
//! columns only (a `token_count` integer is no secret); password names apply to every column.

use std::sync::LazyLock;

use regex::RegexSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::spec::{Action, Spec};
use crate::migrate::value::Datum;
use crate::migrate::PgType;

/// Values that are secrets whatever their column is called: password hashes (bcrypt, argon2, scrypt,
/// PBKDF2, crypt(3)), JSON Web Tokens, the API keys of common providers, PEM private keys.
static SECRET_VALUES: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        r"^\$2[abxy]?\$\d{2}\$[./A-Za-z0-9]{53}$",
        r"^\$argon2(id|i|d)\$",
        r"^\$(scrypt|pbkdf2(-sha\d+)?|[156y])\$[^\s]{8,}$",
        r"^(pbkdf2_sha(1|256|512)|bcrypt_sha256|argon2|scrypt)\$[^\s]{8,}$",
        r"^eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*$",
        r"^(sk|rk|pk)_(live|test)_[A-Za-z0-9]{10,}$",
        r"^(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})$",
        r"^xox[abprs]-[A-Za-z0-9-]{10,}$",
        r"^(AKIA|ASIA)[0-9A-Z]{16}$",
        r"^AIza[0-9A-Za-z_-]{35}$",
        r"^ya29\.[0-9A-Za-z_-]{20,}$",
        r"-----BEGIN ([A-Z]+ )*PRIVATE KEY-----",
    ])
    .unwrap_or_else(|_| RegexSet::empty())
});

/// The words of a column name: `accessToken`, `access_token` and `ACCESS-TOKEN` all give `access`, `token`.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            prev_lower = false;
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            continue;
        }
        if c.is_uppercase() && prev_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// What a column's name alone says about it.
pub fn by_name(name: &str) -> Option<(Action, &'static str)> {
    let words = words(name);
    let joined: String = words.concat();
    let has = |w: &str| words.iter().any(|x| x == w);
    if joined.contains("password")
        || joined.contains("passwd")
        || has("pwd")
        || joined.contains("passphrase")
    {
        return Some((Action::Omit, "its name says it holds a password"));
    }
    let secret = has("token")
        || has("tokens")
        || has("secret")
        || has("credential")
        || has("credentials")
        || joined.contains("apikey")
        || joined.contains("privatekey")
        || joined.contains("accesskey")
        || joined.contains("secretkey")
        || joined.contains("authkey")
        || (has("recovery") && (has("code") || has("codes")));
    secret.then_some((
        Action::Redact,
        "its name says it holds a token, secret or key",
    ))
}

/// True when a text value looks like a secret whatever its column is called.
pub fn looks_secret(text: &str) -> bool {
    text.len() >= 16 && SECRET_VALUES.is_match(text)
}

fn text_like(ty: &PgType) -> bool {
    matches!(
        ty,
        PgType::Text | PgType::Varchar(_) | PgType::Other(_) | PgType::Jsonb | PgType::Bytea
    )
}

/// One column that was sanitized, as the export report lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Treated {
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
    /// `omit`, `redact`, `hash`, or `redact-values` (only the values that looked like secrets).
    pub action: String,
    /// Why: the name rule, the spec, or the kind of value found.
    pub reason: String,
    /// Values replaced (omitted columns: the rows left without it).
    pub values: u64,
}

/// What happens to one column.
#[derive(Debug, Clone)]
struct Rule {
    /// The action, `None` for "exported, values looked at".
    action: Option<Action>,
    reason: String,
    ty: PgType,
}

/// Sanitizes the rows of one table.
#[derive(Debug, Clone)]
pub struct TableSanitizer {
    table: String,
    rules: Vec<Rule>,
    columns: Vec<String>,
    marker: String,
    counts: Vec<u64>,
    sanitize: bool,
}

impl TableSanitizer {
    /// The rules for `columns` (name and type, in read order) of `table`; `sanitize: false` keeps
    /// everything (`--no-sanitize`, allowed only into an encrypted bundle).
    pub fn new(
        table: &str,
        columns: &[(String, PgType)],
        spec: &Spec,
        sanitize: bool,
    ) -> TableSanitizer {
        let rules = columns
            .iter()
            .map(|(name, ty)| {
                let (action, reason) = match (sanitize, spec.rule(table, name), by_name(name)) {
                    (false, _, _) => (Some(Action::Keep), "--no-sanitize".to_owned()),
                    (true, Some(action), _) => (Some(action), "the spec says so".to_owned()),
                    (true, None, Some((Action::Redact, _))) if !text_like(ty) => {
                        (None, String::new())
                    }
                    (true, None, Some((action, why))) => (Some(action), why.to_owned()),
                    (true, None, None) => (None, String::new()),
                };
                Rule {
                    action,
                    reason,
                    ty: ty.clone(),
                }
            })
            .collect();
        TableSanitizer {
            table: table.to_owned(),
            rules,
            columns: columns.iter().map(|(n, _)| n.clone()).collect(),
            marker: spec.marker().to_owned(),
            counts: vec![0; columns.len()],
            sanitize,
        }
    }

    /// The exported columns with the type each has in the bundle (hashed columns are text).
    pub fn exported(&self) -> Vec<(String, PgType)> {
        self.columns
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.action != Some(Action::Omit))
            .map(|(name, r)| {
                let ty = match r.action {
                    Some(Action::Hash) => PgType::Text,
                    _ => r.ty.clone(),
                };
                (name.clone(), ty)
            })
            .collect()
    }

    /// The columns left out.
    pub fn omitted(&self) -> Vec<String> {
        self.columns
            .iter()
            .zip(&self.rules)
            .filter(|(_, r)| r.action == Some(Action::Omit))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A row as read, sanitized: omitted columns dropped, the others redacted, hashed or kept.
    pub fn apply(&mut self, row: Vec<Datum>) -> Vec<Datum> {
        let mut out = Vec::with_capacity(row.len());
        for (i, (datum, rule)) in row.into_iter().zip(&self.rules).enumerate() {
            let null = datum == Datum::Null;
            let value = match rule.action {
                Some(Action::Omit) => {
                    self.counts[i] += 1;
                    continue;
                }
                Some(Action::Keep) => datum,
                Some(Action::Redact) if null => datum,
                Some(Action::Redact) => {
                    self.counts[i] += 1;
                    self.redacted(&rule.ty)
                }
                Some(Action::Hash) if null => datum,
                Some(Action::Hash) => {
                    self.counts[i] += 1;
                    Datum::Text(hash_hex(&datum))
                }
                None => match &datum {
                    Datum::Text(t) if self.sanitize && looks_secret(t) => {
                        self.counts[i] += 1;
                        self.redacted(&rule.ty)
                    }
                    _ => datum,
                },
            };
            out.push(value);
        }
        out
    }

    fn redacted(&self, ty: &PgType) -> Datum {
        match ty {
            PgType::Jsonb => Datum::Json(serde_json::Value::String(self.marker.clone()), None),
            PgType::Varchar(n) if (*n as usize) < self.marker.chars().count() => Datum::Null,
            PgType::Text | PgType::Varchar(_) | PgType::Other(_) => {
                Datum::Text(self.marker.clone())
            }
            _ => Datum::Null,
        }
    }

    /// What was done to each column, for the report (columns left as they are are not listed).
    pub fn treated(&self) -> Vec<Treated> {
        let mut out = Vec::new();
        for ((column, rule), values) in self.columns.iter().zip(&self.rules).zip(&self.counts) {
            let (action, reason) = match rule.action {
                Some(Action::Keep) => continue,
                Some(action) => (action.name().to_owned(), rule.reason.clone()),
                None if *values > 0 => (
                    "redact-values".to_owned(),
                    "values that look like password hashes, tokens or keys".to_owned(),
                ),
                None => continue,
            };
            out.push(Treated {
                table: self.table.clone(),
                column: column.clone(),
                action,
                reason,
                values: *values,
            });
        }
        out
    }
}

/// SHA-256 in hex of a value's text (JSON for values that are not text).
fn hash_hex(datum: &Datum) -> String {
    let text = match datum {
        Datum::Text(t) => t.clone(),
        other => other.to_json().to_string(),
    };
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_what_a_column_holds() {
        for name in [
            "password",
            "password_hash",
            "passwordHash",
            "hashed_password",
            "user_pwd",
            "PASSWD",
        ] {
            assert_eq!(by_name(name).map(|r| r.0), Some(Action::Omit), "{name}");
        }
        for name in [
            "access_token",
            "accessToken",
            "refresh_token",
            "api_key",
            "apiKey",
            "client_secret",
            "totp_secret",
            "private_key",
            "aws_secret_access_key",
            "credentials",
            "recovery_codes",
        ] {
            assert_eq!(by_name(name).map(|r| r.0), Some(Action::Redact), "{name}");
        }
        for name in [
            "email",
            "tokenizer",
            "keynote",
            "secretary",
            "username",
            "posted_at",
            "monkey",
        ] {
            assert_eq!(by_name(name), None, "{name}");
        }
    }

    #[test]
    fn values_that_are_secrets_are_recognised() {
        let bcrypt = format!("$2b$12${}", "a".repeat(53));
        for v in [
            bcrypt.as_str(),
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "pbkdf2_sha256$600000$salt$hash0123456789",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_nature",
            "sk_live_0123456789abcdefABCDEF",
            "ghp_0123456789abcdefghij0123456789abcdef",
            "AKIAIOSFODNN7EXAMPLE",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
        ] {
            assert!(looks_secret(v), "{v}");
        }
        for v in [
            "hello world, this is a post",
            "2024-01-01T00:00:00Z",
            "john@example.com",
            "$2 off today only!!",
        ] {
            assert!(!looks_secret(v), "{v}");
        }
    }

    #[test]
    fn rows_lose_passwords_and_tokens_and_the_spec_wins() {
        let columns = vec![
            ("id".to_owned(), PgType::BigInt),
            ("password_hash".to_owned(), PgType::Text),
            ("access_token".to_owned(), PgType::Text),
            ("token_count".to_owned(), PgType::BigInt),
            ("email".to_owned(), PgType::Text),
            ("bio".to_owned(), PgType::Text),
            ("api_key".to_owned(), PgType::Text),
        ];
        let spec = Spec::parse("columns: {users.email: hash, users.api_key: keep}").unwrap();
        let mut s = TableSanitizer::new("users", &columns, &spec, true);
        let row = vec![
            Datum::Int(1),
            Datum::Text("$2b$12$whatever".into()),
            Datum::Text("ya29.secret".into()),
            Datum::Int(3),
            Datum::Text("a@b.c".into()),
            Datum::Text("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_nature".into()),
            Datum::Text("kept-on-purpose".into()),
        ];
        let out = s.apply(row);
        assert_eq!(out.len(), 6);
        assert_eq!(out[1], Datum::Text(DEFAULT_MARKER_TEXT.into()));
        assert_eq!(out[2], Datum::Int(3));
        assert!(matches!(&out[3], Datum::Text(h) if h.len() == 64));
        assert_eq!(out[4], Datum::Text(DEFAULT_MARKER_TEXT.into()));
        assert_eq!(out[5], Datum::Text("kept-on-purpose".into()));
        assert_eq!(s.omitted(), ["password_hash"]);
        assert_eq!(s.exported()[3], ("email".to_owned(), PgType::Text));
        let treated: Vec<(String, String)> = s
            .treated()
            .into_iter()
            .map(|t| (t.column, t.action))
            .collect();
        assert_eq!(
            treated,
            [
                ("password_hash".to_owned(), "omit".to_owned()),
                ("access_token".to_owned(), "redact".to_owned()),
                ("email".to_owned(), "hash".to_owned()),
                ("bio".to_owned(), "redact-values".to_owned()),
            ]
        );
        let mut all = TableSanitizer::new("users", &columns, &Spec::default(), false);
        assert_eq!(all.apply(vec![Datum::Null; 7]).len(), 7);
    }

    const DEFAULT_MARKER_TEXT: &str = super::super::spec::DEFAULT_MARKER;
}
