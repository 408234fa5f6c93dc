//! Every consumer plugin shipped in this repository against the conformance kit
//! (`buslink-plugin-kit`): each bus filled with known events by the test, each class checked
//! rule by rule through the export shim, in the host's call order.

mod isolation;

use buslink_plugin_api::Offset;
use buslink_plugin_kit::{Bus, Kit, Known};
use buslink_testkit::{hermes_events, HermesBusWriter};
use std::time::Duration;

/// The category of a Hermes event's JSON text (`evcategory`).
fn category_of(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|value| value["evcategory"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The sqlite bus of the kit: 32 Hermes events, rows 10 to 12 deleted; and its kit.
fn sqlite_kit(dir: &std::path::Path) -> Kit {
    let writer = HermesBusWriter::open(&dir.join("bus.sqlite")).expect("a bus");
    // 26 initsync events, then base events: the last category's first event is the 27th.
    let mut events = Vec::new();
    for (json, timestamp) in hermes_events(32) {
        let msgid = writer.append(&json, timestamp).expect("an event written");
        events.push(Known {
            offset: Offset::Int(msgid),
            category: category_of(&json),
        });
    }
    // Rows 10 to 12 deleted under the consumer (a producer's cleanup): a gap before 13.
    let connection = rusqlite::Connection::open(dir.join("bus.sqlite")).expect("the bus");
    connection
        .execute(
            "DELETE FROM hermesmessages WHERE msgid BETWEEN 10 AND 12",
            (),
        )
        .expect("rows deleted");
    events.retain(|known| !matches!(known.offset, Offset::Int(10..=12)));
    // Beyond the next msgid. (A msgid before the oldest row is accepted by design: the rows
    // in between were purged, which the first read reports as a gap.)
    let bus = Bus {
        events,
        not_on_bus: vec![Offset::Int(40), Offset::Int(1000)],
        gap_before: Some((Offset::Int(13), Some(3))),
    };
    Kit::new(
        serde_json::json!({ "uri": "bus.sqlite", "poll_interval_ms": 10 }),
        dir,
        bus,
    )
    .timeout(Duration::from_millis(300))
    .bad_settings(serde_json::json!({ "uri": "" }), "uri")
    .bad_settings(
        serde_json::json!({ "uri": "bus.sqlite", "poll_intervall_ms": 10 }),
        "poll_intervall_ms",
    )
}

#[test]
fn the_sqlite_plugin_keeps_the_consumer_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    sqlite_kit(dir.path())
        .check::<buslink_sqlite::SqliteConsumer>()
        .assert_passed();
}

/// The same class as an executable (`buslink-plugin-sqlite`), over the subprocess protocol.
#[test]
fn the_sqlite_plugin_executable_keeps_the_consumer_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let program = buslink_testkit::build_dir().join("buslink-plugin-sqlite");
    assert!(
        program.is_file(),
        "{}: build the workspace first",
        program.display()
    );
    let report =
        sqlite_kit(dir.path()).check_executable(&[program.display().to_string()], "SqliteConsumer");
    report.assert_passed();
    assert_eq!(
        report.passed.len(),
        buslink_plugin_kit::Rule::ALL.len(),
        "{report:?}"
    );
}

/// The Python SDK's example (`sdk/python/examples/hermes_sqlite.py`, written from the
/// protocol document alone) on the same bus, through `python3`.
#[test]
fn the_python_sdk_s_sqlite_example_keeps_the_consumer_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let script = buslink_testkit::workspace_root().join("sdk/python/examples/hermes_sqlite.py");
    let report = sqlite_kit(dir.path()).check_executable(
        &["python3".to_owned(), script.display().to_string()],
        "PythonSqliteConsumer",
    );
    report.assert_passed();
    assert_eq!(
        report.passed.len(),
        buslink_plugin_kit::Rule::ALL.len(),
        "{report:?}"
    );
}

#[test]
fn the_example_plugin_keeps_the_consumer_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let lines = ["{\"n\":1}", "{\"n\":22}", "{\"n\":333}", "{\"n\":4444}"];
    let mut text = String::new();
    let mut events = Vec::new();
    for line in lines {
        events.push(Known {
            offset: Offset::Int(text.len() as i64),
            category: "line".into(),
        });
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(dir.path().join("bus.jsonl"), &text).expect("the bus written");
    let bus = Bus {
        events,
        // Inside the first line, and the end of the file: no line starts there.
        not_on_bus: vec![Offset::Int(3), Offset::Int(text.len() as i64)],
        gap_before: None,
    };
    Kit::new(serde_json::json!({ "path": "bus.jsonl" }), dir.path(), bus)
        .timeout(Duration::from_millis(300))
        .bad_settings(serde_json::json!({ "path": "" }), "path")
        .check::<buslink_example::JsonLinesConsumer>()
        .assert_passed();
}

/// The HMB server with 12 messages on queue Q, and the kit of a consumer of it.
fn hmb_kit(server: &buslink_hmb_server::RunningServer, dir: &std::path::Path) -> Kit {
    use buslink_hmb_server::Incoming;
    let topics = ["PICK", "ORIGIN", "AMP"];
    let mut events = Vec::new();
    for n in 0..12i64 {
        let topic = topics[n as usize % topics.len()];
        let seq = server
            .publish(
                "kit",
                Incoming::new("NOTICE", "Q")
                    .topic(topic)
                    .data(serde_json::json!({ "n": n })),
            )
            .expect("published")
            .expect("a seq");
        events.push(Known {
            offset: Offset::Int(seq),
            category: topic.into(),
        });
    }
    let bus = Bus {
        events,
        not_on_bus: vec![Offset::Int(1000)],
        gap_before: None,
    };
    let settings = |url: &str| {
        serde_json::json!({
            "url": url, "heartbeat": 1, "retry_wait_ms": 20, "retry_wait_max_ms": 200,
            "queues": { "Q": {} }
        })
    };
    Kit::new(settings(&server.bus_url("kit")), dir, bus)
        .timeout(Duration::from_millis(500))
        .bad_settings(settings("not a url"), "url")
}

#[test]
fn the_hmb_plugin_keeps_the_consumer_contract() {
    use buslink_hmb_server::{Server, Settings};
    let server = Server::start(Settings::for_tests()).expect("the HMB server starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    hmb_kit(&server, dir.path())
        .check::<buslink_hmb::HmbConsumer>()
        .assert_passed();
}

/// The same class as an executable (`buslink-plugin-hmb`), over the subprocess protocol.
#[test]
fn the_hmb_plugin_executable_keeps_the_consumer_contract() {
    use buslink_hmb_server::{Server, Settings};
    let server = Server::start(Settings::for_tests()).expect("the HMB server starts");
    let dir = tempfile::tempdir().expect("a temp dir");
    let program = buslink_testkit::build_dir().join("buslink-plugin-hmb");
    assert!(
        program.is_file(),
        "{}: build the workspace first",
        program.display()
    );
    hmb_kit(&server, dir.path())
        .check_executable(&[program.display().to_string()], "HmbConsumer")
        .assert_passed();
}

/// The Kafka plugin in assign mode (as hermes-client reads: one partition, the position kept
/// by buslink) on librdkafka's mock cluster, with the fixture bus produced as hermes-server
/// does (key = category, offsets from 0); the kit of a consumer of it.
fn kafka_assign_kit(mock: &mut buslink_testkit::KafkaMock, dir: &std::path::Path) -> Kit {
    let rows_file = buslink_testkit::fixture("hermes/bus-rows.jsonl");
    let produced = mock.command(&format!("produce-rows hermes 0 {}", rows_file.display()));
    let rows = std::fs::read_to_string(&rows_file).expect("the fixture rows");
    let events: Vec<Known> = rows
        .lines()
        .enumerate()
        .map(|(offset, line)| {
            let row: serde_json::Value = serde_json::from_str(line).expect("a row");
            Known {
                offset: Offset::Int(offset as i64),
                category: category_of(row["data"].as_str().unwrap_or_default()),
            }
        })
        .collect();
    assert_eq!(produced, format!("ok {}", events.len()));
    let bus = Bus {
        not_on_bus: vec![Offset::Int(events.len() as i64 + 10)],
        gap_before: None,
        events,
    };
    let settings = |servers: &str| serde_json::json!({ "servers": servers, "topic": "hermes", "group_id": "kit" });
    Kit::new(settings(mock.bootstrap()), dir, bus)
        .timeout(Duration::from_millis(500))
        .bad_settings(
            serde_json::json!({ "servers": mock.bootstrap(), "group_id": "kit" }),
            "topic",
        )
}

#[test]
fn the_kafka_plugin_in_assign_mode_keeps_the_consumer_contract() {
    let mut mock = buslink_testkit::KafkaMock::start(1, &[("hermes", 1)]);
    let dir = tempfile::tempdir().expect("a temp dir");
    kafka_assign_kit(&mut mock, dir.path())
        .check::<buslink_kafka::KafkaConsumer>()
        .assert_passed();
}

/// The same class as an executable (`buslink-plugin-kafka`), over the subprocess protocol.
#[test]
fn the_kafka_plugin_executable_in_assign_mode_keeps_the_consumer_contract() {
    let mut mock = buslink_testkit::KafkaMock::start(1, &[("hermes", 1)]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let program = buslink_testkit::build_dir().join("buslink-plugin-kafka");
    assert!(
        program.is_file(),
        "{}: build the workspace first",
        program.display()
    );
    kafka_assign_kit(&mut mock, dir.path())
        .check_executable(&[program.display().to_string()], "KafkaConsumer")
        .assert_passed();
}

/// The Kafka plugin in group mode: the group keeps the position, so the kit reads from where
/// the group starts a new member (the oldest record) and exempts the positioning rules. Each
/// rule gets a group of its own (a member joining a group just left waits for the group to
/// forget the last one).
#[test]
fn the_kafka_plugin_in_group_mode_keeps_the_consumer_contract_but_the_seek_rules() {
    use buslink_plugin_kit::Rule;
    let mut mock = buslink_testkit::KafkaMock::start(1, &[("events", 1)]);
    assert_eq!(mock.command("produce events 12 0"), "ok 12");
    // Group mode's offsets name topic, partition and offset.
    let events: Vec<Known> = (0..12)
        .map(|offset| Known {
            offset: Offset::String(format!("events:0:{offset}")),
            category: "base".into(),
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temp dir");
    for rule in [
        Rule::ReadsEveryEventInOrder,
        Rule::SmallBatchesLoseNothing,
        Rule::StopWhenDrainedEndsWithEveryEvent,
        Rule::TimeoutIsHonoured,
    ] {
        let report = Kit::new(
            serde_json::json!({
                "servers": mock.bootstrap(), "mode": "group", "topic": "events",
                "group_id": format!("kit-{rule:?}")
            }),
            dir.path(),
            Bus {
                events: events.clone(),
                not_on_bus: Vec::new(),
                gap_before: None,
            },
        )
        // A new member waits for the group's assignment (seconds on the mock): a poll may
        // wait that long for its first events.
        .timeout(Duration::from_secs(10))
        .bus_keeps_the_position()
        .only(rule)
        .check::<buslink_kafka::KafkaConsumer>();
        report.assert_passed();
        assert_eq!(report.passed, [rule], "{report:?}");
    }
}

/// An unchanged Hermes-style plugin directory (`tests/fixture-plugins/hermes/sqlitelike`),
/// served by the Python side of buslink as the daemon runs it, on the kit's sqlite bus without
/// its gap (a Hermes plugin cannot report one).
#[test]
fn a_hermes_plugin_served_by_the_python_side_keeps_the_consumer_contract() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = buslink_testkit::workspace_root();
    let writer = HermesBusWriter::open(&dir.path().join("bus.sqlite")).expect("a bus");
    let mut events = Vec::new();
    for (json, timestamp) in hermes_events(32) {
        let msgid = writer.append(&json, timestamp).expect("an event written");
        events.push(Known {
            offset: Offset::Int(msgid),
            category: category_of(&json),
        });
    }
    let bus = Bus {
        events,
        not_on_bus: vec![Offset::Int(40), Offset::Int(1000)],
        gap_before: None,
    };
    let command: Vec<String> = [
        "python3",
        "-I",
        "-B",
        "-c",
        buslink::plugin::python_sdk::BOOTSTRAP,
        &root.join("sdk/python").display().to_string(),
        "--plugin-dir",
        &root
            .join("tests/fixture-plugins/hermes/sqlitelike")
            .display()
            .to_string(),
        "--serve-as",
        "SqliteLikeConsumerPlugin",
    ]
    .iter()
    .map(|part| (*part).to_owned())
    .collect();
    let report = Kit::new(serde_json::json!({ "uri": "bus.sqlite" }), dir.path(), bus)
        .timeout(Duration::from_millis(300))
        .check_executable(&command, "SqliteLikeConsumerPlugin");
    report.assert_passed();
    // Not checked, and only these: gaps (a Hermes plugin cannot report one) and settings
    // errors naming their key (Hermes plugins check settings with Cerberus, when installed).
    let skipped: Vec<_> = report.skipped.iter().map(|(rule, _)| *rule).collect();
    assert_eq!(
        skipped,
        [
            buslink_plugin_kit::Rule::SettingsErrorsNameTheKey,
            buslink_plugin_kit::Rule::GapsAreReported
        ],
        "{report:?}"
    );
    assert_eq!(
        report.passed.len() + skipped.len(),
        buslink_plugin_kit::Rule::ALL.len(),
        "{report:?}"
    );
}
