//! `buslink top` in a real terminal (tmux, 80x24): what it shows equals `ctl status --json`
//! at that moment, its keys pause and resume the selected consumer (seen through `ctl status`),
//! a consumer whose bus keeps the position is read-only, it scrolls through more consumers
//! than rows, and it exits cleanly on q, on Ctrl-C and when the daemon goes away.

use crate::common::*;
use buslink_testkit::tmux::Tmux;
use buslink_testkit::{buslink_bin, Daemon, TestDir};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// `buslink top` on `config`, then `echo "top exited CODE"`; after a line is typed (Enter), the
/// same again; then a bounded wait that keeps the window open to be read.
fn top_twice(config: &Path) -> String {
    let top = format!(
        "{} top --config {}",
        buslink_bin().display(),
        config.display()
    );
    format!(
        "{top}; echo \"top exited $?\"; read line; {top}; echo \"top again exited $?\"; sleep 60"
    )
}

/// The row of `consumer` on the screen, split on blanks.
fn row<'a>(screen: &'a str, consumer: &str) -> Vec<&'a str> {
    screen
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|words| words.first() == Some(&consumer))
        .unwrap_or_else(|| panic!("no row for {consumer}:\n{screen}"))
}

fn state_label(state: &str) -> &str {
    state.split([':', ' ', '(']).next().unwrap_or(state)
}

/// Each consumer's row against its `ctl status --json` object: the same state, events/s, lag,
/// committed offset and error queue, and the commit's age within the second that may pass
/// between the two looks.
fn assert_rows_match(screen: &str, status: &Value) {
    let consumers = status["consumers"].as_array().expect("consumers");
    for c in consumers {
        let name = c["consumer"].as_str().expect("a name");
        let row = row(screen, name);
        let shown = |value: &Value| match value {
            Value::Null => "?".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            row[1],
            state_label(c["state"].as_str().expect("state")),
            "{screen}\n{c}"
        );
        assert_eq!(
            row[2],
            format!("{:.1}", c["events_per_second"].as_f64().expect("events/s")),
            "{screen}\n{c}"
        );
        assert_eq!(row[3], shown(&c["lag"]), "{screen}\n{c}");
        assert_eq!(row[4], shown(&c["committed_offset"]), "{screen}\n{c}");
        let age: f64 = row[5]
            .strip_suffix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("an age in seconds: {row:?}"));
        let truth = c["committed_age_seconds"].as_f64().expect("an age");
        assert!((age - truth).abs() <= 2.0, "{age} vs {truth}\n{screen}");
        assert_eq!(row[6], c["error_queue"].to_string(), "{screen}\n{c}");
    }
}

fn state_of(config: &Path, consumer: &str) -> String {
    consumer_status(&status(config), consumer)["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn top_shows_what_ctl_status_says_and_its_keys_pause_and_resume_the_selected_consumer() {
    let dir = TestDir::new("top");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 20), bus(&dir, "b.sqlite", 30));
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
            faulty_consumer("group", "events = 5\nowns_position = true"),
        ],
    );
    let mut daemon = Daemon::run(&config);
    // Everything handled and committed, the events/s window (ten seconds) empty again: what
    // the view shows then holds still but for the commit's age.
    daemon.wait_for("an idle daemon", LIMIT, |_| {
        let status = status(&config);
        [("alpha", "20"), ("beta", "30"), ("group", "5")]
            .iter()
            .all(|(name, offset)| {
                let c = consumer_status(&status, name);
                c["committed_offset"] == *offset && c["events_per_second"] == 0.0
            })
    });
    let tmux = Tmux::start(dir.path(), 80, 24, &top_twice(&config));
    tmux.wait_for("the three consumers", LIMIT, |screen| {
        ["alpha ", "beta ", "group "]
            .iter()
            .all(|name| screen.lines().any(|line| line.starts_with(name)))
    });
    let screen = tmux.screen();
    let truth = status(&config);
    assert_rows_match(&screen, &truth);
    assert!(screen.contains("3 consumer(s)"), "{screen}");
    assert!(screen.contains("p pause  r resume"), "{screen}");
    // The selected consumer (the first) in full below the table.
    assert!(
        screen.contains("alpha: running (20 events handled in this run)"),
        "{screen}"
    );
    assert!(
        screen.contains("plugin sqlite class SqliteConsumer; committed 20 at "),
        "{screen}"
    );

    // Down, p: beta pauses (alpha does not); r: it resumes.
    tmux.keys(&["Down"]);
    tmux.wait_for("beta selected", LIMIT, |s| s.contains("beta: running"));
    tmux.keys(&["p"]);
    daemon.wait_for("beta paused", LIMIT, |_| {
        state_of(&config, "beta") == "paused"
    });
    assert_eq!(state_of(&config, "alpha"), "running");
    tmux.wait_for("beta's row says paused", LIMIT, |s| {
        row(s, "beta")[1] == "paused"
    });
    append(&bus_b, 5);
    tmux.keys(&["r"]);
    daemon.wait_for("beta resumed and on", LIMIT, |_| {
        let beta = consumer_status(&status(&config), "beta");
        beta["state"] == "running" && beta["committed_offset"] == "35"
    });
    tmux.wait_for("beta's row shows 35", LIMIT, |s| row(s, "beta")[4] == "35");

    // group's bus keeps the position: read-only, and the view says so; p changes nothing.
    tmux.keys(&["Down"]);
    tmux.wait_for("group selected", LIMIT, |s| {
        s.contains("(read-only: the bus keeps the position)")
    });
    tmux.keys(&["p"]);
    tmux.wait_for("the refusal", LIMIT, |s| {
        s.contains("group is read-only here: its bus keeps the position")
    });
    assert_eq!(state_of(&config, "group"), "running");

    // q quits, then Ctrl-C quits the second view: both exit 0 with the terminal given back.
    tmux.keys(&["q"]);
    tmux.wait_for("the first view gone", LIMIT, |s| {
        s.contains("top exited 0") && !s.contains("consumer(s)")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the second view", LIMIT, |s| s.contains("3 consumer(s)"));
    tmux.keys(&["C-c"]);
    tmux.wait_for("the second view gone", LIMIT, |s| {
        s.contains("top exited 0") && s.contains("top again exited 0")
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

#[test]
fn top_scrolls_through_more_consumers_than_rows_and_exits_when_the_daemon_goes() {
    let dir = TestDir::new("top-scroll");
    let names: Vec<String> = (1..=30).map(|n| format!("c{n:02}")).collect();
    let entries: Vec<String> = names
        .iter()
        .map(|name| faulty_consumer(name, "events = 1"))
        .collect();
    let config = several(&dir, "", &entries);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("30 consumers running", LIMIT, |_| {
        let status = status(&config);
        names
            .iter()
            .all(|name| consumer_status(&status, name)["committed_offset"] == "1")
    });
    let tmux = Tmux::start(dir.path(), 80, 24, &top_twice(&config));
    let has_row = |screen: &str, name: &str| screen.lines().any(|l| l.starts_with(name));
    let screen = tmux.wait_for("the first rows", LIMIT, |s| has_row(s, "c01"));
    assert!(!has_row(&screen, "c30"), "{screen}");
    assert!(screen.contains("consumers 1-"), "{screen}");
    assert!(screen.contains(" of 30"), "{screen}");
    tmux.keys(&["End"]);
    let screen = tmux.wait_for("the last rows", LIMIT, |s| has_row(s, "c30"));
    assert!(!has_row(&screen, "c01"), "{screen}");
    assert!(screen.contains("-30 of 30"), "{screen}");
    assert!(screen.contains("c30: running"), "{screen}");
    // Every line fits the 80 columns (tmux would wrap a longer one).
    assert_eq!(screen.lines().count(), 24, "{screen}");

    // The daemon goes: the view ends, says why, exits 1.
    assert_eq!(ctl(&config, &["quit"]).code(), Some(0));
    let screen = tmux.wait_for("the view gone", LIMIT, |s| s.contains("top exited 1"));
    assert!(screen.contains("error: the daemon went away"), "{screen}");
    daemon.finish(LIMIT);
}
