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

use crate::client::{read_error, Http, Info, PendingRecv, RecvClient};
use crate::framing::{Framer, Item};
use crate::message::{parse_bson, parse_json, BodySrc, Parsed};
use crate::settings::Format;
use crate::spares::Pool;
use buslink_plugin_api::{log, Body, PluginError, PluginResult};
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
    /// re-opening); `poll` then cannot tell that the bus is drained, and says so.
    pub failing: std::sync::Mutex<Option<String>>,
}

/// The `failing` slot of `counters` (a poisoned lock still holds a usable value).
pub fn lock_failing(counters: &Counters) -> std::sync::MutexGuard<'_, Option<String>> {
    counters
        .failing
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Counters {
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

/// Which buffer of a [`Chunk`] a [`Span`] points into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// The answer's text (`raw`).
    Raw,
    /// Text made while parsing (`extra`).
    Extra,
    /// Bytes that are not (or not known to be) text: bodies delivered raw (`bytes`).
    Bytes,
}

/// A range inside a [`Chunk`]: text, or (for a body delivered raw) bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    start: usize,
    len: usize,
    store: Store,
}

/// One event of a chunk.
#[derive(Clone, Copy, Debug)]
pub struct ChunkEvent {
    /// The queue's index in the settings.
    pub queue: usize,
    /// Its seq.
    pub seq: i64,
    /// Its timestamp (microseconds since the epoch).
    pub micros: i64,
    /// Its category.
    pub category: Span,
    /// Its body: JSON text, or the raw bytes of a body that cannot be converted to JSON.
    pub body: Span,
}

/// The events of one answer (or of one read, for /stream), with their text.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The answer itself (JSON sessions): most spans point into it, no copy made.
    raw: String,
    /// Text made while parsing (BSON converted to JSON, unescaped strings).
    extra: String,
    /// Bodies that cannot be converted to JSON, as they came (the BSON of the document that
    /// would have been converted); empty, and never allocated, when there are none.
    bytes: Vec<u8>,
    /// The events, in order.
    pub events: Vec<ChunkEvent>,
    /// Every queue's next seq right after a (re-)open, before these events.
    pub positions: Option<Vec<Option<i64>>>,
    /// The window ended after these events.
    pub eof: bool,
    /// Gaps, in order: (the index of the event they come before, range, count if known).
    pub gaps: Vec<(usize, String, Option<u64>)>,
}

impl Chunk {
    /// The text of a span (empty for a span of bytes: use [`body`](Self::body)).
    pub fn text(&self, span: Span) -> &str {
        let source = match span.store {
            Store::Raw => &self.raw,
            Store::Extra => &self.extra,
            Store::Bytes => return "",
        };
        source.get(span.start..span.start + span.len).unwrap_or("")
    }

    /// An event body: JSON text, or the raw bytes of a body that cannot be converted to JSON.
    pub fn body(&self, span: Span) -> Body<'_> {
        match span.store {
            Store::Bytes => Body::Bytes(
                self.bytes
                    .get(span.start..span.start + span.len)
                    .unwrap_or(&[]),
            ),
            _ => Body::Json(self.text(span)),
        }
    }
}

/// Builds a chunk's events; the text lives in `raw` (owned by the caller) or `extra`.
struct ChunkBuilder {
    extra: Vec<u8>,
    bytes: Vec<u8>,
    events: Vec<ChunkEvent>,
    gaps: Vec<(usize, String, Option<u64>)>,
}

impl ChunkBuilder {
    fn span(&mut self, raw: &str, text: &str) -> Span {
        let offset = (text.as_ptr() as usize).wrapping_sub(raw.as_ptr() as usize);
        if !raw.is_empty() && offset <= raw.len() && offset + text.len() <= raw.len() {
            Span {
                start: offset,
                len: text.len(),
                store: Store::Raw,
            }
        } else {
            let start = self.extra.len();
            self.extra.extend_from_slice(text.as_bytes());
            Span {
                start,
                len: text.len(),
                store: Store::Extra,
            }
        }
    }

    /// Adds an event. A BSON body that cannot be converted to JSON (a string that is not
    /// UTF-8, a broken element, ...) is kept as its bytes instead: the error is returned, for
    /// the caller to report; the event is added either way.
    fn push(
        &mut self,
        raw: &str,
        queue: usize,
        seq: i64,
        micros: i64,
        parsed: &Parsed<'_>,
    ) -> Option<String> {
        let category = self.span(raw, parsed.category());
        let mut undecodable = None;
        let body = match parsed.body {
            BodySrc::Text(text) => self.span(raw, text),
            BodySrc::BsonDoc(doc) => {
                let start = self.extra.len();
                match crate::bson_scan::write_document(doc, &mut self.extra) {
                    Ok(()) => Span {
                        start,
                        len: self.extra.len() - start,
                        store: Store::Extra,
                    },
                    Err(error) => {
                        // The part written before the failure goes; the document, as it came.
                        self.extra.truncate(start);
                        undecodable = Some(error);
                        self.raw_body(doc)
                    }
                }
            }
        };
        self.events.push(ChunkEvent {
            queue,
            seq,
            micros,
            category,
            body,
        });
        undecodable
    }

    /// Keeps a body as bytes.
    fn raw_body(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
            store: Store::Bytes,
        }
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
            http,
            receiver: None,
            prefetched: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
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
                        *lock_failing(&self.counters) = None;
                    }
                    self.failures = 0;
                    self.backoff = self.http.config.retry_wait;
                }
                Ok(Flow::Finished) => return,
                Err(error) => {
                    self.session = None;
                    self.prefetched = None;
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
            *lock_failing(&self.counters) = Some(format!(
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

    fn asked(&self, index: usize) -> (Option<i64>, bool) {
        match (self.next[index], self.start[index]) {
            (Some(next), _) => (Some(next), true),
            (None, StartSeq::Exact { seq, known }) => (Some(seq), known),
            (None, StartSeq::Server(seq)) => (seq, false),
        }
    }

    /// Opens a session at the current positions. `first`: the open the host asked for (its
    /// errors go to the host); otherwise a re-open by the fetcher.
    pub fn open_session(&mut self, first: bool) -> PluginResult<()> {
        let config = Arc::clone(&self.http.config);
        let mut asked: Vec<(Option<i64>, bool)> =
            (0..config.queues.len()).map(|i| self.asked(i)).collect();
        let info = self.check_positions(&mut asked);
        let mut touched = false;
        loop {
            let mut queues = serde_json::Map::new();
            for (queue, (seq, _)) in config.queues.iter().zip(&asked) {
                let mut params = serde_json::to_value(&queue.params)
                    .map_err(|e| PluginError::internal(format!("queue parameters: {e}")))?;
                if let Some(map) = params.as_object_mut() {
                    match seq {
                        Some(seq) => map.insert("seq".into(), (*seq).into()),
                        None => map.remove("seq"),
                    };
                }
                queues.insert(queue.name.clone(), params);
            }
            let mut body = serde_json::json!({
                "heartbeat": config.heartbeat,
                "recv_limit": config.recv_limit,
                "queue": queues,
            });
            if let Some(cid) = &self.cid {
                body["cid"] = cid.clone().into();
            }
            let ack = self.http.open(config.format, &body)?;
            let mut not_found = Vec::new();
            let mut resolved = vec![None; config.queues.len()];
            for (index, queue) in config.queues.iter().enumerate() {
                let Some(entry) = ack.queue.get(&queue.name) else {
                    return Err(PluginError::protocol(format!(
                        "POST {}: the ack does not mention queue {}",
                        self.http.url(&["open"]),
                        queue.name
                    )));
                };
                match (&entry.error, entry.seq) {
                    (Some(error), _) if error == "queue not found" => not_found.push(index),
                    (Some(error), _) => {
                        return Err(PluginError::config(format!(
                            "HMB {}: queue {}: the server refused the subscription: {error}",
                            self.http.base(),
                            queue.name
                        ))
                        .with_key(format!("queues.{}", queue.name)))
                    }
                    (None, Some(seq)) => resolved[index] = Some(seq as i64),
                    (None, None) => {
                        return Err(PluginError::protocol(format!(
                            "POST {}: the ack gives queue {} neither a seq nor an error",
                            self.http.url(&["open"]),
                            queue.name
                        )))
                    }
                }
            }
            if !not_found.is_empty() {
                let names: Vec<&str> = not_found
                    .iter()
                    .map(|&i| config.queues[i].name.as_str())
                    .collect();
                if config.autocreate_queues && !touched {
                    let touches: Vec<serde_json::Value> = names
                        .iter()
                        .map(|name| serde_json::json!({"type": "TOUCH", "queue": name}))
                        .collect();
                    self.http.send(config.format, &ack.sid, &touches)?;
                    log::info(format!(
                        "HMB {}: created queue(s) {} (autocreate_queues: one TOUCH message each, \
                         skipped by this consumer)",
                        self.http.base(),
                        names.join(", ")
                    ));
                    for &i in &not_found {
                        // The TOUCH message took seq 0: start after it.
                        if let (Some(0), known) = asked[i] {
                            asked[i] = (Some(1), known);
                        }
                    }
                    self.cid = Some(ack.cid.clone());
                    touched = true;
                    continue;
                }
                let message = format!(
                    "HMB {}: queue not found: {}{}",
                    self.http.base(),
                    names.join(", "),
                    if config.autocreate_queues {
                        ""
                    } else {
                        " (set autocreate_queues = true to create missing queues)"
                    }
                );
                return Err(if first {
                    PluginError::config(message).with_key(format!("queues.{}", names[0]))
                } else {
                    // A server that restarted without its queues: they come back with the
                    // next message sent to them.
                    PluginError::connect(message)
                });
            }
            for (index, queue) in config.queues.iter().enumerate() {
                let got = resolved[index];
                if let ((Some(want), known), Some(got)) = (asked[index], got) {
                    if want >= 0 && got > want {
                        let lost = (got - want) as u64;
                        self.report_gap(&queue.name, want, got, lost, "the server starts later");
                    } else if known && want >= 0 && got < want {
                        log::warn(format!(
                            "HMB {}: queue {}: asked for seq {want}, the server's queue ends at \
                             {got}: the server lost messages (restarted?); following it from \
                             seq {got}",
                            self.http.base(),
                            queue.name
                        ));
                        Counters::add(&self.counters.resets, 1);
                    }
                }
                self.next[index] = got;
            }
            let which = if self.opened {
                Counters::add(&self.counters.reconnects, 1);
                "re-opened"
            } else {
                "opened"
            };
            self.opened = true;
            let at: Vec<String> = config
                .queues
                .iter()
                .zip(&self.next)
                .map(|(q, n)| format!("{} at seq {}", q.name, n.unwrap_or(-1)))
                .collect();
            log::info(format!(
                "HMB {}: session {which} ({} format, heartbeat {} s): {}",
                self.http.base(),
                config.format.capability(),
                config.heartbeat,
                at.join(", ")
            ));
            if self.cid.is_none() {
                self.cid = Some(ack.cid.clone());
            }
            self.session = Some(Session {
                sid: ack.sid,
                suffix: None,
            });
            self.pending_positions = true;
            // The server's own word that nothing is waiting: every queue's end (as /info has
            // it, read just before the open) at this session's known position. Otherwise the
            // first answer tells.
            let at_end = info.as_ref().is_some_and(|info| {
                config.queues.iter().zip(&self.next).all(|(queue, next)| {
                    let end = info
                        .queue
                        .get(&queue.name)
                        .and_then(|held| held.endseq)
                        .map_or(0, |e| e as i64);
                    next.is_some_and(|next| next >= end)
                })
            });
            self.heard_idle = false;
            self.counters.drained.store(at_end, Ordering::SeqCst);
            return Ok(());
        }
    }

    /// Checks known positions against `/info` before an open: reset queues restart at the
    /// oldest message held; positions older than what a filtered queue holds are gaps.
    /// Returns the `/info` answer it read, if any.
    fn check_positions(&mut self, asked: &mut [(Option<i64>, bool)]) -> Option<Info> {
        if !self.has_info || !asked.iter().any(|(seq, _)| seq.is_some_and(|s| s >= 0)) {
            return None;
        }
        let info = match self.http.info() {
            Ok(info) => info,
            Err(error) => {
                log::debug(format!("HMB: /info before the open failed: {error}"));
                return None;
            }
        };
        let config = Arc::clone(&self.http.config);
        for (index, queue) in config.queues.iter().enumerate() {
            let (Some(want), known) = asked[index] else {
                continue;
            };
            if want < 0 {
                continue;
            }
            let held = info.queue.get(&queue.name).cloned().unwrap_or_default();
            let end = held.endseq.map_or(0, |e| e as i64);
            let oldest = held.startseq.map(|s| s as i64);
            if known && want > end {
                let restart_at = oldest.unwrap_or(0);
                log::warn(format!(
                    "HMB {}: queue {}: expected seq {want}, but the server's queue ends before \
                     it (next seq {end}): the server lost the queue (restarted without its \
                     messages?); messages the old server held from seq {want} on are lost (count \
                     unknown); reading the queue again from seq {restart_at}",
                    self.http.base(),
                    queue.name
                ));
                Counters::add(&self.counters.resets, 1);
                Counters::add(&self.counters.gaps, 1);
                self.pending_gaps
                    .push((format!("queue {} from seq {want} on", queue.name), None));
                asked[index] = (Some(restart_at), false);
                // Later re-opens start there too, until a message gives a position.
                self.next[index] = None;
                self.start[index] = StartSeq::Exact {
                    seq: restart_at,
                    known: false,
                };
            } else if self.filtered[index] {
                if let Some(oldest) = oldest.filter(|&o| o > want) {
                    let lost = (oldest - want) as u64;
                    self.report_gap(
                        &queue.name,
                        want,
                        oldest,
                        lost,
                        "the server no longer holds them; with topics or a filter, some may not \
                         have been for this consumer anyway",
                    );
                }
            }
        }
        Some(info)
    }

    fn report_gap(&mut self, queue: &str, expected: i64, received: i64, lost: u64, why: &str) {
        Counters::add(&self.counters.gaps, 1);
        Counters::add(&self.counters.messages_lost, lost);
        let range = if received - 1 == expected {
            format!("queue {queue} seq {expected}")
        } else {
            format!("queue {queue} seq {expected} to {}", received - 1)
        };
        self.pending_gaps.push((range, Some(lost)));
        log::warn(format!(
            "HMB {}: gap on queue {queue}: expected seq {expected}, received seq {received}: \
             {lost} message(s) lost ({why})",
            self.http.base()
        ));
    }

    /// One /recv (or one /stream connection): reads, frames, parses and sends chunks.
    fn receive_once(&mut self, tx: &SyncSender<FetchMsg>) -> PluginResult<Flow> {
        let receiver = match self.receiver.take() {
            Some(receiver) => receiver,
            None => RecvClient::new(self.http.clone())?,
        };
        let mut buf = self.spares.bytes.take(0);
        let mut items = std::mem::take(&mut self.items);
        let flow = self.receive_with(&receiver, tx, &mut buf, &mut items);
        self.receiver = Some(receiver);
        items.clear();
        self.items = items;
        self.spares.bytes.give(buf);
        flow
    }

    fn receive_with(
        &mut self,
        receiver: &RecvClient,
        tx: &SyncSender<FetchMsg>,
        buf: &mut Vec<u8>,
        items: &mut Vec<Item>,
    ) -> PluginResult<Flow> {
        let config = Arc::clone(&self.http.config);
        let format = config.format;
        let (sid, suffix) = match &self.session {
            Some(session) => (session.sid.clone(), session.suffix.clone()),
            None => return Err(PluginError::internal("receive without a session")),
        };
        let what = format!(
            "GET {}",
            self.http
                .url(&[if config.stream { "stream" } else { "recv" }, "SID"])
        );
        let pending = match self.prefetched.take() {
            Some(ahead) if ahead.sid == sid && ahead.suffix == suffix => ahead.pending,
            _ => receiver.send(
                config.stream,
                &sid,
                suffix.as_ref().map(|(q, s)| (q.as_str(), *s)),
                format,
            ),
        };
        let mut response = receiver.answer(pending)?;
        // Room for a whole answer: it grows without being copied again.
        let capacity = if config.stream {
            2 * READ_SIZE
        } else {
            (config.recv_limit as usize)
                .saturating_mul(1024)
                .min(EMIT_BYTES)
                + READ_SIZE
        };
        buf.reserve(capacity);
        let mut framer = Framer::new(format);
        let mut pos = 0;
        let mut answer_bytes = 0usize;
        // Progress: a message completed (or the answer began). While bytes wait after the last
        // message, the next one must be whole by `message_timeout` after it: a server that
        // trickles a byte now and then never trips the per-read timeout.
        let mut progress_at = Instant::now();
        loop {
            // What the end of this read says of the server's readiness, once handed over.
            let mut drained_after = None;
            let deadline = (buf.len() > pos).then(|| progress_at + config.message_timeout);
            let mut slow = None;
            let (ended, read_failure) = match response.chunk_by(deadline) {
                Ok(None) => (true, None),
                Ok(Some(chunk)) => {
                    if buf.capacity() < capacity {
                        buf.reserve(capacity - buf.len());
                    }
                    buf.extend_from_slice(&chunk);
                    answer_bytes += chunk.len();
                    (false, None)
                }
                Err(_) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    self.counters.drained.store(false, Ordering::SeqCst);
                    slow = Some(buf.len() - pos);
                    (false, None)
                }
                Err(e) => {
                    self.counters.drained.store(false, Ordering::SeqCst);
                    (false, Some(read_error(&what, &e)))
                }
            };
            if ended && !config.stream {
                // The server ends a /recv when it has written what was ready, or when
                // recv_limit is reached: only the first says nothing more is ready.
                let full = answer_bytes as u64 >= config.recv_limit.saturating_mul(1024);
                drained_after = Some(!full);
            }
            if ended {
                framer.body_ended();
            }
            let received_at = chrono::Utc::now().timestamp_micros();
            let mut frame_failure = None;
            let framed_before = items.len();
            loop {
                match framer.next(buf, &mut pos) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => break,
                    Err(message) => {
                        frame_failure = Some(message);
                        break;
                    }
                }
            }
            // Progress: a message completed in this read (the clock is read once per read, not
            // per message: a read holds hundreds).
            if items.len() > framed_before {
                progress_at = Instant::now();
            }
            // Bounded whatever the server sends: a message (or what stands between messages)
            // longer than max_message is never waited for.
            if frame_failure.is_none()
                && (buf.len().saturating_sub(pos) > config.max_message
                    || buf.len() > config.max_message.saturating_add(EMIT_BYTES))
            {
                frame_failure = Some(format!(
                    "{} bytes without the end of a message (max_message_kb = {}): not read \
                     further",
                    buf.len().saturating_sub(pos),
                    config.max_message / 1024
                ));
            }
            if slow.is_none()
                && frame_failure.is_none()
                && buf.len() > pos
                && progress_at.elapsed() >= config.message_timeout
            {
                slow = Some(buf.len() - pos);
            }
            if let Some(waiting) = slow {
                frame_failure = Some(format!(
                    "{waiting} bytes arrived without a message being completed in {} ms \
                     (message_timeout_ms): the server trickles; not read further",
                    config.message_timeout.as_millis()
                ));
            }
            let failed = read_failure.is_some() || frame_failure.is_some();
            if ended && !failed && !config.stream {
                self.prefetch(receiver, &sid, buf, pos, &framer, items);
            }
            // /recv answers are handed over whole; /stream ones as they come; either way a
            // chunk never grows past EMIT_BYTES plus one message.
            let big = buf.len() >= EMIT_BYTES;
            if !items.is_empty() && (ended || failed || config.stream || big) {
                let (eof, closed) = self.emit(buf, &mut pos, items, received_at, tx, &what)?;
                if closed || self.stopped() {
                    return Ok(Flow::Finished);
                }
                if eof {
                    return Ok(Flow::Finished);
                }
            }
            // Only once the chunk is on its way (`poll` must not see "drained" before it), and
            // never from an answer that broke: a HEARTBEAT last, or a /recv that ended whole
            // before its limit.
            if !failed {
                match drained_after.take() {
                    Some(done) => self
                        .counters
                        .drained
                        .store(done || self.heard_idle, Ordering::SeqCst),
                    None if self.heard_idle => self.counters.drained.store(true, Ordering::SeqCst),
                    None => {}
                }
            }
            if let Some(message) = frame_failure {
                // Named after the messages before it, handed over just above.
                let broken = if slow.is_some() {
                    "answer broken off"
                } else {
                    "undecodable answer"
                };
                return Err(PluginError::protocol(format!(
                    "{what}: {broken}: {message}{}",
                    self.after(None)
                )));
            }
            if let Some(error) = read_failure {
                return Err(error);
            }
            if ended {
                if framer.saw_nothing() {
                    return Err(PluginError::protocol(format!(
                        "{what}: empty answer (the server may be shutting down)"
                    )));
                }
                let trailing = buf[pos.min(buf.len())..]
                    .iter()
                    .any(|b| !b.is_ascii_whitespace());
                if !framer.is_complete() || trailing {
                    return Err(PluginError::protocol(format!(
                        "{what}: torn answer: it ended in the middle of a message"
                    )));
                }
                return Ok(Flow::Continue);
            }
        }
    }

    /// Sends the next /recv before the answer that just ended is parsed, so the server prepares
    /// it meanwhile: its continuity suffix is the last real message of the answer, found by
    /// reading the answer's last messages only. Nothing is sent when the answer is not whole
    /// and well formed, or holds EOF (the window ended): then the usual path decides.
    fn prefetch(
        &mut self,
        receiver: &RecvClient,
        sid: &str,
        buf: &[u8],
        pos: usize,
        framer: &Framer,
        items: &[Item],
    ) {
        let trailing = buf[pos.min(buf.len())..]
            .iter()
            .any(|b| !b.is_ascii_whitespace());
        if self.stopped() || !framer.is_complete() || framer.saw_nothing() || trailing {
            return;
        }
        let format = self.http.config.format;
        let mut suffix = self.session.as_ref().and_then(|s| s.suffix.clone());
        for item in items.iter().rev() {
            let bytes = &buf[item.range.clone()];
            let parsed = match (&item.head, format) {
                (Some(head), _) => head.continuity(buf),
                (None, Format::Json) => std::str::from_utf8(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(parse_json),
                (None, Format::Bson) => parse_bson(bytes),
            };
            match parsed {
                Ok(parsed) if parsed.kind == "HEARTBEAT" => continue,
                Ok(parsed) => match (parsed.queue, parsed.seq) {
                    (Some(queue), Some(seq)) if parsed.kind != "EOF" => {
                        suffix = Some((queue.into_owned(), seq));
                        break;
                    }
                    _ => return,
                },
                Err(_) => return,
            }
        }
        let pending = receiver.send(
            false,
            sid,
            suffix.as_ref().map(|(q, s)| (q.as_str(), *s)),
            format,
        );
        self.prefetched = Some(Prefetched {
            sid: sid.to_owned(),
            suffix,
            pending,
        });
    }

    /// Parses the framed items, sends them as a chunk and drops their bytes from `buf`.
    /// Returns (EOF seen, consumer gone).
    fn emit(
        &mut self,
        buf: &mut Vec<u8>,
        pos: &mut usize,
        items: &mut Vec<Item>,
        received_at: i64,
        tx: &SyncSender<FetchMsg>,
        what: &str,
    ) -> PluginResult<(bool, bool)> {
        let format = self.http.config.format;
        let consumed = items.last().map_or(0, |item| item.range.end);
        let positions = self.pending_positions.then(|| self.next.clone());
        let mut builder = ChunkBuilder {
            // BSON bodies are converted into it: about as large as the answer (no regrowth).
            extra: match format {
                Format::Bson => self.spares.bytes.take(consumed + consumed / 4),
                Format::Json => Vec::new(),
            },
            bytes: Vec::new(),
            events: self.spares.events.take(items.len()),
            gaps: Vec::new(),
        };
        // Gaps found at a (re-)open come before the first message of the session.
        builder.gaps.extend(
            self.pending_gaps
                .drain(..)
                .map(|(range, count)| (0, range, count)),
        );
        let mut eof = false;
        let mut last: Option<(String, i64)> = None;
        let (raw, outcome) = match format {
            Format::Json => {
                // The answer's bytes go to the consumer as they are; the rest (a message
                // not yet whole) starts the next buffer, which gets its room on first use.
                let mut rest = self.spares.bytes.take(buf.capacity());
                rest.extend_from_slice(&buf[consumed..]);
                let head = std::mem::replace(buf, rest);
                let raw = if simdutf8::basic::from_utf8(&head).is_ok() {
                    // SAFETY: `head` was checked to be UTF-8 just above (by simdutf8, several
                    // times faster than the standard check on a whole answer).
                    unsafe { String::from_utf8_unchecked(head) }
                } else {
                    String::from_utf8(head).map_err(|e| {
                        PluginError::protocol(format!("{what}: the answer is not UTF-8: {e}"))
                    })?
                };
                let outcome = self.process(
                    &raw,
                    items,
                    |item: &Item| match &item.head {
                        Some(head) => Ok(head.parsed(&raw, item.range.clone())),
                        None => parse_json(raw.get(item.range.clone()).unwrap_or("")),
                    },
                    &mut builder,
                    &mut eof,
                    &mut last,
                    received_at,
                    what,
                );
                (raw, outcome)
            }
            Format::Bson => {
                let outcome = self.process(
                    "",
                    items,
                    |item: &Item| parse_bson(buf.get(item.range.clone()).unwrap_or(&[])),
                    &mut builder,
                    &mut eof,
                    &mut last,
                    received_at,
                    what,
                );
                buf.drain(..consumed);
                (String::new(), outcome)
            }
        };
        *pos -= consumed;
        items.clear();
        if let Some(last) = last {
            if let Some(session) = &mut self.session {
                session.suffix = Some(last);
            }
        }
        let mut closed = false;
        if !builder.events.is_empty() || eof || !builder.gaps.is_empty() {
            // Written from checked text, numbers and ASCII: UTF-8 (checked again, fast).
            let extra = if simdutf8::basic::from_utf8(&builder.extra).is_ok() {
                // SAFETY: checked just above.
                unsafe { String::from_utf8_unchecked(builder.extra) }
            } else {
                String::from_utf8_lossy(&builder.extra).into_owned()
            };
            let chunk = Chunk {
                raw,
                extra,
                bytes: builder.bytes,
                events: builder.events,
                positions,
                eof,
                gaps: builder.gaps,
            };
            self.pending_positions = false;
            if !chunk.events.is_empty() {
                // News after the last "nothing ready": not drained until the server says so
                // again.
                self.counters.drained.store(false, Ordering::SeqCst);
            }
            closed = tx.send(FetchMsg::Chunk(chunk)).is_err();
        }
        outcome.map(|()| (eof, closed))
    }

    #[allow(clippy::too_many_arguments)]
    fn process<'b>(
        &mut self,
        raw: &str,
        items: &'b [Item],
        parse: impl Fn(&'b Item) -> Result<Parsed<'b>, String>,
        builder: &mut ChunkBuilder,
        eof: &mut bool,
        last: &mut Option<(String, i64)>,
        received_at: i64,
        what: &str,
    ) -> PluginResult<()> {
        let config = Arc::clone(&self.http.config);
        for item in items {
            let parsed = parse(item).map_err(|e| {
                PluginError::protocol(format!(
                    "{what}: undecodable message head: {e}{}",
                    self.after(last.as_ref())
                ))
            })?;
            match &*parsed.kind {
                "HEARTBEAT" => {
                    Counters::add(&self.counters.heartbeats, 1);
                    // Written by the server only when no message is ready.
                    self.heard_idle = true;
                    continue;
                }
                "EOF" => {
                    *eof = true;
                    break;
                }
                _ => self.heard_idle = false,
            }
            let (Some(queue), Some(seq)) = (parsed.queue.as_deref(), parsed.seq) else {
                return Err(PluginError::protocol(format!(
                    "{what}: a {} message without queue or seq{}{}",
                    parsed.kind,
                    parsed
                        .queue
                        .as_deref()
                        .map(|q| format!(" (queue {q})"))
                        .unwrap_or_default(),
                    self.after(last.as_ref())
                )));
            };
            match last {
                Some((name, s)) if name == queue => *s = seq,
                _ => *last = Some((queue.to_owned(), seq)),
            }
            let Some(index) = config.queue_index(queue) else {
                log::debug(format!(
                    "HMB: a message of queue {queue}, which this consumer did not ask for"
                ));
                continue;
            };
            match self.next[index] {
                Some(next) if seq < next => {
                    Counters::add(&self.counters.duplicates, 1);
                    log::debug(format!(
                        "HMB: queue {queue}: seq {seq} came again (next is {next}); dropped"
                    ));
                    continue;
                }
                Some(next) if seq > next && !self.filtered[index] => {
                    self.report_gap(
                        queue,
                        next,
                        seq,
                        (seq - next) as u64,
                        "the server no longer held them: buffer overrun, qlen, or a restart",
                    );
                    // Before this message, where the missing ones were.
                    let at = builder.events.len();
                    builder.gaps.extend(
                        self.pending_gaps
                            .drain(..)
                            .map(|(range, count)| (at, range, count)),
                    );
                }
                _ => {}
            }
            if parsed.kind == "TOUCH" {
                // The queue-creation message `autocreate_queues` (or another client) sends:
                // bus bookkeeping, never an event, whichever session reads it.
                Counters::add(&self.counters.touches, 1);
                log::debug(format!(
                    "HMB: queue {queue} seq {seq}: a TOUCH message (queue creation), skipped"
                ));
                self.next[index] = Some(seq + 1);
                continue;
            }
            let micros = parsed.timestamp_micros().unwrap_or(received_at);
            if let Some(error) = builder.push(raw, index, seq, micros, &parsed) {
                self.report_undecodable(queue, seq, &parsed, &error);
            }
            // Only once the event is in the chunk: a message is never passed over.
            self.next[index] = Some(seq + 1);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_bson;
    use bson::doc;

    /// A BSON message whose string "PLACEHOLDER" is replaced by bytes that are not UTF-8.
    fn with_bad_string(document: bson::Document) -> Vec<u8> {
        let mut bytes = bson::to_vec(&document).unwrap();
        let at = bytes
            .windows(11)
            .position(|w| w == b"PLACEHOLDER")
            .expect("the placeholder");
        bytes[at..at + 11].copy_from_slice(b"ab\xff\xfe cd \xc3(x");
        bytes
    }

    fn builder() -> ChunkBuilder {
        ChunkBuilder {
            extra: Vec::new(),
            bytes: Vec::new(),
            events: Vec::new(),
            gaps: Vec::new(),
        }
    }

    fn chunk(builder: ChunkBuilder) -> Chunk {
        Chunk {
            raw: String::new(),
            extra: String::from_utf8(builder.extra).expect("the converted bodies are text"),
            bytes: builder.bytes,
            events: builder.events,
            positions: None,
            eof: false,
            gaps: builder.gaps,
        }
    }

    #[test]
    fn a_body_that_is_not_utf8_is_kept_as_its_bson_bytes_between_converted_ones() {
        let good = |n: i32| {
            bson::to_vec(
                &doc! {"type": "NOTICE", "queue": "Q", "topic": "T", "seq": n,
                "starttime": "2024-01-01T00:00:00Z", "data": {"n": n}},
            )
            .unwrap()
        };
        let bad = with_bad_string(doc! {"type": "NOTICE", "queue": "Q", "topic": "T",
        "seq": 1_i32, "starttime": "2024-01-01T00:00:01Z",
        "data": {"n": 1_i32, "names": ["ok", "PLACEHOLDER"]}});
        let hermes = with_bad_string(doc! {"type": "EVENT", "queue": "Q", "topic": "base",
        "seq": 3_i32, "data": {"evcategory": "base", "eventtype": "added",
        "objattrs": {"name": "PLACEHOLDER"}}});
        let messages = [good(0), bad.clone(), good(2), hermes.clone()];
        let mut builder = builder();
        let mut errors = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let parsed = parse_bson(message).expect("the head is readable");
            let micros = parsed.timestamp_micros().unwrap_or(-1);
            errors.push(builder.push("", 0, i as i64, micros, &parsed));
        }
        assert!(errors[0].is_none() && errors[2].is_none());
        assert!(errors[1].as_deref().unwrap().contains("not UTF-8"));
        let chunk = chunk(builder);
        let bodies: Vec<Body<'_>> = chunk.events.iter().map(|e| chunk.body(e.body)).collect();
        // The whole message, byte for byte, since its body is the whole message.
        assert_eq!(bodies[1], Body::Bytes(&bad));
        // A Hermes event: its data document, byte for byte.
        let data = match parse_bson(&hermes).unwrap().body {
            BodySrc::BsonDoc(data) => data,
            other => panic!("{other:?}"),
        };
        assert!(data.len() < hermes.len());
        assert_eq!(bodies[3], Body::Bytes(data));
        // Its neighbours are untouched JSON (nothing of the failed conversion left behind).
        for (i, n) in [(0, 0), (2, 2)] {
            let Body::Json(text) = bodies[i] else {
                panic!("{:?}", bodies[i])
            };
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            assert_eq!(value["data"]["n"], n, "{text}");
        }
        // Category and timestamp as usual.
        assert_eq!(chunk.text(chunk.events[1].category), "T");
        assert_eq!(chunk.events[1].micros, 1_704_067_201_000_000);
        assert_eq!(chunk.text(chunk.events[3].category), "base");
        // The warning names the field at fault.
        assert_eq!(
            crate::bson_scan::why_undecodable(&bad),
            "field `data.names.1`: undecodable BSON: a string that is not UTF-8"
        );
    }

    #[test]
    fn a_topic_that_is_not_utf8_keeps_the_event_with_the_whole_message_raw() {
        let bad = with_bad_string(
            doc! {"type": "NOTICE", "queue": "Q", "topic": "PLACEHOLDER",
            "seq": 7_i32, "data": {"evcategory": "base", "eventtype": "added"}},
        );
        let parsed = parse_bson(&bad).expect("the head is readable");
        assert_eq!(parsed.category(), "ab\u{fffd}\u{fffd} cd \u{fffd}(x");
        assert!(!parsed.body_is_data, "the topic is in the body");
        let mut builder = builder();
        assert!(builder.push("", 0, 7, 0, &parsed).is_some());
        let chunk = chunk(builder);
        assert_eq!(chunk.body(chunk.events[0].body), Body::Bytes(&bad));
    }

    #[test]
    fn an_unreadable_head_is_an_error_naming_queue_and_seq() {
        let bad_type = with_bad_string(
            doc! {"type": "PLACEHOLDER", "queue": "Q", "seq": 12_i32, "data": {"n": 1_i32}},
        );
        let error = parse_bson(&bad_type).unwrap_err();
        assert!(error.contains("not UTF-8"), "{error}");
        assert!(error.contains("queue Q seq 12"), "{error}");
        let bad_queue =
            with_bad_string(doc! {"type": "NOTICE", "queue": "PLACEHOLDER", "seq": 13_i32});
        let error = parse_bson(&bad_queue).unwrap_err();
        assert!(error.contains("seq 13"), "{error}");
        assert!(error.contains("queue \"ab\u{fffd}"), "{error}");
    }
}
