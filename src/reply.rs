//! The one place where a refused or failed call becomes an HTTP answer.
//!
//! Every error a client can get from ecluse is a [`ProxyError`]; each variant
//! has one status and one `code`, and renders as OpenAI's error shape
//! (`{"error":{"message","type","code"}}`) so SDKs surface the reason.

use bytes::Bytes;
use serde::Serialize;

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

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    param: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
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

    /// The JSON body of the answer.
    pub fn body(&self) -> Bytes {
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
            ProxyError::InvalidHeader { header, .. } => Some(*header),
            _ => None,
        };
        let envelope = Envelope {
            error: Body {
                message: format!("ecluse: {self}"),
                kind: self.kind(),
                code: self.code(),
                param,
                reason,
                rule,
                decision_id,
            },
        };
        // Serialising plain strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
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
