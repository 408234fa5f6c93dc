//! `buslink offsets show|set|reset`, and what the consumer's lock refuses while it runs.

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn offsets_show_set_and_reset() {
    let dir = TestDir::new("offsets");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let config_arg = config.to_string_lossy().into_owned();
    let show = buslink(&["offsets", "show", "--config", &config_arg]);
    assert_eq!(show.code(), Some(0), "{show}");
    assert!(show.stdout.contains("no committed offset"), "{show}");

    assert_eq!(run_once(&config).code(), Some(0));
    let show = buslink(&["offsets", "show", "--config", &config_arg]);
    assert!(
        show.stdout
            .contains("last handled offset 163, next offset 164; 163 events handled"),
        "{show}"
    );
    let json = buslink(&["offsets", "show", "--json", "--config", &config_arg]);
    let record: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(record["last_offset"]["int"], 163);

    // An offset the bus does not have is refused, saying where the bus ends.
    let beyond = buslink(&["offsets", "set", "--config", &config_arg, "500"]);
    assert_ne!(beyond.code(), Some(0), "{beyond}");
    assert!(
        beyond
            .stderr
            .contains("offset 500 is beyond the end of bus database")
            && beyond.stderr.contains("(last offset 163;"),
        "{beyond}"
    );
    let json = buslink(&["offsets", "show", "--json", "--config", &config_arg]);
    let unchanged: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(unchanged["last_offset"]["int"], 163, "not set");

    // Move back: the next run starts at 150.
    let set = buslink(&["offsets", "set", "--config", &config_arg, "150"]);
    assert_eq!(set.code(), Some(0), "{set}");
    assert!(
        set.stdout.contains("the next start begins at offset 150"),
        "{set}"
    );
    std::fs::remove_file(dir.join("out/all.jsonl")).expect("reset output");
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (150..=163).collect::<Vec<_>>()
    );

    // Reset: the next run starts at `start` (the beginning).
    let reset = buslink(&["offsets", "reset", "--config", &config_arg]);
    assert_eq!(reset.code(), Some(0), "{reset}");
    assert!(!dir.join(CACHE_FILE).exists());
    assert!(read_cache(&dir).is_null());
    std::fs::remove_file(dir.join("out/all.jsonl")).expect("reset output");
    assert_eq!(run_once(&config).code(), Some(0));
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 163);
}

#[test]
fn offsets_changes_and_a_second_daemon_are_refused_while_the_consumer_runs() {
    let dir = TestDir::new("offsets-locked");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let config_arg = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the consumer running", LIMIT, |d| {
        d.stderr().contains("positioned; consuming")
    });
    for args in [
        vec!["offsets", "set", "--config", &config_arg, "5"],
        vec!["offsets", "reset", "--config", &config_arg],
        vec!["run", "--once", "--config", &config_arg],
    ] {
        let out = buslink(&args);
        assert_eq!(out.code(), Some(1), "{args:?}: {out}");
        assert!(
            out.stderr
                .contains("consumer 'test' is in use by another buslink process"),
            "{out}"
        );
    }
    // Showing is allowed.
    assert_eq!(
        buslink(&["offsets", "show", "--config", &config_arg]).code(),
        Some(0)
    );
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert_eq!(
        buslink(&["offsets", "set", "--config", &config_arg, "5"]).code(),
        Some(0)
    );
}

#[test]
fn offsets_show_gives_every_consumer_of_a_config_with_several() {
    let dir = TestDir::new("offsets-several");
    let first = bus(&dir, "first.sqlite", 7);
    let second = bus(&dir, "second.sqlite", 3);
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("first", &first),
            sqlite_consumer("second", &second),
        ],
    );
    let config_arg = config.to_string_lossy().into_owned();
    // Before any run: both said, none committed.
    let none = run(&["offsets", "show", "--config", &config_arg], LIMIT);
    assert_eq!(none.code(), Some(0), "{none}");
    assert!(
        none.stdout
            .contains("consumer 'first': no committed offset")
            && none
                .stdout
                .contains("consumer 'second': no committed offset"),
        "{none}"
    );
    let ran = run_once(&config);
    assert_eq!(ran.code(), Some(0), "{ran}");
    let text = run(&["offsets", "show", "--config", &config_arg], LIMIT);
    assert_eq!(text.code(), Some(0), "{text}");
    assert!(
        text.stdout
            .contains("consumer 'first': last handled offset 7")
            && text
                .stdout
                .contains("consumer 'second': last handled offset 3"),
        "{text}"
    );
    let json = run(
        &["offsets", "show", "--json", "--config", &config_arg],
        LIMIT,
    );
    assert_eq!(json.code(), Some(0), "{json}");
    let all: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let shown: Vec<(String, i64)> = all["consumers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            (
                c["consumer"].as_str().unwrap_or_default().to_owned(),
                c["record"]["last_offset"]["int"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(shown, [("first".to_owned(), 7), ("second".to_owned(), 3)]);
    // One named: its record alone, as for a config of one consumer.
    let one = run(
        &[
            "offsets",
            "show",
            "--json",
            "--consumer",
            "second",
            "--config",
            &config_arg,
        ],
        LIMIT,
    );
    assert_eq!(one.code(), Some(0), "{one}");
    let record: serde_json::Value = serde_json::from_str(&one.stdout).expect("JSON");
    assert_eq!(record["last_offset"]["int"], 3);
}
