//! The dead-letter file: events a handler with `on_failure = "dead-letter"` gave up on.
//!
//! `STATE_DIR/NAME.dead-letter.jsonl`, one JSON object per line: the event line's fields plus a
//! `dead_letter` object (`handler`, `error`, `attempts`, `time`). Each record is fsynced before
//! the pipeline goes on, so an event is never both skipped and unrecorded, and is written whole
//! or not at all ([`LineFile`]: a failed write is cut back, a torn last line cut at open).

use crate::append_file::LineFile;
use crate::handlers::DispatchedEvent;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub struct DeadLetterFile {
    path: PathBuf,
    file: Option<LineFile>,
    /// Its length when this run opened it.
    opened_at: u64,
}

#[derive(Serialize)]
struct Record<'a> {
    handler: &'a str,
    error: &'a str,
    attempts: u32,
    time: String,
}

impl DeadLetterFile {
    /// The dead-letter file of consumer `name` (created on first use).
    pub fn new(state_dir: &Path, name: &str) -> Self {
        DeadLetterFile {
            path: state_dir.join(format!("{name}.dead-letter.jsonl")),
            file: None,
            opened_at: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length, when it is open (`None`: nothing written by this run).
    pub fn length(&self) -> Option<u64> {
        self.file.as_ref().map(LineFile::length)
    }

    /// Takes back the records written after `length` (an earlier [`length`](Self::length)):
    /// their event was not handled after all and comes again. `None`: the file was not open
    /// then, so every record of this run goes.
    pub fn cut(&mut self, length: Option<u64>) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.cut(length.unwrap_or(self.opened_at).min(file.length())),
            None => Ok(()),
        }
    }

    /// Appends and fsyncs one record.
    pub fn record(
        &mut self,
        handler: &str,
        error: &str,
        attempts: u32,
        event: &DispatchedEvent<'_>,
    ) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let (file, repair) =
                    LineFile::open_state_file(&self.path, None).map_err(std::io::Error::other)?;
                repair.log(&self.path, "dead-letter file");
                self.opened_at = file.length();
                self.file.insert(file)
            }
        };
        let header = serde_json::to_vec(&Record {
            handler,
            error,
            attempts,
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        })
        .map_err(std::io::Error::other)?;
        // The event line is `{...}\n`: splice the record in as its first field.
        let line = event.line();
        let mut out = Vec::with_capacity(line.len() + header.len() + 16);
        out.extend_from_slice(b"{\"dead_letter\":");
        out.extend_from_slice(&header);
        out.push(b',');
        out.extend_from_slice(line.get(1..).unwrap_or_default());
        file.append(&out)?;
        file.sync()
    }
}
