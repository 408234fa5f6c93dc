//! The reader thread: connects the consumer (with backoff), polls it, reconnects after a
//! transient error, keeps a bus that owns the position served while a batch is handled,
//! asks the lag, and hands full batches to the dispatcher; its stop (`shutdown_reader`).

use super::{health, paused, set_phase, PipelineOptions};
use crate::config::StartPosition;
use crate::health::{Phase, LAG_REFRESH};
use crate::offsets::ResumePoint;
use crate::plugin::{ConsumerError, PluginConsumer};
use crate::shutdown::Shutdown;
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{EventBatch, Offset, PollStatus};
use chrono::{DateTime, Utc};
use crossbeam_channel::{SendTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

pub(super) enum ReaderMessage {
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

/// Where a session positions the consumer: at the resume point, else at the configured start.
pub(super) fn position<'a>(
    resume: Option<&'a ResumePoint>,
    last_timestamp: Option<DateTime<Utc>>,
    start: &'a StartPosition,
) -> Position<'a> {
    match (resume, start) {
        (Some(ResumePoint::After(offset)), _) => Position::After {
            offset,
            timestamp: last_timestamp,
        },
        (Some(ResumePoint::At(offset)), _) => Position::At(offset),
        (None, StartPosition::Beginning) => Position::Beginning,
        (None, StartPosition::End) => Position::End,
        (None, StartPosition::At(offset)) => Position::At(offset),
    }
}

/// Asks the plugin for its lag, whether the bus holds it up, and its counters (the reader's
/// thread: the plugin is called from one thread at a time), at most every [`LAG_REFRESH`].
pub(super) fn refresh_bus_figures(
    consumer: &mut PluginConsumer,
    options: &PipelineOptions,
    asked: &mut Option<Instant>,
) {
    if asked.is_some_and(|at| at.elapsed() < LAG_REFRESH) {
        return;
    }
    *asked = Some(Instant::now());
    if let Some(health) = health(options) {
        health.bus_answered(consumer.lag(), consumer.held_up(), consumer.counters());
    }
}

/// A batch the dispatcher is done with, going back to the reader; `committed`: the offset of
/// the last event committed, for a bus that keeps the position (acknowledged before the next
/// poll).
pub(super) struct ReturnedBatch {
    pub(super) batch: EventBatch,
    pub(super) committed: Option<Offset>,
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
pub(super) fn connect(
    consumer: &mut PluginConsumer,
    resume: &Resume,
    options: &PipelineOptions,
    shutdown: &Shutdown,
) -> Result<bool, ConsumerError> {
    let mut backoff = options.initial_backoff;
    loop {
        let position = if consumer.bus_owns_position() {
            // A bus that keeps the position (a Kafka consumer group) resumes by itself; it
            // hears where this member last was, for what the bus has no position for.
            Position::BusKept(resume.next_offset.as_ref())
        } else {
            position(resume.point.as_ref(), resume.last_timestamp, &options.start)
        };
        let attempt = open_at(consumer, Some(options.timeout), options.once, position);
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

pub(super) fn read_loop(
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
        if let Some(health) = health(&options) {
            health.poll_began(options.timeout);
        }
        let polled = consumer.poll(&mut batch);
        if let Some(health) = health(&options) {
            health.poll_ended();
        }
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
pub(super) fn wait_for_batch(
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

/// How long a stop waits for the plugin to return from the call it is in.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stops the reader thread and closes the consumer; returns the plugin's last counters.
pub(super) fn shutdown_reader(
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
