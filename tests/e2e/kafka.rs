//! The Kafka plugin against librdkafka's mock cluster (the real protocol on loopback), with
//! Hermes-shaped records produced as hermes-server's kafka producer writes them.

use crate::common::*;
use crate::hermes::{expected_offsets, expected_state, saved_state};
use buslink_testkit::process::run_once;
use buslink_testkit::{fixture, KafkaMock, TestDir};
use serde_json::Value;

/// A config consuming `topic` on `mock`, with `extra` lines in `[consumer]`, more settings
/// and `rest` (handlers).
fn kafka_config(
    dir: &TestDir,
    mock: &KafkaMock,
    topic: &str,
    consumer_extra: &str,
    settings: &str,
    rest: &str,
) -> std::path::PathBuf {
    let settings = format!(
        "servers = \"{}\"\ntopic = \"{topic}\"\ngroup_id = \"hermes-test\"\n{settings}",
        mock.bootstrap()
    );
    let consumer = ConsumerSpec {
        plugin: "kafka",
        class: "KafkaConsumer",
        timeout_ms: 200,
        extra: consumer_extra,
        settings: &settings,
    };
    consumer_config(dir, consumer, rest)
}

fn hermes_on_kafka(dir: &TestDir, mock: &KafkaMock, use_first: bool) -> std::path::PathBuf {
    let hermes = format!("[consumer.hermes]\nenabled = true\nuse_first_initsync = {use_first}");
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"state\"\ntype = \"plugin\"\nplugin = \"statefiles\"\n\
         class = \"StateFilesHandler\"\nsettings = {{ dir = \"view\" }}\n",
        jsonl_handler("all", "")
    );
    kafka_config(dir, mock, "hermes", &hermes, "", &handlers)
}

#[test]
fn kafka_hermes_mode_bootstraps_as_the_real_client_would_and_resumes_exactly() {
    let mut mock = KafkaMock::start(1, &[("hermes", 1)]);
    let rows = fixture("hermes/bus-rows.jsonl");
    let produced = mock.command(&format!("produce-rows hermes 0 {}", rows.display()));
    assert_eq!(produced, "ok 163");
    // Kafka offsets start at 0: the fixture's msgid m is offset m - 1. hermes-client stores
    // the event offsets themselves and nextoffset = last + 1, so the sqlite bus's
    // (79, 140, 164) and (1, 55, 164) become (78, 139, 163) and (0, 54, 163).
    for (use_first, real) in [(false, (78, 139, 163)), (true, (0, 54, 163))] {
        let dir = TestDir::new("kafka-hermes");
        let config = hermes_on_kafka(&dir, &mock, use_first);
        let run1 = run_once(&config);
        assert_eq!(run1.code(), Some(0), "{run1}");
        let cache = read_cache(&dir);
        let got = (
            cache["initstartoffset"]["int"].as_i64(),
            cache["initstopoffset"]["int"].as_i64(),
            cache["next_offset"]["int"].as_i64(),
        );
        assert_eq!(
            got,
            (Some(real.0), Some(real.1), Some(real.2)),
            "use_first {use_first}: {cache}"
        );
        // The same events as on the sqlite bus, one offset lower.
        let (_, _, sqlite_offsets) = expected_offsets(use_first);
        let expected: Vec<i64> = sqlite_offsets.iter().map(|m| m - 1).collect();
        let lines = read_lines(&dir, "out/all.jsonl");
        assert_eq!(offsets(&lines), expected, "use_first {use_first}");
        assert_eq!(lines[0]["category"], Value::from("initsync"));
        assert_eq!(saved_state(&dir), expected_state(&sqlite_offsets));
        // Nothing twice.
        let run2 = run_once(&config);
        assert_eq!(run2.code(), Some(0), "{run2}");
        assert!(run2.stderr.contains("resumed at offset 163"), "{run2}");
        assert_eq!(offsets(&read_lines(&dir, "out/all.jsonl")), expected);
    }
}

#[test]
fn kafka_a_restart_resumes_after_the_last_event_handled() {
    let mut mock = KafkaMock::start(1, &[("events", 1)]);
    mock.command("produce events 25");
    let dir = TestDir::new("kafka-resume");
    let config = kafka_config(&dir, &mock, "events", "", "", &jsonl_handler("all", ""));
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(0), "{run1}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (0..25).collect::<Vec<_>>()
    );
    mock.command("produce events 10");
    let run2 = run_once(&config);
    assert_eq!(run2.code(), Some(0), "{run2}");
    assert!(run2.stderr.contains("resumed at offset 25"), "{run2}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(offsets(&lines), (0..35).collect::<Vec<_>>());
    // Each record as hermes-server wrote it: the key is the category, the value the event.
    assert_eq!(lines[30]["category"], Value::from("base"));
    assert_eq!(lines[30]["event"]["objpkey"], Value::from(30));
}

#[test]
fn kafka_a_topic_with_several_partitions_needs_the_partition_named() {
    let mut mock = KafkaMock::start(1, &[("wide", 3)]);
    mock.command("produce wide 9");
    let dir = TestDir::new("kafka-wide");
    let config = kafka_config(&dir, &mock, "wide", "", "", &jsonl_handler("all", ""));
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("the topic has 3 partitions: set `partition`"),
        "{run}"
    );
    let config = kafka_config(
        &dir,
        &mock,
        "wide",
        "",
        "partition = 1",
        &jsonl_handler("all", ""),
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    // Round robin: partition 1 holds events 1, 4, 7 at offsets 0, 1, 2.
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(offsets(&lines), vec![0, 1, 2]);
    let numbers: Vec<i64> = lines
        .iter()
        .map(|l| l["event"]["objpkey"].as_i64().expect("objpkey"))
        .collect();
    assert_eq!(numbers, vec![1, 4, 7]);
}

#[test]
fn kafka_a_hermes_client_cache_is_imported_and_consumption_goes_on_from_its_nextoffset() {
    let mut mock = KafkaMock::start(1, &[("hermes", 1)]);
    let rows = fixture("hermes/bus-rows.jsonl");
    mock.command(&format!("produce-rows hermes 0 {}", rows.display()));
    let dir = TestDir::new("kafka-import");
    let config = hermes_on_kafka(&dir, &mock, true);
    // What hermes-client's kafka consumer stores after offset 99 (the event offsets themselves;
    // nextoffset = last + 1).
    let client = dir.join("_hermes-client-app.json.gz");
    crate::hermes::write_client_cache(
        &client,
        serde_json::json!({"queueErrors": {}, "datamodelWarnings": {}, "exception": null,
                           "initstartoffset": 0, "initstopoffset": 54, "nextoffset": 100}),
    );
    let imported = buslink_testkit::process::run(
        &[
            "offsets",
            "import-hermes",
            "--config",
            &config.to_string_lossy(),
            &client.to_string_lossy(),
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(imported.code(), Some(0), "{imported}");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let (_, _, sqlite_offsets) = expected_offsets(true);
    let expected: Vec<i64> = sqlite_offsets
        .iter()
        .map(|m| m - 1)
        .filter(|o| *o >= 100)
        .collect();
    assert_eq!(offsets(&read_lines(&dir, "out/all.jsonl")), expected);
    // An offset the partition never had is refused (the bus is asked).
    crate::hermes::write_client_cache(
        &client,
        serde_json::json!({"initstartoffset": 0, "initstopoffset": 54, "nextoffset": 5000}),
    );
    let refused = buslink_testkit::process::run(
        &[
            "offsets",
            "import-hermes",
            "--config",
            &config.to_string_lossy(),
            &client.to_string_lossy(),
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused.stderr.contains("offset 5000 is not in"),
        "{refused}"
    );
}

#[test]
fn kafka_the_lag_behind_the_partition_end_is_in_the_progress_line() {
    let mut mock = KafkaMock::start(1, &[("slow", 1)]);
    mock.command("produce slow 30");
    let dir = TestDir::new("kafka-lag");
    // One event at a time, 100 ms each: the first progress lines find most of them waiting.
    let handlers = "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
                    command = [\"sh\", \"-c\", \"sleep 0.1\"]\n";
    let config = kafka_config(&dir, &mock, "slow", "batch_size = 1", "", handlers);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    let mut daemon = buslink_testkit::Daemon::run(&config);
    let lag_of = |line: &str| -> Option<u64> {
        let (_, rest) = line.split_once(", lag ")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let limit = std::time::Duration::from_secs(60);
    daemon.wait_for("a lag above 0", limit, |d| {
        d.stderr().lines().filter_map(lag_of).any(|lag| lag > 0)
    });
    daemon.wait_for("the lag back to 0", limit, |d| {
        d.stderr()
            .lines()
            .any(|l| l.contains("30 events in total") && lag_of(l) == Some(0))
    });
    assert_eq!(daemon.terminate(limit).code(), Some(0));
}
