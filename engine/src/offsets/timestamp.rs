//! Writing a record's `updated_at` quickly: with a commit per event, chrono's general RFC 3339
//! formatting was a third of the cost of a commit. The date and time of day are formatted once
//! per second and kept; only the milliseconds are written each time.

use chrono::{DateTime, SecondsFormat, Utc};
use std::cell::RefCell;

thread_local! {
    /// The last second formatted for `updated_at`: (seconds since the epoch,
    /// "YYYY-MM-DDTHH:MM:SS").
    static NOW_SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    /// The same for `last_timestamp` (event times: another second than now's).
    static EVENT_SECOND: RefCell<(i64, String)> =
        const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends `2026-11-23T01:02:03.456Z` (`digits` = 3) or `...03.456789Z` (6) to `out`, the
/// forms `DateTime<Utc>` reads back, the date and time of day taken from `cache` when it holds
/// that second.
fn write_in(
    cache: &'static std::thread::LocalKey<RefCell<(i64, String)>>,
    time: &DateTime<Utc>,
    digits: u32,
    out: &mut Vec<u8>,
) {
    let seconds = time.timestamp();
    let fraction = match digits {
        3 => time.timestamp_subsec_millis().min(999),
        _ => time.timestamp_subsec_micros().min(999_999),
    };
    cache.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            let whole = time.to_rfc3339_opts(SecondsFormat::Secs, true);
            cached.1 = whole.trim_end_matches('Z').to_owned();
            cached.0 = seconds;
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    out.push(b'.');
    for place in (0..digits).rev() {
        out.push(b'0' + (fraction / 10u32.pow(place) % 10) as u8);
    }
    out.push(b'Z');
}

/// [`write_in`] as a `String`.
fn format_in(
    cache: &'static std::thread::LocalKey<RefCell<(i64, String)>>,
    time: &DateTime<Utc>,
    digits: u32,
) -> String {
    let mut text = Vec::with_capacity(32);
    write_in(cache, time, digits, &mut text);
    // Only ASCII was written: chrono's RFC 3339 text, digits, '.' and 'Z'.
    String::from_utf8(text).unwrap_or_default()
}

/// Appends `updated_at`'s text (to the millisecond, no quotes) to `out`.
pub(super) fn write_millis(time: &DateTime<Utc>, out: &mut Vec<u8>) {
    write_in(&NOW_SECOND, time, 3, out)
}

/// Appends `last_timestamp`'s text (to the microsecond, no quotes) to `out`.
pub(super) fn write_micros(time: &DateTime<Utc>, out: &mut Vec<u8>) {
    write_in(&EVENT_SECOND, time, 6, out)
}

/// `2026-11-23T01:02:03.456Z`, the form `DateTime<Utc>` reads back.
pub(super) fn format(time: &DateTime<Utc>) -> String {
    format_in(&NOW_SECOND, time, 3)
}

/// serde `serialize_with` for `updated_at`.
pub(super) fn serialize<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(time))
}

/// serde `serialize_with` for `last_timestamp` (to the microsecond, as events carry it).
pub(super) fn serialize_micros<S: serde::Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&format_in(&EVENT_SECOND, time, 6)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_chrono_does_to_the_millisecond_and_reads_back() {
        let times = [
            "2026-11-23T01:02:03.456789Z",
            "2026-11-23T01:02:03.999999Z",
            "2026-11-23T01:02:04.000Z",
            "1999-12-31T23:59:59.007Z",
        ];
        for text in times {
            let time: DateTime<Utc> = text.parse().unwrap();
            let formatted = format(&time);
            assert_eq!(formatted, time.to_rfc3339_opts(SecondsFormat::Millis, true));
            let back: DateTime<Utc> = formatted.parse().unwrap();
            assert_eq!(back.timestamp_millis(), time.timestamp_millis());
            let micros = format_in(&EVENT_SECOND, &time, 6);
            assert_eq!(micros, time.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
    }
}
