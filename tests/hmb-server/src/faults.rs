//! Fault injection driven by tests.
//!
//! A test adds [`FaultRule`]s; each HMB request (not `/_admin`) takes the
//! first rule that matches its endpoint and bus, and the rule's action
//! replaces or disturbs the normal answer. A rule fires `times` times (0 =
//! until removed). Rules are added through [`Faults`] (library) or
//! `POST /_admin/faults` (JSON, same shape as the serde form of [`FaultRule`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The HMB method a request calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/features`.
    Features,
    /// `/open`.
    Open,
    /// `/send`.
    Send,
    /// `/recv`.
    Recv,
    /// `/stream`.
    Stream,
    /// `/info`.
    Info,
    /// `/status`.
    Status,
}

impl Endpoint {
    /// The endpoint for a method name in the URL.
    pub fn from_method(method: &str) -> Option<Endpoint> {
        Some(match method {
            "features" => Endpoint::Features,
            "open" => Endpoint::Open,
            "send" => Endpoint::Send,
            "recv" => Endpoint::Recv,
            "stream" => Endpoint::Stream,
            "info" => Endpoint::Info,
            "status" => Endpoint::Status,
            _ => return None,
        })
    }
}

/// What a fault does to the request it hits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Answer with this status and a text/plain body (`message` + newline)
    /// instead of handling the request. Default messages: 400 `invalid
    /// session`, 503 `server is shutting down`, others the reason phrase.
    Status {
        /// HTTP status code (e.g. 400, 500, 503).
        code: u16,
        /// Body text.
        #[serde(default)]
        message: Option<String>,
    },
    /// Close the connection without any response.
    Drop,
    /// Start the response, write `after_messages` complete items (for /recv
    /// and /stream; half the body for other endpoints), then cut the
    /// connection in the middle of the next item. Like a real torn response,
    /// the message being written counts as handed out (continuity point).
    DropMidResponse {
        /// Complete items written before the cut.
        after_messages: usize,
    },
    /// Hold the request for `ms` milliseconds (forever when absent, until
    /// released, cleared or the client gives up), then handle it normally.
    Stall {
        /// Stall duration in milliseconds.
        #[serde(default)]
        ms: Option<u64>,
    },
    /// /recv and /stream: write `after_messages` items, flush, then stop
    /// writing for `ms` milliseconds (forever when absent) before going on.
    StallMidResponse {
        /// Complete items written before the stall.
        after_messages: usize,
        /// Stall duration in milliseconds.
        #[serde(default)]
        ms: Option<u64>,
    },
    /// Answer 200 with `body` written one byte every `every_ms` milliseconds
    /// (a server that trickles: never slow enough for a read timeout), then
    /// end; content type as for `Malformed`. Nothing is consumed.
    Trickle {
        /// Raw response body.
        body: String,
        /// Pause before each byte, in milliseconds.
        every_ms: u64,
    },
    /// Answer 200 with this body instead of handling the request (nothing
    /// is consumed). Content type: `content_type` or the request's natural
    /// one (JSON; the session's format for /recv and /stream).
    Malformed {
        /// Raw response body.
        body: String,
        /// Content-Type header to send.
        #[serde(default)]
        content_type: Option<String>,
    },
}

fn one() -> u32 {
    1
}

/// A fault and the requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Only requests to this endpoint (any when absent).
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Only requests to this bus (any when absent).
    #[serde(default)]
    pub bus: Option<String>,
    /// How many requests it hits; 0 = every matching request until removed.
    #[serde(default = "one")]
    pub times: u32,
    /// What it does.
    pub action: FaultAction,
}

impl FaultRule {
    /// A rule hitting the next request to `endpoint` once.
    pub fn once(endpoint: Endpoint, action: FaultAction) -> FaultRule {
        FaultRule {
            endpoint: Some(endpoint),
            bus: None,
            times: 1,
            action,
        }
    }
}

/// Identifies an injected rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

/// A rule with its bookkeeping, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FaultEntry {
    /// Its id.
    pub id: FaultId,
    /// The rule.
    pub rule: FaultRule,
    /// How many requests it has hit.
    pub hits: u32,
}

/// The fault rules of a server; shared by the library handle, the admin
/// endpoint and the request handlers.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultEntry>>,
    next_id: AtomicU64,
    release: Notify,
}

impl Faults {
    fn rules(&self) -> std::sync::MutexGuard<'_, Vec<FaultEntry>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; it applies from the next request on.
    pub fn inject(&self, rule: FaultRule) -> FaultId {
        let id = FaultId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        self.rules().push(FaultEntry { id, rule, hits: 0 });
        id
    }

    /// Removes a rule; false if there was none with this id.
    pub fn remove(&self, id: FaultId) -> bool {
        let mut rules = self.rules();
        let before = rules.len();
        rules.retain(|e| e.id != id);
        rules.len() != before
    }

    /// Removes every rule and releases every stalled request.
    pub fn clear(&self) {
        self.rules().clear();
        self.release_stalls();
    }

    /// The rules (used up ones included, until cleared).
    pub fn list(&self) -> Vec<FaultEntry> {
        self.rules().clone()
    }

    /// How many requests the rule has hit.
    pub fn hits(&self, id: FaultId) -> Option<u32> {
        self.rules().iter().find(|e| e.id == id).map(|e| e.hits)
    }

    /// Ends every stall in progress (the requests then go on normally).
    pub fn release_stalls(&self) {
        self.release.notify_waiters();
    }

    /// Takes the action for a request, counting the hit.
    pub(crate) fn take(&self, endpoint: Endpoint, bus: &str) -> Option<FaultAction> {
        let mut rules = self.rules();
        let entry = rules.iter_mut().find(|e| {
            e.rule.endpoint.is_none_or(|ep| ep == endpoint)
                && e.rule.bus.as_deref().is_none_or(|b| b == bus)
                && (e.rule.times == 0 || e.hits < e.rule.times)
        })?;
        entry.hits += 1;
        Some(entry.rule.action.clone())
    }

    /// Waits for a stall to end: after `ms`, or when released.
    pub(crate) async fn stall(&self, ms: Option<u64>) {
        let released = self.release.notified();
        match ms {
            Some(ms) => {
                tokio::select! {
                    _ = released => {}
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                }
            }
            None => released.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_count_down() {
        let f = Faults::default();
        let id = f.inject(FaultRule {
            endpoint: Some(Endpoint::Recv),
            bus: Some("b".into()),
            times: 2,
            action: FaultAction::Drop,
        });
        assert_eq!(f.take(Endpoint::Open, "b"), None);
        assert_eq!(f.take(Endpoint::Recv, "other"), None);
        assert_eq!(f.take(Endpoint::Recv, "b"), Some(FaultAction::Drop));
        assert_eq!(f.take(Endpoint::Recv, "b"), Some(FaultAction::Drop));
        assert_eq!(f.take(Endpoint::Recv, "b"), None);
        assert_eq!(f.hits(id), Some(2));
        assert!(f.remove(id));
        assert!(!f.remove(id));
    }

    #[test]
    fn json_form() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"endpoint":"recv","action":{"kind":"drop_mid_response","after_messages":2}}"#,
        )
        .expect("valid rule");
        assert_eq!(rule.times, 1);
        assert_eq!(
            rule.action,
            FaultAction::DropMidResponse { after_messages: 2 }
        );
        let bad = serde_json::from_str::<FaultRule>(r#"{"action":{"kind":"nope"}}"#);
        assert!(bad.is_err());
    }
}
