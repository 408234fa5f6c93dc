//! The error queue (`on_failure = "error-queue"`): events a handler failed on, kept in order per
//! object, retried later without stopping the stream.
//!
//! - After its retries, a failed event joins the queue and the offset moves on.
//! - While an object (Hermes: objtype + objpkey; else the handler's `queue_key` field of the
//!   body, or the category) has an event queued for a handler, that object's later events queue
//!   behind it without being tried: per-object order holds.
//! - Every `retry_interval_ms` the oldest event of each object is tried again; on success the
//!   object's next events follow at once, in order.
//! - `STATE_DIR/NAME.error-queue.json`, written atomically (temp, fsync, rename, fsync dir)
//!   before any offset commit that moves past a newly queued event.

use crate::handlers::{ConfiguredHandler, DispatchedEvent};
use base64::Engine as _;
use buslink_plugin_api::hermes::HermesEvent;
use buslink_plugin_api::{Body, Event, Offset};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A problem with the queue file.
#[derive(Debug, thiserror::Error)]
#[error("error queue {}: {message}", .path.display())]
pub struct QueueError {
    pub path: PathBuf,
    pub message: String,
}

/// An event body, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoredBody {
    Json(String),
    Base64(String),
}

/// Warns about queued events whose handler the config no longer has (or no longer queues
/// for): nothing will ever retry them, and they are named so that an operator drops them or
/// brings the handler back.
pub fn warn_orphans(queue: &ErrorQueue, handlers: &[crate::config::HandlerConfig]) {
    let mut orphans: Vec<(&str, usize)> = Vec::new();
    for event in queue.events() {
        let retried = handlers.iter().any(|h| {
            h.name == event.handler && h.on_failure == crate::config::FailurePolicy::ErrorQueue
        });
        if retried {
            continue;
        }
        match orphans.iter_mut().find(|(name, _)| *name == event.handler) {
            Some((_, count)) => *count += 1,
            None => orphans.push((&event.handler, 1)),
        }
    }
    for (handler, count) in orphans {
        tracing::warn!(
            "error queue {}: {count} event(s) of handler '{handler}', which the config no longer \
             has with on_failure = \"error-queue\": nothing will retry them; bring the handler \
             back, or drop them (buslink ctl errors drop, buslink errors drop)",
            queue.path().display()
        );
    }
}

/// One queued event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub id: u64,
    pub handler: String,
    /// The object the event is about: events of one key are retried in order.
    pub key: String,
    pub offset: Offset,
    pub timestamp: DateTime<Utc>,
    pub category: String,
    pub body: StoredBody,
    /// The last error; `None` for an event queued behind an earlier one and never tried.
    pub error: Option<String>,
    pub attempts: u32,
    pub queued_at: DateTime<Utc>,
    #[serde(default)]
    pub last_try: Option<DateTime<Utc>>,
}

impl QueuedEvent {
    /// The body, as the event's JSON text or bytes.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            StoredBody::Json(text) => text.clone().into_bytes(),
            StoredBody::Base64(text) => base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueFile {
    version: u32,
    next_id: u64,
    events: Vec<QueuedEvent>,
}

/// The error queue of one consumer.
#[derive(Debug)]
pub struct ErrorQueue {
    path: PathBuf,
    dir: PathBuf,
    file: QueueFile,
    dirty: bool,
}

/// The key of an event for per-object ordering.
pub fn object_key(event: &DispatchedEvent<'_>, queue_key: Option<&str>) -> String {
    if let Body::Json(text) = event.event.body {
        if let Some(field) = queue_key {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
                if let Some(found) = value.get(field) {
                    return format!("{field}={found}");
                }
            }
        } else if let Ok(hermes) = HermesEvent::from_json(text) {
            if let (Some(objtype), Some(objpkey)) = (&hermes.objtype, &hermes.objpkey) {
                return format!("{objtype}/{objpkey}");
            }
        }
    }
    format!("category={}", event.event.category)
}

/// How `errors list` (offline, and `ctl errors list`) shows consumer `consumer`'s queued
/// `events`: a line per event, or a JSON array (`json`) of [`QueuedEvent`]s.
pub fn describe(consumer: &str, events: &[QueuedEvent], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(events).unwrap_or_default() + "\n";
    }
    if events.is_empty() {
        return format!("consumer '{consumer}': the error queue is empty\n");
    }
    let mut text = format!("consumer '{consumer}': {} queued event(s)\n", events.len());
    for event in events {
        text.push_str(&format!(
            "#{} handler '{}' offset {} object {} attempts {} queued {}: {}\n",
            event.id,
            event.handler,
            event.offset,
            event.key,
            event.attempts,
            event.queued_at.to_rfc3339(),
            event
                .error
                .as_deref()
                .unwrap_or("waiting behind an earlier event of the same object")
        ));
    }
    text
}

impl ErrorQueue {
    /// Loads the queue of consumer `name` (empty when there is no file).
    pub fn load(state_dir: &Path, name: &str) -> Result<ErrorQueue, QueueError> {
        let path = state_dir.join(format!("{name}.error-queue.json"));
        let file = match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| QueueError {
                path: path.clone(),
                message: format!("corrupt ({e}); fix or remove it"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => QueueFile {
                version: 1,
                next_id: 1,
                events: Vec::new(),
            },
            Err(e) => {
                return Err(QueueError {
                    path,
                    message: e.to_string(),
                })
            }
        };
        Ok(ErrorQueue {
            path,
            dir: state_dir.to_path_buf(),
            file,
            dirty: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The queue as `buslink errors list` prints it (`json`: a pretty JSON array).
    pub fn describe(&self, consumer: &str, json: bool) -> String {
        describe(consumer, self.events(), json)
    }

    pub fn events(&self) -> &[QueuedEvent] {
        &self.file.events
    }

    pub fn is_empty(&self) -> bool {
        self.file.events.is_empty()
    }

    /// Whether `handler` has an event of `key` waiting.
    pub fn holds(&self, handler: &str, key: &str) -> bool {
        self.file
            .events
            .iter()
            .any(|queued| queued.handler == handler && queued.key == key)
    }

    /// Whether `handler` has any event waiting.
    pub fn holds_any(&self, handler: &str) -> bool {
        self.file
            .events
            .iter()
            .any(|queued| queued.handler == handler)
    }

    /// Queues an event; `error` is `None` when it only waits behind an earlier one.
    pub fn push(
        &mut self,
        handler: &str,
        key: String,
        event: &Event<'_>,
        error: Option<String>,
        attempts: u32,
    ) -> u64 {
        let id = self.file.next_id.max(1);
        self.file.next_id = id + 1;
        let body = match event.body {
            Body::Json(text) => StoredBody::Json(text.to_owned()),
            Body::Bytes(bytes) => {
                StoredBody::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        };
        self.file.events.push(QueuedEvent {
            id,
            handler: handler.to_owned(),
            key,
            offset: event.offset.to_owned(),
            timestamp: event.timestamp,
            category: event.category.to_owned(),
            body,
            error,
            attempts,
            queued_at: Utc::now(),
            last_try: None,
        });
        self.dirty = true;
        id
    }

    /// The ids of the first event of every (handler, key), oldest first: what a retry tries.
    pub fn heads(&self) -> Vec<u64> {
        let mut seen = std::collections::HashSet::new();
        self.file
            .events
            .iter()
            .filter(|queued| seen.insert((queued.handler.as_str(), queued.key.as_str())))
            .map(|queued| queued.id)
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<&QueuedEvent> {
        self.file.events.iter().find(|queued| queued.id == id)
    }

    /// The next event of the same handler and key after `id`.
    pub fn next_of_same_object(&self, id: u64) -> Option<u64> {
        let current = self.get(id)?;
        self.file
            .events
            .iter()
            .find(|queued| {
                queued.id > id && queued.handler == current.handler && queued.key == current.key
            })
            .map(|queued| queued.id)
    }

    /// Removes an event (handled, or dropped by an operator).
    pub fn remove(&mut self, id: u64) -> Option<QueuedEvent> {
        let index = self.file.events.iter().position(|queued| queued.id == id)?;
        self.dirty = true;
        Some(self.file.events.remove(index))
    }

    /// Records a failed retry.
    pub fn failed(&mut self, id: u64, error: String) {
        if let Some(queued) = self.file.events.iter_mut().find(|queued| queued.id == id) {
            queued.error = Some(error);
            queued.attempts += 1;
            queued.last_try = Some(Utc::now());
            self.dirty = true;
        }
    }

    /// Writes the queue if it changed.
    pub fn save(&mut self) -> Result<(), QueueError> {
        if !self.dirty {
            return Ok(());
        }
        let error = |e: std::io::Error| QueueError {
            path: self.path.clone(),
            message: e.to_string(),
        };
        crate::state_file::create_dir_all(&self.dir).map_err(error)?;
        let mut text =
            serde_json::to_vec_pretty(&self.file).map_err(|e| error(std::io::Error::other(e)))?;
        text.push(b'\n');
        let temp = self.path.with_extension("json.tmp");
        let mut file = crate::state_file::create_temp(&temp).map_err(error)?;
        file.write_all(&text).map_err(error)?;
        file.sync_all().map_err(error)?;
        drop(file);
        fs::rename(&temp, &self.path).map_err(error)?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(error)?;
        self.dirty = false;
        Ok(())
    }
}
/// Tries `handler`'s queued events again (only the object of `only` when given): for each
/// object, oldest first, until one fails. Returns how many were handled.
pub fn retry_queued(
    handler: &mut ConfiguredHandler,
    queue: &mut ErrorQueue,
    only: Option<u64>,
) -> usize {
    let mut done = 0;
    for head in queue.heads() {
        let Some(first) = queue.get(head) else {
            continue;
        };
        if first.handler != handler.name
            || only.is_some_and(|id| queue.get(id).is_none_or(|e| e.key != first.key))
        {
            continue;
        }
        let mut current = Some(head);
        while let Some(id) = current {
            let Some(entry) = queue.get(id).cloned() else {
                break;
            };
            let body = entry.body_bytes();
            let event = buslink_plugin_api::Event {
                offset: entry.offset.as_ref(),
                timestamp: entry.timestamp,
                category: &entry.category,
                body: match &entry.body {
                    StoredBody::Json(text) => buslink_plugin_api::Body::Json(text),
                    StoredBody::Base64(_) => buslink_plugin_api::Body::Bytes(&body),
                },
            };
            match handler.handler.handle(&DispatchedEvent::new(event)) {
                Ok(()) => {
                    tracing::info!(
                        "handler '{}': queued event #{id} (offset {}) handled on retry",
                        handler.name,
                        entry.offset
                    );
                    current = queue.next_of_same_object(id);
                    queue.remove(id);
                    done += 1;
                }
                Err(error) => {
                    tracing::warn!(
                        "handler '{}': queued event #{id} (offset {}) failed again: {}",
                        handler.name,
                        entry.offset,
                        error.message
                    );
                    queue.failed(id, error.message);
                    break;
                }
            }
        }
    }
    done
}
