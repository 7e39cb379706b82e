//! A small SQLite SQL tokenizer, enough to pull CHECK constraints, COLLATE clauses, generated-column
//! expressions and AUTOINCREMENT out of `CREATE TABLE` text, key terms and WHERE clauses out of
//! `CREATE INDEX` text, and to re-render simple expressions for PostgreSQL.
//!
//! It respects `'strings'`, `"identifiers"`, `[identifiers]`, `` `identifiers` ``, `X'blobs'`, `--` and
//! `/* */` comments and parenthesis depth. Limits: it is not a parser. It does not know operator
//! precedence or the full keyword list, and an expression is only re-rendered for PostgreSQL when every
//! word in it is a known column, a keyword or a function from a short list (see
//! [`translate_expr`]); anything else is reported as untranslatable with the word that stopped it.

use crate::db::quote_ident;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword, unquoted identifier or function name.
    Word,
    /// A quoted identifier; `text` holds the unquoted name.
    Ident,
    /// A string literal; `text` holds it as written, quotes included.
    Str,
    /// A blob literal `X'…'`.
    Blob,
    /// A number literal.
    Number,
    /// An operator or punctuation.
    Punct,
    /// A bound parameter (`?`, `:name`, `@name`, `$name`).
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

/// Splits `sql` into tokens, dropping whitespace and comments.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
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
        if c == b'-' && bytes.get(i + 1) == Some(&b'-') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
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
            b'"' | b'`' => {
                i = quoted_end(bytes, i, c).ok_or("unterminated quoted identifier")?;
                let doubled = if c == b'"' { "\"\"" } else { "``" };
                let inner = &sql[start + 1..i - 1];
                (Kind::Ident, inner.replace(doubled, &doubled[..1]))
            }
            b'[' => {
                let n = sql[i..].find(']').ok_or("unterminated [identifier]")?;
                i += n + 1;
                (Kind::Ident, sql[start + 1..i - 1].to_owned())
            }
            b'x' | b'X' if bytes.get(i + 1) == Some(&b'\'') => {
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
            b'?' | b':' | b'@' | b'$' => {
                i += 1;
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                (Kind::Param, sql[start..i].to_owned())
            }
            _ if is_word_byte(c) => {
                while i < bytes.len() && (is_word_byte(bytes[i]) || bytes[i] == b'$') {
                    i += 1;
                }
                (Kind::Word, sql[start..i].to_owned())
            }
            _ => {
                let two = sql.get(i..i + 2).unwrap_or("");
                let len = if ["<=", ">=", "<>", "!=", "==", "||", "<<", ">>", "->"].contains(&two) {
                    if sql.get(i..i + 3) == Some("->>") {
                        3
                    } else {
                        2
                    }
                } else {
                    // One character, whatever its UTF-8 length.
                    sql[i..].chars().next().map_or(1, char::len_utf8)
                };
                i += len;
                (Kind::Punct, sql[start..i].to_owned())
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

/// Splits `tokens` at top-level commas.
pub(crate) fn split_commas(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut from = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
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

/// The source text covered by `tokens`.
pub(crate) fn text_of<'a>(sql: &'a str, tokens: &[Token]) -> &'a str {
    match (tokens.first(), tokens.last()) {
        (Some(a), Some(b)) => &sql[a.start..b.end],
        _ => "",
    }
}

/// A CHECK constraint found in `CREATE TABLE` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckDdl {
    pub name: Option<String>,
    pub column: Option<String>,
    pub expr: String,
}

/// One column definition's extras that `pragma table_xinfo` does not give.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnDdl {
    pub name: String,
    pub collation: Option<String>,
    pub generated: Option<String>,
}

/// What ferry reads out of `CREATE TABLE` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableDdl {
    pub columns: Vec<ColumnDdl>,
    pub checks: Vec<CheckDdl>,
    /// Named foreign keys: referencing columns and constraint name.
    pub foreign_key_names: Vec<(Vec<String>, String)>,
    pub autoincrement: bool,
}

const TABLE_CONSTRAINT_WORDS: &[&str] = &["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];

/// Reads CHECKs, collations, generated expressions and AUTOINCREMENT out of `CREATE TABLE` text.
pub(crate) fn parse_create_table(sql: &str) -> Result<TableDdl, String> {
    let tokens = tokenize(sql)?;
    let open = tokens
        .iter()
        .position(|t| t.is_punct("("))
        .ok_or("no column list")?;
    let close = matching_paren(&tokens, open).ok_or("unbalanced parentheses")?;
    let mut ddl = TableDdl::default();
    for element in split_commas(&tokens[open + 1..close]) {
        let Some(first) = element.first() else {
            continue;
        };
        let is_column = !TABLE_CONSTRAINT_WORDS.iter().any(|w| first.is_word(w));
        let column = if is_column {
            first.name().map(str::to_owned)
        } else {
            None
        };
        let mut col = ColumnDdl {
            name: column.clone().unwrap_or_default(),
            ..ColumnDdl::default()
        };
        let mut pending_name: Option<String> = None;
        let mut i = usize::from(is_column);
        while i < element.len() {
            let t = &element[i];
            if t.is_word("CONSTRAINT") {
                pending_name = element.get(i + 1).and_then(Token::name).map(str::to_owned);
                i += 2;
                continue;
            }
            if t.is_word("AUTOINCREMENT") {
                ddl.autoincrement = true;
            }
            if ["PRIMARY", "UNIQUE", "NOT", "DEFAULT", "COLLATE"]
                .iter()
                .any(|w| t.is_word(w))
            {
                pending_name = None;
            }
            if t.is_word("FOREIGN") && element.get(i + 1).is_some_and(|k| k.is_word("KEY")) {
                let open = i + 2;
                if let (Some(name), Some(close)) =
                    (pending_name.take(), matching_paren(element, open))
                {
                    let from = element[open + 1..close]
                        .iter()
                        .filter_map(|t| {
                            t.name()
                                .filter(|_| t.kind != Kind::Punct)
                                .map(str::to_owned)
                        })
                        .collect();
                    ddl.foreign_key_names.push((from, name));
                    i = close + 1;
                    continue;
                }
            }
            if t.is_word("REFERENCES") {
                if let (Some(name), Some(col)) = (pending_name.take(), column.clone()) {
                    ddl.foreign_key_names.push((vec![col], name));
                }
            }
            if t.is_word("COLLATE") {
                if let Some(c) = element.get(i + 1).and_then(Token::name) {
                    col.collation = Some(c.to_owned());
                }
            }
            let group = |at: usize| -> Option<(usize, String)> {
                if element.get(at).is_some_and(|t| t.is_punct("(")) {
                    let end = matching_paren(element, at)?;
                    Some((end, text_of(sql, &element[at + 1..end]).trim().to_owned()))
                } else {
                    None
                }
            };
            if t.is_word("CHECK") {
                if let Some((end, expr)) = group(i + 1) {
                    ddl.checks.push(CheckDdl {
                        name: pending_name.take(),
                        column: column.clone(),
                        expr,
                    });
                    i = end + 1;
                    continue;
                }
            }
            if is_column && t.is_word("AS") {
                if let Some((end, expr)) = group(i + 1) {
                    col.generated = Some(expr);
                    i = end + 1;
                    continue;
                }
            }
            if t.is_punct("(") {
                // DEFAULT (expr), REFERENCES t(cols), a type's (n, m): skip the group.
                i = matching_paren(element, i).map_or(element.len(), |e| e + 1);
                continue;
            }
            i += 1;
        }
        if is_column {
            ddl.columns.push(col);
        }
    }
    Ok(ddl)
}

/// What ferry reads out of `CREATE INDEX` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IndexDdl {
    /// Each key term as written (`a`, `lower(b) DESC`, `c COLLATE NOCASE`).
    pub terms: Vec<String>,
    /// The partial index's WHERE expression.
    pub where_clause: Option<String>,
}

/// Reads the key terms and WHERE clause of `CREATE [UNIQUE] INDEX … ON t (…) [WHERE …]`.
pub(crate) fn parse_create_index(sql: &str) -> Result<IndexDdl, String> {
    let tokens = tokenize(sql)?;
    let on = tokens
        .iter()
        .position(|t| t.is_word("ON"))
        .ok_or("no ON clause")?;
    let open = tokens[on..]
        .iter()
        .position(|t| t.is_punct("("))
        .map(|p| p + on)
        .ok_or("no key list")?;
    let close = matching_paren(&tokens, open).ok_or("unbalanced parentheses")?;
    let terms = split_commas(&tokens[open + 1..close])
        .into_iter()
        .map(|part| text_of(sql, part).trim().to_owned())
        .collect();
    let mut where_clause = None;
    if tokens.get(close + 1).is_some_and(|t| t.is_word("WHERE")) {
        let mut rest = &tokens[close + 2..];
        while rest.last().is_some_and(|t| t.is_punct(";")) {
            rest = &rest[..rest.len() - 1];
        }
        where_clause = Some(text_of(sql, rest).trim().to_owned());
    }
    Ok(IndexDdl {
        terms,
        where_clause,
    })
}

/// A column an expression may name, with what it becomes in PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExprColumn<'a> {
    pub name: &'a str,
    /// The column's PostgreSQL type is boolean (integer comparisons would not type-check).
    pub boolean: bool,
}

/// Words passed through unchanged (upper-cased).
const KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "BETWEEN",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "TRUE",
    "FALSE",
    "CAST",
    "AS",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "ASC",
    "DESC",
    "DISTINCT",
    "ESCAPE",
];

/// Types allowed after `CAST(… AS`.
const CAST_TYPES: &[&str] = &["INTEGER", "INT", "BIGINT", "TEXT", "NUMERIC"];

/// SQLite functions with a PostgreSQL counterpart: (sqlite, postgres).
const FUNCTIONS: &[(&str, &str)] = &[
    ("abs", "abs"),
    ("coalesce", "coalesce"),
    ("ifnull", "coalesce"),
    ("nullif", "nullif"),
    ("lower", "lower"),
    ("upper", "upper"),
    ("length", "char_length"),
    ("trim", "trim"),
    ("ltrim", "ltrim"),
    ("rtrim", "rtrim"),
    ("substr", "substr"),
    ("substring", "substr"),
    ("replace", "replace"),
    ("round", "round"),
    ("instr", "strpos"),
];

/// Re-renders a SQLite expression (CHECK, partial-index WHERE, index term, generated column) for
/// PostgreSQL, or says why it cannot.
///
/// Rewrites: any identifier quoting → `"…"` with the column's exact spelling (bare words that name a
/// column are quoted too, since PostgreSQL would fold them to lower case); `==` → `=`; `LIKE` → `ILIKE`
/// (SQLite's LIKE ignores ASCII case); `ifnull` → `coalesce`, `length` → `char_length`, `instr` →
/// `strpos`; `datetime('now')` → `now()`, `date('now')` → `CURRENT_DATE`. Refused: unknown words and
/// functions, `GLOB`/`REGEXP`/`MATCH`, blob literals, parameters, JSON operators, `COLLATE`, and any
/// mention of a column that becomes boolean (SQLite compares it with integers).
pub(crate) fn translate_expr(expr: &str, columns: &[ExprColumn<'_>]) -> Result<String, String> {
    let tokens = tokenize(expr)?;
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next_is_open = tokens.get(i + 1).is_some_and(|n| n.is_punct("("));
        let piece = match t.kind {
            Kind::Str | Kind::Number => t.text.clone(),
            Kind::Blob => return Err("a blob literal".into()),
            Kind::Param => return Err(format!("a parameter {}", t.text)),
            Kind::Ident => column_ref(&t.text, columns)?,
            Kind::Punct => match t.text.as_str() {
                "==" => "=".into(),
                "->" | "->>" => return Err(format!("the JSON operator {}", t.text)),
                "(" | ")" | "," | "=" | "<" | ">" | "<=" | ">=" | "<>" | "!=" | "||" | "+"
                | "-" | "*" | "/" | "%" => t.text.clone(),
                other => return Err(format!("the operator {other}")),
            },
            Kind::Word => {
                let upper = t.text.to_ascii_uppercase();
                if next_is_open {
                    let lower = t.text.to_ascii_lowercase();
                    let now_arg = tokens.get(i + 2).is_some_and(|a| a.text == "'now'")
                        && tokens.get(i + 3).is_some_and(|c| c.is_punct(")"));
                    if now_arg && (lower == "datetime" || lower == "date") {
                        out.push(
                            if lower == "date" {
                                "CURRENT_DATE"
                            } else {
                                "now()"
                            }
                            .into(),
                        );
                        i += 4;
                        continue;
                    }
                    if upper == "CAST" {
                        "CAST".into()
                    } else if ["IN", "AND", "OR", "NOT", "EXISTS"].contains(&upper.as_str()) {
                        // An operator before a parenthesis (`status IN ('a', 'b')`), not a function.
                        upper
                    } else if let Some((_, pg)) = FUNCTIONS.iter().find(|(s, _)| *s == lower) {
                        (*pg).to_owned()
                    } else if let Some(c) = columns
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(&t.text))
                    {
                        column_ref(c.name, columns)?
                    } else {
                        return Err(format!(
                            "the function {}() has no known PostgreSQL counterpart",
                            t.text
                        ));
                    }
                } else if upper == "LIKE" {
                    "ILIKE".into()
                } else if ["GLOB", "REGEXP", "MATCH", "COLLATE"].contains(&upper.as_str()) {
                    return Err(format!("the operator {upper}"));
                } else if columns.iter().any(|c| c.name.eq_ignore_ascii_case(&t.text)) {
                    column_ref(&t.text, columns)?
                } else if KEYWORDS.contains(&upper.as_str())
                    || (CAST_TYPES.contains(&upper.as_str())
                        && i > 0
                        && tokens[i - 1].is_word("AS"))
                {
                    upper
                } else {
                    return Err(format!("the word {} (not a column of this table)", t.text));
                }
            }
        };
        out.push(piece);
        i += 1;
    }
    let mut text = String::new();
    for (n, piece) in out.iter().enumerate() {
        let glue = n > 0
            && piece != ")"
            && piece != ","
            && out[n - 1] != "("
            && !(piece == "("
                && out[n - 1]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"'));
        if glue {
            text.push(' ');
        }
        text.push_str(piece);
    }
    Ok(text)
}

fn column_ref(name: &str, columns: &[ExprColumn<'_>]) -> Result<String, String> {
    match columns.iter().find(|c| c.name.eq_ignore_ascii_case(name)) {
        Some(c) if c.boolean => Err(format!(
            "it uses {}, which becomes boolean (SQLite compared it as an integer)",
            quote_ident(c.name)
        )),
        Some(c) => Ok(quote_ident(c.name)),
        None => Err(format!(
            "{} is not a column of this table",
            quote_ident(name)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = tokenize(&text);
            let _ = parse_create_table(&text);
            let _ = parse_create_index(&text);
            let _ = translate_expr(&text, &[ExprColumn { name: "a", boolean: false }]);
        }

        #[test]
        fn never_panics_on_sql_shapes(text in "[a-zA-Zé \\[\\]`\"'(),;0-9.=<>|-]{0,60}") {
            let sql = format!("CREATE TABLE t ({text})");
            let _ = parse_create_table(&sql);
            let _ = parse_create_index(&format!("CREATE INDEX i ON t ({text}) WHERE {text}"));
            let _ = translate_expr(&text, &[ExprColumn { name: "a", boolean: false }]);
        }
    }

    #[test]
    fn tokenizer_respects_quotes_comments_and_brackets() {
        let t = tokenize("[a b]INTEGER 'it''s' \"q\"\"x\" `bt` -- c\n/* d */ x'00' 1.5e3 <= ?")
            .unwrap();
        let kinds: Vec<_> = t.iter().map(|t| (t.kind, t.text.as_str())).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Ident, "a b"),
                (Kind::Word, "INTEGER"),
                (Kind::Str, "'it''s'"),
                (Kind::Ident, "q\"x"),
                (Kind::Ident, "bt"),
                (Kind::Blob, "x'00'"),
                (Kind::Number, "1.5e3"),
                (Kind::Punct, "<="),
                (Kind::Param, "?"),
            ]
        );
    }

    #[test]
    fn create_table_checks_collations_generated_and_autoincrement() {
        let ddl = parse_create_table(
            "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             name TEXT COLLATE NOCASE CHECK (length(name) > 0), \
             price NUMERIC(10,2) DEFAULT (0) CONSTRAINT pos CHECK (price >= 0), \
             total REAL GENERATED ALWAYS AS (price * 2) STORED, \
             note TEXT DEFAULT 'CHECK (x)', \
             owner INTEGER CONSTRAINT owner_fk REFERENCES users (id), \
             CONSTRAINT both_ok CHECK (price < 1000 AND name <> ','), UNIQUE (name), \
             CONSTRAINT [pair fk] FOREIGN KEY (id, [name]) REFERENCES other (a, b))",
        )
        .unwrap();
        assert!(ddl.autoincrement);
        let names: Vec<_> = ddl.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "price", "total", "note", "owner"]);
        assert_eq!(
            ddl.foreign_key_names,
            [
                (vec!["owner".to_owned()], "owner_fk".to_owned()),
                (
                    vec!["id".to_owned(), "name".to_owned()],
                    "pair fk".to_owned()
                )
            ]
        );
        assert_eq!(ddl.columns[1].collation.as_deref(), Some("NOCASE"));
        assert_eq!(ddl.columns[3].generated.as_deref(), Some("price * 2"));
        assert_eq!(ddl.checks.len(), 3);
        assert_eq!(ddl.checks[0].expr, "length(name) > 0");
        assert_eq!(ddl.checks[0].column.as_deref(), Some("name"));
        assert_eq!(ddl.checks[1].name.as_deref(), Some("pos"));
        assert_eq!(ddl.checks[2].name.as_deref(), Some("both_ok"));
        assert_eq!(ddl.checks[2].column, None);
        assert_eq!(ddl.checks[2].expr, "price < 1000 AND name <> ','");
    }

    #[test]
    fn create_index_terms_and_where() {
        let ddl = parse_create_index(
            "CREATE UNIQUE INDEX \"i x\" ON [t] (lower(a), b DESC, c COLLATE NOCASE) WHERE d IS NOT NULL;",
        )
        .unwrap();
        assert_eq!(ddl.terms, ["lower(a)", "b DESC", "c COLLATE NOCASE"]);
        assert_eq!(ddl.where_clause.as_deref(), Some("d IS NOT NULL"));
    }

    #[test]
    fn expressions_are_rewritten_or_refused() {
        let cols = [
            ExprColumn {
                name: "Discount",
                boolean: false,
            },
            ExprColumn {
                name: "name",
                boolean: false,
            },
            ExprColumn {
                name: "active",
                boolean: true,
            },
        ];
        assert_eq!(
            translate_expr("[Discount]>=(0) AND [Discount]<=(1)", &cols).unwrap(),
            "\"Discount\" >= (0) AND \"Discount\" <= (1)"
        );
        assert_eq!(
            translate_expr("length(NAME) == 3 or name like 'a%'", &cols).unwrap(),
            "char_length(\"name\") = 3 OR \"name\" ILIKE 'a%'"
        );
        assert_eq!(translate_expr("datetime('now')", &cols).unwrap(), "now()");
        assert_eq!(
            translate_expr("name IN ('pending', 'failed') AND NOT (name = '')", &cols).unwrap(),
            "\"name\" IN('pending', 'failed') AND NOT(\"name\" = '')"
        );
        assert!(translate_expr("name GLOB 'a*'", &cols)
            .unwrap_err()
            .contains("GLOB"));
        assert!(translate_expr("typeof(name) = 'text'", &cols)
            .unwrap_err()
            .contains("typeof"));
        assert!(translate_expr("active IN (0, 1)", &cols)
            .unwrap_err()
            .contains("boolean"));
        assert!(translate_expr("other > 0", &cols)
            .unwrap_err()
            .contains("other"));
    }
}
