//! Test fixture: a plugin built against another plugin-api version.

use buslink_plugin_api::{
    Consumer, ConsumerClass, Context, EventBatch, Offset, PluginResult, PollStatus,
};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

pub struct OtherApiConsumer;

impl ConsumerClass for OtherApiConsumer {
    const NAME: &'static str = "OtherApiConsumer";
    const DESCRIPTION: &'static str = "built against another plugin-api";
    const SETTINGS_DOC: &'static str = "";
    type Settings = Settings;

    fn new(_settings: Settings, _context: &Context) -> PluginResult<Self> {
        Ok(OtherApiConsumer)
    }
}

impl Consumer for OtherApiConsumer {
    fn open(&mut self) -> PluginResult<()> {
        Ok(())
    }
    fn close(&mut self) -> PluginResult<()> {
        Ok(())
    }
    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        Ok(())
    }
    fn seek(&mut self, _offset: &Offset) -> PluginResult<()> {
        Ok(())
    }
    fn set_timeout(&mut self, _timeout: Option<Duration>) -> PluginResult<()> {
        Ok(())
    }
    fn poll(&mut self, _batch: &mut EventBatch) -> PluginResult<PollStatus> {
        Ok(PollStatus::Idle)
    }
}

buslink_plugin_api::export_plugin! {
    name: "other-api",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [OtherApiConsumer],
}
