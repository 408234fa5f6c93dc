//! Opening the session: `/open` with every queue's position, `/info` checks before a re-open
//! (queues reset by a server restart, gaps in filtered queues), and gap reports.

use super::*;

impl Fetcher {
    pub(super) fn asked(&self, index: usize) -> (Option<i64>, bool) {
        match (self.next[index], self.start[index]) {
            (Some(next), _) => (Some(next), true),
            (None, StartSeq::Exact { seq, known }) => (Some(seq), known),
            (None, StartSeq::Server(seq)) => (seq, false),
        }
    }

    /// Opens a session at the current positions. `first`: this consumer's first session (no
    /// session was opened before, by the host or the fetcher): a queue the server does not know
    /// is then a config error (a name it never had); afterwards the server lost it (a restart
    /// without its queues), which is transient.
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
            // Checked at this open (`check_positions`): the server is the one read from now.
            self.may_be_another_server = false;
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
    pub(super) fn check_positions(&mut self, asked: &mut [(Option<i64>, bool)]) -> Option<Info> {
        if !self.has_info || !asked.iter().any(|(seq, _)| seq.is_some_and(|s| s >= 0)) {
            return None;
        }
        // Asked twice: after a server restart the first request may go out on a connection
        // the old server left in the client's pool, and fail for that alone; without this
        // answer a queue made anew would be read on from the old position.
        let info = match self.http.info().or_else(|_| self.http.info()) {
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
            let made_anew = if known && want > end {
                Some(format!(
                    "the server's queue ends before it (next seq {end}): the server lost the \
                     queue (restarted without its messages?)"
                ))
            } else if known && self.may_be_another_server {
                self.other_message_at(index, &queue.name, want)
            } else {
                None
            };
            if let Some(why) = made_anew {
                let restart_at = oldest.unwrap_or(0);
                log::warn(format!(
                    "HMB {}: queue {}: expected seq {want}, but {why}; whatever the old server \
                     held from seq {want} on is lost, if it held any (count unknown: reported \
                     as a gap); reading the queue again from seq {restart_at}",
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

    /// Why queue `index` is not the queue read before, when the message before `want` (the
    /// last one received) is another message on the server now, or `None` (the same, or the
    /// server no longer holds it or cannot be asked: cannot tell).
    fn other_message_at(&self, index: usize, queue: &str, want: i64) -> Option<String> {
        let (seq, bytes) = self.last_message.get(index)?.as_ref()?;
        if *seq != want - 1 {
            return None;
        }
        let format = self.http.config.format;
        match self.http.message_at(format, queue, *seq) {
            Ok(Some((at, now))) if at == *seq && !same_message(format, &now, bytes) => {
                Some(format!(
                    "the server holds another message at seq {seq} than the one this consumer \
                 read there: the queue was made anew (the server restarted without its \
                 messages, and messages were written since)"
                ))
            }
            Ok(_) => None,
            Err(error) => {
                log::debug(format!(
                    "HMB: queue {queue}: asking for seq {seq} again before a re-open failed: \
                     {error}"
                ));
                None
            }
        }
    }

    pub(super) fn report_gap(
        &mut self,
        queue: &str,
        expected: i64,
        received: i64,
        lost: u64,
        why: &str,
    ) {
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
}

/// Whether two copies of a message as a server wrote them (`format`) say the same: compared
/// as JSON values, so that the order of a document's keys (a server encoding a map in its
/// own order each time) does not count; bytes that do not read as a message are compared
/// as bytes.
fn same_message(format: crate::settings::Format, a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    let value = |bytes| crate::client::message_value(format, bytes);
    match (value(a), value(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same_message;
    use crate::settings::Format;

    #[test]
    fn a_message_is_the_same_whatever_the_order_of_its_keys_and_another_is_not() {
        let json = |text: &str| text.as_bytes().to_vec();
        let a = json(r#"{"type":"EVENT","queue":"Q","seq":19,"data":{"n":19,"q":"Q"}}"#);
        let reordered = json(r#"{"seq":19,"queue":"Q","type":"EVENT","data":{"q":"Q","n":19}}"#);
        let other = json(r#"{"type":"EVENT","queue":"Q","seq":19,"data":{"n":219,"q":"Q"}}"#);
        assert!(same_message(Format::Json, &a, &reordered));
        assert!(!same_message(Format::Json, &a, &other));
        let bson = |doc: bson::Document| bson::to_vec(&doc).expect("BSON");
        let one = bson(bson::doc! {"type": "EVENT", "seq": 19_i64, "data": {"n": 19, "q": "Q"}});
        let two = bson(bson::doc! {"seq": 19_i64, "data": {"q": "Q", "n": 19}, "type": "EVENT"});
        let three = bson(bson::doc! {"type": "EVENT", "seq": 19_i64, "data": {"n": 219, "q": "Q"}});
        assert_ne!(one, two);
        assert!(same_message(Format::Bson, &one, &two));
        assert!(!same_message(Format::Bson, &one, &three));
    }
}
