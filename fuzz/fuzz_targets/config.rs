//! A config file's text (any bytes, read as the loader reads them): parsed and validated.
//! Nothing may panic, and every error must be printable with its position.
#![no_main]

use buslink::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    if let Err(errors) = Config::parse(Path::new("/nonexistent-dir/fuzz.toml"), text) {
        let _ = errors.to_string();
    }
});
