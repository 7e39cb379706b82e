//! Front end: the connection flags every command that opens a database shares, turned into the library's
//! `ConnectOptions` (one default for all of them: the library's).

use clap::Args;

use crate::db::ConnectOptions;

/// `--connect-retries` and `--connect-timeout`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Connection attempts after the first fails (waits 0.25 s, 0.5 s, 1 s, … between them).
    #[arg(long, value_name = "N", default_value_t = ConnectOptions::default().retries)]
    connect_retries: u32,

    /// Seconds allowed for each connection attempt (and for a busy SQLite database).
    #[arg(long, value_name = "SECONDS", default_value_t = ConnectOptions::default().timeout.as_secs())]
    connect_timeout: u64,
}

impl ConnectArgs {
    /// The options these flags give.
    pub fn options(&self) -> ConnectOptions {
        options(self.connect_retries, self.connect_timeout)
    }
}

/// Connection options from a retry count and a timeout in seconds (at least one).
pub fn options(retries: u32, timeout: u64) -> ConnectOptions {
    ConnectOptions {
        retries,
        timeout: std::time::Duration::from_secs(timeout.max(1)),
    }
}
