//! The host's side of a plugin executable (plugin-api's `subprocess`) against real children:
//! version ranges, garbage on stdout, a child that exits, one frozen by SIGSTOP, one killed by
//! signal 9. Each child is a real process in a group of its own.

use buslink_plugin_api::subprocess::{CallLimits, Spec, SubprocessConsumer};
use buslink_plugin_api::{Consumer, ErrorKind, EventBatch, Offset, PollStatus};
use std::time::Duration;

fn misbehaving(args: &[&str]) -> Spec {
    let program = buslink_testkit::build_dir().join("buslink-misbehaving-plugin");
    assert!(
        program.is_file(),
        "{}: build the workspace first",
        program.display()
    );
    let mut command = vec![program.display().to_string()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    Spec {
        command,
        env: Vec::new(),
        class: "Misbehaving".into(),
        settings: serde_json::json!({}),
        config_dir: std::env::temp_dir(),
        limits: CallLimits {
            call: Duration::from_secs(10),
            grace: Duration::from_millis(500),
        },
        trace_frames: false,
    }
}

fn offsets(batch: &EventBatch) -> Vec<i64> {
    batch
        .iter()
        .filter_map(|e| e.offset.to_owned().as_int())
        .collect()
}

#[test]
fn a_plugin_whose_versions_do_not_overlap_the_host_s_is_refused_naming_both_ranges() {
    let Err(error) = SubprocessConsumer::start(misbehaving(&["--protocol", "5", "7"])) else {
        panic!("a plugin speaking 5 to 7 was accepted");
    };
    // Not transient: another build of the plugin is needed, a restart would not help.
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    assert!(
        error
            .message()
            .contains("this plugin speaks 5 to 7, the host 1"),
        "{error}"
    );
}

#[test]
fn an_older_plugin_whose_range_overlaps_is_served_at_the_highest_common_version() {
    let consumer =
        SubprocessConsumer::start(misbehaving(&["--protocol", "0", "3"])).expect("served");
    assert_eq!(consumer.hello().chosen, 1);
    assert_eq!(
        (consumer.hello().protocol.min, consumer.hello().protocol.max),
        (0, 3)
    );
}

#[test]
fn garbage_on_stdout_is_an_error_naming_the_bytes_and_the_next_open_starts_another_child() {
    let mut consumer =
        SubprocessConsumer::start(misbehaving(&["--garbage-at", "open"])).expect("started");
    let first = consumer.pid();
    let error = consumer.open().expect_err("garbage is no answer");
    assert!(error.kind().is_transient(), "{error}");
    assert!(
        error.message().contains("\"hell\""),
        "the bytes are named: {error}"
    );
    // The next session is a new child (which misbehaves the same way: started, named again).
    let again = consumer.open().expect_err("the new child misbehaves too");
    assert!(again.message().contains("\"hell\""), "{again}");
    assert_eq!(consumer.starts(), 2);
    assert_ne!(consumer.pid(), first);
}

#[test]
fn a_child_that_exits_at_open_is_a_transient_error_with_its_exit_status() {
    let mut consumer =
        SubprocessConsumer::start(misbehaving(&["--exit-at", "open", "3"])).expect("started");
    let error = consumer.open().expect_err("the child exits");
    assert!(error.kind().is_transient(), "{error}");
    assert!(error.message().contains("exited with status 3"), "{error}");
}

#[test]
fn a_child_s_noisy_stderr_neither_blocks_nor_kills_it() {
    // Bytes that are not UTF-8, a line of 100 KiB and 500 lines at once: the host drains them
    // all (logging at most its rate), and the child goes on answering.
    let mut consumer =
        SubprocessConsumer::start(misbehaving(&["--noisy-stderr"])).expect("started");
    consumer.open().expect("open, after the noise");
    consumer.seek_to_beginning().expect("positioned");
    let mut batch = EventBatch::new(10, 1 << 20);
    assert_eq!(
        consumer.poll(&mut batch).expect("a poll"),
        PollStatus::Ready
    );
    assert_eq!(offsets(&batch), [0, 1, 2]);
    assert_eq!(consumer.starts(), 1, "the same child throughout");
}

/// The sqlite class as an executable on a bus of `events` Hermes events.
fn sqlite_child(dir: &std::path::Path, events: usize) -> SubprocessConsumer {
    let writer = buslink_testkit::HermesBusWriter::open(&dir.join("bus.sqlite")).expect("a bus");
    for (json, timestamp) in buslink_testkit::hermes_events(events) {
        writer.append(&json, timestamp).expect("an event");
    }
    let program = buslink_testkit::build_dir().join("buslink-plugin-sqlite");
    let mut consumer = SubprocessConsumer::start(Spec {
        command: vec![program.display().to_string()],
        env: Vec::new(),
        class: "SqliteConsumer".into(),
        settings: serde_json::json!({ "uri": "bus.sqlite", "poll_interval_ms": 10 }),
        config_dir: dir.to_path_buf(),
        limits: CallLimits {
            call: Duration::from_secs(10),
            grace: Duration::from_millis(500),
        },
        trace_frames: false,
    })
    .expect("the sqlite executable starts");
    consumer
        .set_timeout(Some(Duration::from_millis(200)))
        .expect("a timeout");
    consumer.open().expect("opened");
    consumer.seek_to_beginning().expect("positioned");
    consumer
}

#[test]
fn a_child_frozen_by_sigstop_is_killed_after_its_poll_s_time_and_replaced() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut consumer = sqlite_child(dir.path(), 5);
    let frozen = consumer.pid();
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(frozen as i32, libc::SIGSTOP) }, 0);
    let mut batch = EventBatch::new(10, 1 << 20);
    let started = std::time::Instant::now();
    let error = consumer
        .poll(&mut batch)
        .expect_err("a frozen child answers nothing");
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    assert!(
        error
            .message()
            .contains("did not answer poll within 700 ms"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Killed with its group: the pid is gone (or a zombie reaped), and a new child serves.
    // SAFETY: signal 0 only asks whether the pid exists.
    assert_ne!(
        unsafe { libc::kill(frozen as i32, 0) },
        0,
        "the frozen child is gone"
    );
    consumer.open().expect("a new child");
    assert_ne!(consumer.pid(), frozen);
    consumer
        .seek(&Offset::Int(3))
        .expect("positioned where the host says");
    assert_eq!(
        consumer.poll(&mut batch).expect("a poll"),
        PollStatus::Ready
    );
    assert_eq!(offsets(&batch), [3, 4, 5]);
}

#[test]
fn a_child_killed_by_signal_9_is_named_and_the_next_open_resumes_where_the_host_says() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut consumer = sqlite_child(dir.path(), 5);
    let mut batch = EventBatch::new(2, 1 << 20);
    assert_eq!(
        consumer.poll(&mut batch).expect("a poll"),
        PollStatus::Ready
    );
    assert_eq!(offsets(&batch), [1, 2]);
    let killed = consumer.pid();
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(killed as i32, libc::SIGKILL) }, 0);
    batch.clear();
    let error = consumer
        .poll(&mut batch)
        .expect_err("a dead child answers nothing");
    assert!(error.kind().is_transient(), "{error}");
    assert!(error.message().contains("killed by signal 9"), "{error}");
    consumer.open().expect("a new child");
    assert_ne!(consumer.pid(), killed);
    consumer
        .seek_after(&Offset::Int(2))
        .expect("after the last handled");
    batch.clear();
    assert_eq!(
        consumer.poll(&mut batch).expect("a poll"),
        PollStatus::Ready
    );
    assert_eq!(offsets(&batch), [3, 4]);
    assert_eq!(
        consumer.counters()[1],
        ("plugin_process_starts".to_owned(), 2)
    );
}

#[test]
fn a_batch_read_ahead_is_handed_over_next_counted_in_the_lag_and_dropped_by_a_seek() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut consumer = sqlite_child(dir.path(), 12);
    let mut batch = EventBatch::new(4, 1 << 20);
    let mut poll = |consumer: &mut SubprocessConsumer| {
        batch.clear();
        assert_eq!(
            consumer.poll(&mut batch).expect("a poll"),
            PollStatus::Ready
        );
        offsets(&batch)
    };
    // A full batch: the next one is read ahead while this one is handled.
    assert_eq!(poll(&mut consumer), [1, 2, 3, 4]);
    // The lag counts from what was handed over, not from what the child read ahead.
    assert_eq!(consumer.lag(), Some(8));
    assert_eq!(poll(&mut consumer), [5, 6, 7, 8]);
    assert_eq!(consumer.lag(), Some(4));
    // A seek drops what was read ahead.
    consumer.seek(&Offset::Int(2)).expect("a seek");
    assert_eq!(poll(&mut consumer), [2, 3, 4, 5]);
    // A find reads on from the last event handed over, not from the child's read-ahead.
    let mut found = EventBatch::new(1, 1 << 20);
    assert!(consumer
        .find_next_event_of_category("initsync", &mut found)
        .expect("a find"));
    assert_eq!(offsets(&found), [6]);
    assert_eq!(poll(&mut consumer), [7, 8, 9, 10]);
    assert_eq!(consumer.starts(), 1, "one child throughout");
}
