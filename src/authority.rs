//! Where a call goes: a host and a port, as CONNECT, an absolute-form URL,
//! a configuration key or a reroute target names it. A leaf value type.

use std::fmt;
use std::net::IpAddr;

/// A destination named by a client: a lower-cased host (DNS name or IP
/// literal, without brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    pub fn new(host: &str, port: u16) -> Authority {
        Authority {
            host: host.to_ascii_lowercase(),
            port,
        }
    }

    /// The host as an IP address when the client named one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port` with IPv6 literals bracketed, as used in `Host` and config keys.
    pub fn to_host_port(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses an authority-form target: `host:port` or `[v6]:port`; the port is
/// required, user info and paths are refused.
pub fn parse_authority(target: &str) -> Result<Authority, String> {
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in IPv6 literal".to_string())?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| "missing port".to_string())?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = target
            .rsplit_once(':')
            .ok_or_else(|| "missing port".to_string())?;
        if host.contains(':') {
            return Err("IPv6 literals must be bracketed".to_string());
        }
        validate_hostname(host)?;
        (host, port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port} is out of range"))?;
    if port == 0 {
        return Err("port 0 is not a destination".to_string());
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    Ok(Authority::new(host, port))
}

/// Accepts DNS names (letters, digits, '-', '_' and dots, labels of 1-63
/// bytes, 253 in all) and IPv4 literals.
fn validate_hostname(host: &str) -> Result<(), String> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if trimmed.is_empty() {
        return Err("empty host".to_string());
    }
    if trimmed.len() > 253 {
        return Err("host name longer than 253 bytes".to_string());
    }
    for label in trimmed.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("host {host:?} has an empty or over-long label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "host {host:?} has a character not allowed in a name"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "host {host:?} has a label starting or ending with '-'"
            ));
        }
    }
    Ok(())
}
