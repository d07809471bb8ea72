//! Turning a target's answer into the answer of the API the app called.
//!
//! A rerouted call is sent to an OpenAI-compatible target (chat
//! completions), but the app may have called another API (OpenAI Responses,
//! Anthropic Messages). Its answer is rewritten as it streams: each
//! translator is a sans-IO state machine fed the target's body bytes in
//! whatever pieces they arrive, returning the bytes to send to the client.

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
