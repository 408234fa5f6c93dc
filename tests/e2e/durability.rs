//! Durability: commit cadence, crashes at any instant, and clean stops on either signal.

use crate::common::*;
use buslink_testkit::process::run_once;
use buslink_testkit::{hermes_events, Daemon, HermesBusWriter, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_kill_at_any_instant_leaves_a_valid_cache_and_loses_nothing() {
    kill_at_any_instant("background");
}

#[test]
fn a_kill_at_any_instant_with_fsync_at_each_commit() {
    kill_at_any_instant("each");
}

/// SIGKILL while committing every event: the cache is readable, never ahead of the handled
/// events and at most one event behind them; a restart delivers the rest.
fn kill_at_any_instant(fsync: &str) {
    let dir = TestDir::new("sigkill");
    let total = 3000;
    let bus = bus_with(&dir, total);
    let config = sqlite_config(
        &dir,
        &bus,
        "batch_size = 7",
        &(jsonl_handler("all", "") + &format!("[commit]\nevery_events = 1\nfsync = \"{fsync}\"\n")),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("some commits", LIMIT, |_| count_lines(&out) >= 100);
    daemon.signal(libc::SIGKILL);
    let killed = daemon.finish(LIMIT);
    assert_eq!(killed.code(), None, "killed by the signal: {killed}");

    // The cache is readable, never ahead of what the handler wrote, and (a commit per
    // event) at most the one event being handled behind it.
    let cache = read_cache(&dir);
    let committed = cache["last_offset"]["int"].as_i64().expect("an int offset");
    let handled = offsets(&read_lines_tolerant(&dir));
    assert!(
        committed >= 1
            && committed as usize <= handled.len()
            && handled.len() - committed as usize <= 1,
        "committed {committed}, handled {}",
        handled.len()
    );
    assert_eq!(
        handled[..committed as usize],
        (1..=committed).collect::<Vec<_>>()[..]
    );

    // The restart delivers everything after the commit, and the jsonl file, cut back to the
    // length committed with the offset, holds every event exactly once, each a whole line.
    let run = run_once(&sqlite_config(&dir, &bus, "", &jsonl_handler("all", "")));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=total as i64).collect::<Vec<_>>()
    );
}

/// The output lines, ignoring a last line torn by the kill.
fn read_lines_tolerant(dir: &TestDir) -> Vec<serde_json::Value> {
    dir.read("out/all.jsonl")
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[test]
fn the_cache_is_committed_on_the_time_cadence_while_running() {
    let dir = TestDir::new("cadence");
    let bus = bus_with(&dir, 25);
    let config = sqlite_config(
        &dir,
        &bus,
        "",
        &(jsonl_handler("all", "") + "[commit]\nevery_events = 1000000\nevery_ms = 100\n"),
    );
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a commit by time", LIMIT, |_| {
        read_cache(&dir)["last_offset"]["int"] == 25
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

#[test]
fn sigint_stops_cleanly_and_commits() {
    let dir = TestDir::new("sigint");
    let bus = bus_with(&dir, 40);
    let config = sqlite_config(
        &dir,
        &bus,
        "",
        &(jsonl_handler("all", "") + "[commit]\nevery_events = 1000000\nevery_ms = 3600000\n"),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("all events handled", LIMIT, |_| count_lines(&out) >= 40);
    // Before the first event only the jsonl file's starting length was committed.
    let before = read_cache(&dir);
    assert!(
        before.get("last_offset").is_none() && before["outputs"]["all"]["length"] == 0,
        "no offset committed before the stop: {before}"
    );
    daemon.signal(libc::SIGINT);
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("stop requested"), "{run}");
    assert_eq!(
        read_cache(&dir)["last_offset"]["int"],
        40,
        "committed on stop"
    );
}

#[test]
fn offsets_outside_the_bus_are_refused_with_the_valid_range() {
    let dir = TestDir::new("range");
    let config = sqlite_config(
        &dir,
        &fixture_bus(),
        "start = 500",
        &jsonl_handler("all", ""),
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    for text in [
        "offset 500 is beyond the end of bus database",
        "(last offset 163; the next event will be 164)",
        "seek()",
    ] {
        assert!(run.stderr.contains(text), "expected {text:?}:\n{run}");
    }
    let strings = sqlite_config(
        &dir,
        &fixture_bus(),
        "start = \"abc\"",
        &jsonl_handler("all", ""),
    );
    let run = run_once(&strings);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("offsets are integers"), "{run}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 0);
}

#[test]
fn a_cached_offset_that_was_purged_is_a_gap_stopped_or_warned_never_a_silent_skip() {
    let dir = TestDir::new("purged-cache");
    let bus = bus_with(&dir, 30);
    let config = |on_gap: &str| sqlite_config(&dir, &bus, on_gap, &jsonl_handler("all", ""));
    let first = run_once(&config(""));
    assert_eq!(first.code(), Some(0), "{first}");
    // Consumer stopped at 30; the producer writes 10 more and purges through 35.
    let mut writer = HermesBusWriter::open(&bus).expect("bus");
    writer.append_all(hermes_events(10)).expect("append");
    writer.purge_through(35).expect("purge");

    // on_gap = "stop": the run stops at the gap, naming it, and a restart stops there again.
    for _ in 0..2 {
        let run = run_once(&config("on_gap = \"stop\""));
        assert_eq!(run.code(), Some(1), "{run}");
        assert!(
            run.stderr
                .contains("gap on the bus: msgids 31 to 35 (5 events)"),
            "{run}"
        );
        assert_eq!(read_cache(&dir)["last_offset"]["int"], 30);
    }
    // The default outside Hermes mode, "warn": said, counted, and the run goes on.
    let run = run_once(&config(""));
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("gap on the bus: msgids 31 to 35 (5 events)")
            && run.stderr.contains("going on (on_gap = \"warn\")"),
        "{run}"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=30).chain(36..=40).collect::<Vec<_>>()
    );
}

#[test]
fn sigterm_with_a_slow_handler_and_a_deep_queue_stops_after_the_event_in_hand() {
    let dir = TestDir::new("stop-deep-queue");
    let bus = bus_with(&dir, 2000);
    let seen = dir.join("seen.jsonl");
    // The whole bus in one batch, and four more batches queued: 20 events/s at best.
    let handler = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", {:?}]\n\
         [commit]\nevery_events = 1000000\nevery_ms = 3600000\n",
        format!("cat >> {}; sleep 0.05", seen.display())
    );
    let config = sqlite_config(&dir, &bus, "batch_size = 100000", &handler);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a few events handled", LIMIT, |_| count_lines(&seen) >= 5);
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    let handled = offsets(&read_lines(&dir, "seen.jsonl"));
    assert!(handled.len() < 2000, "stopped early: {}", handled.len());
    assert_eq!(handled, (1..=handled.len() as i64).collect::<Vec<_>>());
    // Exactly what was handled is committed; the rest comes at the next start.
    assert_eq!(read_cache(&dir)["last_offset"]["int"], handled.len() as i64);
}

#[test]
fn sigterm_while_the_plugin_is_stuck_in_a_call_stops_within_the_grace_and_commits() {
    let dir = TestDir::new("stop-stuck-plugin");
    let consumer = ConsumerSpec {
        plugin: "faulty",
        class: "FaultyConsumer",
        timeout_ms: 100,
        extra: "",
        settings: "events = 20\nhang_at_end = true",
    };
    let config = consumer_config(
        &dir,
        consumer,
        &(jsonl_handler("all", "") + "[commit]\nevery_events = 1000000\nevery_ms = 3600000\n"),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 20 events", LIMIT, |_| count_lines(&out) >= 20);
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert!(
        stopped
            .stderr
            .contains("did not return from its call within 5 s of the stop"),
        "{stopped}"
    );
    assert_eq!(
        read_cache(&dir)["last_offset"]["int"],
        20,
        "committed on stop"
    );
}
