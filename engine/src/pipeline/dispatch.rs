//! The dispatcher: each event to the handlers whose match selects it, per-object queueing,
//! the failure policies (stop, dead-letter, queue), rewinds and gaps.

use super::commit::Committer;
use super::deliver::{deliver, for_each_handler, Delivery};
use super::queue_ops::serve_queue_requests;
use super::PipelineError;
use crate::config::{FailurePolicy, GapPolicy};
use crate::dead_letter::DeadLetterFile;
use crate::error_queue::{object_key, ErrorQueue};
use crate::handlers::{ConfiguredHandler, DispatchedEvent};
use crate::health::Health;
use crate::metrics::{CategoryCounter, HandlerCounters, Metrics, Outcome};
use crate::shutdown::Shutdown;
use buslink_plugin_api::{EventBatch, Gap, Offset};
use std::time::{Duration, Instant};

/// The handlers and what they need while dispatching.
pub(super) struct Dispatcher<'a, 'r> {
    pub(super) handlers: &'a mut [ConfiguredHandler],
    pub(super) dead_letters: &'a mut DeadLetterFile,
    pub(super) error_queue: &'a mut ErrorQueue,
    pub(super) shutdown: &'a Shutdown,
    /// Each handler's [`position`](crate::handlers::Handler::position) before the event in
    /// hand (kept between events: no allocation per event).
    pub(super) positions: &'a mut Vec<Option<u64>>,
    /// The error-queue entries made for the event in hand.
    pub(super) queued: Vec<u64>,
    pub(super) on_gap: GapPolicy,
    pub(super) metrics: Option<&'a Metrics>,
    /// Each handler's outcome counters, in the handlers' order (empty without metrics).
    pub(super) counters: &'a [HandlerCounters],
    /// The control socket's pause and error-queue commands, looked at between two events.
    pub(super) control: Option<&'a crate::steering::Shared>,
    /// The consumer's facts: each event handled is counted there (one atomic add), and its
    /// tick says when what is due by the clock is looked at.
    pub(super) health: Option<&'a Health>,
    /// The replay job the socket's requests may start or cancel.
    pub(super) replays: &'a mut super::queue_ops::Replays<'r>,
}

impl Dispatcher<'_, '_> {
    /// Gives one event to every handler that matches it; `Err` when the event is not handled.
    pub(super) fn dispatch_event(
        &mut self,
        event: &DispatchedEvent<'_>,
    ) -> Result<(), PipelineError> {
        let dead_letters_before = self.dead_letters.length();
        self.queued.clear();
        let result = self.try_dispatch_event(event);
        if result.is_err() {
            // The event is not handled and will be delivered again: what took it already gives
            // it back (exactly-once outputs, its error-queue entries, its dead-letter records),
            // so it is not there twice after it comes again.
            for (handler, position) in self.handlers.iter_mut().zip(self.positions.iter()) {
                if let Some(position) = *position {
                    if let Err(error) = handler.handler.rewind(position) {
                        tracing::error!("handler '{}': {error}", handler.name);
                    }
                }
            }
            for id in self.queued.drain(..) {
                self.error_queue.remove(id);
            }
            if let Err(error) = self.dead_letters.cut(dead_letters_before) {
                tracing::error!("{}: {error}", self.dead_letters.path().display());
            }
        }
        result
    }

    pub(super) fn try_dispatch_event(
        &mut self,
        event: &DispatchedEvent<'_>,
    ) -> Result<(), PipelineError> {
        self.positions.clear();
        self.positions
            .extend(self.handlers.iter().map(|h| h.handler.position()));
        for (index, handler) in self.handlers.iter_mut().enumerate() {
            let counters = self.counters.get(index);
            if !handler.matcher.matches(event) {
                continue;
            }
            // An object with an event waiting in the error queue: later ones wait behind it.
            if handler.on_failure == FailurePolicy::ErrorQueue
                && self.error_queue.holds_any(&handler.name)
            {
                let key = object_key(event, handler.queue_key.as_deref());
                if self.error_queue.holds(&handler.name, &key) {
                    let id = self
                        .error_queue
                        .push(&handler.name, key, &event.event, None, 0);
                    self.queued.push(id);
                    // Put in the error queue as surely as a failed one: counted the same.
                    if let Some(counters) = counters {
                        counters.count(Outcome::Queued);
                    }
                    tracing::info!(
                        "handler '{}': offset {} queued (#{id}) behind an earlier event of the same object",
                        handler.name,
                        event.offset_text()
                    );
                    continue;
                }
            }
            match deliver(handler, event, self.shutdown, counters, self.control) {
                Delivery::Done => {}
                Delivery::Interrupted => {
                    return Err(PipelineError::Interrupted {
                        handler: handler.name.clone(),
                        offset: event.offset_text(),
                    })
                }
                Delivery::Failed { error, attempts } => match handler.on_failure {
                    FailurePolicy::Stop => {
                        return Err(PipelineError::Handler {
                            handler: handler.name.clone(),
                            offset: event.offset_text(),
                            attempts,
                            message: error,
                        })
                    }
                    FailurePolicy::ErrorQueue => {
                        let key = object_key(event, handler.queue_key.as_deref());
                        let id = self.error_queue.push(
                            &handler.name,
                            key.clone(),
                            &event.event,
                            Some(error.clone()),
                            attempts,
                        );
                        self.queued.push(id);
                        if let Some(counters) = counters {
                            counters.count(Outcome::Queued);
                        }
                        tracing::warn!(
                            "handler '{}' failed on offset {} after {attempts} attempt(s): {error}; queued as #{id} for object {key}, retried later",
                            handler.name,
                            event.offset_text()
                        );
                    }
                    FailurePolicy::DeadLetter => {
                        self.dead_letters
                            .record(&handler.name, &error, attempts, event)
                            .map_err(|e| PipelineError::DeadLetter {
                                path: self.dead_letters.path().to_path_buf(),
                                message: e.to_string(),
                            })?;
                        if let Some(counters) = counters {
                            counters.count(Outcome::DeadLettered);
                        }
                        tracing::warn!(
                            "handler '{}' gave up on offset {} after {attempts} attempt(s): {error}; recorded in {}",
                            handler.name,
                            event.offset_text(),
                            self.dead_letters.path().display()
                        );
                    }
                },
            }
        }
        Ok(())
    }

    /// Hands every event of the batch to the handlers that match it, stopping at the first
    /// event not handled; records the last fully handled event for the next commit.
    ///
    /// Starts at event `start` (a batch taken up again after a pause). `Ok(Some(i))`: paused
    /// before event `i`, what came before it committed.
    pub(super) fn dispatch_batch(
        &mut self,
        batch: &EventBatch,
        start: usize,
        next_after_last: &Option<Offset>,
        committer: &mut Committer<'_>,
    ) -> Result<Option<usize>, PipelineError> {
        let mut handled = start;
        let mut recorded = start;
        let mut paused_at = None;
        let mut outcome = Ok(());
        // The counters of the categories met in this batch (counted as each event is handled,
        // so a scrape shows them while a handler holds the next one), and the events Hermes
        // mode skips, counted once per batch.
        let mut tally: Vec<(&str, CategoryCounter)> = Vec::new();
        let mut skipped = 0;
        // (The gaps before `start` were dealt with before the pause.)
        let mut gaps = batch
            .gaps()
            .filter(|gap| gap.before_event >= start)
            .peekable();
        let mut stopped = false;
        for (index, event) in batch.iter().enumerate().skip(start) {
            // A stop ends the batch after the event in hand: the rest come again.
            if self.shutdown.requested() {
                stopped = true;
                break;
            }
            // The control socket, between two events: what was handled is committed first,
            // then error-queue commands are carried out, and a pause holds the rest.
            if let Some(control) = self.control.filter(|c| c.paused() || c.has_requests()) {
                committer.record(batch, recorded, handled, next_after_last);
                recorded = handled;
                let served = committer
                    .commit(self.handlers, self.error_queue)
                    .and_then(|()| {
                        serve_queue_requests(
                            control,
                            self.handlers,
                            self.error_queue,
                            committer,
                            self.replays,
                        )
                    });
                if let Err(error) = served {
                    outcome = Err(error);
                    break;
                }
                if control.paused() {
                    paused_at = Some(index);
                    stopped = true;
                    break;
                }
            }
            if let Err(error) = self.pass_gaps(&mut gaps, index, committer) {
                outcome = Err(error);
                break;
            }
            let event = DispatchedEvent::new(event);
            if let Some(health) = self.health {
                health.started();
            }
            // Hermes mode skips some events: they advance the offset all the same.
            let admitted = committer.hermes.as_ref().is_none_or(|h| h.admit(&event));
            if admitted {
                if let Err(error) = self.dispatch_event(&event) {
                    outcome = Err(error);
                    break;
                }
            } else {
                skipped += 1;
            }
            if let Some(hermes) = committer.hermes.as_mut() {
                hermes.handled(&event);
            }
            // `buslink_events_total` counts what reached the handlers; skipped ones apart.
            if let Some(metrics) = self.metrics.filter(|_| admitted) {
                let category = event.event.category;
                match tally.iter().find(|(known, _)| *known == category) {
                    Some((_, counter)) => counter.count(),
                    // Free-text categories (Kafka keys) are looked up one by one.
                    None if tally.len() >= 16 => metrics.event(category),
                    None => {
                        let counter = metrics.category_counter(category);
                        counter.count();
                        tally.push((category, counter));
                    }
                }
            }
            handled += 1;
            if let Some(health) = self.health {
                health.handled();
            }
            // The clock of `every_ms` starts at the first event handled and not committed.
            if committer.pending_since.is_none() {
                committer.pending_since = Some(Instant::now());
            }
            // A commit by `every_ms` inside a batch (a slow handler must not hold the commit
            // until the batch's end), looked at every tick of the monitor (one atomic load per
            // event).
            let ticked = self.health.is_some_and(Health::take_tick);
            let due_by_time = ticked
                && committer.pending_since.is_some_and(|since| {
                    since.elapsed() >= Duration::from_millis(committer.policy.every_ms)
                });
            // `every_events` holds inside a batch too: with 1, every event is committed.
            if due_by_time
                || committer.pending_count + (handled - recorded) as u64
                    >= committer.policy.every_events
            {
                committer.record(batch, recorded, handled, next_after_last);
                recorded = handled;
                if let Err(error) = committer.commit(self.handlers, self.error_queue) {
                    outcome = Err(error);
                    break;
                }
            }
        }
        if outcome.is_ok() && !stopped {
            // Gaps after the batch's last event.
            outcome = self.pass_gaps(&mut gaps, batch.len(), committer);
        }
        if let Some(metrics) = self.metrics.filter(|_| skipped > 0) {
            metrics.skipped(skipped);
        }
        committer.record(batch, recorded, handled, next_after_last);
        for_each_handler(self.handlers.iter_mut(), |h| h.flush())?;
        outcome.map(|()| paused_at)
    }

    /// Deals with the gaps reported before the event at `index`, by `on_gap`: an error
    /// (`stop`) or a warning and the counters (`warn`).
    pub(super) fn pass_gaps<'b>(
        &mut self,
        gaps: &mut std::iter::Peekable<impl Iterator<Item = Gap<'b>>>,
        index: usize,
        committer: &mut Committer<'_>,
    ) -> Result<(), PipelineError> {
        while let Some(gap) = gaps.next_if(|gap| gap.before_event <= index) {
            committer.gaps += 1;
            committer.events_lost += gap.count.unwrap_or(0);
            if let Some(metrics) = self.metrics {
                metrics.gap(gap.count.unwrap_or(0));
            }
            if let Some(health) = self.health {
                health.gap(gap.count.unwrap_or(0));
            }
            let count = gap
                .count
                .map_or_else(|| "how many unknown".to_owned(), |n| format!("{n} events"));
            if self.on_gap == GapPolicy::Stop {
                return Err(PipelineError::Gap {
                    range: gap.range.to_owned(),
                    count,
                });
            }
            tracing::warn!(
                "gap on the bus: {} ({count}) are gone before this consumer read them; going on \
                 (on_gap = \"warn\"); {} gap(s) so far",
                gap.range,
                committer.gaps
            );
        }
        Ok(())
    }
}
