//! Writing an [`OffsetRecord`] as JSON at every commit, without serde's machinery: with a
//! commit per event, serde_json's serializer (its string escaping a byte at a time, the
//! timestamps formatted into new strings) was a sixth of the daemon's time (`perf`).
//!
//! The bytes are exactly those of `serde_json::to_vec(record)` (the record's `Serialize`
//! derive stays the definition of the format, and what reads the file back): the common
//! pieces (plain strings, integer and plain string offsets, the timestamps) are written
//! directly, every other piece (a string to escape, a float or bytes offset, the outputs'
//! table) by serde_json. The tests compare the two on records of every shape.

use super::{timestamp, OffsetRecord};
use buslink_plugin_api::Offset;

/// Appends `record` as compact JSON to `out`, as `serde_json::to_writer` writes it.
pub(super) fn write(record: &OffsetRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(b"{\"version\":");
    out.extend_from_slice(digits.format(record.version).as_bytes());
    out.extend_from_slice(b",\"consumer\":");
    string(&record.consumer, out)?;
    if let Some(offset) = &record.last_offset {
        out.extend_from_slice(b",\"last_offset\":");
        offset_value(offset, out)?;
    }
    if let Some(time) = &record.last_timestamp {
        out.extend_from_slice(b",\"last_timestamp\":\"");
        timestamp::write_micros(time, out);
        out.push(b'"');
    }
    if let Some(offset) = &record.next_offset {
        out.extend_from_slice(b",\"next_offset\":");
        offset_value(offset, out)?;
    }
    out.extend_from_slice(b",\"events_handled\":");
    out.extend_from_slice(digits.format(record.events_handled).as_bytes());
    if let Some(offset) = &record.initstartoffset {
        out.extend_from_slice(b",\"initstartoffset\":");
        offset_value(offset, out)?;
    }
    if let Some(offset) = &record.initstopoffset {
        out.extend_from_slice(b",\"initstopoffset\":");
        offset_value(offset, out)?;
    }
    if record.initsync_done {
        out.extend_from_slice(b",\"initsync_done\":true");
    }
    if !record.outputs.is_empty() {
        out.extend_from_slice(b",\"outputs\":");
        serde_json::to_writer(&mut *out, &record.outputs)?;
    }
    out.extend_from_slice(b",\"updated_at\":\"");
    timestamp::write_millis(&record.updated_at, out);
    out.extend_from_slice(b"\"}");
    Ok(())
}

/// A JSON string: copied between quotes when nothing in it needs escaping (serde_json escapes
/// the control characters, `"` and `\`; other text, non-ASCII included, goes as it is).
fn string(text: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, text)
    }
}

/// An offset as its one-key object (`{"int":164}`, `{"string":"a/17"}`, ...).
fn offset_value(offset: &Offset, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match offset {
        Offset::Int(i) => {
            out.extend_from_slice(b"{\"int\":");
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
            out.push(b'}');
            Ok(())
        }
        Offset::String(text) => {
            out.extend_from_slice(b"{\"string\":");
            string(text, out)?;
            out.push(b'}');
            Ok(())
        }
        other => serde_json::to_writer(out, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::OutputPosition;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn offset() -> impl Strategy<Value = Offset> {
        prop_oneof![
            any::<i64>().prop_map(Offset::Int),
            any::<f64>().prop_map(Offset::Float),
            ".{0,12}".prop_map(Offset::String),
            "[a-z0-9:/._-]{0,24}".prop_map(Offset::String),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Offset::Bytes),
        ]
    }

    fn time() -> impl Strategy<Value = DateTime<Utc>> {
        // From 1970 to 2100, to the nanosecond (the writer keeps milli- or microseconds).
        (0i64..4_102_444_800, 0u32..1_000_000_000)
            .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap_or_default())
    }

    fn record() -> impl Strategy<Value = OffsetRecord> {
        (
            (any::<u32>(), ".{0,10}", proptest::option::of(offset())),
            proptest::option::of(time()),
            proptest::option::of(offset()),
            any::<u64>(),
            (
                proptest::option::of(offset()),
                proptest::option::of(offset()),
                any::<bool>(),
            ),
            proptest::collection::btree_map(
                ".{0,6}",
                (
                    ".{0,10}",
                    any::<u64>(),
                    proptest::option::of(any::<[u64; 2]>()),
                ),
                0..3,
            ),
            time(),
        )
            .prop_map(
                |(
                    (version, consumer, last_offset),
                    last_timestamp,
                    next_offset,
                    events_handled,
                    (initstartoffset, initstopoffset, initsync_done),
                    outputs,
                    updated_at,
                )| OffsetRecord {
                    version,
                    consumer,
                    last_offset,
                    last_timestamp,
                    next_offset,
                    events_handled,
                    initstartoffset,
                    initstopoffset,
                    initsync_done,
                    outputs: outputs
                        .into_iter()
                        .map(|(name, (path, length, file_id))| {
                            (
                                name,
                                OutputPosition {
                                    path: path.into(),
                                    length,
                                    file_id,
                                },
                            )
                        })
                        .collect(),
                    updated_at,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn records_are_written_as_serde_json_writes_them(record in record()) {
            let mut ours = Vec::new();
            write(&record, &mut ours).unwrap();
            let theirs = serde_json::to_vec(&record).unwrap();
            prop_assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn a_record_of_every_common_shape_is_written_as_serde_json_writes_it() {
        let at = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "all".to_owned(),
            OutputPosition {
                path: "/var/out/all.jsonl".into(),
                length: 5120,
                file_id: Some([2049, 1234]),
            },
        );
        let records = [
            OffsetRecord {
                version: 2,
                consumer: "demo".into(),
                last_offset: Some(Offset::Int(163)),
                last_timestamp: Some(at("2026-11-23T01:02:03.456789Z")),
                next_offset: Some(Offset::Int(164)),
                events_handled: 163,
                initstartoffset: None,
                initstopoffset: None,
                initsync_done: false,
                outputs: BTreeMap::new(),
                updated_at: at("2026-12-07T08:00:00.007Z"),
            },
            OffsetRecord {
                version: 2,
                consumer: "kafka \"group\" \\ \u{1}é".into(),
                last_offset: Some(Offset::String("one:0:105".into())),
                last_timestamp: None,
                next_offset: None,
                events_handled: 0,
                initstartoffset: Some(Offset::Float(1.5)),
                initstopoffset: Some(Offset::Bytes(vec![0, 1, 2])),
                initsync_done: true,
                outputs,
                updated_at: at("1999-12-31T23:59:59.999Z"),
            },
        ];
        for record in records {
            let mut ours = Vec::new();
            write(&record, &mut ours).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }
}
