//! Handlers that reach the outside world: exec and http, retries, and what happens after the
//! last failed try (`stop` keeps the offset, `dead-letter` records the event and goes on).

use crate::common::*;
use buslink_testkit::http_sink::{Answer, HttpSink};
use buslink_testkit::process::run_once;
use buslink_testkit::TestDir;
use std::path::PathBuf;
use std::time::Duration;

const SECRET: &str = "s3cr3t-T0KEN-do-not-print";

/// A config on the `faulty` in-memory bus (`events` events, offsets 1..=events) with `handlers`.
fn memory_bus_config(dir: &TestDir, events: u32, handlers: &str) -> PathBuf {
    faulty_config(dir, &format!("events = {events}"), handlers)
}

/// A shell script that records its stdin and environment, and fails (exit 3) while the file
/// `fail` exists in its directory, or for the event whose offset is in `fail-offset`.
fn recorder_script(dir: &TestDir) -> PathBuf {
    script(
        dir,
        "recorder.sh",
        r#"#!/bin/sh
here=$(dirname "$0")
line=$(cat)
printf '%s|%s|%s|%s|%s|%s\n' "$BUSLINK_OFFSET" "$BUSLINK_CATEGORY" "$BUSLINK_EVENTTYPE" "$TARGET" "${HOME:-nohome}" "$line" >> "$here/calls.txt"
echo "stderr from the recorder for $BUSLINK_OFFSET" >&2
if [ -e "$here/fail" ]; then exit 3; fi
if [ -e "$here/fail-offset" ] && [ "$(cat "$here/fail-offset")" = "$BUSLINK_OFFSET" ]; then exit 3; fi
exit 0
"#,
    )
}

fn calls(dir: &TestDir) -> Vec<Vec<String>> {
    dir.read("calls.txt")
        .lines()
        .map(|line| line.splitn(6, '|').map(str::to_owned).collect())
        .collect()
}

#[test]
fn exec_runs_the_command_per_event_with_stdin_and_a_clean_environment() {
    let dir = TestDir::new("exec");
    let script = recorder_script(&dir);
    let handler = format!(
        "[[handlers]]\nname = \"notify\"\ntype = \"exec\"\ncommand = [\"{}\", \"--quiet\"]\nenv = {{ TARGET = \"prod\" }}\n",
        script.display()
    );
    let run = run_once(&memory_bus_config(&dir, 4, &handler));
    assert_eq!(run.code(), Some(0), "{run}");
    let calls = calls(&dir);
    assert_eq!(calls.len(), 4, "{calls:?}");
    for (index, call) in calls.iter().enumerate() {
        let offset = (index + 1).to_string();
        assert_eq!(call[0], offset, "BUSLINK_OFFSET");
        assert_eq!(
            call[1],
            if index % 2 == 0 { "odd" } else { "even" },
            "BUSLINK_CATEGORY"
        );
        assert_eq!(call[3], "prod", "env from the config");
        assert_eq!(call[4], "nohome", "nothing else from buslink's environment");
        let line: serde_json::Value =
            serde_json::from_str(&call[5]).expect("stdin is the event line");
        assert_eq!(line["offset"], index as i64 + 1);
        assert_eq!(line["event"]["index"], index as i64 + 1);
    }
    assert!(
        run.stderr
            .contains("handler 'notify' stderr: stderr from the recorder for 3"),
        "{run}"
    );
}

#[test]
fn exec_runs_in_the_state_dir_or_its_cwd_and_a_cwd_that_is_no_directory_is_refused() {
    let handler = |cwd: &str| {
        format!(
            "[[handlers]]\nname = \"where\"\ntype = \"exec\"\n\
             command = [\"sh\", \"-c\", \"pwd >> where.txt\"]\n{cwd}"
        )
    };
    // No `cwd`: the state dir (the daemon's own is `/` under systemd).
    let dir = TestDir::new("exec-cwd-default");
    let run = run_once(&memory_bus_config(&dir, 2, &handler("")));
    assert_eq!(run.code(), Some(0), "{run}");
    let state = dir.join("state").canonicalize().expect("the state dir");
    assert_eq!(
        std::fs::read_to_string(state.join("where.txt")).expect("written in the state dir"),
        format!("{0}\n{0}\n", state.display())
    );
    // `cwd`, relative to the config's directory.
    let dir = TestDir::new("exec-cwd-set");
    std::fs::create_dir(dir.join("work")).expect("a directory");
    let run = run_once(&memory_bus_config(&dir, 1, &handler("cwd = \"work\"\n")));
    assert_eq!(run.code(), Some(0), "{run}");
    let work = dir.join("work").canonicalize().expect("work");
    assert_eq!(
        std::fs::read_to_string(work.join("where.txt")).expect("written in cwd"),
        format!("{}\n", work.display())
    );
    // A `cwd` that does not exist: `check` and `run` refuse it, naming the handler and the
    // directory, and nothing is consumed.
    let dir = TestDir::new("exec-cwd-missing");
    let config = memory_bus_config(&dir, 1, &handler("cwd = \"nowhere\"\n"));
    let missing = format!(
        "cwd {} is not a directory (it does not exist)",
        dir.join("nowhere").display()
    );
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check
            .stderr
            .contains(&format!("handler 'where': {missing}")),
        "{check}"
    );
    // At the key's own line, not the handler's name.
    let text = std::fs::read_to_string(&config).expect("config");
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("cwd = "))
        .expect("the cwd line");
    assert!(
        check
            .stderr
            .contains(&format!(":{line}:1: key `handlers[0].cwd`")),
        "{check}"
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains(&format!("handler 'where': {missing}")),
        "{run}"
    );
    assert!(!dir.join("state/test.offsets").exists(), "{run}");
    // An empty `cwd` is refused at its line.
    let dir = TestDir::new("exec-cwd-empty");
    let run = run_once(&memory_bus_config(&dir, 1, &handler("cwd = \"\"\n")));
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("handlers[0].cwd"), "{run}");
    assert!(run.stderr.contains("must name a directory"), "{run}");
}

#[test]
fn a_failing_exec_is_retried_then_stop_keeps_the_offset_for_the_next_start() {
    let dir = TestDir::new("exec-stop");
    let script = recorder_script(&dir);
    dir.write("fail-offset", "3");
    let handler = format!(
        "[[handlers]]\nname = \"notify\"\ntype = \"exec\"\ncommand = [\"{}\"]\nretry = {{ attempts = 3, base_ms = 10, max_ms = 20 }}\non_failure = \"stop\"\n",
        script.display()
    );
    let config = memory_bus_config(&dir, 5, &handler);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains("handler 'notify' failed on the event at offset 3 after 3 attempt(s)"),
        "{run}"
    );
    assert!(run.stderr.contains("exited with exit status: 3"), "{run}");
    assert_eq!(run.stderr.matches("retrying in").count(), 2, "{run}");
    let offsets_tried: Vec<String> = calls(&dir).iter().map(|c| c[0].clone()).collect();
    assert_eq!(offsets_tried, ["1", "2", "3", "3", "3"]);
    assert_eq!(
        read_cache(&dir)["last_offset"]["int"],
        2,
        "offset 3 not committed"
    );

    // The target recovers: the next start delivers 3 again, then the rest.
    std::fs::remove_file(dir.join("fail-offset")).expect("recover");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let offsets_tried: Vec<String> = calls(&dir).iter().map(|c| c[0].clone()).collect();
    assert_eq!(offsets_tried, ["1", "2", "3", "3", "3", "3", "4", "5"]);
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 5);
}

#[test]
fn dead_letter_records_the_event_and_goes_on() {
    let dir = TestDir::new("exec-dead-letter");
    let script = recorder_script(&dir);
    dir.write("fail-offset", "2");
    let handlers = format!(
        "[[handlers]]\nname = \"notify\"\ntype = \"exec\"\ncommand = [\"{}\"]\nretry = {{ attempts = 2, base_ms = 10 }}\non_failure = \"dead-letter\"\n{}",
        script.display(),
        jsonl_handler("all", "")
    );
    let run = run_once(&memory_bus_config(&dir, 4, &handlers));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        vec![1, 2, 3, 4]
    );
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 4);
    let dead = read_lines(&dir, "state/test.dead-letter.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["offset"], 2);
    assert_eq!(dead[0]["event"]["index"], 2);
    assert_eq!(dead[0]["dead_letter"]["handler"], "notify");
    assert_eq!(dead[0]["dead_letter"]["attempts"], 2);
    assert!(dead[0]["dead_letter"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("exit status: 3")));
    assert!(dead[0]["dead_letter"]["time"].as_str().is_some());
}

#[test]
fn an_exec_timeout_is_a_failure() {
    let dir = TestDir::new("exec-timeout");
    let handler = "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\ncommand = [\"sleep\", \"30\"]\ntimeout_ms = 200\nretry = { attempts = 1 }\n";
    let run = run_once(&memory_bus_config(&dir, 2, handler));
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr.contains("timed out after 200 ms and was killed"),
        "{run}"
    );
    assert!(!dir.join(CACHE_FILE).exists(), "nothing committed");
}

/// Whether process `pid` still runs (absent, or a zombie waiting for its reaper, is gone).
fn still_running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn an_exec_timeout_kills_what_the_command_started_and_leaves_nothing_behind() {
    let dir = TestDir::new("exec-group");
    let pid_file = dir.join("child.pid");
    // `sh` waits for a child that would hold the pipes for ten minutes.
    let script = format!("sleep 600 & echo $! > {}; wait", pid_file.display());
    let handler = format!(
        "[[handlers]]\nname = \"slow\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", {script:?}]\n\
         timeout_ms = 1000\nretry = {{ attempts = 1 }}\n"
    );
    let run = run_once(&memory_bus_config(&dir, 1, &handler));
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(
        run.stderr
            .contains("timed out after 1000 ms and was killed with its process group"),
        "{run}"
    );
    let pid = std::fs::read_to_string(&pid_file).expect("the command started its child");
    assert!(
        !still_running(pid.trim()),
        "the command's child {} outlived the timeout",
        pid.trim()
    );
}

fn http_handler(sink: &HttpSink, extra: &str) -> String {
    format!(
        "[[handlers]]\nname = \"push\"\ntype = \"http\"\nurl = \"{}/hook\"\nheaders = {{ Authorization = \"Bearer {SECRET}\", X-Source = \"buslink\" }}\ntimeout_ms = 2000\n{extra}",
        sink.url()
    )
}

#[test]
fn http_posts_each_event_as_json_with_the_configured_headers() {
    let sink = HttpSink::start();
    let dir = TestDir::new("http");
    let run = run_once(&memory_bus_config(&dir, 3, &http_handler(&sink, "")));
    assert_eq!(run.code(), Some(0), "{run}");
    let received = sink.received();
    assert_eq!(received.len(), 3);
    for (index, request) in received.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hook");
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert_eq!(
            request.header("Authorization"),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(request.header("X-Source"), Some("buslink"));
        let line: serde_json::Value = serde_json::from_str(&request.body).expect("JSON body");
        assert_eq!(line["offset"], index as i64 + 1);
    }
    assert!(!run.stderr.contains(SECRET), "{run}");
}

#[test]
fn http_an_endpoint_answering_a_body_without_end_is_not_read_past_a_bound() {
    let sink = HttpSink::start();
    // Each answer: 200 and then bytes for ever (or gigabytes): only the status matters.
    sink.script([Answer::Endless, Answer::Endless, Answer::Endless]);
    let dir = TestDir::new("http-endless");
    // A timeout longer than the run's limit: a handler that read the body to its end would
    // never get past the first event.
    let handler = http_handler(&sink, "").edit("timeout_ms = 2000", "timeout_ms = 600000");
    let run = run_once(&memory_bus_config(&dir, 3, &handler));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(sink.received().len(), 3, "each event posted once: {run}");
}

#[test]
fn http_failures_are_retried_and_a_non_2xx_or_timeout_after_the_last_try_stops() {
    let sink = HttpSink::start();
    // Event 1: 503 then 200 (recovered by a retry). Event 2: 500 three times (gives up).
    sink.script([
        Answer::Status(503),
        Answer::Status(200),
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(500),
    ]);
    let dir = TestDir::new("http-retry");
    let config = memory_bus_config(
        &dir,
        3,
        &http_handler(
            &sink,
            "retry = { attempts = 3, base_ms = 10, max_ms = 40 }\n",
        ),
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("answered 500"), "{run}");
    assert!(
        run.stderr
            .contains("failed on the event at offset 2 after 3 attempt(s)"),
        "{run}"
    );
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 1);
    assert!(!run.stderr.contains(SECRET), "{run}");

    // A timeout is a failure too.
    sink.script([Answer::Delay(Duration::from_millis(1500))]);
    let timeout_dir = TestDir::new("http-timeout");
    let handler = format!(
        "[[handlers]]\nname = \"push\"\ntype = \"http\"\nurl = \"{}/hook\"\ntimeout_ms = 300\nretry = {{ attempts = 1 }}\n",
        sink.url()
    );
    let run = run_once(&memory_bus_config(&timeout_dir, 1, &handler));
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("timed out"), "{run}");
}

#[test]
fn secrets_never_appear_in_logs_check_output_or_errors() {
    let sink = HttpSink::start();
    sink.script([Answer::Status(401); 10]);
    let dir = TestDir::new("secrets");
    let script = recorder_script(&dir);
    // Credentials in a header (push) and in a URL (push2: the two together are refused).
    let port = sink.url().rsplit(':').next().unwrap_or("0");
    let handlers = format!(
        "{}retry = {{ attempts = 2, base_ms = 10 }}\n[[handlers]]\nname = \"push2\"\ntype = \"http\"\nurl = \"http://user:{SECRET}@127.0.0.1:{port}/hook\"\n[[handlers]]\nname = \"notify\"\ntype = \"exec\"\ncommand = [\"{}\"]\nenv = {{ API_KEY = \"{SECRET}\" }}\n",
        http_handler(&sink, ""),
        script.display()
    );
    let config = memory_bus_config(&dir, 2, &handlers);
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        Duration::from_secs(60),
    );
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check.stdout.contains("Authorization: <redacted>"),
        "{check}"
    );
    assert!(check.stdout.contains("API_KEY=<redacted>"), "{check}");
    let run = buslink_testkit::process::run(
        &[
            "--log-level",
            "debug",
            "run",
            "--once",
            "--config",
            &config.to_string_lossy(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("answered 401"), "{run}");
    for output in [&check.stdout, &check.stderr, &run.stdout, &run.stderr] {
        assert!(!output.contains(SECRET), "a secret leaked:\n{output}");
    }
}

#[test]
fn an_event_a_later_handler_fails_on_is_taken_back_from_the_dead_letter_file() {
    let dir = TestDir::new("dead-letter-rollback");
    // `first` gives up on every event and dead-letters it; `second` then fails and stops: the
    // event was not handled, comes again at the next start, and must not be recorded twice.
    let handlers = "[[handlers]]\nname = \"first\"\ntype = \"exec\"\ncommand = [\"false\"]\n\
         retry = { attempts = 1 }\non_failure = \"dead-letter\"\n\
         [[handlers]]\nname = \"second\"\ntype = \"exec\"\ncommand = [\"false\"]\n\
         retry = { attempts = 1 }\n";
    let config = memory_bus_config(&dir, 3, handlers);
    for _ in 0..2 {
        let run = run_once(&config);
        assert_eq!(run.code(), Some(1), "{run}");
        assert!(run.stderr.contains("handler 'second' failed"), "{run}");
    }
    assert_eq!(
        count_lines(&dir.join("state/test.dead-letter.jsonl")),
        0,
        "the event stopped on is in no dead-letter record"
    );
}

#[test]
fn http_credentials_in_the_url_and_an_authorization_header_are_refused_together() {
    let dir = TestDir::new("http-credentials");
    let handler = "[[handlers]]\nname = \"push\"\ntype = \"http\"\n\
        url = \"https://user:hunter2@example.invalid/hook\"\n\
        headers = { Authorization = \"Bearer abc\" }\n";
    let config = memory_bus_config(&dir, 1, handler);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("key `handlers[0].url`"), "{run}");
    assert!(
        run.stderr.contains("one would silently replace the other"),
        "{run}"
    );
    assert!(!run.stderr.contains("hunter2"), "never printed: {run}");
}

#[test]
fn http_ca_file_is_read_and_a_bad_one_named() {
    let dir = TestDir::new("http-ca-file");
    dir.write("not-a-ca.pem", "this is no certificate\n");
    let sink = HttpSink::start();
    let handler = http_handler(&sink, "ca_file = \"not-a-ca.pem\"\n");
    let config = memory_bus_config(&dir, 1, &handler);
    let check = buslink_testkit::process::run(
        &["check", "--config", &config.to_string_lossy()],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains("ca_file") && check.stderr.contains("not-a-ca.pem"),
        "{check}"
    );
    // A real CA certificate is taken, and events still go out.
    let good = buslink_testkit::fixture("test-ca.pem");
    let handler = http_handler(&sink, &format!("ca_file = \"{}\"\n", good.display()));
    let config = memory_bus_config(&dir, 2, &handler);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(sink.received().len(), 2, "{run}");
}
