//! The buslink daemon around the engine: everything `buslink run` adds to one consumer's run.
//! `start::run` builds every consumer of the config, starts the control socket (`control`),
//! the metrics and health endpoints (`metrics`) and the health monitor (whose news goes to
//! systemd through `service`), and hands the consumers to the `supervisor` (one thread each,
//! restarts, reload). Nothing here parses arguments; the `buslink` binary (`host/`) maps its
//! command line onto this crate and the engine. See ARCHITECTURE.md for the map.

#![deny(unreachable_pub)]

pub mod control;
pub mod metrics;
pub mod service;
pub mod start;
pub mod supervisor;

pub use start::run;

// The engine's and the config's modules under short paths inside this crate.
use buslink_config as config;
use buslink_engine::run as engine;
use buslink_engine::{error, handlers, health, lock, plugin, shutdown};
