//! Reading what an answer reports about itself (token usage, model, id,
//! finish reasons, whether it reached its final event) from the body as its
//! chunks pass through, whatever the API: OpenAI chat and Responses,
//! Anthropic Messages, Gemini, Bedrock (Converse, InvokeModel and their
//! event streams), Cohere v2.
//!
//! Bounded memory: JSON bodies are cut into their top-level values (or the
//! elements of a top-level array, Gemini's streaming form) and each is kept
//! only up to a cap; an SSE stream keeps only its event under construction
//! (`sse-parse`, capped); an AWS event stream keeps only its current frame.
//! Nothing here fails: what cannot be read is not counted.

mod eventstream;
mod json_values;
mod read_fields;
#[cfg(test)]
mod tests;

use std::time::Instant;

use base64::Engine;
use serde_json::Value;
use sse_parse::SseParser;

use eventstream::{Frame, Frames};
use json_values::JsonValues;

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

/// Largest JSON value (a body, an SSE event's data, an event-stream frame)
/// read for usage; larger ones are skipped.
const JSON_CAP: usize = 4 << 20;
/// Most answer text kept for telemetry content capture.
const CONTENT_CAP: usize = 64 << 10;

/// How the answer's body is cut into JSON documents.
#[derive(Debug)]
enum Framing {
    /// A JSON body, or (`lines`) newline-delimited JSON, whose documents
    /// say nothing of which one is the last.
    Json {
        values: JsonValues,
        lines: bool,
    },
    Sse(Box<SseParser>),
    EventStream(Frames),
}

#[derive(Debug)]
pub struct ResponseObserver {
    framing: Framing,
    reader: Reader,
    finished: bool,
    pub first_chunk_at: Option<Instant>,
}

impl ResponseObserver {
    pub fn new(content_type: Option<&str>) -> ResponseObserver {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let framing = match media.as_str() {
            "text/event-stream" => Framing::Sse(Box::new(SseParser::new().max_buffer(JSON_CAP))),
            "application/vnd.amazon.eventstream" => Framing::EventStream(Frames::new(JSON_CAP)),
            other => Framing::Json {
                values: JsonValues::new(JSON_CAP),
                lines: matches!(
                    other,
                    "application/x-ndjson" | "application/jsonl" | "application/json-seq"
                ),
            },
        };
        ResponseObserver {
            framing,
            reader: Reader::default(),
            finished: false,
            first_chunk_at: None,
        }
    }

    /// Also collect the answer's text (for telemetry that opted in).
    pub fn capturing_content(mut self, capture: bool) -> Self {
        self.reader.capture = capture;
        self
    }

    /// Whether the answer is a stream of events: SSE, an AWS event stream,
    /// or (once its first byte is seen) a JSON array of chunks.
    pub fn is_stream(&self) -> bool {
        match &self.framing {
            Framing::Json { values, lines } => *lines || values.is_array(),
            Framing::Sse(_) | Framing::EventStream(_) => true,
        }
    }

    /// Whether the answer's final event has been seen: `[DONE]`,
    /// `response.completed`, `message_stop`, Cohere's `message-end`, a
    /// Gemini chunk with a finish reason, Bedrock's `messageStop` and
    /// `metadata`, or a JSON body's closing bracket. A client that goes away
    /// after this has the whole answer.
    pub fn saw_end(&self) -> bool {
        self.reader.ended
            || match &self.framing {
                Framing::Json { values, lines } => !lines && values.complete(),
                _ => false,
            }
    }

    /// Token counts that Bedrock sends as headers (InvokeModel, Converse):
    /// a body that says nothing of usage (an image model's) still counts.
    pub fn note_headers(&mut self, headers: &http::HeaderMap) {
        let count = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let u = &mut self.reader.usage;
        if let Some(n) = count("x-amzn-bedrock-input-token-count") {
            u.input_tokens = Some(n);
        }
        if let Some(n) = count("x-amzn-bedrock-output-token-count") {
            u.output_tokens = Some(n);
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() || self.finished {
            return;
        }
        self.first_chunk_at.get_or_insert_with(Instant::now);
        let reader = &mut self.reader;
        match &mut self.framing {
            Framing::Json { values, .. } => values.feed(chunk, &mut |doc| reader.json_doc(doc)),
            Framing::Sse(parser) => {
                parser.feed(chunk);
                while let Some(event) = parser.next_event() {
                    reader.sse_event(&event.event, &event.data);
                }
            }
            Framing::EventStream(frames) => frames.feed(chunk, &mut |frame| reader.frame(frame)),
        }
    }

    /// Usage and response facts, once the body has ended.
    pub fn finish(&mut self) -> Usage {
        if !self.finished {
            self.finished = true;
            if let Framing::Sse(parser) = &mut self.framing {
                // An upstream that ends without the closing blank line still
                // told its usage in that last event.
                parser.feed(b"\n\n");
                parser.finish();
                while let Some(event) = parser.next_event() {
                    self.reader.sse_event(&event.event, &event.data);
                }
            }
        }
        self.reader.usage.clone()
    }
}

/// What has been read so far, fed one JSON document at a time.
#[derive(Debug, Default)]
struct Reader {
    capture: bool,
    usage: Usage,
    ended: bool,
    /// Bedrock ConverseStream ends with `messageStop`, then `metadata`.
    converse_stop: bool,
    converse_metadata: bool,
}

impl Reader {
    /// A document as the reader reads it: whole when content is captured;
    /// otherwise only the fields the reader looks at, the text and the rest
    /// skipped by the parser instead of built and dropped.
    fn parse(&self, doc: &[u8]) -> Option<Value> {
        if self.capture {
            return serde_json::from_slice(doc).ok();
        }
        let mut parser = serde_json::Deserializer::from_slice(doc);
        let value =
            serde::de::DeserializeSeed::deserialize(read_fields::Fields, &mut parser).ok()?;
        parser.end().ok()?;
        Some(value)
    }

    fn json_doc(&mut self, doc: &[u8]) {
        if let Some(v) = self.parse(doc) {
            self.absorb(&v);
        }
    }

    fn sse_event(&mut self, name: &str, data: &str) {
        let data = data.trim();
        if data == "[DONE]" {
            self.ended = true;
            return;
        }
        let Some(v) = self.parse(data.as_bytes()) else {
            return;
        };
        // Cohere and Anthropic name the event in the data too; the SSE name
        // is the fallback for streams that only name it there.
        if v.get("type").is_none() && is_end_event(name) {
            self.ended = true;
        }
        self.absorb(&v);
    }

    fn frame(&mut self, frame: Frame<'_>) {
        if frame.message_type != Some("event") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(frame.payload) else {
            return;
        };
        match frame.event_type.unwrap_or_default() {
            // InvokeModelWithResponseStream: the model's own JSON, base64.
            "chunk" => {
                let Some(bytes) = v.get("bytes").and_then(Value::as_str) else {
                    return;
                };
                if bytes.len() > JSON_CAP {
                    return;
                }
                if let Ok(inner) = base64::engine::general_purpose::STANDARD.decode(bytes) {
                    self.json_doc(&inner);
                }
            }
            "contentBlockDelta" => {
                if let Some(text) = v.pointer("/delta/text").and_then(Value::as_str) {
                    self.capture_text(text);
                }
            }
            "messageStop" => {
                if let Some(reason) = v.get("stopReason").and_then(Value::as_str) {
                    push_unique(&mut self.usage.finish_reasons, reason);
                }
                self.converse_stop = true;
            }
            "metadata" => {
                if let Some(usage) = v.get("usage") {
                    self.tokens(usage);
                }
                self.converse_metadata = true;
            }
            _ => {}
        }
        if self.converse_stop && self.converse_metadata {
            self.ended = true;
        }
    }

    /// Reads any API's shape: the document's own fields and those of the
    /// object it wraps (Anthropic's `message`, Responses' `response`,
    /// Cohere's `delta`).
    fn absorb(&mut self, v: &Value) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or_default();
        if is_end_event(kind) {
            self.ended = true;
        }
        let wrapped = ["message", "response", "delta"]
            .into_iter()
            .filter_map(|k| v.get(k).filter(|x| x.is_object()));
        for source in std::iter::once(v).chain(wrapped) {
            self.facts(source);
        }
        if let Some(metrics) = v.get("amazon-bedrock-invocationMetrics") {
            // Sent on an InvokeModel stream's last chunk, whatever the model.
            let u = &mut self.usage;
            if let Some(n) = metrics.get("inputTokenCount").and_then(Value::as_u64) {
                u.input_tokens = Some(n);
            }
            if let Some(n) = metrics.get("outputTokenCount").and_then(Value::as_u64) {
                u.output_tokens = Some(n);
            }
            self.ended = true;
        }
        if let Some(Value::Array(candidates)) = v.get("candidates") {
            // Gemini: the last chunk of a stream is the one with a reason.
            if candidates.iter().any(|c| c.get("finishReason").is_some()) {
                self.ended = true;
            }
        }
        self.reasons(v);
        if self.capture {
            self.content(v, kind);
        }
    }

    /// Id, model, usage and stop reason of one object.
    fn facts(&mut self, source: &Value) {
        let u = &mut self.usage;
        if let Some(id) = source
            .get("id")
            .or_else(|| source.get("responseId"))
            .and_then(Value::as_str)
        {
            u.response_id.get_or_insert_with(|| id.to_string());
        }
        if let Some(model) = source
            .get("model")
            .or_else(|| source.get("modelVersion"))
            .and_then(Value::as_str)
        {
            u.response_model = Some(model.to_string());
        }
        for key in ["stop_reason", "stopReason", "finish_reason"] {
            if let Some(reason) = source.get(key).and_then(Value::as_str) {
                push_unique(&mut u.finish_reasons, reason);
            }
        }
        // Responses: the finished response's status, or why it is
        // incomplete.
        if source.get("object").and_then(Value::as_str) == Some("response") {
            let status = source.get("status").and_then(Value::as_str);
            if matches!(
                status,
                Some("completed" | "incomplete" | "failed" | "cancelled")
            ) {
                let reason = source
                    .pointer("/incomplete_details/reason")
                    .and_then(Value::as_str)
                    .or(status);
                if let Some(reason) = reason {
                    push_unique(&mut u.finish_reasons, reason);
                }
            }
        }
        if let Some(usage) = source.get("usage").filter(|x| x.is_object()) {
            self.tokens(usage);
        }
        if let Some(meta) = source.get("usageMetadata").filter(|x| x.is_object()) {
            let count = |k: &str| meta.get(k).and_then(Value::as_u64);
            if let Some(n) = count("promptTokenCount") {
                self.usage.input_tokens = Some(n);
            }
            // Thinking is output the model was paid for, as in OpenAI's
            // `completion_tokens` and Anthropic's `output_tokens`.
            let thoughts = count("thoughtsTokenCount");
            match (count("candidatesTokenCount"), thoughts) {
                (None, None) => {}
                (c, t) => {
                    self.usage.output_tokens = Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0)));
                }
            }
        }
    }

    /// A `usage` object: OpenAI chat (`prompt_tokens`), Responses and
    /// Anthropic (`input_tokens`), Bedrock (`inputTokens`), Cohere v2
    /// (`tokens`, else `billed_units`). Only the counts present are set, so
    /// that Anthropic's `message_delta` (output only) keeps the input count
    /// from `message_start`.
    fn tokens(&mut self, usage: &Value) {
        // Cohere's `tokens` are what the model read and wrote, as the other
        // APIs count; `billed_units` leave out its prompt template.
        let usage = usage
            .get("tokens")
            .or_else(|| usage.get("billed_units"))
            .filter(|x| x.is_object())
            .unwrap_or(usage);
        let pick = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| usage.get(*k).and_then(Value::as_u64))
        };
        if let Some(n) = pick(&["prompt_tokens", "input_tokens", "inputTokens"]) {
            self.usage.input_tokens = Some(n);
        }
        if let Some(n) = pick(&["completion_tokens", "output_tokens", "outputTokens"]) {
            self.usage.output_tokens = Some(n);
        }
    }

    fn reasons(&mut self, v: &Value) {
        let Some(Value::Array(choices)) = v.get("choices").or_else(|| v.get("candidates")) else {
            return;
        };
        for choice in choices {
            if let Some(reason) = choice
                .get("finish_reason")
                .or_else(|| choice.get("finishReason"))
                .and_then(Value::as_str)
            {
                push_unique(&mut self.usage.finish_reasons, reason);
            }
        }
    }

    /// The answer's text, from each API's JSON body or stream deltas. A
    /// stream's final event repeats the whole text in some APIs
    /// (`response.completed`, Anthropic's `message_start` is empty): only
    /// deltas are read from streams.
    fn content(&mut self, v: &Value, kind: &str) {
        let mut texts: Vec<&str> = Vec::new();
        match kind {
            "content_block_delta" => texts.extend(v.pointer("/delta/text").and_then(Value::as_str)),
            "response.output_text.delta" => texts.extend(v.get("delta").and_then(Value::as_str)),
            "content-delta" => texts.extend(
                v.pointer("/delta/message/content/text")
                    .and_then(Value::as_str),
            ),
            // Anthropic (`content`), Cohere (`message.content`) and Bedrock
            // Converse (`output.message.content`) JSON bodies: blocks.
            "message" | "" => {
                for blocks in [
                    v.get("content"),
                    v.pointer("/message/content"),
                    v.pointer("/output/message/content"),
                ]
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                {
                    texts.extend(blocks.iter().filter_map(|b| b.get("text")?.as_str()));
                }
            }
            _ => {}
        }
        // Responses JSON body: output items of type message.
        if v.get("object").and_then(Value::as_str) == Some("response") {
            if let Some(Value::Array(items)) = v.get("output") {
                for item in items {
                    if let Some(Value::Array(parts)) = item.get("content") {
                        texts.extend(parts.iter().filter_map(|p| p.get("text")?.as_str()));
                    }
                }
            }
        }
        if let Some(Value::Array(choices)) = v.get("choices") {
            texts.extend(choices.iter().filter_map(|c| {
                c.get("delta")
                    .or_else(|| c.get("message"))
                    .and_then(|m| m.get("content"))
                    .and_then(Value::as_str)
            }));
        }
        if let Some(Value::Array(candidates)) = v.get("candidates") {
            for candidate in candidates {
                if let Some(Value::Array(parts)) = candidate.pointer("/content/parts") {
                    texts.extend(parts.iter().filter_map(|p| p.get("text")?.as_str()));
                }
            }
        }
        for text in texts {
            self.capture_text(text);
        }
    }

    fn capture_text(&mut self, text: &str) {
        if !self.capture {
            return;
        }
        let content = self.usage.content.get_or_insert_with(String::new);
        if content.len() + text.len() <= CONTENT_CAP {
            content.push_str(text);
        }
    }
}

/// The event that closes a stream, by its `type` (or SSE event name).
fn is_end_event(kind: &str) -> bool {
    matches!(
        kind,
        "message_stop"
            | "message-end"
            | "response.completed"
            | "response.incomplete"
            | "response.failed"
    )
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}
