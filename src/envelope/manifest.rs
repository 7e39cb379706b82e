//! The read side of splitting, and the manifest's MAC: before a split set's parts are decoded (by
//! `--in NAME.manifest.json` or `ferry verify`), its manifest is checked — part names, their order, record
//! totals, the encryption claim and, for an encrypted set, an HMAC-SHA256 over the whole manifest under a
//! key derived from the file key — and each part's size and SHA-256 are checked before and while it is read.
//!
//! ```text
//! NAME.manifest.json ─► PartSet::open (names, order, totals) ─► authenticate (encrypted sets: the MAC)
//!     └► for each part: check_part (size, SHA-256, encrypted or not) ─► open_part ─► layers ─► decoder
//!                                                          PartGuard::finish (size, SHA-256 again) ◄┘
//! ```
//!
//! The canonical bytes the MAC covers are described byte for byte in `docs/encryption.md`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::encrypt::{file_key, new_salt, DecryptErrorKind, DecryptReader};
use super::split::{hex, Manifest, PartEntry};
use super::{is_encrypted, Argon2Params, Compression, KeyMaterial, SNIFF_LEN};
use crate::error::{Error, Position, Result, Stage};

/// The manifest format this build writes: 2 added the MAC. Version 1 manifests are read only when their set
/// is not encrypted.
pub const MANIFEST_VERSION: u32 = 2;
/// The MAC algorithm of version 2.
pub const MAC_ALGORITHM: &str = "HMAC-SHA256";
/// The `info` of the HKDF step that makes the MAC key from the file key.
pub const MAC_KEY_INFO: &[u8] = b"ferry manifest v2 HMAC-SHA256";
/// The first bytes of the canonical encoding the MAC covers.
pub const CANONICAL_MAGIC: &[u8; 8] = b"FERRYMAN";
/// The encryption algorithm a manifest may claim.
pub const ENCRYPTION_ALGORITHM: &str = "AES-256-GCM";

/// The MAC of an encrypted set's manifest (`"mac"` in the JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestMac {
    /// `HMAC-SHA256`.
    pub algorithm: String,
    /// How the file key comes from the key material: `none` (a raw key) or `argon2id` (a passphrase).
    pub kdf: String,
    /// Argon2id's costs and salt, for a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2id: Option<MacArgon2>,
    /// The HMAC-SHA256 of the manifest's canonical encoding, hex.
    pub tag: String,
}

/// Argon2id's parameters for the manifest's own key (its salt is not any part's salt).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MacArgon2 {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
    /// The salt, hex (8 to 64 bytes; ferry writes 16).
    pub salt: String,
}

/// The bytes the MAC covers: every field of the manifest but the MAC itself, each length-prefixed, in a fixed
/// order (docs/encryption.md, "Manifest MAC").
pub fn canonical(manifest: &Manifest) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        // Fields longer than 4 GiB cannot come from a manifest ferry would read.
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn optional(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                text(out, s);
            }
        }
    }
    let head = &manifest.head;
    let mut out = Vec::with_capacity(256 + manifest.parts.len() * 128);
    out.extend_from_slice(CANONICAL_MAGIC);
    out.extend_from_slice(&manifest.manifest_version.to_be_bytes());
    text(&mut out, &manifest.ferry_version);
    text(&mut out, &manifest.created);
    text(&mut out, &head.format);
    text(&mut out, &head.compression);
    match &head.encryption {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            text(&mut out, &e.algorithm);
            text(&mut out, &e.kdf);
        }
    }
    optional(&mut out, head.template.as_deref());
    optional(&mut out, head.schema.as_deref());
    out.extend_from_slice(&manifest.total_records.to_be_bytes());
    out.extend_from_slice(&(manifest.parts.len() as u64).to_be_bytes());
    for part in &manifest.parts {
        text(&mut out, &part.file);
        out.extend_from_slice(&part.records.to_be_bytes());
        out.extend_from_slice(&part.bytes.to_be_bytes());
        text(&mut out, &part.sha256);
    }
    // An incremental set's runs and mark (absent from other manifests, whose bytes stay as they were).
    if let Some(log) = &manifest.incremental {
        out.push(1);
        // Plain data with string keys: serializing cannot fail.
        text(&mut out, &serde_json::to_string(log).unwrap_or_default());
    }
    out
}

/// The MAC key: HKDF-SHA256 (RFC 5869) of the file key, no salt, info [`MAC_KEY_INFO`], 32 bytes. A subkey,
/// so that the MAC never uses the key that encrypts the parts.
fn mac_key(file_key: &[u8; 32]) -> Result<zeroize::Zeroizing<[u8; 32]>> {
    let mut okm = zeroize::Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<Sha256>::new(None, file_key)
        .expand(MAC_KEY_INFO, &mut okm[..])
        .map_err(|e| Error::config(format!("cannot derive the manifest's MAC key: {e}")))?;
    Ok(okm)
}

/// The HMAC of a manifest's canonical encoding, ready to finalize or verify.
fn hmac(file_key: &[u8; 32], canonical: &[u8]) -> Result<Hmac<Sha256>> {
    let key = mac_key(file_key)?;
    let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&key[..])
        .map_err(|e| Error::config(format!("cannot key the manifest's MAC: {e}")))?;
    mac.update(canonical);
    Ok(mac)
}

/// The MAC of a manifest's `canonical` bytes under `material`, by the rule of split sets' manifests (a
/// raw key: HKDF of the key; a passphrase: HKDF of a key stretched with Argon2id and a new salt). Other
/// manifests (a migration's backup) are sealed with it too.
pub fn mac_of(canonical: &[u8], material: &KeyMaterial) -> Result<ManifestMac> {
    let argon2 = match material {
        KeyMaterial::Key(_) => None,
        KeyMaterial::Passphrase(_) => {
            let salt = new_salt().map_err(|e| Error::io(Stage::Sink, None, e))?;
            Some((Argon2Params::default(), salt))
        }
    };
    mac_with(canonical, material, argon2)
}

fn mac_with(
    canonical: &[u8],
    material: &KeyMaterial,
    argon2: Option<(Argon2Params, Vec<u8>)>,
) -> Result<ManifestMac> {
    let key = file_key(material, argon2.clone())
        .map_err(|e| Error::config(format!("cannot derive the manifest's key: {e}")))?;
    let tag = hmac(key.bytes(), canonical)?.finalize().into_bytes();
    Ok(ManifestMac {
        algorithm: MAC_ALGORITHM.to_owned(),
        kdf: if argon2.is_some() { "argon2id" } else { "none" }.to_owned(),
        argon2id: argon2.map(|(params, salt)| MacArgon2 {
            m_cost_kib: params.m_cost_kib,
            t_cost: params.t_cost,
            p_cost: params.p_cost,
            salt: hex(&salt),
        }),
        tag: hex(&tag),
    })
}

/// True when `mac` is the MAC of `canonical` under `material`; an error when the MAC itself is malformed
/// (its message says what is wrong with it, for the manifest at `path`).
pub fn mac_matches(
    path: &Path,
    canonical: &[u8],
    mac: &ManifestMac,
    material: &KeyMaterial,
) -> Result<bool> {
    let bad = |message: &str| failure(path, message.to_owned());
    if mac.algorithm != MAC_ALGORITHM {
        return Err(bad("the manifest's MAC algorithm is not HMAC-SHA256"));
    }
    let argon2 = match (mac.kdf.as_str(), &mac.argon2id) {
        ("none", None) => None,
        ("argon2id", Some(a)) => {
            let salt = unhex(&a.salt).ok_or_else(|| bad("the manifest's MAC salt is not hex"))?;
            let params = Argon2Params {
                m_cost_kib: a.m_cost_kib,
                t_cost: a.t_cost,
                p_cost: a.p_cost,
            };
            Some((params, salt))
        }
        _ => return Err(bad("the manifest's MAC names an unknown key derivation")),
    };
    let tag = unhex(&mac.tag)
        .filter(|t| t.len() == 32)
        .ok_or_else(|| bad("the manifest's MAC is not 32 bytes of hex"))?;
    let key = file_key(material, argon2).map_err(|e| failure(path, e.to_string()))?;
    Ok(hmac(key.bytes(), canonical)?.verify_slice(&tag).is_ok())
}

/// Adds the MAC to an encrypted set's manifest: with a raw key, under the key; with a passphrase, under a key
/// stretched from it with Argon2id (ferry's default costs, a new salt).
pub fn seal(manifest: &mut Manifest, material: &KeyMaterial) -> Result<()> {
    manifest.mac = Some(mac_of(&canonical(manifest), material)?);
    Ok(())
}

#[cfg(test)]
fn seal_with(
    manifest: &mut Manifest,
    material: &KeyMaterial,
    argon2: Option<(Argon2Params, Vec<u8>)>,
) -> Result<()> {
    manifest.mac = Some(mac_with(&canonical(manifest), material, argon2)?);
    Ok(())
}

/// The message for an input that should be encrypted and is not (`why` says why it should be); the error's
/// position names the file.
pub fn not_encrypted(why: &str) -> String {
    format!(
        "not an encrypted ferry file: it does not start with ferry's encryption header, but {why}; \
         pass --allow-plaintext to read it as it is"
    )
}

/// The message for an encrypted part of a set whose manifest says its parts are not encrypted.
pub fn unexpectedly_encrypted() -> String {
    "the part is encrypted, but the manifest says the parts are not: the manifest was altered, or \
     belongs to another set"
        .to_owned()
}

/// A manifest whose structure has been checked: part names plain and in sequence, counts adding up, a known
/// format of compression and encryption. Parts are checked one by one as they are read.
#[derive(Debug, Clone)]
pub struct PartSet {
    path: PathBuf,
    dir: PathBuf,
    manifest: Manifest,
    compression: Compression,
}

impl PartSet {
    /// Reads `path` and checks everything that needs neither a part nor a key.
    pub fn open(path: &Path) -> Result<PartSet> {
        PartSet::checked(path, Manifest::read(path)?)
    }

    /// Parses and checks a manifest's bytes as [`PartSet::open`] does the file at `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<PartSet> {
        PartSet::checked(path, Manifest::parse(bytes, path.display().to_string())?)
    }

    fn checked(path: &Path, manifest: Manifest) -> Result<PartSet> {
        let bad = |message: String| failure(path, message);
        match manifest.manifest_version {
            1 | MANIFEST_VERSION => {}
            v if v > MANIFEST_VERSION => {
                return Err(bad(format!(
                    "manifest version {v} is newer than this ferry reads (up to {MANIFEST_VERSION})"
                )))
            }
            v => return Err(bad(format!("manifest version {v} does not exist"))),
        }
        let compression = Compression::parse(&manifest.head.compression)
            .map_err(|_| {
                bad(format!(
                    "unknown compression {:?} in the manifest",
                    manifest.head.compression
                ))
            })?
            .kind;
        if let Some(e) = &manifest.head.encryption {
            if e.algorithm != ENCRYPTION_ALGORITHM
                || !["none", "argon2id"].contains(&e.kdf.as_str())
            {
                return Err(bad(format!(
                    "unknown encryption {} with key derivation {} in the manifest",
                    e.algorithm, e.kdf
                )));
            }
            if manifest.manifest_version < 2 || manifest.mac.is_none() {
                return Err(bad(
                    "the manifest of an encrypted set carries no MAC, so nothing proves it was not altered; \
                     a manifest written before version 2 cannot be trusted: read its parts one by one, or \
                     export again"
                        .to_owned(),
                ));
            }
        }
        check_parts(&manifest.parts, manifest.total_records).map_err(bad)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(PartSet {
            path: path.to_owned(),
            dir,
            manifest,
            compression,
        })
    }

    /// The manifest as read.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when the manifest says the parts are encrypted (and so carries a MAC).
    pub fn is_encrypted(&self) -> bool {
        self.manifest.head.encryption.is_some()
    }

    /// The parts' compression, as the manifest declares it.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The number of parts.
    pub fn len(&self) -> usize {
        self.manifest.parts.len()
    }

    /// True for a set without parts (which [`PartSet::open`] refuses).
    pub fn is_empty(&self) -> bool {
        self.manifest.parts.is_empty()
    }

    /// The path of part `index` (from 0): its plain name in the manifest's folder.
    pub fn part_path(&self, index: usize) -> PathBuf {
        self.dir.join(&self.manifest.parts[index].file)
    }

    /// Checks the MAC of an encrypted set's manifest with `material`. When it fails, the first part's header
    /// tells a wrong key from an altered manifest.
    pub fn authenticate(&self, material: &KeyMaterial) -> Result<()> {
        let Some(mac) = &self.manifest.mac else {
            return Err(failure(
                &self.path,
                "the manifest carries no MAC".to_owned(),
            ));
        };
        let bad = |message: &str| failure(&self.path, message.to_owned());
        // The canonical encoding leaves the MAC out.
        if mac_matches(&self.path, &canonical(&self.manifest), mac, material)? {
            return Ok(());
        }
        if self.key_opens_first_part(material) {
            Err(bad(
                "the manifest failed authentication (its MAC does not match): it was altered after it was \
                 written",
            ))
        } else {
            Err(bad(
                "the key does not open this set (wrong key or passphrase), so its manifest cannot be \
                 authenticated",
            ))
        }
    }

    fn key_opens_first_part(&self, material: &KeyMaterial) -> bool {
        let Ok(file) = File::open(self.part_path(0)) else {
            return true;
        };
        match DecryptReader::new(io::BufReader::new(file), material) {
            Ok(_) => true,
            Err(e) => !super::DecryptError::from_io(&e)
                .is_some_and(|d| d.kind() == DecryptErrorKind::WrongKey),
        }
    }

    /// Checks part `index` before anything of it is decoded: it exists, its size and SHA-256 are the
    /// manifest's, and it is encrypted exactly when the manifest says so (`allow_plaintext` lets a plain
    /// part of an encrypted set through). Reads the whole file once.
    pub fn check_part(&self, index: usize, allow_plaintext: bool) -> Result<()> {
        let entry = &self.manifest.parts[index];
        let path = self.part_path(index);
        let name = path.display().to_string();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(failure(
                    &path,
                    "the manifest lists this part, but it is missing".to_owned(),
                ))
            }
            Err(e) => return Err(Error::io(Stage::Source, Some(&name), e)),
        };
        let mut hasher = Sha256::new();
        let mut first = Vec::with_capacity(SNIFF_LEN);
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(Stage::Source, Some(&name), e)),
            };
            if first.len() < SNIFF_LEN {
                let take = (SNIFF_LEN - first.len()).min(n);
                first.extend_from_slice(&buf[..take]);
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        compare(&path, entry, total, &hex(&hasher.finalize()))?;
        match (self.is_encrypted(), is_encrypted(&first)) {
            (true, false) if !allow_plaintext => Err(failure(
                &path,
                not_encrypted("the manifest says the parts are encrypted"),
            )),
            (false, true) => Err(failure(&path, unexpectedly_encrypted())),
            _ => Ok(()),
        }
    }

    /// Opens part `index` for reading: what is read from the file is hashed again, and
    /// [`PartGuard::finish`], called once the part's decoder is done, compares size and SHA-256 once more,
    /// so that a part changed after [`PartSet::check_part`] still fails the run.
    pub fn open_part(&self, index: usize) -> Result<(DigestReader, PartGuard)> {
        let path = self.part_path(index);
        let name = path.display().to_string();
        let file = File::open(&path).map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
        // A second handle on the same open file shares its position: the guard reads whatever the decoder
        // left unread.
        let rest = file
            .try_clone()
            .map_err(|e| Error::io(Stage::Source, Some(&name), e))?;
        let digest = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let reader = DigestReader {
            file,
            digest: digest.clone(),
        };
        let guard = PartGuard {
            path,
            entry: self.manifest.parts[index].clone(),
            rest,
            digest,
        };
        Ok((reader, guard))
    }
}

type SharedDigest = Arc<Mutex<(Sha256, u64)>>;

/// A part's file, hashing every byte read from it.
pub struct DigestReader {
    file: File,
    digest: SharedDigest,
}

impl Read for DigestReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut digest = self
            .digest
            .lock()
            .map_err(|_| io::Error::other("a part's digest lock was poisoned"))?;
        digest.0.update(&buf[..n]);
        digest.1 += n as u64;
        Ok(n)
    }
}

/// Compares a part, once read, with its manifest entry.
pub struct PartGuard {
    path: PathBuf,
    entry: PartEntry,
    rest: File,
    digest: SharedDigest,
}

impl PartGuard {
    /// Hashes what the decoder did not read (trailing bytes count too) and compares size and SHA-256 with the
    /// manifest. Call it after the part's decoder has been dropped.
    pub fn finish(mut self) -> Result<()> {
        let name = self.path.display().to_string();
        let mut buf = vec![0u8; 64 * 1024];
        let mut digest = self
            .digest
            .lock()
            .map_err(|_| failure(&self.path, "a part's digest lock was poisoned".to_owned()))?;
        loop {
            match self.rest.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    digest.0.update(&buf[..n]);
                    digest.1 += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(Stage::Source, Some(&name), e)),
            }
        }
        let (hasher, bytes) = std::mem::take(&mut *digest);
        let sha256 = hex(&hasher.finalize());
        compare(&self.path, &self.entry, bytes, &sha256).map_err(|_| {
            failure(
                &self.path,
                "the part changed while it was read: its size or SHA-256 no longer matches the manifest"
                    .to_owned(),
            )
        })
    }
}

fn compare(path: &Path, entry: &PartEntry, bytes: u64, sha256: &str) -> Result<()> {
    if bytes != entry.bytes {
        return Err(failure(
            path,
            format!(
                "its size is {bytes} bytes, but the manifest says {}",
                entry.bytes
            ),
        ));
    }
    if sha256 != entry.sha256 {
        return Err(failure(
            path,
            format!(
                "its SHA-256 is {sha256}, but the manifest says {}",
                entry.sha256
            ),
        ));
    }
    Ok(())
}

fn failure(path: &Path, message: String) -> Error {
    Error::data(
        Stage::Source,
        Position::file(path.display().to_string()),
        message,
    )
}

/// The checks on the parts list that need no file: every name a plain file name, the names
/// `<stem>-00001<ext>`, `<stem>-00002<ext>` … in order with no gap or repeat, SHA-256 digests well formed,
/// record counts adding up to the total.
fn check_parts(parts: &[PartEntry], total: u64) -> std::result::Result<(), String> {
    let Some(first) = parts.first() else {
        return Err("the manifest lists no parts".to_owned());
    };
    for part in parts {
        if !is_plain_file_name(&part.file) {
            return Err(format!(
                "the manifest names a part {:?}: part names must be plain file names in the manifest's \
                 folder (no folder separators, no .., no absolute paths)",
                part.file
            ));
        }
        if part.sha256.len() != 64
            || !part
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "the manifest's SHA-256 of {} is not 64 lowercase hex digits",
                part.file
            ));
        }
    }
    let (stem, suffix) = numbered(&first.file).ok_or_else(|| {
        format!(
            "the manifest's first part is {}, not a name numbered like NAME-00001.EXT",
            first.file
        )
    })?;
    for (i, part) in parts.iter().enumerate() {
        let expected = format!("{stem}-{:05}{suffix}", i + 1);
        if part.file != expected {
            return Err(format!(
                "the manifest lists {} as part {}, where {expected} belongs: parts are named \
                 {stem}-00001{suffix}, {stem}-00002{suffix} … in order, each once (was the manifest edited?)",
                part.file,
                i + 1
            ));
        }
    }
    let sum = parts
        .iter()
        .try_fold(0u64, |sum, p| sum.checked_add(p.records))
        .ok_or("the manifest's record counts overflow")?;
    if sum != total {
        return Err(format!(
            "the manifest's parts hold {sum} records, but its total says {total}"
        ));
    }
    Ok(())
}

/// True for a name that is one plain file name: not empty, no separator (`/` or `\`), not `.` or `..`, not
/// absolute, no drive.
fn is_plain_file_name(name: &str) -> bool {
    let mut components = Path::new(name).components();
    !name.contains(['/', '\\', '\0'])
        && matches!(
            (components.next(), components.next()),
            (Some(Component::Normal(n)), None) if n == name
        )
}

/// Splits a part's name at its last `-` and number of five or more digits that ends the name or comes
/// before a `.`: the stem and the extension chain every part of the set shares.
fn numbered(name: &str) -> Option<(&str, &str)> {
    name.rmatch_indices('-')
        .map(|(at, _)| at)
        .find(|&at| {
            let rest = &name[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            digits >= 5 && (digits == rest.len() || rest.as_bytes()[digits] == b'.')
        })
        .map(|at| {
            let rest = &name[at + 1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            (&name[..at], &rest[digits..])
        })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::split::{EncryptionInfo, ManifestHead};
    use crate::envelope::Key;

    fn part(file: &str, records: u64) -> PartEntry {
        PartEntry {
            file: file.to_owned(),
            records,
            bytes: 100,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn part_names_are_plain_and_in_sequence() {
        let ok = [part("x-00001.ndjson.gz", 2), part("x-00002.ndjson.gz", 1)];
        assert_eq!(check_parts(&ok, 3), Ok(()));
        assert_eq!(check_parts(&[part("x-00001", 0)], 0), Ok(()));
        let nested = [part("a-00001-00001.csv", 0), part("a-00001-00002.csv", 0)];
        assert_eq!(check_parts(&nested, 0), Ok(()));
        for bad in [
            vec![part("x-00002.csv", 0), part("x-00001.csv", 0)],
            vec![part("x-00001.csv", 0), part("x-00003.csv", 0)],
            vec![part("x-00001.csv", 0), part("x-00001.csv", 0)],
            vec![part("x-00001.csv", 0), part("y-00002.csv", 0)],
            vec![part("x-00001.csv", 0), part("x-00002.ndjson", 0)],
            vec![part("x-1.csv", 0)],
            vec![],
        ] {
            assert!(check_parts(&bad, 0).is_err(), "{bad:?}");
        }
        for name in [
            "../../../x-00001.csv",
            "/etc/x-00001.csv",
            "sub/x-00001.csv",
            "sub\\x-00001.csv",
            "..",
            ".",
            "",
        ] {
            let err = check_parts(&[part(name, 0)], 0).unwrap_err();
            assert!(err.contains("plain file names"), "{name}: {err}");
        }
        assert!(check_parts(&ok, 4).unwrap_err().contains("total"));
        let mut upper = part("x-00001.csv", 0);
        upper.sha256 = "AB".repeat(32);
        assert!(check_parts(&[upper], 0).is_err());
    }

    fn sample() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            ferry_version: "0.1.0".to_owned(),
            created: "2024-06-01T12:00:00Z".to_owned(),
            head: ManifestHead {
                format: "ndjson".to_owned(),
                compression: "gzip".to_owned(),
                encryption: Some(EncryptionInfo {
                    algorithm: "AES-256-GCM".to_owned(),
                    kdf: "none".to_owned(),
                }),
                template: None,
                schema: None,
            },
            total_records: 3,
            parts: vec![
                PartEntry {
                    file: "x-00001.ndjson.gz.enc".to_owned(),
                    records: 2,
                    bytes: 120,
                    sha256: hex(&Sha256::digest(b"part one")),
                },
                PartEntry {
                    file: "x-00002.ndjson.gz.enc".to_owned(),
                    records: 1,
                    bytes: 90,
                    sha256: hex(&Sha256::digest(b"part two")),
                },
            ],
            incremental: None,
            mac: None,
        }
    }

    /// A one-part plain set in `dir`, holding `content`.
    fn one_part_set(dir: &Path, content: &[u8]) -> PartSet {
        std::fs::write(dir.join("x-00001.ndjson"), content).unwrap();
        let mut manifest = sample();
        manifest.head.encryption = None;
        manifest.head.compression = "none".to_owned();
        manifest.total_records = 1;
        manifest.parts = vec![PartEntry {
            file: "x-00001.ndjson".to_owned(),
            records: 1,
            bytes: content.len() as u64,
            sha256: hex(&Sha256::digest(content)),
        }];
        let path = dir.join("x.manifest.json");
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
        PartSet::open(&path).unwrap()
    }

    #[test]
    fn a_part_is_checked_before_and_after_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"{\"id\":1,\"name\":\"one\"}\n";
        let set = one_part_set(dir.path(), content);
        set.check_part(0, false).unwrap();
        // A decoder that stops early: the guard reads and hashes the rest itself.
        let (mut reader, guard) = set.open_part(0).unwrap();
        let mut start = [0u8; 5];
        reader.read_exact(&mut start).unwrap();
        drop(reader);
        guard.finish().unwrap();
        // The part is changed after it was checked and before it is read: the guard catches it.
        let (mut reader, guard) = set.open_part(0).unwrap();
        std::fs::write(set.part_path(0), b"{\"id\":1,\"name\":\"two\"}\n").unwrap();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        assert_eq!(all, b"{\"id\":1,\"name\":\"two\"}\n");
        drop(reader);
        let err = guard.finish().unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
        // And the check before reading names what differs.
        let err = set.check_part(0, false).unwrap_err();
        assert!(err.to_string().contains("its SHA-256 is"), "{err}");
        std::fs::write(set.part_path(0), b"short\n").unwrap();
        let err = set.check_part(0, false).unwrap_err();
        assert!(err.to_string().contains("its size is 6 bytes"), "{err}");
        std::fs::remove_file(set.part_path(0)).unwrap();
        let err = set.check_part(0, false).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// The manifest MAC vectors in docs/encryption.md.
    #[test]
    fn mac_test_vectors_hold() {
        let manifest = sample();
        assert_eq!(hex(&canonical(&manifest)), VECTOR_CANONICAL);
        let raw = KeyMaterial::Key(Key::from_bytes(std::array::from_fn(|i| i as u8)));
        let mut sealed = manifest.clone();
        seal_with(&mut sealed, &raw, None).unwrap();
        let mac = sealed.mac.clone().unwrap();
        assert_eq!(
            (mac.kdf.as_str(), mac.tag.as_str()),
            ("none", VECTOR_TAG_RAW)
        );
        assert_eq!(
            hex(&mac_key(&std::array::from_fn(|i| i as u8)).unwrap()[..]),
            VECTOR_MAC_KEY_RAW
        );
        let phrase = KeyMaterial::Passphrase(zeroize::Zeroizing::new(
            "correct horse battery staple".to_owned(),
        ));
        let costs = Argon2Params {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let salt: Vec<u8> = (0..16).collect();
        let mut by_phrase = manifest.clone();
        by_phrase.head.encryption.as_mut().unwrap().kdf = "argon2id".to_owned();
        seal_with(&mut by_phrase, &phrase, Some((costs, salt))).unwrap();
        assert_eq!(by_phrase.mac.as_ref().unwrap().tag, VECTOR_TAG_PASSPHRASE);
    }

    const VECTOR_CANONICAL: &str = "46455252594d414e0000000200000005302e312e3000000014323032342d30362d30315431323a30303a30305a000000066e646a736f6e00000004677a6970010000000b4145532d3235362d47434d000000046e6f6e6500000000000000000003000000000000000200000015782d30303030312e6e646a736f6e2e677a2e656e6300000000000000020000000000000078000000406665643766303563313062633935643539376536663831303332323863346331303739386235663737323135663731386138353435333464613536336463396500000015782d30303030322e6e646a736f6e2e677a2e656e630000000000000001000000000000005a0000004065613536383363626135383033356634663362393337303233636261373034663062653437363662616361356464346465656534363062646431303931373431";
    const VECTOR_MAC_KEY_RAW: &str =
        "54f7918f45b2b1f43b1b7851727d5d28c7dd749d86531f59e0690ab66f519aed";
    const VECTOR_TAG_RAW: &str = "311e6e07a31746e4c2148e67299e010128b8f1a1c4a2dbd406d50183736e0c6f";
    const VECTOR_TAG_PASSPHRASE: &str =
        "82a411364d36e942f075537c925df966a453f14d677a430f333a143664475b18";

    #[test]
    fn a_sealed_manifest_authenticates_and_any_change_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest.json");
        let key = KeyMaterial::Key(Key::from_bytes([9; 32]));
        let mut manifest = sample();
        seal(&mut manifest, &key).unwrap();
        let write = |m: &Manifest| std::fs::write(&path, serde_json::to_vec(m).unwrap()).unwrap();
        write(&manifest);
        PartSet::open(&path).unwrap().authenticate(&key).unwrap();
        let phrase = KeyMaterial::Passphrase(zeroize::Zeroizing::new("pw".to_owned()));
        let mut by_phrase = sample();
        seal_with(
            &mut by_phrase,
            &phrase,
            Some((
                Argon2Params {
                    m_cost_kib: 64,
                    t_cost: 1,
                    p_cost: 1,
                },
                vec![7; 16],
            )),
        )
        .unwrap();
        write(&by_phrase);
        PartSet::open(&path).unwrap().authenticate(&phrase).unwrap();
        type Change = Box<dyn Fn(&mut Manifest)>;
        let changes: Vec<Change> = vec![
            Box::new(|m| m.parts[0].records += 1),
            Box::new(|m| m.parts[1].sha256 = hex(&Sha256::digest(b"other"))),
            Box::new(|m| m.parts[0].bytes -= 1),
            Box::new(|m| m.created.push('x')),
            Box::new(|m| m.head.template = Some("t 1".into())),
            Box::new(|m| m.head.compression = "zstd".into()),
        ];
        for change in changes {
            let mut altered = manifest.clone();
            change(&mut altered);
            altered.total_records = altered.parts.iter().map(|p| p.records).sum();
            write(&altered);
            let err = PartSet::open(&path)
                .unwrap()
                .authenticate(&key)
                .unwrap_err();
            assert!(err.to_string().contains("failed authentication"), "{err}");
        }
        // Without its MAC, an encrypted manifest is refused outright.
        let mut bare = manifest.clone();
        bare.mac = None;
        write(&bare);
        assert!(PartSet::open(&path)
            .unwrap_err()
            .to_string()
            .contains("carries no MAC"));
    }
}
