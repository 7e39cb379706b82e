//! The service's state file, an embedded SQLite database: the durable operation history (it survives a
//! restart; an operation that was running when the server died is marked `failed (interrupted)` at the
//! next start) and the append-only audit table (triggers refuse every UPDATE and DELETE).
//!
//! One server per state file: an exclusive lock on `<state>.lock` is held for the server's life (the
//! kernel releases it when the process dies, however it dies).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use utoipa::ToSchema;

use super::operation::{now_text, Counts, ErrorInfo, OpState, Operation};
use crate::error::{Error, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operations (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    data_type   TEXT NOT NULL,
    state       TEXT NOT NULL,
    token       TEXT NOT NULL,
    user_id     TEXT,
    created_at  TEXT NOT NULL,
    ended_at    TEXT,
    body        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_seq ON operations (seq);
CREATE INDEX IF NOT EXISTS operations_state ON operations (state);
CREATE TABLE IF NOT EXISTS audit (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    token        TEXT,
    user_id      TEXT,
    action       TEXT NOT NULL,
    operation_id TEXT,
    data_type    TEXT,
    result       TEXT NOT NULL,
    http_status  INTEGER,
    read         INTEGER,
    written      INTEGER,
    rejected     INTEGER,
    filtered     INTEGER,
    skipped      INTEGER
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
";

/// One line of the audit table: who did what, when, with which result and counts. Never a key, a token,
/// a password or a record's value: only names, ids, codes and numbers.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Its place in the table.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// The token's name (`-` when the request had none or a wrong one).
    pub token: Option<String>,
    /// The token's user.
    pub user_id: Option<String>,
    /// What was done (`export`, `import`, `validate`, `cancel`, `download`, `template.create`,
    /// `operation.finished`, `operation.interrupted`, `auth.denied`).
    pub action: String,
    /// The operation concerned.
    pub operation_id: Option<String>,
    /// The dataset concerned.
    pub data_type: Option<String>,
    /// The result: `accepted`, a final state, or an error code.
    pub result: String,
    /// The HTTP status answered, for requests.
    pub http_status: Option<u16>,
    /// The operation's counts, when it finished.
    pub counts: Option<Counts>,
}

/// History filters (`GET /operations/history`).
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// At most this many.
    pub limit: u32,
    /// After skipping this many (newest first).
    pub offset: u32,
    /// Only in this state.
    pub state: Option<OpState>,
    /// Only of this type.
    pub kind: Option<String>,
    /// Only of this dataset.
    pub data_type: Option<String>,
    /// Created at or after (RFC 3339, normalised).
    pub since: Option<String>,
    /// Created before.
    pub until: Option<String>,
    /// Only this user's (a user-bound token).
    pub user: Option<String>,
}

/// The state database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    _lock: File,
}

impl Store {
    /// Opens (creating) the state file and takes its lock.
    pub fn open(path: &Path) -> Result<Store> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::config(format!("state file {}: {what}: {e}", path.display()))
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its folder", &e))?;
        }
        let lock = lock(&PathBuf::from(format!("{}.lock", path.display())))?;
        let conn = Connection::open(path).map_err(|e| fail("cannot open", &e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .map_err(|e| fail("cannot set up", &e))?;
        Ok(Store {
            conn: Mutex::new(conn),
            _lock: lock,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `op` (new or changed).
    pub fn save(&self, op: &Operation) -> Result<()> {
        let body = serde_json::to_string(op).map_err(|e| db_error(&e))?;
        self.conn()
            .execute(
                "INSERT INTO operations (id, seq, kind, data_type, state, token, user_id, created_at, ended_at, body)
                 VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM operations), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at,
                 body = excluded.body",
                params![
                    op.operation_id,
                    op.kind.name(),
                    op.data_type,
                    op.status.name(),
                    op.token,
                    op.user_id,
                    op.created_at,
                    op.end_time,
                    body
                ],
            )
            .map_err(|e| db_error(&e))?;
        Ok(())
    }

    /// The operation `id`, as last saved.
    pub fn get(&self, id: &str) -> Result<Option<Operation>> {
        let body: Option<String> = self
            .conn()
            .query_row("SELECT body FROM operations WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| db_error(&e))?;
        body.map(|b| parse(&b)).transpose()
    }

    /// Operations matching `q`, newest first, and how many match in all.
    pub fn history(&self, q: &HistoryQuery) -> Result<(Vec<Operation>, u64)> {
        let mut clauses = vec!["1 = 1".to_owned()];
        let mut values: Vec<String> = Vec::new();
        let mut add = |clause: &str, value: &Option<String>| {
            if let Some(v) = value {
                values.push(v.clone());
                clauses.push(clause.replace('?', &format!("?{}", values.len())));
            }
        };
        add("state = ?", &q.state.map(|s| s.name().to_owned()));
        add("kind = ?", &q.kind);
        add("data_type = ?", &q.data_type);
        add("created_at >= ?", &q.since);
        add("created_at < ?", &q.until);
        add("user_id = ?", &q.user);
        let filter = clauses.join(" AND ");
        let conn = self.conn();
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM operations WHERE {filter}"),
                rusqlite::params_from_iter(values.iter()),
                |r| r.get(0),
            )
            .map_err(|e| db_error(&e))?;
        let total = total as u64;
        let sql = format!(
            "SELECT body FROM operations WHERE {filter} ORDER BY seq DESC LIMIT {} OFFSET {}",
            q.limit, q.offset
        );
        let mut stmt = conn.prepare(&sql).map_err(|e| db_error(&e))?;
        let bodies = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                r.get::<_, String>(0)
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| db_error(&e))?;
        let ops = bodies.iter().map(|b| parse(b)).collect::<Result<_>>()?;
        Ok((ops, total))
    }

    /// Marks every operation that was not over as failed (interrupted) and returns them: the server that
    /// ran them is gone.
    pub fn mark_interrupted(&self) -> Result<Vec<Operation>> {
        let open: Vec<Operation> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("SELECT body FROM operations WHERE state IN ('queued', 'running', 'cancelling')")
                .map_err(|e| db_error(&e))?;
            let bodies = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(|e| db_error(&e))?;
            bodies.iter().map(|b| parse(b)).collect::<Result<_>>()?
        };
        let mut marked = Vec::with_capacity(open.len());
        for mut op in open {
            let was = op.status;
            op.status = OpState::Failed;
            op.current_step = "interrupted".into();
            op.end_time = Some(now_text());
            op.result = None;
            op.error = Some(ErrorInfo {
                code: "interrupted".into(),
                message: format!(
                    "the server stopped while the operation was {}; its target was left as it was",
                    was.name()
                ),
            });
            self.save(&op)?;
            marked.push(op);
        }
        Ok(marked)
    }

    /// Finished operations whose result files are due for removal (ended before `before`).
    pub fn expiring(&self, before: &str) -> Result<Vec<Operation>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT body FROM operations WHERE kind = 'export' AND state = 'succeeded'
                 AND ended_at < ?1 AND json_extract(body, '$.result.expired') = 0",
            )
            .map_err(|e| db_error(&e))?;
        let bodies = stmt
            .query_map([before], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| db_error(&e))?;
        bodies.iter().map(|b| parse(b)).collect()
    }

    /// Appends one line to the audit table.
    pub fn audit(&self, entry: &AuditEntry) {
        let counts = entry.counts.unwrap_or_default();
        let has = entry.counts.is_some();
        let n = |v: u64| has.then_some(v as i64);
        let done = self.conn().execute(
            "INSERT INTO audit (at, token, user_id, action, operation_id, data_type, result, http_status,
             read, written, rejected, filtered, skipped)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                now_text(),
                entry.token,
                entry.user_id,
                entry.action,
                entry.operation_id,
                entry.data_type,
                entry.result,
                entry.http_status,
                n(counts.read),
                n(counts.written),
                n(counts.rejected),
                n(counts.filtered),
                n(counts.skipped)
            ],
        );
        if let Err(e) = done {
            // The audit must not fail silently: the log line names the action, never values.
            tracing::error!(action = %entry.action, error = %e, "cannot append to the audit table");
        }
    }

    /// The audit table's last lines, newest first.
    pub fn audit_lines(&self, limit: u32, offset: u32) -> Result<Vec<AuditEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT seq, at, token, user_id, action, operation_id, data_type, result, http_status,
                 read, written, rejected, filtered, skipped FROM audit ORDER BY seq DESC LIMIT ?1 OFFSET ?2",
            )
            .map_err(|e| db_error(&e))?;
        let rows = stmt
            .query_map(params![limit, offset], |r| {
                let read: Option<i64> = r.get(9)?;
                let count = |i: usize| -> rusqlite::Result<u64> {
                    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
                };
                let counts = match read {
                    Some(read) => Some(Counts {
                        read: read as u64,
                        written: count(10)?,
                        rejected: count(11)?,
                        filtered: count(12)?,
                        skipped: count(13)?,
                    }),
                    None => None,
                };
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    token: r.get(2)?,
                    user_id: r.get(3)?,
                    action: r.get(4)?,
                    operation_id: r.get(5)?,
                    data_type: r.get(6)?,
                    result: r.get(7)?,
                    http_status: r.get(8)?,
                    counts,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| db_error(&e))?;
        Ok(rows)
    }
}

fn parse(body: &str) -> Result<Operation> {
    serde_json::from_str(body).map_err(|e| db_error(&e))
}

fn db_error(e: &dyn std::fmt::Display) -> Error {
    Error::config(format!("the service's state database failed: {e}"))
}

/// Takes an exclusive lock on `path` (created if missing), or says another server holds it.
#[cfg(unix)]
fn lock(path: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::config(format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a file descriptor this function owns.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        return Err(Error::config(format!(
            "another ferry serve uses this state file (it holds {}); give each server its own work_dir",
            path.display()
        )));
    }
    Ok(file)
}

#[cfg(not(unix))]
fn lock(path: &Path) -> Result<File> {
    File::create(path).map_err(|e| Error::config(format!("cannot open {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::operation::OpKind;

    #[test]
    fn history_survives_reopening_and_open_operations_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let store = Store::open(&path).unwrap();
            assert!(Store::open(&path).is_err(), "a second server is refused");
            let mut done = Operation::new("op-a".into(), OpKind::Export, "contexts", "t", None);
            done.status = OpState::Succeeded;
            store.save(&done).unwrap();
            let mut running = Operation::new("op-b".into(), OpKind::Import, "contexts", "t", None);
            running.status = OpState::Running;
            store.save(&running).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let marked = store.mark_interrupted().unwrap();
        assert_eq!(marked.len(), 1);
        let b = store.get("op-b").unwrap().unwrap();
        assert_eq!(b.status, OpState::Failed);
        assert_eq!(b.error.unwrap().code, "interrupted");
        let q = HistoryQuery {
            limit: 10,
            ..HistoryQuery::default()
        };
        let (ops, total) = store.history(&q).unwrap();
        assert_eq!(total, 2);
        assert_eq!(ops[0].operation_id, "op-b", "newest first");
        let q = HistoryQuery {
            limit: 10,
            state: Some(OpState::Succeeded),
            ..HistoryQuery::default()
        };
        assert_eq!(store.history(&q).unwrap().1, 1);
    }

    #[test]
    fn the_audit_table_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store.audit(&AuditEntry {
            action: "export".into(),
            result: "accepted".into(),
            token: Some("ci".into()),
            ..AuditEntry::default()
        });
        let conn = store.conn();
        let err = conn
            .execute("UPDATE audit SET result = 'x'", [])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        drop(conn);
        assert_eq!(store.audit_lines(10, 0).unwrap().len(), 1);
    }
}
