//! Body framing in both formats.
//!
//! JSON: always the `{"0":...,"1":...}` wrapper, both directions, even for one
//! message. BSON: documents back to back, each starting with its own
//! little-endian int32 length; no wrapper, no count.

use bson::Document;
use serde_json::Value;

use crate::gojson;
use crate::message::Incoming;

/// Largest BSON document accepted in a /send body.
pub const MAX_BSON_SIZE: usize = 16 * 1024 * 1024;

/// Session (and body) format, fixed by the Content-Type of `/open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`.
    Json,
    /// `application/bson` (anything that is not exactly `application/json`).
    Bson,
}

impl Format {
    /// The reference server's rule: exact string equality with
    /// `application/json`; anything else (absent too) is BSON.
    pub fn from_content_type(ct: Option<&str>) -> Format {
        if ct == Some("application/json") {
            Format::Json
        } else {
            Format::Bson
        }
    }

    /// The Content-Type of responses in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Bson => "application/bson",
        }
    }

    /// The name shown by /status.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Bson => "BSON",
        }
    }
}

/// Writes the items of one JSON response: `{"0":` before the first item,
/// `,"N":` before later ones, `}` at the end.
#[derive(Debug, Default)]
pub struct JsonList {
    written: usize,
}

impl JsonList {
    /// The bytes for the next item.
    pub fn item(&mut self, json: &str) -> String {
        let sep = if self.written == 0 { "{" } else { "," };
        let out = format!("{sep}\"{}\":{json}", self.written);
        self.written += 1;
        out
    }

    /// The closing brace, or nothing if no item was written.
    pub fn close(&self) -> &'static str {
        if self.written == 0 {
            ""
        } else {
            "}"
        }
    }
}

/// Encodes one BSON document.
pub fn bson_bytes(doc: &Document) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a well-formed document.
    if doc.to_writer(&mut out).is_err() {
        out.clear();
    }
    out
}

/// Splits a body into its BSON documents: each item is a document or the text
/// of the error that stops reading (`invalid BSON size`, ...). Strings that are not UTF-8 are
/// accepted, as the reference server (Go) does: such a document is decoded with U+FFFD for
/// them and comes with its bytes as sent.
pub fn bson_documents(
    body: &[u8],
) -> impl Iterator<Item = Result<(Document, Option<&[u8]>), String>> + '_ {
    let mut rest = body;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        failed = true;
        if rest.len() < 4 {
            return Some(Err("unexpected EOF".to_owned()));
        }
        let size = i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let size = match usize::try_from(size) {
            Ok(s) if (5..=MAX_BSON_SIZE).contains(&s) => s,
            _ => return Some(Err("invalid BSON size".to_owned())),
        };
        if rest.len() < size {
            return Some(Err("unexpected EOF".to_owned()));
        }
        let (doc, tail) = rest.split_at(size);
        rest = tail;
        let decoded = match Document::from_reader(doc) {
            Ok(d) => Ok((d, None)),
            Err(e) => bson::from_slice_utf8_lossy::<Document>(doc)
                .map(|d| (d, Some(doc)))
                .map_err(|_| format!("invalid BSON data: {e}")),
        };
        failed = decoded.is_err();
        Some(decoded)
    })
}

/// The messages of a /send body in order, plus the 400 text of the error that
/// stopped reading, if any. Messages before the error are still to be pushed
/// (the reference server pushes them one by one while reading).
pub fn send_messages(body: &[u8], format: Format) -> (Vec<Incoming>, Option<String>) {
    let mut out = Vec::new();
    match format {
        Format::Json => {
            for value in gojson::values(body) {
                let value = match value {
                    Ok(v) => v,
                    Err(e) => return (out, Some(format!("invalid JSON data: {e}"))),
                };
                match json_message_list(&value) {
                    Ok(list) => out.extend(list),
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        Format::Bson => {
            for doc in bson_documents(body) {
                let parsed = doc.and_then(|(d, raw)| {
                    match raw {
                        Some(raw) => Incoming::from_lossy_bson(&d, raw),
                        None => Incoming::from_bson(&d),
                    }
                    .map_err(|e| format!("invalid BSON data: {e}"))
                });
                match parsed {
                    Ok(m) => out.push(m),
                    Err(e) => return (out, Some(e)),
                }
            }
        }
    }
    (out, None)
}

/// One JSON /send document: an object keyed "0".."n-1", every key once,
/// values non-null.
fn json_message_list(v: &Value) -> Result<Vec<Incoming>, String> {
    let Value::Object(obj) = v else {
        return Err(format!(
            "invalid JSON data: json: cannot unmarshal {} into Go value of type map[string]*main.Message",
            gojson::kind_name(v)
        ));
    };
    let mut slots: Vec<Option<Incoming>> = vec![None; obj.len()];
    let mut bad_list = false;
    for (key, val) in obj {
        let parsed = if val.is_null() {
            None
        } else {
            Some(Incoming::from_json(val).map_err(|e| format!("invalid JSON data: {e}"))?)
        };
        match key.parse::<usize>() {
            Ok(i) if i < slots.len() && key == &i.to_string() => slots[i] = parsed,
            _ => bad_list = true,
        }
    }
    if bad_list || slots.iter().any(Option::is_none) {
        return Err("invalid JSON message list".to_owned());
    }
    Ok(slots.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn json_list_framing() {
        let mut l = JsonList::default();
        assert_eq!(l.close(), "");
        assert_eq!(l.item("{\"type\":\"EOF\"}"), "{\"0\":{\"type\":\"EOF\"}");
        assert_eq!(l.item("{}"), ",\"1\":{}");
        assert_eq!(l.close(), "}");
    }

    #[test]
    fn content_type_rule_is_exact() {
        assert_eq!(
            Format::from_content_type(Some("application/json")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Format::Bson
        );
        assert_eq!(Format::from_content_type(None), Format::Bson);
    }

    #[test]
    fn json_send_lists() {
        let (msgs, err) = send_messages(br#"{"1":{"type":"X","queue":"Q"}}"#, Format::Json);
        assert!(msgs.is_empty());
        assert_eq!(err.as_deref(), Some("invalid JSON message list"));
        let (msgs, err) = send_messages(
            br#"{"1":{"type":"B","queue":"Q"},"0":{"type":"A","queue":"Q"}}"#,
            Format::Json,
        );
        assert_eq!(err, None);
        assert_eq!(msgs[0].message.kind, "A");
        assert_eq!(msgs[1].message.kind, "B");
        let (_, err) = send_messages(br#"{"0":null}"#, Format::Json);
        assert_eq!(err.as_deref(), Some("invalid JSON message list"));
        let (_, err) = send_messages(br#"{"0":{"type":"X","queue":"Q"}}"#, Format::Bson);
        assert_eq!(err.as_deref(), Some("invalid BSON size"));
    }

    #[test]
    fn bson_documents_back_to_back() {
        let mut body = bson_bytes(&doc! {"type": "A", "queue": "Q"});
        body.extend(bson_bytes(
            &doc! {"type": "B", "queue": "Q", "data": {"n": 2}},
        ));
        let (msgs, err) = send_messages(&body, Format::Bson);
        assert_eq!(err, None);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].message.kind, "B");
        body.extend([1, 2]);
        let (msgs, err) = send_messages(&body, Format::Bson);
        assert_eq!(msgs.len(), 2);
        assert_eq!(err.as_deref(), Some("unexpected EOF"));
    }

    #[test]
    fn bson_strings_that_are_not_utf8_are_kept_as_sent() {
        let mut body = bson_bytes(&doc! {"type": "A", "queue": "Q", "data": {"s": "XXXX", "n": 1}});
        let at = body
            .windows(4)
            .position(|w| w == b"XXXX")
            .expect("placeholder");
        body[at..at + 4].copy_from_slice(b"a\xffb\xfe");
        let (msgs, err) = send_messages(&body, Format::Bson);
        assert_eq!(err, None);
        let mut message = msgs[0].message.clone();
        message.seq = 4;
        let (kind, value) = message.data_raw.clone().expect("kept raw");
        assert_eq!(kind, 0x03);
        let data_at = body
            .windows(value.len())
            .position(|w| w == value.as_slice());
        assert!(data_at.is_some(), "the data document as sent");
        // BSON: written back as sent; JSON: U+FFFD, as the Go encoder writes it.
        let written = message.to_bson_bytes();
        assert!(written.windows(value.len()).any(|w| w == value.as_slice()));
        assert_eq!(
            i32::from_le_bytes([written[0], written[1], written[2], written[3]]) as usize,
            written.len()
        );
        let lossy = bson::from_slice_utf8_lossy::<Document>(&written).expect("a document");
        assert_eq!(lossy.get_i64("seq"), Ok(4));
        assert_eq!(
            lossy.get_document("data").and_then(|d| d.get_str("s")),
            Ok("a\u{fffd}b\u{fffd}")
        );
        assert!(message
            .to_json()
            .expect("json")
            .contains("a\u{fffd}b\u{fffd}"));
    }
}
