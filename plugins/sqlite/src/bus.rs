//! Read access to a Hermes sqlite bus file.

use buslink_plugin_api::hermes::peek_fields;
use buslink_plugin_api::{Body, Event, EventBatch, OffsetRef, PluginError, PluginResult};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read waits for the producer's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The msgids a bus holds now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The smallest msgid still present (`None`: every row was purged, or none written).
    pub first: Option<i64>,
    /// The last msgid ever allocated (0 before the first insert).
    pub last_allocated: i64,
}

/// A read-only connection to a bus file, opened lazily: the file may not exist yet.
pub struct BusFile {
    path: PathBuf,
    connection: Option<Connection>,
}

impl BusFile {
    pub fn new(path: PathBuf) -> Self {
        BusFile {
            path,
            connection: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn close(&mut self) {
        self.connection = None;
    }

    /// The connection, opened if the file exists now; `None` while it does not.
    fn connection(&mut self) -> PluginResult<Option<&Connection>> {
        if self.connection.is_none() {
            if !self.path.exists() {
                return Ok(None);
            }
            let connection = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| {
                PluginError::connect(format!(
                    "cannot open bus database {}: {e}",
                    self.path.display()
                ))
            })?;
            connection
                .busy_timeout(BUSY_TIMEOUT)
                .map_err(|e| self.error(e))?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_ref())
    }

    fn error(&self, error: rusqlite::Error) -> PluginError {
        PluginError::connect(format!(
            "reading bus database {}: {error}",
            self.path.display()
        ))
    }

    /// Whether the `hermesmessages` table exists (`false` also when the file does not).
    fn has_table(connection: &Connection) -> rusqlite::Result<bool> {
        connection
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'hermesmessages'",
            )?
            .query_row([], |_| Ok(()))
            .optional()
            .map(|row| row.is_some())
    }

    /// The msgids on the bus now; `None` when the file or the table does not exist yet.
    pub fn bounds(&mut self) -> PluginResult<Option<Bounds>> {
        let Some(connection) = self.connection()? else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<Option<Bounds>> {
            if !Self::has_table(connection)? {
                return Ok(None);
            }
            let (first, last): (Option<i64>, Option<i64>) = connection
                // Two subqueries: SQLite answers a lone min() or max() from the index, but
                // scans the whole table for both in one select.
                .prepare_cached(
                    "SELECT (SELECT min(msgid) FROM hermesmessages), \
                            (SELECT max(msgid) FROM hermesmessages)",
                )?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            let allocated: Option<i64> = connection
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'hermesmessages'")?
                .query_row([], |row| row.get(0))
                .optional()
                .or_else(|error| match error {
                    // No sqlite_sequence table before the first insert.
                    rusqlite::Error::SqliteFailure(..) => Ok(None),
                    other => Err(other),
                })?;
            Ok(Some(Bounds {
                first,
                last_allocated: allocated.max(last).unwrap_or(0),
            }))
        };
        read().map_err(|e| self.error(e))
    }

    /// Appends the rows from msgid `from` on to `batch` until it is full; returns the msgid of
    /// the last row added, or `None` when there was none (or no bus yet).
    ///
    /// With `category`, only rows whose `evcategory` is that are added, and at most one.
    pub fn read_into(
        &mut self,
        from: i64,
        category: Option<&str>,
        batch: &mut EventBatch,
    ) -> PluginResult<ReadOutcome> {
        let path = self.path.clone();
        let Some(connection) = self.connection()? else {
            return Ok(ReadOutcome::default());
        };
        let mut read = || -> rusqlite::Result<Result<ReadOutcome, (i64, String)>> {
            if !Self::has_table(connection)? {
                return Ok(Ok(ReadOutcome::default()));
            }
            let mut outcome = ReadOutcome::default();
            let limit = if category.is_some() {
                1024
            } else {
                batch.remaining().max(1)
            };
            let mut statement = connection.prepare_cached(
                "SELECT msgid, timestamp, data FROM hermesmessages \
                 WHERE msgid >= ?1 ORDER BY msgid LIMIT ?2",
            )?;
            let mut rows = statement.query((from, limit as i64))?;
            let (mut bad_row, mut bad_msgid) = (None, 0);
            while let Some(row) = rows.next()? {
                let msgid: i64 = row.get(0)?;
                let timestamp: f64 = row.get(1)?;
                // simdutf8: several times faster than the standard check, on every row.
                let data = match row.get_ref(2)? {
                    ValueRef::Text(bytes) => match simdutf8::compat::from_utf8(bytes) {
                        Ok(text) => text,
                        Err(e) => {
                            bad_row = Some(format!("`data` is not UTF-8 text ({e})"));
                            bad_msgid = msgid;
                            break;
                        }
                    },
                    other => {
                        bad_row = Some(format!("`data` is {:?}, not text", other.data_type()));
                        bad_msgid = msgid;
                        break;
                    }
                };
                outcome.rows_read += 1;
                outcome.last_msgid = Some(msgid);
                // Only the category is needed here: stop reading at `evcategory`.
                let mut category_slot = [None];
                peek_fields(data, &["evcategory"], &mut category_slot);
                let [evcategory] = category_slot;
                let evcategory = evcategory.as_deref().unwrap_or("");
                if category.is_some_and(|wanted| wanted != evcategory) {
                    continue;
                }
                batch.push(Event {
                    offset: OffsetRef::Int(msgid),
                    timestamp: timestamp_from_epoch(timestamp),
                    category: evcategory,
                    body: Body::Json(data),
                });
                outcome.events_added += 1;
                if category.is_some() || batch.is_full() {
                    break;
                }
            }
            // A row that cannot be an event: the rows before it are handed over first; the
            // next read starts at it and reports it.
            Ok(match bad_row {
                Some(why) if outcome.rows_read == 0 => Err((bad_msgid, why)),
                _ => Ok(outcome),
            })
        };
        match read() {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err((msgid, why))) => Err(PluginError::protocol(format!(
                "bus database {}: the row of msgid {msgid} is not an event: {why}",
                path.display()
            ))),
            Err(e) => Err(PluginError::connect(format!(
                "reading bus database {}: {e}",
                path.display()
            ))),
        }
    }
}

/// What [`BusFile::read_into`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Rows read from the table (added or skipped).
    pub rows_read: usize,
    /// Events added to the batch.
    pub events_added: usize,
    /// The msgid of the last row read.
    pub last_msgid: Option<i64>,
}

/// Hermes stores times as epoch seconds with microseconds in a REAL.
fn timestamp_from_epoch(seconds: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros((seconds * 1e6).round() as i64).unwrap_or_default()
}
