//! The crash loop for plugin executables: one daemon runs the sqlite plugin's executable
//! (`plugin = { command = [...] }`) while its **child** is killed with SIGKILL again and again;
//! half of the kills land with a reply frame half written.
//!
//! A half-written frame is made, not hoped for: the daemon is frozen (SIGSTOP) until the child
//! is seen blocked writing to its stdout (`/proc/PID/wchan` is a pipe write: the pipe is full
//! and the frame is not all in it, events of 5 kB make a batch's frame larger than the pipe),
//! then the child is killed and the daemon thawed; it reads the frame's start and then the end
//! of the pipe. The other kills land at random instants.
//!
//! After each kill the daemon must start a new child (seen in `ctl status --json`); at the end
//! every event of the bus must be in the jsonl file exactly once, in order, every line whole
//! (the daemon never stopped: the reader resumes after the last event it read, so not even
//! the uncommitted window repeats), the restart counter must equal the kills, and the log must
//! name a cut frame for each kill made mid-frame.

use crate::harness::{naming_the_seed, tail_offset, CrashSettings, Scan, OUT};
use crate::rng::Rng;
use buslink_testkit::process::run;
use buslink_testkit::{build_dir, hermes_events, Daemon, HermesBusWriter, TestDir};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// Padding per event: 512 events make a frame of about 1.7 MB, over the 1 MB pipe.
const PADDING: usize = 3000;

/// Events appended before each kill: more than a batch, so the kill lands while the daemon
/// reads them.
const CHUNK: usize = 600;

/// Appends the events `from..from + count` of the generated sequence to the bus at `file`,
/// each with a padding attribute.
fn append_padded(file: &Path, from: usize, count: usize) {
    let padding = "p".repeat(PADDING);
    let padded = hermes_events(from + count)
        .skip(from)
        .map(|(data, timestamp)| {
            let mut value: Value = serde_json::from_str(&data).expect("generated JSON");
            if let Some(object) = value.as_object_mut() {
                object.insert("padding".into(), Value::String(padding.clone()));
            }
            (value.to_string(), timestamp)
        });
    HermesBusWriter::open(file)
        .and_then(|mut writer| writer.append_all(padded))
        .unwrap_or_else(|e| panic!("cannot write the bus {}: {e}", file.display()));
}

/// The child in consumer `crash`'s status: (pid, restarts).
fn child_of(config: &Path) -> (Option<u32>, Option<u64>) {
    let shown = run(
        &[
            "ctl",
            "--config",
            &config.to_string_lossy(),
            "status",
            "--json",
        ],
        LIMIT,
    );
    let status: Value = serde_json::from_str(&shown.stdout).unwrap_or_default();
    let process = status["consumers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["consumer"] == "crash"))
        .map(|c| c["plugin_process"].clone())
        .unwrap_or_default();
    (
        process["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
        process["restarts"].as_u64(),
    )
}

/// Whether `pid` is blocked writing into a pipe.
fn writing_to_a_pipe(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("pipe_write"))
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the daemon or its plugin child, processes this test started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Kills the child with a reply frame half written: freezes the daemon until the child is
/// blocked writing to it, then kills the child and thaws the daemon. `false` when the child was
/// never caught writing in `tries` freezes (it was then left alone).
fn kill_mid_frame(daemon: u32, child: u32, rng: &mut Rng, tries: usize) -> bool {
    for _ in 0..tries {
        signal(daemon, libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_millis(150);
        let mut caught = false;
        while Instant::now() < deadline {
            if writing_to_a_pipe(child) {
                caught = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if caught {
            signal(child, libc::SIGKILL);
            signal(daemon, libc::SIGCONT);
            return true;
        }
        signal(daemon, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(rng.range(1, 30)));
    }
    false
}

/// What the loop found.
#[derive(Debug)]
pub struct ChildOutcome {
    pub kills: usize,
    pub mid_frame: usize,
    pub events: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub invalid_lines: usize,
    pub restarts: u64,
    pub cut_frames_logged: usize,
}

/// Which child the daemon runs.
#[derive(Clone, Copy, Debug)]
pub enum Child {
    /// The sqlite plugin's executable (`plugin = { command = [...] }`).
    SqliteExecutable,
    /// The test Hermes plugin (`tests/fixture-plugins/hermes/sqlitelike`) under the Python side
    /// of buslink (`plugin = { hermes_plugin = "..." }`).
    HermesPython,
}

impl Child {
    fn name(self) -> &'static str {
        match self {
            Child::SqliteExecutable => "sqlite-executable",
            Child::HermesPython => "hermes-python",
        }
    }

    /// Whether half of the kills are made mid-frame. The Python side's batches form in time
    /// (an idle cut), mostly smaller than the pipe: its kills land at random instants while
    /// it reads a chunk (mid-batch).
    fn mid_frame(self) -> bool {
        matches!(self, Child::SqliteExecutable)
    }

    /// The config's `plugin`, `class` and settings lines for the bus at `bus`.
    fn consumer_lines(self, bus: &Path) -> String {
        match self {
            Child::SqliteExecutable => format!(
                "plugin = {{ command = [\"{}\"] }}\nclass = \"SqliteConsumer\"\n\
                 [consumer.settings]\nuri = \"{}\"\npoll_interval_ms = 10\n",
                build_dir().join("buslink-plugin-sqlite").display(),
                bus.display()
            ),
            Child::HermesPython => format!(
                "plugin = {{ hermes_plugin = \"{}\" }}\nclass = \"SqliteLikeConsumerPlugin\"\n\
                 [consumer.settings]\nuri = \"{}\"\n",
                buslink_testkit::workspace_root()
                    .join("tests/fixture-plugins/hermes/sqlitelike")
                    .display(),
                bus.display()
            ),
        }
    }
}

/// The loop: `settings.kills` kills of the child of one daemon, each after [`CHUNK`] padded
/// events were appended to the bus (`settings.events` is not used: the bus grows with the
/// kills).
pub fn child_crash_loop(settings: CrashSettings, child: Child) -> ChildOutcome {
    let seed = settings.seed;
    let name = child.name();
    eprintln!(
        "crash {name}: seed {seed} (replay: BUSLINK_CRASH_SEED={seed}), {} kills, {} events",
        settings.kills,
        CHUNK * (settings.kills + 1)
    );
    let outcome = naming_the_seed(name, seed, || run_children(settings, child));
    eprintln!(
        "crash summary: bus={name} seed={seed} kills={} mid_frame={} events={} \
         lost={} duplicated={} invalid_lines={} restarts={} cut_frames_logged={}",
        outcome.kills,
        outcome.mid_frame,
        outcome.events,
        outcome.lost,
        outcome.duplicated,
        outcome.invalid_lines,
        outcome.restarts,
        outcome.cut_frames_logged
    );
    outcome
}

fn run_children(settings: CrashSettings, kind: Child) -> ChildOutcome {
    let mut rng = Rng::new(settings.seed, "children");
    let dir = TestDir::new("crash-children");
    let bus = dir.join("bus.sqlite");
    append_padded(&bus, 0, CHUNK);
    let mut events = CHUNK;
    let every_events = rng.pick(&[1, 5, 64, 1000]);
    let config = dir.write(
        "buslink.toml",
        format!(
            "state_dir = \"state\"\nstats_interval_s = 0\n\n[consumer]\nname = \"crash\"\n\
             timeout_ms = 200\nbatch_size = 512\nqueue_batches = {queue}\n{plugin}\n\
             [commit]\nevery_events = {every_events}\nevery_ms = 50\n\n\
             [[handlers]]\nname = \"all\"\ntype = \"jsonl\"\npath = \"{OUT}\"\n",
            queue = rng.range(1, 4),
            plugin = kind.consumer_lines(&bus),
        ),
    );
    let out = dir.join(OUT);
    let mut daemon = Daemon::run(&config);
    let mut child = None;
    daemon.wait_for("the first child", LIMIT, |_| {
        child = child_of(&config).0;
        child.is_some()
    });
    let mut mid_frame = 0;
    for kill in 0..settings.kills {
        let current = child.expect("a child runs");
        // Events to read: the kill lands while the daemon reads them (or, at random instants,
        // sometimes after it read them all).
        append_padded(&bus, events, CHUNK);
        events += CHUNK;
        let caught = kind.mid_frame()
            && kill % 2 == 0
            && kill_mid_frame(daemon.pid(), current, &mut rng, 40);
        if caught {
            mid_frame += 1;
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(0, 150)));
            signal(current, libc::SIGKILL);
        }
        let mut next = None;
        daemon.wait_for("a new child after a kill", LIMIT, |_| {
            next = child_of(&config).0.filter(|pid| *pid != current);
            next.is_some()
        });
        child = next;
    }
    let last = events as i64;
    daemon.wait_for("every event in the file", LIMIT, |_| {
        tail_offset(&out) == Some(last)
    });
    let restarts = child_of(&config).1.unwrap_or(u64::MAX);
    let log = daemon.stderr();
    let stopped = daemon.terminate(LIMIT);
    assert_eq!(stopped.code(), Some(0), "the daemon's stop: {stopped}");
    let scan = Scan::of(&out);
    let mut seen = std::collections::BTreeMap::new();
    for offset in &scan.offsets {
        *seen.entry(*offset).or_insert(0usize) += 1;
    }
    let outcome = ChildOutcome {
        kills: settings.kills,
        mid_frame,
        events,
        lost: (1..=last).filter(|o| !seen.contains_key(o)).count(),
        duplicated: seen.values().map(|n| n - 1).sum(),
        invalid_lines: scan.invalid + usize::from(scan.torn_tail),
        restarts,
        cut_frames_logged: log.matches("in the middle of a frame").count(),
    };
    let in_order = scan.offsets.windows(2).all(|pair| pair[0] < pair[1]);
    assert!(
        outcome.lost == 0 && outcome.duplicated == 0 && outcome.invalid_lines == 0 && in_order,
        "seed {}: {outcome:?}, in order: {in_order}",
        settings.seed
    );
    assert_eq!(
        outcome.restarts, settings.kills as u64,
        "the restart counter against the kills made"
    );
    assert!(
        !kind.mid_frame() || settings.kills < 2 || mid_frame > 0,
        "no kill landed mid-frame in {} tries: {outcome:?}",
        settings.kills
    );
    assert!(
        outcome.cut_frames_logged >= mid_frame,
        "each kill mid-frame is logged as a cut frame: {outcome:?}\n{log}"
    );
    outcome
}
