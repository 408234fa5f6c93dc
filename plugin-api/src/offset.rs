//! Offsets: where an event is on its bus.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The position of an event on its bus, as the bus defines it.
///
/// Buses differ: a sqlite bus counts rows (`Int`), a log may use byte positions, a broker may use
/// opaque tokens (`String`, `Bytes`). The host never does arithmetic on offsets: to resume after
/// an event it calls [`Consumer::seek_after`](crate::Consumer::seek_after) with that event's offset.
///
/// In the offset cache an offset is written as a one-key JSON object naming its type, e.g.
/// `{"int": 164}`, `{"string": "a/17"}` or `{"bytes": "AAEC"}` (base64).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Offset {
    /// An integer position (row id, sequence number).
    Int(i64),
    /// A floating point position (a time, for example).
    Float(f64),
    /// A textual position.
    String(String),
    /// An opaque binary position (base64 in JSON).
    Bytes(#[serde(with = "base64_bytes")] Vec<u8>),
}

impl Offset {
    /// A borrowed view of this offset.
    pub fn as_ref(&self) -> OffsetRef<'_> {
        match self {
            Offset::Int(i) => OffsetRef::Int(*i),
            Offset::Float(f) => OffsetRef::Float(*f),
            Offset::String(s) => OffsetRef::String(s),
            Offset::Bytes(b) => OffsetRef::Bytes(b),
        }
    }

    /// The integer inside, if this is an `Int` offset.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Offset::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The name of the offset's type: `int`, `float`, `string` or `bytes`.
    pub fn type_name(&self) -> &'static str {
        self.as_ref().type_name()
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl From<i64> for Offset {
    fn from(value: i64) -> Self {
        Offset::Int(value)
    }
}

impl From<&str> for Offset {
    fn from(value: &str) -> Self {
        Offset::String(value.to_owned())
    }
}

/// A borrowed [`Offset`], used where no copy is needed (events in a batch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OffsetRef<'a> {
    /// See [`Offset::Int`].
    Int(i64),
    /// See [`Offset::Float`].
    Float(f64),
    /// See [`Offset::String`].
    String(&'a str),
    /// See [`Offset::Bytes`].
    Bytes(&'a [u8]),
}

impl OffsetRef<'_> {
    /// An owned copy.
    pub fn to_owned(self) -> Offset {
        match self {
            OffsetRef::Int(i) => Offset::Int(i),
            OffsetRef::Float(f) => Offset::Float(f),
            OffsetRef::String(s) => Offset::String(s.to_owned()),
            OffsetRef::Bytes(b) => Offset::Bytes(b.to_vec()),
        }
    }

    /// The name of the offset's type: `int`, `float`, `string` or `bytes`.
    pub fn type_name(self) -> &'static str {
        match self {
            OffsetRef::Int(_) => "int",
            OffsetRef::Float(_) => "float",
            OffsetRef::String(_) => "string",
            OffsetRef::Bytes(_) => "bytes",
        }
    }
}

impl From<i64> for OffsetRef<'_> {
    fn from(value: i64) -> Self {
        OffsetRef::Int(value)
    }
}

impl<'a> From<&'a str> for OffsetRef<'a> {
    fn from(value: &'a str) -> Self {
        OffsetRef::String(value)
    }
}

impl<'a> From<&'a Offset> for OffsetRef<'a> {
    fn from(value: &'a Offset) -> Self {
        value.as_ref()
    }
}

impl fmt::Display for OffsetRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffsetRef::Int(i) => write!(f, "{i}"),
            OffsetRef::Float(x) => write!(f, "{x}"),
            OffsetRef::String(s) => write!(f, "{s:?}"),
            OffsetRef::Bytes(b) => write!(
                f,
                "bytes:{}",
                base64::engine::general_purpose::STANDARD.encode(b)
            ),
        }
    }
}

/// Serialises an [`OffsetRef`] as a plain JSON value (number or string; bytes as
/// `{"bytes": base64}`), the form used in event lines.
impl Serialize for OffsetRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OffsetRef::Int(i) => serializer.serialize_i64(*i),
            OffsetRef::Float(x) => serializer.serialize_f64(*x),
            OffsetRef::String(s) => serializer.serialize_str(s),
            OffsetRef::Bytes(b) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry(
                    "bytes",
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
                map.end()
            }
        }
    }
}

mod base64_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_through_json_readably() {
        let cases = [
            (Offset::Int(164), r#"{"int":164}"#),
            (Offset::Float(1.5), r#"{"float":1.5}"#),
            (Offset::String("a/17".into()), r#"{"string":"a/17"}"#),
            (Offset::Bytes(vec![0, 1, 2]), r#"{"bytes":"AAEC"}"#),
        ];
        for (offset, json) in cases {
            assert_eq!(serde_json::to_string(&offset).unwrap(), json);
            assert_eq!(serde_json::from_str::<Offset>(json).unwrap(), offset);
        }
    }

    #[test]
    fn event_line_form_is_plain() {
        assert_eq!(serde_json::to_string(&OffsetRef::Int(3)).unwrap(), "3");
        assert_eq!(
            serde_json::to_string(&OffsetRef::String("x")).unwrap(),
            "\"x\""
        );
        assert_eq!(
            serde_json::to_string(&OffsetRef::Bytes(&[0, 1, 2])).unwrap(),
            r#"{"bytes":"AAEC"}"#
        );
    }
}
