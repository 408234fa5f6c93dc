//! `[consumer.settings]` of the Kafka consumer: Hermes's keys (`servers`, `api_version`, `ssl`,
//! `topic`, `group_id`) plus a partition, SASL, a client id and librdkafka properties.

use buslink_plugin_api::secret::{PasswordSettings, Secret};
use buslink_plugin_api::{Context, PluginError, PluginResult};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of [`KafkaConsumer`](crate::KafkaConsumer).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap brokers, `host:port`: one string or a list (as in Hermes).
    pub servers: Servers,
    /// `assign` (Hermes's: one partition, offsets in buslink's cache) or `group` (a consumer
    /// group: Kafka assigns partitions, offsets committed to the group).
    #[serde(default)]
    pub mode: Mode,
    /// The topic (assign mode: the one Hermes's producer writes to).
    #[serde(default)]
    pub topic: Option<String>,
    /// Group mode: the topics to subscribe to (or `topic` for one).
    #[serde(default)]
    pub topics: Vec<String>,
    /// The partition to read (default: the topic's only one; required when it has several).
    #[serde(default)]
    pub partition: Option<i32>,
    /// The consumer group id (Hermes requires one; in assign mode nothing is committed to it).
    #[serde(default)]
    pub group_id: Option<String>,
    /// The client id brokers log (default `buslink`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Hermes's `api_version` (`[2, 6, 0]`): librdkafka asks the broker for its versions
    /// itself, so this only becomes `broker.version.fallback` for brokers older than 0.10.
    #[serde(default)]
    pub api_version: Option<Vec<u32>>,
    /// TLS, as Hermes's `ssl` (`certfile`, `keyfile`, `cafile`).
    #[serde(default, deserialize_with = "buslink_plugin_api::optional_table")]
    pub ssl: Option<SslSettings>,
    /// SASL authentication.
    #[serde(default, deserialize_with = "buslink_plugin_api::optional_table")]
    pub sasl: Option<SaslSettings>,
    /// How long a metadata or watermark request may take, in ms (default 10000).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// More librdkafka properties, passed through (`"fetch.max.bytes" = 1048576`).
    #[serde(default, deserialize_with = "buslink_plugin_api::table")]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// How partitions are found and where the position lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One partition assigned; the offset kept by buslink (hermes-client's way).
    #[default]
    Assign,
    /// A consumer group: partitions assigned by Kafka and shared with the group's other
    /// members; offsets committed to the group after buslink handled the events.
    Group,
}

/// One server or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Servers {
    /// `"host:9092"` (several may be comma-separated, as librdkafka takes them).
    One(String),
    /// `["host1:9092", "host2:9092"]`.
    Many(Vec<String>),
}

/// `ssl`: the files of Hermes's `ssl` table (paths relative to the config file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslSettings {
    /// The client certificate (PEM), for mutual TLS; with `keyfile`.
    #[serde(default)]
    pub certfile: Option<String>,
    /// The client certificate's private key (PEM); with `certfile`.
    #[serde(default)]
    pub keyfile: Option<String>,
    /// The CA certificates that sign the brokers' certificates (PEM).
    #[serde(default)]
    pub cafile: Option<String>,
}

/// `sasl`: user and password for SASL PLAIN or SCRAM.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSettings {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The user name.
    pub username: String,
    /// The password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file whose first line is the password (relative to the config file).
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

/// librdkafka properties buslink sets itself: a config that sets them could break the
/// delivery guarantee (auto-commit, auto-reset) or fight the settings above.
const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "servers"),
    ("metadata.broker.list", "servers"),
    ("group.id", "group_id"),
    ("client.id", "client_id"),
    (
        "enable.auto.commit",
        "buslink commits nothing to Kafka in assign mode",
    ),
    ("enable.auto.offset.store", "buslink keeps the offset"),
    (
        "auto.offset.reset",
        "an offset gone from the topic is a gap buslink reports",
    ),
    ("enable.partition.eof", "buslink asks for the end itself"),
    ("security.protocol", "ssl and sasl"),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    (
        "sasl.password",
        "sasl.password, password_file or password_env",
    ),
    ("ssl.ca.location", "ssl.cafile"),
    ("ssl.certificate.location", "ssl.certfile"),
    ("ssl.key.location", "ssl.keyfile"),
    (
        "statistics.interval.ms",
        "buslink reads the brokers' states from the statistics, once a second",
    ),
];

/// The documentation of every setting, shown by `buslink plugins describe`.
pub const SETTINGS_DOC: &str = "\
- `servers` (string or list of strings, required): bootstrap brokers, `host:port`.
- `mode` (`assign` | `group`, default `assign`): `assign` reads one partition of `topic` as \
hermes-client does, its offset kept in buslink's offset cache (Hermes mode works on it). \
`group` joins the consumer group `group_id` on `topics`: Kafka shares the partitions among \
the group's members (several buslink processes, on several machines) and moves them when one \
dies; the position lives in the group, committed only after buslink handled and committed the \
events (at-least-once; duplicates only from a batch in flight), and a new group starts at the \
oldest records. Offsets look like `TOPIC:PARTITION:OFFSET`. Not for Hermes mode.
- `topic` (string): the topic hermes-server's kafka producer writes to (required in \
`assign` mode).
- `topics` (list of strings, `group` mode): the topics to subscribe to (or `topic`).
- `partition` (integer, optional): the partition to read. By default the topic's only \
partition; a topic with several needs it (Hermes reads one partition: events of the other \
partitions would never be seen).
- `group_id` (string, default `buslink`; required in `group` mode): the consumer group id. \
In `assign` mode nothing is committed to Kafka: the offset lives in buslink's offset cache.
- `client_id` (string, default `buslink`).
- `api_version` (list of integers, optional, Hermes's key): becomes \
`broker.version.fallback`; librdkafka asks brokers for their versions itself.
- `ssl` (table, optional): `cafile` (CA certificates, PEM), `certfile` and `keyfile` \
(client certificate and key for mutual TLS, both or neither); paths relative to the config \
file. Host names are checked against the brokers' certificates.
- `sasl` (table, optional): `mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), \
`username`, and exactly one of `password`, `password_file` (first line, relative to the \
config file) or `password_env`. The password is never logged. With `ssl`: SASL over TLS.
- `request_timeout_ms` (integer, default 10000): the longest a metadata or watermark \
request may take.
- `properties` (table, optional): more librdkafka properties, passed through as they are \
(`\"fetch.max.bytes\" = 1048576`). The ones buslink sets (servers, group, commit and reset \
behaviour, security) are refused there.";

/// The settings, checked and resolved (paths resolved, password read).
#[derive(Clone, Debug)]
pub struct Config {
    /// Comma-separated bootstrap brokers.
    pub servers: String,
    /// Assign or group.
    pub mode: Mode,
    /// The topic (assign mode), or the topics joined with `,` (group mode, for messages).
    pub topic: String,
    /// Group mode: the topics subscribed to.
    pub topics: Vec<String>,
    /// The partition, when given.
    pub partition: Option<i32>,
    /// librdkafka properties, all of them (secrets included: never logged).
    pub properties: Vec<(String, String)>,
    /// Metadata and watermark requests.
    pub request_timeout: Duration,
}

fn bad(key: &str, message: impl Into<String>) -> PluginError {
    PluginError::config(message).with_key(key)
}

impl SaslSettings {
    fn password_settings(&self) -> PasswordSettings {
        PasswordSettings {
            password: self.password.clone(),
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }
}

/// Checks the settings on their own (no file read, no connection).
pub fn validate(s: &KafkaSettings) -> PluginResult<()> {
    let servers = match &s.servers {
        Servers::One(one) => vec![one.clone()],
        Servers::Many(many) => many.clone(),
    };
    if servers.is_empty() || servers.iter().any(|s| s.trim().is_empty()) {
        return Err(bad(
            "servers",
            "`servers` must name at least one broker (`host:port`), none empty",
        ));
    }
    if s.topic.as_deref().is_some_and(|t| t.trim().is_empty())
        || s.topics.iter().any(|t| t.trim().is_empty())
    {
        return Err(bad("topic", "a topic name must not be empty"));
    }
    match s.mode {
        Mode::Assign => {
            if s.topic.is_none() {
                return Err(bad("topic", "`topic` names the topic to read"));
            }
            if !s.topics.is_empty() {
                return Err(bad(
                    "topics",
                    "`topics` is for mode = \"group\"; assign mode reads one partition of \
                     `topic`",
                ));
            }
        }
        Mode::Group => {
            if s.topic.is_none() && s.topics.is_empty() {
                return Err(bad(
                    "topics",
                    "`topics` (or `topic`) names the topics to read",
                ));
            }
            if s.topic.is_some() && !s.topics.is_empty() {
                return Err(bad("topics", "give `topics` or `topic`, not both"));
            }
            if s.partition.is_some() {
                return Err(bad(
                    "partition",
                    "in group mode Kafka assigns the partitions: leave `partition` out",
                ));
            }
            if s.group_id.is_none() {
                return Err(bad(
                    "group_id",
                    "group mode needs `group_id`: the members of one group share the partitions",
                ));
            }
        }
    }
    if s.partition.is_some_and(|p| p < 0) {
        return Err(bad("partition", "`partition` must not be negative"));
    }
    for (key, value) in [("group_id", &s.group_id), ("client_id", &s.client_id)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(bad(
                key,
                format!("`{key}` must not be empty (leave it out instead)"),
            ));
        }
    }
    if let Some(version) = &s.api_version {
        if version.is_empty() || version.len() > 4 {
            return Err(bad(
                "api_version",
                "`api_version` is a broker version as a list of 1 to 4 integers, e.g. [2, 6, 0]",
            ));
        }
    }
    if let Some(ssl) = &s.ssl {
        if ssl.certfile.is_some() != ssl.keyfile.is_some() {
            return Err(bad(
                "ssl",
                "`ssl.certfile` and `ssl.keyfile` go together (a client certificate and its key)",
            ));
        }
    }
    if let Some(sasl) = &s.sasl {
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&sasl.mechanism.as_str()) {
            return Err(bad(
                "sasl.mechanism",
                format!(
                    "`sasl.mechanism` {:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
                    sasl.mechanism
                ),
            ));
        }
        if sasl.username.is_empty() {
            return Err(bad("sasl.username", "`sasl.username` must not be empty"));
        }
        if sasl.password_settings().count() != 1 {
            return Err(bad(
                "sasl.password",
                "give exactly one of `sasl.password`, `sasl.password_file` or \
                 `sasl.password_env`",
            ));
        }
    }
    if s.request_timeout_ms == 0 {
        return Err(bad(
            "request_timeout_ms",
            "`request_timeout_ms` must be at least 1",
        ));
    }
    for (name, value) in &s.properties {
        let key = format!("properties.{name}");
        if let Some((_, instead)) = MANAGED.iter().find(|(managed, _)| managed == name) {
            return Err(bad(
                &key,
                format!("librdkafka property `{name}` is set by buslink ({instead}): leave it out"),
            ));
        }
        if property_text(value).is_none() {
            return Err(bad(
                &key,
                format!("librdkafka property `{name}` must be a string, a number or a boolean"),
            ));
        }
    }
    Ok(())
}

/// A property's value as librdkafka takes it (text).
fn property_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks and resolves the settings: paths made absolute and checked, the password read.
pub fn resolve(s: KafkaSettings, context: &Context) -> PluginResult<Config> {
    validate(&s)?;
    let servers = match &s.servers {
        Servers::One(one) => one.trim().to_owned(),
        Servers::Many(many) => many.iter().map(|s| s.trim()).collect::<Vec<_>>().join(","),
    };
    let mut properties: Vec<(String, String)> = vec![
        ("bootstrap.servers".into(), servers.clone()),
        (
            "group.id".into(),
            s.group_id.clone().unwrap_or_else(|| "buslink".into()),
        ),
        (
            "client.id".into(),
            s.client_id.clone().unwrap_or_else(|| "buslink".into()),
        ),
        ("enable.auto.commit".into(), "false".into()),
        ("enable.auto.offset.store".into(), "false".into()),
        // Assign mode: an offset gone from the partition is a gap the consumer reports. A
        // group starts at the oldest records; an offset it committed that is gone since is
        // found at the assignment and reported as a gap too.
        (
            "auto.offset.reset".into(),
            match s.mode {
                Mode::Assign => "error",
                Mode::Group => "earliest",
            }
            .into(),
        ),
        ("enable.partition.eof".into(), "false".into()),
    ];
    if let Some(version) = &s.api_version {
        let text: Vec<String> = version.iter().map(u32::to_string).collect();
        properties.push(("broker.version.fallback".into(), text.join(".")));
    }
    let file = |key: &str, path: &str| -> PluginResult<String> {
        let path: PathBuf = context.resolve_path(path);
        std::fs::metadata(&path)
            .map_err(|e| bad(key, format!("cannot read {key} {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    };
    let tls = s.ssl.is_some();
    if let Some(ssl) = &s.ssl {
        if let Some(ca) = &ssl.cafile {
            properties.push(("ssl.ca.location".into(), file("ssl.cafile", ca)?));
        }
        if let (Some(cert), Some(key)) = (&ssl.certfile, &ssl.keyfile) {
            properties.push((
                "ssl.certificate.location".into(),
                file("ssl.certfile", cert)?,
            ));
            properties.push(("ssl.key.location".into(), file("ssl.keyfile", key)?));
        }
        properties.push((
            "ssl.endpoint.identification.algorithm".into(),
            "https".into(),
        ));
    }
    let protocol = match (&s.sasl, tls) {
        (Some(_), true) => "sasl_ssl",
        (Some(_), false) => "sasl_plaintext",
        (None, true) => "ssl",
        (None, false) => "plaintext",
    };
    properties.push(("security.protocol".into(), protocol.into()));
    if let Some(sasl) = &s.sasl {
        let password = sasl
            .password_settings()
            .read(context, "sasl.")?
            .ok_or_else(|| bad("sasl.password", "a SASL password is needed"))?;
        properties.push(("sasl.mechanisms".into(), sasl.mechanism.clone()));
        properties.push(("sasl.username".into(), sasl.username.clone()));
        properties.push(("sasl.password".into(), password.expose().to_owned()));
    }
    for (name, value) in &s.properties {
        if let Some(text) = property_text(value) {
            properties.push((name.clone(), text));
        }
    }
    let topics = match (&s.topic, s.mode) {
        (Some(topic), _) => vec![topic.clone()],
        (None, _) => s.topics.clone(),
    };
    Ok(Config {
        servers,
        mode: s.mode,
        topic: topics.join(","),
        topics,
        partition: s.partition,
        properties,
        request_timeout: Duration::from_millis(s.request_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> PluginResult<KafkaSettings> {
        buslink_plugin_api::settings::from_json(&value.to_string())
    }

    fn context() -> Context {
        Context::new(std::env::temp_dir())
    }

    #[test]
    fn hermes_keys_are_taken_as_hermes_writes_them() {
        let s = settings(json!({
            "servers": ["k1:9092", "k2:9092"],
            "topic": "hermes",
            "group_id": "hermes-grp",
            "api_version": [2, 6, 0],
        }))
        .unwrap();
        let config = resolve(s, &context()).unwrap();
        assert_eq!(config.servers, "k1:9092,k2:9092");
        let get = |k: &str| {
            config
                .properties
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("group.id"), Some("hermes-grp"));
        assert_eq!(get("broker.version.fallback"), Some("2.6.0"));
        assert_eq!(get("enable.auto.commit"), Some("false"));
        assert_eq!(get("auto.offset.reset"), Some("error"));
        assert_eq!(get("security.protocol"), Some("plaintext"));
    }

    #[test]
    fn bad_settings_are_named_by_key() {
        let cases = [
            (json!({"servers": [], "topic": "t"}), "servers"),
            (json!({"servers": "k:1", "topic": ""}), "topic"),
            (json!({"servers": "k:1"}), "topic"),
            (
                json!({"servers": "k:1", "mode": "group", "topics": ["a"]}),
                "group_id",
            ),
            (
                json!({"servers": "k:1", "mode": "group", "group_id": "g", "topic": "a", "partition": 1}),
                "partition",
            ),
            (
                json!({"servers": "k:1", "topic": "a", "topics": ["b"]}),
                "topics",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "partition": -1}),
                "partition",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "ssl": {"certfile": "c.pem"}}),
                "ssl",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}}),
                "sasl.mechanism",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "sasl": {"mechanism": "PLAIN", "username": "u"}}),
                "sasl.password",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "properties": {"enable.auto.commit": true}}),
                "properties.enable.auto.commit",
            ),
            (
                json!({"servers": "k:1", "topic": "t", "properties": {"x": [1]}}),
                "properties.x",
            ),
        ];
        for (value, key) in cases {
            let error = settings(value.clone())
                .and_then(|s| validate(&s))
                .expect_err(&value.to_string());
            assert_eq!(error.key(), Some(key), "{value}: {error:?}");
        }
        // An array where the ssl table is meant.
        let error = settings(json!({"servers": "k:1", "topic": "t", "ssl": []})).unwrap_err();
        assert_eq!(error.key(), Some("ssl"), "{error:?}");
    }

    #[test]
    fn the_sasl_password_is_read_and_never_shown() {
        let s = settings(json!({
            "servers": "k:1", "topic": "t",
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "hunter2"},
            "ssl": {"cafile": "/etc/hostname"},
        }))
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        let config = resolve(s, &context()).unwrap();
        assert!(config
            .properties
            .contains(&("security.protocol".into(), "sasl_ssl".into())));
        assert!(config
            .properties
            .contains(&("sasl.password".into(), "hunter2".into())));
        let missing = settings(json!({
            "servers": "k:1", "topic": "t",
            "sasl": {"mechanism": "PLAIN", "username": "u", "password_env": "BUSLINK_NO_SUCH_VAR"},
        }))
        .unwrap();
        let error = resolve(missing, &context()).unwrap_err();
        assert_eq!(error.key(), Some("sasl.password_env"));
    }
}
