//! The command line.

use crate::logging::LogFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// buslink: consume a message bus through a plugin and replay its events to handlers.
#[derive(Debug, Parser)]
#[command(name = "buslink", version, about)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume the configured bus and hand its events to the handlers.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Drain what is on the bus now, commit, and exit.
        #[arg(long)]
        once: bool,
    },
}
