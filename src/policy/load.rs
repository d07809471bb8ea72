//! Reading a policy revision (a directory, or the embedded defaults), checking
//! it step by step, and building the [`Snapshot`] that decides with it.
//!
//! Layout of a revision: `*.rego` modules anywhere (files ending in
//! `_test.rego` are tests, never loaded for deciding), and JSON documents
//! under `data/`, each loaded at the path of its file: `data/entities.json`
//! is `data.entities`, `data/eu/rules.json` is `data.eu.rules`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use regorus::Engine;
use serde_json::Value;

use super::rego::{EvalError, RegoPolicy};
use super::Snapshot;
use crate::entity::Registry;
use crate::route::Target;

/// The step of loading that failed; `GET /policy` and the logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Read,
    Compile,
    Registry,
    Test,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Read => "read",
            Step::Compile => "compile",
            Step::Registry => "registry",
            Step::Test => "test",
        })
    }
}

/// A revision that cannot become active, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {step} step failed: {message}")]
pub struct LoadError {
    pub step: Step,
    pub message: String,
}

impl LoadError {
    fn new(step: Step, message: impl Into<String>) -> LoadError {
        LoadError {
            step,
            message: message.into(),
        }
    }
}

/// The files of one revision, as text.
#[derive(Debug, Clone, Default)]
pub struct PolicyFiles {
    /// (relative path, Rego source) of modules that decide.
    pub modules: Vec<(String, String)>,
    /// (relative path, Rego source) of `*_test.rego` modules.
    pub tests: Vec<(String, String)>,
    /// (relative path under `data/`, JSON text).
    pub data: Vec<(String, String)>,
}

/// Largest policy file accepted, and largest revision: policy repositories
/// are untrusted input.
const MAX_FILE: u64 = 4 << 20;
const MAX_TOTAL: u64 = 32 << 20;

macro_rules! embedded {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../policies/", $path)))),*]
    };
}

/// The default policies, compiled into the binary.
pub const EMBEDDED: &[(&str, &str)] = embedded!(
    "lib.rego",
    "connect.rego",
    "egress.rego",
    "connect_test.rego",
    "egress_test.rego",
    "data/entities.json",
    "data/settings.json",
);

impl PolicyFiles {
    pub fn embedded() -> PolicyFiles {
        let mut files = PolicyFiles::default();
        for (path, text) in EMBEDDED {
            files.add(path, text.to_string());
        }
        files
    }

    pub fn add(&mut self, path: &str, text: String) {
        if let Some(rest) = path.strip_prefix("data/") {
            if rest.ends_with(".json") {
                self.data.push((rest.to_string(), text));
            }
        } else if path.ends_with("_test.rego") {
            self.tests.push((path.to_string(), text));
        } else if path.ends_with(".rego") {
            self.modules.push((path.to_string(), text));
        }
    }

    /// Reads every `*.rego` and `data/**/*.json` under `dir`, skipping
    /// hidden entries (`.git`) and symbolic links that leave the directory.
    pub fn read_dir(dir: &Path) -> Result<PolicyFiles, LoadError> {
        let root = dir.canonicalize().map_err(|e| {
            LoadError::new(
                Step::Read,
                format!("policy directory {}: {e}", dir.display()),
            )
        })?;
        let mut files = PolicyFiles::default();
        let mut total = 0u64;
        let mut stack = vec![root.clone()];
        while let Some(current) = stack.pop() {
            let entries = std::fs::read_dir(&current)
                .map_err(|e| LoadError::new(Step::Read, format!("{}: {e}", current.display())))?;
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = entry.path();
                let real = path
                    .canonicalize()
                    .map_err(|e| LoadError::new(Step::Read, format!("{}: {e}", path.display())))?;
                if !real.starts_with(&root) {
                    return Err(LoadError::new(
                        Step::Read,
                        format!("{} points outside the policy directory", path.display()),
                    ));
                }
                let meta = std::fs::metadata(&real)
                    .map_err(|e| LoadError::new(Step::Read, format!("{}: {e}", path.display())))?;
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let relative = path
                    .strip_prefix(&root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .replace('\\', "/");
                let wanted = relative.ends_with(".rego")
                    || (relative.starts_with("data/") && relative.ends_with(".json"));
                if !wanted {
                    continue;
                }
                if meta.len() > MAX_FILE {
                    return Err(LoadError::new(
                        Step::Read,
                        format!(
                            "{relative} is {} bytes; the limit is {MAX_FILE}",
                            meta.len()
                        ),
                    ));
                }
                total += meta.len();
                if total > MAX_TOTAL {
                    return Err(LoadError::new(
                        Step::Read,
                        format!("the policy directory holds more than {MAX_TOTAL} bytes"),
                    ));
                }
                let text = std::fs::read_to_string(&real)
                    .map_err(|e| LoadError::new(Step::Read, format!("{relative}: {e}")))?;
                files.add(&relative, text);
            }
        }
        if files.modules.is_empty() {
            return Err(LoadError::new(
                Step::Read,
                format!("no .rego policy in {}", dir.display()),
            ));
        }
        Ok(files)
    }

    /// A digest of every file, for a directory's revision id.
    pub fn digest(&self) -> String {
        let mut all: Vec<(&String, &String)> = self
            .modules
            .iter()
            .chain(&self.tests)
            .chain(&self.data)
            .map(|(p, t)| (p, t))
            .collect();
        all.sort();
        let mut bytes = Vec::new();
        for (path, text) in all {
            bytes.extend_from_slice(path.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(text.as_bytes());
            bytes.push(0);
        }
        crate::revision::content_revision(&bytes)
    }

    /// The data documents merged into one object, keyed by path.
    fn data_document(&self) -> Result<serde_json::Map<String, Value>, LoadError> {
        let mut root = serde_json::Map::new();
        for (path, text) in &self.data {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| LoadError::new(Step::Compile, format!("data/{path}: {e}")))?;
            let keys: Vec<&str> = path.trim_end_matches(".json").split('/').collect();
            let mut node = &mut root;
            for key in &keys[..keys.len() - 1] {
                node = node
                    .entry(key.to_string())
                    .or_insert_with(|| Value::Object(Default::default()))
                    .as_object_mut()
                    .ok_or_else(|| {
                        LoadError::new(
                            Step::Compile,
                            format!("data/{path}: {key} is not an object"),
                        )
                    })?;
            }
            let last = keys[keys.len() - 1].to_string();
            if node.insert(last, value).is_some() {
                return Err(LoadError::new(
                    Step::Compile,
                    format!("data/{path} is defined twice"),
                ));
            }
        }
        Ok(root)
    }

    /// `data.settings.trust_declared_classification`: whether a declared
    /// classification stands even when the scan finds personal data.
    /// Anything but `true` (absent, malformed) keeps the strict default.
    pub fn trusts_declared_classification(&self) -> bool {
        self.data
            .iter()
            .find(|(p, _)| p == "settings.json")
            .and_then(|(_, t)| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("trust_declared_classification")?.as_bool())
            .unwrap_or(false)
    }

    fn entities_text(&self) -> Option<&str> {
        self.data
            .iter()
            .find(|(p, _)| p == "entities.json")
            .map(|(_, t)| t.as_str())
    }
}

/// Everything a revision is checked with besides its own files.
pub struct Context<'a> {
    pub targets: &'a BTreeMap<String, Target>,
    pub timeout: Duration,
}

/// Loads a revision the way every source does: registry, compile, the
/// revision's own tests; any failing step rejects the whole revision.
pub fn load_revision(
    files: &PolicyFiles,
    context: &Context<'_>,
    revision: String,
    source: String,
) -> Result<Snapshot, LoadError> {
    let snapshot = compile(files, context, revision, source)?;
    let results = run_tests(files, context)?;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{} ({})", r.name, r.detail.as_deref().unwrap_or("failed")))
        .collect();
    if !failed.is_empty() {
        return Err(LoadError::new(
            Step::Test,
            format!(
                "{} of {} policy tests failed: {}",
                failed.len(),
                results.len(),
                failed.join("; ")
            ),
        ));
    }
    Ok(snapshot)
}

fn registry_of(files: &PolicyFiles) -> Result<Registry, LoadError> {
    let entities = files.entities_text().ok_or_else(|| {
        LoadError::new(
            Step::Registry,
            "data/entities.json (the entity registry) is missing",
        )
    })?;
    Registry::from_json(entities).map_err(|e| LoadError::new(Step::Registry, e.to_string()))
}

/// Compiles a revision: registry first (the policies' facts), then every
/// module and the data, then a first evaluation that prepares the engine.
pub fn compile(
    files: &PolicyFiles,
    context: &Context<'_>,
    revision: String,
    source: String,
) -> Result<Snapshot, LoadError> {
    for (path, text) in &files.modules {
        if let Some(name) = reserved_decision_header(text) {
            return Err(LoadError::new(
                Step::Compile,
                format!("{path}: {}", super::reserved_header(&name)),
            ));
        }
    }
    let registry = registry_of(files)?;
    let engine = decision_engine(files, context)?;
    let timeout = context.timeout;
    let policy = RegoPolicy::new(engine, timeout);
    // Evaluating once prepares the template so that per-thread clones start
    // ready; a policy error here surfaces at load time, not on a call.
    let probe = serde_json::json!({"stage": "connect", "destination": {}, "source": {}});
    if let Err(e @ (EvalError::Failed(_) | EvalError::Timeout { .. })) =
        policy.eval(super::CONNECT_RULE, &probe)
    {
        return Err(LoadError::new(Step::Compile, e.to_string()));
    }
    let mut snapshot = Snapshot::new(registry, Some(policy), revision, source);
    snapshot.trust_declared_classification = files.trusts_declared_classification();
    if is_time_or_random_dependent(&files.modules) {
        return Ok(snapshot.without_connect_cache());
    }
    Ok(match super::deps::input_paths(&files.modules) {
        Some(paths) => snapshot.with_decision_cache(paths),
        None => snapshot,
    })
}

/// The regorus engine a revision decides with: its modules, its data and
/// the configured targets as `data.targets`. Decisions go through
/// [`compile`]'s snapshot; this is for tools that compare evaluators.
pub fn decision_engine(files: &PolicyFiles, context: &Context<'_>) -> Result<Engine, LoadError> {
    let registry = registry_of(files)?;
    let targets = crate::route::targets_data(context.targets, &registry);
    build_engine(&files.modules, files, &targets)
}

/// A header name a module writes literally into a decision's `headers` or
/// `request_headers_to_remove` that no decision may touch. Decisions are
/// checked again when they are read; this names the mistake at load, before
/// a single call is refused for it.
fn reserved_decision_header(source: &str) -> Option<String> {
    for key in ["\"headers\"", "\"request_headers_to_remove\""] {
        let mut rest = source;
        while let Some(at) = rest.find(key) {
            rest = &rest[at + key.len()..];
            let after = rest.trim_start();
            let Some(after) = after.strip_prefix(':') else {
                continue;
            };
            let after = after.trim_start();
            let close = match after.chars().next() {
                Some('{') => '}',
                Some('[') => ']',
                _ => continue,
            };
            let body = &after[1..after.find(close).unwrap_or(after.len())];
            // Every string in an array; every key (a string before ':') in an object.
            let mut parts = body.split('"');
            parts.next();
            while let (Some(name), Some(tail)) = (parts.next(), parts.next()) {
                let is_name = close == ']' || tail.trim_start().starts_with(':');
                if is_name && crate::headers::is_reserved(name) {
                    return Some(name.to_string());
                }
            }
        }
    }
    None
}

/// Builtins whose answer is not a function of the input and data. Rego
/// cannot alias a builtin, so a module that calls one names it; a mention
/// in a comment only costs the cache.
const NONDETERMINISTIC_BUILTINS: &[&str] = &[
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "http.send",
    "opa.runtime",
];

/// Whether a decision of these modules may differ between two calls with
/// the same input (so it must not be remembered).
pub fn is_time_or_random_dependent(modules: &[(String, String)]) -> bool {
    modules.iter().any(|(_, text)| {
        NONDETERMINISTIC_BUILTINS
            .iter()
            .any(|builtin| text.contains(builtin))
    })
}

fn build_engine(
    modules: &[(String, String)],
    files: &PolicyFiles,
    targets: &Value,
) -> Result<Engine, LoadError> {
    let mut engine = Engine::new();
    engine.set_strict_builtin_errors(false);
    for (path, text) in modules {
        engine.add_policy(path.clone(), text.clone()).map_err(|e| {
            LoadError::new(
                Step::Compile,
                format!("{path}: {}", super::rego::first_line(&e.to_string())),
            )
        })?;
    }
    let mut data = files.data_document()?;
    if data.contains_key("targets") {
        return Err(LoadError::new(
            Step::Compile,
            "data/targets.json: data.targets is reserved for the configured targets",
        ));
    }
    data.insert("targets".into(), targets.clone());
    engine
        .add_data(regorus::Value::from(Value::Object(data)))
        .map_err(|e| LoadError::new(Step::Compile, format!("data: {e}")))?;
    Ok(engine)
}

/// Longest one `test_*` rule may evaluate.
const TEST_EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    pub passed: bool,
    pub detail: Option<String>,
}

/// Runs every `test_*` rule of the revision's `*_test.rego` files (with
/// the decision modules and data loaded), as `opa test` does: a test passes
/// when its rule is true.
pub fn run_tests(files: &PolicyFiles, context: &Context<'_>) -> Result<Vec<TestResult>, LoadError> {
    let registry = registry_of(files)?;
    let targets = crate::route::targets_data(context.targets, &registry);
    let mut all = files.modules.clone();
    all.extend(files.tests.iter().cloned());
    let engine =
        build_engine(&all, files, &targets).map_err(|e| LoadError::new(Step::Test, e.message))?;
    let mut names = Vec::new();
    for (path, text) in &files.tests {
        let package = package_of(text)
            .ok_or_else(|| LoadError::new(Step::Test, format!("{path}: no package declaration")))?;
        for rule in test_rule_names(text) {
            let full = format!("data.{package}.{rule}");
            if !names.contains(&full) {
                names.push(full);
            }
        }
    }
    // A test is not a call: it runs once per revision, on whatever CPU the
    // pod has while it loads. The per-call limit would reject a good
    // revision on a busy node, so tests get a bound of their own that only
    // stops a test that never ends.
    let policy = RegoPolicy::new(engine, context.timeout.max(TEST_EVAL_TIMEOUT));
    let empty = serde_json::json!({});
    Ok(names
        .into_iter()
        .map(|name| {
            let result = policy.eval(&name, &empty);
            let (passed, detail) = match result {
                Ok(Value::Bool(true)) => (true, None),
                Ok(other) => (false, Some(format!("evaluated to {other}"))),
                Err(EvalError::Undefined { .. }) => (
                    false,
                    Some("undefined (a condition did not hold)".to_string()),
                ),
                Err(e) => (false, Some(e.to_string())),
            };
            TestResult {
                name,
                passed,
                detail,
            }
        })
        .collect())
}

/// `package a.b` of a module.
fn package_of(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        line.strip_prefix("package ")
            .map(|p| p.split('#').next().unwrap_or(p).trim().to_string())
    })
}

/// Names of the `test_*` rules a module defines at the top level.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_the_policies_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let on_disk = PolicyFiles::read_dir(&dir).unwrap();
        let embedded = PolicyFiles::embedded();
        assert_eq!(
            on_disk.digest(),
            embedded.digest(),
            "update EMBEDDED in policy/load.rs"
        );
    }

    #[test]
    fn test_names_and_packages() {
        let text = "package ecluse.x_test\n\ntest_a if { true }\ntest_b if {\n}\n  test_not_top if { true }\nhelper := 1\ntest_a if { false }\n";
        assert_eq!(package_of(text).unwrap(), "ecluse.x_test");
        assert_eq!(test_rule_names(text), vec!["test_a", "test_b"]);
    }

    fn compiled(files: &PolicyFiles) -> Snapshot {
        let targets = BTreeMap::new();
        let context = Context {
            targets: &targets,
            timeout: Duration::from_millis(500),
        };
        compile(files, &context, "test".into(), "test".into()).unwrap()
    }

    /// The remembered decisions of the default policies are the decisions
    /// evaluation gives, over destinations, classifications, retention,
    /// scan results, operations, and fields the policies do not read.
    #[test]
    fn remembered_request_decisions_equal_evaluated_ones() {
        use super::super::input::{request_doc, Scheme};
        let targets: BTreeMap<String, crate::route::Target> = [
            ("mistral", "https://api.mistral.ai/v1"),
            ("vllm", "http://vllm.llm.svc:8000/v1"),
        ]
        .into_iter()
        .map(|(name, url)| {
            let config = crate::config::TargetConfig {
                base_url: url.into(),
                ..Default::default()
            };
            let target = crate::route::Target::from_config(name, &config).unwrap();
            (name.to_string(), target)
        })
        .collect();
        let context = Context {
            targets: &targets,
            timeout: Duration::from_millis(500),
        };
        let files = PolicyFiles::embedded();
        let cached = compile(&files, &context, "t".into(), "t".into()).unwrap();
        assert!(cached.caches_decisions());
        let evaluated = compile(&files, &context, "t".into(), "t".into())
            .unwrap()
            .without_decision_cache();
        let source = regorus::Value::new_object();
        let mut rules = std::collections::BTreeSet::new();
        let mut checked = 0;
        for host in [
            "api.openai.com",
            "api.mistral.ai",
            "api.deepseek.com",
            "vllm.llm.svc",
            "example.com",
        ] {
            let authority = crate::authority::Authority::new(host, 443);
            let destination = cached.destination(&authority, Scheme::Https, &[443]);
            for classification in [
                None,
                Some("public"),
                Some("personal"),
                Some("special-category"),
            ] {
                for retention in [None, Some("zero"), Some("1h")] {
                    for pii in [0, 1, 2] {
                        for (path, model, body_bytes) in [
                            ("/v1/chat/completions", "gpt-4o", 10),
                            ("/v1/chat/completions", "gpt-4o-mini", 99),
                            ("/v1/completions", "gpt-4o", 10),
                        ] {
                            let mut data = crate::classify::declared(
                                classification.map(str::as_bytes),
                                retention.map(str::as_bytes),
                            )
                            .unwrap();
                            if pii > 0 {
                                data.pii.insert("email", pii);
                            }
                            let body = format!(r#"{{"model":"{model}","messages":[]}}"#);
                            let call = crate::llm::parse_request(
                                Some("openai"),
                                "POST",
                                path,
                                body.as_bytes(),
                            );
                            let request =
                                request_doc("POST", path, std::iter::empty(), body_bytes, &call);
                            let first =
                                cached.decide_request_at(&destination, &request, &data, &source);
                            let again =
                                cached.decide_request_at(&destination, &request, &data, &source);
                            let truth =
                                evaluated.decide_request_at(&destination, &request, &data, &source);
                            assert_eq!(
                                first, truth,
                                "{host} {classification:?} {retention:?} {pii} {path} {model}"
                            );
                            assert_eq!(again, truth);
                            rules.insert(truth.rule.clone());
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 4 * 3 * 3 * 3);
        // The grid reaches every rule of the default egress policy.
        for rule in [
            "egress.allowed",
            "egress.unregistered_llm_api",
            "egress.special_category_in_cluster",
            "egress.personal_data_cloud_act",
            "egress.personal_data_adequacy",
            "egress.zero_retention",
            "egress.retention_limit",
        ] {
            assert!(rules.contains(rule), "{rule} not reached: {rules:?}");
        }
    }

    #[test]
    fn literal_reserved_decision_headers_are_refused_at_load() {
        let cases = [
            (
                r#"d := {"allowed": true, "headers": {"x-ok": "1", "Host": "evil"}}"#,
                Some("Host"),
            ),
            (
                r#"d := {"allowed": true, "headers": {"content-length": "0"}}"#,
                Some("content-length"),
            ),
            (
                r#"d := {"request_headers_to_remove": ["x-a", "transfer-encoding"]}"#,
                Some("transfer-encoding"),
            ),
            (
                r#"d := {"allowed": true, "headers": {"x-ecluse": "host"}}"#,
                None,
            ),
            (r#"d := {"allowed": true, "headers": {}}"#, None),
            (r#"x := "headers""#, None),
        ];
        for (source, want) in cases {
            assert_eq!(
                reserved_decision_header(source).as_deref(),
                want,
                "{source}"
            );
        }
        let mut files = PolicyFiles::embedded();
        files.modules.push((
            "bad.rego".into(),
            "package ecluse.bad\nd := {\"headers\": {\"Transfer-Encoding\": \"chunked\"}}\n".into(),
        ));
        let targets = BTreeMap::new();
        let context = Context {
            targets: &targets,
            timeout: Duration::from_millis(500),
        };
        let err = compile(&files, &context, "t".into(), "t".into()).unwrap_err();
        assert!(err.to_string().contains("bad.rego"), "{err}");
        assert!(
            err.to_string()
                .contains("\"Transfer-Encoding\" is reserved"),
            "{err}"
        );
    }

    #[test]
    fn a_key_built_from_parts_equals_the_key_of_the_whole_input() {
        use super::super::input::{request_doc, Scheme};
        use super::super::{DecisionCache, RequestParts};
        let targets = BTreeMap::new();
        let context = Context {
            targets: &targets,
            timeout: Duration::from_millis(500),
        };
        let snapshot = compile(&PolicyFiles::embedded(), &context, "t".into(), "t".into()).unwrap();
        let authority = crate::authority::Authority::new("api.openai.com", 443);
        let destination = snapshot.destination(&authority, Scheme::Https, &[443]);
        let body = r#"{"model":"gpt-4o","messages":[]}"#;
        let call = crate::llm::parse_request(
            Some("openai"),
            "POST",
            "/v1/chat/completions",
            body.as_bytes(),
        );
        let request = request_doc(
            "POST",
            "/v1/chat/completions",
            [("x-team", b"payments".as_slice())].into_iter(),
            body.len(),
            &call,
        );
        let mut data =
            crate::classify::declared(Some(b"personal".as_slice()), Some(b"1h".as_slice()))
                .unwrap();
        data.pii.insert("email", 2);
        let source: regorus::Value =
            serde_json::from_str::<regorus::Value>(r#"{"workload":"billing","namespace":"pay"}"#)
                .unwrap();
        let parts = RequestParts {
            destination: &destination,
            request: &request,
            data: &data,
            source: &source,
        };
        let path = |p: &[&str]| {
            p.iter()
                .map(|s| regorus::Value::from(*s))
                .collect::<Vec<_>>()
        };
        let mut paths = snapshot.decisions.as_ref().unwrap().paths.clone();
        assert!(!paths.is_empty());
        for extra in [
            &[][..],
            &["request"],
            &["data"],
            &["destination"],
            &["source"],
            &["version"],
            &["stage"],
            &["stage", "deeper"],
            &["request", "headers", "x-team"],
            &["request", "headers", "x-absent"],
            &["request", "model", "deeper"],
            &["request", "absent"],
            &["data", "pii", "email"],
            &["data", "retention_max_seconds"],
            &["destination", "host"],
            &["source", "workload"],
            &["absent"],
        ] {
            paths.push(path(extra));
        }
        paths.push(vec![regorus::Value::from(7u64)]);
        let cache = DecisionCache::new(paths);
        let from_parts = cache.key_from_parts(&parts);
        let whole = cache.key(&parts.input());
        for ((got, want), path) in from_parts.iter().zip(&whole).zip(&cache.paths) {
            assert_eq!(got, want, "{path:?}");
        }
        assert_eq!(from_parts.len(), whole.len());
        // The key does see what a path reads.
        assert!(whole.iter().any(|v| *v == regorus::Value::from("payments")));
    }

    fn connect_is_remembered(snapshot: &Snapshot) -> bool {
        let authority = crate::authority::Authority::new("api.openai.com", 443);
        let destination =
            snapshot.destination(&authority, super::super::input::Scheme::Https, &[443]);
        let source = regorus::Value::new_object();
        let first = snapshot.decide_connect_at(&destination, &source);
        let second = snapshot.decide_connect_at(&destination, &source);
        assert_eq!(first, second);
        destination.connect.get().is_some()
    }

    #[test]
    fn connect_decisions_are_remembered_only_for_input_only_policies() {
        let mut files = PolicyFiles::embedded();
        assert!(!is_time_or_random_dependent(&files.modules));
        assert!(connect_is_remembered(&compiled(&files)));

        files.add(
            "clock.rego",
            "package ecluse.clock\n\nstarted_ns := time.now_ns()\n".into(),
        );
        assert!(is_time_or_random_dependent(&files.modules));
        assert!(!connect_is_remembered(&compiled(&files)));
    }

    #[test]
    fn data_files_map_to_paths() {
        let mut files = PolicyFiles::default();
        files.add("data/entities.json", "{}".into());
        files.add("data/eu/rules.json", "[1]".into());
        let data = files.data_document().unwrap();
        assert_eq!(data["entities"], serde_json::json!({}));
        assert_eq!(data["eu"]["rules"], serde_json::json!([1]));
    }
}
