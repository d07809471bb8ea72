//! Parsing an answer's JSON into only the fields the usage reader looks
//! at, at any depth. A streamed answer is hundreds of small documents whose
//! text, indices and fingerprints the reader never reads: skipped by the
//! parser, they are never allocated.

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Every key `Reader` reads outside content capture: wrappers (`message`,
/// `response`, `delta`, `choices`, `candidates`, `usage`, ...) and facts.
/// A key missing here reads as absent, so the unit tests read every API's
/// answer both ways.
const READ: &[&str] = &[
    "amazon-bedrock-invocationMetrics",
    "billed_units",
    "candidates",
    "candidatesTokenCount",
    "choices",
    "completion_tokens",
    "delta",
    "finishReason",
    "finish_reason",
    "id",
    "incomplete_details",
    "inputTokenCount",
    "inputTokens",
    "input_tokens",
    "message",
    "model",
    "modelVersion",
    "object",
    "outputTokenCount",
    "outputTokens",
    "output_tokens",
    "promptTokenCount",
    "prompt_tokens",
    "reason",
    "response",
    "responseId",
    "status",
    "stopReason",
    "stop_reason",
    "thoughtsTokenCount",
    "tokens",
    "type",
    "usage",
    "usageMetadata",
];

/// A JSON value with the object fields outside [`READ`] left out.
pub(super) struct Fields;

impl<'de> DeserializeSeed<'de> for Fields {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Fields)
    }
}

impl<'de> Visitor<'de> for Fields {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Fields)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key_seed(ReadKey)? {
            match key {
                Some(name) => {
                    let value = map.next_value_seed(Fields)?;
                    fields.insert(name.to_string(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(fields))
    }
}

/// An object key: `Some` of the [`READ`] entry it names, `None` for any
/// other (escaped keys included, read without being kept).
struct ReadKey;

impl<'de> DeserializeSeed<'de> for ReadKey {
    type Value = Option<&'static str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(ReadKey)
    }
}

impl<'de> Visitor<'de> for ReadKey {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(READ.iter().copied().find(|k| *k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Value {
        let mut parser = serde_json::Deserializer::from_str(text);
        let value = Fields.deserialize(&mut parser).unwrap();
        parser.end().unwrap();
        value
    }

    #[test]
    fn only_the_read_fields_are_kept_at_every_depth() {
        let doc = r#"{"id":"x","created":1,"choices":[{"index":0,"delta":{"content":"long text","role":"assistant"},"finish_reason":null,"logprobs":{"content":[1,2]}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0}},"model":"m","n":-1.5,"ok":true,"\u0074ype":"escaped"}"#;
        let expected = serde_json::json!({
            "id": "x",
            "choices": [{"delta": {}, "finish_reason": null}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4},
            "model": "m",
            "type": "escaped",
        });
        assert_eq!(read(doc), expected);
        // Scalars and arrays at the top are kept as they are.
        assert_eq!(
            read("[1,-2,3.5,\"s\",null,false]"),
            serde_json::json!([1, -2, 3.5, "s", null, false])
        );
        assert_eq!(read("\"text\""), serde_json::json!("text"));
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack() {
        // What is kept is built recursively, under serde_json's depth limit.
        for (open, close) in [("[", "]"), ("{\"usage\":", "}")] {
            let text = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
            let mut parser = serde_json::Deserializer::from_str(&text);
            assert!(Fields.deserialize(&mut parser).is_err(), "{open}");
        }
        // What is skipped, serde_json walks without recursing: read to its
        // end, nothing of it kept.
        let text = format!(
            "{}1{}",
            "{\"skipped\":".repeat(100_000),
            "}".repeat(100_000)
        );
        assert_eq!(read(&text), serde_json::json!({}));
    }

    #[test]
    fn what_is_not_json_is_refused_as_before() {
        for bad in ["{\"id\":", "{\"id\":1} trailing", "{'id':1}", "", "[1,]"] {
            let mut parser = serde_json::Deserializer::from_str(bad);
            let parsed = Fields.deserialize(&mut parser).and_then(|_| parser.end());
            assert!(parsed.is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad:?}");
        }
    }
}
