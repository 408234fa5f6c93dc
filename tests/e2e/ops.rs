//! The operator commands: check, plugins, plugins describe, offsets, query.

use crate::common::*;
use crate::loading::other_api_plugin;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::workspace::plugin_lib;
use buslink_testkit::{build_dir, Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn check_accepts_a_good_config_and_summarises_it() {
    let dir = TestDir::new("check-good");
    let config = sqlite_config(
        &dir,
        &fixture_bus(),
        "",
        &jsonl_handler("all", r#"{ objtype = "SRV*" }"#),
    );
    let out = buslink(&["check", "--config", &config.to_string_lossy(), "--connect"]);
    assert_eq!(out.code(), Some(0), "{out}");
    for text in [
        "plugin: sqlite 0.1.0 (plugin-api 0.4.0)",
        "class SqliteConsumer",
        "all: jsonl ->",
        "match objtype=SRV*",
        "connect: opened and closed the bus",
    ] {
        assert!(out.stdout.contains(text), "expected {text:?}:\n{out}");
    }
    assert!(!dir.join("out").exists(), "check writes no output file");
}

#[test]
fn check_lists_every_problem_of_a_broken_config() {
    let dir = TestDir::new("check-broken");
    // Each line carries its own problem; all must be reported in one run.
    let text = format!(
        r#"state_dir = "state"
plugin_dirs = ["{plugins}"]
colour = "blue"

[consumer]
name = "test"
plugin = "sqlite"
class = "SqliteConsumer"
timeout = 5

[consumer.settings]
uri = "bus.sqlite"

[[handlers]]
name = "a"
type = "jsonl"
pth = "x.jsonl"

[[handlers]]
name = "b"
type = "http"
url = "ftp://example.org/"

[[handlers]]
name = "c"
type = "stdout"
match = {{ eventtype = "[" }}
"#,
        plugins = build_dir().display()
    );
    let config = dir.write("buslink.toml", text);
    let out = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(out.code(), Some(2), "{out}");
    for text in [
        "buslink.toml:3:1: key `colour`: unknown field `colour`",
        "buslink.toml:9:1: key `consumer.timeout`: unknown field `timeout`",
        "buslink.toml:17:1: key `handlers[0].pth`: unknown field `pth`",
        "buslink.toml:22:7: key `handlers[1].url`: scheme 'ftp' is not http or https",
        "key `handlers[2].match`",
    ] {
        assert!(out.stderr.contains(text), "expected {text:?}:\n{out}");
    }
}

#[test]
fn check_reports_plugin_settings_handlers_and_commands_together() {
    let dir = TestDir::new("check-semantic");
    let handlers = "[[handlers]]\nname = \"notify\"\ntype = \"exec\"\ncommand = [\"/nonexistent/notify\"]\n".to_owned()
        + "[[handlers]]\nname = \"archive\"\ntype = \"jsonl\"\npath = \"/proc/forbidden/x.jsonl\"\n";
    let config = sqlite_config(&dir, &fixture_bus(), "", &handlers)
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("poll_interval_ms = 10", "poll_interval_ms = 0");
    std::fs::write(&config, text).expect("config");
    let out = buslink(&["check", "--config", &config]);
    assert_eq!(out.code(), Some(2), "{out}");
    for text in [
        "key `consumer.settings.poll_interval_ms`",
        "at least 1",
        "handler 'notify': command '/nonexistent/notify' not found",
        "handler 'archive'",
    ] {
        assert!(out.stderr.contains(text), "expected {text:?}:\n{out}");
    }
}

#[test]
fn plugins_lists_good_incompatible_and_foreign_libraries() {
    let dir = TestDir::new("plugins");
    let libs = dir.join("libs");
    std::fs::create_dir_all(&libs).expect("dir");
    for (from, name) in [
        (plugin_lib("sqlite"), "libbuslink_sqlite.so"),
        (other_api_plugin().to_path_buf(), "libbuslink_other_api.so"),
        (build_dir().join("libnot_a_plugin.so"), "libnot_a_plugin.so"),
    ] {
        std::fs::copy(&from, libs.join(name)).expect("copy library");
    }
    let out = buslink(&["plugins", &libs.to_string_lossy()]);
    assert_eq!(out.code(), Some(0), "{out}");
    for text in [
        "plugin sqlite 0.1.0 (plugin-api 0.4.0)",
        "SqliteConsumer (consumer): Hermes sqlite bus",
        "built against plugin-api 0.9.0, but this buslink uses plugin-api 0.4.0",
        "not a buslink plugin",
    ] {
        assert!(out.stdout.contains(text), "expected {text:?}:\n{out}");
    }
    let json = buslink(&["plugins", "--json", &libs.to_string_lossy()]);
    assert_eq!(json.code(), Some(0), "{json}");
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 3);
    let sqlite = list
        .iter()
        .find(|l| l["name"] == "sqlite")
        .expect("sqlite listed");
    assert_eq!(sqlite["classes"][0]["name"], "SqliteConsumer");
    assert_eq!(list.iter().filter(|l| l.get("error").is_some()).count(), 2);

    let describe = buslink(&[
        "plugins",
        "describe",
        "sqlite",
        "SqliteConsumer",
        "--dir",
        &libs.to_string_lossy(),
    ]);
    assert_eq!(describe.code(), Some(0), "{describe}");
    assert!(
        describe.stdout.contains("`uri` (string, required)"),
        "{describe}"
    );
    assert!(describe.stdout.contains("`poll_interval_ms`"), "{describe}");
}

#[test]
fn plugins_defaults_to_the_config_plugin_dirs() {
    let dir = TestDir::new("plugins-config");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let out = buslink(&["plugins", "--config", &config.to_string_lossy()]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("libbuslink_sqlite.so"), "{out}");
    assert!(out.stdout.contains("FaultyConsumer"), "{out}");
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
fn query_lists_commands_and_refuses_unknown_ones() {
    let dir = TestDir::new("query");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let out = buslink(&["query", "--config", &config.to_string_lossy()]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("has no commands"), "{out}");
    let out = buslink(&["query", "--config", &config.to_string_lossy(), "features"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("has no command 'features'"), "{out}");
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

#[test]
fn plugins_describe_takes_a_library_path_without_a_directory() {
    let library = buslink_testkit::workspace::plugin_lib("sqlite");
    let described = buslink_testkit::process::run(
        &[
            "plugins",
            "describe",
            &library.to_string_lossy(),
            "SqliteConsumer",
        ],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(described.code(), Some(0), "{described}");
    assert!(described.stdout.contains("`wait_for_bus`"), "{described}");
}

#[test]
fn query_help_cites_a_command_a_plugin_has() {
    let help =
        buslink_testkit::process::run(&["query", "--help"], std::time::Duration::from_secs(60));
    assert_eq!(help.code(), Some(0), "{help}");
    assert!(help.stdout.contains("HMB's `status`"), "{help}");
    assert!(!help.stdout.contains("`features`"), "{help}");
}

/// Reads the service manager's socket until `wanted` was received (or panics after `limit`).
pub fn notifications_until(
    socket: &std::os::unix::net::UnixDatagram,
    seen: &mut Vec<String>,
    wanted: &str,
    limit: Duration,
) {
    let deadline = std::time::Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while !seen
        .iter()
        .any(|message| message.lines().any(|line| line == wanted))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no {wanted} within {limit:?}; got {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
}

#[test]
fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    let dir = TestDir::new("sd-notify");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let socket_path = dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut command =
        buslink_testkit::process::buslink(&["run", "--config", &config.to_string_lossy()]);
    command
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000");
    let daemon = Daemon::start(command);
    let mut seen = Vec::new();
    notifications_until(&socket, &mut seen, "READY=1", LIMIT);
    notifications_until(&socket, &mut seen, "STATUS=running", LIMIT);
    // WatchdogSec=0.4 s: pings every 0.2 s, again and again.
    let pings = |seen: &[String]| {
        seen.iter()
            .filter(|m| m.lines().any(|line| line == "WATCHDOG=1"))
            .count()
    };
    let deadline = std::time::Instant::now() + LIMIT;
    let mut buffer = [0u8; 4096];
    while pings(&seen) < 3 {
        assert!(std::time::Instant::now() < deadline, "pings: {seen:?}");
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    notifications_until(&socket, &mut seen, "STOPPING=1", LIMIT);
}

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
fn the_control_socket_tells_the_running_daemon_s_version_pid_and_time_up() {
    let dir = TestDir::new("ctl-version");
    let bus = bus_with(&dir, 3);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 3 events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 3
    });
    let version = ctl(&config, &["version"]);
    assert_eq!(version.code(), Some(0), "{version}");
    // The truth: the binary's own `--version` and the process this test started.
    let built = buslink_testkit::process::run(&["--version"], LIMIT);
    let prefix = format!("{} (pid {}, up ", built.stdout.trim_end(), daemon.pid());
    let up = version
        .stdout
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" s)\n"))
        .unwrap_or_else(|| panic!("{prefix}N s) expected: {version}"));
    assert!(up.parse::<u64>().is_ok_and(|s| s < 60), "{version}");
    // A word after it is refused, as for every command without arguments.
    let refused = ctl(&config, &["version", "now"]);
    assert_ne!(refused.code(), Some(0), "{refused}");
    daemon.terminate(LIMIT);
}

#[test]
fn the_control_socket_shows_status_pauses_resumes_and_quits() {
    let dir = TestDir::new("ctl");
    let bus = bus_with(&dir, 20);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("stats_interval_s = 1\n{text}")).expect("config");
    // No daemon yet: a clear error.
    let none = ctl(&config, &["status"]);
    assert_eq!(none.code(), Some(1), "{none}");
    assert!(none.stderr.contains("no daemon answers on"), "{none}");
    let mut daemon = Daemon::run(&config);
    let out = dir.join("out/all.jsonl");
    daemon.wait_for("the 20 events", LIMIT, |_| count_lines(&out) == 20);
    // The socket is private.
    let socket = dir.join("state/buslink.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("the socket")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    daemon.wait_for("a committed status", LIMIT, |_| {
        let status = ctl(&config, &["status", "--json", "test"]);
        let value: serde_json::Value = serde_json::from_str(&status.stdout).unwrap_or_default();
        value["committed_offset"] == "20" && value["state"] == "running"
    });
    let status = ctl(&config, &["status"]);
    assert_eq!(status.code(), Some(0), "{status}");
    for expected in [
        "consumer test: running (plugin sqlite class SqliteConsumer)",
        "committed offset: 20 at ",
        " s ago)",
        "events handled: 20",
        "error queue: 0 events",
    ] {
        assert!(status.stdout.contains(expected), "{expected} in {status}");
    }
    // Paused: events written meanwhile wait; the status says so across progress lines.
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    buslink_testkit::HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(5)))
        .expect("more events");
    let progress_lines = |d: &Daemon| d.stderr().matches("progress:").count();
    let seen = progress_lines(&daemon);
    daemon.wait_for("three progress lines while paused", LIMIT, |d| {
        progress_lines(d) >= seen + 3
    });
    assert_eq!(count_lines(&out), 20, "nothing handled while paused");
    let value: serde_json::Value =
        serde_json::from_str(&ctl(&config, &["status", "--json"]).stdout).expect("JSON");
    assert_eq!(value["consumers"][0]["state"], "paused");
    // Resumed: exactly where it stopped.
    assert_eq!(ctl(&config, &["resume"]).stdout, "resumed\n");
    daemon.wait_for("the 5 new events", LIMIT, |_| count_lines(&out) == 25);
    let offsets = offsets(&read_lines(&dir, "out/all.jsonl"));
    assert_eq!(offsets, (1..=25).collect::<Vec<_>>());
    // Quit stops the daemon as SIGTERM does, paused or not.
    assert_eq!(ctl(&config, &["pause"]).stdout, "paused\n");
    assert_eq!(ctl(&config, &["quit"]).stdout, "stopping\n");
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("stop asked through the control socket"),
        "{run}"
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}
