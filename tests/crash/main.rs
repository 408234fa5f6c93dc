//! Crash harness: the real `buslink` daemon (`target/debug/buslink`) with a `jsonl` handler,
//! killed with SIGKILL at seeded pseudo-random instants and restarted, again and again, on
//!
//! - the **sqlite** bus: a generated Hermes bus (`HermesBusWriter`), offsets are msgids `1..=N`;
//! - **HMB**: the in-repo HMB server (in process), one queue published before the run, offsets
//!   are the seqs;
//! - **plugin executables** (`children.rs`): one daemon runs the sqlite plugin's executable and
//!   its *child* is killed instead, half of the kills with a reply frame half written (the
//!   daemon frozen until the child is seen blocked writing to it); every event once, in order,
//!   and the restart counter equal to the kills; the same for the test Hermes plugin under the
//!   Python side of buslink (`plugin = { hermes_plugin = "..." }`).
//!
//! Each start draws its `batch_size`, `queue_batches` and `[commit]` cadence from the seed and
//! alternates `fsync = "each"` / `"background"`; the HMB consumer also varies `format`,
//! `recv_limit` and `/stream`. The first kill always lands after the first events were written
//! and before the first commit (the one start with no cache at all). Later kills land a random
//! 0..400 ms after the start (a third of them within the first 40 ms: plugin loading, reading
//! the cache, cutting the file back), or once the file's last line reaches a random offset
//! ahead; both are paced so that the kills spread over the whole bus.
//!
//! After every kill, `buslink offsets show --json` must succeed (the cache is always readable),
//! never claim an event the file has no valid line for, never go back, and (when the cache
//! holds the file's committed length, `outputs.all.length`) that length must lie within the
//! file, on a line boundary, with exactly the events through the committed offset before it.
//! After the kills a `run --once` drains the rest; then every line of the file must be one JSON
//! event (nothing torn or glued) and every event of the bus must be there exactly once, in
//! order: the exactly-once `jsonl` handler commits its file length with the offset and cuts the
//! file back to it at start.
//!
//! Each bus prints its seed first and a one-line summary last (bus, seed, kills, events, lost,
//! duplicated, ...): the figures for RELIABILITY.md. A failure names the seed and shows the
//! runs around the first finding.
//!
//! ```sh
//! cargo build --workspace   # the daemon and the plugins the harness runs
//! cargo test -p buslink-e2e --test crash -- --nocapture                  # 20 kills per bus
//! BUSLINK_CRASH_KILLS=200 cargo test -p buslink-e2e --test crash -- --nocapture   # 200+ kills
//! BUSLINK_CRASH_SEED=1234 cargo test -p buslink-e2e --test crash sqlite -- --nocapture  # replay
//! BUSLINK_CRASH_KILLS=60 cargo test -p buslink-e2e --test crash children -- --nocapture  # 60 child kills
//! ```
//!
//! Environment: `BUSLINK_CRASH_SEED` (decimal or `0x` hex; default: from the clock, each bus
//! its own), `BUSLINK_CRASH_KILLS` (kills per bus, default 20), `BUSLINK_CRASH_EVENTS` (events
//! per bus, default 3000, or 25 per kill when that is more), `BUSLINK_CRASH_VERBOSE` (set: one
//! line per kill: the knobs, the instant, what the cache and the file held after it). A replay
//! repeats every decision (knobs, kill delays and targets); where exactly a kill lands in the
//! daemon's work is timing, not seed. 20 kills per bus take about 5 s (both buses in parallel,
//! debug build, 2 cores), 200 about 60-80 s.

mod children;
mod harness;
mod rng;

use buslink_hmb_server::{Incoming, RunningServer, Server, Settings};
use buslink_testkit::{build_dir, hermes_events, HermesBusWriter, TestDir};
use harness::{crash_loop, Bus, CrashSettings, Knobs};
use rng::Rng;
use serde_json::json;
use std::path::PathBuf;

/// The sqlite bus: a generated Hermes bus file in the test directory.
struct SqliteBus {
    file: PathBuf,
    expected: Vec<i64>,
}

impl SqliteBus {
    fn generate(dir: &TestDir, events: usize) -> SqliteBus {
        let file = dir.join("bus.sqlite");
        HermesBusWriter::open(&file)
            .and_then(|mut writer| writer.append_all(hermes_events(events)))
            .unwrap_or_else(|e| panic!("cannot write the bus {}: {e}", file.display()));
        SqliteBus {
            file,
            expected: (1..=events as i64).collect(),
        }
    }
}

impl Bus for SqliteBus {
    fn name(&self) -> &str {
        "sqlite"
    }

    fn expected(&self) -> &[i64] {
        &self.expected
    }

    fn write_config(&self, dir: &TestDir, knobs: &Knobs, rng: &mut Rng) -> (PathBuf, String) {
        let poll_interval_ms = rng.pick(&[5, 10, 50]);
        let text = format!(
            "state_dir = \"state\"\nplugin_dirs = [\"{plugins}\"]\nstats_interval_s = 0\n\n\
             [consumer]\nname = \"crash\"\nplugin = \"sqlite\"\nclass = \"SqliteConsumer\"\n\
             timeout_ms = 200\n{consumer}\n[consumer.settings]\nuri = \"{bus}\"\n\
             poll_interval_ms = {poll_interval_ms}\n\n{rest}",
            plugins = build_dir().display(),
            consumer = knobs.consumer_lines(),
            bus = self.file.display(),
            rest = knobs.commit_and_handler(),
        );
        (
            dir.write("buslink.toml", text),
            format!("poll_interval_ms={poll_interval_ms}"),
        )
    }
}

/// The HMB bus: one queue of the in-process server, filled before the run.
struct HmbBus {
    url: String,
    expected: Vec<i64>,
    /// Held so the server lives as long as the bus.
    _server: RunningServer,
}

const HMB_QUEUE: &str = "CRASH";

impl HmbBus {
    fn start(events: usize) -> HmbBus {
        let server = Server::start(Settings {
            // Every message stays on the server for the whole run.
            buffer_size: events + 1000,
            // Every killed daemon leaves its session behind until it expires.
            sessions_per_ip: 0,
            ..Settings::for_tests()
        })
        .expect("the HMB server starts");
        let expected = (0..events)
            .map(|n| {
                let message = Incoming::new("NOTICE", HMB_QUEUE)
                    .topic("EVENT")
                    .data(json!({"n": n, "text": format!("message number {n}")}));
                server
                    .publish("crash", message)
                    .unwrap_or_else(|e| panic!("publishing message {n}: {e}"))
                    .unwrap_or_else(|| panic!("message {n} was stored without a seq"))
            })
            .collect();
        HmbBus {
            url: server.bus_url("crash"),
            expected,
            _server: server,
        }
    }
}

impl Bus for HmbBus {
    fn name(&self) -> &str {
        "hmb"
    }

    fn expected(&self) -> &[i64] {
        &self.expected
    }

    fn write_config(&self, dir: &TestDir, knobs: &Knobs, rng: &mut Rng) -> (PathBuf, String) {
        let format = rng.pick(&["json", "bson"]);
        let recv_limit = rng.pick(&[1, 4, 16, 1024]);
        let stream = rng.chance(33);
        let text = format!(
            "state_dir = \"state\"\nplugin_dirs = [\"{plugins}\"]\nstats_interval_s = 0\n\n\
             [consumer]\nname = \"crash\"\nplugin = \"hmb\"\nclass = \"HmbConsumer\"\n\
             timeout_ms = 400\n{consumer}\n[consumer.settings]\nurl = \"{url}\"\n\
             format = \"{format}\"\nrecv_limit = {recv_limit}\nstream = {stream}\n\
             heartbeat = 1\nretry_wait_ms = 20\nretry_wait_max_ms = 200\n\n\
             [consumer.settings.queues.{HMB_QUEUE}]\n\n{rest}",
            plugins = build_dir().display(),
            consumer = knobs.consumer_lines(),
            url = self.url,
            rest = knobs.commit_and_handler(),
        );
        (
            dir.write("buslink.toml", text),
            format!("format={format} recv_limit={recv_limit} stream={stream}"),
        )
    }
}

#[test]
fn sqlite_bus_survives_sigkills_exactly_once() {
    let settings = CrashSettings::from_env();
    let dir = TestDir::new("crash-sqlite");
    let bus = SqliteBus::generate(&dir, settings.events);
    crash_loop(&bus, &dir, settings);
}

#[test]
fn sqlite_executable_children_survive_sigkills_some_mid_frame() {
    children::child_crash_loop(CrashSettings::from_env(), children::Child::SqliteExecutable);
}

#[test]
fn hermes_plugin_children_survive_sigkills_mid_batch() {
    children::child_crash_loop(CrashSettings::from_env(), children::Child::HermesPython);
}

#[test]
fn hmb_bus_survives_sigkills_exactly_once() {
    let settings = CrashSettings::from_env();
    let dir = TestDir::new("crash-hmb");
    let bus = HmbBus::start(settings.events);
    crash_loop(&bus, &dir, settings);
}
