//! Loading plugins: every way a library can be unusable gets one clear error, and a plugin
//! that panics never takes the host down.

use crate::common::*;
use buslink_testkit::process::run_once;
use buslink_testkit::workspace::plugin_lib;
use buslink_testkit::{build_dir, workspace_root, Daemon, TestDir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// A config whose consumer uses `plugin` (a name or a path) and `class`, with `settings`.
fn plugin_config(dir: &TestDir, plugin: &str, class: &str, settings: &str) -> PathBuf {
    let consumer = ConsumerSpec {
        plugin,
        class,
        timeout_ms: 100,
        extra: "",
        settings,
    };
    consumer_config(dir, consumer, &jsonl_handler("all", ""))
}

fn assert_refused(dir: &TestDir, plugin: &str, expected: &[&str]) {
    let config = plugin_config(dir, plugin, "SqliteConsumer", "uri = \"bus.sqlite\"");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    for text in expected {
        assert!(run.stderr.contains(text), "expected {text:?} in:\n{run}");
    }
    // One clear line, not pages of layout dumps or backtraces.
    assert!(run.stderr.lines().count() <= 3, "too verbose:\n{run}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = TestDir::new("missing-lib");
    let path = dir.join("nowhere/libbuslink_x.so");
    assert_refused(
        &dir,
        &path.to_string_lossy(),
        &[&path.to_string_lossy(), "no such file"],
    );
}

#[test]
fn an_unknown_plugin_name_lists_the_paths_tried() {
    let dir = TestDir::new("unknown-plugin");
    let tried = build_dir().join("libbuslink_nosuchbus.so");
    assert_refused(
        &dir,
        "nosuchbus",
        &["plugin 'nosuchbus' not found", &tried.to_string_lossy()],
    );
}

#[test]
fn a_directory_is_refused() {
    let dir = TestDir::new("dir-lib");
    std::fs::create_dir_all(dir.join("plugin.so")).expect("dir");
    let path = dir.join("plugin.so");
    assert_refused(
        &dir,
        &path.to_string_lossy(),
        &[&path.to_string_lossy(), "is a directory"],
    );
}

#[test]
fn a_text_file_is_refused() {
    let dir = TestDir::new("text-lib");
    let path = dir.write("libbuslink_text.so", "this is not a library\n");
    assert_refused(
        &dir,
        &path.to_string_lossy(),
        &[&path.to_string_lossy(), "not a loadable library"],
    );
}

#[test]
fn a_library_that_is_not_a_plugin_is_refused() {
    let dir = TestDir::new("not-plugin");
    let path = build_dir().join("libnot_a_plugin.so");
    assert!(
        path.is_file(),
        "fixture library {} was built",
        path.display()
    );
    assert_refused(
        &dir,
        &path.to_string_lossy(),
        &[&path.to_string_lossy(), "not a buslink plugin"],
    );
}

/// Builds `tests/fixture-plugins/other-api` against a copy of plugin-api whose version is
/// `0.9.0`, in a workspace and target directory of its own; returns the library.
pub fn other_api_plugin() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let root = workspace_root();
        let work = build_dir().join("../fixture-sources/other-api");
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to.join("src")).expect("fixture dirs");
            for entry in std::fs::read_dir(from.join("src")).expect("fixture sources") {
                let entry = entry.expect("dir entry");
                let target = to.join("src").join(entry.file_name());
                // Only rewrite what changed, so cargo's incremental build stays warm.
                let text = std::fs::read(entry.path()).expect("source");
                if std::fs::read(&target).ok().as_deref() != Some(&text[..]) {
                    std::fs::write(&target, text).expect("copy source");
                }
            }
        };
        copy(&root.join("plugin-api"), &work.join("plugin-api"));
        copy(
            &root.join("tests/fixture-plugins/other-api"),
            &work.join("plugin"),
        );
        let api_manifest = std::fs::read_to_string(root.join("plugin-api/Cargo.toml"))
            .expect("plugin-api manifest");
        // The library only: its benches and dev-dependencies are not copied.
        let library_part = api_manifest
            .split("\n[dev-dependencies]")
            .next()
            .unwrap_or(&api_manifest);
        let api_manifest = library_part.replacen("version = \"0.5.0\"", "version = \"0.9.0\"", 1);
        assert!(
            api_manifest.contains("version = \"0.9.0\""),
            "plugin-api version bumped"
        );
        write_if_changed(&work.join("plugin-api/Cargo.toml"), &api_manifest);
        let plugin_manifest =
            std::fs::read_to_string(root.join("tests/fixture-plugins/other-api/Cargo.toml"))
                .expect("fixture manifest");
        write_if_changed(&work.join("plugin/Cargo.toml"), &plugin_manifest);
        // The workspace manifest: the real one's shared settings, other members.
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
        let start = workspace.find("members = [").expect("members list");
        let end = start + workspace[start..].find(']').expect("end of members");
        let workspace = format!(
            "{}members = [\"plugin-api\", \"plugin\"]{}",
            &workspace[..start],
            &workspace[end + 1..]
        );
        let workspace = workspace
            .lines()
            .filter(|line| !line.starts_with("exclude"))
            .collect::<Vec<_>>()
            .join("\n");
        write_if_changed(&work.join("Cargo.toml"), &workspace);
        let _ = std::fs::copy(root.join("Cargo.lock"), work.join("Cargo.lock"));
        cargo_build_outside(&work.join("Cargo.toml"), "buslink-fixture-other-api")
            .join("libbuslink_other_api.so")
    })
}

/// Builds a package of a workspace that lives outside ours, offline (every dependency is
/// already in the local registry, with our Cargo.lock's versions), into a target directory
/// shared by such fixtures; returns the directory of its artefacts.
pub fn cargo_build_outside(manifest: &Path, package: &str) -> PathBuf {
    let target = build_dir().join("../fixture-builds");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--offline", "-p", package, "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building {package} ({}) failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    target.join("debug")
}

pub fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dir");
        }
        std::fs::write(path, text).expect("write fixture file");
    }
}

#[test]
fn a_plugin_built_against_another_plugin_api_is_refused_naming_both_versions() {
    let library = other_api_plugin();
    let dir = TestDir::new("other-api");
    let config = plugin_config(&dir, &library.to_string_lossy(), "OtherApiConsumer", "");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    for text in [
        library.to_string_lossy().as_ref(),
        "built against plugin-api 0.9.0",
        "this buslink uses plugin-api 0.5.0",
        "rebuild the plugin against plugin-api 0.5.0",
    ] {
        assert!(run.stderr.contains(text), "expected {text:?} in:\n{run}");
    }
}

fn faulty(dir: &TestDir, settings: &str) -> PathBuf {
    plugin_config(dir, "faulty", "FaultyConsumer", settings)
}

#[test]
fn a_panic_in_any_plugin_method_is_contained_and_reported() {
    for (method, reported) in [
        ("new", "in new()"),
        ("open", "in open()"),
        ("seek", "in seek_to_beginning()"),
        ("poll", "in poll()"),
    ] {
        let dir = TestDir::new("panic");
        let config = faulty(&dir, &format!("panic_in = \"{method}\""));
        let run = run_once(&config);
        // Exit 1 (a runtime failure), not an abort by a signal.
        assert_eq!(run.code(), Some(1), "panic in {method}: {run}");
        for text in [
            "plugin 'faulty'",
            "'FaultyConsumer'",
            reported,
            "deliberate panic",
        ] {
            assert!(
                run.stderr.contains(text),
                "panic in {method}: expected {text:?}:\n{run}"
            );
        }
    }
}

#[test]
fn events_handled_before_a_panic_are_committed_and_the_panic_does_not_abort() {
    let dir = TestDir::new("panic-later");
    let config = faulty(&dir, "events = 20\npanic_in = \"poll\"\npanic_at_event = 8");
    // Batches of 5: the first batch (1-5) is handled, the panic hits while filling 6-10.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .edit("timeout_ms = 100", "timeout_ms = 100\nbatch_size = 5");
    std::fs::write(&config, text).expect("config");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("in poll()"), "{run}");
    // Poisoned: the host's later close() is refused, and says why.
    assert!(
        run.stderr.contains("unusable after it panicked in poll()"),
        "{run}"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 5);
}

#[test]
fn a_panic_in_close_is_logged_and_the_run_still_succeeds() {
    let dir = TestDir::new("panic-close");
    let run = run_once(&faulty(&dir, "events = 3\npanic_in = \"close\""));
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("in close()"), "{run}");
    assert_eq!(offsets(&read_lines(&dir, "out/all.jsonl")), vec![1, 2, 3]);
}

#[test]
fn string_offsets_resume_strictly_after_the_cached_one() {
    let dir = TestDir::new("string-offsets");
    let run = run_once(&faulty(&dir, "events = 10\nstring_offsets = true"));
    assert_eq!(run.code(), Some(0), "{run}");
    let cache = read_cache(&dir);
    assert_eq!(cache["last_offset"]["string"], "ev-0010");
    assert!(
        cache.get("next_offset").is_none(),
        "strings have no successor: {cache}"
    );
    // The bus grows; the next run starts right after ev-0010.
    let run = run_once(&faulty(&dir, "events = 15\nstring_offsets = true"));
    assert_eq!(run.code(), Some(0), "{run}");
    let lines = read_lines(&dir, "out/all.jsonl");
    let got: Vec<&str> = lines.iter().filter_map(|l| l["offset"].as_str()).collect();
    let expected: Vec<String> = (1..=15).map(|i| format!("ev-{i:04}")).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_bus_that_cannot_be_reached_is_retried_with_backoff() {
    let dir = TestDir::new("retry-open");
    let config = faulty(&dir, "events = 4\nfailing_opens = 2");
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for(
        "events after two failed opens",
        Duration::from_secs(60),
        |_| count_lines(&out) >= 4,
    );
    let run = daemon.terminate(Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains("deliberate connect failure") && l.contains("retrying in"))
            .count(),
        2,
        "{run}"
    );
    assert!(run.stderr.contains("retrying in"), "{run}");
}

#[test]
fn the_sqlite_plugin_is_found_by_library_file_name_too() {
    let dir = TestDir::new("by-file-name");
    let name = plugin_lib("sqlite")
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("file name");
    let config = plugin_config(
        &dir,
        &name,
        "SqliteConsumer",
        &format!("uri = \"{}\"", fixture_bus().display()),
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 163);
}

#[test]
fn a_handler_class_named_as_the_consumer_is_refused_naming_its_kind() {
    let dir = TestDir::new("wrong-kind");
    let config = plugin_config(&dir, "statefiles", "StateFilesHandler", "dir = \"view\"");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("consumer.class"), "{run}");
    assert!(run.stderr.contains("its consumer classes: none"), "{run}");
    assert!(
        run.stderr
            .contains("'StateFilesHandler' is a handler class: use it in a [[handlers]] entry"),
        "{run}"
    );
}

#[test]
fn a_plugin_library_other_users_could_change_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("insecure-plugin");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    let library = plugins.join("libbuslink_sqlite.so");
    std::fs::copy(plugin_lib("sqlite"), &library).expect("copy");
    let config_with = |extra: &str| {
        let text = format!(
            "{extra}state_dir = \"state\"\nplugin_dirs = [\"plugins\"]\n[consumer]\nname = \"test\"\n\
             plugin = \"sqlite\"\nclass = \"SqliteConsumer\"\n[consumer.settings]\nuri = \"{}\"\n\
             [[handlers]]\nname = \"all\"\ntype = \"jsonl\"\npath = \"out/all.jsonl\"\n",
            fixture_bus().display()
        );
        dir.write("buslink.toml", text)
    };
    for (what, file, mode) in [
        ("a world-writable library", &library, 0o666),
        ("a world-writable directory", &plugins, 0o777),
    ] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let config = config_with("");
        let refused = run_once(&config);
        assert_eq!(refused.code(), Some(2), "{what}: {refused}");
        assert!(refused.stderr.contains("not loaded:"), "{what}: {refused}");
        assert!(
            refused.stderr.contains("allow_insecure_plugins = true"),
            "{what}: says how to allow it: {refused}"
        );
        let listed = buslink_testkit::process::run(
            &["plugins", "--config", &config.to_string_lossy()],
            std::time::Duration::from_secs(60),
        );
        assert!(listed.stdout.contains("not usable:"), "{what}: {listed}");
        // Allowed on purpose: loaded, with a warning.
        let allowed = run_once(&config_with("allow_insecure_plugins = true\n"));
        assert_eq!(allowed.code(), Some(0), "{what}: {allowed}");
        assert!(
            allowed.stderr.contains("loaded anyway"),
            "{what}: {allowed}"
        );
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
        std::fs::remove_dir_all(dir.join("state")).expect("fresh state");
    }
}
