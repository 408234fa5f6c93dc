//! The plugin author's path: a plugin crate outside the workspace, depending on plugin-api by
//! path, built on its own, dropped in a directory, then listed, checked and consumed from by the
//! already-built `buslink`.

use crate::common::*;
use crate::loading::{cargo_build_outside, write_if_changed};
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{workspace_root, TestDir};
use std::time::Duration;

#[test]
fn a_plugin_built_outside_the_workspace_is_listed_checked_and_consumed() {
    // The author copies plugins/example and points it at plugin-api.
    let root = workspace_root();
    let source = buslink_testkit::build_dir().join("../fixture-sources/my-bus");
    let api = root.join("plugin-api");
    let manifest = std::fs::read_to_string(root.join("plugins/example/Cargo.toml"))
        .expect("example manifest")
        .edit("name = \"buslink-example\"", "name = \"my-bus\"")
        .edit(
            "path = \"../../plugin-api\"",
            &format!("path = \"{}\"", api.display()),
        )
        + "\n[workspace]\n";
    write_if_changed(&source.join("Cargo.toml"), &manifest);
    let code = std::fs::read_to_string(root.join("plugins/example/src/lib.rs")).expect("example");
    write_if_changed(
        &source.join("src/lib.rs"),
        &code.edit("name: \"example\"", "name: \"my-bus\""),
    );
    let _ = std::fs::copy(root.join("Cargo.lock"), source.join("Cargo.lock"));
    let built = cargo_build_outside(&source.join("Cargo.toml"), "my-bus").join("libmy_bus.so");

    // Ops drop the library in a directory.
    let dir = TestDir::new("plugin-author");
    std::fs::create_dir_all(dir.join("plugins")).expect("dir");
    std::fs::copy(&built, dir.join("plugins/libmy_bus.so")).expect("deploy");
    let listed = run(
        &["plugins", &dir.join("plugins").to_string_lossy()],
        Duration::from_secs(60),
    );
    assert_eq!(listed.code(), Some(0), "{listed}");
    assert!(
        listed
            .stdout
            .contains("plugin my-bus 0.1.0 (plugin-api 0.5.0)"),
        "{listed}"
    );
    assert!(
        listed.stdout.contains("JsonLinesConsumer (consumer)"),
        "{listed}"
    );

    let config = dir.write(
        "buslink.toml",
        format!(
            "state_dir = \"state\"\nplugin_dirs = [\"plugins\"]\n\n[consumer]\nname = \"test\"\nplugin = \"my-bus\"\nclass = \"JsonLinesConsumer\"\ntimeout_ms = 100\n\n[consumer.settings]\npath = \"events.jsonl\"\n\n{}",
            jsonl_handler("all", "")
        ),
    );
    let checked = run(
        &["check", "--config", &config.to_string_lossy()],
        Duration::from_secs(60),
    );
    assert_eq!(checked.code(), Some(0), "{checked}");
    assert!(checked.stdout.contains("plugin: my-bus 0.1.0"), "{checked}");

    dir.write("events.jsonl", "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    // A writer appends two lines and starts a third: the partial line waits.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.jsonl"))
        .expect("open");
    std::io::Write::write_all(&mut file, b"{\"n\":4}\n{\"n\":5}\n{\"n\":").expect("append");
    let second = run_once(&config);
    assert_eq!(second.code(), Some(0), "{second}");
    let lines = read_lines(&dir, "out/all.jsonl");
    let numbers: Vec<i64> = lines
        .iter()
        .filter_map(|l| l["event"]["n"].as_i64())
        .collect();
    assert_eq!(
        numbers,
        vec![1, 2, 3, 4, 5],
        "each line once, resumed after the cached byte offset"
    );
    assert_eq!(offsets(&lines), vec![0, 8, 16, 24, 32]);
    let cache = read_cache(&dir);
    assert_eq!(cache["last_offset"]["int"], 32);
    assert!(
        cache.get("next_offset").is_none(),
        "byte offsets have no successor: {cache}"
    );
}

/// The fenced blocks of `language` in a Markdown text, in order.
fn fenced_blocks(markdown: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match current.as_mut() {
            Some(block) if line.trim_start() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None if line.trim_start() == format!("```{language}") => current = Some(String::new()),
            None => {}
        }
    }
    blocks
}

#[test]
fn the_plugin_authors_guide_compiles_and_its_config_runs() {
    let root = workspace_root();
    let guide = std::fs::read_to_string(root.join("docs/plugin-authors.md")).expect("guide");
    let toml_blocks = fenced_blocks(&guide, "toml");
    let rust_blocks = fenced_blocks(&guide, "rust");
    assert!(
        rust_blocks.len() >= 5,
        "the guide's code: {} blocks",
        rust_blocks.len()
    );

    // The crate exactly as the guide writes it, plugin-api found where this checkout has it.
    let source = buslink_testkit::build_dir().join("../fixture-sources/guide-plugin");
    let manifest = toml_blocks[0].edit(
        "path = \"/path/to/buslink/plugin-api\"",
        &format!("path = \"{}\"", root.join("plugin-api").display()),
    ) + "\n[workspace]\n";
    assert!(manifest.contains("name = \"my-bus\""), "{manifest}");
    write_if_changed(&source.join("Cargo.toml"), &manifest);
    write_if_changed(&source.join("src/lib.rs"), &rust_blocks.concat());
    let _ = std::fs::copy(root.join("Cargo.lock"), source.join("Cargo.lock"));
    let built = cargo_build_outside(&source.join("Cargo.toml"), "my-bus").join("libmy_bus.so");

    // The guide's config, the library dropped in `plugins/`.
    let dir = TestDir::new("guide-plugin");
    std::fs::create_dir_all(dir.join("plugins")).expect("dir");
    std::fs::copy(&built, dir.join("plugins/libmy_bus.so")).expect("deploy");
    let config_text = toml_blocks
        .iter()
        .find(|block| block.contains("class = \"LinesConsumer\""))
        .expect("the guide's example config");
    let config = dir.write("my.toml", config_text);
    let event = |eventtype: &str, key: i64| {
        format!(
            "{{\"evcategory\":\"base\",\"eventtype\":\"{eventtype}\",\"objtype\":\"Users\",\
             \"objpkey\":{key},\"objattrs\":{{}},\"step\":0,\"isPartiallyProcessed\":false}}\n"
        )
    };
    dir.write(
        "events.txt",
        event("added", 1) + &event("added", 2) + &event("added", 3),
    );
    let checked = run(
        &["check", "--config", &config.to_string_lossy()],
        Duration::from_secs(60),
    );
    assert_eq!(checked.code(), Some(0), "{checked}");
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(first.stdout.lines().count(), 3, "{first}");

    // A restart: the handler restores its saved set; the new lines bring it up to date.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("events.txt"))
        .expect("open");
    std::io::Write::write_all(&mut file, event("removed", 2).as_bytes()).expect("append");
    let second = run_once(&config);
    assert_eq!(second.code(), Some(0), "{second}");
    assert_eq!(
        second.stdout.lines().count(),
        1,
        "only the new line: {second}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&dir.read("objects.json")).expect("the saved set");
    assert_eq!(saved, serde_json::json!({"Users": ["1", "3"]}));
}
