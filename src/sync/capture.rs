//! Sync, change capture in a SQLite source: triggers on every synced table write the key of each row an
//! insert, update or delete touched into `_ferry_changes` (sequence number, table, key as a JSON array),
//! so a pass sees updates and deletes exactly, without cursor columns. Installed by `ferry sync --capture
//! triggers`, removed by `ferry sync --uninstall`; what a pass applied is removed from the log after the
//! target committed (the log's position is the target's mark, so a pass killed before its commit reads
//! the same changes again).
//!
//! Cost to the application: one extra row insert per row written, in the same transaction (measured in
//! BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::Connection;

use super::read::SyncTable;
use crate::db::quote_ident;
use crate::error::{Error, Result, Stage};
use crate::migrate::quote_literal;
use crate::migrate::value::Datum;

/// The change log's table, in the source.
pub const CHANGES: &str = "_ferry_changes";

/// Keys named by a change log or a slot, by table.
pub type KeysByTable = BTreeMap<String, Vec<Vec<Datum>>>;

/// Changes read per pass at most (the rest wait for the next pass).
const MAX_CHANGES: i64 = 50_000;

fn fail(label: &str, what: &str) -> impl Fn(rusqlite::Error) -> Error {
    let (label, what) = (label.to_owned(), what.to_owned());
    move |e| crate::db::sqlite::sql_error(Stage::Source, &label, &what, e)
}

fn trigger_name(table: &str, op: &str) -> String {
    quote_ident(&format!("_ferry_sync_{table}_{op}"))
}

/// Opens the source for writing (installing, uninstalling, trimming the log).
pub fn open_writer(path: &Path) -> Result<Connection> {
    let label = path.display().to_string();
    let c = Connection::open(path).map_err(fail(&label, "cannot open"))?;
    c.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(fail(&label, "cannot set up"))?;
    Ok(c)
}

/// Creates the log and the triggers of `tables` (those missing), in one transaction.
pub fn install(conn: &Connection, label: &str, tables: &[SyncTable]) -> Result<()> {
    let mut sql = format!(
        "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS {CHANGES} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
         table_name TEXT NOT NULL, key TEXT NOT NULL);"
    );
    for t in tables {
        let name = quote_ident(t.name());
        let lit = quote_literal(t.name());
        let keys = |row: &str| {
            let cols: Vec<String> = t
                .key_columns()
                .iter()
                .map(|(c, _)| format!("{row}.{}", quote_ident(c)))
                .collect();
            format!("json_array({})", cols.join(", "))
        };
        let log = |row: &str| {
            format!(
                "INSERT INTO {CHANGES} (table_name, key) VALUES ({lit}, {});",
                keys(row)
            )
        };
        sql.push_str(&format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER INSERT ON {name} BEGIN {} END;\
             CREATE TRIGGER IF NOT EXISTS {} AFTER UPDATE ON {name} BEGIN {} INSERT INTO {CHANGES} (table_name, key) \
             SELECT {lit}, {} WHERE {} IS NOT {}; END;\
             CREATE TRIGGER IF NOT EXISTS {} AFTER DELETE ON {name} BEGIN {} END;",
            trigger_name(t.name(), "ins"),
            log("NEW"),
            trigger_name(t.name(), "upd"),
            log("NEW"),
            keys("OLD"),
            keys("OLD"),
            keys("NEW"),
            trigger_name(t.name(), "del"),
            log("OLD"),
        ));
    }
    sql.push_str("COMMIT;");
    conn.execute_batch(&sql).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        fail(label, "installing change-capture triggers")(e)
    })
}

/// Drops the triggers of every table and the log (`ferry sync --uninstall`); returns the triggers dropped.
pub fn uninstall(conn: &Connection, label: &str) -> Result<usize> {
    let names: Vec<String> = {
        let mut s = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE '\\_ferry\\_sync\\_%' ESCAPE '\\'")
            .map_err(fail(label, "listing triggers"))?;
        let rows = s
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(fail(label, "listing triggers"))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(fail(label, "listing triggers"))?
    };
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for n in &names {
        sql.push_str(&format!("DROP TRIGGER IF EXISTS {};", quote_ident(n)));
    }
    sql.push_str(&format!("DROP TABLE IF EXISTS {CHANGES}; COMMIT;"));
    conn.execute_batch(&sql).map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        fail(label, "removing change-capture triggers")(e)
    })?;
    Ok(names.len())
}

/// True when the source has the change log.
pub fn installed(conn: &Connection) -> bool {
    conn.prepare(&format!("SELECT seq FROM {CHANGES} LIMIT 0"))
        .is_ok()
}

/// The newest change in the log (0: none), read in the pass's snapshot.
pub fn newest(conn: &Connection, label: &str) -> Result<i64> {
    conn.query_row(
        &format!("SELECT coalesce(max(seq), 0) FROM {CHANGES}"),
        [],
        |r| r.get(0),
    )
    .map_err(fail(label, "reading the change log"))
}

/// The changes after `from`: the last sequence number read, and each table's distinct keys.
pub fn changes_after(
    conn: &Connection,
    label: &str,
    from: i64,
    tables: &[SyncTable],
) -> Result<(i64, KeysByTable)> {
    let mut s = conn
        .prepare(&format!(
            "SELECT seq, table_name, key FROM {CHANGES} WHERE seq > ?1 ORDER BY seq LIMIT {MAX_CHANGES}"
        ))
        .map_err(fail(label, "reading the change log"))?;
    let mut rows = s
        .query([from])
        .map_err(fail(label, "reading the change log"))?;
    let mut last = from;
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(r) = rows.next().map_err(fail(label, "reading the change log"))? {
        last = r.get(0).map_err(fail(label, "reading the change log"))?;
        let table: String = r.get(1).map_err(fail(label, "reading the change log"))?;
        let key: String = r.get(2).map_err(fail(label, "reading the change log"))?;
        seen.entry(table).or_default().insert(key);
    }
    let mut out = BTreeMap::new();
    for (table, keys) in seen {
        let Some(t) = tables.iter().find(|t| t.name() == table) else {
            continue;
        };
        let mut parsed = Vec::with_capacity(keys.len());
        for k in keys {
            parsed.push(parse_key(&k, t).map_err(|m| {
                Error::config(format!(
                    "{label}: {CHANGES} has a key of {} that is not readable: {m}",
                    quote_ident(&table)
                ))
            })?);
        }
        out.insert(table, parsed);
    }
    Ok((last, out))
}

fn parse_key(text: &str, table: &SyncTable) -> std::result::Result<Vec<Datum>, String> {
    let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    values
        .iter()
        .zip(table.key_columns())
        .map(|(v, (_, ty))| match v {
            serde_json::Value::Number(n) if n.is_i64() => {
                Ok(Datum::Int(n.as_i64().unwrap_or_default()))
            }
            serde_json::Value::String(s) => Ok(Datum::Text(s.clone())),
            serde_json::Value::Null => Ok(Datum::Null),
            other => Datum::from_sqlite(
                rusqlite::types::ValueRef::Text(other.to_string().as_bytes()),
                &ty,
            ),
        })
        .collect()
}

/// Removes what a committed pass applied from the log.
pub fn trim(conn: &Connection, label: &str, upto: i64) -> Result<()> {
    conn.execute(&format!("DELETE FROM {CHANGES} WHERE seq <= ?1"), [upto])
        .map(drop)
        .map_err(fail(label, "trimming the change log"))
}
