//! Checks before handlers are used: what `buslink check` reports and a reload verifies before
//! it swaps a consumer's handlers, without handling an event.

use crate::config::{HandlerConfig, HandlerKind};
use crate::handlers::resolve_program;
use std::path::Path;

/// Whether `handler` could be built and run here: its output writable, its program found, an
/// http or plugin handler built (nothing sent). `check` runs it, and a reload before it swaps
/// handlers.
pub fn check_handler(
    handler: &HandlerConfig,
    base_dir: &Path,
    plugin_dirs: &[std::path::PathBuf],
) -> Result<(), String> {
    match &handler.kind {
        HandlerKind::Stdout | HandlerKind::Null => Ok(()),
        HandlerKind::Jsonl { path, .. } => {
            if path.is_dir() {
                return Err(format!("{} is a directory", path.display()));
            }
            if path.exists() {
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map(|_| ())
                    .map_err(|e| format!("cannot append to {}: {e}", path.display()))
            } else {
                let parent = path.parent().unwrap_or(Path::new("."));
                check_writable_dir(parent)
            }
        }
        HandlerKind::Exec(exec) => match exec.command.first() {
            Some(program) => resolve_program(program, base_dir).map(|_| ()),
            None => Err("`command` is empty".into()),
        },
        HandlerKind::Http(_) | HandlerKind::Plugin(_) => {
            crate::handlers::build_one(handler, base_dir, plugin_dirs, None).map(|_| ())
        }
    }
}

/// Whether `dir` exists and is writable, or could be created.
pub fn check_writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => return Ok(()),
        }
    }
    if !existing.is_dir() {
        return Err(format!("{} is not a directory", existing.display()));
    }
    tempfile::tempfile_in(existing)
        .map(|_| ())
        .map_err(|e| format!("cannot write in {}: {e}", existing.display()))
}
