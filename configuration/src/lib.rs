//! The TOML config: parsing, validation, and errors that name the file, the line and the key.
//!
//! The key names are a contract with the tools outside the project that write configs: rename
//! nothing. Every table rejects unknown keys. Relative paths are relative to the config file's
//! directory. Each section is checked on its own, so that one run reports every problem.

#![deny(unreachable_pub)]

pub mod accounts;
pub mod filter;
mod handler;
pub mod modes;
pub mod reload;
mod source;

pub use handler::{
    EventFilter, ExecConfig, FailurePolicy, HandlerConfig, HandlerKind, HandlerType, HttpConfig,
    PluginHandlerConfig, RetryPolicy, Secret,
};
pub use source::{key_label, ConfigError, ConfigErrors, Source};

use buslink_plugin_api::Offset;
use handler::{HandlersPlace, LenientHandler};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// When a commit reaches the disk (`[commit] fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    /// Each commit is written at once (it survives the daemon's death) and made durable against
    /// a power loss by a background `fdatasync`, a few milliseconds later; commits that come
    /// meanwhile share the next one (group commit). A clean stop waits for it.
    #[default]
    Background,
    /// Each commit waits for its own `fdatasync` before the next event is handled.
    Each,
}

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

/// An error for every `jsonl` file that a second handler (of any consumer) also writes: an
/// exactly-once file has one writer, whose committed length is the truth about it.
fn shared_outputs(configs: &[Config]) -> Vec<ConfigError> {
    let mut seen: Vec<(PathBuf, String, String)> = Vec::new();
    let mut errors = Vec::new();
    for config in configs {
        for handler in &config.handlers {
            let HandlerKind::Jsonl { path, .. } = &handler.kind else {
                continue;
            };
            let key = same_file_key(path);
            match seen.iter().find(|(known, ..)| *known == key) {
                Some((_, consumer, other)) => errors.push(config.handler_error(
                    &handler.name,
                    format!(
                        "handler '{}' writes {}, which handler '{other}' of consumer \
                         '{consumer}' writes too: an exactly-once file has one writer (its \
                         committed length says what it holds)",
                        handler.name,
                        path.display()
                    ),
                )),
                None => seen.push((key, config.consumer.name.clone(), handler.name.clone())),
            }
        }
    }
    errors
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

/// The `[consumer]` table.
#[derive(Clone, Debug, PartialEq)]
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
    /// `[consumer.hermes]`: hermes-client semantics (initsync bootstrap, category filtering).
    pub hermes: Option<HermesMode>,
    /// What a gap (events gone from the bus before they were read) does.
    pub on_gap: GapPolicy,
    /// `stall_after_s` (default 60): events waiting and none handled for this long is the
    /// `stalled` state.
    pub stall_after_s: u64,
}

/// `[consumer] on_gap`: what happens when the plugin reports a **gap**, events the consumer
/// never saw that are gone from the bus. Default: `stop` in Hermes mode (a gap breaks a
/// replica), `warn` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GapPolicy {
    /// The run stops before the first event after the gap (exit 1), naming the range and
    /// count; a restart stops there again until an operator moves the offset or says `warn`.
    Stop,
    /// A warning with the range and count, counted in the progress line; the run goes on.
    Warn,
}

/// `[consumer.hermes]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HermesMode {
    /// Whether Hermes mode is on.
    #[serde(default)]
    pub enabled: bool,
    /// Replay the first complete initsync sequence of the bus instead of the latest.
    #[serde(default)]
    pub use_first_initsync: bool,
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
    /// When a commit is made durable.
    pub fsync: FsyncMode,
}

// ---- the raw file shape, one section at a time ----------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTop {
    state_dir: Spanned<PathBuf>,
    #[serde(default)]
    plugin_dirs: Vec<PathBuf>,
    #[serde(default = "default_stats_interval_s")]
    stats_interval_s: u64,
    #[serde(default)]
    allow_insecure_plugins: bool,
    // Checked by their own sections.
    #[allow(dead_code)]
    #[serde(default)]
    consumer: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    consumers: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    control: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    handlers: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    commit: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    metrics: Option<IgnoredAny>,
}

/// The top level's directories alone, when the rest of it is invalid.
#[derive(Deserialize)]
struct RawTopDirs {
    state_dir: Spanned<PathBuf>,
    #[serde(default)]
    plugin_dirs: Vec<PathBuf>,
}

fn default_stats_interval_s() -> u64 {
    60
}

#[derive(Deserialize)]
struct ConsumerSection {
    #[serde(default)]
    consumer: Option<RawConsumer>,
}

#[derive(Deserialize)]
struct ConsumersSection {
    #[serde(default)]
    consumers: Option<Vec<Spanned<RawConsumer>>>,
}

#[derive(Deserialize)]
struct HandlersSection {
    #[serde(default)]
    handlers: Option<Vec<Spanned<LenientHandler>>>,
}

#[derive(Deserialize)]
struct ControlSection {
    #[serde(default)]
    control: Option<RawControl>,
}

/// `[control]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    #[serde(default)]
    path: Option<PathBuf>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct MetricsSection {
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

/// `[metrics]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// `HOST:PORT` (`127.0.0.1:9464`; port 0: any free port, logged).
    listen: Spanned<String>,
}

#[derive(Deserialize)]
struct CommitSection {
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
    #[serde(default)]
    hermes: Option<HermesMode>,
    #[serde(default)]
    on_gap: Option<GapPolicy>,
    #[serde(default = "default_stall_after_s")]
    stall_after_s: u64,
    /// `[[consumers.handlers]]` (only in `[[consumers]]` entries).
    #[serde(default)]
    handlers: Option<Vec<Spanned<LenientHandler>>>,
    /// `[consumers.commit]` (only in `[[consumers]]` entries; replaces the top-level one).
    #[serde(default)]
    commit: Option<RawCommit>,
}

fn default_timeout_ms() -> u64 {
    1000
}

fn default_stall_after_s() -> u64 {
    60
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
    #[serde(default)]
    fsync: FsyncMode,
}

impl Default for RawCommit {
    fn default() -> Self {
        RawCommit {
            every_events: default_every_events(),
            every_ms: default_every_ms(),
            fsync: FsyncMode::default(),
        }
    }
}

fn default_every_events() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

fn default_every_ms() -> u64 {
    1000
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
    /// Reads and validates a config file with one consumer (`[consumer]`, or `[[consumers]]`
    /// with one entry); with several, the error names them and asks for `--consumer`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_consumer(path, None)
    }

    /// Reads and validates a config file, and picks consumer `name` (`None`: the only one).
    pub fn load_consumer(path: &Path, name: Option<&str>) -> Result<Config, ConfigErrors> {
        Self::pick(Self::load_all(path)?, name)
    }

    /// Reads and validates a config file: one [`Config`] per consumer, in file order.
    pub fn load_all(path: &Path) -> Result<Vec<Config>, ConfigErrors> {
        Self::parse_all(path, read_config(path)?)
    }

    /// Validates config text read from `path` (one consumer, as [`load`](Self::load)).
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigErrors> {
        Self::pick(Self::parse_all(path, text)?, None)
    }

    /// Validates config text read from `path`, reporting every problem found.
    pub fn parse_all(path: &Path, text: String) -> Result<Vec<Config>, ConfigErrors> {
        match Self::parse_lenient(path, text)? {
            (configs, errors) if errors.is_empty() => Ok(configs),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }

    /// Consumer `name` of `configs` (`None`: the only one).
    pub fn pick(mut configs: Vec<Config>, name: Option<&str>) -> Result<Config, ConfigErrors> {
        let names = || {
            configs
                .iter()
                .map(|c| c.consumer.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(first) = configs.first() else {
            return Err(ConfigErrors(Vec::new()));
        };
        let source = first.source.clone();
        match name {
            None if configs.len() == 1 => Ok(configs.remove(0)),
            None => Err(source
                .error_at_key(
                    &["consumers"],
                    format!(
                        "this config has {} consumers ({}): name one with --consumer NAME",
                        configs.len(),
                        names()
                    ),
                )
                .into()),
            Some(name) => match configs.iter().position(|c| c.consumer.name == name) {
                Some(index) => Ok(configs.remove(index)),
                None => Err(source
                    .error_at(
                        None,
                        None,
                        format!("no consumer named '{name}' (the config has: {})", names()),
                    )
                    .into()),
            },
        }
    }

    /// Reads and validates a config like [`load_all`](Self::load_all), but hands back the
    /// consumers as far as they could be built (invalid values replaced by their defaults,
    /// invalid handlers left out) together with every problem found, so that `check` can go
    /// on to the plugin's settings and the handlers in the same run. `Err` only when nothing
    /// could be built.
    pub fn load_lenient(path: &Path) -> Result<(Vec<Config>, Vec<ConfigError>), ConfigErrors> {
        Self::parse_lenient(path, read_config(path)?)
    }

    fn parse_lenient(
        path: &Path,
        text: String,
    ) -> Result<(Vec<Config>, Vec<ConfigError>), ConfigErrors> {
        let source = Source {
            path: path.to_path_buf(),
            text,
        };
        // Syntax first: nothing else can be checked in a file that is not TOML.
        let table =
            toml::from_str::<toml::Table>(&source.text).map_err(|e| source.error_from_toml(&e))?;
        let mut errors = Vec::new();
        // serde takes an empty array for a table whose keys all have defaults (`commit = []`):
        // a table is required where one is meant.
        let mut tables: Vec<Vec<String>> = [
            &["consumer"][..],
            &["consumer", "settings"],
            &["consumer", "hermes"],
            &["commit"],
            &["metrics"],
            &["control"],
        ]
        .iter()
        .map(|path| path.iter().map(|part| (*part).to_owned()).collect())
        .collect();
        if let Some(entries) = table.get("consumers").and_then(toml::Value::as_array) {
            for index in 0..entries.len() {
                for inner in [&[][..], &["settings"], &["hermes"], &["commit"]] {
                    let mut path = vec!["consumers".to_owned(), index.to_string()];
                    path.extend(inner.iter().map(|part| (*part).to_owned()));
                    tables.push(path);
                }
            }
        }
        for path in &tables {
            let mut value = table.get(&path[0]);
            for key in &path[1..] {
                value = value.and_then(|v| match key.parse::<usize>() {
                    Ok(index) => v.get(index),
                    Err(_) => v.get(key.as_str()),
                });
            }
            if let Some(value) = value.filter(|v| !v.is_table()) {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                errors.push(
                    source
                        .error_at_key(&path, format!("must be a table, not {}", value.type_str())),
                );
            }
        }
        if let Some(value) = table.get("consumers").filter(|v| !v.is_array()) {
            errors.push(source.error_at_key(
                &["consumers"],
                format!(
                    "must be an array of tables ([[consumers]]), not {}",
                    value.type_str()
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let top: Option<RawTop> = section(&source, &mut errors).or_else(|| {
            // The top level's problem is reported; go on with what it says of the directories
            // (the rest of the file is still checked).
            toml::from_str::<RawTopDirs>(&source.text)
                .ok()
                .map(|dirs| RawTop {
                    state_dir: dirs.state_dir,
                    plugin_dirs: dirs.plugin_dirs,
                    stats_interval_s: default_stats_interval_s(),
                    allow_insecure_plugins: false,
                    consumer: None,
                    consumers: None,
                    handlers: None,
                    commit: None,
                    metrics: None,
                    control: None,
                })
        });
        let consumer: Option<ConsumerSection> = section(&source, &mut errors);
        let consumers: Option<ConsumersSection> = section(&source, &mut errors);
        let handlers: Option<HandlersSection> = section(&source, &mut errors);
        let commit: Option<CommitSection> = section(&source, &mut errors);
        let metrics: Option<MetricsSection> = section(&source, &mut errors);
        let control: Option<ControlSection> = section(&source, &mut errors);
        let metrics_listen =
            metrics.and_then(|section| section.metrics).and_then(|raw| {
                match raw.listen.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(address) => Some(address),
                    Err(_) => {
                        errors.push(source.error_at(
                            Some(raw.listen.span()),
                            Some("metrics.listen".into()),
                            format!(
                                "{:?} is not an IP address and port (e.g. \"127.0.0.1:9464\")",
                                raw.listen.get_ref()
                            ),
                        ));
                        None
                    }
                }
            });

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
        let control = control.map(|section| {
            section
                .control
                .map(|raw| ControlSocketConfig::from_raw(&source, raw, &resolve, &mut errors))
                .unwrap_or_default()
        });

        if let Some(top) = &top {
            if top.state_dir.get_ref().as_os_str().is_empty() {
                errors.push(source.error_at(
                    Some(top.state_dir.span()),
                    Some("state_dir".into()),
                    "must name a directory",
                ));
            }
        }
        let commit = commit.map(|section| Self::commit(&source, &[], section.commit, &mut errors));
        let allow = top.as_ref().is_some_and(|top| top.allow_insecure_plugins);
        let handlers_of = |place: &HandlersPlace,
                           entries: Vec<Spanned<LenientHandler>>,
                           errors: &mut Vec<ConfigError>| {
            if entries.is_empty() {
                errors.push(source.error_at(
                    None,
                    Some(if place.base.is_empty() {
                        "handlers".to_owned()
                    } else {
                        format!("consumers[{}].handlers", place.base[1])
                    }),
                    if place.base.is_empty() {
                        "no [[handlers]]: events would be consumed and dropped; add at least one \
                         handler"
                    } else {
                        "no [[consumers.handlers]]: events would be consumed and dropped; add at \
                         least one handler to this consumer"
                    },
                ));
            }
            let mut handlers =
                handler::validate_handlers(&source, place, entries, &resolve, errors);
            for handler in &mut handlers {
                if let HandlerKind::Plugin(plugin) = &mut handler.kind {
                    plugin.allow_insecure = allow;
                }
            }
            handlers
        };

        // (consumer, handlers, commit, where the consumer's table is) per consumer.
        let mut built: Vec<(
            ConsumerConfig,
            Vec<HandlerConfig>,
            CommitPolicy,
            Vec<String>,
        )> = Vec::new();
        let single = consumer.and_then(|section| section.consumer);
        let several = consumers.and_then(|section| section.consumers);
        let top_handlers = handlers.map(|section| section.handlers);
        // The shape is what the file says, even where a section is broken (its problem is
        // already reported): a broken [consumer] still gets its [[handlers]] checked.
        let shape = (
            table.contains_key("consumer"),
            table.contains_key("consumers"),
        );
        match shape {
            (true, true) => errors.push(source.error_at_key(
                &["consumers"],
                "a config has either one [consumer] (with [[handlers]]) or [[consumers]] \
                 entries (each with its own [[consumers.handlers]]), not both",
            )),
            (false, false) => errors.push(source.error_at_key(
                &["consumer"],
                "no [consumer]: name the bus to consume (a [consumer] table with name, plugin \
                 and class, or several [[consumers]])",
            )),
            (true, false) => {
                let key = vec!["consumer".to_owned()];
                for misplaced in ["handlers", "commit"] {
                    if table
                        .get("consumer")
                        .and_then(|c| c.get(misplaced))
                        .is_some()
                    {
                        errors.push(source.error_at_key(
                            &["consumer", misplaced],
                            format!(
                                "with a single [consumer], {misplaced} are top-level \
                                 ([[handlers]], [commit]); consumer.{misplaced} belongs to \
                                 [[consumers]] entries"
                            ),
                        ));
                    }
                }
                let consumer = single.and_then(|raw| {
                    let (consumer, problems) = Self::consumer(&source, &key, raw);
                    errors.extend(problems);
                    consumer
                });
                let handlers = top_handlers.map(|entries| {
                    handlers_of(
                        &HandlersPlace::default(),
                        entries.unwrap_or_default(),
                        &mut errors,
                    )
                });
                if let (Some(consumer), Some(handlers), Some(commit)) = (consumer, handlers, commit)
                {
                    built.push((consumer, handlers, commit, key));
                }
            }
            (false, true) => {
                let entries = several.unwrap_or_default();
                if top_handlers.as_ref().is_some_and(Option::is_some) {
                    errors.push(source.error_at_key(
                        &["handlers"],
                        "[[handlers]] go with a single [consumer]; with [[consumers]], give each \
                         consumer its own [[consumers.handlers]]",
                    ));
                }
                if entries.is_empty() && errors.is_empty() {
                    errors
                        .push(source.error_at_key(&["consumers"], "no consumer in [[consumers]]"));
                }
                for (index, entry) in entries.into_iter().enumerate() {
                    let key = vec!["consumers".to_owned(), index.to_string()];
                    let mut raw = entry.into_inner();
                    let own_handlers = raw.handlers.take().unwrap_or_default();
                    let own_commit = raw.commit.take();
                    let (consumer, problems) = Self::consumer(&source, &key, raw);
                    errors.extend(problems);
                    let place = HandlersPlace { base: key.clone() };
                    let handlers = handlers_of(&place, own_handlers, &mut errors);
                    let commit = match own_commit {
                        Some(raw) => Some(Self::commit(&source, &key, raw, &mut errors)),
                        None => commit,
                    };
                    if let Some(consumer) = consumer {
                        if let Some((_, _, _, earlier)) =
                            built.iter().find(|(c, ..)| c.name == consumer.name)
                        {
                            errors.push(source.error_at_key(
                                &["consumers", &index.to_string(), "name"],
                                format!(
                                    "consumers[{}] and consumers[{index}] are both named '{}' \
                                     (the name keys the offset cache and the lock)",
                                    earlier[1], consumer.name
                                ),
                            ));
                        }
                        if let Some(commit) = commit {
                            built.push((consumer, handlers, commit, key));
                        }
                    }
                }
            }
        }

        let Some(top) = top else {
            return Err(ConfigErrors(errors));
        };
        let (Some(control), Some(_)) = (control, commit) else {
            return Err(ConfigErrors(errors));
        };
        if built.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let state_dir = resolve(top.state_dir.get_ref());
        let control = ControlSocketConfig {
            path: if control.path.as_os_str().is_empty() {
                default_socket_path(&state_dir)
            } else {
                control.path.clone()
            },
            ..control
        };
        // A Unix socket's path has room for 107 bytes.
        if control.path.as_os_str().len() > 107 {
            let key: &[&str] = if table.get("control").and_then(|c| c.get("path")).is_some() {
                &["control", "path"]
            } else {
                &["state_dir"]
            };
            errors.push(source.error_at_key(
                key,
                format!(
                    "the control socket {} is longer than a Unix socket path may be (107 \
                     bytes): set a shorter [control] path",
                    control.path.display()
                ),
            ));
        }
        let names: Vec<String> = built.iter().map(|(c, ..)| c.name.clone()).collect();
        let configs: Vec<Config> = built
            .into_iter()
            .map(|(consumer, handlers, commit, consumer_key)| Config {
                process: ProcessConfig {
                    state_dir: state_dir.clone(),
                    metrics_listen,
                    control: control.clone(),
                },
                plugin_dirs: top.plugin_dirs.iter().map(|d| resolve(d)).collect(),
                stats_interval_s: top.stats_interval_s,
                allow_insecure_plugins: top.allow_insecure_plugins,
                consumer,
                handlers,
                commit,
                base_dir: base_dir.clone(),
                source: source.clone(),
                consumer_key,
                consumer_names: names.clone(),
            })
            .collect();
        errors.extend(shared_outputs(&configs));
        Ok((configs, errors))
    }

    /// A `[commit]` table (`base`: where it is, `[]` for the top level).
    fn commit(
        source: &Source,
        base: &[String],
        raw: RawCommit,
        errors: &mut Vec<ConfigError>,
    ) -> CommitPolicy {
        let every_events = raw.every_events;
        if *every_events.get_ref() == 0 {
            let mut label = key_label(base);
            if !label.is_empty() {
                label.push('.');
            }
            errors.push(source.error_at(
                Some(every_events.span()),
                Some(format!("{label}commit.every_events")),
                "must be at least 1",
            ));
        }
        CommitPolicy {
            every_events: every_events.into_inner().max(1),
            every_ms: raw.every_ms,
            fsync: raw.fsync,
        }
    }

    /// The `[consumer]` table, as far as it can be built (a bad name, start or size replaced by
    /// a default), and every problem in it.
    fn consumer(
        source: &Source,
        base: &[String],
        raw: RawConsumer,
    ) -> (Option<ConsumerConfig>, Vec<ConfigError>) {
        let label = key_label(base);
        let at = |spanned_span: Range<usize>, key: &str, message: String| {
            source.error_at(Some(spanned_span), Some(format!("{label}.{key}")), message)
        };
        let path = |rest: &[&str]| {
            let mut path: Vec<String> = base.to_vec();
            path.extend(rest.iter().map(|part| (*part).to_owned()));
            path
        };
        let at_key = |rest: &[&str], message: String| {
            let path = path(rest);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            source.error_at_key(&path, message)
        };
        let mut errors = Vec::new();
        if !is_valid_name(raw.name.get_ref()) {
            errors.push(at(
                raw.name.span(),
                "name",
                format!(
                    "'{}' is not a valid consumer name: use letters, digits, '-', '_' and '.' \
                     (it names the offset cache file)",
                    raw.name.get_ref()
                ),
            ));
        }
        let mut buildable = true;
        for (key, value) in [("plugin", &raw.plugin), ("class", &raw.class)] {
            if value.get_ref().trim().is_empty() {
                errors.push(at(value.span(), key, "must not be empty".into()));
                buildable = false;
            }
        }
        let start = match raw.start {
            None => StartPosition::Beginning,
            Some(value) => {
                let span = value.span();
                parse_start(value.into_inner()).unwrap_or_else(|message| {
                    errors.push(at(span, "start", message));
                    StartPosition::Beginning
                })
            }
        };
        for (key, value) in [
            ("batch_size", &raw.batch_size),
            ("queue_batches", &raw.queue_batches),
        ] {
            if *value.get_ref() == 0 {
                errors.push(at(value.span(), key, "must be at least 1".into()));
            }
        }
        if raw.stall_after_s == 0 {
            errors.push(at_key(
                &["stall_after_s"],
                "must be at least 1 (seconds)".into(),
            ));
        }
        if raw.timeout_ms == 0 {
            errors.push(at_key(
                &["timeout_ms"],
                "must be at least 1 (a poll that never waits makes an idle daemon spin)".into(),
            ));
        }
        let settings_path = path(&["settings"]);
        let settings_path: Vec<&str> = settings_path.iter().map(String::as_str).collect();
        refuse_non_finite(source, &raw.settings, &settings_path, &mut errors);
        let hermes = raw.hermes.filter(|mode| mode.enabled);
        let settings_json = match serde_json::to_string(&raw.settings) {
            Ok(json) => json,
            Err(e) => {
                errors.push(at_key(
                    &["settings"],
                    format!("cannot hand these settings to a plugin: {e}"),
                ));
                buildable = false;
                String::new()
            }
        };
        let consumer = buildable.then(|| ConsumerConfig {
            name: raw.name.into_inner(),
            plugin: raw.plugin.into_inner(),
            class: raw.class.into_inner(),
            start,
            timeout_ms: raw.timeout_ms.max(1),
            batch_size: raw.batch_size.into_inner().max(1),
            queue_batches: raw.queue_batches.into_inner().max(1),
            settings_json,
            on_gap: raw.on_gap.unwrap_or(if hermes.is_some() {
                GapPolicy::Stop
            } else {
                GapPolicy::Warn
            }),
            hermes,
            stall_after_s: raw.stall_after_s.max(1),
        });
        (consumer, errors)
    }

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
                path.push(index.to_string());
                path.push("name".into());
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

/// The key paths (and values) of the non-finite floats (`nan`, `inf`) under `value`: JSON,
/// what plugins are handed, has none (serde_json would make them `null`).
/// Adds an error, at its key, for every non-finite number (`nan`, `inf`) in the plugin
/// settings `table` found at `path`: JSON, what plugins are handed, has none.
pub(crate) fn refuse_non_finite(
    source: &Source,
    table: &toml::Table,
    path: &[&str],
    errors: &mut Vec<ConfigError>,
) {
    let mut found = Vec::new();
    let mut key: Vec<String> = path.iter().map(|part| (*part).to_owned()).collect();
    find_non_finite(&toml::Value::Table(table.clone()), &mut key, &mut found);
    for (key, value) in found {
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        errors.push(source.error_at_key(
            &key,
            format!("{value} is not a number a plugin can be given (JSON has no {value})"),
        ));
    }
}

fn find_non_finite(
    value: &toml::Value,
    path: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, f64)>,
) {
    match value {
        toml::Value::Float(x) if !x.is_finite() => found.push((path.clone(), *x)),
        toml::Value::Table(table) => {
            for (name, inner) in table {
                path.push(name.clone());
                find_non_finite(inner, path, found);
                path.pop();
            }
        }
        toml::Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                path.push(index.to_string());
                find_non_finite(inner, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The text of a config file; bytes that are not UTF-8 are an error at their line and column.
fn read_config(path: &Path) -> Result<String, ConfigError> {
    let error = |location, message: String| ConfigError {
        path: path.to_path_buf(),
        location,
        key: None,
        message,
    };
    let bytes =
        std::fs::read(path).map_err(|e| error(None, format!("cannot read config file: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        error(
            Some((line, column)),
            "a byte that is not UTF-8: a config file is UTF-8 text".into(),
        )
    })
}

/// Deserialises one section of the file; its problem, if any, joins `errors`.
fn section<T: serde::de::DeserializeOwned>(
    source: &Source,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    toml::from_str(&source.text)
        .map_err(|e| errors.push(source.error_from_toml(&e)))
        .ok()
}

/// A misspelt `beginning` or `end` (`begining`, `Beginning`, `END`): at most two edits away,
/// ignoring case.
fn looks_like_a_keyword(text: &str) -> bool {
    let text = text.to_lowercase();
    ["beginning", "end"]
        .iter()
        .any(|keyword| edit_distance(&text, keyword) <= if keyword.len() > 3 { 2 } else { 0 })
}

/// Levenshtein distance (short strings only: config keywords).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == *cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

fn parse_start(value: toml::Value) -> Result<StartPosition, String> {
    match value {
        toml::Value::String(text) if text == "beginning" => Ok(StartPosition::Beginning),
        toml::Value::String(text) if text == "end" => Ok(StartPosition::End),
        toml::Value::String(text) if looks_like_a_keyword(&text) => Err(format!(
            "\"{text}\": did you mean \"beginning\" or \"end\"? (a string offset that looks \
             like this is written {{ string = \"{text}\" }})"
        )),
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
