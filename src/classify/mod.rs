//! What a call says about its data: the classification and retention headers
//! the app declares, what a scan of the request finds, and what the scan
//! could not read. Counts only: the matched text never leaves this module.

pub mod body;
pub mod detect;

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use crate::reply::ProxyError;
use crate::units::parse_duration;
pub use body::{Unread, UnreadReason};
pub use detect::{scan_text, Counts};

pub const CLASSIFICATION_HEADER: &str = "x-data-classification";
pub const RETENTION_HEADER: &str = "x-data-retention";

/// Headers whose values HTTP, tracing or the SDKs define and which carry
/// nothing of the app's own: not scanned, so that a date, a length or a
/// runtime version is never read as personal data.
const STRUCTURAL_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "accept",
    "accept-encoding",
    "connection",
    "te",
    "expect",
    "date",
    "traceparent",
    "tracestate",
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "x-amz-date",
    "x-amz-content-sha256",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
    CLASSIFICATION_HEADER,
    RETENTION_HEADER,
];

/// The OpenAI, Anthropic and other Stainless-built SDKs describe their
/// platform in these (`x-stainless-os`, `-runtime-version`, ...).
const STRUCTURAL_HEADER_PREFIX: &str = "x-stainless-";

/// Personal data in what a call carries besides its body: the path and the
/// query's parameters (percent-decoded) and the header values. A body scan
/// alone would let `?user=jane@example.com` or `x-user-email: ...` reach the
/// provider unread. Credentials are never read (secrets stay out of every
/// scan, log and record), nor headers whose values the protocol defines.
pub fn scan_call_metadata<'a>(
    path_and_query: &str,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Counts {
    let mut counts = Counts::default();
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    scan_text(
        &percent_encoding::percent_decode_str(path).decode_utf8_lossy(),
        &mut counts,
    );
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !crate::redact::is_credential_param(&name) {
            scan_text(&name, &mut counts);
            scan_text(&value, &mut counts);
        }
    }
    for (name, value) in headers {
        let structural = STRUCTURAL_HEADERS
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
            || name
                .get(..STRUCTURAL_HEADER_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(STRUCTURAL_HEADER_PREFIX));
        if !structural && !crate::redact::is_credential_header(name) {
            scan_text(&String::from_utf8_lossy(value), &mut counts);
        }
    }
    counts
}

/// From the laxest to the strictest: the order decides which of several
/// declared values wins.
const CLASSIFICATIONS: &[&str] = &[
    "public",
    "internal",
    "confidential",
    "personal",
    "special-category",
];

/// What the scan found personal data makes a call at least.
const DETECTED_PERSONAL: &str = "personal";

/// The `data` part of the policy input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataDoc {
    /// What the app declared (the strictest of its values), or null.
    pub declared_classification: Option<String>,
    /// What the default policies decide on: the strictest of declared and
    /// detected, or the declaration alone where the organisation trusts it.
    pub classification: Option<String>,
    pub retention: Option<String>,
    /// `retention` as seconds: 0 for `zero`, the duration's length, or null.
    pub retention_max_seconds: Option<u64>,
    /// Counts of personal data found in the request, by kind.
    pub pii: BTreeMap<&'static str, u32>,
    /// `"complete"`, or the parts of the body the scan could not read.
    pub scan: ScanReport,
}

/// What the scan left unread; empty when it read everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub unread: Vec<Unread>,
}

impl ScanReport {
    pub fn complete(&self) -> bool {
        self.unread.is_empty()
    }
}

impl Serialize for ScanReport {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.complete() {
            s.serialize_str("complete")
        } else {
            self.unread.serialize(s)
        }
    }
}

impl DataDoc {
    /// Adds what the scan of the body found and settles the classification
    /// the policies decide on.
    pub fn with_scan(mut self, pii: Counts, unread: Vec<Unread>, trust_declared: bool) -> DataDoc {
        let detected = (!pii.is_empty()).then_some(DETECTED_PERSONAL);
        self.classification = if trust_declared && self.declared_classification.is_some() {
            self.declared_classification.clone()
        } else {
            strictest(self.declared_classification.as_deref(), detected).map(str::to_string)
        };
        self.pii = pii.into_map();
        self.scan = ScanReport { unread };
        self
    }
}

fn rank(classification: &str) -> usize {
    CLASSIFICATIONS
        .iter()
        .position(|c| *c == classification)
        .unwrap_or(CLASSIFICATIONS.len())
}

fn strictest<'a>(a: Option<&'a str>, b: Option<&'a str>) -> Option<&'a str> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if rank(b) > rank(a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// Reads the two headers, each at most once; see [`declared_values`].
pub fn declared(
    classification: Option<&[u8]>,
    retention: Option<&[u8]>,
) -> Result<DataDoc, ProxyError> {
    declared_values(classification, retention)
}

/// Reads every value of the two headers (repeated headers, and lists within
/// one value): several values resolve to the strictest, so that adding a
/// header can only tighten what a call may do. An invalid value is a 400
/// naming the header and what it accepts.
pub fn declared_values<'a>(
    classifications: impl IntoIterator<Item = &'a [u8]>,
    retentions: impl IntoIterator<Item = &'a [u8]>,
) -> Result<DataDoc, ProxyError> {
    let mut doc = DataDoc::default();
    for raw in classifications {
        for value in list_items(raw) {
            if !CLASSIFICATIONS.contains(&value.as_str()) {
                return Err(ProxyError::InvalidHeader {
                    header: CLASSIFICATION_HEADER,
                    value: truncate(&value),
                    allowed: "public, internal, confidential, personal, special-category",
                });
            }
            let current = doc.declared_classification.take();
            doc.declared_classification =
                strictest(current.as_deref(), Some(value.as_str())).map(str::to_string);
        }
    }
    doc.classification = doc.declared_classification.clone();
    // The strictest retention: zero, then the shortest duration, then none.
    let mut strictest_retention: Option<(String, Option<u64>)> = None;
    for raw in retentions {
        for value in list_items(raw) {
            let seconds = match value.as_str() {
                "none" => None,
                "zero" => Some(0),
                other => Some(parse_retention(other).ok_or_else(|| {
                    ProxyError::InvalidHeader {
                        header: RETENTION_HEADER,
                        value: truncate(&value),
                        allowed:
                            "none (no constraint), zero (no retention), or a duration such as 30d, 12h",
                    }
                })?),
            };
            let stricter = match &strictest_retention {
                None => true,
                Some((_, current)) => match (seconds, current) {
                    (Some(_), None) => true,
                    (Some(new), Some(old)) => new < *old,
                    (None, _) => false,
                },
            };
            if stricter {
                strictest_retention = Some((value, seconds));
            }
        }
    }
    if let Some((value, seconds)) = strictest_retention {
        doc.retention = Some(value);
        doc.retention_max_seconds = seconds;
    }
    Ok(doc)
}

/// The comma-separated items of one header value, trimmed and lower-cased;
/// an empty value is one empty item, so that it is refused as invalid.
fn list_items(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let items: Vec<String> = text
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    if items.is_empty() {
        vec![String::new()]
    } else {
        items
    }
}

fn parse_retention(text: &str) -> Option<u64> {
    if !text.chars().next()?.is_ascii_digit() {
        return None;
    }
    if !["s", "m", "h", "d"].iter().any(|u| text.ends_with(u)) || text.ends_with("ms") {
        return None;
    }
    parse_duration(text).ok().map(|d| d.as_secs())
}

/// Seconds of a registry retention fact (`30d`, `24h`, `none`); `None` when
/// the provider does not publish it.
pub fn retention_seconds(fact: &str) -> Option<u64> {
    match fact {
        "none" => Some(0),
        other => parse_retention(other),
    }
}

fn truncate(value: &str) -> String {
    value.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_outside_the_body_is_counted() {
        let sdk_headers: &[(&str, &[u8])] = &[
            ("host", b"api.openai.com"),
            ("content-type", b"application/json"),
            ("content-length", b"1712345678"),
            ("accept", b"application/json"),
            ("user-agent", b"OpenAI/Python 1.54.4"),
            ("x-stainless-os", b"Linux"),
            ("x-stainless-runtime-version", b"3.11.2"),
            ("x-stainless-retry-count", b"0"),
            ("x-stainless-timeout", b"600"),
            ("date", b"Sun, 06 Dec 2026 11:45:00 GMT"),
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", b"550e8400-e29b-41d4-a716-446655440000"),
            (
                "idempotency-key",
                b"stainless-python-retry-2b7c5a2e-8f8b-4d7e-9a3e-1f2d3c4b5a69",
            ),
            ("x-amz-date", b"20261206T114500Z"),
            ("anthropic-version", b"2023-06-01"),
            ("x-data-classification", b"internal"),
        ];
        let none = Counts::default();
        let email = Counts {
            email: 1,
            ..Counts::default()
        };
        type Headers<'a> = Vec<(&'a str, &'a [u8])>;
        let cases: Vec<(&str, Headers, Counts)> = vec![
            ("/v1/chat/completions", sdk_headers.to_vec(), none.clone()),
            (
                "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01",
                vec![],
                none.clone(),
            ),
            (
                "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke",
                vec![],
                none.clone(),
            ),
            (
                "/v1/chat/completions?user=jane.doe%40example.com",
                vec![],
                email.clone(),
            ),
            (
                "/v1/chat/completions?note=write+to+jane.doe@example.com",
                vec![],
                email.clone(),
            ),
            (
                "/v1/files/jane.doe%40example.com/content",
                vec![],
                email.clone(),
            ),
            ("/v1/x?jane.doe%40example.com=1", vec![], email.clone()),
            // Credentials are never read, whatever they look like.
            (
                "/v1beta/models/g:generateContent?key=jane.doe%40example.com",
                vec![],
                none.clone(),
            ),
            (
                "/v1/chat/completions",
                vec![("x-user-email", b"jane.doe@example.com".as_slice())],
                email.clone(),
            ),
            (
                "/v1/chat/completions",
                vec![("Helicone-User-Id", b"jane.doe@example.com".as_slice())],
                email.clone(),
            ),
            (
                "/v1/chat/completions",
                vec![("x-caller", b"IBAN DE89 3704 0044 0532 0130 00".as_slice())],
                Counts {
                    iban: 1,
                    ..Counts::default()
                },
            ),
            (
                "/v1/chat/completions",
                vec![
                    ("authorization", b"Bearer jane.doe@example.com".as_slice()),
                    ("x-api-key", b"jane.doe@example.com".as_slice()),
                    ("cookie", b"who=jane.doe@example.com".as_slice()),
                ],
                none.clone(),
            ),
            // A value that is not UTF-8 is read, not refused or panicked on.
            (
                "/v1/chat/completions",
                vec![("x-note", b"caf\xe9 jane.doe@example.com".as_slice())],
                email.clone(),
            ),
        ];
        for (path, headers, expected) in cases {
            let found = scan_call_metadata(path, headers.iter().copied());
            assert_eq!(found, expected, "{path} {headers:?}");
        }
    }

    #[test]
    fn headers() {
        let d = declared(Some(b"Personal"), Some(b"30d")).unwrap();
        assert_eq!(d.classification.as_deref(), Some("personal"));
        assert_eq!(d.retention_max_seconds, Some(30 * 86400));
        let d = declared(None, Some(b"zero")).unwrap();
        assert_eq!(d.retention_max_seconds, Some(0));
        let d = declared(None, Some(b"none")).unwrap();
        assert_eq!(
            (d.retention.as_deref(), d.retention_max_seconds),
            (Some("none"), None)
        );
        let err = declared(Some(b"secret"), None).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("x-data-classification"));
        assert!(err.to_string().contains("special-category"));
        for bad in [&b"forever"[..], b"30", b"-1d", b"10ms"] {
            let err = declared(None, Some(bad)).unwrap_err();
            assert!(err.to_string().contains("x-data-retention"), "{err}");
        }
    }

    #[test]
    fn several_values_resolve_to_the_strictest() {
        /// (classification values, retention values, classification, retention, seconds)
        type Case<'a> = (
            &'a [&'a [u8]],
            &'a [&'a [u8]],
            Option<&'a str>,
            Option<&'a str>,
            Option<u64>,
        );
        let cases: &[Case] = &[
            (&[b"public", b"personal"], &[], Some("personal"), None, None),
            (&[b"personal", b"public"], &[], Some("personal"), None, None),
            (
                &[b"public, special-category"],
                &[],
                Some("special-category"),
                None,
                None,
            ),
            (
                &[b"internal", b"CONFIDENTIAL"],
                &[],
                Some("confidential"),
                None,
                None,
            ),
            (&[], &[b"none", b"30d"], None, Some("30d"), Some(30 * 86400)),
            (&[], &[b"30d", b"1h"], None, Some("1h"), Some(3600)),
            (&[], &[b"1h, zero"], None, Some("zero"), Some(0)),
            (&[], &[b"zero", b"none"], None, Some("zero"), Some(0)),
            (&[], &[b"none"], None, Some("none"), None),
        ];
        for (classes, retentions, class, retention, seconds) in cases {
            let d = declared_values(classes.iter().copied(), retentions.iter().copied()).unwrap();
            assert_eq!(d.declared_classification.as_deref(), *class, "{classes:?}");
            assert_eq!(d.classification.as_deref(), *class);
            assert_eq!(d.retention.as_deref(), *retention, "{retentions:?}");
            assert_eq!(d.retention_max_seconds, *seconds, "{retentions:?}");
        }
        // One bad value among good ones is still refused.
        for bad in [&[&b"public"[..], b"secret"][..], &[b" , "], &[b""]] {
            let err = declared_values(bad.iter().copied(), std::iter::empty()).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn detected_personal_data_raises_a_declaration_unless_it_is_trusted() {
        let found = Counts {
            iban: 1,
            ..Counts::default()
        };
        let cases = [
            (Some(&b"public"[..]), true, false, Some("personal")),
            (Some(b"internal"), true, false, Some("personal")),
            (
                Some(b"special-category"),
                true,
                false,
                Some("special-category"),
            ),
            (Some(b"public"), false, false, Some("public")),
            (None, true, false, Some("personal")),
            (None, false, false, None),
            (Some(b"public"), true, true, Some("public")),
            (None, true, true, Some("personal")),
        ];
        for (declared_value, pii, trust, want) in cases {
            let counts = if pii {
                found.clone()
            } else {
                Counts::default()
            };
            let d = declared(declared_value, None)
                .unwrap()
                .with_scan(counts, Vec::new(), trust);
            assert_eq!(
                d.classification.as_deref(),
                want,
                "{declared_value:?} {pii} {trust}"
            );
            assert_eq!(
                d.declared_classification.as_deref(),
                declared_value.map(|v| std::str::from_utf8(v).unwrap())
            );
        }
    }

    #[test]
    fn scan_report_is_complete_or_lists_what_was_not_read() {
        let complete = DataDoc::default();
        assert_eq!(serde_json::to_value(&complete).unwrap()["scan"], "complete");
        let partial = DataDoc::default().with_scan(
            Counts::default(),
            vec![Unread::new(
                UnreadReason::BinaryUpload,
                "part file",
                "audio/wav",
            )],
            false,
        );
        let v = serde_json::to_value(&partial).unwrap();
        assert_eq!(v["scan"][0]["reason"], "binary_upload");
        assert_eq!(v["scan"][0]["where"], "part file");
    }

    #[test]
    fn registry_retention_facts() {
        assert_eq!(retention_seconds("30d"), Some(2_592_000));
        assert_eq!(retention_seconds("24h"), Some(86_400));
        assert_eq!(retention_seconds("none"), Some(0));
        assert_eq!(retention_seconds("unspecified"), None);
    }
}
