//! What both modes share: the librdkafka client and its context (logs, errors, and the
//! consumer group's rebalance callbacks), and records turned into events.

use crate::settings::Config;
use buslink_plugin_api::{log, Body, Event, EventBatch, OffsetRef, PluginError, PluginResult};
use chrono::{DateTime, Utc};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often librdkafka reports its brokers' states (ms): how buslink knows whether the cluster
/// can be reached at all (librdkafka retries in the background, and a poll just finds nothing).
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// A topic's partition.
pub type Partition = (String, i32);

/// What the consumer group's callbacks and the consumer share (the callbacks run inside
/// `poll`, on the consumer's thread).
#[derive(Debug, Default)]
pub struct GroupState {
    /// Partitions given up since the consumer last looked: their records not handed over yet
    /// are dropped (the next owner reads them from the group's committed offset).
    pub revoked: Vec<Partition>,
    /// Partitions received since the consumer last looked (checked for offsets gone).
    pub assigned: Vec<Partition>,
    /// Whether an assignment was ever received.
    pub assignment_seen: bool,
    /// Acknowledged positions (next offset) whose commit to the group failed: committed again
    /// with the next acknowledgement, and before partitions are given up.
    pub unstored: BTreeMap<Partition, i64>,
}

/// Whether a broker of the cluster is up, as librdkafka's statistics last said.
#[derive(Debug)]
struct Reach {
    up: bool,
    /// Since when `up` holds (the client's creation until the first statistics).
    since: Instant,
}

/// Keeps what librdkafka reports between polls, and the consumer group's state.
pub struct Reports {
    last_error: Mutex<Option<String>>,
    group: Mutex<GroupState>,
    reach: Mutex<Reach>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports {
            last_error: Mutex::new(None),
            group: Mutex::new(GroupState::default()),
            reach: Mutex::new(Reach {
                up: false,
                since: Instant::now(),
            }),
        }
    }
}

impl Reports {
    /// librdkafka's last error, for messages (empty when none).
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .map(|e| format!(" (librdkafka: {e})"))
            .unwrap_or_default()
    }

    /// How long no broker of the cluster has been up (`None`: one is up).
    pub fn unreachable_for(&self) -> Option<Duration> {
        let reach = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        (!reach.up).then(|| reach.since.elapsed())
    }

    /// A connection error once no broker was up for `patience`: the host then shows the
    /// consumer waiting for the bus (and re-opens it) instead of taking an empty poll for an
    /// idle bus.
    pub fn check_reachable(&self, patience: Duration, what: &str) -> PluginResult<()> {
        match self.unreachable_for() {
            Some(down) if down >= patience => Err(PluginError::connect(format!(
                "{what}: no broker of the cluster is reachable (none up for {} s){}",
                down.as_secs(),
                self.last_error()
            ))),
            _ => Ok(()),
        }
    }

    /// The group state (a poisoned lock is taken over: the state stays consistent).
    pub fn group(&self) -> MutexGuard<'_, GroupState> {
        self.group
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for Reports {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // librdkafka retries connections itself and says so at every attempt: what matters
        // reaches the host through poll's errors; the rest is for debugging.
        let line = format!("librdkafka {facility}: {message}");
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                log::error(line)
            }
            _ => log::debug(line),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|broker| broker.state == "UP");
        let mut reach = self.reach.lock().unwrap_or_else(|p| p.into_inner());
        if up != reach.up {
            *reach = Reach {
                up,
                since: Instant::now(),
            };
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
        log::debug(format!("librdkafka error: {error}: {reason}"));
    }
}

impl ConsumerContext for Reports {
    /// Before partitions are given up: what was acknowledged and not stored yet is committed
    /// now, and the consumer drops what it read of them and did not hand over.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let mut group = self.group();
        if !group.unstored.is_empty() {
            match commit_positions(consumer, &group.unstored) {
                Ok(()) => group.unstored.clear(),
                Err(error) => log::warn(format!(
                    "Kafka: the acknowledged positions could not be committed before the \
                     partitions were given up ({error}); their events will be read again by \
                     the next owner"
                )),
            }
        }
        let revoked: Vec<Partition> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        // Never stored later: the next owner's position must not be moved back.
        group
            .unstored
            .retain(|partition, _| !revoked.contains(partition));
        if !revoked.is_empty() {
            log::info(format!(
                "Kafka consumer group: partitions given up: {}",
                names(&revoked)
            ));
        }
        group.revoked.extend(revoked);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let assigned: Vec<Partition> = list
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                log::info(format!(
                    "Kafka consumer group: partitions assigned: {}",
                    if assigned.is_empty() {
                        "none".to_owned()
                    } else {
                        names(&assigned)
                    }
                ));
                let mut group = self.group();
                group.assignment_seen = true;
                group.assigned.extend(assigned);
            }
            Rebalance::Error(error) => {
                log::warn(format!("Kafka consumer group: rebalance failed: {error}"))
            }
            Rebalance::Revoke(_) => {}
        }
    }
}

/// `topic:0, topic:3`.
pub fn names(partitions: &[Partition]) -> String {
    partitions
        .iter()
        .map(|(topic, partition)| format!("{topic}:{partition}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Commits `positions` (the next offset of each partition) to the group, synchronously.
pub fn commit_positions(
    consumer: &BaseConsumer<Reports>,
    positions: &BTreeMap<Partition, i64>,
) -> Result<(), KafkaError> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in positions {
        list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    consumer.commit(&list, CommitMode::Sync)
}

/// The (low, high) watermarks librdkafka last saw for a partition in its fetch responses: no
/// request, so it never waits on a broker (a lag asked for every progress line must not stall
/// consumption while a broker is down). `None` before the partition was first fetched.
pub fn cached_watermarks(
    consumer: &BaseConsumer<Reports>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle is valid while `consumer` lives; librdkafka reads the
    // NUL-terminated topic name and writes the two integers, nothing else.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low.max(0), high))
}

/// A librdkafka consumer with the settings' properties.
pub fn create(config: &Config, what: &str) -> PluginResult<BaseConsumer<Reports>> {
    let mut client_config = ClientConfig::new();
    for (name, value) in &config.properties {
        client_config.set(name, value);
    }
    client_config.set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
    client_config
        .create_with_context(Reports::default())
        // librdkafka's configuration errors name the property at fault.
        .map_err(|e| PluginError::config(format!("{what}: {e}")))
}

/// Records delivered other than as JSON text.
#[derive(Debug, Default)]
pub struct Tally {
    /// Values that are not UTF-8 (delivered as bytes).
    pub undecodable: u64,
    /// Records without a value (tombstones; delivered as empty bytes).
    pub null_values: u64,
}

/// One record as an event in `batch` at `offset`: the record's timestamp, the key as category
/// (Hermes keys records by category), the value as JSON text (or bytes when it is not UTF-8).
pub fn push_record<M: Message>(
    what: &str,
    message: &M,
    offset: OffsetRef<'_>,
    batch: &mut EventBatch,
    tally: &mut Tally,
) -> PluginResult<()> {
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .ok_or_else(|| {
            PluginError::data(format!(
                "{what}: the record at offset {offset} has no timestamp (Hermes takes the \
                 event's time from it)"
            ))
        })?;
    let category = match message.key() {
        Some(key) => String::from_utf8_lossy(key),
        None => "".into(),
    };
    let body = match message.payload() {
        None => {
            tally.null_values += 1;
            Body::Bytes(&[])
        }
        Some(payload) => match std::str::from_utf8(payload) {
            Ok(text) => Body::Json(text),
            Err(_) => {
                tally.undecodable += 1;
                log::warn(format!(
                    "{what}: the record at offset {offset} is not UTF-8 text: delivered as bytes"
                ));
                Body::Bytes(payload)
            }
        },
    };
    batch.push(Event {
        offset,
        timestamp,
        category: &category,
        body,
    });
    Ok(())
}
