//! One process per consumer: `STATE_DIR/NAME.lock`, locked (flock) by `buslink run` for its
//! whole life, and by the `offsets` commands that change the cache.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The consumer is in use, or its lock file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("consumer '{name}' is in use by another buslink process{} (lock {})", .pid.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default(), .path.display())]
    Held {
        name: String,
        path: PathBuf,
        pid: Option<String>,
    },
    #[error("lock file {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A held consumer lock, released when dropped.
#[derive(Debug)]
pub struct ConsumerLock {
    _file: File,
    path: PathBuf,
}

impl ConsumerLock {
    /// Takes the lock of consumer `name`, without waiting.
    pub fn acquire(state_dir: &Path, name: &str) -> Result<ConsumerLock, LockError> {
        let path = state_dir.join(format!("{name}.lock"));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        crate::state_file::create_dir_all(state_dir).map_err(io)?;
        let mut options = crate::state_file::options();
        options.read(true).write(true).create(true).truncate(false);
        let mut file = crate::state_file::open(&options, &path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = Some(pid.trim().to_owned()).filter(|p| !p.is_empty());
                return Err(LockError::Held {
                    name: name.to_owned(),
                    path,
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(ConsumerLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A watch that tells when the lock file at the path is no longer the one locked (deleted
    /// or replaced by another program: a second daemon could then lock it and consume too).
    pub fn watch(&self) -> LockWatch {
        use std::os::unix::fs::MetadataExt;
        LockWatch {
            path: self.path.clone(),
            identity: self._file.metadata().ok().map(|m| (m.dev(), m.ino())),
            checked: std::time::Instant::now(),
        }
    }
}

/// See [`ConsumerLock::watch`]; looked at most every 2 s.
#[derive(Clone, Debug)]
pub struct LockWatch {
    path: PathBuf,
    identity: Option<(u64, u64)>,
    checked: std::time::Instant,
}

impl LockWatch {
    /// `Err` naming the file when it is no longer the locked one.
    pub fn check(&mut self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        if self.checked.elapsed() < std::time::Duration::from_secs(2) {
            return Ok(());
        }
        self.checked = std::time::Instant::now();
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if now.is_some() && now == self.identity {
            return Ok(());
        }
        Err(format!(
            "lock file {} was deleted or replaced by another program while this daemon ran: \
             another buslink could now take the consumer and commit beside it; stopping (what \
             was handled is committed)",
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = ConsumerLock::acquire(dir.path(), "demo").unwrap();
        let second = ConsumerLock::acquire(dir.path(), "demo").unwrap_err();
        assert!(
            second
                .to_string()
                .contains("in use by another buslink process"),
            "{second}"
        );
        assert!(
            second.to_string().contains(&std::process::id().to_string()),
            "{second}"
        );
        drop(first);
        ConsumerLock::acquire(dir.path(), "demo").unwrap();
    }
}
