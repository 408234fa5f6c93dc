//! The `SqliteConsumer` class.

use crate::bus::BusFile;
use buslink_plugin_api::{
    poll_until, Consumer, ConsumerClass, Context, EventBatch, Offset, PluginError, PluginResult,
    PollStatus,
};
use serde::Deserialize;
use std::time::Duration;

/// Settings of [`SqliteConsumer`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    /// Path of the bus database (relative paths: relative to the config file).
    pub uri: String,
    /// How often to look for new rows while waiting, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

fn default_poll_interval_ms() -> u64 {
    50
}

/// Where the next poll reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// No positioning call yet.
    Unset,
    /// At msgid `n`: the next event is the first row with msgid >= n.
    At(i64),
}

/// Consumes a Hermes sqlite bus.
pub struct SqliteConsumer {
    bus: BusFile,
    poll_interval: Duration,
    timeout: Option<Duration>,
    position: Position,
}

impl ConsumerClass for SqliteConsumer {
    const NAME: &'static str = "SqliteConsumer";
    const DESCRIPTION: &'static str =
        "Hermes sqlite bus (the hermesmessages table), read-only, streamed in bounded memory";
    const SETTINGS_DOC: &'static str = "\
- `uri` (string, required): path of the bus database file written by the Hermes server's \
sqlite bus producer; relative to the config file. The file and its table may not exist yet: \
the consumer waits for them.
- `poll_interval_ms` (integer, default 50): how often to look for new rows while waiting.";

    type Settings = SqliteSettings;

    fn validate(settings: &SqliteSettings) -> PluginResult<()> {
        if settings.uri.trim().is_empty() {
            return Err(
                PluginError::config("`uri` must name the bus database file").with_key("uri")
            );
        }
        if settings.poll_interval_ms == 0 {
            return Err(PluginError::config("`poll_interval_ms` must be at least 1")
                .with_key("poll_interval_ms"));
        }
        Ok(())
    }

    fn new(settings: SqliteSettings, context: &Context) -> PluginResult<Self> {
        let uri = settings
            .uri
            .strip_prefix("sqlite://")
            .unwrap_or(&settings.uri);
        Ok(SqliteConsumer {
            bus: BusFile::new(context.resolve_path(uri)),
            poll_interval: Duration::from_millis(settings.poll_interval_ms),
            timeout: None,
            position: Position::Unset,
        })
    }
}

impl SqliteConsumer {
    fn position(&self) -> PluginResult<i64> {
        match self.position {
            Position::At(msgid) => Ok(msgid),
            Position::Unset => Err(PluginError::internal(
                "poll called before a seek: the host must position the consumer first",
            )),
        }
    }
}

impl Consumer for SqliteConsumer {
    fn open(&mut self) -> PluginResult<()> {
        // Checks the file can be read when it exists; a missing file is an empty bus.
        self.bus.bounds().map(|_| ())
    }

    fn close(&mut self) -> PluginResult<()> {
        self.bus.close();
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.position = Position::At(i64::MIN);
        Ok(())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        let next = match self.bus.bounds()? {
            Some(bounds) => bounds.last_allocated + 1,
            None => i64::MIN,
        };
        self.position = Position::At(next);
        Ok(())
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let Offset::Int(msgid) = *offset else {
            return Err(PluginError::offset_not_found(format!(
                "sqlite bus offsets are integers (msgid), not {} offsets like {offset}",
                offset.type_name()
            )));
        };
        let path = self.bus.path().display().to_string();
        let Some(bounds) = self.bus.bounds()? else {
            return Err(PluginError::offset_not_found(format!(
                "cannot seek to offset {msgid}: bus database {path} does not exist or has no \
                 hermesmessages table"
            )));
        };
        let next_new = bounds.last_allocated + 1;
        let first = bounds.first.unwrap_or(next_new);
        if msgid < first || msgid > next_new {
            return Err(PluginError::offset_not_found(format!(
                "offset {msgid} is not on bus {path}: valid offsets are {first} to {next_new} \
                 (events before {first} were purged)"
            )));
        }
        self.position = Position::At(msgid);
        Ok(())
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        Ok(())
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        self.position()?;
        let (bus, position) = (&mut self.bus, &mut self.position);
        poll_until(self.timeout, self.poll_interval, || {
            let Position::At(from) = *position else {
                return Ok(0);
            };
            let outcome = bus.read_into(from, None, batch)?;
            if let Some(last) = outcome.last_msgid {
                *position = Position::At(last + 1);
            }
            Ok(outcome.events_added)
        })
    }

    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        self.position()?;
        let (bus, position) = (&mut self.bus, &mut self.position);
        let status = poll_until(self.timeout, self.poll_interval, || loop {
            let Position::At(from) = *position else {
                return Ok(0);
            };
            let outcome = bus.read_into(from, Some(category), found)?;
            if let Some(last) = outcome.last_msgid {
                *position = Position::At(last + 1);
            }
            // Rows of other categories were skipped: look again at once, there may be more.
            if outcome.events_added > 0 || outcome.rows_read == 0 {
                return Ok(outcome.events_added);
            }
        })?;
        Ok(status == PollStatus::Ready)
    }
}
