//! The `ferry` binary: parse the command line, run, map the outcome to an exit code
//! (0 ok or broken pipe, 1 the run failed, 2 usage or configuration error, 128 + the signal's number when
//! a signal cancelled the run, 130 for a run cancelled otherwise).

use std::process::ExitCode;

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
