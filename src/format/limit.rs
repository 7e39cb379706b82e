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

/// The default `--max-document-size` (formats read whole: YAML, Markdown): 256 MiB.
pub const DEFAULT_MAX_DOCUMENT_SIZE: u64 = 256 << 20;

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

/// Where the current record started, shared between a decoder and its [`Limited`] reader.
#[derive(Debug, Clone)]
pub struct Budget {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    limit: u64,
    /// Bytes handed to the parser so far.
    consumed: AtomicU64,
    /// Line breaks among them (for positions, where the parser has none).
    lines: AtomicU64,
    /// `consumed` when the current record started.
    start: AtomicU64,
    /// Line breaks before the current record's first byte.
    start_lines: AtomicU64,
    /// True until the current record's first byte (not a separator) has been handed out.
    seeking: AtomicBool,
    exceeded: AtomicBool,
}

/// Bytes between records that are not part of one: whitespace, and a JSON array's `[` and `,`.
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'[')
}

impl Budget {
    /// Marks the start of the next record: what the parser takes from now on counts against it.
    pub fn next_record(&self) {
        let s = &self.state;
        s.start
            .store(s.consumed.load(Ordering::Relaxed), Ordering::Relaxed);
        s.start_lines
            .store(s.lines.load(Ordering::Relaxed), Ordering::Relaxed);
        s.seeking.store(true, Ordering::Relaxed);
    }

    /// True once the reader refused to go on because the current record passed the limit.
    pub fn exceeded(&self) -> bool {
        self.state.exceeded.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.state.limit
    }

    /// The 1-based line the current record starts on: its first byte that is not whitespace (or a JSON
    /// array's `[` or `,`).
    pub fn record_line(&self) -> u64 {
        self.state.start_lines.load(Ordering::Relaxed) + 1
    }
}

impl State {
    /// Counts bytes handed to the parser. There is one writer (the decoding thread), so plain loads and
    /// stores do.
    fn count(&self, taken: &[u8]) {
        let newlines = |bytes: &[u8]| bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        let lines = self.lines.load(Ordering::Relaxed);
        if self.seeking.load(Ordering::Relaxed) {
            if let Some(first) = taken.iter().position(|&b| !is_separator(b)) {
                let before = lines + newlines(&taken[..first]);
                self.start_lines.store(before, Ordering::Relaxed);
                self.seeking.store(false, Ordering::Relaxed);
            }
        }
        let consumed = self.consumed.load(Ordering::Relaxed) + taken.len() as u64;
        self.consumed.store(consumed, Ordering::Relaxed);
        self.lines.store(lines + newlines(taken), Ordering::Relaxed);
    }
}

/// A reader that refuses more bytes once the current record has taken more than its budget's limit.
pub struct Limited<R> {
    inner: R,
    state: Arc<State>,
}

impl<R> Limited<R> {
    /// Wraps `inner`; the budget marks record starts.
    pub fn new(inner: R, limit: u64) -> (Limited<R>, Budget) {
        let state = Arc::new(State {
            limit,
            consumed: AtomicU64::new(0),
            lines: AtomicU64::new(0),
            start: AtomicU64::new(0),
            start_lines: AtomicU64::new(0),
            seeking: AtomicBool::new(true),
            exceeded: AtomicBool::new(false),
        });
        let budget = Budget {
            state: state.clone(),
        };
        (Limited { inner, state }, budget)
    }

    /// How many more bytes the current record may take: one past the limit, so that a record of exactly
    /// the limit can still be told from a larger one. Fails once the record has passed the limit.
    fn allowance(&self) -> io::Result<usize> {
        let s = &self.state;
        let used = s.consumed.load(Ordering::Relaxed) - s.start.load(Ordering::Relaxed);
        if used > s.limit {
            s.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other(
                "the record is larger than --max-record-size",
            ));
        }
        Ok(usize::try_from(s.limit - used + 1).unwrap_or(usize::MAX))
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let allowed = self.allowance()?.min(buf.len());
        let n = self.inner.read(&mut buf[..allowed])?;
        self.state.count(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Limited<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let allowed = self.allowance()?;
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..allowed.min(buf.len())])
    }

    fn consume(&mut self, amount: usize) {
        // The bytes are still in the buffer until consumed: count them first. (With `amount > 0` the
        // buffer holds them, so this reads nothing new.)
        if amount == 0 {
            return;
        }
        if let Ok(buf) = self.inner.fill_buf() {
            self.state.count(&buf[..amount.min(buf.len())]);
        }
        self.inner.consume(amount);
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
        assert_eq!(budget.record_line(), 2);
        line.clear();
        let err = reader.read_until(b'\n', &mut line).unwrap_err();
        assert!(budget.exceeded(), "{err}");
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
