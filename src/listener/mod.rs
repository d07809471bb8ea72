//! The front end: pingora hands every accepted client connection here. It
//! reads the first request head; a `CONNECT` is decided (intercept, tunnel or
//! deny) and served here; anything else is given, bytes intact, to the HTTP
//! proxy. Intercepted tunnels get a minted leaf and then go to the same HTTP
//! proxy with their target recorded in the stream's proxy digest.

pub mod connect;
pub mod head_clock;
mod redirected;
pub mod transparent;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use log::{debug, info, warn};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::listeners::tls::Acceptor;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::TlsStream;
use pingora_core::protocols::{GetProxyDigest, Ssl, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_http::ResponseHeader;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::audit::new_decision_id;
use crate::authority::Authority;
use crate::event::{self, DecisionEvent, Stage};
use crate::metrics::track;
use crate::policy::input::{RedirectedConnectInput, Scheme};
use crate::policy::verdict::connect_verdict;
use crate::policy::ConnectAction;
use crate::proxy::EgressProxy;
use crate::reply::ProxyError;
use crate::state::{Gate, Recorders};
pub use crate::tunnel::TunnelTarget;
use crate::upstream::resolve::Resolved;
use connect::{parse_head, Head};
use head_clock::{ClockedStream, HeadClock};
pub use redirected::Transparent;

enum Plan {
    Tunnel(TcpStream),
    Intercept(TunnelTarget, Arc<rustls::ServerConfig>),
}

pub struct FrontEnd {
    gate: Arc<Gate>,
    recorders: Arc<Recorders>,
    http: Arc<HttpProxy<EgressProxy>>,
}

const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection Established\r\n\r\n";

impl FrontEnd {
    pub fn new(
        gate: Arc<Gate>,
        recorders: Arc<Recorders>,
        http: HttpProxy<EgressProxy>,
    ) -> FrontEnd {
        FrontEnd {
            gate,
            recorders,
            http: Arc::new(http),
        }
    }

    /// Decides a CONNECT, records the decision, and prepares what it asks
    /// for (resolution, upstream connection, leaf); nothing is written yet.
    /// `pinned`: the address a redirected connection was sent to, already
    /// checked against the name (see `resolve_original`); it is the one
    /// dialled.
    async fn plan_connect(
        &self,
        authority: &Authority,
        pinned: Option<Resolved>,
    ) -> Result<Plan, ProxyError> {
        self.recorders
            .audit
            .room()
            .await
            .map_err(ProxyError::Unavailable)?;
        let snapshot = self.gate.snapshot.load_full();
        let destination = self.gate.destination(&snapshot, authority, Scheme::Https);
        // A redirected connection's input also says where it was sent: it is
        // evaluated as recorded (no per-destination cache), so a replay of
        // the record gives the same decision.
        let (decision, redirected_input) = match &pinned {
            None => (
                snapshot.decide_connect_at(&destination, &self.gate.source_value),
                None,
            ),
            Some(original) => {
                let input =
                    RedirectedConnectInput::new(&destination.doc, &self.gate.source, original.addr);
                (snapshot.decide_connect(&input), event::raw_json(&input))
            }
        };
        let destination = &destination.doc;
        let decision_id = new_decision_id();
        let registered = destination.provider.is_some();
        let plan = match connect_verdict(decision.action, self.gate.config.mode, registered) {
            ConnectAction::Deny => Err(ProxyError::Denied {
                reason: decision.reason.clone(),
                rule: decision.rule.clone(),
                status: 403,
                decision_id: Some(decision_id.clone()),
            }),
            ConnectAction::Tunnel => match self.resolve(authority, pinned).await {
                Ok(resolved) => self.dial(authority, resolved).await.map(Plan::Tunnel),
                Err(e) => Err(e),
            },
            ConnectAction::Intercept => self.prepare_intercept(authority, pinned).await,
        };
        // A refusal is the decision itself; any other failure is an action
        // decided but not carried out.
        let failure = plan
            .as_ref()
            .err()
            .filter(|e| !matches!(e, ProxyError::Denied { .. }));
        let mut record = DecisionEvent::connect(
            &self.gate,
            Stage::Connect,
            &decision_id,
            &snapshot.revision,
            &decision,
            destination,
        );
        record.error = failure.map(|e| e.to_string());
        record.error_code = plan.as_ref().err().map(|e| e.code());
        if redirected_input.is_some() {
            record.input = redirected_input;
        }
        event::emit(&self.recorders, &record, event::SpanTarget::Connect);
        plan
    }

    async fn resolve(
        &self,
        authority: &Authority,
        pinned: Option<Resolved>,
    ) -> Result<Resolved, ProxyError> {
        match pinned {
            Some(resolved) => Ok(resolved),
            None => Ok(self.gate.resolver.resolve(authority).await?),
        }
    }

    async fn prepare_intercept(
        &self,
        authority: &Authority,
        pinned: Option<Resolved>,
    ) -> Result<Plan, ProxyError> {
        let resolved = self.resolve(authority, pinned).await?;
        let host_config = self
            .gate
            .leaves
            .server_config(&authority.host)
            .await
            .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
        Ok(Plan::Intercept(
            TunnelTarget {
                authority: authority.clone(),
                resolved,
                head_clock: Arc::new(HeadClock::new(self.gate.config.timeouts.header_read)),
            },
            host_config,
        ))
    }

    async fn dial(
        &self,
        authority: &Authority,
        resolved: Resolved,
    ) -> Result<TcpStream, ProxyError> {
        let timeout = self.gate.config.timeouts.upstream_connect;
        match tokio::time::timeout(timeout, TcpStream::connect(resolved.addr)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout {
                host: authority.to_string(),
                phase: "accept the connection",
                timeout,
            }),
            Ok(Err(e)) => Err(ProxyError::Upstream {
                host: authority.to_string(),
                detail: format!("connecting to {} failed: {e}", resolved.addr),
            }),
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
        }
    }

    /// Relays a tunnel; `answer` is what the client is told first (the
    /// CONNECT's 200; nothing for a redirected connection).
    async fn tunnel(
        &self,
        mut client: Stream,
        authority: &Authority,
        mut upstream: TcpStream,
        early: BytesMut,
        answer: Option<&[u8]>,
    ) {
        if let Some(answer) = answer {
            if write_flush(&mut client, answer).await.is_err() {
                return;
            }
        }
        if !early.is_empty() && upstream.write_all(&early).await.is_err() {
            return;
        }
        let _active = track(&self.recorders.metrics.tunnels_active);
        let idle = self.gate.config.timeouts.tunnel_idle;
        let (up, down) = relay(client, upstream, idle).await;
        debug!("tunnel {authority} closed: {up} bytes up, {down} bytes down");
    }

    async fn intercept(
        &self,
        stream: Stream,
        target: TunnelTarget,
        host_config: &Arc<rustls::ServerConfig>,
        early: BytesMut,
        shutdown: &ShutdownWatch,
    ) {
        let head_clock = target.head_clock.clone();
        // Boxed, so that what only the handshake needs (the per-connection
        // config and acceptor, the SNI witness) is freed once it is done
        // instead of living as long as the connection.
        let Some(tls) = Box::pin(self.accept_tls(stream, target, host_config, early)).await else {
            return;
        };
        let _active = track(&self.recorders.metrics.intercepts_active);
        // HTTP/1 heads come one at a time, so one clock can time them;
        // HTTP/2 interleaves the headers of many streams, and its header
        // blocks are timed at the frame layer by a clock of their own.
        match tls.selected_alpn_proto() {
            Some(ALPN::H2) => {
                let clock = Arc::new(HeadClock::new(head_clock.limit()));
                let stream = Box::new(ClockedStream::for_http2(tls, clock));
                ServerApp::process_new(&self.http, stream, shutdown).await;
            }
            _ => {
                let stream = Box::new(ClockedStream::new(tls, head_clock));
                self.serve_http1(stream, shutdown).await;
            }
        }
    }

    /// The TLS handshake with the client, with the leaf minted for the
    /// CONNECT host; failures are counted and logged here.
    async fn accept_tls(
        &self,
        stream: Stream,
        target: TunnelTarget,
        host_config: &Arc<rustls::ServerConfig>,
        early: BytesMut,
    ) -> Option<TlsStream<L4Stream>> {
        let metrics = &self.recorders.metrics;
        // The TLS acceptor needs the concrete TCP stream; a client that sent
        // its ClientHello before reading our 200 gets those bytes replayed.
        let mut stream = into_l4(stream)?;
        stream.rewind(&early);
        drop(early);
        let host = target.authority.host.clone();
        let header = ResponseHeader::build(200, Some(0)).ok()?;
        stream.set_proxy_digest(ProxyDigest::new(
            Box::new(header),
            Some(Box::new(Arc::new(target))),
        ));
        let (config, witness) = crate::tls::connection_config(host_config);
        let acceptor = Acceptor::from_server_config(config);
        let handshake_timeout = self.gate.config.timeouts.tls_handshake;
        match tokio::time::timeout(handshake_timeout, acceptor.tls_handshake(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                let text = e.to_string();
                if let Some(sni) = witness.mismatch() {
                    warn!("refused TLS inside tunnel to {host}: client named {sni:?} in SNI (SNI must match the CONNECT host)");
                } else if text.contains("received fatal alert") {
                    metrics
                        .tls_client_rejections
                        .fetch_add(1, Ordering::Relaxed);
                    warn!("client rejected the certificate minted for {host} (does it trust ecluse's CA, or pin certificates?): {text}");
                } else {
                    warn!("TLS handshake with client for {host} failed: {text}");
                }
                None
            }
            Err(_) => {
                metrics
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!("TLS handshake with client for {host} timed out after {handshake_timeout:?}");
                None
            }
        }
    }

    /// pingora's HTTP/1 keep-alive loop (its `ServerApp` for an
    /// `HttpServerApp`), except that the wait for each request's first byte
    /// happens here. pingora's request future is sized for a whole proxied
    /// call (~20 KiB) and its session holds a 4 KiB head buffer; waiting
    /// inside them made every idle kept-alive connection hold both.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        // What pingora's loop gives a new connection's first request.
        const FIRST_REQUEST_KEEPALIVE: u64 = 60;
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            // The keep-alive timeout pingora applies to this read: its own on
            // the first request, then what the proxy set (`keepalive_idle`).
            let idle = match self.gate.config.timeouts.keepalive_idle {
                idle if first || idle.is_zero() => Duration::from_secs(FIRST_REQUEST_KEEPALIVE),
                idle => idle,
            };
            if !wait_for_request(&mut stream, idle, shutdown).await {
                return;
            }
            let mut session = ServerSession::new_http1(stream);
            if first {
                session.set_keepalive((!*shutdown.borrow()).then_some(FIRST_REQUEST_KEEPALIVE));
                session.set_keepalive_reuses_remaining(
                    self.http
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
                first = false;
            } else if let Some(settings) = settings.take() {
                // ecluse never enables HTTP/1.1 pipelining, so these carry no
                // bytes read ahead that the peeked byte could overtake.
                settings.apply_to_session(&mut session);
            }
            let Some(reused) = self.http.process_new_http(session, shutdown).await else {
                return;
            };
            (stream, settings) = reused.consume();
        }
    }
}

/// Waits until the client sends the next request (true), closes, fails, stays
/// silent for `idle`, or the server shuts down (false). The byte that ends
/// the wait stays in the stream for pingora's head reader.
async fn wait_for_request(stream: &mut Stream, idle: Duration, shutdown: &ShutdownWatch) -> bool {
    let mut shutdown = shutdown.clone();
    let mut byte = [0u8; 1];
    tokio::select! {
        biased;
        peeked = tokio::time::timeout(idle, stream.try_peek(&mut byte)) => {
            matches!(peeked, Ok(Ok(true)))
        }
        _ = shutdown.changed() => false,
    }
}

#[async_trait]
impl ServerApp for FrontEnd {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let metrics = &self.recorders.metrics;
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        let _active = track(&metrics.connections_active);
        let limit = self.gate.config.limits.max_connections;
        if metrics.connections_active.load(Ordering::Relaxed) > limit as i64 {
            metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
            warn!("refused a client connection: at the limit of {limit} concurrent connections");
            reply(&mut stream, &ProxyError::Overloaded { limit }).await;
            return None;
        }
        let limits = &self.gate.config.limits;
        // The steps before the connection settles are boxed: a future is as
        // large as its largest step, and this one stays allocated for the
        // whole life of every (mostly idle) connection.
        let read = tokio::time::timeout(
            self.gate.config.timeouts.header_read,
            Box::pin(read_head(
                &mut stream,
                limits.max_header_bytes,
                limits.max_header_count,
            )),
        )
        .await;
        let (head, mut buf) = match read {
            Err(_) => {
                let e = ProxyError::ClientTimeout(self.gate.config.timeouts.header_read);
                debug!("closing a client connection: {e}");
                reply(&mut stream, &e).await;
                return None;
            }
            Ok(Err(e)) => {
                info!("refused a client request head: {e}");
                reply(&mut stream, &e).await;
                return None;
            }
            Ok(Ok(None)) => return None,
            Ok(Ok(Some(found))) => found,
        };
        match head {
            Head::Other => {
                let stream = rewind(stream, &buf)?;
                ServerApp::process_new(&self.http, stream, shutdown).await
            }
            Head::Connect { authority, len } => {
                let early = buf.split_off(len);
                drop(buf);
                match Box::pin(self.plan_connect(&authority, None)).await {
                    Err(e) => {
                        metrics.count("ecluse_errors_total", &[("code", e.code())]);
                        info!("CONNECT {authority} refused: {e}");
                        reply(&mut stream, &e).await;
                    }
                    Ok(Plan::Tunnel(upstream)) => {
                        self.tunnel(
                            stream,
                            &authority,
                            upstream,
                            early,
                            Some(CONNECT_ESTABLISHED),
                        )
                        .await
                    }
                    Ok(Plan::Intercept(target, host_config)) => {
                        if write_flush(&mut stream, CONNECT_ESTABLISHED).await.is_ok() {
                            self.intercept(stream, target, &host_config, early, shutdown)
                                .await;
                        }
                    }
                }
                None
            }
        }
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.http).await;
    }
}

/// Reads until a complete head. `Ok(None)` when the client closed first.
async fn read_head(
    stream: &mut Stream,
    max_bytes: usize,
    max_fields: usize,
) -> Result<Option<(Head, BytesMut)>, ProxyError> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ProxyError::BadRequest(format!("reading request head: {e}")))?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(ProxyError::BadRequest(
                "connection closed inside the request head".into(),
            ));
        }
        if let Some(head) = parse_head(&buf, max_bytes, max_fields)? {
            return Ok(Some((head, buf)));
        }
    }
}

type L4Stream = pingora_core::protocols::l4::stream::Stream;

/// The concrete TCP stream behind pingora's boxed stream.
fn into_l4(stream: Stream) -> Option<L4Stream> {
    match stream.into_any().downcast::<L4Stream>() {
        Ok(l4) => Some(*l4),
        Err(_) => {
            warn!("cannot take over a connection: unexpected stream type");
            None
        }
    }
}

/// Puts bytes already read back in front of the stream for the next reader.
fn rewind(stream: Stream, bytes: &[u8]) -> Option<Stream> {
    let mut l4 = into_l4(stream)?;
    l4.rewind(bytes);
    Some(Box::new(l4))
}

async fn write_flush(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Answers a refused connection and closes it.
async fn reply(stream: &mut Stream, error: &ProxyError) {
    let _ = write_flush(stream, &error.to_h1_response()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

/// Copies both ways until both sides close or nothing moves for `idle`.
/// Returns the bytes sent up and down.
async fn relay(client: Stream, upstream: TcpStream, idle: Duration) -> (u64, u64) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut up_buf = vec![0u8; 16 * 1024];
    let mut down_buf = vec![0u8; 16 * 1024];
    let (mut up, mut down) = (0u64, 0u64);
    let (mut client_open, mut upstream_open) = (true, true);
    while client_open || upstream_open {
        tokio::select! {
            read = client_read.read(&mut up_buf), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = upstream_write.shutdown().await;
                }
                Ok(n) => {
                    if upstream_write.write_all(&up_buf[..n]).await.is_err() {
                        break;
                    }
                    up += n as u64;
                }
            },
            read = upstream_read.read(&mut down_buf), if upstream_open => match read {
                Ok(0) | Err(_) => {
                    upstream_open = false;
                    let _ = client_write.shutdown().await;
                }
                Ok(n) => {
                    if client_write.write_all(&down_buf[..n]).await.is_err()
                        || client_write.flush().await.is_err()
                    {
                        break;
                    }
                    down += n as u64;
                }
            },
            _ = tokio::time::sleep(idle) => {
                debug!("tunnel idle for {idle:?}: closing");
                break;
            }
        }
    }
    (up, down)
}
