//! Between a run and its front end: the run tells an [`Observer`] what it is doing (started, step, progress,
//! table done, finished), and the front end stops it through a [`CancelToken`], which the run checks between
//! batches. The CLI's progress bar and `--progress json` are two observers; the HTTP service's operation
//! state and its event stream are another. Nothing inside the library prints progress itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::report::Counts;

/// Receives a run's events. Called from the thread that drives the run (several threads for a migration
/// that copies tables in parallel), so an implementation must be cheap and must not block for long:
/// throttle, queue or drop as a display needs.
pub trait Observer: Send + Sync {
    /// One event of the run.
    fn event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> Observer for F {
    fn event(&self, event: &Event) {
        self(event)
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {
    fn event(&self, _event: &Event) {}
}

/// What kind of run an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunKind {
    /// `ferry convert` (and `ferry validate`, a convert that writes nothing).
    Convert,
    /// `ferry migrate` (one tenant's, too).
    Migrate,
    /// `ferry export`: one tenant's rows into a bundle.
    Export,
    /// `ferry import`: a bundle into a database.
    Import,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still going (the status of a report taken while the run is not over).
    #[default]
    Running,
    /// Done; the output is final.
    Succeeded,
    /// Stopped by an error; the target is as it was (or, with `--commit-every`, as the report says).
    Failed,
    /// Stopped by its cancellation token; the target is as it was, like a failed strict run.
    Cancelled,
}

impl Status {
    /// The status's name, as reports and the service show it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The status a finished run has for `result`.
    pub fn of<T>(result: &Result<T>) -> Status {
        match result {
            Ok(_) => Status::Succeeded,
            Err(e) if e.is_cancelled() => Status::Cancelled,
            Err(_) => Status::Failed,
        }
    }
}

/// Where a run stands: counts so far and bytes moved. Sent with every [`Event::Progress`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Where the records read so far went (flattened: `read`, `written`, `rejected`, `filtered`, `skipped`).
    #[serde(flatten)]
    pub counts: Counts,
    /// Input bytes consumed (as stored: compressed, encrypted), where the source has bytes.
    pub bytes_read: u64,
    /// The input's size in bytes, when known: with `bytes_read` it gives percent done and an ETA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Records (rows) in all, when known (a migration knows its tables' row counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_records: Option<u64>,
    /// The table being worked on, for database runs that move several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Seconds since the run started.
    pub seconds: f64,
}

impl Progress {
    /// Records read per second so far.
    pub fn records_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.counts.read as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Fraction done (0 to 1), from bytes when the input's size is known, else from records.
    pub fn fraction(&self) -> Option<f64> {
        let (done, total) = match (self.total_bytes, self.total_records) {
            (Some(total), _) if total > 0 => (self.bytes_read, total),
            (_, Some(total)) if total > 0 => (self.counts.read, total),
            _ => return None,
        };
        Some((done as f64 / total as f64).clamp(0.0, 1.0))
    }

    /// Seconds left at the rate so far, when the fraction done is known.
    pub fn eta_seconds(&self) -> Option<f64> {
        let fraction = self.fraction()?;
        (fraction > 0.0).then(|| self.seconds * (1.0 - fraction) / fraction)
    }
}

/// One thing a run tells its observer.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The run's job is checked and its endpoints are open.
    Started {
        /// Convert or migrate.
        kind: RunKind,
        /// The source, as reports show it (no password).
        input: String,
        /// The target, as reports show it (no password).
        output: String,
        /// The input's size in bytes, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        total_bytes: Option<u64>,
    },
    /// The run entered a step (`plan`, `backup`, `schema`, `copy`, `keys`, `validate`, `commit`, …).
    Step {
        /// The step's name.
        step: String,
    },
    /// Counts so far; sent after every batch (observers throttle what they show).
    Progress(Progress),
    /// One table of a multi-table run is done.
    TableDone {
        /// The table.
        table: String,
        /// Rows read from the source.
        read: u64,
        /// Rows written to the target.
        written: u64,
        /// Rows rejected.
        rejected: u64,
        /// Seconds the table took.
        seconds: f64,
        /// A line a front end can show as it is (`"Genre": 25 rows …`).
        line: String,
    },
    /// Something the user should know that does not stop the run (a warning, a note).
    Notice {
        /// One sentence.
        message: String,
    },
    /// A sync pass committed: how far the target was behind the source (`ferry sync`).
    Lag {
        /// Passes committed so far.
        pass: u64,
        /// Rows the pass found behind (written and deleted).
        rows: u64,
        /// Seconds from the pass's source snapshot to its commit.
        seconds: f64,
        /// Totals so far.
        counts: Counts,
    },
    /// The run is over.
    Finished {
        /// How it ended.
        status: Status,
        /// The final counts.
        progress: Progress,
    },
}

/// Stops a run from outside: the run checks it between batches (and between tables and steps) and ends
/// like a failed strict run — the target as it was, no output under its name — with the status
/// `cancelled`. Cloning gives another handle to the same token.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the run to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(cancelled)` once the run has been asked to stop: call between units of work.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::cancelled())
        } else {
            Ok(())
        }
    }
}

/// What a front end hands a run besides its job: who watches it and how to stop it.
#[derive(Clone)]
pub struct RunContext {
    /// Receives the run's events.
    pub observer: Arc<dyn Observer>,
    /// Checked between batches.
    pub cancel: CancelToken,
}

impl RunContext {
    /// A context with this observer and a fresh token.
    pub fn new(observer: Arc<dyn Observer>) -> RunContext {
        RunContext {
            observer,
            cancel: CancelToken::new(),
        }
    }

    /// Sends `event` to the observer.
    pub fn emit(&self, event: Event) {
        self.observer.event(&event);
    }

    /// Tells the observer the run entered `step`.
    pub fn step(&self, step: &str) {
        self.emit(Event::Step {
            step: step.to_owned(),
        });
    }

    /// Tells the observer something the user should know.
    pub fn notice(&self, message: impl Into<String>) {
        self.emit(Event::Notice {
            message: message.into(),
        });
    }
}

impl Default for RunContext {
    fn default() -> RunContext {
        RunContext::new(Arc::new(Silent))
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A run that failed, with the report of what it did before it stopped: front ends show the counts of a
/// failed run exactly like those of a finished one.
#[derive(Debug)]
pub struct Failed<R> {
    /// The report so far (its status says failed or cancelled).
    pub report: R,
    /// Why the run stopped.
    pub error: Error,
}

/// The outcome of a run: its report either way.
pub type RunResult<R> = std::result::Result<R, Box<Failed<R>>>;

impl<R> From<Box<Failed<R>>> for Error {
    fn from(failed: Box<Failed<R>>) -> Error {
        failed.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn a_cancelled_token_fails_its_check_with_a_cancelled_error() {
        let token = CancelToken::new();
        assert!(token.check().is_ok());
        let other = token.clone();
        other.cancel();
        let err = token.check().unwrap_err();
        assert!(err.is_cancelled());
        assert_eq!(Status::of::<()>(&Err(err)), Status::Cancelled);
    }

    #[test]
    fn closures_observe_and_events_serialize_with_their_name() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let ctx = RunContext::new(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(serde_json::to_string(e).unwrap())
        }));
        ctx.step("copy");
        ctx.emit(Event::Progress(Progress {
            counts: Counts {
                read: 5,
                ..Counts::default()
            },
            bytes_read: 50,
            total_bytes: Some(200),
            seconds: 1.0,
            ..Progress::default()
        }));
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], r#"{"event":"step","step":"copy"}"#);
        assert!(
            seen[1].starts_with(r#"{"event":"progress","read":5,"#),
            "{}",
            seen[1]
        );
    }

    #[test]
    fn fraction_and_eta_come_from_bytes_else_records() {
        let p = Progress {
            counts: Counts {
                read: 10,
                ..Counts::default()
            },
            bytes_read: 25,
            total_bytes: Some(100),
            seconds: 2.0,
            ..Progress::default()
        };
        assert_eq!(p.fraction(), Some(0.25));
        assert_eq!(p.eta_seconds(), Some(6.0));
        let p = Progress {
            counts: Counts {
                read: 50,
                ..Counts::default()
            },
            total_records: Some(100),
            seconds: 1.0,
            ..Progress::default()
        };
        assert_eq!(p.fraction(), Some(0.5));
        assert_eq!(Progress::default().fraction(), None);
    }
}
