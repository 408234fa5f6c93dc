//! Structural scanning of JSON bytes: where strings and values end, and the top-level fields
//! of one HMB message, in one pass.
//!
//! On x86_64 the scans look at many bytes per step: a container's end in 64-byte blocks (see
//! `Containers::blocks`; the instruction set picked at run time, `lanes`), a string's end 16
//! bytes at a time; elsewhere, byte by byte (the same results: the tests compare every build
//! the machine runs with the byte loop).
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
///
/// The next quote or backslash is looked for 16 bytes at a time where 16 are left (SSE2 on
/// x86_64: the byte loop's compare-and-branch per byte was most of reading a message's keys and
/// short strings), byte by byte otherwise.
pub fn string_end(buf: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at = quote_or_backslash(buf, at)?;
        if buf[at] == b'"' {
            return Some(at + 1);
        }
        at += 2;
    }
}

/// The index after the closing quote of a string whose content starts at `at`, when that
/// content has no escape; `None` when it has one or the bytes end first (the caller then reads
/// it with [`string_end`]).
pub fn plain_string_end(buf: &[u8], at: usize) -> Option<usize> {
    let at = quote_or_backslash(buf, at)?;
    (buf[at] == b'"').then_some(at + 1)
}

/// Whether `literal` stands at `at` in `buf`.
#[inline]
pub fn literal_at(buf: &[u8], at: usize, literal: &[u8]) -> bool {
    buf.get(at..at + literal.len()) == Some(literal)
}

/// The index of the first `"` or `\\` at or after `at`.
fn quote_or_backslash(buf: &[u8], at: usize) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    let at = {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let mut at = at;
        while at + 16 <= buf.len() {
            // SAFETY: SSE2 is there (the cfg above); `at + 16 <= buf.len()`, so the 16 bytes
            // read lie inside `buf`, and the load takes any alignment.
            let found = unsafe {
                let chunk = _mm_loadu_si128(buf.as_ptr().add(at).cast::<__m128i>());
                _mm_movemask_epi8(_mm_or_si128(
                    _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8)),
                    _mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8)),
                ))
            };
            if found != 0 {
                return Some(at + found.trailing_zeros() as usize);
            }
            at += 16;
        }
        at
    };
    buf.get(at..)?
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|n| at + n)
}

/// The index after the object or array starting at `start`; `Ok(None)` when incomplete.
///
/// On x86_64 the bytes are looked at 64 at a time (`Containers::blocks`, in the widest build
/// the CPU runs: AVX2, SSE2 with POPCNT, SSE2), then 16 at a time (a chunk's quotes and
/// brackets as bit masks, only those bytes visited); a block or chunk holding a backslash is
/// walked byte by byte.
/// Elsewhere, and for the last bytes, a plain byte loop (which beat a lookup-table `position`
/// and `memchr` over the quotes, measured with callgrind on 300-byte messages).
pub fn container_end(buf: &[u8], start: usize) -> Result<Option<usize>, String> {
    let mut scan = Containers {
        at: start,
        depth: 0,
        in_string: false,
    };
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // The widest build of the block loop the CPU runs: AVX2 (2013 on), POPCNT (2008 on;
        // neither in the baseline target), else SSE2 alone. Asked once per process (std keeps
        // the answers).
        let found =
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("popcnt") {
                // SAFETY: AVX2 and POPCNT were just detected.
                unsafe { scan.blocks_avx2(buf) }
            } else if std::is_x86_feature_detected!("popcnt") {
                // SAFETY: SSE2 is the build's (the cfg above), POPCNT was just detected.
                unsafe { scan.blocks_popcnt(buf) }
            } else {
                // SAFETY: the build targets SSE2 (the cfg above).
                unsafe { scan.blocks(buf) }
            };
        if let Some(found) = found? {
            return Ok(Some(found));
        }
        // SAFETY: the build targets SSE2 (the cfg above).
        if let Some(found) = unsafe { scan.chunks(buf) }? {
            return Ok(Some(found));
        }
    }
    scan.bytes(buf, buf.len())
}

/// Each bit `i` set when an odd number of the bits `0..=i` of `quotes` are: with the quotes of
/// a block, the bytes from an opening quote (included) to its closing quote (excluded).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
fn prefix_xor(quotes: u64) -> u64 {
    let mut inside = quotes;
    for shift in [1, 2, 4, 8, 16, 32] {
        inside ^= inside << shift;
    }
    inside
}

/// Where a scan for a container's end stands: the next byte to look at, the bracket depth, and
/// whether that byte is inside a string.
struct Containers {
    at: usize,
    depth: usize,
    in_string: bool,
}

impl Containers {
    /// One closing bracket: `Some(end)` when it closes the container.
    fn close(&mut self, at: usize) -> Result<Option<usize>, String> {
        self.depth = self
            .depth
            .checked_sub(1)
            .ok_or_else(|| "unbalanced brackets in a message".to_owned())?;
        Ok((self.depth == 0).then_some(at + 1))
    }

    /// Byte by byte, up to `until` (a backslash's escaped byte may lie past it): the end, or
    /// `Ok(None)` with `self.at` where the scan goes on.
    fn bytes(&mut self, buf: &[u8], until: usize) -> Result<Option<usize>, String> {
        while self.at < until {
            let byte = buf[self.at];
            if self.in_string {
                match byte {
                    b'"' => self.in_string = false,
                    b'\\' => self.at += 1,
                    _ => {}
                }
            } else {
                match byte {
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        if let Some(end) = self.close(self.at)? {
                            return Ok(Some(end));
                        }
                    }
                    b'"' => self.in_string = true,
                    _ => {}
                }
            }
            self.at += 1;
        }
        // A backslash as the last byte leaves `at` past the end (its escaped byte is still to
        // come): the scan goes on from the end.
        self.at = self.at.min(buf.len());
        Ok(None)
    }

    /// Sixty-four bytes at a time while 64 are left: the end, or `Ok(None)` with `self.at` at
    /// the last (fewer than 64) bytes.
    ///
    /// A block's quotes, brackets and backslashes become 64-bit masks; its bytes inside strings
    /// are told from the quotes at once ([`prefix_xor`]), so only the brackets outside strings
    /// are left to count, and none is visited when the block cannot hold the closing one (fewer
    /// closing brackets than the depth). A block with a backslash is walked byte by byte (an
    /// escaped quote is not a quote): rare outside bodies that quote text.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[target_feature(enable = "sse2")]
    fn blocks(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        // SAFETY: SSE2 is enabled here.
        unsafe { self.blocks_with::<lanes::Sse2>(buf) }
    }

    /// [`blocks`](Self::blocks) for CPUs with POPCNT (a block's brackets counted in one
    /// instruction each instead of a dozen).
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[target_feature(enable = "sse2,popcnt")]
    fn blocks_popcnt(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        // SAFETY: SSE2 is enabled here.
        unsafe { self.blocks_with::<lanes::Sse2>(buf) }
    }

    /// [`blocks`](Self::blocks) for CPUs with AVX2 (and POPCNT): a block in two loads.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[target_feature(enable = "avx2,popcnt")]
    fn blocks_avx2(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        // SAFETY: AVX2 is enabled here.
        unsafe { self.blocks_with::<lanes::Avx2>(buf) }
    }

    /// The body of [`blocks`](Self::blocks), inlined into each build of it.
    ///
    /// # Safety
    /// The instructions `L` uses must be there.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    unsafe fn blocks_with<L: lanes::Lanes>(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        while self.at + 64 <= buf.len() {
            let at = self.at;
            // SAFETY: `at + 64 <= buf.len()`; the instructions are there (the contract).
            let lanes::Block {
                quotes,
                backslashes,
                opens,
                closes,
            } = unsafe { L::block(buf, at) };
            if backslashes != 0 {
                if let Some(end) = self.bytes(buf, at + 64)? {
                    return Ok(Some(end));
                }
                continue;
            }
            let inside = prefix_xor(quotes) ^ if self.in_string { u64::MAX } else { 0 };
            // The last byte's state is the next block's first.
            self.in_string = inside >> 63 == 1;
            let outside = !inside;
            let (opens, closes) = (opens & outside, closes & outside);
            if (closes.count_ones() as usize) < self.depth {
                // The depth cannot come back to 0 in this block.
                self.depth += opens.count_ones() as usize;
                self.depth -= closes.count_ones() as usize;
            } else {
                let mut marks = opens | closes;
                while marks != 0 {
                    let bit = marks & marks.wrapping_neg();
                    marks ^= bit;
                    if opens & bit != 0 {
                        self.depth += 1;
                    } else if let Some(end) = self.close(at + bit.trailing_zeros() as usize)? {
                        return Ok(Some(end));
                    }
                }
            }
            self.at = at + 64;
        }
        Ok(None)
    }

    /// Sixteen bytes at a time while sixteen are left: the end, or `Ok(None)` with `self.at`
    /// at the last (fewer than 16) bytes.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[target_feature(enable = "sse2")]
    fn chunks(&mut self, buf: &[u8]) -> Result<Option<usize>, String> {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        let [quote, backslash, open_brace, open_bracket, close_brace, close_bracket] =
            [b'"', b'\\', b'{', b'[', b'}', b']'].map(|byte| _mm_set1_epi8(byte as i8));
        while self.at + 16 <= buf.len() {
            let at = self.at;
            // SAFETY: `at + 16 <= buf.len()`, so the 16 bytes read lie inside `buf`; the load
            // takes any alignment.
            let chunk = unsafe { _mm_loadu_si128(buf.as_ptr().add(at).cast::<__m128i>()) };
            let mask = |byte| _mm_movemask_epi8(_mm_cmpeq_epi8(chunk, byte)) as u32;
            if mask(backslash) != 0 {
                if let Some(end) = self.bytes(buf, at + 16)? {
                    return Ok(Some(end));
                }
                continue;
            }
            let quotes = mask(quote);
            let opens = _mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(chunk, open_brace),
                _mm_cmpeq_epi8(chunk, open_bracket),
            )) as u32;
            let closes = _mm_movemask_epi8(_mm_or_si128(
                _mm_cmpeq_epi8(chunk, close_brace),
                _mm_cmpeq_epi8(chunk, close_bracket),
            )) as u32;
            let mut marks = quotes | opens | closes;
            while marks != 0 {
                let bit = marks & marks.wrapping_neg();
                marks ^= bit;
                if quotes & bit != 0 {
                    self.in_string = !self.in_string;
                } else if self.in_string {
                    // A bracket inside a string.
                } else if opens & bit != 0 {
                    self.depth += 1;
                } else if let Some(end) = self.close(at + bit.trailing_zeros() as usize)? {
                    return Ok(Some(end));
                }
            }
            self.at = at + 16;
        }
        Ok(None)
    }
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
            // One pass: to the first delimiter, every byte before it checked.
            for (n, &byte) in buf[start..].iter().enumerate() {
                match byte {
                    b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t' => {
                        return Ok(Some(start + n))
                    }
                    b'+' | b'-' | b'.' => {}
                    _ if byte.is_ascii_alphanumeric() => {}
                    _ => {
                        return Err(format!(
                            "an invalid value at byte {} ({})",
                            start + n,
                            show(byte)
                        ))
                    }
                }
            }
            Ok(None)
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
///
/// A plain string's bytes are not checked for UTF-8 here: the whole answer is checked once
/// before any text of it is used (`fetcher::receive`; a message read alone goes through
/// `HeadText::text_in`, which checks its bytes).
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
    // The content holds no unescaped quote (`span` is one string), so the first quote or
    // backslash from its start is its closing quote unless it has escapes.
    if plain_string_end(buf, inner.start) == Some(span.end) {
        Ok(Some(Text::Plain(inner)))
    } else {
        serde_json::from_slice::<String>(bytes)
            .map(|text| Some(Text::Unescaped(text)))
            .map_err(|e| format!("message field `{key}`: {e}"))
    }
}

/// Reads the integer value at `span` (an integral float too, as JSON writers may give);
/// `None` for `null`.
pub fn integer_value(buf: &[u8], span: Range<usize>, key: &str) -> Result<Option<i64>, String> {
    let bytes = &buf[span];
    if bytes == b"null" {
        return Ok(None);
    }
    if let Some(value) = plain_integer(bytes) {
        return Ok(Some(value));
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

/// The usual integer, a sequence number: an optional `-` and 1 to 18 ASCII digits (no `i64`
/// overflow possible), read as it is scanned; `None` for anything else.
pub fn plain_integer(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'));
    Some(if negative { -value } else { value })
}

/// Whether the object at `span` has string values for both `keys` among its top-level
/// fields (reading stops once both were seen).
pub fn has_string_fields(buf: &[u8], span: Range<usize>, keys: [&[u8]; 2]) -> bool {
    // As Hermes events come from httpmsgbus (keys sorted, no whitespace): `{"evcategory":"..",
    // "eventtype":"` at the start, seen with a few compares; else the loop below decides.
    if buf.get(span.start) == Some(&b'{') {
        if let Some(first) = compact_string_field(buf, span.start + 1, keys[0]) {
            if buf.get(first) == Some(&b',')
                && compact_string_field(buf, first + 1, keys[1]).is_some()
            {
                return true;
            }
        }
    }
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

/// With `"key":"` at `at` (no whitespace) and the string value free of escapes: the index after
/// that value.
fn compact_string_field(buf: &[u8], at: usize, key: &[u8]) -> Option<usize> {
    let after_key = at + 1 + key.len();
    if buf.get(at) == Some(&b'"')
        && literal_at(buf, at + 1, key)
        && literal_at(buf, after_key, b"\":\"")
    {
        plain_string_end(buf, after_key + 3)
    } else {
        None
    }
}

/// How a 64-byte block becomes the bit masks [`container_end`] needs, per instruction set.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod lanes {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        _mm256_or_si256, _mm256_set1_epi8, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8,
        _mm_or_si128, _mm_set1_epi8,
    };

    /// A block's bytes of each kind: bit `i` for byte `at + i`.
    pub struct Block {
        pub quotes: u64,
        pub backslashes: u64,
        /// `{` and `[`.
        pub opens: u64,
        /// `}` and `]`.
        pub closes: u64,
    }

    /// An instruction set's way of reading a block.
    pub trait Lanes {
        /// The masks of the 64 bytes at `at`.
        ///
        /// # Safety
        /// `at + 64 <= buf.len()`, and the instruction set is there.
        unsafe fn block(buf: &[u8], at: usize) -> Block;
    }

    /// Sixteen bytes a load (x86_64's baseline).
    pub struct Sse2;

    /// Thirty-two bytes a load.
    pub struct Avx2;

    // `{` and `[` are 0x7b and 0x5b, `}` and `]` 0x7d and 0x5d: with bit 0x20 set, one
    // comparison finds each pair (no other byte becomes 0x7b or 0x7d that way).

    impl Lanes for Sse2 {
        #[inline(always)]
        unsafe fn block(buf: &[u8], at: usize) -> Block {
            let mut block = Block {
                quotes: 0,
                backslashes: 0,
                opens: 0,
                closes: 0,
            };
            for part in 0..4 {
                // SAFETY: the 16 bytes at `at + 16 * part` lie in `buf` (the contract); the
                // load takes any alignment; SSE2 is there.
                unsafe {
                    let chunk = _mm_loadu_si128(buf.as_ptr().add(at + 16 * part).cast::<__m128i>());
                    let folded = _mm_or_si128(chunk, _mm_set1_epi8(0x20));
                    let shift = 16 * part;
                    let mask = |vector| u64::from(_mm_movemask_epi8(vector) as u16) << shift;
                    block.quotes |= mask(_mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'"' as i8)));
                    block.backslashes |= mask(_mm_cmpeq_epi8(chunk, _mm_set1_epi8(b'\\' as i8)));
                    block.opens |= mask(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)));
                    block.closes |= mask(_mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)));
                }
            }
            block
        }
    }

    impl Lanes for Avx2 {
        #[inline(always)]
        unsafe fn block(buf: &[u8], at: usize) -> Block {
            // SAFETY: the 64 bytes at `at` lie in `buf` (the contract); the loads take any
            // alignment; AVX2 is there (the contract).
            unsafe {
                let low = _mm256_loadu_si256(buf.as_ptr().add(at).cast::<__m256i>());
                let high = _mm256_loadu_si256(buf.as_ptr().add(at + 32).cast::<__m256i>());
                let bit_5 = _mm256_set1_epi8(0x20);
                let (low_folded, high_folded) =
                    (_mm256_or_si256(low, bit_5), _mm256_or_si256(high, bit_5));
                #[inline(always)]
                unsafe fn equal(low: __m256i, high: __m256i, byte: u8) -> u64 {
                    // SAFETY: AVX2 is there (the caller's contract).
                    unsafe {
                        let byte = _mm256_set1_epi8(byte as i8);
                        u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(low, byte)) as u32)
                            | u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(high, byte)) as u32)
                                << 32
                    }
                }
                Block {
                    quotes: equal(low, high, b'"'),
                    backslashes: equal(low, high, b'\\'),
                    opens: equal(low_folded, high_folded, b'{'),
                    closes: equal(low_folded, high_folded, b'}'),
                }
            }
        }
    }
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
        // Past 16 bytes, and with an escape at every place around a 16-byte step.
        for before in 0..40 {
            let text = format!(r#""{}\"{}" tail"#, "x".repeat(before), "y".repeat(before));
            assert_eq!(
                string_end(text.as_bytes(), 1),
                Some(2 * before + 4),
                "{text}"
            );
            let text = format!(r#""{}\\" tail"#, "x".repeat(before));
            assert_eq!(string_end(text.as_bytes(), 1), Some(before + 4), "{text}");
            assert_eq!(string_end(&text.as_bytes()[..before + 3], 1), None);
        }
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

    /// The byte loop alone, as `container_end` was before chunks: the reference the chunked
    /// scan must agree with.
    fn bytewise(buf: &[u8], start: usize) -> Result<Option<usize>, String> {
        Containers {
            at: start,
            depth: 0,
            in_string: false,
        }
        .bytes(buf, buf.len())
    }

    /// `container_end` with each build of the block loop this CPU runs (the tests run on one
    /// machine, which would try only the widest otherwise). A build whose instructions the CPU
    /// lacks cannot run here and is left out: x86_64 machines of this decade have them all.
    fn every_build(buf: &[u8], start: usize) -> Vec<Result<Option<usize>, String>> {
        #[allow(unused_mut)]
        let mut found = vec![container_end(buf, start)];
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        for build in 0..3 {
            let mut scan = Containers {
                at: start,
                depth: 0,
                in_string: false,
            };
            // SAFETY: each build runs only where its instructions were detected.
            let blocks = unsafe {
                match build {
                    0 => scan.blocks(buf),
                    1 if std::is_x86_feature_detected!("popcnt") => scan.blocks_popcnt(buf),
                    2 if std::is_x86_feature_detected!("avx2")
                        && std::is_x86_feature_detected!("popcnt") =>
                    {
                        scan.blocks_avx2(buf)
                    }
                    _ => continue,
                }
            };
            let end = blocks.and_then(|end| match end {
                Some(end) => Ok(Some(end)),
                // SAFETY: SSE2 is the build's (the cfg).
                None => unsafe { scan.chunks(buf) }.and_then(|end| match end {
                    Some(end) => Ok(Some(end)),
                    None => scan.bytes(buf, buf.len()),
                }),
            });
            found.push(end);
        }
        found
    }

    #[test]
    fn chunks_and_bytes_agree_around_every_chunk_boundary() {
        // Escapes, quotes and brackets at every position relative to the 16-byte chunks, cut
        // at every length.
        let pieces = [
            r#""k":"v""#,
            r#""a\"b""#,
            r#""\\""#,
            r#""}]{[""#,
            "[1,2]",
            "{}",
            r#""x\\\"y""#,
            " ",
        ];
        for shift in 0..65 {
            let mut text = String::from("{");
            text.push_str(&" ".repeat(shift));
            for (i, piece) in pieces.iter().cycle().take(40).enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&format!(r#""f{i}":[{piece}]"#).replace("[ ]", "[0]"));
            }
            text.push_str("} tail");
            let bytes = text.as_bytes();
            let whole = bytewise(bytes, 0);
            assert_eq!(whole, Ok(Some(bytes.len() - 5)), "{text}");
            for cut in 1..bytes.len() {
                for found in every_build(&bytes[..cut], 0) {
                    assert_eq!(
                        found,
                        bytewise(&bytes[..cut], 0),
                        "shift {shift}, cut {cut}: {text}"
                    );
                }
            }
        }
        // The first balancing bracket ends it, past a chunk or a block; a close before any
        // open is an error either way.
        for spaces in [30, 80] {
            let spaced = format!("[{}]]]", " ".repeat(spaces));
            for found in every_build(spaced.as_bytes(), 0) {
                assert_eq!(found, Ok(Some(spaces + 2)));
            }
            let unbalanced = format!("{}}}]", " ".repeat(spaces - 10));
            for found in every_build(unbalanced.as_bytes(), 0) {
                assert!(found.is_err());
            }
        }
    }

    proptest::proptest! {
        /// Any bytes made of JSON's structural characters, letters and escapes: the chunked
        /// scan and the byte loop give the same end, `None` or error.
        #[test]
        fn the_chunked_scan_is_the_byte_loop(
            body in proptest::collection::vec(
                proptest::sample::select(b"{}[]\"\\ab:, ".to_vec()), 0..200),
            open in proptest::sample::select(b"{[".to_vec()),
        ) {
            let mut text = vec![open];
            text.extend(body);
            for found in every_build(&text, 0) {
                proptest::prop_assert_eq!(found, bytewise(&text, 0));
            }
        }

        /// Long texts with one backslash or none, so that whole 64-byte blocks are read from
        /// their masks: strings and brackets across block boundaries (more opening brackets
        /// than closing ones, so that most texts go on past a block), cut anywhere.
        #[test]
        fn the_block_scan_is_the_byte_loop(
            body in proptest::collection::vec(
                proptest::sample::select(b"{{[[}]\"\"ab:, abcdefghijk".to_vec()), 0..600),
            backslash in proptest::option::of(0usize..600),
            open in proptest::sample::select(b"{[".to_vec()),
            cut in 0usize..601,
        ) {
            let mut text = vec![open];
            text.extend(body);
            if let Some(at) = backslash.filter(|&at| at < text.len()) {
                text[at] = b'\\';
            }
            let cut = cut.clamp(1, text.len());
            for found in every_build(&text, 0) {
                proptest::prop_assert_eq!(found, bytewise(&text, 0));
            }
            for found in every_build(&text[..cut], 0) {
                proptest::prop_assert_eq!(found, bytewise(&text[..cut], 0));
            }
        }
    }

    #[test]
    fn a_string_longer_than_a_block_hides_its_brackets_and_quotes_nothing() {
        // Blocks wholly inside a string, no quote in them: the string carries through.
        for lead in 0..70 {
            let text = format!("[{}\"{}\", 1]]", " ".repeat(lead), "a]}[{".repeat(60));
            let end = text.len() - 1;
            for found in every_build(text.as_bytes(), 0) {
                assert_eq!(found, Ok(Some(end)), "lead {lead}");
            }
            // Cut inside the string: more bytes needed.
            for found in every_build(&text.as_bytes()[..lead + 200], 0) {
                assert_eq!(found, Ok(None), "lead {lead}");
            }
        }
    }

    #[test]
    fn a_deep_container_ends_past_blocks_with_and_without_strings() {
        // 100 levels open, 300 bytes of strings holding brackets, then all close: the depth
        // is carried through blocks that cannot hold the end.
        let mut text = "[".repeat(100);
        for i in 0..30 {
            text.push_str(&format!("\"}}]{i:03}\","));
        }
        text.push('1');
        text.push_str(&"]".repeat(100));
        let end = text.len();
        text.push_str(&" ".repeat(70));
        for found in every_build(text.as_bytes(), 0) {
            assert_eq!(found, Ok(Some(end)));
        }
    }

    #[test]
    fn integers_of_every_form() {
        let read = |text: &str| integer_value(text.as_bytes(), 0..text.len(), "seq");
        assert_eq!(read("0"), Ok(Some(0)));
        assert_eq!(read("41"), Ok(Some(41)));
        assert_eq!(read("-7"), Ok(Some(-7)));
        assert_eq!(
            read("999999999999999999"),
            Ok(Some(999_999_999_999_999_999))
        );
        assert_eq!(read("9223372036854775807"), Ok(Some(i64::MAX)));
        assert_eq!(read("-9223372036854775808"), Ok(Some(i64::MIN)));
        assert_eq!(read("12.0"), Ok(Some(12)));
        assert_eq!(read("1e3"), Ok(Some(1000)));
        assert_eq!(read("null"), Ok(None));
        assert!(read("-").is_err());
        assert!(read("12.5").is_err());
        assert!(read("9223372036854775808").is_err());
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

    /// A field value for the Hermes check: strings (plain or escaped) most often.
    fn field_value() -> impl proptest::strategy::Strategy<Value = Option<serde_json::Value>> {
        use proptest::prelude::*;
        prop_oneof![
            4 => "[a-z ]{0,8}".prop_map(|s| Some(serde_json::Value::String(s))),
            1 => ".{0,6}".prop_map(|s| Some(serde_json::Value::String(s))),
            1 => Just(Some(serde_json::Value::Null)),
            1 => Just(Some(serde_json::json!(5))),
            1 => Just(Some(serde_json::json!({"evcategory": "c", "eventtype": "e"}))),
            2 => Just(None),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]

        /// Objects written compact with sorted keys (as httpmsgbus writes `data`, read with a
        /// few compares) or with spaces (read field by field): the Hermes check says what
        /// serde_json's reading of the object says.
        #[test]
        fn the_hermes_check_says_what_serde_json_reads(
            category in field_value(),
            event_type in field_value(),
            before in proptest::option::of("[a-d]{1,3}"),
            spaced in proptest::bool::weighted(0.2),
        ) {
            let mut object = serde_json::Map::new();
            for (key, value) in [("evcategory", category), ("eventtype", event_type)] {
                if let Some(value) = value {
                    object.insert(key.to_owned(), value);
                }
            }
            if let Some(key) = before {
                object.insert(key, serde_json::json!("x"));
            }
            object.insert("objattrs".to_owned(), serde_json::json!({"k": [1, "v"]}));
            let value = serde_json::Value::Object(object);
            let text = if spaced {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                value.to_string()
            };
            let expected = ["evcategory", "eventtype"].iter().all(|key| value[key].is_string());
            proptest::prop_assert_eq!(
                has_string_fields(text.as_bytes(), 0..text.len(), [b"evcategory", b"eventtype"]),
                expected,
                "{}", text
            );
        }
    }
}
