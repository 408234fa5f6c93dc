//! End-to-end tests: the real `buslink` binary, real plugin libraries, real files.
//!
//! Build the workspace first (`cargo build --workspace`); the README's test command does.

mod check;
mod common;
mod ctl;
mod durability;
mod errors;
mod examples;
mod executables;
mod faults;
mod handlers;
mod hermes;
mod hermes_plugins;
mod hmb;
mod kafka;
mod loading;
mod metrics;
mod offsets;
mod permissions;
mod plugin_author;
mod plugins;
mod prometheus;
mod reload;
mod replay;
mod run;
mod several;
mod sqlite_bus;
/// The sqlite bus tests again, on the sqlite plugin's executable (see `sqlite_bus.rs`): the
/// same file on purpose.
#[allow(clippy::duplicate_mod)]
#[path = "sqlite_bus.rs"]
mod sqlite_bus_executable;
mod systemd;
mod top;
mod word;
