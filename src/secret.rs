//! Where text leaves ferry (errors, reports, endpoint names): passwords in any spelling of a connection
//! string are masked first, so that a password given by mistake on the command line is never echoed.
//!
//! Spellings covered: a URL's user information (`postgres://u:SECRET@db/app`), a URL parameter
//! (`?password=SECRET`, `&sslpassword=SECRET`), and libpq keyword/value strings
//! (`host=db password=SECRET`, `password = 'a \' quoted one'`).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// `password=…` and `sslpassword=…` as a URL parameter or a libpq keyword, quoted or not.
static KEYWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&;]*)")
        .expect("a valid pattern")
});

/// `scheme://user:password@`.
static USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(://[^/?#@\s:]*):([^@/?#\s]*)@").expect("a valid pattern"));

/// A libpq keyword/value connection string: every word `keyword=value`, the first a libpq keyword.
static LIBPQ: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*(?:[A-Za-z_]+\s*=\s*(?:'(?:[^'\\]|\\.)*'|[^\s']*)\s*)+$")
        .expect("a valid pattern")
});

/// The keywords libpq knows that start a connection string in practice.
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "service",
    "sslmode",
    "application_name",
    "connect_timeout",
    "options",
];

/// `text` with every password it spells replaced by `***`.
///
/// ```
/// use ferry::secret::redact;
/// assert_eq!(redact("host=db password=s3cret dbname=app"), "host=db password=*** dbname=app");
/// assert_eq!(redact("postgres://me:s3cret@db/app?sslpassword=x&a=b"), "postgres://me:***@db/app?sslpassword=***&a=b");
/// assert_eq!(redact("out.csv"), "out.csv");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let lower = text.to_ascii_lowercase();
    if !lower.contains("password") && !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let masked = KEYWORD.replace_all(text, "${1}***");
    match USERINFO.replace_all(&masked, "$1:***@") {
        Cow::Borrowed(_) => masked,
        Cow::Owned(both) => Cow::Owned(both),
    }
}

/// True when `text` is a libpq keyword/value connection string (`host=db dbname=app user=me`) rather than
/// a file name.
pub fn looks_like_libpq(text: &str) -> bool {
    let first_key = text
        .trim_start()
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    LIBPQ_KEYWORDS.contains(&first_key.as_str()) && LIBPQ.is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_password_is_masked() {
        for (text, secret) in [
            ("host=db password=s3cret dbname=app", "s3cret"),
            ("host=db PASSWORD = 's3 cr\\'et' dbname=app", "cr\\'et"),
            ("postgres://me:s3cret@db:5432/app", "s3cret"),
            (
                "postgresql://db/app?user=me&password=s3cret&sslmode=require",
                "s3cret",
            ),
            (
                "cannot tell the format of host=db password=s3cret from its extension",
                "s3cret",
            ),
            ("sslpassword=s3cret", "s3cret"),
        ] {
            let shown = redact(text);
            assert!(!shown.contains(secret), "{text} → {shown}");
            assert!(shown.contains("***"), "{text} → {shown}");
        }
        assert_eq!(redact("a/b/out.csv"), "a/b/out.csv");
        assert_eq!(redact("postgres://me@db/app"), "postgres://me@db/app");
    }

    #[test]
    fn libpq_strings_are_told_from_file_names() {
        assert!(looks_like_libpq("host=db password=s3cret dbname=app"));
        assert!(looks_like_libpq("dbname=app"));
        assert!(looks_like_libpq(" host = db  password='a b' "));
        assert!(!looks_like_libpq("out.csv"));
        assert!(!looks_like_libpq("report=1.csv"));
        assert!(!looks_like_libpq("host=db my file.csv"));
    }
}
