//! ferry moves records between formats and databases. One pipeline, pluggable at both ends:
//!
//! ```text
//! source ─► decode ─► map & transform ─► validate ─► encode ─► compress ─► encrypt ─► split ─► sink
//!  file        JSON       template           JSON       (same     gzip       AES-256-GCM  parts +
//!  stdin       NDJSON     fields, renames,   Schema     codecs)   brotli     streaming    manifest
//!              CSV        transforms,        strict/              zstd
//!              XML        computed fields,   lenient/                                    file, stdout
//!              YAML       filters            skip
//!              Markdown
//! ```
//!
//! This build has the source, decode, encode and sink stages for files and standard input/output.
//!
//! ```no_run
//! let mut job = ferry::ConvertJob::new("samples/legacy.csv", "contexts.ndjson");
//! job.batch_size = 4096;
//! let report = ferry::convert(&job)?;
//! assert!(report.balances());
//! # Ok::<(), ferry::Error>(())
//! ```

pub mod cli;
pub mod db;
mod endpoint;
pub mod env;
pub mod envelope;
mod error;
pub mod format;
pub mod interrupt;
pub mod migrate;
pub mod observe;
mod paths;
mod pipeline;
pub mod progress;
mod record;
mod rejects;
mod report;
pub mod secret;
pub mod serve;
pub mod sink;
pub mod template;
pub mod validate;

pub use endpoint::{format_from_path, Endpoint};
pub use env::Environment;
pub use error::{sqlstate, DbCause, Error, ErrorKind, Position, Result, Stage};
pub use format::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, FORMATS};
pub use observe::{CancelToken, Event, Failed, Observer, RunContext, RunResult, Status};
pub use paths::{Access, RunPaths};
pub use pipeline::{convert, ConvertJob, ErrorPolicy, DEFAULT_BATCH_SIZE};
pub use record::{
    number_from_text, write_json, write_json_record, Decimal, Key, Record, RecordBuilder,
    Timestamp, Value,
};
pub use report::{Counts, Report, ReportedError};
