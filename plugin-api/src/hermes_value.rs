//! Typed Hermes values: attributes and keys with `HermesDatetime(...)` and `HermesBytes(...)`
//! decoded, and the attribute changes of added / modified / removed events.

use crate::hermes::{HermesEvent, HermesSpecial};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// An attribute value of a Hermes object.
#[derive(Clone, Debug, PartialEq)]
pub enum HermesValue {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number (or an integer too large for `i64`).
    Float(f64),
    /// A string.
    String(String),
    /// `"HermesDatetime(2024-01-01T08:30:00Z)"`.
    Datetime(DateTime<Utc>),
    /// `"HermesBytes(<base64>)"`.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<HermesValue>),
    /// A nested object.
    Map(BTreeMap<String, HermesValue>),
}

impl HermesValue {
    /// Decodes a JSON value; special strings that do not decode stay strings.
    pub fn from_json(value: &Value) -> HermesValue {
        match value {
            Value::Null => HermesValue::Null,
            Value::Bool(b) => HermesValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => HermesValue::Int(i),
                None => HermesValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(text) => match HermesSpecial::parse(text) {
                Some(HermesSpecial::Datetime(inner)) => DateTime::parse_from_rfc3339(inner)
                    .map(|t| HermesValue::Datetime(t.with_timezone(&Utc)))
                    .unwrap_or_else(|_| HermesValue::String(text.clone())),
                Some(HermesSpecial::Bytes(inner)) => base64::engine::general_purpose::STANDARD
                    .decode(inner)
                    .map(HermesValue::Bytes)
                    .unwrap_or_else(|_| HermesValue::String(text.clone())),
                None => HermesValue::String(text.clone()),
            },
            Value::Array(items) => HermesValue::List(items.iter().map(Self::from_json).collect()),
            Value::Object(map) => HermesValue::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Encodes back to JSON as Hermes writes it (datetimes and bytes as their special strings,
    /// datetimes to the second).
    pub fn to_json(&self) -> Value {
        match self {
            HermesValue::Null => Value::Null,
            HermesValue::Bool(b) => Value::Bool(*b),
            HermesValue::Int(i) => Value::from(*i),
            HermesValue::Float(x) => Value::from(*x),
            HermesValue::String(s) => Value::String(s.clone()),
            HermesValue::Datetime(t) => Value::String(format!(
                "HermesDatetime({})",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            )),
            HermesValue::Bytes(b) => Value::String(format!(
                "HermesBytes({})",
                base64::engine::general_purpose::STANDARD.encode(b)
            )),
            HermesValue::List(items) => Value::Array(items.iter().map(Self::to_json).collect()),
            HermesValue::Map(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

/// An object's primary key: one value, or several for a composite key (`[group_id, user_id]`).
#[derive(Clone, Debug, PartialEq)]
pub enum ObjKey {
    /// A single-attribute key.
    Single(HermesValue),
    /// A composite key, in the order of the schema's `PRIMARYKEY_ATTRIBUTE` list.
    Composite(Vec<HermesValue>),
}

impl ObjKey {
    /// Decodes an `objpkey` (an array is a composite key).
    pub fn from_json(value: &Value) -> ObjKey {
        match value {
            Value::Array(parts) => {
                ObjKey::Composite(parts.iter().map(HermesValue::from_json).collect())
            }
            other => ObjKey::Single(HermesValue::from_json(other)),
        }
    }

    /// The key as Hermes writes it.
    pub fn to_json(&self) -> Value {
        match self {
            ObjKey::Single(value) => value.to_json(),
            ObjKey::Composite(parts) => {
                Value::Array(parts.iter().map(HermesValue::to_json).collect())
            }
        }
    }
}

/// The compact JSON text of the key (`1001`, `"abc"`, `[1,1001]`): a stable map key.
impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// What an event says about an object's attributes.
#[derive(Clone, Debug, PartialEq)]
pub enum Attributes {
    /// Every attribute (`added`; source NULLs are left out).
    Full(BTreeMap<String, HermesValue>),
    /// The difference (`modified`): attributes that appeared, changed, and disappeared.
    Diff {
        /// Attributes that had no value before.
        added: BTreeMap<String, HermesValue>,
        /// Attributes whose value changed.
        modified: BTreeMap<String, HermesValue>,
        /// Attributes that no longer have a value.
        removed: Vec<String>,
    },
    /// Nothing (`removed`).
    None,
}

impl Attributes {
    /// Applies these attributes to an object's current state.
    pub fn apply_to(&self, state: &mut BTreeMap<String, HermesValue>) {
        match self {
            Attributes::Full(all) => *state = all.clone(),
            Attributes::Diff {
                added,
                modified,
                removed,
            } => {
                for (name, value) in added.iter().chain(modified) {
                    state.insert(name.clone(), value.clone());
                }
                for name in removed {
                    state.remove(name);
                }
            }
            Attributes::None => state.clear(),
        }
    }
}

fn typed_map(value: Option<&Value>) -> BTreeMap<String, HermesValue> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), HermesValue::from_json(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// An added, modified or removed object, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The object type (`SRVUsers`).
    pub objtype: String,
    /// The object's key.
    pub objpkey: ObjKey,
    /// The attributes the event carries.
    pub attributes: Attributes,
    /// Whether the event is part of an initsync sequence (else a base event).
    pub initsync: bool,
}

impl Change {
    /// The typed change of an added / modified / removed event; `None` for other event types.
    pub fn from_event(event: &HermesEvent) -> Option<Change> {
        let objtype = event.objtype.clone()?;
        let objpkey = ObjKey::from_json(event.objpkey.as_ref().unwrap_or(&Value::Null));
        let attributes = match event.eventtype.as_str() {
            "added" => Attributes::Full(typed_map(Some(&event.objattrs))),
            "modified" => Attributes::Diff {
                added: typed_map(event.objattrs.get("added")),
                modified: typed_map(event.objattrs.get("modified")),
                removed: event
                    .objattrs
                    .get("removed")
                    .and_then(Value::as_object)
                    .map(|map| map.keys().cloned().collect())
                    .unwrap_or_default(),
            },
            "removed" => Attributes::None,
            _ => return None,
        };
        Some(Change {
            objtype,
            objpkey,
            attributes,
            initsync: event.evcategory == "initsync",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn special_strings_are_typed_and_round_trip() {
        let value = json!({"created": "HermesDatetime(2024-01-01T08:30:00Z)", "raw": "HermesBytes(AAEC)", "n": 3});
        let typed = HermesValue::from_json(&value);
        let HermesValue::Map(map) = &typed else {
            panic!("a map")
        };
        assert!(matches!(map["created"], HermesValue::Datetime(_)));
        assert_eq!(map["raw"], HermesValue::Bytes(vec![0, 1, 2]));
        assert_eq!(typed.to_json(), value);
    }

    #[test]
    fn composite_keys_and_diffs() {
        let event = HermesEvent::from_json(
            r#"{"evcategory":"base","eventtype":"modified","objtype":"SRVUsers","objpkey":[1,1001],
               "objattrs":{"added":{"a":1},"modified":{"b":"x"},"removed":{"c":null}},"step":0,
               "isPartiallyProcessed":false}"#,
        )
        .unwrap();
        let change = Change::from_event(&event).unwrap();
        assert_eq!(change.objpkey.to_string(), "[1,1001]");
        let mut state = BTreeMap::from([("c".to_owned(), HermesValue::Int(5))]);
        change.attributes.apply_to(&mut state);
        assert_eq!(state.len(), 2);
        assert_eq!(state["b"], HermesValue::String("x".into()));
    }
}
