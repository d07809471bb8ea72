//! The admin listener: health, readiness, metrics, the CA for apps to trust,
//! and what policy is active.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::config::AdminConfig;
use crate::state::{Gate, Lifecycle, Recorders};

pub struct Admin {
    gate: Arc<Gate>,
    recorders: Arc<Recorders>,
    lifecycle: Arc<Lifecycle>,
    reload_gate: ReloadGate,
}

impl Admin {
    pub fn new(gate: Arc<Gate>, recorders: Arc<Recorders>, lifecycle: Arc<Lifecycle>) -> Admin {
        let reload_gate = ReloadGate::new(&gate.config.admin);
        Admin {
            gate,
            recorders,
            lifecycle,
            reload_gate,
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
        if method == http::Method::POST && path == "/policy/reload" {
            let authorization = req
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if let Err(refusal) = self.reload_gate.admit(authorization, Instant::now()) {
                return refusal_response(&refusal);
            }
        }
        let (status, content_type, body) = self.route(&method, &path).await;
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// Who may trigger `POST /policy/reload`, and how often: each reload fetches
/// and compiles policy, so anyone who reaches the admin port could otherwise
/// keep ecluse busy.
pub struct ReloadGate {
    min_interval: Duration,
    token_file: Option<PathBuf>,
    last: Mutex<Option<Instant>>,
}

/// Why a reload request was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token, or not the one in `admin.reload_token_file`.
    Unauthorized,
    /// The token file cannot be read: closed rather than open.
    TokenUnavailable,
    /// A reload was accepted less than `admin.reload_min_interval` ago.
    TooSoon { retry_after_secs: u64 },
}

impl ReloadGate {
    pub fn new(config: &AdminConfig) -> ReloadGate {
        ReloadGate {
            min_interval: config.reload_min_interval,
            token_file: config.reload_token_file.clone(),
            last: Mutex::new(None),
        }
    }

    /// Authentication first, so that unauthenticated callers cannot use up
    /// the rate budget of the legitimate one.
    pub fn admit(&self, authorization: Option<&[u8]>, now: Instant) -> Result<(), Refusal> {
        if let Some(path) = &self.token_file {
            let expected = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::warn!(
                        "admin.reload_token_file {} cannot be read ({}); POST /policy/reload refused",
                        path.display(),
                        e.kind()
                    );
                    return Err(Refusal::TokenUnavailable);
                }
            };
            let expected = expected.trim_ascii();
            if expected.is_empty() || expected.contains(&b'\n') {
                log::warn!(
                    "admin.reload_token_file {} does not hold a single-line token; POST /policy/reload refused",
                    path.display()
                );
                return Err(Refusal::TokenUnavailable);
            }
            if !bearer_matches(authorization, expected) {
                return Err(Refusal::Unauthorized);
            }
        }
        rate_limit(&self.last, self.min_interval, now)
    }
}

/// Admits a reload at `now` unless one was admitted less than `min` before.
fn rate_limit(last: &Mutex<Option<Instant>>, min: Duration, now: Instant) -> Result<(), Refusal> {
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(previous) = *last {
        let elapsed = now.saturating_duration_since(previous);
        if elapsed < min {
            let wait = min - elapsed;
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Refusal::TooSoon { retry_after_secs });
        }
    }
    *last = Some(now);
    Ok(())
}

/// `Authorization: Bearer <token>` against the expected token. Both sides are
/// hashed first so that the comparison takes the same time whatever the
/// presented token's length or first differing byte.
pub fn bearer_matches(authorization: Option<&[u8]>, expected: &[u8]) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let (Some(scheme), Some(token)) = (value.get(..7), value.get(7..)) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let token = token.trim_ascii();
    let presented = ring::digest::digest(&ring::digest::SHA256, token);
    let expected = ring::digest::digest(&ring::digest::SHA256, expected);
    !token.is_empty()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_ref(),
            expected.as_ref(),
        ))
}

fn refusal_response(refusal: &Refusal) -> Response<Vec<u8>> {
    let mut builder =
        Response::builder().header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    let body: Vec<u8> = match refusal {
        Refusal::Unauthorized => {
            builder = builder.status(StatusCode::UNAUTHORIZED).header(
                http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"ecluse admin\"",
            );
            b"unauthorized: POST /policy/reload needs Authorization: Bearer <the token in admin.reload_token_file>\n".to_vec()
        }
        Refusal::TokenUnavailable => {
            builder = builder.status(StatusCode::SERVICE_UNAVAILABLE);
            b"the reload token file cannot be read; see ecluse's log\n".to_vec()
        }
        Refusal::TooSoon { retry_after_secs } => {
            builder = builder
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(http::header::RETRY_AFTER, retry_after_secs.to_string());
            format!(
                "too many reloads: at most one every admin.reload_min_interval; retry in {retry_after_secs}s\n"
            )
            .into_bytes()
        }
    };
    builder
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_match_exactly() {
        let expected = b"s3cret-token";
        for (header, ok) in [
            (Some(&b"Bearer s3cret-token"[..]), true),
            (Some(b"bearer s3cret-token"), true),
            (Some(b"BEARER   s3cret-token  "), true),
            (Some(b"Bearer s3cret-tokem"), false),
            (Some(b"Bearer s3cret-token2"), false),
            (Some(b"Bearer s3cret"), false),
            (Some(b"Bearer "), false),
            (Some(b"Bearer"), false),
            (Some(b"Basic s3cret-token"), false),
            (Some(b"s3cret-token"), false),
            (Some(b""), false),
            (None, false),
        ] {
            assert_eq!(bearer_matches(header, expected), ok, "{header:?}");
        }
        assert!(!bearer_matches(Some(b"Bearer "), b""));
    }

    #[test]
    fn reloads_are_spaced_by_the_minimum_interval() {
        let last = Mutex::new(None);
        let min = Duration::from_secs(10);
        let t0 = Instant::now();
        assert_eq!(rate_limit(&last, min, t0), Ok(()));
        assert_eq!(
            rate_limit(&last, min, t0),
            Err(Refusal::TooSoon {
                retry_after_secs: 10
            })
        );
        assert_eq!(
            rate_limit(&last, min, t0 + Duration::from_millis(2500)),
            Err(Refusal::TooSoon {
                retry_after_secs: 8
            })
        );
        // A refused request does not push the window back.
        assert_eq!(rate_limit(&last, min, t0 + min), Ok(()));
        assert!(rate_limit(&last, min, t0 + min + Duration::from_secs(9)).is_err());
        // 0s: no limit.
        let free = Mutex::new(None);
        for _ in 0..3 {
            assert_eq!(rate_limit(&free, Duration::ZERO, t0), Ok(()));
        }
    }

    #[test]
    fn the_token_is_checked_before_the_rate_and_read_at_each_request() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first-token\n").unwrap();
        let gate = ReloadGate::new(&AdminConfig {
            reload_min_interval: Duration::from_secs(60),
            reload_token_file: Some(file.clone()),
        });
        let t0 = Instant::now();
        // Wrong tokens do not use up the window.
        assert_eq!(gate.admit(None, t0), Err(Refusal::Unauthorized));
        assert_eq!(
            gate.admit(Some(b"Bearer nope"), t0),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(gate.admit(Some(b"Bearer first-token"), t0), Ok(()));
        assert!(matches!(
            gate.admit(Some(b"Bearer first-token"), t0),
            Err(Refusal::TooSoon { .. })
        ));
        // A rotated token applies at once.
        std::fs::write(&file, "second-token").unwrap();
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            gate.admit(Some(b"Bearer first-token"), later),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(gate.admit(Some(b"Bearer second-token"), later), Ok(()));
        // No readable token: closed.
        std::fs::remove_file(&file).unwrap();
        let much_later = later + Duration::from_secs(61);
        assert_eq!(
            gate.admit(Some(b"Bearer second-token"), much_later),
            Err(Refusal::TokenUnavailable)
        );
        std::fs::write(&file, "  \n").unwrap();
        assert_eq!(
            gate.admit(Some(b"Bearer "), much_later),
            Err(Refusal::TokenUnavailable)
        );
    }

    #[test]
    fn refusals_say_what_to_do() {
        let r = refusal_response(&Refusal::TooSoon {
            retry_after_secs: 4,
        });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[http::header::RETRY_AFTER], "4");
        let r = refusal_response(&Refusal::Unauthorized);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(http::header::WWW_AUTHENTICATE));
    }
}
