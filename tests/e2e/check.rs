//! `buslink check`: a good config summarised, every problem of a broken one listed; bad configs
//! get one clear error naming the file, the line and the key, exit code 2.

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{build_dir, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

/// A valid config; each case below breaks one thing in it.
fn good_config() -> String {
    format!(
        r#"state_dir = "state"
plugin_dirs = ["{plugins}"]

[consumer]
name = "test"
plugin = "sqlite"
class = "SqliteConsumer"
timeout_ms = 100

[consumer.settings]
uri = "{bus}"

[[handlers]]
name = "archive"
type = "jsonl"
path = "out/all.jsonl"
"#,
        plugins = build_dir().display(),
        bus = fixture_bus().display(),
    )
}

#[test]
fn the_good_config_works() {
    let dir = TestDir::new("good-config");
    let config = dir.write("buslink.toml", good_config());
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
}

#[test]
fn each_bad_config_gets_a_clear_error_naming_line_and_key() {
    // (what is broken, replace this, with that, expected texts in the error)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "unknown top-level key",
            "state_dir =",
            "stat_dir = 1\nstate_dir =",
            &["buslink.toml:1:", "unknown field `stat_dir`"],
        ),
        (
            "unknown consumer key",
            "timeout_ms = 100",
            "timeout = 100",
            &["buslink.toml:8:", "unknown field `timeout`"],
        ),
        (
            "missing class",
            "class = \"SqliteConsumer\"\n",
            "",
            &["missing field `class`"],
        ),
        (
            "wrong type",
            "timeout_ms = 100",
            "timeout_ms = \"soon\"",
            &["buslink.toml:8:", "timeout_ms"],
        ),
        (
            "a zero timeout (an idle daemon would spin)",
            "timeout_ms = 100",
            "timeout_ms = 0",
            &[
                "buslink.toml:8:",
                "consumer.timeout_ms",
                "must be at least 1",
            ],
        ),
        (
            "a non-finite number in plugin settings",
            "[consumer.settings]\n",
            "[consumer.settings]\npoll_interval_ms = nan\n",
            &[
                "buslink.toml:11:",
                "consumer.settings.poll_interval_ms",
                "NaN is not a number a plugin can be given",
            ],
        ),
        (
            "bad start",
            "timeout_ms = 100",
            "timeout_ms = 100\nstart = true",
            &[
                "buslink.toml:9:",
                "consumer.start",
                "expected \"beginning\", \"end\" or an offset",
            ],
        ),
        (
            "bad consumer name",
            "name = \"test\"",
            "name = \"../escape\"",
            &[
                "buslink.toml:5:",
                "consumer.name",
                "not a valid consumer name",
            ],
        ),
        (
            "unknown handler key",
            "path = \"out/all.jsonl\"",
            "path = \"out/all.jsonl\"\nformat = \"x\"",
            &["buslink.toml:17:", "unknown field `format`"],
        ),
        (
            "unknown handler type",
            "type = \"jsonl\"",
            "type = \"kafka\"",
            &[
                "buslink.toml:15:",
                "handlers[0].type",
                "unknown handler type 'kafka'",
            ],
        ),
        (
            "jsonl without path",
            "path = \"out/all.jsonl\"\n",
            "",
            &["handlers[0].path", "needs a `path`"],
        ),
        (
            "bad match key",
            "path = \"out/all.jsonl\"",
            "path = \"out/all.jsonl\"\nmatch = { objtyp = \"x\" }",
            &["buslink.toml:17:", "unknown field `objtyp`"],
        ),
        (
            "no handlers",
            "[[handlers]]\nname = \"archive\"\ntype = \"jsonl\"\npath = \"out/all.jsonl\"\n",
            "",
            &["handlers", "no [[handlers]]"],
        ),
        (
            "unknown plugin setting",
            "[consumer.settings]\n",
            "[consumer.settings]\nurii = \"x\"\n",
            &[
                "buslink.toml:11:",
                "consumer.settings.urii",
                "unknown field `urii`",
            ],
        ),
        (
            "plugin setting of the wrong type",
            "[consumer.settings]\n",
            "[consumer.settings]\npoll_interval_ms = \"fast\"\n",
            &["buslink.toml:11:", "consumer.settings.poll_interval_ms"],
        ),
        (
            "plugin setting rejected by its validator",
            "[consumer.settings]\n",
            "[consumer.settings]\npoll_interval_ms = 0\n",
            &[
                "buslink.toml:11:",
                "consumer.settings.poll_interval_ms",
                "at least 1",
            ],
        ),
        (
            "unknown class",
            "class = \"SqliteConsumer\"",
            "class = \"KafkaConsumer\"",
            &[
                "buslink.toml:7:",
                "consumer.class",
                "no consumer class 'KafkaConsumer'",
                "SqliteConsumer",
            ],
        ),
        (
            "zero batch size",
            "timeout_ms = 100",
            "timeout_ms = 100\nbatch_size = 0",
            &["buslink.toml:9:", "consumer.batch_size", "at least 1"],
        ),
        (
            "not TOML at all",
            "[consumer]",
            "[consumer",
            &["buslink.toml:4:"],
        ),
        (
            "unknown fsync mode",
            "[[handlers]]",
            "[commit]\nfsync = \"sometimes\"\n\n[[handlers]]",
            &[
                "buslink.toml:14:",
                "commit.fsync",
                "sometimes",
                "background",
                "each",
            ],
        ),
    ];
    for (what, from, to, expected) in cases {
        let text = good_config();
        assert!(
            text.contains(from),
            "{what}: {from:?} is in the good config"
        );
        let dir = TestDir::new("bad-config");
        let config = dir.write("buslink.toml", text.replacen(from, to, 1));
        let run = run_once(&config);
        assert_eq!(run.code(), Some(2), "{what}: {run}");
        for text in *expected {
            assert!(
                run.stderr.contains(text),
                "{what}: expected {text:?} in:\n{run}"
            );
        }
        assert!(
            run.stderr.contains(&config.to_string_lossy().to_string()),
            "{what}: the file is named:\n{run}"
        );
        assert!(!dir.join("state").exists(), "{what}: nothing consumed");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = TestDir::new("no-config");
    let path = dir.join("absent.toml");
    let run = run_once(&path);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr.contains(&path.to_string_lossy().to_string()),
        "{run}"
    );
    assert!(run.stderr.contains("cannot read config file"), "{run}");
}

#[test]
fn a_command_s_error_reads_as_a_tool_s_and_as_json_with_json_logs() {
    let dir = TestDir::new("cli-error");
    let path = dir.join("absent.toml");
    let config = path.to_string_lossy();
    let limit = std::time::Duration::from_secs(30);
    // Plain: `error: ` and the message, no timestamp or level, for every command.
    for args in [
        vec!["check", "--config", &config],
        vec!["offsets", "show", "--config", &config],
        vec!["run", "--once", "--config", &config],
    ] {
        let run = buslink_testkit::process::run(&args, limit);
        assert_eq!(run.code(), Some(2), "{run}");
        assert_eq!(
            run.stderr,
            format!(
                "error: {config}: cannot read config file: No such file or directory (os error 2)\n"
            ),
            "{args:?}"
        );
    }
    // JSON logs: the error is a JSON log line at level ERROR.
    let run = buslink_testkit::process::run(
        &["--log-format", "json", "check", "--config", &config],
        limit,
    );
    assert_eq!(run.code(), Some(2), "{run}");
    let line: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect("one JSON line");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read config file")),
        "{line}"
    );
}

#[test]
fn a_corrupt_offset_cache_stops_the_daemon_clearly() {
    // The cache file (in-place slots), and one of version 1 (a JSON file).
    let cases: [(&str, &[u8], &str); 2] = [
        (
            "state/test.offsets",
            b"buslink-offsets v2 gen=3 len=5 crc=00000000\n{\"ver",
            "no intact record in any slot",
        ),
        (
            "state/test.offsets.json",
            b"{\"version\": 1, \"consumer\": \"te",
            "EOF while parsing",
        ),
    ];
    for (file, contents, why) in cases {
        let dir = TestDir::new("corrupt-cache");
        let config = dir.write("buslink.toml", good_config());
        let cache = dir.write(file, contents);
        let run = run_once(&config);
        assert_eq!(run.code(), Some(1), "{run}");
        assert!(
            run.stderr.contains(&cache.to_string_lossy().to_string()),
            "{run}"
        );
        assert!(run.stderr.contains("corrupt"), "{run}");
        assert!(run.stderr.contains(why), "{run}");
        assert!(
            run.stderr.contains("refusing to start from scratch"),
            "{run}"
        );
        assert_eq!(
            count_lines(&dir.join("out/all.jsonl")),
            0,
            "nothing consumed"
        );
        // The cache was left as it was, for a person to look at.
        assert_eq!(std::fs::read(&cache).expect("cache"), contents);
    }
}

#[test]
fn check_reports_every_problem_run_would_hit_in_one_go() {
    let dir = TestDir::new("check-all");
    let config = dir.write(
        "buslink.toml",
        format!(
            r#"state_dir = "state"
plugin_dirs = ["{plugins}"]
stats_interval_s = "x"
[consumer]
name = "bad name"
plugin = "sqlite"
class = "SqliteConsumer"
start = "begining"
batch_size = 0
[consumer.settings]
uri = "{bus}"
urii = 3
[[handlers]]
name = "a"
type = "jsonl"
[[handlers]]
name = "b"
type = "exec"
command = []
[commit]
every_events = 0
"#,
            plugins = build_dir().display(),
            bus = fixture_bus().display(),
        ),
    );
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(check.code(), Some(2), "{check}");
    for expected in [
        "buslink.toml:3:20: key `stats_interval_s`",
        "buslink.toml:5:8: key `consumer.name`",
        "buslink.toml:8:9: key `consumer.start`: \"begining\": did you mean \"beginning\"",
        "buslink.toml:9:14: key `consumer.batch_size`",
        "key `consumer.settings.urii`",
        "key `handlers[0].path`",
        "key `handlers[1].command`",
        "buslink.toml:21:16: key `commit.every_events`",
    ] {
        assert!(
            check.stderr.contains(expected),
            "missing {expected:?}:\n{check}"
        );
    }
}

#[test]
fn a_handler_plugin_refusing_its_settings_is_named_once_with_its_line() {
    let dir = TestDir::new("check-handler-plugin");
    let config = dir.write(
        "buslink.toml",
        good_config()
            + "\n[[handlers]]\nname = \"state\"\ntype = \"plugin\"\nplugin = \"statefiles\"\n\
               class = \"StateFilesHandler\"\nsettings = { bogus = 1 }\n",
    );
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains(
            "buslink.toml:19:1: key `handlers[1].name`: handler 'state': plugin 'statefiles'"
        ),
        "{check}"
    );
    assert_eq!(
        check.stderr.matches("handler 'state'").count(),
        1,
        "{check}"
    );
}

#[test]
fn a_byte_that_is_not_utf8_in_a_config_is_named_by_line_and_column() {
    let dir = TestDir::new("config-utf8");
    let mut text = good_config().into_bytes();
    // `name = "te\xffst"` on line 5.
    let at = text
        .windows(6)
        .position(|w| w == b"\"test\"")
        .expect("the consumer name");
    text.splice(at + 3..at + 3, [0xff]);
    let config = dir.write("buslink.toml", text);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("buslink.toml:5:11: a byte that is not UTF-8"),
        "{run}"
    );
}

#[test]
fn an_empty_array_where_a_table_is_meant_is_refused() {
    let dir = TestDir::new("config-array");
    let config = dir.write("buslink.toml", format!("commit = []\n{}", good_config()));
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(
        run.stderr
            .contains("buslink.toml:1:1: key `commit`: must be a table, not array"),
        "{run}"
    );
}

#[test]
fn check_warns_about_a_state_dir_every_user_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("check-state-mode");
    let config = sqlite_config(&dir, &fixture_bus(), "", &jsonl_handler("all", ""));
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(check.code(), Some(0), "a warning, not an error: {check}");
    assert!(
        check
            .stderr
            .contains("is writable by every user (mode 777): make it 0700 or 0750"),
        "{check}"
    );
    // The same directory made private: no warning.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(60),
    );
    assert!(!check.stderr.contains("writable by every user"), "{check}");
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
        "plugin: sqlite 0.1.0 (plugin-api 0.5.0)",
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
        .edit("poll_interval_ms = 10", "poll_interval_ms = 0");
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
            sqlite_consumer("bad", &bus_a).edit("poll_interval_ms = 10", "poll_interval_ms = -1"),
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
            sqlite_consumer("one", &bus_a).edit("out/one.jsonl", "out/same.jsonl"),
            sqlite_consumer("two", &bus_a).edit("out/two.jsonl", "./out/../out/same.jsonl"),
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
    // Mixing the two shapes is refused: a valid config of one entry, plus [[handlers]]. (This
    // once read `duplicate`'s path, which the configs above had overwritten since.)
    let valid = several(&dir, "", &[sqlite_consumer("one", &bus_a)]);
    let out = buslink(&["check", "--config", &valid.to_string_lossy()]);
    assert_eq!(out.code(), Some(0), "{out}");
    let text = format!(
        "{}\n[[handlers]]\nname = \"x\"\ntype = \"stdout\"\n",
        std::fs::read_to_string(&valid).expect("config")
    );
    let mixed = dir.write("mixed.toml", text);
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
fn completions_and_man_pages_come_from_the_command_line_itself() {
    let limit = std::time::Duration::from_secs(30);
    let bash = buslink_testkit::process::run(&["completions", "bash"], limit);
    assert_eq!(bash.code(), Some(0), "{bash}");
    assert!(bash.stdout.contains("_buslink()"), "{bash}");
    for word in [
        "run",
        "check",
        "offsets",
        "replay",
        "ctl",
        "completions",
        "--once",
    ] {
        assert!(bash.stdout.contains(word), "{word} in the bash completion");
    }
    for shell in ["zsh", "fish"] {
        let out = buslink_testkit::process::run(&["completions", shell], limit);
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(out.stdout.contains("import-hermes"), "{shell}: {out}");
    }
    let nope = buslink_testkit::process::run(&["completions", "tcsh"], limit);
    assert_eq!(nope.code(), Some(2), "{nope}");
    assert!(nope.stderr.contains("tcsh"), "{nope}");
    let man = buslink_testkit::process::run(&["man"], limit);
    assert_eq!(man.code(), Some(0), "{man}");
    assert!(man.stdout.contains(".TH buslink 1"), "{man}");
    let dir = TestDir::new("man-pages");
    let out = dir.join("man1");
    let pages = buslink_testkit::process::run(&["man", "--out-dir", &out.to_string_lossy()], limit);
    assert_eq!(pages.code(), Some(0), "{pages}");
    for page in [
        "buslink.1",
        "buslink-run.1",
        "buslink-ctl-status.1",
        "buslink-offsets-set.1",
        "buslink-help.1",
    ] {
        let text = std::fs::read_to_string(out.join(page)).expect(page);
        assert!(text.contains(".TH"), "{page}");
    }
}
