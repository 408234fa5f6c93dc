//! `buslink replay`: a past range to chosen handlers, the committed offset untouched, with the
//! daemon running beside it.

use crate::common::*;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{Daemon, TestDir};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn a_range_is_replayed_to_one_handler_while_the_daemon_runs_and_the_offset_stays() {
    let dir = TestDir::new("replay");
    let bus = bus_with(&dir, 20);
    let hook_file = dir.join("out/hook.jsonl");
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"hook\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat >> {}\"]\n",
        jsonl_handler("archive", ""),
        hook_file.display()
    );
    let config = sqlite_config(&dir, &bus, "", &handlers);
    let config_arg = config.to_string_lossy().into_owned();
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(count_lines(&hook_file), 20);
    let before = buslink(&["offsets", "show", "--json", "--config", &config_arg]);
    assert_eq!(before.code(), Some(0), "{before}");
    let cache_before: Value = serde_json::from_str(&before.stdout).expect("JSON");
    assert_eq!(cache_before["last_offset"]["int"], 20);

    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the daemon consuming", LIMIT, |d| {
        d.stderr().contains("open and positioned")
    });
    let replay = buslink(&[
        "replay",
        "--config",
        &config_arg,
        "--from",
        "5",
        "--to",
        "9",
        "--handler",
        "hook",
        // Named twice: delivered once.
        "--handler",
        "hook",
    ]);
    assert_eq!(replay.code(), Some(0), "{replay}");
    assert_eq!(
        replay.stderr.matches("handler hook:").count(),
        1,
        "{replay}"
    );
    assert!(
        replay.stderr.contains("handler hook: delivered 5 events"),
        "{replay}"
    );
    // Not a terminal: a JSON summary line on stderr.
    let done: Value = replay
        .stderr
        .lines()
        .find_map(|line| serde_json::from_str::<Value>(line).ok())
        .expect("a JSON progress line");
    // stdout is the handlers' (a `stdout` handler's lines): the summary is not there.
    assert_eq!(replay.stdout, "", "{replay}");
    assert_eq!(done["replay"], "done");
    assert_eq!(done["delivered"], 5);
    let hooked = offsets(&read_lines(&dir, "out/hook.jsonl"));
    let mut expected: Vec<i64> = (1..=20).collect();
    expected.extend(5..=9);
    assert_eq!(
        hooked, expected,
        "events 5 to 9 once more, after the first 20"
    );
    assert_eq!(
        count_lines(&dir.join("out/archive.jsonl")),
        20,
        "archive untouched"
    );

    // The exactly-once archive is refused; a dry run only counts.
    let refused = buslink(&["replay", "--config", &config_arg, "--from", "beginning"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("handler 'archive' is an exactly-once jsonl output"),
        "{refused}"
    );
    assert!(refused.stderr.contains("`buslink ctl replay`"), "{refused}");
    // A handler plugin keeps the daemon's state (a view): refused too.
    let view = config_arg.edit("buslink.toml", "view.toml");
    std::fs::write(
        &view,
        format!(
            "{}\n[[handlers]]\nname = \"view\"\ntype = \"plugin\"\nplugin = \"statefiles\"\n\
             class = \"StateFilesHandler\"\nsettings = {{ dir = \"view\" }}\n",
            std::fs::read_to_string(&config).expect("config")
        ),
    )
    .expect("config");
    let refused = buslink(&[
        "replay",
        "--config",
        &view,
        "--from",
        "3",
        "--handler",
        "view",
    ]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("handler 'view' is a handler plugin"),
        "{refused}"
    );
    let dry = buslink(&[
        "replay",
        "--config",
        &config_arg,
        "--from",
        "beginning",
        "--match",
        "objtype=SRVGroups",
        "--dry-run",
    ]);
    assert_eq!(dry.code(), Some(0), "{dry}");
    assert!(dry.stderr.contains("20 events read"), "{dry}");
    assert!(
        dry.stderr
            .contains("handler archive: would deliver 4 events"),
        "{dry}"
    );
    assert!(
        dry.stderr.contains("handler hook: would deliver 4 events"),
        "{dry}"
    );
    assert_eq!(count_lines(&hook_file), 25, "a dry run delivers nothing");

    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "{stopped}");
    let after = buslink(&["offsets", "show", "--json", "--config", &config_arg]);
    let cache_after: Value = serde_json::from_str(&after.stdout).expect("JSON");
    assert_eq!(cache_after["last_offset"], cache_before["last_offset"]);
    assert_eq!(
        cache_after["events_handled"],
        cache_before["events_handled"]
    );

    // A failing handler stops the replay and says where to go on.
    let failing = config_arg.edit("buslink.toml", "failing.toml");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .edit("cat >> ", "exit 3; cat >> ")
        .edit(
            "[[handlers]]\nname = \"hook\"",
            "[[handlers]]\nname = \"hook\"\nretry = { attempts = 1 }",
        );
    std::fs::write(&failing, text).expect("config");
    let failed = buslink(&[
        "replay",
        "--config",
        &failing,
        "--from",
        "12",
        "--handler",
        "hook",
    ]);
    assert_eq!(failed.code(), Some(1), "{failed}");
    assert!(
        failed
            .stderr
            .contains("handler 'hook' failed on offset 12 after 1 attempt(s)"),
        "{failed}"
    );
    assert!(failed.stderr.contains("go on with --from 12"), "{failed}");
}

/// Every command that delivers to handlers (`run`, `replay`, `errors retry`) takes an `exec`
/// command that exits without reading its event as that handler's failure: never a death by
/// SIGPIPE.
#[test]
fn an_exec_command_that_does_not_read_its_event_fails_it_in_every_command_that_delivers() {
    let dir = TestDir::new("epipe");
    let bus = dir.join("bus.sqlite");
    // An event far larger than a pipe's buffer: writing it blocks until the command, which
    // closes its stdin at once, is gone, so the write meets a closed pipe every time.
    let writer = buslink_testkit::HermesBusWriter::open(&bus).expect("bus");
    let body = serde_json::json!({"evcategory": "base", "eventtype": "added", "objtype": "Big",
        "objpkey": 1, "objattrs": {"blob": "x".repeat(1 << 20)}, "step": 0,
        "isPartiallyProcessed": false});
    writer
        .append(&body.to_string(), 1_795_345_271.0)
        .expect("event");
    let handler = "[[handlers]]\nname = \"deaf\"\ntype = \"exec\"\n\
                   command = [\"sh\", \"-c\", \"exec 0<&-; sleep 0.2; exit 3\"]\n\
                   retry = { attempts = 1 }\non_failure = \"error-queue\"\n\
                   retry_interval_ms = 3600000\n";
    let config = sqlite_config(&dir, &bus, "", handler);
    let config_arg = config.to_string_lossy().into_owned();
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert!(first.stderr.contains("queued as #1"), "{first}");
    let retry = buslink(&["errors", "retry", "--config", &config_arg]);
    assert_eq!(retry.code(), Some(0), "{retry}");
    assert!(
        retry.stdout.contains("0 queued event(s) handled, 1 left"),
        "{retry}"
    );
    let replay = buslink(&["replay", "--config", &config_arg, "--from", "beginning"]);
    assert_eq!(replay.code(), Some(1), "{replay}");
    assert!(
        replay.stderr.contains("handler 'deaf' failed on offset 1"),
        "{replay}"
    );
}

/// A range whose end is before its start, of another type than the bus's offsets, or not on
/// the bus at all is refused before anything is delivered.
#[test]
fn a_range_that_cannot_be_is_refused_before_anything_is_delivered() {
    let dir = TestDir::new("replay-ranges");
    let hook_file = dir.join("hook.jsonl");
    let hook = format!(
        "[[handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat >> {}\"]\n",
        hook_file.display()
    );
    let faulty = |name: &str, settings: &str| {
        let config = faulty_config(&dir, settings, &hook);
        let renamed = dir.join(format!("{name}.toml"));
        std::fs::rename(&config, &renamed).expect("config");
        renamed.to_string_lossy().into_owned()
    };
    let ints = faulty("ints", "events = 20");
    let strings = faulty("strings", "events = 20\nstring_offsets = true");
    let replay = |config: &str, range: &[&str]| {
        let mut args = vec!["replay", "--config", config];
        args.extend_from_slice(range);
        buslink(&args)
    };
    let backwards = replay(&ints, &["--from", "6", "--to", "3"]);
    assert_eq!(backwards.code(), Some(2), "{backwards}");
    assert!(
        backwards.stderr.contains("comes before --from 6"),
        "{backwards}"
    );
    let mistyped = replay(&ints, &["--from", "6", "--to", "ev-0009"]);
    assert_eq!(mistyped.code(), Some(2), "{mistyped}");
    assert!(
        mistyped
            .stderr
            .contains("no such offset on the bus after offset 6"),
        "{mistyped}"
    );
    let other_type = replay(&strings, &["--from", "ev-0005", "--to", "9"]);
    assert_eq!(other_type.code(), Some(2), "{other_type}");
    assert!(
        other_type
            .stderr
            .contains("--to 9 is int, but the bus's offsets are string"),
        "{other_type}"
    );
    let missing = replay(&strings, &["--from", "ev-0005", "--to", "nosuch"]);
    assert_eq!(missing.code(), Some(2), "{missing}");
    assert_eq!(count_lines(&hook_file), 0, "nothing was delivered");
    // A range that is there: exactly it.
    let good = replay(&strings, &["--from", "ev-0005", "--to", "ev-0007"]);
    assert_eq!(good.code(), Some(0), "{good}");
    assert!(
        good.stderr.contains("handler hook: delivered 3 events"),
        "{good}"
    );
    let offsets: Vec<String> = read_lines(&dir, "hook.jsonl")
        .iter()
        .map(|line| line["offset"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(offsets, ["ev-0005", "ev-0006", "ev-0007"]);
}

/// The offsets of a jsonl output's lines, counted: offset -> how many lines carry it.
fn tally(dir: &TestDir, relative: &str) -> std::collections::BTreeMap<i64, usize> {
    let mut tally = std::collections::BTreeMap::new();
    for offset in offsets(&read_lines(dir, relative)) {
        *tally.entry(offset).or_insert(0) += 1;
    }
    tally
}

#[test]
fn ctl_replay_appends_a_range_to_a_jsonl_output_between_live_batches_and_a_kill_keeps_it() {
    let dir = TestDir::new("ctl-replay");
    let bus = bus_with(&dir, 3000);
    // stall_after_s = 2: a live batch left waiting 2 s behind the replay would show.
    let config = sqlite_config(
        &dir,
        &bus,
        "batch_size = 100\nstall_after_s = 2",
        &jsonl_handler("all", ""),
    );
    let config_arg = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the bus handled and committed", LIMIT, |_| {
        consumer_status(&status(&config), "test")["committed_offset"] == "3000"
    });
    // The replay of 1..=3000 runs while 200 live events arrive.
    let writer = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                append(&bus, 10);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let replay = buslink(&[
        "ctl",
        "--config",
        &config_arg,
        "replay",
        "--from",
        "1",
        "--to",
        "3000",
    ]);
    writer.join().expect("the writer");
    assert_eq!(replay.code(), Some(0), "{replay}");
    assert!(
        replay.stderr.contains("consumer 'test': replay #1 running"),
        "{replay}"
    );
    assert!(
        replay.stderr.contains(
            "consumer 'test': replay #1 done, from 1 to 3000 to all: 3000 events read, 3000 \
             delivered, at offset 3000"
        ),
        "{replay}"
    );
    let last: Value = serde_json::from_str(
        replay
            .stderr
            .lines()
            .rfind(|line| line.starts_with('{'))
            .expect("a JSON line at the end"),
    )
    .expect("JSON");
    assert_eq!(last["replay"], "done", "{replay}");
    assert_eq!(last["delivered"], 3000, "{replay}");
    daemon.wait_for("the live events committed", LIMIT, |_| {
        consumer_status(&status(&config), "test")["committed_offset"] == "3200"
    });
    let job = consumer_status(&status(&config), "test")["replay"].clone();
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["events"], 3000, "{job}");
    // Live consumption went on beside the replay: never stalled.
    assert!(!daemon.stderr().contains("stalled"), "{}", daemon.stderr());
    // Every replayed event once more, every live event once; the replayed lines in order.
    let expected: std::collections::BTreeMap<i64, usize> = (1..=3200)
        .map(|offset| (offset, if offset <= 3000 { 2 } else { 1 }))
        .collect();
    assert_eq!(tally(&dir, "out/all.jsonl"), expected);
    let lines = offsets(&read_lines(&dir, "out/all.jsonl"));
    let replayed: Vec<i64> = lines[3000..]
        .iter()
        .copied()
        .filter(|offset| *offset <= 3000)
        .collect();
    assert_eq!(replayed, (1..=3000).collect::<Vec<_>>());
    // kill -9: the next start cuts the file back to its committed length, which holds the
    // replayed lines: nothing lost, nothing twice.
    daemon.signal(libc::SIGKILL);
    let _ = daemon.finish(LIMIT);
    append(&bus, 5);
    let once = run_once(&config);
    assert_eq!(once.code(), Some(0), "{once}");
    let expected: std::collections::BTreeMap<i64, usize> = (1..=3205)
        .map(|offset| (offset, if offset <= 3000 { 2 } else { 1 }))
        .collect();
    assert_eq!(tally(&dir, "out/all.jsonl"), expected, "{once}");
}

#[test]
fn ctl_replay_is_one_job_at_a_time_cancelled_on_request_and_refused_where_it_cannot_be() {
    let dir = TestDir::new("ctl-replay-cancel");
    let bus = bus_with(&dir, 150);
    // A slow hook (20 ms an event): the job runs long enough to be seen and cancelled.
    let handlers = format!(
        "{}\n[[handlers]]\nname = \"slow\"\ntype = \"exec\"\n\
         command = [\"sh\", \"-c\", \"cat > /dev/null; sleep 0.02\"]\n",
        jsonl_handler("all", "")
    );
    let config = sqlite_config(&dir, &bus, "", &handlers);
    let config_arg = config.to_string_lossy().into_owned();
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the bus handled", LIMIT, |_| {
        consumer_status(&status(&config), "test")["committed_offset"] == "150"
    });
    // Refused before anything starts: an unknown handler, a range backwards.
    let unknown = buslink(&[
        "ctl",
        "--config",
        &config_arg,
        "replay",
        "--from",
        "1",
        "--handler",
        "nope",
    ]);
    assert_eq!(unknown.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains(
            "--handler \"nope\": consumer 'test' has no such handler (it has: all, slow)"
        ),
        "{unknown}"
    );
    let backwards = buslink(&[
        "ctl",
        "--config",
        &config_arg,
        "replay",
        "--from",
        "9",
        "--to",
        "3",
    ]);
    assert_eq!(backwards.code(), Some(2), "{backwards}");
    assert!(
        backwards.stderr.contains("--to 3 comes before --from 9"),
        "{backwards}"
    );
    // A --from the bus does not have: refused before a job is numbered.
    let absent = buslink(&["ctl", "--config", &config_arg, "replay", "--from", "abc"]);
    assert_eq!(absent.code(), Some(2), "{absent}");
    assert!(
        absent.stderr.contains("no replay started: --from \"abc\""),
        "{absent}"
    );
    assert!(consumer_status(&status(&config), "test")["replay"].is_null());
    // The slow job, followed by `ctl replay` in the background.
    let mut follower = Daemon::start(buslink_testkit::process::buslink(&[
        "ctl",
        "--config",
        &config_arg,
        "replay",
        "--from",
        "beginning",
        "--handler",
        "all",
        "--handler",
        "slow",
        "--match",
        "category=*",
    ]));
    daemon.wait_for("the job running", LIMIT, |_| {
        let job = consumer_status(&status(&config), "test")["replay"].clone();
        job["state"] == "running" && job["events"].as_u64().is_some_and(|n| n > 0)
    });
    // A second job is refused while the first runs.
    let second = buslink(&["ctl", "--config", &config_arg, "replay", "--from", "1"]);
    assert_eq!(second.code(), Some(2), "{second}");
    assert!(
        second
            .stderr
            .contains("replay #1 is running: one at a time"),
        "{second}"
    );
    let cancel = buslink(&["ctl", "--config", &config_arg, "replay", "--cancel"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    assert!(cancel.stdout.contains("replay #1 cancelled"), "{cancel}");
    follower.wait_for("the follower's end", LIMIT, |f| {
        f.stderr().contains("replay #1 cancelled")
    });
    let follower = follower.finish(LIMIT);
    assert_eq!(follower.code(), Some(1), "{follower}");
    let job = consumer_status(&status(&config), "test")["replay"].clone();
    assert_eq!(job["state"], "cancelled", "{job}");
    let replayed = job["events"].as_u64().expect("events");
    assert!(replayed > 0 && replayed < 150, "{job}");
    // What was replayed before the cancel is in the output, once; the rest is not.
    daemon.wait_for("the outputs committed", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) as u64 == 150 + replayed
    });
    let again = buslink(&["ctl", "--config", &config_arg, "replay", "--cancel"]);
    assert_eq!(again.code(), Some(2), "{again}");
    assert!(
        again.stderr.contains("runs no replay: nothing cancelled"),
        "{again}"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}
