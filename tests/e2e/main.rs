//! End-to-end tests: the real `buslink` binary, real plugin libraries, real files.
//!
//! Build the workspace first (`cargo build --workspace`); the README's test command does.

mod common;
mod config_errors;
mod daemon;
mod durability;
mod examples;
mod faults;
mod handlers;
mod hermes;
mod hmb;
mod kafka;
mod loading;
mod ops;
mod permissions;
mod plugin_author;
mod replay;
mod sqlite_bus;
mod word;
