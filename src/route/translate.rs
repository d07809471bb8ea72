//! Translating OpenAI calls for a target's API, as data: per dialect, which
//! operations exist, which fields are renamed and which are dropped because
//! the target rejects them. Golden tests (`tests/golden/translate`) hold
//! request-in / request-out pairs.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::reply::{CallerApi, Fault, Rendered};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Mistral AI's OpenAI-compatible API (La Plateforme).
    Mistral,
    /// An OpenAI-compatible server that accepts OpenAI's fields (vLLM).
    OpenAi,
}

/// What a dialect needs done to an OpenAI request body.
pub struct Translation {
    /// Operations the target serves, and the path after its prefix.
    pub operations: &'static [(&'static str, &'static str)],
    /// Top-level fields renamed (OpenAI name, target name), per operation.
    pub rename: &'static [(&'static str, &'static str, &'static str)],
    /// Top-level fields removed, per operation (`*` for every operation).
    pub drop: &'static [(&'static str, &'static str)],
    /// Chat message roles the target does not know, and the role each
    /// becomes (applied before `drop_in_messages`).
    pub rename_roles: &'static [(&'static str, &'static str)],
    /// Fields removed from each chat message of these roles.
    pub drop_in_messages: &'static [(&'static str, &'static [&'static str])],
}

/// Mistral AI. Sources: https://docs.mistral.ai/api/ (chat completion and
/// embeddings request schemas, which reject unknown fields with 422
/// `extra_forbidden`), as published in Mistral's OpenAPI-generated client,
/// github.com/mistralai/client-python 2.5.1 (2026-06-30),
/// `docs/models/{chatcompletionrequest,embeddingrequest,systemmessage,
/// usermessage,assistantmessage,toolmessage}.md`.
///
/// Chat accepts, besides OpenAI's core fields: `n`, `presence_penalty`,
/// `frequency_penalty`, `stop`, `response_format` (`text`, `json_object`,
/// `json_schema`), `tools`, `tool_choice`, `parallel_tool_calls`,
/// `prediction`, `metadata`, `reasoning_effort` (none … xhigh),
/// `prompt_cache_key`, and its own `random_seed`, `prompt_mode`,
/// `safe_prompt`, `guardrails`: all passed. Embeddings accept `input`,
/// `encoding_format`, `metadata`, `output_dimension`, `output_dtype`.
pub const MISTRAL: Translation = Translation {
    operations: &[
        ("chat", "/chat/completions"),
        ("embeddings", "/embeddings"),
        ("models", "/models"),
    ],
    rename: &[
        ("chat", "seed", "random_seed"),
        ("chat", "max_completion_tokens", "max_tokens"),
        ("embeddings", "dimensions", "output_dimension"),
    ],
    // OpenAI fields absent from Mistral's request schemas.
    drop: &[
        ("chat", "logprobs"),
        ("chat", "top_logprobs"),
        ("chat", "logit_bias"),
        ("chat", "stream_options"),
        ("chat", "store"),
        ("chat", "service_tier"),
        ("chat", "modalities"),
        ("chat", "audio"),
        ("chat", "web_search_options"),
        ("chat", "functions"),
        ("chat", "function_call"),
        ("chat", "safety_identifier"),
        ("chat", "verbosity"),
        ("*", "user"),
    ],
    // Mistral's messages are `system`, `user`, `assistant` and `tool` only;
    // OpenAI's `developer` message is its system prompt.
    rename_roles: &[("developer", "system")],
    // System and user messages are `role` and `content` only; assistant
    // messages add `tool_calls` and `prefix`; tool messages keep `name`.
    drop_in_messages: &[
        ("system", &["name"]),
        ("user", &["name"]),
        ("assistant", &["name", "refusal", "audio", "function_call"]),
    ],
};

/// vLLM and other servers that take OpenAI's request fields as they are.
pub const OPENAI_COMPATIBLE: Translation = Translation {
    operations: &[
        ("chat", "/chat/completions"),
        ("completions", "/completions"),
        ("embeddings", "/embeddings"),
        ("models", "/models"),
    ],
    rename: &[],
    drop: &[],
    rename_roles: &[],
    drop_in_messages: &[],
};

impl Dialect {
    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "mistral" => Some(Dialect::Mistral),
            "openai" | "vllm" => Some(Dialect::OpenAi),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Mistral => "mistral",
            Dialect::OpenAi => "openai",
        }
    }

    pub fn table(self) -> &'static Translation {
        match self {
            Dialect::Mistral => &MISTRAL,
            Dialect::OpenAi => &OPENAI_COMPATIBLE,
        }
    }

    pub fn operations(self) -> Vec<&'static str> {
        self.table().operations.iter().map(|(op, _)| *op).collect()
    }

    pub fn path_for(self, operation: &str) -> Option<&'static str> {
        self.table()
            .operations
            .iter()
            .find(|(op, _)| *op == operation)
            .map(|(_, path)| *path)
    }

    /// The body to send: `model` replaced, fields renamed and dropped.
    pub fn translate(self, operation: &str, body: &Value, model: &str) -> Result<Value, String> {
        let Value::Object(fields) = body else {
            return Err("the body is not a JSON object".into());
        };
        let table = self.table();
        let mut out = Map::with_capacity(fields.len());
        for (key, value) in fields {
            let dropped = table
                .drop
                .iter()
                .any(|(op, f)| (*op == "*" || *op == operation) && f == key);
            if dropped {
                continue;
            }
            let renamed = table
                .rename
                .iter()
                .find(|(op, from, _)| *op == operation && from == key)
                .map(|(_, _, to)| *to);
            match renamed {
                // An explicit target-named field wins over a renamed one.
                Some(to) if fields.contains_key(to) => {}
                Some(to) => {
                    out.insert(to.to_string(), value.clone());
                }
                None => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        let rewrites_messages =
            !table.rename_roles.is_empty() || !table.drop_in_messages.is_empty();
        if operation == "chat" && rewrites_messages {
            if let Some(Value::Array(messages)) = out.get_mut("messages") {
                for message in messages {
                    rename_role(message, table.rename_roles);
                    strip_message(message, table.drop_in_messages);
                }
            }
        }
        out.insert("model".into(), Value::String(model.to_string()));
        Ok(Value::Object(out))
    }
}

fn rename_role(message: &mut Value, renames: &[(&str, &str)]) {
    let Some(role) = message.get_mut("role") else {
        return;
    };
    let renamed = renames
        .iter()
        .find(|(from, _)| role.as_str() == Some(*from))
        .map(|(_, to)| *to);
    if let Some(to) = renamed {
        *role = Value::String(to.to_string());
    }
}

fn strip_message(message: &mut Value, rules: &[(&str, &[&str])]) {
    let Value::Object(fields) = message else {
        return;
    };
    let role = fields
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some((_, drop)) = rules.iter().find(|(r, _)| *r == role) {
        for field in *drop {
            fields.remove(*field);
        }
    }
}

/// A target's error body in OpenAI's shape `{"error": {"message", "type",
/// "param", "code"}}`, so SDKs raise the error they would for OpenAI.
/// Bodies already in that shape pass unchanged.
pub fn openai_error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(v) = &parsed {
        if v.get("error").is_some_and(Value::is_object) {
            return body.to_vec();
        }
    }
    target_fault(status, parsed.as_ref(), body)
        .render(CallerApi::OpenAi)
        .body
        .to_vec()
}

/// A target's error answer in the error shape of the API the app called
/// (see [`crate::reply::Fault`]): the target's message, its type and code
/// where it gave them, the status kept.
pub fn target_error(api: CallerApi, status: u16, body: &[u8]) -> Rendered {
    if api == CallerApi::OpenAi {
        return Rendered {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Bytes::from(openai_error(status, body)),
        };
    }
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    target_fault(status, parsed.as_ref(), body).render(api)
}

/// What a target's error body says, whatever its shape: OpenAI's,
/// Mistral's, FastAPI's, plain text.
fn target_fault<'a>(status: u16, parsed: Option<&Value>, body: &[u8]) -> Fault<'a> {
    // An OpenAI-shaped error (vLLM's, Mistral's newer ones) says it all.
    let inner = parsed
        .and_then(|v| v.get("error"))
        .filter(|e| e.get("message").is_some_and(Value::is_string));
    let source = inner.or(parsed);
    let (message, param) = match (inner, parsed) {
        (Some(e), _) => (
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            e.get("param").and_then(Value::as_str).map(str::to_string),
        ),
        (None, Some(v)) => describe(v),
        (None, None) => (
            String::from_utf8_lossy(body).chars().take(2000).collect(),
            None,
        ),
    };
    let message = if message.trim().is_empty() {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_string()
    } else {
        message
    };
    let kind = source
        .and_then(|v| v.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            match status {
                400 | 404 | 409 | 413 | 422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                _ => "api_error",
            }
            .to_string()
        });
    let code = source
        .and_then(|v| v.get("code"))
        .cloned()
        .unwrap_or(Value::Null);
    Fault {
        status,
        message,
        openai_type: kind,
        code,
        param,
        ecluse: None,
    }
}

/// The message (and offending field) of Mistral's and FastAPI-style errors:
/// `{"message": "..."}`, `{"detail": "..."}`,
/// `{"message": {"detail": [{"loc": ["body", "logprobs"], "msg": "..."}]}}`.
fn describe(v: &Value) -> (String, Option<String>) {
    let details = v
        .get("message")
        .and_then(|m| m.get("detail"))
        .or_else(|| v.get("detail"));
    if let Some(Value::Array(items)) = details {
        let mut param = None;
        let parts: Vec<String> = items
            .iter()
            .map(|item| {
                let loc: Vec<String> = item
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .map(|p| match p {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let field: Vec<&String> = loc.iter().filter(|p| *p != "body").collect();
                if param.is_none() && !field.is_empty() {
                    param = Some(
                        field
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join("."),
                    );
                }
                let msg = item.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                if loc.is_empty() {
                    msg.to_string()
                } else {
                    format!("{}: {msg}", loc.join("."))
                }
            })
            .collect();
        return (parts.join("; "), param);
    }
    for key in ["message", "detail", "error"] {
        match v.get(key) {
            Some(Value::String(s)) => return (s.clone(), None),
            Some(other @ Value::Object(_)) => return (other.to_string(), None),
            _ => {}
        }
    }
    (v.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mistral_422_becomes_an_openai_error() {
        let body = json!({
            "object": "error",
            "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "logprobs"], "msg": "Extra inputs are not permitted", "input": true}]},
            "type": "invalid_request_error", "param": null, "code": null
        });
        let out: Value =
            serde_json::from_slice(&openai_error(422, body.to_string().as_bytes())).unwrap();
        assert_eq!(out["error"]["type"], "invalid_request_error");
        assert_eq!(out["error"]["param"], "logprobs");
        assert_eq!(
            out["error"]["message"],
            "body.logprobs: Extra inputs are not permitted"
        );
    }

    #[test]
    fn other_error_shapes() {
        let out: Value = serde_json::from_slice(&openai_error(
            401,
            br#"{"message":"Unauthorized","request_id":"x"}"#,
        ))
        .unwrap();
        assert_eq!(out["error"]["message"], "Unauthorized");
        assert_eq!(out["error"]["type"], "authentication_error");
        let out: Value = serde_json::from_slice(&openai_error(502, b"upstream exploded")).unwrap();
        assert_eq!(out["error"]["message"], "upstream exploded");
        let out: Value = serde_json::from_slice(&openai_error(429, b"")).unwrap();
        assert_eq!(out["error"]["message"], "Too Many Requests");
        assert_eq!(out["error"]["type"], "rate_limit_error");
        let already = br#"{"error":{"message":"m","type":"t","param":null,"code":"c"}}"#;
        assert_eq!(openai_error(400, already), already.to_vec());
    }
}
