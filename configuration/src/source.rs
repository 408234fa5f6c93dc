//! Where a config problem is: spans and key paths turned into `file:line:column` and `key`.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// A key path as people read it: `consumers[1].settings.uri` for
/// `["consumers", "1", "settings", "uri"]`.
pub fn key_label<S: AsRef<str>>(key_path: &[S]) -> String {
    let mut label = String::new();
    for part in key_path {
        let part = part.as_ref();
        if part.parse::<usize>().is_ok() {
            label.push_str(&format!("[{part}]"));
        } else {
            if !label.is_empty() {
                label.push('.');
            }
            label.push_str(part);
        }
    }
    label
}

/// A problem in a config file, located as precisely as possible.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    /// The key at fault, when known (`consumer.settings.uri`, `handlers[1].path`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// The same place, another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The config file's text, kept to turn byte offsets and key paths into line numbers.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// 1-based line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        (line, column)
    }

    /// An error at a span of the file.
    pub fn error_at(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            location: span.map(|span| self.line_column(span.start)),
            key,
            message: message.into(),
        }
    }

    /// An error about a key given by its path from the root (`["consumer", "settings", "uri"]`);
    /// points at the key's line when the key is in the file, else at its closest parent.
    pub fn error_at_key(&self, key_path: &[&str], message: impl Into<String>) -> ConfigError {
        let span = self.key_span(key_path);
        self.error_at(span, Some(key_label(key_path)), message)
    }

    /// An error reported by the TOML deserializer: located by its span, and named by the key
    /// whose name or value the span falls in.
    pub fn error_from_toml(&self, error: &toml::de::Error) -> ConfigError {
        let span = error.span();
        let key = span.as_ref().and_then(|span| self.key_at(span.start));
        self.error_at(span, key, error.message().trim_end().to_owned())
    }

    /// The dotted path (`handlers[1].match`) of the innermost key whose name or value contains
    /// the byte `offset`.
    fn key_at(&self, offset: usize) -> Option<String> {
        use toml::de::{DeTable, DeValue};
        // Table values declared with a `[header]` do not span their contents, so search every
        // table and array, and compare spans only at keys and leaf values.
        fn walk(table: &DeTable<'_>, offset: usize, path: &str) -> Option<String> {
            table.iter().find_map(|(key, value)| {
                let here = if path.is_empty() {
                    key.get_ref().to_string()
                } else {
                    format!("{path}.{}", key.get_ref())
                };
                if key.span().contains(&offset) {
                    return Some(here);
                }
                descend(value.get_ref(), offset, &here)
                    .or_else(|| value.span().contains(&offset).then_some(here))
            })
        }
        fn descend(value: &DeValue<'_>, offset: usize, path: &str) -> Option<String> {
            match value {
                DeValue::Table(inner) => walk(inner, offset, path),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                    let here = format!("{path}[{index}]");
                    descend(item.get_ref(), offset, &here)
                        .or_else(|| item.span().contains(&offset).then_some(here))
                }),
                _ => None,
            }
        }
        let root = DeTable::parse(&self.text).ok()?;
        walk(root.get_ref(), offset, "")
    }

    /// The span of a key given by its path; array elements are addressed by index
    /// (`["handlers", "1", "path"]`).
    fn key_span(&self, key_path: &[&str]) -> Option<Range<usize>> {
        use toml::de::DeValue;
        let root = toml::de::DeTable::parse(&self.text).ok()?;
        let mut value: Option<&DeValue<'_>> = None;
        let mut table = Some(root.get_ref());
        let mut span = None;
        for part in key_path {
            if let Some(DeValue::Array(items)) = value {
                let item = items.get(part.parse::<usize>().ok()?)?;
                span = Some(item.span());
                value = Some(item.get_ref());
                table = match item.get_ref() {
                    DeValue::Table(inner) => Some(inner),
                    _ => None,
                };
                continue;
            }
            let Some((key, found)) = table?
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == *part)
            else {
                break;
            };
            span = Some(key.span());
            value = Some(found.get_ref());
            table = match found.get_ref() {
                DeValue::Table(inner) => Some(inner),
                _ => None,
            };
        }
        span
    }
}

/// Every problem found in a config file.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}
