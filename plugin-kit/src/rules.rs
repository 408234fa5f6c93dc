//! The rules, one function each: a new consumer per rule, opened in the host's order
//! ([`open_at`]), its answers compared with the bus the test described.

use crate::driven::{CallLog, Driven};
use crate::{Failure, Kit, Known, Report, Rule, RULE_LIMIT};
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{ErrorKind, EventBatch, PluginError, PluginResult, PollStatus};
use std::time::{Duration, Instant};

/// How a rule builds its consumer: from settings as JSON text.
pub(crate) type Build<'a> = dyn Fn(&str) -> PluginResult<Driven> + Sync + 'a;

/// What one rule found wrong (its calls are added by [`check_all`]).
type Broken = Result<(), String>;

/// The most polls a rule makes before it calls the bus endless.
const MAX_POLLS: usize = 100_000;
/// How long the kit polls again while the plugin says the bus holds it up
/// ([`Consumer::held_up`](buslink_plugin_api::Consumer::held_up)) before it fails the rule
/// (half of [`RULE_LIMIT`], which bounds the whole rule).
const HELD_UP_LIMIT: Duration = Duration::from_secs(15);

pub(crate) fn check_all(kit: &Kit, build: &Build<'_>) -> Report {
    let mut report = Report::default();
    let settings = kit.settings.to_string();
    for rule in Rule::ALL {
        if let Some((_, why)) = kit.exempt.iter().find(|(exempt, _)| *exempt == rule) {
            report.skipped.push((rule, why.clone()));
            continue;
        }
        if let Some(why) = not_applicable(rule, kit) {
            report.skipped.push((rule, why));
            continue;
        }
        if rule == Rule::SettingsErrorsNameTheKey {
            match settings_errors(kit, build) {
                Ok(()) => report.passed.push(rule),
                Err(what) => report.failures.push(Failure {
                    rule,
                    what,
                    calls: vec!["new".into()],
                }),
            }
            continue;
        }
        let mut consumer = match build(&settings) {
            Ok(consumer) => consumer,
            Err(error) => {
                report.failures.push(Failure {
                    rule,
                    what: format!("the class refused the kit's settings: {error}"),
                    calls: vec!["new".into()],
                });
                continue;
            }
        };
        let log = consumer.log();
        let kit = kit.clone();
        let outcome = bounded(move || {
            let outcome = run(rule, &kit, &mut consumer);
            let _ = consumer.close();
            outcome
        });
        match outcome {
            Some(Ok(())) => report.passed.push(rule),
            Some(Err(what)) => report.failures.push(failure(rule, what, &log)),
            None => {
                let last = calls(&log).last().cloned().unwrap_or_default();
                report.failures.push(failure(
                    rule,
                    format!(
                        "no answer within {} s (hung in {last})",
                        RULE_LIMIT.as_secs()
                    ),
                    &log,
                ));
            }
        }
    }
    report
}

fn calls(log: &CallLog) -> Vec<String> {
    log.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn failure(rule: Rule, what: String, log: &CallLog) -> Failure {
    Failure {
        rule,
        what,
        calls: calls(log),
    }
}

/// Runs `f` on a thread of its own; `None` when it does not end within [`RULE_LIMIT`] (the
/// thread is left behind: a plugin stuck in a call cannot be stopped from outside).
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kit-rule".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(RULE_LIMIT).ok(),
        Err(_) => None,
    }
}

/// Why `rule` cannot be checked with what the test described, if so.
fn not_applicable(rule: Rule, kit: &Kit) -> Option<String> {
    let events = kit.bus.events.len();
    match rule {
        Rule::SeekIsExact | Rule::SeekAfterResumesAfter | Rule::SmallBatchesLoseNothing
            if events < 3 =>
        {
            Some("the bus needs at least three events".into())
        }
        Rule::OffsetsNotOnTheBusAreRefused if kit.bus.not_on_bus.is_empty() => {
            Some("no offset not on the bus was given (Bus::not_on_bus)".into())
        }
        Rule::GapsAreReported if kit.bus.gap_before.is_none() => {
            Some("no gap was made on the bus (Bus::gap_before)".into())
        }
        Rule::SettingsErrorsNameTheKey if kit.bad_settings.is_empty() => {
            Some("no settings to refuse were given (Kit::bad_settings)".into())
        }
        Rule::StopWhenDrainedEndsWithEveryEvent
        | Rule::TimeoutIsHonoured
        | Rule::FindLeavesThePositionAfterTheEvent
            if events == 0 =>
        {
            Some("the bus has no event".into())
        }
        _ => None,
    }
}

fn run(rule: Rule, kit: &Kit, consumer: &mut Driven) -> Broken {
    let timeout = Some(kit.timeout);
    let bus = &kit.bus;
    // Where reads "from the beginning" start: the bus's own position for a consumer group.
    let beginning = if kit.bus_keeps_the_position {
        Position::BusKept(None)
    } else {
        Position::Beginning
    };
    let open = |consumer: &mut Driven, stop: bool, position| {
        open_at(consumer, timeout, stop, position)
            .map_err(|error| format!("opening refused: {error}"))
    };
    match rule {
        Rule::ReadsEveryEventInOrder => {
            open(consumer, false, beginning)?;
            let (read, _) = read_all(consumer, 512)?;
            same_events(&read, &bus.events)
        }
        Rule::SmallBatchesLoseNothing => {
            open(consumer, false, beginning)?;
            let (read, _) = read_all(consumer, 2)?;
            same_events(&read, &bus.events)
        }
        Rule::SeekIsExact => {
            let middle = bus.events.len() / 2;
            open(consumer, false, Position::At(&bus.events[middle].offset))?;
            let (read, _) = read_all(consumer, 512)?;
            same_events(&read, &bus.events[middle..])
        }
        Rule::SeekAfterResumesAfter => {
            let middle = bus.events.len() / 2;
            let after = Position::After {
                offset: &bus.events[middle].offset,
                timestamp: None,
            };
            open(consumer, false, after)?;
            let (read, _) = read_all(consumer, 512)?;
            same_events(&read, &bus.events[middle + 1..])
        }
        Rule::SeekToEndReadsOnlyNewEvents => {
            // Only `seek_to_end` itself may refuse with a config error (a class that cannot
            // start at the end); events produced after it are not checked here.
            open(consumer, false, Position::Unpositioned)?;
            match buslink_plugin_api::session::Calls::seek_to_end(consumer) {
                Err(error) if error.kind() == ErrorKind::Config => return Ok(()),
                Err(error) => return Err(format!("seek_to_end refused: {error}")),
                Ok(()) => {}
            }
            let (read, _) = read_all(consumer, 512)?;
            same_events(&read, &[])
        }
        Rule::OffsetsNotOnTheBusAreRefused => {
            open(consumer, false, Position::Unpositioned)?;
            for offset in &bus.not_on_bus {
                match buslink_plugin_api::session::Calls::seek(consumer, offset) {
                    Ok(()) => {
                        return Err(format!("seek({offset}) accepted an offset not on the bus"))
                    }
                    Err(error) if error.kind() == ErrorKind::OffsetNotFound => {}
                    Err(error) => {
                        return Err(format!(
                            "seek({offset}) failed with {} instead of offset_not_found: {error}",
                            error.kind().as_str()
                        ))
                    }
                }
            }
            Ok(())
        }
        Rule::StopWhenDrainedEndsWithEveryEvent => {
            open(consumer, true, beginning)?;
            let (read, last_poll) = read_all(consumer, 512)?;
            same_events(&read, &bus.events)?;
            // Knowing it is drained, it says so without waiting out the timeout; a plugin that
            // cannot tell waits for it (Idle), but no longer.
            within(last_poll, kit.timeout)
        }
        Rule::TimeoutIsHonoured => {
            // Everything read, not stopping when drained: the empty poll at the end waits for
            // the timeout (or says Drained at once), no longer.
            open(consumer, false, beginning)?;
            let (_, last_poll) = read_all(consumer, 512)?;
            within(last_poll, kit.timeout)
        }
        Rule::FindLeavesThePositionAfterTheEvent => {
            open(consumer, false, Position::Beginning)?;
            // The last category of the bus, looked for from the beginning (as Hermes mode's
            // bootstrap does): its first event, then the position right after it.
            let wanted = bus
                .events
                .last()
                .map(|e| e.category.clone())
                .unwrap_or_default();
            let first = bus
                .events
                .iter()
                .position(|e| e.category == wanted)
                .unwrap_or(0);
            let mut found = EventBatch::new(1, usize::MAX);
            match consumer.find_next_event_of_category(&wanted, &mut found) {
                Ok(true) => {}
                Ok(false) => return Err(format!("no event of category {wanted:?} found")),
                Err(error) => return Err(format!("find_next_event_of_category failed: {error}")),
            }
            same_events(&events_of(&found), &bus.events[first..=first])
                .map_err(|what| format!("the event found: {what}"))?;
            let mut next = EventBatch::new(1, 4 << 20);
            consumer
                .poll(&mut next)
                .map_err(|error| format!("poll after the event found failed: {error}"))?;
            let expected = &bus.events[first + 1..(first + 2).min(bus.events.len())];
            same_events(&events_of(&next), expected)
                .map_err(|what| format!("after the event found: {what}"))?;
            let absent = "buslink-kit-no-such-category";
            match consumer.find_next_event_of_category(absent, &mut found) {
                Ok(false) => Ok(()),
                Ok(true) => Err(format!("found an event of category {absent:?}")),
                Err(error) => Err(format!(
                    "find_next_event_of_category({absent:?}) failed: {error}"
                )),
            }
        }
        Rule::GapsAreReported => {
            let Some((before, count)) = &bus.gap_before else {
                return Ok(());
            };
            open(consumer, false, beginning)?;
            let mut batch = EventBatch::new(512, 4 << 20);
            let mut read = 0usize;
            let mut pending: Option<Option<u64>> = None;
            for _ in 0..MAX_POLLS {
                let status = consumer
                    .poll(&mut batch)
                    .map_err(|error| format!("poll failed after {read} event(s): {error}"))?;
                // A gap after a batch's last event: the next batch must begin with the event
                // after it.
                let carried = pending.take();
                if let Some(first) = carried.as_ref().and(batch.get(0)) {
                    let first = first.offset.to_owned();
                    if &first != before {
                        return Err(format!(
                            "a gap reported at the end of a batch, and the next batch begins \
                             with {first}, the test made it before {before}"
                        ));
                    }
                    return Ok(());
                }
                if let Some(gap) = batch.gaps().next() {
                    if gap.before_event == batch.len() && status == PollStatus::Ready {
                        pending = Some(gap.count);
                        read += batch.len();
                        if count.is_some() && gap.count != *count {
                            return Err(format!(
                                "the gap before {before} counts {:?} events, the test removed \
                                 {count:?}",
                                gap.count
                            ));
                        }
                        continue;
                    }
                    let at = batch.get(gap.before_event).map(|e| e.offset.to_owned());
                    if at.as_ref() != Some(before) {
                        return Err(format!(
                            "a gap ({}) reported before {}, the test made it before {before}",
                            gap.range,
                            at.map_or_else(|| "the end of a batch".to_owned(), |o| o.to_string())
                        ));
                    }
                    if count.is_some() && gap.count != *count {
                        return Err(format!(
                            "the gap before {before} counts {:?} events, the test removed {count:?}",
                            gap.count
                        ));
                    }
                    return Ok(());
                }
                if batch.iter().any(|event| event.offset == before.as_ref()) {
                    return Err(format!(
                        "event {before} came with no gap reported before it (events were \
                         removed before it)"
                    ));
                }
                read += batch.len();
                if status != PollStatus::Ready {
                    return Err(format!(
                        "the bus was read to its end ({read} events) with no gap reported"
                    ));
                }
            }
            Err(format!(
                "{MAX_POLLS} polls and still events: an endless bus?"
            ))
        }
        Rule::SettingsErrorsNameTheKey => Ok(()),
    }
}

/// Every refused setting is refused by `new` with a config error naming its key.
fn settings_errors(kit: &Kit, build: &Build<'_>) -> Broken {
    for (settings, key) in &kit.bad_settings {
        match build(&settings.to_string()) {
            Ok(mut consumer) => {
                let _ = consumer.close();
                return Err(format!("settings {settings} were accepted"));
            }
            Err(error) => check_refusal(settings, key, &error)?,
        }
    }
    Ok(())
}

fn check_refusal(settings: &serde_json::Value, key: &str, error: &PluginError) -> Broken {
    if error.kind() != ErrorKind::Config {
        return Err(format!(
            "settings {settings}: a {} error instead of config: {error}",
            error.kind().as_str()
        ));
    }
    match error.key() {
        Some(named) if named == key => Ok(()),
        named => Err(format!(
            "settings {settings}: the error names key {named:?}, not {key:?}: {error}"
        )),
    }
}

/// Polls with batches of `max_events` until a poll gives nothing: the events read, and how
/// long that last poll took.
fn read_all(consumer: &mut Driven, max_events: usize) -> Result<(Vec<Known>, Duration), String> {
    let mut read = Vec::new();
    let mut batch = EventBatch::new(max_events, 4 << 20);
    let mut held_up_since: Option<Instant> = None;
    for _ in 0..MAX_POLLS {
        let started = Instant::now();
        let status = consumer
            .poll(&mut batch)
            .map_err(|error| format!("poll failed after {} event(s): {error}", read.len()))?;
        if batch.len() > max_events {
            return Err(format!(
                "a poll put {} events in a batch of {max_events}",
                batch.len()
            ));
        }
        read.extend(events_of(&batch));
        match status {
            PollStatus::Ready if batch.is_empty() => {
                return Err("a poll said Ready with an empty batch".into())
            }
            PollStatus::Ready => {}
            PollStatus::Idle | PollStatus::Drained | PollStatus::Ended => {
                if !batch.is_empty() {
                    return Err(format!(
                        "a poll gave {} event(s) but said {status:?} (Ready is the answer \
                         with events)",
                        batch.len()
                    ));
                }
                // An idle poll while the bus holds the consumer up (a group member still
                // without a partition: the join can outlast a poll on a busy machine) is not
                // the end of the bus: polled again, as the host does, for a bounded time.
                if status == PollStatus::Idle {
                    if let Some(why) = consumer.held_up() {
                        let since = *held_up_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < HELD_UP_LIMIT {
                            continue;
                        }
                        return Err(format!(
                            "the bus held the consumer up for {} s after {} event(s): {why}",
                            since.elapsed().as_secs(),
                            read.len()
                        ));
                    }
                }
                return Ok((read, started.elapsed()));
            }
        }
    }
    Err(format!(
        "{MAX_POLLS} polls and still events: an endless bus?"
    ))
}

fn events_of(batch: &EventBatch) -> Vec<Known> {
    batch
        .iter()
        .map(|event| Known {
            offset: event.offset.to_owned(),
            category: event.category.to_owned(),
        })
        .collect()
}

/// Whether `read` is `expected`, naming the first difference.
fn same_events(read: &[Known], expected: &[Known]) -> Broken {
    let show = |k: &Known| format!("{} ({})", k.offset, k.category);
    for (index, (got, want)) in read.iter().zip(expected).enumerate() {
        if got != want {
            return Err(format!(
                "event {index} read is {}, the bus has {} there",
                show(got),
                show(want)
            ));
        }
    }
    match read.len().cmp(&expected.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(format!(
            "{} event(s) read, the bus has {}: the first missing is {}",
            read.len(),
            expected.len(),
            show(&expected[read.len()])
        )),
        std::cmp::Ordering::Greater => Err(format!(
            "{} event(s) read, the bus has {}: the first extra is {}",
            read.len(),
            expected.len(),
            show(&read[expected.len()])
        )),
    }
}

/// A poll with nothing to read returns within `timeout`, with a grace of a second.
fn within(took: Duration, timeout: Duration) -> Broken {
    let limit = timeout + Duration::from_secs(1);
    if took > limit {
        return Err(format!(
            "an empty poll took {} ms, the timeout is {} ms",
            took.as_millis(),
            timeout.as_millis()
        ));
    }
    Ok(())
}
