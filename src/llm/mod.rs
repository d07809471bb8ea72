//! Reading an LLM API call: which operation, which model, streamed or not.
//! Pure functions over the method, path and body bytes.

pub mod usage;

use serde_json::Value;

/// What a call asks for, as far as the body and path tell.
#[derive(Debug, Clone, Default)]
pub struct ParsedCall {
    /// The API flavour the call was parsed as (`openai`, `anthropic`, ...):
    /// the registry's for a known host, the one its path matches otherwise.
    pub api: Option<String>,
    /// `chat`, `completions`, `embeddings`, `responses`, `messages`, `models`,
    /// `generate_content`, `converse`, `invoke`, `embed`; `None` when unknown.
    pub operation: Option<&'static str>,
    pub model: Option<String>,
    pub stream: bool,
    /// Whether the call has the shape of an LLM API call (a known operation's
    /// path, or a body with prompts or messages), whatever the host.
    pub llm_shaped: bool,
    /// Why the body could not be read as JSON, when it could not.
    pub parse_error: Option<String>,
    /// The body's small top-level fields (model, stream, sampling
    /// parameters), when it is a JSON object; large values are left out so
    /// that no document tree is built for a large body.
    pub top: Option<Value>,
}

/// Top-level values up to this size are kept in [`ParsedCall::top`].
const MAX_TOP_VALUE: usize = 4096;

/// Top-level keys that make a body an LLM call whatever the path.
const LLM_BODY_KEYS: &[&str] = &[
    "messages",
    "prompt",
    "contents",
    "inputText",
    "texts",
    "system_instruction",
];

/// Parses a call to an API of flavour `api` (the registry's `api` field),
/// or, for a host without one, guesses the flavour from the path.
pub fn parse_request(api: Option<&str>, method: &str, path: &str, body: &[u8]) -> ParsedCall {
    let path_only = path.split('?').next().unwrap_or(path);
    let (top, keys, parse_error) = if body.is_empty() {
        (None, Vec::new(), None)
    } else {
        match top_level(body) {
            Ok((top, keys)) => (top, keys, None),
            Err(e) => (None, Vec::new(), Some(format!("body is not JSON: {e}"))),
        }
    };
    let body_model = top
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let body_stream = top
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let (api, (operation, path_model, path_stream)) = match api {
        Some(api) => (Some(api), operation_of(api, method, path_only)),
        None => guess_api(method, path_only),
    };
    let body_shaped = keys.iter().any(|k| LLM_BODY_KEYS.contains(&k.as_str()))
        || (keys.iter().any(|k| k == "model") && keys.iter().any(|k| k == "input"));
    ParsedCall {
        api: api.map(str::to_string),
        operation,
        model: body_model.or(path_model),
        stream: body_stream || path_stream,
        llm_shaped: operation.is_some() || body_shaped,
        parse_error,
        top,
    }
}

type PathFacts = (Option<&'static str>, Option<String>, bool);

fn operation_of(api: &str, method: &str, path: &str) -> PathFacts {
    match api {
        "openai" => (openai_operation(method, path), None, false),
        "anthropic" => (anthropic_operation(method, path), None, false),
        "gemini" => gemini_operation(path),
        "bedrock" => bedrock_operation(path),
        "cohere" => (cohere_operation(method, path), None, false),
        "aleph_alpha" => (aleph_alpha_operation(method, path), None, false),
        _ => (None, None, false),
    }
}

/// The first API flavour whose paths the request matches, for hosts the
/// registry does not know.
fn guess_api(method: &str, path: &str) -> (Option<&'static str>, PathFacts) {
    for api in [
        "openai",
        "anthropic",
        "gemini",
        "bedrock",
        "cohere",
        "aleph_alpha",
    ] {
        let facts = operation_of(api, method, path);
        if facts.0.is_some() && facts.0 != Some("models") {
            return (Some(api), facts);
        }
    }
    (None, (None, None, false))
}

/// The small top-level values of a JSON object and all its keys, without
/// building the large ones.
fn top_level(body: &[u8]) -> Result<(Option<Value>, Vec<String>), serde_json::Error> {
    let fields: Vec<(String, &serde_json::value::RawValue)> =
        match serde_json::from_slice::<KeyedRaw>(body) {
            Ok(KeyedRaw(fields)) => fields,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                // Valid JSON that is not an object: nothing at the top to read.
                serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
                return Ok((None, Vec::new()));
            }
            Err(e) => return Err(e),
        };
    let mut top = serde_json::Map::new();
    let mut keys = Vec::with_capacity(fields.len().min(64));
    for (key, raw) in fields {
        if raw.get().len() <= MAX_TOP_VALUE {
            if let Ok(value) = serde_json::from_str::<Value>(raw.get()) {
                top.insert(key.clone(), value);
            }
        }
        if keys.len() < 64 {
            keys.push(key);
        }
    }
    Ok((Some(Value::Object(top)), keys))
}

/// A JSON object as its keys and raw values, in order, duplicates kept (the
/// last wins when they are put in a map, as in the upstreams' parsers).
struct KeyedRaw<'a>(Vec<(String, &'a serde_json::value::RawValue)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for KeyedRaw<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = KeyedRaw<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) =
                    map.next_entry::<String, &'de serde_json::value::RawValue>()?
                {
                    fields.push((k, v));
                }
                Ok(KeyedRaw(fields))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// OpenAI and the OpenAI-compatible APIs (Mistral, vLLM, Azure OpenAI).
fn openai_operation(method: &str, path: &str) -> Option<&'static str> {
    // Azure puts the deployment in the path: /openai/deployments/{d}/chat/completions.
    let tail = match path.find("/deployments/") {
        Some(i) => {
            let rest = &path[i + "/deployments/".len()..];
            rest.split_once('/').map(|(_, t)| t).unwrap_or("")
        }
        None => path
            .trim_start_matches("/openai")
            .trim_start_matches("/v1")
            .trim_start_matches('/'),
    };
    match (method, tail.trim_end_matches('/')) {
        ("POST", "chat/completions") => Some("chat"),
        ("POST", "completions") => Some("completions"),
        ("POST", "embeddings") => Some("embeddings"),
        ("POST", "responses") => Some("responses"),
        ("GET", "models") => Some("models"),
        _ => None,
    }
}

fn anthropic_operation(method: &str, path: &str) -> Option<&'static str> {
    match (method, path.trim_end_matches('/')) {
        ("POST", "/v1/messages") => Some("messages"),
        ("POST", "/v1/complete") => Some("completions"),
        ("GET", "/v1/models") => Some("models"),
        _ => None,
    }
}

/// `/v1beta/models/{model}:generateContent` and friends.
fn gemini_operation(path: &str) -> (Option<&'static str>, Option<String>, bool) {
    let Some((before, verb)) = path.rsplit_once(':') else {
        return (None, None, false);
    };
    let model = before
        .rsplit_once("/models/")
        .map(|(_, m)| m.to_string())
        .filter(|m| !m.is_empty());
    match verb {
        "generateContent" => (Some("generate_content"), model, false),
        "streamGenerateContent" => (Some("generate_content"), model, true),
        "embedContent" | "batchEmbedContents" => (Some("embeddings"), model, false),
        _ => (None, model, false),
    }
}

/// `/model/{id}/invoke`, `/model/{id}/converse`, and their streaming forms.
fn bedrock_operation(path: &str) -> (Option<&'static str>, Option<String>, bool) {
    let Some(rest) = path.strip_prefix("/model/") else {
        return (None, None, false);
    };
    let Some((model, verb)) = rest.rsplit_once('/') else {
        return (None, None, false);
    };
    let model = Some(percent_decode(model));
    match verb {
        "invoke" => (Some("invoke"), model, false),
        "invoke-with-response-stream" => (Some("invoke"), model, true),
        "converse" => (Some("converse"), model, false),
        "converse-stream" => (Some("converse"), model, true),
        _ => (None, model, false),
    }
}

fn cohere_operation(method: &str, path: &str) -> Option<&'static str> {
    match (method, path.trim_end_matches('/')) {
        ("POST", "/v1/chat" | "/v2/chat") => Some("chat"),
        ("POST", "/v1/embed" | "/v2/embed") => Some("embeddings"),
        ("POST", "/v1/generate") => Some("completions"),
        _ => None,
    }
}

fn aleph_alpha_operation(method: &str, path: &str) -> Option<&'static str> {
    match (method, path.trim_end_matches('/')) {
        ("POST", "/complete") => Some("completions"),
        ("POST", "/chat/completions") => Some("chat"),
        ("POST", "/semantic_embed" | "/embed") => Some("embeddings"),
        _ => None,
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (api, method, path, body, operation, model, stream)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [u8],
        Option<&'a str>,
        Option<&'a str>,
        bool,
    );

    #[test]
    fn table() {
        let chat =
            br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let cases: &[Case] = &[
            (
                "openai",
                "POST",
                "/v1/chat/completions",
                chat,
                Some("chat"),
                Some("gpt-4o"),
                true,
            ),
            (
                "openai",
                "POST",
                "/v1/embeddings",
                br#"{"model":"text-embedding-3-small","input":"x"}"#,
                Some("embeddings"),
                Some("text-embedding-3-small"),
                false,
            ),
            (
                "openai",
                "POST",
                "/v1/responses",
                br#"{"model":"gpt-4o","input":"x"}"#,
                Some("responses"),
                Some("gpt-4o"),
                false,
            ),
            (
                "openai",
                "GET",
                "/v1/models",
                b"",
                Some("models"),
                None,
                false,
            ),
            (
                "openai",
                "POST",
                "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
                br#"{"messages":[]}"#,
                Some("chat"),
                None,
                false,
            ),
            (
                "anthropic",
                "POST",
                "/v1/messages",
                br#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#,
                Some("messages"),
                Some("claude-sonnet-4-5"),
                false,
            ),
            (
                "gemini",
                "POST",
                "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
                br#"{"contents":[]}"#,
                Some("generate_content"),
                Some("gemini-2.5-pro"),
                true,
            ),
            (
                "bedrock",
                "POST",
                "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
                br#"{"messages":[]}"#,
                Some("converse"),
                Some("anthropic.claude-3-haiku-20240307-v1:0"),
                false,
            ),
            (
                "cohere",
                "POST",
                "/v2/chat",
                br#"{"model":"command-r","messages":[]}"#,
                Some("chat"),
                Some("command-r"),
                false,
            ),
            ("openai", "POST", "/v1/unknown", br#"{}"#, None, None, false),
        ];
        for (api, method, path, body, op, model, stream) in cases {
            let call = parse_request(Some(api), method, path, body);
            assert_eq!(call.operation, *op, "{path}");
            assert_eq!(call.model.as_deref(), *model, "{path}");
            assert_eq!(call.stream, *stream, "{path}");
            assert!(call.parse_error.is_none());
            assert!(call.llm_shaped || op.is_none(), "{path}");
        }
    }

    #[test]
    fn unregistered_hosts_are_recognised_by_path_or_body() {
        // (method, path, body, api, operation, llm_shaped)
        /// (method, path, body, api, operation, llm_shaped)
        type Guess<'a> = (
            &'a str,
            &'a str,
            &'a [u8],
            Option<&'a str>,
            Option<&'a str>,
            bool,
        );
        let cases: &[Guess] = &[
            (
                "POST",
                "/v1/chat/completions",
                b"{}",
                Some("openai"),
                Some("chat"),
                true,
            ),
            (
                "POST",
                "/openai/v1/chat/completions",
                b"{}",
                Some("openai"),
                Some("chat"),
                true,
            ),
            (
                "POST",
                "/v1/messages",
                b"{}",
                Some("anthropic"),
                Some("messages"),
                true,
            ),
            (
                "POST",
                "/v1beta/models/g:generateContent",
                b"{}",
                Some("gemini"),
                Some("generate_content"),
                true,
            ),
            (
                "POST",
                "/model/m/converse",
                b"{}",
                Some("bedrock"),
                Some("converse"),
                true,
            ),
            (
                "POST",
                "/v2/chat",
                b"{}",
                Some("cohere"),
                Some("chat"),
                true,
            ),
            (
                "POST",
                "/api/generate",
                br#"{"model":"llama3","prompt":"hi"}"#,
                None,
                None,
                true,
            ),
            (
                "POST",
                "/run",
                br#"{"messages":[{"role":"user","content":"x"}]}"#,
                None,
                None,
                true,
            ),
            (
                "POST",
                "/x",
                br#"{"model":"m","input":"x"}"#,
                None,
                None,
                true,
            ),
            (
                "POST",
                "/upload",
                br#"{"name":"report","size":3}"#,
                None,
                None,
                false,
            ),
            ("GET", "/simple/requests/", b"", None, None, false),
            ("GET", "/v1/models", b"", None, None, false),
        ];
        for (method, path, body, api, op, shaped) in cases {
            let call = parse_request(None, method, path, body);
            assert_eq!(call.api.as_deref(), *api, "{path}");
            assert_eq!(call.operation, *op, "{path}");
            assert_eq!(call.llm_shaped, *shaped, "{path}");
        }
    }

    #[test]
    fn large_values_are_not_kept_but_their_keys_are() {
        let big = "x".repeat(MAX_TOP_VALUE * 2);
        let body =
            format!(r#"{{"model":"gpt-4o","temperature":0.2,"messages":[{{"content":"{big}"}}]}}"#);
        let call = parse_request(
            Some("openai"),
            "POST",
            "/v1/chat/completions",
            body.as_bytes(),
        );
        let top = call.top.unwrap();
        assert_eq!(top["model"], "gpt-4o");
        assert_eq!(top["temperature"], 0.2);
        assert!(top.get("messages").is_none());
        assert!(call.llm_shaped);
        // Not an object: no top, no error.
        let call = parse_request(Some("openai"), "POST", "/v1/chat/completions", b"[1,2]");
        assert!(call.top.is_none() && call.parse_error.is_none());
        // Duplicate keys: the last wins, as in the upstreams' parsers.
        let call = parse_request(
            Some("openai"),
            "POST",
            "/v1/chat/completions",
            br#"{"model":"a","model":"b"}"#,
        );
        assert_eq!(call.model.as_deref(), Some("b"));
    }

    #[test]
    fn non_json_bodies_are_reported_not_fatal() {
        let call = parse_request(Some("openai"), "POST", "/v1/chat/completions", b"{not json");
        assert_eq!(call.operation, Some("chat"));
        assert!(call.parse_error.unwrap().contains("not JSON"));
    }
}
