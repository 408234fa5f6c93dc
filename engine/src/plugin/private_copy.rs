//! A plugin library is loaded from a sealed private copy, never from its file.
//!
//! `dlopen` maps a library's file: a later in-place write to that file (`cp new.so old.so`, the
//! way a plugin is upgraded) changes or truncates the running code's pages, and the daemon dies
//! of SIGBUS or worse. So the host copies the library into an anonymous in-memory file
//! (`memfd_create`), seals it against any change, and loads `/proc/self/fd/N`: whatever happens
//! to the file on disk afterwards, the loaded code is the code that was read. [`DiskIdentity`]
//! tells when the file on disk is no longer the one loaded (a restart picks the new one up).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The sealed copy of a library. Its memory file is never closed: the library is never
/// unloaded, and `dlopen` recognises a loaded library by its path, so a descriptor number
/// freed and reused by another library's copy would be taken for the first library.
pub(super) struct PrivateCopy {
    load_path: PathBuf,
}

impl PrivateCopy {
    /// Copies `library` (the open file) into a sealed memory file named after `name`, in the
    /// kernel (`copy_file_range`): no copy of the library passes through the process's memory.
    pub(super) fn new(name: &str, library: &mut File) -> std::io::Result<PrivateCopy> {
        let c_name = std::ffi::CString::new(format!("buslink-plugin:{name}"))
            .map_err(std::io::Error::other)?;
        // SAFETY: a valid NUL-terminated name and flags; the result is checked.
        let fd = unsafe {
            libc::memfd_create(c_name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        std::io::copy(library, &mut file)?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on an open descriptor with a valid command and argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let load_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if !load_path.exists() {
            return Err(std::io::Error::other("/proc/self/fd is not available"));
        }
        // Open for the life of the process (see the type's documentation).
        let _ = file.into_raw_fd();
        Ok(PrivateCopy { load_path })
    }

    /// The path to hand to `dlopen`.
    pub(super) fn load_path(&self) -> &Path {
        &self.load_path
    }
}

/// What identifies a file's contents on disk without reading it: device, inode, size, change
/// time. An in-place write, a truncation or a replacement (`mv`, a package upgrade) changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
    ctime: (i64, i64),
}

impl DiskIdentity {
    /// The identity of the file at `path` now (`None` when it cannot be read: deleted).
    pub fn of(path: &Path) -> Option<DiskIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        Some(DiskIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// Watches a loaded library's file and says once in the log when it is no longer the file that
/// was loaded (checked at most every 2 s).
#[derive(Clone, Debug)]
pub struct LibraryWatch {
    path: PathBuf,
    loaded: Option<DiskIdentity>,
    checked: Instant,
    warned: bool,
    /// A plugin executable's, not a library's.
    executable: bool,
}

impl LibraryWatch {
    /// How often the file is looked at.
    const PERIOD: Duration = Duration::from_secs(2);

    /// A watch of `path`, whose identity when it was read is `loaded`.
    pub fn new(path: &Path, loaded: Option<DiskIdentity>) -> LibraryWatch {
        LibraryWatch {
            path: path.to_path_buf(),
            loaded,
            checked: Instant::now(),
            warned: false,
            executable: false,
        }
    }

    /// A watch of a plugin executable at `path` (said so in the warning).
    pub fn executable(path: &Path, loaded: Option<DiskIdentity>) -> LibraryWatch {
        LibraryWatch {
            executable: true,
            ..LibraryWatch::new(path, loaded)
        }
    }

    /// Looks at the file if the period passed; `true` when it changed since it was loaded.
    pub fn check(&mut self) -> bool {
        if self.warned || self.checked.elapsed() < Self::PERIOD {
            return self.warned;
        }
        self.checked = Instant::now();
        if DiskIdentity::of(&self.path) != self.loaded && self.executable {
            tracing::warn!(
                "plugin executable {}: the file changed on disk since the consumer started \
                 (written over, replaced or deleted); the running child goes on; a reload \
                 (buslink ctl reload) restarts the consumer on the new file",
                self.path.display()
            );
            self.warned = true;
        } else if DiskIdentity::of(&self.path) != self.loaded {
            tracing::warn!(
                "plugin library {}: the file changed on disk since it was loaded (written \
                 over, replaced or deleted); buslink goes on with the code it loaded, from its \
                 private copy; restart it to load the new file",
                self.path.display()
            );
            self.warned = true;
        }
        self.warned
    }
}
