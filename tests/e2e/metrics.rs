//! The metrics and health endpoints (`[metrics] listen`): the exposition, `/health`, `/ready`.

use crate::common::*;
use buslink_testkit::{Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `GET http://ADDRESS/PATH`: (status, body).
#[test]
fn metrics_and_health_are_served_and_move_with_the_events() {
    let dir = TestDir::new("metrics");
    // A handler that fails on base events and dead-letters them, beside the archive.
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"refuse\"\ntype = \"exec\"\ncommand = [\"false\"]\n\
         match = {{ category = \"base\" }}\non_failure = \"dead-letter\"\n\
         retry = {{ attempts = 2, base_ms = 1 }}\n",
        jsonl_handler("all", "")
    );
    let config = sqlite_config(&dir, &fixture_bus(), "", &handlers);
    append_to(&config, METRICS_ON_ANY_PORT);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the metrics address", LIMIT, |d| {
        d.stderr().contains("metrics on http://")
    });
    let stderr = daemon.stderr();
    let address = metrics_address(&stderr);
    // Every event handled, counted by category; the failures counted per outcome.
    daemon.wait_for("the events in the metrics", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        sample(
            &text,
            "buslink_events_total{consumer=\"test\",category=\"base\"}",
        ) == Some(46.0)
    });
    let (status, text) = scrape(&address, "/metrics");
    assert_eq!(status, 200);
    let expect = [
        ("buslink_events_total{consumer=\"test\",category=\"initsync\"}", 117.0),
        (
            "buslink_handler_events_total{consumer=\"test\",handler=\"all\",outcome=\"success\"}",
            163.0,
        ),
        (
            "buslink_handler_events_total{consumer=\"test\",handler=\"refuse\",outcome=\"retry\"}",
            46.0,
        ),
        (
            "buslink_handler_events_total{consumer=\"test\",handler=\"refuse\",outcome=\"failure\"}",
            46.0,
        ),
        (
            "buslink_handler_events_total{consumer=\"test\",handler=\"refuse\",outcome=\"dead_lettered\"}",
            46.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    daemon.wait_for("a commit in the metrics", LIMIT, |_| {
        let (_, text) = scrape(&address, "/metrics");
        sample(&text, "buslink_commits_total{consumer=\"test\"}").is_some_and(|n| n >= 1.0)
            && sample(&text, "buslink_lag_events{consumer=\"test\"}") == Some(0.0)
    });
    let (_, text) = scrape(&address, "/metrics");
    let committed_at = sample(
        &text,
        "buslink_last_commit_timestamp_seconds{consumer=\"test\"}",
    )
    .expect("a commit time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - committed_at).abs() < 600.0,
        "{committed_at} vs {now}"
    );
    assert_eq!(scrape(&address, "/health"), (200, "ok\n".to_owned()));
    assert_eq!(scrape(&address, "/ready"), (200, "ready\n".to_owned()));
    assert_eq!(scrape(&address, "/nope").0, 404);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

#[test]
fn after_a_restart_status_and_metrics_show_the_offset_committed_before_it() {
    let dir = TestDir::new("status-restart");
    let bus = bus_with(&dir, 5);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let once = buslink_testkit::process::run_once(&config);
    assert_eq!(once.code(), Some(0), "{once}");
    append_to(&config, METRICS_ON_ANY_PORT);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a running consumer", LIMIT, |_| {
        consumer_status(&status(&config), "test")["state"] == "running"
    });
    // Nothing new on the bus: what is shown is what the cache holds.
    let test = consumer_status(&status(&config), "test");
    assert_eq!(test["committed_offset"], "5", "{test}");
    assert!(test["committed_at"].is_string(), "{test}");
    let stderr = daemon.stderr();
    let address = metrics_address(&stderr);
    let text = reqwest::blocking::get(format!("http://{address}/metrics"))
        .and_then(|r| r.text())
        .expect("metrics");
    let last_commit = sample(
        &text,
        "buslink_last_commit_timestamp_seconds{consumer=\"test\"}",
    )
    .expect("the last commit's time");
    assert!(last_commit > 1.7e9, "{text}");
    daemon.terminate(LIMIT);
}
