//! A BSON /recv or /stream answer from a hostile server: documents framed by their length
//! prefix, each read as a message and converted to JSON text. Nothing may panic; what the
//! converter writes must be JSON.
#![no_main]

use buslink_hmb::framing::Framer;
use buslink_hmb::bson_json::bson_to_json_text;
use buslink_hmb::message::parse_bson;
use buslink_hmb::settings::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framer = Framer::new(Format::Bson);
    let mut pos = 0;
    while let Ok(Some(item)) = framer.next(data, &mut pos) {
        let doc = &data[item.range];
        let _ = parse_bson(doc);
        if let Ok(text) = bson_to_json_text(doc) {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                panic!("BSON converted to invalid JSON ({e}): {text}");
            }
        }
    }
});
