//! Micro benchmarks of reading one HMB answer of 1 000 Hermes events (~300 bytes each), side by
//! side with the general-purpose readers the plugin used before:
//! - JSON: the one-pass structural reader (`json_scan`) vs framing plus a serde_json parse of
//!   every message (`parse_json`, which validates `data` while skipping it);
//! - BSON: `bson_scan` vs the bson crate's raw reader, both writing the event bodies as JSON.
//!
//! `cargo bench -p buslink-hmb`

use buslink_hmb::bson_json::write_document;
use buslink_hmb::framing::Framer;
use buslink_hmb::message::{parse_bson, parse_json, BodySrc};
use buslink_hmb::settings::Format;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const MESSAGES: usize = 1000;

fn message(i: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "EVENT", "queue": "A", "topic": "base", "seq": i,
        "starttime": "2026-11-23T01:02:03.456789Z",
        "data": {
            "evcategory": "base", "eventtype": "modified", "objtype": "Station", "objpkey": i,
            "objattrs": {"added": {}, "modified": {"latitude": 48.58, "longitude": 7.75,
            "elevation": 142.0, "description": "Strasbourg seismological station, broadband"},
            "removed": {}}, "step": 0, "isPartiallyProcessed": false
        }
    })
}

fn json_answer() -> String {
    let entries: Vec<String> = (0..MESSAGES)
        .map(|i| format!("\"{i}\":{}", message(i)))
        .collect();
    format!("{{{}}}", entries.join(","))
}

fn bson_answer() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..MESSAGES {
        let document = bson::to_document(&message(i)).expect("a document");
        document.to_writer(&mut body).expect("written");
    }
    body
}

fn json(c: &mut Criterion) {
    let answer = json_answer();
    let mut group = c.benchmark_group("hmb json answer");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("one structural pass (json_scan)", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Format::Json);
            let (mut pos, mut seqs) = (0, 0);
            while let Some(item) = framer.next(answer.as_bytes(), &mut pos).expect("framed") {
                let head = item.head.expect("a head");
                seqs += head.parsed(&answer, item.range).seq.unwrap_or(0);
            }
            black_box(seqs)
        })
    });
    group.bench_function("framing + serde_json per message", |b| {
        b.iter(|| {
            let mut framer = Framer::new(Format::Json);
            let (mut pos, mut seqs) = (0, 0);
            while let Some(item) = framer.next(answer.as_bytes(), &mut pos).expect("framed") {
                seqs += parse_json(&answer[item.range])
                    .expect("parsed")
                    .seq
                    .unwrap_or(0);
            }
            black_box(seqs)
        })
    });
    group.finish();
}

fn bson(c: &mut Criterion) {
    let answer = bson_answer();
    let mut group = c.benchmark_group("hmb bson answer to JSON bodies");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    let mut out = Vec::with_capacity(answer.len() * 2);
    group.bench_function("bson_scan", |b| {
        b.iter(|| {
            out.clear();
            let mut framer = Framer::new(Format::Bson);
            let mut pos = 0;
            while let Some(item) = framer.next(&answer, &mut pos).expect("framed") {
                let parsed = parse_bson(&answer[item.range]).expect("parsed");
                if let BodySrc::BsonDoc(doc) = parsed.body {
                    buslink_hmb::bson_scan::write_document(doc, &mut out).expect("written");
                }
            }
            black_box(out.len())
        })
    });
    group.bench_function("bson crate raw reader", |b| {
        b.iter(|| {
            out.clear();
            let mut framer = Framer::new(Format::Bson);
            let mut pos = 0;
            while let Some(item) = framer.next(&answer, &mut pos).expect("framed") {
                let document =
                    bson::raw::RawDocument::from_bytes(&answer[item.range]).expect("a document");
                let data = document.get_document("data").expect("data");
                write_document(data, &mut out).expect("written");
            }
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, json, bson);
criterion_main!(benches);
