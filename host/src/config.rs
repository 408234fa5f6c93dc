//! The TOML config: parsing, validation, and errors that name the file, the line and the key.
//!
//! The key names are a contract with the tools outside the project that write configs: rename
//! nothing. Every table rejects unknown keys. Relative paths are relative to the config file's
//! directory.

use buslink_plugin_api::Offset;
use serde::Deserialize;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

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
        self.error_at(span, Some(key_path.join(".")), message)
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

    fn key_span(&self, key_path: &[&str]) -> Option<Range<usize>> {
        let root = toml::de::DeTable::parse(&self.text).ok()?;
        let mut table = root.get_ref();
        let mut span = None;
        for part in key_path {
            let (key, value) = table
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == *part)?;
            span = Some(key.span());
            match value.get_ref() {
                toml::de::DeValue::Table(inner) => table = inner,
                _ => break,
            }
        }
        span
    }
}

/// A whole config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: Source,
    /// Where relative paths start.
    pub base_dir: PathBuf,
    pub state_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    pub consumer: ConsumerConfig,
    pub handlers: Vec<HandlerConfig>,
    pub commit: CommitPolicy,
}

/// The `[consumer]` table.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub name: String,
    pub plugin: String,
    pub class: String,
    pub start: StartPosition,
    pub timeout_ms: u64,
    pub batch_size: usize,
    pub queue_batches: usize,
    /// The plugin's settings, as JSON text.
    pub settings_json: String,
}

/// Where to start when there is no cached offset.
#[derive(Clone, Debug, PartialEq)]
pub enum StartPosition {
    Beginning,
    End,
    At(Offset),
}

/// When the offset cache is written (always also on stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitPolicy {
    /// Commit after this many handled events.
    pub every_events: u64,
    /// Commit when the oldest uncommitted event was handled this long ago.
    pub every_ms: u64,
}

/// One `[[handlers]]` entry.
#[derive(Clone, Debug)]
pub struct HandlerConfig {
    pub name: String,
    pub kind: HandlerKind,
    pub filter: EventFilter,
}

/// The handler types and their own settings.
#[derive(Clone, Debug)]
pub enum HandlerKind {
    Stdout,
    Jsonl { path: PathBuf },
}

/// A handler's `match`: glob lists per field; an empty list matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub category: Vec<String>,
    pub eventtype: Vec<String>,
    pub objtype: Vec<String>,
}

// ---- the raw file shape -------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Spanned<PathBuf>,
    #[serde(default)]
    plugin_dirs: Vec<PathBuf>,
    consumer: RawConsumer,
    #[serde(default)]
    handlers: Vec<Spanned<RawHandler>>,
    #[serde(default)]
    commit: RawCommit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsumer {
    name: Spanned<String>,
    plugin: Spanned<String>,
    class: Spanned<String>,
    #[serde(default)]
    start: Option<Spanned<toml::Value>>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_batch_size")]
    batch_size: Spanned<usize>,
    #[serde(default = "default_queue_batches")]
    queue_batches: Spanned<usize>,
    #[serde(default)]
    settings: toml::Table,
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_batch_size() -> Spanned<usize> {
    Spanned::new(0..0, 512)
}

fn default_queue_batches() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    #[serde(default = "default_every_events")]
    every_events: Spanned<u64>,
    #[serde(default = "default_every_ms")]
    every_ms: u64,
}

impl Default for RawCommit {
    fn default() -> Self {
        RawCommit {
            every_events: default_every_events(),
            every_ms: default_every_ms(),
        }
    }
}

fn default_every_events() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

fn default_every_ms() -> u64 {
    1000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandler {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default, rename = "match")]
    filter: Option<RawFilter>,
    #[serde(default)]
    path: Option<Spanned<PathBuf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    category: Patterns,
    #[serde(default)]
    eventtype: Patterns,
    #[serde(default)]
    objtype: Patterns,
}

/// One glob or a list of them.
#[derive(Default, Deserialize)]
#[serde(untagged)]
enum Patterns {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    fn into_vec(self) -> Vec<String> {
        match self {
            Patterns::None => Vec::new(),
            Patterns::One(one) => vec![one],
            Patterns::Many(many) => many,
        }
    }
}

/// Characters allowed in a consumer name (it names the offset cache file).
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.')
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            location: None,
            key: None,
            message: format!("cannot read config file: {e}"),
        })?;
        Self::parse(path, text)
    }

    /// Validates config text read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let source = Source {
            path: path.to_path_buf(),
            text,
        };
        let raw: RawConfig =
            toml::from_str(&source.text).map_err(|e| source.error_from_toml(&e))?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base_dir.join(p)
            }
        };

        if raw.state_dir.get_ref().as_os_str().is_empty() {
            return Err(source.error_at(
                Some(raw.state_dir.span()),
                Some("state_dir".into()),
                "must name a directory",
            ));
        }
        let state_dir = resolve(raw.state_dir.get_ref());
        let plugin_dirs = raw.plugin_dirs.iter().map(|d| resolve(d)).collect();

        let consumer = Self::consumer(&source, raw.consumer)?;
        let commit = CommitPolicy {
            every_events: *raw.commit.every_events.get_ref(),
            every_ms: raw.commit.every_ms,
        };
        if commit.every_events == 0 {
            return Err(source.error_at(
                Some(raw.commit.every_events.span()),
                Some("commit.every_events".into()),
                "must be at least 1",
            ));
        }

        let mut handlers = Vec::new();
        for (index, handler) in raw.handlers.into_iter().enumerate() {
            let handler = Self::handler(&source, index, handler, &resolve)?;
            if let Some(earlier) = handlers
                .iter()
                .position(|h: &HandlerConfig| h.name == handler.name)
            {
                return Err(source.error_at_key(
                    &["handlers"],
                    format!(
                        "handlers[{earlier}] and handlers[{index}] are both named '{}'",
                        handler.name
                    ),
                ));
            }
            handlers.push(handler);
        }
        if handlers.is_empty() {
            return Err(source.error_at(
                None,
                Some("handlers".into()),
                "no [[handlers]]: events would be consumed and dropped; add at least one handler",
            ));
        }

        Ok(Config {
            source,
            base_dir,
            state_dir,
            plugin_dirs,
            consumer,
            handlers,
            commit,
        })
    }

    fn consumer(source: &Source, raw: RawConsumer) -> Result<ConsumerConfig, ConfigError> {
        let at = |spanned_span: Range<usize>, key: &str, message: String| {
            source.error_at(Some(spanned_span), Some(format!("consumer.{key}")), message)
        };
        if !is_valid_name(raw.name.get_ref()) {
            return Err(at(
                raw.name.span(),
                "name",
                format!(
                    "'{}' is not a valid consumer name: use letters, digits, '-', '_' and '.' \
                     (it names the offset cache file)",
                    raw.name.get_ref()
                ),
            ));
        }
        for (key, value) in [("plugin", &raw.plugin), ("class", &raw.class)] {
            if value.get_ref().trim().is_empty() {
                return Err(at(value.span(), key, "must not be empty".into()));
            }
        }
        let start = match raw.start {
            None => StartPosition::Beginning,
            Some(value) => {
                let span = value.span();
                parse_start(value.into_inner()).map_err(|message| at(span, "start", message))?
            }
        };
        for (key, value) in [
            ("batch_size", &raw.batch_size),
            ("queue_batches", &raw.queue_batches),
        ] {
            if *value.get_ref() == 0 {
                return Err(at(value.span(), key, "must be at least 1".into()));
            }
        }
        let settings_json = serde_json::to_string(&raw.settings).map_err(|e| {
            source.error_at_key(
                &["consumer", "settings"],
                format!("cannot hand these settings to a plugin: {e}"),
            )
        })?;
        Ok(ConsumerConfig {
            name: raw.name.into_inner(),
            plugin: raw.plugin.into_inner(),
            class: raw.class.into_inner(),
            start,
            timeout_ms: raw.timeout_ms,
            batch_size: raw.batch_size.into_inner(),
            queue_batches: raw.queue_batches.into_inner(),
            settings_json,
        })
    }

    fn handler(
        source: &Source,
        index: usize,
        raw: Spanned<RawHandler>,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<HandlerConfig, ConfigError> {
        let handler_span = raw.span();
        let raw = raw.into_inner();
        let at = |span: Range<usize>, key: &str, message: String| {
            source.error_at(
                Some(span),
                Some(format!("handlers[{index}].{key}")),
                message,
            )
        };
        let name = raw.name.get_ref().clone();
        if name.trim().is_empty() {
            return Err(at(raw.name.span(), "name", "must not be empty".into()));
        }
        let kind = match raw.kind.get_ref().as_str() {
            "stdout" => {
                if let Some(path) = &raw.path {
                    return Err(at(
                        path.span(),
                        "path",
                        format!("handler '{name}' of type stdout takes no `path`"),
                    ));
                }
                HandlerKind::Stdout
            }
            "jsonl" => match &raw.path {
                Some(path) if !path.get_ref().as_os_str().is_empty() => HandlerKind::Jsonl {
                    path: resolve(path.get_ref()),
                },
                Some(path) => return Err(at(path.span(), "path", "must name a file".into())),
                None => {
                    return Err(at(
                        handler_span,
                        "path",
                        format!("handler '{name}' of type jsonl needs a `path`"),
                    ))
                }
            },
            other => {
                return Err(at(
                    raw.kind.span(),
                    "type",
                    format!("unknown handler type '{other}' (known: stdout, jsonl)"),
                ))
            }
        };
        let filter = match raw.filter {
            None => EventFilter::default(),
            Some(filter) => EventFilter {
                category: filter.category.into_vec(),
                eventtype: filter.eventtype.into_vec(),
                objtype: filter.objtype.into_vec(),
            },
        };
        Ok(HandlerConfig { name, kind, filter })
    }

    /// Points at a key of the `[consumer.settings]` table (for errors the plugin reports).
    pub fn settings_error(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        match key {
            Some(key) => {
                let mut path = vec!["consumer", "settings"];
                path.extend(key.split('.'));
                self.source.error_at_key(&path, message)
            }
            None => self.source.error_at_key(&["consumer", "settings"], message),
        }
    }

    /// Points at a key of the `[consumer]` table.
    pub fn consumer_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.source.error_at_key(&["consumer", key], message)
    }
}

fn parse_start(value: toml::Value) -> Result<StartPosition, String> {
    match value {
        toml::Value::String(text) if text == "beginning" => Ok(StartPosition::Beginning),
        toml::Value::String(text) if text == "end" => Ok(StartPosition::End),
        toml::Value::String(text) => Ok(StartPosition::At(Offset::String(text))),
        toml::Value::Integer(i) => Ok(StartPosition::At(Offset::Int(i))),
        toml::Value::Float(x) => Ok(StartPosition::At(Offset::Float(x))),
        toml::Value::Table(table) => {
            let json = serde_json::to_value(&table).map_err(|e| e.to_string())?;
            serde_json::from_value(json)
                .map(StartPosition::At)
                .map_err(|_| {
                    "an offset table has one key: int, float, string or bytes (base64), \
                 e.g. { string = \"end\" }"
                        .to_owned()
                })
        }
        other => Err(format!(
            "expected \"beginning\", \"end\" or an offset, found {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "var/demo"
plugin_dirs = ["plugins"]

[consumer]
name = "demo"
plugin = "sqlite"
class = "SqliteConsumer"
start = 5
[consumer.settings]
uri = "bus.sqlite"

[[handlers]]
name = "print"
type = "stdout"

[[handlers]]
name = "archive"
type = "jsonl"
path = "out/events.jsonl"
match = { eventtype = ["added", "modified"], objtype = "SRV*" }
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/buslink/x.toml"), text.to_owned())
    }

    #[test]
    fn good_config_resolves_paths_and_settings() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.state_dir, Path::new("/etc/buslink/var/demo"));
        assert_eq!(
            config.plugin_dirs,
            vec![PathBuf::from("/etc/buslink/plugins")]
        );
        assert_eq!(config.consumer.start, StartPosition::At(Offset::Int(5)));
        assert_eq!(config.consumer.settings_json, r#"{"uri":"bus.sqlite"}"#);
        assert_eq!(config.handlers.len(), 2);
        match &config.handlers[1].kind {
            HandlerKind::Jsonl { path } => {
                assert_eq!(path, Path::new("/etc/buslink/out/events.jsonl"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(config.handlers[1].filter.objtype, vec!["SRV*".to_owned()]);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = GOOD
            .replace("timeout_ms", "x")
            .replace("start = 5", "strat = 5");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.starts_with("/etc/buslink/x.toml:9:"), "{error}");
        assert!(error.contains("unknown field `strat`"), "{error}");
    }

    #[test]
    fn settings_key_is_located() {
        let config = parse(GOOD).unwrap();
        let error = config.settings_error(Some("uri"), "bad").to_string();
        assert_eq!(
            error,
            "/etc/buslink/x.toml:11:1: key `consumer.settings.uri`: bad"
        );
    }
}
