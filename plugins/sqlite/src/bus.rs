//! Read access to a Hermes sqlite bus file.

use buslink_plugin_api::hermes::peek_fields;
use buslink_plugin_api::{log, Body, Event, EventBatch, OffsetRef, PluginError, PluginResult};
use chrono::{DateTime, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read waits for the producer's write lock before giving up, at least: the
/// consumer's timeout when longer (see [`BusFile::set_patience`]). A bus locked longer is a
/// connection error, so the consumer shows waiting for the bus within max(timeout, 5 s), as
/// every plugin does.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Device and inode of the file the connection reads.
    identity: Option<(u64, u64)>,
    /// How long a read waits for a lock: max(the consumer's timeout, [`BUSY_TIMEOUT`]).
    busy_timeout: Duration,
}

/// The device and inode of the file at `path` now.
fn identity_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl BusFile {
    pub fn new(path: PathBuf) -> Self {
        BusFile {
            path,
            connection: None,
            identity: None,
            busy_timeout: BUSY_TIMEOUT,
        }
    }

    /// The consumer's timeout (`None`: none): a read waits max(it, [`BUSY_TIMEOUT`]) for a
    /// lock (from the next connection on).
    pub fn set_patience(&mut self, timeout: Option<Duration>) {
        self.busy_timeout = timeout.map_or(BUSY_TIMEOUT, |t| t.max(BUSY_TIMEOUT));
    }

    /// Whether the file at the path is no longer the one the open connection reads (replaced
    /// by `mv`, deleted and re-created): then the connection is closed, the next read opens the
    /// file now there, and the caller checks its position against it.
    pub fn replaced(&mut self) -> bool {
        if self.connection.is_none() || identity_of(&self.path) == self.identity {
            return false;
        }
        self.close();
        true
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn close(&mut self) {
        self.connection = None;
        self.identity = None;
    }

    /// Whether the bus file exists now.
    pub fn exists(&self) -> bool {
        self.path.exists()
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
                .busy_timeout(self.busy_timeout)
                .map_err(|e| self.error(e))?;
            self.identity = identity_of(&self.path);
            self.connection = Some(connection);
        }
        Ok(self.connection.as_ref())
    }

    fn error(&self, error: rusqlite::Error) -> PluginError {
        read_error(&self.path, &error)
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

    /// sqlite's `PRAGMA data_version` of the open connection: it changes whenever another
    /// process changed the file (an append, a purge, the file overwritten in place); `None`
    /// while the file does not exist.
    pub fn data_version(&mut self) -> PluginResult<Option<i64>> {
        let Some(connection) = self.connection()? else {
            return Ok(None);
        };
        connection
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut statement| statement.query_row([], |row| row.get(0)))
            .map(Some)
            .map_err(|e| self.error(e))
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
            let first: Option<i64> = connection
                .prepare_cached("SELECT min(msgid) FROM hermesmessages")?
                .query_row([], |row| row.get(0))?;
            Ok(Some(Bounds {
                first,
                last_allocated: Self::last_allocated(connection)?.unwrap_or(0),
            }))
        };
        read().map_err(|e| self.error(e))
    }

    /// Appends the rows from msgid `from` on to `batch` until it is full.
    ///
    /// `contiguous`: `from` is the msgid that must come next (after a row read, or a seek to a
    /// msgid), so a first row with a higher msgid, or a hole between two rows, is a **gap**
    /// (rows purged before they were read: msgids are allocated one by one and never reused),
    /// reported in the batch; so is a `from` at or below the last allocated msgid when no row
    /// is left. A row whose `data` is not UTF-8 text is delivered as bytes (counted in
    /// `undecodable`); a row whose `timestamp` or `data` cannot be read at all is a `Data`
    /// error naming its msgid, after the rows before it were delivered.
    ///
    /// With `category`, only rows whose `evcategory` is that are added, and at most one.
    pub fn read_into(
        &mut self,
        from: i64,
        contiguous: bool,
        category: Option<&str>,
        batch: &mut EventBatch,
    ) -> PluginResult<ReadOutcome> {
        let path = self.path.clone();
        let missing = ReadOutcome {
            bus_missing: true,
            ..ReadOutcome::default()
        };
        let Some(connection) = self.connection()? else {
            return Ok(missing);
        };
        let mut read = || -> rusqlite::Result<Result<ReadOutcome, (i64, String)>> {
            // One snapshot for the rows and the last allocated msgid: read apart, rows written
            // in between would count as gone. Ended (rolled back) when the read ends.
            let snapshot = connection.unchecked_transaction()?;
            let connection: &Connection = &snapshot;
            if !Self::has_table(connection)? {
                return Ok(Ok(missing));
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
            let mut expected = contiguous.then_some(from);
            let mut bad_row = None;
            // Whether a gap was reported right before the row in hand.
            let mut gap_before = false;
            while let Some(row) = rows.next()? {
                let msgid: i64 = row.get(0)?;
                gap_before = false;
                if let Some(expected) = expected.filter(|&e| msgid > e) {
                    report_gap(batch, expected, msgid - 1);
                    outcome.gaps += 1;
                    gap_before = true;
                }
                expected = Some(msgid.saturating_add(1));
                let timestamp = match row.get_ref(1)? {
                    ValueRef::Real(seconds) => timestamp_from_epoch(seconds),
                    ValueRef::Integer(seconds) => timestamp_from_epoch(seconds as f64),
                    other => Err(format!("is {:?}", other.data_type())),
                };
                let timestamp = match timestamp {
                    Ok(timestamp) => timestamp,
                    Err(why) => {
                        bad_row = Some((msgid, format!("`timestamp` {why}, not epoch seconds")));
                        break;
                    }
                };
                // simdutf8: several times faster than the standard check, on every row.
                let body = match row.get_ref(2)? {
                    ValueRef::Text(bytes) => match simdutf8::basic::from_utf8(bytes) {
                        Ok(text) => Body::Json(text),
                        Err(_) => Body::Bytes(bytes),
                    },
                    ValueRef::Blob(bytes) => Body::Bytes(bytes),
                    other => {
                        let why = format!("`data` is {:?}, not an event", other.data_type());
                        bad_row = Some((msgid, why));
                        break;
                    }
                };
                outcome.rows_read += 1;
                outcome.last_msgid = Some(msgid);
                outcome.last_timestamp = Some(timestamp);
                // Only the category is needed here: stop reading at `evcategory`.
                let evcategory = match body {
                    Body::Json(text) => {
                        let mut category_slot = [None];
                        peek_fields(text, &["evcategory"], &mut category_slot);
                        let [evcategory] = category_slot;
                        evcategory
                    }
                    Body::Bytes(_) => None,
                };
                let evcategory = evcategory.as_deref().unwrap_or("");
                if category.is_some_and(|wanted| wanted != evcategory) {
                    continue;
                }
                if let Body::Bytes(bytes) = body {
                    outcome.undecodable += 1;
                    log::warn(format!(
                        "bus database {}: the `data` of msgid {msgid} is not UTF-8 text; \
                         delivered as bytes ({} bytes, `body_base64` in event lines)",
                        path.display(),
                        bytes.len()
                    ));
                }
                batch.push(Event {
                    offset: OffsetRef::Int(msgid),
                    timestamp,
                    category: evcategory,
                    body,
                });
                outcome.events_added += 1;
                if category.is_some() || batch.is_full() {
                    break;
                }
            }
            drop(rows);
            // A row that cannot be an event: the rows before it are handed over first; the
            // next read starts at it and reports it.
            if let Some((msgid, why)) = bad_row {
                if outcome.rows_read == 0 && outcome.gaps == 0 {
                    return Ok(Err((msgid, why)));
                }
                if gap_before {
                    // The gap before it is reported: the next read starts at the bad row and
                    // reports it (never the same gap twice).
                    outcome.skipped_to = Some(msgid);
                }
                return Ok(Ok(outcome));
            }
            // Nothing left to read: rows up to the last allocated msgid are gone.
            if let (Some(expected), 0) = (expected, outcome.rows_read) {
                let allocated = Self::last_allocated(connection)?.unwrap_or(0);
                if allocated >= expected {
                    report_gap(batch, expected, allocated);
                    outcome.gaps += 1;
                    outcome.skipped_to = Some(allocated + 1);
                }
            }
            Ok(Ok(outcome))
        };
        match read() {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err((msgid, why))) => Err(PluginError::data(format!(
                "bus database {}: the row of msgid {msgid} cannot be delivered: {why}; the \
                 events before it were delivered, and the run stops at it until the row is fixed",
                path.display()
            ))),
            Err(e) => Err(read_error(&path, &e)),
        }
    }

    /// The last msgid ever allocated (`sqlite_sequence`), or the largest present when the
    /// table was made without AUTOINCREMENT (no `sqlite_sequence`); `None` on an empty bus.
    fn last_allocated(connection: &Connection) -> rusqlite::Result<Option<i64>> {
        let has_sequence = connection
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
            )?
            .query_row([], |_| Ok(()))
            .optional()?
            .is_some();
        let allocated: Option<i64> = if has_sequence {
            connection
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'hermesmessages'")?
                .query_row([], |row| row.get(0))
                .optional()?
        } else {
            None
        };
        let last: Option<i64> = connection
            .prepare_cached("SELECT max(msgid) FROM hermesmessages")?
            .query_row([], |row| row.get(0))?;
        Ok(allocated.max(last))
    }

    /// The timestamp of the row of `msgid`, if it is on the bus (`None`: purged or never
    /// written); an error when the bus has no table.
    pub fn timestamp_of(
        &mut self,
        msgid: i64,
    ) -> PluginResult<Option<Result<DateTime<Utc>, String>>> {
        let Some(connection) = self.connection()? else {
            return Ok(None);
        };
        let read = || -> rusqlite::Result<Option<Result<DateTime<Utc>, String>>> {
            if !Self::has_table(connection)? {
                return Ok(None);
            }
            connection
                .prepare_cached("SELECT timestamp FROM hermesmessages WHERE msgid = ?1")?
                .query_row([msgid], |row| {
                    Ok(match row.get_ref(0)? {
                        ValueRef::Real(seconds) => timestamp_from_epoch(seconds),
                        ValueRef::Integer(seconds) => timestamp_from_epoch(seconds as f64),
                        other => Err(format!("is {:?}", other.data_type())),
                    })
                })
                .optional()
        };
        read().map_err(|e| self.error(e))
    }
}

/// A failed read of the bus at `path`, as a connection error; SQLite's "attempt to write a
/// readonly database" (a reader of a WAL-mode bus must create the `-shm` file) explained.
fn read_error(path: &Path, error: &rusqlite::Error) -> PluginError {
    let text = error.to_string();
    let hint = if text.contains("readonly database") {
        let dir = path
            .parent()
            .map_or_else(|| ".".to_owned(), |d| d.display().to_string());
        format!(
            " (the bus is in WAL mode and its shared-memory file {}-shm is missing: a reader \
             must create it, so the directory {dir} must be writable by buslink, or a writer be \
             connected)",
            path.display()
        )
    } else {
        String::new()
    };
    PluginError::connect(format!(
        "reading bus database {}: {text}{hint}",
        path.display()
    ))
}

/// Reports the msgids `first..=last` missing.
fn report_gap(batch: &mut EventBatch, first: i64, last: i64) {
    let range = if first == last {
        format!("msgid {first}")
    } else {
        format!("msgids {first} to {last}")
    };
    batch.report_gap(&range, Some(last.abs_diff(first) + 1));
}

/// What [`BusFile::read_into`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Rows read from the table (added or skipped).
    pub rows_read: usize,
    /// Events added to the batch.
    pub events_added: usize,
    /// Gaps reported in the batch.
    pub gaps: usize,
    /// Rows delivered as bytes (their `data` is not UTF-8 text).
    pub undecodable: u64,
    /// The msgid of the last row read.
    pub last_msgid: Option<i64>,
    /// Its timestamp.
    pub last_timestamp: Option<DateTime<Utc>>,
    /// No row was left and the gap ran to the last allocated msgid: the next read starts here.
    pub skipped_to: Option<i64>,
    /// The file or its `hermesmessages` table does not exist.
    pub bus_missing: bool,
}

/// Hermes stores times as epoch seconds with microseconds in a REAL; one that is not a
/// finite number of a representable time is an error (never silently 1970).
fn timestamp_from_epoch(seconds: f64) -> Result<DateTime<Utc>, String> {
    let micros = (seconds * 1e6).round();
    if !micros.is_finite() || micros.abs() > i64::MAX as f64 {
        return Err(format!("is {seconds}"));
    }
    DateTime::from_timestamp_micros(micros as i64).ok_or_else(|| format!("is {seconds}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readonly_wal_bus_is_explained_naming_both_paths() {
        let error = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            Some("attempt to write a readonly database".into()),
        );
        let message = read_error(Path::new("/srv/bus/bus.sqlite"), &error).to_string();
        assert!(
            message.contains("/srv/bus/bus.sqlite-shm is missing"),
            "{message}"
        );
        assert!(
            message.contains("the directory /srv/bus must be writable"),
            "{message}"
        );
    }
}
