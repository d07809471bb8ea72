//! Pure checks on a request head before anything is read or forwarded:
//! which destination it is for, framing, size limits and upgrades.

use pingora_http::RequestHeader;

use crate::authority::{parse_authority, Authority};
use crate::reply::ProxyError;

/// The request target when the client sent it in absolute form. pingora keeps
/// only the path in `uri` for HTTP/1 and the target as sent in `raw_path`;
/// HTTP/2 requests carry scheme and authority in `uri`.
fn absolute_target(req: &RequestHeader) -> Option<http::Uri> {
    if req.uri.scheme().is_some() {
        return Some(req.uri.clone());
    }
    let raw = req.raw_path();
    if raw.first().is_none_or(|b| *b == b'/' || *b == b'*') {
        return None;
    }
    http::Uri::try_from(raw).ok()
}

/// Where an absolute-form plain-HTTP request goes.
pub fn plain_destination(req: &RequestHeader) -> Result<Authority, ProxyError> {
    let uri = absolute_target(req).unwrap_or_default();
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(ProxyError::BadRequest(
                "https:// URLs must be sent through CONNECT (set HTTPS_PROXY)".into(),
            ))
        }
        Some(other) => {
            return Err(ProxyError::BadRequest(format!(
                "scheme {other}:// is not proxied"
            )))
        }
        None => {
            return Err(ProxyError::NotAProxyRequest(
                "ecluse is a forward proxy: send CONNECT or an absolute-form http:// request \
                 (the admin endpoints are on admin_listen)"
                    .into(),
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ProxyError::BadRequest("absolute-form URL without a host".into()))?;
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "user information in the URL is refused".into(),
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let with_port = if host.starts_with('[') {
        format!("{host}:{port}")
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    parse_authority(&with_port).map_err(|why| ProxyError::BadRequest(format!("bad host: {why}")))
}

/// The host a request inside a tunnel names: `:authority` (HTTP/2, or an
/// absolute-form URL) or `Host`.
fn requested_authority(req: &RequestHeader) -> Option<(String, Option<u16>)> {
    if let Some(auth) = absolute_target(req)
        .as_ref()
        .and_then(|u| u.authority().cloned())
    {
        return Some((auth.host().to_string(), auth.port_u16()));
    }
    let host = req.headers.get(http::header::HOST)?.to_str().ok()?;
    let parsed: http::uri::Authority = host.parse().ok()?;
    Some((parsed.host().to_string(), parsed.port_u16()))
}

/// SECURITY #5: a request inside a tunnel must be for the CONNECT host.
pub fn check_tunnel_authority(req: &RequestHeader, tunnel: &Authority) -> Result<(), ProxyError> {
    let misdirected = |requested: String| ProxyError::Misdirected {
        requested,
        tunnel: tunnel.to_string(),
    };
    let Some((host, port)) = requested_authority(req) else {
        if req.version == http::Version::HTTP_11 || req.version == http::Version::HTTP_2 {
            return Err(ProxyError::BadRequest("request without a Host".into()));
        }
        return Ok(());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    if !host.eq_ignore_ascii_case(&tunnel.host) || port.unwrap_or(443) != tunnel.port {
        return Err(misdirected(match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }));
    }
    Ok(())
}

/// SECURITY #13: at most `max_bytes` of head and `max_fields` fields.
pub fn check_head_size(
    req: &RequestHeader,
    raw_len: Option<usize>,
    max_bytes: usize,
    max_fields: usize,
) -> Result<(), ProxyError> {
    let fields = req.headers.len();
    if fields > max_fields {
        return Err(ProxyError::HeadersTooLarge(format!(
            "request has {fields} header fields; the limit is {max_fields}"
        )));
    }
    let size = raw_len.unwrap_or_else(|| {
        req.headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + req.raw_path().len()
    });
    if size > max_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "request head is {size} bytes; the limit is {max_bytes}"
        )));
    }
    Ok(())
}

/// SECURITY #7: framing that proxies and origins may read differently is
/// refused outright. `raw` is the HTTP/1 head as received (pingora has
/// already dropped Content-Length when Transfer-Encoding is present).
pub fn check_framing(raw: &[u8]) -> Result<(), ProxyError> {
    match framing_problem(raw) {
        Some(why) => Err(ProxyError::BadRequest(why)),
        None => Ok(()),
    }
}

/// What makes an HTTP/1 head's framing ambiguous, if anything: both
/// `Content-Length` and `Transfer-Encoding`, differing lengths, or a length
/// that is not a decimal number. Requests and responses alike. A bare LF
/// ends a header line as a CRLF does, because httparse reads it so: a check
/// that split on CRLF alone would read a whole LF-only head as one line.
/// Works on the bytes as received: every call's head passes here, and a
/// lossy UTF-8 copy of it cost more than the check itself.
pub fn framing_problem(raw: &[u8]) -> Option<String> {
    let mut content_lengths: Vec<&[u8]> = Vec::new();
    let mut transfer_encoding = false;
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (
            line[..colon].trim_ascii(),
            blank_trimmed(&line[colon + 1..]),
        );
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let part = blank_trimmed(part);
                if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                    return Some(format!(
                        "Content-Length {:?} is not a decimal number",
                        String::from_utf8_lossy(value)
                    ));
                }
                let significant = part.iter().position(|&b| b != b'0').unwrap_or(part.len());
                content_lengths.push(&part[significant..]);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if transfer_encoding && !content_lengths.is_empty() {
        return Some("both Content-Length and Transfer-Encoding are present".into());
    }
    if content_lengths.windows(2).any(|w| w[0] != w[1]) {
        return Some("differing Content-Length values".into());
    }
    None
}

/// `bytes` without leading and trailing spaces and tabs (HTTP's optional
/// whitespace around a field value).
fn blank_trimmed(bytes: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

/// SECURITY #11: protocol upgrades (WebSocket, h2c, extended CONNECT) would
/// turn an inspected call into an uninspected stream.
pub fn check_no_upgrade(req: &RequestHeader) -> Result<(), ProxyError> {
    if req.headers.contains_key(http::header::UPGRADE) || req.method == http::Method::CONNECT {
        return Err(ProxyError::Denied {
            reason: "protocol upgrades (WebSocket, h2c, CONNECT) are not allowed on an intercepted connection".into(),
            rule: "builtin.no_upgrade".into(),
            status: 403,
            decision_id: None,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn plain_destinations() {
        let ok = [
            ("http://example.com/x", "example.com:80"),
            ("http://Example.com:8080/", "example.com:8080"),
            ("http://[::1]:81/", "[::1]:81"),
        ];
        for (uri, want) in ok {
            let got = plain_destination(&req("GET", uri, &[])).unwrap();
            assert_eq!(got.to_string(), want);
        }
        assert!(matches!(
            plain_destination(&req("GET", "/v1/models", &[])),
            Err(ProxyError::NotAProxyRequest(_))
        ));
        assert!(plain_destination(&req("GET", "https://example.com/", &[])).is_err());
        assert!(plain_destination(&req("GET", "http://u:p@example.com/", &[])).is_err());
    }

    #[test]
    fn tunnel_authority() {
        let tunnel = Authority::new("api.openai.com", 443);
        let good = [
            req(
                "POST",
                "/v1/chat/completions",
                &[("host", "api.openai.com")],
            ),
            req(
                "POST",
                "/v1/chat/completions",
                &[("host", "API.openai.com:443")],
            ),
            req("POST", "https://api.openai.com/v1/chat/completions", &[]),
        ];
        for r in good {
            check_tunnel_authority(&r, &tunnel).unwrap();
        }
        let bad = [
            req("POST", "/v1/chat/completions", &[("host", "evil.example")]),
            req(
                "POST",
                "/v1/chat/completions",
                &[("host", "api.openai.com:8443")],
            ),
            req(
                "POST",
                "https://evil.example/v1/chat/completions",
                &[("host", "api.openai.com")],
            ),
        ];
        for r in bad {
            let err = check_tunnel_authority(&r, &tunnel).unwrap_err();
            assert_eq!(err.status(), 421, "{err}");
        }
    }

    #[test]
    fn framing() {
        let cases: &[(&str, bool)] = &[
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", true),
            // Lists and leading zeros name one length; anything else does not.
            ("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nContent-Length:\t005 \r\nContent-Length: 5\r\n\r\n", true),
            ("POST / HTTP/1.1\r\nContent-Length: 5,6\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", false),
            ("POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n", false),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", false),
            ("POST / HTTP/1.1\r\ncontent-LENGTH: 5\r\nTRANSFER-encoding: gzip, chunked\r\n\r\n", false),
            // httparse ends a header line at a bare LF too.
            ("POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n", false),
            ("POST / HTTP/1.1\nContent-Length: 5\nContent-Length: 6\n\n", false),
            ("POST / HTTP/1.1\r\nContent-Length: 5\nTransfer-Encoding: chunked\r\n\r\n", false),
            ("POST / HTTP/1.1\nContent-Length: 5\nHost: a\n\n", true),
            // Answers are checked the same way; the first line is not a field.
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", false),
            ("Content-Length: 5\r\nContent-Length: 6\r\n\r\n", true),
            ("", true),
        ];
        for (raw, ok) in cases {
            assert_eq!(check_framing(raw.as_bytes()).is_ok(), *ok, "{raw:?}");
        }
        // Bytes that are not UTF-8 in other fields are no reason to refuse,
        // and in a length they are refused without a panic.
        let latin1 = b"POST / HTTP/1.1\r\nX-Name: caf\xe9\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(framing_problem(latin1), None);
        let bad_length = b"POST / HTTP/1.1\r\nContent-Length: 5\xff\r\n\r\n";
        assert_eq!(
            framing_problem(bad_length).as_deref(),
            Some("Content-Length \"5\u{fffd}\" is not a decimal number")
        );
        assert_eq!(
            framing_problem(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 01\r\nContent-Length: 2\r\n\r\n").as_deref(),
            Some("differing Content-Length values")
        );
        assert_eq!(
            framing_problem(
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n"
            )
            .as_deref(),
            Some("both Content-Length and Transfer-Encoding are present")
        );
    }

    #[test]
    fn head_size() {
        let many: Vec<(String, String)> =
            (0..101).map(|i| (format!("x-{i}"), "v".into())).collect();
        let mut r = req("GET", "/", &[]);
        for (k, v) in &many {
            r.append_header(k.clone(), v.as_str()).unwrap();
        }
        assert_eq!(
            check_head_size(&r, None, 32 * 1024, 100)
                .unwrap_err()
                .status(),
            431
        );
        let big = req("GET", "/", &[("x-big", &"a".repeat(40 * 1024))]);
        assert_eq!(
            check_head_size(&big, None, 32 * 1024, 100)
                .unwrap_err()
                .status(),
            431
        );
        check_head_size(&req("GET", "/", &[("a", "b")]), None, 32 * 1024, 100).unwrap();
    }

    #[test]
    fn upgrades_are_refused() {
        let ws = req(
            "GET",
            "/",
            &[("upgrade", "websocket"), ("connection", "upgrade")],
        );
        assert_eq!(check_no_upgrade(&ws).unwrap_err().status(), 403);
        check_no_upgrade(&req("GET", "/", &[])).unwrap();
    }
}
