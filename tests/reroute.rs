//! Reroutes end to end: the official `openai` SDK talks to api.openai.com;
//! policy sends personal data to a mock Mistral (TLS, as strict as Mistral
//! about unknown fields) and special-category data to a plain-HTTP mock
//! vLLM. The mocks record what they received.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MISTRAL_KEY: &str = "mistral-test-key-7f3a";
const CLIENT_KEY: &str = "sk-client-canary-5521";

fn vllm_handler() -> Handler {
    Arc::new(|req: &Recorded| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let model = body["model"].as_str().unwrap_or_default().to_string();
        if body["stream"] == true {
            let mut events: Vec<String> = ["local", " answer"]
                .iter()
                .map(|w| json!({"id": "v-s1", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]}).to_string())
                .collect();
            events.push(json!({"id": "v-s1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}).to_string());
            events.push("[DONE]".into());
            return MockResponse::Sse {
                events,
                gap: Duration::from_millis(10),
            };
        }
        MockResponse::json(
            200,
            json!({
                "id": "v-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "local answer"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
            }),
        )
    })
}

type World = targets::Reroute;

async fn world(models: &str) -> World {
    targets::reroute(targets::RerouteSetup {
        mistral_host: "api.mistral.ai",
        mistral_key: MISTRAL_KEY,
        mistral_models: models,
        vllm: vllm_handler(),
        vllm_native: &[],
        providers: Vec::new(),
    })
    .await
}

const SCRIPT: &str = r#"
import json, sys
import openai
from openai import OpenAI
mode, classification = sys.argv[1], sys.argv[2]
client = OpenAI(api_key=sys.argv[3], organization="org-canary", max_retries=0, timeout=30,
                default_headers={"x-data-classification": classification})
msgs = [{"role": "user", "content": "hello", "name": "alice"}]
out = {}
try:
    if mode == "chat":
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msgs, seed=7,
            max_completion_tokens=64, logprobs=True, top_logprobs=2, user="u-9", store=False, logit_bias={"1": 1})
        r = raw.parse()
        out = {"content": r.choices[0].message.content, "model": r.model, "usage": r.usage.total_tokens,
               "route": raw.headers.get("x-ecluse-route"), "original_model": raw.headers.get("x-ecluse-original-model")}
    elif mode == "stream":
        parts = []
        for chunk in client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True,
                stream_options={"include_usage": True}):
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        out = {"content": "".join(parts)}
    elif mode == "tools":
        r = client.chat.completions.create(model="gpt-4o", messages=msgs, tool_choice="auto", tools=[{
            "type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
        call = r.choices[0].message.tool_calls[0]
        out = {"tool": call.function.name, "arguments": json.loads(call.function.arguments)}
    elif mode == "json":
        r = client.chat.completions.create(model="gpt-4o", messages=msgs,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object",
            "properties": {"city": {"type": "string"}}}}})
        out = {"parsed": json.loads(r.choices[0].message.content)}
    elif mode == "embeddings":
        r = client.embeddings.create(model="text-embedding-3-small", input="hello")
        out = {"embedding": r.data[0].embedding}
    elif mode == "broken":
        client.chat.completions.create(model="gpt-4-broken", messages=[{"role": "user", "content": "x"}])
except openai.APIStatusError as e:
    out = {"status": e.status_code, "body": e.body}
print(json.dumps(out))
"#;

fn sdk(w: &World, mode: &str, classification: &str) -> Value {
    let stdout = sdk::run_python_sdk(
        SCRIPT,
        &[mode, classification, CLIENT_KEY],
        &w.proxy,
        &w.bundle,
        &[],
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{mode}: {e}: {stdout}"))
}

async fn sdk_async(w: &Arc<World>, mode: &'static str, classification: &'static str) -> Value {
    let w = w.clone();
    tokio::task::spawn_blocking(move || sdk(&w, mode, classification))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_answered_by_mistral_through_the_openai_sdk() {
    let w = Arc::new(
        world("{ gpt-4o: mistral-large-latest, text-embedding-3-small: mistral-embed }").await,
    );

    let chat = sdk_async(&w, "chat", "personal").await;
    assert_eq!(chat["content"], "Bonjour depuis Paris", "{chat}");
    assert_eq!(chat["model"], "mistral-large-latest");
    assert_eq!(chat["usage"], 16);
    assert_eq!(chat["route"], "mistral");
    assert_eq!(chat["original_model"], "gpt-4o");

    let stream = sdk_async(&w, "stream", "personal").await;
    assert_eq!(stream["content"], "Bonjour depuis Paris", "{stream}");

    let tools = sdk_async(&w, "tools", "personal").await;
    assert_eq!(tools["tool"], "get_weather");
    assert_eq!(tools["arguments"]["city"], "Paris");

    let json_mode = sdk_async(&w, "json", "personal").await;
    assert_eq!(json_mode["parsed"]["city"], "Paris");

    let embeddings = sdk_async(&w, "embeddings", "personal").await;
    assert_eq!(
        embeddings["embedding"],
        json!([0.25, -0.5, 0.125]),
        "{embeddings}"
    );

    assert!(
        w.openai.recorded().is_empty(),
        "personal data reached OpenAI"
    );
    let recorded = w.mistral.recorded();
    assert_eq!(recorded.len(), 5);
    for r in &recorded {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {MISTRAL_KEY}").as_str())
        );
        assert_eq!(r.header("host"), Some("api.mistral.ai"));
        for leaked in [
            "openai-organization",
            "openai-project",
            "x-api-key",
            "api-key",
            "x-data-classification",
        ] {
            assert!(r.header(leaked).is_none(), "{leaked} reached the target");
        }
        let all_headers = format!("{:?}", r.headers);
        assert!(
            !all_headers.contains(CLIENT_KEY),
            "the client's key reached Mistral"
        );
    }
    let chat_body: Value = serde_json::from_slice(&recorded[0].body).unwrap();
    assert_eq!(chat_body["model"], "mistral-large-latest");
    assert_eq!(chat_body["random_seed"], 7);
    assert_eq!(chat_body["max_tokens"], 64);
    for gone in [
        "seed",
        "logprobs",
        "top_logprobs",
        "user",
        "store",
        "logit_bias",
        "max_completion_tokens",
    ] {
        assert!(chat_body.get(gone).is_none(), "{gone} sent to Mistral");
    }
    assert!(chat_body["messages"][0].get("name").is_none());
    let stream_body: Value = serde_json::from_slice(&recorded[1].body).unwrap();
    assert!(stream_body.get("stream_options").is_none());
    let embed_body: Value = serde_json::from_slice(&recorded[4].body).unwrap();
    assert_eq!(embed_body["model"], "mistral-embed");
    assert!(
        w.proxy.logs().contains("tokens 12/3"),
        "streamed usage not read: {}",
        w.proxy.logs()
    );
    assert!(!w.proxy.logs().contains(MISTRAL_KEY) && !w.proxy.logs().contains(CLIENT_KEY));

    // Public data still goes to OpenAI, untouched.
    let public = sdk_async(&w, "chat", "public").await;
    assert_eq!(public["content"], "Hello from the mock");
    assert_eq!(w.openai.recorded().len(), 1);
    assert_eq!(
        w.openai.recorded()[0].header("authorization"),
        Some(format!("Bearer {CLIENT_KEY}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_category_data_goes_to_the_in_cluster_vllm() {
    let w = Arc::new(world("{ gpt-4o: mistral-large-latest }").await);
    let chat = sdk_async(&w, "chat", "special-category").await;
    assert_eq!(chat["content"], "local answer", "{chat}");
    assert_eq!(chat["route"], "vllm");
    let stream = sdk_async(&w, "stream", "special-category").await;
    assert_eq!(stream["content"], "local answer");
    let recorded = w.vllm.recorded();
    assert_eq!(recorded.len(), 2);
    let body: Value = serde_json::from_slice(&recorded[0].body).unwrap();
    assert_eq!(body["model"], "meta-llama/Llama-3.1-8B-Instruct");
    // vLLM takes OpenAI's fields as they are.
    assert_eq!(body["seed"], 7);
    assert!(
        recorded[0].header("authorization").is_none(),
        "no key configured, none sent"
    );
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert!(w.openai.recorded().is_empty() && w.mistral.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_errors_come_back_in_openai_shape() {
    let w = Arc::new(
        world("{ gpt-4o: mistral-large-latest, gpt-4-broken: mistral-extra-field }").await,
    );
    let out = sdk_async(&w, "broken", "personal").await;
    assert_eq!(out["status"], 422, "{out}");
    assert_eq!(out["body"]["param"], "model");
    assert!(out["body"]["message"]
        .as_str()
        .unwrap()
        .contains("Extra inputs are not permitted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_reread_when_it_rotates_and_missing_is_503() {
    let w = Arc::new(world("{ \"*\": mistral-large-latest }").await);
    assert_eq!(
        sdk_async(&w, "chat", "personal").await["content"],
        "Bonjour depuis Paris"
    );

    // Rotate to a key the mock refuses: the next call carries it (401 back).
    let rotated = w.key_file.with_extension("new");
    std::fs::write(&rotated, "rotated-key-0001").unwrap();
    std::fs::rename(&rotated, &w.key_file).unwrap();
    let out = sdk_async(&w, "chat", "personal").await;
    assert_eq!(out["status"], 401, "{out}");
    assert_eq!(out["body"]["type"], "authentication_error", "{out}");
    assert_eq!(
        w.mistral.recorded().last().unwrap().header("authorization"),
        Some("Bearer rotated-key-0001")
    );

    std::fs::remove_file(&w.key_file).unwrap();
    let before = w.mistral.recorded().len();
    let out = sdk_async(&w, "chat", "personal").await;
    assert_eq!(out["status"], 503, "{out}");
    assert!(
        out["body"]["message"].as_str().unwrap().contains("mistral"),
        "{out}"
    );
    assert_eq!(
        w.mistral.recorded().len(),
        before,
        "a call went out without a key"
    );
    assert!(
        w.openai.recorded().is_empty(),
        "a missing key fell back to the original destination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reroute_that_cannot_be_carried_out_is_a_403_never_a_garbled_call() {
    let w = world("{ gpt-4o: mistral-large-latest }").await;
    // No mapping for this model: refused, naming the target.
    let tls = w
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let mut req = post_json(
        "api.openai.com",
        "/v1/chat/completions",
        r#"{"model":"gpt-4.1","messages":[]}"#,
    );
    req.headers_mut()
        .insert("x-data-classification", "personal".parse().unwrap());
    let resp = http1_send(tls, req).await;
    assert_eq!(resp.status(), 403);
    let text = body_text(resp).await;
    assert!(
        text.contains("no model mapping") && text.contains("mistral"),
        "{text}"
    );
    assert!(w.mistral.recorded().is_empty() && w.openai.recorded().is_empty());

    // Models listing is rerouted too (GET /v1/models).
    let tls = w
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let req = hyper::Request::get("/v1/models")
        .header("host", "api.openai.com")
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("x-data-classification", "personal")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = http1_send(tls, req).await;
    assert_eq!(resp.status(), 200);
    assert!(body_text(resp).await.contains("mistral-large-latest"));
}

/// A rerouted call is translated as a document; a body whose document
/// would not fit memory (hundreds of thousands of tiny values) is refused
/// with the reason, not parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_complex_to_translate_is_refused_not_parsed() {
    let w = world("{}").await;
    let mut body = String::from(
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail jane@example.com"}],"metadata":{"t":["#,
    );
    for _ in 0..600_000 {
        body.push_str("1,");
    }
    body.push_str("1]}}");
    let tls = w
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(
        tls,
        post_json("api.openai.com", "/v1/chat/completions", &body),
    )
    .await;
    assert_eq!(resp.status(), 413);
    let text = body_text(resp).await;
    assert!(text.contains("JSON values"), "{text}");
    assert!(text.contains("rerouted to target mistral"), "{text}");
    assert!(w.mistral.recorded().is_empty() && w.openai.recorded().is_empty());
}

/// SECURITY #25, #26 and #40 end to end: every client credential header
/// stays behind on a reroute (the target sees only its own key), and
/// hop-by-hop headers, with those the client named in `Connection`, reach
/// neither the target nor the original destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_and_hop_by_hop_headers_never_reach_a_target() {
    let w = world("{ gpt-4o: mistral-large-latest }").await;
    const CREDENTIALS: &[(&str, &str)] = &[
        ("openai-organization", "org-canary-25"),
        ("openai-project", "proj-canary-25"),
        ("api-key", "azure-canary-25"),
        ("x-api-key", "anthropic-canary-25"),
        ("x-goog-api-key", "google-canary-25"),
        ("cookie", "session=cookie-canary-25"),
    ];
    const HOP_BY_HOP: &[(&str, &str)] = &[
        ("proxy-authorization", "Basic cHJveHktY2FuYXJ5LTI1"),
        ("connection", "keep-alive, x-hop-named"),
        ("x-hop-named", "named-in-connection"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "trailers"),
    ];
    let call = |classification: &str| {
        let mut req = post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#,
        );
        let headers = req.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {CLIENT_KEY}").parse().unwrap(),
        );
        headers.insert("x-data-classification", classification.parse().unwrap());
        headers.insert("x-app", "billing".parse().unwrap());
        for (k, v) in CREDENTIALS.iter().chain(HOP_BY_HOP) {
            headers.insert(*k, v.parse().unwrap());
        }
        req
    };
    let send = |req| async {
        let tls = w
            .proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        let resp = http1_send(tls, req).await;
        let status = resp.status().as_u16();
        (status, body_text(resp).await)
    };
    let gone = |r: &Recorded, names: &[(&str, &str)], to: &str| {
        for (name, value) in names {
            assert!(r.header(name).is_none(), "{name} reached {to}");
            let all = format!("{:?}", r.headers);
            assert!(!all.contains(value), "{value} of {name} reached {to}");
        }
        assert!(
            r.header("x-hop-named").is_none(),
            "x-hop-named reached {to}"
        );
    };

    let (status, text) = send(call("personal")).await;
    assert_eq!(status, 200, "{text}\n{}", w.proxy.logs());
    let recorded = w.mistral.recorded();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {MISTRAL_KEY}").as_str())
    );
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .count(),
        1
    );
    assert!(!format!("{:?}", r.headers).contains(CLIENT_KEY));
    gone(r, CREDENTIALS, "the reroute target");
    gone(r, HOP_BY_HOP, "the reroute target");
    assert!(w.openai.recorded().is_empty());

    // Allowed to its own destination, the client's credentials go with the
    // call; hop-by-hop headers never do.
    let (status, text) = send(call("public")).await;
    assert_eq!(status, 200, "{text}\n{}", w.proxy.logs());
    let recorded = w.openai.recorded();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {CLIENT_KEY}").as_str())
    );
    assert_eq!(r.header("openai-project"), Some("proj-canary-25"));
    assert_eq!(r.header("x-app"), Some("billing"));
    gone(r, HOP_BY_HOP, "OpenAI");

    let logs = w.proxy.logs();
    for (name, value) in CREDENTIALS.iter().chain(HOP_BY_HOP.iter().take(1)) {
        assert!(!logs.contains(value), "{name} in ecluse's log");
    }
    assert!(!logs.contains(CLIENT_KEY) && !logs.contains(MISTRAL_KEY));
}
