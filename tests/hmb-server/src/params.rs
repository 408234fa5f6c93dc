//! The body of `/open`: session and per-queue subscription parameters.
//!
//! Whole-request errors (400) carry the reference server's decoder texts;
//! per-queue problems (bad topics, bad filter, unknown queue) are not errors
//! here: they are reported per queue in the ack by the bus.

use indexmap::IndexMap;
use serde_json::Value;

use crate::framing::Format;
use crate::gojson;
use crate::message::json_time;
use crate::time::Time;

/// Parameters of `/open`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenParams {
    /// Requested client id; `None` or empty: the server generates one.
    pub cid: Option<String>,
    /// Heartbeat interval in seconds; 0 = no heartbeats.
    pub heartbeat: i64,
    /// Soft cap on bytes per /recv in KB; 0 = default (1024 KB).
    pub recv_limit: i64,
    /// Queues to subscribe, in request order.
    pub queue: IndexMap<String, QueueParams>,
}

/// Per-queue subscription parameters of `/open`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueParams {
    /// Topic patterns (unchecked here).
    pub topics: Option<Vec<String>>,
    /// Start seq; `None` = -1 (only new messages).
    pub seq: Option<i64>,
    /// Last seq to deliver (inclusive).
    pub endseq: Option<i64>,
    /// Window start.
    pub starttime: Option<Time>,
    /// Window end.
    pub endtime: Option<Time>,
    /// The filter object as sent (parsed by the bus, errors are per queue).
    pub filter: Option<Value>,
    /// Maximum lag in messages.
    pub qlen: Option<i64>,
    /// Seconds to wait for a missing seq.
    pub oowait: Option<i64>,
    /// Keep waiting at the end of the queue; default true.
    pub keep: Option<bool>,
    /// SeedLink gateway flag (24-bit seq); accepted and shown, not interpreted.
    pub seedlink: bool,
}

impl OpenParams {
    /// Decodes an /open body in the given format; the error is the 400 text.
    pub fn decode(body: &[u8], format: Format) -> Result<OpenParams, String> {
        let value = match format {
            Format::Json => gojson::first_value(body)?,
            Format::Bson => {
                let doc = bson::Document::from_reader(body)
                    .map_err(|_| "Document is corrupted".to_owned())?;
                bson::Bson::Document(doc).into_relaxed_extjson()
            }
        };
        OpenParams::from_value(&value)
    }

    /// Reads the parameters from a decoded document.
    pub fn from_value(v: &Value) -> Result<OpenParams, String> {
        let Value::Object(obj) = v else {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type main.OpenParam",
                gojson::kind_name(v)
            ));
        };
        let mut p = OpenParams::default();
        for (key, val) in obj {
            if val.is_null() {
                continue;
            }
            match key.as_str() {
                "cid" => {
                    p.cid = Some(
                        val.as_str()
                            .ok_or_else(|| {
                                gojson::field_type_error(val, "OpenParam.cid", "string")
                            })?
                            .to_owned(),
                    )
                }
                "heartbeat" => p.heartbeat = plain_int(val, "OpenParam.heartbeat")?,
                "recv_limit" => p.recv_limit = plain_int(val, "OpenParam.recv_limit")?,
                "queue" => {
                    let Value::Object(queues) = val else {
                        return Err(gojson::field_type_error(
                            val,
                            "OpenParam.queue",
                            "map[string]*main.QueueParam",
                        ));
                    };
                    for (name, qv) in queues {
                        p.queue.insert(name.clone(), QueueParams::from_value(qv)?);
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

impl QueueParams {
    fn from_value(v: &Value) -> Result<QueueParams, String> {
        let obj = match v {
            Value::Null => return Ok(QueueParams::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go value of type main.QueueParam",
                    gojson::kind_name(other)
                ))
            }
        };
        let mut q = QueueParams::default();
        for (key, val) in obj {
            match key.as_str() {
                // seq and endseq take the raw token through strconv.ParseInt.
                "seq" => q.seq = parse_int_token(val)?,
                "endseq" => q.endseq = parse_int_token(val)?,
                _ if val.is_null() => {}
                "topics" => {
                    let list = val.as_array().ok_or_else(|| {
                        gojson::field_type_error(val, "QueueParam.topics", "[]string")
                    })?;
                    let topics = list
                        .iter()
                        .map(|t| {
                            t.as_str().map(str::to_owned).ok_or_else(|| {
                                gojson::field_type_error(t, "QueueParam.topics", "string")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    q.topics = Some(topics);
                }
                "starttime" => q.starttime = Some(json_time(val)?),
                "endtime" => q.endtime = Some(json_time(val)?),
                "filter" => match val {
                    Value::Object(_) => q.filter = Some(val.clone()),
                    _ => {
                        return Err(gojson::field_type_error(
                            val,
                            "QueueParam.filter",
                            "map[string]interface {}",
                        ))
                    }
                },
                "qlen" => q.qlen = Some(plain_int(val, "QueueParam.qlen")?),
                "oowait" => q.oowait = Some(plain_int(val, "QueueParam.oowait")?),
                "keep" => {
                    q.keep =
                        Some(val.as_bool().ok_or_else(|| {
                            gojson::field_type_error(val, "QueueParam.keep", "bool")
                        })?)
                }
                "seedlink" => {
                    q.seedlink = val.as_bool().ok_or_else(|| {
                        gojson::field_type_error(val, "QueueParam.seedlink", "bool")
                    })?
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

fn plain_int(v: &Value, field: &str) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            format!("json: cannot unmarshal number {n} into Go struct field {field} of type int")
        }),
        _ => Err(gojson::field_type_error(v, field, "int")),
    }
}

/// The reference server parses seq/endseq from the raw JSON token with
/// `strconv.ParseInt`; `null` means unset.
fn parse_int_token(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64()),
        other => {
            let raw = other.to_string();
            let quoted = Value::String(raw).to_string();
            Err(format!(
                "strconv.ParseInt: parsing {quoted}: invalid syntax"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<OpenParams, String> {
        OpenParams::decode(s.as_bytes(), Format::Json)
    }

    #[test]
    fn decodes_queues_and_defaults() {
        let p = decode(r#"{"heartbeat":2,"queue":{"A":{"seq":0},"B":{"seq":null,"keep":false}}}"#)
            .expect("valid");
        assert_eq!(p.heartbeat, 2);
        assert_eq!(p.queue["A"].seq, Some(0));
        assert_eq!(p.queue["B"].seq, None);
        assert_eq!(p.queue["B"].keep, Some(false));
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            decode(r#"{"queue":{"SYSTEM_ALERT":{"seq":"5"}}}"#).expect_err("string seq"),
            r#"strconv.ParseInt: parsing "\"5\"": invalid syntax"#
        );
        assert_eq!(decode("").expect_err("empty"), "EOF");
        assert_eq!(
            OpenParams::decode(b"", Format::Bson).expect_err("empty bson"),
            "Document is corrupted"
        );
        assert!(
            decode(r#"{"queue":{"Q":{"starttime":"2024-01-01 00:00:00"}}}"#)
                .expect_err("bad time")
                .starts_with("parsing time")
        );
    }
}
