//! The trait a bus consumer implements: the Hermes "messagebus consumer" contract in Rust.

use crate::error::{PluginError, PluginResult};
use crate::event::EventBatch;
use crate::offset::{Offset, OffsetRef};
use abi_stable::StableAbi;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a call to [`Consumer::poll`] found.
///
/// `Drained` and `Idle` both mean "no event now" (a daemon polls again either way); they differ
/// in what the plugin *knows*, and `buslink run --once` (stop when drained) says which one ended
/// it. Since plugin-api 0.4.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollStatus {
    /// At least one event was added to the batch.
    Ready,
    /// No event came before the timeout, and the plugin cannot tell whether the bus holds
    /// more: it may be slow, stalled, or unreachable without an error yet. A plugin that can
    /// get a positive answer from its bus returns [`Drained`](Self::Drained) instead; one that
    /// cannot (a bus without a way to ask) returns this.
    Idle,
    /// The bus will never deliver another event to this consumer (a closed window, for example).
    Ended,
    /// The bus itself answered, just now, that nothing more is there for this consumer (a read
    /// that found no row after the last one, a high watermark reached, a server's "nothing
    /// ready" in a healthy session). Silence, a stalled answer or a failing session is never
    /// that answer: return `Idle`, or an error once the plugin knows the bus is unreachable.
    Drained,
}

/// A consumer of one bus: what a plugin author implements, with ordinary Rust types.
///
/// The host calls the methods from one thread at a time, in the order the
/// [`session`](crate::session) module gives (its one owner): [`set_timeout`](Self::set_timeout),
/// [`open`](Self::open), [`set_stop_when_drained`](Self::set_stop_when_drained), one
/// positioning call ([`seek_to_beginning`](Self::seek_to_beginning),
/// [`seek_to_end`](Self::seek_to_end), [`seek`](Self::seek) or [`seek_after`](Self::seek_after),
/// then [`check_position`](Self::check_position) when resuming), then [`poll`](Self::poll)
/// repeatedly (with `lag`, `counters`, `acknowledge` and `serve` between polls), and
/// [`close`](Self::close) at the end, also after an error. After a transient error it closes
/// and opens a new session from the start.
///
/// A panic in any method is caught by the export shim: the host receives an
/// [`ErrorKind::Internal`](crate::ErrorKind::Internal) error naming the plugin, the class and
/// the method, and the consumer is unusable afterwards.
pub trait Consumer: Send + 'static {
    /// Connects to the bus, using only the settings the consumer was built with. The default
    /// does nothing (for buses opened lazily by `poll`).
    fn open(&mut self) -> PluginResult<()> {
        Ok(())
    }

    /// Disconnects. Called once at the end, and before every re-open. The default does nothing.
    fn close(&mut self) -> PluginResult<()> {
        Ok(())
    }

    /// Positions on the oldest event still on the bus.
    fn seek_to_beginning(&mut self) -> PluginResult<()>;

    /// Positions after the newest event: only events produced from now on will be delivered.
    fn seek_to_end(&mut self) -> PluginResult<()> {
        Err(PluginError::config(
            "this consumer cannot start at the end of the bus; use start = \"beginning\" or an offset",
        ))
    }

    /// Positions on the event at `offset`; an [`ErrorKind::OffsetNotFound`](crate::ErrorKind)
    /// error if it is not on the bus.
    fn seek(&mut self, offset: &Offset) -> PluginResult<()>;

    /// Positions strictly after the event at `offset`: the host resumes this way from its cache.
    ///
    /// The default works for integer offsets whose successor is `offset + 1`. Buses whose
    /// offsets have no successor (strings, bytes, gaps) must implement it.
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        match offset {
            Offset::Int(i) => self.seek(&Offset::Int(i.saturating_add(1))),
            other => Err(PluginError::offset_not_found(format!(
                "this consumer cannot resume after a {} offset ({other})",
                other.type_name()
            ))),
        }
    }

    /// The offset the next event would have after the event at `offset`, if the bus defines
    /// one; it is written to the cache as `next_offset` for people and Hermes tools.
    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        match offset {
            OffsetRef::Int(i) => Some(Offset::Int(i.saturating_add(1))),
            _ => None,
        }
    }

    /// How long [`poll`](Self::poll) waits for a first event; `None` waits forever.
    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()>;

    /// `true` (`buslink run --once`): the host stops at the first [`PollStatus::Drained`] (or,
    /// from a plugin that cannot tell, [`PollStatus::Idle`]), so a `poll` that *knows* nothing
    /// is waiting (a read that found no row) returns `Drained` at once instead of waiting for
    /// its timeout, and one that has no positive answer yet keeps waiting for one (bounded by
    /// the bus's read timeout, then an error naming what it waited for). The default ignores
    /// it.
    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        let _ = stop;
        Ok(())
    }

    /// Adds the next events, in bus order, to `batch` (which the host hands over empty) until
    /// it [is full](EventBatch::is_full) or no event is waiting. When none is waiting, waits up
    /// to the timeout for one. Memory must stay bounded whatever the backlog: read about a
    /// batch at a time (a plugin that fetches ahead keeps a small, fixed number of answers).
    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus>;

    /// Counters the host shows in its progress lines (`("gaps", 2)`, `("reconnects", 5)`).
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Runs an operator command listed in [`ConsumerClass::COMMANDS`] (`buslink query`) and
    /// returns its output. The host calls it after [`open`](Self::open).
    fn query(&mut self, command: &str, args: &[String]) -> PluginResult<String> {
        let _ = args;
        Err(PluginError::config(format!(
            "this consumer has no command '{command}'"
        )))
    }

    /// The host's last handled event before this start or re-open: its offset and timestamp.
    /// A plugin that can read the event at `last` checks that it is the same event (same
    /// timestamp) and fails with an [`ErrorKind::Data`](crate::ErrorKind::Data) error when the
    /// bus holds another event there (the bus was replaced, restored or re-created under the
    /// same offsets), or when `last` lies beyond the end of the bus. The host calls it after the
    /// positioning call. The default cannot tell and accepts.
    fn check_position(&mut self, last: &Offset, timestamp: DateTime<Utc>) -> PluginResult<()> {
        let _ = (last, timestamp);
        Ok(())
    }

    /// How far behind the end of the bus the consumer is: the events after its position that
    /// are on the bus now (summed over partitions or queues), or `None` when the bus cannot
    /// tell (or not cheaply, or not now). The host calls it about once per progress line, on
    /// the thread that polls, and shows it as `lag`. The default cannot tell.
    fn lag(&mut self) -> Option<u64> {
        None
    }

    /// Why the bus holds this consumer up though it answers, while it does: a consumer
    /// group's rebalance that has lasted longer than a bus may take to answer (max(timeout,
    /// 5 s)), this member holding no partition meanwhile, for example. The host asks it with
    /// the [`lag`](Self::lag), about every second on the thread that polls, and shows the
    /// consumer `waiting for the bus: WHY` (503 on `/ready`) while it is `Some`, `running`
    /// again once it is `None`. A bus that cannot be reached is an error from `poll` instead
    /// (the host then re-opens the consumer); a hold-up is waited out. A plugin that reads
    /// ahead and retries its bus itself may say here that its requests fail while `poll` still
    /// hands over events read before (HMB): the consumer is then shown waiting at once, not
    /// only once that backlog is handled. The default: never held up (or cannot tell). Since
    /// plugin-api 0.5.
    fn held_up(&mut self) -> Option<String> {
        None
    }

    /// Whether the bus keeps this consumer's position (a Kafka consumer group, whose offsets
    /// live in the cluster). The host then:
    /// - never positions it from its cache; it calls [`seek`](Self::seek) once after `open`
    ///   with the cache's `next_offset` (the text this consumer's
    ///   [`next_offset`](Self::next_offset) made), which tells where this member last was:
    ///   the plugin starts there where the bus has no position or an older one (a commit that
    ///   never reached the bus), and says so;
    /// - polls the next batch only once the one before was handled, committed and
    ///   [`acknowledge`](Self::acknowledge)d: one batch is in flight at a time;
    /// - calls [`serve`](Self::serve) about four times a second while that batch is handled,
    ///   so the bus keeps hearing from its member however long the handlers take (a Kafka
    ///   group's `max.poll.interval.ms`);
    /// - acknowledges what was handled before it stops, whatever the reason (a stop, a
    ///   handler failure), before `close`.
    ///
    /// A revocation of partitions with events in flight may so wait (bounded, the plugin
    /// decides how long) for the host's acknowledgement, so that what was handled is stored on
    /// the bus before the partitions go: a rebalance never hands handled events to another
    /// member. The default: the host keeps the position.
    fn bus_owns_position(&self) -> bool {
        false
    }

    /// Called about four times a second, on the thread that polls, while the host handles the
    /// batch this consumer filled (only for a consumer whose bus keeps its position). A bus
    /// that must hear from its client while the application works is served here, delivering
    /// nothing (a record that arrives is kept for the next `poll`). The default does nothing.
    fn serve(&mut self) -> PluginResult<()> {
        Ok(())
    }

    /// Everything up to and including the event at `offset` was handled and durably committed
    /// by the host (its latest commit; events are acknowledged in delivery order, some may be
    /// skipped over by a later acknowledgement). A consumer whose bus keeps its position
    /// stores it there now; the default does nothing.
    fn acknowledge(&mut self, offset: &Offset) -> PluginResult<()> {
        let _ = offset;
        Ok(())
    }

    /// Reads forward to the first event of `category` and adds it to `found` (returning
    /// `true`), or returns `false` when the iteration ends (timeout) without one. Events passed
    /// over are skipped; the position ends right after the event returned.
    ///
    /// The default polls one event at a time; override it when the bus can search faster.
    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        let mut one = EventBatch::new(1, usize::MAX);
        loop {
            one.clear();
            match self.poll(&mut one)? {
                PollStatus::Ready => {
                    if let Some(event) = one.iter().find(|event| event.category == category) {
                        found.push(event);
                        return Ok(true);
                    }
                }
                PollStatus::Idle | PollStatus::Drained | PollStatus::Ended => return Ok(false),
            }
        }
    }
}

/// The waiting loop of a bus that is polled: calls `read` (which adds what is there now to the
/// batch and returns how many events it added) until it adds some, sleeping `interval` between
/// two calls; [`PollStatus::Drained`] once `timeout` has passed (`None`: wait forever): every
/// `read` was an answer of the bus that nothing is there (a read that cannot tell returns an
/// error instead).
pub fn poll_until(
    timeout: Option<Duration>,
    interval: Duration,
    mut read: impl FnMut() -> PluginResult<usize>,
) -> PluginResult<PollStatus> {
    let deadline = timeout.map(|timeout| std::time::Instant::now() + timeout);
    loop {
        if read()? > 0 {
            return Ok(PollStatus::Ready);
        }
        let pause = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(PollStatus::Drained);
                }
                left.min(interval)
            }
            None => interval,
        };
        std::thread::sleep(pause);
    }
}

/// A consumer class: how the host finds, documents, validates and builds a [`Consumer`].
///
/// List the class in [`export_plugin!`](crate::export_plugin) to make it loadable.
pub trait ConsumerClass: Consumer + Sized {
    /// The class name used in configs (`class = "..."`).
    const NAME: &'static str;
    /// One line saying what the class consumes.
    const DESCRIPTION: &'static str;
    /// Documentation of every setting, shown by `buslink plugins describe` (Markdown).
    const SETTINGS_DOC: &'static str;

    /// The operator commands [`Consumer::query`] runs (`buslink query --config F NAME ARGS`).
    const COMMANDS: &'static [CommandInfo] = &[];

    /// The class's settings. Derive `Deserialize` with `#[serde(deny_unknown_fields)]` so that a
    /// misspelt key is rejected by name.
    type Settings: DeserializeOwned;

    /// Checks the settings without connecting to anything (`buslink check` calls it).
    fn validate(settings: &Self::Settings) -> PluginResult<()> {
        let _ = settings;
        Ok(())
    }

    /// Builds a consumer from valid settings, without connecting yet.
    fn new(settings: Self::Settings, context: &Context) -> PluginResult<Self>;
}

/// An operator command a consumer class offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandInfo {
    /// The command's name (`features`).
    pub name: &'static str,
    /// Its arguments, as shown in help (`--queue Q --type T DATA`).
    pub usage: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
}

/// What the host tells a class about where it runs.
#[derive(Clone, Debug)]
pub struct Context {
    config_dir: PathBuf,
}

impl Context {
    /// A context whose relative paths resolve against `config_dir`.
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Context {
            config_dir: config_dir.into(),
        }
    }

    /// The directory of the config file the settings come from.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Resolves a path from the settings: relative paths are relative to the config file's
    /// directory, as everywhere in a buslink config.
    pub fn resolve_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config_dir.join(path)
        }
    }
}
