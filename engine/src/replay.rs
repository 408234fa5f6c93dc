//! Replaying a past range of the bus to chosen handlers (`buslink replay`), with a consumer
//! instance of its own: no state file is touched, the committed offset stays. The binary's
//! command parses the request, builds the handlers and shows the progress; the reading and
//! delivering are here, delivering through the pipeline's [`deliver`](crate::pipeline::deliver)
//! (the same retries as the daemon).

use crate::error::AppError;
use crate::handlers::{ConfiguredHandler, DispatchedEvent, EventMatcher};
use crate::plugin::PluginConsumer;
use crate::shutdown::Shutdown;
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{EventBatch, Offset, OffsetRef, PollStatus};
use std::time::Duration;

/// Whether `offset` is past `to`: beyond it for integers and floats (a bus without that exact
/// offset still ends the range), never for other types (they end at `to` itself).
pub fn past(offset: OffsetRef<'_>, to: &Offset) -> bool {
    let number = |o: OffsetRef<'_>| match o {
        OffsetRef::Int(i) => Some(i as f64),
        OffsetRef::Float(x) => Some(x),
        _ => None,
    };
    match (offset, to) {
        (OffsetRef::Int(a), Offset::Int(b)) => a > *b,
        _ => match (number(offset), number(to.as_ref())) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
    }
}

/// `--match FIELD=GLOB` filters (category, eventtype, objtype; repeatable) as one
/// [`EventFilter`](crate::config::EventFilter). `Err`: the problem, naming the filter.
pub fn match_filter(matches: &[String]) -> Result<crate::config::EventFilter, String> {
    let mut filter = crate::config::EventFilter::default();
    for text in matches {
        let Some((field, glob)) = text.split_once('=') else {
            return Err(format!(
                "--match {text:?}: write FIELD=GLOB (category, eventtype or objtype)"
            ));
        };
        let list = match field.trim() {
            "category" => &mut filter.category,
            "eventtype" => &mut filter.eventtype,
            "objtype" => &mut filter.objtype,
            other => {
                return Err(format!(
                    "--match {text:?}: no field {other:?} (category, eventtype or objtype)"
                ))
            }
        };
        list.push(glob.trim().to_owned());
    }
    Ok(filter)
}

/// Opens `consumer`, drained-aware, at `from` (`None`: the beginning).
pub fn position(
    consumer: &mut PluginConsumer,
    from: Option<&Offset>,
    timeout: Duration,
) -> Result<(), crate::plugin::ConsumerError> {
    let position = match from {
        None => Position::Beginning,
        Some(offset) => Position::At(offset),
    };
    let positioned = open_at(consumer, Some(timeout), true, position);
    if positioned.is_err() {
        let _ = consumer.close();
    }
    positioned
}

/// Reads on until `to` is met (`Some(true)`), the bus has no more (`Some(false)`), or a stop
/// is asked for (`None`).
pub fn find(
    consumer: &mut PluginConsumer,
    to: &Offset,
    shutdown: &Shutdown,
) -> Result<Option<bool>, AppError> {
    let mut batch = EventBatch::new(512, 4 << 20);
    loop {
        if shutdown.requested() {
            return Ok(None);
        }
        batch.clear();
        let status = consumer
            .poll(&mut batch)
            .map_err(|e| AppError::Runtime(format!("looking for --to {to}: {e}")))?;
        if batch.iter().any(|event| event.offset == to.as_ref()) {
            return Ok(Some(true));
        }
        if !matches!(status, PollStatus::Ready) {
            return Ok(Some(false));
        }
    }
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
            if let Some(to) = to.filter(|_| progress.events == 0) {
                let numeric = |name: &str| name == "int" || name == "float";
                let (bus, given) = (event.offset.type_name(), to.type_name());
                if bus != given && !(numeric(bus) && numeric(given)) {
                    return Err(AppError::Usage(format!(
                        "--to {to} is {given}, but the bus's offsets are {bus} (take --to as \
                         a string with --string): nothing was delivered"
                    )));
                }
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
                                return Err(AppError::Runtime(format!(
                                    "handler '{name}' failed on offset {} after {attempts} \
                                     attempt(s): {error}; the replay stopped there (go on \
                                     with --from {})",
                                    progress.offset, progress.offset
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
