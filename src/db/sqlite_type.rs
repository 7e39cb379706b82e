//! The one table of SQLite declared types, shared by the SQLite sink and source (what a column holds,
//! what type a new column gets), the schema reader of `ferry migrate` and its type rules (what a column
//! becomes in PostgreSQL), and the SQLite DDL of the way back (what a PostgreSQL type becomes in SQLite).
//!
//! SQLite accepts any type name and only derives an affinity from it; ferry reads more into the name, the
//! same way everywhere. The declared name is upper-cased and its `(…)` parameters read separately; first
//! match wins:
//!
//! | declared type                                   | class         | ferry writes it as        |
//! |-------------------------------------------------|---------------|---------------------------|
//! | no type                                         | untyped       | (no type)                 |
//! | `JSON`, `JSONB`, `JSON TEXT`                    | JSON          | `JSON TEXT`               |
//! | `BOOL`, `BOOLEAN`                               | boolean       | `BOOLEAN`                 |
//! | name containing `INT`                           | integer       | `INTEGER`                 |
//! | `YEAR`                                          | year (MySQL)  | –                         |
//! | `DATE`                                          | date          | `DATE`                    |
//! | `DATETIME`, `TIMESTAMP…`                        | timestamp     | `TIMESTAMP` (with offset), `DATETIME` (without) |
//! | `ENUM`, `SET`                                   | enum (MySQL)  | –                         |
//! | `DECIMAL_TEXT`, `NUMERIC`, `DECIMAL`, `DEC`, `NUMBER`, `MONEY` (± `(p,s)`) | exact decimal | `NUMERIC(p,s)` up to 15 digits, else `DECIMAL_TEXT` (± `(p,s)`) |
//! | name containing `CHAR`, `CLOB`, `TEXT`          | text          | `TEXT`, `VARCHAR(n)`      |
//! | name containing `BLOB`                          | bytes         | `BLOB`                    |
//! | name containing `REAL`, `FLOA`, `DOUB`          | float         | `REAL`                    |
//! | anything else                                   | other         | –                         |
//!
//! Exact decimals of at most 15 digits are written `NUMERIC(p,s)`: NUMERIC affinity keeps up to 15
//! significant digits exactly and compares values as numbers, as CHECK constraints and queries expect.
//! Wider ones, and decimals of no declared precision, are written `DECIMAL_TEXT`: its TEXT affinity keeps
//! `12345678901234567890.10` digit for digit, where NUMERIC affinity would turn it into a double of 15
//! digits (the price: SQLite compares such values as text). A column declared `BLOB` holds bytes (base64
//! text loaded into it is decoded), as PostgreSQL's `bytea` does.
//!
//! JSON columns are written `JSON TEXT` for the same reason: a bare `JSON` has NUMERIC affinity, so a JSON
//! number such as `12345678901234567890.1` was stored as a double of 15 digits (and read back so, which
//! DuckDB's SQLite reader refuses in a text column), and every JSON text was first tried as a number (about
//! 0.5 % of a templated load's instructions). `JSON TEXT` is TEXT affinity by SQLite's rules while its first
//! word still says JSON to readers that go by it (Python's `PARSE_DECLTYPES` converters). Tables declared
//! `JSON` read as before. (`TIMESTAMP` keeps NUMERIC affinity: ferry's timestamp text never reads as a
//! number, and DuckDB and others know the name.)

/// The significant digits a double (SQLite's REAL) keeps exactly through text and back.
const DOUBLE_DIGITS: u32 = 15;

/// What a SQLite declared type means to ferry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteType {
    /// No declared type: values are taken as stored.
    Untyped,
    /// A whole number.
    Integer,
    /// 0 or 1.
    Boolean,
    /// MySQL's `YEAR`: a small whole number.
    Year,
    /// `YYYY-MM-DD` text.
    Date,
    /// Date-time text; `zoned` when ferry writes it with its offset (`TIMESTAMP`), not for `DATETIME`.
    Timestamp {
        /// True for `TIMESTAMP…`, false for `DATETIME`.
        zoned: bool,
    },
    /// JSON text.
    Json,
    /// An exact decimal, with the precision and scale declared.
    Decimal {
        /// `(p,s)` or `(p)`, when declared.
        precision: Option<(u32, Option<u32>)>,
    },
    /// MySQL's `ENUM(…)` / `SET(…)`: text (the value list is not kept).
    Enum,
    /// Text; `length` for a `…CHAR(n)` type.
    Text {
        /// The declared length of a character type.
        length: Option<u32>,
    },
    /// Raw bytes.
    Blob,
    /// A binary floating-point number.
    Float,
    /// A name ferry does not know (`UUID`, `GEOMETRY`, …).
    Other,
}

impl SqliteType {
    /// Reads a declared type.
    ///
    /// ```
    /// use ferry::db::sqlite_type::SqliteType;
    /// assert_eq!(SqliteType::of("decimal_text(12,2)"), SqliteType::Decimal { precision: Some((12, Some(2))) });
    /// assert_eq!(SqliteType::of("TINYINT UNSIGNED"), SqliteType::Integer);
    /// assert_eq!(SqliteType::of("BLOB"), SqliteType::Blob);
    /// ```
    pub fn of(declared: &str) -> SqliteType {
        let (base, params) = split_params(&declared.trim().to_ascii_uppercase());
        let has = |s: &str| base.contains(s);
        let precision = match params.as_slice() {
            [p, s] => Some((*p, Some(*s))),
            [p] => Some((*p, None)),
            _ => None,
        };
        match base.as_str() {
            "" => SqliteType::Untyped,
            "JSON" | "JSONB" | "JSON TEXT" => SqliteType::Json,
            "BOOL" | "BOOLEAN" => SqliteType::Boolean,
            _ if has("INT") => SqliteType::Integer,
            "YEAR" => SqliteType::Year,
            "DATE" => SqliteType::Date,
            "DATETIME" => SqliteType::Timestamp { zoned: false },
            _ if base.starts_with("TIMESTAMP") => SqliteType::Timestamp { zoned: true },
            "ENUM" | "SET" => SqliteType::Enum,
            "DECIMAL_TEXT" | "NUMERIC" | "DECIMAL" | "DEC" => SqliteType::Decimal { precision },
            "NUMBER" | "MONEY" => SqliteType::Decimal { precision: None },
            _ if has("CHAR") || has("CLOB") || has("TEXT") => SqliteType::Text {
                length: match params.as_slice() {
                    [n] if has("CHAR") => Some(*n),
                    _ => None,
                },
            },
            _ if has("BLOB") => SqliteType::Blob,
            _ if has("REAL") || has("FLOA") || has("DOUB") => SqliteType::Float,
            _ => SqliteType::Other,
        }
    }

    /// The declared type ferry gives a new column of this class (`None` for the classes it never writes).
    pub fn declared(self) -> Option<String> {
        Some(match self {
            SqliteType::Untyped => String::new(),
            SqliteType::Integer => "INTEGER".into(),
            SqliteType::Boolean => "BOOLEAN".into(),
            SqliteType::Date => "DATE".into(),
            SqliteType::Timestamp { zoned: true } => "TIMESTAMP".into(),
            SqliteType::Timestamp { zoned: false } => "DATETIME".into(),
            SqliteType::Json => "JSON TEXT".into(),
            SqliteType::Decimal { precision: None } => "DECIMAL_TEXT".into(),
            SqliteType::Decimal {
                precision: Some((p, scale)),
            } => {
                let name = match p <= DOUBLE_DIGITS {
                    true => "NUMERIC",
                    false => "DECIMAL_TEXT",
                };
                match scale {
                    Some(s) => format!("{name}({p},{s})"),
                    None => format!("{name}({p})"),
                }
            }
            SqliteType::Text { length: None } => "TEXT".into(),
            SqliteType::Text { length: Some(n) } => format!("VARCHAR({n})"),
            SqliteType::Blob => "BLOB".into(),
            SqliteType::Float => "REAL".into(),
            SqliteType::Year | SqliteType::Enum | SqliteType::Other => return None,
        })
    }
}

/// Splits `name(1, 2) rest` into `name rest` (spaces folded) and `[1, 2]`; non-numeric parameters are
/// dropped.
pub(crate) fn split_params(t: &str) -> (String, Vec<u32>) {
    let fold = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match t.find('(') {
        Some(open) => {
            let close = t.rfind(')').unwrap_or(t.len());
            let inner = t.get(open + 1..close).unwrap_or("");
            let params = inner
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            let rest = t.get(close + 1..).unwrap_or("");
            (fold(&format!("{} {}", &t[..open], rest)), params)
        }
        None => (fold(t), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_date_and_decimals_mean_one_thing_everywhere() {
        assert_eq!(SqliteType::of("BLOB"), SqliteType::Blob);
        assert_eq!(SqliteType::of("longblob"), SqliteType::Blob);
        assert_eq!(SqliteType::of(""), SqliteType::Untyped);
        assert_eq!(SqliteType::of("DATE"), SqliteType::Date);
        assert_eq!(
            SqliteType::of("DATETIME"),
            SqliteType::Timestamp { zoned: false }
        );
        assert_eq!(
            SqliteType::of("timestamp with time zone"),
            SqliteType::Timestamp { zoned: true }
        );
        // DATE_ADDED is no date type: SQLite gives it NUMERIC affinity and ferry does not guess.
        assert_eq!(SqliteType::of("DATE_ADDED"), SqliteType::Other);
        for (declared, precision) in [
            ("DECIMAL_TEXT", None),
            ("NUMERIC(10,2)", Some((10, Some(2)))),
            ("decimal(5)", Some((5, None))),
            ("MONEY", None),
        ] {
            assert_eq!(
                SqliteType::of(declared),
                SqliteType::Decimal { precision },
                "{declared}"
            );
        }
        assert_eq!(
            SqliteType::of("NVARCHAR(40)"),
            SqliteType::Text { length: Some(40) }
        );
        assert_eq!(SqliteType::of("TINYINT UNSIGNED"), SqliteType::Integer);
        assert_eq!(SqliteType::of("ENUM('a','b')"), SqliteType::Enum);
        assert_eq!(SqliteType::of("UUID"), SqliteType::Other);
    }

    #[test]
    fn what_ferry_writes_reads_back_as_the_same_class() {
        for class in [
            SqliteType::Untyped,
            SqliteType::Integer,
            SqliteType::Boolean,
            SqliteType::Date,
            SqliteType::Timestamp { zoned: true },
            SqliteType::Timestamp { zoned: false },
            SqliteType::Json,
            SqliteType::Decimal { precision: None },
            SqliteType::Decimal {
                precision: Some((30, Some(10))),
            },
            SqliteType::Decimal {
                precision: Some((10, Some(2))),
            },
            SqliteType::Text { length: None },
            SqliteType::Text { length: Some(8) },
            SqliteType::Blob,
            SqliteType::Float,
        ] {
            let declared = class.declared().unwrap();
            assert_eq!(SqliteType::of(&declared), class, "{declared}");
        }
    }

    #[test]
    fn narrow_decimals_compare_as_numbers_and_keep_their_digits() {
        // NUMERIC(10,2) keeps up to 15 digits exactly and a CHECK compares numbers, as the source's did
        // (as text, '-1.5' > -100 would be false).
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let declared = SqliteType::Decimal {
            precision: Some((10, Some(2))),
        }
        .declared()
        .unwrap();
        assert_eq!(declared, "NUMERIC(10,2)");
        conn.execute_batch(&format!(
            "CREATE TABLE t (a {declared} CHECK (a > -100)); INSERT INTO t VALUES ('-1.5'), ('12345678.91')"
        ))
        .unwrap();
        let back: Vec<String> = conn
            .prepare("SELECT CAST(a AS TEXT) FROM t")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(back, ["-1.5", "12345678.91"]);
    }

    #[test]
    fn wide_decimals_are_declared_with_text_affinity() {
        // The reason for DECIMAL_TEXT: NUMERIC affinity would round the value to a 15-digit double.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let declared = SqliteType::Decimal {
            precision: Some((30, Some(10))),
        }
        .declared()
        .unwrap();
        conn.execute_batch(&format!("CREATE TABLE t (a {declared})"))
            .unwrap();
        conn.execute(
            "INSERT INTO t VALUES (?1)",
            ["12345678901234567890.1234567890"],
        )
        .unwrap();
        let (value, class): (String, String) = conn
            .query_row("SELECT a, typeof(a) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (value.as_str(), class.as_str()),
            ("12345678901234567890.1234567890", "text")
        );
    }

    #[test]
    fn json_columns_keep_every_digit_of_a_json_number() {
        // The reason for JSON TEXT: a bare JSON column's NUMERIC affinity turns a JSON number into a double.
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let declared = SqliteType::Json.declared().unwrap();
        conn.execute_batch(&format!("CREATE TABLE t (a {declared}, b JSON)"))
            .unwrap();
        let number = "12345678901234567890.1";
        conn.execute("INSERT INTO t VALUES (?1, ?1)", [number])
            .unwrap();
        let row: (String, String, String) = conn
            .query_row("SELECT a, typeof(a), typeof(b) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(row, (number.to_owned(), "text".into(), "real".into()));
    }
}
