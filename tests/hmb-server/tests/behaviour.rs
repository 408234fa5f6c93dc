//! Behaviour beyond the captures: fault injection, restarts, auth, heartbeat
//! bounds and the library helpers, against an in-process server.

mod support;

use std::time::Duration;

use buslink_hmb_server::{
    BasicAuth, Endpoint, FaultAction, FaultRule, Incoming, RunningServer, Server, Settings,
};
use serde_json::{json, Value};
use support::*;

fn start(settings: Settings) -> (RunningServer, ureq::Agent) {
    (Server::start(settings).expect("server starts"), agent())
}

fn publish_n(server: &RunningServer, queue: &str, n: i64) {
    for i in 0..n {
        server
            .publish("t", Incoming::new("N", queue).data(json!({ "i": i })))
            .expect("valid message");
    }
}

fn open(agent: &ureq::Agent, server: &RunningServer, body: Value) -> String {
    let a = post_json(
        agent,
        &format!("{}/open", server.bus_url("t")),
        &body.to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["sid"].as_str().expect("sid").to_owned()
}

fn recv(agent: &ureq::Agent, server: &RunningServer, sid: &str, suffix: &str) -> Answer {
    get(
        agent,
        &format!("{}/recv/{sid}{suffix}", server.bus_url("t")),
    )
}

fn seqs(a: &Answer) -> Vec<i64> {
    json_list(&a.json())
        .expect("message list")
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .collect()
}

#[test]
fn torn_response_moves_the_continuity_point() {
    let (server, agent) = start(Settings::for_tests());
    publish_n(&server, "Q", 3);
    let sid = open(&agent, &server, json!({"queue":{"Q":{"seq":0}}}));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::DropMidResponse { after_messages: 1 },
    ));
    let url = format!("{}/recv/{sid}", server.bus_url("t"));
    let torn = request(&agent, "GET", &url, &[], None);
    assert!(torn.is_err(), "a torn response must fail to read: {torn:?}");
    // Message 1 was being written: the session's point moved past it.
    assert_eq!(recv(&agent, &server, &sid, "/Q/0").status, 400);
    let a = recv(&agent, &server, &sid, "/Q/1");
    assert_eq!(seqs(&a), vec![2]);
    // A client re-opening from the last complete message + 1 loses nothing.
    let sid = open(
        &agent,
        &server,
        json!({"queue":{"Q":{"seq":1,"keep":false}}}),
    );
    assert_eq!(seqs(&recv(&agent, &server, &sid, "")), vec![1, 2]);
}

#[test]
fn status_faults_and_dropped_connections() {
    let (server, agent) = start(Settings::for_tests());
    let open_url = format!("{}/open", server.bus_url("t"));
    for (code, text) in [
        (503, "server is shutting down"),
        (500, "internal server error"),
    ] {
        server.faults().inject(FaultRule::once(
            Endpoint::Open,
            FaultAction::Status {
                code,
                message: None,
            },
        ));
        let a = post_json(&agent, &open_url, "{}");
        assert_eq!((a.status, a.text().trim_end()), (code, text));
    }
    assert_eq!(
        post_json(&agent, &open_url, "{}").status,
        200,
        "faults are used up"
    );

    let id = server.faults().inject(FaultRule {
        endpoint: None,
        bus: Some("t".into()),
        times: 0,
        action: FaultAction::Drop,
    });
    let info = format!("{}/info", server.bus_url("t"));
    assert!(request(&agent, "GET", &info, &[], None).is_err());
    assert!(request(&agent, "GET", &info, &[], None).is_err());
    assert_eq!(
        get(&agent, &format!("{}/other/info", server.url())).status,
        200
    );
    // (ureq retries a GET once when a reused connection dies at once.)
    assert!(server.faults().hits(id) >= Some(2));
    assert!(server.faults().remove(id));
    assert_eq!(get(&agent, &info).status, 200);
}

#[test]
fn stall_until_released_and_malformed_bodies() {
    let (server, agent) = start(Settings::for_tests());
    let id = server.faults().inject(FaultRule::once(
        Endpoint::Features,
        FaultAction::Stall { ms: None },
    ));
    let url = format!("{}/features", server.bus_url("t"));
    let stalled = {
        let (agent, url) = (agent.clone(), url.clone());
        std::thread::spawn(move || get(&agent, &url))
    };
    wait_until(Duration::from_secs(10), "the stall to hit", || {
        server.faults().hits(id) == Some(1)
    });
    // The stall waits for its release; give it every chance to be waiting.
    wait_until(Duration::from_secs(10), "the stall to end", || {
        server.faults().release_stalls();
        stalled.is_finished()
    });
    assert_eq!(stalled.join().expect("thread").status, 200);

    publish_n(&server, "Q", 1);
    let sid = open(&agent, &server, json!({"queue":{"Q":{"seq":0}}}));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::Malformed {
            body: "{\"0\":{\"type\":".into(),
            content_type: None,
        },
    ));
    let bad = recv(&agent, &server, &sid, "");
    assert_eq!(bad.status, 200);
    assert_eq!(bad.content_type.as_deref(), Some("application/json"));
    assert!(serde_json::from_slice::<Value>(&bad.body).is_err());
    assert_eq!(
        seqs(&recv(&agent, &server, &sid, "")),
        vec![0],
        "nothing consumed"
    );
}

#[test]
fn stall_mid_response_then_continue() {
    let (server, agent) = start(Settings::for_tests());
    publish_n(&server, "Q", 3);
    let sid = open(
        &agent,
        &server,
        json!({"queue":{"Q":{"seq":0,"keep":false}}}),
    );
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::StallMidResponse {
            after_messages: 1,
            ms: Some(200),
        },
    ));
    let a = recv(&agent, &server, &sid, "");
    assert_eq!(seqs(&a), vec![0, 1, 2]);
    assert_eq!(
        json_list(&a.json()).expect("list").len(),
        4,
        "ends with EOF"
    );
}

#[test]
fn restart_loses_or_keeps_queues() {
    let (server, agent) = start(Settings::for_tests());
    publish_n(&server, "Q", 2);
    let sid = open(
        &agent,
        &server,
        json!({"heartbeat":30,"queue":{"Q":{"seq":-1}}}),
    );
    let poll = {
        let (agent, url) = (agent.clone(), format!("{}/recv/{sid}", server.bus_url("t")));
        std::thread::spawn(move || request(&agent, "GET", &url, &[], None))
    };
    wait_until(Duration::from_secs(10), "the long poll", || {
        server.sessions("t").iter().any(|s| s.active)
    });
    server.restart(true);
    assert!(
        poll.join().expect("thread").is_err(),
        "restart cuts connections"
    );
    assert_eq!(
        recv(&agent, &server, &sid, "").status,
        400,
        "sessions are gone"
    );
    let info = get(&agent, &format!("{}/info", server.bus_url("t"))).json();
    assert_eq!(info["queue"]["Q"]["endseq"], 2, "queues kept");

    server.restart(false);
    let info = get(&agent, &format!("{}/info", server.bus_url("t"))).json();
    assert_eq!(
        info["queue"].as_object().map(|q| q.len()),
        Some(1),
        "{info}"
    );
    assert_eq!(info["queue"]["ANNOUNCEMENT"]["endseq"], Value::Null);
}

#[test]
fn basic_auth_guards_hmb_endpoints_only() {
    let (server, agent) = start(Settings {
        auth: Some(BasicAuth {
            user: "u".into(),
            password: "p".into(),
        }),
        ..Settings::for_tests()
    });
    let url = format!("{}/features", server.bus_url("t"));
    let a = get(&agent, &url);
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").is_some());
    let wrong = request(
        &agent,
        "GET",
        &url,
        &[("Authorization", "Basic dTp4")],
        None,
    )
    .expect("answer");
    assert_eq!(wrong.status, 401);
    let ok = request(
        &agent,
        "GET",
        &url,
        &[("Authorization", "Basic dTpw")],
        None,
    )
    .expect("answer");
    assert_eq!(ok.status, 200);
    assert_eq!(
        get(&agent, &format!("{}/_admin/health", server.url())).status,
        200
    );
}

#[test]
fn max_heartbeat_bounds_idle_long_polls() {
    let (server, agent) = start(Settings {
        max_heartbeat: Some(1),
        ..Settings::for_tests()
    });
    publish_n(&server, "Q", 1);
    let sid = open(&agent, &server, json!({"queue":{"Q":{}}}));
    let a = recv(&agent, &server, &sid, "");
    assert_eq!(a.json(), json!({"0":{"type":"HEARTBEAT"}}));
}

#[test]
fn own_messages_are_not_delivered_and_bson_keeps_binary() {
    let (server, agent) = start(Settings::for_tests());
    server
        .publish(
            "t",
            Incoming::new("N", "Q").sender("me").data(json!({"a": 1})),
        )
        .expect("valid");
    let bin = bson::Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: vec![0, 1],
    });
    server
        .publish("t", Incoming::new("N", "Q").sender("other").data_bson(bin))
        .expect("valid");
    let sid = open(
        &agent,
        &server,
        json!({"cid":"me","queue":{"Q":{"seq":0,"keep":false}}}),
    );
    let a = recv(&agent, &server, &sid, "");
    assert_eq!(
        a.json(),
        json!({"0":{"type":"N","queue":"Q","sender":"other","seq":1,"data":"AAE="},"1":{"type":"EOF"}})
    );

    let open_doc = bson::doc! {"queue": {"Q": {"seq": 0, "keep": false}}};
    let a = request(
        &agent,
        "POST",
        &format!("{}/open", server.bus_url("t")),
        &[("Content-Type", "application/bson")],
        Some(&bson_body(&[open_doc])),
    )
    .expect("open");
    assert_eq!(a.content_type.as_deref(), Some("application/bson"));
    let ack = split_bson(&a.body);
    let sid = ack[0].get_str("sid").expect("sid").to_owned();
    let a = recv(&agent, &server, &sid, "");
    let docs = split_bson(&a.body);
    assert_eq!(docs.len(), 3);
    assert_eq!(
        docs[0].get_document("data").expect("data").get_f64("a"),
        Ok(1.0)
    );
    assert!(matches!(docs[1].get("data"), Some(bson::Bson::Binary(_))));
}

#[test]
fn oversized_post_and_per_ip_limit_via_forwarded_for() {
    let (server, agent) = start(Settings {
        post_size_kb: 1,
        sessions_per_ip: 1,
        use_xff: true,
        ..Settings::for_tests()
    });
    let sid = {
        let a = request(
            &agent,
            "POST",
            &format!("{}/open", server.bus_url("t")),
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", "10.0.0.1"),
            ],
            Some(b"{}"),
        )
        .expect("open");
        a.json()["sid"].as_str().expect("sid").to_owned()
    };
    let big = format!(
        r#"{{"0":{{"type":"X","queue":"Q","data":"{}"}}}}"#,
        "x".repeat(2000)
    );
    let a = post_json(&agent, &format!("{}/send/{sid}", server.bus_url("t")), &big);
    assert_eq!(a.status, 400);
    assert_eq!(a.text(), "http: request body too large\n");
    // Another forwarded address has its own budget; the same one evicts.
    for ip in ["10.0.0.2", "10.0.0.1"] {
        let a = request(
            &agent,
            "POST",
            &format!("{}/open", server.bus_url("t")),
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", ip),
            ],
            Some(b"{}"),
        )
        .expect("open");
        assert_eq!(a.status, 200);
    }
    assert_eq!(server.sessions("t").len(), 2);
    assert!(
        server.sessions("t").iter().all(|s| s.sid != sid),
        "oldest evicted"
    );
}
