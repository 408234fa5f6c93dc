//! The parts of one consumer's run, below the daemon: loading plugin libraries (`plugin`),
//! the offset cache and the state files (`offsets`, `state_file`, `append_file`, `lock`), the
//! handlers with the dead-letter file and the error queue, Hermes mode, the stop flag, and a
//! consumer's health (the facts its run reports and the monitor that derives its state).
//! Nothing here opens a socket, serves HTTP, talks to systemd or parses arguments; the host
//! (`host/`) builds the daemon on it. See ARCHITECTURE.md for the map.
//!
//! The pipeline and one consumer's run (`host/src/pipeline.rs`, `engine.rs`) join this crate
//! once their ties to the control socket, the metrics and systemd are observers.

pub mod append_file;
pub mod dead_letter;
pub mod error_queue;
pub mod handlers;
pub mod health;
pub mod hermes_mode;
pub mod lock;
pub mod offsets;
pub mod plugin;
pub mod shutdown;
pub mod state_file;
pub mod steering;

/// The config types (`crate::config::...` inside this crate).
pub use buslink_config as config;
