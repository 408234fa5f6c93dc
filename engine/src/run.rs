//! One consumer's run, as every command that needs a consumer uses it: load its plugin, make
//! and position the consumer, then run it (the offset cache, the Hermes bootstrap, the
//! handlers, the pipeline). The `run` command and the supervisor call it; so do `check`,
//! `offsets`, `query` and `replay` for their consumer. No command module is imported here.

use crate::config::PluginSource;
use crate::config::{Config, ConfigErrors, HermesMode, StartPosition};
use crate::dead_letter::DeadLetterFile;
use crate::error::AppError;
use crate::error_queue::ErrorQueue;
use crate::handlers;
use crate::hermes_mode::{self, HermesFilter, InitsyncSequence};
use crate::lock::ConsumerLock;
use crate::offsets::OffsetRecord;
use crate::offsets::{OffsetCache, ResumePoint};
use crate::pipeline::{self, Outputs, PipelineOptions};
use crate::plugin::{find_executable, find_library, LoadedPlugin, PluginConsumer};
use crate::shutdown::Shutdown;
use crate::steering::Shared;
use buslink_plugin_api::ErrorKind;
use buslink_plugin_api::PluginError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Finds and loads the configured consumer plugin, and checks that it has the configured class.
pub fn load_consumer_plugin(config: &Config) -> Result<(Arc<LoadedPlugin>, PathBuf), AppError> {
    let (plugin, path) = match &config.consumer.plugin {
        PluginSource::Library(name) => {
            let path = find_library(name, &config.base_dir, &config.plugin_dirs)?;
            (
                LoadedPlugin::shared(&path, config.allow_insecure_plugins)?,
                path,
            )
        }
        PluginSource::Executable(command) => {
            let program = command.command.first().map(String::as_str).unwrap_or("");
            let path = find_executable(program, &config.base_dir, &config.plugin_dirs)?;
            let plugin = LoadedPlugin::executable(
                &path,
                Some(command),
                config.allow_insecure_plugins,
                &config.base_dir,
            )?;
            (Arc::new(plugin), path)
        }
        PluginSource::Hermes(hermes) => {
            let plugin = LoadedPlugin::hermes(
                hermes,
                &config.consumer.class,
                &config.base_dir,
                config.allow_insecure_plugins,
            )?;
            let path = plugin.path().to_path_buf();
            (Arc::new(plugin), path)
        }
    };
    let info = plugin.info();
    if !info
        .consumer_classes
        .iter()
        .any(|class| class.name == config.consumer.class)
    {
        return Err(ConfigErrors::from(config.consumer_error(
            "class",
            info.missing_class(&path, true, &config.consumer.class),
        ))
        .into());
    }
    Ok((plugin, path))
}

/// The plugin's refusal of the consumer's settings (or of building the consumer): a config
/// error pointing at the settings key when the plugin names one.
pub fn settings_refusal(config: &Config, plugin: &str, error: &PluginError) -> AppError {
    let message = format!(
        "plugin '{plugin}' class '{}': {}",
        config.consumer.class,
        error.message()
    );
    match error.kind() {
        ErrorKind::Config => AppError::Config(config.settings_error(error.key(), message).into()),
        _ => AppError::Runtime(message),
    }
}

/// A consumer instance to read a past range with (`buslink replay`, `ctl replay`): one of the
/// configured class, or, where that one's bus keeps the position (a consumer group: reading
/// would join the group), one of the plugin's class `CLASS` + `Reader` with the same settings,
/// which reads without joining. Without such a class the consumer that keeps the position is
/// returned: the caller refuses it.
pub fn new_replay_reader(
    config: &Config,
    plugin: &LoadedPlugin,
) -> Result<PluginConsumer, AppError> {
    let consumer = new_consumer(config, plugin)?;
    if !consumer.bus_owns_position() {
        return Ok(consumer);
    }
    let reader_class = format!("{}{}", config.consumer.class, REPLAY_READER_SUFFIX);
    match plugin.new_consumer(
        &reader_class,
        &config.consumer.settings_json,
        &config.base_dir,
    ) {
        Ok(reader) if !reader.bus_owns_position() => Ok(reader),
        _ => Ok(consumer),
    }
}

pub use crate::range::REPLAY_READER_SUFFIX;

/// A new consumer of the configured class from a loaded `plugin` (which validates the
/// settings).
pub fn new_consumer(config: &Config, plugin: &LoadedPlugin) -> Result<PluginConsumer, AppError> {
    let consumer = plugin
        .new_consumer(
            &config.consumer.class,
            &config.consumer.settings_json,
            &config.base_dir,
        )
        .map_err(|error| settings_refusal(config, &plugin.info().name, &error))?;
    if config.consumer.hermes.is_some() && consumer.bus_owns_position() {
        return Err(AppError::Usage(format!(
            "{}: {}: Hermes mode replays an initsync sequence from offsets buslink keeps, but \
             plugin '{}' class '{}' keeps its position on the bus (a consumer group): use a \
             consumer whose position buslink keeps (Kafka: mode = \"assign\", as hermes-client)",
            config.source.path.display(),
            config.consumer_label(),
            consumer.plugin(),
            consumer.class()
        )));
    }
    Ok(consumer)
}

/// Loads the configured plugin and builds its consumer (the plugin validates its settings).
pub fn build_consumer(config: &Config) -> Result<(Arc<LoadedPlugin>, PluginConsumer), AppError> {
    let (plugin, path) = load_consumer_plugin(config)?;
    let info = plugin.info();
    let consumer = new_consumer(config, &plugin)?;
    tracing::info!(
        "loaded plugin '{}' {} ({}) from {}",
        info.name,
        info.version,
        info.speaks(),
        path.display()
    );
    Ok((plugin, consumer))
}

/// Hermes mode: the initsync sequence of the cache, or a new one found on the bus (then the
/// run starts at its `init-start`). `None`: none yet and `--once`, or a stop was asked for.
fn hermes_filter(
    cached: &mut Option<OffsetRecord>,
    consumer: &mut PluginConsumer,
    mode: HermesMode,
    config: &Config,
    once: bool,
    shutdown: &Shutdown,
    health: &crate::health::Health,
) -> Result<Option<HermesFilter>, AppError> {
    if let Some(record) = cached.as_ref() {
        if let (Some(start), Some(stop)) = (&record.initstartoffset, &record.initstopoffset) {
            return Ok(Some(HermesFilter {
                sequence: InitsyncSequence {
                    start: start.clone(),
                    stop: stop.clone(),
                },
                initsync_done: record.initsync_done,
            }));
        }
    }
    let timeout = Duration::from_millis(config.consumer.timeout_ms);
    // The consumer shows waiting for the bus while a transient error is retried.
    let waiting = |why: Option<String>| {
        health.set_phase(why.map_or(crate::health::Phase::Connecting, |why| {
            crate::health::Phase::Waiting(why)
        }))
    };
    let sequence = hermes_mode::bootstrap(
        consumer,
        mode.use_first_initsync,
        timeout,
        once,
        shutdown,
        &waiting,
    )
    .map_err(|e| AppError::Runtime(e.to_string()))?;
    let Some(sequence) = sequence else {
        return Ok(None);
    };
    tracing::info!(
        "Hermes mode: replaying the {} complete initsync sequence, offsets {} to {}",
        if mode.use_first_initsync {
            "first"
        } else {
            "latest"
        },
        sequence.start,
        sequence.stop
    );
    let handled = cached.as_ref().map_or(0, |record| record.events_handled);
    let cache = OffsetCache::new(&config.process.state_dir, &config.consumer.name);
    let mut record = cache.record(None, Some(sequence.start.clone()), handled);
    record.initstartoffset = Some(sequence.start.clone());
    record.initstopoffset = Some(sequence.stop.clone());
    *cached = Some(record);
    Ok(Some(HermesFilter {
        sequence,
        initsync_done: false,
    }))
}

/// Exactly-once outputs that have no committed length yet (a first run, a new handler, a new
/// path) get theirs now, before the first event: otherwise what a run killed before its first
/// commit wrote would stay in the file and come again.
fn commit_new_outputs(
    cache: &OffsetCache,
    cached: &mut Option<OffsetRecord>,
    committed: &std::collections::BTreeMap<String, crate::offsets::OutputPosition>,
    handlers: &[handlers::ConfiguredHandler],
) -> Result<(), AppError> {
    let now = crate::handlers::output_positions(handlers);
    if now
        .iter()
        .all(|(name, position)| committed.get(name) == Some(position))
    {
        return Ok(());
    }
    let mut record = cached
        .clone()
        .unwrap_or_else(|| cache.record(None, None, 0));
    record.outputs = now;
    cache
        .commit(&record)
        .map_err(|e| AppError::Runtime(e.to_string()))?;
    *cached = Some(record);
    Ok(())
}

/// What one consumer's pipeline shares with the rest of the daemon, kept across restarts.
pub struct ConsumerContext {
    /// What the control socket shows of it, and its pause flag.
    pub control: Arc<Shared>,
    /// Its metrics, when `[metrics]` is on.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Its lock, held for the daemon's life.
    pub lock: ConsumerLock,
    /// Who hears that its run is up (the service manager's `READY=1`).
    pub ready: Option<crate::health::Ready>,
}

/// Runs one consumer until it stops: the offset cache, the Hermes bootstrap, the handlers, the
/// pipeline. `Ok` when it stopped as asked (a stop request, `--once` drained, the bus ended).
pub fn run_consumer(
    config: &Config,
    plugin: &LoadedPlugin,
    consumer: PluginConsumer,
    context: &ConsumerContext,
    once: bool,
    shutdown: &Shutdown,
) -> Result<(), AppError> {
    let cache = OffsetCache::new(&config.process.state_dir, &config.consumer.name);
    let mut cached = cache.load().map_err(|e| AppError::Runtime(e.to_string()))?;
    // Exactly-once outputs are cut back to these lengths (kept aside: a Hermes bootstrap
    // replaces the record).
    let committed_outputs = cached
        .as_ref()
        .map(|record| record.outputs.clone())
        .unwrap_or_default();
    let mut consumer = consumer;
    if config.consumer.hermes.is_some() {
        // The bootstrap may wait long for a complete initsync sequence: the service manager
        // hears the daemon is up (and why it consumes nothing yet) instead of timing out.
        if let Some(ready) = &context.ready {
            ready.announce(
                &config.consumer.name,
                "Hermes mode: looking for a complete initsync sequence",
            );
        }
    }
    let hermes = match config.consumer.hermes {
        None => None,
        Some(mode) => match hermes_filter(
            &mut cached,
            &mut consumer,
            mode,
            config,
            once,
            shutdown,
            context.control.health(),
        )? {
            Some(filter) => Some(filter),
            None => {
                tracing::info!("Hermes mode: no complete initsync sequence; nothing consumed");
                return Ok(());
            }
        },
    };
    let mut handlers = handlers::build(
        &config.handlers,
        &config.base_dir,
        &config.plugin_dirs,
        &committed_outputs,
    )
    .map_err(|problems| AppError::Runtime(problems.join("\n")))?;
    commit_new_outputs(&cache, &mut cached, &committed_outputs, &handlers)?;
    let mut dead_letters = DeadLetterFile::new(&config.process.state_dir, &config.consumer.name);
    let mut error_queue = ErrorQueue::load(&config.process.state_dir, &config.consumer.name)
        .map_err(|e| AppError::Runtime(e.to_string()))?;
    if !error_queue.is_empty() {
        tracing::info!(
            "error queue {}: {} event(s) waiting for a retry",
            error_queue.path().display(),
            error_queue.events().len()
        );
    }
    crate::error_queue::warn_orphans(&error_queue, &config.handlers);

    let start_text = match cached.as_ref().and_then(OffsetCache::resume_point) {
        // The bus keeps the position (a consumer group): the plugin says where each part
        // starts; the cache only says where this member was.
        Some(ResumePoint::After(last)) if consumer.bus_owns_position() => {
            match cached.as_ref().and_then(|r| r.next_offset.as_ref()) {
                Some(next) => format!(
                    "the bus keeps the position; this member last handled {last} (its cache \
                     says {next}, used where the bus has none or an older one)"
                ),
                None => format!("the bus keeps the position; this member last handled {last}"),
            }
        }
        Some(ResumePoint::After(last)) => {
            match cached.as_ref().and_then(|r| r.next_offset.as_ref()) {
                Some(next) => format!("resumed at offset {next} (after {last})"),
                None => format!("resumed after offset {last}"),
            }
        }
        Some(ResumePoint::At(next)) => format!("starting at offset {next} (a set start point)"),
        None => format!(
            "no committed offset; starting at {}",
            match &config.consumer.start {
                StartPosition::Beginning => "the beginning".to_owned(),
                StartPosition::End => "the end".to_owned(),
                StartPosition::At(offset) => format!("offset {offset}"),
            }
        ),
    };
    tracing::info!(
        "consumer '{}': {start_text} ({})",
        config.consumer.name,
        cache.path().display()
    );

    let options = PipelineOptions {
        once,
        timeout: Duration::from_millis(config.consumer.timeout_ms),
        batch_size: config.consumer.batch_size,
        batch_bytes: 4 << 20,
        queue_batches: config.consumer.queue_batches,
        commit: config.commit,
        start: config.consumer.start.clone(),
        initial_backoff: crate::backoff::INITIAL,
        max_backoff: crate::backoff::MAX,
        stats_interval: (config.stats_interval_s > 0)
            .then(|| Duration::from_secs(config.stats_interval_s)),
        stall_after: Duration::from_secs(config.consumer.stall_after_s),
        hermes,
        library: Some(plugin.watch()),
        on_gap: config.consumer.on_gap,
        lock: Some(context.lock.watch()),
        metrics: context.metrics.clone(),
        control: Some(context.control.clone()),
        ready: context.ready.clone(),
    };
    let summary = pipeline::run(
        consumer,
        cached,
        Outputs {
            handlers: &mut handlers,
            dead_letters: &mut dead_letters,
            error_queue: &mut error_queue,
        },
        &cache,
        options,
        shutdown,
        Some(&|| new_replay_reader(config, plugin).map_err(|e| e.to_string())),
    )
    .map_err(|error| match error {
        // The plugin refused its settings only once it met the bus (a queue the server does
        // not have, ...): a config error, pointing at the key's line like any other.
        pipeline::PipelineError::Consumer(e) if e.error.kind() == ErrorKind::Config => {
            settings_refusal(config, &e.plugin, &e.error)
        }
        other => other.into(),
    })?;
    let last = summary
        .last_committed
        .map_or_else(|| "none".to_owned(), |offset| offset.to_string());
    if once && !summary.drained {
        // `--once` promises a drained bus: a stop before that is no success.
        return Err(AppError::Runtime(format!(
            "stopped by a signal before the bus was drained: {} events handled in this run, \
             last committed offset {last}",
            summary.handled_this_run
        )));
    }
    let why = if summary.bus_ended {
        "the bus ended the stream".to_owned()
    } else if shutdown.requested() && !once {
        "stop requested".to_owned()
    } else if summary.drained_unknown {
        format!(
            "no event within {} ms; the plugin cannot tell whether the bus is drained",
            config.consumer.timeout_ms
        )
    } else {
        "bus drained".to_owned()
    };
    tracing::info!(
        "stopped ({why}): {} events handled in this run ({} since the cache was created), last \
         committed offset {last}{}",
        summary.handled_this_run,
        summary.events_handled,
        crate::health::counters_text(summary.gaps, summary.events_lost, &summary.counters)
    );
    Ok(())
}
