//! Its word is true: the lag, state, health, status, commits and progress lines the daemon
//! shows, compared with the truth (the events on the bus less the events in a `jsonl` output)
//! in each state, and cleared after recovery.

use crate::common::*;
use buslink_testkit::{hermes_events, Daemon, HermesBusWriter, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// An `exec` command that holds every event until the file `go` exists beside it (at most
/// its handler's `timeout_ms`, and 2 minutes whatever happens to the test: no command outlives
/// a failed test for long), then takes it.
fn gate(dir: &TestDir) -> PathBuf {
    let go = dir.join("go");
    script(
        dir,
        "gate.sh",
        format!(
            "#!/bin/sh\ni=0; while [ ! -e '{}' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done\ncat > /dev/null\n",
            go.display()
        ),
    )
}

/// The handlers most tests here use: `hook`, the [`gate`] (every event held until `go`
/// exists), then the archive `out/all.jsonl`.
fn gated_handlers(dir: &TestDir) -> String {
    format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"{}\"]\ntimeout_ms = 60000\n\n{}",
        gate(dir).display(),
        jsonl_handler("all", "")
    )
}

/// A sqlite config with a progress line a second, `consumer_extra` in `[consumer]`, `handlers`
/// and the metrics on a free port.
fn config_with(dir: &TestDir, bus: &Path, consumer_extra: &str, handlers: &str) -> PathBuf {
    let config = sqlite_config(dir, bus, consumer_extra, handlers);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen(
            "state_dir = \"state\"",
            "state_dir = \"state\"\nstats_interval_s = 1",
            1,
        ),
    )
    .expect("config");
    append_to(&config, METRICS_ON_ANY_PORT);
    config
}

/// The consumer `test` of the running daemon.
fn test_status(config: &Path) -> Value {
    consumer_status(&status(config), "test")
}

fn metrics_of(daemon: &mut Daemon) -> String {
    daemon.wait_for("the metrics address", LIMIT, |d| {
        d.stderr().contains("metrics on http://")
    });
    metrics_address(&daemon.stderr())
}

#[test]
fn a_handler_blocked_on_the_first_event_shows_the_whole_bus_as_lag_and_the_consumer_stalled() {
    let dir = TestDir::new("word-stalled");
    let bus = bus_with(&dir, 50);
    let handlers = gated_handlers(&dir);
    let config = config_with(&dir, &bus, "stall_after_s = 2", &handlers);
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    // The truth: 50 events on the bus, none handled (the archive comes after the hook).
    daemon.wait_for("the consumer stalled with its lag", LIMIT, |_| {
        let status = test_status(&config);
        status["lag"] == 50 - count_lines(&out) as u64
            && status["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("stalled: 50 events wait"))
    });
    let (_, text) = scrape(&address, "/metrics");
    assert_eq!(
        sample(&text, "buslink_lag_events{consumer=\"test\"}"),
        Some(50.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "buslink_consumer_state{consumer=\"test\",state=\"stalled\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "buslink_consumer_state{consumer=\"test\",state=\"running\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "buslink_commits_total{consumer=\"test\"}"),
        Some(0.0)
    );
    let (code, body) = scrape(&address, "/health");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("stalled: 50 events wait"), "{body}");
    assert_eq!(scrape(&address, "/health/test").0, 503);
    assert_eq!(scrape(&address, "/ready").0, 503);
    // Progress lines keep coming while the handler blocks, with the true lag.
    daemon.wait_for("progress lines while blocked", LIMIT, |d| {
        d.stderr()
            .lines()
            .filter(|l| l.contains("progress:") && l.contains("lag 50") && l.contains("stalled"))
            .count()
            >= 2
    });
    std::fs::write(dir.join("go"), "").expect("go");
    daemon.wait_for("every event handled, running again", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 50 && status["lag"] == 0 && status["state"] == "running"
    });
    let (code, _) = scrape(&address, "/health");
    assert_eq!(code, 200);
    daemon.wait_for("the metrics follow", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        sample(&text, "buslink_lag_events{consumer=\"test\"}") == Some(0.0)
            && sample(
                &text,
                "buslink_consumer_state{consumer=\"test\",state=\"running\"}",
            ) == Some(1.0)
    });
    let log = daemon.stderr();
    assert_eq!(log.matches("consumer now stalled").count(), 1, "{log}");
    assert_eq!(log.matches("consumer running again").count(), 1, "{log}");
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A handler blocked on an event stalls the consumer through a pause and its resume: the pause
/// waits for the event in hand, so the consumer shows `stalled` (503), not `paused` (200),
/// and the resume does not start the stall clock again: the seconds shown are the true ones.
#[test]
fn a_handler_blocked_through_a_pause_and_resume_stays_stalled_with_its_true_idle_time() {
    let dir = TestDir::new("word-stalled-paused");
    let bus = bus_with(&dir, 10);
    let handlers = gated_handlers(&dir);
    let config = config_with(&dir, &bus, "stall_after_s = 2", &handlers);
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    let stalled_for = |config: &Path| -> Option<u64> {
        let state = test_status(config)["state"].as_str()?.to_owned();
        let rest = state.strip_prefix("stalled: 10 events wait and none was handled for ")?;
        rest.split(' ').next()?.parse().ok()
    };
    daemon.wait_for("stalled", LIMIT, |_| stalled_for(&config).is_some());
    let began = std::time::Instant::now();
    assert!(
        ctl(&config, &["pause"])
            .stdout
            .starts_with("pausing: consumer 'test': its handlers still hold the event in hand"),
        "{}",
        test_status(&config)
    );
    // Still stalled while paused (the pause cannot take the event from the handler).
    daemon.wait_for("3 s more", LIMIT, |_| {
        began.elapsed() >= Duration::from_secs(3)
    });
    assert!(stalled_for(&config).is_some(), "{}", test_status(&config));
    assert_eq!(scrape(&address, "/health").0, 503);
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    // After the resume: the seconds go on from the first stall (at least 2 + 3), never from
    // the resume.
    let idle = stalled_for(&config).expect("stalled after the resume");
    assert!(idle >= 5, "{idle} s, {}", test_status(&config));
    std::fs::write(dir.join("go"), "").expect("go");
    daemon.wait_for("every event handled, running", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 10 && test_status(&config)["state"] == "running"
    });
    let log = daemon.stderr();
    assert_eq!(log.matches("consumer now stalled").count(), 1, "{log}");
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// The sum of `buslink_events_total` of consumer `test`, as `/metrics` says now.
fn events_counted(address: &str) -> u64 {
    let (_, text) = scrape(address, "/metrics");
    text.lines()
        .filter(|l| l.starts_with("buslink_events_total{consumer=\"test\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A hook that takes 3 events at once and holds the 4th until `go` exists: the 3 handled are
/// in `buslink_events_total` while it holds (they were counted once per second, and not at
/// all while a handler held the next event); `ctl pause` answers `pausing` (not `paused`)
/// and `status` shows `pausing` until the hook gives the event back, then `paused` with 4
/// handled and the rest waiting.
#[test]
fn while_a_handler_holds_an_event_those_before_are_counted_and_a_pause_says_pausing() {
    let dir = TestDir::new("word-pausing");
    let bus = bus_with(&dir, 10);
    let hook = script(
        &dir,
        "gate-after-3.sh",
        format!(
            "#!/bin/sh\ncat > /dev/null\nn=$(cat '{count}' 2>/dev/null || echo 0)\necho $((n + 1)) > '{count}'\n\
             if [ \"$n\" -ge 3 ]; then i=0; while [ ! -e '{go}' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done; fi\n",
            count = dir.join("count").display(),
            go = dir.join("go").display()
        ),
    );
    let handlers = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"{}\"]\ntimeout_ms = 60000\n\n{}",
        hook.display(),
        jsonl_handler("all", "")
    );
    let config = config_with(&dir, &bus, "", &handlers);
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    // (The archive's lines are written at the next commit: a batch's end or a pause.)
    daemon.wait_for("3 handled, the 4th held", LIMIT, |_| {
        test_status(&config)["events_handled"] == 3
    });
    // Counted as handled, not when the held one comes back (a few seconds for the scrape).
    daemon.wait_for(
        "the 3 in buslink_events_total",
        Duration::from_secs(5),
        |_| events_counted(&address) == 3,
    );
    let answer = ctl(&config, &["pause"]).stdout;
    assert_eq!(
        answer,
        "pausing: consumer 'test': its handlers still hold the event in hand; no event after \
         it is handled, and `status` shows `paused` once they give it back\n"
    );
    let state = test_status(&config)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(state.starts_with("pausing: "), "{state}");
    assert_eq!(scrape(&address, "/ready/test").0, 200);
    assert_eq!(events_counted(&address), 3);
    daemon.wait_for("the metric's state pausing", LIMIT, |_| {
        sample(
            &scrape(&address, "/metrics").1,
            "buslink_consumer_state{consumer=\"test\",state=\"pausing\"}",
        ) == Some(1.0)
    });
    std::fs::write(dir.join("go"), "").expect("go");
    daemon.wait_for("paused after the 4th", LIMIT, |_| {
        test_status(&config)["state"] == "paused"
    });
    assert_eq!(count_lines(&out), 4);
    assert_eq!(test_status(&config)["events_handled"], 4);
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    let state_series = |state: &str| {
        sample(
            &scrape(&address, "/metrics").1,
            &format!("buslink_consumer_state{{consumer=\"test\",state=\"{state}\"}}"),
        )
    };
    daemon.wait_for("the metric's state paused", LIMIT, |_| {
        state_series("paused") == Some(1.0)
    });
    assert_eq!(state_series("pausing"), Some(0.0));
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("every event", LIMIT, |_| count_lines(&out) == 10);
    daemon.wait_for("all 10 counted", LIMIT, |_| events_counted(&address) == 10);
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A sqlite bus locked by another process's write transaction (`BEGIN EXCLUSIVE`) longer than
/// max(timeout_ms, 5 s): the consumer says it is waiting for the bus (the lock named), within
/// about that time (it was 10 s, sqlite's busy timeout), and runs again once the lock goes.
#[test]
fn a_sqlite_bus_locked_shows_waiting_for_the_bus_within_5_s_then_runs_again() {
    let dir = TestDir::new("word-locked");
    let bus = bus_with(&dir, 10);
    let config = config_with(&dir, &bus, "", &jsonl_handler("all", ""));
    let mut daemon = Daemon::run(&config);
    let out = dir.join("out/all.jsonl");
    daemon.wait_for("the 10 events", LIMIT, |_| count_lines(&out) == 10);
    let lock = rusqlite::Connection::open(&bus).expect("bus");
    lock.execute_batch("BEGIN EXCLUSIVE").expect("locked");
    let locked_at = std::time::Instant::now();
    daemon.wait_for("waiting for the bus", LIMIT, |_| {
        test_status(&config)["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for the bus: ") && s.contains("locked"))
    });
    let took = locked_at.elapsed();
    // 5 s of sqlite's busy wait, then the next look (the monitor's tick, `ctl`'s round trip).
    assert!(took < Duration::from_secs(9), "{took:?}");
    lock.execute_batch("COMMIT").expect("unlocked");
    drop(lock);
    let mut writer = HermesBusWriter::open(&bus).expect("bus");
    writer.append_all(hermes_events(3)).expect("append");
    daemon.wait_for("running again with the new events", LIMIT, |_| {
        count_lines(&out) == 13 && test_status(&config)["state"] == "running"
    });
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A stop asked for while a handler holds an event (SIGTERM): the daemon says at once, in its
/// log, `ctl status`, `/health` (503) and the metric, that the consumer is stopping, not
/// `running` or `stalled` until the handler returns; then it commits what it handled and exits 0.
#[test]
fn a_stop_asked_for_while_a_handler_holds_an_event_shows_stopping_at_once() {
    let dir = TestDir::new("word-stopping");
    let bus = bus_with(&dir, 10);
    let handlers = gated_handlers(&dir);
    let config = config_with(&dir, &bus, "stall_after_s = 600", &handlers);
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    daemon.wait_for("the first event in the hook's hands", LIMIT, |_| {
        test_status(&config)["state"] == "running" && test_status(&config)["lag"] == 10
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_for("stopping shown", LIMIT, |_| {
        test_status(&config)["state"] == "stopping"
    });
    let (code, body) = scrape(&address, "/health");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body.trim(), "stopping", "{body}");
    let (_, text) = scrape(&address, "/metrics");
    assert_eq!(
        sample(
            &text,
            "buslink_consumer_state{consumer=\"test\",state=\"stopping\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        daemon
            .stderr()
            .contains("stop asked for: each consumer finishes the event in hand"),
        "{}",
        daemon.stderr()
    );
    // The handler still holds the event: nothing was handled yet.
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 0);
    std::fs::write(dir.join("go"), "").expect("go");
    let out = daemon.finish(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
    // The event in hand was finished and committed, and nothing after it read on.
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 1);
}

/// A second SIGTERM while a handler holds the event in hand: exit 1 at once with an ERROR
/// saying why (it was a bare exit 1), and the handler's command killed with its process group
/// (it ran on under init).
#[test]
fn a_second_sigterm_during_the_stop_exits_1_saying_why_and_leaves_no_command_running() {
    let dir = TestDir::new("word-second-sigterm");
    let bus = bus_with(&dir, 10);
    let pid_file = dir.join("hook.pid");
    let hook = script(
        &dir,
        "hook.sh",
        format!(
            "#!/bin/sh\necho $$ > '{}'\ni=0; while [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done\n",
            pid_file.display()
        ),
    );
    let handlers = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"{}\"]\ntimeout_ms = 60000\n\n{}",
        hook.display(),
        jsonl_handler("all", "")
    );
    let config = config_with(&dir, &bus, "stall_after_s = 600", &handlers);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the hook running", LIMIT, |_| {
        std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.trim().parse::<i32>().is_ok())
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    daemon.signal(libc::SIGTERM);
    daemon.wait_for("stopping shown", LIMIT, |_| {
        test_status(&config)["state"] == "stopping"
    });
    daemon.signal(libc::SIGTERM);
    let out = daemon.finish(LIMIT);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(
            "a second SIGTERM during the stop: exiting at once (exit 1) without finishing the \
             event in hand"
        ) && out.stderr.contains("1 handler command(s) killed"),
        "{out}"
    );
    // Gone (or a zombie waiting for init to reap it), never running on.
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gone(),
        "the hook (pid {pid}) still runs after the daemon's exit"
    );
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 0);
}

/// `run --once` stopped by SIGTERM while a handler holds an event, the reader having read the
/// whole bus: it said `stopped (bus drained)` and exited 0 with 9 of 10 events unhandled.
#[test]
fn once_stopped_by_a_signal_while_a_handler_holds_an_event_is_no_drained_bus() {
    let dir = TestDir::new("word-once-stopped");
    let bus = bus_with(&dir, 10);
    let handlers = gated_handlers(&dir);
    let config = config_with(&dir, &bus, "stall_after_s = 600", &handlers);
    let mut daemon = Daemon::start(buslink_testkit::process::buslink(&[
        "run",
        "--once",
        "--config",
        &config.to_string_lossy(),
    ]));
    daemon.wait_for("the first event in the hook's hands", LIMIT, |_| {
        test_status(&config)["state"] == "running" && test_status(&config)["lag"] == 10
    });
    daemon.signal(libc::SIGTERM);
    daemon.wait_for("stopping shown", LIMIT, |_| {
        test_status(&config)["state"] == "stopping"
    });
    std::fs::write(dir.join("go"), "").expect("go");
    let out = daemon.finish(LIMIT);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("stopped by a signal before the bus was drained: 1 events handled"),
        "{out}"
    );
    assert!(!out.stderr.contains("bus drained)"), "{out}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 1);
}

#[test]
fn a_paused_consumer_shows_events_appended_meanwhile_as_lag_and_stays_paused_not_stalled() {
    let dir = TestDir::new("word-paused");
    let bus = bus_with(&dir, 20);
    let config = config_with(&dir, &bus, "stall_after_s = 1", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    daemon.wait_for("the bus handled", LIMIT, |_| {
        count_lines(&out) == 20 && test_status(&config)["lag"] == 0
    });
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(5000)))
        .expect("events appended");
    // The truth: 5020 on the bus, 20 in the archive.
    daemon.wait_for("the lag of the paused consumer", LIMIT, |_| {
        test_status(&config)["lag"] == 5020 - count_lines(&out) as u64
    });
    // Two more progress lines: more than stall_after_s went by, events waiting.
    let seen = daemon.stderr().matches("progress:").count();
    daemon.wait_for("two progress lines", LIMIT, |d| {
        d.stderr().matches("progress:").count() >= seen + 2
    });
    let status = test_status(&config);
    assert_eq!(status["state"], "paused", "{status}");
    assert_eq!(status["lag"], 5000, "{status}");
    let (_, text) = scrape(&address, "/metrics");
    assert_eq!(
        sample(
            &text,
            "buslink_consumer_state{consumer=\"test\",state=\"paused\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "buslink_lag_events{consumer=\"test\"}"),
        Some(5000.0)
    );
    assert_eq!(scrape(&address, "/health").0, 200);
    assert!(!daemon.stderr().contains("consumer now stalled"));
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("everything handled after the resume", LIMIT, |_| {
        count_lines(&out) == 5020 && test_status(&config)["lag"] == 0
    });
    daemon.terminate(LIMIT);
}

#[test]
fn commits_status_and_metrics_keep_their_schedule_inside_a_batch_of_a_slow_handler() {
    let dir = TestDir::new("word-cadence");
    let bus = bus_with(&dir, 150);
    // About 40 events a second: the 150 events are one batch of 4 s.
    let handlers = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat > /dev/null; sleep 0.02\"]\n\n{}",
        jsonl_handler("all", "")
    );
    let config = config_with(&dir, &bus, "", &handlers);
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    // every_ms = 1000 (the default): a commit lands inside the batch, and what it says is in
    // the archive (synced before the commit).
    let mut committed = 0;
    daemon.wait_for("a commit inside the batch", LIMIT, |_| {
        let status = test_status(&config);
        committed = status["committed_offset"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        committed > 0
            && committed < 150
            && status["events_per_second"]
                .as_f64()
                .is_some_and(|r| r > 0.0)
            && status["events_handled"]
                .as_u64()
                .is_some_and(|n| n >= committed)
    });
    assert!(count_lines(&out) >= committed as usize);
    // The events counter moves before the batch ends too.
    daemon.wait_for("events counted before the batch ends", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("buslink_events_total{consumer=\"test\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counted > 0.0 && count_lines(&out) < 150
    });
    // A second commit, still inside the batch, a second or so later.
    let first = committed;
    daemon.wait_for("another commit inside the batch", LIMIT, |_| {
        let now = test_status(&config)["committed_offset"]
            .as_str()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        now > first && now < 150
    });
    daemon.wait_for("the whole batch", LIMIT, |_| count_lines(&out) == 150);
    daemon.terminate(LIMIT);
}

#[test]
fn kafka_every_broker_down_shows_waiting_for_the_bus_with_the_lag_unknown_then_recovers() {
    let mut mock = buslink_testkit::KafkaMock::start(3, &[("t", 1)]);
    mock.command("produce t 50");
    let dir = TestDir::new("word-kafka-down");
    let config = crate::kafka::kafka_config(&dir, &mock, "t", "", "", &jsonl_handler("all", ""));
    append_to(&config, METRICS_ON_ANY_PORT);
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    daemon.wait_for("the topic handled", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 50 && status["lag"] == 0 && status["state"] == "running"
    });
    assert_eq!(scrape(&address, "/ready").0, 200);
    mock.command("down -1");
    daemon.wait_for("the outage shown", LIMIT, |_| {
        let status = test_status(&config);
        status["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for the bus:"))
            && status["lag"].is_null()
    });
    let (code, body) = scrape(&address, "/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("waiting for the bus:"), "{body}");
    // Waiting is no reason to restart the process.
    assert_eq!(scrape(&address, "/health").0, 200);
    let (_, text) = scrape(&address, "/metrics");
    assert_eq!(
        sample(&text, "buslink_lag_events{consumer=\"test\"}"),
        None,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "buslink_consumer_state{consumer=\"test\",state=\"waiting\"}"
        ),
        Some(1.0)
    );
    assert!(
        daemon.stderr().contains("consumer now waiting for the bus"),
        "{}",
        daemon.stderr()
    );
    mock.command("up -1");
    mock.command("produce t 10");
    daemon.wait_for("running again, every record once", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 60 && status["lag"] == 0 && status["state"] == "running"
    });
    let handled: Vec<i64> = read_lines(&dir, "out/all.jsonl")
        .iter()
        .filter_map(|line| line["offset"].as_i64())
        .collect();
    assert_eq!(handled, (0..60).collect::<Vec<_>>());
    assert!(daemon.stderr().contains("consumer running again"));
    daemon.terminate(LIMIT);
}

#[test]
fn kafka_a_group_member_whose_cluster_never_answers_shows_waiting_for_the_bus() {
    let dir = TestDir::new("word-kafka-never");
    let settings =
        "servers = \"127.0.0.1:1\"\nmode = \"group\"\ntopics = [\"t\"]\ngroup_id = \"never\"";
    let consumer = ConsumerSpec {
        plugin: "kafka",
        class: "KafkaConsumer",
        timeout_ms: 200,
        extra: "",
        settings,
    };
    let config = consumer_config(&dir, consumer, &jsonl_handler("all", ""));
    append_to(&config, METRICS_ON_ANY_PORT);
    let mut daemon = Daemon::run(&config);
    let address = metrics_of(&mut daemon);
    daemon.wait_for("the unreachable cluster shown", LIMIT, |_| {
        test_status(&config)["state"].as_str().is_some_and(|s| {
            s.starts_with("waiting for the bus:") && s.contains("cannot reach the cluster")
        })
    });
    assert_eq!(scrape(&address, "/ready").0, 503);
    assert!(test_status(&config)["lag"].is_null());
    // It stays so through the retries: never "open and consuming", no flapping.
    daemon.wait_for("two retries", LIMIT, |d| {
        d.stderr().matches("cannot reach the cluster").count() >= 4
    });
    let log = daemon.stderr();
    assert!(!log.contains("open and positioned"), "{log}");
    assert!(!log.contains("running again"), "{log}");
    assert_eq!(
        log.matches("consumer now waiting for the bus").count(),
        1,
        "{log}"
    );
    daemon.terminate(LIMIT);
}

/// The HMB server **process** frozen while the daemon still handles events it read before (a
/// slow handler): the consumer shows `waiting for the bus` once the plugin's requests have
/// failed (read_timeout_ms), not only after the backlog in hand is done; then running again
/// after the thaw, every message handled once.
#[test]
fn hmb_a_server_frozen_behind_a_backlog_shows_waiting_before_the_backlog_is_done() {
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(1000, &[]);
    let url = server.bus_url("backlog");
    crate::hmb::Producer::open(&url, false).send(&crate::hmb::messages(&["A"], &["T"], 0, 300));
    let dir = TestDir::new("word-hmb-backlog");
    let handlers = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"sleep 0.03; cat > /dev/null\"]\n\n{}",
        jsonl_handler("all", "")
    );
    // Small batches: the plugin keeps most of the 300 messages read ahead (one answer) while
    // the host takes 10 at a time, so its polls keep finding events after the freeze.
    let config = crate::hmb::hmb_config(
        &dir,
        &url,
        "batch_size = 10",
        "read_timeout_ms = 1500",
        "[consumer.settings.queues.A]\n",
        &handlers,
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a few events handled", LIMIT, |_| count_lines(&out) >= 10);
    server.freeze();
    daemon.wait_for("the frozen server shown", LIMIT, |_| {
        test_status(&config)["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for the bus:") && s.contains("HMB "))
    });
    // The truth: most of the backlog read before the freeze is still to be handled (about
    // 90 events are handled in the 3 s the plugin takes to give up on the server; the old
    // code said it only with the last batch of the backlog in hand).
    let handled = count_lines(&out);
    assert!(
        handled < 220,
        "waiting shown only after the backlog: {handled}"
    );
    server.thaw();
    daemon.wait_for("every message handled, running", LIMIT, |_| {
        count_lines(&out) == 300 && test_status(&config)["state"] == "running"
    });
    let lines = read_lines(&dir, "out/all.jsonl");
    let seqs: Vec<i64> = crate::hmb::per_queue(&lines)["A"]
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

/// A queue that holds only the TOUCH message creating it (this consumer's own, with
/// `autocreate_queues`, or another client's) has nothing for the consumer: lag 0 and `running`
/// past `stall_after_s`, never "stalled: 1 events wait" (503); the messages sent next are
/// handled and the lag is 0 again.
#[test]
fn hmb_a_queue_holding_only_touch_messages_shows_lag_0_never_stalled() {
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(1000, &[]);
    let url = server.bus_url("touched");
    // Queue B is created by another client's TOUCH (seq 0); queue A by this consumer's.
    crate::hmb::Producer::open(&url, false)
        .send(&[serde_json::json!({"type": "TOUCH", "queue": "B"})]);
    for queue in ["A", "B"] {
        let dir = TestDir::new(&format!("word-hmb-touch-{queue}"));
        let config = crate::hmb::hmb_config(
            &dir,
            &url,
            "stall_after_s = 2",
            "autocreate_queues = true",
            &format!("[consumer.settings.queues.{queue}]\nseq = 0\n"),
            &jsonl_handler("all", ""),
        );
        let mut daemon = Daemon::run(&config);
        let began = std::time::Instant::now();
        daemon.wait_for("3.5 s of lag 0, running", LIMIT, |_| {
            let status = test_status(&config);
            if began.elapsed() > Duration::from_secs(1) {
                assert_eq!(status["lag"], 0, "queue {queue}: {status}");
                assert_eq!(status["state"], "running", "queue {queue}: {status}");
            }
            began.elapsed() > Duration::from_millis(3500)
        });
        crate::hmb::Producer::open(&url, false).send(&crate::hmb::messages(&[queue], &["T"], 0, 5));
        let out = dir.join("out/all.jsonl");
        daemon.wait_for("the 5 messages handled, lag 0", LIMIT, |_| {
            count_lines(&out) == 5 && test_status(&config)["lag"] == 0
        });
        let run = daemon.terminate(LIMIT);
        assert_eq!(run.code(), Some(0), "{run}");
        assert!(!run.stderr.contains("stalled"), "{}", run.stderr);
    }
}

/// The example's settings (heartbeat 10 s, `read_timeout_ms` 30 s), an idle consumer, the
/// server process frozen: the lag goes unknown within a few seconds and the consumer
/// `waiting for the bus` within max(timeout, 5 s) and the 2 s `/info` may take, not after
/// the 30 s read timeout (it showed `running`, lag 0, `/ready` 200 for 30 s); running again,
/// lag 0, once it thaws.
#[test]
fn hmb_an_idle_consumer_of_a_frozen_server_shows_waiting_long_before_the_read_timeout() {
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(1000, &[]);
    let url = server.bus_url("idle");
    crate::hmb::Producer::open(&url, false).send(&crate::hmb::messages(&["A"], &["T"], 0, 5));
    let dir = TestDir::new("word-hmb-idle");
    let config = crate::hmb::hmb_config(
        &dir,
        &url,
        "",
        "heartbeat = 10\nread_timeout_ms = 30000",
        "[consumer.settings.queues.A]\n",
        &jsonl_handler("all", ""),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("everything handled", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 5 && status["lag"] == 0 && status["state"] == "running"
    });
    server.freeze();
    let limit = Duration::from_secs(20);
    daemon.wait_for("the lag unknown", limit, |_| {
        test_status(&config)["lag"].is_null()
    });
    daemon.wait_for("waiting for the bus", limit, |_| {
        test_status(&config)["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for the bus:") && s.contains("/info"))
    });
    server.thaw();
    daemon.wait_for("running again", LIMIT, |_| {
        let status = test_status(&config);
        status["lag"] == 0 && status["state"] == "running"
    });
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn hmb_lag_and_state_follow_a_blocked_handler_and_a_frozen_server_process() {
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(1000, &[]);
    let url = server.bus_url("word");
    crate::hmb::Producer::open(&url, false).send(&crate::hmb::messages(&["A"], &["T"], 0, 50));
    let dir = TestDir::new("word-hmb");
    let handlers = gated_handlers(&dir);
    let config = crate::hmb::hmb_config(
        &dir,
        &url,
        "stall_after_s = 2",
        "read_timeout_ms = 1500",
        "[consumer.settings.queues.A]\n",
        &handlers,
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the lag of a blocked handler, stalled", LIMIT, |_| {
        let status = test_status(&config);
        status["lag"] == 50 - count_lines(&out) as u64
            && status["state"]
                .as_str()
                .is_some_and(|s| s.starts_with("stalled"))
    });
    std::fs::write(dir.join("go"), "").expect("go");
    daemon.wait_for("everything handled", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 50 && status["lag"] == 0 && status["state"] == "running"
    });
    server.freeze();
    daemon.wait_for("the frozen server shown", LIMIT, |_| {
        let status = test_status(&config);
        status["state"]
            .as_str()
            .is_some_and(|s| s.starts_with("waiting for the bus:"))
            && status["lag"].is_null()
    });
    server.thaw();
    crate::hmb::Producer::open(&url, false).send(&crate::hmb::messages(&["A"], &["T"], 50, 60));
    daemon.wait_for("running again, the new messages handled", LIMIT, |_| {
        let status = test_status(&config);
        count_lines(&out) == 60 && status["lag"] == 0 && status["state"] == "running"
    });
    daemon.terminate(LIMIT);
}
