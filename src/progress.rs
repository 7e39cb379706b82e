//! Progress while records move: a bar on a terminal (indicatif), JSON lines when asked, or nothing.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    #[default]
    Auto,
    /// One JSON object per second on stderr: `{"event":"progress","records":…,"bytes":…,…}`.
    Json,
    /// Nothing.
    None,
}

/// A running progress display.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    json: bool,
    started: Instant,
    last_json: Instant,
    total_bytes: Option<u64>,
}

impl Progress {
    /// Starts showing progress; `total_bytes` (the input size, when known) gives the bar its length and ETA.
    pub fn start(mode: ProgressMode, quiet: bool, total_bytes: Option<u64>) -> Progress {
        let show_bar = mode == ProgressMode::Auto && !quiet && std::io::stderr().is_terminal();
        let bar = show_bar.then(|| {
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
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            json: mode == ProgressMode::Json,
            started: now,
            last_json: now,
            total_bytes,
        }
    }

    /// Reports the records read and bytes consumed so far.
    pub fn update(&mut self, records: u64, bytes: u64) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            records as f64 / elapsed
        } else {
            0.0
        };
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.set_message(format!("{records} records, {rate:.0}/s"));
        }
        if self.json && self.last_json.elapsed() >= Duration::from_secs(1) {
            self.last_json = Instant::now();
            self.emit_json("progress", records, bytes, rate);
        }
    }

    /// Ends the display.
    pub fn finish(self, records: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.json {
            let elapsed = self.started.elapsed().as_secs_f64();
            let rate = if elapsed > 0.0 {
                records as f64 / elapsed
            } else {
                0.0
            };
            self.emit_json("done", records, bytes, rate);
        }
    }

    fn emit_json(&self, event: &str, records: u64, bytes: u64, rate: f64) {
        let line = serde_json::json!({
            "event": event,
            "records": records,
            "bytes": bytes,
            "total_bytes": self.total_bytes,
            "seconds": (self.started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            "records_per_second": rate.round(),
        });
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}
