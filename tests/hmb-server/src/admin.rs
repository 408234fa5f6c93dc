//! The control endpoints under `/_admin` (no auth, no faults), for tests that
//! run the server binary as a child process:
//!
//! | request | effect |
//! |---|---|
//! | `GET /_admin/health` | 200 `ok` |
//! | `GET /_admin/faults` | the rules with their hit counts (JSON list) |
//! | `POST /_admin/faults` | add a rule (JSON [`FaultRule`]) -> `{"id":N}` |
//! | `DELETE /_admin/faults` | remove all rules, release stalls |
//! | `DELETE /_admin/faults/{id}` | remove one rule (404 if unknown) |
//! | `POST /_admin/faults/release` | end every stall in progress |
//! | `POST /_admin/restart?keep_queues=BOOL` | simulated restart (default false) |
//! | `POST /_admin/publish/{bus}` | store one JSON message -> `{"seq":N}` |
//! | `POST /_admin/purge` | run the idle-session purge now |
//! | `GET /_admin/sessions/{bus}` | sessions with their activity (JSON list) |
//! | `POST /_admin/shutdown` | ask the process to stop |

use http_body_util::BodyExt;
use hyper::body::Incoming as HyperBody;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::body::{full, RespBody};
use crate::faults::{FaultId, FaultRule};
use crate::http::{text_error, Ctx};
use crate::message::{Incoming, Validated};

type Resp = Response<RespBody>;

fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn no_content() -> Resp {
    let mut r = Response::new(full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn bad_request(msg: &str) -> Resp {
    text_error(StatusCode::BAD_REQUEST, msg)
}

fn query_flag(req: &Request<HyperBody>, name: &str) -> Result<bool, String> {
    let Some(query) = req.uri().query() else {
        return Ok(false);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == name {
            return match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                other => Err(format!("invalid value for {name}: {other}")),
            };
        }
    }
    Ok(false)
}

/// Serves one `/_admin` request.
pub async fn handle(req: Request<HyperBody>, ctx: &Ctx) -> Resp {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let rest = path.strip_prefix("/_admin").unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => Response::new(full("ok\n")),
        (&Method::GET, ["faults"]) => {
            let list = serde_json::to_value(ctx.faults.list()).unwrap_or_default();
            json(StatusCode::OK, &list)
        }
        (&Method::POST, ["faults"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad_request(&e.to_string()),
            };
            match serde_json::from_slice::<FaultRule>(&body) {
                Ok(rule) => {
                    let id = ctx.faults.inject(rule);
                    json(StatusCode::OK, &serde_json::json!({ "id": id }))
                }
                Err(e) => bad_request(&format!("invalid fault rule: {e}")),
            }
        }
        (&Method::DELETE, ["faults"]) => {
            ctx.faults.clear();
            no_content()
        }
        (&Method::POST, ["faults", "release"]) => {
            ctx.faults.release_stalls();
            no_content()
        }
        (&Method::DELETE, ["faults", id]) => match id.parse::<u64>() {
            Ok(id) if ctx.faults.remove(FaultId(id)) => no_content(),
            _ => text_error(StatusCode::NOT_FOUND, "no such fault"),
        },
        (&Method::POST, ["restart"]) => match query_flag(&req, "keep_queues") {
            Ok(keep) => {
                ctx.hub.restart(keep);
                no_content()
            }
            Err(e) => bad_request(&e),
        },
        (&Method::POST, ["purge"]) => {
            ctx.hub.purge();
            no_content()
        }
        (&Method::POST, ["shutdown"]) => {
            ctx.hub.request_stop();
            no_content()
        }
        (&Method::GET, ["sessions", bus]) => {
            let list = ctx
                .hub
                .existing_bus(bus)
                .map(|b| b.sessions())
                .unwrap_or_default();
            json(
                StatusCode::OK,
                &serde_json::to_value(list).unwrap_or_default(),
            )
        }
        (&Method::POST, ["publish", bus]) => {
            let bus = bus.to_string();
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad_request(&e.to_string()),
            };
            let value: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => return bad_request(&format!("invalid JSON: {e}")),
            };
            let inc = match Incoming::from_json(&value) {
                Ok(i) => i,
                Err(e) => return bad_request(&e),
            };
            match inc.validate() {
                Ok(Validated::Heartbeat) => {
                    json(StatusCode::OK, &serde_json::json!({ "seq": null }))
                }
                Ok(Validated::Store(inc)) => {
                    let seq = ctx.hub.bus(&bus).push(*inc, None);
                    json(StatusCode::OK, &serde_json::json!({ "seq": seq }))
                }
                Err(e) => bad_request(e),
            }
        }
        _ => text_error(StatusCode::NOT_FOUND, "unknown admin endpoint"),
    }
}
