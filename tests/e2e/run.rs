//! `buslink run` as operators watch it: progress lines and JSON logs.

use crate::common::*;
use buslink_testkit::process::run;
use buslink_testkit::{Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn progress_lines_are_logged_on_the_configured_interval() {
    let dir = TestDir::new("progress");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a progress line", LIMIT, |d| {
        d.stderr().contains("progress:")
            && d.stderr()
                .contains("163 events in total, last committed offset 163")
    });
    // The sqlite plugin tells how far behind the bus's end it is: nothing left.
    daemon.wait_for("the lag", LIMIT, |d| {
        d.stderr()
            .lines()
            .any(|l| l.contains("last committed offset 163") && l.contains(", lag 0"))
    });
    assert_eq!(daemon.terminate(LIMIT).code(), Some(0));
}

#[test]
fn logs_can_be_json() {
    let dir = TestDir::new("json-logs");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let out = buslink(&[
        "--log-format",
        "json",
        "run",
        "--once",
        "--config",
        &config.to_string_lossy(),
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
        .collect();
    assert!(lines.iter().any(|l| l["fields"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("stopped (bus drained)"))));
}
