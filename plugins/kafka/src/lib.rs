//! The Kafka consumer: Hermes's production bus.
//!
//! hermes-server's kafka producer writes each event as a record whose key is the event's
//! category (`base`, `initsync`) and whose value is the event as JSON text; the record's
//! timestamp is the event's. hermes-client's kafka consumer assigns itself one partition of
//! the topic and seeks; it never commits to Kafka: its offset (the Kafka offset) lives in its
//! cache file. [`KafkaConsumer`] does the same, the offset living in buslink's offset cache,
//! so Hermes mode (initsync bootstrap) works on it as on the sqlite bus.
//!
//! - Offsets are Kafka offsets (integers from 0); the cache's `next_offset` is the last
//!   handled + 1, as hermes-client's `nextoffset`.
//! - An offset gone from the partition (retention) is reported as a gap, never skipped
//!   silently (librdkafka's `auto.offset.reset` is `error`).
//! - `mode = "group"`: a consumer group shares the topics' partitions among buslink processes;
//!   the position lives in the group, committed after the host committed (see `group`).
//! - librdkafka is built from its bundled sources with TLS (mutual TLS as Hermes's `ssl`)
//!   and SASL PLAIN / SCRAM.

mod assign;
mod client;
mod consumer;
mod group;
mod reader;
pub mod settings;

pub use consumer::{KafkaConsumer, KafkaConsumerReader};
pub use settings::KafkaSettings;

buslink_plugin_api::export_plugin! {
    name: "kafka",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [KafkaConsumer, KafkaConsumerReader],
}
