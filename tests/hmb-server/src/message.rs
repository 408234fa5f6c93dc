//! Messages: their fields, how they are read from /send bodies and how they are
//! written in JSON and BSON.
//!
//! Message data is held as BSON, the richer of the two formats. JSON numbers
//! become doubles (the reference server holds them as Go `float64`), so a
//! message sent as JSON and read through a BSON session carries doubles.

use base64::Engine as _;
use bson::{Bson, Document};
use serde_json::{Map, Number, Value};

use crate::gojson;
use crate::time::{self, Time};

/// Server-generated heartbeat, `{"type":"HEARTBEAT"}`.
pub const HEARTBEAT: &str = "HEARTBEAT";
/// End of all subscriptions, `{"type":"EOF"}`.
pub const EOF: &str = "EOF";
/// Announcement of a new queue on `ANNOUNCEMENT`.
pub const NEW_QUEUE: &str = "NEW_QUEUE";
/// The queue every bus has from the start.
pub const ANNOUNCEMENT: &str = "ANNOUNCEMENT";

/// A message as stored in a queue and delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// `type`.
    pub kind: String,
    /// `queue`.
    pub queue: String,
    /// `sender`: cid of the sending session; empty for server messages.
    pub sender: String,
    /// `topic`; empty when unset.
    pub topic: String,
    /// `seq`, assigned by the queue.
    pub seq: i64,
    /// `starttime`.
    pub starttime: Option<Time>,
    /// `endtime`.
    pub endtime: Option<Time>,
    /// Legacy field carried through.
    pub sc_message_type: Option<i64>,
    /// Legacy field carried through.
    pub sc_content_type: Option<i64>,
    /// Legacy field carried through.
    pub gdacs: Option<Document>,
    /// `data`: any value; `None` when absent or null.
    pub data: Option<Bson>,
    /// `data` exactly as a BSON sender wrote it (element type, value bytes), kept only when it
    /// holds strings that are not UTF-8: the reference server (Go strings are bytes) stores
    /// and writes them back as they are in BSON, while its JSON encoder writes U+FFFD for them
    /// (`data` holds that lossy form, also for filters).
    pub data_raw: Option<(u8, Vec<u8>)>,
}

/// A message read from a /send body (or handed to `publish`), before the queue
/// gives it a seq.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Incoming {
    /// The fields; `message.seq` is ignored.
    pub message: Message,
    /// The seq supplied by the sender (out-of-order delivery), if any.
    pub seq: Option<i64>,
}

/// What a validated incoming message asks for.
#[derive(Debug)]
pub enum Validated {
    /// A client keep-alive: accepted and ignored.
    Heartbeat,
    /// A message to store.
    Store(Box<Incoming>),
}

impl Incoming {
    /// A message of type `kind` for `queue`, everything else unset.
    pub fn new(kind: &str, queue: &str) -> Incoming {
        Incoming {
            message: Message {
                kind: kind.to_owned(),
                queue: queue.to_owned(),
                ..Message::default()
            },
            seq: None,
        }
    }

    /// Sets the topic.
    pub fn topic(mut self, topic: &str) -> Incoming {
        self.message.topic = topic.to_owned();
        self
    }

    /// Sets the sender (used by `publish`; /send overrides it with the cid).
    pub fn sender(mut self, sender: &str) -> Incoming {
        self.message.sender = sender.to_owned();
        self
    }

    /// Supplies the seq (out-of-order delivery).
    pub fn seq(mut self, seq: i64) -> Incoming {
        self.seq = Some(seq);
        self
    }

    /// Sets the data from JSON, with JSON semantics (numbers become doubles).
    pub fn data(mut self, data: Value) -> Incoming {
        self.message.data = Some(json_to_bson(&data));
        self
    }

    /// Sets the data as BSON, kept as is.
    pub fn data_bson(mut self, data: Bson) -> Incoming {
        self.message.data = Some(data);
        self
    }

    /// Sets starttime and endtime.
    pub fn times(mut self, starttime: Option<Time>, endtime: Option<Time>) -> Incoming {
        self.message.starttime = starttime;
        self.message.endtime = endtime;
        self
    }

    /// Applies the server's checks; the error is the 400 text.
    pub fn validate(self) -> Result<Validated, &'static str> {
        let m = &self.message;
        if m.kind == HEARTBEAT {
            return Ok(Validated::Heartbeat);
        }
        if m.kind.is_empty() || m.kind == EOF || m.kind == NEW_QUEUE {
            return Err("invalid 'type'");
        }
        if m.queue.is_empty() {
            return Err("invalid 'queue'");
        }
        if !m
            .topic
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_')
        {
            return Err("invalid 'topic'");
        }
        if self.seq.is_some_and(|s| s < 0) {
            return Err("invalid 'seq'");
        }
        Ok(Validated::Store(Box::new(self)))
    }

    /// Reads a message from a decoded JSON object; the error is the decoder text
    /// (without the `invalid JSON data: ` prefix).
    pub fn from_json(v: &Value) -> Result<Incoming, String> {
        let Value::Object(obj) = v else {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type main.Message",
                gojson::kind_name(v)
            ));
        };
        let mut inc = Incoming::default();
        for (key, val) in obj {
            if val.is_null() {
                continue;
            }
            let m = &mut inc.message;
            match key.as_str() {
                "type" => m.kind = json_string(val, "Message.type")?,
                "queue" => m.queue = json_string(val, "Message.queue")?,
                "sender" => m.sender = json_string(val, "Message.sender")?,
                "topic" => m.topic = json_string(val, "Message.topic")?,
                "seq" => inc.seq = Some(json_int(val, "Message.seq", "int64")?),
                "starttime" => m.starttime = Some(json_time(val)?),
                "endtime" => m.endtime = Some(json_time(val)?),
                "scMessageType" => {
                    m.sc_message_type = Some(json_int(val, "Message.scMessageType", "int")?)
                }
                "scContentType" => {
                    m.sc_content_type = Some(json_int(val, "Message.scContentType", "int")?)
                }
                "gdacs" => match json_to_bson(val) {
                    Bson::Document(d) => m.gdacs = Some(d),
                    _ => {
                        return Err(gojson::field_type_error(
                            val,
                            "Message.gdacs",
                            "map[string]interface {}",
                        ))
                    }
                },
                "data" => m.data = Some(json_to_bson(val)),
                _ => {}
            }
        }
        Ok(inc)
    }

    /// Reads a message from a BSON document decoded with U+FFFD for strings that are not
    /// UTF-8 (see [`Message::data_raw`]): `raw` is the document as sent.
    pub fn from_lossy_bson(doc: &Document, raw: &[u8]) -> Result<Incoming, String> {
        let mut inc = Incoming::from_bson(doc)?;
        if inc.message.data.is_some() {
            inc.message.data_raw = raw_element(raw, "data");
        }
        Ok(inc)
    }

    /// Reads a message from a BSON document; the error is the decoder text
    /// (without the `invalid BSON data: ` prefix).
    pub fn from_bson(doc: &Document) -> Result<Incoming, String> {
        let mut inc = Incoming::default();
        for (key, val) in doc {
            if matches!(val, Bson::Null) {
                continue;
            }
            let m = &mut inc.message;
            match key.as_str() {
                "type" => m.kind = bson_string(key, val)?,
                "queue" => m.queue = bson_string(key, val)?,
                "sender" => m.sender = bson_string(key, val)?,
                "topic" => m.topic = bson_string(key, val)?,
                "seq" => inc.seq = Some(bson_int(key, val)?),
                "starttime" => m.starttime = Some(bson_time(key, val)?),
                "endtime" => m.endtime = Some(bson_time(key, val)?),
                "scMessageType" => m.sc_message_type = Some(bson_int(key, val)?),
                "scContentType" => m.sc_content_type = Some(bson_int(key, val)?),
                "gdacs" => match val {
                    Bson::Document(d) => m.gdacs = Some(d.clone()),
                    _ => return Err(format!("BSON field '{key}' must be a document")),
                },
                "data" => m.data = Some(val.clone()),
                _ => {}
            }
        }
        Ok(inc)
    }
}

/// The type and value bytes of the top-level element `name` of a BSON document, its strings
/// not checked for UTF-8.
fn raw_element(raw: &[u8], name: &str) -> Option<(u8, Vec<u8>)> {
    let doc = bson::RawDocument::from_bytes(raw).ok()?;
    let mut at = 4;
    for element in doc.iter_elements() {
        let element = element.ok()?;
        let value = at + 1 + element.key().len() + 1;
        let end = value + element.len();
        if element.key() == name {
            return Some((*raw.get(at)?, raw.get(value..end)?.to_vec()));
        }
        at = end;
    }
    None
}

fn json_string(v: &Value, field: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| gojson::field_type_error(v, field, "string"))
}

fn json_int(v: &Value, field: &str, ty: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("json: cannot unmarshal number {n} into Go struct field {field} of type {ty}")
        }),
        _ => Err(gojson::field_type_error(v, field, ty)),
    }
}

/// A time in a JSON body: the raw token goes through the Go-style parser.
pub(crate) fn json_time(v: &Value) -> Result<Time, String> {
    time::parse_json_token(&v.to_string()).map_err(|e| e.to_string())
}

fn bson_string(key: &str, v: &Bson) -> Result<String, String> {
    match v {
        Bson::String(s) => Ok(s.clone()),
        other => Err(format!(
            "BSON field '{key}' must be a string, not {:?}",
            other.element_type()
        )),
    }
}

fn bson_int(key: &str, v: &Bson) -> Result<i64, String> {
    match v {
        Bson::Int32(i) => Ok(i64::from(*i)),
        Bson::Int64(i) => Ok(*i),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(*f as i64),
        other => Err(format!(
            "BSON field '{key}' must be an integer, not {:?}",
            other.element_type()
        )),
    }
}

fn bson_time(key: &str, v: &Bson) -> Result<Time, String> {
    match v {
        Bson::String(s) => time::parse(s).map_err(|e| e.to_string()),
        other => Err(format!(
            "BSON field '{key}' must be a time string, not {:?}",
            other.element_type()
        )),
    }
}

/// Converts decoded JSON into BSON the way the reference server holds it:
/// numbers become doubles, objects documents.
pub fn json_to_bson(v: &Value) -> Bson {
    match v {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(a) => Bson::Array(a.iter().map(json_to_bson).collect()),
        Value::Object(o) => Bson::Document(
            o.iter()
                .map(|(k, v)| (k.clone(), json_to_bson(v)))
                .collect(),
        ),
    }
}

/// A value that JSON cannot carry (NaN or an infinite double).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unencodable;

fn json_number(f: f64) -> Result<Value, Unencodable> {
    if !f.is_finite() {
        return Err(Unencodable);
    }
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return Ok(Value::from(f as i64));
    }
    Number::from_f64(f).map(Value::Number).ok_or(Unencodable)
}

/// Converts BSON data to JSON as the reference server writes it (Go's
/// encoding of the decoded values: object keys sorted, bytes as base64).
pub fn bson_to_json(b: &Bson) -> Result<Value, Unencodable> {
    Ok(match b {
        Bson::Double(f) => json_number(*f)?,
        Bson::String(s) => Value::String(s.clone()),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect::<Result<_, _>>()?),
        Bson::Document(d) => {
            // Go writes map keys sorted.
            let mut entries: Vec<(&String, &Bson)> = d.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((k.clone(), bson_to_json(v)?)))
                    .collect::<Result<Map<_, _>, _>>()?,
            )
        }
        Bson::Boolean(v) => Value::Bool(*v),
        Bson::Null | Bson::Undefined | Bson::MinKey | Bson::MaxKey => Value::Null,
        Bson::Int32(i) => Value::from(*i),
        Bson::Int64(i) => Value::from(*i),
        Bson::Binary(bin) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&bin.bytes))
        }
        Bson::DateTime(dt) => Value::String(
            dt.try_to_rfc3339_string()
                .unwrap_or_else(|_| dt.timestamp_millis().to_string()),
        ),
        Bson::ObjectId(id) => Value::String(id.to_hex()),
        Bson::Timestamp(ts) => Value::from(u64::from(ts.time) << 32 | u64::from(ts.increment)),
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Symbol(s) | Bson::JavaScriptCode(s) => Value::String(s.clone()),
        Bson::RegularExpression(re) => Value::String(re.pattern.clone()),
        Bson::JavaScriptCodeWithScope(c) => Value::String(c.code.clone()),
        Bson::DbPointer(_) => Value::Null,
    })
}

impl Message {
    /// `{"type":"HEARTBEAT"}` or `{"type":"EOF"}`.
    pub fn control(kind: &str) -> Message {
        Message {
            kind: kind.to_owned(),
            ..Message::default()
        }
    }

    fn is_control(&self) -> bool {
        self.queue.is_empty() && (self.kind == HEARTBEAT || self.kind == EOF)
    }

    /// The JSON text of the message with the reference field order; fails when
    /// the data holds a value JSON cannot carry.
    pub fn to_json(&self) -> Result<String, Unencodable> {
        let mut out = String::with_capacity(128);
        out.push_str("{\"type\":");
        out.push_str(&Value::String(self.kind.clone()).to_string());
        if self.is_control() {
            out.push('}');
            return Ok(out);
        }
        let mut field = |name: &str, value: Value| {
            out.push_str(",\"");
            out.push_str(name);
            out.push_str("\":");
            out.push_str(&value.to_string());
        };
        field("queue", Value::String(self.queue.clone()));
        if !self.sender.is_empty() {
            field("sender", Value::String(self.sender.clone()));
        }
        if !self.topic.is_empty() {
            field("topic", Value::String(self.topic.clone()));
        }
        field("seq", Value::from(self.seq));
        if let Some(t) = &self.starttime {
            field("starttime", Value::String(time::format(t)));
        }
        if let Some(t) = &self.endtime {
            field("endtime", Value::String(time::format(t)));
        }
        if let Some(v) = self.sc_message_type {
            field("scMessageType", Value::from(v));
        }
        if let Some(v) = self.sc_content_type {
            field("scContentType", Value::from(v));
        }
        if let Some(d) = &self.gdacs {
            field("gdacs", bson_to_json(&Bson::Document(d.clone()))?);
        }
        if let Some(d) = &self.data {
            if !matches!(d, Bson::Null) {
                field("data", bson_to_json(d)?);
            }
        }
        out.push('}');
        Ok(out)
    }

    /// The message as one BSON document, fields in the reference order.
    pub fn to_bson(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("type", self.kind.clone());
        if self.is_control() {
            return doc;
        }
        doc.insert("queue", self.queue.clone());
        if !self.sender.is_empty() {
            doc.insert("sender", self.sender.clone());
        }
        if !self.topic.is_empty() {
            doc.insert("topic", self.topic.clone());
        }
        doc.insert("seq", self.seq);
        if let Some(t) = &self.starttime {
            doc.insert("starttime", time::format(t));
        }
        if let Some(t) = &self.endtime {
            doc.insert("endtime", time::format(t));
        }
        if let Some(v) = self.sc_message_type {
            doc.insert("scMessageType", v);
        }
        if let Some(v) = self.sc_content_type {
            doc.insert("scContentType", v);
        }
        if let Some(d) = &self.gdacs {
            doc.insert("gdacs", d.clone());
        }
        if let Some(d) = &self.data {
            if !matches!(d, Bson::Null) && self.data_raw.is_none() {
                doc.insert("data", d.clone());
            }
        }
        doc
    }

    /// The message as the bytes of one BSON document ([`to_bson`](Self::to_bson), with `data`
    /// as sent when it was kept raw: it is the last field).
    pub fn to_bson_bytes(&self) -> Vec<u8> {
        let mut out = crate::framing::bson_bytes(&self.to_bson());
        if let (Some((kind, value)), false) = (&self.data_raw, self.is_control()) {
            if out.pop().is_some() {
                out.push(*kind);
                out.extend_from_slice(b"data\0");
                out.extend_from_slice(value);
                out.push(0);
                let len = (out.len() as i32).to_le_bytes();
                out[..4].copy_from_slice(&len);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_output_has_reference_order_and_number_style() {
        let inc = Incoming::from_json(&json!({
            "type": "ALERT", "queue": "SYSTEM_ALERT", "topic": "ORIGIN",
            "data": {"text": "third", "mag": 6.0, "tags": ["a", "b"]}
        }))
        .expect("valid message");
        let mut m = inc.message;
        m.sender = "sender1".into();
        m.seq = 2;
        assert_eq!(
            m.to_json().expect("encodable"),
            r#"{"type":"ALERT","queue":"SYSTEM_ALERT","sender":"sender1","topic":"ORIGIN","seq":2,"data":{"mag":6,"tags":["a","b"],"text":"third"}}"#
        );
        assert_eq!(
            Message::control(EOF).to_json().expect("eof"),
            r#"{"type":"EOF"}"#
        );
        let doc = m.to_bson();
        assert_eq!(
            doc.get_document("data").expect("data").get_f64("mag"),
            Ok(6.0)
        );
    }

    #[test]
    fn validation_texts() {
        let check = |v: Value| {
            Incoming::from_json(&v)
                .expect("decodes")
                .validate()
                .map(|_| ())
        };
        assert_eq!(
            check(json!({"type":"EOF","queue":"Q"})),
            Err("invalid 'type'")
        );
        assert_eq!(
            check(json!({"type":"X","queue":""})),
            Err("invalid 'queue'")
        );
        assert_eq!(
            check(json!({"type":"X","queue":"Q","topic":"A-B"})),
            Err("invalid 'topic'")
        );
        assert_eq!(
            check(json!({"type":"X","queue":"Q","seq":-5})),
            Err("invalid 'seq'")
        );
        assert_eq!(check(json!({"type":"HEARTBEAT"})), Ok(()));
        assert_eq!(
            Incoming::from_json(&json!("X")).expect_err("string"),
            "json: cannot unmarshal string into Go value of type main.Message"
        );
    }

    #[test]
    fn nan_is_unencodable() {
        let m = Message {
            kind: "X".into(),
            queue: "Q".into(),
            data: Some(Bson::Double(f64::NAN)),
            ..Message::default()
        };
        assert_eq!(m.to_json(), Err(Unencodable));
    }
}
