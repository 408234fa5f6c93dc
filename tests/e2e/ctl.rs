//! The control socket and `buslink ctl`: status, pause, resume, version, quit; the socket's
//! place, mode and group; clients that say nothing.

use crate::common::*;
use buslink_testkit::process::run;
use buslink_testkit::{Daemon, TestDir};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn the_control_socket_takes_its_path_mode_and_group_from_the_config() {
    let dir = TestDir::new("ctl-socket");
    let bus = bus_with(&dir, 3);
    let gid = unsafe { libc::getgid() };
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{text}\n[control]\npath = \"run/ctl.sock\"\nmode = \"0660\"\ngroup = \"{gid}\"\n"),
    )
    .expect("config");
    std::fs::create_dir_all(dir.join("run")).expect("run dir");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let socket = dir.join("run/ctl.sock");
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    assert!(!dir.join("state/buslink.sock").exists());
    let status = ctl(&config, &["status"]);
    assert!(status.stdout.contains("consumer test: running"), "{status}");
    // A second daemon with the same socket is refused before it consumes anything.
    let other = dir.write(
        "other.toml",
        std::fs::read_to_string(&config)
            .expect("config")
            .edit("name = \"test\"", "name = \"other\""),
    );
    let second = buslink(&["run", "--once", "--config", &other.to_string_lossy()]);
    assert_eq!(second.code(), Some(1), "{second}");
    assert!(
        second.stderr.contains("another buslink daemon answers on"),
        "{second}"
    );
    daemon.terminate(LIMIT);
    assert!(!socket.exists(), "removed at exit");
    // A mode that locks the owner out is a config error.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.edit("mode = \"0660\"", "mode = \"0460\"")).expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(check.stderr.contains("key `control.mode`"), "{check}");
    // Names that do not exist and a directory that does not are config problems too.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.edit(
            "mode = \"0460\"",
            "mode = \"0660\"\nowner = \"no-such-user-here\"",
        )
        .edit("run/ctl.sock", "nowhere/ctl.sock"),
    )
    .expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check
            .stderr
            .contains("key `control.owner`: no user named \"no-such-user-here\""),
        "{check}"
    );
    let run = buslink(&["run", "--once", "--config", &config.to_string_lossy()]);
    assert_eq!(run.code(), Some(2), "{run}");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("config")
            .edit("owner = \"no-such-user-here\"\n", ""),
    )
    .expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains("nowhere is not a directory"),
        "{check}"
    );
}

#[test]
fn pause_takes_effect_between_two_events_even_in_a_long_batch() {
    let dir = TestDir::new("pause-mid-batch");
    let bus = bus_with(&dir, 300);
    let seen = dir.join("seen.jsonl");
    // A slow handler: one batch of 300 events takes seconds.
    let handler = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat >> {}; sleep 0.01\"]\n",
        seen.display()
    );
    let config = sqlite_config(&dir, &bus, "batch_size = 512", &handler);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the batch under way", LIMIT, |_| count_lines(&seen) >= 20);
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    let at_pause = count_lines(&seen);
    // The queue is answered mid-batch too (between two events, not after the batch).
    let listed = ctl(&config, &["errors", "list"]);
    assert!(
        listed.stdout.contains("the error queue is empty"),
        "{listed}"
    );
    let progress_lines = |d: &Daemon| d.stderr().matches("progress:").count();
    let lines_then = progress_lines(&daemon);
    daemon.wait_for("two progress lines while paused", LIMIT, |d| {
        progress_lines(d) >= lines_then + 2
    });
    let held = count_lines(&seen);
    assert!(
        held <= at_pause + 1,
        "at most the event in hand after the pause: {at_pause} then {held}"
    );
    assert!(held < 300, "the batch was not finished");
    // What was handled before the pause is committed.
    let committed = consumer_status(&status(&config), "test")["committed_offset"].clone();
    assert_eq!(committed, held.to_string(), "{committed}");
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("the rest of the batch", LIMIT, |_| {
        count_lines(&seen) == 300
    });
    assert_eq!(
        offsets(&read_lines(&dir, "seen.jsonl")),
        (1..=300).collect::<Vec<_>>()
    );
    daemon.terminate(LIMIT);
}

#[test]
fn clients_that_say_nothing_do_not_hold_up_the_control_socket() {
    use std::io::Read;
    let dir = TestDir::new("ctl-idle-clients");
    let bus = bus_with(&dir, 3);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let socket = dir.join("state/buslink.sock");
    // Four clients connect and say nothing (the daemon gives each 2 s).
    let idle: Vec<_> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    let status = ctl(&config, &["status"]);
    assert!(status.stdout.contains("consumer test: running"), "{status}");
    // Answered while the silent ones are still waited for: none was closed yet.
    for mut client in idle {
        client.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let read = client.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a silent client was already dealt with: {read:?}"
        );
    }
    // A command of several lines never reaches the daemon.
    let bad = ctl(&config, &["status", "test\nquit"]);
    assert_eq!(bad.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("no line breaks"), "{bad}");
    daemon.terminate(LIMIT);
}

#[test]
fn status_pause_and_quit_answer_while_a_handler_fails_and_retries() {
    let dir = TestDir::new("ctl-failing-handler");
    let bus = bus_with(&dir, 10);
    let flag = dir.join("ok");
    // Fails until `ok` exists, with long waits between its tries.
    let handler = format!(
        "[[handlers]]\nname = \"flaky\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"test -e {}\"]\n\
         retry = {{ attempts = 1000, base_ms = 500, max_ms = 500 }}\n",
        flag.display()
    );
    let config = sqlite_config(&dir, &bus, "", &handler);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a retry", LIMIT, |d| {
        d.stderr().contains("retrying in 500 ms")
    });
    let test = consumer_status(&status(&config), "test");
    assert_eq!(test["state"], "running", "{test}");
    assert!(
        test["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("handler 'flaky' failed on offset 1 (attempt")),
        "{test}"
    );
    // When, to tell it from an old one: a time of this run.
    let at = test["last_error_at"]
        .as_str()
        .expect("when the error was met");
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(at).num_seconds();
    assert!((0..60).contains(&age), "{test}");
    let human = ctl(&config, &["status"]).stdout;
    assert!(human.contains("  last error (at 20"), "{human}");
    // `--config` may follow the action too, as operators type it.
    let after = buslink_testkit::process::run(
        &["ctl", "status", "--config", &config.to_string_lossy()],
        LIMIT,
    );
    assert_eq!(after.code(), Some(0), "{after}");
    assert!(after.stdout.contains("  last error (at 20"), "{after}");
    let without = buslink_testkit::process::run(&["ctl", "status"], LIMIT);
    assert_eq!(without.code(), Some(2), "{without}");
    assert!(without.stderr.contains("--config FILE"), "{without}");
    assert_eq!(test["committed_offset"], Value::Null, "{test}");
    // The event being retried is in the handler's hands: the pause waits for it.
    let pause = ctl(&config, &["pause"]).stdout;
    assert!(
        pause.starts_with("pausing: consumer 'test': its handlers still hold the event in hand"),
        "{pause}"
    );
    // Quit ends the retries at once (the event comes again at the next start).
    assert_eq!(ctl(&config, &["quit"]).stdout, "stopping\n");
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    let show = buslink(&[
        "offsets",
        "show",
        "--json",
        "--config",
        &config.to_string_lossy(),
    ]);
    assert_eq!(
        show.stdout.trim(),
        "null",
        "nothing handled, nothing committed: {show}"
    );
}

#[test]
fn the_control_socket_tells_the_running_daemon_s_version_pid_and_time_up() {
    let dir = TestDir::new("ctl-version");
    let bus = bus_with(&dir, 3);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 3 events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let version = ctl(&config, &["version"]);
    assert_eq!(version.code(), Some(0), "{version}");
    // The truth: the binary's own `--version` and the process this test started.
    let built = buslink_testkit::process::run(&["--version"], LIMIT);
    let prefix = format!("{} (pid {}, up ", built.stdout.trim_end(), daemon.pid());
    let up = version
        .stdout
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" s)\n"))
        .unwrap_or_else(|| panic!("{prefix}N s) expected: {version}"));
    assert!(up.parse::<u64>().is_ok_and(|s| s < 60), "{version}");
    // A word after it is refused, as for every command without arguments.
    let refused = ctl(&config, &["version", "now"]);
    assert_ne!(refused.code(), Some(0), "{refused}");
    daemon.terminate(LIMIT);
}

#[test]
fn the_control_socket_shows_status_pauses_resumes_and_quits() {
    let dir = TestDir::new("ctl");
    let bus = bus_with(&dir, 20);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    // No daemon yet: a clear error.
    let none = ctl(&config, &["status"]);
    assert_eq!(none.code(), Some(1), "{none}");
    assert!(none.stderr.contains("no daemon answers on"), "{none}");
    let mut daemon = Daemon::run(&config);
    let out = dir.join("out/all.jsonl");
    daemon.wait_for("the 20 events", LIMIT, |_| count_lines(&out) == 20);
    // The socket is private.
    let socket = dir.join("state/buslink.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("the socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    daemon.wait_for("a committed status", LIMIT, |_| {
        let status = ctl(&config, &["status", "--json", "test"]);
        let value: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        value["committed_offset"] == "20" && value["state"] == "running"
    });
    let status = ctl(&config, &["status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    for expected in [
        "consumer test: running (plugin sqlite class SqliteConsumer)",
        "committed offset: 20 at ",
        " s ago)",
        "events handled: 20",
        "error queue: 0 events",
    ] {
        assert!(status.stdout.contains(expected), "{expected} in {status}");
    }
    // Paused: events written meanwhile wait; the status says so across progress lines.
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    buslink_testkit::HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(5)))
        .expect("more events");
    let progress_lines = |d: &Daemon| d.stderr().matches("progress:").count();
    let seen = progress_lines(&daemon);
    daemon.wait_for("three progress lines while paused", LIMIT, |d| {
        progress_lines(d) >= seen + 3
    });
    assert_eq!(count_lines(&out), 20, "nothing handled while paused");
    let value: serde_json::Value =
        serde_json::from_str(&ctl(&config, &["status", "--json"]).stdout).expect("JSON");
    assert_eq!(value["consumers"][0]["state"], "paused");
    // Resumed: exactly where it stopped.
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("the 5 new events", LIMIT, |_| count_lines(&out) == 25);
    let offsets = offsets(&read_lines(&dir, "out/all.jsonl"));
    assert_eq!(offsets, (1..=25).collect::<Vec<_>>());
    // Quit stops the daemon as SIGTERM does, paused or not.
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    assert_eq!(ctl(&config, &["quit"]).stdout, "stopping\n");
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("stop asked through the control socket"),
        "{run}"
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}
