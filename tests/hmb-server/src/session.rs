//! Sessions and their subscriptions: which message a session gets next, the
//! continuity point, and what `/status` shows.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use serde::Serialize;

use crate::filter::Filter;
use crate::framing::Format;
use crate::message::Message;
use crate::queue::Queue;
use crate::time::{self, Time};
use crate::topics::TopicSet;

/// The subscription of a session to one queue.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Current position: the next seq to look at.
    pub seq: i64,
    /// Last seq to deliver (inclusive).
    pub endseq: Option<i64>,
    /// Window start: messages ending at or before it are skipped.
    pub starttime: Option<Time>,
    /// Window end: a message starting after it ends the subscription.
    pub endtime: Option<Time>,
    /// Topic patterns as requested (for /status).
    pub topic_patterns: Option<Vec<String>>,
    /// Compiled topic patterns.
    pub topics: Option<TopicSet>,
    /// Parsed filter.
    pub filter: Option<Filter>,
    /// Maximum lag in messages.
    pub qlen: Option<i64>,
    /// Seconds to wait for a missing seq.
    pub oowait: Option<i64>,
    /// Wait at the end of the queue (realtime) instead of ending.
    pub keep: bool,
    /// SeedLink flag, shown only.
    pub seedlink: bool,
    /// The subscription has reached its end.
    pub eof: bool,
    /// Since when a missing seq is being waited for (oowait).
    gap_since: Option<Instant>,
}

/// What a subscription has next.
#[derive(Debug)]
pub enum SubNext {
    /// A message to deliver (position already moved past it).
    Message(Arc<Message>),
    /// Nothing now; re-check at the given instant (oowait) or on a push.
    Pending(Option<Instant>),
    /// The subscription has ended.
    Done,
}

impl Subscription {
    /// A subscription starting at `seq` with default window and options.
    pub fn new(seq: i64) -> Subscription {
        Subscription {
            seq,
            endseq: None,
            starttime: None,
            endtime: None,
            topic_patterns: None,
            topics: None,
            filter: None,
            qlen: None,
            oowait: None,
            keep: true,
            seedlink: false,
            eof: false,
            gap_since: None,
        }
    }

    /// Takes the next eligible message of `queue` for a session with `cid`.
    pub fn next(&mut self, queue: &Queue, cid: &str, now: Instant) -> SubNext {
        loop {
            if self.eof {
                return SubNext::Done;
            }
            let next = queue.next_seq();
            if let Some(qlen) = self.qlen {
                if next - self.seq > qlen + 1 {
                    self.seq = next - qlen - 1;
                }
            }
            let Some(m) = queue.first_from(self.seq) else {
                self.gap_since = None;
                if !self.keep {
                    self.eof = true;
                    return SubNext::Done;
                }
                return SubNext::Pending(None);
            };
            if m.seq > self.seq {
                // A missing seq inside what is held may still arrive (OOD):
                // wait up to oowait seconds before skipping it.
                let inside = queue.oldest_seq().is_some_and(|o| self.seq >= o);
                if let (true, Some(wait)) = (inside, self.oowait.filter(|w| *w > 0)) {
                    let since = *self.gap_since.get_or_insert(now);
                    let deadline = since + Duration::from_secs(wait.unsigned_abs());
                    if now < deadline {
                        return SubNext::Pending(Some(deadline));
                    }
                }
                self.seq = m.seq;
            }
            self.gap_since = None;
            if self.endseq.is_some_and(|e| m.seq > e) {
                self.eof = true;
                return SubNext::Done;
            }
            if let (Some(end), Some(start)) = (self.endtime, m.starttime) {
                if start > end {
                    self.eof = true;
                    return SubNext::Done;
                }
            }
            self.seq = m.seq + 1;
            if let (Some(start), Some(end)) = (self.starttime, m.endtime) {
                if end <= start {
                    continue;
                }
            }
            if self.topics.as_ref().is_some_and(|t| !t.matches(&m.topic)) {
                continue;
            }
            if m.sender == cid {
                continue;
            }
            if self.filter.as_ref().is_some_and(|f| !f.matches(m)) {
                continue;
            }
            return SubNext::Message(Arc::clone(m));
        }
    }
}

/// What a session has next, across its subscriptions.
#[derive(Debug)]
pub enum Next {
    /// A message to write.
    Message(Arc<Message>),
    /// Nothing ready; re-check at the instant (if any) or on a push.
    Wait(Option<Instant>),
    /// Every subscription has ended: write EOF.
    Eof,
}

/// A session created by `/open`.
#[derive(Debug)]
pub struct Session {
    /// Session id.
    pub sid: String,
    /// Client id; messages sent through the session carry it as sender.
    pub cid: String,
    /// IP the per-IP limit counts this session under.
    pub ip: IpAddr,
    /// `ip:port` of the `/open` request.
    pub address: String,
    /// Creation time.
    pub ctime: Time,
    /// Creation order within the server (for "oldest").
    pub serial: u64,
    /// Response format.
    pub format: Format,
    /// Heartbeat interval in seconds (0 = none), after server bounds.
    pub heartbeat: u64,
    /// recv_limit as requested (KB, 0 = default).
    pub recv_limit: i64,
    /// Subscriptions by queue name.
    pub subs: IndexMap<String, Subscription>,
    /// Continuity point: queue and seq of the last message handed out.
    pub last: (String, i64),
    /// Requests in progress using this session.
    pub active: u32,
    /// When the session last became inactive.
    pub idle_since: Instant,
    /// Bytes read from /send bodies.
    pub sent: u64,
    /// Bytes written by /recv and /stream.
    pub received: u64,
}

/// What `/status` shows for one session.
#[derive(Debug, Serialize)]
pub struct SessionStatus {
    cid: String,
    address: String,
    ctime: String,
    sent: u64,
    received: u64,
    format: &'static str,
    heartbeat: u64,
    recv_limit: i64,
    queue: IndexMap<String, SubscriptionStatus>,
}

#[derive(Debug, Serialize)]
struct SubscriptionStatus {
    topics: Option<Vec<String>>,
    seq: i64,
    endseq: Option<i64>,
    starttime: Option<String>,
    endtime: Option<String>,
    qlen: Option<i64>,
    oowait: Option<i64>,
    keep: bool,
    seedlink: bool,
    eof: bool,
}

impl Session {
    /// The next thing to write for this session. Moves the positions and the
    /// continuity point when a message is taken.
    pub fn next(&mut self, queues: &IndexMap<String, Queue>, now: Instant) -> Next {
        let mut wake: Option<Instant> = None;
        let mut open = false;
        for (name, sub) in self.subs.iter_mut() {
            let Some(queue) = queues.get(name) else {
                continue;
            };
            match sub.next(queue, &self.cid, now) {
                SubNext::Message(m) => {
                    self.last = (m.queue.clone(), m.seq);
                    return Next::Message(m);
                }
                SubNext::Pending(at) => {
                    open = true;
                    if let Some(at) = at {
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                    }
                }
                SubNext::Done => {}
            }
        }
        if open {
            Next::Wait(wake)
        } else {
            Next::Eof
        }
    }

    /// The continuity rule: a /recv must name exactly the last message handed
    /// out (`("", 0)` when there was none).
    pub fn continuity_ok(&self, queue: &str, seq: i64) -> bool {
        self.last.0 == queue && self.last.1 == seq
    }

    /// Whether a request using the session is in progress.
    pub fn is_active(&self) -> bool {
        self.active > 0
    }

    /// The `/status` entry.
    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            cid: self.cid.clone(),
            address: self.address.clone(),
            ctime: time::format(&self.ctime),
            sent: self.sent,
            received: self.received,
            format: self.format.name(),
            heartbeat: self.heartbeat,
            recv_limit: self.recv_limit,
            queue: self
                .subs
                .iter()
                .map(|(name, s)| {
                    (
                        name.clone(),
                        SubscriptionStatus {
                            topics: s.topic_patterns.clone(),
                            seq: s.seq,
                            endseq: s.endseq,
                            starttime: s.starttime.as_ref().map(time::format),
                            endtime: s.endtime.as_ref().map(time::format),
                            qlen: s.qlen,
                            oowait: s.oowait,
                            keep: s.keep,
                            seedlink: s.seedlink,
                            eof: s.eof,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;

    fn queue_with(n: usize, sender: &str) -> Queue {
        let mut q = Queue::new(100);
        for i in 0..n {
            q.push(
                Message {
                    kind: "N".into(),
                    queue: "Q".into(),
                    sender: sender.into(),
                    topic: if i % 2 == 0 {
                        "EVEN".into()
                    } else {
                        "ODD".into()
                    },
                    ..Message::default()
                },
                None,
            );
        }
        q
    }

    fn drain(sub: &mut Subscription, q: &Queue, cid: &str) -> (Vec<i64>, bool) {
        let mut seqs = Vec::new();
        loop {
            match sub.next(q, cid, Instant::now()) {
                SubNext::Message(m) => seqs.push(m.seq),
                SubNext::Pending(_) => return (seqs, false),
                SubNext::Done => return (seqs, true),
            }
        }
    }

    #[test]
    fn keep_false_ends_at_queue_end() {
        let q = queue_with(3, "s");
        let mut sub = Subscription::new(0);
        sub.keep = false;
        assert_eq!(drain(&mut sub, &q, "me"), (vec![0, 1, 2], true));
        assert_eq!(sub.seq, 3);
    }

    #[test]
    fn endseq_waits_until_a_later_message() {
        let mut q = queue_with(3, "s");
        let mut sub = Subscription::new(1);
        sub.endseq = Some(2);
        assert_eq!(drain(&mut sub, &q, "me"), (vec![1, 2], false));
        q.push(Message::default(), None);
        assert_eq!(drain(&mut sub, &q, "me"), (vec![], true));
        assert_eq!(sub.seq, 3);
    }

    #[test]
    fn own_cid_and_topics_are_skipped() {
        let q = queue_with(4, "s");
        let mut sub = Subscription::new(0);
        sub.keep = false;
        assert_eq!(drain(&mut sub, &q, "s"), (vec![], true));
        assert_eq!(sub.seq, 4);
        let mut sub = Subscription::new(0);
        sub.keep = false;
        sub.topics = Some(TopicSet::new(&["ODD"]).expect("valid"));
        assert_eq!(drain(&mut sub, &q, "me"), (vec![1, 3], true));
    }

    #[test]
    fn qlen_skips_ahead() {
        let q = queue_with(4, "s");
        let mut sub = Subscription::new(0);
        sub.keep = false;
        sub.qlen = Some(1);
        assert_eq!(drain(&mut sub, &q, "me"), (vec![2, 3], true));
    }

    #[test]
    fn time_window() {
        let mut q = Queue::new(10);
        for i in 0..5 {
            let start = parse(&format!("2024-01-01T00:0{i}:00Z")).expect("time");
            let end = parse(&format!("2024-01-01T00:0{i}:59.5Z")).expect("time");
            q.push(
                Message {
                    kind: "REC".into(),
                    queue: "WAVE".into(),
                    starttime: Some(start),
                    endtime: Some(end),
                    ..Message::default()
                },
                None,
            );
        }
        let mut sub = Subscription::new(0);
        sub.starttime = Some(parse("2024-01-01T00:01:30Z").expect("time"));
        sub.endtime = Some(parse("2024-01-01T00:03:00Z").expect("time"));
        assert_eq!(drain(&mut sub, &q, "me"), (vec![1, 2, 3], true));
        assert_eq!(sub.seq, 4);
    }

    #[test]
    fn oowait_holds_a_gap_then_skips() {
        let mut q = Queue::new(10);
        q.push(Message::default(), Some(0));
        q.push(Message::default(), Some(2));
        let mut sub = Subscription::new(1);
        sub.oowait = Some(5);
        let t0 = Instant::now();
        assert!(matches!(sub.next(&q, "me", t0), SubNext::Pending(Some(_))));
        let later = t0 + Duration::from_secs(6);
        assert!(matches!(sub.next(&q, "me", later), SubNext::Message(m) if m.seq == 2));
    }

    #[test]
    fn continuity_point() {
        let mut queues = IndexMap::new();
        queues.insert("Q".to_owned(), queue_with(2, "s"));
        let mut s = Session {
            sid: "sid".into(),
            cid: "me".into(),
            ip: IpAddr::from([127, 0, 0, 1]),
            address: "127.0.0.1:1".into(),
            ctime: chrono::Utc::now(),
            serial: 0,
            format: Format::Json,
            heartbeat: 0,
            recv_limit: 0,
            subs: IndexMap::new(),
            last: (String::new(), 0),
            active: 0,
            idle_since: Instant::now(),
            sent: 0,
            received: 0,
        };
        assert!(matches!(s.next(&queues, Instant::now()), Next::Eof));
        s.subs.insert("Q".into(), Subscription::new(0));
        assert!(s.continuity_ok("", 0));
        assert!(matches!(s.next(&queues, Instant::now()), Next::Message(_)));
        assert!(matches!(s.next(&queues, Instant::now()), Next::Message(_)));
        assert!(s.continuity_ok("Q", 1));
        assert!(!s.continuity_ok("Q", 0));
        assert!(!s.continuity_ok("", 0));
        assert!(matches!(s.next(&queues, Instant::now()), Next::Wait(None)));
    }
}
