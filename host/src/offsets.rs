//! The offset cache: one JSON file per consumer in the state dir, written atomically.
//!
//! **Architecture invariant:** only this module writes the cache, and only the pipeline's
//! dispatcher calls [`OffsetCache::commit`], after every matching handler accepted the events.
//!
//! A write goes to `NAME.offsets.json.tmp`, is fsynced, renamed over `NAME.offsets.json`, and
//! the directory is fsynced: a crash at any instant leaves the old file or the new one.

use buslink_plugin_api::Offset;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The version of the file format this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// A problem with the offset cache; the daemon stops rather than guess.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("offset cache {}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "offset cache {} is corrupt ({message}); refusing to start from scratch. Fix or remove \
         the file, or set an offset with `buslink offsets set`",
        .path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("offset cache {}: written by a newer buslink (format {found}, this one reads {FORMAT_VERSION})", .path.display())]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("offset cache {} belongs to consumer '{found}', not '{expected}'", .path.display())]
    WrongConsumer {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("offset cache {}: cannot write: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the cache file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetRecord {
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    /// The consumer's name (the cache is keyed by it).
    pub consumer: String,
    /// The offset of the last event every matching handler accepted; a restart resumes
    /// strictly after it. Absent after `buslink offsets set`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<Offset>,
    /// The offset of the next event, when the bus defines it (Hermes' `nextoffset`). Without a
    /// `last_offset`, a restart starts at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<Offset>,
    /// How many events were handled since the cache was created.
    pub events_handled: u64,
    /// Hermes mode: where the initsync sequence that was replayed starts and stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initstartoffset: Option<Offset>,
    /// Hermes mode: see `initstartoffset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initstopoffset: Option<Offset>,
    /// Hermes mode: whether the whole initsync sequence was handled (base events follow).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initsync_done: bool,
    /// When this record was written.
    pub updated_at: DateTime<Utc>,
}

/// Where a restart begins.
#[derive(Clone, Debug, PartialEq)]
pub enum ResumePoint {
    /// Strictly after this offset (the last event handled).
    After(Offset),
    /// At this offset (set by an operator).
    At(Offset),
}

/// The cache file of one consumer.
#[derive(Clone, Debug)]
pub struct OffsetCache {
    consumer: String,
    path: PathBuf,
    temp_path: PathBuf,
    dir: PathBuf,
}

impl OffsetCache {
    /// The cache of consumer `name` in `state_dir`.
    pub fn new(state_dir: &Path, name: &str) -> Self {
        let path = state_dir.join(format!("{name}.offsets.json"));
        let temp_path = state_dir.join(format!("{name}.offsets.json.tmp"));
        OffsetCache {
            consumer: name.to_owned(),
            path,
            temp_path,
            dir: state_dir.to_path_buf(),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the committed record; `None` when the consumer never committed.
    ///
    /// A leftover temp file (a crash between write and rename) is ignored: the rename never
    /// happened, so the main file is the last complete commit.
    pub fn load(&self) -> Result<Option<OffsetRecord>, CacheError> {
        if self.temp_path.exists() {
            tracing::warn!(
                "ignoring {}: left by an interrupted commit; {} holds the last complete one",
                self.temp_path.display(),
                self.path.display()
            );
        }
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(CacheError::Corrupt {
                    path: self.path.clone(),
                    message: "not UTF-8 text".into(),
                })
            }
            Err(source) => {
                return Err(CacheError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| CacheError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        };
        let version: VersionOnly = serde_json::from_str(&text).map_err(corrupt)?;
        if version.version > FORMAT_VERSION {
            return Err(CacheError::NewerFormat {
                path: self.path.clone(),
                found: version.version,
            });
        }
        let record: OffsetRecord = serde_json::from_str(&text).map_err(corrupt)?;
        if record.consumer != self.consumer {
            return Err(CacheError::WrongConsumer {
                path: self.path.clone(),
                found: record.consumer,
                expected: self.consumer.clone(),
            });
        }
        Ok(Some(record))
    }

    /// Writes `record` durably and atomically.
    pub fn commit(&self, record: &OffsetRecord) -> Result<(), CacheError> {
        let write_error = |source| CacheError::Write {
            path: self.path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(write_error)?;
        let mut text = serde_json::to_vec_pretty(record).map_err(|e| CacheError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.temp_path)
            .map_err(write_error)?;
        file.write_all(&text).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        drop(file);
        fs::rename(&self.temp_path, &self.path).map_err(write_error)?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_error)?;
        Ok(())
    }

    /// Where a consumer with this record resumes.
    pub fn resume_point(record: &OffsetRecord) -> Option<ResumePoint> {
        match (&record.last_offset, &record.next_offset) {
            (Some(last), _) => Some(ResumePoint::After(last.clone())),
            (None, Some(next)) => Some(ResumePoint::At(next.clone())),
            (None, None) => None,
        }
    }

    /// Removes the cache: the next start uses the configured `start`.
    pub fn remove(&self) -> Result<bool, CacheError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(CacheError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// A record for this consumer, stamped now.
    pub fn record(
        &self,
        last_offset: Option<Offset>,
        next_offset: Option<Offset>,
        events_handled: u64,
    ) -> OffsetRecord {
        OffsetRecord {
            version: FORMAT_VERSION,
            consumer: self.consumer.clone(),
            last_offset,
            next_offset,
            events_handled,
            initstartoffset: None,
            initstopoffset: None,
            initsync_done: false,
            updated_at: Utc::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OffsetCache::new(&dir.path().join("state"), "demo");
        assert_eq!(cache.load().unwrap(), None);
        let record = cache.record(Some(Offset::Int(163)), Some(Offset::Int(164)), 163);
        cache.commit(&record).unwrap();
        assert_eq!(cache.load().unwrap(), Some(record));
        let text = fs::read_to_string(cache.path()).unwrap();
        assert!(
            text.contains("\"next_offset\": {\n    \"int\": 164\n  }"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OffsetCache::new(dir.path(), "demo");
        fs::write(cache.path(), "{\"version\": 1, \"consumer\": \"de").unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Corrupt { .. })));
        fs::write(cache.path(), "{\"version\": 9}").unwrap();
        assert!(matches!(
            cache.load(),
            Err(CacheError::NewerFormat { found: 9, .. })
        ));
        let other = OffsetCache::new(dir.path(), "other");
        other
            .commit(&other.record(Some(Offset::Int(1)), None, 1))
            .unwrap();
        fs::rename(other.path(), cache.path()).unwrap();
        assert!(matches!(
            cache.load(),
            Err(CacheError::WrongConsumer { .. })
        ));
    }
}
