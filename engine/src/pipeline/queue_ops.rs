//! The requests the control socket hands the dispatcher (`ctl errors`, `ctl replay`), and the
//! timed retries of queued events.

use super::commit::Committer;
use super::deliver::for_each_handler;
use super::PipelineError;
use crate::config::FailurePolicy;
use crate::error_queue::ErrorQueue;
use crate::handlers::ConfiguredHandler;
use std::time::Instant;

/// A consumer's replay job, and what starting one takes.
pub(super) struct Replays<'a> {
    /// The running job.
    pub(super) run: Option<super::replay_job::ReplayRun>,
    pub(super) source: Option<super::replay_job::ReplaySource<'a>>,
    pub(super) batch_size: usize,
    pub(super) timeout: std::time::Duration,
}

/// Carries out the requests of the control socket (`ctl errors`, `ctl replay`), between
/// batches.
pub(super) fn serve_queue_requests(
    control: &crate::steering::Shared,
    handlers: &mut [ConfiguredHandler],
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
    replays: &mut Replays<'_>,
) -> Result<(), PipelineError> {
    use crate::steering::{Command, QueueCommand, QueueReply};
    for request in control.take_requests() {
        let command = match &request.command {
            Command::Queue(command) => command,
            Command::Replay(spec) => {
                let answer = if let Some(running) = replays.run.as_ref() {
                    QueueReply::ReplayRefused(format!(
                        "replay #{} is running: one at a time (`ctl replay --cancel` stops it)",
                        running.id()
                    ))
                } else {
                    match super::replay_job::start(
                        spec,
                        handlers,
                        replays.source,
                        replays.batch_size,
                        replays.timeout,
                        control,
                    ) {
                        Ok(run) => {
                            let job = run.job().clone();
                            replays.run = Some(run);
                            QueueReply::ReplayStarted(job)
                        }
                        Err(why) => QueueReply::ReplayRefused(why),
                    }
                };
                let _ = request.reply.send(answer);
                continue;
            }
            Command::CancelReplay => {
                let cancelled = replays
                    .run
                    .take()
                    .map(|mut run| run.cancel("cancelled through the control socket", control));
                let _ = request.reply.send(QueueReply::ReplayCancelled(cancelled));
                continue;
            }
        };
        let answer = match command {
            QueueCommand::List { .. } => QueueReply::Listed(queue.events().to_vec()),
            QueueCommand::Retry { id: Some(id) } if queue.get(*id).is_none() => {
                QueueReply::NoSuchEvent(*id)
            }
            QueueCommand::Retry { id } => {
                let chosen: Vec<usize> = handlers
                    .iter()
                    .enumerate()
                    .filter(|(_, handler)| {
                        handler.on_failure == FailurePolicy::ErrorQueue
                            && match id {
                                Some(id) => {
                                    queue.get(*id).is_some_and(|e| e.handler == handler.name)
                                }
                                None => queue.holds_any(&handler.name),
                            }
                    })
                    .map(|(index, _)| index)
                    .collect();
                let handled = retry_handlers(handlers, &chosen, *id, queue, committer)?;
                QueueReply::Retried {
                    handled,
                    left: queue.events().len(),
                }
            }
            QueueCommand::Drop { ids } => {
                let ids: Vec<u64> = match ids {
                    Some(ids) => ids.clone(),
                    None => queue.events().iter().map(|e| e.id).collect(),
                };
                match ids.iter().find(|id| queue.get(**id).is_none()) {
                    Some(missing) => QueueReply::NoSuchEvent(*missing),
                    None => {
                        for id in &ids {
                            queue.remove(*id);
                        }
                        queue.save()?;
                        tracing::info!(
                            "dropped {} queued event(s) through the control socket",
                            ids.len()
                        );
                        QueueReply::Dropped {
                            dropped: ids.len(),
                            left: queue.events().len(),
                        }
                    }
                }
            }
        };
        let left = queue.events().len();
        control.update(|status| status.error_queue = left);
        let _ = request.reply.send(answer);
    }
    Ok(())
}

/// Retries of the error queue, on each handler's `retry_interval`.
#[derive(Default)]
pub(super) struct QueueRetries {
    pub(super) last: std::collections::HashMap<String, Instant>,
}

impl QueueRetries {
    /// Tries the oldest queued event of each object whose handler's interval has passed; after
    /// a success the object's next events follow at once, in order.
    pub(super) fn run_due(
        &mut self,
        handlers: &mut [ConfiguredHandler],
        queue: &mut ErrorQueue,
        committer: &mut Committer<'_>,
        control: Option<&crate::steering::Shared>,
    ) -> Result<(), PipelineError> {
        if queue.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let due: Vec<usize> = handlers
            .iter()
            .enumerate()
            .filter(|(_, handler)| {
                handler.on_failure == FailurePolicy::ErrorQueue
                    && queue.holds_any(&handler.name)
                    && now.duration_since(*self.last.entry(handler.name.clone()).or_insert(now))
                        >= handler.retry_interval
            })
            .map(|(index, _)| index)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        for &index in &due {
            self.last.insert(handlers[index].name.clone(), now);
        }
        retry_handlers(handlers, &due, None, queue, committer)?;
        if let Some(control) = control {
            let left = queue.events().len();
            control.update(|status| status.error_queue = left);
        }
        Ok(())
    }
}

/// Tries the queued events of the handlers at `chosen` (only the object of `only` when given),
/// as the retry interval and `ctl errors retry` do: what was handled is committed first (with
/// the events it queued), the retried handlers are synced, their outputs' new lengths are
/// committed before the queue that no longer holds what they took is saved (a crash in between
/// repeats a retried event rather than cutting it out of its file). Returns how many were
/// handled.
pub(super) fn retry_handlers(
    handlers: &mut [ConfiguredHandler],
    chosen: &[usize],
    only: Option<u64>,
    queue: &mut ErrorQueue,
    committer: &mut Committer<'_>,
) -> Result<usize, PipelineError> {
    committer.commit(handlers, queue)?;
    let mut handled = 0;
    for &index in chosen {
        handled += crate::error_queue::retry_queued(&mut handlers[index], queue, only);
    }
    for_each_handler(
        handlers
            .iter_mut()
            .enumerate()
            .filter(|(index, _)| chosen.contains(index))
            .map(|(_, handler)| handler),
        |h| h.sync(),
    )?;
    committer.commit_outputs(handlers)?;
    queue.save()?;
    Ok(handled)
}
