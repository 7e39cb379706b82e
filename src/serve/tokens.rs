//! Who may call the service: bearer tokens from the token file, kept only as SHA-256 hashes and compared
//! in constant time, each with its scopes and optionally bound to one user id. `ferry serve token add`
//! makes a token and prints it once; the file never holds it.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// See operations, their progress and results, templates and metrics.
    Read,
    /// Start exports.
    Export,
    /// Start imports and validations.
    Import,
    /// Store templates, read the audit table, see and cancel every operation.
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Export, Scope::Import, Scope::Admin];

    /// The scope's name.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Export => "export",
            Scope::Import => "import",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| format!("unknown scope {s:?}: one of read, export, import, admin"))
    }
}

/// One token as the file keeps it: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The token's name, as audit lines and logs show it.
    pub name: String,
    /// SHA-256 of the token, in hex.
    pub sha256: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// The one user whose data and operations it sees, if bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// The caller a request's token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
    /// The user it is bound to.
    pub user: Option<String>,
}

impl Caller {
    /// True when the token has `scope` (admin has every scope).
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// True when the caller may see an operation of `user` (unbound tokens see every operation).
    pub fn sees_user(&self, user: Option<&str>) -> bool {
        match &self.user {
            None => true,
            Some(own) => user == Some(own.as_str()),
        }
    }
}

/// The token file, read again whenever it changes, so that `ferry serve token add` takes effect at once.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    loaded: RwLock<(Option<SystemTime>, Vec<TokenEntry>)>,
}

impl Tokens {
    /// Reads the token file at `path` (a missing file means no tokens: every request gets 401).
    pub fn open(path: &Path) -> Result<Tokens> {
        let tokens = Tokens {
            path: path.to_owned(),
            loaded: RwLock::new((None, Vec::new())),
        };
        tokens.reload()?;
        Ok(tokens)
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.loaded.read().map(|l| l.1.len()).unwrap_or(0)
    }

    /// True when no token exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn reload(&self) -> Result<()> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        if self
            .loaded
            .read()
            .is_ok_and(|l| l.0 == modified && modified.is_some())
        {
            return Ok(());
        }
        let entries = read_file(&self.path)?.tokens;
        if let Ok(mut loaded) = self.loaded.write() {
            *loaded = (modified, entries);
        }
        Ok(())
    }

    /// The caller `token` names, if any. Every entry is compared, in constant time, whatever matches.
    pub fn check(&self, token: &str) -> Option<Caller> {
        if let Err(e) = self.reload() {
            // Keep the tokens last read: a half-written file must not lock everyone out.
            tracing::warn!(error = %e, "cannot read the token file again; using the tokens read before");
        }
        let digest = crate::envelope::split::hex(&Sha256::digest(token.as_bytes()));
        let loaded = self.loaded.read().ok()?;
        let mut found = None;
        for entry in &loaded.1 {
            let equal: bool = entry.sha256.as_bytes().ct_eq(digest.as_bytes()).into();
            if equal && found.is_none() {
                found = Some(Caller {
                    name: entry.name.clone(),
                    scopes: entry.scopes.clone(),
                    user: entry.user.clone(),
                });
            }
        }
        found
    }
}

fn read_file(path: &Path) -> Result<TokenFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .map_err(|e| Error::config(format!("the token file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(e) => Err(Error::config(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the token file whole, mode 0600, under a temporary name renamed into place.
fn write_file(path: &Path, file: &TokenFile) -> Result<()> {
    let text = serde_yaml::to_string(file)
        .map_err(|e| Error::config(format!("cannot write the token file: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::config(format!("cannot create {}: {e}", dir.display())))?;
    let io = |e: std::io::Error| Error::config(format!("cannot write {}: {e}", path.display()));
    let mut temp = tempfile::Builder::new()
        .prefix(".tokens")
        .tempfile_in(dir)
        .map_err(io)?;
    use std::io::Write as _;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    temp.write_all(text.as_bytes()).map_err(io)?;
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Adds a token named `name` to the file and returns the token (shown once, never stored).
pub fn add(path: &Path, name: &str, scopes: &[Scope], user: Option<&str>) -> Result<String> {
    if !crate::serve::config::is_plain_name(name) {
        return Err(Error::usage(format!(
            "token name {name:?}: use letters, digits, ., - and _ (at most 64)"
        )));
    }
    if scopes.is_empty() {
        return Err(Error::usage(
            "give at least one --scope (read, export, import, admin)",
        ));
    }
    if user.is_some_and(|u| u.is_empty() || u.len() > 256) {
        return Err(Error::usage("--user must be 1 to 256 characters"));
    }
    let mut file = read_file(path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(Error::usage(format!(
            "a token named {name:?} exists; remove it first (ferry serve token remove {name})"
        )));
    }
    let mut random = [0u8; 32];
    getrandom::fill(&mut random)
        .map_err(|e| Error::config(format!("no random numbers for a token: {e}")))?;
    use base64::Engine as _;
    let token = format!(
        "fy_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
    );
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    file.tokens.push(TokenEntry {
        name: name.to_owned(),
        sha256: crate::envelope::split::hex(&Sha256::digest(token.as_bytes())),
        scopes,
        user: user.map(str::to_owned),
        created: Some(crate::serve::operation::now_text()),
    });
    write_file(path, &file)?;
    Ok(token)
}

/// Removes the token named `name`.
pub fn remove(path: &Path, name: &str) -> Result<()> {
    let mut file = read_file(path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.name != name);
    if file.tokens.len() == before {
        return Err(Error::usage(format!("no token named {name:?}")));
    }
    write_file(path, &file)
}

/// The tokens in the file (names, scopes, users; never hashes).
pub fn list(path: &Path) -> Result<Vec<TokenEntry>> {
    Ok(read_file(path)?.tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_stored_as_its_hash_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        let token = add(&path, "ci", &[Scope::Export, Scope::Read], Some("alice")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token), "the file must not hold the token");
        assert!(text.contains(&crate::envelope::split::hex(&Sha256::digest(
            token.as_bytes()
        ))));
        let tokens = Tokens::open(&path).unwrap();
        let caller = tokens.check(&token).expect("the token is known");
        assert_eq!(caller.name, "ci");
        assert_eq!(caller.user.as_deref(), Some("alice"));
        assert!(caller.may(Scope::Export) && !caller.may(Scope::Import));
        assert!(tokens.check("fy_wrong").is_none());
        assert!(add(&path, "ci", &[Scope::Read], None).is_err());
        remove(&path, "ci").unwrap();
        assert!(tokens.check(&token).is_none());
        assert!(list(&path).unwrap().is_empty());
    }
}
