//! Plugin executables (`plugin = { command = [...] }`): the consumer runs in a child process
//! that speaks the subprocess protocol. Listing, describing, checking, running, the child's
//! environment, its death and freezing under the daemon, status and metrics, reload of a
//! replaced executable, the trust rule and the frame trace.

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{build_dir, Daemon, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

/// The sqlite plugin's executable, as `cargo build --workspace` makes it.
fn sqlite_executable() -> PathBuf {
    build_dir().join("buslink-plugin-sqlite")
}

/// A sqlite config on `bus` whose `plugin` is the table `plugin` (TOML inline table).
fn executable_config(dir: &TestDir, bus: &Path, plugin: &str, rest: &str) -> PathBuf {
    let config = sqlite_config(dir, bus, "", rest);
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("plugin = \"sqlite\""), "{text}");
    let text = text.edit("plugin = \"sqlite\"", &format!("plugin = {plugin}"));
    std::fs::write(&config, text).expect("config");
    config
}

/// `{ command = ["PATH"] }` for the program at `path`.
fn command_of(path: &Path) -> String {
    format!("{{ command = [\"{}\"] }}", path.display())
}

/// Writes an executable shell script at `path`.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Whether process `pid` still runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the command name in parentheses.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// Polls `condition` until it holds, panicking with `what` after `limit`.
fn until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child process in consumer `test`'s status: (pid, restarts).
fn process_of(config: &Path) -> (Option<u64>, u64) {
    let process = consumer_status(&status(config), "test")["plugin_process"].clone();
    (
        process["pid"].as_u64(),
        process["restarts"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn a_plugin_executable_delivers_the_same_events_as_the_library_and_its_child_ends_with_the_run() {
    let dir = TestDir::new("exe-same");
    let bus = bus_with(&dir, 300);
    let library = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let first = run_once(&library);
    assert_eq!(first.code(), Some(0), "{first}");
    let by_library = dir.read("out/all.jsonl");
    assert_eq!(by_library.lines().count(), 300);

    let other = TestDir::new("exe-same-2");
    let hook_file = other.join("out/hook.jsonl");
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"hook\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat >> {}\"]\n",
        jsonl_handler("all", ""),
        hook_file.display()
    );
    let config = executable_config(
        &other,
        &bus,
        "{ command = [\"buslink-plugin-sqlite\"] }",
        &handlers,
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("(subprocess protocol 1) from")
            && run.stderr.contains("buslink-plugin-sqlite"),
        "{run}"
    );
    assert_eq!(other.read("out/all.jsonl"), by_library, "the same lines");
    assert_eq!(read_cache(&other)["last_offset"]["int"], 300);
    // The stop line gives the child's pid: it ended with the run.
    let pid: u32 = run
        .stderr
        .split("plugin_process_pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .expect("the child's pid in the stop line");
    assert!(pid > 0, "{run}");
    until("the child gone", LIMIT, || !alive(pid));

    // `offsets set` and `replay` drive the executable's consumer too.
    let config_arg = config.to_string_lossy().into_owned();
    let set = buslink(&["offsets", "set", "--config", &config_arg, "290"]);
    assert_eq!(set.code(), Some(0), "{set}");
    let beyond = buslink(&["offsets", "set", "--config", &config_arg, "5000"]);
    assert_ne!(beyond.code(), Some(0), "an offset not on the bus: {beyond}");
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    let lines = read_lines(&other, "out/all.jsonl");
    assert_eq!(offsets(&lines[300..]), (290..=300).collect::<Vec<_>>());
    let replay = buslink(&[
        "replay",
        "--config",
        &config_arg,
        "--from",
        "7",
        "--to",
        "9",
        "--handler",
        "hook",
    ]);
    assert_eq!(replay.code(), Some(0), "{replay}");
    let hooked = offsets(&read_lines(&other, "out/hook.jsonl"));
    assert_eq!(hooked[311..], [7, 8, 9]);
}

#[test]
fn plugins_lists_executables_named_buslink_plugin_and_runs_no_other_file() {
    let dir = TestDir::new("exe-list");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    std::fs::copy(sqlite_executable(), plugins.join("buslink-plugin-sqlite")).expect("copy");
    let marker = dir.join("ran");
    // Another executable in the directory: never run.
    script(
        &plugins.join("helper-tool"),
        &format!("#!/bin/sh\ntouch {}\n", marker.display()),
    );
    // A plugin name that does not speak the protocol: listed as unusable.
    script(
        &plugins.join("buslink-plugin-garbage"),
        "#!/bin/sh\necho 'hello, I am not a frame'\nsleep 5\n",
    );
    let listing = buslink(&["plugins", &plugins.to_string_lossy()]);
    assert_eq!(listing.code(), Some(0), "{listing}");
    for text in [
        "buslink-plugin-sqlite\n  plugin sqlite 0.1.0 (executable, subprocess protocol 1)",
        "SqliteConsumer (consumer): Hermes sqlite bus",
        "buslink-plugin-garbage\n  not usable: plugin executable",
    ] {
        assert!(
            listing.stdout.contains(text),
            "expected {text:?}:\n{listing}"
        );
    }
    assert!(!listing.stdout.contains("helper-tool"), "{listing}");
    assert!(
        !marker.exists(),
        "a file not named buslink-plugin-* was run"
    );
    let json = buslink(&["plugins", "--json", &plugins.to_string_lossy()]);
    let list: Value = serde_json::from_str(&json.stdout).expect("JSON");
    let sqlite = list
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "sqlite"))
        .expect("sqlite listed");
    assert_eq!(sqlite["kind"], "executable");
    assert_eq!(sqlite["speaks"], "subprocess protocol 1");

    // `describe` finds `buslink-plugin-NAME` by the plugin's name.
    let describe = buslink(&[
        "plugins",
        "describe",
        "sqlite",
        "SqliteConsumer",
        "--dir",
        &plugins.to_string_lossy(),
    ]);
    assert_eq!(describe.code(), Some(0), "{describe}");
    assert!(
        describe.stdout.contains("`uri` (string, required)"),
        "{describe}"
    );
}

#[test]
fn check_reports_the_executable_and_points_at_bad_plugin_tables_and_settings() {
    let dir = TestDir::new("exe-check");
    let bus = bus_with(&dir, 5);
    let handlers = jsonl_handler("all", "");
    let config = executable_config(&dir, &bus, &command_of(&sqlite_executable()), &handlers);
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check
            .stdout
            .contains("plugin: sqlite 0.1.0 (subprocess protocol 1) from"),
        "{check}"
    );

    // The child's refusal of its settings points at the settings key.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.edit("poll_interval_ms = 10", "poll_interval_ms = \"often\""),
    )
    .expect("config");
    let refused = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("consumer.settings.poll_interval_ms"),
        "{refused}"
    );

    for (plugin, expected) in [
        ("{ command = [] }", "consumer.plugin.command"),
        ("{ command = [\"x\"], nev = {} }", "unknown key 'nev'"),
        (
            "{ command = [\"buslink-plugin-nowhere\"] }",
            "plugin 'buslink-plugin-nowhere' not found; tried:",
        ),
    ] {
        let bad = executable_config(&dir, &bus, plugin, &handlers);
        let out = buslink(&["check", "--config", &bad.to_string_lossy()]);
        assert_eq!(out.code(), Some(2), "{plugin}: {out}");
        assert!(out.stderr.contains(expected), "{plugin}: {out}");
        assert!(
            out.stderr.contains("buslink.toml:"),
            "names the file: {out}"
        );
    }
}

#[test]
fn the_child_gets_its_arguments_its_env_table_and_no_other_variable_of_the_daemon() {
    let dir = TestDir::new("exe-env");
    let bus = bus_with(&dir, 3);
    let wrapper = dir.join("buslink-plugin-wrapped");
    script(
        &wrapper,
        &format!(
            "#!/bin/sh\nenv > child-env.txt\necho \"$@\" > child-args.txt\nexec {} \"$@\"\n",
            sqlite_executable().display()
        ),
    );
    let plugin = format!(
        "{{ command = [\"{}\", \"--one\", \"two words\"], env = {{ BUS_REGION = \"eu-west\" }} }}",
        wrapper.display()
    );
    let config = executable_config(&dir, &bus, &plugin, &jsonl_handler("all", ""));
    let out = Daemon::start({
        let mut command = buslink_testkit::process::buslink(&[
            "run",
            "--once",
            "--config",
            &config.to_string_lossy(),
        ]);
        command.env("DAEMON_SECRET", "do-not-pass");
        command
    })
    .finish(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 3);
    let env = dir.read("child-env.txt");
    assert!(env.lines().any(|l| l == "BUS_REGION=eu-west"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(!env.contains("DAEMON_SECRET"), "{env}");
    assert!(
        !env.contains("NO_COLOR"),
        "the daemon's own variable: {env}"
    );
    assert_eq!(dir.read("child-args.txt"), "--one two words\n");
}

#[test]
fn a_killed_or_frozen_child_is_replaced_and_status_metrics_and_events_say_so() {
    let dir = TestDir::new("exe-kill");
    let bus = bus_with(&dir, 100);
    let config = executable_config(
        &dir,
        &bus,
        "{ command = [\"buslink-plugin-sqlite\"] }",
        &format!("{}\n{METRICS_ON_ANY_PORT}", jsonl_handler("all", "")),
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("100 events", LIMIT, |_| count_lines(&out) == 100);
    let address = metrics_address(&daemon.stderr());
    let (Some(first), 0) = process_of(&config) else {
        panic!("a child and no restart: {}", status(&config));
    };
    let human = ctl(&config, &["status"]);
    assert!(
        human
            .stdout
            .contains(&format!("plugin process: pid {first}, 0 restart(s)")),
        "{human}"
    );

    // kill -9: a transient error, a new child, positioned after the last event read.
    // SAFETY: kill(2) on the plugin's child, a process this test's daemon started.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    append(&bus, 50);
    daemon.wait_for("150 events", LIMIT, |_| count_lines(&out) == 150);
    until(
        "a restart in the status",
        LIMIT,
        || matches!(process_of(&config), (Some(pid), 1) if pid != first),
    );
    let (Some(second), _) = process_of(&config) else {
        unreachable!()
    };
    assert!(alive(second as u32) && !alive(first as u32));
    assert!(
        daemon.stderr().contains("was killed by signal 9"),
        "the death logged with its signal:\n{}",
        daemon.stderr()
    );
    until("the restart and the new pid in the metrics", LIMIT, || {
        let (_, body) = scrape(&address, "/metrics");
        sample(
            &body,
            "buslink_plugin_counts_total{consumer=\"test\",name=\"plugin_process_restarts\"}",
        ) == Some(1.0)
            && sample(&body, "buslink_plugin_process_pid{consumer=\"test\"}") == Some(second as f64)
    });

    // Frozen (SIGSTOP): no answer within the poll's timeout plus the grace; killed, replaced.
    // Meanwhile the bus cannot be asked: the lag is unknown (a second past the poll's
    // timeout), never the last figure (0) while events wait.
    // SAFETY: kill(2) on the plugin's child, a process this test's daemon started.
    unsafe { libc::kill(second as i32, libc::SIGSTOP) };
    until(
        "the lag unknown while the child does not answer",
        LIMIT,
        || consumer_status(&status(&config), "test")["lag"].is_null(),
    );
    append(&bus, 50);
    let mut lags = Vec::new();
    until("the frozen child replaced", LIMIT, || {
        let replaced = matches!(process_of(&config), (Some(pid), 2) if pid != second);
        if !replaced {
            lags.push(consumer_status(&status(&config), "test")["lag"].clone());
        }
        replaced
    });
    assert!(
        lags.iter().all(|lag| lag.is_null()),
        "a lag shown while the frozen child could not be asked: {lags:?}"
    );
    assert!(
        daemon.stderr().contains("did not answer"),
        "{}",
        daemon.stderr()
    );
    daemon.wait_for("200 events", LIMIT, |_| count_lines(&out) == 200);
    let (Some(third), _) = process_of(&config) else {
        unreachable!()
    };

    // SIGTERM: the daemon ends its child before it exits.
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    until("the last child gone", Duration::from_secs(5), || {
        !alive(third as u32)
    });
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(
        offsets(&lines),
        (1..=200).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[test]
fn a_reload_restarts_a_consumer_whose_executable_was_replaced() {
    let dir = TestDir::new("exe-reload");
    let bus = bus_with(&dir, 20);
    let program = dir.join("buslink-plugin-mine");
    std::fs::copy(sqlite_executable(), &program).expect("copy");
    let config = executable_config(&dir, &bus, &command_of(&program), &jsonl_handler("all", ""));
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("20 events", LIMIT, |_| count_lines(&out) == 20);
    let (Some(first), _) = process_of(&config) else {
        panic!("a child: {}", status(&config));
    };
    // A reload with nothing changed keeps the child.
    let reload = ctl(&config, &["reload"]);
    assert_eq!(reload.code(), Some(0), "{reload}");
    assert_eq!(process_of(&config).0, Some(first));
    // The upgrade: a new file renamed over the old one.
    let staged = dir.join("staged");
    std::fs::copy(sqlite_executable(), &staged).expect("copy");
    std::fs::rename(&staged, &program).expect("rename");
    let reload = ctl(&config, &["reload"]);
    assert_eq!(reload.code(), Some(0), "{reload}");
    daemon.wait_for("the restart on the new file", LIMIT, |d| {
        d.stderr().contains("its plugin executable")
            && d.stderr()
                .contains("changed on disk: it restarts on the new code")
    });
    until(
        "a new child",
        LIMIT,
        || matches!(process_of(&config).0, Some(pid) if pid != first),
    );
    append(&bus, 5);
    daemon.wait_for("25 events", LIMIT, |_| count_lines(&out) == 25);
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=25).collect::<Vec<_>>()
    );
}

#[test]
fn an_executable_others_can_change_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("exe-trust");
    let bus = bus_with(&dir, 2);
    let open = dir.join("open");
    std::fs::create_dir_all(&open).expect("dir");
    let program = open.join("buslink-plugin-sqlite");
    std::fs::copy(sqlite_executable(), &program).expect("copy");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o757)).expect("chmod");
    let config = executable_config(&dir, &bus, &command_of(&program), &jsonl_handler("all", ""));
    let refused = run_once(&config);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("is writable by every user (mode 757)"),
        "{refused}"
    );
    assert!(!dir.join("out/all.jsonl").exists());
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("allow_insecure_plugins = true\n{text}")).expect("config");
    let allowed = run_once(&config);
    assert_eq!(allowed.code(), Some(0), "{allowed}");
    assert!(allowed.stderr.contains("run anyway"), "{allowed}");
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 2);
}

#[test]
fn trace_frames_logs_each_frame_to_and_from_the_child() {
    let dir = TestDir::new("exe-trace");
    let bus = bus_with(&dir, 4);
    let config = executable_config(
        &dir,
        &bus,
        "{ command = [\"buslink-plugin-sqlite\"], trace_frames = true }",
        &jsonl_handler("all", ""),
    );
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    for text in [
        "<- {\"id\":",
        "\"op\":\"new_consumer\"",
        "\"op\":\"open\"",
        "\"op\":\"poll\"",
        "-> {\"id\":",
        "bytes of bodies",
    ] {
        assert!(out.stderr.contains(text), "expected {text:?}:\n{out}");
    }
    // Off by default.
    let quiet_dir = TestDir::new("exe-trace-off");
    let quiet = executable_config(
        &quiet_dir,
        &bus,
        "{ command = [\"buslink-plugin-sqlite\"] }",
        &jsonl_handler("all", ""),
    );
    let out = run_once(&quiet);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!out.stderr.contains("<- {\"id\":"), "{out}");
}

/// The Python SDK's example plugin (`sdk/python/examples/hermes_sqlite.py`, written from the
/// protocol document alone) under the daemon: the fixture bus gives the same events as the
/// library, and Hermes mode finds the same initsync sequence as the real hermes-client.
#[test]
fn a_python_plugin_written_from_the_protocol_document_runs_under_the_daemon() {
    let script = buslink_testkit::workspace_root().join("sdk/python/examples/hermes_sqlite.py");
    let plugin = format!("{{ command = [\"python3\", \"{}\"] }}", script.display());
    let with_class = |config: PathBuf| {
        let text = std::fs::read_to_string(&config).expect("config");
        let text = text.edit(
            "class = \"SqliteConsumer\"",
            "class = \"PythonSqliteConsumer\"",
        );
        std::fs::write(&config, text).expect("config");
        config
    };
    let library_dir = TestDir::new("exe-python-lib");
    let library = sqlite_config(&library_dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    assert_eq!(run_once(&library).code(), Some(0));
    let dir = TestDir::new("exe-python");
    let config = with_class(executable_config(
        &dir,
        &fixture_bus(),
        &plugin,
        &jsonl_handler("all", ""),
    ));
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check
            .stdout
            .contains("plugin: python-sqlite 0.1.0 (subprocess protocol 1)"),
        "{check}"
    );
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let by_python = read_lines(&dir, "out/all.jsonl");
    let by_library = read_lines(&library_dir, "out/all.jsonl");
    assert_eq!(by_python.len(), 163);
    assert_eq!(by_python, by_library, "the same events, bodies and times");

    // Hermes mode: the latest complete initsync sequence, as the real client finds it.
    let hermes_dir = TestDir::new("exe-python-hermes");
    let config = with_class(executable_config(
        &hermes_dir,
        &fixture_bus(),
        &plugin,
        &jsonl_handler("all", ""),
    ));
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.edit(
        "[consumer.settings]",
        "[consumer.hermes]\nenabled = true\n\n[consumer.settings]",
    );
    std::fs::write(&config, text).expect("config");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let cache = read_cache(&hermes_dir);
    assert_eq!(
        (
            cache["initstartoffset"]["int"].as_i64(),
            cache["initstopoffset"]["int"].as_i64(),
            cache["next_offset"]["int"].as_i64(),
        ),
        (Some(79), Some(140), Some(164)),
        "{cache}"
    );
}

/// A config whose plugin is a Python program on buslink's SDK: `code` (Python, defining the
/// consumer class `class`; `sys`, `Batch`, `Consumer`, `Event` and `serve` imported), served
/// as plugin "test" and read by a `jsonl` handler "all" into `out/all.jsonl`.
fn python_sdk_plugin(dir: &TestDir, class: &str, code: &str) -> PathBuf {
    let sdk = buslink_testkit::workspace_root().join("sdk/python");
    let program = dir.join(format!("{class}.py"));
    let text = format!(
        "import sys\nsys.path.insert(0, {sdk:?})\nfrom buslink_plugin import Batch, Consumer, \
         Event, serve\n\n{code}\n\n\nsys.exit(serve([{class}], plugin=\"test\", version=\"1\"))\n",
        sdk = sdk.display().to_string()
    );
    std::fs::write(&program, text).expect("plugin script");
    let plugin = format!("{{ command = [\"python3\", \"{}\"] }}", program.display());
    let config = executable_config(dir, &fixture_bus(), &plugin, &jsonl_handler("all", ""));
    replace_in(
        &config,
        "class = \"SqliteConsumer\"",
        &format!("class = \"{class}\""),
    );
    config
}

/// A Python plugin's batch mixing every kind of body (ASCII JSON, JSON with non-ASCII text,
/// bytes, empty, ASCII again) and a string offset: each arrives as the plugin wrote it (the SDK
/// packs a batch of ASCII text without encoding each body, and must switch to bytes mid-batch).
#[test]
fn a_python_plugin_s_batch_of_mixed_bodies_arrives_as_written() {
    let dir = TestDir::new("exe-python-bodies");
    let config = python_sdk_plugin(
        &dir,
        "Bodies",
        r#"BODIES = ['{"n": 1}', '{"name": "Gr\u00e2ce \u6771\u4eac"}', b"\x00\xff\x01", b"", '{"n": 5}']


class Bodies(Consumer):
    NAME = "Bodies"
    DESCRIPTION = "five events, one of each body"
    SETTINGS_DOC = "none"

    def __init__(self, settings, config_dir):
        super().__init__(settings, config_dir)
        self.next = 0

    def open(self): pass
    def close(self): pass
    def seek_to_beginning(self): self.next = 0
    def seek(self, offset): self.next = int(offset)
    def set_timeout(self, timeout): pass

    def poll(self, max_events, max_bytes):
        if self.next >= len(BODIES):
            return Batch("drained")
        events = [
            Event(offset=("five" if i == 4 else i), time_us=1_700_000_000_000_000 + i, category="c", body=body)
            for i, body in enumerate(BODIES)
        ][self.next:]
        self.next = len(BODIES)
        return Batch("ready", events)
"#,
    );
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines = read_lines(&dir, "out/all.jsonl");
    let got: Vec<(Value, Value)> = lines
        .iter()
        .map(|line| {
            let body = if line.get("event").is_some() {
                line["event"].clone()
            } else {
                line["body_base64"].clone()
            };
            (line["offset"].clone(), body)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (serde_json::json!(0), serde_json::json!({"n": 1})),
            (
                serde_json::json!(1),
                serde_json::json!({"name": "Gr\u{e2}ce \u{6771}\u{4eac}"})
            ),
            (serde_json::json!(2), serde_json::json!("AP8B")),
            (serde_json::json!(3), serde_json::json!("")),
            (serde_json::json!("five"), serde_json::json!({"n": 5})),
        ],
        "{out}"
    );
}

/// The host tells a child how long it waits for a poll's answer (the timeout plus its grace of
/// 5 s) with each `set_timeout`; the Python SDK keeps it as `Consumer.poll_limit`, which a
/// plugin that waits longer than its timeout for a first event (the Hermes host under
/// `--once`) must answer within.
#[test]
fn a_python_plugin_is_told_the_host_s_poll_limit_with_its_timeout() {
    let dir = TestDir::new("exe-python-poll-limit");
    let config = python_sdk_plugin(
        &dir,
        "Limit",
        r#"import json


class Limit(Consumer):
    NAME = "Limit"
    DESCRIPTION = "one event: the timeout and the poll limit it was given"
    SETTINGS_DOC = "none"

    def __init__(self, settings, config_dir):
        super().__init__(settings, config_dir)
        self.done = False
        self.timeout = None

    def open(self): pass
    def close(self): pass
    def seek_to_beginning(self): self.done = False
    def seek(self, offset): self.done = True
    def set_timeout(self, timeout): self.timeout = timeout

    def poll(self, max_events, max_bytes):
        if self.done:
            return Batch("drained")
        self.done = True
        body = json.dumps({"timeout": self.timeout, "poll_limit": self.poll_limit})
        return Batch("ready", [Event(offset=1, time_us=1_700_000_000_000_000, category="c", body=body)])
"#,
    );
    replace_in(&config, "timeout_ms = 200", "timeout_ms = 300");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(
        lines[0]["event"],
        serde_json::json!({"timeout": 0.3, "poll_limit": 5.3}),
        "{out}"
    );
}
