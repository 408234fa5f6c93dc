//! Structural scanning of JSON bytes: where strings and values end, and the top-level fields
//! of one HMB message, in one pass.
//!
//! Values that are only skipped (a message's `data`, unknown fields) are checked for structure
//! (strings closed, brackets balanced) but not for full JSON validity: serde_json validates
//! everything it skips, which made skipping `data` most of a JSON message's cost (measured with
//! callgrind: about 4 000 of 13 000 instructions per 300-byte message). An event body is
//! validated where it is used as JSON: the host's event line falls back to `body_text` for a
//! body that is not JSON. The fields the consumer reads (type, queue, topic, seq, starttime)
//! are fully checked.

use std::ops::Range;

/// The index of the first byte at or after `at` that is not JSON whitespace.
pub fn skip_ws(buf: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = buf.get(at) {
        at += 1;
    }
    at
}

/// The index after the closing quote of a string whose content starts at `at`; `None` when
/// the bytes end first.
pub fn string_end(buf: &[u8], mut at: usize) -> Option<usize> {
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
///
/// A plain byte loop: tried side by side (callgrind, 300-byte messages), it beat both a
/// lookup-table `position` and `memchr` over the quotes, which are too dense in event bodies
/// for a vectorised search to pay.
pub fn container_end(buf: &[u8], start: usize) -> Result<Option<usize>, String> {
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

/// The index after any value starting at `start` (string, object, array, or a scalar, which
/// ends at a delimiter); `Ok(None)` when incomplete.
pub fn value_end(buf: &[u8], start: usize) -> Result<Option<usize>, String> {
    match buf.get(start) {
        None => Ok(None),
        Some(b'"') => Ok(string_end(buf, start + 1)),
        Some(b'{' | b'[') => container_end(buf, start),
        Some(b',' | b'}' | b']' | b':') => Err(format!(
            "a value expected at byte {start}, found `{}`",
            char::from(buf[start])
        )),
        Some(_) => {
            // A number, `true`, `false` or `null`: anything else (a bracket or a quote in
            // it) is refused here, so that where a message ends never depends on how its
            // bytes were cut into reads (the framer's bracket count agrees).
            let rest = &buf[start..];
            let end = rest
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'));
            let scalar = &rest[..end.unwrap_or(rest.len())];
            match scalar
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            {
                Some(bad) => Err(format!(
                    "an invalid value at byte {} ({})",
                    start + bad,
                    show(scalar[bad])
                )),
                None => Ok(end.map(|n| start + n)),
            }
        }
    }
}

/// A byte for an error message.
fn show(byte: u8) -> String {
    if byte.is_ascii_graphic() {
        format!("`{}`", char::from(byte))
    } else {
        format!("byte 0x{byte:02x}")
    }
}

/// A string value: its content's range, when it has no escapes, or its unescaped text.
pub enum Text {
    /// The bytes between the quotes.
    Plain(Range<usize>),
    /// Unescaped.
    Unescaped(String),
}

/// Reads the string value at `span` (quotes included); `None` for `null`.
pub fn string_value(buf: &[u8], span: Range<usize>, key: &str) -> Result<Option<Text>, String> {
    let bytes = &buf[span.clone()];
    if bytes == b"null" {
        return Ok(None);
    }
    if bytes.len() < 2 || bytes[0] != b'"' {
        return Err(format!(
            "message field `{key}` is not a string: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        ));
    }
    let inner = span.start + 1..span.end - 1;
    if buf[inner.clone()].contains(&b'\\') {
        serde_json::from_slice::<String>(bytes)
            .map(|text| Some(Text::Unescaped(text)))
            .map_err(|e| format!("message field `{key}`: {e}"))
    } else {
        std::str::from_utf8(&buf[inner.clone()])
            .map(|_| Some(Text::Plain(inner)))
            .map_err(|_| format!("message field `{key}` is not UTF-8"))
    }
}

/// Reads the integer value at `span` (an integral float too, as JSON writers may give);
/// `None` for `null`.
pub fn integer_value(buf: &[u8], span: Range<usize>, key: &str) -> Result<Option<i64>, String> {
    let bytes = &buf[span];
    if bytes == b"null" {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).unwrap_or("");
    if let Ok(value) = text.parse::<i64>() {
        return Ok(Some(value));
    }
    match text.parse::<f64>() {
        Ok(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => Ok(Some(value as i64)),
        _ => Err(format!(
            "message field `{key}` is not an integer: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
        )),
    }
}

/// Whether the object at `span` has string values for both `keys` among its top-level
/// fields (reading stops once both were seen).
pub fn has_string_fields(buf: &[u8], span: Range<usize>, keys: [&[u8]; 2]) -> bool {
    let mut found = [false, false];
    let mut at = span.start;
    if buf.get(at) != Some(&b'{') {
        return false;
    }
    at += 1;
    while at < span.end {
        at = skip_ws(buf, at);
        match buf.get(at) {
            Some(b'"') => {}
            Some(b',') => {
                at += 1;
                continue;
            }
            _ => return false,
        }
        let Some(key_end) = string_end(buf, at + 1) else {
            return false;
        };
        let key = &buf[at + 1..key_end - 1];
        at = skip_ws(buf, key_end);
        if buf.get(at) != Some(&b':') {
            return false;
        }
        at = skip_ws(buf, at + 1);
        if let Some(index) = keys.iter().position(|k| *k == key) {
            found[index] = buf.get(at) == Some(&b'"');
            if found[0] && found[1] {
                return true;
            }
        }
        match value_end(buf, at) {
            Ok(Some(end)) => at = end,
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_end_at_the_first_unescaped_quote() {
        let text = br#""a\"b\\" rest"#;
        assert_eq!(string_end(text, 1), Some(8));
        assert_eq!(string_end(br#""ab\""#, 1), None);
        assert_eq!(string_end(br#""ab\"#, 1), None);
    }

    #[test]
    fn containers_end_where_their_brackets_balance_outside_strings() {
        let text = br#"{"a":[1,{"b":"}]{\"x"}],"c":{}} tail"#;
        assert_eq!(container_end(text, 0), Ok(Some(text.len() - 5)));
        let array = br#"[{"k":"]"},[2]],"#;
        assert_eq!(container_end(array, 0), Ok(Some(array.len() - 1)));
        // Cut anywhere before the end: more bytes needed, never a wrong end.
        for cut in 0..text.len() - 5 {
            assert_eq!(container_end(&text[..cut.max(1)], 0), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn values_of_every_kind() {
        assert_eq!(value_end(b"12.5,", 0), Ok(Some(4)));
        assert_eq!(value_end(b"12.5", 0), Ok(None));
        assert_eq!(value_end(b"null}", 0), Ok(Some(4)));
        assert_eq!(value_end(br#""s","#, 0), Ok(Some(3)));
        assert!(value_end(b",", 0).is_err());
    }

    #[test]
    fn hermes_fields_are_found_among_the_top_level_ones_only() {
        let yes = br#"{"x":{"evcategory":"no"},"eventtype":"e","evcategory":"c"}"#;
        assert!(has_string_fields(
            yes,
            0..yes.len(),
            [b"evcategory", b"eventtype"]
        ));
        let nested = br#"{"x":{"evcategory":"c","eventtype":"e"}}"#;
        assert!(!has_string_fields(
            nested,
            0..nested.len(),
            [b"evcategory", b"eventtype"]
        ));
        let number = br#"{"evcategory":1,"eventtype":"e"}"#;
        assert!(!has_string_fields(
            number,
            0..number.len(),
            [b"evcategory", b"eventtype"]
        ));
    }
}
