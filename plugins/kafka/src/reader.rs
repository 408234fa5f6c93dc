//! The reader of a group's topics for replays (`KafkaConsumerReader`, group mode): the same
//! settings as the member's, but it assigns partitions to itself (never subscribes), so it
//! never joins the consumer group, takes no partition from its members and commits nothing.
//!
//! Positions are group mode's event offsets, `TOPIC:PARTITION:OFFSET`: `seek` reads that one
//! partition from that offset (a replay's range lies in one partition: `--from T:P:O --to
//! T:P:O2`); the beginning reads every partition of the topics from its oldest record. With
//! stop-when-drained, the end is each partition's high watermark as the broker answered at the
//! first poll.

use crate::client::{self, push_record, Partition, Reports, Tally};
use crate::group::{event_offset, parse_event_offset};
use crate::settings::Config;
use buslink_plugin_api::{
    Consumer, EventBatch, Offset, OffsetRef, PluginError, PluginResult, PollStatus,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::TopicPartitionList;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Where the reader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Start {
    /// Every partition of the topics, from its oldest record.
    Beginning,
    /// One partition, from this offset.
    At(Partition, i64),
}

/// Reads a group's topics without joining the group.
pub struct GroupReader {
    config: Config,
    client: Option<BaseConsumer<Reports>>,
    start: Start,
    assigned: bool,
    timeout: Option<Duration>,
    stop_when_drained: bool,
    /// Each partition read: the next offset to read and, once asked, its end.
    next: BTreeMap<Partition, i64>,
    ends: BTreeMap<Partition, i64>,
    tally: Tally,
}

impl GroupReader {
    /// A reader for resolved group-mode settings (no connection yet).
    pub fn new(config: Config) -> Self {
        GroupReader {
            config,
            client: None,
            start: Start::Beginning,
            assigned: false,
            timeout: None,
            stop_when_drained: false,
            next: BTreeMap::new(),
            ends: BTreeMap::new(),
            tally: Tally::default(),
        }
    }

    fn what(&self) -> String {
        format!(
            "Kafka {} topics {} (a reader outside the group)",
            self.config.servers, self.config.topic
        )
    }

    fn client(&self) -> PluginResult<&BaseConsumer<Reports>> {
        self.client
            .as_ref()
            .ok_or_else(|| PluginError::internal("the reader is not open"))
    }

    /// The topics' partitions, as the cluster lists them.
    fn partitions(&self) -> PluginResult<Vec<Partition>> {
        let client = self.client()?;
        let mut all = Vec::new();
        for topic in &self.config.topics {
            let metadata = client::metadata(client, Some(topic), &self.config, &self.what())?;
            for listed in metadata.topics().iter().filter(|t| t.name() == topic) {
                all.extend(listed.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
        Ok(all)
    }

    fn watermarks(&self, (topic, partition): &Partition) -> PluginResult<(i64, i64)> {
        self.client()?
            .fetch_watermarks(topic, *partition, self.config.request_timeout)
            .map_err(|e| {
                PluginError::connect(format!(
                    "{}: cannot read the offsets of {topic}:{partition}: {e}",
                    self.what()
                ))
            })
    }

    /// Assigns the partitions to read (once per positioning), with their ends.
    fn ensure_assigned(&mut self) -> PluginResult<()> {
        if self.assigned {
            return Ok(());
        }
        let starts: Vec<(Partition, i64)> = match &self.start {
            Start::At(partition, offset) => vec![(partition.clone(), *offset)],
            Start::Beginning => {
                let mut starts = Vec::new();
                for partition in self.partitions()? {
                    let (low, _) = self.watermarks(&partition)?;
                    starts.push((partition, low));
                }
                starts
            }
        };
        let mut list = TopicPartitionList::new();
        self.next.clear();
        self.ends.clear();
        for ((topic, partition), offset) in &starts {
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(|e| PluginError::internal(format!("{}: {e}", self.what())))?;
            self.next.insert((topic.clone(), *partition), *offset);
        }
        self.client()?
            .assign(&list)
            .map_err(|e| PluginError::connect(format!("{}: cannot assign: {e}", self.what())))?;
        if self.stop_when_drained {
            for (partition, _) in &starts {
                let (_, high) = self.watermarks(partition)?;
                self.ends.insert(partition.clone(), high);
            }
        }
        self.assigned = true;
        Ok(())
    }

    /// Whether every partition read is at its end (stop-when-drained).
    fn drained(&self) -> bool {
        self.next
            .iter()
            .all(|(partition, next)| self.ends.get(partition).is_some_and(|end| next >= end))
    }
}

impl Consumer for GroupReader {
    fn open(&mut self) -> PluginResult<()> {
        let client = client::create(&self.config, &self.what())?;
        client::metadata(&client, None, &self.config, &self.what())?;
        self.client = Some(client);
        self.assigned = false;
        Ok(())
    }

    fn close(&mut self) -> PluginResult<()> {
        if let Some(client) = self.client.take() {
            client::close_ungrouped(&client, self.config.request_timeout);
        }
        self.assigned = false;
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.start = Start::Beginning;
        self.assigned = false;
        Ok(())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        Err(PluginError::offset_not_found(
            "a reader of a group's topics reads a range: from the beginning or from \
             TOPIC:PARTITION:OFFSET",
        ))
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let parsed = match offset {
            Offset::String(text) => parse_event_offset(text),
            _ => None,
        };
        let Some((partition, at)) = parsed else {
            return Err(PluginError::offset_not_found(format!(
                "group offsets look like TOPIC:PARTITION:OFFSET, not {offset}"
            )));
        };
        if !self.partitions()?.contains(&partition) {
            return Err(PluginError::offset_not_found(format!(
                "{}: no partition {}:{}",
                self.what(),
                partition.0,
                partition.1
            )));
        }
        let (low, high) = self.watermarks(&partition)?;
        if at < low || at > high {
            return Err(PluginError::offset_not_found(format!(
                "offset {offset} is not in {}:{} (it holds offsets {low} to {})",
                partition.0,
                partition.1,
                high - 1
            )));
        }
        self.start = Start::At(partition, at);
        self.assigned = false;
        Ok(())
    }

    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        let next = match offset {
            Offset::String(text) => parse_event_offset(text)
                .map(|((topic, partition), at)| event_offset(&topic, partition, at + 1)),
            _ => None,
        };
        match next {
            Some(next) => self.seek(&Offset::String(next)),
            None => Err(PluginError::offset_not_found(format!(
                "group offsets look like TOPIC:PARTITION:OFFSET, not {offset}"
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
        if self.stop_when_drained && self.drained() {
            return Ok(PollStatus::Drained);
        }
        let wait = if self.stop_when_drained {
            self.config.request_timeout
        } else {
            self.timeout.unwrap_or(Duration::from_secs(1))
        };
        let what = self.what();
        let deadline = Instant::now() + wait;
        let mut added = 0;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| PluginError::internal("the reader is not open"))?;
        while !batch.is_full() {
            let left = if added > 0 {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match client.poll(left) {
                None => break,
                Some(Err(error)) => {
                    return Err(PluginError::connect(format!("{what}: {error}")));
                }
                Some(Ok(message)) => {
                    let partition = (message.topic().to_owned(), message.partition());
                    let offset = message.offset();
                    // Past a partition's end (stop-when-drained): not this range's.
                    if self.ends.get(&partition).is_some_and(|end| offset >= *end) {
                        continue;
                    }
                    let text = event_offset(&partition.0, partition.1, offset);
                    push_record(
                        &what,
                        &message,
                        OffsetRef::String(&text),
                        batch,
                        &mut self.tally,
                    )?;
                    self.next.insert(partition, offset + 1);
                    added += 1;
                }
            }
        }
        if added > 0 {
            return Ok(PollStatus::Ready);
        }
        if self.stop_when_drained {
            if self.drained() {
                return Ok(PollStatus::Drained);
            }
            return Err(PluginError::connect(format!(
                "{what}: records are left before the partitions' ends but none came within {} \
                 ms: cannot tell whether the range is read",
                wait.as_millis()
            )));
        }
        Ok(PollStatus::Idle)
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("undecodable_bodies".to_owned(), self.tally.undecodable),
            ("null_values".to_owned(), self.tally.null_values),
        ]
    }
}
