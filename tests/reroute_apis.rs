//! Reroutes of the APIs apps use besides chat completions, end to end with
//! the official SDKs through HTTPS_PROXY: OpenAI's Responses API
//! (`openai`) and Anthropic's Messages API (`anthropic`), with personal data,
//! answered by a mock Mistral that speaks only chat completions (JSON and
//! SSE, tool calls included), and translated back into each API.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const MISTRAL_KEY: &str = "mistral-test-key-91c2";
const CLIENT_KEY: &str = "sk-client-canary-7730";

/// An in-cluster vLLM that serves the Responses API itself.
fn vllm_handler() -> Handler {
    Arc::new(|req: &Recorded| {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if (req.method.as_str(), req.path.as_str()) != ("POST", "/v1/responses") {
            return MockResponse::json(404, json!({"detail": "Not Found"}));
        }
        MockResponse::json(
            200,
            json!({
                "id": "resp_vllm1", "object": "response", "created_at": 1_700_000_000, "status": "completed",
                "model": body["model"], "output": [{"type": "message", "id": "msg_v1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "local answer", "annotations": []}]}],
                "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
                "usage": {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11,
                          "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
            }),
        )
    })
}

/// The reroute set-up, with Anthropic among the providers (never reached).
struct World {
    reroute: targets::Reroute,
    anthropic: MockUpstream,
}

impl std::ops::Deref for World {
    type Target = targets::Reroute;

    fn deref(&self) -> &targets::Reroute {
        &self.reroute
    }
}

async fn world() -> World {
    let mut reroute = targets::reroute(targets::RerouteSetup {
        mistral_host: "api.eu.mistral.ai",
        mistral_key: MISTRAL_KEY,
        mistral_models:
            "{ gpt-4o: mistral-large-latest, claude-sonnet-4-5: mistral-medium-latest, \
                         claude-broken: mistral-broken, \"*\": mistral-small-latest }",
        vllm: vllm_handler(),
        vllm_native: &["responses"],
        providers: vec![(
            "api.anthropic.com",
            Arc::new(|_: &Recorded| MockResponse::json(500, json!({"reached": "anthropic"}))),
        )],
    })
    .await;
    let anthropic = reroute.providers.remove(0);
    World { reroute, anthropic }
}

const SCRIPT: &str = r#"
import json, sys
mode, key = sys.argv[1], sys.argv[2]
headers = {"x-data-classification": "personal"}
weather_schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
out = {}
if mode.startswith("responses"):
    import openai
    client = openai.OpenAI(api_key=key, max_retries=0, timeout=30, default_headers=headers)
    try:
        if mode == "responses":
            raw = client.responses.with_raw_response.create(model="gpt-4o", instructions="Be brief.",
                input="Where is Marie Dupont, IBAN FR1420041010050500013M02606?")
            r = raw.parse()
            out = {"text": r.output_text, "usage": [r.usage.input_tokens, r.usage.output_tokens],
                   "route": raw.headers.get("x-ecluse-route")}
        elif mode == "responses_stream":
            deltas = []
            with client.responses.stream(model="gpt-4o", input=[{"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": "Hello, I am marie.dupont@example.fr"}]) as s:
                for event in s:
                    if event.type == "response.output_text.delta":
                        deltas.append(event.delta)
                final = s.get_final_response()
            out = {"deltas": deltas, "text": final.output_text, "usage": final.usage.output_tokens}
        elif mode == "responses_tools":
            r = client.responses.create(model="gpt-4o", input="Weather for marie.dupont@example.fr?",
                tools=[{"type": "function", "name": "get_weather", "parameters": weather_schema}])
            calls = [i for i in r.output if i.type == "function_call"]
            out = {"tool": calls[0].name, "arguments": json.loads(calls[0].arguments), "call_id": calls[0].call_id}
        elif mode == "responses_special":
            r = client.with_options(default_headers={"x-data-classification": "special-category"}).responses.create(
                model="gpt-4o", input="Patient record")
            out = {"text": r.output_text, "usage": r.usage.total_tokens}
        elif mode == "responses_stateful":
            client.responses.create(model="gpt-4o", input="And marie.dupont@example.fr?",
                previous_response_id="resp_abc123")
    except openai.APIStatusError as e:
        out = {"status": e.status_code, "message": str(e)}
else:
    import anthropic
    client = anthropic.Anthropic(api_key=key, max_retries=0, timeout=30, default_headers=headers)
    msgs = [{"role": "user", "content": "Hello, I am marie.dupont@example.fr"}]
    tools = [{"name": "get_weather", "description": "Weather", "input_schema": weather_schema}]
    try:
        if mode == "messages":
            raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=100,
                system="Be brief.", messages=msgs)
            r = raw.parse()
            out = {"text": r.content[0].text, "stop": r.stop_reason, "usage": [r.usage.input_tokens, r.usage.output_tokens],
                   "route": raw.headers.get("x-ecluse-route")}
        elif mode == "messages_stream":
            parts = []
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=msgs) as s:
                for text in s.text_stream:
                    parts.append(text)
                final = s.get_final_message()
            out = {"parts": parts, "text": final.content[0].text, "stop": final.stop_reason,
                   "usage": final.usage.output_tokens}
        elif mode == "messages_tools":
            r = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, messages=msgs, tools=tools)
            use = [b for b in r.content if b.type == "tool_use"][0]
            out = {"tool": use.name, "input": use.input, "stop": r.stop_reason}
        elif mode == "messages_tools_stream":
            with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, messages=msgs, tools=tools) as s:
                final = s.get_final_message()
            use = [b for b in final.content if b.type == "tool_use"][0]
            out = {"tool": use.name, "input": use.input, "stop": final.stop_reason}
        elif mode == "messages_target_error":
            client.messages.create(model="claude-broken", max_tokens=10, messages=msgs)
        elif mode == "messages_tool_result":
            r = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, tools=tools, messages=msgs + [
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}]}])
            out = {"stop": r.stop_reason}
    except anthropic.APIStatusError as e:
        out = {"status": e.status_code, "message": str(e), "type": type(e).__name__, "body": e.body}
print(json.dumps(out))
"#;

fn sdk(w: &World, mode: &str) -> Value {
    let stdout = sdk::run_python_sdk(SCRIPT, &[mode, CLIENT_KEY], &w.proxy, &w.bundle, &[]);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{mode}: {e}: {stdout}"))
}

/// [`sdk`] off the async runtime, which the proxy's mocks run on.
async fn run(w: &Arc<World>, mode: &'static str) -> Value {
    let w = w.clone();
    tokio::task::spawn_blocking(move || sdk(&w, mode))
        .await
        .unwrap()
}

fn sent_to_mistral(w: &World, n: usize) -> Value {
    let recorded = w.mistral.recorded();
    let r = recorded
        .get(n)
        .unwrap_or_else(|| panic!("call {n} never reached the target: {}", w.proxy.logs()));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {MISTRAL_KEY}").as_str())
    );
    for leaked in ["x-api-key", "anthropic-version", "x-data-classification"] {
        assert!(r.header(leaked).is_none(), "{leaked} reached the target");
    }
    assert!(!format!("{:?}", r.headers).contains(CLIENT_KEY));
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_calls_are_rerouted_and_answered_as_responses() {
    let w = Arc::new(world().await);

    let created = run(&w, "responses").await;
    assert_eq!(created["text"], "Bonjour depuis Paris", "{created}");
    assert_eq!(created["usage"], json!([12, 4]));
    assert_eq!(created["route"], "mistral");
    let sent = sent_to_mistral(&w, 0);
    assert_eq!(sent["model"], "mistral-large-latest");
    assert_eq!(sent["messages"][0]["role"], "system");

    let streamed = run(&w, "responses_stream").await;
    assert_eq!(
        streamed["deltas"],
        json!(["Bonjour", " depuis", " Paris"]),
        "{streamed}"
    );
    assert_eq!(streamed["text"], "Bonjour depuis Paris");
    assert_eq!(streamed["usage"], 3);
    let sent = sent_to_mistral(&w, 1);
    assert_eq!(sent["stream"], true);
    // Mistral has no `developer` role.
    assert_eq!(sent["messages"][0]["role"], "system");

    let tools = run(&w, "responses_tools").await;
    assert_eq!(tools["tool"], "get_weather", "{tools}");
    assert_eq!(tools["arguments"]["city"], "Paris");
    assert_eq!(tools["call_id"], "call_w1");
    assert_eq!(
        sent_to_mistral(&w, 2)["tools"][0]["function"]["name"],
        "get_weather"
    );

    // Special-category data goes to the in-cluster vLLM, which serves the
    // Responses API itself: sent as it is, model mapped.
    let special = run(&w, "responses_special").await;
    assert_eq!(special["text"], "local answer", "{special}");
    assert_eq!(special["usage"], 11);
    let native = w.vllm.recorded();
    assert_eq!(native.len(), 1);
    assert_eq!(native[0].path, "/v1/responses");
    let sent: Value = serde_json::from_slice(&native[0].body).unwrap();
    assert_eq!(sent["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(sent["input"], "Patient record");
    assert!(native[0].header("authorization").is_none());

    // State kept by OpenAI cannot move: refused, and sent nowhere.
    let stateful = run(&w, "responses_stateful").await;
    assert_eq!(stateful["status"], 403, "{stateful}");
    assert!(
        stateful["message"]
            .as_str()
            .unwrap()
            .contains("previous_response_id"),
        "{stateful}"
    );
    assert_eq!(w.mistral.recorded().len(), 3);
    assert!(
        w.openai.recorded().is_empty(),
        "personal data reached OpenAI"
    );
    let logs = w.proxy.logs();
    assert!(!logs.contains(MISTRAL_KEY) && !logs.contains(CLIENT_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_messages_are_rerouted_and_answered_as_messages() {
    let w = Arc::new(world().await);

    let created = run(&w, "messages").await;
    assert_eq!(created["text"], "Bonjour depuis Paris", "{created}");
    assert_eq!(created["stop"], "end_turn");
    assert_eq!(created["usage"], json!([12, 4]));
    assert_eq!(created["route"], "mistral");
    let sent = sent_to_mistral(&w, 0);
    // A Claude model is mapped like any other.
    assert_eq!(sent["model"], "mistral-medium-latest");
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(sent["max_tokens"], 100);

    let streamed = run(&w, "messages_stream").await;
    assert_eq!(
        streamed["parts"],
        json!(["Bonjour", " depuis", " Paris"]),
        "{streamed}"
    );
    assert_eq!(streamed["text"], "Bonjour depuis Paris");
    assert_eq!(streamed["stop"], "end_turn");
    assert_eq!(streamed["usage"], 3);

    let tools = run(&w, "messages_tools").await;
    assert_eq!(tools["tool"], "get_weather", "{tools}");
    assert_eq!(tools["input"], json!({"city": "Paris"}));
    assert_eq!(tools["stop"], "tool_use");

    let streamed_tools = run(&w, "messages_tools_stream").await;
    assert_eq!(
        streamed_tools["input"],
        json!({"city": "Paris"}),
        "{streamed_tools}"
    );
    assert_eq!(streamed_tools["stop"], "tool_use");

    let result = run(&w, "messages_tool_result").await;
    assert!(result.get("stop").is_some(), "{result}");
    let sent = sent_to_mistral(&w, 4);
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{sent}");
    // Mistral takes tool-call ids of nine letters and digits only: Claude's
    // become the same digest on both sides of the exchange.
    let id = sent["messages"][2]["tool_call_id"].as_str().unwrap();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], id, "{sent}");
    assert!(
        id.len() == 9 && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id}"
    );

    // The target's own error reaches the app in Anthropic's shape.
    let failed = run(&w, "messages_target_error").await;
    assert_eq!(failed["status"], 400, "{failed}");
    assert_eq!(failed["type"], "BadRequestError", "{failed}");
    assert_eq!(failed["body"]["type"], "error", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("Invalid model"),
        "{failed}"
    );

    assert!(
        w.anthropic.recorded().is_empty(),
        "personal data reached Anthropic"
    );
    let logs = w.proxy.logs();
    assert!(!logs.contains(MISTRAL_KEY) && !logs.contains(CLIENT_KEY));
}
