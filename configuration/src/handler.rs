//! `[[handlers]]` entries: the flat file shape, and the validated, typed handler configs.

use super::source::{ConfigError, Source};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// One `[[handlers]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerConfig {
    pub name: String,
    pub kind: HandlerKind,
    pub filter: EventFilter,
    pub retry: RetryPolicy,
    pub on_failure: FailurePolicy,
    /// `error-queue`: how often queued events are tried again.
    pub retry_interval: Duration,
    /// `error-queue`: the body field that names the object of a non-Hermes event.
    pub queue_key: Option<String>,
}

/// `url` as it may be shown: without its user and password.
pub fn displayable_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// The handler types and their own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum HandlerKind {
    /// Accepts every event and does nothing: for measuring buslink itself.
    Null,
    Stdout,
    Jsonl {
        path: PathBuf,
        /// The permission bits a new file gets (`mode = "0640"`, the default; never
        /// writable by others).
        mode: u32,
    },
    Exec(ExecConfig),
    Http(HttpConfig),
    Plugin(PluginHandlerConfig),
}

/// `type = "plugin"`: a handler class from a plugin library.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginHandlerConfig {
    /// A library name (looked up in plugin_dirs) or a path.
    pub plugin: String,
    pub class: String,
    /// The handler's settings, as JSON text.
    pub settings_json: String,
    /// The config's `allow_insecure_plugins`.
    pub allow_insecure: bool,
}

impl HandlerKind {
    /// One line on what the handler does, as `buslink check` prints it: credentials (a URL's
    /// user and password, header and environment values) are never shown.
    pub fn summary(&self) -> String {
        match self {
            HandlerKind::Null => "null (discards events)".to_owned(),
            HandlerKind::Plugin(plugin) => {
                format!("plugin {} class {}", plugin.plugin, plugin.class)
            }
            HandlerKind::Stdout => "stdout".to_owned(),
            HandlerKind::Jsonl { path, .. } => format!("jsonl -> {}", path.display()),
            HandlerKind::Exec(exec) => {
                // Names only: a value may be a credential.
                let env: Vec<_> = exec
                    .env
                    .iter()
                    .map(|(k, _)| format!("{k}=<redacted>"))
                    .collect();
                format!(
                    "exec {} (timeout {} ms{})",
                    exec.command.join(" "),
                    exec.timeout.as_millis(),
                    if env.is_empty() {
                        String::new()
                    } else {
                        format!(", env {}", env.join(" "))
                    }
                )
            }
            HandlerKind::Http(http) => {
                let url = url::Url::parse(http.url.expose())
                    .map(|url| displayable_url(&url))
                    .unwrap_or_else(|_| "<unparsable url>".into());
                let headers: Vec<_> = http
                    .headers
                    .iter()
                    .map(|(k, _)| format!("{k}: <redacted>"))
                    .collect();
                format!(
                    "http POST {url} (timeout {} ms{})",
                    http.timeout.as_millis(),
                    if headers.is_empty() {
                        String::new()
                    } else {
                        format!(", headers {}", headers.join(", "))
                    }
                )
            }
        }
    }

    /// The file an exactly-once output writes (its committed length is kept with the offset):
    /// a `jsonl` handler's path.
    pub fn exactly_once_file(&self) -> Option<&std::path::Path> {
        match self {
            HandlerKind::Jsonl { path, .. } => Some(path),
            HandlerKind::Null
            | HandlerKind::Stdout
            | HandlerKind::Exec(_)
            | HandlerKind::Http(_)
            | HandlerKind::Plugin(_) => None,
        }
    }

    /// The `type` name.
    pub fn type_name(&self) -> &'static str {
        self.handler_type().name()
    }

    /// Its type.
    pub fn handler_type(&self) -> HandlerType {
        match self {
            HandlerKind::Null => HandlerType::Null,
            HandlerKind::Stdout => HandlerType::Stdout,
            HandlerKind::Jsonl { .. } => HandlerType::Jsonl,
            HandlerKind::Exec(_) => HandlerType::Exec,
            HandlerKind::Http(_) => HandlerType::Http,
            HandlerKind::Plugin(_) => HandlerType::Plugin,
        }
    }
}

/// The handler types a config can name (`type = "..."`), with the facts the config knows of
/// each: its name and the keys it takes besides the common ones (`name`, `type`, `match`,
/// `retry`, `on_failure`). Matches on it are exhaustive: a new type is a compile error in
/// every place that must know it, never a fall-through to another type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerType {
    Stdout,
    Null,
    Jsonl,
    Exec,
    Http,
    Plugin,
}

impl HandlerType {
    /// Every type, in the order error messages list them.
    pub const ALL: [HandlerType; 6] = [
        HandlerType::Stdout,
        HandlerType::Jsonl,
        HandlerType::Exec,
        HandlerType::Http,
        HandlerType::Plugin,
        HandlerType::Null,
    ];

    /// The `type` name.
    pub fn name(self) -> &'static str {
        match self {
            HandlerType::Stdout => "stdout",
            HandlerType::Null => "null",
            HandlerType::Jsonl => "jsonl",
            HandlerType::Exec => "exec",
            HandlerType::Http => "http",
            HandlerType::Plugin => "plugin",
        }
    }

    /// Why `buslink replay` refuses to deliver past events to a handler of this type (said
    /// after "handler 'NAME' "), or `None` when it may.
    pub fn replay_refusal(self) -> Option<&'static str> {
        match self {
            HandlerType::Jsonl => Some(
                "is an exactly-once jsonl output: its committed length belongs to the daemon, \
                 which would cut replayed lines off at its next start (`buslink ctl replay` \
                 has the running daemon append them and commit the new length)",
            ),
            // A handler plugin keeps state the daemon's instance saves too (a materialised
            // view): old events replayed into it would roll that state back under the daemon.
            HandlerType::Plugin => Some(
                "is a handler plugin: the state it keeps is the daemon's, and past events would \
                 roll it back",
            ),
            HandlerType::Stdout | HandlerType::Null | HandlerType::Exec | HandlerType::Http => None,
        }
    }

    /// Why `ctl replay` (the running daemon's own dispatcher) does not deliver to this type:
    /// a handler plugin's state is the daemon's, and past events would roll it back.
    pub fn daemon_replay_refusal(self) -> Option<&'static str> {
        match self {
            HandlerType::Plugin => HandlerType::Plugin.replay_refusal(),
            _ => None,
        }
    }

    /// The type named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<HandlerType> {
        HandlerType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The keys this type takes besides the common ones.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            HandlerType::Stdout | HandlerType::Null => &[],
            HandlerType::Jsonl => &["path", "mode"],
            HandlerType::Exec => &["command", "timeout_ms", "env", "cwd"],
            HandlerType::Http => &["url", "headers", "timeout_ms", "ca_file"],
            HandlerType::Plugin => &["plugin", "class", "settings"],
        }
    }
}

/// `type = "exec"`: run a command per event.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecConfig {
    /// The program and its arguments (never run through a shell).
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Added to the otherwise empty environment.
    pub env: Vec<(String, Secret)>,
    /// The working directory the command runs in.
    pub cwd: ExecCwd,
}

/// The working directory of an `exec` handler's command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecCwd {
    /// The `cwd` key, relative to the config's directory: it must exist.
    Set(PathBuf),
    /// No `cwd`: the state dir (`state_dir`), made at start and writable under the systemd
    /// unit, where the daemon's own working directory is `/`.
    StateDir(PathBuf),
}

impl ExecCwd {
    /// The directory.
    pub fn path(&self) -> &Path {
        match self {
            ExecCwd::Set(path) | ExecCwd::StateDir(path) => path,
        }
    }
}

/// `type = "http"`: POST each event.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    pub url: Secret,
    pub headers: Vec<(String, Secret)>,
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust, besides the built-in roots and `SSL_CERT_FILE`.
    pub ca_file: Option<PathBuf>,
}

/// A value that may carry a credential (an http URL with a password, a header, an exec
/// environment variable): plugin-api's type, never printed, not even by `Debug`.
pub use buslink_plugin_api::secret::Secret;

/// How a failed `handle` is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The wait after the first failure; doubles after each one.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

/// What happens to an event after the last failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Exit 1 without committing the event's offset: the next start retries it.
    Stop,
    /// Append the event and the error to the dead-letter file, and go on.
    DeadLetter,
    /// Queue the event (and its object's later events) for later retries, and go on.
    ErrorQueue,
}

/// A handler's `match`: glob lists per field; an empty list matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub category: Vec<String>,
    pub eventtype: Vec<String>,
    pub objtype: Vec<String>,
}

/// A handler entry that may not have deserialised: each entry is checked on its own, so that
/// one bad handler does not hide the problems of the others.
pub(super) struct LenientHandler(Result<RawHandler, String>);

impl<'de> Deserialize<'de> for LenientHandler {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(LenientHandler(
            RawHandler::deserialize(deserializer).map_err(|e| e.to_string()),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHandler {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    #[serde(default, rename = "match")]
    filter: Option<RawFilter>,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default)]
    on_failure: Option<FailurePolicy>,
    #[serde(default)]
    retry_interval_ms: Option<Spanned<u64>>,
    #[serde(default)]
    queue_key: Option<String>,
    // Type-specific keys; `check_keys` says which type takes which.
    #[serde(default)]
    path: Option<Spanned<PathBuf>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    timeout_ms: Option<Spanned<u64>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    cwd: Option<Spanned<PathBuf>>,
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    ca_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    plugin: Option<Spanned<String>>,
    #[serde(default)]
    class: Option<Spanned<String>>,
    #[serde(default)]
    settings: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default)]
    base_ms: Option<u64>,
    #[serde(default)]
    max_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    category: Patterns,
    #[serde(default)]
    eventtype: Patterns,
    #[serde(default)]
    objtype: Patterns,
}

/// One glob or a list of them.
#[derive(Default, Deserialize)]
#[serde(untagged)]
enum Patterns {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    fn into_vec(self) -> Vec<String> {
        match self {
            Patterns::None => Vec::new(),
            Patterns::One(one) => vec![one],
            Patterns::Many(many) => many,
        }
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a list of handler entries is in the file: `handlers` at the top level (with a single
/// `[consumer]`), or `consumers[N].handlers`.
#[derive(Clone, Debug, Default)]
pub(super) struct HandlersPlace {
    /// The key path above `handlers` (`[]` or `["consumers", "1"]`).
    pub base: Vec<String>,
}

impl HandlersPlace {
    /// The key path of entry `index`, then `rest`.
    fn path(&self, index: usize, rest: &[&str]) -> Vec<String> {
        let mut path = self.base.clone();
        path.push("handlers".into());
        path.push(index.to_string());
        path.extend(rest.iter().map(|part| (*part).to_owned()));
        path
    }

    /// `handlers[1]` or `consumers[0].handlers[1]`.
    fn label(&self, index: usize) -> String {
        super::key_label(&self.path(index, &[]))
    }

    fn error_at_key(
        &self,
        source: &Source,
        index: usize,
        rest: &[&str],
        message: impl Into<String>,
    ) -> ConfigError {
        let path = self.path(index, rest);
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        source.error_at_key(&path, message)
    }
}

/// Validates handler entries; every problem of every entry is reported.
pub(super) fn validate_handlers(
    source: &Source,
    place: &HandlersPlace,
    entries: Vec<Spanned<LenientHandler>>,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<ConfigError>,
) -> Vec<HandlerConfig> {
    let mut handlers: Vec<HandlerConfig> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let span = entry.span();
        let raw = match entry.into_inner().0 {
            Ok(raw) => raw,
            Err(full_message) => {
                // The deserializer's text: the problem, then `in `a.b`` naming the table.
                let mut lines = full_message.lines();
                let message = lines.next().unwrap_or_default().to_owned();
                let table: Vec<String> = lines
                    .filter_map(|line| line.trim().strip_prefix("in `"))
                    .filter_map(|rest| rest.strip_suffix('`'))
                    .flat_map(|path| path.split('.').map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                let field = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                let mut rest: Vec<&str> = table.iter().map(String::as_str).collect();
                rest.extend(field.as_deref());
                errors.push(if !rest.is_empty() {
                    place.error_at_key(source, index, &rest, message)
                } else {
                    source.error_at(Some(span), Some(place.label(index)), message)
                });
                continue;
            }
        };
        if let Some(handler) =
            validate_one(source, place, index, span.clone(), raw, resolve, errors)
        {
            if let Some(earlier) = handlers.iter().position(|h| h.name == handler.name) {
                errors.push(source.error_at(
                    Some(span),
                    Some(format!("{}.name", place.label(index))),
                    format!(
                        "{} and {} are both named '{}'",
                        place.label(earlier),
                        place.label(index),
                        handler.name
                    ),
                ));
            }
            handlers.push(handler);
        }
    }
    handlers
}

fn validate_one(
    source: &Source,
    place: &HandlersPlace,
    index: usize,
    span: std::ops::Range<usize>,
    raw: RawHandler,
    resolve: &dyn Fn(&Path) -> PathBuf,
    errors: &mut Vec<ConfigError>,
) -> Option<HandlerConfig> {
    let before = errors.len();
    let at = |span: std::ops::Range<usize>, key: &str, message: String| {
        source.error_at(
            Some(span),
            Some(format!("{}.{key}", place.label(index))),
            message,
        )
    };
    let name = raw.name.get_ref().clone();
    if name.trim().is_empty() {
        errors.push(at(raw.name.span(), "name", "must not be empty".into()));
    }
    let kind_name = raw.kind.get_ref().as_str();
    let Some(handler_type) = HandlerType::from_name(kind_name) else {
        let known: Vec<&str> = HandlerType::ALL.iter().map(|t| t.name()).collect();
        errors.push(at(
            raw.kind.span(),
            "type",
            format!(
                "unknown handler type '{kind_name}' (known: {})",
                known.join(", ")
            ),
        ));
        return None;
    };
    let allowed = handler_type.keys();
    let present: [(&str, Option<std::ops::Range<usize>>); 12] = [
        ("mode", raw.mode.as_ref().map(Spanned::span)),
        ("plugin", raw.plugin.as_ref().map(Spanned::span)),
        ("class", raw.class.as_ref().map(Spanned::span)),
        ("settings", raw.settings.as_ref().map(Spanned::span)),
        ("path", raw.path.as_ref().map(Spanned::span)),
        ("command", raw.command.as_ref().map(Spanned::span)),
        ("timeout_ms", raw.timeout_ms.as_ref().map(Spanned::span)),
        ("env", raw.env.as_ref().map(Spanned::span)),
        ("cwd", raw.cwd.as_ref().map(Spanned::span)),
        ("url", raw.url.as_ref().map(Spanned::span)),
        ("headers", raw.headers.as_ref().map(Spanned::span)),
        ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
    ];
    for (key, key_span) in present {
        if let Some(key_span) = key_span {
            if !allowed.contains(&key) {
                errors.push(at(
                    key_span,
                    key,
                    format!("handler '{name}' of type {kind_name} takes no `{key}`"),
                ));
            }
        }
    }
    let missing = |key: &str| {
        at(
            span.clone(),
            key,
            format!("handler '{name}' of type {kind_name} needs a `{key}`"),
        )
    };
    let timeout = raw
        .timeout_ms
        .as_ref()
        .map_or(DEFAULT_TIMEOUT, |t| Duration::from_millis(*t.get_ref()));
    if raw.timeout_ms.as_ref().is_some_and(|t| *t.get_ref() == 0) {
        if let Some(t) = &raw.timeout_ms {
            errors.push(at(t.span(), "timeout_ms", "must be at least 1".into()));
        }
    }
    let kind = match handler_type {
        HandlerType::Stdout => Some(HandlerKind::Stdout),
        HandlerType::Null => Some(HandlerKind::Null),
        HandlerType::Jsonl => match &raw.path {
            Some(path) if !path.get_ref().as_os_str().is_empty() => {
                let mode = match &raw.mode {
                    None => crate::modes::OUTPUT_MODE,
                    Some(text) => {
                        crate::modes::parse_mode(text.get_ref()).unwrap_or_else(|problem| {
                            errors.push(at(text.span(), "mode", problem));
                            crate::modes::OUTPUT_MODE
                        })
                    }
                };
                Some(HandlerKind::Jsonl {
                    path: resolve(path.get_ref()),
                    mode,
                })
            }
            Some(path) => {
                errors.push(at(path.span(), "path", "must name a file".into()));
                None
            }
            None => {
                errors.push(missing("path"));
                None
            }
        },
        HandlerType::Plugin => match (&raw.plugin, &raw.class) {
            (Some(plugin), Some(class)) => {
                let settings = raw
                    .settings
                    .as_ref()
                    .map(|t| t.get_ref().clone())
                    .unwrap_or_default();
                let settings_path = place.path(index, &["settings"]);
                let settings_path: Vec<&str> = settings_path.iter().map(String::as_str).collect();
                crate::settings::refuse_non_finite(source, &settings, &settings_path, errors);
                match serde_json::to_string(&settings) {
                    Ok(settings_json) => Some(HandlerKind::Plugin(PluginHandlerConfig {
                        plugin: plugin.get_ref().clone(),
                        class: class.get_ref().clone(),
                        settings_json,
                        allow_insecure: false,
                    })),
                    Err(e) => {
                        errors.push(missing("settings").with_message(format!("settings: {e}")));
                        None
                    }
                }
            }
            (None, _) => {
                errors.push(missing("plugin"));
                None
            }
            (_, None) => {
                errors.push(missing("class"));
                None
            }
        },
        HandlerType::Exec => match &raw.command {
            Some(command) if command.get_ref().first().is_some_and(|p| !p.is_empty()) => {
                Some(HandlerKind::Exec(ExecConfig {
                    command: command.get_ref().clone(),
                    timeout,
                    env: raw
                        .env
                        .as_ref()
                        .map(|env| {
                            env.get_ref()
                                .iter()
                                .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                                .collect()
                        })
                        .unwrap_or_default(),
                    // The state dir is the process's: `Config::parse` sets it.
                    cwd: match &raw.cwd {
                        Some(cwd) if cwd.get_ref().as_os_str().is_empty() => {
                            errors.push(at(cwd.span(), "cwd", "must name a directory".into()));
                            ExecCwd::StateDir(PathBuf::new())
                        }
                        Some(cwd) => ExecCwd::Set(resolve(cwd.get_ref())),
                        None => ExecCwd::StateDir(PathBuf::new()),
                    },
                }))
            }
            Some(command) => {
                errors.push(at(
                    command.span(),
                    "command",
                    "must list the program and its arguments, e.g. [\"/usr/bin/logger\", \"-t\", \"buslink\"]".into(),
                ));
                None
            }
            None => {
                errors.push(missing("command"));
                None
            }
        },
        HandlerType::Http => match &raw.url {
            Some(url) => match url::Url::parse(url.get_ref()) {
                Ok(parsed)
                    if (!parsed.username().is_empty() || parsed.password().is_some())
                        && raw.headers.as_ref().is_some_and(|h| {
                            h.get_ref()
                                .keys()
                                .any(|k| k.eq_ignore_ascii_case("authorization"))
                        }) =>
                {
                    errors.push(at(
                        url.span(),
                        "url",
                        "the URL carries credentials (user:password@) and `headers` sets \
                         Authorization: one would silently replace the other; keep one"
                            .into(),
                    ));
                    None
                }
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    Some(HandlerKind::Http(HttpConfig {
                        url: Secret::new(url.get_ref().clone()),
                        headers: raw
                            .headers
                            .as_ref()
                            .map(|h| {
                                h.get_ref()
                                    .iter()
                                    .map(|(k, v)| (k.clone(), Secret::new(v.clone())))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timeout,
                        ca_file: raw.ca_file.as_ref().map(|f| resolve(f.get_ref())),
                    }))
                }
                Ok(parsed) => {
                    errors.push(at(
                        url.span(),
                        "url",
                        format!("scheme '{}' is not http or https", parsed.scheme()),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(at(url.span(), "url", format!("not a URL: {e}")));
                    None
                }
            },
            None => {
                errors.push(missing("url"));
                None
            }
        },
    };
    let mut retry = RetryPolicy::default();
    if let Some(raw_retry) = &raw.retry {
        retry.attempts = raw_retry.attempts.unwrap_or(retry.attempts);
        retry.base = raw_retry.base_ms.map_or(retry.base, Duration::from_millis);
        retry.max = raw_retry.max_ms.map_or(retry.max, Duration::from_millis);
        if retry.attempts == 0 {
            errors.push(place.error_at_key(
                source,
                index,
                &["retry"],
                "retry.attempts must be at least 1 (the first try counts)",
            ));
        }
        if retry.max < retry.base {
            errors.push(place.error_at_key(
                source,
                index,
                &["retry"],
                "retry.max_ms must not be below retry.base_ms",
            ));
        }
    }
    let filter = match raw.filter {
        None => EventFilter::default(),
        Some(filter) => EventFilter {
            category: filter.category.into_vec(),
            eventtype: filter.eventtype.into_vec(),
            objtype: filter.objtype.into_vec(),
        },
    };
    if let Err(problem) = crate::filter::check(&filter) {
        errors.push(place.error_at_key(source, index, &["match"], problem));
    }
    let on_failure = raw.on_failure.unwrap_or(FailurePolicy::Stop);
    if let Some(interval) = &raw.retry_interval_ms {
        if on_failure != FailurePolicy::ErrorQueue {
            errors.push(at(
                interval.span(),
                "retry_interval_ms",
                "only used with on_failure = \"error-queue\"".into(),
            ));
        } else if *interval.get_ref() == 0 {
            errors.push(at(
                interval.span(),
                "retry_interval_ms",
                "must be at least 1".into(),
            ));
        }
    }
    let kind = kind?;
    (errors.len() == before).then_some(HandlerConfig {
        name,
        kind,
        filter,
        retry,
        on_failure,
        retry_interval: raw.retry_interval_ms.map_or(Duration::from_secs(30), |ms| {
            Duration::from_millis(ms.into_inner())
        }),
        queue_key: raw.queue_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handler_type_is_found_by_its_own_name_only() {
        for handler_type in HandlerType::ALL {
            assert_eq!(
                HandlerType::from_name(handler_type.name()),
                Some(handler_type)
            );
        }
        let mut names: Vec<&str> = HandlerType::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), HandlerType::ALL.len(), "names are unique");
        assert_eq!(HandlerType::from_name("https"), None);
        assert_eq!(HandlerType::from_name(""), None);
    }
}
