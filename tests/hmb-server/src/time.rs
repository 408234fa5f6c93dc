//! HMB time values.
//!
//! Output is always UTC `YYYY-MM-DDTHH:MM:SS.ffffffZ`. Input must be
//! `YYYY-MM-DDTHH:MM:SSZ` with an optional fraction of any length after the
//! seconds. Errors carry the text the reference server (Go `time.Parse` with the
//! layout `2006-01-02T15:04:05Z`) gives, because clients see it in 400 bodies.

use chrono::{DateTime, NaiveDate, Utc};

/// A point in time as carried by messages and subscription windows.
pub type Time = DateTime<Utc>;

/// Formats a time the way the server writes it (6 fraction digits, `Z`).
pub fn format(t: &Time) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// A time value that does not follow the accepted format; `Display` gives the
/// reference server's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

/// Parses a raw JSON token (a quoted string, quotes included), as the reference
/// server does for times in JSON bodies. `null` is handled by the caller.
pub fn parse_json_token(raw: &str) -> Result<Time, TimeError> {
    parse_with(raw, true)
}

/// Parses an unquoted time string (BSON bodies, library calls).
pub fn parse(value: &str) -> Result<Time, TimeError> {
    parse_with(value, false)
}

#[derive(Clone, Copy)]
enum Elem {
    Lit(&'static str),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

impl Elem {
    fn layout_text(self) -> &'static str {
        match self {
            Elem::Lit(s) => s,
            Elem::Year => "2006",
            Elem::Month => "01",
            Elem::Day => "02",
            Elem::Hour => "15",
            Elem::Minute => "04",
            Elem::Second => "05",
        }
    }
}

const QUOTED: [Elem; 13] = [
    Elem::Lit("\""),
    Elem::Year,
    Elem::Lit("-"),
    Elem::Month,
    Elem::Lit("-"),
    Elem::Day,
    Elem::Lit("T"),
    Elem::Hour,
    Elem::Lit(":"),
    Elem::Minute,
    Elem::Lit(":"),
    Elem::Second,
    Elem::Lit("Z\""),
];

const PLAIN: [Elem; 12] = [
    Elem::Year,
    Elem::Lit("-"),
    Elem::Month,
    Elem::Lit("-"),
    Elem::Day,
    Elem::Lit("T"),
    Elem::Hour,
    Elem::Lit(":"),
    Elem::Minute,
    Elem::Lit(":"),
    Elem::Second,
    Elem::Lit("Z"),
];

/// Go's `quote` as used in time parse errors.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Two digits (`fixed`) or one or two digits, like Go's `getnum`.
fn getnum(s: &str, fixed: bool) -> Option<(u32, &str)> {
    let b = s.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    let first = digit(0)?;
    match digit(1) {
        Some(second) => Some((first * 10 + second, &s[2..])),
        None if fixed => None,
        None => Some((first, &s[1..])),
    }
}

fn parse_with(value: &str, quoted: bool) -> Result<Time, TimeError> {
    let elems: &[Elem] = if quoted { &QUOTED } else { &PLAIN };
    let layout: String = elems.iter().map(|e| e.layout_text()).collect();
    let cannot = |rest: &str, elem: &str| {
        TimeError(format!(
            "parsing time {} as {}: cannot parse {} as {}",
            go_quote(value),
            go_quote(&layout),
            go_quote(rest),
            go_quote(elem)
        ))
    };
    let range = |what: &str| {
        TimeError(format!(
            "parsing time {}: {what} out of range",
            go_quote(value)
        ))
    };

    let (mut year, mut month, mut day, mut hour, mut minute, mut second, mut nanos) =
        (0i32, 0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
    let mut rest = value;
    for elem in elems {
        match *elem {
            Elem::Lit(lit) => {
                rest = rest.strip_prefix(lit).ok_or_else(|| cannot(rest, lit))?;
            }
            Elem::Year => {
                let digits = rest
                    .get(..4)
                    .filter(|d| d.bytes().all(|c| c.is_ascii_digit()));
                let digits = digits.ok_or_else(|| cannot(rest, "2006"))?;
                year = digits.parse().map_err(|_| cannot(rest, "2006"))?;
                rest = &rest[4..];
            }
            Elem::Month => {
                let (v, r) = getnum(rest, true).ok_or_else(|| cannot(rest, "01"))?;
                if !(1..=12).contains(&v) {
                    return Err(range("month"));
                }
                (month, rest) = (v, r);
            }
            Elem::Day => {
                let (v, r) = getnum(rest, true).ok_or_else(|| cannot(rest, "02"))?;
                (day, rest) = (v, r);
            }
            Elem::Hour => {
                let (v, r) = getnum(rest, false).ok_or_else(|| cannot(rest, "15"))?;
                if v > 23 {
                    return Err(range("hour"));
                }
                (hour, rest) = (v, r);
            }
            Elem::Minute => {
                let (v, r) = getnum(rest, true).ok_or_else(|| cannot(rest, "04"))?;
                if v > 59 {
                    return Err(range("minute"));
                }
                (minute, rest) = (v, r);
            }
            Elem::Second => {
                let (v, r) = getnum(rest, true).ok_or_else(|| cannot(rest, "05"))?;
                if v > 59 {
                    return Err(range("second"));
                }
                (second, rest) = (v, r);
                // An optional fraction of any length (Go accepts it although the
                // layout has none).
                let b = rest.as_bytes();
                if b.len() >= 2 && (b[0] == b'.' || b[0] == b',') && b[1].is_ascii_digit() {
                    let n = 1 + b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    let frac = &rest[1..n];
                    let mut ns = 0u32;
                    for (k, c) in frac.bytes().take(9).enumerate() {
                        ns += u32::from(c - b'0') * 10u32.pow(8 - k as u32);
                    }
                    nanos = ns;
                    rest = &rest[n..];
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(TimeError(format!(
            "parsing time {}: extra text: {}",
            go_quote(value),
            go_quote(rest)
        )));
    }
    let date = NaiveDate::from_ymd_opt(year, month, day).ok_or_else(|| range("day"))?;
    let t = date
        .and_hms_nano_opt(hour, minute, second, nanos)
        .ok_or_else(|| range("second"))?;
    Ok(t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_and_without_fraction() {
        let t = parse("2024-01-01T00:00:59.5Z").expect("valid time");
        assert_eq!(format(&t), "2024-01-01T00:00:59.500000Z");
        let t = parse_json_token("\"2024-01-01T00:01:00Z\"").expect("valid time");
        assert_eq!(format(&t), "2024-01-01T00:01:00.000000Z");
        let t = parse("2024-01-01T00:00:00.1234567891234Z").expect("long fraction");
        assert_eq!(format(&t), "2024-01-01T00:00:00.123456Z");
    }

    #[test]
    fn errors_read_like_the_reference_server() {
        let e = parse_json_token("\"2024-01-01 00:00:00\"").expect_err("space");
        assert_eq!(
            e.to_string(),
            r#"parsing time "\"2024-01-01 00:00:00\"" as "\"2006-01-02T15:04:05Z\"": cannot parse " 00:00:00\"" as "T""#
        );
        let e = parse_json_token("\"2024-13-01T00:00:00Z\"").expect_err("month");
        assert_eq!(
            e.to_string(),
            r#"parsing time "\"2024-13-01T00:00:00Z\"": month out of range"#
        );
        let e = parse("2024-02-30T00:00:00Z").expect_err("day");
        assert!(e.to_string().ends_with("day out of range"));
        assert!(parse("2024-01-01T00:00:00+01:00").is_err());
        assert!(parse("2024-01-01T00:00:00Zx").is_err());
    }
}
