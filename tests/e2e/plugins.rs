//! `buslink plugins` (list, describe) and `buslink query` (a plugin's own commands).

use crate::common::*;
use crate::loading::other_api_plugin;
use buslink_testkit::process::run;
use buslink_testkit::workspace::plugin_lib;
use buslink_testkit::{build_dir, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
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
        "plugin sqlite 0.1.0 (plugin-api 0.5.0)",
        "SqliteConsumer (consumer): Hermes sqlite bus",
        "built against plugin-api 0.9.0, but this buslink uses plugin-api 0.5.0",
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
fn query_help_cites_a_command_a_plugin_has() {
    let help =
        buslink_testkit::process::run(&["query", "--help"], std::time::Duration::from_secs(60));
    assert_eq!(help.code(), Some(0), "{help}");
    assert!(help.stdout.contains("HMB's `status`"), "{help}");
    assert!(!help.stdout.contains("`features`"), "{help}");
}
