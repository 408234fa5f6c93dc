//! Splitting a response body into messages as its bytes arrive, so that a torn body still
//! yields every complete message before the cut.
//!
//! - JSON: one object `{"0": {...}, "1": {...}}` (for /stream, never closed until EOF).
//! - BSON: documents back to back, each led by its little-endian int32 length.

use crate::json_scan::{container_end, skip_ws, string_end};
use crate::message::JsonHead;
use crate::settings::Format;
use std::ops::Range;

/// The largest document the reader accepts (the BSON limit of 16 MiB, with room).
pub const MAX_ITEM: usize = 17 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonState {
    /// Before the opening `{`.
    Start,
    /// After `{`, before the first item.
    First,
    /// After an item: `,` or `}` comes next.
    Next,
    /// After the closing `}`.
    Done,
}

/// One complete item of a body.
#[derive(Clone, Debug)]
pub struct Item {
    /// Where it lies in the buffer.
    pub range: Range<usize>,
    /// A JSON message's fields, read while framing it.
    pub head: Option<JsonHead>,
}

/// A message this large that is still incomplete is tried again only once the buffer has
/// doubled past it (or the answer ended): reading it stays linear in its size.
const RETRY_LARGE: usize = 64 * 1024;

/// Finds complete items in a growing buffer.
#[derive(Debug)]
pub struct Framer {
    format: Format,
    json: JsonState,
    /// (start, buffer length) of the last attempt at an incomplete JSON message.
    incomplete: Option<(usize, usize)>,
}

impl Framer {
    /// A framer at the start of a body.
    pub fn new(format: Format) -> Self {
        Framer {
            format,
            json: JsonState::Start,
            incomplete: None,
        }
    }

    /// Whether the body ended properly so far (JSON: the closing `}` was seen; BSON: always,
    /// the caller checks for leftover bytes).
    pub fn is_complete(&self) -> bool {
        match self.format {
            Format::Json => self.json == JsonState::Done,
            Format::Bson => true,
        }
    }

    /// Whether nothing at all was framed (an empty body).
    pub fn saw_nothing(&self) -> bool {
        self.format == Format::Json && self.json == JsonState::Start
    }

    /// The body ended: an incomplete message is tried once more, whatever its size.
    pub fn body_ended(&mut self) {
        self.incomplete = None;
    }

    /// The next complete item in `buf[*pos..]`: `Ok(Some(item))` and `*pos` moved past it,
    /// `Ok(None)` when more bytes are needed (or the JSON body is complete), or an error when
    /// the bytes cannot be a valid body.
    pub fn next(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Item>, String> {
        match self.format {
            Format::Bson => Ok(next_bson(buf, pos)?.map(|range| Item { range, head: None })),
            Format::Json => self.next_json(buf, pos),
        }
    }

    fn next_json(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Item>, String> {
        let mut at = *pos;
        loop {
            at = skip_ws(buf, at);
            let Some(&byte) = buf.get(at) else {
                return Ok(None);
            };
            match self.json {
                JsonState::Start => {
                    if byte != b'{' {
                        return Err(format!(
                            "the JSON body does not start with an object ({})",
                            show_byte(byte)
                        ));
                    }
                    at += 1;
                    *pos = at;
                    self.json = JsonState::First;
                }
                JsonState::Done => {
                    return Err(format!(
                        "bytes after the end of the JSON body ({})",
                        show_byte(byte)
                    ))
                }
                JsonState::First | JsonState::Next => {
                    if byte == b'}' {
                        *pos = at + 1;
                        self.json = JsonState::Done;
                        return Ok(None);
                    }
                    if self.json == JsonState::Next {
                        if byte != b',' {
                            return Err(format!(
                                "expected `,` or `}}` between messages, found {}",
                                show_byte(byte)
                            ));
                        }
                        at = skip_ws(buf, at + 1);
                    }
                    // The key.
                    match buf.get(at) {
                        None => return Ok(None),
                        Some(b'"') => {}
                        Some(&other) => {
                            return Err(format!(
                                "expected a message key, found {}",
                                show_byte(other)
                            ))
                        }
                    }
                    let Some(key_end) = string_end(buf, at + 1) else {
                        return Ok(None);
                    };
                    at = skip_ws(buf, key_end);
                    match buf.get(at) {
                        None => return Ok(None),
                        Some(b':') => {}
                        Some(&other) => {
                            return Err(format!(
                                "expected `:` after a message key, found {}",
                                show_byte(other)
                            ))
                        }
                    }
                    at = skip_ws(buf, at + 1);
                    let start = at;
                    let mut head = None;
                    let end = match buf.get(start) {
                        None => return Ok(None),
                        Some(b'{') => {
                            if let Some((from, len)) = self.incomplete {
                                let partial = len - from;
                                if from == start
                                    && partial >= RETRY_LARGE
                                    && buf.len() < from + 2 * partial
                                {
                                    return Ok(None);
                                }
                            }
                            match JsonHead::read(buf, start) {
                                Ok(Some((end, read))) => {
                                    head = Some(read);
                                    Some(end)
                                }
                                Ok(None) => {
                                    self.incomplete = Some((start, buf.len()));
                                    None
                                }
                                // A number cut by the end of the bytes (`48.`) reads as an
                                // invalid number, not as "more needed": an error counts only
                                // when the message is whole.
                                Err(error) => match container_end(buf, start)? {
                                    Some(_) => return Err(error),
                                    None => {
                                        self.incomplete = Some((start, buf.len()));
                                        None
                                    }
                                },
                            }
                        }
                        Some(b'[') => container_end(buf, start)?,
                        Some(b'"') => string_end(buf, start + 1),
                        Some(_) => {
                            // A scalar: complete only when a delimiter follows.
                            let stop = buf[start..].iter().position(|b| {
                                matches!(b, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                            });
                            stop.map(|n| start + n)
                        }
                    };
                    let Some(end) = end else {
                        if buf.len() - start > MAX_ITEM {
                            return Err("a message is larger than 17 MiB".into());
                        }
                        return Ok(None);
                    };
                    *pos = end;
                    self.json = JsonState::Next;
                    self.incomplete = None;
                    return Ok(Some(Item {
                        range: start..end,
                        head,
                    }));
                }
            }
        }
    }
}

fn show_byte(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("`{}`", byte as char)
    } else {
        format!("byte 0x{byte:02x}")
    }
}

fn next_bson(buf: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, String> {
    let start = *pos;
    let Some(head) = buf.get(start..start + 4) else {
        return Ok(None);
    };
    let len = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let len = usize::try_from(len)
        .ok()
        .filter(|len| (5..=MAX_ITEM).contains(len))
        .ok_or_else(|| format!("invalid BSON document length {len}"))?;
    if buf.len() - start < len {
        return Ok(None);
    }
    *pos = start + len;
    Ok(Some(start..start + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(format: Format, body: &[u8]) -> (Vec<Vec<u8>>, Framer, Result<(), String>) {
        let mut framer = Framer::new(format);
        let mut pos = 0;
        let mut items = Vec::new();
        loop {
            match framer.next(body, &mut pos) {
                Ok(Some(item)) => items.push(body[item.range].to_vec()),
                Ok(None) => {
                    // Once more, as the reader does after its next read.
                    let again = framer.next(body, &mut pos).map(|_| ());
                    return (items, framer, again);
                }
                Err(e) => return (items, framer, Err(e)),
            }
        }
    }

    #[test]
    fn json_items_and_completion() {
        let body =
            br#"{"0":{"type":"A","data":{"s":"}{\"","a":[1,{"b":2}]}}, "1" : {"type":"EOF"}}"#;
        let (items, framer, result) = frame_all(Format::Json, body);
        result.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], br#"{"type":"EOF"}"#);
        assert!(framer.is_complete());
    }

    #[test]
    fn torn_json_keeps_complete_items_byte_by_byte() {
        let body = br#"{"0":{"type":"A","seq":1},"1":{"type":"B","seq":2},"2":{"type":"C""#;
        // Fed one byte at a time, as the network may do.
        let mut framer = Framer::new(Format::Json);
        let mut pos = 0;
        let mut items = Vec::new();
        for end in 1..=body.len() {
            while let Some(item) = framer.next(&body[..end], &mut pos).unwrap() {
                items.push(item.range);
            }
        }
        assert_eq!(items.len(), 2);
        assert!(!framer.is_complete());
    }

    #[test]
    fn a_large_message_arriving_in_pieces_is_framed_once_whole() {
        let big = "x".repeat(300_000);
        let body = format!(
            r#"{{"0":{{"type":"T","queue":"Q","seq":5,"data":"{big}"}},"1":{{"type":"EOF"}}}}"#
        );
        let body = body.as_bytes();
        let mut framer = Framer::new(Format::Json);
        let mut pos = 0;
        let mut items = Vec::new();
        for end in (1000..body.len()).step_by(1000).chain([body.len()]) {
            while let Some(item) = framer.next(&body[..end], &mut pos).unwrap() {
                items.push(item);
            }
        }
        framer.body_ended();
        while let Some(item) = framer.next(body, &mut pos).unwrap() {
            items.push(item);
        }
        assert_eq!(items.len(), 2);
        let raw = std::str::from_utf8(body).unwrap();
        let first = items[0].head.as_ref().expect("a message head");
        let parsed = first.parsed(raw, items[0].range.clone());
        assert_eq!((&*parsed.kind, parsed.seq), ("T", Some(5)));
        assert_eq!(parsed.queue.as_deref(), Some("Q"));
        assert!(framer.is_complete());
    }

    #[test]
    fn a_cut_at_any_byte_is_never_an_error() {
        let body = br#"{"0":{"type":"T","queue":"Q","seq":-12,"data":{"lat":48.58,"e":1.5e-3,"ok":true,"n":null}},"1":{"type":"EOF"}}"#;
        for cut in 0..=body.len() {
            let mut framer = Framer::new(Format::Json);
            let mut pos = 0;
            let mut items = 0;
            while let Some(_item) = framer
                .next(&body[..cut], &mut pos)
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"))
            {
                items += 1;
            }
            // Message 0 ends with `}}`, before `,"1"`; message 1 just before the last `}`.
            let first_end = body.windows(3).position(|w| w == b"}},").expect("end") + 2;
            let expected = usize::from(cut >= first_end) + usize::from(cut >= body.len() - 1);
            assert_eq!(items, expected, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(frame_all(Format::Json, b"<html>").2.is_err());
        assert!(frame_all(Format::Json, br#"{"0":{"type":"A"} "1":{}}"#)
            .2
            .is_err());
        assert!(frame_all(Format::Json, br#"{"0":{}}}"#).2.is_err());
        let (items, framer, result) = frame_all(Format::Json, b"");
        assert!(items.is_empty() && result.is_ok() && framer.saw_nothing());
    }

    #[test]
    fn bson_documents_back_to_back() {
        let mut body = Vec::new();
        for i in 0..3 {
            let doc = bson::doc! {"type": "T", "seq": i};
            doc.to_writer(&mut body).unwrap();
        }
        let (items, _, result) = frame_all(Format::Bson, &body);
        result.unwrap();
        assert_eq!(items.len(), 3);
        let (items, _, result) = frame_all(Format::Bson, &body[..body.len() - 3]);
        result.unwrap();
        assert_eq!(items.len(), 2);
        let (_, _, result) = frame_all(Format::Bson, &[1, 0, 0, 0, 0, 0]);
        assert!(result.is_err());
    }
}
