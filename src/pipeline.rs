//! Wires the stages in their one order — source → decode → encode → sink — and drives records through them
//! in batches, counting every record so that the report always balances.
//!
//! Decoding runs on its own thread and hands batches to the encoding thread through a bounded channel, so
//! both cores work and memory stays at a few batches whatever the input size.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result, Stage};
use crate::format::{Decoder, Encoder, Format, FormatOptions, Input};
use crate::record::Record;
use crate::report::Report;
use crate::sink::{AtomicFile, ByteSink, Stdout};

/// Default number of records per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1024;
/// Batches in flight between the decoding and encoding threads.
const BATCHES_IN_FLIGHT: usize = 4;

/// One `ferry convert` run, configured and checked before any record moves.
#[derive(Debug, Clone)]
pub struct ConvertJob {
    /// `--in`: a path or `-`.
    pub input: String,
    /// `--to`: a path or `-`.
    pub output: String,
    /// `--from-format`.
    pub input_format: Option<String>,
    /// `--to-format`.
    pub output_format: Option<String>,
    /// How to read the input.
    pub read_options: FormatOptions,
    /// How to write the output.
    pub write_options: FormatOptions,
    /// Records per batch.
    pub batch_size: usize,
}

impl ConvertJob {
    /// A job with default options.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> ConvertJob {
        ConvertJob {
            input: input.into(),
            output: output.into(),
            input_format: None,
            output_format: None,
            read_options: FormatOptions::default(),
            write_options: FormatOptions::default(),
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }
}

/// The checked plan of a run: endpoints and formats resolved, nothing opened yet.
struct Plan {
    source: Endpoint,
    target: Endpoint,
    input_format: &'static Format,
    output_format: &'static Format,
}

fn plan(job: &ConvertJob) -> Result<Plan> {
    let source = Endpoint::parse(&job.input)?;
    let target = Endpoint::parse(&job.output)?;
    let input_format = source.format(job.input_format.as_deref(), "--from-format")?;
    let output_format = target.format(job.output_format.as_deref(), "--to-format")?;
    if let (Endpoint::File(a), Endpoint::File(b)) = (&source, &target) {
        let same = match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same {
            return Err(Error::usage(format!(
                "--in and --to both name {}; write to another file",
                a.display()
            )));
        }
    }
    if job.batch_size == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
    Ok(Plan {
        source,
        target,
        input_format,
        output_format,
    })
}

/// Runs a conversion. On success the output is final and the report balances; on failure nothing is left
/// under the output's name and the error says which record and why.
pub fn convert(job: &ConvertJob) -> Result<Report> {
    let started = Instant::now();
    let plan = plan(job)?;
    let mut report = Report {
        ferry_version: env!("CARGO_PKG_VERSION").to_owned(),
        input: plan.source.display_name(),
        output: plan.target.display_name(),
        input_format: plan.input_format.name.to_owned(),
        output_format: plan.output_format.name.to_owned(),
        ..Report::default()
    };
    let bytes_read = Arc::new(AtomicU64::new(0));
    let input = open_input(&plan.source, &job.read_options, bytes_read.clone())?;
    let decoder = (plan.input_format.decoder)(input, &job.read_options)?;
    let sink = open_output(&plan.target)?;
    let encoder = (plan.output_format.encoder)(sink, &job.write_options)?;

    let result = drive(decoder, encoder, job.batch_size, &mut report);
    report.bytes_read = bytes_read.load(Ordering::Relaxed);
    report.seconds = started.elapsed().as_secs_f64();
    report.records_per_second = if report.seconds > 0.0 {
        report.read as f64 / report.seconds
    } else {
        0.0
    };
    match result {
        Ok(()) => {
            report.ok = true;
            Ok(report)
        }
        Err(e) => Err(e.with_context(Some(&report.output), None)),
    }
}

/// Moves every record from the decoder to the encoder, the decoder on a thread of its own.
fn drive(
    decoder: Box<dyn Decoder>,
    mut encoder: Box<dyn Encoder>,
    batch_size: usize,
    report: &mut Report,
) -> Result<()> {
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Record>>>(BATCHES_IN_FLIGHT);
    // Encoded batches go back to the reading thread, which drops their records: memory is freed by the
    // thread that allocated it, so the two threads never contend for the allocator's locks (freeing on this
    // thread made malloc the decoder's largest cost).
    let (done_tx, done_rx) = mpsc::channel::<Vec<Record>>();
    let reader = std::thread::spawn(move || read_batches(decoder, batch_size, &tx, &done_rx));
    let mut outcome = Ok(());
    for batch in rx.iter() {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        for record in &batch {
            report.read += 1;
            if let Err(e) = encoder.write_record(record) {
                outcome = Err(e.with_context(None, Some(report.read)));
                break;
            }
            report.written += 1;
        }
        if outcome.is_err() {
            break;
        }
        // If the reader has already finished, the batch is simply dropped here.
        let _ = done_tx.send(batch);
    }
    drop(rx); // stops the reader thread if we left early
    let _ = reader.join();
    outcome?;
    report.bytes_written = encoder.finish()?;
    Ok(())
}

fn read_batches(
    mut decoder: Box<dyn Decoder>,
    batch_size: usize,
    tx: &mpsc::SyncSender<Result<Vec<Record>>>,
    done: &mpsc::Receiver<Vec<Record>>,
) {
    // Records of a batch the encoder has finished with. One is dropped just before each record is decoded, so
    // the memory it frees is still in this thread's allocator cache when the new record's cells need it. The
    // next finished batch is taken only once this one is empty, so no more than a few batches ever exist.
    let mut retired: Vec<Record> = Vec::new();
    let mut batch = Vec::with_capacity(batch_size);
    loop {
        if retired.pop().is_none() {
            if let Ok(used) = done.try_recv() {
                retired = used;
            }
        }
        let Some(item) = decoder.next() else { break };
        match item {
            Ok(record) => batch.push(record),
            Err(e) => {
                if !batch.is_empty() && tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return;
                }
                let _ = tx.send(Err(e));
                return;
            }
        }
        if batch.len() >= batch_size {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
            if tx.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Opens the input, counting bytes and transcoding to UTF-8 when an encoding was given.
fn open_input(
    source: &Endpoint,
    options: &FormatOptions,
    counter: Arc<AtomicU64>,
) -> Result<Input> {
    let name = source.display_name();
    let raw: Box<dyn Read + Send> = match source {
        Endpoint::Stdio => Box::new(io::stdin()),
        Endpoint::File(path) => {
            Box::new(File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?)
        }
    };
    let counted = CountingReader {
        inner: raw,
        count: counter,
    };
    let reader: Box<dyn BufRead + Send> = match options.encoding {
        Some(encoding) => {
            let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .build(counted);
            Box::new(BufReader::with_capacity(256 * 1024, decoded))
        }
        None => Box::new(BufReader::with_capacity(256 * 1024, counted)),
    };
    Ok(Input { reader, name })
}

fn open_output(target: &Endpoint) -> Result<Box<dyn ByteSink>> {
    Ok(match target {
        Endpoint::Stdio => Box::new(Stdout::new()),
        Endpoint::File(path) => Box::new(AtomicFile::create(path)?),
    })
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    count: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
