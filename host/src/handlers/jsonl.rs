//! `type = "jsonl"`: appends one JSON line per event to a file, fsynced before each commit.

use super::{DispatchedEvent, Handler, HandlerError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct JsonlHandler {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlHandler {
    /// Opens (creating it and its directory if needed) the file for appending.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))?;
        Ok(JsonlHandler {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    fn error(&self, e: std::io::Error) -> HandlerError {
        HandlerError::new(format!("writing {}: {e}", self.path.display()))
    }
}

impl Handler for JsonlHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        self.out.write_all(event.line()).map_err(|e| self.error(e))
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        self.out.flush().map_err(|e| self.error(e))
    }

    fn sync(&mut self) -> Result<(), HandlerError> {
        self.flush()?;
        self.out.get_ref().sync_data().map_err(|e| self.error(e))
    }
}
