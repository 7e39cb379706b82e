//! Entry points for fuzzing: each takes arbitrary bytes into one stage of the pipeline (a decoder, the
//! envelope reader, the manifest check, the template loader, the expression compiler, the SQL translators)
//! and returns normally whatever the bytes are. A panic, a hang or an unbounded allocation is a bug.
//!
//! The fuzz targets under `fuzz/` call these functions, and so does the test that replays every seed and
//! regression input on stable (`tests/it/hardening.rs`), so the two can never test different code. Where a
//! stage has a property stronger than "no panic", the function asserts it: a tampered encrypted file always
//! fails, an untampered one always gives back its plaintext; a decoder never yields more items than its input
//! has bytes (which would mean it stopped making progress); a translated PostgreSQL expression translates to
//! itself.
//!
//! The first byte of a decoder's input chooses its options, so that one corpus covers the option space.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use crate::envelope::layers::{unwrap_reader, Expect, InputKey, ReadLayers};
use crate::envelope::{
    CompressWriter, Compression, CompressionSpec, EncryptOptions, EncryptWriter, Key, KeyMaterial,
};
use crate::format::{by_name, FormatOptions, Input};
use crate::sink::Memory;

/// The limits decoders get under fuzzing: small, so that an input that would make a decoder allocate
/// without bound runs into them within the fuzzer's memory limit.
const MAX_RECORD: u64 = 64 << 10;
const MAX_DOCUMENT: u64 = 256 << 10;
/// What the envelope reader may decompress under fuzzing.
const MAX_DECOMPRESSED: u64 = 4 << 20;

/// The fuzzers' fixed encryption key (hex), so that seed files encrypted with it reach the chunk code.
pub const KEY_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// The names of the fuzz targets, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[&str] = &[
    "csv",
    "json",
    "ndjson",
    "xml",
    "yaml",
    "markdown",
    "envelope",
    "manifest",
    "template",
    "expression",
    "sql_sqlite_to_pg",
    "sql_pg_to_sqlite",
    "http_upload",
];

/// Runs the target called `name` on `data`; false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "csv" | "json" | "ndjson" | "xml" | "yaml" | "markdown" => decode(name, data),
        "envelope" => envelope(data),
        "manifest" => manifest(data),
        "template" => template(data),
        "expression" => expression(data),
        "sql_sqlite_to_pg" => sql_sqlite_to_pg(data),
        "sql_pg_to_sqlite" => sql_pg_to_sqlite(data),
        "http_upload" => http_upload(data),
        _ => return false,
    }
    true
}

/// The format options the first byte selects (CSV dialect switches; JSON cells for CSV and Markdown).
fn options_from(selector: u8) -> FormatOptions {
    let bit = |n: u8| selector & (1 << n) != 0;
    FormatOptions {
        header: !bit(0),
        allow_ragged: bit(1),
        json_cells: bit(2),
        comment: bit(3).then_some(b'#'),
        escape: bit(4).then_some(b'\\'),
        delimiter: bit(5).then_some(b';'),
        csv_lenient_quotes: bit(6),
        encoding: bit(7).then(|| "windows-1252".to_owned()),
        max_record_size: MAX_RECORD,
        max_document_size: MAX_DOCUMENT,
        ..FormatOptions::default()
    }
}

/// Decodes `data` (after its option byte) as `format`, then encodes every record it gave back into the same
/// format. Errors are fine; panics are not, nor is a decoder that yields more items than it has bytes.
pub fn decode(format: &str, data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(format) = by_name(format) else {
        panic!("no format {format:?}");
    };
    let options = options_from(selector);
    let input = Input {
        reader: Box::new(std::io::Cursor::new(body.to_vec())),
        name: "fuzz".to_owned(),
        file: None,
    };
    let Ok(decoder) = format.decode(input, &options) else {
        return;
    };
    let sink = Memory::default();
    let mut encoder = format.encode(Box::new(sink.clone()), &options).ok();
    let mut items = 0usize;
    for item in decoder {
        items += 1;
        assert!(
            items <= body.len() + 2,
            "the decoder yielded {items} items from {} bytes: it is not making progress",
            body.len()
        );
        match item {
            Ok(record) => {
                if let Some(e) = encoder.as_mut() {
                    if e.write_record(&record).is_err() {
                        encoder = None;
                    }
                }
            }
            Err(e) => {
                let text = e.to_string();
                assert!(!text.contains("internal error"), "{text}");
            }
        }
    }
    if let Some(e) = encoder {
        let _ = e.finish();
    }
}

/// The fuzz key as key material.
fn fuzz_key() -> KeyMaterial {
    KeyMaterial::Key(Key::parse(KEY_HEX).unwrap_or_else(|| Key::from_bytes([7; 32])))
}

/// The fuzz key, as the envelope reader takes it.
fn input_key() -> &'static InputKey {
    static KEY: OnceLock<InputKey> = OnceLock::new();
    KEY.get_or_init(|| InputKey::Ready(std::sync::Arc::new(fuzz_key())))
}

/// Reads `data` through the envelope layers the way an input file is read, to its end.
fn read_envelope(data: Vec<u8>, named: Compression, expect: Expect) -> std::io::Result<Vec<u8>> {
    let layers = ReadLayers {
        key: input_key(),
        named,
        declared: false,
        expect,
        max_decompressed: MAX_DECOMPRESSED,
    };
    let mut reader = unwrap_reader(Box::new(std::io::Cursor::new(data)), &layers, "fuzz")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut out = Vec::new();
    reader.read_to_end(&mut out)?;
    Ok(out)
}

const COMPRESSIONS: [Compression; 4] = [
    Compression::None,
    Compression::Gzip,
    Compression::Brotli,
    Compression::Zstd,
];

/// The envelope reader. Even first bytes: the rest is read as an input file (encrypted with the fuzz key or
/// not, compressed or not) and must end in data or an error. Odd first bytes: the rest is a plaintext and a
/// list of alterations; the plaintext is compressed and encrypted in small chunks, altered, and read back —
/// an altered file must fail, an unaltered one must give back exactly its plaintext.
pub fn envelope(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let compression = COMPRESSIONS[usize::from(mode >> 1) % 4];
    if mode & 1 == 0 {
        let _ = read_envelope(body.to_vec(), compression, Expect::Either);
        return;
    }
    tampered_envelope(compression, mode >> 3, body);
}

/// See [`envelope`]: `body` is `[chunk size][alteration count n][n × (position u16, xor byte)][plaintext]`.
fn tampered_envelope(compression: Compression, truncate: u8, body: &[u8]) {
    let [chunk, count, rest @ ..] = body else {
        return;
    };
    let alterations = usize::from(*count % 4);
    let Some((edits, plaintext)) = rest.split_at_checked(alterations * 3) else {
        return;
    };
    // ferry tells gzip and zstd by their magic bytes, so an uncompressed plaintext that starts with them is
    // read as compressed, by design: not a plaintext this round trip can give back.
    if compression == Compression::None && Compression::detect(plaintext) != Compression::None {
        return;
    }
    let sealed = match seal(plaintext, compression, u32::from(*chunk % 64) + 1) {
        Ok(sealed) => sealed,
        Err(e) => panic!("writing the envelope failed: {e}"),
    };
    let mut altered = sealed.clone();
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([edit[0], edit[1]]));
        if let Some(byte) = altered.get_mut(at % sealed.len().max(1)) {
            *byte ^= edit[2];
        }
    }
    // Truncations cut 1 to 15 bytes off the end, or (every sixteenth value) append one.
    match truncate % 16 {
        0 => {}
        15 => altered.push(0),
        cut => altered.truncate(altered.len().saturating_sub(usize::from(cut))),
    }
    // As ferry reads a file named .enc, or given a key option: it must be encrypted.
    let must_be_encrypted = Expect::Encrypted("the fuzz target reads it so".to_owned());
    let result = read_envelope(altered.clone(), compression, must_be_encrypted);
    if altered == sealed {
        match result {
            Ok(out) => assert!(out == plaintext, "the envelope gave back other bytes"),
            Err(e) => panic!("an unaltered envelope failed: {e}"),
        }
    } else {
        assert!(
            result.is_err(),
            "an altered envelope was read without error"
        );
    }
}

/// Compresses and encrypts `plaintext` with the fuzz key in chunks of `chunk_size` bytes.
fn seal(plaintext: &[u8], compression: Compression, chunk_size: u32) -> std::io::Result<Vec<u8>> {
    let options = EncryptOptions {
        chunk_size,
        ..EncryptOptions::default()
    };
    let encrypt = EncryptWriter::with_options(Vec::new(), &fuzz_key(), &options)?;
    let mut writer = CompressWriter::with_threads(encrypt, CompressionSpec::new(compression), 1)?;
    writer.write_all(plaintext)?;
    writer.finish()?.finish()
}

/// A split set's manifest: parsed and checked as `--in NAME.manifest.json` and `ferry verify` check it,
/// then its MAC checked against the fuzz key.
pub fn manifest(data: &[u8]) {
    let path = Path::new("fuzz.manifest.json");
    let Ok(set) = crate::envelope::manifest::PartSet::parse(path, data) else {
        return;
    };
    let _ = crate::envelope::manifest::canonical(set.manifest());
    let _ = set.authenticate(&fuzz_key());
    for index in 0..set.len() {
        let _ = set.part_path(index);
    }
}

/// A template's YAML: loaded and compiled (fields, transforms, expressions, the schema), then one record
/// mapped through it.
pub fn template(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = crate::template::TemplateSource::Builtin("fuzz");
    let Ok(template) = crate::template::Template::parse(text, source) else {
        return;
    };
    let search = crate::template::TemplateSearch::new(&crate::Environment::empty());
    let _ = search.schema_of(&template);
    let Ok(compiled) = template.compile() else {
        return;
    };
    let now = chrono::DateTime::UNIX_EPOCH.fixed_offset();
    let evaluator = compiled.evaluator(now);
    let _ = compiled.map(&evaluator, &sample_record());
}

/// A record with a value of every kind, for templates and expressions to work on.
fn sample_record() -> crate::Record {
    use crate::Value;
    let mut record = crate::Record::new();
    record.insert("title", Value::String(" Hello, World ".into()));
    record.insert("n", Value::Int(42));
    record.insert("x", Value::Float(1.5));
    record.insert("ok", Value::Bool(true));
    record.insert("none", Value::Null);
    record.insert("date", Value::String("01/02/2024 10:30".into()));
    record.insert(
        "tags",
        Value::Array(vec![Value::String("a".into()), Value::Int(1)]),
    );
    let mut meta = crate::Record::new();
    meta.insert("k", Value::String("v".into()));
    record.insert("meta", Value::Object(meta));
    record
}

/// A CEL expression: compiled as a template's `compute` or `filter` is, then evaluated on a sample record.
pub fn expression(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = std::sync::Arc::new(cel::Env::stdlib());
    let Ok(expr) = crate::template::expr::Expression::compile(&env, text) else {
        return;
    };
    let now = chrono::DateTime::UNIX_EPOCH.fixed_offset();
    let evaluator = crate::template::expr::Evaluator::new(env, now);
    let _ = evaluator.eval(&expr, &sample_record());
}

/// SQLite's SQL read for PostgreSQL: `CREATE TABLE` and `CREATE INDEX` text, expressions and DEFAULTs, and
/// declared types. A translated expression must tokenize as PostgreSQL.
pub fn sql_sqlite_to_pg(data: &[u8]) {
    use crate::migrate::sql::sqlite;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sqlite::parse_create_table(text);
    let _ = sqlite::parse_create_index(text);
    let columns = [
        sqlite::ExprColumn {
            name: "a",
            boolean: false,
        },
        sqlite::ExprColumn {
            name: "Flag",
            boolean: true,
        },
    ];
    if let Ok(expr) = sqlite::translate_expr(text, &columns) {
        let tokens = crate::migrate::sql::tokenize(&expr, crate::migrate::sql::Dialect::Postgres);
        assert!(tokens.is_ok(), "{expr:?} from {text:?}: {tokens:?}");
    }
    for pg in [
        "bigint",
        "boolean",
        "numeric(10,2)",
        "timestamptz",
        "jsonb",
        "text",
    ] {
        if let Ok(ty) = crate::migrate::types::PgType::parse(pg) {
            let _ = sqlite::translate_default(text, &ty, &columns);
        }
    }
    let _ = crate::migrate::types::PgType::parse(text);
}

/// PostgreSQL's expressions (as `pg_get_expr` prints them) read for SQLite: CHECK bodies, DEFAULTs and
/// expressions. A translated expression translates to itself.
pub fn sql_pg_to_sqlite(data: &[u8]) {
    use crate::migrate::sql::postgres;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = postgres::check_body(text);
    let _ = postgres::translate_default(text);
    let _ = postgres::is_nextval(text);
    let columns = ["a", "Flag"];
    if let Ok(expr) = postgres::translate_expr(text, &columns) {
        let again = postgres::translate_expr(&expr, &columns);
        assert!(
            again.as_deref() == Ok(expr.as_str()),
            "{text:?} → {expr:?} → {again:?}"
        );
    }
}

/// The HTTP service's reading of an upload (`POST /api/data-migration/import` and `/validate`): the bytes
/// after the first are a `multipart/form-data` body (boundary `ferryfuzz`), taken apart as the service
/// does — the file written to a folder under the upload limit, `dataType` and the `options` JSON parsed.
/// The first byte chooses the limit (1 byte to 8 MiB), so that the 413 path is reached too.
pub fn http_upload(data: &[u8]) {
    use axum::extract::FromRequest;
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let limit = 1u64 << (selector % 24);
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/data-migration/import")
        .header("content-type", "multipart/form-data; boundary=ferryfuzz")
        .body(axum::body::Body::from(body.to_vec()));
    let Ok(request) = request else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    runtime().block_on(async {
        let Ok(form) = axum::extract::Multipart::from_request(request, &()).await else {
            return;
        };
        if let Ok(form) = crate::serve::upload::receive(form, dir.path(), limit).await {
            assert!(form.bytes <= limit, "an upload over the limit was taken");
            assert!(
                form.path.parent() == Some(dir.path()),
                "the upload was written outside its folder: {}",
                form.path.display()
            );
        }
    });
}

/// One runtime for the service's async code under fuzzing.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("no tokio runtime for fuzzing: {e}"))
    })
}
