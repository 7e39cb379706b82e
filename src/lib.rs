//! ferry moves records between formats and databases. One pipeline, pluggable at both ends:
//!
//! ```text
//! source ─► decode ─► map & transform ─► validate ─► encode ─► compress ─► encrypt ─► split ─► sink
//!  file        JSON       template           JSON       (same     gzip       AES-256-GCM  parts +
//!  stdin       NDJSON     fields, renames,   Schema     codecs)   brotli     streaming    manifest
//!              CSV        transforms,        strict/              zstd
//!  sqlite://   XML        computed fields,   lenient/                                    file, stdout,
//!  postgres:// YAML       filters            skip                                        sqlite://, postgres://
//!              Markdown
//! ```
//!
//! The library owns the run; front ends (the CLI, the HTTP service) only turn their input into a job, hand
//! it over with an observer and a cancellation token, and turn the report — returned on success and on
//! failure alike — into their output:
//!
//! ```no_run
//! use ferry::{ConvertJob, Environment, RunContext};
//! let mut job = ConvertJob::new("samples/legacy.csv", "contexts.ndjson");
//! job.template = Some("std-context".into());
//! let env = Environment::from_process(); // the front end's: the library reads no variable itself
//! let report = ferry::convert(&job, &env, &RunContext::default())?;
//! assert!(report.balances());
//! # Ok::<(), ferry::Error>(())
//! ```

pub mod cli;
pub mod db;
pub mod describe;
mod endpoint;
pub mod env;
pub mod envelope;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz;
pub mod infer;
pub mod interrupt;
mod job;
pub mod migrate;
pub mod observe;
mod paths;
mod pipeline;
mod record;
mod rejects;
mod report;
pub mod secret;
pub mod serve;
pub mod shape;
pub mod shard;
pub mod sink;
pub mod sort;
pub mod sync;
pub mod template;
pub mod tenant;
pub mod validate;
pub mod verify;

pub use endpoint::{format_from_path, Endpoint};
pub use env::Environment;
pub use error::{sqlstate, DbCause, Error, ErrorKind, Position, Result, Stage};
pub use format::{
    Decoded, Decoder, Encoder, Fidelity, Format, FormatOptions, Input, TextRows, FORMATS,
};
pub use job::{ConvertJob, ErrorPolicy, Job, JobReport, DEFAULT_BATCH_SIZE};
pub use observe::{CancelToken, Event, Failed, Observer, RunContext, RunResult, Status};
pub use paths::{Access, RunPaths};
pub use pipeline::{convert, BuiltConvert, Streams};
pub use record::{
    number_from_text, write_json, write_json_record, Decimal, Key, Record, RecordBuilder,
    Timestamp, Value,
};
pub use report::{Counts, Report, ReportedError};
