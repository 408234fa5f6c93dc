//! Splitting a response body into messages as its bytes arrive, so that a torn body still
//! yields every complete message before the cut.
//!
//! - JSON: one object `{"0": {...}, "1": {...}}` (for /stream, never closed until EOF).
//! - BSON: documents back to back, each led by its little-endian int32 length.

use crate::message::JsonHead;
use crate::settings::Format;
use std::ops::Range;

/// The largest document the reader accepts (the BSON limit of 16 MiB, with room).
pub const MAX_ITEM: usize = 17 << 20;

/// Where a JSON body's scan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Before the opening `{`.
    Start,
    /// After `{`: the first key or `}`.
    First,
    /// After an item: `,` or `}`.
    Next,
    /// After `,`: a key.
    Key,
    /// Inside a key; `escaped` after a backslash.
    InKey { escaped: bool },
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// Inside a value that starts at `value` (relative to `*pos`).
    InValue(ValueScan),
    /// After the closing `}`.
    Done,
}

/// The scan of an unfinished value: `{...}` / `[...]` (by depth), a string, or a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ValueScan {
    /// Where the value starts, relative to `*pos`.
    start: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// The longest message key read: HMB's keys are item numbers (`"0"`, `"1"`, ...).
const MAX_KEY: usize = 256;

/// One complete item of a body.
#[derive(Clone, Debug)]
pub struct Item {
    /// Where it lies in the buffer.
    pub range: Range<usize>,
    /// A JSON message's fields, read while framing it.
    pub head: Option<JsonHead>,
}

/// Finds complete items in a growing buffer.
///
/// JSON is scanned as a state machine that keeps its place between reads: every byte of the
/// body is looked at a bounded number of times (once for a message whole in the buffer, read
/// by `whole_entry`; up to four times for one split across reads: `whole_entry` and the state
/// machine each try it whole once before the state machine goes on byte by byte), so a
/// server that sends an endless key, endless whitespace or a huge message a byte at a time
/// costs time linear in what it sent.
#[derive(Debug)]
pub struct Framer {
    format: Format,
    step: Step,
    /// Bytes after `*pos` already scanned.
    scanned: usize,
    /// Where the current key started, relative to `*pos`.
    key_start: usize,
    /// Bytes looked at so far (tests check that reading stays linear).
    #[cfg(test)]
    looked: usize,
}

impl Framer {
    /// A framer at the start of a body.
    pub fn new(format: Format) -> Self {
        Framer {
            format,
            step: Step::Start,
            scanned: 0,
            key_start: 0,
            #[cfg(test)]
            looked: 0,
        }
    }

    /// Whether the body ended properly so far (JSON: the closing `}` was seen; BSON: always,
    /// the caller checks for leftover bytes).
    pub fn is_complete(&self) -> bool {
        match self.format {
            Format::Json => self.step == Step::Done,
            Format::Bson => true,
        }
    }

    /// Whether nothing at all was framed (an empty body).
    pub fn saw_nothing(&self) -> bool {
        self.format == Format::Json && self.step == Step::Start
    }

    /// The body ended (kept for the callers' symmetry; the scan needs no last attempt).
    pub fn body_ended(&mut self) {}

    /// The next complete item in `buf[*pos..]`: `Ok(Some(item))` and `*pos` moved past it,
    /// `Ok(None)` when more bytes are needed (or the JSON body is complete), or an error when
    /// the bytes cannot be a valid body. Between calls `buf[..*pos]` may be dropped (the
    /// caller shifting `*pos` with it) and bytes appended; nothing else may change.
    pub fn next(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Item>, String> {
        match self.format {
            Format::Bson => Ok(next_bson(buf, pos)?.map(|range| Item { range, head: None })),
            Format::Json => self.next_json(buf, pos),
        }
    }

    fn next_json(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Item>, String> {
        if matches!(self.step, Step::First | Step::Next) && self.scanned == 0 {
            if let Some(item) = self.whole_entry(buf, pos) {
                return Ok(Some(item));
            }
        }
        let base = *pos;
        let mut at = base + self.scanned;
        while let Some(&byte) = buf.get(at) {
            #[cfg(test)]
            {
                self.looked += 1;
            }
            let space = matches!(byte, b' ' | b'\n' | b'\r' | b'\t');
            match self.step {
                Step::Start => {
                    if space {
                        at += 1;
                        continue;
                    }
                    if byte != b'{' {
                        return Err(format!(
                            "the JSON body does not start with an object ({})",
                            show_byte(byte)
                        ));
                    }
                    *pos = at + 1;
                    self.scanned = 0;
                    self.step = Step::First;
                    return self.next_json(buf, pos);
                }
                Step::Done => {
                    if !space {
                        return Err(format!(
                            "bytes after the end of the JSON body ({})",
                            show_byte(byte)
                        ));
                    }
                }
                Step::First | Step::Next | Step::Key => {
                    if !space {
                        match (self.step, byte) {
                            (Step::First | Step::Next, b'}') => {
                                *pos = at + 1;
                                self.scanned = 0;
                                self.step = Step::Done;
                                return Ok(None);
                            }
                            (Step::Next, b',') => self.step = Step::Key,
                            (Step::First | Step::Key, b'"') => {
                                self.key_start = at - base;
                                self.step = Step::InKey { escaped: false };
                            }
                            (Step::Next, _) => {
                                return Err(format!(
                                    "expected `,` or `}}` between messages, found {}",
                                    show_byte(byte)
                                ))
                            }
                            _ => {
                                return Err(format!(
                                    "expected a message key, found {}",
                                    show_byte(byte)
                                ))
                            }
                        }
                    }
                }
                Step::InKey { escaped } => {
                    if at - base - self.key_start > MAX_KEY {
                        return Err(format!(
                            "a message key longer than {MAX_KEY} bytes (HMB numbers its \
                             messages)"
                        ));
                    }
                    self.step = match (escaped, byte) {
                        (false, b'"') => Step::Colon,
                        (false, b'\\') => Step::InKey { escaped: true },
                        _ => Step::InKey { escaped: false },
                    };
                }
                Step::Colon => {
                    if !space {
                        if byte != b':' {
                            return Err(format!(
                                "expected `:` after a message key, found {}",
                                show_byte(byte)
                            ));
                        }
                        self.step = Step::Value;
                    }
                }
                Step::Value => {
                    if !space {
                        if byte == b'{' {
                            // Most messages arrive whole: their fields are read in one pass.
                            if let Ok(Some((end, head))) = JsonHead::read(buf, at) {
                                return Ok(Some(self.item(pos, at..end, Some(head))));
                            }
                            #[cfg(test)]
                            {
                                self.looked += buf.len() - at;
                            }
                        }
                        self.step = Step::InValue(ValueScan {
                            start: at - base,
                            depth: 0,
                            in_string: false,
                            escaped: false,
                        });
                        continue;
                    }
                }
                Step::InValue(mut scan) => {
                    let start = base + scan.start;
                    #[cfg(test)]
                    {
                        self.looked += buf.len() - at;
                    }
                    let end = match scan.advance(buf, start, &mut at)? {
                        Some(end) => end,
                        None => {
                            self.step = Step::InValue(scan);
                            if at - start > MAX_ITEM {
                                return Err("a message is larger than 17 MiB".into());
                            }
                            break;
                        }
                    };
                    let head = if buf[start] == b'{' {
                        // Whole now: an error in it counts.
                        match JsonHead::read(buf, start)? {
                            Some((read_end, head)) if read_end == end => Some(head),
                            _ => {
                                return Err(format!(
                                    "a message whose end cannot be read ({} bytes)",
                                    end - start
                                ))
                            }
                        }
                    } else {
                        None
                    };
                    return Ok(Some(self.item(pos, start..end, head)));
                }
            }
            at += 1;
        }
        self.scanned = at - base;
        Ok(None)
    }

    /// The usual case, read at once: from `*pos` (after the body's `{` or after an item), `,`
    /// (not before the first), a key, `:` and a whole message object, all in `buf`. `None`
    /// leaves it to the byte-by-byte steps, which find the same item or say what is wrong (so
    /// errors are theirs alone): they cost some 40 instructions a byte on the `,"123":` between
    /// messages, a twentieth of a JSON message's (callgrind).
    fn whole_entry(&mut self, buf: &[u8], pos: &mut usize) -> Option<Item> {
        use crate::json_scan::{skip_ws, string_end};
        let mut at = skip_ws(buf, *pos);
        if self.step == Step::Next {
            if buf.get(at) != Some(&b',') {
                return None;
            }
            at = skip_ws(buf, at + 1);
        }
        if buf.get(at) != Some(&b'"') {
            return None;
        }
        let Some(key_end) = string_end(buf, at + 1) else {
            #[cfg(test)]
            {
                self.looked += buf.len() - *pos;
            }
            return None;
        };
        #[cfg(test)]
        {
            self.looked += key_end - *pos;
        }
        if key_end - at > MAX_KEY {
            return None;
        }
        let colon = skip_ws(buf, key_end);
        if buf.get(colon) != Some(&b':') {
            return None;
        }
        let value = skip_ws(buf, colon + 1);
        if buf.get(value) != Some(&b'{') {
            return None;
        }
        #[cfg(test)]
        {
            self.looked += value - key_end;
        }
        match JsonHead::read(buf, value) {
            Ok(Some((end, head))) => {
                #[cfg(test)]
                {
                    self.looked += end - value;
                }
                Some(self.item(pos, value..end, Some(head)))
            }
            _ => {
                #[cfg(test)]
                {
                    self.looked += buf.len() - value;
                }
                None
            }
        }
    }

    /// Ends the item at `range`: `*pos` moves past it and the scan restarts there.
    fn item(&mut self, pos: &mut usize, range: Range<usize>, head: Option<JsonHead>) -> Item {
        *pos = range.end;
        self.scanned = 0;
        self.step = Step::Next;
        Item { range, head }
    }
}

impl ValueScan {
    /// Scans from `*at` (the value starting at `start`) to the value's end: `Some(end)` (the
    /// index after it), or `None` with `*at` where the next read goes on.
    fn advance(
        &mut self,
        buf: &[u8],
        start: usize,
        at: &mut usize,
    ) -> Result<Option<usize>, String> {
        match buf[start] {
            b'{' | b'[' | b'"' => {
                let quoted = buf[start] == b'"';
                while let Some(&byte) = buf.get(*at) {
                    *at += 1;
                    if self.in_string {
                        match (self.escaped, byte) {
                            (true, _) => self.escaped = false,
                            (false, b'\\') => self.escaped = true,
                            (false, b'"') => {
                                self.in_string = false;
                                if quoted {
                                    return Ok(Some(*at));
                                }
                            }
                            _ => {}
                        }
                        continue;
                    }
                    match byte {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth = self
                                .depth
                                .checked_sub(1)
                                .ok_or_else(|| "unbalanced brackets in a message".to_owned())?;
                            if self.depth == 0 {
                                return Ok(Some(*at));
                            }
                        }
                        _ => {}
                    }
                }
                Ok(None)
            }
            _ => {
                // A scalar: complete only when a delimiter follows.
                while let Some(&byte) = buf.get(*at) {
                    if matches!(byte, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t') {
                        return Ok(Some(*at));
                    }
                    *at += 1;
                }
                Ok(None)
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
    use crate::message::{parse_bson, parse_json, BodySrc};

    // What the framer cuts, read: its head parse against serde's, on the reference captures.
    #[test]
    fn reference_capture_decodes() {
        // tests/fixtures/hmb/recv-bson.bin: a real BSON /recv body.
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hmb/recv-bson.bin");
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut framer = Framer::new(Format::Bson);
        let mut pos = 0;
        let mut kinds = Vec::new();
        while let Some(Item { range, .. }) = framer.next(&body, &mut pos).unwrap() {
            kinds.push(parse_bson(&body[range]).unwrap().kind.into_owned());
        }
        assert_eq!(pos, body.len());
        assert_eq!(kinds.last().map(String::as_str), Some("EOF"));
    }

    /// Frames a JSON answer; every message read by the one-pass scanner equals what serde_json
    /// reads from it.
    fn scanner_agrees_with_serde(answer: &str) -> usize {
        let mut framer = Framer::new(Format::Json);
        let mut pos = 0;
        let mut count = 0;
        while let Some(item) = framer.next(answer.as_bytes(), &mut pos).unwrap() {
            let head = item.head.as_ref().expect("a message head");
            let fast = head.parsed(answer, item.range.clone());
            let reference = parse_json(&answer[item.range.clone()]).unwrap();
            assert_eq!(fast.kind, reference.kind, "{answer}");
            assert_eq!(fast.queue, reference.queue, "{answer}");
            assert_eq!(fast.topic, reference.topic, "{answer}");
            assert_eq!(fast.seq, reference.seq, "{answer}");
            assert_eq!(fast.starttime, reference.starttime, "{answer}");
            match (fast.body, reference.body) {
                (BodySrc::Text(a), BodySrc::Text(b)) => assert_eq!(a, b, "{answer}"),
                other => panic!("{other:?}"),
            }
            count += 1;
        }
        assert!(framer.is_complete(), "{answer}");
        count
    }

    #[test]
    fn the_one_pass_scanner_reads_what_serde_reads() {
        let cases = [
            r#"{"0":{"type":"EVENT","queue":"A","topic":"base","seq":7,"starttime":"2026-11-23T01:02:03.456Z","data":{"evcategory":"base","eventtype":"added","objattrs":{"a":[1,{"b":"}"}]}}}}"#,
            r#"{"0":{"data":{"x":1,"eventtype":"m","y":[],"evcategory":"c"},"seq":5,"type":"E","queue":"Q\"uoted","topic":null}}"#,
            r#"{ "0" : { "type" : "N\u00e9" , "queue" : "A" , "seq" : -3 , "data" : "text" } , "1" : {"type":"EOF"} }"#,
            r#"{"0":{"type":"X","queue":"A","seq":1,"data":{"evcategory":1,"eventtype":"e"}},"1":{"type":"HEARTBEAT"}}"#,
            r#"{"0":{"type":"X","queue":"A","seq":2,"data":[{"evcategory":"c","eventtype":"e"}],"extra":{"k":"v"}}}"#,
        ];
        for answer in cases {
            assert!(scanner_agrees_with_serde(answer) >= 1);
        }
    }

    #[test]
    fn the_one_pass_scanner_reads_the_reference_captures_as_serde_does() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hmb");
        let mut answers = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("http") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().filter(|l| l.starts_with("{\"0\":{")) {
                scanner_agrees_with_serde(line);
                answers += 1;
            }
        }
        assert!(
            answers >= 5,
            "only {answers} JSON answers found in {}",
            dir.display()
        );
    }

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

    /// Feeds `body` in pieces of `step` bytes, dropping framed bytes from the buffer as the
    /// fetcher does; returns the items' texts, the bytes looked at and the last result.
    fn feed(body: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, usize, Result<(), String>) {
        let mut framer = Framer::new(Format::Json);
        let mut buf = Vec::new();
        let mut pos = 0;
        let mut items = Vec::new();
        let mut fed = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(fed, body.len());
            buf.extend_from_slice(&body[fed..cut]);
            fed = cut;
            loop {
                match framer.next(&buf, &mut pos) {
                    Ok(Some(item)) => items.push(buf[item.range].to_vec()),
                    Ok(None) => break,
                    Err(e) => return (items, framer.looked, Err(e)),
                }
            }
            // The fetcher hands framed messages over and keeps the rest.
            buf.drain(..pos);
            pos = 0;
        }
        (items, framer.looked, Ok(()))
    }

    #[test]
    fn bytes_trickled_one_at_a_time_are_looked_at_a_bounded_number_of_times() {
        let every_byte = |len: usize| (1..len).collect::<Vec<_>>();
        // Endless whitespace between messages.
        let body = format!("{{\"0\":{{\"type\":\"A\"}}{}", " ".repeat(200_000));
        let (items, looked, result) = feed(body.as_bytes(), &every_byte(body.len()));
        assert_eq!((items.len(), result), (1, Ok(())));
        assert!(
            (body.len()..=2 * body.len()).contains(&looked),
            "{looked} for {}",
            body.len()
        );
        // A huge message, a byte at a time.
        let body = format!(
            "{{\"0\":{{\"type\":\"T\",\"seq\":1,\"data\":\"{}\"}},\"1\":{{\"type\":\"EOF\"}}}}",
            "x".repeat(200_000)
        );
        let (items, looked, result) = feed(body.as_bytes(), &every_byte(body.len()));
        assert_eq!((items.len(), result), (2, Ok(())));
        assert!(
            (body.len()..=3 * body.len()).contains(&looked),
            "{looked} for {}",
            body.len()
        );
    }

    #[test]
    fn an_endless_key_is_an_error_once_longer_than_any_message_number() {
        let body = format!("{{\"{}", "k".repeat(100_000));
        let cuts: Vec<usize> = (1..body.len()).step_by(7).collect();
        let (items, looked, result) = feed(body.as_bytes(), &cuts);
        assert!(items.is_empty());
        let error = result.expect_err("an endless key");
        assert!(
            error.contains("a message key longer than 256 bytes"),
            "{error}"
        );
        assert!(looked < 1000, "{looked}");
    }

    /// Framed whole, or cut in two where the first byte says (as the fuzz target
    /// `hmb_json_answer` does): the same messages, or an error either way.
    fn cut_frames_as_whole(data: &[u8]) -> bool {
        let Some((&first, body)) = data.split_first() else {
            return true;
        };
        let cut = usize::from(first).min(body.len());
        let whole = feed(body, &[]);
        let pieces = feed(body, &[cut]);
        match (whole.2, pieces.2) {
            (Ok(()), Ok(())) => whole.0 == pieces.0,
            _ => true,
        }
    }

    #[test]
    fn inputs_the_fuzzer_found_frame_the_same_whole_or_cut() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/regressions/hmb_json_answer");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("a regression input");
            assert!(cut_frames_as_whole(&data), "{}", path.display());
            count += 1;
        }
        assert!(count >= 1, "no regression inputs in {}", dir.display());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn message() -> impl Strategy<Value = String> {
            (
                "[A-Z]{1,8}",
                any::<i32>(),
                proptest::collection::vec(("[a-z]{1,5}", "[ -~]{0,12}"), 0..4),
                "[ \n]{0,3}",
            )
                .prop_map(|(kind, seq, fields, space)| {
                    let data: serde_json::Map<String, serde_json::Value> = fields
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                    let data = serde_json::Value::Object(data);
                    format!(
                        "{{{space}\"type\":{space}{:?},\"seq\":{seq},\"data\":{data}{space}}}",
                        kind
                    )
                })
        }

        proptest! {
            #[test]
            fn an_answer_cut_anywhere_frames_the_messages_of_the_whole_answer(
                messages in proptest::collection::vec(message(), 0..6),
                mut cuts in proptest::collection::vec(0usize..2000, 0..12),
                space in "[ \n]{0,2}",
            ) {
                let items: Vec<String> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| format!("{space}\"{i}\"{space}:{space}{m}"))
                    .collect();
                let body = format!("{space}{{{}{space}}}", items.join(","));
                let whole = feed(body.as_bytes(), &[]);
                prop_assert_eq!(&whole.2, &Ok(()));
                prop_assert_eq!(whole.0.len(), messages.len());
                cuts.sort_unstable();
                let pieces = feed(body.as_bytes(), &cuts);
                prop_assert_eq!(pieces.0, whole.0);
                prop_assert_eq!(pieces.2, Ok(()));
            }
        }
    }
}
