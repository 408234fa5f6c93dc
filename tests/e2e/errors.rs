//! The error queue through the running daemon (`ctl errors`) and in its status.

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
fn the_error_queue_is_listed_retried_and_dropped_through_the_running_daemon() {
    let dir = TestDir::new("ctl-errors");
    let bus = bus_with(&dir, 20);
    let flag = dir.join("ok");
    let hook = dir.join("hook.jsonl");
    // The hook takes the SRVGroups events (offsets 2 to 5, one object each) only once `ok`
    // exists; until then they wait in the error queue (retried only when asked).
    let handler = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"test -e {} && cat >> {}\"]\n\
         match = {{ objtype = \"SRVGroups\" }}\nretry = {{ attempts = 1 }}\n\
         on_failure = \"error-queue\"\nretry_interval_ms = 3600000\n",
        flag.display(),
        hook.display()
    );
    let config = sqlite_config(&dir, &bus, "", &handler);
    let config_arg = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("four queued events", LIMIT, |_| {
        let status = status(&config);
        consumer_status(&status, "test")["error_queue"] == 4
            && consumer_status(&status, "test")["committed_offset"] == "20"
    });
    let listed = ctl(&config, &["errors", "list", "--json"]);
    assert_eq!(listed.code(), Some(0), "{listed}");
    let queued: Vec<Value> = serde_json::from_str(&listed.stdout).expect("JSON");
    let queued_offsets: Vec<i64> = queued
        .iter()
        .map(|q| q["offset"]["int"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(queued_offsets, vec![2, 3, 4, 5]);
    let ids: Vec<u64> = queued.iter().filter_map(|q| q["id"].as_u64()).collect();
    let text = ctl(&config, &["errors", "list"]);
    assert!(
        text.stdout.contains("consumer 'test': 4 queued event(s)"),
        "{text}"
    );
    // Beside the daemon, the offline command refuses and says where to go.
    let beside = buslink(&["errors", "retry", "--config", &config_arg]);
    assert_eq!(beside.code(), Some(1), "{beside}");
    assert!(beside.stderr.contains("buslink ctl"), "{beside}");

    std::fs::write(&flag, "").expect("flag");
    let one = ctl(&config, &["errors", "retry", &ids[0].to_string()]);
    assert_eq!(
        one.stdout, "consumer 'test': 1 queued event(s) handled, 3 left\n",
        "{one}"
    );
    let dropped = ctl(&config, &["errors", "drop", &ids[1].to_string()]);
    assert_eq!(
        dropped.stdout, "consumer 'test': dropped 1 event(s), 2 left\n",
        "{dropped}"
    );
    let missing = ctl(&config, &["errors", "drop", "999"]);
    assert_eq!(missing.code(), Some(2), "{missing}");
    assert!(missing.stderr.contains("no queued event #999"), "{missing}");
    let rest = ctl(&config, &["errors", "retry"]);
    assert_eq!(
        rest.stdout, "consumer 'test': 2 queued event(s) handled, 0 left\n",
        "{rest}"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "hook.jsonl")),
        vec![2, 4, 5],
        "the dropped event (3) was never handled"
    );
    let status = status(&config);
    assert_eq!(consumer_status(&status, "test")["error_queue"], 0);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    // The queue file says so too.
    let after = buslink(&["errors", "list", "--config", &config_arg]);
    assert!(after.stdout.contains("the error queue is empty"), "{after}");
}

#[test]
fn the_error_queue_in_status_follows_background_retries_and_orphans_are_named() {
    let dir = TestDir::new("queue-status");
    let bus = bus_with(&dir, 20);
    let flag = dir.join("ok");
    let handler = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"test -e {}\"]\n\
         match = {{ objtype = \"SRVGroups\" }}\nretry = {{ attempts = 1 }}\n\
         on_failure = \"error-queue\"\nretry_interval_ms = 100\n",
        flag.display()
    );
    let config = sqlite_config(&dir, &bus, "", &handler);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("four queued", LIMIT, |_| {
        consumer_status(&status(&config), "test")["error_queue"] == 4
    });
    // The cause goes away: the background retries drain the queue on an idle bus, and the
    // status follows.
    std::fs::write(&flag, "").expect("flag");
    daemon.wait_for("an empty queue in the status", LIMIT, |_| {
        consumer_status(&status(&config), "test")["error_queue"] == 0
    });
    daemon.terminate(LIMIT);
    // Events queued for a handler the config no longer has are named at the next start.
    std::fs::remove_file(&flag).expect("flag");
    append(&bus, 10);
    let once = buslink_testkit::process::run_once(&config);
    assert_eq!(once.code(), Some(0), "{once}");
    let renamed = std::fs::read_to_string(&config)
        .expect("config")
        .edit("name = \"hook\"", "name = \"renamed\"");
    std::fs::write(&config, renamed).expect("config");
    let again = buslink_testkit::process::run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert!(
        again
            .stderr
            .contains("event(s) of handler 'hook', which the config no longer has"),
        "{again}"
    );
}
