//! Anthropic Messages (`POST /v1/messages`) served by an OpenAI-compatible
//! target: the request becomes a chat completion, and the target's answer
//! (JSON or SSE) becomes an Anthropic Message or Anthropic's event stream.
//!
//! Everything here is pure: the request is a value in and a value out, and
//! the answer is rewritten by a sans-IO [`AnswerTranslator`]. What chat
//! completions cannot express (server tools, documents, containers, MCP
//! servers) is refused with an error naming it rather than silently lost,
//! so an app never gets an answer to a question it did not ask.

use std::collections::BTreeMap;

use super::answer::{
    call_function, first_choice, target_error, AnswerTranslator, ChatDocument, ChatEvents,
    ChatJson, ChatStream, TargetError,
};
use serde_json::{json, Map, Value};

/// Top-level request fields dropped: hints for Anthropic's own service
/// (caching, capacity, region, speed, attribution) or features with no
/// chat equivalent whose absence changes no answer's shape (`thinking`:
/// the target reasons or not by itself; `top_k`: Mistral rejects it).
const DROPPED: &[&str] = &[
    "top_k",
    "metadata",
    "thinking",
    "cache_control",
    "service_tier",
    "inference_geo",
    "speed",
    "diagnostics",
    "user_profile_id",
    "workspace_id",
];

/// Top-level request fields refused: state or tools that live at Anthropic.
const REFUSED: &[(&str, &str)] = &[
    ("container", "code-execution containers"),
    ("mcp_servers", "MCP servers"),
    ("context_management", "context management"),
];

/// Tool fields without a chat equivalent that only tune Anthropic's
/// handling of the tool (tool search, programmatic calling, streaming).
const DROPPED_TOOL_FIELDS: &[&str] = &[
    "cache_control",
    "defer_loading",
    "allowed_callers",
    "eager_input_streaming",
    "input_examples",
];

/// The chat-completions request for an Anthropic Messages request. `model`
/// is kept as given; the caller maps it to the target's model.
pub fn request_to_chat(body: &Value) -> Result<Value, String> {
    let Value::Object(fields) = body else {
        return Err("the body is not a JSON object".into());
    };
    let mut out = Map::new();
    let mut messages = Vec::new();
    for (key, value) in fields {
        match key.as_str() {
            "model" | "max_tokens" | "temperature" | "top_p" => {
                out.insert(key.clone(), value.clone());
            }
            "stream" => {
                out.insert("stream".into(), value.clone());
                if value.as_bool() == Some(true) {
                    // Without it an OpenAI-compatible stream carries no usage.
                    out.insert("stream_options".into(), json!({"include_usage": true}));
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), value.clone());
            }
            "system" => {
                let text = system_text(value)?;
                // An empty system message is an error at some targets.
                if !text.is_empty() {
                    messages.insert(0, json!({"role": "system", "content": text}));
                }
            }
            "messages" | "tools" | "tool_choice" | "output_config" => {}
            k if DROPPED.contains(&k) => {}
            k => {
                if let Some((_, what)) = REFUSED.iter().find(|(f, _)| *f == k) {
                    return Err(format!(
                        "{k} ({what}) is an Anthropic feature that cannot be rerouted"
                    ));
                }
                return Err(format!(
                    "the field {k} is not supported when a Messages call is rerouted"
                ));
            }
        }
    }
    let Some(Value::Array(input)) = fields.get("messages") else {
        return Err("messages is missing or not an array".into());
    };
    for (i, message) in input.iter().enumerate() {
        translate_message(message, &mut messages).map_err(|e| format!("messages[{i}]: {e}"))?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = fields.get("tools") {
        out.insert("tools".into(), translate_tools(tools)?);
    }
    if let Some(choice) = fields.get("tool_choice") {
        let (choice, parallel) = translate_tool_choice(choice)?;
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
        if let Some(parallel) = parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    if let Some(config) = fields.get("output_config") {
        if let Some(format) = output_format(config)? {
            out.insert("response_format".into(), format);
        }
    }
    Ok(Value::Object(out))
}

fn system_text(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for block in blocks {
                match block_type(block)? {
                    "text" => parts.push(text_of(block)?),
                    other => return Err(format!("system: a {other} block is not supported")),
                }
            }
            Ok(parts.join("\n"))
        }
        _ => Err("system is neither a string nor an array of text blocks".into()),
    }
}

fn block_type(block: &Value) -> Result<&str, String> {
    block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| "a content block has no type".to_string())
}

fn text_of(block: &Value) -> Result<String, String> {
    block
        .get("text")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| "a text block has no text".to_string())
}

/// Mistral accepts only tool-call ids of nine ASCII letters and digits
/// (`[a-zA-Z0-9]{9}`); Claude's are `toolu_…`. Other ids are replaced by a
/// stable nine-character digest, the same for a `tool_use` and the
/// `tool_result` answering it, so a conversation begun with Claude can go on
/// at Mistral. Ids the target made itself pass unchanged.
fn chat_tool_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    // FNV-1a: tiny, deterministic, and collisions within one conversation
    // are negligible at 62^9 values.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(9);
    for _ in 0..9 {
        let digit = (hash % 62) as usize;
        out.push(char::from(ALPHABET.get(digit).copied().unwrap_or(b'0')));
        hash /= 62;
    }
    out
}

fn translate_message(message: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let role = message
        .get("role")
        .and_then(Value::as_str)
        .ok_or("the message has no role")?;
    if role != "user" && role != "assistant" {
        return Err(format!("role {role:?} is not user or assistant"));
    }
    let blocks: Vec<Value> = match message.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks.clone(),
        _ => return Err("content is neither a string nor an array of blocks".into()),
    };
    let mut parts: Vec<Value> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in &blocks {
        match (role, block_type(block)?) {
            (_, "text") => parts.push(json!({"type": "text", "text": text_of(block)?})),
            ("user", "image") => parts.push(image_part(block)?),
            ("user", "tool_result") => out.push(tool_message(block)?),
            ("assistant", "tool_use") => tool_calls.push(tool_call(block)?),
            // Reasoning is the source model's own; its signature means
            // nothing to another model.
            ("assistant", "thinking" | "redacted_thinking") => {}
            (_, "document") => {
                return Err("document blocks (PDF and text documents) cannot be rerouted".into())
            }
            (_, other) => {
                return Err(format!(
                    "{other} blocks cannot be rerouted in {role} messages"
                ))
            }
        }
    }
    let content = parts_content(parts);
    if role == "assistant" {
        if content.is_null() && tool_calls.is_empty() {
            return Ok(());
        }
        let mut m = json!({"role": "assistant", "content": content});
        if !tool_calls.is_empty() {
            m["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(m);
    } else if !content.is_null() {
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// Text alone becomes a string (which every chat server takes); with images
/// the parts stay a list.
fn parts_content(parts: Vec<Value>) -> Value {
    if parts.is_empty() {
        return Value::Null;
    }
    if parts.iter().all(|p| p["type"] == "text") {
        let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        return Value::String(texts.join("\n"));
    }
    Value::Array(parts)
}

fn image_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").ok_or("an image block has no source")?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or("a base64 image has no media_type")?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or("a base64 image has no data")?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or("a url image has no url")?
            .to_string(),
        Some(other) => {
            return Err(format!(
                "images from a {other} source (Anthropic's Files API) cannot be rerouted"
            ))
        }
        None => return Err("an image source has no type".into()),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_message(block: &Value) -> Result<Value, String> {
    let id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or("a tool_result has no tool_use_id")?;
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match block_type(b)? {
                    "text" => parts.push(text_of(b)?),
                    other => {
                        return Err(format!(
                            "a tool_result with {other} content cannot be rerouted (chat tool messages carry text)"
                        ))
                    }
                }
            }
            parts.join("\n")
        }
        Some(_) => return Err("a tool_result's content is neither a string nor blocks".into()),
    };
    // Chat has no error flag on tool messages: the model reads it instead.
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    Ok(json!({"role": "tool", "tool_call_id": chat_tool_id(id), "content": text}))
}

fn tool_call(block: &Value) -> Result<Value, String> {
    let id = block
        .get("id")
        .and_then(Value::as_str)
        .ok_or("a tool_use has no id")?;
    let name = block
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool_use has no name")?;
    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
    Ok(json!({
        "id": chat_tool_id(id),
        "type": "function",
        "function": {"name": name, "arguments": input.to_string()},
    }))
}

fn translate_tools(tools: &Value) -> Result<Value, String> {
    let Value::Array(tools) = tools else {
        return Err("tools is not an array".into());
    };
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(t)) if t == "custom" => {}
            Some(t) => {
                let kind = t.as_str().unwrap_or("?");
                return Err(format!(
                    "the Anthropic-defined tool {name} ({kind}) cannot be rerouted: only custom tools with an input_schema can"
                ));
            }
        }
        let Value::Object(fields) = tool else {
            return Err("a tool is not an object".into());
        };
        let schema = fields
            .get("input_schema")
            .ok_or_else(|| format!("tool {name} has no input_schema"))?;
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name.to_string()));
        for (key, value) in fields {
            match key.as_str() {
                "name" | "type" | "input_schema" => {}
                "description" | "strict" => {
                    function.insert(key.clone(), value.clone());
                }
                k if DROPPED_TOOL_FIELDS.contains(&k) => {}
                k => return Err(format!("tool {name}: the field {k} is not supported")),
            }
        }
        function.insert("parameters".into(), schema.clone());
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(Value::Array(out))
}

/// Chat's `tool_choice`, and `parallel_tool_calls` from
/// `disable_parallel_tool_use`.
fn translate_tool_choice(choice: &Value) -> Result<(Option<Value>, Option<bool>), String> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disable| !disable);
    let chat = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or("tool_choice of type tool has no name")?;
            json!({"type": "function", "function": {"name": name}})
        }
        other => return Err(format!("tool_choice type {other:?} is not supported")),
    };
    Ok((Some(chat), parallel))
}

/// `output_config.format` (structured outputs) as chat's `response_format`;
/// `effort` is a reasoning hint and dropped.
fn output_format(config: &Value) -> Result<Option<Value>, String> {
    let Value::Object(fields) = config else {
        return Err("output_config is not an object".into());
    };
    let mut out = None;
    for (key, value) in fields {
        match key.as_str() {
            "effort" => {}
            "format" if value.is_null() => {}
            "format" => {
                if value.get("type").and_then(Value::as_str) != Some("json_schema") {
                    return Err("output_config.format: only json_schema is supported".into());
                }
                let schema = value
                    .get("schema")
                    .ok_or("output_config.format has no schema")?;
                out = Some(json!({
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": true},
                }));
            }
            k => return Err(format!("output_config.{k} is not supported")),
        }
    }
    Ok(out)
}

/// Makes the ids of translated answers from a prefix (`msg_`, `toolu_`).
/// Injected so golden files are stable.
pub type IdGen = Box<dyn FnMut(&str) -> String + Send + Sync>;

/// Random ids shaped like Anthropic's.
pub fn random_ids() -> IdGen {
    Box::new(|prefix| {
        use rand::distributions::{Alphanumeric, DistString};
        format!(
            "{prefix}{}",
            Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
        )
    })
}

/// A chat answer body larger than this is not an answer an app expects.
const MAX_JSON_ANSWER: usize = 64 << 20;
/// One SSE event of a target's stream, and the tool arguments held while a
/// tool call has no name yet.
const MAX_EVENT: usize = 16 << 20;

/// The translator of a target's chat answer into an Anthropic answer:
/// `stream` is whether the app asked for a stream, `model` the model named
/// in the answer.
pub fn answer_translator(stream: bool, model: &str) -> Box<dyn AnswerTranslator> {
    answer_translator_with_ids(stream, model, random_ids())
}

/// [`answer_translator`] with the ids it makes chosen by `ids`.
pub fn answer_translator_with_ids(
    stream: bool,
    model: &str,
    ids: IdGen,
) -> Box<dyn AnswerTranslator> {
    if stream {
        Box::new(ChatStream::new(StreamAnswer::new(model, ids), MAX_EVENT))
    } else {
        let document = JsonAnswer {
            model: model.to_string(),
            ids,
        };
        Box::new(ChatJson::new(document, MAX_JSON_ANSWER))
    }
}

struct JsonAnswer {
    model: String,
    ids: IdGen,
}

impl ChatDocument for JsonAnswer {
    fn document(&mut self, chat: &Value, _body: &[u8]) -> Result<Vec<u8>, String> {
        let message = chat_to_message(chat, &self.model, &mut self.ids)?;
        serde_json::to_vec(&message).map_err(|e| e.to_string())
    }
}

/// An Anthropic Message from a chat completion.
pub fn chat_to_message(chat: &Value, model: &str, ids: &mut IdGen) -> Result<Value, String> {
    if let Some(TargetError { message, .. }) = target_error(chat) {
        return Err(format!("the target answered with an error: {message}"));
    }
    let (choice, message) = first_choice(chat)?;
    let mut content = Vec::new();
    let text = content_text(message.get("content").unwrap_or(&Value::Null))?;
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").filter(|c| !c.is_null()) {
        let calls = calls.as_array().ok_or("tool_calls is not an array")?;
        for call in calls {
            let (function, name) = call_function(call)?;
            let input = match function.get("arguments") {
                None | Some(Value::Null) => json!({}),
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str(s)
                    .map_err(|e| format!("the arguments of tool call {name} are not JSON: {e}"))?,
                Some(other) => other.clone(),
            };
            if !input.is_object() {
                return Err(format!(
                    "the arguments of tool call {name} are not a JSON object"
                ));
            }
            let id = match call.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => ids("toolu_"),
            };
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
    }
    let (stop_reason, stop_sequence) = stop_reason(choice)?;
    Ok(json!({
        "id": ids("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage(chat.get("usage")),
    }))
}

/// Chat content as text: a string, or Mistral's list of chunks (text kept,
/// reasoning dropped).
fn content_text(content: &Value) -> Result<String, String> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(chunks) => {
            let mut text = String::new();
            for chunk in chunks {
                match chunk.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(chunk["text"].as_str().unwrap_or_default()),
                    Some("thinking") => {}
                    other => {
                        return Err(format!(
                            "the target answered with content of type {other:?}"
                        ))
                    }
                }
            }
            Ok(text)
        }
        _ => Err("the target's content is neither text nor chunks".into()),
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for a chat choice. A stop
/// sequence is known only when the target names it (vLLM's `stop_reason`).
fn stop_reason(choice: &Value) -> Result<(&'static str, Value), String> {
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    Ok(match finish {
        Some("stop") | None => match choice.get("stop_reason") {
            Some(Value::String(s)) => ("stop_sequence", Value::String(s.clone())),
            _ => ("end_turn", Value::Null),
        },
        Some("length" | "model_length") => ("max_tokens", Value::Null),
        Some("tool_calls" | "function_call") => ("tool_use", Value::Null),
        Some("content_filter") => ("refusal", Value::Null),
        Some(other) => return Err(format!("the target stopped with finish_reason {other:?}")),
    })
}

fn usage(usage: Option<&Value>) -> Value {
    let get = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
    let prompt = get("prompt_tokens").unwrap_or(0);
    let cached = usage
        .and_then(|u| u.get("prompt_tokens_details"))
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64);
    let mut out = json!({
        // Anthropic counts cache reads apart from input tokens.
        "input_tokens": prompt.saturating_sub(cached.unwrap_or(0)),
        "output_tokens": get("completion_tokens").unwrap_or(0),
    });
    if let Some(cached) = cached {
        out["cache_read_input_tokens"] = json!(cached);
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text(usize),
    Tool(u64),
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    name: Option<String>,
    block: Option<usize>,
    /// Arguments that came before the name, to send once the block opens.
    pending: String,
    /// Arguments sent, checked when the block closes.
    sent: String,
    closed: bool,
}

struct StreamAnswer {
    model: String,
    ids: IdGen,
    started: bool,
    done: bool,
    open: Option<Open>,
    next_block: usize,
    tools: BTreeMap<u64, ToolCall>,
    stop: Option<(&'static str, Value)>,
    usage: Option<Value>,
}

impl StreamAnswer {
    fn new(model: &str, ids: IdGen) -> StreamAnswer {
        StreamAnswer {
            model: model.to_string(),
            ids,
            started: false,
            done: false,
            open: None,
            next_block: 0,
            tools: BTreeMap::new(),
            stop: None,
            usage: None,
        }
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.start(out);
        if let Some(choice) = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let text = content_text(delta.get("content").unwrap_or(&Value::Null))?;
            if !text.is_empty() {
                self.text(&text, out);
            }
            if let Some(calls) = delta.get("tool_calls").filter(|c| !c.is_null()) {
                let calls = calls.as_array().ok_or("tool_calls is not an array")?;
                for (position, call) in calls.iter().enumerate() {
                    self.tool_delta(position, call, out)?;
                }
            }
            if self.done {
                return Ok(());
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                if !self.close(out) {
                    return Ok(());
                }
                if let Some((index, _)) = self.tools.iter().find(|(_, t)| t.block.is_none()) {
                    return Err(format!("the target's tool call {index} has no name"));
                }
                self.stop = Some(stop_reason(choice)?);
            }
        }
        if chunk.get("usage").is_some_and(Value::is_object) {
            self.usage = chunk.get("usage").cloned();
        }
        if self.stop.is_some() && self.usage.is_some() {
            self.end(out)?;
        }
        Ok(())
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = (self.ids)("msg_");
        emit(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                // Known at the end; message_delta carries the counts.
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }}),
        );
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        let index = match self.open {
            Some(Open::Text(index)) => index,
            _ => {
                if !self.close(out) {
                    return;
                }
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Some(Open::Text(index));
                index
            }
        };
        emit(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
        );
    }

    fn tool_delta(
        &mut self,
        position: usize,
        call: &Value,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64);
        let function = call.get("function").unwrap_or(&Value::Null);
        let args = match function.get("arguments") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let tool = self.tools.entry(index).or_default();
        if tool.closed {
            return Err(format!(
                "the target's tool call {index} went on after another began"
            ));
        }
        if tool.id.is_none() {
            tool.id = call
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        if tool.name.is_none() {
            tool.name = function
                .get("name")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string);
        }
        let block = match tool.block {
            Some(block) => block,
            None if tool.name.is_none() => {
                if tool.pending.len() + args.len() > MAX_EVENT {
                    return Err("the target's tool call has no name".into());
                }
                tool.pending.push_str(&args);
                return Ok(());
            }
            None => {
                let name = tool.name.clone().unwrap_or_default();
                let id = tool.id.clone();
                let pending = std::mem::take(&mut tool.pending);
                if !self.close(out) {
                    return Ok(());
                }
                let id = id.unwrap_or_else(|| (self.ids)("toolu_"));
                let block = self.open_block(
                    out,
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                );
                self.open = Some(Open::Tool(index));
                if let Some(tool) = self.tools.get_mut(&index) {
                    tool.block = Some(block);
                    tool.sent = pending;
                }
                if let Some(tool) = self.tools.get(&index) {
                    if !tool.sent.is_empty() {
                        json_delta(out, block, &tool.sent);
                    }
                }
                block
            }
        };
        if !args.is_empty() {
            if let Some(tool) = self.tools.get_mut(&index) {
                if tool.sent.len() + args.len() > MAX_EVENT {
                    return Err(format!(
                        "the target's tool call {index} has more than {MAX_EVENT} bytes of arguments"
                    ));
                }
                tool.sent.push_str(&args);
            }
            json_delta(out, block, &args);
        }
        Ok(())
    }

    fn open_block(&mut self, out: &mut Vec<u8>, block: Value) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// Closes the open block. A tool call whose arguments are not a JSON
    /// object ends the stream with an `error` event instead, as the JSON
    /// answer is refused: false then.
    fn close(&mut self, out: &mut Vec<u8>) -> bool {
        let index = match self.open.take() {
            None => return true,
            Some(Open::Text(index)) => index,
            Some(Open::Tool(tool)) => {
                let Some(t) = self.tools.get_mut(&tool) else {
                    return true;
                };
                t.closed = true;
                let Some(index) = t.block else {
                    return true;
                };
                let valid = t.sent.trim().is_empty()
                    || serde_json::from_str::<Value>(&t.sent).is_ok_and(|v| v.is_object());
                if !valid {
                    let name = t.name.clone().unwrap_or_default();
                    emit(
                        out,
                        "error",
                        &json!({"type": "error", "error": {"type": "api_error", "message":
                            format!("the target's arguments for tool call {name} are not a JSON object")}}),
                    );
                    self.done = true;
                    return false;
                }
                index
            }
        };
        emit(
            out,
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        true
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.done {
            return Ok(());
        }
        self.start(out);
        if !self.close(out) {
            return Ok(());
        }
        if let Some((index, _)) = self.tools.iter().find(|(_, t)| t.block.is_none()) {
            return Err(format!("the target's tool call {index} has no name"));
        }
        let (reason, sequence) = self.stop.take().unwrap_or(("end_turn", Value::Null));
        emit(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage(self.usage.as_ref())}),
        );
        emit(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
        Ok(())
    }
}

fn json_delta(out: &mut Vec<u8>, index: usize, partial: &str) {
    emit(
        out,
        "content_block_delta",
        &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": partial}}),
    );
}

fn emit(out: &mut Vec<u8>, event: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl ChatEvents for StreamAnswer {
    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.chunk(chunk, out)
    }

    fn on_error(&mut self, error: TargetError, out: &mut Vec<u8>) {
        emit(
            out,
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": error.message}}),
        );
        self.done = true;
    }

    fn on_done(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.end(out)
    }

    /// A finish_reason without the usage that may follow it is an end.
    fn is_whole(&self) -> bool {
        self.stop.is_some()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdGen {
        let mut n = 0;
        Box::new(move |prefix| {
            n += 1;
            format!("{prefix}{n}")
        })
    }

    fn request(extra: Value) -> Value {
        let mut body = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    fn user_blocks(blocks: Value) -> Value {
        request(json!({"messages": [{"role": "user", "content": blocks}]}))
    }

    #[test]
    fn refusals_name_the_feature() {
        let cases = [
            (
                request(json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]})),
                "web_search",
            ),
            (
                request(json!({"tools": [{"type": "bash_20250124", "name": "bash"}]})),
                "bash",
            ),
            (
                request(
                    json!({"tools": [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]}),
                ),
                "text_editor_20250728",
            ),
            (
                request(
                    json!({"tools": [{"type": "computer_20250124", "name": "computer", "display_width_px": 1024}]}),
                ),
                "computer",
            ),
            (request(json!({"container": "container_1"})), "container"),
            (
                request(
                    json!({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]}),
                ),
                "mcp_servers",
            ),
            (request(json!({"frobnicate": true})), "frobnicate"),
            (
                user_blocks(
                    json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]),
                ),
                "document",
            ),
            (
                user_blocks(
                    json!([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}]),
                ),
                "Files API",
            ),
            (
                user_blocks(
                    json!([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]),
                ),
                "tool_result with image",
            ),
            (
                request(
                    json!({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
                ),
                "server_tool_use",
            ),
            (
                request(json!({"messages": [{"role": "system", "content": "x"}]})),
                "role",
            ),
            (request(json!({"tools": [{"name": "f"}]})), "input_schema"),
            (
                request(json!({"tool_choice": {"type": "sometimes"}})),
                "sometimes",
            ),
            (request(json!({"messages": "hi"})), "messages"),
        ];
        for (body, needle) in cases {
            let err = request_to_chat(&body).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(request_to_chat(&json!([1])).is_err());
    }

    #[test]
    fn tool_results_come_before_the_text_of_their_message() {
        let body = user_blocks(json!([
            {"type": "text", "text": "first"},
            {"type": "tool_result", "tool_use_id": "abcdefghi", "content": "42"},
        ]));
        let chat = request_to_chat(&body).unwrap();
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "tool", "tool_call_id": "abcdefghi", "content": "42"},
                {"role": "user", "content": "first"},
            ])
        );
        assert!(chat.get("stream_options").is_none());
        let chat = request_to_chat(&request(json!({"system": ""}))).unwrap();
        assert_eq!(chat["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn foreign_tool_ids_become_nine_alphanumerics_consistently() {
        let a = chat_tool_id("toolu_01A09q90qw90lq917835lq9");
        assert_eq!(a.len(), 9);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(a, chat_tool_id("toolu_01A09q90qw90lq917835lq9"));
        assert_ne!(a, chat_tool_id("toolu_01A09q90qw90lq917835lq8"));
        assert_eq!(chat_tool_id("D681PevKs"), "D681PevKs");
    }

    fn json_answer(chat: Value) -> Result<Value, String> {
        let mut t = answer_translator_with_ids(false, "claude", ids());
        assert_eq!(t.content_type(), "application/json");
        let body = chat.to_string();
        let (a, b) = body.as_bytes().split_at(body.len() / 2);
        assert!(t.feed(a)?.is_empty());
        assert!(t.feed(b)?.is_empty());
        Ok(serde_json::from_slice(&t.finish()?).unwrap())
    }

    fn with_call(arguments: Value) -> Value {
        json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
        ]}, "finish_reason": "tool_calls"}]})
    }

    #[test]
    fn bad_json_answers_are_errors() {
        let err = json_answer(with_call(json!("{\"a\": "))).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = json_answer(with_call(json!("[1]"))).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
        let err =
            json_answer(json!({"object": "error", "message": "model overloaded"})).unwrap_err();
        assert!(err.contains("model overloaded"), "{err}");
        let err = json_answer(json!({"choices": []})).unwrap_err();
        assert!(err.contains("no choices"), "{err}");
        let err = json_answer(
            json!({"choices": [{"message": {"content": "x"}, "finish_reason": "abort"}]}),
        )
        .unwrap_err();
        assert!(err.contains("abort"), "{err}");
        let mut t = answer_translator_with_ids(false, "claude", ids());
        t.feed(b"{\"choices\":").unwrap();
        assert!(t.finish().is_err());
        let ok = json_answer(with_call(json!("{\"a\": 1}"))).unwrap();
        assert_eq!(ok["content"][0]["input"], json!({"a": 1}));
        assert_eq!(ok["stop_reason"], "tool_use");
    }

    fn stream(body: &str) -> (Vec<u8>, Result<Vec<u8>, String>) {
        let mut t = answer_translator_with_ids(true, "claude", ids());
        assert_eq!(t.content_type(), "text/event-stream");
        let fed = t.feed(body.as_bytes()).unwrap();
        (fed, t.finish())
    }

    #[test]
    fn a_stream_without_its_end_is_truncated() {
        let (fed, end) =
            stream("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n");
        let fed = String::from_utf8(fed).unwrap();
        assert!(fed.starts_with("event: message_start\n"), "{fed}");
        assert!(fed.contains("\"text\":\"Hel\""), "{fed}");
        assert!(end.unwrap_err().contains("ended before"));
        let (fed, end) = stream("");
        assert!(fed.is_empty());
        assert!(end.is_err());
    }

    #[test]
    fn each_delta_is_sent_as_it_arrives() {
        let mut t = answer_translator_with_ids(true, "claude", ids());
        let first = t
            .feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n")
            .unwrap();
        assert!(String::from_utf8(first).unwrap().contains("text_delta"));
        let partial = t
            .feed(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"con")
            .unwrap();
        assert!(partial.is_empty());
        let rest = t.feed(b"tent\":\"b\"}}]}\n\n").unwrap();
        let rest = String::from_utf8(rest).unwrap();
        assert!(
            rest.contains("\"text\":\"b\"") && !rest.contains("message_start"),
            "{rest}"
        );
    }

    #[test]
    fn tool_arguments_before_the_name_wait_for_it() {
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let (fed, end) = stream(body);
        assert!(end.unwrap().is_empty());
        let fed = String::from_utf8(fed).unwrap();
        assert!(fed.contains("\"id\":\"toolu_2\""), "{fed}");
        let starts = fed.find("content_block_start").unwrap();
        let first = fed.find("{\\\"a\\\"").unwrap();
        let second = fed.find(":1}").unwrap();
        assert!(starts < first && first < second, "{fed}");
        assert!(fed.contains("\"stop_reason\":\"tool_use\""), "{fed}");

        let nameless = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: [DONE]\n\n",
        );
        let mut t = answer_translator_with_ids(true, "claude", ids());
        assert!(t.feed(nameless.as_bytes()).unwrap_err().contains("no name"));
    }

    #[test]
    fn streamed_tool_arguments_that_are_not_an_object_end_in_an_error_event() {
        for args in ["{\\\"a\\\": ", "[1]"] {
            let body = format!(
                concat!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"c\",\"function\":{{\"name\":\"f\",\"arguments\":\"{}\"}}}}]}}}}]}}\n\n",
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"late\"}},\"finish_reason\":\"tool_calls\"}}]}}\n\n",
                    "data: [DONE]\n\n",
                ),
                args
            );
            let (fed, end) = stream(&body);
            assert!(end.unwrap().is_empty());
            let fed = String::from_utf8(fed).unwrap();
            assert!(
                fed.contains("event: error\n") && fed.contains("not a JSON object"),
                "{fed}"
            );
            assert!(
                !fed.contains("message_stop") && !fed.contains("late"),
                "{fed}"
            );
        }
    }

    #[test]
    fn interleaved_tool_calls_are_refused() {
        let call = |i: u32, name: &str| {
            format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"{name}\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n")
        };
        let body = format!("{}{}{}", call(0, "f"), call(1, "g"), call(0, ""));
        let mut t = answer_translator_with_ids(true, "claude", ids());
        assert!(t.feed(body.as_bytes()).unwrap_err().contains("went on"));
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut t = answer_translator_with_ids(true, "claude", ids());
        let mut body = b"data: ".to_vec();
        body.resize(MAX_EVENT + 10, b'x');
        body.extend_from_slice(b"\n\n");
        assert!(t.feed(&body).unwrap_err().contains("larger"));
    }

    #[test]
    fn random_ids_differ() {
        let mut ids = random_ids();
        let (a, b) = (ids("msg_"), ids("msg_"));
        assert!(a.starts_with("msg_") && a.len() == 28 && a != b);
    }
}
