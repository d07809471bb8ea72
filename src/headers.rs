//! Header names with a meaning for the connection rather than the message:
//! what a proxy never forwards, and what a policy decision may never set.
//! A leaf module: policies and the request builder both read it.

/// Hop-by-hop headers (RFC 9110 7.6.1) and proxy credentials: never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers ecluse sets itself from what it sends: never copied from the
/// client, never set by a decision.
pub const FRAMING: &[&str] = &["host", "content-length", "expect", "content-encoding"];

pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Whether a policy decision may not add or remove this header: framing,
/// `Host`, hop-by-hop, and HTTP/2 pseudo-headers.
pub fn is_reserved(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    is_hop_by_hop(&name) || FRAMING.contains(&name.as_str()) || name.starts_with(':')
}
