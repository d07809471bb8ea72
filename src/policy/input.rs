//! Building the input documents (version 1) that policies decide on.
//! Pure functions: the proxy gathers facts, these shape them.
//! Credentials never enter a document.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::authority::Authority;
use crate::classify::DataDoc;
use crate::entity::{Entity, Kind, Registry};
use crate::llm::ParsedCall;
use crate::policy::rego::{object_of, optional_number, optional_string, ToRego};

/// How the client reached the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Through CONNECT (TLS inside).
    Https,
    /// Absolute-form plain HTTP.
    Http,
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DestinationDoc {
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    pub provider: Option<String>,
    pub api: Option<String>,
    pub entity: Option<Entity>,
    pub retention: Option<RetentionDoc>,
    pub in_cluster: bool,
    pub ip_literal: bool,
    pub port_allowed: bool,
}

/// The registry's retention facts, with the default in seconds so that
/// policies compare numbers rather than parse durations.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionDoc {
    pub default: String,
    pub default_seconds: Option<u64>,
    pub zero_retention_available: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceDoc {
    pub workload: Option<String>,
    pub namespace: Option<String>,
}

/// The connect input of a connection redirected to the transparent
/// listener: a `CONNECT`'s (`destination.host` is the SNI or `Host`), plus
/// `connection`, where the client really sent it. Explicit-proxy inputs
/// have no `connection`.
#[derive(Debug, Clone, Serialize)]
pub struct RedirectedConnectInput<'a> {
    pub version: u32,
    pub stage: &'static str,
    pub destination: &'a DestinationDoc,
    pub source: &'a SourceDoc,
    pub connection: ConnectionDoc,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionDoc {
    /// Always `true` here: redirected by iptables, not sent to the proxy.
    pub transparent: bool,
    /// The address and port the client connected to (`SO_ORIGINAL_DST`);
    /// ecluse has checked that `destination.host` resolves to it.
    pub original_destination: String,
}

impl<'a> RedirectedConnectInput<'a> {
    pub fn new(
        destination: &'a DestinationDoc,
        source: &'a SourceDoc,
        original: std::net::SocketAddr,
    ) -> RedirectedConnectInput<'a> {
        RedirectedConnectInput {
            version: 1,
            stage: "connect",
            destination,
            source,
            connection: ConnectionDoc {
                transparent: true,
                original_destination: original.to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectInput {
    pub version: u32,
    pub stage: &'static str,
    pub destination: DestinationDoc,
    pub source: SourceDoc,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestDoc {
    pub method: String,
    pub path: String,
    pub api: Option<String>,
    pub operation: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    /// Shaped like an LLM API call (path or body), whatever the host.
    pub llm_shaped: bool,
    pub headers: BTreeMap<String, String>,
    pub body_bytes: usize,
    pub parse_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestInput {
    pub version: u32,
    pub stage: &'static str,
    pub destination: DestinationDoc,
    pub request: RequestDoc,
    pub data: DataDoc,
    pub source: SourceDoc,
}

/// The destination part, with the registry's facts for the host.
pub fn destination(
    registry: &Registry,
    authority: &Authority,
    scheme: Scheme,
    allowed_ports: &[u16],
) -> DestinationDoc {
    let provider = registry.lookup(&authority.host);
    DestinationDoc {
        host: authority.host.clone(),
        port: authority.port,
        scheme,
        provider: provider.map(|p| p.id.clone()),
        api: provider.map(|p| p.api.clone()),
        entity: provider.map(|p| p.entity.clone()),
        retention: provider.map(|p| RetentionDoc {
            default: p.retention.default.clone(),
            default_seconds: crate::classify::retention_seconds(&p.retention.default),
            zero_retention_available: p.retention.zero_retention_available,
        }),
        in_cluster: provider.is_some_and(|p| p.kind == Kind::InCluster),
        ip_literal: authority.ip().is_some(),
        port_allowed: allowed_ports.contains(&authority.port),
    }
}

pub fn connect_input(destination: DestinationDoc, source: SourceDoc) -> ConnectInput {
    ConnectInput {
        version: 1,
        stage: "connect",
        destination,
        source,
    }
}

pub use crate::redact::is_credential_header;

/// The request part: method, path, what the body says, credential-free headers.
pub fn request_doc<'a>(
    method: &str,
    path: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    body_bytes: usize,
    call: &ParsedCall,
) -> RequestDoc {
    let mut shown = BTreeMap::new();
    for (name, value) in headers {
        if is_credential_header(name) {
            continue;
        }
        let value = String::from_utf8_lossy(value);
        shown
            .entry(name.to_ascii_lowercase())
            .and_modify(|v: &mut String| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    RequestDoc {
        method: method.to_string(),
        path: path.to_string(),
        api: call.api.clone(),
        operation: call.operation.map(str::to_string),
        model: call.model.clone(),
        stream: call.stream,
        llm_shaped: call.llm_shaped,
        headers: shown,
        body_bytes,
        parse_error: call.parse_error.clone(),
    }
}

const REQUEST_FIELDS: [&str; 10] = [
    "method",
    "path",
    "api",
    "operation",
    "model",
    "stream",
    "llm_shaped",
    "headers",
    "body_bytes",
    "parse_error",
];

impl ToRego for RequestDoc {
    fn to_rego(&self) -> regorus::Value {
        object_of(&REQUEST_FIELDS, |name| self.field_to_rego(name))
    }

    fn field_to_rego(&self, name: &str) -> Option<regorus::Value> {
        Some(match name {
            "method" => self.method.as_str().into(),
            "path" => self.path.as_str().into(),
            "api" => optional_string(self.api.as_deref()),
            "operation" => optional_string(self.operation.as_deref()),
            "model" => optional_string(self.model.as_deref()),
            "stream" => self.stream.into(),
            "llm_shaped" => self.llm_shaped.into(),
            "headers" => self
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().into(), value.as_str().into()))
                .collect::<BTreeMap<regorus::Value, regorus::Value>>()
                .into(),
            "body_bytes" => self.body_bytes.into(),
            "parse_error" => optional_string(self.parse_error.as_deref()),
            _ => return None,
        })
    }
}

const DATA_FIELDS: [&str; 6] = [
    "declared_classification",
    "classification",
    "retention",
    "retention_max_seconds",
    "pii",
    "scan",
];

impl ToRego for DataDoc {
    fn to_rego(&self) -> regorus::Value {
        object_of(&DATA_FIELDS, |name| self.field_to_rego(name))
    }

    fn field_to_rego(&self, name: &str) -> Option<regorus::Value> {
        Some(match name {
            "declared_classification" => optional_string(self.declared_classification.as_deref()),
            "classification" => optional_string(self.classification.as_deref()),
            "retention" => optional_string(self.retention.as_deref()),
            "retention_max_seconds" => optional_number(self.retention_max_seconds),
            "pii" => self
                .pii
                .iter()
                .map(|(kind, count)| ((*kind).into(), (*count).into()))
                .collect::<BTreeMap<regorus::Value, regorus::Value>>()
                .into(),
            "scan" => scan_to_rego(&self.scan),
            _ => return None,
        })
    }
}

fn scan_to_rego(scan: &crate::classify::ScanReport) -> regorus::Value {
    if scan.complete() {
        return "complete".into();
    }
    scan.unread
        .iter()
        .map(|u| {
            let reason = serde_json::to_value(u.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            [
                ("reason", regorus::Value::from(reason.as_str())),
                ("where", u.location.as_str().into()),
                ("detail", u.detail.as_str().into()),
            ]
            .into_iter()
            .map(|(k, v)| (regorus::Value::from(k), v))
            .collect::<BTreeMap<regorus::Value, regorus::Value>>()
            .into()
        })
        .collect::<Vec<regorus::Value>>()
        .into()
}

pub fn request_input(
    destination: DestinationDoc,
    request: RequestDoc,
    data: DataDoc,
    source: SourceDoc,
) -> RequestInput {
    RequestInput {
        version: 1,
        stage: "request",
        destination,
        request,
        data,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_enter_the_input() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("Authorization", b"Bearer sk-canary-123"),
            ("content-type", b"application/json"),
            ("OpenAI-Organization", b"org-x"),
            ("x-api-key", b"canary"),
            ("X-Custom-Token", b"canary"),
            ("Cookie", b"session=canary"),
            ("x-data-classification", b"personal"),
        ];
        let call = ParsedCall::default();
        let doc = request_doc(
            "POST",
            "/v1/chat/completions",
            headers.into_iter(),
            10,
            &call,
        );
        let json = serde_json::to_string(&doc).unwrap();
        assert!(!json.contains("canary"), "{json}");
        assert!(!json.contains("org-x"), "{json}");
        assert_eq!(doc.headers["content-type"], "application/json");
        assert_eq!(doc.headers["x-data-classification"], "personal");
    }

    #[test]
    fn credential_headers_are_named_in_any_case() {
        let credentials = [
            "authorization",
            "Proxy-Authorization",
            "COOKIE",
            "set-cookie",
            "Api-Key",
            "x-goog-api-key",
            "openai-project",
            "X-Amz-Security-Token",
            "x-auth",
            "Auth",
            "x-session-TOKEN",
            "client_secret",
            "db-password",
            "x-apikey",
            "my-api-key-2",
        ];
        for name in credentials {
            assert!(is_credential_header(name), "{name}");
        }
        let others = [
            "content-type",
            "x-data-classification",
            "accept",
            "user-agent",
            "x-request-id",
            "",
            "aut",
            "tok-en",
        ];
        for name in others {
            assert!(!is_credential_header(name), "{name}");
        }
    }

    fn through_json<T: Serialize>(doc: &T) -> regorus::Value {
        crate::policy::rego::to_value(doc).unwrap()
    }

    #[test]
    fn documents_built_directly_equal_their_json_form() {
        let headers: Vec<(&str, &[u8])> = vec![
            ("content-type", b"application/json"),
            ("Accept", b"text/event-stream"),
            ("accept", b"application/json"),
            ("x-data-classification", b"personal"),
            ("user-agent", "caf\u{e9} \u{1f600}".as_bytes()),
        ];
        let parsed = ParsedCall {
            api: Some("openai".into()),
            operation: Some("chat"),
            model: Some("gpt-4o".into()),
            stream: true,
            parse_error: Some("line 1 \"quoted\"".into()),
            ..ParsedCall::default()
        };
        let full = request_doc(
            "POST",
            "/v1/chat/completions?x=1",
            headers.into_iter(),
            123_456,
            &parsed,
        );
        let empty = request_doc("GET", "/", std::iter::empty(), 0, &ParsedCall::default());
        for doc in [&full, &empty] {
            assert_eq!(doc.to_rego(), through_json(doc));
        }
        let mut data = crate::classify::declared(Some(b"personal"), Some(b"30d")).unwrap();
        data.pii.insert("email", 2);
        data.pii.insert("iban", u32::MAX);
        let partial = crate::classify::declared(Some(b"public"), None)
            .unwrap()
            .with_scan(
                crate::classify::Counts::default(),
                vec![
                    crate::classify::Unread::new(
                        crate::classify::UnreadReason::BinaryUpload,
                        "part file",
                        "audio/wav, 12 bytes",
                    ),
                    crate::classify::Unread::new(
                        crate::classify::UnreadReason::Media,
                        "data URI",
                        "image/png",
                    ),
                ],
                false,
            );
        for doc in [&data, &DataDoc::default(), &partial] {
            assert_eq!(doc.to_rego(), through_json(doc));
        }
    }

    #[test]
    fn destination_carries_the_registry_facts() {
        let registry = Registry::embedded();
        let d = destination(
            &registry,
            &Authority::new("api.openai.com", 443),
            Scheme::Https,
            &[443],
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["provider"], "openai");
        assert_eq!(v["entity"]["name"], "OpenAI OpCo, LLC");
        assert_eq!(v["entity"]["cloud_act"], true);
        assert_eq!(v["port_allowed"], true);
        let d = destination(
            &registry,
            &Authority::new("10.1.2.3", 8443),
            Scheme::Https,
            &[443],
        );
        assert!(d.ip_literal && !d.port_allowed && d.provider.is_none());
    }
}
