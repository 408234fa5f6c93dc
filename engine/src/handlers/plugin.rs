//! `type = "plugin"`: a handler class from a plugin library. Each event is lent across the
//! boundary for the length of the call; `sync` (before every offset commit) calls the
//! plugin's `on_save`.

use super::{DispatchedEvent, Handler, HandlerError};
use crate::config::PluginHandlerConfig;
use crate::plugin::{find_library, HandlerBox, LoadedPlugin};
use buslink_plugin_api::ffi::REventRef;
use buslink_plugin_api::PluginError;
use std::path::{Path, PathBuf};

pub(super) struct PluginHandler {
    inner: HandlerBox,
    label: String,
}

impl PluginHandler {
    pub(super) fn new(
        config: &PluginHandlerConfig,
        base_dir: &Path,
        plugin_dirs: &[PathBuf],
    ) -> Result<Self, String> {
        let path =
            find_library(&config.plugin, base_dir, plugin_dirs).map_err(|e| e.to_string())?;
        let plugin =
            LoadedPlugin::shared(&path, config.allow_insecure).map_err(|e| e.to_string())?;
        let info = plugin.info();
        if !info.handler_classes.iter().any(|c| c.name == config.class) {
            return Err(info.missing_class(&path, false, &config.class));
        }
        let label = format!("plugin '{}' class '{}'", info.name, config.class);
        let inner = plugin
            .new_handler(&config.class, &config.settings_json, base_dir)
            .map_err(|e| describe(&label, &e))?;
        tracing::info!("loaded handler {label} from {}", path.display());
        Ok(PluginHandler { inner, label })
    }
}

fn describe(label: &str, error: &PluginError) -> String {
    format!("{label}: [{}] {error}", error.kind())
}

impl Handler for PluginHandler {
    fn handle(&mut self, event: &DispatchedEvent<'_>) -> Result<(), HandlerError> {
        self.inner
            .handle(REventRef::new(&event.event))
            .into_result()
            .map_err(|e| HandlerError::new(describe(&self.label, &e.into())))
    }

    fn sync(&mut self) -> Result<(), HandlerError> {
        self.inner
            .save()
            .into_result()
            .map_err(|e| HandlerError::new(describe(&self.label, &e.into())))
    }
}
