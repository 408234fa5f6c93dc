//! The layout of a version-2 cache file: three fixed-size slots, each holding one record with
//! its generation and checksum, so a record is replaced in place (no new file, no rename, one
//! `fdatasync`) and a torn write can never leave the cache unreadable.
//!
//! ```text
//! slot 0: the hot slot      written at every commit, before the next event (survives the
//!                           daemon's own death: it is in the page cache at once)
//! slot 1, slot 2: durable   written in turn, each followed by fdatasync: while one is being
//!                           written the other holds the previous durable record
//! ```
//!
//! A slot is text a person can read: a header line, the record as JSON, then spaces up to the
//! slot's last byte, a newline:
//!
//! ```text
//! buslink-offsets v2 gen=42 len=231 crc=9a1c03d2
//! { "version": 2, "consumer": "demo", ... }
//! ```
//!
//! The checksum (CRC-32) covers the generation and the JSON. Readers take the valid slot with
//! the highest generation; slots are aligned on 4 KiB so that each lies in pages of its own.

/// Slot sizes are multiples of this (a page: writes to different slots never share one).
pub(super) const SLOT_ALIGN: usize = 4096;
/// Slots in a file.
pub(super) const SLOTS: usize = 3;
/// The slot written at every commit.
pub(super) const HOT: usize = 0;
/// The slots written in turn, each made durable before the other is touched.
pub(super) const DURABLE: [usize; 2] = [1, 2];

const MAGIC: &str = "buslink-offsets v2 ";

/// One readable slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Slot<'a> {
    /// Which slot of the file (0..SLOTS).
    pub index: usize,
    /// The commit generation (higher is newer).
    pub generation: u64,
    /// The record, JSON.
    pub json: &'a [u8],
}

fn checksum(generation: u64, json: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&generation.to_le_bytes());
    hasher.update(json);
    hasher.finalize()
}

/// The smallest slot size that holds `json` (a multiple of [`SLOT_ALIGN`]).
pub(super) fn slot_size_for(json: &[u8]) -> usize {
    // Header (magic + three fields of at most 20 digits) + newline + JSON + newline.
    let needed = MAGIC.len() + 64 + 1 + json.len() + 1;
    needed.div_ceil(SLOT_ALIGN) * SLOT_ALIGN
}

/// The bytes of a slot holding `json` at `generation`, into `out` (cleared first): header,
/// JSON, newline. The rest of the slot is padding, which readers ignore.
pub(super) fn encode_into(generation: u64, json: &[u8], out: &mut Vec<u8>) {
    // One commit per event makes this hot: no formatting machinery.
    let mut digits = itoa::Buffer::new();
    out.clear();
    out.extend_from_slice(MAGIC.as_bytes());
    out.extend_from_slice(b"gen=");
    out.extend_from_slice(digits.format(generation).as_bytes());
    out.extend_from_slice(b" len=");
    out.extend_from_slice(digits.format(json.len()).as_bytes());
    out.extend_from_slice(b" crc=");
    let crc = checksum(generation, json);
    out.extend(
        (0..8)
            .rev()
            .map(|nibble| b"0123456789abcdef"[(crc >> (nibble * 4)) as usize & 15]),
    );
    out.push(b'\n');
    out.extend_from_slice(json);
    out.push(b'\n');
}

/// Reads one slot; `Err` says why it is not a valid record (empty, torn, foreign).
pub(super) fn decode(index: usize, bytes: &[u8]) -> Result<Slot<'_>, String> {
    let Some(rest) = bytes.strip_prefix(MAGIC.as_bytes()) else {
        return Err(if bytes.iter().all(|&b| b == 0) {
            "empty".to_owned()
        } else {
            "no slot header".to_owned()
        });
    };
    let line_end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("a header line without its end")?;
    let header = std::str::from_utf8(&rest[..line_end]).map_err(|_| "a header that is not text")?;
    let mut generation = None;
    let mut len = None;
    let mut crc = None;
    for field in header.split(' ') {
        match field.split_once('=') {
            Some(("gen", value)) => generation = value.parse::<u64>().ok(),
            Some(("len", value)) => len = value.parse::<usize>().ok(),
            Some(("crc", value)) => crc = u32::from_str_radix(value, 16).ok(),
            _ => {}
        }
    }
    let (Some(generation), Some(len), Some(crc)) = (generation, len, crc) else {
        return Err(format!("an unreadable header {header:?}"));
    };
    let json = rest
        .get(line_end + 1..line_end + 1 + len)
        .ok_or("a record longer than its slot")?;
    if checksum(generation, json) != crc {
        return Err("a checksum mismatch (a torn write)".to_owned());
    }
    Ok(Slot {
        index,
        generation,
        json,
    })
}

/// Every slot of a file: the readable ones, and why each other one is not.
pub(super) fn scan(bytes: &[u8]) -> (Vec<Slot<'_>>, Vec<String>) {
    let mut slots = Vec::new();
    let mut problems = Vec::new();
    if bytes.is_empty() || !bytes.len().is_multiple_of(SLOT_ALIGN * SLOTS) {
        problems.push(format!(
            "its size ({} bytes) is not {SLOTS} slots of a multiple of {SLOT_ALIGN} bytes",
            bytes.len()
        ));
        return (slots, problems);
    }
    let slot_size = bytes.len() / SLOTS;
    for (index, chunk) in bytes.chunks(slot_size).enumerate() {
        match decode(index, chunk) {
            Ok(slot) => slots.push(slot),
            Err(why) => problems.push(format!("slot {index}: {why}")),
        }
    }
    (slots, problems)
}

/// The newest readable slot of a file.
pub(super) fn newest(bytes: &[u8]) -> Result<Slot<'_>, String> {
    let (slots, problems) = scan(bytes);
    slots
        .into_iter()
        .max_by_key(|slot| slot.generation)
        .ok_or_else(|| format!("no intact record in any slot ({})", problems.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`encode_into`] a new vector.
    fn encode(generation: u64, json: &[u8]) -> Vec<u8> {
        let mut slot = Vec::with_capacity(MAGIC.len() + 64 + json.len());
        encode_into(generation, json, &mut slot);
        slot
    }

    fn file(slots: [Option<(u64, &str)>; SLOTS], size: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        for slot in slots {
            let start = bytes.len();
            if let Some((generation, json)) = slot {
                bytes.extend(encode(generation, json.as_bytes()));
            }
            bytes.resize(start + size, b' ');
        }
        bytes
    }

    #[test]
    fn the_newest_intact_slot_wins() {
        let bytes = file([Some((7, "{\"a\":7}")), Some((6, "{\"a\":6}")), None], 4096);
        let newest = newest(&bytes).expect("a record");
        assert_eq!((newest.index, newest.generation), (0, 7));
        assert_eq!(newest.json, b"{\"a\":7}");
    }

    #[test]
    fn a_torn_slot_is_skipped_for_the_previous_record() {
        let mut bytes = file(
            [
                Some((9, "{\"a\":9}")),
                Some((8, "{\"a\":8}")),
                Some((7, "{}")),
            ],
            4096,
        );
        // The hot slot's JSON changed after its checksum was written (a torn write).
        let at = bytes.iter().position(|&b| b == b'9').expect("gen digit");
        let json_at = at + bytes[at..].iter().position(|&b| b == b'{').expect("json");
        bytes[json_at + 5] = b'1';
        let newest = newest(&bytes).expect("a record");
        assert_eq!(newest.generation, 8);
        assert_eq!(
            scan(&bytes).1,
            vec!["slot 0: a checksum mismatch (a torn write)"]
        );
    }

    #[test]
    fn no_intact_slot_is_an_error_naming_each_slot() {
        let mut bytes = file([None, Some((1, "{}")), None], 4096);
        bytes[4096 + 30] ^= 0xff;
        bytes[..4096].fill(0);
        let error = newest(&bytes).unwrap_err();
        assert!(error.contains("slot 0: empty"), "{error}");
        assert!(error.contains("slot 1:"), "{error}");
        assert!(error.contains("slot 2: no slot header"), "{error}");
        assert!(newest(b"hello").unwrap_err().contains("size (5 bytes)"));
    }

    #[test]
    fn the_header_is_plain_text() {
        let slot = encode(42, b"{}");
        let crc = format!("{:08x}", checksum(42, b"{}"));
        assert_eq!(
            String::from_utf8(slot).unwrap(),
            format!("buslink-offsets v2 gen=42 len=2 crc={crc}\n{{}}\n")
        );
        assert_eq!(crc.len(), 8);
    }

    #[test]
    fn records_larger_than_a_page_get_larger_slots() {
        let big = format!("{{\"offset\":\"{}\"}}", "x".repeat(10_000));
        let size = slot_size_for(big.as_bytes());
        assert_eq!(size % SLOT_ALIGN, 0);
        let slot = encode(1, big.as_bytes());
        assert!(slot.len() > 4096 && slot.len() <= size);
        assert_eq!(decode(0, &slot).expect("valid").json, big.as_bytes());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// A cache file holding anything at all (another program wrote it, a disk returned
            /// garbage) is read without a panic: a slot or an error.
            #[test]
            fn any_bytes_are_read_without_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..3 * SLOT_ALIGN + 100)
            ) {
                let _ = scan(&bytes);
                let _ = newest(&bytes);
            }

            /// A slot written over any bytes (the rest of the file torn or random) is the one
            /// read back, with its JSON exactly.
            #[test]
            fn a_slot_written_over_any_bytes_is_read_back(
                json in "[ -~]{0,400}",
                generation in 1u64..u64::MAX / 2,
                index in 0usize..SLOTS,
                mut bytes in proptest::collection::vec(any::<u8>(), 3 * SLOT_ALIGN),
            ) {
                let mut slot = Vec::new();
                encode_into(generation, json.as_bytes(), &mut slot);
                let at = index * SLOT_ALIGN;
                bytes[at..at + slot.len()].copy_from_slice(&slot);
                let read = newest(&bytes).map_err(TestCaseError::fail)?;
                prop_assert_eq!(read.json, json.as_bytes());
                prop_assert_eq!(read.generation, generation);
            }
        }
    }
}
