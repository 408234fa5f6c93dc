//! Several consumers in one process (`[[consumers]]`): each its own pipeline, cache and lock;
//! one control socket and one metrics endpoint; a failed consumer restarted without touching
//! the others.

use crate::common::*;
use buslink_testkit::process::run;
use buslink_testkit::{build_dir, Daemon, HermesBusWriter, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

/// A `[[consumers]]` entry on the sqlite bus `bus`, with a jsonl handler `out/NAME.jsonl`.
pub fn sqlite_consumer(name: &str, bus: &Path) -> String {
    format!(
        "[[consumers]]\nname = \"{name}\"\nplugin = \"sqlite\"\nclass = \"SqliteConsumer\"\n\
         timeout_ms = 200\n[consumers.settings]\nuri = \"{bus}\"\npoll_interval_ms = 10\n\
         [[consumers.handlers]]\nname = \"out\"\ntype = \"jsonl\"\npath = \"out/{name}.jsonl\"\n",
        bus = bus.display()
    )
}

/// A `[[consumers]]` entry on the in-memory `faulty` bus with `settings`.
fn faulty_consumer(name: &str, settings: &str) -> String {
    format!(
        "[[consumers]]\nname = \"{name}\"\nplugin = \"faulty\"\nclass = \"FaultyConsumer\"\n\
         timeout_ms = 100\nbatch_size = 5\n[consumers.settings]\n{settings}\n\
         [[consumers.handlers]]\nname = \"out\"\ntype = \"jsonl\"\npath = \"out/{name}.jsonl\"\n"
    )
}

/// `broken` (panics when event 8 is next: it handles 1-5, then every restart fails at once)
/// beside `steady` on the sqlite bus `bus`.
fn broken_and_steady(dir: &TestDir, head: &str, bus: &Path) -> PathBuf {
    several(
        dir,
        head,
        &[
            faulty_consumer(
                "broken",
                "events = 20\npanic_in = \"poll\"\npanic_at_event = 8",
            ),
            sqlite_consumer("steady", bus),
        ],
    )
}

/// A config of `entries` (state in `state/`, plugins from the build directory).
pub fn several(dir: &TestDir, head: &str, entries: &[String]) -> PathBuf {
    dir.write(
        "buslink.toml",
        format!(
            "state_dir = \"state\"\nplugin_dirs = [\"{}\"]\n{head}\n{}",
            build_dir().display(),
            entries.join("\n")
        ),
    )
}

fn bus(dir: &TestDir, name: &str, events: usize) -> PathBuf {
    let bus = dir.join(name);
    append(&bus, events);
    bus
}

fn append(bus: &Path, events: usize) {
    HermesBusWriter::open(bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(events)))
        .expect("events written");
}

#[test]
fn two_consumers_on_two_buses_run_in_one_process_each_with_its_own_offsets() {
    let dir = TestDir::new("two-consumers");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 20), bus(&dir, "b.sqlite", 30));
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("consumer: 'alpha'"), "{check}");
    assert!(check.stdout.contains("consumer: 'beta'"), "{check}");

    let mut daemon = Daemon::run(&config);
    daemon.wait_for("both buses handled", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 20
            && count_lines(&dir.join("out/beta.jsonl")) == 30
    });
    daemon.wait_for("both committed", LIMIT, |_| {
        let status = status(&config);
        consumer_status(&status, "alpha")["committed_offset"] == "20"
            && consumer_status(&status, "beta")["committed_offset"] == "30"
    });
    let text = ctl(&config, &["status"]);
    assert!(
        text.stdout
            .contains("consumer alpha: running (plugin sqlite class SqliteConsumer)"),
        "{text}"
    );
    assert!(text.stdout.contains("consumer beta: running"), "{text}");
    // Pausing one leaves the other running.
    assert_eq!(ctl(&config, &["pause", "alpha"]).stdout, "paused\n");
    append(&bus_a, 5);
    append(&bus_b, 5);
    daemon.wait_for("beta's new events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 35
    });
    let one: Value =
        serde_json::from_str(&ctl(&config, &["status", "--json", "alpha"]).stdout).expect("JSON");
    assert_eq!(one["state"], "paused");
    assert_eq!(count_lines(&dir.join("out/alpha.jsonl")), 20);
    assert_eq!(ctl(&config, &["resume", "alpha"]).stdout, "resumed\n");
    daemon.wait_for("alpha's new events", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 25
    });
    let unknown = ctl(&config, &["pause", "gamma"]);
    assert_eq!(unknown.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("no consumer named \"gamma\""),
        "{unknown}"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("running 2 consumers in one process"),
        "{run}"
    );
    // Log lines name their consumer.
    assert!(run.stderr.contains("consumer{name=alpha}"), "{run}");

    // Each consumer has its own offset cache; commands about one need --consumer.
    let config_arg = config.to_string_lossy();
    let ambiguous = buslink(&["offsets", "show", "--config", &config_arg]);
    assert_eq!(ambiguous.code(), Some(2), "{ambiguous}");
    assert!(
        ambiguous
            .stderr
            .contains("this config has 2 consumers (alpha, beta): name one with --consumer"),
        "{ambiguous}"
    );
    for (name, last) in [("alpha", 25), ("beta", 35)] {
        let show = buslink(&[
            "offsets",
            "show",
            "--json",
            "--config",
            &config_arg,
            "--consumer",
            name,
        ]);
        assert_eq!(show.code(), Some(0), "{show}");
        let record: Value = serde_json::from_str(&show.stdout).expect("JSON");
        assert_eq!(record["last_offset"]["int"], last, "{name}: {show}");
        assert_eq!(
            offsets(&read_lines(&dir, &format!("out/{name}.jsonl"))),
            (1..=last).collect::<Vec<_>>()
        );
    }
    // --once drains both and exits 0.
    append(&bus_a, 3);
    let once = buslink(&["run", "--once", "--config", &config_arg]);
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(count_lines(&dir.join("out/alpha.jsonl")), 28);
    assert_eq!(count_lines(&dir.join("out/beta.jsonl")), 35);
}

#[test]
fn a_failing_consumer_is_restarted_with_backoff_and_the_others_go_on() {
    let dir = TestDir::new("failing-consumer");
    let bus_b = bus(&dir, "b.sqlite", 10);
    // `broken` panics when event 8 is next: events 1-5 are handled, then every restart fails
    // at once (it resumes after 5).
    let config = broken_and_steady(&dir, METRICS_ON_ANY_PORT, &bus_b);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a second restart", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("restart 1 in 1 s (the other consumers go on)"),
        "{stderr}"
    );
    // The other consumer is untouched: it handles what comes meanwhile.
    append(&bus_b, 5);
    daemon.wait_for("steady's events", LIMIT, |_| {
        count_lines(&dir.join("out/steady.jsonl")) == 15
    });
    let broken = consumer_status(&status(&config), "broken");
    let state = broken["state"].as_str().unwrap_or_default();
    assert!(
        state.starts_with("failed: ") || state == "connecting",
        "{broken}"
    );
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("deliberate panic in poll")),
        "{broken}"
    );
    // /health says which consumer is failing.
    let address = metrics_address(&stderr);
    daemon.wait_for("a failed health", LIMIT, |_| {
        let response = reqwest::blocking::get(format!("http://{address}/health"));
        response.is_ok_and(|r| {
            r.status().as_u16() == 503
                && r.text().is_ok_and(|body| {
                    body.contains("broken: failed:") && body.contains("steady: ok")
                })
        })
    });
    assert_eq!(
        offsets(&read_lines(&dir, "out/broken.jsonl")),
        vec![1, 2, 3, 4, 5],
        "what broken handled before its panic stays, nothing twice"
    );
    daemon.terminate(LIMIT);
}

#[test]
fn the_restarts_of_a_failing_consumer_are_counted_in_the_metrics_as_the_log_tells_them() {
    let dir = TestDir::new("restarts-metric");
    let bus_b = bus(&dir, "b.sqlite", 3);
    let config = broken_and_steady(&dir, METRICS_ON_ANY_PORT, &bus_b);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a second restart", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let restarts_logged = |d: &Daemon| d.stderr().matches("; restart ").count() as f64;
    let address = metrics_address(&daemon.stderr());
    // The truth is the log: the scrape falls between two reads of it.
    let before = restarts_logged(&daemon);
    let (code, text) = scrape(&address, "/metrics");
    let after = restarts_logged(&daemon);
    assert_eq!(code, 200);
    let counted = sample(&text, "buslink_restarts_total{consumer=\"broken\"}").expect("the series");
    assert!(
        before <= counted && counted <= after && counted >= 2.0,
        "{before} <= {counted} <= {after}\n{text}"
    );
    assert_eq!(
        sample(&text, "buslink_restarts_total{consumer=\"steady\"}"),
        Some(0.0),
        "{text}"
    );
    daemon.terminate(LIMIT);
}

#[test]
fn once_drains_every_consumer_and_fails_when_one_failed() {
    let dir = TestDir::new("once-several");
    let bus_b = bus(&dir, "b.sqlite", 12);
    let config = broken_and_steady(&dir, "", &bus_b);
    let once = buslink(&["run", "--once", "--config", &config.to_string_lossy()]);
    assert_eq!(once.code(), Some(1), "{once}");
    assert!(once.stderr.contains("consumer 'broken':"), "{once}");
    assert!(!once.stderr.contains("ERROR consumer 'steady'"), "{once}");
    assert_eq!(count_lines(&dir.join("out/steady.jsonl")), 12);
    assert_eq!(count_lines(&dir.join("out/broken.jsonl")), 5);
}

#[test]
fn several_consumer_configs_are_checked_entry_by_entry() {
    let dir = TestDir::new("several-config-errors");
    let bus_a = bus(&dir, "a.sqlite", 1);
    let duplicate = several(
        &dir,
        "",
        &[
            sqlite_consumer("same", &bus_a),
            sqlite_consumer("same", &bus_a),
        ],
    );
    let out = buslink(&["check", "--config", &duplicate.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains(
            "key `consumers[1].name`: consumers[0] and consumers[1] are both named 'same'"
        ),
        "{out}"
    );
    // A plugin's refusal of a setting points at that consumer's own table.
    let bad_setting = several(
        &dir,
        "",
        &[
            sqlite_consumer("good", &bus_a),
            sqlite_consumer("bad", &bus_a)
                .replace("poll_interval_ms = 10", "poll_interval_ms = -1"),
        ],
    );
    let out = buslink(&["check", "--config", &bad_setting.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("key `consumers[1].settings.poll_interval_ms`"),
        "{out}"
    );
    let only_good = buslink(&[
        "check",
        "--config",
        &bad_setting.to_string_lossy(),
        "--consumer",
        "good",
    ]);
    assert_eq!(only_good.code(), Some(0), "{only_good}");
    // Two writers of one exactly-once file (here ./out/same.jsonl spelt two ways).
    let shared = several(
        &dir,
        "",
        &[
            sqlite_consumer("one", &bus_a).replace("out/one.jsonl", "out/same.jsonl"),
            sqlite_consumer("two", &bus_a).replace("out/two.jsonl", "./out/../out/same.jsonl"),
        ],
    );
    let out = buslink(&["check", "--config", &shared.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("key `consumers[1].handlers[0].name`")
            && out
                .stderr
                .contains("which handler 'out' of consumer 'one' writes too"),
        "{out}"
    );
    // Mixing the two shapes is refused.
    let text = format!(
        "{}\n[[handlers]]\nname = \"x\"\ntype = \"stdout\"\n",
        std::fs::read_to_string(&duplicate).expect("config")
    );
    let mixed = dir.write(
        "mixed.toml",
        text.replace("name = \"same\"", "name = \"one\""),
    );
    let out = buslink(&["check", "--config", &mixed.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("[[handlers]] go with a single [consumer]"),
        "{out}"
    );
    // A consumer without handlers.
    let bare = dir.write(
        "bare.toml",
        format!(
            "state_dir = \"state\"\n[[consumers]]\nname = \"x\"\nplugin = \"sqlite\"\n\
             class = \"SqliteConsumer\"\n[consumers.settings]\nuri = \"{}\"\n",
            bus_a.display()
        ),
    );
    let out = buslink(&["check", "--config", &bare.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("key `consumers[0].handlers`: no [[consumers.handlers]]"),
        "{out}"
    );
}

#[test]
fn sighup_swaps_changed_handlers_restarts_a_changed_consumer_and_refuses_a_bad_config() {
    let dir = TestDir::new("reload");
    let bus = bus_with(&dir, 20);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("a", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 20 events", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 20
    });
    // A second handler: swapped in at a batch boundary, the bus left open; the new handler
    // gets what comes after 20.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}\n{}", jsonl_handler("b", ""))).expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the reload", LIMIT, |d| {
        d.stderr().contains(
            "reloaded: 0 consumer(s) unchanged, 1 with new handlers, 0 restarted, 0 started, 0 stopped",
        ) && d.stderr().contains("handlers swapped at a batch boundary: a, b")
    });
    assert_eq!(
        daemon.stderr().matches("open and positioned").count(),
        1,
        "the bus was not re-opened"
    );
    append(&bus, 5);
    daemon.wait_for("the new events in both", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 25 && count_lines(&dir.join("out/b.jsonl")) == 5
    });
    // A changed consumer table restarts the consumer: it resumes right after what it handled.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("timeout_ms = 200", "timeout_ms = 150"),
    )
    .expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the restart", LIMIT, |d| {
        d.stderr().contains(
            "reloaded: 0 consumer(s) unchanged, 0 with new handlers, 1 restarted, 0 started, 0 stopped",
        ) && d.stderr().matches("open and positioned").count() == 2
    });
    append(&bus, 2);
    daemon.wait_for("the events after the restart", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 27 && count_lines(&dir.join("out/b.jsonl")) == 7
    });
    // An invalid config is logged and the running one stays (through `ctl reload` this time).
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{good}\n[[handlers]]\nname = \"c\"\ntype = \"carrier-pigeon\"\n"),
    )
    .expect("config");
    let refused = ctl(&config, &["reload"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("reload refused, the running config stays:")
            && refused.stderr.contains("carrier-pigeon"),
        "{refused}"
    );
    assert!(daemon.stderr().contains("carrier-pigeon"));
    // Where the offsets and locks are cannot move under running consumers: a restart's job.
    std::fs::write(
        &config,
        good.replace("state_dir = \"state\"", "state_dir = \"elsewhere\""),
    )
    .expect("config");
    // (SIGHUP: `ctl` looks for the socket where the new config says.)
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the state_dir refusal", LIMIT, |d| {
        d.stderr()
            .contains("need a restart (systemctl restart), not a reload")
    });
    assert!(!dir.join("elsewhere").exists());
    // A plugin's refusal of its settings is caught before anything stops, too.
    std::fs::write(
        &config,
        good.replace("poll_interval_ms = 10", "poll_interval_ms = \"soon\""),
    )
    .expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the second refusal", LIMIT, |d| {
        d.stderr()
            .matches("reload refused, the running config stays:")
            .count()
            >= 2
            && d.stderr().contains("consumer.settings.poll_interval_ms")
    });
    append(&bus, 3);
    daemon.wait_for("the old config still at work", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 30 && count_lines(&dir.join("out/b.jsonl")) == 10
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.stderr.matches("reloaded:").count(), 2, "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/a.jsonl")),
        (1..=30).collect::<Vec<_>>(),
        "nothing lost, nothing twice across the swap and the restart"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "out/b.jsonl")),
        (21..=30).collect::<Vec<_>>()
    );
}

#[test]
fn a_reload_starts_a_new_consumer_and_stops_a_removed_one_leaving_the_rest() {
    let dir = TestDir::new("reload-several");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 10), bus(&dir, "b.sqlite", 15));
    let metrics = METRICS_ON_ANY_PORT;
    let config = several(&dir, metrics, &[sqlite_consumer("alpha", &bus_a)]);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("alpha's events", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 10
    });
    several(
        &dir,
        metrics,
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("beta's events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 15
    });
    assert!(daemon.stderr().contains(
        "reloaded: 1 consumer(s) unchanged, 0 with new handlers, 0 restarted, 1 started, 0 stopped"
    ));
    // alpha leaves the config: it stops; beta goes on.
    several(&dir, metrics, &[sqlite_consumer("beta", &bus_b)]);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("alpha stopped", LIMIT, |d| {
        d.stderr()
            .contains("reloaded: 1 consumer(s) unchanged, 0 with new handlers, 0 restarted, 0 started, 1 stopped")
    });
    daemon.wait_for("only beta in the status", LIMIT, |_| {
        let status = status(&config);
        status["consumers"].as_array().map(Vec::len) == Some(1)
            && consumer_status(&status, "beta")["state"] == "running"
    });
    append(&bus_a, 4);
    append(&bus_b, 4);
    daemon.wait_for("beta's new events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 19
    });
    assert_eq!(
        count_lines(&dir.join("out/alpha.jsonl")),
        10,
        "alpha stopped"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
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
fn the_control_socket_takes_its_path_mode_and_group_from_the_config() {
    let dir = TestDir::new("ctl-socket");
    let bus = bus_with(&dir, 3);
    let gid = unsafe { libc::getgid() };
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{text}\n[control]\npath = \"run/ctl.sock\"\nmode = \"0660\"\ngroup = \"{gid}\"\n"),
    )
    .expect("config");
    std::fs::create_dir_all(dir.join("run")).expect("run dir");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let socket = dir.join("run/ctl.sock");
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o660
    );
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
    assert!(!dir.join("state/buslink.sock").exists());
    let status = ctl(&config, &["status"]);
    assert!(status.stdout.contains("consumer test: running"), "{status}");
    // A second daemon with the same socket is refused before it consumes anything.
    let other = dir.write(
        "other.toml",
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("name = \"test\"", "name = \"other\""),
    );
    let second = buslink(&["run", "--once", "--config", &other.to_string_lossy()]);
    assert_eq!(second.code(), Some(1), "{second}");
    assert!(
        second.stderr.contains("another buslink daemon answers on"),
        "{second}"
    );
    daemon.terminate(LIMIT);
    assert!(!socket.exists(), "removed at exit");
    // A mode that locks the owner out is a config error.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("mode = \"0660\"", "mode = \"0460\"")).expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(check.stderr.contains("key `control.mode`"), "{check}");
    // Names that do not exist and a directory that does not are config problems too.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            "mode = \"0460\"",
            "mode = \"0660\"\nowner = \"no-such-user-here\"",
        )
        .replace("run/ctl.sock", "nowhere/ctl.sock"),
    )
    .expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check
            .stderr
            .contains("key `control.owner`: no user named \"no-such-user-here\""),
        "{check}"
    );
    let run = buslink(&["run", "--once", "--config", &config.to_string_lossy()]);
    assert_eq!(run.code(), Some(2), "{run}");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .expect("config")
            .replace("owner = \"no-such-user-here\"\n", ""),
    )
    .expect("config");
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains("nowhere is not a directory"),
        "{check}"
    );
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

#[test]
fn pause_takes_effect_between_two_events_even_in_a_long_batch() {
    let dir = TestDir::new("pause-mid-batch");
    let bus = bus_with(&dir, 300);
    let seen = dir.join("seen.jsonl");
    // A slow handler: one batch of 300 events takes seconds.
    let handler = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat >> {}; sleep 0.01\"]\n",
        seen.display()
    );
    let config = sqlite_config(&dir, &bus, "batch_size = 512", &handler);
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the batch under way", LIMIT, |_| count_lines(&seen) >= 20);
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    let at_pause = count_lines(&seen);
    // The queue is answered mid-batch too (between two events, not after the batch).
    let listed = ctl(&config, &["errors", "list"]);
    assert!(
        listed.stdout.contains("the error queue is empty"),
        "{listed}"
    );
    let progress_lines = |d: &Daemon| d.stderr().matches("progress:").count();
    let lines_then = progress_lines(&daemon);
    daemon.wait_for("two progress lines while paused", LIMIT, |d| {
        progress_lines(d) >= lines_then + 2
    });
    let held = count_lines(&seen);
    assert!(
        held <= at_pause + 1,
        "at most the event in hand after the pause: {at_pause} then {held}"
    );
    assert!(held < 300, "the batch was not finished");
    // What was handled before the pause is committed.
    let committed = consumer_status(&status(&config), "test")["committed_offset"].clone();
    assert_eq!(committed, held.to_string(), "{committed}");
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("the rest of the batch", LIMIT, |_| {
        count_lines(&seen) == 300
    });
    assert_eq!(
        offsets(&read_lines(&dir, "seen.jsonl")),
        (1..=300).collect::<Vec<_>>()
    );
    daemon.terminate(LIMIT);
}

#[test]
fn clients_that_say_nothing_do_not_hold_up_the_control_socket() {
    use std::io::Read;
    let dir = TestDir::new("ctl-idle-clients");
    let bus = bus_with(&dir, 3);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let socket = dir.join("state/buslink.sock");
    // Four clients connect and say nothing (the daemon gives each 2 s).
    let idle: Vec<_> = (0..4)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect"))
        .collect();
    let status = ctl(&config, &["status"]);
    assert!(status.stdout.contains("consumer test: running"), "{status}");
    // Answered while the silent ones are still waited for: none was closed yet.
    for mut client in idle {
        client.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let read = client.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a silent client was already dealt with: {read:?}"
        );
    }
    // A command of several lines never reaches the daemon.
    let bad = ctl(&config, &["status", "test\nquit"]);
    assert_eq!(bad.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("no line breaks"), "{bad}");
    daemon.terminate(LIMIT);
}

#[test]
fn with_several_consumers_the_service_manager_hears_which_one_and_stopping_only_at_the_stop() {
    use crate::ops::notifications_until;
    let dir = TestDir::new("notify-several");
    let bus_b = bus(&dir, "b.sqlite", 5);
    let config = broken_and_steady(&dir, "", &bus_b);
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut command =
        buslink_testkit::process::buslink(&["run", "--config", &config.to_string_lossy()]);
    command.env("NOTIFY_SOCKET", &socket_path);
    let mut daemon = Daemon::start(command);
    let mut seen = Vec::new();
    notifications_until(&socket, &mut seen, "READY=1", LIMIT);
    notifications_until(&socket, &mut seen, "STATUS=steady: running", LIMIT);
    daemon.wait_for("a second restart of broken", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let failed = |seen: &[String]| {
        seen.iter().any(|m| {
            m.lines().any(|l| {
                l.starts_with("STATUS=broken: failed:") && l.contains("(restart 1 in 1 s)")
            })
        })
    };
    let deadline = std::time::Instant::now() + LIMIT;
    let mut buffer = [0u8; 4096];
    while !failed(&seen) {
        assert!(std::time::Instant::now() < deadline, "{seen:?}");
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    assert!(
        !seen.iter().any(|m| m.contains("STOPPING=1")),
        "a consumer's restart is no stop of the service: {seen:?}"
    );
    // (Its exit code depends on whether `broken` was failing or just restarted at the stop.)
    let run = daemon.terminate(LIMIT);
    assert!(run.code().is_some(), "{run}");
    notifications_until(&socket, &mut seen, "STOPPING=1", LIMIT);
    assert_eq!(
        seen.iter().filter(|m| m.contains("STOPPING=1")).count(),
        1,
        "{seen:?}"
    );
}

#[test]
fn several_consumers_killed_again_and_again_lose_nothing_and_repeat_nothing() {
    const EVENTS: usize = 3000;
    let dir = TestDir::new("several-kill9");
    let names = ["alpha", "beta", "gamma"];
    let entries: Vec<String> = names
        .iter()
        .map(|name| {
            sqlite_consumer(name, &bus(&dir, &format!("{name}.sqlite"), EVENTS))
                .replace("timeout_ms = 200", "timeout_ms = 200\nbatch_size = 37")
        })
        .collect();
    // A commit made durable at every event: slow enough for the kills to land mid-stream.
    let config = several(
        &dir,
        "[commit]\nevery_events = 1\nfsync = \"each\"\n",
        &entries,
    );
    let total = |dir: &TestDir| {
        names
            .iter()
            .map(|name| count_lines(&dir.join(format!("out/{name}.jsonl"))))
            .sum::<usize>()
    };
    // Killed five times part-way, each time further on (a reload in between, once).
    for round in 1..=5 {
        let mut daemon = Daemon::run(&config);
        let target = round * EVENTS * names.len() / 6;
        daemon.wait_for("more events written", LIMIT, |_| total(&dir) >= target);
        if round == 3 {
            daemon.signal(libc::SIGHUP);
            daemon.wait_for("the reload", LIMIT, |d| d.stderr().contains("reloaded:"));
        }
        daemon.signal(libc::SIGKILL);
        eprintln!(
            "round {round}: killed with {} of {} events written",
            total(&dir),
            EVENTS * 3
        );
        let killed = daemon.finish(LIMIT);
        assert_eq!(killed.status.code(), None, "killed: {killed}");
    }
    let rest = buslink_testkit::process::run_once(&config);
    assert_eq!(rest.code(), Some(0), "{rest}");
    for name in names {
        assert_eq!(
            offsets(&read_lines(&dir, &format!("out/{name}.jsonl"))),
            (1..=EVENTS as i64).collect::<Vec<_>>(),
            "{name}: every event once, in order"
        );
    }
}

#[test]
fn status_pause_and_quit_answer_while_a_handler_fails_and_retries() {
    let dir = TestDir::new("ctl-failing-handler");
    let bus = bus_with(&dir, 10);
    let flag = dir.join("ok");
    // Fails until `ok` exists, with long waits between its tries.
    let handler = format!(
        "[[handlers]]\nname = \"flaky\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"test -e {}\"]\n\
         retry = {{ attempts = 1000, base_ms = 500, max_ms = 500 }}\n",
        flag.display()
    );
    let config = sqlite_config(&dir, &bus, "", &handler);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a retry", LIMIT, |d| {
        d.stderr().contains("retrying in 500 ms")
    });
    let test = consumer_status(&status(&config), "test");
    assert_eq!(test["state"], "running", "{test}");
    assert!(
        test["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("handler 'flaky' failed on offset 1 (attempt")),
        "{test}"
    );
    assert_eq!(test["committed_offset"], Value::Null, "{test}");
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    // Quit ends the retries at once (the event comes again at the next start).
    assert_eq!(ctl(&config, &["quit"]).stdout, "stopping\n");
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    let show = buslink(&[
        "offsets",
        "show",
        "--json",
        "--config",
        &config.to_string_lossy(),
    ]);
    assert_eq!(
        show.stdout.trim(),
        "null",
        "nothing handled, nothing committed: {show}"
    );
}

#[test]
fn a_reload_after_a_plugin_library_was_replaced_restarts_its_consumer_on_the_new_code() {
    let dir = TestDir::new("reload-upgrade");
    let bus = bus_with(&dir, 10);
    // The plugin from a directory of this test's own, replaced as a package upgrade does
    // (a new file renamed over the old one).
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let library = plugins.join("libbuslink_sqlite.so");
    std::fs::copy(build_dir().join("libbuslink_sqlite.so"), &library).expect("library");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace(
            &format!("plugin_dirs = [\"{}\"]", build_dir().display()),
            &format!("plugin_dirs = [\"{}\"]", plugins.display()),
        ),
    )
    .expect("config");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 10 events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 10
    });
    // Unchanged: a reload touches nothing.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("a first reload", LIMIT, |d| {
        d.stderr().contains("reloaded: 1 consumer(s) unchanged")
    });
    let upgrade = plugins.join("upgrade.tmp");
    std::fs::copy(build_dir().join("libbuslink_sqlite.so"), &upgrade).expect("upgrade");
    std::fs::rename(&upgrade, &library).expect("upgrade in place");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the restart on the new library", LIMIT, |d| {
        d.stderr()
            .contains("changed on disk: it restarts on the new code")
            && d.stderr().contains("1 restarted")
    });
    assert_eq!(daemon.stderr().matches("loaded plugin 'sqlite'").count(), 2);
    append(&bus, 5);
    daemon.wait_for("the new events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 15
    });
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=15).collect::<Vec<_>>()
    );
    daemon.terminate(LIMIT);
}

#[test]
fn a_reload_that_hands_an_exactly_once_file_to_another_consumer_is_refused() {
    let dir = TestDir::new("reload-swap-files");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 5), bus(&dir, "b.sqlite", 5));
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("both", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 5
            && count_lines(&dir.join("out/beta.jsonl")) == 5
    });
    // The two swap their files: both would write one file until each reached a batch end.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("out/alpha.jsonl", "out/TMP")
            .replace("out/beta.jsonl", "out/alpha.jsonl")
            .replace("out/TMP", "out/beta.jsonl"),
    )
    .expect("config");
    let refused = ctl(&config, &["reload"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("an exactly-once file changes hands only with a restart"),
        "{refused}"
    );
    append(&bus_a, 2);
    daemon.wait_for("alpha goes on with its own file", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 7
    });
    assert_eq!(count_lines(&dir.join("out/beta.jsonl")), 5);
    daemon.terminate(LIMIT);
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
        .replace("name = \"hook\"", "name = \"renamed\"");
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
