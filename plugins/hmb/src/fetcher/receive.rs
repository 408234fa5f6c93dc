//! One request (/recv or /stream) and its answer: read with deadlines, framed, parsed into a
//! chunk and handed to the consumer; the next /recv sent before an answer is parsed.

use super::chunk::ChunkBuilder;
use super::*;

impl Fetcher {
    /// One /recv (or one /stream connection): reads, frames, parses and sends chunks.
    pub(super) fn receive_once(&mut self, tx: &SyncSender<FetchMsg>) -> PluginResult<Flow> {
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

    pub(super) fn receive_with(
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
    pub(super) fn prefetch(
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
    pub(super) fn emit(
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
        // TOUCH messages skipped in this answer move the position without an event: the
        // consumer hears it with the chunk (its lag must not count them for ever).
        let touches_before = self.counters.touches.load(Ordering::Relaxed);
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
                self.keep_last_messages(raw.as_bytes());
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
                self.keep_last_messages(buf);
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
        let skipped = self.counters.touches.load(Ordering::Relaxed) != touches_before;
        if !builder.events.is_empty() || eof || !builder.gaps.is_empty() || skipped {
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
                after: self.next.clone(),
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
    pub(super) fn process<'b>(
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
                self.note_last(index, seq, &item.range);
                continue;
            }
            let micros = parsed.timestamp_micros().unwrap_or(received_at);
            if let Some(error) = builder.push(raw, index, seq, micros, &parsed) {
                self.report_undecodable(queue, seq, &parsed, &error);
            }
            // Only once the event is in the chunk: a message is never passed over.
            self.next[index] = Some(seq + 1);
            self.note_last(index, seq, &item.range);
        }
        Ok(())
    }

    /// Queue `index`'s message `seq` lies at `range` of the answer in hand.
    fn note_last(&mut self, index: usize, seq: i64, range: &std::ops::Range<usize>) {
        if self.last_range.len() <= index {
            self.last_range.resize(index + 1, None);
        }
        self.last_range[index] = Some((seq, range.clone()));
    }

    /// Copies each queue's last message of the answer in hand (`bytes`, the answer's buffer)
    /// into `last_message`: one copy per queue and answer.
    fn keep_last_messages(&mut self, bytes: &[u8]) {
        if self.last_message.len() < self.last_range.len() {
            self.last_message.resize(self.last_range.len(), None);
        }
        for (index, noted) in self.last_range.iter_mut().enumerate() {
            if let Some((seq, range)) = noted.take() {
                let kept = self.last_message[index].get_or_insert_with(|| (seq, Vec::new()));
                kept.0 = seq;
                kept.1.clear();
                kept.1
                    .extend_from_slice(bytes.get(range).unwrap_or_default());
            }
        }
    }
}
