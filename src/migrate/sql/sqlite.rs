//! Reading SQLite's SQL: CHECK constraints, COLLATE clauses, generated-column expressions and
//! AUTOINCREMENT out of `CREATE TABLE` text, key terms and WHERE clauses out of `CREATE INDEX` text, and
//! SQLite expressions and DEFAULTs re-rendered for PostgreSQL.
//!
//! An expression is only re-rendered when every word in it is a known column, a keyword or a function from
//! a short list (see [`translate_expr`]); anything else is reported as untranslatable with the word that
//! stopped it.

use super::{
    matching_paren, quote_literal, split_commas, text_of, tokenize, unwrap_parens, Dialect, Kind,
    Token,
};
use crate::db::quote_ident;
use crate::migrate::types::PgType;

fn tokens(sql: &str) -> Result<Vec<Token>, String> {
    tokenize(sql, Dialect::Sqlite)
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
    let tokens = tokens(sql)?;
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
    let tokens = tokens(sql)?;
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
    let tokens = tokens(expr)?;
    let mut out: Vec<String> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let next_is_open = tokens.get(i + 1).is_some_and(|n| n.is_punct("("));
        let piece = match t.kind {
            Kind::Str | Kind::Number => t.text.clone(),
            Kind::Blob => return Err("a blob literal".into()),
            Kind::Param => return Err(format!("a parameter {}", t.text)),
            // Not in this dialect.
            Kind::Cast => return Err(format!("the token {}", t.text)),
            Kind::Ident => column_ref(&t.text, columns)?,
            Kind::Punct | Kind::Op => match t.text.as_str() {
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

/// Translates a SQLite DEFAULT expression for a PostgreSQL column of type `pg`; `Ok(None)` for
/// `DEFAULT NULL`.
pub(crate) fn translate_default(
    text: &str,
    pg: &PgType,
    columns: &[ExprColumn<'_>],
) -> Result<Option<String>, String> {
    let toks = tokens(text)?;
    let inner = unwrap_parens(&toks);
    let body = text_of(text, inner);
    let upper = body.to_ascii_uppercase();
    if upper == "NULL" {
        return Ok(None);
    }
    let is_number = !inner.is_empty()
        && inner
            .iter()
            .all(|t| t.kind == Kind::Number || t.is_op("-") || t.is_op("+"));
    let unquoted = (inner.len() == 1 && inner[0].kind == Kind::Str)
        .then(|| body[1..body.len() - 1].replace("''", "'"));
    match pg {
        PgType::Boolean => {
            let v = unquoted
                .as_deref()
                .unwrap_or(body)
                .trim()
                .to_ascii_lowercase();
            return match v.as_str() {
                "1" | "true" | "t" => Ok(Some("true".into())),
                "0" | "false" | "f" => Ok(Some("false".into())),
                _ => Err("not a boolean".into()),
            };
        }
        PgType::Bytea => {
            if let [t] = inner {
                if t.kind == Kind::Blob {
                    return Ok(Some(format!(
                        "'\\x{}'::bytea",
                        &t.text[2..t.text.len() - 1]
                    )));
                }
            }
        }
        _ => {}
    }
    match upper.as_str() {
        "CURRENT_TIMESTAMP" if matches!(pg, PgType::Text | PgType::Varchar(_)) => {
            // SQLite's text form, so the column keeps one format.
            return Ok(Some(
                "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')".into(),
            ));
        }
        "CURRENT_TIMESTAMP" | "CURRENT_DATE" | "CURRENT_TIME" => return Ok(Some(upper)),
        "TRUE" | "FALSE" if pg.is_integer() => {
            return Ok(Some(if upper == "TRUE" { "1" } else { "0" }.into()))
        }
        _ => {}
    }
    if is_number {
        return match pg {
            PgType::Date | PgType::Timestamptz | PgType::Timestamp | PgType::Jsonb => {
                Err(format!("a number is not a {}", pg.sql()))
            }
            _ => Ok(Some(body.to_owned())),
        };
    }
    if let Some(s) = unquoted {
        let fits = match pg {
            t if t.is_integer() => s.trim().parse::<i64>().is_ok(),
            PgType::Double | PgType::Real | PgType::Numeric(_) => s.trim().parse::<f64>().is_ok(),
            PgType::Date => crate::migrate::profile::is_date(&s),
            PgType::Timestamptz | PgType::Timestamp => {
                crate::migrate::profile::is_date(&s) || crate::migrate::profile::is_datetime(&s)
            }
            PgType::Jsonb => serde_json::from_str::<serde_json::Value>(&s).is_ok(),
            _ => true,
        };
        return if fits {
            Ok(Some(quote_literal(&s)))
        } else {
            Err(format!("{s:?} is not a valid {}", pg.sql()))
        };
    }
    let expr = translate_expr(body, columns)?;
    Ok(Some(if expr.contains(' ') {
        format!("({expr})")
    } else {
        expr
    }))
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
