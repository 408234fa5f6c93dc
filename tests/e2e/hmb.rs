//! HMB end to end: the real `buslink` binary, the real `libbuslink_hmb.so`, and the in-repo HMB
//! server (in process), over loopback HTTP.

use crate::common::*;
use buslink_hmb_server::{
    BasicAuth, Endpoint, FaultAction, FaultRule, Incoming, RunningServer, Server, Settings,
};
use buslink_testkit::process::{buslink, run, run_once};
use buslink_testkit::{build_dir, Daemon, TestDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn start_server(settings: Settings) -> RunningServer {
    Server::start(settings).expect("the HMB server starts")
}

fn big_server() -> RunningServer {
    start_server(Settings {
        buffer_size: 50_000,
        ..Settings::for_tests()
    })
}

/// A buslink config for the HMB plugin. `settings` go under `[consumer.settings]` (before the
/// queue tables), `queues` is the queue tables, `rest` handlers and the like.
pub(crate) fn hmb_config(
    dir: &TestDir,
    url: &str,
    consumer_extra: &str,
    settings: &str,
    queues: &str,
    rest: &str,
) -> PathBuf {
    let text = format!(
        r#"state_dir = "state"
plugin_dirs = ["{plugins}"]
stats_interval_s = 1

[consumer]
name = "test"
plugin = "hmb"
class = "HmbConsumer"
timeout_ms = 400
{consumer_extra}

[consumer.settings]
url = "{url}"
{defaults}{settings}

{queues}

{rest}
"#,
        plugins = build_dir().display(),
        defaults = [
            "heartbeat = 1",
            "retry_wait_ms = 20",
            "retry_wait_max_ms = 200"
        ]
        .iter()
        .filter(|line| {
            let key = line.split(' ').next().unwrap_or_default();
            !settings.contains(&format!("{key} ="))
        })
        .map(|line| format!("{line}\n"))
        .collect::<String>(),
    );
    dir.write("buslink.toml", text)
}

/// A consumer of `url` with `settings` and `queues` whose every event goes to out/all.jsonl.
fn archive_config(dir: &TestDir, url: &str, settings: &str, queues: &str) -> PathBuf {
    hmb_config(dir, url, "", settings, queues, &jsonl_handler("all", ""))
}

/// A small HMB producer speaking /open and /send in JSON or BSON, as a real client does.
pub(crate) struct Producer {
    client: reqwest::blocking::Client,
    url: String,
    bson: bool,
    sid: std::cell::RefCell<String>,
}

impl Producer {
    pub(crate) fn open(url: &str, bson: bool) -> Producer {
        let client = reqwest::blocking::Client::new();
        let sid = Self::open_session(&client, url, bson);
        Producer {
            client,
            url: url.to_owned(),
            bson,
            sid: std::cell::RefCell::new(sid),
        }
    }

    fn open_session(client: &reqwest::blocking::Client, url: &str, bson: bool) -> String {
        let open = client.post(format!("{url}/open"));
        let answer = if bson {
            let body = bson::to_vec(&bson::doc! {}).expect("bson");
            let bytes = open
                .header("Content-Type", "application/bson")
                .body(body)
                .send()
                .expect("open")
                .bytes()
                .expect("ack");
            let doc = bson::Document::from_reader(&mut &bytes[..]).expect("bson ack");
            doc.get_str("sid").expect("sid").to_owned()
        } else {
            let ack: Value = open
                .header("Content-Type", "application/json")
                .body("{}")
                .send()
                .expect("open")
                .json_text();
            ack["sid"].as_str().expect("sid").to_owned()
        };
        answer
    }

    pub(crate) fn send(&self, messages: &[Value]) {
        for part in messages.chunks(1000) {
            // A session lost to a server restart or expiry: open another one, like a client.
            if !self.send_part(part) {
                *self.sid.borrow_mut() = Self::open_session(&self.client, &self.url, self.bson);
                assert!(self.send_part(part), "send failed after a re-open");
            }
        }
    }

    fn send_part(&self, part: &[Value]) -> bool {
        {
            let sid = self.sid.borrow().clone();
            let request = self.client.post(format!("{}/send/{sid}", self.url));
            let request = if self.bson {
                let mut body = Vec::new();
                for message in part {
                    let doc = bson::to_document(message).expect("bson message");
                    doc.to_writer(&mut body).expect("bson write");
                }
                request
                    .header("Content-Type", "application/bson")
                    .body(body)
            } else {
                let wrapped: serde_json::Map<String, Value> = part
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i.to_string(), m.clone()))
                    .collect();
                request
                    .header("Content-Type", "application/json")
                    .body(Value::Object(wrapped).to_string())
            };
            // A connection cut by a server restart: re-open, like a client.
            let Ok(response) = request.send() else {
                return false;
            };
            let status = response.status();
            assert!(
                status.as_u16() == 204 || status.as_u16() == 400,
                "send answered {status}"
            );
            status.as_u16() == 204
        }
    }
}

trait JsonText {
    fn json_text(self) -> Value;
}

impl JsonText for reqwest::blocking::Response {
    fn json_text(self) -> Value {
        let text = self.text().expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }
}

fn notice(queue: &str, topic: &str, n: i64) -> Value {
    json!({"type": "NOTICE", "queue": queue, "topic": topic, "data": {"n": n, "q": queue}})
}

/// Publishes `n` messages per queue (data.n = 0..n), topics cycling through `topics`.
pub(crate) fn messages(queues: &[&str], topics: &[&str], from: i64, to: i64) -> Vec<Value> {
    let mut out = Vec::new();
    for n in from..to {
        for queue in queues {
            out.push(notice(queue, topics[n as usize % topics.len()], n));
        }
    }
    out
}

/// The events of a jsonl file grouped per queue: (seq, data.n) in file order.
pub(crate) fn per_queue(lines: &[Value]) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut out: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for line in lines {
        let event = &line["event"];
        let queue = event["queue"].as_str().expect("queue").to_owned();
        out.entry(queue).or_default().push((
            event["seq"].as_i64().expect("seq"),
            event["data"]["n"].as_i64().expect("data.n"),
        ));
    }
    out
}

fn assert_exactly(lines: &[Value], queues: &[&str], count: i64) {
    let grouped = per_queue(lines);
    for queue in queues {
        let got = grouped.get(*queue).cloned().unwrap_or_default();
        let expected: Vec<(i64, i64)> = (0..count).map(|n| (n, n)).collect();
        if got != expected {
            let missing: Vec<i64> = (0..count)
                .filter(|n| !got.iter().any(|(s, _)| s == n))
                .collect();
            panic!(
                "queue {queue}: {} events, expected {count} in order; missing {:?}; first \
                 out of place {:?}",
                got.len(),
                &missing[..missing.len().min(10)],
                got.iter().enumerate().find(|(i, (s, _))| *s != *i as i64)
            );
        }
    }
}

fn bulk(format: &str, bson_producer: bool) {
    let server = big_server();
    let url = server.bus_url("bulk");
    let queues = ["ALERTS", "PICKS", "WAVES"];
    let topics = ["PICK", "ORIGIN", "AMP", "MAG"];
    let per = 3334; // 10 002 messages
    let producer = Producer::open(&url, bson_producer);
    producer.send(&messages(&queues, &topics, 0, per));
    let dir = TestDir::new(&format!("hmb-bulk-{format}"));
    let queue_tables: String = queues
        .iter()
        .map(|q| format!("[consumer.settings.queues.{q}]\n"))
        .collect();
    let config = archive_config(&dir, &url, &format!("format = \"{format}\""), &queue_tables);
    let started = Instant::now();
    let first = run_once(&config);
    let elapsed = started.elapsed();
    assert_eq!(first.code(), Some(0), "{first}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(lines.len(), per as usize * 3, "every message delivered");
    assert_exactly(&lines, &queues, per);
    assert!(
        !first.stderr.contains("re-opening"),
        "one session throughout (the continuity suffix was right): {first}"
    );
    eprintln!(
        "{format}: {} events through the host in {elapsed:?} (debug build, process start included)",
        lines.len()
    );
    // Categories are topics; bodies are the whole message.
    assert_eq!(lines[0]["category"], lines[0]["event"]["topic"]);
    // The cache holds every queue's next seq, readably.
    let cache = read_cache(&dir);
    assert_eq!(
        cache["last_offset"]["string"],
        format!("ALERTS={per},PICKS={per},WAVES={per}")
    );
    // Nothing new: nothing delivered again.
    let again = run_once(&config);
    assert_eq!(again.code(), Some(0), "{again}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), per as usize * 3);
    // More messages: exactly those.
    producer.send(&messages(&queues, &topics, per, per + 100));
    let third = run_once(&config);
    assert_eq!(third.code(), Some(0), "{third}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_exactly(&lines, &queues, per + 100);
}

#[test]
fn hmb_json_bulk_all_delivered_in_order_and_resumed_exactly() {
    bulk("json", false);
}

#[test]
fn hmb_bson_bulk_all_delivered_in_order_and_resumed_exactly() {
    bulk("bson", true);
}

#[test]
fn hmb_json_published_read_through_bson_session() {
    // JSON numbers become BSON doubles on the server; integral ones come out as integers.
    let server = big_server();
    let url = server.bus_url("mix");
    Producer::open(&url, false).send(&messages(&["Q"], &["T"], 0, 50));
    Producer::open(&url, true).send(&messages(&["Q"], &["T"], 50, 100));
    let dir = TestDir::new("hmb-mix");
    let config = archive_config(
        &dir,
        &url,
        "format = \"bson\"",
        "[consumer.settings.queues.Q]\n",
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_exactly(&lines, &["Q"], 100);
    assert_eq!(read_cache(&dir)["last_offset"]["int"], 99);
}

fn wait_lines(daemon: &mut Daemon, dir: &TestDir, count: usize, what: &str) {
    let out = dir.join("out/all.jsonl");
    daemon.wait_for(what, LIMIT, |_| count_lines(&out) >= count);
}

#[test]
fn hmb_once_drains_through_reconnects_slower_than_the_poll_timeout() {
    let server = big_server();
    let url = server.bus_url("glitch");
    let producer = Producer::open(&url, false);
    producer.send(&messages(&["A"], &["T"], 0, 500));
    // Two answers in a row break off; the second re-open waits longer than a poll.
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Recv),
        bus: None,
        times: 2,
        action: FaultAction::DropMidResponse { after_messages: 20 },
    });
    let dir = TestDir::new("hmb-once-glitch");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nrecv_limit = 4\nretry_wait_ms = 700\nretry_wait_max_ms = 1000",
        "[consumer.settings.queues.A]\n",
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("re-opening"),
        "the faults happened: {run}"
    );
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["A"], 500);
}

#[test]
fn hmb_faults_during_consumption_lose_and_repeat_nothing() {
    let server = big_server();
    let url = server.bus_url("faults");
    let queues = ["A", "B"];
    let producer = Producer::open(&url, false);
    let dir = TestDir::new("hmb-faults");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nrecv_limit = 2\nread_timeout_ms = 1500",
        "[consumer.settings.queues.A]\n[consumer.settings.queues.B]\n",
    );
    let mut daemon = Daemon::run(&config);
    let mut published = 0;
    let mut round = |fault: Option<FaultAction>, what: &str, daemon: &mut Daemon| {
        if let Some(action) = fault {
            server.faults().inject(FaultRule {
                endpoint: Some(Endpoint::Recv),
                bus: None,
                times: 1,
                action,
            });
        }
        producer.send(&messages(&queues, &["T"], published, published + 100));
        published += 100;
        wait_lines(daemon, &dir, published as usize * 2, what);
    };
    round(None, "the first messages", &mut daemon);
    round(
        Some(FaultAction::DropMidResponse { after_messages: 5 }),
        "messages after a connection drop mid-response",
        &mut daemon,
    );
    round(
        Some(FaultAction::Drop),
        "messages after a dropped connection",
        &mut daemon,
    );
    round(
        Some(FaultAction::Status {
            code: 400,
            message: None,
        }),
        "messages after 400 invalid session",
        &mut daemon,
    );
    round(
        Some(FaultAction::Status {
            code: 503,
            message: None,
        }),
        "messages after 503",
        &mut daemon,
    );
    round(
        Some(FaultAction::Status {
            code: 500,
            message: None,
        }),
        "messages after 500",
        &mut daemon,
    );
    round(
        Some(FaultAction::Malformed {
            body: "{\"0\":{\"type\":\"NOTICE\",\"queue\":".into(),
            content_type: None,
        }),
        "messages after a truncated body",
        &mut daemon,
    );
    round(
        Some(FaultAction::Malformed {
            body: "{\"0\": nonsense}".into(),
            content_type: None,
        }),
        "messages after malformed JSON",
        &mut daemon,
    );
    round(
        Some(FaultAction::Malformed {
            body: "<html>proxy error</html>".into(),
            content_type: Some("text/html".into()),
        }),
        "messages after a wrong content type",
        &mut daemon,
    );
    round(
        Some(FaultAction::StallMidResponse {
            after_messages: 3,
            ms: None,
        }),
        "messages after a stall mid-response",
        &mut daemon,
    );
    round(
        Some(FaultAction::Stall { ms: None }),
        "messages after a stalled request",
        &mut daemon,
    );
    server.faults().clear();
    // A restart that keeps the queues (sessions lost, connections cut).
    server.restart(true);
    round(None, "messages after a server restart", &mut daemon);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_exactly(&lines, &queues, published);
    for clear in [
        "HTTP 400",
        "HTTP 503",
        "HTTP 500",
        "torn answer",
        "undecodable JSON message",
        "text/html",
    ] {
        assert!(
            run.stderr.contains(clear),
            "no {clear:?} in the log:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("panic"), "{}", run.stderr);
}

#[test]
fn hmb_bson_malformed_and_torn_answers_are_retried() {
    let server = big_server();
    let url = server.bus_url("bsonfaults");
    let producer = Producer::open(&url, true);
    producer.send(&messages(&["Q"], &["T"], 0, 200));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::Malformed {
            body: "\u{5}\u{0}\u{0}\u{0}garbage".into(),
            content_type: None,
        },
    ));
    server.faults().inject(FaultRule::once(
        Endpoint::Recv,
        FaultAction::DropMidResponse { after_messages: 7 },
    ));
    let dir = TestDir::new("hmb-bson-faults");
    let config = archive_config(
        &dir,
        &url,
        "format = \"bson\"\nrecv_limit = 1",
        "[consumer.settings.queues.Q]\n",
    );
    let mut daemon = Daemon::run(&config);
    wait_lines(
        &mut daemon,
        &dir,
        200,
        "every message despite bad BSON answers",
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["Q"], 200);
    assert!(run.stderr.contains("undecodable"), "{}", run.stderr);
}

#[test]
fn hmb_gap_reported_when_the_server_no_longer_holds_messages() {
    let server = start_server(Settings {
        buffer_size: 20,
        ..Settings::for_tests()
    });
    let url = server.bus_url("gap");
    let producer = Producer::open(&url, false);
    producer.send(&messages(&["Q"], &["T"], 0, 10));
    let dir = TestDir::new("hmb-gap");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"",
        "[consumer.settings.queues.Q]\n",
    );
    let first = run_once(&config);
    assert_eq!(first.code(), Some(0), "{first}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 10);
    // 100 more while the consumer is away: the server keeps only the last 20 (seq 90..109).
    producer.send(&messages(&["Q"], &["T"], 10, 110));
    // on_gap = "stop": the run stops at the gap, saying which messages are gone.
    let stop = dir.write(
        "stop.toml",
        std::fs::read_to_string(&config)
            .expect("config")
            .edit("timeout_ms = 400", "timeout_ms = 400\non_gap = \"stop\""),
    );
    let stopped = run_once(&stop);
    assert_eq!(stopped.code(), Some(1), "{stopped}");
    assert!(
        stopped
            .stderr
            .contains("gap on the bus: queue Q seq 10 to 89 (80 events) are gone"),
        "{stopped}"
    );
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 10);
    // The default outside Hermes mode: warned, counted, and the rest read.
    let second = run_once(&config);
    assert_eq!(second.code(), Some(0), "{second}");
    assert!(
        second
            .stderr
            .contains("gap on queue Q: expected seq 10, received seq 90: 80 message(s) lost")
            && second
                .stderr
                .contains("gap on the bus: queue Q seq 10 to 89 (80 events)"),
        "{second}"
    );
    let seqs: Vec<i64> = read_lines(&dir, "out/all.jsonl")
        .iter()
        .map(|l| l["event"]["seq"].as_i64().expect("seq"))
        .collect();
    let expected: Vec<i64> = (0..10).chain(90..110).collect();
    assert_eq!(seqs, expected);
}

#[test]
fn hmb_server_restart_losing_queues_is_reported_and_new_messages_read() {
    let server = big_server();
    let url = server.bus_url("reset");
    let dir = TestDir::new("hmb-reset");
    Producer::open(&url, false).send(&messages(&["Q"], &["T"], 0, 20));
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"",
        "[consumer.settings.queues.Q]\n",
    );
    let mut daemon = Daemon::run(&config);
    wait_lines(&mut daemon, &dir, 20, "the first 20 messages");
    server.restart(false);
    // The consumer notices the restart, then the queue is gone until a producer sends again.
    daemon.wait_for("the re-open attempts", LIMIT, |d| {
        d.stderr().contains("queue not found") || d.stderr().contains("lost the queue")
    });
    Producer::open(&url, false).send(&messages(&["Q"], &["T"], 100, 105));
    wait_lines(&mut daemon, &dir, 25, "the messages sent after the restart");
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("queue Q: expected seq 20, but the server's queue ends before it"),
        "{}",
        run.stderr
    );
    let lines = read_lines(&dir, "out/all.jsonl");
    let after: Vec<(i64, i64)> = per_queue(&lines)["Q"][20..].to_vec();
    assert_eq!(after, (0..5).map(|s| (s, 100 + s)).collect::<Vec<_>>());
}

/// An HMB server process holding `first` on queue Q of bus `bus`, and a daemon archiving Q
/// (JSON, `read_timeout_ms` 2 s, in a fresh `TestDir` named `dir_name`) that handled them.
fn daemon_that_read(
    bus: &str,
    dir_name: &str,
    first: &[Value],
) -> (
    buslink_testkit::hmb_process::HmbServerProcess,
    String,
    TestDir,
    PathBuf,
    Daemon,
) {
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(1000, &[]);
    let url = server.bus_url(bus);
    let dir = TestDir::new(dir_name);
    Producer::open(&url, false).send(first);
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nread_timeout_ms = 2000",
        "[consumer.settings.queues.Q]\n",
    );
    let mut daemon = Daemon::run(&config);
    wait_lines(&mut daemon, &dir, first.len(), "the first messages");
    (server, url, dir, config, daemon)
}

/// The server **process** killed (SIGKILL) and started again empty on the same port, after
/// the consumer handled all 20 messages: the daemon shows it waiting for the bus while the
/// queue is gone (a queue its sessions knew is the server's loss, retried: never a config
/// error, never exit 2), says a loss only as possible, and reads the queue again once a
/// producer sends to it.
#[test]
fn hmb_server_process_killed_and_restarted_empty_is_waited_for_then_read_again() {
    let (mut server, url, dir, _config, mut daemon) =
        daemon_that_read("crash", "hmb-crash", &messages(&["Q"], &["T"], 0, 20));
    // Down long enough for the host to re-open the consumer itself (not only the plugin's
    // fetcher), then back, empty.
    server.kill();
    daemon.wait_for("waiting for the server", LIMIT, |d| {
        d.stderr().contains("consumer now waiting for the bus")
    });
    server.start_again(1000, &[]);
    daemon.wait_for("waiting for the queue to come back", LIMIT, |d| {
        d.stderr().contains("consumer now waiting for the bus")
            && d.stderr().contains("queue not found: Q")
    });
    Producer::open(&url, false).send(&messages(&["Q"], &["T"], 100, 105));
    wait_lines(&mut daemon, &dir, 25, "the messages sent after the restart");
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(!run.stderr.contains("[config]"), "{}", run.stderr);
    let lines = read_lines(&dir, "out/all.jsonl");
    let after: Vec<(i64, i64)> = per_queue(&lines)["Q"][20..].to_vec();
    assert_eq!(after, (0..5).map(|s| (s, 100 + s)).collect::<Vec<_>>());
}

/// The daemon frozen (SIGSTOP) while the server process is killed, started again empty and
/// given 30 new messages (seqs 0-29, the old queue had 0-19): woken, the daemon's next
/// position (20) lies inside the new queue. It read on from seq 20 (10 of the 30 new
/// messages, 20 lost without a word); it now asks the server for seq 19 again, finds
/// another message there, says so (a gap of unknown count) and reads the new queue from
/// its start: all 30.
#[test]
fn hmb_server_restarted_with_other_messages_under_the_same_seqs_is_read_from_its_start() {
    let (mut server, url, dir, _config, mut daemon) =
        daemon_that_read("anew", "hmb-anew", &messages(&["Q"], &["T"], 0, 20));
    daemon.signal(libc::SIGSTOP);
    server.kill();
    server.start_again(1000, &[]);
    Producer::open(&url, false).send(&messages(&["Q"], &["T"], 200, 230));
    daemon.signal(libc::SIGCONT);
    wait_lines(&mut daemon, &dir, 50, "the 30 messages of the new queue");
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains(
            "the server holds another message at seq 19 than the one this consumer read there"
        ),
        "{}",
        run.stderr
    );
    let lines = read_lines(&dir, "out/all.jsonl");
    let after: Vec<(i64, i64)> = per_queue(&lines)["Q"][20..].to_vec();
    assert_eq!(after, (0..30).map(|s| (s, 200 + s)).collect::<Vec<_>>());
}

/// Messages with a `starttime` (the event's timestamp): the daemon handles 20 and stops; the
/// server process is killed, started again empty and given 30 others (seqs 0-29, other
/// times). The next start resumes after seq 19 (the cache): the server holds another message
/// there, and the run fails with a data error naming it instead of reading on from seq 20
/// (which lost the new queue's first 20 messages without a word).
#[test]
fn hmb_a_start_after_the_server_made_the_queue_anew_is_a_data_error_not_a_resume() {
    let timed = |n: i64, base: &str| {
        let mut message = notice("Q", "T", n);
        message["starttime"] = format!("{base}:{:02}.000000Z", n).into();
        message
    };
    let first: Vec<Value> = (0..20).map(|n| timed(n, "2026-12-01T10:00")).collect();
    let (mut server, url, dir, config, daemon) = daemon_that_read("again", "hmb-again", &first);
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    server.kill();
    server.start_again(1000, &[]);
    let second: Vec<Value> = (100..130)
        .map(|n| timed(n % 60, "2026-12-02T11:00"))
        .collect();
    Producer::open(&url, false).send(&second);
    let again = run_once(&config);
    assert_eq!(again.code(), Some(1), "{again}");
    assert!(
        again
            .stderr
            .contains("queue Q holds another message at seq 19 than the one handled there"),
        "{again}"
    );
    assert_eq!(count_lines(&dir.join("out/all.jsonl")), 20);
}

#[test]
fn hmb_topics_filter_and_endseq_window_end_the_run() {
    let server = big_server();
    let url = server.bus_url("win");
    let producer = Producer::open(&url, false);
    let topics = ["PICK", "PICKX", "ORIGIN", "AMP"];
    producer.send(&messages(&["T", "W", "F"], &topics, 0, 20));
    let dir = TestDir::new("hmb-window");
    let queues = r#"
[consumer.settings.queues.T]
topics = ["PICK*", "!PICKX", "ORI?IN"]
keep = false
[consumer.settings.queues.W]
seq = 3
endseq = 9
[consumer.settings.queues.F]
keep = false
filter = { "data.n" = { "$gte" = 15 } }
"#;
    let config = archive_config(&dir, &url, "format = \"bson\"", queues);
    // Not --once: the end of the window (EOF) ends the run by itself.
    let daemon = Daemon::run(&config);
    let run = daemon.finish(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("the bus ended the stream"),
        "{}",
        run.stderr
    );
    let grouped = per_queue(&read_lines(&dir, "out/all.jsonl"));
    let t: Vec<i64> = grouped["T"].iter().map(|(_, n)| *n).collect();
    let expected_t: Vec<i64> = (0..20).filter(|n| n % 4 == 0 || n % 4 == 2).collect();
    assert_eq!(t, expected_t, "PICK and ORIGIN, not PICKX or AMP");
    let w: Vec<i64> = grouped["W"].iter().map(|(s, _)| *s).collect();
    assert_eq!(w, (3..=9).collect::<Vec<_>>());
    let f: Vec<i64> = grouped["F"].iter().map(|(_, n)| *n).collect();
    assert_eq!(f, (15..20).collect::<Vec<_>>());
}

#[test]
fn hmb_heartbeat_only_idle_periods_keep_the_session() {
    let server = start_server(Settings {
        session_timeout: Duration::from_secs(1),
        purge_interval: Duration::from_millis(200),
        ..Settings::for_tests()
    });
    let url = server.bus_url("idle");
    let producer = Producer::open(&url, false);
    producer.send(&[notice("Q", "T", 0)]);
    let dir = TestDir::new("hmb-idle");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nread_timeout_ms = 2500",
        "[consumer.settings.queues.Q]\n",
    );
    let mut daemon = Daemon::run(&config);
    wait_lines(&mut daemon, &dir, 1, "the first message");
    // Idle: only heartbeats for a while, longer than the read timeout and the session timeout.
    daemon.wait_for("three heartbeats", LIMIT, |d| {
        d.stderr()
            .lines()
            .filter(|l| l.contains("progress:"))
            .filter_map(|l| l.split("heartbeats ").nth(1))
            .filter_map(|n| n.split(|c: char| !c.is_ascii_digit()).next())
            .any(|n| n.parse::<u64>().is_ok_and(|n| n >= 3))
    });
    let sessions = server.sessions("idle");
    producer.send(&[notice("Q", "T", 1)]);
    wait_lines(&mut daemon, &dir, 2, "a message after the idle period");
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(!run.stderr.contains("re-opening"), "{}", run.stderr);
    let last_progress = run
        .stderr
        .lines()
        .rfind(|l| l.contains("progress:"))
        .unwrap_or_default()
        .to_owned();
    assert!(last_progress.contains("reconnects 0"), "{last_progress}");
    assert!(
        sessions.iter().any(|s| s.queues == vec!["Q".to_owned()]),
        "the consumer's session is still there: {sessions:?}"
    );
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["Q"], 2);
}

#[test]
fn hmb_wrong_password_is_a_clear_error_and_passwords_never_logged() {
    let server = start_server(Settings {
        auth: Some(BasicAuth {
            user: "reader".into(),
            password: "right-pass-4f1c".into(),
        }),
        ..Settings::for_tests()
    });
    server
        .publish("auth", Incoming::new("NOTICE", "Q").data(json!({"n": 0})))
        .expect("published");
    let url = server.bus_url("auth");
    let dir = TestDir::new("hmb-auth");
    let wrong = archive_config(
        &dir,
        &url,
        "format = \"json\"\nuser = \"reader\"\npassword = \"wrong-pass-9d2e\"",
        "[consumer.settings.queues.Q]\n",
    );
    let failed = run(
        &[
            "--log-level",
            "debug",
            "run",
            "--once",
            "--config",
            &wrong.to_string_lossy(),
        ],
        LIMIT,
    );
    assert_ne!(failed.code(), Some(0), "{failed}");
    assert!(
        failed
            .stderr
            .contains("the server refused the credentials of user 'reader'"),
        "{failed}"
    );
    assert!(!failed.stderr.contains("wrong-pass-9d2e"), "{failed}");
    dir.write("secret.txt", "right-pass-4f1c\n");
    let right = archive_config(
        &dir,
        &url,
        "format = \"json\"\nuser = \"reader\"\npassword_file = \"secret.txt\"",
        "[consumer.settings.queues.Q]\n",
    );
    let ok = run(
        &[
            "--log-level",
            "debug",
            "run",
            "--once",
            "--config",
            &right.to_string_lossy(),
        ],
        LIMIT,
    );
    assert_eq!(ok.code(), Some(0), "{ok}");
    assert_eq!(read_lines(&dir, "out/all.jsonl").len(), 1);
    assert!(!ok.stderr.contains("right-pass-4f1c"), "{ok}");
    let query = run(
        &["query", "--config", &right.to_string_lossy(), "status"],
        LIMIT,
    );
    assert_eq!(query.code(), Some(0), "{query}");
    assert!(!query.stdout.contains("right-pass-4f1c") && !query.stderr.contains("right-pass-4f1c"));
}

#[test]
fn hmb_hermes_event_reaches_handlers_as_a_hermes_event() {
    let server = big_server();
    let url = server.bus_url("hermes");
    let hermes = json!({
        "evcategory": "base", "eventtype": "added", "objtype": "SRVUsers",
        "objpkey": 1023, "objattrs": {"user_id": 1023, "name": "ada"},
        "step": 0, "isPartiallyProcessed": false
    });
    let producer = Producer::open(&url, false);
    producer.send(&[
        json!({"type": "HERMES", "queue": "EV", "topic": "base", "data": hermes,
               "starttime": "2024-01-01T08:30:00.5Z"}),
        json!({"type": "NOTICE", "queue": "EV", "data": {"text": "not hermes"}}),
    ]);
    for format in ["json", "bson"] {
        let dir = TestDir::new(&format!("hmb-hermes-{format}"));
        let handlers =
            jsonl_handler("all", "") + &jsonl_handler("added", r#"{ eventtype = "added" }"#);
        let config = hmb_config(
            &dir,
            &url,
            "",
            &format!("format = \"{format}\""),
            "[consumer.settings.queues.EV]\n",
            &handlers,
        );
        let run = run_once(&config);
        assert_eq!(run.code(), Some(0), "{run}");
        let added = read_lines(&dir, "out/added.jsonl");
        assert_eq!(added.len(), 1, "{format}: {added:?}");
        assert_eq!(
            added[0]["event"], hermes,
            "{format}: the body is the Hermes event"
        );
        assert_eq!(added[0]["category"], "base");
        assert_eq!(added[0]["timestamp"], "2024-01-01T08:30:00.500000Z");
        let all = read_lines(&dir, "out/all.jsonl");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1]["category"], "NOTICE", "no topic: the type");
        assert_eq!(all[1]["event"]["data"]["text"], "not hermes");
        assert_eq!(all[1]["event"]["seq"], 1);
        // Read in the same answer, without a starttime: its own time (when it was received),
        // not the one before it.
        assert_eq!(all[0]["timestamp"], "2024-01-01T08:30:00.500000Z");
        let received = all[1]["timestamp"].as_str().unwrap_or("");
        let received = chrono::DateTime::parse_from_rfc3339(received)
            .unwrap_or_else(|e| panic!("{format}: {received:?}: {e}"));
        let age = chrono::Utc::now().signed_duration_since(received);
        assert!(
            age >= chrono::Duration::zero() && age < chrono::Duration::minutes(10),
            "{format}: received {received}, {age} ago"
        );
    }
}

#[test]
fn hmb_query_commands_print_the_server_answers_and_send() {
    let server = big_server();
    let url = server.bus_url("ops");
    server
        .publish("ops", Incoming::new("NOTICE", "Q").data(json!({"n": 0})))
        .expect("published");
    let dir = TestDir::new("hmb-query");
    let config = archive_config(
        &dir,
        &url,
        "format = \"bson\"",
        "[consumer.settings.queues.Q]\n",
    );
    let path = config.to_string_lossy().into_owned();
    let features = run(&["query", "--config", &path, "features"], LIMIT);
    assert_eq!(features.code(), Some(0), "{features}");
    let value: Value = serde_json::from_str(&features.stdout).expect("pretty JSON");
    assert!(value["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("BSON"))));
    let info = run(&["query", "--config", &path, "info"], LIMIT);
    assert_eq!(info.code(), Some(0), "{info}");
    let value: Value = serde_json::from_str(&info.stdout).expect("pretty JSON");
    assert_eq!(value["queue"]["Q"]["endseq"], 1);
    let sent = run(
        &[
            "query",
            "--config",
            &path,
            "send",
            "--queue",
            "Q",
            "--type",
            "TEST",
            "--topic",
            "PING",
            r#"{"hello": "world"}"#,
        ],
        LIMIT,
    );
    assert_eq!(sent.code(), Some(0), "{sent}");
    assert!(sent.stdout.contains("sent 1 message"), "{sent}");
    let status = run(&["query", "--config", &path, "status"], LIMIT);
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        serde_json::from_str::<Value>(&status.stdout).is_ok(),
        "{status}"
    );
    let bad = run(&["query", "--config", &path, "send", "--queue", "Q"], LIMIT);
    assert_ne!(bad.code(), Some(0), "{bad}");
    let consumed = run_once(&config);
    assert_eq!(consumed.code(), Some(0), "{consumed}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["category"], "PING");
    assert_eq!(lines[1]["event"]["data"]["hello"], "world");
}

#[test]
fn hmb_missing_capability_and_bad_settings_are_refused_clearly() {
    let server = big_server();
    let url = server.bus_url("caps");
    let dir = TestDir::new("hmb-settings");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nheartbeat = 5\nread_timeout_ms = 3000",
        "[consumer.settings.queues.Q]\n",
    );
    let check = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_ne!(check.code(), Some(0), "{check}");
    assert!(check.stderr.contains("read_timeout_ms"), "{check}");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nbogus = 1",
        "[consumer.settings.queues.Q]\n",
    );
    let check = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_ne!(check.code(), Some(0), "{check}");
    assert!(check.stderr.contains("bogus"), "{check}");
    // A server without BSON (its /features answer replaced) refuses a BSON consumer.
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Features),
        bus: None,
        times: 0,
        action: FaultAction::Malformed {
            body: r#"{"capabilities":["JSON","INFO"],"functions":[],"software":"old"}"#.into(),
            content_type: None,
        },
    });
    let config = archive_config(
        &dir,
        &url,
        "format = \"bson\"",
        "[consumer.settings.queues.Q]\n",
    );
    let refused = run_once(&config);
    assert_ne!(refused.code(), Some(0), "{refused}");
    assert!(
        refused.stderr.contains("lacks BSON (needed by `format`)"),
        "{refused}"
    );
    server.faults().clear();
    // A queue the server does not know stops the first open, naming the queue.
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"",
        "[consumer.settings.queues.NOSUCH]\n",
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(2), "a config error: {run}");
    assert!(run.stderr.contains("queue not found: NOSUCH"), "{run}");
    // Found only at run time, it still points at the queue's line in the config.
    assert!(
        run.stderr.contains("buslink.toml:")
            && run.stderr.contains("key `consumer.settings.queues.NOSUCH`"),
        "{run}"
    );
}

#[test]
fn hmb_stream_mode_json_and_bson_survive_faults() {
    for format in ["json", "bson"] {
        let server = big_server();
        let url = server.bus_url("stream");
        let producer = Producer::open(&url, format == "bson");
        producer.send(&messages(&["A", "B"], &["T", "U"], 0, 300));
        server.faults().inject(FaultRule::once(
            Endpoint::Stream,
            FaultAction::DropMidResponse { after_messages: 50 },
        ));
        let dir = TestDir::new(&format!("hmb-stream-{format}"));
        let config = archive_config(
            &dir,
            &url,
            &format!("format = \"{format}\"\nstream = true"),
            "[consumer.settings.queues.A]\n[consumer.settings.queues.B]\n",
        );
        let mut daemon = Daemon::run(&config);
        wait_lines(&mut daemon, &dir, 600, "the backlog through /stream");
        // Live messages arrive on the open stream; then a cut stream and an invalid session.
        producer.send(&messages(&["A", "B"], &["T", "U"], 300, 310));
        wait_lines(&mut daemon, &dir, 620, "live messages through /stream");
        server.faults().inject(FaultRule::once(
            Endpoint::Stream,
            FaultAction::Status {
                code: 400,
                message: None,
            },
        ));
        server.restart(true);
        producer.send(&messages(&["A", "B"], &["T", "U"], 310, 400));
        wait_lines(&mut daemon, &dir, 800, "messages after the stream was cut");
        let run = daemon.terminate(LIMIT);
        assert_eq!(run.code(), Some(0), "{run}");
        assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["A", "B"], 400);
        assert!(run.stderr.contains("/stream/SID"), "{}", run.stderr);
    }
}

/// Throughput through the host, JSON and BSON (not run by default: build in release and run
/// `cargo test --release -p buslink-e2e --test e2e hmb_throughput -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement; run it on a release build"]
fn hmb_throughput() {
    let total: i64 = std::env::var("HMB_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    for format in ["json", "bson"] {
        let server = start_server(Settings {
            buffer_size: total as usize + 10,
            ..Settings::for_tests()
        });
        let url = server.bus_url("bench");
        let producer = Producer::open(&url, format == "bson");
        for from in (0..total / 2).step_by(10_000) {
            producer.send(&messages(
                &["A", "B"],
                &["PICK", "ORIGIN"],
                from,
                from + 10_000,
            ));
        }
        let dir = TestDir::new(&format!("hmb-throughput-{format}"));
        let config = hmb_config(
            &dir,
            &url,
            "batch_size = 1024",
            &format!("format = \"{format}\""),
            "[consumer.settings.queues.A]\n[consumer.settings.queues.B]\n",
            &jsonl_handler("all", ""),
        );
        let started = Instant::now();
        let run = run_once(&config);
        let elapsed = started.elapsed();
        assert_eq!(run.code(), Some(0), "{run}");
        let count = count_lines(&dir.join("out/all.jsonl"));
        assert_eq!(count as i64, total / 2 * 2);
        // The run ends after one idle poll (timeout_ms = 400): not part of the work.
        let busy = elapsed.saturating_sub(Duration::from_millis(400));
        println!(
            "HMB {format}: {count} events in {:.2} s through the host (jsonl handler, --once, \
             minus the final idle poll): {:.0} events/s",
            busy.as_secs_f64(),
            count as f64 / busy.as_secs_f64()
        );
    }
}

#[test]
fn hmb_errors_handed_to_the_host_resume_exactly_after_the_last_offset() {
    // retries = 1: the second failure in a row goes to the host, which closes, re-opens and
    // seeks after the last offset it handled; prefetched events are simply fetched again.
    let server = big_server();
    let url = server.bus_url("giveup");
    let producer = Producer::open(&url, true);
    producer.send(&messages(&["A", "B"], &["T"], 0, 300));
    let dir = TestDir::new("hmb-giveup");
    let config = hmb_config(
        &dir,
        &url,
        "batch_size = 7",
        "format = \"bson\"\nrecv_limit = 1\nretries = 1",
        "[consumer.settings.queues.A]\n[consumer.settings.queues.B]\n",
        &jsonl_handler("all", ""),
    );
    let mut daemon = Daemon::run(&config);
    wait_lines(&mut daemon, &dir, 100, "the first messages");
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Recv),
        bus: None,
        times: 3,
        action: FaultAction::Status {
            code: 503,
            message: None,
        },
    });
    producer.send(&messages(&["A", "B"], &["T"], 300, 400));
    wait_lines(
        &mut daemon,
        &dir,
        800,
        "every message after the host reconnected",
    );
    let run = daemon.terminate(LIMIT);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr.contains("gave up after 2 failed attempts"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("reconnecting in"), "{}", run.stderr);
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["A", "B"], 400);
}

#[test]
fn hmb_once_on_a_server_failing_mid_drain_is_a_failed_run_never_a_drained_one() {
    let server = big_server();
    let url = server.bus_url("failing");
    let producer = Producer::open(&url, false);
    let total = 3000;
    producer.send(&messages(&["A"], &["T"], 0, total));
    let dir = TestDir::new("hmb-once-failing");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nrecv_limit = 4",
        "[consumer.settings.queues.A]\n",
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::start(buslink(&[
        "run",
        "--once",
        "--config",
        &config.to_string_lossy(),
    ]));
    daemon.wait_for("part of the backlog", LIMIT, |_| count_lines(&out) >= 100);
    // From now on the server answers every request with 500.
    let fault = server.faults().inject(FaultRule {
        endpoint: None,
        bus: None,
        times: 0,
        action: FaultAction::Status {
            code: 500,
            message: None,
        },
    });
    let failed = daemon.finish(LIMIT);
    assert_eq!(failed.code(), Some(1), "not a drained bus: {failed}");
    assert!(
        failed
            .stderr
            .contains("cannot tell whether the bus is drained"),
        "says why: {failed}"
    );
    assert!(
        failed.stderr.contains("events handled in this run"),
        "says what was read: {failed}"
    );
    assert!(!failed.stderr.contains("bus drained"), "{failed}");
    let partial = read_lines(&dir, "out/all.jsonl").len() as i64;
    assert!(partial < total, "stopped before the end: {partial}");

    // The server recovers: the next run reads the rest, each message once.
    server.faults().remove(fault);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["A"], total);
}

#[test]
fn hmb_bson_string_not_utf8_is_delivered_as_bytes_in_order_and_counted() {
    use base64::Engine as _;
    let server = start_server(Settings::for_tests());
    let url = server.bus_url("utf8");
    let producer = Producer::open(&url, true);
    // The middle message's data holds a string that is not UTF-8 (the real server keeps it).
    let mut bad_data = bson::to_vec(&bson::doc! {"n": 1_i32, "name": "PLACEHOLDER"}).expect("bson");
    let at = bad_data
        .windows(11)
        .position(|w| w == b"PLACEHOLDER")
        .expect("placeholder");
    bad_data[at..at + 11].copy_from_slice(b"caf\xe9 \xff\xfe end");
    let mut body = Vec::new();
    for n in 0..3 {
        let mut message = bson::to_vec(&bson::doc! {
            "type": "NOTICE", "queue": "Q", "topic": "T",
            "data": {"n": n, "name": "PLACEHOLDER"},
        })
        .expect("bson");
        if n == 1 {
            // The data document is the last element: swap in the one with the bad string.
            let data_at = message.len() - 1 - (bad_data.len());
            message.truncate(data_at);
            message.extend_from_slice(&bad_data);
            message.push(0);
            let len = (message.len() as i32).to_le_bytes();
            message[..4].copy_from_slice(&len);
        }
        body.extend_from_slice(&message);
    }
    let sid = producer.sid.borrow().clone();
    let status = producer
        .client
        .post(format!("{url}/send/{sid}"))
        .header("Content-Type", "application/bson")
        .body(body)
        .send()
        .expect("send")
        .status();
    assert_eq!(
        status.as_u16(),
        204,
        "the server accepts it, as the real one"
    );
    let dir = TestDir::new("hmb-not-utf8");
    archive_config(
        &dir,
        &url,
        "format = \"bson\"",
        "[consumer.settings.queues.Q]\n",
    );
    // `--once` stops at the first poll that finds nothing in timeout_ms: 2 s, so the run outlasts
    // stats_interval_s = 1 after the events and a progress line shows the counters.
    let text = dir
        .read("buslink.toml")
        .edit("timeout_ms = 400", "timeout_ms = 2000");
    let config = dir.write("buslink.toml", text);
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    let lines = read_lines(&dir, "out/all.jsonl");
    assert_eq!(offsets(&lines), vec![0, 1, 2], "{lines:?}");
    assert_eq!(lines[0]["event"]["data"]["n"], 0);
    assert_eq!(lines[2]["event"]["data"]["n"], 2);
    let middle = &lines[1];
    assert_eq!(middle["category"], "T", "{middle}");
    assert!(middle.get("event").is_none(), "{middle}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(middle["body_base64"].as_str().expect("body_base64"))
        .expect("base64");
    // The whole message as the server wrote it, its data byte for byte as sent (last field).
    let declared = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    assert_eq!(declared as usize, bytes.len());
    let tail = [&b"\x03data\0"[..], &bad_data, b"\0"].concat();
    assert!(bytes.ends_with(&tail), "{bytes:?}");
    let head: bson::Document = bson::from_slice_utf8_lossy(&bytes).expect("a BSON document");
    assert_eq!(head.get_str("type"), Ok("NOTICE"));
    assert_eq!(head.get_str("queue"), Ok("Q"));
    assert_eq!(head.get_i64("seq"), Ok(1));
    let warning = run
        .stderr
        .lines()
        .find(|l| l.contains("cannot be converted to JSON"))
        .unwrap_or_else(|| panic!("no warning: {}", run.stderr));
    assert!(warning.contains("queue Q seq 1"), "{warning}");
    assert!(warning.contains("data.name"), "{warning}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("progress:") && l.contains("undecodable_bodies 1")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("undecodable_bodies 2"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("re-opening"), "{}", run.stderr);
}

#[test]
fn hmb_connection_errors_name_the_server_once() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}/nobody");
    let dir = TestDir::new("hmb-refused");
    let config = archive_config(&dir, &url, "", "[consumer.settings.queues.Q]\n");
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "{run}");
    let line = run
        .stderr
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {run}"));
    assert_eq!(
        line.matches(&format!("127.0.0.1:{port}")).count(),
        1,
        "the server named once: {line}"
    );
}

#[test]
fn hmb_a_queue_given_as_an_array_is_refused_at_its_line() {
    let dir = TestDir::new("hmb-queue-array");
    let config = hmb_config(
        &dir,
        "http://127.0.0.1:9/bus",
        "",
        "",
        "[consumer.settings.queues]\nQ = []\n",
        &jsonl_handler("all", ""),
    );
    let check = run(&["check", "--config", &config.to_string_lossy()], LIMIT);
    assert_eq!(check.code(), Some(2), "{check}");
    assert!(
        check.stderr.contains("key `consumer.settings.queues.Q`")
            && check.stderr.contains("expected a table"),
        "{check}"
    );
}

#[test]
fn hmb_a_huge_answer_to_open_is_broken_off_at_its_bound() {
    let server = big_server();
    let url = server.bus_url("hugeopen");
    let producer = Producer::open(&url, false);
    producer.send(&messages(&["Q"], &["T"], 0, 3));
    // /open answers 5 MiB (an ack is a few hundred bytes).
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Open),
        bus: None,
        times: 0,
        action: FaultAction::Malformed {
            body: format!("{{\"sid\":\"{}\"}}", "s".repeat(5 << 20)),
            content_type: None,
        },
    });
    let dir = TestDir::new("hmb-hugeopen");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"",
        "[consumer.settings.queues.Q]\n",
    );
    let run = run_once(&config);
    assert_ne!(run.code(), Some(0), "{run}");
    assert!(
        run.stderr
            .contains("/open: the answer is larger than 4 MiB: not read further"),
        "{run}"
    );
}

#[test]
fn hmb_a_server_that_trickles_a_byte_at_a_time_is_broken_off_by_the_message_deadline() {
    let server = big_server();
    let url = server.bus_url("trickle");
    let producer = Producer::open(&url, false);
    producer.send(&messages(&["Q"], &["T"], 0, 3));
    // Every /recv answers a valid start of a message, a byte every 50 ms: never quiet long
    // enough for read_timeout_ms (3 s), never a whole message.
    let message = format!(
        "{{\"0\":{{\"type\":\"T\",\"queue\":\"Q\",\"seq\":0,\"data\":\"{}\"}}}}",
        "x".repeat(2000)
    );
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Recv),
        bus: None,
        times: 0,
        action: FaultAction::Trickle {
            body: message,
            every_ms: 50,
        },
    });
    let dir = TestDir::new("hmb-trickle");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nheartbeat = 1\nread_timeout_ms = 3000\nmessage_timeout_ms = 1500",
        "[consumer.settings.queues.Q]\n",
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "not a drained bus: {run}");
    assert!(
        run.stderr.contains(
            "arrived without a message being completed in 1500 ms (message_timeout_ms): the \
             server trickles; not read further"
        ),
        "{run}"
    );
    // No message was whole: nothing was handed to the handler.
    let out = std::fs::read_to_string(dir.path().join("out/all.jsonl")).unwrap_or_default();
    assert_eq!(out.lines().count(), 0, "{out}");
}

#[test]
fn hmb_an_answer_that_never_ends_a_message_is_broken_off_with_memory_bounded() {
    let server = big_server();
    let url = server.bus_url("endless");
    let producer = Producer::open(&url, false);
    producer.send(&messages(&["Q"], &["T"], 0, 3));
    // Every /recv answers a message that never ends (200 KB of it here, a server could send
    // gigabytes): the client must not wait for its end. (An endless key is refused sooner:
    // framing's unit tests.)
    server.faults().inject(FaultRule {
        endpoint: Some(Endpoint::Recv),
        bus: None,
        times: 0,
        action: FaultAction::Malformed {
            body: format!("{{\"0\":{{\"data\":\"{}", "k".repeat(200 * 1024)),
            content_type: None,
        },
    });
    let dir = TestDir::new("hmb-endless");
    let config = archive_config(
        &dir,
        &url,
        "format = \"json\"\nmax_message_kb = 64",
        "[consumer.settings.queues.Q]\n",
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(1), "not a drained bus: {run}");
    assert!(
        run.stderr
            .contains("without the end of a message (max_message_kb = 64): not read further"),
        "{run}"
    );
}

/// When `--once` meets a frozen server (the server **process** stopped by SIGSTOP: the port
/// still accepts, nothing answers).
#[derive(Clone, Copy, Debug)]
enum Freeze {
    /// As soon as the consumer is open: before or around its first answer.
    AtOpen,
    /// Once some events were handled: in the middle of the backlog (mid-answer or between
    /// two answers, wherever the stream is then).
    MidDrain,
}

/// `run --once` over a queue of 30 000 messages (`heartbeat = 1`, `recv_limit = 16`, as the
/// field report), the server process frozen at `freeze`: the run fails (exit 1), never
/// "drained", saying what it read and why it stopped; thawed, the next run reads the rest,
/// each message once.
fn once_against_a_frozen_server(format: &str, stream: bool, freeze: Freeze) {
    let total = 30_000;
    let server = buslink_testkit::hmb_process::HmbServerProcess::start(total as u32 + 100, &[]);
    let url = server.bus_url("frozen");
    Producer::open(&url, format == "bson").send(&messages(&["A"], &["T"], 0, total));
    let dir = TestDir::new(&format!("hmb-frozen-{format}-{stream}-{freeze:?}"));
    let config = archive_config(
        &dir,
        &url,
        &format!(
            "format = \"{format}\"\nstream = {stream}\nrecv_limit = 16\nread_timeout_ms = 1500"
        ),
        "[consumer.settings.queues.A]\n",
    );
    let out = dir.join("out/all.jsonl");
    let mut daemon = Daemon::start(buslink(&[
        "run",
        "--once",
        "--config",
        &config.to_string_lossy(),
    ]));
    match freeze {
        Freeze::AtOpen => daemon.wait_for("the consumer open", LIMIT, |d| {
            d.stderr().contains("open and positioned")
        }),
        Freeze::MidDrain => {
            daemon.wait_for("part of the backlog", LIMIT, |_| count_lines(&out) >= 1000)
        }
    }
    server.freeze();
    let failed = daemon.finish(LIMIT);
    let handled = count_lines(&out);
    server.thaw();
    assert_eq!(
        failed.code(),
        Some(1),
        "a frozen server is no drained bus: {failed}"
    );
    assert!(!failed.stderr.contains("bus drained"), "{failed}");
    assert!(
        failed
            .stderr
            .contains("cannot tell whether the bus is drained"),
        "says why: {failed}"
    );
    assert!(
        failed
            .stderr
            .contains(&format!("{handled} events handled in this run")),
        "says what was read ({handled}): {failed}"
    );
    assert!(
        handled < total as usize,
        "stopped before the end: {handled}"
    );
    let run = run_once(&config);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stderr.contains("stopped (bus drained)"), "{run}");
    assert_exactly(&read_lines(&dir, "out/all.jsonl"), &["A"], total);
}

#[test]
fn hmb_once_recv_bson_against_a_server_process_frozen_by_sigstop_fails_never_drained() {
    once_against_a_frozen_server("bson", false, Freeze::MidDrain);
    once_against_a_frozen_server("bson", false, Freeze::AtOpen);
}

#[test]
fn hmb_once_recv_json_against_a_server_process_frozen_by_sigstop_fails_never_drained() {
    once_against_a_frozen_server("json", false, Freeze::MidDrain);
    once_against_a_frozen_server("json", false, Freeze::AtOpen);
}

#[test]
fn hmb_once_stream_bson_against_a_server_process_frozen_by_sigstop_fails_never_drained() {
    once_against_a_frozen_server("bson", true, Freeze::MidDrain);
    once_against_a_frozen_server("bson", true, Freeze::AtOpen);
}

#[test]
fn hmb_once_stream_json_against_a_server_process_frozen_by_sigstop_fails_never_drained() {
    once_against_a_frozen_server("json", true, Freeze::MidDrain);
    once_against_a_frozen_server("json", true, Freeze::AtOpen);
}
