//! The consume → dispatch → commit loop.
//!
//! A reader thread drives the plugin (its `poll` blocks) and sends full batches through a
//! bounded channel; the dispatcher (the calling thread) hands each event to the handlers whose
//! match selects it, and commits the offset cache on the configured cadence. Empty batches go
//! back to the reader for reuse, so memory is bounded by `queue_batches` batches and no event
//! data is allocated per event once the batches are warm.
//!
//! One job per file: `reader` (the reader thread: connect, poll, reconnect, serve, lag),
//! `commit` (the commit bookkeeping and cadence), `dispatch` (match, failure policies,
//! per-object queueing, rewind, gaps), `deliver` (one event to one handler with retries, also
//! `buslink replay`'s), `queue_ops` (the socket's requests and the error queue's timed
//! retries), `replay_job` (`ctl replay`: a past range delivered between live batches), `swap`
//! (a reload's handler swap); this file holds the run loop that ties them (pause, held
//! batch, stop grace) and the types they share.
//!
//! **Architecture invariant:** an offset is committed only after every matching handler
//! returned `Ok` for its event and every handler synced (at-least-once delivery: after a crash
//! or a handler failure, events after the last commit are delivered again).

use crate::config::{CommitPolicy, GapPolicy, StartPosition};
use crate::dead_letter::DeadLetterFile;
use crate::error_queue::{ErrorQueue, QueueError};
use crate::handlers::ConfiguredHandler;
use crate::health::{Health, Phase};
use crate::hermes_mode::HermesFilter;
use crate::lock::LockWatch;
use crate::metrics::{HandlerCounters, Metrics};
use crate::offsets::{CacheError, OffsetCache, OffsetRecord};
use crate::plugin::{ConsumerError, LibraryWatch, PluginConsumer};
use crate::shutdown::Shutdown;
use buslink_plugin_api::{EventBatch, Offset};
use crossbeam_channel::RecvTimeoutError;
use std::thread;
use std::time::Duration;

mod commit;
mod deliver;
mod dispatch;
mod queue_ops;
mod reader;
mod replay_job;
mod swap;

use commit::Committer;
pub use deliver::{deliver, Delivery};
use dispatch::Dispatcher;
use queue_ops::{serve_queue_requests, QueueRetries, Replays};
pub use reader::Resume;
use reader::{read_loop, shutdown_reader, ReaderMessage, ReturnedBatch};
pub use replay_job::ReplaySource;
use swap::swap_handlers;

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    /// Stop when the bus is drained (one poll timed out with no event) instead of waiting.
    pub once: bool,
    pub timeout: Duration,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub queue_batches: usize,
    pub commit: CommitPolicy,
    /// Where to start when the cache is empty.
    pub start: StartPosition,
    /// The first wait after a transient bus error; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often to log a progress line (`None`: never).
    pub stats_interval: Option<Duration>,
    /// Events waiting and none handled for this long is the `stalled` state.
    pub stall_after: Duration,
    /// Hermes mode: which events reach handlers.
    pub hermes: Option<HermesFilter>,
    /// The consumer plugin's library file, watched for changes under the daemon.
    pub library: Option<LibraryWatch>,
    /// What a gap reported by the plugin does.
    pub on_gap: GapPolicy,
    /// The consumer's lock file, watched for deletion or replacement.
    pub lock: Option<LockWatch>,
    /// The metrics and health state, when `[metrics]` is on.
    pub metrics: Option<std::sync::Arc<Metrics>>,
    /// What the control socket shows and the pause it asks for.
    pub control: Option<std::sync::Arc<crate::steering::Shared>>,
    /// Who hears that the run is up (the service manager), once the reader runs.
    pub ready: Option<crate::health::Ready>,
}

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Consumer(#[from] ConsumerError),
    #[error("handler '{handler}' failed on the event at offset {offset} after {attempts} attempt(s): {message}; offset not committed, the event will be delivered again at the next start")]
    Handler {
        handler: String,
        offset: String,
        attempts: u32,
        message: String,
    },
    #[error("dead-letter file {}: {message}", .path.display())]
    DeadLetter {
        path: std::path::PathBuf,
        message: String,
    },
    /// A stop was asked for while a handler was being retried: the event was not handled.
    #[error("stopped while retrying handler '{handler}' on offset {offset}")]
    Interrupted { handler: String, offset: String },
    #[error("handler '{handler}': {message}")]
    HandlerSync { handler: String, message: String },
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("the consumer thread stopped unexpectedly")]
    ReaderLost,
    #[error("{0}")]
    LockLost(String),
    #[error(
        "gap on the bus: {range} ({count}) are gone before this consumer read them; stopped \
             before the next event (on_gap = \"stop\"); the events before the gap were handled \
             and committed. To go on past it: on_gap = \"warn\", or `buslink offsets set`"
    )]
    Gap { range: String, count: String },
}

/// Where events go: the handlers, and where failed events are kept.
pub struct Outputs<'a> {
    /// A `Vec`: a reload may swap them for new ones at a batch boundary.
    pub handlers: &'a mut Vec<ConfiguredHandler>,
    pub dead_letters: &'a mut DeadLetterFile,
    pub error_queue: &'a mut ErrorQueue,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    /// Events handled by this run.
    pub handled_this_run: u64,
    /// Events handled since the cache was created (this run included).
    pub events_handled: u64,
    pub last_committed: Option<Offset>,
    pub bus_ended: bool,
    /// The plugin said it reached the end (`--once`), or the bus ended the stream.
    pub drained: bool,
    /// `--once` ended on a plugin that cannot tell whether its bus is drained
    /// ([`PollStatus::Idle`]): no event came within the timeout, that is all that is known.
    pub drained_unknown: bool,
    /// Gaps the plugin reported in this run, and the events they are known to hold.
    pub gaps: u64,
    pub events_lost: u64,
    /// The plugin's counters at the end of the run.
    pub counters: Vec<(String, u64)>,
}

/// The consumer's facts, where the monitor reads them (the control socket's shared state).
fn health(options: &PipelineOptions) -> Option<&Health> {
    options
        .control
        .as_deref()
        .map(|control| control.health().as_ref())
}

/// Tells the monitor where the run is; a reason to wait or fail is also the last error.
fn set_phase(options: &PipelineOptions, phase: Phase) {
    if let Some(control) = &options.control {
        if let Phase::Waiting(why) | Phase::Failed(why) = &phase {
            let why = why.clone();
            control.update(|status| status.note_error(why));
        }
        control.health().set_phase(phase);
    }
}

/// Whether the control socket asked for a pause.
fn paused(options: &PipelineOptions) -> bool {
    options.control.as_ref().is_some_and(|c| c.paused())
}

/// Runs the pipeline until the bus is drained (`once`), ends, fails, or a stop is asked for.
/// Returns the consumer (closed) with the summary. `replay_source` makes the consumer
/// instances of `ctl replay` jobs (`None`: no replay).
pub fn run(
    consumer: PluginConsumer,
    cached: Option<OffsetRecord>,
    outputs: Outputs<'_>,
    cache: &OffsetCache,
    options: PipelineOptions,
    shutdown: &Shutdown,
    replay_source: Option<ReplaySource<'_>>,
) -> Result<RunSummary, PipelineError> {
    let Outputs {
        handlers,
        dead_letters,
        error_queue,
    } = outputs;
    // A bus that keeps the position gets the next batch only once the one before was
    // handled, committed and acknowledged: one batch goes round.
    let bus_owned = consumer.bus_owns_position();
    let in_flight = if bus_owned {
        1
    } else {
        options.queue_batches + 1
    };
    let (full_tx, full_rx) = crossbeam_channel::bounded::<ReaderMessage>(options.queue_batches);
    let (empty_tx, empty_rx) = std::sync::mpsc::channel::<ReturnedBatch>();
    for _ in 0..in_flight {
        let _ = empty_tx.send(ReturnedBatch {
            batch: EventBatch::new(options.batch_size, options.batch_bytes),
            committed: None,
        });
    }
    let resume = Resume {
        point: cached.as_ref().and_then(OffsetCache::resume_point),
        last_timestamp: cached.as_ref().and_then(|record| record.last_timestamp),
        next_offset: cached
            .as_ref()
            .and_then(|record| record.next_offset.clone()),
    };
    let mut committer = Committer {
        cache,
        writer: cache.writer(options.commit.fsync)?,
        policy: options.commit,
        handled_total: cached.as_ref().map_or(0, |record| record.events_handled),
        pending: None,
        pending_count: 0,
        pending_since: None,
        gaps: 0,
        events_lost: 0,
        last_record: cached.clone(),
        last_committed: cached
            .as_ref()
            .and_then(|record| record.last_offset.clone()),
        hermes: options.hermes.clone(),
        metrics: options.metrics.as_deref(),
        control: options.control.as_deref(),
    };
    let handled_before = committer.handled_total;
    if let Some(health) = health(&options) {
        health.begin_run(
            handled_before,
            options.stall_after.as_secs(),
            options.stats_interval.map_or(0, |i| i.as_secs()),
        );
    }
    // What a restart resumes from is committed already: status and metrics say so from the
    // start (a commit-age alert must not fire because the daemon restarted on an idle bus).
    if let Some(record) = cached.as_ref() {
        if let Some(control) = &options.control {
            let queued = error_queue.events().len();
            control.update(|status| {
                status.committed_offset = record.last_offset.as_ref().map(ToString::to_string);
                status.committed_time = Some(record.updated_at);
                status.error_queue = queued;
                status.events_handled = 0;
            });
        }
        if let Some(metrics) = &options.metrics {
            metrics.set_last_commit(record.updated_at);
        }
    }
    let reader = {
        let shutdown = shutdown.clone();
        let options = options.clone();
        // The reader's log lines carry the consumer's span (its name, in a daemon of several).
        let span = tracing::Span::current();
        thread::Builder::new()
            .name("consumer".into())
            .spawn(move || {
                let _span = span.entered();
                read_loop(consumer, resume, options, shutdown, full_tx, empty_rx)
            })
            .map_err(|_| PipelineError::ReaderLost)?
    };

    if let Some(ready) = &options.ready {
        ready.announce(
            &options
                .control
                .as_ref()
                .map(|control| control.name())
                .unwrap_or_default(),
            "connecting to the bus",
        );
    }
    let mut summary = RunSummary::default();
    let tick = Duration::from_millis(options.commit.every_ms.clamp(10, 200));
    let mut retries = QueueRetries::default();
    let mut positions = Vec::with_capacity(handlers.len());
    let mut library = options.library.clone();
    let mut lock = options.lock.clone();
    // A batch received while paused, handled first after the resume.
    // (with the index of its first event not handled yet: a pause may come mid-batch).
    let mut held: Option<(ReaderMessage, usize)> = None;
    if let Some(control) = &options.control {
        control.set_serving(true);
    }
    let counters_of = |handlers: &[ConfiguredHandler]| -> Vec<HandlerCounters> {
        options
            .metrics
            .as_deref()
            .map(|metrics| {
                handlers
                    .iter()
                    .map(|h| metrics.handler_counters(&h.name))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut handler_counters = counters_of(handlers);
    let mut replays = Replays {
        run: None,
        source: replay_source,
        batch_size: options.batch_size,
        timeout: options.timeout,
    };
    let outcome: Result<(), PipelineError> = loop {
        // A reload that changed only the handlers: swapped here, between two batches.
        if let Some(swap) = options
            .control
            .as_deref()
            .and_then(crate::steering::Shared::take_handler_swap)
        {
            match swap_handlers(
                options.control.as_deref(),
                swap,
                handlers,
                error_queue,
                &mut committer,
            ) {
                Ok(()) => handler_counters = counters_of(handlers),
                Err(error) => break Err(error),
            }
        }
        if let Some(control) = options.control.as_deref().filter(|c| c.has_requests()) {
            if let Err(error) =
                serve_queue_requests(control, handlers, error_queue, &mut committer, &mut replays)
            {
                break Err(error);
            }
        }
        if let Some(library) = library.as_mut() {
            library.check();
        }
        if let Some(Err(message)) = lock.as_mut().map(LockWatch::check) {
            break Err(PipelineError::LockLost(message));
        }
        // Paused through the control socket: what was handled is committed, batches already
        // read wait (handled first after the resume).
        if paused(&options) && !shutdown.requested() {
            if let Err(error) = committer.commit(handlers, error_queue) {
                break Err(error);
            }
            // In effect now: no event is in the handlers' hands (`ctl pause` waits for this).
            if let Some(health) = health(&options) {
                health.pause_taken(true);
            }
            shutdown.sleep(tick);
            continue;
        }
        if let Some(health) = health(&options) {
            health.pause_taken(false);
        }
        // A replay job fills the time no live batch waits (live batches go first).
        if let (Some(job), None, Some(control)) = (
            replays.run.as_mut(),
            held.as_ref(),
            options.control.as_deref(),
        ) {
            if full_rx.is_empty() && !shutdown.requested() {
                let live_waits = || !full_rx.is_empty();
                let step = job.step(
                    tick,
                    handlers,
                    error_queue,
                    &mut committer,
                    shutdown,
                    control,
                    &live_waits,
                );
                match step {
                    Ok(replay_job::Step::Running) => {}
                    Ok(replay_job::Step::Ended) => replays.run = None,
                    Err(error) => break Err(error),
                }
                let due = between_batches(
                    handlers,
                    error_queue,
                    &mut committer,
                    &mut retries,
                    Some(control),
                );
                if let Err(error) = due {
                    break Err(error);
                }
                continue;
            }
        }
        let (received, start) = match held.take() {
            Some((message, start)) => (Ok(message), start),
            None => (full_rx.recv_timeout(tick), 0),
        };
        let message = match received {
            // A batch read just before a pause waits for the resume.
            Ok(message @ ReaderMessage::Batch { .. })
                if paused(&options) && !shutdown.requested() =>
            {
                held = Some((message, start));
                continue;
            }
            Ok(message) => message,
            // A stop while the plugin is in a long call: what was handled is committed below
            // and the reader gets a bounded time to come back (`shutdown_reader`).
            Err(RecvTimeoutError::Timeout) if shutdown.requested() => break Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                let control = options.control.as_deref();
                let due =
                    between_batches(handlers, error_queue, &mut committer, &mut retries, control);
                if let Err(error) = due {
                    break Err(error);
                }
                continue;
            }
            // The reader stopped (a stop was asked for) and every batch it sent was handled.
            Err(RecvTimeoutError::Disconnected) if shutdown.requested() => break Ok(()),
            // Gone without a word (it panicked): never taken for a drained bus.
            Err(RecvTimeoutError::Disconnected) => break Err(PipelineError::ReaderLost),
        };
        match message {
            // A stop: batches queued but not handled are dropped (they come again).
            ReaderMessage::Batch { .. } if shutdown.requested() => break Ok(()),
            ReaderMessage::Batch {
                batch,
                next_after_last,
            } => {
                let mut dispatcher = Dispatcher {
                    handlers: &mut *handlers,
                    dead_letters: &mut *dead_letters,
                    error_queue: &mut *error_queue,
                    shutdown,
                    positions: &mut positions,
                    queued: Vec::new(),
                    on_gap: options.on_gap,
                    metrics: options.metrics.as_deref(),
                    counters: &handler_counters,
                    control: options.control.as_deref(),
                    health: health(&options),
                    replays: &mut replays,
                };
                let result =
                    dispatcher.dispatch_batch(&batch, start, &next_after_last, &mut committer);
                // Paused mid-batch: what was handled is committed; the rest waits, here.
                if let Ok(Some(paused_at)) = result {
                    held = Some((
                        ReaderMessage::Batch {
                            batch,
                            next_after_last,
                        },
                        paused_at,
                    ));
                    continue;
                }
                let result = result.map(|_| ());
                if bus_owned {
                    // Handled and durably committed before the bus stores the position: also
                    // when the batch stopped on a failure (what was handled before it is
                    // stored on the bus before the partitions go).
                    if let Err(error) = committer.commit(handlers, error_queue) {
                        let _ = empty_tx.send(ReturnedBatch {
                            batch,
                            committed: None,
                        });
                        break Err(result.err().unwrap_or(error));
                    }
                    let _ = empty_tx.send(ReturnedBatch {
                        batch,
                        committed: committer.last_committed.clone(),
                    });
                } else {
                    let _ = empty_tx.send(ReturnedBatch {
                        batch,
                        committed: None,
                    });
                }
                if let Err(error) = result {
                    break Err(error);
                }
                // A stop cut the batch short (or came just after it): the run ends here, and
                // the reader's end of the bus, still in the channel, is not this run's end (a
                // `--once` stopped so has not drained the bus).
                if shutdown.requested() {
                    break Ok(());
                }
                let control = options.control.as_deref();
                let due =
                    between_batches(handlers, error_queue, &mut committer, &mut retries, control);
                if let Err(error) = due {
                    break Err(error);
                }
            }
            ReaderMessage::Finished { ended, unknown } => {
                summary.bus_ended = ended;
                summary.drained = true;
                summary.drained_unknown = unknown;
                break Ok(());
            }
            ReaderMessage::Failed(error) => break Err(error.into()),
        }
    };
    match &outcome {
        Err(error) if !shutdown.requested() => {
            set_phase(&options, Phase::Failed(error.to_string()))
        }
        // A stop, a drained `--once`, or a bus that ended: this run is over.
        _ => set_phase(&options, Phase::Stopping),
    }
    if let Some(control) = &options.control {
        control.set_serving(false);
        if let Some(mut job) = replays.run.take() {
            job.cancel(
                "the consumer stopped (a stop, a restart or a reload): run it again",
                control,
            );
        }
    }
    // Whatever happened, keep what was fully handled, durably.
    let final_commit = committer
        .commit(handlers, error_queue)
        .and_then(|()| Ok(committer.writer.finish()?));
    if bus_owned && final_commit.is_ok() {
        // The reader acknowledges it before the consumer is closed: the bus stores it too.
        let _ = empty_tx.send(ReturnedBatch {
            batch: EventBatch::new(1, 1),
            committed: committer.last_committed.clone(),
        });
    }
    drop(full_rx);
    drop(empty_tx);
    let counters = shutdown_reader(reader, shutdown);
    let last_committed = committer
        .last_committed
        .as_ref()
        .map_or_else(|| "none".to_owned(), |offset| offset.to_string());
    let handled_this_run = committer.handled_total - handled_before;
    match outcome {
        Err(PipelineError::Interrupted { handler, offset }) => {
            tracing::warn!("stopped while retrying handler '{handler}'; offset {offset} not committed, it will be delivered again");
        }
        Err(error) => {
            // What was read before the failure, so the error line is never the only news.
            tracing::info!(
                "stopped on an error: {handled_this_run} events handled in this run, last \
                 committed offset {last_committed}{}{}",
                crate::health::counters_text(committer.gaps, committer.events_lost, &counters),
                if final_commit.is_ok() {
                    ""
                } else {
                    " (the final commit failed too)"
                }
            );
            return Err(error);
        }
        Ok(()) => {}
    }
    final_commit?;
    summary.handled_this_run = handled_this_run;
    summary.gaps = committer.gaps;
    summary.events_lost = committer.events_lost;
    summary.counters = counters;
    summary.events_handled = committer.handled_total;
    summary.last_committed = committer.last_committed;
    Ok(summary)
}

/// What is due between two batches (or while none comes): the commit its cadence asks for,
/// then the error queue's timed retries.
fn between_batches(
    handlers: &mut [ConfiguredHandler],
    error_queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
    retries: &mut QueueRetries,
    control: Option<&crate::steering::Shared>,
) -> Result<(), PipelineError> {
    if committer.due() {
        committer.commit(handlers, error_queue)?;
    }
    retries.run_due(handlers, error_queue, committer, control)
}
