//! The crash loop, the same for every bus: start the real daemon, SIGKILL it at a seeded random
//! instant, check the cache against the jsonl file, again and again; then drain the rest with
//! `run --once` and check that every event of the bus is in the file exactly once, in order.

use crate::rng::Rng;
use buslink_testkit::process::{run, run_once};
use buslink_testkit::{Daemon, TestDir};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest any one wait may take (a daemon that does not get there is a failure).
const LIMIT: Duration = Duration::from_secs(60);

/// Where the jsonl handler writes, relative to the test directory (where the config is).
pub const OUT: &str = "out/all.jsonl";

/// How much of the file's end is read to find its last complete line while waiting.
const TAIL_WINDOW: u64 = 16 * 1024;

/// The first kill lands once one of this many first events is in the file.
const FIRST_KILL_WITHIN: usize = 50;

/// A kill "at an instant" is this many milliseconds after the start at most.
const MAX_DELAY_MS: u64 = 400;

/// What one crash run is asked to do (from the environment, see the crate doc).
#[derive(Debug, Clone, Copy)]
pub struct CrashSettings {
    pub seed: u64,
    pub kills: usize,
    pub events: usize,
}

impl CrashSettings {
    /// `BUSLINK_CRASH_SEED` (else the clock), `BUSLINK_CRASH_KILLS` (default 20),
    /// `BUSLINK_CRASH_EVENTS` (default 3000, or 25 per kill when that is more).
    pub fn from_env() -> CrashSettings {
        let kills = env_number("BUSLINK_CRASH_KILLS").unwrap_or(20);
        let events = env_number("BUSLINK_CRASH_EVENTS").unwrap_or(3000.max(25 * kills));
        assert!(events > 0, "BUSLINK_CRASH_EVENTS must be at least 1");
        CrashSettings {
            seed: crate::rng::seed_from_env_or_clock(),
            kills,
            events,
        }
    }
}

fn env_number(name: &str) -> Option<usize> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?} is not a count: {e}")),
    )
}

/// What changes from one start of the daemon to the next, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub batch_size: u64,
    pub queue_batches: u64,
    pub every_events: u64,
    pub every_ms: u64,
    pub fsync: &'static str,
}

impl Knobs {
    /// Knobs for start number `start`; `fsync` alternates between the two modes from start to
    /// start (which one comes first depends on the seed), so every run sees both.
    fn draw(rng: &mut Rng, start: usize, each_first: bool) -> Knobs {
        let each = start.is_multiple_of(2) == each_first;
        Knobs {
            batch_size: rng.pick(&[1, 2, 3, 7, 16, 64, 512]),
            queue_batches: rng.range(1, 4),
            // Mostly a commit every few events, so kills land between, during and right after
            // commits; sometimes only by time, so a kill leaves a long uncommitted tail.
            every_events: rng.pick(&[1, 1, 2, 3, 5, 8, 32, 1_000_000]),
            every_ms: rng.pick(&[1, 10, 50, 250]),
            fsync: if each { "each" } else { "background" },
        }
    }

    /// The lines of `[consumer]` these knobs set.
    pub fn consumer_lines(&self) -> String {
        format!(
            "batch_size = {}\nqueue_batches = {}\n",
            self.batch_size, self.queue_batches
        )
    }

    /// The `[commit]` table and the jsonl handler, to append to a config.
    pub fn commit_and_handler(&self) -> String {
        format!(
            "[commit]\nevery_events = {}\nevery_ms = {}\nfsync = \"{}\"\n\n\
             [[handlers]]\nname = \"all\"\ntype = \"jsonl\"\npath = \"{OUT}\"\n",
            self.every_events, self.every_ms, self.fsync
        )
    }
}

impl std::fmt::Display for Knobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "batch_size={} queue_batches={} every_events={} every_ms={} fsync={}",
            self.batch_size, self.queue_batches, self.every_events, self.every_ms, self.fsync
        )
    }
}

/// A bus under test.
pub trait Bus {
    /// Its name in messages and in the summary (`sqlite`, `hmb`).
    fn name(&self) -> &str;
    /// The offsets of its events, in bus order (strictly increasing).
    fn expected(&self) -> &[i64];
    /// Writes `dir/buslink.toml` for one start: this bus's consumer (with
    /// `knobs.consumer_lines()` in `[consumer]`) and then `knobs.commit_and_handler()`. It may
    /// draw settings of its own from `rng`; it returns the config's path and a description of
    /// those settings for the run log.
    fn write_config(&self, dir: &TestDir, knobs: &Knobs, rng: &mut Rng) -> (PathBuf, String);
}

/// When a run is killed.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// This long after the start (the randomness is the point: startup, the cut of the file,
    /// plugin loading, the middle of a batch or of a commit), or once the file's last complete
    /// line reaches offset `cap`, whichever comes first (so that time-based kills do not drain
    /// the bus in the first few runs and leave the rest to land on an idle daemon).
    After { delay: Duration, cap: Option<i64> },
    /// Once the file's last complete line is the event with this offset or a later one.
    Reach(i64),
}

impl Trigger {
    /// Whether the kill is due, `elapsed` after the start.
    fn due(&self, elapsed: Duration, out: &Path) -> bool {
        let reached = |target: i64| tail_offset(out).is_some_and(|offset| offset >= target);
        match *self {
            Trigger::After { delay, cap } => elapsed >= delay || cap.is_some_and(reached),
            Trigger::Reach(target) => reached(target),
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::After { delay, cap: None } => write!(f, "after {}ms", delay.as_millis()),
            Trigger::After {
                delay,
                cap: Some(cap),
            } => write!(f, "after {}ms or at offset {cap}", delay.as_millis()),
            Trigger::Reach(offset) => write!(f, "at offset {offset}"),
        }
    }
}

/// The jsonl file, line by line.
pub(crate) struct Scan {
    /// The offsets of the valid lines, in file order.
    pub(crate) offsets: Vec<i64>,
    /// Complete lines that are not one JSON event with an integer offset (torn, glued).
    pub(crate) invalid: usize,
    /// The first few of them (shortened), for messages.
    invalid_samples: Vec<String>,
    /// The file does not end with a newline: its last line is torn.
    pub(crate) torn_tail: bool,
}

impl Scan {
    pub(crate) fn of(path: &Path) -> Scan {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        let mut scan = Scan {
            offsets: Vec::new(),
            invalid: 0,
            invalid_samples: Vec::new(),
            torn_tail: !bytes.is_empty() && !bytes.ends_with(b"\n"),
        };
        let complete = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(end) => &bytes[..end],
            None => return scan,
        };
        for line in complete.split(|&b| b == b'\n') {
            let offset = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|event| event["offset"].as_i64());
            match offset {
                Some(offset) => scan.offsets.push(offset),
                None => {
                    scan.invalid += 1;
                    if scan.invalid_samples.len() < 3 {
                        scan.invalid_samples.push(shorten(line));
                    }
                }
            }
        }
        scan
    }
}

fn shorten(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if text.chars().count() <= 160 {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(80).collect();
    let tail: String = {
        let mut tail: Vec<char> = text.chars().rev().take(60).collect();
        tail.reverse();
        tail.into_iter().collect()
    };
    format!("{head:?} ... {tail:?} ({} bytes)", line.len())
}

/// The offset of the file's last complete line, if it is a valid event (cheap: reads the end).
pub(crate) fn tail_offset(path: &Path) -> Option<i64> {
    let mut file = File::open(path).ok()?;
    let start = file.metadata().ok()?.len().saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let end = bytes.iter().rposition(|&b| b == b'\n')?;
    let complete = &bytes[..end];
    let begin = match complete.iter().rposition(|&b| b == b'\n') {
        Some(newline) => newline + 1,
        // The whole window is one line: only whole when the window is the whole file.
        None if start == 0 => 0,
        None => return None,
    };
    serde_json::from_slice::<Value>(&complete[begin..])
        .ok()?
        .get("offset")?
        .as_i64()
}

/// What the cache holds, as `buslink offsets show --json` prints it.
#[derive(Debug, Clone, Copy, Default)]
struct Committed {
    /// `last_offset` (an integer); `None` when nothing was committed yet.
    offset: Option<i64>,
    /// `outputs.all.length`: the jsonl file's length committed with the offset (exactly-once
    /// outputs; absent in caches written before them).
    length: Option<u64>,
}

/// Reads the cache through `buslink offsets show --json`. Panics when the command fails: the
/// cache must always be readable.
fn committed(config: &Path, when: &str) -> Committed {
    let shown = run(
        &[
            "offsets",
            "show",
            "--json",
            "--config",
            &config.to_string_lossy(),
        ],
        LIMIT,
    );
    assert_eq!(
        shown.code(),
        Some(0),
        "{when}: `buslink offsets show --json` failed (the cache must always be readable):\n{shown}"
    );
    let record: Value = serde_json::from_str(&shown.stdout).unwrap_or_else(|e| {
        panic!("{when}: `offsets show --json` printed no JSON ({e}):\n{shown}")
    });
    if record.is_null() {
        return Committed::default();
    }
    // A record without `last_offset` is the one committed before the first event: only the
    // outputs' starting lengths.
    let offset = record["last_offset"]["int"].as_i64();
    assert!(
        offset.is_some() || record.get("last_offset").is_none(),
        "{when}: the cache holds a last_offset that is not an integer: {record}"
    );
    Committed {
        offset,
        length: record["outputs"]["all"]["length"].as_u64(),
    }
}

/// Runs `body`; a panic inside it is raised again with the bus and the seed in front, so every
/// failure (including the testkit's own, e.g. a daemon that exited by itself) says how to
/// replay it.
pub fn naming_the_seed<R>(bus: &str, seed: u64, body: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            match message {
                Some(message) => panic!(
                    "crash test on the {bus} bus failed with seed {seed} (replay: \
                     BUSLINK_CRASH_SEED={seed} cargo test -p buslink-e2e --test crash {bus} -- \
                     --nocapture)\n{message}"
                ),
                None => resume_unwind(payload),
            }
        }
    }
}

/// What a crash run found (its figures are printed as the one-line summary).
#[derive(Debug)]
pub struct Outcome {
    pub kills: usize,
    pub events: usize,
    pub lines: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Lines whose offset is below the line before it (a replay after a restart).
    pub out_of_order: usize,
    pub invalid_lines: usize,
    /// Kills after which the file ended in a torn line.
    pub torn_tails_at_kill: usize,
    /// Kills that landed before anything was committed.
    pub kills_before_first_commit: usize,
    pub elapsed: Duration,
}

/// The crash loop on `bus` (whose config lives in `dir`); asserts every guarantee, naming the
/// seed.
pub fn crash_loop(bus: &dyn Bus, dir: &TestDir, settings: CrashSettings) -> Outcome {
    let name = bus.name();
    let seed = settings.seed;
    eprintln!(
        "crash {name}: seed {seed} (replay: BUSLINK_CRASH_SEED={seed}), {} kills, {} events",
        settings.kills,
        bus.expected().len()
    );
    let report = naming_the_seed(name, seed, || run_loop(bus, dir, settings));
    let outcome = &report.outcome;
    eprintln!(
        "crash summary: bus={name} seed={seed} kills={} events={} lines={} lost={} \
         duplicated={} out_of_order={} invalid_lines={} torn_tails_at_kill={} \
         kills_before_first_commit={} elapsed={:.1}s",
        outcome.kills,
        outcome.events,
        outcome.lines,
        outcome.lost,
        outcome.duplicated,
        outcome.out_of_order,
        outcome.invalid_lines,
        outcome.torn_tails_at_kill,
        outcome.kills_before_first_commit,
        outcome.elapsed.as_secs_f64()
    );
    assert!(
        report.failures.is_empty(),
        "bus {name}, seed {seed} (replay: BUSLINK_CRASH_SEED={seed}): {} guarantee(s) broken \
         after {} kills of {} events:\n- {}\n--- runs ---\n{}",
        report.failures.len(),
        outcome.kills,
        outcome.events,
        report.failures.join("\n- "),
        report.runs.join("\n")
    );
    report.outcome
}

/// What the loop found: the figures, the broken guarantees, the log of the last starts.
struct Report {
    outcome: Outcome,
    failures: Vec<String>,
    /// The runs around the first finding after a kill, and the last runs.
    runs: Vec<String>,
}

/// The log lines worth a failure message: the run of the first finding and the three before
/// it (what they left is what it found), and the last eight, in order, with `...` where lines
/// are left out.
fn runs_to_show(log: &[String], first_finding: Option<usize>) -> Vec<String> {
    let last = log.len().saturating_sub(8);
    let around = first_finding.map_or(last..last, |i| i.saturating_sub(3)..i + 1);
    let mut shown = Vec::new();
    let mut previous: Option<usize> = None;
    for (index, line) in log.iter().enumerate() {
        if index < last && !around.contains(&index) {
            continue;
        }
        if previous.map_or(index > 0, |p| index > p + 1) {
            shown.push("...".to_owned());
        }
        shown.push(line.clone());
        previous = Some(index);
    }
    shown
}

fn run_loop(bus: &dyn Bus, dir: &TestDir, settings: CrashSettings) -> Report {
    let started = Instant::now();
    let name = bus.name();
    let seed = settings.seed;
    let expected = bus.expected();
    let last_expected = *expected.last().expect("the bus has events");
    let out = dir.join(OUT);
    let mut rng = Rng::new(seed, name);
    let each_first = rng.chance(50);
    // One line per start: what it was run with and what the kill left. The last ones go into
    // failure messages.
    let mut log: Vec<String> = Vec::new();
    let mut violations: Vec<String> = Vec::new();
    // The index in `log` of the kill after which the first finding was made.
    let mut first_finding: Option<usize> = None;
    let mut previous_commit: Option<i64> = None;
    let mut torn_tails_at_kill = 0;
    let mut kills_before_first_commit = 0;
    let verbose = std::env::var_os("BUSLINK_CRASH_VERBOSE").is_some();

    for kill in 1..=settings.kills {
        let mut knobs = Knobs::draw(&mut rng, kill, each_first);
        let trigger = if kill == 1 {
            // The first start is the only one with no cache at all: kill it after it wrote
            // some events but before its first commit (nothing commits before the kill), so
            // every run checks that what a start without a commit wrote is not kept.
            knobs.every_events = 1_000_000;
            knobs.every_ms = 600_000;
            let last = expected.len().min(FIRST_KILL_WITHIN) - 1;
            Trigger::Reach(expected[rng.range(0, last as u64) as usize])
        } else {
            draw_trigger(&mut rng, expected, tail_offset(&out), settings.kills - kill)
        };
        let (config, bus_knobs) = bus.write_config(dir, &knobs, &mut rng);
        log.push(format!("kill #{kill}: {knobs} {bus_knobs}, kill {trigger}"));

        let mut daemon = Daemon::run(&config);
        let start = Instant::now();
        let what = format!("kill #{kill}'s instant ({trigger})");
        daemon.wait_for(&what, LIMIT, |_| {
            // `wait_for` looks every 10 ms (and checks the daemon is alive in between); look
            // every millisecond meanwhile, so the kill lands close to its instant and does not
            // overshoot its offset by a lot of events.
            let burst_end = Instant::now() + Duration::from_millis(9);
            loop {
                if trigger.due(start.elapsed(), &out) {
                    return true;
                }
                if Instant::now() >= burst_end {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        daemon.signal(libc::SIGKILL);
        let killed_after = start.elapsed();
        let killed = daemon.finish(LIMIT);
        assert_eq!(
            killed.code(),
            None,
            "kill #{kill}: buslink exited by itself instead of being killed:\n{killed}"
        );

        // The cache is readable and never ahead of the file.
        let when = format!("after kill #{kill}");
        let cache = committed(&config, &when);
        let committed = cache.offset;
        let scan = Scan::of(&out);
        if scan.torn_tail {
            torn_tails_at_kill += 1;
        }
        if committed.is_none() {
            kills_before_first_commit += 1;
        }
        if let Some(entry) = log.last_mut() {
            entry.push_str(&format!(
                " -> committed {}{}, {} valid lines, {} invalid{}, killed {}ms after the start",
                committed.map_or("nothing".to_owned(), |c| c.to_string()),
                cache
                    .length
                    .map_or(String::new(), |length| format!(" with {length} bytes")),
                scan.offsets.len(),
                scan.invalid,
                if scan.torn_tail { ", torn tail" } else { "" },
                killed_after.as_millis()
            ));
        }
        if verbose {
            eprintln!("crash {name}: {}", log.last().map_or("", String::as_str));
        }
        if let Some(problem) = cache_ahead_of_file(expected, committed, &scan) {
            violations.push(format!("{when}: {problem}"));
        }
        if let Some(problem) = committed_length_mismatch(expected, cache, &out) {
            violations.push(format!("{when}: {problem}"));
        }
        if committed < previous_commit {
            violations.push(format!(
                "{when}: the committed offset went back from {previous_commit:?} to {committed:?}"
            ));
        }
        previous_commit = committed.max(previous_commit);
        if first_finding.is_none() && !violations.is_empty() {
            first_finding = Some(kill - 1);
        }
    }

    // The final drain.
    let knobs = Knobs::draw(&mut rng, settings.kills + 1, each_first);
    let (config, bus_knobs) = bus.write_config(dir, &knobs, &mut rng);
    log.push(format!("final run --once: {knobs} {bus_knobs}"));
    let drained = run_once(&config);
    assert_eq!(
        drained.code(),
        Some(0),
        "the final `run --once` failed:\n{drained}\n--- runs ---\n{}",
        log.join("\n")
    );
    let final_commit = committed(&config, "after the final drain").offset;

    let scan = Scan::of(&out);
    let outcome = tally(expected, &scan, settings.kills, started.elapsed());
    let outcome = Outcome {
        torn_tails_at_kill,
        kills_before_first_commit,
        ..outcome
    };
    let mut failures = Vec::new();
    if scan.invalid > 0 || scan.torn_tail {
        failures.push(format!(
            "{} line(s) of {OUT} are not one JSON event (torn or glued){}; first: {}",
            scan.invalid,
            if scan.torn_tail {
                ", and the file ends in a torn line"
            } else {
                ""
            },
            scan.invalid_samples.join(" | ")
        ));
    }
    if outcome.lost > 0 {
        failures.push(format!(
            "{} event(s) lost: {}",
            outcome.lost,
            first_lost(expected, &scan.offsets)
        ));
    }
    if outcome.duplicated > 0 {
        failures.push(format!(
            "{} duplicated line(s): {}",
            outcome.duplicated,
            first_duplicates(&scan.offsets)
        ));
    }
    if scan.offsets.as_slice() != expected && outcome.lost == 0 && outcome.duplicated == 0 {
        failures.push(format!(
            "the events are not in bus order ({} backward step(s))",
            outcome.out_of_order
        ));
    }
    if final_commit != Some(last_expected) {
        failures.push(format!(
            "after the final drain the cache holds {final_commit:?}, expected the last offset \
             {last_expected}"
        ));
    }
    // A damaged prefix stays damaged: after the first few, only how many more kills saw it.
    let shown = violations.len().min(5);
    failures.extend(violations.drain(..shown));
    if !violations.is_empty() {
        failures.push(format!(
            "... and {} more such finding(s) after later kills",
            violations.len()
        ));
    }
    Report {
        outcome,
        failures,
        runs: runs_to_show(&log, first_finding),
    }
}

/// A kill instant for the next start: a random delay (capped by a random offset ahead), or
/// (half the time, while the bus has events the file lacks) a random offset ahead of the
/// file's end. Offsets ahead are about `3/4 events left / kills left` further on average, so
/// the kills spread over the whole bus.
fn draw_trigger(rng: &mut Rng, expected: &[i64], tail: Option<i64>, kills_left: usize) -> Trigger {
    let done = match tail {
        None => 0,
        Some(offset) => expected.partition_point(|&o| o <= offset),
    };
    let remaining = expected.len() - done;
    let ahead = (remaining > 0).then(|| {
        // On average three quarters of an even share: kills land late (a whole batch is
        // written at once) and the last kills should still find events to kill in the middle of.
        let stride = (3 * remaining / (2 * (kills_left + 1))).max(1) as u64;
        let step = rng.range(1, stride) as usize;
        expected[(done + step - 1).min(expected.len() - 1)]
    });
    if let Some(target) = ahead.filter(|_| rng.chance(50)) {
        return Trigger::Reach(target);
    }
    // A third of the delays are short enough to land in the startup (loading the plugin,
    // reading the cache, cutting the file back, positioning the consumer).
    let limit = if rng.chance(33) { 40 } else { MAX_DELAY_MS };
    Trigger::After {
        delay: Duration::from_millis(rng.range(0, limit)),
        cap: ahead,
    }
}

/// Whether the cache claims an event the file has no valid line for.
fn cache_ahead_of_file(expected: &[i64], committed: Option<i64>, scan: &Scan) -> Option<String> {
    let committed = committed?;
    let Ok(index) = expected.binary_search(&committed) else {
        return Some(format!(
            "the cache claims offset {committed}, which is not on the bus"
        ));
    };
    let mut present = vec![false; expected.len()];
    for offset in &scan.offsets {
        if let Ok(i) = expected.binary_search(offset) {
            present[i] = true;
        }
    }
    let missing: Vec<i64> = (0..=index)
        .filter(|&i| !present[i])
        .map(|i| expected[i])
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the cache claims offset {committed} but {OUT} has no valid line for {} of the events up \
         to it (first: {:?}); {} invalid line(s)",
        missing.len(),
        &missing[..missing.len().min(5)],
        scan.invalid
    ))
}

/// Whether the committed output length (when the cache has one) disagrees with the file: it
/// must lie within the file, on a line boundary, and the lines before it must be exactly the
/// bus's events up to the committed offset, in order: what the next start keeps.
fn committed_length_mismatch(expected: &[i64], cache: Committed, out: &Path) -> Option<String> {
    let length = cache.length?;
    let bytes = std::fs::read(out).unwrap_or_default();
    let Ok(cut) = usize::try_from(length) else {
        return Some(format!(
            "the committed length {length} does not fit in memory"
        ));
    };
    if cut > bytes.len() {
        return Some(format!(
            "the cache claims {OUT} is {length} bytes long but it has {} bytes",
            bytes.len()
        ));
    }
    let kept = &bytes[..cut];
    if !kept.is_empty() && !kept.ends_with(b"\n") {
        return Some(format!(
            "the committed length {length} of {OUT} is not on a line boundary"
        ));
    }
    // `kept` ends with a newline (or is empty): its lines are what lies between newlines.
    let lines: Vec<Option<i64>> = match kept.split_last() {
        None => Vec::new(),
        Some((_, whole)) => whole
            .split(|&b| b == b'\n')
            .map(|line| {
                serde_json::from_slice::<Value>(line)
                    .ok()
                    .and_then(|event| event["offset"].as_i64())
            })
            .collect(),
    };
    let through = match cache.offset {
        None => 0,
        Some(offset) => expected.partition_point(|&o| o <= offset),
    };
    let wanted: Vec<Option<i64>> = expected[..through].iter().map(|&o| Some(o)).collect();
    if lines == wanted {
        return None;
    }
    let first_difference = lines
        .iter()
        .zip(&wanted)
        .position(|(got, want)| got != want)
        .unwrap_or(lines.len().min(wanted.len()));
    let describe = |line: Option<&Option<i64>>, past_the_end: &str| match line {
        None => past_the_end.to_owned(),
        Some(None) => "not an event line".to_owned(),
        Some(Some(offset)) => format!("offset {offset}"),
    };
    Some(format!(
        "the {length} committed bytes of {OUT} hold {} line(s), expected the {} events through \
         offset {} once each; line {} is {}, expected {}",
        lines.len(),
        wanted.len(),
        cache.offset.map_or("(none)".to_owned(), |o| o.to_string()),
        first_difference + 1,
        describe(lines.get(first_difference), "missing"),
        describe(
            wanted.get(first_difference),
            "no line (the committed events end before)"
        )
    ))
}

/// The final figures: every expected event once, nothing else.
fn tally(expected: &[i64], scan: &Scan, kills: usize, elapsed: Duration) -> Outcome {
    let mut counts = vec![0usize; expected.len()];
    let mut foreign = 0;
    for offset in &scan.offsets {
        match expected.binary_search(offset) {
            Ok(index) => counts[index] += 1,
            Err(_) => foreign += 1,
        }
    }
    Outcome {
        kills,
        events: expected.len(),
        lines: scan.offsets.len() + scan.invalid,
        lost: counts.iter().filter(|&&count| count == 0).count(),
        // An offset that is not on the bus counts as a duplicate of nothing: extra all the same.
        duplicated: counts
            .iter()
            .map(|&count| count.saturating_sub(1))
            .sum::<usize>()
            + foreign,
        out_of_order: scan.offsets.windows(2).filter(|w| w[1] < w[0]).count(),
        invalid_lines: scan.invalid + usize::from(scan.torn_tail),
        torn_tails_at_kill: 0,
        kills_before_first_commit: 0,
        elapsed,
    }
}

fn first_lost(expected: &[i64], offsets: &[i64]) -> String {
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    let lost: Vec<i64> = expected
        .iter()
        .filter(|offset| sorted.binary_search(offset).is_err())
        .copied()
        .take(10)
        .collect();
    format!("first {lost:?}")
}

fn first_duplicates(offsets: &[i64]) -> String {
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    let mut duplicated: Vec<(i64, usize)> = Vec::new();
    for run in sorted.chunk_by(|a, b| a == b) {
        if run.len() > 1 && duplicated.len() < 10 {
            duplicated.push((run[0], run.len()));
        }
    }
    let shown: Vec<String> = duplicated
        .iter()
        .map(|(offset, count)| format!("{offset} x{count}"))
        .collect();
    format!("first {}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    //! The checks themselves, on files written by hand: each must fire on what it is for.

    use super::*;

    fn line(offset: i64) -> String {
        format!("{{\"offset\":{offset},\"category\":\"base\",\"event\":{{\"n\":{offset}}}}}\n")
    }

    fn file(dir: &TestDir, text: &str) -> PathBuf {
        dir.write(OUT, text)
    }

    #[test]
    fn a_scan_counts_glued_lines_and_a_torn_tail() {
        let dir = TestDir::new("crash-scan");
        let glued = line(2).trim_end().to_owned() + &line(3);
        let text = line(1) + &glued + &line(4) + "{\"offset\":5,\"ev";
        let scan = Scan::of(&file(&dir, &text));
        assert_eq!(scan.offsets, [1, 4]);
        assert_eq!(scan.invalid, 1);
        assert!(scan.torn_tail);
        assert_eq!(tail_offset(&dir.join(OUT)), Some(4));
        let missing = Scan::of(&dir.join("out/none.jsonl"));
        assert!(missing.offsets.is_empty() && !missing.torn_tail);
    }

    #[test]
    fn a_cache_ahead_of_the_file_is_reported() {
        let dir = TestDir::new("crash-ahead");
        let expected = [1, 2, 3, 4];
        let scan = Scan::of(&file(&dir, &(line(1) + &line(2))));
        assert!(cache_ahead_of_file(&expected, None, &scan).is_none());
        assert!(cache_ahead_of_file(&expected, Some(2), &scan).is_none());
        let ahead = cache_ahead_of_file(&expected, Some(3), &scan).expect("reported");
        assert!(ahead.contains("[3]"), "{ahead}");
        let foreign = cache_ahead_of_file(&expected, Some(9), &scan).expect("reported");
        assert!(foreign.contains("not on the bus"), "{foreign}");
    }

    #[test]
    fn the_committed_length_must_hold_exactly_the_committed_events() {
        let dir = TestDir::new("crash-length");
        let expected = [1, 2, 3];
        let two = line(1) + &line(2);
        let out = file(&dir, &(two.clone() + &line(3) + "{\"torn"));
        let cache = |offset, length: usize| Committed {
            offset: Some(offset),
            length: Some(length as u64),
        };
        assert!(committed_length_mismatch(&expected, cache(2, two.len()), &out).is_none());
        let empty = Committed {
            offset: None,
            length: Some(0),
        };
        assert!(committed_length_mismatch(&expected, empty, &out).is_none());
        // Shorter than claimed, not on a line boundary, one event short.
        for (committed, what) in [
            (cache(3, 10_000), "bytes long"),
            (cache(2, two.len() - 1), "line boundary"),
            (cache(3, two.len()), "expected the 3 events"),
        ] {
            let problem = committed_length_mismatch(&expected, committed, &out).expect(what);
            assert!(problem.contains(what), "{problem}");
        }
        // An event twice before the committed length.
        let twice = line(1) + &line(1) + &line(2);
        let out = file(&dir, &twice);
        let problem =
            committed_length_mismatch(&expected, cache(2, twice.len()), &out).expect("reported");
        assert!(
            problem.contains("line 2 is offset 1, expected offset 2"),
            "{problem}"
        );
    }

    #[test]
    fn the_tally_counts_lost_duplicated_and_replayed_events() {
        let dir = TestDir::new("crash-tally");
        let text: String = [1, 2, 3, 2, 3, 5, 9].iter().map(|&o| line(o)).collect();
        let scan = Scan::of(&file(&dir, &text));
        let outcome = tally(&[1, 2, 3, 4, 5], &scan, 7, Duration::ZERO);
        assert_eq!(outcome.lost, 1, "4");
        assert_eq!(outcome.duplicated, 3, "2, 3 and the foreign 9");
        assert_eq!(outcome.out_of_order, 1);
        assert_eq!(outcome.lines, 7);
        assert_eq!(first_lost(&[1, 2, 3, 4, 5], &scan.offsets), "first [4]");
        assert_eq!(first_duplicates(&scan.offsets), "first 2 x2, 3 x2");
    }

    #[test]
    fn failure_messages_show_the_runs_around_the_first_finding_and_the_last_ones() {
        let log: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let tail: Vec<String> = (12..20).map(|i| i.to_string()).collect();
        let shown = runs_to_show(&log, Some(5));
        assert_eq!(shown[..7], ["...", "2", "3", "4", "5", "...", "12"]);
        assert_eq!(shown[6..], tail[..]);
        assert_eq!(runs_to_show(&log, None)[1..], tail[..]);
        assert_eq!(runs_to_show(&log[..3], Some(0)), ["0", "1", "2"]);
    }

    #[test]
    fn triggers_stay_on_the_bus_and_spread_over_it() {
        let expected: Vec<i64> = (1..=1000).collect();
        let mut rng = Rng::new(7, "triggers");
        // 600 events left, 9 kills after this one: strides of up to 3/4 * 2 * 600 / 10 = 90.
        for _ in 0..1000 {
            match draw_trigger(&mut rng, &expected, Some(400), 9) {
                Trigger::Reach(target)
                | Trigger::After {
                    cap: Some(target), ..
                } => assert!((401..=490).contains(&target), "{target}"),
                Trigger::After { delay, cap: None } => panic!("no cap with events left: {delay:?}"),
            }
        }
        assert!(matches!(
            draw_trigger(&mut rng, &expected, Some(1000), 3),
            Trigger::After { cap: None, .. }
        ));
    }
}
