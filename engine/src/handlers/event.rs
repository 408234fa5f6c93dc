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
            if compact(text, out).is_err() {
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

/// Copies JSON text to `out` without insignificant whitespace, validating it: the bytes
/// [`transcode_compact`] writes (serde_json's own form: strings unescaped and escaped again,
/// numbers read and written again), or its error.
///
/// Text without a backslash (the usual body) takes a shorter way: one validating read that
/// builds nothing, then a copy without the whitespace in which only the numbers are read and
/// written again (a plain integer of up to 18 digits is already in that form). A backslash
/// sends the whole text through [`transcode_compact`], since an escape may be written back
/// another way (`\u00e9` as `é`, `\/` as `/`).
fn compact(text: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let bytes = text.as_bytes();
    if memchr::memchr(b'\\', bytes).is_some() {
        return transcode_compact(text, out);
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)?;
    let mark = out.len();
    out.reserve(bytes.len());
    let (mut at, mut depth) = (0, 0);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > DEEP {
                    // The transcoder's recursion limit decides (the validating read has none).
                    out.truncate(mark);
                    return transcode_compact(text, out);
                }
                out.push(byte);
                at += 1;
            }
            b'"' => {
                // Valid JSON without a backslash: the string ends at the next quote.
                let end =
                    memchr::memchr(b'"', &bytes[at + 1..]).map_or(bytes.len(), |n| at + 2 + n);
                out.extend_from_slice(&bytes[at..end]);
                at = end;
            }
            b' ' | b'\t' | b'\n' | b'\r' => at += 1,
            b'-' | b'0'..=b'9' => {
                let start = at;
                while bytes
                    .get(at)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    at += 1;
                }
                let number = &text[start..at];
                if is_plain_integer(number) {
                    out.extend_from_slice(number.as_bytes());
                } else {
                    // As serde_json reads and writes it (`1e2` as `100.0`, `-0` as `-0.0`).
                    let value: serde_json::Number = serde_json::from_str(number)?;
                    serde_json::to_writer(&mut *out, &value)?;
                }
            }
            // Brackets, commas, colons and the letters of true, false and null.
            _ => {
                out.push(byte);
                at += 1;
            }
        }
    }
    Ok(())
}

/// Containers nested deeper than this go to [`transcode_compact`], whose reader stops at
/// serde_json's recursion limit (128).
const DEEP: usize = 100;

/// An integer serde_json writes back as it is: no sign but `-`, no leading zero, not `-0`, and
/// at most 18 digits (inside both i64 and u64).
fn is_plain_integer(number: &str) -> bool {
    let digits = number.strip_prefix('-').unwrap_or(number);
    !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (!digits.starts_with('0') || (digits == "0" && !number.starts_with('-')))
}

/// Copies JSON text to `out` without insignificant whitespace, validating it on the way: the
/// reference [`compact`] keeps to.
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

    /// `compact`'s output and error are `transcode_compact`'s.
    fn same_as_transcode(text: &str) {
        let (mut fast, mut reference) = (Vec::new(), Vec::new());
        let fast_result = compact(text, &mut fast);
        let reference_result = transcode_compact(text, &mut reference);
        assert_eq!(
            fast_result.is_ok(),
            reference_result.is_ok(),
            "{text:?}: {fast_result:?} vs {reference_result:?}"
        );
        if reference_result.is_ok() {
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&reference),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_short_way_writes_what_the_transcoder_writes() {
        for text in [
            "{}",
            " [ ] ",
            "0",
            "-0",
            "-0.0",
            "7",
            "-7",
            "1.0",
            "1e2",
            "1E+2",
            "-1e-2",
            "0.1",
            "48.580",
            "123456789012345678",
            "-123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.7976931348623157e308",
            "1e400",
            "01",
            "1.",
            "-",
            "+1",
            "true",
            " null ",
            "tru",
            "\"a b\"",
            "\"a\\u00e9\"",
            "\"a\\/b\"",
            "\"\\ud800\"",
            "{\"a\" : [1, 2.50, {\"b\":null}], \"c\":\"x y\"}",
            "{\n  \"evcategory\": \"base\",\n  \"objattrs\": {\"latitude\": 48.58}\n}",
            "{\"a\":1} x",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\"}",
            "\"\u{1}\"",
            "\"caf\u{e9} \u{1F600}\"",
            "",
        ] {
            same_as_transcode(text);
        }
        for depth in [99, 100, 101, 127, 128, 129, 200] {
            same_as_transcode(&format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::Bool),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<u64>().prop_map(serde_json::Value::from),
                any::<f64>()
                    .prop_filter("finite", |x| x.is_finite())
                    .prop_map(serde_json::Value::from),
                ".{0,8}".prop_map(serde_json::Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                    prop::collection::btree_map(".{0,6}", inner, 0..6)
                        .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn any_json_compact_or_pretty_is_written_as_the_transcoder_writes_it(
                value in json(),
                cut in 0usize..64,
            ) {
                let compact_text = value.to_string();
                let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
                for text in [&compact_text, &pretty] {
                    same_as_transcode(text);
                    // A cut text is (mostly) not JSON: the same error either way.
                    let mut end = cut.min(text.len());
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    same_as_transcode(&text[..end]);
                }
            }

            #[test]
            fn numbers_as_people_write_them_are_written_as_the_transcoder_writes_them(
                text in "-?(0|[1-9][0-9]{0,22})(\\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?"
            ) {
                same_as_transcode(&text);
                same_as_transcode(&format!("[{text}, {{\"x\": {text}}}]"));
            }
        }
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
