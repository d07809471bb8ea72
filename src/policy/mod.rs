//! Decisions: the documents policies see (`input`) and return (`decision`),
//! and the immutable [`Snapshot`] that one request decides with.

pub mod deps;
pub mod input;
pub mod load;
pub mod rego;
pub mod verdict;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::authority::Authority;
use crate::classify::DataDoc;
use crate::entity::Registry;
pub use input::{ConnectInput, RequestInput};
use input::{DestinationDoc, RequestDoc, Scheme};
use rego::{EvalError, RegoPolicy, ToRego};

pub const CONNECT_RULE: &str = "data.ecluse.connect.decision";
pub const EGRESS_RULE: &str = "data.ecluse.egress.decision";

/// The rule name a fail-closed decision carries.
pub const POLICY_ERROR_RULE: &str = "ecluse.policy_error";

/// What happens to a destination named by CONNECT (or an absolute-form URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectAction {
    /// Terminate TLS with a minted leaf and decide each request.
    Intercept,
    /// Relay bytes untouched.
    Tunnel,
    /// Refuse before any TLS.
    Deny,
}

impl ConnectAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectAction::Intercept => "intercept",
            ConnectAction::Tunnel => "tunnel",
            ConnectAction::Deny => "deny",
        }
    }
}

/// `data.ecluse.connect.decision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectDecision {
    pub action: ConnectAction,
    pub reason: String,
    pub rule: String,
}

/// Where a decision sends a call instead of its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// `data.ecluse.egress.decision`: opa-envoy's fields plus `route`, `reason`, `rule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    pub rule: String,
    pub http_status: u16,
    pub route: Option<Route>,
    /// End-to-end headers the decision adds to the forwarded call.
    pub headers: BTreeMap<String, String>,
    /// End-to-end headers the decision removes (opa-envoy's
    /// `request_headers_to_remove`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
}

impl Decision {
    /// A refusal because the policy could not decide (fail closed).
    pub fn fail_closed(error: &EvalError) -> Decision {
        Decision {
            allowed: false,
            reason: format!("denied because {error}"),
            rule: POLICY_ERROR_RULE.to_string(),
            http_status: 403,
            route: None,
            headers: BTreeMap::new(),
            remove_headers: Vec::new(),
        }
    }
}

/// One revision of everything a decision depends on. Requests load it once
/// from an `ArcSwap`, so a request never mixes two revisions.
#[derive(Debug)]
pub struct Snapshot {
    pub registry: Registry,
    /// `None` until a first revision loads: every decision is then a deny.
    pub policy: Option<RegoPolicy>,
    pub revision: String,
    pub source: String,
    pub loaded_at: SystemTime,
    /// `data.settings.trust_declared_classification` of this revision.
    pub trust_declared_classification: bool,
    /// Destination documents already built under this revision: the same
    /// for every call to a host, so built (and converted) once.
    destinations: Mutex<HashMap<(Authority, Scheme), Arc<Destination>>>,
    /// Whether a destination's connect decision may be kept for the
    /// revision: not when the policy reads the clock or randomness, whose
    /// answers change between calls with the same input.
    connect_cacheable: bool,
    /// Request decisions already made under this revision, by the input
    /// parts the policy reads; `None` when they cannot be told apart.
    decisions: Option<DecisionCache>,
}

/// Request decisions keyed by the values of the input paths the revision's
/// modules read (see [`deps`]): calls that agree on all of them get the
/// same decision, so only the first is evaluated.
#[derive(Debug)]
struct DecisionCache {
    paths: Vec<Vec<regorus::Value>>,
    /// The paths no other path contains (`data` makes `data.pii` moot):
    /// those whose values make up the input an evaluation needs. `None`
    /// when a path is the whole input.
    outermost: Option<Vec<usize>>,
    entries: Mutex<BTreeMap<Vec<regorus::Value>, Decision>>,
}

/// Decisions remembered per revision; beyond this, the cache starts over.
const DECISION_CACHE: usize = 4096;

impl DecisionCache {
    fn new(paths: Vec<Vec<regorus::Value>>) -> DecisionCache {
        let outermost = (!paths.iter().any(Vec::is_empty)).then(|| {
            (0..paths.len())
                .filter(|&i| {
                    !paths.iter().enumerate().any(|(j, other)| {
                        let contains =
                            paths[i].starts_with(other) && (other.len() < paths[i].len() || j < i);
                        j != i && contains
                    })
                })
                .collect()
        });
        DecisionCache {
            paths,
            outermost,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The input an evaluation of a missed decision needs, built from its
    /// key: the policy reads nothing but these paths (that is what makes
    /// the key a key), so the fields it does not read are left out rather
    /// than built, and rebuilt, for every evaluated call.
    fn input_from_key(&self, key: &[regorus::Value]) -> Option<regorus::Value> {
        let outermost = self.outermost.as_ref()?;
        let mut root = Branch::default();
        for &i in outermost {
            let value = key.get(i)?;
            if *value != regorus::Value::Undefined {
                root.insert(self.paths.get(i)?, value.clone());
            }
        }
        Some(root.into_value())
    }

    /// The key of a whole input document.
    #[cfg(test)]
    fn key(&self, input: &regorus::Value) -> Vec<regorus::Value> {
        self.paths.iter().map(|path| walk(input, path)).collect()
    }

    /// The key of the input that [`RequestParts::input`] would build,
    /// building only the fields the paths read: a remembered decision then
    /// costs no full input document.
    fn key_from_parts(&self, parts: &RequestParts<'_>) -> Vec<regorus::Value> {
        self.paths
            .iter()
            .map(|path| {
                let Some((root, rest)) = path.split_first() else {
                    return parts.input();
                };
                let Ok(root) = root.as_string() else {
                    return regorus::Value::Undefined;
                };
                let doc: &dyn ToRego = match root.as_ref() {
                    "version" => return walk(&INPUT_VERSION.into(), rest),
                    "stage" => return walk(&REQUEST_STAGE.into(), rest),
                    "destination" => return walk(&parts.destination.value, rest),
                    "source" => return walk(parts.source, rest),
                    "request" => parts.request,
                    "data" => parts.data,
                    _ => return regorus::Value::Undefined,
                };
                let Some((field, rest)) = rest.split_first() else {
                    return doc.to_rego();
                };
                match field.as_string().ok().and_then(|f| doc.field_to_rego(f)) {
                    Some(value) => walk(&value, rest),
                    None => regorus::Value::Undefined,
                }
            })
            .collect()
    }
}

/// An input document under construction from the values at some paths.
#[derive(Default)]
struct Branch(BTreeMap<regorus::Value, Node>);

enum Node {
    Value(regorus::Value),
    Branch(Branch),
}

impl Branch {
    /// Places `value` at `path`. No path given is inside another's value
    /// ([`DecisionCache::outermost`]), so every step is a branch.
    fn insert(&mut self, path: &[regorus::Value], value: regorus::Value) {
        let Some((field, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.0.insert(field.clone(), Node::Value(value));
            return;
        }
        let node = self
            .0
            .entry(field.clone())
            .or_insert_with(|| Node::Branch(Branch::default()));
        if let Node::Branch(branch) = node {
            branch.insert(rest, value);
        }
    }

    fn into_value(self) -> regorus::Value {
        self.0
            .into_iter()
            .map(|(field, node)| {
                let value = match node {
                    Node::Value(value) => value,
                    Node::Branch(branch) => branch.into_value(),
                };
                (field, value)
            })
            .collect::<BTreeMap<_, _>>()
            .into()
    }
}

/// The value at `path` under `value`, `Undefined` where a step is missing.
fn walk(value: &regorus::Value, path: &[regorus::Value]) -> regorus::Value {
    let mut value = value;
    for field in path {
        match value {
            regorus::Value::Object(fields) => match fields.get(field) {
                Some(inner) => value = inner,
                None => return regorus::Value::Undefined,
            },
            _ => return regorus::Value::Undefined,
        }
    }
    value.clone()
}

const INPUT_VERSION: u64 = 1;
const REQUEST_STAGE: &str = "request";

/// What a request decision's input is built from.
struct RequestParts<'a> {
    destination: &'a Destination,
    request: &'a RequestDoc,
    data: &'a DataDoc,
    source: &'a regorus::Value,
}

impl RequestParts<'_> {
    /// The whole input document.
    fn input(&self) -> regorus::Value {
        rego::object([
            ("version", INPUT_VERSION.into()),
            ("stage", REQUEST_STAGE.into()),
            ("destination", self.destination.value.clone()),
            ("request", self.request.to_rego()),
            ("data", self.data.to_rego()),
            ("source", self.source.clone()),
        ])
    }
}

/// A destination's policy document, and the same in regorus's form.
#[derive(Debug)]
pub struct Destination {
    pub doc: DestinationDoc,
    value: regorus::Value,
    /// The connect decision: its input is this destination and the
    /// process's `source`, both fixed for the revision, so it is computed
    /// once. A failed evaluation is not kept.
    connect: std::sync::OnceLock<ConnectDecision>,
}

/// Destinations cached per revision; beyond this, the cache starts over.
const DESTINATION_CACHE: usize = 10_000;

impl Snapshot {
    /// The state before any revision could be loaded: not ready, and every
    /// call denied (never allow-all).
    pub fn unavailable(source: String) -> Snapshot {
        Snapshot::new(Registry::embedded(), None, "none".into(), source)
    }

    pub fn new(
        registry: Registry,
        policy: Option<RegoPolicy>,
        revision: String,
        source: String,
    ) -> Snapshot {
        Snapshot {
            registry,
            policy,
            revision,
            source,
            loaded_at: SystemTime::now(),
            trust_declared_classification: false,
            destinations: Mutex::new(HashMap::new()),
            connect_cacheable: true,
            decisions: None,
        }
    }

    /// Remembers request decisions by the input paths the policy reads
    /// (from [`deps::input_paths`]); only for a revision whose decisions
    /// depend on nothing but input and data.
    pub fn with_decision_cache(mut self, paths: Vec<Vec<String>>) -> Snapshot {
        let paths = paths
            .into_iter()
            .map(|path| path.into_iter().map(regorus::Value::from).collect())
            .collect();
        self.decisions = Some(DecisionCache::new(paths));
        self
    }

    /// Evaluates every request decision (benchmarks of the evaluation).
    pub fn without_decision_cache(mut self) -> Snapshot {
        self.decisions = None;
        self
    }

    /// Whether request decisions are remembered under this revision.
    pub fn caches_decisions(&self) -> bool {
        self.decisions.is_some()
    }

    /// Marks the revision's decisions as depending on more than their
    /// input (see [`load::is_time_or_random_dependent`]).
    pub fn without_connect_cache(mut self) -> Snapshot {
        self.connect_cacheable = false;
        self
    }

    /// The destination document for `authority` reached by `scheme`.
    pub fn destination(
        &self,
        authority: &Authority,
        scheme: Scheme,
        allowed_ports: &[u16],
    ) -> Arc<Destination> {
        let key = (authority.clone(), scheme);
        let mut cache = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(&key) {
            return found.clone();
        }
        let doc = input::destination(&self.registry, authority, scheme, allowed_ports);
        let value = rego::to_value(&doc).unwrap_or(regorus::Value::Null);
        let built = Arc::new(Destination {
            doc,
            value,
            connect: std::sync::OnceLock::new(),
        });
        if cache.len() >= DESTINATION_CACHE {
            cache.clear();
        }
        cache.insert(key, built.clone());
        built
    }

    /// The connect-stage decision for a destination (the hot path);
    /// `source` must be the process's, the same at every call.
    pub fn decide_connect_at(
        &self,
        destination: &Destination,
        source: &regorus::Value,
    ) -> ConnectDecision {
        if let Some(known) = destination.connect.get() {
            return known.clone();
        }
        let decision = self.evaluate_connect(destination, source);
        if self.connect_cacheable && decision.rule != POLICY_ERROR_RULE {
            let _ = destination.connect.set(decision.clone());
        }
        decision
    }

    fn evaluate_connect(
        &self,
        destination: &Destination,
        source: &regorus::Value,
    ) -> ConnectDecision {
        let input = rego::object([
            ("version", 1u64.into()),
            ("stage", "connect".into()),
            ("destination", destination.value.clone()),
            ("source", source.clone()),
        ]);
        let result = self
            .eval_value(CONNECT_RULE, input)
            .and_then(|v| rego::to_json(CONNECT_RULE, &v))
            .and_then(|v| parse_connect(&v));
        connect_or_deny(result)
    }

    /// The request-stage decision for a call (the hot path).
    pub fn decide_request_at(
        &self,
        destination: &Destination,
        request: &RequestDoc,
        data: &DataDoc,
        source: &regorus::Value,
    ) -> Decision {
        let parts = RequestParts {
            destination,
            request,
            data,
            source,
        };
        let Some(cache) = &self.decisions else {
            return self.evaluate_request(parts.input());
        };
        let key = cache.key_from_parts(&parts);
        let entries = || cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = entries().get(&key) {
            return known.clone();
        }
        let input = cache.input_from_key(&key).unwrap_or_else(|| parts.input());
        let decision = self.evaluate_request(input);
        if decision.rule != POLICY_ERROR_RULE {
            let mut entries = entries();
            if entries.len() >= DECISION_CACHE {
                entries.clear();
            }
            entries.insert(key, decision.clone());
        }
        decision
    }

    fn evaluate_request(&self, input: regorus::Value) -> Decision {
        let result = self
            .eval_value(EGRESS_RULE, input)
            .and_then(|v| parse_decision_value(&v));
        match result {
            Ok(d) => d,
            Err(e) => Decision::fail_closed(&e),
        }
    }

    fn eval_value(&self, rule: &str, input: regorus::Value) -> Result<regorus::Value, EvalError> {
        match &self.policy {
            Some(policy) => policy.eval_value(rule, input),
            None => Err(EvalError::NotLoaded),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.policy.is_some()
    }

    fn eval<I: Serialize>(&self, rule: &str, input: &I) -> Result<Value, EvalError> {
        match &self.policy {
            Some(policy) => policy.eval(rule, input),
            None => Err(EvalError::NotLoaded),
        }
    }

    /// The connect-stage decision; any policy failure is a deny naming it.
    pub fn decide_connect<I: Serialize>(&self, input: &I) -> ConnectDecision {
        match self
            .eval(CONNECT_RULE, input)
            .and_then(|v| parse_connect(&v))
        {
            Ok(d) => d,
            Err(e) => ConnectDecision {
                action: ConnectAction::Deny,
                reason: format!("denied because {e}"),
                rule: POLICY_ERROR_RULE.to_string(),
            },
        }
    }

    /// The request-stage decision; any policy failure is a deny naming it.
    pub fn decide_request<I: Serialize>(&self, input: &I) -> Decision {
        match self
            .eval(EGRESS_RULE, input)
            .and_then(|v| parse_decision(&v))
        {
            Ok(d) => d,
            Err(e) => Decision::fail_closed(&e),
        }
    }
}

fn connect_or_deny(result: Result<ConnectDecision, EvalError>) -> ConnectDecision {
    match result {
        Ok(d) => d,
        Err(e) => ConnectDecision {
            action: ConnectAction::Deny,
            reason: format!("denied because {e}"),
            rule: POLICY_ERROR_RULE.to_string(),
        },
    }
}

fn malformed(rule: &str, problem: impl Into<String>) -> EvalError {
    EvalError::Malformed {
        rule: rule.to_string(),
        problem: problem.into(),
    }
}

fn string_field(v: &Value, rule: &str, field: &str) -> Result<String, EvalError> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Ok(String::new()),
        Some(other) => Err(malformed(
            rule,
            format!("{field} must be a string, got {other}"),
        )),
    }
}

/// Validates a connect decision document.
pub fn parse_connect(v: &Value) -> Result<ConnectDecision, EvalError> {
    let rule = CONNECT_RULE;
    if !v.is_object() {
        return Err(malformed(rule, format!("expected an object, got {v}")));
    }
    let action = match v.get("action").and_then(Value::as_str) {
        Some("intercept") => ConnectAction::Intercept,
        Some("tunnel") => ConnectAction::Tunnel,
        Some("deny") => ConnectAction::Deny,
        other => {
            return Err(malformed(
                rule,
                format!("action must be intercept, tunnel or deny, got {other:?}"),
            ))
        }
    };
    Ok(ConnectDecision {
        action,
        reason: string_field(v, rule, "reason")?,
        rule: string_field(v, rule, "rule")?,
    })
}

/// Validates a request decision document: `allowed` is required; a denial's
/// status must be 4xx or 5xx (403 otherwise); headers must be valid HTTP.
pub fn parse_decision(v: &Value) -> Result<Decision, EvalError> {
    let rule = EGRESS_RULE;
    if !v.is_object() {
        return Err(malformed(rule, format!("expected an object, got {v}")));
    }
    let allowed = match v.get("allowed") {
        Some(Value::Bool(b)) => *b,
        other => {
            return Err(malformed(
                rule,
                format!("allowed must be true or false, got {other:?}"),
            ))
        }
    };
    let http_status = match v.get("http_status") {
        None | Some(Value::Null) => {
            if allowed {
                200
            } else {
                403
            }
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if allowed || (400..=599).contains(&s) => s as u16,
            _ => {
                return Err(malformed(
                    rule,
                    format!("http_status {n} is not a 4xx/5xx status"),
                ))
            }
        },
        Some(other) => {
            return Err(malformed(
                rule,
                format!("http_status must be a number, got {other}"),
            ))
        }
    };
    let route = match v.get("route") {
        None | Some(Value::Null) => None,
        Some(r) => Some(
            serde_json::from_value::<Route>(r.clone())
                .map_err(|e| malformed(rule, format!("route: {e}")))?,
        ),
    };
    let mut headers = BTreeMap::new();
    match v.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let Some(value) = value.as_str() else {
                    return Err(malformed(rule, format!("header {name} must be a string")));
                };
                if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || http::HeaderValue::from_str(value).is_err()
                {
                    return Err(malformed(
                        rule,
                        format!("header {name:?} is not valid HTTP"),
                    ));
                }
                if crate::headers::is_reserved(name) {
                    return Err(malformed(rule, reserved_header(name)));
                }
                headers.insert(name.to_ascii_lowercase(), value.to_string());
            }
        }
        Some(other) => {
            return Err(malformed(
                rule,
                format!("headers must be an object, got {other}"),
            ))
        }
    }
    let mut remove_headers = Vec::new();
    match v.get("request_headers_to_remove") {
        None | Some(Value::Null) => {}
        Some(Value::Array(names)) => {
            for name in names {
                let Some(name) = name.as_str() else {
                    return Err(malformed(
                        rule,
                        "request_headers_to_remove must list strings",
                    ));
                };
                if crate::headers::is_reserved(name) {
                    return Err(malformed(rule, reserved_header(name)));
                }
                remove_headers.push(name.to_ascii_lowercase());
            }
        }
        Some(other) => {
            return Err(malformed(
                rule,
                format!("request_headers_to_remove must be an array, got {other}"),
            ))
        }
    }
    Ok(Decision {
        allowed,
        reason: string_field(v, rule, "reason")?,
        rule: string_field(v, rule, "rule")?,
        http_status,
        route,
        headers,
        remove_headers,
    })
}

/// [`parse_decision`] of a result in regorus's form. A well-formed
/// decision is read where it lies; anything else (a malformed document, an
/// unusual but valid shape such as a route given as an array) goes through
/// JSON and [`parse_decision`], so both accept and refuse the same
/// documents with the same errors.
pub fn parse_decision_value(v: &regorus::Value) -> Result<Decision, EvalError> {
    match well_formed_decision(v) {
        Some(decision) => Ok(decision),
        None => parse_decision(&rego::to_json(EGRESS_RULE, v)?),
    }
}

/// The decision `v` holds when it is well formed in the usual shape;
/// `None` otherwise, including for every document [`parse_decision`]
/// refuses.
fn well_formed_decision(v: &regorus::Value) -> Option<Decision> {
    use regorus::Value as R;
    let R::Object(fields) = v else {
        return None;
    };
    let text = |v: &R| match v {
        R::String(s) => Some(s.to_string()),
        R::Null => Some(String::new()),
        _ => None,
    };
    let mut allowed = None;
    let mut reason = String::new();
    let mut rule = String::new();
    let mut http_status = None;
    let mut route = None;
    let mut headers = BTreeMap::new();
    let mut remove_headers = Vec::new();
    for (name, value) in fields.iter() {
        let R::String(name) = name else {
            // serde_json would name this field by its JSON text; rare
            // enough to leave to the JSON path.
            return None;
        };
        match name.as_ref() {
            "allowed" => allowed = Some(*value.as_bool().ok()?),
            "reason" => reason = text(value)?,
            "rule" => rule = text(value)?,
            "http_status" => match value {
                R::Null => {}
                R::Number(n) => http_status = Some(n.as_u64()?),
                _ => return None,
            },
            "route" => match value {
                R::Null => {}
                R::Object(route_fields) => {
                    let mut target = None;
                    let mut model = None;
                    for (key, value) in route_fields.iter() {
                        match (key, value) {
                            (R::String(k), R::String(t)) if k.as_ref() == "target" => {
                                target = Some(t.to_string())
                            }
                            (R::String(k), R::String(m)) if k.as_ref() == "model" => {
                                model = Some(m.to_string())
                            }
                            (R::String(k), R::Null) if k.as_ref() == "model" => {}
                            (R::String(k), _)
                                if k.as_ref() != "target" && k.as_ref() != "model" => {}
                            _ => return None,
                        }
                    }
                    route = Some(Route {
                        target: target?,
                        model,
                    });
                }
                _ => return None,
            },
            "headers" => match value {
                R::Null => {}
                R::Object(map) => {
                    for (name, value) in map.iter() {
                        let (R::String(name), R::String(value)) = (name, value) else {
                            return None;
                        };
                        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                            || http::HeaderValue::from_str(value).is_err()
                            || crate::headers::is_reserved(name)
                        {
                            return None;
                        }
                        headers.insert(name.to_ascii_lowercase(), value.to_string());
                    }
                }
                _ => return None,
            },
            "request_headers_to_remove" => match value {
                R::Null => {}
                R::Array(names) => {
                    for name in names.iter() {
                        let R::String(name) = name else {
                            return None;
                        };
                        if crate::headers::is_reserved(name) {
                            return None;
                        }
                        remove_headers.push(name.to_ascii_lowercase());
                    }
                }
                _ => return None,
            },
            _ => {}
        }
    }
    let allowed = allowed?;
    let http_status = match http_status {
        None => {
            if allowed {
                200
            } else {
                403
            }
        }
        Some(s) if allowed || (400..=599).contains(&s) => u16::try_from(s).ok()?,
        Some(_) => return None,
    };
    Some(Decision {
        allowed,
        reason,
        rule,
        http_status,
        route,
        headers,
        remove_headers,
    })
}

/// Why a decision may not touch a header: ecluse frames what it sends.
pub fn reserved_header(name: &str) -> String {
    format!("header {name:?} is reserved: a decision may add or remove end-to-end headers only, never Host, framing (Content-Length, Transfer-Encoding, Content-Encoding, Expect) or hop-by-hop headers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &str) -> Vec<regorus::Value> {
        p.split('.')
            .filter(|s| !s.is_empty())
            .map(regorus::Value::from)
            .collect()
    }

    #[test]
    fn a_missed_decision_is_evaluated_on_the_paths_the_policy_reads() {
        let input = rego::to_value(&json!({
            "version": 1,
            "data": {"pii": {"iban": 1}, "scan": "complete", "retention": null},
            "destination": {"host": "api.openai.com", "entity": {"name": "OpenAI", "cloud_act": true}},
            "request": {"operation": "chat", "path": "/v1/chat/completions"},
        }))
        .unwrap();
        let cases: &[(&[&str], Option<serde_json::Value>)] = &[
            (
                &["destination.host"],
                Some(json!({"destination": {"host": "api.openai.com"}})),
            ),
            // A path inside another's value adds nothing; the order of the
            // paths does not matter, nor do repeats.
            (
                &[
                    "data.pii.iban",
                    "data",
                    "destination.entity.cloud_act",
                    "data",
                ],
                Some(json!({
                    "data": {"pii": {"iban": 1}, "scan": "complete", "retention": null},
                    "destination": {"entity": {"cloud_act": true}},
                })),
            ),
            // Missing fields stay missing; null stays null.
            (
                &["request.model", "data.retention", "version"],
                Some(json!({"data": {"retention": null}, "version": 1})),
            ),
            // The whole input: built as before, not from the key.
            (&["", "data"], None),
        ];
        for (paths, expected) in cases {
            let cache = DecisionCache::new(paths.iter().map(|p| path(p)).collect());
            let key = cache.key(&input);
            let built = cache.input_from_key(&key);
            let expected = expected.as_ref().map(|e| rego::to_value(e).unwrap());
            assert_eq!(built, expected, "{paths:?}");
        }
    }

    #[test]
    fn decision_documents_are_validated() {
        let ok = parse_decision(
            &json!({"allowed": false, "reason": "r", "rule": "x", "http_status": 451}),
        )
        .unwrap();
        assert_eq!((ok.allowed, ok.http_status), (false, 451));
        let routed =
            parse_decision(&json!({"allowed": true, "route": {"target": "mistral"}})).unwrap();
        assert_eq!(routed.route.unwrap().target, "mistral");
        for bad in [
            json!("allow"),
            json!({"allowed": "yes"}),
            json!({"reason": "no allowed field"}),
            json!({"allowed": false, "http_status": 200}),
            json!({"allowed": true, "route": {"model": "m"}}),
            json!({"allowed": true, "headers": {"bad header": "v"}}),
            json!({"allowed": true, "headers": {"x-a": 1}}),
            json!({"allowed": true, "headers": {"Host": "evil.example"}}),
            json!({"allowed": true, "headers": {"content-length": "0"}}),
            json!({"allowed": true, "headers": {"transfer-encoding": "chunked"}}),
            json!({"allowed": true, "headers": {"connection": "close"}}),
            json!({"allowed": true, "request_headers_to_remove": ["host"]}),
            json!({"allowed": true, "request_headers_to_remove": "x-a"}),
        ] {
            assert!(parse_decision(&bad).is_err(), "{bad}");
        }
        assert!(parse_connect(&json!({"action": "allow"})).is_err());
        assert!(parse_connect(&json!(["intercept"])).is_err());
    }

    /// The hot path reads decisions in regorus's form; it must accept and
    /// refuse exactly what the JSON reading does, with the same errors.
    #[test]
    fn decisions_read_in_regorus_form_equal_their_json_reading() {
        let documents = [
            json!({"allowed": false, "reason": "r", "rule": "x", "http_status": 451}),
            json!({"allowed": true, "rule": "egress.allowed", "reason": "ok", "http_status": 200, "route": null, "headers": {}}),
            json!({"allowed": true, "route": {"target": "mistral"}}),
            json!({"allowed": true, "route": {"target": "mistral", "model": "m"}}),
            json!({"allowed": true, "route": {"target": "mistral", "model": null, "extra": 1}}),
            json!({"allowed": true, "route": ["mistral", "m"]}),
            json!({"allowed": true, "route": {"target": null}}),
            json!({"allowed": true, "route": {"model": "m"}}),
            json!({"allowed": true, "route": "mistral"}),
            json!({"allowed": false, "http_status": 403.0}),
            json!({"allowed": false, "http_status": 451.5}),
            json!({"allowed": false, "http_status": -1}),
            json!({"allowed": false, "http_status": 200}),
            json!({"allowed": true, "http_status": 70000}),
            json!({"allowed": true, "http_status": "200"}),
            json!({"allowed": true, "reason": null, "rule": null, "http_status": null}),
            json!({"allowed": true, "reason": 3}),
            json!({"allowed": "yes"}),
            json!({"reason": "no allowed field"}),
            json!({"allowed": true, "other": {"nested": [1, 2]}}),
            json!({"allowed": true, "headers": {"X-Tenant": "a", "x-b": "b"}}),
            json!({"allowed": true, "headers": {"X-A": "1", "x-a": "2"}}),
            json!({"allowed": true, "headers": {"bad header": "v"}}),
            json!({"allowed": true, "headers": {"x-a": 1}}),
            json!({"allowed": true, "headers": {"x-a": "line\nbreak"}}),
            json!({"allowed": true, "headers": {"Host": "evil.example"}}),
            json!({"allowed": true, "headers": ["x-a"]}),
            json!({"allowed": true, "request_headers_to_remove": ["X-Debug", "x-trace"]}),
            json!({"allowed": true, "request_headers_to_remove": ["host"]}),
            json!({"allowed": true, "request_headers_to_remove": [1]}),
            json!({"allowed": true, "request_headers_to_remove": "x-a"}),
            json!("allow"),
            json!(null),
            json!([{"allowed": true}]),
        ];
        for document in documents {
            // What the policy returned, read as before: through JSON.
            let value = regorus::Value::from_json_str(&document.to_string()).unwrap();
            let through_json = rego::to_json(EGRESS_RULE, &value).unwrap();
            assert_eq!(
                parse_decision_value(&value),
                parse_decision(&through_json),
                "{document}"
            );
        }
        // Shapes JSON cannot hold: a non-string key, an undefined value.
        let mut odd = regorus::Value::from_json_str(r#"{"allowed": true}"#).unwrap();
        let fields = odd.as_object_mut().unwrap();
        fields.insert(1u64.into(), "one".into());
        fields.insert("reason".into(), regorus::Value::Undefined);
        let through_json = rego::to_json(EGRESS_RULE, &odd).unwrap();
        assert_eq!(parse_decision_value(&odd), parse_decision(&through_json));
    }
}
