//! Example handler plugin `statefiles`: keeps the current state of every object a Hermes bus
//! describes, one JSON file per object type (`DIR/SRVUsers.json`:
//! `{"<objpkey as JSON>": {attributes}}`), written atomically on each `on_save`.
//!
//! - `added` sets an object's attributes, `modified` applies the diff, `removed` deletes it;
//! - an initsync sequence carries the whole state: `on_initsync_start` forgets everything;
//! - values keep their Hermes form (`HermesDatetime(...)`, `HermesBytes(...)`).

use buslink_plugin_api::hermes_value::{Change, HermesValue};
use buslink_plugin_api::{Context, EventHandler, HandlerClass, PluginError, PluginResult};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// The view's files: read by the owner's group at most, whatever the umask.
const FILE_MODE: u32 = 0o640;
/// The view's directory: never writable by others.
const DIR_MODE: u32 = 0o750;

/// `settings` of the handler.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The directory of the state files (relative: to the config file).
    dir: String,
}

type Objects = BTreeMap<String, BTreeMap<String, HermesValue>>;

pub struct StateFilesHandler {
    dir: PathBuf,
    /// objtype -> objpkey text -> attributes.
    state: BTreeMap<String, Objects>,
    /// Object types changed since the last save (removed types: their file goes).
    dirty: BTreeSet<String>,
}

impl HandlerClass for StateFilesHandler {
    const NAME: &'static str = "StateFilesHandler";
    const DESCRIPTION: &'static str =
        "materialised view of a Hermes bus: one JSON file per object type, saved atomically";
    const SETTINGS_DOC: &'static str = "- `dir` (string, required): the directory of the state \
        files, relative to the config file; created if needed. Existing files are loaded at start.";
    type Settings = Settings;

    fn validate(settings: &Settings) -> PluginResult<()> {
        if settings.dir.is_empty() {
            return Err(PluginError::config("`dir` must name a directory").with_key("dir"));
        }
        Ok(())
    }

    fn new(settings: Settings, context: &Context) -> PluginResult<Self> {
        let dir = context.resolve_path(&settings.dir);
        let mut handler = StateFilesHandler {
            dir,
            state: BTreeMap::new(),
            dirty: BTreeSet::new(),
        };
        handler.load()?;
        Ok(handler)
    }
}

impl StateFilesHandler {
    /// Loads the files of an earlier run: a restart goes on from the saved state.
    fn load(&mut self) -> PluginResult<()> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(objtype) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PluginError::internal(format!("{}: {e}", path.display())))?;
            let objects: Map<String, Value> = serde_json::from_str(&text)
                .map_err(|e| PluginError::internal(format!("{}: {e}", path.display())))?;
            let typed = objects
                .into_iter()
                .map(|(key, attrs)| {
                    let attrs = attrs
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), HermesValue::from_json(v)))
                                .collect()
                        })
                        .unwrap_or_default();
                    (key, attrs)
                })
                .collect();
            self.state.insert(objtype.to_owned(), typed);
        }
        Ok(())
    }

    fn apply(&mut self, change: &Change) {
        let objects = self.state.entry(change.objtype.clone()).or_default();
        let key = change.objpkey.to_string();
        match &change.attributes {
            buslink_plugin_api::hermes_value::Attributes::None => {
                objects.remove(&key);
            }
            attributes => attributes.apply_to(objects.entry(key).or_default()),
        }
        self.dirty.insert(change.objtype.clone());
    }

    fn write_atomically(&self, objtype: &str, objects: Option<&Objects>) -> std::io::Result<()> {
        let path = self.dir.join(format!("{objtype}.json"));
        let Some(objects) = objects else {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        let json: Map<String, Value> = objects
            .iter()
            .map(|(key, attrs)| {
                let attrs: Map<String, Value> = attrs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                (key.clone(), Value::Object(attrs))
            })
            .collect();
        let temp = self.dir.join(format!(".{objtype}.json.tmp"));
        // Never more open than 0640, whatever the umask (a stale temp file is replaced).
        let _ = std::fs::remove_file(&temp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temp)?;
        file.write_all(serde_json::to_string_pretty(&json)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

impl EventHandler for StateFilesHandler {
    fn on_initsync_start(&mut self, _schema: &Value) -> PluginResult<()> {
        self.dirty.extend(self.state.keys().cloned());
        self.state.clear();
        Ok(())
    }

    fn on_added(&mut self, change: &Change) -> PluginResult<()> {
        self.apply(change);
        Ok(())
    }

    fn on_modified(&mut self, change: &Change) -> PluginResult<()> {
        self.apply(change);
        Ok(())
    }

    fn on_removed(&mut self, change: &Change) -> PluginResult<()> {
        self.apply(change);
        Ok(())
    }

    fn on_save(&mut self) -> PluginResult<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.dir)
            .map_err(|e| PluginError::internal(format!("{}: {e}", self.dir.display())))?;
        for objtype in &self.dirty {
            self.write_atomically(objtype, self.state.get(objtype))
                .map_err(|e| PluginError::internal(format!("saving {objtype}: {e}")))?;
        }
        self.dirty.clear();
        Ok(())
    }
}

buslink_plugin_api::export_plugin! {
    name: "statefiles",
    version: env!("CARGO_PKG_VERSION"),
    handlers: [StateFilesHandler],
}
