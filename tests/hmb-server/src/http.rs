//! HTTP routing and the HMB endpoints: `{bus}/{method}[/{arg}...]`.
//!
//! Generic behaviour of the reference server: only GET and POST (else 405,
//! empty body); unclean paths redirect (301); fewer than two segments, an
//! unknown method or a wrong argument count give Go's 404 text; error bodies
//! are text/plain with `X-Content-Type-Options: nosniff`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming as HyperBody;
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use crate::admin;
use crate::body::{self, full, RespBody};
use crate::bus::{Bus, Peer};
use crate::faults::{Endpoint, FaultAction, Faults};
use crate::framing::{self, Format};
use crate::hub::Hub;
use crate::message::Validated;
use crate::params::OpenParams;
use crate::recv::{MidFault, Producer};

/// The `software` string of `/features`.
pub const SOFTWARE: &str = "httpmsgbus v0.16 (2024.010)";

/// Shared by every request of a server.
#[derive(Debug)]
pub struct Ctx {
    /// Buses and server state.
    pub hub: Arc<Hub>,
    /// Fault rules.
    pub faults: Arc<Faults>,
}

/// Returned instead of a response to make hyper close the connection.
#[derive(Debug, thiserror::Error)]
#[error("fault injection: connection dropped")]
pub struct DropConnection;

type Resp = Response<RespBody>;

/// A text/plain error in Go `http.Error` style.
pub fn text_error(status: StatusCode, message: &str) -> Resp {
    let mut r = Response::new(full(format!("{message}\n")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn not_found() -> Resp {
    text_error(StatusCode::NOT_FOUND, "404 page not found")
}

fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn with_type(body: impl Into<Bytes>, content_type: &str) -> Resp {
    let mut r = Response::new(full(body));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn json(value: &serde_json::Value) -> Resp {
    with_type(value.to_string(), "application/json")
}

/// Go's `path.Clean` as used by the reference server, keeping a trailing
/// slash.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn redirect(req_method: &Method, location: &str) -> Resp {
    let mut r = if req_method == Method::GET || req_method == Method::HEAD {
        let mut r = Response::new(full(format!(
            "<a href=\"{}\">Moved Permanently</a>.\n\n",
            html_escape(location)
        )));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        Response::new(full(Bytes::new()))
    };
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn authorized(req: &Request<HyperBody>, hub: &Hub) -> bool {
    let Some(auth) = &hub.settings().auth else {
        return true;
    };
    let Some(value) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{}:{}", auth.user, auth.password).as_bytes()
}

fn unauthorized() -> Resp {
    let mut r = text_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"httpmsgbus\""),
    );
    r
}

/// Reads a request body within the POST size limit.
async fn read_body(req: Request<HyperBody>, limit_kb: usize) -> Result<Bytes, String> {
    match Limited::new(req.into_body(), limit_kb.saturating_mul(1024))
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err("http: request body too large".to_owned())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn content_type(req: &Request<HyperBody>) -> Option<String> {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Serves one request.
pub async fn handle(
    req: Request<HyperBody>,
    ctx: Arc<Ctx>,
    peer: SocketAddr,
) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_owned();
    if path == "/_admin" || path.starts_with("/_admin/") {
        return Ok(admin::handle(req, &ctx).await);
    }
    if !authorized(&req, &ctx.hub) {
        return Ok(unauthorized());
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    let cleaned = clean_path(&path);
    if cleaned != path {
        let location = match req.uri().query() {
            Some(q) => format!("{cleaned}?{q}"),
            None => cleaned,
        };
        return Ok(redirect(req.method(), &location));
    }
    let segments: Vec<String> = path[1..].split('/').map(str::to_owned).collect();
    if segments.len() < 2 {
        return Ok(not_found());
    }
    let bus = ctx.hub.bus(&segments[0]);
    let args = &segments[2..];
    let Some(endpoint) = Endpoint::from_method(&segments[1]) else {
        return Ok(not_found());
    };
    let (verb, arity_ok) = match endpoint {
        Endpoint::Open => (Method::POST, args.is_empty()),
        Endpoint::Send => (Method::POST, args.len() == 1),
        Endpoint::Recv | Endpoint::Stream => (Method::GET, args.len() == 1 || args.len() == 3),
        Endpoint::Info | Endpoint::Status | Endpoint::Features => (Method::GET, args.is_empty()),
    };
    if req.method() != verb {
        return Ok(empty(StatusCode::METHOD_NOT_ALLOWED));
    }
    if !arity_ok {
        return Ok(not_found());
    }

    let mut mid_fault = None;
    let mut tear_body = false;
    match ctx.faults.take(endpoint, bus.name()) {
        None => {}
        Some(FaultAction::Status { code, message }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = message.unwrap_or_else(|| match code {
                400 => "invalid session".to_owned(),
                503 => "server is shutting down".to_owned(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            });
            return Ok(text_error(status, &message));
        }
        Some(FaultAction::Drop) => return Err(DropConnection),
        Some(FaultAction::Stall { ms }) => ctx.faults.stall(ms).await,
        Some(FaultAction::Malformed { body, content_type }) => {
            let ct = content_type.unwrap_or_else(|| natural_type(endpoint, &bus, args).to_owned());
            return Ok(with_type(body, &ct));
        }
        Some(FaultAction::Trickle { body, every_ms }) => {
            let ct = natural_type(endpoint, &bus, args).to_owned();
            return Ok(trickled(body, every_ms, &ct));
        }
        Some(FaultAction::DropMidResponse { after_messages }) => {
            mid_fault = Some(MidFault::Drop {
                after: after_messages,
            });
            tear_body = true;
        }
        Some(FaultAction::StallMidResponse { after_messages, ms }) => {
            mid_fault = Some(MidFault::Stall {
                after: after_messages,
                ms,
            });
        }
    }

    let resp = match endpoint {
        Endpoint::Features => json(&serde_json::json!({
            "capabilities": ["JSON", "BSON", "INFO", "STREAM", "WINDOW", "FILTER", "OOD"],
            "functions": [],
            "software": SOFTWARE,
        })),
        Endpoint::Info => json(&bus.info()),
        Endpoint::Status => json(&bus.status()),
        Endpoint::Open => open(req, &ctx, &bus, peer).await,
        Endpoint::Send => send(req, &ctx, &bus, &args[0]).await,
        Endpoint::Recv | Endpoint::Stream => {
            let streaming = endpoint == Endpoint::Stream;
            return Ok(recv(&ctx, &bus, args, streaming, mid_fault));
        }
    };
    if tear_body {
        return Ok(torn(resp).await);
    }
    Ok(resp)
}

/// The content type a request would normally get (for `Malformed`).
fn natural_type(endpoint: Endpoint, bus: &Bus, args: &[String]) -> &'static str {
    match endpoint {
        Endpoint::Recv | Endpoint::Stream => {
            let st = bus.lock();
            st.sessions
                .get(&args[0])
                .map_or("application/json", |s| s.format.content_type())
        }
        _ => "application/json",
    }
}

/// A 200 answer whose body comes a byte every `every_ms` ms; the writer ends
/// when the body does or the client goes away.
fn trickled(body: String, every_ms: u64, content_type: &str) -> Resp {
    let (tx, stream) = body::channel();
    tokio::spawn(async move {
        for byte in body.into_bytes() {
            tokio::time::sleep(std::time::Duration::from_millis(every_ms)).await;
            if tx.send(Ok(Bytes::from(vec![byte]))).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(stream);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(CONTENT_TYPE, value);
    }
    resp
}

/// Sends the headers and half the body of a complete response, then cuts the
/// connection.
async fn torn(resp: Resp) -> Resp {
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let (tx, body) = body::channel();
    tokio::spawn(async move {
        let half = bytes.slice(..bytes.len() / 2);
        if tx.send(Ok(half)).await.is_ok() {
            let _ = tx
                .send(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "fault injection: connection dropped mid-response",
                )))
                .await;
        }
    });
    Response::from_parts(parts, body)
}

fn client_ip(req: &Request<HyperBody>, ctx: &Ctx, peer: SocketAddr) -> IpAddr {
    if ctx.hub.settings().use_xff {
        let first = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(", ").next())
            .and_then(|v| v.trim().parse().ok());
        if let Some(ip) = first {
            return ip;
        }
    }
    peer.ip()
}

async fn open(req: Request<HyperBody>, ctx: &Ctx, bus: &Bus, peer: SocketAddr) -> Resp {
    let format = Format::from_content_type(content_type(&req).as_deref());
    let ip = client_ip(&req, ctx, peer);
    let body = match read_body(req, ctx.hub.settings().post_size_kb).await {
        Ok(b) => b,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    let params = match OpenParams::decode(&body, format) {
        Ok(p) => p,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    let serial = ctx.hub.next_serial();
    let ack = match bus.open(
        &params,
        Peer { addr: peer, ip },
        format,
        ctx.hub.settings(),
        serial,
    ) {
        Ok(a) => a,
        Err(e) => return text_error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    match format {
        Format::Json => with_type(
            serde_json::to_vec(&ack).unwrap_or_default(),
            format.content_type(),
        ),
        Format::Bson => match bson::to_document(&ack) {
            Ok(doc) => with_type(framing::bson_bytes(&doc), format.content_type()),
            Err(e) => text_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
    }
}

async fn send(req: Request<HyperBody>, ctx: &Ctx, bus: &Arc<Bus>, sid: &str) -> Resp {
    let Some(guard) = bus.acquire(sid) else {
        return text_error(StatusCode::BAD_REQUEST, "invalid session");
    };
    let format = Format::from_content_type(content_type(&req).as_deref());
    let body = match read_body(req, ctx.hub.settings().post_size_kb).await {
        Ok(b) => b,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, &e),
    };
    let cid = {
        let mut st = bus.lock();
        match st.sessions.get_mut(guard.sid()) {
            Some(s) => {
                s.sent += body.len() as u64;
                s.cid.clone()
            }
            None => return text_error(StatusCode::BAD_REQUEST, "invalid session"),
        }
    };
    let (messages, error) = framing::send_messages(&body, format);
    for inc in messages {
        match inc.validate() {
            Ok(Validated::Heartbeat) => {}
            Ok(Validated::Store(inc)) => {
                if ctx.hub.is_shutting_down() {
                    return text_error(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down");
                }
                bus.push(*inc, Some(&cid));
            }
            Err(e) => return text_error(StatusCode::BAD_REQUEST, e),
        }
    }
    drop(guard);
    match error {
        Some(e) => text_error(StatusCode::BAD_REQUEST, &e),
        None => empty(StatusCode::NO_CONTENT),
    }
}

fn recv(
    ctx: &Ctx,
    bus: &Arc<Bus>,
    args: &[String],
    streaming: bool,
    fault: Option<MidFault>,
) -> Resp {
    let invalid = || text_error(StatusCode::BAD_REQUEST, "invalid session");
    let (queue, seq) = match args {
        [_] => (String::new(), 0),
        [_, q, s] => match s.parse::<i64>() {
            Ok(seq) => (q.clone(), seq),
            Err(_) => return invalid(),
        },
        _ => return not_found(),
    };
    let Some(guard) = bus.acquire(&args[0]) else {
        return invalid();
    };
    let (format, heartbeat, recv_limit_kb) = {
        let st = bus.lock();
        let Some(s) = st.sessions.get(&args[0]) else {
            return invalid();
        };
        if !s.continuity_ok(&queue, seq) {
            return invalid();
        }
        (s.format, s.heartbeat, s.recv_limit)
    };
    let producer = Producer {
        bus: Arc::clone(bus),
        guard,
        format,
        streaming,
        heartbeat,
        recv_limit_kb,
        fault,
        faults: Arc::clone(&ctx.faults),
        hub: Arc::clone(&ctx.hub),
    };
    let (tx, body) = body::channel();
    tokio::spawn(producer.run(tx));
    with_body_type(body, format.content_type())
}

fn with_body_type(body: RespBody, content_type: &'static str) -> Resp {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_cleaning() {
        assert_eq!(clean_path("/test/features"), "/test/features");
        assert_eq!(clean_path("/test//features"), "/test/features");
        assert_eq!(clean_path("/test/./a/../features"), "/test/features");
        assert_eq!(clean_path("/test/recv/x/"), "/test/recv/x/");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/.."), "/");
    }
}
