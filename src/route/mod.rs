//! Reroutes: the targets a decision may send a call to, and the pure
//! rewrite of an OpenAI call into a call to that target.

pub mod answer;
pub mod key;
pub mod responses;
pub mod translate;
pub mod url;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::config::TargetConfig;
use crate::entity::{Kind, Registry};
use key::KeyFile;
pub use translate::Dialect;
pub use url::TargetUrl;

/// A configured target, ready to serve reroutes.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub url: TargetUrl,
    pub dialect: Dialect,
    pub models: BTreeMap<String, String>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub key: Option<KeyFile>,
}

impl Target {
    pub fn from_config(name: &str, config: &TargetConfig) -> Result<Target, String> {
        let url = TargetUrl::parse(&config.base_url)?;
        let dialect = match &config.api {
            Some(api) => Dialect::from_name(api)
                .ok_or_else(|| format!("api {api:?} is not one of mistral, openai"))?,
            None if url.authority.host.ends_with("mistral.ai") => Dialect::Mistral,
            None => Dialect::OpenAi,
        };
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header {k:?} is not a valid name"))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| format!("header {k:?} has an invalid value"))?;
            headers.push((name, value));
        }
        Ok(Target {
            name: name.to_string(),
            url,
            dialect,
            models: config.models.clone(),
            headers,
            key: config.api_key_file.as_deref().map(KeyFile::new),
        })
    }

    /// The model to ask the target for: the decision's choice, the exact
    /// mapping, the `"*"` fallback, in that order.
    pub fn map_model(&self, requested: Option<&str>, decided: Option<&str>) -> Option<String> {
        if let Some(m) = decided {
            return Some(m.to_string());
        }
        requested
            .and_then(|m| self.models.get(m))
            .or_else(|| self.models.get("*"))
            .cloned()
    }
}

/// Builds the targets of a config; every problem is listed.
pub fn targets_from_config(
    configs: &BTreeMap<String, TargetConfig>,
) -> Result<BTreeMap<String, Target>, Vec<String>> {
    let mut targets = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, config) in configs {
        match Target::from_config(name, config) {
            Ok(t) => {
                targets.insert(name.clone(), t);
            }
            Err(e) => problems.push(format!("targets.{name}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(problems)
    }
}

/// `data.targets` for policies: per target, the operations it serves and
/// the registry's facts about who runs it.
pub fn targets_data(targets: &BTreeMap<String, Target>, registry: &Registry) -> Value {
    let mut out = serde_json::Map::new();
    for (name, target) in targets {
        let provider = registry.lookup(&target.url.authority.host);
        out.insert(
            name.clone(),
            json!({
                "host": target.url.authority.host,
                "api": target.dialect.name(),
                "operations": target.dialect.operations(),
                "provider": provider.map(|p| p.id.clone()),
                "in_cluster": provider.is_some_and(|p| p.kind == Kind::InCluster),
                "entity": provider.map(|p| serde_json::to_value(&p.entity).unwrap_or(Value::Null)),
                "retention": provider.map(|p| json!({
                    "default": p.retention.default,
                    "zero_retention_available": p.retention.zero_retention_available,
                })),
                "models": target.models,
            }),
        );
    }
    Value::Object(out)
}

/// Why a reroute cannot be carried out; each is a 403 or 503 naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("the decision routes this call to target {0:?}, which is not configured")]
    UnknownTarget(String),
    #[error("a {api} call cannot be rerouted: only OpenAI-API calls are translated")]
    UnsupportedApi { api: String },
    #[error("target {target} does not serve {operation} calls")]
    UnsupportedOperation { target: String, operation: String },
    #[error("target {target} has no model mapping for {model:?} (add it, or \"*\", to targets.{target}.models)")]
    NoModel { target: String, model: String },
    #[error("the request body cannot be translated for target {target}: {why}")]
    Body { target: String, why: String },
    #[error("target {target}'s API key is unavailable: {why}")]
    Key { target: String, why: String },
}

/// How a call is sent to a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub original_model: Option<String>,
    pub target_model: Option<String>,
}

/// Plans the rewrite of an OpenAI call (`operation` on `body`) for `target`.
pub fn plan(
    target: &Target,
    api: Option<&str>,
    operation: Option<&str>,
    body: Option<&Value>,
    decided_model: Option<&str>,
) -> Result<Plan, RouteError> {
    if api != Some("openai") {
        return Err(RouteError::UnsupportedApi {
            api: api.unwrap_or("unrecognised").to_string(),
        });
    }
    let operation = operation.unwrap_or("unrecognised");
    let suffix =
        target
            .dialect
            .path_for(operation)
            .ok_or_else(|| RouteError::UnsupportedOperation {
                target: target.name.clone(),
                operation: operation.to_string(),
            })?;
    let path = format!("{}{suffix}", target.url.prefix);
    if operation == "models" {
        return Ok(Plan {
            path,
            body: None,
            original_model: None,
            target_model: None,
        });
    }
    let body = body.ok_or_else(|| RouteError::Body {
        target: target.name.clone(),
        why: "the body is not JSON".into(),
    })?;
    let original = body
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string);
    let model = target
        .map_model(original.as_deref(), decided_model)
        .ok_or_else(|| RouteError::NoModel {
            target: target.name.clone(),
            model: original.clone().unwrap_or_default(),
        })?;
    let translated = target
        .dialect
        .translate(operation, body, &model)
        .map_err(|why| RouteError::Body {
            target: target.name.clone(),
            why,
        })?;
    let bytes = serde_json::to_vec(&translated).map_err(|e| RouteError::Body {
        target: target.name.clone(),
        why: e.to_string(),
    })?;
    Ok(Plan {
        path,
        body: Some(bytes),
        original_model: original,
        target_model: Some(model),
    })
}

/// Checks every target's key file once at start, for `ecluse check`.
pub fn check_key_files(targets: &BTreeMap<String, Target>) -> Vec<String> {
    targets
        .values()
        .filter_map(|t| {
            let key = t.key.as_ref()?;
            key.read().err().map(|e| format!("targets.{}: {e}", t.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base_url: &str, models: &[(&str, &str)]) -> Target {
        Target::from_config(
            "t",
            &TargetConfig {
                base_url: base_url.into(),
                api_key_file: None,
                models: models
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                headers: BTreeMap::new(),
                api: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn base_urls() {
        let u = TargetUrl::parse("https://api.mistral.ai/v1").unwrap();
        assert_eq!(
            (u.tls, u.authority.to_string(), u.prefix.as_str()),
            (true, "api.mistral.ai:443".into(), "/v1")
        );
        let u = TargetUrl::parse("http://vllm.llm.svc:8000/v1/").unwrap();
        assert_eq!(
            (u.tls, u.authority.port, u.prefix.as_str()),
            (false, 8000, "/v1")
        );
        let u = TargetUrl::parse("http://[fd00::1]/").unwrap();
        assert_eq!(
            (
                u.authority.host.as_str(),
                u.authority.port,
                u.prefix.as_str()
            ),
            ("fd00::1", 80, "")
        );
        for bad in [
            "ftp://x",
            "api.mistral.ai",
            "https://",
            "https://h/v1?x=1",
            "https://h:99999",
        ] {
            assert!(TargetUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn model_mapping_order() {
        let t = target(
            "https://api.mistral.ai/v1",
            &[
                ("gpt-4o", "mistral-large-latest"),
                ("*", "mistral-small-latest"),
            ],
        );
        assert_eq!(t.dialect, Dialect::Mistral);
        assert_eq!(
            t.map_model(Some("gpt-4o"), None).unwrap(),
            "mistral-large-latest"
        );
        assert_eq!(
            t.map_model(Some("gpt-4.1"), None).unwrap(),
            "mistral-small-latest"
        );
        assert_eq!(
            t.map_model(Some("gpt-4o"), Some("codestral")).unwrap(),
            "codestral"
        );
        let strict = target(
            "https://api.mistral.ai/v1",
            &[("gpt-4o", "mistral-large-latest")],
        );
        assert!(strict.map_model(Some("gpt-4.1"), None).is_none());
    }

    #[test]
    fn plans() {
        let t = target(
            "https://api.mistral.ai/v1",
            &[("gpt-4o", "mistral-large-latest")],
        );
        let body = json!({"model": "gpt-4o", "messages": [], "seed": 7});
        let p = plan(&t, Some("openai"), Some("chat"), Some(&body), None).unwrap();
        assert_eq!(p.path, "/v1/chat/completions");
        let sent: Value = serde_json::from_slice(&p.body.unwrap()).unwrap();
        assert_eq!(sent["model"], "mistral-large-latest");
        assert_eq!(sent["random_seed"], 7);
        assert_eq!(p.original_model.as_deref(), Some("gpt-4o"));

        let err = plan(&t, Some("anthropic"), Some("messages"), Some(&body), None).unwrap_err();
        assert!(matches!(err, RouteError::UnsupportedApi { .. }));
        let err = plan(&t, Some("openai"), Some("completions"), Some(&body), None).unwrap_err();
        assert!(
            matches!(err, RouteError::UnsupportedOperation { .. }),
            "{err}"
        );
        let err = plan(
            &t,
            Some("openai"),
            Some("chat"),
            Some(&json!({"model": "o3"})),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, RouteError::NoModel { .. }));
        let models = plan(&t, Some("openai"), Some("models"), None, None).unwrap();
        assert_eq!((models.path.as_str(), models.body), ("/v1/models", None));
    }
}
