//! Reroute targets as mocks that speak their real wire format.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::sdk::ca_bundle;
use super::{openai_handler, Handler, MockResponse, MockUpstream, Proxy, Recorded, TestPki};

/// Fields Mistral's chat endpoint accepts; anything else is a 422, as on
/// the real API.
pub const MISTRAL_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "stream",
    "stop",
    "random_seed",
    "response_format",
    "tools",
    "tool_choice",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "prediction",
    "parallel_tool_calls",
    "safe_prompt",
    "prompt_mode",
];

/// Fields Mistral's embeddings endpoint accepts.
pub const MISTRAL_EMBED_FIELDS: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "output_dimension",
    "output_dtype",
];

/// Mistral's 422 for a field it does not know, at `loc`.
pub fn extra_forbidden(loc: Vec<Value>) -> MockResponse {
    MockResponse::json(
        422,
        json!({"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": loc, "msg": "Extra inputs are not permitted"}]}, "type": "invalid_request_error", "param": null, "code": null}),
    )
}

/// Mistral's 400 for a model it does not serve.
fn invalid_model(model: &str) -> MockResponse {
    MockResponse::json(
        400,
        json!({"object": "error", "message": format!("Invalid model: {model}"), "type": "invalid_model", "param": null, "code": "1500"}),
    )
}

/// One streamed chunk of a Mistral answer.
pub fn mistral_chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    json!({"id": "m-s1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
}

/// A mock of Mistral's API, as strict as Mistral about what it accepts,
/// for the API key `key`:
/// - `GET /v1/models` lists `mistral-large-latest`;
/// - `POST /v1/embeddings` answers a three-value embedding;
/// - `POST /v1/chat/completions` answers "Bonjour depuis Paris", a
///   `get_weather` tool call (id `call_w1`, city Paris) when tools are
///   offered, or `{"city": "Paris"}` when a `response_format` is asked;
///   JSON (usage 12/4) or SSE (usage 12/3 in a last chunk of its own), as
///   asked. The model `mistral-broken` is refused as Mistral refuses an
///   unknown model (400), and `mistral-extra-field` with a 422 on `model`.
///
/// Unknown fields, a `name` on a message other than a tool message, and
/// roles other than system/user/assistant/tool are 422s.
pub fn mistral_handler(key: &'static str) -> Handler {
    Arc::new(move |req: &Recorded| {
        if req.header("authorization") != Some(&format!("Bearer {key}")) {
            return MockResponse::json(401, json!({"message": "Unauthorized", "request_id": "r1"}));
        }
        let body = if req.method == "POST" {
            match serde_json::from_slice::<Value>(&req.body) {
                Ok(body) => body,
                Err(_) => return MockResponse::json(400, json!({"message": "not JSON"})),
            }
        } else {
            Value::Null
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/models") => MockResponse::json(
                200,
                json!({"object": "list", "data": [{"id": "mistral-large-latest", "object": "model"}]}),
            ),
            ("POST", "/v1/embeddings") => {
                if let Some(refused) = unknown_field(&body, MISTRAL_EMBED_FIELDS) {
                    return refused;
                }
                MockResponse::json(
                    200,
                    json!({
                        "id": "emb-1", "object": "list", "model": body["model"],
                        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
                        "usage": {"prompt_tokens": 3, "total_tokens": 3}
                    }),
                )
            }
            ("POST", "/v1/chat/completions") => chat(&body),
            _ => MockResponse::json(404, json!({"detail": "Not Found"})),
        }
    })
}

fn unknown_field(body: &Value, accepted: &[&str]) -> Option<MockResponse> {
    let key = body
        .as_object()
        .map(|o| o.keys())
        .into_iter()
        .flatten()
        .find(|k| !accepted.contains(&k.as_str()))?;
    Some(extra_forbidden(vec![json!("body"), json!(key)]))
}

fn chat(body: &Value) -> MockResponse {
    if let Some(refused) = unknown_field(body, MISTRAL_CHAT_FIELDS) {
        return refused;
    }
    for (i, m) in body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let role = m["role"].as_str().unwrap_or_default();
        if !["system", "user", "assistant", "tool"].contains(&role) {
            return MockResponse::json(
                422,
                json!({"object": "error", "message": format!("role {role} is not accepted")}),
            );
        }
        if m.get("name").is_some() && role != "tool" {
            return extra_forbidden(vec![
                json!("body"),
                json!("messages"),
                json!(i),
                json!("name"),
            ]);
        }
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    match model.as_str() {
        "mistral-broken" => return invalid_model(&model),
        "mistral-extra-field" => return extra_forbidden(vec![json!("body"), json!("model")]),
        _ => {}
    }
    let tools = body.get("tools").is_some();
    let json_mode = body["response_format"]["type"].as_str().is_some();
    if body["stream"] == true {
        let mut events = if tools {
            vec![
                mistral_chunk(
                    &model,
                    json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
                    None,
                ),
                mistral_chunk(
                    &model,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
                    None,
                ),
                mistral_chunk(
                    &model,
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
                    None,
                ),
                mistral_chunk(&model, json!({}), Some("tool_calls")),
            ]
        } else {
            let mut words = vec![mistral_chunk(
                &model,
                json!({"role": "assistant", "content": ""}),
                None,
            )];
            words.extend(
                ["Bonjour", " depuis", " Paris"]
                    .iter()
                    .map(|w| mistral_chunk(&model, json!({"content": w}), None)),
            );
            words.push(mistral_chunk(&model, json!({}), Some("stop")));
            words
        };
        events.push(
            json!({"id": "m-s1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
                   "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
            .to_string(),
        );
        events.push("[DONE]".into());
        return MockResponse::Sse {
            events,
            gap: Duration::from_millis(5),
        };
    }
    let (message, finish) = if tools {
        (
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}),
            "tool_calls",
        )
    } else if json_mode {
        (
            json!({"role": "assistant", "content": "{\"city\": \"Paris\"}"}),
            "stop",
        )
    } else {
        (
            json!({"role": "assistant", "content": "Bonjour depuis Paris"}),
            "stop",
        )
    };
    MockResponse::json(
        200,
        json!({
            "id": "m-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}
        }),
    )
}

/// What [`reroute`] sets up beyond OpenAI and the two targets.
pub struct RerouteSetup<'a> {
    /// The host of the Mistral mock ([`mistral_handler`]).
    pub mistral_host: &'a str,
    pub mistral_key: &'static str,
    /// The Mistral target's `models` table, as a YAML flow mapping.
    pub mistral_models: &'a str,
    /// The in-cluster vLLM (plain HTTP at `vllm.llm.svc`), its `native`
    /// APIs, and all its models mapped to `meta-llama/Llama-3.1-8B-Instruct`.
    pub vllm: Handler,
    pub vllm_native: &'a [&'a str],
    /// Other providers an app may call, each a TLS mock: (host, handler).
    pub providers: Vec<(&'a str, Handler)>,
}

/// ecluse with its default policy in front of OpenAI (a mock with
/// [`openai_handler`]) and other providers, rerouting to a Mistral mock
/// and a vLLM mock; and the CA bundle apps trust.
pub struct Reroute {
    pub pki: TestPki,
    pub openai: MockUpstream,
    /// The mocks of [`RerouteSetup::providers`], in order.
    pub providers: Vec<MockUpstream>,
    pub mistral: MockUpstream,
    pub vllm: MockUpstream,
    pub proxy: Proxy,
    /// The file ecluse reads Mistral's key from.
    pub key_file: PathBuf,
    pub bundle: PathBuf,
}

pub async fn reroute(setup: RerouteSetup<'_>) -> Reroute {
    let pki = TestPki::new();
    let tls = |host: &str| Some(pki.server_config(&[host]));
    let openai = MockUpstream::start(tls("api.openai.com"), openai_handler()).await;
    let mut providers = Vec::new();
    let mut resolve = format!("    \"api.openai.com:443\": \"{}\"\n", openai.addr);
    for (host, handler) in setup.providers {
        let mock = MockUpstream::start(tls(host), handler).await;
        resolve.push_str(&format!("    \"{host}:443\": \"{}\"\n", mock.addr));
        providers.push(mock);
    }
    let mistral_host = setup.mistral_host;
    let mistral = MockUpstream::start(tls(mistral_host), mistral_handler(setup.mistral_key)).await;
    let vllm = MockUpstream::start(None, setup.vllm).await;
    let vllm_port = vllm.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mistral-key");
    std::fs::write(&key_file, format!("{}\n", setup.mistral_key)).unwrap();
    let yaml = format!(
        r#"upstream:
  extra_ca_file: {ca}
  resolve:
{resolve}    "{mistral_host}:443": "{mistral}"
    "vllm.llm.svc:{vllm_port}": "{vllm}"
targets:
  mistral:
    base_url: https://{mistral_host}/v1
    api_key_file: {key}
    models: {models}
  vllm:
    base_url: http://vllm.llm.svc:{vllm_port}/v1
    native: [{native}]
    models: {{ "*": meta-llama/Llama-3.1-8B-Instruct }}
"#,
        ca = pki.ca_path.display(),
        mistral = mistral.addr,
        vllm = vllm.addr,
        key = key_file.display(),
        models = setup.mistral_models,
        native = setup.vllm_native.join(", "),
    );
    let proxy = Proxy::start_in(dir, &yaml);
    let bundle = ca_bundle(&proxy);
    Reroute {
        pki,
        openai,
        providers,
        mistral,
        vllm,
        proxy,
        key_file,
        bundle,
    }
}
