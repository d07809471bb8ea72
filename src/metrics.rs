//! Counters and gauges, rendered as Prometheus text on the admin `/metrics`.
//!
//! Kept deliberately small: atomics for the fixed series, a mutex-guarded map
//! for labelled ones whose label sets are bounded (actions, statuses, codes).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

type SeriesLabels = Vec<(&'static str, String)>;
/// Per bucket counts, sum, count.
type Buckets = (Vec<u64>, f64, u64);

/// A Prometheus histogram with fixed buckets and bounded label sets.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    buckets: &'static [f64],
    series: Mutex<Series<SeriesLabels, Buckets>>,
}

/// Label sets beyond this many fold into one `other` series, so a client
/// sending random model names cannot grow memory without bound.
const MAX_SERIES: usize = 2000;

impl Histogram {
    pub const fn new(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Histogram {
        Histogram {
            name,
            help,
            buckets,
            series: Mutex::new(Series::new()),
        }
    }

    pub fn observe(&self, labels: &[(&'static str, &str)], value: f64) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let new = || (vec![0; self.buckets.len()], 0.0, 0);
        let entry = if series.len() < MAX_SERIES || series.find(&labels).is_ok() {
            series.entry(&labels, new)
        } else {
            let other: Vec<(&'static str, &str)> =
                labels.iter().map(|(k, _)| (*k, "other")).collect();
            series.entry(&other.as_slice(), new)
        };
        for (i, bound) in self.buckets.iter().enumerate() {
            if value <= *bound {
                entry.0[i] += 1;
            }
        }
        entry.1 += value;
        entry.2 += 1;
    }

    fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", self.help);
        for (labels, (counts, sum, count)) in series.iter() {
            let base: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let with = |extra: String| {
                let mut all = base.clone();
                all.push(extra);
                all.join(",")
            };
            for (bound, n) in self.buckets.iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{}}} {n}",
                    with(format!("le=\"{bound}\""))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{}}} {count}",
                with("le=\"+Inf\"".into())
            );
            let _ = writeln!(out, "{name}_sum{{{}}} {sum}", base.join(","));
            let _ = writeln!(out, "{name}_count{{{}}} {count}", base.join(","));
        }
    }
}

/// Bucket boundaries the GenAI semantic conventions advise.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

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
    pub upstream_truncated: AtomicU64,
    labelled: Mutex<Series<SeriesKey, u64>>,
    /// `gen_ai.client.token.usage`, by operation, provider, models and token type.
    pub token_usage: Histogram,
    /// `gen_ai.client.operation.duration`, by operation, provider, models, error type.
    pub operation_duration: Histogram,
    /// Time to the first chunk of a streamed answer.
    pub time_to_first_chunk: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections_active: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            tunnels_active: AtomicI64::new(0),
            requests_active: AtomicI64::new(0),
            intercepts_active: AtomicI64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            tls_client_rejections: AtomicU64::new(0),
            leaves_minted: AtomicU64::new(0),
            upstream_truncated: AtomicU64::new(0),
            labelled: Mutex::new(Series::new()),
            token_usage: Histogram::new(
                "gen_ai_client_token_usage",
                "Tokens used per call (gen_ai.client.token.usage), by token type",
                TOKEN_BUCKETS,
            ),
            operation_duration: Histogram::new(
                "gen_ai_client_operation_duration_seconds",
                "Duration of GenAI calls through ecluse (gen_ai.client.operation.duration)",
                DURATION_BUCKETS,
            ),
            time_to_first_chunk: Histogram::new(
                "gen_ai_client_operation_time_to_first_chunk_seconds",
                "Time from the request to the first chunk of a streamed answer",
                DURATION_BUCKETS,
            ),
        }
    }
}

/// A metric name and its label pairs.
type SeriesKey = (&'static str, SeriesLabels);

/// A key as a call site has it, borrowed: looking a series up allocates
/// nothing; only a series seen for the first time is copied into the map.
trait SeriesLookup<K> {
    /// How a stored key orders against this one.
    fn key_cmp(&self, key: &K) -> std::cmp::Ordering;
    fn to_key(&self) -> K;
}

fn cmp_labels(owned: &SeriesLabels, borrowed: &[(&'static str, &str)]) -> std::cmp::Ordering {
    owned
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .cmp(borrowed.iter().copied())
}

fn owned_labels(borrowed: &[(&'static str, &str)]) -> SeriesLabels {
    borrowed
        .iter()
        .map(|(k, v)| (*k, (*v).to_string()))
        .collect()
}

impl SeriesLookup<SeriesLabels> for &[(&'static str, &str)] {
    fn key_cmp(&self, key: &SeriesLabels) -> std::cmp::Ordering {
        cmp_labels(key, self)
    }
    fn to_key(&self) -> SeriesLabels {
        owned_labels(self)
    }
}

impl SeriesLookup<SeriesKey> for (&'static str, &[(&'static str, &str)]) {
    fn key_cmp(&self, key: &SeriesKey) -> std::cmp::Ordering {
        key.0.cmp(self.0).then_with(|| cmp_labels(&key.1, self.1))
    }
    fn to_key(&self) -> SeriesKey {
        (self.0, owned_labels(self.1))
    }
}

/// Series kept sorted by key, the order they are rendered in.
struct Series<K, V>(Vec<(K, V)>);

impl<K, V> Series<K, V> {
    const fn new() -> Self {
        Series(Vec::new())
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn find(&self, lookup: &impl SeriesLookup<K>) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| lookup.key_cmp(key))
    }

    fn entry(&mut self, lookup: &impl SeriesLookup<K>, new: impl FnOnce() -> V) -> &mut V {
        let at = match self.find(lookup) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (lookup.to_key(), new()));
                at
            }
        };
        &mut self.0[at].1
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// A status code's digits, written without allocating.
fn format_status(status: u16, buf: &mut [u8; 5]) -> &str {
    let mut n = status;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

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
        "ecluse_errors_total",
        "counter",
        "Calls refused or failed by ecluse, by error code",
    ),
    (
        "ecluse_decisions_total",
        "counter",
        "Policy decisions, by stage (connect, request), action and rule",
    ),
    (
        "ecluse_upstream_errors_total",
        "counter",
        "Upstream calls that failed, by kind",
    ),
    (
        "ecluse_policy_reloads_total",
        "counter",
        "Policy reload attempts that found a new revision, by result and failing step",
    ),
];

impl Metrics {
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let mut map = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(&(name, labels), || 0) += 1;
    }

    pub fn request(&self, action: &str, status: u16) {
        let mut digits = [0; 5];
        self.count(
            "ecluse_requests_total",
            &[
                ("action", action),
                ("status", format_status(status, &mut digits)),
            ],
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
        let counters: [(&str, &str, u64); 6] = [
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
            (
                "ecluse_upstream_truncated_total",
                "Upstream answers that broke off after their head was relayed (closed, malformed or idle past timeouts.stream_idle)",
                self.upstream_truncated.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        self.token_usage.render(&mut out);
        self.operation_duration.render(&mut out);
        self.time_to_first_chunk.render(&mut out);
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
        assert!(text.contains(
            "# TYPE ecluse_upstream_truncated_total counter\necluse_upstream_truncated_total 0\n"
        ));
    }

    #[test]
    fn histograms_render_cumulative_buckets() {
        let m = Metrics::default();
        m.token_usage
            .observe(&[("gen_ai_token_type", "input")], 10.0);
        m.token_usage
            .observe(&[("gen_ai_token_type", "input")], 100.0);
        let text = m.render();
        assert!(
            text.contains(
                "gen_ai_client_token_usage_bucket{gen_ai_token_type=\"input\",le=\"16\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "gen_ai_client_token_usage_bucket{gen_ai_token_type=\"input\",le=\"256\"} 2\n"
        ));
        assert!(text.contains("gen_ai_client_token_usage_count{gen_ai_token_type=\"input\"} 2\n"));
        assert!(text.contains("gen_ai_client_token_usage_sum{gen_ai_token_type=\"input\"} 110\n"));
    }

    #[test]
    fn label_sets_are_bounded() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 50) {
            m.operation_duration
                .observe(&[("gen_ai_request_model", &format!("m{i}"))], 0.1);
        }
        let series = m.operation_duration.series.lock().unwrap().len();
        assert_eq!(series, MAX_SERIES + 1);
    }

    #[test]
    fn series_render_in_key_order_and_count_per_label_set() {
        let m = Metrics::default();
        let calls: &[(&'static str, &[(&'static str, &str)])] = &[
            (
                "ecluse_requests_total",
                &[("action", "pass"), ("status", "200")],
            ),
            ("ecluse_errors_total", &[("code", "denied")]),
            (
                "ecluse_requests_total",
                &[("action", "allow"), ("status", "200")],
            ),
            ("ecluse_requests_total", &[("action", "allow")]),
            (
                "ecluse_requests_total",
                &[("action", "allow"), ("status", "200")],
            ),
            ("ecluse_errors_total", &[("code", "bad_request")]),
        ];
        let mut expected = std::collections::BTreeMap::new();
        for (name, labels) in calls {
            m.count(name, labels);
            *expected
                .entry((*name, owned_labels(labels)))
                .or_insert(0u64) += 1;
        }
        let map = m.labelled.lock().unwrap();
        let got: Vec<(SeriesKey, u64)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let want: Vec<(SeriesKey, u64)> = expected.into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn statuses_format_as_decimal() {
        for status in [0u16, 7, 42, 200, 404, 503, 65535] {
            let mut digits = [0; 5];
            assert_eq!(format_status(status, &mut digits), status.to_string());
        }
    }
}
