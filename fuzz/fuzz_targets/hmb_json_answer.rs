//! A JSON /recv or /stream answer from a hostile server: framed whole and framed in two
//! pieces (cut where the first byte says), every framed message read by the one-pass scanner
//! and by serde. Nothing may panic, and the cut must not change what is framed.
#![no_main]

use buslink_hmb::framing::Framer;
use buslink_hmb::message::parse_json;
use buslink_hmb::settings::Format;
use libfuzzer_sys::fuzz_target;

/// Frames `body` fed in the pieces `cuts` gives; the framed items' bytes, or the error.
fn frame(body: &[u8], cut: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut framer = Framer::new(Format::Json);
    let mut buf = Vec::new();
    let mut pos = 0;
    let mut items = Vec::new();
    for piece in [&body[..cut], &body[cut..]] {
        buf.extend_from_slice(piece);
        while let Some(item) = framer.next(&buf, &mut pos)? {
            if let (Some(head), Ok(raw)) = (&item.head, std::str::from_utf8(&buf)) {
                let _ = head.parsed(raw, item.range.clone());
            }
            if let Ok(text) = std::str::from_utf8(&buf[item.range.clone()]) {
                let _ = parse_json(text);
            }
            items.push(buf[item.range].to_vec());
        }
        buf.drain(..pos);
        pos = 0;
    }
    Ok(items)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let cut = usize::from(first).min(body.len());
    let whole = frame(body, body.len());
    let pieces = frame(body, cut);
    if let (Ok(whole), Ok(pieces)) = (&whole, &pieces) {
        assert_eq!(
            whole, pieces,
            "the cut at {cut} changed the messages framed"
        );
    }
});
