//! The config file's shape as written, one section at a time (serde, with spans for errors):
//! what `parse.rs` validates into [`Config`](crate::Config). Every table rejects unknown keys.

use crate::handler::LenientHandler;
use crate::{FsyncMode, GapPolicy, HermesMode};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::PathBuf;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTop {
    pub(crate) state_dir: Spanned<PathBuf>,
    #[serde(default)]
    pub(crate) plugin_dirs: Vec<PathBuf>,
    #[serde(default = "default_stats_interval_s")]
    pub(crate) stats_interval_s: u64,
    #[serde(default)]
    pub(crate) allow_insecure_plugins: bool,
    // Checked by their own sections.
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) consumer: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) consumers: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) control: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) handlers: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) commit: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    pub(crate) metrics: Option<IgnoredAny>,
}

/// The top level's directories alone, when the rest of it is invalid.
#[derive(Deserialize)]
pub(crate) struct RawTopDirs {
    pub(crate) state_dir: Spanned<PathBuf>,
    #[serde(default)]
    pub(crate) plugin_dirs: Vec<PathBuf>,
}

pub(crate) fn default_stats_interval_s() -> u64 {
    60
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
pub(crate) struct HandlersSection {
    #[serde(default)]
    pub(crate) handlers: Option<Vec<Spanned<LenientHandler>>>,
}

#[derive(Deserialize)]
pub(crate) struct ControlSection {
    #[serde(default)]
    pub(crate) control: Option<RawControl>,
}

/// `[control]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    #[serde(default)]
    pub(crate) path: Option<PathBuf>,
    #[serde(default)]
    pub(crate) owner: Option<String>,
    #[serde(default)]
    pub(crate) group: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
pub(crate) struct MetricsSection {
    #[serde(default)]
    pub(crate) metrics: Option<RawMetrics>,
}

/// `[metrics]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    /// `HOST:PORT` (`127.0.0.1:9464`; port 0: any free port, logged).
    pub(crate) listen: Spanned<String>,
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
    pub(crate) plugin: Spanned<String>,
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
