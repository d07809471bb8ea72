//! Load harness: a mock OpenAI upstream (TLS, keep-alive, optional paced
//! SSE), ecluse from the optimised build, and a client that speaks
//! CONNECT + TLS + HTTP/1.1 keep-alive. Every scenario is compared with the
//! same client talking to the same mock directly, in the same run.
//!
//!   cargo bench --bench load                  # all scenarios, 10 s each
//!   cargo bench --bench load -- --duration 5 --only intercept,tunnel
//!   cargo bench --bench load -- --peers       # also Squid ssl-bump and mitmproxy
//!   cargo bench --bench load -- --allocations # also allocation calls per call
//!
//! Figures: requests/s, latency percentiles, ecluse CPU per request (from
//! /proc), and ecluse's peak RSS (VmHWM). With `--allocations` (root, perf),
//! each ecluse scenario runs a second time with perf counting the
//! allocator's calls through uprobes; that run is not timed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------- options

struct Options {
    duration: Duration,
    connections: usize,
    only: Option<Vec<String>>,
    peers: bool,
    allocations: bool,
}

fn options() -> Options {
    let mut o = Options {
        duration: Duration::from_secs(10),
        connections: 32,
        only: None,
        peers: false,
        allocations: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--duration" => {
                o.duration =
                    Duration::from_secs_f64(args[i + 1].parse().expect("--duration SECONDS"));
                i += 1;
            }
            "--connections" => {
                o.connections = args[i + 1].parse().expect("--connections N");
                i += 1;
            }
            "--only" => {
                o.only = Some(args[i + 1].split(',').map(str::to_string).collect());
                i += 1;
            }
            "--peers" => o.peers = true,
            "--allocations" => o.allocations = true,
            // cargo bench passes --bench; ignore what is not ours.
            _ => {}
        }
        i += 1;
    }
    o
}

// ---------------------------------------------------------------- PKI

#[path = "../tests/support/pki.rs"]
mod pki;
use pki::TestPki as Pki;

fn client_config(ca_files: &[&Path]) -> Arc<rustls::ClientConfig> {
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

// ---------------------------------------------------------------- mock

const CHAT_ANSWER: &str = r#"{"id":"chatcmpl-load","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the load-test mock."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}"#;

/// SSE answers: `x-mock-events` events, `x-mock-gap-ms` apart.
async fn mock_service(
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>, Infallible> {
    let events: usize = req
        .headers()
        .get("x-mock-events")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let gap: u64 = req
        .headers()
        .get("x-mock-gap-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = req.into_body().collect().await;
    if events == 0 {
        return Ok(hyper::Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(CHAT_ANSWER.as_bytes())).boxed())
            .unwrap());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
    tokio::spawn(async move {
        for i in 0..events {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(gap)).await;
            }
            let chunk = format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token{i} \"}}}}]}}\n\n");
            if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":24,\"completion_tokens\":20}}\n\ndata: [DONE]\n\n")))).await;
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Ok(hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}

/// The first connection error of a run, to say why a system failed.
static FIRST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Connections the mock accepted (to see whether proxies reuse them).
static MOCK_ACCEPTS: AtomicU64 = AtomicU64::new(0);

/// Runs the mock on its own one-thread runtime so that its share of the
/// machine is the same in every scenario.
fn start_mock(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                MOCK_ACCEPTS.fetch_add(1, Ordering::Relaxed);
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service_fn(mock_service))
                            .await;
                    }
                });
            }
        });
    });
    rx.recv().unwrap()
}

// ---------------------------------------------------------------- ecluse

struct Running {
    child: Child,
    listen: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An OTLP/HTTP sink: answers every export with an empty 200.
fn start_otlp_sink() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = service_fn(|req: hyper::Request<Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

fn start_ecluse(extra: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("ecluse.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: {listen}\nadmin_listen: {admin}\nstate_dir: {}\naudit: {{ file: {} }}\n{extra}",
            dir.path().join("state").display(),
            dir.path().join("audit.log").display()
        ),
    )
    .unwrap();
    // ECLUSE_BENCH_BIN: another build (an earlier commit's) to compare
    // against in the same session.
    let binary =
        std::env::var_os("ECLUSE_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_ecluse").into());
    let child = Command::new(binary)
        .args(["run", "--config"])
        .arg(&config)
        // Per-call log lines are `info`; ECLUSE_BENCH_RUST_LOG=info times them.
        .env(
            "RUST_LOG",
            std::env::var("ECLUSE_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(admin);
    wait_port(listen);
    Running { child, listen, dir }
}

/// (user+system CPU seconds, peak RSS in KiB) of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

// ---------------------------------------------------------------- client

#[derive(Clone)]
enum Route {
    Direct {
        addr: SocketAddr,
    },
    /// Through a proxy, with CONNECT naming `authority`.
    Proxy {
        proxy: SocketAddr,
        authority: String,
    },
}

#[derive(Clone)]
struct Target {
    route: Route,
    /// TLS server name.
    host: String,
    /// The Host header (with the port when it is not 443).
    host_header: String,
    tls: Arc<rustls::ClientConfig>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    new_connection_per_request: bool,
    /// Send a different `x-data-retention` on every call (31 days and up,
    /// which the default policies allow to OpenAI): the decision's inputs
    /// then differ per call and every decision is evaluated, as for
    /// workloads whose classifications, retentions or PII counts vary.
    vary_retention: bool,
}

/// Numbers the varied retentions, across every worker.
static RETENTION_SEQUENCE: AtomicU64 = AtomicU64::new(0);

async fn open(target: &Target) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = match &target.route {
        Route::Direct { addr } => TcpStream::connect(addr).await?,
        Route::Proxy { proxy, authority } => {
            let mut tcp = TcpStream::connect(proxy).await?;
            tcp.set_nodelay(true)?;
            tcp.write_all(
                format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
            )
            .await?;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if tcp.read(&mut byte).await? == 0 {
                    return Err(std::io::Error::other("proxy closed during CONNECT"));
                }
                head.push(byte[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                return Err(std::io::Error::other(format!(
                    "CONNECT refused: {}",
                    String::from_utf8_lossy(&head)
                )));
            }
            tcp
        }
    };
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(target.tls.clone());
    connector
        .connect(ServerName::try_from(target.host.clone()).unwrap(), tcp)
        .await
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
) -> hyper::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn request(target: &Target) -> hyper::Request<Full<Bytes>> {
    let mut builder = hyper::Request::post("/v1/chat/completions")
        .header("host", target.host_header.as_str())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-load-test");
    for (k, v) in &target.headers {
        builder = builder.header(*k, v.as_str());
    }
    if target.vary_retention {
        // Past the 4096 remembered decisions of a revision before repeating.
        let days = 31 + RETENTION_SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        builder = builder.header("x-data-retention", format!("{days}d"));
    }
    builder.body(Full::new(target.body.clone())).unwrap()
}

struct LoadResult {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// Runs `connections` workers for `duration` on a client runtime of its own.
fn run_load(target: Target, connections: usize, duration: Duration) -> LoadResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::<u32>::with_capacity(1 << 20)));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..connections {
            let (target, stop, errors, latencies) = (
                target.clone(),
                stop.clone(),
                errors.clone(),
                latencies.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut local = Vec::with_capacity(1 << 16);
                let mut sender = None;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    if sender.is_none() || target.new_connection_per_request {
                        sender = match open(&target).await {
                            Ok(io) => handshake(io).await.ok(),
                            Err(e) => {
                                FIRST_ERROR
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(|| e.to_string());
                                None
                            }
                        };
                        if sender.is_none() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let s = sender.as_mut().unwrap();
                    let ok = match s.send_request(request(&target)).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = resp.into_body().collect().await;
                            if status != 200 {
                                let text = body
                                    .map(|b| {
                                        String::from_utf8_lossy(&b.to_bytes())
                                            .chars()
                                            .collect::<String>()
                                    })
                                    .unwrap_or_default();
                                let text = text
                                    .find("ERR_")
                                    .map(|i| text[i..].chars().take(160).collect::<String>())
                                    .unwrap_or_else(|| text.chars().take(300).collect());
                                FIRST_ERROR
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(|| format!("status {status}: {text}"));
                            }
                            status == 200
                        }
                        Err(e) => {
                            FIRST_ERROR
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| e.to_string());
                            false
                        }
                    };
                    if ok {
                        local.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                    }
                }
                latencies.lock().unwrap().extend(local);
            }));
        }
        tokio::time::sleep(duration).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        let elapsed = started.elapsed();
        let mut latencies_us = std::mem::take(&mut *latencies.lock().unwrap());
        latencies_us.sort_unstable();
        LoadResult {
            requests: latencies_us.len() as u64,
            errors: errors.load(Ordering::Relaxed),
            elapsed,
            latencies_us,
        }
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i])
}

// ---------------------------------------------------------------- report

struct Row {
    scenario: String,
    system: String,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    cpu_us_per_req: Option<f64>,
    rss_mib: Option<f64>,
    allocations_per_req: Option<f64>,
}

fn row(
    scenario: &str,
    system: &str,
    r: &LoadResult,
    usage: Option<((f64, u64), (f64, u64))>,
) -> Row {
    let rps = r.requests as f64 / r.elapsed.as_secs_f64();
    let (cpu, rss) = match usage {
        Some(((cpu0, _), (cpu1, hwm))) => (
            Some(if r.requests > 0 {
                (cpu1 - cpu0) * 1e6 / r.requests as f64
            } else {
                0.0
            }),
            Some(hwm as f64 / 1024.0),
        ),
        None => (None, None),
    };
    Row {
        scenario: scenario.to_string(),
        system: system.to_string(),
        rps,
        p50: percentile(&r.latencies_us, 0.50),
        p99: percentile(&r.latencies_us, 0.99),
        p999: percentile(&r.latencies_us, 0.999),
        errors: r.errors,
        cpu_us_per_req: cpu,
        rss_mib: rss,
        allocations_per_req: None,
    }
}

fn print_rows(rows: &[Row]) {
    println!();
    println!("| scenario | system | req/s | p50 µs | p99 µs | p99.9 µs | errors | proxy CPU µs/req | proxy peak RSS MiB | allocation calls/req |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
            r.scenario,
            r.system,
            r.rps,
            r.p50,
            r.p99,
            r.p999,
            r.errors,
            r.cpu_us_per_req
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.rss_mib
                .map(|m| format!("{m:.1}"))
                .unwrap_or_else(|| "-".into()),
            r.allocations_per_req
                .map(|a| format!("{a:.0}"))
                .unwrap_or_else(|| "-".into()),
        );
    }
}

// ---------------------------------------------------------------- scenarios

const SMALL_CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the quarterly roadmap in three bullet points."}]}"#;

fn main() {
    let o = options();
    let wanted = |name: &str| {
        o.only
            .as_ref()
            .is_none_or(|list| list.iter().any(|n| n == name))
    };
    let pki = Pki::new();
    let mock = start_mock(pki.server_config_with_alpn(
        &[
            "api.openai.com",
            "api.mistral.ai",
            "tunnel.example",
            "localhost",
        ],
        &[b"http/1.1"],
    ));
    let mut rows = Vec::new();
    let resolve = format!(
        "upstream:\n  extra_ca_file: {}\n  resolve:\n    \"api.openai.com:443\": \"{mock}\"\n    \"api.mistral.ai:443\": \"{mock}\"\n    \"tunnel.example:443\": \"{mock}\"\n",
        pki.ca_path.display()
    );
    let key_file = pki.dir.path().join("mistral-key");
    std::fs::write(&key_file, "load-test-key").unwrap();
    let targets = format!(
        "targets:\n  mistral:\n    base_url: https://api.mistral.ai/v1\n    api_key_file: {}\n    models: {{ \"*\": mistral-large-latest }}\n",
        key_file.display()
    );
    let upstream_ca = client_config(&[&pki.ca_path]);
    let base = |route: Route, host: &str, tls: Arc<rustls::ClientConfig>| Target {
        route,
        host: host.to_string(),
        host_header: host.to_string(),
        tls,
        headers: Vec::new(),
        body: Bytes::from_static(SMALL_CHAT.as_bytes()),
        new_connection_per_request: false,
        vary_retention: false,
    };
    let direct = base(
        Route::Direct { addr: mock },
        "api.openai.com",
        upstream_ca.clone(),
    );

    let mut measure = |scenario: &str,
                       target: Target,
                       through: Option<&Running>,
                       connections: usize,
                       duration: Duration| {
        let before = through.map(|r| proc_usage(r.child.id()));
        let accepts = MOCK_ACCEPTS.load(Ordering::Relaxed);
        let target_again = target.clone();
        let result = run_load(target, connections, duration);
        let accepts = MOCK_ACCEPTS.load(Ordering::Relaxed) - accepts;
        let after = through.map(|r| proc_usage(r.child.id()));
        eprintln!("  (mock accepted {accepts} connections)");
        let system = if through.is_some() {
            "ecluse"
        } else {
            "direct"
        };
        let mut r = row(scenario, system, &result, before.zip(after));
        eprintln!(
            "{scenario:<28} {system:<8} {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>7.0} µs  errors {}",
            r.rps, r.p50, r.p99, r.errors
        );
        if let (true, Some(running)) = (o.allocations, through) {
            r.allocations_per_req = allocations_per_call(running.child.id(), || {
                run_load(
                    target_again,
                    connections,
                    duration.min(Duration::from_secs(3)),
                )
                .requests
            });
            eprintln!("  allocation calls per call: {:?}", r.allocations_per_req);
        }
        rows.push(r);
    };

    // ECLUSE_BENCH_POLICY_DIR: measure with another policy (for example a
    // trivial one, to see what the default policies cost).
    let policy = std::env::var("ECLUSE_BENCH_POLICY_DIR")
        .map(|d| format!("policy: {{ dir: {d} }}\n"))
        .unwrap_or_default();
    let ecluse = start_ecluse(&format!("{resolve}{targets}{policy}"));
    let ecluse_ca = ecluse.dir.path().join("state/ca.pem");
    let through_ecluse = client_config(&[&ecluse_ca]);
    let via = |proxy: SocketAddr, host: &str| Route::Proxy {
        proxy,
        authority: format!("{host}:443"),
    };
    let proxied = |host: &str| base(via(ecluse.listen, host), host, through_ecluse.clone());

    if wanted("intercept") {
        measure(
            "keep-alive c=32 (direct)",
            direct.clone(),
            None,
            o.connections,
            o.duration,
        );
        measure(
            "intercept+policy+pass c=32",
            proxied("api.openai.com"),
            Some(&ecluse),
            o.connections,
            o.duration,
        );
    }
    if wanted("evaluated") {
        let mut t = proxied("api.openai.com");
        t.vary_retention = true;
        measure(
            "intercept+evaluated c=32",
            t.clone(),
            Some(&ecluse),
            o.connections,
            o.duration,
        );
        measure("intercept+evaluated c=1", t, Some(&ecluse), 1, o.duration);
    }
    if wanted("latency") {
        measure(
            "keep-alive c=1 (direct)",
            direct.clone(),
            None,
            1,
            o.duration,
        );
        measure(
            "intercept+policy+pass c=1",
            proxied("api.openai.com"),
            Some(&ecluse),
            1,
            o.duration,
        );
    }
    if wanted("reroute") {
        let mut t = proxied("api.openai.com");
        t.headers.push(("x-data-classification", "personal".into()));
        measure(
            "intercept+reroute c=32",
            t,
            Some(&ecluse),
            o.connections,
            o.duration,
        );
    }
    if wanted("tunnel") {
        let mut t = base(
            via(ecluse.listen, "tunnel.example"),
            "tunnel.example",
            upstream_ca.clone(),
        );
        t.headers.clear();
        measure(
            "blind tunnel c=32",
            t,
            Some(&ecluse),
            o.connections,
            o.duration,
        );
    }
    if wanted("new-conn") {
        let mut d = direct.clone();
        d.new_connection_per_request = true;
        measure(
            "new TLS conn/req (direct)",
            d,
            None,
            o.connections,
            o.duration,
        );
        let mut t = proxied("api.openai.com");
        t.new_connection_per_request = true;
        measure(
            "new CONNECT+TLS/req",
            t,
            Some(&ecluse),
            o.connections,
            o.duration,
        );
    }
    drop(ecluse);

    if wanted("tracing") {
        let sink = start_otlp_sink();
        let traced = start_ecluse(&format!(
            "{resolve}telemetry: {{ endpoint: \"http://{sink}\", protocol: http/protobuf }}\n"
        ));
        let ca = traced.dir.path().join("state/ca.pem");
        let t = base(
            via(traced.listen, "api.openai.com"),
            "api.openai.com",
            client_config(&[&ca]),
        );
        measure(
            "intercept+tracing on c=32",
            t,
            Some(&traced),
            o.connections,
            o.duration,
        );
    }

    if wanted("sse") {
        let fresh = start_ecluse(&resolve);
        let ca = fresh.dir.path().join("state/ca.pem");
        let mut t = base(
            via(fresh.listen, "api.openai.com"),
            "api.openai.com",
            client_config(&[&ca]),
        );
        t.headers = vec![
            ("x-mock-events", "20".into()),
            ("x-mock-gap-ms", "50".into()),
        ];
        t.body = Bytes::from_static(
            br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        measure(
            "500 concurrent SSE streams",
            t,
            Some(&fresh),
            500,
            o.duration,
        );
    }
    if wanted("idle") {
        let fresh = start_ecluse(&resolve);
        let ca = fresh.dir.path().join("state/ca.pem");
        let t = base(
            via(fresh.listen, "api.openai.com"),
            "api.openai.com",
            client_config(&[&ca]),
        );
        let idle = idle_connections(&fresh, t, 1000);
        eprintln!(
            "1000 idle intercepted connections: ecluse peak RSS {:.1} MiB, {:.1} KiB each (VmRSS {:.1} MiB with 1 held, {:.1} MiB with 1000)",
            idle.peak_mib, idle.per_connection_kib, idle.rss_one_mib, idle.rss_all_mib
        );
        rows.push(Row {
            scenario: format!(
                "1000 idle intercepted conns, {:.1} KiB each",
                idle.per_connection_kib
            ),
            system: "ecluse".into(),
            rps: 0.0,
            p50: 0.0,
            p99: 0.0,
            p999: 0.0,
            errors: 0,
            cpu_us_per_req: None,
            rss_mib: Some(idle.peak_mib),
            allocations_per_req: None,
        });
    }
    if o.peers {
        peers::run(&o, &pki, mock, &direct, &mut rows);
    }
    print_rows(&rows);
}

/// Where the proxy's allocations enter its allocator: mimalloc's entry
/// points when the binary links it (Rust's global allocator calls the
/// aligned ones), glibc's otherwise (the process's own libc, from its
/// memory map). Each is probed under the `ecluse_alloc` group.
fn allocator_entry_points(pid: u32) -> Option<(String, [&'static str; 3])> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let exe = exe.to_string_lossy().to_string();
    let functions = Command::new("perf")
        .args(["probe", "-x", &exe, "--funcs=mi_*"])
        .output()
        .ok()?;
    if String::from_utf8_lossy(&functions.stdout)
        .lines()
        .any(|f| f == "mi_malloc_aligned")
    {
        return Some((
            exe,
            [
                "mi_malloc_aligned",
                "mi_zalloc_aligned",
                "mi_realloc_aligned",
            ],
        ));
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let libc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| path.contains("/libc.so"))?
        .to_string();
    Some((libc, ["malloc", "calloc", "realloc"]))
}

/// Allocation calls ecluse makes per call while `load` runs, counted by
/// perf through uprobes on its allocator. A uprobe traps on every call, so
/// this run's times mean nothing; `None` when perf cannot probe (not root,
/// no perf), with the reason on stderr.
fn allocations_per_call(pid: u32, load: impl FnOnce() -> u64) -> Option<f64> {
    let Some((object, functions)) = allocator_entry_points(pid) else {
        eprintln!("  (perf cannot read the proxy's allocator: allocations not counted)");
        return None;
    };
    // The probes of an earlier run may point into another build.
    let _ = Command::new("perf")
        .args(["probe", "-q", "-d", "ecluse_alloc:*"])
        .stderr(Stdio::null())
        .status();
    let mut events = Vec::new();
    for (i, function) in functions.iter().enumerate() {
        let event = format!("ecluse_alloc:call{i}");
        let added = Command::new("perf")
            .args(["probe", "-q", "-x", &object, "--add"])
            .arg(format!("{event}={function}"))
            .status();
        if !matches!(added, Ok(s) if s.success()) {
            eprintln!("  (perf cannot probe {function} in {object}: allocations not counted)");
            return None;
        }
        events.push(event);
    }
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("perf-stat.csv");
    let mut perf = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            &events.join(","),
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(&out)
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // perf attaches before the first call is counted.
    std::thread::sleep(Duration::from_millis(500));
    let requests = load();
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    let _ = perf.wait();
    let text = std::fs::read_to_string(&out).ok()?;
    let calls: f64 = text
        .lines()
        .filter(|l| l.contains("ecluse_alloc:"))
        .filter_map(|l| l.split(',').next()?.parse::<f64>().ok())
        .sum();
    (requests > 0).then(|| calls / requests as f64)
}

struct IdleMemory {
    peak_mib: f64,
    rss_one_mib: f64,
    rss_all_mib: f64,
    /// What each connection beyond the first adds to the resident set.
    per_connection_kib: f64,
}

/// Opens `n` intercepted connections, one call each, then holds them idle.
/// The resident set is read with one connection held (the leaf minted, the
/// upstream connection pooled, the workers' allocator arenas warm) and with
/// all `n`: the difference is what an idle connection costs.
fn idle_connections(ecluse: &Running, target: Target, n: usize) -> IdleMemory {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        let mut rss_one = 0;
        for i in 0..n {
            let io = open(&target).await.expect("connection");
            let mut sender = handshake(io).await.expect("handshake");
            let resp = sender.send_request(request(&target)).await.expect("call");
            let _ = resp.into_body().collect().await;
            held.push(sender);
            if i == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                rss_one = proc_rss(ecluse.child.id());
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_all = proc_rss(ecluse.child.id());
        let (_, hwm) = proc_usage(ecluse.child.id());
        drop(held);
        IdleMemory {
            peak_mib: hwm as f64 / 1024.0,
            rss_one_mib: rss_one as f64 / 1024.0,
            rss_all_mib: rss_all as f64 / 1024.0,
            per_connection_kib: rss_all.saturating_sub(rss_one) as f64 / (n.max(2) - 1) as f64,
        }
    })
}

/// The resident set (`VmRSS`, KiB) of a process now.
fn proc_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

mod peers {
    //! Squid ssl-bump and mitmproxy, installed and run as
    //! ../shared/bench-peers/README.md describes.
    use super::*;

    pub fn run(o: &Options, pki: &Pki, mock: SocketAddr, direct: &Target, rows: &mut Vec<Row>) {
        for peer in [Peer::squid(pki, mock), Peer::mitmproxy(pki, mock)]
            .into_iter()
            .flatten()
        {
            let tls = client_config(&[&peer.ca]);
            let target = Target {
                route: Route::Proxy {
                    proxy: peer.listen,
                    authority: format!("localhost:{}", mock.port()),
                },
                host: "localhost".into(),
                host_header: format!("localhost:{}", mock.port()),
                tls,
                headers: Vec::new(),
                body: direct.body.clone(),
                new_connection_per_request: false,
                vary_retention: false,
            };
            for (scenario, connections, new_conn) in [
                ("intercept+pass c=32", o.connections, false),
                ("intercept+pass c=1", 1, false),
                ("new CONNECT+TLS/req", o.connections, true),
            ] {
                let mut t = target.clone();
                t.new_connection_per_request = new_conn;
                let before = proc_usage(peer.pid());
                let result = run_load(t, connections, o.duration);
                let after = proc_usage(peer.pid());
                let r = row(scenario, &peer.name, &result, Some((before, after)));
                if let Some(e) = FIRST_ERROR.lock().unwrap().take() {
                    eprintln!("{}: first connection error: {e}", peer.name);
                }
                if r.errors > 0 && result.requests == 0 {
                    let log = std::fs::read_to_string(peer._dir.path().join("cache.log"))
                        .unwrap_or_default();
                    let tail: Vec<&str> = log
                        .lines()
                        .filter(|l| {
                            l.contains("rror")
                                || l.contains("fail")
                                || l.contains("FwdState")
                                || l.contains("certificate")
                                || l.contains("refused")
                        })
                        .rev()
                        .take(8)
                        .collect();
                    eprintln!(
                        "{} failed every request; its log ends with:\n{}",
                        peer.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                eprintln!(
                    "{scenario:<28} {:<8} {:>8.0} req/s  p50 {:>6.0} µs  errors {}",
                    peer.name, r.rps, r.p50, r.errors
                );
                rows.push(r);
            }
        }
    }

    pub struct Peer {
        name: String,
        child: Child,
        listen: SocketAddr,
        ca: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Peer {
        fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Squid resolves names itself: the mock is reached as 127.0.0.1
        /// under a name in /etc/hosts (localhost), with its CA trusted.
        fn squid(pki: &Pki, _mock: SocketAddr) -> Option<Peer> {
            if Command::new("squid").arg("-v").output().is_err() {
                let _ = Command::new("apt-get")
                    .args(["install", "-y", "squid-openssl"])
                    .status();
            }
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let ca_key = dir.path().join("ca.key");
            let ca = dir.path().join("ca.pem");
            let ok = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "3",
                    "-subj",
                    "/CN=squid bench CA",
                    "-keyout",
                ])
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca)
                .output()
                .ok()?
                .status
                .success();
            if !ok {
                return None;
            }
            let ssl_db = dir.path().join("ssl_db");
            let _ = Command::new("/usr/lib/squid/security_file_certgen")
                .args(["-c", "-s"])
                .arg(&ssl_db)
                .args(["-M", "16MB"])
                .output();
            let conf = dir.path().join("squid.conf");
            std::fs::write(
                &conf,
                format!(
                    "http_port 127.0.0.1:{port} ssl-bump cert={ca} key={key} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB\n\
                     sslcrtd_program /usr/lib/squid/security_file_certgen -s {db} -M 16MB\n\
                     sslcrtd_children 4 startup=2 idle=1\n\
                     acl step1 at_step SslBump1\nssl_bump peek step1\nssl_bump bump all\n\
                     tls_outgoing_options cafile={upstream}\n\
                     acl localnet src 127.0.0.0/8\nhttp_access allow localnet\nhttp_access deny all\n\
                     cache deny all\naccess_log none\ncache_log {dir}/cache.log\npid_filename {dir}/squid.pid\n\
                     coredump_dir {dir}\nworkers 1\nshutdown_lifetime 1 seconds\n",
                    ca = ca.display(),
                    key = ca_key.display(),
                    db = ssl_db.display(),
                    upstream = pki.ca_path.display(),
                    dir = dir.path().display(),
                ),
            )
            .unwrap();
            let _ = Command::new("chown")
                .args(["-R", "proxy:proxy"])
                .arg(dir.path())
                .status();
            let child = Command::new("squid")
                .args(["-N", "-f"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            wait_port(listen);
            Some(Peer {
                name: "squid".into(),
                child,
                listen,
                ca,
                _dir: dir,
            })
        }

        fn mitmproxy(pki: &Pki, mock: SocketAddr) -> Option<Peer> {
            let dir = tempfile::tempdir().unwrap();
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-mitmproxy");
            if !venv.join("bin/mitmdump").exists() {
                let _ = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status();
                let _ = Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "mitmproxy"])
                    .status();
            }
            let port = free_port();
            let confdir = dir.path().join("mitm");
            let child = Command::new(venv.join("bin/mitmdump"))
                .args([
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    &port.to_string(),
                    "-q",
                ])
                .args(["--set", &format!("confdir={}", confdir.display())])
                .args([
                    "--set",
                    &format!("ssl_verify_upstream_trusted_ca={}", pki.ca_path.display()),
                ])
                .args(["--set", "stream_large_bodies=1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            wait_port(listen);
            let _ = mock;
            Some(Peer {
                name: "mitmproxy".into(),
                child,
                listen,
                ca: confdir.join("mitmproxy-ca-cert.pem"),
                _dir: dir,
            })
        }
    }
}
