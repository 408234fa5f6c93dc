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
