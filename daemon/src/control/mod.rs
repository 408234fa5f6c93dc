//! The control socket, hermes-client's CLI socket and more: `STATE_DIR/buslink.sock` (or
//! `[control] path`; mode 0600 unless `[control] mode` says otherwise), one line in, one answer
//! out. The running daemon serves it (`server`); `buslink ctl` is the client (`client`).
//!
//! Commands (`NAME`: one consumer; without it, every consumer of the daemon): `status [NAME]`
//! (human text) and `status --json [NAME]` (`{"consumers": [..]}`, or one consumer's object),
//! `pause [NAME]` (no more events handled, the offset committed, the bus left open), `resume
//! [NAME]` (goes on exactly where it stopped), `errors ...` (the error queue), `reload`
//! (re-read the config, as SIGHUP), `quit` (a stop, as SIGTERM). [`protocol::Request`] is the
//! one type of these requests, with their line both ways; `buslink ctl` maps its arguments
//! onto it.
//!
//! **Invariant:** the socket only reads the [`Shared`] state and sets flags (paused, the reload
//! request, and the stop request through [`Shutdown`](crate::shutdown::Shutdown)); the
//! pipelines alone change their consumers.

pub mod client;
pub mod protocol;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub use buslink_config::default_socket_path;
/// A consumer's steering surface (status, pause, queue requests, handler swaps) is the
/// engine's; the socket reads and sets it.
pub use buslink_engine::steering::{
    Command, HandlerSwap, PendingRequest, QueueCommand, QueueReply, QueueRequest, ReplayJob,
    ReplaySpec, Shared, Status, QUEUE_ANSWER_WAIT,
};

/// Every consumer the daemon runs, as the socket sees them, and the reload request.
#[derive(Debug, Default)]
pub struct Registry {
    consumers: Mutex<Vec<std::sync::Arc<Shared>>>,
    /// Set by `reload` and by SIGHUP.
    reload: std::sync::Arc<AtomicBool>,
    /// Where the outcome of the next reload goes (`ctl reload` waits for it).
    reload_waiters: Mutex<Vec<std::sync::mpsc::Sender<Result<String, String>>>>,
}

impl Registry {
    /// A registry of `consumers`.
    pub fn new(consumers: Vec<std::sync::Arc<Shared>>) -> Registry {
        Registry {
            consumers: Mutex::new(consumers),
            reload: std::sync::Arc::new(AtomicBool::new(false)),
            reload_waiters: Mutex::new(Vec::new()),
        }
    }

    /// Asks for a reload and waits for its outcome (`Err`: refused, the first problem; or no
    /// outcome within `wait`).
    pub fn reload_and_wait(&self, wait: std::time::Duration) -> Result<String, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.reload_waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(tx);
        self.request_reload();
        rx.recv_timeout(wait).unwrap_or_else(|_| {
            Err(format!(
                "no outcome within {} s (see the daemon's log)",
                wait.as_secs()
            ))
        })
    }

    /// Hands a reload's outcome to those waiting for it.
    pub fn reloaded(&self, outcome: Result<String, String>) {
        let waiters = std::mem::take(
            &mut *self
                .reload_waiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Makes SIGHUP ask for a reload.
    pub fn reload_on_sighup(&self) -> std::io::Result<()> {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, self.reload.clone()).map(|_| ())
    }

    /// The consumers, in config order.
    pub fn consumers(&self) -> Vec<std::sync::Arc<Shared>> {
        self.consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the consumers (after a reload).
    pub fn set_consumers(&self, consumers: Vec<std::sync::Arc<Shared>>) {
        *self
            .consumers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = consumers;
    }

    /// Asks the daemon to re-read its config.
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
    }

    /// Whether a reload was asked for since the last call (the flag is cleared).
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

/// How long `pause` waits for the dispatchers to stop between two events before it answers
/// `pausing` for those whose handlers still hold the event in hand.
pub const PAUSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long `reload` waits for the daemon's outcome (removed consumers get 15 s to stop).
pub const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(25);
