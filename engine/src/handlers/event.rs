//! An event on its way through the handlers, with what they derive from it computed once.

use base64::Engine as _;
use buslink_plugin_api::hermes::HermesHeader;
use buslink_plugin_api::{Body, Event, OffsetRef};
use chrono::SecondsFormat;
use std::cell::OnceCell;

/// An event being dispatched. The Hermes header and the JSON line are computed on first use and
/// shared by every handler.
pub struct DispatchedEvent<'a> {
    pub event: Event<'a>,
    header: OnceCell<HermesHeader<'a>>,
    line: OnceCell<Vec<u8>>,
}

impl<'a> DispatchedEvent<'a> {
    pub fn new(event: Event<'a>) -> Self {
        DispatchedEvent {
            event,
            header: OnceCell::new(),
            line: OnceCell::new(),
        }
    }

    /// The Hermes routing fields of the body (empty when it is not a JSON object).
    pub fn header(&self) -> &HermesHeader<'a> {
        self.header.get_or_init(|| match self.event.body {
            Body::Json(text) => HermesHeader::parse(text).unwrap_or_default(),
            Body::Bytes(_) => HermesHeader::default(),
        })
    }

    /// The offset as plain text (`163`, `ev-0001`, bytes in base64), for environments and logs.
    pub fn offset_text(&self) -> String {
        match self.event.offset {
            OffsetRef::Int(i) => i.to_string(),
            OffsetRef::Float(x) => x.to_string(),
            OffsetRef::String(s) => s.to_owned(),
            OffsetRef::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        }
    }

    /// The event as one JSON line (with the trailing newline):
    /// `{"offset":..,"timestamp":"RFC 3339","category":..,"event":<body>}`.
    ///
    /// A JSON body is re-emitted compactly (bus bodies may be pretty-printed). A body that is not
    /// JSON is kept as `"body_text"` (text) or `"body_base64"` (bytes) instead of `"event"`.
    pub fn line(&self) -> &[u8] {
        self.line.get_or_init(|| {
            let mut line = Vec::with_capacity(self.event.body.as_bytes().len() + 128);
            write_line(&mut line, &self.event);
            line
        })
    }
}

fn write_line(out: &mut Vec<u8>, event: &Event<'_>) {
    // Writing JSON to a Vec cannot fail for these types.
    out.extend_from_slice(b"{\"offset\":");
    let _ = serde_json::to_writer(&mut *out, &event.offset);
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(
        event
            .timestamp
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"category\":");
    let _ = serde_json::to_writer(&mut *out, event.category);
    match event.body {
        Body::Json(text) => {
            let mark = out.len();
            out.extend_from_slice(b",\"event\":");
            if transcode_compact(text, out).is_err() {
                out.truncate(mark);
                if is_python_json(text) {
                    // JSON to Python and Hermes (lone surrogate escapes): kept verbatim.
                    out.extend_from_slice(b",\"event\":");
                    compact_verbatim(text, out);
                } else {
                    out.extend_from_slice(b",\"body_text\":");
                    let _ = serde_json::to_writer(&mut *out, text);
                }
            }
        }
        Body::Bytes(bytes) => {
            out.extend_from_slice(b",\"body_base64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}\n");
}

/// Whether `text`, which serde_json refused, is JSON to Python's `json`: valid once its lone
/// surrogate escapes are read as U+FFFD.
fn is_python_json(text: &str) -> bool {
    buslink_plugin_api::json_text::patch_lone_surrogates(text)
        .is_some_and(|patched| serde_json::from_str::<serde::de::IgnoredAny>(&patched).is_ok())
}

/// Copies valid JSON text to `out` without the whitespace between tokens, every string
/// (escapes included) exactly as written.
fn compact_verbatim(text: &str, out: &mut Vec<u8>) {
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text.as_bytes() {
        if in_string {
            out.push(byte);
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = byte == b'"';
            out.push(byte);
        }
    }
}

/// Copies JSON text to `out` without insignificant whitespace, validating it on the way.
fn transcode_compact(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut serializer = serde_json::Serializer::new(&mut *out);
    serde_transcode::transcode(&mut deserializer, &mut serializer)?;
    deserializer.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn event(body: Body<'_>) -> Event<'_> {
        Event {
            offset: OffsetRef::Int(56),
            timestamp: DateTime::from_timestamp_micros(1_795_345_271_747_962).unwrap(),
            category: "base",
            body,
        }
    }

    #[test]
    fn line_is_compact_json_with_all_fields() {
        let body = "{\n    \"eventtype\": \"added\",\n    \"name\": \"Andr\\u00e9\"\n}";
        let dispatched = DispatchedEvent::new(event(Body::Json(body)));
        let line = std::str::from_utf8(dispatched.line()).unwrap();
        assert_eq!(
            line,
            "{\"offset\":56,\"timestamp\":\"2026-11-22T11:01:11.747962Z\",\"category\":\"base\",\
             \"event\":{\"eventtype\":\"added\",\"name\":\"André\"}}\n"
        );
        assert_eq!(dispatched.header().eventtype.as_deref(), Some("added"));
    }

    #[test]
    fn a_body_with_lone_surrogate_escapes_is_json_kept_verbatim() {
        // What Python's json writes for an undecodable byte: Hermes reads it back.
        let body = "{\n    \"eventtype\": \"added\",\n    \"name\": \"Ren\\udce9 \\\"x\\\"\"\n}";
        let dispatched = DispatchedEvent::new(event(Body::Json(body)));
        let line = std::str::from_utf8(dispatched.line()).unwrap();
        assert!(
            line.ends_with(
                "\"event\":{\"eventtype\":\"added\",\"name\":\"Ren\\udce9 \\\"x\\\"\"}}\n"
            ),
            "{line}"
        );
        assert_eq!(dispatched.header().eventtype.as_deref(), Some("added"));
    }

    #[test]
    fn bodies_that_are_not_json_are_kept() {
        let text = DispatchedEvent::new(event(Body::Json("{oops")));
        let value: serde_json::Value = serde_json::from_slice(text.line()).unwrap();
        assert_eq!(value["body_text"], "{oops");
        let bytes = DispatchedEvent::new(event(Body::Bytes(&[0, 1, 2])));
        let value: serde_json::Value = serde_json::from_slice(bytes.line()).unwrap();
        assert_eq!(value["body_base64"], "AAEC");
    }
}
