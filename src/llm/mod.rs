//! Reading an LLM API call: which operation, which model, streamed or not.
//! Pure functions over the method, path and body bytes.

pub mod usage;

use serde_json::Value;

/// What a call asks for, as far as the body and path tell.
#[derive(Debug, Clone, Default)]
pub struct ParsedCall {
    /// The API flavour the call was parsed as (`openai`, `anthropic`, ...).
    pub api: Option<String>,
    /// `chat`, `completions`, `embeddings`, `responses`, `messages`, `models`,
    /// `generate_content`, `converse`, `invoke`, `embed`; `None` when unknown.
    pub operation: Option<&'static str>,
    pub model: Option<String>,
    pub stream: bool,
    /// Why the body could not be read as JSON, when it could not.
    pub parse_error: Option<String>,
    /// The body as JSON, when it is JSON.
    pub json: Option<Value>,
}

/// Parses a call to an API of flavour `api` (the registry's `api` field).
pub fn parse_request(api: Option<&str>, method: &str, path: &str, body: &[u8]) -> ParsedCall {
    let path_only = path.split('?').next().unwrap_or(path);
    let (json, parse_error) = if body.is_empty() {
        (None, None)
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("body is not JSON: {e}"))),
        }
    };
    let body_model = json
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let body_stream = json
        .as_ref()
        .and_then(|v| v.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let (operation, path_model, path_stream) = match api {
        Some("openai") => (openai_operation(method, path_only), None, false),
        Some("anthropic") => (anthropic_operation(method, path_only), None, false),
        Some("gemini") => gemini_operation(path_only),
        Some("bedrock") => bedrock_operation(path_only),
        Some("cohere") => (cohere_operation(method, path_only), None, false),
        Some("aleph_alpha") => (aleph_alpha_operation(method, path_only), None, false),
        _ => (None, None, false),
    };
    ParsedCall {
        api: api.map(str::to_string),
        operation,
        model: body_model.or(path_model),
        stream: body_stream || path_stream,
        parse_error,
        json,
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
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        }
    }

    #[test]
    fn non_json_bodies_are_reported_not_fatal() {
        let call = parse_request(Some("openai"), "POST", "/v1/chat/completions", b"{not json");
        assert_eq!(call.operation, Some("chat"));
        assert!(call.parse_error.unwrap().contains("not JSON"));
    }
}
