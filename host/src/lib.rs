//! The buslink host: everything behind the `buslink` binary, as a library so that tests and
//! benchmarks can drive the same code. See ARCHITECTURE.md for the map.

pub mod append_file;
pub mod cli;
pub mod commands;
/// The config types live in their own crate (`configuration/`), below every other part.
pub use buslink_config as config;
pub mod control;
pub mod dead_letter;
pub mod engine;
pub mod error;
pub mod error_queue;
pub mod handlers;
pub mod health;
pub mod hermes_mode;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod offsets;
pub mod pipeline;
pub mod plugin;
pub mod service;
pub mod shutdown;
pub mod state_file;
pub mod supervisor;
