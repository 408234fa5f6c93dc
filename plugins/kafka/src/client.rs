//! What both modes share: the librdkafka client and its context (logs, errors, and the
//! consumer group's rebalance callbacks), and records turned into events.

use crate::settings::Config;
use buslink_plugin_api::{log, Body, Event, EventBatch, OffsetRef, PluginError, PluginResult};
use chrono::{DateTime, Utc};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often librdkafka reports its brokers' states (ms): how buslink knows whether the cluster
/// can be reached at all (librdkafka retries in the background, and a poll just finds nothing).
pub const STATISTICS_INTERVAL_MS: &str = "1000";

/// A topic's partition.
pub type Partition = (String, i32);

/// How long no broker may be up, or a group member be left without a partition, before a
/// consumer says so (the host then shows `waiting for the bus`): its `poll` wait (the
/// consumer's `timeout_ms`), at least 5 s. Both consumer types ask here.
pub fn patience(poll_wait: Duration) -> Duration {
    poll_wait.max(Duration::from_secs(5))
}

/// What the consumer group's callbacks and the consumer share (the callbacks run inside
/// `poll`, on the consumer's thread).
#[derive(Debug, Default)]
pub struct GroupState {
    /// Partitions given up since the consumer last looked: their records not handed over yet
    /// are dropped (the next owner reads them from the group's committed offset).
    pub revoked: Vec<Partition>,
    /// Partitions received since the consumer last looked, each with where it starts (the
    /// group's committed offset, or this member's own position from its cache; `None`: the
    /// group has none, librdkafka starts at the oldest record): checked for offsets gone.
    pub assigned: Vec<(Partition, Option<i64>)>,
    /// Partitions with records handed to the host and not acknowledged yet.
    pub in_flight: std::collections::BTreeSet<Partition>,
    /// A revocation waiting for the host's acknowledgement of the records in flight (the
    /// group waits for this member meanwhile), and until when at most.
    pub deferred: Option<(Vec<Partition>, Instant)>,
    /// How long a revocation may wait for the host: 80 % of `max.poll.interval.ms` (the
    /// group's rebalance timeout: past it the group goes on without this member).
    pub revoke_patience: Duration,
    /// Where this member last was (next offset per partition), from its offset cache: used
    /// where the group has no committed offset or an older one.
    pub hints: BTreeMap<Partition, i64>,
    /// The request timeout, for the requests made during an assignment.
    pub request_timeout: Duration,
    /// The consumer is closing: a revocation is carried out at once.
    pub closing: bool,
    /// Whether an assignment was ever received.
    pub assignment_seen: bool,
    /// Since when this member waits for the group to assign it partitions: from its joining
    /// (`open`) or a revocation to the next assignment (`None` meanwhile). A rebalance held
    /// up longer than the consumer's patience shows as the member held up.
    pub rebalance_since: Option<Instant>,
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

    /// A connection error once no broker was up for `patience` ([`patience`]): the host then shows the
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

impl Reports {
    /// Commits what was acknowledged and not stored yet (before partitions go).
    fn store_acknowledged(&self, consumer: &BaseConsumer<Self>) {
        let mut group = self.group();
        if group.unstored.is_empty() {
            return;
        }
        match commit_positions(consumer, &group.unstored) {
            Ok(()) => group.unstored.clear(),
            Err(error) => log::warn(format!(
                "Kafka: the acknowledged positions could not be committed before the \
                 partitions were given up ({error}); their events will be read again by the \
                 next owner"
            )),
        }
    }

    /// Gives `revoked` up now: what was acknowledged is committed first; the consumer drops
    /// what it read of them and did not hand over, and nothing of them is stored later.
    pub fn give_up(&self, consumer: &BaseConsumer<Self>, revoked: &[Partition]) {
        self.store_acknowledged(consumer);
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => {
                let mut list = TopicPartitionList::new();
                for (topic, partition) in revoked {
                    list.add_partition(topic, *partition);
                }
                consumer.incremental_unassign(&list)
            }
            _ => consumer.unassign(),
        };
        if let Err(error) = result {
            log::warn(format!(
                "Kafka consumer group: giving partitions up: {error}"
            ));
        }
        let mut group = self.group();
        group.deferred = None;
        // Never stored later: the next owner's position must not be moved back.
        group
            .unstored
            .retain(|partition, _| !revoked.contains(partition));
        group
            .in_flight
            .retain(|partition| !revoked.contains(partition));
        if !revoked.is_empty() {
            log::info(format!(
                "Kafka consumer group: partitions given up: {}",
                names(revoked)
            ));
        }
        group.revoked.extend(revoked.iter().cloned());
    }

    /// Where each partition of an assignment starts (the list's offsets are set where this
    /// member's own position is used), each said in the log.
    fn start_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        list: &mut TopicPartitionList,
    ) -> Vec<(Partition, Option<i64>)> {
        let (hints, timeout) = {
            let group = self.group();
            (group.hints.clone(), group.request_timeout)
        };
        let partitions: Vec<Partition> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let committed = match consumer.committed_offsets(list.clone(), timeout) {
            Ok(committed) => committed,
            Err(error) => {
                log::warn(format!(
                    "Kafka consumer group: cannot read the group's committed offsets of {} \
                     ({error}): librdkafka starts them where the group says",
                    names(&partitions)
                ));
                return partitions.into_iter().map(|p| (p, None)).collect();
            }
        };
        let mut starts = Vec::new();
        for (topic, partition) in partitions {
            let group_at =
                committed
                    .find_partition(&topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(at) => Some(at),
                        _ => None,
                    });
            let own = hints.get(&(topic.clone(), partition)).copied();
            let name = format!("{topic}:{partition}");
            let start = match (group_at, own) {
                (None, Some(own)) => {
                    log::warn(format!(
                        "Kafka consumer group: {name}: the group has no committed offset (its \
                         offsets expired, were reset, or the group id is new), but this \
                         member's offset cache says it handled up to {}: starting at {own}, \
                         not at the oldest record",
                        own - 1
                    ));
                    Some(own)
                }
                (Some(at), Some(own)) if at < own => {
                    log::warn(format!(
                        "Kafka consumer group: {name}: the group's committed offset {at} is \
                         behind this member's offset cache ({own}: a commit that never \
                         reached the group): starting at {own}"
                    ));
                    Some(own)
                }
                (Some(at), _) => {
                    log::info(format!(
                        "Kafka consumer group: {name} starts at the group's committed offset \
                         {at}"
                    ));
                    Some(at)
                }
                (None, None) => {
                    log::info(format!(
                        "Kafka consumer group: {name}: no committed offset; starting at the \
                         oldest record"
                    ));
                    None
                }
            };
            if let Some(start) = start.filter(|start| Some(*start) != group_at) {
                if let Err(error) =
                    list.set_partition_offset(&topic, partition, Offset::Offset(start))
                {
                    log::warn(format!("Kafka consumer group: {name}: {error}"));
                }
            }
            starts.push(((topic, partition), start));
        }
        starts
    }
}

impl ConsumerContext for Reports {
    /// The group's rebalances, run inside `poll` (or `serve`):
    /// - a revocation commits what was acknowledged, then gives the partitions up, unless
    ///   records of them are in the host's hands: then the group waits (bounded by
    ///   [`GroupState::revoke_patience`]) until the host acknowledged them, so what was
    ///   handled is committed before the partitions go;
    /// - an assignment starts each partition at the group's committed offset, or at this
    ///   member's own position where the group has none or an older one (said in a WARN).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        list: &mut TopicPartitionList,
    ) {
        let partitions: Vec<Partition> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                {
                    let mut group = self.group();
                    group.rebalance_since.get_or_insert_with(Instant::now);
                    let held: Vec<Partition> = partitions
                        .iter()
                        .filter(|p| group.in_flight.contains(*p))
                        .cloned()
                        .collect();
                    if !held.is_empty() && !group.closing {
                        log::info(format!(
                            "Kafka consumer group: partitions {} are being revoked while the \
                             host handles records of {}: given up once those are handled and \
                             committed (within {} s)",
                            names(&partitions),
                            names(&held),
                            group.revoke_patience.as_secs()
                        ));
                        group.deferred = Some((partitions, Instant::now() + group.revoke_patience));
                        return;
                    }
                }
                self.give_up(consumer, &partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let starts = self.start_positions(consumer, list);
                let result = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(list),
                    _ => consumer.assign(list),
                };
                if let Err(error) = result {
                    log::warn(format!("Kafka consumer group: taking partitions: {error}"));
                }
                // librdkafka keeps a partition's pause across a revocation: one paused while
                // the host handled a batch must fetch again now that it is assigned anew.
                if let Err(error) = consumer.resume(list) {
                    log::warn(format!(
                        "Kafka consumer group: resuming partitions: {error}"
                    ));
                }
                log::info(format!(
                    "Kafka consumer group: partitions assigned: {}",
                    if partitions.is_empty() {
                        "none".to_owned()
                    } else {
                        names(&partitions)
                    }
                ));
                let mut group = self.group();
                group.assignment_seen = true;
                group.rebalance_since = None;
                group.assigned.extend(starts);
            }
            other => {
                log::warn(format!(
                    "Kafka consumer group: rebalance failed: {:?}",
                    rdkafka::error::RDKafkaErrorCode::from(other)
                ));
                let _ = consumer.unassign();
            }
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

/// Closes a consumer that never joined its group (assign mode, the replay reader) before it is
/// dropped. rust-rdkafka's drop closes a consumer that has a `group.id` (buslink always sets
/// one) by polling its queue 100 ms at a time until librdkafka says it is closed, which kept
/// every `--once` 100 ms past its last event; here the queue is polled a millisecond at a time,
/// for at most `limit`. Records still queued are dropped: these modes store nothing in the
/// cluster.
pub fn close_ungrouped(client: &BaseConsumer<Reports>, limit: Duration) {
    if client.close_queue().is_err() {
        return;
    }
    let deadline = Instant::now() + limit;
    while !client.closed() && Instant::now() < deadline {
        let _ = client.poll(Duration::from_millis(1));
    }
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

/// The cluster's metadata (of `topic`, or of every topic): a broker answered within the request
/// timeout, or a connection error naming the cluster and librdkafka's last error.
pub fn metadata(
    client: &BaseConsumer<Reports>,
    topic: Option<&str>,
    config: &Config,
    what: &str,
) -> PluginResult<rdkafka::metadata::Metadata> {
    client
        .fetch_metadata(topic, config.request_timeout)
        .map_err(|e| {
            PluginError::connect(format!(
                "{what}: cannot reach the cluster: {e}{}",
                client.context().last_error()
            ))
        })
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
