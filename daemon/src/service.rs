//! Telling the service manager (systemd, `Type=notify`) how the daemon is: `READY=1` once the
//! pipeline runs, `STATUS=` lines as the consumer connects, consumes or retries, `STOPPING=1`
//! when a stop begins, and `WATCHDOG=1` pings at half the `WatchdogSec` it asks for.
//!
//! Everything here does nothing without `NOTIFY_SOCKET` (not started by systemd). A failure to
//! send is logged at debug level only: the daemon's work never depends on the service manager.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How many consumers the daemon runs: with several, each status line names its consumer.
static CONSUMERS: AtomicUsize = AtomicUsize::new(1);
/// Whether `STOPPING=1` was sent (once per process).
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Tells how many consumers run (the supervisor, at start and after a reload).
pub fn set_consumer_count(count: usize) {
    CONSUMERS.store(count, Ordering::SeqCst);
}

/// `NAME: text` where the daemon runs several consumers, else `text`.
fn of_consumer(name: &str, text: &str) -> String {
    if CONSUMERS.load(Ordering::SeqCst) > 1 {
        format!("{name}: {text}")
    } else {
        text.to_owned()
    }
}

/// One consumer's status line (named where the daemon runs several).
pub fn consumer_status(name: &str, text: &str) {
    status(&of_consumer(name, text));
}

/// Ready (the service manager takes the first), with one consumer's status line.
pub fn consumer_ready(name: &str, text: &str) {
    ready(&of_consumer(name, text));
}

/// What the engine calls when a consumer's run is up: [`consumer_ready`].
pub fn ready_hook() -> crate::health::Ready {
    crate::health::Ready::new(consumer_ready)
}

fn send(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!("cannot notify the service manager: {error}");
    }
}

/// The daemon is up: the pipeline runs (the bus may still be connecting: see the status).
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// One line for `systemctl status` (`consuming`, `reconnecting: ...`).
pub fn status(status: &str) {
    send(&[sd_notify::NotifyState::Status(status)]);
}

/// The process's stop began (the offsets of what was handled are being committed); sent once.
/// A consumer restarted by a reload or after a failure is no stop of the service.
pub fn stopping() {
    if STOPPING.swap(true, Ordering::SeqCst) {
        return;
    }
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping: committing what was handled"),
    ]);
}

/// Watchdog pings, when the service manager asks for them (`WATCHDOG_USEC`).
pub struct Watchdog {
    every: Option<Duration>,
    last: std::sync::Mutex<Instant>,
}

impl Watchdog {
    /// Reads the interval the service manager asks for; pings at half of it.
    pub fn from_env() -> Watchdog {
        Watchdog {
            every: sd_notify::watchdog_enabled().map(|timeout| timeout / 2),
            last: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Pings if due: called from the dispatcher's loop (at least every 200 ms while it waits),
    /// for every event it hands over and between a handler's retries, so a long batch of slow
    /// handlers keeps pinging; a daemon stuck anywhere else stops pinging and is restarted.
    pub fn tick(&self) {
        let Some(every) = self.every else {
            return;
        };
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() >= every {
            send(&[sd_notify::NotifyState::Watchdog]);
            *last = Instant::now();
        }
    }
}
