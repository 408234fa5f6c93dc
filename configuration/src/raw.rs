//! The config file's shape as written, one section at a time (serde, with spans for errors):
//! what `parse.rs` validates into [`Config`](crate::Config). Every table rejects unknown keys.

use crate::handler::LenientHandler;
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
