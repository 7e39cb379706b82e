//! Stacks the envelope layers: on write, compression then encryption between a format's encoder and its
//! byte sink; on read, decryption then decompression between the source and the decoder — each told by the
//! file's own first bytes, so `ferry convert --in x.ndjson.gz.enc` needs only the key.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::manifest::{not_encrypted, unexpectedly_encrypted};
use super::{
    detect, is_encrypted, peek, CompressWriter, Compression, CompressionSpec, DecompressReader,
    DecryptError, DecryptReader, EncryptWriter, KeyMaterial, KeySource, SNIFF_LEN,
};
use crate::env::Environment;
use crate::error::{Error, Position, Result, Stage};
use crate::sink::ByteSink;

/// What wraps an output: the compression and, when encrypting, the key.
pub struct WriteLayers<'a> {
    /// The compression (none for `Compression::None`).
    pub compression: CompressionSpec,
    /// The key or passphrase, when the output is encrypted.
    pub key: Option<&'a KeyMaterial>,
}

/// The output's compression and encryption from its extension chain (`x.ndjson.gz.enc`): the compression
/// named by an extension after the format's, and whether `.enc` ends the name.
pub fn from_extensions(path: &Path) -> (Compression, bool) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let extensions: Vec<&str> = name.split('.').skip(1).collect();
    let encrypted = extensions
        .last()
        .is_some_and(|e| e.eq_ignore_ascii_case("enc"));
    let compression = extensions
        .iter()
        .rev()
        .find_map(|e| Compression::from_extension(e))
        .unwrap_or(Compression::None);
    (compression, encrypted)
}

/// Puts the layers on top of `sink`: what is written to the result is compressed, then encrypted, then
/// handed to `sink`. Finishing the result finishes every layer and then the sink.
pub fn wrap_sink(sink: Box<dyn ByteSink>, layers: &WriteLayers<'_>) -> Result<Box<dyn ByteSink>> {
    let mut sink = sink;
    if let Some(key) = layers.key {
        let writer =
            EncryptWriter::new(sink, key).map_err(|e| Error::io(Stage::Encode, None, e))?;
        sink = Box::new(Layer {
            writer: Some(LayerWriter::Encrypt(Box::new(writer))),
            written: 0,
        });
    }
    if layers.compression.kind != Compression::None {
        let writer = CompressWriter::new(sink, layers.compression)
            .map_err(|e| Error::io(Stage::Encode, None, e))?;
        sink = Box::new(Layer {
            writer: Some(LayerWriter::Compress(Box::new(writer))),
            written: 0,
        });
    }
    Ok(sink)
}

enum LayerWriter {
    Compress(Box<CompressWriter<Box<dyn ByteSink>>>),
    Encrypt(Box<EncryptWriter<Box<dyn ByteSink>>>),
}

/// One envelope layer as a [`ByteSink`].
struct Layer {
    writer: Option<LayerWriter>,
    written: u64,
}

impl Write for Layer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match self.writer.as_mut() {
            Some(LayerWriter::Compress(w)) => w.write(buf)?,
            Some(LayerWriter::Encrypt(w)) => w.write(buf)?,
            None => return Err(io::Error::other("write after finish")),
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(LayerWriter::Compress(w)) => w.flush(),
            Some(LayerWriter::Encrypt(w)) => w.flush(),
            None => Ok(()),
        }
    }
}

impl ByteSink for Layer {
    /// Writes the layer's trailer, then finishes what is beneath; returns the bytes of the final output.
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let inner = match self.writer.take() {
            Some(LayerWriter::Compress(w)) => (*w).finish(),
            Some(LayerWriter::Encrypt(w)) => (*w).finish(),
            None => {
                return Err(Error::data(
                    Stage::Encode,
                    Position::default(),
                    "the layers were finished twice (internal error)",
                ))
            }
        };
        inner
            .map_err(|e| Error::io(Stage::Encode, None, e))?
            .finish()
    }

    fn bytes_written(&self) -> u64 {
        self.written
    }
}

/// The key an input is decrypted with if it turns out to be encrypted, resolved once when the job is built:
/// the key option's, else `FERRY_KEY`'s (then `EXPORT_ENCRYPTION_KEY`'s).
#[derive(Clone, Default)]
pub enum InputKey {
    /// No key option was given and neither default variable is set.
    #[default]
    Missing,
    /// The key or passphrase.
    Ready(Arc<KeyMaterial>),
    /// A default variable is set but holds no usable key: an error only for an input that is encrypted
    /// (a user who keeps `FERRY_KEY` exported still reads plain files).
    Unusable(String),
}

impl InputKey {
    /// Resolves `explicit` (a key option), else the default variables of `env`. An explicit source that
    /// cannot be read is a configuration error at once.
    pub fn resolve(explicit: Option<&KeySource>, env: &Environment) -> Result<InputKey> {
        if let Some(source) = explicit {
            return Ok(InputKey::Ready(Arc::new(source.resolve(env)?)));
        }
        Ok(match KeySource::from_default_env(env) {
            None => InputKey::Missing,
            Some(source) => match source.resolve(env) {
                Ok(material) => InputKey::Ready(Arc::new(material)),
                Err(e) => InputKey::Unusable(e.message()),
            },
        })
    }

    /// The key, or the configuration error that says how to give one for the encrypted input `name`.
    pub fn material(&self, name: &str) -> Result<&KeyMaterial> {
        match self {
            InputKey::Ready(material) => Ok(material),
            InputKey::Unusable(message) => Err(Error::config(message.clone())),
            InputKey::Missing => Err(Error::config(format!(
                "{name} is encrypted: give the key with --key-file, FERRY_KEY (or --key-env NAME), \
                 or a passphrase with --passphrase-env NAME / --passphrase-file"
            ))),
        }
    }
}

impl std::fmt::Debug for InputKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputKey::Missing => "InputKey::Missing",
            InputKey::Ready(_) => "InputKey::Ready(<redacted>)",
            InputKey::Unusable(_) => "InputKey::Unusable",
        })
    }
}

/// How to take the layers off an input.
pub struct ReadLayers<'a> {
    /// The key for an encrypted input (an encrypted input without one is an error that says how to give it).
    pub key: &'a InputKey,
    /// The input's compression when its name says (brotli has no magic bytes); gzip and zstd are also
    /// recognised by their first bytes.
    pub named: Compression,
    /// True when `named` is declared by a manifest rather than guessed from a name: first bytes that say
    /// otherwise are then an error.
    pub declared: bool,
    /// Whether the input must be, or must not be, encrypted.
    pub expect: Expect,
    /// Decompressed bytes allowed (`--max-decompressed-size`).
    pub max_decompressed: u64,
}

/// What an input's encryption must be. Decided once per input from its name, the key options and the
/// manifest; the input's first bytes are then held to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expect {
    /// Encrypted or not, as its first bytes say.
    #[default]
    Either,
    /// It must be a ferry-encrypted stream, for the reason given (`its name ends in .enc`).
    Encrypted(String),
    /// It must not be encrypted: a part of a set whose manifest says so.
    Plain,
}

/// Takes the envelope off `raw`: decrypts if it starts with ferry's encryption header, then decompresses if
/// what follows is gzip or zstd (or brotli by name). An input that [`Expect`]s encryption and does not start
/// with ferry's header is refused before a byte of it is decoded. `name` is for messages.
pub fn unwrap_reader(
    raw: Box<dyn Read + Send>,
    layers: &ReadLayers<'_>,
    name: &str,
) -> Result<Box<dyn Read + Send>> {
    unwrap_layers(raw, layers, name).map(|(reader, _)| reader)
}

/// [`unwrap_reader`], and whether the bytes came through unchanged (neither encrypted nor compressed): then
/// a format that must seek may open the file itself.
pub fn unwrap_layers(
    raw: Box<dyn Read + Send>,
    layers: &ReadLayers<'_>,
    name: &str,
) -> Result<(Box<dyn Read + Send>, bool)> {
    let io_err = |e: io::Error| source_error(name, e);
    let refuse = |message: String| Error::data(Stage::Source, Position::file(name), message);
    let (first, reader) = peek(raw, SNIFF_LEN).map_err(io_err)?;
    let mut reader: Box<dyn Read + Send> = Box::new(reader);
    let encrypted = is_encrypted(&first);
    match &layers.expect {
        Expect::Encrypted(why) if !encrypted => return Err(refuse(not_encrypted(why))),
        Expect::Plain if encrypted => return Err(refuse(unexpectedly_encrypted())),
        _ => {}
    }
    if encrypted {
        let key = layers.key.material(name)?;
        let decrypted = DecryptReader::new(reader, key).map_err(io_err)?;
        reader = Box::new(decrypted);
    }
    let (first, peeked) = peek(reader, SNIFF_LEN).map_err(io_err)?;
    let kind = match detect(&first) {
        Compression::None => layers.named,
        found if layers.declared && found != layers.named => {
            return Err(refuse(format!(
                "the manifest says the parts are compressed with {}, but this part is {found}",
                layers.named
            )))
        }
        found => found,
    };
    if kind == Compression::None {
        return Ok((Box::new(peeked), !encrypted));
    }
    let buffered = BufReader::with_capacity(256 * 1024, peeked);
    let decompressed =
        DecompressReader::new(buffered, kind, layers.max_decompressed).map_err(io_err)?;
    Ok((Box::new(decompressed), false))
}

/// An input's I/O error as ferry reports it: decryption failures say which of wrong key, tampering or
/// truncation it was.
pub fn source_error(name: &str, e: io::Error) -> Error {
    match DecryptError::from_io(&e) {
        Some(d) => Error::data(
            Stage::Source,
            Position::file(name.to_owned()),
            d.to_string(),
        ),
        None => Error::io(Stage::Source, Some(name), e),
    }
}
