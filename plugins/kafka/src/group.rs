//! Group mode: a consumer group on one or more topics. Kafka assigns the partitions and moves
//! them between the group's members; the position lives in the group, committed only after
//! the host handled and committed the events (`acknowledge`), and what was acknowledged is
//! committed before partitions are given up.

use crate::client::{self, commit_positions, names, push_record, Partition, Reports, Tally};
use crate::settings::Config;
use buslink_plugin_api::{
    Consumer, EventBatch, Offset, OffsetRef, PluginError, PluginResult, PollStatus,
};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message as _, OwnedMessage};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// An event's offset in group mode: `TOPIC:PARTITION:OFFSET` (topic names cannot hold `:`).
pub fn event_offset(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}:{partition}:{offset}")
}

/// The parts of an [`event_offset`].
pub fn parse_event_offset(text: &str) -> Option<(Partition, i64)> {
    let mut parts = text.rsplitn(3, ':');
    let offset = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    Some(((topic.to_owned(), partition), offset))
}

/// A partition, its next offset and its end, when known.
type PartitionPosition = (Partition, Option<i64>, Option<i64>);

/// Consumes the partitions a consumer group assigns it.
/// How long a revocation may wait for the host's acknowledgement: 80 % of
/// `max.poll.interval.ms` (librdkafka's default 300 s), the group's rebalance timeout.
fn revoke_patience(config: &Config) -> Duration {
    let interval_ms = config
        .properties
        .iter()
        .find(|(name, _)| name == "max.poll.interval.ms")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_millis(interval_ms * 4 / 5)
}

pub struct GroupConsumer {
    config: Config,
    client: Option<BaseConsumer<Reports>>,
    timeout: Option<Duration>,
    stop_when_drained: bool,
    /// Records handed over and not acknowledged yet, in delivery order.
    delivered: VecDeque<(Partition, i64)>,
    /// The next offset of each partition, as far as records were handed over.
    next: BTreeMap<Partition, i64>,
    gaps: u64,
    tally: Tally,
    client_errors: u64,
    commits: u64,
    /// Records that came while the host handled a batch (`serve`): handed over next.
    stash: VecDeque<OwnedMessage>,
    /// Whether the assigned partitions are paused (a batch is in the host's hands).
    paused: bool,
    /// The next offset of each partition as acknowledged by the host and committed.
    acked: BTreeMap<Partition, i64>,
}

impl GroupConsumer {
    /// A consumer for resolved settings (no connection yet).
    pub fn new(config: Config) -> Self {
        GroupConsumer {
            config,
            client: None,
            timeout: None,
            stop_when_drained: false,
            delivered: VecDeque::new(),
            next: BTreeMap::new(),
            gaps: 0,
            tally: Tally::default(),
            client_errors: 0,
            commits: 0,
            stash: VecDeque::new(),
            paused: false,
            acked: BTreeMap::new(),
        }
    }

    /// How long a member waits for the cluster (no broker up) or the group (no partition)
    /// before it says so ([`crate::client::patience`]).
    fn patience(&self) -> Duration {
        crate::client::patience(self.poll_wait())
    }

    /// How long a `poll` waits for records (the host's timeout; a second without one).
    fn poll_wait(&self) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(1))
    }

    fn what(&self) -> String {
        format!(
            "Kafka {} consumer group {} topics {}",
            self.config.servers,
            self.group_id(),
            self.config.topic
        )
    }

    fn group_id(&self) -> &str {
        self.config
            .properties
            .iter()
            .find(|(name, _)| name == "group.id")
            .map_or("", |(_, value)| value.as_str())
    }

    fn client(&self) -> PluginResult<&BaseConsumer<Reports>> {
        self.client
            .as_ref()
            .ok_or_else(|| PluginError::internal("the consumer is not open"))
    }

    fn moved_by_the_group(&self) -> PluginError {
        PluginError::config(format!(
            "{}: in group mode the position lives in the consumer group and Kafka assigns the \
             partitions; buslink does not move it (reset a group's offsets with Kafka's \
             consumer-group tools while no member runs)",
            self.what()
        ))
    }

    /// Looks at what the group's callbacks noted: partitions given up are forgotten (and
    /// returned: what was read of them is not handed over); partitions received are checked
    /// for a start gone from them (gaps).
    fn follow_the_group(&mut self, batch: &mut EventBatch) -> PluginResult<Vec<Partition>> {
        let (revoked, assigned) = {
            let client = self.client()?;
            let mut group = client.context().group();
            (
                std::mem::take(&mut group.revoked),
                std::mem::take(&mut group.assigned),
            )
        };
        if !revoked.is_empty() {
            self.delivered
                .retain(|(partition, _)| !revoked.contains(partition));
            self.stash
                .retain(|m| !revoked.contains(&(m.topic().to_owned(), m.partition())));
            for partition in &revoked {
                self.next.remove(partition);
            }
        }
        let what = self.what();
        for ((topic, partition), start) in assigned {
            let client = self.client()?;
            let (low, _) = client
                .fetch_watermarks(&topic, partition, self.config.request_timeout)
                .map_err(|e| {
                    PluginError::connect(format!(
                        "{what}: cannot read the offsets of {topic}:{partition}: {e}"
                    ))
                })?;
            // Where this member starts: the decided position, or the oldest record.
            let at = start.unwrap_or(low);
            self.next.insert((topic.clone(), partition), at.max(low));
            if at < low {
                // The position is gone from the partition (retention): librdkafka goes on
                // from the oldest record; the events in between are lost.
                batch.report_gap(
                    &format!("{topic}:{partition} offsets {at} to {}", low - 1),
                    u64::try_from(low - at).ok(),
                );
                self.gaps += 1;
            }
        }
        Ok(revoked)
    }

    /// Carries out a revocation that waited for the host, once nothing of its partitions is in
    /// the host's hands any more.
    fn finish_revocation(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let ready = {
            let group = client.context().group();
            group.deferred.as_ref().and_then(|(partitions, _)| {
                (!partitions.iter().any(|p| group.in_flight.contains(p)))
                    .then(|| partitions.clone())
            })
        };
        if let Some(partitions) = ready {
            self.check_stored(&partitions);
            if let Some(client) = self.client.as_ref() {
                client.context().give_up(client, &partitions);
            }
        }
    }

    /// After a revocation waited for the host: whether the group holds what this member
    /// committed for `partitions` (a group in the middle of a rebalance may not take a
    /// commit); what it does not hold is said, since the next owner reads it again.
    fn check_stored(&self, partitions: &[Partition]) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let mut list = rdkafka::TopicPartitionList::new();
        for (topic, partition) in partitions.iter().filter(|p| self.acked.contains_key(*p)) {
            list.add_partition(topic, *partition);
        }
        if list.count() == 0 {
            return;
        }
        let held = match client.committed_offsets(list, self.config.request_timeout) {
            Ok(held) => held,
            Err(error) => {
                buslink_plugin_api::log::warn(format!(
                    "{}: cannot tell whether the group took this member's commit of {} ({error}; \
                     a rebalance in progress): if not, the next owner reads those records again",
                    self.what(),
                    names(partitions)
                ));
                return;
            }
        };
        for element in held.elements() {
            let partition = (element.topic().to_owned(), element.partition());
            let Some(&ours) = self.acked.get(&partition) else {
                continue;
            };
            let theirs = match element.offset() {
                rdkafka::Offset::Offset(at) => Some(at),
                _ => None,
            };
            if theirs.is_none_or(|at| at < ours) {
                buslink_plugin_api::log::warn(format!(
                    "{}: the group did not take this member's commit of {}:{} up to offset {} \
                     (it holds {}; a rebalance in progress): the next owner reads those \
                     records again",
                    self.what(),
                    partition.0,
                    partition.1,
                    ours - 1,
                    theirs.map_or_else(|| "none".to_owned(), |at| at.to_string())
                ));
            }
        }
    }

    /// Pauses (`true`) or resumes the partitions assigned now: paused while the host handles a
    /// batch, so that `serve` keeps the member in the group without fetching more.
    fn set_paused(&mut self, paused: bool) -> PluginResult<()> {
        if self.paused == paused {
            return Ok(());
        }
        let client = self.client()?;
        let assignment = client.assignment().map_err(|e| {
            PluginError::connect(format!("{}: cannot read the assignment: {e}", self.what()))
        })?;
        let result = if paused {
            client.pause(&assignment)
        } else {
            client.resume(&assignment)
        };
        result.map_err(|e| {
            PluginError::connect(format!(
                "{}: cannot {} the partitions: {e}",
                self.what(),
                if paused { "pause" } else { "resume" }
            ))
        })?;
        self.paused = paused;
        Ok(())
    }

    /// Reads records until `batch` could be full or nothing more comes within `wait`; the
    /// records of partitions given up meanwhile are not handed over. Returns the events added.
    fn read(&mut self, batch: &mut EventBatch, wait: Duration) -> PluginResult<usize> {
        // The host asks for more: what it held is done with. A revocation still waiting for it
        // goes on first (what was acknowledged is committed), then fetching resumes.
        self.client()?.context().group().in_flight.clear();
        self.finish_revocation();
        self.set_paused(false)?;
        let deadline = Instant::now() + wait;
        let room = batch.remaining().max(1);
        // Records that came while the host handled the last batch come first.
        let mut pending: Vec<OwnedMessage> = Vec::new();
        while pending.len() < room {
            match self.stash.pop_front() {
                Some(message) => pending.push(message),
                None => break,
            }
        }
        loop {
            if pending.len() >= room {
                break;
            }
            let left = if pending.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.client()?.poll(left) {
                None => {
                    if !pending.is_empty() || Instant::now() >= deadline {
                        break;
                    }
                }
                Some(Ok(message)) => pending.push(message.detach()),
                Some(Err(error)) => {
                    self.client_errors += 1;
                    if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
                        return Err(PluginError::connect(format!("{}: {error}", self.what())));
                    }
                    // A topic not created yet, a broker down: librdkafka goes on by itself.
                    buslink_plugin_api::log::debug(format!("{}: {error}", self.what()));
                }
            }
        }
        let revoked = self.follow_the_group(batch)?;
        let what = self.what();
        let mut added = 0;
        for message in &pending {
            // Partitions given up while reading: what was read of them is not handed over.
            if revoked
                .iter()
                .any(|(t, p)| t == message.topic() && *p == message.partition())
            {
                continue;
            }
            self.check_continuity(message, batch);
            let text = event_offset(message.topic(), message.partition(), message.offset());
            push_record(
                &what,
                message,
                OffsetRef::String(&text),
                batch,
                &mut self.tally,
            )?;
            let partition = (message.topic().to_owned(), message.partition());
            self.delivered
                .push_back((partition.clone(), message.offset()));
            self.next.insert(partition, message.offset() + 1);
            added += 1;
        }
        if !self.delivered.is_empty() {
            // In the host's hands now: a revocation waits for them.
            let in_flight = self.delivered.iter().map(|(p, _)| p.clone()).collect();
            self.client()?.context().group().in_flight = in_flight;
        }
        Ok(added)
    }

    /// A record after a jump past the partition's oldest offset: the records in between were
    /// deleted (retention) before this member read them, and librdkafka went on from the
    /// oldest (`auto.offset.reset = earliest`): a gap, said before the record. (A jump within
    /// the partition's range, a compacted topic's or a transaction marker's, is not one.)
    fn check_continuity(&mut self, message: &OwnedMessage, batch: &mut EventBatch) {
        let partition = (message.topic().to_owned(), message.partition());
        let Some(&expected) = self.next.get(&partition) else {
            return;
        };
        if message.offset() <= expected {
            return;
        }
        let low = self
            .client
            .as_ref()
            .and_then(|c| client::cached_watermarks(c, message.topic(), message.partition()))
            .map_or(0, |(low, _)| low);
        if low > expected {
            let last = low.min(message.offset()) - 1;
            batch.report_gap(
                &format!(
                    "{}:{} offsets {expected} to {last}",
                    message.topic(),
                    message.partition()
                ),
                u64::try_from(last - expected + 1).ok(),
            );
            self.gaps += 1;
        }
    }

    /// (partition, next offset, end) for each partition assigned to this member, from what
    /// is known without a request: the next offset since the assignment (the group's committed
    /// one, then the records handed over), the end from librdkafka's last fetch response.
    fn positions(&self) -> PluginResult<Vec<PartitionPosition>> {
        let client = self.client()?;
        let assignment = client.assignment().map_err(|e| {
            PluginError::connect(format!("{}: cannot read the assignment: {e}", self.what()))
        })?;
        Ok(assignment
            .elements()
            .iter()
            .map(|element| {
                let partition = (element.topic().to_owned(), element.partition());
                let cached =
                    client::cached_watermarks(client, element.topic(), element.partition());
                let next = self
                    .next
                    .get(&partition)
                    .copied()
                    .map(|next| next.max(cached.map_or(0, |(low, _)| low)));
                (partition, next, cached.map(|(_, high)| high))
            })
            .collect())
    }
}

impl Consumer for GroupConsumer {
    fn open(&mut self) -> PluginResult<()> {
        let client = client::create(&self.config, &self.what())?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        client
            .subscribe(&topics)
            .map_err(|e| PluginError::connect(format!("{}: cannot subscribe: {e}", self.what())))?;
        // Open means a broker answered: a member whose cluster never answers stays "waiting
        // for the bus", it is not "open and consuming" for a few seconds at each retry.
        client::metadata(&client, None, &self.config, &self.what())?;
        {
            let mut group = client.context().group();
            group.request_timeout = self.config.request_timeout;
            group.revoke_patience = revoke_patience(&self.config);
            group.rebalance_since = Some(Instant::now());
        }
        self.client = Some(client);
        self.delivered.clear();
        self.next.clear();
        self.stash.clear();
        self.paused = false;
        Ok(())
    }

    fn close(&mut self) -> PluginResult<()> {
        // Dropping the client leaves the group: what was acknowledged is committed first, and
        // the revocation is carried out at once (nobody acknowledges anything any more).
        if let Some(client) = &self.client {
            client.context().group().closing = true;
        }
        self.client = None;
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        Err(self.moved_by_the_group())
    }

    fn seek_to_end(&mut self) -> PluginResult<()> {
        Err(self.moved_by_the_group())
    }

    /// The host's cache: where this member last was (`TOPIC:PARTITION=NEXT,...`, as
    /// [`next_offset`](Consumer::next_offset) wrote it, or `TOPIC:PARTITION:OFFSET`, the next
    /// event of a batch). Not a move: the group's position
    /// holds, and this one is used only for partitions the group has no offset for or an
    /// older one (a commit that never reached the group), with a warning.
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        let Offset::String(text) = offset else {
            return Err(self.moved_by_the_group());
        };
        let mut hints = BTreeMap::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let parsed = match part.rsplit_once('=') {
                Some((name, next)) => name.rsplit_once(':').and_then(|(topic, partition)| {
                    Some((
                        (topic.to_owned(), partition.parse().ok()?),
                        next.parse().ok()?,
                    ))
                }),
                None => parse_event_offset(part),
            };
            match parsed {
                Some((partition, next)) => {
                    hints.insert(partition, next);
                }
                None => return Err(self.moved_by_the_group()),
            }
        }
        self.client()?.context().group().hints = hints;
        Ok(())
    }

    fn seek_after(&mut self, _offset: &Offset) -> PluginResult<()> {
        Err(self.moved_by_the_group())
    }

    /// The position of every partition read so far, `TOPIC:PARTITION=NEXT,...`, for the cache
    /// (people read it with `offsets show`; the group holds the real one).
    fn next_offset(&self, _offset: OffsetRef<'_>) -> Option<Offset> {
        let text: Vec<String> = self
            .next
            .iter()
            .map(|((topic, partition), next)| format!("{topic}:{partition}={next}"))
            .collect();
        Some(Offset::String(text.join(",")))
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
        self.client()?;
        if !self.stop_when_drained {
            let added = self.read(batch, self.poll_wait())?;
            if added > 0 || !batch.is_blank() {
                return Ok(PollStatus::Ready);
            }
            // Nothing came: an idle bus, or a cluster no broker of which answers.
            self.client()?
                .context()
                .check_reachable(self.patience(), &self.what())?;
            return Ok(PollStatus::Idle);
        }
        // Drained: this member's partitions are all at their end (once the group assigned
        // them); a group that assigns nothing in time is an error, not a drained bus.
        let deadline = Instant::now() + self.config.request_timeout;
        loop {
            let added = self.read(batch, Duration::from_millis(200))?;
            if added > 0 || !batch.is_blank() {
                return Ok(PollStatus::Ready);
            }
            let seen = self.client()?.context().group().assignment_seen;
            let drained = |(_, next, high): &(Partition, Option<i64>, Option<i64>)| matches!((next, high), (Some(next), Some(high)) if next >= high);
            // The ends are the broker's last fetch answers for these partitions.
            if seen && self.positions()?.iter().all(drained) {
                return Ok(PollStatus::Drained);
            }
            if Instant::now() >= deadline {
                let why = if seen {
                    "events are left before the end of its partitions but none came"
                } else {
                    "the group assigned this member no partitions"
                };
                return Err(PluginError::connect(format!(
                    "{}: {why} within {} ms: cannot tell whether the bus is drained{}",
                    self.what(),
                    self.config.request_timeout.as_millis(),
                    self.client()?.context().last_error()
                )));
            }
        }
    }

    /// The events after this member's position in the partitions it holds; unknown while it
    /// holds none (before its first assignment, in a rebalance, or with more members than
    /// partitions): it cannot tell how many wait on the topic for whoever gets them.
    fn lag(&mut self) -> Option<u64> {
        let positions = self.positions().ok()?;
        if positions.is_empty() {
            return None;
        }
        let mut lag = 0;
        for (_, next, high) in positions {
            lag += u64::try_from(high? - next?).unwrap_or(0);
        }
        Some(lag)
    }

    /// Held up while the group's rebalance keeps this member without a partition for longer
    /// than it would wait for a broker (max(timeout, 5 s)): from its joining or a revocation
    /// to the next assignment. A group waits for every member to rejoin, so one frozen or
    /// gone (until its `session.timeout.ms` ends) holds every other member up. A member the
    /// group assigned nothing (more members than partitions) is not held up: it stands by.
    fn held_up(&mut self) -> Option<String> {
        let client = self.client.as_ref()?;
        let (since, seen) = {
            let group = client.context().group();
            (group.rebalance_since?, group.assignment_seen)
        };
        let waited = since.elapsed();
        if waited < self.patience() || !self.positions().ok()?.is_empty() {
            return None;
        }
        let what = if seen {
            "a rebalance"
        } else {
            "its first assignment"
        };
        Some(format!(
            "{}: no partition for {} s, waiting for {what} (the group waits for every member \
             to rejoin: one frozen or gone holds it up until its session.timeout.ms ends)",
            self.what(),
            waited.as_secs()
        ))
    }

    fn bus_owns_position(&self) -> bool {
        true
    }

    /// Keeps the member in the group while the host handles the batch (librdkafka counts
    /// `max.poll.interval.ms` between two polls): the partitions are paused, so nothing more
    /// is fetched; a record already fetched is kept for the next `poll`. A revocation that waited
    /// for the host longer than its patience is carried out here.
    fn serve(&mut self) -> PluginResult<()> {
        if self.client.is_none() {
            return Ok(());
        }
        // A batch that takes the host this long: nothing more is fetched until it is
        // acknowledged (a quick batch never pauses: resuming costs a fetch round). Asked again
        // at every call: an assignment received meanwhile comes resumed.
        self.paused = false;
        self.set_paused(true)?;
        let GroupConsumer {
            client,
            stash,
            client_errors,
            ..
        } = self;
        let Some(client) = client.as_ref() else {
            return Ok(());
        };
        for _ in 0..1024 {
            match client.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => stash.push_back(message.detach()),
                Some(Err(error)) => {
                    *client_errors += 1;
                    buslink_plugin_api::log::debug(format!("Kafka: {error}"));
                }
            }
        }
        let expired = client
            .context()
            .group()
            .deferred
            .as_ref()
            .filter(|(_, until)| Instant::now() >= *until)
            .map(|(partitions, _)| partitions.clone());
        if let Some(partitions) = expired {
            buslink_plugin_api::log::warn(format!(
                "{}: the host did not finish the records of {} within the group's rebalance \
                 patience: given up now; the next owner reads them again from the last commit",
                self.what(),
                names(&partitions)
            ));
            if let Some(client) = self.client.as_ref() {
                client.context().give_up(client, &partitions);
            }
            // Their records in the host's hands are no longer ours to commit: the next owner's
            // position must never be moved back by an acknowledgement that comes later.
            self.delivered
                .retain(|(partition, _)| !partitions.contains(partition));
            for partition in &partitions {
                self.next.remove(partition);
            }
        }
        Ok(())
    }

    /// Commits to the group, per partition, the position after every record handed over up
    /// to `offset` (in delivery order).
    fn acknowledge(&mut self, offset: &Offset) -> PluginResult<()> {
        let Offset::String(text) = offset else {
            return Ok(());
        };
        let Some(acked) = parse_event_offset(text) else {
            return Ok(());
        };
        if !self.delivered.contains(&acked) {
            // Not ours (an earlier run's, or a partition given up since): nothing to store.
            self.finish_revocation();
            return Ok(());
        }
        let what = self.what();
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| PluginError::internal("the consumer is not open"))?;
        let positions = {
            let mut group = client.context().group();
            while let Some((partition, at)) = self.delivered.pop_front() {
                let done = (partition.clone(), at) == acked;
                let next = group.unstored.entry(partition).or_insert(at + 1);
                *next = (*next).max(at + 1);
                if done {
                    break;
                }
            }
            group.in_flight = self.delivered.iter().map(|(p, _)| p.clone()).collect();
            group.unstored.clone()
        };
        let outcome = match commit_positions(client, &positions) {
            Ok(()) => {
                let mut group = client.context().group();
                group
                    .unstored
                    .retain(|partition, next| positions.get(partition) != Some(next));
                self.commits += 1;
                self.acked
                    .extend(positions.iter().map(|(p, next)| (p.clone(), *next)));
                Ok(())
            }
            Err(error) => Err(PluginError::connect(format!(
                "{what}: cannot commit the group's offsets ({}): {error}",
                names(&positions.keys().cloned().collect::<Vec<_>>())
            ))),
        };
        // A revocation that waited for these records goes on now (what was acknowledged is
        // committed again first, should the commit above have failed).
        self.finish_revocation();
        outcome
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("gaps".to_owned(), self.gaps),
            ("undecodable_bodies".to_owned(), self.tally.undecodable),
            ("null_values".to_owned(), self.tally.null_values),
            ("client_errors".to_owned(), self.client_errors),
            ("group_commits".to_owned(), self.commits),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_offsets_name_topic_partition_and_offset() {
        let text = event_offset("hermes.events", 3, 1234);
        assert_eq!(text, "hermes.events:3:1234");
        assert_eq!(
            parse_event_offset(&text),
            Some((("hermes.events".to_owned(), 3), 1234))
        );
        assert_eq!(parse_event_offset("nonsense"), None);
        assert_eq!(parse_event_offset("t:x:1"), None);
    }
}
