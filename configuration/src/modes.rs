//! Permission modes a config may set (`[[handlers]] mode`, `[control] mode`), as octal text.

/// The mode of the output files handlers create (`jsonl`), unless their `mode` says otherwise.
pub const OUTPUT_MODE: u32 = 0o640;

/// Reads a configured permission mode, an octal string such as `"0640"`: only permission
/// bits (at most `0777`), the owner keeps read and write, and never writable by others.
/// `Err` says what is wrong, for a config error at the key.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode > 0o777 => Err(format!(
            "{text:?}: only permission bits (at most 0777) are taken"
        )),
        Ok(mode) if mode & 0o600 != 0o600 => Err(format!(
            "{text:?}: the owner must keep read and write (0600 at least)"
        )),
        Ok(mode) if mode & 0o002 != 0 => Err(format!(
            "{text:?}: writable by every user; give write access to a group instead (0660)"
        )),
        Ok(mode) => Ok(mode),
        Err(_) => Err(format!("{text:?} is not an octal mode such as \"0660\"")),
    }
}
