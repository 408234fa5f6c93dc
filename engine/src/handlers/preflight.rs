//! What a handler's check before use (`check_handler`, in `mod.rs` beside `build_one`) shares
//! between handler types: whether a directory is writable.

use std::path::Path;

/// Whether `dir` exists and is writable, or could be created.
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => return Ok(()),
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    tempfile::tempfile_in(existing)
        .map(|_| ())
        .map_err(|e| format!("cannot write in {}: {e}", existing.display()))
}
