//! Every example config in `config/`, followed as its comments say, shows events on a fresh
//! machine. Each test copies the config (and the demo bus) into a fresh directory laid out like
//! the repository (`config/`, `var/`), points `plugin_dirs` at this build and, for HMB, the URL
//! at an in-repo server, then runs the recipe.

use buslink_hmb_server::{Server, Settings};
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{build_dir, workspace_root, TestDir};
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

/// Copies `config/NAME` into `dir/config/` with `plugin_dirs` pointing at this build and the
/// given replacements made (each must apply: the example changed otherwise).
fn example(dir: &TestDir, name: &str, replace: &[(&str, &str)]) -> PathBuf {
    let source = workspace_root().join("config").join(name);
    let mut text = std::fs::read_to_string(&source).expect("example config");
    let plugins = format!("plugin_dirs = [\"{}\"]", build_dir().display());
    for (from, to) in [(r#"plugin_dirs = ["../target/release"]"#, plugins.as_str())]
        .iter()
        .chain(replace)
    {
        assert!(text.contains(from), "{name} no longer holds {from:?}");
        text = text.replace(from, to);
    }
    dir.write(format!("config/{name}"), text)
}

fn copy_demo_bus(dir: &TestDir) {
    std::fs::copy(
        workspace_root().join("config/demo-bus.sqlite"),
        dir.join("config/demo-bus.sqlite"),
    )
    .expect("demo bus copied");
}

#[test]
fn example_toml_prints_the_60_demo_events_then_resumes() {
    let dir = TestDir::new("example-demo");
    let config = example(&dir, "example.toml", &[]);
    copy_demo_bus(&dir);
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(first.stdout.lines().count(), 60, "{first}");
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(again.stdout, "", "nothing new the second time");
    assert!(again.stderr.contains("resumed at offset 61"), "{again}");
    // This run's count is told from the total.
    assert!(
        again
            .stderr
            .contains("0 events handled in this run (60 since the cache was created)"),
        "{again}"
    );
}

#[test]
fn hermes_client_toml_writes_the_state_of_every_object() {
    let dir = TestDir::new("example-hermes");
    let config = example(&dir, "hermes-client.toml", &[]);
    copy_demo_bus(&dir);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let state = dir.join("var/hermes-client/state");
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap_or_else(|e| panic!("{}: {e}\n{run}", state.display()))
        .filter_map(Result::ok)
        .collect();
    assert!(!files.is_empty(), "one file per object type: {run}");
}

#[test]
fn hmb_example_toml_prints_the_message_its_recipe_sends_and_never_a_touch() {
    let server = Server::start(Settings::for_tests()).expect("the HMB server starts");
    let url = server.bus_url("mybus");
    let dir = TestDir::new("example-hmb");
    let config = example(
        &dir,
        "hmb-example.toml",
        &[("http://127.0.0.1:8000/mybus", url.as_str())],
    );
    let config_text = config.to_string_lossy().into_owned();
    let sent = run(
        &[
            "query",
            "--config",
            &config_text,
            "send",
            "--queue",
            "SYSTEM_ALERT",
            "--type",
            "NOTICE",
            "--topic",
            "PICK",
            r#"{"mag": 3.5}"#,
        ],
        LIMIT,
    );
    assert_eq!(sent.code(), Some(0), "{sent}");
    // The recipe's `run`, here with `--once`: the message is printed.
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    let lines: Vec<serde_json::Value> = first
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("an event line"))
        .collect();
    assert_eq!(lines.len(), 1, "{first}");
    assert_eq!(lines[0]["event"]["type"], "NOTICE", "{first}");
    assert_eq!(lines[0]["event"]["data"]["mag"], 3.5, "{first}");
    // The run created the EVENTS queue with a TOUCH message; no start ever delivers it.
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(again.stdout, "", "{again}");
    assert!(!again.stdout.contains("TOUCH"), "{again}");
}

#[test]
fn several_consumers_toml_runs_both_consumers_each_with_its_own_offsets() {
    let dir = TestDir::new("example-several");
    let config = example(&dir, "several-consumers.toml", &[]);
    copy_demo_bus(&dir);
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    let lines = |name: &str| {
        std::fs::read_to_string(dir.join(format!("var/several/{name}.jsonl")))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    let (users, groups) = (lines("users"), lines("groups"));
    assert!(users > 0 && groups > 0, "{first}");
    let config_arg = config.to_string_lossy();
    for name in ["users", "groups"] {
        let show = run(
            &[
                "offsets",
                "show",
                "--json",
                "--config",
                &config_arg,
                "--consumer",
                name,
            ],
            LIMIT,
        );
        let record: serde_json::Value = serde_json::from_str(&show.stdout).expect("JSON");
        assert_eq!(record["last_offset"]["int"], 60, "{name}: {show}");
    }
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!((lines("users"), lines("groups")), (users, groups));
    // The top-level keys are every consumer's: `plugins --config` needs no --consumer.
    let plugins = run(&["plugins", "--config", &config_arg], LIMIT);
    assert_eq!(plugins.code(), Some(0), "{plugins}");
    assert!(plugins.stdout.contains("SqliteConsumer"), "{plugins}");
}
