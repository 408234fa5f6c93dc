//! JSON text as Python's `json` writes it: **lone surrogate escapes** (`"Ren\udce9"`, what
//! `json.dumps` writes for a string holding an undecodable byte) are valid to Python and to
//! Hermes, but not to serde_json, which refuses them. These helpers let such bodies count as
//! JSON: the text itself is kept as it is (the escape reaches handlers untouched); only where a
//! Rust value must be built is each lone surrogate read as U+FFFD.

/// The text with every lone surrogate escape (`\uD800`-`\uDFFF` not part of a valid pair)
/// replaced by `\uFFFD` (the same length), or `None` when it has none.
pub fn patch_lone_surrogates(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut lone = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'\\' {
            at += 1;
            continue;
        }
        match escape_unit(bytes, at) {
            Some(high @ 0xD800..=0xDBFF) => match escape_unit(bytes, at + 6) {
                Some(0xDC00..=0xDFFF) => at += 12,
                _ => {
                    let _ = high;
                    lone.push(at);
                    at += 6;
                }
            },
            Some(0xDC00..=0xDFFF) => {
                lone.push(at);
                at += 6;
            }
            Some(_) => at += 6,
            // Any other escape: two bytes (`\"`, `\\`, `\n`, ...).
            None => at += 2,
        }
    }
    if lone.is_empty() {
        return None;
    }
    let mut patched = text.as_bytes().to_vec();
    for at in lone {
        patched[at..at + 6].copy_from_slice(b"\\ufffd");
    }
    // Only ASCII bytes were replaced by ASCII bytes.
    String::from_utf8(patched).ok()
}

/// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
fn escape_unit(bytes: &[u8], at: usize) -> Option<u16> {
    let escape = bytes.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    u16::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_patched_and_pairs_kept() {
        assert_eq!(patch_lone_surrogates(r#"{"a":"b"}"#), None);
        assert_eq!(patch_lone_surrogates(r#"{"a":"\ud83d\ude00"}"#), None);
        assert_eq!(
            patch_lone_surrogates(r#"{"name":"Ren\udce9","x":"\\udce9"}"#).as_deref(),
            Some(r#"{"name":"Ren\ufffd","x":"\\udce9"}"#)
        );
        assert_eq!(
            patch_lone_surrogates(r#"["\ud83d", "\ude00\ud83d\ude00"]"#).as_deref(),
            Some(r#"["\ufffd", "\ufffd\ud83d\ude00"]"#)
        );
        let patched = patch_lone_surrogates(r#"{"name":"Ren\udce9"}"#).unwrap();
        let value: serde_json::Value = serde_json::from_str(&patched).unwrap();
        assert_eq!(value["name"], "Ren\u{fffd}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any sequence of UTF-16 code units written as `\uXXXX` escapes (what Python's
            /// json may write) is JSON once patched, and patching keeps the text's length.
            #[test]
            fn escapes_of_any_code_units_are_json_once_patched(
                units in proptest::collection::vec(any::<u16>(), 0..40)
            ) {
                let text: String = std::iter::once("\"".to_owned())
                    .chain(units.iter().map(|u| format!("\\u{u:04x}")))
                    .chain(std::iter::once("\"".to_owned()))
                    .collect();
                let patched = patch_lone_surrogates(&text).unwrap_or_else(|| text.clone());
                prop_assert_eq!(patched.len(), text.len());
                prop_assert!(serde_json::from_str::<String>(&patched).is_ok(), "{}", patched);
            }

            #[test]
            fn any_text_is_patched_without_a_panic(text in ".{0,200}") {
                if let Some(patched) = patch_lone_surrogates(&text) {
                    prop_assert_eq!(patched.len(), text.len());
                }
            }
        }
    }
}
