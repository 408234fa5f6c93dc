//! Nothing buslink creates is more open than configured, whatever the umask it is started with.

use crate::common::*;
use buslink_testkit::http_sink::HttpSink;
use buslink_testkit::process::{buslink, Daemon};
use buslink_testkit::TestDir;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Every path below `root` (directories included, links not followed) with its mode bits.
fn walk(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.is_dir() {
                todo.push(path.clone());
            }
            found.push((path, meta.permissions().mode() & 0o7777));
        }
    }
    found
}

/// Checks every path buslink made below `dir` (everything but the test's own `made_here`):
/// never writable by others, writable by the group only where `group_writable` says, and the
/// modes buslink documents for its kinds of files.
fn assert_modes(dir: &TestDir, made_here: &[&str], group_writable: &[&str]) -> usize {
    let mut checked = 0;
    for (path, mode) in walk(dir.path()) {
        let relative = path.strip_prefix(dir.path()).expect("below the dir");
        let name = relative.to_string_lossy();
        if made_here.iter().any(|own| name.starts_with(own)) {
            continue;
        }
        checked += 1;
        assert_eq!(mode & 0o002, 0, "{name} is writable by others: {mode:o}");
        if !group_writable.contains(&name.as_ref()) {
            assert_eq!(mode & 0o020, 0, "{name} is writable by the group: {mode:o}");
        }
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let expected = if meta.is_dir() {
            Some(0o750)
        } else if name == "out/private.jsonl" {
            // Its handler's `mode`.
            Some(0o600)
        } else if name.starts_with("state/") && !name.ends_with(".sock") {
            Some(0o600)
        } else if name.starts_with("out/") || name.starts_with("view/") {
            Some(0o640)
        } else {
            None
        };
        if let Some(expected) = expected {
            assert_eq!(mode, expected, "{name}: {mode:o}, expected {expected:o}");
        }
    }
    checked
}

/// `buslink man --out-dir` (what the Debian package runs) under `umask 000`: the directory
/// 0755, the pages 0644, never writable by group or others.
#[test]
fn under_umask_000_the_man_pages_and_their_directory_stay_closed() {
    let dir = TestDir::new("umask-000-man");
    let pages = dir.join("man/man1");
    let mut command = buslink(&["man", "--out-dir", &pages.to_string_lossy()]);
    // SAFETY: umask(2) only, in the child between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::umask(0);
            Ok(())
        });
    }
    let out = Daemon::start(command).finish(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
    let found = walk(&dir.join("man"));
    assert!(found.len() > 10, "{found:?}");
    for (path, mode) in found {
        let expected = if path.is_dir() { 0o755 } else { 0o644 };
        assert_eq!(mode, expected, "{}: {mode:o}", path.display());
    }
}

#[test]
fn under_umask_000_every_file_and_directory_buslink_creates_stays_closed() {
    let dir = TestDir::new("umask-000");
    let bus = bus_with(&dir, 20);
    let sink = HttpSink::start();
    let handlers = format!(
        "[[handlers]]\nname = \"archive\"\ntype = \"jsonl\"\npath = \"out/deep/all.jsonl\"\n\n\
         [[handlers]]\nname = \"private\"\ntype = \"jsonl\"\npath = \"out/private.jsonl\"\n\
         mode = \"0600\"\n\n\
         [[handlers]]\nname = \"print\"\ntype = \"stdout\"\n\n\
         [[handlers]]\nname = \"nothing\"\ntype = \"null\"\n\n\
         [[handlers]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{url}\"\n\n\
         [[handlers]]\nname = \"view\"\ntype = \"plugin\"\nplugin = \"statefiles\"\n\
         class = \"StateFilesHandler\"\nsettings = {{ dir = \"view/deep\" }}\n\n\
         [[handlers]]\nname = \"dead\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]\n\
         retry = {{ attempts = 1 }}\non_failure = \"dead-letter\"\n\n\
         [[handlers]]\nname = \"queued\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"exit 1\"]\n\
         retry = {{ attempts = 1 }}\non_failure = \"error-queue\"\nretry_interval_ms = 3600000\n",
        url = sink.url()
    );
    let config = sqlite_config(&dir, &bus, "", &handlers);
    // The state directory does not exist yet: buslink makes it, two levels deep.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.edit("state_dir = \"state\"", "state_dir = \"state/deep\""),
    )
    .expect("config");
    let mut command = buslink(&["run", "--config", &config.to_string_lossy()]);
    // SAFETY: umask(2) only, in the child between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, || {
            libc::umask(0);
            Ok(())
        });
    }
    let mut daemon = Daemon::start(command);
    daemon.wait_for("every event handled and committed", LIMIT, |_| {
        count_lines(&dir.join("out/deep/all.jsonl")) == 20
            && count_lines(&dir.join("state/deep/test.dead-letter.jsonl")) == 20
            && dir.join("state/deep/test.error-queue.json").exists()
            && dir.join("view/deep").is_dir()
            && sink.received().len() == 20
    });
    let made_here = ["buslink.toml", "bus.sqlite"];
    let running = assert_modes(&dir, &made_here, &[]);
    let socket = dir.join("state/deep/buslink.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the control socket");
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
    let stopped = assert_modes(&dir, &made_here, &[]);
    // Directories (out, out/deep, state, state/deep, view, view/deep), the outputs, the view's
    // files, the cache, lock, dead letters and error queue: all looked at.
    assert!(
        running >= 14 && stopped >= 13,
        "{running} / {stopped} paths checked"
    );
}

#[test]
fn an_output_mode_writable_by_others_is_a_config_error() {
    let dir = TestDir::new("umask-mode-error");
    let bus = bus_with(&dir, 1);
    let config = sqlite_config(
        &dir,
        &bus,
        "",
        "[[handlers]]\nname = \"archive\"\ntype = \"jsonl\"\npath = \"out/all.jsonl\"\nmode = \"0666\"\n",
    );
    let check =
        buslink_testkit::process::run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains("key `handlers[0].mode`")
            && check.stderr.contains("writable by every user"),
        "{check}"
    );
}
