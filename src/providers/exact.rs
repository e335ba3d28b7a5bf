//! Flag values exactly as the store held them.
//!
//! A flag's previous value is restored byte for byte: `on` written by
//! another tool, `1.50`, `12345678901234567890123`, `{"a": 1}` with its
//! spacing, bytes that are not UTF-8. Parsing such a value as JSON and
//! writing it back would change it, so a value whose bytes are not exactly
//! what its JSON prints is kept as a marker, `{"$runbook_bytes": BASE64}`,
//! in the journal and the ledger, and written back as those bytes. Outputs
//! and messages show it readably ([`readable`]).

use base64::Engine as _;
use serde_json::Value as Json;

/// The one key of a marker object.
pub const BYTES_KEY: &str = "$runbook_bytes";

/// A stored value as a flag value: its JSON when writing that JSON gives the
/// same bytes back, else a marker holding the bytes.
pub fn from_bytes(raw: &[u8]) -> Json {
    if let Ok(v) = serde_json::from_slice::<Json>(raw) {
        if serde_json::to_vec(&v).is_ok_and(|back| back == raw) && !is_marker(&v) {
            return v;
        }
    }
    let mut m = serde_json::Map::new();
    m.insert(
        BYTES_KEY.into(),
        Json::String(base64::engine::general_purpose::STANDARD.encode(raw)),
    );
    Json::Object(m)
}

/// The bytes to store for a flag value: a marker's own bytes, else its JSON.
pub fn to_bytes(v: &Json) -> Vec<u8> {
    marker_bytes(v).unwrap_or_else(|| v.to_string().into_bytes())
}

/// A value as messages show it: the text the store holds, or `absent`.
pub fn shown(v: Option<&Json>) -> String {
    v.map_or_else(
        || "absent".to_string(),
        |v| String::from_utf8_lossy(&to_bytes(v)).into_owned(),
    )
}

/// A value for outputs: a marker as its text.
pub fn readable(v: &Json) -> Json {
    match marker_bytes(v) {
        Some(bytes) => Json::String(String::from_utf8_lossy(&bytes).into_owned()),
        None => v.clone(),
    }
}

fn is_marker(v: &Json) -> bool {
    marker_bytes(v).is_some()
}

fn marker_bytes(v: &Json) -> Option<Vec<u8>> {
    let m = v.as_object().filter(|m| m.len() == 1)?;
    let b64 = m.get(BYTES_KEY)?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_shape_comes_back_byte_for_byte() {
        let shapes: [&[u8]; 9] = [
            b"on",
            b"1.50",
            b"12345678901234567890123",
            b"caf\xe9",
            b"{\"a\": 1}",
            b"{\"a\":1}",
            b"10",
            b"\"text\"",
            b"{\"$runbook_bytes\":\"b24=\"}",
        ];
        for raw in shapes {
            assert_eq!(
                to_bytes(&from_bytes(raw)),
                raw,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Canonical JSON stays JSON (templates and outputs see the value).
        assert_eq!(from_bytes(b"{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(from_bytes(b"10"), serde_json::json!(10));
        assert_eq!(readable(&from_bytes(b"on")), serde_json::json!("on"));
    }
}
