//! The `ferry` binary: parse the command line, run, map the outcome to an exit code
//! (0 ok or broken pipe, 1 the run failed, 2 usage or configuration error, 128 + the signal's number when
//! a signal cancelled the run, 130 for a run cancelled otherwise).

use std::process::ExitCode;

/// jemalloc, not the system allocator: when both of a run's threads map records (see `ReaderMapping` in
/// `src/pipeline/drive.rs`), glibc's per-thread caches pass chunks between the threads' arenas and the two
/// wait on each other's locks (templated 1M-row CSV → SQLite took twice the CPU). The library leaves the
/// choice of allocator to the program that links it.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match ferry::cli::run(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = match ferry::interrupt::signal_received() {
                Some(signal) if error.is_cancelled() => 128 + signal,
                _ => error.exit_code(),
            };
            if code != 0 && error.is_verdict() {
                // A negative answer (`ferry diff`: the databases differ) is no error of the run.
                eprintln!("ferry: {error}");
            } else if code != 0 {
                let error = anyhow::Error::new(error);
                // The last net: no message shows a password, whatever spelled it.
                eprintln!(
                    "ferry: error: {}",
                    ferry::secret::redact(&error.to_string())
                );
            }
            ExitCode::from(code as u8)
        }
    }
}
