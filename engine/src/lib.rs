//! The parts of one consumer's run, below the daemon: loading plugin libraries (`plugin`),
//! the offset cache and the state files (`offsets`, `state_file`, `append_file`, `lock`), the
//! handlers with the dead-letter file and the error queue, Hermes mode, the stop flag, and a
//! consumer's health (the facts its run reports and the monitor that derives its state).
//! Nothing here opens a socket, serves HTTP, talks to systemd or parses arguments; the host
//! (`host/`) builds the daemon on it. See ARCHITECTURE.md for the map.

#![deny(unreachable_pub)]

pub mod append_file;
pub mod backoff;
pub mod children;
pub mod dead_letter;
pub mod error;
pub mod error_queue;
pub mod handlers;
pub mod health;
pub mod hermes_mode;
pub mod lock;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod plugin;
pub mod range;
pub mod replay;
pub mod run;
pub mod shutdown;
pub mod state_file;
pub mod steering;

/// The config types (`crate::config::...` inside this crate).
pub use buslink_config as config;
