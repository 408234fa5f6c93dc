//! Writing a record's `updated_at` quickly: with a commit per event, chrono's general RFC 3339
//! formatting was a third of the cost of a commit. The date and time of day are formatted once
//! per second and kept; only the milliseconds are written each time.

use chrono::{DateTime, SecondsFormat, Utc};
use std::cell::RefCell;

thread_local! {
    /// The last second formatted: (seconds since the epoch, "YYYY-MM-DDTHH:MM:SS").
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// `2026-11-23T01:02:03.456Z`, the form `DateTime<Utc>` reads back.
pub fn format(time: &DateTime<Utc>) -> String {
    let seconds = time.timestamp();
    let millis = time.timestamp_subsec_millis().min(999);
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != seconds {
            let whole = time.to_rfc3339_opts(SecondsFormat::Secs, true);
            cached.1 = whole.trim_end_matches('Z').to_owned();
            cached.0 = seconds;
        }
        let mut text = String::with_capacity(cached.1.len() + 5);
        text.push_str(&cached.1);
        text.push('.');
        text.push(char::from(b'0' + (millis / 100) as u8));
        text.push(char::from(b'0' + (millis / 10 % 10) as u8));
        text.push(char::from(b'0' + (millis % 10) as u8));
        text.push('Z');
        text
    })
}

/// serde `serialize_with` for `updated_at`.
pub fn serialize<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(time))
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
        }
    }
}
