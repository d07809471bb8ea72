//! What a redirected connection's first bytes say: a TLS ClientHello (and
//! its SNI) or a plain HTTP/1 request (and its `Host`). Pure: the
//! transparent front end feeds the bytes read so far and gets back whether
//! more are needed, the name to decide the connection as, or why it is
//! refused.

use std::net::SocketAddr;

use crate::authority::{parse_authority, Authority};
use crate::listener::connect::{parse_head, Head};

/// A ClientHello fits in a few records; more than this before the hello is
/// complete is not a client worth waiting for.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// The first bytes of a redirected connection, understood.
#[derive(Debug, PartialEq, Eq)]
pub enum Opening {
    /// A complete ClientHello naming `sni`.
    Tls { sni: String },
    /// A complete plain HTTP/1 head, to be handled as absolute-form: the
    /// destination its `Host` names and the head rewritten (`head_len`
    /// bytes of the original replaced by `rewritten`).
    Http {
        authority: Authority,
        rewritten: Vec<u8>,
        head_len: usize,
    },
}

/// Why a redirected connection is refused before any policy sees it; each
/// names the rule its audit record carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the TLS ClientHello names no server (SNI); ecluse cannot tell what {original} is")]
    NoSni { original: SocketAddr },
    #[error("plain HTTP request without a usable Host header: {why}")]
    NoHost { why: String },
    #[error("not a TLS ClientHello: {0}")]
    BadTls(String),
    #[error("not an HTTP/1 request: {0}")]
    BadHttp(String),
    #[error("a CONNECT on the transparent listener (proxy clients use listen)")]
    Connect,
    #[error(
        "the connection was sent to the transparent listener itself ({original}); refusing a loop"
    )]
    Loop { original: SocketAddr },
    #[error("the original destination is unknown (not redirected by iptables?): {0}")]
    NoOriginal(String),
    #[error("{0}")]
    NotOriginal(String),
}

impl Refusal {
    /// The rule an audit record names for this refusal.
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::NoSni { .. } => "ecluse.transparent.no_sni",
            Refusal::NoHost { .. } => "ecluse.transparent.no_host",
            Refusal::BadTls(_) | Refusal::BadHttp(_) | Refusal::Connect => {
                "ecluse.transparent.malformed"
            }
            Refusal::Loop { .. } => "ecluse.transparent.loop",
            Refusal::NoOriginal(_) => "ecluse.transparent.no_original_destination",
            Refusal::NotOriginal(_) => "ecluse.transparent.name_not_destination",
        }
    }
}

/// Whether `original` is the transparent listener itself (a connection
/// made straight to it, or redirected to it again): nothing to forward to.
pub fn is_loop(original: SocketAddr, listen: SocketAddr) -> bool {
    original.port() == listen.port()
        && (original.ip().to_canonical() == listen.ip().to_canonical()
            || (listen.ip().is_unspecified() && original.ip().is_loopback()))
}

/// Reads the opening of a redirected connection. `Ok(None)`: incomplete.
pub fn read_opening(
    buf: &[u8],
    original: SocketAddr,
    max_header_bytes: usize,
    max_header_count: usize,
) -> Result<Option<Opening>, Refusal> {
    let Some(first) = buf.first() else {
        return Ok(None);
    };
    // 22 is the TLS handshake record type; no HTTP method starts with it.
    if *first == 22 {
        return Ok(client_hello_sni(buf, original)?.map(|sni| Opening::Tls { sni }));
    }
    let head = parse_head(buf, max_header_bytes, max_header_count)
        .map_err(|e| Refusal::BadHttp(e.to_string()))?;
    match head {
        None => Ok(None),
        Some(Head::Connect { .. }) => Err(Refusal::Connect),
        Some(Head::Other) => absolute_form(buf, original, max_header_count).map(Some),
    }
}

/// The SNI of a complete ClientHello (`Ok(None)` while incomplete), read by
/// rustls's own parser without answering anything.
fn client_hello_sni(buf: &[u8], original: SocketAddr) -> Result<Option<String>, Refusal> {
    if buf.len() > MAX_CLIENT_HELLO {
        return Err(Refusal::BadTls(format!(
            "no complete ClientHello in {MAX_CLIENT_HELLO} bytes"
        )));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(Refusal::BadTls(e.to_string())),
        }
    }
    match acceptor.accept() {
        Ok(None) => Ok(None),
        Ok(Some(accepted)) => match accepted.client_hello().server_name() {
            Some(name) => Ok(Some(name.to_string())),
            None => Err(Refusal::NoSni { original }),
        },
        Err((e, _alert)) => Err(Refusal::BadTls(e.to_string())),
    }
}

/// Rewrites a complete origin-form HTTP/1 head into the absolute form the
/// proxy's plain-HTTP path takes (`GET http://host/path`), with
/// `Connection: close`: the proxy reads every request of a connection as
/// absolute-form, so each redirected connection carries one request.
fn absolute_form(
    buf: &[u8],
    original: SocketAddr,
    max_header_count: usize,
) -> Result<Opening, Refusal> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_header_count.min(256)];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return Err(Refusal::BadHttp("incomplete request head".into()))
        }
        Err(e) => return Err(Refusal::BadHttp(e.to_string())),
    };
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    if !path.starts_with('/') {
        return Err(Refusal::BadHttp(format!(
            "request target {:?} is not origin-form",
            path.chars().take(64).collect::<String>()
        )));
    }
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => std::str::from_utf8(h.value)
            .map_err(|_| Refusal::NoHost {
                why: "Host is not text".into(),
            })?
            .trim(),
        (None, _) => {
            return Err(Refusal::NoHost {
                why: "no Host header".into(),
            })
        }
        (Some(_), Some(_)) => {
            return Err(Refusal::NoHost {
                why: "more than one Host header".into(),
            })
        }
    };
    let parsed: http::uri::Authority = host.parse().map_err(|_| Refusal::NoHost {
        why: format!(
            "Host {:?} is not host[:port]",
            host.chars().take(64).collect::<String>()
        ),
    })?;
    if parsed.as_str().contains('@') {
        return Err(Refusal::NoHost {
            why: "user information in Host".into(),
        });
    }
    let port = parsed.port_u16().unwrap_or(original.port());
    let bare = parsed.host().trim_start_matches('[').trim_end_matches(']');
    let authority = if bare.contains(':') {
        parse_authority(&format!("[{bare}]:{port}"))
    } else {
        parse_authority(&format!("{bare}:{port}"))
    }
    .map_err(|why| Refusal::NoHost { why })?;
    let mut out = Vec::with_capacity(head_len + 64);
    // The URL's authority is the Host as sent: pingora refuses a request
    // whose Host differs from its absolute-form target.
    out.extend_from_slice(format!("{method} http://{host}{path} HTTP/1.1\r\n").as_bytes());
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection")
            || h.name.eq_ignore_ascii_case("proxy-connection")
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(Opening::Http {
        authority,
        rewritten: out,
        head_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn original() -> SocketAddr {
        "192.0.2.10:443".parse().unwrap()
    }

    /// A real ClientHello, as rustls's client writes it.
    fn client_hello(sni: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn read(buf: &[u8]) -> Result<Option<Opening>, Refusal> {
        read_opening(buf, original(), 8192, 100)
    }

    #[test]
    fn the_sni_is_read_from_a_complete_client_hello_only() {
        let hello = client_hello("api.openai.com");
        for cut in [1, 5, 20, hello.len() - 1] {
            assert_eq!(read(&hello[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            read(&hello),
            Ok(Some(Opening::Tls {
                sni: "api.openai.com".into()
            }))
        );
    }

    #[test]
    fn an_ip_literal_server_name_is_no_sni() {
        // rustls sends no SNI for an IP address, as TLS requires.
        let hello = client_hello("192.0.2.10");
        let err = read(&hello).unwrap_err();
        assert_eq!(err.rule(), "ecluse.transparent.no_sni");
        assert!(err.to_string().contains("192.0.2.10:443"), "{err}");
    }

    #[test]
    fn garbage_after_the_handshake_byte_is_refused() {
        let err = read(&[22, 3, 1, 0, 4, 99, 0, 0, 0]).unwrap_err();
        assert_eq!(err.rule(), "ecluse.transparent.malformed");
        let err = read(&vec![22; MAX_CLIENT_HELLO + 1]).unwrap_err();
        assert_eq!(err.rule(), "ecluse.transparent.malformed");
    }

    #[test]
    fn plain_http_becomes_absolute_form_with_one_request_per_connection() {
        let original: SocketAddr = "192.0.2.10:80".parse().unwrap();
        // (input, Ok((authority, rewritten head)) or Err(rule))
        type Case<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);
        let table: &[Case] = &[
            (
                "GET /v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n",
                Ok(("example.com:80", "GET http://example.com/v1/models?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nConnection: close\r\n\r\n")),
            ),
            (
                "POST /p HTTP/1.1\r\nhost: Example.com:8080\r\ncontent-length: 2\r\n\r\nhi",
                Ok(("example.com:8080", "POST http://Example.com:8080/p HTTP/1.1\r\nhost: Example.com:8080\r\ncontent-length: 2\r\nConnection: close\r\n\r\n")),
            ),
            (
                "GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n",
                Ok(("[2001:db8::1]:80", "GET http://[2001:db8::1]/ HTTP/1.1\r\nHost: [2001:db8::1]\r\nConnection: close\r\n\r\n")),
            ),
            ("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", Err("ecluse.transparent.no_host")),
            ("GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n", Err("ecluse.transparent.no_host")),
            ("GET / HTTP/1.1\r\nHost: u@a.com\r\n\r\n", Err("ecluse.transparent.no_host")),
            ("GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", Err("ecluse.transparent.malformed")),
            ("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com\r\n\r\n", Err("ecluse.transparent.malformed")),
            ("\x00\x01 nonsense\r\n\r\n", Err("ecluse.transparent.malformed")),
        ];
        for (input, want) in table {
            let got = read_opening(input.as_bytes(), original, 8192, 100);
            match (got, want) {
                (
                    Ok(Some(Opening::Http {
                        authority,
                        rewritten,
                        head_len,
                    })),
                    Ok((auth, head)),
                ) => {
                    assert_eq!(authority.to_string(), *auth, "{input:?}");
                    assert_eq!(String::from_utf8(rewritten).unwrap(), *head, "{input:?}");
                    assert!(input[..head_len].ends_with("\r\n\r\n"), "{input:?}");
                }
                (Err(e), Err(rule)) => assert_eq!(e.rule(), *rule, "{input:?}: {e}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            read_opening(b"GET / HTTP/1.1\r\nHo", original, 8192, 100),
            Ok(None)
        );
    }

    #[test]
    fn loops_are_the_listener_itself() {
        let listen: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:15001".parse().unwrap();
        let table = [
            (listen, "127.0.0.1:15001", true),
            (listen, "127.0.0.2:15001", false),
            (listen, "127.0.0.1:443", false),
            (listen, "[::ffff:127.0.0.1]:15001", true),
            (any, "127.0.0.1:15001", true),
            (any, "192.0.2.1:15001", false),
        ];
        for (listen, original, want) in table {
            assert_eq!(
                is_loop(original.parse().unwrap(), listen),
                want,
                "{original}"
            );
        }
    }
}
