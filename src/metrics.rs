//! Counters and gauges, rendered as Prometheus text on the admin `/metrics`.
//!
//! Kept deliberately small: atomics for the fixed series, a mutex-guarded map
//! for labelled ones whose label sets are bounded (actions, statuses, codes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    pub connections_active: AtomicI64,
    pub connections_total: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub tunnels_active: AtomicI64,
    pub requests_active: AtomicI64,
    pub intercepts_active: AtomicI64,
    pub tls_handshake_failures: AtomicU64,
    pub tls_client_rejections: AtomicU64,
    pub leaves_minted: AtomicU64,
    labelled: Mutex<BTreeMap<SeriesKey, u64>>,
}

/// A metric name and its label pairs.
type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// Decrements a gauge when dropped, so early returns cannot leak a count.
pub struct GaugeGuard<'a>(&'a AtomicI64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn track(gauge: &AtomicI64) -> GaugeGuard<'_> {
    gauge.fetch_add(1, Ordering::Relaxed);
    GaugeGuard(gauge)
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "ecluse_requests_total",
        "counter",
        "HTTP requests answered, by stage action and status",
    ),
    (
        "ecluse_connect_total",
        "counter",
        "CONNECT and plain-HTTP destinations decided, by action",
    ),
    (
        "ecluse_errors_total",
        "counter",
        "Calls refused or failed by ecluse, by error code",
    ),
    (
        "ecluse_decisions_total",
        "counter",
        "Request-stage decisions, by action and rule",
    ),
    (
        "ecluse_policy_reloads_total",
        "counter",
        "Policy reload attempts that found a new revision, by result and failing step",
    ),
];

impl Metrics {
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        );
        let mut map = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(key).or_insert(0) += 1;
    }

    pub fn request(&self, action: &str, status: u16) {
        let status = status.to_string();
        self.count(
            "ecluse_requests_total",
            &[("action", action), ("status", &status)],
        );
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauges: [(&str, &str, i64); 4] = [
            (
                "ecluse_requests_active",
                "HTTP requests being decided or forwarded now",
                self.requests_active.load(Ordering::Relaxed),
            ),
            (
                "ecluse_connections_active",
                "Client connections open now",
                self.connections_active.load(Ordering::Relaxed),
            ),
            (
                "ecluse_tunnels_active",
                "Blind tunnels open now",
                self.tunnels_active.load(Ordering::Relaxed),
            ),
            (
                "ecluse_intercepts_active",
                "Intercepted TLS connections open now",
                self.intercepts_active.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters: [(&str, &str, u64); 5] = [
            (
                "ecluse_connections_total",
                "Client connections accepted",
                self.connections_total.load(Ordering::Relaxed),
            ),
            (
                "ecluse_connections_rejected_total",
                "Client connections refused at the connection limit",
                self.connections_rejected.load(Ordering::Relaxed),
            ),
            (
                "ecluse_tls_handshake_failures_total",
                "Client TLS handshakes that failed",
                self.tls_handshake_failures.load(Ordering::Relaxed),
            ),
            (
                "ecluse_tls_client_rejections_total",
                "Client handshakes where the client refused the minted certificate (pinning or untrusted CA)",
                self.tls_client_rejections.load(Ordering::Relaxed),
            ),
            (
                "ecluse_leaf_certificates_minted_total",
                "Leaf certificates minted",
                self.leaves_minted.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let map = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = "";
        for ((name, labels), value) in map.iter() {
            if *name != last {
                if let Some((_, kind, help)) = HELP.iter().find(|(n, _, _)| n == name) {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                }
                last = name;
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
        }
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request("intercept", 200);
        m.request("intercept", 200);
        m.count("ecluse_errors_total", &[("code", "body_too_large")]);
        {
            let _g = track(&m.connections_active);
            assert!(m.render().contains("ecluse_connections_active 1\n"));
        }
        let text = m.render();
        assert!(text.contains("ecluse_connections_active 0\n"));
        assert!(text.contains("ecluse_requests_total{action=\"intercept\",status=\"200\"} 2\n"));
        assert!(text.contains("# TYPE ecluse_errors_total counter\n"));
    }
}
