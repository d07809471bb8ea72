//! The one builder of every request head ecluse sends upstream: as the
//! client sent it, as an inspected call allowed by policy, or rewritten for a
//! reroute target. Pure: a client head and a spec in, a head out.
//!
//! What never leaves, whatever the spec: hop-by-hop headers and the headers
//! `Connection` names (RFC 9110 7.6.1), the client's `Host`, `Content-Length`
//! and `Expect` (ecluse frames the body it sends itself). A policy decision
//! may add or remove end-to-end headers only: framing, `Host` and hop-by-hop
//! names are refused when the decision is read ([`is_reserved`]).

use std::collections::{BTreeMap, BTreeSet};

use pingora_http::RequestHeader;

use crate::authority::Authority;
use crate::classify::{CLASSIFICATION_HEADER, RETENTION_HEADER};
use crate::headers::FRAMING;
pub use crate::headers::{is_hop_by_hop, is_reserved, HOP_BY_HOP};
use crate::policy::input::is_credential_header;
use crate::reply::ProxyError;

/// How the request body will be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Read whole: `Content-Length` is its length.
    Buffered(usize),
    /// Relayed as it arrives: the client's length, else chunked.
    Streamed,
}

/// Which request is being built.
#[derive(Debug, Clone, Copy)]
pub enum Rewrite<'a> {
    /// An uninspected call, relayed as the client sent it.
    Passthrough,
    /// An inspected call allowed to its own destination: the classification
    /// headers are removed and answers are asked for uncompressed (so usage
    /// can be read), except where the client signed those headers.
    Inspected,
    /// A call rerouted to a target: every client credential and coding goes,
    /// the target's own headers and key come in.
    Reroute {
        key: Option<&'a str>,
        target_headers: &'a [(http::HeaderName, http::HeaderValue)],
    },
}

/// Everything the builder needs besides the client's head.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// Origin-form path and query to send.
    pub path: &'a str,
    pub authority: &'a Authority,
    /// The scheme's default port: `Host` names the port only when it differs.
    pub default_port: u16,
    pub body: BodyFraming,
    pub rewrite: Rewrite<'a>,
    /// What the decision adds (name -> value) and removes.
    pub add: &'a BTreeMap<String, String>,
    pub remove: &'a [String],
}

/// The upstream request head for `client` under `spec`.
pub fn build(client: &RequestHeader, spec: &Spec<'_>) -> Result<RequestHeader, ProxyError> {
    let mut out = RequestHeader::build(
        client.method.clone(),
        spec.path.as_bytes(),
        Some(client.headers.len()),
    )
    .map_err(|e| ProxyError::BadRequest(format!("request target: {e}")))?;
    let named_by_connection = connection_tokens(client);
    let signed = signed_headers(client);
    let rerouted = matches!(spec.rewrite, Rewrite::Reroute { .. });
    let inspected = matches!(spec.rewrite, Rewrite::Inspected);
    for (name, value) in client.headers.iter() {
        let lower = name.as_str();
        let dropped = is_hop_by_hop(lower)
            || FRAMING.contains(&lower)
            || named_by_connection.contains(lower)
            || (rerouted
                && (is_credential_header(lower)
                    || is_classification(lower)
                    || is_source_provider_header(lower)
                    || lower == "accept-encoding"))
            || (inspected && is_classification(lower) && !signed.contains(lower));
        // A coded body is forwarded coded; only a reroute re-serialises it.
        let keep_coding = lower == "content-encoding" && !rerouted;
        if dropped && !keep_coding {
            continue;
        }
        out.append_header(name.clone(), value.clone())
            .map_err(|e| ProxyError::BadRequest(format!("header {lower}: {e}")))?;
    }
    let host = match client.headers.get(http::header::HOST) {
        // A signed `Host` goes as signed when it names the same authority
        // (an explicit default port, other letter case).
        Some(sent) if !rerouted && signed.contains("host") && names(sent, spec) => sent.clone(),
        _ => http::HeaderValue::from_str(&host_header(spec.authority, spec.default_port))
            .map_err(|e| ProxyError::BadRequest(format!("host: {e}")))?,
    };
    out.insert_header(http::header::HOST, host)
        .map_err(|e| ProxyError::BadRequest(format!("host: {e}")))?;
    if rerouted || (inspected && !signed.contains("accept-encoding")) {
        set(&mut out, "accept-encoding", "identity")?;
    }
    frame(&mut out, client, spec.body)?;
    for name in spec.remove {
        if !is_reserved(name) {
            out.remove_header(name.as_str());
        }
    }
    for (name, value) in spec.add {
        if !is_reserved(name) {
            set(&mut out, name, value)?;
        }
    }
    if let Rewrite::Reroute {
        key,
        target_headers,
    } = spec.rewrite
    {
        for (name, value) in target_headers {
            if !is_reserved(name.as_str()) {
                let _ = out.insert_header(name.clone(), value.clone());
            }
        }
        // Last, so that nothing else can stand in for the target's key.
        if let Some(key) = key {
            let value = http::HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                ProxyError::Unavailable("the target's key is not a valid header value".into())
            })?;
            let _ = out.insert_header(http::header::AUTHORIZATION, value);
        }
    }
    Ok(out)
}

/// Headers addressed to the provider the app called (API versions, betas,
/// account and project ids): meaningless to a target, and some identify the
/// app's account elsewhere.
fn is_source_provider_header(name: &str) -> bool {
    ["anthropic-", "openai-", "x-goog-", "x-amz-", "x-amzn-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Whether a client's `Host` value names the spec's authority.
fn names(sent: &http::HeaderValue, spec: &Spec<'_>) -> bool {
    let Ok(sent) = sent.to_str() else {
        return false;
    };
    let bare = host_header(spec.authority, spec.default_port);
    let with_port = host_header(spec.authority, 0);
    sent.eq_ignore_ascii_case(&bare) || sent.eq_ignore_ascii_case(&with_port)
}

/// The headers a decision would change (remove, or set to another value)
/// although the request's signature covers them: sent changed, the call
/// fails the upstream's signature check, so the caller refuses it instead.
pub fn signed_conflicts(
    client: &RequestHeader,
    add: &BTreeMap<String, String>,
    remove: &[String],
) -> Vec<String> {
    let signed = signed_headers(client);
    if signed.is_empty() {
        return Vec::new();
    }
    let mut conflicts: BTreeSet<String> = BTreeSet::new();
    for name in remove {
        let lower = name.to_ascii_lowercase();
        if signed.contains(&lower) && client.headers.contains_key(lower.as_str()) {
            conflicts.insert(lower);
        }
    }
    for (name, value) in add {
        let lower = name.to_ascii_lowercase();
        let sent = client.headers.get(lower.as_str()).map(|v| v.as_bytes());
        if signed.contains(&lower) && sent != Some(value.as_bytes()) {
            conflicts.insert(lower);
        }
    }
    conflicts.into_iter().collect()
}

fn is_classification(name: &str) -> bool {
    name == CLASSIFICATION_HEADER || name == RETENTION_HEADER
}

fn set(out: &mut RequestHeader, name: &str, value: &str) -> Result<(), ProxyError> {
    out.insert_header(name.to_string(), value)
        .map(|_| ())
        .map_err(|e| ProxyError::BadRequest(format!("header {name}: {e}")))
}

/// `Host` for an authority: the port only when it is not the default, and
/// IPv6 literals in brackets.
pub fn host_header(authority: &Authority, default_port: u16) -> String {
    let host = if authority.host.contains(':') {
        format!("[{}]", authority.host)
    } else {
        authority.host.clone()
    };
    if authority.port == default_port {
        host
    } else {
        format!("{host}:{}", authority.port)
    }
}

/// The lower-case names the client's `Connection` headers list.
fn connection_tokens(req: &RequestHeader) -> BTreeSet<String> {
    req.headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Header names a signature covers: SigV4's and SigV4a's `SignedHeaders=`
/// (in `Authorization`, or `X-Amz-SignedHeaders` of a presigned URL) and the
/// components of HTTP Message Signatures (RFC 9421 `Signature-Input`).
/// These reach the upstream byte for byte, or the signature no longer
/// verifies.
pub fn signed_headers(req: &RequestHeader) -> BTreeSet<String> {
    let sigv4 = req
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with("AWS4-"))
        .filter_map(|v| v.split("SignedHeaders=").nth(1))
        .map(|rest| rest.split([',', ' ']).next().unwrap_or("").to_string());
    let presigned = req
        .uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| k.eq_ignore_ascii_case("X-Amz-SignedHeaders"))
        .map(|(_, v)| v.replace("%3B", ";").replace("%3b", ";"));
    let mut names: BTreeSet<String> = sigv4
        .chain(presigned)
        .flat_map(|list| {
            list.split(';')
                .map(|h| h.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|h| !h.is_empty())
        .collect();
    // `sig1=("@method" "content-digest" "x-data-classification");created=...`:
    // quoted components; derived ones (`@...`) are not headers.
    for input in req
        .headers
        .get_all("signature-input")
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for list in input.split('(').skip(1) {
            let inner = list.split(')').next().unwrap_or("");
            names.extend(
                inner
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .filter(|c| !c.starts_with('@') && !c.is_empty())
                    .map(|c| c.to_ascii_lowercase()),
            );
        }
    }
    names
}

fn frame(
    out: &mut RequestHeader,
    client: &RequestHeader,
    body: BodyFraming,
) -> Result<(), ProxyError> {
    match body {
        BodyFraming::Buffered(len) => {
            if len > 0 || method_expects_body(&client.method) {
                set(out, "content-length", &len.to_string())?;
            }
        }
        BodyFraming::Streamed => {
            let has_body = client.headers.contains_key(http::header::TRANSFER_ENCODING)
                || client.headers.contains_key(http::header::CONTENT_LENGTH);
            if let Some(cl) = client.headers.get(http::header::CONTENT_LENGTH) {
                out.insert_header(http::header::CONTENT_LENGTH, cl.clone())
                    .map_err(|e| ProxyError::BadRequest(format!("content-length: {e}")))?;
            } else if has_body || client.version == http::Version::HTTP_2 {
                set(out, "transfer-encoding", "chunked")?;
            }
        }
    }
    Ok(())
}

fn method_expects_body(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::POST | http::Method::PUT | http::Method::PATCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(extra: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build(
            "POST",
            b"https://api.openai.com/v1/chat/completions?x=1",
            None,
        )
        .unwrap();
        for (k, v) in [
            ("host", "api.openai.com"),
            ("authorization", "Bearer sk-client"),
            ("openai-organization", "org-client"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("x-data-classification", "internal"),
            ("x-data-retention", "30d"),
            ("x-app", "billing"),
            ("anthropic-version", "2023-06-01"),
            ("x-amz-date", "20261206T000000Z"),
        ]
        .iter()
        .chain(extra)
        {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn header(out: &RequestHeader, name: &str) -> Option<String> {
        out.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    const NEVER: &[&str] = &[
        "proxy-authorization",
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "transfer-encoding",
        "expect",
    ];

    /// (rewrite, authority, default port) x what must hold.
    #[test]
    fn every_kind_of_request_under_every_authority() {
        let none = BTreeMap::new();
        let target_headers = [(
            http::HeaderName::from_static("x-target"),
            http::HeaderValue::from_static("t"),
        )];
        let rewrites = [
            ("passthrough", Rewrite::Passthrough),
            ("inspected", Rewrite::Inspected),
            (
                "reroute",
                Rewrite::Reroute {
                    key: Some("target-key"),
                    target_headers: &target_headers,
                },
            ),
        ];
        let authorities = [
            (Authority::new("api.openai.com", 443), 443, "api.openai.com"),
            (
                Authority::new("vllm.llm.svc", 8000),
                80,
                "vllm.llm.svc:8000",
            ),
            (Authority::new("10.0.0.7", 443), 443, "10.0.0.7"),
            (Authority::new("fd00::7", 443), 443, "[fd00::7]"),
            (Authority::new("fd00::7", 8443), 443, "[fd00::7]:8443"),
        ];
        let req = client(&[]);
        for (kind, rewrite) in rewrites {
            for (authority, default_port, host) in &authorities {
                let spec = Spec {
                    path: "/v1/chat/completions?x=1",
                    authority,
                    default_port: *default_port,
                    body: BodyFraming::Buffered(42),
                    rewrite,
                    add: &none,
                    remove: &[],
                };
                let out = build(&req, &spec).unwrap();
                let case = format!("{kind} {authority}");
                assert_eq!(out.uri.to_string(), "/v1/chat/completions?x=1", "{case}");
                assert_eq!(header(&out, "host").as_deref(), Some(*host), "{case}");
                assert_eq!(
                    header(&out, "content-length").as_deref(),
                    Some("42"),
                    "{case}"
                );
                assert_eq!(out.headers.get_all("host").iter().count(), 1, "{case}");
                for gone in NEVER {
                    assert!(
                        !out.headers.contains_key(*gone),
                        "{case}: {gone} was forwarded"
                    );
                }
                assert_eq!(header(&out, "x-app").as_deref(), Some("billing"), "{case}");
                let (auth, class, encoding) = match kind {
                    "passthrough" => (Some("Bearer sk-client"), Some("internal"), Some("gzip")),
                    "inspected" => (Some("Bearer sk-client"), None, Some("identity")),
                    _ => (Some("Bearer target-key"), None, Some("identity")),
                };
                assert_eq!(header(&out, "authorization").as_deref(), auth, "{case}");
                assert_eq!(
                    header(&out, "x-data-classification").as_deref(),
                    class,
                    "{case}"
                );
                assert_eq!(
                    header(&out, "accept-encoding").as_deref(),
                    encoding,
                    "{case}"
                );
                if kind == "reroute" {
                    assert_eq!(header(&out, "openai-organization"), None);
                    assert_eq!(header(&out, "anthropic-version"), None);
                    assert_eq!(header(&out, "x-amz-date"), None);
                    assert_eq!(header(&out, "x-target").as_deref(), Some("t"));
                } else {
                    assert_eq!(
                        header(&out, "openai-organization").as_deref(),
                        Some("org-client")
                    );
                    assert_eq!(
                        header(&out, "anthropic-version").as_deref(),
                        Some("2023-06-01")
                    );
                }
            }
        }
    }

    #[test]
    fn decisions_add_and_remove_end_to_end_headers_only() {
        let add: BTreeMap<String, String> = [
            ("x-ecluse-reviewed", "yes"),
            ("host", "evil.example"),
            ("content-length", "0"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            (":authority", "evil.example"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let remove = vec![
            "x-app".to_string(),
            "host".to_string(),
            "content-length".to_string(),
        ];
        let authority = Authority::new("api.openai.com", 443);
        for rewrite in [
            Rewrite::Inspected,
            Rewrite::Reroute {
                key: Some("k"),
                target_headers: &[],
            },
        ] {
            let out = build(
                &client(&[]),
                &Spec {
                    path: "/v1/chat/completions",
                    authority: &authority,
                    default_port: 443,
                    body: BodyFraming::Buffered(7),
                    rewrite,
                    add: &add,
                    remove: &remove,
                },
            )
            .unwrap();
            assert_eq!(header(&out, "x-ecluse-reviewed").as_deref(), Some("yes"));
            assert_eq!(header(&out, "x-app"), None);
            assert_eq!(header(&out, "host").as_deref(), Some("api.openai.com"));
            assert_eq!(header(&out, "content-length").as_deref(), Some("7"));
            assert_eq!(header(&out, "transfer-encoding"), None);
            assert_eq!(header(&out, "connection"), None);
        }
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "te",
            "connection",
            ":path",
            "expect",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["x-ecluse-reviewed", "authorization", "openai-beta"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn signed_headers_reach_the_upstream_untouched() {
        let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIA/20261206/eu-central-1/bedrock/aws4_request, SignedHeaders=accept-encoding;content-type;host;x-amz-date;x-data-classification, Signature=abc";
        let req = client(&[("x-amz-date", "20261206T000000Z")]);
        let mut signed = req.clone();
        signed.remove_header("authorization");
        signed.append_header("authorization", sigv4).unwrap();
        assert_eq!(
            signed_headers(&signed),
            [
                "accept-encoding",
                "content-type",
                "host",
                "x-amz-date",
                "x-data-classification"
            ]
            .map(str::to_string)
            .into()
        );
        let authority = Authority::new("bedrock-runtime.eu-central-1.amazonaws.com", 443);
        let out = build(
            &signed,
            &Spec {
                path: "/model/m/converse",
                authority: &authority,
                default_port: 443,
                body: BodyFraming::Buffered(3),
                rewrite: Rewrite::Inspected,
                add: &BTreeMap::new(),
                remove: &[],
            },
        )
        .unwrap();
        assert_eq!(
            header(&out, "x-data-classification").as_deref(),
            Some("internal")
        );
        assert_eq!(header(&out, "accept-encoding").as_deref(), Some("gzip"));
        assert_eq!(header(&out, "authorization").as_deref(), Some(sigv4));
        // The retention header was not signed: it is removed as usual.
        assert_eq!(header(&out, "x-data-retention"), None);
    }

    fn sigv4(signed: &str) -> String {
        format!("AWS4-HMAC-SHA256 Credential=AKIA/20261206/us-east-1/bedrock/aws4_request, SignedHeaders={signed}, Signature=abc")
    }

    #[test]
    fn every_signature_scheme_names_its_headers() {
        // (request target, header, value, names)
        let table: &[(&str, &str, &str, &[&str])] = &[
            ("/m", "authorization", &sigv4("Host;X-Amz-Date"), &["host", "x-amz-date"]),
            (
                "/m",
                "authorization",
                "AWS4-ECDSA-P256-SHA256 Credential=A/20261206/bedrock/aws4_request, SignedHeaders=host;x-amz-region-set, Signature=1",
                &["host", "x-amz-region-set"],
            ),
            (
                "/m?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host%3Bx-data-classification&X-Amz-Signature=1",
                "x-app",
                "1",
                &["host", "x-data-classification"],
            ),
            (
                "/m",
                "signature-input",
                r#"sig1=("@method" "@authority" "content-digest" "X-Data-Classification");created=1618884473;keyid="k""#,
                &["content-digest", "x-data-classification"],
            ),
            ("/m", "authorization", "Bearer sk-x", &[]),
            ("/m", "authorization", "AWS4-HMAC-SHA256 garbage", &[]),
            ("/m", "signature-input", "sig1=(", &[]),
        ];
        for (target, name, value, want) in table {
            let mut req = RequestHeader::build("POST", target.as_bytes(), None).unwrap();
            req.append_header(*name, *value).unwrap();
            let got: Vec<String> = signed_headers(&req).into_iter().collect();
            assert_eq!(
                got,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{value}"
            );
        }
    }

    /// (Host sent, signed, Host forwarded)
    #[test]
    fn a_signed_host_goes_as_sent_when_it_names_the_authority() {
        let authority = Authority::new("bedrock-runtime.us-east-1.amazonaws.com", 443);
        let table: &[(&str, bool, &str)] = &[
            (
                "bedrock-runtime.us-east-1.amazonaws.com:443",
                true,
                "bedrock-runtime.us-east-1.amazonaws.com:443",
            ),
            (
                "Bedrock-Runtime.us-east-1.amazonaws.com",
                true,
                "Bedrock-Runtime.us-east-1.amazonaws.com",
            ),
            (
                "bedrock-runtime.us-east-1.amazonaws.com:443",
                false,
                "bedrock-runtime.us-east-1.amazonaws.com",
            ),
            // Another authority is never sent, signed or not.
            (
                "evil.example",
                true,
                "bedrock-runtime.us-east-1.amazonaws.com",
            ),
            (
                "bedrock-runtime.us-east-1.amazonaws.com:8443",
                true,
                "bedrock-runtime.us-east-1.amazonaws.com",
            ),
        ];
        for (sent, is_signed, want) in table {
            let mut req = RequestHeader::build("POST", b"/model/m/converse", None).unwrap();
            req.append_header("host", *sent).unwrap();
            let signed = if *is_signed {
                "host;x-amz-date"
            } else {
                "x-amz-date"
            };
            req.append_header("authorization", sigv4(signed)).unwrap();
            let out = build(
                &req,
                &Spec {
                    path: "/model/m/converse",
                    authority: &authority,
                    default_port: 443,
                    body: BodyFraming::Buffered(2),
                    rewrite: Rewrite::Inspected,
                    add: &BTreeMap::new(),
                    remove: &[],
                },
            )
            .unwrap();
            assert_eq!(
                header(&out, "host").as_deref(),
                Some(*want),
                "{sent} {is_signed}"
            );
        }
    }

    /// (signed, decision adds, decision removes, conflicts)
    #[test]
    fn decisions_that_would_break_a_signature_are_named() {
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a [&'a str],
            &'a [&'a str],
        );
        let table: &[Case] = &[
            ("host;x-app", &[("x-ecluse-reviewed", "yes")], &[], &[]),
            ("host;x-app", &[], &["x-app"], &["x-app"]),
            ("host;x-app", &[], &["X-App"], &["x-app"]),
            ("host;x-app", &[("x-app", "billing")], &[], &[]),
            ("host;x-app", &[("x-app", "other")], &[], &["x-app"]),
            // Signed but absent: adding it changes what was signed.
            ("host;x-tag", &[("x-tag", "1")], &["x-tag"], &["x-tag"]),
            // Unsigned headers are the decision's to change.
            ("host", &[("x-app", "other")], &["openai-organization"], &[]),
        ];
        for (signed, add, remove, want) in table {
            let mut req = client(&[]);
            req.remove_header("authorization");
            req.append_header("authorization", sigv4(signed)).unwrap();
            let add: BTreeMap<String, String> = add
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                signed_conflicts(&req, &add, &remove),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{signed} {add:?} {remove:?}"
            );
        }
        // Without a signature nothing conflicts.
        let add = [("x-app".to_string(), "other".to_string())].into();
        assert!(signed_conflicts(&client(&[]), &add, &["x-app".into()]).is_empty());
    }

    #[test]
    fn streamed_bodies_keep_the_clients_length_or_go_chunked() {
        let authority = Authority::new("example.com", 80);
        let none = BTreeMap::new();
        let spec = Spec {
            path: "/upload",
            authority: &authority,
            default_port: 80,
            body: BodyFraming::Streamed,
            rewrite: Rewrite::Passthrough,
            add: &none,
            remove: &[],
        };
        let mut with_length = RequestHeader::build("POST", b"/upload", None).unwrap();
        with_length.append_header("content-length", "5").unwrap();
        let out = build(&with_length, &spec).unwrap();
        assert_eq!(header(&out, "content-length").as_deref(), Some("5"));
        let mut chunked = RequestHeader::build("POST", b"/upload", None).unwrap();
        chunked
            .append_header("transfer-encoding", "chunked")
            .unwrap();
        let out = build(&chunked, &spec).unwrap();
        assert_eq!(
            header(&out, "transfer-encoding").as_deref(),
            Some("chunked")
        );
        let get = RequestHeader::build("GET", b"/", None).unwrap();
        let out = build(&get, &spec).unwrap();
        assert!(
            !out.headers.contains_key("transfer-encoding")
                && !out.headers.contains_key("content-length")
        );
    }
}
