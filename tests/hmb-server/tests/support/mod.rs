//! Test support: a small blocking HTTP client, the fixture (`.http`) reader
//! and document comparison with the fixture rules (sids, cids, times and peer
//! addresses excepted).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bson::{Bson, Document};
use serde_json::Value;

/// Where the real-server captures live (copied into the repository: tests/fixtures/README.md).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hmb")
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client with bounded timeouts and no redirects.
pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(5))
        .timeout_read(Duration::from_secs(20))
        .timeout_write(Duration::from_secs(5))
        .build()
}

/// Sends a request and returns the answer whatever its status.
pub fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, String> {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_owned();
            (n, v)
        })
        .collect();
    let content_type = resp.header("content-type").map(str::to_owned);
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| format!("reading body: {e}"))?;
    Ok(Answer {
        status,
        content_type,
        headers,
        body,
    })
}

/// GET that must reach the server.
pub fn get(agent: &ureq::Agent, url: &str) -> Answer {
    request(agent, "GET", url, &[], None).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// POST of JSON that must reach the server.
pub fn post_json(agent: &ureq::Agent, url: &str, body: &str) -> Answer {
    request(
        agent,
        "POST",
        url,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Polls `cond` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- fixtures

/// A request body as recorded.
#[derive(Debug, Clone)]
pub enum ReqBody {
    /// Raw bytes (JSON or empty).
    Raw(Vec<u8>),
    /// BSON documents, recorded decoded.
    Bson(Vec<Document>),
}

/// One recorded exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub notes: String,
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: ReqBody,
    pub status: u16,
    pub resp_content_type: Option<String>,
    pub resp_body: String,
}

/// Reads the exchanges of a fixture (blocks without a response are skipped).
pub fn read_fixture(name: &str) -> Vec<Exchange> {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut blocks = vec![Vec::new()];
    for line in text.lines() {
        if line.len() > 10 && line.chars().all(|c| c == '=') {
            blocks.push(Vec::new());
        } else if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    blocks.iter().filter_map(|b| parse_block(b)).collect()
}

fn parse_block(lines: &[&str]) -> Option<Exchange> {
    let mut i = 0;
    let mut notes = String::new();
    while i < lines.len() && (lines[i].starts_with('#') || lines[i].trim().is_empty()) {
        notes.push_str(lines[i]);
        notes.push('\n');
        i += 1;
    }
    let (method, path) = {
        let mut parts = lines.get(i)?.split_whitespace();
        (parts.next()?.to_owned(), parts.next()?.to_owned())
    };
    i += 1;
    let mut content_type = None;
    let mut content_length = None;
    while i < lines.len() && !lines[i].is_empty() {
        if let Some((k, v)) = lines[i].split_once(": ") {
            match k.to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(v.to_owned()),
                "content-length" => content_length = v.parse::<usize>().ok(),
                _ => {}
            }
        }
        i += 1;
    }
    i += 1;
    let body_start = i;
    while i < lines.len() && !lines[i].starts_with("HTTP/1.1 ") {
        i += 1;
    }
    if i >= lines.len() {
        return None;
    }
    let body_text = lines[body_start..i].join("\n");
    let body = if let Some((_, decoded)) = body_text.split_once("bytes BSON> decoded: ") {
        let v: Value = serde_json::from_str(decoded.trim()).expect("decoded BSON is JSON");
        let docs = match v {
            Value::Array(items) => items.iter().map(json_to_doc).collect(),
            other => vec![json_to_doc(&other)],
        };
        ReqBody::Bson(docs)
    } else {
        let n = content_length.unwrap_or(0).min(body_text.len());
        ReqBody::Raw(body_text.as_bytes()[..n].to_vec())
    };
    let status: u16 = lines[i].split_whitespace().nth(1)?.parse().ok()?;
    i += 1;
    let mut resp_content_type = None;
    while i < lines.len() && !lines[i].is_empty() {
        if let Some((k, v)) = lines[i].split_once(": ") {
            if k.eq_ignore_ascii_case("content-type") {
                resp_content_type = Some(v.to_owned());
            }
        }
        i += 1;
    }
    let resp_body = lines.get(i + 1..).unwrap_or_default().join("\n");
    Some(Exchange {
        notes,
        method,
        path,
        content_type,
        body,
        status,
        resp_content_type,
        resp_body: resp_body.trim_end().to_owned(),
    })
}

/// Python-bson-like encoding of a decoded document: ints as int32 when they
/// fit, `b'..'` strings as binary.
pub fn json_to_doc(v: &Value) -> Document {
    match json_to_bson(v) {
        Bson::Document(d) => d,
        other => panic!("not a document: {other:?}"),
    }
}

fn json_to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(Bson::Int64(i), Bson::Int32),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => match s.strip_prefix("b'").and_then(|r| r.strip_suffix('\'')) {
            Some(py) => Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: python_bytes(py),
            }),
            None => Bson::String(s.clone()),
        },
        Value::Array(a) => Bson::Array(a.iter().map(json_to_bson).collect()),
        Value::Object(o) => Bson::Document(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_bson(v)))
                .collect(),
        ),
    }
}

fn python_bytes(repr: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = repr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() + 1 {
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap_or("00");
            out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Concatenated BSON bytes of documents.
pub fn bson_body(docs: &[Document]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in docs {
        d.to_writer(&mut out).expect("document encodes");
    }
    out
}

/// Splits concatenated BSON documents.
pub fn split_bson(mut body: &[u8]) -> Vec<Document> {
    let mut docs = Vec::new();
    while body.len() >= 4 {
        let n = i32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
        assert!(n >= 5 && n <= body.len(), "bad BSON framing");
        docs.push(Document::from_reader(&body[..n]).expect("valid BSON document"));
        body = &body[n..];
    }
    assert!(body.is_empty(), "trailing bytes after BSON documents");
    docs
}

/// The documents of a recorded BSON response (one JSON line per document).
pub fn recorded_bson_lines(resp_body: &str) -> Vec<Value> {
    resp_body
        .lines()
        .skip_while(|l| l.starts_with('<'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("recorded document line is JSON"))
        .collect()
}

/// Expands the shortened pads of `recv-limit.http` and drops its notes.
pub fn expand_recorded_json(resp_body: &str) -> String {
    resp_body
        .lines()
        .filter(|l| !l.starts_with('('))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\"x*600\"", &format!("\"{}\"", "x".repeat(600)))
}

// ---------------------------------------------------------------- comparison

/// Maps recorded sids to the sids of this run.
#[derive(Debug, Default)]
pub struct Sids(pub HashMap<String, String>);

impl Sids {
    pub fn map_path(&self, path: &str) -> String {
        path.split('/')
            .map(|seg| self.0.get(seg).cloned().unwrap_or_else(|| seg.to_owned()))
            .collect::<Vec<_>>()
            .join("/")
    }
}

fn is_generated_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Compares documents; differences are appended to `errs`.
pub fn compare(expected: &Value, actual: &Value, path: &str, errs: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().chain(a.keys()) {
                if !(e.contains_key(k) && a.contains_key(k)) {
                    errs.push(format!("{path}/{k}: present on one side only"));
                }
            }
            for (k, ev) in e {
                let Some(av) = a.get(k) else { continue };
                let p = format!("{path}/{k}");
                match k.as_str() {
                    "ctime" | "address" => {}
                    "sid" | "cid" => match (ev.as_str(), av.as_str()) {
                        (Some(es), Some(as_)) if is_generated_id(es) => {
                            if !is_generated_id(as_) {
                                errs.push(format!("{p}: {as_:?} is not a generated id"));
                            }
                        }
                        _ => compare(ev, av, &p, errs),
                    },
                    _ => compare(ev, av, &p, errs),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                errs.push(format!(
                    "{path}: {} items expected, {} got",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(ev, av, &format!("{path}[{i}]"), errs);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            if e.as_f64() != a.as_f64() {
                errs.push(format!("{path}: expected {e}, got {a}"));
            }
        }
        (e, a) => {
            if e != a {
                errs.push(format!("{path}: expected {e}, got {a}"));
            }
        }
    }
}

/// The messages of a JSON recv body `{"0":...,"1":...}` in order.
pub fn json_list(v: &Value) -> Option<Vec<Value>> {
    let obj = v.as_object()?;
    (0..obj.len())
        .map(|i| obj.get(&i.to_string()).cloned())
        .collect()
}

/// Compares two message lists: the same messages, the same order within each
/// queue (the order across queues is not defined by the protocol).
pub fn compare_messages(expected: &[Value], actual: &[Value], errs: &mut Vec<String>) {
    let mut strict = Vec::new();
    compare(
        &Value::Array(expected.to_vec()),
        &Value::Array(actual.to_vec()),
        "",
        &mut strict,
    );
    if strict.is_empty() {
        return;
    }
    let key = |m: &Value| {
        m.get("queue")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let group = |list: &[Value]| {
        let mut g: HashMap<String, Vec<Value>> = HashMap::new();
        for m in list {
            g.entry(key(m)).or_default().push(m.clone());
        }
        g
    };
    let (ge, ga) = (group(expected), group(actual));
    let mut regrouped = Vec::new();
    for (q, e) in &ge {
        let a = ga.get(q).cloned().unwrap_or_default();
        compare(
            &Value::Array(e.clone()),
            &Value::Array(a),
            &format!("queue {q:?}"),
            &mut regrouped,
        );
    }
    for q in ga.keys() {
        if !ge.contains_key(q) {
            regrouped.push(format!("queue {q:?}: unexpected messages"));
        }
    }
    if expected.last() != actual.last() && key(expected.last().unwrap_or(&Value::Null)).is_empty() {
        regrouped.push("last message differs".to_owned());
    }
    if !regrouped.is_empty() {
        errs.extend(strict);
    }
}

/// BSON documents as JSON values for comparison.
pub fn docs_to_json(docs: &[Document]) -> Vec<Value> {
    docs.iter()
        .map(|d| Bson::Document(d.clone()).into_relaxed_extjson())
        .collect()
}
