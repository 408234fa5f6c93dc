//! Several consumers in one process (`[[consumers]]`): each its own pipeline, cache and lock;
//! a failed consumer restarted by the supervisor without touching the others; `--once` over
//! all of them.

use crate::common::*;
use buslink_testkit::process::run;
use buslink_testkit::{Daemon, TestDir};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn buslink(args: &[&str]) -> buslink_testkit::RunOutput {
    run(args, LIMIT)
}

#[test]
fn two_consumers_on_two_buses_run_in_one_process_each_with_its_own_offsets() {
    let dir = TestDir::new("two-consumers");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 20), bus(&dir, "b.sqlite", 30));
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    let check = buslink(&["check", "--config", &config.to_string_lossy()]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("consumer: 'alpha'"), "{check}");
    assert!(check.stdout.contains("consumer: 'beta'"), "{check}");

    let mut daemon = Daemon::run(&config);
    daemon.wait_for("both buses handled", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 20
            && count_lines(&dir.join("out/beta.jsonl")) == 30
    });
    daemon.wait_for("both committed", LIMIT, |_| {
        let status = status(&config);
        consumer_status(&status, "alpha")["committed_offset"] == "20"
            && consumer_status(&status, "beta")["committed_offset"] == "30"
    });
    let text = ctl(&config, &["status"]);
    assert!(
        text.stdout
            .contains("consumer alpha: running (plugin sqlite class SqliteConsumer)"),
        "{text}"
    );
    assert!(text.stdout.contains("consumer beta: running"), "{text}");
    // Pausing one leaves the other running.
    assert_eq!(ctl(&config, &["pause", "alpha"]).stdout, "paused\n");
    append(&bus_a, 5);
    append(&bus_b, 5);
    daemon.wait_for("beta's new events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 35
    });
    let one: Value =
        serde_json::from_str(&ctl(&config, &["status", "--json", "alpha"]).stdout).expect("JSON");
    assert_eq!(one["state"], "paused");
    assert_eq!(count_lines(&dir.join("out/alpha.jsonl")), 20);
    assert_eq!(ctl(&config, &["resume", "alpha"]).stdout, "resumed\n");
    daemon.wait_for("alpha's new events", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 25
    });
    let unknown = ctl(&config, &["pause", "gamma"]);
    assert_eq!(unknown.code(), Some(2), "{unknown}");
    assert!(
        unknown.stderr.contains("no consumer named \"gamma\""),
        "{unknown}"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("running 2 consumers in one process"),
        "{run}"
    );
    // Log lines name their consumer.
    assert!(run.stderr.contains("consumer{name=alpha}"), "{run}");

    // Each consumer has its own offset cache: `show` gives both; a change needs --consumer.
    let config_arg = config.to_string_lossy();
    let both = buslink(&["offsets", "show", "--config", &config_arg]);
    assert_eq!(both.code(), Some(0), "{both}");
    assert!(
        both.stdout
            .contains("consumer 'alpha': last handled offset 25")
            && both
                .stdout
                .contains("consumer 'beta': last handled offset 35"),
        "{both}"
    );
    let ambiguous = buslink(&["offsets", "set", "--config", &config_arg, "5"]);
    assert_eq!(ambiguous.code(), Some(2), "{ambiguous}");
    assert!(
        ambiguous
            .stderr
            .contains("this config has 2 consumers (alpha, beta): name one with --consumer"),
        "{ambiguous}"
    );
    for (name, last) in [("alpha", 25), ("beta", 35)] {
        let show = buslink(&[
            "offsets",
            "show",
            "--json",
            "--config",
            &config_arg,
            "--consumer",
            name,
        ]);
        assert_eq!(show.code(), Some(0), "{show}");
        let record: Value = serde_json::from_str(&show.stdout).expect("JSON");
        assert_eq!(record["last_offset"]["int"], last, "{name}: {show}");
        assert_eq!(
            offsets(&read_lines(&dir, &format!("out/{name}.jsonl"))),
            (1..=last).collect::<Vec<_>>()
        );
    }
    // --once drains both and exits 0.
    append(&bus_a, 3);
    let once = buslink(&["run", "--once", "--config", &config_arg]);
    assert_eq!(once.code(), Some(0), "{once}");
    assert_eq!(count_lines(&dir.join("out/alpha.jsonl")), 28);
    assert_eq!(count_lines(&dir.join("out/beta.jsonl")), 35);
}

#[test]
fn a_failing_consumer_is_restarted_with_backoff_and_the_others_go_on() {
    let dir = TestDir::new("failing-consumer");
    let bus_b = bus(&dir, "b.sqlite", 10);
    // `broken` panics when event 8 is next: events 1-5 are handled, then every restart fails
    // at once (it resumes after 5).
    let config = broken_and_steady(&dir, METRICS_ON_ANY_PORT, &bus_b);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a second restart", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let stderr = daemon.stderr();
    assert!(
        stderr.contains("restart 1 in 1 s (the other consumers go on)"),
        "{stderr}"
    );
    // The other consumer is untouched: it handles what comes meanwhile.
    append(&bus_b, 5);
    daemon.wait_for("steady's events", LIMIT, |_| {
        count_lines(&dir.join("out/steady.jsonl")) == 15
    });
    let broken = consumer_status(&status(&config), "broken");
    let state = broken["state"].as_str().unwrap_or_default();
    assert!(
        state.starts_with("failed: ") || state == "connecting",
        "{broken}"
    );
    assert!(
        broken["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("deliberate panic in poll")),
        "{broken}"
    );
    // /health says which consumer is failing.
    let address = metrics_address(&stderr);
    daemon.wait_for("a failed health", LIMIT, |_| {
        let response = reqwest::blocking::get(format!("http://{address}/health"));
        response.is_ok_and(|r| {
            r.status().as_u16() == 503
                && r.text().is_ok_and(|body| {
                    body.contains("broken: failed:") && body.contains("steady: ok")
                })
        })
    });
    assert_eq!(
        offsets(&read_lines(&dir, "out/broken.jsonl")),
        vec![1, 2, 3, 4, 5],
        "what broken handled before its panic stays, nothing twice"
    );
    daemon.terminate(LIMIT);
}

/// `flaky`'s hook fails while the file `fail` exists (`on_failure = "stop"`): its run fails,
/// the file goes, the restarted run handles every event and shows `running`. A stop then,
/// before that run lasted a minute without failing, exits 1 naming the failure (it exited 0:
/// the restart's run had not failed yet); `steady` stops as it should.
#[test]
fn a_stop_before_a_restarted_consumer_ran_a_minute_exits_1_naming_its_failure() {
    let dir = TestDir::new("stop-while-recovering");
    let bus_a = bus(&dir, "a.sqlite", 5);
    let bus_b = bus(&dir, "b.sqlite", 5);
    let fail = dir.join("fail");
    std::fs::write(&fail, "").expect("fail");
    let hook = script(
        &dir,
        "hook.sh",
        format!(
            "#!/bin/sh\ncat > /dev/null\nif [ -e '{}' ]; then echo 'the hook refuses' >&2; exit 1; fi\n",
            fail.display()
        ),
    );
    let flaky = sqlite_consumer("flaky", &bus_a).replacen(
        "[[consumers.handlers]]\n",
        &format!(
            "[[consumers.handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"{}\"]\n\
             retry = {{ attempts = 1, base_ms = 10, max_ms = 10 }}\non_failure = \"stop\"\n\n\
             [[consumers.handlers]]\n",
            hook.display()
        ),
        1,
    );
    let config = several(&dir, "", &[flaky, sqlite_consumer("steady", &bus_b)]);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("flaky's first failure", LIMIT, |d| {
        d.stderr().contains("restart 1 in 1 s")
    });
    std::fs::remove_file(&fail).expect("fail removed");
    daemon.wait_for("flaky's restarted run handles everything", LIMIT, |_| {
        count_lines(&dir.join("out/flaky.jsonl")) == 5
            && consumer_status(&status(&config), "flaky")["state"] == "running"
            && count_lines(&dir.join("out/steady.jsonl")) == 5
    });
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(1), "{out}");
    let stderr = &out.stderr;
    assert!(
        stderr.contains("consumer 'flaky': stopped ")
            && stderr.contains(
                "into restart 1, before it ran 60 s without failing; the failure before it: "
            )
            && stderr.contains("the hook refuses"),
        "{stderr}"
    );
    assert!(!stderr.contains("consumer 'steady': stopped"), "{stderr}");
}

#[test]
fn the_restarts_of_a_failing_consumer_are_counted_in_the_metrics_as_the_log_tells_them() {
    let dir = TestDir::new("restarts-metric");
    let bus_b = bus(&dir, "b.sqlite", 3);
    let config = broken_and_steady(&dir, METRICS_ON_ANY_PORT, &bus_b);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("a second restart", LIMIT, |d| {
        d.stderr().contains("restart 2 in 2 s")
    });
    let restarts_logged = |d: &Daemon| d.stderr().matches("; restart ").count() as f64;
    let address = metrics_address(&daemon.stderr());
    // The truth is the log: the scrape falls between two reads of it.
    let before = restarts_logged(&daemon);
    let (code, text) = scrape(&address, "/metrics");
    let after = restarts_logged(&daemon);
    assert_eq!(code, 200);
    let counted = sample(&text, "buslink_restarts_total{consumer=\"broken\"}").expect("the series");
    assert!(
        before <= counted && counted <= after && counted >= 2.0,
        "{before} <= {counted} <= {after}\n{text}"
    );
    assert_eq!(
        sample(&text, "buslink_restarts_total{consumer=\"steady\"}"),
        Some(0.0),
        "{text}"
    );
    daemon.terminate(LIMIT);
}

#[test]
fn once_drains_every_consumer_and_fails_when_one_failed() {
    let dir = TestDir::new("once-several");
    let bus_b = bus(&dir, "b.sqlite", 12);
    let config = broken_and_steady(&dir, "", &bus_b);
    let once = buslink(&["run", "--once", "--config", &config.to_string_lossy()]);
    assert_eq!(once.code(), Some(1), "{once}");
    assert!(once.stderr.contains("error: consumer 'broken':"), "{once}");
    assert!(!once.stderr.contains("error: consumer 'steady'"), "{once}");
    assert_eq!(count_lines(&dir.join("out/steady.jsonl")), 12);
    assert_eq!(count_lines(&dir.join("out/broken.jsonl")), 5);
}

#[test]
fn several_consumers_killed_again_and_again_lose_nothing_and_repeat_nothing() {
    const EVENTS: usize = 3000;
    let dir = TestDir::new("several-kill9");
    let names = ["alpha", "beta", "gamma"];
    let entries: Vec<String> = names
        .iter()
        .map(|name| {
            sqlite_consumer(name, &bus(&dir, &format!("{name}.sqlite"), EVENTS))
                .edit("timeout_ms = 200", "timeout_ms = 200\nbatch_size = 37")
        })
        .collect();
    // A commit made durable at every event: slow enough for the kills to land mid-stream.
    let config = several(
        &dir,
        "[commit]\nevery_events = 1\nfsync = \"each\"\n",
        &entries,
    );
    let total = |dir: &TestDir| {
        names
            .iter()
            .map(|name| count_lines(&dir.join(format!("out/{name}.jsonl"))))
            .sum::<usize>()
    };
    // Killed five times part-way, each time further on (a reload in between, once).
    for round in 1..=5 {
        let mut daemon = Daemon::run(&config);
        let target = round * EVENTS * names.len() / 6;
        daemon.wait_for("more events written", LIMIT, |_| total(&dir) >= target);
        if round == 3 {
            daemon.signal(libc::SIGHUP);
            daemon.wait_for("the reload", LIMIT, |d| d.stderr().contains("reloaded:"));
        }
        daemon.signal(libc::SIGKILL);
        eprintln!(
            "round {round}: killed with {} of {} events written",
            total(&dir),
            EVENTS * 3
        );
        let killed = daemon.finish(LIMIT);
        assert_eq!(killed.status.code(), None, "killed: {killed}");
    }
    let rest = buslink_testkit::process::run_once(&config);
    assert_eq!(rest.code(), Some(0), "{rest}");
    for name in names {
        assert_eq!(
            offsets(&read_lines(&dir, &format!("out/{name}.jsonl"))),
            (1..=EVENTS as i64).collect::<Vec<_>>(),
            "{name}: every event once, in order"
        );
    }
}
