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
    /// Parses a Hermes event from JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// The fields of a Hermes event that routing needs, borrowed from the body without parsing the
/// attributes. Any JSON object parses; the fields it lacks are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct HermesHeader<'a> {
    /// See [`HermesEvent::evcategory`].
    #[serde(borrow, default)]
    pub evcategory: Option<Cow<'a, str>>,
    /// See [`HermesEvent::eventtype`].
    #[serde(borrow, default)]
    pub eventtype: Option<Cow<'a, str>>,
    /// See [`HermesEvent::objtype`].
    #[serde(borrow, default)]
    pub objtype: Option<Cow<'a, str>>,
}

impl<'a> HermesHeader<'a> {
    /// Reads the routing fields of a JSON object; `None` when the text is not a JSON object.
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
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
