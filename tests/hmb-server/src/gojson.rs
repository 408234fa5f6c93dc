//! JSON decoding with the reference server's error texts.
//!
//! The reference server decodes bodies with Go's `encoding/json` `Decoder`,
//! whose messages end up verbatim in 400 bodies (`EOF`, `unexpected EOF`,
//! `invalid character 'b' looking for beginning of object key string`, ...).
//! serde_json does the parsing; this module only rewords its errors.

use serde_json::Value;

/// Decodes the JSON values of a body one after the other, like a Go `Decoder`:
/// each item is a value or the Go-style text of the error that stops decoding.
pub fn values(input: &[u8]) -> impl Iterator<Item = Result<Value, String>> + '_ {
    let mut stream = serde_json::Deserializer::from_slice(input).into_iter::<Value>();
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let offset = stream.byte_offset();
        match stream.next()? {
            Ok(v) => Some(Ok(v)),
            Err(e) => {
                failed = true;
                Some(Err(go_error(input, offset, &e)))
            }
        }
    })
}

/// Decodes the first JSON value of a body (trailing data is ignored, as by a Go
/// `Decoder`). An empty body gives `EOF`.
pub fn first_value(input: &[u8]) -> Result<Value, String> {
    values(input)
        .next()
        .unwrap_or_else(|| Err("EOF".to_owned()))
}

/// Go's `quoteChar` from `encoding/json`.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_owned(),
        b'"' => "'\"'".to_owned(),
        b'\n' => r"'\n'".to_owned(),
        b'\r' => r"'\r'".to_owned(),
        b'\t' => r"'\t'".to_owned(),
        c if c < 0x20 || c == 0x7f => format!("'\\x{c:02x}'"),
        c => format!("'{}'", char::from(c)),
    }
}

/// Byte offset of a serde_json error position (line and column are 1-based).
fn offset_of(input: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match input[start..].iter().position(|&b| b == b'\n') {
            Some(p) => start += p + 1,
            None => break,
        }
    }
    (start + column).saturating_sub(1).min(input.len())
}

fn go_error(input: &[u8], value_start: usize, e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => {
            let rest = &input[value_start.min(input.len())..];
            if rest.iter().all(u8::is_ascii_whitespace) {
                "EOF".to_owned()
            } else {
                "unexpected EOF".to_owned()
            }
        }
        Category::Syntax => {
            let text = e.to_string();
            let msg = text.split(" at line ").next().unwrap_or(&text);
            let at = offset_of(input, e.line(), e.column());
            let Some(&c) = input.get(at) else {
                return "unexpected EOF".to_owned();
            };
            let context = match msg {
                "key must be a string" | "trailing comma" => {
                    "looking for beginning of object key string".to_owned()
                }
                "expected `:`" => "after object key".to_owned(),
                "expected `,` or `}`" => "after object key:value pair".to_owned(),
                "expected `,` or `]`" => "after array element".to_owned(),
                "expected ident" => literal_context(input, at),
                "invalid number" | "number out of range" => "in numeric literal".to_owned(),
                "control character (\\u0000-\\u001F) found while parsing a string" => {
                    "in string literal".to_owned()
                }
                "invalid escape" => "in string escape code".to_owned(),
                _ => "looking for beginning of value".to_owned(),
            };
            format!("invalid character {} {context}", quote_char(c))
        }
        Category::Io | Category::Data => e.to_string(),
    }
}

/// Context text for a bad character inside `true`, `false` or `null`.
fn literal_context(input: &[u8], at: usize) -> String {
    let start = input[..at]
        .iter()
        .rposition(|c| matches!(c, b't' | b'f' | b'n'))
        .unwrap_or(at);
    let literal: &[u8] = match input.get(start) {
        Some(b't') => b"true",
        Some(b'f') => b"false",
        _ => b"null",
    };
    let expected = literal.get(at - start).copied().unwrap_or(b'?');
    format!(
        "in literal {} (expecting {})",
        String::from_utf8_lossy(literal),
        quote_char(expected)
    )
}

/// Go's name of a JSON value kind in `cannot unmarshal` messages.
pub fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `json: cannot unmarshal <kind> into Go struct field <field> of type <ty>`.
pub fn field_type_error(v: &Value, field: &str, ty: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {ty}",
        kind_name(v)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &str) -> String {
        first_value(input.as_bytes()).expect_err("should fail")
    }

    #[test]
    fn errors_match_go_texts() {
        assert_eq!(
            err("{bad"),
            "invalid character 'b' looking for beginning of object key string"
        );
        assert_eq!(
            err("not json"),
            "invalid character 'o' in literal null (expecting 'u')"
        );
        assert_eq!(err(""), "EOF");
        assert_eq!(err("  \n"), "EOF");
        assert_eq!(err("{\"a\":"), "unexpected EOF");
        assert_eq!(err("{\"a\" 1}"), "invalid character '1' after object key");
        assert_eq!(
            err("{\"a\":1 \"b\"}"),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err("x"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(err("tru"), "unexpected EOF");
    }

    #[test]
    fn first_value_ignores_trailing_data() {
        let v = first_value(b"{\"a\":1} junk").expect("first value decodes");
        assert_eq!(v["a"], 1);
    }
}
