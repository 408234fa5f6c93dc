//! Where things are: the workspace, the built artefacts, the fixtures, and per-test directories.

use std::path::{Path, PathBuf};

/// The workspace root (the directory of the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A file under `tests/fixtures/` (data captured from the real systems, see the README there),
/// e.g. `fixture("hermes/bus.sqlite")`. Panics naming the path when the file is missing, so a
/// test never fails later with a puzzling count.
pub fn fixture(relative: &str) -> PathBuf {
    let path = workspace_root().join("tests/fixtures").join(relative);
    assert!(
        path.is_file(),
        "fixture {} is missing (tests/fixtures/ is part of the repository)",
        path.display()
    );
    path
}

/// The directory the workspace's binaries and cdylibs were built into (`target/debug` for
/// `cargo test`): the test executable lives in its `deps/` subdirectory.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The `buslink` binary built from this workspace.
pub fn buslink_bin() -> PathBuf {
    let path = build_dir().join("buslink");
    assert!(
        path.is_file(),
        "{} does not exist: build the workspace first (`cargo build --workspace`), as the \
         README's test command does",
        path.display()
    );
    path
}

/// A plugin library built from this workspace (`libbuslink_sqlite.so` for `sqlite`).
pub fn plugin_lib(name: &str) -> PathBuf {
    let path = build_dir().join(format!("libbuslink_{name}.so"));
    assert!(
        path.is_file(),
        "{} does not exist: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A fresh temporary directory for one test, removed when dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A new empty directory whose name starts with `name`.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("buslink-{name}-"))
            .tempdir()
            .expect("a temporary directory can be created");
        TestDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the directory.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Writes a file (creating parent directories) and returns its path.
    pub fn write(&self, relative: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent directory can be created");
        }
        std::fs::write(&path, contents).expect("test file can be written");
        path
    }

    /// Reads a file, or an empty string when it does not exist.
    pub fn read(&self, relative: impl AsRef<Path>) -> String {
        std::fs::read_to_string(self.join(relative)).unwrap_or_default()
    }
}
