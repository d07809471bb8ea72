//! Reading what an answer reports about itself (token usage, model, id,
//! finish reasons) from a JSON body or a server-sent-event stream, as the
//! chunks pass through. Bounded memory: a JSON body is inspected only up to
//! a cap, and an SSE stream keeps only its current partial line.

use std::time::Instant;

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// The answer's text, only when content capture is on (bounded).
    pub content: Option<String>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reasons: Vec<String>,
}

const JSON_CAP: usize = 4 << 20;
/// Most answer text kept for telemetry content capture.
const CONTENT_CAP: usize = 64 << 10;

#[derive(Debug)]
pub struct ResponseObserver {
    sse: bool,
    capture: bool,
    buf: Vec<u8>,
    overflow: bool,
    usage: Usage,
    pub first_chunk_at: Option<Instant>,
}

impl ResponseObserver {
    pub fn new(content_type: Option<&str>) -> ResponseObserver {
        let sse = content_type.is_some_and(|c| c.starts_with("text/event-stream"));
        ResponseObserver {
            sse,
            capture: false,
            buf: Vec::new(),
            overflow: false,
            usage: Usage::default(),
            first_chunk_at: None,
        }
    }

    /// Also collect the answer's text (for telemetry that opted in).
    pub fn capturing_content(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    pub fn is_stream(&self) -> bool {
        self.sse
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.first_chunk_at.get_or_insert_with(Instant::now);
        if !self.sse {
            if self.buf.len() + chunk.len() > JSON_CAP {
                self.overflow = true;
                self.buf = Vec::new();
            } else if !self.overflow {
                self.buf.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(newline);
            if self.buf.is_empty() {
                self.sse_line(line);
            } else {
                self.buf.extend_from_slice(line);
                let whole = std::mem::take(&mut self.buf);
                self.sse_line(&whole);
            }
            rest = &after[1..];
        }
        if !rest.is_empty() {
            if self.buf.len() + rest.len() > JSON_CAP {
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(rest);
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data == b"[DONE]" || data.is_empty() {
            return;
        }
        if let Ok(event) = serde_json::from_slice::<Value>(data) {
            self.absorb(&event);
        }
    }

    /// Usage and response facts, once the body has ended.
    pub fn finish(&mut self) -> Usage {
        if !self.sse && !self.overflow && !self.buf.is_empty() {
            let body = std::mem::take(&mut self.buf);
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                self.absorb(&v);
            }
        } else if self.sse && !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.sse_line(&last);
        }
        self.usage.clone()
    }

    /// Reads OpenAI/Mistral (`usage.prompt_tokens`), Anthropic
    /// (`usage.input_tokens`, also inside `message`) and Gemini
    /// (`usageMetadata`) shapes.
    fn absorb(&mut self, v: &Value) {
        let u = &mut self.usage;
        let message = v.get("message").filter(|m| m.is_object());
        for source in [Some(v), message].into_iter().flatten() {
            if let Some(id) = source.get("id").and_then(Value::as_str) {
                u.response_id.get_or_insert_with(|| id.to_string());
            }
            if let Some(model) = source
                .get("model")
                .or_else(|| source.get("modelVersion"))
                .and_then(Value::as_str)
            {
                u.response_model = Some(model.to_string());
            }
            if let Some(usage) = source.get("usage").filter(|x| x.is_object()) {
                let pick = |keys: &[&str]| {
                    keys.iter()
                        .find_map(|k| usage.get(*k).and_then(Value::as_u64))
                };
                if let Some(n) = pick(&["prompt_tokens", "input_tokens"]) {
                    u.input_tokens = Some(n);
                }
                if let Some(n) = pick(&["completion_tokens", "output_tokens"]) {
                    u.output_tokens = Some(n);
                }
            }
            if let Some(meta) = source.get("usageMetadata") {
                if let Some(n) = meta.get("promptTokenCount").and_then(Value::as_u64) {
                    u.input_tokens = Some(n);
                }
                if let Some(n) = meta.get("candidatesTokenCount").and_then(Value::as_u64) {
                    u.output_tokens = Some(n);
                }
            }
            if let Some(reason) = source.get("stop_reason").and_then(Value::as_str) {
                push_unique(&mut u.finish_reasons, reason);
            }
            if let Some(delta) = source.get("delta") {
                if let Some(reason) = delta.get("stop_reason").and_then(Value::as_str) {
                    push_unique(&mut u.finish_reasons, reason);
                }
            }
        }
        if let Some(Value::Array(choices)) = v.get("choices").or_else(|| v.get("candidates")) {
            if self.capture {
                for choice in choices {
                    let text = choice
                        .get("delta")
                        .or_else(|| choice.get("message"))
                        .and_then(|m| m.get("content"))
                        .and_then(Value::as_str);
                    if let Some(text) = text {
                        let content = u.content.get_or_insert_with(String::new);
                        if content.len() + text.len() <= CONTENT_CAP {
                            content.push_str(text);
                        }
                    }
                }
            }
            for choice in choices {
                if let Some(reason) = choice
                    .get("finish_reason")
                    .or_else(|| choice.get("finishReason"))
                    .and_then(Value::as_str)
                {
                    push_unique(&mut u.finish_reasons, reason);
                }
            }
        }
    }
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_json_body() {
        let mut o = ResponseObserver::new(Some("application/json"));
        let body = br#"{"id":"chatcmpl-1","model":"gpt-4o-2024-08-06","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7}}"#;
        o.feed(&body[..20]);
        o.feed(&body[20..]);
        let u = o.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (Some(11), Some(7)));
        assert_eq!(u.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(u.response_id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(u.finish_reasons, vec!["stop"]);
    }

    #[test]
    fn sse_stream_split_anywhere() {
        let stream = concat!(
            "data: {\"id\":\"c1\",\"model\":\"mistral-large-latest\",\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\r\n\r\n",
            "data: [DONE]\n\n"
        )
        .as_bytes();
        for split in 1..stream.len() {
            let mut o = ResponseObserver::new(Some("text/event-stream; charset=utf-8"));
            o.feed(&stream[..split]);
            o.feed(&stream[split..]);
            let u = o.finish();
            assert_eq!(
                (u.input_tokens, u.output_tokens),
                (Some(5), Some(3)),
                "split {split}"
            );
            assert_eq!(u.finish_reasons, vec!["stop"]);
            assert_eq!(u.response_model.as_deref(), Some("mistral-large-latest"));
        }
    }

    #[test]
    fn anthropic_stream() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n",
        );
        let mut o = ResponseObserver::new(Some("text/event-stream"));
        o.feed(stream.as_bytes());
        let u = o.finish();
        assert_eq!((u.input_tokens, u.output_tokens), (Some(25), Some(15)));
        assert_eq!(u.finish_reasons, vec!["end_turn"]);
        assert_eq!(u.response_id.as_deref(), Some("msg_1"));
    }
}
