//! Value profiles: one scan per table counts, for every column, the storage classes SQLite actually
//! holds (`typeof`) and the shapes of its values (0/1 integers, JSON object/array text, date and
//! date-time text), so type translation can go by the data as well as the declared type.
//!
//! Shape checks are cheap: JSON is parsed only for text that starts with `{` or `[`, and dates are
//! checked byte by byte.

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::introspect::Table;
use crate::db::quote_ident;
use crate::error::{Error, Position, Result, Stage};

/// What one column holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnProfile {
    /// NULLs.
    pub nulls: u64,
    /// Integers.
    pub integers: u64,
    /// Reals.
    pub reals: u64,
    /// Texts.
    pub texts: u64,
    /// Blobs.
    pub blobs: u64,
    /// Reals with a fractional part or outside the i64 range.
    pub fractional_reals: u64,
    /// Integers other than 0 and 1.
    pub integers_not_bool: u64,
    /// Texts other than `0`, `1`, `true`, `false`, `t`, `f` (any case).
    pub texts_not_bool: u64,
    /// Texts that are not a JSON object or array.
    pub texts_not_json: u64,
    /// Texts not shaped `YYYY-MM-DD`.
    pub texts_not_date: u64,
    /// Texts shaped neither `YYYY-MM-DD` nor `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH[:MM]]`.
    pub texts_not_datetime: u64,
    /// Texts that do not parse as a number.
    pub texts_not_number: u64,
    /// The longest text, in characters.
    pub max_text_chars: u64,
    /// The smallest integer.
    pub min_integer: Option<i64>,
    /// The largest integer.
    pub max_integer: Option<i64>,
}

impl ColumnProfile {
    /// Non-null values.
    pub fn values(&self) -> u64 {
        self.integers + self.reals + self.texts + self.blobs
    }

    /// True when every integer is 0 or 1.
    pub fn all_bool_integers(&self) -> bool {
        self.integers_not_bool == 0
    }

    /// True when there is text and all of it is JSON objects or arrays.
    pub fn all_json_text(&self) -> bool {
        self.texts > 0 && self.texts_not_json == 0
    }

    /// A one-line summary: `integer:347 null:2`.
    pub fn summary(&self) -> String {
        let parts = [
            ("integer", self.integers),
            ("real", self.reals),
            ("text", self.texts),
            ("blob", self.blobs),
            ("null", self.nulls),
        ];
        let text: Vec<String> = parts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        if text.is_empty() {
            "empty".into()
        } else {
            text.join(" ")
        }
    }

    fn add(&mut self, value: ValueRef<'_>) {
        match value {
            ValueRef::Null => self.nulls += 1,
            ValueRef::Integer(i) => {
                self.integers += 1;
                if i != 0 && i != 1 {
                    self.integers_not_bool += 1;
                }
                self.min_integer = Some(self.min_integer.map_or(i, |m| m.min(i)));
                self.max_integer = Some(self.max_integer.map_or(i, |m| m.max(i)));
            }
            ValueRef::Real(r) => {
                self.reals += 1;
                if r.fract() != 0.0 || !(-9.2e18..9.2e18).contains(&r) {
                    self.fractional_reals += 1;
                }
            }
            ValueRef::Text(bytes) => {
                self.texts += 1;
                let text = String::from_utf8_lossy(bytes);
                self.max_text_chars = self.max_text_chars.max(text.chars().count() as u64);
                let t = text.trim();
                if !["0", "1", "true", "false", "t", "f"]
                    .iter()
                    .any(|b| t.eq_ignore_ascii_case(b))
                {
                    self.texts_not_bool += 1;
                }
                if !is_json_container(t) {
                    self.texts_not_json += 1;
                }
                let date = is_date(&text);
                if !date {
                    self.texts_not_date += 1;
                }
                if !date && !is_datetime(&text) {
                    self.texts_not_datetime += 1;
                }
                if t.parse::<f64>().is_err() {
                    self.texts_not_number += 1;
                }
            }
            ValueRef::Blob(_) => self.blobs += 1,
        }
    }
}

/// What one table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableProfile {
    /// Rows.
    pub rows: u64,
    /// Per column, in the table's column order.
    pub columns: Vec<(String, ColumnProfile)>,
}

impl TableProfile {
    /// The profile of column `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
}

/// Scans `table` once and profiles every column.
pub fn profile_table(conn: &Connection, label: &str, table: &Table) -> Result<TableProfile> {
    let err = |e: rusqlite::Error| {
        Error::data(
            Stage::Source,
            Position::file(label),
            format!("sqlite {label}: cannot profile {}: {e}", table.name),
        )
    };
    let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    let mut profile = TableProfile {
        rows: 0,
        columns: names
            .iter()
            .map(|n| ((*n).to_owned(), ColumnProfile::default()))
            .collect(),
    };
    if names.is_empty() {
        return Ok(profile);
    }
    let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        list.join(", "),
        quote_ident(&table.name)
    );
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        profile.rows += 1;
        for (i, (_, column)) in profile.columns.iter_mut().enumerate() {
            column.add(row.get_ref(i).map_err(err)?);
        }
    }
    Ok(profile)
}

fn is_json_container(text: &str) -> bool {
    // Only checked, never kept: nothing is allocated for the parsed value.
    (text.starts_with('{') || text.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

/// `YYYY-MM-DD` with a plausible month and day.
pub fn is_date(text: &str) -> bool {
    date_bytes(text.as_bytes())
}

fn date_bytes(b: &[u8]) -> bool {
    b.len() == 10
        && digits(&b[0..4])
        && b[4] == b'-'
        && digits(&b[5..7])
        && b[7] == b'-'
        && digits(&b[8..10])
        && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')))
        && (1..=31).contains(&((b[8] - b'0') * 10 + (b[9] - b'0')))
}

/// `YYYY-MM-DD[T ]HH:MM[:SS[.fff…]][Z|±HH[:MM]]`.
pub fn is_datetime(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() < 16 || !date_bytes(&b[..10]) || !(b[10] == b' ' || b[10] == b'T') {
        return false;
    }
    let time = &b[11..];
    if !(digits(&time[0..2]) && time[2] == b':' && digits(&time[3..5])) {
        return false;
    }
    let mut rest = &time[5..];
    if rest.len() >= 3 && rest[0] == b':' && digits(&rest[1..3]) {
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            rest = &rest[1 + n..];
        }
    }
    match rest {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2] => digits(&[*h1, *h2]),
        [b'+' | b'-', h1, h2, b':', m1, m2] | [b'+' | b'-', h1, h2, m1, m2] => {
            digits(&[*h1, *h2, *m1, *m2])
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::introspect::tests::{corpus, fixture};
    use super::super::introspect::Schema;
    use super::*;

    #[test]
    fn shapes() {
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2024-13-01") && !is_date("24-01-01") && !is_date("2024-01-01 00:00:00"));
        assert!(is_datetime("2009-01-01 00:00:00"));
        assert!(is_datetime("2009-01-01T10:20:30.123Z"));
        assert!(is_datetime("2009-01-01T10:20+02:00"));
        assert!(!is_datetime("2009-01-01 10") && !is_datetime("yesterday"));
        assert!(is_json_container("{\"a\": [1]}") && is_json_container(" [1] ".trim()));
        assert!(!is_json_container("\"a\"") && !is_json_container("{oops"));
    }

    #[test]
    fn text_in_an_integer_column_is_counted() {
        let conn = fixture();
        let schema = Schema::read(&conn, "fixture").unwrap();
        let orders = profile_table(&conn, "fixture", schema.table("orders").unwrap()).unwrap();
        assert_eq!(orders.rows, 4);
        let amount = orders.column("amount").unwrap();
        assert_eq!((amount.integers, amount.texts, amount.reals), (2, 1, 1));
        assert_eq!(amount.fractional_reals, 1);
        assert_eq!(amount.summary(), "integer:2 real:1 text:1");
        let users = profile_table(&conn, "fixture", schema.table("users").unwrap()).unwrap();
        assert_eq!(users.rows, 2);
        assert!(users.column("is_admin").unwrap().all_bool_integers());
        assert!(!users.column("age").unwrap().all_bool_integers());
        assert!(users.column("settings_json").unwrap().all_json_text());
        let created = users.column("created_at").unwrap();
        assert_eq!((created.texts, created.texts_not_datetime), (2, 0));
        assert_eq!(created.max_text_chars, 19);
        assert_eq!(users.column("id").unwrap().max_integer, Some(2));
    }

    #[test]
    fn chinook_profile() {
        let conn = corpus("sqlite-chinook/Chinook_Sqlite.sqlite");
        let schema = Schema::read(&conn, "chinook").unwrap();
        let invoice = profile_table(&conn, "chinook", schema.table("Invoice").unwrap()).unwrap();
        assert_eq!(invoice.rows, 412);
        assert_eq!(invoice.column("Total").unwrap().reals, 412);
        let date = invoice.column("InvoiceDate").unwrap();
        assert_eq!(
            (date.texts, date.texts_not_datetime, date.texts_not_date),
            (412, 0, 412)
        );
        assert_eq!(invoice.column("BillingState").unwrap().nulls, 202);
        assert_eq!(invoice.column("InvoiceId").unwrap().max_integer, Some(412));
    }
}
