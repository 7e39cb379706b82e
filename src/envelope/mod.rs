//! The envelope layers between the codecs and the byte sink or source: compression, encryption, and
//! splitting into parts with a manifest.
//!
//! ```text
//! write:  encode ─► CompressWriter ─► EncryptWriter ─► sink (one per part when split; then the manifest)
//! read:   source ─► DecryptReader ─► DecompressReader ─► decode (the parts in order for a manifest)
//! ```
//!
//! Each layer is a plain `io::Write` (with an explicit `finish()` that writes its trailer) or `io::Read`, so the
//! layers stack in any order and stream in constant memory. What a file holds is told by its first bytes
//! ([`detect`], [`is_encrypted`]) or, for brotli, which has no magic bytes, only by the file's extension
//! ([`Compression::from_extension`]) or an explicit `--compress`.

mod compress;
pub mod encrypt;
pub mod layers;
pub mod manifest;
pub mod parts;
pub mod split;

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use crate::error::{Error, Result};

pub use compress::{CompressWriter, DecompressReader, LimitExceeded, DEFAULT_MAX_DECOMPRESSED};
pub use encrypt::{
    keygen, Argon2Params, DecryptError, DecryptErrorKind, DecryptReader, EncryptOptions,
    EncryptWriter, Key, KeyMaterial, KeySource,
};

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (RFC 1952); multi-member files are read whole.
    Gzip,
    /// brotli (RFC 7932). It has no magic bytes, so it is never detected from content.
    Brotli,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Compression {
    /// The compression a file extension (without the dot, any case) stands for: `gz`, `br`, `zst` or `zstd`.
    pub fn from_extension(ext: &str) -> Option<Compression> {
        match ext.to_ascii_lowercase().as_str() {
            "gz" => Some(Compression::Gzip),
            "br" => Some(Compression::Brotli),
            "zst" | "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The usual file extension (without the dot), `None` for no compression.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gz"),
            Compression::Brotli => Some("br"),
            Compression::Zstd => Some("zst"),
        }
    }

    /// The name `--compress` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Brotli => "brotli",
            Compression::Zstd => "zstd",
        }
    }

    /// The level used when none is given: gzip 6 and zstd 3 are the command-line tools' defaults; brotli 5 rather
    /// than the tool's 11, which is an archiving setting about 30 times slower.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 6,
            Compression::Brotli => 5,
            Compression::Zstd => 3,
        }
    }

    /// The levels this format accepts (brotli's are its qualities).
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::None => 0..=0,
            Compression::Gzip => 0..=9,
            Compression::Brotli => 0..=11,
            Compression::Zstd => 1..=22,
        }
    }

    /// Tells the compression from the first bytes of a file: gzip (`1f 8b`) and zstd (`28 b5 2f fd`) have magic
    /// bytes; anything else, brotli included, is [`Compression::None`]. Four bytes are enough.
    pub fn detect(first_bytes: &[u8]) -> Compression {
        detect(first_bytes)
    }

    /// Parses `--compress KIND[:LEVEL]`, such as `gzip`, `zstd:19` or `none`.
    pub fn parse(text: &str) -> Result<CompressionSpec> {
        text.parse()
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression format and its level, as `--compress KIND[:LEVEL]` gives them; in a job file the same
/// text (`"gzip:6"`, `"zstd"`, `"none"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CompressionSpec {
    /// The format.
    pub kind: Compression,
    /// The level, within [`Compression::levels`].
    pub level: u32,
}

impl CompressionSpec {
    /// `kind` at its default level.
    pub fn new(kind: Compression) -> CompressionSpec {
        CompressionSpec {
            kind,
            level: kind.default_level(),
        }
    }
}

impl FromStr for CompressionSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<CompressionSpec> {
        let (name, level) = match text.split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (text, None),
        };
        let kind = match name.to_ascii_lowercase().as_str() {
            "none" => Compression::None,
            "gzip" | "gz" => Compression::Gzip,
            "brotli" | "br" => Compression::Brotli,
            "zstd" | "zst" => Compression::Zstd,
            _ => {
                return Err(Error::config(format!(
                    "unknown compression {name:?}: use gzip, brotli, zstd or none, with an optional :LEVEL"
                )))
            }
        };
        let Some(level) = level else {
            return Ok(CompressionSpec::new(kind));
        };
        if kind == Compression::None {
            return Err(Error::config("--compress none takes no level"));
        }
        let range = kind.levels();
        match level.parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(CompressionSpec { kind, level: n }),
            _ => Err(Error::config(format!(
                "{kind} level must be a whole number from {} to {}, not {level:?}",
                range.start(),
                range.end()
            ))),
        }
    }
}

impl fmt::Display for CompressionSpec {
    /// `KIND:LEVEL`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Compression::None => f.write_str("none"),
            kind => write!(f, "{kind}:{}", self.level),
        }
    }
}

impl TryFrom<String> for CompressionSpec {
    type Error = Error;

    fn try_from(text: String) -> Result<CompressionSpec> {
        text.parse()
    }
}

impl From<CompressionSpec> for String {
    fn from(spec: CompressionSpec) -> String {
        spec.to_string()
    }
}

/// Tells the compression from the first bytes of a file; see [`Compression::detect`].
pub fn detect(first_bytes: &[u8]) -> Compression {
    if first_bytes.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// True when the first bytes are the magic of ferry's encrypted files ([`encrypt::MAGIC`], 8 bytes).
pub fn is_encrypted(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(encrypt::MAGIC)
}

/// How many first bytes [`detect`] and [`is_encrypted`] need.
pub const SNIFF_LEN: usize = 8;

/// A reader that replays the bytes [`peek`] took before the rest of `R`.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads up to `len` bytes from the start of `reader` for [`detect`] and [`is_encrypted`], and gives them back with
/// a reader that replays them before the rest. Reads until `len` bytes or the end, because a pipe may hand over
/// fewer bytes per read than detection needs. The reader is a `BufRead` when `R` is.
pub fn peek<R: Read>(mut reader: R, len: usize) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut first = Vec::with_capacity(len);
    (&mut reader).take(len as u64).read_to_end(&mut first)?;
    Ok((first.clone(), io::Cursor::new(first).chain(reader)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_map_to_formats() {
        assert_eq!(Compression::from_extension("gz"), Some(Compression::Gzip));
        assert_eq!(Compression::from_extension("GZ"), Some(Compression::Gzip));
        assert_eq!(Compression::from_extension("br"), Some(Compression::Brotli));
        assert_eq!(Compression::from_extension("zst"), Some(Compression::Zstd));
        assert_eq!(Compression::from_extension("zstd"), Some(Compression::Zstd));
        assert_eq!(Compression::from_extension("csv"), None);
        for kind in [Compression::Gzip, Compression::Brotli, Compression::Zstd] {
            assert_eq!(
                Compression::from_extension(kind.extension().unwrap()),
                Some(kind)
            );
        }
    }

    #[test]
    fn compress_flag_parses_kind_and_level() {
        let spec = |s: &str| Compression::parse(s).map(|c| (c.kind, c.level));
        assert_eq!(spec("gzip").unwrap(), (Compression::Gzip, 6));
        assert_eq!(spec("gzip:9").unwrap(), (Compression::Gzip, 9));
        assert_eq!(spec("GZIP:0").unwrap(), (Compression::Gzip, 0));
        assert_eq!(spec("brotli").unwrap(), (Compression::Brotli, 5));
        assert_eq!(spec("brotli:11").unwrap(), (Compression::Brotli, 11));
        assert_eq!(spec("zstd").unwrap(), (Compression::Zstd, 3));
        assert_eq!(spec("zstd:22").unwrap(), (Compression::Zstd, 22));
        assert_eq!(spec("none").unwrap(), (Compression::None, 0));
        for bad in [
            "gzip:10",
            "zstd:0",
            "zstd:23",
            "brotli:12",
            "gzip:",
            "gzip:x",
            "gzip:-1",
            "none:1",
            "lz4",
        ] {
            let err = spec(bad).unwrap_err();
            assert!(err.is_config(), "{bad}: {err}");
        }
        assert_eq!(
            spec("zstd:30").unwrap_err().to_string(),
            "zstd level must be a whole number from 1 to 22, not \"30\""
        );
    }

    #[test]
    fn magic_bytes_tell_gzip_zstd_and_encryption() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(detect(&[0x28, 0xb5]), Compression::None);
        assert_eq!(detect(b"{\"a\":1}"), Compression::None);
        assert_eq!(detect(b""), Compression::None);
        assert!(is_encrypted(b"FERRYENC\x01"));
        assert!(!is_encrypted(b"FERRYEN"));
    }

    #[test]
    fn layers_stack_and_the_read_side_detects_them() {
        use std::io::Write as _;
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let material = KeyMaterial::Key(Key::from_bytes([4; 32]));
        for kind in [Compression::Gzip, Compression::Zstd] {
            // Write: compress, then encrypt (ciphertext does not compress).
            let encrypted = EncryptWriter::new(Vec::new(), &material).unwrap();
            let mut w = CompressWriter::new(encrypted, CompressionSpec::new(kind)).unwrap();
            w.write_all(&data).unwrap();
            let file = w.finish().unwrap().finish().unwrap();
            // Read: sniff, decrypt, sniff again, decompress.
            let (first, rest) = peek(&file[..], SNIFF_LEN).unwrap();
            assert!(is_encrypted(&first));
            let plain = DecryptReader::new(rest, &material).unwrap();
            let (first, rest) = peek(io::BufReader::new(plain), SNIFF_LEN).unwrap();
            assert_eq!(detect(&first), kind);
            let mut back = Vec::new();
            DecompressReader::new(rest, kind, DEFAULT_MAX_DECOMPRESSED)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{kind}");
        }
    }

    #[test]
    fn layers_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<CompressWriter<Vec<u8>>>();
        send::<DecompressReader<io::BufReader<std::fs::File>>>();
        send::<EncryptWriter<Vec<u8>>>();
        send::<DecryptReader<std::fs::File>>();
        send::<KeyMaterial>();
    }

    #[test]
    fn peek_gives_back_every_byte() {
        // A reader that hands over one byte per read, like a slow pipe.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let (first, mut rest) = peek(Trickle(b"\x1f\x8b\x08 and more"), SNIFF_LEN).unwrap();
        assert_eq!(first, b"\x1f\x8b\x08 and ");
        let mut all = Vec::new();
        rest.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"\x1f\x8b\x08 and more");
        let (first, _) = peek(&b"ab"[..], SNIFF_LEN).unwrap();
        assert_eq!(first, b"ab");
    }
}
