//! What every connection shares: configuration, the active policy snapshot,
//! the leaf cache, the resolver and the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::audit::AuditLog;
use crate::authority::Authority;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::input::{Scheme, SourceDoc};
use crate::policy::{Destination, Snapshot};
use crate::route::Target;
use crate::source::status::{PolicyStatus, ReloadHandle};
use crate::tls::LeafCache;
use crate::upstream::resolve::Resolver;

pub struct Shared {
    pub config: Config,
    pub snapshot: ArcSwap<Snapshot>,
    pub leaves: LeafCache,
    pub resolver: Resolver,
    pub metrics: Metrics,
    pub source: SourceDoc,
    /// `source` in regorus's form, built once.
    pub source_value: regorus::Value,
    pub targets: BTreeMap<String, Target>,
    pub audit: AuditLog,
    pub telemetry: crate::telemetry::Telemetry,
    pub policy_status: Mutex<PolicyStatus>,
    /// Set once the reloader runs; `POST /policy/reload` goes through it.
    pub reload: OnceLock<ReloadHandle>,
    /// Set on SIGTERM: readiness turns false, connections are not kept alive.
    pub draining: AtomicBool,
    /// Set once the proxy listener has accepted a connection: pingora binds
    /// it on its own thread, after the admin listener may already answer.
    pub listener_up: AtomicBool,
}

impl Shared {
    pub fn new(
        config: Config,
        snapshot: Snapshot,
        leaves: LeafCache,
        targets: BTreeMap<String, Target>,
        audit: AuditLog,
        telemetry: crate::telemetry::Telemetry,
        status: PolicyStatus,
    ) -> Arc<Shared> {
        let overrides = config
            .upstream
            .resolve
            .iter()
            .filter_map(|(k, v)| crate::authority::parse_authority(k).ok().map(|a| (a, *v)))
            .collect();
        let resolver = Resolver::new(
            overrides,
            [config.listen, config.admin_listen]
                .into_iter()
                .chain(config.transparent_listen.iter().copied())
                .collect(),
            config.timeouts.dns,
        );
        let source = SourceDoc {
            workload: config.source.workload.clone(),
            namespace: config.source.namespace.clone(),
        };
        let source_value = crate::policy::rego::to_value(&source).unwrap_or(regorus::Value::Null);
        Arc::new(Shared {
            source_value,
            config,
            snapshot: ArcSwap::from_pointee(snapshot),
            leaves,
            resolver,
            metrics: Metrics::default(),
            source,
            targets,
            audit,
            telemetry,
            policy_status: Mutex::new(status),
            reload: OnceLock::new(),
            draining: AtomicBool::new(false),
            listener_up: AtomicBool::new(false),
        })
    }

    /// Report mode: decide and record, never enforce.
    pub fn enforcing(&self) -> bool {
        self.config.mode == crate::config::Mode::Enforce
    }

    /// Ready when a policy revision decides and no SIGTERM was received.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().is_ready() && !self.is_draining()
    }

    /// Whether the proxy listener accepts connections, probed with one
    /// connection (closed without a byte, which the front end ignores)
    /// until the first success.
    pub async fn listener_accepts(&self) -> bool {
        if self.listener_up.load(Ordering::Relaxed) {
            return true;
        }
        let up = accepts_connections(self.config.listen).await;
        if up {
            self.listener_up.store(true, Ordering::Relaxed);
        }
        up
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The ports a destination reached this way may use.
    pub fn allowed_ports(&self, scheme: Scheme) -> &[u16] {
        match scheme {
            Scheme::Https => &self.config.upstream.connect_ports,
            Scheme::Http => &self.config.upstream.http_ports,
        }
    }

    /// The destination document for `authority` under `snapshot`.
    pub fn destination(
        &self,
        snapshot: &Snapshot,
        authority: &Authority,
        scheme: Scheme,
    ) -> Arc<Destination> {
        snapshot.destination(authority, scheme, self.allowed_ports(scheme))
    }
}

/// Whether something accepts TCP connections at `listen` (a wildcard
/// address is probed on loopback).
pub async fn accepts_connections(listen: std::net::SocketAddr) -> bool {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            tokio::net::TcpStream::connect(target)
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_probe_sees_whether_the_listener_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(accepts_connections(addr).await);
        let wildcard = std::net::SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert!(accepts_connections(wildcard).await);
        drop(listener);
        assert!(!accepts_connections(addr).await);
    }
}
