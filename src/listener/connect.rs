//! Pure parsing of what a client sends first: a `CONNECT` head or anything else.
//!
//! No IO here: the front end feeds the bytes it has read so far and gets back
//! whether the head is complete, what it asks for, or why it is refused.

pub use crate::authority::{parse_authority, Authority};

/// Why a client's first bytes are refused. Each maps to one HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The request head is not valid HTTP/1.x.
    #[error("malformed request head: {0}")]
    Malformed(String),
    /// The head exceeds `limits.max_header_bytes`.
    #[error("request head larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The head has more fields than `limits.max_header_count`.
    #[error("request head has more than {limit} header fields")]
    TooManyFields { limit: usize },
    /// The CONNECT target is not `host:port`.
    #[error("CONNECT target {target:?} is not host:port: {why}")]
    BadAuthority { target: String, why: String },
}

/// A complete request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// A complete `CONNECT` head of `len` bytes.
    Connect { authority: Authority, len: usize },
    /// A complete head of another method: handed to the HTTP proxy as is.
    Other,
}

/// Examines the start of a client connection; `Ok(None)` while the head is
/// incomplete.
pub fn parse_head(
    buf: &[u8],
    max_bytes: usize,
    max_fields: usize,
) -> Result<Option<Head>, HeadError> {
    // A few hundred fields is far above any sane limit; the parser needs a
    // fixed array, and the configured limit is checked against the count.
    const PARSE_FIELDS: usize = 256;
    let mut headers = [httparse::EMPTY_HEADER; PARSE_FIELDS];
    let mut req = httparse::Request::new(&mut headers);
    let status = match req.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyFields { limit: max_fields })
        }
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let len = match status {
        httparse::Status::Partial => {
            if buf.len() > max_bytes {
                return Err(HeadError::TooLarge { limit: max_bytes });
            }
            return Ok(None);
        }
        httparse::Status::Complete(len) => len,
    };
    if len > max_bytes {
        return Err(HeadError::TooLarge { limit: max_bytes });
    }
    if req.headers.len() > max_fields {
        return Err(HeadError::TooManyFields { limit: max_fields });
    }
    if req.method != Some("CONNECT") {
        return Ok(Some(Head::Other));
    }
    let target = req.path.unwrap_or_default();
    let authority = parse_authority(target).map_err(|why| HeadError::BadAuthority {
        target: target.chars().take(256).collect(),
        why,
    })?;
    Ok(Some(Head::Connect { authority, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(target: &str) -> Result<Option<Head>, HeadError> {
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        parse_head(head.as_bytes(), 32 * 1024, 100)
    }

    #[test]
    fn connect_heads() {
        let cases: &[(&str, Option<(&str, u16)>)] = &[
            ("api.openai.com:443", Some(("api.openai.com", 443))),
            ("API.OpenAI.com.:443", Some(("api.openai.com", 443))),
            ("[::1]:8443", Some(("::1", 8443))),
            ("10.0.0.1:443", Some(("10.0.0.1", 443))),
            ("api.openai.com", None),
            ("api.openai.com:", None),
            ("api.openai.com:99999", None),
            ("api.openai.com:0", None),
            ("api.openai.com:+443", None),
            ("user@api.openai.com:443", None),
            ("::1:443", None),
            ("[not-v6]:443", None),
            ("-bad-.example:443", None),
            ("a..b:443", None),
        ];
        for (target, expected) in cases {
            match (connect(target), expected) {
                (Ok(Some(Head::Connect { authority, .. })), Some((host, port))) => {
                    assert_eq!((authority.host.as_str(), authority.port), (*host, *port))
                }
                (Err(HeadError::BadAuthority { .. }), None) => {}
                (Err(HeadError::Malformed(_)), None) => {}
                (got, want) => panic!("{target}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn partial_then_complete() {
        let full = b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
        for cut in 1..full.len() {
            assert_eq!(parse_head(&full[..cut], 1024, 10), Ok(None));
        }
        assert!(matches!(
            parse_head(full, 1024, 10),
            Ok(Some(Head::Connect { len, .. })) if len == full.len()
        ));
    }

    #[test]
    fn other_methods_pass_through() {
        let head = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n";
        assert_eq!(parse_head(head, 1024, 10), Ok(Some(Head::Other)));
    }

    #[test]
    fn limits() {
        let mut head = b"CONNECT a.example:443 HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_head(&head, 64 * 1024, 100),
            Err(HeadError::TooManyFields { limit: 100 })
        );
        let big = vec![b'A'; 40 * 1024];
        assert_eq!(
            parse_head(&big, 32 * 1024, 100),
            Err(HeadError::TooLarge { limit: 32 * 1024 })
        );
        let mut long = b"CONNECT a.example:443 HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'v', 40 * 1024));
        assert_eq!(
            parse_head(&long, 32 * 1024, 100),
            Err(HeadError::TooLarge { limit: 32 * 1024 })
        );
    }

    #[test]
    fn control_bytes_are_malformed() {
        let head = b"CONNECT a.example:443 HTTP/1.1\r\nX: a\0b\r\n\r\n";
        assert!(matches!(
            parse_head(head, 1024, 10),
            Err(HeadError::Malformed(_))
        ));
    }
}
