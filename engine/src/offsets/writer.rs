//! Writing the cache in place: [`CacheWriter`], and the background syncer that makes commits
//! durable while the dispatcher goes on.

use super::slots::{self, DURABLE, HOT, SLOTS};
use super::{CacheError, OffsetCache, OffsetRecord};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub use buslink_config::FsyncMode;

/// How often a commit checks that the file at the cache's path is still the open one.
pub(super) const IDENTITY_CHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// The open cache file, for in-place slot writes.
#[derive(Clone)]
struct SlotFile {
    file: Arc<File>,
    /// Device and inode of the open file: the file at the cache's path must still be it.
    identity: (u64, u64),
    slot_size: usize,
    /// How many bytes the last write to each slot covered (the slot size when unknown): a
    /// shorter record is padded to it, so no text of an older one is left behind.
    written: [usize; SLOTS],
}

impl SlotFile {
    fn new(file: File, slot_size: usize) -> std::io::Result<SlotFile> {
        let meta = file.metadata()?;
        Ok(SlotFile {
            file: Arc::new(file),
            identity: (meta.dev(), meta.ino()),
            slot_size,
            written: [slot_size; SLOTS],
        })
    }

    /// Why the file at `path` is no longer this open file with its slots intact (another
    /// program deleted, replaced or truncated it), or `None` when it still is.
    fn replaced(&self, path: &Path) -> Option<String> {
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("deleted".into()),
            Err(e) => Some(format!("cannot be read ({e})")),
            Ok(meta) if (meta.dev(), meta.ino()) != self.identity => {
                Some("replaced by another file".into())
            }
            Ok(meta) if meta.len() != (self.slot_size * SLOTS) as u64 => Some(format!(
                "truncated or extended to {} bytes (its slots take {})",
                meta.len(),
                self.slot_size * SLOTS
            )),
            Ok(_) => None,
        }
    }

    fn fits(&self, slot: &[u8]) -> bool {
        slot.len() <= self.slot_size
    }

    /// Writes `slot` (which [`fits`](Self::fits)) over slot `index`.
    fn write(&mut self, index: usize, slot: &mut Vec<u8>) -> std::io::Result<()> {
        let used = slot.len();
        if used < self.written[index] {
            slot.resize(self.written[index], b' ');
        }
        self.file
            .write_all_at(slot, (index * self.slot_size) as u64)?;
        self.written[index] = used;
        Ok(())
    }
}

/// Writes one consumer's cache: opened once, then one in-place slot write per commit.
pub struct CacheWriter {
    /// Where the cache lives (its paths).
    cache: OffsetCache,
    mode: FsyncMode,
    /// The open file, once it exists in the version-2 layout.
    file: Option<SlotFile>,
    generation: u64,
    /// Which of [`DURABLE`] the next durable write goes to.
    next_durable: usize,
    syncer: Option<Syncer>,
    /// When the file at the cache's path was last checked to be the open one.
    identity_checked: Option<std::time::Instant>,
    /// Buffers kept between commits.
    json: Vec<u8>,
    slot: Vec<u8>,
}

impl CacheWriter {
    /// Opens the cache of `cache` for commits (the file is made at the first commit).
    pub fn open(cache: &OffsetCache, mode: FsyncMode) -> Result<CacheWriter, CacheError> {
        let mut writer = CacheWriter {
            cache: cache.clone(),
            mode,
            file: None,
            generation: 0,
            next_durable: 0,
            syncer: None,
            identity_checked: None,
            json: Vec::new(),
            slot: Vec::new(),
        };
        let bytes = match fs::read(&writer.cache.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(writer),
            Err(source) => return Err(writer.read_error(source)),
        };
        let (readable, _) = slots::scan(&bytes);
        let Some(newest) = readable.iter().max_by_key(|slot| slot.generation) else {
            // Unreadable (an operator chose to overwrite it): the first commit replaces it.
            return Ok(writer);
        };
        writer.generation = newest.generation;
        // Go on with the durable slot that does not hold the newest durable record.
        let newest_durable = readable
            .iter()
            .filter(|slot| slot.index != HOT)
            .max_by_key(|slot| slot.generation);
        writer.next_durable = match newest_durable {
            Some(slot) if slot.index == DURABLE[0] => 1,
            _ => 0,
        };
        let mut options = crate::state_file::options();
        options.read(true).write(true);
        let file = crate::state_file::open(&options, &writer.cache.path)
            .map_err(|e| writer.write_error(e))?;
        writer.file =
            Some(SlotFile::new(file, bytes.len() / SLOTS).map_err(|e| writer.write_error(e))?);
        Ok(writer)
    }

    fn read_error(&self, source: std::io::Error) -> CacheError {
        CacheError::Read {
            path: self.cache.path.clone(),
            source,
        }
    }

    fn write_error(&self, source: std::io::Error) -> CacheError {
        CacheError::Write {
            path: self.cache.path.clone(),
            source,
        }
    }

    /// Writes `record`: see [`FsyncMode`] for when it is durable.
    pub fn commit(&mut self, record: &OffsetRecord) -> Result<(), CacheError> {
        let mut json = std::mem::take(&mut self.json);
        json.clear();
        super::record_json::write(record, &mut json)
            .map_err(|e| self.write_error(std::io::Error::other(e)))?;
        let generation = self.generation + 1;
        let mut slot = std::mem::take(&mut self.slot);
        slots::encode_into(generation, &json, &mut slot);
        let result = self.write(&json, &mut slot);
        self.json = json;
        self.slot = slot;
        result.map_err(|e| self.write_error(e))?;
        self.generation = generation;
        Ok(())
    }

    fn write(&mut self, json: &[u8], slot: &mut Vec<u8>) -> std::io::Result<()> {
        // Looked at every IDENTITY_CHECK at most (a path lookup per commit is a cost a commit
        // per event notices); the commit that finds it replaced writes the whole record anew.
        let due = self
            .identity_checked
            .is_none_or(|at| at.elapsed() >= IDENTITY_CHECK);
        if due {
            self.identity_checked = Some(std::time::Instant::now());
        }
        if let Some(why) = self
            .file
            .as_ref()
            .filter(|_| due)
            .and_then(|f| f.replaced(&self.cache.path))
        {
            // Never go on writing into a file nobody will read: make a new one, now.
            tracing::warn!(
                "offset cache {} was {why} by another program while the daemon ran; writing \
                 it anew with this commit",
                self.cache.path.display()
            );
            self.file = None;
        }
        let file = match &mut self.file {
            Some(file) if file.fits(slot) => file,
            _ => {
                // No file yet, or a record larger than its slots: a new file, atomically.
                self.stop_syncer().map_err(std::io::Error::other)?;
                return self.create(json, slot);
            }
        };
        match self.mode {
            FsyncMode::Each => {
                let index = DURABLE[self.next_durable];
                self.next_durable ^= 1;
                file.write(index, slot)?;
                file.file.sync_data()
            }
            FsyncMode::Background => {
                // One `pwrite` into the page cache: it survives the daemon's death at once.
                // (Not a memory map: another program truncating the file would kill the
                // daemon with SIGBUS at the next commit.)
                let record_len = slot.len();
                file.write(HOT, slot)?;
                let syncer = match &self.syncer {
                    Some(syncer) => syncer,
                    None => self
                        .syncer
                        .insert(Syncer::start(file.clone(), self.next_durable)?),
                };
                // (Without the padding `write` added for the hot slot.)
                syncer
                    .hand_over(&slot[..record_len])
                    .map_err(std::io::Error::other)
            }
        }
    }

    /// Makes every commit durable and stops the syncer: call it on a clean stop.
    pub fn finish(mut self) -> Result<(), CacheError> {
        self.stop_syncer()
    }

    fn stop_syncer(&mut self) -> Result<(), CacheError> {
        let Some(syncer) = self.syncer.take() else {
            return Ok(());
        };
        let (next_durable, result) = syncer.stop();
        self.next_durable = next_durable;
        result.map_err(|message| self.write_error(std::io::Error::other(message)))
    }

    /// Writes a new file holding `json`, encoded as `slot`, in a durable slot (temp file, fsync, rename, fsync of
    /// the directory), then drops a version-1 cache it replaces.
    fn create(&mut self, json: &[u8], slot: &[u8]) -> std::io::Result<()> {
        crate::state_file::create_dir_all(&self.cache.dir)?;
        let slot_size = slots::slot_size_for(json);
        let mut bytes = vec![b' '; slot_size * SLOTS];
        let at = DURABLE[0] * slot_size;
        bytes[at..at + slot.len()].copy_from_slice(slot);
        for index in 0..SLOTS {
            bytes[(index + 1) * slot_size - 1] = b'\n';
        }
        let mut temp = crate::state_file::create_temp(&self.cache.temp_path)?;
        temp.write_all(&bytes)?;
        temp.sync_all()?;
        drop(temp);
        fs::rename(&self.cache.temp_path, &self.cache.path)?;
        match fs::remove_file(&self.cache.legacy_path) {
            Ok(()) => tracing::info!(
                "offset cache moved to {} (the in-place format); removed {}",
                self.cache.path.display(),
                self.cache.legacy_path.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        File::open(&self.cache.dir).and_then(|dir| dir.sync_all())?;
        let mut options = crate::state_file::options();
        options.read(true).write(true);
        let file = crate::state_file::open(&options, &self.cache.path)?;
        self.file = Some(SlotFile::new(file, slot_size)?);
        self.next_durable = 1;
        Ok(())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        // A stop that skipped `finish` (an error): still make the last commit durable.
        if let Err(error) = self.stop_syncer() {
            tracing::error!("{error}");
        }
    }
}

/// The background half of [`FsyncMode::Background`]: writes the newest commit to the durable
/// slots in turn, each followed by `fdatasync`.
struct Syncer {
    shared: Arc<SyncShared>,
    thread: JoinHandle<usize>,
}

#[derive(Default)]
struct SyncShared {
    state: Mutex<SyncState>,
    wake: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// The newest commit not yet durable, encoded as a slot.
    pending: Option<Vec<u8>>,
    /// Why syncing failed (the daemon stops at its next commit).
    failed: Option<String>,
    /// The syncer waits for work (only then does a commit need to wake it).
    idle: bool,
    /// `fdatasync`s made so far.
    syncs: u64,
    stop: bool,
}

impl Syncer {
    fn start(file: SlotFile, next_durable: usize) -> std::io::Result<Syncer> {
        let shared = Arc::new(SyncShared::default());
        let thread = std::thread::Builder::new()
            .name("offset-sync".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || sync_loop(&shared, file, next_durable)
            })?;
        Ok(Syncer { shared, thread })
    }

    /// Queues a commit (replacing an older one not yet synced: only the newest matters).
    fn hand_over(&self, slot: &[u8]) -> Result<(), String> {
        let mut state = lock(&self.shared.state);
        if let Some(failed) = &state.failed {
            return Err(failed.clone());
        }
        // Into the buffer of the commit it replaces, when there is one (no allocation).
        match &mut state.pending {
            Some(pending) => {
                pending.clear();
                pending.extend_from_slice(slot);
            }
            None => state.pending = Some(slot.to_vec()),
        }
        if state.idle {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Syncs what is pending and ends the thread; gives back the next durable slot.
    fn stop(self) -> (usize, Result<(), String>) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        let next_durable = self.thread.join().unwrap_or(0);
        let failed = lock(&self.shared.state).failed.take();
        (next_durable, failed.map_or(Ok(()), Err))
    }
}

fn lock(state: &Mutex<SyncState>) -> std::sync::MutexGuard<'_, SyncState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The shortest time between two background `fdatasync`s: commits that come meanwhile share the
/// next one (group commit), so a commit per event costs one `pwrite` each and a few syncs a
/// second, not a sync per commit. A power loss loses at most this much more than the last sync.
const GROUP_COMMIT: std::time::Duration = std::time::Duration::from_millis(5);

fn sync_loop(shared: &SyncShared, mut file: SlotFile, mut next_durable: usize) -> usize {
    // When the last sync ended: the next waits until GROUP_COMMIT after it (not on a stop).
    let mut synced_at: Option<std::time::Instant> = None;
    loop {
        let mut slot = {
            let mut state = lock(&shared.state);
            loop {
                let wait = synced_at
                    .map(|at| GROUP_COMMIT.saturating_sub(at.elapsed()))
                    .filter(|wait| !wait.is_zero() && !state.stop);
                if wait.is_none() {
                    if let Some(pending) = state.pending.take() {
                        state.idle = false;
                        break pending;
                    }
                }
                if state.stop && state.pending.is_none() {
                    return next_durable;
                }
                state = match wait {
                    // Work is there, but not due yet: a stop (which notifies) cuts the wait.
                    Some(wait) if state.pending.is_some() => {
                        state.idle = false;
                        shared
                            .wake
                            .wait_timeout(state, wait)
                            .map(|(state, _)| state)
                            .unwrap_or_else(|poisoned| poisoned.into_inner().0)
                    }
                    _ => {
                        state.idle = true;
                        shared
                            .wake
                            .wait(state)
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                    }
                };
            }
        };
        let index = DURABLE[next_durable];
        let written = file
            .write(index, &mut slot)
            .and_then(|()| file.file.sync_data());
        synced_at = Some(std::time::Instant::now());
        lock(&shared.state).syncs += 1;
        if let Err(error) = written {
            lock(&shared.state).failed = Some(format!("background fdatasync: {error}"));
            return next_durable;
        }
        next_durable ^= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buslink_plugin_api::Offset;
    use std::time::{Duration, Instant};

    /// The generation of the newest durable slot in the file.
    fn newest_durable(cache: &OffsetCache) -> Option<u64> {
        let bytes = fs::read(&cache.path).unwrap();
        let (readable, _) = slots::scan(&bytes);
        readable
            .iter()
            .filter(|slot| slot.index != HOT)
            .map(|slot| slot.generation)
            .max()
    }

    #[test]
    fn commits_in_a_burst_share_their_fdatasyncs_and_the_last_is_made_durable_unasked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = OffsetCache::new(&dir.path().join("state"), "demo");
        let mut writer = cache.writer(FsyncMode::Background).unwrap();
        let started = Instant::now();
        let commits = 3000;
        for n in 1..=commits {
            writer
                .commit(&cache.record(Some(Offset::Int(n)), None, n as u64))
                .unwrap();
        }
        // The first commit made the file (generation 1, durable by itself); the last is the
        // hot slot's at once, and a durable slot's within a group-commit window or so, with
        // no further commit and no stop to push it.
        let last = writer.generation;
        let deadline = Instant::now() + Duration::from_secs(10);
        while newest_durable(&cache) != Some(last) {
            assert!(
                Instant::now() < deadline,
                "the last commit never became durable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let elapsed = started.elapsed();
        let syncs = lock(&writer.syncer.as_ref().unwrap().shared.state).syncs;
        // One sync per window at most (plus the first): not one per commit.
        let windows = (elapsed.as_micros() / GROUP_COMMIT.as_micros()) as u64 + 2;
        assert!(
            syncs <= windows,
            "{syncs} fdatasyncs for {commits} commits in {elapsed:?} (at most {windows})"
        );
        writer.finish().unwrap();
        assert_eq!(
            cache.load().unwrap().unwrap().last_offset,
            Some(Offset::Int(commits))
        );
    }
}
