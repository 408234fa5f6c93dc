//! The `SqliteConsumer` class.

use crate::bus::BusFile;
use buslink_plugin_api::{
    log, poll_until, Consumer, ConsumerClass, Context, EventBatch, Offset, PluginError,
    PluginResult, PollStatus,
};
use chrono::{DateTime, Utc};
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
    /// A missing bus file (or one without the `hermesmessages` table) is waited for quietly
    /// instead of being a connection error (retried with warnings; `--once` fails).
    #[serde(default)]
    pub wait_for_bus: bool,
}

fn default_poll_interval_ms() -> u64 {
    50
}

/// Where the next poll reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// No positioning call yet.
    Unset,
    /// At msgid `n`: the next event is the first row with msgid >= n. `contiguous`: the next
    /// event must be `n` itself (after a row read or a seek to a msgid), so a higher first
    /// msgid is a gap; not after `seek_to_beginning`.
    At { next: i64, contiguous: bool },
}

/// Consumes a Hermes sqlite bus.
pub struct SqliteConsumer {
    bus: BusFile,
    poll_interval: Duration,
    timeout: Option<Duration>,
    position: Position,
    wait_for_bus: bool,
    /// Why the bus cannot be read yet, while `wait_for_bus` waits for it (no file, no table):
    /// shown as the consumer held up; `None` once a read found it.
    missing: Option<String>,
    /// The bus file's `data_version` when the last event read was last checked against it.
    seen_version: Option<i64>,
    /// The last row read (msgid, timestamp), or the host's last handled event: checked against
    /// the bus when it is (re)opened, so another bus under the same msgids is found.
    last: Option<(i64, DateTime<Utc>)>,
    /// The bus file was replaced or not yet checked: check `last` before reading.
    check_last: bool,
    /// Rows delivered as bytes (their `data` is not UTF-8 text).
    undecodable: u64,
    /// Gaps reported.
    gaps: u64,
    /// `run --once`: a read that finds nothing answers `Idle` at once.
    stop_when_drained: bool,
}

impl ConsumerClass for SqliteConsumer {
    const NAME: &'static str = "SqliteConsumer";
    const DESCRIPTION: &'static str =
        "Hermes sqlite bus (the hermesmessages table), read-only, streamed in bounded memory";
    const SETTINGS_DOC: &'static str = "\
- `uri` (string, required): path of the bus database file written by the Hermes server's \
sqlite bus producer; relative to the config file. The file and its table may not exist yet: \
the consumer waits for them.
- `poll_interval_ms` (integer, default 50): how often to look for new rows while waiting.
- `wait_for_bus` (boolean, default false): a bus file that does not exist (or has no \
`hermesmessages` table) is waited for without an error: the consumer shows waiting for the bus \
meanwhile, and `run --once` ends saying it cannot tell (never drained). By default it is a connection error naming the \
resolved path: retried with a warning each time by the daemon, and a failed `run --once`.";

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
            wait_for_bus: settings.wait_for_bus,
            missing: None,
            seen_version: None,
            last: None,
            check_last: false,
            undecodable: 0,
            gaps: 0,
            stop_when_drained: false,
        })
    }
}

impl SqliteConsumer {
    fn position(&self) -> PluginResult<(i64, bool)> {
        match self.position {
            Position::At { next, contiguous } => Ok((next, contiguous)),
            Position::Unset => Err(PluginError::internal(
                "poll called before a seek: the host must position the consumer first",
            )),
        }
    }

    /// The bus is missing (no file, or no table): an error naming the path unless
    /// `wait_for_bus` (then the reason is kept for [`held_up`](Consumer::held_up)).
    fn missing_bus(&mut self) -> PluginResult<()> {
        let path = self.bus.path().display();
        if self.wait_for_bus {
            self.missing = Some(if self.bus.exists() {
                format!("bus database {path} has no hermesmessages table yet (wait_for_bus = true)")
            } else {
                format!("bus database {path} does not exist yet (wait_for_bus = true)")
            });
            return Ok(());
        }
        Err(PluginError::connect(if self.bus.exists() {
            format!(
                "bus database {path} has no hermesmessages table (not a Hermes bus, or no \
                 event written yet; set wait_for_bus = true to wait for it)"
            )
        } else {
            format!(
                "bus database {path} does not exist (check `uri`; relative paths are relative \
                 to the config file; set wait_for_bus = true to wait for it)"
            )
        }))
    }

    /// Before reading: a bus file replaced under the consumer is re-opened and the last event
    /// read checked against it.
    fn check_bus(&mut self) -> PluginResult<()> {
        if self.bus.replaced() {
            log::warn(format!(
                "bus database {}: the file was replaced (or deleted and re-created) while it was \
                 read; re-opened, checking the position against it",
                self.bus.path().display()
            ));
            self.check_last = true;
        }
        // A bus overwritten in place (same file, other contents: `cp other.sqlite bus.sqlite`)
        // is found by looking at the last event read again whenever the file changed since the
        // last look (sqlite's `data_version`: an append changes it too), before new rows are
        // read: never a read into another bus's events.
        let version = self.bus.data_version()?;
        if version != self.seen_version {
            self.seen_version = version;
            self.check_last = true;
        }
        if !self.check_last {
            return Ok(());
        }
        let Some(bounds) = self.bus.bounds()? else {
            // Not there (yet): checked when it is.
            return self.missing_bus();
        };
        self.check_last = false;
        let Some((msgid, timestamp)) = self.last else {
            return Ok(());
        };
        let path = self.bus.path().display().to_string();
        if msgid > bounds.last_allocated {
            return Err(PluginError::data(format!(
                "offset {msgid}, the last event handled, is beyond the end of bus database \
                 {path} (last offset {}): this is another bus than the one consumed (replaced, \
                 restored or re-created); reading it from offset {} would skip its events. Start \
                 it over with `buslink offsets reset` (or set an offset)",
                bounds.last_allocated,
                msgid + 1
            )));
        }
        match self.bus.timestamp_of(msgid)? {
            Some(Ok(found)) if found != timestamp => Err(PluginError::data(format!(
                "bus database {path} holds another event at offset {msgid} (timestamp {}) than \
                 the one handled there (timestamp {}): the bus was replaced, restored or \
                 re-created under the same offsets. Start it over with `buslink offsets reset` \
                 (or set an offset)",
                found.to_rfc3339(),
                timestamp.to_rfc3339()
            ))),
            // Purged since, or unreadable: nothing to compare; gaps are still found.
            _ => Ok(()),
        }
    }

    /// One read into `batch` at the position; moves the position past what was read. Returns
    /// how many events and how many gaps it added.
    fn read(
        &mut self,
        category: Option<&str>,
        batch: &mut EventBatch,
    ) -> PluginResult<(usize, usize)> {
        self.check_bus()?;
        let (from, contiguous) = self.position()?;
        let outcome = self.bus.read_into(from, contiguous, category, batch)?;
        if outcome.bus_missing {
            self.missing_bus()?;
        } else {
            self.missing = None;
        }
        if let (Some(msgid), Some(timestamp)) = (outcome.last_msgid, outcome.last_timestamp) {
            self.position = Position::At {
                next: msgid + 1,
                contiguous: true,
            };
            self.last = Some((msgid, timestamp));
        }
        if let Some(next) = outcome.skipped_to {
            self.position = Position::At {
                next,
                contiguous: true,
            };
        }
        self.undecodable += outcome.undecodable;
        self.gaps += outcome.gaps as u64;
        Ok((outcome.events_added, outcome.gaps))
    }
}

impl Consumer for SqliteConsumer {
    fn open(&mut self) -> PluginResult<()> {
        // Checks the file can be read; a missing one is an error unless waiting is asked for.
        match self.bus.bounds()? {
            Some(_) => Ok(()),
            None => self.missing_bus(),
        }
    }

    fn close(&mut self) -> PluginResult<()> {
        self.bus.close();
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.position = Position::At {
            next: i64::MIN,
            contiguous: false,
        };
        Ok(())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.position = match self.bus.bounds()? {
            Some(bounds) => Position::At {
                next: bounds.last_allocated + 1,
                contiguous: true,
            },
            None => Position::At {
                next: i64::MIN,
                contiguous: false,
            },
        };
        Ok(())
    }

    /// Valid for any msgid up to the last allocated + 1 (the next event). One before the
    /// oldest row left is accepted too: the rows in between were purged, which the first read
    /// reports as a gap (the host's `on_gap` decides), the same way as when they are purged
    /// while the consumer runs.
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let Offset::Int(msgid) = *offset else {
            return Err(PluginError::offset_not_found(format!(
                "sqlite bus offsets are integers (msgid), not {} offsets like {offset}",
                offset.type_name()
            )));
        };
        let path = self.bus.path().display().to_string();
        let Some(bounds) = self.bus.bounds()? else {
            self.missing_bus()?;
            // Waiting for the bus: the position is checked against it when it comes.
            self.position = Position::At {
                next: msgid,
                contiguous: true,
            };
            return Ok(());
        };
        if msgid > bounds.last_allocated + 1 {
            return Err(PluginError::offset_not_found(format!(
                "offset {msgid} is beyond the end of bus database {path} (last offset {}; the \
                 next event will be {})",
                bounds.last_allocated,
                bounds.last_allocated + 1
            )));
        }
        self.position = Position::At {
            next: msgid,
            contiguous: true,
        };
        Ok(())
    }

    fn check_position(&mut self, last: &Offset, timestamp: DateTime<Utc>) -> PluginResult<()> {
        if let Offset::Int(msgid) = *last {
            self.last = Some((msgid, timestamp));
            self.check_last = true;
            if self.bus.exists() {
                self.check_bus()?;
            }
        }
        Ok(())
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        self.bus.set_patience(timeout);
        Ok(())
    }

    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.stop_when_drained = stop;
        Ok(())
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        self.position()?;
        // Draining: one read tells whether anything is left (the snapshot holds every row
        // committed so far), so nothing is gained by waiting.
        let (timeout, interval) = match self.stop_when_drained {
            true => (Some(Duration::ZERO), self.poll_interval),
            false => (self.timeout, self.poll_interval),
        };
        let status = poll_until(timeout, interval, || {
            // A gap alone is news too: the host decides about it.
            self.read(None, batch).map(|(events, gaps)| events + gaps)
        })?;
        match &self.missing {
            // No bus is no answer that it is drained: `run --once` stops on "cannot tell"
            // (waiting for the bus was asked for), and the log says why.
            Some(why) if self.stop_when_drained => {
                log::info(format!("{why}: nothing to read now"));
                Ok(PollStatus::Idle)
            }
            _ => Ok(status),
        }
    }

    /// While `wait_for_bus` waits for a bus that is not there yet (no file, no table).
    fn held_up(&mut self) -> Option<String> {
        self.missing.clone()
    }

    /// The msgids allocated after the position (rows purged meanwhile still counted: an
    /// upper bound, exact on a bus whose rows are not purged ahead of the consumer).
    fn lag(&mut self) -> Option<u64> {
        let Position::At { next, .. } = self.position else {
            return None;
        };
        let bounds = self.bus.bounds().ok()??;
        let next = next.max(bounds.first.unwrap_or(bounds.last_allocated + 1));
        u64::try_from(bounds.last_allocated + 1 - next).ok()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("gaps".to_owned(), self.gaps),
            ("undecodable_bodies".to_owned(), self.undecodable),
        ]
    }

    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        self.position()?;
        let (timeout, interval) = (self.timeout, self.poll_interval);
        let status = poll_until(timeout, interval, || loop {
            let before = self.position;
            let (added, _) = self.read(Some(category), found)?;
            // Rows of other categories were skipped: look again at once, there may be more.
            if added > 0 || self.position == before {
                return Ok(added);
            }
        })?;
        Ok(status == PollStatus::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buslink_plugin_api::{ErrorKind, OffsetRef};
    use proptest::prelude::*;
    use rusqlite::types::Value;

    /// Any value SQLite can hold in a column.
    fn sql_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            (1_600_000_000.0..1_900_000_000.0_f64).prop_map(Value::Real),
            ".{0,40}".prop_map(Value::Text),
            Just(Value::Text("{\"evcategory\": \"base\"}".into())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Rows holding anything in `timestamp` and `data` never wedge the consumer: each
        /// poll returns; rows are delivered in msgid order (a `data` that is not text as
        /// bytes) until one whose metadata cannot be read, which is a `data` error naming its
        /// msgid, the rows before it delivered.
        #[test]
        fn rows_with_anything_in_them_are_delivered_or_named_never_wedged(
            rows in proptest::collection::vec((sql_value(), sql_value()), 1..12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bus.sqlite");
            let connection = rusqlite::Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE hermesmessages (msgid INTEGER PRIMARY KEY AUTOINCREMENT, \
                     timestamp REAL, data TEXT)",
                )
                .unwrap();
            for (timestamp, data) in &rows {
                connection
                    .execute(
                        "INSERT INTO hermesmessages (timestamp, data) VALUES (?1, ?2)",
                        rusqlite::params![timestamp, data],
                    )
                    .unwrap();
            }
            drop(connection);
            let settings = SqliteSettings {
                uri: path.display().to_string(),
                poll_interval_ms: 1,
                wait_for_bus: false,
            };
            let mut consumer =
                SqliteConsumer::new(settings, &Context::new(dir.path())).unwrap();
            consumer.open().unwrap();
            consumer.set_stop_when_drained(true).unwrap();
            consumer.seek_to_beginning().unwrap();
            let mut delivered = Vec::new();
            let mut stopped_at = None;
            // Each poll adds at least one event or ends: a bound on the calls.
            for _ in 0..=rows.len() + 1 {
                let mut batch = EventBatch::new(3, usize::MAX);
                match consumer.poll(&mut batch) {
                    Ok(PollStatus::Ready) => {
                        for event in batch.iter() {
                            let OffsetRef::Int(msgid) = event.offset else {
                                panic!("an integer offset");
                            };
                            delivered.push(msgid);
                        }
                    }
                    Ok(_) => break,
                    Err(error) => {
                        prop_assert_eq!(error.kind(), ErrorKind::Data, "{}", error.message());
                        stopped_at = Some(error.message().to_owned());
                        break;
                    }
                }
            }
            let expected: Vec<i64> = (1..=delivered.len() as i64).collect();
            prop_assert_eq!(&delivered, &expected, "in msgid order, none skipped");
            match stopped_at {
                None => prop_assert_eq!(delivered.len(), rows.len(), "every row delivered"),
                Some(message) => {
                    let next = delivered.len() + 1;
                    prop_assert!(
                        message.contains(&format!("msgid {next}"))
                            || message.contains(&format!("offset {next}")),
                        "the error names the row: {message}"
                    );
                }
            }
        }
    }
}
