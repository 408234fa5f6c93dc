//! Splitting a response body into messages as its bytes arrive, so that a torn body still
//! yields every complete message before the cut.
//!
//! - JSON: one object `{"0": {...}, "1": {...}}` (for /stream, never closed until EOF).
//! - BSON: documents back to back, each led by its little-endian int32 length.

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

/// Finds complete items in a growing buffer.
#[derive(Debug)]
pub struct Framer {
    format: Format,
    json: JsonState,
}

impl Framer {
    /// A framer at the start of a body.
    pub fn new(format: Format) -> Self {
        Framer {
            format,
            json: JsonState::Start,
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

    /// The next complete item in `buf[*pos..]`: `Ok(Some(range))` and `*pos` moved past it,
    /// `Ok(None)` when more bytes are needed (or the JSON body is complete), or an error when
    /// the bytes cannot be a valid body.
    pub fn next(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, String> {
        match self.format {
            Format::Bson => next_bson(buf, pos),
            Format::Json => self.next_json(buf, pos),
        }
    }

    fn next_json(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Range<usize>>, String> {
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
                    let end = match buf.get(start) {
                        None => return Ok(None),
                        Some(b'{') | Some(b'[') => value_end(buf, start)?,
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
                    return Ok(Some(start..end));
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

fn skip_ws(buf: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(at) {
        at += 1;
    }
    at
}

/// The index after the closing quote of a string whose content starts at `at`.
fn string_end(buf: &[u8], mut at: usize) -> Option<usize> {
    while at < buf.len() {
        match buf[at] {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    None
}

/// The index after the object or array starting at `start`; `Ok(None)` when incomplete.
fn value_end(buf: &[u8], start: usize) -> Result<Option<usize>, String> {
    let mut depth = 0usize;
    let mut at = start;
    while at < buf.len() {
        match buf[at] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| "unbalanced brackets in a message".to_owned())?;
                if depth == 0 {
                    return Ok(Some(at + 1));
                }
            }
            b'"' => match string_end(buf, at + 1) {
                Some(end) => {
                    at = end;
                    continue;
                }
                None => return Ok(None),
            },
            _ => {}
        }
        at += 1;
    }
    Ok(None)
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
                Ok(Some(range)) => items.push(body[range].to_vec()),
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
            while let Some(range) = framer.next(&body[..end], &mut pos).unwrap() {
                items.push(range);
            }
        }
        assert_eq!(items.len(), 2);
        assert!(!framer.is_complete());
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
