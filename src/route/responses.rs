//! Placeholder until the translation lands (same signatures).

use serde_json::Value;

use super::answer::AnswerTranslator;

pub fn request_to_chat(_body: &Value) -> Result<Value, String> {
    Err("translating this API is not built yet".into())
}

struct NotBuilt;

impl AnswerTranslator for NotBuilt {
    fn content_type(&self) -> &'static str {
        "application/json"
    }
    fn feed(&mut self, _chunk: &[u8]) -> Result<Vec<u8>, String> {
        Err("not built yet".into())
    }
    fn finish(&mut self) -> Result<Vec<u8>, String> {
        Err("not built yet".into())
    }
}

pub fn answer_translator(_stream: bool, _model: &str) -> Box<dyn AnswerTranslator> {
    Box::new(NotBuilt)
}
