//! Topic patterns of a subscription.
//!
//! Each pattern matches `^!?[\w?*]*$`: `?` is any single character, `*` any
//! run, anchored at both ends; a leading `!` makes it negative. A topic passes
//! if it matches at least one positive pattern (or there is none) and no
//! negative one. Messages without topic have topic `""`.

use regex::Regex;

/// The per-queue error text for a pattern outside `^!?[\w?*]*$`.
pub const INVALID_TOPIC: &str = "topic contains invalid characters";

/// A compiled list of topic patterns.
#[derive(Debug, Clone)]
pub struct TopicSet {
    positive: Vec<Regex>,
    negative: Vec<Regex>,
}

impl TopicSet {
    /// Compiles the patterns; fails with [`INVALID_TOPIC`].
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<TopicSet, &'static str> {
        let mut set = TopicSet {
            positive: Vec::new(),
            negative: Vec::new(),
        };
        for pattern in patterns {
            let pattern = pattern.as_ref();
            let (negative, body) = match pattern.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, pattern),
            };
            let mut re = String::from("^");
            for c in body.chars() {
                match c {
                    '?' => re.push_str("(?s:.)"),
                    '*' => re.push_str("(?s:.*)"),
                    c if c.is_ascii_alphanumeric() || c == '_' => re.push(c),
                    _ => return Err(INVALID_TOPIC),
                }
            }
            re.push('$');
            let re = Regex::new(&re).map_err(|_| INVALID_TOPIC)?;
            if negative {
                set.negative.push(re);
            } else {
                set.positive.push(re);
            }
        }
        Ok(set)
    }

    /// Whether a message with this topic passes.
    pub fn matches(&self, topic: &str) -> bool {
        (self.positive.is_empty() || self.positive.iter().any(|re| re.is_match(topic)))
            && !self.negative.iter().any(|re| re.is_match(topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(p: &[&str]) -> TopicSet {
        TopicSet::new(p).expect("valid patterns")
    }

    #[test]
    fn positive_and_negative_patterns() {
        let s = set(&["PICK*", "!PICK_X"]);
        assert!(s.matches("PICK"));
        assert!(s.matches("PICK_Y"));
        assert!(!s.matches("PICK_X"));
        assert!(!s.matches("ORIGIN"));
        assert!(!s.matches(""));
    }

    #[test]
    fn question_mark_is_one_character_and_anchored() {
        let s = set(&["?RIGIN", "PICK"]);
        assert!(s.matches("ORIGIN"));
        assert!(!s.matches("RIGIN"));
        assert!(!s.matches("XORIGIN"));
        assert!(s.matches("PICK"));
        assert!(!s.matches("PICKX"));
    }

    #[test]
    fn empty_topic() {
        assert!(set(&["*"]).matches(""));
        assert!(!set(&["?*"]).matches(""));
        assert!(set(&[]).matches(""));
        assert!(set(&["!X"]).matches(""));
        assert!(!set(&["!*"]).matches("A"));
    }

    #[test]
    fn invalid_characters() {
        assert_eq!(TopicSet::new(&["PI-CK"]).err(), Some(INVALID_TOPIC));
        assert_eq!(TopicSet::new(&["a!b"]).err(), Some(INVALID_TOPIC));
        assert_eq!(TopicSet::new(&["Ä"]).err(), Some(INVALID_TOPIC));
    }
}
