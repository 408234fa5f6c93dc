//! The offset cache file's bytes (a disk, a crash or a person may have changed them): read
//! as buslink reads it at start. Nothing may panic: any bytes give a record or a clear error.
#![no_main]

use buslink::offsets::OffsetCache;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // Decoding touches no file: the path only names the cache in errors.
    let cache = OffsetCache::new(Path::new("/nonexistent-state-dir"), "fuzz");
    if let Err(error) = cache.decode(data) {
        let _ = error.to_string();
    }
});
