//! Reload (SIGHUP, `ctl reload`): handlers swapped, changed consumers restarted, new ones
//! started, removed ones stopped, bad configs refused with the running config kept.

use crate::common::*;
use buslink_testkit::{build_dir, Daemon, TestDir};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sighup_swaps_changed_handlers_restarts_a_changed_consumer_and_refuses_a_bad_config() {
    let dir = TestDir::new("reload");
    let bus = bus_with(&dir, 20);
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("a", ""));
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 20 events", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 20
    });
    // A second handler: swapped in at a batch boundary, the bus left open; the new handler
    // gets what comes after 20.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{text}\n{}", jsonl_handler("b", ""))).expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the reload", LIMIT, |d| {
        d.stderr().contains(
            "reloaded: 0 consumer(s) unchanged, 1 with new handlers, 0 restarted, 0 started, 0 stopped",
        ) && d.stderr().contains("handlers swapped at a batch boundary: a, b")
    });
    assert_eq!(
        daemon.stderr().matches("open and positioned").count(),
        1,
        "the bus was not re-opened"
    );
    append(&bus, 5);
    daemon.wait_for("the new events in both", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 25 && count_lines(&dir.join("out/b.jsonl")) == 5
    });
    // A changed consumer table restarts the consumer: it resumes right after what it handled.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.edit("timeout_ms = 200", "timeout_ms = 150")).expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the restart", LIMIT, |d| {
        d.stderr().contains(
            "reloaded: 0 consumer(s) unchanged, 0 with new handlers, 1 restarted, 0 started, 0 stopped",
        ) && d.stderr().matches("open and positioned").count() == 2
    });
    append(&bus, 2);
    daemon.wait_for("the events after the restart", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 27 && count_lines(&dir.join("out/b.jsonl")) == 7
    });
    // An invalid config is logged and the running one stays (through `ctl reload` this time).
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        format!("{good}\n[[handlers]]\nname = \"c\"\ntype = \"carrier-pigeon\"\n"),
    )
    .expect("config");
    let refused = ctl(&config, &["reload"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("reload refused, the running config stays:")
            && refused.stderr.contains("carrier-pigeon"),
        "{refused}"
    );
    assert!(daemon.stderr().contains("carrier-pigeon"));
    // Where the offsets and locks are cannot move under running consumers: a restart's job.
    std::fs::write(
        &config,
        good.edit("state_dir = \"state\"", "state_dir = \"elsewhere\""),
    )
    .expect("config");
    // (SIGHUP: `ctl` looks for the socket where the new config says.)
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the state_dir refusal", LIMIT, |d| {
        d.stderr()
            .contains("need a restart (systemctl restart), not a reload")
    });
    assert!(!dir.join("elsewhere").exists());
    // A plugin's refusal of its settings is caught before anything stops, too.
    std::fs::write(
        &config,
        good.edit("poll_interval_ms = 10", "poll_interval_ms = \"soon\""),
    )
    .expect("config");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the second refusal", LIMIT, |d| {
        d.stderr()
            .matches("reload refused, the running config stays:")
            .count()
            >= 2
            && d.stderr().contains("consumer.settings.poll_interval_ms")
    });
    append(&bus, 3);
    daemon.wait_for("the old config still at work", LIMIT, |_| {
        count_lines(&dir.join("out/a.jsonl")) == 30 && count_lines(&dir.join("out/b.jsonl")) == 10
    });
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.stderr.matches("reloaded:").count(), 2, "{run}");
    assert_eq!(
        offsets(&read_lines(&dir, "out/a.jsonl")),
        (1..=30).collect::<Vec<_>>(),
        "nothing lost, nothing twice across the swap and the restart"
    );
    assert_eq!(
        offsets(&read_lines(&dir, "out/b.jsonl")),
        (21..=30).collect::<Vec<_>>()
    );
}

#[test]
fn a_reload_that_changes_a_failing_consumer_starts_it_again_at_once_not_after_its_backoff() {
    let dir = TestDir::new("reload-backoff");
    let bus_a = bus(&dir, "a.sqlite", 5);
    // `refusing` fails on its first event (a handler with on_failure = "stop"); `broken`'s
    // plugin panics on its third: both are restarted with backoff, 1 s doubling.
    let refusing = |command: &str| {
        sqlite_consumer("refusing", &bus_a)
            + &format!(
                "[[consumers.handlers]]\nname = \"gate\"\ntype = \"exec\"\n\
                 command = [\"{command}\"]\nretry = {{ attempts = 1 }}\n"
            )
    };
    let broken = |panic: &str| faulty_consumer("broken", &format!("events = 6\n{panic}"));
    let config = several(
        &dir,
        "",
        &[
            refusing("false"),
            broken("panic_in = \"poll\"\npanic_at_event = 3"),
        ],
    );
    let mut daemon = Daemon::run(&config);
    // Both wait 8 s now: a reload fixes them (only the handlers of one, the plugin's settings
    // of the other).
    daemon.wait_for("both in an 8 s backoff", LIMIT, |d| {
        let log = d.stderr();
        ["refusing", "broken"].iter().all(|name| {
            log.lines().any(|line| {
                line.contains(&format!("consumer{{name={name}}}"))
                    && line.contains("restart 4 in 8 s")
            })
        })
    });
    several(&dir, "", &[refusing("true"), broken("")]);
    let reloaded = std::time::Instant::now();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("every event of both", LIMIT, |_| {
        count_lines(&dir.join("out/refusing.jsonl")) == 5
            && count_lines(&dir.join("out/broken.jsonl")) == 6
    });
    let took = reloaded.elapsed();
    // Had either waited out its backoff, this would be 8 s at least.
    assert!(
        took < std::time::Duration::from_secs(7),
        "{took:?}\n{}",
        daemon.stderr()
    );
    let log = daemon.stderr();
    assert!(
        log.contains("reloaded: 0 consumer(s) unchanged, 1 with new handlers, 1 restarted"),
        "{log}"
    );
    assert!(!log.contains("restart 5 in"), "{log}");
    assert_eq!(
        log.matches("the reload cuts the wait short").count(),
        2,
        "{log}"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

#[test]
fn a_reload_starts_a_new_consumer_and_stops_a_removed_one_leaving_the_rest() {
    let dir = TestDir::new("reload-several");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 10), bus(&dir, "b.sqlite", 15));
    let metrics = METRICS_ON_ANY_PORT;
    let config = several(&dir, metrics, &[sqlite_consumer("alpha", &bus_a)]);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("alpha's events", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 10
    });
    several(
        &dir,
        metrics,
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("beta's events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 15
    });
    assert!(daemon.stderr().contains(
        "reloaded: 1 consumer(s) unchanged, 0 with new handlers, 0 restarted, 1 started, 0 stopped"
    ));
    // alpha leaves the config: it stops; beta goes on.
    several(&dir, metrics, &[sqlite_consumer("beta", &bus_b)]);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("alpha stopped", LIMIT, |d| {
        d.stderr()
            .contains("reloaded: 1 consumer(s) unchanged, 0 with new handlers, 0 restarted, 0 started, 1 stopped")
    });
    daemon.wait_for("only beta in the status", LIMIT, |_| {
        let status = status(&config);
        status["consumers"].as_array().map(Vec::len) == Some(1)
            && consumer_status(&status, "beta")["state"] == "running"
    });
    append(&bus_a, 4);
    append(&bus_b, 4);
    daemon.wait_for("beta's new events", LIMIT, |_| {
        count_lines(&dir.join("out/beta.jsonl")) == 19
    });
    assert_eq!(
        count_lines(&dir.join("out/alpha.jsonl")),
        10,
        "alpha stopped"
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
}

/// A reload removes `held`, whose hook holds an event: it stays in `status` (and the
/// metrics) as `stopping` until the hook gives the event back, then goes; the reload's answer
/// says it is still stopping. (It vanished from `status`, `/health` and the metrics at once,
/// and the reload said `1 stopped`.)
#[test]
fn a_removed_consumer_whose_handler_holds_an_event_shows_stopping_until_it_has_stopped() {
    let dir = TestDir::new("reload-removed-held");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 5), bus(&dir, "b.sqlite", 5));
    let (go, holding) = (dir.join("go"), dir.join("holding"));
    let hook = script(
        &dir,
        "hook.sh",
        format!(
            "#!/bin/sh\ncat > /dev/null\ntouch '{}'\ni=0; while [ ! -e '{}' ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i + 1)); done\n",
            holding.display(),
            go.display()
        ),
    );
    let held = sqlite_consumer("held", &bus_a).replacen(
        "[[consumers.handlers]]\n",
        &format!(
            "[[consumers.handlers]]\nname = \"hook\"\ntype = \"exec\"\ncommand = [\"{}\"]\n\
             timeout_ms = 120000\n\n[[consumers.handlers]]\n",
            hook.display()
        ),
        1,
    );
    let steady = sqlite_consumer("steady", &bus_b);
    let config = several(&dir, METRICS_ON_ANY_PORT, &[held, steady.clone()]);
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("steady's events, held's first in the hook", LIMIT, |_| {
        count_lines(&dir.join("out/steady.jsonl")) == 5 && holding.exists()
    });
    let address = metrics_address(&daemon.stderr());
    several(&dir, METRICS_ON_ANY_PORT, &[steady]);
    let reload = ctl(&config, &["reload"]).stdout;
    assert!(
        reload.contains("0 started, 0 stopped, 1 still stopping"),
        "{reload}"
    );
    assert_eq!(
        consumer_status(&status(&config), "held")["state"],
        "stopping"
    );
    let state_of_held = || {
        sample(
            &scrape(&address, "/metrics").1,
            "buslink_consumer_state{consumer=\"held\",state=\"stopping\"}",
        )
    };
    assert_eq!(state_of_held(), Some(1.0));
    std::fs::write(&go, "").expect("go");
    daemon.wait_for("held gone once stopped", LIMIT, |_| {
        let status = status(&config);
        status["consumers"].as_array().map(Vec::len) == Some(1)
            && consumer_status(&status, "steady")["state"] == "running"
            && state_of_held().is_none()
    });
    // It finished the event in hand and committed it before it went.
    assert_eq!(count_lines(&dir.join("out/held.jsonl")), 1);
    let out = daemon.terminate(LIMIT);
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn a_reload_after_a_plugin_library_was_replaced_restarts_its_consumer_on_the_new_code() {
    let dir = TestDir::new("reload-upgrade");
    let bus = bus_with(&dir, 10);
    // The plugin from a directory of this test's own, replaced as a package upgrade does
    // (a new file renamed over the old one).
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let library = plugins.join("libbuslink_sqlite.so");
    std::fs::copy(build_dir().join("libbuslink_sqlite.so"), &library).expect("library");
    let config = sqlite_config(&dir, &bus, "", &jsonl_handler("all", ""));
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.edit(
            &format!("plugin_dirs = [\"{}\"]", build_dir().display()),
            &format!("plugin_dirs = [\"{}\"]", plugins.display()),
        ),
    )
    .expect("config");
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("the 10 events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 10
    });
    // Unchanged: a reload touches nothing.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("a first reload", LIMIT, |d| {
        d.stderr().contains("reloaded: 1 consumer(s) unchanged")
    });
    let upgrade = plugins.join("upgrade.tmp");
    std::fs::copy(build_dir().join("libbuslink_sqlite.so"), &upgrade).expect("upgrade");
    std::fs::rename(&upgrade, &library).expect("upgrade in place");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for("the restart on the new library", LIMIT, |d| {
        d.stderr()
            .contains("changed on disk: it restarts on the new code")
            && d.stderr().contains("1 restarted")
    });
    assert_eq!(daemon.stderr().matches("loaded plugin 'sqlite'").count(), 2);
    append(&bus, 5);
    daemon.wait_for("the new events", LIMIT, |_| {
        count_lines(&dir.join("out/all.jsonl")) == 15
    });
    assert_eq!(
        offsets(&read_lines(&dir, "out/all.jsonl")),
        (1..=15).collect::<Vec<_>>()
    );
    daemon.terminate(LIMIT);
}

#[test]
fn a_reload_that_hands_an_exactly_once_file_to_another_consumer_is_refused() {
    let dir = TestDir::new("reload-swap-files");
    let (bus_a, bus_b) = (bus(&dir, "a.sqlite", 5), bus(&dir, "b.sqlite", 5));
    let config = several(
        &dir,
        "",
        &[
            sqlite_consumer("alpha", &bus_a),
            sqlite_consumer("beta", &bus_b),
        ],
    );
    let mut daemon = Daemon::run(&config);
    daemon.wait_for("both", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 5
            && count_lines(&dir.join("out/beta.jsonl")) == 5
    });
    // The two swap their files: both would write one file until each reached a batch end.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.edit("out/alpha.jsonl", "out/TMP")
            .edit("out/beta.jsonl", "out/alpha.jsonl")
            .edit("out/TMP", "out/beta.jsonl"),
    )
    .expect("config");
    let refused = ctl(&config, &["reload"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(
        refused
            .stderr
            .contains("an exactly-once file changes hands only with a restart"),
        "{refused}"
    );
    append(&bus_a, 2);
    daemon.wait_for("alpha goes on with its own file", LIMIT, |_| {
        count_lines(&dir.join("out/alpha.jsonl")) == 7
    });
    assert_eq!(count_lines(&dir.join("out/beta.jsonl")), 5);
    daemon.terminate(LIMIT);
}
