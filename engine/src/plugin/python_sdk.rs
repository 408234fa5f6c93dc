//! The Python side of buslink (`sdk/python/buslink_plugin`), carried in the binary: a Hermes
//! plugin (`plugin = { hermes_plugin = "DIR" }`) runs under it with nothing installed but
//! Python. The files are the repository's, built in; they are written once per version to a
//! private directory (the user's cache, mode 0700) that the interpreter imports them from.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The package's files, as built in: (file name, text).
pub const FILES: [(&str, &str); 4] = [
    (
        "__init__.py",
        include_str!("../../../sdk/python/buslink_plugin/__init__.py"),
    ),
    (
        "protocol.py",
        include_str!("../../../sdk/python/buslink_plugin/protocol.py"),
    ),
    (
        "hermes.py",
        include_str!("../../../sdk/python/buslink_plugin/hermes.py"),
    ),
    (
        "hermes_standins.py",
        include_str!("../../../sdk/python/buslink_plugin/hermes_standins.py"),
    ),
];

/// What `python -I -B -c` runs: the package from the directory in `argv[1]`, the Hermes host's
/// `main` with the rest.
pub const BOOTSTRAP: &str = "import sys; sys.path.insert(0, sys.argv[1]); \
                             from buslink_plugin.hermes import main; sys.exit(main(sys.argv[2:]))";

/// A short fingerprint of the files (FNV-1a), naming their directory: a new build with other
/// files writes them anew beside the old ones.
fn fingerprint() -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in FILES {
        for byte in name.bytes().chain(text.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Where the files go: `$XDG_CACHE_HOME/buslink`, else `$HOME/.cache/buslink`, else the
/// temporary directory's `buslink-UID`.
fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("buslink");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("buslink");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("buslink-{uid}"))
}

/// The directory holding `buslink_plugin/` (for `sys.path`), written if it is not there yet.
/// Refused when the directory could be changed by another user (it holds code buslink runs).
pub fn package_parent() -> std::io::Result<PathBuf> {
    let parent = cache_root().join(format!("python-{}", fingerprint()));
    let package = parent.join("buslink_plugin");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&package)?;
    for dir in [&parent, &package] {
        if let Some(reason) = super::trust::insecure(dir) {
            return Err(std::io::Error::other(format!(
                "the Python side of buslink would run from {}: {reason}",
                dir.display()
            )));
        }
    }
    for (name, text) in FILES {
        write_if_changed(&package.join(name), text)?;
    }
    Ok(parent)
}

/// Writes `text` to `path` (a new file renamed over it) unless the file holds it already.
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|held| held == text.as_bytes()) {
        return Ok(());
    }
    let staged = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&staged)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&staged, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The files built in are the repository's, and all of them.
    #[test]
    fn the_built_in_files_are_the_sdk_s() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/buslink_plugin");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".py"))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = FILES.iter().map(|(name, _)| (*name).to_owned()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in, "add new files of the package to FILES");
        for (name, text) in FILES {
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                text,
                "{name}"
            );
        }
    }
}
