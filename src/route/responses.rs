//! OpenAI's Responses API (`POST /v1/responses`) served by a chat
//! completions target: the request is rewritten as a chat request, and the
//! target's chat answer (JSON or SSE) is rewritten as a `response` object or
//! as the `response.*` event stream the official SDKs read.
//!
//! Only what can move to another provider is translated. Server-side state
//! (`previous_response_id`, `conversation`, `background`, stored `prompt`
//! templates, `item_reference` inputs) and OpenAI's built-in tools exist
//! only at OpenAI: a request that needs them is refused with a message that
//! names the feature, never rerouted without it.
//!
//! Request fields, decided one by one:
//! - translated: `model` (kept, the caller replaces it), `input`,
//!   `instructions` (leading system message), `tools` (function tools),
//!   `tool_choice`, `parallel_tool_calls`, `text.format`
//!   (`response_format`), `text.verbosity` (`verbosity`),
//!   `max_output_tokens` (`max_tokens`), `temperature`, `top_p`, `stream`
//!   (with `stream_options.include_usage` so usage arrives), `user`,
//!   `safety_identifier`, `prompt_cache_key`, `reasoning.effort`
//!   (`reasoning_effort` on vLLM's low/medium/high scale: `minimal` is
//!   `low`, `xhigh` is `high`, `none` is left out; the Mistral table drops
//!   it);
//! - dropped, as they only steer OpenAI's own service and carry no meaning
//!   for the answer: `store` (nothing is stored, at OpenAI or the target),
//!   `metadata` (only read with stored completions), `service_tier`,
//!   `truncation` (chat targets fail on overflow, like `disabled`),
//!   `include` (extra output data such as encrypted reasoning that a chat
//!   target cannot produce), `reasoning.summary`, `stream_options`
//!   (obfuscation padding), `top_logprobs` (logprobs are not translated
//!   back), `max_tool_calls` (limits built-in tool calls, which are
//!   refused anyway), `prompt_cache_retention`;
//! - unknown fields are dropped too: the SDK sends only what the app set,
//!   and a field this table does not know cannot be translated either way;
//!   what would change the answer's meaning is listed above and refused.
//!
//! Answer: reasoning the target returns (`reasoning_content`, Mistral's
//! `thinking` chunks) is not passed on; text, refusals (JSON answers), tool
//! calls, finish reasons and usage are.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::answer::{
    call_function, first_choice, AnswerTranslator, ChatDocument, ChatEvents, ChatJson, ChatStream,
    TargetError,
};
use serde_json::{json, Map, Value};

/// Largest JSON answer, and largest SSE event, a translator holds.
const MAX_BODY: usize = 32 << 20;
const MAX_EVENT: usize = 8 << 20;

/// A Responses request as a chat completions request.
pub fn request_to_chat(body: &Value) -> Result<Value, String> {
    let Value::Object(fields) = body else {
        return Err("the body is not a JSON object".into());
    };
    refuse_state(fields)?;
    let mut out = Map::new();
    if let Some(model) = fields.get("model") {
        out.insert("model".into(), model.clone());
    }
    let mut messages = Vec::new();
    match fields.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err("instructions must be a string".into()),
    }
    match fields.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &mut messages).map_err(|e| format!("input[{i}]: {e}"))?;
            }
        }
        Some(_) => return Err("input must be a string or a list of items".into()),
    }
    if !messages.iter().any(|m| m["role"] != "system") {
        return Err("the request has no input".into());
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = fields.get("tools").filter(|v| !v.is_null()) {
        let Value::Array(tools) = tools else {
            return Err("tools must be a list".into());
        };
        let mut chat_tools = Vec::new();
        for tool in tools {
            chat_tools.push(function_tool(tool)?);
        }
        if !chat_tools.is_empty() {
            out.insert("tools".into(), Value::Array(chat_tools));
        }
    }
    if let Some(choice) = fields.get("tool_choice").filter(|v| !v.is_null()) {
        out.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(text) = fields.get("text").filter(|v| !v.is_null()) {
        if let Some(format) = text.get("format").filter(|v| !v.is_null()) {
            if let Some(rf) = response_format(format)? {
                out.insert("response_format".into(), rf);
            }
        }
        if let Some(v) = text.get("verbosity").filter(|v| !v.is_null()) {
            out.insert("verbosity".into(), v.clone());
        }
    }
    if let Some(effort) = fields
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
        .and_then(reasoning_effort)
    {
        out.insert("reasoning_effort".into(), Value::String(effort.into()));
    }
    let same = [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "prompt_cache_key",
    ];
    for key in same {
        if let Some(v) = fields.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = fields.get("max_output_tokens").filter(|v| !v.is_null()) {
        out.insert("max_tokens".into(), v.clone());
    }
    match fields.get("stream") {
        Some(Value::Bool(true)) => {
            out.insert("stream".into(), Value::Bool(true));
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(_) => return Err("stream must be a boolean".into()),
    }
    Ok(Value::Object(out))
}

/// OpenAI's reasoning efforts on the `low`/`medium`/`high` scale that
/// vLLM accepts; `none` asks for no reasoning, which is the chat default.
fn reasoning_effort(effort: &str) -> Option<&'static str> {
    match effort {
        "minimal" | "low" => Some("low"),
        "medium" => Some("medium"),
        "high" | "xhigh" => Some("high"),
        _ => None,
    }
}

/// Features kept on OpenAI's servers: a reroute cannot take them along.
fn refuse_state(fields: &Map<String, Value>) -> Result<(), String> {
    let set = |k: &str| fields.get(k).is_some_and(|v| !v.is_null());
    if set("previous_response_id") {
        return Err(
            "previous_response_id refers to a response stored at OpenAI; \
                    a rerouted call must carry its whole conversation in input"
                .into(),
        );
    }
    if set("conversation") {
        return Err("conversation refers to a conversation stored at OpenAI; \
                    a rerouted call must carry its whole conversation in input"
            .into());
    }
    if fields
        .get("background")
        .is_some_and(|v| v != &Value::Bool(false) && !v.is_null())
    {
        return Err(
            "background responses are run and stored by OpenAI and cannot be rerouted".into(),
        );
    }
    if set("prompt") {
        return Err(
            "prompt refers to a prompt template stored at OpenAI and cannot be rerouted".into(),
        );
    }
    Ok(())
}

fn input_item(item: &Value, messages: &mut Vec<Value>) -> Result<(), String> {
    let Value::Object(fields) = item else {
        return Err("an input item is not an object".into());
    };
    let kind = match fields.get("type") {
        None => "message",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("type must be a string".into()),
    };
    match kind {
        "message" => {
            let role = fields
                .get("role")
                .and_then(Value::as_str)
                .ok_or("a message has no role")?;
            let content = fields.get("content").ok_or("a message has no content")?;
            let message = match role {
                "user" => json!({"role": "user", "content": user_content(content)?}),
                // Chat templates of open models know `system`; `developer`
                // is OpenAI's newer name for the same instructions.
                "system" | "developer" => {
                    json!({"role": "system", "content": plain_text(content, role)?})
                }
                "assistant" => {
                    json!({"role": "assistant", "content": plain_text(content, role)?})
                }
                other => return Err(format!("message role {other:?} is not supported")),
            };
            messages.push(message);
        }
        "function_call" => {
            let call_id = str_field(fields, "call_id")?;
            let name = str_field(fields, "name")?;
            let arguments = str_field(fields, "arguments")?;
            let call = json!({
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}
            });
            // Calls that follow an assistant turn belong to it: chat holds
            // the text and the calls of one turn in one message.
            match messages.last_mut() {
                Some(Value::Object(last))
                    if last.get("role").and_then(Value::as_str) == Some("assistant") =>
                {
                    match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => {
                            last.insert("tool_calls".into(), json!([call]));
                        }
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let call_id = str_field(fields, "call_id")?;
            let output = match fields.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(parts @ Value::Array(_)) => plain_text(parts, "function_call_output")?,
                _ => return Err("function_call_output has no output".into()),
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
        }
        // The model's hidden reasoning from an earlier turn: only the model
        // that wrote it can read it, and the answer stands without it.
        "reasoning" => {}
        "item_reference" => {
            return Err("item_reference refers to an item stored at OpenAI; \
                        a rerouted call must carry the item itself"
                .into())
        }
        other => {
            return Err(format!(
                "{other} items belong to OpenAI's built-in tools and cannot be rerouted"
            ))
        }
    }
    Ok(())
}

fn str_field(fields: &Map<String, Value>, key: &str) -> Result<String, String> {
    fields
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{key} is missing or not a string"))
}

/// Text parts (`input_text`, `output_text`, `refusal`) as one string.
fn plain_text(content: &Value, whose: &str) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                let text = match kind {
                    "input_text" | "output_text" | "text" => part.get("text"),
                    "refusal" => part.get("refusal"),
                    other => {
                        return Err(format!(
                            "{other:?} content in a {whose} message cannot be rerouted"
                        ))
                    }
                };
                texts.push(
                    text.and_then(Value::as_str)
                        .ok_or_else(|| format!("a {kind} part has no text"))?,
                );
            }
            Ok(texts.join("\n"))
        }
        _ => Err("content must be a string or a list of parts".into()),
    }
}

fn user_content(content: &Value) -> Result<Value, String> {
    let Value::Array(parts) = content else {
        return plain_text(content, "user").map(Value::String);
    };
    let mut out = Vec::new();
    for part in parts {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "input_text" | "output_text" => {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or("an input_text part has no text")?;
                out.push(json!({"type": "text", "text": text}));
            }
            "input_image" => {
                if part.get("file_id").is_some_and(|v| !v.is_null()) {
                    return Err(
                        "input_image with a file_id refers to a file stored at OpenAI; \
                                send the image as image_url"
                            .into(),
                    );
                }
                let url = part
                    .get("image_url")
                    .and_then(Value::as_str)
                    .ok_or("an input_image part has no image_url")?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                    image["detail"] = detail.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            other => return Err(format!("{other:?} content cannot be rerouted")),
        }
    }
    if let [only] = out.as_slice() {
        if only["type"] == "text" {
            return Ok(only["text"].clone());
        }
    }
    Ok(Value::Array(out))
}

fn function_tool(tool: &Value) -> Result<Value, String> {
    let kind = tool
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a tool has no type")?;
    // Every other tool type (web_search, file_search, code_interpreter,
    // computer_use, mcp, ...) runs inside OpenAI.
    if kind != "function" {
        return Err(format!(
            "the {kind} tool is built into OpenAI and cannot be rerouted"
        ));
    }
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a function tool has no name")?;
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.to_string()));
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
            function.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

fn tool_choice(choice: &Value) -> Result<Value, String> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("tool_choice names no function")?;
                Ok(json!({"type": "function", "function": {"name": name}}))
            }
            Some(other) => Err(format!("tool_choice {other:?} cannot be rerouted")),
            None => Err("tool_choice has no type".into()),
        },
        other => Err(format!("tool_choice {other} cannot be rerouted")),
    }
}

/// `text.format` as `response_format`; plain text is the default and
/// needs none.
fn response_format(format: &Value) -> Result<Option<Value>, String> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err("text.format json_schema has no schema".into());
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        Some(other) => Err(format!("text.format {other:?} cannot be rerouted")),
        None => Err("text.format has no type".into()),
    }
}

/// Generated ids and the creation time of one answer; tests fix them.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// Unique part of every id (`resp_<token>`, `msg_<token>`, ...).
    pub token: String,
    /// Unix seconds.
    pub created_at: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            token: format!("{:032x}", rand::random::<u128>()),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// The translator of a chat completions answer into a Responses answer.
pub fn answer_translator(stream: bool, model: &str) -> Box<dyn AnswerTranslator> {
    answer_translator_at(stream, model, Stamp::now())
}

/// [`answer_translator`] with fixed ids and time.
pub fn answer_translator_at(stream: bool, model: &str, stamp: Stamp) -> Box<dyn AnswerTranslator> {
    let base = Base {
        model: model.to_string(),
        stamp,
    };
    if stream {
        Box::new(ChatStream::new(StreamAnswer::new(base), MAX_EVENT))
    } else {
        Box::new(ChatJson::new(JsonAnswer { base }, MAX_BODY))
    }
}

struct Base {
    model: String,
    stamp: Stamp,
}

impl Base {
    /// A `response` object. Fields that echo the request (`instructions`,
    /// `tools`, `temperature`, ...) carry their defaults: the translator
    /// sees only the answer, and SDKs read the answer's own fields.
    fn response(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": format!("resp_{}", self.stamp.token),
            "object": "response",
            "created_at": self.stamp.created_at,
            "status": status,
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "max_output_tokens": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": null,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": null,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        })
    }

    fn message_id(&self) -> String {
        format!("msg_{}", self.stamp.token)
    }

    fn call_id(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.stamp.token)
    }
}

/// A response's status and `incomplete_details.reason` from a chat
/// `finish_reason`.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

fn with_incomplete_reason(mut response: Value, reason: Option<&str>) -> Value {
    if let Some(reason) = reason {
        response["incomplete_details"] = json!({"reason": reason});
    }
    response
}

/// Chat usage as Responses usage (`null` when the target sent none).
fn usage(chat: Option<&Value>) -> Value {
    let Some(u) = chat.filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input = n(u.get("prompt_tokens"));
    let output = n(u.get("completion_tokens"));
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n(u.get("prompt_tokens_details").and_then(|d| d.get("cached_tokens")))
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": n(u.get("completion_tokens_details").and_then(|d| d.get("reasoning_tokens")))
        },
        "total_tokens": total,
    })
}

/// The answer text of a chat `content`: a string, or (Mistral) a list of
/// chunks whose `text` chunks are the answer and `thinking` chunks are not.
fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()),
        Some(_) => Err("the target's content is neither text nor a list of chunks".into()),
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn call_item(id: &str, status: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({
        "type": "function_call", "id": id, "status": status,
        "call_id": call_id, "name": name, "arguments": arguments
    })
}

struct JsonAnswer {
    base: Base,
}

impl ChatDocument for JsonAnswer {
    fn document(&mut self, chat: &Value, body: &[u8]) -> Result<Vec<u8>, String> {
        // OpenAI's error shape is the same for both APIs.
        if chat.get("error").is_some_and(Value::is_object) {
            return Ok(body.to_vec());
        }
        let response = self.translate(chat)?;
        serde_json::to_vec(&response).map_err(|e| e.to_string())
    }
}

impl JsonAnswer {
    fn translate(&self, chat: &Value) -> Result<Value, String> {
        let (choice, message) = first_choice(chat)?;
        let finish = choice.get("finish_reason").and_then(Value::as_str);
        let (status, reason) = status_of(finish);
        let item_status = if status == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        let text = content_text(message.get("content"))?;
        let refusal = message.get("refusal").and_then(Value::as_str);
        let calls = match message.get("tool_calls") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(c)) => c.as_slice(),
            Some(_) => return Err("the target's tool_calls is not a list".into()),
        };
        let mut output = Vec::new();
        let mut content = Vec::new();
        if !text.is_empty() || (calls.is_empty() && refusal.is_none()) {
            content.push(text_part(&text));
        }
        if let Some(r) = refusal {
            content.push(json!({"type": "refusal", "refusal": r}));
        }
        if !content.is_empty() {
            output.push(message_item(&self.base.message_id(), item_status, content));
        }
        for (n, call) in calls.iter().enumerate() {
            let (function, name) = call_function(call)?;
            let arguments = match function.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                // Some servers send the arguments as an object.
                Some(v @ Value::Object(_)) => v.to_string(),
                _ => return Err("a tool call has no arguments".into()),
            };
            let call_id = call
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("call_{}_{n}", self.base.stamp.token));
            output.push(call_item(
                &self.base.call_id(n),
                "completed",
                &call_id,
                name,
                &arguments,
            ));
        }
        let response = self.base.response(status, output, usage(chat.get("usage")));
        Ok(with_incomplete_reason(response, reason))
    }
}

/// One output item of a streamed response. `status` is `None` while the
/// item is open (its `.done` events not sent yet).
enum Item {
    Message {
        id: String,
        text: String,
        status: Option<&'static str>,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: Option<&'static str>,
    },
}

impl Item {
    fn json(&self) -> Value {
        match self {
            Item::Message { id, text, status } => {
                message_item(id, status.unwrap_or("incomplete"), vec![text_part(text)])
            }
            Item::Call {
                id,
                call_id,
                name,
                arguments,
                status,
            } => call_item(id, status.unwrap_or("incomplete"), call_id, name, arguments),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Item::Message { status, .. } | Item::Call { status, .. } => status.is_none(),
        }
    }
}

struct StreamAnswer {
    base: Base,
    seq: u64,
    started: bool,
    items: Vec<Item>,
    /// Chat tool call index → output index.
    calls: BTreeMap<u64, usize>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// A terminal event (`response.completed`, `.incomplete`, `.failed`)
    /// was sent; anything after it is ignored.
    done: bool,
}

impl StreamAnswer {
    fn new(base: Base) -> StreamAnswer {
        StreamAnswer {
            base,
            seq: 0,
            started: false,
            items: Vec::new(),
            calls: BTreeMap::new(),
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = Value::String(kind.to_string());
        data["sequence_number"] = Value::from(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.started, true) {
            return;
        }
        let snapshot = self.base.response("in_progress", Vec::new(), Value::Null);
        self.emit(
            out,
            "response.created",
            json!({"response": snapshot.clone()}),
        );
        self.emit(out, "response.in_progress", json!({"response": snapshot}));
    }

    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.start(out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        if self.finish_reason.is_some() {
            // After the finish reason only usage is awaited.
            return Ok(());
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        // Only one choice is asked for; others would belong to `n > 1`.
        let Some(choice) = choices
            .into_iter()
            .flatten()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        else {
            return Ok(());
        };
        if let Some(delta) = choice.get("delta") {
            let text = content_text(delta.get("content"))?;
            if !text.is_empty() {
                self.text_delta(out, &text);
            }
            match delta.get("tool_calls") {
                None | Some(Value::Null) => {}
                Some(Value::Array(calls)) => {
                    for call in calls {
                        self.call_delta(out, call)?;
                    }
                }
                Some(_) => return Err("the target's tool_calls is not a list".into()),
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
            self.close_items(out);
        }
        Ok(())
    }

    fn text_delta(&mut self, out: &mut Vec<u8>, delta: &str) {
        let open = self
            .items
            .iter()
            .rposition(|i| matches!(i, Item::Message { .. }) && i.is_open());
        let index = match open {
            Some(i) => i,
            None => self.open_message(out),
        };
        let Some(Item::Message { id, text, .. }) = self.items.get_mut(index) else {
            return;
        };
        text.push_str(delta);
        let id = id.clone();
        self.emit(
            out,
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    /// Opens a message item after closing the open one: like OpenAI, one
    /// item at a time.
    fn open_message(&mut self, out: &mut Vec<u8>) -> usize {
        self.close_open(out, "completed");
        let index = self.items.len();
        let id = match index {
            0 => self.base.message_id(),
            n => format!("{}_{n}", self.base.message_id()),
        };
        self.items.push(Item::Message {
            id: id.clone(),
            text: String::new(),
            status: None,
        });
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": message_item(&id, "in_progress", Vec::new())}),
        );
        self.emit(
            out,
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part("")}),
        );
        index
    }

    fn call_delta(&mut self, out: &mut Vec<u8>, call: &Value) -> Result<(), String> {
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let delta = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v @ Value::Object(_)) => v.to_string(),
            Some(_) => return Err("a tool call's arguments are not text".into()),
        };
        let index = match self.calls.get(&chat_index) {
            Some(i) => *i,
            None => {
                let name = function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .ok_or("a tool call starts without a name")?
                    .to_string();
                self.close_open(out, "completed");
                let n = self.calls.len();
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("call_{}_{n}", self.base.stamp.token));
                let id = self.base.call_id(n);
                let index = self.items.len();
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": call_item(&id, "in_progress", &call_id, &name, "")}),
                );
                self.items.push(Item::Call {
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                    status: None,
                });
                self.calls.insert(chat_index, index);
                index
            }
        };
        if delta.is_empty() {
            return Ok(());
        }
        let Some(Item::Call {
            id,
            arguments,
            status,
            ..
        }) = self.items.get_mut(index)
        else {
            return Ok(());
        };
        // Targets stream one call after the other; a call resumed after the
        // next one started cannot be told to the client in order.
        if status.is_some() {
            return Err("the target's stream resumed a tool call it had finished".into());
        }
        arguments.push_str(&delta);
        let id = id.clone();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({"item_id": id, "output_index": index, "delta": delta}),
        );
        Ok(())
    }

    /// Sends the `.done` events of the open item, if any.
    fn close_open(&mut self, out: &mut Vec<u8>, status: &'static str) {
        let Some(index) = self.items.iter().position(Item::is_open) else {
            return;
        };
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        match item {
            Item::Message { status: s, .. } | Item::Call { status: s, .. } => *s = Some(status),
        }
        let done = item.json();
        match item {
            Item::Message { id, text, .. } => {
                let (id, text) = (id.clone(), text.clone());
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": text_part(&text)}),
                );
            }
            Item::Call {
                id,
                name,
                arguments,
                ..
            } => {
                let data = json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments});
                self.emit(out, "response.function_call_arguments.done", data);
            }
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done}),
        );
    }

    /// The answer ended: the last item is closed, with the status the
    /// finish reason gives it.
    fn close_items(&mut self, out: &mut Vec<u8>) {
        if self.items.is_empty() {
            self.open_message(out);
        }
        let (status, _) = status_of(self.finish_reason.as_deref());
        let status = if status == "completed" {
            "completed"
        } else {
            "incomplete"
        };
        self.close_open(out, status);
    }

    fn output(&self) -> Vec<Value> {
        self.items.iter().map(Item::json).collect()
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.close_items(out);
        let (status, reason) = status_of(self.finish_reason.as_deref());
        let response = self
            .base
            .response(status, self.output(), usage(self.usage.as_ref()));
        let response = with_incomplete_reason(response, reason);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": response}));
        self.done = true;
    }

    /// The target reported an error mid-stream: OpenAI's `error` event,
    /// then `response.failed` with what was answered so far.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str, code: Value) {
        let code = match code {
            Value::String(s) => s,
            Value::Null => "server_error".to_string(),
            other => other.to_string(),
        };
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        let mut response = self
            .base
            .response("failed", self.output(), usage(self.usage.as_ref()));
        response["error"] = json!({"code": code, "message": message});
        self.emit(out, "response.failed", json!({"response": response}));
        self.done = true;
    }
}

impl ChatEvents for StreamAnswer {
    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String> {
        self.chunk(chunk, out)
    }

    fn on_error(&mut self, error: TargetError, out: &mut Vec<u8>) {
        self.start(out);
        self.fail(out, &error.message, error.code);
    }

    fn on_done(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        self.start(out);
        self.complete(out);
        Ok(())
    }

    fn is_whole(&self) -> bool {
        self.finish_reason.is_some()
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            token: "t".into(),
            created_at: 1,
        }
    }

    fn stream(input: &[u8]) -> (Vec<u8>, Result<Vec<u8>, String>) {
        let mut t = answer_translator_at(true, "m", stamp());
        let fed = t.feed(input).unwrap_or_default();
        (fed, t.finish())
    }

    /// The `type`s of the events of a translated stream.
    fn types(out: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect()
    }

    fn last_data(out: &[u8]) -> Value {
        let text = String::from_utf8_lossy(out);
        let line = text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        serde_json::from_str(line).unwrap()
    }

    const TEXT: &str = r#"data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}

"#;

    #[test]
    fn a_stream_cut_before_its_end_is_an_error() {
        let (fed, end) = stream(TEXT.as_bytes());
        assert_eq!(
            types(&fed),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta"
            ]
        );
        assert!(end.unwrap_err().contains("ended before"));
        // Cut inside the first event: nothing was answered, still an error.
        let (fed, end) = stream(&TEXT.as_bytes()[..20]);
        assert!(fed.is_empty());
        assert!(end.is_err());
        assert!(stream(b"").1.is_err());
    }

    #[test]
    fn a_finish_reason_without_done_ends_the_stream() {
        let input = format!(
            "{TEXT}data: {}\n\n",
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#
        );
        let (fed, end) = stream(input.as_bytes());
        assert_eq!(types(&fed).last().unwrap(), "response.output_item.done");
        let end = end.unwrap();
        assert_eq!(types(&end), ["response.completed"]);
        let done = last_data(&end);
        assert_eq!(done["response"]["usage"]["total_tokens"], 4);
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(done["sequence_number"], 8);
    }

    #[test]
    fn an_empty_answer_is_an_empty_message() {
        let input = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let (fed, end) = stream(input.as_bytes());
        assert_eq!(end.unwrap(), Vec::<u8>::new());
        let done = last_data(&fed);
        assert_eq!(done["type"], "response.completed");
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "");
        assert_eq!(done["response"]["usage"], Value::Null);
    }

    #[test]
    fn target_errors_fail_the_response() {
        for input in [
            "event: error\ndata: {\"message\":\"overloaded\",\"code\":\"busy\"}\n\n",
            "event: error\ndata: overloaded\n\n",
            "data: {\"object\":\"error\",\"message\":\"overloaded\",\"type\":\"busy\"}\n\n",
        ] {
            let (fed, end) = stream(input.as_bytes());
            assert_eq!(
                types(&fed),
                [
                    "response.created",
                    "response.in_progress",
                    "error",
                    "response.failed"
                ],
                "{input}"
            );
            let failed = last_data(&fed);
            assert_eq!(failed["response"]["status"], "failed");
            assert_eq!(failed["response"]["error"]["message"], "overloaded");
            // The failure ended the answer; nothing is owed.
            assert_eq!(end.unwrap(), Vec::<u8>::new());
        }
    }

    #[test]
    fn malformed_streams_are_errors() {
        let mut t = answer_translator_at(true, "m", stamp());
        assert!(t.feed(b"data: {not json\n\n").is_err());
        let mut t = answer_translator_at(true, "m", stamp());
        let huge = format!("data: \"{}\"\n\n", "x".repeat(MAX_EVENT + 1));
        assert!(t.feed(huge.as_bytes()).unwrap_err().contains("larger"));
        let mut t = answer_translator_at(true, "m", stamp());
        let call = |index: u32, name: &str, args: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": index, "id": format!("c{index}"), "function": {"name": name, "arguments": args}}
                ]}}]})
            )
        };
        t.feed(call(0, "a", "{").as_bytes()).unwrap();
        t.feed(call(1, "b", "{}").as_bytes()).unwrap();
        let resumed = t.feed(call(0, "a", "}").as_bytes()).unwrap_err();
        assert!(resumed.contains("resumed"), "{resumed}");
        let mut t = answer_translator_at(true, "m", stamp());
        let nameless = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
        assert!(t.feed(nameless.as_bytes()).is_err());
    }

    #[test]
    fn text_after_a_tool_call_opens_a_new_message() {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let input = [
            chunk(json!({"content": "a"}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}),
                Value::Null,
            ),
            chunk(json!({"content": "b"}), json!("stop")),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        let (fed, end) = stream(input.as_bytes());
        assert!(end.is_ok());
        let done = last_data(&fed);
        let ids: Vec<&str> = done["response"]["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["msg_t", "fc_t_0", "msg_t_2"]);
    }

    #[test]
    fn json_answers() {
        let translate = |body: &[u8]| {
            let mut t = answer_translator_at(false, "m", stamp());
            t.feed(body)?;
            t.finish()
        };
        assert!(translate(b"{\"choices\":").is_err());
        assert!(translate(b"{\"choices\":[]}").is_err());
        let error = br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#;
        assert_eq!(translate(error).unwrap(), error.to_vec());
        let filtered = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"content_filter"}]}"#;
        let out: Value = serde_json::from_slice(&translate(filtered).unwrap()).unwrap();
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"]["reason"], "content_filter");
        let mut t = answer_translator_at(false, "m", stamp());
        assert!(t.feed(&vec![b' '; MAX_BODY + 1]).is_err());
    }

    /// Damaged target answers and requests are errors or answers, never
    /// panics: bytes of real-looking inputs flipped, cut and split at
    /// random (a fixed seed, so a failure replays).
    #[test]
    fn damaged_input_never_panics() {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"tool_calls\":",
            "[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},",
            "\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],",
            "\"usage\":{\"prompt_tokens\":1}}\n\nevent: error\ndata: {\"error\":\"x\"}\n\ndata: [DONE]\n\n"
        )
        .as_bytes();
        let json = br#"{"choices":[{"index":0,"message":{"content":[{"type":"text","text":"a"}],"tool_calls":[{"id":"c","function":{"name":"f","arguments":{}}}],"refusal":"r"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#;
        let request = br#"{"model":"m","instructions":"i","input":[{"role":"user","content":[{"type":"input_text","text":"t"},{"type":"input_image","image_url":"u"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_text","text":"o"}]}],"tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"f"},"text":{"format":{"type":"json_schema","schema":{}}},"reasoning":{"effort":"high"},"stream":true}"#;
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            for (input, kind) in [(stream, 0), (&json[..], 1), (&request[..], 2)] {
                let mut bytes = input.to_vec();
                for _ in 0..(next() % 4) {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] = b"{}[]\":,0a\n "[(next() % 11) as usize];
                }
                bytes.truncate(bytes.len() - (next() as usize % 8).min(bytes.len()));
                if kind == 2 {
                    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                        let _ = request_to_chat(&v);
                    }
                    continue;
                }
                let mut t = answer_translator_at(kind == 0, "m", stamp());
                let split = (next() as usize) % (bytes.len() + 1);
                let _ = t
                    .feed(&bytes[..split])
                    .and_then(|_| t.feed(&bytes[split..]));
                let _ = t.finish();
            }
        }
    }

    #[test]
    fn ids_are_fresh_per_answer() {
        assert_ne!(Stamp::now().token, Stamp::now().token);
    }

    #[test]
    fn requests() {
        let out = request_to_chat(&json!({
            "model": "m",
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "ok"}
            ],
            "background": false, "store": false, "some_future_field": 1
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "messages": [
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "ok"}
            ]})
        );
        let err = request_to_chat(
            &json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        );
        assert!(err.unwrap_err().starts_with("input[0]: \"input_audio\""));
    }
}
