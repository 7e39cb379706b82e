//! Wires the stages in their one order — source → decode → map & transform → validate → encode → sink — and
//! owns a conversion's run from its job to its report: [`convert`] builds the job ([`build`]: everything
//! checked, nothing opened for writing), opens both ends ([`open`]), drives the records in batches
//! ([`drive`], with the map and validate [`stages`]) and returns the report whether the run succeeded,
//! failed or was cancelled. The run tells its observer what it is doing and stops at its cancellation
//! token; it prints nothing itself.
//!
//! Decoding runs on its own thread and hands batches to this one through a bounded channel; mapping and
//! validation run on a batch in parallel (rayon) with output order kept; encoding runs here. Memory stays at
//! a few batches whatever the input size.

mod build;
mod drive;
mod open;
mod stages;
mod text_rows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub(crate) use build::build;
pub use build::BuiltConvert;
pub(crate) use open::is_envelope_extension;
pub use open::Streams;

use crate::endpoint::Endpoint;
use crate::env::Environment;
use crate::error::{Error, Result, Stage};
use crate::format::Format;
use crate::job::ConvertJob;
use crate::observe::{Event, Failed, RunContext, RunKind, RunResult};
use crate::rejects::RejectsWriter;
use crate::report::{Report, VALIDATION_ONLY};

pub use crate::job::ErrorPolicy;

/// Builds and runs a conversion. On success the output is final and the report balances; on failure or
/// cancellation nothing is left under the output's name, and the failure carries the report so far (counts,
/// formats, seconds, the error in its list, its status) and the error, which says which record and why. A
/// job that cannot run as configured fails with a configuration error before anything is opened.
///
/// ```no_run
/// use ferry::{ConvertJob, Environment, RunContext};
/// let mut job = ConvertJob::new("samples/legacy.csv", "contexts.ndjson");
/// job.template = Some("std-context".into());
/// match ferry::convert(&job, &Environment::from_process(), &RunContext::default()) {
///     Ok(report) => assert!(report.balances()),
///     Err(failed) => eprintln!("{} after {} records", failed.error, failed.report.counts.read),
/// }
/// ```
pub fn convert(job: &ConvertJob, env: &Environment, ctx: &RunContext) -> RunResult<Report> {
    match job.build(env) {
        Ok(built) => built.run(ctx),
        Err(error) => {
            let mut report = Report {
                input: Endpoint::shown(&job.input, env),
                output: Endpoint::shown(&job.output, env),
                ..begin_report(job)
            };
            report.end(Some(&error));
            ctx.emit(Event::Finished {
                status: report.status,
                progress: report.progress(),
            });
            Err(Box::new(Failed { report, error }))
        }
    }
}

/// A report with what the job says, before anything has run.
fn begin_report(job: &ConvertJob) -> Report {
    Report {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        dry_run: job.dry_run || job.validate_only,
        on_error: job.on_error.name().to_owned(),
        ..Report::default()
    }
}

impl BuiltConvert {
    /// Runs the conversion with standard input and output for `-`.
    pub fn run(self, ctx: &RunContext) -> RunResult<Report> {
        self.run_with_streams(Streams::new(), ctx)
    }

    /// Runs the conversion with the caller's streams for `-` (see [`Streams`]).
    pub fn run_with_streams(self, streams: Streams, ctx: &RunContext) -> RunResult<Report> {
        let started = Instant::now();
        let mut report = self.report();
        let bytes_read = Arc::new(AtomicU64::new(0));
        let total_bytes = match &self.source {
            Endpoint::File(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            Endpoint::Stdio | Endpoint::Database(_) => None,
        };
        ctx.emit(Event::Started {
            kind: RunKind::Convert,
            input: report.input.clone(),
            output: report.output.clone(),
            total_bytes,
        });
        let result = self
            .execute(
                streams,
                ctx,
                &mut report,
                (bytes_read.clone(), total_bytes, started),
            )
            .and_then(|()| match &self.incremental {
                Some(w) => w.after_load(&mut report.incremental, report.dry_run, ctx),
                None => Ok(()),
            });
        report.bytes_read = bytes_read.load(Ordering::Relaxed);
        report.seconds = started.elapsed().as_secs_f64();
        report.records_per_second = if report.seconds > 0.0 {
            report.counts.read as f64 / report.seconds
        } else {
            0.0
        };
        // Failed and cancelled runs balance too: the record that stopped a run counts as rejected.
        debug_assert!(report.balances(), "{:?}", report.counts);
        let result = result.map_err(|e| {
            let e = e.with_context(Some(&report.output), None);
            match report.last_committed_record {
                Some(n) if !e.is_cancelled() => with_resume_hint(e, n),
                _ => e,
            }
        });
        report.end(result.as_ref().err());
        ctx.emit(Event::Finished {
            status: report.status,
            progress: report.progress(),
        });
        match result {
            Ok(()) => Ok(report),
            Err(error) => Err(Box::new(Failed { report, error })),
        }
    }

    /// The input's records as its decoder gives them (envelope taken off, split parts in order, a
    /// database's rows), without mapping, for callers that look at an input rather than convert it
    /// ([`crate::describe`]). Standard input for `-`.
    pub fn open_records(&self) -> Result<Box<dyn crate::format::Decoder>> {
        open::open_decoder(self, None, Arc::new(AtomicU64::new(0)))
    }

    /// The input as reports name it, its format (or database) and, for a file format, what its values
    /// are (typed, or text).
    pub fn input_names(&self) -> (String, String, Option<crate::format::Fidelity>) {
        (
            self.source.display_name(),
            format_name(&self.source, self.input_format),
            self.input_format.map(|f| f.fidelity),
        )
    }

    /// Opens both ends and moves the records.
    fn execute(
        &self,
        streams: Streams,
        ctx: &RunContext,
        report: &mut Report,
        (bytes_read, total_bytes, started): (Arc<AtomicU64>, Option<u64>, Instant),
    ) -> Result<()> {
        streams.check(self)?;
        let Streams { input, output } = streams;
        let decoder = open::open_decoder(self, input, bytes_read.clone())?;
        let output = open::open_output(self, output)?;
        let mut run = drive::Run {
            stages: Arc::clone(&self.stages),
            policy: self.job.on_error,
            rejects: self.rejects.as_deref().map(RejectsWriter::new),
            input_name: report.input.clone(),
            report,
            ctx,
            bytes_read,
            total_bytes,
            started,
            resume_after: self.job.resume_after.unwrap_or(0),
            limit: self.job.limit.filter(|_| self.sort.is_none()),
        };
        run.drive(decoder, output, self.job.batch_size)
    }

    /// The report before any record moves: the run's endpoints, formats, template, schema and table.
    fn report(&self) -> Report {
        let job = &self.job;
        let (template, schema) = self.stages.names();
        Report {
            input: self.source.display_name(),
            output: if job.validate_only {
                VALIDATION_ONLY.to_owned()
            } else {
                self.target.display_name()
            },
            input_format: format_name(&self.source, self.input_format),
            output_format: if job.validate_only {
                String::new()
            } else {
                format_name(&self.target, self.output_format)
            },
            table: self.table.as_ref().map(|t| t.table.clone()),
            incremental: self.incremental.as_ref().map(|w| w.report()),
            on_conflict: self.table.as_ref().map(|t| t.on_conflict.name().to_owned()),
            template,
            schema,
            ..begin_report(job)
        }
    }
}

/// The report's name for an endpoint's format: the format, or the database.
fn format_name(endpoint: &Endpoint, format: Option<&'static Format>) -> String {
    match (endpoint, format) {
        (Endpoint::Database(db), _) => db.database.name.to_owned(),
        (_, Some(f)) => f.name.to_owned(),
        (_, None) => String::new(),
    }
}

/// A failed load that committed part of its records says where a rerun should resume.
fn with_resume_hint(error: Error, committed: u64) -> Error {
    let position = error.position().cloned().unwrap_or_default();
    let stage = error.stage().unwrap_or(Stage::Sink);
    Error::data(
        stage,
        position,
        format!(
            "{}; records 1 to {committed} were committed before the failure: rerun with --resume {committed} to load the rest",
            error.message()
        ),
    )
}
