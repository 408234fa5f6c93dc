//! The consumer under test, as the host drives it: every call crosses the export shim and is
//! written down (the calls a failure shows).

use buslink_plugin_api::ffi::{ConsumerBox, ROffset};
use buslink_plugin_api::session::Calls;
use buslink_plugin_api::{EventBatch, Offset, PluginError, PluginResult, PollStatus};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The calls made so far, shared with the rule's watcher (a hung call is the last one).
pub(crate) type CallLog = Arc<Mutex<Vec<String>>>;

/// A consumer built through the export shim, with the log of the calls made to it.
pub struct Driven {
    inner: ConsumerBox,
    log: CallLog,
}

impl Driven {
    /// Wraps a consumer built by a plugin's `new_consumer` (or
    /// [`class_consumer`](buslink_plugin_api::ffi::class_consumer)).
    pub fn new(inner: ConsumerBox) -> Driven {
        Driven {
            inner,
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
        self.inner.poll(batch).into_result().map_err(Into::into)
    }

    /// `find_next_event_of_category`, into `found` (cleared first).
    pub fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        found.clear();
        self.note(format!("find_next_event_of_category({category:?})"));
        self.inner
            .find_next_event_of_category(category.into(), found)
            .into_result()
            .map_err(Into::into)
    }

    /// `close`.
    pub fn close(&mut self) -> PluginResult<()> {
        self.note("close".into());
        self.inner.close().into_result().map_err(Into::into)
    }
}

impl Calls for Driven {
    type Error = PluginError;
    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.note(format!("set_timeout({timeout:?})"));
        let millis = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        self.inner
            .set_timeout(millis.into())
            .into_result()
            .map_err(Into::into)
    }
    fn open(&mut self) -> PluginResult<()> {
        self.note("open".into());
        self.inner.open().into_result().map_err(Into::into)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.note(format!("set_stop_when_drained({stop})"));
        self.inner
            .set_stop_when_drained(stop)
            .into_result()
            .map_err(Into::into)
    }
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.note("seek_to_beginning".into());
        self.inner
            .seek_to_beginning()
            .into_result()
            .map_err(Into::into)
    }
    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.note("seek_to_end".into());
        self.inner.seek_to_end().into_result().map_err(Into::into)
    }
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.note(format!("seek({offset})"));
        self.inner
            .seek(&ROffset::from(offset))
            .into_result()
            .map_err(Into::into)
    }
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.note(format!("seek_after({offset})"));
        self.inner
            .seek_after(&ROffset::from(offset))
            .into_result()
            .map_err(Into::into)
    }
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> PluginResult<()> {
        self.note(format!("check_position({last})"));
        self.inner
            .check_position(&ROffset::from(last), timestamp.timestamp_micros())
            .into_result()
            .map_err(Into::into)
    }
}
