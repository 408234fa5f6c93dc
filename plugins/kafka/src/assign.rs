//! Assign mode: one partition of one topic, assigned (never subscribed), its position kept by
//! buslink's offset cache, as hermes-client's kafka consumer does.

use crate::client::{self, push_record, Reports, Tally};
use crate::settings::Config;
use buslink_plugin_api::{
    log, Consumer, EventBatch, Offset, OffsetRef, PluginError, PluginResult, PollStatus,
};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::TopicPartitionList;
use std::time::{Duration, Instant};

/// Where the next event comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// No positioning call yet.
    Unset,
    /// The oldest offset the partition holds, whatever it is.
    Beginning,
    /// Kafka offset `next`: the next event must be that one (an older offset gone from the
    /// partition is a gap).
    At(i64),
}

/// Consumes one partition of a Kafka topic that hermes-server's kafka producer writes.
pub struct AssignConsumer {
    config: Config,
    client: Option<BaseConsumer<Reports>>,
    /// The partition read (from the settings, or the topic's only one once open).
    partition: Option<i32>,
    position: Position,
    /// What librdkafka was last told to fetch from (`None`: nothing assigned).
    assigned: Option<Position>,
    timeout: Option<Duration>,
    stop_when_drained: bool,
    /// The partition's end (high watermark) as the broker answered it for `--once`: asked at
    /// the first poll after a positioning and not again, so a drain costs one request and
    /// stops at the first end it reaches (it never chases a faster producer).
    end: Option<i64>,
    gaps: u64,
    tally: Tally,
    client_errors: u64,
}

impl AssignConsumer {
    /// A consumer for resolved settings (no connection yet).
    pub fn new(config: Config) -> Self {
        AssignConsumer {
            partition: config.partition,
            config,
            client: None,
            position: Position::Unset,
            assigned: None,
            timeout: None,
            stop_when_drained: false,
            end: None,
            gaps: 0,
            tally: Tally::default(),
            client_errors: 0,
        }
    }
}

impl AssignConsumer {
    /// `topic` partition `p` on `servers`, for messages.
    fn what(&self) -> String {
        match self.partition {
            Some(p) => format!(
                "Kafka {} topic {} partition {p}",
                self.config.servers, self.config.topic
            ),
            None => format!("Kafka {} topic {}", self.config.servers, self.config.topic),
        }
    }

    fn client(&self) -> PluginResult<&BaseConsumer<Reports>> {
        self.client
            .as_ref()
            .ok_or_else(|| PluginError::internal("the consumer is not open"))
    }

    fn partition(&self) -> PluginResult<i32> {
        self.partition
            .ok_or_else(|| PluginError::internal("the consumer is not open"))
    }

    /// What librdkafka said last, for error messages.
    fn last_client_error(&self) -> String {
        self.client
            .as_ref()
            .map(|c| c.context().last_error())
            .unwrap_or_default()
    }

    /// (low, high): the oldest offset held and the next one to be written.
    fn watermarks(&self) -> PluginResult<(i64, i64)> {
        let client = self.client()?;
        let partition = self.partition()?;
        client
            .fetch_watermarks(&self.config.topic, partition, self.config.request_timeout)
            .map_err(|e| {
                PluginError::connect(format!(
                    "{}: cannot read the partition's offsets: {e}{}",
                    self.what(),
                    self.last_client_error()
                ))
            })
    }

    /// Tells librdkafka to fetch from `position` (an assignment with the offset: a seek right
    /// after an assignment fails in librdkafka).
    fn assign(&mut self, position: Position) -> PluginResult<()> {
        let offset = match position {
            Position::Unset => return Ok(()),
            Position::Beginning => rdkafka::Offset::Beginning,
            Position::At(next) => rdkafka::Offset::Offset(next),
        };
        let partition = self.partition()?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.config.topic, partition, offset)
            .map_err(|e| PluginError::internal(format!("{}: {e}", self.what())))?;
        self.client()?.assign(&list).map_err(|e| {
            PluginError::connect(format!("{}: cannot assign the partition: {e}", self.what()))
        })?;
        self.assigned = Some(position);
        Ok(())
    }

    /// Assigns the position if librdkafka is not already fetching from there.
    fn ensure_assigned(&mut self) -> PluginResult<()> {
        match self.position {
            Position::Unset => Err(PluginError::internal(
                "poll called before a seek: the host must position the consumer first",
            )),
            position if self.assigned == Some(position) => Ok(()),
            position => self.assign(position),
        }
    }

    /// An offset librdkafka could not fetch (gone from the partition, or beyond its end):
    /// a gap up to the oldest offset held, or an error.
    fn out_of_range(&mut self, batch: &mut EventBatch) -> PluginResult<()> {
        let (low, high) = self.watermarks()?;
        match self.position {
            Position::At(next) if next < low => {
                let count = u64::try_from(low - next).unwrap_or(u64::MAX);
                self.gaps += 1;
                batch.report_gap(&format!("offsets {next} to {}", low - 1), Some(count));
                self.position = Position::At(low);
                self.assign(Position::At(low))
            }
            Position::At(next) if next > high => Err(PluginError::data(format!(
                "{}: offset {next} is beyond the end of the partition (next offset {high}): \
                 another topic or cluster than the one consumed?",
                self.what()
            ))),
            _ => {
                // Purged between the answer and the look: fetch again from the position.
                let position = self.position;
                self.assign(position)
            }
        }
    }

    /// Reads records into `batch` until it is full, nothing more comes within `wait`, or
    /// `want` says a record is enough. Returns how many events and gaps were added.
    fn read(
        &mut self,
        batch: &mut EventBatch,
        wait: Duration,
        category: Option<&str>,
    ) -> PluginResult<usize> {
        self.ensure_assigned()?;
        let what = self.what();
        let deadline = Instant::now() + wait;
        let mut added = 0;
        loop {
            let left = if added > 0 {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            let polled = self
                .client
                .as_ref()
                .ok_or_else(|| PluginError::internal("the consumer is not open"))?
                .poll(left);
            match polled {
                None => {
                    if added > 0 || Instant::now() >= deadline {
                        return Ok(added);
                    }
                }
                Some(Ok(message)) => {
                    let expected = match self.position {
                        Position::At(next) => Some(next),
                        _ => None,
                    };
                    if expected.is_some_and(|next| message.offset() < next) {
                        // Fetched before a seek backwards took effect: not ours.
                        continue;
                    }
                    let offset = message.offset();
                    if let Some(wanted) = category {
                        if message.key() != Some(wanted.as_bytes()) {
                            self.position = Position::At(offset + 1);
                            self.assigned = Some(self.position);
                            continue;
                        }
                    }
                    push_record(
                        &what,
                        &message,
                        OffsetRef::Int(offset),
                        batch,
                        &mut self.tally,
                    )?;
                    self.position = Position::At(offset + 1);
                    // librdkafka goes on from there by itself.
                    self.assigned = Some(self.position);
                    added += 1;
                    if batch.is_full() || category.is_some() {
                        return Ok(added);
                    }
                }
                Some(Err(error)) => {
                    let code = error.rdkafka_error_code();
                    if matches!(
                        code,
                        Some(
                            RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset
                        )
                    ) {
                        let gaps_before = batch.gaps().len();
                        self.out_of_range(batch)?;
                        if batch.gaps().len() > gaps_before {
                            added += 1;
                            if category.is_none() {
                                return Ok(added);
                            }
                        }
                        continue;
                    }
                    self.client_errors += 1;
                    if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
                        return Err(PluginError::connect(format!("{}: {error}", self.what())));
                    }
                    // librdkafka recovers from the others (a broker down, a leader moving)
                    // by itself.
                    log::debug(format!("{}: {error}", self.what()));
                }
            }
        }
    }
}

impl Consumer for AssignConsumer {
    fn open(&mut self) -> PluginResult<()> {
        let client = client::create(&self.config, &self.what())?;
        let metadata = client::metadata(
            &client,
            Some(&self.config.topic),
            &self.config,
            &self.what(),
        )?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.config.topic);
        let partitions: Vec<i32> = match topic {
            Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
            _ => Vec::new(),
        };
        if partitions.is_empty() {
            return Err(PluginError::connect(format!(
                "{}: the topic does not exist (yet) on the cluster",
                self.what()
            )));
        }
        let partition = match (self.config.partition, partitions.as_slice()) {
            (Some(p), list) if list.contains(&p) => p,
            (Some(p), list) => {
                return Err(PluginError::config(format!(
                    "{}: the topic has no partition {p} (it has {})",
                    self.what(),
                    list.len()
                ))
                .with_key("partition"))
            }
            (None, [only]) => *only,
            (None, list) => {
                return Err(PluginError::config(format!(
                    "{}: the topic has {} partitions: set `partition` to the one to read \
                     (Hermes reads one partition; events in the others would never be seen)",
                    self.what(),
                    list.len()
                ))
                .with_key("partition"))
            }
        };
        self.partition = Some(partition);
        self.client = Some(client);
        self.assigned = None;
        Ok(())
    }

    fn close(&mut self) -> PluginResult<()> {
        self.end = None;
        if let Some(client) = self.client.take() {
            client::close_ungrouped(&client, self.config.request_timeout);
        }
        self.assigned = None;
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.position = Position::Beginning;
        Ok(())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        let (_, high) = self.watermarks()?;
        self.position = Position::At(high);
        Ok(())
    }

    /// Valid for any offset up to the next one to be written. An offset the partition no
    /// longer holds (retention) is accepted: the first read reports the events in between as
    /// a gap (the host's `on_gap` decides), as when they go while the consumer runs.
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let Offset::Int(next) = *offset else {
            return Err(PluginError::offset_not_found(format!(
                "Kafka offsets are integers, not {} offsets like {offset}",
                offset.type_name()
            )));
        };
        let (_, high) = self.watermarks()?;
        if next > high || next < 0 {
            return Err(PluginError::offset_not_found(format!(
                "offset {next} is not in {} (offsets 0 to {}; the next event will be {high})",
                self.what(),
                high - 1
            )));
        }
        self.position = Position::At(next);
        Ok(())
    }

    fn check_position(&mut self, last: &Offset, timestamp: DateTime<Utc>) -> PluginResult<()> {
        let Offset::Int(last) = *last else {
            return Ok(());
        };
        let (low, high) = self.watermarks()?;
        if last >= high {
            return Err(PluginError::data(format!(
                "offset {last}, the last event handled, is beyond the end of {} (next offset \
                 {high}): this is another topic or cluster than the one consumed (re-created?); \
                 reading on would skip its events. Start it over with `buslink offsets reset` \
                 (or set an offset)",
                self.what()
            )));
        }
        if last < low {
            // Gone since: nothing to compare; the gap is reported by the first read.
            return Ok(());
        }
        let position = self.position;
        self.assign(Position::At(last))?;
        let deadline = Instant::now() + self.config.request_timeout;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            match self.client()?.poll(left) {
                Some(Ok(message)) if message.offset() == last => {
                    break message.timestamp().to_millis();
                }
                Some(Ok(_)) | None => {}
                Some(Err(error)) => log::debug(format!("{}: {error}", self.what())),
            }
        };
        // Back to where the host positioned the consumer.
        self.position = position;
        self.assign(position)?;
        match found {
            Some(millis) if millis != timestamp.timestamp_millis() => {
                Err(PluginError::data(format!(
                    "{} holds another event at offset {last} (timestamp {}) than the one handled \
                 there (timestamp {}): the topic was re-created under the same offsets. Start \
                 it over with `buslink offsets reset` (or set an offset)",
                    self.what(),
                    DateTime::<Utc>::from_timestamp_millis(millis)
                        .map_or_else(|| millis.to_string(), |t| t.to_rfc3339()),
                    timestamp.to_rfc3339()
                )))
            }
            Some(_) => Ok(()),
            None => Err(PluginError::connect(format!(
                "{}: could not read offset {last} to check it within {} ms{}",
                self.what(),
                self.config.request_timeout.as_millis(),
                self.last_client_error()
            ))),
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
        self.ensure_assigned()?;
        let wait = if self.stop_when_drained {
            // Drained means at the end the partition had when the broker was asked (once: the
            // records before it are read without another request); then wait for what is left
            // (a fetch can take a moment) but never past the request timeout.
            let end = match self.end {
                Some(end) => end,
                None => {
                    let (low, high) = self.watermarks()?;
                    if !matches!(self.position, Position::At(_)) && low >= high {
                        return Ok(PollStatus::Drained);
                    }
                    self.end = Some(high);
                    high
                }
            };
            if matches!(self.position, Position::At(next) if next >= end) {
                return Ok(PollStatus::Drained);
            }
            self.config.request_timeout
        } else {
            self.timeout.unwrap_or(Duration::from_secs(1))
        };
        let added = self.read(batch, wait, None)?;
        if added > 0 {
            return Ok(PollStatus::Ready);
        }
        if self.stop_when_drained {
            return Err(PluginError::connect(format!(
                "{}: events are left before the end of the partition but none came within {} \
                 ms: cannot tell whether the bus is drained{}",
                self.what(),
                wait.as_millis(),
                self.last_client_error()
            )));
        }
        // Nothing came: an idle partition, or a cluster no broker of which answers.
        self.client()?
            .context()
            .check_reachable(crate::client::patience(wait), &self.what())?;
        Ok(PollStatus::Idle)
    }

    /// The records after the position: the partition's end as librdkafka last saw it less
    /// the next offset (no request: never waits on a broker that is down).
    fn lag(&mut self) -> Option<u64> {
        let client = self.client.as_ref()?;
        let (low, high) = client::cached_watermarks(client, &self.config.topic, self.partition?)?;
        let next = match self.position {
            Position::At(next) => next.max(low),
            Position::Beginning => low,
            Position::Unset => return None,
        };
        u64::try_from(high - next).ok()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("gaps".to_owned(), self.gaps),
            ("undecodable_bodies".to_owned(), self.tally.undecodable),
            ("null_values".to_owned(), self.tally.null_values),
            ("client_errors".to_owned(), self.client_errors),
        ]
    }

    /// The next record whose key is `category` (Hermes's producer keys records by category);
    /// the records before it are passed over.
    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        let wait = self.timeout.unwrap_or(Duration::from_secs(1));
        Ok(self.read(found, wait, Some(category))? > 0)
    }
}
