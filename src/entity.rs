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
    entity: EntityEntry,
    /// Why `cloud_act` has its value: the reasoning a DPO checks.
    #[serde(default)]
    cloud_act_reasoning: Option<String>,
    retention: RetentionEntry,
    /// Changes of hands, regional endpoints, caveats.
    #[serde(default)]
    #[allow(dead_code)]
    notes: Option<String>,
    sources: BTreeMap<String, String>,
    /// When the facts were last checked (YYYY-MM-DD).
    #[serde(default)]
    as_of: Option<String>,
}

/// A registry fact that may be unknown: `true`, `false` or `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    Known(bool),
    Unknown,
}

impl<'de> Deserialize<'de> for Fact {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(b) => Ok(Fact::Known(b)),
            Raw::Text(t) if t == "unknown" => Ok(Fact::Unknown),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "invalid type: string {t:?}, expected true, false or \"unknown\""
            ))),
        }
    }
}

impl Fact {
    /// The value policies see: an unknown fact is the strict answer.
    fn or_strict(self, strict: bool) -> bool {
        match self {
            Fact::Known(b) => b,
            Fact::Unknown => strict,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityEntry {
    name: String,
    #[serde(default)]
    parent: Option<String>,
    country: Option<String>,
    jurisdiction: String,
    cloud_act: Fact,
    eea_processor: Fact,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionEntry {
    default: String,
    zero_retention_available: Fact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Saas,
    InCluster,
}

/// The legal facts policies decide on. A fact the registry records as
/// unknown is given its strict value (within CLOUD Act reach, not an EEA
/// processor, no zero retention) and named in `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entity {
    pub name: String,
    pub parent: Option<String>,
    pub country: Option<String>,
    pub jurisdiction: String,
    pub cloud_act: bool,
    pub eea_processor: bool,
    /// The facts that could not be sourced and were given their strict value.
    pub unknown: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub default: String,
    pub zero_retention_available: bool,
}

/// Facts every hosted provider must source.
const SOURCED_FACTS: &[&str] = &[
    "hosts",
    "entity",
    "country",
    "cloud_act",
    "eea_processor",
    "retention",
    "zero_retention",
];

/// Wire APIs a registry entry may name.
const APIS: &[&str] = &[
    "openai",
    "anthropic",
    "gemini",
    "bedrock",
    "cohere",
    "aleph_alpha",
    "sagemaker",
    "other",
];

/// One provider of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub display_name: String,
    pub api: String,
    pub kind: Kind,
    pub entity: Entity,
    pub retention: Retention,
    pub cloud_act_reasoning: Option<String>,
    pub sources: BTreeMap<String, String>,
    pub as_of: Option<String>,
    pub hosts: Vec<String>,
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
    #[allow(clippy::expect_used)] // the embedded file, validated by a unit test
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
            if !APIS.contains(&entry.api.as_str()) {
                return Err(problem(format!(
                    "api {:?} is not one of {}",
                    entry.api,
                    APIS.join(", ")
                )));
            }
            let required: &[&str] = match entry.kind {
                Kind::Saas => SOURCED_FACTS,
                Kind::InCluster => &["entity", "retention", "cloud_act"],
            };
            for fact in required {
                if entry.sources.get(*fact).is_none_or(|s| s.trim().is_empty()) {
                    return Err(problem(format!("has no source for {fact:?}")));
                }
            }
            if entry.entity.parent.is_some() && !entry.sources.contains_key("parent") {
                return Err(problem("names a parent without a source for it".into()));
            }
            if entry.kind == Kind::Saas {
                match &entry.as_of {
                    Some(date) if is_iso_date(date) => {}
                    Some(date) => {
                        return Err(problem(format!("as_of {date:?} is not a YYYY-MM-DD date")))
                    }
                    None => return Err(problem("has no as_of date for its facts".into())),
                }
                if entry
                    .cloud_act_reasoning
                    .as_deref()
                    .is_none_or(str::is_empty)
                {
                    return Err(problem("has no cloud_act_reasoning".into()));
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
            let e = entry.entity;
            let mut unknown = Vec::new();
            if e.cloud_act == Fact::Unknown {
                unknown.push("cloud_act");
            }
            if e.eea_processor == Fact::Unknown {
                unknown.push("eea_processor");
            }
            if entry.retention.zero_retention_available == Fact::Unknown {
                unknown.push("zero_retention_available");
            }
            if entry.retention.default == "unknown" {
                unknown.push("retention");
            }
            if e.jurisdiction == "unknown" {
                unknown.push("jurisdiction");
            }
            registry.providers.push(Provider {
                display_name: entry.display_name.unwrap_or_else(|| id.clone()),
                id,
                api: entry.api,
                kind: entry.kind,
                entity: Entity {
                    name: e.name,
                    parent: e.parent,
                    country: e.country,
                    jurisdiction: e.jurisdiction,
                    cloud_act: e.cloud_act.or_strict(true),
                    eea_processor: e.eea_processor.or_strict(false),
                    unknown,
                },
                retention: Retention {
                    default: entry.retention.default,
                    zero_retention_available: entry
                        .retention
                        .zero_retention_available
                        .or_strict(false),
                },
                cloud_act_reasoning: entry.cloud_act_reasoning,
                sources: entry.sources,
                as_of: entry.as_of,
                hosts: entry.hosts,
            });
        }
        registry.check_no_overlap()?;
        Ok(registry)
    }

    /// No host may be matched by two providers: a concrete host made from
    /// each entry (`*` as `x`, `**.` as one label) must match only its own.
    fn check_no_overlap(&self) -> Result<(), RegistryError> {
        for (index, provider) in self.providers.iter().enumerate() {
            for host in &provider.hosts {
                let concrete = host
                    .to_ascii_lowercase()
                    .trim_start_matches("**.")
                    .replace('*', "x");
                let concrete = if host.starts_with("**.") {
                    format!("a.{concrete}")
                } else {
                    concrete
                };
                let labels: Vec<&str> = concrete.split('.').collect();
                let others = self
                    .exact
                    .get(&concrete)
                    .copied()
                    .into_iter()
                    .chain(
                        self.patterns
                            .iter()
                            .filter(|(p, _)| pattern_matches(p, &labels))
                            .map(|(_, i)| *i),
                    )
                    .filter(|i| *i != index);
                if let Some(other) = others.into_iter().next() {
                    return Err(RegistryError::Provider {
                        provider: provider.id.clone(),
                        problem: format!(
                            "host {host} is also matched by provider {:?}",
                            self.providers[other].id
                        ),
                    });
                }
            }
        }
        Ok(())
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

fn is_iso_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
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
            // Regional and product hosts that were tunnelled blind before.
            ("eu.api.openai.com", Some("openai")),
            ("us.api.openai.com", Some("openai")),
            ("api.eu.mistral.ai", Some("mistral")),
            ("api.us.mistral.ai", Some("mistral_us")),
            (
                "bedrock-agent-runtime.eu-west-1.amazonaws.com",
                Some("aws_bedrock"),
            ),
            (
                "runtime.sagemaker.eu-central-1.amazonaws.com",
                Some("aws_sagemaker"),
            ),
            ("gateway.ai.cloudflare.com", Some("cloudflare")),
            (
                "my-endpoint.endpoints.huggingface.cloud",
                Some("huggingface"),
            ),
            ("api-inference.huggingface.co", Some("huggingface")),
            ("router.huggingface.co", Some("huggingface")),
            ("api.groq.com", Some("groq")),
            ("api.together.xyz", Some("together_ai")),
            ("openrouter.ai", Some("openrouter")),
            ("api.x.ai", Some("xai")),
            ("api.deepseek.com", Some("deepseek")),
            ("vllm.llm.svc", Some("in_cluster")),
            ("svc.cluster.local", None),
            ("example.com", None),
            ("openai.azure.com", None),
            ("api.openai.com.evil.example", None),
            ("s3.eu-central-1.amazonaws.com", None),
            // Private endpoints by their own names: PrivateLink interface
            // endpoints without private DNS, Private Service Connect.
            (
                "vpce-1a2b3c4d-5e6f.bedrock-runtime.eu-central-1.vpce.amazonaws.com",
                Some("aws_bedrock"),
            ),
            (
                "vpce-1a2b3c4d-5e6f-eu-central-1a.bedrock-runtime.eu-central-1.vpce.amazonaws.com",
                Some("aws_bedrock"),
            ),
            (
                "vpce-0abc-xyz.bedrock-agent-runtime.us-east-1.vpce.amazonaws.com",
                Some("aws_bedrock"),
            ),
            ("vpce-0abc-xyz.s3.eu-central-1.vpce.amazonaws.com", None),
            (
                "aiplatform-vialink1.p.googleapis.com",
                Some("google_vertex"),
            ),
            (
                "europe-west4-aiplatform-vialink1.p.googleapis.com",
                Some("google_vertex"),
            ),
            (
                "generativelanguage-vialink1.p.googleapis.com",
                Some("google_gemini"),
            ),
            ("storage-vialink1.p.googleapis.com", None),
        ];
        for (host, want) in cases {
            assert_eq!(r.lookup(host).map(|p| p.id.as_str()), *want, "{host}");
        }
        let openai = r.provider("openai").unwrap();
        assert!(openai.entity.cloud_act);
        assert_eq!(openai.entity.name, "OpenAI OpCo, LLC");
        let mistral = r.provider("mistral").unwrap();
        assert!(!mistral.entity.cloud_act && mistral.entity.eea_processor);
        assert!(mistral.entity.unknown.is_empty());
    }

    /// What CI checks of the shipped registry: the market is covered, every
    /// hosted provider sources every fact and dates them, unknown facts are
    /// given their strict value, and no host belongs to two providers (the
    /// loader refuses that, so loading is the check).
    #[test]
    fn the_shipped_registry_is_complete_and_sourced() {
        let r = Registry::embedded();
        let hosted: Vec<&Provider> = r
            .providers()
            .iter()
            .filter(|p| p.kind == Kind::Saas)
            .collect();
        assert!(hosted.len() >= 60, "{} hosted providers", hosted.len());
        for p in &hosted {
            assert!(p.as_of.as_deref().is_some_and(is_iso_date), "{}", p.id);
            for fact in SOURCED_FACTS {
                let source = &p.sources[*fact];
                assert!(
                    source.contains("http") || source.starts_with("unknown"),
                    "{}: source of {fact} is neither a URL nor a recorded unknown: {source}",
                    p.id
                );
            }
            if p.entity.unknown.contains(&"cloud_act") {
                assert!(
                    p.entity.cloud_act,
                    "{}: unknown CLOUD Act reach is exposure",
                    p.id
                );
            }
            if p.entity.unknown.contains(&"eea_processor") {
                assert!(!p.entity.eea_processor, "{}", p.id);
            }
            if p.entity.unknown.contains(&"zero_retention_available") {
                assert!(!p.retention.zero_retention_available, "{}", p.id);
            }
            for host in &p.hosts {
                assert!(
                    compile_pattern(&host.to_ascii_lowercase()).is_ok(),
                    "{host}"
                );
            }
        }
    }

    fn entry(id: &str, hosts: &str, cloud_act: &str) -> String {
        format!(
            r#""{id}": {{"hosts": {hosts}, "api": "openai", "kind": "saas",
            "entity": {{"name": "X", "country": "US", "jurisdiction": "US", "cloud_act": {cloud_act}, "eea_processor": "unknown"}},
            "cloud_act_reasoning": "r", "as_of": "2026-12-06",
            "retention": {{"default": "unknown", "zero_retention_available": "unknown"}},
            "sources": {{"hosts": "u", "entity": "u", "country": "u", "cloud_act": "u", "eea_processor": "u", "retention": "u", "zero_retention": "u"}}}}"#
        )
    }

    #[test]
    fn unknown_facts_are_strict_and_named() {
        let json = format!(
            r#"{{"version": 1, "providers": {{{}}}}}"#,
            entry("x", r#"["a.example"]"#, r#""unknown""#)
        );
        let r = Registry::from_json(&json).unwrap();
        let p = r.provider("x").unwrap();
        assert!(
            p.entity.cloud_act && !p.entity.eea_processor && !p.retention.zero_retention_available
        );
        assert_eq!(
            p.entity.unknown,
            vec![
                "cloud_act",
                "eea_processor",
                "zero_retention_available",
                "retention"
            ]
        );
    }

    #[test]
    fn overlapping_hosts_and_missing_dates_are_refused() {
        let cases = [
            (
                format!(
                    "{}, {}",
                    entry("a", r#"["*.example.com"]"#, "true"),
                    entry("b", r#"["api.example.com"]"#, "true")
                ),
                "also matched by provider",
            ),
            (
                format!(
                    "{}, {}",
                    entry("a", r#"["**.example.com"]"#, "true"),
                    entry("b", r#"["x.*.example.com"]"#, "true")
                ),
                "also matched by provider",
            ),
            (
                entry("a", r#"["a.example"]"#, "true").replace(r#""as_of": "2026-12-06","#, ""),
                "no as_of",
            ),
            (
                entry("a", r#"["a.example"]"#, "true").replace("2026-12-06", "last week"),
                "YYYY-MM-DD",
            ),
            (
                entry("a", r#"["a.example"]"#, "true")
                    .replace(r#""cloud_act_reasoning": "r","#, ""),
                "cloud_act_reasoning",
            ),
            (
                entry("a", r#"["a.example"]"#, "true")
                    .replace(r#""api": "openai""#, r#""api": "soap""#),
                "api \"soap\"",
            ),
            (
                entry("a", r#"["a.example"]"#, "true").replace(r#""country": "u", "#, ""),
                "no source for \"country\"",
            ),
            (
                entry("a", r#"["a.example"]"#, r#""maybe""#),
                "expected true, false",
            ),
        ];
        for (providers, fragment) in cases {
            let json = format!(r#"{{"version": 1, "providers": {{{providers}}}}}"#);
            let err = Registry::from_json(&json).unwrap_err().to_string();
            assert!(err.contains(fragment), "{fragment}: {err}");
        }
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
