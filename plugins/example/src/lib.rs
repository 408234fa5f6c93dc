//! Example buslink plugin: consumes a JSON-lines file, one event per line. The offset of an
//! event is the byte position where its line starts; its category is "line". Lines still being
//! written (no newline yet) wait for the writer. Copy it; see docs/plugin-authors.md.

use buslink_plugin_api::{
    poll_until, Body, Consumer, ConsumerClass, Context, Event, EventBatch, Offset, OffsetRef,
    PluginError, PluginResult, PollStatus,
};
use serde::Deserialize;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Duration;

/// `[consumer.settings]`; unknown keys are rejected by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The file to consume (relative: to the config file).
    path: String,
}

pub struct JsonLinesConsumer {
    path: std::path::PathBuf,
    timeout: Option<Duration>,
    position: u64,
    /// The last read stopped at a line still being written: the end is not known yet.
    writing: bool,
}

impl ConsumerClass for JsonLinesConsumer {
    const NAME: &'static str = "JsonLinesConsumer";
    const DESCRIPTION: &'static str = "a JSON-lines file, one event per line (example plugin)";
    const SETTINGS_DOC: &'static str =
        "- `path` (string, required): the file, relative to the config";
    type Settings = Settings;

    fn validate(settings: &Settings) -> PluginResult<()> {
        match settings.path.is_empty() {
            true => Err(PluginError::config("`path` must name a file").with_key("path")),
            false => Ok(()),
        }
    }

    fn new(settings: Settings, context: &Context) -> PluginResult<Self> {
        let path = context.resolve_path(&settings.path);
        Ok(JsonLinesConsumer {
            path,
            timeout: None,
            position: 0,
            writing: false,
        })
    }
}

impl JsonLinesConsumer {
    /// Reads the complete lines from `position` on into `batch`; returns how many.
    fn read(&mut self, batch: &mut EventBatch) -> PluginResult<usize> {
        // No file yet: an empty bus.
        let Ok(file) = std::fs::File::open(&self.path) else {
            return Ok(0);
        };
        let io = |e: std::io::Error| PluginError::connect(format!("{}: {e}", self.path.display()));
        // A file shorter than the position was cut or replaced: the lines read before are not
        // there any more, and what is there now was never read. Said, never skipped.
        let length = file.metadata().map_err(io)?.len();
        if length < self.position {
            return Err(PluginError::data(format!(
                "{} is {length} bytes long, shorter than the position {}: the file was cut or \
                 replaced; move the offset (`buslink offsets set`) to go on",
                self.path.display(),
                self.position
            )));
        }
        let mut reader = BufReader::new(file);
        reader.seek(SeekFrom::Start(self.position)).map_err(io)?;
        let (mut line, mut added) = (String::new(), 0);
        while !batch.is_full() {
            line.clear();
            let read = reader.read_line(&mut line).map_err(io)?;
            if read == 0 || !line.ends_with('\n') {
                self.writing = read > 0;
                break; // The end, or a line still being written.
            }
            batch.push(Event {
                offset: OffsetRef::Int(self.position as i64),
                timestamp: chrono::Utc::now(),
                category: "line",
                body: Body::Json(line.trim_end()),
            });
            self.position += read as u64;
            added += 1;
        }
        Ok(added)
    }
}

// `open` and `close` keep their default (nothing to do): the file is opened at each poll.
impl Consumer for JsonLinesConsumer {
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.position = 0;
        Ok(())
    }

    /// Only where a line starts is an event: the beginning of the file, or the byte after a
    /// newline, before the end.
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let starts_a_line = |at: u64| -> std::io::Result<bool> {
            let mut file = std::fs::File::open(&self.path)?;
            if at >= file.metadata()?.len() {
                return Ok(false);
            }
            if at == 0 {
                return Ok(true);
            }
            let mut before = [0u8; 1];
            file.seek(SeekFrom::Start(at - 1))?;
            std::io::Read::read_exact(&mut file, &mut before)?;
            Ok(before[0] == b'\n')
        };
        match offset {
            Offset::Int(at) if *at >= 0 && starts_a_line(*at as u64).unwrap_or(false) => {
                self.position = *at as u64;
                Ok(())
            }
            other => Err(PluginError::offset_not_found(format!(
                "no line starts at {other} in {}",
                self.path.display()
            ))),
        }
    }

    /// Byte offsets have no `+ 1` successor: resume after the line that starts at `offset`.
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.seek(offset)?;
        self.read(&mut EventBatch::new(1, usize::MAX)).map(|_| ())
    }

    fn next_offset(&self, _offset: OffsetRef<'_>) -> Option<Offset> {
        None // It depends on the length of the line.
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        Ok(())
    }

    /// The end of the file is the bus's own answer (`Drained`), unless a line is still being
    /// written there: then it cannot tell (`Idle`).
    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        match poll_until(self.timeout, Duration::from_millis(20), || self.read(batch))? {
            PollStatus::Drained if self.writing => Ok(PollStatus::Idle),
            status => Ok(status),
        }
    }
}

buslink_plugin_api::export_plugin! {
    name: "example",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [JsonLinesConsumer],
}
