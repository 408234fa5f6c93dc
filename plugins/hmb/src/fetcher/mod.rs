//! The background fetcher: owns one HMB session at a time, runs /recv (or /stream) in a loop,
//! frames and parses the answers into [`Chunk`]s, and hands them to the consumer through a
//! bounded channel, so the next answer is fetched while the host handles the current one.
//!
//! ## Continuity, reconnection, gaps
//!
//! The fetcher keeps, per queue, the next seq it expects (`next`), and for the session the
//! continuity suffix (queue and seq of the last real message received). On a network error, a
//! 400 (`invalid session`), a 503 or 5xx, a torn body or an undecodable message, every complete
//! message already received is handed over, the session is dropped, and a new one is opened with
//! `seq = next` for every queue (with backoff; the first retry after a success is immediate).
//! Since every complete message goes to the consumer and nothing after it was counted, nothing
//! is missed and nothing repeats; a message with a seq below `next` (which a server may send
//! again) is dropped and counted as a duplicate.
//!
//! Before re-opening at known positions, `/info` is read: a queue whose server-side end lies
//! before our position was reset (a server restarted without its messages): it is read again
//! from the oldest message the server holds (a warning says so). For filtered queues (topics,
//! filter, starttime), consecutive seqs prove nothing, so a position older than the oldest
//! message held is reported as a gap of at most that many messages. For the other queues every
//! message is checked: a seq above `next` is a gap (warning with queue, expected seq, received
//! seq and count).

//!
//! The parts: `session` opens (and re-opens) the session and checks positions; `receive`
//! runs one request and turns its answer into a chunk; `chunk` holds a chunk's events and
//! text.

mod chunk;
mod receive;
mod session;

pub use chunk::{Chunk, ChunkEvent, Span};

use crate::client::{read_error, Http, Info, PendingRecv, RecvClient};
use crate::framing::{Framer, Item};
use crate::message::{parse_bson, parse_json, BodySrc, Parsed};
use crate::settings::Format;
use crate::spares::Pool;
use buslink_plugin_api::{log, PluginError, PluginResult};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Chunks in flight between the fetcher and the consumer (besides the one each side holds).
const CHANNEL_CHUNKS: usize = 2;
/// The size of one read from the network.
const READ_SIZE: usize = 64 * 1024;
/// A chunk is handed over once its answer bytes reach this size, even before the answer ends.
const EMIT_BYTES: usize = 2 << 20;

/// Counters shown by the host (`Consumer::counters`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Times messages were found missing.
    pub gaps: AtomicU64,
    /// Messages known to be lost (the server no longer held them).
    pub messages_lost: AtomicU64,
    /// Sessions re-opened after the first.
    pub reconnects: AtomicU64,
    /// Messages dropped because their seq had been delivered already.
    pub duplicates: AtomicU64,
    /// Queues found reset on the server (restarted without its messages).
    pub resets: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
    /// TOUCH messages (queue creation) passed over: never events.
    pub touches: AtomicU64,
    /// Messages whose body could not be converted to JSON, delivered as bytes (their BSON).
    pub undecodable_bodies: AtomicU64,
    /// Not a counter: the server's last word, handed over already, was that nothing more was
    /// ready for this session: a HEARTBEAT (the server writes one only when no message is
    /// ready), a /recv answer that ended whole before recv_limit (the server ends a /recv as
    /// soon as it has written what was ready), or, right after an open, `/info` showing every
    /// queue's end at this session's position. Cleared by the next message, a failure or a
    /// re-open. `poll` answers [`PollStatus::Drained`](buslink_plugin_api::PollStatus) on it
    /// alone: silence, a stalled answer or a failing session never set it.
    pub drained: AtomicBool,
    /// Not a counter: the fetcher's last request failed and none succeeded since (it is
    /// re-opening): why, and since when (the first failure of the run of them). `poll` then
    /// cannot tell that the bus is drained, and says so. See [`failed`](Self::failed).
    failing: std::sync::Mutex<Option<(String, Instant)>>,
}

impl Counters {
    /// The `failing` slot (a poisoned lock still holds a usable value).
    fn lock_failing(&self) -> std::sync::MutexGuard<'_, Option<(String, Instant)>> {
        self.failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request failed (`why`); the run of failures keeps the time of its first.
    pub fn failed(&self, why: String) {
        let mut failing = self.lock_failing();
        let since = failing
            .as_ref()
            .map_or_else(Instant::now, |(_, since)| *since);
        *failing = Some((why, since));
    }

    /// Why the fetcher's requests fail now (`None`: the last one succeeded).
    pub fn failing(&self) -> Option<String> {
        self.lock_failing().as_ref().map(|(why, _)| why.clone())
    }

    /// The fetcher's failure, once requests have failed (none succeeding) for `patience`: the
    /// consumer is then shown waiting for the bus, also while the host still handles events
    /// read before (one failure recovered at once is no news).
    pub fn failing_for(&self, patience: Duration) -> Option<String> {
        self.lock_failing()
            .as_ref()
            .filter(|(_, since)| since.elapsed() >= patience)
            .map(|(why, _)| why.clone())
    }

    /// Requests succeed again.
    pub fn recovered(&self) {
        *self.lock_failing() = None;
    }

    /// The counters as the host shows them.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        [
            ("gaps", &self.gaps),
            ("messages_lost", &self.messages_lost),
            ("reconnects", &self.reconnects),
            ("duplicates_dropped", &self.duplicates),
            ("queue_resets", &self.resets),
            ("heartbeats", &self.heartbeats),
            ("touch_messages_skipped", &self.touches),
            ("undecodable_bodies", &self.undecodable_bodies),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.load(Ordering::Relaxed)))
        .collect()
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the fetcher sends to the consumer.
#[derive(Debug)]
pub enum FetchMsg {
    /// Events (and maybe the end of the window).
    Chunk(Chunk),
    /// The fetcher gave up (or met an error no retry cures); it has stopped.
    Failed(PluginError),
}

/// Where a queue starts when the fetcher has no position for it yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartSeq {
    /// At this seq (>= 0). `known`: it comes from an offset (a position we had reached), so a
    /// server-side end before it means the server lost the queue.
    Exact {
        /// The seq.
        seq: i64,
        /// From an offset.
        known: bool,
    },
    /// Let the server resolve it: a negative seq (-1 = only new messages), or none (= -1).
    Server(Option<i64>),
}

/// A /recv sent ahead: for this session and continuity suffix.
struct Prefetched {
    sid: String,
    suffix: Option<(String, i64)>,
    pending: PendingRecv,
}

struct Session {
    sid: String,
    /// (queue, seq) of the last real message received in this session.
    suffix: Option<(String, i64)>,
}

/// The fetcher's state; lives on the fetcher thread once started.
pub struct Fetcher {
    http: Http,
    /// The client for /recv and /stream, made on the fetcher thread's first receive.
    receiver: Option<RecvClient>,
    /// The next /recv, sent before the answer in hand was parsed (see `prefetch`).
    prefetched: Option<Prefetched>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    start: Vec<StartSeq>,
    next: Vec<Option<i64>>,
    filtered: Vec<bool>,
    /// The client id, reused on every re-open (own-cid suppression stays the same).
    pub cid: Option<String>,
    session: Option<Session>,
    has_info: bool,
    pending_positions: bool,
    /// The last item the server sent was a HEARTBEAT: nothing was ready then.
    heard_idle: bool,
    failures: u32,
    backoff: Duration,
    opened: bool,
    /// Gaps found and not yet put in a chunk (range, count if known): they go in the next
    /// one, before the event they were found at, so the host hears of each where it lies.
    pending_gaps: Vec<(String, Option<u64>)>,
    /// Buffers the consumer handed back, read into again.
    spares: Arc<Spares>,
    /// The framed messages of the answer in hand (kept between answers with its room).
    items: Vec<Item>,
    /// Per queue, the last message received (its seq and its bytes as the server wrote them):
    /// a re-open after a lost session asks the server for it again, and another message
    /// there means the queue was made anew (a server restarted without its messages and
    /// written to again), never read on from the old position.
    last_message: Vec<Option<(i64, Vec<u8>)>>,
    /// Per queue, where the last message of the answer in hand lies in its buffer (filled
    /// by `process`, copied into `last_message` once per answer).
    last_range: Vec<Option<(i64, std::ops::Range<usize>)>>,
    /// The session was lost in a way a restarted server causes (a broken connection, a
    /// session the server no longer knows), not by a 5xx answer of the server still up: the
    /// next re-open asks for `last_message` again.
    may_be_another_server: bool,
}

/// The buffers of chunks the consumer is done with, for the fetcher to reuse (see
/// [`spares`](crate::spares): fresh megabytes cost a page fault per 4 KiB).
#[derive(Debug, Default)]
pub struct Spares {
    /// Answer bytes and converted text.
    pub bytes: Pool<u8>,
    /// Event lists.
    pub events: Pool<ChunkEvent>,
}

impl Spares {
    /// Takes back the buffers of a chunk whose events were all moved into batches.
    pub fn give_chunk(&self, chunk: Chunk) {
        self.bytes.give(chunk.raw.into_bytes());
        self.bytes.give(chunk.extra.into_bytes());
        self.bytes.give(chunk.bytes);
        self.events.give(chunk.events);
    }
}

/// The consumer's end of a running fetcher; dropping it stops the fetcher (after its current
/// request; the thread is not waited for).
pub struct FetcherHandle {
    /// Chunks and failures.
    pub rx: Receiver<FetchMsg>,
    /// Where the consumer hands back the chunks it is done with.
    pub spares: Arc<Spares>,
    stop: Arc<AtomicBool>,
}

impl Drop for FetcherHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

enum Flow {
    /// The answer was handled; go on with the next request.
    Continue,
    /// The window ended (EOF), or the consumer went away.
    Finished,
}

impl Fetcher {
    /// A fetcher for the queues of `http`'s settings, starting at `start`.
    pub fn new(
        http: Http,
        counters: Arc<Counters>,
        start: Vec<StartSeq>,
        cid: Option<String>,
        has_info: bool,
    ) -> Fetcher {
        let config = Arc::clone(&http.config);
        Fetcher {
            counters,
            stop: Arc::new(AtomicBool::new(false)),
            next: vec![None; config.queues.len()],
            filtered: config
                .queues
                .iter()
                .map(|q| q.params.is_filtered() || config.cid.is_some())
                .collect(),
            start,
            cid: cid.or_else(|| config.cid.clone()),
            session: None,
            has_info,
            pending_positions: false,
            heard_idle: false,
            failures: 0,
            backoff: config.retry_wait,
            opened: false,
            pending_gaps: Vec::new(),
            spares: Arc::default(),
            items: Vec::new(),
            last_message: Vec::new(),
            last_range: Vec::new(),
            may_be_another_server: false,
            http,
            receiver: None,
            prefetched: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Every queue's next seq as the open session has it (the server's answer to the open):
    /// `None` where the server chose and said nothing.
    pub fn next_positions(&self) -> &[Option<i64>] {
        &self.next
    }

    /// Starts the fetcher thread (after a first [`open_session`](Self::open_session)).
    pub fn spawn(self) -> PluginResult<FetcherHandle> {
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CHUNKS);
        let stop = Arc::clone(&self.stop);
        let spares = Arc::clone(&self.spares);
        std::thread::Builder::new()
            .name("hmb-fetch".into())
            .spawn(move || self.run(tx))
            .map_err(|e| PluginError::internal(format!("cannot start the fetch thread: {e}")))?;
        Ok(FetcherHandle { rx, spares, stop })
    }

    fn run(mut self, tx: SyncSender<FetchMsg>) {
        loop {
            if self.stopped() {
                return;
            }
            if self.session.is_none() {
                if let Err(error) = self.open_session(false) {
                    if !self.retry_after(error, &tx) {
                        return;
                    }
                    continue;
                }
            }
            match self.receive_once(&tx) {
                Ok(Flow::Continue) => {
                    if self.failures > 0 {
                        self.counters.recovered();
                    }
                    self.failures = 0;
                    self.backoff = self.http.config.retry_wait;
                }
                Ok(Flow::Finished) => return,
                Err(error) => {
                    self.session = None;
                    self.prefetched = None;
                    if !crate::client::is_server_answer_5xx(&error) {
                        self.may_be_another_server = true;
                    }
                    if !self.retry_after(error, &tx) {
                        return;
                    }
                }
            }
        }
    }

    /// Decides what to do after a failure: `false` when the fetcher must stop (the error was
    /// sent to the consumer).
    fn retry_after(&mut self, error: PluginError, tx: &SyncSender<FetchMsg>) -> bool {
        if error.kind().is_transient() {
            self.counters.failed(format!(
                "HMB {}: {error} ({} failed attempt(s) in a row)",
                self.http.base(),
                self.failures + 1
            ));
        }
        self.counters.drained.store(false, Ordering::SeqCst);
        self.heard_idle = false;
        if self.stopped() {
            return false;
        }
        let config = Arc::clone(&self.http.config);
        if !error.kind().is_transient() {
            let _ = tx.send(FetchMsg::Failed(error));
            return false;
        }
        self.failures += 1;
        if config.retries > 0 && self.failures > config.retries {
            let message = format!(
                "{error} (gave up after {} failed attempts in a row; retries = {})",
                self.failures, config.retries
            );
            let _ = tx.send(FetchMsg::Failed(PluginError::new(error.kind(), message)));
            return false;
        }
        let wait = if self.failures == 1 {
            Duration::ZERO
        } else {
            let wait = self.backoff;
            self.backoff = (self.backoff * 2).min(config.retry_wait_max);
            wait
        };
        log::warn(format!(
            "HMB {}: {error}; re-opening the session {} (attempt {})",
            self.http.base(),
            if wait.is_zero() {
                "now".to_owned()
            } else {
                format!("in {} ms", wait.as_millis())
            },
            self.failures
        ));
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(20)));
        }
        !self.stopped()
    }

    /// ` (the message after queue Q seq N)`, for errors about a message whose head cannot be
    /// read: `last` is the last message read before it (else the session's last one).
    fn after(&self, last: Option<&(String, i64)>) -> String {
        let session = self.session.as_ref().and_then(|s| s.suffix.as_ref());
        match last.or(session) {
            Some((queue, seq)) => format!(" (the message after queue {queue} seq {seq})"),
            None => " (the first message of the session)".to_owned(),
        }
    }

    /// A body that cannot be converted to JSON was delivered as bytes: counted and logged with
    /// its queue and seq.
    fn report_undecodable(&self, queue: &str, seq: i64, parsed: &Parsed<'_>, error: &str) {
        Counters::add(&self.counters.undecodable_bodies, 1);
        let why = match parsed.body {
            BodySrc::BsonDoc(doc) => crate::bson_scan::why_undecodable(doc),
            BodySrc::Text(_) => error.to_owned(),
        };
        let what = if parsed.body_is_data {
            "the BSON document of its data, a Hermes event"
        } else {
            "the BSON document of the whole message"
        };
        log::warn(format!(
            "HMB {}: queue {queue} seq {seq}: the body cannot be converted to JSON ({why}); \
             delivered as bytes ({what}; `body_base64` in event lines)",
            self.http.base()
        ));
    }
}
