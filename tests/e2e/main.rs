//! End-to-end tests: the real `buslink` binary, real plugin libraries, real files.
//!
//! Build the workspace first (`cargo build --workspace`); the README's test command does.

mod check;
mod common;
mod ctl;
mod durability;
mod errors;
mod examples;
mod faults;
mod handlers;
mod hermes;
mod hmb;
mod kafka;
mod loading;
mod metrics;
mod offsets;
mod permissions;
mod plugin_author;
mod plugins;
mod reload;
mod replay;
mod run;
mod several;
mod sqlite_bus;
mod systemd;
mod word;
