//! The HTTP side: one keep-alive client per consumer, the HMB requests, and how HTTP failures
//! become plugin errors.

use crate::bson_json::bson_to_json_text;
use crate::settings::{Config, Format};
use buslink_plugin_api::{ErrorKind, PluginError, PluginResult};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

/// The per-queue part of an `/open` ack.
#[derive(Clone, Debug, Deserialize)]
pub struct AckQueue {
    /// The resolved start seq (the next message this session gets), or null on error.
    #[serde(default)]
    pub seq: Option<f64>,
    /// The error text, or null.
    #[serde(default)]
    pub error: Option<String>,
}

/// An `/open` ack.
#[derive(Clone, Debug, Deserialize)]
pub struct Ack {
    /// The session id.
    pub sid: String,
    /// The client id.
    #[serde(default)]
    pub cid: String,
    /// Per queue: resolved seq or error.
    #[serde(default)]
    pub queue: BTreeMap<String, AckQueue>,
}

/// One `/info` queue entry.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct InfoQueue {
    /// The oldest seq still held.
    #[serde(default)]
    pub startseq: Option<f64>,
    /// The last seq + 1.
    #[serde(default)]
    pub endseq: Option<f64>,
}

/// An `/info` answer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Info {
    /// Per queue.
    #[serde(default)]
    pub queue: BTreeMap<String, InfoQueue>,
}

/// The HTTP client of one consumer.
#[derive(Clone, Debug)]
pub struct Http {
    client: Client,
    /// The resolved settings.
    pub config: Arc<Config>,
}

/// Describes a reqwest error with its causes (there is never a password in them: URLs hold no
/// credentials, the `Authorization` header is not part of errors).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Turns a failed request into a plugin error of the right kind.
pub fn request_error(what: &str, error: &reqwest::Error) -> PluginError {
    let kind = if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_decode() || error.is_body() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Connect
    };
    // `what` names the request (and the server); reqwest's own text would repeat its URL,
    // session id included, in every line an operator pastes.
    let plain = describe(error);
    let plain = match error.url() {
        Some(url) => plain
            .replace(&format!(" for url ({url})"), "")
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "the server"),
        None => plain,
    };
    PluginError::new(kind, format!("{what}: {plain}"))
}

/// Turns a failed body read into a plugin error.
pub fn read_error(what: &str, error: &std::io::Error) -> PluginError {
    let kind =
        if error.kind() == std::io::ErrorKind::TimedOut || describe(error).contains("timed out") {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        };
    PluginError::new(
        kind,
        format!("{what}: the response broke off: {}", describe(error)),
    )
}

/// The settings both HTTP clients share (reqwest's blocking and async builders have the same
/// methods but no common trait): connect timeout, keep-alive, no Nagle, user agent, the extra
/// CA. Evaluates to the builder, or returns a `ca_file` error from the calling function.
macro_rules! with_common_settings {
    ($builder:expr, $config:expr) => {{
        let mut builder = $builder
            .connect_timeout($config.connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("buslink-hmb/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &$config.ca_pem {
            let certificate = reqwest::Certificate::from_pem(pem)
                .map_err(|e| PluginError::config(format!("ca_file: {e}")).with_key("ca_file"))?;
            builder = builder.add_root_certificate(certificate);
        }
        builder
    }};
}

impl Http {
    /// Builds the client (no connection yet).
    pub fn new(config: Arc<Config>) -> PluginResult<Http> {
        let builder = Client::builder().timeout(config.read_timeout);
        let client = with_common_settings!(builder, config)
            .build()
            .map_err(|e| PluginError::internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http { client, config })
    }

    /// `BASE/method/args...`.
    pub fn url(&self, parts: &[&str]) -> Url {
        let mut url = self.config.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(parts);
        }
        url
    }

    fn authed(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.config.auth {
            Some((user, password)) => request.basic_auth(user, Some(password.expose())),
            None => request,
        }
    }

    /// The bus URL, for messages.
    pub fn base(&self) -> &str {
        self.config.base.as_str()
    }

    /// Sends a request and checks its status: 2xx passes, everything else becomes an error
    /// naming the request and the server's answer.
    pub fn execute(&self, what: &str, request: RequestBuilder) -> PluginResult<Response> {
        let response = self
            .authed(request)
            .send()
            .map_err(|e| request_error(what, &e))?;
        check_status(
            what,
            response,
            self.config.auth.as_ref().map(|(u, _)| u.as_str()),
        )
    }

    /// GET a sessionless JSON method (`features`, `info`, `status`).
    pub fn get_json(&self, method: &str) -> PluginResult<serde_json::Value> {
        self.get_json_within(method, None)
    }

    fn get_json_within(
        &self,
        method: &str,
        wait: Option<std::time::Duration>,
    ) -> PluginResult<serde_json::Value> {
        let url = self.url(&[method]);
        let what = format!("GET {url}");
        let mut request = self.client.get(url.clone());
        if let Some(wait) = wait {
            request = request.timeout(wait);
        }
        let response = self.execute(&what, request)?;
        let bytes = bounded_body(&what, response)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            PluginError::protocol(format!(
                "{what}: the answer is not JSON ({e}): {}",
                excerpt(&bytes)
            ))
        })
    }

    /// The capabilities the server lists in `/features`.
    pub fn features(&self) -> PluginResult<(Vec<String>, serde_json::Value)> {
        let value = self.get_json("features")?;
        let capabilities = value
            .get("capabilities")
            .and_then(|c| c.as_array())
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .ok_or_else(|| {
                PluginError::protocol(format!(
                    "GET {}: the answer has no `capabilities` list: {value}",
                    self.url(&["features"])
                ))
            })?;
        Ok((capabilities, value))
    }

    /// `/info`, typed.
    pub fn info(&self) -> PluginResult<Info> {
        self.info_with(None)
    }

    /// `/info`, typed, answered within `wait` (the client's read timeout otherwise applies).
    pub fn info_within(&self, wait: std::time::Duration) -> PluginResult<Info> {
        self.info_with(Some(wait))
    }

    fn info_with(&self, wait: Option<std::time::Duration>) -> PluginResult<Info> {
        let value = self.get_json_within("info", wait)?;
        serde_json::from_value(value).map_err(|e| {
            PluginError::protocol(format!(
                "GET {}: unexpected answer: {e}",
                self.url(&["info"])
            ))
        })
    }

    /// Encodes a request document in the session format.
    fn encode(&self, format: Format, value: &serde_json::Value) -> PluginResult<Vec<u8>> {
        match format {
            Format::Json => serde_json::to_vec(value)
                .map_err(|e| PluginError::internal(format!("cannot encode a request: {e}"))),
            Format::Bson => {
                let doc = bson::to_document(value)
                    .map_err(|e| PluginError::internal(format!("cannot encode a request: {e}")))?;
                bson::to_vec(&doc)
                    .map_err(|e| PluginError::internal(format!("cannot encode a request: {e}")))
            }
        }
    }

    /// `POST /open` with `body` in `format`.
    pub fn open(&self, format: Format, body: &serde_json::Value) -> PluginResult<Ack> {
        let url = self.url(&["open"]);
        let what = format!("POST {url}");
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, format.content_type())
            .body(self.encode(format, body)?);
        let response = self.execute(&what, request)?;
        let bytes = bounded_body(&what, response)?;
        let text = match format {
            Format::Json => String::from_utf8_lossy(&bytes).into_owned(),
            Format::Bson => bson_to_json_text(&bytes)
                .map_err(|e| PluginError::protocol(format!("{what}: undecodable BSON ack: {e}")))?,
        };
        serde_json::from_str(&text).map_err(|e| {
            PluginError::protocol(format!(
                "{what}: unexpected ack ({e}): {}",
                excerpt(text.as_bytes())
            ))
        })
    }

    /// The message the server holds at `seq` of `queue`, as it writes it in a `/recv` answer
    /// in `format` (the bytes of the item: a JSON object, or a BSON document), read through a
    /// session of its own with the window `seq..=seq` (`keep = false`). `None`: the queue holds
    /// nothing from `seq` on. `Some((s, bytes))` with `s > seq`: it no longer holds `seq`, and
    /// `s` is the oldest message after it. Used to tell whether a queue is still the one read
    /// before (a server restarted with other messages under the same seqs). Asked twice: the
    /// first request after a server restart may go out on a connection of the old server.
    pub fn message_at(
        &self,
        format: Format,
        queue: &str,
        seq: i64,
    ) -> PluginResult<Option<(i64, Vec<u8>)>> {
        self.message_at_once(format, queue, seq)
            .or_else(|_| self.message_at_once(format, queue, seq))
    }

    fn message_at_once(
        &self,
        format: Format,
        queue: &str,
        seq: i64,
    ) -> PluginResult<Option<(i64, Vec<u8>)>> {
        let body = serde_json::json!({
            "heartbeat": 1,
            "queue": { queue: { "seq": seq, "endseq": seq, "keep": false } },
        });
        let ack = self.open(format, &body)?;
        let url = self.url(&["recv", &ack.sid]);
        let what = format!("GET {}", self.url(&["recv", "SID"]));
        let response = self.execute(&what, self.client.get(url))?;
        let bytes = bounded_body(&what, response)?;
        let mut framer = crate::framing::Framer::new(format);
        let mut pos = 0;
        while let Some(item) = framer
            .next(&bytes, &mut pos)
            .map_err(|e| PluginError::protocol(format!("{what}: {e}")))?
        {
            let raw = &bytes[item.range.clone()];
            let message = message_value(format, raw).ok_or_else(|| {
                PluginError::protocol(format!("{what}: unreadable message: {}", excerpt(raw)))
            })?;
            match message.get("type").and_then(|t| t.as_str()) {
                Some("HEARTBEAT") => continue,
                Some("EOF") | None => return Ok(None),
                Some(_) => {}
            }
            return Ok(message
                .get("seq")
                .and_then(serde_json::Value::as_i64)
                .map(|at| (at, raw.to_vec())));
        }
        Ok(None)
    }

    /// `POST /send/SID` with messages in `format`.
    pub fn send(
        &self,
        format: Format,
        sid: &str,
        messages: &[serde_json::Value],
    ) -> PluginResult<()> {
        let url = self.url(&["send", sid]);
        let what = format!("POST {}", self.url(&["send", "SID"]));
        let body = match format {
            Format::Json => {
                let wrapped: serde_json::Map<String, serde_json::Value> = messages
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i.to_string(), m.clone()))
                    .collect();
                self.encode(format, &serde_json::Value::Object(wrapped))?
            }
            Format::Bson => {
                let mut body = Vec::new();
                for message in messages {
                    body.extend(self.encode(format, message)?);
                }
                body
            }
        };
        let request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, format.content_type())
            .body(body);
        self.execute(&what, request).map(|_| ())
    }
}

/// A short printable excerpt of a body.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else if bytes.len() > 160 {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

fn check_status(what: &str, response: Response, user: Option<&str>) -> PluginResult<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut response = response;
    let mut body = Vec::new();
    let _ = (&mut response).take(400).read_to_end(&mut body);
    Err(status_error(what, status, &body, user))
}

/// A message as a server wrote it in `format` (a JSON object, or a BSON document), as a JSON
/// value (`None`: it does not read as one). For the rare looks at one message (`message_at`
/// and what its answer is compared with), not for the read path.
pub fn message_value(format: Format, raw: &[u8]) -> Option<serde_json::Value> {
    match format {
        Format::Json => serde_json::from_slice(raw).ok(),
        Format::Bson => serde_json::from_str(&bson_to_json_text(raw).ok()?).ok(),
    }
}

/// Whether `error` is a 5xx answer of the server (written by [`status_error`]): the server
/// is up and the same one (it answered on the session's connection), only busy or failing.
pub fn is_server_answer_5xx(error: &PluginError) -> bool {
    error.to_string().contains(": HTTP 5")
}

/// The error for an answer with a non-2xx `status` and `body` (its start).
fn status_error(what: &str, status: StatusCode, body: &[u8], user: Option<&str>) -> PluginError {
    let text = excerpt(body);
    let message = format!("{what}: HTTP {status}: {text}");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PluginError::config(match user {
            Some(user) => format!(
                "{what}: the server refused the credentials of user '{user}' (HTTP {status}); \
                 check `user` and the password setting"
            ),
            None => format!(
                "{what}: the server requires authentication (HTTP {status}); set `user` and \
                 one of `password`, `password_file`, `password_env`"
            ),
        })
        .with_key(if user.is_some() { "user" } else { "url" }),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => PluginError::config(format!(
            "{message}; is `url` an HMB server prefix plus a bus name?"
        ))
        .with_key("url"),
        StatusCode::SERVICE_UNAVAILABLE => PluginError::connect(message),
        StatusCode::BAD_REQUEST => PluginError::protocol(message),
        s if s.is_server_error() => PluginError::connect(message),
        _ => PluginError::protocol(message),
    }
}

/// The largest answer to `/features`, `/info` or `/open` read (they are a few KB): a server
/// that sends more (a huge `Content-Length`, an endless body) is broken off there.
const CONTROL_ANSWER_MAX: u64 = 4 << 20;

/// The body of a control answer, at most [`CONTROL_ANSWER_MAX`] bytes.
fn bounded_body(what: &str, response: Response) -> PluginResult<Vec<u8>> {
    let mut bytes = Vec::new();
    response
        .take(CONTROL_ANSWER_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| PluginError::connect(format!("{what}: reading the answer: {e}")))?;
    if bytes.len() as u64 > CONTROL_ANSWER_MAX {
        return Err(PluginError::protocol(format!(
            "{what}: the answer is larger than {} MiB: not read further",
            CONTROL_ANSWER_MAX >> 20
        )));
    }
    Ok(bytes)
}

/// The client the fetcher thread reads `/recv` and `/stream` answers with: reqwest's async
/// client driven by a single-threaded runtime on the fetcher thread itself. Measured side by
/// side (`buslink-bench --only hmb`), this costs about 0.5 us of CPU per message less than
/// reqwest's blocking client, which runs the connection on a runtime thread of its own and
/// hands every chunk over to the caller's thread.
pub struct RecvClient {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    http: Http,
}

impl RecvClient {
    /// Builds the runtime and the client (no connection yet); `http` gives the settings and
    /// the URLs.
    pub fn new(http: Http) -> PluginResult<RecvClient> {
        let config = &http.config;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PluginError::internal(format!("cannot start the HTTP runtime: {e}")))?;
        let builder = reqwest::Client::builder().read_timeout(config.read_timeout);
        let client = {
            let _context = runtime.enter();
            with_common_settings!(builder, config)
                .build()
                .map_err(|e| PluginError::internal(format!("cannot build the HTTP client: {e}")))?
        };
        Ok(RecvClient {
            runtime,
            client,
            http,
        })
    }

    /// Sends `GET /recv/SID[/QUEUE/SEQ]` (or `/stream/...`) and returns once it is on the
    /// wire: the server prepares the answer while the caller does other work (the previous
    /// answer), and [`answer`](Self::answer) reads it.
    pub fn send(
        &self,
        stream: bool,
        sid: &str,
        suffix: Option<(&str, i64)>,
        format: Format,
    ) -> PendingRecv {
        let method = if stream { "stream" } else { "recv" };
        let seq_text;
        let mut parts = vec![method, sid];
        if let Some((queue, seq)) = suffix {
            seq_text = seq.to_string();
            parts.push(queue);
            parts.push(&seq_text);
        }
        let url = self.http.url(&parts);
        let mut request = self.client.get(url);
        if let Some((user, password)) = &self.http.config.auth {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let task = self.runtime.spawn(async move { request.send().await });
        // The runtime runs on this thread only while it is driven: a few turns let the request
        // task hand the request to its connection and the connection write it.
        self.runtime.block_on(async {
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        });
        PendingRecv {
            task,
            what: format!("GET {}", self.http.url(&[method, "SID"])),
            format,
        }
    }

    /// Waits for the answer to a request [`send`](Self::send) sent: status and content type
    /// checked, as a reader of its body.
    pub fn answer(&self, mut pending: PendingRecv) -> PluginResult<BodyReader<'_>> {
        let what = std::mem::take(&mut pending.what);
        let response = match self.runtime.block_on(&mut pending.task) {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(request_error(&what, &error)),
            Err(error) => {
                return Err(PluginError::internal(format!(
                    "{what}: the request task ended: {error}"
                )))
            }
        };
        let format = pending.format;
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body = BodyReader {
            runtime: &self.runtime,
            response,
            pending: bytes::Bytes::new(),
        };
        if !status.is_success() {
            let head = body.head(400);
            let user = self.http.config.auth.as_ref().map(|(u, _)| u.as_str());
            return Err(status_error(&what, status, &head, user));
        }
        if content_type != format.content_type() {
            let head = body.head(200);
            return Err(PluginError::protocol(format!(
                "{what}: answer of type {:?} in a {} session: {}",
                content_type,
                format.capability(),
                excerpt(&head)
            )));
        }
        Ok(body)
    }
}

/// A request sent by [`RecvClient::send`] whose answer was not read yet; dropping it cancels
/// the request.
pub struct PendingRecv {
    task: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    what: String,
    format: Format,
}

impl Drop for PendingRecv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The body of an answer being received, read as it arrives (`std::io::Read`).
pub struct BodyReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    response: reqwest::Response,
    /// The rest of the last chunk received.
    pending: bytes::Bytes,
}

impl BodyReader<'_> {
    /// Up to `limit` bytes of the body, for error messages (read errors end it early).
    fn head(&mut self, limit: u64) -> Vec<u8> {
        let mut head = Vec::new();
        let _ = self.take(limit).read_to_end(&mut head);
        head
    }

    /// The next bytes of the body as they arrived (no copy); `None` at its end.
    pub fn chunk(&mut self) -> std::io::Result<Option<bytes::Bytes>> {
        self.chunk_by(None)
    }

    /// [`chunk`](Self::chunk), waiting no later than `deadline`: past it, an error of kind
    /// `TimedOut` (the caller tells it from a read timeout by the clock).
    pub fn chunk_by(
        &mut self,
        deadline: Option<std::time::Instant>,
    ) -> std::io::Result<Option<bytes::Bytes>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        let read = self.response.chunk();
        let result = match deadline {
            None => self.runtime.block_on(read),
            Some(deadline) => {
                // The timer is made inside the runtime, which drives it.
                let timed = self.runtime.block_on(async {
                    tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), read).await
                });
                match timed {
                    Ok(result) => result,
                    Err(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "message deadline passed",
                        ))
                    }
                }
            }
        };
        match result {
            Ok(chunk) => Ok(chunk),
            Err(error) => {
                let kind = if error.is_timeout() {
                    std::io::ErrorKind::TimedOut
                } else {
                    std::io::ErrorKind::Other
                };
                Err(std::io::Error::new(kind, error))
            }
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.chunk()? {
                Some(chunk) => self.pending = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}
