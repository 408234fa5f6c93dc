//! The consumer driven directly (no host) against the in-repo HMB server: positioning, offsets,
//! find_next_event_of_category, reconnection.

use buslink_hmb::{HmbConsumer, HmbSettings};
use buslink_hmb_server::{
    Endpoint, FaultAction, FaultRule, Incoming, RunningServer, Server, Settings,
};
use buslink_plugin_api::{
    Consumer, ConsumerClass, Context, EventBatch, Offset, OffsetRef, PollStatus,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn server() -> RunningServer {
    Server::start(Settings {
        buffer_size: 10_000,
        ..Settings::for_tests()
    })
    .expect("server starts")
}

fn consumer(server: &RunningServer, settings: Value) -> HmbConsumer {
    let mut all = json!({
        "url": server.bus_url("test"),
        "format": "json",
        "heartbeat": 1,
        "retry_wait_ms": 10,
        "retry_wait_max_ms": 50,
    });
    if let (Some(all), Some(extra)) = (all.as_object_mut(), settings.as_object()) {
        for (k, v) in extra {
            all.insert(k.clone(), v.clone());
        }
    }
    let settings: HmbSettings = serde_json::from_value(all).expect("settings");
    let mut consumer = HmbConsumer::new(settings, &Context::new("/tmp")).expect("consumer");
    consumer.open().expect("open");
    consumer
        .set_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    consumer
}

fn publish(server: &RunningServer, queue: &str, topic: &str, n: i64) {
    server
        .publish(
            "test",
            Incoming::new("NOTICE", queue)
                .topic(topic)
                .sender("producer")
                .data(json!({ "n": n })),
        )
        .expect("published");
}

/// Polls until `count` events came (or a deadline): (offset text, category, body) each.
fn collect(consumer: &mut HmbConsumer, count: usize) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    let mut batch = EventBatch::new(64, 1 << 20);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events",
            out.len()
        );
        batch.clear();
        let status = consumer.poll(&mut batch).expect("poll");
        for event in batch.iter() {
            let offset = match event.offset {
                OffsetRef::Int(i) => i.to_string(),
                OffsetRef::String(s) => s.to_owned(),
                other => panic!("offset {other:?}"),
            };
            let body: Value = match event.body {
                buslink_plugin_api::Body::Json(text) => serde_json::from_str(text).expect("json"),
                other => panic!("body {other:?}"),
            };
            out.push((offset, event.category.to_owned(), body));
        }
        if status == PollStatus::Ended {
            break;
        }
    }
    out
}

#[test]
fn composite_offsets_resume_exactly() {
    let server = server();
    for i in 0..5 {
        publish(&server, "A", "X", i);
        publish(&server, "B", "Y", i);
    }
    let mut c = consumer(&server, json!({"queues": {"A": {}, "B": {}}}));
    c.seek_to_beginning().expect("seek");
    let events = collect(&mut c, 10);
    assert_eq!(events.len(), 10);
    // Every offset holds both queues' next seqs.
    let last = events.last().map(|e| e.0.clone()).unwrap_or_default();
    assert_eq!(last, "A=5,B=5");
    // Resume after an event in the middle: exactly the events after it.
    let (middle, _, body) = &events[3];
    let seen_before: Vec<(String, i64)> = events[..4]
        .iter()
        .map(|e| {
            (
                e.2["queue"].as_str().unwrap_or("").to_owned(),
                e.2["seq"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert!(body["seq"].is_i64());
    c.close().expect("close");
    c.seek_after(&Offset::String(middle.clone()))
        .expect("seek_after");
    let rest = collect(&mut c, 6);
    let mut all: Vec<(String, i64)> = seen_before;
    all.extend(rest.iter().map(|e| {
        (
            e.2["queue"].as_str().unwrap_or("").to_owned(),
            e.2["seq"].as_i64().unwrap_or(-1),
        )
    }));
    all.sort();
    let expected: Vec<(String, i64)> = ["A", "B"]
        .iter()
        .flat_map(|q| (0..5).map(move |s| (q.to_string(), s)))
        .collect();
    assert_eq!(all, expected, "nothing lost, nothing repeated");
}

#[test]
fn find_next_event_of_category_filters_by_topic() {
    let server = server();
    for (i, topic) in ["PICK", "ORIGIN", "PICK", "AMP", "ORIGIN"]
        .iter()
        .enumerate()
    {
        publish(&server, "Q", topic, i as i64);
    }
    let mut c = consumer(&server, json!({"queues": {"Q": {}}}));
    c.seek_to_beginning().expect("seek");
    let mut found = EventBatch::new(16, 1 << 20);
    assert!(c
        .find_next_event_of_category("ORIGIN", &mut found)
        .expect("find"));
    assert!(c
        .find_next_event_of_category("ORIGIN", &mut found)
        .expect("find"));
    let offsets: Vec<OffsetRef<'_>> = found.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![OffsetRef::Int(1), OffsetRef::Int(4)]);
    let mut more = EventBatch::new(16, 1 << 20);
    assert!(!c
        .find_next_event_of_category("PICK", &mut more)
        .expect("find"));
    // The position is right after the last event returned: nothing left.
    let mut batch = EventBatch::new(16, 1 << 20);
    assert_eq!(c.poll(&mut batch).expect("poll"), PollStatus::Drained);
}

#[test]
fn seek_variants_and_counters() {
    let server = server();
    for i in 0..10 {
        publish(&server, "Q", "T", i);
    }
    let mut c = consumer(&server, json!({"queues": {"Q": {}}}));
    c.seek(&Offset::Int(7)).expect("seek");
    let got = collect(&mut c, 3);
    assert_eq!(
        got.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["7", "8", "9"]
    );
    c.close().expect("close");
    c.seek_to_end().expect("seek_to_end");
    let mut batch = EventBatch::new(16, 1 << 20);
    assert_eq!(c.poll(&mut batch).expect("poll"), PollStatus::Idle);
    publish(&server, "Q", "T", 10);
    let got = collect(&mut c, 1);
    assert_eq!(got[0].0, "10");
    assert!(c.seek(&Offset::Bytes(vec![1])).is_err());
    assert!(c.seek(&Offset::String("nonsense".into())).is_err());
    let counters = c.counters();
    assert!(counters.iter().any(|(name, _)| name == "gaps"));
}

#[test]
fn torn_answers_and_invalid_sessions_lose_and_repeat_nothing() {
    let server = server();
    for i in 0..50 {
        publish(&server, "Q", "T", i);
    }
    let mut c = consumer(&server, json!({"recv_limit": 1, "queues": {"Q": {}}}));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::DropMidResponse { after_messages: 3 },
    ));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::Status {
            code: 400,
            message: None,
        },
    ));
    c.seek_to_beginning().expect("seek");
    let got = collect(&mut c, 50);
    let seqs: Vec<i64> = got
        .iter()
        .map(|e| e.2["seq"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    let reconnects = c
        .counters()
        .into_iter()
        .find(|(n, _)| n == "reconnects")
        .map_or(0, |(_, v)| v);
    assert!(reconnects >= 2, "reconnects {reconnects}");
}

#[test]
fn queue_not_found_is_named_or_created() {
    let server = server();
    let mut c = consumer(&server, json!({"queues": {"NOPE": {}}}));
    let error = c.seek_to_beginning().expect_err("unknown queue");
    assert!(error.message().contains("NOPE"), "{error}");
    assert!(error.message().contains("autocreate_queues"), "{error}");
    let mut c = consumer(
        &server,
        json!({"autocreate_queues": true, "queues": {"NEWQ": {}}}),
    );
    c.seek_to_beginning().expect("created");
    publish(&server, "NEWQ", "T", 1);
    let got = collect(&mut c, 1);
    assert_eq!(got[0].0, "1", "the TOUCH message (seq 0) is skipped");
}

#[test]
fn continuity_suffix_keeps_one_session_across_many_answers() {
    let server = server();
    for i in 0..60 {
        publish(&server, if i % 2 == 0 { "A" } else { "B" }, "T", i);
    }
    // recv_limit 1 KB: many /recv, each carrying the suffix of the last message received.
    let mut c = consumer(
        &server,
        json!({"recv_limit": 1, "queues": {"A": {}, "B": {}}}),
    );
    c.seek_to_beginning().expect("seek");
    let got = collect(&mut c, 60);
    assert_eq!(got.len(), 60);
    let counter = |name: &str| {
        c.counters()
            .into_iter()
            .find(|(n, _)| n == name)
            .map_or(u64::MAX, |(_, v)| v)
    };
    assert_eq!(
        counter("reconnects"),
        0,
        "a wrong suffix would have cost a re-open"
    );
    assert_eq!(counter("gaps"), 0);
    assert_eq!(counter("duplicates_dropped"), 0);
    let sessions = server.sessions("test");
    let last = sessions
        .iter()
        .find(|s| s.queues.len() == 2)
        .map(|s| s.last.clone());
    let (queue, seq) = last.expect("the consumer's session");
    assert_eq!(
        seq, 29,
        "the continuity point is the last message handed out ({queue})"
    );
}

#[test]
fn a_per_queue_refusal_names_the_queue() {
    let server = server();
    publish(&server, "Q", "T", 0);
    let mut c = consumer(
        &server,
        json!({"queues": {"Q": {"filter": {"data.text": {"$regex": "^a"}}}}}),
    );
    let error = c.seek_to_beginning().expect_err("refused filter");
    assert_eq!(error.key(), Some("queues.Q"));
    assert!(error.message().contains("queue Q"), "{error}");
    assert!(
        error.message().contains("unknown operator: $regex"),
        "{error}"
    );
}
