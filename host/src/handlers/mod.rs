//! Handlers: where events go. Each configured handler gets every event its `match` selects.
//!
//! A new handler type implements [`Handler`] in a module of its own and is added to
//! [`build`]; matching, the event line format and the commit protocol are shared.

mod event;
mod filter;
mod jsonl;
mod stdout;

pub use event::DispatchedEvent;
pub use filter::EventMatcher;

use crate::config::{HandlerConfig, HandlerKind};
use std::fmt;

/// A handler failure.
#[derive(Debug)]
pub struct HandlerError {
    pub message: String,
}

impl HandlerError {
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What every handler type implements.
pub trait Handler: Send {
    /// Takes one event. An `Err` means the event was not handled: its offset is not committed.
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError>;

    /// Makes what was handled visible (end of a batch): flush buffers.
    fn flush(&mut self) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Makes what was handled durable; called before every offset commit.
    fn sync(&mut self) -> Result<(), HandlerError> {
        self.flush()
    }
}

/// A configured handler: its name, its match, and the handler itself.
pub struct ConfiguredHandler {
    pub name: String,
    pub matcher: EventMatcher,
    pub handler: Box<dyn Handler>,
}

/// Builds the configured handlers (opens files, checks patterns).
pub fn build(configs: &[HandlerConfig]) -> Result<Vec<ConfiguredHandler>, String> {
    configs
        .iter()
        .map(|config| {
            let matcher = EventMatcher::new(&config.filter)
                .map_err(|e| format!("handler '{}': {e}", config.name))?;
            let handler: Box<dyn Handler> = match &config.kind {
                HandlerKind::Stdout => Box::new(stdout::StdoutHandler::new()),
                HandlerKind::Jsonl { path } => Box::new(
                    jsonl::JsonlHandler::open(path)
                        .map_err(|e| format!("handler '{}': {e}", config.name))?,
                ),
            };
            Ok(ConfiguredHandler {
                name: config.name.clone(),
                matcher,
                handler,
            })
        })
        .collect()
}
