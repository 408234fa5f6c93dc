//! The sqlite bus end to end: the real fixture bus, resuming, live appends, purges.

use crate::common::*;
use buslink_testkit::process::run_once;
use buslink_testkit::{fixture, hermes_events, Daemon, HermesBusWriter, TestDir};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// This file's tests run twice: as `sqlite_bus`, on the sqlite plugin's library, and as
/// `sqlite_bus_executable`, on its executable (`plugin = { command = [...] }`, the subprocess
/// protocol), the same tests asserting the same.
const EXECUTABLE: bool = ends_with(module_path!(), "_executable");

const fn ends_with(text: &str, end: &str) -> bool {
    let (text, end) = (text.as_bytes(), end.as_bytes());
    if end.len() > text.len() {
        return false;
    }
    let mut i = 0;
    while i < end.len() {
        if text[text.len() - end.len() + i] != end[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The config written, its plugin the executable when this is the `_executable` run.
fn on_transport(config: std::path::PathBuf) -> std::path::PathBuf {
    if EXECUTABLE {
        let text = std::fs::read_to_string(&config).expect("the config just written");
        assert!(text.contains("plugin = \"sqlite\""), "{text}");
        let text = text.edit(
            "plugin = \"sqlite\"",
            "plugin = { command = [\"buslink-plugin-sqlite\"] }",
        );
        std::fs::write(&config, text).expect("the config rewritten");
    }
    config
}

fn sqlite_config(
    dir: &TestDir,
    bus: &std::path::Path,
    extra: &str,
    rest: &str,
) -> std::path::PathBuf {
    on_transport(crate::common::sqlite_config(dir, bus, extra, rest))
}

fn consumer_config(dir: &TestDir, consumer: ConsumerSpec<'_>, rest: &str) -> std::path::PathBuf {
    on_transport(crate::common::consumer_config(dir, consumer, rest))
}

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
fn a_missing_bus_file_is_an_error_with_once_and_a_warned_wait_for_the_daemon() {
    let dir = TestDir::new("missing-bus");
    let bus = dir.join("later/bus.sqlite");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    // `--once` on a bus that is not there is no success: the error names the resolved path.
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains(&format!("bus database {} does not exist", bus.display())),
        "{run}"
    );
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 0);
    let check = buslink_testkit::process::run(
        &["check", "--connect", "--config", &config.to_string_lossy()],
        LIMIT,
    );
    assert_ne!(check.code(), Some(0), "{check}");
    assert!(
        check.stdout.contains("does not exist") || check.stderr.contains("does not exist"),
        "{check}"
    );

    // The daemon says so (and retries) until the producer creates the bus, then reads it.
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the warning", LIMIT, |d| {
        d.stderr().contains("does not exist") && d.stderr().contains("retrying")
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

    // Waiting on purpose: `wait_for_bus = true`, and `--once` finds an empty bus.
    let quiet = dir.join("quiet.toml");
    let text = std::fs::read_to_string(&config).expect("config").edit(
        "later/bus.sqlite\"",
        "nowhere/bus.sqlite\"\nwait_for_bus = true",
    );
    std::fs::write(&quiet, text).expect("config");
    let run = run_once(&quiet);
    assert_eq!(run.code(), Some(0), "{run}");
    // Not "drained": there was no bus to say so; the log says what was so.
    assert!(
        run.stderr
            .contains("does not exist yet (wait_for_bus = true): nothing to read now")
            && run
                .stderr
                .contains("the plugin cannot tell whether the bus is drained")
            && !run.stderr.contains("bus drained"),
        "{run}"
    );
    // The daemon shows the consumer waiting for its bus (503 on /ready), then running once
    // the producer made it.
    // (A state and an output of its own: the first daemon's cache is of another bus.)
    let text = std::fs::read_to_string(&quiet)
        .expect("config")
        .edit("state_dir = \"state\"", "state_dir = \"state-quiet\"")
        .edit("out/all.jsonl", "out/quiet.jsonl");
    std::fs::write(&quiet, format!("{text}\n{METRICS_ON_ANY_PORT}")).expect("config");
    let out = dir.join("out/quiet.jsonl");
    let mut daemon = Daemon::run(&quiet);
    daemon.wait_for("the metrics address", LIMIT, |d| {
        d.stderr().contains("metrics on http://")
    });
    let address = metrics_address(&daemon.stderr());
    let waiting = format!(
        "waiting for the bus: bus database {} does not exist yet (wait_for_bus = true)",
        dir.join("nowhere/bus.sqlite").display()
    );
    daemon.wait_for("waiting for the bus", LIMIT, |_| {
        let (code, body) = scrape(&address, "/ready");
        code == 503 && body.contains(&waiting)
    });
    std::fs::create_dir_all(dir.join("nowhere")).expect("dir");
    let mut writer = HermesBusWriter::open(&dir.join("nowhere/bus.sqlite")).expect("bus");
    writer.append_all(hermes_events(3)).expect("append");
    daemon.wait_for("running with the bus's events", LIMIT, |_| {
        scrape(&address, "/ready").0 == 200 && count_lines(&out) == 3
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

/// A bus with the Hermes table but no NOT NULL constraints (rows the real producer never
/// writes, to see what buslink does with them), holding `events` good rows.
fn loose_bus(dir: &TestDir, events: usize) -> std::path::PathBuf {
    let bus = dir.join("bus.sqlite");
    let connection = rusqlite::Connection::open(&bus).expect("bus created");
    connection
        .execute(
            "CREATE TABLE hermesmessages (msgid INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT, \
             timestamp REAL)",
            [],
        )
        .expect("table");
    for (data, timestamp) in hermes_events(events) {
        connection
            .execute(
                "INSERT INTO hermesmessages (data, timestamp) VALUES (?1, ?2)",
                (data, timestamp),
            )
            .expect("row");
    }
    bus
}

fn insert_raw(bus: &std::path::Path, data: &str, timestamp: &str) {
    rusqlite::Connection::open(bus)
        .and_then(|c| {
            c.execute(
                &format!(
                    "INSERT INTO hermesmessages (data, timestamp) VALUES ({data}, {timestamp})"
                ),
                [],
            )
        })
        .expect("raw row");
}

#[test]
fn a_row_whose_data_is_not_text_is_delivered_as_bytes_with_a_warning() {
    for (what, value, bytes) in [
        (
            "invalid UTF-8",
            "CAST(x'7b22ff227d' AS TEXT)",
            &b"{\"\xff\"}"[..],
        ),
        ("a blob", "x'7b7d'", &b"{}"[..]),
    ] {
        let dir = TestDir::new("bytes-row");
        let bus = loose_bus(&dir, 5);
        insert_raw(&bus, value, "1795345300.5");
        insert_raw(&bus, "'{\"evcategory\": \"base\"}'", "1795345301.0");
        let run = run_once(&sqlite_config(&dir, &bus, "", &jsonl_handler("all", "")));
        assert_eq!(run.code(), Some(0), "{what}: {run}");
        assert!(
            run.stderr
                .contains("the `data` of msgid 6 is not UTF-8 text; delivered as bytes"),
            "{what}: {run}"
        );
        let lines = read_lines(&dir, "out/all.jsonl");
        assert_eq!(offsets(&lines), (1..=7).collect::<Vec<_>>(), "{what}");
        let encoded = lines[5]["body_base64"].as_str().expect("bytes body");
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64"),
            bytes,
            "{what}: every byte kept"
        );
        let timestamp = lines[5]["timestamp"].as_str().unwrap_or_default();
        assert!(
            timestamp.starts_with("2026-11-22T11:01:40.5"),
            "{what}: {timestamp}"
        );
    }
}

#[test]
fn a_row_whose_timestamp_is_null_stops_the_run_naming_its_msgid_after_the_good_ones() {
    let dir = TestDir::new("null-timestamp");
    let bus = loose_bus(&dir, 5);
    insert_raw(&bus, "'{}'", "NULL");
    insert_raw(&bus, "'{}'", "1795345301.0");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    for _ in 0..2 {
        let run = run_once(&config);
        assert_eq!(run.code(), Some(1), "{run}");
        assert!(
            run.stderr
                .contains("the row of msgid 6 cannot be delivered: `timestamp` is Null"),
            "{run}"
        );
        assert!(run.stderr.contains(&bus.display().to_string()), "{run}");
        assert!(
            !run.stderr.contains("retrying"),
            "a data problem is not retried: {run}"
        );
        assert_eq!(
            offsets(&read_lines(&dir, "out/all.jsonl")),
            (1..=5).collect::<Vec<_>>()
        );
        assert_eq!(read_cache(&dir)["last_offset"]["int"], 5);
    }
}

#[test]
fn rows_purged_while_the_daemon_is_behind_are_a_gap_the_same_as_at_a_start() {
    for on_gap in ["warn", "stop"] {
        let dir = TestDir::new("live-gap");
        let bus = dir.join("bus.sqlite");
        let writer = HermesBusWriter::open(&bus).expect("bus");
        let events: Vec<_> = hermes_events(60).collect();
        for (data, timestamp) in &events[..16] {
            writer.append(data, *timestamp).expect("append");
        }
        let config = sqlite_config(
            &dir,
            &bus,
            &format!("on_gap = \"{on_gap}\""),
            &jsonl_handler("all", ""),
        );
        let out = dir.join("out/all.jsonl");
        let mut daemon = Daemon::run(&config);
        daemon.wait_for("the first 16", LIMIT, |_| count_lines(&out) >= 16);
        // Rows 17..=50 are written and purged by the producer's retention before the consumer
        // reads them (one transaction), then 51..=60 follow.
        let mut connection = rusqlite::Connection::open(&bus).expect("bus");
        let transaction = connection.transaction().expect("transaction");
        for (data, timestamp) in &events[16..50] {
            transaction
                .execute(
                    "INSERT INTO hermesmessages (data, timestamp) VALUES (?1, ?2)",
                    (data, timestamp),
                )
                .expect("row");
        }
        transaction
            .execute("DELETE FROM hermesmessages WHERE msgid <= 50", [])
            .expect("purge");
        transaction.commit().expect("commit");
        for (data, timestamp) in &events[50..] {
            writer.append(data, *timestamp).expect("append");
        }
        let gap = "gap on the bus: msgids 17 to 50 (34 events)";
        if on_gap == "warn" {
            daemon.wait_for("the rest", LIMIT, |_| count_lines(&out) >= 26);
            let run = daemon.terminate(LIMIT);
            assert_eq!(run.code(), Some(0), "{run}");
            assert!(run.stderr.contains(gap), "{run}");
            assert_eq!(
                offsets(&read_lines(&dir, "out/all.jsonl")),
                (1..=16).chain(51..=60).collect::<Vec<_>>()
            );
        } else {
            let run = daemon.finish(LIMIT);
            assert_eq!(run.code(), Some(1), "{run}");
            assert!(run.stderr.contains(gap), "{run}");
            // The same state after a restart: the same answer.
            let again = run_once(&config);
            assert_eq!(again.code(), Some(1), "{again}");
            assert!(again.stderr.contains(gap), "{again}");
            assert_eq!(
                offsets(&read_lines(&dir, "out/all.jsonl")),
                (1..=16).collect::<Vec<_>>()
            );
        }
    }
}

/// Bus A (`bus.sqlite`, 30 events) and bus B (`other.sqlite`): other events (an hour later)
/// under the same msgids, and more of them (40).
fn bus_and_another(dir: &TestDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let bus = dir.join("bus.sqlite");
    HermesBusWriter::open(&bus)
        .and_then(|mut w| w.append_all(hermes_events(30)))
        .expect("bus A");
    let other = dir.join("other.sqlite");
    let writer = HermesBusWriter::open(&other).expect("bus B");
    for (data, timestamp) in hermes_events(40) {
        writer.append(&data, timestamp + 3600.0).expect("append");
    }
    (bus, other)
}

/// A bus overwritten **in place** (the same file, other contents: `cp other.sqlite bus.sqlite`,
/// `cat other > bus`) while the daemon runs: noticed within about a second by looking at the
/// last event read again, the same error as a replaced file, never a silent resume into the
/// other bus's events.
#[test]
fn a_bus_overwritten_in_place_is_noticed_live_never_followed() {
    let dir = TestDir::new("bus-overwritten");
    let (bus, other) = bus_and_another(&dir);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("bus A read", LIMIT, |_| count_lines(&out) >= 30);
    let inode = |path: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("metadata"))
    };
    let before = inode(&bus);
    // In place: truncated and written through the same inode.
    std::fs::write(&bus, std::fs::read(&other).expect("bus B")).expect("overwritten");
    assert_eq!(inode(&bus), before);
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("holds another event at offset 30"),
        "{run}"
    );
    assert_eq!(count_lines(&out), 30, "nothing of bus B handled");
}

#[test]
fn a_bus_replaced_under_the_consumer_is_noticed_live_and_at_a_restart() {
    let dir = TestDir::new("bus-replaced");
    let (bus, other) = bus_and_another(&dir);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("bus A read", LIMIT, |_| count_lines(&out) >= 30);
    std::fs::rename(&other, &bus).expect("bus B moved over bus A");
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(1), "noticed within a poll: {run}");
    let another = "holds another event at offset 30";
    assert!(run.stderr.contains("the file was replaced"), "{run}");
    assert!(run.stderr.contains(another), "{run}");
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 30);

    // A restart on bus B: the same clear error, not a silent resume at offset 31.
    let again = run_once(&config);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(again.stderr.contains(another), "{again}");
    assert_eq!(count_lines(&out), 30);

    // A smaller bus under the path: beyond its end, named as such.
    let small = dir.join("small.sqlite");
    HermesBusWriter::open(&small)
        .and_then(|mut w| w.append_all(hermes_events(10)))
        .expect("small bus");
    std::fs::rename(&small, &bus).expect("small bus moved");
    let small_run = run_once(&config);
    assert_eq!(small_run.code(), Some(1), "{small_run}");
    assert!(
        small_run.stderr.contains("beyond the end of bus database")
            && small_run.stderr.contains("last offset 10"),
        "{small_run}"
    );
}

#[test]
fn a_table_without_autoincrement_is_read_like_the_hermes_plugin_reads_it() {
    let dir = TestDir::new("no-autoincrement");
    let bus = dir.join("bus.sqlite");
    let connection = rusqlite::Connection::open(&bus).expect("bus created");
    connection
        .execute(
            "CREATE TABLE hermesmessages (msgid INTEGER PRIMARY KEY, data TEXT NOT NULL, \
             timestamp REAL NOT NULL)",
            [],
        )
        .expect("table");
    let insert = |events: &[(String, f64)]| {
        for (data, timestamp) in events {
            connection
                .execute(
                    "INSERT INTO hermesmessages (data, timestamp) VALUES (?1, ?2)",
                    (data, timestamp),
                )
                .expect("row");
        }
    };
    let events: Vec<_> = hermes_events(8).collect();
    insert(&events[..5]);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(!run.stderr.contains("sqlite_sequence"), "{run}");
    insert(&events[5..]);
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=8).collect::<Vec<_>>()
    );
}

#[test]
fn a_gap_just_before_a_row_that_cannot_be_read_is_reported_once_then_the_row_stops_the_run() {
    let dir = TestDir::new("gap-then-bad-row");
    let bus = loose_bus(&dir, 10);
    insert_raw(&bus, "'{}'", "NULL");
    rusqlite::Connection::open(&bus)
        .and_then(|c| {
            c.execute(
                "DELETE FROM hermesmessages WHERE msgid BETWEEN 6 AND 10",
                [],
            )
        })
        .expect("purge");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    // 1..=5 delivered, the gap 6..=10 said once (never again at each poll), then the row
    // that cannot be delivered stops the run.
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.stderr.matches("gap on the bus: msgids 6 to 10").count(),
        1,
        "{run}"
    );
    assert!(
        run.stderr
            .contains("the row of msgid 11 cannot be delivered"),
        "{run}"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=5).collect::<Vec<_>>()
    );
}

#[test]
fn once_ends_as_soon_as_the_bus_is_drained_not_a_timeout_later() {
    let dir = TestDir::new("once-at-once");
    let bus = dir.join("bus.sqlite");
    HermesBusWriter::open(&bus)
        .and_then(|mut w| w.append_all(hermes_events(20)))
        .expect("bus");
    // A two-minute poll timeout: a run that waited for it would outlive run_once's limit.
    let consumer = ConsumerSpec {
        plugin: "sqlite",
        class: "SqliteConsumer",
        timeout_ms: 120_000,
        extra: "",
        settings: &format!("uri = \"{}\"", bus.display()),
    };
    let config = consumer_config(&dir, consumer, &jsonl_handler("all", ""));
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("bus drained"), "{run}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 20);
}
