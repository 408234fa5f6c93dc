//! A bus: its queues, its sessions, and the operations on them (open, push,
//! info, status, session activity, expiry).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bson::Bson;
use indexmap::IndexMap;
use serde::Serialize;
use tokio::sync::watch;

use crate::filter::Filter;
use crate::framing::Format;
use crate::message::{Incoming, Message, ANNOUNCEMENT, NEW_QUEUE};
use crate::params::{OpenParams, QueueParams};
use crate::queue::{Queue, QueueInfo};
use crate::session::{Session, SessionStatus, Subscription};
use crate::settings::Settings;
use crate::topics::TopicSet;

/// The 503 text when an IP has too many active sessions.
pub const TOO_MANY_SESSIONS: &str = "maximum number of sessions per IP exceeded";

/// Mutable state of a bus, behind one lock.
#[derive(Debug)]
pub struct BusState {
    /// Queues in creation order.
    pub queues: IndexMap<String, Queue>,
    /// Sessions by sid.
    pub sessions: HashMap<String, Session>,
}

/// One bus (first path segment).
#[derive(Debug)]
pub struct Bus {
    name: String,
    capacity: usize,
    state: Mutex<BusState>,
    changed: watch::Sender<u64>,
}

/// The `/open` acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ack {
    /// Session id.
    pub sid: String,
    /// Client id.
    pub cid: String,
    /// Per requested queue: resolved seq or error.
    pub queue: IndexMap<String, AckQueue>,
}

/// Per-queue part of the ack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AckQueue {
    /// Resolved start seq, null on error.
    pub seq: Option<i64>,
    /// Error text, null on success.
    pub error: Option<String>,
}

/// Where an `/open` comes from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Socket address of the request.
    pub addr: SocketAddr,
    /// IP the per-IP limit counts (X-Forwarded-For aware).
    pub ip: IpAddr,
}

/// A short view of a session for tests (`RunningServer::sessions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// Session id.
    pub sid: String,
    /// Client id.
    pub cid: String,
    /// A request using the session is in progress.
    pub active: bool,
    /// Queues subscribed.
    pub queues: Vec<String>,
    /// Continuity point (queue, seq).
    pub last: (String, i64),
}

/// Keeps a session active while a request uses it.
#[derive(Debug)]
pub struct SessionGuard {
    bus: Arc<Bus>,
    sid: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut st = self.bus.lock();
        if let Some(s) = st.sessions.get_mut(&self.sid) {
            s.active = s.active.saturating_sub(1);
            if s.active == 0 {
                s.idle_since = Instant::now();
            }
        }
    }
}

impl SessionGuard {
    /// The session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }
}

fn new_sid() -> String {
    let micros = chrono::Utc::now().timestamp_micros().to_be_bytes();
    let tail: [u8; 4] = rand::random();
    let mut raw = [0u8; 12];
    raw[..8].copy_from_slice(&micros);
    raw[8..].copy_from_slice(&tail);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn new_cid() -> String {
    let raw: [u8; 12] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

impl Bus {
    /// A new bus with its `ANNOUNCEMENT` queue; queues hold `capacity`
    /// messages each.
    pub fn new(name: &str, capacity: usize) -> Bus {
        let mut queues = IndexMap::new();
        queues.insert(ANNOUNCEMENT.to_owned(), Queue::new(capacity));
        Bus {
            name: name.to_owned(),
            capacity,
            state: Mutex::new(BusState {
                queues,
                sessions: HashMap::new(),
            }),
            changed: watch::Sender::new(0),
        }
    }

    /// The bus name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the state (a panic elsewhere does not make it unusable).
    pub fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that sees a change after every push.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Stores a message (creating its queue, announced on `ANNOUNCEMENT`).
    /// `sender` overrides the message's sender. Returns the stored seq, or
    /// `None` when an out-of-order message was dropped.
    pub fn push(&self, inc: Incoming, sender: Option<&str>) -> Option<i64> {
        let Incoming { mut message, seq } = inc;
        if let Some(sender) = sender {
            message.sender = sender.to_owned();
        }
        let stored = {
            let mut st = self.lock();
            if !st.queues.contains_key(&message.queue) {
                st.queues
                    .insert(message.queue.clone(), Queue::new(self.capacity));
                let mut data = bson::Document::new();
                data.insert("name", message.queue.clone());
                let announcement = Message {
                    kind: NEW_QUEUE.to_owned(),
                    queue: ANNOUNCEMENT.to_owned(),
                    data: Some(Bson::Document(data)),
                    ..Message::default()
                };
                if let Some(q) = st.queues.get_mut(ANNOUNCEMENT) {
                    q.push(announcement, None);
                }
            }
            let queue = st
                .queues
                .get_mut(&message.queue)
                .expect("queue was created above");
            queue.push(message, seq)
        };
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        stored
    }

    /// Wakes every waiting /recv (used on shutdown).
    pub fn wake_all(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Creates a session. Per-queue problems go into the ack; the only
    /// whole-request failure is the per-IP limit ([`TOO_MANY_SESSIONS`]).
    pub fn open(
        &self,
        params: &OpenParams,
        peer: Peer,
        format: Format,
        settings: &Settings,
        serial: u64,
    ) -> Result<Ack, &'static str> {
        let mut st = self.lock();
        if settings.sessions_per_ip > 0 {
            let same_ip: Vec<&Session> = st.sessions.values().filter(|s| s.ip == peer.ip).collect();
            if same_ip.len() >= settings.sessions_per_ip {
                let victim = same_ip
                    .iter()
                    .filter(|s| !s.is_active())
                    .min_by_key(|s| s.serial)
                    .map(|s| s.sid.clone())
                    .ok_or(TOO_MANY_SESSIONS)?;
                st.sessions.remove(&victim);
            }
        }
        let cid = params
            .cid
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(new_cid);
        let mut sid = new_sid();
        while st.sessions.contains_key(&sid) {
            sid = new_sid();
        }
        let mut ack = Ack {
            sid: sid.clone(),
            cid: cid.clone(),
            queue: IndexMap::new(),
        };
        let mut subs = IndexMap::new();
        for (name, qp) in &params.queue {
            let entry = match subscribe(&st.queues, name, qp, settings.delta) {
                Ok(sub) => {
                    let seq = sub.1;
                    subs.insert(name.clone(), sub.0);
                    AckQueue {
                        seq: Some(seq),
                        error: None,
                    }
                }
                Err(e) => AckQueue {
                    seq: None,
                    error: Some(e),
                },
            };
            ack.queue.insert(name.clone(), entry);
        }
        let session = Session {
            sid: sid.clone(),
            cid,
            ip: peer.ip,
            address: peer.addr.to_string(),
            ctime: chrono::Utc::now(),
            serial,
            format,
            heartbeat: settings.effective_heartbeat(params.heartbeat),
            recv_limit: params.recv_limit,
            subs,
            last: (String::new(), 0),
            active: 0,
            idle_since: Instant::now(),
            sent: 0,
            received: 0,
        };
        st.sessions.insert(sid, session);
        Ok(ack)
    }

    /// Marks a session active for the life of the returned guard; `None` if
    /// there is no such session.
    pub fn acquire(self: &Arc<Self>, sid: &str) -> Option<SessionGuard> {
        let mut st = self.lock();
        let s = st.sessions.get_mut(sid)?;
        s.active += 1;
        Some(SessionGuard {
            bus: Arc::clone(self),
            sid: sid.to_owned(),
        })
    }

    /// Removes sessions inactive for at least `timeout`.
    pub fn purge(&self, timeout: Duration) {
        let now = Instant::now();
        self.lock()
            .sessions
            .retain(|_, s| s.is_active() || now.duration_since(s.idle_since) < timeout);
    }

    /// Drops every session (restart).
    pub fn drop_sessions(&self) {
        self.lock().sessions.clear();
        self.wake_all();
    }

    /// The `/info` reply.
    pub fn info(&self) -> serde_json::Value {
        let st = self.lock();
        let queues: IndexMap<&String, QueueInfo> =
            st.queues.iter().map(|(n, q)| (n, q.info())).collect();
        serde_json::json!({ "queue": queues })
    }

    /// The `/status` reply.
    pub fn status(&self) -> serde_json::Value {
        let st = self.lock();
        let mut sessions: Vec<&Session> = st.sessions.values().collect();
        sessions.sort_by_key(|s| s.serial);
        let map: IndexMap<&String, SessionStatus> =
            sessions.into_iter().map(|s| (&s.sid, s.status())).collect();
        serde_json::json!({ "session": map })
    }

    /// Short views of the sessions, oldest first.
    pub fn sessions(&self) -> Vec<SessionSummary> {
        let st = self.lock();
        let mut sessions: Vec<&Session> = st.sessions.values().collect();
        sessions.sort_by_key(|s| s.serial);
        sessions
            .into_iter()
            .map(|s| SessionSummary {
                sid: s.sid.clone(),
                cid: s.cid.clone(),
                active: s.is_active(),
                queues: s.subs.keys().cloned().collect(),
                last: s.last.clone(),
            })
            .collect()
    }
}

/// Builds one subscription and its resolved start seq, or the per-queue
/// error text. The filter is checked before the queue exists.
fn subscribe(
    queues: &IndexMap<String, Queue>,
    name: &str,
    qp: &QueueParams,
    delta: i64,
) -> Result<(Subscription, i64), String> {
    let filter = match &qp.filter {
        Some(f) => Filter::parse(f)?,
        None => None,
    };
    let topics = match &qp.topics {
        Some(t) if !t.is_empty() => Some(TopicSet::new(t).map_err(str::to_owned)?),
        _ => None,
    };
    let queue = queues
        .get(name)
        .ok_or_else(|| "queue not found".to_owned())?;
    let next = queue.next_seq();
    let seq = match qp.seq.unwrap_or(-1) {
        n if n < 0 => (next + n + 1).max(0),
        n if n - next > delta => next,
        n => n,
    };
    let mut sub = Subscription::new(seq);
    sub.endseq = qp.endseq;
    sub.starttime = qp.starttime;
    sub.endtime = qp.endtime;
    sub.topic_patterns = qp.topics.clone();
    sub.topics = topics;
    sub.filter = filter;
    sub.qlen = qp.qlen;
    sub.oowait = qp.oowait;
    sub.keep = qp.keep.unwrap_or(true);
    sub.seedlink = qp.seedlink;
    Ok((sub, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        let addr: SocketAddr = "127.0.0.1:4000".parse().expect("valid addr");
        Peer {
            addr,
            ip: addr.ip(),
        }
    }

    fn send(bus: &Bus, queue: &str) {
        let inc = Incoming {
            message: Message {
                kind: "N".into(),
                queue: queue.into(),
                ..Message::default()
            },
            seq: None,
        };
        bus.push(inc, Some("snd"));
    }

    fn open(bus: &Bus, body: &str, settings: &Settings, serial: u64) -> Result<Ack, &'static str> {
        let params = OpenParams::decode(body.as_bytes(), Format::Json).expect("valid params");
        bus.open(&params, peer(), Format::Json, settings, serial)
    }

    #[test]
    fn new_queue_is_announced() {
        let bus = Bus::new("t", 10);
        send(&bus, "A");
        send(&bus, "A");
        send(&bus, "B");
        let st = bus.lock();
        assert_eq!(st.queues[ANNOUNCEMENT].next_seq(), 2);
        let first = st.queues[ANNOUNCEMENT].first_from(0).expect("announcement");
        assert_eq!(first.kind, NEW_QUEUE);
        assert_eq!(first.sender, "");
    }

    #[test]
    fn seq_resolution() {
        let bus = Bus::new("t", 10);
        for _ in 0..4 {
            send(&bus, "Q");
        }
        let s = Settings::default();
        let seq = |req: &str| {
            let ack = open(&bus, &format!(r#"{{"queue":{{"Q":{req}}}}}"#), &s, 0).expect("open");
            ack.queue["Q"].seq
        };
        assert_eq!(seq(r#"{"seq":-1}"#), Some(4));
        assert_eq!(seq(r#"{"seq":-2}"#), Some(3));
        assert_eq!(seq(r#"{"seq":-100}"#), Some(0));
        assert_eq!(seq(r#"{"seq":1000}"#), Some(4));
        assert_eq!(seq(r#"{}"#), Some(4));
        assert_eq!(seq(r#"{"seq":null}"#), Some(4));
        assert_eq!(seq(r#"{"seq":2}"#), Some(2));
    }

    #[test]
    fn per_ip_limit_evicts_oldest_inactive() {
        let bus = Arc::new(Bus::new("t", 10));
        let s = Settings {
            sessions_per_ip: 2,
            ..Settings::default()
        };
        let a = open(&bus, "{}", &s, 1).expect("first");
        let b = open(&bus, "{}", &s, 2).expect("second");
        let c = open(&bus, "{}", &s, 3).expect("third evicts first");
        assert!(bus.acquire(&a.sid).is_none());
        let _gb = bus.acquire(&b.sid).expect("b alive");
        let _gc = bus.acquire(&c.sid).expect("c alive");
        assert_eq!(open(&bus, "{}", &s, 4), Err(TOO_MANY_SESSIONS));
    }

    #[test]
    fn purge_removes_idle_sessions_only() {
        let bus = Arc::new(Bus::new("t", 10));
        let s = Settings::default();
        let a = open(&bus, "{}", &s, 1).expect("open");
        let b = open(&bus, "{}", &s, 2).expect("open");
        let guard = bus.acquire(&b.sid).expect("b");
        bus.purge(Duration::ZERO);
        assert!(bus.acquire(&a.sid).is_none());
        drop(guard);
        assert!(bus.acquire(&b.sid).is_some());
    }
}
