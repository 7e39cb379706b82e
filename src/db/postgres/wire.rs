//! The sink's connection thread: the PostgreSQL table sink hands its statements and COPY data to a thread
//! that owns the client, so the server parses one part of a batch while the next part is being encoded.

use std::any::Any;
use std::io::Write as _;
use std::sync::mpsc;

use bytes::Bytes;
use postgres::Client;

use crate::db::pgcopy;
use crate::error::{Error, Position, Result, Stage};

/// Why a statement sent to the connection thread did not succeed.
#[derive(Debug)]
pub(super) enum WireError {
    /// The server or the driver said no.
    Db(postgres::Error),
    /// The connection thread is gone.
    Gone,
}

impl From<postgres::Error> for WireError {
    fn from(e: postgres::Error) -> Self {
        WireError::Db(e)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Db(e) => write!(f, "{e}"),
            WireError::Gone => f.write_str("the connection thread stopped"),
        }
    }
}

type Reply = std::result::Result<Box<dyn Any + Send>, postgres::Error>;

/// Work for the connection thread.
enum Job {
    /// Run this with the client and reply.
    Run(Box<dyn FnOnce(&mut Client) -> Reply + Send>),
    /// Open a COPY with this statement and send these first bytes; no reply until `CopyEnd`.
    CopyStart(String, Bytes),
    /// More COPY data.
    CopyData(Bytes),
    /// Finish the COPY and reply with the number of rows copied.
    CopyEnd,
}

/// The sink's connection, owned by a thread of its own so that the server parses one part of a batch
/// while the next part is being encoded (the sync driver's COPY writer borrows the client, so it cannot be
/// kept open across calls on this side).
pub(super) struct Wire {
    jobs: Option<mpsc::SyncSender<Job>>,
    replies: mpsc::Receiver<Reply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Wire {
    pub(super) fn start(client: Client) -> Wire {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(16);
        let (reply_tx, replies) = mpsc::channel::<Reply>();
        let thread = std::thread::spawn(move || serve(client, &job_rx, &reply_tx));
        Wire {
            jobs: Some(jobs),
            replies,
            thread: Some(thread),
        }
    }

    fn send(&self, job: Job) -> Result<()> {
        let sent = self
            .jobs
            .as_ref()
            .map(|j| j.send(job).is_ok())
            .unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(Error::data(
                Stage::Sink,
                Position::default(),
                "the database connection thread stopped unexpectedly",
            ))
        }
    }

    fn reply(&self) -> std::result::Result<Box<dyn Any + Send>, WireError> {
        match self.replies.recv() {
            Ok(reply) => reply.map_err(WireError::Db),
            Err(_) => Err(WireError::Gone),
        }
    }

    /// Runs `f` with the client on the connection thread and waits for its result.
    pub(super) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error> + Send + 'static,
    ) -> std::result::Result<T, WireError> {
        let job = Job::Run(Box::new(move |c| {
            f(c).map(|v| Box::new(v) as Box<dyn Any + Send>)
        }));
        self.send(job).map_err(|_| WireError::Gone)?;
        self.reply()?
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| WireError::Gone)
    }

    pub(super) fn exec(&self, sql: &str) -> std::result::Result<(), WireError> {
        let sql = sql.to_owned();
        self.call(move |c| c.batch_execute(&sql))
    }

    /// Opens a COPY with `sql` and sends the stream's header.
    pub(super) fn copy_start(&self, sql: String) -> Result<()> {
        self.send(Job::CopyStart(sql, Bytes::from_static(pgcopy::HEADER)))
    }

    pub(super) fn copy_data(&self, data: &[u8]) -> Result<()> {
        self.send(Job::CopyData(Bytes::copy_from_slice(data)))
    }

    /// Ends the COPY and waits for the number of rows copied.
    pub(super) fn copy_end(&self) -> std::result::Result<u64, WireError> {
        self.copy_end_send()?;
        self.copy_ended()
    }

    /// Sends the COPY's trailer and end without waiting; [`Wire::copy_ended`] takes the server's answer.
    pub(super) fn copy_end_send(&self) -> std::result::Result<(), WireError> {
        self.send(Job::CopyData(Bytes::from_static(&pgcopy::TRAILER)))
            .map_err(|_| WireError::Gone)?;
        self.send(Job::CopyEnd).map_err(|_| WireError::Gone)
    }

    /// Waits for the number of rows the COPY ended by [`Wire::copy_end_send`] copied.
    pub(super) fn copy_ended(&self) -> std::result::Result<u64, WireError> {
        self.reply()?
            .downcast::<u64>()
            .map(|b| *b)
            .map_err(|_| WireError::Gone)
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which drops the client and so closes the connection.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The connection thread's loop.
fn serve(mut client: Client, jobs: &mpsc::Receiver<Job>, replies: &mpsc::Sender<Reply>) {
    while let Ok(job) = jobs.recv() {
        let reply = match job {
            Job::Run(f) => f(&mut client),
            Job::CopyStart(sql, first) => copy(&mut client, &sql, first, jobs),
            // Out of order (a COPY that failed to start has already replied): nothing to do.
            Job::CopyData(_) | Job::CopyEnd => continue,
        };
        if replies.send(reply).is_err() {
            break;
        }
    }
}

/// Runs one COPY: its data arrives as jobs until `CopyEnd`. Once sending fails the rest is only drained;
/// finishing then reports the server's reason.
fn copy(client: &mut Client, sql: &str, first: Bytes, jobs: &mpsc::Receiver<Job>) -> Reply {
    let mut writer = match client.copy_in(sql) {
        Ok(writer) => Some(writer),
        Err(e) => {
            while let Ok(job) = jobs.recv() {
                if matches!(job, Job::CopyEnd) {
                    break;
                }
            }
            return Err(e);
        }
    };
    let mut failed = writer
        .as_mut()
        .is_some_and(|w| w.write_all(&first).is_err());
    while let Ok(job) = jobs.recv() {
        match job {
            Job::CopyData(data) if !failed => {
                failed = writer.as_mut().is_some_and(|w| w.write_all(&data).is_err());
            }
            Job::CopyEnd => {
                return match writer.take() {
                    Some(w) => w.finish().map(|n| Box::new(n) as Box<dyn Any + Send>),
                    None => Ok(Box::new(0u64)),
                };
            }
            _ => {}
        }
    }
    // The sink went away mid-COPY: dropping the writer aborts it.
    Ok(Box::new(0u64))
}
