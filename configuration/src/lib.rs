//! The TOML config: parsing, validation, and errors that name the file, the line and the key.
//!
//! The key names are a contract with the tools outside the project that write configs: rename
//! nothing. Every table rejects unknown keys. Relative paths are relative to the config file's
//! directory. Each section is checked on its own, so that one run reports every problem.
//!
//! Modules: `parse` reads a file into one [`Config`] per consumer (`raw`: the top level's shape
//! as written), `consumer` is the `[consumer]` table and `[commit]`, `handler` the
//! `[[handlers]]` entries, `reload` plans a reload from two configs, `source` points errors at
//! file, line and key.

#![deny(unreachable_pub)]

pub mod accounts;
mod consumer;
pub mod filter;
mod handler;
pub mod modes;
mod parse;
mod plugin;
mod raw;
pub mod reload;
mod settings;
mod source;

pub use consumer::{CommitPolicy, ConsumerConfig, FsyncMode, GapPolicy, HermesMode, StartPosition};
pub use handler::{
    displayable_url, EventFilter, ExecConfig, ExecCwd, FailurePolicy, HandlerConfig, HandlerKind,
    HandlerType, HttpConfig, PluginHandlerConfig, RetryPolicy, Secret,
};
pub use plugin::{HermesPlugin, PluginCommand, PluginSource};
pub use source::{key_label, ConfigError, ConfigErrors, Source};

use raw::RawControl;
use std::path::{Path, PathBuf};

/// The daemon's socket when `[control] path` does not say: `STATE_DIR/buslink.sock`.
pub fn default_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("buslink.sock")
}

/// One consumer's view of a config file: what the whole process shares ([`ProcessConfig`]),
/// the top-level defaults in effect for it, and its own table and handlers. `load_all` gives
/// one per consumer of the file.
#[derive(Clone, Debug)]
pub struct Config {
    pub source: Source,
    /// Where relative paths start.
    pub base_dir: PathBuf,
    /// What the whole process shares, the same in every consumer's view.
    pub process: ProcessConfig,
    pub plugin_dirs: Vec<PathBuf>,
    pub consumer: ConsumerConfig,
    pub handlers: Vec<HandlerConfig>,
    pub commit: CommitPolicy,
    /// Seconds between two progress lines in the log (0: none).
    pub stats_interval_s: u64,
    /// Load plugin libraries that other users could change (see `plugin::trust`).
    pub allow_insecure_plugins: bool,
    /// Where this consumer's table is in the file: `["consumer"]` or `["consumers", "N"]`.
    pub consumer_key: Vec<String>,
    /// The names of every consumer of the file, in order.
    pub consumer_names: Vec<String>,
}

/// What the whole process shares: where its state is, its metrics endpoint and its control
/// socket. A reload cannot change it (a restart of the service does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    /// `state_dir`: the offset caches, locks, error queues and dead-letter files.
    pub state_dir: PathBuf,
    /// `[metrics] listen`: where the metrics and health endpoints listen (off when absent).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `[control]`: the control socket.
    pub control: ControlSocketConfig,
}

/// `[control]`: the control socket's place and who may use it (hermes-client's `cli_socket`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSocketConfig {
    /// `path` (default `STATE_DIR/buslink.sock`).
    pub path: PathBuf,
    /// `owner` and `group`: names or numeric ids the socket file is given (default: the
    /// daemon's user and group).
    pub owner: Option<String>,
    pub group: Option<String>,
    /// `mode`, an octal string such as `"0660"` (default `0600`).
    pub mode: u32,
}

impl Default for ControlSocketConfig {
    fn default() -> Self {
        ControlSocketConfig {
            path: PathBuf::new(),
            owner: None,
            group: None,
            mode: 0o600,
        }
    }
}

impl ControlSocketConfig {
    fn from_raw(
        source: &Source,
        raw: RawControl,
        resolve: &dyn Fn(&Path) -> PathBuf,
        errors: &mut Vec<ConfigError>,
    ) -> ControlSocketConfig {
        let mode = match &raw.mode {
            None => 0o600,
            Some(text) => crate::modes::parse_mode(text.get_ref()).unwrap_or_else(|problem| {
                errors.push(source.error_at(
                    Some(text.span()),
                    Some("control.mode".into()),
                    problem,
                ));
                0o600
            }),
        };
        // Names are looked up now: a typo is a config error, not a failed start.
        for (key, name, lookup) in [
            (
                "control.owner",
                &raw.owner,
                crate::accounts::user_id as fn(&str) -> Result<u32, String>,
            ),
            ("control.group", &raw.group, crate::accounts::group_id),
        ] {
            if let Some(name) = name {
                if let Err(problem) = lookup(name) {
                    errors.push(source.error_at_key(&key.split('.').collect::<Vec<_>>(), problem));
                }
            }
        }
        ControlSocketConfig {
            path: raw.path.map(|p| resolve(&p)).unwrap_or_default(),
            owner: raw.owner,
            group: raw.group,
            mode,
        }
    }
}

/// What names the same file as `path` (its directory resolved where it exists; `.` and `..`
/// taken out otherwise).
pub fn same_file_key(path: &Path) -> PathBuf {
    let lexical = |path: &Path| {
        let mut out = PathBuf::new();
        for part in path.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    };
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => match std::fs::canonicalize(parent) {
            Ok(parent) => parent.join(name),
            Err(_) => lexical(path),
        },
        _ => lexical(path),
    }
}

impl Config {
    /// Points at a key of this consumer's `settings` table (for errors the plugin reports).
    pub fn settings_error(&self, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        let mut path: Vec<&str> = self.consumer_key.iter().map(String::as_str).collect();
        path.push("settings");
        if let Some(key) = key {
            path.extend(key.split('.'));
        }
        self.source.error_at_key(&path, message)
    }

    /// Points at the `name` key of this consumer's handler entry named `name`.
    pub fn handler_error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        self.handler_error_at(name, "name", message)
    }

    /// Points at key `key` of this consumer's handler entry named `name` (at the entry's
    /// `name` when it has no such key).
    pub fn handler_error_at(
        &self,
        name: &str,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let entries = toml::from_str::<toml::Table>(&self.source.text)
            .ok()
            .and_then(|table| {
                let mut value = toml::Value::Table(table);
                if self.consumer_key.first().map(String::as_str) == Some("consumers") {
                    for part in &self.consumer_key {
                        value = match part.parse::<usize>() {
                            Ok(index) => value.get(index)?.clone(),
                            Err(_) => value.get(part.as_str())?.clone(),
                        };
                    }
                }
                value.get("handlers")?.as_array().cloned()
            });
        let index = entries.and_then(|entries| {
            entries
                .iter()
                .position(|entry| entry.get("name").and_then(toml::Value::as_str) == Some(name))
        });
        let mut path: Vec<String> =
            if self.consumer_key.first().map(String::as_str) == Some("consumers") {
                self.consumer_key.clone()
            } else {
                Vec::new()
            };
        path.push("handlers".into());
        match index {
            Some(index) => {
                let has_key = entries_key(&self.source.text, &self.consumer_key, index, key);
                path.push(index.to_string());
                path.push(if has_key { key.into() } else { "name".into() });
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                self.source.error_at_key(&path, message)
            }
            None => {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                self.source.error_at_key(&path, message)
            }
        }
    }

    /// Points at a key of this consumer's table.
    pub fn consumer_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let mut path: Vec<&str> = self.consumer_key.iter().map(String::as_str).collect();
        path.push(key);
        self.source.error_at_key(&path, message)
    }

    /// `consumer` or `consumers[1]`: where this consumer is, for messages.
    pub fn consumer_label(&self) -> String {
        key_label(&self.consumer_key)
    }
}

/// Whether handler entry `index` of the consumer at `consumer_key` (`[]`: the single
/// `[consumer]`'s top-level `[[handlers]]`) has `key`.
fn entries_key(text: &str, consumer_key: &[String], index: usize, key: &str) -> bool {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return false;
    };
    let mut value = toml::Value::Table(table);
    if consumer_key.first().map(String::as_str) == Some("consumers") {
        for part in consumer_key {
            let next = match part.parse::<usize>() {
                Ok(i) => value.get(i).cloned(),
                Err(_) => value.get(part.as_str()).cloned(),
            };
            match next {
                Some(next) => value = next,
                None => return false,
            }
        }
    }
    value
        .get("handlers")
        .and_then(|h| h.get(index))
        .is_some_and(|entry| entry.get(key).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use buslink_plugin_api::Offset;

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

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(Path::new("/etc/buslink/x.toml"), text.to_owned())
    }

    #[test]
    fn good_config_resolves_paths_and_settings() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.process.state_dir, Path::new("/etc/buslink/var/demo"));
        assert_eq!(
            config.plugin_dirs,
            vec![PathBuf::from("/etc/buslink/plugins")]
        );
        assert_eq!(config.consumer.start, StartPosition::At(Offset::Int(5)));
        assert_eq!(config.consumer.settings_json, r#"{"uri":"bus.sqlite"}"#);
        assert_eq!(config.handlers.len(), 2);
        match &config.handlers[1].kind {
            HandlerKind::Jsonl { path, .. } => {
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
    fn secrets_never_show_in_debug_output() {
        let text = format!(
            "{GOOD}\n[[handlers]]\nname = \"push\"\ntype = \"http\"\nurl = \"https://u:pw-SECRET@example.org/\"\n[[handlers]]\nname = \"push2\"\ntype = \"http\"\nurl = \"https://example.org/\"\nheaders = {{ Authorization = \"Bearer tok-SECRET\" }}\n[[handlers]]\nname = \"run\"\ntype = \"exec\"\ncommand = [\"/bin/true\"]\nenv = {{ KEY = \"env-SECRET\" }}\n"
        );
        let config = parse(&text).unwrap();
        let debug = format!("{:?} {:#?}", config.handlers, config.handlers);
        assert!(!debug.contains("SECRET"), "{debug}");
        // plugin-api's `Secret`, the one type of a credential in buslink.
        assert!(debug.contains("Secret(***)"), "{debug}");
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A config using most keys, the mutations' starting point.
        const RICH: &str = r#"
state_dir = "state"
plugin_dirs = ["plugins"]
stats_interval_s = 10

[consumer]
name = "demo"
plugin = "sqlite"
class = "SqliteConsumer"
start = "beginning"
timeout_ms = 1000
batch_size = 100
on_gap = "warn"
[consumer.settings]
uri = "bus.sqlite"
poll_interval_ms = 50
[consumer.hermes]
enabled = true
use_first_initsync = false

[commit]
every_events = 100
every_ms = 1000
fsync = "background"

[[handlers]]
name = "archive"
type = "jsonl"
path = "out/events.jsonl"
match = { eventtype = ["added", "modified"], objtype = "SRV*" }
on_failure = "dead-letter"

[[handlers]]
name = "run"
type = "exec"
command = ["true"]
timeout_ms = 5000
retry = { attempts = 3, base_ms = 100 }

[[handlers]]
name = "push"
type = "http"
url = "http://127.0.0.1:9/hook"
headers = { X-Source = "buslink" }
"#;

        /// The path of every value in `value` (keys and array indices).
        fn leaves(value: &toml::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            match value {
                toml::Value::Table(table) => {
                    for (key, inner) in table {
                        path.push(key.clone());
                        out.push(path.clone());
                        leaves(inner, path, out);
                        path.pop();
                    }
                }
                toml::Value::Array(items) => {
                    for (index, inner) in items.iter().enumerate() {
                        path.push(index.to_string());
                        out.push(path.clone());
                        leaves(inner, path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
        }

        /// The container holding the last step of `path`, and that step.
        fn parent<'a>(
            root: &'a mut toml::Value,
            path: &'a [String],
        ) -> Option<(&'a mut toml::Value, &'a str)> {
            let (last, rest) = path.split_last()?;
            let mut at = root;
            for step in rest {
                at = match at {
                    toml::Value::Table(table) => table.get_mut(step)?,
                    toml::Value::Array(items) => items.get_mut(step.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            Some((at, last.as_str()))
        }

        fn value() -> impl Strategy<Value = toml::Value> {
            prop_oneof![
                Just(toml::Value::Float(f64::NAN)),
                Just(toml::Value::Float(f64::INFINITY)),
                Just(toml::Value::Float(-1.5)),
                Just(toml::Value::Integer(0)),
                Just(toml::Value::Integer(-1)),
                Just(toml::Value::Integer(i64::MAX)),
                Just(toml::Value::Boolean(true)),
                Just(toml::Value::Array(Vec::new())),
                Just(toml::Value::Table(toml::Table::new())),
                "[a-z./*]{0,12}".prop_map(toml::Value::String),
                Just(toml::Value::Array(vec![toml::Value::Integer(1)])),
            ]
        }

        #[test]
        fn the_starting_point_is_valid() {
            let parsed = Config::parse(Path::new("/nonexistent/buslink.toml"), RICH.to_owned());
            assert!(
                parsed.is_ok(),
                "{}",
                parsed.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }

        proptest! {
            /// A config changed anywhere (a value of another type or out of range, a key
            /// removed, an unknown key added) never makes the loader panic, and every problem
            /// it reports says where: a key or a line.
            #[test]
            fn config_mutations_never_panic_and_always_say_where(
                pick in any::<prop::sample::Index>(),
                kind in 0..3_u8,
                replacement in value(),
                unknown in "[a-z_]{1,10}",
            ) {
                let mut root: toml::Value = toml::from_str(RICH).unwrap();
                let mut paths = Vec::new();
                leaves(&root, &mut Vec::new(), &mut paths);
                let path = pick.get(&paths).clone();
                if let Some((container, step)) = parent(&mut root, &path) {
                    match (kind, container) {
                        (0, toml::Value::Table(table)) => {
                            table.insert(step.to_owned(), replacement);
                        }
                        (0, toml::Value::Array(items)) => {
                            if let Ok(index) = step.parse::<usize>() {
                                items[index] = replacement;
                            }
                        }
                        (1, toml::Value::Table(table)) => {
                            table.remove(step);
                        }
                        (_, toml::Value::Table(table)) => {
                            table.insert(unknown, replacement);
                        }
                        _ => {}
                    }
                }
                let text = toml::to_string(&root).unwrap();
                if let Err(errors) = Config::parse(Path::new("/nonexistent/buslink.toml"), text) {
                    prop_assert!(!errors.0.is_empty());
                    for error in &errors.0 {
                        prop_assert!(
                            error.key.is_some() || error.location.is_some(),
                            "{error} says neither a key nor a line"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_reload_restarts_only_the_consumers_whose_effective_config_changed() {
        let text = |top_commit: u64| {
            format!(
                "state_dir = \"s\"\n[commit]\nevery_events = {top_commit}\n\
                 [[consumers]]\nname = \"own\"\nplugin = \"p\"\nclass = \"C\"\n\
                 [consumers.commit]\nevery_events = 5\n\
                 [[consumers.handlers]]\nname = \"h\"\ntype = \"stdout\"\n\
                 [[consumers]]\nname = \"shared\"\nplugin = \"p\"\nclass = \"C\"\n\
                 [[consumers.handlers]]\nname = \"h\"\ntype = \"stdout\"\n"
            )
        };
        let parse = |text: String| {
            Config::parse_all(Path::new("/nonexistent/x.toml"), text).expect("valid")
        };
        let (before, after) = (parse(text(10)), parse(text(20)));
        use crate::reload::{consumer_plan, ConsumerPlan};
        assert_eq!(
            consumer_plan(&before[0], &after[0]),
            ConsumerPlan::Unchanged,
            "its own [consumers.commit] is what it uses"
        );
        assert_eq!(
            consumer_plan(&before[1], &after[1]),
            ConsumerPlan::Restart,
            "the top-level [commit] is the one it uses"
        );
    }
}
