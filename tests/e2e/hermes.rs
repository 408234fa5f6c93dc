//! Hermes mode: initsync bootstrap like hermes-client, handler plugins, and the error queue.

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{fixture, hermes_events, Daemon, HermesBusWriter, TestDir};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn hermes_config(dir: &TestDir, use_first: bool, extra_handlers: &str) -> std::path::PathBuf {
    hermes_config_on(dir, &fixture_bus(), use_first, extra_handlers)
}

fn hermes_config_on(
    dir: &TestDir,
    bus: &std::path::Path,
    use_first: bool,
    extra_handlers: &str,
) -> std::path::PathBuf {
    let hermes = format!("[consumer.hermes]\nenabled = true\nuse_first_initsync = {use_first}");
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"state\"\ntype = \"plugin\"\nplugin = \"statefiles\"\n\
         class = \"StateFilesHandler\"\nsettings = {{ dir = \"view\" }}\n\n{extra_handlers}",
        jsonl_handler("all", "")
    );
    sqlite_config(dir, bus, &hermes, &handlers)
}

/// The fixture's rows: (msgid, event).
pub(crate) fn fixture_rows() -> Vec<(i64, Value)> {
    std::fs::read_to_string(fixture("hermes/bus-rows.jsonl"))
        .expect("bus-rows.jsonl")
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("row");
            let data: Value =
                serde_json::from_str(row["data"].as_str().expect("data")).expect("event");
            (row["msgid"].as_i64().expect("msgid"), data)
        })
        .collect()
}

/// What hermes-client would process, computed from the rows: the chosen complete initsync
/// sequence, then every base event after it.
pub(crate) fn expected_offsets(use_first: bool) -> (i64, i64, Vec<i64>) {
    let rows = fixture_rows();
    let mut sequences = Vec::new();
    let mut start = None;
    for (msgid, event) in &rows {
        match (event["evcategory"].as_str(), event["eventtype"].as_str()) {
            (Some("initsync"), Some("init-start")) => start = Some(*msgid),
            (Some("initsync"), Some("init-stop")) => {
                if let Some(s) = start.take() {
                    sequences.push((s, *msgid));
                }
            }
            _ => {}
        }
    }
    let (s, e) = if use_first {
        sequences[0]
    } else {
        sequences[sequences.len() - 1]
    };
    let offsets = rows
        .iter()
        .filter(|(msgid, event)| {
            let initsync = event["evcategory"] == "initsync";
            (*msgid >= s && *msgid <= e && initsync) || (*msgid > e && !initsync)
        })
        .map(|(msgid, _)| *msgid)
        .collect();
    (s, e, offsets)
}

/// The state of every object after `offsets`, computed directly from the rows.
pub(crate) fn expected_state(offsets: &[i64]) -> BTreeMap<String, Map<String, Value>> {
    let mut state: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (msgid, event) in fixture_rows() {
        if !offsets.contains(&msgid) {
            continue;
        }
        let objtype = event["objtype"].as_str().unwrap_or_default().to_owned();
        let key = event["objpkey"].to_string();
        let attrs = &event["objattrs"];
        match event["eventtype"].as_str().unwrap_or_default() {
            "init-start" => state.clear(),
            "added" => {
                state.entry(objtype).or_default().insert(key, attrs.clone());
            }
            "modified" => {
                let object = state
                    .entry(objtype)
                    .or_default()
                    .entry(key)
                    .or_insert_with(|| json!({}));
                for part in ["added", "modified"] {
                    for (name, value) in attrs[part].as_object().into_iter().flatten() {
                        object[name] = value.clone();
                    }
                }
                for name in attrs["removed"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(n, _)| n)
                {
                    object.as_object_mut().map(|o| o.remove(name));
                }
            }
            "removed" => {
                state.entry(objtype).or_default().remove(&key);
            }
            _ => {}
        }
    }
    state.retain(|_, objects| !objects.is_empty());
    state
}

pub(crate) fn saved_state(dir: &TestDir) -> BTreeMap<String, Map<String, Value>> {
    std::fs::read_dir(dir.join("view"))
        .expect("the state directory exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let objtype = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let objects: Map<String, Value> =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("JSON");
            (objtype, objects)
        })
        .filter(|(_, objects)| !objects.is_empty())
        .collect()
}

#[test]
fn both_initsync_choices_match_the_real_client_and_the_view_matches_the_bus() {
    for (use_first, real) in [(false, (79, 140, 164)), (true, (1, 55, 164))] {
        let dir = TestDir::new("hermes");
        let config = hermes_config(&dir, use_first, "");
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
        if use_first {
            // The real client's own cache file, captured with useFirstInitsyncSequence.
            let client: Value = serde_json::from_str(
                &std::fs::read_to_string(fixture("hermes/client-offset-cache.json"))
                    .expect("cache"),
            )
            .expect("JSON");
            assert_eq!(
                cache["initstartoffset"]["int"],
                client["content"]["initstartoffset"]
            );
            assert_eq!(
                cache["initstopoffset"]["int"],
                client["content"]["initstopoffset"]
            );
            assert_eq!(cache["next_offset"]["int"], client["content"]["nextoffset"]);
        }
        // Handlers saw the initsync objects, then the base events, in order.
        let (start, stop, expected) = expected_offsets(use_first);
        assert_eq!((start, stop), (real.0, real.1));
        let seen = offsets(&read_lines(&dir, "out/all.jsonl"));
        assert_eq!(seen, expected, "use_first {use_first}");
        // The materialised view equals the state the events describe.
        assert_eq!(
            saved_state(&dir),
            expected_state(&expected),
            "use_first {use_first}"
        );
        // A second run processes nothing twice.
        let run2 = run_once(&config);
        assert_eq!(run2.code(), Some(0), "{run2}");
        assert_eq!(offsets(&read_lines(&dir, "out/all.jsonl")), expected);
        assert!(run2.stderr.contains("resumed at offset 164"), "{run2}");
    }
}

#[test]
fn a_bus_without_a_complete_initsync_is_waited_for() {
    let dir = TestDir::new("hermes-wait");
    let bus = dir.join("bus.sqlite");
    let writer = HermesBusWriter::open(&bus).expect("bus");
    let events: Vec<(String, f64)> = hermes_events(40).collect();
    // init-start and a few objects, but no init-stop yet (it is event 25).
    for (data, ts) in &events[..10] {
        writer.append(data, *ts).expect("append");
    }
    let config = hermes_config_on(&dir, &bus, false, "");
    let once = run_once(&config);
    assert_eq!(once.code(), Some(0), "{once}");
    assert!(
        once.stderr.contains("no complete initsync sequence"),
        "{once}"
    );
    assert_eq!(
        count_lines(&dir.join("out/all.jsonl")),
        0,
        "nothing consumed"
    );

    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the wait", LIMIT, |d| {
        d.stderr().contains("waiting for one")
    });
    // The bus goes away for a moment while the daemon waits: retried (the consumer waiting for
    // the bus meanwhile), never the end of the daemon.
    let moved = dir.join("bus.moved");
    std::fs::rename(&bus, &moved).expect("moved away");
    daemon.wait_for("waiting for the bus", LIMIT, |d| {
        d.stderr().contains("consumer now waiting for the bus")
            && d.stderr()
                .contains("Hermes mode: looking for an initsync sequence: ")
    });
    std::fs::rename(&moved, &bus).expect("moved back");
    daemon.wait_for("connecting again", LIMIT, |d| {
        d.stderr().contains("(was waiting)")
    });
    for (data, ts) in &events[10..] {
        writer.append(data, *ts).expect("append");
    }
    daemon.wait_for("the replay and base events", LIMIT, |_| {
        count_lines(&out) >= 40
    });
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=40).collect::<Vec<_>>()
    );
}

/// A bus of events about two objects, interleaved: A (objpkey 1) at odd offsets, B (2) at even.
fn two_object_bus(dir: &TestDir, count: i64) -> std::path::PathBuf {
    let bus = dir.join("bus.sqlite");
    let writer = HermesBusWriter::open(&bus).expect("bus");
    for i in 1..=count {
        let key = if i % 2 == 1 { 1 } else { 2 };
        let event = json!({"evcategory": "base", "eventtype": "modified", "objtype": "Things",
            "objpkey": key, "objattrs": {"added": {}, "modified": {"n": i}, "removed": {}},
            "step": 0, "isPartiallyProcessed": false});
        writer
            .append(&event.to_string(), 1_700_000_000.0 + i as f64)
            .expect("append");
    }
    bus
}

fn queue_config(dir: &TestDir, bus: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let handler = format!(
        r#"[[handlers]]
name = "target"
type = "plugin"
plugin = "faulty"
class = "PanickyHandler"
settings = {{ record = "handled.txt", panic_on = "\"objpkey\":1,", panic_while = "broken" }}
retry = {{ attempts = 2, base_ms = 10 }}
on_failure = "error-queue"
{extra}
"#
    );
    sqlite_config(dir, bus, "", &handler)
}

fn handled(dir: &TestDir) -> Vec<i64> {
    dir.read("handled.txt")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
fn a_failing_object_waits_in_the_error_queue_while_others_flow_then_drains_in_order() {
    let dir = TestDir::new("error-queue");
    let bus = two_object_bus(&dir, 10);
    dir.write("broken", "");
    let config = queue_config(&dir, &bus, "retry_interval_ms = 100");
    let config_arg = config.to_string_lossy().into_owned();

    // Object A (odd offsets) fails (the handler plugin panics); B flows; the offset moves on.
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert!(first.stderr.contains("panicked"), "{first}");
    assert_eq!(handled(&dir), vec![2, 4, 6, 8, 10]);
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 10);
    let listed = run(
        &["errors", "list", "--json", "--config", &config_arg],
        LIMIT,
    );
    let queued: Vec<Value> = serde_json::from_str(&listed.stdout).expect("JSON");
    let queued_offsets: Vec<i64> = queued
        .iter()
        .map(|q| q["offset"]["int"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(queued_offsets, vec![1, 3, 5, 7, 9], "A's events, in order");
    assert!(queued[0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("deliberate panic")));
    assert!(queued[1]["error"].is_null(), "queued behind, never tried");

    // Survives a restart; while A is still broken nothing of A is handled.
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a failed retry", LIMIT, |d| {
        d.stderr().contains("failed again")
    });
    assert_eq!(handled(&dir), vec![2, 4, 6, 8, 10]);
    // The target recovers: the queue drains in order.
    std::fs::remove_file(dir.join("broken")).expect("recover");
    daemon.wait_for("the queue drained", LIMIT, |_| handled(&dir).len() >= 10);
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    assert_eq!(handled(&dir), vec![2, 4, 6, 8, 10, 1, 3, 5, 7, 9]);
    let listed = run(&["errors", "list", "--config", &config_arg], LIMIT);
    assert!(
        listed.stdout.contains("the error queue is empty"),
        "{listed}"
    );
}

#[test]
fn errors_retry_and_drop_commands() {
    let dir = TestDir::new("errors-commands");
    let bus = two_object_bus(&dir, 6);
    dir.write("broken", "");
    let config = queue_config(&dir, &bus, "");
    let config_arg = config.to_string_lossy().into_owned();
    assert_eq!(run_once(&config).code(), Some(0));
    let list = run(&["errors", "list", "--config", &config_arg], LIMIT);
    assert!(list.stdout.contains("3 queued event(s)"), "{list}");
    assert!(
        list.stdout
            .contains("#1 handler 'target' offset 1 object Things/1"),
        "{list}"
    );

    // Still broken: a retry changes nothing but the attempts.
    let retry = run(&["errors", "retry", "--config", &config_arg], LIMIT);
    assert_eq!(retry.code(), Some(0), "{retry}");
    assert!(
        retry.stdout.contains("0 queued event(s) handled, 3 left"),
        "{retry}"
    );
    // Drop the first, repair, retry: the other two are handled in order.
    let dropped = run(&["errors", "drop", "--config", &config_arg, "1"], LIMIT);
    assert_eq!(dropped.code(), Some(0), "{dropped}");
    std::fs::remove_file(dir.join("broken")).expect("recover");
    let retry = run(&["errors", "retry", "--config", &config_arg], LIMIT);
    assert!(
        retry.stdout.contains("2 queued event(s) handled, 0 left"),
        "{retry}"
    );
    assert_eq!(handled(&dir), vec![2, 4, 6, 3, 5]);
}

#[test]
fn an_event_with_a_lone_surrogate_escape_reaches_the_view_as_hermes_reads_it() {
    let dir = TestDir::new("hermes-surrogate");
    let bus = dir.join("bus.sqlite");
    let writer = HermesBusWriter::open(&bus).expect("bus");
    let mut replaced = false;
    for (data, timestamp) in hermes_events(60) {
        // Python's json writes an undecodable byte of a name as a lone surrogate escape.
        let data = if !replaced && data.contains("\"group1\"") {
            replaced = true;
            data.replacen("\"group1\"", "\"Ren\\udce9\"", 1)
        } else {
            data
        };
        writer.append(&data, timestamp).expect("append");
    }
    assert!(replaced, "the bus has a group1");
    let run = run_once(&hermes_config_on(&dir, &bus, false, ""));
    assert_eq!(run.code(), Some(0), "{run}");
    // The event line keeps the body as JSON, the escape as written.
    let text = dir.read("out/all.jsonl");
    let line = text
        .lines()
        .find(|line| line.contains("Ren\\udce9"))
        .unwrap_or_else(|| panic!("no line keeps the escape:\n{text}"));
    assert!(
        line.contains("\"event\":{") && !line.contains("body_text"),
        "{line}"
    );
    // The view holds the object (a lone surrogate has no Rust string: it reads as U+FFFD).
    let view = saved_state(&dir);
    let names: Vec<&str> = view["SRVGroups"]
        .values()
        .filter_map(|group| group["name"].as_str())
        .collect();
    assert!(names.contains(&"Ren\u{fffd}"), "{names:?}");
}

/// Writes a hermes-client cache as the client does (`_hermes-client-NAME.json[.gz]`).
pub(crate) fn write_client_cache(path: &std::path::Path, content: Value) {
    let text = serde_json::to_string_pretty(&json!({
        "__HERMES_VERSION__": "1.0.9",
        "content": content,
    }))
    .expect("JSON");
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).expect("gzip");
        std::fs::write(path, gz.finish().expect("gzip")).expect("write");
    } else {
        std::fs::write(path, text).expect("write");
    }
}

/// `buslink offsets import-hermes --config CONFIG CACHE [--force]`.
pub(crate) fn import(
    config: &std::path::Path,
    cache: &std::path::Path,
    force: bool,
) -> buslink_testkit::RunOutput {
    let config = config.to_string_lossy();
    let cache = cache.to_string_lossy();
    let mut args = vec!["offsets", "import-hermes", "--config", &config, &cache];
    if force {
        args.push("--force");
    }
    run(&args, LIMIT)
}

#[test]
fn a_hermes_client_cache_is_imported_so_the_client_is_replaced_without_a_replay() {
    // The real client's cache (sqlite bus, useFirstInitsyncSequence: 1 / 55 / 164).
    let dir = TestDir::new("import-hermes");
    let config = hermes_config(&dir, true, "");
    let imported = import(&config, &fixture("hermes/client-offset-cache.json"), false);
    assert_eq!(imported.code(), Some(0), "{imported}");
    assert!(
        imported.stdout.contains(
            "the next start begins at offset 164; Hermes mode: initsync sequence 1 to 55, \
             already replayed"
        ),
        "{imported}"
    );
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(0), "{run1}");
    assert!(run1.stderr.contains("starting at offset 164"), "{run1}");
    assert!(
        read_lines(&dir, "out/all.jsonl").is_empty(),
        "nothing replayed"
    );
    let cache = read_cache(&dir);
    assert_eq!(cache["initstartoffset"]["int"], json!(1));
    assert_eq!(cache["initstopoffset"]["int"], json!(55));
    assert_eq!(cache["initsync_done"], json!(true));

    // A client part-way through the base events, gzipped as Hermes writes it by default:
    // buslink goes on with exactly the events the client had not processed.
    let dir = TestDir::new("import-hermes-gz");
    let config = hermes_config(&dir, true, "");
    let client = dir.join("_hermes-client-app.json.gz");
    write_client_cache(
        &client,
        json!({"queueErrors": {}, "datamodelWarnings": {}, "exception": null,
               "initstartoffset": 1, "initstopoffset": 55, "nextoffset": 120}),
    );
    let imported = import(&config, &client, false);
    assert_eq!(imported.code(), Some(0), "{imported}");
    let run1 = run_once(&config);
    assert_eq!(run1.code(), Some(0), "{run1}");
    let (_, _, all) = expected_offsets(true);
    let rest: Vec<i64> = all.into_iter().filter(|o| *o >= 120).collect();
    assert!(!rest.is_empty());
    assert_eq!(offsets(&read_lines(&dir, "out/all.jsonl")), rest);

    // Objects waiting in the client's error queue are not taken over silently.
    let dir = TestDir::new("import-hermes-errors");
    let config = hermes_config(&dir, true, "");
    let client = dir.join("_hermes-client-app.json");
    write_client_cache(
        &client,
        json!({"queueErrors": {"3": {"objtype": "SRVUsers"}}, "initstartoffset": 1,
               "initstopoffset": 55, "nextoffset": 120}),
    );
    let refused = import(&config, &client, false);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("holds 1 object(s) in hermes-client's error queue"),
        "{refused}"
    );
    assert!(!dir.join("state/test.offsets").exists(), "nothing imported");
    let forced = import(&config, &client, true);
    assert_eq!(forced.code(), Some(0), "{forced}");
    // A cache without nextoffset has no place to take over.
    write_client_cache(
        &client,
        json!({"initstartoffset": null, "nextoffset": null}),
    );
    let empty = import(&config, &client, false);
    assert_eq!(empty.code(), Some(2), "{empty}");
    assert!(empty.stderr.contains("no `nextoffset`"), "{empty}");
}
