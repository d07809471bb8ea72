//! The entity registry: which provider (and which legal entity) answers at a
//! host. Data, not code: `policies/data/entities.json`, also visible to
//! policies as `data.entities`.
//!
//! Host patterns are matched label by label: `*` inside a label matches any
//! characters of that one label (`*-aiplatform.googleapis.com`,
//! `bedrock-runtime.*.amazonaws.com`); a leading `**.` matches one or more
//! labels (`**.svc.cluster.local`).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The embedded registry used when no policy directory is configured.
pub const EMBEDDED_REGISTRY: &str = include_str!("../policies/data/entities.json");

/// A problem with the registry file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The JSON does not have the registry's shape.
    #[error("entity registry: {0}")]
    Shape(String),
    /// The JSON parsed but a provider entry is unusable.
    #[error("entity registry: provider {provider:?}: {problem}")]
    Provider { provider: String, problem: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    version: u32,
    #[serde(default)]
    #[allow(dead_code)]
    notes: Option<String>,
    providers: BTreeMap<String, ProviderEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    #[serde(default)]
    display_name: Option<String>,
    hosts: Vec<String>,
    api: String,
    kind: Kind,
    entity: Entity,
    retention: Retention,
    sources: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Saas,
    InCluster,
}

/// The legal facts policies decide on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub country: Option<String>,
    pub jurisdiction: String,
    pub cloud_act: bool,
    pub eea_processor: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub default: String,
    pub zero_retention_available: bool,
}

/// One provider of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub display_name: String,
    pub api: String,
    pub kind: Kind,
    pub entity: Entity,
    pub retention: Retention,
}

#[derive(Debug, Clone)]
enum Pattern {
    /// Label patterns, compared one to one.
    Labels(Vec<String>),
    /// `**.` followed by label patterns: one or more labels, then these.
    AnyPrefix(Vec<String>),
}

/// The compiled registry: exact hosts in a map, patterns in a list.
#[derive(Debug, Clone)]
pub struct Registry {
    providers: Vec<Provider>,
    exact: HashMap<String, usize>,
    patterns: Vec<(Pattern, usize)>,
}

impl Registry {
    pub fn embedded() -> Registry {
        // The embedded file is validated by a unit test; failing here would be
        // a build defect, not an input error.
        Registry::from_json(EMBEDDED_REGISTRY).expect("embedded registry is valid")
    }

    pub fn from_json(text: &str) -> Result<Registry, RegistryError> {
        let file: RegistryFile =
            serde_json::from_str(text).map_err(|e| RegistryError::Shape(e.to_string()))?;
        if file.version != 1 {
            return Err(RegistryError::Shape(format!(
                "version {} is not supported (expected 1)",
                file.version
            )));
        }
        let mut registry = Registry {
            providers: Vec::with_capacity(file.providers.len()),
            exact: HashMap::new(),
            patterns: Vec::new(),
        };
        for (id, entry) in file.providers {
            let problem = |problem: String| RegistryError::Provider {
                provider: id.clone(),
                problem,
            };
            if entry.hosts.is_empty() {
                return Err(problem("lists no hosts".into()));
            }
            for fact in ["entity", "retention", "cloud_act"] {
                if !entry.sources.contains_key(fact) {
                    return Err(problem(format!("has no source for {fact:?}")));
                }
            }
            let index = registry.providers.len();
            for host in &entry.hosts {
                let host = host.to_ascii_lowercase();
                if !host.contains('*') {
                    if let Some(other) = registry.exact.insert(host.clone(), index) {
                        return Err(problem(format!(
                            "host {host} is also listed by {:?}",
                            registry.providers[other].id
                        )));
                    }
                    continue;
                }
                registry
                    .patterns
                    .push((compile_pattern(&host).map_err(problem)?, index));
            }
            registry.providers.push(Provider {
                display_name: entry.display_name.unwrap_or_else(|| id.clone()),
                id,
                api: entry.api,
                kind: entry.kind,
                entity: entry.entity,
                retention: entry.retention,
            });
        }
        Ok(registry)
    }

    /// The provider serving `host` (lower-case, no trailing dot), if any.
    pub fn lookup(&self, host: &str) -> Option<&Provider> {
        if let Some(&i) = self.exact.get(host) {
            return Some(&self.providers[i]);
        }
        let labels: Vec<&str> = host.split('.').collect();
        self.patterns
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, &labels))
            .map(|(_, i)| &self.providers[*i])
    }

    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }
}

fn compile_pattern(host: &str) -> Result<Pattern, String> {
    let (any_prefix, rest) = match host.strip_prefix("**.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let labels: Vec<String> = rest.split('.').map(str::to_string).collect();
    if labels.iter().any(|l| l.is_empty() || l.contains("**")) {
        return Err(format!(
            "host pattern {host:?}: '**' is only allowed as the first label, and labels cannot be empty"
        ));
    }
    Ok(if any_prefix {
        Pattern::AnyPrefix(labels)
    } else {
        Pattern::Labels(labels)
    })
}

fn pattern_matches(pattern: &Pattern, labels: &[&str]) -> bool {
    match pattern {
        Pattern::Labels(p) => {
            p.len() == labels.len() && p.iter().zip(labels).all(|(p, l)| label_matches(p, l))
        }
        Pattern::AnyPrefix(p) => {
            labels.len() > p.len()
                && p.iter()
                    .zip(&labels[labels.len() - p.len()..])
                    .all(|(p, l)| label_matches(p, l))
        }
    }
}

/// `*` matches any run of characters within one label (never empty for a
/// label that is only `*`).
fn label_matches(pattern: &str, label: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == label;
    }
    if label.is_empty() {
        return false;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !label.starts_with(first) || !label.ends_with(last) || label.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &label[first.len()..label.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_registry_covers_the_seeded_providers() {
        let r = Registry::embedded();
        let cases: &[(&str, Option<&str>)] = &[
            ("api.openai.com", Some("openai")),
            ("myres.openai.azure.com", Some("azure_openai")),
            ("api.anthropic.com", Some("anthropic")),
            ("generativelanguage.googleapis.com", Some("google_gemini")),
            (
                "europe-west4-aiplatform.googleapis.com",
                Some("google_vertex"),
            ),
            (
                "bedrock-runtime.eu-central-1.amazonaws.com",
                Some("aws_bedrock"),
            ),
            ("api.cohere.com", Some("cohere")),
            ("api.mistral.ai", Some("mistral")),
            ("api.aleph-alpha.com", Some("aleph_alpha")),
            ("vllm.llm.svc.cluster.local", Some("in_cluster")),
            ("vllm.llm.svc", Some("in_cluster")),
            ("svc.cluster.local", None),
            ("example.com", None),
            ("openai.azure.com", None),
            ("api.openai.com.evil.example", None),
            ("s3.eu-central-1.amazonaws.com", None),
        ];
        for (host, want) in cases {
            assert_eq!(r.lookup(host).map(|p| p.id.as_str()), *want, "{host}");
        }
        let openai = r.provider("openai").unwrap();
        assert!(openai.entity.cloud_act);
        assert_eq!(openai.entity.name, "OpenAI OpCo, LLC");
        let mistral = r.provider("mistral").unwrap();
        assert!(!mistral.entity.cloud_act && mistral.entity.eea_processor);
    }

    #[test]
    fn broken_registries_are_refused_with_the_reason() {
        let cases = [
            (r#"{"version": 2, "providers": {}}"#, "version 2"),
            (r#"{"version": 1}"#, "providers"),
            (
                r#"{"version": 1, "providers": {"x": {"hosts": [], "api": "openai", "kind": "saas",
                "entity": {"name": "X", "country": "US", "jurisdiction": "US", "cloud_act": true, "eea_processor": false},
                "retention": {"default": "30d", "zero_retention_available": false},
                "sources": {"entity": "a", "retention": "b", "cloud_act": "c"}}}}"#,
                "no hosts",
            ),
            (
                r#"{"version": 1, "providers": {"x": {"hosts": ["a.example"], "api": "openai", "kind": "saas",
                "entity": {"name": "X", "country": "US", "jurisdiction": "US", "cloud_act": true, "eea_processor": false},
                "retention": {"default": "30d", "zero_retention_available": false},
                "sources": {"entity": "a"}}}}"#,
                "no source",
            ),
            (
                r#"{"version": 1, "providers": {"x": {"hosts": ["a.example"], "api": "openai", "kind": "saas",
                "entity": {"name": "X", "country": "US", "jurisdiction": "US", "cloud_act": "yes", "eea_processor": false},
                "retention": {"default": "30d", "zero_retention_available": false},
                "sources": {"entity": "a", "retention": "b", "cloud_act": "c"}}}}"#,
                "invalid type",
            ),
        ];
        for (json, fragment) in cases {
            let err = Registry::from_json(json).unwrap_err().to_string();
            assert!(err.contains(fragment), "{fragment}: {err}");
        }
    }

    #[test]
    fn label_globs() {
        assert!(label_matches("*", "abc"));
        assert!(!label_matches("*", ""));
        assert!(label_matches("*-aiplatform", "us-central1-aiplatform"));
        assert!(!label_matches("*-aiplatform", "aiplatform"));
        assert!(label_matches("a*b*c", "axxbyyc"));
        assert!(!label_matches("a*b*c", "axxc"));
    }
}
