//! [`Payload`]: a job's data as JSON text, kept as the producer wrote it
//! from the broker's reply to the handler.

use std::{fmt, num::NonZeroU64};

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{value::RawValue, Value};

/// A job's data: JSON text, checked to be JSON, never re-serialised.
///
/// A worker reads a job's envelope without parsing its payload into a
/// [`Value`]: the text is copied out of the broker's reply once and moved
/// from then on. The worker parses it once, to check it against its kind's
/// schema, and the handler's typed job is built from that parse (its
/// strings moved, not copied); a retry or a dead-letter writes the same
/// text back without re-serialising it. Code that wants to look inside
/// uses [`to_value`](Self::to_value) or [`decode`](Self::decode).
///
/// ```
/// use flagship_worker::Payload;
/// use serde_json::json;
///
/// let payload = Payload::from(json!({ "user_id": 7 }));
/// assert_eq!(payload.json(), r#"{"user_id":7}"#);
/// assert_eq!(payload, json!({ "user_id": 7 }));
/// #[derive(serde::Deserialize)]
/// struct Welcome { user_id: u64 }
/// assert_eq!(payload.decode::<Welcome>()?.user_id, 7);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload {
    /// The JSON text, one allocation; the hot paths move it, never clone it.
    json: Box<RawValue>,
    /// The compiled schema (by its [`KindSchema::id`](crate::schema::KindSchema::id))
    /// that accepted exactly this text in this process, if any: a worker
    /// whose registry holds that same schema gets the same answer without
    /// asking again. Never serialized and never compared; any other
    /// payload (one read from a broker, one built by hand) is checked.
    checked_by: Option<NonZeroU64>,
}

impl Payload {
    /// A payload from JSON text; fails when the text is not JSON. The text
    /// is kept as given, whitespace included.
    pub fn from_json(text: impl Into<String>) -> serde_json::Result<Self> {
        Ok(Self::from_raw(RawValue::from_string(text.into())?))
    }

    /// A payload holding `value` serialized as JSON.
    pub fn serialize<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        Ok(Self::from_raw(serde_json::value::to_raw_value(value)?))
    }

    /// A payload holding `value` as compact JSON, written by this crate's
    /// own writer: serde_json checks a string for characters to escape one
    /// byte at a time, this one a word at a time, which is most of the cost
    /// of a payload with long strings. The text is then checked to be JSON
    /// as [`from_json`](Self::from_json) does. Arrays and objects are
    /// written recursively: check the depth first
    /// ([`MAX_PAYLOAD_DEPTH`](crate::schema::MAX_PAYLOAD_DEPTH)).
    pub(crate) fn write(value: &Value) -> serde_json::Result<Self> {
        let mut text = String::with_capacity(64);
        write_value(&mut text, value);
        Self::from_json(text)
    }

    /// A payload from already checked JSON text.
    pub fn from_raw(json: Box<RawValue>) -> Self {
        Payload { json, checked_by: None }
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.json.get()
    }

    /// The JSON text as a [`RawValue`], for embedding in other JSON
    /// without re-serialising it.
    pub fn raw(&self) -> &RawValue {
        &self.json
    }

    /// The length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.json.get().len()
    }

    /// Whether the JSON text is empty (never: the shortest JSON is one byte).
    pub fn is_empty(&self) -> bool {
        self.json.get().is_empty()
    }

    /// The payload parsed into a [`Value`].
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(self.json.get())
    }

    /// The JSON text pretty-printed, for people to read (the text as is
    /// when it nests too deep to parse).
    pub fn pretty(&self) -> String {
        self.to_value()
            .ok()
            .and_then(|value| serde_json::to_string_pretty(&value).ok())
            .unwrap_or_else(|| self.json().to_owned())
    }

    /// The payload decoded as `T`, straight from its text.
    pub fn decode<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.json.get())
    }

    /// The schema that accepted this text in this process, if any.
    pub(crate) fn checked_by(&self) -> Option<NonZeroU64> {
        self.checked_by
    }

    /// Records that the schema `id` accepted this text.
    pub(crate) fn mark_checked(&mut self, id: NonZeroU64) {
        self.checked_by = Some(id);
    }
}

impl Default for Payload {
    /// JSON `null`.
    fn default() -> Self {
        Payload::from(Value::Null)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::from(&value)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        // A `Value` always serializes: its map keys are strings.
        Payload::write(value).unwrap_or_else(|_| Payload::from_raw(RawValue::NULL.to_owned()))
    }
}

/// Writes `value` as compact JSON, as serde_json would.
fn write_value(out: &mut String, value: &Value) {
    use std::fmt::Write as _;
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // serde_json's own number formatting (itoa, ryu).
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Writes `s` as a JSON string: runs that need no escape are copied whole;
/// the search for the next byte to escape looks at eight bytes at a time.
fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(at) = next_escape(bytes, start) {
        out.push_str(&s[start..at]);
        let byte = bytes[at];
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        start = at + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// The first byte at or after `from` that JSON escapes: a quote, a
/// backslash or a control character (below 0x20). Multi-byte UTF-8
/// sequences never contain one, so cutting the text there is safe.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= bytes.len() {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let word = u64::from_le_bytes(word);
        // A high bit in each byte that is below 0x20, or equal to `"` or `\`
        // (the classic "has a zero byte" test on `word - 0x20..`, on
        // `word ^ '"'..` and on `word ^ '\\'..`); bytes >= 0x80 are masked out.
        let below = word.wrapping_sub(ONES * 0x20);
        let quote = (word ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES);
        let backslash = (word ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        let found = (below | quote | backslash) & !word & HIGHS;
        if found != 0 {
            // The lowest flagged byte is a real hit: borrows only run
            // upwards, so no byte below the first hit is flagged wrongly.
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|at| i + at)
}

impl PartialEq for Payload {
    /// The same text, or texts that parse to the same value (a broker that
    /// stores JSON as a document, like PostgreSQL's `jsonb`, may reorder
    /// keys and drop whitespace).
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json() || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.to_value().is_ok_and(|value| value == *other)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload").field(&self.json()).finish()
    }
}

impl fmt::Display for Payload {
    /// The JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Payload::from_raw)
    }
}

impl JsonSchema for Payload {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        Value::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        Value::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        Value::json_schema(generator)
    }

    fn inline_schema() -> bool {
        Value::inline_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_kept_verbatim_through_an_envelope() {
        let text = r#"{ "b": 1,  "a": "ü\n" }"#;
        let payload = Payload::from_json(text).unwrap();
        let outer = serde_json::to_string(&json!({ "p": 1 })).unwrap();
        assert_eq!(outer, r#"{"p":1}"#);
        #[derive(Serialize, Deserialize)]
        struct Outer {
            payload: Payload,
        }
        let written = serde_json::to_string(&Outer { payload }).unwrap();
        assert_eq!(written, format!(r#"{{"payload":{text}}}"#));
        let read: Outer = serde_json::from_str(&written).unwrap();
        assert_eq!(read.payload.json(), text);
        assert_eq!(read.payload, json!({ "a": "ü\n", "b": 1 }));
    }

    #[test]
    fn the_writer_writes_what_serde_json_writes() {
        let awkward: String = (0u8..0x80).map(char::from).chain("ünï ✓ 𝄞".chars()).collect();
        let values = [
            json!(null),
            json!([true, false, 0, -12, 1.5, 1e300, u64::MAX, i64::MIN]),
            json!({ "pad": "x".repeat(1000), "b": { "nested": [[], {}, ""] }, "a": awkward }),
            json!(awkward.repeat(3)),
            json!("\"\\\u{1f}ab\"cdefgh\\"),
        ];
        for value in values {
            let written = Payload::write(&value).unwrap();
            assert_eq!(written.json(), serde_json::to_string(&value).unwrap());
            assert_eq!(written, value);
        }
        // Every position of an escaped byte inside and across eight-byte words.
        for at in 0..20 {
            for special in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
                let mut text = "y".repeat(20);
                text.insert(at, special);
                let value = json!(text);
                assert_eq!(
                    Payload::write(&value).unwrap().json(),
                    serde_json::to_string(&value).unwrap()
                );
            }
        }
    }

    #[test]
    fn equal_values_in_other_text_are_equal() {
        let a = Payload::from_json(r#"{"a":1,"b":2}"#).unwrap();
        let b = Payload::from_json(r#"{ "b": 2, "a": 1 }"#).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Payload::from(json!({ "a": 1 })));
        assert!(Payload::from_json("{not json").is_err());
    }

    #[test]
    fn the_mark_is_kept_by_clones_and_never_serialized() {
        let mut payload = Payload::from(json!([1, 2]));
        payload.mark_checked(NonZeroU64::MIN);
        let clone = payload.clone();
        let read: Payload = serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
        assert_eq!(read.checked_by(), None);
        assert_eq!(clone.checked_by(), Some(NonZeroU64::MIN));
    }
}
