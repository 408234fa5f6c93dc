//! Hermes mode (`[consumer.hermes] enabled = true`): hermes-client's semantics on any bus.
//!
//! - **Bootstrap.** Before the first start (no initsync replayed yet), the bus is scanned from
//!   the beginning for complete `init-start` ... `init-stop` sequences of `initsync` events
//!   (with `find_next_event_of_category`); the latest one (or the first, by setting) is
//!   replayed, and the daemon goes on with the base events after it. With no complete sequence
//!   yet, it waits for one and consumes nothing else.
//! - **Filtering.** While the sequence is replayed, only its `initsync` events reach handlers;
//!   afterwards `initsync` events (later sequences) are skipped but still advance the offset,
//!   and base events (including `dataschema`) reach handlers.
//! - The cache keeps `initstartoffset`, `initstopoffset` and whether the replay finished.

use crate::handlers::DispatchedEvent;
use crate::plugin::{ConsumerError, PluginConsumer};
use crate::shutdown::Shutdown;
use buslink_plugin_api::hermes::HermesHeader;
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{Body, EventBatch, Offset};
use std::time::Duration;

/// An initsync sequence: the offsets of its `init-start` and `init-stop` events.
#[derive(Clone, Debug, PartialEq)]
pub struct InitsyncSequence {
    pub start: Offset,
    pub stop: Offset,
}

/// Scans the whole bus for complete initsync sequences; the first or the latest.
pub fn find_initsync(
    consumer: &mut PluginConsumer,
    use_first: bool,
) -> Result<Option<InitsyncSequence>, ConsumerError> {
    consumer.seek_to_beginning()?;
    let mut found = EventBatch::new(1, usize::MAX);
    let mut open_start: Option<Offset> = None;
    let mut latest = None;
    loop {
        found.clear();
        if !consumer.find_next_event_of_category("initsync", &mut found)? {
            return Ok(latest);
        }
        let Some(event) = found.get(0) else {
            return Ok(latest);
        };
        let header = match event.body {
            Body::Json(text) => HermesHeader::parse(text).unwrap_or_default(),
            Body::Bytes(_) => HermesHeader::default(),
        };
        match header.eventtype.as_deref() {
            Some("init-start") => open_start = Some(event.offset.to_owned()),
            Some("init-stop") => {
                if let Some(start) = open_start.take() {
                    let sequence = InitsyncSequence {
                        start,
                        stop: event.offset.to_owned(),
                    };
                    if use_first {
                        return Ok(Some(sequence));
                    }
                    latest = Some(sequence);
                }
            }
            _ => {}
        }
    }
}

/// Opens the consumer and waits until the bus holds a complete initsync sequence (`None` if a
/// stop was asked for, or with `once` when there is none now). A transient error of the bus
/// (a file moved away, a lock, a server down) is retried with backoff, `waiting` hearing why
/// (and `None` once the bus answers again); with `once` it is returned.
pub fn bootstrap(
    consumer: &mut PluginConsumer,
    use_first: bool,
    timeout: Duration,
    once: bool,
    shutdown: &Shutdown,
    waiting: &dyn Fn(Option<String>),
) -> Result<Option<InitsyncSequence>, ConsumerError> {
    let mut told = false;
    let mut open = false;
    let mut backoff = crate::backoff::INITIAL;
    let mut failing = false;
    let result = loop {
        // No position here: `find_initsync` seeks to the beginning at each look.
        let looked = if open {
            find_initsync(consumer, use_first)
        } else {
            open_at(consumer, Some(timeout), false, Position::Unpositioned)
                .and_then(|()| find_initsync(consumer, use_first))
        };
        open = true;
        let found = match looked {
            Ok(found) => found,
            Err(error) if error.error.kind().is_transient() && !once => {
                tracing::warn!(
                    "Hermes mode: looking for an initsync sequence: {error}; retrying in {} ms",
                    backoff.as_millis()
                );
                waiting(Some(error.to_string()));
                failing = true;
                let _ = consumer.close();
                open = false;
                if !shutdown.sleep(backoff) {
                    break None;
                }
                backoff = (backoff * 2).min(crate::backoff::MAX);
                continue;
            }
            Err(error) => return Err(error),
        };
        if std::mem::take(&mut failing) {
            waiting(None);
            backoff = crate::backoff::INITIAL;
        }
        match found {
            Some(sequence) => break Some(sequence),
            None if once => break None,
            None => {
                if !told {
                    tracing::info!(
                        "Hermes mode: no complete initsync sequence on the bus yet; waiting for one"
                    );
                    told = true;
                }
                if !shutdown.sleep(timeout) {
                    break None;
                }
            }
        }
    };
    consumer.close()?;
    Ok(result)
}

/// Where the replay is.
#[derive(Clone, Debug, PartialEq)]
pub struct HermesFilter {
    pub sequence: InitsyncSequence,
    /// The `init-stop` event was handled: base events from now on.
    pub initsync_done: bool,
}

impl HermesFilter {
    /// Whether handlers get this event.
    pub fn admit(&self, event: &DispatchedEvent<'_>) -> bool {
        let header = event.header();
        let category = header.evcategory.as_deref().unwrap_or(event.event.category);
        let is_initsync = category == "initsync";
        if self.initsync_done {
            !is_initsync
        } else {
            is_initsync
        }
    }

    /// Notes that an event was handled: past the sequence's `init-stop`, base events follow.
    pub fn handled(&mut self, event: &DispatchedEvent<'_>) {
        if !self.initsync_done && event.event.offset == self.sequence.stop.as_ref() {
            self.initsync_done = true;
            tracing::info!(
                "Hermes mode: initsync sequence {} to {} replayed; base events follow",
                self.sequence.start,
                self.sequence.stop
            );
        }
    }
}
