//! The one place where a refused or failed call becomes an HTTP answer.
//!
//! Every error a client can get from ecluse is a [`ProxyError`]; each variant
//! has one status and one `code`. It is rendered in the error shape of the
//! API the app called ([`CallerApi`]), so that the app's SDK raises the error
//! it would raise for that provider, with ecluse's reason as its message. A
//! rerouted target's error is put in the same shapes ([`Fault`]).

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::listener::connect::HeadError;
use crate::upstream::resolve::ResolveError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// A policy decision refused the call.
    #[error("{reason}")]
    Denied {
        reason: String,
        rule: String,
        status: u16,
        decision_id: Option<String>,
    },
    /// The request is not valid HTTP or breaks framing rules.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// A header ecluse reads has a value outside what it accepts.
    #[error("invalid {header} header {value:?}: allowed values are {allowed}")]
    InvalidHeader {
        header: &'static str,
        value: String,
        allowed: &'static str,
    },
    /// The request's Host/:authority names another host than the tunnel's CONNECT.
    #[error("request for {requested} inside a tunnel to {tunnel}")]
    Misdirected { requested: String, tunnel: String },
    /// The request head exceeds the configured limits.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The request body exceeds `limits.max_request_body`.
    #[error("request body larger than the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    /// The body decodes to more than the limits allow (size or ratio).
    #[error("{0}")]
    DecodedTooLarge(String),
    /// The client was too slow sending its request head or body.
    #[error("client did not send its request within {0:?}")]
    ClientTimeout(std::time::Duration),
    /// The destination is refused before any packet is sent to it.
    #[error("{0}")]
    ForbiddenDestination(String),
    /// The destination name does not resolve.
    #[error("{0}")]
    Unresolvable(String),
    /// Connecting to or talking with the upstream failed.
    #[error("upstream {host}: {detail}")]
    Upstream { host: String, detail: String },
    /// The upstream's certificate did not verify.
    #[error("upstream {host} presented a certificate that does not verify: {detail}")]
    UpstreamCertificate { host: String, detail: String },
    /// The upstream did not answer in time.
    #[error("upstream {host} did not {phase} within {timeout:?}")]
    UpstreamTimeout {
        host: String,
        phase: &'static str,
        timeout: std::time::Duration,
    },
    /// Too many client connections at once.
    #[error("ecluse is at its limit of {limit} concurrent connections")]
    Overloaded { limit: usize },
    /// ecluse is shutting down or not ready to decide.
    #[error("{0}")]
    Unavailable(String),
    /// The request is sent to ecluse as if it were the server.
    #[error("{0}")]
    NotAProxyRequest(String),
}

impl ProxyError {
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::Denied { status, .. } => *status,
            ProxyError::BadRequest(_) | ProxyError::InvalidHeader { .. } => 400,
            ProxyError::NotAProxyRequest(_) => 400,
            ProxyError::Misdirected { .. } => 421,
            ProxyError::HeadersTooLarge(_) => 431,
            ProxyError::BodyTooLarge { .. } | ProxyError::DecodedTooLarge(_) => 413,
            ProxyError::ClientTimeout(_) => 408,
            ProxyError::ForbiddenDestination(_) => 403,
            ProxyError::Unresolvable(_) => 502,
            ProxyError::Upstream { .. } | ProxyError::UpstreamCertificate { .. } => 502,
            ProxyError::UpstreamTimeout { .. } => 504,
            ProxyError::Overloaded { .. } | ProxyError::Unavailable(_) => 503,
        }
    }

    /// A stable machine-readable code, also the metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Denied { .. } => "policy_denied",
            ProxyError::BadRequest(_) => "malformed_request",
            ProxyError::InvalidHeader { .. } => "invalid_header",
            ProxyError::NotAProxyRequest(_) => "not_a_proxy_request",
            ProxyError::Misdirected { .. } => "misdirected_request",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::BodyTooLarge { .. } | ProxyError::DecodedTooLarge(_) => "body_too_large",
            ProxyError::ClientTimeout(_) => "client_timeout",
            ProxyError::ForbiddenDestination(_) => "destination_forbidden",
            ProxyError::Unresolvable(_) => "destination_unresolvable",
            ProxyError::Upstream { .. } => "upstream_error",
            ProxyError::UpstreamCertificate { .. } => "upstream_certificate_invalid",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::Unavailable(_) => "unavailable",
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            403 => "permission_error",
            400 | 408 | 413 | 421 | 431 => "invalid_request_error",
            503 => "service_unavailable",
            _ => "upstream_error",
        }
    }

    /// Whether the client connection may carry another request afterwards.
    /// Framing and size errors leave unread bytes behind: close.
    pub fn keeps_connection(&self) -> bool {
        !matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::HeadersTooLarge(_)
                | ProxyError::BodyTooLarge { .. }
                | ProxyError::ClientTimeout(_)
                | ProxyError::NotAProxyRequest(_)
        )
    }

    /// The JSON body of the answer in OpenAI's shape.
    pub fn body(&self) -> Bytes {
        self.render(CallerApi::OpenAi).body
    }

    /// The answer in the error shape of the API the app called.
    pub fn render(&self, api: CallerApi) -> Rendered {
        let (reason, rule, decision_id) = match self {
            ProxyError::Denied {
                reason,
                rule,
                decision_id,
                ..
            } => (
                Some(reason.as_str()),
                Some(rule.as_str()),
                decision_id.as_deref(),
            ),
            _ => (None, None, None),
        };
        let param = match self {
            ProxyError::InvalidHeader { header, .. } => Some((*header).to_string()),
            _ => None,
        };
        Fault {
            status: self.status(),
            message: format!("ecluse: {self}"),
            openai_type: self.kind().to_string(),
            code: Value::String(self.code().to_string()),
            param,
            ecluse: Some(EcluseFacts {
                code: self.code(),
                reason,
                rule,
                decision_id,
            }),
        }
        .render(api)
    }

    /// A complete HTTP/1.1 response, for answers written before any HTTP
    /// session exists (the CONNECT front end).
    pub fn to_h1_response(&self) -> Vec<u8> {
        let body = self.body();
        let reason = http::StatusCode::from_u16(self.status())
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            self.status(),
            reason,
            body.len()
        );
        if let ProxyError::Denied {
            decision_id: Some(id),
            ..
        } = self
        {
            out.push_str(&format!("x-ecluse-decision-id: {id}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }
}

/// The API an app called, whose error shape ecluse answers in. Named after
/// the `api` field of the provider registry and of [`crate::llm::ParsedCall`];
/// any other API (OpenAI-compatible ones above all) gets OpenAI's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallerApi {
    #[default]
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
    Cohere,
}

impl CallerApi {
    pub fn from_api(api: Option<&str>) -> CallerApi {
        match api {
            Some("anthropic") => CallerApi::Anthropic,
            Some("gemini") => CallerApi::Gemini,
            Some("bedrock") => CallerApi::Bedrock,
            Some("cohere") => CallerApi::Cohere,
            _ => CallerApi::OpenAi,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CallerApi::OpenAi => "openai",
            CallerApi::Anthropic => "anthropic",
            CallerApi::Gemini => "gemini",
            CallerApi::Bedrock => "bedrock",
            CallerApi::Cohere => "cohere",
        }
    }
}

/// The API a call is answered in when it was refused before its body was
/// read: the registry's `api` for its host, else the API its path looks
/// like (a host the registry does not know), else OpenAI's.
pub fn caller_before_read(registry_api: Option<&str>, method: &str, path: &str) -> CallerApi {
    if registry_api.is_some() {
        return CallerApi::from_api(registry_api);
    }
    let guessed = crate::llm::parse_request(None, method, path, b"");
    CallerApi::from_api(guessed.api.as_deref())
}

/// An error answer, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers the API's clients read besides the body (`x-amzn-ErrorType`,
    /// a request id).
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// What ecluse adds to an error it made itself.
#[derive(Debug, Clone, Copy)]
pub struct EcluseFacts<'a> {
    /// [`ProxyError::code`].
    pub code: &'static str,
    pub reason: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub decision_id: Option<&'a str>,
}

/// An error in neutral terms, before it takes an API's shape: one of
/// ecluse's own, or a rerouted target's.
#[derive(Debug, Clone)]
pub struct Fault<'a> {
    pub status: u16,
    pub message: String,
    /// OpenAI's `error.type`.
    pub openai_type: String,
    /// OpenAI's `error.code`: ecluse's code, or the target's (often null).
    pub code: Value,
    /// The offending field, when known.
    pub param: Option<String>,
    /// Set for errors ecluse made itself.
    pub ecluse: Option<EcluseFacts<'a>>,
}

#[derive(Serialize)]
struct OpenAiEnvelope<'a> {
    error: OpenAiBody<'a>,
}

/// Field order as OpenAI's own errors; ecluse's facts follow.
#[derive(Serialize)]
struct OpenAiBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a Value,
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
}

impl Fault<'_> {
    pub fn render(&self, api: CallerApi) -> Rendered {
        let mut headers = Vec::new();
        let decision_id = self.ecluse.and_then(|e| e.decision_id);
        let body = match api {
            CallerApi::OpenAi => {
                let envelope = OpenAiEnvelope {
                    error: OpenAiBody {
                        message: &self.message,
                        kind: &self.openai_type,
                        code: &self.code,
                        param: self.param.as_deref(),
                        reason: self.ecluse.and_then(|e| e.reason),
                        rule: self.ecluse.and_then(|e| e.rule),
                        decision_id,
                    },
                };
                // Serialising strings and JSON values cannot fail.
                serde_json::to_vec(&envelope).unwrap_or_default()
            }
            CallerApi::Anthropic => {
                // The SDK appends `request-id` to its exception's message.
                if let Some(id) = decision_id {
                    headers.push(("request-id", id.to_string()));
                }
                let mut error = Map::new();
                error.insert("type".into(), anthropic_type(self.status).into());
                error.insert("message".into(), self.message.as_str().into());
                self.extras(&mut error, true);
                to_vec(json!({"type": "error", "error": error}))
            }
            CallerApi::Gemini => {
                let mut details = Vec::new();
                if let Some(param) = &self.param {
                    details.push(json!({
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": [{"field": param, "description": self.message}],
                    }));
                }
                let mut metadata = Map::new();
                if let Some(e) = self.ecluse {
                    metadata.insert("code".into(), e.code.into());
                    for (k, v) in [("rule", e.rule), ("decision_id", e.decision_id)] {
                        if let Some(v) = v {
                            metadata.insert(k.into(), v.into());
                        }
                    }
                } else {
                    metadata.insert("type".into(), self.openai_type.as_str().into());
                    if let Some(code) = code_text(&self.code) {
                        metadata.insert("code".into(), code.into());
                    }
                }
                let reason = match self.ecluse {
                    Some(e) => e.code.to_ascii_uppercase(),
                    None => "TARGET_ERROR".to_string(),
                };
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": "ecluse",
                    "metadata": metadata,
                }));
                to_vec(json!({"error": {
                    "code": self.status,
                    "message": self.message,
                    "status": gemini_status(self.status),
                    "details": details,
                }}))
            }
            CallerApi::Bedrock => {
                headers.push(("x-amzn-ErrorType", bedrock_type(self.status).to_string()));
                if let Some(id) = decision_id {
                    headers.push(("x-amzn-RequestId", id.to_string()));
                }
                let mut body = Map::new();
                body.insert("message".into(), self.message.as_str().into());
                // botocore takes `code` from the body when the header is
                // missing: ecluse's own code goes under another name.
                self.extras(&mut body, false);
                to_vec(Value::Object(body))
            }
            CallerApi::Cohere => {
                let mut body = Map::new();
                body.insert("message".into(), self.message.as_str().into());
                self.extras(&mut body, true);
                to_vec(Value::Object(body))
            }
        };
        Rendered {
            status: self.status,
            content_type: "application/json",
            headers,
            body: Bytes::from(body),
        }
    }

    /// ecluse's facts (or the target's code and field) as extra fields.
    fn extras(&self, into: &mut Map<String, Value>, code_field: bool) {
        let code_key = if code_field { "code" } else { "ecluse_code" };
        match self.ecluse {
            Some(e) => {
                into.insert(code_key.into(), e.code.into());
                for (k, v) in [
                    ("reason", e.reason),
                    ("rule", e.rule),
                    ("decision_id", e.decision_id),
                ] {
                    if let Some(v) = v {
                        into.insert(k.into(), v.into());
                    }
                }
            }
            None => {
                if let (Some(code), true) = (code_text(&self.code), code_field) {
                    into.insert("code".into(), code.into());
                }
            }
        }
        if let Some(param) = &self.param {
            into.insert("param".into(), param.as_str().into());
        }
    }
}

fn to_vec(v: Value) -> Vec<u8> {
    serde_json::to_vec(&v).unwrap_or_default()
}

fn code_text(code: &Value) -> Option<String> {
    match code {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Anthropic's `error.type` per status (docs.anthropic.com, "Errors").
pub fn anthropic_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The canonical `google.rpc.Code` name for an HTTP status (the mapping in
/// google/rpc/code.proto, read backwards).
pub fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 408 | 413 | 421 | 422 | 431 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        s if s >= 400 => "FAILED_PRECONDITION",
        _ => "UNKNOWN",
    }
}

/// The Bedrock Runtime error (`x-amzn-ErrorType`) for an HTTP status, as
/// the service model declares them (botocore's `bedrock-runtime` model).
pub fn bedrock_type(status: u16) -> &'static str {
    match status {
        401 => "UnrecognizedClientException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 | 504 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    }
}

impl From<HeadError> for ProxyError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge { .. } | HeadError::TooManyFields { .. } => {
                ProxyError::HeadersTooLarge(e.to_string())
            }
            HeadError::Malformed(_) | HeadError::BadAuthority { .. } => {
                ProxyError::BadRequest(e.to_string())
            }
        }
    }
}

impl From<ResolveError> for ProxyError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Restricted { .. } | ResolveError::Loop { .. } => {
                ProxyError::ForbiddenDestination(e.to_string())
            }
            ResolveError::NotFound { .. } => ProxyError::Unresolvable(e.to_string()),
            ResolveError::Timeout { ref host, timeout } => ProxyError::UpstreamTimeout {
                host: host.clone(),
                phase: "resolve",
                timeout,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let e = ProxyError::Denied {
            reason: "personal data may not go to OpenAI OpCo, LLC (US)".into(),
            rule: "personal_data_cloud_act".into(),
            status: 403,
            decision_id: Some("d-1".into()),
        };
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert_eq!(v["error"]["code"], "policy_denied");
        assert_eq!(v["error"]["decision_id"], "d-1");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("personal data"));
        let raw = String::from_utf8(e.to_h1_response()).unwrap();
        assert!(raw.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(raw.contains("x-ecluse-decision-id: d-1\r\n"));
    }

    #[test]
    fn caller_apis_by_registry_name() {
        for (api, want) in [
            (Some("openai"), CallerApi::OpenAi),
            (Some("anthropic"), CallerApi::Anthropic),
            (Some("gemini"), CallerApi::Gemini),
            (Some("bedrock"), CallerApi::Bedrock),
            (Some("cohere"), CallerApi::Cohere),
            (Some("aleph_alpha"), CallerApi::OpenAi),
            (Some("other"), CallerApi::OpenAi),
            (None, CallerApi::OpenAi),
        ] {
            assert_eq!(CallerApi::from_api(api), want, "{api:?}");
            if want != CallerApi::OpenAi {
                assert_eq!(Some(want.name()), api);
            }
        }
    }

    #[test]
    fn callers_refused_before_their_body_was_read() {
        let table: &[(Option<&str>, &str, &str, CallerApi)] = &[
            (
                Some("bedrock"),
                "POST",
                "/model/m/converse",
                CallerApi::Bedrock,
            ),
            // The registry's API wins over the path's look.
            (Some("openai"), "POST", "/v1/messages", CallerApi::OpenAi),
            (Some("anthropic"), "GET", "/", CallerApi::Anthropic),
            (None, "POST", "/v1/messages", CallerApi::Anthropic),
            (
                None,
                "POST",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                CallerApi::Gemini,
            ),
            (
                None,
                "POST",
                "/model/anthropic.claude-v2%3A1/invoke",
                CallerApi::Bedrock,
            ),
            (None, "POST", "/v2/chat", CallerApi::Cohere),
            (None, "POST", "/v1/chat/completions", CallerApi::OpenAi),
            (None, "GET", "/healthz", CallerApi::OpenAi),
        ];
        for (registry, method, path, want) in table {
            assert_eq!(
                caller_before_read(*registry, method, path),
                *want,
                "{registry:?} {method} {path}"
            );
        }
    }

    /// (status, Anthropic type, google.rpc status, Bedrock error)
    #[test]
    fn error_names_per_status() {
        let table: &[(u16, &str, &str, &str)] = &[
            (
                400,
                "invalid_request_error",
                "INVALID_ARGUMENT",
                "ValidationException",
            ),
            (
                401,
                "authentication_error",
                "UNAUTHENTICATED",
                "UnrecognizedClientException",
            ),
            (
                403,
                "permission_error",
                "PERMISSION_DENIED",
                "AccessDeniedException",
            ),
            (
                404,
                "not_found_error",
                "NOT_FOUND",
                "ResourceNotFoundException",
            ),
            (
                408,
                "invalid_request_error",
                "INVALID_ARGUMENT",
                "ModelTimeoutException",
            ),
            (
                413,
                "request_too_large",
                "INVALID_ARGUMENT",
                "ValidationException",
            ),
            (
                421,
                "invalid_request_error",
                "INVALID_ARGUMENT",
                "ValidationException",
            ),
            (
                422,
                "invalid_request_error",
                "INVALID_ARGUMENT",
                "ValidationException",
            ),
            (
                429,
                "rate_limit_error",
                "RESOURCE_EXHAUSTED",
                "ThrottlingException",
            ),
            (
                431,
                "invalid_request_error",
                "INVALID_ARGUMENT",
                "ValidationException",
            ),
            (500, "api_error", "INTERNAL", "InternalServerException"),
            (502, "api_error", "UNAVAILABLE", "InternalServerException"),
            (
                503,
                "overloaded_error",
                "UNAVAILABLE",
                "ServiceUnavailableException",
            ),
            (
                504,
                "timeout_error",
                "DEADLINE_EXCEEDED",
                "ModelTimeoutException",
            ),
            (
                529,
                "overloaded_error",
                "INTERNAL",
                "InternalServerException",
            ),
        ];
        for (status, anthropic, gemini, bedrock) in table {
            assert_eq!(anthropic_type(*status), *anthropic, "{status}");
            assert_eq!(gemini_status(*status), *gemini, "{status}");
            assert_eq!(bedrock_type(*status), *bedrock, "{status}");
        }
    }

    /// Where each API's clients find the message and the kind of error.
    #[test]
    fn every_shape_carries_the_reason_where_its_sdk_reads_it() {
        let e = ProxyError::Denied {
            reason: "personal data may not go to Anthropic, PBC (US)".into(),
            rule: "personal_data_cloud_act".into(),
            status: 403,
            decision_id: Some("d-7".into()),
        };
        // (api, pointer to the message, pointer to the kind, kind, header)
        type Case<'a> = (
            CallerApi,
            &'a str,
            &'a str,
            Value,
            Option<(&'a str, &'a str)>,
        );
        let table: &[Case] = &[
            (
                CallerApi::OpenAi,
                "/error/message",
                "/error/type",
                json!("permission_error"),
                None,
            ),
            (
                CallerApi::Anthropic,
                "/error/message",
                "/error/type",
                json!("permission_error"),
                Some(("request-id", "d-7")),
            ),
            (
                CallerApi::Gemini,
                "/error/message",
                "/error/status",
                json!("PERMISSION_DENIED"),
                None,
            ),
            (
                CallerApi::Bedrock,
                "/message",
                "/rule",
                json!("personal_data_cloud_act"),
                Some(("x-amzn-ErrorType", "AccessDeniedException")),
            ),
            (
                CallerApi::Cohere,
                "/message",
                "/code",
                json!("policy_denied"),
                None,
            ),
        ];
        for (api, message, kind_at, kind, header) in table {
            let r = e.render(*api);
            assert_eq!(r.status, 403);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let text = v
                .pointer(message)
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(
                text.contains("personal data may not go to Anthropic"),
                "{api:?}: {v}"
            );
            assert_eq!(v.pointer(kind_at), Some(kind), "{api:?}: {v}");
            assert!(
                r.body.windows(3).any(|w| w == b"d-7"),
                "{api:?}: no decision id"
            );
            if let Some((name, value)) = header {
                assert!(
                    r.headers.iter().any(|(k, v)| k == name && v == value),
                    "{api:?}: {:?}",
                    r.headers
                );
            }
        }
        assert_eq!(e.body(), e.render(CallerApi::OpenAi).body);
    }

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::BodyTooLarge { limit: 1 }.status(), 413);
        assert_eq!(ProxyError::HeadersTooLarge("x".into()).status(), 431);
        assert_eq!(
            ProxyError::UpstreamTimeout {
                host: "h".into(),
                phase: "answer",
                timeout: std::time::Duration::from_secs(1)
            }
            .status(),
            504
        );
        assert!(!ProxyError::BodyTooLarge { limit: 1 }.keeps_connection());
    }
}
