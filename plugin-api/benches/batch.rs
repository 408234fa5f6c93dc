//! Micro benchmarks of what every event pays at the plugin boundary: filling and reading a
//! batch, and reading the routing fields of a Hermes body (early stop vs a full parse).

use buslink_plugin_api::hermes::{peek_fields, HermesEvent, HermesHeader};
use buslink_plugin_api::{Body, Event, EventBatch, OffsetRef};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const BODY: &str = r#"{
    "evcategory": "base",
    "eventtype": "modified",
    "objtype": "SRVUsers",
    "objpkey": 1024,
    "objattrs": {
        "added": {"mail_domain": "example.com"},
        "modified": {"displayname": "Jean Dupont", "phone": "+33 3 88 00 00 00"},
        "removed": {}
    },
    "step": 0,
    "isPartiallyProcessed": false
}"#;

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group.throughput(Throughput::Elements(512));
    let mut batch = EventBatch::new(512, 4 << 20);
    let timestamp = chrono::Utc::now();
    group.bench_function("push 512 events", |b| {
        b.iter(|| {
            batch.clear();
            for i in 0..512 {
                batch.push(Event {
                    offset: OffsetRef::Int(i),
                    timestamp,
                    category: "base",
                    body: Body::Json(BODY),
                });
            }
            black_box(batch.len())
        })
    });
    group.bench_function("iterate 512 events", |b| {
        b.iter(|| batch.iter().map(|e| e.body.as_bytes().len()).sum::<usize>())
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("hermes body");
    group.throughput(Throughput::Elements(1));
    group.bench_function("peek evcategory", |b| {
        b.iter(|| {
            let mut slot = [None];
            peek_fields(black_box(BODY), &["evcategory"], &mut slot);
            black_box(slot)
        })
    });
    group.bench_function("header (3 fields, early stop)", |b| {
        b.iter(|| black_box(HermesHeader::parse(black_box(BODY))))
    });
    group.bench_function("full typed parse", |b| {
        b.iter(|| black_box(HermesEvent::from_json(black_box(BODY)).ok()))
    });
    group.finish();
}

criterion_group!(benches, batch, routing);
criterion_main!(benches);
