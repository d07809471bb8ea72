//! Decisions: the documents policies see (`input`) and return (`decision`),
//! and the immutable [`Snapshot`] that one request decides with.

pub mod input;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::entity::Registry;
pub use input::{ConnectInput, RequestInput};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectDecision {
    pub action: ConnectAction,
    pub reason: String,
    #[serde(default)]
    pub rule: String,
}

/// Where a decision sends a call instead of its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub target: String,
    #[serde(default)]
    pub model: Option<String>,
}

/// `data.ecluse.egress.decision`: opa-envoy's fields plus `route`, `reason`, `rule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default = "default_deny_status")]
    pub http_status: u16,
    #[serde(default)]
    pub route: Option<Route>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

fn default_deny_status() -> u16 {
    403
}

/// One revision of everything a decision depends on. Requests load it once
/// from an `ArcSwap`, so a request never mixes two revisions.
#[derive(Debug)]
pub struct Snapshot {
    pub registry: Registry,
    pub revision: String,
    pub source: String,
    pub loaded_at: SystemTime,
}

impl Snapshot {
    pub fn new(registry: Registry, revision: String, source: String) -> Snapshot {
        Snapshot {
            registry,
            revision,
            source,
            loaded_at: SystemTime::now(),
        }
    }

    /// The connect-stage decision. Until Rego policies decide, the registry
    /// does: known LLM API hosts are intercepted, other hosts tunnelled, and
    /// ports or IP literals outside the configured set refused.
    pub fn decide_connect(&self, input: &ConnectInput) -> ConnectDecision {
        let d = &input.destination;
        if !d.port_allowed {
            return ConnectDecision {
                action: ConnectAction::Deny,
                reason: format!(
                    "port {} is not an allowed destination port for {}",
                    d.port, d.scheme
                ),
                rule: "connect.port_not_allowed".into(),
            };
        }
        if d.ip_literal {
            return ConnectDecision {
                action: ConnectAction::Deny,
                reason: format!(
                    "IP-literal destination {} is refused; name the host",
                    d.host
                ),
                rule: "connect.ip_literal".into(),
            };
        }
        match &d.provider {
            Some(provider) => ConnectDecision {
                action: ConnectAction::Intercept,
                reason: format!("{} is an LLM API of {provider}", d.host),
                rule: "connect.known_provider".into(),
            },
            None => ConnectDecision {
                action: ConnectAction::Tunnel,
                reason: format!("{} is not a known LLM API", d.host),
                rule: "connect.unknown_host".into(),
            },
        }
    }

    /// The request-stage decision for an intercepted call.
    pub fn decide_request(&self, input: &RequestInput) -> Decision {
        Decision {
            allowed: true,
            reason: format!(
                "{} call to {} allowed",
                input.request.operation.as_deref().unwrap_or("unrecognised"),
                input.destination.host
            ),
            rule: "egress.allow_intercepted".into(),
            http_status: 200,
            route: None,
            headers: Default::default(),
        }
    }
}
