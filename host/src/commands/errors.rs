//! `buslink errors list|retry|drop --config FILE [ID]`: the error queue of a consumer.

use crate::config::{Config, FailurePolicy};
use crate::error::AppError;
use crate::error_queue::retry_queued;
use crate::error_queue::ErrorQueue;
use crate::handlers;
use crate::handlers::output_positions;
use crate::lock::ConsumerLock;
use crate::offsets::OffsetCache;

fn runtime(error: impl ToString) -> AppError {
    AppError::Runtime(error.to_string())
}

/// The consumer's lock, or an error that points at `buslink ctl errors ACTION` (the same
/// command through the daemon) when its daemon runs.
fn lock(config: &Config, action: &str) -> Result<ConsumerLock, AppError> {
    ConsumerLock::acquire(&config.process.state_dir, &config.consumer.name).map_err(|error| {
        match error {
            crate::lock::LockError::Held { .. } => AppError::Runtime(format!(
                "{error}: its daemon owns the error queue; do it through the daemon: buslink ctl \
             --config {} errors {action} --consumer {}",
                config.source.path.display(),
                config.consumer.name
            )),
            other => runtime(other),
        }
    })
}

fn load(config: &Config) -> Result<ErrorQueue, AppError> {
    ErrorQueue::load(&config.process.state_dir, &config.consumer.name).map_err(runtime)
}

/// `errors list`.
pub fn list(target: &crate::cli::Target, json: bool) -> Result<(), AppError> {
    let config = target.load()?;
    let queue = load(&config)?;
    print!("{}", queue.describe(&config.consumer.name, json));
    Ok(())
}

/// `errors retry [ID]`: tries the queued events now (all objects, or the object of ID).
pub fn retry(target: &crate::cli::Target, id: Option<u64>) -> Result<(), AppError> {
    let config = target.load()?;
    let _lock = lock(
        &config,
        &format!(
            "retry{}",
            id.map_or_else(String::new, |id| format!(" {id}"))
        ),
    )?;
    let mut queue = load(&config)?;
    if let Some(id) = id {
        if queue.get(id).is_none() {
            return Err(AppError::Usage(format!("no queued event #{id}")));
        }
    }
    // Exactly-once outputs: a retry writes to them, so their committed lengths move with it.
    let cache = OffsetCache::new(&config.process.state_dir, &config.consumer.name);
    let mut record = cache.load().map_err(runtime)?;
    let mut handled = 0;
    for handler_config in &config.handlers {
        if handler_config.on_failure != FailurePolicy::ErrorQueue
            || !queue.holds_any(&handler_config.name)
            || id.is_some_and(|id| {
                queue
                    .get(id)
                    .is_none_or(|e| e.handler != handler_config.name)
            })
        {
            continue;
        }
        let committed = record
            .as_ref()
            .and_then(|r| r.outputs.get(&handler_config.name));
        let mut handler = handlers::build_one(
            handler_config,
            &config.base_dir,
            &config.plugin_dirs,
            committed,
        )
        .map_err(|e| AppError::Runtime(format!("handler '{}': {e}", handler_config.name)))?;
        handled += retry_queued(&mut handler, &mut queue, id);
        handler.handler.sync().map_err(|e| runtime(e.message))?;
        if let Some(record) = record.as_mut() {
            record
                .outputs
                .extend(output_positions(std::slice::from_ref(&handler)));
        }
    }
    // The outputs' lengths before the queue: a crash between the two writes repeats a retried
    // event at the next retry rather than cutting it out of its file.
    if let Some(record) = &record {
        cache.commit(record).map_err(runtime)?;
    }
    queue.save().map_err(runtime)?;
    println!(
        "consumer '{}': {handled} queued event(s) handled, {} left",
        config.consumer.name,
        queue.events().len()
    );
    Ok(())
}

/// `errors drop ID` or `errors drop --all`.
pub fn drop_events(
    target: &crate::cli::Target,
    id: Option<u64>,
    all: bool,
) -> Result<(), AppError> {
    let config = target.load()?;
    let _lock = lock(
        &config,
        &match (id, all) {
            (Some(id), _) => format!("drop {id}"),
            (None, _) => "drop --all".to_owned(),
        },
    )?;
    let mut queue = load(&config)?;
    let ids: Vec<u64> = match (id, all) {
        (Some(id), false) => vec![id],
        (None, true) => queue.events().iter().map(|e| e.id).collect(),
        _ => return Err(AppError::Usage("name one queued event ID, or --all".into())),
    };
    for id in &ids {
        queue
            .remove(*id)
            .ok_or_else(|| AppError::Usage(format!("no queued event #{id}")))?;
    }
    queue.save().map_err(runtime)?;
    println!(
        "consumer '{}': dropped {} event(s), {} left",
        config.consumer.name,
        ids.len(),
        queue.events().len()
    );
    Ok(())
}
