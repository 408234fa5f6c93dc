//! Micro benchmarks of the engine's per-event work: the JSON line handlers write (compact
//! transcoding of the body) and `match` evaluation.

use buslink_engine::config::EventFilter;
use buslink_engine::handlers::{DispatchedEvent, EventMatcher};
use buslink_plugin_api::{Body, Event, OffsetRef};
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

fn event() -> Event<'static> {
    Event {
        offset: OffsetRef::Int(1024),
        timestamp: chrono::DateTime::from_timestamp_micros(1_795_345_271_747_962)
            .unwrap_or_default(),
        category: "base",
        body: Body::Json(BODY),
    }
}

fn per_event(c: &mut Criterion) {
    let mut group = c.benchmark_group("per event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event line (compact JSON)", |b| {
        b.iter(|| black_box(DispatchedEvent::new(event()).line().len()))
    });
    let matcher = EventMatcher::new(&EventFilter {
        category: vec!["base".into()],
        eventtype: vec!["added".into(), "modified".into()],
        objtype: vec!["SRV*".into()],
    })
    .unwrap_or_else(|e| panic!("{e}"));
    group.bench_function("match on category, eventtype, objtype", |b| {
        b.iter(|| black_box(matcher.matches(&DispatchedEvent::new(event()))))
    });
    group.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
