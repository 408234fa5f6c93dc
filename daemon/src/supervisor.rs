//! The daemon's consumers: one thread per consumer, each running its own pipeline
//! ([`run_consumer`]: its reader, dispatcher, offset cache and lock). They share the process,
//! the log (each line carries a `consumer{name=..}` span), the control socket and the metrics.
//!
//! **Failures.** With `[[consumers]]`, a consumer that fails is logged, shown as `failed: WHY
//! (restart N at HH:MM:SS UTC, S s after the failure)` by `status` and `/health`, and
//! restarted with backoff (1 s doubling to 60 s; back to 1 s after a run of a minute or more)
//! without touching the others; the plugin
//! library stays loaded and each restart is a new consumer instance. A stop (SIGTERM, `ctl
//! quit`) while a consumer waits for its restart, or before its restarted run lasted a minute
//! without failing (and no reload changed it since), ends the process with exit 1 naming that
//! failure. With one `[consumer]`, a
//! failure ends the process (exit 1; a service manager restarts it), as it always did. With
//! `--once` every consumer drains, there is no restart, and the run fails if any consumer did.
//!
//! **Reload** (SIGHUP, `buslink ctl reload`): the config is read again and checked whole (the
//! plugins validate their settings, the handlers are checked as `buslink check` does); if
//! anything is wrong it is logged and the running config stays. Otherwise a consumer whose
//! handlers alone changed gets them swapped in by its dispatcher at the next batch boundary
//! (`control::HandlerSwap`; the bus stays open); one whose table or commit policy changed is
//! stopped at a batch boundary (what it handled is committed) and started again with the new
//! config, resuming right after its committed offset; a new consumer is started, a removed one
//! stopped; the others are not touched. A failed consumer waiting out its backoff whose
//! config or handlers changed starts again at once, its backoff back at 1 s.
//! State dir, `[metrics]` and `[control]` take effect at the next start.
//!
//! **Invariant:** only a consumer's own thread runs its pipeline; the reloader (the main
//! thread) only hands it a replacement and asks its current run to stop.

use crate::config::reload::ConsumerPlan;
use crate::config::Config;
use crate::control::{Registry, Shared};
use crate::engine::{build_consumer, new_consumer, run_consumer, ConsumerContext};
use crate::error::AppError;
use crate::health::Phase;
use crate::lock::ConsumerLock;
use crate::metrics::MetricsRegistry;
use crate::plugin::{LoadedPlugin, PluginConsumer};
use crate::shutdown::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};
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
    pub plugin: Arc<LoadedPlugin>,
    /// The first instance, built (settings validated) before anything ran.
    pub consumer: Option<PluginConsumer>,
    pub context: ConsumerContext,
}

/// What the process's consumers share.
pub struct Daemon<'a> {
    /// The config file (read again at a reload).
    pub config_path: &'a Path,
    pub registry: Arc<Registry>,
    pub metrics: Option<Arc<MetricsRegistry>>,
    pub once: bool,
    pub shutdown: &'a Shutdown,
    /// One `[consumer]`: a failure ends the process instead of a restart.
    pub single: bool,
}

/// A new config, plugin and first instance for a consumer's next run.
struct Replacement {
    config: Config,
    plugin: Arc<LoadedPlugin>,
    consumer: PluginConsumer,
}

/// What the reloader and a consumer's thread share, under one lock.
#[derive(Default)]
struct Steering {
    /// The stop flag of the run under way.
    attempt: Option<Shutdown>,
    /// What the next run runs (set with a stop of the run under way).
    replacement: Option<Replacement>,
    /// End the consumer (it left the config).
    retire: bool,
    /// The config of handlers swapped in the running pipeline: the next run starts with it.
    config: Option<Config>,
}

type Steer = Arc<Mutex<Steering>>;

fn steer(steer: &Steer) -> std::sync::MutexGuard<'_, Steering> {
    steer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The main thread's handle on one consumer.
struct Handle<'scope> {
    name: String,
    /// The exactly-once files its handlers write (a reload must not hand one to another
    /// consumer: the two would write it at once until both reached a batch boundary).
    outputs: Vec<PathBuf>,
    /// The plugin library its current run uses (a reload restarts it when the file changed).
    plugin: Arc<LoadedPlugin>,
    /// The effective config its current run uses: a reload plans against it
    /// ([`crate::config::reload`]).
    config: Config,
    /// Its handlers from the last reload could not be built: the next reload offers them
    /// again even when the config did not change.
    handlers_refused: bool,
    shared: Arc<Shared>,
    steer: Steer,
    thread: std::io::Result<ScopedJoinHandle<'scope, Result<(), AppError>>>,
    /// Set by the thread as its last act (its result is then about to be returned).
    ended: Arc<AtomicBool>,
    /// Taken out of what operators see (a reload removed it and it has stopped).
    unlisted: bool,
}

impl Handle<'_> {
    /// Whether its thread has ended (or is returning: joining it takes no time). The thread's
    /// notice comes a moment before `is_finished` turns true: looking only at that, the
    /// supervisor missed the notice and slept its 50 ms again at every stop.
    fn finished(&self) -> bool {
        self.ended.load(Ordering::SeqCst) || self.thread.as_ref().map_or(true, |t| t.is_finished())
    }
}

/// Runs every unit on a thread of its own until each stopped (reloading on request); the error
/// names every consumer that ended failed.
pub fn run(units: Vec<Unit>, daemon: &Daemon<'_>) -> Result<(), AppError> {
    if units.len() > 1 {
        tracing::info!(
            "running {} consumers in one process: {}",
            units.len(),
            units
                .iter()
                .map(|u| u.config.consumer.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // What the process was started with: a reload may not change its process-wide keys.
    let Some(process_config) = units.first().map(|u| u.config.clone()) else {
        return Ok(());
    };
    // Each consumer's thread says when it ends (woken at once, not at the next look).
    let (ended_tx, ended) = std::sync::mpsc::channel::<()>();
    let results: Vec<(String, Result<(), AppError>)> = std::thread::scope(|scope| {
        let mut handles: Vec<Handle<'_>> = units
            .into_iter()
            .map(|unit| spawn(scope, unit, daemon, ended_tx.clone()))
            .collect();
        crate::service::set_consumer_count(handles.len());
        let mut stop_said = false;
        while !handles.iter().all(Handle::finished) {
            if daemon.shutdown.requested() {
                // The service's stop (sent once): not a consumer's restart.
                crate::service::stopping();
                if !std::mem::replace(&mut stop_said, true) {
                    tracing::info!(
                        "stop asked for: each consumer finishes the event in hand, commits \
                         what it handled and stops (a second SIGTERM or SIGINT exits at once)"
                    );
                    for handle in handles.iter().filter(|h| !h.finished()) {
                        handle.shared.health().stop_asked();
                    }
                }
            }
            // New handlers a dispatcher could not build: the next reload tries them again.
            for handle in &mut handles {
                if handle.shared.take_swap_failure() {
                    handle.handlers_refused = true;
                }
            }
            if !daemon.once && daemon.registry.take_reload() {
                let outcome = reload(scope, &mut handles, daemon, &process_config, &ended_tx);
                daemon.registry.reloaded(outcome);
                crate::service::set_consumer_count(
                    handles
                        .iter()
                        .filter(|h| !h.finished() && !steer(&h.steer).retire)
                        .count(),
                );
            }
            // A consumer a reload removed is shown (`stopping`) until it has stopped.
            if handles
                .iter()
                .any(|h| !h.unlisted && h.finished() && steer(&h.steer).retire)
            {
                publish(&mut handles, daemon);
            }
            let _ = ended.recv_timeout(Duration::from_millis(50));
        }
        // Every consumer may have ended before the loop looked at the stop flag again.
        if daemon.shutdown.requested() {
            crate::service::stopping();
        }
        handles
            .into_iter()
            .map(|handle| {
                let result = match handle.thread {
                    Ok(thread) => thread.join().unwrap_or_else(|_| {
                        Err(AppError::Runtime("its thread panicked".to_owned()))
                    }),
                    Err(e) => Err(AppError::Runtime(format!("cannot start its thread: {e}"))),
                };
                (handle.name, result)
            })
            .collect()
    });
    let mut failed: Vec<(String, AppError)> = results
        .into_iter()
        .filter_map(|(name, result)| result.err().map(|e| (name, e)))
        .collect();
    match failed.len() {
        0 => Ok(()),
        1 if daemon.single => Err(failed.remove(0).1),
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

/// Marks its thread ended and sends on its channel when dropped: a thread's end, even by a
/// panic.
struct EndNotice(std::sync::mpsc::Sender<()>, Arc<AtomicBool>);

impl Drop for EndNotice {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
        let _ = self.0.send(());
    }
}

fn spawn<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    unit: Unit,
    daemon: &'env Daemon<'env>,
    ended: std::sync::mpsc::Sender<()>,
) -> Handle<'scope> {
    let name = unit.config.consumer.name.clone();
    let outputs = exactly_once_files(&unit.config);
    let config = unit.config.clone();
    let shared = unit.context.control.clone();
    let plugin = unit.plugin.clone();
    let steering: Steer = Arc::default();
    let ended_flag = Arc::new(AtomicBool::new(false));
    let thread = {
        let steering = steering.clone();
        let ended_flag = Arc::clone(&ended_flag);
        std::thread::Builder::new()
            .name(format!("consumer {name}"))
            .spawn_scoped(scope, move || {
                let _notice = EndNotice(ended, ended_flag);
                supervise(unit, daemon, &steering)
            })
    };
    Handle {
        name,
        outputs,
        plugin,
        config,
        handlers_refused: false,
        shared,
        steer: steering,
        thread,
        ended: ended_flag,
        unlisted: false,
    }
}

/// One consumer's life: run; after a failure wait and run a new instance; after a reload run
/// the replacement; until it stops as asked (or fails where there is no restart).
fn supervise(mut unit: Unit, daemon: &Daemon<'_>, steering: &Steer) -> Result<(), AppError> {
    let span = tracing::info_span!("consumer", name = %unit.config.consumer.name);
    let _span = span.enter();
    let shutdown = daemon.shutdown;
    let mut backoff = FIRST_BACKOFF;
    let mut restarts = 0u64;
    // The last failure, until a run lasts HEALTHY_RUN or a reload changes the consumer (the
    // operator's fix is a new start): a stop during a run that has not yet shown the consumer
    // healthy again ends the process as a failure, like one during the wait before it (exit 0
    // would say the consumer worked).
    let mut recovering: Option<String> = None;
    loop {
        // Its own stop flag: a pipeline stops itself after an error, and a reload stops it,
        // without stopping the others.
        let attempt_stop = shutdown.child();
        {
            let mut steering = steer(steering);
            if steering.retire {
                return Ok(());
            }
            if let Some(config) = steering.config.take() {
                // This run builds the new handlers itself: a swap not yet taken is moot.
                unit.config = config;
                unit.context.control.take_handler_swap();
                // A new config is a new start, not one more failure of the old.
                backoff = FIRST_BACKOFF;
                recovering = None;
            }
            if let Some(replacement) = steering.replacement.take() {
                unit.context.control.update(|status| {
                    status.plugin = replacement.config.consumer.plugin.label();
                    status.class = replacement.config.consumer.class.clone();
                });
                unit.context
                    .control
                    .set_pausable(!replacement.consumer.bus_owns_position());
                unit.config = replacement.config;
                unit.plugin = replacement.plugin;
                unit.consumer = Some(replacement.consumer);
                backoff = FIRST_BACKOFF;
                recovering = None;
            }
            steering.attempt = Some(attempt_stop.clone());
        }
        let started = Instant::now();
        unit.context.control.health().set_phase(Phase::Connecting);
        let attempt = match unit.consumer.take() {
            Some(consumer) => Ok(consumer),
            None => new_consumer(&unit.config, &unit.plugin),
        };
        let result = attempt.and_then(|consumer| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_consumer(
                    &unit.config,
                    &unit.plugin,
                    consumer,
                    &unit.context,
                    daemon.once,
                    &attempt_stop,
                )
            }))
            .unwrap_or_else(|_| Err(AppError::Runtime("the pipeline panicked".to_owned())))
        });
        {
            let mut steering = steer(steering);
            steering.attempt = None;
            if steering.retire {
                return Ok(());
            }
            if steering.replacement.is_some() && !shutdown.requested() {
                continue;
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            recovering = None;
        }
        let error = match result {
            Ok(()) if shutdown.requested() => {
                return match recovering {
                    Some(why) => Err(AppError::Runtime(format!(
                        "stopped {} s into restart {restarts}, before it ran {} s without \
                         failing; the failure before it: {why}",
                        started.elapsed().as_secs(),
                        HEALTHY_RUN.as_secs()
                    ))),
                    None => Ok(()),
                }
            }
            Ok(()) => return Ok(()),
            Err(error) if daemon.once || daemon.single || shutdown.requested() => {
                return Err(error)
            }
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
        recovering = Some(why.clone());
        tracing::error!(
            "failed: {why}; restart {restarts} in {} s (the other consumers go on)",
            backoff.as_secs()
        );
        if let Some(metrics) = &unit.context.metrics {
            metrics.restarted();
        }
        // Shown for the whole wait: the time it ends stays true however late it is read.
        let at = chrono::Utc::now()
            + chrono::Duration::from_std(backoff).unwrap_or_else(|_| chrono::Duration::zero());
        let state = format!(
            "{why} (restart {restarts} at {} UTC, {} s after the failure)",
            at.format("%H:%M:%S"),
            backoff.as_secs()
        );
        unit.context.control.update(|status| {
            status.note_error(why.clone());
        });
        unit.context
            .control
            .health()
            .set_phase(Phase::Failed(state));
        // The wait ends early for a stop, a retirement, or a reload that changed the consumer
        // (a replacement) or only its handlers (a new config): the operator's fix runs at once.
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if shutdown.requested() {
                return Err(error);
            }
            {
                let steering = steer(steering);
                if steering.retire || steering.replacement.is_some() || steering.config.is_some() {
                    tracing::info!("the reload cuts the wait short: starting again now");
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        unit.context.control.health().set_phase(Phase::Connecting);
    }
}

/// Publishes the consumers operators see (`ctl status`, `/health`, the metrics, systemd):
/// every one but those a reload removed that have stopped (one still stopping shows
/// `stopping`).
fn publish(handles: &mut [Handle<'_>], daemon: &Daemon<'_>) {
    for handle in handles.iter_mut() {
        handle.unlisted = handle.finished() && steer(&handle.steer).retire;
    }
    let shown: Vec<&Handle<'_>> = handles.iter().filter(|h| !h.unlisted).collect();
    daemon
        .registry
        .set_consumers(shown.iter().map(|h| h.shared.clone()).collect());
    if let Some(metrics) = &daemon.metrics {
        let names: Vec<String> = shown.iter().map(|h| h.name.clone()).collect();
        metrics.keep_only(&names);
    }
}

/// The `jsonl` files a consumer's handlers write.
fn exactly_once_files(config: &Config) -> Vec<PathBuf> {
    config
        .handlers
        .iter()
        .filter_map(|h| h.kind.exactly_once_file().map(crate::config::same_file_key))
        .collect()
}

/// What a reload found for one consumer of the new config.
enum Change {
    Same,
    /// Only its handlers changed: swapped in the running pipeline.
    Handlers(Config),
    Changed(Replacement),
    Added(Unit),
}

/// How long a reload waits for removed consumers to stop before it starts new ones (one may
/// take over the other's files: a renamed consumer).
const RETIRE_WAIT: Duration = Duration::from_secs(15);

/// Reads the config again and applies it whole (`Ok`: what changed), or logs why not and
/// changes nothing (`Err`: the first problem).
fn reload<'scope, 'env>(
    scope: &'scope Scope<'scope, 'env>,
    handles: &mut Vec<Handle<'scope>>,
    daemon: &'env Daemon<'env>,
    process_config: &Config,
    ended: &std::sync::mpsc::Sender<()>,
) -> Result<String, String> {
    let path = daemon.config_path;
    tracing::info!("reloading {}", path.display());
    let refuse = |problems: &str| {
        for line in problems.lines() {
            tracing::error!("reload refused, the running config stays: {line}");
        }
        Err(problems.lines().next().unwrap_or_default().to_owned())
    };
    let configs = match Config::load_all(path) {
        Ok(configs) => configs,
        Err(errors) => return refuse(&errors.to_string()),
    };
    if let Some(first) = configs.first() {
        // What the whole process was started with (where the offsets, locks and socket are)
        // cannot move under running consumers: a consumer would start over from an empty
        // state dir, beside its own lock.
        if let Some(why) = crate::config::reload::process_refusal(process_config, first) {
            return refuse(&format!("{}: {why}", path.display()));
        }
    }
    // Everything is checked before anything changes.
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    for config in &configs {
        // A consumer a reload removed that has not stopped yet cannot come back yet.
        if handles
            .iter()
            .any(|h| h.name == config.consumer.name && !h.finished() && steer(&h.steer).retire)
        {
            problems.push(format!(
                "consumer '{}' is still stopping (a reload removed it): reload again once it \
                 stopped",
                config.consumer.name
            ));
        }
        // An exactly-once file may not change hands between two running consumers.
        for file in exactly_once_files(config) {
            if let Some(other) = handles.iter().find(|h| {
                h.name != config.consumer.name && !h.finished() && h.outputs.contains(&file)
            }) {
                problems.push(format!(
                    "consumer '{}' would write {}, which consumer '{}' writes now: an \
                     exactly-once file changes hands only with a restart",
                    config.consumer.name,
                    file.display(),
                    other.name
                ));
            }
        }
    }
    for config in configs {
        let running = handles
            .iter()
            .find(|h| h.name == config.consumer.name && !h.finished());
        // An upgraded plugin library (its file replaced) counts as a changed consumer.
        let upgraded = running.filter(|h| h.plugin.changed_on_disk());
        if let Some(handle) = upgraded {
            tracing::info!(
                "reload: consumer '{}': its plugin {} {} changed on disk: it restarts on the \
                 new code",
                handle.name,
                if handle.plugin.is_executable() {
                    "executable"
                } else {
                    "library"
                },
                handle.plugin.path().display()
            );
        }
        // The plan from the effective configs; what the config cannot see is added to it.
        let plan =
            running.map(
                |h| match crate::config::reload::consumer_plan(&h.config, &config) {
                    ConsumerPlan::Unchanged if h.handlers_refused => ConsumerPlan::HandlersOnly,
                    plan => plan,
                },
            );
        let same_pipeline = upgraded.is_none()
            && matches!(
                plan,
                Some(ConsumerPlan::Unchanged | ConsumerPlan::HandlersOnly)
            );
        let same_handlers = plan == Some(ConsumerPlan::Unchanged);
        if same_pipeline && same_handlers {
            changes.push((config.consumer.name.clone(), Change::Same));
            continue;
        }
        for handler in &config.handlers {
            if let Err(problem) =
                crate::handlers::check_handler(handler, &config.base_dir, &config.plugin_dirs)
            {
                problems.push(
                    config
                        .handler_error_at(
                            &handler.name,
                            problem.key,
                            format!("handler '{}': {problem}", handler.name),
                        )
                        .to_string(),
                );
            }
        }
        if same_pipeline {
            changes.push((config.consumer.name.clone(), Change::Handlers(config)));
            continue;
        }
        let (plugin, consumer) = match build_consumer(&config) {
            Ok(built) => built,
            Err(error) => {
                problems.push(error.to_string());
                continue;
            }
        };
        let name = config.consumer.name.clone();
        if running.is_some() {
            changes.push((
                name,
                Change::Changed(Replacement {
                    config,
                    plugin,
                    consumer,
                }),
            ));
            continue;
        }
        // A consumer new to this process: its lock first (another daemon may run it).
        let lock = match ConsumerLock::acquire(&config.process.state_dir, &name) {
            Ok(lock) => lock,
            Err(error) => {
                problems.push(error.to_string());
                continue;
            }
        };
        let control = Arc::new(Shared::new(
            &name,
            &config.consumer.plugin.label(),
            &config.consumer.class,
        ));
        if consumer.bus_owns_position() {
            control.forbid_pause();
        }
        let metrics = daemon.metrics.as_ref().map(|m| m.consumer(&name));
        changes.push((
            name,
            Change::Added(Unit {
                config,
                plugin,
                consumer: Some(consumer),
                context: ConsumerContext {
                    control,
                    metrics,
                    lock,
                    ready: Some(crate::service::ready_hook()),
                },
            }),
        ));
    }
    if !problems.is_empty() {
        return refuse(&problems.join("\n"));
    }
    let (mut same, mut swapped, mut restarted, mut added, mut removed) = (0, 0, 0, 0, 0);
    let kept: Vec<String> = changes.iter().map(|(name, _)| name.clone()).collect();
    for handle in handles.iter().filter(|h| !h.finished()) {
        if !kept.contains(&handle.name) {
            tracing::info!(
                "reload: consumer '{}' left the config: stopping it",
                handle.name
            );
            let mut steering = steer(&handle.steer);
            steering.retire = true;
            if let Some(stop) = &steering.attempt {
                stop.request();
                handle.shared.health().stop_asked();
            }
            removed += 1;
        }
    }
    // Removed consumers stop first: a new one may take over their files (a renamed consumer).
    let deadline = std::time::Instant::now() + RETIRE_WAIT;
    while handles
        .iter()
        .any(|h| !h.finished() && steer(&h.steer).retire)
    {
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                "reload: a removed consumer did not stop within {} s; starting the new ones",
                RETIRE_WAIT.as_secs()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (name, change) in changes {
        match change {
            Change::Same => same += 1,
            Change::Handlers(config) => {
                let Some(handle) = handles.iter_mut().find(|h| h.name == name && !h.finished())
                else {
                    continue;
                };
                tracing::info!(
                    "reload: consumer '{name}': handlers changed: swapping them at the next \
                     batch boundary (the bus stays open)"
                );
                handle.config = config.clone();
                handle.handlers_refused = false;
                handle.outputs = exactly_once_files(&config);
                handle.shared.offer_handlers(crate::control::HandlerSwap {
                    handlers: config.handlers.clone(),
                    base_dir: config.base_dir.clone(),
                    plugin_dirs: config.plugin_dirs.clone(),
                });
                steer(&handle.steer).config = Some(config);
                swapped += 1;
            }
            Change::Changed(replacement) => {
                let Some(handle) = handles.iter_mut().find(|h| h.name == name && !h.finished())
                else {
                    continue;
                };
                tracing::info!(
                    "reload: consumer '{name}' changed: restarting it at a batch boundary (what \
                     it handled is committed; it resumes right after)"
                );
                handle.config = replacement.config.clone();
                handle.handlers_refused = false;
                handle.plugin = replacement.plugin.clone();
                handle.outputs = exactly_once_files(&replacement.config);
                let mut steering = steer(&handle.steer);
                steering.replacement = Some(replacement);
                if let Some(stop) = &steering.attempt {
                    stop.request();
                    handle.shared.health().stop_asked();
                }
                restarted += 1;
            }
            Change::Added(unit) => {
                tracing::info!("reload: consumer '{name}' is new: starting it");
                handles.push(spawn(scope, unit, daemon, ended.clone()));
                added += 1;
            }
        }
    }
    publish(handles, daemon);
    let stopping = handles
        .iter()
        .filter(|h| !h.finished() && steer(&h.steer).retire)
        .count();
    let summary = format!(
        "reloaded: {same} consumer(s) unchanged, {swapped} with new handlers, {restarted} \
         restarted, {added} started, {} stopped{}",
        removed - stopping,
        if stopping > 0 {
            format!(
                ", {stopping} still stopping (a handler holds its event in hand: shown as \
                 stopping until it has stopped)"
            )
        } else {
            String::new()
        }
    );
    tracing::info!("{summary}");
    Ok(summary)
}
