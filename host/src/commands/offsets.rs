//! `buslink offsets show|set|reset|import-hermes --config FILE`: read or move a consumer's
//! committed offset. Changes take the consumer's lock, so they are refused while its daemon
//! runs.

use crate::config::{Config, StartPosition};
use crate::engine::build_consumer;
use crate::error::AppError;
use crate::lock::ConsumerLock;
use crate::offsets::{OffsetCache, ResumePoint};
use buslink_plugin_api::session::{open_at, Position};
use buslink_plugin_api::{ErrorKind, Offset};
use std::path::Path;

fn cache_of(config: &Config) -> OffsetCache {
    OffsetCache::new(&config.process.state_dir, &config.consumer.name)
}

fn runtime(error: impl ToString) -> AppError {
    AppError::Runtime(error.to_string())
}

/// `offsets show`: the named consumer's committed offset, or the only one's; with several
/// consumers and none named, every consumer's (JSON: `{"consumers": [{"consumer": NAME,
/// "record": RECORD or null}, ...]}`).
pub fn show(target: &crate::cli::Target, json: bool) -> Result<(), AppError> {
    let configs = match &target.consumer {
        Some(_) => vec![target.load()?],
        None => Config::load_all(&target.config)?,
    };
    if let [config] = configs.as_slice() {
        return show_one(config, json);
    }
    if json {
        let mut consumers = Vec::new();
        for config in &configs {
            let record = cache_of(config).load().map_err(runtime)?;
            consumers.push(serde_json::json!({
                "consumer": config.consumer.name,
                "record": record,
            }));
        }
        let all = serde_json::json!({ "consumers": consumers });
        let text = serde_json::to_string_pretty(&all).map_err(runtime)?;
        println!("{text}");
        return Ok(());
    }
    for config in &configs {
        show_one(config, false)?;
    }
    Ok(())
}

/// One consumer's committed offset, as a line or as its cache record in JSON.
fn show_one(config: &Config, json: bool) -> Result<(), AppError> {
    let cache = cache_of(config);
    let record = cache.load().map_err(runtime)?;
    if json {
        let text = serde_json::to_string_pretty(&record).map_err(runtime)?;
        println!("{text}");
        return Ok(());
    }
    let name = &config.consumer.name;
    match record {
        None => println!(
            "consumer '{name}': no committed offset ({} does not exist); the next start begins at {}",
            cache.path().display(),
            describe_start(&config.consumer.start)
        ),
        Some(record) => {
            let position = match OffsetCache::resume_point(&record) {
                Some(ResumePoint::After(last)) => format!("last handled offset {last}"),
                Some(ResumePoint::At(next)) => format!("set to start at offset {next}"),
                None => format!(
                    "no offset committed yet (the next start begins at {})",
                    describe_start(&config.consumer.start)
                ),
            };
            let next = match (&record.last_offset, &record.next_offset) {
                (Some(_), Some(next)) => format!(", next offset {next}"),
                _ => String::new(),
            };
            println!(
                "consumer '{name}': {position}{next}; {} events handled; committed {} ({})",
                record.events_handled,
                record.updated_at.to_rfc3339(),
                cache.path().display()
            );
        }
    }
    Ok(())
}

fn describe_start(start: &StartPosition) -> String {
    match start {
        StartPosition::Beginning => "the beginning (start = \"beginning\")".into(),
        StartPosition::End => "the end (start = \"end\")".into(),
        StartPosition::At(offset) => format!("offset {offset} (start)"),
    }
}

/// `offsets set OFFSET`: the next start begins at OFFSET.
pub fn set(
    target: &crate::cli::Target,
    offset: &str,
    as_string: bool,
    force: bool,
) -> Result<(), AppError> {
    let config = target.load()?;
    let _lock =
        ConsumerLock::acquire(&config.process.state_dir, &config.consumer.name).map_err(runtime)?;
    let cache = cache_of(&config);
    let previous = cache.load().map_err(runtime)?;
    let offset = crate::offsets::parse_offset(offset, as_string);
    if force {
        refuse_bus_owned(&config, &build_consumer(&config)?.1)?;
    } else {
        check_on_the_bus(&config, &offset)?;
    }
    let handled = previous.as_ref().map_or(0, |record| record.events_handled);
    cache
        .commit(&cache.record(None, Some(offset.clone()), handled))
        .map_err(runtime)?;
    println!(
        "consumer '{}': the next start begins at offset {offset} ({})",
        config.consumer.name,
        cache.path().display()
    );
    Ok(())
}

/// Asks the bus whether `offset` is on it (the plugin's `seek`): an offset it refuses is not
/// set (`--force` sets it anyway); a bus that cannot be reached is said and not a refusal.
fn check_on_the_bus(config: &Config, offset: &Offset) -> Result<(), AppError> {
    let (_plugin, mut consumer) = build_consumer(config)?;
    refuse_bus_owned(config, &consumer)?;
    let timeout = Some(std::time::Duration::from_millis(config.consumer.timeout_ms));
    let checked = open_at(&mut consumer, timeout, false, Position::At(offset));
    let _ = consumer.close();
    match checked {
        Ok(()) => Ok(()),
        Err(error) if error.error.kind() == ErrorKind::OffsetNotFound => Err(AppError::Usage(
            format!("not set: {error} (--force sets it anyway)"),
        )),
        Err(error) => {
            tracing::warn!("could not check offset {offset} against the bus: {error}; set anyway");
            Ok(())
        }
    }
}

/// What `offsets import-hermes` takes from a hermes-client cache file.
#[derive(Debug, PartialEq)]
pub struct HermesClientPlace {
    /// `nextoffset`: the offset of the next event to process.
    pub next_offset: i64,
    /// `initstartoffset` and `initstopoffset`: the initsync sequence the client replayed.
    pub initsync: Option<(i64, i64)>,
    /// How many events wait in the client's error queue (`queueErrors`).
    pub queued_errors: usize,
}

/// Reads a hermes-client cache file (Hermes 1.0.x `HermesClientCache`, written by
/// `LocalCache.savecachefile`): JSON `{"__HERMES_VERSION__": ..., "content": {...}}`, gzipped
/// when its name ends in `.gz` or its first bytes say so (Hermes's default,
/// `enable_compression`). Errors name the file and the key.
pub fn read_hermes_client_cache(path: &Path) -> Result<HermesClientPlace, String> {
    use std::io::Read;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: not a gzipped JSON file: {e}", path.display()))?;
        text
    } else {
        String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8 text: {e}", path.display()))?
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a JSON file: {e}", path.display()))?;
    // Hermes wraps the cache's attributes in `content`, with the version beside it.
    let content = value.get("content").unwrap_or(&value);
    let offset = |key: &str| -> Result<Option<i64>, String> {
        match content.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or_else(|| {
                format!(
                    "{}: `{key}` is {value}, not an integer offset (the sqlite and Kafka buses \
                     number their events)",
                    path.display()
                )
            }),
        }
    };
    let next_offset = offset("nextoffset")?.ok_or_else(|| {
        format!(
            "{}: no `nextoffset`: the client never processed an event, so there is no place to \
             take over (is this a hermes-client cache, `_hermes-client-NAME.json[.gz]`?)",
            path.display()
        )
    })?;
    let initsync = match (offset("initstartoffset")?, offset("initstopoffset")?) {
        (Some(start), Some(stop)) => Some((start, stop)),
        _ => None,
    };
    let queued_errors = content
        .get("queueErrors")
        .and_then(|q| q.as_object())
        .map_or(0, |q| q.len());
    Ok(HermesClientPlace {
        next_offset,
        initsync,
        queued_errors,
    })
}

/// `offsets import-hermes PATH`: the next start begins at the client's `nextoffset`; in
/// Hermes mode with its initsync sequence (already replayed when `nextoffset` has reached its
/// `init-stop`, as hermes-client decides).
pub fn import_hermes(
    target: &crate::cli::Target,
    path: &Path,
    force: bool,
) -> Result<(), AppError> {
    let config = target.load()?;
    let place = read_hermes_client_cache(path).map_err(AppError::Usage)?;
    if place.queued_errors > 0 && !force {
        return Err(AppError::Usage(format!(
            "not imported: {} holds {} object(s) in hermes-client's error queue \
             (`queueErrors`), which buslink does not take over: let the client retry them \
             first (or import anyway with --force, leaving them behind)",
            path.display(),
            place.queued_errors
        )));
    }
    let _lock =
        ConsumerLock::acquire(&config.process.state_dir, &config.consumer.name).map_err(runtime)?;
    let next = Offset::Int(place.next_offset);
    if force {
        refuse_bus_owned(&config, &build_consumer(&config)?.1)?;
    } else {
        check_on_the_bus(&config, &next)?;
    }
    let cache = cache_of(&config);
    let previous = cache.load().map_err(runtime)?;
    let handled = previous.as_ref().map_or(0, |record| record.events_handled);
    let mut record = cache.record(None, Some(next.clone()), handled);
    if let Some((start, stop)) = place.initsync {
        record.initstartoffset = Some(Offset::Int(start));
        record.initstopoffset = Some(Offset::Int(stop));
        // hermes-client counts itself initialised once nextoffset has reached init-stop.
        record.initsync_done = place.next_offset >= stop;
    }
    cache.commit(&record).map_err(runtime)?;
    let initsync = match (place.initsync, config.consumer.hermes.is_some()) {
        (Some((start, stop)), true) => format!(
            "; Hermes mode: initsync sequence {start} to {stop}{}",
            if record.initsync_done {
                ", already replayed"
            } else {
                ", replay goes on"
            }
        ),
        (Some(_), false) => {
            "; its initsync offsets are kept for Hermes mode ([consumer.hermes] is off)".into()
        }
        (None, _) => "; the client had not replayed an initsync sequence".into(),
    };
    if place.queued_errors > 0 {
        tracing::warn!(
            "{} object(s) of hermes-client's error queue were left behind (--force)",
            place.queued_errors
        );
    }
    println!(
        "consumer '{}': imported {}: the next start begins at offset {}{initsync} ({})",
        config.consumer.name,
        path.display(),
        place.next_offset,
        cache.path().display()
    );
    Ok(())
}

/// A consumer whose bus keeps the position (a Kafka group) never starts from the cache: moving
/// the cache's offset would be a success that did not happen.
fn refuse_bus_owned(
    config: &Config,
    consumer: &crate::plugin::PluginConsumer,
) -> Result<(), AppError> {
    if consumer.bus_owns_position() {
        return Err(AppError::Usage(format!(
            "consumer '{}': its bus keeps the position (a consumer group), not buslink's cache; \
             move it with the bus's own tools (Kafka: kafka-consumer-groups --reset-offsets) \
             while no member runs",
            config.consumer.name
        )));
    }
    Ok(())
}

/// `offsets reset`: forget the committed offset; the next start uses `start`.
pub fn reset(target: &crate::cli::Target) -> Result<(), AppError> {
    let config = target.load()?;
    let _lock =
        ConsumerLock::acquire(&config.process.state_dir, &config.consumer.name).map_err(runtime)?;
    let cache = cache_of(&config);
    let removed = cache.remove().map_err(runtime)?;
    println!(
        "consumer '{}': {}; the next start begins at {}",
        config.consumer.name,
        if removed {
            format!("removed {}", cache.path().display())
        } else {
            "no committed offset to remove".to_owned()
        },
        describe_start(&config.consumer.start)
    );
    Ok(())
}
