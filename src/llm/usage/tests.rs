//! Each API's answer in its real wire shape, read whole and split at every
//! byte boundary: the same usage must come out, the end must be seen only
//! once the final event is complete, and garbage must never panic.

use super::*;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};

struct Case {
    name: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    input: Option<u64>,
    output: Option<u64>,
    model: Option<&'static str>,
    id: Option<&'static str>,
    reasons: &'static [&'static str],
    content: Option<&'static str>,
    stream: bool,
}

/// One AWS event-stream frame, encoded by the AWS SDK's own encoder.
fn frame(message_type: &'static str, event_type: &'static str, payload: &str) -> Vec<u8> {
    let message = Message::new(payload.as_bytes().to_vec())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String(message_type.into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).expect("test frame encodes");
    out
}

/// An InvokeModelWithResponseStream `chunk` frame around a model's JSON.
fn chunk(inner: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
    frame(
        "event",
        "chunk",
        &format!(r#"{{"bytes":"{b64}","p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"}}"#),
    )
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "openai chat json",
            content_type: "application/json",
            body: br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#.to_vec(),
            input: Some(11),
            output: Some(7),
            model: Some("gpt-4o-2024-08-06"),
            id: Some("chatcmpl-1"),
            reasons: &["stop"],
            content: Some("Hello"),
            stream: false,
        },
        Case {
            name: "openai chat sse",
            content_type: "text/event-stream; charset=utf-8",
            body: concat!(
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"mistral-large-latest\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\r\n\r\n",
                "data: [DONE]\n\n"
            ).as_bytes().to_vec(),
            input: Some(5),
            output: Some(3),
            model: Some("mistral-large-latest"),
            id: Some("c1"),
            reasons: &["stop"],
            content: Some("Hi"),
            stream: true,
        },
        Case {
            name: "openai responses json",
            content_type: "application/json",
            body: br#"{"id":"resp_67ccd2bed1ec8190","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_67ccd2bf17f08190","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove","annotations":[]}]}],"parallel_tool_calls":true,"reasoning":{"effort":null,"summary":null},"store":true,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{}}"#.to_vec(),
            input: Some(36),
            output: Some(87),
            model: Some("gpt-4.1-2025-04-14"),
            id: Some("resp_67ccd2bed1ec8190"),
            reasons: &["completed"],
            content: Some("In a peaceful grove"),
            stream: false,
        },
        Case {
            name: "openai responses sse",
            content_type: "text/event-stream",
            body: concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741290958,\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
                "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"in_progress\",\"role\":\"assistant\",\"content\":[]}}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\" there\"}\n\n",
                "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\",\"sequence_number\":6,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"text\":\"Hi there\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":8,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"incomplete_details\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"id\":\"msg_1\",\"type\":\"message\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there\",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":37,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":11,\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":48}}}\n\n",
            ).as_bytes().to_vec(),
            input: Some(37),
            output: Some(11),
            model: Some("gpt-4.1-2025-04-14"),
            id: Some("resp_1"),
            reasons: &["completed"],
            content: Some("Hi there"),
            stream: true,
        },
        Case {
            name: "openai responses sse, incomplete",
            content_type: "text/event-stream",
            body: concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"o4-mini\",\"output\":[],\"usage\":null}}\n\n",
                "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"sequence_number\":3,\"response\":{\"id\":\"resp_2\",\"object\":\"response\",\"status\":\"incomplete\",\"incomplete_details\":{\"reason\":\"max_output_tokens\"},\"model\":\"o4-mini\",\"output\":[],\"usage\":{\"input_tokens\":20,\"output_tokens\":16,\"total_tokens\":36}}}\n\n",
            ).as_bytes().to_vec(),
            input: Some(20),
            output: Some(16),
            model: Some("o4-mini"),
            id: Some("resp_2"),
            reasons: &["max_output_tokens"],
            content: None,
            stream: true,
        },
        Case {
            name: "anthropic json",
            content_type: "application/json",
            body: br#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":6}}"#.to_vec(),
            input: Some(12),
            output: Some(6),
            model: Some("claude-sonnet-4-5-20250929"),
            id: Some("msg_01XFDUDYJgAACzvnptvVoYEL"),
            reasons: &["end_turn"],
            content: Some("Hello!"),
            stream: false,
        },
        Case {
            name: "anthropic sse",
            content_type: "text/event-stream; charset=utf-8",
            body: concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
                "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                "event: ping\ndata: {\"type\": \"ping\"}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
                "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
                "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ).as_bytes().to_vec(),
            input: Some(25),
            output: Some(15),
            model: Some("claude-sonnet-4-5"),
            id: Some("msg_1"),
            reasons: &["end_turn"],
            content: Some("Hello"),
            stream: true,
        },
        Case {
            name: "gemini generateContent json",
            content_type: "application/json; charset=UTF-8",
            body: br#"{
  "candidates": [
    {
      "content": {"parts": [{"text": "Bonjour"}], "role": "model"},
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 12,
    "totalTokenCount": 50,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}],
    "thoughtsTokenCount": 30
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "Y9BCaf3KIsqWvdIPl4KB8Ac"
}
"#.to_vec(),
            input: Some(8),
            output: Some(42),
            model: Some("gemini-2.5-flash"),
            id: Some("Y9BCaf3KIsqWvdIPl4KB8Ac"),
            reasons: &["STOP"],
            content: Some("Bonjour"),
            stream: false,
        },
        Case {
            name: "gemini streamGenerateContent alt=sse",
            content_type: "text/event-stream",
            body: concat!(
                "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Bon\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 8},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
                "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"jour\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 8,\"candidatesTokenCount\": 4,\"totalTokenCount\": 12},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n",
            ).as_bytes().to_vec(),
            input: Some(8),
            output: Some(4),
            model: Some("gemini-2.5-flash"),
            id: Some("r1"),
            reasons: &["STOP"],
            content: Some("Bonjour"),
            stream: true,
        },
        Case {
            name: "gemini streamGenerateContent json array",
            content_type: "application/json; charset=UTF-8",
            body: concat!(
                "[{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n          {\n            \"text\": \"Bon \\\"{[\"\n          }\n        ],\n        \"role\": \"model\"\n      },\n      \"index\": 0\n    }\n  ],\n  \"usageMetadata\": {\n    \"promptTokenCount\": 9,\n    \"totalTokenCount\": 9\n  },\n  \"modelVersion\": \"gemini-2.0-flash\",\n  \"responseId\": \"r2\"\n}\n",
                ",\r\n",
                "{\n  \"candidates\": [\n    {\n      \"content\": {\n        \"parts\": [\n          {\n            \"text\": \"jour\"\n          }\n        ],\n        \"role\": \"model\"\n      },\n      \"finishReason\": \"MAX_TOKENS\",\n      \"index\": 0\n    }\n  ],\n  \"usageMetadata\": {\n    \"promptTokenCount\": 9,\n    \"candidatesTokenCount\": 5,\n    \"totalTokenCount\": 14\n  },\n  \"modelVersion\": \"gemini-2.0-flash\",\n  \"responseId\": \"r2\"\n}\n",
                "]",
            ).as_bytes().to_vec(),
            input: Some(9),
            output: Some(5),
            model: Some("gemini-2.0-flash"),
            id: Some("r2"),
            reasons: &["MAX_TOKENS"],
            content: Some("Bon \"{[jour"),
            stream: true,
        },
        Case {
            name: "bedrock converse json",
            content_type: "application/json",
            body: br#"{"metrics":{"latencyMs":412},"output":{"message":{"content":[{"text":"Hallo"}],"role":"assistant"}},"stopReason":"end_turn","usage":{"inputTokens":14,"outputTokens":9,"totalTokens":23}}"#.to_vec(),
            input: Some(14),
            output: Some(9),
            model: None,
            id: None,
            reasons: &["end_turn"],
            content: Some("Hallo"),
            stream: false,
        },
        Case {
            name: "bedrock converse stream",
            content_type: "application/vnd.amazon.eventstream",
            body: [
                frame("event", "messageStart", r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0","role":"assistant"}"#),
                frame("event", "contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Hal"},"p":"abcdefghijklmn"}"#),
                frame("event", "contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"lo"},"p":"abcdefghijk"}"#),
                frame("event", "contentBlockStop", r#"{"contentBlockIndex":0,"p":"abcdefghijklmnopqrstuvw"}"#),
                frame("event", "messageStop", r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGH","stopReason":"max_tokens"}"#),
                frame("event", "metadata", r#"{"metrics":{"latencyMs":300},"p":"abcdefghijklmnopqrstuvwxyzAB","usage":{"inputTokens":14,"outputTokens":9,"totalTokens":23}}"#),
            ]
            .concat(),
            input: Some(14),
            output: Some(9),
            model: None,
            id: None,
            reasons: &["max_tokens"],
            content: Some("Hallo"),
            stream: true,
        },
        Case {
            name: "bedrock invoke-with-response-stream, anthropic model",
            content_type: "application/vnd.amazon.eventstream",
            body: [
                chunk(r#"{"type":"message_start","message":{"id":"msg_bdrk_01","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[],"stop_reason":null,"usage":{"input_tokens":21,"output_tokens":2}}}"#),
                chunk(r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#),
                chunk(r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Ciao"}}"#),
                chunk(r#"{"type":"content_block_stop","index":0}"#),
                chunk(r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}"#),
                chunk(r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":21,"outputTokenCount":7,"invocationLatency":533,"firstByteLatency":321}}"#),
            ]
            .concat(),
            input: Some(21),
            output: Some(7),
            model: Some("claude-3-5-sonnet-20241022"),
            id: Some("msg_bdrk_01"),
            reasons: &["end_turn"],
            content: Some("Ciao"),
            stream: true,
        },
        Case {
            name: "bedrock invoke-with-response-stream, llama model",
            content_type: "application/vnd.amazon.eventstream",
            body: [
                chunk(r#"{"generation":"Hola","prompt_token_count":null,"generation_token_count":3,"stop_reason":null}"#),
                chunk(r#"{"generation":"","prompt_token_count":null,"generation_token_count":4,"stop_reason":"stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":17,"outputTokenCount":4,"invocationLatency":250,"firstByteLatency":120}}"#),
            ]
            .concat(),
            input: Some(17),
            output: Some(4),
            model: None,
            id: None,
            reasons: &["stop"],
            content: None,
            stream: true,
        },
        Case {
            name: "cohere v2 chat json",
            content_type: "application/json",
            body: br#"{"id":"c14c80c3-18eb-4519-9460-6c92edd8cfb4","finish_reason":"COMPLETE","message":{"role":"assistant","content":[{"type":"text","text":"LLMs stand for"}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":418},"tokens":{"input_tokens":71,"output_tokens":418}}}"#.to_vec(),
            input: Some(71),
            output: Some(418),
            model: None,
            id: Some("c14c80c3-18eb-4519-9460-6c92edd8cfb4"),
            reasons: &["COMPLETE"],
            content: Some("LLMs stand for"),
            stream: false,
        },
        Case {
            name: "cohere v2 chat sse",
            content_type: "text/event-stream",
            body: concat!(
                "event: message-start\ndata: {\"id\":\"29f14a5a-11de-4cae-9800-25e4747408ea\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
                "event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
                "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hello\"}}}}\n\n",
                "event: content-end\ndata: {\"type\":\"content-end\",\"index\":0}\n\n",
                "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":3,\"output_tokens\":9},\"tokens\":{\"input_tokens\":69,\"output_tokens\":9}}}}\n\n",
            ).as_bytes().to_vec(),
            input: Some(69),
            output: Some(9),
            model: None,
            id: Some("29f14a5a-11de-4cae-9800-25e4747408ea"),
            reasons: &["COMPLETE"],
            content: Some("Hello"),
            stream: true,
        },
    ]
}

fn read(case: &Case, pieces: &[&[u8]]) -> (Usage, bool) {
    let mut o = ResponseObserver::new(Some(case.content_type)).capturing_content(true);
    for piece in pieces {
        o.feed(piece);
    }
    let ended = o.saw_end();
    (o.finish(), ended)
}

fn check(case: &Case, u: &Usage, how: &str) {
    let name = case.name;
    assert_eq!(u.input_tokens, case.input, "{name} {how}: input");
    assert_eq!(u.output_tokens, case.output, "{name} {how}: output");
    assert_eq!(
        u.response_model.as_deref(),
        case.model,
        "{name} {how}: model"
    );
    assert_eq!(u.response_id.as_deref(), case.id, "{name} {how}: id");
    assert_eq!(u.finish_reasons, case.reasons, "{name} {how}: reasons");
    assert_eq!(u.content.as_deref(), case.content, "{name} {how}: content");
}

/// Without content capture the reader parses only the fields it reads
/// (`read_fields`): every API's answer must give the same facts.
#[test]
fn every_api_reads_the_same_facts_without_content_capture() {
    for case in cases() {
        let mut o = ResponseObserver::new(Some(case.content_type));
        o.feed(&case.body);
        let ended = o.saw_end();
        let u = o.finish();
        let without_content = Case {
            content: None,
            ..case
        };
        check(&without_content, &u, "without capture");
        assert!(
            ended,
            "{}: the end is seen without capture",
            without_content.name
        );
    }
}

#[test]
fn every_api_whole_and_split_anywhere() {
    for case in cases() {
        let body = &case.body[..];
        let (whole, ended) = read(&case, &[body]);
        check(&case, &whole, "whole");
        assert!(ended, "{}: the end is seen", case.name);
        let o = {
            let mut o = ResponseObserver::new(Some(case.content_type));
            o.feed(body);
            o
        };
        assert_eq!(o.is_stream(), case.stream, "{}: stream", case.name);
        for split in 1..body.len() {
            let (u, ended) = read(&case, &[&body[..split], &body[split..]]);
            check(&case, &u, &format!("split at {split}"));
            assert!(ended, "{} split at {split}: the end is seen", case.name);
        }
        // Three pieces, the middle one small: the event boundaries fall
        // inside, across and at the edges of the pieces.
        for start in (1..body.len()).step_by(7) {
            for len in [1, 2, 5, 13] {
                let end = (start + len).min(body.len());
                let (u, _) = read(&case, &[&body[..start], &body[start..end], &body[end..]]);
                check(&case, &u, &format!("pieces at {start}..{end}"));
            }
        }
        // Byte by byte.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        let (u, _) = read(&case, &bytes);
        check(&case, &u, "byte by byte");
    }
}

#[test]
fn the_end_is_seen_only_once_the_final_event_is_whole() {
    for case in cases() {
        let body = &case.body[..];
        for cut in 1..body.len() {
            // The final event is the body's last bytes in every case; what
            // may follow it is blank lines, or the bracket closing Gemini's
            // array after its last chunk (which is the end already).
            let tail = &body[cut..];
            if tail.iter().all(|b| b.is_ascii_whitespace() || *b == b']') {
                continue;
            }
            let mut o = ResponseObserver::new(Some(case.content_type));
            o.feed(&body[..cut]);
            assert!(!o.saw_end(), "{}: end seen with {cut} bytes", case.name);
        }
    }
}

#[test]
fn a_stream_cut_before_its_final_event_has_not_ended() {
    let stream = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    );
    let mut o = ResponseObserver::new(Some("text/event-stream"));
    o.feed(stream.as_bytes());
    assert!(!o.saw_end(), "a finish reason is not the end: [DONE] is");
    o.feed(b"data: [DONE]\n\n");
    assert!(o.saw_end());

    // Bedrock: messageStop without its metadata is not yet the end.
    let mut o = ResponseObserver::new(Some("application/vnd.amazon.eventstream"));
    o.feed(&frame(
        "event",
        "messageStop",
        r#"{"stopReason":"end_turn"}"#,
    ));
    assert!(!o.saw_end());
    o.feed(&frame(
        "event",
        "metadata",
        r#"{"usage":{"inputTokens":1,"outputTokens":2}}"#,
    ));
    assert!(o.saw_end());
}

#[test]
fn bedrock_exceptions_are_not_read_as_events() {
    let body = [
        frame("event", "messageStart", r#"{"role":"assistant"}"#),
        frame(
            "exception",
            "throttlingException",
            r#"{"message":"Too many requests","usage":{"inputTokens":99}}"#,
        ),
    ]
    .concat();
    let mut o = ResponseObserver::new(Some("application/vnd.amazon.eventstream"));
    o.feed(&body);
    assert!(!o.saw_end());
    assert_eq!(o.finish().input_tokens, None);
}

#[test]
fn bedrock_token_count_headers() {
    let mut headers = http::HeaderMap::new();
    headers.insert("X-Amzn-Bedrock-Input-Token-Count", "31".parse().unwrap());
    headers.insert("X-Amzn-Bedrock-Output-Token-Count", "nope".parse().unwrap());
    let mut o = ResponseObserver::new(Some("image/png"));
    o.note_headers(&headers);
    o.feed(b"\x89PNG\r\n\x1a\n");
    let u = o.finish();
    assert_eq!((u.input_tokens, u.output_tokens), (Some(31), None));
}

#[test]
fn an_sse_stream_without_its_closing_blank_line_still_counts() {
    let mut o = ResponseObserver::new(Some("text/event-stream"));
    o.feed(b"data: {\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}");
    let u = o.finish();
    assert_eq!((u.input_tokens, u.output_tokens), (Some(4), Some(2)));
    // Finishing twice is harmless.
    assert_eq!(o.finish().input_tokens, Some(4));
}

#[test]
fn an_oversized_document_is_skipped_and_memory_stays_bounded() {
    let big = "x".repeat(JSON_CAP + 10);
    // JSON: the oversized element is skipped, the next one is read.
    let body = format!(
        "[{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{big}\"}}]}}}}]}},{{\"candidates\":[{{\"finishReason\":\"STOP\"}}],\"usageMetadata\":{{\"promptTokenCount\":3,\"candidatesTokenCount\":1}}}}]"
    );
    let mut o = ResponseObserver::new(Some("application/json"));
    for piece in body.as_bytes().chunks(64 << 10) {
        o.feed(piece);
        if let Framing::Json { values, .. } = &o.framing {
            assert!(values.buffered() <= JSON_CAP, "JSON buffer bounded");
        }
    }
    let u = o.finish();
    assert_eq!((u.input_tokens, u.output_tokens), (Some(3), Some(1)));

    // SSE: the oversized event is dropped, the next one is read.
    let stream = format!(
        "data: {{\"x\":\"{big}\"}}\n\ndata: {{\"usage\":{{\"prompt_tokens\":6,\"completion_tokens\":2}}}}\n\ndata: [DONE]\n\n"
    );
    let mut o = ResponseObserver::new(Some("text/event-stream"));
    for piece in stream.as_bytes().chunks(64 << 10) {
        o.feed(piece);
        if let Framing::Sse(parser) = &o.framing {
            assert!(parser.stats().buffered_bytes <= JSON_CAP + (64 << 10));
        }
    }
    assert!(o.saw_end());
    assert_eq!(o.finish().input_tokens, Some(6));

    // Event stream: a frame that claims more than the cap ends the reading
    // at once, before its bytes are kept.
    let mut o = ResponseObserver::new(Some("application/vnd.amazon.eventstream"));
    o.feed(&u32::try_from(JSON_CAP + 1).unwrap().to_be_bytes());
    o.feed(&[0u8; 1024]);
    if let Framing::EventStream(frames) = &o.framing {
        assert_eq!(frames.buffered(), 0);
    }
    assert_eq!(o.finish(), Usage::default());
}

#[test]
fn a_body_that_is_not_json_is_not_kept() {
    let mut o = ResponseObserver::new(Some("application/octet-stream"));
    o.feed(b"RIFF....WAVEfmt ");
    o.feed(&[0u8; 4096]);
    if let Framing::Json { values, .. } = &o.framing {
        assert_eq!(values.buffered(), 0);
    }
    assert!(!o.saw_end());
    assert_eq!(o.finish(), Usage::default());
}

/// A small deterministic generator: the garbage differs each round, the
/// test does not depend on a seed from the environment.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn garbage_never_panics() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let cases = cases();
    for round in 0..3000 {
        let case = &cases[round % cases.len()];
        let mut body = case.body.clone();
        // Flip, drop or insert bytes of a real answer, or make one up.
        match round % 4 {
            0 => {
                for _ in 0..4 {
                    let at = (xorshift(&mut state) as usize) % body.len();
                    body[at] = xorshift(&mut state) as u8;
                }
            }
            1 => {
                let at = (xorshift(&mut state) as usize) % body.len();
                body.truncate(at);
            }
            2 => {
                let at = (xorshift(&mut state) as usize) % body.len();
                let junk: Vec<u8> = (0..16).map(|_| xorshift(&mut state) as u8).collect();
                body.splice(at..at, junk);
            }
            _ => {
                body = (0..256).map(|_| xorshift(&mut state) as u8).collect();
            }
        }
        for content_type in [
            case.content_type,
            "application/json",
            "text/event-stream",
            "application/vnd.amazon.eventstream",
        ] {
            let mut o = ResponseObserver::new(Some(content_type)).capturing_content(true);
            for piece in body.chunks(1 + (xorshift(&mut state) as usize) % 40) {
                o.feed(piece);
            }
            let _ = o.saw_end();
            let _ = o.finish();
        }
    }
}

#[test]
fn newline_delimited_json_is_read_but_never_ends_by_its_framing() {
    let body = concat!(
        "{\"model\":\"llama3\",\"message\":{\"content\":\"Hi\"},\"done\":false}\n",
        "{\"model\":\"llama3\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n",
    );
    let mut o = ResponseObserver::new(Some("application/x-ndjson"));
    o.feed(body.as_bytes());
    assert!(o.is_stream());
    assert!(!o.saw_end(), "a document of a stream is not its end");
    assert_eq!(o.finish().input_tokens, Some(3));
    // The same bytes as one JSON body's worth: complete once closed.
    let mut o = ResponseObserver::new(Some("application/json"));
    o.feed(b"{\"usage\":{\"prompt_tokens\":3}}");
    assert!(o.saw_end());
}
