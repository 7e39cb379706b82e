//! Operations: the service's view of runs. Every request that moves data becomes one, with an id, a state
//! (`queued → running → succeeded | failed | cancelled`, `cancelling` in between), counts that always
//! balance, bytes, percent and ETA, the current step, times, the first errors and, for an export, its
//! result files. This is the JSON every operation route answers with, in the guide's names.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::observe::CancelToken;

/// The first errors an operation lists (the rejects file and the counts have them all).
pub const MAX_LISTED_ERRORS: usize = 20;

/// The current time as the service writes times: RFC 3339, UTC, milliseconds (sorts as text).
pub fn now_text() -> String {
    time_text(chrono::Utc::now())
}

/// `t` as the service writes times.
pub fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Records from a dataset's table to files.
    Export,
    /// Records from an upload into a dataset's table.
    Import,
    /// An upload read, mapped and validated; nothing written.
    Validate,
    /// A configured sync: passes until cancelled (a cancelled sync ends `cancelled`, every committed pass
    /// kept).
    Sync,
}

impl OpKind {
    /// The kind's name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Export => "export",
            OpKind::Import => "import",
            OpKind::Validate => "validate",
            OpKind::Sync => "sync",
        }
    }
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    /// Waiting for a worker.
    Queued,
    /// Running.
    Running,
    /// Asked to stop; it stops at its next batch.
    Cancelling,
    /// Done; its output is final.
    Succeeded,
    /// Stopped by an error (or the server stopped under it); the target is as it was.
    Failed,
    /// Cancelled; the target is as it was.
    Cancelled,
}

impl OpState {
    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            OpState::Queued => "queued",
            OpState::Running => "running",
            OpState::Cancelling => "cancelling",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
        }
    }

    /// Every state, in order.
    pub const ALL: [OpState; 6] = [
        OpState::Queued,
        OpState::Running,
        OpState::Cancelling,
        OpState::Succeeded,
        OpState::Failed,
        OpState::Cancelled,
    ];

    /// True once the operation is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OpState::Succeeded | OpState::Failed | OpState::Cancelled
        )
    }

    /// The state named `name`.
    pub fn parse(name: &str) -> Option<OpState> {
        OpState::ALL.into_iter().find(|s| s.name() == name)
    }
}

pub use crate::report::Counts;

/// The OpenAPI schema of the counts every report and operation shares.
impl utoipa::PartialSchema for Counts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let count = |about: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .description(Some(about))
        };
        ObjectBuilder::new()
            .description(Some(
                "Where every record went: read = written + rejected + filtered + skipped, always.",
            ))
            .property("read", count("Records read from the source"))
            .property(
                "written",
                count("Records written (for a dry run or validation: that would be written)"),
            )
            .property("rejected", count("Records refused, each with its reason"))
            .property("filtered", count("Records a filter left out"))
            .property("skipped", count("Records skipped (duplicates left alone)"))
            .required("read")
            .required("written")
            .required("rejected")
            .required("filtered")
            .required("skipped")
            .into()
    }
}

impl ToSchema for Counts {}

/// Bytes moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Bytes {
    /// Input bytes consumed (as stored: compressed, encrypted).
    pub read: u64,
    /// Output bytes written.
    pub written: u64,
    /// The input's size, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// One error of a record, as operations list them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordError {
    /// The record's number in the input (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// Its line, where the format has lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The stage that refused it (decode, map, validate, sink).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// One sentence.
    pub error: String,
}

/// Why a request or an operation failed: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    /// A stable code (`conflict`, `invalid_data`, `cancelled`, `interrupted`, …).
    pub code: String,
    /// One sentence, without secrets.
    pub message: String,
}

/// A file an export wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultFile {
    /// The file's name.
    pub name: String,
    /// What it is: `data`, `part`, `manifest` or `rejects`.
    pub role: String,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
    /// Where to download it.
    pub url: String,
}

/// What a finished export left to download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpResult {
    /// Every file, in order (parts in their order, the manifest last).
    pub files: Vec<ResultFile>,
    /// When the files are removed.
    pub expires_at: String,
    /// True once they were removed.
    #[serde(default)]
    pub expired: bool,
}

/// Database loads: what happened to the table's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TableCounts {
    /// New rows.
    pub inserted: u64,
    /// Existing rows changed (overwriteExisting).
    pub updated: u64,
}

/// An operation, as every operation route shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Its id.
    pub operation_id: String,
    /// export, import or validate.
    #[serde(rename = "type")]
    pub kind: OpKind,
    /// The dataset (`contexts`, …, `all`).
    pub data_type: String,
    /// Where it stands.
    pub status: OpState,
    /// Percent done (0–100), when the input's size is known.
    pub progress: Option<f64>,
    /// The step it is in (`queued`, `reading`, `writing`, `committing`, …).
    pub current_step: String,
    /// Records read so far.
    pub current_record: u64,
    /// Records in all, when known.
    pub total_records: Option<u64>,
    /// Records written so far (the guide's name for `counts.written`).
    pub successful_records: u64,
    /// Records refused so far (the guide's name for `counts.rejected`).
    pub failed_records: u64,
    /// Every record accounted for.
    pub counts: Counts,
    /// True when `read = written + rejected + filtered + skipped`.
    pub balanced: bool,
    /// Bytes moved.
    pub bytes: Bytes,
    /// When it should end at the rate so far (RFC 3339), when the size is known.
    pub estimated_completion: Option<String>,
    /// Seconds left at the rate so far.
    pub eta_seconds: Option<f64>,
    /// When the request was accepted.
    pub created_at: String,
    /// When it started running.
    pub start_time: Option<String>,
    /// When it ended.
    pub end_time: Option<String>,
    /// True for a dry run or a validation (nothing written).
    pub dry_run: bool,
    /// The options it runs with, as accepted.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// The uploaded file's name (imports and validations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// The token that started it.
    pub token: String,
    /// The user it belongs to (a user-bound token's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Database loads: inserted and updated rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<TableCounts>,
    /// A validation: true when every record is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    /// The first errors of records (at most 20).
    pub errors: Vec<RecordError>,
    /// Why it failed or was cancelled.
    pub error: Option<ErrorInfo>,
    /// An export's files, once it succeeded.
    pub result: Option<OpResult>,
    /// A sync: how far behind the target was after its last pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<SyncLag>,
}

/// A sync operation's lag after its last committed pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyncLag {
    /// Passes committed.
    pub passes: u64,
    /// Rows the last pass found behind (written and deleted).
    pub rows: u64,
    /// Seconds from the last pass's source snapshot to its commit.
    pub seconds: f64,
}

impl Operation {
    /// A new queued operation.
    pub fn new(id: String, kind: OpKind, data_type: &str, token: &str, user: Option<&str>) -> Self {
        Operation {
            operation_id: id,
            kind,
            data_type: data_type.to_owned(),
            status: OpState::Queued,
            progress: None,
            current_step: "queued".into(),
            current_record: 0,
            total_records: None,
            successful_records: 0,
            failed_records: 0,
            counts: Counts::default(),
            balanced: true,
            bytes: Bytes::default(),
            estimated_completion: None,
            eta_seconds: None,
            created_at: now_text(),
            start_time: None,
            end_time: None,
            dry_run: false,
            options: serde_json::Value::Object(Default::default()),
            file_name: None,
            token: token.to_owned(),
            user_id: user.map(str::to_owned),
            table: None,
            valid: None,
            errors: Vec::new(),
            error: None,
            result: None,
            lag: None,
        }
    }

    /// Sets the counts and the guide's names derived from them.
    pub fn set_counts(&mut self, counts: Counts) {
        self.counts = counts;
        self.current_record = counts.read;
        self.successful_records = counts.written;
        self.failed_records = counts.rejected;
        self.balanced = counts.balances();
    }

    /// Percent and ETA from bytes read against the input's size.
    pub fn set_progress(&mut self, bytes_read: u64, total: Option<u64>, seconds: f64) {
        self.bytes.read = bytes_read;
        if total.is_some() {
            self.bytes.total = total;
        }
        let Some(total) = self.bytes.total.filter(|t| *t > 0) else {
            return;
        };
        let fraction = (bytes_read as f64 / total as f64).clamp(0.0, 1.0);
        self.progress = Some((fraction * 1000.0).round() / 10.0);
        if fraction > 0.0 && seconds > 0.0 {
            let left = seconds * (1.0 - fraction) / fraction;
            self.eta_seconds = Some((left * 10.0).round() / 10.0);
            let at = chrono::Utc::now() + chrono::Duration::milliseconds((left * 1000.0) as i64);
            self.estimated_completion = Some(time_text(at));
        }
    }
}

/// A live operation: its state (watched by progress requests and event streams) and its cancel token.
#[derive(Debug)]
pub struct OpHandle {
    /// The operation's id.
    pub id: String,
    /// The state; every change wakes the watchers.
    pub state: watch::Sender<Operation>,
    /// Stops its run between batches.
    pub cancel: CancelToken,
    /// Wakes a queued operation that was cancelled before it got a worker.
    pub dequeue: tokio::sync::Notify,
}

impl OpHandle {
    /// A handle for `operation`.
    pub fn new(operation: Operation) -> Arc<OpHandle> {
        Arc::new(OpHandle {
            id: operation.operation_id.clone(),
            state: watch::Sender::new(operation),
            cancel: CancelToken::new(),
            dequeue: tokio::sync::Notify::new(),
        })
    }

    /// The operation as it is now.
    pub fn snapshot(&self) -> Operation {
        self.state.borrow().clone()
    }

    /// Changes the state and wakes the watchers.
    pub fn update(&self, change: impl FnOnce(&mut Operation)) {
        self.state.send_modify(change);
    }
}

/// A new operation id: `op-` and 20 random hex digits.
pub fn new_id() -> String {
    let mut random = [0u8; 10];
    // Without random numbers, time and a counter keep ids unique within this server.
    if getrandom::fill(&mut random).is_err() {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = chrono::Utc::now().timestamp_micros() as u64;
        random[..8].copy_from_slice(&(t ^ n.rotate_left(40)).to_be_bytes());
    }
    format!("op-{}", crate::envelope::split::hex(&random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_carries_the_guides_names_and_balanced_counts() {
        let mut op = Operation::new("op-1".into(), OpKind::Import, "contexts", "ci", None);
        op.set_counts(Counts {
            read: 10,
            written: 7,
            rejected: 2,
            filtered: 0,
            skipped: 1,
        });
        op.set_progress(50, Some(200), 2.0);
        let json = serde_json::to_value(&op).unwrap();
        assert_eq!(json["operationId"], "op-1");
        assert_eq!(json["type"], "import");
        assert_eq!(json["status"], "queued");
        assert_eq!(json["currentRecord"], 10);
        assert_eq!(json["successfulRecords"], 7);
        assert_eq!(json["balanced"], true);
        assert_eq!(json["progress"], 25.0);
        assert_eq!(json["etaSeconds"], 6.0);
        assert!(json["estimatedCompletion"].is_string());
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(), new_id());
        assert!(new_id().starts_with("op-"));
    }
}
