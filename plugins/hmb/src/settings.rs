//! The settings of [`HmbConsumer`](crate::HmbConsumer): their serde shape, their checks, and
//! the resolved form the consumer works with.

use buslink_plugin_api::{Context, PluginError, PluginResult};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The wire format of the sessions the consumer opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// BSON documents back to back (the default: compact, typed).
    #[default]
    Bson,
    /// The `{"0": ..., "1": ...}` JSON wrapper.
    Json,
}

impl Format {
    /// The `Content-Type` of requests and responses in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Bson => "application/bson",
            Format::Json => "application/json",
        }
    }

    /// The capability `/features` must list for this format.
    pub fn capability(self) -> &'static str {
        match self {
            Format::Bson => "BSON",
            Format::Json => "JSON",
        }
    }
}

use buslink_plugin_api::secret::PasswordSettings;
pub use buslink_plugin_api::secret::Secret;

/// The settings of [`HmbConsumer`](crate::HmbConsumer) (`[consumer.settings]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmbSettings {
    /// Server prefix plus bus, e.g. `http://127.0.0.1:8000/mybus`.
    pub url: String,
    /// `bson` (default) or `json`.
    #[serde(default)]
    pub format: Format,
    /// Heartbeat interval in seconds asked of the server (default 10, at least 1).
    #[serde(default = "default_heartbeat")]
    pub heartbeat: u64,
    /// How long one read may wait for a byte, in ms (default: 3 heartbeats); must exceed the
    /// heartbeat, so that a healthy idle long poll is never cut short.
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    /// The longest a message may take to arrive while its bytes keep coming, in ms (default:
    /// 2 x `read_timeout_ms`); must exceed the heartbeat.
    #[serde(default)]
    pub message_timeout_ms: Option<u64>,
    /// Soft cap of one /recv response, in KB (default 1024).
    #[serde(default = "default_recv_limit")]
    pub recv_limit: u64,
    /// The largest message read (KB); more without a message's end is a broken answer.
    #[serde(default = "default_max_message_kb")]
    pub max_message_kb: u64,
    /// The client id; the server never delivers messages sent with the same cid.
    #[serde(default)]
    pub cid: Option<String>,
    /// TCP connect timeout in ms (default 5000).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Consecutive failed attempts before an error goes to the host; 0 = retry forever.
    #[serde(default)]
    pub retries: u32,
    /// First pause between attempts, in ms (default 1000); doubles up to `retry_wait_max_ms`.
    #[serde(default = "default_retry_wait_ms")]
    pub retry_wait_ms: u64,
    /// Longest pause between attempts, in ms (default 30000).
    #[serde(default = "default_retry_wait_max_ms")]
    pub retry_wait_max_ms: u64,
    /// Create a queue the server does not know (by sending it a `TOUCH` message).
    #[serde(default)]
    pub autocreate_queues: bool,
    /// Use `/stream` (one never-ending response) instead of `/recv`.
    #[serde(default)]
    pub stream: bool,
    /// HTTP basic auth user (for a server behind a reverse proxy).
    #[serde(default)]
    pub user: Option<String>,
    /// The password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password (first line; relative to the config file).
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file with extra CA certificates for https (relative to the config file).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The queues to consume, by name; each a table (`queues.X = []` is refused).
    #[serde(deserialize_with = "buslink_plugin_api::tables")]
    pub queues: BTreeMap<String, QueueSettings>,
}

/// The subscription parameters of one queue (the protocol's names).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Where to start without a cached offset (and with the host's `start = "beginning"`):
    /// an HMB seq (`>= 0` that message, `-1` only new messages, `-2` the last one...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Last seq of the window (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endseq: Option<i64>,
    /// Start of the time window (`YYYY-MM-DDTHH:MM:SS[.f]Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttime: Option<String>,
    /// End of the time window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endtime: Option<String>,
    /// Topic patterns (`?`, `*`, a leading `!` negates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
    /// A filter document (MongoDB-like subset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
    /// Skip ahead when more than qlen+1 messages behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qlen: Option<i64>,
    /// Seconds to wait for a missing (out of order) seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oowait: Option<i64>,
    /// Keep waiting at the end of the queue (default true); false ends the window there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<bool>,
}

impl QueueSettings {
    /// Whether the server may skip messages of this queue on purpose (topics, filter, start
    /// time): then consecutive seqs do not prove that nothing was lost.
    pub fn is_filtered(&self) -> bool {
        let topics = self
            .topics
            .as_ref()
            .is_some_and(|topics| !topics.is_empty() && !topics.iter().all(|t| t == "*"));
        topics
            || self
                .filter
                .as_ref()
                .is_some_and(|f| f.as_object().is_some_and(|o| !o.is_empty()))
            || self.starttime.is_some()
    }

    /// Whether this queue uses a window (`endseq`, `starttime`, `endtime`, `keep = false`).
    pub fn has_window(&self) -> bool {
        self.endseq.is_some()
            || self.starttime.is_some()
            || self.endtime.is_some()
            || self.keep == Some(false)
    }
}

fn default_heartbeat() -> u64 {
    10
}
fn default_max_message_kb() -> u64 {
    64 * 1024
}

fn default_recv_limit() -> u64 {
    1024
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_retry_wait_ms() -> u64 {
    1000
}
fn default_retry_wait_max_ms() -> u64 {
    30000
}

/// The documentation of every setting, shown by `buslink plugins describe`.
pub const SETTINGS_DOC: &str = "\
- `url` (string, required): server prefix plus bus, `http://host:8000/mybus` (http or https; \
no credentials in the URL: use `user` and a password setting).
- `format` (`bson` | `json`, default `bson`): the session format.
- `heartbeat` (seconds, default 10, at least 1): asked of the server; an idle long poll \
answers a HEARTBEAT after this long, which proves the link is alive.
- `read_timeout_ms` (default 3 x heartbeat): how long one read may wait for a byte; must \
exceed the heartbeat. A dead link is noticed after this long.
- `message_timeout_ms` (default 2 x read_timeout_ms): how long the bytes of one message (or \
what stands between two messages) may keep coming before the message is whole; must exceed \
the heartbeat. A server that trickles (a byte now and then, never long enough apart for \
`read_timeout_ms`) is broken off after this long with a warning and the session re-opened. \
A message that legitimately takes longer to arrive (tens of MB on a slow link) needs more.
- `recv_limit` (KB, default 1024): soft cap of one /recv response.
- `max_message_kb` (KB, default 65536): the largest message buslink reads; an answer that \
goes on longer without a message's end (an endless key, endless whitespace) is broken off \
with a warning and the session re-opened, so memory stays bounded whatever the server sends.
- `cid` (string, optional): the client id. The server never delivers messages sent with the \
same cid (own-cid suppression). Absent: the server picks one, reused on every re-open.
- `connect_timeout_ms` (default 5000).
- `retries` (default 0): consecutive failed attempts (network error, 400 invalid session, \
503, 5xx, torn or undecodable answer) before the error goes to the host; 0 = retry forever.
- `retry_wait_ms` (default 1000), `retry_wait_max_ms` (default 30000): the pause between \
attempts doubles from the first to the second (the first retry after a success is immediate).
- `autocreate_queues` (bool, default false): a queue the server does not know is created by \
sending it one `TOUCH` message (as the Python client does); otherwise `queue not found` stops \
the first open.
- `stream` (bool, default false): use /stream (one never-ending response) instead of /recv.
- `user` (string) with exactly one of `password`, `password_file` (first line of the file, \
relative to the config file) or `password_env` (an environment variable): HTTP basic auth, \
for a server behind a reverse proxy. The password is never logged.
- `ca_file` (PEM, relative to the config file): extra CA certificates for https.
- `queues.NAME` (table, at least one queue): `seq` (start without a cached offset: >= 0 that \
seq, -1 only new messages, -2 the last one...; absent: the oldest message held), `endseq`, \
`starttime`, `endtime` (`YYYY-MM-DDTHH:MM:SS[.f]Z`), `topics` (patterns with `?`, `*`, a \
leading `!` negates), `filter` (a filter document), `qlen`, `oowait`, `keep` (false: the \
window ends at the end of the queue).";

impl HmbSettings {
    fn password_settings(&self) -> PasswordSettings {
        PasswordSettings {
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }
}

/// The settings, checked and resolved (paths read, password found).
#[derive(Clone, Debug)]
pub struct Config {
    /// The bus URL, without a trailing slash.
    pub base: Url,
    /// The session format.
    pub format: Format,
    /// Heartbeat in seconds.
    pub heartbeat: u64,
    /// Per-read timeout.
    pub read_timeout: Duration,
    /// How long one message may take to arrive while bytes keep coming.
    pub message_timeout: Duration,
    /// recv_limit in KB.
    pub recv_limit: u64,
    /// The largest message read, in bytes.
    pub max_message: usize,
    /// The configured cid.
    pub cid: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// 0 = forever.
    pub retries: u32,
    /// First pause.
    pub retry_wait: Duration,
    /// Longest pause.
    pub retry_wait_max: Duration,
    /// Create unknown queues.
    pub autocreate_queues: bool,
    /// /stream rather than /recv.
    pub stream: bool,
    /// Basic auth.
    pub auth: Option<(String, Secret)>,
    /// Extra CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// The queues, in name order.
    pub queues: Vec<QueueConfig>,
}

/// One queue of [`Config`].
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// The queue name.
    pub name: String,
    /// Its parameters.
    pub params: QueueSettings,
}

impl Config {
    /// The index of a queue by name.
    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.queues.iter().position(|q| q.name == name)
    }
}

fn bad(key: &str, message: impl Into<String>) -> PluginError {
    PluginError::config(message).with_key(key)
}

/// Parses and checks the bus URL.
pub fn parse_url(url: &str) -> PluginResult<Url> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = Url::parse(trimmed).map_err(|e| {
        bad(
            "url",
            format!("`url` is not a URL ({e}); expected e.g. http://127.0.0.1:8000/mybus"),
        )
    })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(bad("url", "`url` must be an http:// or https:// URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "url",
            "`url` must not hold credentials: use `user` with `password`, `password_file` or \
             `password_env`",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("url", "`url` must not have a query or a fragment"));
    }
    let has_bus = parsed
        .path_segments()
        .is_some_and(|mut segments| segments.any(|s| !s.is_empty()));
    if !has_bus {
        return Err(bad(
            "url",
            "`url` must end with the bus name, e.g. http://127.0.0.1:8000/mybus",
        ));
    }
    Ok(parsed)
}

/// Checks an HMB time string: `YYYY-MM-DDTHH:MM:SS` with an optional fraction, then `Z`.
pub fn is_hmb_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    let Some(rest) = text.strip_suffix('Z') else {
        return false;
    };
    if bytes.len() < 20 {
        return false;
    }
    let (main, fraction) = match rest.split_once('.') {
        Some((main, fraction)) => (main, Some(fraction)),
        None => (rest, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    chrono::NaiveDateTime::parse_from_str(main, "%Y-%m-%dT%H:%M:%S").is_ok() && main.len() == 19
}

fn is_topic_pattern(pattern: &str) -> bool {
    let body = pattern.strip_prefix('!').unwrap_or(pattern);
    body.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'?' || b == b'*')
}

/// The checks of `ConsumerClass::validate`: everything that can be checked without the config
/// directory or the network.
pub fn validate(s: &HmbSettings) -> PluginResult<()> {
    parse_url(&s.url)?;
    if s.heartbeat == 0 {
        return Err(bad(
            "heartbeat",
            "`heartbeat` must be at least 1 second: without heartbeats an idle long poll cannot \
             be told from a dead link",
        ));
    }
    if let Some(read) = s.read_timeout_ms {
        if read <= s.heartbeat.saturating_mul(1000) {
            return Err(bad(
                "read_timeout_ms",
                format!(
                    "`read_timeout_ms` ({read}) must exceed the heartbeat ({} s = {} ms), or \
                     healthy idle long polls would be cut short",
                    s.heartbeat,
                    s.heartbeat.saturating_mul(1000)
                ),
            ));
        }
    }
    if let Some(timeout) = s.message_timeout_ms {
        if timeout <= s.heartbeat.saturating_mul(1000) {
            return Err(bad(
                "message_timeout_ms",
                format!(
                    "`message_timeout_ms` ({timeout}) must exceed the heartbeat ({} s = {} ms), \
                     or healthy idle streams would be cut short",
                    s.heartbeat,
                    s.heartbeat.saturating_mul(1000)
                ),
            ));
        }
    }
    if s.max_message_kb == 0 {
        return Err(bad(
            "max_message_kb",
            "`max_message_kb` must be at least 1 (KB)",
        ));
    }
    if s.recv_limit == 0 {
        return Err(bad("recv_limit", "`recv_limit` must be at least 1 (KB)"));
    }
    if s.connect_timeout_ms == 0 {
        return Err(bad(
            "connect_timeout_ms",
            "`connect_timeout_ms` must be at least 1",
        ));
    }
    if s.retry_wait_ms == 0 {
        return Err(bad("retry_wait_ms", "`retry_wait_ms` must be at least 1"));
    }
    if s.retry_wait_max_ms < s.retry_wait_ms {
        return Err(bad(
            "retry_wait_max_ms",
            "`retry_wait_max_ms` must be at least `retry_wait_ms`",
        ));
    }
    if s.cid.as_deref().is_some_and(|cid| cid.trim().is_empty()) {
        return Err(bad("cid", "`cid` must not be empty (leave it out instead)"));
    }
    let sources = s.password_settings().count();
    match (&s.user, sources) {
        (Some(user), _) if user.is_empty() => {
            return Err(bad("user", "`user` must not be empty"));
        }
        (Some(_), 0) => {
            return Err(bad(
                "user",
                "`user` needs exactly one of `password`, `password_file` or `password_env`",
            ))
        }
        (Some(_), n) if n > 1 => {
            return Err(bad(
                "password",
                "give exactly one of `password`, `password_file` or `password_env`",
            ))
        }
        (None, n) if n > 0 => {
            return Err(bad(
                "user",
                "a password setting needs `user` (HTTP basic auth)",
            ))
        }
        _ => {}
    }
    if s.queues.is_empty() {
        return Err(bad(
            "queues",
            "name at least one queue: [consumer.settings.queues.NAME]",
        ));
    }
    for (name, queue) in &s.queues {
        let key = |field: &str| format!("queues.{name}.{field}");
        if name.is_empty() {
            return Err(bad("queues", "a queue name must not be empty"));
        }
        for (field, time) in [("starttime", &queue.starttime), ("endtime", &queue.endtime)] {
            if let Some(time) = time {
                if !is_hmb_time(time) {
                    return Err(bad(
                        &key(field),
                        format!(
                            "queue {name}: `{field}` {time:?} is not an HMB time \
                             (YYYY-MM-DDTHH:MM:SS[.fraction]Z, UTC)"
                        ),
                    ));
                }
            }
        }
        if let Some(topics) = &queue.topics {
            if let Some(pattern) = topics.iter().find(|t| !is_topic_pattern(t)) {
                return Err(bad(
                    &key("topics"),
                    format!(
                        "queue {name}: topic pattern {pattern:?} may only hold letters, digits, \
                         `_`, `?`, `*` and a leading `!`"
                    ),
                ));
            }
        }
        if let Some(filter) = &queue.filter {
            if !filter.is_object() {
                return Err(bad(
                    &key("filter"),
                    format!("queue {name}: `filter` must be a table (a filter document)"),
                ));
            }
        }
        for (field, value) in [("qlen", queue.qlen), ("oowait", queue.oowait)] {
            if value.is_some_and(|v| v < 0) {
                return Err(bad(
                    &key(field),
                    format!("queue {name}: `{field}` must not be negative"),
                ));
            }
        }
        if queue.endseq.is_some_and(|v| v < 0) {
            return Err(bad(
                &key("endseq"),
                format!("queue {name}: `endseq` must not be negative"),
            ));
        }
    }
    Ok(())
}

/// Resolves checked settings: reads the password and the CA file.
pub fn resolve(s: HmbSettings, context: &Context) -> PluginResult<Config> {
    validate(&s)?;
    let base = parse_url(&s.url)?;
    let password = s.password_settings().read(context, "")?;
    let auth = s.user.clone().zip(password);
    let ca_pem = match &s.ca_file {
        Some(file) => {
            let path = context.resolve_path(file);
            let pem = std::fs::read(&path).map_err(|e| {
                bad(
                    "ca_file",
                    format!("cannot read ca_file {}: {e}", path.display()),
                )
            })?;
            if reqwest::Certificate::from_pem(&pem).is_err() {
                return Err(bad(
                    "ca_file",
                    format!("ca_file {} is not a PEM certificate", path.display()),
                ));
            }
            Some(pem)
        }
        None => None,
    };
    let read_timeout = Duration::from_millis(
        s.read_timeout_ms
            .unwrap_or_else(|| s.heartbeat.saturating_mul(3000)),
    );
    let message_timeout = s
        .message_timeout_ms
        .map_or(read_timeout.saturating_mul(2), Duration::from_millis);
    Ok(Config {
        base,
        format: s.format,
        heartbeat: s.heartbeat,
        read_timeout,
        message_timeout,
        recv_limit: s.recv_limit,
        max_message: usize::try_from(s.max_message_kb.saturating_mul(1024)).unwrap_or(usize::MAX),
        cid: s.cid,
        connect_timeout: Duration::from_millis(s.connect_timeout_ms),
        retries: s.retries,
        retry_wait: Duration::from_millis(s.retry_wait_ms),
        retry_wait_max: Duration::from_millis(s.retry_wait_max_ms),
        autocreate_queues: s.autocreate_queues,
        stream: s.stream,
        auth,
        ca_pem,
        queues: s
            .queues
            .into_iter()
            .map(|(name, params)| QueueConfig { name, params })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: serde_json::Value) -> PluginResult<HmbSettings> {
        buslink_plugin_api_settings(json.to_string())
    }

    fn buslink_plugin_api_settings(text: String) -> PluginResult<HmbSettings> {
        serde_json::from_str(&text).map_err(|e| PluginError::config(e.to_string()))
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"url": "http://127.0.0.1:8000/test", "queues": {"Q": {}}})
    }

    #[test]
    fn defaults_and_minimal_settings() {
        let s = settings(base()).unwrap();
        validate(&s).unwrap();
        assert_eq!(s.format, Format::Bson);
        assert_eq!(s.heartbeat, 10);
        let config = resolve(s, &Context::new("/tmp")).unwrap();
        assert_eq!(config.read_timeout, Duration::from_secs(30));
        assert_eq!(config.base.as_str(), "http://127.0.0.1:8000/test");
    }

    #[test]
    fn read_timeout_must_exceed_heartbeat() {
        let mut v = base();
        v["heartbeat"] = 2.into();
        v["read_timeout_ms"] = 2000.into();
        let e = validate(&settings(v).unwrap()).unwrap_err();
        assert_eq!(e.key(), Some("read_timeout_ms"));
        let mut v = base();
        v["heartbeat"] = 2.into();
        v["message_timeout_ms"] = 1500.into();
        let e = validate(&settings(v).unwrap()).unwrap_err();
        assert_eq!(e.key(), Some("message_timeout_ms"));
        assert!(e.message().contains("must exceed the heartbeat"), "{e}");
    }

    #[test]
    fn exactly_one_password_source() {
        let mut v = base();
        v["user"] = "u".into();
        assert_eq!(
            validate(&settings(v.clone()).unwrap()).unwrap_err().key(),
            Some("user")
        );
        v["password"] = "secret-1".into();
        validate(&settings(v.clone()).unwrap()).unwrap();
        v["password_env"] = "X".into();
        let e = validate(&settings(v).unwrap()).unwrap_err();
        assert!(!e.to_string().contains("secret-1"));
    }

    #[test]
    fn password_never_shown() {
        let mut v = base();
        v["user"] = "u".into();
        v["password"] = "hunter2-secret".into();
        let s = settings(v).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let config = resolve(s, &Context::new("/tmp")).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        let mut v = base();
        v["password"] = 123456.into();
        let e = settings(v).unwrap_err();
        assert!(!e.to_string().contains("123456"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut v = base();
        v["url"] = "http://u:p@host/bus".into();
        assert_eq!(
            validate(&settings(v).unwrap()).unwrap_err().key(),
            Some("url")
        );
        let mut v = base();
        v["url"] = "http://host:8000/".into();
        assert_eq!(
            validate(&settings(v).unwrap()).unwrap_err().key(),
            Some("url")
        );
        let mut v = base();
        v["queues"]["Q"]["topics"] = serde_json::json!(["a-b"]);
        assert_eq!(
            validate(&settings(v).unwrap()).unwrap_err().key(),
            Some("queues.Q.topics")
        );
        let mut v = base();
        v["queues"]["Q"]["endtime"] = "2024-01-01 00:00:00".into();
        assert_eq!(
            validate(&settings(v).unwrap()).unwrap_err().key(),
            Some("queues.Q.endtime")
        );
        let mut v = base();
        v["queues"]["Q"]["bogus"] = 1.into();
        assert!(settings(v).is_err());
    }

    #[test]
    fn hmb_times() {
        assert!(is_hmb_time("2024-01-01T00:00:00Z"));
        assert!(is_hmb_time("2024-01-01T00:00:00.123456789Z"));
        assert!(!is_hmb_time("2024-01-01T00:00:00+00:00"));
        assert!(!is_hmb_time("2024-01-01T00:00:00.Z"));
        assert!(!is_hmb_time("2024-13-01T00:00:00Z"));
    }

    #[test]
    fn filtered_queues() {
        let mut q = QueueSettings::default();
        assert!(!q.is_filtered());
        q.topics = Some(vec!["*".into()]);
        assert!(!q.is_filtered());
        q.topics = Some(vec!["PICK".into()]);
        assert!(q.is_filtered());
    }
}
