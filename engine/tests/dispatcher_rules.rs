//! The dispatcher's rules, tested at the engine level: `pipeline::run` with an in-memory bus
//! served in-process through plugin-api's shim (the same FFI types as a plugin library, no
//! dlopen) and scripted handlers that record what they are asked to do. Each test names the
//! rule of ARCHITECTURE.md ("The dispatcher's rules") it proves; the end-to-end suite proves the
//! same rules through the binary.

use buslink_engine::config::{
    CommitPolicy, EventFilter, FailurePolicy, FsyncMode, GapPolicy, RetryPolicy, StartPosition,
};
use buslink_engine::dead_letter::DeadLetterFile;
use buslink_engine::error_queue::ErrorQueue;
use buslink_engine::handlers::{
    ConfiguredHandler, DispatchedEvent, EventMatcher, Handler, HandlerError,
};
use buslink_engine::offsets::OffsetCache;
use buslink_engine::pipeline::{self, Outputs, PipelineError, PipelineOptions, RunSummary};
use buslink_engine::plugin::PluginConsumer;
use buslink_engine::shutdown::Shutdown;
use buslink_plugin_api::{
    Body, Consumer, Event, EventBatch, Offset, OffsetRef, PluginResult, PollStatus,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A bus of `events` Hermes events (offsets 0, 1, ...; `objpkey` = the offset modulo
/// `objects`), all there from the start; `Drained` once every event was handed over.
struct MemoryBus {
    bodies: Vec<String>,
    next: usize,
    /// A gap the bus reports before this offset (messages it knows were lost).
    gap_before: Option<usize>,
}

impl MemoryBus {
    fn new(events: usize, objects: usize) -> MemoryBus {
        let bodies = (0..events)
            .map(|i| {
                serde_json::json!({
                    "evcategory": "base", "eventtype": "modified", "objtype": "Station",
                    "objpkey": i % objects, "objattrs": {}, "step": 0,
                    "isPartiallyProcessed": false
                })
                .to_string()
            })
            .collect();
        MemoryBus {
            bodies,
            next: 0,
            gap_before: None,
        }
    }
}

impl Consumer for MemoryBus {
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.next = 0;
        Ok(())
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        if let Offset::Int(at) = offset {
            self.next = usize::try_from(*at).unwrap_or(0);
        }
        Ok(())
    }

    fn set_timeout(&mut self, _timeout: Option<Duration>) -> PluginResult<()> {
        Ok(())
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        if self.next >= self.bodies.len() {
            return Ok(PollStatus::Drained);
        }
        while self.next < self.bodies.len() && !batch.is_full() {
            if self.gap_before == Some(self.next) {
                batch.report_gap("100..=102", Some(3));
            }
            batch.push(Event {
                offset: OffsetRef::Int(self.next as i64),
                timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + self.next as i64, 0)
                    .unwrap_or_default(),
                category: "base",
                body: Body::Json(&self.bodies[self.next]),
            });
            self.next += 1;
        }
        Ok(PollStatus::Ready)
    }
}

/// What the handlers were asked to do, in order: `name:handle N`, `name:sync`,
/// `name:rewind P`.
type Log = Arc<Mutex<Vec<String>>>;

/// Something a test does from inside a handler when it takes offset N (pause the consumer,
/// ask for a stop, offer new handlers): the dispatcher is then between two events.
type Hook = Box<dyn FnMut(i64) + Send>;

/// A handler that records every call, fails on the offsets in `fails` (for good, or only its
/// first `fail_attempts` attempts when that is not 0), and keeps a position (the count of
/// events it took), as an exactly-once output does.
struct Scripted {
    name: &'static str,
    log: Log,
    fails: Vec<i64>,
    fail_attempts: u32,
    /// Failed attempts so far, by offset.
    failed: std::collections::HashMap<i64, u32>,
    /// `sync` fails.
    sync_fails: bool,
    taken: u64,
    hook: Option<Hook>,
}

impl Scripted {
    fn record(&self, what: String) {
        self.log
            .lock()
            .expect("the log")
            .push(format!("{}:{what}", self.name));
    }
}

fn offset_of(event: &DispatchedEvent<'_>) -> i64 {
    match event.event.offset {
        OffsetRef::Int(at) => at,
        other => panic!("an int offset expected, got {other:?}"),
    }
}

impl Handler for Scripted {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        let at = offset_of(event);
        self.record(format!("handle {at}"));
        if let Some(hook) = self.hook.as_mut() {
            hook(at);
        }
        if self.fails.contains(&at) {
            let failed = self.failed.entry(at).or_insert(0);
            if self.fail_attempts == 0 || *failed < self.fail_attempts {
                *failed += 1;
                return Err(HandlerError::new(format!("refused {at}")));
            }
        }
        self.taken += 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), HandlerError> {
        self.record("sync".into());
        if self.sync_fails {
            return Err(HandlerError::new("the disk is full"));
        }
        Ok(())
    }

    fn position(&self) -> Option<u64> {
        Some(self.taken)
    }

    fn rewind(&mut self, position: u64) -> Result<(), HandlerError> {
        self.record(format!("rewind {position}"));
        self.taken = position;
        Ok(())
    }
}

fn handler(
    name: &'static str,
    log: &Log,
    fails: &[i64],
    on_failure: FailurePolicy,
) -> ConfiguredHandler {
    configured(
        Scripted {
            name,
            log: Arc::clone(log),
            fails: fails.to_vec(),
            fail_attempts: 0,
            failed: Default::default(),
            sync_fails: false,
            taken: 0,
            hook: None,
        },
        on_failure,
    )
}

fn configured(scripted: Scripted, on_failure: FailurePolicy) -> ConfiguredHandler {
    ConfiguredHandler {
        name: scripted.name.to_owned(),
        kind: buslink_engine::config::HandlerType::Exec,
        matcher: EventMatcher::new(&EventFilter::default()).expect("no patterns"),
        retry: RetryPolicy {
            attempts: 1,
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
        },
        on_failure,
        retry_interval: Duration::from_secs(3600),
        queue_key: None,
        handler: Box::new(scripted),
    }
}

/// A scripted handler with a hook called at each event it is handed.
fn hooked(
    name: &'static str,
    log: &Log,
    hook: impl FnMut(i64) + Send + 'static,
) -> ConfiguredHandler {
    let mut configured = handler(name, log, &[], FailurePolicy::Stop);
    configured.handler = Box::new(Scripted {
        name,
        log: Arc::clone(log),
        fails: Vec::new(),
        fail_attempts: 0,
        failed: Default::default(),
        sync_fails: false,
        taken: 0,
        hook: Some(Box::new(hook)),
    });
    configured
}

fn options(batch_size: usize, every_events: u64) -> PipelineOptions {
    PipelineOptions {
        once: true,
        timeout: Duration::from_millis(50),
        batch_size,
        batch_bytes: 1 << 20,
        queue_batches: 2,
        commit: CommitPolicy {
            every_events,
            // Far away: only `every_events` and the batch ends decide here.
            every_ms: 3_600_000,
            fsync: FsyncMode::Background,
        },
        start: StartPosition::Beginning,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        stats_interval: None,
        stall_after: Duration::from_secs(60),
        hermes: None,
        library: None,
        on_gap: GapPolicy::Stop,
        lock: None,
        metrics: None,
        control: None,
        ready: None,
    }
}

/// What a run left: its result, the cache's last committed offset, the error queue and the
/// dead-letter file's text.
struct Ran {
    result: Result<RunSummary, PipelineError>,
    committed: Option<Offset>,
    queue: ErrorQueue,
    dead_letters: String,
}

fn run(bus: MemoryBus, handlers: &mut Vec<ConfiguredHandler>, options: PipelineOptions) -> Ran {
    let dir = tempfile::tempdir().expect("a temp dir");
    run_in(dir.path(), bus, handlers, options, &Shutdown::default())
}

/// Runs the pipeline on `bus` with its state in `dir` (resuming from the cache there).
fn run_in(
    dir: &std::path::Path,
    bus: MemoryBus,
    handlers: &mut Vec<ConfiguredHandler>,
    options: PipelineOptions,
    shutdown: &Shutdown,
) -> Ran {
    let consumer = PluginConsumer::in_process(
        buslink_plugin_api::ffi::consumer_box(bus, "memory", "MemoryBus"),
        "memory",
        "MemoryBus",
    );
    let cache = OffsetCache::new(dir, "rules");
    let cached = cache.load().expect("a readable cache");
    let mut dead_letters = DeadLetterFile::new(dir, "rules");
    let mut error_queue = ErrorQueue::load(dir, "rules").expect("a readable queue");
    let result = pipeline::run(
        consumer,
        cached,
        Outputs {
            handlers,
            dead_letters: &mut dead_letters,
            error_queue: &mut error_queue,
        },
        &cache,
        options,
        shutdown,
        None,
    );
    Ran {
        result,
        committed: committed(dir),
        queue: error_queue,
        dead_letters: std::fs::read_to_string(dead_letters.path()).unwrap_or_default(),
    }
}

/// The last offset committed in the cache of `dir`.
fn committed(dir: &std::path::Path) -> Option<Offset> {
    OffsetCache::new(dir, "rules")
        .load()
        .expect("a readable cache")
        .and_then(|record| record.last_offset)
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after 20 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("the log").clone()
}

/// Rule: `every_events` is honoured inside a batch (a commit, preceded by every handler's
/// `sync`, after each N handled events, not only at batch ends).
#[test]
fn every_events_commits_inside_a_batch() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[], FailurePolicy::Stop)];
    let ran = run(MemoryBus::new(10, 10), &mut handlers, options(10, 3));
    let summary = ran.result.expect("the run drains the bus");
    assert_eq!(summary.handled_this_run, 10);
    assert_eq!(ran.committed, Some(Offset::Int(9)));
    let log = entries(&log);
    // The first batch holds all 10 events: syncs come after events 2, 5 and 8, inside it.
    let position = |entry: &str| {
        log.iter()
            .position(|e| e == entry)
            .unwrap_or_else(|| panic!("{entry} missing from {log:?}"))
    };
    for (after, before) in [(2, 3), (5, 6), (8, 9)] {
        let (after, before) = (
            position(&format!("a:handle {after}")),
            position(&format!("a:handle {before}")),
        );
        assert!(
            log[after + 1..before].iter().any(|e| e == "a:sync"),
            "a commit between events {after} and {before}: {log:?}"
        );
    }
    assert!(
        !log[..position("a:handle 2")].iter().any(|e| e == "a:sync"),
        "no commit before the third event: {log:?}"
    );
}

/// Rule: an event is handled only when every matching handler took it; when a later handler
/// fails on it, the earlier ones give it back (`rewind` to their position before it), and
/// with `on_failure = "stop"` the run ends with what came before committed.
#[test]
fn a_later_handler_failing_rewinds_the_earlier_ones_and_stops_before_the_event() {
    let log = Log::default();
    let mut handlers = vec![
        handler("first", &log, &[], FailurePolicy::Stop),
        handler("second", &log, &[5], FailurePolicy::Stop),
    ];
    let ran = run(MemoryBus::new(10, 10), &mut handlers, options(4, 1000));
    match ran.result {
        Err(PipelineError::Handler {
            handler, offset, ..
        }) => {
            assert_eq!(handler, "second");
            assert_eq!(offset, "5");
        }
        other => panic!("a handler error expected, got {other:?}"),
    }
    assert_eq!(
        ran.committed,
        Some(Offset::Int(4)),
        "what came before is committed"
    );
    let log = entries(&log);
    let failed = log
        .iter()
        .position(|e| e == "second:handle 5")
        .expect("the failing delivery");
    assert_eq!(
        log.get(failed + 1).map(String::as_str),
        Some("first:rewind 5"),
        "the first handler gives event 5 back (its position before it): {log:?}"
    );
    assert!(
        !log.iter()
            .any(|e| e == "first:handle 6" || e == "second:handle 6"),
        "nothing after the failed event is handled: {log:?}"
    );
}

/// Rule: with `on_failure = "error-queue"` a failed event is queued and the run goes on; later
/// events of the same object wait behind it in the queue (never delivered before it), other
/// objects' events are delivered.
#[test]
fn an_objects_later_events_wait_behind_its_queued_one() {
    let log = Log::default();
    // Objects 0, 1, 2 in turn: offset 1 (object 1) fails; 4 and 7 are object 1's later events.
    let mut handlers = vec![handler("q", &log, &[1], FailurePolicy::ErrorQueue)];
    let ran = run(MemoryBus::new(9, 3), &mut handlers, options(9, 1000));
    let summary = ran.result.expect("the run goes on past a queued event");
    assert_eq!(
        summary.handled_this_run, 9,
        "every offset counts as handled"
    );
    assert_eq!(ran.committed, Some(Offset::Int(8)));
    let log = entries(&log);
    for offset in [4, 7] {
        assert!(
            !log.contains(&format!("q:handle {offset}")),
            "offset {offset} (object 1) is not delivered while object 1 waits: {log:?}"
        );
    }
    for offset in [0, 2, 3, 5, 6, 8] {
        assert!(
            log.contains(&format!("q:handle {offset}")),
            "offset {offset} (another object) is delivered: {log:?}"
        );
    }
    let queued: Vec<String> = ran
        .queue
        .events()
        .iter()
        .map(|queued| queued.key.clone())
        .collect();
    assert_eq!(
        queued,
        vec!["Station/1"; 3],
        "the failed event and the two behind it"
    );
}

/// Rule: a gap the bus reports stops the run (`on_gap = "stop"`) before the first event after
/// it, with every event before it handled and committed, none after it.
#[test]
fn a_gap_stops_before_the_event_after_it_with_the_ones_before_committed() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[], FailurePolicy::Stop)];
    let mut bus = MemoryBus::new(10, 10);
    bus.gap_before = Some(6);
    let ran = run(bus, &mut handlers, options(10, 1000));
    match ran.result {
        Err(PipelineError::Gap { range, count }) => {
            assert_eq!(range, "100..=102");
            assert_eq!(count, "3 events");
        }
        other => panic!("a gap error expected, got {other:?}"),
    }
    assert_eq!(ran.committed, Some(Offset::Int(5)));
    let log = entries(&log);
    assert!(log.contains(&"a:handle 5".to_owned()), "{log:?}");
    assert!(!log.contains(&"a:handle 6".to_owned()), "{log:?}");
}

/// Where `entry` first appears in the log.
fn at(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|e| e == entry)
        .unwrap_or_else(|| panic!("{entry} missing from {log:?}"))
}

fn count(log: &[String], entry: &str) -> usize {
    log.iter().filter(|e| *e == entry).count()
}

// ---- Commit cadence ----

/// Rule: `every_events = 1` commits after each event (each preceded by the handler's `sync`).
#[test]
fn every_events_of_one_commits_after_each_event() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[], FailurePolicy::Stop)];
    let ran = run(MemoryBus::new(5, 5), &mut handlers, options(5, 1));
    ran.result.expect("the run drains the bus");
    assert_eq!(ran.committed, Some(Offset::Int(4)));
    let log = entries(&log);
    for offset in 0..5 {
        let handled = at(&log, &format!("a:handle {offset}"));
        assert_eq!(
            log.get(handled + 1).map(String::as_str),
            Some("a:sync"),
            "a commit right after event {offset}: {log:?}"
        );
    }
}

/// Rule: the cadence counts across batches: a batch's end is no commit of its own (only
/// `every_events`, `every_ms` and the run's end are).
#[test]
fn every_events_counts_across_batch_ends() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[], FailurePolicy::Stop)];
    let ran = run(MemoryBus::new(12, 12), &mut handlers, options(4, 6));
    ran.result.expect("the run drains the bus");
    assert_eq!(ran.committed, Some(Offset::Int(11)));
    let log = entries(&log);
    // Batches 0-3, 4-7, 8-11: commits after events 5 and 11, none at the end of 0-3.
    let syncs: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| *e == "a:sync")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        syncs.first(),
        Some(&(at(&log, "a:handle 5") + 1)),
        "{log:?}"
    );
    assert_eq!(
        syncs.get(1),
        Some(&(at(&log, "a:handle 11") + 1)),
        "{log:?}"
    );
}

/// Rule: events no handler's match selects are handled all the same: they count and their
/// offset is committed.
#[test]
fn events_no_handler_selects_are_committed_all_the_same() {
    let log = Log::default();
    let mut only_other = handler("a", &log, &[], FailurePolicy::Stop);
    only_other.matcher = EventMatcher::new(&EventFilter {
        category: vec!["other".into()],
        ..EventFilter::default()
    })
    .expect("a valid pattern");
    let mut handlers = vec![only_other];
    let ran = run(MemoryBus::new(6, 6), &mut handlers, options(6, 1000));
    let summary = ran.result.expect("the run drains the bus");
    assert_eq!(summary.handled_this_run, 6);
    assert_eq!(ran.committed, Some(Offset::Int(5)));
    assert!(
        !entries(&log).iter().any(|e| e.starts_with("a:handle")),
        "the handler saw none: {:?}",
        entries(&log)
    );
}

/// Rule: a commit comes only after every handler synced; a failing `sync` stops the run and
/// commits nothing of what it would have covered.
#[test]
fn a_failing_sync_stops_the_run_before_the_commit_it_would_allow() {
    let log = Log::default();
    let mut handlers = vec![
        handler("a", &log, &[], FailurePolicy::Stop),
        configured(
            Scripted {
                name: "b",
                log: Arc::clone(&log),
                fails: Vec::new(),
                fail_attempts: 0,
                failed: Default::default(),
                sync_fails: true,
                taken: 0,
                hook: None,
            },
            FailurePolicy::Stop,
        ),
    ];
    let ran = run(MemoryBus::new(6, 6), &mut handlers, options(3, 1000));
    match ran.result {
        Err(PipelineError::HandlerSync { handler, .. }) => assert_eq!(handler, "b"),
        other => panic!("a sync error expected, got {other:?}"),
    }
    assert_eq!(ran.committed, None, "nothing committed past a failed sync");
}

/// Rule: a run resumes after the last committed offset: a run stopped by a failure, started
/// again, hands the failed event over again and nothing before it.
#[test]
fn a_new_run_resumes_after_the_last_committed_offset() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = Log::default();
    let mut failing = vec![handler("a", &log, &[6], FailurePolicy::Stop)];
    let first = run_in(
        dir.path(),
        MemoryBus::new(10, 10),
        &mut failing,
        options(10, 1000),
        &Shutdown::default(),
    );
    assert!(first.result.is_err());
    assert_eq!(first.committed, Some(Offset::Int(5)));
    let again = Log::default();
    let mut handlers = vec![handler("a", &again, &[], FailurePolicy::Stop)];
    let second = run_in(
        dir.path(),
        MemoryBus::new(10, 10),
        &mut handlers,
        options(10, 1000),
        &Shutdown::default(),
    );
    let summary = second.result.expect("the second run drains the bus");
    assert_eq!(summary.handled_this_run, 4);
    assert_eq!(summary.events_handled, 10, "the cache's count goes on");
    let handled: Vec<String> = entries(&again)
        .into_iter()
        .filter(|e| e.starts_with("a:handle"))
        .collect();
    assert_eq!(
        handled,
        ["a:handle 6", "a:handle 7", "a:handle 8", "a:handle 9"]
    );
}

/// Rule: `every_ms` is honoured inside a batch, on the health monitor's tick: a slow handler
/// does not hold the commit until the batch's end.
#[test]
fn every_ms_commits_inside_a_batch_of_a_slow_handler() {
    use buslink_engine::health::{Monitor, Publish, View, Watched};
    use buslink_engine::steering::Shared;
    struct One(Arc<Shared>);
    impl Publish for One {
        fn consumers(&self) -> Vec<Watched> {
            vec![Watched {
                name: self.0.name(),
                health: self.0.health().clone(),
                paused: false,
                committed: None,
            }]
        }
        fn publish(&self, _name: &str, _view: &View, _counters: &[(String, u64)]) {}
    }
    let shared = Arc::new(Shared::new("rules", "memory", "MemoryBus"));
    let _monitor = Monitor::start(Arc::new(One(shared.clone())), || {}).expect("a monitor");
    let log = Log::default();
    // Event 1 takes a second: several monitor ticks (100 ms) and `every_ms` (50) pass in it.
    let mut handlers = vec![hooked("a", &log, |at| {
        if at == 1 {
            std::thread::sleep(Duration::from_secs(1));
        }
    })];
    let mut options = options(6, 1000);
    options.commit.every_ms = 50;
    options.control = Some(shared);
    let ran = run(MemoryBus::new(6, 6), &mut handlers, options);
    ran.result.expect("the run drains the bus");
    let log = entries(&log);
    let (slow, last) = (at(&log, "a:handle 1"), at(&log, "a:handle 5"));
    assert!(
        log[slow..last].iter().any(|e| e == "a:sync"),
        "a commit inside the batch, after the slow event: {log:?}"
    );
}

// ---- Failures, retries and rewinds ----

/// Rule: `on_failure = "dead-letter"` records the failed event in the dead-letter file and the
/// run goes on; the event counts as handled (its offset is committed).
#[test]
fn a_dead_lettered_event_is_recorded_and_the_run_goes_on() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[3], FailurePolicy::DeadLetter)];
    let ran = run(MemoryBus::new(6, 6), &mut handlers, options(6, 1000));
    let summary = ran.result.expect("the run goes on past a dead letter");
    assert_eq!(summary.handled_this_run, 6);
    assert_eq!(ran.committed, Some(Offset::Int(5)));
    let records: Vec<serde_json::Value> = ran
        .dead_letters
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(records.len(), 1, "{}", ran.dead_letters);
    assert!(
        ran.dead_letters.contains("refused 3"),
        "{}",
        ran.dead_letters
    );
    assert!(entries(&log).contains(&"a:handle 5".to_owned()));
}

/// Rule: a dead-lettered event that a later handler then fails on (`stop`) is not handled:
/// the dead-letter record is taken back (it comes again at the next start) and the earlier
/// handlers rewind.
#[test]
fn a_later_stop_takes_back_the_dead_letter_record_of_the_same_event() {
    let log = Log::default();
    let mut handlers = vec![
        handler("first", &log, &[], FailurePolicy::Stop),
        handler("letters", &log, &[3], FailurePolicy::DeadLetter),
        handler("last", &log, &[3], FailurePolicy::Stop),
    ];
    let ran = run(MemoryBus::new(6, 6), &mut handlers, options(6, 1000));
    assert!(matches!(ran.result, Err(PipelineError::Handler { .. })));
    assert_eq!(ran.committed, Some(Offset::Int(2)));
    assert_eq!(ran.dead_letters, "", "the record of event 3 is taken back");
    assert!(entries(&log).contains(&"first:rewind 3".to_owned()));
}

/// Rule: a failed attempt is retried (with backoff) up to `attempts`; the event is handled
/// once one succeeds.
#[test]
fn a_failed_attempt_is_retried_until_one_succeeds() {
    let log = Log::default();
    let mut flaky = configured(
        Scripted {
            name: "a",
            log: Arc::clone(&log),
            fails: vec![2],
            fail_attempts: 2,
            failed: Default::default(),
            sync_fails: false,
            taken: 0,
            hook: None,
        },
        FailurePolicy::Stop,
    );
    flaky.retry.attempts = 3;
    let mut handlers = vec![flaky];
    let ran = run(MemoryBus::new(4, 4), &mut handlers, options(4, 1000));
    ran.result.expect("the third attempt succeeds");
    assert_eq!(ran.committed, Some(Offset::Int(3)));
    assert_eq!(count(&entries(&log), "a:handle 2"), 3);
}

/// Rule: an event that fails every attempt ends the run (`stop`) with the number of attempts
/// in the error.
#[test]
fn an_event_failing_every_attempt_stops_with_the_attempt_count() {
    let log = Log::default();
    let mut failing = handler("a", &log, &[2], FailurePolicy::Stop);
    failing.retry.attempts = 3;
    let mut handlers = vec![failing];
    let ran = run(MemoryBus::new(4, 4), &mut handlers, options(4, 1000));
    match ran.result {
        Err(PipelineError::Handler {
            attempts, offset, ..
        }) => {
            assert_eq!(attempts, 3);
            assert_eq!(offset, "2");
        }
        other => panic!("a handler error expected, got {other:?}"),
    }
    assert_eq!(count(&entries(&log), "a:handle 2"), 3);
    assert_eq!(ran.committed, Some(Offset::Int(1)));
}

/// Rule: a stop asked for while a handler waits to retry ends the run at once (a stop, no
/// error): the event is not handled (it comes again), what came before is committed.
#[test]
fn a_stop_during_a_retry_wait_ends_the_run_with_the_event_not_handled() {
    let log = Log::default();
    let shutdown = Shutdown::default();
    let stop = shutdown.clone();
    let mut failing = configured(
        Scripted {
            name: "a",
            log: Arc::clone(&log),
            fails: vec![3],
            fail_attempts: 0,
            failed: Default::default(),
            sync_fails: false,
            taken: 0,
            hook: Some(Box::new(move |at| {
                if at == 3 {
                    stop.request();
                }
            })),
        },
        FailurePolicy::Stop,
    );
    // The retry would come in an hour: only the stop ends the wait.
    failing.retry.attempts = 5;
    failing.retry.base = Duration::from_secs(3600);
    failing.retry.max = Duration::from_secs(3600);
    let mut handlers = vec![failing];
    let dir = tempfile::tempdir().expect("a temp dir");
    let ran = run_in(
        dir.path(),
        MemoryBus::new(6, 6),
        &mut handlers,
        options(6, 1000),
        &shutdown,
    );
    let summary = ran.result.expect("a stop is no error");
    assert_eq!(summary.handled_this_run, 3);
    assert_eq!(ran.committed, Some(Offset::Int(2)));
    assert_eq!(count(&entries(&log), "a:handle 3"), 1);
}

/// Rule: a stop ends the batch after the event in hand: it is handled and committed, the
/// rest of the batch is not handed over (it comes again at the next start).
#[test]
fn a_stop_ends_the_batch_after_the_event_in_hand() {
    let log = Log::default();
    let shutdown = Shutdown::default();
    let stop = shutdown.clone();
    let mut handlers = vec![hooked("a", &log, move |at| {
        if at == 4 {
            stop.request();
        }
    })];
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut options = options(10, 1000);
    options.once = false;
    let ran = run_in(
        dir.path(),
        MemoryBus::new(10, 10),
        &mut handlers,
        options,
        &shutdown,
    );
    let summary = ran.result.expect("a stop is no error");
    assert_eq!(summary.handled_this_run, 5);
    assert_eq!(ran.committed, Some(Offset::Int(4)));
    assert!(!entries(&log).contains(&"a:handle 5".to_owned()));
}

// ---- Gaps ----

/// Rule: `on_gap = "warn"` counts the gap and the events it holds, and goes on.
#[test]
fn a_gap_with_on_gap_warn_is_counted_and_the_run_goes_on() {
    let log = Log::default();
    let mut handlers = vec![handler("a", &log, &[], FailurePolicy::Stop)];
    let mut bus = MemoryBus::new(10, 10);
    bus.gap_before = Some(6);
    let mut options = options(10, 1000);
    options.on_gap = GapPolicy::Warn;
    let ran = run(bus, &mut handlers, options);
    let summary = ran.result.expect("the run goes on past the gap");
    assert_eq!((summary.gaps, summary.events_lost), (1, 3));
    assert_eq!(summary.handled_this_run, 10);
    assert_eq!(ran.committed, Some(Offset::Int(9)));
}

// ---- Per-object queueing ----

/// Rule: the error queue is per handler: one handler's queued object does not hold another
/// handler's deliveries of it.
#[test]
fn one_handlers_queued_object_does_not_hold_another_handler() {
    let log = Log::default();
    let mut handlers = vec![
        handler("q", &log, &[1], FailurePolicy::ErrorQueue),
        handler("other", &log, &[], FailurePolicy::Stop),
    ];
    let ran = run(MemoryBus::new(9, 3), &mut handlers, options(9, 1000));
    ran.result.expect("the run goes on past a queued event");
    let log = entries(&log);
    for offset in 0..9 {
        assert_eq!(count(&log, &format!("other:handle {offset}")), 1, "{log:?}");
    }
    assert!(!log.contains(&"q:handle 4".to_owned()), "{log:?}");
    assert_eq!(ran.queue.events().len(), 3);
}

/// Rule: `queue_key` names the body field that makes an object: events sharing its value wait
/// behind a queued one.
#[test]
fn queue_key_groups_the_events_that_wait_by_that_field() {
    let log = Log::default();
    let mut queued = handler("q", &log, &[1], FailurePolicy::ErrorQueue);
    // Every event has objtype "Station": one object for this key.
    queued.queue_key = Some("objtype".into());
    let mut handlers = vec![queued];
    let ran = run(MemoryBus::new(5, 5), &mut handlers, options(5, 1000));
    ran.result.expect("the run goes on past a queued event");
    let log = entries(&log);
    for offset in 2..5 {
        assert!(!log.contains(&format!("q:handle {offset}")), "{log:?}");
    }
    let keys: Vec<String> = ran.queue.events().iter().map(|e| e.key.clone()).collect();
    assert_eq!(keys, vec!["objtype=\"Station\""; 4]);
}

/// Rule: an event queued by one handler that a later handler then fails on (`stop`) is not
/// handled: its queue entry is taken back (it comes again at the next start).
#[test]
fn a_later_stop_takes_back_the_queue_entry_of_the_same_event() {
    let log = Log::default();
    let mut handlers = vec![
        handler("q", &log, &[2], FailurePolicy::ErrorQueue),
        handler("last", &log, &[2], FailurePolicy::Stop),
    ];
    let ran = run(MemoryBus::new(4, 4), &mut handlers, options(4, 1000));
    assert!(matches!(ran.result, Err(PipelineError::Handler { .. })));
    assert_eq!(ran.committed, Some(Offset::Int(1)));
    assert!(ran.queue.is_empty(), "{:?}", ran.queue.events());
}

// ---- Pause ----

/// Rule: a pause between two events commits what was handled and holds the rest of the batch;
/// the resume takes it up at the event where it stopped, each event handled once.
#[test]
fn a_pause_mid_batch_commits_what_was_handled_and_holds_the_rest() {
    use buslink_engine::steering::Shared;
    let shared = Arc::new(Shared::new("rules", "memory", "MemoryBus"));
    let log = Log::default();
    let pauser = shared.clone();
    let handlers = vec![hooked("a", &log, move |at| {
        if at == 3 {
            pauser.set_paused(true);
        }
    })];
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut options = options(10, 1000);
    options.control = Some(shared.clone());
    let path = dir.path().to_path_buf();
    let running = std::thread::spawn(move || {
        let mut handlers = handlers;
        run_in(
            &path,
            MemoryBus::new(10, 10),
            &mut handlers,
            options,
            &Shutdown::default(),
        )
        .result
    });
    wait_until("the commit of the pause", || {
        committed(dir.path()) == Some(Offset::Int(3))
    });
    assert!(
        !entries(&log).contains(&"a:handle 4".to_owned()),
        "nothing after the pause: {:?}",
        entries(&log)
    );
    shared.set_paused(false);
    let summary = running
        .join()
        .expect("the run's thread")
        .expect("the run drains the bus after the resume");
    assert_eq!(summary.handled_this_run, 10);
    assert_eq!(committed(dir.path()), Some(Offset::Int(9)));
    let log = entries(&log);
    for offset in 0..10 {
        assert_eq!(count(&log, &format!("a:handle {offset}")), 1, "{log:?}");
    }
}

// ---- Queue operations (`ctl errors`, timed retries) ----

/// A run with `q` failing the first attempt at offset 1 (objects 0, 1, 2 in turn: 4 and 7
/// wait behind it), kept running (not `--once`) until the test stops it.
struct QueueRun {
    shared: Arc<buslink_engine::steering::Shared>,
    log: Log,
    shutdown: Shutdown,
    running: std::thread::JoinHandle<Ran>,
    _dir: tempfile::TempDir,
}

fn queue_run(retry_interval: Duration) -> QueueRun {
    use buslink_engine::steering::Shared;
    let shared = Arc::new(Shared::new("rules", "memory", "MemoryBus"));
    let log = Log::default();
    let mut queued = configured(
        Scripted {
            name: "q",
            log: Arc::clone(&log),
            fails: vec![1],
            fail_attempts: 1,
            failed: Default::default(),
            sync_fails: false,
            taken: 0,
            hook: None,
        },
        FailurePolicy::ErrorQueue,
    );
    queued.retry_interval = retry_interval;
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut options = options(9, 1000);
    options.once = false;
    options.control = Some(shared.clone());
    let shutdown = Shutdown::default();
    let running = {
        let path = dir.path().to_path_buf();
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            let mut handlers = vec![queued];
            run_in(
                &path,
                MemoryBus::new(9, 3),
                &mut handlers,
                options,
                &shutdown,
            )
        })
    };
    let run = QueueRun {
        shared,
        log,
        shutdown,
        running,
        _dir: dir,
    };
    wait_until("the first pass over the bus", || {
        entries(&run.log).contains(&"q:handle 8".to_owned())
    });
    run
}

impl QueueRun {
    fn ask(
        &self,
        command: buslink_engine::steering::QueueCommand,
    ) -> buslink_engine::steering::QueueReply {
        let pending = self.shared.submit(command);
        self.shared
            .wait(pending, std::time::Instant::now() + Duration::from_secs(20))
            .expect("an answer from the dispatcher")
    }

    fn stop(self) -> Ran {
        self.shutdown.request();
        self.running.join().expect("the run's thread")
    }
}

/// Rule: `ctl errors list` shows each queued event, the failed one and those behind it.
#[test]
fn the_queue_list_shows_each_queued_event() {
    use buslink_engine::steering::{QueueCommand, QueueReply};
    let run = queue_run(Duration::from_secs(3600));
    let QueueReply::Listed(listed) = run.ask(QueueCommand::List { json: true }) else {
        panic!("a list expected");
    };
    let listed: Vec<(String, String, bool)> = listed
        .into_iter()
        .map(|event| (event.offset.to_string(), event.key, event.error.is_some()))
        .collect();
    assert_eq!(
        listed,
        [
            ("1".to_owned(), "Station/1".to_owned(), true),
            ("4".to_owned(), "Station/1".to_owned(), false),
            ("7".to_owned(), "Station/1".to_owned(), false),
        ],
        "the failed event with its error, then the two waiting behind it"
    );
    run.stop().result.expect("a stop is no error");
}

/// Rule: `ctl errors retry` delivers the queued events now, between two batches, the failed
/// one first and then those behind it in order; the queue is empty after.
#[test]
fn a_queue_retry_delivers_the_object_s_events_in_order() {
    use buslink_engine::steering::{QueueCommand, QueueReply};
    let run = queue_run(Duration::from_secs(3600));
    let answer = run.ask(QueueCommand::Retry { id: None });
    assert_eq!(
        answer,
        QueueReply::Retried {
            handled: 3,
            left: 0
        }
    );
    let log = Arc::clone(&run.log);
    let ran = run.stop();
    ran.result.expect("a stop is no error");
    assert!(ran.queue.is_empty());
    let log = entries(&log);
    assert_eq!(count(&log, "q:handle 1"), 2, "{log:?}");
    let (again, four, seven) = (
        log.iter().rposition(|e| e == "q:handle 1").unwrap_or(0),
        at(&log, "q:handle 4"),
        at(&log, "q:handle 7"),
    );
    assert!(again < four && four < seven, "{log:?}");
}

/// Rule: `ctl errors drop` removes queued events without delivering them.
#[test]
fn a_queue_drop_removes_the_events_without_delivering_them() {
    use buslink_engine::steering::{QueueCommand, QueueReply};
    let run = queue_run(Duration::from_secs(3600));
    let answer = run.ask(QueueCommand::Drop { ids: None });
    assert_eq!(
        answer,
        QueueReply::Dropped {
            dropped: 3,
            left: 0
        }
    );
    let missing = run.ask(QueueCommand::Retry { id: Some(99) });
    assert_eq!(missing, QueueReply::NoSuchEvent(99));
    let log = Arc::clone(&run.log);
    let ran = run.stop();
    ran.result.expect("a stop is no error");
    assert!(ran.queue.is_empty());
    let log = entries(&log);
    assert_eq!(count(&log, "q:handle 1"), 1, "{log:?}");
    assert!(!log.contains(&"q:handle 4".to_owned()), "{log:?}");
}

/// Rule: queued events are retried on the handler's `retry_interval`, with no command.
#[test]
fn queued_events_are_retried_on_retry_interval() {
    let run = queue_run(Duration::from_millis(50));
    wait_until("the timed retry", || {
        entries(&run.log).contains(&"q:handle 7".to_owned())
    });
    let log = Arc::clone(&run.log);
    let ran = run.stop();
    ran.result.expect("a stop is no error");
    assert!(ran.queue.is_empty(), "{:?}", ran.queue.events());
    let log = entries(&log);
    assert_eq!(count(&log, "q:handle 1"), 2, "{log:?}");
    assert_eq!(count(&log, "q:handle 4"), 1, "{log:?}");
}

// ---- A reload's handler swap ----

/// Rule: new handlers from a reload are swapped in between two batches: the old ones synced
/// and committed what they handled, the new ones take every later event.
#[test]
fn a_handler_swap_between_batches_gives_the_later_events_to_the_new_handlers() {
    use buslink_engine::config::{HandlerConfig, HandlerKind};
    use buslink_engine::steering::{HandlerSwap, Shared};
    let shared = Arc::new(Shared::new("rules", "memory", "MemoryBus"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = dir.path().join("new.jsonl");
    let log = Log::default();
    let offer = {
        let shared = shared.clone();
        let output = output.clone();
        let base_dir = dir.path().to_path_buf();
        move |at| {
            if at == 1 {
                shared.offer_handlers(HandlerSwap {
                    handlers: vec![HandlerConfig {
                        name: "new".into(),
                        kind: HandlerKind::Jsonl {
                            path: output.clone(),
                            mode: 0o640,
                        },
                        filter: EventFilter::default(),
                        retry: RetryPolicy {
                            attempts: 1,
                            base: Duration::from_millis(1),
                            max: Duration::from_millis(1),
                        },
                        on_failure: FailurePolicy::Stop,
                        retry_interval: Duration::from_secs(3600),
                        queue_key: None,
                    }],
                    base_dir: base_dir.clone(),
                    plugin_dirs: Vec::new(),
                });
            }
        }
    };
    let mut handlers = vec![hooked("old", &log, offer)];
    let mut options = options(4, 1000);
    options.control = Some(shared);
    let ran = run_in(
        dir.path(),
        MemoryBus::new(12, 12),
        &mut handlers,
        options,
        &Shutdown::default(),
    );
    ran.result.expect("the run drains the bus");
    assert_eq!(ran.committed, Some(Offset::Int(11)));
    let log = entries(&log);
    let handled: Vec<&String> = log.iter().filter(|e| e.contains("handle")).collect();
    assert_eq!(
        handled,
        [
            "old:handle 0",
            "old:handle 1",
            "old:handle 2",
            "old:handle 3"
        ],
        "the old handler keeps its batch, no more"
    );
    assert_eq!(log.last().map(String::as_str), Some("old:sync"), "{log:?}");
    let written = std::fs::read_to_string(&output).expect("the new handler's file");
    let offsets: Vec<i64> = written
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).expect("a JSON line")["offset"]
                .as_i64()
                .expect("an int offset")
        })
        .collect();
    assert_eq!(offsets, (4..12).collect::<Vec<i64>>());
    assert_eq!(handlers.len(), 1);
    assert_eq!(handlers[0].name, "new");
}
