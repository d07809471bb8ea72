//! Turning a destination into the one address that will be dialled.
//!
//! The address is resolved once, checked, and that same address is dialled
//! (no second lookup that DNS rebinding could answer differently).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::addr::{classify, Restricted};
use crate::authority::Authority;

/// How a destination resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub addr: SocketAddr,
    /// Came from `upstream.resolve` (or a configured target): exempt from the
    /// private-address refusal because an operator named it.
    pub configured: bool,
}

/// Why a destination has no address ecluse will dial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name does not resolve.
    #[error("{host} does not resolve: {reason}")]
    NotFound { host: String, reason: String },
    /// The resolver did not answer in time.
    #[error("resolving {host} took longer than {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    /// Every address of the name is private, loopback, metadata, ...
    #[error("{host} resolves to {addr}, {}; ecluse does not dial it", .class.describe())]
    Restricted {
        host: String,
        addr: IpAddr,
        class: Restricted,
    },
    /// The address is ecluse's own listener.
    #[error("{host} resolves to {addr}, ecluse's own listener; refusing a proxy loop")]
    Loop { host: String, addr: SocketAddr },
}

/// Why a redirected connection's name is not accepted for its address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The name does not resolve to where the connection went.
    #[error("{host} does not resolve to {original}, where the connection was sent (it resolves to {})", .resolved.join(", "))]
    NotOriginal {
        host: String,
        original: SocketAddr,
        resolved: Vec<String>,
    },
}

/// The resolver: `upstream.resolve` overrides first, then the system resolver
/// (getaddrinfo on tokio's blocking pool, so /etc/hosts and the pod's
/// resolv.conf search domains apply), bounded by `timeouts.dns`.
#[derive(Debug, Clone)]
pub struct Resolver {
    overrides: HashMap<Authority, SocketAddr>,
    own_addrs: Vec<SocketAddr>,
    timeout: Duration,
}

impl Resolver {
    pub fn new(
        overrides: HashMap<Authority, SocketAddr>,
        own_addrs: Vec<SocketAddr>,
        timeout: Duration,
    ) -> Resolver {
        Resolver {
            overrides,
            own_addrs,
            timeout,
        }
    }

    /// Resolves a destination a client named: private and special addresses
    /// are refused.
    pub async fn resolve(&self, authority: &Authority) -> Result<Resolved, ResolveError> {
        self.resolve_checked(authority, true).await
    }

    /// For a redirected (transparent) connection: whether the name the
    /// client gave (SNI or `Host`) resolves to the address it actually
    /// connected to. The answer pins that address, so the connection goes
    /// where the client sent it and is decided as the name it claimed; a
    /// client naming an allowed host to reach another address is refused.
    /// The same refusals as [`Resolver::resolve`] apply (private addresses
    /// unless `upstream.resolve` names them, ecluse's own listeners).
    pub async fn resolve_original(
        &self,
        authority: &Authority,
        original: SocketAddr,
    ) -> Result<Resolved, OriginalError> {
        let mismatch = |addrs: &[SocketAddr]| OriginalError::NotOriginal {
            host: authority.host.clone(),
            original,
            resolved: addrs.iter().map(|a| a.ip().to_string()).collect(),
        };
        if let Some(addr) = self.overrides.get(authority) {
            if !same_address(*addr, original) {
                return Err(mismatch(&[*addr]));
            }
            self.check_loop(&authority.host, original)?;
            return Ok(Resolved {
                addr: original,
                configured: true,
            });
        }
        let candidates = self.lookup(authority).await?;
        if !candidates.iter().any(|a| same_address(*a, original)) {
            return Err(mismatch(&candidates));
        }
        let addr = self.pick_public(&authority.host, &[original])?;
        self.check_loop(&authority.host, addr)?;
        Ok(Resolved {
            addr,
            configured: false,
        })
    }

    /// The addresses a name resolves to (an IP literal is its own), within
    /// `timeouts.dns`.
    async fn lookup(&self, authority: &Authority) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = authority.ip() {
            return Ok(vec![SocketAddr::new(ip, authority.port)]);
        }
        let lookup = tokio::net::lookup_host((authority.host.as_str(), authority.port));
        match tokio::time::timeout(self.timeout, lookup).await {
            Err(_) => Err(ResolveError::Timeout {
                host: authority.host.clone(),
                timeout: self.timeout,
            }),
            Ok(Err(e)) => Err(ResolveError::NotFound {
                host: authority.host.clone(),
                reason: e.to_string(),
            }),
            Ok(Ok(addrs)) => Ok(addrs.collect()),
        }
    }

    /// Resolves a configured target (an in-cluster vLLM is private by
    /// design): the operator named it, so only the loop check applies.
    pub async fn resolve_target(&self, authority: &Authority) -> Result<Resolved, ResolveError> {
        self.resolve_checked(authority, false).await
    }

    async fn resolve_checked(
        &self,
        authority: &Authority,
        refuse_restricted: bool,
    ) -> Result<Resolved, ResolveError> {
        if let Some(addr) = self.overrides.get(authority) {
            self.check_loop(&authority.host, *addr)?;
            return Ok(Resolved {
                addr: *addr,
                configured: true,
            });
        }
        let candidates = self.lookup(authority).await?;
        let addr = if refuse_restricted {
            self.pick_public(&authority.host, &candidates)?
        } else {
            *candidates.first().ok_or_else(|| ResolveError::NotFound {
                host: authority.host.clone(),
                reason: "no addresses".to_string(),
            })?
        };
        self.check_loop(&authority.host, addr)?;
        Ok(Resolved {
            addr,
            configured: !refuse_restricted,
        })
    }

    /// The first public address; the refusal names the first restricted one.
    pub fn pick_public(
        &self,
        host: &str,
        addrs: &[SocketAddr],
    ) -> Result<SocketAddr, ResolveError> {
        let mut first_refusal = None;
        for addr in addrs {
            match classify(addr.ip()) {
                None => return Ok(*addr),
                Some(class) => {
                    first_refusal.get_or_insert(ResolveError::Restricted {
                        host: host.to_string(),
                        addr: addr.ip(),
                        class,
                    });
                }
            }
        }
        Err(first_refusal.unwrap_or_else(|| ResolveError::NotFound {
            host: host.to_string(),
            reason: "no addresses".to_string(),
        }))
    }

    fn check_loop(&self, host: &str, addr: SocketAddr) -> Result<(), ResolveError> {
        let is_own = self.own_addrs.iter().any(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip() || (own.ip().is_unspecified() && is_local(addr.ip())))
        });
        if is_own {
            return Err(ResolveError::Loop {
                host: host.to_string(),
                addr,
            });
        }
        Ok(())
    }
}

/// Same IP (an IPv4-mapped IPv6 address is its IPv4 one) and port.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || classify(ip).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(overrides: &[(&str, &str)]) -> Resolver {
        let overrides = overrides
            .iter()
            .map(|(k, v)| {
                (
                    crate::authority::parse_authority(k).unwrap(),
                    v.parse().unwrap(),
                )
            })
            .collect();
        Resolver::new(
            overrides,
            vec!["127.0.0.1:3128".parse().unwrap()],
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn overrides_are_exempt_and_ip_literals_are_classified() {
        let r = resolver(&[("api.openai.com:443", "127.0.0.1:18443")]);
        let got = r
            .resolve(&Authority::new("api.openai.com", 443))
            .await
            .unwrap();
        assert_eq!(got.addr, "127.0.0.1:18443".parse().unwrap());
        assert!(got.configured);

        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let err = r.resolve(&Authority::new(ip, 443)).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ResolveError::Restricted {
                        class: Restricted::Loopback,
                        ..
                    }
                ),
                "{ip}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        // `localhost` resolves through /etc/hosts to loopback only: refused after
        // resolution, and nothing is dialled by this test.
        let r = resolver(&[]);
        let err = r
            .resolve(&Authority::new("localhost", 443))
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Restricted { .. }), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn picks_the_first_public_address() {
        let r = resolver(&[]);
        let addrs: Vec<SocketAddr> = ["10.0.0.1:443", "8.8.8.8:443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(r.pick_public("x", &addrs).unwrap(), addrs[1]);
        let err = r.pick_public("x", &addrs[..1]).unwrap_err();
        assert!(err.to_string().contains("private"), "{err}");
    }

    #[tokio::test]
    async fn a_redirected_name_must_resolve_to_the_original_destination() {
        let r = resolver(&[("api.openai.com:443", "127.0.0.2:443")]);
        let openai = Authority::new("api.openai.com", 443);
        let got = r
            .resolve_original(&openai, "127.0.0.2:443".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(got.addr, "127.0.0.2:443".parse().unwrap());
        assert!(got.configured);
        let mapped = r
            .resolve_original(&openai, "[::ffff:127.0.0.2]:443".parse().unwrap())
            .await
            .unwrap();
        assert!(mapped.configured);

        // A client naming an allowed host to reach another address.
        let table: &[(&str, &str, &str)] = &[
            (
                "api.openai.com:443",
                "127.0.0.3:443",
                "does not resolve to 127.0.0.3:443",
            ),
            (
                "api.openai.com:443",
                "127.0.0.2:8443",
                "does not resolve to",
            ),
            (
                "8.8.8.8:443",
                "8.8.4.4:443",
                "does not resolve to 8.8.4.4:443",
            ),
            ("10.1.2.3:443", "10.1.2.3:443", "private"),
            ("127.0.0.1:3128", "127.0.0.1:3128", "loopback"),
        ];
        for (name, original, want) in table {
            let name = crate::authority::parse_authority(name).unwrap();
            let err = r
                .resolve_original(&name, original.parse().unwrap())
                .await
                .unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{name} -> {original}: {err}"
            );
        }
        let public = r
            .resolve_original(
                &Authority::new("8.8.8.8", 443),
                "8.8.8.8:443".parse().unwrap(),
            )
            .await
            .unwrap();
        assert!(!public.configured);
    }

    #[tokio::test]
    async fn configured_targets_may_be_private_but_not_a_loop() {
        let r = resolver(&[]);
        let got = r
            .resolve_target(&Authority::new("127.0.0.2", 8000))
            .await
            .unwrap();
        assert!(got.configured);
        let err = r
            .resolve_target(&Authority::new("127.0.0.1", 3128))
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Loop { .. }));
    }

    #[tokio::test]
    async fn own_listener_is_a_loop() {
        let r = resolver(&[("proxy.example:443", "127.0.0.1:3128")]);
        let err = r
            .resolve(&Authority::new("proxy.example", 443))
            .await
            .unwrap_err();
        assert!(matches!(err, ResolveError::Loop { .. }), "{err}");
    }

    #[tokio::test]
    async fn unresolvable_names_say_so() {
        let r = resolver(&[]);
        let err = r
            .resolve(&Authority::new("does-not-exist.invalid", 443))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::NotFound { .. } | ResolveError::Timeout { .. }
            ),
            "{err}"
        );
    }
}
