//! What the components share, in three parts, each handed only to the
//! components that use it: the gate's inputs (configuration, the active
//! policy, targets, who the workload is, resolver, leaves), the recorders
//! (metrics, audit log, telemetry) and the lifecycle (policy status, the
//! reloader's handle, draining, whether the listener is up).

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

/// What a decision is made from, and what acting on it needs: the
/// configuration, the active policy revision, the reroute targets, the
/// workload's identity, the resolver and the leaf cache.
pub struct Gate {
    pub(crate) config: Config,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) leaves: LeafCache,
    pub(crate) resolver: Resolver,
    pub(crate) source: SourceDoc,
    /// `source` in regorus's form, built once.
    pub(crate) source_value: regorus::Value,
    pub(crate) targets: BTreeMap<String, Target>,
}

/// Where decisions and calls are written: the counters, the audit log and
/// the trace exporter.
pub struct Recorders {
    pub(crate) metrics: Metrics,
    pub(crate) audit: AuditLog,
    pub(crate) telemetry: crate::telemetry::Telemetry,
}

/// Where the process is in its life: the policy's load history, the
/// reloader, draining, and whether the proxy listener is up.
pub struct Lifecycle {
    policy_status: Mutex<PolicyStatus>,
    /// Set once the reloader runs; `POST /policy/reload` goes through it.
    pub(crate) reload: OnceLock<ReloadHandle>,
    /// Set on SIGTERM: readiness turns false, connections are not kept alive.
    pub(crate) draining: AtomicBool,
    /// Set once the proxy listener has accepted a connection: pingora binds
    /// it on its own thread, after the admin listener may already answer.
    listener_up: AtomicBool,
}

/// The three parts, built together at start-up and then handed out.
pub struct Parts {
    pub(crate) gate: Arc<Gate>,
    pub(crate) recorders: Arc<Recorders>,
    pub(crate) lifecycle: Arc<Lifecycle>,
}

impl Parts {
    pub fn new(
        config: Config,
        snapshot: Snapshot,
        leaves: LeafCache,
        targets: BTreeMap<String, Target>,
        audit: AuditLog,
        telemetry: crate::telemetry::Telemetry,
        status: PolicyStatus,
    ) -> Parts {
        Parts {
            gate: Arc::new(Gate::new(config, snapshot, leaves, targets)),
            recorders: Arc::new(Recorders {
                metrics: Metrics::default(),
                audit,
                telemetry,
            }),
            lifecycle: Arc::new(Lifecycle::new(status)),
        }
    }
}

impl Gate {
    pub fn new(
        config: Config,
        snapshot: Snapshot,
        leaves: LeafCache,
        targets: BTreeMap<String, Target>,
    ) -> Gate {
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
        Gate {
            source_value,
            config,
            snapshot: ArcSwap::from_pointee(snapshot),
            leaves,
            resolver,
            source,
            targets,
        }
    }

    /// Report mode: decide and record, never enforce.
    pub fn enforcing(&self) -> bool {
        self.config.mode == crate::config::Mode::Enforce
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

impl Lifecycle {
    pub fn new(status: PolicyStatus) -> Lifecycle {
        Lifecycle {
            policy_status: Mutex::new(status),
            reload: OnceLock::new(),
            draining: AtomicBool::new(false),
            listener_up: AtomicBool::new(false),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Whether the proxy listener on `listen` accepts connections, probed
    /// with one connection (closed without a byte, which the front end
    /// ignores) until the first success.
    pub async fn listener_accepts(&self, listen: std::net::SocketAddr) -> bool {
        if self.listener_up.load(Ordering::Relaxed) {
            return true;
        }
        let up = accepts_connections(listen).await;
        if up {
            self.listener_up.store(true, Ordering::Relaxed);
        }
        up
    }

    pub fn status(&self) -> PolicyStatus {
        self.policy_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut PolicyStatus)) {
        f(&mut self.policy_status.lock().unwrap_or_else(|e| e.into_inner()));
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
