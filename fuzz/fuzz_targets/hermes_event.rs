//! A Hermes event body as a bus delivers it (any text): the routing header, the typed event,
//! the change it makes, and lone-surrogate patching. Nothing may panic; patched text must
//! keep its length and be JSON when the original's only fault was lone surrogates.
#![no_main]

use buslink_plugin_api::hermes::{HermesEvent, HermesHeader};
use buslink_plugin_api::hermes_value::Change;
use buslink_plugin_api::json_text::patch_lone_surrogates;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = HermesHeader::parse(text);
    if let Ok(event) = HermesEvent::from_json(text) {
        let _ = Change::from_event(&event);
    }
    if let Some(patched) = patch_lone_surrogates(text) {
        assert_eq!(patched.len(), text.len(), "patching changed the length");
    }
});
