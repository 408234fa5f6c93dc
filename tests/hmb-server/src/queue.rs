//! A queue: an append-only sequence of messages, of which only the newest
//! `capacity` are held (the reference server's RAM buffer, `-b`).

use std::collections::VecDeque;
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

use crate::message::Message;
use crate::time::{self, Time};

/// A queue of one bus.
#[derive(Debug)]
pub struct Queue {
    messages: VecDeque<Arc<Message>>,
    next_seq: i64,
    capacity: usize,
}

/// What `/info` shows for one queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueInfo {
    /// Oldest seq held.
    pub startseq: Option<i64>,
    /// Starttime of that message.
    pub starttime: Option<String>,
    /// Last seq + 1.
    pub endseq: Option<i64>,
    /// Endtime of the last message.
    pub endtime: Option<String>,
    /// Topic -> times (`topic`, singular, as the reference server names it).
    pub topic: Option<IndexMap<String, TopicInfo>>,
}

/// Per-topic times in `/info`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicInfo {
    /// Always null in the reference server.
    pub starttime: Option<String>,
    /// Endtime of the newest message of the topic that had one.
    pub endtime: Option<String>,
}

impl Queue {
    /// An empty queue holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            messages: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// The seq the next message will get (last + 1; 0 when empty).
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Oldest seq still held.
    pub fn oldest_seq(&self) -> Option<i64> {
        self.messages.front().map(|m| m.seq)
    }

    /// Stores a message. Without `seq` it gets the next seq; with one (OOD),
    /// the next seq becomes max(next, seq + 1) and the message is inserted in
    /// order, or dropped when older than everything held or already present.
    /// Returns the stored seq, or `None` if dropped.
    pub fn push(&mut self, mut msg: Message, seq: Option<i64>) -> Option<i64> {
        let seq = seq.unwrap_or(self.next_seq);
        self.next_seq = self.next_seq.max(seq + 1);
        msg.seq = seq;
        let pos = self.messages.partition_point(|m| m.seq < seq);
        let too_old = pos == 0 && self.messages.len() >= self.capacity;
        if too_old || self.messages.get(pos).is_some_and(|m| m.seq == seq) {
            return None;
        }
        self.messages.insert(pos, Arc::new(msg));
        while self.messages.len() > self.capacity {
            self.messages.pop_front();
        }
        Some(seq)
    }

    /// The first held message with seq >= `seq`.
    pub fn first_from(&self, seq: i64) -> Option<&Arc<Message>> {
        let pos = self.messages.partition_point(|m| m.seq < seq);
        self.messages.get(pos)
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The `/info` entry of this queue.
    pub fn info(&self) -> QueueInfo {
        let (Some(first), Some(last)) = (self.messages.front(), self.messages.back()) else {
            return QueueInfo {
                startseq: None,
                starttime: None,
                endseq: None,
                endtime: None,
                topic: None,
            };
        };
        let fmt = |t: &Option<Time>| t.as_ref().map(time::format);
        let mut topics: IndexMap<String, TopicInfo> = IndexMap::new();
        for m in &self.messages {
            let entry = topics.entry(m.topic.clone()).or_insert(TopicInfo {
                starttime: None,
                endtime: None,
            });
            if m.endtime.is_some() {
                entry.endtime = fmt(&m.endtime);
            }
        }
        QueueInfo {
            startseq: Some(first.seq),
            starttime: fmt(&first.starttime),
            endseq: Some(self.next_seq),
            endtime: fmt(&last.endtime),
            topic: Some(topics),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str) -> Message {
        Message {
            kind: "N".into(),
            queue: "Q".into(),
            topic: topic.into(),
            ..Message::default()
        }
    }

    #[test]
    fn ring_buffer_keeps_newest() {
        let mut q = Queue::new(3);
        for _ in 0..5 {
            q.push(msg(""), None);
        }
        assert_eq!(q.oldest_seq(), Some(2));
        assert_eq!(q.next_seq(), 5);
        assert_eq!(q.first_from(0).map(|m| m.seq), Some(2));
        assert_eq!(q.first_from(4).map(|m| m.seq), Some(4));
        assert!(q.first_from(5).is_none());
        let info = q.info();
        assert_eq!((info.startseq, info.endseq), (Some(2), Some(5)));
    }

    #[test]
    fn out_of_order_seq() {
        let mut q = Queue::new(10);
        assert_eq!(q.push(msg(""), Some(5)), Some(5));
        assert_eq!(q.next_seq(), 6);
        assert_eq!(q.push(msg(""), Some(3)), Some(3));
        assert_eq!(q.push(msg(""), Some(3)), None, "duplicate dropped");
        assert_eq!(q.push(msg(""), None), Some(6));
        assert_eq!(q.first_from(0).map(|m| m.seq), Some(3));
        assert_eq!(q.first_from(4).map(|m| m.seq), Some(5));
    }

    #[test]
    fn empty_queue_info_is_all_null() {
        let info = Queue::new(1).info();
        assert_eq!(
            serde_json::to_string(&info).expect("serializable"),
            r#"{"startseq":null,"starttime":null,"endseq":null,"endtime":null,"topic":null}"#
        );
    }
}
