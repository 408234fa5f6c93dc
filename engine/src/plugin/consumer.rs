//! The host's handle on a plugin consumer: plain Rust results, errors that name plugin, class
//! and method.

use buslink_plugin_api::ffi::{ConsumerBox, FfiConsumer};
use buslink_plugin_api::subprocess::SubprocessConsumer;
use buslink_plugin_api::{
    Consumer, EventBatch, Offset, OffsetRef, PluginError, PluginResult, PollStatus,
};
use std::fmt;
use std::time::Duration;

/// An error from a consumer method, with the plugin, class and method it came from.
#[derive(Debug, Clone)]
pub struct ConsumerError {
    pub plugin: String,
    pub class: String,
    pub method: &'static str,
    pub error: PluginError,
}

impl fmt::Display for ConsumerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin '{}' class '{}' {}(): [{}] {}",
            self.plugin,
            self.class,
            self.method,
            self.error.kind(),
            self.error
        )
    }
}

impl std::error::Error for ConsumerError {}

/// A consumer built by a plugin: a library's, through the stable ABI, or a plugin
/// executable's, through the subprocess protocol.
pub struct PluginConsumer {
    inner: Box<dyn Consumer>,
    plugin: String,
    class: String,
}

impl PluginConsumer {
    pub(super) fn new(inner: ConsumerBox, plugin: &str, class: &str) -> Self {
        PluginConsumer {
            inner: Box::new(FfiConsumer(inner)),
            plugin: plugin.to_owned(),
            class: class.to_owned(),
        }
    }

    /// A plugin executable's consumer (its child started and its consumer built).
    pub(super) fn process(inner: SubprocessConsumer, plugin: &str, class: &str) -> Self {
        PluginConsumer {
            inner: Box::new(inner),
            plugin: plugin.to_owned(),
            class: class.to_owned(),
        }
    }

    /// A consumer that did not come from a library: one served in-process through
    /// plugin-api's shim ([`buslink_plugin_api::ffi::consumer_box`]), for the engine's tests.
    pub fn in_process(inner: ConsumerBox, plugin: &str, class: &str) -> Self {
        PluginConsumer::new(inner, plugin, class)
    }

    fn wrap<T>(&self, method: &'static str, result: PluginResult<T>) -> Result<T, ConsumerError> {
        result.map_err(|error| ConsumerError {
            plugin: self.plugin.clone(),
            class: self.class.clone(),
            method,
            error,
        })
    }

    pub fn open(&mut self) -> Result<(), ConsumerError> {
        let result = self.inner.open();
        self.wrap("open", result)
    }

    pub fn close(&mut self) -> Result<(), ConsumerError> {
        let result = self.inner.close();
        self.wrap("close", result)
    }

    pub fn seek_to_beginning(&mut self) -> Result<(), ConsumerError> {
        let result = self.inner.seek_to_beginning();
        self.wrap("seek_to_beginning", result)
    }

    pub fn seek_to_end(&mut self) -> Result<(), ConsumerError> {
        let result = self.inner.seek_to_end();
        self.wrap("seek_to_end", result)
    }

    pub fn seek(&mut self, offset: &Offset) -> Result<(), ConsumerError> {
        let result = self.inner.seek(offset);
        self.wrap("seek", result)
    }

    pub fn seek_after(&mut self, offset: &Offset) -> Result<(), ConsumerError> {
        let result = self.inner.seek_after(offset);
        self.wrap("seek_after", result)
    }

    /// The offset of the event after `offset`, if the bus defines one.
    pub fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        self.inner.next_offset(offset)
    }

    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConsumerError> {
        let result = self.inner.set_timeout(timeout);
        self.wrap("set_timeout", result)
    }

    pub fn poll(&mut self, batch: &mut EventBatch) -> Result<PollStatus, ConsumerError> {
        let result = self.inner.poll(batch);
        self.wrap("poll", result)
    }

    pub fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> Result<bool, ConsumerError> {
        let result = self.inner.find_next_event_of_category(category, found);
        self.wrap("find_next_event_of_category", result)
    }

    /// `run --once`: the plugin may answer `Idle` at once when it knows nothing is waiting.
    pub fn set_stop_when_drained(&mut self, stop: bool) -> Result<(), ConsumerError> {
        let result = self.inner.set_stop_when_drained(stop);
        self.wrap("set_stop_when_drained", result)
    }

    /// Asks the plugin whether the event at `last` on the bus is the one handled last (same
    /// timestamp): a bus replaced under the same offsets is a `Data` error.
    pub fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ConsumerError> {
        let result = self.inner.check_position(last, timestamp);
        self.wrap("check_position", result)
    }

    /// How far behind the end of the bus the consumer is, when the plugin can tell.
    pub fn lag(&mut self) -> Option<u64> {
        self.inner.lag()
    }

    /// Why the bus holds the consumer up though it answers (a group's long rebalance), when
    /// the plugin can tell.
    pub fn held_up(&mut self) -> Option<String> {
        self.inner.held_up()
    }

    /// Whether the bus keeps the consumer's position (see the plugin-api's `Consumer`).
    pub fn bus_owns_position(&self) -> bool {
        self.inner.bus_owns_position()
    }

    /// Tells the plugin everything up to `offset` is handled and durably committed.
    pub fn acknowledge(&mut self, offset: &Offset) -> Result<(), ConsumerError> {
        let result = self.inner.acknowledge(offset);
        self.wrap("acknowledge", result)
    }

    /// Keeps the bus served while the host handles the batch in flight (a bus that keeps the
    /// position: see the plugin-api's `Consumer::serve`).
    pub fn serve(&mut self) -> Result<(), ConsumerError> {
        let result = self.inner.serve();
        self.wrap("serve", result)
    }

    /// The plugin's counters (`gaps`, `reconnects`, ...); a plugin executable's also say its
    /// process (`plugin_process_pid`, `plugin_process_starts`, `plugin_process_restarts`).
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.inner.counters()
    }

    /// Runs an operator command of the class.
    pub fn query(&mut self, command: &str, args: &[String]) -> Result<String, ConsumerError> {
        let result = self.inner.query(command, args);
        self.wrap("query", result)
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    pub fn class(&self) -> &str {
        &self.class
    }
}

/// The host opens every session through plugin-api's one call order
/// ([`open_at`](buslink_plugin_api::session::open_at)).
impl buslink_plugin_api::session::Calls for PluginConsumer {
    type Error = ConsumerError;
    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ConsumerError> {
        PluginConsumer::set_timeout(self, timeout)
    }
    fn open(&mut self) -> Result<(), ConsumerError> {
        PluginConsumer::open(self)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> Result<(), ConsumerError> {
        PluginConsumer::set_stop_when_drained(self, stop)
    }
    fn seek_to_beginning(&mut self) -> Result<(), ConsumerError> {
        PluginConsumer::seek_to_beginning(self)
    }
    fn seek_to_end(&mut self) -> Result<(), ConsumerError> {
        PluginConsumer::seek_to_end(self)
    }
    fn seek(&mut self, offset: &Offset) -> Result<(), ConsumerError> {
        PluginConsumer::seek(self, offset)
    }
    fn seek_after(&mut self, offset: &Offset) -> Result<(), ConsumerError> {
        PluginConsumer::seek_after(self, offset)
    }
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), ConsumerError> {
        PluginConsumer::check_position(self, last, timestamp)
    }
}
