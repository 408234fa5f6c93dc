//! Replaying a past range of the bus to chosen handlers (`buslink replay`), with a consumer
//! instance of its own: no state file is touched, the committed offset stays. The binary's
//! command parses the request, builds the handlers and shows the progress; the reading and
//! delivering are here, delivering through the pipeline's [`deliver`](crate::pipeline::deliver)
//! (the same retries as the daemon).

use crate::error::AppError;
use crate::handlers::{ConfiguredHandler, DispatchedEvent, EventMatcher};
use crate::plugin::PluginConsumer;
use crate::shutdown::Shutdown;
use buslink_plugin_api::{EventBatch, Offset, PollStatus};

pub use crate::range::{match_filter, past, position};

/// Reads on until `to` is met (`Some(true)`), the bus has no more (`Some(false)`), or a stop
/// is asked for (`None`).
pub fn find(
    consumer: &mut PluginConsumer,
    to: &Offset,
    shutdown: &Shutdown,
) -> Result<Option<bool>, AppError> {
    crate::range::find(consumer, to, shutdown).map_err(AppError::Runtime)
}

/// How the replay loop ended.
pub enum End {
    /// `--to` was met or passed.
    Reached,
    /// The bus had nothing more.
    Drained,
    /// A stop was asked for.
    Stopped,
}

/// Where a replay got: events read, deliveries made (or that a dry run would make), the
/// offset of the last event read (empty before the first).
#[derive(Debug, Default)]
pub struct ReplayCount {
    pub events: u64,
    pub delivered: u64,
    pub offset: String,
}

/// Reads from `consumer` (positioned) until `to` is met or passed, the bus has no more, or a
/// stop; each event that `extra` and a handler's matcher select goes to that handler
/// (`built`, in the matchers' order; empty in a dry run, which only counts). `counts` gets
/// each matcher's deliveries, `count` the whole; `shown` is called after each event. A handler
/// that fails its last attempt ends the replay with an error naming the offset to go on from.
#[allow(clippy::too_many_arguments)]
pub fn replay_range(
    consumer: &mut PluginConsumer,
    built: &mut [ConfiguredHandler],
    matchers: &[(String, EventMatcher)],
    extra: &EventMatcher,
    to: Option<&Offset>,
    counts: &mut [u64],
    count: &mut ReplayCount,
    shown: &mut dyn FnMut(&ReplayCount),
    shutdown: &Shutdown,
) -> Result<End, AppError> {
    let progress = count;
    let mut batch = EventBatch::new(512, 4 << 20);
    loop {
        if shutdown.requested() {
            return Ok(End::Stopped);
        }
        batch.clear();
        let status = consumer.poll(&mut batch).map_err(|e| {
            AppError::Runtime(format!("{e}: replayed up to offset {}", progress.offset))
        })?;
        for gap in batch.gaps() {
            tracing::warn!(
                "gap: {} event(s) gone from the bus ({}) are not replayed",
                gap.count
                    .map_or_else(|| "some".to_owned(), |c| c.to_string()),
                gap.range
            );
        }
        for event in batch.iter() {
            if let Some(refusal) = to
                .filter(|_| progress.events == 0)
                .and_then(|to| crate::range::to_type_refusal(event.offset, to))
            {
                return Err(AppError::Usage(refusal));
            }
            if to.is_some_and(|to| past(event.offset, to)) {
                return Ok(End::Reached);
            }
            let dispatched = DispatchedEvent::new(event);
            progress.events += 1;
            progress.offset = dispatched.offset_text();
            if extra.matches(&dispatched) {
                for (index, (name, matcher)) in matchers.iter().enumerate() {
                    if !matcher.matches(&dispatched) {
                        continue;
                    }
                    // `built` is in the matchers' order (empty in a dry run).
                    if let Some(handler) = built.get_mut(index) {
                        match crate::pipeline::deliver(handler, &dispatched, shutdown, None, None) {
                            crate::pipeline::Delivery::Done => {}
                            crate::pipeline::Delivery::Interrupted => return Ok(End::Stopped),
                            crate::pipeline::Delivery::Failed { error, attempts } => {
                                return Err(AppError::Runtime(crate::range::handler_failed(
                                    name,
                                    &progress.offset,
                                    attempts,
                                    &error,
                                )))
                            }
                        }
                    }
                    counts[index] += 1;
                    progress.delivered += 1;
                }
            }
            shown(progress);
            if to.is_some_and(|to| event.offset == to.as_ref()) {
                return Ok(End::Reached);
            }
        }
        for handler in built.iter_mut() {
            handler
                .handler
                .flush()
                .map_err(|e| AppError::Runtime(format!("handler '{}': {e}", handler.name)))?;
        }
        match status {
            PollStatus::Ready => {}
            PollStatus::Idle | PollStatus::Drained | PollStatus::Ended => return Ok(End::Drained),
        }
    }
}
