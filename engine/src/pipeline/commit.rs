//! The dispatcher's commit bookkeeping (`Committer`): what was handled and not yet committed,
//! the cadence (`every_events`, `every_ms`, batch ends), the cache record written, gaps.

use super::deliver::for_each_handler;
use super::PipelineError;
use crate::config::CommitPolicy;
use crate::error_queue::ErrorQueue;
use crate::handlers::ConfiguredHandler;
use crate::hermes_mode::HermesFilter;
use crate::metrics::Metrics;
use crate::offsets::{CacheWriter, OffsetCache, OffsetRecord};
use buslink_plugin_api::{EventBatch, Offset};
use chrono::{DateTime, SubsecRound, Utc};
use std::time::{Duration, Instant};

/// The dispatcher's commit bookkeeping.
pub(super) struct Committer<'a> {
    pub(super) cache: &'a OffsetCache,
    pub(super) writer: CacheWriter,
    pub(super) policy: CommitPolicy,
    pub(super) handled_total: u64,
    /// The last event every matching handler accepted (offset, next offset, timestamp), not
    /// yet committed.
    pub(super) pending: Option<(Offset, Option<Offset>, DateTime<Utc>)>,
    /// Gaps the plugin reported, and how many events they are known to hold.
    pub(super) gaps: u64,
    pub(super) events_lost: u64,
    pub(super) pending_count: u64,
    pub(super) pending_since: Option<Instant>,
    pub(super) last_committed: Option<Offset>,
    /// The record of the last commit (or the cache's at start).
    pub(super) last_record: Option<OffsetRecord>,
    pub(super) hermes: Option<HermesFilter>,
    /// The metrics, when `[metrics]` is on.
    pub(super) metrics: Option<&'a Metrics>,
    /// What the control socket shows.
    pub(super) control: Option<&'a crate::steering::Shared>,
}

impl Committer<'_> {
    /// Commits the exactly-once outputs' lengths (the handlers synced) with the offset already
    /// committed: after events of the error queue were written on retry.
    pub(super) fn commit_outputs(
        &mut self,
        handlers: &[ConfiguredHandler],
    ) -> Result<(), PipelineError> {
        let mut record = self
            .last_record
            .clone()
            .unwrap_or_else(|| self.cache.record(None, None, self.handled_total));
        let outputs = crate::handlers::output_positions(handlers);
        if outputs == record.outputs {
            return Ok(());
        }
        record.outputs = outputs;
        record.updated_at = Utc::now().trunc_subsecs(3);
        self.writer.commit(&record)?;
        self.last_record = Some(record);
        Ok(())
    }

    /// Notes that events `from..to` of `batch` were handled by every matching handler.
    pub(super) fn record(
        &mut self,
        batch: &EventBatch,
        from: usize,
        to: usize,
        next_after_last: &Option<Offset>,
    ) {
        let Some(last) = to.checked_sub(1).and_then(|index| batch.get(index)) else {
            return;
        };
        if to <= from {
            return;
        }
        // The next event is the one after the last handled: the next in the batch, or what
        // the bus says follows the batch.
        let next = match batch.get(to) {
            Some(following) => Some(following.offset.to_owned()),
            None => next_after_last.clone(),
        };
        let count = (to - from) as u64;
        self.handled_total += count;
        self.pending_count += count;
        // (Set at the first of them by the dispatcher, when it runs.)
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending = Some((last.offset.to_owned(), next, last.timestamp));
    }

    pub(super) fn due(&self) -> bool {
        self.pending.is_some()
            && (self.pending_count >= self.policy.every_events
                || self.pending_since.is_some_and(|since| {
                    since.elapsed() >= Duration::from_millis(self.policy.every_ms)
                }))
    }

    pub(super) fn commit(
        &mut self,
        handlers: &mut [ConfiguredHandler],
        queue: &mut ErrorQueue,
    ) -> Result<(), PipelineError> {
        let Some((last, next, last_timestamp)) = self.pending.take() else {
            return Ok(());
        };
        for_each_handler(handlers.iter_mut(), |h| h.sync())?;
        // Events queued for later retries must be on disk before their offsets are passed.
        queue.save()?;
        let mut record: OffsetRecord =
            self.cache
                .record(Some(last.clone()), next, self.handled_total);
        record.outputs = crate::handlers::output_positions(handlers);
        record.last_timestamp = Some(last_timestamp);
        if let Some(hermes) = &self.hermes {
            record.initstartoffset = Some(hermes.sequence.start.clone());
            record.initstopoffset = Some(hermes.sequence.stop.clone());
            record.initsync_done = hermes.initsync_done;
        }
        self.writer.commit(&record)?;
        let committed_time = record.updated_at;
        self.last_record = Some(record);
        tracing::debug!("committed offset {last}");
        self.last_committed = Some(last);
        if let Some(metrics) = self.metrics {
            metrics.committed();
        }
        if let Some(control) = self.control {
            let (offset, queued) = (
                self.last_committed.as_ref().map(ToString::to_string),
                queue.events().len(),
            );
            control.update(|status| {
                status.error_queue = queued;
                status.committed_offset = offset;
                status.committed_time = Some(committed_time);
            });
        }
        self.pending_count = 0;
        self.pending_since = None;
        Ok(())
    }
}
