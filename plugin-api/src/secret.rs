//! Passwords in plugin settings: a [`Secret`] is never shown by `Debug` nor quoted in an
//! error, and [`PasswordSettings`] gives every plugin the same three ways to supply one
//! (`password`, `password_file`, `password_env`).

use crate::consumer::Context;
use crate::error::{PluginError, PluginResult};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A password: never shown by `Debug`, never quoted in an error.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The password itself, only for the protocol that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

const NOT_A_STRING: &str = "the password must be a string (value not shown)";

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'v> serde::de::Visitor<'v> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            // Every other type: an error that does not quote the value.
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(serde::de::Error::custom(NOT_A_STRING))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, _: A) -> Result<Secret, A::Error> {
                Err(serde::de::Error::custom(NOT_A_STRING))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The three ways to give a password: the password itself, the first line of a file
/// (relative to the config file), or an environment variable. A settings struct keeps the
/// three keys as its own fields (`deny_unknown_fields` rules out serde's `flatten`) and
/// builds this to check and read them. At most one may be set ([`PasswordSettings::count`]).
#[derive(Clone, Debug, Default)]
pub struct PasswordSettings {
    /// The password (better kept out of the config: use one of the others).
    pub password: Option<Secret>,
    /// A file whose first line is the password.
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
}

impl PasswordSettings {
    /// How many of the three are set.
    pub fn count(&self) -> usize {
        [
            self.password.is_some(),
            self.password_file.is_some(),
            self.password_env.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
    }

    /// The password, read from where the settings say; `None` when none is set. Errors name
    /// the key (`prefix` + `password_file`, ...) and the file or variable, never the password.
    pub fn read(&self, context: &Context, prefix: &str) -> PluginResult<Option<Secret>> {
        let bad = |key: &str, message: String| {
            PluginError::config(message).with_key(format!("{prefix}{key}"))
        };
        if let Some(password) = &self.password {
            return Ok(Some(password.clone()));
        }
        if let Some(file) = &self.password_file {
            let path = context.resolve_path(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(
                    "password_file",
                    format!("cannot read password_file {}: {e}", path.display()),
                )
            })?;
            let first = text.lines().next().unwrap_or("").to_owned();
            if first.is_empty() {
                return Err(bad(
                    "password_file",
                    format!("password_file {} is empty", path.display()),
                ));
            }
            return Ok(Some(Secret::new(first)));
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
                _ => Err(bad(
                    "password_env",
                    format!("environment variable {var} (password_env) is not set or empty"),
                )),
            };
        }
        Ok(None)
    }
}
