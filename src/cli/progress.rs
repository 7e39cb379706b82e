//! The command line's two observers of a run: a progress bar on a terminal (indicatif), and `--progress
//! json`, one JSON object a second on stderr. The library only sends events ([`Event`]); what is shown,
//! and how often, is decided here.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::observe::{Event, Observer, Progress, Silent, Status};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// A bar (what `--progress` alone asks for); a stderr that is not a terminal shows nothing.
    Bar,
    /// One JSON object per second on stderr: `{"event":"progress","records":…,"bytes":…,…}`.
    Json,
    /// Nothing.
    None,
}

/// The observer `mode` asks for (`quiet` silences the bar, not the JSON lines a program asked for).
pub fn observer(mode: ProgressMode, quiet: bool) -> Arc<dyn Observer> {
    match mode {
        ProgressMode::Auto if !quiet && std::io::stderr().is_terminal() => Arc::new(Bar::default()),
        ProgressMode::Bar => Arc::new(Bar::default()),
        ProgressMode::Json => Arc::new(JsonLines::default()),
        _ => Arc::new(Silent),
    }
}

/// A bar over the input's bytes (a spinner when its size is unknown), redrawn at most four times a second.
#[derive(Default)]
struct Bar {
    bar: OnceLock<indicatif::ProgressBar>,
}

impl Bar {
    fn start(&self, total_bytes: Option<u64>) {
        let bar = match total_bytes {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total_bytes.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} (ETA {eta})"
        } else {
            "{spinner} [{elapsed_precise}] {bytes} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
        let _ = self.bar.set(bar);
    }
}

impl Observer for Bar {
    fn event(&self, event: &Event) {
        match event {
            Event::Started { total_bytes, .. } => self.start(*total_bytes),
            Event::Progress(p) => {
                if let Some(bar) = self.bar.get() {
                    bar.set_position(p.bytes_read);
                    bar.set_message(format!(
                        "{} records, {:.0}/s",
                        p.counts.read,
                        p.records_per_second()
                    ));
                }
            }
            Event::Finished { .. } => {
                if let Some(bar) = self.bar.get() {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// `{"event":"progress",…}` at most once a second while records move, and `{"event":"done",…}` when the
/// run succeeds.
#[derive(Default)]
struct JsonLines {
    /// When the last line was written (none yet: the run's start).
    last: Mutex<Option<Instant>>,
    total_bytes: OnceLock<Option<u64>>,
}

impl JsonLines {
    fn emit(&self, event: &str, p: &Progress) {
        let line = serde_json::json!({
            "event": event,
            "records": p.counts.read,
            "bytes": p.bytes_read,
            "total_bytes": self.total_bytes.get().copied().flatten(),
            "seconds": (p.seconds * 1000.0).round() / 1000.0,
            "records_per_second": p.records_per_second().round(),
        });
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

impl Observer for JsonLines {
    fn event(&self, event: &Event) {
        match event {
            Event::Started { total_bytes, .. } => {
                let _ = self.total_bytes.set(*total_bytes);
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(Instant::now());
                }
            }
            Event::Progress(p) => {
                let Ok(mut last) = self.last.lock() else {
                    return;
                };
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due {
                    *last = Some(Instant::now());
                    self.emit("progress", p);
                }
            }
            Event::Finished {
                status: Status::Succeeded,
                progress,
            } => self.emit("done", progress),
            // Every sync pass: how far behind the target was (never throttled: a pass is seconds apart).
            Event::Lag {
                pass,
                rows,
                seconds,
                counts,
            } => {
                let line = serde_json::json!({
                    "event": "lag",
                    "pass": pass,
                    "lag_rows": rows,
                    "lag_seconds": (seconds * 1000.0).round() / 1000.0,
                    "read": counts.read,
                    "written": counts.written,
                    "unchanged": counts.skipped,
                });
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            _ => {}
        }
    }
}
