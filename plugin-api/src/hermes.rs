//! A typed view of Hermes events (the JSON bodies the Hermes server publishes).

use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// A Hermes event, parsed from an event body.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HermesEvent {
    /// `base` or `initsync`.
    pub evcategory: String,
    /// `init-start`, `init-stop`, `added`, `modified`, `removed` or `dataschema`.
    pub eventtype: String,
    /// The object type (`null` for init-start, init-stop and dataschema).
    pub objtype: Option<String>,
    /// The object's primary key: a scalar, or an array for a composite key.
    pub objpkey: Option<Value>,
    /// The attributes (all of them for `added`, a diff for `modified`, empty for `removed`).
    pub objattrs: Value,
    /// The processing step reached by the server.
    pub step: i64,
    /// Whether the server processed this event only partially.
    #[serde(rename = "isPartiallyProcessed")]
    pub is_partially_processed: bool,
}

impl HermesEvent {
    /// Parses a Hermes event from JSON text, as Python's `json` writes it: a lone surrogate
    /// escape (`"Ren\udce9"`) is read as U+FFFD instead of failing the whole event.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text).or_else(|error| {
            match crate::json_text::patch_lone_surrogates(text) {
                Some(patched) => serde_json::from_str(&patched),
                None => Err(error),
            }
        })
    }
}

/// The fields of a Hermes event that routing needs, borrowed from the body. Any JSON object
/// parses; the fields it lacks are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HermesHeader<'a> {
    /// See [`HermesEvent::evcategory`].
    pub evcategory: Option<Cow<'a, str>>,
    /// See [`HermesEvent::eventtype`].
    pub eventtype: Option<Cow<'a, str>>,
    /// See [`HermesEvent::objtype`].
    pub objtype: Option<Cow<'a, str>>,
}

impl<'a> HermesHeader<'a> {
    /// Reads the routing fields of a JSON object; `None` when the text is not a JSON object.
    ///
    /// Reading stops as soon as the three fields were seen: Hermes writes them first, so the
    /// attributes, most of the body, are not even scanned.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut header = HermesHeader::default();
        let keys = ["evcategory", "eventtype", "objtype"];
        let mut slots = [None, None, None];
        peek_fields(text, &keys, &mut slots).then(|| {
            let [evcategory, eventtype, objtype] = slots;
            header.evcategory = evcategory;
            header.eventtype = eventtype;
            header.objtype = objtype;
            header
        })
    }
}

/// Any JSON value: the string it is (borrowed when it has no escapes), or `None`.
struct StringOrOther<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for StringOrOther<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = StringOrOther<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StringOrOther(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrOther(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(StringOrOther(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StringOrOther(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StringOrOther(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StringOrOther(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StringOrOther(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(StringOrOther(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringOrOther(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOrOther(None))
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// Reads the string values of `keys` from a JSON object into `slots`, stopping as soon as
/// every key was seen; returns whether `text` starts as a JSON object. A value that is not a
/// string (or null) leaves its slot empty.
pub fn peek_fields<'a>(text: &'a str, keys: &[&str], slots: &mut [Option<Cow<'a, str>>]) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    struct Peek<'k, 's, 'a> {
        keys: &'k [&'k str],
        slots: &'s mut [Option<Cow<'a, str>>],
        all_found: &'s mut bool,
    }

    impl<'de: 'a, 'a> Visitor<'de> for Peek<'_, '_, 'a> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut missing = self.keys.len();
            // Keys through the borrowing visitor: `Option<Cow<str>>` would allocate each one.
            while let Some(key) = map.next_key::<StringOrOther<'de>>()? {
                let position = key
                    .0
                    .as_deref()
                    .and_then(|key| self.keys.iter().position(|wanted| *wanted == key));
                match position {
                    Some(index) if self.slots[index].is_none() => {
                        self.slots[index] = map.next_value::<StringOrOther<'de>>()?.0;
                        missing -= 1;
                        if missing == 0 {
                            // Stop reading: the parser then fails on the rest of the object,
                            // which is not read (cheaper than a custom error, which is
                            // formatted and searched).
                            *self.all_found = true;
                            return Ok(());
                        }
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    let mut all_found = false;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = (&mut deserializer).deserialize_map(Peek {
        keys,
        slots,
        all_found: &mut all_found,
    });
    parsed.is_ok() || all_found
}

/// A Hermes string value with a special meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HermesSpecial<'a> {
    /// `HermesDatetime(2024-01-01T08:30:00Z)`: the text inside.
    Datetime(&'a str),
    /// `HermesBytes(<base64>)`: the base64 text inside.
    Bytes(&'a str),
}

impl<'a> HermesSpecial<'a> {
    /// Recognises `HermesDatetime(...)` and `HermesBytes(...)` strings.
    pub fn parse(value: &'a str) -> Option<Self> {
        let inner = |prefix: &str| {
            value
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
        };
        inner("HermesDatetime(")
            .map(HermesSpecial::Datetime)
            .or_else(|| inner("HermesBytes(").map(HermesSpecial::Bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDED: &str = r#"{
    "evcategory": "base",
    "eventtype": "added",
    "objtype": "SRVGroupsMembers",
    "objpkey": [2, 1023],
    "objattrs": {"group_id": 2, "user_id": 1023},
    "step": 0,
    "isPartiallyProcessed": false
}"#;

    #[test]
    fn parses_a_hermes_event() {
        let event = HermesEvent::from_json(ADDED).unwrap();
        assert_eq!(event.eventtype, "added");
        assert_eq!(event.objtype.as_deref(), Some("SRVGroupsMembers"));
        assert_eq!(event.objpkey, Some(serde_json::json!([2, 1023])));
        let header = HermesHeader::parse(ADDED).unwrap();
        assert_eq!(header.objtype.as_deref(), Some("SRVGroupsMembers"));
        assert_eq!(HermesHeader::parse("[1]"), None);
    }

    #[test]
    fn recognises_special_strings() {
        assert_eq!(
            HermesSpecial::parse("HermesDatetime(2024-01-01T08:30:00Z)"),
            Some(HermesSpecial::Datetime("2024-01-01T08:30:00Z"))
        );
        assert_eq!(
            HermesSpecial::parse("HermesBytes(AAEC)"),
            Some(HermesSpecial::Bytes("AAEC"))
        );
        assert_eq!(HermesSpecial::parse("plain"), None);
    }
}
