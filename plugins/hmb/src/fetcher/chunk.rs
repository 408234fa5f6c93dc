//! A chunk: the events of one answer with their text, built without copying what can be
//! pointed at.

use crate::message::{BodySrc, Parsed};
use buslink_plugin_api::Body;

/// Which buffer of a [`Chunk`] a [`Span`] points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// The answer's text (`raw`).
    Raw,
    /// Text made while parsing (`extra`).
    Extra,
    /// Bytes that are not (or not known to be) text: bodies delivered raw (`bytes`).
    Bytes,
}

/// A range inside a [`Chunk`]: text, or (for a body delivered raw) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: usize,
    len: usize,
    store: Store,
}

/// One event of a chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkEvent {
    /// The queue's index in the settings.
    pub queue: usize,
    /// Its seq.
    pub seq: i64,
    /// Its timestamp (microseconds since the epoch).
    pub micros: i64,
    /// Its category.
    pub category: Span,
    /// Its body: JSON text, or the raw bytes of a body that cannot be converted to JSON.
    pub body: Span,
}

/// The events of one answer (or of one read, for /stream), with their text.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The answer itself (JSON sessions): most spans point into it, no copy made.
    pub(super) raw: String,
    /// Text made while parsing (BSON converted to JSON, unescaped strings).
    pub(super) extra: String,
    /// Bodies that cannot be converted to JSON, as they came (the BSON of the document that
    /// would have been converted); empty, and never allocated, when there are none.
    pub(super) bytes: Vec<u8>,
    /// The events, in order.
    pub events: Vec<ChunkEvent>,
    /// Every queue's next seq right after a (re-)open, before these events.
    pub positions: Option<Vec<Option<i64>>>,
    /// Every queue's next seq after this answer's messages, skipped ones (TOUCH) included:
    /// where the consumer is once it handed all these events over.
    pub after: Vec<Option<i64>>,
    /// The window ended after these events.
    pub eof: bool,
    /// Gaps, in order: (the index of the event they come before, range, count if known).
    pub gaps: Vec<(usize, String, Option<u64>)>,
}

impl Chunk {
    /// The text of a span (empty for a span of bytes: use [`body`](Self::body)).
    pub fn text(&self, span: Span) -> &str {
        let source = match span.store {
            Store::Raw => &self.raw,
            Store::Extra => &self.extra,
            Store::Bytes => return "",
        };
        source.get(span.start..span.start + span.len).unwrap_or("")
    }

    /// An event body: JSON text, or the raw bytes of a body that cannot be converted to JSON.
    pub fn body(&self, span: Span) -> Body<'_> {
        match span.store {
            Store::Bytes => Body::Bytes(
                self.bytes
                    .get(span.start..span.start + span.len)
                    .unwrap_or(&[]),
            ),
            _ => Body::Json(self.text(span)),
        }
    }
}

/// Builds a chunk's events; the text lives in `raw` (owned by the caller) or `extra`.
pub(super) struct ChunkBuilder {
    pub(super) extra: Vec<u8>,
    pub(super) bytes: Vec<u8>,
    pub(super) events: Vec<ChunkEvent>,
    pub(super) gaps: Vec<(usize, String, Option<u64>)>,
}

impl ChunkBuilder {
    pub(super) fn span(&mut self, raw: &str, text: &str) -> Span {
        let offset = (text.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
        if !raw.is_empty() && offset <= raw.len() && offset + text.len() <= raw.len() {
            Span {
                start: offset,
                len: text.len(),
                store: Store::Raw,
            }
        } else {
            let start = self.extra.len();
            self.extra.extend_from_slice(text.as_bytes());
            Span {
                start,
                len: text.len(),
                store: Store::Extra,
            }
        }
    }

    /// Adds an event. A BSON body that cannot be converted to JSON (a string that is not
    /// UTF-8, a broken element, ...) is kept as its bytes instead: the error is returned, for
    /// the caller to report; the event is added either way.
    pub(super) fn push(
        &mut self,
        raw: &str,
        queue: usize,
        seq: i64,
        micros: i64,
        parsed: &Parsed<'_>,
    ) -> Option<String> {
        let category = self.span(raw, parsed.category());
        let mut undecodable = None;
        let body = match parsed.body {
            BodySrc::Text(text) => self.span(raw, text),
            BodySrc::BsonDoc(doc) => {
                let start = self.extra.len();
                match crate::bson_scan::write_document(doc, &mut self.extra) {
                    Ok(()) => Span {
                        start,
                        len: self.extra.len() - start,
                        store: Store::Extra,
                    },
                    Err(error) => {
                        // The part written before the failure goes; the document, as it came.
                        self.extra.truncate(start);
                        undecodable = Some(error);
                        self.raw_body(doc)
                    }
                }
            }
        };
        self.events.push(ChunkEvent {
            queue,
            seq,
            micros,
            category,
            body,
        });
        undecodable
    }

    /// Keeps a body as bytes.
    pub(super) fn raw_body(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
            store: Store::Bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_bson;
    use bson::doc;

    /// A BSON message whose string "PLACEHOLDER" is replaced by bytes that are not UTF-8.
    fn with_bad_string(document: bson::Document) -> Vec<u8> {
        let mut bytes = bson::to_vec(&document).unwrap();
        let at = bytes
            .windows(11)
            .position(|w| w == b"PLACEHOLDER")
            .expect("the placeholder");
        bytes[at..at + 11].copy_from_slice(b"ab\xff\xfe cd \xc3(x");
        bytes
    }

    fn builder() -> ChunkBuilder {
        ChunkBuilder {
            extra: Vec::new(),
            bytes: Vec::new(),
            events: Vec::new(),
            gaps: Vec::new(),
        }
    }

    fn chunk(builder: ChunkBuilder) -> Chunk {
        Chunk {
            raw: String::new(),
            extra: String::from_utf8(builder.extra).expect("the converted bodies are text"),
            bytes: builder.bytes,
            events: builder.events,
            positions: None,
            after: Vec::new(),
            eof: false,
            gaps: builder.gaps,
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_kept_as_its_bson_bytes_between_converted_ones() {
        let good = |n: i32| {
            bson::to_vec(
                &doc! {"type": "NOTICE", "queue": "Q", "topic": "T", "seq": n,
                "starttime": "2024-01-01T00:00:00Z", "data": {"n": n}},
            )
            .unwrap()
        };
        let bad = with_bad_string(doc! {"type": "NOTICE", "queue": "Q", "topic": "T",
        "seq": 1_i32, "starttime": "2024-01-01T00:00:01Z",
        "data": {"n": 1_i32, "names": ["ok", "PLACEHOLDER"]}});
        let hermes = with_bad_string(doc! {"type": "EVENT", "queue": "Q", "topic": "base",
        "seq": 3_i32, "data": {"evcategory": "base", "eventtype": "added",
        "objattrs": {"name": "PLACEHOLDER"}}});
        let messages = [good(0), bad.clone(), good(2), hermes.clone()];
        let mut builder = builder();
        let mut errors = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let parsed = parse_bson(message).expect("the head is readable");
            let micros = parsed.timestamp_micros().unwrap_or(-1);
            errors.push(builder.push("", 0, i as i64, micros, &parsed));
        }
        assert!(errors[0].is_none() && errors[2].is_none());
        assert!(errors[1].as_deref().unwrap().contains("not UTF-8"));
        let chunk = chunk(builder);
        let bodies: Vec<Body<'_>> = chunk.events.iter().map(|e| chunk.body(e.body)).collect();
        // The whole message, byte for byte, since its body is the whole message.
        assert_eq!(bodies[1], Body::Bytes(&bad));
        // A Hermes event: its data document, byte for byte.
        let data = match parse_bson(&hermes).unwrap().body {
            BodySrc::BsonDoc(data) => data,
            other => panic!("{other:?}"),
        };
        assert!(data.len() < hermes.len());
        assert_eq!(bodies[3], Body::Bytes(data));
        // Its neighbours are untouched JSON (nothing of the failed conversion left behind).
        for (i, n) in [(0, 0), (2, 2)] {
            let Body::Json(text) = bodies[i] else {
                panic!("{:?}", bodies[i])
            };
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            assert_eq!(value["data"]["n"], n, "{text}");
        }
        // Category and timestamp as usual.
        assert_eq!(chunk.text(chunk.events[1].category), "T");
        assert_eq!(chunk.events[1].micros, 1_704_067_201_000_000);
        assert_eq!(chunk.text(chunk.events[3].category), "base");
        // The warning names the field at fault.
        assert_eq!(
            crate::bson_scan::why_undecodable(&bad),
            "field `data.names.1`: undecodable BSON: a string that is not UTF-8"
        );
    }

    #[test]
    fn a_topic_that_is_not_utf8_keeps_the_event_with_the_whole_message_raw() {
        let bad = with_bad_string(
            doc! {"type": "NOTICE", "queue": "Q", "topic": "PLACEHOLDER",
            "seq": 7_i32, "data": {"evcategory": "base", "eventtype": "added"}},
        );
        let parsed = parse_bson(&bad).expect("the head is readable");
        assert_eq!(parsed.category(), "ab\u{fffd}\u{fffd} cd \u{fffd}(x");
        assert!(!parsed.body_is_data, "the topic is in the body");
        let mut builder = builder();
        assert!(builder.push("", 0, 7, 0, &parsed).is_some());
        let chunk = chunk(builder);
        assert_eq!(chunk.body(chunk.events[0].body), Body::Bytes(&bad));
    }

    #[test]
    fn an_unreadable_head_is_an_error_naming_queue_and_seq() {
        let bad_type = with_bad_string(
            doc! {"type": "PLACEHOLDER", "queue": "Q", "seq": 12_i32, "data": {"n": 1_i32}},
        );
        let error = parse_bson(&bad_type).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
        assert!(error.contains("queue Q seq 12"), "{error}");
        let bad_queue =
            with_bad_string(doc! {"type": "NOTICE", "queue": "PLACEHOLDER", "seq": 13_i32});
        let error = parse_bson(&bad_queue).unwrap_err();
        assert!(error.contains("seq 13"), "{error}");
        assert!(error.contains("queue \"ab\u{fffd}"), "{error}");
    }
}
