//! Reading PostgreSQL's SQL, for the way back: the expressions `pg_get_expr` and `pg_get_constraintdef`
//! print (CHECK bodies, generated columns, index predicates, DEFAULTs) re-rendered for SQLite, or refused
//! with the reason (see [`crate::migrate::pg_schema`] for what carries over).
//!
//! Expressions are re-rendered, not copied: `::text`, `::character varying`, `::bpchar`, `::numeric`,
//! `::bigint`, `::integer`, `::smallint`, `::real` and `::double precision` casts of a literal or a column
//! are dropped (a number written as a string becomes the number); `x = ANY (ARRAY[…])` becomes `x IN (…)`
//! and `x <> ALL (ARRAY[…])` `x NOT IN (…)`; `~~*` (ILIKE) becomes SQLite's case-insensitive `LIKE`;
//! `char_length` → `length`, `strpos` → `instr`, `btrim` → `trim`. Anything else PostgreSQL-specific
//! (another cast, `~` and other regular expressions, case-sensitive `~~`, arrays, unknown words and
//! functions) makes the whole expression untranslatable.

use super::{
    matching_paren, opening_paren, tokenize, unquote, unwrap_parens, Dialect, Kind, Token,
};
use crate::db::quote_ident;

fn tokens(sql: &str) -> Result<Vec<Token>, String> {
    tokenize(sql, Dialect::Postgres)
}

/// Casts dropped when they apply to a literal or a column; the numeric ones turn a string into a number.
const SIMPLE_CASTS: &[(&[&str], bool)] = &[
    (&["double", "precision"], true),
    (&["character", "varying"], false),
    (&["text"], false),
    (&["bpchar"], false),
    (&["numeric"], true),
    (&["bigint"], true),
    (&["integer"], true),
    (&["smallint"], true),
    (&["real"], true),
];

/// A number as SQLite reads it, when `text` is one.
fn plain_number(text: &str) -> Option<&str> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.parse::<f64>().is_ok_and(f64::is_finite);
    ok.then_some(t)
}

/// Drops the simple casts (see [`SIMPLE_CASTS`]) of literals and columns; other casts stay.
fn strip_casts(toks: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i].kind != Kind::Cast {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        let cast = SIMPLE_CASTS.iter().find(|(words, _)| {
            words
                .iter()
                .enumerate()
                .all(|(k, w)| toks.get(i + 1 + k).is_some_and(|t| t.is_word(w)))
                && !toks
                    .get(i + 1 + words.len())
                    .is_some_and(|t| t.is_punct("(") || t.is_punct("["))
        });
        // The operand: one literal or column, bare or alone in parentheses (not a function's arguments).
        let operand = match out.last() {
            Some(t) if t.is_punct(")") => opening_paren(&out)
                .filter(|&open| {
                    out.len() - open == 3
                        && !out
                            .get(open.wrapping_sub(1))
                            .is_some_and(|f| matches!(f.kind, Kind::Word | Kind::Ident))
                })
                .map(|open| open + 1),
            // Bare: the token before the cast (an opening parenthesis there is no operand).
            Some(_) => Some(out.len() - 1),
            None => None,
        }
        .filter(|&at| {
            matches!(
                out[at].kind,
                Kind::Str | Kind::Number | Kind::Ident | Kind::Word
            )
        });
        match (cast, operand) {
            (Some((words, numeric)), Some(at)) => {
                if *numeric && out[at].kind == Kind::Str {
                    if let Some(n) = plain_number(&unquote(&out[at].text)) {
                        out[at].text = n.to_owned();
                        out[at].kind = Kind::Number;
                    }
                }
                i += 1 + words.len();
            }
            _ => {
                out.push(toks[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// `x = ANY (ARRAY[a, b])` → `x IN (a, b)`, `x <> ALL (ARRAY[a, b])` → `x NOT IN (a, b)`, when the
/// elements are literals (the array may carry a `::type[]` cast, as PostgreSQL prints for varchar).
fn rewrite_arrays(toks: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        let quantified = (toks[i].is_op("=") && toks.get(i + 1).is_some_and(|t| t.is_word("ANY")))
            || (toks[i].is_op("<>") && toks.get(i + 1).is_some_and(|t| t.is_word("ALL")));
        if quantified && toks.get(i + 2).is_some_and(|t| t.is_punct("(")) {
            if let Some((elements, end)) = array_literal(&toks, i + 2) {
                let at = |text: &str, kind: Kind| Token {
                    kind,
                    text: text.to_owned(),
                    start: toks[i].start,
                    end: toks[i].end,
                };
                if toks[i].is_op("<>") {
                    out.push(at("NOT", Kind::Word));
                }
                out.push(at("IN", Kind::Word));
                out.push(at("(", Kind::Punct));
                out.extend(elements.iter().cloned());
                out.push(at(")", Kind::Punct));
                i = end + 1;
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Reads `( ARRAY[…] )` or `( (ARRAY[…])::type[] )` opening at `open`: the elements (literals and
/// commas) and the index of the closing `)`.
fn array_literal(toks: &[Token], open: usize) -> Option<(&[Token], usize)> {
    let close = matching_paren(toks, open)?;
    let mut inner = &toks[open + 1..close];
    if inner.first()?.is_punct("(") {
        // (ARRAY[…])::type[]
        let end = matching_paren(inner, 0)?;
        let cast = &inner[end + 1..];
        let is_array_cast = cast.len() >= 4
            && cast[0].kind == Kind::Cast
            && cast[cast.len() - 2].is_punct("[")
            && cast[cast.len() - 1].is_punct("]")
            && cast[1..cast.len() - 2].iter().all(|t| t.kind == Kind::Word);
        if !is_array_cast {
            return None;
        }
        inner = &inner[1..end];
    }
    let body = match inner {
        [a, open_b, body @ .., close_b]
            if a.is_word("ARRAY") && open_b.is_punct("[") && close_b.is_punct("]") =>
        {
            body
        }
        _ => return None,
    };
    let literals = !body.is_empty()
        && body
            .iter()
            .all(|t| matches!(t.kind, Kind::Str | Kind::Number) || t.is_punct(",") || t.is_op("-"));
    literals.then_some((body, close))
}

const KEYWORDS: &[&str] = &[
    "AND", "OR", "NOT", "IS", "NULL", "TRUE", "FALSE", "IN", "BETWEEN", "LIKE", "ESCAPE", "CASE",
    "WHEN", "THEN", "ELSE", "END", "DISTINCT", "FROM",
];

/// PostgreSQL function → SQLite function, for the functions both have (under these names).
const FUNCTIONS: &[(&str, &str)] = &[
    ("lower", "lower"),
    ("upper", "upper"),
    ("length", "length"),
    ("char_length", "length"),
    ("character_length", "length"),
    ("abs", "abs"),
    ("coalesce", "coalesce"),
    ("nullif", "nullif"),
    ("btrim", "trim"),
    ("trim", "trim"),
    ("ltrim", "ltrim"),
    ("rtrim", "rtrim"),
    ("replace", "replace"),
    ("round", "round"),
    ("substr", "substr"),
    ("strpos", "instr"),
    ("instr", "instr"),
];

/// Re-renders a PostgreSQL expression (CHECK body, generated column, index predicate) for SQLite, or
/// says why it cannot; `columns` are the table's columns. Its output translates to itself.
pub(crate) fn translate_expr(expr: &str, columns: &[&str]) -> Result<String, String> {
    let toks = rewrite_arrays(strip_casts(tokens(expr)?));
    if toks.is_empty() {
        return Err("an empty expression".into());
    }
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| **c == name)
            .map(|c| quote_ident(c))
            .ok_or_else(|| format!("{} is not a column of this table", quote_ident(name)))
    };
    // Each piece, and whether it sticks to the next one (a function name to its parenthesis, a sign
    // to its operand).
    let mut pieces: Vec<(String, bool)> = Vec::with_capacity(toks.len());
    for (i, t) in toks.iter().enumerate() {
        let call = toks.get(i + 1).is_some_and(|n| n.is_punct("("));
        let piece = match t.kind {
            // Two values in a row (`0 '-2.5'::numeric`) are no expression PostgreSQL prints; rendered, the
            // second one's sign would become an operator.
            // A closing parenthesis ends a value too (`(a) -5`).
            Kind::Str | Kind::Number
                if i > 0 && (is_value(&toks[i - 1]) || toks[i - 1].is_punct(")")) =>
            {
                return Err(format!(
                    "two values with no operator between them ({})",
                    t.text
                ));
            }
            Kind::Str | Kind::Number => t.text.clone(),
            // Not in this dialect.
            Kind::Blob | Kind::Param => return Err(format!("the token {}", t.text)),
            Kind::Cast => {
                let ty = toks.get(i + 1).map_or("", |n| n.text.as_str());
                return Err(format!("the PostgreSQL cast ::{ty}"));
            }
            Kind::Punct => match t.text.as_str() {
                "(" | ")" | "," => t.text.clone(),
                "[" | "]" => return Err("an array".into()),
                _ => return Err("a qualified name".into()),
            },
            Kind::Op => match t.text.as_str() {
                "=" | "<>" | "!=" | "<" | ">" | "<=" | ">=" | "+" | "-" | "*" | "/" | "%"
                | "||" => t.text.clone(),
                "~~*" => "LIKE".into(),
                "!~~*" => "NOT LIKE".into(),
                "~~" | "!~~" => {
                    return Err("a case-sensitive LIKE (SQLite's LIKE ignores case)".into())
                }
                "~" | "~*" | "!~" | "!~*" => return Err("a regular expression match".into()),
                other => return Err(format!("the operator {other}")),
            },
            Kind::Word
                if toks
                    .get(i + 1)
                    .is_some_and(|n| n.kind == Kind::Str && n.start == t.end) =>
            {
                return Err(format!("the {}'…' string form", t.text));
            }
            Kind::Word if KEYWORDS.contains(&t.text.to_ascii_uppercase().as_str()) => {
                t.text.to_ascii_uppercase()
            }
            Kind::Word if t.is_word("ILIKE") => "LIKE".into(),
            Kind::Word if ["ANY", "ALL", "SOME", "ARRAY"].iter().any(|w| t.is_word(w)) => {
                return Err("an array comparison (ANY/ALL)".into());
            }
            Kind::Word | Kind::Ident if call => {
                let lower = t.text.to_ascii_lowercase();
                match FUNCTIONS.iter().find(|(pg, _)| *pg == lower) {
                    Some((_, sqlite)) => {
                        pieces.push(((*sqlite).to_owned(), true));
                        continue;
                    }
                    None => return Err(format!("the function {}()", t.text)),
                }
            }
            Kind::Word | Kind::Ident => column(&t.text)?,
        };
        // A sign sticks to its operand only: glued to an operator (`- >`) it would make another one (`->`),
        // and glued to a keyword (`+ LIKE`, which `+ ~~*` becomes) it would stick on the next reading only.
        let sign = (t.is_op("-") || t.is_op("+"))
            && toks.get(i + 1).is_some_and(|n| {
                n.kind != Kind::Op
                    && !(n.kind == Kind::Word
                        && KEYWORDS.contains(&n.text.to_ascii_uppercase().as_str()))
            });
        let unary = sign
            && i.checked_sub(1).is_none_or(|p| {
                let p = &toks[p];
                let upper = p.text.to_ascii_uppercase();
                p.is_punct("(")
                    || p.is_punct(",")
                    || p.kind == Kind::Op
                    || (p.kind == Kind::Word
                        && KEYWORDS.contains(&upper.as_str())
                        && !["NULL", "TRUE", "FALSE", "END"].contains(&upper.as_str()))
            });
        pieces.push((piece, unary));
    }
    let mut text = String::new();
    for (n, (piece, _)) in pieces.iter().enumerate() {
        // A sign before a signed number keeps its space: `-` glued to `-1` would be `--1`, a comment.
        let stuck = n > 0 && pieces[n - 1].1 && !piece.starts_with(['-', '+']);
        let glue = n > 0 && piece != ")" && piece != "," && pieces[n - 1].0 != "(" && !stuck;
        if glue {
            text.push(' ');
        }
        text.push_str(piece);
    }
    Ok(text)
}

/// True for a literal, a quoted name, or a bare word that is not a keyword (a column).
fn is_value(t: &Token) -> bool {
    match t.kind {
        Kind::Str | Kind::Number | Kind::Ident => true,
        Kind::Word => {
            !KEYWORDS.contains(&t.text.to_ascii_uppercase().as_str()) && !t.is_word("ILIKE")
        }
        _ => false,
    }
}

/// The expression inside `pg_get_constraintdef`'s `CHECK (…)` (a `NO INHERIT` after it is ignored).
pub(crate) fn check_body(def: &str) -> Result<&str, String> {
    let toks = tokens(def)?;
    let open = match toks.as_slice() {
        [c, o, ..] if c.is_word("CHECK") && o.is_punct("(") => 1,
        _ => return Err("not a CHECK (…) definition".into()),
    };
    let close = matching_paren(&toks, open).ok_or("unbalanced parentheses")?;
    match &toks[close + 1..] {
        [] => {}
        [n, i] if n.is_word("NO") && i.is_word("INHERIT") => {}
        rest => {
            let after = &def[rest[0].start..];
            return Err(format!("{after} after the expression"));
        }
    }
    if close == open + 1 {
        return Err("an empty CHECK".into());
    }
    Ok(&def[toks[open + 1].start..toks[close - 1].end])
}

/// Translates a DEFAULT expression to SQLite: `Ok(None)` for none (`NULL`, a sequence's `nextval`).
/// Accepts PostgreSQL's spelling (`pg_get_expr`) and the SQLite spellings it produces, so a plan's
/// defaults from either direction go through it.
pub(crate) fn translate_default(expr: &str) -> Result<Option<String>, String> {
    let all = tokens(expr)?;
    let toks = unwrap_parens(&all);
    if toks.is_empty() {
        return Err("an empty default".into());
    }
    if is_nextval(expr) {
        return Ok(None);
    }
    // A literal followed by casts only: `'x'::text`, `'-1'::integer`, `NULL::character varying`.
    let literal_end = toks
        .iter()
        .position(|t| t.kind == Kind::Cast)
        .unwrap_or(toks.len());
    let casts = &toks[literal_end..];
    let cast_to = |ty: &str| {
        casts.iter().any(|t| t.is_word(ty)) && casts.iter().all(|t| t.kind != Kind::Punct)
    };
    let numeric_cast = SIMPLE_CASTS
        .iter()
        .any(|(words, numeric)| *numeric && cast_to(words[0]));
    match &toks[..literal_end] {
        [t] if t.is_word("NULL") => return Ok(None),
        [t] if t.is_word("TRUE") => return Ok(Some("1".into())),
        [t] if t.is_word("FALSE") => return Ok(Some("0".into())),
        [t] if t.kind == Kind::Str => {
            let text = unquote(&t.text);
            if cast_to("bytea") {
                if let Some(hex) = text.strip_prefix("\\x") {
                    if hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Ok(Some(format!("X'{hex}'")));
                    }
                }
                return Err("a bytea literal not in hex form".into());
            }
            if cast_to("boolean") {
                return match text.to_ascii_lowercase().as_str() {
                    "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Some("1".into())),
                    "f" | "false" | "n" | "no" | "off" | "0" => Ok(Some("0".into())),
                    _ => Err("not a boolean".into()),
                };
            }
            if numeric_cast {
                return plain_number(&text)
                    .map(|n| Some(n.to_owned()))
                    .ok_or_else(|| "not a number".into());
            }
            return Ok(Some(t.text.clone()));
        }
        [t] if t.kind == Kind::Number => return Ok(Some(t.text.clone())),
        // SQLite's blob literal, as read_plan writes a bytea default.
        [x, s]
            if x.is_word("X")
                && s.kind == Kind::Str
                && x.end == s.start
                && unquote(&s.text).bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            return Ok(Some(format!("X{}", s.text)));
        }
        [m, t] if m.is_op("-") && t.kind == Kind::Number => {
            return Ok(Some(format!("-{}", t.text)))
        }
        _ => {}
    }
    let words: Vec<String> = toks
        .iter()
        .filter(|t| !t.is_punct("(") && !t.is_punct(")"))
        .map(|t| t.text.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let now = match words.as_slice() {
        ["now"
        | "transaction_timestamp"
        | "statement_timestamp"
        | "current_timestamp"
        | "localtimestamp"] => Some("CURRENT_TIMESTAMP"),
        ["current_date"] => Some("CURRENT_DATE"),
        ["current_time" | "localtime"] => Some("CURRENT_TIME"),
        // What the forward direction writes for SQLite's CURRENT_TIMESTAMP in a text column.
        ["to_char", "now", "at", "time", "zone", "'utc'", ",", "'yyyy-mm-dd hh24:mi:ss'"]
        | ["to_char", "now", "at", "time", "zone", "'utc'", "::", "text", ",", "'yyyy-mm-dd hh24:mi:ss'", "::", "text"] => {
            Some("CURRENT_TIMESTAMP")
        }
        _ => None,
    };
    now.map(|n| Some(n.to_owned()))
        .ok_or_else(|| "no SQLite counterpart".to_owned())
}

/// True for `nextval(…)`, the default of a `serial` column.
pub(crate) fn is_nextval(expr: &str) -> bool {
    let Ok(toks) = tokens(expr) else {
        return false;
    };
    let toks = unwrap_parens(&toks);
    matches!(toks.first(), Some(t) if t.is_word("nextval"))
        && toks.get(1).is_some_and(|t| t.is_punct("("))
        && matching_paren(toks, 1) == Some(toks.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(expr: &str, columns: &[&str]) -> Result<String, String> {
        translate_expr(expr, columns)
    }

    #[test]
    fn defaults() {
        let d = |e: &str| translate_default(e);
        assert_eq!(d("nextval('t_id_seq'::regclass)"), Ok(None));
        assert_eq!(d("nextval('\"we\"\"ird_id_seq\"'::regclass)"), Ok(None));
        assert_eq!(d("NULL::character varying"), Ok(None));
        assert_eq!(d("now()"), Ok(Some("CURRENT_TIMESTAMP".into())));
        assert_eq!(d("CURRENT_TIMESTAMP"), Ok(Some("CURRENT_TIMESTAMP".into())));
        assert_eq!(d("CURRENT_DATE"), Ok(Some("CURRENT_DATE".into())));
        assert_eq!(
            d("to_char((now() AT TIME ZONE 'UTC'::text), 'YYYY-MM-DD HH24:MI:SS'::text)"),
            Ok(Some("CURRENT_TIMESTAMP".into()))
        );
        assert_eq!(
            d("to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"),
            Ok(Some("CURRENT_TIMESTAMP".into()))
        );
        assert_eq!(d("'x'::text"), Ok(Some("'x'".into())));
        assert_eq!(d("'it''s'::character varying"), Ok(Some("'it''s'".into())));
        assert_eq!(d("'G'::bpchar"), Ok(Some("'G'".into())));
        assert_eq!(d("'{}'::jsonb"), Ok(Some("'{}'".into())));
        assert_eq!(d("'0'"), Ok(Some("'0'".into())));
        assert_eq!(d("0"), Ok(Some("0".into())));
        assert_eq!(d("4.99"), Ok(Some("4.99".into())));
        assert_eq!(d("(0)"), Ok(Some("0".into())));
        assert_eq!(d("'-1'::integer"), Ok(Some("-1".into())));
        assert_eq!(d("'-2.5'::numeric"), Ok(Some("-2.5".into())));
        assert_eq!(d("'1e10'::double precision"), Ok(Some("1e10".into())));
        assert_eq!(d("-1"), Ok(Some("-1".into())));
        assert_eq!(d("true"), Ok(Some("1".into())));
        assert_eq!(d("false"), Ok(Some("0".into())));
        assert_eq!(d("'\\x00ff'::bytea"), Ok(Some("X'00ff'".into())));
        assert!(d("'NaN'::numeric").is_err());
        assert!(d("gen_random_uuid()").is_err());
        assert!(d("(now() + '1 day'::interval)").is_err());
        assert!(d("lower('X'::text)").is_err());
        assert!(d("'[1,2]'::int4range").is_ok(), "a literal keeps its text");
        // Idempotent on its own output.
        for out in [
            "CURRENT_TIMESTAMP",
            "CURRENT_DATE",
            "'x'",
            "-1",
            "1",
            "2.5",
            "X'00ff'",
        ] {
            assert_eq!(d(out), Ok(Some(out.to_owned())), "{out}");
        }
    }

    #[test]
    fn checks() {
        let cols = ["Discount", "age", "status", "name", "select", "we\"ird"];
        assert_eq!(
            check(
                "((\"Discount\" >= (0)::double precision) AND (\"Discount\" <= (1)::double precision))",
                &cols
            ),
            Ok("((\"Discount\" >= (0)) AND (\"Discount\" <= (1)))".into())
        );
        assert_eq!(check("(age >= 0)", &cols), Ok("(\"age\" >= 0)".into()));
        assert_eq!(
            check("((- age) < - 1) AND (age - 1 > -2)", &cols),
            Ok("((-\"age\") < -1) AND (\"age\" - 1 > -2)".into())
        );
        assert_eq!(
            check("((age)::numeric > '-1'::numeric)", &cols),
            Ok("((\"age\") > -1)".into())
        );
        assert_eq!(
            check("(status = ANY (ARRAY['a'::text, 'b'::text]))", &cols),
            Ok("(\"status\" IN ('a', 'b'))".into())
        );
        assert_eq!(
            check(
                "((status)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[]))",
                &cols
            ),
            Ok("((\"status\") IN ('a', 'b'))".into())
        );
        assert_eq!(
            check("(status <> ALL (ARRAY[1, 2]))", &cols),
            Ok("(\"status\" NOT IN (1, 2))".into())
        );
        assert_eq!(
            check("(name ~~* 'a%'::text)", &cols),
            Ok("(\"name\" LIKE 'a%')".into())
        );
        assert_eq!(
            check("(char_length(name) > 2)", &cols),
            Ok("(length(\"name\") > 2)".into())
        );
        assert_eq!(
            check(
                "((\"select\" IS NOT NULL) AND (\"we\"\"ird\" <> ''::text))",
                &cols
            ),
            Ok("((\"select\" IS NOT NULL) AND (\"we\"\"ird\" <> ''))".into())
        );
        let err = |e: &str| check(e, &cols).unwrap_err();
        assert!(err("(name ~ '^[a-z]+$'::text)").contains("regular expression"));
        assert!(err("(name ~~ 'a%'::text)").contains("case-sensitive"));
        assert!(err("(status = ANY (ARRAY[name, 'b'::text]))").contains("ANY"));
        assert!(err("((age)::numeric(10,2) > 0)").contains("::numeric"));
        assert!(err("((age + 1)::text <> ''::text)").contains("::text"));
        assert!(err("(lower(name)::text <> ''::text)").contains("::text"));
        assert!(err("(name <> E'a\\n'::text)").contains("E'…'"));
        assert!(err("(md5(name) <> ''::text)").contains("md5"));
        assert!(err("(other > 0)").contains("\"other\""));
        assert!(err("((name)::date > '2000-01-01'::date)").contains("::date"));
        // Found by fuzzing: two values in a row, and a sign before an operator.
        assert!(err("0'-2.5'::numeric").contains("two values"));
        let spaced = "(\"age\" < - > 1)";
        assert_eq!(check("(age < - >1)", &cols).as_deref(), Ok(spaced));
        assert_eq!(check(spaced, &cols).as_deref(), Ok(spaced));
        // The output translates to itself.
        for e in [
            "((\"Discount\" >= (0)) AND (\"Discount\" <= (1)))",
            "(\"status\" NOT IN (1, 2))",
            "(length(\"name\") > 2)",
            "(\"age\" > (-100))",
            "\"name\" LIKE 'a%'",
        ] {
            assert_eq!(check(e, &cols).as_deref(), Ok(e));
        }
        // The forward direction's PostgreSQL spelling.
        assert_eq!(
            check("\"name\" ILIKE 'a%' AND strpos(\"name\", 'b') > 0", &cols),
            Ok("\"name\" LIKE 'a%' AND instr(\"name\", 'b') > 0".into())
        );
    }

    #[test]
    fn a_cast_after_an_opening_parenthesis_has_no_operand() {
        // libFuzzer: the cast's operand was looked for one past the end of the tokens read so far.
        let cols = ["no"];
        for e in ["(no)w( ::interval)", "f( ::integer)", "( ::text)"] {
            let _ = check(e, &cols);
        }
        // libFuzzer: a sign before an operator that becomes a keyword stuck to it on the second reading.
        let once = check(" + ~~*1", &cols).unwrap();
        assert_eq!(check(&once, &cols).as_deref(), Ok(once.as_str()));
        // A parenthesised operand still loses its cast.
        assert_eq!(check("(('1')::integer)", &cols).as_deref(), Ok("((1))"));
        // libFuzzer: a value right after a closing parenthesis read as a signed number the first time and
        // as an operator and a number the second.
        assert!(check(")'-5'::numeric% ", &cols).is_err());
        assert!(check("(no) '-5'::numeric", &cols).is_err());
        for e in ["(no) - 5", "(no) -5", "(no)-5", "(no)-(-5)"] {
            let once = check(e, &cols).unwrap();
            assert_eq!(check(&once, &cols).as_deref(), Ok(once.as_str()), "{e:?}");
        }
        // libFuzzer: a sign before a negative literal was glued to it, making `--1`, a comment in SQL.
        for e in [
            "-'-1'::numeric",
            "-(-1)",
            "- -1",
            "+'-2.5'::numeric",
            "no - -1",
        ] {
            let once = check(e, &cols).unwrap();
            assert!(!once.contains("--"), "{e:?} → {once:?}");
            assert_eq!(check(&once, &cols).as_deref(), Ok(once.as_str()), "{e:?}");
        }
    }

    #[test]
    fn check_definitions() {
        assert_eq!(check_body("CHECK ((age >= 0))"), Ok("(age >= 0)"));
        assert_eq!(
            check_body("CHECK ((age >= 0)) NO INHERIT"),
            Ok("(age >= 0)")
        );
        assert!(check_body("CHECK ((age >= 0)) NOT VALID").is_err());
        assert!(check_body("UNIQUE (a)").is_err());
    }
}
