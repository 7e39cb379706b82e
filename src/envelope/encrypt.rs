//! The encryption layer: last before the sink on the write side ([`EncryptWriter`]), first after the source on
//! the read side ([`DecryptReader`]). AES-256-GCM in fixed-size chunks with the STREAM construction, so a file
//! of any size streams in constant memory, and a flipped bit, reordered or dropped chunks and truncation are all
//! detected. `docs/encryption.md` describes the format for other implementations.
//!
//! # File format, version 1
//!
//! All integers are big-endian.
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `FERRYENC` |
//! | 1 | version, `1` |
//! | 1 | algorithm, `1` = AES-256-GCM |
//! | 4 | chunk size: plaintext bytes per chunk, 1 to 16 MiB (default 65536) |
//! | 1 | key derivation: `0` = a raw 32-byte key, `1` = Argon2id (version 0x13) from a passphrase |
//! | 4, 4, 4 | Argon2id memory in KiB, passes, lanes; all zero for a raw key |
//! | 1 + n | salt length n, then the salt: 16 random bytes for Argon2id, none for a raw key |
//! | 7 | nonce prefix, random |
//! | 16 | key check: the GCM tag of an empty plaintext, nonce `prefix ‖ ff ff ff ff ‖ 02` |
//!
//! The header bytes before the key check (35 bytes for a raw key, 51 for Argon2id) are the associated data of the
//! key check and of every chunk, so each chunk authenticates the header too. The chunks follow: chunk `i`
//! (counting from 0) is the ciphertext of `chunk size` plaintext bytes followed by its 16-byte tag, under the
//! nonce `prefix ‖ i as u32 ‖ flag`, where flag is `01` on the final chunk and `00` on every other. The final
//! chunk holds 0 to `chunk size` plaintext bytes and always exists: an empty input is a header and one empty
//! final chunk. Nothing follows it. There can be at most 2^32 chunks.
//!
//! # Errors
//!
//! [`DecryptReader`] fails with an `io::Error` that carries a [`DecryptError`]; [`DecryptError::from_io`]
//! recovers it and [`DecryptError::kind`] tells wrong key, tampering, truncation, appended data and a
//! malformed header apart. Errors never include key material.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use aes::cipher::BlockEncrypt;
use aes::{Aes256, Block};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use zeroize::{Zeroize, Zeroizing};

use crate::env::Environment;
use crate::error::{Error, Result, Stage};

/// The first bytes of every encrypted file.
pub const MAGIC: &[u8; 8] = b"FERRYENC";
/// The format version this build writes and reads.
pub const VERSION: u8 = 1;
/// The chunk size written when none is given: large enough that the 16-byte tags cost 0.02%, small enough that
/// a reader holds little.
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// The largest chunk size a reader accepts, which bounds what a crafted header can make it allocate.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

const ALGORITHM_AES_256_GCM: u8 = 1;
const KDF_RAW: u8 = 0;
const KDF_ARGON2ID: u8 = 1;
const TAG_LEN: usize = 16;
const PREFIX_LEN: usize = 7;
const SALT_LEN: usize = 16;
/// The header up to and including the salt length.
const FIXED_LEN: usize = 28;
const FLAG_NEXT: u8 = 0;
const FLAG_LAST: u8 = 1;
const FLAG_KEY_CHECK: u8 = 2;

/// A 256-bit key. Wiped from memory when dropped; never printed.
pub struct Key([u8; 32]);

impl Key {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> io::Result<Key> {
        Ok(Key(random()?))
    }

    /// A key from text: 64 hex digits or the base64 (standard or URL-safe, padded or not) of 32 bytes,
    /// surrounding whitespace ignored. `None` when the text is neither.
    pub fn parse(text: &str) -> Option<Key> {
        let text = text.trim();
        let mut key = [0u8; 32];
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
                *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
            }
            return Some(Key(key));
        }
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
            if let Ok(bytes) = engine.decode(text).map(Zeroizing::new) {
                if bytes.len() == 32 {
                    key.copy_from_slice(&bytes);
                    return Some(Key(key));
                }
            }
        }
        None
    }

    /// The key as 64 lowercase hex digits, the form [`keygen`] writes.
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(64));
        for byte in self.0 {
            text.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            text.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        text
    }

    /// The key's bytes, for deriving subkeys from it.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&self.0))
    }

    fn block_cipher(&self) -> Aes256 {
        Aes256::new(self.0[..].into())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)?;
    Ok(bytes)
}

/// What a [`KeySource`] yields: a key, or a passphrase from which the writer and reader derive one with
/// Argon2id (the reader needs the file's salt and parameters for that, so it cannot happen earlier).
pub enum KeyMaterial {
    /// A raw 256-bit key.
    Key(Key),
    /// A passphrase. Wiped from memory when dropped.
    Passphrase(Zeroizing<String>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Key(_) => f.write_str("KeyMaterial::Key(<redacted>)"),
            KeyMaterial::Passphrase(_) => f.write_str("KeyMaterial::Passphrase(<redacted>)"),
        }
    }
}

/// Where the key comes from. Never from a command-line argument, which other users can see in the process list.
/// In a job file it is the name of a file or variable, never key material: `{"key_file": "backup.key"}`,
/// `{"key_env": "NAME"}`, `{"passphrase_env": "NAME"}`, `{"passphrase_file": "FILE"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// A file holding 32 raw bytes, 64 hex digits or the base64 of 32 bytes (`--key-file`).
    KeyFile(PathBuf),
    /// An environment variable holding the key as hex or base64.
    #[serde(rename = "key_env")]
    Env(String),
    /// An environment variable holding a passphrase.
    PassphraseEnv(String),
    /// A file holding a passphrase; a final line break is not part of it.
    PassphraseFile(PathBuf),
}

impl KeySource {
    /// The environment variable read for the key by default.
    pub const ENV: &'static str = "FERRY_KEY";
    /// The variable read when [`KeySource::ENV`] is unset: the name existing export setups give their key.
    pub const FALLBACK_ENV: &'static str = "EXPORT_ENCRYPTION_KEY";

    /// The default source: `FERRY_KEY`, else `EXPORT_ENCRYPTION_KEY`, whichever is set in `env`; `None` when
    /// neither is.
    pub fn from_default_env(env: &Environment) -> Option<KeySource> {
        [KeySource::ENV, KeySource::FALLBACK_ENV]
            .into_iter()
            .find(|name| env.contains(name))
            .map(|name| KeySource::Env(name.to_owned()))
    }

    /// Reads the key or passphrase (variables from `env`, the run's environment). Errors are configuration
    /// errors and never quote what was read, nor a value that might be the key itself: a name given to
    /// `--key-env` or `--passphrase-env` and a path that does not exist are not repeated, since a key pasted
    /// there by mistake would otherwise end up in the terminal and logs.
    pub fn resolve(&self, env: &Environment) -> Result<KeyMaterial> {
        match self {
            KeySource::KeyFile(path) => {
                let bytes = Zeroizing::new(read_secret_file(path, "--key-file")?);
                // 32 bytes is raw: no text form of a key has that length (hex has 64, base64 43 or 44).
                if let Ok(raw) = <[u8; 32]>::try_from(&bytes[..]) {
                    return Ok(KeyMaterial::Key(Key(raw)));
                }
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(Key::parse)
                    .map(KeyMaterial::Key)
                    .ok_or_else(|| {
                        Error::config(format!(
                            "the key file {} holds neither 32 raw bytes, 64 hex digits nor the base64 of 32 bytes",
                            path.display()
                        ))
                    })
            }
            KeySource::Env(name) => {
                let shown = self.variable();
                let text = Zeroizing::new(env_text(env, name, &shown)?);
                Key::parse(&text).map(KeyMaterial::Key).ok_or_else(|| {
                    Error::config(format!(
                        "{shown} holds neither 64 hex digits nor the base64 of 32 bytes"
                    ))
                })
            }
            KeySource::PassphraseEnv(name) => {
                let shown = self.variable();
                passphrase(Zeroizing::new(env_text(env, name, &shown)?), &shown)
            }
            KeySource::PassphraseFile(path) => {
                let bytes = Zeroizing::new(read_secret_file(path, "--passphrase-file")?);
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Error::config(format!(
                        "the passphrase file {} is not valid UTF-8",
                        path.display()
                    ))
                })?;
                let text = Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned());
                passphrase(text, &format!("the passphrase file {}", path.display()))
            }
        }
    }

    /// The file this source reads, with the option that names it (for the path collision check).
    pub fn file(&self) -> Option<(&'static str, &Path)> {
        match self {
            KeySource::KeyFile(file) => Some(("--key-file", file)),
            KeySource::PassphraseFile(file) => Some(("--passphrase-file", file)),
            KeySource::Env(_) | KeySource::PassphraseEnv(_) => None,
        }
    }

    /// How messages name an environment variable: the default names as they are; a name given on the command
    /// line only by its option, because a key pasted there by mistake must not be printed.
    fn variable(&self) -> String {
        match self {
            KeySource::Env(name) if name == KeySource::ENV || name == KeySource::FALLBACK_ENV => {
                format!("the environment variable {name}")
            }
            KeySource::Env(_) => "the environment variable named by --key-env".to_owned(),
            KeySource::PassphraseEnv(_) => {
                "the environment variable named by --passphrase-env".to_owned()
            }
            KeySource::KeyFile(_) | KeySource::PassphraseFile(_) => String::new(),
        }
    }
}

/// Reads a key or passphrase file. A path that does not exist is not repeated in the error: it may be the key
/// itself, given to the option by mistake. A path that exists is a file name, and is shown.
fn read_secret_file(path: &Path, option: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| {
        if path.exists() {
            Error::config(format!("cannot read the file {} ({option}): {e}", path.display()))
        } else {
            Error::config(format!(
                "the file named by {option} does not exist (its name is not repeated here, in case it was \
                 the key itself)"
            ))
        }
    })
}

fn env_text(env: &Environment, name: &str, shown: &str) -> Result<String> {
    // A variable whose value is not UTF-8 is not in the environment at all (`Environment::from_process`).
    env.get(name)
        .map(str::to_owned)
        .ok_or_else(|| Error::config(format!("{shown} is not set")))
}

fn passphrase(text: Zeroizing<String>, from: &str) -> Result<KeyMaterial> {
    if text.is_empty() {
        return Err(Error::config(format!("the passphrase in {from} is empty")));
    }
    Ok(KeyMaterial::Passphrase(text))
}

/// Writes a new random key, as 64 hex digits and a line break, to a new file that only its owner can read.
/// Refuses to overwrite an existing file.
pub fn keygen(path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            Error::config(format!(
                "{shown} already exists; ferry will not overwrite a key file"
            ))
        } else {
            Error::io(Stage::Sink, Some(&shown), e)
        }
    })?;
    let key = Key::generate().map_err(|e| Error::io(Stage::Sink, Some(&shown), e))?;
    let mut text = key.to_hex();
    text.push('\n');
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(Stage::Sink, Some(&shown), e))
}

/// Argon2id's costs, stored in the header of passphrase-encrypted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Argon2Params {
    /// The most a file may ask of a reader, and so the most a writer may use: 1 GiB, 16 passes, 16 lanes. Far
    /// above the defaults, low enough that a crafted header cannot make a reader exhaust memory or time.
    pub const MAX: Argon2Params = Argon2Params {
        m_cost_kib: 1 << 20,
        t_cost: 16,
        p_cost: 16,
    };

    /// True when every cost is at most [`Argon2Params::MAX`]'s (Argon2 itself sets the minimums).
    fn within_max(&self) -> bool {
        let max = Argon2Params::MAX;
        self.m_cost_kib <= max.m_cost_kib && self.t_cost <= max.t_cost && self.p_cost <= max.p_cost
    }
}

impl Default for Argon2Params {
    /// 64 MiB, 3 passes, 1 lane: about 0.1–0.2 s on a current core, which is what a run pays once per file.
    fn default() -> Argon2Params {
        Argon2Params {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// How [`EncryptWriter`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptOptions {
    /// Plaintext bytes per chunk, 1 to [`MAX_CHUNK_SIZE`].
    pub chunk_size: u32,
    /// The key derivation costs, used when the key material is a passphrase.
    pub argon2: Argon2Params,
}

impl Default for EncryptOptions {
    fn default() -> EncryptOptions {
        EncryptOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            argon2: Argon2Params::default(),
        }
    }
}

/// How the key is made from the key material.
enum Kdf {
    Raw,
    Argon2id { params: Argon2Params, salt: Vec<u8> },
}

/// The key for `kdf`, or why `material` cannot give one.
fn derive_key(material: &KeyMaterial, kdf: &Kdf) -> std::result::Result<Key, DecryptError> {
    match (material, kdf) {
        (KeyMaterial::Key(key), Kdf::Raw) => Ok(Key(key.0)),
        (KeyMaterial::Passphrase(pass), Kdf::Argon2id { params, salt }) => {
            let unusable = |e: argon2::Error| {
                DecryptError::new(
                    DecryptErrorKind::Format,
                    None,
                    format!("unusable Argon2id parameters: {e}"),
                )
            };
            let costs =
                argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
                    .map_err(unusable)?;
            let mut key = Key([0; 32]);
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, costs)
                .hash_password_into(pass.as_bytes(), salt, &mut key.0)
                .map_err(unusable)?;
            Ok(key)
        }
        (KeyMaterial::Key(_), Kdf::Argon2id { .. }) => Err(DecryptError::new(
            DecryptErrorKind::WrongKey,
            None,
            "this file was encrypted with a passphrase, not a key: give the passphrase",
        )),
        (KeyMaterial::Passphrase(_), Kdf::Raw) => Err(DecryptError::new(
            DecryptErrorKind::WrongKey,
            None,
            "this file was encrypted with a key, not a passphrase: give the key",
        )),
    }
}

/// The 32-byte key `material` gives: a raw key as it is, a passphrase stretched with Argon2id under `argon2`
/// (costs and salt). The manifest of an encrypted split set derives its MAC key from this (see
/// [`crate::envelope::manifest`]); a key for the wrong kind of material is a [`DecryptErrorKind::WrongKey`].
pub(crate) fn file_key(
    material: &KeyMaterial,
    argon2: Option<(Argon2Params, Vec<u8>)>,
) -> std::result::Result<Key, DecryptError> {
    let kdf = match argon2 {
        None => Kdf::Raw,
        Some((params, salt)) => {
            if !params.within_max() || !(8..=64).contains(&salt.len()) {
                return Err(DecryptError::new(
                    DecryptErrorKind::Format,
                    None,
                    "Argon2id parameters beyond what ferry accepts",
                ));
            }
            Kdf::Argon2id { params, salt }
        }
    };
    derive_key(material, &kdf)
}

/// A new random salt for Argon2id, as ferry writes them (16 bytes).
pub(crate) fn new_salt() -> io::Result<Vec<u8>> {
    Ok(random::<SALT_LEN>()?.to_vec())
}

/// The header bytes before the key check: the associated data of the key check and of every chunk.
fn header_bytes(chunk_size: u32, kdf: &Kdf, prefix: &[u8; PREFIX_LEN]) -> Vec<u8> {
    let mut h = Vec::with_capacity(FIXED_LEN + SALT_LEN + PREFIX_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&[VERSION, ALGORITHM_AES_256_GCM]);
    h.extend_from_slice(&chunk_size.to_be_bytes());
    let (id, params, salt) = match kdf {
        Kdf::Raw => (KDF_RAW, [0; 3], &[][..]),
        Kdf::Argon2id { params, salt } => (
            KDF_ARGON2ID,
            [params.m_cost_kib, params.t_cost, params.p_cost],
            &salt[..],
        ),
    };
    h.push(id);
    for value in params {
        h.extend_from_slice(&value.to_be_bytes());
    }
    // Salts are 16 bytes when written and at most 64 when read.
    h.push(salt.len() as u8);
    h.extend_from_slice(salt);
    h.extend_from_slice(prefix);
    h
}

/// The STREAM nonce: prefix, counter, flag.
fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, flag: u8) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = flag;
    n.into()
}

/// Encrypts what is written into `W` in the format above, holding one chunk in memory.
/// [`EncryptWriter::finish`] writes the final chunk and must be called: without it the file reads as truncated.
pub struct EncryptWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk_size: usize,
    counter: u64,
    /// The plaintext of the chunk being filled, then its ciphertext and tag while it is written.
    buf: Zeroizing<Vec<u8>>,
    broken: bool,
}

impl<W: Write> EncryptWriter<W> {
    /// A writer with the default options; writes the header at once.
    pub fn new(inner: W, material: &KeyMaterial) -> io::Result<EncryptWriter<W>> {
        EncryptWriter::with_options(inner, material, &EncryptOptions::default())
    }

    /// A writer with `options`; writes the header at once. A passphrase is stretched with Argon2id here.
    pub fn with_options(
        inner: W,
        material: &KeyMaterial,
        options: &EncryptOptions,
    ) -> io::Result<EncryptWriter<W>> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        if !(1..=MAX_CHUNK_SIZE).contains(&options.chunk_size) {
            return Err(invalid(format!(
                "the chunk size must be 1 to {MAX_CHUNK_SIZE} bytes"
            )));
        }
        if !options.argon2.within_max() {
            return Err(invalid(format!(
                "Argon2id costs above {:?}, which readers refuse",
                Argon2Params::MAX
            )));
        }
        let kdf = match material {
            KeyMaterial::Key(_) => Kdf::Raw,
            KeyMaterial::Passphrase(_) => Kdf::Argon2id {
                params: options.argon2,
                salt: random::<SALT_LEN>()?.to_vec(),
            },
        };
        let key = derive_key(material, &kdf).map_err(|e| invalid(e.message))?;
        EncryptWriter::start(inner, &key, &kdf, random()?, options.chunk_size)
    }

    /// Writes the header and sets up the writer; the random parts come from the caller, so that the tests can
    /// check fixed vectors.
    fn start(
        mut inner: W,
        key: &Key,
        kdf: &Kdf,
        prefix: [u8; PREFIX_LEN],
        chunk_size: u32,
    ) -> io::Result<EncryptWriter<W>> {
        let cipher = key.cipher();
        let aad = header_bytes(chunk_size, kdf, &prefix);
        let check = cipher
            .encrypt_in_place_detached(&nonce(&prefix, u32::MAX, FLAG_KEY_CHECK), &aad, &mut [])
            .map_err(|_| io::Error::other("AES-GCM refused to compute the key check"))?;
        inner.write_all(&aad)?;
        inner.write_all(&check)?;
        let chunk_size = chunk_size as usize;
        Ok(EncryptWriter {
            inner,
            cipher,
            aad,
            prefix,
            chunk_size,
            counter: 0,
            buf: Zeroizing::new(Vec::with_capacity(chunk_size + TAG_LEN)),
            broken: false,
        })
    }

    /// Writes the final chunk, flushes, and gives back the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(FLAG_LAST)?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    /// Encrypts the buffered chunk and writes it with its tag.
    fn seal(&mut self, flag: u8) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier write to the encrypted output failed",
            ));
        }
        // Until the chunk is written, the writer would be out of step with its output if anything failed.
        self.broken = true;
        let counter = u32::try_from(self.counter).map_err(|_| {
            io::Error::other("the output would need more than 2^32 chunks: use a larger chunk size")
        })?;
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                &nonce(&self.prefix, counter, flag),
                &self.aad,
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("AES-GCM refused to encrypt a chunk"))?;
        self.buf.extend_from_slice(&tag);
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        self.broken = false;
        Ok(())
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full chunk is sealed only when more data comes, because the final chunk may be a full one.
        if self.buf.len() == self.chunk_size && !data.is_empty() {
            self.seal(FLAG_NEXT)?;
        }
        let n = data.len().min(self.chunk_size - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    /// Flushes the inner writer. The chunk being filled stays buffered: chunks have a fixed size.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts a file in the format above, one chunk at a time, and hands out a chunk's plaintext only after its
/// tag has been checked.
pub struct DecryptReader<R: Read> {
    inner: R,
    cipher: Aes256Gcm,
    /// The bare block cipher, for the search in [`DecryptReader::final_chunk_within`].
    aes: Aes256,
    aad: Vec<u8>,
    prefix: [u8; PREFIX_LEN],
    chunk_size: usize,
    counter: u64,
    /// One chunk as read, then its plaintext in `buf[start..end]`.
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
    state: ReadState,
}

enum ReadState {
    Chunks,
    Done,
    /// Every later read repeats the error (`None`: an I/O error, which cannot be copied).
    Failed(Option<DecryptError>),
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the header and the key. Fails with a [`DecryptError`] inside the `io::Error` for a file
    /// that is not in the format, a wrong key or passphrase, or a header that was altered.
    pub fn new(mut inner: R, material: &KeyMaterial) -> io::Result<DecryptReader<R>> {
        let (header, kdf, key_check) = read_header(&mut inner)?;
        let chunk_size = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
        let key = derive_key(material, &kdf)?;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&header[header.len() - PREFIX_LEN..]);
        let mut reader = DecryptReader {
            inner,
            cipher: key.cipher(),
            aes: key.block_cipher(),
            aad: header,
            prefix,
            chunk_size: chunk_size as usize,
            counter: 0,
            buf: Zeroizing::new(Vec::new()),
            start: 0,
            end: 0,
            state: ReadState::Chunks,
        };
        let key_opens = reader
            .cipher
            .decrypt_in_place_detached(
                &nonce(&prefix, u32::MAX, FLAG_KEY_CHECK),
                &reader.aad,
                &mut [],
                Tag::from_slice(&key_check),
            )
            .is_ok();
        if !key_opens {
            // A wrong key and an altered key check look alike; only the right key opens the first chunk.
            let first = reader.next_chunk();
            let opens = match &first {
                Ok(()) => true,
                Err(e) => DecryptError::from_io(e)
                    .is_some_and(|d| d.kind == DecryptErrorKind::TrailingData),
            };
            reader.buf.zeroize();
            return Err(if opens {
                DecryptError::new(
                    DecryptErrorKind::Tampered,
                    None,
                    "the header's key check failed although the key opens the data: the file was altered",
                )
            } else {
                DecryptError::new(
                    DecryptErrorKind::WrongKey,
                    None,
                    "the key does not open this file (wrong key or passphrase, or an altered header)",
                )
            }
            .into());
        }
        Ok(reader)
    }

    /// The plaintext bytes per chunk, from the header.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Reads, authenticates and decrypts the next chunk; any failure sticks.
    fn next_chunk(&mut self) -> io::Result<()> {
        let result = self.open_next();
        if let Err(e) = &result {
            self.state = ReadState::Failed(DecryptError::from_io(e).cloned());
        }
        result
    }

    fn open_next(&mut self) -> io::Result<()> {
        let index = self.counter;
        let fail = |kind, message: String| -> io::Error {
            DecryptError::new(kind, Some(index), message).into()
        };
        let counter = u32::try_from(index).map_err(|_| {
            fail(
                DecryptErrorKind::Format,
                "the file has more than 2^32 chunks, more than the format allows".into(),
            )
        })?;
        let full = self.chunk_size + TAG_LEN;
        self.buf.resize(full, 0);
        let n = read_full(&mut self.inner, &mut self.buf)?;
        // A full chunk is tried as a middle chunk first: a file cut just after a middle chunk must read as
        // truncated (at the next read), not as a final chunk that fails.
        let (opened, last) = if n == full && self.open(n, counter, FLAG_NEXT) {
            (true, false)
        } else {
            (n >= TAG_LEN && self.open(n, counter, FLAG_LAST), true)
        };
        if opened {
            if last {
                if read_full(&mut self.inner, &mut [0u8])? > 0 {
                    return Err(fail(
                        DecryptErrorKind::TrailingData,
                        "data after the final chunk: something was appended to the file".into(),
                    ));
                }
                self.state = ReadState::Done;
            }
            self.counter += 1;
            self.start = 0;
            self.end = n - TAG_LEN;
            return Ok(());
        }
        if self.final_chunk_within(n, counter) {
            return Err(fail(
                DecryptErrorKind::TrailingData,
                "data after the final chunk: something was appended to the file".into(),
            ));
        }
        Err(if n == 0 {
            fail(
                DecryptErrorKind::Truncated,
                "the file ends before its final chunk: it was truncated".into(),
            )
        } else if n < full {
            // A short chunk that fails is a cut middle chunk or an altered short final chunk: the bytes cannot
            // tell which. Cut files are by far the more common, so this is reported as truncation.
            fail(
                DecryptErrorKind::Truncated,
                format!(
                    "the file ends inside chunk {index}, before its final chunk: it was truncated \
                     (or its last chunk was altered)"
                ),
            )
        } else {
            fail(
                DecryptErrorKind::Tampered,
                format!("chunk {index} failed authentication: the file was altered"),
            )
        })
    }

    /// True when `buf[..n]` starts with a valid final chunk, shorter than `n`: a final chunk followed by appended
    /// bytes. Only called once a chunk has failed, to tell appended data from tampering and truncation.
    ///
    /// Calling the AEAD for every possible length would take time quadratic in the chunk size, so this computes
    /// GCM's tag (NIST SP 800-38D) for all lengths in one pass: GHASH is evaluated block by block, and each length
    /// adds only its padded partial block and the length block to the state of the full blocks before it.
    fn final_chunk_within(&self, n: usize, counter: u32) -> bool {
        let mut h = Block::default();
        self.aes.encrypt_block(&mut h);
        let mut mask = Block::default();
        mask[..12].copy_from_slice(&nonce(&self.prefix, counter, FLAG_LAST));
        mask[15] = 1;
        self.aes.encrypt_block(&mut mask);
        let mut base = GHash::new(&h);
        base.update_padded(&self.aad);
        let mut absorbed = 0;
        // Ciphertext lengths whose tag ends before `n`.
        for len in 0..n.saturating_sub(TAG_LEN) {
            while absorbed + 16 <= len {
                base.update(&[*Block::from_slice(&self.buf[absorbed..absorbed + 16])]);
                absorbed += 16;
            }
            let mut ghash = base.clone();
            ghash.update_padded(&self.buf[absorbed..len]);
            let mut lengths = Block::default();
            lengths[..8].copy_from_slice(&(self.aad.len() as u64 * 8).to_be_bytes());
            lengths[8..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
            ghash.update(&[lengths]);
            let tag = ghash.finalize();
            // Compared without an early exit, as GCM itself does.
            let stored = &self.buf[len..len + TAG_LEN];
            let diff =
                (tag.iter().zip(&mask).zip(stored)).fold(0, |acc, ((t, m), s)| acc | (t ^ m ^ s));
            if diff == 0 {
                return true;
            }
        }
        false
    }

    /// Authenticates and decrypts `buf[..n]` in place as chunk `counter`; on failure the buffer is unchanged,
    /// since GCM checks the tag before it decrypts.
    fn open(&mut self, n: usize, counter: u32, flag: u8) -> bool {
        let (data, tag) = self.buf[..n].split_at_mut(n - TAG_LEN);
        let tag = *Tag::from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&nonce(&self.prefix, counter, flag), &self.aad, data, &tag)
            .is_ok()
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.start == self.end {
            match &self.state {
                ReadState::Chunks => self.next_chunk()?,
                ReadState::Done => return Ok(0),
                ReadState::Failed(Some(e)) => return Err(e.clone().into()),
                ReadState::Failed(None) => {
                    return Err(io::Error::other(
                        "an earlier read of the encrypted input failed",
                    ))
                }
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// Reads and validates the header: the bytes before the key check, how the key is derived, and the key check.
fn read_header<R: Read>(inner: &mut R) -> io::Result<(Vec<u8>, Kdf, [u8; TAG_LEN])> {
    let format = |message: String| -> io::Error {
        DecryptError::new(DecryptErrorKind::Format, None, message).into()
    };
    let cut = || -> io::Error {
        DecryptError::new(
            DecryptErrorKind::Truncated,
            None,
            "the file ends inside its header: it was truncated",
        )
        .into()
    };
    let mut header = vec![0u8; FIXED_LEN];
    let n = read_full(inner, &mut header)?;
    if !header[..n.min(MAGIC.len())].starts_with(&MAGIC[..n.min(MAGIC.len())]) {
        return Err(format(
            "not a ferry encrypted file: it does not start with FERRYENC".into(),
        ));
    }
    if n < FIXED_LEN {
        return Err(cut());
    }
    if header[8] != VERSION {
        return Err(format(format!(
            "encrypted file version {} is not supported: this ferry reads version {VERSION}",
            header[8]
        )));
    }
    if header[9] != ALGORITHM_AES_256_GCM {
        return Err(format(format!(
            "unknown encryption algorithm {}",
            header[9]
        )));
    }
    let word = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let chunk_size = word(10);
    if !(1..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        return Err(format(format!(
            "the chunk size {chunk_size} is outside 1 to {MAX_CHUNK_SIZE}"
        )));
    }
    let params = Argon2Params {
        m_cost_kib: word(15),
        t_cost: word(19),
        p_cost: word(23),
    };
    let salt_len = usize::from(header[27]);
    let kdf = match header[14] {
        KDF_RAW
            if params
                == (Argon2Params {
                    m_cost_kib: 0,
                    t_cost: 0,
                    p_cost: 0,
                })
                && salt_len == 0 =>
        {
            Kdf::Raw
        }
        KDF_RAW => {
            return Err(format(
                "a raw-key header with key derivation parameters".into(),
            ))
        }
        KDF_ARGON2ID => {
            let max = Argon2Params::MAX;
            if !params.within_max() || !(8..=64).contains(&salt_len) {
                return Err(format(format!(
                    "Argon2id parameters beyond what ferry accepts (at most {} KiB, {} passes, {} lanes, \
                     and a salt of 8 to 64 bytes)",
                    max.m_cost_kib, max.t_cost, max.p_cost
                )));
            }
            Kdf::Argon2id {
                params,
                salt: Vec::new(),
            }
        }
        other => return Err(format(format!("unknown key derivation {other}"))),
    };
    let rest = salt_len + PREFIX_LEN + TAG_LEN;
    header.resize(FIXED_LEN + rest, 0);
    if read_full(inner, &mut header[FIXED_LEN..])? < rest {
        return Err(cut());
    }
    let mut key_check = [0u8; TAG_LEN];
    key_check.copy_from_slice(&header[header.len() - TAG_LEN..]);
    header.truncate(header.len() - TAG_LEN);
    let kdf = match kdf {
        Kdf::Argon2id { params, .. } => Kdf::Argon2id {
            params,
            salt: header[FIXED_LEN..FIXED_LEN + salt_len].to_vec(),
        },
        raw => raw,
    };
    Ok((header, kdf, key_check))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match inner.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// What is wrong with an encrypted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecryptErrorKind {
    /// Not a ferry encrypted file, an unsupported version, or a header with impossible values.
    Format,
    /// The key or passphrase does not open the file. A header altered in its parameters, salt or nonce prefix
    /// reads the same way, since the key check authenticates them and no key can tell the two apart.
    WrongKey,
    /// A chunk, or the key check, failed authentication although the key is right: bits were flipped, or
    /// chunks reordered, duplicated or dropped from the middle.
    Tampered,
    /// The file ends before its final chunk (or inside its header).
    Truncated,
    /// Bytes follow the final chunk.
    TrailingData,
}

/// Why an encrypted file cannot be read, carried inside the `io::Error` that [`DecryptReader`] returns.
///
/// ```
/// # use ferry::envelope::{DecryptError, DecryptErrorKind};
/// # fn handle(err: std::io::Error) {
/// match DecryptError::from_io(&err).map(DecryptError::kind) {
///     Some(DecryptErrorKind::WrongKey) => eprintln!("check --key-file"),
///     Some(DecryptErrorKind::Truncated) => eprintln!("copy the file again"),
///     _ => eprintln!("{err}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptError {
    kind: DecryptErrorKind,
    chunk: Option<u64>,
    message: String,
}

impl DecryptError {
    fn new(kind: DecryptErrorKind, chunk: Option<u64>, message: impl Into<String>) -> DecryptError {
        DecryptError {
            kind,
            chunk,
            message: message.into(),
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> DecryptErrorKind {
        self.kind
    }

    /// The 0-based chunk at fault, where the error belongs to one.
    pub fn chunk(&self) -> Option<u64> {
        self.chunk
    }

    /// The decryption error inside an `io::Error` from [`DecryptReader`], if it is one (and not, say, a
    /// failing disk).
    pub fn from_io(err: &io::Error) -> Option<&DecryptError> {
        err.get_ref().and_then(|e| e.downcast_ref::<DecryptError>())
    }
}

impl fmt::Display for DecryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecryptError {}

impl From<DecryptError> for io::Error {
    fn from(err: DecryptError) -> io::Error {
        let kind = match err.kind {
            DecryptErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHUNK: usize = 64;
    /// The header of a raw-key file: 35 bytes of associated data and the 16-byte key check.
    const RAW_HEADER: usize = 51;

    fn key(byte: u8) -> KeyMaterial {
        KeyMaterial::Key(Key([byte; 32]))
    }

    fn pass(text: &str) -> KeyMaterial {
        KeyMaterial::Passphrase(Zeroizing::new(text.to_owned()))
    }

    /// Cheap Argon2id costs, so the tests do not spend their time stretching passphrases.
    fn options(chunk_size: usize) -> EncryptOptions {
        EncryptOptions {
            chunk_size: chunk_size as u32,
            argon2: Argon2Params {
                m_cost_kib: 64,
                t_cost: 1,
                p_cost: 1,
            },
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn encrypt_with(material: &KeyMaterial, plain: &[u8], chunk: usize) -> Vec<u8> {
        let mut w = EncryptWriter::with_options(Vec::new(), material, &options(chunk)).unwrap();
        // Writes of varying size, so chunk boundaries fall inside writes.
        let mut rest = plain;
        let mut step = 1;
        while !rest.is_empty() {
            let (now, later) = rest.split_at(step.min(rest.len()));
            w.write_all(now).unwrap();
            rest = later;
            step = step * 3 % 97 + 1;
        }
        w.finish().unwrap()
    }

    fn encrypt(plain: &[u8]) -> Vec<u8> {
        encrypt_with(&key(1), plain, CHUNK)
    }

    /// Decrypts; returns the plaintext handed out before an error, and the error's kind.
    fn decrypt_with(material: &KeyMaterial, file: &[u8]) -> (Vec<u8>, Option<DecryptErrorKind>) {
        let mut reader = match DecryptReader::new(file, material) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(kind_of(&e))),
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 13];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return (out, None),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    // The error sticks.
                    let again = reader.read(&mut buf).unwrap_err();
                    assert_eq!(kind_of(&again), kind_of(&e));
                    return (out, Some(kind_of(&e)));
                }
            }
        }
    }

    fn decrypt(file: &[u8]) -> (Vec<u8>, Option<DecryptErrorKind>) {
        decrypt_with(&key(1), file)
    }

    fn kind_of(e: &io::Error) -> DecryptErrorKind {
        DecryptError::from_io(e)
            .unwrap_or_else(|| panic!("not a decryption error: {e}"))
            .kind()
    }

    fn error(file: &[u8]) -> DecryptErrorKind {
        decrypt(file).1.expect("an error")
    }

    /// Where chunk `i` of a raw-key file starts.
    fn chunk_at(i: usize) -> usize {
        RAW_HEADER + i * (CHUNK + TAG_LEN)
    }

    #[test]
    fn round_trips_at_chunk_edges() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
            let plain = data(len);
            let file = encrypt(&plain);
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(file.len(), RAW_HEADER + len + chunks * TAG_LEN, "len {len}");
            assert_eq!(decrypt(&file), (plain, None), "len {len}");
        }
    }

    #[test]
    fn round_trips_with_a_passphrase_and_the_default_options() {
        let plain = data(200_000);
        let file = encrypt_with(&pass("correct horse"), &plain, CHUNK);
        assert_eq!(&file[14..15], &[KDF_ARGON2ID]);
        assert_eq!(
            decrypt_with(&pass("correct horse"), &file),
            (plain.clone(), None)
        );

        let material = pass("default costs");
        let mut w = EncryptWriter::new(Vec::new(), &material).unwrap();
        w.write_all(&plain).unwrap();
        let file = w.finish().unwrap();
        assert_eq!(&file[10..14], &DEFAULT_CHUNK_SIZE.to_be_bytes());
        assert_eq!(&file[15..19], &(64u32 * 1024).to_be_bytes());
        assert_eq!(decrypt_with(&material, &file), (plain, None));
    }

    #[test]
    fn the_same_input_encrypts_differently_each_time() {
        assert_ne!(encrypt(b"same"), encrypt(b"same"));
    }

    #[test]
    fn wrong_key_or_passphrase_is_told_as_such() {
        let file = encrypt(&data(100));
        assert_eq!(
            decrypt_with(&key(2), &file).1,
            Some(DecryptErrorKind::WrongKey)
        );
        let file = encrypt_with(&pass("right"), &data(100), CHUNK);
        assert_eq!(
            decrypt_with(&pass("wrong"), &file).1,
            Some(DecryptErrorKind::WrongKey)
        );
        assert_eq!(
            decrypt_with(&key(1), &file).1,
            Some(DecryptErrorKind::WrongKey)
        );
        let err = DecryptReader::new(&file[..], &pass("wrong")).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the key does not open this file (wrong key or passphrase, or an altered header)"
        );
        let raw = encrypt(&data(10));
        assert_eq!(
            decrypt_with(&pass("x"), &raw).1,
            Some(DecryptErrorKind::WrongKey)
        );
    }

    #[test]
    fn flipped_header_bits_are_format_or_wrong_key_errors() {
        let file = encrypt(&data(3 * CHUNK + 5));
        let flipped = |at: usize, bit: u8| {
            let mut f = file.clone();
            f[at] ^= bit;
            error(&f)
        };
        // Magic, version, algorithm, a chunk size beyond the limit, key derivation, salt length: format errors.
        for at in [0, 7, 8, 9] {
            assert_eq!(flipped(at, 1), DecryptErrorKind::Format, "byte {at}");
        }
        assert_eq!(flipped(10, 0x80), DecryptErrorKind::Format);
        assert_eq!(flipped(14, 1), DecryptErrorKind::Format);
        assert_eq!(flipped(27, 1), DecryptErrorKind::Format);
        // A chunk size that is still valid, and the nonce prefix: authenticated by the key check, which fails.
        assert_eq!(flipped(13, 1), DecryptErrorKind::WrongKey);
        for at in 28..35 {
            assert_eq!(flipped(at, 4), DecryptErrorKind::WrongKey, "byte {at}");
        }
        // Argon2id costs and salt, in a passphrase file.
        let file = encrypt_with(&pass("p"), &data(10), CHUNK);
        // (Bit 2, so the costs stay valid: 64 KiB ^ 2, 1 ^ 2 = 3 passes, 3 lanes.)
        for at in [18, 22, 26, 28, 43, 44, 50] {
            let mut f = file.clone();
            f[at] ^= 2;
            assert_eq!(
                decrypt_with(&pass("p"), &f).1,
                Some(DecryptErrorKind::WrongKey),
                "byte {at}"
            );
        }
    }

    #[test]
    fn flipped_bits_after_the_header_are_tampering() {
        // Four chunks, the last one full, so that every chunk has a fixed length.
        let file = encrypt(&data(4 * CHUNK));
        let targets = [
            ("key check", 35),
            ("key check end", RAW_HEADER - 1),
            ("first chunk", chunk_at(0)),
            ("middle chunk", chunk_at(1) + 30),
            ("a tag", chunk_at(2) - 1),
            ("last chunk", chunk_at(3) + 10),
            ("last tag", file.len() - 1),
        ];
        for (what, at) in targets {
            for bit in [0x01, 0x80] {
                let mut f = file.clone();
                f[at] ^= bit;
                assert_eq!(error(&f), DecryptErrorKind::Tampered, "{what}");
            }
        }
        let mut f = file.clone();
        f[chunk_at(2) + 1] ^= 1;
        let err = DecryptReader::new(&f[..], &key(1))
            .unwrap()
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(DecryptError::from_io(&err).unwrap().chunk(), Some(2));
        assert_eq!(
            err.to_string(),
            "chunk 2 failed authentication: the file was altered"
        );
    }

    #[test]
    fn a_tampered_chunk_hands_out_none_of_its_plaintext() {
        let plain = data(4 * CHUNK + 9);
        let mut file = encrypt(&plain);
        file[chunk_at(2) + 5] ^= 2;
        let (out, err) = decrypt(&file);
        assert_eq!(err, Some(DecryptErrorKind::Tampered));
        assert!(out.len() <= 2 * CHUNK, "{} bytes came out", out.len());
        assert_eq!(out, plain[..out.len()]);
    }

    #[test]
    fn an_altered_short_final_chunk_reads_as_truncated() {
        // The bytes of a damaged short final chunk are indistinguishable from a cut middle chunk.
        let mut file = encrypt(&data(3 * CHUNK + 5));
        let at = file.len() - 3;
        file[at] ^= 1;
        assert_eq!(error(&file), DecryptErrorKind::Truncated);
    }

    #[test]
    fn truncation_anywhere_is_told_as_truncation() {
        let plain = data(3 * CHUNK + 5);
        let file = encrypt(&plain);
        let mut cuts = vec![0, 1, 8, 20, 34, 35, 50, RAW_HEADER];
        for i in 0..=3 {
            cuts.extend([
                chunk_at(i),
                chunk_at(i) + 1,
                chunk_at(i) + 40,
                chunk_at(i) + 79,
            ]);
        }
        cuts.push(file.len() - 1);
        for cut in cuts.into_iter().filter(|&c| c < file.len()) {
            let (out, err) = decrypt(&file[..cut]);
            assert_eq!(err, Some(DecryptErrorKind::Truncated), "cut at {cut}");
            assert_eq!(out, plain[..out.len()], "cut at {cut}");
        }
        // Exactly the final chunk dropped, where the chunks before it are full.
        let file = encrypt(&data(3 * CHUNK));
        let (out, err) = decrypt(&file[..chunk_at(2)]);
        assert_eq!(
            (out.len(), err),
            (2 * CHUNK, Some(DecryptErrorKind::Truncated))
        );
    }

    #[test]
    fn a_writer_dropped_without_finish_leaves_a_truncated_file() {
        let mut out = Vec::new();
        {
            let mut w = EncryptWriter::with_options(&mut out, &key(1), &options(CHUNK)).unwrap();
            w.write_all(&data(5 * CHUNK)).unwrap();
        }
        assert_eq!(error(&out), DecryptErrorKind::Truncated);
    }

    #[test]
    fn reordered_or_duplicated_chunks_are_tampering() {
        let file = encrypt(&data(4 * CHUNK + 5));
        let piece = |i: usize| file[chunk_at(i)..chunk_at(i + 1)].to_vec();
        let mut swapped = file[..chunk_at(0)].to_vec();
        for i in [0, 2, 1, 3] {
            swapped.extend(piece(i));
        }
        swapped.extend(&file[chunk_at(4)..]);
        assert_eq!(error(&swapped), DecryptErrorKind::Tampered);

        let mut doubled = file[..chunk_at(2)].to_vec();
        doubled.extend(piece(1));
        doubled.extend(&file[chunk_at(2)..]);
        assert_eq!(error(&doubled), DecryptErrorKind::Tampered);

        let mut dropped = file[..chunk_at(1)].to_vec();
        dropped.extend(&file[chunk_at(2)..]);
        assert_eq!(error(&dropped), DecryptErrorKind::Tampered);

        // A chunk taken from another file under the same key.
        let other = encrypt(&data(4 * CHUNK + 5));
        let mut spliced = file.clone();
        spliced[chunk_at(1)..chunk_at(2)].copy_from_slice(&other[chunk_at(1)..chunk_at(2)]);
        assert_eq!(error(&spliced), DecryptErrorKind::Tampered);
    }

    #[test]
    fn appended_bytes_are_an_error() {
        for len in [0, 5, CHUNK, 2 * CHUNK + 3] {
            let mut file = encrypt(&data(len));
            file.push(0);
            assert_eq!(error(&file), DecryptErrorKind::TrailingData, "len {len}");
            let mut file = encrypt(&data(len));
            let again = file[file.len() - 16..].to_vec();
            file.extend(again);
            assert_eq!(error(&file), DecryptErrorKind::TrailingData, "len {len}");
            // More than a chunk's worth: the read that holds the final chunk is full-sized.
            let mut file = encrypt(&data(len));
            file.extend(data(3 * CHUNK));
            assert_eq!(error(&file), DecryptErrorKind::TrailingData, "len {len}");
        }
        // With the default chunk size, a short final chunk is found inside a full read too.
        let mut w = EncryptWriter::new(Vec::new(), &key(1)).unwrap();
        w.write_all(&data(70_000)).unwrap();
        let mut file = w.finish().unwrap();
        file.extend(data(70_000));
        let (out, err) = decrypt(&file);
        assert_eq!(
            (out.len(), err),
            (65_536, Some(DecryptErrorKind::TrailingData))
        );
    }

    #[test]
    fn headers_from_elsewhere_are_format_errors() {
        assert_eq!(error(b"{\"not\": \"encrypted\"}"), DecryptErrorKind::Format);
        assert_eq!(error(b"FERRY"), DecryptErrorKind::Truncated);
        assert_eq!(error(b""), DecryptErrorKind::Truncated);
        let mut file = encrypt(b"x");
        file[8] = 2;
        let err = DecryptReader::new(&file[..], &key(1)).err().unwrap();
        assert_eq!(
            err.to_string(),
            "encrypted file version 2 is not supported: this ferry reads version 1"
        );
        let mut file = encrypt(b"x");
        file[10..14].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(error(&file), DecryptErrorKind::Format);
        // Argon2id costs beyond the limits are refused before any memory is spent on them.
        let mut file = encrypt_with(&pass("p"), b"x", CHUNK);
        file[15..19].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decrypt_with(&pass("p"), &file).1,
            Some(DecryptErrorKind::Format)
        );
    }

    #[test]
    fn an_altered_key_check_with_the_right_key_is_tampering() {
        for len in [0, 10, 3 * CHUNK] {
            let mut file = encrypt(&data(len));
            file[RAW_HEADER - 3] ^= 0x40;
            assert_eq!(error(&file), DecryptErrorKind::Tampered, "len {len}");
            assert_eq!(
                decrypt_with(&key(9), &file).1,
                Some(DecryptErrorKind::WrongKey)
            );
        }
    }

    #[test]
    fn the_chunk_counter_cannot_wrap() {
        let mut w = EncryptWriter::with_options(Vec::new(), &key(1), &options(1)).unwrap();
        w.counter = u64::from(u32::MAX);
        w.write_all(b"ab").unwrap();
        let err = w.write_all(b"c").unwrap_err();
        assert!(err.to_string().contains("more than 2^32 chunks"), "{err}");
        // The writer stays in step: it refuses to go on rather than writing a bad file.
        assert!(w.write_all(b"d").is_err());
    }

    #[test]
    fn chunk_sizes_are_checked() {
        for size in [0, MAX_CHUNK_SIZE + 1] {
            let opts = EncryptOptions {
                chunk_size: size,
                ..EncryptOptions::default()
            };
            assert!(EncryptWriter::with_options(Vec::new(), &key(1), &opts).is_err());
        }
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_never_print() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = Key::parse(&format!("  {hex}\n")).unwrap();
        assert_eq!(*k.to_hex(), hex.to_ascii_lowercase());
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.0);
        assert_eq!(Key::parse(&b64).unwrap().0, k.0);
        assert_eq!(Key::parse(b64.trim_end_matches('=')).unwrap().0, k.0);
        assert!(Key::parse(&hex[..62]).is_none());
        assert!(Key::parse("zz").is_none());
        assert!(Key::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 31])).is_none());
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
        let material = KeyMaterial::Passphrase(Zeroizing::new("hunter2".into()));
        assert!(!format!("{material:?}").contains("hunter2"));
    }

    #[test]
    fn key_sources_read_files_and_variables() {
        let env = Environment::empty()
            .with("FERRY_TEST_KEY_HEX", "07".repeat(32))
            .with("FERRY_TEST_PASSPHRASE", "from env");
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.key");
        fs::write(&raw, [7u8; 32]).unwrap();
        let hex = dir.path().join("hex.key");
        fs::write(&hex, format!("{}\n", "07".repeat(32))).unwrap();
        let b64 = dir.path().join("b64.key");
        fs::write(
            &b64,
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        for path in [&raw, &hex, &b64] {
            match KeySource::KeyFile(path.clone()).resolve(&env).unwrap() {
                KeyMaterial::Key(k) => assert_eq!(k.0, [7; 32]),
                other => panic!("{other:?}"),
            }
        }
        let bad = dir.path().join("bad.key");
        fs::write(&bad, "secret-looking text").unwrap();
        let err = KeySource::KeyFile(bad).resolve(&env).unwrap_err();
        assert!(
            err.is_config() && !err.to_string().contains("secret"),
            "{err}"
        );
        assert!(KeySource::KeyFile(dir.path().join("missing"))
            .resolve(&env)
            .unwrap_err()
            .is_config());

        let phrase = dir.path().join("phrase");
        fs::write(&phrase, "two words \r\n").unwrap();
        match KeySource::PassphraseFile(phrase).resolve(&env).unwrap() {
            KeyMaterial::Passphrase(p) => assert_eq!(p.as_str(), "two words "),
            other => panic!("{other:?}"),
        }
        let empty = dir.path().join("empty");
        fs::write(&empty, "\n").unwrap();
        assert!(KeySource::PassphraseFile(empty)
            .resolve(&env)
            .unwrap_err()
            .is_config());

        assert!(matches!(
            KeySource::Env("FERRY_TEST_KEY_HEX".into()).resolve(&env).unwrap(),
            KeyMaterial::Key(k) if k.0 == [7; 32]
        ));
        assert!(matches!(
            KeySource::PassphraseEnv("FERRY_TEST_PASSPHRASE".into()).resolve(&env).unwrap(),
            KeyMaterial::Passphrase(p) if p.as_str() == "from env"
        ));
        let err = KeySource::Env("FERRY_TEST_UNSET".into())
            .resolve(&env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the environment variable named by --key-env is not set"
        );
        // The default names are ferry's own, and are shown.
        let err = KeySource::Env(KeySource::FALLBACK_ENV.into())
            .resolve(&env)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the environment variable EXPORT_ENCRYPTION_KEY is not set"
        );
        // A key given by mistake where a name or path belongs is never repeated.
        let pasted = "3f".repeat(32);
        for source in [
            KeySource::Env(pasted.clone()),
            KeySource::PassphraseEnv(pasted.clone()),
            KeySource::KeyFile(pasted.clone().into()),
            KeySource::PassphraseFile(pasted.clone().into()),
        ] {
            let err = source.resolve(&env).unwrap_err();
            assert!(err.is_config(), "{err}");
            assert!(!err.to_string().contains(&pasted[..16]), "{err}");
        }
    }

    #[test]
    fn keygen_writes_a_private_key_and_never_overwrites() {
        let env = Environment::empty();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.key");
        keygen(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(Key::parse(&text).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = keygen(&path).unwrap_err();
        assert!(err.is_config(), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        let file = encrypt_with(
            &KeySource::KeyFile(path.clone()).resolve(&env).unwrap(),
            b"hi",
            8,
        );
        let material = KeySource::KeyFile(path).resolve(&env).unwrap();
        assert_eq!(decrypt_with(&material, &file), (b"hi".to_vec(), None));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The test vectors in docs/encryption.md: the format must not drift, and other implementations can check
    /// themselves against them.
    #[test]
    fn test_vectors_hold() {
        let key_bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        let prefix: [u8; 7] = std::array::from_fn(|i| 0xa0 + i as u8);
        let mut w =
            EncryptWriter::start(Vec::new(), &Key(key_bytes), &Kdf::Raw, prefix, 4).unwrap();
        w.write_all(b"ferry!").unwrap();
        let file = w.finish().unwrap();
        assert_eq!(hex(&file), VECTOR_RAW);
        assert_eq!(
            decrypt_with(&KeyMaterial::Key(Key(key_bytes)), &file),
            (b"ferry!".to_vec(), None)
        );

        let params = Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let kdf = Kdf::Argon2id {
            params,
            salt: (0..16).collect(),
        };
        let material = pass("correct horse battery staple");
        let key = derive_key(&material, &kdf).unwrap();
        assert_eq!(hex(&key.0), VECTOR_ARGON2_KEY);
        let prefix: [u8; 7] = std::array::from_fn(|i| 0xb0 + i as u8);
        let mut w = EncryptWriter::start(Vec::new(), &key, &kdf, prefix, 65536).unwrap();
        w.write_all(b"hi").unwrap();
        let file = w.finish().unwrap();
        assert_eq!(hex(&file), VECTOR_ARGON2);
        assert_eq!(decrypt_with(&material, &file), (b"hi".to_vec(), None));
    }

    const VECTOR_RAW: &str = "4645525259454e430101000000040000000000000000000000000000a0a1a2a3a4a5a631743b51bcb757c117593fbe3a37c4cf6cb46edb7fedbdcd9c0e43d5334728f40821b51d9027ee43f9b8014eba8eeeacac5ae4359bae";
    const VECTOR_ARGON2_KEY: &str =
        "92dc5d67019623868bde079275e522f4b7e8213d3414ed85cbc2ac8a41117288";
    const VECTOR_ARGON2: &str = "4645525259454e430101000100000100000040000000010000000110000102030405060708090a0b0c0d0e0fb0b1b2b3b4b5b6212bfe338ff30ac41b291029536e26fdd561b709b591060478fdf79964ea96a5536a";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trip_on_random_data(plain in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..300) {
            let file = encrypt_with(&key(3), &plain, chunk);
            prop_assert_eq!(decrypt_with(&key(3), &file), (plain, None));
        }
    }

    /// Throughput on 256 MB: `cargo test --lib envelope::encrypt -- --ignored --nocapture`. Dependencies build at
    /// opt-level 2 even in the dev profile, so the figures hold for release builds too.
    #[test]
    #[ignore]
    fn throughput() {
        let plain = data(256 << 20);
        let mb = plain.len() as f64 / 1e6;
        let start = std::time::Instant::now();
        let mut w =
            EncryptWriter::new(Vec::with_capacity(plain.len() + (1 << 20)), &key(5)).unwrap();
        for piece in plain.chunks(64 * 1024) {
            w.write_all(piece).unwrap();
        }
        let file = w.finish().unwrap();
        let secs = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let mut reader = DecryptReader::new(&file[..], &key(5)).unwrap();
        let n = io::copy(&mut reader, &mut io::sink()).unwrap();
        let dsecs = start.elapsed().as_secs_f64();
        assert_eq!(n as usize, plain.len());
        println!(
            "AES-256-GCM, 64 KiB chunks: encrypt {:.0} MB/s, decrypt {:.0} MB/s",
            mb / secs,
            mb / dsecs
        );
    }
}
