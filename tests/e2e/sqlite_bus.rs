//! The sqlite bus end to end: the real fixture bus, resuming, live appends, purges.

use crate::common::*;
use buslink_testkit::process::run_once;
use buslink_testkit::{fixture, hermes_events, Daemon, HermesBusWriter, TestDir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn fixture_bus_is_consumed_completely_and_in_order() {
    let dir = TestDir::new("fixture");
    let handlers = "[[handlers]]\nname = \"print\"\ntype = \"stdout\"\n".to_owned()
        + &jsonl_handler("all", "");
    let config = sqlite_config(&dir, &fixture_bus(), "", &handlers);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");

    let index = fixture_index();
    assert_eq!(index.len(), 163);
    let printed: Vec<Value> = run
        .lines()
        .iter()
        .map(|line| serde_json::from_str(line).expect("stdout lines are JSON"))
        .collect();
    let archived = read_lines(&dir, "out/all.jsonl");
    assert_eq!(printed, archived, "stdout and jsonl carry the same lines");
    assert_eq!(
        offsets(&printed),
        index.iter().map(|row| row.msgid).collect::<Vec<_>>()
    );
    for (line, row) in printed.iter().zip(&index) {
        assert_eq!(
            line["category"],
            row.category.as_str(),
            "msgid {}",
            row.msgid
        );
        assert_eq!(line["event"]["evcategory"], row.category.as_str());
        assert_eq!(
            line["event"]["eventtype"],
            row.eventtype.as_str(),
            "msgid {}",
            row.msgid
        );
        assert_eq!(line["event"]["objtype"].as_str(), row.objtype.as_deref());
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    // The first event's timestamp is the REAL column, to the microsecond.
    assert_eq!(printed[0]["timestamp"], "2026-11-22T11:01:11.747962Z");

    // The cache holds the same next offset as the real hermes-client's cache.
    let real: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("hermes/client-offset-cache.json"))
            .expect("client cache fixture"),
    )
    .expect("client cache is JSON");
    let cache = read_cache(&dir);
    assert_eq!(cache["next_offset"]["int"], real["content"]["nextoffset"]);
    assert_eq!(cache["last_offset"]["int"], 163);
    assert_eq!(cache["version"], 2);

    // Run again: nothing new, and it says where it resumed.
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(again.stdout, "");
    assert!(again.stderr.contains("resumed at offset 164"), "{again}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 163);
}

#[test]
fn sigterm_half_way_then_restart_delivers_every_event_exactly_once() {
    let dir = TestDir::new("sigterm");
    let bus = dir.join("bus.sqlite");
    let total = 5000;
    HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(hermes_events(total)))
        .expect("bus written");
    // One event per batch and a durable commit per event: slow enough to stop half-way.
    let slow = sqlite_config(
        &dir,
        &bus,
        "batch_size = 1",
        &(jsonl_handler("all", "") + "[commit]\nevery_events = 1\n"),
    );
    let mut daemon = Daemon::run(&slow);
    let out = dir.join("out/all.jsonl");
    daemon.wait_for("some events handled", LIMIT, |_| count_lines(&out) >= 20);
    let first = daemon.terminate(LIMIT);
    assert_eq!(first.code(), Some(0), "{first}");
    let first_count = count_lines(&out);
    assert!(
        first_count < total,
        "the stop came after everything was consumed"
    );
    let cache = read_cache(&dir);
    assert_eq!(
        cache["last_offset"]["int"], first_count as i64,
        "committed what was handled"
    );

    let fast = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let second = run_once(&fast);
    assert_eq!(second.code(), Some(0), "{second}");
    let delivered = offsets(&read_lines(&dir, "out/all.jsonl"));
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(delivered, expected, "every event exactly once, in order");
}

#[test]
fn rows_appended_while_waiting_are_delivered() {
    let dir = TestDir::new("append");
    let bus = dir.join("bus.sqlite");
    let writer = HermesBusWriter::open(&bus).expect("bus created");
    let events: Vec<(String, f64)> = hermes_events(40).collect();
    for (data, timestamp) in &events[..10] {
        writer.append(data, *timestamp).expect("append");
    }
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the first 10 events", LIMIT, |_| count_lines(&out) >= 10);
    for (data, timestamp) in &events[10..] {
        writer.append(data, *timestamp).expect("append");
    }
    daemon.wait_for("the 30 appended events", LIMIT, |_| count_lines(&out) >= 40);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=40).collect::<Vec<_>>()
    );
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 40);
}

#[test]
fn purge_and_vacuum_while_running_lose_nothing_after_the_purge_point() {
    let dir = TestDir::new("purge");
    let bus = dir.join("bus.sqlite");
    let mut writer = HermesBusWriter::open(&bus).expect("bus created");
    let events: Vec<(String, f64)> = hermes_events(90).collect();
    writer
        .append_all(events[..50].iter().cloned())
        .expect("append");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the first 50 events", LIMIT, |_| count_lines(&out) >= 50);
    // The producer's retention purge: head rows deleted, file rewritten by VACUUM.
    assert_eq!(writer.purge_through(45).expect("purge"), 45);
    for (data, timestamp) in &events[50..70] {
        writer.append(data, *timestamp).expect("append");
    }
    daemon.wait_for("events after the purge", LIMIT, |_| count_lines(&out) >= 70);
    writer.purge_through(69).expect("second purge");
    for (data, timestamp) in &events[70..] {
        writer.append(data, *timestamp).expect("append");
    }
    daemon.wait_for("events after the second purge", LIMIT, |_| {
        count_lines(&out) >= 90
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=90).collect::<Vec<_>>()
    );
}

#[test]
fn handlers_receive_exactly_what_their_match_selects() {
    let dir = TestDir::new("match");
    let handlers = [
        jsonl_handler("all", ""),
        jsonl_handler(
            "changes",
            r#"{ eventtype = ["added", "modified"], objtype = ["SRV*"] }"#,
        ),
        jsonl_handler("initsync", r#"{ category = "initsync" }"#),
        jsonl_handler(
            "members",
            r#"{ category = ["base"], objtype = "*Members" }"#,
        ),
        jsonl_handler(
            "removed_users",
            r#"{ eventtype = "removed", objtype = "SRVUsers" }"#,
        ),
    ]
    .join("\n");
    let config = sqlite_config(&dir, &fixture_bus(), "", &handlers);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");

    let index = fixture_index();
    let select = |keep: &dyn Fn(&IndexRow) -> bool| -> Vec<i64> {
        index
            .iter()
            .filter(|row| keep(row))
            .map(|row| row.msgid)
            .collect()
    };
    let objtype_is =
        |row: &IndexRow, f: &dyn Fn(&str) -> bool| row.objtype.as_deref().is_some_and(f);
    let expectations = [
        ("all", select(&|_| true)),
        (
            "changes",
            select(&|row| {
                ["added", "modified"].contains(&row.eventtype.as_str())
                    && objtype_is(row, &|t| t.starts_with("SRV"))
            }),
        ),
        ("initsync", select(&|row| row.category == "initsync")),
        (
            "members",
            select(&|row| row.category == "base" && objtype_is(row, &|t| t.ends_with("Members"))),
        ),
        (
            "removed_users",
            select(&|row| row.eventtype == "removed" && row.objtype.as_deref() == Some("SRVUsers")),
        ),
    ];
    for (name, expected) in expectations {
        assert!(!expected.is_empty(), "{name}: the fixture has such events");
        let got = offsets(&read_lines(&dir, &format!("out/{name}.jsonl")));
        assert_eq!(got, expected, "handler {name}");
    }
}

#[test]
fn start_end_skips_the_backlog_and_start_offset_begins_there() {
    let dir = TestDir::new("start");
    let bus = dir.join("bus.sqlite");
    let writer = HermesBusWriter::open(&bus).expect("bus created");
    let events: Vec<(String, f64)> = hermes_events(30).collect();
    for (data, timestamp) in &events[..20] {
        writer.append(data, *timestamp).expect("append");
    }
    let at = sqlite_config(&dir, &bus, "start = 15", &jsonl_handler("all", ""));
    let run = run_once(&at);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (15..=20).collect::<Vec<_>>()
    );

    let end_dir = TestDir::new("start-end");
    let config = sqlite_config(&end_dir, &bus, "start = \"end\"", &jsonl_handler("all", ""));
    let out = end_dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the consumer positioned at the end", LIMIT, |d| {
        d.stderr().contains("positioned; consuming")
    });
    for (data, timestamp) in &events[20..] {
        writer.append(data, *timestamp).expect("append");
    }
    daemon.wait_for("new events", LIMIT, |_| count_lines(&out) >= 1);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    let got = offsets(&read_lines(&end_dir, "out/all.jsonl"));
    assert!(
        !got.is_empty() && got.iter().all(|o| *o > 20),
        "backlog skipped: {got:?}"
    );
    let unique: BTreeSet<_> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates");
}

#[test]
fn a_missing_bus_file_is_waited_for() {
    let dir = TestDir::new("missing-bus");
    let bus = dir.join("later/bus.sqlite");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    // Drained at once: nothing there, nothing handled, a clean exit.
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 0);

    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the daemon started", LIMIT, |d| {
        d.stderr().contains("starting at")
    });
    std::fs::create_dir_all(dir.join("later")).expect("dir");
    let mut writer = HermesBusWriter::open(&bus).expect("bus created");
    writer.append_all(hermes_events(5)).expect("append");
    daemon.wait_for("events of the new bus", LIMIT, |_| count_lines(&out) >= 5);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=5).collect::<Vec<_>>()
    );
}

#[test]
fn a_row_that_is_not_text_stops_the_run_naming_its_msgid_after_the_good_ones() {
    for (what, value) in [
        ("invalid UTF-8", "CAST(x'7b22ff227d' AS TEXT)"),
        ("a blob", "x'7b7d'"),
    ] {
        let dir = TestDir::new("bad-row");
        let bus = dir.join("bus.sqlite");
        let writer = HermesBusWriter::open(&bus).expect("bus created");
        for (data, timestamp) in hermes_events(5) {
            writer.append(&data, timestamp).expect("append");
        }
        rusqlite::Connection::open(&bus)
            .and_then(|c| {
                c.execute(
                    &format!("INSERT INTO hermesmessages (data, timestamp) VALUES ({value}, 1.0)"),
                    [],
                )
            })
            .expect("bad row");
        let run = run_once(&sqlite_config(&dir, &bus, "", &jsonl_handler("all", "")));
        assert_eq!(run.code(), Some(1), "{what}: {run}");
        assert!(
            run.stderr.contains("the row of msgid 6 is not an event"),
            "{what}: {run}"
        );
        assert!(
            run.stderr.contains(&bus.display().to_string()),
            "{what}: {run}"
        );
        assert_eq!(
            offsets(&read_lines(&dir, "out/all.jsonl")),
            (1..=5).collect::<Vec<_>>(),
            "{what}"
        );
        assert_eq!(read_cache(&dir)["last_offset"]["int"], 5, "{what}");
    }
}
