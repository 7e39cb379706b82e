//! XML codec (quick-xml): a root element holding one element per record, streamed record by record.
//!
//! Mapping, the same both ways:
//! - a child element is a field; its text is the value (`<title>Hi</title>` → `"title": "Hi"`);
//! - nested elements are objects; repeated elements are arrays (`<tag>a</tag><tag>b</tag>` → `["a", "b"]`);
//! - attributes are fields named `@name`; an element's own text beside attributes or children is `#text`;
//! - `xsi:nil="true"` is null, and an empty element is the empty string;
//! - field names that are not XML names are written with `_xHHHH_` escapes (`Order ID` → `Order_x0020_ID`),
//!   the XmlConvert convention, and decoded on read.
//!
//! Records written to XML and read back lose two things XML cannot say: an empty array (no element) and the
//! difference between a one-item array and its item. Entities declared in a DTD are never expanded, so an
//! entity bomb is an "undefined entity" error rather than a memory blow-up.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{BufRead, Read as _};

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::{NsReader, XmlVersion};

use super::limit::{self, too_large, Budget, Limited, MAX_DEPTH};
use super::{Decoder, Encoder, Fidelity, Format, FormatOptions, Input, OutBuf};
use crate::error::{Error, Position, Result, Stage};
use crate::record::{Key, Record, RecordBuilder, Value};
use crate::sink::ByteSink;

pub(super) const FORMAT: Format = Format {
    name: "xml",
    extensions: &["xml"],
    description:
        "XML: <records><record>...</record></records>, @attributes, repeated elements as arrays",
    fidelity: Fidelity::Text,
    streams: true,
    decoder: Some(decoder),
    encoder: Some(encoder),
};

const NIL_ATTR: &str = "xsi:nil";
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

fn decoder(input: Input, options: &FormatOptions) -> Result<Box<dyn Decoder>> {
    let Input {
        mut reader, name, ..
    } = input;
    let declared = match options.encoding {
        Some(_) => None, // transcoded to UTF-8 before it gets here
        None => sniff_encoding(&mut reader, &name)?,
    };
    // Each record element may take at most `--max-record-size` bytes.
    let (limited, budget) = Limited::new(reader, options.max_record_size);
    let mut reader = NsReader::from_reader(limited);
    reader.config_mut().trim_text(false);
    Ok(Box::new(XmlDecoder {
        reader,
        name,
        budget,
        declared,
        buf: Vec::with_capacity(4096),
        stack: Vec::new(),
        state: RootState::Before,
        records: 0,
        done: false,
    }))
}

/// How much of the document is read ahead for its XML declaration.
const PROLOG: usize = 512;

/// Looks at the document's first bytes: UTF-16 (a byte order mark, or `<` next to a zero byte) is refused
/// with the `--encoding` to pass, since it can only be read transcoded; otherwise returns the encoding the
/// XML declaration names (`<?xml … encoding="windows-1252"?>`), for the hint of a later decoding error.
fn sniff_encoding(reader: &mut Box<dyn BufRead + Send>, name: &str) -> Result<Option<String>> {
    // The first bytes, read ahead and then put back in front of the rest.
    let mut head = Vec::with_capacity(PROLOG);
    reader
        .by_ref()
        .take(PROLOG as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(Stage::Decode, Some(name), e))?;
    let rest = std::mem::replace(reader, Box::new(std::io::empty()));
    *reader = Box::new(std::io::Cursor::new(head.clone()).chain(rest));
    let head = head.as_slice();
    let utf16 = match head {
        [0xFF, 0xFE, ..] | [b'<', 0, ..] => Some("utf-16le"),
        [0xFE, 0xFF, ..] | [0, b'<', ..] => Some("utf-16be"),
        _ => None,
    };
    if let Some(label) = utf16 {
        let message = format!(
            "the document is UTF-16, and XML is read as UTF-8 unless told otherwise; pass --encoding {label}"
        );
        return Err(Error::data(Stage::Decode, Position::file(name), message));
    }
    let prolog = String::from_utf8_lossy(head);
    let declared = prolog
        .strip_prefix('\u{feff}')
        .unwrap_or(&prolog)
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split("?>").next())
        .and_then(|decl| decl.split_once("encoding"))
        .and_then(|(_, rest)| {
            let rest = rest.trim_start().strip_prefix('=')?.trim_start();
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            rest[1..].split(quote).next().map(str::to_owned)
        })
        .filter(|label| {
            !label.eq_ignore_ascii_case("utf-8") && !label.eq_ignore_ascii_case("utf8")
        });
    Ok(declared)
}

#[derive(PartialEq)]
enum RootState {
    Before,
    Inside,
    After,
}

struct Frame {
    name: Key,
    fields: RecordBuilder,
    text: String,
    nil: bool,
}

struct XmlDecoder {
    reader: NsReader<Limited<Box<dyn BufRead + Send>>>,
    name: String,
    /// Where the current record started, for `--max-record-size`.
    budget: Budget,
    /// The encoding the XML declaration names, when it is not UTF-8 (for the hint of a decoding error).
    declared: Option<String>,
    buf: Vec<u8>,
    stack: Vec<Frame>,
    state: RootState,
    records: u64,
    done: bool,
}

impl XmlDecoder {
    fn error(&self, message: impl Into<String>) -> Error {
        let pos = Position::file(self.name.clone())
            .with_record(self.records + 1)
            .with_byte(self.reader.buffer_position());
        Error::data(Stage::Decode, pos, message)
    }

    fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.buf.clear();
            let event = match self.reader.read_resolved_event_into(&mut self.buf) {
                Ok((ResolveResult::Unknown(prefix), _)) => {
                    return Err(self.error(format!("namespace prefix {prefix:?} is not declared")));
                }
                Ok((_, event)) => event.into_owned(),
                Err(_) if self.budget.exceeded() => {
                    let position = Position::file(self.name.clone())
                        .with_record(self.records + 1)
                        .with_byte(self.reader.buffer_position());
                    return Err(too_large(position, self.budget.limit()));
                }
                Err(e) => return Err(self.read_error(&e)),
            };
            match event {
                Event::Start(start) => self.open(&start)?,
                Event::Empty(start) => {
                    self.open(&start)?;
                    if let Some(record) = self.close()? {
                        return Ok(Some(record));
                    }
                }
                Event::End(_) => {
                    if let Some(record) = self.close()? {
                        return Ok(Some(record));
                    }
                }
                Event::Text(text) => self.text(&text.xml10_content())?,
                Event::CData(cdata) => self.text(&cdata.xml10_content())?,
                Event::GeneralRef(reference) => {
                    let ch = match reference.resolve_char_ref() {
                        Ok(Some(ch)) => ch,
                        Ok(None) => predefined_entity(&reference).ok_or_else(|| {
                            self.error(format!(
                                "undefined entity &{}; (ferry does not expand DTD entities)",
                                &*reference
                            ))
                        })?,
                        Err(e) => return Err(self.error(e.to_string())),
                    };
                    self.text(ch.encode_utf8(&mut [0; 4]))?;
                }
                Event::Eof => return self.end_of_input(),
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
            }
        }
    }

    /// A parser error; one about decoding says which `--encoding` to pass.
    fn read_error(&self, e: &quick_xml::Error) -> Error {
        let message = e.to_string();
        if !matches!(e, quick_xml::Error::Encoding(_)) {
            return self.error(message);
        }
        let hint = match &self.declared {
            Some(label) => {
                format!("the document declares encoding=\"{label}\": pass --encoding {label}")
            }
            None => "pass --encoding (e.g. --encoding windows-1252) if the document is not UTF-8"
                .to_owned(),
        };
        self.error(format!("{message}; {hint}"))
    }

    fn end_of_input(&self) -> Result<Option<Record>> {
        match self.state {
            RootState::Before => Err(self.error("the document has no root element")),
            RootState::Inside => {
                let open = self
                    .stack
                    .last()
                    .map_or("the root element".to_owned(), |f| {
                        format!("element <{}>", f.name)
                    });
                Err(self.error(format!("unexpected end of input: {open} is not closed")))
            }
            RootState::After => Ok(None),
        }
    }

    fn open(&mut self, start: &BytesStart<'_>) -> Result<()> {
        // Read before anything else, so that the root's start tag is checked too although the root is only
        // the container of the records.
        let attributes = self.attributes(start)?;
        if start.name().as_ref().starts_with("xmlns:") {
            return Err(
                self.error("the xmlns prefix is reserved for declarations: no element may use it")
            );
        }
        match self.state {
            RootState::Before => {
                self.state = RootState::Inside;
                // The first record starts after the root's start tag (its line is where it begins).
                self.budget.next_record();
                return Ok(());
            }
            RootState::After => {
                return Err(self.error("a second root element: XML allows only one"))
            }
            RootState::Inside => {}
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(limit::too_deep()));
        }
        let raw = start.name().as_ref().to_owned();
        let mut frame = Frame {
            name: Key::from(decode_name(&raw)),
            fields: RecordBuilder::default(),
            text: String::new(),
            nil: false,
        };
        for (key, value) in attributes {
            if key == NIL_ATTR {
                frame.nil = value == "true" || value == "1";
            } else if key != "xmlns:xsi" {
                frame.fields.insert(
                    Key::from(format!("@{}", decode_name(&key))),
                    Value::String(value),
                );
            }
        }
        self.stack.push(frame);
        Ok(())
    }

    /// The attributes of `start`: names as written, values with references resolved and whitespace
    /// normalised. A duplicate name (as written, or as namespace and local name: `n1:a` and `n2:a` with both
    /// prefixes bound to one URI), a bad reference, an undeclared prefix or a misuse of the reserved `xml`
    /// and `xmlns` prefixes and URIs (Namespaces in XML 1.0, section 3) is an error.
    fn attributes(&self, start: &BytesStart<'_>) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut expanded: HashSet<(String, String)> = HashSet::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| self.error(e.to_string()))?;
            let resolver = self.reader.resolver();
            let (namespace, local) = resolver.resolve_attribute(attr.key);
            match namespace {
                ResolveResult::Unknown(prefix) => {
                    return Err(self.error(format!("namespace prefix {prefix:?} is not declared")))
                }
                ResolveResult::Bound(ns) if attr.key.prefix().is_some() => {
                    let name = (ns.as_ref().to_owned(), local.as_ref().to_owned());
                    if !expanded.insert(name) {
                        let written = attr.key.as_ref();
                        return Err(self.error(format!(
                            "attribute {written:?} names an attribute already given under another prefix \
                             bound to the same namespace"
                        )));
                    }
                }
                _ => {}
            }
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| self.error(e.to_string()))?;
            check_declaration(attr.key.as_ref(), &value).map_err(|m| self.error(m))?;
            out.push((attr.key.as_ref().to_owned(), value.into_owned()));
        }
        if out.len() > limit::MAX_FIELDS {
            return Err(self.error(limit::too_many_fields()));
        }
        Ok(out)
    }

    /// Closes the innermost element; returns the record when the element was a whole record.
    fn close(&mut self) -> Result<Option<Record>> {
        let Some(frame) = self.stack.pop() else {
            self.state = RootState::After; // the root element closed
            return Ok(None);
        };
        let value = frame_value(frame.nil, frame.fields, frame.text);
        match self.stack.last_mut() {
            Some(parent) => {
                add_child(&mut parent.fields, frame.name, value);
                if parent.fields.len() > limit::MAX_FIELDS {
                    return Err(self.error(limit::too_many_fields()));
                }
                Ok(None)
            }
            None => {
                self.records += 1;
                let line = self.budget.record_line();
                self.budget.next_record();
                let mut record = match value {
                    Value::Object(record) => record,
                    Value::String(text) if !text.is_empty() => {
                        Record::from_iter([(Key::from("#text"), Value::String(text))])
                    }
                    _ => Record::new(),
                };
                record.set_line(line);
                Ok(Some(record))
            }
        }
    }

    fn text(&mut self, text: &str) -> Result<()> {
        match self.stack.last_mut() {
            Some(frame) => frame.text.push_str(text),
            None if text.trim().is_empty() => {}
            None if self.state == RootState::Inside => {
                return Err(
                    self.error("text directly inside the root element; records must be elements")
                );
            }
            None => return Err(self.error("text outside the root element")),
        }
        Ok(())
    }
}

/// The URI only the `xml` prefix may have, and the one no prefix may have.
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
const XMLNS_NAMESPACE: &str = "http://www.w3.org/2000/xmlns/";

/// Checks a namespace declaration (`xmlns="…"`, `xmlns:p="…"`) against the reserved prefixes and URIs;
/// other attributes pass.
fn check_declaration(key: &str, uri: &str) -> std::result::Result<(), String> {
    let prefix = match key.strip_prefix("xmlns") {
        Some("") => None,
        Some(rest) if rest.starts_with(':') => Some(&rest[1..]),
        _ => return Ok(()),
    };
    match prefix {
        Some("xmlns") => Err("the xmlns prefix is reserved and must not be declared".to_owned()),
        Some("xml") if uri != XML_NAMESPACE => Err(format!(
            "the xml prefix may only be bound to {XML_NAMESPACE}"
        )),
        Some("xml") => Ok(()),
        _ if uri == XML_NAMESPACE => Err(format!(
            "{XML_NAMESPACE} is the xml prefix's namespace: no other prefix, nor the default namespace, may \
             be bound to it"
        )),
        _ if uri == XMLNS_NAMESPACE => Err(format!(
            "{XMLNS_NAMESPACE} is reserved for xmlns declarations and must not be bound"
        )),
        _ => Ok(()),
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

fn frame_value(nil: bool, mut fields: RecordBuilder, text: String) -> Value {
    if nil {
        return Value::Null;
    }
    if fields.is_empty() {
        return Value::String(text);
    }
    if !text.trim().is_empty() {
        fields.insert(Key::from("#text"), Value::String(text));
    }
    Value::Object(fields.finish())
}

/// Repeated child elements become an array, in document order.
fn add_child(fields: &mut RecordBuilder, name: Key, value: Value) {
    match fields.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = std::mem::replace(existing, Value::Null);
            *existing = Value::Array(vec![first, value]);
        }
        None => fields.push_unchecked(name, value),
    }
}

/// Builds each record whole from the parse (no cell-by-cell refill): reused records are dropped.
impl crate::format::Decoder for XmlDecoder {}

impl Iterator for XmlDecoder {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        let item = self.next_record().transpose();
        // XML errors are not recoverable mid-document: the rest of the tree is unknown.
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// Decodes `_xHHHH_` escapes written by [`encode_name`].
fn decode_name(name: &str) -> Cow<'_, str> {
    if !name.contains("_x") {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find("_x") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let decoded = escape_at(tail);
        match decoded {
            Some((ch, len)) => {
                out.push(ch);
                rest = &tail[len..];
            }
            None => {
                out.push_str("_x");
                rest = &tail[2..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character an `_xHHHH_` or `_xHHHHHHHH_` escape at the start of `tail` stands for, and the escape's length.
fn escape_at(tail: &str) -> Option<(char, usize)> {
    [8, 4].into_iter().find_map(|digits| {
        let hex = tail.get(2..2 + digits)?;
        let closed = tail.as_bytes().get(2 + digits) == Some(&b'_');
        let ch = u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .filter(|_| closed)?;
        Some((ch, digits + 3))
    })
}

/// Escapes a field name into a valid XML element name (`_xHHHH_` for each character that may not stand
/// there, and for a `_` that would otherwise look like the start of an escape).
fn encode_name(name: &str) -> Cow<'_, str> {
    let ok_start = |c: char| c.is_alphabetic() || c == '_';
    let ok_rest = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let looks_escaped = |i: usize| name[i..].starts_with("_x") && escape_at(&name[i..]).is_some();
    let valid = !name.is_empty()
        && name
            .char_indices()
            .all(|(i, c)| if i == 0 { ok_start(c) } else { ok_rest(c) })
        && !name.contains("_x");
    if valid {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for (i, c) in name.char_indices() {
        let allowed = if i == 0 { ok_start(c) } else { ok_rest(c) };
        if allowed && !(c == '_' && looks_escaped(i)) {
            out.push(c);
        } else {
            push_escape(&mut out, c);
        }
    }
    if out.is_empty() {
        out.push('_'); // XML has no empty names; an empty field name is written as `_`
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    use std::fmt::Write as _;
    // Four hex digits inside the BMP, eight outside it (XmlConvert's two forms).
    let _ = match c as u32 {
        code @ 0..=0xFFFF => write!(out, "_x{code:04X}_"),
        code => write!(out, "_x{code:08X}_"),
    };
}

fn encoder(sink: Box<dyn ByteSink>, _options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    let mut out = OutBuf::new(sink);
    out.buf
        .extend_from_slice(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<records xmlns:xsi=\"");
    out.buf.extend_from_slice(XSI_NS.as_bytes());
    out.buf.extend_from_slice(b"\">\n");
    Ok(Box::new(XmlEncoder { out, records: 0 }))
}

struct XmlEncoder {
    out: OutBuf,
    records: u64,
}

impl Encoder for XmlEncoder {
    fn write_record(&mut self, record: &Record) -> Result<()> {
        self.records += 1;
        let start = self.out.buf.len();
        self.out.buf.extend_from_slice(b"  ");
        let result = write_object(&mut self.out.buf, "record", record);
        if let Err((field, message)) = result {
            self.out.buf.truncate(start);
            let pos = Position::default()
                .with_record(self.records)
                .with_field(field);
            return Err(Error::record(Stage::Encode, pos, message));
        }
        self.out.buf.push(b'\n');
        self.out.maybe_flush()
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out.buf.extend_from_slice(b"</records>\n");
        self.out.finish()
    }

    fn bytes_written(&self) -> u64 {
        self.out.bytes_written()
    }
}

type WriteResult = std::result::Result<(), (String, String)>;

fn write_element(out: &mut Vec<u8>, name: &str, value: &Value) -> WriteResult {
    let tag = encode_name(name);
    match value {
        Value::Null => {
            out.extend_from_slice(format!("<{tag} {NIL_ATTR}=\"true\"/>").as_bytes());
            Ok(())
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Array(inner) => {
                        let mut wrapper = Record::new();
                        wrapper.insert("item", Value::Array(inner.clone()));
                        write_element(out, name, &Value::Object(wrapper))?;
                    }
                    other => write_element(out, name, other)?,
                }
            }
            Ok(())
        }
        Value::Object(record) => write_object(out, &tag, record),
        scalar => {
            out.extend_from_slice(format!("<{tag}>").as_bytes());
            escape_into(out, &scalar.to_text(), false).map_err(|m| (name.to_owned(), m))?;
            out.extend_from_slice(format!("</{tag}>").as_bytes());
            Ok(())
        }
    }
}

/// Writes a record as an element: `@` fields as attributes, `#text` as its text, the rest as children.
fn write_object(out: &mut Vec<u8>, tag: &str, record: &Record) -> WriteResult {
    out.push(b'<');
    out.extend_from_slice(tag.as_bytes());
    for (key, v) in record
        .iter()
        .filter(|(k, v)| k.starts_with('@') && !v.is_nested())
    {
        out.push(b' ');
        out.extend_from_slice(encode_name(&key[1..]).as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(out, &v.to_text(), true).map_err(|m| (key.to_string(), m))?;
        out.push(b'"');
    }
    out.push(b'>');
    for (key, v) in record.iter() {
        if &**key == "#text" {
            escape_into(out, &v.to_text(), false).map_err(|m| (key.to_string(), m))?;
        } else if !key.starts_with('@') || v.is_nested() {
            write_element(out, key, v)?;
        }
    }
    out.extend_from_slice(format!("</{tag}>").as_bytes());
    Ok(())
}

/// Escapes markup characters; `\r` (and in attributes `\t`, `\n`) become character references so that XML's
/// line-end and attribute normalisation give them back unchanged.
fn escape_into(out: &mut Vec<u8>, text: &str, attribute: bool) -> std::result::Result<(), String> {
    for c in text.chars() {
        match c {
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '&' => out.extend_from_slice(b"&amp;"),
            '"' if attribute => out.extend_from_slice(b"&quot;"),
            '\r' => out.extend_from_slice(b"&#13;"),
            '\n' if attribute => out.extend_from_slice(b"&#10;"),
            '\t' if attribute => out.extend_from_slice(b"&#9;"),
            '\t' | '\n' => out.push(c as u8),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                return Err(format!(
                    "character U+{:04X} cannot be represented in XML 1.0",
                    c as u32
                ));
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(xml: &str) -> Vec<Result<Record>> {
        let input = Input {
            reader: Box::new(std::io::Cursor::new(xml.as_bytes().to_vec())),
            name: "t.xml".into(),
            file: None,
        };
        decoder(input, &FormatOptions::default()).unwrap().collect()
    }

    #[test]
    fn bad_attributes_are_errors_on_the_root_element_too() {
        for xml in [
            "<rs a='1' a='2'><r/></rs>",
            "<rs a='&bogus;'><r/></rs>",
            "<rs a=\"&amp\"/>",
            "<rs p:a='1'/>",
            "<rs><r p:a='1'/></rs>",
            "<rs><r a='1' a='2'/></rs>",
        ] {
            let items = decode(xml);
            assert!(
                items.iter().any(|i| i.as_ref().is_err_and(Error::is_data)),
                "{xml}: {items:?}"
            );
        }
        let items = decode("<rs xmlns:p='urn:p' id='x'><r p:a='1'/></rs>");
        let record = items[0].as_ref().unwrap();
        assert_eq!(record.get("@p:a"), Some(&Value::String("1".into())));
    }

    #[test]
    fn names_escape_and_come_back() {
        for name in [
            "Order ID", "1st", "a:b", "_x0020_", "ok_name", "é", "x y_x", "日本",
        ] {
            let encoded = encode_name(name);
            assert_eq!(decode_name(&encoded), name, "{name} -> {encoded}");
        }
        assert_eq!(encode_name("Order ID"), "Order_x0020_ID");
        assert_eq!(encode_name("plain"), "plain");
    }
}
