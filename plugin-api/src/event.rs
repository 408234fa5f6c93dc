//! Events and the batch that carries many of them across the plugin boundary in one call.

use crate::offset::OffsetRef;
use abi_stable::std_types::RVec;
use abi_stable::StableAbi;
use chrono::{DateTime, Utc};

/// The body of an event: JSON text (a Hermes event, for example) or opaque bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body<'a> {
    /// JSON text, exactly as the bus holds it (it may be pretty-printed).
    Json(&'a str),
    /// Anything else.
    Bytes(&'a [u8]),
}

impl<'a> Body<'a> {
    /// The raw bytes of the body, whatever its kind.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Body::Json(text) => text.as_bytes(),
            Body::Bytes(bytes) => bytes,
        }
    }
}

/// One event, borrowed from a batch (host side) or about to be copied into one (plugin side).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event<'a> {
    /// Where the event is on the bus.
    pub offset: OffsetRef<'a>,
    /// When the event was produced, as the bus says.
    pub timestamp: DateTime<Utc>,
    /// The event's category (its Hermes `evcategory`, an HMB topic, ...).
    pub category: &'a str,
    /// The event itself.
    pub body: Body<'a>,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
enum OffsetTag {
    Int,
    Float,
    String,
    Bytes,
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
enum BodyTag {
    Json,
    Bytes,
}

/// A byte range inside the batch's shared buffer.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
struct Span {
    start: u64,
    len: u64,
}

/// The fixed-size part of one event; its variable parts live in the batch's shared buffer.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
struct EventRecord {
    offset_tag: OffsetTag,
    body_tag: BodyTag,
    /// The integer offset, or the bits of the float offset.
    offset_number: i64,
    /// The string or bytes offset.
    offset_span: Span,
    timestamp_micros: i64,
    category: Span,
    body: Span,
}

/// A batch of events, filled by a plugin's [`Consumer::poll`](crate::Consumer::poll) and read by
/// the host.
///
/// All the variable-size data of the events (bodies, categories, string offsets) is appended to
/// one shared buffer, so filling a batch allocates nothing per event once the batch has been used
/// once: the host clears and reuses batches. A plugin pushes events with [`EventBatch::push`]
/// until [`EventBatch::is_full`] says to stop.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct EventBatch {
    data: RVec<u8>,
    records: RVec<EventRecord>,
    max_events: u64,
    max_bytes: u64,
    gaps: RVec<GapRecord>,
}

/// Events the consumer never saw are gone from the bus, found between two events of a batch:
/// see [`EventBatch::report_gap`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
struct GapRecord {
    /// How many events of the batch come before the gap.
    before_event: u64,
    /// How many events are missing; `u64::MAX` when the bus cannot tell.
    count: u64,
    /// Which events, for people: `msgids 17 to 50`, `queue A seq 17 to 50`.
    range: abi_stable::std_types::RString,
}

/// A gap reported in a batch (see [`EventBatch::report_gap`]), as the host reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap<'a> {
    /// How many events of the batch come before the gap (the gap lies before the event at
    /// this index, or after the last one when it equals the batch's length).
    pub before_event: usize,
    /// How many events are missing, when the bus can tell.
    pub count: Option<u64>,
    /// Which events, for people (`msgids 17 to 50`).
    pub range: &'a str,
}

impl EventBatch {
    /// An empty batch that is full at `max_events` events or `max_bytes` bytes of event data,
    /// whichever comes first (a single event larger than `max_bytes` still fits alone).
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        EventBatch {
            data: RVec::new(),
            records: RVec::with_capacity(max_events.min(4096)),
            max_events: max_events.max(1) as u64,
            max_bytes: max_bytes.max(1) as u64,
            gaps: RVec::new(),
        }
    }

    /// Removes every event and gap, keeping the memory for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
        self.gaps.clear();
    }

    /// Reports a **gap** at this point of the batch (after the events pushed so far): events
    /// the consumer never delivered are gone from the bus (purged, fell out of a server's
    /// buffer). `range` says which, for people (`msgids 17 to 50`); `count` how many, when the
    /// bus can tell. The host decides what happens (`on_gap`: stop before the next event, or
    /// warn and count): a plugin reports every gap it can detect, the same way whether it
    /// finds it while running or at its first read after a start, and never skips silently.
    pub fn report_gap(&mut self, range: &str, count: Option<u64>) {
        self.gaps.push(GapRecord {
            before_event: self.records.len() as u64,
            count: count.unwrap_or(u64::MAX),
            range: range.into(),
        });
    }

    /// The gaps reported in this batch, in bus order.
    pub fn gaps(&self) -> impl ExactSizeIterator<Item = Gap<'_>> + '_ {
        self.gaps.iter().map(|gap| Gap {
            before_event: gap.before_event as usize,
            count: (gap.count != u64::MAX).then_some(gap.count),
            range: gap.range.as_str(),
        })
    }

    /// Whether the batch holds neither an event nor a gap.
    pub fn is_blank(&self) -> bool {
        self.records.is_empty() && self.gaps.is_empty()
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the plugin should stop adding events to this batch.
    pub fn is_full(&self) -> bool {
        self.records.len() as u64 >= self.max_events || self.data.len() as u64 >= self.max_bytes
    }

    /// How many more events fit, counting events only (bytes may fill the batch earlier).
    pub fn remaining(&self) -> usize {
        (self.max_events as usize).saturating_sub(self.records.len())
    }

    /// The most events this batch takes.
    pub fn max_events(&self) -> usize {
        self.max_events as usize
    }

    /// The most bytes of event data this batch takes (one larger event still fits alone).
    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.max_bytes).unwrap_or(usize::MAX)
    }

    /// Copies an event into the batch. Events must be pushed in bus order.
    pub fn push(&mut self, event: Event<'_>) {
        let (offset_tag, offset_number, offset_span) = match event.offset {
            OffsetRef::Int(i) => (OffsetTag::Int, i, Span { start: 0, len: 0 }),
            OffsetRef::Float(x) => (
                OffsetTag::Float,
                x.to_bits() as i64,
                Span { start: 0, len: 0 },
            ),
            OffsetRef::String(s) => (OffsetTag::String, 0, self.append(s.as_bytes())),
            OffsetRef::Bytes(b) => (OffsetTag::Bytes, 0, self.append(b)),
        };
        let category = self.append(event.category.as_bytes());
        let (body_tag, body) = match event.body {
            Body::Json(text) => (BodyTag::Json, self.append(text.as_bytes())),
            Body::Bytes(bytes) => (BodyTag::Bytes, self.append(bytes)),
        };
        self.records.push(EventRecord {
            offset_tag,
            body_tag,
            offset_number,
            offset_span,
            timestamp_micros: event.timestamp.timestamp_micros(),
            category,
            body,
        });
    }

    /// The event at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Event<'_>> {
        self.records.get(index).map(|record| self.view(record))
    }

    /// The last event of the batch.
    pub fn last(&self) -> Option<Event<'_>> {
        self.records.last().map(|record| self.view(record))
    }

    /// The events, in bus order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Event<'_>> + '_ {
        let mut times = Timestamps::default();
        self.records
            .iter()
            .map(move |record| self.view_at(record, times.at(record.timestamp_micros)))
    }

    fn append(&mut self, bytes: &[u8]) -> Span {
        let start = self.data.len() as u64;
        // RVec::extend_from_slice pushes byte by byte; this is one memcpy.
        self.data.extend_from_copy_slice(bytes);
        Span {
            start,
            len: bytes.len() as u64,
        }
    }

    fn slice(&self, span: Span) -> &[u8] {
        // Spans are only ever created by `append` on this same buffer, and the buffer is only
        // truncated by `clear`, which also drops every record.
        &self.data[span.start as usize..(span.start + span.len) as usize]
    }

    fn text(&self, span: Span) -> &str {
        let bytes = self.slice(span);
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: a text span (category, string offset, JSON body) is only ever made by `push`
        // appending the bytes of a `&str`, whole: the fields are private and `push`, `clear`
        // and `report_gap` are the only ways to change them, on either side of the plugin
        // boundary (the layout is checked when the plugin is loaded, as for every type crossing
        // it; abi_stable's `RString` crosses on the same terms, never checked again). Checking
        // here again cost the host some 200 instructions per event (callgrind, HMB bench).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The events as stored, without checking text again (for the subprocess protocol's
    /// encoder, which copies bytes as they are): (offset, time in microseconds, category,
    /// whether the body is JSON text, body).
    pub(crate) fn raw_events(
        &self,
    ) -> impl ExactSizeIterator<Item = (OffsetRef<'_>, i64, &[u8], bool, &[u8])> + '_ {
        self.records.iter().map(move |record| {
            let offset = match record.offset_tag {
                OffsetTag::Int => OffsetRef::Int(record.offset_number),
                OffsetTag::Float => OffsetRef::Float(f64::from_bits(record.offset_number as u64)),
                OffsetTag::String => OffsetRef::String(self.text(record.offset_span)),
                OffsetTag::Bytes => OffsetRef::Bytes(self.slice(record.offset_span)),
            };
            (
                offset,
                record.timestamp_micros,
                self.slice(record.category),
                record.body_tag == BodyTag::Json,
                self.slice(record.body),
            )
        })
    }

    fn view(&self, record: &EventRecord) -> Event<'_> {
        self.view_at(record, Timestamps::default().at(record.timestamp_micros))
    }

    /// [`view`](Self::view) with its time already converted.
    fn view_at(&self, record: &EventRecord, timestamp: DateTime<Utc>) -> Event<'_> {
        let offset = match record.offset_tag {
            OffsetTag::Int => OffsetRef::Int(record.offset_number),
            OffsetTag::Float => OffsetRef::Float(f64::from_bits(record.offset_number as u64)),
            OffsetTag::String => OffsetRef::String(self.text(record.offset_span)),
            OffsetTag::Bytes => OffsetRef::Bytes(self.slice(record.offset_span)),
        };
        let body = match record.body_tag {
            BodyTag::Json => Body::Json(self.text(record.body)),
            BodyTag::Bytes => Body::Bytes(self.slice(record.body)),
        };
        Event {
            offset,
            timestamp,
            category: self.text(record.category),
            body,
        }
    }
}

/// Event times from microseconds since the epoch, the last conversion kept: the events of one
/// read often share their time (a bus that gives none: when they were received), and chrono's
/// calendar conversion costs some 120 instructions a call (callgrind). One per run of events
/// (a batch's iteration, a plugin's fill loop).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timestamps {
    last: Option<(i64, DateTime<Utc>)>,
}

impl Timestamps {
    /// The time `micros` microseconds after the epoch; the epoch itself for a value out of
    /// chrono's range (which `EventBatch::push` cannot have stored).
    pub fn at(&mut self, micros: i64) -> DateTime<Utc> {
        match self.last {
            Some((last, time)) if last == micros => time,
            _ => {
                let time = DateTime::from_timestamp_micros(micros).unwrap_or_default();
                self.last = Some((micros, time));
                time
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_keeps_its_own_time_when_times_repeat_and_change() {
        let mut batch = EventBatch::new(10, 1 << 20);
        let micros = [
            1_795_345_271_747_962,
            1_795_345_271_747_962,
            1,
            1_795_345_271_747_962,
            -86_400_000_001,
            -86_400_000_001,
        ];
        for (index, &at) in micros.iter().enumerate() {
            batch.push(Event {
                offset: OffsetRef::Int(index as i64),
                timestamp: DateTime::from_timestamp_micros(at).unwrap(),
                category: "c",
                body: Body::Json("{}"),
            });
        }
        let read: Vec<i64> = batch
            .iter()
            .map(|e| e.timestamp.timestamp_micros())
            .collect();
        assert_eq!(read, micros);
        let one_by_one: Vec<i64> = (0..micros.len())
            .filter_map(|index| batch.get(index))
            .map(|e| e.timestamp.timestamp_micros())
            .collect();
        assert_eq!(one_by_one, micros);
        // Skipping into the batch (as the dispatcher does after a partial batch).
        let skipped: Vec<i64> = batch
            .iter()
            .skip(2)
            .map(|e| e.timestamp.timestamp_micros())
            .collect();
        assert_eq!(skipped, micros[2..]);
    }

    #[test]
    fn batch_keeps_every_field_of_every_event() {
        let mut batch = EventBatch::new(10, 1 << 20);
        let ts = DateTime::from_timestamp_micros(1_795_345_271_747_962).unwrap();
        batch.push(Event {
            offset: OffsetRef::Int(7),
            timestamp: ts,
            category: "base",
            body: Body::Json("{\"a\": 1}"),
        });
        batch.push(Event {
            offset: OffsetRef::String("q/9"),
            timestamp: ts,
            category: "alerts",
            body: Body::Bytes(&[1, 2, 3]),
        });
        batch.push(Event {
            offset: OffsetRef::Float(2.5),
            timestamp: ts,
            category: "",
            body: Body::Json("null"),
        });
        let events: Vec<_> = batch.iter().collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].offset, OffsetRef::Int(7));
        assert_eq!(events[0].timestamp, ts);
        assert_eq!(events[0].body, Body::Json("{\"a\": 1}"));
        assert_eq!(events[1].offset, OffsetRef::String("q/9"));
        assert_eq!(events[1].category, "alerts");
        assert_eq!(events[1].body, Body::Bytes(&[1, 2, 3]));
        assert_eq!(events[2].offset, OffsetRef::Float(2.5));
        batch.clear();
        assert!(batch.is_empty());
    }

    #[test]
    fn batch_is_full_by_count_or_bytes() {
        let ts = Utc::now();
        let event = Event {
            offset: OffsetRef::Int(1),
            timestamp: ts,
            category: "c",
            body: Body::Json("0123456789"),
        };
        let mut by_count = EventBatch::new(2, 1 << 20);
        by_count.push(event);
        assert!(!by_count.is_full());
        by_count.push(event);
        assert!(by_count.is_full());
        let mut by_bytes = EventBatch::new(100, 15);
        by_bytes.push(event);
        assert!(!by_bytes.is_full());
        by_bytes.push(event);
        assert!(by_bytes.is_full());
    }
}
