//! Test fixture: a valid shared library with no buslink plugin module in it.

/// Some exported function, so the library is not empty.
#[no_mangle]
pub extern "C" fn not_a_plugin_answer() -> u32 {
    42
}
