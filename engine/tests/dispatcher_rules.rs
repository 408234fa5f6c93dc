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

/// A handler that records every call, fails for good on the offsets in `fails`, and keeps a
/// position (the count of events it took), as an exactly-once output does.
struct Scripted {
    name: &'static str,
    log: Log,
    fails: Vec<i64>,
    taken: u64,
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
        if self.fails.contains(&at) {
            return Err(HandlerError::new(format!("refused {at}")));
        }
        self.taken += 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), HandlerError> {
        self.record("sync".into());
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
    ConfiguredHandler {
        name: name.to_owned(),
        matcher: EventMatcher::new(&EventFilter::default()).expect("no patterns"),
        retry: RetryPolicy {
            attempts: 1,
            base: Duration::from_millis(1),
            max: Duration::from_millis(1),
        },
        on_failure,
        retry_interval: Duration::from_secs(3600),
        queue_key: None,
        handler: Box::new(Scripted {
            name,
            log: Arc::clone(log),
            fails: fails.to_vec(),
            taken: 0,
        }),
    }
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

/// What a run left: its result, the cache's last committed offset, and the error queue.
struct Ran {
    result: Result<RunSummary, PipelineError>,
    committed: Option<Offset>,
    queue: ErrorQueue,
}

fn run(bus: MemoryBus, handlers: &mut Vec<ConfiguredHandler>, options: PipelineOptions) -> Ran {
    let dir = tempfile::tempdir().expect("a temp dir");
    let consumer = PluginConsumer::in_process(
        buslink_plugin_api::ffi::consumer_box(bus, "memory", "MemoryBus"),
        "memory",
        "MemoryBus",
    );
    let cache = OffsetCache::new(dir.path(), "rules");
    let mut dead_letters = DeadLetterFile::new(dir.path(), "rules");
    let mut error_queue = ErrorQueue::load(dir.path(), "rules").expect("an empty queue");
    let shutdown = Shutdown::default();
    let result = pipeline::run(
        consumer,
        None,
        Outputs {
            handlers,
            dead_letters: &mut dead_letters,
            error_queue: &mut error_queue,
        },
        &cache,
        options,
        &shutdown,
    );
    let committed = cache
        .load()
        .expect("a readable cache")
        .and_then(|record| record.last_offset);
    Ran {
        result,
        committed,
        queue: error_queue,
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
