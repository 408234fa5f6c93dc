//! The daemon's start (`buslink run`): every consumer of the config built (plugins check their
//! settings, locks taken) before anything runs, then the control socket, the metrics and
//! health endpoints, the health monitor (its news to the metrics and systemd), and the
//! consumers handed to the supervisor.

use crate::config::Config;
use crate::control::{Registry, Shared};
use crate::engine::{build_consumer, ConsumerContext};
use crate::error::AppError;
use crate::lock::ConsumerLock;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// `buslink run --config FILE [--once]`: every consumer of the config, each its own
/// pipeline. One `[consumer]`: its failure ends the process (a service manager restarts it);
/// `[[consumers]]`: the [`supervisor`](crate::supervisor) restarts a failed one with backoff.
pub fn run(config_path: &Path, once: bool) -> Result<(), AppError> {
    let shutdown = Shutdown::install()
        .map_err(|e| AppError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let configs = Config::load_all(config_path)?;
    let Some(first) = configs.first() else {
        return Err(AppError::Usage(format!(
            "{}: no consumer",
            config_path.display()
        )));
    };
    let single = first.consumer_key == ["consumer"];
    // Every plugin checks its settings before anything runs or is written.
    let mut units = Vec::new();
    for config in configs {
        let (plugin, consumer) = build_consumer(&config)?;
        let lock = ConsumerLock::acquire(&config.process.state_dir, &config.consumer.name)
            .map_err(|e| AppError::Runtime(e.to_string()))?;
        units.push((config, plugin, consumer, lock));
    }
    let shared: Vec<Arc<Shared>> = units
        .iter()
        .map(|(config, ..)| {
            Arc::new(Shared::new(
                &config.consumer.name,
                &config.consumer.plugin.label(),
                &config.consumer.class,
            ))
        })
        .collect();
    for ((_, _, consumer, _), shared) in units.iter().zip(&shared) {
        if consumer.bus_owns_position() {
            shared.forbid_pause();
        }
    }
    let registry = Arc::new(Registry::new(shared.clone()));
    // The control socket (`buslink ctl`): status, pause, resume, reload, quit.
    let first = &units[0].0;
    let _control_server = crate::control::server::ControlServer::start(
        &first.process.control,
        registry.clone(),
        shutdown.clone(),
    )
    .map_err(AppError::Runtime)?;
    // Opt-in metrics and health endpoints, up before the pipelines so that a scrape sees them
    // connect.
    let metrics_registry = first
        .process
        .metrics_listen
        .map(|_| Arc::new(crate::metrics::MetricsRegistry::new()));
    let _metrics_server = match (first.process.metrics_listen, &metrics_registry) {
        (Some(listen), Some(metrics)) => {
            let server = crate::metrics::MetricsServer::start(listen, metrics.clone())
                .map_err(AppError::Runtime)?;
            tracing::info!(
                "metrics on http://{0}/metrics, health on http://{0}/health and /ready",
                server.address()
            );
            Some(server)
        }
        _ => None,
    };
    let units: Vec<crate::supervisor::Unit> = units
        .into_iter()
        .zip(shared)
        .map(|((config, plugin, consumer, lock), control)| {
            let metrics = metrics_registry
                .as_ref()
                .map(|registry| registry.consumer(&config.consumer.name));
            crate::supervisor::Unit {
                context: ConsumerContext {
                    control,
                    metrics,
                    lock,
                    ready: Some(crate::service::ready_hook()),
                },
                config,
                plugin,
                consumer: Some(consumer),
            }
        })
        .collect();
    registry
        .reload_on_sighup()
        .map_err(|e| AppError::Runtime(format!("cannot install the SIGHUP handler: {e}")))?;
    // Every consumer's state, lag and progress lines, derived in one place (and the
    // watchdog's pings: the daemon's liveness, whatever its handlers take).
    let _monitor = crate::health::Monitor::start(
        Arc::new(Published {
            registry: registry.clone(),
            metrics: metrics_registry.clone(),
            shown: Mutex::new(HashMap::new()),
        }),
        {
            let watchdog = crate::service::Watchdog::from_env();
            move || watchdog.tick()
        },
    )
    .map_err(|e| AppError::Runtime(format!("cannot start the monitor thread: {e}")))?;
    crate::supervisor::run(
        units,
        &crate::supervisor::Daemon {
            config_path,
            registry: registry.clone(),
            metrics: metrics_registry.clone(),
            once,
            shutdown: &shutdown,
            single,
        },
    )
}

/// Where the monitor's views go: the control socket's consumers (their health), the metrics,
/// and the service manager's status line (sent when it changes).
struct Published {
    registry: Arc<Registry>,
    metrics: Option<Arc<crate::metrics::MetricsRegistry>>,
    /// The status line last sent per consumer.
    shown: Mutex<HashMap<String, String>>,
}

impl crate::health::Publish for Published {
    fn consumers(&self) -> Vec<crate::health::Watched> {
        self.registry
            .consumers()
            .iter()
            .map(|shared| crate::health::Watched {
                name: shared.name(),
                health: shared.health().clone(),
                paused: shared.paused(),
                committed: shared.committed_offset(),
            })
            .collect()
    }

    fn publish(&self, name: &str, view: &crate::health::View, counters: &[(String, u64)]) {
        if let Some(metrics) = self.metrics.as_ref().and_then(|m| m.get(name)) {
            metrics.set_view(view);
            metrics.plugin_counters(counters);
            if let Some(shared) = self.registry.consumers().iter().find(|s| s.name() == name) {
                metrics.set_error_queue(shared.status().error_queue);
            }
        }
        // The line changes with the state (a stalled consumer's seconds are not news).
        let line = match &view.state {
            crate::health::State::Stalled { waiting, .. } => {
                format!("stalled: {waiting} events wait, none handled")
            }
            other => other.text(),
        };
        let mut shown = self
            .shown
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shown.get(name) != Some(&line) {
            crate::service::consumer_status(name, &line);
            shown.insert(name.to_owned(), line);
        }
    }
}
