//! The consumer under test, as the host drives it: every call crosses the export shim and is
//! written down (the calls a failure shows).

use buslink_plugin_api::ffi::{ConsumerBox, FfiConsumer};
use buslink_plugin_api::session::Calls;
use buslink_plugin_api::{Consumer, EventBatch, Offset, PluginError, PluginResult, PollStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The calls made so far, shared with the rule's watcher (a hung call is the last one).
pub(crate) type CallLog = Arc<Mutex<Vec<String>>>;

/// A consumer built through the export shim, with the log of the calls made to it.
pub struct Driven {
    inner: FfiConsumer,
    log: CallLog,
}

impl Driven {
    /// Wraps a consumer built by a plugin's `new_consumer` (or
    /// [`class_consumer`](buslink_plugin_api::ffi::class_consumer)).
    pub fn new(inner: ConsumerBox) -> Driven {
        Driven {
            inner: FfiConsumer(inner),
            log: CallLog::default(),
        }
    }

    pub(crate) fn log(&self) -> CallLog {
        Arc::clone(&self.log)
    }

    fn note(&self, call: String) {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(call);
    }

    /// `poll`, into `batch` (cleared first).
    pub fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        batch.clear();
        self.note(format!("poll(max {})", batch.max_events()));
        Consumer::poll(&mut self.inner, batch)
    }

    /// `find_next_event_of_category`, into `found` (cleared first).
    pub fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        found.clear();
        self.note(format!("find_next_event_of_category({category:?})"));
        Consumer::find_next_event_of_category(&mut self.inner, category, found)
    }

    /// `held_up`: why the bus holds the consumer up though it answers (`None`: it does not).
    pub fn held_up(&mut self) -> Option<String> {
        self.note("held_up".into());
        Consumer::held_up(&mut self.inner)
    }

    /// `close`.
    pub fn close(&mut self) -> PluginResult<()> {
        self.note("close".into());
        Consumer::close(&mut self.inner)
    }
}

impl Calls for Driven {
    type Error = PluginError;
    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.note(format!("set_timeout({timeout:?})"));
        Consumer::set_timeout(&mut self.inner, timeout)
    }
    fn open(&mut self) -> PluginResult<()> {
        self.note("open".into());
        Consumer::open(&mut self.inner)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.note(format!("set_stop_when_drained({stop})"));
        Consumer::set_stop_when_drained(&mut self.inner, stop)
    }
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.note("seek_to_beginning".into());
        Consumer::seek_to_beginning(&mut self.inner)
    }
    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.note("seek_to_end".into());
        Consumer::seek_to_end(&mut self.inner)
    }
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.note(format!("seek({offset})"));
        Consumer::seek(&mut self.inner, offset)
    }
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.note(format!("seek_after({offset})"));
        Consumer::seek_after(&mut self.inner, offset)
    }
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> PluginResult<()> {
        self.note(format!("check_position({last})"));
        Consumer::check_position(&mut self.inner, last, timestamp)
    }
}
