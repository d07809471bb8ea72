//! Turning a target's answer into the answer of the API the app called.
//!
//! A rerouted call is sent to an OpenAI-compatible target (chat
//! completions), but the app may have called another API (OpenAI Responses,
//! Anthropic Messages). Its answer is rewritten as it streams: each
//! translator is a sans-IO state machine fed the target's body bytes in
//! whatever pieces they arrive, returning the bytes to send to the client.
//!
//! What every such translation shares lives here: [`ChatStream`] reads the
//! target's SSE (pieces of any size, a cap on each event, `[DONE]`, errors
//! mid-stream, an end without `[DONE]`) and hands each chunk to the API's
//! [`ChatEvents`]; [`ChatJson`] holds a JSON answer (with a cap) until it
//! ends and hands it to the API's [`ChatDocument`]. Each API's module keeps
//! only how its own events and documents are built.

use serde_json::Value;
use sse_parse::SseParser;

/// Rewrites a target's answer body for the caller's API.
pub trait AnswerTranslator: Send + Sync {
    /// The `Content-Type` of the rewritten answer.
    fn content_type(&self) -> &'static str;
    /// Bytes of the target's body in, bytes for the client out (possibly
    /// none yet). An error means the target's answer cannot be rewritten.
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String>;
    /// The target's body ended: whatever is still owed to the client. An
    /// error means the answer ended incomplete or malformed.
    fn finish(&mut self) -> Result<Vec<u8>, String>;
}

/// An error a target reported instead of (or in the middle of) an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetError {
    pub message: String,
    /// The target's `code` (or else its `type`), `null` if it gave neither.
    pub code: Value,
}

/// The error a chat answer or chunk carries, if it is one: `{"error": {...}}`,
/// `{"error": "..."}`, Mistral's `{"object": "error", "message": ...}`, or a
/// bare JSON string (some servers stream their error as one).
pub fn target_error(v: &Value) -> Option<TargetError> {
    if let Value::String(s) = v {
        return Some(error_text(s));
    }
    match v.get("error") {
        Some(Value::String(s)) => Some(error_text(s)),
        // Any other non-null `error` means the answer failed: fail closed.
        Some(e) if !e.is_null() => Some(error_fields(e)),
        _ if v.get("object").and_then(Value::as_str) == Some("error") => Some(error_fields(v)),
        _ => None,
    }
}

/// The first choice of a chat completion, and its message.
pub fn first_choice(chat: &Value) -> Result<(&Value, &Value), String> {
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or("the target's answer has no choices")?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or("the target's answer has no message")?;
    Ok((choice, message))
}

/// The `function` of a tool call in a chat message, and its name.
pub fn call_function(call: &Value) -> Result<(&Value, &str), String> {
    let function = call.get("function").ok_or("a tool call has no function")?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool call has no name")?;
    Ok((function, name))
}

fn error_text(s: &str) -> TargetError {
    TargetError {
        message: s.to_string(),
        code: Value::Null,
    }
}

fn error_fields(error: &Value) -> TargetError {
    let message = match error.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => error.to_string(),
    };
    let code = error
        .get("code")
        .filter(|c| !c.is_null())
        .or_else(|| error.get("type"))
        .cloned()
        .unwrap_or(Value::Null);
    TargetError { message, code }
}

/// What an API makes of a target's chat-completions stream: the events of
/// the caller's API, written to `out`. [`ChatStream`] parses the target's
/// SSE and calls these in order; once [`ChatEvents::is_done`] is true nothing
/// more is called.
pub trait ChatEvents: Send + Sync {
    /// One chunk of the target's stream (a `chat.completion.chunk`).
    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String>;
    /// The target reported an error mid-stream.
    fn on_error(&mut self, error: TargetError, out: &mut Vec<u8>);
    /// The target's `[DONE]`.
    fn on_done(&mut self, out: &mut Vec<u8>) -> Result<(), String>;
    /// Whether what came is a whole answer though `[DONE]` did not (a last
    /// chunk with a finish reason): at the end of the body it then ends as
    /// at `[DONE]`.
    fn is_whole(&self) -> bool;
    /// A terminal event was sent: whatever the target sends after is dropped.
    fn is_done(&self) -> bool;
}

/// The [`AnswerTranslator`] of a streamed chat answer: SSE in pieces of any
/// size, each event at most `max_event` bytes, handed to `E`.
pub struct ChatStream<E> {
    parser: SseParser,
    max_event: usize,
    events: E,
}

impl<E: ChatEvents> ChatStream<E> {
    pub fn new(events: E, max_event: usize) -> ChatStream<E> {
        ChatStream {
            parser: SseParser::new().max_buffer(max_event),
            max_event,
            events,
        }
    }

    fn drain(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.parser.overflows() > 0 {
            return Err(format!(
                "an event of the target's stream is larger than {} bytes",
                self.max_event
            ));
        }
        while let Some(event) = self.parser.next_event() {
            if self.events.is_done() {
                continue;
            }
            self.event(&event.event, &event.data, out)?;
        }
        Ok(())
    }

    fn event(&mut self, name: &str, data: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if data.trim() == "[DONE]" {
            return self.events.on_done(out);
        }
        let chunk: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(_) if name == "error" => Value::String(data.to_string()),
            Err(e) => return Err(format!("an event of the target's stream is not JSON: {e}")),
        };
        let error = match name {
            "error" => Some(target_error(&chunk).unwrap_or_else(|| error_fields(&chunk))),
            _ => target_error(&chunk),
        };
        if let Some(error) = error {
            self.events.on_error(error, out);
            return Ok(());
        }
        // Chat chunks are unnamed (`message`); other events carry no answer.
        if name != "message" {
            return Ok(());
        }
        self.events.on_chunk(&chunk, out)
    }
}

impl<E: ChatEvents> AnswerTranslator for ChatStream<E> {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if self.events.is_done() {
            return Ok(out);
        }
        self.parser.feed(chunk);
        self.drain(&mut out)?;
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        if self.events.is_done() {
            return Ok(out);
        }
        self.parser.finish();
        self.drain(&mut out)?;
        if self.events.is_done() {
            return Ok(out);
        }
        // Without `[DONE]` or a finish reason the target stopped mid-answer.
        if self.events.is_whole() {
            self.events.on_done(&mut out)?;
            return Ok(out);
        }
        Err("the target's stream ended before its answer was complete".into())
    }
}

/// What an API makes of a target's whole chat-completions JSON answer.
pub trait ChatDocument: Send + Sync {
    /// The caller's answer for the target's answer `chat`, whose bytes are
    /// `body`.
    fn document(&mut self, chat: &Value, body: &[u8]) -> Result<Vec<u8>, String>;
}

/// The [`AnswerTranslator`] of a JSON chat answer: the body is held (at
/// most `max_body` bytes) until it ends, then handed to `D`.
pub struct ChatJson<D> {
    body: Vec<u8>,
    max_body: usize,
    finished: bool,
    document: D,
}

impl<D: ChatDocument> ChatJson<D> {
    pub fn new(document: D, max_body: usize) -> ChatJson<D> {
        ChatJson {
            body: Vec::new(),
            max_body,
            finished: false,
            document,
        }
    }
}

impl<D: ChatDocument> AnswerTranslator for ChatJson<D> {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        if self.body.len() + chunk.len() > self.max_body {
            return Err(format!(
                "the target's answer is larger than {} bytes",
                self.max_body
            ));
        }
        self.body.extend_from_slice(chunk);
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<u8>, String> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(Vec::new());
        }
        let body = std::mem::take(&mut self.body);
        let chat: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the target's answer is not JSON: {e}"))?;
        self.document.document(&chat, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes one line per call, so a test reads what the driver did.
    #[derive(Default)]
    struct Log {
        done: bool,
        /// Whether the answer is whole without `[DONE]`.
        whole: bool,
    }

    impl ChatEvents for Log {
        fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) -> Result<(), String> {
            if chunk.get("fail").is_some() {
                return Err("refused".into());
            }
            out.extend_from_slice(format!("chunk {chunk}\n").as_bytes());
            Ok(())
        }

        fn on_error(&mut self, error: TargetError, out: &mut Vec<u8>) {
            let line = format!("error {} {}\n", error.message, error.code);
            out.extend_from_slice(line.as_bytes());
            self.done = true;
        }

        fn on_done(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            out.extend_from_slice(b"done\n");
            self.done = true;
            Ok(())
        }

        fn is_whole(&self) -> bool {
            self.whole
        }

        fn is_done(&self) -> bool {
            self.done
        }
    }

    fn run(pieces: &[&[u8]], whole: bool, max_event: usize) -> Result<String, String> {
        let mut stream = ChatStream::new(
            Log {
                whole,
                ..Log::default()
            },
            max_event,
        );
        assert_eq!(stream.content_type(), "text/event-stream");
        let mut out = Vec::new();
        for piece in pieces {
            out.extend(stream.feed(piece)?);
        }
        out.extend(stream.finish()?);
        Ok(String::from_utf8(out).unwrap())
    }

    const BODY: &str = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":\"é\"}\r\n\r\ndata: [DONE]\n\ndata: {\"late\":1}\n\n";

    #[test]
    fn a_stream_split_anywhere_gives_the_same_events() {
        let whole = run(&[BODY.as_bytes()], false, 1024).unwrap();
        assert_eq!(whole, "chunk {\"a\":1}\nchunk {\"b\":\"é\"}\ndone\n");
        let bytes = BODY.as_bytes();
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(run(&[a, b], false, 1024).unwrap(), whole, "split at {at}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles, false, 1024).unwrap(), whole);
    }

    #[test]
    fn an_event_over_the_cap_is_refused() {
        let event = format!("data: \"{}\"\n\n", "x".repeat(100));
        let err = run(&[event.as_bytes()], false, 64).unwrap_err();
        assert!(err.contains("larger than 64 bytes"), "{err}");
        let (a, b) = event.as_bytes().split_at(50);
        assert!(run(&[a, b], false, 64).is_err());
        assert!(run(&[event.as_bytes()], false, 1024).is_ok());
    }

    #[test]
    fn an_end_without_done_is_the_events_call() {
        let body = "data: {\"a\":1}\n\n";
        let err = run(&[body.as_bytes()], false, 1024).unwrap_err();
        assert!(err.contains("ended before"), "{err}");
        assert_eq!(
            run(&[body.as_bytes()], true, 1024).unwrap(),
            "chunk {\"a\":1}\ndone\n"
        );
        // An event cut before its blank line is dropped, as SSE says.
        assert_eq!(run(&[b"data: {\"a\":1}"], true, 1024).unwrap(), "done\n");
        assert!(run(&[b""], false, 1024).is_err());
    }

    #[test]
    fn target_errors_end_the_stream() {
        let cases: &[(&str, &str)] = &[
            (
                "data: {\"error\":{\"message\":\"oom\",\"code\":500}}\n\n",
                "error oom 500\n",
            ),
            (
                "data: {\"object\":\"error\",\"message\":\"busy\",\"type\":\"unavailable\"}\n\n",
                "error busy \"unavailable\"\n",
            ),
            ("data: {\"error\":\"bad\"}\n\n", "error bad null\n"),
            ("data: \"bad\"\n\n", "error bad null\n"),
            ("event: error\ndata: not json\n\n", "error not json null\n"),
            (
                "event: error\ndata: {\"message\":\"m\"}\n\n",
                "error m null\n",
            ),
        ];
        for (body, expected) in cases {
            let then = format!("{body}data: {{\"a\":1}}\n\ndata: [DONE]\n\n");
            assert_eq!(&run(&[then.as_bytes()], false, 1024).unwrap(), expected);
        }
    }

    #[test]
    fn malformed_or_foreign_events() {
        let err = run(&[b"data: {not json\n\n"], true, 1024).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = run(&[b"data: {\"fail\":1}\n\n"], true, 1024).unwrap_err();
        assert_eq!(err, "refused");
        let named = "event: ping\ndata: {\"a\":1}\n\ndata: [DONE]\n\n";
        assert_eq!(run(&[named.as_bytes()], false, 1024).unwrap(), "done\n");
    }

    #[test]
    fn error_payloads() {
        let cases = [
            (
                json!({"error": {"message": "m", "type": "t"}}),
                Some(("m", json!("t"))),
            ),
            (
                json!({"error": {"message": "m", "code": 7, "type": "t"}}),
                Some(("m", json!(7))),
            ),
            (json!({"error": "m"}), Some(("m", Value::Null))),
            (json!({"error": 5}), Some(("5", Value::Null))),
            (
                json!({"object": "error", "message": "m", "code": "1500"}),
                Some(("m", json!("1500"))),
            ),
            (
                json!({"object": "error", "message": {"detail": []}}),
                Some(("{\"detail\":[]}", Value::Null)),
            ),
            (json!("m"), Some(("m", Value::Null))),
            (json!({"error": null, "choices": []}), None),
            (json!({"object": "chat.completion.chunk"}), None),
        ];
        for (v, want) in cases {
            let got = target_error(&v);
            let want = want.map(|(message, code)| TargetError {
                message: message.to_string(),
                code,
            });
            assert_eq!(got, want, "{v}");
        }
    }

    struct Echo;

    impl ChatDocument for Echo {
        fn document(&mut self, chat: &Value, body: &[u8]) -> Result<Vec<u8>, String> {
            assert_eq!(serde_json::from_slice::<Value>(body).unwrap(), *chat);
            Ok(format!("doc {chat}").into_bytes())
        }
    }

    #[test]
    fn a_json_answer_is_held_to_its_end_within_its_cap() {
        let body = json!({"choices": [{"message": {"content": "hi"}}]}).to_string();
        let mut json = ChatJson::new(Echo, body.len());
        assert_eq!(json.content_type(), "application/json");
        for piece in body.as_bytes().chunks(3) {
            assert!(json.feed(piece).unwrap().is_empty());
        }
        assert_eq!(json.finish().unwrap(), format!("doc {body}").into_bytes());
        assert!(json.finish().unwrap().is_empty());

        let mut json = ChatJson::new(Echo, body.len() - 1);
        let err = json.feed(body.as_bytes()).unwrap_err();
        assert!(err.contains("larger than"), "{err}");

        let mut json = ChatJson::new(Echo, 64);
        json.feed(b"{\"choices\":").unwrap();
        assert!(json.finish().unwrap_err().contains("not JSON"));
    }
}
