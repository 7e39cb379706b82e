//! What stopping ferry from outside does: on SIGTERM, SIGINT or SIGHUP the temporary files of the sinks
//! in flight are removed and the process exits with the conventional code 128 + the signal's number, so an
//! interrupted run leaves nothing behind — like a failed one. (A database load's transaction is rolled back
//! by the server, or by SQLite's journal, when the connection goes away with the process.)
//!
//! Every temporary file a [`crate::sink::AtomicFile`] creates is registered here until it is renamed into
//! place or removed. The files of a run killed without a chance to clean up (SIGKILL, a power cut) carry
//! the host and process id in their names; a later run removes them ([`crate::sink`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once};

use crate::error::{Error, Result};

/// Temporary files in flight.
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The registry, even if a thread panicked while holding it (its list is still right).
pub(crate) fn in_flight() -> MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// Installs the handler (once per process): SIGTERM, SIGINT and SIGHUP remove every registered temporary
/// file and exit with 128 + the signal's number. The work runs on a thread of its own, not inside the signal
/// handler, so it may take locks and call the file system.
pub fn remove_temp_files_on_signals() -> Result<()> {
    static INSTALL: Once = Once::new();
    let mut outcome = Ok(());
    INSTALL.call_once(|| outcome = install());
    outcome
}

#[cfg(unix)]
fn install() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let cannot = |e: std::io::Error| Error::usage(format!("cannot install signal handlers: {e}"));
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(cannot)?;
    std::thread::Builder::new()
        .name("ferry-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                // The lock is kept until the process ends: no rename can put a file in place after this.
                let registry = in_flight();
                for path in registry.iter() {
                    let _ = std::fs::remove_file(path);
                }
                std::process::exit(128 + signal);
            }
        })
        .map_err(cannot)?;
    Ok(())
}

#[cfg(not(unix))]
fn install() -> Result<()> {
    Ok(())
}
