//! The admin listener: health, readiness, metrics, the CA for apps to trust,
//! and what policy is active.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::state::{Gate, Lifecycle, Recorders};

pub struct Admin {
    gate: Arc<Gate>,
    recorders: Arc<Recorders>,
    lifecycle: Arc<Lifecycle>,
}

impl Admin {
    pub fn new(gate: Arc<Gate>, recorders: Arc<Recorders>, lifecycle: Arc<Lifecycle>) -> Admin {
        Admin {
            gate,
            recorders,
            lifecycle,
        }
    }

    /// Ready when a policy revision decides and no SIGTERM was received.
    fn is_ready(&self) -> bool {
        self.gate.snapshot.load().is_ready() && !self.lifecycle.is_draining()
    }

    async fn route(
        &self,
        method: &http::Method,
        path: &str,
    ) -> (StatusCode, &'static str, Vec<u8>) {
        let text = "text/plain; charset=utf-8";
        match (method.as_str(), path) {
            ("GET", "/healthz") => (StatusCode::OK, text, b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                if self.lifecycle.is_draining() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        b"draining: shutting down\n".to_vec(),
                    )
                } else if !self.is_ready() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        b"not ready: no policy revision loaded (see /policy)\n".to_vec(),
                    )
                } else if let Some(problem) = self.recorders.audit.problem() {
                    let body = format!("not ready: {problem}\n");
                    (StatusCode::SERVICE_UNAVAILABLE, text, body.into_bytes())
                } else if !self.lifecycle.listener_accepts(self.gate.config.listen).await {
                    let body = format!(
                        "not ready: the proxy listener on {} does not accept connections yet\n",
                        self.gate.config.listen
                    );
                    (StatusCode::SERVICE_UNAVAILABLE, text, body.into_bytes())
                } else {
                    (StatusCode::OK, text, b"ready\n".to_vec())
                }
            }
            ("POST", "/policy/reload") => {
                let Some(handle) = self.lifecycle.reload.get() else {
                    return (StatusCode::SERVICE_UNAVAILABLE, text, b"the reloader is not running\n".to_vec());
                };
                match handle.reload().await {
                    Some(outcome) => {
                        let status = match outcome {
                            crate::source::status::Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                            _ => StatusCode::OK,
                        };
                        let body = serde_json::json!({"outcome": outcome, "policy": self.lifecycle.status()});
                        (status, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
                    }
                    None => (StatusCode::SERVICE_UNAVAILABLE, text, b"the reloader stopped\n".to_vec()),
                }
            }
            ("GET", "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics_text().into_bytes(),
            ),
            ("GET", "/ca.pem") => (
                StatusCode::OK,
                "application/x-pem-file",
                self.gate.leaves.ca().cert_pem().as_bytes().to_vec(),
            ),
            ("GET", "/policy") => (
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&self.lifecycle.status()).unwrap_or_default(),
            ),
            (_, "/healthz" | "/readyz" | "/metrics" | "/ca.pem" | "/policy" | "/policy/reload") => (
                StatusCode::METHOD_NOT_ALLOWED,
                text,
                b"method not allowed\n".to_vec(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                text,
                b"not found: try /healthz, /readyz, /metrics, /ca.pem, /policy, POST /policy/reload\n".to_vec(),
            ),
        }
    }
}

impl Admin {
    /// The counters plus the policy state, which lives outside `Metrics`.
    fn metrics_text(&self) -> String {
        let mut text = self.recorders.metrics.render();
        let audit = &self.recorders.audit;
        text.push_str(&format!(
            "# HELP ecluse_audit_queue_depth Audit records waiting to be written\n# TYPE ecluse_audit_queue_depth gauge\necluse_audit_queue_depth {}\n# HELP ecluse_audit_dropped_total Audit records dropped because the queue was full (audit.on_full: drop)\n# TYPE ecluse_audit_dropped_total counter\necluse_audit_dropped_total {}\n# HELP ecluse_audit_write_failing 1 while the audit log cannot be written\n# TYPE ecluse_audit_write_failing gauge\necluse_audit_write_failing {}\n",
            audit.depth(),
            audit.dropped(),
            u8::from(audit.problem().is_some())
        ));
        let status = self.lifecycle.status();
        let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str("# HELP ecluse_policy_revision_info The active policy revision\n# TYPE ecluse_policy_revision_info gauge\n");
        text.push_str(&format!(
            "ecluse_policy_revision_info{{revision=\"{}\",source=\"{}\",persisted=\"{}\"}} 1\n",
            escape(status.revision.as_deref().unwrap_or("none")),
            escape(&status.source),
            status.from_persisted
        ));
        text.push_str("# HELP ecluse_policy_ready 1 when a policy revision decides calls\n# TYPE ecluse_policy_ready gauge\n");
        text.push_str(&format!(
            "ecluse_policy_ready {}\n",
            u8::from(self.gate.snapshot.load().is_ready())
        ));
        text.push_str("# HELP ecluse_policy_last_rejection_timestamp_seconds When the last policy revision was rejected (0: none since the active one)\n# TYPE ecluse_policy_last_rejection_timestamp_seconds gauge\n");
        text.push_str(&format!(
            "ecluse_policy_last_rejection_timestamp_seconds {}\n",
            status.last_error.map(|r| r.at).unwrap_or(0)
        ));
        text
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (method, path) = (req.method.clone(), req.uri.path().to_string());
        let (status, content_type, body) = self.route(&method, &path).await;
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
