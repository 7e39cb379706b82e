//! The SQLite sink stage's per-row statements: prepared once for a load, then run for each row with the
//! row's cells bound where they lie — SQLite reads each text in place during the step instead of copying
//! it first (rusqlite binds every text as `SQLITE_TRANSIENT`, a copy and a free per cell: about 4 % of a
//! templated load's instructions; BENCHMARKS.md, "Thirteenth pass").

use std::ffi::{c_int, c_void, CStr};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use rusqlite::ffi;
use rusqlite::types::{ToSqlOutput, Value as Owned, ValueRef};
use rusqlite::{Connection, ToSql};

use super::Cell;

/// An insert or update prepared on a connection for the whole load, which it borrows so that it is
/// finalized before the connection closes.
pub(super) struct LoadStatement<'c> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    db: NonNull<ffi::sqlite3>,
    parameters: usize,
    /// The value made for a row's cells that have no text of their own (dates, UUIDs, lists), one per
    /// parameter, kept until the step has read it.
    made: Vec<Owned>,
    /// The text of a row's timestamps, one buffer per parameter, rewritten for each row.
    timestamp_texts: Vec<String>,
    connection: PhantomData<&'c Connection>,
}

impl<'c> LoadStatement<'c> {
    /// Prepares `sql` on `conn`, marked as a statement SQLite will run many times.
    pub(super) fn prepare(conn: &'c Connection, sql: &str) -> rusqlite::Result<LoadStatement<'c>> {
        // SAFETY: the handle is used only through this statement, which borrows the connection, on the
        // thread that holds the connection.
        let db = NonNull::new(unsafe { conn.handle() }).ok_or(rusqlite::Error::InvalidQuery)?;
        let length = c_int::try_from(sql.len()).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let mut stmt = ptr::null_mut();
        let mut tail = ptr::null();
        // SAFETY: `sql` outlives the call and `length` is its length in bytes; `stmt` and `tail` (a pointer
        // into `sql`) are written by SQLite.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                ffi::SQLITE_PREPARE_PERSISTENT,
                &mut stmt,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(error(db, rc));
        }
        // A null statement is SQL with nothing to run in it.
        let stmt = NonNull::new(stmt).ok_or(rusqlite::Error::InvalidQuery)?;
        // SAFETY: `stmt` is the statement just prepared.
        let count = unsafe { ffi::sqlite3_bind_parameter_count(stmt.as_ptr()) };
        let parameters = usize::try_from(count).unwrap_or(0);
        let statement = LoadStatement {
            stmt,
            db,
            parameters,
            made: vec![Owned::Null; parameters],
            timestamp_texts: vec![String::new(); parameters],
            connection: PhantomData,
        };
        // SQLite prepares the first statement only: anything after it would be left out unseen.
        let rest = (tail as usize)
            .checked_sub(sql.as_ptr() as usize)
            .and_then(|end| sql.get(end..))
            .unwrap_or("");
        if !rest.trim().is_empty() {
            return Err(rusqlite::Error::MultipleStatement);
        }
        Ok(statement)
    }

    /// Runs the statement with `cells` as its parameters, in order; the number of rows it changed.
    pub(super) fn execute(&mut self, cells: &[Cell<'_>]) -> rusqlite::Result<usize> {
        if cells.len() != self.parameters {
            return Err(rusqlite::Error::InvalidParameterCount(
                cells.len(),
                self.parameters,
            ));
        }
        let _rearm = Rearm(self.stmt);
        cells
            .iter()
            .enumerate()
            .try_for_each(|(i, cell)| self.bind(i, cell))?;
        self.step()
    }

    fn step(&mut self) -> rusqlite::Result<usize> {
        // SAFETY: `stmt` is live and every parameter is bound to memory that outlives the step.
        let rc = unsafe { ffi::sqlite3_step(self.stmt.as_ptr()) };
        match rc {
            // SAFETY: `db` is the open connection `stmt` was prepared on.
            ffi::SQLITE_DONE => Ok(unsafe { ffi::sqlite3_changes64(self.db.as_ptr()) } as usize),
            ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
            rc => Err(error(self.db, rc)),
        }
    }

    /// Binds parameter `index` (from 0) to `cell`: its own text or bytes in place (SQLite reads them
    /// during the step), or a value made for it and kept in `made` or `timestamp_texts` until then.
    fn bind(&mut self, index: usize, cell: &Cell<'_>) -> rusqlite::Result<()> {
        let value = match cell {
            // A timestamp's text is written over the one made for the last row: no allocation per row.
            Cell::Timestamp(at) => {
                let text = &mut self.timestamp_texts[index];
                text.clear();
                at.push_text(text);
                ValueRef::Text(text.as_bytes())
            }
            _ => match cell.to_sql()? {
                ToSqlOutput::Borrowed(value) => value,
                ToSqlOutput::Owned(value) => {
                    self.made[index] = value;
                    ValueRef::from(&self.made[index])
                }
                _ => {
                    return Err(error_with(
                        ffi::SQLITE_MISUSE,
                        "a value SQLite cannot take as a parameter",
                    ))
                }
            },
        };
        let stmt = self.stmt.as_ptr();
        // Parameters are numbered from 1; `index` is below `parameters`, a c_int.
        let number = index as c_int + 1;
        // SAFETY: `stmt` is live and `number` one of its parameters. Text and bytes are bound
        // `SQLITE_STATIC`: they belong to `cell`, `made` or `timestamp_texts`, all untouched until `execute`
        // has stepped and cleared the bindings (each parameter is bound once a row).
        let rc = unsafe {
            match value {
                ValueRef::Null => ffi::sqlite3_bind_null(stmt, number),
                ValueRef::Integer(n) => ffi::sqlite3_bind_int64(stmt, number, n),
                ValueRef::Real(x) => ffi::sqlite3_bind_double(stmt, number, x),
                // An empty string's pointer may dangle; a null one would bind NULL.
                ValueRef::Text(text) => ffi::sqlite3_bind_text64(
                    stmt,
                    number,
                    if text.is_empty() {
                        c"".as_ptr()
                    } else {
                        text.as_ptr().cast()
                    },
                    text.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                ValueRef::Blob([]) => ffi::sqlite3_bind_zeroblob(stmt, number, 0),
                ValueRef::Blob(bytes) => ffi::sqlite3_bind_blob64(
                    stmt,
                    number,
                    bytes.as_ptr().cast::<c_void>(),
                    bytes.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                ),
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(error(self.db, rc)),
        }
    }
}

/// Resets a statement for its next row and clears its bindings when dropped, whatever happened in the row
/// (an error, a panic), so that SQLite keeps no pointer into a row's cells once `execute` returns.
struct Rearm(NonNull<ffi::sqlite3_stmt>);

impl Drop for Rearm {
    fn drop(&mut self) {
        // SAFETY: the statement outlives this guard, which `execute` holds on its own stack frame.
        unsafe {
            ffi::sqlite3_reset(self.0.as_ptr());
            ffi::sqlite3_clear_bindings(self.0.as_ptr());
        }
    }
}

impl Drop for LoadStatement<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` was prepared on the connection this statement borrows, which is still open.
        unsafe {
            ffi::sqlite3_finalize(self.stmt.as_ptr());
        }
    }
}

/// SQLite's error for `rc`, with its message when the connection's last error is that one (as rusqlite
/// builds it, so that the sink's account of a refused row is the same).
#[cold]
fn error(db: NonNull<ffi::sqlite3>, rc: c_int) -> rusqlite::Error {
    // SAFETY: `db` is an open connection; the message is copied before any other call on it.
    let message = unsafe {
        let text = if ffi::sqlite3_errcode(db.as_ptr()) == rc {
            ffi::sqlite3_errmsg(db.as_ptr())
        } else {
            ffi::sqlite3_errstr(rc)
        };
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message)
}

fn error_with(rc: c_int, message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::record::Timestamp;

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch(
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, x REAL, at TIMESTAMP, b BLOB)",
        )
        .expect("table");
        conn
    }

    fn rows(conn: &Connection) -> Vec<String> {
        let mut read = conn
            .prepare("SELECT id || '|' || quote(n) || '|' || quote(x) || '|' || quote(at) || '|' || quote(b) FROM t ORDER BY rowid")
            .expect("select");
        let rows = read.query_map([], |r| r.get(0)).expect("rows");
        rows.collect::<rusqlite::Result<_>>().expect("text")
    }

    #[test]
    fn each_row_keeps_its_own_values_though_bound_in_place() {
        let conn = table();
        let mut insert = LoadStatement::prepare(&conn, "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)")
            .expect("prepared");
        let at = Timestamp::parse("2024-05-01T10:00:00+02:00").expect("timestamp");
        // Text that lives only for its row: each row is built, run and dropped before the next.
        for i in 0..3 {
            let id = format!("row-{i}");
            let bytes = vec![i as u8; i];
            let cells = [
                Cell::Text(Cow::Borrowed(&id)),
                Cell::Int(i as i64),
                if i == 1 { Cell::Null } else { Cell::Float(0.5) },
                Cell::Timestamp(at),
                Cell::Bytes(Cow::Borrowed(&bytes)),
            ];
            assert_eq!(insert.execute(&cells).expect("inserted"), 1);
        }
        let empty = [
            Cell::Text(Cow::Borrowed("")),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
        ];
        assert_eq!(insert.execute(&empty).expect("inserted"), 1);
        drop(insert);
        assert_eq!(
            rows(&conn),
            [
                "row-0|0|0.5|'2024-05-01T10:00:00+02:00'|X''",
                "row-1|1|NULL|'2024-05-01T10:00:00+02:00'|X'01'",
                "row-2|2|0.5|'2024-05-01T10:00:00+02:00'|X'0202'",
                "|NULL|NULL|NULL|NULL",
            ]
        );
    }

    #[test]
    fn a_refused_row_keeps_sqlites_code_and_message_and_the_statement_runs_on() {
        let conn = table();
        let mut insert =
            LoadStatement::prepare(&conn, "INSERT INTO t (id) VALUES (?1)").expect("prepared");
        let cells = [Cell::Text(Cow::Borrowed("a"))];
        insert.execute(&cells).expect("first");
        let refused = insert.execute(&cells).expect_err("duplicate key");
        let rusqlite::Error::SqliteFailure(failure, message) = &refused else {
            panic!("not SQLite's error: {refused:?}");
        };
        assert_eq!(failure.extended_code, ffi::SQLITE_CONSTRAINT_PRIMARYKEY);
        assert_eq!(message.as_deref(), Some("UNIQUE constraint failed: t.id"));
        assert_eq!(
            insert
                .execute(&[Cell::Text(Cow::Borrowed("b"))])
                .expect("next row"),
            1
        );
        let wrong = insert.execute(&[]).expect_err("no cells");
        assert!(matches!(
            wrong,
            rusqlite::Error::InvalidParameterCount(0, 1)
        ));
    }

    /// Any cell, as `Cell` holds it and `ToSql` turns it into SQLite's values.
    fn any_cell() -> impl proptest::strategy::Strategy<Value = Cell<'static>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Cell::Null),
            any::<bool>().prop_map(Cell::Bool),
            any::<i64>().prop_map(Cell::Int),
            any::<f64>().prop_map(Cell::Float),
            "[a-zé\u{0}😀 ]{0,40}".prop_map(|t| Cell::Text(Cow::Owned(t))),
            "-?[0-9]{1,30}(\\.[0-9]{0,10})?".prop_map(|t| Cell::Decimal(Cow::Owned(t))),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Cell::Bytes(Cow::Owned(b))),
            (-100_000i64..100_000, 0u32..86_400).prop_map(|(day, second)| {
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(730_000 + day as i32)
                    .unwrap_or_default();
                let time = chrono::NaiveTime::from_num_seconds_from_midnight_opt(second, 0)
                    .unwrap_or_default();
                Cell::Timestamp(Timestamp {
                    datetime: date.and_time(time),
                    offset: None,
                })
            }),
            "\\{\"a\":[0-9]{1,5}\\}".prop_map(Cell::Json),
            proptest::collection::vec(proptest::option::of("[a-z]{0,5}"), 0..4)
                .prop_map(Cell::TextArray),
            any::<[u8; 16]>().prop_map(Cell::Uuid),
        ]
    }

    proptest::proptest! {
        #[test]
        fn rows_bound_in_place_are_the_rows_rusqlite_binds(
            rows in proptest::collection::vec(proptest::collection::vec(any_cell(), 3), 1..20),
        ) {
            let conn = Connection::open_in_memory().expect("in-memory database");
            conn.execute_batch("CREATE TABLE a (x, y TIMESTAMP, z JSON); CREATE TABLE b (x, y TIMESTAMP, z JSON)")
                .expect("tables");
            let mut in_place =
                LoadStatement::prepare(&conn, "INSERT INTO a VALUES (?1, ?2, ?3)").expect("prepared");
            let mut copied = conn.prepare("INSERT INTO b VALUES (?1, ?2, ?3)").expect("prepared");
            for row in &rows {
                // Each row's cells are cloned and dropped after its insert, as a load's are.
                let cells = row.clone();
                proptest::prop_assert_eq!(in_place.execute(&cells).expect("in place"), 1);
                drop(cells);
                copied.execute(rusqlite::params_from_iter(row.iter())).expect("copied");
            }
            drop(in_place);
            let read = |table: &str| -> Vec<String> {
                let sql = format!("SELECT quote(x) || ' ' || quote(y) || ' ' || quote(z) FROM {table} ORDER BY rowid");
                let mut select = conn.prepare(&sql).expect("select");
                let rows = select.query_map([], |r| r.get(0)).expect("rows");
                rows.collect::<rusqlite::Result<_>>().expect("text")
            };
            proptest::prop_assert_eq!(read("a"), read("b"));
        }
    }

    #[test]
    fn bad_sql_is_an_error_not_a_statement() {
        let conn = table();
        let e = LoadStatement::prepare(&conn, "INSERT INTO missing VALUES (?1)")
            .err()
            .expect("no such table");
        assert!(e.to_string().contains("no such table: missing"), "{e}");
        let e = LoadStatement::prepare(&conn, "  ")
            .err()
            .expect("nothing to run");
        assert!(matches!(e, rusqlite::Error::InvalidQuery));
        let e = LoadStatement::prepare(&conn, "INSERT INTO t (id) VALUES (?1); DROP TABLE t")
            .err()
            .expect("two statements");
        assert!(matches!(e, rusqlite::Error::MultipleStatement));
        assert!(LoadStatement::prepare(&conn, "INSERT INTO t (id) VALUES (?1);  ").is_ok());
    }
}
