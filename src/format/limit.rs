//! The decode stage's size caps: one record may take at most `--max-record-size` bytes of input, and a
//! format read whole (YAML, Markdown) at most `--max-document-size`, so that memory stays bounded by the
//! limits whatever the input — a 10 GiB line of a decompressed bomb stops at the cap, not at the machine's
//! memory.
//!
//! Decoders that own their reading loop (CSV, NDJSON) count a record's bytes themselves. Decoders whose
//! parser pulls bytes (JSON's serde_json, XML's quick-xml) read through a [`Limited`] reader, which refuses
//! to hand out more once the current record has taken more than the limit; the decoder marks each record's
//! start on its [`Budget`] and turns the refusal into [`too_large`].

use std::io::{self, BufRead, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Position, Stage};

/// The default `--max-record-size`: 64 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 64 << 20;

/// The default `--max-document-size` (formats read whole: YAML, Markdown): 64 MiB. Parsing takes some 15
/// (Markdown) to 30 (YAML) times the document's size in memory, so this is already about 2 GB.
pub const DEFAULT_MAX_DOCUMENT_SIZE: u64 = 64 << 20;

/// The most fields one record, or one object inside a record, may have (CSV and Markdown columns, JSON and
/// YAML object keys, XML attributes and child names of one element): far above any real table's columns,
/// low enough that one record cannot take gigabytes of memory (a field costs some 50 bytes however few
/// bytes of input it took).
pub const MAX_FIELDS: usize = 1 << 20;

/// The deepest nesting of arrays and objects (JSON, YAML) or elements (XML) a record may have: serde_json's
/// own limit, which bounds the parsers' recursion.
pub const MAX_DEPTH: usize = 128;

/// The message for a record or object with more than [`MAX_FIELDS`] fields.
pub fn too_many_fields() -> String {
    format!(
        "the record has more than {MAX_FIELDS} fields (ferry's limit for one record or one object in it)"
    )
}

/// The message for nesting deeper than [`MAX_DEPTH`].
pub fn too_deep() -> String {
    format!("the record nests deeper than {MAX_DEPTH} levels (ferry's limit)")
}

/// serde_json's "recursion limit exceeded" (it stops at [`MAX_DEPTH`]) in ferry's words;
/// other messages as they are.
pub fn clear_depth_message(message: String) -> String {
    if message.starts_with("recursion limit exceeded") {
        too_deep()
    } else {
        message
    }
}

/// A size as messages show it: `64 MiB`, or bytes when it is not a whole number of KiB.
pub fn shown_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The error for a record larger than `limit`: it names the record and where it starts.
pub fn too_large(position: Position, limit: u64) -> Error {
    Error::data(
        Stage::Decode,
        position,
        format!(
            "the record is larger than the limit of {} (--max-record-size); raise the limit if records this \
             large are expected",
            shown_size(limit)
        ),
    )
}

/// Reads a whole input (YAML, Markdown) of at most `limit` bytes.
pub fn read_whole(
    reader: &mut dyn BufRead,
    limit: u64,
    name: &str,
    format: &str,
) -> crate::error::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(Stage::Decode, Some(name), e))?;
    if bytes.len() as u64 > limit {
        let message = format!(
            "the {format} document is larger than the limit of {} (--max-document-size): {format} is read \
             whole into memory; raise the limit, or use a streamed format such as NDJSON or CSV",
            shown_size(limit)
        );
        return Err(Error::data(Stage::Decode, Position::file(name), message));
    }
    Ok(bytes)
}

/// The decoder's handle on its [`Limited`] reader: marks where each record starts, and reads back what
/// happened.
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

/// What the decoder and the reader share. The reader keeps its counts to itself (it runs for every byte a
/// parser pulls, one at a time for serde_json) and looks at one flag per call.
#[derive(Debug)]
struct Shared {
    limit: u64,
    /// Set by [`Budget::next_record`]; the reader starts a new record at its next call.
    mark: AtomicBool,
    /// The line the current record starts on (0-based), once its first byte has been handed out.
    start_line: AtomicU64,
    exceeded: AtomicBool,
}

/// Bytes between records that are not part of one: whitespace, and a JSON array's `[` and `,`.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'[')
}

impl Budget {
    /// Marks the start of the next record: what the parser takes from now on counts against it.
    pub fn next_record(&self) {
        self.shared.mark.store(true, Ordering::Relaxed);
    }

    /// True once the reader refused to go on because the current record passed the limit.
    pub fn exceeded(&self) -> bool {
        self.shared.exceeded.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.shared.limit
    }

    /// The 1-based line the current record starts on: its first byte that is not whitespace (or a JSON
    /// array's `[` or `,`).
    pub fn record_line(&self) -> u64 {
        self.shared.start_line.load(Ordering::Relaxed) + 1
    }
}

/// A reader that refuses more bytes once the current record has taken more than its budget's limit.
///
/// It reads `inner` in blocks into a buffer of its own, so that a parser pulling one byte at a time
/// (serde_json) pays a few instructions per byte rather than a call into the reader below.
pub struct Limited<R> {
    inner: R,
    buf: Box<[u8]>,
    /// The bytes not yet handed out: `buf[pos..end]`.
    pos: usize,
    end: usize,
    counts: Counts,
}

/// The size of [`Limited`]'s buffer.
const BLOCK: usize = 64 * 1024;

/// The reader's own counts.
struct Counts {
    shared: Arc<Shared>,
    /// Bytes handed to the parser so far, and when the current record started.
    consumed: u64,
    start: u64,
    /// Line breaks handed out so far.
    lines: u64,
    /// True until the current record's first byte (not a separator) has been handed out.
    seeking: bool,
}

impl<R> Limited<R> {
    /// Wraps `inner`; the budget marks record starts.
    pub fn new(inner: R, limit: u64) -> (Limited<R>, Budget) {
        let shared = Arc::new(Shared {
            limit,
            mark: AtomicBool::new(false),
            start_line: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        });
        let budget = Budget {
            shared: shared.clone(),
        };
        let counts = Counts {
            shared,
            consumed: 0,
            start: 0,
            lines: 0,
            seeking: true,
        };
        let reader = Limited {
            inner,
            buf: vec![0; BLOCK].into_boxed_slice(),
            pos: 0,
            end: 0,
            counts,
        };
        (reader, budget)
    }
}

impl Counts {
    /// How many more bytes the current record may take: one past the limit, so that a record of exactly
    /// the limit can still be told from a larger one. Fails once the record has passed the limit.
    #[inline]
    fn allowance(&mut self) -> io::Result<usize> {
        if self.shared.mark.load(Ordering::Relaxed) {
            self.shared.mark.store(false, Ordering::Relaxed);
            self.start = self.consumed;
            self.seeking = true;
        }
        let used = self.consumed - self.start;
        let limit = self.shared.limit;
        if used > limit {
            self.shared.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other(
                "the record is larger than --max-record-size",
            ));
        }
        Ok(usize::try_from(limit - used + 1).unwrap_or(usize::MAX))
    }

    /// Counts bytes handed to the parser.
    #[inline]
    fn count(&mut self, taken: &[u8]) {
        let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        if self.seeking {
            if let Some(first) = taken.iter().position(|&b| !is_separator(b)) {
                let line = self.lines + newlines(&taken[..first]);
                self.shared.start_line.store(line, Ordering::Relaxed);
                self.seeking = false;
            }
        }
        self.consumed += taken.len() as u64;
        self.lines += newlines(taken);
    }
}

impl<R: Read> Read for Limited<R> {
    #[inline]
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // serde_json's way: one byte at a time, from the buffer, well within the record's budget.
        if let ([slot], Some(&byte)) = (&mut *out, self.buf[..self.end].get(self.pos)) {
            let c = &mut self.counts;
            if !c.seeking
                && c.consumed - c.start < c.shared.limit
                && !c.shared.mark.load(Ordering::Relaxed)
            {
                *slot = byte;
                self.pos += 1;
                c.consumed += 1;
                c.lines += u64::from(byte == b'\n');
                return Ok(1);
            }
        }
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Limited<R> {
    #[inline]
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let allowed = self.counts.allowance()?;
        if self.pos == self.end {
            self.end = self.inner.read(&mut self.buf)?;
            self.pos = 0;
        }
        let end = self.end.min(self.pos.saturating_add(allowed));
        Ok(&self.buf[self.pos..end])
    }

    #[inline]
    fn consume(&mut self, amount: usize) {
        let amount = amount.min(self.end - self.pos);
        self.counts.count(&self.buf[self.pos..self.pos + amount]);
        self.pos += amount;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_may_take_its_limit_and_no_more() {
        let data = b"abcdef\nghijklmnopq\n".to_vec();
        let (mut reader, budget) = Limited::new(io::Cursor::new(data), 8);
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        assert_eq!(line, b"abcdef\n");
        budget.next_record();
        line.clear();
        let err = reader.read_until(b'\n', &mut line).unwrap_err();
        assert!(budget.exceeded(), "{err}");
        assert_eq!(budget.record_line(), 2);
        assert_eq!(
            line, b"ghijklmno",
            "the parser saw one byte past the limit, no more"
        );
    }

    #[test]
    fn sizes_are_shown_in_their_unit() {
        assert_eq!(shown_size(64 << 20), "64 MiB");
        assert_eq!(shown_size(1 << 30), "1 GiB");
        assert_eq!(shown_size(2048), "2 KiB");
        assert_eq!(shown_size(100), "100 bytes");
    }
}
