//! A past range of the bus, as `buslink replay` and `ctl replay` read it: where it ends
//! ([`past`]), positioning a reader at its start ([`position`]), finding an end that is not a
//! number ([`find`]), a `--to` of another type ([`to_type_refusal`]), the `--match
//! FIELD=GLOB` filters ([`match_filter`]) and a handler's failure ([`handler_failed`]). Errors
//! are text: the callers say what they mean.

use crate::plugin::PluginConsumer;
use crate::shutdown::Shutdown;
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{EventBatch, Offset, OffsetRef, PollStatus};
use std::time::Duration;

/// What a class's replay reader is named after it (`KafkaConsumer` -> `KafkaConsumerReader`):
/// the class both replays read a range with when the consumer's bus keeps the position.
pub const REPLAY_READER_SUFFIX: &str = "Reader";

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
) -> Result<Option<bool>, String> {
    let mut batch = EventBatch::new(512, 4 << 20);
    loop {
        if shutdown.requested() {
            return Ok(None);
        }
        batch.clear();
        let status = consumer
            .poll(&mut batch)
            .map_err(|e| format!("looking for --to {to}: {e}"))?;
        if batch.iter().any(|event| event.offset == to.as_ref()) {
            return Ok(Some(true));
        }
        if !matches!(status, PollStatus::Ready) {
            return Ok(Some(false));
        }
    }
}

/// Why `to` cannot end a range whose first event has offset `first`: another type than the
/// bus's offsets (integers and floats are both numbers), so it would never be met. `None`: it
/// can.
pub fn to_type_refusal(first: OffsetRef<'_>, to: &Offset) -> Option<String> {
    let numeric = |name: &str| name == "int" || name == "float";
    let (bus, given) = (first.type_name(), to.type_name());
    (bus != given && !(numeric(bus) && numeric(given))).then(|| {
        format!(
            "--to {to} is {given}, but the bus's offsets are {bus} (take --to as a string with \
             --string): nothing was delivered"
        )
    })
}

/// What a replay says when handler `name` failed its last attempt on the event at `offset`:
/// the replay stops there, and goes on from it.
pub fn handler_failed(name: &str, offset: &str, attempts: u32, error: &str) -> String {
    format!(
        "handler '{name}' failed on offset {offset} after {attempts} attempt(s): {error}; the \
         replay stopped there (go on with --from {offset})"
    )
}
