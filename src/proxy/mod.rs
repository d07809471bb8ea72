//! The HTTP side: every request, inside an intercepted tunnel or in plain
//! absolute form, is checked, read, decided and forwarded from
//! `request_filter`. The hook stays thin; the steps are functions.

pub mod checks;
pub mod forward;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use log::info;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

use crate::listener::connect::Authority;
use crate::listener::TunnelTarget;
use crate::llm;
use crate::policy::input::{self, Scheme};
use crate::policy::ConnectAction;
use crate::reply::ProxyError;
use crate::state::Shared;
use crate::upstream::resolve::Resolved;
use forward::{Forwarder, Outbound, OutboundBody};

pub struct EgressProxy {
    shared: Arc<Shared>,
    forwarder: Forwarder,
}

/// Per request: what the access log line reports.
pub struct RequestCtx {
    started: Instant,
    destination: Option<Authority>,
    action: &'static str,
    status: u16,
    outcome: String,
}

impl EgressProxy {
    pub fn new(shared: Arc<Shared>, forwarder: Forwarder) -> EgressProxy {
        EgressProxy { shared, forwarder }
    }

    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ProxyError> {
        let limits = &self.shared.config.limits;
        let req = session.req_header();
        let raw_head = session
            .downstream_session
            .as_http1()
            .map(|h1| h1.get_headers_raw_bytes());
        checks::check_head_size(
            req,
            raw_head.as_ref().map(|r| r.len()),
            limits.max_header_bytes,
            limits.max_header_count,
        )?;
        if let Some(raw) = &raw_head {
            checks::check_framing(raw)?;
        }
        let tunnel = tunnel_target(session);
        let req = session.req_header();
        let snapshot = self.shared.snapshot.load_full();
        let (authority, scheme, pinned, inspect) = match &tunnel {
            Some(t) => {
                checks::check_tunnel_authority(req, &t.authority)?;
                (t.authority.clone(), Scheme::Https, Some(t.resolved), true)
            }
            None => {
                let authority = checks::plain_destination(req)?;
                let destination = self.shared.destination(&snapshot, &authority, Scheme::Http);
                let decision = snapshot.decide_connect(&input::connect_input(
                    destination,
                    self.shared.source.clone(),
                ));
                info!(
                    "plain http {authority}: {} (rule {}): {}",
                    decision.action.as_str(),
                    decision.rule,
                    decision.reason
                );
                match decision.action {
                    ConnectAction::Deny => {
                        return Err(ProxyError::Denied {
                            reason: decision.reason,
                            rule: decision.rule,
                            status: 403,
                            decision_id: None,
                        })
                    }
                    ConnectAction::Tunnel => (authority, Scheme::Http, None, false),
                    ConnectAction::Intercept => (authority, Scheme::Http, None, true),
                }
            }
        };
        ctx.destination = Some(authority.clone());
        checks::check_no_upgrade(session.req_header())?;
        let resolved = match pinned {
            Some(r) => r,
            None => self.shared.resolver.resolve(&authority).await?,
        };
        let default_port = match scheme {
            Scheme::Https => 443,
            Scheme::Http => 80,
        };

        if !inspect {
            ctx.action = "pass";
            let header = forward::upstream_request_header(
                session.req_header(),
                &authority,
                default_port,
                None,
            )?;
            return self
                .send(
                    session,
                    ctx,
                    &authority,
                    resolved,
                    false,
                    header,
                    OutboundBody::Streamed,
                )
                .await;
        }

        ctx.action = "intercept";
        let body = read_body(
            session,
            limits.max_request_body,
            self.shared.config.timeouts.header_read,
        )
        .await?;
        let destination = self.shared.destination(&snapshot, &authority, scheme);
        let req = session.req_header();
        let method = req.method.as_str().to_string();
        let path = req
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let call = llm::parse_request(destination.api.as_deref(), &method, &path, &body);
        let request = input::request_doc(
            &method,
            &path,
            req.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
            body.len(),
            &call,
        );
        let input = input::request_input(destination, request, self.shared.source.clone());
        let decision = snapshot.decide_request(&input);
        info!(
            "request {} {authority}{path}: {} (rule {}, revision {}): {}",
            method,
            if decision.allowed { "allow" } else { "deny" },
            decision.rule,
            snapshot.revision,
            decision.reason
        );
        if !decision.allowed {
            return Err(ProxyError::Denied {
                reason: decision.reason,
                rule: decision.rule,
                status: decision.http_status,
                decision_id: None,
            });
        }
        let header = forward::upstream_request_header(
            session.req_header(),
            &authority,
            default_port,
            Some(body.len()),
        )?;
        let tls = scheme == Scheme::Https;
        self.send(
            session,
            ctx,
            &authority,
            resolved,
            tls,
            header,
            OutboundBody::Buffered(body),
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        authority: &Authority,
        resolved: Resolved,
        tls: bool,
        header: pingora_http::RequestHeader,
        body: OutboundBody,
    ) -> Result<(), ProxyError> {
        if self.shared.is_draining() {
            session.set_keepalive(None);
        }
        let outbound = Outbound {
            authority,
            addr: resolved.addr,
            tls,
            header,
            body,
        };
        let forwarded = self.forwarder.forward(session, outbound).await?;
        ctx.status = forwarded.status;
        ctx.outcome = match forwarded.aborted {
            Some(why) => format!("aborted after {} bytes: {why}", forwarded.body_bytes),
            None => format!("{} bytes", forwarded.body_bytes),
        };
        Ok(())
    }

    async fn send_error(&self, session: &mut Session, ctx: &mut RequestCtx, error: &ProxyError) {
        ctx.status = error.status();
        ctx.outcome = error.to_string();
        self.shared
            .metrics
            .count("ecluse_errors_total", &[("code", error.code())]);
        if session.response_written().is_some() {
            session.set_keepalive(None);
            return;
        }
        if !error.keeps_connection() {
            // Unread request bytes must never be parsed as the next request.
            session.set_keepalive(None);
        }
        let body = error.body();
        let Ok(mut header) = ResponseHeader::build(error.status(), Some(4)) else {
            return;
        };
        let _ = header.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        if let ProxyError::Denied {
            decision_id: Some(id),
            ..
        } = error
        {
            let _ = header.insert_header("x-ecluse-decision-id", id.as_str());
        }
        if session
            .write_response_header(Box::new(header), false)
            .await
            .is_ok()
        {
            let _ = session.write_response_body(Some(body), true).await;
        }
    }
}

/// The tunnel an intercepted request arrived through, if any.
fn tunnel_target(session: &Session) -> Option<TunnelTarget> {
    let digest = session.digest()?.proxy_digest.as_ref()?;
    digest
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<TunnelTarget>>()
        .map(|t| (**t).clone())
}

/// Reads the whole body, refusing it as soon as it exceeds `limit`.
async fn read_body(
    session: &mut Session,
    limit: usize,
    read_timeout: std::time::Duration,
) -> Result<Bytes, ProxyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|e| ProxyError::BadRequest(format!("client went away: {e}")))?;
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = session
        .downstream_session
        .read_request_body()
        .await
        .map_err(|e| match e.etype() {
            ErrorType::ReadTimedout => ProxyError::ClientTimeout(read_timeout),
            _ => ProxyError::BadRequest(format!("reading request body: {e}")),
        })?
    {
        if body.len() + chunk.len() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[async_trait]
impl ProxyHttp for EgressProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            destination: None,
            action: "refuse",
            status: 0,
            outcome: String::new(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let timeouts = &self.shared.config.timeouts;
        session.set_read_timeout(Some(timeouts.header_read));
        if let Some(secs) = Some(timeouts.keepalive_idle.as_secs()).filter(|s| *s > 0) {
            if !self.shared.is_draining() {
                session.set_keepalive(Some(secs));
            }
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let _in_flight = crate::metrics::track(&self.shared.metrics.requests_active);
        session.downstream_session.set_abort_on_close(true);
        if let Err(e) = self.handle(session, ctx).await {
            self.send_error(session, ctx, &e).await;
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        // request_filter answers every request, so pingora never asks for a
        // peer; refusing here keeps an unforeseen path from proxying blind.
        Error::e_explain(
            ErrorType::InternalError,
            "ecluse answers every request in request_filter",
        )
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        let status = if ctx.status == 0 {
            session
                .response_written()
                .map(|r| r.status.as_u16())
                .unwrap_or(0)
        } else {
            ctx.status
        };
        self.shared.metrics.request(ctx.action, status);
        let destination = ctx
            .destination
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into());
        info!(
            "{} {} {} -> {} {} in {:?} ({})",
            ctx.action,
            req.method,
            destination,
            req.uri.path(),
            status,
            ctx.started.elapsed(),
            ctx.outcome
        );
    }
}
