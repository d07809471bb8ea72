//! Reroutes: the targets a decision may send a call to, and the pure
//! rewrite of an OpenAI call into a call to that target.

pub mod answer;
pub mod anthropic;
pub mod key;
pub mod responses;
pub mod translate;
pub mod url;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::TargetConfig;
use crate::entity::{Kind, Registry};
use key::KeyFile;
pub use translate::Dialect;
pub use url::TargetUrl;

/// A configured target, ready to serve reroutes.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub url: TargetUrl,
    pub dialect: Dialect,
    pub models: BTreeMap<String, String>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub key: Option<KeyFile>,
    /// Source APIs the target serves as they are (`responses`, `messages`).
    pub native: Vec<String>,
}

fn parse_native(names: &[String]) -> Result<Vec<String>, String> {
    for name in names {
        if !matches!(name.as_str(), "responses" | "messages") {
            return Err(format!("native {name:?} is not one of responses, messages"));
        }
    }
    Ok(names.to_vec())
}

impl Target {
    pub fn from_config(name: &str, config: &TargetConfig) -> Result<Target, String> {
        let url = TargetUrl::parse(&config.base_url)?;
        let dialect = match &config.api {
            Some(api) => Dialect::from_name(api)
                .ok_or_else(|| format!("api {api:?} is not one of mistral, openai"))?,
            None if url.authority.host.ends_with("mistral.ai") => Dialect::Mistral,
            None => Dialect::OpenAi,
        };
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header {k:?} is not a valid name"))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| format!("header {k:?} has an invalid value"))?;
            headers.push((name, value));
        }
        Ok(Target {
            name: name.to_string(),
            url,
            dialect,
            models: config.models.clone(),
            headers,
            key: config.api_key_file.as_deref().map(KeyFile::new),
            native: parse_native(&config.native)?,
        })
    }

    /// The operations of source API `api` that the target can take, by
    /// translation or natively.
    pub fn operations(&self, api: &str) -> Vec<&'static str> {
        let chat = self.dialect.path_for("chat").is_some();
        match api {
            "openai" => {
                let mut ops = self.dialect.operations();
                if chat || self.serves_natively("responses") {
                    ops.push("responses");
                }
                ops
            }
            "anthropic" if chat || self.serves_natively("messages") => vec!["messages"],
            _ => Vec::new(),
        }
    }

    /// Whether the target serves `operation` itself (`targets.*.native`).
    pub fn serves_natively(&self, operation: &str) -> bool {
        self.native.iter().any(|n| n == operation)
    }

    /// The model to ask the target for: the decision's choice, the exact
    /// mapping, the `"*"` fallback, in that order.
    pub fn map_model(&self, requested: Option<&str>, decided: Option<&str>) -> Option<String> {
        if let Some(m) = decided {
            return Some(m.to_string());
        }
        requested
            .and_then(|m| self.models.get(m))
            .or_else(|| self.models.get("*"))
            .cloned()
    }
}

/// Builds the targets of a config; every problem is listed.
pub fn targets_from_config(
    configs: &BTreeMap<String, TargetConfig>,
) -> Result<BTreeMap<String, Target>, Vec<String>> {
    let mut targets = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, config) in configs {
        match Target::from_config(name, config) {
            Ok(t) => {
                targets.insert(name.clone(), t);
            }
            Err(e) => problems.push(format!("targets.{name}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(problems)
    }
}

/// `data.targets` for policies: per target, the operations it serves and
/// the registry's facts about who runs it.
pub fn targets_data(targets: &BTreeMap<String, Target>, registry: &Registry) -> Value {
    let mut out = serde_json::Map::new();
    for (name, target) in targets {
        let provider = registry.lookup(&target.url.authority.host);
        out.insert(
            name.clone(),
            json!({
                "host": target.url.authority.host,
                "api": target.dialect.name(),
                "operations": target.operations("openai"),
                "apis": {
                    "openai": target.operations("openai"),
                    "anthropic": target.operations("anthropic"),
                },
                "provider": provider.map(|p| p.id.clone()),
                "in_cluster": provider.is_some_and(|p| p.kind == Kind::InCluster),
                "entity": provider.map(|p| serde_json::to_value(&p.entity).unwrap_or(Value::Null)),
                "retention": provider.map(|p| json!({
                    "default": p.retention.default,
                    "zero_retention_available": p.retention.zero_retention_available,
                })),
                "models": target.models,
            }),
        );
    }
    Value::Object(out)
}

/// Why a reroute cannot be carried out; each is a 403 or 503 naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the decision routes this call to target {0:?}, which is not configured")]
    UnknownTarget(String),
    #[error("a {api} call cannot be rerouted: only OpenAI (chat, completions, embeddings, responses) and Anthropic Messages calls are translated")]
    UnsupportedApi { api: String },
    #[error("target {target} does not serve {operation} calls")]
    UnsupportedOperation { target: String, operation: String },
    #[error(
        "{feature} stays with the provider that holds it and cannot be rerouted to target {target}"
    )]
    Stateful { target: String, feature: String },
    #[error("target {target} has no model mapping for {model:?} (add it, or \"*\", to targets.{target}.models)")]
    NoModel { target: String, model: String },
    #[error("the request body cannot be translated for target {target}: {why}")]
    Body { target: String, why: String },
    #[error("target {target}'s API key is unavailable: {why}")]
    Key { target: String, why: String },
}

/// The call a decision reroutes, as parsed.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The API flavour the call was parsed as (`openai`, `anthropic`, ...).
    pub api: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub method: &'a str,
    /// Origin-form path, query included.
    pub path: &'a str,
    /// The body as a document, when it is JSON.
    pub body: Option<&'a Value>,
}

/// What the target's answer must become for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerShape {
    /// The target answers in the API the app called.
    AsIs,
    /// Chat completions back into OpenAI's Responses API.
    Responses { stream: bool },
    /// Chat completions back into Anthropic's Messages API.
    AnthropicMessages { stream: bool },
}

impl AnswerShape {
    /// The rewriter of a successful answer; `model` is named in it.
    pub fn translator(self, model: &str) -> Option<Box<dyn answer::AnswerTranslator>> {
        match self {
            AnswerShape::AsIs => None,
            AnswerShape::Responses { stream } => Some(responses::answer_translator(stream, model)),
            AnswerShape::AnthropicMessages { stream } => {
                Some(anthropic::answer_translator(stream, model))
            }
        }
    }
}

/// How a call is sent to a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub original_model: Option<String>,
    pub target_model: Option<String>,
    pub answer: AnswerShape,
}

/// Plans the rewrite of `call` for `target`: OpenAI calls in the target's
/// dialect, Responses and Anthropic Messages calls translated to chat
/// completions unless the target serves them itself.
pub fn plan(
    target: &Target,
    call: &Call<'_>,
    decided_model: Option<&str>,
) -> Result<Plan, RouteError> {
    let operation = call.operation.unwrap_or("unrecognised");
    if let Some(feature) = stateful_feature(call) {
        return Err(RouteError::Stateful {
            target: target.name.clone(),
            feature,
        });
    }
    let stream = call
        .body
        .and_then(|b| b.get("stream"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (source, answer): (Option<SourceApi>, AnswerShape) = match (call.api, operation) {
        (Some("openai"), "responses") if target.serves_natively("responses") => {
            (None, AnswerShape::AsIs)
        }
        (Some("openai"), "responses") => (
            Some(SourceApi::Responses),
            AnswerShape::Responses { stream },
        ),
        (Some("anthropic"), "messages") if target.serves_natively("messages") => {
            (None, AnswerShape::AsIs)
        }
        (Some("anthropic"), "messages") => (
            Some(SourceApi::AnthropicMessages),
            AnswerShape::AnthropicMessages { stream },
        ),
        (Some("openai"), _) => (None, AnswerShape::AsIs),
        (api, _) => {
            return Err(RouteError::UnsupportedApi {
                api: api.unwrap_or("unrecognised").to_string(),
            })
        }
    };
    // What is asked of the target: chat completions for a translated call.
    let target_operation = if source.is_some() { "chat" } else { operation };
    let native = source.is_none() && matches!(operation, "responses" | "messages");
    let suffix = if native {
        if operation == "responses" {
            "/responses"
        } else {
            "/messages"
        }
    } else {
        target.dialect.path_for(target_operation).ok_or_else(|| {
            RouteError::UnsupportedOperation {
                target: target.name.clone(),
                operation: operation.to_string(),
            }
        })?
    };
    let path = format!("{}{suffix}", target.url.prefix);
    if operation == "models" {
        return Ok(Plan {
            path,
            body: None,
            original_model: None,
            target_model: None,
            answer,
        });
    }
    let body_error = |why: String| RouteError::Body {
        target: target.name.clone(),
        why,
    };
    let body = call
        .body
        .ok_or_else(|| body_error("the body is not JSON".into()))?;
    let original = body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let model = target
        .map_model(original.as_deref(), decided_model)
        .ok_or_else(|| RouteError::NoModel {
            target: target.name.clone(),
            model: original.clone().unwrap_or_default(),
        })?;
    let translated = match source {
        Some(source) => {
            let chat = source.request_to_chat(body).map_err(body_error)?;
            target.dialect.translate("chat", &chat, &model)
        }
        None if native => Ok(with_model(body, &model)),
        None => target.dialect.translate(operation, body, &model),
    }
    .map_err(body_error)?;
    let bytes = serde_json::to_vec(&translated).map_err(|e| body_error(e.to_string()))?;
    Ok(Plan {
        path,
        body: Some(bytes),
        original_model: original,
        target_model: Some(model),
        answer,
    })
}

/// The source APIs that are translated to chat completions.
#[derive(Debug, Clone, Copy)]
enum SourceApi {
    Responses,
    AnthropicMessages,
}

impl SourceApi {
    fn request_to_chat(self, body: &Value) -> Result<Value, String> {
        match self {
            SourceApi::Responses => responses::request_to_chat(body),
            SourceApi::AnthropicMessages => anthropic::request_to_chat(body),
        }
    }
}

fn with_model(body: &Value, model: &str) -> Value {
    let mut out = body.clone();
    if let Value::Object(fields) = &mut out {
        fields.insert("model".into(), Value::String(model.to_string()));
    }
    out
}

/// Calls that act on state a provider keeps (stored responses,
/// conversations, uploaded files, batches, assistants' threads): the state
/// does not exist at any other provider, so they are never rerouted.
fn stateful_feature(call: &Call<'_>) -> Option<String> {
    let path = call.path.split('?').next().unwrap_or(call.path);
    let tail = path
        .trim_start_matches("/openai")
        .trim_start_matches("/v1")
        .trim_start_matches('/');
    let first = tail.split('/').next().unwrap_or("");
    if call.api == Some("openai") || call.api.is_none() {
        match first {
            "responses" if tail.trim_end_matches('/') != "responses" => {
                return Some(format!("a stored response ({} /v1/{tail})", call.method))
            }
            "conversations" => return Some(format!("a conversation ({} /v1/{tail})", call.method)),
            "files" | "uploads" | "batches" | "threads" | "assistants" | "vector_stores"
            | "containers" | "fine_tuning" => {
                return Some(format!("/v1/{first} ({} /v1/{tail})", call.method))
            }
            _ => {}
        }
    }
    if call.api == Some("anthropic")
        && matches!(first, "files" | "messages")
        && tail.starts_with("messages/batches")
    {
        return Some(format!("a message batch ({} /v1/{tail})", call.method));
    }
    let body = call.body?;
    if call.api == Some("openai") && call.operation == Some("responses") {
        for (field, feature) in [
            (
                "previous_response_id",
                "previous_response_id (a response stored by the original provider)",
            ),
            (
                "conversation",
                "conversation (a conversation stored by the original provider)",
            ),
            (
                "prompt",
                "prompt (a prompt template stored by the original provider)",
            ),
        ] {
            if body.get(field).is_some_and(|v| !v.is_null()) {
                return Some(feature.to_string());
            }
        }
        if body.get("background").and_then(Value::as_bool) == Some(true) {
            return Some(
                "background: true (a response run and stored by the original provider)".into(),
            );
        }
    }
    None
}

/// Checks every target's key file once at start, for `ecluse check`.
pub fn check_key_files(targets: &BTreeMap<String, Target>) -> Vec<String> {
    targets
        .values()
        .filter_map(|t| {
            let key = t.key.as_ref()?;
            key.read().err().map(|e| format!("targets.{}: {e}", t.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base_url: &str, models: &[(&str, &str)]) -> Target {
        Target::from_config(
            "t",
            &TargetConfig {
                base_url: base_url.into(),
                models: models
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn base_urls() {
        let u = TargetUrl::parse("https://api.mistral.ai/v1").unwrap();
        assert_eq!(
            (u.tls, u.authority.to_string(), u.prefix.as_str()),
            (true, "api.mistral.ai:443".into(), "/v1")
        );
        let u = TargetUrl::parse("http://vllm.llm.svc:8000/v1/").unwrap();
        assert_eq!(
            (u.tls, u.authority.port, u.prefix.as_str()),
            (false, 8000, "/v1")
        );
        let u = TargetUrl::parse("http://[fd00::1]/").unwrap();
        assert_eq!(
            (
                u.authority.host.as_str(),
                u.authority.port,
                u.prefix.as_str()
            ),
            ("fd00::1", 80, "")
        );
        for bad in [
            "ftp://x",
            "api.mistral.ai",
            "https://",
            "https://h/v1?x=1",
            "https://h:99999",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_mapping_order() {
        let t = target(
            "https://api.mistral.ai/v1",
            &[
                ("gpt-4o", "mistral-large-latest"),
                ("*", "mistral-small-latest"),
            ],
        );
        assert_eq!(t.dialect, Dialect::Mistral);
        assert_eq!(
            t.map_model(Some("gpt-4o"), None).unwrap(),
            "mistral-large-latest"
        );
        assert_eq!(
            t.map_model(Some("gpt-4.1"), None).unwrap(),
            "mistral-small-latest"
        );
        assert_eq!(
            t.map_model(Some("gpt-4o"), Some("codestral")).unwrap(),
            "codestral"
        );
        let strict = target(
            "https://api.mistral.ai/v1",
            &[("gpt-4o", "mistral-large-latest")],
        );
        assert!(strict.map_model(Some("gpt-4.1"), None).is_none());
    }

    fn call<'a>(
        api: &'a str,
        operation: &'a str,
        path: &'a str,
        body: Option<&'a Value>,
    ) -> Call<'a> {
        Call {
            api: Some(api),
            operation: Some(operation),
            method: if body.is_some() { "POST" } else { "GET" },
            path,
            body,
        }
    }

    #[test]
    fn plans() {
        let t = target(
            "https://api.mistral.ai/v1",
            &[("gpt-4o", "mistral-large-latest")],
        );
        let body = json!({"model": "gpt-4o", "messages": [], "seed": 7});
        let p = plan(
            &t,
            &call("openai", "chat", "/v1/chat/completions", Some(&body)),
            None,
        )
        .unwrap();
        assert_eq!(p.path, "/v1/chat/completions");
        assert_eq!(p.answer, AnswerShape::AsIs);
        let sent: Value = serde_json::from_slice(&p.body.unwrap()).unwrap();
        assert_eq!(sent["model"], "mistral-large-latest");
        assert_eq!(sent["random_seed"], 7);
        assert_eq!(p.original_model.as_deref(), Some("gpt-4o"));

        let err = plan(
            &t,
            &call(
                "gemini",
                "generate_content",
                "/v1beta/models/g:generateContent",
                Some(&body),
            ),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, RouteError::UnsupportedApi { .. }));
        let err = plan(
            &t,
            &call("openai", "completions", "/v1/completions", Some(&body)),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, RouteError::UnsupportedOperation { .. }),
            "{err}"
        );
        let err = plan(
            &t,
            &call(
                "openai",
                "chat",
                "/v1/chat/completions",
                Some(&json!({"model": "o3"})),
            ),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, RouteError::NoModel { .. }));
        let models = plan(&t, &call("openai", "models", "/v1/models", None), None).unwrap();
        assert_eq!((models.path.as_str(), models.body), ("/v1/models", None));
    }

    #[test]
    fn responses_and_messages_go_to_chat_unless_the_target_serves_them() {
        let mistral = target(
            "https://api.mistral.ai/v1",
            &[("*", "mistral-large-latest")],
        );
        let body = json!({"model": "gpt-4o", "input": "hi", "stream": true});
        let p = plan(
            &mistral,
            &call("openai", "responses", "/v1/responses", Some(&body)),
            None,
        );
        // The request side is the translation module's; the plan's own part
        // is where it goes and how the answer comes back.
        if let Ok(p) = p {
            assert_eq!(p.path, "/v1/chat/completions");
            assert_eq!(p.answer, AnswerShape::Responses { stream: true });
        }
        let mut vllm = Target::from_config(
            "vllm",
            &TargetConfig {
                base_url: "http://vllm:8000/v1".into(),
                models: [("*".to_string(), "llama".to_string())].into(),
                native: vec!["responses".into(), "messages".into()],
                ..TargetConfig::default()
            },
        )
        .unwrap();
        let p = plan(
            &vllm,
            &call("openai", "responses", "/v1/responses", Some(&body)),
            None,
        )
        .unwrap();
        assert_eq!(
            (p.path.as_str(), p.answer),
            ("/v1/responses", AnswerShape::AsIs)
        );
        let sent: Value = serde_json::from_slice(&p.body.unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({"model": "llama", "input": "hi", "stream": true})
        );
        let claude = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": []});
        let p = plan(
            &vllm,
            &call("anthropic", "messages", "/v1/messages", Some(&claude)),
            None,
        )
        .unwrap();
        assert_eq!(
            (p.path.as_str(), p.answer),
            ("/v1/messages", AnswerShape::AsIs)
        );
        assert_eq!(p.original_model.as_deref(), Some("claude-sonnet-4-5"));
        vllm.native.clear();
        assert_eq!(vllm.operations("anthropic"), vec!["messages"]);
        assert!(vllm.operations("openai").contains(&"responses"));
        assert!(vllm.operations("gemini").is_empty());
        assert!(Target::from_config(
            "x",
            &TargetConfig {
                base_url: "http://vllm:8000/v1".into(),
                native: vec!["assistants".into()],
                ..TargetConfig::default()
            }
        )
        .is_err());
    }

    #[test]
    fn state_kept_by_the_original_provider_is_never_rerouted() {
        let t = target(
            "https://api.mistral.ai/v1",
            &[("*", "mistral-large-latest")],
        );
        let cases: &[(&str, &str, &str, Option<Value>, &str)] = &[
            (
                "openai",
                "GET",
                "/v1/responses/resp_123",
                None,
                "stored response",
            ),
            (
                "openai",
                "DELETE",
                "/v1/responses/resp_123",
                None,
                "stored response",
            ),
            (
                "openai",
                "GET",
                "/v1/responses/resp_1/input_items?limit=2",
                None,
                "stored response",
            ),
            (
                "openai",
                "POST",
                "/v1/conversations",
                Some(json!({})),
                "conversation",
            ),
            ("openai", "POST", "/v1/files", Some(json!({})), "/v1/files"),
            (
                "openai",
                "POST",
                "/v1/responses",
                Some(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})),
                "previous_response_id",
            ),
            (
                "openai",
                "POST",
                "/v1/responses",
                Some(json!({"model": "m", "input": "x", "conversation": "conv_1"})),
                "conversation",
            ),
            (
                "openai",
                "POST",
                "/v1/responses",
                Some(json!({"model": "m", "input": "x", "background": true})),
                "background",
            ),
            (
                "openai",
                "POST",
                "/v1/responses",
                Some(json!({"model": "m", "prompt": {"id": "pmpt_1"}})),
                "prompt",
            ),
            (
                "anthropic",
                "POST",
                "/v1/messages/batches",
                Some(json!({})),
                "message batch",
            ),
        ];
        for (api, method, path, body, feature) in cases {
            let operation = if *path == "/v1/responses" {
                Some("responses")
            } else {
                None
            };
            let c = Call {
                api: Some(api),
                operation,
                method,
                path,
                body: body.as_ref(),
            };
            let err = plan(&t, &c, None).unwrap_err();
            assert!(matches!(err, RouteError::Stateful { .. }), "{path}: {err}");
            assert!(err.to_string().contains(feature), "{path}: {err}");
        }
    }
}
