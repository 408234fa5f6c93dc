//! The consume → dispatch → commit loop.
//!
//! A reader thread drives the plugin (its `poll` blocks) and sends full batches through a
//! bounded channel; the dispatcher (the calling thread) hands each event to the handlers whose
//! match selects it, and commits the offset cache on the configured cadence. Empty batches go
//! back to the reader for reuse, so memory is bounded by `queue_batches` batches and no event
//! data is allocated per event once the batches are warm.
//!
//! **Architecture invariant:** an offset is committed only after every matching handler
//! returned `Ok` for its event and every handler synced (at-least-once delivery: after a crash
//! or a handler failure, events after the last commit are delivered again).

use crate::config::{CommitPolicy, FailurePolicy, GapPolicy, StartPosition};
use crate::dead_letter::DeadLetterFile;
use crate::error_queue::{object_key, ErrorQueue, QueueError};
use crate::handlers::{ConfiguredHandler, DispatchedEvent};
use crate::health::{Health, Phase, LAG_REFRESH};
use crate::hermes_mode::HermesFilter;
use crate::lock::LockWatch;
use crate::metrics::{HandlerCounters, Metrics, Outcome};
use crate::offsets::{CacheError, CacheWriter, OffsetCache, OffsetRecord, ResumePoint};
use crate::plugin::{ConsumerError, LibraryWatch, PluginConsumer};
use crate::shutdown::Shutdown;
use buslink_plugin_api::{EventBatch, Gap, Offset, PollStatus};
use chrono::{DateTime, SubsecRound, Utc};
use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

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

enum ReaderMessage {
    /// Events, with the offset that follows the last of them (when the bus defines one).
    Batch {
        batch: EventBatch,
        next_after_last: Option<Offset>,
    },
    /// `--once` and the bus is drained (`unknown`: the plugin cannot tell, no event came in
    /// time), or the bus will never deliver more (`ended`).
    Finished {
        ended: bool,
        unknown: bool,
    },
    Failed(ConsumerError),
}

/// Positions the consumer: at the resume point, else at the configured start.
fn position(
    consumer: &mut PluginConsumer,
    resume: Option<&ResumePoint>,
    start: &StartPosition,
) -> Result<(), ConsumerError> {
    match (resume, start) {
        (Some(ResumePoint::After(offset)), _) => consumer.seek_after(offset),
        (Some(ResumePoint::At(offset)), _) => consumer.seek(offset),
        (None, StartPosition::Beginning) => consumer.seek_to_beginning(),
        (None, StartPosition::End) => consumer.seek_to_end(),
        (None, StartPosition::At(offset)) => consumer.seek(offset),
    }
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
            control.update(|status| status.last_error = Some(why));
        }
        control.health().set_phase(phase);
    }
}

/// Asks the plugin for its lag and counters (the reader's thread: the plugin is called from
/// one thread at a time), at most every [`LAG_REFRESH`].
fn refresh_bus_figures(
    consumer: &mut PluginConsumer,
    options: &PipelineOptions,
    asked: &mut Option<Instant>,
) {
    if asked.is_some_and(|at| at.elapsed() < LAG_REFRESH) {
        return;
    }
    *asked = Some(Instant::now());
    if let Some(health) = health(options) {
        health.bus_answered(consumer.lag(), consumer.counters());
    }
}

/// Whether the control socket asked for a pause.
fn paused(options: &PipelineOptions) -> bool {
    options.control.as_ref().is_some_and(|c| c.paused())
}

/// A batch the dispatcher is done with, going back to the reader; `committed`: the offset of
/// the last event committed, for a bus that keeps the position (acknowledged before the next
/// poll).
struct ReturnedBatch {
    batch: EventBatch,
    committed: Option<Offset>,
}

/// Where the reader resumes after a (re)connection, and the timestamp of the event there.
#[derive(Clone, Debug, Default)]
pub struct Resume {
    pub point: Option<ResumePoint>,
    /// The timestamp of the last event handled (`point` is `After` it), for
    /// `check_position`.
    pub last_timestamp: Option<DateTime<Utc>>,
    /// The cache's `next_offset`: for a consumer whose bus keeps the position, where this
    /// member last was (handed over with `seek`).
    pub next_offset: Option<Offset>,
}

/// Opens and positions the consumer, and lets it check that the last event handled is still
/// the one at that offset; transient errors are retried with backoff until a stop is asked
/// for (`Ok(false)`).
fn connect(
    consumer: &mut PluginConsumer,
    resume: &Resume,
    options: &PipelineOptions,
    shutdown: &Shutdown,
) -> Result<bool, ConsumerError> {
    let mut backoff = options.initial_backoff;
    loop {
        let attempt = consumer
            .open()
            .and_then(|()| consumer.set_timeout(Some(options.timeout)))
            .and_then(|()| consumer.set_stop_when_drained(options.once))
            .and_then(|()| {
                // A bus that keeps the position (a Kafka consumer group) resumes by itself; it
                // hears where this member last was, for what the bus has no position for.
                if consumer.bus_owns_position() {
                    return match &resume.next_offset {
                        Some(next) => consumer.seek(next),
                        None => Ok(()),
                    };
                }
                position(consumer, resume.point.as_ref(), &options.start)?;
                match (&resume.point, resume.last_timestamp) {
                    (Some(ResumePoint::After(last)), Some(timestamp)) => {
                        consumer.check_position(last, timestamp)
                    }
                    _ => Ok(()),
                }
            });
        match attempt {
            Ok(()) => return Ok(true),
            Err(error) if error.error.kind().is_transient() && !options.once => {
                tracing::warn!("{error}; retrying in {} ms", backoff.as_millis());
                set_phase(options, Phase::Waiting(error.to_string()));
                let _ = consumer.close();
                if !shutdown.sleep(backoff) {
                    return Ok(false);
                }
                backoff = (backoff * 2).min(options.max_backoff);
            }
            Err(error) => return Err(error),
        }
    }
}

fn read_loop(
    mut consumer: PluginConsumer,
    resume: Resume,
    options: PipelineOptions,
    shutdown: Shutdown,
    full: Sender<ReaderMessage>,
    empty: std::sync::mpsc::Receiver<ReturnedBatch>,
) -> PluginConsumer {
    // Where to resume after a reconnection: after the last event read, else the start point.
    let mut resume = resume;
    let mut spare: Option<EventBatch> = None;
    let finish = |message| {
        // The dispatcher may be gone already (it stopped on an error): nothing to tell it.
        let _ = full.send(message);
    };
    match connect(&mut consumer, &resume, &options, &shutdown) {
        Ok(true) => {
            tracing::info!(
                "plugin '{}' class '{}' open and positioned; consuming",
                consumer.plugin(),
                consumer.class()
            );
            set_phase(&options, Phase::Consuming);
        }
        Ok(false) => return consumer,
        Err(error) => {
            finish(ReaderMessage::Failed(error));
            return consumer;
        }
    }
    let mut backoff = options.initial_backoff;
    // When the plugin was last asked for its lag and counters.
    let mut asked: Option<Instant> = None;
    while !shutdown.requested() {
        let mut batch = match spare.take() {
            Some(batch) => batch,
            None => match wait_for_batch(&empty, &mut consumer, &options, &shutdown, &mut asked) {
                Ok(ReturnedBatch { batch, committed }) => {
                    if let Some(offset) = committed {
                        // A bus that keeps the position stores it now, before the next poll.
                        if let Err(error) = consumer.acknowledge(&offset) {
                            if error.error.kind().is_transient() {
                                tracing::warn!("{error}; stored with a later acknowledgement");
                            } else {
                                finish(ReaderMessage::Failed(error));
                                break;
                            }
                        }
                    }
                    batch
                }
                Err(Some(error)) => {
                    finish(ReaderMessage::Failed(error));
                    break;
                }
                Err(None) => break,
            },
        };
        batch.clear();
        // Paused: the bus stays open, nothing is read until resumed (the lag is still asked).
        while paused(&options) && !shutdown.requested() {
            refresh_bus_figures(&mut consumer, &options, &mut asked);
            shutdown.sleep(Duration::from_millis(50));
        }
        if shutdown.requested() {
            break;
        }
        let polled = consumer.poll(&mut batch);
        if polled.is_ok() {
            // Counted as read before the bus is asked: its figure starts after this batch.
            if let Some(health) = health(&options) {
                health.read(batch.len() as u64);
            }
            refresh_bus_figures(&mut consumer, &options, &mut asked);
        }
        match polled {
            // A batch with only a gap in it goes to the dispatcher too: it decides.
            Ok(PollStatus::Ready | PollStatus::Idle | PollStatus::Drained) if !batch.is_blank() => {
                backoff = options.initial_backoff;
                let last = batch.last();
                let next_after_last = last.and_then(|event| consumer.next_offset(event.offset));
                if let Some(last) = last {
                    resume.point = Some(ResumePoint::After(last.offset.to_owned()));
                    resume.last_timestamp = Some(last.timestamp);
                }
                let mut message = ReaderMessage::Batch {
                    batch,
                    next_after_last,
                };
                // A full queue (the handlers are slower than the bus): wait, asking the bus
                // for its lag meanwhile.
                let sent = loop {
                    match full.send_timeout(message, Duration::from_millis(250)) {
                        Ok(()) => break true,
                        Err(SendTimeoutError::Timeout(back)) if !shutdown.requested() => {
                            message = back;
                            refresh_bus_figures(&mut consumer, &options, &mut asked);
                        }
                        Err(_) => break false,
                    }
                };
                if !sent {
                    break;
                }
            }
            // `--once` stops at the first end it reaches: the bus's own "nothing more", or, from
            // a plugin that cannot tell, no event within the timeout (said so at the stop).
            Ok(status @ (PollStatus::Ready | PollStatus::Idle | PollStatus::Drained)) => {
                spare = Some(batch);
                if options.once && status != PollStatus::Ready {
                    finish(ReaderMessage::Finished {
                        ended: false,
                        unknown: status == PollStatus::Idle,
                    });
                    break;
                }
            }
            Ok(PollStatus::Ended) => {
                finish(ReaderMessage::Finished {
                    ended: true,
                    unknown: false,
                });
                break;
            }
            Err(error) if error.error.kind().is_transient() && !options.once => {
                spare = Some(batch);
                tracing::warn!("{error}; reconnecting in {} ms", backoff.as_millis());
                set_phase(&options, Phase::Waiting(error.to_string()));
                if let Some(metrics) = &options.metrics {
                    metrics.reconnected();
                }
                let _ = consumer.close();
                if !shutdown.sleep(backoff) {
                    break;
                }
                backoff = (backoff * 2).min(options.max_backoff);
                match connect(&mut consumer, &resume, &options, &shutdown) {
                    Ok(true) => set_phase(&options, Phase::Consuming),
                    Ok(false) => break,
                    Err(error) => {
                        finish(ReaderMessage::Failed(error));
                        break;
                    }
                }
            }
            Err(error) => {
                finish(ReaderMessage::Failed(error));
                break;
            }
        }
    }
    // What the dispatcher committed last, handed back as it stopped: a bus that keeps the
    // position stores it before the consumer is closed (every way of stopping). The dispatcher
    // may still be finishing the event in hand: waited for until it lets go of the channel.
    let last = if consumer.bus_owns_position() {
        std::iter::from_fn(|| empty.recv().ok())
            .filter_map(|returned| returned.committed)
            .last()
    } else {
        None
    };
    if let Some(offset) = last {
        if let Err(error) = consumer.acknowledge(&offset) {
            tracing::warn!("{error}; offset {offset} is in the offset cache only");
        }
    }
    consumer
}

/// Waits for a batch the dispatcher is done with; meanwhile asks the bus for its lag every
/// second and, for a bus that keeps the position, keeps it served (`serve`) four times a
/// second. `Err(None)`: the dispatcher is gone or a stop was asked for; `Err(Some(_))`: the
/// plugin failed.
fn wait_for_batch(
    empty: &std::sync::mpsc::Receiver<ReturnedBatch>,
    consumer: &mut PluginConsumer,
    options: &PipelineOptions,
    shutdown: &Shutdown,
    asked: &mut Option<Instant>,
) -> Result<ReturnedBatch, Option<ConsumerError>> {
    let bus_owned = consumer.bus_owns_position();
    loop {
        match empty.recv_timeout(Duration::from_millis(250)) {
            Ok(returned) => return Ok(returned),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(None),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if shutdown.requested() {
            // The dispatcher may still hand back what it committed: taken at the reader's end.
            return Err(None);
        }
        if bus_owned {
            match consumer.serve() {
                Ok(()) => {}
                Err(error) if error.error.kind().is_transient() => {
                    tracing::warn!("{error}");
                }
                Err(error) => return Err(Some(error)),
            }
        }
        refresh_bus_figures(consumer, options, asked);
    }
}

/// The dispatcher's commit bookkeeping.
struct Committer<'a> {
    cache: &'a OffsetCache,
    writer: CacheWriter,
    policy: CommitPolicy,
    handled_total: u64,
    /// The last event every matching handler accepted (offset, next offset, timestamp), not
    /// yet committed.
    pending: Option<(Offset, Option<Offset>, DateTime<Utc>)>,
    /// Gaps the plugin reported, and how many events they are known to hold.
    gaps: u64,
    events_lost: u64,
    pending_count: u64,
    pending_since: Option<Instant>,
    last_committed: Option<Offset>,
    /// The record of the last commit (or the cache's at start).
    last_record: Option<OffsetRecord>,
    hermes: Option<HermesFilter>,
    /// The metrics, when `[metrics]` is on.
    metrics: Option<&'a Metrics>,
    /// What the control socket shows.
    control: Option<&'a crate::steering::Shared>,
}

impl Committer<'_> {
    /// Commits the exactly-once outputs' lengths (the handlers synced) with the offset already
    /// committed: after events of the error queue were written on retry.
    fn commit_outputs(&mut self, handlers: &[ConfiguredHandler]) -> Result<(), PipelineError> {
        let mut record = self
            .last_record
            .clone()
            .unwrap_or_else(|| self.cache.record(None, None, self.handled_total));
        let outputs = crate::handlers::output_positions(handlers);
        if outputs == record.outputs {
            return Ok(());
        }
        record.outputs = outputs;
        record.updated_at = Utc::now().trunc_subsecs(3);
        self.writer.commit(&record)?;
        self.last_record = Some(record);
        Ok(())
    }

    /// Notes that events `from..to` of `batch` were handled by every matching handler.
    fn record(
        &mut self,
        batch: &EventBatch,
        from: usize,
        to: usize,
        next_after_last: &Option<Offset>,
    ) {
        let Some(last) = to.checked_sub(1).and_then(|index| batch.get(index)) else {
            return;
        };
        if to <= from {
            return;
        }
        // The next event is the one after the last handled: the next in the batch, or what
        // the bus says follows the batch.
        let next = match batch.get(to) {
            Some(following) => Some(following.offset.to_owned()),
            None => next_after_last.clone(),
        };
        let count = (to - from) as u64;
        self.handled_total += count;
        self.pending_count += count;
        // (Set at the first of them by the dispatcher, when it runs.)
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending = Some((last.offset.to_owned(), next, last.timestamp));
    }

    fn due(&self) -> bool {
        self.pending.is_some()
            && (self.pending_count >= self.policy.every_events
                || self.pending_since.is_some_and(|since| {
                    since.elapsed() >= Duration::from_millis(self.policy.every_ms)
                }))
    }

    fn commit(
        &mut self,
        handlers: &mut [ConfiguredHandler],
        queue: &mut ErrorQueue,
    ) -> Result<(), PipelineError> {
        let Some((last, next, last_timestamp)) = self.pending.take() else {
            return Ok(());
        };
        for_each_handler(handlers.iter_mut(), |h| h.sync())?;
        // Events queued for later retries must be on disk before their offsets are passed.
        queue.save()?;
        let mut record: OffsetRecord =
            self.cache
                .record(Some(last.clone()), next, self.handled_total);
        record.outputs = crate::handlers::output_positions(handlers);
        record.last_timestamp = Some(last_timestamp);
        if let Some(hermes) = &self.hermes {
            record.initstartoffset = Some(hermes.sequence.start.clone());
            record.initstopoffset = Some(hermes.sequence.stop.clone());
            record.initsync_done = hermes.initsync_done;
        }
        self.writer.commit(&record)?;
        self.last_record = Some(record);
        tracing::debug!("committed offset {last}");
        self.last_committed = Some(last);
        if let Some(metrics) = self.metrics {
            metrics.committed();
        }
        if let Some(control) = self.control {
            let (offset, queued) = (
                self.last_committed.as_ref().map(ToString::to_string),
                queue.events().len(),
            );
            control.update(|status| {
                status.error_queue = queued;
                status.committed_offset = offset;
                status.committed_time = Some(Utc::now());
            });
        }
        self.pending_count = 0;
        self.pending_since = None;
        Ok(())
    }
}

/// Runs the pipeline until the bus is drained (`once`), ends, fails, or a stop is asked for.
/// Returns the consumer (closed) with the summary.
pub fn run(
    consumer: PluginConsumer,
    cached: Option<OffsetRecord>,
    outputs: Outputs<'_>,
    cache: &OffsetCache,
    options: PipelineOptions,
    shutdown: &Shutdown,
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
            if let Err(error) = serve_queue_requests(control, handlers, error_queue, &mut committer)
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
            shutdown.sleep(tick);
            continue;
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
                if committer.due() {
                    if let Err(error) = committer.commit(handlers, error_queue) {
                        break Err(error);
                    }
                }
                if let Err(error) = retries.run_due(
                    handlers,
                    error_queue,
                    &mut committer,
                    options.control.as_deref(),
                ) {
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
                if committer.due() {
                    if let Err(error) = committer.commit(handlers, error_queue) {
                        break Err(error);
                    }
                }
                if let Err(error) = retries.run_due(
                    handlers,
                    error_queue,
                    &mut committer,
                    options.control.as_deref(),
                ) {
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

/// How long a stop waits for the plugin to return from the call it is in.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops the reader thread and closes the consumer; returns the plugin's last counters.
fn shutdown_reader(
    reader: thread::JoinHandle<PluginConsumer>,
    shutdown: &Shutdown,
) -> Vec<(String, u64)> {
    // The reader checks for a stop between polls; make sure it sees one.
    let stop_flag_was_set = shutdown.requested();
    if !stop_flag_was_set {
        shutdown.request();
    }
    // A plugin stuck in a call (a server flooding heartbeats, a hung read) cannot hold the stop
    // for long: after STOP_GRACE the process goes on without it (the offset is committed).
    let deadline = Instant::now() + STOP_GRACE;
    while !reader.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!(
                "the consumer plugin did not return from its call within {} s of the stop; \
                 leaving it without closing it (everything handled is committed)",
                STOP_GRACE.as_secs()
            );
            return Vec::new();
        }
        thread::sleep(Duration::from_millis(10));
    }
    match reader.join() {
        Ok(mut consumer) => {
            let counters = consumer.counters();
            if let Err(error) = consumer.close() {
                tracing::warn!("{error}");
            }
            counters
        }
        Err(_) => {
            tracing::error!("the consumer thread panicked");
            Vec::new()
        }
    }
}

/// Replaces the handlers by those of a reload, between two batches: what was handled is
/// committed first (the old handlers synced), the new ones are built with the output positions
/// just committed (an exactly-once file they keep is not cut), and their positions are
/// committed before the next event. New handlers that cannot be built leave the old ones.
fn swap_handlers(
    control: Option<&crate::steering::Shared>,
    swap: crate::steering::HandlerSwap,
    handlers: &mut Vec<ConfiguredHandler>,
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
) -> Result<(), PipelineError> {
    committer.commit(handlers, queue)?;
    let committed = committer
        .last_record
        .as_ref()
        .map(|record| record.outputs.clone())
        .unwrap_or_default();
    match crate::handlers::build(
        &swap.handlers,
        &swap.base_dir,
        &swap.plugin_dirs,
        &committed,
    ) {
        Ok(new) => {
            let names: Vec<&str> = new.iter().map(|h| h.name.as_str()).collect();
            tracing::info!(
                "reload: handlers swapped at a batch boundary: {}",
                names.join(", ")
            );
            *handlers = new;
            committer.commit_outputs(handlers)?;
            crate::error_queue::warn_orphans(queue, &swap.handlers);
        }
        Err(problems) => {
            tracing::error!(
                "reload: the new handlers could not be built; the old ones stay (the next \
                 reload tries again): {}",
                problems.join("; ")
            );
            if let Some(control) = control {
                control.note_swap_failure();
            }
        }
    }
    Ok(())
}

/// Carries out the error-queue commands of the control socket (`ctl errors`), between batches.
fn serve_queue_requests(
    control: &crate::steering::Shared,
    handlers: &mut [ConfiguredHandler],
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
) -> Result<(), PipelineError> {
    use crate::steering::QueueCommand;
    let name = control.name();
    for request in control.take_requests() {
        let answer = match &request.command {
            QueueCommand::List { json } => queue.describe(&name, *json),
            QueueCommand::Retry { id: Some(id) } if queue.get(*id).is_none() => {
                format!("error: consumer '{name}' has no queued event #{id}\n")
            }
            QueueCommand::Retry { id } => {
                let chosen: Vec<usize> = handlers
                    .iter()
                    .enumerate()
                    .filter(|(_, handler)| {
                        handler.on_failure == FailurePolicy::ErrorQueue
                            && match id {
                                Some(id) => {
                                    queue.get(*id).is_some_and(|e| e.handler == handler.name)
                                }
                                None => queue.holds_any(&handler.name),
                            }
                    })
                    .map(|(index, _)| index)
                    .collect();
                let handled = retry_handlers(handlers, &chosen, *id, queue, committer)?;
                format!(
                    "consumer '{name}': {handled} queued event(s) handled, {} left\n",
                    queue.events().len()
                )
            }
            QueueCommand::Drop { ids } => {
                let ids: Vec<u64> = match ids {
                    Some(ids) => ids.clone(),
                    None => queue.events().iter().map(|e| e.id).collect(),
                };
                match ids.iter().find(|id| queue.get(**id).is_none()) {
                    Some(missing) => {
                        format!("error: consumer '{name}' has no queued event #{missing}\n")
                    }
                    None => {
                        for id in &ids {
                            queue.remove(*id);
                        }
                        queue.save()?;
                        tracing::info!(
                            "dropped {} queued event(s) through the control socket",
                            ids.len()
                        );
                        format!(
                            "consumer '{name}': dropped {} event(s), {} left\n",
                            ids.len(),
                            queue.events().len()
                        )
                    }
                }
            }
        };
        let left = queue.events().len();
        control.update(|status| status.error_queue = left);
        let _ = request.reply.send(answer);
    }
    Ok(())
}

/// Retries of the error queue, on each handler's `retry_interval`.
#[derive(Default)]
struct QueueRetries {
    last: std::collections::HashMap<String, Instant>,
}

impl QueueRetries {
    /// Tries the oldest queued event of each object whose handler's interval has passed; after
    /// a success the object's next events follow at once, in order.
    fn run_due(
        &mut self,
        handlers: &mut [ConfiguredHandler],
        queue: &mut ErrorQueue,
        committer: &mut Committer<'_>,
        control: Option<&crate::steering::Shared>,
    ) -> Result<(), PipelineError> {
        if queue.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let due: Vec<usize> = handlers
            .iter()
            .enumerate()
            .filter(|(_, handler)| {
                handler.on_failure == FailurePolicy::ErrorQueue
                    && queue.holds_any(&handler.name)
                    && now.duration_since(*self.last.entry(handler.name.clone()).or_insert(now))
                        >= handler.retry_interval
            })
            .map(|(index, _)| index)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for &index in &due {
            self.last.insert(handlers[index].name.clone(), now);
        }
        retry_handlers(handlers, &due, None, queue, committer)?;
        if let Some(control) = control {
            let left = queue.events().len();
            control.update(|status| status.error_queue = left);
        }
        Ok(())
    }
}

/// Tries the queued events of the handlers at `chosen` (only the object of `only` when given),
/// as the retry interval and `ctl errors retry` do: what was handled is committed first (with
/// the events it queued), the retried handlers are synced, their outputs' new lengths are
/// committed before the queue that no longer holds what they took is saved (a crash in between
/// repeats a retried event rather than cutting it out of its file). Returns how many were
/// handled.
fn retry_handlers(
    handlers: &mut [ConfiguredHandler],
    chosen: &[usize],
    only: Option<u64>,
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
) -> Result<usize, PipelineError> {
    committer.commit(handlers, queue)?;
    let mut handled = 0;
    for &index in chosen {
        handled += crate::error_queue::retry_queued(&mut handlers[index], queue, only);
    }
    for_each_handler(
        handlers
            .iter_mut()
            .enumerate()
            .filter(|(index, _)| chosen.contains(index))
            .map(|(_, handler)| handler),
        |h| h.sync(),
    )?;
    committer.commit_outputs(handlers)?;
    queue.save()?;
    Ok(handled)
}

/// Runs `step` (flush or sync) on each handler; the first failure names its handler.
fn for_each_handler<'a>(
    handlers: impl Iterator<Item = &'a mut ConfiguredHandler>,
    step: impl Fn(&mut dyn crate::handlers::Handler) -> Result<(), crate::handlers::HandlerError>,
) -> Result<(), PipelineError> {
    for handler in handlers {
        step(handler.handler.as_mut()).map_err(|e| PipelineError::HandlerSync {
            handler: handler.name.clone(),
            message: e.message,
        })?;
    }
    Ok(())
}

/// How delivering one event to one handler ended.
pub enum Delivery {
    Done,
    Failed { error: String, attempts: u32 },
    Interrupted,
}

/// Gives one event to one handler, retrying with exponential backoff as configured.
pub fn deliver(
    handler: &mut ConfiguredHandler,
    event: &DispatchedEvent<'_>,
    shutdown: &Shutdown,
    counters: Option<&HandlerCounters>,
    control: Option<&crate::steering::Shared>,
) -> Delivery {
    let mut wait = handler.retry.base;
    let mut attempt = 1;
    let count = |outcome| {
        if let Some(counters) = counters {
            counters.count(outcome);
        }
    };
    loop {
        match handler.handler.handle(event) {
            Ok(()) => {
                count(Outcome::Success);
                return Delivery::Done;
            }
            Err(error) if attempt >= handler.retry.attempts => {
                count(Outcome::Failure);
                return Delivery::Failed {
                    error: error.message,
                    attempts: attempt,
                };
            }
            Err(error) => {
                count(Outcome::Retry);
                let problem = format!(
                    "handler '{}' failed on offset {} (attempt {attempt} of {}): {}",
                    handler.name,
                    event.offset_text(),
                    handler.retry.attempts,
                    error.message,
                );
                tracing::warn!("{problem}; retrying in {} ms", wait.as_millis());
                // `status` shows why the consumer is not moving while it retries.
                if let Some(control) = control {
                    control.update(|status| status.last_error = Some(problem));
                }
                // In steps of a second at most: a stop is heard during a long wait.
                let until = Instant::now() + wait;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    if !shutdown.sleep(left.min(Duration::from_secs(1))) {
                        return Delivery::Interrupted;
                    }
                }
                wait = (wait * 2).min(handler.retry.max);
                attempt += 1;
            }
        }
    }
}

/// The handlers and what they need while dispatching.
struct Dispatcher<'a> {
    handlers: &'a mut [ConfiguredHandler],
    dead_letters: &'a mut DeadLetterFile,
    error_queue: &'a mut ErrorQueue,
    shutdown: &'a Shutdown,
    /// Each handler's [`position`](crate::handlers::Handler::position) before the event in
    /// hand (kept between events: no allocation per event).
    positions: &'a mut Vec<Option<u64>>,
    /// The error-queue entries made for the event in hand.
    queued: Vec<u64>,
    on_gap: GapPolicy,
    metrics: Option<&'a Metrics>,
    /// Each handler's outcome counters, in the handlers' order (empty without metrics).
    counters: &'a [HandlerCounters],
    /// The control socket's pause and error-queue commands, looked at between two events.
    control: Option<&'a crate::steering::Shared>,
    /// The consumer's facts: each event handled is counted there (one atomic add), and its
    /// tick says when what is due by the clock is looked at.
    health: Option<&'a Health>,
}

impl Dispatcher<'_> {
    /// Gives one event to every handler that matches it; `Err` when the event is not handled.
    fn dispatch_event(&mut self, event: &DispatchedEvent<'_>) -> Result<(), PipelineError> {
        let dead_letters_before = self.dead_letters.length();
        self.queued.clear();
        let result = self.try_dispatch_event(event);
        if result.is_err() {
            // The event is not handled and will be delivered again: what took it already gives
            // it back (exactly-once outputs, its error-queue entries, its dead-letter records),
            // so it is not there twice after it comes again.
            for (handler, position) in self.handlers.iter_mut().zip(self.positions.iter()) {
                if let Some(position) = *position {
                    if let Err(error) = handler.handler.rewind(position) {
                        tracing::error!("handler '{}': {error}", handler.name);
                    }
                }
            }
            for id in self.queued.drain(..) {
                self.error_queue.remove(id);
            }
            if let Err(error) = self.dead_letters.cut(dead_letters_before) {
                tracing::error!("{}: {error}", self.dead_letters.path().display());
            }
        }
        result
    }

    fn try_dispatch_event(&mut self, event: &DispatchedEvent<'_>) -> Result<(), PipelineError> {
        self.positions.clear();
        self.positions
            .extend(self.handlers.iter().map(|h| h.handler.position()));
        for (index, handler) in self.handlers.iter_mut().enumerate() {
            let counters = self.counters.get(index);
            if !handler.matcher.matches(event) {
                continue;
            }
            // An object with an event waiting in the error queue: later ones wait behind it.
            if handler.on_failure == FailurePolicy::ErrorQueue
                && self.error_queue.holds_any(&handler.name)
            {
                let key = object_key(event, handler.queue_key.as_deref());
                if self.error_queue.holds(&handler.name, &key) {
                    let id = self
                        .error_queue
                        .push(&handler.name, key, &event.event, None, 0);
                    self.queued.push(id);
                    tracing::info!(
                        "handler '{}': offset {} queued (#{id}) behind an earlier event of the same object",
                        handler.name,
                        event.offset_text()
                    );
                    continue;
                }
            }
            match deliver(handler, event, self.shutdown, counters, self.control) {
                Delivery::Done => {}
                Delivery::Interrupted => {
                    return Err(PipelineError::Interrupted {
                        handler: handler.name.clone(),
                        offset: event.offset_text(),
                    })
                }
                Delivery::Failed { error, attempts } => match handler.on_failure {
                    FailurePolicy::Stop => {
                        return Err(PipelineError::Handler {
                            handler: handler.name.clone(),
                            offset: event.offset_text(),
                            attempts,
                            message: error,
                        })
                    }
                    FailurePolicy::ErrorQueue => {
                        let key = object_key(event, handler.queue_key.as_deref());
                        let id = self.error_queue.push(
                            &handler.name,
                            key.clone(),
                            &event.event,
                            Some(error.clone()),
                            attempts,
                        );
                        self.queued.push(id);
                        if let Some(counters) = counters {
                            counters.count(Outcome::Queued);
                        }
                        tracing::warn!(
                            "handler '{}' failed on offset {} after {attempts} attempt(s): {error}; queued as #{id} for object {key}, retried later",
                            handler.name,
                            event.offset_text()
                        );
                    }
                    FailurePolicy::DeadLetter => {
                        self.dead_letters
                            .record(&handler.name, &error, attempts, event)
                            .map_err(|e| PipelineError::DeadLetter {
                                path: self.dead_letters.path().to_path_buf(),
                                message: e.to_string(),
                            })?;
                        if let Some(counters) = counters {
                            counters.count(Outcome::DeadLettered);
                        }
                        tracing::warn!(
                            "handler '{}' gave up on offset {} after {attempts} attempt(s): {error}; recorded in {}",
                            handler.name,
                            event.offset_text(),
                            self.dead_letters.path().display()
                        );
                    }
                },
            }
        }
        Ok(())
    }

    /// Hands every event of the batch to the handlers that match it, stopping at the first
    /// event not handled; records the last fully handled event for the next commit.
    ///
    /// Starts at event `start` (a batch taken up again after a pause). `Ok(Some(i))`: paused
    /// before event `i`, what came before it committed.
    fn dispatch_batch(
        &mut self,
        batch: &EventBatch,
        start: usize,
        next_after_last: &Option<Offset>,
        committer: &mut Committer<'_>,
    ) -> Result<Option<usize>, PipelineError> {
        let mut handled = start;
        let mut recorded = start;
        let mut paused_at = None;
        let mut outcome = Ok(());
        // Events by category, and those Hermes mode skips, counted into the metrics once per
        // batch.
        let mut tally: Vec<(&str, u64)> = Vec::new();
        let mut skipped = 0;
        // (The gaps before `start` were dealt with before the pause.)
        let mut gaps = batch
            .gaps()
            .filter(|gap| gap.before_event >= start)
            .peekable();
        let mut stopped = false;
        for (index, event) in batch.iter().enumerate().skip(start) {
            // A stop ends the batch after the event in hand: the rest come again.
            if self.shutdown.requested() {
                stopped = true;
                break;
            }
            // The control socket, between two events: what was handled is committed first,
            // then error-queue commands are carried out, and a pause holds the rest.
            if let Some(control) = self.control.filter(|c| c.paused() || c.has_requests()) {
                committer.record(batch, recorded, handled, next_after_last);
                recorded = handled;
                let served = committer
                    .commit(self.handlers, self.error_queue)
                    .and_then(|()| {
                        serve_queue_requests(control, self.handlers, self.error_queue, committer)
                    });
                if let Err(error) = served {
                    outcome = Err(error);
                    break;
                }
                if control.paused() {
                    paused_at = Some(index);
                    stopped = true;
                    break;
                }
            }
            if let Err(error) = self.pass_gaps(&mut gaps, index, committer) {
                outcome = Err(error);
                break;
            }
            let event = DispatchedEvent::new(event);
            // Hermes mode skips some events: they advance the offset all the same.
            let admitted = committer.hermes.as_ref().is_none_or(|h| h.admit(&event));
            if admitted {
                if let Err(error) = self.dispatch_event(&event) {
                    outcome = Err(error);
                    break;
                }
            } else {
                skipped += 1;
            }
            if let Some(hermes) = committer.hermes.as_mut() {
                hermes.handled(&event);
            }
            // `buslink_events_total` counts what reached the handlers; skipped ones apart.
            if let Some(metrics) = self.metrics.filter(|_| admitted) {
                let category = event.event.category;
                match tally.iter().position(|(known, _)| *known == category) {
                    Some(at) => tally[at].1 += 1,
                    // Free-text categories (Kafka keys) are counted one by one.
                    None if tally.len() >= 16 => metrics.event(category),
                    None => tally.push((category, 1)),
                }
            }
            handled += 1;
            if let Some(health) = self.health {
                health.handled();
            }
            // The clock of `every_ms` starts at the first event handled and not committed.
            if committer.pending_since.is_none() {
                committer.pending_since = Some(Instant::now());
            }
            // What is due by the clock, looked at every tick of the monitor (one atomic load
            // per event): the metrics' tallies, and a commit by `every_ms` inside a batch
            // (a slow handler must not hold the commit until the batch's end).
            let ticked = self.health.is_some_and(Health::take_tick);
            if ticked {
                if let Some(metrics) = self.metrics {
                    for (category, count) in tally.drain(..) {
                        metrics.events_by(category, count);
                    }
                }
            }
            let due_by_time = ticked
                && committer.pending_since.is_some_and(|since| {
                    since.elapsed() >= Duration::from_millis(committer.policy.every_ms)
                });
            // `every_events` holds inside a batch too: with 1, every event is committed.
            if due_by_time
                || committer.pending_count + (handled - recorded) as u64
                    >= committer.policy.every_events
            {
                committer.record(batch, recorded, handled, next_after_last);
                recorded = handled;
                if let Err(error) = committer.commit(self.handlers, self.error_queue) {
                    outcome = Err(error);
                    break;
                }
            }
        }
        if outcome.is_ok() && !stopped {
            // Gaps after the batch's last event.
            outcome = self.pass_gaps(&mut gaps, batch.len(), committer);
        }
        if let Some(metrics) = self.metrics {
            for (category, count) in tally {
                metrics.events_by(category, count);
            }
            if skipped > 0 {
                metrics.skipped(skipped);
            }
        }
        committer.record(batch, recorded, handled, next_after_last);
        for_each_handler(self.handlers.iter_mut(), |h| h.flush())?;
        outcome.map(|()| paused_at)
    }

    /// Deals with the gaps reported before the event at `index`, by `on_gap`: an error
    /// (`stop`) or a warning and the counters (`warn`).
    fn pass_gaps<'b>(
        &mut self,
        gaps: &mut std::iter::Peekable<impl Iterator<Item = Gap<'b>>>,
        index: usize,
        committer: &mut Committer<'_>,
    ) -> Result<(), PipelineError> {
        while let Some(gap) = gaps.next_if(|gap| gap.before_event <= index) {
            committer.gaps += 1;
            committer.events_lost += gap.count.unwrap_or(0);
            if let Some(metrics) = self.metrics {
                metrics.gap(gap.count.unwrap_or(0));
            }
            if let Some(health) = self.health {
                health.gap(gap.count.unwrap_or(0));
            }
            let count = gap
                .count
                .map_or_else(|| "how many unknown".to_owned(), |n| format!("{n} events"));
            if self.on_gap == GapPolicy::Stop {
                return Err(PipelineError::Gap {
                    range: gap.range.to_owned(),
                    count,
                });
            }
            tracing::warn!(
                "gap on the bus: {} ({count}) are gone before this consumer read them; going on \
                 (on_gap = \"warn\"); {} gap(s) so far",
                gap.range,
                committer.gaps
            );
        }
        Ok(())
    }
}
