//! `buslink run`: config → plugin → consumer → pipeline.

use crate::config::{Config, ConfigError, StartPosition};
use crate::handlers;
use crate::offsets::OffsetCache;
use crate::pipeline::{self, PipelineError, PipelineOptions};
use crate::plugin::{find_library, LoadError, LoadedPlugin, PluginConsumer};
use crate::shutdown::Shutdown;
use buslink_plugin_api::ErrorKind;
use std::path::Path;
use std::time::Duration;

/// Why `buslink run` (or another command) could not do its job; the exit code follows from it.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0}")]
    Runtime(String),
}

impl From<PipelineError> for AppError {
    fn from(error: PipelineError) -> Self {
        AppError::Runtime(error.to_string())
    }
}

impl AppError {
    /// 2 for config and plugin errors, 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Load(_) => 2,
            AppError::Runtime(_) => 1,
        }
    }
}

/// Loads the configured plugin and builds its consumer (the plugin validates its settings).
pub fn build_consumer(config: &Config) -> Result<(LoadedPlugin, PluginConsumer), AppError> {
    let path = find_library(
        &config.consumer.plugin,
        &config.base_dir,
        &config.plugin_dirs,
    )?;
    let plugin = LoadedPlugin::load(&path)?;
    let info = plugin.info();
    if !info
        .consumer_classes
        .iter()
        .any(|class| class.name == config.consumer.class)
    {
        let known: Vec<_> = info
            .consumer_classes
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        return Err(config
            .consumer_error(
                "class",
                format!(
                    "plugin '{}' ({}) has no consumer class '{}'; it has: {}",
                    info.name,
                    path.display(),
                    config.consumer.class,
                    known.join(", ")
                ),
            )
            .into());
    }
    let consumer = plugin
        .new_consumer(
            &config.consumer.class,
            &config.consumer.settings_json,
            &config.base_dir,
        )
        .map_err(|error| {
            let message = format!(
                "plugin '{}' class '{}': {}",
                info.name,
                config.consumer.class,
                error.message()
            );
            match error.kind() {
                ErrorKind::Config => AppError::Config(config.settings_error(error.key(), message)),
                _ => AppError::Runtime(message),
            }
        })?;
    tracing::info!(
        "loaded plugin '{}' {} (plugin-api {}) from {}",
        info.name,
        info.version,
        info.api_version,
        path.display()
    );
    Ok((plugin, consumer))
}

/// `buslink run --config FILE [--once]`.
pub fn run(config_path: &Path, once: bool) -> Result<(), AppError> {
    let shutdown = Shutdown::install()
        .map_err(|e| AppError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let config = Config::load(config_path)?;
    let cache = OffsetCache::new(&config.state_dir, &config.consumer.name);
    let cached = cache.load().map_err(|e| AppError::Runtime(e.to_string()))?;
    let mut handlers = handlers::build(&config.handlers).map_err(AppError::Runtime)?;
    let (_plugin, consumer) = build_consumer(&config)?;

    match &cached {
        Some(record) => match &record.next_offset {
            Some(next) => tracing::info!(
                "consumer '{}': resumed at offset {next} (after {}, from {})",
                config.consumer.name,
                record.last_offset,
                cache.path().display()
            ),
            None => tracing::info!(
                "consumer '{}': resumed after offset {} (from {})",
                config.consumer.name,
                record.last_offset,
                cache.path().display()
            ),
        },
        None => tracing::info!(
            "consumer '{}': no offset cache yet; starting at {}",
            config.consumer.name,
            match &config.consumer.start {
                StartPosition::Beginning => "the beginning".to_owned(),
                StartPosition::End => "the end".to_owned(),
                StartPosition::At(offset) => format!("offset {offset}"),
            }
        ),
    }

    let options = PipelineOptions {
        once,
        timeout: Duration::from_millis(config.consumer.timeout_ms),
        batch_size: config.consumer.batch_size,
        batch_bytes: 4 << 20,
        queue_batches: config.consumer.queue_batches,
        commit: config.commit,
        start: config.consumer.start.clone(),
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(30),
    };
    let summary = pipeline::run(consumer, cached, &mut handlers, &cache, options, &shutdown)?;
    let last = summary
        .last_committed
        .map_or_else(|| "none".to_owned(), |offset| offset.to_string());
    let why = if summary.bus_ended {
        "the bus ended the stream"
    } else if shutdown.requested() && !once {
        "stop requested"
    } else {
        "bus drained"
    };
    tracing::info!(
        "stopped ({why}): {} events handled in total, last committed offset {last}",
        summary.events_handled
    );
    Ok(())
}
