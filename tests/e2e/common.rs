//! Helpers shared by the end-to-end tests.

use buslink_testkit::{build_dir, fixture, HermesBusWriter, TestDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fixture bus written by the real Hermes server.
pub fn fixture_bus() -> PathBuf {
    fixture("hermes/bus.sqlite")
}

/// One line of `bus-index.txt`: msgid, category, type, objtype.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexRow {
    pub msgid: i64,
    pub category: String,
    pub eventtype: String,
    pub objtype: Option<String>,
}

/// The fixture bus's index, as captured with the real system.
pub fn fixture_index() -> Vec<IndexRow> {
    let text = std::fs::read_to_string(fixture("hermes/bus-index.txt"))
        .expect("bus-index.txt is readable");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(" | ").map(str::trim).collect();
            IndexRow {
                msgid: fields[0].parse().expect("msgid is a number"),
                category: fields[3].to_owned(),
                eventtype: fields[4].to_owned(),
                objtype: Some(fields[5].to_owned()).filter(|t| t != "-"),
            }
        })
        .collect()
}

/// The consumer part of a test config.
pub struct ConsumerSpec<'a> {
    pub plugin: &'a str,
    pub class: &'a str,
    pub timeout_ms: u64,
    /// More lines for `[consumer]` (or whole subtables such as `[consumer.hermes]`).
    pub extra: &'a str,
    /// The lines of `[consumer.settings]`.
    pub settings: &'a str,
}

/// A config (consumer `test`, state in `state/`, plugins from the build directory) with `rest`
/// appended (handlers, commit). Written to `dir/buslink.toml`.
pub fn consumer_config(dir: &TestDir, consumer: ConsumerSpec<'_>, rest: &str) -> PathBuf {
    let text = format!(
        "state_dir = \"state\"\nplugin_dirs = [\"{plugins}\"]\n\n[consumer]\nname = \"test\"\n\
         plugin = \"{plugin}\"\nclass = \"{class}\"\ntimeout_ms = {timeout}\n{extra}\n\n\
         [consumer.settings]\n{settings}\n\n{rest}\n",
        plugins = build_dir().display(),
        plugin = consumer.plugin,
        class = consumer.class,
        timeout = consumer.timeout_ms,
        extra = consumer.extra,
        settings = consumer.settings,
    );
    dir.write("buslink.toml", text)
}

/// A config on the `faulty` in-memory bus (100 ms polls) with `settings` (`events = N`, ...)
/// and `rest` appended (handlers).
pub fn faulty_config(dir: &TestDir, settings: &str, rest: &str) -> PathBuf {
    let consumer = ConsumerSpec {
        plugin: "faulty",
        class: "FaultyConsumer",
        timeout_ms: 100,
        extra: "",
        settings,
    };
    consumer_config(dir, consumer, rest)
}

/// A config for the sqlite plugin on `bus`, with `consumer_extra` lines in `[consumer]` and
/// `rest` appended (handlers, commit).
pub fn sqlite_config(dir: &TestDir, bus: &Path, consumer_extra: &str, rest: &str) -> PathBuf {
    let settings = format!("uri = \"{}\"\npoll_interval_ms = 10", bus.display());
    let consumer = ConsumerSpec {
        plugin: "sqlite",
        class: "SqliteConsumer",
        timeout_ms: 200,
        extra: consumer_extra,
        settings: &settings,
    };
    consumer_config(dir, consumer, rest)
}

/// A jsonl handler writing to `out/NAME.jsonl`, with an optional match.
pub fn jsonl_handler(name: &str, match_clause: &str) -> String {
    let match_line = if match_clause.is_empty() {
        String::new()
    } else {
        format!("match = {match_clause}\n")
    };
    format!("[[handlers]]\nname = \"{name}\"\ntype = \"jsonl\"\npath = \"out/{name}.jsonl\"\n{match_line}")
}

/// The JSON lines of a jsonl output file (none when it does not exist).
pub fn read_lines(dir: &TestDir, relative: &str) -> Vec<Value> {
    dir.read(relative)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// The integer offsets of event lines.
pub fn offsets(lines: &[Value]) -> Vec<i64> {
    lines
        .iter()
        .map(|line| line["offset"].as_i64().expect("integer offset"))
        .collect()
}

/// The consumer's committed offset record, as `buslink offsets show --json` prints it (null
/// when nothing was committed).
pub fn read_cache(dir: &TestDir) -> Value {
    let config = dir.join("buslink.toml");
    let run = buslink_testkit::process::run(
        &[
            "offsets",
            "show",
            "--json",
            "--config",
            &config.to_string_lossy(),
        ],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.code(), Some(0), "offsets show: {run}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("offsets show {run}: {e}"))
}

/// Where the consumer's offset cache lives.
pub const CACHE_FILE: &str = "state/test.offsets";

/// How many lines a file has now.
pub fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// A Hermes bus of `events` generated events at `dir/bus.sqlite`.
pub fn bus_with(dir: &TestDir, events: usize) -> PathBuf {
    let bus = dir.join("bus.sqlite");
    buslink_testkit::HermesBusWriter::open(&bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(events)))
        .expect("bus written");
    bus
}

/// The address of the metrics endpoints a daemon logged (`metrics on http://ADDRESS/...`).
pub fn metrics_address(stderr: &str) -> String {
    stderr
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .to_owned()
}

/// Appends `text` (tables: `[metrics]`, `[[handlers]]`) to the config file at `config`.
pub fn append_to(config: &Path, text: &str) {
    let before = std::fs::read_to_string(config).expect("config");
    std::fs::write(config, format!("{before}\n{text}")).expect("config");
}

/// Replaces `from` by `to` in the config file at `config`; panics when `from` is not in it (a
/// replacement that silently did nothing would test another config than the one meant).
pub fn replace_in(config: &Path, from: &str, to: &str) {
    let before = std::fs::read_to_string(config).expect("config");
    std::fs::write(config, before.edit(from, to)).expect("config");
}

/// Edits of a config's (or a path's) text that fail when the text to replace is not there: a
/// silent `str::replace` that matched nothing would test another config than the test says.
pub trait Edit {
    /// The text with every `from` replaced by `to`; panics naming `from` when it is absent.
    fn edit(&self, from: &str, to: &str) -> String;
}

impl Edit for str {
    fn edit(&self, from: &str, to: &str) -> String {
        assert!(self.contains(from), "no {from:?} to replace in:\n{self}");
        self.replace(from, to)
    }
}

/// `[metrics]` on any free port (the daemon logs which: [`metrics_address`]).
pub const METRICS_ON_ANY_PORT: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The value of the metrics line that starts with `series` (`name{labels}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// `buslink ctl --config CONFIG ARGS...` (bounded to a minute).
pub fn ctl(config: &Path, args: &[&str]) -> buslink_testkit::RunOutput {
    let config = config.to_string_lossy();
    let mut all = vec!["ctl", "--config", config.as_ref()];
    all.extend_from_slice(args);
    buslink_testkit::process::run(&all, std::time::Duration::from_secs(60))
}

/// `ctl status --json` of the running daemon (null when it does not answer).
pub fn status(config: &Path) -> Value {
    serde_json::from_str(&ctl(config, &["status", "--json"]).stdout).unwrap_or_default()
}

/// The status object of consumer `name` in `status --json`.
pub fn consumer_status(status: &Value, name: &str) -> Value {
    status["consumers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["consumer"] == name))
        .cloned()
        .unwrap_or_default()
}

/// GET `path` of the metrics server at `address`: (status, body).
pub fn scrape(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::blocking::get(format!("http://{address}{path}")).expect("a scrape");
    let status = response.status().as_u16();
    (status, response.text().expect("a body"))
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
pub fn faulty_consumer(name: &str, settings: &str) -> String {
    format!(
        "[[consumers]]\nname = \"{name}\"\nplugin = \"faulty\"\nclass = \"FaultyConsumer\"\n\
         timeout_ms = 100\nbatch_size = 5\n[consumers.settings]\n{settings}\n\
         [[consumers.handlers]]\nname = \"out\"\ntype = \"jsonl\"\npath = \"out/{name}.jsonl\"\n"
    )
}

/// `broken` (panics when event 8 is next: it handles 1-5, then every restart fails at once)
/// beside `steady` on the sqlite bus `bus`.
pub fn broken_and_steady(dir: &TestDir, head: &str, bus: &Path) -> PathBuf {
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

pub fn bus(dir: &TestDir, name: &str, events: usize) -> PathBuf {
    let bus = dir.join(name);
    append(&bus, events);
    bus
}

pub fn append(bus: &Path, events: usize) {
    HermesBusWriter::open(bus)
        .and_then(|mut writer| writer.append_all(buslink_testkit::hermes_events(events)))
        .expect("events written");
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

/// Writes `text` to `name` in `dir` as an executable script (0755): an `exec` handler's
/// command.
pub fn script(dir: &TestDir, name: &str, text: impl AsRef<str>) -> PathBuf {
    let path = dir.write(name, text.as_ref());
    let mut permissions = std::fs::metadata(&path).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).expect("chmod");
    path
}
