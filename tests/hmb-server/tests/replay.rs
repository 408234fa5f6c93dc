//! Replays the real-server captures of `tests/fixtures/hmb` against this
//! server and compares the answers: status, content type, and bodies as
//! documents (sids, cids, ctime and peer addresses excepted).
//!
//! The captures on bus `/test` build on each other, so they are replayed in
//! capture order against one server (`-c 100`), with recorded sids mapped to
//! the sids of this run. A few requests that the captures rely on but do not
//! show are made here (each marked "not in the capture").

mod support;

use std::time::Duration;

use buslink_hmb_server::{RunningServer, Server, Settings};
use serde_json::Value;
use support::*;

struct Replay {
    server: RunningServer,
    agent: ureq::Agent,
    sids: Sids,
    errors: Vec<String>,
}

/// A request of the capture is made by a hook instead of the generic code.
type Custom<'a> = &'a mut dyn FnMut(&mut Replay, usize, &Exchange) -> Option<Answer>;

impl Replay {
    fn new(settings: Settings) -> Replay {
        Replay {
            server: Server::start(settings).expect("server starts"),
            agent: agent(),
            sids: Sids::default(),
            errors: Vec::new(),
        }
    }

    fn url(&self, recorded_path: &str) -> String {
        format!("{}{}", self.server.url(), self.sids.map_path(recorded_path))
    }

    fn perform(&self, ex: &Exchange) -> Answer {
        let url = self.url(&ex.path);
        let mut headers = Vec::new();
        if let Some(ct) = &ex.content_type {
            headers.push(("Content-Type", ct.as_str()));
        }
        let body = match &ex.body {
            ReqBody::Raw(b) => b.clone(),
            ReqBody::Bson(docs) => bson_body(docs),
        };
        let body = (ex.method == "POST").then_some(body.as_slice());
        request(&self.agent, &ex.method, &url, &headers, body)
            .unwrap_or_else(|e| panic!("{} {url}: {e}", ex.method))
    }

    fn run_file(&mut self, file: &str) {
        self.run_file_with(file, &mut |_, _, _| None);
    }

    fn run_file_with(&mut self, file: &str, custom: Custom<'_>) {
        for (i, ex) in read_fixture(file).iter().enumerate() {
            let answer = match custom(self, i, ex) {
                Some(a) => a,
                None => self.perform(ex),
            };
            let mut errs = Vec::new();
            self.check(ex, &answer, &mut errs);
            for e in errs {
                self.errors
                    .push(format!("{file} #{i} {} {}: {e}", ex.method, ex.path));
            }
        }
    }

    fn check(&mut self, ex: &Exchange, got: &Answer, errs: &mut Vec<String>) {
        if got.status != ex.status {
            errs.push(format!(
                "status {} expected, {} got (body {:?})",
                ex.status,
                got.status,
                got.text()
            ));
            return;
        }
        if got.content_type != ex.resp_content_type {
            errs.push(format!(
                "content type {:?} expected, {:?} got",
                ex.resp_content_type, got.content_type
            ));
        }
        let ct = ex.resp_content_type.as_deref().unwrap_or("");
        let is_recv = ex.path.contains("/recv/") || ex.path.contains("/stream/");
        if ct.starts_with("text/") || ct.is_empty() {
            if got.text().trim_end() != ex.resp_body.trim_end() {
                errs.push(format!(
                    "body {:?} expected, {:?} got",
                    ex.resp_body,
                    got.text()
                ));
            }
        } else if ct == "application/bson" {
            let expected = recorded_bson_lines(&ex.resp_body);
            let actual = docs_to_json(&split_bson(&got.body));
            if is_recv {
                compare_messages(&expected, &actual, errs);
            } else {
                compare(
                    &Value::Array(expected.clone()),
                    &Value::Array(actual.clone()),
                    "",
                    errs,
                );
            }
            self.learn_sid(ex, expected.first(), actual.first());
        } else {
            let expected: Value = serde_json::from_str(&expand_recorded_json(&ex.resp_body))
                .unwrap_or_else(|e| panic!("recorded body of {} is not JSON: {e}", ex.path));
            let actual = got.json();
            if is_recv {
                match (json_list(&expected), json_list(&actual)) {
                    (Some(e), Some(a)) => compare_messages(&e, &a, errs),
                    _ => errs.push(format!("not a message list: {actual}")),
                }
            } else if ex.path.ends_with("/status") {
                compare(&self.map_status(&expected), &actual, "", errs);
            } else {
                compare(&expected, &actual, "", errs);
            }
            self.learn_sid(ex, Some(&expected), Some(&actual));
        }
    }

    fn learn_sid(&mut self, ex: &Exchange, expected: Option<&Value>, actual: Option<&Value>) {
        if !ex.path.ends_with("/open") {
            return;
        }
        fn sid(v: Option<&Value>) -> Option<&str> {
            v.and_then(|v| v.get("sid")).and_then(Value::as_str)
        }
        if let (Some(e), Some(a)) = (sid(expected), sid(actual)) {
            self.sids.0.insert(e.to_owned(), a.to_owned());
        }
    }

    fn map_status(&self, expected: &Value) -> Value {
        let mut out = expected.clone();
        if let Some(sessions) = out.get_mut("session").and_then(Value::as_object_mut) {
            let mapped: serde_json::Map<String, Value> = sessions
                .iter()
                .map(|(k, v)| (self.sids.0.get(k).cloned().unwrap_or(k.clone()), v.clone()))
                .collect();
            *sessions = mapped;
        }
        out
    }

    /// Opens a session the capture used but did not show, mapping its sid.
    fn open_unrecorded(&mut self, bus: &str, body: &str, recorded_sid: &str) {
        let url = format!("{}/{bus}/open", self.server.url());
        let a = post_json(&self.agent, &url, body);
        assert_eq!(a.status, 200, "{}", a.text());
        let sid = a.json()["sid"].as_str().expect("sid").to_owned();
        self.sids.0.insert(recorded_sid.to_owned(), sid);
    }

    /// Sends a JSON body through a recorded session (not in the capture).
    fn send_unrecorded(&self, bus: &str, recorded_sid: &str, body: &str) {
        let url = self.url(&format!("/{bus}/send/{recorded_sid}"));
        let a = post_json(&self.agent, &url, body);
        assert_eq!(a.status, 204, "{}", a.text());
    }

    /// Waits until the sessions of a bus with these recorded sids are all in
    /// a request.
    fn wait_active(&self, bus: &str, recorded: &[&str]) {
        let wanted: Vec<String> = recorded
            .iter()
            .map(|s| self.sids.0.get(*s).cloned().unwrap_or_default())
            .collect();
        wait_until(Duration::from_secs(10), "long polls to start", || {
            let sessions = self.server.sessions(bus);
            wanted
                .iter()
                .all(|w| sessions.iter().any(|s| &s.sid == w && s.active))
        });
    }

    fn finish(self, what: &str) {
        self.server.shutdown();
        assert!(
            self.errors.is_empty(),
            "{what}: {} differences from the captures:\n{}",
            self.errors.len(),
            self.errors.join("\n")
        );
    }
}

/// Runs a recorded GET in a thread (for long polls that something else must
/// end).
fn spawn_get(r: &Replay, ex: &Exchange) -> std::thread::JoinHandle<Answer> {
    let url = r.url(&ex.path);
    let agent = r.agent.clone();
    std::thread::spawn(move || get(&agent, &url))
}

const SENDER: &str = "AAZg5NWrFpLIeqdE";
const RECEIVER: &str = "AAZg5NWrHxEpHwoi";

#[test]
fn replay_main_bus_captures() {
    let mut r = Replay::new(Settings {
        sessions_per_ip: 100,
        ..Settings::for_tests()
    });
    for file in [
        "features.http",
        "open-json-noqueues.http",
        "send-json.http",
        "open-json.http",
        "recv-json.http",
        "recv-heartbeat.http",
        "recv-continuity-mismatch.http",
        "recv-bad-sid.http",
    ] {
        r.run_file(file);
    }

    // The live message arrives while the long poll waits (not in the capture).
    r.run_file_with("recv-longpoll-live.http", &mut |r, _, ex| {
        let poll = spawn_get(r, ex);
        r.wait_active("test", &[RECEIVER]);
        r.send_unrecorded(
            "test",
            SENDER,
            r#"{"0":{"type":"NOTICE","queue":"SYSTEM_ALERT","topic":"PICK","data":{"text":"live","mag":4.0}}}"#,
        );
        Some(poll.join().expect("long poll thread"))
    });

    for file in [
        "recv-own-cid.http",
        "recv-eof-keepfalse.http",
        "recv-eof-endseq.http",
        "open-unknown-queue.http",
        "open-unknown-queue-recv.http",
        "open-seq-variants.http",
        "topics-filter.http",
        "recv-eof-window.http",
        "open-bson.http",
        "send-bson.http",
        "recv-bson.http",
        "announcement.http",
        "send-errors.http",
        "open-errors.http",
    ] {
        r.run_file(file);
    }

    // BIGQ is filled before recv-limit (not in the capture).
    let big: serde_json::Map<String, Value> = (0..6)
        .map(|i| {
            (
                i.to_string(),
                serde_json::json!({"type":"BIG","queue":"BIGQ","data":{"i":i,"pad":"x".repeat(600)}}),
            )
        })
        .collect();
    r.send_unrecorded("test", SENDER, &Value::Object(big).to_string());

    for file in ["recv-limit.http", "info.http", "status.http"] {
        r.run_file(file);
    }
    replay_stream(&mut r);
    r.run_file("recv-qlen.http");
    r.finish("bus /test");
}

/// `stream-json.http` shows raw socket reads: the backlog in one chunk, then a
/// heartbeat every second, in one never-closed JSON object.
fn replay_stream(r: &mut Replay) {
    let exchanges = read_fixture("stream-json.http");
    r.run_file_with("stream-json.http", &mut |_, _, _| None);
    assert_eq!(exchanges.len(), 1, "the open; the stream is checked below");
    let url = r.url("/test/stream/AAZg5NYUMHBvm0Vm");
    let resp = r.agent.get(&url).call().expect("stream starts");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let mut reader = resp.into_reader();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let start = std::time::Instant::now();
    while !text.contains("\"3\":{\"type\":\"HEARTBEAT\"}") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stream too slow: {text}"
        );
        let n = std::io::Read::read(&mut reader, &mut buf).expect("stream read");
        assert!(n > 0, "stream ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(1),
        "two 1 s heartbeats took only {elapsed:?}"
    );
    let expected = r#"{"0":{"type":"ALERT","queue":"SYSTEM_ALERT","sender":"sender1","topic":"ORIGIN","seq":2,"data":{"mag":6,"tags":["a","b"],"text":"third"}},"1":{"type":"NOTICE","queue":"SYSTEM_ALERT","sender":"sender1","topic":"PICK","seq":3,"data":{"mag":4,"text":"live"}},"2":{"type":"HEARTBEAT"},"3":{"type":"HEARTBEAT"}"#;
    assert_eq!(text, expected, "stream bytes differ from the capture");
}

#[test]
fn replay_limit_bus_captures() {
    let mut r = Replay::new(Settings {
        sessions_per_ip: 2,
        buffer_size: 3,
        ..Settings::for_tests()
    });
    // The sender of recv-buffer-gap (cid "snd") was opened off the record.
    r.open_unrecorded("lim", r#"{"cid":"snd"}"#, "AAZg5Ndg4aApiQ35");
    r.run_file("recv-buffer-gap.http");
    let mut polls = Vec::new();
    r.run_file_with("session-limit.http", &mut |r, i, ex| {
        if i == 3 {
            // Both remaining sessions are inside a long poll (not in the capture).
            for sid in ["AAZg5Ndg6hOImahI", "AAZg5Ndg66CN6t3c"] {
                let url = r.url(&format!("/lim/recv/{sid}"));
                let agent = r.agent.clone();
                polls.push(std::thread::spawn(move || get(&agent, &url)));
            }
            r.wait_active("lim", &["AAZg5Ndg6hOImahI", "AAZg5Ndg66CN6t3c"]);
        }
        let _ = ex;
        None
    });
    for p in polls {
        let a = p.join().expect("poll thread");
        assert_eq!(a.status, 200);
        assert_eq!(a.json(), serde_json::json!({"0":{"type":"HEARTBEAT"}}));
    }
    r.finish("bus /lim");
}

#[test]
fn replay_session_expiry_capture() {
    let mut r = Replay::new(Settings {
        session_timeout: Duration::from_secs(1),
        ..Settings::for_tests()
    });
    let exchanges = read_fixture("session-expiry.http");
    assert_eq!(exchanges.len(), 4);
    r.run_file_with("session-expiry.http", &mut |r, i, ex| {
        if i == 2 {
            // The capture waited for the once-a-minute purge; run it until the
            // idle session (timeout 1 s) is gone. Only then ask, since any
            // request would make the session active again.
            wait_until(Duration::from_secs(10), "the session to expire", || {
                r.server.purge_sessions();
                r.server.sessions("exp").is_empty()
            });
        }
        let _ = ex;
        None
    });
    r.finish("bus /exp");
}
