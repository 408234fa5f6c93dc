//! `buslink replay --config FILE [--consumer NAME] --from OFFSET|beginning [--to OFFSET]
//! [--handler NAME ...] [--match FIELD=GLOB ...] [--dry-run]`: re-delivers a past range of the
//! bus to chosen handlers. The committed offset stays where it is, and a daemon may keep
//! running beside it: the replay opens a consumer instance of its own, takes no lock and
//! writes no state file (no offset, dead-letter or error queue).
//!
//! The range is `--from` (included) to `--to` (included; integer and float offsets also stop
//! at the first offset past it) or, without `--to`, the end of the bus when the replay meets
//! it. A range that cannot be is refused before anything is delivered: `--to` before `--from`,
//! of another type than the bus's offsets, or, for offsets that are not numbers (which can
//! only be met, not passed), not found by a first read of the range that delivers nothing. A handler failing after its retries stops the replay (exit 1) and names the offset to
//! go on `--from`. Exactly-once outputs (`jsonl`) are refused: their committed length belongs
//! to the daemon, which would cut replayed lines off at its next start (`ctl replay` does it).
//! A consumer whose bus keeps the position (a Kafka consumer group) is read by its plugin's
//! reader class (`CLASS` + `Reader`, never joining the group); without one it is refused.
//!
//! Progress: a bar on a terminal, else a JSON line a second on stderr (`{"replay":"progress",
//! "events":N,"delivered":N,"offset":"X"}`, `would_deliver` in a dry run); a summary on stderr
//! at the end (stdout is a `stdout` handler's). Handler plugins are refused like `jsonl`: the
//! state they keep (a materialised view) is the daemon's.

use crate::cli::Target;
use crate::config::{EventFilter, HandlerType};
use crate::engine::{build_consumer, new_replay_reader, settings_refusal};
use crate::error::AppError;
use crate::handlers::{self, ConfiguredHandler, EventMatcher};
use crate::offsets::parse_offset;
use crate::replay::{find, past, position, replay_range, End, ReplayCount};
use crate::shutdown::Shutdown;
use buslink_plugin_api::{ErrorKind, Offset};
use std::time::{Duration, Instant};

/// What `buslink replay` was asked: the same request as `ctl replay`'s (the engine's
/// [`ReplaySpec`](crate::control::ReplaySpec)).
pub use crate::control::ReplaySpec as ReplayRequest;

/// The `--match` filters as one [`EventFilter`].
fn match_filter(matches: &[String]) -> Result<EventFilter, AppError> {
    crate::replay::match_filter(matches).map_err(AppError::Usage)
}

/// How far the replay got, shown as it goes.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    dry_run: bool,
    last_line: Instant,
}

impl Progress {
    fn new(dry_run: bool) -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} replay: {pos} events read, {msg} [{elapsed}, {per_sec}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        Progress {
            bar,
            dry_run,
            last_line: Instant::now(),
        }
    }

    fn show(&mut self, count: &ReplayCount) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(count.events);
                bar.set_message(format!(
                    "{} deliveries, at offset {}",
                    count.delivered, count.offset
                ));
            }
            None if self.last_line.elapsed() >= Duration::from_secs(1) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.json("progress", count));
            }
            None => {}
        }
    }

    fn json(&self, kind: &str, count: &ReplayCount) -> String {
        // A dry run delivers nothing: it says what it would have.
        let delivered = if self.dry_run {
            "would_deliver"
        } else {
            "delivered"
        };
        serde_json::json!({
            "replay": kind,
            "events": count.events,
            delivered: count.delivered,
            "offset": count.offset,
        })
        .to_string()
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A plugin's refusal: a config error at the settings key where it names one.
fn refusal(config: &crate::config::Config, error: crate::plugin::ConsumerError) -> AppError {
    match error.error.kind() {
        ErrorKind::Config => settings_refusal(config, &error.plugin, &error.error),
        _ => AppError::Runtime(error.to_string()),
    }
}

/// `buslink replay`.
pub fn replay(target: &Target, request: &ReplayRequest) -> Result<(), AppError> {
    let shutdown = Shutdown::install()
        .map_err(|e| AppError::Runtime(format!("cannot install signal handlers: {e}")))?;
    let config = target.load()?;
    let extra = EventMatcher::new(&match_filter(&request.matches)?).map_err(AppError::Usage)?;
    let chosen: Vec<_> = if request.handlers.is_empty() {
        config.handlers.clone()
    } else {
        let mut chosen: Vec<crate::config::HandlerConfig> = Vec::new();
        for name in &request.handlers {
            // Named twice: delivered once.
            if chosen.iter().any(|h| &h.name == name) {
                continue;
            }
            match config.handlers.iter().find(|h| &h.name == name) {
                Some(handler) => chosen.push(handler.clone()),
                None => {
                    return Err(AppError::Usage(format!(
                        "--handler {name:?}: consumer '{}' has no such handler (it has: {})",
                        config.consumer.name,
                        config
                            .handlers
                            .iter()
                            .map(|h| h.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        chosen
    };
    if !request.dry_run {
        // The first refused type in `HandlerType::ALL`'s order (exactly-once outputs first).
        let refused = HandlerType::ALL.iter().find_map(|refused| {
            let why = refused.replay_refusal()?;
            let handler = chosen.iter().find(|h| h.kind.handler_type() == *refused)?;
            Some((handler, why))
        });
        if let Some((handler, why)) = refused {
            return Err(AppError::Usage(format!(
                "handler '{}' {why}; replay to other handlers (--handler), or look with \
                 --dry-run",
                handler.name
            )));
        }
    }
    // Matchers of the chosen handlers (a dry run builds no handler: nothing is touched).
    let matchers: Vec<(String, EventMatcher)> = chosen
        .iter()
        .map(|h| {
            EventMatcher::new(&h.filter)
                .map(|m| (h.name.clone(), m))
                .map_err(AppError::Usage)
        })
        .collect::<Result<_, _>>()?;
    let mut built: Vec<ConfiguredHandler> = if request.dry_run {
        Vec::new()
    } else {
        handlers::build(
            &chosen,
            &config.base_dir,
            &config.plugin_dirs,
            &Default::default(),
        )
        .map_err(|problems| AppError::Runtime(problems.join("\n")))?
    };
    let (plugin, mut consumer) = build_consumer(&config)?;
    if consumer.bus_owns_position() {
        // A group member: its plugin's reader class reads the range without joining.
        consumer = new_replay_reader(&config, &plugin)?;
    }
    if consumer.bus_owns_position() {
        return Err(AppError::Usage(format!(
            "consumer '{}' keeps its position on the bus (a consumer group) and its plugin has \
             no class '{}{}' to read the range without joining: a replay would take \
             partitions from the group's members; replay with a config that reads the topic \
             without a group (Kafka: mode = \"assign\" and the partition)",
            config.consumer.name,
            config.consumer.class,
            crate::engine::REPLAY_READER_SUFFIX
        )));
    }
    let from = (request.from != "beginning").then(|| parse_offset(&request.from, request.string));
    let to = request
        .to
        .as_deref()
        .map(|t| parse_offset(t, request.string));
    if let (Some(from), Some(to)) = (&from, &to) {
        if past(from.as_ref(), to) {
            return Err(AppError::Usage(format!(
                "--to {to} comes before --from {from}: nothing to replay"
            )));
        }
    }
    let timeout = Duration::from_millis(config.consumer.timeout_ms);
    // An end that is not a number cannot be passed, only met: it is looked for first (a read
    // of the range that delivers nothing), so that a --to not on the bus delivers nothing.
    if let Some(to) = to
        .as_ref()
        .filter(|to| !matches!(to, Offset::Int(_) | Offset::Float(_)))
    {
        let mut scout = new_replay_reader(&config, &plugin)?;
        position(&mut scout, from.as_ref(), timeout).map_err(|error| refusal(&config, error))?;
        let found = find(&mut scout, to, &shutdown);
        if let Err(error) = scout.close() {
            tracing::warn!("{error}");
        }
        match found? {
            Some(true) => {}
            Some(false) => {
                return Err(AppError::Usage(format!(
                    "--to {to}: no such offset on the bus after {}: nothing was delivered",
                    from.as_ref()
                        .map_or_else(|| "its beginning".to_owned(), |o| format!("offset {o}"))
                )));
            }
            None => return Err(AppError::Runtime("stopped by a signal".to_owned())),
        }
    }
    position(&mut consumer, from.as_ref(), timeout).map_err(|error| refusal(&config, error))?;
    tracing::info!(
        "replaying consumer '{}' from {} to {}{} (the committed offset is not touched)",
        config.consumer.name,
        from.as_ref()
            .map_or_else(|| "the beginning".to_owned(), |o| format!("offset {o}")),
        to.as_ref().map_or_else(
            || "the end of the bus".to_owned(),
            |o| format!("offset {o}")
        ),
        if request.dry_run { " (dry run)" } else { "" }
    );
    let mut counts = vec![0u64; matchers.len()];
    let mut progress = Progress::new(request.dry_run);
    let mut count = ReplayCount::default();
    let result = replay_range(
        &mut consumer,
        &mut built,
        &matchers,
        &extra,
        to.as_ref(),
        &mut counts,
        &mut count,
        &mut |count| progress.show(count),
        &shutdown,
    );
    progress.finish();
    let flushed = built
        .iter_mut()
        .try_for_each(|h| h.handler.sync().map_err(|e| (h.name.clone(), e)));
    if let Err(error) = consumer.close() {
        tracing::warn!("{error}");
    }
    let verb = if request.dry_run {
        "would deliver"
    } else {
        "delivered"
    };
    // The summary goes to stderr: stdout is a `stdout` handler's.
    eprintln!(
        "replay of consumer '{}': {} events read{}",
        config.consumer.name,
        count.events,
        if count.offset.is_empty() {
            String::new()
        } else {
            format!(", the last at offset {}", count.offset)
        }
    );
    for ((name, _), count) in matchers.iter().zip(&counts) {
        eprintln!("  handler {name}: {verb} {count} events");
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let ended = match &result {
            Ok(End::Reached | End::Drained) if flushed.is_ok() => "done",
            Ok(End::Stopped) => "stopped",
            _ => "failed",
        };
        eprintln!("{}", progress.json(ended, &count));
    }
    if let Err((name, error)) = flushed {
        return Err(AppError::Runtime(format!(
            "handler '{name}' could not make its deliveries durable: {error}"
        )));
    }
    match result? {
        End::Reached => Ok(()),
        End::Drained => {
            if let Some(to) = &to {
                if !matches!(to, Offset::Int(_) | Offset::Float(_)) {
                    tracing::warn!("offset {to} was not met: replayed to the end of the bus");
                }
            }
            Ok(())
        }
        End::Stopped => Err(AppError::Runtime(format!(
            "stopped by a signal: replayed up to offset {}; go on with --from after it",
            if count.offset.is_empty() {
                "none"
            } else {
                &count.offset
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buslink_plugin_api::OffsetRef;

    #[test]
    fn numeric_offsets_end_the_range_past_to_and_others_only_at_it() {
        assert!(past(OffsetRef::Int(8), &Offset::Int(7)));
        assert!(!past(OffsetRef::Int(7), &Offset::Int(7)));
        assert!(past(OffsetRef::Float(7.5), &Offset::Int(7)));
        assert!(!past(OffsetRef::String("b"), &Offset::String("a".into())));
        assert!(match_filter(&["objtype=SRV*".into(), "category=base".into()]).is_ok());
        assert!(match_filter(&["colour=red".into()]).is_err());
        assert!(match_filter(&["objtype".into()]).is_err());
    }
}
