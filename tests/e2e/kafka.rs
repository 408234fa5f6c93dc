//! The Kafka plugin against librdkafka's mock cluster (the real protocol on loopback), with
//! Hermes-shaped records produced as hermes-server's kafka producer writes them.

use crate::common::*;
use crate::hermes::{expected_offsets, expected_state, saved_state};
use buslink_testkit::process::run_once;
use buslink_testkit::{fixture, KafkaMock, TestDir};
use serde_json::Value;

/// A config consuming `topic` on `mock`, with `extra` lines in `[consumer]`, more settings
/// and `rest` (handlers).
pub(crate) fn kafka_config(
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
    let imported = crate::hermes::import(&config, &client, false);
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
    let refused = crate::hermes::import(&config, &client, false);
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

/// A group member that holds no partition yet (the mock keeps the first assignment for its 3 s
/// initial rebalance delay) cannot tell how many events wait for it: its progress lines say
/// `lag unknown`, never `lag 0` while 30 events are on its topic and none was handled; once it
/// holds the partition the lag is counted again and ends at 0 with every event handled.
#[test]
fn kafka_a_group_member_holding_no_partition_shows_its_lag_unknown_not_0() {
    let mut mock = KafkaMock::start(1, &[("one", 1)]);
    mock.command("produce one 30");
    let dir = TestDir::new("kafka-group-lag");
    let config = one_partition_member(&dir, &mock, "lag-group", 10, "", "");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    let mut daemon = buslink_testkit::Daemon::run(&config);
    let limit = std::time::Duration::from_secs(60);
    daemon.wait_for("every event handled, lag 0", limit, |d| {
        d.stderr()
            .lines()
            .any(|l| l.contains("30 events in total") && l.contains(", lag 0,"))
    });
    let stderr = daemon.stderr();
    let before: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("progress: ") && l.contains(" 0 events in total"))
        .collect();
    assert!(
        !before.is_empty(),
        "no progress line before the first assignment:\n{stderr}"
    );
    // Before the assignment `unknown`; between it and the first event handled (a moment) the
    // 30 waiting: never 0.
    for line in &before {
        assert!(
            !line.contains(", lag 0,"),
            "30 events wait, none handled, yet: {line}"
        );
    }
    assert!(
        before.iter().any(|l| l.contains(", lag unknown,")),
        "no `lag unknown` before the first assignment:\n{stderr}"
    );
    assert_eq!(daemon.terminate(limit).code(), Some(0));
}

/// A member that the group's rebalance keeps without a partition for longer than it would
/// wait for a broker (max(timeout, 5 s)) says so: `waiting for the bus: ... no partition for
/// N s, waiting for a rebalance` (one WARN), and `running` again once the group assigns it
/// partitions (one INFO), never `running` in between. The hold-up is real: a second member
/// joins, and the mock cluster keeps the group in its join phase for the group's
/// `session.timeout.ms` less 1 s (15 s here), as a broker does while a member that stopped
/// answering has not rejoined. What A's own log says of its partitions is the truth the states
/// are checked against: given up before the WARN, assigned again before the INFO. B, the
/// plugin in a child process, waits for its first assignment the same way. Every event is
/// handled once by the two members.
#[test]
fn kafka_a_group_member_held_up_by_a_long_rebalance_shows_waiting_then_running_again() {
    let limit = std::time::Duration::from_secs(60);
    let mut mock = KafkaMock::start(1, &[("held", 2)]);
    mock.command("produce held 20");
    let session = "\"session.timeout.ms\" = 15000\n";
    let (dir_a, dir_b) = (TestDir::new("kafka-held-a"), TestDir::new("kafka-held-b"));
    let config_a = topic_member(&dir_a, &mock, "held", "held-group", 10, session, "");
    let mut a = buslink_testkit::Daemon::run(&config_a);
    let out_a = dir_a.join("out/all.jsonl");
    a.wait_for(
        "A holding both partitions, the 20 events handled",
        limit,
        |_| group_offsets(&out_a).len() == 20,
    );
    // B runs the plugin as a child process (the subprocess protocol's `held_up`).
    let config_b = topic_member(&dir_b, &mock, "held", "held-group", 10, session, "");
    let text = std::fs::read_to_string(&config_b).expect("config");
    assert!(text.contains("plugin = \"kafka\""), "{text}");
    let text = text.replacen(
        "plugin = \"kafka\"",
        "plugin = { command = [\"buslink-plugin-kafka\"] }",
        1,
    );
    std::fs::write(&config_b, text).expect("config");
    let mut b = buslink_testkit::Daemon::run(&config_b);
    let waiting = "consumer now waiting for the bus: ";
    a.wait_for("A waiting for the rebalance", limit, |d| {
        d.stderr().contains(waiting)
    });
    a.wait_for("A running again", limit, |d| {
        d.stderr().contains("consumer running again (was waiting)")
    });
    let stderr = a.stderr();
    let at = |needle: &str| stderr.find(needle).unwrap_or(usize::MAX);
    let warn = at(waiting);
    let line = stderr[warn..].lines().next().unwrap_or_default();
    assert!(
        line.contains("consumer group held-group")
            && line.contains("no partition for")
            && line.contains("waiting for a rebalance"),
        "{line}"
    );
    // Given up before the WARN; no partition assigned between it and the INFO; assigned again
    // before the INFO.
    let given_up = at("partitions given up: held:");
    let running = at("consumer running again (was waiting)");
    assert!(
        given_up < warn,
        "A gave nothing up before it waited:\n{stderr}"
    );
    let assigned_again = stderr[warn..]
        .find("partitions assigned: held:")
        .map(|i| warn + i)
        .unwrap_or(usize::MAX);
    assert!(
        assigned_again < running,
        "A running again before it held a partition:\n{stderr}"
    );
    assert_eq!(
        stderr.matches(waiting).count(),
        1,
        "one WARN for the whole hold-up:\n{stderr}"
    );
    // B waited for its first assignment the same way, and both then share the work: the 20
    // new events are handled, every event once.
    b.wait_for("B running", limit, |d| {
        d.stderr().contains("partitions assigned: held:")
    });
    mock.command("produce held 20");
    let out_b = dir_b.join("out/all.jsonl");
    a.wait_for("the 40 events handled", limit, |_| {
        group_offsets(&out_a).len() + group_offsets(&out_b).len() >= 40
    });
    let mut all: Vec<(i32, i64)> = group_offsets(&out_a);
    all.extend(group_offsets(&out_b));
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        all.len(),
        group_offsets(&out_a).len() + group_offsets(&out_b).len(),
        "an event handled twice"
    );
    assert_eq!(all.len(), 40);
    assert!(
        b.stderr().contains(waiting) && b.stderr().contains("waiting for its first assignment"),
        "B:\n{}",
        b.stderr()
    );
    assert_eq!(b.terminate(limit).code(), Some(0));
    assert_eq!(a.terminate(limit).code(), Some(0));
}

/// The offsets (`TOPIC:PARTITION:OFFSET`) of the whole lines of a `jsonl` file, in file order
/// (a daemon killed mid-write may leave a torn last line: not counted).
fn group_offsets(path: &std::path::Path) -> Vec<(i32, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    whole
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("a whole line is JSON");
            let offset = value["offset"].as_str().expect("a string offset");
            let mut parts = offset.rsplitn(3, ':');
            let at: i64 = parts.next().and_then(|p| p.parse().ok()).expect("offset");
            let partition: i32 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .expect("partition");
            (partition, at)
        })
        .collect()
}

/// A group member on topic `scale` (`batch_size` events a poll) running as a daemon, its
/// partitions assigned and the 200 records produced then all handled: (config, daemon, its
/// jsonl output).
fn member_with_200_handled(
    dir: &TestDir,
    mock: &mut KafkaMock,
    batch_size: usize,
    limit: std::time::Duration,
) -> (
    std::path::PathBuf,
    buslink_testkit::Daemon,
    std::path::PathBuf,
) {
    let config = group_member(dir, mock, batch_size);
    let mut daemon = buslink_testkit::Daemon::run(&config);
    daemon.wait_for("the member's partitions", limit, |d| {
        d.stderr().contains("partitions assigned: scale:")
    });
    mock.command("produce scale 200");
    let out = dir.join("out/all.jsonl");
    daemon.wait_for("the 200 records handled", limit, |_| {
        group_offsets(&out).len() == 200
    });
    (config, daemon, out)
}

/// A group member: its own directory, state and `jsonl` file; one group and topic.
fn group_member(dir: &TestDir, mock: &KafkaMock, batch: usize) -> std::path::PathBuf {
    let settings = "mode = \"group\"\n\
                    [consumer.settings.properties]\n\
                    \"session.timeout.ms\" = 6000\n\
                    \"heartbeat.interval.ms\" = 500\n";
    let consumer = ConsumerSpec {
        plugin: "kafka",
        class: "KafkaConsumer",
        timeout_ms: 200,
        extra: &format!("batch_size = {batch}"),
        settings: &format!(
            "servers = \"{}\"\ntopics = [\"scale\"]\ngroup_id = \"scale-group\"\n{settings}",
            mock.bootstrap()
        ),
    };
    let text = std::fs::read_to_string(consumer_config(dir, consumer, &jsonl_handler("all", "")))
        .expect("config");
    dir.write("buslink.toml", format!("stats_interval_s = 1\n{text}"))
}

#[test]
fn kafka_a_consumer_group_shares_partitions_and_survives_a_member_killed_and_a_broker_outage() {
    const EVENTS: i64 = 20_000;
    const BATCH: usize = 20;
    let limit = std::time::Duration::from_secs(120);
    let mut mock = KafkaMock::start(1, &[("scale", 4)]);
    let (dir_a, dir_b) = (TestDir::new("kafka-group-a"), TestDir::new("kafka-group-b"));
    let mut a = buslink_testkit::Daemon::run(&group_member(&dir_a, &mock, BATCH));
    let mut b = buslink_testkit::Daemon::run(&group_member(&dir_b, &mock, BATCH));
    // Both members hold partitions before the events come.
    let holds_partitions = |d: &buslink_testkit::Daemon| {
        d.stderr()
            .lines()
            .rev()
            .find(|l| l.contains("partitions assigned:"))
            .is_some_and(|l| !l.ends_with("partitions assigned: none"))
    };
    a.wait_for("member A's partitions", limit, holds_partitions);
    b.wait_for("member B's partitions", limit, |d| {
        holds_partitions(d) && d.stderr().contains("partitions assigned: scale:")
    });
    a.wait_for("a rebalance sharing the partitions with B", limit, |d| {
        d.stderr()
            .lines()
            .filter(|l| l.contains("partitions assigned: scale:"))
            .count()
            >= 1
            && holds_partitions(d)
    });
    mock.command(&format!("produce scale {EVENTS}"));
    let out_a = dir_a.join("out/all.jsonl");
    let out_b = dir_b.join("out/all.jsonl");
    // Member A is killed part-way through its share.
    a.wait_for("member A part-way", limit, |_| {
        group_offsets(&out_a).len() >= 500
    });
    a.signal(libc::SIGKILL);
    let handled_by_a = a.finish(limit);
    assert_eq!(handled_by_a.status.code(), None, "killed: {handled_by_a}");
    // The broker goes down under member B and comes back.
    mock.command("down 1");
    let progress_lines = |d: &buslink_testkit::Daemon| d.stderr().matches("progress:").count();
    let seen = progress_lines(&b);
    b.wait_for("two progress lines with the broker down", limit, |d| {
        progress_lines(d) >= seen + 2
    });
    mock.command("up 1");
    // B takes over A's partitions (after the group's session timeout) and reads them all.
    let all = |a: &[(i32, i64)], b: &[(i32, i64)]| {
        let mut union: std::collections::BTreeSet<(i32, i64)> = a.iter().copied().collect();
        union.extend(b.iter().copied());
        union.len() as i64
    };
    let lines_a = group_offsets(&out_a);
    b.wait_for(
        "every event handled by one member or the other",
        limit,
        |_| all(&lines_a, &group_offsets(&out_b)) == EVENTS,
    );
    let run_b = b.terminate(limit);
    assert_eq!(run_b.code(), Some(0), "{run_b}");
    let lines_b = group_offsets(&out_b);
    // Every event once at least.
    assert_eq!(all(&lines_a, &lines_b), EVENTS);
    // Per partition, each member handled the records in offset order: the first time it
    // handled each one, offsets only go up (a record handled again comes from a window whose
    // position was not committed to the group, below).
    for lines in [&lines_a, &lines_b] {
        for partition in 0..4 {
            let mut seen = std::collections::BTreeSet::new();
            let firsts: Vec<i64> = lines
                .iter()
                .filter(|(p, o)| *p == partition && seen.insert(*o))
                .map(|(_, o)| *o)
                .collect();
            assert!(
                firsts.windows(2).all(|w| w[0] < w[1]),
                "partition {partition}: records handled out of order"
            );
        }
    }
    // Duplicates only from uncommitted windows: the batch A was killed in, and the batches
    // whose commit to the group failed (a rebalance in progress), each said in the log.
    let failed_commits = handled_by_a
        .stderr
        .matches("cannot commit the group's offsets")
        .count()
        + run_b
            .stderr
            .matches("cannot commit the group's offsets")
            .count()
        + run_b
            .stderr
            .matches("could not be committed before the partitions were given up")
            .count();
    let duplicates = lines_a.len() + lines_b.len() - EVENTS as usize;
    assert!(
        duplicates <= BATCH * (1 + failed_commits),
        "{duplicates} events handled twice, more than the uncommitted windows allow ({} \
         batches of {BATCH})",
        1 + failed_commits
    );
    assert!(!lines_a.is_empty() && lines_b.len() > lines_a.len());
    assert!(
        run_b.stderr.contains("partitions assigned: scale:"),
        "{run_b}"
    );
}

#[test]
fn kafka_group_mode_once_drains_resumes_from_the_group_and_refuses_hermes_mode() {
    let mut mock = KafkaMock::start(1, &[("scale", 4)]);
    mock.command("produce scale 400");
    let dir = TestDir::new("kafka-group-once");
    let config = group_member(&dir, &mock, 50);
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(0), "{run1}");
    let out = dir.join("out/all.jsonl");
    assert_eq!(group_offsets(&out).len(), 400);
    // The position lives in the group; the cache records it for people.
    let cache = read_cache(&dir);
    let next = cache["next_offset"]["string"].as_str().expect("a position");
    assert_eq!(
        next, "scale:0=100,scale:1=100,scale:2=100,scale:3=100",
        "{cache}"
    );
    // More events: the next run goes on from the group's committed offsets.
    mock.command("produce scale 40");
    let run2 = run_once(&config);
    assert_eq!(run2.code(), Some(0), "{run2}");
    let lines = group_offsets(&out);
    assert_eq!(lines.len(), 440, "each record once");
    let unique: std::collections::BTreeSet<_> = lines.iter().collect();
    assert_eq!(unique.len(), 440);
    // The position is the group's: moving the cache's offset is refused, even with --force.
    for force in [false, true] {
        let mut args = vec!["offsets", "set", "--config"];
        let config_text = config.to_string_lossy().into_owned();
        args.push(&config_text);
        args.push("scale:0:5");
        if force {
            args.push("--force");
        }
        let refused = buslink_testkit::process::run(&args, std::time::Duration::from_secs(60));
        assert_eq!(refused.code(), Some(2), "{refused}");
        assert!(
            refused
                .stderr
                .contains("its bus keeps the position (a consumer group)"),
            "{refused}"
        );
    }
    // A replay reads with the plugin's reader class, which never joins the group: every
    // partition from its beginning, each record once.
    let replay = buslink_testkit::process::run(
        &[
            "replay",
            "--config",
            &config.to_string_lossy(),
            "--from",
            "beginning",
            "--dry-run",
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(replay.code(), Some(0), "{replay}");
    assert!(
        replay
            .stderr
            .contains("handler all: would deliver 440 events"),
        "{replay}"
    );
    // Hermes mode needs offsets buslink keeps.
    let hermes = dir.write(
        "hermes.toml",
        format!(
            "{}\n[consumer.hermes]\nenabled = true\n",
            std::fs::read_to_string(&config).expect("config")
        ),
    );
    let refused = run_once(&hermes);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("keeps its position on the bus (a consumer group)"),
        "{refused}"
    );
}

#[test]
fn kafka_start_at_the_end_reads_only_what_comes_after() {
    let mut mock = KafkaMock::start(1, &[("late", 1)]);
    mock.command("produce late 10");
    let dir = TestDir::new("kafka-end");
    let config = kafka_config(
        &dir,
        &mock,
        "late",
        "start = \"end\"",
        "",
        &jsonl_handler("all", ""),
    );
    let mut daemon = buslink_testkit::Daemon::run(&config);
    let limit = std::time::Duration::from_secs(60);
    daemon.wait_for("the consumer positioned", limit, |d| {
        d.stderr().contains("open and positioned")
    });
    mock.command("produce late 5");
    daemon.wait_for("the 5 new events", limit, |_| {
        dir.read("out/all.jsonl").lines().count() >= 5
    });
    let run = daemon.terminate(limit);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (10..15).collect::<Vec<_>>()
    );
}

#[test]
fn kafka_a_reload_that_changes_only_handlers_keeps_the_group_member_s_partitions() {
    let limit = std::time::Duration::from_secs(120);
    let mut mock = KafkaMock::start(1, &[("scale", 4)]);
    let dir = TestDir::new("kafka-group-reload");
    let (config, mut daemon, out) = member_with_200_handled(&dir, &mut mock, 50, limit);
    let assignments =
        |d: &buslink_testkit::Daemon| d.stderr().matches("partitions assigned:").count();
    let before = assignments(&daemon);
    // A second handler: swapped in, the member stays in the group.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}\n{}", jsonl_handler("extra", ""))).expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the swap", limit, |d| {
        d.stderr()
            .contains("handlers swapped at a batch boundary: all, extra")
    });
    mock.command("produce scale 100");
    let extra = dir.join("out/extra.jsonl");
    daemon.wait_for("the 100 new records in both", limit, |_| {
        group_offsets(&out).len() == 300 && group_offsets(&extra).len() == 100
    });
    assert_eq!(
        assignments(&daemon),
        before,
        "no rebalance: {}",
        daemon.stderr()
    );
    let unique: std::collections::BTreeSet<_> = group_offsets(&out).into_iter().collect();
    assert_eq!(unique.len(), 300, "each record once");
    assert_eq!(daemon.terminate(limit).code(), Some(0));
}

/// Every record of partition 0, offsets `0..count`, is in the `jsonl` file at `out` once, in
/// order.
fn assert_each_record_once(out: &std::path::Path, count: i64, context: &dyn std::fmt::Display) {
    assert_eq!(
        group_offsets(out),
        (0..count).map(|o| (0, o)).collect::<Vec<_>>(),
        "each record once, in order: {context}"
    );
}

/// A group member on topic `one` (1 partition) with `group_id`, `batch` events per batch,
/// librdkafka `properties` lines, and `handlers` (an archive first, as operators put it).
fn one_partition_member(
    dir: &TestDir,
    mock: &KafkaMock,
    group_id: &str,
    batch: usize,
    properties: &str,
    handlers: &str,
) -> std::path::PathBuf {
    topic_member(dir, mock, "one", group_id, batch, properties, handlers)
}

/// A group member on `topic` (see [`one_partition_member`]).
fn topic_member(
    dir: &TestDir,
    mock: &KafkaMock,
    topic: &str,
    group_id: &str,
    batch: usize,
    properties: &str,
    handlers: &str,
) -> std::path::PathBuf {
    let consumer = ConsumerSpec {
        plugin: "kafka",
        class: "KafkaConsumer",
        timeout_ms: 200,
        extra: &format!("batch_size = {batch}"),
        settings: &format!(
            "servers = \"{}\"\nmode = \"group\"\ntopics = [\"{topic}\"]\ngroup_id = \"{group_id}\"\n\
             [consumer.settings.properties]\n\"heartbeat.interval.ms\" = 500\n{properties}{session}",
            mock.bootstrap(),
            // A member gone without a word is noticed within 6 s (the mock's minimum).
            session = if properties.contains("session.timeout.ms") {
                ""
            } else {
                "\"session.timeout.ms\" = 6000\n"
            }
        ),
    };
    let rest = format!(
        "{}\n[commit]\nevery_events = {batch}\n",
        jsonl_handler("all", "")
    );
    consumer_config(dir, consumer, &format!("{rest}\n{handlers}"))
}

#[test]
fn kafka_a_group_member_whose_batch_outlasts_max_poll_interval_is_never_evicted_nor_loops() {
    let mut mock = KafkaMock::start(1, &[("one", 1)]);
    mock.command("produce one 40");
    let dir = TestDir::new("kafka-group-slow");
    // 0.2 s an event, 20 a batch: 4 s a batch, longer than max.poll.interval.ms = 3 s.
    let slow = "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
                command = [\"sh\", \"-c\", \"cat > /dev/null; sleep 0.2\"]\n";
    let config = one_partition_member(
        &dir,
        &mock,
        "slow-group",
        20,
        "\"max.poll.interval.ms\" = 3000\n\"session.timeout.ms\" = 3000\n",
        slow,
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = buslink_testkit::Daemon::run(&config);
    let limit = std::time::Duration::from_secs(90);
    daemon.wait_for("every record handled", limit, |_| count_lines(&out) >= 40);
    let run = daemon.terminate(limit);
    assert_each_record_once(&out, 40, &run);
    // Given up once, at the stop; never evicted, every commit reached the group.
    assert_eq!(
        run.stderr.matches("partitions given up").count(),
        1,
        "{run}"
    );
    assert!(!run.stderr.contains("UnknownMemberId"), "{run}");
    assert!(!run.stderr.contains("could not be committed"), "{run}");
}

#[test]
fn kafka_a_group_member_stopped_by_a_failing_handler_commits_what_it_handled_to_the_group() {
    let mut mock = KafkaMock::start(1, &[("one", 1)]);
    mock.command("produce one 60");
    let dir = TestDir::new("kafka-group-fail-stop");
    let flag = dir.join("fixed");
    // Fails for good on offset 45 until `fixed` exists.
    let hook = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat > /dev/null; test -e {} || test \\\"$BUSLINK_OFFSET\\\" != one:0:45\"]\n\
         retry = {{ attempts = 1 }}\n",
        flag.display()
    );
    let config = one_partition_member(&dir, &mock, "fail-group", 20, "", &hook);
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(1), "{run1}");
    let out = dir.join("out/all.jsonl");
    assert_eq!(group_offsets(&out).len(), 45, "{run1}");
    std::fs::write(&flag, "").expect("flag");
    let run2 = run_once(&config);
    assert_eq!(run2.code(), Some(0), "{run2}");
    assert!(
        run2.stderr
            .contains("one:0 starts at the group's committed offset 45"),
        "{run2}"
    );
    assert_each_record_once(&out, 60, &run2);
}

#[test]
fn kafka_a_group_whose_offsets_are_gone_resumes_from_the_member_s_cache_with_a_warning() {
    let mut mock = KafkaMock::start(1, &[("one", 1)]);
    mock.command("produce one 30");
    let dir = TestDir::new("kafka-group-gone");
    let config = one_partition_member(&dir, &mock, "first-group", 20, "", "");
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(0), "{run1}");
    let out = dir.join("out/all.jsonl");
    assert_eq!(group_offsets(&out).len(), 30);
    // The group's offsets are gone (the mock cannot expire them: a new group id stands in).
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.edit("first-group", "second-group")).expect("config");
    mock.command("produce one 10");
    let run2 = run_once(&config);
    assert_eq!(run2.code(), Some(0), "{run2}");
    assert!(
        run2.stderr.contains(
            "one:0: the group has no committed offset (its offsets expired, were reset, or the \
             group id is new), but this member's offset cache says it handled up to 29: \
             starting at 30"
        ),
        "{run2}"
    );
    assert_each_record_once(&out, 40, &run2);
}

#[test]
fn kafka_a_rebalance_with_events_in_flight_waits_for_them_and_hands_over_nothing_handled() {
    let mut mock = KafkaMock::start(1, &[("two", 2)]);
    mock.command("produce two 80");
    let slow = "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
                command = [\"sh\", \"-c\", \"cat > /dev/null; sleep 0.1\"]\n";
    let member = |dir: &TestDir| topic_member(dir, &mock, "two", "handover", 20, "", slow);
    let (dir_a, dir_b) = (
        TestDir::new("kafka-handover-a"),
        TestDir::new("kafka-handover-b"),
    );
    let (out_a, out_b) = (dir_a.join("out/all.jsonl"), dir_b.join("out/all.jsonl"));
    let limit = std::time::Duration::from_secs(90);
    let mut a = buslink_testkit::Daemon::run(&member(&dir_a));
    a.wait_for("member A in the middle of a batch", limit, |_| {
        count_lines(&out_a) >= 1
    });
    // B joins while A holds a batch of both partitions.
    let b = buslink_testkit::Daemon::run(&member(&dir_b));
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut union: std::collections::BTreeSet<(i32, i64)> =
            group_offsets(&out_a).into_iter().collect();
        union.extend(group_offsets(&out_b));
        if union.len() == 80 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every record handled ({}):\n--- A ---\n{}\n--- B ---\n{}",
            union.len(),
            a.stderr(),
            b.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let run_a = a.terminate(limit);
    let run_b = b.terminate(limit);
    let (lines_a, lines_b) = (group_offsets(&out_a), group_offsets(&out_b));
    // A held its batch through the revocation and committed it before giving the partitions
    // up. A real broker takes that commit (the group is preparing the rebalance); librdkafka's
    // mock refuses every commit until all members rejoined, so here a batch in flight at a
    // rebalance may come again: never lost, and never silently.
    let mut all = lines_a.clone();
    all.extend(&lines_b);
    let unique: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(unique.len(), 80, "{run_a}\n{run_b}");
    let repeated = all.len() - unique.len();
    if repeated > 0 {
        let announced = |log: &str| {
            log.contains("this member's commit")
                || log.contains("could not be committed before the partitions")
        };
        assert!(
            announced(&run_a.stderr) || announced(&run_b.stderr),
            "{repeated} records handled twice, unannounced:\n{run_a}\n{run_b}"
        );
    }
    assert!(!lines_b.is_empty(), "B took a partition: {run_b}");
    assert!(
        run_a
            .stderr
            .contains("are being revoked while the host handles records"),
        "{run_a}"
    );
}

#[test]
fn kafka_a_group_member_s_ctl_replay_reads_without_joining_the_group() {
    let limit = std::time::Duration::from_secs(120);
    let mut mock = KafkaMock::start(1, &[("scale", 2)]);
    let dir = TestDir::new("kafka-group-replay");
    let (config, mut daemon, out) = member_with_200_handled(&dir, &mut mock, 20, limit);
    let rebalances = |d: &buslink_testkit::Daemon| {
        d.stderr()
            .lines()
            .filter(|l| l.contains("partitions assigned:") || l.contains("revoked"))
            .count()
    };
    let before = rebalances(&daemon);
    // The range of one partition, read by the plugin's reader class (never a member).
    let replay = buslink_testkit::process::run(
        &[
            "ctl",
            "--config",
            &config.to_string_lossy(),
            "replay",
            "--from",
            "scale:0:0",
            "--to",
            "scale:0:9",
        ],
        limit,
    );
    assert_eq!(replay.code(), Some(0), "{replay}");
    assert!(
        replay
            .stderr
            .contains("done, from scale:0:0 to scale:0:9 to all: 10 events read, 10 delivered"),
        "{replay}"
    );
    daemon.wait_for("the replayed lines", limit, |_| {
        group_offsets(&out).len() == 210
    });
    let mut seen: std::collections::BTreeMap<(i32, i64), usize> = Default::default();
    for record in group_offsets(&out) {
        *seen.entry(record).or_default() += 1;
    }
    let twice: Vec<(i32, i64)> = seen
        .iter()
        .filter(|(_, n)| **n == 2)
        .map(|(record, _)| *record)
        .collect();
    assert_eq!(twice, (0..10).map(|at| (0, at)).collect::<Vec<_>>());
    assert!(seen.values().all(|n| *n <= 2), "{seen:?}");
    // The member kept its partitions: no rebalance while the reader read.
    assert_eq!(rebalances(&daemon), before, "{}", daemon.stderr());
    // A replay with an offset that is not the group's form is refused, nothing started.
    let refused = buslink_testkit::process::run(
        &[
            "ctl",
            "--config",
            &config.to_string_lossy(),
            "replay",
            "--from",
            "12",
        ],
        limit,
    );
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused.stderr.contains("TOPIC:PARTITION:OFFSET"),
        "{refused}"
    );
    let run = daemon.terminate(limit);
    assert_eq!(run.code(), Some(0), "{run}");
}
