//! The official `openai` Python SDK reads what the Responses translator
//! makes: a plain-HTTP server on loopback takes the SDK's `/v1/responses`
//! call, translates it with `request_to_chat`, answers it with a chat
//! completions answer as vLLM or Mistral sends it (JSON or SSE, fed in
//! small pieces), translated back with `answer_translator`.

#[path = "common/python.rs"]
mod python;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;

use ecluse::route::responses::{answer_translator, request_to_chat};
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
from pydantic import BaseModel

client = OpenAI(base_url=sys.argv[1], api_key="sk-test-canary-0000", max_retries=0, timeout=30)
mode = sys.argv[2]
weather = {"type": "function", "name": "get_weather", "description": "Current weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}, "strict": True}

def calls(response):
    return [{"call_id": o.call_id, "name": o.name, "arguments": o.arguments}
            for o in response.output if o.type == "function_call"]

def usage(response):
    u = response.usage
    return {"input": u.input_tokens, "output": u.output_tokens, "total": u.total_tokens,
            "cached": u.input_tokens_details.cached_tokens}

if mode == "json":
    r = client.responses.create(model="gpt-4o", instructions="Be brief.", input="Bonjour ?")
    print(json.dumps({"id": r.id, "status": r.status, "text": r.output_text, "usage": usage(r)}))
elif mode == "json-tool":
    r = client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[weather])
    print(json.dumps({"status": r.status, "calls": calls(r), "usage": usage(r)}))
elif mode == "parse":
    class Contact(BaseModel):
        name: str
        city: str
    r = client.responses.parse(model="gpt-4o", input="Extract: Jean, Lyon", text_format=Contact)
    print(json.dumps({"name": r.output_parsed.name, "city": r.output_parsed.city}))
elif mode == "json-length":
    r = client.responses.create(model="gpt-4o", input="LONG", max_output_tokens=3)
    print(json.dumps({"status": r.status, "reason": r.incomplete_details.reason, "text": r.output_text}))
elif mode == "stream-error":
    types, error, failed = [], None, None
    with client.responses.stream(model="gpt-4o", input="FAIL") as s:
        for event in s:
            types.append(event.type)
            if event.type == "error":
                error = event.message
            elif event.type == "response.failed":
                failed = event.response.error.message
        try:
            s.get_final_response()
            final = "returned"
        except RuntimeError as e:
            final = str(e)
    print(json.dumps({"types": types, "error": error, "failed": failed, "final": final}))
elif mode in ("stream", "stream-tool"):
    tools = [weather] if mode == "stream-tool" else []
    text, args, types = [], [], []
    with client.responses.stream(model="gpt-4o", input=[{"role": "user", "content": "Bonjour ?"}],
                                 tools=tools) as s:
        for event in s:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
            elif event.type == "response.function_call_arguments.delta":
                args.append(event.delta)
        final = s.get_final_response()
    print(json.dumps({"deltas": text, "arg_deltas": args, "types": types, "status": final.status,
                      "text": final.output_text, "calls": calls(final), "usage": usage(final)}))
"#;

/// The text of the call's last message, which picks the answer.
fn last_text(request: &Value) -> &str {
    request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
}

fn chat_json(request: &Value) -> Value {
    if last_text(request) == "LONG" {
        return json!({
            "id": "cmpl-2", "object": "chat.completion", "created": 1767225599, "model": "qwen3",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "The meeting"},
                         "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "total_tokens": 8, "completion_tokens": 3}
        });
    }
    let message = if request.get("tools").is_some() {
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "D681PevKs", "type": "function",
               "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]})
    } else if request.get("response_format").is_some() {
        json!({"role": "assistant", "content": "{\"name\": \"Jean\", \"city\": \"Lyon\"}"})
    } else {
        json!({"role": "assistant", "content": "Bonjour ! Que puis-je faire ?"})
    };
    let finish = if request.get("tools").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    json!({
        "id": "cmpl-1", "object": "chat.completion", "created": 1767225599, "model": "mistral-large-latest",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 21, "total_tokens": 31, "completion_tokens": 10,
                  "prompt_tokens_details": {"cached_tokens": 5}}
    })
}

/// A vLLM stream: role chunk, deltas, finish chunk, usage chunk, `[DONE]`.
fn chat_sse(request: &Value) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1767225599,
               "model": "qwen3", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut chunks = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if last_text(request) == "FAIL" {
        chunks.push(chunk(json!({"content": "Partial"}), Value::Null));
        // vLLM's mid-stream error, then the end of its stream.
        chunks.push(
            json!({"error": {"object": "error", "message": "CUDA out of memory",
                                     "type": "InternalServerError", "param": null, "code": 500}}),
        );
        let body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        return body + "data: [DONE]\n\n";
    }
    if request.get("tools").is_some() {
        chunks.push(chunk(json!({"content": "Je regarde."}), Value::Null));
        chunks.push(chunk(
            json!({"tool_calls": [{"id": "chatcmpl-tool-a1", "type": "function", "index": 0,
                   "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in ["{\"city\"", ": \"Par", "is\"}"] {
            chunks.push(chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
        chunks.push(chunk(json!({}), json!("tool_calls")));
    } else {
        for piece in ["Bonjour", " ! Que puis", "-je faire ? ☕"] {
            chunks.push(chunk(json!({"content": piece}), Value::Null));
        }
        chunks.push(chunk(json!({"content": ""}), json!("stop")));
    }
    chunks.push(
        json!({"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1767225599,
        "model": "qwen3", "choices": [],
        "usage": {"prompt_tokens": 21, "total_tokens": 31, "completion_tokens": 10}}),
    );
    let mut out: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    out.push_str("data: [DONE]\n\n");
    out
}

fn serve(mut conn: TcpStream, requests: &mpsc::Sender<Value>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("POST /v1/responses "), "{line}");
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let request: Value = serde_json::from_slice(&body).unwrap();
    let chat = request_to_chat(&request).unwrap();
    requests.send(chat.clone()).unwrap();
    let stream = chat["stream"] == true;
    let mut translator = answer_translator(stream, "gpt-4o");
    let answer = if stream {
        chat_sse(&chat).into_bytes()
    } else {
        serde_json::to_vec(&chat_json(&chat)).unwrap()
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\nconnection: close\r\n\r\n",
        translator.content_type()
    );
    conn.write_all(head.as_bytes()).unwrap();
    // Small pieces that cut through lines and UTF-8 sequences.
    for piece in answer.chunks(7) {
        let out = translator.feed(piece).unwrap();
        conn.write_all(&out).unwrap();
        conn.flush().unwrap();
    }
    conn.write_all(&translator.finish().unwrap()).unwrap();
}

fn run_sdk(mode: &str) -> (Value, Value) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        serve(conn, &tx);
    });
    let out = Command::new(python::python())
        .args(["-c", SCRIPT, &base_url, mode])
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("OPENAI_BASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai SDK ({mode}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.join().unwrap();
    let chat = rx.recv().unwrap();
    (serde_json::from_str(stdout.trim()).unwrap(), chat)
}

#[test]
fn sdk_reads_a_translated_json_answer() {
    let (got, chat) = run_sdk("json");
    assert_eq!(
        chat["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour ?"}])
    );
    assert_eq!(got["text"], "Bonjour ! Que puis-je faire ?");
    assert_eq!(got["status"], "completed");
    assert!(got["id"].as_str().unwrap().starts_with("resp_"), "{got}");
    assert_eq!(
        got["usage"],
        json!({"input": 21, "output": 10, "total": 31, "cached": 5})
    );
}

#[test]
fn sdk_reads_a_translated_function_call() {
    let (got, chat) = run_sdk("json-tool");
    assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(chat["tools"][0]["function"]["strict"], true);
    assert_eq!(
        got["calls"],
        json!([{"call_id": "D681PevKs", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}])
    );
}

#[test]
fn sdk_parses_a_json_schema_answer() {
    let (got, chat) = run_sdk("parse");
    assert_eq!(chat["response_format"]["type"], "json_schema");
    assert_eq!(chat["response_format"]["json_schema"]["name"], "Contact");
    assert_eq!(got, json!({"name": "Jean", "city": "Lyon"}));
}

#[test]
fn sdk_streams_a_translated_text_stream() {
    let (got, chat) = run_sdk("stream");
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        got["deltas"],
        json!(["Bonjour", " ! Que puis", "-je faire ? ☕"])
    );
    assert_eq!(got["text"], "Bonjour ! Que puis-je faire ? ☕");
    assert_eq!(got["status"], "completed");
    assert_eq!(got["usage"]["total"], 31);
    let types: Vec<&str> = got["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert!(types.contains(&"response.output_text.done"), "{types:?}");
}

#[test]
fn sdk_streams_a_translated_tool_call() {
    let (got, _) = run_sdk("stream-tool");
    assert_eq!(got["arg_deltas"], json!(["{\"city\"", ": \"Par", "is\"}"]));
    assert_eq!(got["text"], "Je regarde.");
    assert_eq!(
        got["calls"],
        json!([{"call_id": "chatcmpl-tool-a1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}])
    );
    assert_eq!(got["usage"]["input"], 21);
}

#[test]
fn sdk_reads_an_incomplete_answer() {
    let (got, chat) = run_sdk("json-length");
    assert_eq!(chat["max_tokens"], 3);
    assert_eq!(
        got,
        json!({"status": "incomplete", "reason": "max_output_tokens", "text": "The meeting"})
    );
}

#[test]
fn sdk_sees_a_target_failure_mid_stream() {
    let (got, _) = run_sdk("stream-error");
    assert_eq!(got["error"], "CUDA out of memory", "{got}");
    assert_eq!(got["failed"], "CUDA out of memory");
    assert_eq!(
        got["types"].as_array().unwrap().last().unwrap(),
        "response.failed"
    );
    assert!(
        got["final"]
            .as_str()
            .unwrap()
            .contains("response.completed"),
        "{got}"
    );
}
