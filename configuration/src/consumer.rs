//! The `[consumer]` table (or one `[[consumers]]` entry) and its `[commit]` policy: their shape
//! as written, the validated [`ConsumerConfig`] and [`CommitPolicy`], and the checks between
//! (names, start positions, sizes). A consumer key is added here (shape, field, check) and given
//! its reload scope in `reload.rs`.

use crate::handler::LenientHandler;
use crate::plugin::PluginSource;
use crate::settings::refuse_non_finite;
use crate::{key_label, Config, ConfigError, Source};
use buslink_plugin_api::Offset;
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// The `[consumer]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerConfig {
    pub name: String,
    /// `plugin`: a library or an executable.
    pub plugin: PluginSource,
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

/// When a commit reaches the disk (`[commit] fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncMode {
    /// Each commit is written at once (it survives the daemon's death) and made durable against
    /// a power loss by a background `fdatasync`, a few milliseconds later (at most one every
    /// 5 ms); commits that come meanwhile share the next one (group commit). A clean stop waits
    /// for it.
    #[default]
    Background,
    /// Each commit waits for its own `fdatasync` before the next event is handled.
    Each,
}

#[derive(Deserialize)]
pub(crate) struct ConsumerSection {
    #[serde(default)]
    pub(crate) consumer: Option<RawConsumer>,
}

#[derive(Deserialize)]
pub(crate) struct ConsumersSection {
    #[serde(default)]
    pub(crate) consumers: Option<Vec<Spanned<RawConsumer>>>,
}

#[derive(Deserialize)]
pub(crate) struct CommitSection {
    #[serde(default)]
    pub(crate) commit: RawCommit,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConsumer {
    pub(crate) name: Spanned<String>,
    pub(crate) plugin: Spanned<toml::Value>,
    pub(crate) class: Spanned<String>,
    #[serde(default)]
    pub(crate) start: Option<Spanned<toml::Value>>,
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u64,
    #[serde(default = "default_batch_size")]
    pub(crate) batch_size: Spanned<usize>,
    #[serde(default = "default_queue_batches")]
    pub(crate) queue_batches: Spanned<usize>,
    #[serde(default)]
    pub(crate) settings: toml::Table,
    #[serde(default)]
    pub(crate) hermes: Option<HermesMode>,
    #[serde(default)]
    pub(crate) on_gap: Option<GapPolicy>,
    #[serde(default = "default_stall_after_s")]
    pub(crate) stall_after_s: u64,
    /// `[[consumers.handlers]]` (only in `[[consumers]]` entries).
    #[serde(default)]
    pub(crate) handlers: Option<Vec<Spanned<LenientHandler>>>,
    /// `[consumers.commit]` (only in `[[consumers]]` entries; replaces the top-level one).
    #[serde(default)]
    pub(crate) commit: Option<RawCommit>,
}

pub(crate) fn default_timeout_ms() -> u64 {
    1000
}

pub(crate) fn default_stall_after_s() -> u64 {
    60
}

pub(crate) fn default_batch_size() -> Spanned<usize> {
    Spanned::new(0..0, 512)
}

pub(crate) fn default_queue_batches() -> Spanned<usize> {
    Spanned::new(0..0, 4)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommit {
    #[serde(default = "default_every_events")]
    pub(crate) every_events: Spanned<u64>,
    #[serde(default = "default_every_ms")]
    pub(crate) every_ms: u64,
    #[serde(default)]
    pub(crate) fsync: FsyncMode,
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

pub(crate) fn default_every_events() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

pub(crate) fn default_every_ms() -> u64 {
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
    /// A `[commit]` table (`base`: where it is, `[]` for the top level).
    pub(crate) fn commit(
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
    pub(crate) fn consumer(
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
        if raw.class.get_ref().trim().is_empty() {
            errors.push(at(raw.class.span(), "class", "must not be empty".into()));
            buildable = false;
        }
        let plugin_span = raw.plugin.span();
        let plugin = match crate::plugin::parse(raw.plugin.into_inner()) {
            Ok(plugin) => Some(plugin),
            Err(problems) => {
                for (key, message) in problems {
                    errors.push(match key {
                        None => at(plugin_span.clone(), "plugin", message),
                        Some(key) => at_key(&["plugin", key], message),
                    });
                }
                buildable = false;
                None
            }
        };
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
        let consumer = plugin.filter(|_| buildable).map(|plugin| ConsumerConfig {
            name: raw.name.into_inner(),
            plugin,
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
