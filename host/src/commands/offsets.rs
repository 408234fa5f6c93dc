//! `buslink offsets show|set|reset --config FILE`: read or move a consumer's committed offset.
//! Changes take the consumer's lock, so they are refused while its daemon runs.

use crate::commands::run::build_consumer;
use crate::commands::AppError;
use crate::config::{Config, StartPosition};
use crate::lock::ConsumerLock;
use crate::offsets::{OffsetCache, ResumePoint};
use buslink_plugin_api::{ErrorKind, Offset};
use std::path::Path;

fn cache_of(config: &Config) -> OffsetCache {
    OffsetCache::new(&config.state_dir, &config.consumer.name)
}

fn runtime(error: impl ToString) -> AppError {
    AppError::Runtime(error.to_string())
}

/// `offsets show`.
pub fn show(config_path: &Path, json: bool) -> Result<(), AppError> {
    let config = Config::load(config_path)?;
    let cache = cache_of(&config);
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

/// Reads an offset from the command line: an integer, a float, or (else, or with `as_string`)
/// a string.
pub fn parse_offset(text: &str, as_string: bool) -> Offset {
    if as_string {
        return Offset::String(text.to_owned());
    }
    if let Ok(int) = text.parse::<i64>() {
        Offset::Int(int)
    } else if let Ok(float) = text.parse::<f64>() {
        Offset::Float(float)
    } else {
        Offset::String(text.to_owned())
    }
}

/// `offsets set OFFSET`: the next start begins at OFFSET.
pub fn set(config_path: &Path, offset: &str, as_string: bool, force: bool) -> Result<(), AppError> {
    let config = Config::load(config_path)?;
    let _lock = ConsumerLock::acquire(&config.state_dir, &config.consumer.name).map_err(runtime)?;
    let cache = cache_of(&config);
    let previous = cache.load().map_err(runtime)?;
    let offset = parse_offset(offset, as_string);
    if !force {
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
    let checked = consumer.open().and_then(|()| consumer.seek(offset));
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

/// `offsets reset`: forget the committed offset; the next start uses `start`.
pub fn reset(config_path: &Path) -> Result<(), AppError> {
    let config = Config::load(config_path)?;
    let _lock = ConsumerLock::acquire(&config.state_dir, &config.consumer.name).map_err(runtime)?;
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
