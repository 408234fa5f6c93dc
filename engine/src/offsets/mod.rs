//! The offset cache: one file per consumer in the state dir, `NAME.offsets`, holding the last
//! committed [`OffsetRecord`] as JSON.
//!
//! **Architecture invariant:** only this module writes the cache, and only the pipeline's
//! dispatcher commits, after every matching handler accepted the events.
//!
//! A commit rewrites one fixed-size slot of the file in place ([`slots`] has the layout):
//! no new file, no rename, at most one `fdatasync`, and a torn write at any instant leaves
//! the previous record readable. [`FsyncMode`] says whether the `fdatasync` runs before the
//! next event or in the background ([`CacheWriter`]). Caches of version 1 (`NAME.offsets.json`,
//! one JSON file replaced by rename) are still read, and replaced at the first commit.

mod record_json;
mod slots;
mod timestamp;
mod writer;

pub use writer::{CacheWriter, FsyncMode};

use crate::append_file::Committed;
use buslink_plugin_api::Offset;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The version of the record (the JSON in each slot) this build writes. 2 added `outputs`;
/// records of version 1 are read as they are.
pub const FORMAT_VERSION: u32 = 2;

/// Reads an offset from the command line: an integer, a float, or (else, or with `as_string`)
/// a string.
pub fn parse_offset(text: &str, as_string: bool) -> Offset {
    if as_string {
        return Offset::String(text.to_owned());
    }
    if let Ok(int) = text.parse::<i64>() {
        Offset::Int(int)
    } else if let Ok(float) = text.parse::<f64>() {
        Offset::Float(float)
    } else {
        Offset::String(text.to_owned())
    }
}

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
    /// The timestamp of the event at `last_offset` (to the microsecond): at the next start the
    /// plugin checks the bus still holds that event there, so a bus replaced under the same
    /// offsets is found instead of read from the old position.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "timestamp::serialize_micros"
    )]
    pub last_timestamp: Option<DateTime<Utc>>,
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
    /// The exactly-once outputs' lengths at this commit, by handler name (`jsonl`): at the
    /// next start each file is cut back to its length, so what was written after the commit
    /// (and is delivered again) is written once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, OutputPosition>,
    /// When this record was written (UTC, to the millisecond).
    #[serde(serialize_with = "timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
}

/// An exactly-once output's committed length: `{"path": "/var/out.jsonl", "length": 5120}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputPosition {
    /// The output file (as configured, resolved against the config's directory).
    pub path: PathBuf,
    /// Its length in bytes when the offset was committed (whole lines).
    pub length: u64,
    /// The file's device and inode: a file rotated since (another inode at the path) is not
    /// cut to a length that was not its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<[u64; 2]>,
}

impl OutputPosition {
    /// The committed length when it is of `path`; a handler whose file changed in the config
    /// since the commit gets `None` (that file is not cut back), with a log line.
    pub fn length_of(&self, path: &Path, handler: &str) -> Option<Committed> {
        // The same file however it is written (relative to another working directory, ...).
        let canonical = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if self.path == path || canonical(&self.path) == canonical(path) {
            return Some(Committed {
                length: self.length,
                identity: self.file_id.map(|[dev, ino]| (dev, ino)),
            });
        }
        tracing::info!(
            "handler '{handler}': the committed output length is of {}, not {}: the file \
             changed in the config, so it is not cut back",
            self.path.display(),
            path.display()
        );
        None
    }
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
    /// Where version 1 kept the cache.
    legacy_path: PathBuf,
    dir: PathBuf,
}

impl OffsetCache {
    /// The cache of consumer `name` in `state_dir`.
    pub fn new(state_dir: &Path, name: &str) -> Self {
        OffsetCache {
            consumer: name.to_owned(),
            path: state_dir.join(format!("{name}.offsets")),
            temp_path: state_dir.join(format!("{name}.offsets.tmp")),
            legacy_path: state_dir.join(format!("{name}.offsets.json")),
            dir: state_dir.to_path_buf(),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the committed record; `None` when the consumer never committed.
    ///
    /// A leftover temp file (a crash while the file was being made) is ignored: the rename
    /// never happened, so the cache file holds the last complete commit.
    pub fn load(&self) -> Result<Option<OffsetRecord>, CacheError> {
        if self.temp_path.exists() {
            tracing::warn!(
                "ignoring {}: a commit not finished (interrupted, or being made by a running \
                 daemon this instant); {} holds the last complete one",
                self.temp_path.display(),
                self.path.display()
            );
        }
        let read_error = |path: &Path, source| CacheError::Read {
            path: path.to_path_buf(),
            source,
        };
        match fs::read(&self.path) {
            Ok(bytes) => self.decode(&bytes).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match fs::read(&self.legacy_path) {
                    Ok(bytes) => self.parse(&self.legacy_path, &bytes).map(Some),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(read_error(&self.legacy_path, source)),
                }
            }
            Err(source) => Err(read_error(&self.path, source)),
        }
    }

    /// Reads the committed record from the bytes of a cache file (format v2: the newest
    /// intact slot). Errors: [`CacheError::Corrupt`] when no slot is intact or its JSON is not
    /// a record, [`CacheError::NewerFormat`], [`CacheError::WrongConsumer`]; never a panic,
    /// whatever the bytes (fuzzed: `fuzz/`).
    pub fn decode(&self, bytes: &[u8]) -> Result<OffsetRecord, CacheError> {
        let slot = slots::newest(bytes).map_err(|message| CacheError::Corrupt {
            path: self.path.clone(),
            message,
        })?;
        self.parse(&self.path, slot.json)
    }

    /// Reads a record's JSON (from `path`, for errors).
    fn parse(&self, path: &Path, json: &[u8]) -> Result<OffsetRecord, CacheError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let corrupt = |e: serde_json::Error| CacheError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let version: VersionOnly = serde_json::from_slice(json).map_err(corrupt)?;
        if version.version > FORMAT_VERSION {
            return Err(CacheError::NewerFormat {
                path: path.to_path_buf(),
                found: version.version,
            });
        }
        let record: OffsetRecord = serde_json::from_slice(json).map_err(corrupt)?;
        if record.consumer != self.consumer {
            return Err(CacheError::WrongConsumer {
                path: path.to_path_buf(),
                found: record.consumer,
                expected: self.consumer.clone(),
            });
        }
        Ok(record)
    }

    /// Opens the cache for a run of commits.
    pub fn writer(&self, mode: FsyncMode) -> Result<CacheWriter, CacheError> {
        CacheWriter::open(self, mode)
    }

    /// Writes `record` durably, once (for operator commands).
    pub fn commit(&self, record: &OffsetRecord) -> Result<(), CacheError> {
        let mut writer = self.writer(FsyncMode::Each)?;
        writer.commit(record)?;
        writer.finish()
    }

    /// Where a consumer with this record resumes.
    pub fn resume_point(record: &OffsetRecord) -> Option<ResumePoint> {
        match (&record.last_offset, &record.next_offset) {
            (Some(last), _) => Some(ResumePoint::After(last.clone())),
            (None, Some(next)) => Some(ResumePoint::At(next.clone())),
            (None, None) => None,
        }
    }

    /// Removes the cache (and a version-1 one): the next start uses the configured `start`.
    pub fn remove(&self) -> Result<bool, CacheError> {
        let mut removed = false;
        for path in [&self.path, &self.legacy_path] {
            match fs::remove_file(path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CacheError::Write {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(removed)
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
            last_timestamp: None,
            next_offset,
            events_handled,
            initstartoffset: None,
            initstopoffset: None,
            initsync_done: false,
            outputs: BTreeMap::new(),
            // What the file keeps: milliseconds.
            updated_at: Utc::now().trunc_subsecs(3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, OffsetCache) {
        let dir = tempfile::tempdir().unwrap();
        let cache = OffsetCache::new(&dir.path().join("state"), "demo");
        (dir, cache)
    }

    #[test]
    fn commit_then_load_round_trips() {
        let (_dir, cache) = state();
        assert_eq!(cache.load().unwrap(), None);
        let record = cache.record(Some(Offset::Int(163)), Some(Offset::Int(164)), 163);
        cache.commit(&record).unwrap();
        assert_eq!(cache.load().unwrap(), Some(record));
        // A person can read it.
        let text = String::from_utf8_lossy(&fs::read(cache.path()).unwrap()).into_owned();
        assert!(text.contains("\"next_offset\":{\"int\":164}"), "{text}");
    }

    #[test]
    fn every_mode_reads_back_the_last_commit_and_resumes_the_generations() {
        for mode in [FsyncMode::Each, FsyncMode::Background] {
            let (_dir, cache) = state();
            let mut writer = cache.writer(mode).unwrap();
            for n in 1..=50 {
                writer
                    .commit(&cache.record(Some(Offset::Int(n)), None, n as u64))
                    .unwrap();
                let loaded = cache.load().unwrap().unwrap();
                // Before `finish` too: what a crash of the daemon would leave.
                assert_eq!(loaded.last_offset, Some(Offset::Int(n)), "{mode:?}");
            }
            writer.finish().unwrap();
            // A second run goes on from the newest generation, whichever slot holds it.
            let mut writer = cache.writer(mode).unwrap();
            writer
                .commit(&cache.record(Some(Offset::Int(51)), None, 51))
                .unwrap();
            writer.finish().unwrap();
            assert_eq!(
                cache.load().unwrap().unwrap().last_offset,
                Some(Offset::Int(51))
            );
            assert_eq!(fs::metadata(cache.path()).unwrap().len(), 3 * 4096);
        }
    }

    #[test]
    fn a_cache_deleted_truncated_or_replaced_under_the_writer_is_written_anew() {
        for mode in [FsyncMode::Each, FsyncMode::Background] {
            let (_dir, cache) = state();
            let mut writer = cache.writer(mode).unwrap();
            let mut commit = |n: i64| {
                // The writer looks at the path at most every IDENTITY_CHECK: let one pass (a
                // bound, not a guess: the check is due after it).
                std::thread::sleep(writer::IDENTITY_CHECK + std::time::Duration::from_millis(2));
                writer
                    .commit(&cache.record(Some(Offset::Int(n)), None, n as u64))
                    .unwrap();
                assert_eq!(
                    cache.load().unwrap().unwrap().last_offset,
                    Some(Offset::Int(n)),
                    "{mode:?}"
                );
            };
            commit(1);
            fs::remove_file(cache.path()).unwrap();
            commit(2);
            fs::File::options()
                .write(true)
                .open(cache.path())
                .unwrap()
                .set_len(0)
                .unwrap();
            commit(3);
            let other = cache.path().with_extension("other");
            fs::write(&other, b"not a cache").unwrap();
            fs::rename(&other, cache.path()).unwrap();
            commit(4);
            commit(5);
            writer.finish().unwrap();
            assert_eq!(
                cache.load().unwrap().unwrap().last_offset,
                Some(Offset::Int(5))
            );
        }
    }

    #[test]
    fn a_record_larger_than_a_slot_grows_the_file() {
        let (_dir, cache) = state();
        let mut writer = cache.writer(FsyncMode::Background).unwrap();
        writer
            .commit(&cache.record(Some(Offset::Int(1)), None, 1))
            .unwrap();
        let big = Offset::String("p=1,".repeat(3000));
        writer
            .commit(&cache.record(Some(big.clone()), None, 2))
            .unwrap();
        writer
            .commit(&cache.record(Some(big.clone()), None, 3))
            .unwrap();
        writer.finish().unwrap();
        let loaded = cache.load().unwrap().unwrap();
        assert_eq!((loaded.last_offset, loaded.events_handled), (Some(big), 3));
        assert!(fs::metadata(cache.path()).unwrap().len() > 3 * 4096);
    }

    #[test]
    fn a_version_1_cache_is_read_and_replaced_at_the_first_commit() {
        let (_dir, cache) = state();
        fs::create_dir_all(&cache.dir).unwrap();
        let old = r#"{"version": 1, "consumer": "demo", "last_offset": {"int": 7},
            "events_handled": 7, "updated_at": "2026-11-22T22:39:17Z"}"#;
        fs::write(&cache.legacy_path, old).unwrap();
        let loaded = cache.load().unwrap().unwrap();
        assert_eq!(loaded.last_offset, Some(Offset::Int(7)));
        cache
            .commit(&cache.record(Some(Offset::Int(8)), None, 8))
            .unwrap();
        assert!(!cache.legacy_path.exists());
        assert_eq!(
            cache.load().unwrap().unwrap().last_offset,
            Some(Offset::Int(8))
        );
        assert!(cache.remove().unwrap());
        assert_eq!(cache.load().unwrap(), None);
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused() {
        let (_dir, cache) = state();
        fs::create_dir_all(&cache.dir).unwrap();
        fs::write(cache.path(), "{\"version\": 1, \"consumer\": \"de").unwrap();
        assert!(matches!(cache.load(), Err(CacheError::Corrupt { .. })));
        fs::write(&cache.legacy_path, "{\"version\": 9}").unwrap();
        fs::remove_file(cache.path()).unwrap();
        assert!(matches!(
            cache.load(),
            Err(CacheError::NewerFormat { found: 9, .. })
        ));
        fs::remove_file(&cache.legacy_path).unwrap();
        let other = OffsetCache::new(&cache.dir, "other");
        other
            .commit(&other.record(Some(Offset::Int(1)), None, 1))
            .unwrap();
        fs::rename(other.path(), cache.path()).unwrap();
        assert!(matches!(
            cache.load(),
            Err(CacheError::WrongConsumer { .. })
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn offset() -> impl Strategy<Value = Offset> {
            prop_oneof![
                any::<i64>().prop_map(Offset::Int),
                any::<f64>()
                    .prop_filter("a finite number", |f| f.is_finite())
                    .prop_map(Offset::Float),
                // Short and long (records past a slot's first size), any characters.
                proptest::collection::vec(any::<char>(), 0..6000)
                    .prop_map(|chars| Offset::String(chars.into_iter().collect())),
                proptest::collection::vec(any::<u8>(), 0..9000).prop_map(Offset::Bytes),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Every offset a plugin can hand over, of every type and size, is read back as
            /// committed, in both fsync modes.
            #[test]
            fn offsets_of_every_type_and_size_round_trip_through_the_cache(
                last in offset(),
                next in proptest::option::of(offset()),
                micros in -62_000_000_000_000_000_i64..250_000_000_000_000_000,
                handled in any::<u64>(),
                each in any::<bool>(),
            ) {
                let (_dir, cache) = state();
                let mode = if each { FsyncMode::Each } else { FsyncMode::Background };
                let mut record = cache.record(Some(last), next, handled);
                record.last_timestamp = DateTime::from_timestamp_micros(micros);
                let mut writer = cache.writer(mode).unwrap();
                writer.commit(&record).unwrap();
                writer.finish().unwrap();
                prop_assert_eq!(cache.load().unwrap(), Some(record));
            }
        }
    }
}
