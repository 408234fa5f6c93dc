//! Offsets of HMB events.
//!
//! - One queue: `Offset::Int(seq)`, the event's seq; resuming after it asks for `seq + 1`.
//! - Several queues: a readable `Offset::String` holding, for every queue whose position is
//!   known, the **next** seq to read after this event: `"QUEUE_A=42,QUEUE_B=17"`. It names a
//!   point between events, so `seek` and `seek_after` both resume there. In queue names `%`,
//!   `,` and `=` are written `%25`, `%2C` and `%3D`.

use std::fmt::Write as _;

/// Writes the composite form of `positions` (`(queue name, next seq)`, in order).
pub fn format_composite<'a>(positions: impl IntoIterator<Item = (&'a str, i64)>, out: &mut String) {
    out.clear();
    for (name, next) in positions {
        if !out.is_empty() {
            out.push(',');
        }
        for c in name.chars() {
            match c {
                '%' => out.push_str("%25"),
                ',' => out.push_str("%2C"),
                '=' => out.push_str("%3D"),
                c => out.push(c),
            }
        }
        let _ = write!(out, "={next}");
    }
}

fn decode_name(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).ok_or("a % escape is cut short")?;
        out.push(match code {
            "25" => '%',
            "2C" | "2c" => ',',
            "3D" | "3d" => '=',
            other => return Err(format!("unknown escape %{other}")),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses the composite form: `(queue name, next seq)` pairs.
pub fn parse_composite(text: &str) -> Result<Vec<(String, i64)>, String> {
    let mut pairs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, seq) = part
            .rsplit_once('=')
            .ok_or_else(|| format!("{part:?} is not QUEUE=SEQ"))?;
        let seq: i64 = seq
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the seq is not an integer"))?;
        if seq < 0 {
            return Err(format!("{part:?}: the seq must not be negative"));
        }
        let name = decode_name(name.trim())?;
        if name.is_empty() {
            return Err(format!("{part:?}: the queue name is empty"));
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(format!("queue {name} is named twice"));
        }
        pairs.push((name, seq));
    }
    if pairs.is_empty() {
        return Err("no QUEUE=SEQ pair".into());
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_round_trip() {
        let mut out = String::new();
        format_composite([("QUEUE_A", 41), ("B,=%x", 17)], &mut out);
        assert_eq!(out, "QUEUE_A=41,B%2C%3D%25x=17");
        assert_eq!(
            parse_composite(&out).unwrap(),
            vec![("QUEUE_A".to_owned(), 41), ("B,=%x".to_owned(), 17)]
        );
        assert_eq!(
            parse_composite(" A = 3 , B=0").unwrap(),
            vec![("A".to_owned(), 3), ("B".to_owned(), 0)]
        );
    }

    #[test]
    fn composite_errors() {
        assert!(parse_composite("").is_err());
        assert!(parse_composite("A").is_err());
        assert!(parse_composite("A=x").is_err());
        assert!(parse_composite("A=-1").is_err());
        assert!(parse_composite("A=1,A=2").is_err());
        assert!(parse_composite("A%zz=1").is_err());
    }
}
