//! The `HmbConsumer` class: positioning, polling, offsets, operator commands.

use crate::client::Http;
use crate::fetcher::{Chunk, Counters, FetchMsg, Fetcher, FetcherHandle, StartSeq};
use crate::offset::{format_composite, parse_composite};
use crate::settings::{self, Config, HmbSettings};
use buslink_plugin_api::{
    log, CommandInfo, Consumer, ConsumerClass, Context, Event, EventBatch, Offset, OffsetRef,
    PluginError, PluginResult, PollStatus, Timestamps,
};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consumes queues of an HMB (httpmsgbus) bus.
pub struct HmbConsumer {
    config: Arc<Config>,
    http: Option<Http>,
    /// The capabilities `/features` listed at the last open.
    capabilities: Vec<String>,
    /// A capability the settings need that the server lacks: refused at positioning.
    refusal: Option<PluginError>,
    timeout: Option<Duration>,
    counters: Arc<Counters>,
    /// The client id the server gave, reused by later sessions.
    cid: Option<String>,
    fetcher: Option<FetcherHandle>,
    current: Option<Chunk>,
    cursor: usize,
    /// The next gap of `current` to report.
    gap_cursor: usize,
    /// Per queue: the next seq after the last event handed to the host.
    positions: Vec<Option<i64>>,
    /// Per queue: where the session started (`None`: the server chose), for a queue that has
    /// handed nothing over yet.
    started_at: Vec<Option<i64>>,
    /// Draining: every queue's end as `/info` first answered it; the drain stops there (it
    /// never chases a producer faster than itself).
    drain_target: Option<Vec<i64>>,
    offset_text: String,
    pending_error: Option<PluginError>,
    ended: bool,
    /// `buslink run --once`: `poll` answers only with events, the server's word that nothing
    /// is ready (`Drained`), or an error.
    stop_when_drained: bool,
    /// A session was opened before (this consumer's queues existed on the server): a queue
    /// not found afterwards is the server's loss (a restart), retried, not a config error.
    opened_before: bool,
    /// Since when the `/info` the lag is read from has failed or not answered within
    /// [`INFO_WAIT`] (`None`: it answered last time): a server that accepts connections but
    /// answers nothing (frozen) is seen so within seconds, not after `read_timeout_ms`.
    info_silent_since: Option<std::time::Instant>,
}

/// How long the `/info` asked for the lag may take: past it, the lag is unknown (a reader
/// thread blocked on a frozen server for `read_timeout_ms` kept the last figure on show).
const INFO_WAIT: Duration = Duration::from_secs(2);

const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "features",
        usage: "",
        help: "print the server's /features answer (capabilities, software)",
    },
    CommandInfo {
        name: "info",
        usage: "",
        help: "print the server's /info answer (every queue's seq and time range)",
    },
    CommandInfo {
        name: "status",
        usage: "",
        help: "print the server's /status answer (every session)",
    },
    CommandInfo {
        name: "send",
        usage: "--queue Q --type T [--topic X] DATA|-",
        help: "publish one test message whose data is the JSON text DATA (- reads stdin), \
               from a session of its own (a server-chosen cid, so consumers receive it)",
    },
];

impl ConsumerClass for HmbConsumer {
    const NAME: &'static str = "HmbConsumer";
    const DESCRIPTION: &'static str =
        "HMB (httpmsgbus) queues over HTTP: JSON or BSON sessions, reconnection without loss or \
         repetition, gap reports";
    const SETTINGS_DOC: &'static str = settings::SETTINGS_DOC;
    const COMMANDS: &'static [CommandInfo] = COMMANDS;

    type Settings = HmbSettings;

    fn validate(settings: &HmbSettings) -> PluginResult<()> {
        settings::validate(settings)
    }

    fn new(settings: HmbSettings, context: &Context) -> PluginResult<Self> {
        let config = Arc::new(settings::resolve(settings, context)?);
        let queues = config.queues.len();
        Ok(HmbConsumer {
            config,
            http: None,
            capabilities: Vec::new(),
            refusal: None,
            timeout: None,
            counters: Arc::new(Counters::default()),
            cid: None,
            fetcher: None,
            current: None,
            cursor: 0,
            gap_cursor: 0,
            positions: vec![None; queues],
            started_at: vec![None; queues],
            info_silent_since: None,
            drain_target: None,
            offset_text: String::new(),
            pending_error: None,
            ended: false,
            stop_when_drained: false,
            opened_before: false,
        })
    }
}

/// The capabilities the settings need, each with the setting that needs it.
fn needed_capabilities(config: &Config) -> Vec<(&'static str, String)> {
    let mut needed = vec![(config.format.capability(), "format".to_owned())];
    if config.stream {
        needed.push(("STREAM", "stream".to_owned()));
    }
    for queue in &config.queues {
        if queue.params.has_window() {
            needed.push(("WINDOW", format!("queues.{}", queue.name)));
        }
        if queue.params.filter.is_some() {
            needed.push(("FILTER", format!("queues.{}.filter", queue.name)));
        }
    }
    needed
}

impl HmbConsumer {
    fn http(&self) -> PluginResult<&Http> {
        self.http.as_ref().ok_or_else(|| {
            PluginError::internal("the consumer is not open: the host must call open first")
        })
    }

    fn has_info(&self) -> bool {
        self.capabilities.iter().any(|c| c == "INFO")
    }

    fn stop_fetcher(&mut self) {
        self.fetcher = None;
        self.current = None;
        self.cursor = 0;
        self.gap_cursor = 0;
        self.pending_error = None;
        self.ended = false;
    }

    /// Opens a session at `start` and starts fetching.
    fn start(&mut self, start: Vec<StartSeq>) -> PluginResult<()> {
        self.stop_fetcher();
        if let Some(refusal) = &self.refusal {
            return Err(refusal.clone());
        }
        self.started_at = start
            .iter()
            .map(|s| match s {
                StartSeq::Exact { seq, .. } => Some(*seq),
                StartSeq::Server(_) => None,
            })
            .collect();
        let http = self.http()?.clone();
        let mut fetcher = Fetcher::new(
            http,
            Arc::clone(&self.counters),
            start,
            self.cid.clone(),
            self.has_info(),
        );
        fetcher.open_session(!self.opened_before)?;
        self.opened_before = true;
        // Where the session really starts (past the TOUCH that created a queue, say).
        for (started, next) in self.started_at.iter_mut().zip(fetcher.next_positions()) {
            if next.is_some() {
                *started = *next;
            }
        }
        self.cid = fetcher.cid.clone();
        self.positions = vec![None; self.config.queues.len()];
        self.fetcher = Some(fetcher.spawn()?);
        Ok(())
    }

    /// The configured start of a queue (`queues.NAME.seq`), else its oldest message.
    fn configured_start(&self, index: usize, oldest: Option<i64>) -> StartSeq {
        match self.config.queues[index].params.seq {
            Some(seq) if seq >= 0 => StartSeq::Exact { seq, known: false },
            Some(seq) => StartSeq::Server(Some(seq)),
            None => StartSeq::Exact {
                seq: oldest.unwrap_or(0),
                known: false,
            },
        }
    }

    /// `seek` to a seq past the queue's next one (`endseq` of /info, when the server offers
    /// it) names no message, now or next: refused. The next seq itself is accepted (the next
    /// message), and so is one older than the oldest held (the messages between are gone: the
    /// first read reports the gap). A resume (`seek_after`) is never refused here: a server
    /// that lost its queues is reported by the session, and new messages read.
    fn refuse_beyond_the_end(&self, seq: i64) -> PluginResult<()> {
        if seq < 0 || self.config.queues.len() != 1 || !self.has_info() {
            return Ok(());
        }
        let queue = &self.config.queues[0].name;
        let info = self.http()?.info()?;
        let Some(end) = info.queue.get(queue).and_then(|held| held.endseq) else {
            return Ok(());
        };
        let end = end as i64;
        if seq > end {
            return Err(PluginError::offset_not_found(format!(
                "seq {seq} is beyond the end of queue {queue} (its next message will be seq \
                 {end})"
            )));
        }
        Ok(())
    }

    /// Every queue's oldest held seq, from /info (when the server offers it).
    fn oldest(&self) -> PluginResult<Vec<Option<i64>>> {
        if !self.has_info() {
            return Ok(vec![None; self.config.queues.len()]);
        }
        let info = self.http()?.info()?;
        Ok(self
            .config
            .queues
            .iter()
            .map(|q| {
                info.queue
                    .get(&q.name)
                    .and_then(|held| held.startseq)
                    .map(|s| s as i64)
            })
            .collect())
    }

    fn start_at_composite(&mut self, text: &str) -> PluginResult<()> {
        let pairs = parse_composite(text).map_err(|e| {
            PluginError::offset_not_found(format!(
                "offset {text:?} is not an HMB position (QUEUE=SEQ,...): {e}"
            ))
        })?;
        for (name, _) in &pairs {
            if self.config.queue_index(name).is_none() {
                log::warn(format!(
                    "HMB: the offset names queue {name}, which the settings no longer list; \
                     ignored"
                ));
            }
        }
        let missing: Vec<usize> = (0..self.config.queues.len())
            .filter(|&i| !pairs.iter().any(|(n, _)| *n == self.config.queues[i].name))
            .collect();
        let oldest = if missing.is_empty() {
            vec![None; self.config.queues.len()]
        } else {
            self.oldest()?
        };
        let start = (0..self.config.queues.len())
            .map(|i| {
                let name = &self.config.queues[i].name;
                match pairs.iter().find(|(n, _)| n == name) {
                    Some((_, seq)) => StartSeq::Exact {
                        seq: *seq,
                        known: true,
                    },
                    None => {
                        log::info(format!(
                            "HMB: the offset does not name queue {name} (new in the settings?); \
                             it starts at its configured start"
                        ));
                        self.configured_start(i, oldest[i])
                    }
                }
            })
            .collect();
        self.start(start)
    }

    fn seek_int(&mut self, seq: i64) -> PluginResult<()> {
        if self.config.queues.len() != 1 {
            let names: Vec<&str> = self.config.queues.iter().map(|q| q.name.as_str()).collect();
            return Err(PluginError::offset_not_found(format!(
                "an integer offset ({seq}) names a seq of one queue, but this consumer reads {} \
                 queues; use a position like \"{}\"",
                names.len(),
                names
                    .iter()
                    .map(|n| format!("{n}=0"))
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        }
        let start = if seq >= 0 {
            StartSeq::Exact { seq, known: true }
        } else {
            StartSeq::Server(Some(seq))
        };
        self.start(vec![start])
    }

    /// Takes the next chunk from the fetcher, waiting until `deadline` (`None`: forever).
    /// `Ok(false)`: nothing came in time.
    fn next_chunk(&mut self, deadline: Option<Instant>) -> PluginResult<bool> {
        let Some(fetcher) = &self.fetcher else {
            return Err(PluginError::internal(
                "poll before a positioning call: the host must seek first",
            ));
        };
        let received = match deadline {
            None => fetcher
                .rx
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(deadline) => fetcher
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(FetchMsg::Chunk(mut chunk)) => {
                if let Some(positions) = chunk.positions.take() {
                    for (slot, position) in self.positions.iter_mut().zip(positions) {
                        if position.is_some() {
                            *slot = position;
                        }
                    }
                }
                self.current = Some(chunk);
                self.cursor = 0;
                self.gap_cursor = 0;
                self.gap_cursor = 0;
                Ok(true)
            }
            Ok(FetchMsg::Failed(error)) => {
                self.fetcher = None;
                Err(error)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(RecvTimeoutError::Disconnected) => {
                self.fetcher = None;
                Err(PluginError::connect(
                    "the HMB fetch thread stopped; the host re-opens the consumer",
                ))
            }
        }
    }

    /// Moves events of the current chunk into `batch` (only those of `category` when given,
    /// the others are passed over) until the batch is full, `limit` events were added, or the
    /// chunk is used up. Returns how many were added.
    fn drain(&mut self, batch: &mut EventBatch, category: Option<&str>, limit: usize) -> usize {
        let single = self.config.queues.len() == 1;
        let HmbConsumer {
            current,
            cursor,
            gap_cursor,
            positions,
            offset_text,
            config,
            ended,
            fetcher,
            ..
        } = self;
        let Some(chunk) = current.as_ref() else {
            return 0;
        };
        // The chunk's gaps, each before the event it was found at (or after the last one).
        let mut report_gaps = |batch: &mut EventBatch, upto: usize| {
            while let Some((at, range, count)) = chunk.gaps.get(*gap_cursor) {
                if *at > upto {
                    break;
                }
                batch.report_gap(range, *count);
                *gap_cursor += 1;
            }
        };
        let mut added = 0;
        // The events of one read share their time when the bus gives none: converted once.
        let mut times = Timestamps::default();
        while *cursor < chunk.events.len() && added < limit && !batch.is_full() {
            report_gaps(batch, *cursor);
            let event = chunk.events[*cursor];
            *cursor += 1;
            if let Some(slot) = positions.get_mut(event.queue) {
                *slot = Some(event.seq + 1);
            }
            let event_category = chunk.text(event.category);
            if category.is_some_and(|wanted| wanted != event_category) {
                continue;
            }
            let offset = if single {
                OffsetRef::Int(event.seq)
            } else {
                format_composite(
                    config
                        .queues
                        .iter()
                        .zip(positions.iter())
                        .filter_map(|(q, p)| p.map(|p| (q.name.as_str(), p))),
                    offset_text,
                );
                OffsetRef::String(offset_text)
            };
            batch.push(Event {
                offset,
                timestamp: times.at(event.micros),
                category: event_category,
                body: chunk.body(event.body),
            });
            added += 1;
        }
        if *cursor >= chunk.events.len() {
            report_gaps(batch, usize::MAX);
            // Past messages skipped after the last event (a TOUCH): the lag must not count
            // them.
            for (slot, after) in positions.iter_mut().zip(&chunk.after) {
                if let Some(after) = after {
                    *slot = Some(slot.map_or(*after, |at| at.max(*after)));
                }
            }
            if chunk.eof {
                *ended = true;
            }
            // Its buffers go back to the fetcher, for the next answers.
            if let (Some(done), Some(fetcher)) = (current.take(), fetcher.as_ref()) {
                fetcher.spares.give_chunk(done);
            }
            *current = None;
            *cursor = 0;
            *gap_cursor = 0;
        }
        added
    }

    /// Whether every queue's end, as `/info` answered it the first time it was asked while
    /// draining, is at what was handed over (where
    /// that can be told: the server offers INFO, the queue is not filtered or windowed, its
    /// position is known; otherwise the server's word is taken as it is). An `/info` that
    /// fails is an error: no positive answer.
    fn end_reached(&mut self) -> PluginResult<bool> {
        if !self.has_info() {
            return Ok(true);
        }
        if self.drain_target.is_none() {
            let info = self.http()?.info()?;
            self.drain_target = Some(
                self.config
                    .queues
                    .iter()
                    .map(|queue| {
                        info.queue
                            .get(&queue.name)
                            .and_then(|held| held.endseq)
                            .map_or(0, |end| end as i64)
                    })
                    .collect(),
            );
        }
        let target = self.drain_target.clone().unwrap_or_default();
        for (index, queue) in self.config.queues.iter().enumerate() {
            if queue.params.is_filtered() || queue.params.has_window() {
                continue;
            }
            let Some(next) = self.positions[index].or(self.started_at[index]) else {
                continue;
            };
            if next < target.get(index).copied().unwrap_or(0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The shared loop of `poll` and `find_next_event_of_category`.
    fn fill(
        &mut self,
        batch: &mut EventBatch,
        category: Option<&str>,
        limit: usize,
    ) -> PluginResult<PollStatus> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        let mut deadline = self.timeout.map(|t| Instant::now() + t);
        let mut added = 0;
        // Draining (`--once`): the last news from the fetcher; without a word from the server
        // that nothing is ready, `poll` waits for one this long after it.
        let mut news_at = Instant::now();
        let patience = self.config.read_timeout.saturating_mul(2);
        loop {
            added += self.drain(batch, category, limit - added);
            if added >= limit || batch.is_full() {
                return Ok(PollStatus::Ready);
            }
            if self.ended {
                return Ok(if added > 0 {
                    PollStatus::Ready
                } else {
                    PollStatus::Ended
                });
            }
            // Fill the batch with what is already fetched; wait only while it is empty.
            let wait = if added > 0 {
                Some(Instant::now())
            } else {
                deadline
            };
            match self.next_chunk(wait) {
                Ok(true) => {
                    news_at = Instant::now();
                    continue;
                }
                // Events, or a gap alone: news for the host.
                Ok(false) if added > 0 || !batch.is_blank() => return Ok(PollStatus::Ready),
                // The server's own word: nothing more was ready (a heartbeat, a /recv that
                // ended before its limit, /info at the open). Draining, /info confirms it where
                // the server offers it: a server that reads its queues from disk may end an
                // answer with less than is there.
                Ok(false) if self.counters.drained.load(Ordering::SeqCst) => {
                    if !self.stop_when_drained || self.end_reached()? {
                        return Ok(PollStatus::Drained);
                    }
                    if news_at.elapsed() >= patience {
                        return Err(PluginError::connect(format!(
                            "HMB {}: the server says nothing more is ready, but its /info end \
                             is not reached and nothing came for {} ms: cannot tell whether \
                             the bus is drained",
                            self.http()?.base(),
                            patience.as_millis()
                        )));
                    }
                    deadline = Some(Instant::now() + Duration::from_millis(20));
                }
                // Draining without that word yet (a backlog on its way, a re-open, or a server
                // gone quiet mid-answer): wait for it, as long as two reads may take.
                Ok(false) if self.stop_when_drained && news_at.elapsed() < patience => {
                    deadline = Some(Instant::now() + Duration::from_millis(20));
                }
                Ok(false) if self.stop_when_drained => {
                    let failing = self.counters.failing();
                    return Err(PluginError::connect(format!(
                        "HMB {}: no word from the server for {} ms that nothing more is ready \
                         (a heartbeat or a whole answer){}: cannot tell whether the bus is \
                         drained",
                        self.http()?.base(),
                        patience.as_millis(),
                        failing.map(|f| format!("; {f}")).unwrap_or_default()
                    )));
                }
                Ok(false) => {
                    // While the fetcher is re-opening after failures nothing can be told: a
                    // connection error (the daemon shows it waiting for the bus and re-opens).
                    if let Some(failing) = self.counters.failing() {
                        return Err(PluginError::connect(format!(
                            "{failing}; cannot tell whether the bus is drained"
                        )));
                    }
                    return Ok(PollStatus::Idle);
                }
                Err(error) if added > 0 => {
                    self.pending_error = Some(error);
                    return Ok(PollStatus::Ready);
                }
                Err(error) => return Err(error),
            }
        }
    }

    fn pretty(value: &serde_json::Value) -> String {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    }

    fn send_command(&mut self, args: &[String]) -> PluginResult<String> {
        let usage = "usage: send --queue Q --type T [--topic X] DATA|-";
        let (mut queue, mut kind, mut topic, mut data) = (None, None, None, None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next().cloned().ok_or_else(|| {
                    PluginError::config(format!("send: {name} needs a value; {usage}"))
                })
            };
            match arg.as_str() {
                "--queue" => queue = Some(value("--queue")?),
                "--type" => kind = Some(value("--type")?),
                "--topic" => topic = Some(value("--topic")?),
                other if data.is_none() && (other == "-" || !other.starts_with("--")) => {
                    data = Some(other.to_owned())
                }
                other => {
                    return Err(PluginError::config(format!(
                        "send: unexpected argument {other:?}; {usage}"
                    )))
                }
            }
        }
        let (Some(queue), Some(kind), Some(data)) = (queue, kind, data) else {
            return Err(PluginError::config(format!(
                "send: --queue, --type and DATA are required; {usage}"
            )));
        };
        let text = if data == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| PluginError::config(format!("send: cannot read stdin: {e}")))?;
            text
        } else {
            data
        };
        let data: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            PluginError::config(format!(
                "send: DATA must be JSON ({e}); quote a plain string as '\"text\"'"
            ))
        })?;
        let mut message = serde_json::json!({"type": kind, "queue": queue, "data": data});
        if let Some(topic) = &topic {
            message["topic"] = topic.clone().into();
        }
        let http = self.http()?.clone();
        let format = self.config.format;
        let ack = http.open(format, &serde_json::json!({}))?;
        http.send(format, &ack.sid, &[message])?;
        Ok(format!(
            "sent 1 message (type {kind}{}) to queue {queue} on {} ({} session, cid {})",
            topic.map(|t| format!(", topic {t}")).unwrap_or_default(),
            http.base(),
            format.capability(),
            ack.cid
        ))
    }
}

impl Consumer for HmbConsumer {
    fn open(&mut self) -> PluginResult<()> {
        let http = match &self.http {
            Some(http) => http.clone(),
            None => {
                let http = Http::new(Arc::clone(&self.config))?;
                self.http = Some(http.clone());
                http
            }
        };
        let (capabilities, answer) = http.features()?;
        // The server answers: earlier failures say nothing about the session to come.
        self.counters.recovered();
        let missing: Vec<String> = needed_capabilities(&self.config)
            .into_iter()
            .filter(|(capability, _)| !capabilities.iter().any(|c| c == capability))
            .map(|(capability, setting)| format!("{capability} (needed by `{setting}`)"))
            .collect();
        self.refusal = (!missing.is_empty()).then(|| {
            PluginError::config(format!(
                "the HMB server at {} lacks {}; it offers {} ({})",
                http.base(),
                missing.join(", "),
                capabilities.join(", "),
                answer
                    .get("software")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown software")
            ))
        });
        self.capabilities = capabilities;
        Ok(())
    }

    fn close(&mut self) -> PluginResult<()> {
        self.stop_fetcher();
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        let oldest = self.oldest()?;
        let start = (0..self.config.queues.len())
            .map(|i| self.configured_start(i, oldest[i]))
            .collect();
        self.start(start)
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.start(vec![StartSeq::Server(Some(-1)); self.config.queues.len()])
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        match offset {
            Offset::Int(seq) => {
                self.refuse_beyond_the_end(*seq)?;
                self.seek_int(*seq)
            }
            Offset::String(text) => self.start_at_composite(text),
            other => Err(PluginError::offset_not_found(format!(
                "HMB offsets are a seq (one queue) or \"QUEUE=SEQ,...\" (several), not a {} \
                 offset like {other}",
                other.type_name()
            ))),
        }
    }

    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        match offset {
            Offset::Int(seq) if *seq >= 0 => self.seek_int(seq.saturating_add(1)),
            // A composite offset already holds every queue's next seq after its event.
            Offset::String(text) => self.start_at_composite(text),
            other => Err(PluginError::offset_not_found(format!(
                "cannot resume after offset {other}: HMB offsets are a seq >= 0 (one queue) or \
                 \"QUEUE=SEQ,...\" (several)"
            ))),
        }
    }

    /// The message at `last` (one queue; a composite offset does not say which queue's event
    /// was last) is asked for again: when it carries a `starttime` (the event's timestamp)
    /// and that is not `timestamp`, the queue holds another message under that seq now (a
    /// server restarted without its messages and written to since): a data error, never a
    /// silent resume in the middle of the new queue. A message without `starttime` (its
    /// timestamp was the time it was received), a seq no longer held or a server that cannot
    /// be asked cannot tell: accepted (the open's `/info` check still sees a queue that ends
    /// before the position).
    fn check_position(
        &mut self,
        last: &Offset,
        timestamp: chrono::DateTime<chrono::Utc>,
    ) -> PluginResult<()> {
        let (Offset::Int(seq), [queue]) = (last, self.config.queues.as_slice()) else {
            return Ok(());
        };
        let format = self.config.format;
        let Ok(Some((at, bytes))) = self.http()?.message_at(format, &queue.name, *seq) else {
            return Ok(());
        };
        if at != *seq {
            return Ok(());
        }
        let held_at = crate::client::message_value(format, &bytes)
            .and_then(|message| {
                let start = message.get("starttime")?.as_str()?.to_owned();
                chrono::DateTime::parse_from_rfc3339(&start).ok()
            })
            .map(|t| t.timestamp_micros());
        match held_at {
            Some(micros) if micros != timestamp.timestamp_micros() => {
                Err(PluginError::data(format!(
                    "HMB {}: queue {} holds another message at seq {seq} than the one handled \
                     there (its starttime {}, the cache's {}): the queue was made anew (a \
                     server restarted without its messages and written to since); set where to \
                     go on with `buslink offsets set`",
                    self.config.base,
                    queue.name,
                    chrono::DateTime::from_timestamp_micros(micros)
                        .map_or_else(|| micros.to_string(), |t| t.to_rfc3339()),
                    timestamp.to_rfc3339()
                )))
            }
            _ => Ok(()),
        }
    }

    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        match offset {
            OffsetRef::Int(seq) => Some(Offset::Int(seq.saturating_add(1))),
            _ => None,
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.timeout = timeout;
        Ok(())
    }

    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.stop_when_drained = stop;
        Ok(())
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        self.fill(batch, None, usize::MAX)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        self.counters.snapshot()
    }

    /// The fetcher's requests have failed for a second and none succeeded since (a server
    /// down, frozen or failing): said at once, also while the host still handles events read
    /// before, instead of at the next poll.
    ///
    /// Also a server whose `/info` (asked for the lag every second) has not answered within 2 s
    /// for max(timeout, 5 s): one frozen while the fetcher waits out a long poll.
    fn held_up(&mut self) -> Option<String> {
        self.counters
            .failing_for(Duration::from_secs(1))
            .or_else(|| {
                let since = self.info_silent_since?;
                let patience = self.timeout.unwrap_or_default().max(Duration::from_secs(5));
                (since.elapsed() >= patience).then(|| {
                    format!(
                        "{}: the server has not answered /info within {} s for {} s",
                        self.config.base,
                        INFO_WAIT.as_secs(),
                        since.elapsed().as_secs()
                    )
                })
            })
    }

    /// The messages after what was handed over, from `/info` (each queue's `endseq`, last + 1,
    /// less this consumer's next seq): `None` when the server has no INFO, a session is
    /// failing, a queue's position is not known yet, a queue is filtered (its `endseq` counts
    /// messages this consumer never gets) or windowed (it stops before the end), or a `cid`
    /// is configured (the server never sends a client its own messages). Messages skipped
    /// (TOUCH) move the position as events do.
    fn lag(&mut self) -> Option<u64> {
        if !self.has_info() || self.counters.failing().is_some() {
            return None;
        }
        // A cid given in the settings may be a producer's: the server never sends a client
        // its own messages, which `/info` counts all the same.
        if self.config.cid.is_some()
            || self
                .config
                .queues
                .iter()
                .any(|q| q.params.is_filtered() || q.params.has_window())
        {
            return None;
        }
        let info = match self.http.as_ref()?.info_within(INFO_WAIT) {
            Ok(info) => {
                self.info_silent_since = None;
                info
            }
            Err(_) => {
                self.info_silent_since
                    .get_or_insert_with(std::time::Instant::now);
                return None;
            }
        };
        let mut lag = 0u64;
        for ((queue, next), started) in self
            .config
            .queues
            .iter()
            .zip(&self.positions)
            .zip(&self.started_at)
        {
            let end = info
                .queue
                .get(&queue.name)
                .and_then(|held| held.endseq)
                .map_or(0, |end| end as i64);
            lag += u64::try_from(end - next.or(*started)?).unwrap_or(0);
        }
        Some(lag)
    }

    fn query(&mut self, command: &str, args: &[String]) -> PluginResult<String> {
        let extra = |args: &[String]| {
            if args.is_empty() {
                Ok(())
            } else {
                Err(PluginError::config(format!(
                    "{command} takes no arguments (got {})",
                    args.join(" ")
                )))
            }
        };
        match command {
            "features" | "info" | "status" => {
                extra(args)?;
                Ok(Self::pretty(&self.http()?.get_json(command)?))
            }
            "send" => self.send_command(args),
            other => Err(PluginError::config(format!(
                "HmbConsumer has no command '{other}' (it has: features, info, status, send)"
            ))),
        }
    }

    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        Ok(self.fill(found, Some(category), 1)? == PollStatus::Ready)
    }
}
