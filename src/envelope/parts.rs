//! The read side of splitting: a split set's parts, in the manifest's order, as one stream of records.
//! Each part is checked whole (size, SHA-256, encryption) before a byte of it is decoded, hashed again as it
//! is read, and its record count compared with the manifest's at its end; the caller turns each part's
//! bytes into records (envelope layers and format decoder).

use super::manifest::{DigestReader, PartGuard, PartSet};
use crate::error::{Error, Position, Result, Stage};
use crate::format::Decoder;
use crate::record::Record;

/// Turns part `index`'s bytes into records.
pub type DecodePart = Box<dyn FnMut(usize, DigestReader) -> Result<Box<dyn Decoder>> + Send>;

/// Reads the parts a manifest lists, in order, as one input.
pub struct PartsDecoder {
    set: PartSet,
    allow_plaintext: bool,
    next: usize,
    /// The part being read, its guard and the records read from it so far.
    current: Option<(Box<dyn Decoder>, PartGuard, u64)>,
    decode: DecodePart,
}

impl PartsDecoder {
    /// Reads the parts of `set`; `allow_plaintext` lets an encrypted set's part be read as it is, and
    /// `decode` makes each part's records.
    pub fn new(set: PartSet, allow_plaintext: bool, decode: DecodePart) -> PartsDecoder {
        PartsDecoder {
            set,
            allow_plaintext,
            next: 0,
            current: None,
            decode,
        }
    }

    /// Checks and opens part `index`.
    fn open(&mut self, index: usize) -> Result<(Box<dyn Decoder>, PartGuard)> {
        // The whole part is checked before a byte of it is decoded, and again as it is read.
        self.set.check_part(index, self.allow_plaintext)?;
        let (raw, guard) = self.set.open_part(index)?;
        Ok(((self.decode)(index, raw)?, guard))
    }

    /// Ends the current part: its bytes and its record count must be the manifest's.
    fn end_part(&mut self) -> Result<()> {
        let Some((decoder, guard, read)) = self.current.take() else {
            return Ok(());
        };
        drop(decoder);
        guard.finish()?;
        let index = self.next - 1;
        let expected = self.set.manifest().parts[index].records;
        if read != expected {
            return Err(Error::data(
                Stage::Source,
                Position::file(self.set.part_path(index).display().to_string()),
                format!("the manifest lists {expected} records in this part, but it holds {read}"),
            ));
        }
        Ok(())
    }
}

/// A record goes back to the decoder of the part being read.
impl Decoder for PartsDecoder {
    fn reuse(&mut self, record: Record) {
        if let Some((decoder, _, _)) = &mut self.current {
            decoder.reuse(record);
        }
    }
}

impl Iterator for PartsDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some((decoder, _, count)) = &mut self.current {
                if let Some(item) = decoder.next() {
                    *count += 1;
                    return Some(item);
                }
                if let Err(e) = self.end_part() {
                    self.next = self.set.len(); // nothing after a part that fails
                    return Some(Err(e));
                }
            }
            if self.next >= self.set.len() {
                return None;
            }
            let index = self.next;
            self.next += 1;
            match self.open(index) {
                Ok((decoder, guard)) => self.current = Some((decoder, guard, 0)),
                Err(e) => {
                    self.next = self.set.len(); // nothing after a part that cannot be opened
                    return Some(Err(e));
                }
            }
        }
    }
}
