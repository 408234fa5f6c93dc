//! Faults seen in the field: a full disk mid-line, files changed under the running daemon.
//! Each test is one example of a kind (issue "lose nothing"); RELIABILITY.md has the table.

use crate::common::*;
use buslink_testkit::process::{buslink, run_once, Daemon, RunOutput};
use buslink_testkit::workspace::plugin_lib;
use buslink_testkit::{hermes_events, HermesBusWriter, TestDir};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Every line of the file is whole JSON; returns the offsets in file order.
fn whole_lines(path: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends with a partial line: {:?}",
        path.display(),
        &text[text.len().saturating_sub(80)..]
    );
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("{}: not a whole JSON line ({e}): {line}", path.display())
            });
            value["offset"].as_i64().expect("an integer offset")
        })
        .collect()
}

/// `buslink run --once` with every file it writes limited to `max_bytes` (RLIMIT_FSIZE): a
/// write past it fails as on a full disk (EFBIG with SIGXFSZ ignored; ENOSPC takes the same
/// path through the handler).
fn run_once_with_file_limit(config: &Path, max_bytes: u64) -> RunOutput {
    let mut command = buslink(&["run", "--once", "--config", &config.to_string_lossy()]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: max_bytes,
                rlim_max: max_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    Daemon::start(command).finish(LIMIT)
}

#[test]
fn a_disk_full_mid_line_leaves_whole_lines_and_the_next_run_writes_each_event_once() {
    let dir = TestDir::new("disk-full");
    let total = 600;
    let bus = bus_with(&dir, total);
    let config = sqlite_config(
        &dir,
        &bus,
        "batch_size = 50",
        &(jsonl_handler("all", "")
            + "retry = { attempts = 2, base_ms = 10, max_ms = 10 }\n"
            + "[commit]\nevery_events = 100\n"),
    );
    let out = dir.join("out/all.jsonl");

    // Run 1: the file may not grow past 48 KiB; the write that crosses it fails mid-line.
    let full = run_once_with_file_limit(&config, 48 * 1024);
    assert_eq!(
        full.code(),
        Some(1),
        "a write that failed is a failed run: {full}"
    );
    assert!(
        full.stderr.contains("all.jsonl"),
        "the error names the file: {full}"
    );
    let written = whole_lines(&out);
    assert!(
        !written.is_empty() && written.len() < total,
        "run 1 wrote part of the bus: {} lines",
        written.len()
    );
    assert_eq!(written, (1..=written.len() as i64).collect::<Vec<_>>());

    // Run 2, space freed: the file is cut back to the committed length and every event is in
    // it exactly once, in order.
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(whole_lines(&out), (1..=total as i64).collect::<Vec<_>>());
    let cache = read_cache(&dir);
    assert_eq!(cache["last_offset"]["int"], total as i64);
    assert_eq!(
        cache["outputs"]["all"]["length"].as_u64(),
        std::fs::metadata(&out).ok().map(|m| m.len()),
        "the committed length is the file's: {cache}"
    );
}

#[test]
fn lines_written_after_the_last_commit_are_cut_back_so_a_restart_writes_them_once() {
    let dir = TestDir::new("cut-back");
    let bus = bus_with(&dir, 100);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let committed = std::fs::read(&out).expect("output written");

    // What a kill between a write and its commit leaves: lines the bus delivers again, the
    // last one torn on a page boundary.
    let mut torn = committed.clone();
    torn.extend_from_slice(b"{\"offset\":101,\"timestamp\":\"2026\"}\n{\"offset\":102,\"tim");
    std::fs::write(&out, &torn).expect("torn output");
    HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(hermes_events(150).skip(100)))
        .expect("more events");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("the length committed with the offset"),
        "the cut is logged: {run}"
    );
    assert_eq!(whole_lines(&out), (1..=150).collect::<Vec<_>>());
}

#[test]
fn a_plugin_library_overwritten_in_place_under_the_daemon_neither_kills_nor_stops_it() {
    let dir = TestDir::new("plugin-overwrite");
    let bus = bus_with(&dir, 50);
    let library = dir.join("plugins/libbuslink_sqlite.so");
    std::fs::create_dir_all(library.parent().expect("a parent")).expect("plugin dir");
    std::fs::copy(plugin_lib("sqlite"), &library).expect("plugin copied");
    let settings = format!("uri = \"{}\"\npoll_interval_ms = 10", bus.display());
    let library_text = library.to_string_lossy().into_owned();
    let config = consumer_config(
        &dir,
        ConsumerSpec {
            plugin: &library_text,
            class: "SqliteConsumer",
            timeout_ms: 200,
            extra: "",
            settings: &settings,
        },
        &jsonl_handler("all", ""),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the first 50 events", LIMIT, |_| count_lines(&out) >= 50);

    // `cp other.so libbuslink_sqlite.so`: the same inode truncated and written with other
    // bytes (here half of another library), the way the plugin guide's upgrade went.
    let other = std::fs::read(plugin_lib("hmb")).expect("another library");
    std::fs::write(&library, &other[..other.len() / 2]).expect("library overwritten in place");

    HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(hermes_events(120).skip(50)))
        .expect("more events");
    daemon.wait_for("the next 70 events and the warning", LIMIT, |d| {
        count_lines(&out) >= 120 && d.stderr().contains("changed on disk since it was loaded")
    });
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert_eq!(whole_lines(&out), (1..=120).collect::<Vec<_>>());
}

#[test]
fn symlinks_planted_in_the_state_dir_never_redirect_a_write() {
    let dir = TestDir::new("state-symlinks");
    let bus = bus_with(&dir, 10);
    let precious = dir.write("precious.txt", "keep me");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    // A link as the cache's temp file: removed and made anew, the target untouched.
    std::os::unix::fs::symlink(&precious, dir.join("state/test.offsets.tmp")).expect("link");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(dir.read("precious.txt"), "keep me");
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 10);
    // A link as the lock file: refused, naming it.
    std::os::unix::fs::symlink(&precious, dir.join("state/test.lock.new")).expect("link");
    std::fs::rename(dir.join("state/test.lock.new"), dir.join("state/test.lock")).expect("swap");
    let refused = run_once(&config);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("is a symbolic link"), "{refused}");
    assert_eq!(dir.read("precious.txt"), "keep me");
    // Files buslink creates there are 0600 whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(CACHE_FILE))
        .expect("the cache")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the cache's mode");
}

#[test]
fn a_lock_file_deleted_under_the_daemon_stops_it_before_a_second_one_can_commit_beside_it() {
    let dir = TestDir::new("lock-deleted");
    let bus = bus_with(&dir, 20);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 20 events", LIMIT, |_| count_lines(&out) >= 20);
    std::fs::remove_file(dir.join("state/test.lock")).expect("lock deleted");
    let stopped = daemon.finish(LIMIT);
    assert_eq!(stopped.code(), Some(1), "{stopped}");
    assert!(
        stopped
            .stderr
            .contains("was deleted or replaced by another program"),
        "{stopped}"
    );
    assert_eq!(
        read_cache(&dir)["last_offset"]["int"],
        20,
        "committed before stopping"
    );
}

/// `--once` says which end stopped it: the bus's own word that nothing more is there ("bus
/// drained"), or, from a plugin whose bus cannot say (`PollStatus::Idle`), no event within the
/// timeout, named as such.
#[test]
fn once_says_whether_the_bus_answered_drained_or_the_plugin_cannot_tell() {
    for (cannot_tell, said) in [
        (false, "stopped (bus drained): 7 events handled"),
        (
            true,
            "stopped (no event within 100 ms; the plugin cannot tell whether the bus is \
             drained): 7 events handled",
        ),
    ] {
        let dir = TestDir::new("once-drained-or-unknown");
        let settings = format!("events = 7\ncannot_tell = {cannot_tell}");
        let config = faulty_config(&dir, &settings, &jsonl_handler("all", ""));
        let run = run_once(&config);
        assert_eq!(run.code(), Some(0), "{run}");
        assert!(run.stderr.contains(said), "expected {said:?}: {run}");
        assert_eq!(count_lines(&dir.join("out/all.jsonl")), 7);
    }
}
