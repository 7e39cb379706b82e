//! Opens a conversion's two ends once it is built: the input (a file, standard input or the caller's
//! stream, through the envelope layers and the format's decoder; a split set's parts in order; or a
//! database's rows) and the output (an encoder over the layers and a file written under a temporary
//! name, standard output or the caller's stream, or nothing for a dry run; a split set; or a table load).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::build::BuiltConvert;
use crate::db::TableSink;
use crate::endpoint::Endpoint;
use crate::envelope::layers::{self, Expect, InputKey, ReadLayers, WriteLayers};
use crate::envelope::parts::PartsDecoder;
use crate::envelope::split::{
    ChecksummedFile, EncryptionInfo, ManifestHead, PartNames, SplitEncoder,
};
use crate::envelope::{Compression, KeyMaterial};
use crate::error::{Error, Position, Result, Stage};
use crate::format::{Decoder, Encoder, Format, Input};
use crate::record::Record;
use crate::sink::{AtomicFile, ByteSink, Discard, WriterSink};
use crate::sort::SortingEncoder;

/// A caller's own input and output, used in place of standard input and output where the job says `-`:
/// the way a library caller (the HTTP service) hands a run a request body and a response stream instead
/// of paths. What went to an output stream cannot be taken back, exactly like standard output.
///
/// ```
/// use ferry::{ConvertJob, Environment, RunContext, Streams, sink::Memory};
/// let mut job = ConvertJob::new("-", "-");
/// job.input_format = Some("csv".into());
/// job.output_format = Some("ndjson".into());
/// let out = Memory::default();
/// let streams = Streams::new().input(&b"id,name\n1,a\n"[..]).output(out.clone());
/// let report = job.build(&Environment::empty())?.run_with_streams(streams, &RunContext::default())?;
/// assert_eq!(report.counts.written, 1);
/// assert_eq!(out.contents(), b"{\"id\":\"1\",\"name\":\"a\"}\n");
/// # Ok::<(), ferry::Error>(())
/// ```
#[derive(Default)]
pub struct Streams {
    pub(super) input: Option<Box<dyn Read + Send>>,
    pub(super) output: Option<Box<dyn Write + Send>>,
}

impl Streams {
    /// Standard input and output.
    pub fn new() -> Streams {
        Streams::default()
    }

    /// Reads the input (`-`) from `reader`.
    pub fn input(mut self, reader: impl Read + Send + 'static) -> Streams {
        self.input = Some(Box::new(reader));
        self
    }

    /// Writes the output (`-`) to `writer`; it is flushed when the run finishes.
    pub fn output(mut self, writer: impl Write + Send + 'static) -> Streams {
        self.output = Some(Box::new(writer));
        self
    }

    /// Refuses a stream given for an end that the job does not say is `-`.
    pub(super) fn check(&self, plan: &BuiltConvert) -> Result<()> {
        let stdio = |e: &Endpoint| matches!(e, Endpoint::Stdio);
        if self.input.is_some() && !stdio(&plan.source) {
            return Err(Error::config(
                "an input stream was given, but the job's input is not `-`",
            ));
        }
        if self.output.is_some() && !stdio(&plan.target) {
            return Err(Error::config(
                "an output stream was given, but the job's output is not `-`",
            ));
        }
        Ok(())
    }
}

/// Opens the records source: a file, standard input or the caller's stream through its format's decoder,
/// a split set's parts, or a database.
pub(super) fn open_decoder(
    plan: &BuiltConvert,
    stream: Option<Box<dyn Read + Send>>,
    bytes_read: Arc<AtomicU64>,
) -> Result<Box<dyn Decoder>> {
    let job = &plan.job;
    if let Endpoint::Database(db) = &plan.source {
        return (db.database.open_source)(db, &job.connect);
    }
    let format = plan.input_format.ok_or_else(|| {
        Error::data(
            Stage::Source,
            crate::error::Position::default(),
            "the input has no format (internal error)",
        )
    })?;
    let envelope = InputEnvelope {
        key: plan.input_key.clone(),
        expect: plan.expect.clone(),
        max_decompressed: job.max_decompressed,
        encoding: plan.encoding,
    };
    let options = read_options(plan);
    if let Some(set) = &plan.manifest {
        let compression = set.compression();
        let names: Vec<String> = (0..set.len())
            .map(|i| set.part_path(i).display().to_string())
            .collect();
        let decode = move |index: usize, raw| -> Result<Box<dyn Decoder>> {
            let name = names[index].clone();
            let mut input = envelope.wrap(Box::new(raw), name, (compression, true), &bytes_read)?;
            input.file = input.file.map(|_| names[index].clone().into());
            format.decode(input, &options)
        };
        let parts = PartsDecoder::new(set.clone(), job.allow_plaintext, Box::new(decode));
        return Ok(Box::new(parts));
    }
    let name = plan.source.display_name();
    let (raw, named): (Box<dyn Read + Send>, _) = match (&plan.source, stream) {
        (Endpoint::File(path), _) => {
            let file = File::open(path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
            (Box::new(file), layers::from_extensions(path).0)
        }
        (_, Some(stream)) => (stream, Compression::None),
        (_, None) => (Box::new(io::stdin()), Compression::None),
    };
    let mut input = envelope.wrap(raw, name, (named, false), &bytes_read)?;
    // A plain file's path, for a format that must seek (wrap() kept `file` only for unchanged bytes).
    input.file = match (&plan.source, input.file) {
        (Endpoint::File(path), Some(_)) => Some(path.clone()),
        _ => None,
    };
    format.decode(input, &options)
}

/// The input's format options, with the fields the run keeps when a columnar reader may read only those:
/// `--select` without a template or `--where` (which may read other fields).
fn read_options(plan: &BuiltConvert) -> crate::format::FormatOptions {
    let job = &plan.job;
    let mut options = job.read_options.clone();
    if job.template.is_none() && job.filter.is_none() && !job.select.is_empty() {
        let selected = job
            .select
            .iter()
            .filter_map(|s| crate::shape::parse_select(s).ok());
        options.projection = Some(selected.flatten().map(|s| s.from).collect());
    }
    options
}

/// How to take the envelope off an input: the key, what its encryption must be, the decompression cap and
/// the character encoding.
#[derive(Clone)]
struct InputEnvelope {
    key: InputKey,
    expect: Expect,
    max_decompressed: u64,
    encoding: Option<&'static encoding_rs::Encoding>,
}

impl InputEnvelope {
    /// Takes the envelope off raw input bytes and makes them an [`Input`], counting the bytes as they are
    /// stored (compressed, encrypted) and transcoding to UTF-8 when an encoding was given. `named` is the
    /// compression the name says, and whether a manifest declares it (then the first bytes must agree).
    fn wrap(
        &self,
        raw: Box<dyn Read + Send>,
        name: String,
        named: (Compression, bool),
        counter: &Arc<AtomicU64>,
    ) -> Result<Input> {
        let read_layers = ReadLayers {
            key: &self.key,
            named: named.0,
            declared: named.1,
            expect: self.expect.clone(),
            max_decompressed: self.max_decompressed,
        };
        let counted = CountingReader {
            inner: raw,
            count: counter.clone(),
        };
        let (counted, plain) = layers::unwrap_layers(Box::new(counted), &read_layers, &name)?;
        // The input's own bytes: a format that seeks may open the file (the caller fills in its path).
        let file = (plain && self.encoding.is_none()).then(std::path::PathBuf::new);
        let reader: Box<dyn BufRead + Send> = match self.encoding {
            Some(encoding) => {
                let decoded = encoding_rs_io::DecodeReaderBytesBuilder::new()
                    .encoding(Some(encoding))
                    .build(counted);
                Box::new(BufReader::with_capacity(256 * 1024, decoded))
            }
            None => Box::new(BufReader::with_capacity(256 * 1024, counted)),
        };
        Ok(Input { reader, name, file })
    }
}

/// Opens where records go: an encoder over a file, standard output, the caller's stream or nothing (dry
/// run), or a table loader (which runs a dry run in a transaction it rolls back).
pub(super) fn open_output(
    plan: &BuiltConvert,
    stream: Option<Box<dyn Write + Send>>,
) -> Result<Output> {
    let job = &plan.job;
    if let (Endpoint::Database(db), Some(options)) = (&plan.target, &plan.table) {
        return Ok(Output::Table((db.database.open_sink)(db, options.clone())?));
    }
    let format = match plan.output_format {
        Some(format) => format,
        None => crate::format::by_name("ndjson")?,
    };
    let dry_run = job.dry_run || job.validate_only;
    if let (Endpoint::File(path), true, false) = (&plan.target, job.mkdir, dry_run) {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let shown = dir.display().to_string();
            std::fs::create_dir_all(dir).map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
        }
    }
    let base: Box<dyn ByteSink> = match (&plan.target, stream) {
        _ if dry_run => Box::new(Discard::default()),
        (Endpoint::Stdio, Some(stream)) => Box::new(WriterSink::new(stream)),
        (Endpoint::Stdio, None) => Box::new(WriterSink::stdout()),
        (Endpoint::File(path), _) if job.split.splits() || plan.incremental.is_some() => {
            let parts = Box::new(split_encoder(plan, path, format));
            return Ok(Output::File(sorted(plan, parts)));
        }
        (Endpoint::File(path), _) if job.checksum => Box::new(ChecksummedFile::create(path)?),
        (Endpoint::File(path), _) => Box::new(AtomicFile::create(path)?),
        (Endpoint::Database(_), _) => Box::new(Discard::default()), // `ferry validate` into a database URL
    };
    let write_layers = WriteLayers {
        compression: plan.compression,
        key: plan.key.as_deref(),
    };
    let sink = layers::wrap_sink(base, &write_layers)?;
    let options = write_options(plan);
    Ok(Output::File(sorted(plan, format.encode(sink, &options)?)))
}

/// The output's format options, with the job's sample size (the records a CSV or Markdown header is
/// fixed by) and the template's declared fields (a Parquet schema), when no `--select` reshapes them.
fn write_options(plan: &BuiltConvert) -> crate::format::FormatOptions {
    let declared = match (&plan.stages.template, plan.job.select.is_empty()) {
        (Some(template), true) => template
            .fields()
            .map(|(name, ty)| (name.to_owned(), ty.map(crate::db::ColumnKind::for_field)))
            .collect(),
        _ => Vec::new(),
    };
    crate::format::FormatOptions {
        sample_records: plan.job.sample_records,
        declared,
        input_columns: plan.job.read_options.input_columns.clone(),
        ..plan.job.write_options.clone()
    }
}

/// The encoder behind `--sort`, when the job sorts.
fn sorted(plan: &BuiltConvert, encoder: Box<dyn Encoder>) -> Box<dyn Encoder> {
    match &plan.sort {
        Some((keys, dir)) => Box::new(SortingEncoder::new(
            encoder,
            keys.clone(),
            plan.job.limit,
            plan.job.sort_memory,
            dir.clone(),
        )),
        None => encoder,
    }
}

/// The encoder of a split output: every part gets its own layers; the manifest describes them.
fn split_encoder(plan: &BuiltConvert, path: &Path, format: &'static Format) -> SplitEncoder {
    let job = &plan.job;
    let names = PartNames::new(path, is_envelope_extension);
    let (template, schema) = plan.stages.names();
    let head = ManifestHead {
        format: format.name.to_owned(),
        compression: plan.compression.kind.name().to_owned(),
        encryption: plan.key.as_deref().map(|key| EncryptionInfo {
            algorithm: "AES-256-GCM".to_owned(),
            kdf: match key {
                KeyMaterial::Key(_) => "none".to_owned(),
                KeyMaterial::Passphrase(_) => "argon2id".to_owned(),
            },
        }),
        template,
        schema,
    };
    let created = plan
        .stages
        .now
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let options = write_options(plan);
    let (compression, key) = (plan.compression, plan.key.clone());
    let layers = Box::new(move |sink: Box<dyn ByteSink>| {
        let write_layers = WriteLayers {
            compression,
            key: key.as_deref(),
        };
        format.encode(layers::wrap_sink(sink, &write_layers)?, &options)
    });
    let mut encoder = SplitEncoder::new(names, job.split, head, created, layers);
    if let Some(c) = plan.incremental.as_ref().and_then(|w| w.continuation()) {
        encoder = encoder.continuing(c);
    }
    match &plan.key {
        Some(key) => encoder.sealed_with(key.clone()),
        None => encoder,
    }
}

/// True for an extension that is part of an output's extension chain (format, compression, encryption).
pub(crate) fn is_envelope_extension(extension: &str) -> bool {
    crate::format::by_extension(extension).is_some()
        || ["gz", "br", "zst", "zstd", "enc"].contains(&extension.to_ascii_lowercase().as_str())
}

/// Where records go.
pub(super) enum Output {
    /// Bytes through a format's encoder.
    File(Box<dyn Encoder>),
    /// Rows into a database table.
    Table(Box<dyn TableSink>),
}

impl Output {
    pub(super) fn write(&mut self, number: u64, record: &Record) -> Result<()> {
        match self {
            Output::File(encoder) => encoder.write_record(record),
            Output::Table(table) => table.write(number, record),
        }
    }

    /// Writes the bytes of one record encoded ahead by the encoder's `record_bytes`.
    pub(super) fn write_record_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Output::File(encoder) => encoder.write_record_bytes(bytes),
            Output::Table(_) => Err(Error::data(
                Stage::Encode,
                Position::default(),
                "an encoded record for a table (internal error)",
            )),
        }
    }

    /// The output's encoder of single records for another thread, if it has one (see `Encoder::record_bytes`).
    pub(super) fn record_bytes(&self) -> Option<Box<dyn crate::format::RecordBytes>> {
        match self {
            Output::File(encoder) => encoder.record_bytes(),
            Output::Table(_) => None,
        }
    }

    /// Writes a row encoded for the table (see `text_rows`).
    pub(super) fn write_encoded(&mut self, number: u64, row: &[u8]) -> Result<()> {
        match self {
            Output::Table(table) => table.write_encoded(number, row),
            Output::File(_) => Err(Error::data(
                Stage::Encode,
                Position::default(),
                "an encoded row for a file (internal error)",
            )),
        }
    }
}

/// Counts the input's bytes as they are stored (compressed, encrypted), for progress and the report.
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
