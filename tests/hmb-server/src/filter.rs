//! Subscription filters: the MongoDB-like subset of the protocol.
//!
//! A filter is an object; several keys are an implicit AND. Logical keys:
//! `$and`, `$or`, `$nor` (lists of filters), `$not` (one filter). Other keys are
//! field paths: only `type`, `sender` and `data.<a>.<b>...` are visible. Field
//! values are a plain value (`$eq`) or an object of operators `$eq`, `$ne`,
//! `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$nin`, `$exists`. Arrays in the data
//! are searched element by element. Numbers compare as doubles, strings
//! lexically, never across types. Parse errors are the per-queue texts of the
//! /open ack (`unknown operator: $regex`, `$in expects list argument`, ...).

use bson::Bson;
use serde_json::Value;

use crate::message::Message;

/// A parsed filter, ready to test messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Nor(Vec<Expr>),
    Not(Box<Expr>),
    Field(String, Op),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Scalar),
    Ne(Scalar),
    Cmp(Cmp, Scalar),
    In(Vec<Scalar>),
    Nin(Vec<Scalar>),
    Exists(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A filter argument. Lists only appear as arguments of `$in`/`$nin` or as a
/// plain value (which then never equals a single data value).
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Null,
    Bool(bool),
    Str(String),
    Num(f64),
    List(Vec<Scalar>),
}

impl Scalar {
    fn from_json(v: &Value) -> Result<Scalar, String> {
        Ok(match v {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::String(s) => Scalar::Str(s.clone()),
            Value::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::Array(a) => {
                Scalar::List(a.iter().map(Scalar::from_json).collect::<Result<_, _>>()?)
            }
            Value::Object(_) => return Err(format!("unexpected value: {v}")),
        })
    }

    /// Equality of a data value with this argument (same kind only).
    fn equals(&self, d: &Bson) -> bool {
        match (self, d) {
            (Scalar::Null, Bson::Null) => true,
            (Scalar::Bool(a), Bson::Boolean(b)) => a == b,
            (Scalar::Str(a), Bson::String(b)) => a == b,
            (Scalar::Num(a), d) => number(d) == Some(*a),
            _ => false,
        }
    }
}

fn number(d: &Bson) -> Option<f64> {
    match d {
        Bson::Double(f) => Some(*f),
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        _ => None,
    }
}

impl Filter {
    /// Parses a filter object. `{}` or null means no filter (`Ok(None)`).
    pub fn parse(v: &Value) -> Result<Option<Filter>, String> {
        match v {
            Value::Null => Ok(None),
            Value::Object(o) if o.is_empty() => Ok(None),
            Value::Object(_) => Ok(Some(Filter {
                expr: parse_expr(v)?,
            })),
            other => Err(format!("unexpected expression: {other}")),
        }
    }

    /// Whether the message passes.
    pub fn matches(&self, m: &Message) -> bool {
        self.expr.eval(m)
    }
}

fn parse_list(v: &Value, op: &str) -> Result<Vec<Expr>, String> {
    let Value::Array(items) = v else {
        return Err(format!("{op} requires a list"));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(_) => parse_expr(item),
            other => Err(format!("unexpected expression: {other}")),
        })
        .collect()
}

fn parse_expr(v: &Value) -> Result<Expr, String> {
    let Value::Object(obj) = v else {
        return Err(format!("unexpected expression: {v}"));
    };
    let mut exprs = Vec::with_capacity(obj.len());
    for (key, val) in obj {
        exprs.push(match key.as_str() {
            "$and" => Expr::And(parse_list(val, "$and")?),
            "$or" => Expr::Or(parse_list(val, "$or")?),
            "$nor" => Expr::Nor(parse_list(val, "$nor")?),
            "$not" => match val {
                Value::Object(_) => Expr::Not(Box::new(parse_expr(val)?)),
                _ => return Err("$not requires a dict".to_owned()),
            },
            _ => parse_field(key, val)?,
        });
    }
    match exprs.len() {
        0 => Err("invalid filter expression".to_owned()),
        1 => Ok(exprs.remove(0)),
        _ => Ok(Expr::And(exprs)),
    }
}

fn parse_field(field: &str, v: &Value) -> Result<Expr, String> {
    let Value::Object(ops) = v else {
        return Ok(Expr::Field(field.to_owned(), Op::Eq(Scalar::from_json(v)?)));
    };
    let mut exprs = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let arg = Scalar::from_json(arg)?;
        let cmp = |c: Cmp, arg: Scalar| match arg {
            Scalar::Num(_) | Scalar::Str(_) => Ok(Op::Cmp(c, arg)),
            _ => Err(format!("{op} expects numeric or string argument")),
        };
        let op = match op.as_str() {
            "$eq" | "$ne" if matches!(arg, Scalar::List(_)) => {
                return Err(format!("{op} does not support list"))
            }
            "$eq" => Op::Eq(arg),
            "$ne" => Op::Ne(arg),
            "$gt" => cmp(Cmp::Gt, arg)?,
            "$gte" => cmp(Cmp::Gte, arg)?,
            "$lt" => cmp(Cmp::Lt, arg)?,
            "$lte" => cmp(Cmp::Lte, arg)?,
            "$in" | "$nin" => {
                let Scalar::List(list) = arg else {
                    return Err(format!("{op} expects list argument"));
                };
                if op == "$in" {
                    Op::In(list)
                } else {
                    Op::Nin(list)
                }
            }
            "$exists" => match arg {
                Scalar::Bool(b) => Op::Exists(b),
                _ => return Err("$exists expects boolean argument".to_owned()),
            },
            _ => return Err(format!("unknown operator: {op}")),
        };
        exprs.push(Expr::Field(field.to_owned(), op));
    }
    match exprs.len() {
        0 => Err("invalid filter expression".to_owned()),
        1 => Ok(exprs.remove(0)),
        _ => Ok(Expr::And(exprs)),
    }
}

/// The values a field path designates in a message (several when arrays are
/// crossed; none when the field is missing or not visible).
fn extract(m: &Message, field: &str) -> Vec<Bson> {
    let mut parts = field.split('.');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let mut out = Vec::new();
    match (first, rest.is_empty()) {
        ("type", true) => out.push(Bson::String(m.kind.clone())),
        ("sender", true) => out.push(Bson::String(m.sender.clone())),
        ("data", false) => {
            if let Some(d) = &m.data {
                descend(d, &rest, &mut out);
            }
        }
        _ => {}
    }
    out
}

fn descend(d: &Bson, path: &[&str], out: &mut Vec<Bson>) {
    let (Bson::Document(doc), Some((key, rest))) = (d, path.split_first()) else {
        return;
    };
    let Some(v) = doc.get(*key) else {
        return;
    };
    match (v, rest.is_empty()) {
        (Bson::Array(items), true) => out.extend(items.iter().cloned()),
        (v, true) => out.push(v.clone()),
        (Bson::Array(items), false) => items.iter().for_each(|i| descend(i, rest, out)),
        (v, false) => descend(v, rest, out),
    }
}

impl Expr {
    fn eval(&self, m: &Message) -> bool {
        match self {
            Expr::And(list) => list.iter().all(|e| e.eval(m)),
            Expr::Or(list) => list.iter().any(|e| e.eval(m)),
            Expr::Nor(list) => !list.iter().any(|e| e.eval(m)),
            Expr::Not(e) => !e.eval(m),
            Expr::Field(field, op) => {
                let values = extract(m, field);
                match op {
                    Op::Eq(arg) => values.iter().any(|d| arg.equals(d)),
                    Op::Ne(arg) => !values.iter().any(|d| arg.equals(d)),
                    Op::In(list) => values.iter().any(|d| list.iter().any(|a| a.equals(d))),
                    Op::Nin(list) => !values.iter().any(|d| list.iter().any(|a| a.equals(d))),
                    Op::Exists(b) => values.is_empty() != *b,
                    Op::Cmp(c, arg) => values.iter().any(|d| compare(*c, d, arg)),
                }
            }
        }
    }
}

fn compare(c: Cmp, d: &Bson, arg: &Scalar) -> bool {
    let ord = match (d, arg) {
        (Bson::String(a), Scalar::Str(b)) => a.as_str().partial_cmp(b.as_str()),
        (d, Scalar::Num(b)) => number(d).and_then(|a| a.partial_cmp(b)),
        _ => None,
    };
    let Some(ord) = ord else {
        return false;
    };
    match c {
        Cmp::Gt => ord.is_gt(),
        Cmp::Gte => ord.is_ge(),
        Cmp::Lt => ord.is_lt(),
        Cmp::Lte => ord.is_le(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{json_to_bson, Message};
    use serde_json::json;

    fn msg(kind: &str, data: Value) -> Message {
        Message {
            kind: kind.into(),
            queue: "Q".into(),
            sender: "s1".into(),
            topic: "T".into(),
            data: Some(json_to_bson(&data)),
            ..Message::default()
        }
    }

    fn f(v: Value) -> Filter {
        Filter::parse(&v)
            .expect("valid filter")
            .expect("non-empty filter")
    }

    fn err(v: Value) -> String {
        Filter::parse(&v).expect_err("invalid filter")
    }

    #[test]
    fn implicit_and_with_comparison_and_in() {
        let filter = f(json!({"data.mag": {"$gte": 5}, "type": {"$in": ["NOTICE", "ALERT"]}}));
        assert!(!filter.matches(&msg("NOTICE", json!({"mag": 3.5}))));
        assert!(filter.matches(&msg("NOTICE", json!({"mag": 5.1}))));
        assert!(filter.matches(&msg("ALERT", json!({"mag": 6}))));
        assert!(!filter.matches(&msg("OTHER", json!({"mag": 6}))));
    }

    #[test]
    fn or_and_array_elements() {
        let filter = f(json!({"$or": [{"data.tags": "b"}, {"data.text": "live"}]}));
        assert!(filter.matches(&msg("A", json!({"tags": ["a", "b"]}))));
        assert!(filter.matches(&msg("A", json!({"text": "live"}))));
        assert!(!filter.matches(&msg("A", json!({"tags": ["a"], "text": "x"}))));
        let nested = f(json!({"data.items.v": 2}));
        assert!(nested.matches(&msg("A", json!({"items": [{"v": 1}, {"v": 2}]}))));
    }

    #[test]
    fn missing_fields_and_invisible_fields() {
        let m = msg("A", json!({"x": null}));
        assert!(f(json!({"data.y": {"$ne": 1}})).matches(&m));
        assert!(f(json!({"data.y": {"$nin": [1]}})).matches(&m));
        assert!(!f(json!({"data.y": {"$in": [1]}})).matches(&m));
        assert!(!f(json!({"data.y": {"$gt": 0}})).matches(&m));
        assert!(f(json!({"data.y": {"$exists": false}})).matches(&m));
        assert!(f(json!({"data.x": {"$exists": true}})).matches(&m));
        assert!(f(json!({"data.x": null})).matches(&m));
        assert!(!f(json!({"data.y": null})).matches(&m));
        assert!(!f(json!({"queue": "Q"})).matches(&m));
        assert!(!f(json!({"topic": "T"})).matches(&m));
        assert!(f(json!({"sender": "s1"})).matches(&m));
    }

    #[test]
    fn logical_operators() {
        let m = msg("A", json!({"n": 3}));
        assert!(f(json!({"$not": {"data.n": 4}})).matches(&m));
        assert!(f(json!({"$nor": [{"data.n": 4}, {"type": "B"}]})).matches(&m));
        assert!(f(json!({"$and": [{"data.n": {"$gt": 2, "$lt": 4}}, {"type": "A"}]})).matches(&m));
        assert!(
            !f(json!({"data.n": {"$gt": "2"}})).matches(&m),
            "no cross-type compare"
        );
        assert!(f(json!({"data.s": {"$lt": "b"}})).matches(&msg("A", json!({"s": "a"}))));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            err(json!({"data.x": {"$regex": "^a"}})),
            "unknown operator: $regex"
        );
        assert_eq!(
            err(json!({"data.x": {"$in": 5}})),
            "$in expects list argument"
        );
        assert_eq!(
            err(json!({"data.x": {"$nin": "a"}})),
            "$nin expects list argument"
        );
        assert_eq!(err(json!({"$and": {}})), "$and requires a list");
        assert_eq!(err(json!({"$not": []})), "$not requires a dict");
        assert_eq!(
            err(json!({"data.x": {"$gt": true}})),
            "$gt expects numeric or string argument"
        );
        assert_eq!(
            err(json!({"data.x": {"$exists": 1}})),
            "$exists expects boolean argument"
        );
        assert_eq!(
            err(json!({"data.x": {"$ne": [1]}})),
            "$ne does not support list"
        );
        assert_eq!(Filter::parse(&json!({})), Ok(None));
    }
}
