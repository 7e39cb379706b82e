//! PostgreSQL's binary COPY format, the one codec both loaders speak (the table sink of `ferry convert` and
//! the table copy of `ferry migrate`) and the reader of `ferry migrate`'s scans: the stream header and
//! trailer, each tuple's field count, each field's length word (-1 for NULL), and the values whose wire
//! form ferry writes itself (numeric, and dates and timestamps counted from PostgreSQL's 2000-01-01 epoch).

use std::io::Read;

use bytes::{BufMut as _, BytesMut};

/// The start of every binary COPY stream: signature, flags, header extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of every binary COPY stream: a field count of -1.
pub(crate) const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub(crate) const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
pub(crate) const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Starts a tuple of `fields` fields.
#[inline]
pub(crate) fn put_tuple_start(out: &mut BytesMut, fields: i16) {
    out.put_i16(fields);
}

/// Appends a NULL field.
#[inline]
pub(crate) fn put_null(out: &mut BytesMut) {
    out.put_i32(-1);
}

/// Appends one field: NULL when `null`, else its length word, then the bytes `write` appends (the value
/// in its type's binary form), the length filled in afterwards so no value is encoded twice.
#[inline]
pub(crate) fn put_field(
    out: &mut BytesMut,
    null: bool,
    write: impl FnOnce(&mut BytesMut) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    if null {
        put_null(out);
        return Ok(());
    }
    let at = out.len();
    out.put_i32(0);
    write(out)?;
    let length = i32::try_from(out.len() - at - 4).map_err(|_| "value larger than 2 GiB")?;
    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Appends a tuple of text fields cut from a row of cells (`text`, cell `i` ending at `ends[i]`): field `j`
/// is cell `columns[j]`, or NULL for `None`. False, and nothing appended, if a cell named is not in the row
/// or is larger than a field can be.
pub(crate) fn put_text_row(
    out: &mut BytesMut,
    text: &str,
    ends: &[usize],
    columns: &[Option<usize>],
) -> bool {
    let start = out.len();
    let Ok(count) = i16::try_from(columns.len()) else {
        return false;
    };
    put_tuple_start(out, count);
    for column in columns {
        let Some(i) = *column else {
            put_null(out);
            continue;
        };
        let from = if i == 0 { Some(&0) } else { ends.get(i - 1) };
        let cell = from.zip(ends.get(i)).and_then(|(&a, &b)| text.get(a..b));
        let Some((cell, length)) = cell.and_then(|c| Some((c, i32::try_from(c.len()).ok()?)))
        else {
            out.truncate(start);
            return false;
        };
        out.put_i32(length);
        out.put_slice(cell.as_bytes());
    }
    true
}

/// The fields of one tuple as this codec writes them (`None` for NULL); `None` when the bytes are not
/// one whole tuple.
pub(crate) fn tuple_fields(tuple: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = tuple.split_first_chunk::<2>()?;
    let count = usize::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let (length, after) = rest.split_first_chunk::<4>()?;
        rest = after;
        let Ok(length) = usize::try_from(i32::from_be_bytes(*length)) else {
            fields.push(None);
            continue;
        };
        let (field, after) = (rest.get(..length)?, rest.get(length..)?);
        fields.push(Some(field));
        rest = after;
    }
    rest.is_empty().then_some(fields)
}

/// The value of an integer column `bytes` wide (2, 4 or 8; already checked to fit).
#[inline]
pub(crate) fn put_int(out: &mut BytesMut, n: i64, bytes: u8) {
    match bytes {
        2 => out.put_i16(n as i16),
        4 => out.put_i32(n as i32),
        _ => out.put_i64(n),
    }
}

/// The value of a `real` (`single`) or `double precision` column; a finite number too large for `real`
/// is refused rather than sent as infinity.
#[inline]
pub(crate) fn put_float(
    out: &mut BytesMut,
    f: f64,
    single: bool,
) -> std::result::Result<(), String> {
    if !single {
        out.put_f64(f);
        return Ok(());
    }
    let narrow = f as f32;
    if f.is_finite() && !narrow.is_finite() {
        return Err("too large for a 32-bit real".into());
    }
    out.put_f32(narrow);
    Ok(())
}

/// JSON text for a `jsonb` column (`binary`: the format version byte first) or a `json` one.
#[inline]
pub(crate) fn put_json(out: &mut BytesMut, text: &str, binary: bool) {
    if binary {
        out.put_u8(1);
    }
    out.put_slice(text.as_bytes());
}

/// A `date` given as days since 1970-01-01.
#[inline]
pub(crate) fn put_date(out: &mut BytesMut, days: i32) {
    out.put_i32(days - EPOCH_DAYS);
}

/// A `timestamp`/`timestamptz` given as microseconds since 1970-01-01 (UTC for timestamptz).
#[inline]
pub(crate) fn put_timestamp(out: &mut BytesMut, micros: i64) {
    out.put_i64(micros - EPOCH_MICROS);
}

/// Why a binary COPY stream could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection failed.
    Io(std::io::Error),
    /// The bytes are not a binary COPY stream (what is wrong).
    Broken(&'static str),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> ReadError {
        ReadError::Io(e)
    }
}

/// Reads a binary COPY stream tuple by tuple and field by field, reusing one buffer for the fields.
pub(crate) struct TupleReader<R> {
    reader: R,
    field: Vec<u8>,
}

impl<R: Read> TupleReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(mut reader: R) -> std::result::Result<TupleReader<R>, ReadError> {
        let mut header = [0u8; 19];
        reader.read_exact(&mut header)?;
        if header[..11] != HEADER[..11] {
            return Err(ReadError::Broken("has a bad header"));
        }
        let extension = u32::from_be_bytes([header[15], header[16], header[17], header[18]]);
        std::io::copy(
            &mut (&mut reader).take(extension.into()),
            &mut std::io::sink(),
        )?;
        Ok(TupleReader {
            reader,
            field: Vec::new(),
        })
    }

    /// The next tuple's field count, or `None` at the trailer.
    pub(crate) fn next_tuple(&mut self) -> std::result::Result<Option<usize>, ReadError> {
        let mut count = [0u8; 2];
        self.reader.read_exact(&mut count)?;
        match i16::from_be_bytes(count) {
            -1 => Ok(None),
            n => usize::try_from(n)
                .map(Some)
                .map_err(|_| ReadError::Broken("has a negative field count")),
        }
    }

    /// The next field's bytes (`None` for NULL), valid until the next call.
    pub(crate) fn next_field(&mut self) -> std::result::Result<Option<&[u8]>, ReadError> {
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let Ok(len) = usize::try_from(i32::from_be_bytes(len)) else {
            return Ok(None);
        };
        self.field.resize(len, 0);
        self.reader.read_exact(&mut self.field)?;
        Ok(Some(&self.field))
    }

    /// Reads the rest of the stream, so the connection stays usable after a scan that stopped early.
    pub(crate) fn drain(&mut self) -> std::result::Result<(), ReadError> {
        std::io::copy(&mut self.reader, &mut std::io::sink())?;
        Ok(())
    }
}

/// Decodes PostgreSQL's binary numeric (base-10000 digits with a weight and a display scale) to exact text
/// (`NaN`, `Infinity`, `-Infinity` for the special values).
pub(crate) fn numeric_text(raw: &[u8]) -> std::result::Result<String, String> {
    let word = |i: usize| -> std::result::Result<i16, String> {
        let bytes = raw.get(i * 2..i * 2 + 2).ok_or("numeric value too short")?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let ndigits = word(0)?.max(0) as usize;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = word(3)?.max(0) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<i16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<std::result::Result<_, _>>()?;
    let digit = |index: i64| -> i16 {
        usize::try_from(index)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit(0).to_string());
        for group in 1..=weight {
            text.push_str(&format!("{:04}", digit(group)));
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut group = weight + 1;
        while fraction.len() < dscale {
            fraction.push_str(&format!("{:04}", digit(group)));
            group += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// Encodes exact decimal text (`-12.50`, `1.5e3`) as PostgreSQL's binary numeric.
pub(crate) fn numeric_to_binary(text: &str, out: &mut BytesMut) -> std::result::Result<(), String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = unsigned[i + 1..].parse().map_err(|_| "bad exponent")?;
            (&unsigned[..i], e)
        }
        None => (unsigned, 0),
    };
    if exponent.abs() > 100_000 {
        return Err("exponent out of range for numeric".into());
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let mut point = int.len() as i64 + exponent;
    let dscale = (frac.len() as i64 - exponent).max(0);
    if dscale > 16383 {
        return Err("too many digits after the decimal point for numeric".into());
    }
    if point < 0 {
        let pad = usize::try_from(-point).unwrap_or(0);
        digits.splice(0..0, std::iter::repeat_n(0, pad));
        point = 0;
    }
    let point = usize::try_from(point).unwrap_or(0);
    if point > digits.len() {
        digits.resize(point, 0);
    }
    // Base-10000 groups aligned on the decimal point.
    let lead = (4 - point % 4) % 4;
    let mut aligned = vec![0u8; lead];
    aligned.extend_from_slice(&digits);
    let trail = (4 - aligned.len() % 4) % 4;
    aligned.extend(std::iter::repeat_n(0, trail));
    let mut groups: Vec<i16> = aligned
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d)))
        .collect();
    let mut weight = ((point + lead) / 4) as i64 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let ndigits = i16::try_from(groups.len()).map_err(|_| "too many digits for numeric")?;
    let weight = i16::try_from(weight).map_err(|_| "number too large for numeric")?;
    out.put_i16(ndigits);
    out.put_i16(weight);
    out.put_u16(if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_u16(dscale as u16);
    for g in groups {
        out.put_i16(g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = BytesMut::new();
        numeric_to_binary(text, &mut buf).unwrap();
        numeric_text(&buf).unwrap()
    }

    #[test]
    fn numerics_survive_the_binary_format_exactly() {
        for (input, output) in [
            ("0", "0"),
            ("-0.00", "0.00"),
            ("12.50", "12.50"),
            (
                "-12345678901234567890.123456789",
                "-12345678901234567890.123456789",
            ),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            ("10000", "10000"),
            ("1e3", "1000"),
            ("1.5E-3", "0.0015"),
            ("99999999.99999999", "99999999.99999999"),
        ] {
            assert_eq!(round_trip(input), output, "{input}");
        }
    }

    #[test]
    fn tuples_written_read_back_field_by_field() {
        let mut out = BytesMut::new();
        out.extend_from_slice(HEADER);
        put_tuple_start(&mut out, 2);
        put_field(&mut out, false, |o| {
            o.put_slice(b"abc");
            Ok(())
        })
        .unwrap();
        put_field(&mut out, true, |_| Err("not called".into())).unwrap();
        out.extend_from_slice(&TRAILER);
        let mut reader = TupleReader::new(&out[..]).unwrap();
        assert_eq!(reader.next_tuple().unwrap(), Some(2));
        assert_eq!(reader.next_field().unwrap(), Some(&b"abc"[..]));
        assert_eq!(reader.next_field().unwrap(), None);
        assert_eq!(reader.next_tuple().unwrap(), None);
        assert!(matches!(
            TupleReader::new(&b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\0"[..]),
            Err(ReadError::Broken(_))
        ));
    }

    #[test]
    fn a_text_row_is_a_tuple_of_its_cells_in_column_order() {
        // Cells "a", "", "héllo" one after another; the table's columns take cell 2, nothing, cell 0, cell 1.
        let (text, ends) = ("ahéllo", [1, 1, 7]);
        let mut out = BytesMut::new();
        assert!(put_text_row(
            &mut out,
            text,
            &ends,
            &[Some(2), None, Some(0), Some(1)]
        ));
        let mut expected = BytesMut::new();
        put_tuple_start(&mut expected, 4);
        for field in [Some("héllo"), None, Some("a"), Some("")] {
            put_field(&mut expected, field.is_none(), |o| {
                o.put_slice(field.unwrap_or_default().as_bytes());
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(out, expected);
        let fields = tuple_fields(&out).unwrap();
        let shown: Vec<Option<&[u8]>> = vec![Some("héllo".as_bytes()), None, Some(b"a"), Some(b"")];
        assert_eq!(fields, shown);
        // A cell the row does not have leaves nothing behind; a cut tuple is not read as one.
        assert!(!put_text_row(&mut out, text, &ends, &[Some(3)]));
        assert_eq!(out, expected);
        assert_eq!(tuple_fields(&out[..out.len() - 1]), None);
        assert_eq!(tuple_fields(&[out.as_ref(), b"x"].concat()), None);
    }
}
