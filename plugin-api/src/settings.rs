//! Turning the settings the host hands over (JSON text) into a class's typed settings.

use crate::error::{PluginError, PluginResult};
use serde::de::DeserializeOwned;

/// Deserialises `json` into `T`; the error names, as its key, the settings key at fault
/// (`queues.ALERTS.seq` for nested ones), including a misspelt key that `T` rejects with
/// `#[serde(deny_unknown_fields)]`.
pub fn from_json<T: DeserializeOwned>(json: &str) -> PluginResult<T> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // serde_json appends " at line L column C" of the JSON text the host built, which means
        // nothing to a user reading the TOML file.
        let message = inner.to_string();
        let message = match message.rfind(" at line ") {
            Some(cut) => message[..cut].to_owned(),
            None => message,
        };
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next());
        // The path already ends with an unknown field's name; at the top level it may be empty.
        let key = match (unknown, path.as_str()) {
            (Some(field), "." | "") => field.to_owned(),
            (_, path) => path.to_owned(),
        };
        let error = PluginError::config(format!("invalid settings: {message}"));
        if key.is_empty() || key == "." {
            error
        } else {
            error.with_key(key)
        }
    })
}

/// For `#[serde(deserialize_with = "buslink_plugin_api::table")]` on a field whose type is a
/// struct (a TOML table): serde would also take an array there (`inner = []` when every key
/// of the struct has a default), which nobody means; this takes a table only. Errors inside
/// keep their key path (`inner.size`).
pub fn table<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    deserializer.deserialize_map(TableVisitor(std::marker::PhantomData))
}

/// [`table`] for an optional table (`Option<T>` with `#[serde(default, deserialize_with =
/// "buslink_plugin_api::optional_table")]`): absent is `None`, a table is `Some`, anything
/// else (an array) an error naming the key.
pub fn optional_table<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    table(deserializer).map(Some)
}

/// [`table`] for a map of tables (`[consumer.settings.queues.NAME]`): every entry must be a
/// table.
pub fn tables<'de, D, T>(deserializer: D) -> Result<std::collections::BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Entry<T>(T);
    impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Entry<T> {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            table(deserializer).map(Entry)
        }
    }
    let entries: std::collections::BTreeMap<String, Entry<T>> =
        serde::Deserialize::deserialize(deserializer)?;
    Ok(entries
        .into_iter()
        .map(|(name, entry)| (name, entry.0))
        .collect())
}

struct TableVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for TableVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Settings {
        uri: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        size: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Defaults {
        #[serde(default)]
        size: u32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct WithTables {
        #[serde(default, deserialize_with = "crate::table")]
        one: Defaults,
        #[serde(default, deserialize_with = "crate::tables")]
        many: std::collections::BTreeMap<String, Defaults>,
    }

    #[test]
    fn an_array_where_a_table_is_meant_is_refused_and_nested_keys_still_named() {
        let error = from_json::<WithTables>(r#"{"many":{"Q":[]}}"#).unwrap_err();
        assert_eq!(error.key(), Some("many.Q"), "{error}");
        assert!(error.message().contains("expected a table"), "{error}");
        let error = from_json::<WithTables>(r#"{"one":[]}"#).unwrap_err();
        assert_eq!(error.key(), Some("one"), "{error}");
        let error = from_json::<WithTables>(r#"{"many":{"Q":{"size":"big"}}}"#).unwrap_err();
        assert_eq!(error.key(), Some("many.Q.size"), "{error}");
        let fine = from_json::<WithTables>(r#"{"one":{},"many":{"Q":{"size":3}}}"#).unwrap();
        assert_eq!(fine.many["Q"].size, 3);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = from_json::<Settings>(r#"{"uri":"x","urii":"y"}"#).unwrap_err();
        assert_eq!(error.key(), Some("urii"));
        assert!(error.message().contains("unknown field `urii`"), "{error}");
        let nested = from_json::<Settings>(r#"{"uri":"x","inner":{"sise":1}}"#).unwrap_err();
        assert_eq!(nested.key(), Some("inner.sise"));
    }

    #[test]
    fn wrong_type_and_missing_key_are_reported() {
        let error = from_json::<Settings>(r#"{"uri":"x","inner":{"size":"big"}}"#).unwrap_err();
        assert_eq!(error.key(), Some("inner.size"));
        let missing = from_json::<Settings>(r#"{}"#).unwrap_err();
        assert!(
            missing.message().contains("missing field `uri`"),
            "{missing}"
        );
    }
}
