//! Reading BSON documents straight from their bytes, element by element, and writing them as
//! JSON (the mapping is [`bson_json`](crate::bson_json)'s).
//!
//! Why not the bson crate's raw iterator: measured with callgrind on 300-byte Hermes events, it
//! spent about 11 000 instructions per message (every element's key kept for errors, lengths
//! checked twice, strings validated through a general reader); this reader checks each length
//! once and validates each string once. Types HMB bodies do not carry (regex, JavaScript code,
//! symbol, timestamp, decimal128, DBPointer, min/max key) are written through the bson crate.

use crate::bson_json::{
    write_binary, write_bson_value, write_datetime, write_f64, write_i64, write_object_id,
    write_str,
};
use bson::raw::RawDocument;

/// One BSON value, borrowed from the document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// 0x01.
    Double(f64),
    /// 0x02: its bytes, UTF-8 not yet checked ([`text`] and [`write_text`] check it).
    String(&'a [u8]),
    /// 0x03: the embedded document's bytes.
    Document(&'a [u8]),
    /// 0x04: the embedded array's bytes (a document keyed "0", "1", ...).
    Array(&'a [u8]),
    /// 0x05.
    Binary {
        /// The subtype byte.
        subtype: u8,
        /// The data.
        bytes: &'a [u8],
    },
    /// 0x06.
    Undefined,
    /// 0x07: 12 bytes.
    ObjectId(&'a [u8]),
    /// 0x08.
    Boolean(bool),
    /// 0x09: milliseconds since the epoch.
    DateTime(i64),
    /// 0x0A.
    Null,
    /// 0x10.
    Int32(i32),
    /// 0x12.
    Int64(i64),
    /// Any other type (its type byte): read through the bson crate.
    Other(u8),
}

/// An element: its name, whether the name is plain (see [`name_end`]), its value.
type Element<'a> = (&'a [u8], bool, Value<'a>);

/// The elements of a document, in order.
pub struct Elements<'a> {
    doc: &'a [u8],
    at: usize,
    done: bool,
}

/// Reads a document's frame: its length prefix must match its bytes, and it ends with 0.
#[inline]
pub fn elements(doc: &[u8]) -> Result<Elements<'_>, String> {
    check_frame(doc)?;
    Ok(Elements {
        doc,
        at: 4,
        done: false,
    })
}

/// [`elements`]'s check of a document's frame alone.
#[inline]
fn check_frame(doc: &[u8]) -> Result<(), String> {
    let declared = doc
        .get(..4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or("undecodable BSON: a document shorter than its length")?;
    if declared < 5 || declared as usize != doc.len() || doc[doc.len() - 1] != 0 {
        return Err(format!(
            "undecodable BSON: a document of {} bytes declares {declared}",
            doc.len()
        ));
    }
    Ok(())
}

#[inline]
fn int32_at(doc: &[u8], at: usize) -> Result<usize, String> {
    let bytes = doc
        .get(at..at + 4)
        .ok_or("undecodable BSON: a length past the end of its document")?;
    let value = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    usize::try_from(value).map_err(|_| format!("undecodable BSON: a negative length {value}"))
}

fn fixed<const N: usize>(doc: &[u8], at: usize) -> Result<[u8; N], String> {
    doc.get(at..at + N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "undecodable BSON: a value past the end of its document".to_owned())
}

fn cstring_end(doc: &[u8], at: usize) -> Result<usize, String> {
    doc.get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == 0))
        .map(|n| at + n)
        .ok_or_else(|| "undecodable BSON: a name without its end".to_owned())
}

/// A length-prefixed string at `at`: (its bytes, index after it).
#[inline]
fn string_at(doc: &[u8], at: usize) -> Result<(&[u8], usize), String> {
    let len = int32_at(doc, at)?;
    let end = at + 4 + len;
    if len == 0 || end > doc.len() || doc[end - 1] != 0 {
        return Err("undecodable BSON: a string without its end".to_owned());
    }
    Ok((&doc[at + 4..end - 1], end))
}

/// The string value at `at` of an element of `doc` (not the last byte's: that ends `doc`), as
/// [`Elements::read`] reads it: its bytes and the index after it; `None` where `read` finds an
/// error.
#[inline]
pub(crate) fn string_value_at(doc: &[u8], at: usize) -> Option<(&[u8], usize)> {
    string_at(doc, at).ok().filter(|&(_, end)| end < doc.len())
}

/// The embedded document at `at` of an element of `doc`, as [`Elements::read`] reads it: its
/// bytes; `None` where `read` finds an error.
#[inline]
pub(crate) fn document_value_at(doc: &[u8], at: usize) -> Option<&[u8]> {
    let len = int32_at(doc, at).ok()?;
    let end = at.checked_add(len)?;
    (len >= 5 && end < doc.len() && doc[end - 1] == 0).then(|| &doc[at..end])
}

/// `text` (a part of `doc`) as text: a string of up to 16 bytes with 16 bytes of `doc` to read
/// from its start is seen to be ASCII in one step (SSE2 on x86_64), else checked as UTF-8 by the
/// standard check; `None` when it is not UTF-8.
#[inline]
pub(crate) fn short_text<'a>(doc: &[u8], text: &'a [u8]) -> Option<&'a str> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        let start = (text.as_ptr() as usize).wrapping_sub(doc.as_ptr() as usize);
        if text.len() <= 16 && start <= doc.len() && doc.len() - start >= 16 {
            use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_movemask_epi8};
            // SAFETY: SSE2 is there (the cfg above); `text` starts at `start` in `doc` and 16
            // bytes from there lie inside `doc`; the load takes any alignment.
            let high = unsafe {
                _mm_movemask_epi8(_mm_loadu_si128(doc.as_ptr().add(start).cast::<__m128i>()))
            } as u32;
            if high & ((1u32 << text.len()) - 1) == 0 {
                // SAFETY: every byte of `text` is below 0x80 (their high bits, just read, are
                // clear): ASCII, which is UTF-8.
                return Some(unsafe { std::str::from_utf8_unchecked(text) });
            }
        }
    }
    std::str::from_utf8(text).ok()
}

/// A string's bytes as text.
#[inline]
pub fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes)
        .map_err(|_| "undecodable BSON: a string that is not UTF-8".to_owned())
}

impl<'a> Elements<'a> {
    /// The next element; `None` after the last.
    #[inline]
    pub fn read(&mut self) -> Result<Option<(&'a [u8], Value<'a>)>, String> {
        Ok(self.read_marked()?.map(|(key, _plain, value)| (key, value)))
    }

    /// The next element, and whether its name is plain (printable ASCII without quote or
    /// backslash: written as JSON as it is, without a look at its bytes again); `None` after
    /// the last.
    #[inline]
    fn read_marked(&mut self) -> Result<Option<Element<'a>>, String> {
        let doc = self.doc;
        let kind = doc[self.at];
        if kind == 0 {
            return if self.at == doc.len() - 1 {
                Ok(None)
            } else {
                Err("undecodable BSON: bytes after the end of a document".to_owned())
            };
        }
        // Names are checked where they are used (written, or compared with a known name).
        let (key_end, plain) = name_end(doc, self.at + 1)?;
        let key = &doc[self.at + 1..key_end];
        let name = || String::from_utf8_lossy(key).into_owned();
        let at = key_end + 1;
        let (value, end) = match kind {
            0x01 => (Value::Double(f64::from_le_bytes(fixed(doc, at)?)), at + 8),
            0x02 => {
                let (text, end) = string_at(doc, at)?;
                (Value::String(text), end)
            }
            0x03 | 0x04 => {
                let len = int32_at(doc, at)?;
                let end = at + len;
                if len < 5 || end > doc.len() - 1 || doc[end - 1] != 0 {
                    return Err(format!(
                        "undecodable BSON: field `{}`: a bad embedded length",
                        name()
                    ));
                }
                let bytes = &doc[at..end];
                let value = if kind == 0x03 {
                    Value::Document(bytes)
                } else {
                    Value::Array(bytes)
                };
                (value, end)
            }
            0x05 => {
                let len = int32_at(doc, at)?;
                let end = at + 5 + len;
                if end > doc.len() - 1 {
                    return Err(format!(
                        "undecodable BSON: field `{}`: a bad binary length",
                        name()
                    ));
                }
                match doc[at + 4] {
                    // The old binary subtype nests a second length: the bson crate reads it.
                    0x02 => (Value::Other(kind), end),
                    subtype => (
                        Value::Binary {
                            subtype,
                            bytes: &doc[at + 5..end],
                        },
                        end,
                    ),
                }
            }
            0x06 => (Value::Undefined, at),
            0x07 => {
                fixed::<12>(doc, at)?;
                (Value::ObjectId(&doc[at..at + 12]), at + 12)
            }
            0x08 => (Value::Boolean(fixed::<1>(doc, at)?[0] != 0), at + 1),
            0x09 => (Value::DateTime(i64::from_le_bytes(fixed(doc, at)?)), at + 8),
            0x0A => (Value::Null, at),
            0x10 => (Value::Int32(i32::from_le_bytes(fixed(doc, at)?)), at + 4),
            0x12 => (Value::Int64(i64::from_le_bytes(fixed(doc, at)?)), at + 8),
            // The rest only needs skipping here.
            0x11 => (Value::Other(kind), at + 8),
            0x13 => (Value::Other(kind), at + 16),
            0x7F | 0xFF => (Value::Other(kind), at),
            0x0B => (
                Value::Other(kind),
                cstring_end(doc, cstring_end(doc, at)? + 1)? + 1,
            ),
            0x0C => (Value::Other(kind), string_at(doc, at)?.1 + 12),
            0x0D | 0x0E => (Value::Other(kind), string_at(doc, at)?.1),
            0x0F => (Value::Other(kind), at + int32_at(doc, at)?),
            other => {
                return Err(format!(
                    "undecodable BSON: field `{}` has the unknown type 0x{other:02x}",
                    name()
                ))
            }
        };
        if end > doc.len() - 1 {
            return Err(format!(
                "undecodable BSON: field `{}` runs past its document",
                name()
            ));
        }
        self.at = end;
        Ok(Some((key, plain, value)))
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Result<(&'a [u8], Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.read();
        if !matches!(read, Ok(Some(_))) {
            self.done = true;
        }
        read.transpose()
    }
}

/// 1 for the bytes a JSON string cannot hold as they are (controls, quote, backslash) and for
/// non-ASCII ones (whose UTF-8 must be checked).
const NOT_PLAIN: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if b < 0x20 || b >= 0x80 || b == b'"' as usize || b == b'\\' as usize {
            table[b] = 1;
        }
        b += 1;
    }
    table
};

/// The end (the index of the NUL) of the element name starting at `at`, and whether it is
/// plain: no byte before the NUL is one [`NOT_PLAIN`] marks, so that it is written as JSON as
/// it is. One pass over its bytes: 16 at a time where 16 are left ([`marks16`]), else one by
/// one. (Eight bytes at a time with integer bit tricks was tried: more instructions on these
/// names of 4 to 12 bytes, measured with callgrind.)
#[inline(always)]
fn name_end(doc: &[u8], mut at: usize) -> Result<(usize, bool), String> {
    let mut plain = true;
    while let Some((nul, marks)) = marks16(doc, at) {
        if nul != 0 {
            let end = nul.trailing_zeros();
            // Only the marks before the NUL count (the NUL itself is a control byte).
            return Ok((at + end as usize, plain && marks & ((1 << end) - 1) == 0));
        }
        plain &= marks == 0;
        at += 16;
    }
    let mut marks = 0u8;
    loop {
        match doc.get(at) {
            Some(0) => return Ok((at, plain && marks == 0)),
            Some(&byte) => marks |= NOT_PLAIN[usize::from(byte)],
            None => return Err("undecodable BSON: a name without its end".to_owned()),
        }
        at += 1;
    }
}

/// For the 16 bytes at `at`, when there are 16: the bit masks of the NUL bytes and of the
/// bytes [`NOT_PLAIN`] marks (bit `i` for byte `at + i`). SSE2 on x86_64 (a signed compare
/// with 0x20 finds the controls and the non-ASCII bytes at once); `None` elsewhere.
#[inline(always)]
fn marks16(bytes: &[u8], at: usize) -> Option<(u32, u32)> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if at + 16 <= bytes.len() {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
        };
        // SAFETY: SSE2 is there (the cfg above); `at + 16 <= bytes.len()`, so the 16 bytes
        // read lie inside `bytes`, and the load takes any alignment.
        return Some(unsafe {
            let chunk = _mm_loadu_si128(bytes.as_ptr().add(at).cast::<__m128i>());
            let nul = _mm_movemask_epi8(_mm_cmpeq_epi8(chunk, _mm_setzero_si128()));
            let marks = _mm_movemask_epi8(_mm_or_si128(
                _mm_cmplt_epi8(chunk, _mm_set1_epi8(0x20)),
                _mm_or_si128(
                    _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8)),
                ),
            ));
            (nul as u32, marks as u32)
        });
    }
    let _ = (bytes, at);
    None
}

/// Writes BSON string bytes as a JSON string, checking them on the way: one pass over
/// printable ASCII without quotes or backslashes (the usual case: valid, nothing to escape),
/// else a UTF-8 check and escaping.
pub fn write_text(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), String> {
    write_text_in(out, bytes, bytes.len())
}

/// [`write_text`] of the first `len` bytes of `source`, which may go on past them (the rest of
/// a document): then a short string is checked and copied 16 bytes at once.
fn write_text_in(out: &mut Vec<u8>, source: &[u8], len: usize) -> Result<(), String> {
    let bytes = &source[..len];
    // Sixteen bytes a step where 16 can be read (the marks of bytes past `len` dropped), else
    // one table lookup per byte, no branch.
    let mut at = 0;
    let mut special = 0u32;
    while at < len {
        let Some((_, marks)) = marks16(source, at) else {
            special = bytes[at..].iter().fold(special, |special, &b| {
                special | u32::from(NOT_PLAIN[usize::from(b)])
            });
            break;
        };
        let left = len - at;
        special |= if left >= 16 {
            marks
        } else {
            marks & ((1 << left) - 1)
        };
        at += 16;
    }
    if special == 0 {
        write_quoted(out, source, len, b"");
    } else {
        write_str(out, text(bytes)?);
    }
    Ok(())
}

/// Appends `"`, the first `len` bytes of `source`, `"` and `tail` (at most 2 bytes) to `out`.
///
/// Up to 16 bytes with 16 to read in `source` go in one 16-byte load and store (SSE2 on
/// x86_64; the bytes stored past the text land in `out`'s spare room and are not counted):
/// a call to `memcpy` per name and string was a tenth of a BSON message's instructions
/// (callgrind), these being 4 to 20 bytes long.
#[inline(always)]
fn write_quoted(out: &mut Vec<u8>, source: &[u8], len: usize, tail: &[u8]) {
    debug_assert!(len <= source.len() && tail.len() <= 2);
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if len <= 16 && source.len() >= 16 {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
        let written = len + 2 + tail.len();
        // Room for the opening quote and the whole 16-byte store, and for the rest.
        out.reserve(written.max(17));
        let base = out.len();
        // SAFETY: `reserve` made room for at least max(written, 17) bytes after `base`: the
        // quote at `base`, the 16 bytes stored at `base + 1` and the closing quote and tail
        // (at `base + 1 + len`, `len <= 16`) lie in it. `source` has 16 bytes to load. SSE2 is
        // there (the cfg). The first `written` bytes are set before `set_len` counts them.
        unsafe {
            let at = out.as_mut_ptr().add(base);
            at.write(b'"');
            let chunk = _mm_loadu_si128(source.as_ptr().cast::<__m128i>());
            _mm_storeu_si128(at.add(1).cast::<__m128i>(), chunk);
            at.add(1 + len).write(b'"');
            for (i, &byte) in tail.iter().enumerate() {
                at.add(2 + len + i).write(byte);
            }
            out.set_len(base + written);
        }
        return;
    }
    out.push(b'"');
    out.extend_from_slice(&source[..len]);
    out.push(b'"');
    out.extend_from_slice(tail);
}

/// Writes a BSON document (its bytes) as a JSON object.
pub fn write_document(doc: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    write_container(doc, out, true)
}

/// Writes the elements of `doc` as a JSON object or array. The types event bodies carry are
/// written straight from their bytes as they are read (the name scanned once, no [`Value`] made
/// for them); the rest go through [`Elements::read_marked`] and [`write_value`]. Both ways check
/// the same lengths and give the same errors.
fn write_container(doc: &[u8], out: &mut Vec<u8>, object: bool) -> Result<(), String> {
    out.push(if object { b'{' } else { b'[' });
    // The element at `next`; no `Elements` made unless a rare type needs one (building it in
    // memory and reading it back at once stalled every container's start: perf annotate).
    check_frame(doc)?;
    let mut next = 4;
    let last = doc.len() - 1;
    let mut first = true;
    loop {
        let at = next;
        let kind = doc[at];
        if kind == 0 {
            if at == last {
                break;
            }
            return Err("undecodable BSON: bytes after the end of a document".to_owned());
        }
        let (key_end, plain) = name_end(doc, at + 1)?;
        let key = &doc[at + 1..key_end];
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        if object {
            if plain {
                write_quoted(out, &doc[at + 1..], key.len(), b":");
            } else {
                write_text(out, key)?;
                out.push(b':');
            }
        }
        let value = key_end + 1;
        let end = match kind {
            0x02 => {
                let (bytes, end) = string_at(doc, value)?;
                // The string's bytes, then the rest of the document (see `write_text_in`).
                write_text_in(out, &doc[value + 4..], bytes.len())?;
                end
            }
            0x01 => {
                write_f64(out, f64::from_le_bytes(fixed(doc, value)?));
                value + 8
            }
            0x10 => {
                write_i64(out, i64::from(i32::from_le_bytes(fixed(doc, value)?)));
                value + 4
            }
            0x12 => {
                write_i64(out, i64::from_le_bytes(fixed(doc, value)?));
                value + 8
            }
            0x08 => {
                let [byte] = fixed::<1>(doc, value)?;
                out.extend_from_slice(if byte != 0 { b"true" } else { b"false" });
                value + 1
            }
            0x0A => {
                out.extend_from_slice(b"null");
                value
            }
            0x03 | 0x04 => {
                let len = int32_at(doc, value)?;
                let end = value + len;
                if len < 5 || end > last || doc[end - 1] != 0 {
                    return Err(format!(
                        "undecodable BSON: field `{}`: a bad embedded length",
                        String::from_utf8_lossy(key)
                    ));
                }
                write_container(&doc[value..end], out, kind == 0x03)?;
                end
            }
            _ => {
                let mut fields = Elements {
                    doc,
                    at,
                    done: false,
                };
                let (key, _, value) = fields
                    .read_marked()?
                    .ok_or("undecodable BSON: an element read twice")?;
                write_value(doc, key, value, out)?;
                next = fields.at;
                continue;
            }
        };
        if end > last {
            return Err(format!(
                "undecodable BSON: field `{}` runs past its document",
                String::from_utf8_lossy(key)
            ));
        }
        next = end;
    }
    out.push(if object { b'}' } else { b']' });
    Ok(())
}

/// Writes the value of element `key` of `doc`.
fn write_value(doc: &[u8], key: &[u8], value: Value<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Double(v) => write_f64(out, v),
        Value::String(bytes) => write_text(out, bytes)?,
        Value::Document(inner) => write_container(inner, out, true)?,
        Value::Array(inner) => write_container(inner, out, false)?,
        Value::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Value::Null | Value::Undefined => out.extend_from_slice(b"null"),
        Value::Int32(v) => write_i64(out, i64::from(v)),
        Value::Int64(v) => write_i64(out, v),
        Value::DateTime(millis) => write_datetime(out, millis),
        Value::Binary { subtype, bytes } => write_binary(out, subtype, bytes),
        Value::ObjectId(bytes) => write_object_id(out, bytes),
        Value::Other(_) => {
            let key = text(key)?;
            let value = RawDocument::from_bytes(doc)
                .map_err(|e| format!("undecodable BSON: {e}"))?
                .get(key)
                .map_err(|e| format!("undecodable BSON: {e}"))?
                .ok_or_else(|| format!("undecodable BSON: field `{key}` not found again"))?;
            write_bson_value(value, out)?;
        }
    }
    Ok(())
}

/// Why a document cannot be written as JSON, naming the first field at fault by its path
/// (`data.names.1`); for the warning about a body delivered raw (slow, used only then).
pub fn why_undecodable(doc: &[u8]) -> String {
    let mut path = Vec::new();
    match locate(doc, true, &mut path) {
        Some(why) if path.is_empty() => why,
        Some(why) => format!("field `{}`: {why}", path.join(".")),
        None => "the document cannot be written as JSON".to_owned(),
    }
}

fn locate(doc: &[u8], object: bool, path: &mut Vec<String>) -> Option<String> {
    let mut fields = match elements(doc) {
        Ok(fields) => fields,
        Err(e) => return Some(e),
    };
    loop {
        let (key, value) = match fields.read() {
            Ok(Some(element)) => element,
            Ok(None) => return None,
            Err(e) => return Some(e),
        };
        path.push(String::from_utf8_lossy(key).into_owned());
        if object && std::str::from_utf8(key).is_err() {
            return Some("undecodable BSON: a field name that is not UTF-8".to_owned());
        }
        let why = match value {
            Value::String(bytes) => text(bytes).err(),
            Value::Document(inner) => locate(inner, true, path),
            Value::Array(inner) => locate(inner, false, path),
            Value::Other(_) => write_value(doc, key, value, &mut Vec::new()).err(),
            _ => None,
        };
        if why.is_some() {
            return why;
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson};

    /// This reader's JSON, and the bson crate's (the reference).
    fn both(bytes: &[u8]) -> (String, String) {
        let mut fast = Vec::new();
        write_document(bytes, &mut fast).unwrap();
        let mut reference = Vec::new();
        crate::bson_json::write_document(RawDocument::from_bytes(bytes).unwrap(), &mut reference)
            .unwrap();
        (
            String::from_utf8(fast).unwrap(),
            String::from_utf8(reference).unwrap(),
        )
    }

    #[test]
    fn every_type_is_written_as_the_bson_crate_reader_writes_it() {
        let oid = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let document = doc! {
            "double": 2.5, "whole": 6.0, "int32": 7_i32, "int64": 9_007_199_254_740_993_i64,
            "when": bson::DateTime::from_millis(1_704_097_800_123),
            "far": bson::DateTime::from_millis(i64::MAX),
            "bytes": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![1; 16] },
            "oid": oid, "nan": f64::NAN, "inf": f64::NEG_INFINITY, "list": [1_i32, "a", Bson::Null],
            "dec": Bson::Decimal128("1.5".parse().unwrap()),
            "ts": Bson::Timestamp(bson::Timestamp { time: 5, increment: 2 }),
            "re": Bson::RegularExpression(bson::Regex { pattern: "a+".into(), options: "i".into() }),
            "code": Bson::JavaScriptCode("f()".into()), "min": Bson::MinKey, "max": Bson::MaxKey,
            "text": "quote \" back \\ tab \t é", "nested": {"a": [{"b": true}, []], "e": {}},
            "after": "the special ones",
            "a \"quoted\" name": 1_i32, "back\\slash": 2_i32, "tab\tname": 3_i32, "déjà": 4_i32,
            "\u{1}": {"inner \"key\"": "x"},
        };
        let bytes = bson::to_vec(&document).unwrap();
        let (fast, reference) = both(&bytes);
        assert_eq!(fast, reference);
        assert!(
            serde_json::from_str::<serde_json::Value>(&fast).is_ok(),
            "{fast}"
        );
    }

    #[test]
    fn the_reference_capture_is_written_as_the_bson_crate_reader_writes_it() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/hmb/recv-bson.bin");
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut at = 0;
        let mut documents = 0;
        while at < body.len() {
            let len = int32_at(&body, at).unwrap();
            let (fast, reference) = both(&body[at..at + len]);
            assert_eq!(fast, reference);
            at += len;
            documents += 1;
        }
        assert!(documents >= 2);
    }

    #[test]
    fn names_end_at_their_nul_and_say_whether_they_are_plain() {
        assert_eq!(name_end(b"type\0rest", 0), Ok((4, true)));
        assert_eq!(name_end(b"a_long_name_past_8\0", 0), Ok((18, true)));
        assert_eq!(name_end(b"exactly8\0", 0), Ok((8, true)));
        assert_eq!(name_end(b"quo\"te\0", 0), Ok((6, false)));
        assert_eq!(name_end(b"0123456789\\x\0", 0), Ok((12, false)));
        assert_eq!(name_end(b"d\xc3\xa9j\xc3\xa0\0", 0), Ok((6, false)));
        // A mark after the NUL does not count, in a 16-byte step or byte by byte.
        assert_eq!(name_end(b"ab\0\"\x01\xff\\cdefgh", 0), Ok((2, true)));
        assert_eq!(
            name_end(b"abcdefgh\0\"\x01\xff\\cdefghijklmn", 0),
            Ok((8, true))
        );
        assert_eq!(name_end(b"abcdefgh\x01\0cdefghijklmn", 0), Ok((9, false)));
        // A NUL past the first 16 bytes, marks before it in either step.
        assert_eq!(name_end(b"abcdefghijklmnopqrs\0tail", 0), Ok((19, true)));
        assert_eq!(name_end(b"abc\"efghijklmnopqrs\0tail", 0), Ok((19, false)));
        assert_eq!(name_end(b"abcdefghijklmnopq\"s\0tail", 0), Ok((19, false)));
        assert!(name_end(b"no end at all", 0).is_err());
    }

    proptest::proptest! {
        /// Any bytes at any place in a document, ASCII most often: read as the standard
        /// check reads them.
        #[test]
        fn short_texts_are_read_as_the_standard_check_reads_them(
            doc in proptest::collection::vec(
                proptest::prop_oneof![4 => 0u8..0x80, 1 => proptest::prelude::any::<u8>()],
                0..40,
            ),
            start in proptest::prelude::any::<proptest::sample::Index>(),
            len in 0usize..20,
        ) {
            let start = start.index(doc.len() + 1);
            let end = (start + len).min(doc.len());
            let text = &doc[start..end];
            proptest::prop_assert_eq!(short_text(&doc, text), std::str::from_utf8(text).ok());
        }

        /// Names and texts of any bytes, at any place relative to a 16-byte step: the same
        /// end and plainness as the byte loop, and the text written as serde_json writes it
        /// (or refused when it is not UTF-8).
        #[test]
        fn names_and_texts_are_read_16_bytes_at_a_time_as_byte_by_byte(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"abcdefgh_0\0\x01\"\\\x7f\x80\xc3\xa9 ".to_vec()),
                0..80),
            at in 0usize..80,
        ) {
            let at = at.min(bytes.len());
            // The byte loop: the reference.
            let reference = bytes[at..].iter().position(|&b| b == 0).map(|n| {
                let name = &bytes[at..at + n];
                (at + n, name.iter().all(|&b| NOT_PLAIN[usize::from(b)] == 0))
            });
            proptest::prop_assert_eq!(name_end(&bytes, at).ok(), reference);
            // A text alone, and a text followed by more bytes (as in a document), after what
            // `out` already holds.
            for len in [bytes.len() - at, (bytes.len() - at) / 3] {
                let mut out = b"[".to_vec();
                let written = write_text_in(&mut out, &bytes[at..], len);
                match std::str::from_utf8(&bytes[at..at + len]) {
                    Ok(text) => {
                        proptest::prop_assert!(written.is_ok());
                        proptest::prop_assert_eq!(
                            String::from_utf8(out).ok(),
                            serde_json::to_string(text).ok().map(|json| format!("[{json}"))
                        );
                    }
                    Err(_) => proptest::prop_assert!(written.is_err()),
                }
            }
        }

        /// A document with bytes changed anywhere: written as JSON that parses, or an error;
        /// never a panic, never text that is not JSON.
        #[test]
        fn changed_documents_are_json_or_errors(
            changes in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..4),
        ) {
            let document = doc! {
                "evcategory": "base", "eventtype": "modified", "objpkey": 7_i32, "big": 1_i64 << 40,
                "objattrs": {"modified": {"latitude": 48.58, "name": "Gr\u{e2}ce", "ok": true,
                "none": Bson::Null, "list": [1_i32, "two", 3.5, {"k": "v"}]}}, "step": 0_i32,
            };
            let mut bytes = bson::to_vec(&document).unwrap();
            for (at, byte) in changes {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let mut out = Vec::new();
            if write_document(&bytes, &mut out).is_ok() {
                let text = String::from_utf8(out);
                proptest::prop_assert!(text.is_ok());
                let text = text.unwrap();
                proptest::prop_assert!(
                    serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                    "{}", text
                );
            }
        }
    }

    #[test]
    fn broken_documents_are_errors_not_panics() {
        let bytes = bson::to_vec(&doc! {"type": "T", "data": {"a": "text", "b": [1_i32]}}).unwrap();
        // Cut, or one byte changed: an error or a document, never a panic.
        for cut in 0..bytes.len() {
            let mut short = bytes[..cut].to_vec();
            if short.len() >= 4 {
                short[..4].copy_from_slice(&(cut as i32).to_le_bytes());
            }
            let _ = write_document(&short, &mut Vec::new());
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[at] ^= flip;
                let _ = write_document(&changed, &mut Vec::new());
            }
        }
        assert!(write_document(&bytes[..bytes.len() - 1], &mut Vec::new()).is_err());
    }
}
