//! The `KafkaConsumer` class: `mode = "assign"` ([`AssignConsumer`]) or `mode = "group"`
//! ([`GroupConsumer`]), chosen by the settings; and `KafkaConsumerReader`, its reader for
//! replays: the same settings, never joining a group (group mode: [`GroupReader`]). buslink's
//! replays look for a class named `CLASS` + `Reader` when a consumer's bus keeps its position.

use crate::assign::AssignConsumer;
use crate::group::GroupConsumer;
use crate::reader::GroupReader;
use crate::settings::{self, KafkaSettings, Mode};
use buslink_plugin_api::{
    Consumer, ConsumerClass, Context, EventBatch, Offset, OffsetRef, PluginResult, PollStatus,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Consumes Kafka, in the mode the settings name (`Role`: a member of the bus, or a reader of
/// a past range for a replay).
pub struct Kafka<Role>(Box<dyn Consumer>, std::marker::PhantomData<Role>);

/// What a class does in group mode, and its name.
pub trait Role: Send + 'static {
    const NAME: &'static str;
    const DESCRIPTION: &'static str;
    /// The consumer of a group-mode config.
    fn group(config: crate::settings::Config) -> Box<dyn Consumer>;
}

/// The consumer a config names: joins the group in group mode.
pub struct Member;
/// The reader of a replay: never joins a group.
pub struct Reader;

impl Role for Member {
    const NAME: &'static str = "KafkaConsumer";
    const DESCRIPTION: &'static str = "Kafka: one partition of a topic (hermes-client's kafka \
         consumer, offsets kept by buslink) or a consumer group (offsets kept by the group)";
    fn group(config: crate::settings::Config) -> Box<dyn Consumer> {
        Box::new(GroupConsumer::new(config))
    }
}

impl Role for Reader {
    const NAME: &'static str = "KafkaConsumerReader";
    const DESCRIPTION: &'static str = "Kafka, read for a replay with a KafkaConsumer's \
         settings: assign mode as KafkaConsumer; group mode assigns the range's partition (or \
         every partition, from the beginning) to itself and never joins the group";
    fn group(config: crate::settings::Config) -> Box<dyn Consumer> {
        Box::new(GroupReader::new(config))
    }
}

/// `KafkaConsumer`: assign or group mode, as the settings say.
pub type KafkaConsumer = Kafka<Member>;
/// `KafkaConsumerReader`: a replay's reader, with a member's settings.
pub type KafkaConsumerReader = Kafka<Reader>;

impl<R: Role> ConsumerClass for Kafka<R> {
    const NAME: &'static str = R::NAME;
    const DESCRIPTION: &'static str = R::DESCRIPTION;
    const SETTINGS_DOC: &'static str = settings::SETTINGS_DOC;

    type Settings = KafkaSettings;

    fn validate(settings: &KafkaSettings) -> PluginResult<()> {
        settings::validate(settings)
    }

    fn new(settings: KafkaSettings, context: &Context) -> PluginResult<Self> {
        let config = settings::resolve(settings, context)?;
        Ok(Kafka(
            match config.mode {
                Mode::Assign => Box::new(AssignConsumer::new(config)),
                Mode::Group => R::group(config),
            },
            std::marker::PhantomData,
        ))
    }
}

impl<Role: Send + 'static> Consumer for Kafka<Role> {
    fn open(&mut self) -> PluginResult<()> {
        self.0.open()
    }
    fn close(&mut self) -> PluginResult<()> {
        self.0.close()
    }
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.0.seek_to_beginning()
    }
    fn seek_to_end(&mut self) -> PluginResult<()> {
        self.0.seek_to_end()
    }
    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0.seek(offset)
    }
    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0.seek_after(offset)
    }
    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        self.0.next_offset(offset)
    }
    fn set_timeout(&mut self, timeout: Option<Duration>) -> PluginResult<()> {
        self.0.set_timeout(timeout)
    }
    fn set_stop_when_drained(&mut self, stop: bool) -> PluginResult<()> {
        self.0.set_stop_when_drained(stop)
    }
    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        self.0.poll(batch)
    }
    fn counters(&self) -> Vec<(String, u64)> {
        self.0.counters()
    }
    fn check_position(&mut self, last: &Offset, timestamp: DateTime<Utc>) -> PluginResult<()> {
        self.0.check_position(last, timestamp)
    }
    fn lag(&mut self) -> Option<u64> {
        self.0.lag()
    }
    fn held_up(&mut self) -> Option<String> {
        self.0.held_up()
    }
    fn bus_owns_position(&self) -> bool {
        self.0.bus_owns_position()
    }
    fn acknowledge(&mut self, offset: &Offset) -> PluginResult<()> {
        self.0.acknowledge(offset)
    }
    fn serve(&mut self) -> PluginResult<()> {
        self.0.serve()
    }
    fn find_next_event_of_category(
        &mut self,
        category: &str,
        found: &mut EventBatch,
    ) -> PluginResult<bool> {
        self.0.find_next_event_of_category(category, found)
    }
}
