//! All buses of a server, created on first use, plus the server-wide signals
//! (restart, shutdown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::bus::Bus;
use crate::settings::Settings;

/// The buses of one server.
#[derive(Debug)]
pub struct Hub {
    settings: Settings,
    buses: Mutex<HashMap<String, Arc<Bus>>>,
    serial: AtomicU64,
    shutting_down: AtomicBool,
    /// Bumped on every restart: connections of an older epoch are cut.
    epoch: watch::Sender<u64>,
    /// Set when the server is asked to stop (shutdown or `/_admin/shutdown`).
    stop_requested: watch::Sender<bool>,
}

impl Hub {
    /// An empty hub.
    pub fn new(settings: Settings) -> Hub {
        Hub {
            settings,
            buses: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            epoch: watch::Sender::new(0),
            stop_requested: watch::Sender::new(false),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn buses(&self) -> MutexGuard<'_, HashMap<String, Arc<Bus>>> {
        self.buses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bus with this name, created if needed.
    pub fn bus(&self, name: &str) -> Arc<Bus> {
        let mut buses = self.buses();
        Arc::clone(
            buses
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Bus::new(name, self.settings.buffer_size))),
        )
    }

    /// The bus with this name if it exists.
    pub fn existing_bus(&self, name: &str) -> Option<Arc<Bus>> {
        self.buses().get(name).cloned()
    }

    /// Every bus.
    pub fn all_buses(&self) -> Vec<Arc<Bus>> {
        self.buses().values().cloned().collect()
    }

    /// A new creation number for a session.
    pub fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs the session purge on every bus.
    pub fn purge(&self) {
        for bus in self.all_buses() {
            bus.purge(self.settings.session_timeout);
        }
    }

    /// Simulates a server restart: every session is gone and open
    /// connections are cut; queues survive only with `keep_queues` (like a
    /// server with storage), otherwise every bus starts empty (RAM mode).
    pub fn restart(&self, keep_queues: bool) {
        if keep_queues {
            for bus in self.all_buses() {
                bus.drop_sessions();
            }
        } else {
            let old: Vec<Arc<Bus>> = self.buses().drain().map(|(_, b)| b).collect();
            for bus in old {
                bus.drop_sessions();
            }
        }
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
    }

    /// A receiver that changes on every restart.
    pub fn epoch(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// Whether the server is stopping (sends get 503, long polls end).
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Enters the stopping state and wakes every long poll.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for bus in self.all_buses() {
            bus.wake_all();
        }
        self.stop_requested.send_replace(true);
    }

    /// Asks the owner of the server to stop it (`/_admin/shutdown`).
    pub fn request_stop(&self) {
        self.stop_requested.send_replace(true);
    }

    /// A receiver that becomes true when a stop is requested.
    pub fn stop_requested(&self) -> watch::Receiver<bool> {
        self.stop_requested.subscribe()
    }
}
