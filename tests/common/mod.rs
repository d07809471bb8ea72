//! Test harness: a test PKI, mock upstreams speaking real HTTP and TLS on
//! port 0, the ecluse binary started with a generated config, and clients.
#![allow(dead_code)]

pub mod git_http;
pub mod git_repo;
#[path = "../support/pki.rs"]
mod pki;
#[allow(unused_imports)]
pub use pki::TestPki;
pub mod node;
pub mod python;
pub mod sdk;
pub mod targets;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A request as the mock upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum MockResponse {
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// Server-sent events, `gap` apart; the stream ends after the last.
    Sse { events: Vec<String>, gap: Duration },
    /// Accept the request and never answer.
    Hang,
    /// Close the connection without answering, as an upstream does when it
    /// drops an idle keep-alive connection just as a request arrives.
    Abort,
    /// These bytes as the answer, written as they are: for what hyper would
    /// never send (a body cut short, broken framing, an unasked 1xx). Only a
    /// mock started with [`MockUpstream::start_raw`] sends them.
    Raw { bytes: Bytes, then: AfterRaw },
}

/// What a raw mock does with the connection once its bytes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRaw {
    /// Wait for the next request on it.
    KeepAlive,
    /// Close it (TLS close_notify, then FIN).
    Close,
    /// Keep it open and send nothing more.
    Hang,
}

impl MockResponse {
    pub fn json(status: u16, body: serde_json::Value) -> MockResponse {
        MockResponse::Full {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> MockResponse + Send + Sync>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// SSE streams whose client went away before the last event.
    pub cancelled_streams: Arc<AtomicUsize>,
    /// SSE streams sent in full.
    pub completed_streams: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, tls, handler)
    }

    /// Serves on a listener the test bound (in a network namespace, ...).
    pub fn start_on(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> MockUpstream {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(AtomicUsize::new(0));
        let completed = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let acceptor = tls.map(TlsAcceptor::from);
        let (req_log, cancelled2, completed2) =
            (requests.clone(), cancelled.clone(), completed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                accepted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let (req_log, cancelled, completed) =
                    (req_log.clone(), cancelled2.clone(), completed2.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let handler = handler.clone();
                        let req_log = req_log.clone();
                        let (cancelled, completed) = (cancelled.clone(), completed.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let recorded = Recorded {
                                method: parts.method.to_string(),
                                path: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                version: format!("{:?}", parts.version),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (
                                            k.to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let response = handler(&recorded);
                            req_log.lock().unwrap().push(recorded);
                            if matches!(response, MockResponse::Abort) {
                                // An error from the service makes hyper close the connection.
                                return Err(std::io::Error::other("aborted by the test"));
                            }
                            Ok(render(response, cancelled, completed).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        MockUpstream {
            addr,
            requests,
            cancelled_streams: cancelled,
            completed_streams: completed,
            connections,
            task,
        }
    }

    /// A mock that reads HTTP/1.1 requests itself (bodies framed by
    /// `Content-Length` only) and answers with `MockResponse::Raw` bytes,
    /// or closes (`Abort`) or hangs (`Hang`).
    pub async fn start_raw(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
    ) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (accepted, req_log) = (connections.clone(), requests.clone());
        let acceptor = tls.map(|mut config| {
            // Raw HTTP/1.1 only: never agree to h2.
            Arc::make_mut(&mut config).alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsAcceptor::from(config)
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                accepted.fetch_add(1, Ordering::SeqCst);
                let (handler, req_log, acceptor) =
                    (handler.clone(), req_log.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_raw(tls, handler, req_log).await;
                            }
                        }
                        None => serve_raw(tcp, handler, req_log).await,
                    }
                });
            }
        });
        MockUpstream {
            addr,
            requests,
            cancelled_streams: Arc::new(AtomicUsize::new(0)),
            completed_streams: Arc::new(AtomicUsize::new(0)),
            connections,
            task,
        }
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn render(
    response: MockResponse,
    cancelled: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
) -> hyper::Response<BoxBody> {
    match response {
        MockResponse::Full {
            status,
            headers,
            body,
        } => {
            let mut builder = hyper::Response::builder().status(status);
            for (k, v) in headers {
                builder = builder.header(k, v);
            }
            builder.body(Full::new(body).boxed()).unwrap()
        }
        MockResponse::Sse { events, gap } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for (i, event) in events.iter().enumerate() {
                    if i > 0 {
                        // The pacing is the mock's behaviour: a stream
                        // whose events arrive apart.
                        tokio::time::sleep(gap).await;
                    }
                    let frame = Frame::data(Bytes::from(format!("data: {event}\n\n")));
                    if tx.send(Ok(frame)).await.is_err() {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
                // Wait until hyper has pulled the last frame before counting.
                let _ = tx.reserve().await;
                completed.fetch_add(1, Ordering::SeqCst);
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            hyper::Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        MockResponse::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        MockResponse::Abort => unreachable!("answered by closing the connection"),
        MockResponse::Raw { .. } => panic!("raw answers need MockUpstream::start_raw"),
    }
}

/// One connection of a raw mock: request after request until the handler
/// says otherwise or the peer closes.
async fn serve_raw<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: Handler,
    req_log: Arc<Mutex<Vec<Recorded>>>,
) {
    let mut buf = Vec::new();
    while let Some(recorded) = read_raw_request(&mut stream, &mut buf).await {
        let response = handler(&recorded);
        req_log.lock().unwrap().push(recorded);
        match response {
            MockResponse::Raw { bytes, then } => {
                if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                match then {
                    AfterRaw::KeepAlive => continue,
                    AfterRaw::Close => {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    AfterRaw::Hang => std::future::pending::<()>().await,
                }
            }
            MockResponse::Abort => return,
            MockResponse::Hang => std::future::pending::<()>().await,
            _ => panic!("a raw mock answers with Raw, Abort or Hang"),
        }
    }
}

/// Reads one request (head, then a `Content-Length` body); `None` at end
/// of stream. Bytes read past it stay in `buf` for the next one.
async fn read_raw_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Option<Recorded> {
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    parsed.parse(&buf[..head_end]).ok()?;
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let method = parsed.method?.to_string();
    let path = parsed.path?.to_string();
    let version = format!("HTTP/1.{}", parsed.version?);
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = Bytes::copy_from_slice(&buf[head_end..head_end + length]);
    buf.drain(..head_end + length);
    Some(Recorded {
        method,
        path,
        version,
        headers,
        body,
    })
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ecluse binary running with a generated config.
pub struct Proxy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
    state_dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ecluse_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ecluse")
}

impl Proxy {
    /// Starts ecluse with `extra` YAML appended to listen/admin/state_dir.
    pub fn start(extra: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Proxy {
        Self::start_with_env(dir, extra, &[])
    }

    /// Starts ecluse with extra environment variables (OTEL_*, ...).
    pub fn start_with_env(dir: tempfile::TempDir, extra: &str, envs: &[(&str, &str)]) -> Proxy {
        Self::launch(dir, extra, envs, false)
    }

    /// Starts ecluse in `dir` as its working directory, with the default
    /// relative `state_dir` (`./.ecluse`).
    pub fn start_in_working_dir(dir: tempfile::TempDir, extra: &str) -> Proxy {
        Self::launch(dir, extra, &[], true)
    }

    fn launch(
        mut dir: tempfile::TempDir,
        extra: &str,
        envs: &[(&str, &str)],
        relative_state: bool,
    ) -> Proxy {
        for _ in 0..5 {
            // Bound together, so that the two differ (one after the other,
            // the kernel may hand out the same released port twice).
            let (listen, admin) = {
                let a = StdListener::bind("127.0.0.1:0").unwrap();
                let b = StdListener::bind("127.0.0.1:0").unwrap();
                (a.local_addr().unwrap(), b.local_addr().unwrap())
            };
            let (state_setting, state_dir) = if relative_state {
                ("./.ecluse".to_string(), dir.path().join(".ecluse"))
            } else {
                let state = dir.path().join("state");
                (state.display().to_string(), state)
            };
            let config = format!(
                "listen: {listen}\nadmin_listen: {admin}\nstate_dir: {state_setting}\n{extra}"
            );
            let config_path = dir.path().join("ecluse.yaml");
            std::fs::write(&config_path, config).unwrap();
            let log_path = dir.path().join("ecluse.log");
            let log = std::fs::File::create(&log_path).unwrap();
            let mut command = Command::new(ecluse_bin());
            if relative_state {
                command.current_dir(dir.path());
            }
            let child = command
                .args(["run", "--config"])
                .arg(&config_path)
                .envs(envs.iter().copied())
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut proxy = Proxy {
                child,
                listen,
                admin,
                dir,
                log_path,
                state_dir,
            };
            if proxy.wait_healthy(Duration::from_secs(30)) {
                return proxy;
            }
            // A port taken between probe and bind: try other ports.
            let logs = proxy.logs();
            if !logs.contains("ddress already in use") {
                panic!("ecluse did not start:\n{logs}");
            }
            let _ = proxy.child.kill();
            let _ = proxy.child.wait();
            dir = std::mem::replace(&mut proxy.dir, tempfile::tempdir().unwrap());
        }
        panic!("could not find free ports for ecluse");
    }

    fn wait_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // Healthy, and the proxy listener (bound on pingora's own
            // thread, maybe after the admin one) accepts connections.
            if let Some((200, _)) = admin_get(self.admin, "/healthz") {
                if std::net::TcpStream::connect(self.listen).is_ok() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.state_dir().join("ca.pem")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).expect("admin endpoint answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Connects and sends CONNECT; returns the stream after a 200, or the
    /// status and full response text.
    pub async fn connect(&self, authority: &str) -> Result<TcpStream, (u16, String)> {
        let mut tcp = TcpStream::connect(self.listen).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let head = read_until_blank_line(&mut tcp).await;
        let status = parse_status(&head);
        if status == 200 {
            return Ok(tcp);
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
        Err((status, format!("{head}{}", String::from_utf8_lossy(&rest))))
    }

    /// CONNECT then a TLS handshake trusting ecluse's CA.
    pub async fn connect_tls(
        &self,
        authority: &str,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = self.connect(authority).await.expect("CONNECT accepted");
        let host = authority.rsplit_once(':').unwrap().0;
        tls_connect(tcp, host, &[self.ca_path()], alpn)
            .await
            .unwrap()
    }
}

/// How often `wait_until` looks again.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `done` until it holds or `timeout` passes; whether it held. Tests
/// wait on what they expect (a log line, an audit record, a reload), never a
/// guessed time.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`wait_until`] for async tests: the runtime keeps running between polls.
pub async fn wait_until_async(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// GET on the admin listener with a raw HTTP/1.0 request.
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = StdTcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = parse_status(&out);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

pub fn parse_status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub async fn read_until_blank_line<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn client_config(ca_files: &[PathBuf], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for path in ca_files {
        let pem = std::fs::read_to_string(path).unwrap();
        for cert in ecluse::tls::ca::parse_pem_certs(&pem).unwrap() {
            roots.add(cert).unwrap();
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub async fn tls_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    host: &str,
    ca_files: &[PathBuf],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
    let connector = TlsConnector::from(client_config(ca_files, alpn));
    let name = ServerName::try_from(host.to_string()).unwrap();
    connector.connect(name, stream).await
}

/// One HTTP/1.1 exchange with hyper over an established stream.
pub async fn http1_send<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> hyper::Response<Incoming>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await.unwrap()
}

/// One HTTP/2 exchange with hyper over an established stream. An error is
/// the stream's: reset before its head arrived (a reset discards the frames
/// still queued for the stream).
pub async fn http2_send<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> hyper::Result<hyper::Response<Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await
}

pub async fn body_text(response: hyper::Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn post_json(host: &str, path: &str, body: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post(path)
        .header("host", host)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-client-key")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Runs curl, returning (exit code, stdout, stderr).
pub fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// YAML for `upstream:` pointing `authorities` at `addr`, trusting `ca`.
pub fn upstream_yaml(resolve: &[(&str, SocketAddr)], extra_ca: Option<&Path>) -> String {
    let mut out = String::from("upstream:\n  resolve:\n");
    for (authority, addr) in resolve {
        out.push_str(&format!("    \"{authority}\": \"{addr}\"\n"));
    }
    if let Some(ca) = extra_ca {
        out.push_str(&format!("  extra_ca_file: {}\n", ca.display()));
    }
    out
}

/// A minimal OpenAI chat completion answer.
pub fn chat_completion(model: &str, content: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    })
}

/// The chunks of a streamed chat completion, as SSE `data:` payloads.
pub fn chat_stream_events(model: &str, words: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = words
        .iter()
        .map(|w| {
            serde_json::json!({
                "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]
            })
            .to_string()
        })
        .collect();
    events.push(
        serde_json::json!({
            "id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": words.len()}
        })
        .to_string(),
    );
    events.push("[DONE]".to_string());
    events
}

/// A mock OpenAI: chat completions (JSON or SSE when `stream` is set),
/// embeddings and models; echoes what it was sent in `x-mock-*` headers.
pub fn openai_handler() -> Handler {
    Arc::new(|req: &Recorded| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        let model = body["model"].as_str().unwrap_or("unknown").to_string();
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v1/chat/completions") if body["stream"] == true => MockResponse::Sse {
                events: chat_stream_events(&model, &["Hello", " from", " the", " mock"]),
                gap: Duration::from_millis(20),
            },
            ("POST", "/v1/chat/completions") => {
                MockResponse::json(200, chat_completion(&model, "Hello from the mock"))
            }
            ("GET", "/v1/models") => MockResponse::json(
                200,
                serde_json::json!({"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 0, "owned_by": "mock"}]}),
            ),
            ("POST", "/echo") => MockResponse::Full {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/octet-stream".into()),
                    ("x-received-bytes".into(), req.body.len().to_string()),
                ],
                body: req.body.clone(),
            },
            _ => MockResponse::json(
                404,
                serde_json::json!({"error": {"message": "no such mock route"}}),
            ),
        }
    })
}

/// Copies a directory tree (policies, persisted state) for a test to edit.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of the repository's default policies at `to`.
pub fn copy_default_policies(to: &std::path::Path) {
    copy_dir(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/policies")),
        to,
    );
}

/// Runs `command` to its end and returns its output; fails the test with
/// `what` and the command's stderr when it does not succeed.
pub fn run_ok(command: &mut std::process::Command, what: &str) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Asserts that `ecluse check --offline` accepts the config at `path`.
pub fn assert_config_checks(path: &std::path::Path) {
    let out = std::process::Command::new(ecluse_bin())
        .args(["check", "--offline", "--config"])
        .arg(path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}
