//! The BSON to JSON mapping, and the JSON writers both BSON readers share: the fast one
//! ([`bson_scan`](crate::bson_scan), for event bodies) and the bson crate's raw reader
//! ([`write_document`] here: the types `bson_scan` leaves to it, and small answers such as the
//! /open ack).
//!
//! ## BSON to JSON
//!
//! | BSON | JSON |
//! |---|---|
//! | double | a number; an integral double below 2^53 is written as an integer (`6`, not `6.0`, as the Go server writes JSON); NaN and infinities as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | int32, int64 | an integer, exact (int64 is not rounded through a double) |
//! | string, boolean, null, document, array | the same |
//! | datetime | `"HermesDatetime(2024-01-01T08:30:00Z)"` (UTC, to the second: the form Hermes's `Event.from_json` reads back; milliseconds are dropped); out of chrono's range: `{"$date":{"$numberLong":"ms"}}` |
//! | binary, generic subtype | `"HermesBytes(<base64>)"`, the Hermes form |
//! | binary, other subtypes | `{"$binary":{"base64":"...","subType":"hh"}}` (Extended JSON) |
//! | ObjectId | `{"$oid":"<24 hex digits>"}` |
//! | anything else (decimal128, timestamp, regex, code, symbol, min/max key, undefined, DBPointer) | MongoDB relaxed Extended JSON (`{"$numberDecimal":"1.5"}`, `{"$timestamp":{"t":..,"i":..}}`, ...) |

use base64::Engine as _;
use bson::raw::{RawBsonRef, RawDocument};

/// Writes a JSON string (a plain copy when nothing needs escaping).
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Writes an integer.
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes a double: integral values below 2^53 as integers, NaN and infinities as strings.
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else if value.abs() < 9_007_199_254_740_992.0 && (value as i64) as f64 == value {
        // Integral (the casts, exact below 2^53, spare a call to `trunc`).
        write_i64(out, value as i64);
    } else {
        // What serde_json writes for a finite f64 (its formatter calls the same), without its
        // serializer around it.
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    }
}

/// Writes a BSON datetime: `"HermesDatetime(2024-01-01T08:30:00Z)"`, the only form Hermes's
/// own `Event.from_json` turns back into a datetime (UTC, to the second: milliseconds are
/// dropped, as Hermes itself keeps seconds), or Extended JSON `{"$date":{"$numberLong":".."}}`
/// outside chrono's range.
pub fn write_datetime(out: &mut Vec<u8>, millis: i64) {
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => write_str(
            out,
            &format!("HermesDatetime({})", t.format("%Y-%m-%dT%H:%M:%SZ")),
        ),
        None => {
            out.extend_from_slice(b"{\"$date\":{\"$numberLong\":\"");
            write_i64(out, millis);
            out.extend_from_slice(b"\"}}");
        }
    }
}

/// Writes BSON binary data: `"HermesBytes(<base64>)"` for the generic subtype, else Extended
/// JSON `{"$binary":{"base64":"..","subType":"hh"}}`.
pub fn write_binary(out: &mut Vec<u8>, subtype: u8, bytes: &[u8]) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    if subtype == 0 {
        write_str(out, &format!("HermesBytes({encoded})"));
    } else {
        out.extend_from_slice(b"{\"$binary\":{\"base64\":");
        write_str(out, &encoded);
        out.extend_from_slice(format!(",\"subType\":\"{subtype:02x}\"}}}}").as_bytes());
    }
}

/// Writes an ObjectId (12 bytes) as Extended JSON `{"$oid":"<24 hex digits>"}`.
pub fn write_object_id(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"{\"$oid\":\"");
    for byte in bytes {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out.extend_from_slice(b"\"}");
}

/// Writes a BSON document as a JSON object.
pub fn write_document(doc: &RawDocument, out: &mut Vec<u8>) -> Result<(), String> {
    out.push(b'{');
    for (i, element) in doc.iter().enumerate() {
        let (key, value) = element.map_err(|e| format!("undecodable BSON: {e}"))?;
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_bson_value(value, out)?;
    }
    out.push(b'}');
    Ok(())
}

/// Writes a BSON value as JSON through the bson crate (see the module docs for the mapping):
/// for the types [`bson_scan`](crate::bson_scan) leaves to it, and for small answers such as the /open ack.
pub fn write_bson_value(value: RawBsonRef<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        RawBsonRef::Double(v) => write_f64(out, v),
        RawBsonRef::String(s) => write_str(out, s),
        RawBsonRef::Document(doc) => write_document(doc, out)?,
        RawBsonRef::Array(array) => {
            out.push(b'[');
            for (i, item) in array.into_iter().enumerate() {
                let item = item.map_err(|e| format!("undecodable BSON: {e}"))?;
                if i > 0 {
                    out.push(b',');
                }
                write_bson_value(item, out)?;
            }
            out.push(b']');
        }
        RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        RawBsonRef::Null | RawBsonRef::Undefined => out.extend_from_slice(b"null"),
        RawBsonRef::Int32(v) => write_i64(out, i64::from(v)),
        RawBsonRef::Int64(v) => write_i64(out, v),
        RawBsonRef::DateTime(dt) => write_datetime(out, dt.timestamp_millis()),
        RawBsonRef::Binary(binary) => write_binary(out, binary.subtype.into(), binary.bytes),
        RawBsonRef::ObjectId(oid) => write_object_id(out, &oid.bytes()),
        other => {
            let bson = bson::Bson::try_from(other.to_raw_bson())
                .map_err(|e| format!("undecodable BSON: {e}"))?;
            let _ = serde_json::to_writer(&mut *out, &bson.into_relaxed_extjson());
        }
    }
    Ok(())
}

/// Converts a whole BSON document to JSON text (for answers such as the /open ack).
pub fn bson_to_json_text(bytes: &[u8]) -> Result<String, String> {
    let doc = RawDocument::from_bytes(bytes).map_err(|e| format!("undecodable BSON: {e}"))?;
    let mut out = Vec::with_capacity(bytes.len() + 16);
    write_document(doc, &mut out)?;
    String::from_utf8(out).map_err(|e| format!("BSON to JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::spec::BinarySubtype;
    use bson::{doc, Binary, Bson};

    fn to_json(doc: &bson::Document) -> serde_json::Value {
        let bytes = bson::to_vec(doc).unwrap();
        serde_json::from_str(&bson_to_json_text(&bytes).unwrap()).unwrap()
    }

    #[test]
    fn doubles_are_written_as_serde_json_writes_them() {
        for value in [
            48.58,
            7.75,
            142.5,
            -0.1,
            1e-7,
            1.5e300,
            f64::MIN_POSITIVE,
            f64::MAX,
            9_007_199_254_740_993.0,
            -2.5e-310,
            0.30000000000000004,
            9_007_199_254_740_992.0,
        ] {
            let mut out = Vec::new();
            write_f64(&mut out, value);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&value).unwrap(),
                "{value:e}"
            );
        }
        for bits in (0..4096u64).map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) {
            let value = f64::from_bits(bits);
            if value.is_finite() {
                let mut out = Vec::new();
                write_f64(&mut out, value);
                let written = String::from_utf8(out).unwrap();
                let read: f64 = written.parse().unwrap();
                assert!(read == value, "{value:e} written {written}");
                if value.abs() >= 9_007_199_254_740_992.0 || value.fract() != 0.0 {
                    assert_eq!(written, serde_json::to_string(&value).unwrap());
                }
            }
        }
        // Integral doubles below 2^53 as integers (Hermes's JSON has no `6.0`).
        for (value, text) in [
            (6.0, "6"),
            (-0.0, "0"),
            (-3.0, "-3"),
            (9_007_199_254_740_991.0, "9007199254740991"),
        ] {
            let mut out = Vec::new();
            write_f64(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn bson_types_map_faithfully() {
        let oid = bson::oid::ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap();
        let d = doc! {
            "double": 2.5, "whole": 6.0, "int32": 7_i32, "int64": 9_007_199_254_740_993_i64,
            "when": bson::DateTime::from_millis(1_704_097_800_123),
            "bytes": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2] },
            "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![1; 16] },
            "oid": oid, "nan": f64::NAN, "list": [1_i32, "a", Bson::Null],
            "dec": Bson::Decimal128("1.5".parse().unwrap()),
        };
        let json = to_json(&d);
        assert_eq!(json["double"], 2.5);
        assert_eq!(json["whole"].to_string(), "6");
        assert_eq!(json["int64"].to_string(), "9007199254740993");
        // The form Hermes reads back: to the second (its regex takes no fraction).
        assert_eq!(json["when"], "HermesDatetime(2024-01-01T08:30:00Z)");
        assert_eq!(json["bytes"], "HermesBytes(AAEC)");
        assert_eq!(json["uuid"]["$binary"]["subType"], "04");
        assert_eq!(json["oid"]["$oid"], "65a1b2c3d4e5f60718293a4b");
        assert_eq!(json["nan"], "NaN");
        assert_eq!(json["list"], serde_json::json!([1, "a", null]));
        assert_eq!(json["dec"]["$numberDecimal"], "1.5");
    }
}
