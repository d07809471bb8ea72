//! The official `anthropic` Python SDK, unmodified, reads what the
//! Anthropic translator makes of a chat-completions target's answers: a
//! plain-HTTP server on 127.0.0.1:0 translates each request the SDK sends
//! with `request_to_chat`, and answers with a chat fixture run through the
//! answer translator in small pieces, as a target's body arrives.

#[path = "common/python.rs"]
mod python;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

use ecluse::route::anthropic::{answer_translator, request_to_chat};
use serde_json::{json, Value};

const SCRIPT: &str = r#"
import json, sys
import anthropic
client = anthropic.Anthropic(base_url=sys.argv[1], api_key="test", max_retries=0, timeout=30)
tools = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
out = {}

m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system="Be brief.",
    messages=[{"role": "user", "content": "Say hello"}])
out["create"] = {"type": type(m).__name__, "id": m.id, "text": m.content[0].text, "stop_reason": m.stop_reason,
                 "usage": [m.usage.input_tokens, m.usage.output_tokens], "model": m.model}

m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, tools=tools,
    messages=[{"role": "user", "content": "Weather in Paris?"}])
out["create_tool"] = {"stop_reason": m.stop_reason,
    "blocks": [[b.type, getattr(b, "text", None) or getattr(b, "name", None), getattr(b, "input", None), getattr(b, "id", None)] for b in m.content]}

with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
        messages=[{"role": "user", "content": "Say hello"}]) as s:
    deltas = [t for t in s.text_stream]
    final = s.get_final_message()
out["stream"] = {"deltas": deltas, "text": final.content[0].text, "stop_reason": final.stop_reason,
                 "usage": [final.usage.input_tokens, final.usage.output_tokens]}

with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, tools=tools,
        messages=[{"role": "user", "content": "Weather in Paris?"}]) as s:
    events = [e.type for e in s]
    final = s.get_final_message()
out["stream_tool"] = {"events": sorted(set(events)), "stop_reason": final.stop_reason,
    "blocks": [[b.type, getattr(b, "text", None) or getattr(b, "name", None), getattr(b, "input", None)] for b in final.content],
    "usage": [final.usage.input_tokens, final.usage.output_tokens]}

try:
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
            messages=[{"role": "user", "content": "fail please"}]) as s:
        for _ in s.text_stream:
            pass
    out["stream_error"] = "no error"
except anthropic.APIStatusError as e:
    out["stream_error"] = str(e)

print(json.dumps(out))
"#;

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "mistral-small-latest",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// The chat answer a target would give to `chat` (the translated request).
fn target_answer(chat: &Value) -> Vec<u8> {
    let stream = chat["stream"] == true;
    let tools = chat.get("tools").is_some();
    let usage = json!({"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30});
    let failing = chat["messages"].to_string().contains("fail please");
    match (stream, tools) {
        (false, false) => json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "mistral-small-latest",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}],
            "usage": usage}).to_string().into_bytes(),
        (false, true) => json!({"id": "chatcmpl-2", "object": "chat.completion", "created": 1,
            "model": "mistral-small-latest",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "D681PevKs", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": usage}).to_string().into_bytes(),
        (true, _) if failing => {
            let mut body = sse(&[chunk(json!({"role": "assistant", "content": "Part"}), None)]);
            body.truncate(body.len() - b"data: [DONE]\n\n".len());
            body.extend_from_slice(b"data: {\"object\":\"error\",\"message\":\"target overloaded\",\"type\":\"internal\"}\n\n");
            body
        }
        (true, false) => sse(&[
            chunk(json!({"role": "assistant", "content": ""}), None),
            chunk(json!({"content": "Hello"}), None),
            chunk(json!({"content": " there"}), None),
            chunk(json!({"content": "!"}), None),
            chunk(json!({}), Some("stop")),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [], "usage": usage}),
        ]),
        (true, true) => sse(&[
            chunk(json!({"role": "assistant", "content": "Checking."}), None),
            chunk(json!({"tool_calls": [{"index": 0, "id": "chatcmpl-tool-1", "type": "function",
                                          "function": {"name": "get_weather", "arguments": ""}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"ci"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Par"}}]}), None),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "is\"}"}}]}), None),
            chunk(json!({}), Some("tool_calls")),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [], "usage": usage}),
        ]),
    }
}

fn serve(mut conn: TcpStream, seen: &Mutex<Vec<Value>>) -> Result<(), String> {
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .map_err(|e| e.to_string())?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    let request: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let chat = request_to_chat(&request);
    let (status, content_type, payload): (&str, &str, Vec<Vec<u8>>) = match &chat {
        Ok(chat) => {
            seen.lock().unwrap().push(chat.clone());
            let stream = chat["stream"] == true;
            let mut t = answer_translator(stream, request["model"].as_str().unwrap_or("?"));
            let mut pieces = Vec::new();
            // A target's body arrives in pieces that cut through events.
            for piece in target_answer(chat).chunks(7) {
                pieces.push(t.feed(piece)?);
            }
            pieces.push(t.finish()?);
            ("200 OK", t.content_type(), pieces)
        }
        Err(e) => (
            "400 Bad Request",
            "application/json",
            vec![
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": e}})
                    .to_string()
                    .into_bytes(),
            ],
        ),
    };
    assert!(
        request_line.starts_with("POST /v1/messages "),
        "{request_line}"
    );
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    for piece in payload {
        conn.write_all(&piece).map_err(|e| e.to_string())?;
        conn.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn the_anthropic_sdk_reads_translated_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server_seen = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = server_seen.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(conn, &seen) {
                    eprintln!("test server: {e}");
                }
            });
        }
    });

    let python = python::python();
    let out = Command::new(python)
        .args(["-c", SCRIPT, &base_url])
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "anthropic SDK failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();

    let create = &got["create"];
    assert_eq!(create["type"], "Message");
    assert!(create["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(create["text"], "Hello there!");
    assert_eq!(create["stop_reason"], "end_turn");
    assert_eq!(create["usage"], json!([21, 9]));
    assert_eq!(create["model"], "claude-sonnet-4-5");

    assert_eq!(
        got["create_tool"],
        json!({"stop_reason": "tool_use", "blocks": [
            ["text", "Checking.", null, null],
            ["tool_use", "get_weather", {"city": "Paris"}, "D681PevKs"],
        ]})
    );

    let stream = &got["stream"];
    assert_eq!(stream["deltas"], json!(["Hello", " there", "!"]));
    assert_eq!(stream["text"], "Hello there!");
    assert_eq!(stream["stop_reason"], "end_turn");
    assert_eq!(stream["usage"], json!([21, 9]));

    let tool = &got["stream_tool"];
    assert_eq!(tool["stop_reason"], "tool_use");
    assert_eq!(
        tool["blocks"],
        json!([["text", "Checking.", null], ["tool_use", "get_weather", {"city": "Paris"}]])
    );
    assert_eq!(tool["usage"], json!([21, 9]));
    for event in [
        "message_start",
        "content_block_start",
        "input_json",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        assert!(
            tool["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == event),
            "{event} missing: {tool}"
        );
    }

    let error = got["stream_error"].as_str().unwrap();
    assert!(error.contains("target overloaded"), "{error}");

    // What the SDK sent became chat requests a target takes.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(
        seen[0]["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])
    );
    assert_eq!(seen[0]["max_tokens"], 100);
    assert_eq!(
        seen[1]["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );
    assert_eq!(seen[2]["stream_options"], json!({"include_usage": true}));
}
