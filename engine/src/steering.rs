//! A running consumer's steering surface: what its pipeline shows ([`Status`], with its
//! [`Health`](crate::health::Health)), and what it takes between two events: the pause flag,
//! requests ([`Command`]: the error queue's, a replay job's) and new handlers from a reload
//! ([`HandlerSwap`]).
//! The daemon's control socket and supervisor read and set it; the pipeline alone acts on it.
//! Plain state behind a mutex and atomics: no socket here.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// New handlers for a running consumer: a reload that changed only them hands them to its
/// dispatcher, which swaps them in between two batches (the bus stays open: a consumer group
/// member keeps its partitions).
#[derive(Debug)]
pub struct HandlerSwap {
    pub handlers: Vec<crate::config::HandlerConfig>,
    pub base_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
}

/// An error-queue command the socket hands to a consumer's dispatcher (`ctl errors`), which
/// carries it out between two batches: the queue is the dispatcher's alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueCommand {
    /// The queued events (`json`: as a JSON array).
    List { json: bool },
    /// Try the queued events now: every object, or the object of event `id`.
    Retry { id: Option<u64> },
    /// Remove events without handling them (`None`: all).
    Drop { ids: Option<Vec<u64>> },
}

/// What `ctl replay` asks a running consumer for: the same range, handlers and filters as
/// `buslink replay`, delivered by the consumer's own dispatcher between live batches (so
/// `jsonl` outputs are appended to and committed exactly once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySpec {
    /// `beginning`, or the first offset (included).
    pub from: String,
    /// The last offset (included); `None`: the end of the bus when met.
    pub to: Option<String>,
    /// Take `from` and `to` as strings even if they look like numbers.
    pub string: bool,
    /// The handlers to deliver to (empty: every handler of the consumer).
    pub handlers: Vec<String>,
    /// `FIELD=GLOB` filters (category, eventtype, objtype), on top of the handlers' matches.
    pub matches: Vec<String>,
    /// Count what each handler would get; deliver nothing.
    pub dry_run: bool,
}

/// A consumer's replay job as `status` shows it: the one running, or the last one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplayJob {
    /// Numbers the consumer's jobs, from 1 in a daemon's life.
    pub id: u64,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub from: String,
    pub to: Option<String>,
    /// The handlers it delivers to.
    pub handlers: Vec<String>,
    pub dry_run: bool,
    /// Events read from the range, deliveries made (or that a dry run would make), the offset
    /// of the last event read (empty before the first).
    pub events: u64,
    pub delivered: u64,
    pub offset: String,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// When it started and ended (RFC 3339).
    pub started_at: String,
    pub ended_at: Option<String>,
}

impl ReplayJob {
    /// Whether it still runs.
    pub fn running(&self) -> bool {
        self.state == "running"
    }
}

/// A request the socket hands to a consumer's dispatcher, which carries it out between two
/// batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The error queue's (`ctl errors`).
    Queue(QueueCommand),
    /// Start a replay job (`ctl replay`).
    Replay(ReplaySpec),
    /// Cancel the running replay job (`ctl replay --cancel`).
    CancelReplay,
}

impl From<QueueCommand> for Command {
    fn from(command: QueueCommand) -> Command {
        Command::Queue(command)
    }
}

/// The dispatcher's answer to a [`Command`]; the control socket words it.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueReply {
    /// A replay job started (as it is now).
    ReplayStarted(ReplayJob),
    /// No replay job was started: why.
    ReplayRefused(String),
    /// The running job was cancelled (`None`: none was running).
    ReplayCancelled(Option<ReplayJob>),
    /// The queued events, oldest first (`List`).
    Listed(Vec<crate::error_queue::QueuedEvent>),
    /// `handled` queued events were handled, `left` wait still (`Retry`).
    Retried { handled: usize, left: usize },
    /// `dropped` events were removed without being handled, `left` wait still (`Drop`).
    Dropped { dropped: usize, left: usize },
    /// The queue has no event with this id: nothing was done.
    NoSuchEvent(u64),
}

/// A [`Command`] waiting for the dispatcher, and where its answer goes.
#[derive(Debug)]
pub struct QueueRequest {
    pub command: Command,
    id: u64,
    pub reply: std::sync::mpsc::Sender<QueueReply>,
}

/// How long the socket waits for a dispatcher to take a request. One not taken by then is
/// withdrawn (it never happens later by surprise); one taken gets as long again to be answered.
pub const QUEUE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request handed to a dispatcher, not answered yet.
pub struct PendingRequest {
    id: u64,
    answer: std::sync::mpsc::Receiver<QueueReply>,
}

/// What the pipeline tells the socket, and the pause flag the socket sets.
#[derive(Debug)]
pub struct Shared {
    /// The consumer's name (it never changes).
    name: String,
    /// Whether a request waits: one atomic load per event for the dispatcher.
    asked: AtomicBool,
    /// Numbers the requests (to withdraw one).
    next_request: std::sync::atomic::AtomicU64,
    /// New handlers waiting for the dispatcher (a reload).
    handler_swap: Mutex<Option<HandlerSwap>>,
    /// Set when new handlers could not be built (the old ones stay): the next reload tries
    /// again.
    swap_failed: AtomicBool,
    /// Error-queue commands waiting for the dispatcher.
    requests: Mutex<Vec<QueueRequest>>,
    /// Whether a dispatcher runs and takes requests.
    serving: AtomicBool,
    paused: AtomicBool,
    /// Whether `pause` is allowed: not for a consumer whose bus keeps the position (a Kafka
    /// group would take its partitions away from a member that stops polling).
    pausable: AtomicBool,
    status: Mutex<Status>,
    /// The consumer's facts and the state the monitor derives from them.
    health: std::sync::Arc<crate::health::Health>,
}

/// The consumer's status, as `status --json` prints it (and `buslink top` reads it back: a
/// key a daemon does not send takes its default).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// The consumer's name.
    pub consumer: String,
    /// `plugin` / `class`.
    pub plugin: String,
    pub class: String,
    /// `connecting`, `running`, `paused`, `pausing: ...`, `waiting for the bus: WHY`,
    /// `stalled: ...`, `stopping`, `failed: WHY` (the [`health`](crate::health) monitor's).
    pub state: String,
    /// The last committed offset (as the cache shows it) and when (RFC 3339).
    pub committed_offset: Option<String>,
    pub committed_at: Option<String>,
    /// Seconds since that commit.
    pub committed_age_seconds: Option<f64>,
    /// When, as the pipeline notes it (formatted only when the status is asked for).
    #[serde(skip)]
    pub committed_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Events handled in this run, and per second over the last ten seconds.
    pub events_handled: u64,
    pub events_per_second: f64,
    /// Events on the bus after the last handled event; `None` (null) while unknown.
    pub lag: Option<u64>,
    /// Events waiting in the error queue.
    pub error_queue: usize,
    /// The last error or warning the pipeline met, if any, and when (RFC 3339): it stays
    /// after a recovery (the state says whether the consumer runs), so its time tells an old
    /// one from a current one. Set through [`Status::note_error`].
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// The plugin's own counters, as the reader last read them (name: value).
    pub plugin_counters: std::collections::BTreeMap<String, u64>,
    /// A plugin executable's child process; `None` for a library.
    pub plugin_process: Option<PluginProcess>,
    /// Whether `pause` is taken: false for a consumer whose bus keeps the position (a Kafka
    /// consumer group).
    pub pausable: bool,
    /// The running replay job (`ctl replay`), or the last one.
    pub replay: Option<ReplayJob>,
}

/// A plugin executable's child, as its consumer's counters say it (`plugin_process_*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginProcess {
    /// The running child's pid; `None` while none runs (it died and is not started again yet).
    pub pid: Option<u32>,
    /// Children started for this consumer's run.
    pub starts: u64,
    /// Of those, the ones that replaced a child that died, hung or broke the protocol.
    pub restarts: u64,
}

impl Status {
    /// The pipeline met `error` now.
    pub fn note_error(&mut self, error: String) {
        self.last_error = Some(error);
        self.last_error_at =
            Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
}

impl PluginProcess {
    /// From a consumer's counters; `None` when they do not speak of a process (a library).
    pub fn from_counters(counters: &[(String, u64)]) -> Option<PluginProcess> {
        let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let starts = get("plugin_process_starts")?;
        Some(PluginProcess {
            pid: get("plugin_process_pid")
                .filter(|pid| *pid != 0)
                .and_then(|pid| u32::try_from(pid).ok()),
            starts,
            restarts: get("plugin_process_restarts").unwrap_or(starts.saturating_sub(1)),
        })
    }
}

impl Shared {
    /// The state of consumer `name` (plugin, class) at start.
    pub fn new(consumer: &str, plugin: &str, class: &str) -> Shared {
        Shared {
            name: consumer.to_owned(),
            asked: AtomicBool::new(false),
            next_request: std::sync::atomic::AtomicU64::new(0),
            handler_swap: Mutex::new(None),
            swap_failed: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            serving: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            pausable: AtomicBool::new(true),
            status: Mutex::new(Status {
                consumer: consumer.to_owned(),
                plugin: plugin.to_owned(),
                class: class.to_owned(),
                state: "connecting".to_owned(),
                ..Status::default()
            }),
            health: std::sync::Arc::new(crate::health::Health::default()),
        }
    }

    /// The consumer's facts and derived state (one owner: [`crate::health`]).
    pub fn health(&self) -> &std::sync::Arc<crate::health::Health> {
        &self.health
    }

    /// Whether `pause` was asked for (and no `resume` since).
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The consumer's name.
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// Hands new handlers to the dispatcher (replacing any not yet taken).
    pub fn offer_handlers(&self, swap: HandlerSwap) {
        *self
            .handler_swap
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(swap);
    }

    /// The dispatcher could not build the new handlers.
    pub fn note_swap_failure(&self) {
        self.swap_failed.store(true, Ordering::SeqCst);
    }

    /// Whether a swap failed since the last call.
    pub fn take_swap_failure(&self) -> bool {
        self.swap_failed.swap(false, Ordering::SeqCst)
    }

    /// New handlers to swap in, if a reload left some.
    pub fn take_handler_swap(&self) -> Option<HandlerSwap> {
        self.handler_swap
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// Whether the dispatcher takes error-queue commands (it says so while it runs).
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Whether a dispatcher runs.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Hands `command` to the dispatcher; [`wait`](Self::wait) for the answer.
    pub fn submit(&self, command: impl Into<Command>) -> PendingRequest {
        let command = command.into();
        let (reply, answer) = std::sync::mpsc::channel();
        let id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        requests.push(QueueRequest { command, id, reply });
        self.asked.store(true, Ordering::SeqCst);
        PendingRequest { id, answer }
    }

    /// The answer to `pending`, waiting until `deadline` for the dispatcher to take it: a
    /// request not taken by then is withdrawn (`Err`: not carried out); one taken is waited
    /// for [`QUEUE_ANSWER_WAIT`] more (`Err` then: the outcome is unknown).
    pub fn wait(&self, pending: PendingRequest, deadline: Instant) -> Result<QueueReply, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(answer) = pending.answer.recv_timeout(left) {
            return Ok(answer);
        }
        let withdrawn = {
            let mut requests = self
                .requests
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = requests.len();
            requests.retain(|request| request.id != pending.id);
            requests.len() < before
        };
        if withdrawn {
            return Err(format!(
                "consumer '{}' did not take the command within {} s (a handler busy with \
                 retries?): it was not carried out",
                self.name,
                QUEUE_ANSWER_WAIT.as_secs()
            ));
        }
        pending.answer.recv_timeout(QUEUE_ANSWER_WAIT).map_err(|_| {
            format!(
                "consumer '{}' took the command but has not answered: its outcome is unknown \
                 (see the daemon's log)",
                self.name
            )
        })
    }

    /// Whether a request waits (one atomic load: the dispatcher asks between two events).
    pub fn has_requests(&self) -> bool {
        self.asked.load(Ordering::SeqCst)
    }

    /// The waiting requests (each answered by the dispatcher).
    pub fn take_requests(&self) -> Vec<QueueRequest> {
        let mut requests = self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.asked.store(false, Ordering::SeqCst);
        std::mem::take(&mut *requests)
    }

    /// Allows or refuses `pause` (a reload may change the consumer).
    pub fn set_pausable(&self, pausable: bool) {
        self.pausable.store(pausable, Ordering::SeqCst);
        if !pausable {
            self.set_paused(false);
        }
    }

    /// Refuses `pause` from now on (see the field).
    pub fn forbid_pause(&self) {
        self.pausable.store(false, Ordering::SeqCst);
    }

    /// Whether a pause is allowed (not for a bus that keeps the position: a consumer group).
    pub fn pausable(&self) -> bool {
        self.pausable.load(Ordering::SeqCst)
    }

    /// Sets the pause flag (the control socket's `pause` and `resume`).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Changes the status (a poisoned lock is taken over).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut status);
    }

    /// The last committed offset, as text (what a progress line shows), without copying the
    /// rest of the status.
    pub fn committed_offset(&self) -> Option<String> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .committed_offset
            .clone()
    }

    /// A copy of the status, with the derived fields filled.
    pub fn status(&self) -> Status {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let view = self.health.view();
        status.state = view.state.text();
        // A pause asked for just now shows at once (the monitor's next look confirms it):
        // `paused` once the dispatcher stopped for it, `pausing` until then.
        if self.paused() && view.state == crate::health::State::Running {
            status.state = if self.health.pause_in_effect() {
                crate::health::State::Paused.text()
            } else {
                crate::health::State::Pausing {
                    in_hand: self.health.in_hand(),
                }
                .text()
            };
        }
        status.lag = view.lag;
        status.events_per_second = view.events_per_second;
        status.events_handled = self.health.handled_this_run();
        status.pausable = self.pausable();
        let counters = self.health.counters();
        status.plugin_process = PluginProcess::from_counters(&counters);
        status.plugin_counters = counters
            .into_iter()
            .filter(|(name, _)| !name.starts_with("plugin_process_"))
            .collect();
        status.committed_at = status.committed_time.map(|t| t.to_rfc3339());
        status.committed_age_seconds = status.committed_time.map(|t| {
            let millis = (chrono::Utc::now() - t).num_milliseconds().max(0);
            (millis as f64 / 100.0).round() / 10.0
        });
        status
    }
}
