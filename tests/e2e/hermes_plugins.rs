//! Unchanged Hermes messagebus consumer plugins (`plugin = { hermes_plugin = "DIR" }`), served
//! by the Python side of buslink carried in the binary. The plugin under test is
//! `tests/fixture-plugins/hermes/sqlitelike` (see its docstring for the Hermes behaviours it
//! reproduces).

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{workspace_root, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn plugin_dir() -> PathBuf {
    workspace_root().join("tests/fixture-plugins/hermes/sqlitelike")
}

/// A config whose consumer is the test Hermes plugin on `bus` (`settings`: more lines of
/// `[consumer.settings]`; `consumer_extra`: more tables after it).
fn hermes_plugin_config(
    dir: &TestDir,
    bus: &Path,
    settings: &str,
    consumer_extra: &str,
) -> PathBuf {
    let text = format!(
        "state_dir = \"state\"\n\n[consumer]\nname = \"test\"\n\
         plugin = {{ hermes_plugin = \"{plugin}\" }}\nclass = \"SqliteLikeConsumerPlugin\"\n\
         timeout_ms = 300\n{consumer_extra}\n\n[consumer.settings]\nuri = \"{bus}\"\n{settings}\n\n{handler}",
        plugin = plugin_dir().display(),
        bus = bus.display(),
        handler = jsonl_handler("all", ""),
    );
    dir.write("buslink.toml", text)
}

/// Adds `key = "value"` to the `plugin` table of `config` (written by `hermes_plugin_config`).
fn set_plugin_key(config: &Path, key: &str, value: &Path) {
    replace_in(
        config,
        "plugin = { hermes_plugin = ",
        &format!(
            "plugin = {{ {key} = \"{}\", hermes_plugin = ",
            value.display()
        ),
    );
}

/// The fields of a Hermes event body that the plugin's `Event.to_json()` and the bus row share
/// (the forms differ: compare values, not text).
fn fields(line: &Value) -> Value {
    let body = &line["data"];
    serde_json::json!({
        "offset": line["offset"],
        "timestamp": line["timestamp"],
        "category": line["category"],
        "evcategory": body["evcategory"],
        "eventtype": body["eventtype"],
        "objtype": body["objtype"],
        "objpkey": body["objpkey"],
        "objattrs": body["objattrs"],
    })
}

#[test]
fn a_hermes_plugin_directory_delivers_the_fixture_bus_as_the_rust_plugin_does() {
    let library_dir = TestDir::new("hermes-plugin-lib");
    let library = sqlite_config(&library_dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    assert_eq!(run_once(&library).code(), Some(0));
    let expected: Vec<Value> = read_lines(&library_dir, "out/all.jsonl")
        .iter()
        .map(fields)
        .collect();

    let dir = TestDir::new("hermes-plugin");
    let config = hermes_plugin_config(&dir, &fixture_bus(), "", "");
    let check = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check
            .stdout
            .contains("plugin: hermes-sqlitelike hermes (subprocess protocol 1)"),
        "{check}"
    );
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let got: Vec<Value> = read_lines(&dir, "out/all.jsonl")
        .iter()
        .map(fields)
        .collect();
    assert_eq!(got.len(), 163);
    assert_eq!(got, expected, "the same events, fields and times");
    // What the plugin printed went to the log, not into the frames.
    assert!(out.stderr.contains("sqlitelike: opening the bus"), "{out}");

    // A restart resumes after the last event; new rows are the only ones read.
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 163, "{again}");
}

#[test]
fn once_waits_for_a_hermes_plugin_s_slow_first_read_instead_of_ending_with_nothing() {
    // The first query takes five times the timeout (a large backlog): that silence is not the
    // plugin's word that the bus is idle. Before, `--once` ended after 300 ms with nothing
    // handled, exit 0.
    let dir = TestDir::new("hermes-plugin-slow-first-read");
    let config = hermes_plugin_config(&dir, &fixture_bus(), "first_read_delay_ms = 1500", "");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 163, "{out}");
    assert!(
        out.stderr
            .contains("the plugin cannot tell whether the bus is drained")
            && out.stderr.contains("163 events handled in this run"),
        "{out}"
    );
}

#[test]
fn a_hermes_plugin_resumes_after_new_rows_and_hermes_mode_finds_the_client_s_sequence() {
    let dir = TestDir::new("hermes-plugin-resume");
    let bus = dir.join("bus.sqlite");
    std::fs::copy(fixture_bus(), &bus).expect("a copy of the fixture bus");
    let config = hermes_plugin_config(&dir, &bus, "", "[consumer.hermes]\nenabled = true");
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    let cache = read_cache(&dir);
    assert_eq!(
        (
            cache["initstartoffset"]["int"].as_i64(),
            cache["initstopoffset"]["int"].as_i64(),
            cache["next_offset"]["int"].as_i64(),
        ),
        (Some(79), Some(140), Some(164)),
        "{cache}"
    );
    let delivered = offsets(&read_lines(&dir, "out/all.jsonl"));
    append(&bus, 30);
    let second = run_once(&config);
    assert_eq!(second.code(), Some(0), "{second}");
    let after = offsets(&read_lines(&dir, "out/all.jsonl"));
    assert_eq!(after[..delivered.len()], delivered[..]);
    let new: Vec<i64> = after[delivered.len()..].to_vec();
    // The appended events start a new initsync sequence of their own; in Hermes mode the
    // ones handed to handlers are the base events after the chosen sequence.
    assert!(new.iter().all(|offset| *offset >= 164), "{new:?}");
    assert_eq!(read_cache(&dir)["next_offset"]["int"].as_i64(), Some(194));
}

#[test]
fn a_hermes_plugin_s_failures_are_named_with_their_kind_and_line() {
    let dir = TestDir::new("hermes-plugin-fail");
    // Bad settings, refused by the plugin's constructor: a config error (exit 2).
    let config = hermes_plugin_config(&dir, &fixture_bus(), "fail_in = \"__init__\"", "");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("RuntimeError: asked to fail in __init__ (at sqlitelike.py:"),
        "{out}"
    );
    // A failure in open: a connect error, named with the exception and its line; `--once`
    // ends on it (exit 1).
    let config = hermes_plugin_config(&dir, &fixture_bus(), "fail_in = \"open\"", "");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("open: RuntimeError: asked to fail in open (at sqlitelike.py:"),
        "{out}"
    );
    // A failure in each other method, named with the method, the exception and its line.
    for (method, code, expected) in [
        (
            "seekToBeginning",
            Some(1),
            "seekToBeginning: RuntimeError: asked to fail in seekToBeginning",
        ),
        (
            "__iter__",
            Some(1),
            "iterating: RuntimeError: asked to fail in __iter__",
        ),
        // An exception from close is logged, not raised (as Hermes's own context does).
        (
            "close",
            Some(0),
            "close: RuntimeError: asked to fail in close",
        ),
    ] {
        let config =
            hermes_plugin_config(&dir, &fixture_bus(), &format!("fail_in = \"{method}\""), "");
        let out = run_once(&config);
        assert_eq!(out.code(), code, "{method}: {out}");
        assert!(out.stderr.contains(expected), "{method}: {out}");
        assert!(out.stderr.contains("(at sqlitelike.py:"), "{method}: {out}");
    }
    let config = hermes_plugin_config(
        &dir,
        &fixture_bus(),
        "fail_in = \"findNextEventOfCategory\"",
        "[consumer.hermes]\nenabled = true",
    );
    let out = run_once(&config);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(
            "findNextEventOfCategory: RuntimeError: asked to fail in findNextEventOfCategory"
        ),
        "{out}"
    );
    // A module whose requirement is not installed: named, with the requirement.
    let needy = hermes_plugin_config(&dir, &fixture_bus(), "", "");
    let text = std::fs::read_to_string(&needy)
        .expect("config")
        .edit("hermes/sqlitelike", "hermes/needsmodule")
        .edit("SqliteLikeConsumerPlugin", "NeedsModulePlugin");
    std::fs::write(&needy, text).expect("config");
    let out = run(&["check", "--config", &needy.to_string_lossy()], LIMIT);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("needs the module 'buslink_test_absent_package'")
            && out
                .stderr
                .contains("its requirements.txt lists 'buslink-test-absent-package==1.0'"),
        "{out}"
    );
    // An offset not on the bus: `offsets set` refuses it, naming it.
    let config = hermes_plugin_config(&dir, &fixture_bus(), "", "");
    let set = run(
        &[
            "offsets",
            "set",
            "--config",
            &config.to_string_lossy(),
            "900",
        ],
        LIMIT,
    );
    assert_ne!(set.code(), Some(0), "{set}");
    assert!(set.stderr.contains("900"), "{set}");
    // A directory without its module.
    let empty = dir.join("plugins/nothing");
    std::fs::create_dir_all(&empty).expect("dir");
    let text = std::fs::read_to_string(&config).expect("config").edit(
        &plugin_dir().display().to_string(),
        &empty.display().to_string(),
    );
    std::fs::write(&config, text).expect("config");
    let out = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("nothing.py"), "{out}");
}

/// A config on the `nocheck` test plugin (an in-memory bus whose seek checks nothing).
fn nocheck_config(dir: &TestDir, settings: &str) -> PathBuf {
    let text = format!(
        "state_dir = \"state\"\n\n[consumer]\nname = \"test\"\n\
         plugin = {{ hermes_plugin = \"{plugin}\" }}\nclass = \"NoCheckPlugin\"\n\
         timeout_ms = 300\n\n[consumer.settings]\n{settings}\n\n{handler}",
        plugin = workspace_root()
            .join("tests/fixture-plugins/hermes/nocheck")
            .display(),
        handler = jsonl_handler("all", ""),
    );
    dir.write("buslink.toml", text)
}

#[test]
fn a_seek_that_cannot_fail_is_checked_against_the_first_event_read() {
    // Offsets 0, 2, 4, ...: a start at 5 finds 6 first, a gap of one offset, said.
    let dir = TestDir::new("hermes-nocheck-gap");
    let config = nocheck_config(&dir, "events = 10\nstep = 2");
    let config_arg = config.to_string_lossy().into_owned();
    let set = run(&["offsets", "set", "--config", &config_arg, "5"], LIMIT);
    assert_eq!(set.code(), Some(0), "{set}");
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        [6, 8, 10, 12, 14, 16, 18]
    );
    assert!(out.stderr.contains("offsets 5 to 5"), "the gap said: {out}");

    // A seek the plugin ignores (it starts over at 0): the first event read is not the one
    // asked for, and nothing is handed to the handlers.
    let broken = TestDir::new("hermes-nocheck-broken");
    let config = nocheck_config(&broken, "events = 10\nignore_seek = true");
    let config_arg = config.to_string_lossy().into_owned();
    let set = run(&["offsets", "set", "--config", &config_arg, "5"], LIMIT);
    assert_eq!(set.code(), Some(0), "{set}");
    let out = run_once(&config);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .contains("after seek(5) the plugin read offset 0 first: 5 is not on the bus"),
        "{out}"
    );
    assert!(read_lines(&broken, "out/all.jsonl").is_empty());
}

#[test]
fn plugins_describe_shows_a_hermes_plugin_s_settings_schema() {
    let out = run(
        &[
            "plugins",
            "describe",
            &plugin_dir().to_string_lossy(),
            "SqliteLikeConsumerPlugin",
        ],
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "{out}");
    for text in [
        "SqliteLikeConsumerPlugin (consumer class of plugin hermes-sqlitelike hermes",
        "Reads a Hermes sqlite bus (test plugin)",
        "config-schema-plugin-sqlitelike.yml, Cerberus rules",
        "uri:\n  type: string",
    ] {
        assert!(out.stdout.contains(text), "expected {text:?}:\n{out}");
    }
}

#[test]
fn offsets_of_other_python_types_resume_or_are_refused_naming_the_event() {
    // Strings: delivered as string offsets; a restart seeks the last one and drops it when the
    // plugin reads it again (nothing repeated).
    let dir = TestDir::new("hermes-offset-str");
    let config = nocheck_config(&dir, "events = 6\noffset_type = \"str\"");
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    let lines = read_lines(&dir, "out/all.jsonl");
    let got: Vec<&str> = lines
        .iter()
        .map(|line| line["offset"].as_str().expect("a string offset"))
        .collect();
    assert_eq!(got, ["k000", "k001", "k002", "k003", "k004", "k005"]);
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 6, "{again}");

    // A bool, an int beyond 64 bits, a NaN: refused, naming the event, nothing handed over.
    for (kind, expected) in [
        ("bool", "offset False is not an offset"),
        ("bigint", "beyond a signed 64-bit integer"),
        ("nan", "offset NaN is not an offset"),
    ] {
        let dir = TestDir::new("hermes-offset-bad");
        let config = nocheck_config(&dir, &format!("events = 3\noffset_type = \"{kind}\""));
        let out = run_once(&config);
        assert_ne!(out.code(), Some(0), "{kind}: {out}");
        assert!(out.stderr.contains(expected), "{kind}: {out}");
        assert!(
            out.stderr.contains("<Event(base_added, T, 0)>"),
            "names the event: {out}"
        );
        assert!(read_lines(&dir, "out/all.jsonl").is_empty(), "{kind}");
    }
}

#[test]
fn naive_local_timestamps_are_read_in_the_daemon_s_time_zone() {
    // The plugin writes `datetime.fromtimestamp` (local) times; under TZ=Asia/Tokyo and
    // TZ=America/Sao_Paulo buslink must give the same instants as the Rust plugin.
    let library_dir = TestDir::new("hermes-tz-lib");
    let library = sqlite_config(&library_dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    assert_eq!(run_once(&library).code(), Some(0));
    let expected: Vec<Value> = read_lines(&library_dir, "out/all.jsonl")
        .iter()
        .map(|line| line["timestamp"].clone())
        .collect();
    for (zone, abbreviation) in [("Asia/Tokyo", "JST"), ("America/Sao_Paulo", "-03")] {
        let dir = TestDir::new("hermes-tz");
        let config = hermes_plugin_config(&dir, &fixture_bus(), "", "");
        let mut command = buslink_testkit::process::buslink(&[
            "run",
            "--once",
            "--config",
            &config.to_string_lossy(),
        ]);
        command.env("TZ", zone);
        let out = buslink_testkit::Daemon::start(command).finish(LIMIT);
        assert_eq!(out.code(), Some(0), "{zone}: {out}");
        // The child really ran in that zone (the plugin logs its local zone's name).
        assert!(
            out.stderr
                .contains(&format!("sqlitelike: local time zone {abbreviation}")),
            "{zone}: {out}"
        );
        let got: Vec<Value> = read_lines(&dir, "out/all.jsonl")
            .iter()
            .map(|line| line["timestamp"].clone())
            .collect();
        assert_eq!(got, expected, "{zone}");
    }
}

#[test]
fn check_validates_a_hermes_plugin_s_settings_against_its_cerberus_schema() {
    // Debian's interpreter, where `.ci/setup` installs Cerberus and PyYAML (python3-cerberus,
    // python3-yaml): the schema is read only when both import.
    let python = "/usr/bin/python3";
    let probe = std::process::Command::new(python)
        .args(["-c", "import cerberus, yaml"])
        .output()
        .expect("Debian's python3");
    assert!(
        probe.status.success(),
        "{python} cannot import cerberus and yaml (apt-get install python3-cerberus \
         python3-yaml; `bash .ci/setup` does): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let dir = TestDir::new("hermes-cerberus");
    let bus = bus_with(&dir, 3);
    let config = |settings: &str| {
        let config = hermes_plugin_config(&dir, &bus, settings, "");
        set_plugin_key(&config, "python", Path::new(python));
        config
    };
    let check = |config: &Path| run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    // Settings the schema takes pass.
    let good = check(&config(""));
    assert_eq!(good.code(), Some(0), "{good}");
    // A key the schema does not know: named, at its line.
    let unknown = check(&config("colour = \"red\""));
    assert_eq!(unknown.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("consumer.settings.colour"),
        "{unknown}"
    );
    assert!(unknown.stderr.contains("unknown field"), "{unknown}");
    assert!(
        unknown
            .stderr
            .contains("config-schema-plugin-sqlitelike.yml"),
        "{unknown}"
    );
    // A value the schema refuses: named too.
    let text = std::fs::read_to_string(config("")).expect("config");
    let empty = dir.write(
        "empty.toml",
        text.edit(&format!("uri = \"{}\"", bus.display()), "uri = \"\""),
    );
    let refused = check(&empty);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused.stderr.contains("consumer.settings.uri"),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("empty values not allowed"),
        "{refused}"
    );
}

/// A stand-in for a Hermes source tree: `lib.plugins` and `lib.datamodel.event` whose events
/// say where they come from (`"lib": "hermes_root"` in their body).
fn fake_hermes_root(dir: &TestDir) -> PathBuf {
    let root = dir.join("hermes-root");
    std::fs::create_dir_all(root.join("lib/datamodel")).expect("hermes root");
    for (path, text) in [
        ("lib/__init__.py", ""),
        ("lib/datamodel/__init__.py", ""),
        (
            "lib/plugins.py",
            "class AbstractMessageBusConsumerPlugin:\n    def __init__(self, settings):\n        \
             self._settings = dict(settings)\n",
        ),
        (
            "lib/datamodel/event.py",
            "import json\n\n\nclass Event:\n    @classmethod\n    def from_json(cls, data):\n        \
             event = cls()\n        event.__dict__.update(json.loads(data))\n        return event\n\n    \
             def to_json(self):\n        body = {k: v for k, v in self.__dict__.items() if k not in ('offset', 'timestamp')}\n        \
             body['lib'] = 'hermes_root'\n        return json.dumps(body)\n",
        ),
    ] {
        std::fs::write(root.join(path), text).expect("hermes root file");
    }
    root
}

/// With `hermes_root`, the plugin gets Hermes's own `lib` from that tree, not buslink's
/// stand-ins; a tree other users can change is refused like a plugin library, unless allowed.
#[test]
fn hermes_root_s_own_lib_is_the_one_imported_and_a_root_others_can_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("hermes-root");
    let bus = bus_with(&dir, 3);
    let root = fake_hermes_root(&dir);
    let config = hermes_plugin_config(&dir, &bus, "", "");
    set_plugin_key(&config, "hermes_root", &root);
    let out = run_once(&config);
    assert_eq!(out.code(), Some(0), "{out}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(lines.len(), 3, "{out}");
    for line in &lines {
        assert_eq!(line["event"]["lib"], "hermes_root", "{line}");
    }

    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::remove_file(dir.join("out/all.jsonl")).expect("output");
    let _ = std::fs::remove_dir_all(dir.join("state"));
    let refused = run_once(&config);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused.stderr.contains(&root.display().to_string())
            && refused
                .stderr
                .contains("is writable by every user (mode 777)"),
        "{refused}"
    );
    assert!(!dir.join("out/all.jsonl").exists(), "{refused}");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("allow_insecure_plugins = true\n{text}")).expect("config");
    let allowed = run_once(&config);
    assert_eq!(allowed.code(), Some(0), "{allowed}");
    assert!(allowed.stderr.contains("run anyway"), "{allowed}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 3, "{allowed}");
}

/// An interpreter without Cerberus (Debian's, its site packages left out by `-S`): the
/// schema is not applied, so a key it does not know passes, and the log says the settings
/// were not checked against it and which module is missing.
#[test]
fn without_cerberus_the_schema_is_not_applied_and_the_log_says_so() {
    let dir = TestDir::new("hermes-no-cerberus");
    let bus = bus_with(&dir, 3);
    let python = dir.join("python-without-site");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&python, "#!/bin/sh\nexec /usr/bin/python3 -S \"$@\"\n").expect("wrapper");
        std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let probe = std::process::Command::new(&python)
        .args(["-c", "import cerberus"])
        .output()
        .expect("the wrapped python3");
    assert!(
        !probe.status.success(),
        "cerberus imports without site packages"
    );
    let config = hermes_plugin_config(&dir, &bus, "colour = \"red\"", "");
    set_plugin_key(&config, "python", &python);
    let check = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check.stderr.contains(
            "the settings are not checked against the plugin's config-schema-plugin-sqlitelike.yml"
        ) && check.stderr.contains("cannot import cerberus"),
        "{check}"
    );
}
