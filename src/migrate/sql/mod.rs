//! The one SQL tokenizer of the migration, with a dialect flag: [`Dialect::Sqlite`] for the `CREATE TABLE`,
//! `CREATE INDEX` and `CREATE VIEW` text SQLite keeps (and the statements ferry writes itself), and
//! [`Dialect::Postgres`] for the expressions `pg_get_expr` and `pg_get_constraintdef` print. On it sit
//! the two translators: [`sqlite`] reads SQLite DDL and re-renders SQLite expressions for PostgreSQL,
//! [`postgres`] re-renders PostgreSQL expressions for SQLite.
//!
//! Both dialects know `'strings'` (doubled quotes escape), `"identifiers"`, numbers (`1.5e3`, `0x1F`,
//! `.5`) and parenthesis depth. SQLite adds `[identifiers]`, `` `identifiers` ``, `X'blobs'`, `--` and
//! `/* */` comments (skipped), and parameters (`?`, `:name`, `@name`, `$name`); PostgreSQL adds the cast
//! `::` and operators as runs of `+-*/<>=~!@#%^&|?`, and refuses comments and characters it does not
//! expect. It is not a parser: the translators accept only what they understand, word by word.

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// Whose SQL a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite's (and the DDL ferry writes for either database).
    Sqlite,
    /// What PostgreSQL's catalog functions print.
    Postgres,
}

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword, unquoted identifier or function name.
    Word,
    /// A quoted identifier; `text` holds the unquoted name.
    Ident,
    /// A string literal; `text` holds it as written, quotes included.
    Str,
    /// A blob literal `X'…'` (SQLite).
    Blob,
    /// A number literal.
    Number,
    /// Structure: `(`, `)`, `[`, `]`, `,`, `.`, `;`.
    Punct,
    /// An operator (`=`, `<=`, `||`, `~~*`, …).
    Op,
    /// PostgreSQL's cast `::`.
    Cast,
    /// A bound parameter (`?`, `:name`, `@name`, `$name`; SQLite).
    Param,
}

/// One token and where it sits in the text (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// True for a bare word equal (ignoring ASCII case) to `word`.
    pub fn is_word(&self, word: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(word)
    }

    /// True for the punctuation `p`.
    pub fn is_punct(&self, p: &str) -> bool {
        self.kind == Kind::Punct && self.text == p
    }

    /// True for the operator `op`.
    pub fn is_op(&self, op: &str) -> bool {
        self.kind == Kind::Op && self.text == op
    }

    /// The name a word or quoted identifier stands for.
    pub fn name(&self) -> Option<&str> {
        match self.kind {
            Kind::Word | Kind::Ident => Some(&self.text),
            // SQLite accepts 'name' where an identifier is expected.
            Kind::Str => Some(self.text.trim_matches('\'')),
            _ => None,
        }
    }
}

/// Characters that make up PostgreSQL operators.
const PG_OPERATOR: &[u8] = b"+-*/<>=~!@#%^&|?";
/// SQLite's operators of more than one character.
const SQLITE_OPERATORS: &[&str] = &["<=", ">=", "<>", "!=", "==", "||", "<<", ">>", "->"];

/// Splits `sql` into tokens, dropping whitespace (and, for SQLite, comments).
pub(crate) fn tokenize(sql: &str, dialect: Dialect) -> Result<Vec<Token>, String> {
    let sqlite = dialect == Dialect::Sqlite;
    let bytes = sql.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if sqlite && c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if sqlite && c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            match sql[i + 2..].find("*/") {
                Some(n) => i += 2 + n + 2,
                None => i = bytes.len(),
            }
            continue;
        }
        let (kind, text) = match c {
            b'\'' => {
                i = quoted_end(bytes, i, b'\'').ok_or("unterminated string literal")?;
                (Kind::Str, sql[start..i].to_owned())
            }
            b'"' => {
                i = quoted_end(bytes, i, c).ok_or("unterminated quoted identifier")?;
                (Kind::Ident, sql[start + 1..i - 1].replace("\"\"", "\""))
            }
            b'`' if sqlite => {
                i = quoted_end(bytes, i, c).ok_or("unterminated quoted identifier")?;
                (Kind::Ident, sql[start + 1..i - 1].replace("``", "`"))
            }
            b'[' if sqlite => {
                let n = sql[i..].find(']').ok_or("unterminated [identifier]")?;
                i += n + 1;
                (Kind::Ident, sql[start + 1..i - 1].to_owned())
            }
            b'x' | b'X' if sqlite && bytes.get(i + 1) == Some(&b'\'') => {
                i = quoted_end(bytes, i + 1, b'\'').ok_or("unterminated blob literal")?;
                (Kind::Blob, sql[start..i].to_owned())
            }
            b'0'..=b'9' => {
                i = number_end(bytes, i);
                (Kind::Number, sql[start..i].to_owned())
            }
            b'.' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(bytes, i);
                (Kind::Number, sql[start..i].to_owned())
            }
            b':' if !sqlite && bytes.get(i + 1) == Some(&b':') => {
                i += 2;
                (Kind::Cast, "::".to_owned())
            }
            b'?' | b':' | b'@' | b'$' if sqlite => {
                i += 1;
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                (Kind::Param, sql[start..i].to_owned())
            }
            b'(' | b')' | b'[' | b']' | b',' | b'.' => {
                i += 1;
                (Kind::Punct, sql[start..i].to_owned())
            }
            b';' if sqlite => {
                i += 1;
                (Kind::Punct, ";".to_owned())
            }
            _ if is_word_byte(c) => {
                while i < bytes.len() && (is_word_byte(bytes[i]) || bytes[i] == b'$') {
                    i += 1;
                }
                (Kind::Word, sql[start..i].to_owned())
            }
            _ if sqlite => {
                i += sqlite_operator_len(&sql[i..]);
                (Kind::Op, sql[start..i].to_owned())
            }
            _ if PG_OPERATOR.contains(&c) => {
                while i < bytes.len() && PG_OPERATOR.contains(&bytes[i]) {
                    i += 1;
                }
                let op = &sql[start..i];
                if op.contains("--") || op.contains("/*") {
                    return Err("a comment".into());
                }
                (Kind::Op, op.to_owned())
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or('?');
                return Err(format!("the character {ch:?}"));
            }
        };
        tokens.push(Token {
            kind,
            text,
            start,
            end: i,
        });
    }
    Ok(tokens)
}

/// The length of the SQLite operator `rest` starts with: one of [`SQLITE_OPERATORS`] (or `->>`), else one
/// character, whatever its UTF-8 length.
fn sqlite_operator_len(rest: &str) -> usize {
    if rest.starts_with("->>") {
        return 3;
    }
    let two = rest.get(..2).unwrap_or("");
    if SQLITE_OPERATORS.contains(&two) {
        return 2;
    }
    rest.chars().next().map_or(1, char::len_utf8)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The index just past the closing `quote` of a literal opening at `open` (doubled quotes escape).
fn quoted_end(bytes: &[u8], open: usize, quote: u8) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn number_end(bytes: &[u8], mut i: usize) -> usize {
    if bytes[i] == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_') {
        i += 1;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            i = j;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
    i
}

/// The index of the `)` matching the `(` at `open`.
pub(crate) fn matching_paren(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// The opening `(` of the group whose `)` is the last token of `tokens`.
pub(crate) fn opening_paren(tokens: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().rev() {
        if t.is_punct(")") {
            depth += 1;
        } else if t.is_punct("(") {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// `tokens` without parentheses around the whole of it.
pub(crate) fn unwrap_parens(mut tokens: &[Token]) -> &[Token] {
    while tokens.len() >= 2
        && tokens[0].is_punct("(")
        && matching_paren(tokens, 0) == Some(tokens.len() - 1)
    {
        tokens = &tokens[1..tokens.len() - 1];
    }
    tokens
}

/// Splits `tokens` at commas outside parentheses and brackets.
pub(crate) fn split_commas(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct("(") || t.is_punct("[") {
            depth += 1;
        } else if t.is_punct(")") || t.is_punct("]") {
            depth -= 1;
        } else if depth == 0 && t.is_punct(",") {
            parts.push(&tokens[from..i]);
            from = i + 1;
        }
    }
    if from < tokens.len() {
        parts.push(&tokens[from..]);
    }
    parts
}

/// A string literal of `text` (quotes doubled).
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The text of a string literal token, unquoted.
pub(crate) fn unquote(literal: &str) -> String {
    literal[1..literal.len() - 1].replace("''", "'")
}

/// The source text covered by `tokens`.
pub(crate) fn text_of<'a>(sql: &'a str, tokens: &[Token]) -> &'a str {
    match (tokens.first(), tokens.last()) {
        (Some(a), Some(b)) => &sql[a.start..b.end],
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str, dialect: Dialect) -> Vec<(Kind, String)> {
        tokenize(sql, dialect)
            .unwrap()
            .into_iter()
            .map(|t| (t.kind, t.text))
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = tokenize(&text, Dialect::Sqlite);
            let _ = tokenize(&text, Dialect::Postgres);
        }
    }

    #[test]
    fn sqlite_respects_quotes_comments_and_brackets() {
        let t = kinds(
            "[a b]INTEGER 'it''s' \"q\"\"x\" `bt` -- c\n/* d */ x'00' 1.5e3 <= ?",
            Dialect::Sqlite,
        );
        let expected = [
            (Kind::Ident, "a b"),
            (Kind::Word, "INTEGER"),
            (Kind::Str, "'it''s'"),
            (Kind::Ident, "q\"x"),
            (Kind::Ident, "bt"),
            (Kind::Blob, "x'00'"),
            (Kind::Number, "1.5e3"),
            (Kind::Op, "<="),
            (Kind::Param, "?"),
        ];
        let expected: Vec<(Kind, String)> =
            expected.iter().map(|(k, t)| (*k, t.to_string())).collect();
        assert_eq!(t, expected);
    }

    #[test]
    fn postgres_has_casts_and_operator_runs_and_no_comments() {
        let t = kinds(
            "((\"a\")::text ~~* 'x'::text) AND b <> ALL (ARRAY[1])",
            Dialect::Postgres,
        );
        let texts: Vec<&str> = t.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            texts,
            [
                "(", "(", "a", ")", "::", "text", "~~*", "'x'", "::", "text", ")", "AND", "b",
                "<>", "ALL", "(", "ARRAY", "[", "1", "]", ")"
            ]
        );
        assert_eq!(t[4].0, Kind::Cast);
        assert_eq!(t[6].0, Kind::Op);
        assert_eq!(t[17].0, Kind::Punct);
        assert_eq!(
            tokenize("a -- b", Dialect::Postgres).unwrap_err(),
            "a comment"
        );
        assert!(tokenize("a ; b", Dialect::Postgres).is_err());
        assert_eq!(
            kinds("x'00'", Dialect::Postgres)[0],
            (Kind::Word, "x".into())
        );
    }

    #[test]
    fn groups_split_at_top_level_commas() {
        let t = tokenize("(a, f(b, c), [d, e]), g", Dialect::Postgres).unwrap();
        let close = matching_paren(&t, 0).unwrap();
        assert_eq!(opening_paren(&t[..=close]), Some(0));
        let parts = split_commas(&t[1..close]);
        let texts: Vec<&str> = parts
            .iter()
            .map(|p| text_of("(a, f(b, c), [d, e]), g", p))
            .collect();
        assert_eq!(texts, ["a", "f(b, c)", "[d, e]"]);
        let wrapped = tokenize("((a))", Dialect::Sqlite).unwrap();
        assert_eq!(unwrap_parens(&wrapped).len(), 1);
    }
}
