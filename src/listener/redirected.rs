//! The transparent listener: connections redirected by `ecluse iptables`
//! arrive here without a CONNECT. Each is turned into the CONNECT it stands
//! for and handed to the same front end: the name is the TLS SNI (or the
//! plain HTTP `Host`), the port and the address dialled are the original
//! destination's, and the name must resolve to that address. From there the
//! connect decision, the minted leaf, the tunnel or the refusal, and the
//! audit records are the explicit proxy's own.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, info, warn};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::ext::get_original_dest;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::transparent::{is_loop, read_opening, Opening, Refusal};
use super::{into_l4, reply, FrontEnd, L4Stream, Plan};
use crate::audit::new_decision_id;
use crate::authority::Authority;
use crate::event::{self, DecisionEvent, Stage};
use crate::metrics::track;
use crate::policy::input::{RedirectedConnectInput, Scheme};
use crate::policy::{ConnectAction, ConnectDecision};
use crate::reply::ProxyError;

/// The front end for redirected connections, sharing the explicit proxy's.
pub struct Transparent {
    front: FrontEnd,
    /// Every transparent listener address (loop checks).
    listen: Vec<SocketAddr>,
}

impl FrontEnd {
    /// The transparent listeners' app, bound at `listen`.
    pub fn transparent(&self, listen: Vec<SocketAddr>) -> Transparent {
        Transparent {
            front: FrontEnd {
                gate: self.gate.clone(),
                recorders: self.recorders.clone(),
                http: self.http.clone(),
            },
            listen,
        }
    }
}

impl Transparent {
    /// Logs and records a connection refused before policy, with the rule
    /// naming why. The policy is still asked (about the name, or the bare
    /// address when there is none) and its answer kept as the record's
    /// `result` with the input it was given: `audit replay` reproduces it,
    /// while `action`, `rule` and `reason` say what ecluse did.
    async fn refuse(&self, refusal: &Refusal, original: SocketAddr, name: Option<&Authority>) {
        let (gate, recorders) = (&self.front.gate, &self.front.recorders);
        warn!("refused a redirected connection to {original}: {refusal}");
        recorders
            .metrics
            .count("ecluse_errors_total", &[("code", refusal.rule())]);
        let _ = recorders.audit.room().await;
        let snapshot = gate.snapshot.load_full();
        let named = name
            .cloned()
            .unwrap_or_else(|| Authority::new(&original.ip().to_string(), original.port()));
        let destination = gate.destination(&snapshot, &named, Scheme::Https);
        let input = RedirectedConnectInput::new(&destination.doc, &gate.source, original);
        let policy = snapshot.decide_connect(&input);
        let decision = ConnectDecision {
            action: ConnectAction::Deny,
            reason: refusal.to_string(),
            rule: refusal.rule().to_string(),
        };
        let decision_id = new_decision_id();
        let mut record = DecisionEvent::connect(
            gate,
            Stage::Connect,
            &decision_id,
            &snapshot.revision,
            &decision,
            &destination.doc,
        );
        record.input = event::raw_json(&input);
        record.result = event::raw_json(&policy);
        record.error = Some(refusal.to_string());
        event::emit(recorders, &record, event::SpanTarget::Connect);
    }

    /// Reads until the opening is understood; `Ok(None)` when the client
    /// closed first.
    async fn read_opening(
        &self,
        stream: &mut L4Stream,
        original: SocketAddr,
    ) -> Result<Option<(Opening, BytesMut)>, Refusal> {
        let limits = &self.front.gate.config.limits;
        let mut buf = BytesMut::with_capacity(2048);
        loop {
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(4096);
            }
            // A client that resets before saying anything is not a decision.
            let n = match stream.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    debug!(
                        "redirected connection to {original} failed before its first bytes: {e}"
                    );
                    return Ok(None);
                }
            };
            if n == 0 {
                return Ok(None);
            }
            if let Some(opening) = read_opening(
                &buf,
                original,
                limits.max_header_bytes,
                limits.max_header_count,
            )? {
                return Ok(Some((opening, buf)));
            }
        }
    }
}

#[async_trait]
impl ServerApp for Transparent {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let front = &self.front;
        let gate = &front.gate;
        let metrics = &front.recorders.metrics;
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        let _active = track(&metrics.connections_active);
        let limit = gate.config.limits.max_connections;
        if metrics.connections_active.load(Ordering::Relaxed) > limit as i64 {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            warn!(
                "refused a redirected connection: at the limit of {limit} concurrent connections"
            );
            return None;
        }
        let mut l4 = into_l4(stream)?;
        // SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6), through pingora's
        // safe wrapper: the address the client connected to before REDIRECT.
        let original = match get_original_dest(l4.as_raw_fd()) {
            Ok(Some(addr)) => addr,
            failed => {
                let why = match failed {
                    Err(e) => e.to_string(),
                    Ok(_) => "not available on this system".into(),
                };
                // Never empty: the service exists only with an address.
                let at = self.listen.first().copied();
                let at = at.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
                self.refuse(&Refusal::NoOriginal(why), at, None).await;
                return None;
            }
        };
        if self.listen.iter().any(|l| is_loop(original, *l)) {
            self.refuse(&Refusal::Loop { original }, original, None)
                .await;
            return None;
        }
        let timeout = gate.config.timeouts.header_read;
        let read = tokio::time::timeout(timeout, Box::pin(self.read_opening(&mut l4, original)));
        let (opening, buf) = match read.await {
            Err(_) => {
                debug!("closing a redirected connection to {original}: nothing readable in {timeout:?}");
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Err(refusal)) => {
                self.refuse(&refusal, original, None).await;
                return None;
            }
            Ok(Ok(Some(found))) => found,
        };
        match opening {
            Opening::Tls { sni } => {
                let authority = Authority::new(&sni, original.port());
                let pinned = match gate.resolver.resolve_original(&authority, original).await {
                    Ok(pinned) => pinned,
                    Err(e) => {
                        let refusal = Refusal::NotOriginal(e.to_string());
                        self.refuse(&refusal, original, Some(&authority)).await;
                        return None;
                    }
                };
                match Box::pin(front.plan_connect(&authority, Some(pinned))).await {
                    Err(e) => {
                        metrics.count("ecluse_errors_total", &[("code", e.code())]);
                        // No HTTP channel before TLS: closing is the answer.
                        info!("redirected connection to {original} as {authority} refused: {e}");
                    }
                    Ok(Plan::Tunnel(upstream)) => {
                        front
                            .tunnel(Box::new(l4), &authority, upstream, buf, None)
                            .await
                    }
                    Ok(Plan::Intercept(target, host_config)) => {
                        front
                            .intercept(Box::new(l4), target, &host_config, buf, shutdown)
                            .await
                    }
                }
                None
            }
            Opening::Http {
                authority,
                rewritten,
                head_len,
            } => {
                if let Err(e) = gate.resolver.resolve_original(&authority, original).await {
                    let refusal = Refusal::NotOriginal(e.to_string());
                    self.refuse(&refusal, original, Some(&authority)).await;
                    let mut stream: Stream = Box::new(l4);
                    reply(
                        &mut stream,
                        &ProxyError::ForbiddenDestination(refusal.to_string()),
                    )
                    .await;
                    return None;
                }
                // The proxy's plain-HTTP path takes it from here, as if the
                // client had sent the absolute form to the explicit proxy.
                let mut replay = rewritten;
                replay.extend_from_slice(buf.get(head_len..).unwrap_or_default());
                drop(buf);
                l4.rewind(&replay);
                ServerApp::process_new(&front.http, Box::new(l4), shutdown).await
            }
        }
    }

    async fn cleanup(&self) {}
}
