//! One event to one handler, with its retries (also used by `buslink replay`).

use super::PipelineError;
use crate::handlers::{ConfiguredHandler, DispatchedEvent};
use crate::metrics::{HandlerCounters, Outcome};
use crate::shutdown::Shutdown;
use std::time::{Duration, Instant};

/// Runs `step` (flush or sync) on each handler; the first failure names its handler.
pub(super) fn for_each_handler<'a>(
    handlers: impl Iterator<Item = &'a mut ConfiguredHandler>,
    step: impl Fn(&mut dyn crate::handlers::Handler) -> Result<(), crate::handlers::HandlerError>,
) -> Result<(), PipelineError> {
    for handler in handlers {
        step(handler.handler.as_mut()).map_err(|e| PipelineError::HandlerSync {
            handler: handler.name.clone(),
            message: e.message,
        })?;
    }
    Ok(())
}

/// How delivering one event to one handler ended.
pub enum Delivery {
    Done,
    Failed { error: String, attempts: u32 },
    Interrupted,
}

/// Gives one event to one handler, retrying with exponential backoff as configured.
pub fn deliver(
    handler: &mut ConfiguredHandler,
    event: &DispatchedEvent<'_>,
    shutdown: &Shutdown,
    counters: Option<&HandlerCounters>,
    control: Option<&crate::steering::Shared>,
) -> Delivery {
    let mut wait = handler.retry.base;
    let mut attempt = 1;
    let count = |outcome| {
        if let Some(counters) = counters {
            counters.count(outcome);
        }
    };
    loop {
        match handler.handler.handle(event) {
            Ok(()) => {
                count(Outcome::Success);
                return Delivery::Done;
            }
            Err(error) if attempt >= handler.retry.attempts => {
                count(Outcome::Failure);
                return Delivery::Failed {
                    error: error.message,
                    attempts: attempt,
                };
            }
            Err(error) => {
                count(Outcome::Retry);
                let problem = format!(
                    "handler '{}' failed on offset {} (attempt {attempt} of {}): {}",
                    handler.name,
                    event.offset_text(),
                    handler.retry.attempts,
                    error.message,
                );
                tracing::warn!("{problem}; retrying in {} ms", wait.as_millis());
                // `status` shows why the consumer is not moving while it retries.
                if let Some(control) = control {
                    control.update(|status| status.note_error(problem));
                }
                // In steps of a second at most: a stop is heard during a long wait.
                let until = Instant::now() + wait;
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    if !shutdown.sleep(left.min(Duration::from_secs(1))) {
                        return Delivery::Interrupted;
                    }
                }
                wait = (wait * 2).min(handler.retry.max);
                attempt += 1;
            }
        }
    }
}
