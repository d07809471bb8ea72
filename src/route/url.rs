//! A reroute target's base URL: scheme, authority and path prefix.

use crate::authority::{parse_authority, Authority};

/// A target's `base_url`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    pub tls: bool,
    pub authority: Authority,
    /// The path prefix without a trailing slash (`/v1`), possibly empty.
    pub prefix: String,
}

impl TargetUrl {
    pub fn parse(url: &str) -> Result<TargetUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} must start with https:// or http://"));
        };
        let (host_port, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains('?') || path.contains('#') {
            return Err(format!("{url:?}: no query or fragment allowed"));
        }
        let default_port = if tls { 443 } else { 80 };
        let with_port = if host_port.ends_with(']') || !host_port.contains(':') {
            format!("{host_port}:{default_port}")
        } else {
            host_port.to_string()
        };
        let authority = parse_authority(&with_port).map_err(|e| format!("{url:?}: {e}"))?;
        Ok(TargetUrl {
            tls,
            authority,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    pub fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }
}
