//! Runs operations: a bounded pool of workers (`max_concurrent_jobs`) takes them from a FIFO queue, each
//! run on a blocking thread through [`super::engine`], its progress fed into the operation's state, its
//! end written to the history and the audit table. Cancelling a queued operation ends it at once; a running
//! one stops at its next batch. On shutdown, running operations get a grace period, then are cancelled.
//!
//! An operation's folder (`<work_dir>/ops/<id>/`) holds `work/` (the upload, the run's templates, rejects)
//! and `result/` (an export's files). `work/` goes when the operation ends; `result/` when it fails, or
//! once `result_retention` has passed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};

use super::config::Settings;
use super::engine::{self, Outcome, RunSpec, RunStatus, Watch};
use super::error::ApiError;
use super::metrics::Metrics;
use super::operation::{
    now_text, time_text, Counts, ErrorInfo, OpHandle, OpKind, OpResult, OpState, Operation,
    ResultFile, TableCounts, MAX_LISTED_ERRORS,
};
use super::plan::Planned;
use super::store::{AuditEntry, Store};
use super::tokens::Caller;

/// The operations of this server.
pub struct Runner {
    settings: Arc<Settings>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<String, Arc<OpHandle>>>,
    slots: Arc<Semaphore>,
    closing: AtomicBool,
    idle: Notify,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").finish_non_exhaustive()
    }
}

/// The folder of operation `id`.
pub fn op_dir(settings: &Settings, id: &str) -> PathBuf {
    settings.work_dir.join("ops").join(id)
}

impl Runner {
    /// A runner over `store`.
    pub fn new(settings: Arc<Settings>, store: Arc<Store>, metrics: Arc<Metrics>) -> Arc<Runner> {
        let slots = Arc::new(Semaphore::new(settings.config.max_concurrent_jobs));
        Arc::new(Runner {
            settings,
            store,
            metrics,
            live: Mutex::new(HashMap::new()),
            slots,
            closing: AtomicBool::new(false),
            idle: Notify::new(),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OpHandle>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks what a dead server left running as interrupted, and removes its files.
    pub fn recover(&self) -> crate::Result<usize> {
        let marked = self.store.mark_interrupted()?;
        for op in &marked {
            remove_dir(&op_dir(&self.settings, &op.operation_id));
            self.store.audit(&AuditEntry {
                token: Some(op.token.clone()),
                user_id: op.user_id.clone(),
                action: "operation.interrupted".into(),
                operation_id: Some(op.operation_id.clone()),
                data_type: Some(op.data_type.clone()),
                result: "failed".into(),
                counts: Some(op.counts),
                ..AuditEntry::default()
            });
        }
        Ok(marked.len())
    }

    /// Queues `op` with its planned runs; the folder `dir` is the operation's.
    pub fn submit(
        self: &Arc<Self>,
        mut op: Operation,
        planned: Planned,
        dir: PathBuf,
    ) -> Result<Arc<OpHandle>, ApiError> {
        if self.closing.load(Ordering::SeqCst) {
            remove_dir(&dir);
            return Err(shutting_down());
        }
        let queued = self
            .live()
            .values()
            .filter(|h| h.state.borrow().status == OpState::Queued)
            .count();
        if queued >= self.settings.config.max_queued_jobs {
            remove_dir(&dir);
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("{queued} operations are waiting already; try again later"),
            ));
        }
        op.options = planned.options.clone();
        op.dry_run = planned.dry_run;
        op.valid = None;
        self.store.save(&op).map_err(ApiError::internal)?;
        let handle = OpHandle::new(op);
        self.live().insert(handle.id.clone(), handle.clone());
        self.metrics.set_active(&self.active_counts());
        let runner = Arc::clone(self);
        let driven = handle.clone();
        tokio::spawn(async move { runner.drive(driven, planned, dir).await });
        Ok(handle)
    }

    /// The live handle of `id`, if it is not over.
    pub fn handle(&self, id: &str) -> Option<Arc<OpHandle>> {
        self.live().get(id).cloned()
    }

    /// Operation `id` as it is now (live, else from the history).
    pub fn get(&self, id: &str) -> Result<Option<Operation>, ApiError> {
        if let Some(h) = self.handle(id) {
            return Ok(Some(h.snapshot()));
        }
        self.store.get(id).map_err(ApiError::internal)
    }

    /// Operations not over, oldest first.
    pub fn active(&self) -> Vec<Operation> {
        let mut ops: Vec<Operation> = self.live().values().map(|h| h.snapshot()).collect();
        ops.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        ops
    }

    fn active_counts(&self) -> HashMap<OpState, u64> {
        let mut counts = HashMap::new();
        for h in self.live().values() {
            *counts.entry(h.state.borrow().status).or_insert(0) += 1;
        }
        counts
    }

    /// Asks operation `id` to stop: a queued one ends at once, a running one at its next batch.
    pub fn cancel(&self, id: &str, caller: &Caller) -> Result<Operation, ApiError> {
        let handle = self
            .handle(id)
            .filter(|h| !h.state.borrow().status.is_final());
        let Some(handle) = handle else {
            let op = self
                .get(id)?
                .filter(|op| caller.sees_user(op.user_id.as_deref()));
            return match op {
                Some(op) => Err(ApiError::new(
                    axum::http::StatusCode::CONFLICT,
                    "already_finished",
                    format!(
                        "operation {id} is already over ({}); there is nothing to cancel",
                        op.status.name()
                    ),
                )),
                None => Err(ApiError::not_found(format!("no operation {id}"))),
            };
        };
        handle.update(|op| {
            if !op.status.is_final() {
                op.status = OpState::Cancelling;
                op.current_step = "cancelling".into();
            }
        });
        handle.cancel.cancel();
        handle.dequeue.notify_one();
        let op = handle.snapshot();
        self.save(&op);
        Ok(op)
    }

    fn save(&self, op: &Operation) {
        if let Err(e) = self.store.save(op) {
            tracing::error!(operation = %op.operation_id, error = %e, "cannot save an operation");
        }
    }

    async fn drive(self: Arc<Self>, handle: Arc<OpHandle>, planned: Planned, dir: PathBuf) {
        let started = tokio::select! {
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
            () = handle.dequeue.notified() => None,
        };
        let outcome = match started {
            Some(_permit) if !handle.cancel.is_cancelled() => {
                handle.update(|op| {
                    op.status = OpState::Running;
                    op.current_step = "starting".into();
                    op.start_time = Some(now_text());
                });
                self.save(&handle.snapshot());
                self.metrics.set_active(&self.active_counts());
                let (h, d) = (handle.clone(), dir.clone());
                let (runs, sync) = (planned.runs, planned.sync);
                let env = self.settings.env.clone();
                tokio::task::spawn_blocking(move || match sync {
                    Some(job) => run_sync(&h, &job, &env),
                    None => run_all(&h, &runs, &env, &d),
                })
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "an operation's thread failed");
                    Finished::failed(
                        "internal",
                        "the run stopped unexpectedly; the server log says why",
                    )
                })
            }
            _ => Finished::cancelled(),
        };
        self.finish(&handle, outcome, &dir);
    }

    fn finish(&self, handle: &Arc<OpHandle>, finished: Finished, dir: &Path) {
        let retention = self.settings.config.result_retention;
        // The files go before the final state is shown: whoever sees it sees the folder as it stays.
        remove_dir(&dir.join("work"));
        if finished.files.is_empty() {
            remove_dir(dir);
        }
        // The final state is written down (saved, audited) before it is shown: whoever sees an operation
        // finished finds its audit entry too.
        let mut op = handle.snapshot();
        {
            let op = &mut op;
            op.status = finished.state;
            op.end_time = Some(now_text());
            op.current_step = finished.state.name().into();
            op.set_counts(finished.counts);
            op.bytes.read = finished.bytes_read;
            op.bytes.written = finished.bytes_written;
            op.error = finished.error.clone();
            op.table = finished.table;
            op.eta_seconds = None;
            op.estimated_completion = None;
            if finished.state == OpState::Succeeded {
                op.progress = Some(100.0);
            }
            if op.kind == OpKind::Validate {
                op.valid =
                    Some(finished.state == OpState::Succeeded && finished.counts.rejected == 0);
            }
            let mut errors = finished.errors.clone();
            errors.truncate(MAX_LISTED_ERRORS);
            op.errors = errors;
            op.result = (!finished.files.is_empty()).then(|| OpResult {
                files: finished.files.clone(),
                expires_at: time_text(
                    chrono::Utc::now()
                        + chrono::Duration::milliseconds((retention * 1000.0) as i64),
                ),
                expired: false,
            });
        }
        self.save(&op);
        self.store.audit(&AuditEntry {
            token: Some(op.token.clone()),
            user_id: op.user_id.clone(),
            action: "operation.finished".into(),
            operation_id: Some(op.operation_id.clone()),
            data_type: Some(op.data_type.clone()),
            result: op.error.as_ref().map_or_else(
                || op.status.name().to_owned(),
                |e| format!("{}: {}", op.status.name(), e.code),
            ),
            counts: Some(op.counts),
            ..AuditEntry::default()
        });
        handle.update(|live| *live = op.clone());
        self.metrics.finished(&op);
        tracing::info!(
            operation = %op.operation_id,
            kind = op.kind.name(),
            data_type = %op.data_type,
            status = op.status.name(),
            read = op.counts.read,
            written = op.counts.written,
            rejected = op.counts.rejected,
            filtered = op.counts.filtered,
            skipped = op.counts.skipped,
            "operation finished"
        );
        self.live().remove(&op.operation_id);
        self.metrics.set_active(&self.active_counts());
        self.idle.notify_waiters();
    }

    /// Stops taking operations, lets running ones finish for `grace`, then cancels what is left and waits
    /// for it to end (each stops at its next batch).
    pub async fn drain(&self, grace: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        for handle in self.live().values() {
            if handle.state.borrow().status == OpState::Queued {
                handle.cancel.cancel();
                handle.dequeue.notify_one();
            }
        }
        if !self.wait_idle(grace).await {
            let left: Vec<Arc<OpHandle>> = self.live().values().cloned().collect();
            tracing::warn!(
                operations = left.len(),
                "grace period over: cancelling running operations"
            );
            for handle in left {
                handle.update(|op| {
                    op.status = OpState::Cancelling;
                    op.current_step = "cancelling".into();
                });
                handle.cancel.cancel();
            }
            if !self.wait_idle(Duration::from_secs(120)).await {
                tracing::error!("operations did not stop; the next start marks them interrupted");
            }
        }
    }

    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.live().is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }

    /// Removes the result files of exports that ended more than `result_retention` ago.
    pub fn expire_results(&self) {
        let keep =
            chrono::Duration::milliseconds((self.settings.config.result_retention * 1000.0) as i64);
        let before = time_text(chrono::Utc::now() - keep);
        let due = match self.store.expiring(&before) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "cannot list expired results");
                return;
            }
        };
        for mut op in due {
            remove_dir(&op_dir(&self.settings, &op.operation_id));
            if let Some(result) = &mut op.result {
                result.expired = true;
            }
            self.save(&op);
            tracing::info!(operation = %op.operation_id, "result files removed (retention)");
        }
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down and takes no new operations",
    )
}

/// Removes a folder and everything in it (what is already gone is fine).
pub fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a folder");
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone)]
struct Finished {
    state: OpState,
    counts: Counts,
    bytes_read: u64,
    bytes_written: u64,
    table: Option<TableCounts>,
    errors: Vec<super::operation::RecordError>,
    error: Option<ErrorInfo>,
    files: Vec<ResultFile>,
}

impl Finished {
    fn failed(code: &str, message: &str) -> Finished {
        Finished {
            state: OpState::Failed,
            counts: Counts::default(),
            bytes_read: 0,
            bytes_written: 0,
            table: None,
            errors: Vec::new(),
            error: Some(ErrorInfo {
                code: code.into(),
                message: message.into(),
            }),
            files: Vec::new(),
        }
    }

    fn cancelled() -> Finished {
        Finished {
            state: OpState::Cancelled,
            ..Finished::failed("cancelled", "the operation was cancelled before it started")
        }
    }
}

/// Feeds a run's progress into its operation; counts of earlier runs (of an `all` export) are added.
struct OpWatch {
    handle: Arc<OpHandle>,
    before: Counts,
    bytes_before: u64,
}

impl Watch for OpWatch {
    fn step(&self, step: &str) {
        let step = step.to_owned();
        self.handle.update(|op| op.current_step = step);
    }

    fn lag(&self, passes: u64, rows: u64, seconds: f64) {
        self.handle.update(|op| {
            op.lag = Some(super::operation::SyncLag {
                passes,
                rows,
                seconds,
            });
            op.current_step = format!("pass {passes}: lag {rows} rows");
        });
    }

    fn progress(&self, counts: Counts, bytes_read: u64, total: Option<u64>, seconds: f64) {
        let mut sum = self.before;
        sum.add(&counts);
        let bytes = self.bytes_before + bytes_read;
        self.handle.update(|op| {
            if !op.status.is_final() {
                op.set_counts(sum);
                op.set_progress(bytes, total, seconds);
            }
        });
    }
}

/// Runs a sync operation until it is cancelled (or fails); its lag is kept on the operation after every
/// pass.
fn run_sync(
    handle: &Arc<OpHandle>,
    job: &crate::sync::SyncJob,
    env: &crate::env::Environment,
) -> Finished {
    let watch = Arc::new(OpWatch {
        handle: handle.clone(),
        before: Counts::default(),
        bytes_before: 0,
    });
    let outcome = engine::run_sync(job, env, watch, &handle.cancel);
    Finished {
        state: match outcome.status {
            RunStatus::Succeeded => OpState::Succeeded,
            RunStatus::Cancelled => OpState::Cancelled,
            RunStatus::Failed => OpState::Failed,
        },
        counts: outcome.counts,
        bytes_read: 0,
        bytes_written: 0,
        table: outcome
            .table
            .map(|(inserted, updated)| TableCounts { inserted, updated }),
        errors: Vec::new(),
        error: outcome.failure.map(|f| f.info),
        files: Vec::new(),
    }
}

/// Runs every run of an operation, one after the other; the first that does not succeed ends it.
fn run_all(
    handle: &Arc<OpHandle>,
    runs: &[(String, RunSpec)],
    env: &crate::env::Environment,
    dir: &Path,
) -> Finished {
    let mut total = Finished {
        state: OpState::Succeeded,
        ..Finished::failed("", "")
    };
    total.error = None;
    let mut table = None::<TableCounts>;
    for (_, spec) in runs {
        let watch = Arc::new(OpWatch {
            handle: handle.clone(),
            before: total.counts,
            bytes_before: total.bytes_read,
        });
        let outcome: Outcome = engine::run(spec, env, watch, &handle.cancel);
        total.counts.add(&outcome.counts);
        total.bytes_read += outcome.bytes_read;
        total.bytes_written += outcome.bytes_written;
        if let Some((inserted, updated)) = outcome.table {
            let t = table.get_or_insert_with(TableCounts::default);
            t.inserted += inserted;
            t.updated += updated;
        }
        let shown = |m: &str| scrub(m, dir);
        total.errors.extend(outcome.errors.into_iter().map(|mut e| {
            e.error = shown(&e.error);
            e
        }));
        if outcome.status != RunStatus::Succeeded {
            total.state = match outcome.status {
                RunStatus::Cancelled => OpState::Cancelled,
                _ => OpState::Failed,
            };
            total.error = outcome.failure.map(|f| ErrorInfo {
                code: f.info.code,
                message: shown(&f.info.message),
            });
            total.table = table;
            return total;
        }
    }
    total.table = table;
    handle.update(|op| op.current_step = "checksums".into());
    match result_files(&handle.id, dir) {
        Ok(files) => total.files = files,
        Err(e) => {
            let message = format!("cannot list the result files: {e}");
            return Finished {
                counts: total.counts,
                ..Finished::failed("io_error", &message)
            };
        }
    }
    total
}

/// A message with the operation's folder taken out of every path (clients know their file by its name).
fn scrub(message: &str, dir: &Path) -> String {
    let work = format!("{}/", dir.join("work").display());
    let result = format!("{}/", dir.join("result").display());
    message.replace(&work, "").replace(&result, "")
}

/// The files in `<dir>/result` with their sizes and SHA-256: parts and data files by name, the manifest
/// and the rejects file last.
fn result_files(id: &str, dir: &Path) -> std::io::Result<Vec<ResultFile>> {
    let result = dir.join("result");
    let rejects = dir.join("work").join("rejects.ndjson");
    if std::fs::metadata(&rejects).is_ok_and(|m| m.len() > 0) {
        std::fs::create_dir_all(&result)?;
        std::fs::rename(&rejects, result.join("rejects.ndjson"))?;
    }
    let mut names: Vec<String> = match std::fs::read_dir(&result) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let role = |name: &str| {
        if name == "rejects.ndjson" {
            "rejects"
        } else if name.ends_with(".manifest.json") {
            "manifest"
        } else if is_part(name) {
            "part"
        } else {
            "data"
        }
    };
    names.sort_by_key(|n| {
        (
            matches!(role(n), "manifest" | "rejects"),
            role(n) == "rejects",
            n.clone(),
        )
    });
    let mut files = Vec::with_capacity(names.len());
    let mut part = 0;
    for name in names {
        let path = result.join(&name);
        let (bytes, sha256) = digest(&path)?;
        let role = role(&name);
        let url = match role {
            "part" => {
                part += 1;
                format!("/api/data-migration/operations/{id}/result?part={part}")
            }
            _ => format!(
                "/api/data-migration/operations/{id}/result?file={}",
                percent_encoding::utf8_percent_encode(&name, FILE_NAME)
            ),
        };
        files.push(ResultFile {
            name,
            role: role.into(),
            bytes,
            sha256,
            url,
        });
    }
    Ok(files)
}

/// What a file name keeps unencoded in a URL's query.
const FILE_NAME: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_');

/// `<stem>-00001.<ext>`: a part of a split output.
fn is_part(name: &str) -> bool {
    name.split('.').next().is_some_and(|stem| {
        stem.rsplit_once('-')
            .is_some_and(|(_, n)| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, crate::envelope::split::hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_told_from_data_files() {
        assert!(is_part("contexts-00001.json.gz"));
        assert!(!is_part("contexts.json"));
        assert!(!is_part("my-data.json"));
    }

    #[test]
    fn result_files_are_listed_with_their_digests_manifest_last() {
        let dir = tempfile::tempdir().unwrap();
        let result = dir.path().join("result");
        std::fs::create_dir_all(&result).unwrap();
        std::fs::write(result.join("c.manifest.json"), "{}").unwrap();
        std::fs::write(result.join("c-00002.json"), "[]").unwrap();
        std::fs::write(result.join("c-00001.json"), "[]").unwrap();
        let files = result_files("op-1", dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["c-00001.json", "c-00002.json", "c.manifest.json"]);
        assert_eq!(
            files[0].url,
            "/api/data-migration/operations/op-1/result?part=1"
        );
        assert_eq!(
            files[0].sha256,
            "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
        );
    }

    #[test]
    fn messages_lose_the_operations_folder() {
        let dir = Path::new("/srv/ferry/ops/op-1");
        assert_eq!(
            scrub(
                "decode error in /srv/ferry/ops/op-1/work/upload.csv at record 2",
                dir
            ),
            "decode error in upload.csv at record 2"
        );
    }
}
