//! Files in the state directory, opened safely: buslink often runs as root beside directories
//! that others may write to, so a symbolic link planted there (`NAME.lock`, `NAME.offsets.tmp`,
//! the dead-letter file, ...) must never make it truncate or write another file.
//!
//! Every state file is opened with `O_NOFOLLOW` (a link is an error naming the file) and
//! created with mode 0600 whatever the umask; a temporary file is made anew with `O_EXCL`
//! after removing whatever had its name (removing a link removes the link, not its target).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub use buslink_config::modes::{parse_mode, OUTPUT_MODE};

/// The mode of every file buslink creates in its state directory.
pub const MODE: u32 = 0o600;

/// The mode of every directory buslink creates (state directory, output and error-queue
/// directories): never writable by group or others, whatever the umask (the umask can only
/// take more away).
pub const DIR_MODE: u32 = 0o750;

/// Creates `path` and its missing parents with [`DIR_MODE`] (directories already there are
/// left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Options for a state file: never through a symbolic link, created 0600.
pub fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(MODE).custom_flags(libc::O_NOFOLLOW);
    options
}

/// Opens `path` with `options`, naming a symbolic link as such.
pub fn open(options: &OpenOptions, path: &Path) -> io::Result<File> {
    options.open(path).map_err(|error| {
        if error.raw_os_error() == Some(libc::ELOOP) {
            io::Error::other(format!(
                "{} is a symbolic link: buslink does not follow links in its state directory; \
                 remove it",
                path.display()
            ))
        } else {
            error
        }
    })
}

/// Creates the temporary file `path` anew (whatever had that name is removed first), 0600,
/// for writing.
pub fn create_temp(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = options();
    options.write(true).create_new(true);
    open(&options, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_and_temp_files_made_anew_without_touching_a_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").unwrap();
        let link = dir.path().join("demo.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut writable = options();
        writable.write(true).create(true).truncate(true);
        let error = open(&writable, &link).unwrap_err().to_string();
        assert!(error.contains("is a symbolic link"), "{error}");
        let temp = dir.path().join("demo.offsets.tmp");
        std::os::unix::fs::symlink(&target, &temp).unwrap();
        use std::io::Write;
        create_temp(&temp).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert_eq!(std::fs::read(&temp).unwrap(), b"new");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&temp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
