//! Logging from a plugin into the host's log (the host's level, format and destination).
//!
//! ```ignore
//! buslink_plugin_api::log::warn(format!("queue {queue}: {lost} messages lost"));
//! ```

use abi_stable::std_types::RStr;
use abi_stable::StableAbi;
use std::sync::OnceLock;

/// How important a log line is.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed.
    Error,
    /// Something is wrong but consumption goes on (lost messages, a retry).
    Warn,
    /// Normal but noteworthy (connected, reconnected).
    Info,
    /// Details for diagnosis.
    Debug,
}

/// The host's log function, handed over when the host loads the plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostLog {
    /// Writes one line to the host's log.
    pub log: extern "C" fn(Level, RStr<'_>),
}

static HOST_LOG: OnceLock<HostLog> = OnceLock::new();

/// Installs the host's log function (called by the shim, once).
pub(crate) fn install(host: HostLog) {
    let _ = HOST_LOG.set(host);
}

/// Logs a line through the host (on stderr when no host installed a logger, e.g. in a plugin's
/// own unit tests).
pub fn log(level: Level, message: impl AsRef<str>) {
    let message = message.as_ref();
    match HOST_LOG.get() {
        Some(host) => (host.log)(level, message.into()),
        None => eprintln!("[{level:?}] {message}"),
    }
}

/// Logs an error.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message)
}

/// Logs a warning.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message)
}

/// Logs an informational line.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message)
}

/// Logs a debugging line.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message)
}
