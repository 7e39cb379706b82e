//! What stopping ferry from outside does. On SIGTERM, SIGINT or SIGHUP a run in flight is cancelled through
//! its [`CancelToken`] (a front end registers it with [`cancel_on_signals`]): it stops at its next check,
//! like a failed strict run — a database load rolled back, a SQLite file it created removed, its temporary
//! files removed — and the process exits with the conventional code 128 + the signal's number. A second
//! signal, a run that has not stopped within [`GRACE`], or a signal while no run is registered ends the
//! process at once: the temporary files of the sinks in flight are removed and it exits with the same
//! code (a database load's open transaction is then rolled back by the server, or by SQLite's journal, when
//! the connection goes away with the process).
//!
//! Every temporary file a [`crate::sink::AtomicFile`] creates is registered here until it is renamed into
//! place or removed. The files of a run killed without a chance to clean up (SIGKILL, a power cut) carry
//! the host and process id in their names; a later run removes them ([`crate::sink`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::observe::CancelToken;

/// How long a cancelled run may take to stop before the process ends without waiting for it.
pub const GRACE: Duration = Duration::from_secs(10);

/// Temporary files in flight.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The token of the run a signal cancels.
static RUN: Mutex<Option<CancelToken>> = Mutex::new(None);

/// The first signal received, 0 before any.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The registry, even if a thread panicked while holding it (its list is still right).
pub(crate) fn in_flight() -> MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run_token() -> MutexGuard<'static, Option<CancelToken>> {
    RUN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a temporary file; the returned guard unregisters it when dropped.
pub(crate) fn register(path: &Path) -> Registration {
    in_flight().push(path.to_owned());
    Registration {
        path: path.to_owned(),
    }
}

/// A temporary file's place in the registry, for as long as the file may exist.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
}

impl Registration {
    /// Unregisters through a lock the caller holds (while it renames the file into place).
    pub(crate) fn release(self, registry: &mut Vec<PathBuf>) {
        if let Some(i) = registry.iter().position(|p| *p == self.path) {
            registry.swap_remove(i);
        }
        std::mem::forget(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut registry = in_flight();
        if let Some(i) = registry.iter().position(|p| *p == self.path) {
            registry.swap_remove(i);
        }
    }
}

/// Makes SIGTERM, SIGINT and SIGHUP cancel `token` while the returned guard lives (the front end holds it
/// for the length of its run). Installs the handler if it is not installed yet.
pub fn cancel_on_signals(token: &CancelToken) -> Result<CancelOnSignals> {
    remove_temp_files_on_signals()?;
    *run_token() = Some(token.clone());
    Ok(CancelOnSignals(()))
}

/// While it lives, a signal cancels the registered run rather than ending the process at once.
#[derive(Debug)]
pub struct CancelOnSignals(());

impl Drop for CancelOnSignals {
    fn drop(&mut self) {
        run_token().take();
    }
}

/// The signal that stopped the run, if one did: the process should exit with 128 + its number.
pub fn signal_received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Installs the handler (once per process). Without a registered run a signal removes every registered
/// temporary file and exits with 128 + the signal's number at once. The work runs on a thread of its own,
/// not inside the signal handler, so it may take locks and call the file system.
pub fn remove_temp_files_on_signals() -> Result<()> {
    static INSTALL: Once = Once::new();
    let mut outcome = Ok(());
    INSTALL.call_once(|| outcome = install());
    outcome
}

/// Removes every temporary file in flight and exits. The registry's lock is kept until the process ends,
/// so no rename can put a file in place after this (a group of renames in progress finishes first).
fn exit_now(signal: i32) -> ! {
    let registry = in_flight();
    for path in registry.iter() {
        let _ = std::fs::remove_file(path);
    }
    std::process::exit(128 + signal);
}

#[cfg(unix)]
fn install() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let cannot = |e: std::io::Error| {
        Error::io(
            crate::error::Stage::Source,
            None,
            std::io::Error::new(e.kind(), format!("cannot install signal handlers: {e}")),
        )
    };
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(cannot)?;
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let first = SIGNAL
                    .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                let token = run_token().clone();
                match token {
                    Some(token) if first => {
                        token.cancel();
                        // A run blocked where it cannot check its token is not waited for long.
                        let _ = std::thread::Builder::new()
                            .name("ferry-grace".into())
                            .spawn(move || {
                                std::thread::sleep(GRACE);
                                exit_now(signal);
                            });
                    }
                    _ => exit_now(SIGNAL.load(Ordering::SeqCst)),
                }
            }
        })
        .map_err(cannot)?;
    Ok(())
}

#[cfg(not(unix))]
fn install() -> Result<()> {
    Ok(())
}
