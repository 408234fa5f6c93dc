//! Test fixture plugin `faulty`: a bus of `events` synthetic events held in memory, whose
//! consumer panics or fails on demand. Offsets are integers (1, 2, ...) or, with
//! `string_offsets`, strings (`"ev-0001"`, ...) that have no successor, to prove the host
//! resumes through `seek_after`.

use buslink_plugin_api::{
    Body, Consumer, ConsumerClass, Context, Event, EventBatch, Offset, OffsetRef, PluginError,
    PluginResult, PollStatus,
};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How many events the bus holds.
    #[serde(default = "default_events")]
    events: u64,
    /// Use string offsets.
    #[serde(default)]
    string_offsets: bool,
    /// Panic in this method: new, open, seek, poll, close.
    #[serde(default)]
    panic_in: Option<String>,
    /// With `panic_in = "poll"`: panic when the event with this index (1-based) is next.
    #[serde(default)]
    panic_at_event: Option<u64>,
    /// Fail `open` with a connect error this many times before succeeding.
    #[serde(default)]
    failing_opens: u32,
    /// Once every event was delivered, `poll` never returns (ignoring its timeout): a plugin
    /// stuck in a call.
    #[serde(default)]
    hang_at_end: bool,
    /// At the end, answer `Idle` (cannot tell) instead of `Drained`: a plugin whose bus has no
    /// way to say it is drained.
    #[serde(default)]
    cannot_tell: bool,
    /// Say the bus keeps the position (as a Kafka consumer group does): the daemon then
    /// refuses `pause` for this consumer.
    #[serde(default)]
    owns_position: bool,
}

fn default_events() -> u64 {
    10
}

pub struct FaultyConsumer {
    settings: Settings,
    /// Index (1-based) of the next event.
    next: u64,
    opens: u32,
}

impl FaultyConsumer {
    fn maybe_panic(&self, method: &str) {
        if self.settings.panic_in.as_deref() == Some(method)
            && (method != "poll"
                || self
                    .settings
                    .panic_at_event
                    .is_none_or(|at| at == self.next))
        {
            panic!("deliberate panic in {method}");
        }
    }

    fn offset_text(index: u64) -> String {
        format!("ev-{index:04}")
    }

    fn index_of(&self, offset: &Offset) -> PluginResult<u64> {
        let index = match offset {
            Offset::Int(i) if !self.settings.string_offsets => u64::try_from(*i).ok(),
            Offset::String(s) if self.settings.string_offsets => {
                s.strip_prefix("ev-").and_then(|n| n.parse().ok())
            }
            _ => None,
        };
        index
            .filter(|i| (1..=self.settings.events + 1).contains(i))
            .ok_or_else(|| PluginError::offset_not_found(format!("no event at offset {offset}")))
    }
}

impl ConsumerClass for FaultyConsumer {
    const NAME: &'static str = "FaultyConsumer";
    const DESCRIPTION: &'static str = "in-memory test bus that panics or fails on demand";
    const SETTINGS_DOC: &'static str = "- `events`: how many events (default 10)\n\
- `string_offsets`: use string offsets\n- `panic_in`: new | open | seek | poll | close\n\
- `panic_at_event`: with panic_in = poll, the event index\n- `failing_opens`: transient open failures\n\
- `hang_at_end`: once every event was delivered, poll never returns";
    type Settings = Settings;

    fn new(settings: Settings, _context: &Context) -> PluginResult<Self> {
        if settings.panic_in.as_deref() == Some("new") {
            panic!("deliberate panic in new");
        }
        Ok(FaultyConsumer {
            settings,
            next: 1,
            opens: 0,
        })
    }
}

impl Consumer for FaultyConsumer {
    fn open(&mut self) -> PluginResult<()> {
        self.maybe_panic("open");
        self.opens += 1;
        if self.opens <= self.settings.failing_opens {
            return Err(PluginError::connect(format!(
                "deliberate connect failure {} of {}",
                self.opens, self.settings.failing_opens
            )));
        }
        Ok(())
    }

    fn close(&mut self) -> PluginResult<()> {
        self.maybe_panic("close");
        Ok(())
    }

    fn seek_to_beginning(&mut self) -> PluginResult<()> {
        self.maybe_panic("seek");
        self.next = 1;
        Ok(())
    }

    fn seek(&mut self, offset: &Offset) -> PluginResult<()> {
        self.maybe_panic("seek");
        self.next = self.index_of(offset)?;
        Ok(())
    }

    fn seek_after(&mut self, offset: &Offset) -> PluginResult<()> {
        self.maybe_panic("seek");
        self.next = self.index_of(offset)? + 1;
        Ok(())
    }

    fn next_offset(&self, offset: OffsetRef<'_>) -> Option<Offset> {
        match offset {
            OffsetRef::Int(i) => Some(Offset::Int(i + 1)),
            _ => None,
        }
    }

    fn set_timeout(&mut self, _timeout: Option<Duration>) -> PluginResult<()> {
        Ok(())
    }

    fn bus_owns_position(&self) -> bool {
        self.settings.owns_position
    }

    fn poll(&mut self, batch: &mut EventBatch) -> PluginResult<PollStatus> {
        if self.next > self.settings.events {
            if self.settings.hang_at_end {
                // Stuck for good (the test process kills the daemon's group at its end).
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            return Ok(if self.settings.cannot_tell {
                PollStatus::Idle
            } else {
                PollStatus::Drained
            });
        }
        while self.next <= self.settings.events && !batch.is_full() {
            self.maybe_panic("poll");
            let text = Self::offset_text(self.next);
            let body = format!("{{\"index\":{}}}", self.next);
            let offset = if self.settings.string_offsets {
                OffsetRef::String(&text)
            } else {
                OffsetRef::Int(self.next as i64)
            };
            batch.push(Event {
                offset,
                timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + self.next as i64, 0)
                    .unwrap_or_default(),
                category: if self.next.is_multiple_of(2) {
                    "even"
                } else {
                    "odd"
                },
                body: Body::Json(&body),
            });
            self.next += 1;
        }
        Ok(PollStatus::Ready)
    }
}

/// Settings of [`PanickyHandler`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSettings {
    /// Appends the offset of every event handled, one per line.
    record: String,
    /// Panics on events whose body contains this text while the file `panic_while` exists.
    panic_on: String,
    panic_while: String,
}

/// A handler that records what it handles and panics on demand.
pub struct PanickyHandler {
    record: std::path::PathBuf,
    panic_on: String,
    panic_while: std::path::PathBuf,
}

impl buslink_plugin_api::HandlerClass for PanickyHandler {
    const NAME: &'static str = "PanickyHandler";
    const DESCRIPTION: &'static str = "records events, panics on demand";
    const SETTINGS_DOC: &'static str = "- `record`, `panic_on`, `panic_while`";
    type Settings = HandlerSettings;

    fn new(settings: HandlerSettings, context: &Context) -> PluginResult<Self> {
        Ok(PanickyHandler {
            record: context.resolve_path(&settings.record),
            panic_on: settings.panic_on,
            panic_while: context.resolve_path(&settings.panic_while),
        })
    }
}

impl buslink_plugin_api::EventHandler for PanickyHandler {
    fn handle(&mut self, event: &Event<'_>) -> PluginResult<()> {
        let Body::Json(text) = event.body else {
            return Ok(());
        };
        if text.contains(&self.panic_on) && self.panic_while.exists() {
            panic!("deliberate panic on offset {}", event.offset);
        }
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.record)
            .map_err(|e| PluginError::internal(e.to_string()))?;
        writeln!(file, "{}", event.offset).map_err(|e| PluginError::internal(e.to_string()))
    }
}

buslink_plugin_api::export_plugin! {
    name: "faulty",
    version: env!("CARGO_PKG_VERSION"),
    consumers: [FaultyConsumer],
    handlers: [PanickyHandler],
}
