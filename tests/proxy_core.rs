//! The core path end to end: CONNECT, minted TLS, forwarding, streaming,
//! tunnels, plain HTTP, and the refusals of SECURITY.md that the core owns.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    pki: TestPki,
    openai: MockUpstream,
    proxy: Proxy,
}

/// A TLS mock for api.openai.com and ecluse pointed at it.
async fn setup(extra: &str) -> Setup {
    setup_with(openai_handler(), extra).await
}

/// The same, the mock answering with `handler`.
async fn setup_with(handler: Handler, extra: &str) -> Setup {
    let pki = TestPki::new();
    let openai = MockUpstream::start(Some(pki.server_config(&["api.openai.com"])), handler).await;
    let yaml = format!(
        "{}{extra}",
        upstream_yaml(&[("api.openai.com:443", openai.addr)], Some(&pki.ca_path))
    );
    let proxy = Proxy::start(&yaml);
    Setup { pki, openai, proxy }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_intercepted_post_reaches_the_upstream_intact() {
    let s = setup("").await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let ca = s.proxy.ca_path();
    let (code, out, err) = curl(&[
        "--proxy",
        &s.proxy.proxy_url(),
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "-H",
        "authorization: Bearer sk-test",
        "--data",
        body,
        "https://api.openai.com/v1/chat/completions",
    ]);
    assert_eq!(code, 0, "curl failed: {err}\n{}", s.proxy.logs());
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello from the mock"
    );
    let recorded = s.openai.recorded();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].path, "/v1/chat/completions");
    assert_eq!(recorded[0].body, body.as_bytes());
    assert_eq!(recorded[0].header("host"), Some("api.openai.com"));
    assert!(recorded[0].header("proxy-authorization").is_none());
    // The access log and counters are written just after the response.
    let wanted = "ecluse_requests_total{action=\"allow\",status=\"200\"} 1";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = s.proxy.admin_get("/metrics");
        if metrics.contains(wanted) {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_inside_the_tunnel() {
    let s = setup("").await;
    let ca = s.proxy.ca_path();
    let (code, out, err) = curl(&[
        "--http2",
        "--proxy",
        &s.proxy.proxy_url(),
        "--cacert",
        ca.to_str().unwrap(),
        "-w",
        "\n%{http_version}",
        "-H",
        "content-type: application/json",
        "--data",
        r#"{"model":"gpt-4o","messages":[]}"#,
        "https://api.openai.com/v1/chat/completions",
    ]);
    assert_eq!(code, 0, "curl failed: {err}\n{}", s.proxy.logs());
    let (json, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2", "curl spoke HTTP/{version} to ecluse");
    let answer: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(answer["model"], "gpt-4o");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_carries_many_calls_on_one_tunnel() {
    let s = setup("").await;
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let body = format!(r#"{{"model":"m-{i}","messages":[]}}"#);
        sender
            .ready()
            .await
            .expect("the tunnel stays open between calls");
        let resp = sender
            .send_request(post_json("api.openai.com", "/v1/chat/completions", &body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let text = body_text(resp).await;
        assert!(text.contains(&format!("m-{i}")), "{text}");
    }
    assert_eq!(s.openai.recorded().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_client_connections() {
    let s = setup("").await;
    for i in 0..5 {
        // A new client connection (CONNECT, handshake) for every call.
        let tls = s
            .proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        let body = format!(r#"{{"model":"m-{i}","messages":[]}}"#);
        let resp = http1_send(
            tls,
            post_json("api.openai.com", "/v1/chat/completions", &body),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert!(body_text(resp).await.contains(&format!("m-{i}")));
    }
    assert_eq!(s.openai.recorded().len(), 5);
    assert_eq!(
        s.openai.connections.load(Ordering::SeqCst),
        1,
        "every call after the first reuses the parked upstream connection"
    );
}

/// A mock that drops the connection as its second request arrives, which
/// comes on the first call's connection, parked in ecluse's pool; it counts
/// the requests it saw in `seen`.
fn drops_the_second_request(seen: Arc<std::sync::atomic::AtomicUsize>) -> Handler {
    Arc::new(move |req: &Recorded| {
        if seen.fetch_add(1, Ordering::SeqCst) == 1 {
            return MockResponse::Abort;
        }
        MockResponse::json(200, serde_json::json!({"path": req.path}))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_on_a_pooled_connection_the_upstream_drops_is_sent_again() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = setup_with(drops_the_second_request(seen.clone()), "").await;
    assert_eq!(
        call_on_a_new_connection(&s.proxy).await,
        200,
        "{}",
        s.proxy.logs()
    );
    let get = hyper::Request::get("/v1/models")
        .header("host", "api.openai.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _) = send_on_a_new_connection(&s.proxy, get).await;
    assert_eq!(status, 200, "{}", s.proxy.logs());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "the dropped GET was sent again"
    );
    assert_eq!(s.openai.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_the_upstream_may_have_received_is_never_sent_twice() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = setup_with(drops_the_second_request(seen.clone()), "").await;
    assert_eq!(
        call_on_a_new_connection(&s.proxy).await,
        200,
        "{}",
        s.proxy.logs()
    );
    let body = r#"{"model":"m","messages":[{"role":"user","content":"charge the card"}]}"#;
    let (status, text) = send_on_a_new_connection(
        &s.proxy,
        post_json("api.openai.com", "/v1/chat/completions", body),
    )
    .await;
    assert_eq!(status, 502, "{text}\n{}", s.proxy.logs());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error", "{text}");
    assert_eq!(v["error"]["type"], "upstream_error", "{text}");
    let received = s
        .openai
        .recorded()
        .iter()
        .filter(|r| r.body == body.as_bytes())
        .count();
    assert_eq!(
        received, 1,
        "the POST reached the upstream {received} times"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_connection_close_is_not_reused() {
    let handler: Handler = Arc::new(|_req: &Recorded| MockResponse::Full {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("connection".into(), "close".into()),
        ],
        body: Bytes::from_static(b"{}"),
    });
    let s = setup_with(handler, "").await;
    for _ in 0..3 {
        assert_eq!(
            call_on_a_new_connection(&s.proxy).await,
            200,
            "{}",
            s.proxy.logs()
        );
    }
    assert_eq!(s.openai.recorded().len(), 3);
    assert_eq!(s.openai.connections.load(Ordering::SeqCst), 3);
}

/// One chat call on a new client connection (CONNECT, handshake); its status.
async fn call_on_a_new_connection(proxy: &Proxy) -> u16 {
    let call = post_json("api.openai.com", "/v1/chat/completions", r#"{"model":"m"}"#);
    send_on_a_new_connection(proxy, call).await.0
}

/// One HTTP/1.1 call on a new client connection; its status and body.
async fn send_on_a_new_connection(
    proxy: &Proxy,
    request: hyper::Request<Full<Bytes>>,
) -> (u16, String) {
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(tls, request).await;
    let status = resp.status().as_u16();
    (status, body_text(resp).await)
}

/// A raw mock for api.openai.com and ecluse pointed at it.
async fn setup_raw(handler: Handler, extra: &str) -> Setup {
    let pki = TestPki::new();
    let openai =
        MockUpstream::start_raw(Some(pki.server_config(&["api.openai.com"])), handler).await;
    let yaml = format!(
        "{}{extra}",
        upstream_yaml(&[("api.openai.com:443", openai.addr)], Some(&pki.ca_path))
    );
    let proxy = Proxy::start(&yaml);
    Setup { pki, openai, proxy }
}

/// An HTTP/1.1 chunk.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

fn raw(bytes: String, then: AfterRaw) -> MockResponse {
    MockResponse::Raw {
        bytes: Bytes::from(bytes),
        then,
    }
}

/// Polls /metrics until it holds `line`.
async fn await_metric(proxy: &Proxy, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = proxy.admin_get("/metrics");
        if metrics.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_upstream_cuts_short_reaches_the_client_cut_short() {
    let handler: Handler = Arc::new(|req: &Recorded| {
        let head = |content_type: &str, framing: &str| {
            format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n{framing}\r\n")
        };
        let chunked = "transfer-encoding: chunked\r\n";
        match req.path.as_str() {
            // EOF inside a chunk.
            "/v1/cut/mid-chunk" => raw(
                format!(
                    "{}{}40\r\n{{\"choices\":",
                    head("application/json", chunked),
                    chunk(r#"{"id":"x","#)
                ),
                AfterRaw::Close,
            ),
            // Whole events, then EOF where the last chunk should be.
            "/v1/cut/sse" => raw(
                format!(
                    "{}{}{}",
                    head("text/event-stream", chunked),
                    chunk("data: {\"n\":0}\n\n"),
                    chunk("data: {\"n\":1}\n\n")
                ),
                AfterRaw::Close,
            ),
            // A chunk size that is not hex, on a connection left open.
            "/v1/cut/malformed" => raw(
                format!(
                    "{}{}zz\r\nnot a chunk\r\n",
                    head("application/json", chunked),
                    chunk(r#"{"id":"x","#)
                ),
                AfterRaw::KeepAlive,
            ),
            // 10 of 100 declared bytes.
            "/v1/cut/length" => raw(
                format!(
                    "{}0123456789",
                    head("application/json", "content-length: 100\r\n")
                ),
                AfterRaw::Close,
            ),
            // Silent past timeouts.stream_idle.
            "/v1/cut/idle" => raw(
                format!(
                    "{}{}",
                    head("text/event-stream", chunked),
                    chunk("data: {\"n\":0}\n\n")
                ),
                AfterRaw::Hang,
            ),
            other => panic!("no raw answer for {other}"),
        }
    });
    let s = setup_raw(handler, "timeouts: { stream_idle: 1s }\n").await;
    let paths = [
        "/v1/cut/mid-chunk",
        "/v1/cut/sse",
        "/v1/cut/malformed",
        "/v1/cut/length",
        "/v1/cut/idle",
    ];
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    for path in paths {
        for h2 in [false, true] {
            let version = if h2 { "HTTP/2" } else { "HTTP/1.1" };
            let resp = if h2 {
                let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
                let req = hyper::Request::post(format!("https://api.openai.com{path}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                match http2_send(tls, req).await {
                    Ok(resp) => resp,
                    // Reset before the head got out: cut short all the same.
                    Err(e) => {
                        assert!(format!("{e:?}").contains("Reset"), "{path}: {e:?}");
                        continue;
                    }
                }
            } else {
                let tls = s
                    .proxy
                    .connect_tls("api.openai.com:443", &[b"http/1.1"])
                    .await;
                http1_send(tls, post_json("api.openai.com", path, body)).await
            };
            assert_eq!(resp.status(), 200, "{path} over {version}");
            let read = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
                .await
                .unwrap_or_else(|_| panic!("{path} over {version}: the body never ended"));
            assert!(
                read.is_err(),
                "{path} over {version}: a broken answer ended as a whole one: {:?}",
                read.map(|b| b.to_bytes())
            );
        }
    }
    await_metric(&s.proxy, "ecluse_upstream_truncated_total 10\n").await;
    let logs = s.proxy.logs();
    assert!(
        logs.contains("upstream api.openai.com:443 cut its answer short after 10 body bytes"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_informational_answer_is_502_and_its_connection_dropped() {
    const SWITCH: &str = concat!(
        "HTTP/1.1 101 Switching Protocols\r\n",
        "connection: upgrade\r\nupgrade: websocket\r\n\r\n"
    );
    const PROCESSING: &str = concat!(
        "HTTP/1.1 102 Processing\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    );
    // Early hints are harmless: the final answer follows.
    const HINTS: &str = concat!(
        "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n",
        "{\"ok\":true}"
    );
    let handler: Handler = Arc::new(|req: &Recorded| {
        let answer = match req.path.as_str() {
            "/v1/switch" => SWITCH,
            "/v1/processing" => PROCESSING,
            "/v1/hints" => HINTS,
            other => panic!("no raw answer for {other}"),
        };
        raw(answer.into(), AfterRaw::KeepAlive)
    });
    let s = setup_raw(handler, "").await;
    let connections = || s.openai.connections.load(Ordering::SeqCst);
    let call = |path: &str| post_json("api.openai.com", path, r#"{"model":"m"}"#);

    let (status, text) = send_on_a_new_connection(&s.proxy, call("/v1/switch")).await;
    assert_eq!(status, 502, "{text}\n{}", s.proxy.logs());
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error", "{text}");
    assert_eq!(connections(), 1);

    let (status, text) = send_on_a_new_connection(&s.proxy, call("/v1/hints")).await;
    assert_eq!((status, text.as_str()), (200, r#"{"ok":true}"#));
    assert_eq!(
        connections(),
        2,
        "the connection that said 101 was used again"
    );

    // The hints call's connection was parked, and is dropped after a 102.
    let (status, text) = send_on_a_new_connection(&s.proxy, call("/v1/processing")).await;
    assert_eq!(status, 502, "{text}");
    assert_eq!(connections(), 2);
    let (status, _) = send_on_a_new_connection(&s.proxy, call("/v1/hints")).await;
    assert_eq!(status, 200);
    assert_eq!(
        connections(),
        3,
        "the connection that said 102 was used again"
    );
    assert_eq!(
        s.openai.recorded().len(),
        4,
        "a refused answer's call went again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_both_length_and_chunked_framing_is_502_and_never_pooled() {
    // The parser also ends a header line at a bare LF: the same answer with
    // LF-only line ends is as ambiguous.
    let heads = [
        concat!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n",
            "content-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        ),
        concat!(
            "HTTP/1.1 200 OK\ncontent-type: application/json\n",
            "content-length: 2\ntransfer-encoding: chunked\n\n"
        ),
    ];
    for head in heads {
        let handler: Handler = Arc::new(move |_req: &Recorded| {
            raw(
                format!("{head}{}0\r\n\r\n", chunk("{}")),
                AfterRaw::KeepAlive,
            )
        });
        let s = setup_raw(handler, "").await;
        for i in 1..=2 {
            let (status, text) = send_on_a_new_connection(
                &s.proxy,
                post_json("api.openai.com", "/v1/chat/completions", r#"{"model":"m"}"#),
            )
            .await;
            assert_eq!(status, 502, "{head:?}: {text}\n{}", s.proxy.logs());
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "upstream_error", "{text}");
            assert!(text.contains("Transfer-Encoding"), "{text}");
            assert_eq!(
                s.openai.connections.load(Ordering::SeqCst),
                i,
                "the ambiguous answer's connection was pooled and used again"
            );
        }
    }
}

/// SECURITY #12: an answer whose head cannot be read unambiguously is a 502,
/// and its connection is never used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_broken_head_is_502_and_never_pooled() {
    let heads = [
        (
            "/v1/status",
            "HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n{}",
        ),
        ("/v1/garbage", "hello there\r\n\r\n"),
        (
            "/v1/length",
            "HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n{}",
        ),
        (
            "/v1/lengths",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        ),
        (
            "/v1/plus",
            "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n{}",
        ),
        (
            "/v1/nul",
            "HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 2\r\n\r\n{}",
        ),
    ];
    let handler: Handler = Arc::new(move |req: &Recorded| {
        let (_, answer) = heads
            .iter()
            .find(|(path, _)| *path == req.path)
            .unwrap_or_else(|| panic!("no raw answer for {}", req.path));
        raw(answer.to_string(), AfterRaw::KeepAlive)
    });
    let s = setup_raw(handler, "").await;
    let mut failures = Vec::new();
    for (i, (path, _)) in heads.iter().enumerate() {
        let (status, text) = send_on_a_new_connection(
            &s.proxy,
            post_json("api.openai.com", path, r#"{"model":"m"}"#),
        )
        .await;
        if status != 502 {
            failures.push(format!("{path}: {status} {text}"));
        }
        let connections = s.openai.connections.load(Ordering::SeqCst);
        if connections != i + 1 {
            failures.push(format!(
                "{path}: {connections} upstream connections after {} calls",
                i + 1
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", s.proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_body_reaches_the_upstream_whole() {
    let s = setup("").await;
    // A JSON body far above pingora's 64 KiB retry buffer.
    let filler = "x".repeat(1024 * 1024);
    let body =
        format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{filler}"}}]}}"#);
    assert!(body.len() > 1024 * 1024);
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(
        tls,
        post_json("api.openai.com", "/v1/chat/completions", &body),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let recorded = s.openai.recorded();
    assert_eq!(recorded[0].body.len(), body.len());
    assert_eq!(recorded[0].body, body.as_bytes());
    // The decision point saw the parsed call (model from the body).
    assert!(
        s.proxy
            .logs()
            .contains("request POST api.openai.com:443/v1/chat/completions: allow"),
        "{}",
        s.proxy.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_is_413_before_anything_is_forwarded() {
    let s = setup("limits: { max_request_body: 64KiB }\n").await;
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    // Well past the limit, so that the client is still writing when the
    // 413 comes: it must read the 413, not a reset connection.
    let body = "y".repeat(3 << 20);
    let resp = http1_send(
        tls,
        post_json("api.openai.com", "/v1/chat/completions", &body),
    )
    .await;
    assert_eq!(resp.status(), 413);
    let text = body_text(resp).await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "body_too_large");
    assert!(v["error"]["message"].as_str().unwrap().contains("65536"));
    assert!(s.openai.recorded().is_empty());

    // Chunked, without a declared length: refused once it crosses the limit.
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'z'; 16 * 1024]))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let req = hyper::Request::post("/v1/chat/completions")
        .header("host", "api.openai.com")
        .body(body)
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert!(s.openai.recorded().is_empty());
}

/// A TLS mock for `api.openai.com` that answers every call with `events`
/// as SSE, `gap` apart.
async fn sse_mock(pki: &TestPki, events: &[String], gap: Duration) -> MockUpstream {
    let events = events.to_vec();
    MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        Arc::new(move |_req: &Recorded| MockResponse::Sse {
            events: events.clone(),
            gap,
        }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_sse_reaches_the_client_as_it_is_sent() {
    let pki = TestPki::new();
    let events: Vec<String> = (0..6).map(|i| format!("{{\"n\":{i}}}")).collect();
    let mock = sse_mock(&pki, &events, Duration::from_millis(300)).await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let started = Instant::now();
    let resp = http1_send(
        tls,
        post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
            arrivals.push(started.elapsed());
        }
    }
    for e in &events {
        assert!(text.contains(e.as_str()), "{text}");
    }
    // The upstream needs 1.5 s for all six events; the first must arrive
    // long before that, and arrivals must be spread out, not one burst.
    let first = arrivals[0];
    let last = *arrivals.last().unwrap();
    assert!(
        last >= Duration::from_millis(1400),
        "stream ended at {last:?}"
    );
    assert!(
        first < Duration::from_millis(900),
        "first event arrived at {first:?}, after the upstream was nearly done"
    );
    assert!(
        arrivals.len() >= 4,
        "events arrived in {} bursts",
        arrivals.len()
    );
}

/// SECURITY #15, scaled down: a stream that lasts longer than every
/// configured timeout, its events within the inter-chunk gap, reaches the
/// client whole over HTTP/1.1 and HTTP/2 (no timeout bounds a call's total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_every_timeout_survives_over_h1_and_h2() {
    let pki = TestPki::new();
    let events: Vec<String> = (0..8).map(|i| format!("{{\"n\":{i}}}")).collect();
    let mock = sse_mock(&pki, &events, Duration::from_millis(700)).await;
    let proxy = Proxy::start(&format!(
        "{}timeouts: {{ header_read: 1s, first_byte: 1s, stream_idle: 2s, keepalive_idle: 1s, tunnel_idle: 1s }}\n",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path))
    ));
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    let h1 = async {
        let tls = proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        let resp = http1_send(
            tls,
            post_json("api.openai.com", "/v1/chat/completions", body),
        )
        .await;
        assert_eq!(resp.status(), 200);
        body_text(resp).await
    };
    let h2 = async {
        let tls = proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
        let req = hyper::Request::post("https://api.openai.com/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = http2_send(tls, req).await.unwrap();
        assert_eq!(resp.status(), 200);
        body_text(resp).await
    };
    let started = Instant::now();
    let (one, two) = tokio::join!(h1, h2);
    assert!(started.elapsed() > Duration::from_secs(4));
    for (version, text) in [("HTTP/1.1", one), ("HTTP/2", two)] {
        for e in &events {
            assert!(
                text.contains(e.as_str()),
                "{version}: {text}\n{}",
                proxy.logs()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_the_upstream_call() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        Arc::new(|_req: &Recorded| MockResponse::Sse {
            events: (0..200).map(|i| format!("{{\"n\":{i}}}")).collect(),
            gap: Duration::from_millis(100),
        }),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let mut tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let body = r#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
    tls.write_all(&chat_request(body)).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(tls);
    let deadline = Instant::now() + Duration::from_secs(10);
    while mock.cancelled_streams.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream stream kept going after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.completed_streams.load(Ordering::SeqCst), 0);
}

/// The line of the operation-duration histogram's count for calls that
/// asked for `model`.
fn duration_count_line(metrics: &str, model: &str) -> Option<String> {
    let wanted = format!("gen_ai_request_model=\"{model}\"");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("gen_ai_client_operation_duration_seconds_count{") && l.contains(&wanted)
        })
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_after_done_completed_the_call_one_that_leaves_mid_stream_aborted_it()
{
    // The upstream sends its events and then holds the body open: its last
    // chunk is still in flight when the client, which has read `[DONE]`,
    // closes its connection.
    let handler: Handler = Arc::new(|req: &Recorded| {
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let first = chunk("data: {\"id\":\"c1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n");
        let ends = body["model"]
            .as_str()
            .is_some_and(|m| m.starts_with("ends"));
        let answer = match ends {
            true => format!(
                "{head}{first}{}{}",
                chunk("data: {\"id\":\"c1\",\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\n"),
                chunk("data: [DONE]\n\n"),
            ),
            false => format!("{head}{first}"),
        };
        raw(answer, AfterRaw::Hang)
    });
    let s = setup_raw(handler, "").await;
    let calls = [
        ("ends-h1", "data: [DONE]", false),
        ("cut-h1", "\"Hi\"", false),
        ("ends-h2", "data: [DONE]", true),
        ("cut-h2", "\"Hi\"", true),
    ];
    for (model, read_until, h2) in calls {
        let body = format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#);
        if h2 {
            let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
            let req = hyper::Request::post("https://api.openai.com/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let resp = http2_send(tls, req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut stream = resp.into_body();
            let mut seen = String::new();
            while !seen.contains(read_until) {
                let frame = tokio::time::timeout(Duration::from_secs(10), stream.frame())
                    .await
                    .expect("the events arrive")
                    .expect("the stream goes on")
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&data));
                }
            }
            // Resets the stream and closes the connection.
            drop(stream);
        } else {
            let mut tls = s
                .proxy
                .connect_tls("api.openai.com:443", &[b"http/1.1"])
                .await;
            tls.write_all(&chat_request(&body)).await.unwrap();
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains(read_until) {
                let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
                    .await
                    .expect("the events arrive")
                    .unwrap();
                assert!(
                    n > 0,
                    "{model}: closed early: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.extend_from_slice(&buf[..n]);
            }
            // Abruptly: no TLS close_notify, the socket just goes.
            drop(tls);
        }
        // Each call is on record before the next one starts, so that the
        // access lines come in the order of the calls.
        let deadline = Instant::now() + Duration::from_secs(10);
        let line = loop {
            let (_, metrics) = s.proxy.admin_get("/metrics");
            if let Some(line) = duration_count_line(&metrics, model) {
                break line;
            }
            assert!(Instant::now() < deadline, "{metrics}\n{}", s.proxy.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let wanted = if model.starts_with("ends") {
            "error_type=\"\""
        } else {
            "error_type=\"aborted\""
        };
        assert!(line.contains(wanted) && line.ends_with(" 1"), "{line}");
    }
    // The access line is written just after the metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = s.proxy.logs();
        let written = logs
            .lines()
            .filter(|l| l.contains("/v1/chat/completions -> 200"))
            .count();
        if written == calls.len() {
            break logs;
        }
        assert!(Instant::now() < deadline, "{logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!logs.contains(" ERROR "), "{logs}");
    let access = logs
        .lines()
        .filter(|l| l.contains("/v1/chat/completions -> 200"));
    for ((model, _, _), line) in calls.iter().zip(access) {
        if model.starts_with("ends") {
            assert!(
                line.contains("tokens 5/3") && !line.contains("aborted"),
                "{line}"
            );
        } else {
            assert!(line.contains("aborted after"), "{line}");
        }
    }
}

/// One AWS event-stream frame, encoded by the AWS SDK's own encoder.
fn event_frame(event_type: &'static str, payload: &str) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let message = Message::new(payload.as_bytes().to_vec())
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

/// The sum of the token-usage histogram for one provider and token type.
fn token_sum(metrics: &str, provider: &str, kind: &str) -> Option<String> {
    let provider = format!("gen_ai_provider_name=\"{provider}\"");
    let kind = format!("gen_ai_token_type=\"{kind}\"");
    metrics
        .lines()
        .find(|l| {
            l.starts_with("gen_ai_client_token_usage_sum{")
                && l.contains(&provider)
                && l.contains(&kind)
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_read_from_a_bedrock_event_stream_and_a_responses_stream() {
    const BEDROCK: &str = "bedrock-runtime.eu-central-1.amazonaws.com";
    let handler: Handler = Arc::new(|req: &Recorded| {
        let (content_type, body): (&str, Vec<u8>) = if req.path.ends_with("/converse-stream") {
            let frames = [
                event_frame(
                    "messageStart",
                    r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL","role":"assistant"}"#,
                ),
                event_frame(
                    "contentBlockDelta",
                    r#"{"contentBlockIndex":0,"delta":{"text":"Hallo"},"p":"abcdefgh"}"#,
                ),
                event_frame(
                    "contentBlockStop",
                    r#"{"contentBlockIndex":0,"p":"abcdefghijklmnopqrstu"}"#,
                ),
                event_frame(
                    "messageStop",
                    r#"{"p":"abcdefghijklmnopqrstuvwxyzABCDEF","stopReason":"end_turn"}"#,
                ),
                event_frame(
                    "metadata",
                    r#"{"metrics":{"latencyMs":300},"p":"abcdefghijklmnopq","usage":{"inputTokens":14,"outputTokens":9,"totalTokens":23}}"#,
                ),
            ];
            ("application/vnd.amazon.eventstream", frames.concat())
        } else {
            let events = concat!(
                "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n",
                "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
                "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":{\"input_tokens\":37,\"output_tokens\":11,\"total_tokens\":48}}}\n\n",
            );
            ("text/event-stream", events.as_bytes().to_vec())
        };
        // Each frame or event in a chunk of its own would be as valid; one
        // odd-sized split shows that frames are reassembled across chunks.
        let (a, b) = body.split_at(body.len() / 3);
        let mut wire = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        for part in [a, b] {
            wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            wire.extend_from_slice(part);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        MockResponse::Raw {
            bytes: Bytes::from(wire),
            then: AfterRaw::KeepAlive,
        }
    });
    let pki = TestPki::new();
    let mock = MockUpstream::start_raw(
        Some(pki.server_config(&["api.openai.com", BEDROCK])),
        handler,
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[
            ("api.openai.com:443", mock.addr),
            (&format!("{BEDROCK}:443"), mock.addr),
        ],
        Some(&pki.ca_path),
    ));
    let calls = [
        (
            BEDROCK,
            "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream",
            r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        ),
        (
            "api.openai.com",
            "/v1/responses",
            r#"{"model":"gpt-4.1","input":"hi","stream":true}"#,
        ),
    ];
    for (host, path, body) in calls {
        let tls = proxy
            .connect_tls(&format!("{host}:443"), &[b"http/1.1"])
            .await;
        let resp = http1_send(tls, post_json(host, path, body)).await;
        assert_eq!(resp.status(), 200, "{path}\n{}", proxy.logs());
        assert!(!body_text(resp).await.is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = proxy.admin_get("/metrics");
        let sums = [
            token_sum(&metrics, "aws.bedrock", "input"),
            token_sum(&metrics, "aws.bedrock", "output"),
            token_sum(&metrics, "openai", "input"),
            token_sum(&metrics, "openai", "output"),
        ];
        let want = ["14", "9", "37", "11"].map(|n| Some(n.to_string()));
        if sums == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "token sums {sums:?}, want {want:?}\n{metrics}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_are_tunnelled_untouched() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["tunnel.example"])),
        Arc::new(|_req: &Recorded| MockResponse::json(200, serde_json::json!({"tunnelled": true}))),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(&[("tunnel.example:443", mock.addr)], None));
    // curl trusts only the test upstream CA: a minted (intercepted) leaf would fail.
    let (code, out, err) = curl(&[
        "--proxy",
        &proxy.proxy_url(),
        "--cacert",
        pki.ca_path.to_str().unwrap(),
        "https://tunnel.example/anything",
    ]);
    assert_eq!(code, 0, "{err}\n{}", proxy.logs());
    assert!(out.contains("tunnelled"), "{out}");
    assert!(proxy.logs().contains("connect tunnel.example:443: tunnel"));
    let (_, metrics) = proxy.admin_get("/metrics");
    assert!(
        metrics.contains("ecluse_decisions_total{stage=\"connect\",action=\"tunnel\",rule=\"connect.non_llm_host\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_destinations_get_403_before_tls() {
    let s = setup("").await;
    for authority in ["api.openai.com:8443", "127.0.0.1:443", "[::1]:443"] {
        let (status, text) = s.proxy.connect(authority).await.unwrap_err();
        assert_eq!(status, 403, "{authority}: {text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["type"], "permission_error", "{authority}");
        assert_eq!(v["error"]["code"], "policy_denied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_names_resolving_to_loopback_are_refused_after_resolution() {
    // Only loopback is used end to end; the classifier's other ranges are
    // unit-tested without sending a packet.
    let s = setup("").await;
    for authority in ["localhost:443", "localhost.:443"] {
        let (status, text) = s.proxy.connect(authority).await.unwrap_err();
        assert_eq!(status, 403, "{authority}: {text}");
        assert!(text.contains("loopback"), "{text}");
        assert!(text.contains("destination_forbidden"), "{text}");
    }
    // Plain HTTP to a loopback name and to an IPv4-mapped loopback literal.
    let (code, out, _) = curl(&["--proxy", &s.proxy.proxy_url(), "http://localhost:80/"]);
    assert_eq!(code, 0);
    assert!(out.contains("destination_forbidden"), "{out}");
    let (_, out, _) = curl(&[
        "--proxy",
        &s.proxy.proxy_url(),
        "-w",
        "%{http_code}",
        "http://[::ffff:127.0.0.1]/",
    ]);
    assert!(out.ends_with("403"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_loop_is_refused() {
    let listen_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // Point a name at ecluse's own listener through upstream.resolve.
    let yaml =
        format!("upstream:\n  resolve:\n    \"loop.example:443\": \"127.0.0.1:{listen_port}\"\n");
    let config = format!(
        "listen: 127.0.0.1:{listen_port}\nadmin_listen: 127.0.0.1:{}\nstate_dir: {}\n{yaml}",
        free_port(),
        dir.path().join("state").display()
    );
    std::fs::write(dir.path().join("loop.yaml"), config).unwrap();
    let mut child = std::process::Command::new(ecluse_bin())
        .args(["run", "--config"])
        .arg(dir.path().join("loop.yaml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tcp = None;
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", listen_port)).await {
            tcp = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tcp = tcp.expect("ecluse listens");
    tcp.write_all(b"CONNECT loop.example:443 HTTP/1.1\r\nHost: loop.example:443\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(out.contains("proxy loop"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_502_with_reason() {
    let s = setup("").await;
    let (status, text) = s
        .proxy
        .connect("no-such-host.invalid:443")
        .await
        .unwrap_err();
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("does not resolve"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_proxied() {
    let mock = MockUpstream::start(
        None,
        Arc::new(|req: &Recorded| {
            MockResponse::json(
                200,
                serde_json::json!({"path": req.path, "host": req.header("host")}),
            )
        }),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(&[("plain.example:80", mock.addr)], None));
    let (code, out, err) = curl(&[
        "--proxy",
        &proxy.proxy_url(),
        "-H",
        "proxy-authorization: Basic c2VjcmV0",
        "http://plain.example/hello?x=1",
    ]);
    assert_eq!(code, 0, "{err}\n{}", proxy.logs());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["host"], "plain.example");
    let recorded = mock.recorded();
    assert!(recorded[0].header("proxy-authorization").is_none());
    // A non-proxy (origin-form) request to the proxy port is told what to do.
    let (_, out, _) = curl(&[&format!("http://{}/v1/models", proxy.listen)]);
    assert!(out.contains("not_a_proxy_request"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_with_a_wrong_name_certificate_is_502() {
    let pki = TestPki::new();
    let wrong_name = MockUpstream::start(
        Some(pki.server_config(&["other.example"])),
        openai_handler(),
    )
    .await;
    let self_signed = MockUpstream::start(
        Some(TestPki::self_signed_config(&["api.anthropic.com"])),
        openai_handler(),
    )
    .await;
    // Signed by the trusted CA for the right name, but expired.
    let expired = MockUpstream::start(
        Some(pki.expired_config(&["api.mistral.ai"])),
        openai_handler(),
    )
    .await;
    let proxy = Proxy::start(&upstream_yaml(
        &[
            ("api.openai.com:443", wrong_name.addr),
            ("api.anthropic.com:443", self_signed.addr),
            ("api.mistral.ai:443", expired.addr),
        ],
        Some(&pki.ca_path),
    ));
    for host in ["api.openai.com", "api.anthropic.com", "api.mistral.ai"] {
        let tls = proxy
            .connect_tls(&format!("{host}:443"), &[b"http/1.1"])
            .await;
        let resp = http1_send(tls, post_json(host, "/v1/chat/completions", "{}")).await;
        assert_eq!(resp.status(), 502, "{host}");
        let text = body_text(resp).await;
        assert!(
            text.contains("upstream_certificate_invalid"),
            "{host}: {text}"
        );
    }
    assert!(wrong_name.recorded().is_empty() && self_signed.recorded().is_empty());
    assert!(expired.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_is_504() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        Arc::new(|_req: &Recorded| MockResponse::Hang),
    )
    .await;
    let proxy = Proxy::start(&format!(
        "{}timeouts: {{ first_byte: 1s }}\n",
        upstream_yaml(&[("api.openai.com:443", mock.addr)], Some(&pki.ca_path))
    ));
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let started = Instant::now();
    let resp = http1_send(
        tls,
        post_json("api.openai.com", "/v1/chat/completions", "{}"),
    )
    .await;
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(body_text(resp).await.contains("upstream_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misdirected_host_inside_a_tunnel_is_421() {
    let s = setup("").await;
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(tls, post_json("evil.example", "/v1/chat/completions", "{}")).await;
    assert_eq!(resp.status(), 421);
    assert!(s.openai.recorded().is_empty());
}

/// SECURITY #5 where a request names its host twice: an absolute-form
/// target and a `Host`, or HTTP/2's `:authority` and a `host` field. Either
/// naming another host than the tunnel's is refused; nothing is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_name_for_the_host_inside_a_tunnel_is_refused() {
    let s = setup("").await;
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    tls.write_all(
        b"POST https://api.openai.com/v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 4"), "{head}{body}");
    // hyper's HTTP/2 client sends a `host` field as it is given.
    let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
    let req = hyper::Request::post("https://api.openai.com/v1/chat/completions")
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    match http2_send(tls, req).await {
        Ok(resp) => {
            let status = resp.status();
            let text = body_text(resp).await;
            assert!(status.is_client_error(), "{status} {text}");
        }
        Err(e) => assert!(format!("{e:?}").contains("Reset"), "{e:?}"),
    }
    assert!(s.openai.recorded().is_empty(), "{:?}", s.openai.recorded());
}

/// Some clients send their TLS ClientHello right behind the CONNECT head,
/// before the 200: those bytes must reach the TLS handshake, not be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_sent_with_the_connect_head_is_not_lost() {
    use std::io::{Read, Write};
    let s = setup("").await;
    let config = client_config(&[s.proxy.ca_path()], &[b"http/1.1"]);
    let listen = s.proxy.listen;
    let answer = tokio::task::spawn_blocking(move || {
        let name = rustls::pki_types::ServerName::try_from("api.openai.com").unwrap();
        let mut tls = rustls::ClientConnection::new(config, name).unwrap();
        let mut first =
            b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n".to_vec();
        tls.write_tls(&mut first).unwrap();
        let mut tcp = std::net::TcpStream::connect(listen).unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Head and ClientHello in one write, so they arrive together.
        tcp.write_all(&first).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        let body = r#"{"model":"gpt-4o","messages":[]}"#;
        stream.write_all(&chat_request(body)).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = stream.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(s.openai.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_differing_from_connect_is_refused() {
    let s = setup("").await;
    let tcp = s.proxy.connect("api.openai.com:443").await.unwrap();
    let result = tls_connect(tcp, "api.anthropic.com", &[s.proxy.ca_path()], &[]).await;
    assert!(result.is_err(), "handshake for another SNI succeeded");
    let logged = wait_until_async(Duration::from_secs(5), || {
        s.proxy
            .logs()
            .contains("client named \"api.anthropic.com\" in SNI")
    })
    .await;
    assert!(logged, "{}", s.proxy.logs());
}

/// SECURITY #20: a client that refuses the minted certificate (it pins, or
/// does not trust ecluse's CA) is logged and counted, and its next attempt
/// is intercepted again: never switched to a blind tunnel, which a client
/// trusting the upstream's own CA would accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_rejects_the_minted_certificate_is_counted_never_tunnelled() {
    let s = setup("").await;
    for attempt in 1..=2 {
        let tcp = s.proxy.connect("api.openai.com:443").await.unwrap();
        let result = tls_connect(
            tcp,
            "api.openai.com",
            std::slice::from_ref(&s.pki.ca_path),
            &[],
        )
        .await;
        assert!(
            result.is_err(),
            "attempt {attempt}: a client trusting only the upstream's CA completed a handshake"
        );
        await_metric(
            &s.proxy,
            &format!("ecluse_tls_client_rejections_total {attempt}\n"),
        )
        .await;
    }
    assert!(
        s.proxy
            .logs()
            .contains("client rejected the certificate minted for api.openai.com"),
        "{}",
        s.proxy.logs()
    );
    assert_eq!(s.openai.connections.load(Ordering::SeqCst), 0);
    assert!(s.openai.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_framing_get_400_and_close() {
    let s = setup("").await;
    let attacks = [
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: +5\r\n\r\nhello",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n",
        // A bare LF ends a header line for the parser: the same attacks
        // with LF-only or mixed line ends.
        "POST /v1/chat/completions HTTP/1.1\nHost: api.openai.com\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\nGET /smuggled HTTP/1.1\nHost: api.openai.com\n\n",
        "POST /v1/chat/completions HTTP/1.1\nHost: api.openai.com\nContent-Length: 5\nContent-Length: 6\n\nhello!",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 4\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        // A length in hex, and codings that do not end in chunked (in one
        // header or spread over two).
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 0x10\r\n\r\n0123456789abcdef",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        // Both framings, Transfer-Encoding first.
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        // A bare CR in a value, invalid names, whitespace before the colon.
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Bad: a\rb\r\nContent-Length: 0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nX-Bad(: x\r\nContent-Length: 0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length : 5\r\n\r\nhello",
    ];
    let mut failures = Vec::new();
    for attack in attacks {
        let mut tls = s
            .proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        tls.write_all(attack.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        if read.is_err() {
            failures.push(format!("connection left open after {attack:?}"));
        } else if !text.starts_with("HTTP/1.1 400") {
            failures.push(format!("{attack:?} -> {text}"));
        } else if text.matches("HTTP/1.1").count() != 1 {
            failures.push(format!("{attack:?}: a second response: {text}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(s.openai.recorded().is_empty(), "{:?}", s.openai.recorded());
}

/// An HPACK literal header field, never indexed, without Huffman coding:
/// it carries names and values hyper's client would refuse to send.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127);
    let mut out = vec![0x10, name.len() as u8];
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    out
}

/// An HTTP/2 frame: type, flags, stream id and payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// How the proxy ended HTTP/2 stream 1.
#[derive(Debug, PartialEq)]
enum H2End {
    /// A HEADERS frame on the stream: an answer.
    Answered,
    /// RST_STREAM on it, or GOAWAY for the connection.
    Reset,
    /// Neither within the wait, or the connection closed.
    Nothing,
}

/// Sends the client preface, `headers` as stream 1 and `data` (if any) as
/// its body, then reads frames until stream 1 is answered or reset.
async fn h2_raw_call<S>(mut stream: S, headers: &[(&str, &str)], data: Option<&[u8]>) -> H2End
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(SETTINGS, 0, 0, &[]));
    let block: Vec<u8> = headers
        .iter()
        .flat_map(|(k, v)| hpack_literal(k, v))
        .collect();
    let end_headers = 0x4;
    let end_stream = 0x1;
    match data {
        None => out.extend(h2_frame(HEADERS, end_headers | end_stream, 1, &block)),
        Some(body) => {
            out.extend(h2_frame(HEADERS, end_headers, 1, &block));
            out.extend(h2_frame(0, end_stream, 1, body));
        }
    }
    stream.write_all(&out).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut head = [0u8; 9];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => return H2End::Nothing,
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if stream.read_exact(&mut payload).await.is_err() {
            return H2End::Nothing;
        }
        match kind {
            SETTINGS if flags & 0x1 == 0 => {
                stream
                    .write_all(&h2_frame(SETTINGS, 0x1, 0, &[]))
                    .await
                    .unwrap();
            }
            PING if flags & 0x1 == 0 => {
                stream
                    .write_all(&h2_frame(PING, 0x1, 0, &payload))
                    .await
                    .unwrap();
            }
            HEADERS if id == 1 => return H2End::Answered,
            RST_STREAM if id == 1 => return H2End::Reset,
            GOAWAY => return H2End::Reset,
            _ => {}
        }
    }
}

/// SECURITY #9: an HTTP/2 request with connection-specific headers, or
/// whose DATA does not add up to its content-length, is a stream error and
/// never reaches the upstream. The frames are written by hand: hyper's
/// client refuses to send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http2_requests_are_reset_and_never_forwarded() {
    let s = setup("").await;
    let body = br#"{"model":"gpt-4o","messages":[]}"#;
    let length = body.len().to_string();
    let base = [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.openai.com"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        base.iter()
            .chain(extra)
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    // The hand-written client is heard when its request is well formed.
    let mut good = with(&[]);
    good.push(("content-length", length.clone()));
    let call = |headers: Vec<(&'static str, String)>, data: Vec<u8>| {
        let proxy = &s.proxy;
        async move {
            let tls = proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h2_raw_call(tls, &pairs, Some(&data)).await
        }
    };
    assert_eq!(call(good, body.to_vec()).await, H2End::Answered);
    assert_eq!(s.openai.recorded().len(), 1, "{}", s.proxy.logs());

    type Case = (&'static str, Vec<(&'static str, String)>, Vec<u8>);
    let mut cases: Vec<Case> = vec![
        (
            "connection",
            with(&[("connection", "keep-alive")]),
            body.to_vec(),
        ),
        (
            "keep-alive",
            with(&[("keep-alive", "timeout=5")]),
            body.to_vec(),
        ),
        (
            "proxy-connection",
            with(&[("proxy-connection", "keep-alive")]),
            body.to_vec(),
        ),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
            body.to_vec(),
        ),
        ("upgrade", with(&[("upgrade", "websocket")]), body.to_vec()),
        (
            "te other than trailers",
            with(&[("te", "gzip")]),
            body.to_vec(),
        ),
        ("upper-case name", with(&[("X-Upper", "1")]), body.to_vec()),
    ];
    let mut short = with(&[]);
    short.push(("content-length", (body.len() + 10).to_string()));
    cases.push(("DATA shorter than content-length", short, body.to_vec()));
    let mut long = with(&[]);
    long.push(("content-length", (body.len() - 10).to_string()));
    cases.push(("DATA longer than content-length", long, body.to_vec()));
    let mut failures = Vec::new();
    for (case, headers, data) in cases {
        let end = call(headers, data).await;
        if end != H2End::Reset {
            failures.push(format!("{case}: {end:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", s.proxy.logs());
    // SECURITY #11 over HTTP/2: CONNECT and extended CONNECT (RFC 8441,
    // WebSocket) inside the tunnel are refused or reset, never relayed.
    let connects: [&[(&str, &str)]; 2] = [
        &[(":method", "CONNECT"), (":authority", "api.openai.com:443")],
        &[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "api.openai.com"),
            (":path", "/v1/realtime"),
            ("sec-websocket-version", "13"),
        ],
    ];
    let upstream_connections = s.openai.connections.load(Ordering::SeqCst);
    for headers in connects {
        let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
        let end = h2_raw_call(tls, headers, None).await;
        assert_ne!(end, H2End::Nothing, "{headers:?}");
    }
    assert_eq!(
        s.openai.connections.load(Ordering::SeqCst),
        upstream_connections,
        "a CONNECT inside the tunnel reached the upstream"
    );
    assert_eq!(
        s.openai.recorded().len(),
        1,
        "a malformed HTTP/2 request reached the upstream"
    );
}

/// What a chunked body carries beside its data (chunk extensions, trailer
/// fields) is not scanned, so it must never reach the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_extensions_and_trailers_are_not_forwarded() {
    // A raw mock: it records the head as sent, framing included.
    let handler: Handler = Arc::new(|_req: &Recorded| {
        raw(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                .into(),
            AfterRaw::KeepAlive,
        )
    });
    let s = setup_raw(handler, "").await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nTrailer: x-note\r\n\r\n{:x};note=DE89370400440532013000\r\n{body}\r\n0\r\nx-note: IBAN DE89 3704 0044 0532 0130 00\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let (head, answer) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}{answer}");
    let recorded = s.openai.recorded();
    assert_eq!(recorded.len(), 1);
    // Re-framed by length: no chunk, extension or trailer goes on.
    let length = body.len().to_string();
    assert_eq!(recorded[0].header("content-length"), Some(length.as_str()));
    assert!(recorded[0].header("transfer-encoding").is_none());
    assert!(recorded[0].header("trailer").is_none());
    assert_eq!(recorded[0].body, body.as_bytes());
    let seen = format!("{:?}", recorded[0].headers);
    assert!(!seen.contains("DE89"), "{seen}");
    assert!(recorded[0].header("x-note").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_get_431() {
    let s = setup("").await;
    let big = "a".repeat(40 * 1024);
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    for extra in [format!("x-big: {big}\r\n"), many] {
        let mut tls = s
            .proxy
            .connect_tls("api.openai.com:443", &[b"http/1.1"])
            .await;
        tls.write_all(
            format!("GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n{extra}\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    }
    // Over HTTP/2: the same limits, and nothing is forwarded.
    for (count, size) in [(120, 8), (2, 40 * 1024)] {
        let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
        let mut req = hyper::Request::get("https://api.openai.com/v1/models");
        for i in 0..count {
            req = req.header(format!("x-h{i}"), "v".repeat(size));
        }
        let req = req.body(Full::new(Bytes::new())).unwrap();
        match http2_send(tls, req).await {
            Ok(resp) => assert_eq!(resp.status(), 431, "{count} x {size} bytes"),
            // A header list over the h2 server's own bound is reset.
            Err(e) => assert!(format!("{e:?}").contains("Reset"), "{e:?}"),
        }
    }
    assert!(s.openai.recorded().is_empty());
    // On the CONNECT itself too.
    let mut tcp = tokio::net::TcpStream::connect(s.proxy.listen)
        .await
        .unwrap();
    tcp.write_all(
        format!("CONNECT api.openai.com:443 HTTP/1.1\r\nx-big: {big}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_denied_before_its_body_is_read_never_leaks_the_next_bytes() {
    let s = setup("limits: { max_request_body: 1KiB }\n").await;
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let body = "b".repeat(2048);
    // The body of the refused request is itself a request: it must never be parsed.
    let smuggled = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: {}\r\n\r\n{body}GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n",
        body.len()
    );
    tls.write_all(smuggled.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(s.openai.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_at_the_header_timeout() {
    let s = setup("timeouts: { header_read: 1s }\n").await;
    let mut tcp = tokio::net::TcpStream::connect(s.proxy.listen)
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for byte in b"CONNECT api.openai.com:443 HTTP/1.1\r\n".iter() {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        // The trickle is the test's subject: a head slower than the limit.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(closed || text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// Reads one HTTP/1.1 response (Content-Length or chunked); its head and body.
async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> (String, String) {
    let head = read_until_blank_line(s).await;
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.resize(len, 0);
        s.read_exact(&mut body).await.unwrap();
    } else if lower.contains("transfer-encoding: chunked") {
        let mut byte = [0u8; 1];
        while !body.ends_with(b"0\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            body.push(byte[0]);
        }
    }
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `head` one byte every `gap` until the connection fails; returns what
/// came back and how long after the first byte the connection ended.
async fn trickle_head<S>(stream: S, head: &str, gap: Duration) -> (String, Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let started = Instant::now();
    let bytes = head.as_bytes().to_vec();
    let writer = tokio::spawn(async move {
        for byte in bytes {
            if write.write_all(&[byte]).await.is_err() || write.flush().await.is_err() {
                return;
            }
            // The pause between bytes is what the test measures against.
            tokio::time::sleep(gap).await;
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut out)).await;
    let elapsed = started.elapsed();
    writer.abort();
    (String::from_utf8_lossy(&out).into_owned(), elapsed)
}

fn assert_head_timeout(answer: &str, elapsed: Duration) {
    assert!(
        elapsed < Duration::from_secs(8),
        "a trickled head stayed open {elapsed:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "client_timeout", "{body}");
}

const SLOW_HEAD: &str =
    "GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\nUser-Agent: trickle\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_inside_a_tunnel_is_cut_at_the_header_timeout() {
    let s = setup("timeouts: { header_read: 3s }\n").await;
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let (answer, elapsed) = trickle_head(tls, SLOW_HEAD, Duration::from_secs(2)).await;
    assert_head_timeout(&answer, elapsed);
    // Without ALPN, too (HTTP/1.1 is the default).
    let tls = s.proxy.connect_tls("api.openai.com:443", &[]).await;
    let (answer, elapsed) = trickle_head(tls, SLOW_HEAD, Duration::from_secs(2)).await;
    assert_head_timeout(&answer, elapsed);
    assert!(s.openai.recorded().is_empty());
}

/// SECURITY #35 over HTTP/2: a HEADERS frame trickled a byte at a time,
/// slower than the header timeout, does not hold the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_over_http2_is_cut_at_the_header_timeout() {
    let s = setup("timeouts: { header_read: 3s }\n").await;
    let tls = s.proxy.connect_tls("api.openai.com:443", &[b"h2"]).await;
    let (mut rx, mut tx) = tokio::io::split(tls);
    let block: Vec<u8> = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "api.openai.com"),
        (":path", "/v1/models"),
        ("user-agent", "trickle"),
    ]
    .iter()
    .flat_map(|(k, v)| hpack_literal(k, v))
    .collect();
    let headers = h2_frame(1, 0x4 | 0x1, 1, &block);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(h2_frame(4, 0, 0, &[]));
        tx.write_all(&out).await?;
        for byte in headers {
            // The pauses are the trickle under test.
            tokio::time::sleep(Duration::from_millis(500)).await;
            tx.write_all(&[byte]).await?;
        }
        Ok::<_, std::io::Error>(tx)
    });
    // Read until the proxy gives up on the connection, or answers.
    let mut answered = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut head = [0u8; 9];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if rx.read_exact(&mut payload).await.is_err() {
            break;
        }
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match head[3] {
            // GOAWAY, or RST_STREAM on the trickled stream.
            7 => break,
            3 if id == 1 => break,
            1 if id == 1 => {
                answered = true;
                break;
            }
            _ => {}
        }
    }
    let elapsed = started.elapsed();
    writer.abort();
    assert!(!answered, "the trickled request was answered");
    assert!(
        elapsed < Duration::from_secs(8),
        "a trickled HTTP/2 head stayed open {elapsed:?}"
    );
    assert!(s.openai.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_head_on_a_kept_alive_connection_is_bounded_too() {
    let s = setup("timeouts: { header_read: 3s }\n").await;
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}{body}");
    let (answer, elapsed) = trickle_head(tls, SLOW_HEAD, Duration::from_secs(2)).await;
    assert_head_timeout(&answer, elapsed);
    assert_eq!(s.openai.recorded().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_with_whole_heads_keeps_its_connection() {
    let s = setup("timeouts: { header_read: 3s }\n").await;
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    for round in 0..2 {
        // A head in two parts, within the limit; then a body paced over
        // longer than the head limit (each body read has its own timeout).
        tls.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n")
            .await
            .unwrap();
        // The pauses are the slow client under test.
        tokio::time::sleep(Duration::from_secs(1)).await;
        tls.write_all(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        for part in body.as_bytes().chunks(body.len() / 3 + 1) {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            tls.write_all(part).await.unwrap();
        }
        let (head, answer) = read_response(&mut tls).await;
        assert!(
            head.starts_with("HTTP/1.1 200 "),
            "round {round}: {head}{answer}\n{}",
            s.proxy.logs()
        );
        assert!(answer.contains("Hello from the mock"), "{answer}");
        // Idle between calls for longer than the head limit: idle time is
        // the keep-alive timeout's, not the head's.
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    assert_eq!(s.openai.recorded().len(), 2);
}

/// A request head with `Expect: 100-continue` and a JSON body of `len` bytes.
fn expect_continue_head(extra: &str, len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n{extra}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_after_100_continue_reach_the_client() {
    let s = setup("limits: { max_request_body: 1KiB }\n").await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let ca = s.proxy.ca_path();
    for (header, status, code) in [
        ("x-data-classification: personal", "403", "policy_denied"),
        ("x-data-classification: bogus", "400", "invalid_header"),
    ] {
        let (exit, out, err) = curl(&[
            "--http1.1",
            "--proxy",
            &s.proxy.proxy_url(),
            "--cacert",
            ca.to_str().unwrap(),
            "-H",
            "Expect: 100-continue",
            "-H",
            "content-type: application/json",
            "-H",
            header,
            "-w",
            "\n%{http_code}",
            "--data",
            body,
            "https://api.openai.com/v1/chat/completions",
        ]);
        assert_eq!(exit, 0, "{header}: curl failed: {err}\n{}", s.proxy.logs());
        let (json, got) = out.rsplit_once('\n').unwrap();
        assert_eq!(got, status, "{header}: {json}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["error"]["code"], code, "{json}");
    }

    // A raw client: the policy's 403 comes after the 100 and the body.
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    tls.write_all(
        expect_continue_head("x-data-classification: personal\r\n", body.len()).as_bytes(),
    )
    .await
    .unwrap();
    let interim = read_until_blank_line(&mut tls).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
    tls.write_all(body.as_bytes()).await.unwrap();
    let (head, answer) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}{answer}");
    assert!(
        head.to_ascii_lowercase().contains("x-ecluse-decision-id: "),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"]["code"], "policy_denied", "{answer}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("personal data"));

    // An invalid declaration is refused before any 100: no body is sent.
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    tls.write_all(expect_continue_head("x-data-retention: forever\r\n", body.len()).as_bytes())
        .await
        .unwrap();
    let (head, answer) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"]["code"], "invalid_header", "{answer}");
    assert_eq!(v["error"]["param"], "x-data-retention", "{answer}");

    // A chunked body that outgrows the limit after the 100: 413.
    let mut tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    tls.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until_blank_line(&mut tls).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
    let chunk = format!("800\r\n{}\r\n0\r\n\r\n", "z".repeat(0x800));
    tls.write_all(chunk.as_bytes()).await.unwrap();
    let (head, answer) = read_response(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(v["error"]["code"], "body_too_large", "{answer}");
    assert!(s.openai.recorded().is_empty());
}

/// Every refusal reaches the client with its status and JSON error, over
/// HTTP/1.1 and HTTP/2, with and without `Expect: 100-continue`: those made
/// before the body is read (an invalid declaration, a Content-Length over
/// the limit, a head for another host than the tunnel's) and the policy's,
/// made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_reach_the_client_over_h1_and_h2_with_or_without_100_continue() {
    let s = setup("limits: { max_request_body: 1KiB }\n").await;
    let ca = s.proxy.ca_path();
    let small = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let large = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "z".repeat(2048)
    );
    let cases = [
        (
            "x-data-classification: bogus",
            small,
            "400",
            "invalid_header",
        ),
        (
            "x-request-id: large",
            large.as_str(),
            "413",
            "body_too_large",
        ),
        (
            "host: api.anthropic.com",
            small,
            "421",
            "misdirected_request",
        ),
        (
            "x-data-classification: personal",
            small,
            "403",
            "policy_denied",
        ),
    ];
    // curl drops a header given with no value: `Expect:` sends the body at once.
    let mut failures = Vec::new();
    for (http, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        for expect in ["Expect: 100-continue", "Expect:"] {
            for (header, body, status, code) in cases {
                let (exit, out, err) = curl(&[
                    http,
                    "--proxy",
                    &s.proxy.proxy_url(),
                    "--cacert",
                    ca.to_str().unwrap(),
                    "-H",
                    expect,
                    "-H",
                    "content-type: application/json",
                    "-H",
                    header,
                    "-w",
                    "\n%{http_code} %{http_version}",
                    "--data-binary",
                    body,
                    "https://api.openai.com/v1/chat/completions",
                ]);
                let case = format!("{http} {expect:?} {header}");
                let (json, got) = out.rsplit_once('\n').unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
                if exit != 0 || got != format!("{status} {version}") || v["error"]["code"] != code {
                    failures.push(format!("{case}: exit {exit}, {got}, {json}\n{err}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}\n{}", s.proxy.logs());
    assert!(s.openai.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_inside_a_tunnel_is_refused() {
    let s = setup("").await;
    let tls = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let req = hyper::Request::get("/v1/realtime")
        .header("host", "api.openai.com")
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = http1_send(tls, req).await;
    assert_eq!(resp.status(), 403);
    assert!(s.openai.recorded().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_connections_get_503() {
    let s = setup("limits: { max_connections: 2 }\n").await;
    let _a = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let _b = s
        .proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let (status, text) = s.proxy.connect("api.openai.com:443").await.unwrap_err();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("overloaded"), "{text}");
}

/// A field of /proc/<pid>/status, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// SECURITY #16 under a flood: a thousand connections over the cap, at
/// once, are each refused with 503; ecluse stays up and serving, and its
/// memory does not grow with the refused connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_over_the_cap_is_refused_in_bounded_memory() {
    let s = setup("limits: { max_connections: 4 }\n").await;
    let held: Vec<_> = futures_util::future::join_all(
        (0..4).map(|_| s.proxy.connect_tls("api.openai.com:443", &[b"http/1.1"])),
    )
    .await;
    let before = proc_kib(s.proxy.pid(), "VmRSS:");
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let answers =
            futures_util::future::join_all((0..250).map(|_| s.proxy.connect("api.openai.com:443")))
                .await;
        for answer in answers {
            let status = answer.err().map(|(status, _)| status).unwrap_or(200);
            *statuses.entry(status).or_insert(0) += 1;
        }
    }
    assert_eq!(
        statuses,
        [(503, 1000)].into_iter().collect(),
        "{statuses:?}"
    );
    let after = proc_kib(s.proxy.pid(), "VmRSS:");
    assert!(
        after < before + 16 * 1024,
        "resident memory grew from {before} to {after} KiB over 1000 refused connections"
    );
    // Still serving: the held connections carry calls, and once they are
    // gone new ones are accepted.
    for tls in held {
        let resp = http1_send(
            tls,
            post_json("api.openai.com", "/v1/chat/completions", "{}"),
        )
        .await;
        assert_eq!(resp.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.proxy.connect("api.openai.com:443").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no connection accepted after the flood"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits() {
    let pki = TestPki::new();
    let mock = MockUpstream::start(
        Some(pki.server_config(&["api.openai.com"])),
        Arc::new(|_req: &Recorded| MockResponse::Sse {
            events: (0..8).map(|i| format!("{{\"n\":{i}}}")).collect(),
            gap: Duration::from_millis(150),
        }),
    )
    .await;
    let mut proxy = Proxy::start(&upstream_yaml(
        &[("api.openai.com:443", mock.addr)],
        Some(&pki.ca_path),
    ));
    let tls = proxy
        .connect_tls("api.openai.com:443", &[b"http/1.1"])
        .await;
    let resp = http1_send(
        tls,
        post_json(
            "api.openai.com",
            "/v1/chat/completions",
            r#"{"stream":true}"#,
        ),
    )
    .await;
    assert_eq!(resp.status(), 200);
    // The answer's head is here: the call is in flight when SIGTERM comes.
    let reader = tokio::spawn(body_text(resp));
    let admin = proxy.admin;
    let status = tokio::task::spawn_blocking(move || {
        let exit = proxy.terminate(Duration::from_secs(10));
        (exit, proxy)
    });
    // Ready until the signal lands, then 503 for the drain; the admin
    // listener may also be gone already if the drain was that quick.
    let unready = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(5), || {
            !matches!(admin_get(admin, "/readyz"), Some((200, _)))
        })
    })
    .await
    .unwrap();
    assert!(unready, "still ready while draining");
    let text = reader.await.unwrap();
    assert!(text.contains("{\"n\":7}"), "stream cut short: {text}");
    let (exit, proxy) = status.await.unwrap();
    let exit = exit.expect("ecluse exited after the drain");
    assert!(exit.success(), "{exit:?}\n{}", proxy.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let s = setup("").await;
    assert_eq!(s.proxy.admin_get("/healthz").0, 200);
    assert_eq!(s.proxy.admin_get("/readyz").0, 200);
    let (code, pem) = s.proxy.admin_get("/ca.pem");
    assert_eq!(code, 200);
    assert_eq!(pem, std::fs::read_to_string(s.proxy.ca_path()).unwrap());
    let (code, policy) = s.proxy.admin_get("/policy");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert!(v["revision"].as_str().unwrap().starts_with("embedded"));
    assert_eq!(s.proxy.admin_get("/nope").0, 404);
    let _ = &s.pki;
}

/// An HTTP/1.1 chat call to api.openai.com with `body`, as bytes on the wire.
fn chat_request(body: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// pingora's response parser accepts obsolete line folding; a fold that
/// could hide or smuggle a length never reaches the client as a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folded_answer_head_that_touches_its_length_is_502() {
    let heads = [
        // A continuation of the length itself.
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\tx-injected: 1\r\n\r\n",
        // A length folded into another field, next to a real one.
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-note: a\r\n content-length: 9\r\ncontent-length: 2\r\n\r\n",
    ];
    for head in heads {
        let handler: Handler =
            Arc::new(move |_req: &Recorded| raw(format!("{head}{{}}"), AfterRaw::KeepAlive));
        let s = setup_raw(handler, "").await;
        let (status, text) = send_on_a_new_connection(
            &s.proxy,
            post_json("api.openai.com", "/v1/chat/completions", r#"{"model":"m"}"#),
        )
        .await;
        assert_eq!(status, 502, "{head:?}: {text}\n{}", s.proxy.logs());
        assert!(!text.contains("x-injected"), "{text}");
    }
}
