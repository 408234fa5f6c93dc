//! The buslink host: everything behind the `buslink` binary, as a library so that tests and
//! benchmarks can drive the same code. See ARCHITECTURE.md for the map.

#![deny(unreachable_pub)]

pub mod cli;
pub mod commands;
/// The config types live in their own crate (`configuration/`), below every other part.
pub use buslink_config as config;
/// The daemon around the engine lives in its own crate (`daemon/`).
pub use buslink_daemon::{control, metrics, service, supervisor};
/// One consumer's run (the engine crate's `run` module).
pub use buslink_engine::run as engine;
/// The parts of a consumer's run live in the engine crate (`engine/`).
pub use buslink_engine::{
    append_file, dead_letter, error, error_queue, handlers, health, hermes_mode, lock, offsets,
    pipeline, plugin, replay, shutdown, state_file,
};
pub mod logging;
