//! The subprocess protocol's frames (docs/subprocess-protocol.md is its specification): what a
//! host and a plugin executable write to each other over the plugin's stdin and stdout. Both
//! sides of buslink use these types (the host's client in [`subprocess`](crate::subprocess),
//! the plugin's loop in [`serve`](crate::serve)); a plugin in another language writes the same
//! JSON.
//!
//! A frame is a 4-byte big-endian length `N`, then `N` bytes: a 4-byte big-endian length `J`,
//! `J` bytes of UTF-8 JSON (one [`Request`] from the host, one [`Reply`] from the plugin, in
//! turn), and the frame's **body section**, the remaining `N - 4 - J` bytes: the event bodies
//! of a batch, which its events point into (no escaping, no parsing of bodies). A frame longer
//! than [`MAX_FRAME`] is a protocol error.

use crate::offset::Offset;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The protocol versions this build speaks, both ends included.
pub const PROTOCOL: VersionRange = VersionRange { min: 1, max: 1 };

/// The longest frame either side accepts, in bytes (a poll's batch is bounded by the host's
/// `max_bytes` well below it).
pub const MAX_FRAME: usize = 64 << 20;

/// A range of protocol versions, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u32,
    /// The newest version spoken.
    pub max: u32,
}

impl VersionRange {
    /// The highest version both ranges hold, if they overlap.
    pub fn highest_common(self, other: VersionRange) -> Option<u32> {
        let high = self.max.min(other.max);
        (high >= self.min.max(other.min)).then_some(high)
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

/// What the host asks, with the id its reply carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Numbers the request; the reply carries it back.
    pub id: u64,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations: the handshake, building the consumer, and the `Consumer` trait's methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The first request: the host's versions. Answered by [`Hello`].
    Hello {
        /// The versions the host speaks.
        protocol: VersionRange,
        /// The host, for the plugin's log (`buslink-plugin-api 0.5.0`).
        host: String,
    },
    /// Builds the process's one consumer of `class` from its settings. Answered by `null`.
    NewConsumer {
        /// The class name (`class = "..."` in the config).
        class: String,
        /// `[consumer.settings]` as JSON.
        settings: serde_json::Value,
        /// The config file's directory: relative paths in the settings are relative to it.
        config_dir: String,
    },
    /// `Consumer::open`.
    Open,
    /// `Consumer::close`.
    Close,
    /// `Consumer::seek_to_beginning`.
    SeekToBeginning,
    /// `Consumer::seek_to_end` (optional: capability `seek_to_end`).
    SeekToEnd,
    /// `Consumer::seek`.
    Seek {
        /// Where.
        offset: Offset,
    },
    /// `Consumer::seek_after` (optional: capability `seek_after`).
    SeekAfter {
        /// After which event.
        offset: Offset,
    },
    /// `Consumer::next_offset`, answered by an offset or `null` (optional: `next_offset`).
    NextOffset {
        /// The event's offset.
        offset: Offset,
    },
    /// `Consumer::set_timeout`: milliseconds, `null` for none.
    SetTimeout {
        /// How long a poll waits for a first event.
        timeout_ms: Option<u64>,
        /// How long the host waits for a poll's answer before it counts the child as frozen and
        /// kills it: the timeout plus the host's grace, in milliseconds; absent with no timeout
        /// (and from older hosts). A child that must wait longer than `timeout_ms` for a
        /// first event (a Hermes plugin reading its backlog under `--once`) answers before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        poll_limit_ms: Option<u64>,
    },
    /// `Consumer::set_stop_when_drained` (optional: `set_stop_when_drained`).
    SetStopWhenDrained {
        /// Stop when drained (`run --once`).
        stop: bool,
    },
    /// `Consumer::poll`, answered by a [`Batch`].
    Poll {
        /// The most events the batch takes.
        max_events: usize,
        /// The most bytes of event data it takes (one larger event still fits alone).
        max_bytes: usize,
    },
    /// `Consumer::find_next_event_of_category`, answered by a [`Batch`] of the event found or
    /// of none (optional: `find_next_event_of_category`).
    FindNextEventOfCategory {
        /// The category.
        category: String,
    },
    /// `Consumer::check_position` (optional: `check_position`).
    CheckPosition {
        /// The last event handled.
        offset: Offset,
        /// Its timestamp, microseconds since the Unix epoch.
        timestamp_us: i64,
    },
    /// `Consumer::lag`, answered by a number or `null` (optional: `lag`).
    Lag,
    /// `Consumer::held_up`, answered by the reason or `null` (optional: `held_up`).
    HeldUp,
    /// `Consumer::counters`, answered by `[[name, value], ...]` (optional: `counters`).
    Counters,
    /// `Consumer::query`, answered by the text (optional: `query`).
    Query {
        /// The command.
        command: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// `Consumer::bus_owns_position`, answered by a boolean (optional: `bus_owns_position`).
    BusOwnsPosition,
    /// `Consumer::acknowledge` (optional: `acknowledge`).
    Acknowledge {
        /// Everything up to this event was handled and committed.
        offset: Offset,
    },
    /// `Consumer::serve` (optional: `serve`).
    Serve,
    /// The host is done: the plugin answers `null` and exits 0.
    Bye,
}

/// The plugin's answer to [`Op::Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The versions the plugin speaks.
    pub protocol: VersionRange,
    /// The version both use from now on: the highest both speak.
    pub chosen: u32,
    /// The plugin's name and version.
    pub plugin: PluginName,
    /// Its consumer classes.
    pub classes: Vec<ClassInfo>,
    /// The optional operations it implements (their `op` names); the host does what the
    /// `Consumer` trait's default does for the others.
    pub capabilities: Vec<String>,
}

/// A plugin's name and version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginName {
    /// Its name (`plugin = "..."`).
    pub name: String,
    /// Its version.
    pub version: String,
}

/// A consumer class, as `buslink plugins describe` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassInfo {
    /// `class = "..."`.
    pub name: String,
    /// One line.
    pub description: String,
    /// Every setting (Markdown).
    pub settings_doc: String,
}

/// A reply: the request's id and either `ok`, the answer as JSON text (`null` for operations
/// without one), or `error`. (Two fields rather than a flattened enum: serde cannot flatten
/// the raw answer.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id.
    pub id: u64,
    /// The answer, kept as JSON text to be parsed into the type the request expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Box<serde_json::value::RawValue>>,
    /// The failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

impl Reply {
    /// The reply to request `id` with `outcome`.
    pub fn new(id: u64, outcome: Outcome) -> Reply {
        match outcome {
            Outcome::Ok(value) => Reply {
                id,
                ok: Some(value),
                error: None,
            },
            Outcome::Error(error) => Reply {
                id,
                ok: None,
                error: Some(error),
            },
        }
    }

    /// What it says: an `error`, else `ok` (`null` when absent or null).
    pub fn outcome(self) -> Outcome {
        match (self.error, self.ok) {
            (Some(error), _) => Outcome::Error(error),
            (None, Some(value)) => Outcome::Ok(value),
            (None, None) => Outcome::Ok(null()),
        }
    }
}

/// `null` as a raw answer.
pub fn null() -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!())
}

/// What a request gave.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// It worked: the answer (`null` for operations without one).
    Ok(Box<serde_json::value::RawValue>),
    /// It failed.
    Error(WireError),
}

/// A `PluginError` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// `config`, `connect`, `timeout`, `protocol`, `offset_not_found`, `data` or `internal`.
    pub kind: String,
    /// For people.
    pub message: String,
    /// The settings key it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A poll's (or a find's) reply: this JSON part, and in the frame's body section a table of
/// `count` event records ([`EVENT_RECORD_BYTES`] each, see [`encode_batch`]) followed by the
/// events' bodies, one after the other in event order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// `ready`, `idle`, `ended` or `drained` (a find: `ready` when it found one).
    pub status: String,
    /// How many events the body section holds.
    #[serde(default)]
    pub count: usize,
    /// The categories the events have, each once: a record names one by its index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// The events' offsets that are not integers, in event order: a record names one by its
    /// index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<Offset>,
    /// The gaps, each before the event at its index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<WireGap>,
}

/// The size of an event's record in a batch's body section, in bytes. All big-endian:
///
/// | bytes | field |
/// | --- | --- |
/// | 0..8 | the offset, a signed integer; or, with flag 1, the index of the offset in `offsets` |
/// | 8..16 | the event's time, signed microseconds since the Unix epoch |
/// | 16..20 | the body's length in bytes, unsigned |
/// | 20..22 | the category's index in `categories`, unsigned |
/// | 22 | flags: 1 = the offset is in `offsets` (not an integer) |
/// | 23 | the body's kind: 0 none, 1 JSON text (UTF-8), 2 other bytes |
pub const EVENT_RECORD_BYTES: usize = 24;

const OFFSET_LISTED: u8 = 1;
const BODY_NONE: u8 = 0;
const BODY_JSON: u8 = 1;
const BODY_BYTES: u8 = 2;

/// A batch as a reply: its JSON part, with its records and bodies appended to `section`.
pub fn encode_batch(status: &str, batch: &crate::EventBatch, section: &mut Vec<u8>) -> Batch {
    let mut wire = Batch {
        status: status.to_owned(),
        count: batch.len(),
        categories: Vec::new(),
        offsets: Vec::new(),
        gaps: batch
            .gaps()
            .map(|gap| WireGap {
                before: gap.before_event,
                range: gap.range.to_owned(),
                count: gap.count,
            })
            .collect(),
    };
    let table = section.len();
    section.resize(table + batch.len() * EVENT_RECORD_BYTES, 0);
    for (index, (offset, time_us, category, json, body)) in batch.raw_events().enumerate() {
        let category = match wire
            .categories
            .iter()
            .rposition(|c| c.as_bytes() == category)
        {
            Some(known) => known,
            None => {
                wire.categories
                    .push(String::from_utf8_lossy(category).into_owned());
                wire.categories.len() - 1
            }
        };
        let (offset, flags) = match offset {
            crate::OffsetRef::Int(i) => (i, 0),
            other => {
                wire.offsets.push(other.to_owned());
                ((wire.offsets.len() - 1) as i64, OFFSET_LISTED)
            }
        };
        let kind = match (json, body.is_empty()) {
            (true, _) => BODY_JSON,
            (false, true) => BODY_NONE,
            (false, false) => BODY_BYTES,
        };
        let record = &mut section[table + index * EVENT_RECORD_BYTES..][..EVENT_RECORD_BYTES];
        record[0..8].copy_from_slice(&offset.to_be_bytes());
        record[8..16].copy_from_slice(&time_us.to_be_bytes());
        record[16..20].copy_from_slice(&(body.len() as u32).to_be_bytes());
        record[20..22].copy_from_slice(&(category as u16).to_be_bytes());
        record[22] = flags;
        record[23] = kind;
        section.extend_from_slice(body);
    }
    wire
}

/// The events of a batch reply, from its JSON part and its body section, in order: each an
/// event borrowing from them, or what is wrong with its record.
pub fn decode_batch<'a>(
    batch: &'a Batch,
    section: &'a [u8],
) -> Result<impl Iterator<Item = Result<crate::Event<'a>, String>> + 'a, String> {
    let table_bytes = batch
        .count
        .checked_mul(EVENT_RECORD_BYTES)
        .filter(|bytes| *bytes <= section.len())
        .ok_or_else(|| {
            format!(
                "{} events announced, but the body section holds {} bytes (a record is {} bytes)",
                batch.count,
                section.len(),
                EVENT_RECORD_BYTES
            )
        })?;
    let (table, mut bodies) = section.split_at(table_bytes);
    Ok(table
        .chunks_exact(EVENT_RECORD_BYTES)
        .enumerate()
        .map(move |(index, record)| {
            let number = |range: std::ops::Range<usize>| {
                let mut bytes = [0u8; 8];
                bytes[8 - range.len()..].copy_from_slice(&record[range]);
                u64::from_be_bytes(bytes)
            };
            let raw_offset = number(0..8) as i64;
            let time_us = number(8..16) as i64;
            let length = number(16..20) as usize;
            let category = number(20..22) as usize;
            let offset = if record[22] & OFFSET_LISTED != 0 {
                batch
                    .offsets
                    .get(usize::try_from(raw_offset).unwrap_or(usize::MAX))
                    .map(Offset::as_ref)
                    .ok_or_else(|| {
                        format!(
                            "event {index}: offset {raw_offset} of `offsets`, which has {}",
                            batch.offsets.len()
                        )
                    })?
            } else {
                crate::OffsetRef::Int(raw_offset)
            };
            let category = batch.categories.get(category).ok_or_else(|| {
                format!(
                    "event {index} ({offset}): category {category} of `categories`, which has {}",
                    batch.categories.len()
                )
            })?;
            if length > bodies.len() {
                return Err(format!(
                    "event {index} ({offset}): a body of {length} bytes, {} left in the frame",
                    bodies.len()
                ));
            }
            let (body, rest) = bodies.split_at(length);
            bodies = rest;
            let body = match record[23] {
                BODY_NONE | BODY_BYTES => crate::Body::Bytes(body),
                BODY_JSON => crate::Body::Json(simdutf8::basic::from_utf8(body).map_err(|_| {
                    format!("event {index} ({offset}): a JSON body that is not UTF-8")
                })?),
                other => return Err(format!("event {index} ({offset}): a body of kind {other}")),
            };
            let timestamp = chrono::DateTime::from_timestamp_micros(time_us).ok_or_else(|| {
                format!(
                    "event {index} ({offset}): a time of {time_us} us, outside what a timestamp \
                     can hold"
                )
            })?;
            Ok(crate::Event {
                offset,
                timestamp,
                category,
                body,
            })
        }))
}

/// A gap before the event at `before` (the batch's length: after the last).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireGap {
    /// The index of the event after the gap.
    pub before: usize,
    /// Which events, for people.
    pub range: String,
    /// How many, when the bus can count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// A poll status's name on the wire.
pub fn status_name(status: crate::PollStatus) -> &'static str {
    use crate::PollStatus;
    match status {
        PollStatus::Ready => "ready",
        PollStatus::Idle => "idle",
        PollStatus::Ended => "ended",
        PollStatus::Drained => "drained",
    }
}

/// The poll status a wire name gives, if it is one.
pub fn status_of(name: &str) -> Option<crate::PollStatus> {
    use crate::PollStatus;
    [
        PollStatus::Ready,
        PollStatus::Idle,
        PollStatus::Ended,
        PollStatus::Drained,
    ]
    .into_iter()
    .find(|status| status_name(*status) == name)
}

/// An error kind's name on the wire.
pub fn kind_name(kind: crate::ErrorKind) -> &'static str {
    use crate::ErrorKind;
    match kind {
        ErrorKind::Config => "config",
        ErrorKind::Connect => "connect",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Protocol => "protocol",
        ErrorKind::OffsetNotFound => "offset_not_found",
        ErrorKind::Data => "data",
        ErrorKind::Internal => "internal",
    }
}

/// The error kind a wire name gives (an unknown one is `internal`).
pub fn kind_of(name: &str) -> crate::ErrorKind {
    use crate::ErrorKind;
    match name {
        "config" => ErrorKind::Config,
        "connect" => ErrorKind::Connect,
        "timeout" => ErrorKind::Timeout,
        "protocol" => ErrorKind::Protocol,
        "offset_not_found" => ErrorKind::OffsetNotFound,
        "data" => ErrorKind::Data,
        _ => ErrorKind::Internal,
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The other side closed the pipe between two frames.
    #[error("the pipe was closed")]
    Closed,
    /// The other side closed the pipe in the middle of a frame (it died writing it).
    #[error("the pipe closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// The bytes of the frame read, its length prefix included.
        got: usize,
        /// The frame's length with its prefix (4 when the prefix itself was cut).
        expected: usize,
    },
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A length over [`MAX_FRAME`]: the bytes are not a frame (a stray write on stdout?).
    #[error("a frame of {length} bytes announced (the most is {MAX_FRAME}): not a frame; the bytes read were {shown}")]
    TooLong {
        /// The length read.
        length: usize,
        /// The four bytes, as text where printable.
        shown: String,
    },
    /// The frame is not the JSON expected.
    #[error("a frame that is not a protocol message ({error}): {shown}")]
    NotAMessage {
        /// What serde said.
        error: String,
        /// The start of the frame, as text where printable.
        shown: String,
    },
}

/// Up to 64 bytes as text, with what is not printable escaped: for error messages.
pub fn show_bytes(bytes: &[u8]) -> String {
    let shown: String = bytes
        .iter()
        .take(64)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if bytes.len() > 64 {
        format!("\"{shown}\"...")
    } else {
        format!("\"{shown}\"")
    }
}

/// Writes `message` as one frame without a body section, and flushes.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FrameError> {
    write_frame_with(out, message, &[])
}

/// Writes `message` and the body section `section` as one frame, and flushes.
pub fn write_frame_with<T: Serialize>(
    out: &mut impl Write,
    message: &T,
    section: &[u8],
) -> Result<(), FrameError> {
    let json = serde_json::to_vec(message).map_err(|e| FrameError::Io(e.into()))?;
    let total = 4 + json.len() + section.len();
    if total > MAX_FRAME {
        return Err(FrameError::TooLong {
            length: total,
            shown: String::new(),
        });
    }
    out.write_all(&(total as u32).to_be_bytes())?;
    out.write_all(&(json.len() as u32).to_be_bytes())?;
    out.write_all(&json)?;
    out.write_all(section)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame and parses its message; its body section is left out.
pub fn read_frame<T: serde::de::DeserializeOwned>(
    input: &mut impl Read,
    buffer: &mut Vec<u8>,
) -> Result<T, FrameError> {
    read_frame_with(input, buffer).map(|(message, _)| message)
}

/// Fills `buffer` from `input` until it is full or the pipe ends: the bytes read.
fn read_all(input: &mut impl Read, buffer: &mut [u8]) -> Result<usize, FrameError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match input.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(filled)
}

/// Reads one frame into `buffer` and parses its message; the body section is
/// `buffer[start..]`, `start` the second value.
pub fn read_frame_with<T: serde::de::DeserializeOwned>(
    input: &mut impl Read,
    buffer: &mut Vec<u8>,
) -> Result<(T, usize), FrameError> {
    let mut head = [0u8; 4];
    match read_all(input, &mut head)? {
        0 => return Err(FrameError::Closed),
        4 => {}
        got => return Err(FrameError::Truncated { got, expected: 4 }),
    }
    let length = u32::from_be_bytes(head) as usize;
    if length > MAX_FRAME {
        return Err(FrameError::TooLong {
            length,
            shown: show_bytes(&head),
        });
    }
    buffer.clear();
    buffer.resize(length, 0);
    let got = read_all(input, buffer)?;
    if got < length {
        return Err(FrameError::Truncated {
            got: 4 + got,
            expected: 4 + length,
        });
    }
    let not_a_message = |error: String, buffer: &[u8]| FrameError::NotAMessage {
        error,
        shown: show_bytes(&[&head[..], &buffer[..buffer.len().min(64)]].concat()),
    };
    let json_length = buffer
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|json| 4 + json <= length)
        .ok_or_else(|| not_a_message("no JSON length inside the frame".into(), buffer))?;
    let message = serde_json::from_slice(&buffer[4..4 + json_length])
        .map_err(|error| not_a_message(error.to_string(), buffer))?;
    Ok((message, 4 + json_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_timeout_tells_the_poll_limit_and_reads_without_it() {
        let request = Request {
            id: 1,
            op: Op::SetTimeout {
                timeout_ms: Some(300),
                poll_limit_ms: Some(5300),
            },
        };
        let text = serde_json::to_string(&request).expect("json");
        assert_eq!(
            text,
            r#"{"id":1,"op":"set_timeout","timeout_ms":300,"poll_limit_ms":5300}"#
        );
        // From a host that does not send it, and with no timeout: no limit.
        let old: Request =
            serde_json::from_str(r#"{"id":1,"op":"set_timeout","timeout_ms":null}"#).expect("read");
        assert_eq!(
            old.op,
            Op::SetTimeout {
                timeout_ms: None,
                poll_limit_ms: None
            }
        );
    }

    #[test]
    fn requests_and_replies_read_back_from_their_frames() {
        let request = Request {
            id: 7,
            op: Op::Seek {
                offset: Offset::Int(41),
            },
        };
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &request).expect("written");
        assert_eq!(&pipe[8..], br#"{"id":7,"op":"seek","offset":{"int":41}}"#);
        let mut buffer = Vec::new();
        let back: Request = read_frame(&mut pipe.as_slice(), &mut buffer).expect("read");
        assert_eq!(back, request);
        let reply = Reply::new(
            7,
            Outcome::Error(WireError {
                kind: "offset_not_found".into(),
                message: "no event at 41".into(),
                key: None,
            }),
        );
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &reply).expect("written");
        assert_eq!(
            &pipe[8..],
            br#"{"id":7,"error":{"kind":"offset_not_found","message":"no event at 41"}}"#
        );
        let mut pipe = Vec::new();
        let ok = Reply::new(
            8,
            Outcome::Ok(serde_json::value::to_raw_value(&[0, 5]).expect("raw")),
        );
        write_frame_with(&mut pipe, &ok, b"{\"a\":1}").expect("written");
        let (back, start): (Reply, usize) =
            read_frame_with(&mut pipe.as_slice(), &mut buffer).expect("read");
        assert_eq!(back.id, 8);
        match back.outcome() {
            Outcome::Ok(value) => assert_eq!(value.get(), "[0,5]"),
            Outcome::Error(error) => panic!("{error:?}"),
        }
        assert_eq!(
            &buffer[start..],
            b"{\"a\":1}",
            "the body section, untouched"
        );
    }

    #[test]
    fn stray_bytes_are_named_not_waited_for() {
        let mut buffer = Vec::new();
        let error = read_frame::<Request>(&mut &b"hello world\n"[..], &mut buffer)
            .expect_err("not a frame");
        assert!(error.to_string().contains("\"hell\""), "{error}");
        let error = read_frame::<Request>(&mut &b"\0\0\0\x09\0\0\0\x05oops!"[..], &mut buffer)
            .expect_err("not JSON");
        assert!(error.to_string().contains("oops!"), "{error}");
    }

    #[test]
    fn a_batch_reads_back_from_its_records_and_bodies() {
        use crate::{Body, Event, EventBatch, OffsetRef};
        let at = |us| chrono::DateTime::from_timestamp_micros(us).unwrap();
        let mut batch = EventBatch::new(10, usize::MAX);
        let events = [
            (OffsetRef::Int(-5), "base", Body::Json("{\"a\":1}")),
            (
                OffsetRef::String("k/7"),
                "initsync",
                Body::Bytes(&[0, 1, 2]),
            ),
            (OffsetRef::Int(i64::MAX), "base", Body::Bytes(&[])),
        ];
        for (i, (offset, category, body)) in events.iter().enumerate() {
            batch.push(Event {
                offset: *offset,
                timestamp: at(1_795_345_271_747_962 + i as i64),
                category,
                body: *body,
            });
        }
        let mut section = Vec::new();
        let wire = encode_batch("ready", &batch, &mut section);
        assert_eq!(wire.count, 3);
        assert_eq!(wire.categories, ["base", "initsync"]);
        assert_eq!(wire.offsets, [Offset::String("k/7".into())]);
        assert_eq!(section.len(), 3 * EVENT_RECORD_BYTES + 7 + 3);
        let back: Vec<_> = decode_batch(&wire, &section)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 3);
        for (i, (event, (offset, category, body))) in back.iter().zip(&events).enumerate() {
            assert_eq!(event.offset, *offset);
            assert_eq!(event.category, *category);
            assert_eq!(event.body, *body);
            assert_eq!(event.timestamp, at(1_795_345_271_747_962 + i as i64));
        }
        // A count the section cannot hold, a body past the end, a category not listed.
        let too_many = Batch {
            count: 4,
            ..wire.clone()
        };
        assert!(decode_batch(&too_many, &section).is_err());
        let short = &section[..section.len() - 1];
        let errors: Vec<_> = decode_batch(&wire, short)
            .unwrap()
            .filter_map(Result::err)
            .collect();
        assert!(
            errors[0].contains("event 1 (\"k/7\"): a body of 3 bytes, 2 left"),
            "{errors:?}"
        );
        let no_categories = Batch {
            categories: Vec::new(),
            ..wire.clone()
        };
        let first = decode_batch(&no_categories, &section)
            .unwrap()
            .next()
            .unwrap();
        assert!(first
            .unwrap_err()
            .contains("category 0 of `categories`, which has 0"));
    }

    #[test]
    fn a_frame_cut_short_is_told_from_a_pipe_closed_between_frames() {
        let mut whole = Vec::new();
        write_frame_with(
            &mut whole,
            &Request {
                id: 1,
                op: Op::Open,
            },
            b"bodies",
        )
        .unwrap();
        let mut buffer = Vec::new();
        let closed = read_frame::<Request>(&mut &b""[..], &mut buffer).unwrap_err();
        assert!(matches!(closed, FrameError::Closed), "{closed}");
        let cut = read_frame::<Request>(&mut &whole[..whole.len() - 3], &mut buffer).unwrap_err();
        assert!(
            matches!(cut, FrameError::Truncated { got, expected } if got == whole.len() - 3 && expected == whole.len()),
            "{cut}"
        );
        let head_cut = read_frame::<Request>(&mut &whole[..2], &mut buffer).unwrap_err();
        assert_eq!(
            head_cut.to_string(),
            "the pipe closed in the middle of a frame (2 of 4 bytes)"
        );
    }

    #[test]
    fn the_highest_common_version_is_chosen() {
        let host = VersionRange { min: 1, max: 3 };
        assert_eq!(
            host.highest_common(VersionRange { min: 2, max: 5 }),
            Some(3)
        );
        assert_eq!(
            host.highest_common(VersionRange { min: 1, max: 1 }),
            Some(1)
        );
        assert_eq!(host.highest_common(VersionRange { min: 4, max: 9 }), None);
    }
}
