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
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
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
