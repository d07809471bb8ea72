//! Sending a decided call upstream and streaming the answer back.
//!
//! ecluse forwards every call itself (pingora's connector: pool, upstream
//! TLS) rather than through pingora's proxy phase, because a decision needs
//! the whole body first and pingora can replay only 64 KiB of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use log::{debug, warn};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::client::HttpSession as ClientSession;
use pingora_core::protocols::http::v1::client::{
    http_req_header_to_wire, HttpSession as HttpV1Session,
};
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType, OrErr};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use tokio::io::AsyncWriteExt;

use super::outbound::HOP_BY_HOP;
use crate::authority::Authority;
use crate::config::Timeouts;
use crate::llm::usage::{ResponseObserver, Usage};
use crate::proxy::checks;
use crate::proxy::pool::UpstreamPool;
use crate::reply::{CallerApi, ProxyError};
use crate::route::answer::AnswerTranslator;
use crate::route::translate::target_error;

pub enum OutboundBody {
    /// Read in full before deciding; may be re-sent on a stale pooled connection.
    Buffered(Bytes),
    /// Relayed from the client as it arrives (uninspected plain HTTP).
    Streamed,
}

pub struct Outbound<'a> {
    pub authority: &'a Authority,
    pub addr: SocketAddr,
    pub tls: bool,
    pub header: RequestHeader,
    pub body: OutboundBody,
    /// Added to the response sent to the client.
    pub response_headers: Vec<(&'static str, String)>,
    /// Rewrite non-2xx answers into the error shape of the API the app
    /// called (rerouted calls).
    pub translate_errors: Option<CallerApi>,
    /// Rewrites a successful answer into the API the app called (a
    /// rerouted call translated to chat completions).
    pub answer: Option<Box<dyn AnswerTranslator>>,
}

/// Why an answer already under way could not be finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// The upstream's answer broke off: end of stream, a read error or
    /// malformed framing inside the body, or `timeouts.stream_idle`.
    Upstream(String),
    /// The client went away or could not be written to.
    Client(String),
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::Upstream(why) | Cut::Client(why) => f.write_str(why),
        }
    }
}

/// How a forwarded call ended.
#[derive(Debug, Default)]
pub struct Forwarded {
    pub status: u16,
    pub body_bytes: u64,
    /// Set when the exchange broke after the response started: the client's
    /// answer must end as cut short (connection closed, stream reset), since
    /// an error status can no longer be sent.
    pub aborted: Option<Cut>,
    pub usage: Usage,
    pub streamed: bool,
    /// When the first body byte arrived from the upstream.
    pub first_chunk_at: Option<std::time::Instant>,
}

/// Largest error body read whole to translate it.
const ERROR_BODY_CAP: usize = 1 << 20;

pub struct Forwarder {
    /// Opens new upstream connections (TCP, TLS) and pools HTTP/2 ones.
    connector: Connector,
    /// Idle HTTP/1 upstream connections.
    pool: Arc<UpstreamPool>,
    timeouts: Timeouts,
}

impl Forwarder {
    pub fn new(connector: Connector, pool_capacity: usize, timeouts: Timeouts) -> Forwarder {
        Forwarder {
            connector,
            pool: Arc::new(UpstreamPool::new(pool_capacity, timeouts.keepalive_idle)),
            timeouts,
        }
    }

    /// A parked connection to the peer if one is alive, else a new one;
    /// true when reused.
    async fn upstream_session(
        &self,
        peer: &HttpPeer,
    ) -> pingora_error::Result<(ClientSession, bool)> {
        if let Some(stream) = self.pool.take(peer.reuse_hash()) {
            let session = HttpV1Session::new_with_options(stream, peer);
            return Ok((ClientSession::H1(session), true));
        }
        self.connector.get_http_session(peer).await
    }

    /// Parks a connection whose exchange ended cleanly.
    async fn release(&self, upstream: ClientSession, peer: &HttpPeer) {
        match upstream {
            ClientSession::H1(mut h1) => {
                h1.respect_keepalive();
                if let Some(stream) = h1.reuse().await {
                    self.pool.park(peer.reuse_hash(), stream);
                    self.pool.sweep_periodically();
                }
            }
            other => {
                self.connector
                    .release_http_session(other, peer, Some(self.timeouts.keepalive_idle))
                    .await
            }
        }
    }

    fn peer(&self, out: &Outbound<'_>) -> HttpPeer {
        let sni = if out.tls && out.authority.ip().is_none() {
            out.authority.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(out.addr, out.tls, sni);
        peer.options.connection_timeout = Some(self.timeouts.upstream_connect);
        peer.options.total_connection_timeout =
            Some(self.timeouts.upstream_connect + self.timeouts.tls_handshake);
        peer.options.idle_timeout = Some(self.timeouts.keepalive_idle);
        peer.options.verify_cert = true;
        peer.options.verify_hostname = true;
        peer
    }

    pub async fn forward(
        &self,
        session: &mut Session,
        out: Outbound<'_>,
        capture_content: bool,
    ) -> Result<Forwarded, ProxyError> {
        let peer = self.peer(&out);
        let host = out.authority.to_string();
        let replayable = matches!(out.body, OutboundBody::Buffered(_));
        let mut attempts = 0;
        let mut upstream = loop {
            attempts += 1;
            let (upstream, reused) = self
                .upstream_session(&peer)
                .await
                .map_err(|e| upstream_error(&host, &e, self.timeouts.upstream_connect))?;
            let (phase, e) = match self.send_request(session, upstream, &peer, &out).await {
                Ok(upstream) => break upstream,
                Err(SendError::Answer(e)) => return Err(e),
                Err(SendError::Write(e)) => (Phase::Write, e),
                Err(SendError::Read(e)) => (Phase::Read, e),
            };
            // A streamed body is gone once sent: only a buffered one can go again.
            if !(replayable && may_resend(&out.header.method, phase, reused, attempts)) {
                return Err(upstream_error(&host, &e, self.timeouts.first_byte));
            }
            debug!("pooled connection to {host} failed ({e}); sending again on a new one");
        };
        let mut response = match upstream.response_header() {
            Some(h) => h.clone(),
            None => {
                return Err(ProxyError::Upstream {
                    host,
                    detail: "no response header".into(),
                })
            }
        };
        strip_hop_by_hop_response(&mut response);
        for (name, value) in &out.response_headers {
            let _ = response.insert_header(*name, value.as_str());
        }
        let status = response.status.as_u16();
        if let (Some(caller), true) = (out.translate_errors, status >= 400) {
            let result = self
                .answer_translated_error(session, &mut upstream, response, &host, caller)
                .await;
            if result.is_ok() && upstream.response_done() {
                self.release(upstream, &peer).await;
            }
            return result;
        }
        let content_type = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut observer =
            ResponseObserver::new(content_type.as_deref()).capturing_content(capture_content);
        observer.note_headers(&response.headers);
        let mut answer = out.answer;
        if let Some(translator) = answer.as_deref() {
            reframe_for_translation(&mut response, translator, &host)?;
        }
        // A translated answer is owed even for an empty target body: the
        // translator's verdict on it comes at its end.
        let end_of_stream = upstream.response_done() && answer.is_none();
        session
            .write_response_header(Box::new(response), end_of_stream)
            .await
            .map_err(|e| ProxyError::BadRequest(format!("client went away: {e}")))?;
        let mut result = Forwarded {
            status,
            streamed: observer.is_stream(),
            ..Forwarded::default()
        };
        if !end_of_stream {
            result.aborted = self
                .stream_body(
                    session,
                    &mut upstream,
                    &host,
                    &mut result.body_bytes,
                    &mut observer,
                    answer.as_deref_mut(),
                )
                .await
                .err();
        }
        result.usage = observer.finish();
        result.streamed = observer.is_stream();
        result.first_chunk_at = observer.first_chunk_at;
        if result.aborted.is_none() && upstream.response_done() {
            self.release(upstream, &peer).await;
        } else {
            session.set_keepalive(None);
        }
        Ok(result)
    }

    /// Reads a target's error answer whole and sends it in the shape of the
    /// API the app called.
    async fn answer_translated_error(
        &self,
        session: &mut Session,
        upstream: &mut ClientSession,
        mut response: ResponseHeader,
        host: &str,
        caller: CallerApi,
    ) -> Result<Forwarded, ProxyError> {
        let status = response.status.as_u16();
        let mut body = Vec::new();
        while !upstream.response_done() {
            let chunk =
                tokio::time::timeout(self.timeouts.stream_idle, upstream.read_response_body())
                    .await
                    .map_err(|_| ProxyError::UpstreamTimeout {
                        host: host.to_string(),
                        phase: "send its error body",
                        timeout: self.timeouts.stream_idle,
                    })?
                    .map_err(|e| ProxyError::Upstream {
                        host: host.to_string(),
                        detail: format!("reading the error body: {e}"),
                    })?;
            match chunk {
                Some(data) if body.len() + data.len() <= ERROR_BODY_CAP => {
                    body.extend_from_slice(&data)
                }
                Some(_) => {
                    return Err(ProxyError::Upstream {
                        host: host.to_string(),
                        detail: format!("error body larger than {ERROR_BODY_CAP} bytes"),
                    })
                }
                None => break,
            }
        }
        let rendered = target_error(caller, status, &body);
        let translated = rendered.body;
        response.remove_header(&http::header::TRANSFER_ENCODING);
        response.remove_header(&http::header::CONTENT_ENCODING);
        let _ = response.insert_header(http::header::CONTENT_TYPE, rendered.content_type);
        for (name, value) in rendered.headers {
            let _ = response.insert_header(name, value);
        }
        let _ = response.insert_header(http::header::CONTENT_LENGTH, translated.len().to_string());
        session
            .write_response_header(Box::new(response), false)
            .await
            .map_err(|e| ProxyError::BadRequest(format!("client went away: {e}")))?;
        let sent = translated.len() as u64;
        session
            .write_response_body(Some(translated), true)
            .await
            .map_err(|e| ProxyError::BadRequest(format!("client went away: {e}")))?;
        Ok(Forwarded {
            status,
            body_bytes: sent,
            ..Forwarded::default()
        })
    }

    async fn send_request(
        &self,
        session: &mut Session,
        upstream: ClientSession,
        peer: &HttpPeer,
        out: &Outbound<'_>,
    ) -> Result<ClientSession, SendError> {
        let mut upstream = match (upstream, &out.body) {
            (ClientSession::H1(h1), OutboundBody::Buffered(body)) if writes_whole(&out.header) => {
                ClientSession::H1(
                    send_whole_request(h1, &out.header, body, peer)
                        .await
                        .map_err(SendError::Write)?,
                )
            }
            (mut upstream, _) => {
                send_in_parts(session, &mut upstream, out).await?;
                upstream
            }
        };
        let host = out.authority.to_string();
        match tokio::time::timeout(self.timeouts.first_byte, final_head(&mut upstream, &host)).await
        {
            Ok(Ok(())) => Ok(upstream),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Answer(ProxyError::UpstreamTimeout {
                host,
                phase: "send a response header",
                timeout: self.timeouts.first_byte,
            })),
        }
    }

    /// Relays the body chunk by chunk as it arrives (SSE stays unbuffered),
    /// rewritten by `answer` when the app called another API than the
    /// target's, watching the client so that its disconnect cancels the
    /// upstream call.
    ///
    /// A client that leaves once the answer's final event (`[DONE]`,
    /// `message_stop`, ...) was written to it has the whole answer: the call
    /// is complete, not aborted, though the upstream's body has not ended.
    async fn stream_body(
        &self,
        session: &mut Session,
        upstream: &mut ClientSession,
        host: &str,
        sent: &mut u64,
        observer: &mut ResponseObserver,
        mut answer: Option<&mut (dyn AnswerTranslator + '_)>,
    ) -> Result<(), Cut> {
        let idle = self.timeouts.stream_idle;
        // Whether the final event has been written to the client.
        let mut delivered_end = false;
        let client_cut = |delivered_end: bool, why: String| {
            if delivered_end {
                debug!("client left after the answer's final event: {why}");
                Ok(())
            } else {
                Err(Cut::Client(why))
            }
        };
        let went_away = |e: Box<Error>| format!("client went away: {e}");
        let untranslatable =
            |e: String| Cut::Upstream(format!("the answer of {host} cannot be translated: {e}"));
        if upstream.response_done() {
            // The target's body was empty (or came with its head): the
            // translator still owes its verdict and its closing events.
            if let Some(translator) = answer.as_deref_mut() {
                let tail = translator.finish().map_err(untranslatable)?;
                *sent += tail.len() as u64;
                let written = match session
                    .write_response_body(Some(Bytes::from(tail)), true)
                    .await
                {
                    Ok(()) => session.downstream_session.finish_body().await.map(|_| ()),
                    Err(e) => Err(e),
                };
                if let Err(e) = written {
                    session.set_keepalive(None);
                    return Err(Cut::Client(went_away(e)));
                }
            }
            return Ok(());
        }
        loop {
            let chunk = tokio::select! {
                read = tokio::time::timeout(idle, upstream.read_response_body()) => match read {
                    Err(_) => {
                        return Err(Cut::Upstream(format!(
                            "upstream {host} sent nothing for {idle:?}"
                        )))
                    }
                    Ok(Err(e)) => {
                        return Err(Cut::Upstream(format!(
                            "reading the answer from {host}: {e}"
                        )))
                    }
                    Ok(Ok(chunk)) => chunk,
                },
                closed = client_gone(session) => {
                    session.set_keepalive(None);
                    return client_cut(delivered_end, closed);
                }
            };
            let done = upstream.response_done() || chunk.is_none();
            let written = match (chunk, answer.as_deref_mut()) {
                (Some(data), Some(translator)) => {
                    observer.feed(&data);
                    let mut out = translator.feed(&data).map_err(untranslatable)?;
                    if done {
                        out.extend(translator.finish().map_err(untranslatable)?);
                    }
                    *sent += out.len() as u64;
                    if out.is_empty() && !done {
                        Ok(())
                    } else {
                        session
                            .write_response_body(Some(Bytes::from(out)), done)
                            .await
                    }
                }
                (None, Some(translator)) => {
                    let tail = translator.finish().map_err(untranslatable)?;
                    *sent += tail.len() as u64;
                    session
                        .write_response_body(Some(Bytes::from(tail)), true)
                        .await
                }
                (Some(data), None) => {
                    *sent += data.len() as u64;
                    observer.feed(&data);
                    session.write_response_body(Some(data), done).await
                }
                (None, None) => session.write_response_body(None, true).await,
            };
            if let Err(e) = written {
                session.set_keepalive(None);
                return client_cut(delivered_end, went_away(e));
            }
            delivered_end = observer.saw_end();
            if done {
                if let Err(e) = session.downstream_session.finish_body().await {
                    session.set_keepalive(None);
                    return client_cut(delivered_end, went_away(e));
                }
                return Ok(());
            }
        }
    }
}

/// The head of an answer whose body is rewritten: the translated type,
/// and chunked framing since the rewritten length is known only at its end.
fn reframe_for_translation(
    response: &mut ResponseHeader,
    translator: &dyn AnswerTranslator,
    host: &str,
) -> Result<(), ProxyError> {
    // The target was asked for `identity`; a coded answer cannot be read.
    if let Some(coding) = response
        .headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .filter(|c| !c.eq_ignore_ascii_case("identity"))
    {
        return Err(ProxyError::Upstream {
            host: host.to_string(),
            detail: format!("answered with Content-Encoding {coding:?} though asked for identity; its answer cannot be translated"),
        });
    }
    response.remove_header(&http::header::CONTENT_LENGTH);
    response.remove_header(&http::header::CONTENT_ENCODING);
    let _ = response.insert_header(http::header::CONTENT_TYPE, translator.content_type());
    let _ = response.insert_header(http::header::TRANSFER_ENCODING, "chunked");
    Ok(())
}

/// Whether a buffered request can go out in one write (see
/// [`send_whole_request`]). pingora's client frames the response from the
/// request it wrote, and only for `HEAD` does that change the framing.
fn writes_whole(header: &RequestHeader) -> bool {
    header.method != http::Method::HEAD
}

/// Sends head and buffered body in one write. pingora's HTTP/1 client
/// flushes the head on its own, which costs a second write on the upstream
/// leg and wakes the upstream twice per call; at one connection that was a
/// tenth of the latency ecluse adds. The session handed back parses the
/// response exactly as if pingora had written the request: the head carries
/// `Content-Length` and no `Connection` header, so nothing it would read from
/// the written request differs.
///
/// Head and body go to the stream as one vectored write: rustls seals them
/// into the same records, and the body is not first copied behind the head.
async fn send_whole_request(
    h1: HttpV1Session,
    header: &RequestHeader,
    body: &[u8],
    peer: &HttpPeer,
) -> pingora_error::Result<HttpV1Session> {
    let head = request_head(header)?;
    let mut wire = bytes::Buf::chain(&head[..], body);
    let mut stream = h1.into_inner();
    stream
        .write_all_buf(&mut wire)
        .await
        .or_err(ErrorType::WriteError, "while writing the request")?;
    stream
        .flush()
        .await
        .or_err(ErrorType::WriteError, "flushing the request")?;
    Ok(HttpV1Session::new_with_options(stream, peer))
}

/// The request head's bytes on the wire; the body follows them.
fn request_head(header: &RequestHeader) -> pingora_error::Result<BytesMut> {
    http_req_header_to_wire(header).ok_or_else(|| {
        Error::explain(
            ErrorType::InvalidHTTPHeader,
            "request line holds a forbidden delimiter or an unsupported HTTP version",
        )
    })
}

/// pingora's own path: head, then the body as it comes (a streamed body, an
/// HTTP/2 upstream, a `HEAD`).
async fn send_in_parts(
    session: &mut Session,
    upstream: &mut ClientSession,
    out: &Outbound<'_>,
) -> Result<(), SendError> {
    upstream
        .write_request_header(Box::new(out.header.clone()))
        .await
        .map_err(SendError::Write)?;
    match &out.body {
        OutboundBody::Buffered(body) => {
            if !body.is_empty() {
                upstream
                    .write_request_body(body.clone(), true)
                    .await
                    .map_err(SendError::Write)?;
            }
        }
        OutboundBody::Streamed => loop {
            let chunk = session
                .downstream_session
                .read_request_body()
                .await
                .map_err(|e| {
                    SendError::Answer(ProxyError::BadRequest(format!("reading request body: {e}")))
                })?;
            match chunk {
                Some(data) => upstream
                    .write_request_body(data, false)
                    .await
                    .map_err(SendError::Write)?,
                None => break,
            }
        },
    }
    upstream
        .finish_request_body()
        .await
        .map_err(SendError::Write)
}

/// Resolves when the client closes its side (or resets its HTTP/2 stream).
async fn client_gone(session: &mut Session) -> String {
    match session.downstream_session.read_body_or_idle(true).await {
        Err(e) => format!("client closed the connection: {e}"),
        Ok(_) => std::future::pending().await,
    }
}

/// Reads response heads up to the final one (pingora's HTTP/1 client hands
/// back each interim head; h2 skips them). An answer ecluse did not ask for
/// or cannot frame is refused; the session is then dropped with it, so its
/// connection is closed and never pooled.
async fn final_head(upstream: &mut ClientSession, host: &str) -> Result<(), SendError> {
    loop {
        upstream
            .read_response_header()
            .await
            .map_err(SendError::Read)?;
        let status = upstream.response_header().map_or(0, |h| h.status.as_u16());
        let raw = match upstream {
            ClientSession::H1(ref h1) => Some(h1.get_headers_raw_bytes()),
            _ => None,
        };
        match judge_head(status, raw.as_deref()) {
            Head::Final => return Ok(()),
            Head::Interim => continue,
            Head::Refused(why) => {
                warn!("upstream {host}: {why}");
                return Err(SendError::Answer(ProxyError::Upstream {
                    host: host.to_string(),
                    detail: why,
                }));
            }
        }
    }
}

/// What a response head from the upstream is to ecluse.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The answer to relay.
    Final,
    /// An interim answer that says nothing about the outcome: the final one
    /// follows on the same connection.
    Interim,
    /// A head that cannot be relayed or framed safely.
    Refused(String),
}

/// Judges a response head by its status and, for HTTP/1, its raw bytes.
/// ecluse sends no `Expect` and never asks for an upgrade: `100 Continue`
/// and `103 Early Hints` are harmless and skipped, any other 1xx (a `101`
/// above all, after which the connection speaks another protocol) is an
/// answer to a question not asked. Both `Content-Length` and
/// `Transfer-Encoding` (pingora keeps the latter and drops the former)
/// means the upstream and another reader may frame the body differently.
fn judge_head(status: u16, raw: Option<&[u8]>) -> Head {
    match status {
        100 | 103 => return Head::Interim,
        101..=199 => {
            return Head::Refused(format!("sent an unsolicited {status} informational answer"))
        }
        _ => {}
    }
    match raw.map(checks::framing_problem) {
        Some(Some(why)) => Head::Refused(format!("answer with ambiguous framing: {why}")),
        _ => Head::Final,
    }
}

/// Why sending a call failed.
enum SendError {
    /// Writing the request failed: the upstream cannot have received it
    /// whole, so it cannot have acted on it.
    Write(Box<Error>),
    /// The request was written, then no usable response head came: the
    /// upstream may have received the call and acted on it.
    Read(Box<Error>),
    /// The client is answered with this as is; never sent again.
    Answer(ProxyError),
}

/// Where a failed call was when its upstream connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Write,
    Read,
}

/// At most this many connections are tried for one call.
const MAX_ATTEMPTS: u32 = 2;

/// Whether a call whose upstream connection failed may be sent again on a
/// new one. Only a reused connection is suspect: the upstream may have
/// closed it while it sat idle in the pool, and a new one then works; a new
/// connection that fails is the upstream's answer. Even then the call goes
/// again only if doing it twice is harmless: the upstream never received it
/// whole, or its method is idempotent.
fn may_resend(method: &http::Method, phase: Phase, reused: bool, attempts: u32) -> bool {
    reused && attempts < MAX_ATTEMPTS && (phase == Phase::Write || is_idempotent(method))
}

/// RFC 9110 9.2.2.
fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

/// Maps pingora's connection and protocol errors to what the client is told.
fn upstream_error(host: &str, e: &Error, timeout: Duration) -> ProxyError {
    let detail = e.to_string();
    match e.etype() {
        ErrorType::ConnectTimedout => ProxyError::UpstreamTimeout {
            host: host.to_string(),
            phase: "accept the connection",
            timeout,
        },
        ErrorType::ReadTimedout => ProxyError::UpstreamTimeout {
            host: host.to_string(),
            phase: "answer",
            timeout,
        },
        ErrorType::InvalidCert | ErrorType::HandshakeError | ErrorType::TLSHandshakeFailure
            if detail.to_ascii_lowercase().contains("certificate") =>
        {
            ProxyError::UpstreamCertificate {
                host: host.to_string(),
                detail,
            }
        }
        _ => {
            if detail.contains("InvalidCertificate") {
                return ProxyError::UpstreamCertificate {
                    host: host.to_string(),
                    detail,
                };
            }
            warn!("upstream {host}: {detail}");
            ProxyError::Upstream {
                host: host.to_string(),
                detail,
            }
        }
    }
}

/// Response headers that describe the upstream connection, not the answer.
/// `Transfer-Encoding` stays: pingora frames the client side from it.
pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    let named: Vec<String> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive")
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .filter(|h| **h != "transfer-encoding")
        .map(|h| h.to_string())
        .chain(named)
    {
        resp.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_request_is_head_then_body() {
        let req =
            RequestHeader::build("POST", b"https://api.openai.com/v1/embeddings", None).unwrap();
        let body = br#"{"model":"text-embedding-3-small","input":"x"}"#;
        let authority = Authority::new("api.openai.com", 443);
        let none = std::collections::BTreeMap::new();
        let spec = super::super::outbound::Spec {
            path: "/v1/embeddings",
            authority: &authority,
            default_port: 443,
            body: super::super::outbound::BodyFraming::Buffered(body.len()),
            rewrite: super::super::outbound::Rewrite::Inspected,
            add: &none,
            remove: &[],
        };
        let out = super::super::outbound::build(&req, &spec).unwrap();
        let head = request_head(&out).unwrap();
        let wire = [&head[..], &body[..]].concat();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head_len) = parsed.parse(&wire).unwrap() else {
            panic!("head incomplete");
        };
        assert_eq!(parsed.method, Some("POST"));
        assert_eq!(parsed.path, Some("/v1/embeddings"));
        let length = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
            });
        assert_eq!(length, Some(body.len()));
        assert_eq!(&wire[head_len..], &body[..]);
    }

    #[test]
    fn head_requests_take_pingoras_path() {
        // A response to HEAD has a Content-Length but no body; pingora knows
        // that only from the request it wrote itself.
        for (method, whole) in [("HEAD", false), ("GET", true), ("POST", true)] {
            let req = RequestHeader::build(method, b"/", None).unwrap();
            assert_eq!(writes_whole(&req), whole, "{method}");
        }
    }

    #[test]
    fn a_call_goes_again_only_when_doing_it_twice_is_harmless() {
        use Phase::{Read, Write};
        // (method, phase, reused, attempts so far, sent again)
        let table: &[(&str, Phase, bool, u32, bool)] = &[
            // The upstream may have acted on it: only idempotent methods.
            ("GET", Read, true, 1, true),
            ("HEAD", Read, true, 1, true),
            ("OPTIONS", Read, true, 1, true),
            ("PUT", Read, true, 1, true),
            ("DELETE", Read, true, 1, true),
            ("TRACE", Read, true, 1, true),
            ("POST", Read, true, 1, false),
            ("PATCH", Read, true, 1, false),
            ("CONNECT", Read, true, 1, false),
            // It never received the call whole: any method.
            ("POST", Write, true, 1, true),
            ("PATCH", Write, true, 1, true),
            ("GET", Write, true, 1, true),
            // A new connection that fails is the upstream's answer.
            ("GET", Read, false, 1, false),
            ("POST", Write, false, 1, false),
            // Once only.
            ("GET", Read, true, 2, false),
            ("POST", Write, true, 2, false),
        ];
        for (method, phase, reused, attempts, again) in table {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(
                may_resend(&method, *phase, *reused, *attempts),
                *again,
                "{method} {phase:?} reused={reused} attempts={attempts}"
            );
        }
    }

    #[test]
    fn heads_ecluse_did_not_ask_for_or_cannot_frame_are_refused() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n".as_slice();
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".as_slice();
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            .as_slice();
        assert_eq!(judge_head(200, Some(plain)), Head::Final);
        assert_eq!(judge_head(200, Some(chunked)), Head::Final);
        assert_eq!(judge_head(404, None), Head::Final);
        assert!(matches!(judge_head(200, Some(both)), Head::Refused(_)));
        assert!(matches!(judge_head(502, Some(both)), Head::Refused(_)));
        assert_eq!(judge_head(100, None), Head::Interim);
        assert_eq!(judge_head(103, None), Head::Interim);
        for status in [101, 102, 104, 199] {
            assert!(
                matches!(judge_head(status, None), Head::Refused(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn response_hop_by_hop() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/event-stream"),
        ] {
            resp.append_header(k, v).unwrap();
        }
        strip_hop_by_hop_response(&mut resp);
        assert!(!resp.headers.contains_key("connection"));
        assert!(!resp.headers.contains_key("x-internal"));
        assert!(!resp.headers.contains_key("keep-alive"));
        assert!(resp.headers.contains_key("transfer-encoding"));
        assert!(resp.headers.contains_key("content-type"));
    }
}
