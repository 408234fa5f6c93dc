//! Reading one HMB message (JSON or BSON) into the parts an event needs.
//!
//! The BSON to JSON mapping is [`bson_json`](crate::bson_json)'s.

use crate::bson_scan::{self, Value};
use buslink_plugin_api::hermes::peek_fields;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// What a message's event body is made of.
#[derive(Clone, Copy, Debug)]
pub enum BodySrc<'a> {
    /// JSON text already (the `data` of a Hermes event, or the whole message, from a JSON body).
    Text(&'a str),
    /// A BSON document to convert (the `data` of a Hermes event, or the whole message).
    BsonDoc(&'a [u8]),
}

/// The fields of one message that the consumer looks at.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// `type`.
    pub kind: Cow<'a, str>,
    /// `queue`.
    pub queue: Option<Cow<'a, str>>,
    /// `topic`.
    pub topic: Option<Cow<'a, str>>,
    /// `seq`.
    pub seq: Option<i64>,
    /// `starttime`.
    pub starttime: Option<Cow<'a, str>>,
    /// The event body.
    pub body: BodySrc<'a>,
    /// The body is the message's `data` (a Hermes event), not the whole message.
    pub body_is_data: bool,
}

impl Parsed<'_> {
    /// The event category: the topic, or the type when there is no topic.
    pub fn category(&self) -> &str {
        match self.topic.as_deref() {
            Some(topic) if !topic.is_empty() => topic,
            _ => &self.kind,
        }
    }

    /// The event time: `starttime` when present and readable.
    pub fn timestamp_micros(&self) -> Option<i64> {
        let text = self.starttime.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_micros())
    }
}

#[derive(Deserialize)]
struct WireJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    queue: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default, borrow)]
    starttime: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Whether JSON text is a Hermes event: an object with string `evcategory` and `eventtype`
/// (reading stops once both were seen: Hermes writes them first).
pub fn is_hermes_json(text: &str) -> bool {
    let mut slots = [None, None];
    text.trim_start().starts_with('{')
        && peek_fields(text, &["evcategory", "eventtype"], &mut slots)
        && slots.iter().all(Option::is_some)
}

/// Reads a message from its JSON text.
pub fn parse_json(item: &str) -> Result<Parsed<'_>, String> {
    let wire: WireJson<'_> =
        serde_json::from_str(item).map_err(|e| format!("undecodable JSON message: {e}"))?;
    let (body, body_is_data) = match wire.data {
        Some(data) if is_hermes_json(data.get()) => (BodySrc::Text(data.get()), true),
        _ => (BodySrc::Text(item), false),
    };
    Ok(Parsed {
        kind: wire.kind,
        queue: wire.queue,
        topic: wire.topic,
        seq: wire.seq,
        starttime: wire.starttime,
        body,
        body_is_data,
    })
}

/// A string of a JSON message read while framing: where it lies in the answer, or its text
/// when it had escapes.
#[derive(Clone, Debug, PartialEq)]
pub enum HeadText {
    /// Bytes of the answer (absolute positions).
    At(Range<usize>),
    /// Unescaped text.
    Owned(String),
}

impl HeadText {
    /// The text, reading `buf` (the answer's bytes).
    fn text_in<'a>(&'a self, buf: &'a [u8]) -> Result<Cow<'a, str>, String> {
        match self {
            HeadText::At(range) => buf
                .get(range.clone())
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .map(Cow::Borrowed)
                .ok_or_else(|| "a message string that is not UTF-8".to_owned()),
            HeadText::Owned(text) => Ok(Cow::Borrowed(text)),
        }
    }

    fn get<'a>(&'a self, raw: &'a str) -> Cow<'a, str> {
        match self {
            HeadText::At(range) => Cow::Borrowed(raw.get(range.clone()).unwrap_or("")),
            HeadText::Owned(text) => Cow::Borrowed(text),
        }
    }
}

/// The fields of a JSON message, read in the same pass that finds where the message ends (so
/// each message is scanned once): positions in the answer, valid while its bytes stay put.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonHead {
    kind: HeadText,
    queue: Option<HeadText>,
    topic: Option<HeadText>,
    seq: Option<i64>,
    starttime: Option<HeadText>,
    data: Option<Range<usize>>,
    /// `data` is a Hermes event (string `evcategory` and `eventtype`).
    hermes: bool,
}

impl JsonHead {
    /// Reads the message object starting at `buf[start]` (a `{`): its end and fields, in one
    /// pass ([`json_scan`](crate::json_scan) says what is checked); `Ok(None)` when the bytes
    /// end before the message does.
    pub fn read(buf: &[u8], start: usize) -> Result<Option<(usize, JsonHead)>, String> {
        match Self::read_as_written(buf, start) {
            Some(read) => Ok(Some(read)),
            None => Self::read_field_by_field(buf, start),
        }
    }

    /// [`read`](Self::read) for any layout: the fields in any order, with whitespace.
    fn read_field_by_field(buf: &[u8], start: usize) -> Result<Option<(usize, JsonHead)>, String> {
        use crate::json_scan::{
            has_string_fields, integer_value, skip_ws, string_end, string_value, value_end, Text,
        };
        let text = |value: Option<Text>| {
            value.map(|text| match text {
                Text::Plain(range) => HeadText::At(range),
                Text::Unescaped(owned) => HeadText::Owned(owned),
            })
        };
        let (mut kind, mut queue, mut topic, mut starttime) = (None, None, None, None);
        let (mut seq, mut data, mut hermes) = (None, None, false);
        let mut at = start + 1;
        let mut first = true;
        loop {
            at = skip_ws(buf, at);
            match buf.get(at) {
                None => return Ok(None),
                Some(b'}') => break,
                Some(b',') if !first => at = skip_ws(buf, at + 1),
                Some(_) if first => {}
                Some(&other) => {
                    return Err(format!(
                        "undecodable JSON message: `,` or `}}` expected, found `{}`",
                        char::from(other)
                    ))
                }
            }
            first = false;
            match buf.get(at) {
                None => return Ok(None),
                Some(b'"') => {}
                Some(&other) => {
                    return Err(format!(
                        "undecodable JSON message: a field name expected, found `{}`",
                        char::from(other)
                    ))
                }
            }
            let Some(key_end) = string_end(buf, at + 1) else {
                return Ok(None);
            };
            let key = &buf[at + 1..key_end - 1];
            at = skip_ws(buf, key_end);
            match buf.get(at) {
                None => return Ok(None),
                Some(b':') => at = skip_ws(buf, at + 1),
                Some(_) => return Err("undecodable JSON message: `:` expected".to_owned()),
            }
            let Some(end) =
                value_end(buf, at).map_err(|e| format!("undecodable JSON message: {e}"))?
            else {
                return Ok(None);
            };
            let span = at..end;
            match key {
                b"type" => kind = text(string_value(buf, span, "type")?),
                b"queue" => queue = text(string_value(buf, span, "queue")?),
                b"topic" => topic = text(string_value(buf, span, "topic")?),
                b"starttime" => starttime = text(string_value(buf, span, "starttime")?),
                b"seq" => seq = integer_value(buf, span, "seq")?,
                b"data" => {
                    hermes = has_string_fields(buf, span.clone(), [b"evcategory", b"eventtype"]);
                    data = Some(span);
                }
                _ => {}
            }
            at = end;
        }
        let kind = kind.ok_or("undecodable JSON message: missing field `type`")?;
        let head = JsonHead {
            kind,
            queue,
            topic,
            seq,
            starttime,
            data,
            hermes,
        };
        Ok(Some((at + 1, head)))
    }

    /// The message at `buf[start]` when it is laid out as httpmsgbus writes it (and the
    /// in-repo server): no whitespace, the fields in the server's order (`type`, `queue`,
    /// `sender`, `topic`, `seq`, `starttime`, `endtime`, `data`, each but `type` optional), strings
    /// without escapes, `seq` an integer of at most 18 digits. Read with a few fixed compares
    /// instead of a loop over any fields; `None` for anything else (an incomplete message too),
    /// which [`read`](Self::read) then reads field by field, to the same result where both read
    /// (tested).
    fn read_as_written(buf: &[u8], start: usize) -> Option<(usize, JsonHead)> {
        use crate::json_scan::{
            has_string_fields, literal_at, plain_integer, plain_string_end, value_end,
        };
        // `"` then the string's content: its range, `at` moved past its closing quote.
        let string = |at: &mut usize| {
            let content = *at;
            *at = plain_string_end(buf, content)?;
            Some(HeadText::At(content..*at - 1))
        };
        let mut at = start;
        if !literal_at(buf, at, br#"{"type":""#) {
            return None;
        }
        at += 9;
        let kind = string(&mut at)?;
        let field = |at: &mut usize, literal: &[u8]| {
            let found = literal_at(buf, *at, literal);
            if found {
                *at += literal.len();
            }
            found
        };
        // `,"name":"..."` at `*at`: `Some(Some(text))`, `Some(None)` when the field is not
        // there, `None` when its string is not plain.
        let optional_string = |at: &mut usize, literal: &[u8]| {
            if field(at, literal) {
                string(at).map(Some)
            } else {
                Some(None)
            }
        };
        let queue = optional_string(&mut at, br#","queue":""#)?;
        optional_string(&mut at, br#","sender":""#)?;
        let topic = optional_string(&mut at, br#","topic":""#)?;
        let seq = if field(&mut at, br#","seq":"#) {
            // A sign and up to 19 digits, then the field's end; `plain_integer` takes 18.
            let end = at
                + buf
                    .get(at..)?
                    .iter()
                    .take(20)
                    .take_while(|&&b| b.is_ascii_digit() || b == b'-')
                    .count();
            if !matches!(buf.get(end), Some(b',' | b'}')) {
                return None;
            }
            let value = plain_integer(&buf[at..end])?;
            at = end;
            Some(value)
        } else {
            None
        };
        let starttime = optional_string(&mut at, br#","starttime":""#)?;
        optional_string(&mut at, br#","endtime":""#)?;
        let (mut data, mut hermes) = (None, false);
        if field(&mut at, br#","data":"#) {
            let end = value_end(buf, at).ok()??;
            let span = at..end;
            hermes = has_string_fields(buf, span.clone(), [b"evcategory", b"eventtype"]);
            data = Some(span);
            at = end;
        }
        if buf.get(at) != Some(&b'}') {
            return None;
        }
        let head = JsonHead {
            kind,
            queue,
            topic,
            seq,
            starttime,
            data,
            hermes,
        };
        Some((at + 1, head))
    }

    /// The fields continuity needs (type, queue, seq), reading `buf` (the answer's bytes); the
    /// body is left empty.
    pub fn continuity<'a>(&'a self, buf: &'a [u8]) -> Result<Parsed<'a>, String> {
        Ok(Parsed {
            kind: self.kind.text_in(buf)?,
            queue: self.queue.as_ref().map(|t| t.text_in(buf)).transpose()?,
            topic: None,
            seq: self.seq,
            starttime: None,
            body: BodySrc::Text(""),
            body_is_data: false,
        })
    }

    /// The message, `raw` being the answer's text (from its first byte) and `item` where the
    /// message lies in it.
    pub fn parsed<'a>(&'a self, raw: &'a str, item: Range<usize>) -> Parsed<'a> {
        let data = self.data.clone().and_then(|range| raw.get(range));
        let (body, body_is_data) = match data {
            Some(data) if self.hermes => (BodySrc::Text(data), true),
            _ => (BodySrc::Text(raw.get(item).unwrap_or("")), false),
        };
        Parsed {
            kind: self.kind.get(raw),
            queue: self.queue.as_ref().map(|t| t.get(raw)),
            topic: self.topic.as_ref().map(|t| t.get(raw)),
            seq: self.seq,
            starttime: self.starttime.as_ref().map(|t| t.get(raw)),
            body,
            body_is_data,
        }
    }
}

/// A string field of a BSON message (null counts as absent).
fn bson_str<'a>(key: &str, value: Value<'a>) -> Result<Option<&'a str>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(bytes) => bson_scan::text(bytes).map(Some),
        other => Err(format!(
            "BSON message field `{key}` is a {}, not a string",
            type_name(other)
        )),
    }
}

fn type_name(value: Value<'_>) -> &'static str {
    match value {
        Value::Double(_) => "double",
        Value::String(_) => "string",
        Value::Document(_) => "document",
        Value::Array(_) => "array",
        Value::Binary { .. } => "binary",
        Value::Undefined => "undefined",
        Value::ObjectId(_) => "ObjectId",
        Value::Boolean(_) => "boolean",
        Value::DateTime(_) => "datetime",
        Value::Null => "null",
        Value::Int32(_) => "int32",
        Value::Int64(_) => "int64",
        Value::Other(_) => "special BSON type",
    }
}

/// Whether a BSON document is a Hermes event: string `evcategory` and `eventtype` (reading
/// stops once both were seen).
fn is_hermes_bson(doc: &[u8]) -> bool {
    bson_scan::elements(doc)
        .is_ok_and(|fields| hermes_fields_first(doc) || is_hermes_bson_by_loop(fields))
}

/// As Hermes events come from httpmsgbus (keys sorted): string `evcategory` and `eventtype`
/// the first two elements of `doc` (a document's frame already checked), seen with a few
/// compares.
fn hermes_fields_first(doc: &[u8]) -> bool {
    let string = |at| bson_scan::string_value_at(doc, at).map(|(_, end)| end);
    element_at(doc, 4, 0x02, b"evcategory")
        .and_then(string)
        .and_then(|at| element_at(doc, at, 0x02, b"eventtype"))
        .and_then(string)
        .is_some()
}

/// [`is_hermes_bson`] for any order of the elements (`fields`: the document's, from its first).
fn is_hermes_bson_by_loop(fields: bson_scan::Elements<'_>) -> bool {
    let (mut category, mut event_type) = (false, false);
    for element in fields {
        match element {
            Ok((b"evcategory", value)) => category = matches!(value, Value::String(_)),
            Ok((b"eventtype", value)) => event_type = matches!(value, Value::String(_)),
            Ok(_) => continue,
            Err(_) => return false,
        }
        if category && event_type {
            return true;
        }
    }
    false
}

/// Reads a message from its BSON document, in one pass over its fields.
///
/// Only the head (`type`, `queue`, `seq`) must be readable: an error names what of it is known.
/// Anything else that cannot be read (a `topic` or `starttime` that is not UTF-8, a broken
/// element after the head) leaves the body as the whole message, whose conversion to JSON then
/// fails, so the event is delivered with the message's BSON bytes as its body; such a topic
/// gives the category with U+FFFD for the bad bytes (as the server's own JSON encoder writes it).
pub fn parse_bson(bytes: &[u8]) -> Result<Parsed<'_>, String> {
    match parse_bson_as_written(bytes) {
        Some(parsed) => Ok(parsed),
        None => parse_bson_field_by_field(bytes),
    }
}

/// The message when it is laid out as httpmsgbus writes it (and the in-repo server): the
/// fields in the server's order (`type`, `queue`, `sender`, `topic`, `seq`, `starttime`,
/// `endtime`, `data`; each but `type` optional), the strings UTF-8, `seq` an int32 or int64,
/// `data` a document. Read with fixed compares instead of a loop over any fields; `None` for
/// anything else, which [`parse_bson`] then reads field by field, to the same result where
/// both read (tested).
fn parse_bson_as_written(bytes: &[u8]) -> Option<Parsed<'_>> {
    use crate::bson_scan::{document_value_at, string_value_at};
    let declared = i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let last = bytes.len() - 1;
    if declared < 5 || declared as usize != bytes.len() || bytes[last] != 0 {
        return None;
    }
    let element = |at: &mut usize, kind: u8, name: &[u8]| match element_at(bytes, *at, kind, name) {
        Some(value) => {
            *at = value;
            true
        }
        None => false,
    };
    // A string value at `*at`, as text: `*at` moved past it.
    let string = |at: &mut usize| {
        let (text, end) = string_value_at(bytes, *at)?;
        *at = end;
        bson_scan::short_text(bytes, text)
    };
    let mut at = 4;
    if !element(&mut at, 0x02, b"type") {
        return None;
    }
    let kind = string(&mut at)?;
    let optional_string = |at: &mut usize, name: &[u8]| {
        if element(at, 0x02, name) {
            string(at).map(Some)
        } else {
            Some(None)
        }
    };
    let queue = optional_string(&mut at, b"queue")?;
    optional_string(&mut at, b"sender")?;
    let topic = optional_string(&mut at, b"topic")?;
    let seq = if element(&mut at, 0x10, b"seq") {
        let value = i32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        Some(i64::from(value))
    } else if element(&mut at, 0x12, b"seq") {
        let value = i64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        Some(value)
    } else {
        None
    };
    let starttime = optional_string(&mut at, b"starttime")?;
    optional_string(&mut at, b"endtime")?;
    let mut data = None;
    if element(&mut at, 0x03, b"data") {
        let doc = document_value_at(bytes, at)?;
        at += doc.len();
        data = Some(doc);
    }
    if at != last {
        return None;
    }
    let (body, body_is_data) = match data {
        Some(data) if is_hermes_bson(data) => (BodySrc::BsonDoc(data), true),
        _ => (BodySrc::BsonDoc(bytes), false),
    };
    Some(Parsed {
        kind: Cow::Borrowed(kind),
        queue: queue.map(Cow::Borrowed),
        topic: topic.map(Cow::Borrowed),
        seq,
        starttime: starttime.map(Cow::Borrowed),
        body,
        body_is_data,
    })
}

/// With an element of type `kind` named `name` at `at` in `doc`: the index of its value.
/// (Inlined where the name is a constant: the compare is then a few integer compares, not a
/// `memcmp` call.)
#[inline(always)]
fn element_at(doc: &[u8], at: usize, kind: u8, name: &[u8]) -> Option<usize> {
    let value = at + 2 + name.len();
    (doc.get(at) == Some(&kind)
        && crate::json_scan::literal_at(doc, at + 1, name)
        && doc.get(value - 1) == Some(&0))
    .then_some(value)
}

/// [`parse_bson`] for any layout.
fn parse_bson_field_by_field(bytes: &[u8]) -> Result<Parsed<'_>, String> {
    let (mut kind, mut queue, mut topic, mut starttime) = (None, None, None, None);
    let (mut seq, mut data) = (None, None);
    // A field besides the head could not be read: the body is the whole message, raw.
    let mut damaged = false;
    let known = |kind: Option<&str>, queue: Option<&str>, seq: Option<i64>| {
        let mut out = String::new();
        if let Some(kind) = kind {
            out.push_str(&format!(" type {kind:?}"));
        }
        if let Some(queue) = queue {
            out.push_str(&format!(" queue {queue}"));
        }
        if let Some(seq) = seq {
            out.push_str(&format!(" seq {seq}"));
        }
        if out.is_empty() {
            " (type, queue and seq unknown)".to_owned()
        } else {
            format!(" (of{out})")
        }
    };
    // The first head field that cannot be read; the scan goes on to name queue and seq.
    let mut head_error: Option<String> = None;
    let mut fields = bson_scan::elements(bytes)?;
    loop {
        let (key, value) = match fields.read() {
            Ok(Some(element)) => element,
            Ok(None) => break,
            Err(e) => {
                // With the head read, the event is delivered (its body raw); else an error.
                if head_error.is_none() && (kind.is_none() || queue.is_none() || seq.is_none()) {
                    head_error = Some(e);
                }
                damaged = true;
                break;
            }
        };
        match key {
            b"type" => match bson_str("type", value) {
                Ok(text) => kind = text,
                Err(e) => {
                    head_error.get_or_insert(e);
                }
            },
            b"queue" => match bson_str("queue", value) {
                Ok(text) => queue = text,
                Err(e) => {
                    let lossy = match value {
                        Value::String(b) => format!(" (queue {:?})", String::from_utf8_lossy(b)),
                        _ => String::new(),
                    };
                    head_error.get_or_insert(format!("{e}{lossy}"));
                }
            },
            b"topic" | b"starttime" => {
                let slot = if key == b"topic" {
                    &mut topic
                } else {
                    &mut starttime
                };
                *slot = match value {
                    Value::String(b) => match std::str::from_utf8(b) {
                        Ok(text) => Some(Cow::Borrowed(text)),
                        Err(_) => {
                            damaged = true;
                            Some(String::from_utf8_lossy(b))
                        }
                    },
                    // Null counts as absent; another type is kept in the body (as JSON).
                    _ => None,
                };
            }
            b"seq" => match value {
                Value::Null => seq = None,
                Value::Int32(v) => seq = Some(i64::from(v)),
                Value::Int64(v) => seq = Some(v),
                Value::Double(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => seq = Some(v as i64),
                other => {
                    head_error.get_or_insert(format!(
                        "BSON message field `seq` is a {}, not an integer",
                        type_name(other)
                    ));
                }
            },
            b"data" => data = Some(value),
            _ => {}
        }
    }
    if let Some(e) = head_error {
        return Err(format!("{e}{}", known(kind, queue, seq)));
    }
    let kind =
        kind.ok_or_else(|| format!("a BSON message without `type`{}", known(None, queue, seq)))?;
    let (body, body_is_data) = match data {
        Some(Value::Document(data)) if !damaged && is_hermes_bson(data) => {
            (BodySrc::BsonDoc(data), true)
        }
        _ => (BodySrc::BsonDoc(bytes), false),
    };
    Ok(Parsed {
        kind: Cow::Borrowed(kind),
        queue: queue.map(Cow::Borrowed),
        topic,
        seq,
        starttime,
        body,
        body_is_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn broken_bson_messages_are_errors_not_panics() {
        let bytes = bson::to_vec(&doc! {"type": "T", "data": {"a": "text", "b": [1_i32]}}).unwrap();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] ^= flip;
                let _ = parse_bson(&changed);
            }
        }
        assert!(parse_bson(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn json_message_body_is_data_for_hermes_events_else_the_message() {
        let hermes = r#"{"type":"E","queue":"Q","sender":"s","topic":"T","seq":4,"starttime":"2024-01-01T00:00:00.000001Z","data":{"evcategory":"base","eventtype":"added","objtype":"X","objpkey":1,"objattrs":{},"step":0,"isPartiallyProcessed":false}}"#;
        let parsed = parse_json(hermes).unwrap();
        assert_eq!(parsed.seq, Some(4));
        assert_eq!(parsed.category(), "T");
        assert_eq!(parsed.timestamp_micros(), Some(1_704_067_200_000_001));
        let BodySrc::Text(body) = parsed.body else {
            panic!("text body")
        };
        assert!(body.starts_with(r#"{"evcategory":"base""#));
        let plain = r#"{"type":"NOTICE","queue":"Q","seq":1,"data":{"mag":3.5}}"#;
        let parsed = parse_json(plain).unwrap();
        assert_eq!(parsed.category(), "NOTICE");
        assert!(matches!(parsed.body, BodySrc::Text(t) if t == plain));
        assert!(parse_json(r#"{"queue":"Q"}"#).is_err());
        assert!(parse_json("{").is_err());
    }

    #[test]
    fn bson_message_fields() {
        let bytes = bson::to_vec(
            &doc! {"type": "NOTICE", "queue": "Q", "seq": 3_i64, "topic": "PICK",
            "data": {"evcategory": "base", "eventtype": "added"}},
        )
        .unwrap();
        let parsed = parse_bson(&bytes).unwrap();
        assert_eq!(parsed.seq, Some(3));
        assert_eq!(parsed.category(), "PICK");
        assert!(matches!(parsed.body, BodySrc::BsonDoc(data) if data.len() < bytes.len()));
        let bytes = bson::to_vec(&doc! {"type": "NOTICE", "seq": 3_i32, "data": 1_i32}).unwrap();
        assert!(matches!(
            parse_bson(&bytes).unwrap().body,
            BodySrc::BsonDoc(whole) if whole == bytes
        ));
        let bytes = bson::to_vec(&doc! {"seq": 3_i32}).unwrap();
        assert!(parse_bson(&bytes).is_err());
    }

    #[test]
    fn bad_message_fields_are_named() {
        let read = |text: &str| JsonHead::read(text.as_bytes(), 0);
        assert!(read(r#"{"type":1}"#)
            .unwrap_err()
            .contains("`type` is not a string"));
        assert!(read(r#"{"type":"A","seq":"x"}"#)
            .unwrap_err()
            .contains("`seq` is not an integer"));
        assert!(read(r#"{"queue":"A"}"#)
            .unwrap_err()
            .contains("missing field `type`"));
        assert!(read(r#"{"type":"A" "seq":1}"#)
            .unwrap_err()
            .contains("`,` or `}` expected"));
        assert!(
            read(r#"{"type":"A","seq":4"#).unwrap().is_none(),
            "incomplete"
        );
    }

    /// A message as the servers write it, with the given parts (`None`: field left out).
    fn as_written(fields: &[(&str, Option<&str>)]) -> String {
        let parts: Vec<String> = fields
            .iter()
            .filter_map(|(key, value)| value.map(|v| format!("\"{key}\":{v}")))
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    #[test]
    fn messages_as_the_servers_write_them_are_read_with_fixed_compares() {
        let hermes =
            r#"{"evcategory":"base","eventtype":"modified","objattrs":{"a":"}"},"step":0}"#;
        let full = as_written(&[
            ("type", Some(r#""EVENT""#)),
            ("queue", Some(r#""A""#)),
            ("sender", Some(r#""cid-1""#)),
            ("topic", Some(r#""base""#)),
            ("seq", Some("123456789012345678")),
            ("starttime", Some(r#""2026-12-07T01:02:03.000004Z""#)),
            ("endtime", Some(r#""2026-12-07T01:02:04.000004Z""#)),
            ("data", Some(hermes)),
        ]);
        let text = format!("{full},");
        let (end, head) = JsonHead::read_as_written(text.as_bytes(), 0).expect("read as written");
        assert_eq!(end, full.len());
        assert_eq!(
            Ok(Some((end, head.clone()))),
            JsonHead::read_field_by_field(text.as_bytes(), 0)
        );
        let parsed = head.parsed(&text, 0..end);
        assert_eq!(parsed.kind, "EVENT");
        assert_eq!(parsed.queue.as_deref(), Some("A"));
        assert_eq!(parsed.topic.as_deref(), Some("base"));
        assert_eq!(parsed.seq, Some(123_456_789_012_345_678));
        assert_eq!(parsed.timestamp_micros(), Some(1_796_605_323_000_004));
        assert!(parsed.body_is_data);
        assert!(matches!(parsed.body, BodySrc::Text(body) if body == hermes));
        // BSON the same way.
        let data = bson::doc! {"evcategory": "base", "eventtype": "added", "objpkey": 1.0};
        let message = bson::doc! {
            "type": "EVENT", "queue": "A", "sender": "cid", "topic": "base", "seq": 7_i64,
            "starttime": "2026-12-07T01:02:03.000004Z", "endtime": "2026-12-07T01:02:03.000004Z",
            "data": data.clone(),
        };
        let bytes = bson::to_vec(&message).unwrap();
        let parsed = parse_bson_as_written(&bytes).expect("read as written");
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", parse_bson_field_by_field(&bytes).unwrap())
        );
        assert_eq!((parsed.kind.as_ref(), parsed.seq), ("EVENT", Some(7)));
        assert_eq!(parsed.category(), "base");
        assert!(
            matches!(parsed.body, BodySrc::BsonDoc(body) if body == bson::to_vec(&data).unwrap())
        );
        let message = bson::doc! {"type": "EVENT", "queue": "A", "seq": -7_i32, "data": data};
        let bytes = bson::to_vec(&message).unwrap();
        let parsed = parse_bson_as_written(&bytes).expect("an int32 seq read as written");
        assert_eq!((parsed.seq, parsed.body_is_data), (Some(-7), true));
        for other in [
            bson::doc! {"type": "E", "seq": 7.0},
            bson::doc! {"seq": 7_i32, "type": "E"},
            bson::doc! {"type": "E", "queue": bson::Bson::Null},
            bson::doc! {"type": "E", "data": [1_i32]},
            bson::doc! {"type": "E", "scMessageType": "x"},
        ] {
            let bytes = bson::to_vec(&other).unwrap();
            assert!(parse_bson_as_written(&bytes).is_none(), "{other}");
            assert!(parse_bson(&bytes).is_ok(), "{other}");
        }
        for short in [r#"{"type":"EOF"}"#, r#"{"type":"HEARTBEAT"}"#] {
            assert!(
                JsonHead::read_as_written(short.as_bytes(), 0).is_some(),
                "{short}"
            );
        }
        // Left to the field-by-field reader: escapes, whitespace, another order, null, a
        // fractional or 19-digit seq, an unknown field, an incomplete message.
        for other in [
            r#"{"type":"E\"","seq":1}"#,
            r#"{"type": "E","seq":1}"#,
            r#"{"seq":1,"type":"E"}"#,
            r#"{"type":"E","queue":null}"#,
            r#"{"type":"E","seq":1.0}"#,
            r#"{"type":"E","seq":1234567890123456789}"#,
            r#"{"type":"E","seq":1,"extra":2}"#,
            r#"{"type":"E","seq":1"#,
        ] {
            assert!(
                JsonHead::read_as_written(other.as_bytes(), 0).is_none(),
                "{other}"
            );
            assert!(JsonHead::read(other.as_bytes(), 0).is_ok(), "{other}");
        }
    }

    mod properties {
        use super::super::*;
        use super::as_written;
        use proptest::prelude::*;

        /// A string field as some server may write it: usually plain, sometimes with escapes,
        /// null, a number, or left out.
        fn text_value() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                12 => "[a-zA-Z0-9_:. -]{0,20}".prop_map(|s| Some(format!("\"{s}\""))),
                1 => ".{0,10}".prop_map(|s| Some(serde_json::to_string(&s).unwrap())),
                1 => Just(Some("null".to_owned())),
                1 => Just(Some("7".to_owned())),
                3 => Just(None),
            ]
        }

        /// `seq` as some server may write it.
        fn seq_value() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                6 => (-1_000i64..1_000).prop_map(|n| Some(n.to_string())),
                6 => (0..1_000_000_000_000i64).prop_map(|n| Some(n.to_string())),
                1 => any::<i64>().prop_map(|n| Some(n.to_string())),
                1 => "-?[0-9]{17,20}(\\.[0-9])?(e[0-9])?".prop_map(Some),
                1 => Just(Some("9999999999999999999".to_owned())),
                1 => Just(Some("null".to_owned())),
                1 => Just(Some("\"5\"".to_owned())),
                2 => Just(None),
            ]
        }

        /// `data` as some server may write it: Hermes events (keys sorted) most often.
        fn data_value() -> impl Strategy<Value = Option<String>> {
            let hermes = (text_value(), text_value(), "[ -~]{0,30}").prop_map(|(c, e, rest)| {
                let mut object = serde_json::Map::new();
                for (key, value) in [("evcategory", c), ("eventtype", e)] {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), serde_json::from_str(&value).unwrap());
                    }
                }
                object.insert("objattrs".to_owned(), serde_json::json!({"text": rest}));
                Some(serde_json::Value::Object(object).to_string())
            });
            prop_oneof![
                4 => hermes,
                1 => "[ -~]{0,20}".prop_map(|s| Some(serde_json::json!([s, {"k": s}]).to_string())),
                1 => Just(Some("12".to_owned())),
                1 => Just(None),
            ]
        }

        proptest! {
            /// Whatever a server (or something pretending to be one) sends as a message, reading
            /// it ends in a message or an error, never a panic.
            #[test]
            fn any_bson_bytes_are_read_without_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..300)
            ) {
                let _ = parse_bson(&bytes);
            }

            #[test]
            fn any_json_text_is_read_without_a_panic(text in ".{0,300}") {
                let _ = parse_json(&text);
            }

        }

        /// A BSON field value as some server may write it (`None`: left out).
        fn bson_value(strings: u32) -> impl Strategy<Value = Option<bson::Bson>> {
            use bson::Bson;
            prop_oneof![
                strings => "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Some(Bson::String(s))),
                1 => ".{0,6}".prop_map(|s| Some(Bson::String(s))),
                1 => Just(Some(Bson::Null)),
                1 => any::<i32>().prop_map(|n| Some(Bson::Int32(n))),
                1 => any::<i64>().prop_map(|n| Some(Bson::Int64(n))),
                1 => (-1000i64..1000).prop_map(|n| Some(Bson::Double(n as f64))),
                2 => Just(None),
            ]
        }

        fn bson_data() -> impl Strategy<Value = Option<bson::Bson>> {
            (
                bson_value(6),
                bson_value(6),
                proptest::option::of("[a-d]{1,2}"),
            )
                .prop_map(|(category, event_type, before)| {
                    let mut data = bson::Document::new();
                    if let Some(key) = before {
                        data.insert(key, 1_i32);
                    }
                    for (key, value) in [("evcategory", category), ("eventtype", event_type)] {
                        if let Some(value) = value {
                            data.insert(key, value);
                        }
                    }
                    data.insert("objattrs", bson::doc! {"k": [1.5, "v"]});
                    Some(bson::Bson::Document(data))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// As for JSON: where the fixed-compare reader reads a BSON message, the
            /// field-by-field reader reads the same, whatever the fields' types and presence,
            /// cut short or with a byte changed.
            #[test]
            fn bson_messages_read_with_fixed_compares_are_read_alike_field_by_field(
                kind in bson_value(12),
                queue in bson_value(12),
                sender in bson_value(12),
                topic in bson_value(12),
                seq in prop_oneof![
                    3 => (-1000i64..1000).prop_map(|n| Some(bson::Bson::Int64(n))),
                    3 => any::<i32>().prop_map(|n| Some(bson::Bson::Int32(n))),
                    1 => bson_value(1),
                ],
                starttime in bson_value(12),
                endtime in bson_value(12),
                data in prop_oneof![4 => bson_data(), 1 => bson_value(1)],
                extra in proptest::bool::weighted(0.1),
                cut in any::<proptest::sample::Index>(),
                change in proptest::option::of((any::<proptest::sample::Index>(), any::<u8>())),
            ) {
                let mut message = bson::Document::new();
                for (key, value) in [
                    ("type", kind), ("queue", queue), ("sender", sender), ("topic", topic),
                    ("seq", seq), ("starttime", starttime), ("endtime", endtime), ("data", data),
                ] {
                    if let Some(value) = value {
                        message.insert(key, value);
                    }
                }
                if extra {
                    message.insert("scMessageType", "x");
                }
                let mut bytes = bson::to_vec(&message).unwrap();
                if let Some((at, byte)) = change {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                for len in [bytes.len(), cut.index(bytes.len() + 1)] {
                    let bytes = &bytes[..len];
                    if let Some(read) = parse_bson_as_written(bytes) {
                        prop_assert_eq!(
                            format!("{:?}", Ok::<_, String>(read)),
                            format!("{:?}", parse_bson_field_by_field(bytes)),
                        );
                    }
                }
            }
        }

        proptest! {
            /// The Hermes check on a BSON `data` says what the bson crate reads of it.
            #[test]
            fn the_bson_hermes_check_says_what_the_bson_crate_reads(
                data in bson_data(),
                cut in proptest::option::of(any::<proptest::sample::Index>()),
                change in (any::<proptest::sample::Index>(), any::<u8>()),
            ) {
                let Some(bson::Bson::Document(data)) = data else {
                    unreachable!("bson_data makes documents")
                };
                let bytes = bson::to_vec(&data).unwrap();
                let expected = data.get_str("evcategory").is_ok() && data.get_str("eventtype").is_ok();
                prop_assert_eq!(is_hermes_bson(&bytes), expected);
                if let Some(cut) = cut {
                    // Cut short, it is no document: never a Hermes event.
                    prop_assert!(!is_hermes_bson(&bytes[..cut.index(bytes.len())]));
                }
                // A byte changed: where the compares see a Hermes event, the loop does too.
                let mut changed = bytes.clone();
                let at = change.0.index(changed.len());
                changed[at] = change.1;
                if let Ok(fields) = bson_scan::elements(&changed) {
                    if hermes_fields_first(&changed) {
                        prop_assert!(is_hermes_bson_by_loop(fields));
                    }
                }
            }
        }

        proptest! {
            // About one case in eight is a message the fixed compares read.
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// Whatever the fields' values, their presence, and whether the message is cut
            /// short or has a byte changed: where the fixed-compare reader reads a message, the
            /// field-by-field reader reads the same.
            #[test]
            fn messages_read_with_fixed_compares_are_read_alike_field_by_field(
                kind in text_value(),
                queue in text_value(),
                sender in text_value(),
                topic in text_value(),
                seq in seq_value(),
                starttime in text_value(),
                endtime in text_value(),
                data in data_value(),
                cut in any::<proptest::sample::Index>(),
                change in proptest::option::of((
                    any::<proptest::sample::Index>(),
                    proptest::sample::select(br#" ,:{}"\0"#.to_vec()),
                )),
            ) {
                let text = as_written(&[
                    ("type", kind.as_deref()),
                    ("queue", queue.as_deref()),
                    ("sender", sender.as_deref()),
                    ("topic", topic.as_deref()),
                    ("seq", seq.as_deref()),
                    ("starttime", starttime.as_deref()),
                    ("endtime", endtime.as_deref()),
                    ("data", data.as_deref()),
                ]);
                let mut bytes = text.into_bytes();
                if let Some((at, byte)) = change {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                for len in [bytes.len(), cut.index(bytes.len() + 1)] {
                    let bytes = &bytes[..len];
                    if let Some(read) = JsonHead::read_as_written(bytes, 0) {
                        prop_assert_eq!(
                            Ok(Some(read)),
                            JsonHead::read_field_by_field(bytes, 0),
                            "{}", String::from_utf8_lossy(bytes)
                        );
                    }
                }
            }

            /// Structured JSON messages with arbitrary field values, the scanner's fast path.
            #[test]
            fn json_messages_with_any_strings_are_read_without_a_panic(
                kind in ".{0,12}", queue in ".{0,12}", seq in any::<i64>(), data in ".{0,60}"
            ) {
                let message = serde_json::json!({
                    "type": kind, "queue": queue, "seq": seq, "data": {"text": data}
                })
                .to_string();
                let parsed = parse_json(&message);
                prop_assert!(parsed.is_ok(), "{}: {:?}", message, parsed.err());
            }
        }
    }
}
