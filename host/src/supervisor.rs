//! Several consumers in one process (`[[consumers]]`): one thread per consumer, each running
//! its own pipeline ([`run_consumer`]: its reader, dispatcher, offset cache and lock). They
//! share the process, the log (each line carries a `consumer{name=..}` span), the control
//! socket and the metrics.
//!
//! A consumer that fails is logged, shown as `failed: WHY (restart N in S s)` by `status` and
//! `/health`, and restarted with backoff (1 s doubling to 60 s; back to 1 s after a run of a
//! minute or more) without touching the others. The plugin library stays loaded; each restart
//! is a new consumer instance of it. With `--once` every consumer drains and there is no
//! restart: the run fails if any consumer failed.

use crate::commands::run::{new_consumer, run_consumer, ConsumerContext};
use crate::commands::AppError;
use crate::config::Config;
use crate::control::Registry;
use crate::metrics::State;
use crate::plugin::{LoadedPlugin, PluginConsumer};
use crate::shutdown::Shutdown;
use std::time::{Duration, Instant};

/// The first wait before a failed consumer is restarted.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run at least this long counts as healthy: the next failure waits [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// One consumer of the daemon.
pub struct Unit {
    pub config: Config,
    pub plugin: LoadedPlugin,
    /// The first instance, built (settings validated) before anything ran.
    pub consumer: Option<PluginConsumer>,
    pub context: ConsumerContext,
}

/// Runs every unit on a thread of its own until each stopped; the error names every consumer
/// that ended failed.
pub fn run(
    units: Vec<Unit>,
    _registry: &Registry,
    once: bool,
    shutdown: &Shutdown,
) -> Result<(), AppError> {
    let names: Vec<String> = units
        .iter()
        .map(|u| u.config.consumer.name.clone())
        .collect();
    tracing::info!(
        "running {} consumers in one process: {}",
        units.len(),
        names.join(", ")
    );
    let results: Vec<(String, Result<(), AppError>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = units
            .into_iter()
            .map(|unit| {
                let name = unit.config.consumer.name.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("consumer {name}"))
                    .spawn_scoped(scope, move || supervise(unit, once, shutdown));
                (name, thread)
            })
            .collect();
        threads
            .into_iter()
            .map(|(name, thread)| {
                let result = match thread {
                    Ok(thread) => thread.join().unwrap_or_else(|_| {
                        Err(AppError::Runtime("its thread panicked".to_owned()))
                    }),
                    Err(e) => Err(AppError::Runtime(format!("cannot start its thread: {e}"))),
                };
                (name, result)
            })
            .collect()
    });
    let mut failed: Vec<(String, AppError)> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| (name, e)))
        .collect();
    match failed.len() {
        0 => Ok(()),
        1 => {
            let (name, error) = failed.remove(0);
            Err(match error {
                AppError::Runtime(message) => {
                    AppError::Runtime(format!("consumer '{name}': {message}"))
                }
                other => other,
            })
        }
        _ => Err(AppError::Runtime(
            failed
                .iter()
                .map(|(name, error)| format!("consumer '{name}': {error}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )),
    }
}

/// One consumer's life: run, and after a failure wait and run a new instance, until it stops
/// as asked (or, with `--once`, fails).
fn supervise(mut unit: Unit, once: bool, shutdown: &Shutdown) -> Result<(), AppError> {
    let span = tracing::info_span!("consumer", name = %unit.config.consumer.name);
    let _span = span.enter();
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0u64;
    loop {
        let started = Instant::now();
        let attempt = match unit.consumer.take() {
            Some(consumer) => Ok(consumer),
            None => new_consumer(&unit.config, &unit.plugin),
        };
        let result = attempt.and_then(|consumer| {
            // Its own stop flag: a pipeline stops itself after an error, not the others.
            let own_stop = shutdown.child();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_consumer(
                    &unit.config,
                    &unit.plugin,
                    consumer,
                    &unit.context,
                    once,
                    &own_stop,
                )
            }))
            .unwrap_or_else(|_| Err(AppError::Runtime("the pipeline panicked".to_owned())))
        });
        let error = match result {
            Ok(()) => return Ok(()),
            Err(error) if once || shutdown.requested() => return Err(error),
            Err(error) => error,
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        restarts += 1;
        let why = error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        tracing::error!(
            "failed: {why}; restart {restarts} in {} s (the other consumers go on)",
            backoff.as_secs()
        );
        let state = format!("{why} (restart {restarts} in {} s)", backoff.as_secs());
        unit.context.control.update(|status| {
            status.state = format!("failed: {state}");
            status.last_error = Some(why.clone());
        });
        if let Some(metrics) = &unit.context.metrics {
            metrics.set_state(State::Failed(state));
        }
        if !shutdown.sleep(backoff) {
            return Err(error);
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        unit.context.control.update(|status| {
            status.state = "connecting".to_owned();
        });
        if let Some(metrics) = &unit.context.metrics {
            metrics.set_state(State::Connecting);
        }
    }
}
