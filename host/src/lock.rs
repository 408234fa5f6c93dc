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
        std::fs::create_dir_all(state_dir).map_err(io)?;
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
