//! Handlers: where events go. Each configured handler gets every event its `match` selects.
//!
//! A new handler type implements [`Handler`] in a module of its own and is added to
//! [`build`]; matching, the event line format and the commit protocol are shared.

mod event;
mod exec;
mod filter;
mod http;
mod jsonl;
mod plugin;
pub mod preflight;
mod stdout;

pub use event::DispatchedEvent;
pub use exec::resolve_program;
pub use filter::EventMatcher;

use crate::config::{FailurePolicy, HandlerConfig, HandlerKind, RetryPolicy};
pub use crate::offsets::OutputPosition;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

    /// Exactly-once outputs (`jsonl`): the output's length in bytes, counting every event
    /// handled so far. After a `sync` it is what the file holds; the pipeline commits it with
    /// the offset and hands it back at the next start (`build_one`'s `committed`). `None` (the
    /// default): the output cannot be cut back, delivery is at-least-once.
    fn position(&self) -> Option<u64> {
        None
    }

    /// The file an exactly-once output writes (with [`position`](Self::position)): its path,
    /// device and inode.
    fn output_file(&self) -> Option<(&Path, (u64, u64))> {
        None
    }

    /// Takes back what was handled after `position` (an earlier [`position`](Self::position)):
    /// a later handler failed on the same event, which will be delivered again.
    fn rewind(&mut self, _position: u64) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// `type = "null"`: takes every event and does nothing (benchmarks measure buslink with it).
struct NullHandler;

impl Handler for NullHandler {
    fn handle(&mut self, _event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A configured handler: its name, its match, its failure handling, and the handler itself.
pub struct ConfiguredHandler {
    pub name: String,
    /// Its `type` (what a replay may deliver to depends on it).
    pub kind: crate::config::HandlerType,
    pub matcher: EventMatcher,
    pub retry: RetryPolicy,
    pub on_failure: FailurePolicy,
    pub retry_interval: std::time::Duration,
    pub queue_key: Option<String>,
    pub handler: Box<dyn Handler>,
}

/// Builds one handler (opens its file, finds its command, builds its HTTP client, loads its
/// plugin). Errors do not name the handler: the caller does. `committed`: the output position committed with the offset for this handler, if
/// any (an exactly-once output is cut back to it).
pub fn build_one(
    config: &HandlerConfig,
    base_dir: &Path,
    plugin_dirs: &[PathBuf],
    committed: Option<&OutputPosition>,
) -> Result<ConfiguredHandler, String> {
    let matcher = EventMatcher::new(&config.filter)?;
    let handler: Box<dyn Handler> = match &config.kind {
        HandlerKind::Null => Box::new(NullHandler),
        HandlerKind::Stdout => Box::new(stdout::StdoutHandler::new()),
        HandlerKind::Jsonl { path, mode } => {
            let committed = committed.and_then(|c| c.length_of(path, &config.name));
            Box::new(jsonl::JsonlHandler::open(path, committed, *mode)?)
        }
        HandlerKind::Exec(exec) => Box::new(exec::ExecHandler::new(&config.name, exec, base_dir)?),
        HandlerKind::Http(http) => Box::new(http::HttpHandler::new(http)?),
        HandlerKind::Plugin(plugin) => {
            Box::new(plugin::PluginHandler::new(plugin, base_dir, plugin_dirs)?)
        }
    };
    Ok(ConfiguredHandler {
        name: config.name.clone(),
        kind: config.kind.handler_type(),
        matcher,
        retry: config.retry,
        on_failure: config.on_failure,
        retry_interval: config.retry_interval,
        queue_key: config.queue_key.clone(),
        handler,
    })
}

/// Builds every configured handler, with the output positions committed with the offset
/// (keyed by handler name); the errors of all of them.
pub fn build(
    configs: &[HandlerConfig],
    base_dir: &Path,
    plugin_dirs: &[PathBuf],
    committed: &BTreeMap<String, OutputPosition>,
) -> Result<Vec<ConfiguredHandler>, Vec<String>> {
    let (built, failed): (Vec<_>, Vec<_>) = configs
        .iter()
        .map(|config| {
            build_one(config, base_dir, plugin_dirs, committed.get(&config.name))
                .map_err(|e| format!("handler '{}': {e}", config.name))
        })
        .partition(Result::is_ok);
    if failed.is_empty() {
        Ok(built.into_iter().filter_map(Result::ok).collect())
    } else {
        Err(failed.into_iter().filter_map(Result::err).collect())
    }
}
/// The exactly-once outputs' positions (after a `sync`: their files' lengths), by handler.
pub fn output_positions(
    handlers: &[ConfiguredHandler],
) -> std::collections::BTreeMap<String, OutputPosition> {
    handlers
        .iter()
        .filter_map(|h| {
            let ((path, (dev, ino)), length) = (h.handler.output_file()?, h.handler.position()?);
            Some((
                h.name.clone(),
                OutputPosition {
                    path: path.to_path_buf(),
                    length,
                    file_id: Some([dev, ino]),
                },
            ))
        })
        .collect()
}

/// Why a handler could not be built or run here, and the key of its table the problem is
/// about (`path`, `command`, `cwd`; `name` where it is the handler as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerProblem {
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for HandlerProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether `handler` could be built and run here: its output writable, its program found and
/// its `cwd` a directory, an http or plugin handler built (nothing sent). `check` runs it, and
/// a reload before it swaps handlers.
pub fn check_handler(
    handler: &HandlerConfig,
    base_dir: &Path,
    plugin_dirs: &[std::path::PathBuf],
) -> Result<(), HandlerProblem> {
    let at = |key: &'static str| move |message: String| HandlerProblem { key, message };
    check_handler_kind(handler, base_dir, plugin_dirs).map_err(|(key, message)| at(key)(message))
}

fn check_handler_kind(
    handler: &HandlerConfig,
    base_dir: &Path,
    plugin_dirs: &[std::path::PathBuf],
) -> Result<(), (&'static str, String)> {
    let on = |key: &'static str| move |message: String| (key, message);
    match &handler.kind {
        HandlerKind::Stdout | HandlerKind::Null => Ok(()),
        HandlerKind::Jsonl { path, .. } => {
            if path.is_dir() {
                return Err(("path", format!("{} is a directory", path.display())));
            }
            if path.exists() {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map(|_| ())
                    .map_err(|e| ("path", format!("cannot append to {}: {e}", path.display())))
            } else {
                let parent = path.parent().unwrap_or(Path::new("."));
                preflight::check_writable_dir(parent).map_err(on("path"))
            }
        }
        HandlerKind::Exec(exec) => match exec.command.first() {
            Some(program) => {
                resolve_program(program, base_dir).map_err(on("command"))?;
                exec::checked_cwd(&exec.cwd, false)
                    .map(|_| ())
                    .map_err(on("cwd"))
            }
            None => Err(("command", "`command` is empty".into())),
        },
        HandlerKind::Http(_) | HandlerKind::Plugin(_) => {
            build_one(handler, base_dir, plugin_dirs, None)
                .map(|_| ())
                .map_err(on("name"))
        }
    }
}
