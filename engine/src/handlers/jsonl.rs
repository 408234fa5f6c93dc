//! `type = "jsonl"`: appends one JSON line per event to a file, **exactly-once**.
//!
//! Lines are gathered in memory and appended in one write per batch (or per 256 KiB); a failed
//! write is cut back, so the file only ever holds whole lines ([`LineFile`]). The file's length
//! after the `fdatasync` that precedes a commit is committed with the offset
//! ([`Handler::position`]); at the next start the file is cut back to it, so the events after
//! the commit, which the bus delivers again, are written once.

use super::{DispatchedEvent, Handler, HandlerError};
use crate::append_file::{Committed, LineFile};
use std::path::Path;

/// Lines kept in memory before they are written.
const BUFFER: usize = 256 * 1024;

pub(super) struct JsonlHandler {
    file: LineFile,
    /// Lines handled but not yet written.
    pending: Vec<u8>,
}

impl JsonlHandler {
    /// Opens (creating it and its directory if needed) the file for appending, cut back to
    /// `committed` bytes (the length committed with the offset) or to its last whole line. A
    /// new file gets `mode` (the handler's `mode`, default 0640).
    pub(super) fn open(
        path: &Path,
        committed: Option<Committed>,
        mode: u32,
    ) -> Result<Self, String> {
        let (file, repair) = LineFile::open(path, committed, mode)?;
        repair.log(path, "jsonl output");
        Ok(JsonlHandler {
            file,
            pending: Vec::with_capacity(BUFFER),
        })
    }

    /// Appends the pending lines; on failure the file is as before and they stay pending.
    fn write_pending(&mut self) -> Result<(), HandlerError> {
        self.file.append(&self.pending).map_err(|e| {
            HandlerError::new(format!("writing {}: {e}", self.file.path().display()))
        })?;
        self.pending.clear();
        Ok(())
    }
}

impl Handler for JsonlHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        let before = self.pending.len();
        self.pending.extend_from_slice(event.line());
        if self.pending.len() >= BUFFER {
            if let Err(error) = self.write_pending() {
                // This event is not handled: its line goes (the earlier ones stay pending).
                self.pending.truncate(before);
                return Err(error);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), HandlerError> {
        // A rotated (moved, deleted, replaced) file: the next lines go to the file at the path.
        self.file.reopen_if_replaced().map_err(HandlerError::new)?;
        self.write_pending()
    }

    fn sync(&mut self) -> Result<(), HandlerError> {
        self.flush()?;
        self.file
            .sync()
            .map_err(|e| HandlerError::new(format!("syncing {}: {e}", self.file.path().display())))
    }

    fn output_file(&self) -> Option<(&Path, (u64, u64))> {
        Some((self.file.path(), self.file.identity()))
    }

    fn position(&self) -> Option<u64> {
        Some(self.file.length() + self.pending.len() as u64)
    }

    fn rewind(&mut self, position: u64) -> Result<(), HandlerError> {
        let written = self.file.length();
        if position >= written {
            self.pending.truncate((position - written) as usize);
            return Ok(());
        }
        self.pending.clear();
        self.file.cut(position).map_err(|e| {
            HandlerError::new(format!("cutting back {}: {e}", self.file.path().display()))
        })
    }
}
