//! The admin listener: health, readiness, metrics, the CA for apps to trust,
//! and what policy is active.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::state::Shared;

pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>) -> Admin {
        Admin { shared }
    }

    fn route(&self, method: &http::Method, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        let text = "text/plain; charset=utf-8";
        match (method.as_str(), path) {
            ("GET", "/healthz") => (StatusCode::OK, text, b"ok\n".to_vec()),
            ("GET", "/readyz") => {
                if self.shared.is_draining() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        b"draining: shutting down\n".to_vec(),
                    )
                } else {
                    (StatusCode::OK, text, b"ready\n".to_vec())
                }
            }
            ("GET", "/metrics") => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.shared.metrics.render().into_bytes(),
            ),
            ("GET", "/ca.pem") => (
                StatusCode::OK,
                "application/x-pem-file",
                self.shared.leaves.ca().cert_pem().as_bytes().to_vec(),
            ),
            ("GET", "/policy") => {
                let snapshot = self.shared.snapshot.load();
                let loaded_at = snapshot
                    .loaded_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let body = serde_json::json!({
                    "source": snapshot.source,
                    "revision": snapshot.revision,
                    "loaded_at": loaded_at,
                    "last_error": null,
                });
                (
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&body).unwrap_or_default(),
                )
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/ca.pem" | "/policy") => (
                StatusCode::METHOD_NOT_ALLOWED,
                text,
                b"method not allowed\n".to_vec(),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                text,
                b"not found: try /healthz, /readyz, /metrics, /ca.pem, /policy\n".to_vec(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let (status, content_type, body) = self.route(&req.method, req.uri.path());
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}
