//! A replay job of the running consumer (`buslink ctl replay`): a past range of the bus,
//! read by a consumer instance of its own on a thread of its own, delivered by the consumer's
//! dispatcher to the chosen handlers, a chunk (one batch) at a time between live batches.
//!
//! Live batches go first: a chunk is taken only when none waits, so live consumption goes on
//! and neither is `stalled`. Before a chunk, what the live side handled is committed; after
//! it, the handlers are synced and the exactly-once outputs' new lengths are committed with
//! the offset unchanged (`Committer::commit_outputs`): replayed `jsonl` lines are never cut at
//! the next start, and a crash re-delivers nothing twice. A replay's handler failure ends the
//! job (`failed`, naming the offset to go on from), not the consumer; the dead-letter and
//! error-queue policies do not apply. One job at a time per consumer; a stop, restart or reload
//! of the consumer cancels it (`status` says so).

use super::commit::Committer;
use super::deliver::{deliver, for_each_handler, Delivery};
use super::PipelineError;
use crate::error_queue::ErrorQueue;
use crate::handlers::{ConfiguredHandler, DispatchedEvent, EventMatcher};
use crate::plugin::PluginConsumer;
use crate::range::{past, position};
use crate::shutdown::Shutdown;
use crate::steering::{ReplayJob, ReplaySpec, Shared};
use buslink_plugin_api::{EventBatch, Offset, PollStatus};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Makes the job's own consumer instance (the daemon's plugin and the consumer's settings).
pub type ReplaySource<'a> = &'a dyn Fn() -> Result<PluginConsumer, String>;

/// What the job's reader sends the dispatcher.
enum Chunk {
    /// The next events of the range (a whole batch; the dispatcher ends the range at `to`).
    Events(EventBatch),
    /// The reader is done: the bus had no more, `to` was met or passed, or an error.
    End(Result<(), String>),
}

/// A running replay job, owned by the dispatcher.
pub(super) struct ReplayRun {
    job: ReplayJob,
    /// Chosen handlers by name (a reload may swap the handler objects: found again per chunk)
    /// with their matchers.
    chosen: Vec<(String, EventMatcher)>,
    extra: EventMatcher,
    to: Option<Offset>,
    chunks: Receiver<Chunk>,
    cancel: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    /// The plugin's poll timeout (how long its reader may take to stop).
    timeout: Duration,
    /// A chunk delivered in part (a slice ended inside it), and the index of its next event.
    held: Option<(EventBatch, usize)>,
}

/// How long the dispatcher gives the job at a time before it looks at live batches and the
/// socket again (and the status shows the job's progress).
const SLICE: Duration = Duration::from_millis(100);

/// The next job's number (jobs are numbered per consumer run; the status shows the last).
fn next_id(control: &Shared) -> u64 {
    control.status().replay.map_or(1, |job| job.id + 1)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Starts the job `spec` asks for, or says why not (nothing started).
pub(super) fn start(
    spec: &ReplaySpec,
    handlers: &[ConfiguredHandler],
    source: Option<ReplaySource<'_>>,
    batch_size: usize,
    timeout: Duration,
    control: &Shared,
) -> Result<ReplayRun, String> {
    let Some(source) = source else {
        return Err("this consumer cannot replay (no plugin to read with)".into());
    };
    let chosen_names: Vec<String> = if spec.handlers.is_empty() {
        handlers.iter().map(|h| h.name.clone()).collect()
    } else {
        let mut names: Vec<String> = Vec::new();
        for name in &spec.handlers {
            if !handlers.iter().any(|h| &h.name == name) {
                return Err(format!(
                    "--handler {name:?}: consumer '{}' has no such handler (it has: {})",
                    control.name(),
                    handlers
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    };
    let mut chosen = Vec::new();
    for name in &chosen_names {
        let Some(handler) = handlers.iter().find(|h| &h.name == name) else {
            continue;
        };
        if let Some(why) = handler
            .kind
            .daemon_replay_refusal()
            .filter(|_| !spec.dry_run)
        {
            return Err(format!(
                "handler '{name}' {why}; replay to other handlers (--handler)"
            ));
        }
        chosen.push((name.clone(), handler.matcher.clone()));
    }
    let extra = EventMatcher::new(&crate::range::match_filter(&spec.matches)?)?;
    let parse = |text: &str| crate::offsets::parse_offset(text, spec.string);
    let from = (spec.from != "beginning").then(|| parse(&spec.from));
    let to = spec.to.as_deref().map(parse);
    if let (Some(from), Some(to)) = (&from, &to) {
        if past(from.as_ref(), to) {
            return Err(format!(
                "--to {to} comes before --from {from}: nothing to replay"
            ));
        }
    }
    // Positioned here, before the job is numbered: a --from the bus does not have (another
    // type, past its end) is refused as `buslink replay` refuses it, nothing started.
    let mut consumer = source()?;
    if consumer.bus_owns_position() {
        return Err(format!(
            "consumer '{}' keeps its position on the bus (a consumer group) and its plugin has \
             no class '{}{}' to read the range without joining: a reader of its own would \
             take partitions from the group's members",
            control.name(),
            consumer.class(),
            crate::range::REPLAY_READER_SUFFIX
        ));
    }
    position(&mut consumer, from.as_ref(), timeout).map_err(|error| {
        format!(
            "--from {}: {error}: nothing was delivered",
            from.as_ref()
                .map_or_else(|| "beginning".to_owned(), ToString::to_string)
        )
    })?;
    let (chunks_tx, chunks) = crossbeam_channel::bounded(2);
    let cancel = Arc::new(AtomicBool::new(false));
    let reader = {
        let cancel = cancel.clone();
        let (from, to) = (from.clone(), to.clone());
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("replay".into())
            .spawn(move || {
                let _span = span.entered();
                read_range(consumer, from, to, batch_size, timeout, &cancel, &chunks_tx);
            })
            .map_err(|e| format!("cannot start the replay's reader: {e}"))?
    };
    let job = ReplayJob {
        id: next_id(control),
        state: "running".into(),
        from: spec.from.clone(),
        to: spec.to.clone(),
        handlers: chosen_names,
        dry_run: spec.dry_run,
        started_at: now(),
        ..ReplayJob::default()
    };
    tracing::info!(
        "replay #{} of consumer '{}' from {} to {}{}, to handler(s) {} (between live \
         batches; the committed offset stays)",
        job.id,
        control.name(),
        job.from,
        job.to.as_deref().unwrap_or("the end of the bus"),
        if job.dry_run { " (dry run)" } else { "" },
        job.handlers.join(", ")
    );
    let run = ReplayRun {
        job,
        chosen,
        extra,
        to,
        chunks,
        cancel,
        reader: Some(reader),
        timeout,
        held: None,
    };
    control.update(|status| status.replay = Some(run.job.clone()));
    Ok(run)
}

/// The job's reader: its consumer comes positioned at `from`; it sends batches until the bus
/// has no more, a batch reaches `to`, or a cancel. An end that is not a number is looked for
/// first (a read of the range that sends nothing, then the consumer is positioned again): one
/// not on the bus ends the job before anything is delivered, as `buslink replay` does.
fn read_range(
    mut consumer: PluginConsumer,
    from: Option<Offset>,
    to: Option<Offset>,
    batch_size: usize,
    timeout: Duration,
    cancel: &AtomicBool,
    chunks: &Sender<Chunk>,
) {
    let stop = Shutdown::default();
    let end = (|| -> Result<(), String> {
        if let Some(to) = to
            .as_ref()
            .filter(|to| !matches!(to, Offset::Int(_) | Offset::Float(_)))
        {
            let found = crate::range::find(&mut consumer, to, &stop);
            let _ = consumer.close();
            if found? != Some(true) {
                return Err(format!(
                    "--to {to}: no such offset on the bus after {}: nothing was delivered",
                    from.as_ref()
                        .map_or_else(|| "its beginning".to_owned(), |o| format!("offset {o}"))
                ));
            }
            position(&mut consumer, from.as_ref(), timeout).map_err(|e| e.to_string())?;
        }
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Ok(());
            }
            let mut batch = EventBatch::new(batch_size, 4 << 20);
            let status = consumer.poll(&mut batch).map_err(|e| e.to_string())?;
            let reached = to.as_ref().is_some_and(|to| {
                batch
                    .iter()
                    .any(|event| event.offset == to.as_ref() || past(event.offset, to))
            });
            if !batch.is_empty() && chunks.send(Chunk::Events(batch)).is_err() {
                return Ok(());
            }
            if reached || !matches!(status, PollStatus::Ready) {
                return Ok(());
            }
        }
    })();
    let _ = consumer.close();
    let _ = chunks.send(Chunk::End(end));
}

/// How a step of the job went.
pub(super) enum Step {
    /// It goes on.
    Running,
    /// It ended (done, failed or cancelled): the status says how.
    Ended,
}

impl ReplayRun {
    /// The job's number.
    pub(super) fn id(&self) -> u64 {
        self.job.id
    }

    /// The job as the status shows it.
    pub(super) fn job(&self) -> &ReplayJob {
        &self.job
    }

    /// Waits up to `wait` for the next chunk and delivers a slice of it: until [`SLICE`] has
    /// passed, `live_waits` says a live batch waits, or the socket has a request (the rest
    /// is kept for the next step). Live events handled before are committed first; the
    /// outputs' new lengths after. `Err`: the consumer's own failure (a commit); the job's
    /// failures end the job only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &mut self,
        wait: Duration,
        handlers: &mut [ConfiguredHandler],
        error_queue: &mut ErrorQueue,
        committer: &mut Committer<'_>,
        shutdown: &Shutdown,
        control: &Shared,
        live_waits: &dyn Fn() -> bool,
    ) -> Result<Step, PipelineError> {
        let (batch, start) = match self.held.take() {
            Some(held) => held,
            None => match self.chunks.recv_timeout(wait) {
                Ok(Chunk::Events(batch)) => (batch, 0),
                Ok(Chunk::End(Ok(()))) => return Ok(self.end("done", None, control)),
                Ok(Chunk::End(Err(error))) => return Ok(self.end("failed", Some(error), control)),
                Err(RecvTimeoutError::Timeout) => return Ok(Step::Running),
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(self.end(
                        "failed",
                        Some("the replay's reader stopped without a word".into()),
                        control,
                    ))
                }
            },
        };
        // What the live side handled is committed before replayed lines follow it in the
        // outputs: a crash then re-delivers neither.
        committer.commit(handlers, error_queue)?;
        let began = std::time::Instant::now();
        let mut reached = false;
        let mut failure = None;
        let mut next = batch.len();
        for (index, event) in batch.iter().enumerate().skip(start) {
            if index > start && (began.elapsed() >= SLICE || live_waits() || control.has_requests())
            {
                next = index;
                break;
            }
            if let Some(refusal) = self
                .to
                .as_ref()
                .filter(|_| self.job.events == 0)
                .and_then(|to| crate::range::to_type_refusal(event.offset, to))
            {
                failure = Some(refusal);
                break;
            }
            if self.to.as_ref().is_some_and(|to| past(event.offset, to)) {
                reached = true;
                break;
            }
            let dispatched = DispatchedEvent::new(event);
            self.job.events += 1;
            self.job.offset = dispatched.offset_text();
            if self.extra.matches(&dispatched) {
                for (name, matcher) in &self.chosen {
                    if !matcher.matches(&dispatched) {
                        continue;
                    }
                    if !self.job.dry_run {
                        let Some(handler) = handlers.iter_mut().find(|h| &h.name == name) else {
                            failure = Some(format!(
                                "handler '{name}' left the consumer (a reload): the replay \
                                 stopped after offset {}",
                                self.job.offset
                            ));
                            break;
                        };
                        match deliver(handler, &dispatched, shutdown, None, None) {
                            Delivery::Done => {}
                            Delivery::Interrupted => {
                                failure = Some("the consumer is stopping".into());
                                break;
                            }
                            Delivery::Failed { error, attempts } => {
                                failure = Some(crate::range::handler_failed(
                                    name,
                                    &self.job.offset,
                                    attempts,
                                    &error,
                                ));
                                break;
                            }
                        }
                    }
                    self.job.delivered += 1;
                }
            }
            if failure.is_some() {
                break;
            }
            if self
                .to
                .as_ref()
                .is_some_and(|to| event.offset == to.as_ref())
            {
                reached = true;
                break;
            }
        }
        if !self.job.dry_run {
            // Durable, and committed with the offset unchanged.
            for_each_handler(handlers.iter_mut(), |h| h.sync())?;
            committer.commit_outputs(handlers)?;
        }
        if let Some(error) = failure {
            return Ok(self.end("failed", Some(error), control));
        }
        if reached {
            return Ok(self.end("done", None, control));
        }
        if next < batch.len() {
            self.held = Some((batch, next));
        }
        control.update(|status| status.replay = Some(self.job.clone()));
        Ok(Step::Running)
    }

    /// Cancels the job (`why`: said in the status).
    pub(super) fn cancel(&mut self, why: &str, control: &Shared) -> ReplayJob {
        self.end("cancelled", Some(why.to_owned()), control);
        self.job.clone()
    }

    /// Ends the job in `state` and stops its reader.
    fn end(&mut self, state: &str, error: Option<String>, control: &Shared) -> Step {
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            // Unblock a reader waiting to send, then wait for it: it ends within a poll, or
            // is left behind (a plugin stuck in a call must not hold the consumer).
            let deadline = std::time::Instant::now() + self.timeout + Duration::from_secs(5);
            while !reader.is_finished() && std::time::Instant::now() < deadline {
                while self.chunks.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            if reader.is_finished() {
                let _ = reader.join();
            } else {
                tracing::warn!(
                    "replay #{}: its reader did not stop within {} s (the plugin is in a \
                     call); left behind",
                    self.job.id,
                    (self.timeout + Duration::from_secs(5)).as_secs()
                );
            }
        }
        self.job.state = state.to_owned();
        self.job.error = error;
        self.job.ended_at = Some(now());
        match &self.job.error {
            None => tracing::info!(
                "replay #{} {state}: {} events read, {} {}{}",
                self.job.id,
                self.job.events,
                self.job.delivered,
                if self.job.dry_run {
                    "deliveries it would make"
                } else {
                    "deliveries"
                },
                if self.job.offset.is_empty() {
                    String::new()
                } else {
                    format!(", the last at offset {}", self.job.offset)
                }
            ),
            Some(why) => tracing::warn!(
                "replay #{} {state}: {why} ({} events read, {} deliveries)",
                self.job.id,
                self.job.events,
                self.job.delivered
            ),
        }
        control.update(|status| status.replay = Some(self.job.clone()));
        Step::Ended
    }
}
